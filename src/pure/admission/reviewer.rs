//! The reviewer: a typed [`Request`], the current [`Snapshot`] (or none before the caches
//! synced), the installation's [`AdmissionConfig`] and the time in; a [`Verdict`] out. Decides
//! whether the request is reviewed at all (kind, operation, subresource, mandate's own
//! namespace) and hands its object, already read into its kind, to the pure review of that kind.
//! [`review`] never does I/O; [`MandateReviewer`] only loads the latest snapshot from an atomic
//! pointer and reads its clock.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::core::admission::Operation;

use super::Reviewer;
use super::connect::{not_owner, review_connect};
use super::credentials::{self, Mutation};
use super::mandate_resources::{MandateResource, Requester, review_resource, review_status};
use super::namespace::review_namespace_update;
use super::network_policy::{
    ProjectionKind, is_operator, review_network_policy, review_projection_delete,
};
use super::pod::{PodView, agent_pod_mode, review_pod};
use super::request::{Object, Objects, ReadObjectError, Request, SecretHead};
use super::secret::review_secret;
use super::snapshot::{AdmissionConfig, SERVICE_ACCOUNT_NAME_ANNOTATION, Snapshot};
use super::token::review_token_request;
use super::verdict::{Mode, Verdict};
use super::workload::{PodTemplate, review_workload};
use crate::api::{AGENT_LABEL, MANAGED_BY_LABEL, MANAGER, TOOL_CREDENTIALS_ANNOTATION};
use crate::authority::{Finding, Reason};

/// Where the reviewer reads the current snapshot: `None` until the caches have synced. `mandate
/// run` publishes into it with `store` (`operator::publish_snapshots`): a first snapshot once
/// every watch of the index has listed, then one after every batch of changes. The index only
/// watches and keeps the live authority; the hot path takes no lock.
pub type SnapshotSource = Arc<ArcSwapOption<Snapshot>>;

/// What the reviewer reads the time from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock stopped at one instant (tests, offline checks).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// The webhook's [`Reviewer`]: reviews every request against the latest published snapshot.
pub struct MandateReviewer {
    snapshots: SnapshotSource,
    config: AdmissionConfig,
    clock: Arc<dyn Clock>,
}

/// A message that says what to do when mandate has no snapshot yet.
const NOT_SYNCED: &str = "mandate is starting: its caches have not synced, so it cannot judge \
                          this yet; retry in a few seconds";

