//! AgentIdentity: an agent's accountable owner, class, purpose and credentials policy, and the
//! status the reconciler reports (SPIFFE ID, live tools, delegation, escalation paths).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::DNS_SUBDOMAIN;
use super::{Action, Approval, Risk};

/// The accountable owner, workload identity and credential policy of one AI agent. Pods label
/// themselves `mandate.dev/agent: <name>` to run as it; mandate projects a ServiceAccount
/// (with a SPIFFE ID) and a NetworkPolicy from it and refuses agent pods that lack one.
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mandate.dev",
    version = "v1alpha1",
    kind = "AgentIdentity",
    namespaced,
    status = "AgentIdentityStatus",
    shortname = "agent",
    category = "mandate",
    derive = "PartialEq",
    doc = "AgentIdentity declares one AI agent: its accountable owner, class, purpose and credential policy. mandate projects a ServiceAccount with a SPIFFE ID and a default-deny NetworkPolicy from it, and admits only pods that run as it.",
    validation = Rule::new("self.metadata.name.size() <= 63").message("an AgentIdentity name must be at most 63 characters, since pods carry it as the mandate.dev/agent label value").field_path(".metadata.name"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner.name"),
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.class"),
    printcolumn(name = "Tools", type_ = "integer", json_path = ".status.toolCount"),
    printcolumn(name = "SPIFFE ID", type_ = "string", json_path = ".status.spiffeID"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.serviceAccountName) == has(oldSelf.serviceAccountName) && (!has(self.serviceAccountName) || self.serviceAccountName == oldSelf.serviceAccountName)").message("serviceAccountName is immutable: create a new AgentIdentity for a different ServiceAccount").field_path(".serviceAccountName"))]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentitySpec {
    /// The accountable human or team: who answers for what this agent does.
    pub owner: Owner,
    /// What the agent may do at most. ReadOnly agents may only be bound to tools whose actions
    /// are all `read`. The class also sets the default token lifetime.
    #[serde(default)]
    pub class: AgentClass,
    /// What the agent is for, in a sentence reviewers can check tools against (for example
    /// "answers questions about the product catalogue").
    #[schemars(length(min = 1, max = 1024))]
    pub purpose: String,
    /// The ServiceAccount mandate creates for this agent and its pods must run as. Defaults to
    /// the AgentIdentity's name. Immutable. An existing ServiceAccount that mandate does not
    /// manage is never adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub service_account_name: Option<String>,
    /// Limits on the credentials the agent's pods may mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Where the agent accepts delegated work from other agents. Without it no other agent
    /// can reach this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Pod Security baseline controls this agent's pods may break, one entry per control, each
    /// approved with four eyes. Without an entry, an agent pod that fails a control of the
    /// Pod Security Standards' baseline profile (privileged, host namespaces, hostPath,
    /// hostPorts, added capabilities, ...) is refused with PodSecurityBaseline. Adding or
    /// changing an entry must be done by a member of the approver group who is not the
    /// agent's owner, naming themself in approval.approvedBy; an entry approved by the
    /// owner does not count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 13))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["control".into()]))]
    pub pod_security_exemptions: Vec<PodSecurityExemption>,
}

/// One baseline control an agent's pods may break, and who approved it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("(self.control == 'Capabilities') == has(self.capabilities)").message("capabilities names the capabilities a Capabilities exemption allows, and only a Capabilities exemption has it").field_path(".capabilities"),
    validation = Rule::new("(self.control == 'Sysctls') == has(self.sysctls)").message("sysctls names the sysctls a Sysctls exemption allows, and only a Sysctls exemption has it").field_path(".sysctls")
)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityExemption {
    /// The baseline control the agent's pods may break: HostProcess, HostPID, HostIPC,
    /// Privileged, Capabilities, HostPath, HostPorts, AppArmor, SELinux, ProcMount, Seccomp,
    /// Sysctls or HostProbes. (hostNetwork is never exempted: it bypasses the agent's
    /// NetworkPolicy.)
    pub control: BaselineControl,
    /// For control Capabilities (and only then): the capabilities beyond the baseline set the
    /// agent's containers may add, for example SYS_ADMIN (a CAP_ prefix is ignored).
    // At most 41: as many as Linux defines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 41),
        inner(length(min = 1, max = 64), pattern(CAPABILITY))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub capabilities: Vec<String>,
    /// For control Sysctls (and only then): the sysctls outside the safe set the agent's pods
    /// may set, for example kernel.msgmax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub sysctls: Vec<String>,
    /// Who approved the exemption and why. The approver must be the one who adds or changes
    /// it, belong to the configured approver group, and not be the agent's owner.
    pub approval: Approval,
}

/// A capability name: upper case, digits and underscores, with or without a CAP_ prefix.
const CAPABILITY: &str = "^[A-Z][A-Z0-9_]*$";

