//! CONNECT admission (`kubectl exec`, `attach`, `port-forward`, and the API server's pod
//! proxy): what is known of the pod it goes to (its metadata, or why there is none), the
//! requesting user, a [`Snapshot`] and the installation's [`AdmissionConfig`] in; a [`Verdict`]
//! out. Only the agent's owner (its owner User, or a member of its owner Group) and members of
//! the approver group may open a connection into an agent pod: anyone else would act with the
//! agent's token and network authority (exec, attach), or reach it around its NetworkPolicy's
//! ingress rules (port-forward, proxy). Every connection to an agent pod is reviewed, allowed
//! ones too, so each leaves a decision in the audit log, the log and the metrics.
//!
//! Pure: never does I/O. The CONNECT's options carry no label of the pod, so the webhook server
//! looks the pod up first and passes the answer in as a [`TargetPod`].

use super::mandate_resources::Requester;
use super::pod::agent_mode;
use super::request::{ConnectKind, TargetPod};
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Finding, Reason, Verdict, owner_label};
use crate::api::{AGENT_LABEL, Owner, OwnerKind};

/// Reviews `requester`'s `kind` connection to pod `name` in `namespace`, of which `pod` is what
/// the lookup found.
///
/// - A pod that is no agent pod (`agent_pod_mode`'s definition: a namespace labelled
///   `mandate.dev/mode`, or the `mandate.dev/agent` label) is skipped, and so is a pod that does
///   not exist (the API server answers NotFound itself).
/// - A failed lookup in an agent namespace is judged in the namespace's mode like a refusal:
///   nothing is let through because a lookup failed. Outside agent namespaces it is recorded
///   and skipped: there mandate cannot tell an agent pod from any other, and refusing would
///   stop every exec in the cluster whenever the lookup fails (that webhook's failure policy
///   is Ignore for the same reason).
/// - The approver group may connect to every agent pod, even one whose lookup failed or whose
///   identity is gone: that needs nothing of the pod.
pub fn review_connect(
    kind: ConnectKind,
    namespace: &str,
    name: &str,
    pod: &TargetPod,
    requester: Requester<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Verdict {
    let subject = kind.subject(namespace, name);
    let verb = kind.verb();
    let approvers = config.approver_group.as_str();
    let approver = requester.in_group(approvers);
    let metadata = match pod {
        TargetPod::Found(metadata) => metadata,
        TargetPod::Missing => return Verdict::skipped(subject),
        TargetPod::NotLookedUp | TargetPod::LookupFailed(_) => {
            let why = match pod {
                TargetPod::LookupFailed(why) => why.as_str(),
                _ => "the webhook did not look it up",
            };
            let finding = Finding::new(
                Reason::ExecNotOwner,
                format!(
                    "mandate could not look up pod {namespace}/{name} to learn its agent and \
                     owner ({why}), and lets no connection to an agent pod through unjudged: \
                     retry in a moment; meanwhile only members of group {approvers} may {verb} it"
                ),
            );
            return match snapshot.namespace_mode(namespace) {
                Some(mode) if approver => Verdict::reviewed(subject, mode),
                Some(mode) => Verdict::reviewed(subject, mode).finding(finding),
                None => Verdict::skipped(subject).finding(finding),
            };
        }
    };
    let label = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(AGENT_LABEL))
        .map(String::as_str);
    let Some(mode) = agent_mode(namespace, label, snapshot, config) else {
        return Verdict::skipped(subject);
    };
    let mut verdict = Verdict::reviewed(subject, mode);
    if let Some(agent) = label {
        verdict = verdict.agent(agent);
    }
    if let Some(owner) = label.and_then(|agent| snapshot.authority().owner(namespace, agent)) {
        verdict = verdict.owner(owner);
    }
    verdict.findings(not_owner(
        namespace, label, requester, verb, snapshot, config,
    ))
}

