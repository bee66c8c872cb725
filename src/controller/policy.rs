//! Reconciles one DelegationPolicy's status: validated against its namespace's authority
//! (Accepted) and checked for escalation paths, cycles and depth violations (Safe), re-checked
//! whenever a binding or identity in its namespace's delegation changes and at its expiry.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::status::{self, requeue_after};
use super::{Context, ReconcileError, Scope};
use crate::api::conditions::{self, ACCEPTED, SAFE};
use crate::api::{AgentIdentity, DelegationPolicy, DelegationPolicyStatus, ToolBinding};
use crate::index::Stores;

const KIND: &str = "DelegationPolicy";

pub(super) async fn reconcile(
    policy: Arc<DelegationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(scope) = Scope::of(&*policy, KIND, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let (name, namespace, now, authority) =
        (&scope.name, &scope.namespace, scope.now, &scope.authority);
    let findings = authority.validate_policy(&policy, now);
    let graph = authority.delegation_graph(namespace, now);
    let violations = graph.policy_violations(name);
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.meta().generation;
    let stamp = Time(now);
    let mut conditions_now = previous.conditions.clone();
    let (accepted_reason, accepted_message) = status::accepted(&findings, "policy");
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
    let expired = policy.spec.valid_until.as_ref().is_some_and(|t| t.0 <= now);
    let (safe_reason, safe_message) = if expired {
        (
            "Expired",
            "validUntil has passed; the policy grants nothing".to_owned(),
        )
    } else if violations.is_empty() {
        (
            "NoViolation",
            "no escalation path, cycle or depth violation".to_owned(),
        )
    } else {
        (
            "Violations",
            format!("network paths withdrawn: {}", violations.join("; ")),
        )
    };
    conditions::set(
        &mut conditions_now,
        conditions::new(
            SAFE,
            violations.is_empty(),
            safe_reason,
            safe_message,
            generation,
            stamp,
        ),
    );
    let status = DelegationPolicyStatus {
        observed_generation: generation,
        conditions: conditions_now,
        violations,
    };
    status::write_if_changed::<DelegationPolicy, _>(
        &ctx,
        KIND,
        namespace,
        name,
        policy.status.as_ref(),
        &status,
    )
    .await?;
    scope.finish(&ctx.metrics);
    let next = policy
        .spec
        .valid_until
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > now);
    Ok(Action::requeue(requeue_after(
        next,
        now,
        ctx.settings.resync,
    )))
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
