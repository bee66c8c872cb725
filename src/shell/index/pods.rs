//! Agent pods, from one metadata-only watch of pods labelled `mandate.dev/agent`. Out: as the
//! `CredentialsStale` condition reads them, per (namespace, agent), each pod's name and its
//! `mandate.dev/tool-credentials` annotation ([`AgentPods`]; terminating pods count as gone),
//! and the identity whose pods changed, to every subscribed channel (the AgentIdentity
//! controller reconciles it); and which pods exist by UID ([`PodPresence`]), to the decision
//! service's token cache. Nothing else of a pod is kept. Never writes to the API server.
//!
//! An identity assessed before the first list is done gets no pods (`None`: its condition is
//! left as it was, never reported False from an empty cache) and is woken again once the list
//! is in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::watches::Fanout;
use crate::admission::credentials::AgentPod;
use crate::api::{AGENT_LABEL, AgentIdentity, TOOL_CREDENTIALS_ANNOTATION};

/// (namespace, agent).
type AgentKey = (String, String);

/// The agent pods the watch has seen, by agent. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct AgentPods {
    inner: Arc<Mutex<PodMap>>,
}

#[derive(Default)]
struct PodMap {
    /// (namespace, agent) -> pod name -> its credentials annotation.
    by_agent: HashMap<AgentKey, BTreeMap<String, Option<String>>>,
    /// (namespace, pod) -> its agent, so a relabelled pod leaves its old agent.
    agent_of: HashMap<(String, String), String>,
    /// Whether the first list is in.
    listed: bool,
    /// Agents whose pods were asked for before the first list: woken once it is in.
    asked_early: BTreeSet<AgentKey>,
}

/// What a pod is to the index: its namespace, name, agent and annotation; `None` for a pod
/// that does not count (no agent label, terminating).
struct Seen {
    namespace: String,
    name: String,
    agent: String,
    credentials: Option<String>,
}

impl Seen {
    fn of(meta: &ObjectMeta) -> Option<Self> {
        if meta.deletion_timestamp.is_some() {
            return None;
        }
        Some(Seen {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            agent: meta.labels.as_ref()?.get(AGENT_LABEL)?.clone(),
            credentials: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOOL_CREDENTIALS_ANNOTATION))
                .cloned(),
        })
    }
}

