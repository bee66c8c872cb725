//! The reflector-backed view of the cluster that the controllers, the webhook and the CLI read.
//! Watch events in; out, from `build`: one shared watch per kind (mandate's three kinds,
//! Namespaces and Secrets as metadata only, Services, EndpointSlices, every NetworkPolicy
//! reduced to its podSelector, and Roles, ClusterRoles and their bindings reduced to rules,
//! roleRef and subjects) with readable stores; agent pods as their names and credentials
//! annotations (see `pods`);
//! ServiceAccounts and mandate's NetworkPolicies as resourceVersions only (see `projections`);
//! the live [`Authority`] kept current from mandate's three kinds, the ServiceAccounts and the
//! four RBAC kinds; and
//! each consumer's subscriptions as a struct of its own (see `subscriptions`), which wake
//! reconciles and snapshot refreshes. This module watches; it never writes to the API server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::Stream;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::{
    AGENT_LABEL, AgentIdentity, DelegationPolicy, MANAGED_BY_LABEL, MANAGER, ToolBinding,
};
use crate::authority::rights::RbacKind;
use crate::authority::{self, Authority};
use crate::project::ServiceDirectory;

mod health;
mod pods;
mod projections;
mod subscriptions;
mod watches;
pub use health::{Stalled, WatchHealth};
pub use pods::{AgentPods, PodChanges, PodPresence, PodPresenceChanges};
use projections::AuthorityHook;
pub use projections::Versions;
pub use subscriptions::{
    BindingControllerSubscriptions, ControllerSubscriptions, Deletions,
    IdentityControllerSubscriptions, NamespaceControllerSubscriptions,
    PolicyControllerSubscriptions, RbacSubscriptions, Related, SnapshotSubscriptions,
    Subscriptions,
};
use watches::Watches;

/// Which watches have finished their first list, and how each has fared since (`health`).
/// Tracked from the watch events themselves: kube's `Store::wait_until_ready` wakes only one
/// waiter, and the controllers already wait on it, so a second waiter (readiness) could sleep
/// forever.
#[derive(Clone)]
pub struct Listed {
    kinds: Arc<watch::Sender<BTreeSet<String>>>,
    health: WatchHealth,
}

impl Listed {
    fn new() -> Self {
        Listed {
            kinds: Arc::new(watch::channel(BTreeSet::new()).0),
            health: WatchHealth::default(),
        }
    }

