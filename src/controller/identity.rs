//! Reconciles one AgentIdentity: projects its ServiceAccount and NetworkPolicy from a fresh
//! authority snapshot of its namespace, writes its status (SPIFFE ID, live tools, delegation,
//! escalation paths, conditions), publishes an event for every change of authority, and
//! requeues at the next validity boundary.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::events::EventType;
use super::status::{self, requeue_after};
use super::{Context, ReconcileError, Scope};
use crate::api::conditions::{self, DELEGATION_SAFE, ISOLATED, READY, TOOLS_BOUND};
use crate::api::{AgentIdentity, AgentIdentityStatus, DelegationPolicy, ToolBinding};
use crate::authority::Reason;
use crate::index::Stores;
use crate::project::{self, NetworkInputs};

const KIND: &str = "AgentIdentity";

pub(super) async fn reconcile(
    identity: Arc<AgentIdentity>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(scope) = Scope::of(&*identity, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let (name, namespace, now, authority) =
        (&scope.name, &scope.namespace, scope.now, &scope.authority);
    if identity.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the projections through their ownerReferences.
        return Ok(Action::await_change());
    }
    let findings = authority.validate_identity(&identity);
    let blocking: Vec<_> = findings
        .iter()
        .filter(|f| {
            matches!(
                f.reason,
                Reason::ServiceAccountClaimed | Reason::ServiceAccountUnmanaged
            )
        })
        .collect();

    let service_account = project::desired_service_account(&identity, &ctx.settings.trust_domain)
        .map_err(|source| ReconcileError::Project {
        what: "ServiceAccount",
        name: name.clone(),
        source,
    })?;
    let sa_name = service_account.name_any();
    if blocking.is_empty() {
        let stored = ctx.stores.service_account_versions.get(namespace, &sa_name);
        ctx.applied
            .apply(
                &Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace),
                namespace,
                &service_account,
                stored.as_deref(),
            )
            .await
            .map_err(|source| ReconcileError::ApplyServiceAccount {
                namespace: namespace.clone(),
                name: sa_name.clone(),
                source,
            })?;
    }

    let graph = authority.delegation_graph(namespace, now);
    let desired = project::desired_network_policy(
        &identity,
        &NetworkInputs {
            authority,
            graph: &graph,
            services: &ctx.stores,
            config: &ctx.settings.network,
            now,
        },
    )
    .map_err(|source| ReconcileError::Project {
        what: "NetworkPolicy",
        name: name.clone(),
        source,
    })?;
    let np_name = desired.policy.name_any();
    let stored = ctx.stores.network_policy_versions.get(namespace, &np_name);
    ctx.applied
        .apply(
            &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace),
            namespace,
            &desired.policy,
            stored.as_deref(),
        )
        .await
        .map_err(|source| ReconcileError::ApplyNetworkPolicy {
            namespace: namespace.clone(),
            name: np_name.clone(),
            source,
        })?;

    let tools = authority.live_tools(namespace, name, now);
    let escalation_paths = graph.escalation_paths(name);
    let previous = identity.status.clone().unwrap_or_default();
    let generation = identity.meta().generation;
    let stamp = Time(now);
    let mut conditions_now = previous.conditions.clone();
    let unresolved: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
    conditions::set(
        &mut conditions_now,
        conditions::new(
            TOOLS_BOUND,
            !tools.is_empty(),
            if tools.is_empty() {
                "NoLiveTools"
            } else {
                "ToolsLive"
            },
            if tools.is_empty() {
                "no ToolBinding grants this agent a tool now".to_owned()
            } else {
                format!("{} tool(s) live", tools.len())
            },
            generation,
            stamp.clone(),
        ),
    );
    conditions::set(
        &mut conditions_now,
        conditions::new(
            ISOLATED,
            true,
            "NetworkPolicyApplied",
            if unresolved.is_empty() {
                format!("NetworkPolicy {np_name} applied")
            } else {
                format!(
                    "NetworkPolicy {np_name} applied; left out: {}",
                    unresolved.join("; ")
                )
            },
            generation,
            stamp.clone(),
        ),
    );
    conditions::set(
        &mut conditions_now,
        conditions::new(
            DELEGATION_SAFE,
            escalation_paths.is_empty(),
            if escalation_paths.is_empty() {
                "NoEscalation"
            } else {
                "EscalationPath"
            },
            if escalation_paths.is_empty() {
                "no delegation chain through this agent escalates authority".to_owned()
            } else {
                format!(
                    "network paths of unsafe delegations are withdrawn: {}",
                    escalation_paths.join("; ")
                )
            },
            generation,
            stamp.clone(),
        ),
    );
    let (ready, reason, message) = match blocking.first() {
        None => (
            true,
            "Projected",
            format!("ServiceAccount {sa_name} and NetworkPolicy {np_name} applied"),
        ),
        Some(finding) => (false, finding.reason.code(), finding.detail.clone()),
    };
    conditions::set(
        &mut conditions_now,
        conditions::new(READY, ready, reason, message, generation, stamp),
    );

    let status = AgentIdentityStatus {
        spiffe_id: Some(project::spiffe_id(
            &ctx.settings.trust_domain,
            namespace,
            &sa_name,
        )),
        service_account: Some(sa_name),
        network_policy: Some(np_name),
        tool_count: i32::try_from(tools.len()).unwrap_or(i32::MAX),
        tools,
        delegates_to: graph
            .delegates_to(name)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        delegated_from: graph
            .delegated_from(name)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        escalation_paths,
        observed_generation: generation,
        conditions: conditions_now,
    };
    if status::write_if_changed::<AgentIdentity, _>(
        &ctx,
        KIND,
        namespace,
        name,
        identity.status.as_ref(),
        &status,
    )
    .await?
    {
        publish_changes(&ctx, &identity, &previous, &status);
    }

    scope.finish(&ctx.metrics);
    let next = authority.next_boundary(namespace, name, now);
    Ok(Action::requeue(requeue_after(
        next,
        now,
        ctx.settings.resync,
    )))
}

