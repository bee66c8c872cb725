//! The agent pods that exist, for the token verifier: the index's pod watch's
//! [`PodPresence`] changes in; each list, change, deletion and failure out, to [`PodEvents`], so
//! a deleted pod's tokens stop being trusted at once (agent pods' tokens are what agents call
//! tools with). One watch of agent pods serves this and `CredentialsStale`. Never writes.

use futures::{Stream, StreamExt};

use super::tokens::PodEvents;
use crate::index::PodPresence;

/// Feeds `events` from the pod watch until it ends.
pub async fn follow(presence: impl Stream<Item = PodPresence>, events: PodEvents) {
    let mut presence = std::pin::pin!(presence);
    while let Some(change) = presence.next().await {
        match change {
            PodPresence::Listed(uids) => events.listed(uids),
            PodPresence::Applied(uid) => events.applied(&uid),
            PodPresence::Deleted(uid) => events.deleted(&uid),
            PodPresence::Lost => {
                tracing::warn!(
                    "agent pod watch failed; tokens are verified on every call until it lists again"
                );
                events.lost();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
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

    fn uids(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    async fn after(events: Vec<PodPresence>) -> PodEvents {
        let pods = TokenVerifier::new(Arc::new(Never)).track_pods(Arc::new(NoPodLookup));
        follow(futures::stream::iter(events), pods.clone()).await;
        pods
    }

    #[tokio::test]
    async fn a_list_then_changes_keep_the_set_of_existing_pods() {
        let pods = after(vec![
            PodPresence::Listed(uids(&["a", "b"])),
            PodPresence::Applied("c".into()),
            PodPresence::Deleted("a".into()),
        ])
        .await;
        assert_eq!(pods.known(), Some((true, uids(&["b", "c"]))));
    }

    #[tokio::test]
    async fn a_failure_unlists_until_the_next_complete_list_replaces_the_set() {
        let failed = after(vec![PodPresence::Listed(uids(&["a"])), PodPresence::Lost]).await;
        assert_eq!(failed.known().map(|k| k.0), Some(false));
        let relisted = after(vec![
            PodPresence::Listed(uids(&["a"])),
            PodPresence::Lost,
            PodPresence::Listed(uids(&["b"])),
        ])
        .await;
        assert_eq!(relisted.known(), Some((true, uids(&["b"]))));
    }
}
