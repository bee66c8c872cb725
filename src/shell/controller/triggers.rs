//! Which changes of mandate's own objects wake reconciles: a stream of changed objects in,
//! the same stream without status-only changes out. Reconcilers read specs, labels and
//! annotations (never another object's status), and write statuses themselves: waking on a
//! status write would only reconcile everything twice.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::Store;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;

use crate::admission::namespace::namespace_mode;
use crate::index::Relists;

/// What a reconcile reads of an object besides its status: which object it is (uid), its spec
/// (generation), labels, annotations and whether it is being deleted.
fn fingerprint<K: Resource>(hasher: &RandomState, object: &K) -> u64 {
    let meta = object.meta();
    hasher.hash_one((
        &meta.uid,
        meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
    ))
}

/// Passes an object only when its fingerprint differs from the last one seen for its
/// (namespace, name), and always the first time. When the kind's watch begins a relist
/// (after a watch failure) everything is forgotten, so the relist wakes a reconcile of every
/// object once: a trigger missed or dropped around the failure must not leave an object
/// unreconciled until its next periodic resync (an identity created just before an API
/// server restart once stayed without a status).
pub(crate) fn spec_changes<K, S>(
    objects: S,
    store: Store<K>,
    relists: Relists,
) -> impl Stream<Item = Arc<K>>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: Stream<Item = Arc<K>>,
{
    let hasher = RandomState::new();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut relisted = relists.count();
    let key = |hasher: &RandomState, object: &K| {
        let meta = object.meta();
        hasher.hash_one((&meta.namespace, &meta.name))
    };
    objects.filter(move |object| {
        if relists.count() != relisted {
            relisted = relists.count();
            seen.clear();
        }
        let now = fingerprint(&hasher, object.as_ref());
        let changed = seen.insert(key(&hasher, object), now) != Some(now);
        // Deleted objects never come through here: forget them once they could add up.
        if seen.len() > 2 * store.len() + 1024 {
            let live: std::collections::HashSet<u64> =
                store.state().iter().map(|o| key(&hasher, o)).collect();
            seen.retain(|k, _| live.contains(k));
        }
        futures::future::ready(changed)
    })
}

/// Passes a namespace only when whether it carries `mandate.dev/mode` differs from the last
/// time it was seen (always the first time): its identities' ServiceAccountGuarded condition
/// depends on nothing else of it, and namespaces change for many other reasons.
pub(crate) fn opt_in_changes<S>(
    namespaces: S,
) -> impl Stream<Item = Arc<PartialObjectMeta<Namespace>>>
where
    S: Stream<Item = Arc<PartialObjectMeta<Namespace>>>,
{
    let mut opted_in: HashMap<String, bool> = HashMap::new();
    namespaces.filter(move |namespace| {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let now = namespace_mode(namespace.metadata.labels.as_ref()).is_some();
        futures::future::ready(opted_in.insert(name, now) != Some(now))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AgentIdentity;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn identity(generation: i64, ready: bool) -> AgentIdentity {
        let mut identity: AgentIdentity = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "team", "uid": "u1", "generation": generation},
            "spec": {"owner": {"kind": "User", "name": "alice"}, "purpose": "test"}
        }))
        .unwrap_or_else(|e| unreachable!("{e}"));
        if ready {
            identity.status = Some(Default::default());
        }
        identity
    }

    #[tokio::test]
    async fn status_only_changes_are_dropped_and_spec_label_and_identity_changes_pass() {
        let (store, mut writer) = reflector::store::<AgentIdentity>();
        writer.apply_watcher_event(&watcher::Event::Apply(identity(1, false)));
        let mut relabelled = identity(2, true);
        relabelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "x".into());
        // The same in every field a reconcile reads, but another object: deleted and recreated.
        let mut recreated = relabelled.clone();
        recreated.metadata.uid = Some("u2".into());
        let objects = [
            identity(1, false),
            identity(1, true), // status only
            identity(2, true), // spec changed
            relabelled,
            recreated,
        ]
        .map(Arc::new);
        let passed: Vec<Arc<AgentIdentity>> =
            spec_changes(futures::stream::iter(objects), store, Relists::default())
                .collect()
                .await;
        let generations: Vec<Option<i64>> = passed.iter().map(|o| o.metadata.generation).collect();
        assert_eq!(generations, [Some(1), Some(2), Some(2), Some(2)]);
        assert!(passed[1].metadata.labels.is_none());
        assert!(passed[2].metadata.labels.is_some());
        assert_eq!(passed[3].metadata.uid.as_deref(), Some("u2"));
    }

    #[tokio::test]
    async fn a_namespace_passes_only_when_it_opts_in_or_out() {
        let namespace = |mode: Option<&str>, annotation: &str| {
            let mut object = PartialObjectMeta::<Namespace>::default();
            object.metadata.name = Some("team".into());
            object.metadata.labels =
                mode.map(|m| [("mandate.dev/mode".to_owned(), m.to_owned())].into());
            object.metadata.annotations = Some([("note".to_owned(), annotation.to_owned())].into());
            Arc::new(object)
        };
        let passed: Vec<_> = opt_in_changes(futures::stream::iter([
            namespace(Some("enforce"), "a"),
            namespace(Some("enforce"), "b"), // another change: dropped
            namespace(Some("warn"), "b"),    // still opted in: dropped
            namespace(None, "b"),
            namespace(None, "c"),
        ]))
        .collect()
        .await;
        let labelled: Vec<bool> = passed.iter().map(|n| n.metadata.labels.is_some()).collect();
        assert_eq!(labelled, [true, false]);
    }

    #[tokio::test]
    async fn after_a_relist_begins_every_object_passes_once_more() {
        let (store, mut writer) = reflector::store::<AgentIdentity>();
        writer.apply_watcher_event(&watcher::Event::Apply(identity(1, false)));
        let relists = Relists::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut passed = Box::pin(spec_changes(rx, store, relists.clone()));
        let send = |object: AgentIdentity| {
            tx.unbounded_send(Arc::new(object))
                .unwrap_or_else(|e| unreachable!("{e}"));
        };
        let mut other = identity(1, false);
        other.metadata.name = Some("b".into());
        let name = |o: Option<Arc<AgentIdentity>>| o.and_then(|o| o.metadata.name.clone());

        send(identity(1, false));
        assert_eq!(name(passed.next().await).as_deref(), Some("a"));
        send(identity(1, false));
        send(other);
        assert_eq!(
            name(passed.next().await).as_deref(),
            Some("b"),
            "the unchanged repeat of a is dropped"
        );
        relists.begun();
        send(identity(1, false));
        assert_eq!(name(passed.next().await).as_deref(), Some("a"));
    }
}