/// One event per change of authority: tools granted or withdrawn, escalation paths that
/// appear or clear, and a ServiceAccount mandate will not adopt.
fn publish_changes(
    ctx: &Context,
    identity: &AgentIdentity,
    before: &AgentIdentityStatus,
    after: &AgentIdentityStatus,
) {
    let names = |s: &AgentIdentityStatus| -> BTreeSet<String> {
        s.tools
            .iter()
            .map(|t| format!("{} (ToolBinding {})", t.name, t.binding))
            .collect()
    };
    let (had, has) = (names(before), names(after));
    let mut events = Vec::new();
    let granted: Vec<_> = has.difference(&had).cloned().collect();
    if !granted.is_empty() {
        events.push((
            EventType::Normal,
            "ToolsGranted",
            format!("now holds {}", granted.join(", ")),
        ));
    }
    let withdrawn: Vec<_> = had.difference(&has).cloned().collect();
    if !withdrawn.is_empty() {
        events.push((
            EventType::Normal,
            "ToolsWithdrawn",
            format!("no longer holds {}", withdrawn.join(", ")),
        ));
    }
    for path in after
        .escalation_paths
        .iter()
        .filter(|p| !before.escalation_paths.contains(p))
    {
        events.push((
            EventType::Warning,
            "EscalationPath",
            format!("{path}; its network path is withdrawn"),
        ));
    }
    if !before.escalation_paths.is_empty() && after.escalation_paths.is_empty() {
        events.push((
            EventType::Normal,
            "DelegationSafe",
            "no escalation path remains".to_owned(),
        ));
    }
    let ready = |s: &AgentIdentityStatus| conditions::is_true(&s.conditions, READY);
    if !ready(after) && (ready(before) || before.conditions.is_empty()) {
        if let Some(c) = after.conditions.iter().find(|c| c.type_ == READY) {
            events.push((EventType::Warning, "NotReady", c.message.clone()));
        }
    }
    let reference = identity.object_ref(&());
    for (type_, reason, note) in events {
        // Events are informational: the reconcile neither waits for nor fails on them.
        let (events, reference) = (Arc::clone(&ctx.events), reference.clone());
        tokio::spawn(async move {
            if let Err(error) = events.publish(reference, type_, reason, note).await {
                tracing::warn!(%error, reason, "publishing an event failed");
            }
        });
    }
}

