//! The namespace default deny: what mandate knows of a namespace (whether it is labelled
//! `mandate.dev/mode`, whether it holds an AgentIdentity, whether mandate's default deny is
//! there already) in; the default-deny NetworkPolicy it wants there, or none, out. Pure: the
//! namespace reconciler applies it. mandate never deletes it.
//!
//! Per-agent policies only ever add what a mandate allows; this policy is what they add to, so a
//! pod that loses its identity (the identity deleted, the label removed or changed to a name with
//! no identity) stays isolated instead of falling back to "no policy selects me: allow all".
//!
//! - A namespace labelled `mandate.dev/mode` (an agent namespace, where every pod is an agent
//!   pod): every pod (`podSelector: {}`).
//! - Any other namespace holding an AgentIdentity: the pods carrying `mandate.dev/agent`. Pods
//!   are not watched, so a namespace holding an identity is the observable sign that agent pods
//!   may run there (an agent pod outside an agent namespace is admitted only with an existing
//!   identity in its namespace). An agent-labelled pod in a namespace without any identity is
//!   refused at admission (`NoIdentity`, in the default mode).
//! - Lifecycle: once there, it stays. When a namespace stops being an agent namespace its
//!   policy narrows to the agent-labelled pods; when the last identity of a namespace goes, it
//!   stays too, since the pods of the deleted identities may still run there and must stay
//!   isolated (it selects agent-labelled pods only, which cannot be admitted there without an
//!   identity, so it costs nobody else anything). It goes with the namespace, or when an
//!   administrator deletes it (refused to everyone but mandate, the garbage collector and the
//!   namespace controller while it is mandate's; see `admission::network_policy`). It is never
//!   owned by an AgentIdentity: deleting an identity leaves its pods isolated.
//!
//! Both rule lists are written (empty), so mandate's field manager owns them and a rule anyone
//! adds is taken back at the next apply.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::api::{AGENT_LABEL, MANAGED_BY_LABEL, MANAGER};
pub use crate::authority::network::DEFAULT_DENY_NAME;

/// Which pods of a namespace mandate's default deny selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyScope {
    /// Every pod: an agent namespace.
    Namespace,
    /// Pods carrying `mandate.dev/agent`: a namespace that holds identities without being an
    /// agent namespace.
    AgentPods,
}

/// The scope of the default deny a namespace needs; `None`: it needs none. `exists`: mandate's
/// default deny is in the namespace already (it is kept, narrowed to agent pods).
pub fn default_deny_scope(
    agent_namespace: bool,
    holds_identity: bool,
    exists: bool,
) -> Option<DenyScope> {
    if agent_namespace {
        Some(DenyScope::Namespace)
    } else if holds_identity || exists {
        Some(DenyScope::AgentPods)
    } else {
        None
    }
}

/// The default-deny NetworkPolicy of `namespace` with `scope`.
pub fn desired_default_deny(namespace: &str, scope: DenyScope) -> NetworkPolicy {
    let pod_selector = match scope {
        DenyScope::Namespace => LabelSelector::default(),
        DenyScope::AgentPods => LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: AGENT_LABEL.to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            }]),
            match_labels: None,
        },
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(DEFAULT_DENY_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::network::{is_default_deny, may_select_agent};

    #[test]
    fn an_agent_namespace_denies_every_pod_and_other_identity_namespaces_their_agent_pods() {
        assert_eq!(
            default_deny_scope(true, false, false),
            Some(DenyScope::Namespace)
        );
        assert_eq!(
            default_deny_scope(true, true, true),
            Some(DenyScope::Namespace)
        );
        assert_eq!(
            default_deny_scope(false, true, false),
            Some(DenyScope::AgentPods)
        );
        assert_eq!(default_deny_scope(false, false, false), None);
    }

    #[test]
    fn a_default_deny_once_there_stays_narrowed_to_agent_pods_when_the_namespace_opts_out_or_empties()
     {
        // Opted out, identities remain; or the last identity deleted under its running pods.
        assert_eq!(
            default_deny_scope(false, true, true),
            Some(DenyScope::AgentPods)
        );
        assert_eq!(
            default_deny_scope(false, false, true),
            Some(DenyScope::AgentPods)
        );
    }

    #[test]
    fn the_default_deny_denies_both_ways_with_both_rule_lists_written_and_no_owner() {
        for scope in [DenyScope::Namespace, DenyScope::AgentPods] {
            let policy = desired_default_deny("team", scope);
            assert!(is_default_deny(&policy.metadata));
            assert!(policy.metadata.owner_references.is_none());
            let spec = policy.spec.unwrap_or_default();
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
            );
            assert_eq!(spec.ingress.as_deref(), Some(&[][..]));
            assert_eq!(spec.egress.as_deref(), Some(&[][..]));
            let selector = spec.pod_selector.as_ref();
            assert!(may_select_agent(selector, Some("any-agent")));
            assert!(may_select_agent(selector, None));
        }
        let namespace = desired_default_deny("team", DenyScope::Namespace);
        assert_eq!(
            namespace.spec.and_then(|s| s.pod_selector),
            Some(LabelSelector::default())
        );
        let json = serde_json::to_value(desired_default_deny("team", DenyScope::AgentPods))
            .unwrap_or_default();
        assert_eq!(
            json["spec"]["podSelector"],
            serde_json::json!({"matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}]})
        );
        assert_eq!(json["spec"]["ingress"], serde_json::json!([]));
    }
}
