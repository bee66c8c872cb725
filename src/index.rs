//! The reflector-backed view of the cluster that the controllers, the webhook and the CLI read:
//! one shared watch per kind (mandate's three kinds, ServiceAccounts, Namespaces and Secrets as
//! metadata only, Services, EndpointSlices), readable stores, and subscriptions that trigger
//! reconciles. This module watches; it never writes to the API server.

use std::sync::Arc;

use std::collections::BTreeSet;

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::{AgentIdentity, DelegationPolicy, MANAGED_BY_LABEL, MANAGER, ToolBinding};
use crate::authority::{self, Authority};
use crate::project::ServiceDirectory;

/// Which watches have finished their first list. Tracked from the watch events themselves:
/// kube's `Store::wait_until_ready` wakes only one waiter, and the controllers already wait on
/// it, so a second waiter (readiness) could sleep forever.
#[derive(Clone)]
pub struct Listed {
    kinds: Arc<watch::Sender<BTreeSet<String>>>,
}

impl Listed {
    fn new() -> Self {
        Listed {
            kinds: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }

    fn mark(&self, kind: &str) {
        self.kinds
            .send_if_modified(|kinds| kinds.insert(kind.to_owned()));
    }

    /// Waits until every one of `WATCHED_KINDS` has listed once.
    pub async fn wait_all(&self) {
        let mut rx = self.kinds.subscribe();
        let _ = rx
            .wait_for(|kinds| WATCHED_KINDS.iter().all(|k| kinds.contains(*k)))
            .await;
    }

    /// The kinds that have not listed yet, for the readiness message.
    pub fn missing(&self) -> Vec<&'static str> {
        let kinds = self.kinds.borrow();
        WATCHED_KINDS
            .iter()
            .copied()
            .filter(|k| !kinds.contains(*k))
            .collect()
    }
}

/// Every kind `build` watches.
pub const WATCHED_KINDS: [&str; 9] = [
    "AgentIdentity",
    "ToolBinding",
    "DelegationPolicy",
    "ServiceAccount",
    "NetworkPolicy",
    "Namespace",
    "Secret",
    "Service",
    "EndpointSlice",
];

/// How many consumers a watch serves: subscribers to its applied objects, and receivers of
/// its deletions (shared subscriptions never see deletions).
#[derive(Clone, Copy)]
struct Fan {
    subscribers: usize,
    deletions: usize,
}

impl Fan {
    fn new(subscribers: usize, deletions: usize) -> Self {
        Fan {
            subscribers,
            deletions,
        }
    }
}

const DELETIONS_AGENTIDENTITY: usize = 3;
const DELETIONS_TOOLBINDING: usize = 2;
const DELETIONS_DELEGATIONPOLICY: usize = 1;
const DELETIONS_SERVICEACCOUNT: usize = 0;
const DELETIONS_NETWORKPOLICY: usize = 0;
const DELETIONS_NAMESPACE: usize = 0;
const DELETIONS_SECRET: usize = 0;
const DELETIONS_SERVICE: usize = 1;
const DELETIONS_ENDPOINTSLICE: usize = 1;

/// Buffer of each shared stream: how many events a slow subscriber may lag behind.
const SUBSCRIBER_BUFFER: usize = 65536;

/// The readable side of every watch.
#[derive(Clone)]
pub struct Stores {
    pub identities: Store<AgentIdentity>,
    pub bindings: Store<ToolBinding>,
    pub policies: Store<DelegationPolicy>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
}

/// Subscriptions to the shared watches, one per consumer. Every handle must be polled by its
/// consumer: a shared watch waits for its slowest subscriber, so a forgotten handle would stall
/// it. Named fields (rather than a pool) make each consumer's share explicit.
pub struct Handles {
    pub controllers: ControllerHandles,
    pub snapshot: SnapshotHandles,
}

