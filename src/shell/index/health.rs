//! Watch health: each watch's events and errors in; out, per watch, since when it has been
//! failing (an error and no successful list or event since), for `/readyz` and
//! `mandate_watch_healthy`. Also [`restarting`], the watch stream the index runs: kube's
//! watcher, started over with a fresh list after every error, so a watch that recovers says so
//! with a list (kube's watcher resumes a broken watch silently: with nothing changing, a
//! recovered watch and a dead one look alike). Never talks to the API server itself.
//!
//! Health is judged from what a watch delivers, never from silence: a quiet cluster sends
//! nothing for minutes, and a watch request that stops delivering without failing is ended by
//! its timeout (`WATCH_SECONDS`) and resumed, and then fails loudly if it cannot resume.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;

/// The health of every watch of the index, shared by clones.
#[derive(Clone, Default)]
pub struct WatchHealth {
    watches: Arc<Mutex<BTreeMap<String, Health>>>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    /// When the current run of failures began; `None` while the watch works.
    failing_since: Option<Instant>,
    /// The last error of the current run.
    last_error: Option<String>,
}

/// A watch that has been failing for longer than the bound it was judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub watch: String,
    pub failing_for: Duration,
    pub last_error: String,
}

impl WatchHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Health>> {
        // Every update is one map operation: a poisoned lock still guards whole data.
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `watch` known (healthy) before its first event.
    pub(super) fn register(&self, watch: &str) {
        self.lock().entry(watch.to_owned()).or_default();
    }

    /// Records what `watch` just delivered at `now`. `Init` proves nothing: kube's watcher
    /// announces a list before it asks for it ([`restarting`] holds it back until the list
    /// answers, but a bare one still counts for nothing).
    pub(super) fn observe<K>(
        &self,
        watch: &str,
        event: &watcher::Result<watcher::Event<K>>,
        now: Instant,
    ) {
        match event {
            Ok(watcher::Event::Init) => {}
            Ok(_) => self.working(watch),
            Err(error) => self.failed(watch, error.to_string(), now),
        }
    }

    fn working(&self, watch: &str) {
        let mut watches = self.lock();
        let health = watches.entry(watch.to_owned()).or_default();
        health.failing_since = None;
        health.last_error = None;
    }

    fn failed(&self, watch: &str, error: String, now: Instant) {
        let mut watches = self.lock();
        let health = watches.entry(watch.to_owned()).or_default();
        health.failing_since.get_or_insert(now);
        health.last_error = Some(error);
    }

    /// Every watch, by name, with whether it has been failing for longer than `bound` at
    /// `now` (and since when, and why).
    pub fn judge(&self, bound: Duration, now: Instant) -> Vec<(String, Option<Stalled>)> {
        self.lock()
            .iter()
            .map(|(watch, health)| {
                let stalled = health.failing_since.and_then(|since| {
                    let failing_for = now.saturating_duration_since(since);
                    (failing_for > bound).then(|| Stalled {
                        watch: watch.clone(),
                        failing_for,
                        last_error: health.last_error.clone().unwrap_or_default(),
                    })
                });
                (watch.clone(), stalled)
            })
            .collect()
    }

    /// The watches failing for longer than `bound` at `now`.
    pub fn stalled(&self, bound: Duration, now: Instant) -> Vec<Stalled> {
        self.judge(bound, now)
            .into_iter()
            .filter_map(|(_, stalled)| stalled)
            .collect()
    }
}