/// A control of the Pod Security Standards' baseline profile (hostNetwork aside, which
/// mandate refuses as HostNetwork).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum BaselineControl {
    /// Windows HostProcess containers (windowsOptions.hostProcess).
    HostProcess,
    /// The node's PID namespace (hostPID).
    #[serde(rename = "HostPID")]
    HostPid,
    /// The node's IPC namespace (hostIPC).
    #[serde(rename = "HostIPC")]
    HostIpc,
    /// Privileged containers (securityContext.privileged).
    Privileged,
    /// Capabilities added beyond the baseline set (securityContext.capabilities.add).
    Capabilities,
    /// hostPath volumes.
    HostPath,
    /// Container ports bound on the node (ports[].hostPort).
    HostPorts,
    /// An Unconfined AppArmor profile (appArmorProfile, or the beta annotation).
    AppArmor,
    /// Custom SELinux options (a type outside the container types, a user or a role).
    #[serde(rename = "SELinux")]
    SeLinux,
    /// An unmasked /proc (securityContext.procMount other than Default).
    ProcMount,
    /// An Unconfined seccomp profile (seccompProfile.type).
    Seccomp,
    /// Sysctls outside the safe set (securityContext.sysctls).
    Sysctls,
    /// Probes and lifecycle hooks that name a host (httpGet.host, tcpSocket.host).
    HostProbes,
}

impl BaselineControl {
    /// The name users write in `control`.
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineControl::HostProcess => "HostProcess",
            BaselineControl::HostPid => "HostPID",
            BaselineControl::HostIpc => "HostIPC",
            BaselineControl::Privileged => "Privileged",
            BaselineControl::Capabilities => "Capabilities",
            BaselineControl::HostPath => "HostPath",
            BaselineControl::HostPorts => "HostPorts",
            BaselineControl::AppArmor => "AppArmor",
            BaselineControl::SeLinux => "SELinux",
            BaselineControl::ProcMount => "ProcMount",
            BaselineControl::Seccomp => "Seccomp",
            BaselineControl::Sysctls => "Sysctls",
            BaselineControl::HostProbes => "HostProbes",
        }
    }
}

/// The accountable owner of an agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Whether the owner is a single person (`User`) or a team (`Group`).
    pub kind: OwnerKind,
    /// The owner's name as the cluster's authentication knows it (a username or group name).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// How to reach the owner (a chat channel, an email address, a pager rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub contact: Option<String>,
}

/// Whether an owner is a person or a team.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OwnerKind {
    User,
    Group,
}

/// The most an agent may do: read, write, or execute transactions.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum AgentClass {
    #[default]
    ReadOnly,
    WriteCapable,
    TransactionExecutor,
}

impl AgentClass {
    /// Projected token lifetime when `credentials.tokenTtlSeconds` is not set: the more an
    /// agent can change, the shorter its tokens live.
    pub fn default_token_ttl_seconds(self) -> i64 {
        match self {
            AgentClass::ReadOnly => 3600,
            AgentClass::WriteCapable => 900,
            AgentClass::TransactionExecutor => 600,
        }
    }

    /// Whether an agent of this class may hold a tool declaring `action`.
    pub fn permits(self, action: Action) -> bool {
        self != AgentClass::ReadOnly || action == Action::Read
    }
}

/// Limits on the service-account tokens an agent's pods may mount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// Longest lifetime of a projected service-account token, in seconds (600 to 86400).
    /// Defaults by class: ReadOnly 3600, WriteCapable 900, TransactionExecutor 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 600, max = 86400))]
    pub token_ttl_seconds: Option<i64>,
    /// Token audiences the agent's pods may request besides the API server's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub audiences: Vec<String>,
}

/// The ports on which an agent accepts delegated work.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The ports delegators may connect to. Each port and protocol pair appears once.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["port".into(), "protocol".into()]))]
    pub ports: Vec<EndpointPort>,
}

/// One port an agent listens on for delegated work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The container port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP (the default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol for NetworkPolicy ports.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// What the reconciler last observed and projected for an agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentityStatus {
    /// The agent's SPIFFE ID: spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT.
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The projected ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The projected NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    /// The tools the agent holds now (expired and not-yet-valid tools are left out).
    #[serde(default)]
    pub tools: Vec<LiveTool>,
    /// How many distinct tools the agent holds now (two bindings granting the same tool count it
    /// once; `tools` lists every grant).
    #[serde(default)]
    pub tool_count: i32,
    /// Agents this agent may delegate work to.
    #[serde(default)]
    pub delegates_to: Vec<String>,
    /// Agents that may delegate work to this agent.
    #[serde(default)]
    pub delegated_from: Vec<String>,
    /// Delegation chains through this agent that would hand on authority the delegator does
    /// not hold, each as a readable chain. Empty when delegation is safe.
    #[serde(default)]
    pub escalation_paths: Vec<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ToolsBound, Isolated and DelegationSafe.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A tool an agent holds now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveTool {
    /// The tool's name.
    pub name: String,
    /// The ToolBinding that grants it.
    pub binding: String,
    /// The tool's risk.
    pub risk: Risk,
    /// The actions the tool declares.
    pub actions: Vec<Action>,
    /// When the grant ends; absent when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

impl AgentIdentity {
    /// The ServiceAccount the agent runs as: `spec.serviceAccountName`, or the identity's name.
    pub fn service_account_name(&self) -> &str {
        self.spec
            .service_account_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// The projected-token lifetime the agent may use, in seconds.
    pub fn token_ttl_seconds(&self) -> i64 {
        self.spec
            .credentials
            .as_ref()
            .and_then(|c| c.token_ttl_seconds)
            .unwrap_or_else(|| self.spec.class.default_token_ttl_seconds())
    }
}