    /// The health of every watch (readiness falls when one has failed for too long).
    pub fn health(&self) -> &WatchHealth {
        &self.health
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

    /// Whether `kind` has listed once.
    fn has(&self, kind: &str) -> bool {
        self.kinds.borrow().contains(kind)
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

/// Every kind `build` watches. NetworkPolicy is watched twice (mandate's, as versions; every
/// one, reduced to its podSelector) and counts as listed when the first list is done: only the
/// identities' NetworkExclusive condition reads the second, and the second's first list wakes
/// every identity a foreign policy touches, so an early reconcile is corrected at once. The RBAC
/// kinds are part of the live authority: no snapshot is published, and no agent pod admitted,
/// before all four have listed.
pub const WATCHED_KINDS: [&str; 13] = [
    "AgentIdentity",
    "ToolBinding",
    "DelegationPolicy",
    "ServiceAccount",
    "NetworkPolicy",
    "Namespace",
    "Secret",
    "Service",
    "EndpointSlice",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

/// The authority every reconcile and every admission decision reads, kept current from the
/// watches of the four kinds it is made of: each change costs O(log n) and each reader gets an
/// O(1) clone (see [`Authority`]), where rebuilding per reconcile cost O(namespace).
///
/// Each watch applies its changes in order, but watches run side by side: a reconcile woken by
/// one kind's change may start before another kind's earlier change is applied (or before the
/// projection watches apply theirs, which dispatch first), so [`current`] first waits until every change that had entered a watch when it was called is applied, and until
/// each of the four kinds has listed once. A reconcile therefore never reads an authority
/// older than the event that triggered it, nor one that lacks a kind still being listed (a
/// binding judged before the identities are known would be reported MissingIdentity).
///
/// [`current`]: LiveAuthority::current
#[derive(Clone)]
pub struct LiveAuthority {
    inner: Arc<LiveInner>,
}

struct LiveInner {
    authority: Mutex<Authority>,
    /// Per feed: watch events that have entered the pipeline (counted before the store write).
    seen: [AtomicU64; FEEDS],
    progress: watch::Sender<Progress>,
}

#[derive(Default)]
struct Progress {
    /// Per feed: watch events applied to `authority`. Each feed is one ordered stream, so
    /// `applied[f] >= n` means its first n events are all applied.
    applied: [u64; FEEDS],
    /// Per feed: whether its first list is applied.
    listed: [bool; FEEDS],
}

/// The watches feeding the live authority: identities, bindings, policies, ServiceAccounts,
/// Roles, ClusterRoles, RoleBindings, ClusterRoleBindings.
const FEEDS: usize = 8;

/// How long [`LiveAuthority::current`] waits for changes in flight before it gives up (they
/// are normally applied within microseconds; a stall means a watch pipeline is stuck).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// The live authority could not catch up with its watches in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the live authority did not catch up with its watches within {CATCH_UP_LIMIT:?} (a watch has not listed yet or is stuck)"
)]
pub struct AuthorityLagging;

impl LiveAuthority {
    fn new(config: authority::Config) -> Self {
        LiveAuthority {
            inner: Arc::new(LiveInner {
                authority: Mutex::new(Authority::new(config)),
                seen: Default::default(),
                progress: watch::channel(Progress::default()).0,
            }),
        }
    }

    /// The authority including every change any of its stores holds at the time of the call.
    pub async fn current(&self) -> Result<Authority, AuthorityLagging> {
        let target: [u64; FEEDS] =
            std::array::from_fn(|feed| self.inner.seen[feed].load(Ordering::Acquire));
        let mut progress = self.inner.progress.subscribe();
        let caught_up = progress.wait_for(|progress| {
            progress.listed.iter().all(|listed| *listed)
                && progress
                    .applied
                    .iter()
                    .zip(&target)
                    .all(|(applied, target)| applied >= target)
        });
        match tokio::time::timeout(CATCH_UP_LIMIT, caught_up).await {
            Ok(Ok(_)) => Ok(self.latest()),
            _ => Err(AuthorityLagging),
        }
    }

    /// The authority as applied so far, without waiting for changes in flight.
    pub fn latest(&self) -> Authority {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Authority> {
        // Authority's updates never panic halfway; a poisoned lock still guards whole data.
        self.inner
            .authority
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn entered(&self, feed: usize) {
        self.inner.seen[feed].fetch_add(1, Ordering::Release);
    }

    fn apply(&self, feed: usize, listed: bool, change: impl FnOnce(&mut Authority)) {
        change(&mut self.lock());
        self.inner.progress.send_modify(|progress| {
            progress.applied[feed] += 1;
            progress.listed[feed] |= listed;
        });
    }
}

/// A kind the live authority is made of: how one of its objects enters and leaves it.
trait AuthorityFeed: Resource + Sized {
    const FEED: usize;
    const KIND: authority::ObjectKind;
    fn upsert(authority: &mut Authority, object: Arc<Self>);
}

impl AuthorityFeed for AgentIdentity {
    const FEED: usize = 0;
    const KIND: authority::ObjectKind = authority::ObjectKind::Identity;
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.upsert_identity(object);
    }
}

impl AuthorityFeed for ToolBinding {
    const FEED: usize = 1;
    const KIND: authority::ObjectKind = authority::ObjectKind::Binding;
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.upsert_binding(object);
    }
}

impl AuthorityFeed for DelegationPolicy {
    const FEED: usize = 2;
    const KIND: authority::ObjectKind = authority::ObjectKind::Policy;
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.upsert_policy(object);
    }
}

impl AuthorityFeed for PartialObjectMeta<ServiceAccount> {
    const FEED: usize = 3;
    const KIND: authority::ObjectKind = authority::ObjectKind::ServiceAccount;
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        // A metadata-only watch cannot know automountServiceAccountToken.
        authority.upsert_service_account(&object.metadata, None);
    }
}

