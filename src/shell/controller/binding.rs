//! Reconciles one ToolBinding: assesses it (`assess::assess_binding`), writes the status that
//! comes out when it differs, and requeues at its next window edge. Holds no rule.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::status;
use super::{Context, ReconcileError, Reconciling};
use crate::api::{AgentIdentity, ToolBinding};
use crate::assess::assess_binding;
use crate::index::Stores;

const KIND: &str = "ToolBinding";

pub(super) async fn reconcile(
    binding: Arc<ToolBinding>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(reconciling) = Reconciling::start(&*binding, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let assessment = assess_binding(&binding, &reconciling.authority, reconciling.now);
    status::write_if_changed::<ToolBinding, _>(
        &ctx,
        KIND,
        &reconciling.namespace,
        &reconciling.name,
        binding.status.as_ref(),
        &assessment.status,
    )
    .await?;
    Ok(reconciling.done(&ctx, assessment.next_change))
}

/// The bindings granting to an identity: its existence and class decide their validity.
pub(super) fn affected_by_identity(
    stores: &Stores,
    identity: &AgentIdentity,
) -> Vec<ObjectRef<ToolBinding>> {
    let Some(namespace) = identity.namespace() else {
        return Vec::new();
    };
    let name = identity.name_any();
    stores
        .bindings
        .state_filter(|b| {
            b.metadata.namespace.as_deref() == Some(namespace.as_str()) && b.spec.agent == name
        })
        .iter()
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}
