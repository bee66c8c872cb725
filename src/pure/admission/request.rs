//! The typed AdmissionReview: an `admission.k8s.io/v1` AdmissionReview body in; a [`Request`]
//! out, its object already read into the kind mandate reviews ([`Object`]), or a [`BadReview`]
//! that says what is wrong with the body. Pure: never does I/O.
//!
//! The body is deserialized once: the envelope and the request in one pass that keeps the
//! objects as slices of the body, then each object once, straight into its kind. A Secret is
//! read as its type and metadata only: its data is skipped, never held. Kinds mandate does not
//! review are read no further than their metadata. A CONNECT (exec, attach, port-forward,
//! proxy) is read as its kind only: its options say nothing of the pod, which the webhook looks
//! up and records on the request ([`Request::set_target_pod`]) before the review.
//!
//! An object that is not a valid instance of its kind is not a bad review: it is kept as
//! [`Read::Invalid`] (with its metadata, so the answer can still name it) and refused as
//! `InvalidObject` once reviewed. A body that is not an AdmissionReview at all, or whose objects
//! have no readable metadata, is a [`BadReview`] (HTTP 400).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, UserInfo};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, META_API_VERSION_V1, META_KIND, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::mandate_resources::MandateResource;
use super::namespace::NamespaceHead;
use crate::api::{AgentIdentity, DelegationPolicy, GROUP, ToolBinding, VERSION};

// ---------------------------------------------------------------------------------------------
// Types

/// One admission request, read once from its AdmissionReview: what the API server says about
/// the request, and its object typed by kind.
#[derive(Debug)]
pub struct Request {
    pub uid: String,
    /// The kind of the object (what [`Object`] was chosen by).
    pub kind: GroupVersionKind,
    /// The resource requested (`pods`, `deployments`, ...): the `resource` metric label.
    pub resource: GroupVersionResource,
    /// The subresource (`status`, `ephemeralcontainers`, ...), if any.
    pub sub_resource: Option<String>,
    /// The object's name; may be empty on create (generateName).
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub dry_run: bool,
    /// The object (and where a review compares them, the old one), typed.
    pub object: Object,
}

/// The object of a request, read as the kind the request names. Boxed: a typed object is
/// kilobytes, and a request is built once and then only read.
#[derive(Debug)]
pub enum Object {
    Pod(Box<Objects<Pod>>),
    Deployment(Box<Objects<Deployment>>),
    StatefulSet(Box<Objects<StatefulSet>>),
    DaemonSet(Box<Objects<DaemonSet>>),
    ReplicaSet(Box<Objects<ReplicaSet>>),
    Job(Box<Objects<Job>>),
    CronJob(Box<Objects<CronJob>>),
    /// Type and metadata only.
    Secret(Box<Objects<SecretHead>>),
    /// A TokenRequest (`serviceaccounts/token`): the ServiceAccount it is for is the request's
    /// name.
    TokenRequest(Box<Objects<TokenRequest>>),
    /// A NetworkPolicy: foreign ones are refused in agent namespaces, mandate's protected from
    /// deletion. A DELETE carries it as the old object.
    NetworkPolicy(Box<Objects<NetworkPolicy>>),
    /// A ServiceAccount, reviewed on DELETE only (mandate's are protected); carried as the old
    /// object.
    ServiceAccount(Box<Objects<ServiceAccount>>),
    AgentIdentity(Box<Objects<AgentIdentity>>),
    ToolBinding(Box<Objects<ToolBinding>>),
    DelegationPolicy(Box<Objects<DelegationPolicy>>),
    /// A Namespace (metadata only): a change of its `mandate.dev/mode` label is reviewed.
    Namespace(Box<Objects<NamespaceHead>>),
    /// A CONNECT to a pod (`pods/exec`, `pods/attach`, `pods/portforward`, `pods/proxy`). Its
    /// object is the options (PodExecOptions, ...), which say nothing of the pod: the pod is the
    /// request's name, and what is known of it is [`Connect::pod`], filled in by the webhook.
    Connect(Box<Connect>),
    /// A kind mandate does not review.
    Other,
}

/// A CONNECT to a pod: what it does, and what the webhook found of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub kind: ConnectKind,
    /// The pod it goes to. A body says nothing of it ([`TargetPod::NotLookedUp`]); the webhook
    /// server looks it up before the review ([`Request::set_target_pod`]).
    pub pod: TargetPod,
}

