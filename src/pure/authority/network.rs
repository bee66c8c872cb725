//! Which NetworkPolicies are mandate's and which agent pods a policy can select: a policy's
//! metadata and podSelector plus the live authority in; answers out. The one rulebook of the
//! foreign-policy admission rule (`admission::network_policy`), the identity's
//! `NetworkExclusive` condition (`assess::identity`) and `mandate inventory`. Pure.
//!
//! NetworkPolicies add up: a pod selected by several policies may do what any of them allows.
//! So a policy mandate did not write that selects an agent's pods widens that agent's mandate.
//!
//! "Selects an agent pod", without watching pods: a podSelector selects the pods of agent `a`
//! unless it provably excludes every pod labelled `mandate.dev/agent=a`, judged on its
//! requirements on that one label key alone (`DoesNotExist`; `In`/matchLabels naming other
//! values; `NotIn` naming `a`). Requirements on other keys are never taken as exclusion: pods
//! choose their own labels, so any other requirement can be met by an agent pod. A selector
//! that contradicts itself on other keys (and so selects nothing) is still counted: refusing or
//! reporting it costs nothing, missing a real one would widen an agent.
//!
//! "Mandate's own" for an existing policy: its controller ownerReference names a live
//! AgentIdentity by UID (the per-agent `mandate-<agent>`), or it is mandate's namespace default
//! deny (its name and `app.kubernetes.io/managed-by: mandate`; admission lets only mandate write
//! policies in agent namespaces, and the reconciler overwrites whatever that name holds
//! elsewhere). A label alone never makes a policy mandate's.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::Authority;
use crate::api::{AGENT_LABEL, AgentIdentity, MANAGED_BY_LABEL, MANAGER};

/// The name of mandate's namespace default-deny NetworkPolicy. Not `mandate-<something>`: that
/// is the per-agent policy's form, and an agent may be called `default-deny`.
pub const DEFAULT_DENY_NAME: &str = "mandate.default-deny";

/// Whether a podSelector can select a pod labelled `mandate.dev/agent=<agent>`; with `None`,
/// whether it can select a pod carrying `mandate.dev/agent` with any value. A missing selector
/// selects every pod (as the API server reads it).
pub fn may_select_agent(selector: Option<&LabelSelector>, agent: Option<&str>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    // Each requirement on the agent label, as a test of the label's value.
    let mut allowed: Option<Vec<&str>> = None; // Some: the value must be one of these
    let mut excluded: Vec<&str> = Vec::new();
    if let Some(value) = selector
        .match_labels
        .as_ref()
        .and_then(|l| l.get(AGENT_LABEL))
    {
        narrow(&mut allowed, vec![value.as_str()]);
    }
    for requirement in selector.match_expressions.iter().flatten() {
        if requirement.key != AGENT_LABEL {
            continue;
        }
        let values: Vec<&str> = requirement
            .values
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        match requirement.operator.as_str() {
            "DoesNotExist" => return false,
            "In" => narrow(&mut allowed, values),
            "NotIn" => excluded.extend(values),
            // Exists asks for the label, which every agent pod carries; an unknown operator
            // is refused by the API server before any webhook sees it.
            _ => {}
        }
    }
    match agent {
        Some(agent) => {
            allowed
                .as_ref()
                .is_none_or(|values| values.contains(&agent))
                && !excluded.contains(&agent)
        }
        // Some value passes: one of the allowed ones not excluded, or (no allowed list) any
        // value beyond the finitely many excluded.
        None => allowed
            .as_ref()
            .is_none_or(|values| values.iter().any(|v| !excluded.contains(v))),
    }
}

/// Narrows the values the agent label may take to those also in `values`.
fn narrow<'a>(allowed: &mut Option<Vec<&'a str>>, values: Vec<&'a str>) {
    *allowed = Some(match allowed.take() {
        None => values,
        Some(before) => before.into_iter().filter(|v| values.contains(v)).collect(),
    });
}

/// Whether `policy` is one of mandate's projections (see the module header): a controller
/// ownerReference to a live identity with that UID, or mandate's default deny.
pub fn is_mandates(policy: &ObjectMeta, authority: &Authority) -> bool {
    is_default_deny(policy) || owning_identity(policy, authority).is_some()
}

/// Whether `policy` is mandate's namespace default deny: its name and mandate's managed-by label.
pub fn is_default_deny(policy: &ObjectMeta) -> bool {
    policy.name.as_deref() == Some(DEFAULT_DENY_NAME)
        && policy
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGER)
}

/// The live identity `object` is a controller-owned projection of, proven by UID.
pub fn owning_identity<'a>(
    object: &ObjectMeta,
    authority: &'a Authority,
) -> Option<&'a AgentIdentity> {
    let namespace = object.namespace.as_deref()?;
    let (name, uid) = super::controlling_identity(object)?;
    authority
        .identity(namespace, name)
        .filter(|identity| identity.metadata.uid.as_deref() == Some(uid))
}

