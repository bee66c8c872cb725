//! The index's watches before and after they start. Before: consumers subscribe to a watch
//! (`subscribe*` methods), each call minting one subscription. Starting a watch consumes it:
//! watch events in; out, a store (shared watches) or versions (projection watches), every
//! subscription minted before the start fed, and a future to poll. No subscription can be
//! added to a started watch, and none is held here: every one is handed to a consumer, which
//! must poll it (or drop it) so the watch never waits on it. Never writes to the API server.

use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::watcher;

use super::projections::{self, AuthorityHook, Outputs, Versions};
use super::subscriptions::{Deletions, Related};
use super::{Feed, Listed, Relists, WatchBackoff};
use crate::api::{AgentIdentity, DelegationPolicy, ToolBinding};

/// Buffer of each shared stream: how many events a slow subscriber may lag behind before the
/// watch waits for it. Allocated up front per watch (about 100 bytes a slot): 65,536 slots
/// cost 7 MB per watch. Subscribers are polled continuously (kube's scheduler drains its
/// triggers even at full concurrency), so a burst is only slowed, never stalled.
pub(super) const SUBSCRIBER_BUFFER: usize = 1024;

/// Every watch the index runs, not started yet: consumers subscribe through its fields (see
/// `subscriptions`), then `build` starts each one.
pub(super) struct Watches {
    pub identities: SharedWatch<AgentIdentity>,
    pub bindings: SharedWatch<ToolBinding>,
    pub policies: SharedWatch<DelegationPolicy>,
    pub service_accounts: ProjectionWatch<ServiceAccount>,
    pub network_policies: ProjectionWatch<NetworkPolicy>,
    pub namespaces: SharedWatch<PartialObjectMeta<Namespace>>,
    pub secrets: SharedWatch<PartialObjectMeta<Secret>>,
    pub services: SharedWatch<Service>,
    pub endpoint_slices: SharedWatch<EndpointSlice>,
}

impl Watches {
    pub fn new(listed: &Listed) -> Self {
        Watches {
            identities: SharedWatch::new(listed),
            bindings: SharedWatch::new(listed),
            policies: SharedWatch::new(listed),
            service_accounts: ProjectionWatch::new(listed),
            network_policies: ProjectionWatch::new(listed),
            namespaces: SharedWatch::new(listed),
            secrets: SharedWatch::new(listed),
            services: SharedWatch::new(listed),
            endpoint_slices: SharedWatch::new(listed),
        }
    }
}

/// A watch whose objects are kept in a kube store and dispatched to shared subscriptions (which
/// carry applied objects only), with deletions sent on channels of their own.
pub(super) struct SharedWatch<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    reader: Store<K>,
    writer: reflector::store::Writer<K>,
    deletions: Fanout<Arc<K>>,
    listed: Listed,
}

/// A started shared watch: its store, its (re)list count and the future that runs it.
pub(super) struct StartedWatch<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash,
{
    pub reader: Store<K>,
    pub relists: Relists,
    pub run: BoxFuture<'static, ()>,
}

impl<K> SharedWatch<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    fn new(listed: &Listed) -> Self {
        let (reader, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        SharedWatch {
            reader,
            writer,
            deletions: Fanout::default(),
            listed: listed.clone(),
        }
    }

    /// A subscription to every object the watch applies, the first list's included.
    pub fn subscribe(&mut self) -> ReflectHandle<K> {
        match self.writer.subscribe() {
            Some(subscription) => subscription,
            // `subscribe` returns None only for writers made without a buffer (not store_shared).
            None => unreachable!("a writer made by store_shared always hands out subscriptions"),
        }
    }

    /// A subscription without the first list's dispatch (see [`Related`]).
    pub fn subscribe_related(&mut self) -> Related<K> {
        let kind = K::kind(&Default::default()).into_owned();
        let listed = self.listed.clone();
        self.subscribe()
            .filter(move |_| futures::future::ready(listed.has(&kind)))
            .boxed()
    }

    /// The objects the watch sees deleted.
    pub fn subscribe_deletions(&mut self) -> Deletions<K> {
        self.deletions.subscribe()
    }

    /// Runs `events` through the store, the live authority (with a `feed`) and the
    /// subscriptions minted so far; `trim` slims each object before it is stored.
    pub fn start<S>(self, events: S, feed: Option<Feed<K>>, trim: fn(&mut K)) -> StartedWatch<K>
    where
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    {
        let SharedWatch {
            reader,
            writer,
            deletions,
            listed,
        } = self;
        let store = reader.clone();
        let entering = feed.clone();
        let relists = Relists::default();
        let relisting = relists.clone();
        let run = events
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
                    Ok(watcher::Event::Delete(object)) => deletions.send(Arc::new(object)),
                    Ok(_) => {}
                }
                futures::future::ready(())
            })
            .boxed();
        StartedWatch {
            reader,
            relists,
            run,
        }
    }
}

/// A watch of a kind mandate projects (metadata only), kept as versions (see `projections`):
/// its changes, deletions and pings go to the channels subscribed before it starts.
pub(super) struct ProjectionWatch<K: Resource> {
    outputs: Outputs<K>,
    listed: Listed,
}

/// A started projection watch: its versions and the future that runs it.
pub(super) struct StartedProjection {
    pub versions: Versions,
    pub run: BoxFuture<'static, ()>,
}

impl<K> ProjectionWatch<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn new(listed: &Listed) -> Self {
        ProjectionWatch {
            outputs: Outputs {
                changed: Fanout::default(),
                deleted: Fanout::default(),
                pinged: Fanout::default(),
            },
            listed: listed.clone(),
        }
    }

    /// Objects changed after the first list, by anyone.
    pub fn subscribe_changes(&mut self) -> Related<PartialObjectMeta<K>> {
        self.outputs.changed.subscribe().boxed()
    }

    /// Objects deleted.
    pub fn subscribe_deletions(&mut self) -> Deletions<PartialObjectMeta<K>> {
        self.outputs.deleted.subscribe()
    }

    /// One `()` per watch event that listed, changed or deleted something.
    pub fn subscribe_pings(&mut self) -> mpsc::UnboundedReceiver<()> {
        self.outputs.pinged.subscribe()
    }

    /// Runs `events` into versions, the live authority (with a `hook`) and the channels
    /// subscribed so far; `trim` slims each object first.
    pub fn start<S>(
        self,
        events: S,
        trim: fn(&mut PartialObjectMeta<K>),
        hook: Option<AuthorityHook<K>>,
    ) -> StartedProjection
    where
        S: Stream<Item = watcher::Result<watcher::Event<PartialObjectMeta<K>>>> + Send + 'static,
    {
        let versions = Versions::default();
        let events = events.backoff(WatchBackoff::default()).modify(trim);
        let run =
            projections::run(events, versions.clone(), self.outputs, self.listed, hook).boxed();
        StartedProjection { versions, run }
    }
}

/// One unbounded channel per subscriber, each sent every item. A subscriber that drops its
/// receiver is skipped; none ever holds the sender back.
pub(super) struct Fanout<T> {
    senders: Vec<mpsc::UnboundedSender<T>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout {
            senders: Vec::new(),
        }
    }
}

impl<T: Clone> Fanout<T> {
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<T> {
        let (sender, receiver) = mpsc::unbounded();
        self.senders.push(sender);
        receiver
    }

    pub fn send(&self, item: T) {
        for sender in &self.senders {
            let _ = sender.unbounded_send(item.clone());
        }
    }
}

