//! Reconciles one DelegationPolicy: assesses it (`assess::assess_policy`: Accepted, Safe and
//! the violations whose network paths are withdrawn), writes the status that comes out when it
//! differs, and requeues at its expiry. Re-run whenever a binding or identity in its
//! namespace's delegation changes. Holds no rule.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::status;
use super::{Context, ReconcileError, Reconciling};
use crate::api::{AgentIdentity, DelegationPolicy, ToolBinding};
use crate::assess::assess_policy;
use crate::index::Stores;

const KIND: &str = "DelegationPolicy";

pub(super) async fn reconcile(
    policy: Arc<DelegationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(reconciling) = Reconciling::start(&*policy, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let assessment = assess_policy(&policy, &reconciling.authority, reconciling.now);
    status::write_if_changed::<DelegationPolicy, _>(
        &ctx,
        KIND,
        &reconciling.namespace,
        &reconciling.name,
        policy.status.as_ref(),
        &assessment.status,
    )
    .await?;
    Ok(reconciling.done(&ctx, assessment.next_change))
}

fn policies_in(stores: &Stores, namespace: &str) -> Vec<ObjectRef<DelegationPolicy>> {
    stores
        .policies
        .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Every policy in the binding's namespace: a chain's safety depends on every tool along it.
pub(super) fn affected_by_binding(
    stores: &Stores,
    binding: &ToolBinding,
) -> Vec<ObjectRef<DelegationPolicy>> {
    binding
        .namespace()
        .map(|ns| policies_in(stores, &ns))
        .unwrap_or_default()
}

/// Every policy in the identity's namespace.
pub(super) fn affected_by_identity(
    stores: &Stores,
    identity: &AgentIdentity,
) -> Vec<ObjectRef<DelegationPolicy>> {
    identity
        .namespace()
        .map(|ns| policies_in(stores, &ns))
        .unwrap_or_default()
}
