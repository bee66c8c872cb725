//! ToolBinding: the tools an agent may call, where they live, for how long, and who approved
//! the risky ones; and the status the reconciler reports (phase, expiry).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{AUDIENCE, DNS_LABEL, DNS_SUBDOMAIN, HTTP_PATH, MCP_TOOL_NAME};
use super::{Owner, OwnerKind};

/// Grants one agent an explicit, optionally time-bounded list of tools. Each tool names one
/// destination; mandate opens the agent's NetworkPolicy to it while the grant is live.
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mandate.dev",
    version = "v1alpha1",
    kind = "ToolBinding",
    namespaced,
    status = "ToolBindingStatus",
    shortname = "tb",
    category = "mandate",
    derive = "PartialEq",
    doc = "ToolBinding grants one AgentIdentity an explicit list of tools, each with one destination, declared actions and a risk, optionally inside a validity window. High-risk tools need an approval.",
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agent"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Risk",
        type_ = "string",
        json_path = ".status.risk",
        description = "The highest effective risk of the tools: High when one is declared High or raised by the risk floor."
    ),
    // A `date` column prints the time since an instant, so a future expiry shows as
    // `<invalid>`: the instant itself, as the RFC 3339 string the status holds, says it.
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the tools expire (RFC 3339, UTC); absent when they do not."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.validFrom) || !has(self.validUntil) || self.validUntil > self.validFrom").message("validUntil must be after validFrom").field_path(".validUntil"),
    validation = Rule::new("has(self.approval) || !self.tools.exists(t, has(t.risk) && t.risk == 'High')").message("approval is required when any tool has risk High").field_path(".approval").reason(kube::core::Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct ToolBindingSpec {
    /// The AgentIdentity, in this namespace, that receives the tools. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(DNS_SUBDOMAIN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("agent is immutable: create a new ToolBinding for another agent"))]
    pub agent: String,
    /// The tools granted, 1 to 64, each name at most once.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub tools: Vec<Tool>,
    /// When the grant starts (RFC 3339). Absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Time>,
    /// When the grant ends (RFC 3339). Absent: it does not expire, which High-risk tools may
    /// not do: they need a validUntil at most 24 hours ahead (configurable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
    /// Who approved this grant and why. Required when any tool has risk High; the approver
    /// must be the one who creates or changes the ToolBinding, and not the agent's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// One tool an agent may call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.risk) && self.risk == 'High') || !has(self.destination.external) || self.destination.external.cidrs.all(c, !isCIDR(c) || cidr(c).prefixLength() > 0)").message("a Low risk tool may not reach 0.0.0.0/0 or ::/0: narrow the CIDRs, or mark the tool High risk with an approval").field_path(".destination.external.cidrs"),
    validation = Rule::new("!has(self.mcp) || self.mcp.tools.all(t, (has(t.action) ? t.action : 'write') in self.actions)").message("every MCP tool's action (write when absent) must be one of the tool's actions").field_path(".mcp.tools"),
    validation = Rule::new("!has(self.http) || self.http.all(h, h.methods.all(m, (m in ['GET', 'HEAD'] ? 'read' : m == 'DELETE' ? 'delete' : 'write') in self.actions))").message("every HTTP method's action (GET, HEAD: read; POST, PUT, PATCH: write; DELETE: delete) must be one of the tool's actions").field_path(".http")
)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// The tool's name, a DNS label unique within the binding (for example `web-search`).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub name: String,
    /// What the agent does with the tool: read, write, delete, execute. ReadOnly agents may
    /// only hold tools whose actions are all `read`.
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub actions: Vec<Action>,
    /// Low (the default) or High. High-risk tools need an approval and a bounded validity.
    /// mandate raises a Low tool to High when it reaches too much (external CIDRs wider than
    /// the installation's limit, every namespace, every pod) or declares an action the
    /// installation deems High (by default delete and execute): the status says why.
    #[serde(default)]
    pub risk: Risk,
    /// Where the tool lives. Exactly one of service, pods, external or kubernetesAPI.
    pub destination: Destination,
    /// The MCP tools this tool exposes, each with the action it performs. mandate's authorizer
    /// allows an MCP `tools/call` only for a tool named here whose action is one of `actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpOperations>,
    /// The HTTP operations this tool exposes (methods on paths). The method says the action:
    /// GET and HEAD read; POST, PUT and PATCH write; DELETE deletes. mandate's authorizer
    /// allows an HTTP call only when an entry here matches it and its action is one of
    /// `actions`. A tool that names neither mcp nor http operations is refused every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub http: Vec<HttpOperation>,
    /// The audience of the token an agent presents to this tool. Absent:
    /// `mandate.dev/<namespace>/<tool name>`. A token for one tool's audience is refused at
    /// every other tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(AUDIENCE))]
    pub audience: Option<String>,
}

