//! The ServiceAccounts and NetworkPolicies mandate projects, watched as metadata and kept as
//! versions, not objects: watch events in; out, a resourceVersion per (namespace, name) for
//! the reconcilers' apply memo, the changed and deleted objects and a ping per change to every
//! channel subscribed to each (the AgentIdentity controller takes the objects, the admission
//! snapshot the ServiceAccounts' pings), and (ServiceAccounts only) every change applied to the
//! live authority. Never writes to the API server.
//!
//! There are as many of each as there are agents, and a reconcile reads nothing of them but
//! their resourceVersion: a kube store kept a key and a whole ObjectMeta per object (23 MB of
//! 88 at 10,000 agents), where a version costs a few dozen bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::watches::Fanout;
use super::{Listed, LiveAuthority};
use crate::authority::{Authority, ObjectKind};

/// resourceVersions of one kind, by namespace and name.
#[derive(Clone, Default)]
pub struct Versions {
    inner: Arc<Mutex<VersionMap>>,
}

type VersionMap = HashMap<String, HashMap<Box<str>, Box<str>>>;

impl Versions {
    /// The resourceVersion of `namespace/name` as last seen by the watch.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.lock()
            .get(namespace)
            .and_then(|names| names.get(name))
            .map(|version| version.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VersionMap> {
        // Every update is a single map operation: a poisoned lock still guards whole data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `meta`'s version; returns whether it differs from the one recorded.
    fn record(&self, meta: &kube::api::ObjectMeta) -> bool {
        let (Some(namespace), Some(name), Some(version)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return false;
        };
        let mut map = self.lock();
        let names = map.entry(namespace.clone()).or_default();
        let previous = names.insert(name.as_str().into(), version.as_str().into());
        previous.as_deref() != Some(version.as_str())
    }

    fn forget(&self, meta: &kube::api::ObjectMeta) {
        let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
            return;
        };
        let mut map = self.lock();
        if let Some(names) = map.get_mut(namespace.as_str()) {
            names.remove(name.as_str());
            if names.is_empty() {
                map.remove(namespace.as_str());
            }
        }
    }

    /// Replaces everything with a fresh list; returns the listed objects whose version is
    /// new or changed. Objects deleted while the watch was down simply drop out (as from a
    /// kube store); their identity re-creates them at its next periodic reconcile.
    fn replace<K>(&self, listed: &[Arc<PartialObjectMeta<K>>]) -> Vec<Arc<PartialObjectMeta<K>>> {
        let mut fresh = VersionMap::new();
        let mut map = self.lock();
        let mut changed = Vec::new();
        for object in listed {
            let meta = &object.metadata;
            let (Some(namespace), Some(name), Some(version)) =
                (&meta.namespace, &meta.name, &meta.resource_version)
            else {
                continue;
            };
            let before = map
                .get(namespace)
                .and_then(|names| names.get(name.as_str()));
            if before.map(AsRef::as_ref) != Some(version.as_str()) {
                changed.push(object.clone());
            }
            fresh
                .entry(namespace.clone())
                .or_default()
                .insert(name.as_str().into(), version.as_str().into());
        }
        *map = fresh;
        changed
    }
}

/// How a projection kind enters the live authority (ServiceAccounts do; NetworkPolicies not).
pub(super) struct AuthorityHook<K: Resource> {
    pub live: LiveAuthority,
    pub feed: usize,
    pub kind: ObjectKind,
    pub upsert: fn(&mut Authority, Arc<PartialObjectMeta<K>>),
}

/// Where a projection watch sends what it sees: to every receiver subscribed to each.
pub(super) struct Outputs<K: Resource> {
    /// Objects changed by anyone (the controller drops its own applies' echoes).
    pub changed: Fanout<Arc<PartialObjectMeta<K>>>,
    /// Objects deleted, so their identity re-creates them.
    pub deleted: Fanout<Arc<PartialObjectMeta<K>>>,
    /// One ping per change, for the admission snapshot.
    pub pinged: Fanout<()>,
}

/// Runs one projection watch until its stream ends: keeps `versions`, feeds the authority
/// (when hooked) and fans out to `outputs`. The first list wakes nothing (see
/// `super::Related`); a later one (after the watch failed) passes on what changed meanwhile.
pub(super) async fn run<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<PartialObjectMeta<K>>>>,
    versions: Versions,
    outputs: Outputs<K>,
    listed: Listed,
    hook: Option<AuthorityHook<K>>,
) where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&()).into_owned();
    let mut relist: Vec<Arc<PartialObjectMeta<K>>> = Vec::new();
    let mut listed_once = false;
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, %kind, "watch failed; retrying");
                continue;
            }
        };
        if let Some(hook) = &hook {
            hook.live.entered(hook.feed);
        }
        let mut changed = Vec::new();
        let mut deleted = Vec::new();
        let mut relisted = None;
        match event {
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(object) => relist.push(Arc::new(object)),
            watcher::Event::InitDone => {
                let objects = std::mem::take(&mut relist);
                let fresh = versions.replace(&objects);
                if listed_once {
                    changed = fresh;
                }
                relisted = Some(objects);
            }
            watcher::Event::Apply(object) => {
                if versions.record(&object.metadata) {
                    changed.push(Arc::new(object));
                }
            }
            watcher::Event::Delete(object) => {
                versions.forget(&object.metadata);
                deleted.push(Arc::new(object));
            }
        }
        if let Some(hook) = &hook {
            hook.live.apply(hook.feed, relisted.is_some(), |authority| {
                if let Some(objects) = &relisted {
                    authority.clear(hook.kind);
                    for object in objects {
                        (hook.upsert)(authority, object.clone());
                    }
                }
                for object in &changed {
                    (hook.upsert)(authority, object.clone());
                }
                for object in &deleted {
                    let meta = &object.metadata;
                    if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
                        authority.remove(hook.kind, namespace, name);
                    }
                }
            });
        }
        let any = relisted.is_some() || !changed.is_empty() || !deleted.is_empty();
        if relisted.is_some() {
            listed_once = true;
            listed.mark(&kind);
        }
        for object in changed {
            outputs.changed.send(object);
        }
        for object in deleted {
            outputs.deleted.send(object);
        }
        if any {
            outputs.pinged.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{self, ServiceAccountOwnership};
    use crate::index::AuthorityFeed;
    use k8s_openapi::api::core::v1::ServiceAccount;

    type Meta = PartialObjectMeta<ServiceAccount>;

    fn sa(name: &str, version: &str, managed: bool) -> Meta {
        let mut object = Meta::default();
        object.metadata.namespace = Some("team".into());
        object.metadata.name = Some(name.into());
        object.metadata.resource_version = Some(version.into());
        if managed {
            object.metadata.labels = Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "mandate".to_owned(),
                    ),
                    ("mandate.dev/agent".to_owned(), name.to_owned()),
                ]
                .into(),
            );
            object.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "mandate.dev/v1alpha1".into(),
                    kind: "AgentIdentity".into(),
                    name: name.into(),
                    uid: format!("uid-{name}"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ]);
        }
        object
    }

    struct Watched {
        versions: Versions,
        live: LiveAuthority,
        listed: Listed,
        changed: Vec<String>,
        deleted: Vec<String>,
        pings: usize,
    }

    /// Runs the projection watch over `events` to their end and collects what it sent.
    async fn watch(events: Vec<watcher::Event<Meta>>) -> Watched {
        let versions = Versions::default();
        let live = LiveAuthority::new(authority::Config::default());
        let listed = Listed::new();
        let mut outputs = Outputs {
            changed: Fanout::default(),
            deleted: Fanout::default(),
            pinged: Fanout::default(),
        };
        let changed_rx = outputs.changed.subscribe();
        let deleted_rx = outputs.deleted.subscribe();
        let pinged_rx = outputs.pinged.subscribe();
        run(
            futures::stream::iter(events.into_iter().map(Ok)),
            versions.clone(),
            outputs,
            listed.clone(),
            Some(AuthorityHook {
                live: live.clone(),
                feed: Meta::FEED,
                kind: Meta::KIND,
                upsert: Meta::upsert,
            }),
        )
        .await;
        let name = |o: Arc<Meta>| o.metadata.name.clone().unwrap_or_default();
        Watched {
            versions,
            live,
            listed,
            changed: changed_rx.map(name).collect().await,
            deleted: deleted_rx.map(name).collect().await,
            pings: pinged_rx.count().await,
        }
    }

    fn first_list(objects: Vec<Meta>) -> Vec<watcher::Event<Meta>> {
        let mut events = vec![watcher::Event::Init];
        events.extend(objects.into_iter().map(watcher::Event::InitApply));
        events.push(watcher::Event::InitDone);
        events
    }

    #[tokio::test]
    async fn the_first_list_records_versions_and_ownership_and_wakes_no_reconcile() {
        let watched = watch(first_list(vec![
            sa("planner", "1", true),
            sa("default", "2", false),
        ]))
        .await;
        assert_eq!(
            watched.versions.get("team", "planner").as_deref(),
            Some("1")
        );
        assert_eq!(
            watched.versions.get("team", "default").as_deref(),
            Some("2")
        );
        assert!(watched.changed.is_empty() && watched.deleted.is_empty());
        assert!(!watched.listed.missing().contains(&"ServiceAccount"));
        let authority = watched.live.latest();
        assert_eq!(
            authority.service_account_ownership("team", "planner"),
            ServiceAccountOwnership::Managed {
                agent: "planner".into(),
                uid: "uid-planner".into(),
            }
        );
        assert_eq!(
            authority.service_account_ownership("team", "default"),
            ServiceAccountOwnership::Unmanaged
        );
    }

    #[tokio::test]
    async fn a_new_version_is_passed_on_a_repeated_one_is_not_and_a_deletion_is_forgotten() {
        let mut events = first_list(vec![sa("planner", "1", true)]);
        events.push(watcher::Event::Apply(sa("planner", "1", true)));
        events.push(watcher::Event::Apply(sa("planner", "5", true)));
        events.push(watcher::Event::Apply(sa("executor", "6", true)));
        events.push(watcher::Event::Delete(sa("planner", "7", true)));
        let watched = watch(events).await;
        assert_eq!(watched.changed, ["planner", "executor"]);
        assert_eq!(watched.deleted, ["planner"]);
        assert_eq!(watched.versions.get("team", "planner"), None);
        assert_eq!(
            watched.versions.get("team", "executor").as_deref(),
            Some("6")
        );
        let authority = watched.live.latest();
        assert_eq!(
            authority.service_account_ownership("team", "planner"),
            ServiceAccountOwnership::Absent
        );
        assert_eq!(watched.pings, 1 + 3, "the list, two changes and a deletion");
    }

    #[tokio::test]
    async fn a_relist_after_a_failure_passes_on_only_what_changed_meanwhile() {
        let mut events = first_list(vec![sa("planner", "1", true), sa("executor", "2", true)]);
        events.extend(first_list(vec![
            sa("planner", "1", true),
            sa("executor", "9", false),
        ]));
        let watched = watch(events).await;
        assert_eq!(watched.changed, ["executor"]);
        assert_eq!(
            watched.versions.get("team", "executor").as_deref(),
            Some("9")
        );
        assert_eq!(
            watched
                .live
                .latest()
                .service_account_ownership("team", "executor"),
            ServiceAccountOwnership::Unmanaged,
            "the relist replaced the authority's view too"
        );
    }
}