/// The NetworkPolicies among `policies` (any namespaces) that are not mandate's and could select
/// the pods of agent `agent` in `namespace`: their names, sorted.
pub fn foreign_policies_selecting<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    namespace: &str,
    agent: &str,
    authority: &Authority,
) -> Vec<String> {
    let mut names: Vec<String> = policies
        .into_iter()
        .filter(|policy| policy.metadata.namespace.as_deref() == Some(namespace))
        // The selector first: it rules out the other agents' policies without a lookup.
        .filter(|policy| {
            may_select_agent(
                policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref()),
                Some(agent),
            )
        })
        .filter(|policy| !is_mandates(&policy.metadata, authority))
        .filter_map(|policy| policy.metadata.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::NetworkPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, OwnerReference,
    };
    use kube::Resource;

    use super::*;
    use crate::authority::fixtures::{NS, identity};

    fn selector(labels: &[(&str, &str)], expressions: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            }),
            match_expressions: (!expressions.is_empty()).then(|| {
                expressions
                    .iter()
                    .map(|(key, operator, values)| LabelSelectorRequirement {
                        key: (*key).to_owned(),
                        operator: (*operator).to_owned(),
                        values: (!values.is_empty())
                            .then(|| values.iter().map(|v| (*v).to_owned()).collect()),
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn an_empty_or_missing_selector_selects_every_agent() {
        assert!(may_select_agent(None, None));
        assert!(may_select_agent(Some(&selector(&[], &[])), Some("a")));
        assert!(may_select_agent(
            Some(&selector(&[("app", "web")], &[])),
            Some("a")
        ));
    }

    #[test]
    fn requiring_the_agent_label_absent_excludes_every_agent() {
        let absent = selector(&[], &[(AGENT_LABEL, "DoesNotExist", &[])]);
        assert!(!may_select_agent(Some(&absent), None));
        assert!(!may_select_agent(Some(&absent), Some("a")));
    }

    #[test]
    fn naming_agents_selects_those_agents_only() {
        let one = selector(&[(AGENT_LABEL, "a")], &[]);
        assert!(may_select_agent(Some(&one), Some("a")));
        assert!(!may_select_agent(Some(&one), Some("b")));
        assert!(may_select_agent(Some(&one), None));
        let some = selector(&[], &[(AGENT_LABEL, "In", &["a", "b"])]);
        assert!(may_select_agent(Some(&some), Some("b")));
        assert!(!may_select_agent(Some(&some), Some("c")));
    }

    #[test]
    fn not_in_excludes_only_the_agents_it_names() {
        let not_a = selector(&[], &[(AGENT_LABEL, "NotIn", &["a"])]);
        assert!(!may_select_agent(Some(&not_a), Some("a")));
        assert!(may_select_agent(Some(&not_a), Some("b")));
        assert!(may_select_agent(Some(&not_a), None), "any other agent");
        let exists = selector(&[], &[(AGENT_LABEL, "Exists", &[])]);
        assert!(may_select_agent(Some(&exists), Some("a")));
    }

    #[test]
    fn contradicting_requirements_on_the_agent_label_select_no_agent() {
        let contradiction = selector(&[(AGENT_LABEL, "a")], &[(AGENT_LABEL, "NotIn", &["a"])]);
        assert!(!may_select_agent(Some(&contradiction), None));
        let disjoint = selector(&[(AGENT_LABEL, "a")], &[(AGENT_LABEL, "In", &["b"])]);
        assert!(!may_select_agent(Some(&disjoint), None));
        // Contradictions on other keys are not looked for: counted as selecting.
        let other = selector(&[("app", "x")], &[("app", "NotIn", &["x"])]);
        assert!(may_select_agent(Some(&other), Some("a")));
    }

    fn policy(name: &str, owner: Option<(&str, &str)>, labels: &[(&str, &str)]) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(NS.to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owner.map(|(agent, uid)| {
                    vec![OwnerReference {
                        api_version: AgentIdentity::api_version(&()).into_owned(),
                        kind: "AgentIdentity".to_owned(),
                        name: agent.to_owned(),
                        uid: uid.to_owned(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicySpec::default()
            }),
        }
    }

    #[test]
    fn mandates_own_policies_are_proven_by_a_live_owners_uid_or_the_default_deny() {
        let mut researcher = identity("researcher").build();
        researcher.metadata.uid = Some("uid-1".to_owned());
        let authority = Authority::builder().identity(researcher).build();
        let managed = [(MANAGED_BY_LABEL, MANAGER)];
        let ours = policy(
            "mandate-researcher",
            Some(("researcher", "uid-1")),
            &managed,
        );
        let stale = policy("mandate-old", Some(("researcher", "uid-0")), &managed);
        let labelled = policy("looks-like-mandate", None, &managed);
        let deny = policy(DEFAULT_DENY_NAME, None, &managed);
        let unlabelled_deny = policy(DEFAULT_DENY_NAME, None, &[]);
        assert!(is_mandates(&ours.metadata, &authority));
        assert!(is_mandates(&deny.metadata, &authority));
        assert!(!is_mandates(&stale.metadata, &authority), "uid of another");
        assert!(
            !is_mandates(&labelled.metadata, &authority),
            "a label alone"
        );
        assert!(!is_mandates(&unlabelled_deny.metadata, &authority));
        let all = [ours, stale, labelled, deny, unlabelled_deny];
        assert_eq!(
            foreign_policies_selecting(&all, NS, "researcher", &authority),
            ["looks-like-mandate", "mandate-old", "mandate.default-deny"]
        );
        assert!(foreign_policies_selecting(&all, "elsewhere", "researcher", &authority).is_empty());
    }
}