/// The MCP tools a tool server exposes to the agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpOperations {
    /// MCP tool names, 1 to 64, each at most once. `*` stands for every tool of the server, and
    /// a name ending in `*` for every tool whose name starts with what precedes it.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub tools: Vec<McpTool>,
}

/// One MCP tool (or a pattern of them) and the action it performs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpTool {
    /// The MCP tool's name as the server publishes it (for example `search_orders`), `*`, or a
    /// prefix ending in `*`.
    #[schemars(length(min = 1, max = 128), pattern(MCP_TOOL_NAME))]
    pub name: String,
    /// What calling it does: read, write, delete or execute; one of the tool's `actions`.
    /// Absent: write (the MCP tool's own annotations are not read yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// HTTP methods on paths.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpOperation {
    /// The methods, 1 to 6: GET, HEAD, POST, PUT, PATCH, DELETE.
    #[schemars(length(min = 1, max = 6))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub methods: Vec<HttpMethod>,
    /// Paths, 1 to 16, each starting with `/`: an exact path (`/v1/orders`), or a prefix
    /// ending in `*` (`/v1/orders/*`). No query, no `.` or `..` segments.
    #[schemars(
        length(min = 1, max = 16),
        inner(length(min = 1, max = 256), pattern(HTTP_PATH))
    )]
    #[x_kube(validation = Rule::new("self.all(p, !p.contains('/../') && !p.contains('/./') && !p.endsWith('/..') && !p.endsWith('/.'))").message("paths may not contain . or .. segments"))]
    pub paths: Vec<String>,
}

/// An HTTP method a tool exposes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    /// The action a method performs: GET and HEAD read; POST, PUT and PATCH write; DELETE
    /// deletes.
    pub fn action(self) -> Action {
        match self {
            HttpMethod::Get | HttpMethod::Head => Action::Read,
            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch => Action::Write,
            HttpMethod::Delete => Action::Delete,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// The method of a request line, if it is one a tool can expose (case-sensitive, as HTTP
    /// methods are).
    pub fn parse(method: &str) -> Option<HttpMethod> {
        [
            HttpMethod::Get,
            HttpMethod::Head,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ]
        .into_iter()
        .find(|m| m.as_str() == method)
    }
}

impl Tool {
    /// The audience a token for this tool must carry: `audience`, else
    /// `mandate.dev/<namespace>/<tool name>` (`namespace`: the ToolBinding's).
    pub fn audience_in(&self, namespace: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("mandate.dev/{namespace}/{}", self.name))
    }
}

/// A declared action on a tool.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Delete,
    Execute,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::Execute];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Execute => "execute",
        }
    }

    /// The action a name (`read`, `write`, `delete`, `execute`) names, if any.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// How much harm a tool can do. The effective risk of a tool is the higher of the declared one
/// and the installation's risk floor (what the destination reaches, the actions).
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
pub enum Risk {
    #[default]
    Low,
    High,
}

/// Where a tool lives. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.service), has(self.pods), has(self.external), has(self.kubernetesAPI)].filter(x, x).size() == 1").message("exactly one of service, pods, external or kubernetesAPI must be set"))]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// A Service, reached through the pods its selector picks on its target ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceDestination>,
    /// Pods picked by labels, in this or other namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsDestination>,
    /// Addresses outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDestination>,
    /// Kubernetes API resources the agent may act on (projected as RBAC; planned).
    #[serde(
        rename = "kubernetesAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes_api: Option<KubernetesApiDestination>,
}

