//! Condition types and reasons as constants, and the helper that sets a condition while
//! keeping its `lastTransitionTime` when the status did not change. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// AgentIdentity: every projection is applied and the identity may run pods.
pub const READY: &str = "Ready";
/// AgentIdentity: at least one tool is live now.
pub const TOOLS_BOUND: &str = "ToolsBound";
/// AgentIdentity: its NetworkPolicy is applied.
pub const ISOLATED: &str = "Isolated";
/// AgentIdentity: no delegation chain through it escalates authority.
pub const DELEGATION_SAFE: &str = "DelegationSafe";
/// AgentIdentity: no NetworkPolicy but mandate's can select its pods (policies add up).
pub const NETWORK_EXCLUSIVE: &str = "NetworkExclusive";
/// AgentIdentity: its ServiceAccount holds no dangerous Kubernetes API right through RBAC.
pub const API_RIGHTS_CONTAINED: &str = "ApiRightsContained";
/// AgentIdentity: every pod that runs as its ServiceAccount is reviewed, labelled or not (its
/// namespace is opted in); False outside opted-in namespaces, where only labelled pods are.
pub const SERVICE_ACCOUNT_GUARDED: &str = "ServiceAccountGuarded";
/// AgentIdentity: some pod of the agent lacks the token of a tool it holds now (it started
/// before the tool was granted); False when every pod has a token for every live tool.
pub const CREDENTIALS_STALE: &str = "CredentialsStale";
/// ToolBinding and DelegationPolicy: the spec passed validation against the objects it names.
pub const ACCEPTED: &str = "Accepted";
/// ToolBinding: now lies inside the validity window.
pub const ACTIVE: &str = "Active";
/// DelegationPolicy: the policy creates no escalation path, cycle or depth violation.
pub const SAFE: &str = "Safe";

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Sets `condition` in `conditions`, replacing the one of the same type. The previous
/// `lastTransitionTime` is kept when the status is unchanged, so re-reconciling an unchanged
/// object writes an identical status.
pub fn set(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// Builds a condition at `now`.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { TRUE } else { FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn setting_an_unchanged_status_keeps_the_transition_time() {
        let mut conditions = vec![new(READY, true, "Applied", "", Some(1), at(10))];
        set(
            &mut conditions,
            new(READY, true, "Applied", "again", Some(2), at(20)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].message, "again");
    }

    #[test]
    fn setting_a_changed_status_moves_the_transition_time() {
        let mut conditions = vec![new(READY, true, "Applied", "", Some(1), at(10))];
        set(
            &mut conditions,
            new(READY, false, "Pending", "", Some(1), at(20)),
        );
        assert_eq!(conditions[0].last_transition_time, at(20));
        assert!(!is_true(&conditions, READY));
    }

    #[test]
    fn a_new_condition_type_is_appended() {
        let mut conditions = vec![new(READY, true, "Applied", "", None, at(10))];
        set(
            &mut conditions,
            new(ISOLATED, true, "Applied", "", None, at(10)),
        );
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, ISOLATED));
    }
}