/// What the three controllers consume.
pub struct ControllerHandles {
    /// Drives the AgentIdentity controller.
    pub identities: ReflectHandle<AgentIdentity>,
    /// Identity changes re-reconcile the agents delegating to or from it.
    pub identities_for_identities: ReflectHandle<AgentIdentity>,
    /// Identity changes re-validate their ToolBindings.
    pub identities_for_bindings: ReflectHandle<AgentIdentity>,
    /// Identity changes re-validate the DelegationPolicies naming them.
    pub identities_for_policies: ReflectHandle<AgentIdentity>,
    /// Drives the ToolBinding controller.
    pub bindings: ReflectHandle<ToolBinding>,
    pub bindings_for_identities: ReflectHandle<ToolBinding>,
    pub bindings_for_policies: ReflectHandle<ToolBinding>,
    /// Drives the DelegationPolicy controller.
    pub policies: ReflectHandle<DelegationPolicy>,
    pub policies_for_identities: ReflectHandle<DelegationPolicy>,
    pub service_accounts_for_identities: ReflectHandle<PartialObjectMeta<ServiceAccount>>,
    pub network_policies_for_identities: ReflectHandle<PartialObjectMeta<NetworkPolicy>>,
    pub services_for_identities: ReflectHandle<Service>,
    pub endpoint_slices_for_identities: ReflectHandle<EndpointSlice>,
    /// Deletions, which the subscriptions above do not carry.
    pub deleted_identities_for_identities: mpsc::UnboundedReceiver<Arc<AgentIdentity>>,
    pub deleted_identities_for_bindings: mpsc::UnboundedReceiver<Arc<AgentIdentity>>,
    pub deleted_identities_for_policies: mpsc::UnboundedReceiver<Arc<AgentIdentity>>,
    pub deleted_bindings_for_identities: mpsc::UnboundedReceiver<Arc<ToolBinding>>,
    pub deleted_bindings_for_policies: mpsc::UnboundedReceiver<Arc<ToolBinding>>,
    pub deleted_policies_for_identities: mpsc::UnboundedReceiver<Arc<DelegationPolicy>>,
    pub deleted_services_for_identities: mpsc::UnboundedReceiver<Arc<Service>>,
    pub deleted_endpoint_slices_for_identities: mpsc::UnboundedReceiver<Arc<EndpointSlice>>,
}

/// What the snapshot publisher consumes: every kind admission decisions read.
pub struct SnapshotHandles {
    pub identities: ReflectHandle<AgentIdentity>,
    pub bindings: ReflectHandle<ToolBinding>,
    pub policies: ReflectHandle<DelegationPolicy>,
    pub service_accounts: ReflectHandle<PartialObjectMeta<ServiceAccount>>,
    pub namespaces: ReflectHandle<PartialObjectMeta<Namespace>>,
    pub secrets: ReflectHandle<PartialObjectMeta<Secret>>,
}

impl SnapshotHandles {
    /// One `()` per change of any kind the snapshot is built from.
    pub fn changes(self) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, ()>> {
        futures::stream::select_all([
            self.identities.map(|_| ()).boxed(),
            self.bindings.map(|_| ()).boxed(),
            self.policies.map(|_| ()).boxed(),
            self.service_accounts.map(|_| ()).boxed(),
            self.namespaces.map(|_| ()).boxed(),
            self.secrets.map(|_| ()).boxed(),
        ])
    }
}

/// Everything `build` returns: the stores, the subscriptions, and the watch streams, which
/// must be polled (spawn them) for any of it to move.
pub struct Index {
    pub stores: Stores,
    pub handles: Handles,
    pub watches: Vec<futures::future::BoxFuture<'static, ()>>,
    /// Which watches have listed; readiness waits on it.
    pub listed: Listed,
}

struct Shared<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    reader: Store<K>,
    handles: Vec<ReflectHandle<K>>,
    deleted: Vec<mpsc::UnboundedReceiver<Arc<K>>>,
    watch: futures::future::BoxFuture<'static, ()>,
}

