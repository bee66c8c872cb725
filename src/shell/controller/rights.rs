//! Which identities RBAC changes concern: the RBAC watches' changes (pings) and the live
//! authority in; out, batched, the identities whose dangerous API rights a batch of changes
//! altered, or whose ApiRightsContained condition does not say what they hold now
//! (`assess::identities_with_changed_api_rights`). The rights are computed in memory from the
//! authority, so a change of a ClusterRole bound cluster-wide wakes only the identities whose
//! result it changes, and no API call is made per identity. Holds no rule; never writes.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;

use crate::api::AgentIdentity;
use crate::assess::identities_with_changed_api_rights;
use crate::authority::Authority;
use crate::index::LiveAuthority;

/// How long a batch gathers changes after its first: `kubectl apply` of a chart's RBAC, or the
/// aggregation controller rewriting `admin`, `edit` and `view` in turn, is one batch.
const BATCH: Duration = Duration::from_millis(200);
/// How long to wait before asking again when the live authority lags behind its watches.
const RETRY: Duration = Duration::from_secs(1);

struct State {
    changed: Arc<Notify>,
    live: LiveAuthority,
    /// The authority the last batch was judged against.
    previous: Option<Authority>,
}

/// The identities to reconcile after RBAC changes. Must be called inside the runtime: the
/// changes are drained by a task of their own from the start, so the RBAC watches never wait
/// on a batch being judged (a judgement waits for those watches to catch up).
pub(super) fn affected_by_rbac(
    changes: impl Stream<Item = ()> + Send + 'static,
    live: LiveAuthority,
) -> impl Stream<Item = ObjectRef<AgentIdentity>> + Send + 'static {
    let changed = Arc::new(Notify::new());
    tokio::spawn({
        let changed = Arc::clone(&changed);
        // A change while a batch is judged leaves a permit: the next batch follows at once.
        changes.for_each(move |()| {
            changed.notify_one();
            futures::future::ready(())
        })
    });
    let state = State {
        changed,
        live,
        previous: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        // What the authority held when the controller started: a reconcile that read it while
        // the first batch arrived is caught by the comparison.
        if state.previous.is_none() {
            state.previous = Some(state.live.latest());
        }
        loop {
            state.changed.notified().await;
            tokio::time::sleep(BATCH).await;
            let current = loop {
                match state.live.current().await {
                    Ok(current) => break current,
                    Err(error) => {
                        tracing::warn!(%error, "RBAC change not judged yet; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            let affected: Vec<ObjectRef<AgentIdentity>> =
                identities_with_changed_api_rights(state.previous.as_ref(), &current)
                    .into_iter()
                    .map(|(namespace, name)| ObjectRef::new(name).within(namespace))
                    .collect();
            state.previous = Some(current);
            if !affected.is_empty() {
                tracing::debug!(identities = affected.len(), "RBAC changed their API rights");
                return Some((futures::stream::iter(affected), state));
            }
        }
    })
    .flatten()
}
