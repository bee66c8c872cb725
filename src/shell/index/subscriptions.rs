//! What each consumer of the index subscribes to: the watches, before they start, in; out, one
//! struct per consumer whose fields are its subscriptions, handed out by value. Each field is
//! minted by one `subscribe*` call in its struct's `subscribe`, so a watch has exactly as many
//! subscribers as there are fields naming it, fixed at compile time; the consumer takes the
//! struct apart and moves each field into whatever polls it. Never holds a subscription after
//! handing it out, and never subscribes to a started watch (starting one consumes it).
//!
//! A new consumer: a struct with one field per subscription and a `subscribe(&mut Watches)`
//! that fills every field, a field of that type in [`Subscriptions`] (or in the struct of the
//! consumer it belongs to), and a consumer that destructures it without `..`.

use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::core::PartialObjectMeta;

use super::pods::{PodChanges, PodPresenceChanges};
use super::watches::{Applied, Watches};
use crate::api::{AgentIdentity, DelegationPolicy, ToolBinding};

/// Changes of a kind that wake reconciles of another (or of other objects of the same kind),
/// without what the kind's first list dispatches: every object already on the API server when
/// mandate starts. Those wake nothing new: every primary object is reconciled once its own kind
/// has listed, reading an authority in which all four kinds have listed, and 10,000 such
/// redundant wake-ups per kind filled the controllers' queues (12 MB at peak with 10,000
/// agents). Later lists (after a watch fails) still pass: they may carry changes missed
/// meanwhile. Services and EndpointSlices are not filtered: a reconcile does not wait for
/// them to list, so their first list may still change a NetworkPolicy.
pub type Related<K> = BoxStream<'static, Arc<K>>;

/// Objects of a kind deleted, which shared subscriptions never carry.
pub type Deletions<K> = mpsc::UnboundedReceiver<Arc<K>>;

/// Every consumer's subscriptions. Each must be polled by its consumer (or dropped): the
/// watches never wait on a subscriber, so a subscription held but never polled grows without
/// bound.
pub struct Subscriptions {
    pub controllers: ControllerSubscriptions,
    pub snapshot: SnapshotSubscriptions,
    /// The decision service's token cache: which agent pods exist.
    pub pod_presence: PodPresenceChanges,
}

impl Subscriptions {
    pub(super) fn subscribe(watches: &mut Watches) -> Self {
        Subscriptions {
            controllers: ControllerSubscriptions::subscribe(watches),
            snapshot: SnapshotSubscriptions::subscribe(watches),
            pod_presence: watches.agent_pods.subscribe_presence(),
        }
    }
}

/// What the four controllers consume, one struct each.
pub struct ControllerSubscriptions {
    pub identity_controller: IdentityControllerSubscriptions,
    pub binding_controller: BindingControllerSubscriptions,
    pub policy_controller: PolicyControllerSubscriptions,
    pub namespace_controller: NamespaceControllerSubscriptions,
}

impl ControllerSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        ControllerSubscriptions {
            identity_controller: IdentityControllerSubscriptions::subscribe(watches),
            binding_controller: BindingControllerSubscriptions::subscribe(watches),
            policy_controller: PolicyControllerSubscriptions::subscribe(watches),
            namespace_controller: NamespaceControllerSubscriptions::subscribe(watches),
        }
    }
}

/// What wakes the AgentIdentity controller.
pub struct IdentityControllerSubscriptions {
    /// Drives the controller: every AgentIdentity.
    pub primary: Applied<AgentIdentity>,
    /// An identity's changes re-reconcile the agents delegating to or from it.
    pub identities: Related<AgentIdentity>,
    pub bindings: Related<ToolBinding>,
    pub policies: Related<DelegationPolicy>,
    /// Changes of the projections it owns, by anyone (the controller drops its own echoes).
    pub service_accounts: Related<PartialObjectMeta<ServiceAccount>>,
    pub network_policies: Related<PartialObjectMeta<NetworkPolicy>>,
    pub services: Applied<Service>,
    pub endpoint_slices: Applied<EndpointSlice>,
    pub deleted_identities: Deletions<AgentIdentity>,
    pub deleted_bindings: Deletions<ToolBinding>,
    pub deleted_policies: Deletions<DelegationPolicy>,
    pub deleted_services: Deletions<Service>,
    pub deleted_endpoint_slices: Deletions<EndpointSlice>,
    /// A deleted projection is re-created by its identity's reconcile.
    pub deleted_service_accounts: Deletions<PartialObjectMeta<ServiceAccount>>,
    pub deleted_network_policies: Deletions<PartialObjectMeta<NetworkPolicy>>,
    /// Any NetworkPolicy: one not mandate's that can select an agent's pods is reported on it.
    pub foreign_policies: Related<NetworkPolicy>,
    pub deleted_foreign_policies: Deletions<NetworkPolicy>,
    /// Identities whose pods changed (CredentialsStale).
    pub agent_pods: PodChanges,
    /// A namespace's mode label decides its identities' ServiceAccountGuarded condition.
    pub namespaces: Related<PartialObjectMeta<Namespace>>,
    /// Any RBAC change: the identities whose API rights it changes are re-assessed.
    pub rbac: RbacSubscriptions,
}