impl AuthorityFeed for Role {
    const FEED: usize = 4;
    const KIND: authority::ObjectKind = authority::ObjectKind::Rbac(RbacKind::Role);
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.rbac_mut().upsert_role(&object);
    }
}

impl AuthorityFeed for ClusterRole {
    const FEED: usize = 5;
    const KIND: authority::ObjectKind = authority::ObjectKind::Rbac(RbacKind::ClusterRole);
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.rbac_mut().upsert_cluster_role(&object);
    }
}

impl AuthorityFeed for RoleBinding {
    const FEED: usize = 6;
    const KIND: authority::ObjectKind = authority::ObjectKind::Rbac(RbacKind::RoleBinding);
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.rbac_mut().upsert_role_binding(&object);
    }
}

impl AuthorityFeed for ClusterRoleBinding {
    const FEED: usize = 7;
    const KIND: authority::ObjectKind = authority::ObjectKind::Rbac(RbacKind::ClusterRoleBinding);
    fn upsert(authority: &mut Authority, object: Arc<Self>) {
        authority.rbac_mut().upsert_cluster_role_binding(&object);
    }
}

/// Applies one watch event, already written to `store`, to the live authority.
fn feed_event<K>(live: &LiveAuthority, store: &Store<K>, event: &watcher::Event<K>)
where
    K: AuthorityFeed + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let listed = matches!(event, watcher::Event::InitDone);
    live.apply(K::FEED, listed, |authority| match event {
        watcher::Event::Apply(object) => {
            // The store's own Arc, so the authority shares the object rather than copying it.
            if let Some(stored) = store.get(&reflector::ObjectRef::from_obj(object)) {
                K::upsert(authority, stored);
            }
        }
        watcher::Event::Delete(object) => {
            let meta = object.meta();
            // Cluster-scoped kinds (ClusterRoles and their bindings) have no namespace.
            if let Some(name) = &meta.name {
                let namespace = meta.namespace.as_deref().unwrap_or_default();
                authority.remove(K::KIND, namespace, name);
            }
        }
        // A (re)list replaced the store wholesale: so does the authority, for this kind.
        watcher::Event::InitDone => {
            let objects = store.state();
            authority.clear(K::KIND);
            for object in objects {
                K::upsert(authority, object);
            }
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    });
}

/// The readable side of every watch.
#[derive(Clone)]
pub struct Stores {
    pub identities: Store<AgentIdentity>,
    pub bindings: Store<ToolBinding>,
    pub policies: Store<DelegationPolicy>,
    /// resourceVersions of every ServiceAccount (their ownership is in `authority`).
    pub service_account_versions: Versions,
    /// resourceVersions of mandate's NetworkPolicies.
    pub network_policy_versions: Versions,
    /// Every NetworkPolicy in the cluster, reduced to its metadata and podSelector: the foreign
    /// ones are reported on the identities whose pods they can select.
    pub network_policies: Store<NetworkPolicy>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// Identities, bindings, policies and ServiceAccounts as one authority, kept current.
    pub authority: LiveAuthority,
    /// Agent pods' names and credentials annotations, by agent (`CredentialsStale`).
    pub agent_pods: AgentPods,
    /// (Re)lists begun by the watches of mandate's three kinds.
    pub identity_relists: Relists,
    pub binding_relists: Relists,
    pub policy_relists: Relists,
}

/// Everything `build` returns: the stores, the subscriptions, and the watch streams, which
/// must be polled (spawn them) for any of it to move.
pub struct Index {
    pub stores: Stores,
    /// Every consumer's subscriptions, one struct each: move each to its consumer.
    pub subscriptions: Subscriptions,
    pub watches: Vec<futures::future::BoxFuture<'static, ()>>,
    /// Which watches have listed; readiness waits on it.
    pub listed: Listed,
}