impl AgentPods {
    /// The pods of `agent` in `namespace`, sorted by name; `None` until the first list is in.
    pub fn of(&self, namespace: &str, agent: &str) -> Option<Vec<AgentPod>> {
        let mut map = self.lock();
        if !map.listed {
            map.asked_early
                .insert((namespace.to_owned(), agent.to_owned()));
            return None;
        }
        let pods = map
            .by_agent
            .get(&(namespace.to_owned(), agent.to_owned()))
            .map(|pods| {
                pods.iter()
                    .map(|(name, credentials)| AgentPod {
                        name: name.clone(),
                        credentials: credentials.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(pods)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodMap> {
        // Every update leaves the maps whole: a poisoned lock still guards whole data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a pod seen changed (or terminating: gone); the agents whose pods changed.
    fn apply(&self, meta: &ObjectMeta) -> Vec<AgentKey> {
        let mut map = self.lock();
        let mut changed = Vec::new();
        let Some(seen) = Seen::of(meta) else {
            changed.extend(map.forget(meta));
            return changed;
        };
        let pod = (seen.namespace.clone(), seen.name.clone());
        if let Some(previous) = map.agent_of.get(&pod).cloned()
            && previous != seen.agent
        {
            changed.extend(map.forget(meta));
        }
        let key = (seen.namespace.clone(), seen.agent.clone());
        let pods = map.by_agent.entry(key.clone()).or_default();
        if pods.get(&seen.name) != Some(&seen.credentials) {
            pods.insert(seen.name.clone(), seen.credentials);
            changed.push(key);
        }
        map.agent_of.insert(pod, seen.agent);
        changed
    }

    /// Forgets a deleted pod; the agent it belonged to.
    fn delete(&self, meta: &ObjectMeta) -> Option<AgentKey> {
        self.lock().forget(meta)
    }

    /// Replaces everything with a fresh list; the agents whose pods differ from before, or, on
    /// the first list, those asked for before it.
    fn replace<'a>(&self, listed: impl Iterator<Item = &'a ObjectMeta>) -> Vec<AgentKey> {
        let mut fresh = PodMap::default();
        for seen in listed.filter_map(Seen::of) {
            fresh.agent_of.insert(
                (seen.namespace.clone(), seen.name.clone()),
                seen.agent.clone(),
            );
            fresh
                .by_agent
                .entry((seen.namespace, seen.agent))
                .or_default()
                .insert(seen.name, seen.credentials);
        }
        let mut map = self.lock();
        // The first list wakes only those assessed without pods: anyone assessed later reads
        // the list itself.
        let changed: BTreeSet<AgentKey> = if map.listed {
            let keys: BTreeSet<&AgentKey> =
                map.by_agent.keys().chain(fresh.by_agent.keys()).collect();
            keys.into_iter()
                .filter(|key| map.by_agent.get(*key) != fresh.by_agent.get(*key))
                .cloned()
                .collect()
        } else {
            std::mem::take(&mut map.asked_early)
        };
        map.by_agent = fresh.by_agent;
        map.agent_of = fresh.agent_of;
        map.listed = true;
        changed.into_iter().collect()
    }
}

impl PodMap {
    fn forget(&mut self, meta: &ObjectMeta) -> Option<AgentKey> {
        let pod = (meta.namespace.clone()?, meta.name.clone()?);
        let agent = self.agent_of.remove(&pod)?;
        let key = (pod.0, agent);
        if let Some(pods) = self.by_agent.get_mut(&key) {
            pods.remove(&pod.1);
            if pods.is_empty() {
                self.by_agent.remove(&key);
            }
        }
        Some(key)
    }
}

/// The watch of agent pods before it starts: the identity controller subscribes to the
/// identities whose pods change, the decision service to which pods exist.
#[derive(Default)]
pub(super) struct PodWatch {
    woken: Fanout<ObjectRef<AgentIdentity>>,
    presence: Fanout<PodPresence>,
}

/// The identities whose pods changed.
pub type PodChanges = mpsc::UnboundedReceiver<ObjectRef<AgentIdentity>>;

/// Which agent pods exist, by UID, as the watch learns it: the decision service trusts a
/// token only while the pod it is bound to exists. Terminating pods still exist.
#[derive(Debug, Clone, PartialEq)]
pub enum PodPresence {
    /// A complete list: these pods exist, no other.
    Listed(HashSet<String>),
    Applied(String),
    Deleted(String),
    /// The watch failed: what it said may be stale until the next `Listed`.
    Lost,
}

/// The stream of [`PodPresence`] changes.
pub type PodPresenceChanges = mpsc::UnboundedReceiver<PodPresence>;

impl PodWatch {
    /// The identities whose pods change (appear, go, change their credentials annotation).
    pub fn subscribe(&mut self) -> PodChanges {
        self.woken.subscribe()
    }

    /// Which agent pods exist.
    pub fn subscribe_presence(&mut self) -> PodPresenceChanges {
        self.presence.subscribe()
    }

    /// Runs `events` into `pods` until they end, waking the subscribed.
    pub async fn run(
        self,
        events: impl Stream<Item = watcher::Result<watcher::Event<PartialObjectMeta<Pod>>>>,
        pods: AgentPods,
    ) {
        let mut relist: Vec<ObjectMeta> = Vec::new();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let changed = match event {
                Err(error) => {
                    tracing::warn!(%error, kind = "Pod", "watch failed; retrying");
                    self.presence.send(PodPresence::Lost);
                    continue;
                }
                Ok(watcher::Event::Init) => {
                    relist.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    relist.push(pod.metadata);
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    tracing::debug!(pods = relist.len(), "agent pods listed");
                    let uids = relist.iter().filter_map(|pod| pod.uid.clone()).collect();
                    self.presence.send(PodPresence::Listed(uids));
                    pods.replace(std::mem::take(&mut relist).iter())
                }
                Ok(watcher::Event::Apply(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.presence.send(PodPresence::Applied(uid.clone()));
                    }
                    pods.apply(&pod.metadata)
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.presence.send(PodPresence::Deleted(uid.clone()));
                    }
                    pods.delete(&pod.metadata).into_iter().collect()
                }
            };
            for (namespace, agent) in changed {
                self.woken.send(ObjectRef::new(&agent).within(&namespace));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, agent: Option<&str>, credentials: Option<&str>) -> PartialObjectMeta<Pod> {
        let mut pod = PartialObjectMeta::<Pod>::default();
        pod.metadata.namespace = Some("team".into());
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.metadata.labels = agent.map(|a| [(AGENT_LABEL.to_owned(), a.to_owned())].into());
        pod.metadata.annotations =
            credentials.map(|c| [(TOOL_CREDENTIALS_ANNOTATION.to_owned(), c.to_owned())].into());
        pod
    }

    /// Runs the watch over `events` to their end: the pods and the identities woken, in order.
    async fn watch(
        pods: &AgentPods,
        events: Vec<watcher::Event<PartialObjectMeta<Pod>>>,
    ) -> Vec<String> {
        let mut watch = PodWatch::default();
        let woken = watch.subscribe();
        watch
            .run(
                futures::stream::iter(events.into_iter().map(Ok)),
                pods.clone(),
            )
            .await;
        woken.map(|r| r.name).collect().await
    }

    #[tokio::test]
    async fn the_decision_service_learns_which_pods_exist_by_uid_from_the_same_watch() {
        let mut watch = PodWatch::default();
        let presence = watch.subscribe_presence();
        let events = [
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("a", Some("planner"), None))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(pod("b", Some("planner"), None))),
            Ok(watcher::Event::Delete(pod("a", Some("planner"), None))),
            Err(watcher::Error::NoResourceVersion),
        ];
        watch
            .run(futures::stream::iter(events), AgentPods::default())
            .await;
        let seen: Vec<PodPresence> = presence.collect().await;
        assert_eq!(
            seen,
            [
                PodPresence::Listed(["uid-a".to_owned()].into()),
                PodPresence::Applied("uid-b".into()),
                PodPresence::Deleted("uid-a".into()),
                PodPresence::Lost,
            ]
        );
    }

    fn names(pods: Option<Vec<AgentPod>>) -> Option<Vec<(String, Option<String>)>> {
        pods.map(|pods| pods.into_iter().map(|p| (p.name, p.credentials)).collect())
    }

    #[tokio::test]
    async fn before_the_first_list_nothing_is_known_and_whoever_asked_is_woken_by_it() {
        let pods = AgentPods::default();
        assert_eq!(names(pods.of("team", "planner")), None);
        let woken = watch(
            &pods,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(pod("planner-0", Some("planner"), Some("docs"))),
                watcher::Event::InitApply(pod("web", None, None)),
                watcher::Event::InitDone,
            ],
        )
        .await;
        assert_eq!(woken, ["planner"]);
        assert_eq!(
            names(pods.of("team", "planner")),
            Some(vec![("planner-0".into(), Some("docs".into()))])
        );
        assert_eq!(names(pods.of("team", "idle")), Some(vec![]));
    }

    #[tokio::test]
    async fn only_changes_of_an_agents_pods_or_their_annotation_wake_it() {
        let pods = AgentPods::default();
        let first = pod("planner-0", Some("planner"), Some("docs"));
        let mut terminating = pod("planner-1", Some("planner"), None);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let woken = watch(
            &pods,
            vec![
                watcher::Event::Init,
                watcher::Event::InitDone,
                watcher::Event::Apply(first.clone()),
                // A status update: same name, same annotation.
                watcher::Event::Apply(first),
                watcher::Event::Apply(pod("planner-1", Some("planner"), None)),
                watcher::Event::Apply(pod("planner-0", Some("planner"), Some("docs,search"))),
                // Relabelled to another agent: both are woken.
                watcher::Event::Apply(pod("planner-0", Some("executor"), Some("docs,search"))),
                watcher::Event::Apply(terminating),
                watcher::Event::Delete(pod("planner-0", Some("executor"), None)),
            ],
        )
        .await;
        assert_eq!(
            woken,
            [
                "planner", "planner", "planner", "planner", "executor", "planner", "executor"
            ]
        );
        assert_eq!(names(pods.of("team", "planner")), Some(vec![]));
        assert_eq!(names(pods.of("team", "executor")), Some(vec![]));
    }

    #[tokio::test]
    async fn a_relist_wakes_only_the_agents_whose_pods_changed_meanwhile() {
        let pods = AgentPods::default();
        let woken = watch(
            &pods,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(pod("a-0", Some("a"), Some("docs"))),
                watcher::Event::InitApply(pod("b-0", Some("b"), Some("docs"))),
                watcher::Event::InitDone,
                watcher::Event::Init,
                watcher::Event::InitApply(pod("a-0", Some("a"), Some("docs"))),
                watcher::Event::InitApply(pod("b-1", Some("b"), Some("docs"))),
                watcher::Event::InitDone,
            ],
        )
        .await;
        assert_eq!(woken, ["b"]);
        assert_eq!(
            names(pods.of("team", "b")),
            Some(vec![("b-1".into(), Some("docs".into()))])
        );
    }
}
