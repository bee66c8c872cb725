//! The reviewer: an AdmissionRequest, the current [`Snapshot`] (or none before the caches
//! synced), the installation's [`AdmissionConfig`] and the time in; a [`Verdict`] and the
//! AdmissionResponse built from it out. Tells resources apart, reads the request's object into
//! its typed form (a Secret's type and metadata only, never its data), and hands it to the pure
//! decision of its kind. [`decide`] never does I/O; [`MandateReviewer`] only loads the latest
//! snapshot from an atomic pointer and reads its clock.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Reviewer;
use super::mandate_resources::{Requester, review_resource};
use super::pod::review_pod;
use super::secret::review_secret;
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Finding, Mode, Reason, Verdict};
use super::workload::{PodTemplate, WorkloadKind, review_workload};
use crate::api::{
    AGENT_LABEL, AgentIdentity, AgentIdentitySpec, DelegationPolicy, DelegationPolicySpec, GROUP,
    ToolBinding, ToolBindingSpec, VERSION,
};

/// Where the reviewer reads the current snapshot: `None` until the caches have synced. The
/// index publishes a new snapshot with `store`; the hot path takes no lock.
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

/// The webhook's [`Reviewer`]: decides every request from the latest published snapshot.
pub struct MandateReviewer {
    snapshots: SnapshotSource,
    config: AdmissionConfig,
    clock: Arc<dyn Clock>,
}

/// Why a request's object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadObjectError {
    #[error("the request carries no object")]
    Missing,
    #[error("the object is not a valid {kind}: {source}")]
    Invalid {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The resources the reviewer judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pod,
    Workload(WorkloadKind),
    Secret,
    Identity,
    Binding,
    Policy,
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

    /// The verdict on `request` under the current snapshot and time.
    pub fn verdict(&self, request: &AdmissionRequest<DynamicObject>) -> Verdict {
        let snapshot = self.snapshots.load();
        decide(request, snapshot.as_deref(), &self.config, self.clock.now())
    }
}

impl Reviewer for MandateReviewer {
    fn review(&self, request: &AdmissionRequest<DynamicObject>) -> Verdict {
        self.verdict(request)
    }
}

impl Target {
    fn of(group: &str, version: &str, kind: &str) -> Option<Target> {
        if let Some(workload) = WorkloadKind::from_gvk(group, version, kind) {
            return Some(Target::Workload(workload));
        }
        match (group, version, kind) {
            ("", "v1", "Pod") => Some(Target::Pod),
            ("", "v1", "Secret") => Some(Target::Secret),
            (GROUP, VERSION, "AgentIdentity") => Some(Target::Identity),
            (GROUP, VERSION, "ToolBinding") => Some(Target::Binding),
            (GROUP, VERSION, "DelegationPolicy") => Some(Target::Policy),
            _ => None,
        }
    }

    fn is_mandate(self) -> bool {
        matches!(self, Target::Identity | Target::Binding | Target::Policy)
    }
}