/// How many times a watch has begun a (re)list: counted when the list starts, so everything a
/// list dispatches is seen after the count moved. Reconcile triggers forget what they have
/// seen when it moves (see `controller::triggers`): a relist follows a watch failure, and
/// whatever was missed or dropped around it is reconciled again.
#[derive(Clone, Default)]
pub struct Relists(Arc<AtomicU64>);

impl Relists {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn begun(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
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

/// Projections (ServiceAccounts, NetworkPolicies) are read for mandate's two labels, the
/// ownerReferences to an AgentIdentity and the resourceVersion only, and there are as many of
/// each as there are agents: everything else goes (annotations hold a SPIFFE ID on every
/// agent's ServiceAccount; even a two-entry label map costs half a kilobyte).
fn slim_projection<K: Resource>(object: &mut PartialObjectMeta<K>) {
    slim(object);
    object.types = None;
    let meta = &mut object.metadata;
    meta.annotations = None;
    meta.creation_timestamp = None;
    meta.uid = None;
    meta.generation = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| key == MANAGED_BY_LABEL || key == AGENT_LABEL);
    }
    if meta.labels.as_ref().is_some_and(|labels| labels.is_empty()) {
        meta.labels = None;
    }
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.retain(|owner| owner.kind == AgentIdentity::kind(&()));
    }
}

/// RBAC objects are read for their rules, roleRef and subjects: their labels and annotations
/// (kubectl's last-applied copy, the aggregation labels) decide nothing.
fn slim_rbac<K: Resource>(object: &mut K) {
    slim(object);
    let meta = object.meta_mut();
    meta.annotations = None;
    meta.labels = None;
    meta.creation_timestamp = None;
}

/// A ClusterRole's aggregationRule decides nothing either: the authorizer reads the rules the
/// aggregation controller wrote.
fn slim_cluster_role(role: &mut ClusterRole) {
    slim_rbac(role);
    role.aggregation_rule = None;
}

/// NetworkPolicies are watched by mandate's label only: they need none of their labels.
fn slim_network_policy(object: &mut PartialObjectMeta<NetworkPolicy>) {
    slim_projection(object);
    object.metadata.labels = None;
}

/// Every NetworkPolicy is read for which pods it selects and whose it is (ownerReferences,
/// labels, name): its rules are dropped, so a cluster full of policies costs little.
fn slim_to_pod_selector(policy: &mut NetworkPolicy) {
    slim(policy);
    let meta = &mut policy.metadata;
    meta.annotations = None;
    meta.creation_timestamp = None;
    meta.uid = None;
    meta.generation = None;
    // Only mandate's label tells its default deny (with its name); the rest decide nothing.
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| key == MANAGED_BY_LABEL);
    }
    if let Some(spec) = policy.spec.as_mut() {
        spec.ingress = None;
        spec.egress = None;
    }
}

/// The annotation client-side `kubectl apply` keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How long a failed watch waits before it tries again: from half a second, doubling, never
/// more than five seconds, with up to a fifth of random jitter; back to the start after any
/// event. kube's default grows to 30 s and only resets 120 s after a failure: after an API
/// server restart a watch fails several times in a row (connection refused, 503, then "too old
/// resource version"), so every index (and with it the webhook's view) stayed stale for up to
/// a minute. Nine watches retrying every five seconds cost an API server nothing.
#[derive(Debug)]
pub(crate) struct WatchBackoff {
    next: Duration,
    jitter: std::hash::RandomState,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: Self::FIRST,
            jitter: std::hash::RandomState::new(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        use std::hash::BuildHasher;
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Replicas restarting their watches together should not reach the API server in step.
        let spread = delay / 5;
        let random = self.jitter.hash_one(std::time::SystemTime::now());
        let jitter = spread.mul_f64((random % 1_000) as f64 / 1_000.0);
        Some(delay + jitter)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Feeds a watch's events to the live authority: counted on entry, applied after the store.
struct Feed<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    live: LiveAuthority,
    index: usize,
    apply: fn(&LiveAuthority, &Store<K>, &watcher::Event<K>),
}

impl<K: Resource + 'static> Clone for Feed<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Feed {
            live: self.live.clone(),
            index: self.index,
            apply: self.apply,
        }
    }
}