impl MandateReviewer {
    /// A reviewer reading snapshots from `snapshots`, with the system clock.
    pub fn new(snapshots: SnapshotSource, config: AdmissionConfig) -> Self {
        MandateReviewer {
            snapshots,
            config,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock (tests use [`FixedClock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }
}

impl Reviewer for MandateReviewer {
    /// The verdict on `request` under the current snapshot and time.
    fn review(&self, request: &Request) -> Verdict {
        let snapshot = self.snapshots.load();
        review(request, snapshot.as_deref(), &self.config, self.clock.now())
    }

    /// The per-tool credentials for `request` under the current snapshot and time.
    fn mutate(&self, request: &Request) -> Mutation {
        let snapshot = self.snapshots.load();
        credentials::mutate(request, snapshot.as_deref(), &self.config, self.clock.now())
    }
}

/// Reviews `request`. `snapshot` is `None` until the caches have synced: then agent pods and
/// mandate resources are refused ([`Reason::NotReady`]) and everything else is let through with
/// the reason recorded, since without the cache nothing tells an agent namespace apart (the
/// webhook is not ready then, so the API server's failure policy guards agent namespaces).
pub fn review(
    request: &Request,
    snapshot: Option<&Snapshot>,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let object = &request.object;
    // A ServiceAccount is read only for its deletion (mandate's are protected): any other
    // request about one is a kind mandate does not review.
    let service_account_write =
        matches!(object, Object::ServiceAccount(_)) && request.operation != Operation::Delete;
    // A Namespace is read only for a change of its mode: creating one (a manifest for `mandate
    // check`) is not reviewed.
    let namespace_not_updated =
        matches!(object, Object::Namespace(_)) && request.operation != Operation::Update;
    if matches!(object, Object::Other) || service_account_write || namespace_not_updated {
        return Verdict::ignored();
    }
    let namespace = match object {
        // A Namespace is its own namespace: mandate's own is never reviewed.
        Object::Namespace(_) => request.name.as_str(),
        _ => request
            .namespace
            .as_deref()
            .or_else(|| object.metadata().and_then(|m| m.namespace.as_deref()))
            .unwrap_or_default(),
    };
    let subject = match object {
        Object::Connect(connect) => connect.kind.subject(namespace, &request.name),
        _ => format!("{} {namespace}/{}", request.kind.kind, request.name),
    };
    if namespace == config.own_namespace {
        return Verdict::skipped(subject);
    }
    let reviewed = match (object, &request.operation) {
        (Object::TokenRequest(_), Operation::Create) => true,
        (Object::TokenRequest(_), _) => false,
        // Deleting mandate's projections is reviewed; a ServiceAccount only then.
        (Object::NetworkPolicy(_) | Object::ServiceAccount(_), Operation::Delete) => true,
        (Object::Connect(_), operation) => *operation == Operation::Connect,
        (_, Operation::Create | Operation::Update) => true,
        _ => false,
    };
    let subresource_reviewed = match (object, request.sub_resource.as_deref()) {
        (Object::TokenRequest(_), sub) => sub == Some("token"),
        // Its kind (PodExecOptions, ...) names the subresource.
        (Object::Connect(_), _) => true,
        (_, None) => true,
        // Labels change through the status subresource too: judged when the agent label does.
        (Object::Pod(_), Some("ephemeralcontainers" | "status")) => true,
        (object, Some(_)) => object.is_mandate(),
    };
    if !reviewed || !subresource_reviewed {
        return Verdict::skipped(subject);
    }
    // The status of mandate's kinds is mandate's alone, and needs no snapshot to say so.
    if object.is_mandate() && request.sub_resource.is_some() {
        return review_status(
            format!("status of {subject}"),
            mandate_agent(object, &request.name),
            Requester::from_user_info(&request.user_info),
            config,
        );
    }
    if request.operation == Operation::Delete {
        return review_delete(request, object, namespace, subject, snapshot, config);
    }
    if object.is_absent() {
        return invalid(subject, &ReadObjectError::Missing);
    }
    let requester = Requester::from_user_info(&request.user_info);
    // Judged before the snapshot is checked: an approver's change needs none.
    if let Object::Namespace(namespaces) = object {
        return match namespaces.object.get() {
            Ok(new) => review_namespace_update(
                namespace,
                namespaces.old.as_ref().map(|old| &old.metadata),
                &new.metadata,
                requester,
                snapshot,
                config,
            ),
            Err(error) => invalid(subject, error),
        };
    }
    let Some(snapshot) = snapshot else {
        return not_synced(object, subject, is_operator(requester, config));
    };

    match object {
        Object::Pod(pods) => review_pod_request(request, pods, subject, snapshot, config, now),
        Object::Deployment(o) => review_template(o, subject, snapshot, config, now),
        Object::StatefulSet(o) => review_template(o, subject, snapshot, config, now),
        Object::DaemonSet(o) => review_template(o, subject, snapshot, config, now),
        Object::ReplicaSet(o) => review_template(o, subject, snapshot, config, now),
        Object::Job(o) => review_template(o, subject, snapshot, config, now),
        Object::CronJob(o) => review_template(o, subject, snapshot, config, now),
        Object::Secret(secrets) => match secrets.object.get() {
            // Like a pod update: an update that changes neither the type nor the
            // ServiceAccount a token Secret names (the token controller filling in its data,
            // the legacy-token cleaner labelling it) is not reviewed again; one that retargets
            // it is reviewed as a create.
            Ok(secret)
                if secrets
                    .old
                    .as_ref()
                    .is_some_and(|old| same_token_target(old, secret)) =>
            {
                Verdict::skipped(subject)
            }
            Ok(secret) => {
                review_secret(&secret.metadata, secret.type_.as_deref(), snapshot, config)
            }
            Err(error) => invalid(subject, error),
        },
        Object::TokenRequest(tokens) => match tokens.object.get() {
            Ok(token) => {
                review_token_request(token, namespace, &request.name, snapshot, config, now)
            }
            Err(error) => invalid(subject, error),
        },
        Object::NetworkPolicy(policies) => match policies.object.get() {
            Ok(policy) => review_network_policy(policy, requester, snapshot, config),
            Err(error) => invalid(subject, error),
        },
        // Only DELETE reaches here (above).
        Object::ServiceAccount(_) => Verdict::skipped(subject),
        Object::AgentIdentity(o) => {
            review_resource_request(request, o, subject, snapshot, config, now)
        }
        Object::ToolBinding(o) => {
            review_resource_request(request, o, subject, snapshot, config, now)
        }
        Object::DelegationPolicy(o) => {
            review_resource_request(request, o, subject, snapshot, config, now)
        }
        // Judged above, before the snapshot.
        Object::Namespace(_) => Verdict::skipped(subject),
        Object::Connect(connect) => review_connect(
            connect.kind,
            namespace,
            &request.name,
            &connect.pod,
            Requester::from_user_info(&request.user_info),
            snapshot,
            config,
        ),
        Object::Other => Verdict::ignored(),
    }
}

/// Whether a Secret update leaves its type and the ServiceAccount it names as they were.
fn same_token_target(old: &SecretHead, new: &SecretHead) -> bool {
    let service_account = |secret: &SecretHead| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
            .cloned()
    };
    old.type_ == new.type_ && service_account(old) == service_account(new)
}

/// Reviews a pod update or create. An update that changes the agent label is always judged in
/// full, on every path: the pod itself, its `status` subresource, a pod that is terminating (a
/// long grace period, a finalizer), since each of them changes which NetworkPolicy selects a
/// running pod. Otherwise a status update and an update of a terminating pod are skipped (the
/// kubelet writes status all the time, and a finalizer must come off a pod whose identity is
/// gone), and so is, like Pod Security Admission, an update that changes neither the spec nor
/// the agent label.
fn review_pod_request(
    request: &Request,
    pods: &Objects<Pod>,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let pod = match pods.object.get() {
        Ok(pod) => pod,
        Err(error) => return invalid(subject, error),
    };
    if request.operation == Operation::Update {
        // An old pod that could not be read counts as a change: never skip what was not seen.
        let relabelled = pods
            .old
            .as_ref()
            .is_none_or(|old| agent_label(old) != agent_label(pod));
        let status = request.sub_resource.as_deref() == Some("status");
        let terminating = pod.metadata.deletion_timestamp.is_some();
        // The credentials annotation counts as the spec: it says which tool tokens the pod
        // holds, so a change of it is judged (it must be backed by the pod's volumes).
        let unchanged = pods.old.as_ref().is_some_and(|old| {
            old.spec == pod.spec && credentials_annotation(old) == credentials_annotation(pod)
        });
        if !relabelled && (status || terminating || unchanged) {
            return Verdict::skipped(subject);
        }
    }
    let mut verdict = review_pod(pod, snapshot, config, now);
    // An ephemeral container (`kubectl debug`) runs code inside the pod, with its volumes and,
    // with --target, its processes: for an agent pod, that is exec by another name.
    if request.sub_resource.as_deref() == Some("ephemeralcontainers")
        && adds_ephemeral_containers(pods.old.as_ref(), pod)
        && let Some(view) = PodView::of(pod)
        && agent_pod_mode(&view, snapshot, config).is_some()
        && let Some(finding) = not_owner(
            view.namespace,
            view.agent(),
            Requester::from_user_info(&request.user_info),
            "add an ephemeral container (kubectl debug) to",
            snapshot,
            config,
        )
    {
        verdict.push(finding);
    }
    verdict
}

/// Whether `pod` has ephemeral containers `old` lacks (they can only be added, never changed or
/// removed); an old pod that could not be read counts as having none.
fn adds_ephemeral_containers(old: Option<&Pod>, pod: &Pod) -> bool {
    let count = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.ephemeral_containers.as_ref())
            .map_or(0, Vec::len)
    };
    count(pod) > old.map_or(0, count)
}

fn credentials_annotation(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOOL_CREDENTIALS_ANNOTATION))
        .map(String::as_str)
}

