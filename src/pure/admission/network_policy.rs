//! The network boundary at admission: a NetworkPolicy written (or a NetworkPolicy or
//! ServiceAccount deleted), who asks, a [`Snapshot`] and the installation's [`AdmissionConfig`]
//! in; a [`Verdict`] out. Pure: never does I/O.
//!
//! - [`review_network_policy`] (CREATE, UPDATE): in an agent namespace (labelled
//!   `mandate.dev/mode`), a policy not written by mandate that can select an agent pod is
//!   `ForeignNetworkPolicy`, per the namespace's mode. "Written by mandate" is who asks (one of
//!   [`AdmissionConfig::operator_users`]), never a label anyone can set. Every pod of an agent
//!   namespace is an agent pod, so a podSelector selects agent pods unless it provably excludes
//!   them (`authority::network::may_select_agent`; in practice: it requires
//!   `mandate.dev/agent` DoesNotExist). This covers changes to mandate's own policies too: in
//!   an agent namespace only mandate writes `mandate-<agent>` and the default deny.
//! - [`review_projection_delete`] (DELETE): deleting one of mandate's projections (an agent's
//!   NetworkPolicy or ServiceAccount, or the default deny where mandate wants one) is
//!   `ProtectedProjection` unless mandate itself or one of
//!   [`AdmissionConfig::projection_deleters`] (the garbage collector, the namespace controller)
//!   asks. Always enforced, whatever the mode, like mandate's own kinds: the objects are
//!   mandate's, not the developer's, and mandate would re-create them anyway.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::mandate_resources::Requester;
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Mode, Verdict};
use crate::authority::network::{
    DEFAULT_DENY_NAME, is_default_deny, may_select_agent, owning_identity,
};
use crate::authority::{Finding, Reason};
use crate::project::{default_deny_scope, network_policy_name};

/// Whether `requester` is mandate itself.
pub fn is_operator(requester: Requester<'_>, config: &AdmissionConfig) -> bool {
    config
        .operator_users
        .iter()
        .any(|u| u == requester.username)
}

/// Reviews a NetworkPolicy created or updated by `requester`.
pub fn review_network_policy(
    policy: &NetworkPolicy,
    requester: Requester<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Verdict {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let subject = format!("NetworkPolicy {namespace}/{name}");
    let Some(mode) = snapshot.namespace_mode(namespace) else {
        // Not an agent namespace: its policies are reported on the identities they widen.
        return Verdict::skipped(subject);
    };
    let verdict = Verdict::reviewed(subject, mode);
    if is_operator(requester, config) {
        return verdict;
    }
    let selector = policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    if !may_select_agent(selector, None) {
        return verdict;
    }
    let agents: Vec<&str> = snapshot
        .authority()
        .identities_in(namespace)
        .filter_map(|identity| identity.metadata.name.as_deref())
        .filter(|agent| may_select_agent(selector, Some(agent)))
        .collect();
    let whose = if agents.is_empty() {
        "agent pods".to_owned()
    } else {
        format!("the pods of agent(s) {}", agents.join(", "))
    };
    verdict.finding(Finding::new(
        Reason::ForeignNetworkPolicy,
        format!(
            "NetworkPolicy {name} is not written by mandate and its podSelector selects {whose} \
             in agent namespace {namespace}; NetworkPolicies add up, so it would widen their \
             mandate: grant what an agent needs through a ToolBinding or DelegationPolicy, or \
             exclude agent pods (podSelector requiring mandate.dev/agent DoesNotExist)"
        ),
    ))
}

/// What kind of object a DELETE concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKind {
    NetworkPolicy,
    ServiceAccount,
}

