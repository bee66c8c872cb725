//! The inventory report: the objects fetched from a cluster (or any other source) and an
//! instant in; every agent with its owner, class, SPIFFE ID, live tools and delegation, the
//! delegation edges and unsafe chains, the dangerous Kubernetes API rights each agent's
//! ServiceAccount holds through RBAC, the pods lacking a live tool's token, the unmanaged pods,
//! ServiceAccounts and legacy token Secrets, and the tools about to expire out. Pure: never does
//! I/O, never reads a clock. The
//! rules come from `authority` (live tools, the delegation graph) and, for the unmanaged
//! ServiceAccounts and token Secrets, from `Snapshot::unmanaged` (which the operator's
//! `mandate_unmanaged_workloads` gauge counts too): nothing here re-implements them. Rendering
//! (table, dot, mermaid) lives in `render`.
//!
//! What counts as unmanaged:
//! - a pod in a mandate namespace (labelled `mandate.dev/mode`) without a `mandate.dev/agent`
//!   label, or anywhere with a `mandate.dev/agent` label naming no AgentIdentity;
//! - a ServiceAccount in a mandate namespace that no AgentIdentity claims. The `default`
//!   ServiceAccount exists in every namespace, so it is listed only when a pod runs as it;
//! - a legacy service-account-token Secret (annotation `kubernetes.io/service-account.name`) for
//!   any ServiceAccount of a mandate namespace, or for an agent's ServiceAccount anywhere.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::admission::Snapshot;
use crate::admission::credentials::{AgentPod, StalePod, stale_pods};
use crate::admission::verdict::owner_label;
use crate::api::conditions::{self, READY};
use crate::api::{
    AGENT_LABEL, AgentClass, AgentIdentity, DelegationPolicy, MODE_LABEL, Risk,
    TOOL_CREDENTIALS_ANNOTATION, ToolBinding,
};
use crate::assess::service_account_guard;
use crate::authority::network::foreign_policies_selecting;
use crate::authority::rights::{ApiRight, Names, Scope};
use crate::authority::{self, Authority, DelegationGraph, ServiceAccountOwnership, ViolationKind};

/// The objects a report is built from: what `mandate inventory` lists from the cluster.
/// Secrets and Namespaces are metadata only.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub identities: Vec<AgentIdentity>,
    pub bindings: Vec<ToolBinding>,
    pub policies: Vec<DelegationPolicy>,
    pub service_accounts: Vec<ServiceAccount>,
    pub pods: Vec<Pod>,
    pub secrets: Vec<ObjectMeta>,
    pub namespaces: Vec<ObjectMeta>,
    pub network_policies: Vec<NetworkPolicy>,
    /// RBAC of the whole cluster (whatever namespaces the rest covers).
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl Objects {
    /// Adds the RBAC objects to an authority being built.
    pub fn add_rbac_to(&self, builder: &mut authority::AuthorityBuilder) {
        let rbac = builder.rbac_mut();
        self.roles.iter().for_each(|r| rbac.upsert_role(r));
        self.cluster_roles
            .iter()
            .for_each(|r| rbac.upsert_cluster_role(r));
        self.role_bindings
            .iter()
            .for_each(|b| rbac.upsert_role_binding(b));
        self.cluster_role_bindings
            .iter()
            .for_each(|b| rbac.upsert_cluster_role_binding(b));
    }
}