/// The ExecNotOwner finding when `requester` may not act inside the agent pod labelled
/// `agent` (none: unlabelled) in `namespace`: when they are neither the owner of its identity
/// nor in the approver group. `verb` says what they tried (`exec into`). Also the rule for
/// ephemeral containers (`kubectl debug`), which run code inside the pod as exec does.
pub fn not_owner(
    namespace: &str,
    agent: Option<&str>,
    requester: Requester<'_>,
    verb: &str,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Option<Finding> {
    let user = requester.username;
    let approvers = config.approver_group.as_str();
    if requester.in_group(approvers) {
        return None;
    }
    let owner = agent.and_then(|agent| snapshot.authority().owner(namespace, agent));
    let detail = match (agent, owner) {
        (Some(_), Some(owner)) if owns(owner, requester) => return None,
        (Some(agent), Some(owner)) => {
            let contact = owner
                .contact
                .as_deref()
                .map(|contact| format!(" ({contact})"))
                .unwrap_or_default();
            format!(
                "{user} is neither the owner of agent {agent} ({}) nor in group {approvers}, and \
                 only they may {verb} its pods: ask the owner{contact} or an approver",
                owner_label(owner)
            )
        }
        (Some(agent), None) => format!(
            "the pod's {AGENT_LABEL}={agent} names no AgentIdentity in namespace {namespace}, so \
             it has no owner, and only members of group {approvers} may {verb} it"
        ),
        (None, _) => format!(
            "the pod has no {AGENT_LABEL} label, so it has no owner, and only members of group \
             {approvers} may {verb} it"
        ),
    };
    Some(Finding::new(Reason::ExecNotOwner, detail))
}

/// Whether `requester` is `owner`: the owner User by name, or a member of the owner Group. An
/// owner without a name (`NoOwner`) is nobody.
fn owns(owner: &Owner, requester: Requester<'_>) -> bool {
    !owner.name.trim().is_empty()
        && match owner.kind {
            OwnerKind::User => owner.name == requester.username,
            OwnerKind::Group => requester.in_group(&owner.name),
        }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::admission::verdict::{Decision, Mode};
    use crate::admission::{AUDIT_AGENT, AUDIT_DECISION, AUDIT_OWNER};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    const APPROVERS: &str = "mandate:approvers";

    /// `agents` enforces and `agents-warn` warns; `researcher` is owned by user alice (contact
    /// `#research`), `planner` by group `planners`; `team-b` is not an agent namespace.
    fn snapshot() -> Snapshot {
        let mut researcher = identity("researcher")
            .owner(OwnerKind::User, "alice")
            .ready()
            .build();
        researcher.spec.owner.contact = Some("#research".into());
        let authority = Authority::builder()
            .identity(researcher)
            .identity(
                identity("planner")
                    .owner(OwnerKind::Group, "planners")
                    .build(),
            )
            .identity(
                identity("researcher")
                    .namespace("agents-warn")
                    .owner(OwnerKind::User, "alice")
                    .build(),
            )
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .namespace_mode("agents-warn", Mode::Warn)
            .build()
    }

    fn found(namespace: &str, agent: Option<&str>) -> TargetPod {
        TargetPod::Found(Box::new(ObjectMeta {
            name: Some("p".into()),
            namespace: Some(namespace.into()),
            labels: agent.map(|agent| BTreeMap::from([(AGENT_LABEL.to_owned(), agent.into())])),
            ..ObjectMeta::default()
        }))
    }

    fn connect(namespace: &str, pod: &TargetPod, user: &str, groups: &[&str]) -> Verdict {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        review_connect(
            ConnectKind::Exec,
            namespace,
            "p",
            pod,
            Requester::new(user, &groups),
            &snapshot(),
            &AdmissionConfig::default(),
        )
    }

    #[test]
    fn the_owner_user_may_exec_into_their_agents_pod_and_the_decision_is_annotated() {
        let verdict = connect(NS, &found(NS, Some("researcher")), "alice", &[]);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
        let annotations = verdict.audit_annotations();
        for expected in [
            (AUDIT_DECISION, "allowed"),
            (AUDIT_AGENT, "researcher"),
            (AUDIT_OWNER, "User:alice"),
        ] {
            assert!(
                annotations.contains(&(expected.0, expected.1.to_owned())),
                "{annotations:?}"
            );
        }
    }

    #[test]
    fn a_member_of_the_owner_group_may_connect_and_a_namesake_user_may_not() {
        let pod = found(NS, Some("planner"));
        let member = connect(NS, &pod, "bob", &["system:authenticated", "planners"]);
        assert_eq!(member.decision(), Some(Decision::Allowed), "{member:?}");
        let namesake = connect(NS, &pod, "planners", &["system:authenticated"]);
        assert_eq!(namesake.codes(), ["ExecNotOwner"]);
    }

    #[test]
    fn an_approver_may_connect_to_any_agent_pod() {
        for agent in [Some("researcher"), Some("ghost"), None] {
            let verdict = connect(NS, &found(NS, agent), "carol", &[APPROVERS]);
            assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        }
    }

    #[test]
    fn anyone_else_is_refused_with_exec_not_owner_naming_who_may() {
        let verdict = connect(
            NS,
            &found(NS, Some("researcher")),
            "dev",
            &["system:authenticated"],
        );
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.codes(), ["ExecNotOwner"]);
        assert_eq!(
            verdict.message().as_deref(),
            Some(
                "mandate refused exec into Pod agents/p (1 rule failed): ExecNotOwner: dev is \
                 neither the owner of agent researcher (User:alice) nor in group \
                 mandate:approvers, and only they may exec into its pods: ask the owner \
                 (#research) or an approver"
            )
        );
    }

    #[test]
    fn a_service_account_is_no_owner_not_even_the_agents_own() {
        let verdict = connect(
            NS,
            &found(NS, Some("researcher")),
            "system:serviceaccount:agents:researcher",
            &["system:serviceaccounts", "system:serviceaccounts:agents"],
        );
        assert_eq!(verdict.codes(), ["ExecNotOwner"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_pod_without_an_identity_in_an_agent_namespace_is_for_approvers_only() {
        let unlabelled = connect(NS, &found(NS, None), "alice", &[]);
        assert_eq!(unlabelled.codes(), ["ExecNotOwner"]);
        assert!(
            unlabelled
                .message()
                .unwrap_or_default()
                .contains("no mandate.dev/agent label"),
            "{unlabelled:?}"
        );
        let ghost = connect(NS, &found(NS, Some("ghost")), "alice", &[]);
        assert_eq!(ghost.codes(), ["ExecNotOwner"]);
        assert_eq!(ghost.agent_name(), Some("ghost"));
    }

    #[test]
    fn a_non_agent_pod_is_skipped_and_an_agent_labelled_one_elsewhere_is_enforced() {
        let plain = connect("team-b", &found("team-b", None), "dev", &[]);
        assert_eq!(plain.decision(), Some(Decision::Skipped));
        assert!(plain.codes().is_empty());
        // The default mode (enforce) applies to an agent-labelled pod outside agent namespaces.
        let labelled = connect("team-b", &found("team-b", Some("scraper")), "dev", &[]);
        assert_eq!(labelled.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_missing_pod_is_skipped_for_the_api_server_to_answer() {
        let verdict = connect(NS, &TargetPod::Missing, "dev", &[]);
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn a_failed_lookup_in_an_agent_namespace_is_refused_never_allowed() {
        let failed = TargetPod::LookupFailed("the API server timed out".into());
        for pod in [&failed, &TargetPod::NotLookedUp] {
            let verdict = connect(NS, pod, "alice", &[]);
            assert_eq!(verdict.decision(), Some(Decision::Denied), "{verdict:?}");
            assert_eq!(verdict.codes(), ["ExecNotOwner"]);
        }
        let message = connect(NS, &failed, "alice", &[])
            .message()
            .unwrap_or_default();
        assert!(
            message.contains("could not look up pod agents/p")
                && message.contains("the API server timed out"),
            "{message}"
        );
        // An approver needs nothing of the pod.
        let approver = connect(NS, &failed, "carol", &[APPROVERS]);
        assert_eq!(approver.decision(), Some(Decision::Allowed));
    }

    #[test]
    fn a_failed_lookup_follows_the_namespace_mode_and_is_only_recorded_elsewhere() {
        let failed = TargetPod::LookupFailed("forbidden".into());
        let warned = connect("agents-warn", &failed, "dev", &[]);
        assert_eq!(warned.decision(), Some(Decision::Warned));
        assert_eq!(warned.warnings().len(), 1);
        let elsewhere = connect("team-b", &failed, "dev", &[]);
        assert_eq!(elsewhere.decision(), Some(Decision::Skipped));
        assert_eq!(elsewhere.codes(), ["ExecNotOwner"]);
    }

    #[test]
    fn warn_mode_admits_a_stranger_with_a_warning() {
        let verdict = connect(
            "agents-warn",
            &found("agents-warn", Some("researcher")),
            "dev",
            &[],
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        assert!(verdict.warnings()[0].starts_with("ExecNotOwner: dev is neither the owner"));
    }

    #[test]
    fn an_ownerless_identity_is_owned_by_nobody_not_by_an_empty_name() {
        let authority = Authority::builder()
            .identity(identity("orphan").owner(OwnerKind::Group, "").build())
            .build();
        let snapshot = Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build();
        let groups = vec![String::new()];
        let verdict = review_connect(
            ConnectKind::Exec,
            NS,
            "p",
            &found(NS, Some("orphan")),
            Requester::new("", &groups),
            &snapshot,
            &AdmissionConfig::default(),
        );
        assert_eq!(verdict.codes(), ["ExecNotOwner"]);
    }

    #[test]
    fn every_connect_kind_is_named_in_the_subject() {
        let groups: Vec<String> = Vec::new();
        for (kind, subject) in [
            (ConnectKind::Attach, "attach to Pod agents/p"),
            (ConnectKind::PortForward, "port-forward to Pod agents/p"),
            (ConnectKind::Proxy, "proxy to Pod agents/p"),
        ] {
            let verdict = review_connect(
                kind,
                NS,
                "p",
                &found(NS, Some("researcher")),
                Requester::new("dev", &groups),
                &snapshot(),
                &AdmissionConfig::default(),
            );
            assert_eq!(verdict.subject(), subject);
            assert_eq!(verdict.codes(), ["ExecNotOwner"]);
        }
    }
}