/// Drops what no decision reads before an object enters a store: managedFields (a JSON tree
/// per field manager, often larger than the object) and kubectl's last-applied copy of the
/// whole object. With 10,000 identities these dominated the operator's memory.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation client-side `kubectl apply` keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn shared<K, S>(events: S, fan: Fan, listed: &Listed) -> Shared<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    let (reader, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    // A writer made by store_shared always hands out subscriptions.
    let handles = (0..fan.subscribers)
        .filter_map(|_| writer.subscribe())
        .collect();
    let (deletion_senders, deleted): (Vec<_>, Vec<_>) =
        (0..fan.deletions).map(|_| mpsc::unbounded()).unzip();
    let listed = listed.clone();
    let watch = events
        .default_backoff()
        .modify(slim)
        .reflect_shared(writer)
        .for_each(move |event| {
            match event {
                Err(error) => {
                    tracing::warn!(%error, kind = %K::kind(&Default::default()), "watch failed; retrying")
                }
                Ok(watcher::Event::InitDone) => {
                    let kind = K::kind(&Default::default()).into_owned();
                    tracing::debug!(%kind, "listed");
                    listed.mark(&kind);
                }
                Ok(watcher::Event::Delete(object)) => {
                    let object = Arc::new(object);
                    for sender in &deletion_senders {
                        let _ = sender.unbounded_send(object.clone());
                    }
                }
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .boxed();
    Shared {
        reader,
        handles,
        deleted,
        watch,
    }
}

impl<K: Resource + Clone + 'static> Shared<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// One of the subscriptions made in `shared`; `build` takes exactly as many as it made.
    /// One of the deletion receivers made in `shared`.
    fn take_deleted(&mut self) -> mpsc::UnboundedReceiver<Arc<K>> {
        self.deleted
            .pop()
            .expect("build() takes exactly as many deletion receivers as it creates")
    }

    fn take(&mut self) -> ReflectHandle<K> {
        self.handles
            .pop()
            .expect("build() takes exactly as many subscriptions as it creates")
    }
}

fn typed<K>(client: &Client, config: watcher::Config, fan: Fan, listed: &Listed) -> Shared<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    shared(watcher(Api::<K>::all(client.clone()), config), fan, listed)
}

fn metadata<K>(
    client: &Client,
    config: watcher::Config,
    fan: Fan,
    listed: &Listed,
) -> Shared<PartialObjectMeta<K>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // An Api of PartialObjectMeta makes metadata-only requests.
    shared(
        watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config),
        fan,
        listed,
    )
}