/// The inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The instant the report describes (RFC 3339).
    pub generated_at: String,
    /// The horizon of `expiring`, in seconds.
    pub expiring_within_seconds: i64,
    /// Namespaces labelled `mandate.dev/mode`, with their mode.
    pub mandate_namespaces: Vec<MandateNamespace>,
    /// Sorted by (namespace, name).
    pub agents: Vec<Agent>,
    /// Sorted by (namespace, delegator, delegate, policy).
    pub edges: Vec<DelegationEdge>,
    /// Every unsafe delegation chain (escalation, cycle, depth), sorted by (namespace, message).
    pub escalation_paths: Vec<EscalationPath>,
    pub unmanaged: Unmanaged,
    /// Live tools whose grant ends within the horizon, soonest first.
    pub expiring: Vec<ExpiringTool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MandateNamespace {
    pub name: String,
    /// The label's value (`enforce`, `warn`, `audit`; anything else enforces).
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub namespace: String,
    pub name: String,
    /// `User:alice`, `Group:research-team`.
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    pub class: String,
    pub purpose: String,
    pub service_account: String,
    /// From the identity's status (set by the reconciler); absent until reconciled.
    #[serde(rename = "spiffeID", skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The Ready condition of the identity's status.
    pub ready: bool,
    /// The tools the agent holds at the report's instant, sorted by (name, binding).
    pub tools: Vec<Tool>,
    pub delegates_to: Vec<String>,
    pub delegated_from: Vec<String>,
    /// Unsafe chains through this agent, as readable strings.
    pub escalation_paths: Vec<String>,
    /// NetworkPolicies not written by mandate that can select this agent's pods (they widen
    /// it: NetworkPolicies add up), sorted; the same rule as the identity's NetworkExclusive
    /// condition.
    pub foreign_network_policies: Vec<String>,
    /// Pods of this agent that lack the token of a tool it holds now (started before the tool
    /// was granted), sorted by pod; the same rule as the identity's CredentialsStale condition.
    pub stale_credentials: Vec<StalePod>,
    /// Whether every pod running as its ServiceAccount is reviewed (its namespace is opted
    /// in); the same rule as the identity's ServiceAccountGuarded condition.
    pub service_account_guarded: bool,
    /// Dangerous Kubernetes API rights its ServiceAccount holds through RBAC, sorted by
    /// (binding, role, scope, right); the same rule as the identity's ApiRightsContained
    /// condition and admission's DangerousApiRights.
    pub dangerous_api_rights: Vec<DangerousApiRight>,
}

/// One dangerous right an agent's ServiceAccount holds, and what grants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DangerousApiRight {
    /// `verb resource[.group][/subresource]`, as `kubectl auth can-i` takes it.
    pub right: String,
    pub verb: String,
    /// `resource[.group][/subresource]`.
    pub resource: String,
    /// Where it holds: a namespace; absent when cluster-wide (a ClusterRoleBinding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only on these objects; absent when on every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_names: Option<Vec<String>>,
    /// `RoleBinding ns/name` or `ClusterRoleBinding name`.
    pub binding: String,
    /// `Role ns/name` or `ClusterRole name`.
    pub role: String,
}

