//! A DelegationPolicy assessed: the policy, the authority snapshot of its namespace and the
//! instant in; its status (Accepted, Safe, the violations whose network paths are withdrawn)
//! and its expiry as the next change out. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::accepted;
use crate::api::conditions::{self, ACCEPTED, SAFE};
use crate::api::{DelegationPolicy, DelegationPolicyStatus};
use crate::authority::{Authority, PolicyWindow};

/// What the operator makes true for one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAssessment {
    pub status: DelegationPolicyStatus,
    /// Its validUntil, while that lies ahead.
    pub next_change: Option<Timestamp>,
}

pub fn assess_policy(
    policy: &DelegationPolicy,
    authority: &Authority,
    now: Timestamp,
) -> PolicyAssessment {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let findings = authority.validate_policy(policy, now);
    let violations = authority
        .delegation_graph(namespace, now)
        .policy_violations(name);
    let generation = policy.metadata.generation;
    let mut conditions_now = policy
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (accepted_reason, accepted_message) = accepted(&findings, "policy");
    conditions::set(
        &mut conditions_now,
        conditions::new(
            ACCEPTED,
            findings.is_empty(),
            accepted_reason,
            accepted_message,
            generation,
            Time(now),
        ),
    );
    let (safe_reason, safe_message) = if !policy.is_live_at(now) {
        (
            "Expired",
            "validUntil has passed; the policy grants nothing".to_owned(),
        )
    } else if violations.is_empty() {
        (
            "NoViolation",
            "no escalation path, cycle or depth violation".to_owned(),
        )
    } else {
        (
            "Violations",
            format!("network paths withdrawn: {}", violations.join("; ")),
        )
    };
    conditions::set(
        &mut conditions_now,
        conditions::new(
            SAFE,
            violations.is_empty(),
            safe_reason,
            safe_message,
            generation,
            Time(now),
        ),
    );
    PolicyAssessment {
        status: DelegationPolicyStatus {
            observed_generation: generation,
            conditions: conditions_now,
            violations,
        },
        next_change: policy.next_window_edge(now),
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::api::conditions::{FALSE, TRUE};
    use crate::authority::fixtures::{NOW, binding, hours, identity, policy, tool};

    fn condition<'a>(status: &'a DelegationPolicyStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {:#?}", status.conditions));
        (c.status.as_str(), c.reason.as_str())
    }

    /// planner holds search; executor holds search and pay.
    fn authority_with(policy: &DelegationPolicy) -> Authority {
        Authority::builder()
            .identity(identity("planner").build())
            .identity(identity("executor").build())
            .binding(binding("p").agent("planner").tool(tool("search")).build())
            .binding(
                binding("e")
                    .agent("executor")
                    .tool(tool("search"))
                    .tool(tool("pay"))
                    .build(),
            )
            .policy(policy.clone())
            .build()
    }

    #[test]
    fn an_attenuating_policy_is_accepted_and_safe_until_it_expires() {
        let p = policy("hand-off")
            .delegator("planner")
            .delegate("executor", ["search"])
            .valid_until(hours(2))
            .build();
        let live = assess_policy(&p, &authority_with(&p), NOW);
        assert_eq!(condition(&live.status, ACCEPTED), (TRUE, "Valid"));
        assert_eq!(condition(&live.status, SAFE), (TRUE, "NoViolation"));
        assert_eq!(live.next_change, Some(hours(2)));
        let expired = assess_policy(&p, &authority_with(&p), hours(3));
        assert_eq!(condition(&expired.status, SAFE), (TRUE, "Expired"));
        assert_eq!(expired.next_change, None);
    }

    #[test]
    fn a_policy_handing_on_a_tool_the_delegator_lacks_is_unsafe_and_lists_the_violation() {
        let p = policy("hand-off")
            .delegator("planner")
            .delegate("executor", ["pay"])
            .build();
        let assessment = assess_policy(&p, &authority_with(&p), NOW);
        assert_eq!(condition(&assessment.status, SAFE), (FALSE, "Violations"));
        assert_eq!(
            condition(&assessment.status, ACCEPTED),
            (FALSE, "DelegationEscalation")
        );
        assert_eq!(assessment.status.violations.len(), 1);
        assert!(assessment.status.violations[0].contains("pay"));
    }

    #[test]
    fn a_policy_naming_a_missing_delegate_is_not_accepted() {
        let p = policy("hand-off")
            .delegator("planner")
            .delegate("ghost", ["search"])
            .build();
        let assessment = assess_policy(&p, &authority_with(&p), NOW);
        assert_eq!(
            condition(&assessment.status, ACCEPTED),
            (FALSE, "MissingDelegate")
        );
    }
}
