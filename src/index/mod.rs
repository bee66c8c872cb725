//! The reflector-backed view of the cluster that the controllers, the webhook and the CLI read:
//! one shared watch per kind (mandate's three kinds, Namespaces and Secrets as metadata only,
//! Services, EndpointSlices) with readable stores and subscriptions that trigger reconciles;
//! ServiceAccounts and mandate's NetworkPolicies as resourceVersions only (see `projections`);
//! and the live [`Authority`] kept current from mandate's three kinds and the ServiceAccounts.
//! This module watches; it never writes to the API server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

use crate::api::{
    AGENT_LABEL, AgentIdentity, DelegationPolicy, MANAGED_BY_LABEL, MANAGER, ToolBinding,
};
use crate::authority::{self, Authority};
use crate::project::ServiceDirectory;

mod projections;
pub use projections::Versions;
use projections::{AuthorityHook, Outputs};

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

/// The authority every reconcile and every admission decision reads, kept current from the
/// watches of the four kinds it is made of: each change costs O(log n) and each reader gets an
/// O(1) clone (see [`Authority`]), where rebuilding per reconcile cost O(namespace).
///
/// A change is applied right after its store write and its dispatch to the controllers, so a
/// reconcile could be woken before the change it was woken for is applied: [`current`] first
/// waits until every change that had entered a watch when it was called is applied, and until
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

/// The watches feeding the live authority: identities, bindings, policies, ServiceAccounts.
const FEEDS: usize = 4;

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
            if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
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
const DELETIONS_NAMESPACE: usize = 0;
const DELETIONS_SECRET: usize = 0;
const DELETIONS_SERVICE: usize = 1;
const DELETIONS_ENDPOINTSLICE: usize = 1;

/// Buffer of each shared stream: how many events a slow subscriber may lag behind before the
/// watch waits for it. Allocated up front per watch (about 100 bytes a slot): 65,536 slots
/// cost 7 MB per watch. Subscribers are polled continuously (kube's scheduler drains its
/// triggers even at full concurrency), so a burst is only slowed, never stalled.
const SUBSCRIBER_BUFFER: usize = 1024;

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
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// Identities, bindings, policies and ServiceAccounts as one authority, kept current.
    pub authority: LiveAuthority,
    /// (Re)lists begun by the watches of mandate's three kinds.
    pub identity_relists: Relists,
    pub binding_relists: Relists,
    pub policy_relists: Relists,
}

/// Subscriptions to the shared watches, one per consumer. Every handle must be polled by its
/// consumer: a shared watch waits for its slowest subscriber, so a forgotten handle would stall
/// it. Named fields (rather than a pool) make each consumer's share explicit.
pub struct Handles {
    pub controllers: ControllerHandles,
    pub snapshot: SnapshotHandles,
}

/// Changes of a kind that wake reconciles of another (or of other objects of the same kind),
/// without what the kind's first list dispatches: every object already on the API server when
/// mandate starts. Those wake nothing new: every primary object is reconciled once its own kind
/// has listed, reading an authority in which all four kinds have listed, and 10,000 such
/// redundant wake-ups per kind filled the controllers' queues (12 MB at peak with 10,000
/// agents). Later lists (after a watch fails) still pass: they may carry changes missed
/// meanwhile. Services and EndpointSlices are not filtered: a reconcile does not wait for
/// them to list, so their first list may still change a NetworkPolicy.
pub type Related<K> = futures::stream::BoxStream<'static, Arc<K>>;

/// What the three controllers consume.
pub struct ControllerHandles {
    /// Drives the AgentIdentity controller.
    pub identities: ReflectHandle<AgentIdentity>,
    /// Identity changes re-reconcile the agents delegating to or from it.
    pub identities_for_identities: Related<AgentIdentity>,
    /// Identity changes re-validate their ToolBindings.
    pub identities_for_bindings: Related<AgentIdentity>,
    /// Identity changes re-validate the DelegationPolicies naming them.
    pub identities_for_policies: Related<AgentIdentity>,
    /// Drives the ToolBinding controller.
    pub bindings: ReflectHandle<ToolBinding>,
    pub bindings_for_identities: Related<ToolBinding>,
    pub bindings_for_policies: Related<ToolBinding>,
    /// Drives the DelegationPolicy controller.
    pub policies: ReflectHandle<DelegationPolicy>,
    pub policies_for_identities: Related<DelegationPolicy>,
    pub service_accounts_for_identities: Related<PartialObjectMeta<ServiceAccount>>,
    pub network_policies_for_identities: Related<PartialObjectMeta<NetworkPolicy>>,
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
    /// A deleted projection is re-created by its identity's reconcile.
    pub deleted_service_accounts_for_identities:
        mpsc::UnboundedReceiver<Arc<PartialObjectMeta<ServiceAccount>>>,
    pub deleted_network_policies_for_identities:
        mpsc::UnboundedReceiver<Arc<PartialObjectMeta<NetworkPolicy>>>,
}

