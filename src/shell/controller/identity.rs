//! Reconciles one AgentIdentity: assesses it (`assess::assess_identity`), applies the
//! ServiceAccount and NetworkPolicy that come out, writes its status when it differs,
//! publishes the assessment's events, and requeues at its next change. Holds no rule; also maps
//! changes of related objects to the identities they affect.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::projection::ApplyOutcome;
use super::status;
use super::{Context, ReconcileError, Reconciling};
use crate::admission::namespace::namespace_mode;
use crate::api::{AGENT_LABEL, AgentIdentity, DelegationPolicy, ToolBinding};
use crate::assess::{Event, IdentityInputs, assess_identity};
use crate::authority::network;
use crate::index::Stores;
use crate::project::{network_policy_name, service_name_of_slice};

const KIND: &str = "AgentIdentity";

pub(super) async fn reconcile(
    identity: Arc<AgentIdentity>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if identity.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the projections through their ownerReferences.
        return Ok(Action::await_change());
    }
    let Some(reconciling) = Reconciling::start(&*identity, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let (name, namespace) = (&reconciling.name, &reconciling.namespace);
    let network_policies = ctx
        .stores
        .network_policies
        .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()));
    // `None` until the pods are listed: CredentialsStale is then left as it is.
    let pods = ctx.stores.agent_pods.of(namespace, name);
    let assessment = assess_identity(
        &identity,
        &IdentityInputs {
            authority: &reconciling.authority,
            trust_domain: &ctx.settings.trust_domain,
            network: &ctx.settings.network,
            services: &ctx.stores,
            network_policies: &network_policies,
            pods: pods.as_deref(),
            namespace_opted_in: opted_in(&ctx.stores, namespace),
            now: reconciling.now,
        },
    )
    .map_err(|source| ReconcileError::Project {
        name: name.clone(),
        source,
    })?;

    if let Some(service_account) = &assessment.service_account {
        let sa_name = service_account.name_any();
        let stored = ctx.stores.service_account_versions.get(namespace, &sa_name);
        let outcome = ctx
            .applied
            .apply(
                &Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace),
                namespace,
                service_account,
                stored.as_deref(),
            )
            .await
            .map_err(|source| ReconcileError::ApplyServiceAccount {
                namespace: namespace.clone(),
                name: sa_name.clone(),
                source,
            })?;
        log_apply(outcome, "ServiceAccount", namespace, &sa_name, name);
    }
    let np_name = assessment.network_policy.name_any();
    let stored = ctx.stores.network_policy_versions.get(namespace, &np_name);
    let outcome = ctx
        .applied
        .apply(
            &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace),
            namespace,
            &assessment.network_policy,
            stored.as_deref(),
        )
        .await
        .map_err(|source| ReconcileError::ApplyNetworkPolicy {
            namespace: namespace.clone(),
            name: np_name.clone(),
            source,
        })?;
    log_apply(outcome, "NetworkPolicy", namespace, &np_name, name);

    let wrote = status::write_if_changed::<AgentIdentity, _>(
        &ctx,
        KIND,
        namespace,
        name,
        identity.status.as_ref(),
        &assessment.status,
    )
    .await?;
    if wrote {
        publish(&ctx, &identity, assessment.events);
    }
    Ok(reconciling.done(&ctx, assessment.next_change))
}

/// Whether `namespace` carries `mandate.dev/mode` in the index's view (a namespace not in the
/// view yet counts as not opted in: the condition says so until the next change of it).
fn opted_in(stores: &Stores, namespace: &str) -> bool {
    stores
        .namespaces
        .get(&ObjectRef::new(namespace))
        .is_some_and(|n| namespace_mode(n.metadata.labels.as_ref()).is_some())
}

/// The identities of `namespace`, woken when its mode label changes (ServiceAccountGuarded).
pub(super) fn in_namespace(
    stores: &Stores,
    namespace: &PartialObjectMeta<Namespace>,
) -> Vec<ObjectRef<AgentIdentity>> {
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Vec::new();
    };
    stores
        .identities
        .state_filter(|identity| identity.metadata.namespace.as_deref() == Some(name))
        .iter()
        .map(|identity| ObjectRef::from_obj(&**identity))
        .collect()
}