/// The watch stream of one kind: `start()` (kube's watcher), started over after every error,
/// with each list's `Init` held back until the list answered: dropped if it failed, so a watch
/// that keeps failing to list yields only errors and its backoff grows (an `Init` is an event,
/// and any event resets the backoff), and so `Init` never stands for a working watch.
pub(super) fn restarting<K, S, F>(start: F) -> impl Stream<Item = S::Item> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    F: FnMut() -> S + Send + 'static,
{
    struct Restarting<S, F, T> {
        start: F,
        current: Option<Pin<Box<S>>>,
        /// An event that follows an `Init` just released.
        queued: Option<T>,
    }
    let state = Restarting {
        start,
        current: None,
        queued: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        if let Some(item) = state.queued.take() {
            return Some((item, state));
        }
        let mut holding_init = false;
        loop {
            let start = &mut state.start;
            let stream = state.current.get_or_insert_with(|| Box::pin(start()));
            // kube's watcher never ends; if one did, so does the watch.
            let item = stream.next().await?;
            match item {
                Ok(watcher::Event::Init) => holding_init = true,
                Err(error) => {
                    // The next poll (after the backoff) starts a fresh watcher, with a list.
                    state.current = None;
                    return Some((Err(error), state));
                }
                Ok(event) if holding_init => {
                    state.queued = Some(Ok(event));
                    return Some((Ok(watcher::Event::Init), state));
                }
                Ok(event) => return Some((Ok(event), state)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kube::runtime::watcher::{Error, Event};

    use super::*;

    fn failure() -> Error {
        Error::NoResourceVersion
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_watch_is_stalled_only_once_it_has_failed_for_longer_than_the_bound() {
        let health = WatchHealth::default();
        let start = Instant::now();
        health.register("namespaces");
        health.register("secrets");
        health.observe::<()>("namespaces", &Err(failure()), start);
        health.observe::<()>("namespaces", &Err(failure()), start + MINUTE / 2);
        assert!(health.stalled(MINUTE, start + MINUTE / 2).is_empty());
        let stalled = health.stalled(MINUTE, start + 2 * MINUTE);
        assert_eq!(
            stalled.iter().map(|s| s.watch.as_str()).collect::<Vec<_>>(),
            ["namespaces"],
            "the failing_since of a run is its first error"
        );
        assert_eq!(stalled[0].failing_for, 2 * MINUTE);
        assert!(!stalled[0].last_error.is_empty());
        let judged = health.judge(MINUTE, start + 2 * MINUTE);
        assert_eq!(judged.len(), 2);
        assert!(judged.iter().any(|(w, s)| w == "secrets" && s.is_none()));
    }

    #[test]
    fn a_bare_init_proves_nothing_and_any_other_event_ends_the_failure() {
        let health = WatchHealth::default();
        let start = Instant::now();
        health.observe::<()>("namespaces", &Err(failure()), start);
        health.observe::<()>("namespaces", &Ok(Event::Init), start);
        assert_eq!(health.stalled(MINUTE, start + 2 * MINUTE).len(), 1);
        health.observe::<()>("namespaces", &Ok(Event::InitDone), start + MINUTE);
        assert!(health.stalled(MINUTE, start + 3 * MINUTE).is_empty());
    }

    #[tokio::test]
    async fn a_failed_watch_starts_over_and_its_list_announcement_waits_for_the_list() {
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        // The first watcher lists, then fails; the second fails its list; the third lists.
        let stream = restarting(move || {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            let events: Vec<watcher::Result<Event<u32>>> = match run {
                0 => vec![
                    Ok(Event::Init),
                    Ok(Event::InitApply(1)),
                    Ok(Event::InitDone),
                    Err(failure()),
                ],
                1 => vec![Ok(Event::Init), Err(failure())],
                _ => vec![Ok(Event::Init), Ok(Event::InitDone), Ok(Event::Apply(2))],
            };
            futures::stream::iter(events)
        });
        let seen: Vec<String> = stream
            .map(|item| match item {
                Ok(Event::Init) => "Init".to_owned(),
                Ok(Event::InitApply(n)) => format!("InitApply({n})"),
                Ok(Event::InitDone) => "InitDone".to_owned(),
                Ok(Event::Apply(n)) => format!("Apply({n})"),
                Ok(Event::Delete(n)) => format!("Delete({n})"),
                Err(_) => "Err".to_owned(),
            })
            .collect()
            .await;
        assert_eq!(
            seen,
            [
                "Init",
                "InitApply(1)",
                "InitDone",
                "Err", // the first watcher
                "Err", // the second: its Init dropped with its failed list
                "Init",
                "InitDone",
                "Apply(2)",
            ]
        );
        assert_eq!(started.load(Ordering::SeqCst), 3);
    }
}