impl From<&ApiRight> for DangerousApiRight {
    fn from(right: &ApiRight) -> Self {
        DangerousApiRight {
            right: right.right.to_string(),
            verb: right.right.verb().to_owned(),
            resource: right.right.resource_text(),
            namespace: match &right.scope {
                Scope::Cluster => None,
                Scope::Namespace(namespace) => Some(namespace.clone()),
            },
            resource_names: match &right.names {
                Names::All => None,
                Names::Only(names) => Some(names.iter().cloned().collect()),
            },
            binding: right.binding.to_string(),
            role: right.role.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub name: String,
    pub binding: String,
    pub risk: String,
    pub actions: Vec<String>,
    /// RFC 3339; absent when the grant does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds from the report's instant to `expiresAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegationEdge {
    pub namespace: String,
    pub policy: String,
    pub delegator: String,
    pub delegate: String,
    pub tools: Vec<String>,
    pub max_depth: u32,
    /// Part of an unsafe chain: the reconciler withdraws its network path.
    pub withdrawn: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPath {
    pub namespace: String,
    /// `escalation`, `cycle` or `depth`.
    pub kind: String,
    /// The agents along the chain, in order.
    pub chain: Vec<String>,
    /// The tool handed on without being held (escalations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub policies: Vec<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmanaged {
    pub pods: Vec<UnmanagedPod>,
    pub service_accounts: Vec<UnmanagedServiceAccount>,
    pub token_secrets: Vec<TokenSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedPod {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// What is missing, and what to do.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedServiceAccount {
    pub namespace: String,
    pub name: String,
    /// Pods running as it, sorted.
    pub used_by: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecret {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// The agent the ServiceAccount belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringTool {
    pub namespace: String,
    pub agent: String,
    pub tool: String,
    pub binding: String,
    pub risk: String,
    pub expires_at: String,
    pub expires_in_seconds: i64,
}

/// Builds the report of `objects` at `now`; tools ending within `horizon` are listed as
/// expiring.
pub fn build(
    objects: &Objects,
    config: authority::Config,
    now: Timestamp,
    horizon: SignedDuration,
) -> Report {
    let mut builder = Authority::builder().config(config);
    objects
        .identities
        .iter()
        .for_each(|o| builder.add_identity(o.clone()));
    objects
        .bindings
        .iter()
        .for_each(|o| builder.add_binding(o.clone()));
    objects
        .policies
        .iter()
        .for_each(|o| builder.add_policy(o.clone()));
    objects
        .service_accounts
        .iter()
        .for_each(|o| builder.add_service_account(o.clone()));
    objects.add_rbac_to(&mut builder);
    let snapshot = Snapshot::from_objects(builder.build(), &objects.namespaces, &objects.secrets);
    let authority = snapshot.authority();

    let mandate_namespaces: Vec<MandateNamespace> = objects
        .namespaces
        .iter()
        .filter_map(|ns| {
            let mode = ns.labels.as_ref()?.get(MODE_LABEL)?;
            Some((ns.name.clone()?, mode.clone()))
        })
        .collect::<BTreeMap<String, String>>()
        .into_iter()
        .map(|(name, mode)| MandateNamespace { name, mode })
        .collect();
    let is_mandate_ns = |ns: &str| mandate_namespaces.iter().any(|m| m.name == ns);

    // One analysed graph per namespace that has identities or policies.
    let graphs: BTreeMap<&str, DelegationGraph> = authority
        .namespaces()
        .into_iter()
        .map(|ns| (ns, authority.delegation_graph(ns, now)))
        .collect();

    let mut agents = Vec::new();
    let mut expiring = Vec::new();
    for ns in authority.namespaces() {
        let graph = &graphs[ns];
        for identity in authority.identities_in(ns) {
            let name = identity.metadata.name.clone().unwrap_or_default();
            let tools: Vec<Tool> = authority
                .held_tools(ns, &name, now)
                .iter()
                .map(|held| {
                    let expires_in = held.expires_at.map(|at| seconds_between(now, at));
                    Tool {
                        name: held.tool.name.clone(),
                        binding: held.binding_name().to_owned(),
                        risk: risk(held.risk).to_owned(),
                        actions: held
                            .tool
                            .actions
                            .iter()
                            .map(|a| a.as_str().to_owned())
                            .collect(),
                        expires_at: held.expires_at.map(|at| at.to_string()),
                        expires_in_seconds: expires_in,
                    }
                })
                .collect();
            for tool in &tools {
                if let (Some(at), Some(seconds)) = (&tool.expires_at, tool.expires_in_seconds)
                    && seconds <= horizon.as_secs()
                {
                    expiring.push(ExpiringTool {
                        namespace: ns.to_owned(),
                        agent: name.clone(),
                        tool: tool.name.clone(),
                        binding: tool.binding.clone(),
                        risk: tool.risk.clone(),
                        expires_at: at.clone(),
                        expires_in_seconds: seconds,
                    });
                }
            }
            let live: BTreeSet<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            let stale_credentials = stale_pods(&agent_pods(objects, ns, &name), &live);
            let status = identity.status.as_ref();
            agents.push(Agent {
                namespace: ns.to_owned(),
                owner: owner_label(&identity.spec.owner),
                contact: identity.spec.owner.contact.clone(),
                class: class(identity.spec.class).to_owned(),
                purpose: identity.spec.purpose.clone(),
                service_account: identity.service_account_name().to_owned(),
                spiffe_id: status.and_then(|s| s.spiffe_id.clone()),
                ready: status.is_some_and(|s| conditions::is_true(&s.conditions, READY)),
                tools,
                delegates_to: strings(graph.delegates_to(&name)),
                delegated_from: strings(graph.delegated_from(&name)),
                escalation_paths: graph.escalation_paths(&name),
                foreign_network_policies: foreign_policies_selecting(
                    &objects.network_policies,
                    ns,
                    &name,
                    authority,
                ),
                stale_credentials,
                service_account_guarded: service_account_guard(
                    ns,
                    identity.service_account_name(),
                    is_mandate_ns(ns),
                )
                .guarded,
                dangerous_api_rights: authority
                    .api_rights(ns, identity.service_account_name())
                    .iter()
                    .map(DangerousApiRight::from)
                    .collect(),
                name,
            });
        }
    }
    expiring.sort_by(|a, b| {
        (a.expires_in_seconds, &a.namespace, &a.agent, &a.tool).cmp(&(
            b.expires_in_seconds,
            &b.namespace,
            &b.agent,
            &b.tool,
        ))
    });

    let mut edges = Vec::new();
    let mut escalation_paths = Vec::new();
    for (ns, graph) in &graphs {
        for edge in graph.edges() {
            edges.push(DelegationEdge {
                namespace: (*ns).to_owned(),
                policy: edge.policy.clone(),
                delegator: edge.delegator.clone(),
                delegate: edge.delegate.clone(),
                tools: edge.tools.iter().cloned().collect(),
                max_depth: edge.max_depth,
                withdrawn: graph.is_withdrawn(edge),
            });
        }
        for violation in graph.violations() {
            escalation_paths.push(EscalationPath {
                namespace: (*ns).to_owned(),
                kind: match violation.kind {
                    ViolationKind::Escalation => "escalation",
                    ViolationKind::Cycle => "cycle",
                    ViolationKind::Depth => "depth",
                }
                .to_owned(),
                chain: violation.chain.clone(),
                tool: violation.tool.clone(),
                policies: violation.policies.iter().cloned().collect(),
                message: violation.message.clone(),
            });
        }
    }

    let unmanaged = Unmanaged {
        pods: unmanaged_pods(objects, authority, &is_mandate_ns),
        ..unmanaged(objects, &snapshot)
    };

    Report {
        generated_at: now.to_string(),
        expiring_within_seconds: horizon.as_secs(),
        mandate_namespaces,
        agents,
        edges,
        escalation_paths,
        unmanaged,
        expiring,
    }
}

/// The pods of `agent` in `namespace` as the credentials rules read them (terminating ones are
/// on their way out and left out, as the operator's watch leaves them out).
fn agent_pods(objects: &Objects, namespace: &str, agent: &str) -> Vec<AgentPod> {
    objects
        .pods
        .iter()
        .filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(namespace)
                && pod.metadata.deletion_timestamp.is_none()
                && pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(AGENT_LABEL))
                    .is_some_and(|a| a == agent)
        })
        .map(|pod| AgentPod {
            name: pod.metadata.name.clone().unwrap_or_default(),
            credentials: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOOL_CREDENTIALS_ANNOTATION))
                .cloned(),
        })
        .collect()
}