/// What the snapshot publisher consumes: every kind admission decisions read.
pub struct SnapshotHandles {
    pub identities: ReflectHandle<AgentIdentity>,
    pub bindings: ReflectHandle<ToolBinding>,
    pub policies: ReflectHandle<DelegationPolicy>,
    pub service_accounts: mpsc::UnboundedReceiver<()>,
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
            self.service_accounts.boxed(),
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
    relists: Relists,
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

/// NetworkPolicies are watched by mandate's label only: they need none of their labels.
fn slim_network_policy(object: &mut PartialObjectMeta<NetworkPolicy>) {
    slim_projection(object);
    object.metadata.labels = None;
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
struct WatchBackoff {
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

fn shared<K, S>(
    events: S,
    fan: Fan,
    listed: &Listed,
    feed: Option<Feed<K>>,
    trim: fn(&mut K),
) -> Shared<K>
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
    let store = reader.clone();
    let entering = feed.clone();
    let relists = Relists::default();
    let relisting = relists.clone();
    let watch = events
        .backoff(WatchBackoff::default())
        .modify(trim)
        .inspect(move |event| {
            if let Ok(watcher::Event::Init) = event {
                relisting.begun();
            }
            if let (Ok(_), Some(feed)) = (event, &entering) {
                feed.live.entered(feed.index);
            }
        })
        .reflect_shared(writer)
        .for_each(move |event| {
            if let (Ok(event), Some(feed)) = (&event, &feed) {
                (feed.apply)(&feed.live, &store, event);
            }
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
        relists,
    }
}

impl<K: Resource + Clone + 'static> Shared<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// One of the deletion receivers made in `shared`.
    fn take_deleted(&mut self) -> mpsc::UnboundedReceiver<Arc<K>> {
        self.deleted
            .pop()
            .expect("build() takes exactly as many deletion receivers as it creates")
    }

    /// One of the subscriptions made in `shared`; `build` takes exactly as many as it made.
    fn take(&mut self) -> ReflectHandle<K> {
        self.handles
            .pop()
            .expect("build() takes exactly as many subscriptions as it creates")
    }

    /// A subscription without the first list's dispatch (see [`Related`]).
    fn take_related(&mut self, listed: &Listed) -> Related<K>
    where
        K: Send + Sync,
        K::DynamicType: Default + Send + Sync,
    {
        let kind = K::kind(&Default::default()).into_owned();
        let listed = listed.clone();
        self.take()
            .filter(move |_| futures::future::ready(listed.has(&kind)))
            .boxed()
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
    shared(
        watcher(Api::<K>::all(client.clone()), config),
        fan,
        listed,
        None,
        slim,
    )
}

/// A watch of a kind the live authority is made of.
fn fed<K>(
    client: &Client,
    config: watcher::Config,
    fan: Fan,
    listed: &Listed,
    live: &LiveAuthority,
) -> Shared<K>
where
    K: AuthorityFeed
        + Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let feed = Feed {
        live: live.clone(),
        index: K::FEED,
        apply: feed_event::<K>,
    };
    shared(
        watcher(Api::<K>::all(client.clone()), config),
        fan,
        listed,
        Some(feed),
        slim,
    )
}

fn metadata<K>(
    client: &Client,
    config: watcher::Config,
    fan: Fan,
    listed: &Listed,
    trim: fn(&mut PartialObjectMeta<K>),
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
        None,
        trim,
    )
}

/// How long one watch request lasts before the API server ends it and the watcher resumes
/// from the last resourceVersion it saw (bookmarks keep that recent, so no relist). kube's
/// default is 290 s: a watch that stops delivering without failing (a stall across an API
/// server restart) would leave the index, and the webhook's view, stale that long.
const WATCH_SECONDS: u32 = 60;

/// A projection kind's watch (metadata only), its versions and the receiving ends of what the
/// watch sends.
struct Projection<K: Resource> {
    versions: Versions,
    watch: futures::future::BoxFuture<'static, ()>,
    changed: mpsc::UnboundedReceiver<Arc<PartialObjectMeta<K>>>,
    deleted: mpsc::UnboundedReceiver<Arc<PartialObjectMeta<K>>>,
    pinged: Option<mpsc::UnboundedReceiver<()>>,
}

impl<K> Projection<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// `pings`: whether the admission snapshot is told of each change; `hook`: whether the
    /// kind enters the live authority.
    fn new(
        client: &Client,
        config: watcher::Config,
        trim: fn(&mut PartialObjectMeta<K>),
        listed: &Listed,
        hook: Option<AuthorityHook<K>>,
        pings: bool,
    ) -> Self {
        let (changed_tx, changed) = mpsc::unbounded();
        let (deleted_tx, deleted) = mpsc::unbounded();
        let (pinged_tx, pinged) = if pings {
            let (tx, rx) = mpsc::unbounded();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let versions = Versions::default();
        let outputs = Outputs {
            changed: changed_tx,
            deleted: deleted_tx,
            pinged: pinged_tx,
        };
        // An Api of PartialObjectMeta makes metadata-only requests.
        let events = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config)
            .backoff(WatchBackoff::default())
            .modify(trim);
        let watch =
            projections::run(events, versions.clone(), outputs, listed.clone(), hook).boxed();
        Projection {
            versions,
            watch,
            changed,
            deleted,
            pinged,
        }
    }
}

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

