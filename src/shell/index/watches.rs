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
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use super::pods::PodWatch;
use super::projections::{self, AuthorityHook, Outputs, Versions};
use super::subscriptions::{Deletions, Related};
use super::{Feed, Listed, Relists, WatchBackoff};
use crate::api::{AgentIdentity, DelegationPolicy, ToolBinding};

/// The objects a shared watch applied, as one subscription receives them.
///
/// Not kube's `ReflectHandle`: it carries object references and reads each object from the
/// store when polled, and an object deleted in between (an Apply and a Delete in quick
/// succession, as when a namespace goes) made it return `Pending` without arranging to be
/// woken, so the subscription, and the controller it drove, went deaf for good (seen in e2e:
/// after a test's namespace was deleted, the next test's ToolBinding woke no reconcile). Here
/// each subscription gets the applied object itself, over an unbounded channel: controllers
/// drain their triggers continuously (kube's scheduler does so even at full concurrency), a
/// dropped subscription is skipped, and the watch never waits on a subscriber.
pub type Applied<K> = mpsc::UnboundedReceiver<Arc<K>>;

/// Every watch the index runs, not started yet: consumers subscribe through its fields (see
/// `subscriptions`), then `build` starts each one.
pub(super) struct Watches {
    pub identities: SharedWatch<AgentIdentity>,
    pub bindings: SharedWatch<ToolBinding>,
    pub policies: SharedWatch<DelegationPolicy>,
    pub service_accounts: ProjectionWatch<ServiceAccount>,
    pub network_policies: ProjectionWatch<NetworkPolicy>,
    /// Every NetworkPolicy, mandate's or not, with its podSelector: foreign ones widen agents.
    pub all_network_policies: SharedWatch<NetworkPolicy>,
    pub namespaces: SharedWatch<PartialObjectMeta<Namespace>>,
    pub secrets: SharedWatch<PartialObjectMeta<Secret>>,
    pub services: SharedWatch<Service>,
    pub endpoint_slices: SharedWatch<EndpointSlice>,
    /// Pods labelled `mandate.dev/agent`, kept as their credentials (see `pods`).
    pub agent_pods: PodWatch,
    /// RBAC, for the API rights of agents' ServiceAccounts.
    pub roles: SharedWatch<Role>,
    pub cluster_roles: SharedWatch<ClusterRole>,
    pub role_bindings: SharedWatch<RoleBinding>,
    pub cluster_role_bindings: SharedWatch<ClusterRoleBinding>,
}

