//! Applying projections (ServiceAccounts, NetworkPolicies) without repeating ourselves: the
//! desired object and the store's resourceVersion in, a server-side apply out only when the
//! object is not already the one mandate last applied with the same content, and what the apply
//! did (nothing, a change of mandate's own, or a repair of someone else's change). Also tells
//! the watch echoes of mandate's own applies from changes someone else made.
//!
//! A server-side apply that changes nothing leaves the object alone but still costs the API
//! server a full patch: without this every reconcile (one per trigger) paid two of them.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::MANAGER;

/// What an apply did to a projected object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyOutcome {
    /// The object already was what mandate wants: no request, or an apply that changed nothing.
    Unchanged,
    /// The object was created or brought to a new desired content.
    Changed,
    /// Someone else had changed the object since mandate's last apply of this same content:
    /// the apply put it back.
    Repaired,
}

/// What mandate last applied to each projected object: keyed by a hash of (kind, namespace,
/// name), the hash of the applied content and the resourceVersion the API server answered.
/// In memory only: after a restart everything is applied once more (which changes nothing).
#[derive(Clone, Default)]
pub(crate) struct Applied {
    inner: Arc<AppliedInner>,
}

#[derive(Default)]
struct AppliedInner {
    hasher: RandomState,
    last: Mutex<HashMap<u64, Last>>,
}

struct Last {
    content: u64,
    resource_version: String,
}

impl Applied {
    fn key<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> u64 {
        self.inner
            .hasher
            .hash_one((K::kind(&()).as_ref(), namespace, name))
    }

    fn content<K: Serialize>(&self, object: &K) -> u64 {
        // Serializing these plain structs (string-keyed maps only) cannot fail.
        self.inner
            .hasher
            .hash_one(serde_json::to_vec(object).unwrap_or_default())
    }

    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Last>> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Server-side applies `desired` with field manager `mandate`, unless the object the store
    /// holds (`stored_version`) is the one mandate last applied with this very content.
    pub(crate) async fn apply<K>(
        &self,
        api: &Api<K>,
        namespace: &str,
        desired: &K,
        stored_version: Option<&str>,
    ) -> Result<ApplyOutcome, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = desired.name_any();
        let key = self.key::<K>(namespace, &name);
        let content = self.content(desired);
        let (current, same_content_before) = {
            let last = self.last();
            let last = last.get(&key);
            let same_content = last.filter(|last| last.content == content);
            (
                stored_version.is_some_and(|version| {
                    same_content.is_some_and(|last| last.resource_version == version)
                }),
                same_content.map(|last| last.resource_version.clone()),
            )
        };
        if current {
            return Ok(ApplyOutcome::Unchanged);
        }
        // Nothing applied by this process yet (a restart): read the object before writing it.
        // An apply of what is already there is not always free: the API server keeps an empty
        // rule list (`ingress: []`, which mandate sends to own it) as no list at all, so every
        // such apply is a write with a new resourceVersion and generation.
        let never_applied = !self.last().contains_key(&key);
        if never_applied
            && stored_version.is_some()
            && let Some(stored) = api.get_opt(&name).await?
            && let Some(version) = stored.resource_version()
            && already_as_desired(
                &serde_json::to_value(desired).map_err(kube::Error::SerdeError)?,
                &serde_json::to_value(&stored).map_err(kube::Error::SerdeError)?,
            )
        {
            self.last().insert(
                key,
                Last {
                    content,
                    resource_version: version,
                },
            );
            return Ok(ApplyOutcome::Unchanged);
        }
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await?;
        let answered = applied.resource_version();
        // A server-side apply that changes nothing keeps the resourceVersion.
        let outcome = match (&answered, stored_version, same_content_before) {
            (Some(now), Some(stored), _) if now == stored => ApplyOutcome::Unchanged,
            (Some(now), _, Some(before)) if *now == before => ApplyOutcome::Unchanged,
            (_, _, Some(_)) => ApplyOutcome::Repaired,
            _ => ApplyOutcome::Changed,
        };
        match answered {
            Some(resource_version) => {
                self.last().insert(
                    key,
                    Last {
                        content,
                        resource_version,
                    },
                );
            }
            None => {
                self.last().remove(&key);
            }
        }
        Ok(outcome)
    }

    /// Whether this version of the object is exactly what mandate's last apply produced.
    fn is_echo<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        let meta = object.meta();
        let (Some(namespace), Some(name), Some(version)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return false;
        };
        self.last()
            .get(&self.key::<K>(namespace, name))
            .is_some_and(|last| &last.resource_version == version)
    }

    /// Drops the echoes of mandate's own applies from a stream of projected objects, so an
    /// apply does not wake the reconcile that made it; changes by anyone else pass.
    pub(crate) fn without_echoes<K, S>(&self, objects: S) -> impl Stream<Item = Arc<K>> + use<K, S>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
        S: Stream<Item = Arc<K>>,
    {
        let applied = self.clone();
        objects.filter(move |object| futures::future::ready(!applied.is_echo(object.as_ref())))
    }
}