/// The subresource a CONNECT opens, read from the kind of its options object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectKind {
    /// `pods/exec` (PodExecOptions): `kubectl exec`.
    Exec,
    /// `pods/attach` (PodAttachOptions): `kubectl attach`.
    Attach,
    /// `pods/portforward` (PodPortForwardOptions): `kubectl port-forward`.
    PortForward,
    /// `pods/proxy` (PodProxyOptions): the API server's HTTP proxy to the pod, which reaches it
    /// around its NetworkPolicy as port-forward does.
    Proxy,
}

/// What is known of the pod a CONNECT goes to: the options object of a CONNECT carries none of
/// its labels, so the shell looks the pod up and hands the answer to the pure review as data.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPod {
    /// Nobody looked the pod up: judged as a failed lookup (never allowed for it).
    NotLookedUp,
    /// The pod's metadata, as the API server returned it.
    Found(Box<ObjectMeta>),
    /// The API server has no such pod (the CONNECT then fails there with NotFound).
    Missing,
    /// The lookup failed: why, for the message.
    LookupFailed(String),
}

/// A request's object and, for the kinds whose review compares them (pods, Secrets,
/// NetworkPolicies, ServiceAccounts and mandate's own kinds), the object it replaces (for a
/// DELETE, the object deleted).
#[derive(Debug)]
pub struct Objects<T> {
    pub object: Read<T>,
    /// The old object of an update. Always `None` for workloads (their reviews never compare),
    /// and when the old object is not a valid `T` (it is then not compared).
    pub old: Option<T>,
}

/// How reading one object went.
#[derive(Debug)]
pub enum Read<T> {
    /// The request carries no object (a DELETE, a CONNECT).
    Absent,
    Valid(T),
    /// The object is not a valid instance of its kind.
    Invalid(Box<Unreadable>),
}

/// An object that could not be read as its kind: its metadata, and why.
#[derive(Debug)]
pub struct Unreadable {
    pub metadata: ObjectMeta,
    pub error: ReadObjectError,
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

/// What admission reads of a Secret: its metadata and type. Its `data` and `stringData` are
/// skipped while parsing, never held.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SecretHead {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(rename = "type", default)]
    pub type_: Option<String>,
}

/// Why a request body was refused before it reached the reviewer. `code()` is the `reason`
/// label and the `reason` field of the JSON error.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("reading the request body: {0}")]
    ReadBody(#[source] warp::Error),
    #[error("request body did not arrive within {timeout:?}")]
    BodyTimeout { timeout: std::time::Duration },
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    #[error("request body ends before its JSON does (truncated?): {0}")]
    TruncatedJson(#[source] serde_json::Error),
    #[error("request body is JSON but not an AdmissionReview: {0}")]
    NotAdmissionReview(#[source] serde_json::Error),
    #[error("request body has kind {kind:?}; expected {META_KIND:?}")]
    WrongKind { kind: String },
    #[error(
        "request body has apiVersion {api_version:?}; only {META_API_VERSION_V1:?} is served (set admissionReviewVersions: [v1])"
    )]
    UnsupportedApiVersion { api_version: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

/// A kind a request's object can be read as.
pub trait Readable: Sized {
    /// The kind's name in messages (`the object is not a valid Pod`).
    const KIND: &'static str;
    /// Reads the object from its JSON.
    fn read(json: &str) -> serde_json::Result<Self>;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

/// The AdmissionReview as sent: the request is read in the same pass, its objects kept raw.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    #[serde(borrow, default)]
    request: Option<Wire<'a>>,
}

/// The fields of an AdmissionRequest mandate reads; the objects stay slices of the body until
/// `kind` says what to read them as.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: UserInfo,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: bool,
}

/// What every Kubernetes object has: read when nothing else of it is.
#[derive(Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// A mandate resource as admission reads it: metadata and spec (the status is the
/// reconciler's, and never reviewed).
#[derive(Deserialize)]
struct Parts<S> {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
}

/// What becomes of an update's old object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Old {
    /// Read as the kind: the review compares it.
    Read,
    /// Only its metadata is checked, as for any object of a review.
    Check,
}