impl IdentityControllerSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        IdentityControllerSubscriptions {
            primary: watches.identities.subscribe(),
            identities: watches.identities.subscribe_related(),
            bindings: watches.bindings.subscribe_related(),
            policies: watches.policies.subscribe_related(),
            service_accounts: watches.service_accounts.subscribe_changes(),
            network_policies: watches.network_policies.subscribe_changes(),
            services: watches.services.subscribe(),
            endpoint_slices: watches.endpoint_slices.subscribe(),
            deleted_identities: watches.identities.subscribe_deletions(),
            deleted_bindings: watches.bindings.subscribe_deletions(),
            deleted_policies: watches.policies.subscribe_deletions(),
            deleted_services: watches.services.subscribe_deletions(),
            deleted_endpoint_slices: watches.endpoint_slices.subscribe_deletions(),
            deleted_service_accounts: watches.service_accounts.subscribe_deletions(),
            deleted_network_policies: watches.network_policies.subscribe_deletions(),
            foreign_policies: watches.all_network_policies.subscribe_related(),
            deleted_foreign_policies: watches.all_network_policies.subscribe_deletions(),
            agent_pods: watches.agent_pods.subscribe(),
            namespaces: watches.namespaces.subscribe_related(),
            rbac: RbacSubscriptions::subscribe(watches),
        }
    }
}

/// Changes and deletions of Roles, ClusterRoles and their bindings, after each kind's first
/// list. Consumers only need to know that RBAC changed: the rights are recomputed from the live
/// authority, which holds all of it.
pub struct RbacSubscriptions {
    pub roles: Related<Role>,
    pub cluster_roles: Related<ClusterRole>,
    pub role_bindings: Related<RoleBinding>,
    pub cluster_role_bindings: Related<ClusterRoleBinding>,
    pub deleted_roles: Deletions<Role>,
    pub deleted_cluster_roles: Deletions<ClusterRole>,
    pub deleted_role_bindings: Deletions<RoleBinding>,
    pub deleted_cluster_role_bindings: Deletions<ClusterRoleBinding>,
}

impl RbacSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        RbacSubscriptions {
            roles: watches.roles.subscribe_related(),
            cluster_roles: watches.cluster_roles.subscribe_related(),
            role_bindings: watches.role_bindings.subscribe_related(),
            cluster_role_bindings: watches.cluster_role_bindings.subscribe_related(),
            deleted_roles: watches.roles.subscribe_deletions(),
            deleted_cluster_roles: watches.cluster_roles.subscribe_deletions(),
            deleted_role_bindings: watches.role_bindings.subscribe_deletions(),
            deleted_cluster_role_bindings: watches.cluster_role_bindings.subscribe_deletions(),
        }
    }

    /// One `()` per change or deletion of any of the four kinds.
    pub fn changes(self) -> SelectAll<BoxStream<'static, ()>> {
        let RbacSubscriptions {
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
            deleted_roles,
            deleted_cluster_roles,
            deleted_role_bindings,
            deleted_cluster_role_bindings,
        } = self;
        futures::stream::select_all([
            roles.map(|_| ()).boxed(),
            cluster_roles.map(|_| ()).boxed(),
            role_bindings.map(|_| ()).boxed(),
            cluster_role_bindings.map(|_| ()).boxed(),
            deleted_roles.map(|_| ()).boxed(),
            deleted_cluster_roles.map(|_| ()).boxed(),
            deleted_role_bindings.map(|_| ()).boxed(),
            deleted_cluster_role_bindings.map(|_| ()).boxed(),
        ])
    }
}

/// What wakes the namespace controller (the default deny of each namespace).
pub struct NamespaceControllerSubscriptions {
    /// Drives the controller: every Namespace (its mode label decides the default deny).
    pub primary: Applied<PartialObjectMeta<Namespace>>,
    /// Whether a namespace holds an identity decides it too.
    pub identities: Related<AgentIdentity>,
    pub deleted_identities: Deletions<AgentIdentity>,
    /// Changes of mandate's NetworkPolicies by anyone (the default deny among them), so one
    /// changed or deleted is restored at once.
    pub network_policies: Related<PartialObjectMeta<NetworkPolicy>>,
    pub deleted_network_policies: Deletions<PartialObjectMeta<NetworkPolicy>>,
}

impl NamespaceControllerSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        NamespaceControllerSubscriptions {
            primary: watches.namespaces.subscribe(),
            identities: watches.identities.subscribe_related(),
            deleted_identities: watches.identities.subscribe_deletions(),
            network_policies: watches.network_policies.subscribe_changes(),
            deleted_network_policies: watches.network_policies.subscribe_deletions(),
        }
    }
}