/// Whether the stored object already holds everything `desired` says, as an apply would leave
/// it: every field desired names has the same value (objects compared field by field, lists
/// element by element with the same length), and a desired empty list or object matches a
/// stored one that is empty or absent. Fields only the stored object has (defaults, status,
/// others' labels) do not count: an apply would not touch them either.
fn already_as_desired(desired: &serde_json::Value, stored: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, stored) {
        (Value::Null, _) => true,
        (Value::Array(want), Value::Null) => want.is_empty(),
        (Value::Object(want), Value::Null) => want.is_empty(),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len()
                && want
                    .iter()
                    .zip(have)
                    .all(|(want, have)| already_as_desired(want, have))
        }
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, want)| already_as_desired(want, have.get(key).unwrap_or(&Value::Null))),
        (want, have) => want == have,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::ObjectMeta;

    fn sa(version: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("team".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        }
    }

    #[test]
    fn the_echo_of_an_apply_is_recognised_and_a_later_change_by_others_is_not() {
        let applied = Applied::default();
        let key = applied.key::<ServiceAccount>("team", "agent");
        applied.last().insert(
            key,
            Last {
                content: 1,
                resource_version: "10".into(),
            },
        );
        assert!(applied.is_echo(&sa("10")));
        assert!(!applied.is_echo(&sa("11")));
        let mut elsewhere = sa("10");
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!applied.is_echo(&elsewhere));
    }

    #[test]
    fn a_stored_object_is_as_desired_when_it_holds_every_desired_field_empty_lists_as_none() {
        use serde_json::json;
        let desired = json!({
            "metadata": {"name": "mandate-a", "labels": {"mandate.dev/agent": "a"}},
            "spec": {"podSelector": {"matchLabels": {"mandate.dev/agent": "a"}},
                     "ingress": [], "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
                     "policyTypes": ["Ingress", "Egress"]},
        });
        // As the API server returns it: the empty list gone, metadata and defaults added.
        let stored = json!({
            "metadata": {"name": "mandate-a", "resourceVersion": "7", "generation": 1,
                         "labels": {"mandate.dev/agent": "a", "team": "x"}},
            "spec": {"podSelector": {"matchLabels": {"mandate.dev/agent": "a"}},
                     "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
                     "policyTypes": ["Ingress", "Egress"]},
        });
        assert!(already_as_desired(&desired, &stored));

        let mut widened = stored.clone();
        widened["spec"]["ingress"] = json!([{}]);
        assert!(
            !already_as_desired(&desired, &widened),
            "a rule someone added"
        );
        let mut appended = stored.clone();
        appended["spec"]["egress"] = json!([{"ports": [{"port": 53, "protocol": "UDP"}]}, {}]);
        assert!(
            !already_as_desired(&desired, &appended),
            "an egress rule appended"
        );
        let mut changed = stored.clone();
        changed["spec"]["egress"][0]["ports"][0]["port"] = json!(54);
        assert!(!already_as_desired(&desired, &changed), "a port changed");
        let mut relabelled = stored;
        relabelled["metadata"]["labels"]
            .as_object_mut()
            .map(|labels| labels.remove("mandate.dev/agent"));
        assert!(
            !already_as_desired(&desired, &relabelled),
            "a label removed"
        );
    }

    #[test]
    fn content_hashes_differ_when_the_desired_object_differs() {
        let applied = Applied::default();
        let mut other = sa("1");
        other.automount_service_account_token = Some(false);
        assert_ne!(applied.content(&sa("1")), applied.content(&other));
        assert_eq!(applied.content(&sa("1")), applied.content(&sa("1")));
    }
}