fn unmanaged_pods(
    objects: &Objects,
    authority: &Authority,
    is_mandate_ns: &dyn Fn(&str) -> bool,
) -> Vec<UnmanagedPod> {
    let mut pods: Vec<UnmanagedPod> = objects
        .pods
        .iter()
        .filter_map(|pod| {
            let namespace = pod.metadata.namespace.as_deref()?;
            let name = pod.metadata.name.as_deref()?;
            let label = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(AGENT_LABEL));
            let reason = match label {
                Some(agent) if authority.identity(namespace, agent).is_some() => return None,
                Some(agent) => format!(
                    "labelled {AGENT_LABEL}={agent}, but no AgentIdentity {agent} exists: create \
                     it or fix the label"
                ),
                None if is_mandate_ns(namespace) => format!(
                    "no {AGENT_LABEL} label in a mandate namespace: give it an AgentIdentity"
                ),
                None => return None,
            };
            Some(UnmanagedPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                service_account: pod_service_account(pod).to_owned(),
                reason,
            })
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods
}

/// The unmanaged ServiceAccounts and token Secrets: the snapshot's own rule
/// ([`Snapshot::unmanaged`], which the operator's gauge counts too), told which ServiceAccounts
/// pods run as, and worded for people.
fn unmanaged(objects: &Objects, snapshot: &Snapshot) -> Unmanaged {
    let mut users: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for pod in &objects.pods {
        if let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) {
            users
                .entry((ns, pod_service_account(pod)))
                .or_default()
                .insert(name);
        }
    }
    let known = snapshot.unmanaged(|namespace, name| users.contains_key(&(namespace, name)));
    let service_accounts = known
        .service_accounts
        .iter()
        .map(|&(namespace, name)| {
            let used_by: Vec<String> = users
                .get(&(namespace, name))
                .into_iter()
                .flatten()
                .map(|p| (*p).to_owned())
                .collect();
            let reason = match snapshot
                .authority()
                .service_account_ownership(namespace, name)
            {
                ServiceAccountOwnership::Managed { agent, .. } => format!(
                    "controlled by AgentIdentity {agent}, which is gone: it is garbage-collected \
                     with its owner reference, or delete it"
                ),
                _ => "no AgentIdentity owns it: give its workloads an AgentIdentity, or move \
                      them out of the mandate namespace"
                    .to_owned(),
            };
            UnmanagedServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                used_by,
                reason,
            }
        })
        .collect();
    let token_secrets = known
        .token_secrets
        .iter()
        .map(|secret| TokenSecret {
            namespace: secret.namespace.to_owned(),
            name: secret.name.to_owned(),
            service_account: secret.service_account.to_owned(),
            agent: secret.agent.map(str::to_owned),
        })
        .collect();
    Unmanaged {
        pods: Vec::new(),
        service_accounts,
        token_secrets,
    }
}