/// Every value [`Object::resource`] takes: the resources mandate's webhooks are registered
/// for, and `other`.
pub const RESOURCES: [&str; 15] = [
    "pods",
    "deployments",
    "statefulsets",
    "daemonsets",
    "replicasets",
    "jobs",
    "cronjobs",
    "secrets",
    "serviceaccounts",
    "networkpolicies",
    "agentidentities",
    "toolbindings",
    "delegationpolicies",
    "namespaces",
    OTHER_RESOURCE,
];

/// The resource label of every kind mandate does not review.
pub const OTHER_RESOURCE: &str = "other";

/// Returned by [`Read::get`] for an absent object.
static MISSING: ReadObjectError = ReadObjectError::Missing;

// ---------------------------------------------------------------------------------------------
// Parsing

/// Reads and checks an AdmissionReview body: JSON, `kind: AdmissionReview`,
/// `apiVersion: admission.k8s.io/v1`, with a request whose objects are Kubernetes objects.
pub fn parse_review(body: &[u8]) -> Result<Request, BadReview> {
    let envelope: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            // Kind and version first, so a Pod posted by mistake is called what it is rather
            // than failing on some missing field. Read again only on this error path.
            if error.classify() == serde_json::error::Category::Data
                && let Ok(types) = serde_json::from_slice::<TypeMeta>(body)
            {
                check_types(types.kind, types.api_version)?;
            }
            return Err(classify_json_error(error));
        }
    };
    check_types(envelope.kind, envelope.api_version)?;
    let wire = envelope.request.ok_or(BadReview::MissingRequest)?;
    let namespace = wire.namespace.as_deref();
    let object = Object::read(
        &wire.kind,
        wire.object.map(RawValue::get),
        wire.old_object.map(RawValue::get),
        namespace,
    )
    .map_err(BadReview::NotAdmissionReview)?;
    Ok(Request {
        uid: wire.uid,
        kind: wire.kind,
        resource: wire.resource,
        sub_resource: wire.sub_resource,
        name: wire.name,
        namespace: wire.namespace,
        operation: wire.operation,
        user_info: wire.user_info,
        dry_run: wire.dry_run,
        object,
    })
}

fn check_types(kind: String, api_version: String) -> Result<(), BadReview> {
    if kind != META_KIND {
        return Err(BadReview::WrongKind { kind });
    }
    if api_version != META_API_VERSION_V1 {
        return Err(BadReview::UnsupportedApiVersion { api_version });
    }
    Ok(())
}

fn classify_json_error(error: serde_json::Error) -> BadReview {
    match error.classify() {
        serde_json::error::Category::Eof => BadReview::TruncatedJson(error),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            BadReview::MalformedJson(error)
        }
        serde_json::error::Category::Data => BadReview::NotAdmissionReview(error),
    }
}

