//! Reconciles one ToolBinding's status: validated against its namespace's authority, its phase
//! (Pending, Active, Expired, Invalid), expiry and conditions; requeued at its next window edge.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::status::{self, requeue_after};
use super::{Context, ReconcileError, Scope};
use crate::api::conditions::{self, ACCEPTED, ACTIVE};
use crate::api::{AgentIdentity, ToolBinding, ToolBindingPhase, ToolBindingStatus};
use crate::authority::BindingWindow;
use crate::index::Stores;

const KIND: &str = "ToolBinding";

pub(super) async fn reconcile(
    binding: Arc<ToolBinding>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(scope) = Scope::of(&*binding, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let (name, namespace, now, authority) =
        (&scope.name, &scope.namespace, scope.now, &scope.authority);
    let findings = authority.validate_binding(&binding, now);
    let phase = if findings.is_empty() {
        binding.window_phase(now)
    } else {
        ToolBindingPhase::Invalid
    };
    let previous = binding.status.clone().unwrap_or_default();
    let generation = binding.meta().generation;
    let stamp = Time(now);
    let mut conditions_now = previous.conditions.clone();
    let (accepted_reason, accepted_message) = status::accepted(&findings, "binding");
    conditions::set(
        &mut conditions_now,
        conditions::new(
            ACCEPTED,
            findings.is_empty(),
            accepted_reason,
            accepted_message,
            generation,
            stamp.clone(),
        ),
    );
    let (active_reason, active_message) = match phase {
        ToolBindingPhase::Active => ("WithinWindow", "the tools are live"),
        ToolBindingPhase::Pending => ("NotYetValid", "validFrom lies ahead"),
        ToolBindingPhase::Expired => ("Expired", "validUntil has passed; the tools are withdrawn"),
        ToolBindingPhase::Invalid => ("Invalid", "the binding grants nothing until it is fixed"),
    };
    conditions::set(
        &mut conditions_now,
        conditions::new(
            ACTIVE,
            phase == ToolBindingPhase::Active,
            active_reason,
            active_message,
            generation,
            stamp,
        ),
    );
    let status = ToolBindingStatus {
        phase: Some(phase),
        expires_at: binding.spec.valid_until.clone(),
        observed_generation: generation,
        conditions: conditions_now,
    };
    status::write_if_changed::<ToolBinding, _>(
        &ctx,
        KIND,
        namespace,
        name,
        binding.status.as_ref(),
        &status,
    )
    .await?;
    scope.finish(&ctx.metrics);
    let next = [
        binding.spec.valid_from.as_ref(),
        binding.spec.valid_until.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|t| t.0)
    .filter(|t| *t > now)
    .min();
    Ok(Action::requeue(requeue_after(
        next,
        now,
        ctx.settings.resync,
    )))
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