impl Watches {
    pub fn new(listed: &Listed) -> Self {
        Watches {
            identities: SharedWatch::new(listed),
            bindings: SharedWatch::new(listed),
            policies: SharedWatch::new(listed),
            service_accounts: ProjectionWatch::new(listed),
            network_policies: ProjectionWatch::new(listed),
            all_network_policies: SharedWatch::new(listed),
            namespaces: SharedWatch::new(listed),
            secrets: SharedWatch::new(listed),
            services: SharedWatch::new(listed),
            endpoint_slices: SharedWatch::new(listed),
            agent_pods: PodWatch::default(),
            roles: SharedWatch::new(listed),
            cluster_roles: SharedWatch::new(listed),
            role_bindings: SharedWatch::new(listed),
            cluster_role_bindings: SharedWatch::new(listed),
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
    applied: Fanout<Arc<K>>,
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
        let writer = reflector::store::Writer::default();
        SharedWatch {
            reader: writer.as_reader(),
            writer,
            applied: Fanout::default(),
            deletions: Fanout::default(),
            listed: listed.clone(),
        }
    }

    /// A subscription to every object the watch applies, the first list's included.
    pub fn subscribe(&mut self) -> Applied<K> {
        self.applied.subscribe()
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
            applied,
            deletions,
            listed,
        } = self;
        let store = reader.clone();
        let entering = feed.clone();
        let relists = Relists::default();
        let relisting = relists.clone();
        let name = K::plural(&Default::default()).into_owned();
        let health = listed.health.clone();
        health.register(&name);
        let run = events
            .backoff(WatchBackoff::default())
            .modify(trim)
            .inspect(move |event| {
                health.observe(&name, event, std::time::Instant::now());
                if let Ok(watcher::Event::Init) = event {
                    relisting.begun();
                }
                if let (Ok(_), Some(feed)) = (event, &entering) {
                    feed.live.entered(feed.index);
                }
            })
            .reflect(writer)
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
                        // What the list holds, as stored: every subscriber sees it once.
                        for object in store.state() {
                            applied.send(object);
                        }
                        listed.mark(&kind);
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        // The store's own copy, shared rather than cloned again.
                        let stored = store.get(&ObjectRef::from_obj(&object));
                        applied.send(stored.unwrap_or_else(|| Arc::new(object)));
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
        // Named apart from a shared watch of the same kind (every NetworkPolicy is watched
        // twice).
        let name = format!("{} (projections)", K::plural(&()));
        let health = self.listed.health.clone();
        health.register(&name);
        let events = events
            .backoff(WatchBackoff::default())
            .modify(trim)
            .inspect(move |event| health.observe(&name, event, std::time::Instant::now()));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{SinkExt, poll};
    use kube::runtime::watcher::Event;

    use super::*;

    fn service(name: &str) -> Service {
        let mut service = Service::default();
        service.metadata.namespace = Some("team".into());
        service.metadata.name = Some(name.into());
        service
    }

    fn names<K: Resource>(objects: Vec<Arc<K>>) -> Vec<String> {
        objects
            .iter()
            .map(|object| object.meta().name.clone().unwrap_or_default())
            .collect()
    }

    fn applies(count: usize) -> Vec<Event<Service>> {
        (0..count)
            .map(|i| Event::Apply(service(&format!("s{i}"))))
            .collect()
    }

    /// Starts `watch` over `events`, which end the watch when they run out.
    fn start(watch: SharedWatch<Service>, events: Vec<Event<Service>>) -> StartedWatch<Service> {
        watch.start(
            futures::stream::iter(events.into_iter().map(Ok)),
            None,
            slim,
        )
    }

    fn slim(_: &mut Service) {}

    async fn within_a_second<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(1), future)
            .await
            .unwrap_or_else(|_| panic!("still waiting after a second"))
    }

    #[tokio::test]
    async fn every_subscription_gets_every_applied_object_and_every_deletion_channel_every_deletion()
     {
        let listed = Listed::new();
        let mut watch = SharedWatch::new(&listed);
        let subscriptions = [watch.subscribe(), watch.subscribe(), watch.subscribe()];
        let deletions = [watch.subscribe_deletions(), watch.subscribe_deletions()];
        let started = start(
            watch,
            vec![
                Event::Init,
                Event::InitApply(service("listed")),
                Event::InitDone,
                Event::Apply(service("applied")),
                Event::Delete(service("gone")),
            ],
        );
        within_a_second(started.run).await;
        for subscription in subscriptions {
            assert_eq!(names(subscription.collect().await), ["listed", "applied"]);
        }
        for deleted in deletions {
            assert_eq!(names(deleted.collect().await), ["gone"]);
        }
        assert_eq!(started.relists.count(), 1);
        assert!(!listed.missing().contains(&"Service"));
        let mut stored = names(started.reader.state());
        stored.sort();
        assert_eq!(stored, ["applied", "listed"]);
    }

    #[tokio::test]
    async fn an_unpolled_subscription_never_holds_back_the_others() {
        let mut watch = SharedWatch::new(&Listed::new());
        let polled = watch.subscribe();
        let _unpolled = watch.subscribe();
        within_a_second(start(watch, applies(5_000)).run).await;
        assert_eq!(polled.count().await, 5_000);
    }

    /// kube's ReflectHandle read each object from the store when polled; one deleted in between
    /// left the subscription pending for good, and every later change unseen.
    #[tokio::test]
    async fn an_object_deleted_before_its_subscriber_reads_it_does_not_silence_the_subscription() {
        let mut watch = SharedWatch::new(&Listed::new());
        let mut subscription = watch.subscribe();
        let (mut events, stream) = mpsc::unbounded();
        let run = tokio::spawn(watch.start(stream, None, slim).run);
        for event in [
            Event::Init,
            Event::InitDone,
            Event::Apply(service("brief")),
            Event::Delete(service("brief")),
        ] {
            events
                .send(Ok(event))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Let the watch store and delete `brief` before the subscriber reads anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        events
            .send(Ok(Event::Apply(service("next"))))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first = within_a_second(subscription.next()).await;
        let second = within_a_second(subscription.next()).await;
        assert_eq!(
            names(first.into_iter().chain(second).collect()),
            ["brief", "next"]
        );
        drop(events);
        within_a_second(run).await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_watch_never_waits_on_a_dropped_subscription_nor_without_any() {
        let mut watch = SharedWatch::new(&Listed::new());
        drop(watch.subscribe());
        drop(watch.subscribe_deletions());
        within_a_second(start(watch, applies(3_000)).run).await;

        let watch = SharedWatch::new(&Listed::new());
        within_a_second(start(watch, applies(3_000)).run).await;
    }

    #[tokio::test]
    async fn a_related_subscription_drops_what_it_reads_before_its_kind_has_listed() {
        let mut watch = SharedWatch::new(&Listed::new());
        let mut related = watch.subscribe_related();
        let (mut events, stream) = mpsc::unbounded();
        let mut run = watch.start(stream, None, slim).run;

        events
            .send(Ok(Event::Apply(service("before"))))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(poll!(&mut run).is_pending());
        assert!(poll!(related.next()).is_pending(), "read before the list");

        for event in [Event::Init, Event::InitDone, Event::Apply(service("after"))] {
            events
                .send(Ok(event))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(poll!(&mut run).is_pending());
        let object = within_a_second(related.next()).await;
        assert_eq!(names(object.into_iter().collect()), ["after"]);
    }

    fn account(name: &str, version: &str) -> PartialObjectMeta<ServiceAccount> {
        let mut object = PartialObjectMeta::<ServiceAccount>::default();
        object.metadata.namespace = Some("team".into());
        object.metadata.name = Some(name.into());
        object.metadata.resource_version = Some(version.into());
        object
    }

    #[tokio::test]
    async fn every_subscriber_to_a_projection_watch_gets_every_change_deletion_and_ping() {
        let mut watch = ProjectionWatch::<ServiceAccount>::new(&Listed::new());
        let changes = [watch.subscribe_changes(), watch.subscribe_changes()];
        let deletions = [watch.subscribe_deletions(), watch.subscribe_deletions()];
        let pings = [watch.subscribe_pings(), watch.subscribe_pings()];
        let events = [
            Event::Init,
            Event::InitApply(account("listed", "1")),
            Event::InitDone,
            Event::Apply(account("changed", "2")),
            Event::Delete(account("listed", "3")),
        ];
        let started = watch.start(
            futures::stream::iter(events.into_iter().map(Ok)),
            |_| {},
            None,
        );
        within_a_second(started.run).await;
        for changed in changes {
            assert_eq!(names(changed.collect().await), ["changed"]);
        }
        for deleted in deletions {
            assert_eq!(names(deleted.collect().await), ["listed"]);
        }
        for pinged in pings {
            assert_eq!(pinged.count().await, 3, "the list, a change, a deletion");
        }
        assert_eq!(
            started.versions.get("team", "changed").as_deref(),
            Some("2")
        );
    }

    #[tokio::test]
    async fn a_fanout_sends_every_item_to_every_receiver_still_listening() {
        let mut fanout = Fanout::default();
        let first = fanout.subscribe();
        drop(fanout.subscribe());
        let last = fanout.subscribe();
        fanout.send(1);
        fanout.send(2);
        drop(fanout);
        assert_eq!(first.collect::<Vec<_>>().await, [1, 2]);
        assert_eq!(last.collect::<Vec<_>>().await, [1, 2]);
    }
}