/// Reviews the deletion of NetworkPolicy or ServiceAccount `namespace/name` by `requester`;
/// `old` is the object as stored, when the request carried a readable one.
pub fn review_projection_delete(
    kind: ProjectionKind,
    namespace: &str,
    name: &str,
    old: Option<&ObjectMeta>,
    requester: Requester<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Verdict {
    let kind_name = match kind {
        ProjectionKind::NetworkPolicy => "NetworkPolicy",
        ProjectionKind::ServiceAccount => "ServiceAccount",
    };
    let subject = format!("{kind_name} {namespace}/{name}");
    let Some(projection) = projection_of(kind, namespace, name, old, snapshot) else {
        return Verdict::skipped(subject);
    };
    let verdict = Verdict::reviewed(subject, Mode::Enforce);
    let verdict = match projection {
        Projection::Agent(agent) => match snapshot.authority().identity(namespace, agent) {
            Some(identity) => verdict.agent(agent).owner(&identity.spec.owner),
            None => verdict.agent(agent),
        },
        Projection::DefaultDeny => verdict,
    };
    if is_operator(requester, config)
        || config
            .projection_deleters
            .iter()
            .any(|u| u == requester.username)
    {
        return verdict;
    }
    let what = match projection {
        Projection::Agent(agent) => format!("agent {agent}'s {kind_name} {name}"),
        Projection::DefaultDeny => {
            format!("the default-deny NetworkPolicy of namespace {namespace}")
        }
    };
    verdict.finding(Finding::new(
        Reason::ProtectedProjection,
        format!(
            "{what} is projected by mandate and only mandate or Kubernetes' garbage collector \
             deletes it: delete or change the AgentIdentity (its projections go with it), or \
             remove the namespace's mandate.dev/mode label"
        ),
    ))
}

/// Which of mandate's projections an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Projection<'a> {
    /// A projection of this live agent.
    Agent(&'a str),
    DefaultDeny,
}

/// The projection `namespace/name` is, if mandate projects it: proven by its controller
/// ownerReference to a live identity's UID, or, should someone have removed that, by what the
/// snapshot says mandate projects under that name (an identity's `mandate-<agent>` policy, the
/// ServiceAccount mandate manages for an identity, the default deny where mandate wants one).
fn projection_of<'a>(
    kind: ProjectionKind,
    namespace: &str,
    name: &str,
    old: Option<&ObjectMeta>,
    snapshot: &'a Snapshot,
) -> Option<Projection<'a>> {
    let authority = snapshot.authority();
    if let Some(identity) = old.and_then(|old| owning_identity(old, authority)) {
        return identity.metadata.name.as_deref().map(Projection::Agent);
    }
    match kind {
        ProjectionKind::NetworkPolicy => {
            if name == DEFAULT_DENY_NAME {
                // Mandate's wherever it is (its name and label), or where mandate wants one.
                let exists = old.is_some_and(is_default_deny);
                let agent_namespace = snapshot.namespace_mode(namespace).is_some();
                return default_deny_scope(
                    agent_namespace,
                    snapshot.holds_identity(namespace),
                    exists,
                )
                .map(|_| Projection::DefaultDeny);
            }
            authority
                .identities_in(namespace)
                .filter_map(|identity| identity.metadata.name.as_deref())
                .find(|agent| network_policy_name(agent) == name)
                .map(Projection::Agent)
        }
        ProjectionKind::ServiceAccount => {
            let (agent, uid) = authority.service_account_controller(namespace, name)?;
            authority
                .identity(namespace, agent)
                .filter(|identity| identity.metadata.uid.as_deref() == Some(uid))
                .filter(|identity| identity.service_account_name() == name)
                .and_then(|identity| identity.metadata.name.as_deref())
                .map(Projection::Agent)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;
    use crate::admission::verdict::Decision;
    use crate::api::AGENT_LABEL;
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    const MANDATE: &str = "system:serviceaccount:mandate-system:mandate";
    const DEVELOPER: &str = "dev";
    const GC: &str = "system:serviceaccount:kube-system:generic-garbage-collector";

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            operator_users: vec![MANDATE.to_owned()],
            ..AdmissionConfig::default()
        }
    }

    fn snapshot(mode: Option<Mode>) -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .identity(identity("writer").build())
            .service_account(
                service_account("researcher")
                    .managed_for("researcher")
                    .build(),
            )
            .service_account(service_account("legacy").build())
            .build();
        let builder = Snapshot::builder(authority);
        match mode {
            Some(mode) => builder.namespace_mode(NS, mode).build(),
            None => builder.build(),
        }
    }

    fn policy(selector: LabelSelector) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("open".to_owned()),
                namespace: Some(NS.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector),
                ingress: Some(vec![Default::default()]),
                ..NetworkPolicySpec::default()
            }),
        }
    }

    fn agent_absent() -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: AGENT_LABEL.to_owned(),
                operator: "DoesNotExist".to_owned(),
                values: None,
            }]),
            match_labels: None,
        }
    }

    fn as_user(name: &'static str) -> Requester<'static> {
        Requester::new(name, &[])
    }

    #[test]
    fn a_foreign_policy_selecting_agent_pods_is_refused_in_enforce_and_warned_in_warn() {
        let all = policy(LabelSelector::default());
        let verdict = review_network_policy(
            &all,
            as_user(DEVELOPER),
            &snapshot(Some(Mode::Enforce)),
            &config(),
        );
        assert_eq!(verdict.codes(), ["ForeignNetworkPolicy"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let message = verdict.message().unwrap_or_default();
        assert!(message.contains("researcher, writer"), "{message}");
        let verdict = review_network_policy(
            &all,
            as_user(DEVELOPER),
            &snapshot(Some(Mode::Warn)),
            &config(),
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        let verdict = review_network_policy(
            &all,
            as_user(DEVELOPER),
            &snapshot(Some(Mode::Audit)),
            &config(),
        );
        assert_eq!(verdict.decision(), Some(Decision::Audited));
    }

    #[test]
    fn a_policy_naming_one_agent_names_that_agent() {
        let one = policy(LabelSelector {
            match_labels: Some([(AGENT_LABEL.to_owned(), "writer".to_owned())].into()),
            match_expressions: None,
        });
        let verdict = review_network_policy(
            &one,
            as_user(DEVELOPER),
            &snapshot(Some(Mode::Enforce)),
            &config(),
        );
        let message = verdict.message().unwrap_or_default();
        assert!(message.contains("agent(s) writer in"), "{message}");
    }

    #[test]
    fn mandates_own_writes_policies_excluding_agents_and_other_namespaces_pass() {
        let all = policy(LabelSelector::default());
        let enforce = snapshot(Some(Mode::Enforce));
        let verdict = review_network_policy(&all, as_user(MANDATE), &enforce, &config());
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
        let verdict = review_network_policy(
            &policy(agent_absent()),
            as_user(DEVELOPER),
            &enforce,
            &config(),
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        let verdict = review_network_policy(&all, as_user(DEVELOPER), &snapshot(None), &config());
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn a_label_never_makes_a_policy_mandates() {
        let mut labelled = policy(LabelSelector::default());
        labelled.metadata.labels = Some(
            [(
                crate::api::MANAGED_BY_LABEL.to_owned(),
                crate::api::MANAGER.to_owned(),
            )]
            .into(),
        );
        labelled.metadata.name = Some(DEFAULT_DENY_NAME.to_owned());
        let verdict = review_network_policy(
            &labelled,
            as_user(DEVELOPER),
            &snapshot(Some(Mode::Enforce)),
            &config(),
        );
        assert_eq!(verdict.codes(), ["ForeignNetworkPolicy"]);
    }

    fn delete(
        kind: ProjectionKind,
        name: &str,
        user: &'static str,
        snapshot: &Snapshot,
    ) -> Verdict {
        review_projection_delete(kind, NS, name, None, as_user(user), snapshot, &config())
    }

    #[test]
    fn deleting_a_projection_is_refused_to_developers_in_every_mode() {
        for mode in [Some(Mode::Audit), Some(Mode::Enforce), None] {
            let snapshot = snapshot(mode);
            for (kind, name) in [
                (ProjectionKind::NetworkPolicy, "mandate-researcher"),
                (ProjectionKind::NetworkPolicy, DEFAULT_DENY_NAME),
                (ProjectionKind::ServiceAccount, "researcher"),
            ] {
                let verdict = delete(kind, name, DEVELOPER, &snapshot);
                assert_eq!(verdict.codes(), ["ProtectedProjection"], "{name} {mode:?}");
                assert_eq!(verdict.decision(), Some(Decision::Denied));
            }
        }
    }

    #[test]
    fn mandate_and_the_garbage_collector_may_delete_projections() {
        let snapshot = snapshot(Some(Mode::Enforce));
        for user in [
            MANDATE,
            GC,
            "system:serviceaccount:kube-system:namespace-controller",
        ] {
            let verdict = delete(
                ProjectionKind::NetworkPolicy,
                "mandate-researcher",
                user,
                &snapshot,
            );
            assert_eq!(verdict.decision(), Some(Decision::Allowed), "{user}");
        }
    }

    #[test]
    fn objects_that_are_not_projections_may_be_deleted() {
        let snapshot = snapshot(Some(Mode::Enforce));
        for (kind, name) in [
            (ProjectionKind::NetworkPolicy, "mandate-ghost"),
            (ProjectionKind::NetworkPolicy, "open"),
            (ProjectionKind::ServiceAccount, "legacy"),
            // Claimed by writer's identity, but not mandate's: never adopted, so not protected.
            (ProjectionKind::ServiceAccount, "writer"),
        ] {
            let verdict = delete(kind, name, DEVELOPER, &snapshot);
            assert_eq!(verdict.decision(), Some(Decision::Skipped), "{name}");
        }
        // No default deny is wanted in a namespace that is neither opted in nor holds identities.
        let empty = Snapshot::builder(Authority::builder().build()).build();
        let verdict = delete(
            ProjectionKind::NetworkPolicy,
            DEFAULT_DENY_NAME,
            DEVELOPER,
            &empty,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }
}