fn agent_label(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(AGENT_LABEL))
        .map(String::as_str)
}

/// Reviews a workload's pod template (warnings only; an unreadable workload is refused, as any
/// unreadable object).
fn review_template<W>(
    workloads: &Objects<W>,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict
where
    W: PodTemplate + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    match workloads.object.get() {
        Ok(workload) => review_workload(workload, snapshot, config, now),
        Err(error) => invalid(subject, error),
    }
}

/// Reviews one of mandate's own kinds, all three alike.
fn review_resource_request<R: MandateResource>(
    request: &Request,
    resources: &Objects<R>,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let object = match resources.object.get() {
        Ok(object) => object,
        Err(error) => return invalid(subject, error),
    };
    let requester = Requester::from_user_info(&request.user_info);
    // A status write never gets here: `review_status` judged it.
    review_resource(
        object,
        resources.old.as_ref(),
        requester,
        snapshot,
        config,
        now,
    )
}

/// The agent a request for one of mandate's kinds concerns, when its object says: the
/// identity itself, a binding's agent, a policy's delegator.
fn mandate_agent<'a>(object: &'a Object, name: &'a str) -> Option<&'a str> {
    match object {
        Object::AgentIdentity(o) => o
            .object
            .get()
            .ok()
            .and_then(|i| i.metadata.name.as_deref())
            .or(Some(name)),
        Object::ToolBinding(o) => o.object.get().ok().map(|b| b.spec.agent.as_str()),
        Object::DelegationPolicy(o) => o.object.get().ok().map(|p| p.spec.delegator.as_str()),
        _ => None,
    }
}