/// Agents named by any DelegationPolicy in `namespace`: their delegation analysis and network
/// paths can change whenever one of them changes.
fn delegation_participants(stores: &Stores, namespace: &str) -> BTreeSet<String> {
    stores
        .policies
        .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .iter()
        .flat_map(|p| {
            std::iter::once(p.spec.delegator.clone())
                .chain(p.spec.delegates.iter().map(|d| d.agent.clone()))
        })
        .collect()
}

fn refs(
    namespace: &str,
    agents: impl IntoIterator<Item = String>,
) -> Vec<ObjectRef<AgentIdentity>> {
    agents
        .into_iter()
        .map(|agent| ObjectRef::new(&agent).within(namespace))
        .collect()
}

/// The agent a binding grants to, and everyone in delegation with it.
pub(super) fn affected_by_binding(
    stores: &Stores,
    binding: &ToolBinding,
) -> Vec<ObjectRef<AgentIdentity>> {
    let Some(namespace) = binding.namespace() else {
        return Vec::new();
    };
    let mut agents = delegation_participants(stores, &namespace);
    if !agents.contains(&binding.spec.agent) {
        agents = BTreeSet::from([binding.spec.agent.clone()]);
    }
    refs(&namespace, agents)
}

/// Everyone in delegation in the policy's namespace (a chain's safety spans its whole length).
pub(super) fn affected_by_policy(
    stores: &Stores,
    policy: &DelegationPolicy,
) -> Vec<ObjectRef<AgentIdentity>> {
    let Some(namespace) = policy.namespace() else {
        return Vec::new();
    };
    let mut agents = delegation_participants(stores, &namespace);
    agents.insert(policy.spec.delegator.clone());
    agents.extend(policy.spec.delegates.iter().map(|d| d.agent.clone()));
    refs(&namespace, agents)
}

/// The others in delegation with a changed identity (its endpoint and tools shape their paths).
pub(super) fn affected_by_identity(
    stores: &Stores,
    identity: &AgentIdentity,
) -> Vec<ObjectRef<AgentIdentity>> {
    let Some(namespace) = identity.namespace() else {
        return Vec::new();
    };
    let name = identity.name_any();
    let agents = delegation_participants(stores, &namespace);
    if !agents.contains(&name) {
        return Vec::new();
    }
    refs(&namespace, agents.into_iter().filter(|a| *a != name))
}

/// The identity a projection belongs to, by its ownerReference.
pub(super) fn owner_of<P: Resource>(
    _stores: &Stores,
    projection: &P,
) -> Vec<ObjectRef<AgentIdentity>> {
    let meta = projection.meta();
    let Some(namespace) = meta.namespace.as_deref() else {
        return Vec::new();
    };
    meta.owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.kind == AgentIdentity::kind(&())
                && owner.api_version == AgentIdentity::api_version(&())
        })
        .map(|owner| ObjectRef::new(&owner.name).within(namespace))
        .collect()
}

/// Agents with a tool whose destination is this Service.
pub(super) fn affected_by_service(
    stores: &Stores,
    service: &Service,
) -> Vec<ObjectRef<AgentIdentity>> {
    match service.namespace() {
        Some(namespace) => agents_using_service(stores, &namespace, &service.name_any()),
        None => Vec::new(),
    }
}

/// Agents with a tool whose destination is the Service this slice belongs to.
pub(super) fn affected_by_endpoint_slice(
    stores: &Stores,
    slice: &EndpointSlice,
) -> Vec<ObjectRef<AgentIdentity>> {
    let service = slice.labels().get("kubernetes.io/service-name");
    match (slice.namespace(), service) {
        (Some(namespace), Some(service)) => agents_using_service(stores, &namespace, service),
        _ => Vec::new(),
    }
}

fn agents_using_service(
    stores: &Stores,
    namespace: &str,
    service: &str,
) -> Vec<ObjectRef<AgentIdentity>> {
    stores
        .bindings
        .state()
        .iter()
        .filter_map(|binding| {
            let own = binding.namespace()?;
            binding
                .spec
                .tools
                .iter()
                .filter_map(|t| t.destination.service.as_ref())
                .any(|s| s.name == service && s.namespace.as_deref().unwrap_or(&own) == namespace)
                .then(|| ObjectRef::new(&binding.spec.agent).within(&own))
        })
        .collect()
}