/// Projections mandate changed are logged at info; a change someone else made and mandate put
/// back is a warning, since it means someone tried to widen (or break) an agent's boundary.
pub(super) fn log_apply(
    outcome: ApplyOutcome,
    kind: &str,
    namespace: &str,
    name: &str,
    agent: &str,
) {
    match outcome {
        ApplyOutcome::Unchanged => {}
        ApplyOutcome::Changed => {
            tracing::info!(kind, %namespace, %name, %agent, "projection applied");
        }
        ApplyOutcome::Repaired => tracing::warn!(
            kind,
            %namespace,
            %name,
            %agent,
            "projection repaired: someone else had changed it; mandate's version is restored"
        ),
    }
}

/// Publishes the assessment's events. Events are informational: the reconcile neither waits
/// for nor fails on them.
fn publish(ctx: &Context, identity: &AgentIdentity, events: Vec<Event>) {
    let reference = identity.object_ref(&());
    for event in events {
        let (publisher, reference) = (Arc::clone(&ctx.events), reference.clone());
        tokio::spawn(async move {
            if let Err(error) = publisher
                .publish(reference, event.type_, event.reason, event.note)
                .await
            {
                tracing::warn!(%error, reason = event.reason, "publishing an event failed");
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

/// The identity a projection belongs to: by its ownerReference; when someone removed that, by
/// its `mandate.dev/agent` label; when that is gone too, by its name (`mandate-<agent>`, or the
/// ServiceAccount an identity runs as). A projection tampered with in any of these ways still
/// wakes its identity's reconcile, which restores it at once.
pub(super) fn owner_of<P: Resource<DynamicType = ()>>(
    stores: &Stores,
    projection: &P,
) -> Vec<ObjectRef<AgentIdentity>> {
    let meta = projection.meta();
    let Some(namespace) = meta.namespace.as_deref() else {
        return Vec::new();
    };
    let by_reference: Vec<_> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.kind == AgentIdentity::kind(&())
                && owner.api_version == AgentIdentity::api_version(&())
        })
        .map(|owner| ObjectRef::new(&owner.name).within(namespace))
        .collect();
    if !by_reference.is_empty() {
        return by_reference;
    }
    if let Some(agent) = meta.labels.as_ref().and_then(|l| l.get(AGENT_LABEL)) {
        return vec![ObjectRef::new(agent).within(namespace)];
    }
    let name = meta.name.as_deref().unwrap_or_default();
    let is_network_policy = P::kind(&()) == NetworkPolicy::kind(&());
    stores
        .identities
        .state_filter(|identity| {
            identity.metadata.namespace.as_deref() == Some(namespace)
                && if is_network_policy {
                    network_policy_name(&identity.name_any()) == name
                } else {
                    identity.service_account_name() == name
                }
        })
        .iter()
        .map(|identity| ObjectRef::from_obj(identity.as_ref()))
        .collect()
}

/// The agents of a NetworkPolicy's namespace when it is not mandate's: their NetworkExclusive
/// condition names the foreign policies that can select their pods. All of them, since a change
/// of its podSelector may stop selecting an agent as well as start (foreign policies change
/// rarely). mandate's own policies wake nobody here: their changes reach their identity
/// through `owner_of`.
pub(super) fn affected_by_network_policy(
    stores: &Stores,
    policy: &NetworkPolicy,
) -> Vec<ObjectRef<AgentIdentity>> {
    let Some(namespace) = policy.namespace() else {
        return Vec::new();
    };
    if network::is_mandates(&policy.metadata, &stores.authority.latest()) {
        return Vec::new();
    }
    stores
        .identities
        .state_filter(|identity| identity.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .iter()
        .map(|identity| ObjectRef::from_obj(identity.as_ref()))
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
    match (slice.namespace(), service_name_of_slice(slice)) {
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
