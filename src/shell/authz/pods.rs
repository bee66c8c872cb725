//! The agent pods that exist, for the token verifier: a metadata-only watch of pods labelled
//! `mandate.dev/agent` in; their UIDs, each deletion and each failure of the watch out, to
//! [`PodEvents`], so a deleted pod's tokens stop being trusted at once (agent pods' tokens are
//! what agents call tools with). Keeps nothing but UIDs; never writes.

use std::collections::HashSet;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};

use super::tokens::PodEvents;
use crate::api::AGENT_LABEL;
use crate::index::{WATCH_SECONDS, WatchBackoff};

/// Watches agent pods until the process ends, telling `events` what exists.
pub async fn watch(client: Client, events: PodEvents) {
    let config = watcher::Config::default()
        .labels(AGENT_LABEL)
        .timeout(WATCH_SECONDS);
    // An Api of PartialObjectMeta makes metadata-only requests.
    let pods = Api::<PartialObjectMeta<Pod>>::all(client);
    let stream = watcher(pods, config).backoff(WatchBackoff::default());
    follow(stream, events).await;
}

/// Feeds `events` from a watch's events (separate from the API for tests).
pub async fn follow(
    stream: impl Stream<Item = watcher::Result<Event<PartialObjectMeta<Pod>>>>,
    events: PodEvents,
) {
    let uid = |pod: &PartialObjectMeta<Pod>| pod.metadata.uid.clone();
    let mut relisting: HashSet<String> = HashSet::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relisting.clear(),
            Ok(Event::InitApply(pod)) => relisting.extend(uid(&pod)),
            Ok(Event::InitDone) => events.listed(std::mem::take(&mut relisting)),
            Ok(Event::Apply(pod)) => {
                if let Some(uid) = uid(&pod) {
                    events.applied(&uid);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = uid(&pod) {
                    events.deleted(&uid);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "agent pod watch failed; tokens are verified on every call until it lists again");
                events.lost();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;
    use crate::authz::tokens::{Reviewed, TokenReviewer, TokenVerifier};
    use crate::webhook::pods::NoPodLookup;

    struct Never;

    impl TokenReviewer for Never {
        fn review(&self, _: &str, _: Vec<String>) -> BoxFuture<'_, Result<Reviewed, String>> {
            Box::pin(async { Err("not asked in these tests".into()) })
        }
    }

    fn pod(uid: &str) -> PartialObjectMeta<Pod> {
        let mut pod = PartialObjectMeta::<Pod>::default();
        pod.metadata.uid = Some(uid.into());
        pod
    }

    fn uids(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    async fn after(events: Vec<watcher::Result<Event<PartialObjectMeta<Pod>>>>) -> PodEvents {
        let pods = TokenVerifier::new(Arc::new(Never)).track_pods(Arc::new(NoPodLookup));
        follow(futures::stream::iter(events), pods.clone()).await;
        pods
    }

    #[tokio::test]
    async fn a_list_then_changes_keep_the_set_of_existing_pods() {
        let pods = after(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pod("a"))),
            Ok(Event::InitApply(pod("b"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(pod("c"))),
            Ok(Event::Delete(pod("a"))),
        ])
        .await;
        assert_eq!(pods.known(), Some((true, uids(&["b", "c"]))));
    }

    #[tokio::test]
    async fn a_failure_unlists_until_the_next_complete_list_replaces_the_set() {
        let failed = after(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pod("a"))),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
        ])
        .await;
        assert_eq!(failed.known().map(|k| k.0), Some(false));
        let relisted = after(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pod("a"))),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitApply(pod("b"))),
            Ok(Event::InitDone),
        ])
        .await;
        assert_eq!(relisted.known(), Some((true, uids(&["b"]))));
    }
}
