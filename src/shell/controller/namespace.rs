//! Reconciles one Namespace's default deny: the namespace's mode label, whether it holds an
//! AgentIdentity and whether mandate's default deny is there already in (from the stores); out,
//! mandate's default-deny NetworkPolicy applied (`project::desired_default_deny`). Holds no
//! rule: which policy a namespace needs is `project::default_deny_scope`'s (which never asks
//! for a deletion). Also maps changes of
//! identities and of mandate's NetworkPolicies to the namespaces they concern, so a default deny
//! someone changed or deleted is restored at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::identity::log_apply;
use super::{Context, ReconcileError, Timer};
use crate::api::{AgentIdentity, MODE_LABEL};
use crate::project::{DEFAULT_DENY_NAME, default_deny_scope, desired_default_deny};

const KIND: &str = "Namespace";

pub(super) async fn reconcile(
    namespace: Arc<PartialObjectMeta<Namespace>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // A namespace being deleted takes its policies with it, and refuses new objects.
    if !ctx.is_leader() || namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let timer = Timer::start(KIND);
    let name = namespace.name_any();
    let agent_namespace = namespace
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(MODE_LABEL));
    // The live authority, once every identity has listed: a namespace must never look empty
    // (and lose its default deny) only because the identities are not known yet.
    let authority =
        ctx.stores
            .authority
            .current()
            .await
            .map_err(|source| ReconcileError::ReadAuthority {
                kind: KIND,
                name: name.clone(),
                source,
            })?;
    let holds_identity = authority.identities_in(&name).next().is_some();
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &name);
    let stored = ctx
        .stores
        .network_policy_versions
        .get(&name, DEFAULT_DENY_NAME);
    if let Some(scope) = default_deny_scope(agent_namespace, holds_identity, stored.is_some()) {
        let outcome = ctx
            .applied
            .apply(
                &api,
                &name,
                &desired_default_deny(&name, scope),
                stored.as_deref(),
            )
            .await
            .map_err(|source| ReconcileError::ApplyNetworkPolicy {
                namespace: name.clone(),
                name: DEFAULT_DENY_NAME.to_owned(),
                source,
            })?;
        log_apply(outcome, "NetworkPolicy", &name, DEFAULT_DENY_NAME, "");
    }
    timer.finish(&ctx.metrics);
    Ok(Action::requeue(ctx.settings.resync))
}

/// The namespace of an identity: whether it holds one decides its default deny.
pub(super) fn of_identity(
    identity: &AgentIdentity,
) -> Vec<ObjectRef<PartialObjectMeta<Namespace>>> {
    identity
        .namespace()
        .map(|namespace| ObjectRef::new(&namespace))
        .into_iter()
        .collect()
}

/// The namespace of mandate's default deny, when this is it.
pub(super) fn of_default_deny(
    policy: &PartialObjectMeta<NetworkPolicy>,
) -> Vec<ObjectRef<PartialObjectMeta<Namespace>>> {
    match (&policy.metadata.name, &policy.metadata.namespace) {
        (Some(name), Some(namespace)) if name == DEFAULT_DENY_NAME => {
            vec![ObjectRef::new(namespace)]
        }
        _ => Vec::new(),
    }
}