impl<K> Feed<K>
where
    K: AuthorityFeed + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    /// The feed of a kind the live authority is made of.
    fn new(live: &LiveAuthority) -> Self {
        Feed {
            live: live.clone(),
            index: K::FEED,
            apply: feed_event::<K>,
        }
    }
}

/// How long one watch request lasts before the API server ends it and the watcher resumes
/// from the last resourceVersion it saw (bookmarks keep that recent, so no relist). kube's
/// default is 290 s: a watch that stops delivering without failing (a stall across an API
/// server restart) would leave the index, and the webhook's view, stale that long.
pub(crate) const WATCH_SECONDS: u32 = 60;

impl<K: Resource> AuthorityHook<K>
where
    PartialObjectMeta<K>: AuthorityFeed,
{
    /// The hook of a projection kind the live authority is made of.
    fn new(live: &LiveAuthority) -> Self {
        AuthorityHook {
            live: live.clone(),
            feed: <PartialObjectMeta<K> as AuthorityFeed>::FEED,
            kind: <PartialObjectMeta<K> as AuthorityFeed>::KIND,
            upsert: <PartialObjectMeta<K> as AuthorityFeed>::upsert,
        }
    }
}

/// Builds the watches (poll `Index::watches` to run them) and every consumer's subscriptions.
pub fn build(client: &Client, config: authority::Config) -> Index {
    let listed = Listed::new();
    let live = LiveAuthority::new(config);
    let all = || watcher::Config::default().timeout(WATCH_SECONDS);
    let managed = || all().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));

    let mut watches = Watches::new(&listed);
    let subscriptions = Subscriptions::subscribe(&mut watches);
    // Every consumer has subscribed; starting a watch consumes it, so nothing subscribes later.
    let Watches {
        identities,
        bindings,
        policies,
        service_accounts,
        network_policies,
        all_network_policies,
        namespaces,
        secrets,
        services,
        endpoint_slices,
        agent_pods,
        roles,
        cluster_roles,
        role_bindings,
        cluster_role_bindings,
    } = watches;
    let identities = identities.start(watch_all(client, all()), Some(Feed::new(&live)), slim);
    let bindings = bindings.start(watch_all(client, all()), Some(Feed::new(&live)), slim);
    let policies = policies.start(watch_all(client, all()), Some(Feed::new(&live)), slim);
    // Projections are kept as versions, not objects (see `projections`). Admission decisions
    // read ServiceAccount ownership: the snapshot subscribes to their pings.
    let service_accounts = service_accounts.start(
        watch_all(client, all()),
        slim_projection,
        Some(AuthorityHook::new(&live)),
    );
    let network_policies =
        network_policies.start(watch_all(client, managed()), slim_network_policy, None);
    let all_network_policies =
        all_network_policies.start(watch_all(client, all()), None, slim_to_pod_selector);
    let namespaces = namespaces.start(watch_all(client, all()), None, slim);
    // A legacy token Secret's annotations name its ServiceAccount: kept.
    let secrets = secrets.start(watch_all(client, all()), None, slim);
    let services = services.start(watch_all(client, all()), None, slim);
    let endpoint_slices = endpoint_slices.start(watch_all(client, all()), None, slim);
    // Agent pods only, metadata only; of each, its name, agent and credentials annotation.
    let pods = AgentPods::default();
    let agent_pods = agent_pods
        .run(
            watch_all::<PartialObjectMeta<Pod>>(client, all().labels(AGENT_LABEL))
                .backoff(WatchBackoff::default()),
            pods.clone(),
        )
        .boxed();
    // RBAC feeds the live authority: the API rights of agents' ServiceAccounts are computed
    // from it in memory, never asked of the API server per identity.
    let roles = roles.start(watch_all(client, all()), Some(Feed::new(&live)), slim_rbac);
    let cluster_roles = cluster_roles.start(
        watch_all(client, all()),
        Some(Feed::new(&live)),
        slim_cluster_role,
    );
    let role_bindings =
        role_bindings.start(watch_all(client, all()), Some(Feed::new(&live)), slim_rbac);
    let cluster_role_bindings =
        cluster_role_bindings.start(watch_all(client, all()), Some(Feed::new(&live)), slim_rbac);

    let stores = Stores {
        identities: identities.reader,
        bindings: bindings.reader,
        policies: policies.reader,
        service_account_versions: service_accounts.versions,
        network_policy_versions: network_policies.versions,
        network_policies: all_network_policies.reader,
        namespaces: namespaces.reader,
        secrets: secrets.reader,
        services: services.reader,
        endpoint_slices: endpoint_slices.reader,
        authority: live,
        agent_pods: pods,
        identity_relists: identities.relists,
        binding_relists: bindings.relists,
        policy_relists: policies.relists,
    };
    let watches = vec![
        identities.run,
        bindings.run,
        policies.run,
        service_accounts.run,
        network_policies.run,
        all_network_policies.run,
        namespaces.run,
        secrets.run,
        services.run,
        endpoint_slices.run,
        agent_pods,
        roles.run,
        cluster_roles.run,
        role_bindings.run,
        cluster_role_bindings.run,
    ];
    Index {
        stores,
        subscriptions,
        watches,
        listed,
    }
}