/// Decides `request`. `snapshot` is `None` until the caches have synced: then agent pods and
/// mandate resources are refused ([`Reason::NotReady`]) and everything else is let through with
/// the reason recorded, since without the cache nothing tells an agent namespace apart (the
/// webhook is not ready then, so the API server's failure policy guards agent namespaces).
pub fn decide(
    request: &AdmissionRequest<DynamicObject>,
    snapshot: Option<&Snapshot>,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let kind = &request.kind;
    let Some(target) = Target::of(&kind.group, &kind.version, &kind.kind) else {
        return Verdict::ignored();
    };
    let object = request.object.as_ref();
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| object.and_then(|o| o.metadata.namespace.as_deref()))
        .unwrap_or_default();
    let subject = format!("{} {namespace}/{}", kind.kind, request.name);
    if namespace == config.own_namespace {
        return Verdict::skipped(subject);
    }
    let reviewed = match (target, &request.operation) {
        (Target::Secret, Operation::Create) => true,
        (Target::Secret, _) => false,
        (_, Operation::Create | Operation::Update) => true,
        _ => false,
    };
    let subresource = request.sub_resource.as_deref();
    let subresource_reviewed = match (target, subresource) {
        (_, None) => true,
        (Target::Pod, Some("ephemeralcontainers")) => true,
        (target, Some(_)) => target.is_mandate(),
    };
    if !reviewed || !subresource_reviewed {
        return Verdict::skipped(subject);
    }
    let Some(object) = object else {
        return invalid(subject, &ReadObjectError::Missing);
    };

    let Some(snapshot) = snapshot else {
        return not_synced(target, object, subject);
    };

    match target {
        Target::Pod => decide_pod(request, object, subject, snapshot, config, now),
        Target::Workload(workload) => {
            let judge = match workload {
                WorkloadKind::Deployment => decide_workload::<Deployment>,
                WorkloadKind::StatefulSet => decide_workload::<StatefulSet>,
                WorkloadKind::DaemonSet => decide_workload::<DaemonSet>,
                WorkloadKind::ReplicaSet => decide_workload::<ReplicaSet>,
                WorkloadKind::Job => decide_workload::<Job>,
                WorkloadKind::CronJob => decide_workload::<CronJob>,
            };
            judge(request, object, subject, snapshot, config, now)
        }
        Target::Secret => {
            #[derive(Deserialize)]
            struct SecretType {
                #[serde(rename = "type")]
                type_: Option<String>,
            }
            match SecretType::deserialize(&object.data) {
                Ok(head) => {
                    let meta = with_namespace(object.metadata.clone(), request);
                    review_secret(&meta, head.type_.as_deref(), snapshot, config)
                }
                Err(source) => invalid(
                    subject,
                    &ReadObjectError::Invalid {
                        kind: "Secret",
                        source,
                    },
                ),
            }
        }
        Target::Identity | Target::Binding | Target::Policy => {
            decide_mandate(target, request, object, subject, snapshot, config, now)
        }
    }
}

fn decide_pod(
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let pod: Pod = match read(object, request, "Pod") {
        Ok(pod) => pod,
        Err(error) => return invalid(subject, &error),
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::skipped(subject);
    }
    // Like Pod Security Admission: an update that changes neither the spec nor the agent label
    // (a status-like metadata change, a finalizer removal) is not judged again.
    let old: Option<Pod> = request
        .old_object
        .as_ref()
        .and_then(|old| read(old, request, "Pod").ok());
    if let Some(old) = old {
        let label = |p: &Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(AGENT_LABEL))
                .cloned()
        };
        if old.spec == pod.spec && label(&old) == label(&pod) {
            return Verdict::skipped(subject);
        }
    }
    review_pod(&pod, snapshot, config, now)
}

/// Reads a workload of kind `W` and reviews its pod template (warnings only; an unreadable
/// workload is refused, as any unreadable object).
fn decide_workload<W>(
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict
where
    W: PodTemplate + DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    match read::<W>(object, request, W::WORKLOAD.as_str()) {
        Ok(workload) => review_workload(&workload, snapshot, config, now),
        Err(error) => invalid(subject, &error),
    }
}

fn decide_mandate(
    target: Target,
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let requester = Requester::from_user_info(&request.user_info);
    // A subresource (status) never changes the spec: only who writes it is judged.
    let spec_fixed = request.sub_resource.is_some();
    let old = request.old_object.as_ref();
    let meta = || with_namespace(object.metadata.clone(), request);
    match target {
        Target::Identity => {
            let identity = match read_spec::<AgentIdentitySpec>(object, "AgentIdentity") {
                Ok(spec) => AgentIdentity {
                    metadata: meta(),
                    spec,
                    status: None,
                },
                Err(error) => return invalid(subject, &error),
            };
            let old = old
                .and_then(|o| read_spec::<AgentIdentitySpec>(o, "AgentIdentity").ok())
                .map(|spec| AgentIdentity {
                    metadata: ObjectMeta::default(),
                    spec,
                    status: None,
                });
            let old = if spec_fixed {
                Some(&identity)
            } else {
                old.as_ref()
            };
            review_resource(&identity, old, requester, snapshot, config, now)
        }
        Target::Binding => {
            let binding = match read_spec::<ToolBindingSpec>(object, "ToolBinding") {
                Ok(spec) => ToolBinding {
                    metadata: meta(),
                    spec,
                    status: None,
                },
                Err(error) => return invalid(subject, &error),
            };
            let old = old
                .and_then(|o| read_spec::<ToolBindingSpec>(o, "ToolBinding").ok())
                .map(|spec| ToolBinding {
                    metadata: ObjectMeta::default(),
                    spec,
                    status: None,
                });
            let old = if spec_fixed {
                Some(&binding)
            } else {
                old.as_ref()
            };
            review_resource(&binding, old, requester, snapshot, config, now)
        }
        _ => {
            let policy = match read_spec::<DelegationPolicySpec>(object, "DelegationPolicy") {
                Ok(spec) => DelegationPolicy {
                    metadata: meta(),
                    spec,
                    status: None,
                },
                Err(error) => return invalid(subject, &error),
            };
            let old = old
                .and_then(|o| read_spec::<DelegationPolicySpec>(o, "DelegationPolicy").ok())
                .map(|spec| DelegationPolicy {
                    metadata: ObjectMeta::default(),
                    spec,
                    status: None,
                });
            let old = if spec_fixed {
                Some(&policy)
            } else {
                old.as_ref()
            };
            review_resource(&policy, old, requester, snapshot, config, now)
        }
    }
}