/// Reviews a DELETE: of a NetworkPolicy or ServiceAccount, whether it is one of mandate's
/// projections and who deletes it. Before the first snapshot nothing tells a projection apart
/// but its `managed-by` label: one carrying it is refused to anyone but mandate and the
/// configured deleters (never let through because the cache is empty), the rest pass.
fn review_delete(
    request: &Request,
    object: &Object,
    namespace: &str,
    subject: String,
    snapshot: Option<&Snapshot>,
    config: &AdmissionConfig,
) -> Verdict {
    let (kind, old) = match object {
        Object::NetworkPolicy(o) => (
            ProjectionKind::NetworkPolicy,
            o.old.as_ref().map(|p| &p.metadata),
        ),
        Object::ServiceAccount(o) => (
            ProjectionKind::ServiceAccount,
            o.old.as_ref().map(|s| &s.metadata),
        ),
        _ => return Verdict::skipped(subject),
    };
    let requester = Requester::from_user_info(&request.user_info);
    let Some(snapshot) = snapshot else {
        let labelled = old
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGER);
        let deleter = is_operator(requester, config)
            || config
                .projection_deleters
                .iter()
                .any(|u| u == requester.username);
        let finding = Finding::new(Reason::NotReady, NOT_SYNCED);
        return if labelled && !deleter {
            Verdict::reviewed(subject, Mode::Enforce).finding(finding)
        } else {
            Verdict::skipped(subject).finding(finding)
        };
    };
    review_projection_delete(
        kind,
        namespace,
        &request.name,
        old,
        requester,
        snapshot,
        config,
    )
}

/// Before the first snapshot: refuse what must never run unreviewed, let the rest through with
/// the reason recorded. A NetworkPolicy reaches the webhook only from agent namespaces (or
/// from `mandate check`): one not written by mandate is refused, as it could select agent pods.
fn not_synced(object: &Object, subject: String, by_operator: bool) -> Verdict {
    let finding = Finding::new(Reason::NotReady, NOT_SYNCED);
    let agent = object
        .metadata()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(AGENT_LABEL));
    match (object, agent) {
        (Object::Pod(_) | Object::Connect(_), Some(agent)) => {
            Verdict::reviewed(subject, Mode::Enforce)
                .agent(agent.as_str())
                .finding(finding)
        }
        (object, _) if object.is_mandate() => {
            Verdict::reviewed(subject, Mode::Enforce).finding(finding)
        }
        (Object::NetworkPolicy(_), _) if !by_operator => {
            Verdict::reviewed(subject, Mode::Enforce).finding(finding)
        }
        _ => Verdict::skipped(subject).finding(finding),
    }
}

