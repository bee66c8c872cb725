//! Writing statuses: server-side apply of only the status, skipped when nothing changed so an
//! in-sync reconcile writes nothing; and the requeue delay until an assessment's next change.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, ReconcileError};
use crate::api::MANAGER;

/// Applies `status` to the object's status subresource with field manager `mandate`.
pub(crate) async fn apply<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// Applies `status` unless the object already carries exactly it, so an in-sync reconcile
/// writes nothing; a write is logged at info. Returns whether it wrote.
pub(crate) async fn write_if_changed<K, S>(
    ctx: &Context,
    kind: &'static str,
    namespace: &str,
    name: &str,
    current: Option<&S>,
    status: &S,
) -> Result<bool, ReconcileError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    apply(&api, name, status)
        .await
        .map_err(|source| ReconcileError::WriteStatus {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    tracing::info!(kind, %namespace, %name, "status written");
    Ok(true)
}

/// How long to wait before reconciling again: until just after the next validity boundary,
/// or the resync period, whichever comes first. The margin makes `now >= boundary` hold when
/// the reconcile runs.
pub(crate) fn requeue_after(next: Option<Timestamp>, now: Timestamp, resync: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(250);
    next.and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map(|until| (until + MARGIN).min(resync))
        .unwrap_or(resync)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_boundary_ahead_requeues_just_after_it() {
        let delay = requeue_after(Some(at(120)), at(100), Duration::from_secs(300));
        assert_eq!(delay, Duration::from_millis(20_250));
    }

    #[test]
    fn a_boundary_beyond_the_resync_period_requeues_at_the_resync() {
        let delay = requeue_after(Some(at(10_000)), at(100), Duration::from_secs(300));
        assert_eq!(delay, Duration::from_secs(300));
    }

    #[test]
    fn no_boundary_requeues_at_the_resync() {
        assert_eq!(
            requeue_after(None, at(100), Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