/// Builds the watches (poll `Index::watches` to run them) and their subscriptions.
pub fn build(client: &Client, config: authority::Config) -> Index {
    let listed = Listed::new();
    let live = LiveAuthority::new(config);
    let all = || watcher::Config::default().timeout(WATCH_SECONDS);
    let managed = || all().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));

    let mut identities = fed::<AgentIdentity>(
        client,
        all(),
        Fan::new(5, DELETIONS_AGENTIDENTITY),
        &listed,
        &live,
    );
    let mut bindings = fed::<ToolBinding>(
        client,
        all(),
        Fan::new(4, DELETIONS_TOOLBINDING),
        &listed,
        &live,
    );
    let mut policies = fed::<DelegationPolicy>(
        client,
        all(),
        Fan::new(3, DELETIONS_DELEGATIONPOLICY),
        &listed,
        &live,
    );
    // Projections are kept as versions, not objects (see `projections`). Admission decisions
    // read ServiceAccount ownership: the snapshot follows their changes.
    let service_accounts = Projection::<ServiceAccount>::new(
        client,
        all(),
        slim_projection,
        &listed,
        Some(AuthorityHook::new(&live)),
        true,
    );
    let network_policies = Projection::<NetworkPolicy>::new(
        client,
        managed(),
        slim_network_policy,
        &listed,
        None,
        false,
    );
    let mut namespaces = metadata::<Namespace>(
        client,
        all(),
        Fan::new(1, DELETIONS_NAMESPACE),
        &listed,
        slim,
    );
    // A legacy token Secret's annotations name its ServiceAccount: kept.
    let mut secrets =
        metadata::<Secret>(client, all(), Fan::new(1, DELETIONS_SECRET), &listed, slim);
    let mut services = typed::<Service>(client, all(), Fan::new(1, DELETIONS_SERVICE), &listed);
    let mut endpoint_slices =
        typed::<EndpointSlice>(client, all(), Fan::new(1, DELETIONS_ENDPOINTSLICE), &listed);

    let handles = Handles {
        controllers: ControllerHandles {
            identities: identities.take(),
            identities_for_identities: identities.take_related(&listed),
            identities_for_bindings: identities.take_related(&listed),
            identities_for_policies: identities.take_related(&listed),
            bindings: bindings.take(),
            bindings_for_identities: bindings.take_related(&listed),
            bindings_for_policies: bindings.take_related(&listed),
            policies: policies.take(),
            policies_for_identities: policies.take_related(&listed),
            service_accounts_for_identities: service_accounts.changed.boxed(),
            network_policies_for_identities: network_policies.changed.boxed(),
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
            deleted_service_accounts_for_identities: service_accounts.deleted,
            deleted_network_policies_for_identities: network_policies.deleted,
        },
        snapshot: SnapshotHandles {
            identities: identities.take(),
            bindings: bindings.take(),
            policies: policies.take(),
            service_accounts: service_accounts
                .pinged
                .expect("a ServiceAccount projection pings the snapshot"),
            namespaces: namespaces.take(),
            secrets: secrets.take(),
        },
    };

    let stores = Stores {
        identities: identities.reader,
        bindings: bindings.reader,
        policies: policies.reader,
        service_account_versions: service_accounts.versions,
        network_policy_versions: network_policies.versions,
        namespaces: namespaces.reader,
        secrets: secrets.reader,
        services: services.reader,
        endpoint_slices: endpoint_slices.reader,
        authority: live,
        identity_relists: identities.relists.clone(),
        binding_relists: bindings.relists.clone(),
        policy_relists: policies.relists.clone(),
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