/// A Service destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDestination {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub name: String,
    /// The Service's namespace. Defaults to the ToolBinding's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    /// Service ports (number or name) the tool uses. Empty: every port of the Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<IntOrString>,
}

/// Pods picked by label selectors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsDestination {
    /// Namespaces to pick pods from. Absent: the ToolBinding's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The pods that serve the tool.
    pub pod_selector: LabelSelector,
    /// Container ports (number or name) on those pods, TCP. Empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<IntOrString>,
}

/// Addresses outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDestination {
    /// CIDR blocks (for example 203.0.113.0/24). A Low risk tool may not use 0.0.0.0/0 or ::/0.
    #[schemars(length(min = 1, max = 16), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32"))]
    pub cidrs: Vec<String>,
    /// TCP ports. Empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// Kubernetes API resources a tool acts on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesApiDestination {
    /// The resources; the tool's actions become verbs (read: get, list, watch; write: create,
    /// update, patch; delete: delete; execute: create on the resource).
    #[schemars(length(min = 1, max = 16))]
    pub resources: Vec<ApiResourceRef>,
}

/// One Kubernetes API resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceRef {
    /// The API group; empty for the core group.
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub group: String,
    /// The resource, plural and lower case (for example `configmaps`).
    #[schemars(length(min = 1, max = 63))]
    pub resource: String,
    /// Limit to these object names. Empty: every object of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub names: Vec<String>,
}

/// Who approved a grant (High-risk tools, a Pod Security exemption), for which owner, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approver's username. It must equal the user who creates or changes the grant (the
    /// ToolBinding, or the AgentIdentity's exemption), belong to the configured approver group,
    /// and not be the agent's owner.
    #[schemars(length(min = 1, max = 253))]
    pub approved_by: String,
    /// The agent's owner the approver approved for: the kind and name of the AgentIdentity's
    /// spec.owner when the approval was given. An approval counts only while it names the
    /// current owner, so changing an agent's owner voids every approval given before: an
    /// approver re-approves for the new owner. Required wherever an approval is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_owner: Option<OwnerRef>,
    /// Why the grant is needed (a ticket or a sentence).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// An owner named by kind and name, as in an AgentIdentity's spec.owner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    /// User or Group.
    pub kind: OwnerKind,
    /// The username or group name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl OwnerRef {
    /// Whether this names `owner` (kind and name; the contact does not count).
    pub fn names(&self, owner: &Owner) -> bool {
        self.kind == owner.kind && self.name == owner.name
    }
}

impl From<&Owner> for OwnerRef {
    fn from(owner: &Owner) -> Self {
        OwnerRef {
            kind: owner.kind,
            name: owner.name.clone(),
        }
    }
}

impl std::fmt::Display for OwnerRef {
    /// `User alice`, `Group finance`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.kind, self.name)
    }
}

/// Where a ToolBinding stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ToolBindingPhase {
    /// Accepted, but validFrom lies ahead (or not reconciled yet).
    #[default]
    Pending,
    /// The tools are live.
    Active,
    /// validUntil has passed; the tools are withdrawn.
    Expired,
    /// The binding names a missing agent or breaks a rule; it grants nothing.
    Invalid,
}

/// What the reconciler last observed for a ToolBinding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolBindingStatus {
    /// Pending, Active, Expired or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ToolBindingPhase>,
    /// When the tools expire; absent when they do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The highest effective risk of the tools: High when any tool is declared High or raised
    /// to High by the installation's risk floor (see riskFloor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    /// The tools the risk floor raises to High although they are declared Low, one line each
    /// with why (for example "open-web: its CIDRs reach 2,147,483,648 IPv4 addresses, more
    /// than a /16 holds"). They need an approval and a bounded validUntil like any High tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_floor: Vec<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted and Active.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