fn invalid(subject: String, error: &ReadObjectError) -> Verdict {
    Verdict::reviewed(subject, Mode::Enforce).finding(Finding::new(
        Reason::InvalidObject,
        format!("{error}: send a complete, valid object"),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::request::{TargetPod, parse_review};
    use crate::admission::verdict::Decision;
    use crate::api::{GROUP, VERSION};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn request(kind: (&str, &str, &str), operation: &str, object: serde_json::Value) -> Request {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
                "resource": {"group": kind.0, "version": kind.1, "resource": "things"},
                "name": "x",
                "namespace": NS,
                "operation": operation,
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": object,
            }
        });
        parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").ready().build())
            .binding(binding("b").agent("researcher").tool(tool("t")).build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build()
    }

    fn agent_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "namespace": NS, "labels": {"mandate.dev/agent": "researcher"}},
            "spec": {"serviceAccountName": "researcher", "containers": [{"name": "c", "image": "i"}]}
        })
    }

    #[test]
    fn a_good_agent_pod_is_allowed() {
        let verdict = review(
            &request(("", "v1", "Pod"), "CREATE", agent_pod()),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn an_agent_pod_is_never_admitted_before_the_caches_synced() {
        let verdict = review(
            &request(("", "v1", "Pod"), "CREATE", agent_pod()),
            None,
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["NotReady"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert!(
            verdict
                .message()
                .unwrap_or_default()
                .contains("mandate is starting: its caches have not synced")
        );
    }

    #[test]
    fn a_pod_that_cannot_be_read_is_refused_as_invalid() {
        let object = json!({"metadata": {"name": "x"}, "spec": {"containers": "oops"}});
        let verdict = review(
            &request(("", "v1", "Pod"), "CREATE", object),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["InvalidObject"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn unknown_kinds_are_ignored_and_deletes_skipped() {
        let verdict = review(
            &request(("", "v1", "ConfigMap"), "CREATE", json!({"metadata": {}})),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), None);
        let verdict = review(
            &request(("", "v1", "Pod"), "DELETE", agent_pod()),
            None,
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn mandates_own_namespace_is_never_reviewed() {
        let config = AdmissionConfig {
            own_namespace: NS.into(),
            ..AdmissionConfig::default()
        };
        let verdict = review(
            &request(("", "v1", "Pod"), "CREATE", agent_pod()),
            None,
            &config,
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        assert!(verdict.codes().is_empty());
    }

    #[test]
    fn an_unreadable_agent_pod_is_refused_as_not_ready_before_the_caches_synced() {
        let object = json!({"metadata": {"name": "x", "labels": {"mandate.dev/agent": "researcher"}},
            "spec": {"containers": "oops"}});
        let request = request(("", "v1", "Pod"), "CREATE", object);
        let verdict = review(&request, None, &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.codes(), ["NotReady"]);
        assert_eq!(verdict.agent_name(), Some("researcher"));
        let verdict = review(
            &request,
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["InvalidObject"]);
    }

    /// `kubectl debug --profile=sysadmin`: an update of `pods/ephemeralcontainers` adding a
    /// privileged container to a running agent pod.
    #[test]
    fn a_privileged_ephemeral_container_added_to_an_agent_pod_is_refused() {
        let mut debugged = agent_pod();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "debugger-x", "image": "busybox",
            "securityContext": {"privileged": true}}]);
        let mut update = request(("", "v1", "Pod"), "UPDATE", debugged);
        update.sub_resource = Some("ephemeralcontainers".into());
        let Object::Pod(pods) = &mut update.object else {
            panic!("not a pod");
        };
        pods.old = serde_json::from_value(agent_pod()).ok();
        let verdict = review(&update, Some(&snapshot()), &AdmissionConfig::default(), NOW);
        // The requester is not the owner either: both rules speak, each for itself.
        assert_eq!(verdict.codes(), ["ExecNotOwner", "PodSecurityBaseline"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let message = verdict.message().unwrap_or_default();
        assert!(
            message.contains("spec.ephemeralContainers[0].securityContext.privileged is true"),
            "{message}"
        );
    }

    #[test]
    fn a_pod_update_changing_neither_spec_nor_agent_label_is_skipped() {
        let mut changed = agent_pod();
        changed["metadata"]["labels"]["team"] = json!("research");
        let mut update = request(("", "v1", "Pod"), "UPDATE", changed.clone());
        let Object::Pod(pods) = &mut update.object else {
            panic!("not a pod");
        };
        pods.old = serde_json::from_value(agent_pod()).ok();
        let config = AdmissionConfig::default();
        let verdict = review(&update, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        changed["metadata"]["labels"]["mandate.dev/agent"] = json!("ghost");
        let mut relabelled = request(("", "v1", "Pod"), "UPDATE", changed);
        if let Object::Pod(pods) = &mut relabelled.object {
            pods.old = serde_json::from_value(agent_pod()).ok();
        }
        let verdict = review(&relabelled, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.codes(), ["NoIdentity", "ServiceAccountHijack"]);
    }

    /// An UPDATE of pod `x` from `old` to `object`, through `sub_resource` if any, as the API
    /// server sends it.
    fn pod_update(
        sub_resource: Option<&str>,
        old: &serde_json::Value,
        object: &serde_json::Value,
    ) -> Request {
        reviewed(json!({
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub_resource,
            "name": "x",
            "namespace": NS,
            "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }))
    }

    /// The request `request` as the API server sends it, read.
    fn reviewed(request: serde_json::Value) -> Request {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        });
        parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn relabelled(pod: &serde_json::Value, agent: &str) -> serde_json::Value {
        let mut pod = pod.clone();
        pod["metadata"]["labels"]["mandate.dev/agent"] = json!(agent);
        pod
    }

    fn terminating(pod: &serde_json::Value) -> serde_json::Value {
        let mut pod = pod.clone();
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
        pod
    }

    #[test]
    fn a_status_update_that_changes_the_agent_label_is_judged_like_any_pod_update() {
        let update = pod_update(
            Some("status"),
            &agent_pod(),
            &relabelled(&agent_pod(), "ghost"),
        );
        let verdict = review(&update, Some(&snapshot()), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.codes(), ["NoIdentity", "ServiceAccountHijack"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_status_update_that_keeps_the_agent_label_is_allowed_without_the_pod_rules() {
        // The identity is gone, so the pod rules would refuse the pod: the kubelet's status
        // writes must still go through.
        let mut status = agent_pod();
        status["status"] = json!({"phase": "Running"});
        status["metadata"]["labels"]["team"] = json!("research");
        let update = pod_update(Some("status"), &agent_pod(), &status);
        let empty = Snapshot::builder(Authority::builder().build())
            .namespace_mode(NS, Mode::Enforce)
            .build();
        let verdict = review(&update, Some(&empty), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.decision(), Some(Decision::Skipped), "{verdict:?}");
        assert!(verdict.codes().is_empty());
    }

    #[test]
    fn an_ephemeral_container_in_an_agent_pod_is_for_its_owner_and_approvers_only() {
        let mut debugged = agent_pod();
        debugged["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "busybox", "targetContainerName": "c"}]);
        let config = AdmissionConfig::default();
        // alice is not in team-a, the fixture identity's owner group.
        let stranger = pod_update(Some("ephemeralcontainers"), &agent_pod(), &debugged);
        let verdict = review(&stranger, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.codes(), ["ExecNotOwner"], "{verdict:?}");
        assert!(
            verdict
                .message()
                .unwrap_or_default()
                .contains("only they may add an ephemeral container (kubectl debug) to its pods"),
            "{verdict:?}"
        );
        let mut owner = pod_update(Some("ephemeralcontainers"), &agent_pod(), &debugged);
        owner.user_info.groups = Some(vec!["team-a".into()]);
        let verdict = review(&owner, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn a_terminating_pod_that_changes_its_agent_label_is_judged_like_any_pod_update() {
        let old = terminating(&agent_pod());
        let update = pod_update(None, &old, &relabelled(&old, "ghost"));
        let verdict = review(&update, Some(&snapshot()), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.codes(), ["NoIdentity", "ServiceAccountHijack"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let status = pod_update(Some("status"), &old, &relabelled(&old, "ghost"));
        let verdict = review(&status, Some(&snapshot()), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_terminating_pod_may_lose_its_finalizer_after_its_identity_is_gone() {
        let old = terminating(&agent_pod());
        let mut released = old.clone();
        released["metadata"]["finalizers"] = json!([]);
        let empty = Snapshot::builder(Authority::builder().build())
            .namespace_mode(NS, Mode::Enforce)
            .build();
        let verdict = review(
            &pod_update(None, &old, &released),
            Some(&empty),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped), "{verdict:?}");
    }

    #[test]
    fn mandates_three_kinds_are_reviewed_alike_and_always_enforced() {
        let config = AdmissionConfig::default();
        let identity = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
            "metadata": {"name": "writer"},
            "spec": {"owner": {"kind": "Group", "name": "team"}, "purpose": "writes"}});
        let verdict = review(
            &request((GROUP, VERSION, "AgentIdentity"), "CREATE", identity),
            Some(&snapshot()),
            &config,
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        assert_eq!(verdict.subject(), format!("AgentIdentity {NS}/writer"));
        let binding = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
            "metadata": {"name": "b2"},
            "spec": {"agent": "ghost", "tools": [{"name": "t", "actions": ["read"],
                "destination": {"service": {"name": "t"}}}]}});
        let verdict = review(
            &request((GROUP, VERSION, "ToolBinding"), "CREATE", binding),
            Some(&snapshot()),
            &config,
            NOW,
        );
        assert_eq!(verdict.codes(), ["MissingIdentity"]);
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
        let policy = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "DelegationPolicy",
            "metadata": {"name": "p"},
            "spec": {"delegator": "ghost", "delegates": [{"agent": "researcher", "tools": ["t"]}]}});
        let verdict = review(
            &request((GROUP, VERSION, "DelegationPolicy"), "CREATE", policy),
            Some(&snapshot()),
            &config,
            NOW,
        );
        assert_eq!(verdict.codes(), ["MissingDelegator"], "{verdict:?}");
    }

    /// An update of the `status` subresource of `kind` by `user`.
    fn status_write(kind: &str, object: serde_json::Value, user: &str) -> Request {
        let mut update = request((GROUP, VERSION, kind), "UPDATE", object);
        update.sub_resource = Some("status".into());
        update.user_info.username = Some(user.into());
        update.user_info.groups = Some(vec!["system:masters".into()]);
        update
    }

    #[test]
    fn only_mandate_writes_the_status_of_its_kinds_even_before_the_caches_synced() {
        let config = AdmissionConfig {
            operator_users: vec!["system:serviceaccount:mandate-system:mandate".into()],
            ..AdmissionConfig::default()
        };
        let identity = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
            "metadata": {"name": "researcher", "namespace": NS},
            "spec": {"owner": {"kind": "Group", "name": "team"}, "purpose": "reads"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Applied",
                "message": "", "lastTransitionTime": "2027-01-15T08:00:00Z"}]}});
        let binding = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
            "metadata": {"name": "b", "namespace": NS},
            "spec": {"agent": "researcher", "tools": [{"name": "t", "actions": ["read"],
                "destination": {"service": {"name": "t"}}}]},
            "status": {"phase": "Active"}});
        let policy = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "DelegationPolicy",
            "metadata": {"name": "p", "namespace": NS},
            "spec": {"delegator": "researcher", "delegates": [{"agent": "x", "tools": ["t"]}]}});
        for (kind, object) in [
            ("AgentIdentity", &identity),
            ("ToolBinding", &binding),
            ("DelegationPolicy", &policy),
        ] {
            for snapshot in [Some(snapshot()), None] {
                let admin = review(
                    &status_write(kind, object.clone(), "kubernetes-admin"),
                    snapshot.as_ref(),
                    &config,
                    NOW,
                );
                assert_eq!(admin.codes(), ["ProtectedStatus"], "{kind}: {admin:?}");
                assert_eq!(admin.decision(), Some(Decision::Denied));
                assert_eq!(admin.agent_name(), Some("researcher"));
                assert!(
                    admin.all_findings()[0].detail.contains(
                        "only mandate (system:serviceaccount:mandate-system:mandate) writes"
                    ),
                    "{admin:?}"
                );
                let mandate = review(
                    &status_write(
                        kind,
                        object.clone(),
                        "system:serviceaccount:mandate-system:mandate",
                    ),
                    snapshot.as_ref(),
                    &config,
                    NOW,
                );
                assert_eq!(
                    mandate.decision(),
                    Some(Decision::Allowed),
                    "{kind}: {mandate:?}"
                );
            }
        }
        // mandate check knows no operator user: every status write is someone else's.
        let offline = review(
            &status_write("AgentIdentity", identity, "mandate-check"),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(offline.codes(), ["ProtectedStatus"]);
    }

    fn token_secret(service_account: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "x", "namespace": NS,
                "annotations": {"kubernetes.io/service-account.name": service_account}}})
    }

    fn secret_update(old: &str, new: &str) -> Request {
        let mut update = request(("", "v1", "Secret"), "UPDATE", token_secret(new));
        let Object::Secret(secrets) = &mut update.object else {
            panic!("not a secret");
        };
        secrets.old = serde_json::from_value(token_secret(old)).ok();
        update
    }

    #[test]
    fn a_token_secret_update_retargeting_it_at_an_agents_service_account_is_long_lived_token() {
        let verdict = review(
            &secret_update("default", "researcher"),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["LongLivedToken"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_token_secret_update_that_keeps_its_service_account_is_skipped() {
        let verdict = review(
            &secret_update("researcher", "researcher"),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    fn token_request(operation: &str, sub_resource: &str, seconds: i64) -> Request {
        reviewed(json!({
            "uid": "u",
            "kind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"},
            "resource": {"group": "", "version": "v1", "resource": "serviceaccounts"},
            "subResource": sub_resource,
            "name": "researcher",
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": "dev", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"creationTimestamp": null},
                "spec": {"audiences": null, "expirationSeconds": seconds, "boundObjectRef": null},
                "status": {"token": "", "expirationTimestamp": null}},
        }))
    }

    #[test]
    fn a_token_request_for_an_agents_service_account_is_judged_by_its_identity() {
        let config = AdmissionConfig::default();
        let year = token_request("CREATE", "token", 31_536_000);
        assert!(matches!(year.object, Object::TokenRequest(_)));
        let verdict = review(&year, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.subject(), format!("TokenRequest {NS}/researcher"));
        let short = token_request("CREATE", "token", 600);
        let verdict = review(&short, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn a_token_request_before_the_caches_synced_is_let_through_with_the_reason_recorded() {
        let verdict = review(
            &token_request("CREATE", "token", 31_536_000),
            None,
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        assert_eq!(verdict.codes(), ["NotReady"]);
    }

    /// A CONNECT of `kind` (`PodExecOptions`, ...) through `sub_resource` to pod `x` by
    /// `user`, its pod looked up as `pod`.
    fn connect(kind: &str, sub_resource: &str, user: &str, pod: TargetPod) -> Request {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "subResource": sub_resource,
                "name": "x",
                "namespace": NS,
                "operation": "CONNECT",
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": {"kind": kind, "apiVersion": "v1"},
            }
        });
        let mut request =
            parse_review(review.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        request.set_target_pod(pod);
        request
    }

    fn agent_pod_found() -> TargetPod {
        let pod: Pod = serde_json::from_value(agent_pod()).unwrap_or_else(|e| panic!("{e}"));
        TargetPod::Found(Box::new(pod.metadata))
    }

    #[test]
    fn a_connect_to_an_agent_pod_is_judged_by_who_connects() {
        let config = AdmissionConfig::default();
        let stranger = connect("PodExecOptions", "exec", "dev", agent_pod_found());
        let verdict = review(&stranger, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.codes(), ["ExecNotOwner"]);
        assert_eq!(verdict.subject(), format!("exec into Pod {NS}/x"));
        // The fixture identity is owned by group team-a.
        let mut owner = connect("PodAttachOptions", "attach", "ann", agent_pod_found());
        owner.user_info.groups = Some(vec!["team-a".into()]);
        let verdict = review(&owner, Some(&snapshot()), &config, NOW);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn a_connect_before_the_caches_synced_is_refused_for_an_agent_pod_only() {
        let config = AdmissionConfig::default();
        let agent = connect(
            "PodPortForwardOptions",
            "portforward",
            "dev",
            agent_pod_found(),
        );
        let verdict = review(&agent, None, &config, NOW);
        assert_eq!(verdict.codes(), ["NotReady"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let missing = connect(
            "PodPortForwardOptions",
            "portforward",
            "dev",
            TargetPod::Missing,
        );
        assert_eq!(
            review(&missing, None, &config, NOW).decision(),
            Some(Decision::Skipped)
        );
    }

    #[test]
    fn the_reviewer_reads_the_latest_published_snapshot() {
        let source: SnapshotSource = Arc::new(ArcSwapOption::empty());
        let reviewer = MandateReviewer::new(Arc::clone(&source), AdmissionConfig::default())
            .with_clock(FixedClock(NOW));
        let request = request(("", "v1", "Pod"), "CREATE", agent_pod());
        assert_eq!(
            Reviewer::review(&reviewer, &request).decision(),
            Some(Decision::Denied)
        );
        source.store(Some(Arc::new(snapshot())));
        assert_eq!(
            Reviewer::review(&reviewer, &request).decision(),
            Some(Decision::Allowed)
        );
    }

    fn network_request(
        operation: &str,
        user: &str,
        object: serde_json::Value,
        old: serde_json::Value,
    ) -> Request {
        reviewed(json!({
            "uid": "u",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "name": "mandate-researcher",
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }))
    }

    fn open_policy() -> serde_json::Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "mandate-researcher", "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "mandate"}},
            "spec": {"podSelector": {}, "ingress": [{}]}})
    }

    #[test]
    fn a_network_policy_is_judged_by_who_writes_it_and_its_deletion_by_who_deletes_it() {
        let config = AdmissionConfig {
            operator_users: vec!["mandate".into()],
            ..AdmissionConfig::default()
        };
        let snapshot = snapshot();
        let write = |user: &str| {
            review(
                &network_request("UPDATE", user, open_policy(), open_policy()),
                Some(&snapshot),
                &config,
                NOW,
            )
        };
        assert_eq!(write("dev").codes(), ["ForeignNetworkPolicy"]);
        assert_eq!(write("dev").decision(), Some(Decision::Denied));
        assert_eq!(write("mandate").decision(), Some(Decision::Allowed));
        let delete = |user: &str| {
            review(
                &network_request("DELETE", user, serde_json::Value::Null, open_policy()),
                Some(&snapshot),
                &config,
                NOW,
            )
        };
        assert_eq!(delete("dev").codes(), ["ProtectedProjection"]);
        assert_eq!(delete("dev").agent_name(), Some("researcher"));
        assert_eq!(delete("mandate").decision(), Some(Decision::Allowed));
    }

    #[test]
    fn before_the_caches_synced_a_policy_write_and_a_labelled_projections_deletion_are_refused() {
        let config = AdmissionConfig::default();
        let write = network_request("CREATE", "dev", open_policy(), serde_json::Value::Null);
        let verdict = review(&write, None, &config, NOW);
        assert_eq!(verdict.codes(), ["NotReady"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let delete = network_request("DELETE", "dev", serde_json::Value::Null, open_policy());
        assert_eq!(
            review(&delete, None, &config, NOW).decision(),
            Some(Decision::Denied)
        );
        let gc = network_request(
            "DELETE",
            "system:serviceaccount:kube-system:generic-garbage-collector",
            serde_json::Value::Null,
            open_policy(),
        );
        assert_eq!(
            review(&gc, None, &config, NOW).decision(),
            Some(Decision::Skipped)
        );
    }
}