/// A watch of every `K` in the cluster. An Api of `PartialObjectMeta` makes metadata-only
/// requests. Started over with a fresh list after every failure (see `health::restarting`), so
/// its recovery is seen.
fn watch_all<K>(
    client: &Client,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = Api::<K>::all(client.clone());
    health::restarting(move || watcher(api.clone(), config.clone()))
}

impl ServiceDirectory for Stores {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.endpoint_slices.state_filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && crate::project::service_name_of_slice(slice) == Some(service)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> Arc<AgentIdentity> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "team"},
                "spec": {"owner": {"kind": "User", "name": "alice"}, "purpose": "test"}
            }))
            .unwrap_or_else(|e| unreachable!("{e}")),
        )
    }

    #[test]
    fn a_failing_watch_retries_from_half_a_second_doubling_to_five_and_starts_over_after_an_event()
    {
        use kube::runtime::utils::Backoff;
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(6).collect();
        let bases = [500, 1_000, 2_000, 4_000, 5_000, 5_000].map(Duration::from_millis);
        for (delay, base) in delays.iter().zip(bases) {
            assert!(
                *delay >= base && *delay <= base + base / 5,
                "{delay:?} is not within a fifth above {base:?}"
            );
        }
        backoff.reset();
        assert!(
            backoff
                .next()
                .is_some_and(|d| d < Duration::from_millis(601))
        );
    }

    async fn settles(live: &LiveAuthority) -> Option<Authority> {
        tokio::time::timeout(Duration::from_millis(50), live.current())
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn the_live_authority_is_read_only_once_every_kind_has_listed() {
        let live = LiveAuthority::new(authority::Config::default());
        assert!(settles(&live).await.is_none());
        for feed in 0..FEEDS - 1 {
            live.apply(feed, true, |_| {});
        }
        assert!(settles(&live).await.is_none(), "one kind has not listed");
        live.apply(FEEDS - 1, true, |_| {});
        assert!(settles(&live).await.is_some());
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_change_that_entered_a_watch_before_it_asked() {
        let live = LiveAuthority::new(authority::Config::default());
        for feed in 0..FEEDS {
            // As in a watch pipeline: counted on entry, then applied.
            live.entered(feed);
            live.apply(feed, true, |_| {});
        }
        live.entered(0);
        let reader = tokio::spawn({
            let live = live.clone();
            async move { live.current().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "the change is not applied yet");
        live.apply(0, false, |authority| {
            authority.upsert_identity(identity("a"));
        });
        let read = reader
            .await
            .unwrap_or_else(|e| unreachable!("{e}"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(read.identity("team", "a").is_some());
    }
}
