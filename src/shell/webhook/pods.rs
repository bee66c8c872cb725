//! The pod a CONNECT goes to: its namespace and name in; its metadata, that it does not exist,
//! or why the lookup failed out, as the [`TargetPod`] the pure review reads. The options of a
//! CONNECT (`kubectl exec`, `attach`, `port-forward`) say nothing of the pod, and an
//! objectSelector cannot match its labels, so the webhook asks the API server: one GET of the
//! pod's metadata per CONNECT (interactive and rare, unlike pod admission, so mandate keeps no
//! watch of every pod in the cluster for it). Holds no rule.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};

use crate::admission::TargetPod;

/// Looks a pod's metadata up: `Ok(None)` when there is no such pod.
pub trait PodLookup: Send + Sync + 'static {
    fn metadata<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, PodLookupError>>;
}

/// Why a pod could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum PodLookupError {
    #[error("getting pod {namespace}/{name} from the API server: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("getting pod {namespace}/{name} took longer than {timeout:?}")]
    TimedOut {
        namespace: String,
        name: String,
        timeout: Duration,
    },
    /// The webhook was started without a way to look pods up (tests, load targets).
    #[error("this webhook server has no pod lookup")]
    Unavailable,
}

/// Through the API server: `get` on pods (metadata only), the one permission this needs.
impl PodLookup for Client {
    fn metadata<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, PodLookupError>> {
        Box::pin(async move {
            Api::<Pod>::namespaced(self.clone(), namespace)
                .get_metadata_opt(name)
                .await
                .map(|pod| pod.map(|pod| pod.metadata))
                .map_err(|source| PodLookupError::Get {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })
        })
    }
}

/// No lookup: every CONNECT's pod stays unknown, so agent namespaces refuse them.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPodLookup;

impl PodLookup for NoPodLookup {
    fn metadata<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, PodLookupError>> {
        Box::pin(async { Err(PodLookupError::Unavailable) })
    }
}

/// Looks pod `name` up within `timeout` and says what was found as the review reads it.
pub async fn target_pod(
    pods: &dyn PodLookup,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> TargetPod {
    let looked_up = match tokio::time::timeout(timeout, pods.metadata(namespace, name)).await {
        Ok(looked_up) => looked_up,
        Err(_) => Err(PodLookupError::TimedOut {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            timeout,
        }),
    };
    match looked_up {
        Ok(Some(metadata)) => TargetPod::Found(Box::new(metadata)),
        Ok(None) => TargetPod::Missing,
        Err(error) => {
            tracing::warn!(namespace, name, %error, "looking up the pod of a CONNECT");
            TargetPod::LookupFailed(error.to_string())
        }
    }
}
