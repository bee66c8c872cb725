//! The controllers: watch events in, server-side applied projections, statuses and events out.
//! The only place that writes to the API server. Each reconcile is a thin shell around one pure
//! assessment per kind (`crate::assess`) and holds no rule of its own:
//!
//! fetch (stores, authority snapshot) -> assess (pure) -> apply projections -> write status ->
//! publish events -> requeue at the assessment's next change

mod binding;
mod error;
pub(crate) mod events;
mod identity;
mod namespace;
mod policy;
mod projection;
mod rights;
mod status;
mod triggers;

pub use error::ReconcileError;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config as ControllerConfig, Error as ControllerError};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;

use crate::authority;
use crate::index::{
    BindingControllerSubscriptions, ControllerSubscriptions, IdentityControllerSubscriptions,
    NamespaceControllerSubscriptions, PolicyControllerSubscriptions, Stores,
};
use crate::project::{NetworkConfig, TrustDomain};
use crate::telemetry::{Metrics, ReconcileResult};

/// What the controllers need to know besides the cluster's state.
#[derive(Debug, Clone)]
pub struct Settings {
    pub trust_domain: TrustDomain,
    pub network: NetworkConfig,
    pub authority: authority::Config,
    /// How often an unchanged object is reconciled anyway, to repair drift nobody reported.
    pub resync: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trust_domain: TrustDomain::default(),
            network: NetworkConfig::default(),
            authority: authority::Config::default(),
            resync: Duration::from_secs(300),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub settings: Settings,
    events: Arc<events::EventPublisher>,
    pub metrics: Metrics,
    /// Whether this replica holds the leader Lease. Every replica runs the controllers (so the
    /// shared watches never wait on an idle subscriber) but only the leader writes.
    pub leader: watch::Receiver<bool>,
    /// What mandate last applied to each projection, so unchanged ones are not applied again.
    applied: projection::Applied,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        metrics: Metrics,
        leader: watch::Receiver<bool>,
    ) -> Self {
        Context {
            events: Arc::new(events::EventPublisher::new(client.clone())),
            client,
            stores,
            settings,
            metrics,
            leader,
            applied: projection::Applied::default(),
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

/// Fires each time this replica becomes the leader, so the new leader reconciles everything
/// it ignored as a follower.
fn on_becoming_leader(leader: watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(leader, |mut leader| async move {
        loop {
            leader.changed().await.ok()?;
            if *leader.borrow_and_update() {
                return Some(((), leader));
            }
        }
    })
}

/// Objects to reconcile because `deleted` objects are gone: shared subscriptions carry only
/// applied objects, so deletions arrive on channels of their own and go through the same
/// mappers as changes.
fn on_deletion<D, K>(
    deleted: futures::channel::mpsc::UnboundedReceiver<Arc<D>>,
    stores: &Stores,
    affected: fn(&Stores, &D) -> Vec<ObjectRef<K>>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    D: Send + Sync + 'static,
    K: kube::Resource + Send + 'static,
    K::DynamicType: Send,
{
    let stores = stores.clone();
    deleted.flat_map(move |object| futures::stream::iter(affected(&stores, &object)))
}

/// The current instant as the pure modules take it.
pub(crate) fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Reconciles in flight per controller. Each reconcile mostly waits on the API server, which
/// the bare-client comparison in `make bench-reconcile` drives with 16 requests in flight.
const CONCURRENCY: u16 = 16;

/// Runs the four controllers until `shutdown` resolves. The stores must be fed by the
/// index's watches, which the caller polls. Every subscription is moved into the controller
/// it wakes, which polls it from the start: the patterns below name every field, so one the
/// index adds cannot be left unconsumed here without a compile error.
pub async fn run(
    ctx: Arc<Context>,
    subscriptions: ControllerSubscriptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let ControllerSubscriptions {
        identity_controller: identity_subscriptions,
        binding_controller: binding_subscriptions,
        policy_controller: policy_subscriptions,
        namespace_controller: namespace_subscriptions,
    } = subscriptions;
    let config = ControllerConfig::default().concurrency(CONCURRENCY);
    let stores = ctx.stores.clone();
    let identity_changes = |objects| {
        triggers::spec_changes(
            objects,
            stores.identities.clone(),
            stores.identity_relists.clone(),
        )
    };
    let binding_changes = |objects| {
        triggers::spec_changes(
            objects,
            stores.bindings.clone(),
            stores.binding_relists.clone(),
        )
    };
    let policy_changes = |objects| {
        triggers::spec_changes(
            objects,
            stores.policies.clone(),
            stores.policy_relists.clone(),
        )
    };

    let identity_controller = {
        let IdentityControllerSubscriptions {
            primary,
            identities,
            bindings,
            policies,
            service_accounts,
            network_policies,
            services,
            endpoint_slices,
            deleted_identities,
            deleted_bindings,
            deleted_policies,
            deleted_services,
            deleted_endpoint_slices,
            deleted_service_accounts,
            deleted_network_policies,
            foreign_policies,
            deleted_foreign_policies,
            agent_pods,
            namespaces,
            rbac,
        } = identity_subscriptions;
        Controller::for_shared_stream(identity_changes(primary.boxed()), stores.identities.clone())
            .with_config(config.clone())
            // Not `owns_shared_stream`: that follows ownerReferences only, and a projection
            // whose ownerReferences someone removed must still wake its identity.
            .watches_shared_stream(ctx.applied.without_echoes(service_accounts), {
                let stores = stores.clone();
                move |projection| identity::owner_of(&stores, &*projection)
            })
            .watches_shared_stream(ctx.applied.without_echoes(network_policies), {
                let stores = stores.clone();
                move |projection| identity::owner_of(&stores, &*projection)
            })
            .watches_shared_stream(binding_changes(bindings), {
                let stores = stores.clone();
                move |binding| identity::affected_by_binding(&stores, &binding)
            })
            .watches_shared_stream(policy_changes(policies), {
                let stores = stores.clone();
                move |policy| identity::affected_by_policy(&stores, &policy)
            })
            .watches_shared_stream(identity_changes(identities), {
                let stores = stores.clone();
                move |other| identity::affected_by_identity(&stores, &other)
            })
            .watches_shared_stream(services, {
                let stores = stores.clone();
                move |service| identity::affected_by_service(&stores, &service)
            })
            .watches_shared_stream(endpoint_slices, {
                let stores = stores.clone();
                move |slice| identity::affected_by_endpoint_slice(&stores, &slice)
            })
            .reconcile_on(on_deletion(
                deleted_bindings,
                &stores,
                identity::affected_by_binding,
            ))
            .reconcile_on(on_deletion(
                deleted_policies,
                &stores,
                identity::affected_by_policy,
            ))
            .reconcile_on(on_deletion(
                deleted_identities,
                &stores,
                identity::affected_by_identity,
            ))
            .reconcile_on(on_deletion(
                deleted_services,
                &stores,
                identity::affected_by_service,
            ))
            .reconcile_on(on_deletion(
                deleted_endpoint_slices,
                &stores,
                identity::affected_by_endpoint_slice,
            ))
            .reconcile_on(on_deletion(
                deleted_service_accounts,
                &stores,
                identity::owner_of,
            ))
            .reconcile_on(on_deletion(
                deleted_network_policies,
                &stores,
                identity::owner_of,
            ))
            .watches_shared_stream(foreign_policies, {
                let stores = stores.clone();
                move |policy| identity::affected_by_network_policy(&stores, &policy)
            })
            .reconcile_on(on_deletion(
                deleted_foreign_policies,
                &stores,
                identity::affected_by_network_policy,
            ))
            // Pods that appear, go or change their credentials: CredentialsStale.
            .reconcile_on(agent_pods)
            .watches_shared_stream(triggers::opt_in_changes(namespaces), {
                let stores = stores.clone();
                move |namespace| identity::in_namespace(&stores, &namespace)
            })
            // Batched: RBAC changes wake only the identities whose API rights they change.
            .reconcile_on(rights::affected_by_rbac(
                rbac.changes(),
                stores.authority.clone(),
            ))
            .reconcile_all_on(on_becoming_leader(ctx.leader.clone()))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                identity::reconcile,
                error_policy("AgentIdentity"),
                ctx.clone(),
            )
            .for_each(|outcome| log_outcome("AgentIdentity", outcome))
    };

    let binding_controller = {
        let BindingControllerSubscriptions {
            primary,
            identities,
            deleted_identities,
        } = binding_subscriptions;
        Controller::for_shared_stream(binding_changes(primary.boxed()), stores.bindings.clone())
            .with_config(config.clone())
            .watches_shared_stream(identity_changes(identities), {
                let stores = stores.clone();
                move |identity| binding::affected_by_identity(&stores, &identity)
            })
            .reconcile_on(on_deletion(
                deleted_identities,
                &stores,
                binding::affected_by_identity,
            ))
            .reconcile_all_on(on_becoming_leader(ctx.leader.clone()))
            .graceful_shutdown_on(shutdown.clone())
            .run(binding::reconcile, error_policy("ToolBinding"), ctx.clone())
            .for_each(|outcome| log_outcome("ToolBinding", outcome))
    };

    let policy_controller = {
        let PolicyControllerSubscriptions {
            primary,
            identities,
            bindings,
            deleted_identities,
            deleted_bindings,
        } = policy_subscriptions;
        Controller::for_shared_stream(policy_changes(primary.boxed()), stores.policies.clone())
            .with_config(config)
            .watches_shared_stream(binding_changes(bindings), {
                let stores = stores.clone();
                move |binding| policy::affected_by_binding(&stores, &binding)
            })
            .watches_shared_stream(identity_changes(identities), {
                let stores = stores.clone();
                move |identity| policy::affected_by_identity(&stores, &identity)
            })
            .reconcile_on(on_deletion(
                deleted_bindings,
                &stores,
                policy::affected_by_binding,
            ))
            .reconcile_on(on_deletion(
                deleted_identities,
                &stores,
                policy::affected_by_identity,
            ))
            .reconcile_all_on(on_becoming_leader(ctx.leader.clone()))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                policy::reconcile,
                error_policy("DelegationPolicy"),
                ctx.clone(),
            )
            .for_each(|outcome| log_outcome("DelegationPolicy", outcome))
    };

    // The default deny of each namespace: its mode label and whether it holds an identity.
    let namespace_controller = {
        let NamespaceControllerSubscriptions {
            primary,
            identities,
            deleted_identities,
            network_policies,
            deleted_network_policies,
        } = namespace_subscriptions;
        Controller::for_shared_stream(primary, stores.namespaces.clone())
            .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
            .watches_shared_stream(identities, |identity| namespace::of_identity(&identity))
            .reconcile_on(on_deletion(deleted_identities, &stores, |_, identity| {
                namespace::of_identity(identity)
            }))
            .watches_shared_stream(ctx.applied.without_echoes(network_policies), |policy| {
                namespace::of_default_deny(&policy)
            })
            .reconcile_on(on_deletion(
                deleted_network_policies,
                &stores,
                |_, policy| namespace::of_default_deny(policy),
            ))
            .reconcile_all_on(on_becoming_leader(ctx.leader.clone()))
            .graceful_shutdown_on(shutdown)
            .run(namespace::reconcile, error_policy("Namespace"), ctx)
            .for_each(|outcome| log_outcome("Namespace", outcome))
    };

    tokio::join!(
        identity_controller,
        binding_controller,
        policy_controller,
        namespace_controller
    );
}

/// What a controller yields for each request: the reconciled object at debug level, and at
/// warn what kube's runtime could not do (a trigger naming an object its store lacks, a
/// trigger stream's error), which would otherwise vanish without a trace.
fn log_outcome<K, QueueError>(
    kind: &'static str,
    outcome: Result<(ObjectRef<K>, Action), ControllerError<ReconcileError, QueueError>>,
) -> futures::future::Ready<()>
where
    K: kube::Resource,
    K::DynamicType: std::fmt::Debug,
    QueueError: std::error::Error,
{
    match outcome {
        Ok((object, action)) => tracing::debug!(kind, %object, ?action, "reconciled"),
        // `error_policy` has logged it.
        Err(ControllerError::ReconcilerFailed(..)) => {}
        // Deleted between its trigger and its reconcile: nothing to do.
        Err(ControllerError::ObjectNotFound(object)) => {
            tracing::debug!(kind, %object, "gone before its reconcile");
        }
        Err(error) => tracing::warn!(kind, %error, "controller"),
    }
    futures::future::ready(())
}

/// Invalid specs wait for a change (a status condition already says why); API errors back off
/// and retry.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |_object, error, ctx| {
        ctx.metrics
            .record_reconcile(kind, ReconcileResult::Error, Duration::ZERO);
        if error.is_permanent() {
            tracing::info!(kind, %error, "waiting for a change");
            Action::requeue(ctx.settings.resync)
        } else {
            tracing::warn!(kind, %error, "reconcile failed; retrying");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// A reconcile under way on the leader: the object's name and namespace, the instant it is
/// judged at, and the live authority as of (at least) the event that triggered it.
pub(crate) struct Reconciling {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) now: k8s_openapi::jiff::Timestamp,
    pub(crate) authority: crate::authority::Authority,
    timer: Timer,
}

impl Reconciling {
    /// `None` on a follower, which only keeps its watches moving; the leader writes.
    // The error is built at most once per reconcile; boxing it would buy nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn start<K: kube::ResourceExt>(
        object: &K,
        kind: &'static str,
        ctx: &Context,
    ) -> Result<Option<Reconciling>, ReconcileError> {
        if !ctx.is_leader() {
            return Ok(None);
        }
        let timer = Timer::start(kind);
        let name = object.name_any();
        let Some(namespace) = object.namespace() else {
            return Err(ReconcileError::MissingNamespace { kind, name });
        };
        let authority = ctx.stores.authority.current().await.map_err(|source| {
            ReconcileError::ReadAuthority {
                kind,
                name: name.clone(),
                source,
            }
        })?;
        Ok(Some(Reconciling {
            name,
            namespace,
            now: now(),
            authority,
            timer,
        }))
    }

    /// Records the reconcile as a success and requeues it at the assessment's next change
    /// (or the resync period, whichever comes first).
    pub(crate) fn done(
        &self,
        ctx: &Context,
        next_change: Option<k8s_openapi::jiff::Timestamp>,
    ) -> Action {
        self.timer.finish(&ctx.metrics);
        Action::requeue(status::requeue_after(
            next_change,
            self.now,
            ctx.settings.resync,
        ))
    }
}

/// Times a reconcile and records its outcome.
pub(crate) struct Timer {
    kind: &'static str,
    started: Instant,
}

impl Timer {
    pub(crate) fn start(kind: &'static str) -> Self {
        Timer {
            kind,
            started: Instant::now(),
        }
    }

    pub(crate) fn finish(&self, metrics: &Metrics) {
        metrics.record_reconcile(self.kind, ReconcileResult::Success, self.started.elapsed());
    }
}
