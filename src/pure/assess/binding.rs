//! A ToolBinding assessed: the binding, the authority snapshot of its namespace and the instant
//! in; its status (phase, expiry, the Accepted and Active conditions) and the next edge of its
//! validity window out. Pure.
//!
//! The phase is the authority's (`Authority::phase_given`): Invalid while the binding breaks a
//! rule, else Pending, Active or Expired by its window. The risk is the authority's risk floor
//! (`RiskFloor::assess`): the highest effective risk of the tools, and why the floor raised
//! each tool it raised.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::accepted;
use crate::api::conditions::{self, ACCEPTED, ACTIVE};
use crate::api::{ToolBinding, ToolBindingPhase, ToolBindingStatus};
use crate::authority::{Authority, BindingWindow, ToolRisk};

/// What the operator makes true for one binding.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingAssessment {
    pub status: ToolBindingStatus,
    /// The next edge of the validity window strictly after `now`.
    pub next_change: Option<Timestamp>,
}

pub fn assess_binding(
    binding: &ToolBinding,
    authority: &Authority,
    now: Timestamp,
) -> BindingAssessment {
    let findings = authority.validate_binding(binding, now);
    let phase = Authority::phase_given(binding, &findings, now);
    let generation = binding.metadata.generation;
    let mut conditions_now = binding
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (accepted_reason, accepted_message) = accepted(&findings, "binding");
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
    let (active_reason, active_message) = match phase {
        ToolBindingPhase::Active => ("WithinWindow", "the tools are live"),
        ToolBindingPhase::Pending => ("NotYetValid", "validFrom lies ahead"),
        ToolBindingPhase::Expired => ("Expired", "validUntil has passed; the tools are withdrawn"),
        ToolBindingPhase::Invalid => ("Invalid", "the binding grants nothing until it is fixed"),
    };
    conditions::set(
        &mut conditions_now,
        conditions::new(
            ACTIVE,
            phase == ToolBindingPhase::Active,
            active_reason,
            active_message,
            generation,
            Time(now),
        ),
    );
    let floor = &authority.config().risk_floor;
    let risks: Vec<(&str, ToolRisk)> = binding
        .spec
        .tools
        .iter()
        .map(|tool| (tool.name.as_str(), floor.assess(tool)))
        .collect();
    let risk = risks.iter().map(|(_, r)| r.effective).max();
    let risk_floor = risks
        .iter()
        .filter(|(_, r)| r.raised())
        .map(|(name, r)| format!("{name}: {}", r.floor.join("; ")))
        .collect();
    BindingAssessment {
        status: ToolBindingStatus {
            phase: Some(phase),
            expires_at: binding.spec.valid_until.clone(),
            risk,
            risk_floor,
            observed_generation: generation,
            conditions: conditions_now,
        },
        next_change: binding.next_window_edge(now),
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::api::conditions::{FALSE, TRUE};
    use crate::api::{Action, AgentClass, Risk};
    use crate::authority::fixtures::{NOW, binding, hours, identity, tool};

    fn authority_with(binding: &ToolBinding) -> Authority {
        Authority::builder()
            .identity(identity("researcher").build())
            .binding(binding.clone())
            .build()
    }

    fn condition<'a>(status: &'a ToolBindingStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {:#?}", status.conditions));
        (c.status.as_str(), c.reason.as_str())
    }

    fn assess(binding: &ToolBinding, at: Timestamp) -> BindingAssessment {
        assess_binding(binding, &authority_with(binding), at)
    }

    #[test]
    fn a_binding_walks_from_pending_to_active_to_expired_and_requeues_at_each_edge() {
        let b = binding("window")
            .agent("researcher")
            .tool(tool("search"))
            .valid_from(hours(1))
            .valid_until(hours(3))
            .build();
        let cases = [
            (
                NOW,
                ToolBindingPhase::Pending,
                FALSE,
                "NotYetValid",
                Some(hours(1)),
            ),
            (
                hours(2),
                ToolBindingPhase::Active,
                TRUE,
                "WithinWindow",
                Some(hours(3)),
            ),
            (hours(4), ToolBindingPhase::Expired, FALSE, "Expired", None),
        ];
        for (at, phase, active, reason, next) in cases {
            let assessment = assess(&b, at);
            assert_eq!(assessment.status.phase, Some(phase), "at {at}");
            assert_eq!(condition(&assessment.status, ACTIVE), (active, reason));
            assert_eq!(condition(&assessment.status, ACCEPTED), (TRUE, "Valid"));
            assert_eq!(assessment.next_change, next, "at {at}");
            assert_eq!(assessment.status.expires_at, b.spec.valid_until);
        }
    }

    #[test]
    fn a_binding_that_breaks_a_rule_is_invalid_and_not_accepted_with_the_code() {
        let b = binding("writes")
            .agent("researcher")
            .tool(tool("db").actions([Action::Write]))
            .build();
        let authority = Authority::builder()
            .identity(identity("researcher").class(AgentClass::ReadOnly).build())
            .binding(b.clone())
            .build();
        let assessment = assess_binding(&b, &authority, NOW);
        assert_eq!(assessment.status.phase, Some(ToolBindingPhase::Invalid));
        assert_eq!(
            condition(&assessment.status, ACCEPTED),
            (FALSE, "ClassViolation")
        );
        assert_eq!(condition(&assessment.status, ACTIVE), (FALSE, "Invalid"));
    }

    #[test]
    fn a_tool_raised_by_the_risk_floor_shows_in_the_status_and_needs_an_approval() {
        let b = binding("open-web")
            .agent("researcher")
            .tool(tool("search"))
            .tool(tool("web").external(["0.0.0.0/1", "128.0.0.0/1"], [443]))
            .build();
        let assessment = assess(&b, NOW);
        assert_eq!(assessment.status.risk, Some(Risk::High));
        assert_eq!(
            assessment.status.risk_floor,
            ["web: its CIDRs reach 4,294,967,296 IPv4 addresses, more than a /16 holds"]
        );
        assert_eq!(assessment.status.phase, Some(ToolBindingPhase::Invalid));
        let accepted = assessment
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == ACCEPTED)
            .map(|c| c.message.as_str())
            .unwrap_or_default();
        assert!(
            accepted.contains("HighRiskValidity: tool web is High by the risk floor")
                && accepted.contains("MissingApproval: tool web is High by the risk floor"),
            "{accepted}"
        );
        let low = binding("low")
            .agent("researcher")
            .tool(tool("search"))
            .build();
        let assessment = assess(&low, NOW);
        assert_eq!(assessment.status.risk, Some(Risk::Low));
        assert!(assessment.status.risk_floor.is_empty());
    }

    #[test]
    fn a_binding_for_a_missing_agent_is_not_accepted() {
        let b = binding("orphan")
            .agent("nobody")
            .tool(tool("search"))
            .build();
        let assessment = assess(&b, NOW);
        assert_eq!(
            condition(&assessment.status, ACCEPTED),
            (FALSE, "MissingIdentity")
        );
    }

    #[test]
    fn reassessing_an_unchanged_binding_keeps_its_transition_times() {
        let mut b = binding("steady")
            .agent("researcher")
            .tool(tool("search"))
            .build();
        let first = assess(&b, NOW);
        b.status = Some(first.status.clone());
        assert_eq!(assess(&b, hours(1)).status, first.status);
    }
}