/// Before the first snapshot: refuse what must never run unjudged, let the rest through with
/// the reason recorded.
fn not_synced(target: Target, object: &DynamicObject, subject: String) -> Verdict {
    let finding = Finding::new(Reason::NotReady, NOT_SYNCED);
    let agent = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(AGENT_LABEL));
    match (target, agent) {
        (Target::Pod, Some(agent)) => Verdict::judged(subject, Mode::Enforce)
            .agent(agent.as_str())
            .finding(finding),
        (target, _) if target.is_mandate() => {
            Verdict::judged(subject, Mode::Enforce).finding(finding)
        }
        _ => Verdict::skipped(subject).finding(finding),
    }
}

fn invalid(subject: String, error: &ReadObjectError) -> Verdict {
    Verdict::judged(subject, Mode::Enforce).finding(Finding::new(
        Reason::InvalidObject,
        format!("{error}: send a complete, valid object"),
    ))
}

/// Reads a built-in kind from the request's object (its metadata is already parsed).
fn read<K>(
    object: &DynamicObject,
    request: &AdmissionRequest<DynamicObject>,
    kind: &'static str,
) -> Result<K, ReadObjectError>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let mut typed =
        K::deserialize(&object.data).map_err(|source| ReadObjectError::Invalid { kind, source })?;
    *typed.metadata_mut() = with_namespace(object.metadata.clone(), request);
    Ok(typed)
}

/// Reads the `spec` of a mandate resource.
fn read_spec<S: DeserializeOwned>(
    object: &DynamicObject,
    kind: &'static str,
) -> Result<S, ReadObjectError> {
    S::deserialize(&object.data["spec"]).map_err(|source| ReadObjectError::Invalid { kind, source })
}

/// Fills in the request's namespace when the object leaves it out.
fn with_namespace(mut meta: ObjectMeta, request: &AdmissionRequest<DynamicObject>) -> ObjectMeta {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace.clone_from(&request.namespace);
    }
    meta
}

#[cfg(test)]
mod tests {
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    use super::*;
    use crate::admission::verdict::Decision;
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn request(
        kind: (&str, &str, &str),
        operation: &str,
        object: serde_json::Value,
    ) -> AdmissionRequest<DynamicObject> {
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
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(review).unwrap_or_else(|e| panic!("{e}"));
        review.try_into().unwrap_or_else(|e| panic!("{e:?}"))
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
        let verdict = decide(
            &request(("", "v1", "Pod"), "CREATE", agent_pod()),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn an_agent_pod_is_never_admitted_before_the_caches_synced() {
        let verdict = decide(
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
        let verdict = decide(
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
        let verdict = decide(
            &request(("", "v1", "ConfigMap"), "CREATE", json!({"metadata": {}})),
            Some(&snapshot()),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), None);
        let verdict = decide(
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
        let verdict = decide(
            &request(("", "v1", "Pod"), "CREATE", agent_pod()),
            None,
            &config,
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        assert!(verdict.codes().is_empty());
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
}