/// What wakes the ToolBinding controller.
pub struct BindingControllerSubscriptions {
    /// Drives the controller: every ToolBinding.
    pub primary: Applied<ToolBinding>,
    /// An identity's changes re-validate its ToolBindings.
    pub identities: Related<AgentIdentity>,
    pub deleted_identities: Deletions<AgentIdentity>,
}

impl BindingControllerSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        BindingControllerSubscriptions {
            primary: watches.bindings.subscribe(),
            identities: watches.identities.subscribe_related(),
            deleted_identities: watches.identities.subscribe_deletions(),
        }
    }
}

/// What wakes the DelegationPolicy controller.
pub struct PolicyControllerSubscriptions {
    /// Drives the controller: every DelegationPolicy.
    pub primary: Applied<DelegationPolicy>,
    /// An identity's changes re-validate the DelegationPolicies naming it.
    pub identities: Related<AgentIdentity>,
    pub bindings: Related<ToolBinding>,
    pub deleted_identities: Deletions<AgentIdentity>,
    pub deleted_bindings: Deletions<ToolBinding>,
}

impl PolicyControllerSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        PolicyControllerSubscriptions {
            primary: watches.policies.subscribe(),
            identities: watches.identities.subscribe_related(),
            bindings: watches.bindings.subscribe_related(),
            deleted_identities: watches.identities.subscribe_deletions(),
            deleted_bindings: watches.bindings.subscribe_deletions(),
        }
    }
}

/// What the admission snapshot publisher consumes: every kind admission decisions read.
pub struct SnapshotSubscriptions {
    pub identities: Applied<AgentIdentity>,
    pub bindings: Applied<ToolBinding>,
    pub policies: Applied<DelegationPolicy>,
    pub service_accounts: mpsc::UnboundedReceiver<()>,
    pub namespaces: Applied<PartialObjectMeta<Namespace>>,
    pub secrets: Applied<PartialObjectMeta<Secret>>,
    /// RBAC changes: a new dangerous grant reaches admission within one snapshot refresh.
    pub rbac: RbacSubscriptions,
}

impl SnapshotSubscriptions {
    fn subscribe(watches: &mut Watches) -> Self {
        SnapshotSubscriptions {
            identities: watches.identities.subscribe(),
            bindings: watches.bindings.subscribe(),
            policies: watches.policies.subscribe(),
            service_accounts: watches.service_accounts.subscribe_pings(),
            namespaces: watches.namespaces.subscribe(),
            secrets: watches.secrets.subscribe(),
            rbac: RbacSubscriptions::subscribe(watches),
        }
    }

    /// One `()` per change of any kind the snapshot is built from.
    pub fn changes(self) -> SelectAll<BoxStream<'static, ()>> {
        let SnapshotSubscriptions {
            identities,
            bindings,
            policies,
            service_accounts,
            namespaces,
            secrets,
            rbac,
        } = self;
        futures::stream::select_all([
            identities.map(|_| ()).boxed(),
            bindings.map(|_| ()).boxed(),
            policies.map(|_| ()).boxed(),
            service_accounts.boxed(),
            namespaces.map(|_| ()).boxed(),
            secrets.map(|_| ()).boxed(),
            rbac.changes().boxed(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::Stream;
    use kube::ResourceExt;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::index::Listed;

    fn identity(name: &str) -> AgentIdentity {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"owner": {"kind": "User", "name": "alice"}, "purpose": "test"}
        }))
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The names `objects` yields until it ends.
    async fn names<K: kube::Resource>(objects: impl Stream<Item = Arc<K>>) -> Vec<String> {
        tokio::time::timeout(
            Duration::from_secs(1),
            objects.map(|object| object.name_any()).collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_else(|_| panic!("the subscription did not end"))
    }

    #[tokio::test]
    async fn every_consumer_subscribed_to_identities_gets_every_identity_change_and_deletion() {
        let listed = Listed::new();
        let mut watches = Watches::new(&listed);
        let Subscriptions {
            controllers,
            snapshot,
            pod_presence: _,
        } = Subscriptions::subscribe(&mut watches);
        let events = [
            Event::Init,
            Event::InitDone,
            Event::Apply(identity("planner")),
            Event::Delete(identity("retired")),
        ];
        let started = watches.identities.start(
            futures::stream::iter(events.into_iter().map(Ok)),
            None,
            |_| {},
        );
        started.run.await;

        let ControllerSubscriptions {
            identity_controller,
            binding_controller,
            policy_controller,
            namespace_controller,
        } = controllers;
        let changes = [
            identity_controller.primary.boxed(),
            identity_controller.identities,
            binding_controller.identities,
            policy_controller.identities,
            namespace_controller.identities,
            snapshot.identities.boxed(),
        ];
        for subscription in changes {
            assert_eq!(names(subscription).await, ["planner"]);
        }
        let deletions = [
            identity_controller.deleted_identities,
            binding_controller.deleted_identities,
            policy_controller.deleted_identities,
            namespace_controller.deleted_identities,
        ];
        for deleted in deletions {
            assert_eq!(names(deleted).await, ["retired"]);
        }
    }
}