impl BadReview {
    pub fn code(&self) -> &'static str {
        match self {
            BadReview::ReadBody(_) => "ReadBody",
            BadReview::BodyTimeout { .. } => "BodyTimeout",
            BadReview::BodyTooLarge { .. } => "BodyTooLarge",
            BadReview::MalformedJson(_) => "MalformedJson",
            BadReview::TruncatedJson(_) => "TruncatedJson",
            BadReview::NotAdmissionReview(_) => "NotAdmissionReview",
            BadReview::WrongKind { .. } => "WrongKind",
            BadReview::UnsupportedApiVersion { .. } => "UnsupportedApiVersion",
            BadReview::MissingRequest => "MissingRequest",
        }
    }

    pub fn status(&self) -> warp::http::StatusCode {
        use warp::http::StatusCode;
        match self {
            BadReview::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            BadReview::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl Object {
    /// Reads `object` and `old` (their JSON) as the kind `kind` names, in namespace `ns` unless
    /// they name their own. Fails only when one of them has no readable metadata, which makes
    /// the whole review unreadable.
    fn read(
        kind: &GroupVersionKind,
        object: Option<&str>,
        old: Option<&str>,
        ns: Option<&str>,
    ) -> serde_json::Result<Object> {
        Ok(
            match (
                kind.group.as_str(),
                kind.version.as_str(),
                kind.kind.as_str(),
            ) {
                ("", "v1", "Pod") => Object::Pod(Objects::boxed(object, old, Old::Read, ns)?),
                ("", "v1", "Secret") => Object::Secret(Objects::boxed(object, old, Old::Read, ns)?),
                ("authentication.k8s.io", "v1", "TokenRequest") => {
                    Object::TokenRequest(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("apps", "v1", "Deployment") => {
                    Object::Deployment(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("apps", "v1", "StatefulSet") => {
                    Object::StatefulSet(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("apps", "v1", "DaemonSet") => {
                    Object::DaemonSet(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("apps", "v1", "ReplicaSet") => {
                    Object::ReplicaSet(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("batch", "v1", "Job") => Object::Job(Objects::boxed(object, old, Old::Check, ns)?),
                ("batch", "v1", "CronJob") => {
                    Object::CronJob(Objects::boxed(object, old, Old::Check, ns)?)
                }
                ("networking.k8s.io", "v1", "NetworkPolicy") => {
                    Object::NetworkPolicy(Objects::boxed(object, old, Old::Read, ns)?)
                }
                ("", "v1", "ServiceAccount") => {
                    Object::ServiceAccount(Objects::boxed(object, old, Old::Read, ns)?)
                }
                (GROUP, VERSION, "AgentIdentity") => {
                    Object::AgentIdentity(Objects::boxed(object, old, Old::Read, ns)?)
                }
                (GROUP, VERSION, "ToolBinding") => {
                    Object::ToolBinding(Objects::boxed(object, old, Old::Read, ns)?)
                }
                (GROUP, VERSION, "DelegationPolicy") => {
                    Object::DelegationPolicy(Objects::boxed(object, old, Old::Read, ns)?)
                }
                ("", "v1", "Namespace") => {
                    Object::Namespace(Objects::boxed(object, old, Old::Read, None)?)
                }
                (group, version, kind) => {
                    object.map(read_metadata).transpose()?;
                    old.map(read_metadata).transpose()?;
                    // A CONNECT's options (command, container, ports) decide nothing: who
                    // connects to which pod does, so they are read no further.
                    match (group, version, ConnectKind::of_options(kind)) {
                        ("", "v1", Some(kind)) => Object::Connect(Box::new(Connect {
                            kind,
                            pod: TargetPod::NotLookedUp,
                        })),
                        _ => Object::Other,
                    }
                }
            },
        )
    }
}

impl<T: Readable> Objects<T> {
    fn boxed(
        object: Option<&str>,
        old: Option<&str>,
        keep_old: Old,
        namespace: Option<&str>,
    ) -> serde_json::Result<Box<Self>> {
        Self::read(object, old, keep_old, namespace).map(Box::new)
    }

    fn read(
        object: Option<&str>,
        old: Option<&str>,
        keep_old: Old,
        namespace: Option<&str>,
    ) -> serde_json::Result<Self> {
        let object = read_one(object, namespace)?;
        let old = match (old, keep_old) {
            (None, _) => None,
            (Some(old), Old::Read) => match read_one(Some(old), namespace)? {
                Read::Valid(old) => Some(old),
                Read::Absent | Read::Invalid(_) => None,
            },
            (Some(old), Old::Check) => {
                read_metadata(old)?;
                None
            }
        };
        Ok(Objects { object, old })
    }
}

/// Reads one object as `T`, filling in the request's namespace when the object leaves it out.
fn read_one<T: Readable>(
    json: Option<&str>,
    namespace: Option<&str>,
) -> serde_json::Result<Read<T>> {
    let Some(json) = json else {
        return Ok(Read::Absent);
    };
    match T::read(json) {
        Ok(mut object) => {
            fill_namespace(object.metadata_mut(), namespace);
            Ok(Read::Valid(object))
        }
        Err(source) => {
            // Its metadata still names it in the answer (and a pod's agent label still counts
            // before the caches synced); only this error path reads it a second time.
            let mut metadata = read_metadata(json)?;
            fill_namespace(&mut metadata, namespace);
            Ok(Read::Invalid(Box::new(Unreadable {
                metadata,
                error: ReadObjectError::Invalid {
                    kind: T::KIND,
                    source,
                },
            })))
        }
    }
}

fn read_metadata(json: &str) -> serde_json::Result<ObjectMeta> {
    serde_json::from_str::<MetadataOnly>(json).map(|object| object.metadata)
}

fn fill_namespace(metadata: &mut ObjectMeta, namespace: Option<&str>) {
    if metadata.namespace.as_deref().is_none_or(str::is_empty) {
        metadata.namespace = namespace.map(str::to_owned);
    }
}

/// A request `mandate check` built as kube's dynamic AdmissionRequest, typed: its objects are
/// written back to JSON and read like a body's.
impl From<&AdmissionRequest<DynamicObject>> for Request {
    fn from(request: &AdmissionRequest<DynamicObject>) -> Self {
        let json = |object: &Option<DynamicObject>| {
            object
                .as_ref()
                .and_then(|object| serde_json::to_string(object).ok())
        };
        let (object, old) = (json(&request.object), json(&request.old_object));
        let object = Object::read(
            &request.kind,
            object.as_deref(),
            old.as_deref(),
            request.namespace.as_deref(),
        )
        // A DynamicObject's metadata was read already, so it reads again.
        .unwrap_or(Object::Other);
        Request {
            uid: request.uid.clone(),
            kind: request.kind.clone(),
            resource: request.resource.clone(),
            sub_resource: request.sub_resource.clone(),
            name: request.name.clone(),
            namespace: request.namespace.clone(),
            operation: request.operation.clone(),
            user_info: request.user_info.clone(),
            dry_run: request.dry_run,
            object,
        }
    }
}

impl Request {
    /// The (namespace, name) of the pod a CONNECT goes to, when this is one: what the webhook
    /// looks up before the review.
    pub fn connect_target(&self) -> Option<(&str, &str)> {
        match &self.object {
            Object::Connect(_) => Some((self.namespace.as_deref().unwrap_or_default(), &self.name)),
            _ => None,
        }
    }

    /// Records what the lookup of a CONNECT's pod found; nothing for other requests.
    pub fn set_target_pod(&mut self, pod: TargetPod) {
        if let Object::Connect(connect) = &mut self.object {
            connect.pod = pod;
        }
    }
}

impl ConnectKind {
    /// The CONNECT an options kind (`PodExecOptions`, ...) belongs to.
    pub fn of_options(kind: &str) -> Option<ConnectKind> {
        Some(match kind {
            "PodExecOptions" => ConnectKind::Exec,
            "PodAttachOptions" => ConnectKind::Attach,
            "PodPortForwardOptions" => ConnectKind::PortForward,
            "PodProxyOptions" => ConnectKind::Proxy,
            _ => return None,
        })
    }

    /// The subresource (`exec`, `attach`, `portforward`, `proxy`).
    pub fn subresource(self) -> &'static str {
        match self {
            ConnectKind::Exec => "exec",
            ConnectKind::Attach => "attach",
            ConnectKind::PortForward => "portforward",
            ConnectKind::Proxy => "proxy",
        }
    }

    /// What a message calls a connection to pod `name` (`exec into Pod agents/researcher-0`).
    pub fn subject(self, namespace: &str, name: &str) -> String {
        format!("{} Pod {namespace}/{name}", self.verb())
    }

    /// What a user calls it (`exec into`, `port-forward to`), for messages.
    pub fn verb(self) -> &'static str {
        match self {
            ConnectKind::Exec => "exec into",
            ConnectKind::Attach => "attach to",
            ConnectKind::PortForward => "port-forward to",
            ConnectKind::Proxy => "proxy to",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the typed objects

impl Object {
    /// The object's metadata, read or not; `None` when the request carries no object or its
    /// kind is not reviewed. For a CONNECT, the metadata of the pod it goes to, once found.
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        match self {
            Object::Pod(o) => o.metadata(),
            Object::Deployment(o) => o.metadata(),
            Object::StatefulSet(o) => o.metadata(),
            Object::DaemonSet(o) => o.metadata(),
            Object::ReplicaSet(o) => o.metadata(),
            Object::Job(o) => o.metadata(),
            Object::CronJob(o) => o.metadata(),
            Object::Secret(o) => o.metadata(),
            Object::TokenRequest(o) => o.metadata(),
            Object::NetworkPolicy(o) => o.metadata(),
            Object::ServiceAccount(o) => o.metadata(),
            Object::AgentIdentity(o) => o.metadata(),
            Object::ToolBinding(o) => o.metadata(),
            Object::DelegationPolicy(o) => o.metadata(),
            Object::Namespace(o) => o.metadata(),
            Object::Connect(connect) => match &connect.pod {
                TargetPod::Found(metadata) => Some(&**metadata),
                _ => None,
            },
            Object::Other => None,
        }
    }

    /// Whether the request carries no object of a reviewed kind (never for [`Object::Other`],
    /// whose object is not kept).
    pub fn is_absent(&self) -> bool {
        match self {
            Object::Pod(o) => o.is_absent(),
            Object::Deployment(o) => o.is_absent(),
            Object::StatefulSet(o) => o.is_absent(),
            Object::DaemonSet(o) => o.is_absent(),
            Object::ReplicaSet(o) => o.is_absent(),
            Object::Job(o) => o.is_absent(),
            Object::CronJob(o) => o.is_absent(),
            Object::Secret(o) => o.is_absent(),
            Object::TokenRequest(o) => o.is_absent(),
            Object::NetworkPolicy(o) => o.is_absent(),
            Object::ServiceAccount(o) => o.is_absent(),
            Object::AgentIdentity(o) => o.is_absent(),
            Object::ToolBinding(o) => o.is_absent(),
            Object::DelegationPolicy(o) => o.is_absent(),
            Object::Namespace(o) => o.is_absent(),
            // The options are not needed: the pod is the request's name.
            Object::Connect(_) | Object::Other => false,
        }
    }

    /// The resource a request about this kind concerns, as the API server names it (a
    /// TokenRequest is `serviceaccounts/token`, a CONNECT `pods/exec`, ...: the resource without
    /// the subresource): one of [`RESOURCES`], `other` for every kind mandate does not review.
    /// The `resource` metric label and log field: read from the kind, never from the body's
    /// text, so a caller cannot add values.
    pub fn resource(&self) -> &'static str {
        match self {
            Object::Pod(_) | Object::Connect(_) => "pods",
            Object::Deployment(_) => "deployments",
            Object::StatefulSet(_) => "statefulsets",
            Object::DaemonSet(_) => "daemonsets",
            Object::ReplicaSet(_) => "replicasets",
            Object::Job(_) => "jobs",
            Object::CronJob(_) => "cronjobs",
            Object::Secret(_) => "secrets",
            Object::TokenRequest(_) | Object::ServiceAccount(_) => "serviceaccounts",
            Object::NetworkPolicy(_) => "networkpolicies",
            Object::AgentIdentity(_) => "agentidentities",
            Object::ToolBinding(_) => "toolbindings",
            Object::DelegationPolicy(_) => "delegationpolicies",
            Object::Namespace(_) => "namespaces",
            Object::Other => OTHER_RESOURCE,
        }
    }

    /// One of mandate's own kinds.
    pub fn is_mandate(&self) -> bool {
        matches!(
            self,
            Object::AgentIdentity(_) | Object::ToolBinding(_) | Object::DelegationPolicy(_)
        )
    }
}

impl<T: Readable> Objects<T> {
    fn metadata(&self) -> Option<&ObjectMeta> {
        match &self.object {
            Read::Absent => None,
            Read::Valid(object) => Some(object.metadata()),
            Read::Invalid(unreadable) => Some(&unreadable.metadata),
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self.object, Read::Absent)
    }
}

impl<T> Read<T> {
    /// The object, or why there is none to review.
    pub fn get(&self) -> Result<&T, &ReadObjectError> {
        match self {
            Read::Valid(object) => Ok(object),
            Read::Invalid(unreadable) => Err(&unreadable.error),
            Read::Absent => Err(&MISSING),
        }
    }
}

/// Built-in kinds read in full.
macro_rules! readable_builtin {
    ($($kind:ty),* $(,)?) => {$(
        impl Readable for $kind {
            const KIND: &'static str = <$kind as k8s_openapi::Resource>::KIND;
            fn read(json: &str) -> serde_json::Result<Self> {
                serde_json::from_str(json)
            }
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    )*};
}

readable_builtin!(
    Pod,
    TokenRequest,
    NetworkPolicy,
    ServiceAccount,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob
);

/// mandate's kinds, read as metadata and spec.
macro_rules! readable_mandate {
    ($($kind:ident),* $(,)?) => {$(
        impl Readable for $kind {
            const KIND: &'static str = stringify!($kind);
            fn read(json: &str) -> serde_json::Result<Self> {
                let parts: Parts<<$kind as MandateResource>::Spec> = serde_json::from_str(json)?;
                Ok(<$kind as MandateResource>::from_parts(parts.metadata, parts.spec))
            }
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    )*};
}

readable_mandate!(AgentIdentity, ToolBinding, DelegationPolicy);

impl Readable for NamespaceHead {
    const KIND: &'static str = "Namespace";
    fn read(json: &str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Readable for SecretHead {
    const KIND: &'static str = "Secret";
    fn read(json: &str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::AdmissionReview;
    use serde_json::{Value, json};

    use super::*;

    fn body(kind: (&str, &str, &str), operation: &str, object: Value, old: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
                "resource": {"group": kind.0, "version": kind.1, "resource": "things"},
                "name": "x",
                "namespace": "agents",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "oldObject": old,
            }
        })
        .to_string()
        .into_bytes()
    }

    fn parse(kind: (&str, &str, &str), operation: &str, object: Value, old: Value) -> Request {
        parse_review(&body(kind, operation, object, old)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pod(labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        })
    }

    #[test]
    fn a_connects_options_are_read_as_its_kind_and_its_pod_awaits_the_lookup() {
        let options = json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true,
            "container": "agent", "command": ["sh"]});
        let mut request = parse(
            ("", "v1", "PodExecOptions"),
            "CONNECT",
            options,
            Value::Null,
        );
        assert_eq!(request.operation, Operation::Connect);
        assert_eq!(request.connect_target(), Some(("agents", "x")));
        let Object::Connect(connect) = &request.object else {
            panic!("not read as a CONNECT: {:?}", request.object);
        };
        assert_eq!(connect.kind, ConnectKind::Exec);
        assert_eq!(connect.pod, TargetPod::NotLookedUp);
        assert!(request.object.metadata().is_none());
        request.set_target_pod(TargetPod::Missing);
        let Object::Connect(connect) = &request.object else {
            panic!("no longer a CONNECT");
        };
        assert_eq!(connect.pod, TargetPod::Missing);
        for (kind, subresource) in [
            ("PodAttachOptions", "attach"),
            ("PodPortForwardOptions", "portforward"),
            ("PodProxyOptions", "proxy"),
        ] {
            assert_eq!(
                ConnectKind::of_options(kind).map(ConnectKind::subresource),
                Some(subresource)
            );
        }
        let node = parse(
            ("", "v1", "NodeProxyOptions"),
            "CONNECT",
            json!({}),
            Value::Null,
        );
        assert!(matches!(node.object, Object::Other));
        assert_eq!(node.connect_target(), None);
    }

    #[test]
    fn a_secret_is_read_as_type_and_metadata_and_its_data_is_never_parsed() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "t", "annotations": {"kubernetes.io/service-account.name": "sa"}},
            "type": "kubernetes.io/service-account-token",
            // Not even a valid Secret's data: a typed Secret would refuse it.
            "data": {"token": 5, "ca.crt": ["not", "base64"]},
        });
        let request = parse(("", "v1", "Secret"), "CREATE", secret, Value::Null);
        let Object::Secret(secrets) = &request.object else {
            panic!("not read as a Secret: {:?}", request.object);
        };
        let head = secrets.object.get().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            head.type_.as_deref(),
            Some("kubernetes.io/service-account-token")
        );
        assert_eq!(head.metadata.namespace.as_deref(), Some("agents"));
        assert!(secrets.old.is_none());
    }

    #[test]
    fn an_object_that_is_not_its_kind_is_kept_with_its_metadata_and_the_reason() {
        let object = json!({"metadata": {"name": "x", "labels": {"mandate.dev/agent": "a"}},
            "spec": {"containers": "oops"}});
        let request = parse(("", "v1", "Pod"), "CREATE", object, Value::Null);
        let Object::Pod(pods) = &request.object else {
            panic!("not read as a Pod: {:?}", request.object);
        };
        let Read::Invalid(unreadable) = &pods.object else {
            panic!("not kept as an invalid Pod: {:?}", pods.object);
        };
        assert!(
            unreadable
                .error
                .to_string()
                .starts_with("the object is not a valid Pod: "),
            "{}",
            unreadable.error
        );
        let metadata = request
            .object
            .metadata()
            .unwrap_or_else(|| panic!("no metadata"));
        assert_eq!(metadata.namespace.as_deref(), Some("agents"));
        assert_eq!(
            metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("mandate.dev/agent"))
                .map(String::as_str),
            Some("a")
        );
    }

    #[test]
    fn an_object_without_readable_metadata_makes_the_whole_review_unreadable() {
        for kind in [("", "v1", "Pod"), ("", "v1", "ConfigMap")] {
            let object = json!({"metadata": {"name": 5}});
            let error = parse_review(&body(kind, "CREATE", object, Value::Null)).err();
            assert_eq!(
                error.map(|e| e.code()),
                Some("NotAdmissionReview"),
                "{kind:?}"
            );
        }
        let old = json!({"metadata": "nothing"});
        let error = parse_review(&body(
            ("apps", "v1", "Deployment"),
            "UPDATE",
            json!({"metadata": {"name": "d"}}),
            old,
        ))
        .err();
        assert_eq!(error.map(|e| e.code()), Some("NotAdmissionReview"));
    }

    #[test]
    fn the_old_object_is_kept_only_for_the_kinds_whose_review_compares_it() {
        let request = parse(("", "v1", "Pod"), "UPDATE", pod(json!({})), pod(json!({})));
        assert!(matches!(&request.object, Object::Pod(o) if o.old.is_some()));
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"selector": {}, "template": {}}});
        let request = parse(
            ("apps", "v1", "Deployment"),
            "UPDATE",
            deployment.clone(),
            deployment,
        );
        assert!(
            matches!(&request.object, Object::Deployment(o) if o.old.is_none() && o.object.get().is_ok()),
            "{:?}",
            request.object
        );
    }

    #[test]
    fn a_mandate_resource_is_read_as_metadata_and_spec_and_its_status_ignored() {
        let binding = json!({
            "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
            "metadata": {"name": "b"},
            "spec": {"agent": "researcher", "tools": [{"name": "t", "actions": ["read"],
                "destination": {"service": {"name": "t"}}}]},
            "status": "not a status at all",
        });
        let request = parse(
            (GROUP, VERSION, "ToolBinding"),
            "UPDATE",
            binding.clone(),
            binding,
        );
        let Object::ToolBinding(bindings) = &request.object else {
            panic!("not read as a ToolBinding: {:?}", request.object);
        };
        let binding = bindings.object.get().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(binding.spec.agent, "researcher");
        assert!(binding.status.is_none());
        assert_eq!(bindings.old.as_ref().map(|o| &o.spec), Some(&binding.spec));
    }

    #[test]
    fn kinds_mandate_does_not_review_are_read_no_further_and_a_delete_carries_no_object() {
        let request = parse(
            ("", "v1", "ConfigMap"),
            "CREATE",
            json!({"metadata": {"name": "c"}, "data": {"k": 5}}),
            Value::Null,
        );
        assert!(matches!(request.object, Object::Other));
        let request = parse(("", "v1", "Pod"), "DELETE", Value::Null, pod(json!({})));
        assert!(request.object.is_absent());
        assert!(request.object.metadata().is_none());
    }

    #[test]
    fn a_request_mandate_check_builds_reads_as_its_body_would() {
        let body = body(
            ("", "v1", "Pod"),
            "CREATE",
            pod(json!({"mandate.dev/agent": "a"})),
            Value::Null,
        );
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        let dynamic: AdmissionRequest<DynamicObject> =
            review.try_into().unwrap_or_else(|e| panic!("{e:?}"));
        let from_dynamic = Request::from(&dynamic);
        let parsed = parse_review(&body).unwrap_or_else(|e| panic!("{e}"));
        let pod = |request: &Request| match &request.object {
            Object::Pod(pods) => pods.object.get().ok().cloned(),
            _ => None,
        };
        assert!(pod(&parsed).is_some());
        assert_eq!(pod(&from_dynamic), pod(&parsed));
        assert_eq!(from_dynamic.uid, parsed.uid);
        assert_eq!(from_dynamic.user_info, parsed.user_info);
    }
}