/// Builds the watches (poll `Index::watches` to run them) and their subscriptions.
pub fn build(client: &Client) -> Index {
    let listed = Listed::new();
    let all = watcher::Config::default;
    let managed = || watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));

    let mut identities =
        typed::<AgentIdentity>(client, all(), Fan::new(5, DELETIONS_AGENTIDENTITY), &listed);
    let mut bindings =
        typed::<ToolBinding>(client, all(), Fan::new(4, DELETIONS_TOOLBINDING), &listed);
    let mut policies = typed::<DelegationPolicy>(
        client,
        all(),
        Fan::new(3, DELETIONS_DELEGATIONPOLICY),
        &listed,
    );
    let mut service_accounts = metadata::<ServiceAccount>(
        client,
        all(),
        Fan::new(2, DELETIONS_SERVICEACCOUNT),
        &listed,
    );
    let mut network_policies = metadata::<NetworkPolicy>(
        client,
        managed(),
        Fan::new(1, DELETIONS_NETWORKPOLICY),
        &listed,
    );
    let mut namespaces =
        metadata::<Namespace>(client, all(), Fan::new(1, DELETIONS_NAMESPACE), &listed);
    let mut secrets = metadata::<Secret>(client, all(), Fan::new(1, DELETIONS_SECRET), &listed);
    let mut services = typed::<Service>(client, all(), Fan::new(1, DELETIONS_SERVICE), &listed);
    let mut endpoint_slices =
        typed::<EndpointSlice>(client, all(), Fan::new(1, DELETIONS_ENDPOINTSLICE), &listed);

    let handles = Handles {
        controllers: ControllerHandles {
            identities: identities.take(),
            identities_for_identities: identities.take(),
            identities_for_bindings: identities.take(),
            identities_for_policies: identities.take(),
            bindings: bindings.take(),
            bindings_for_identities: bindings.take(),
            bindings_for_policies: bindings.take(),
            policies: policies.take(),
            policies_for_identities: policies.take(),
            service_accounts_for_identities: service_accounts.take(),
            network_policies_for_identities: network_policies.take(),
            services_for_identities: services.take(),
            endpoint_slices_for_identities: endpoint_slices.take(),
            deleted_identities_for_identities: identities.take_deleted(),
            deleted_identities_for_bindings: identities.take_deleted(),
            deleted_identities_for_policies: identities.take_deleted(),
            deleted_bindings_for_identities: bindings.take_deleted(),
            deleted_bindings_for_policies: bindings.take_deleted(),
            deleted_policies_for_identities: policies.take_deleted(),
            deleted_services_for_identities: services.take_deleted(),
            deleted_endpoint_slices_for_identities: endpoint_slices.take_deleted(),
        },
        snapshot: SnapshotHandles {
            identities: identities.take(),
            bindings: bindings.take(),
            policies: policies.take(),
            service_accounts: service_accounts.take(),
            namespaces: namespaces.take(),
            secrets: secrets.take(),
        },
    };

    let stores = Stores {
        identities: identities.reader,
        bindings: bindings.reader,
        policies: policies.reader,
        service_accounts: service_accounts.reader,
        network_policies: network_policies.reader,
        namespaces: namespaces.reader,
        secrets: secrets.reader,
        services: services.reader,
        endpoint_slices: endpoint_slices.reader,
    };
    let watches = vec![
        identities.watch,
        bindings.watch,
        policies.watch,
        service_accounts.watch,
        network_policies.watch,
        namespaces.watch,
        secrets.watch,
        services.watch,
        endpoint_slices.watch,
    ];
    Index {
        stores,
        handles,
        watches,
        listed,
    }
}

impl Stores {
    /// An authority snapshot of one namespace, fresh from the stores. The reconciler builds one
    /// per reconcile so a decision never rests on a snapshot older than its trigger.
    pub fn authority_of(&self, namespace: &str, config: authority::Config) -> Authority {
        let in_ns = |o: &dyn ResourceNamespace| o.namespace_str() == Some(namespace);
        Authority::from_objects(
            config,
            self.identities.state_filter(|o| in_ns(o)),
            self.bindings.state_filter(|o| in_ns(o)),
            self.policies.state_filter(|o| in_ns(o)),
            self.service_accounts
                .state_filter(|o| in_ns(o))
                .into_iter()
                .map(|meta| service_account_from_meta(&meta)),
        )
    }

    /// An authority snapshot of the whole cluster.
    pub fn authority(&self, config: authority::Config) -> Authority {
        Authority::from_objects(
            config,
            self.identities.state(),
            self.bindings.state(),
            self.policies.state(),
            self.service_accounts
                .state()
                .into_iter()
                .map(|meta| service_account_from_meta(&meta)),
        )
    }
}

/// ServiceAccounts are watched as metadata only (names and labels are all mandate reads).
fn service_account_from_meta(meta: &PartialObjectMeta<ServiceAccount>) -> ServiceAccount {
    ServiceAccount {
        metadata: meta.metadata.clone(),
        ..ServiceAccount::default()
    }
}

/// Object-safe access to an object's namespace, so one closure filters every kind.
trait ResourceNamespace {
    fn namespace_str(&self) -> Option<&str>;
}

impl<K: ResourceExt> ResourceNamespace for K {
    fn namespace_str(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }
}

impl ServiceDirectory for Stores {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.endpoint_slices.state_filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && slice
                    .labels()
                    .get("kubernetes.io/service-name")
                    .map(String::as_str)
                    == Some(service)
        })
    }
}