/// The ServiceAccount a pod runs as (`default` when unset, as the API server fills it in).
fn pod_service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .map_or("default", crate::api::pod_service_account)
}

fn strings(items: Vec<&str>) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

pub(crate) fn risk(risk: Risk) -> &'static str {
    match risk {
        Risk::Low => "Low",
        Risk::High => "High",
    }
}

pub(crate) fn class(class: AgentClass) -> &'static str {
    match class {
        AgentClass::ReadOnly => "ReadOnly",
        AgentClass::WriteCapable => "WriteCapable",
        AgentClass::TransactionExecutor => "TransactionExecutor",
    }
}

/// A duration for people: `3d4h`, `2h05m`, `45m`, `30s`; `expired` when not positive.
pub fn human_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return "expired".to_owned();
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Why a duration like `24h` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration: write a number and a unit (s, m, h, d, w), for example 24h, 90m \
     or 1h30m"
)]
pub struct DurationError(pub String);

/// Reads `24h`, `90m`, `1h30m`, `7d`, `45s`, `2w`.
pub fn parse_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let error = || DurationError(text.to_owned());
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(error()),
        };
        let value: i64 = digits.parse().map_err(|_| error())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(error)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(error());
    }
    Ok(SignedDuration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::admission::snapshot::SERVICE_ACCOUNT_NAME_ANNOTATION;
    use crate::authority::fixtures::*;

    fn ns(name: &str, mode: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: mode.map(|m| BTreeMap::from([(MODE_LABEL.to_owned(), m.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    fn a_pod(namespace: &str, name: &str, agent: Option<&str>, sa: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: agent.map(|a| BTreeMap::from([(AGENT_LABEL.to_owned(), a.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: sa.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn token(namespace: &str, name: &str, sa: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            annotations: Some(BTreeMap::from([(
                SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(),
                sa.to_owned(),
            )])),
            ..ObjectMeta::default()
        }
    }

    /// A planner and an executor (both holding `ledger`), a researcher holding `search` until
    /// two hours from now, and a policy in which the planner hands `search` (which it does not
    /// hold) to the researcher.
    fn world() -> Objects {
        Objects {
            identities: vec![
                identity("planner").ready().build(),
                identity("executor").build(),
                identity("researcher").ready().build(),
            ],
            bindings: vec![
                binding("p").agent("planner").tool(tool("ledger")).build(),
                binding("e").agent("executor").tool(tool("ledger")).build(),
                binding("r")
                    .agent("researcher")
                    .tool(tool("search"))
                    .valid_until(hours(2))
                    .build(),
            ],
            policies: vec![
                policy("to-executor")
                    .delegator("planner")
                    .delegate("executor", ["ledger"])
                    .build(),
                policy("to-researcher")
                    .delegator("planner")
                    .delegate("researcher", ["search"])
                    .build(),
            ],
            service_accounts: vec![
                service_account("planner").managed_for("planner").build(),
                service_account("legacy").build(),
                service_account("default").build(),
                service_account("ghost").managed_for("ghost").build(),
            ],
            pods: vec![
                a_pod(NS, "planner-0", Some("planner"), Some("planner")),
                a_pod(NS, "stray", None, Some("legacy")),
                a_pod(NS, "typo", Some("plannr"), None),
                a_pod("elsewhere", "web", None, None),
                a_pod("elsewhere", "lost", Some("nobody"), None),
            ],
            secrets: vec![
                token(NS, "legacy-token", "legacy"),
                token("elsewhere", "app-token", "app"),
                token("elsewhere", "planner-token", "planner"),
            ],
            namespaces: vec![ns(NS, Some("enforce")), ns("elsewhere", None)],
            network_policies: vec![
                network_policy(NS, "open-researcher", Some("researcher")),
                network_policy("elsewhere", "open-all", None),
            ],
            ..Objects::default()
        }
    }

    #[test]
    fn dangerous_api_rights_are_reported_on_the_agent_they_are_granted_to() {
        let mut objects = world();
        objects.cluster_roles.push(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "edit"}, "rules": [
                {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"],
                 "resourceNames": ["db"]}]}))
            .unwrap_or_else(|e| panic!("{e}")),
        );
        objects.role_bindings.push(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "planner-edit", "namespace": "elsewhere"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": "planner", "namespace": NS}]}))
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let report = build(
            &objects,
            authority::Config::default(),
            NOW,
            SignedDuration::from_hours(24),
        );
        let rights = |agent: &str| {
            report
                .agents
                .iter()
                .find(|a| a.name == agent)
                .map(|a| a.dangerous_api_rights.clone())
                .unwrap_or_default()
        };
        assert!(rights("researcher").is_empty());
        let planner = rights("planner");
        assert_eq!(planner.len(), 2);
        assert_eq!(
            planner[0],
            DangerousApiRight {
                right: "get secrets".into(),
                verb: "get".into(),
                resource: "secrets".into(),
                namespace: Some("elsewhere".into()),
                resource_names: Some(vec!["db".into()]),
                binding: "RoleBinding elsewhere/planner-edit".into(),
                role: "ClusterRole edit".into(),
            }
        );
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["agents"][1]["name"], "planner");
        assert_eq!(
            json["agents"][1]["dangerousApiRights"][1]["right"], "list secrets",
            "{json:#}"
        );
        assert_eq!(
            json["agents"][0]["dangerousApiRights"],
            serde_json::json!([])
        );
        let table = crate::cli::render::table(&report, 200);
        assert!(table.contains("DANGEROUS API RIGHTS (1)"), "{table}");
        assert!(
            table.contains(
                "elsewhere  RoleBinding elsewhere/planner-edit -> ClusterRole edit  get,list secrets (only db)"
            ),
            "{table}"
        );
    }

    /// A NetworkPolicy nobody owns selecting `agent`'s pods (every pod without one).
    fn network_policy(namespace: &str, name: &str, agent: Option<&str>) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": agent
                .map(|a| serde_json::json!({AGENT_LABEL: a}))
                .unwrap_or_default()}},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn foreign_network_policies_are_reported_on_the_agents_they_can_select() {
        let report = report();
        let foreign = |name: &str| {
            report
                .agents
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.foreign_network_policies.clone())
                .unwrap_or_default()
        };
        assert_eq!(foreign("researcher"), ["open-researcher"]);
        assert!(foreign("planner").is_empty(), "another namespace's policy");
        let table = crate::cli::render::table(&report, 200);
        assert!(table.contains("FOREIGN NETWORK POLICIES (1)"), "{table}");
    }

    #[test]
    fn an_agent_outside_opted_in_namespaces_is_reported_unguarded() {
        let mut objects = world();
        objects
            .identities
            .push(identity("scout").namespace("elsewhere").build());
        let report = build(
            &objects,
            authority::Config::default(),
            NOW,
            SignedDuration::from_hours(3),
        );
        let guarded = |name: &str| {
            report
                .agents
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.service_account_guarded)
        };
        assert_eq!(guarded("scout"), Some(false));
        assert_eq!(guarded("planner"), Some(true));
        let table = crate::cli::render::table(&report, 200);
        assert!(table.contains("UNGUARDED SERVICE ACCOUNTS (1)"), "{table}");
        assert!(
            table.contains("pods running as ServiceAccount scout without the mandate.dev/agent label are not checked"),
            "{table}"
        );
    }

    fn report() -> Report {
        build(
            &world(),
            authority::Config::default(),
            NOW,
            SignedDuration::from_hours(3),
        )
    }

    #[test]
    fn every_agent_is_listed_with_owner_class_readiness_and_the_tools_it_holds_now() {
        let report = report();
        let agents: Vec<(&str, bool, Vec<&str>)> = report
            .agents
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.ready,
                    a.tools.iter().map(|t| t.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            agents,
            [
                ("executor", false, vec!["ledger"]),
                ("planner", true, vec!["ledger"]),
                ("researcher", true, vec!["search"]),
            ]
        );
        let researcher = &report.agents[2];
        assert_eq!(researcher.owner, "Group:team-a");
        assert_eq!(researcher.class, "ReadOnly");
        assert_eq!(researcher.tools[0].expires_in_seconds, Some(7200));
        assert_eq!(researcher.delegated_from, ["planner"]);
    }

    #[test]
    fn agent_pods_lacking_a_live_tools_token_are_listed_on_their_agent() {
        let mut objects = world();
        let mut given = a_pod(NS, "planner-1", Some("planner"), Some("planner"));
        given.metadata.annotations = Some(BTreeMap::from([(
            TOOL_CREDENTIALS_ANNOTATION.to_owned(),
            "ledger".to_owned(),
        )]));
        objects.pods.push(given);
        let report = build(
            &objects,
            authority::Config::default(),
            NOW,
            SignedDuration::ZERO,
        );
        let planner = report
            .agents
            .iter()
            .find(|a| a.name == "planner")
            .unwrap_or_else(|| panic!("no planner"));
        assert_eq!(
            planner.stale_credentials,
            [StalePod {
                pod: "planner-0".into(),
                missing: vec!["ledger".into()]
            }],
            "planner-0 has no credentials annotation; planner-1 has ledger's token"
        );
        let researcher = report
            .agents
            .iter()
            .find(|a| a.name == "researcher")
            .unwrap_or_else(|| panic!("no researcher"));
        assert!(researcher.stale_credentials.is_empty());
    }

    #[test]
    fn edges_and_escalation_paths_come_from_the_delegation_graph() {
        let report = report();
        let edges: Vec<(&str, &str, bool)> = report
            .edges
            .iter()
            .map(|e| (e.delegator.as_str(), e.delegate.as_str(), e.withdrawn))
            .collect();
        assert_eq!(
            edges,
            [
                ("planner", "executor", false),
                ("planner", "researcher", true)
            ]
        );
        assert_eq!(report.escalation_paths.len(), 1);
        let path = &report.escalation_paths[0];
        assert_eq!(path.kind, "escalation");
        assert_eq!(path.chain, ["planner", "researcher"]);
        assert_eq!(path.tool.as_deref(), Some("search"));
        assert_eq!(
            report.agents[1].escalation_paths,
            std::slice::from_ref(&path.message)
        );
    }

    #[test]
    fn unmanaged_pods_are_unlabelled_ones_in_mandate_namespaces_and_labels_naming_no_identity() {
        let pods: Vec<(String, String)> = report()
            .unmanaged
            .pods
            .into_iter()
            .map(|p| (p.namespace, p.name))
            .collect();
        assert_eq!(
            pods,
            [
                (NS.to_owned(), "stray".to_owned()),
                (NS.to_owned(), "typo".to_owned()),
                ("elsewhere".to_owned(), "lost".to_owned()),
            ]
        );
    }

    #[test]
    fn unclaimed_service_accounts_of_mandate_namespaces_are_unmanaged_and_default_only_when_used() {
        let accounts: Vec<(String, Vec<String>)> = report()
            .unmanaged
            .service_accounts
            .into_iter()
            .map(|s| (s.name, s.used_by))
            .collect();
        assert_eq!(
            accounts,
            [
                ("default".to_owned(), vec!["typo".to_owned()]),
                ("ghost".to_owned(), vec![]),
                ("legacy".to_owned(), vec!["stray".to_owned()]),
            ]
        );
    }

    #[test]
    fn token_secrets_are_listed_in_mandate_namespaces_and_for_agents_anywhere() {
        let secrets: Vec<(String, Option<String>)> = report()
            .unmanaged
            .token_secrets
            .into_iter()
            .map(|s| (s.name, s.agent))
            .collect();
        assert_eq!(secrets, [("legacy-token".to_owned(), None)]);
        // The planner's SA lives in NS, so a token for "planner" elsewhere is another SA.
    }

    #[test]
    fn tools_ending_within_the_horizon_are_expiring() {
        let report = report();
        assert_eq!(report.expiring.len(), 1);
        assert_eq!(report.expiring[0].tool, "search");
        let later = build(
            &world(),
            authority::Config::default(),
            NOW,
            SignedDuration::from_hours(1),
        );
        assert!(later.expiring.is_empty());
    }

    #[test]
    fn durations_read_like_kubectl_and_print_for_people() {
        assert_eq!(parse_duration("24h"), Ok(SignedDuration::from_hours(24)));
        assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("2d"), Ok(SignedDuration::from_hours(48)));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1y").is_err());
        assert_eq!(human_duration(7200), "2h00m");
        assert_eq!(human_duration(90_000), "1d1h");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(0), "expired");
    }
}
