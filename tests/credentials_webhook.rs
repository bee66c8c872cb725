//! The per-tool credentials through the webhook's routes in-process (no socket, no TLS): a real
//! pod CREATE AdmissionReview (`tests/fixtures/admission/pod-create.json`) in at
//! `/mutate/pods`; out, the JSON Patch as the API server reads it (base64, `JSONPatch`), applied
//! here with a JSON Patch implementation as the API server applies it. The patched pod is sent
//! again (the API server's reinvocation) and then to `/validate/pods` (the validating webhooks
//! see the final pod), and a pod that forges the annotation is refused there.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use mandate::admission::{AdmissionConfig, FixedClock, MandateReviewer, Snapshot, SnapshotSource};
use mandate::api::{AgentIdentity, DelegationPolicy, TOOL_CREDENTIALS_ANNOTATION, ToolBinding};
use mandate::authority::{Authority, Config};
use mandate::telemetry::Metrics;
use mandate::webhook::mutate::MUTATE_PODS_PATH;
use mandate::webhook::pods::NoPodLookup;
use mandate::webhook::server::{self, WebhookConfig};
use mandate::webhook::tls::TlsFiles;
use serde_json::{Value, json};

const NOW: &str = "2026-03-02T10:00:00Z";
const POD_CREATE: &str = include_str!("fixtures/admission/pod-create.json");

/// `agents` (enforce) with `researcher`, Ready and holding tool `web-search` (default audience)
/// and `docs` (audience `https://docs.example.com`); its identity allows the fixture's own
/// token audience `mandate.dev/tools`.
fn snapshot() -> Result<Snapshot> {
    let identity: AgentIdentity = serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": "researcher", "namespace": "agents"},
        "spec": {"owner": {"kind": "Group", "name": "team-research"},
                 "purpose": "answers questions",
                 "credentials": {"audiences": ["mandate.dev/tools"]}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Projected",
            "message": "", "lastTransitionTime": "2026-03-01T08:00:00Z"}]},
    }))?;
    let binding: ToolBinding = serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": "research-tools", "namespace": "agents"},
        "spec": {"agent": "researcher", "tools": [
            {"name": "web-search", "actions": ["read"],
             "destination": {"service": {"name": "web-search"}}},
            {"name": "docs", "actions": ["read"], "audience": "https://docs.example.com",
             "destination": {"service": {"name": "docs"}}},
        ]},
    }))?;
    let authority = Authority::from_objects(
        Config::default(),
        [identity],
        [binding],
        Vec::<DelegationPolicy>::new(),
        Vec::<ServiceAccount>::new(),
    );
    let namespace: ObjectMeta = serde_json::from_value(
        json!({"name": "agents", "labels": {"mandate.dev/mode": "enforce"}}),
    )?;
    Ok(Snapshot::from_objects(
        authority,
        [namespace],
        Vec::<ObjectMeta>::new(),
    ))
}

/// The webhook's routes over [`snapshot`] at [`NOW`], and their metrics.
struct Routes {
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    metrics: Metrics,
}

impl Routes {
    fn new() -> Result<Self> {
        let source: SnapshotSource = Arc::new(ArcSwapOption::new(Some(Arc::new(snapshot()?))));
        let reviewer = MandateReviewer::new(source, AdmissionConfig::default())
            .with_clock(FixedClock(NOW.parse::<Timestamp>()?));
        let metrics = Metrics::new();
        let config = WebhookConfig::new(
            ([127, 0, 0, 1], 0).into(),
            TlsFiles::new("unused.crt", "unused.key"),
        );
        let routes = server::routes(
            Arc::new(reviewer),
            Arc::new(NoPodLookup),
            Arc::new(server::NoRecorder),
            metrics.clone(),
            &config,
        );
        Ok(Routes { routes, metrics })
    }

    /// The AdmissionReview answer to `review` posted at `path`.
    async fn post(&self, path: &str, review: &Value) -> Result<Value> {
        let request = hyper::Request::post(path)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(review.to_string())))?;
        let service = TowerToHyperService::new(warp::service(self.routes.clone()));
        let response = service.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == hyper::StatusCode::OK,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }
}

/// The JSON Patch in an answer (`None` without one), decoded as the API server decodes it.
fn patch_of(answer: &Value) -> Result<Option<json_patch::Patch>> {
    let response = &answer["response"];
    let Some(encoded) = response["patch"].as_str() else {
        ensure!(
            response.get("patchType").is_none(),
            "a patchType without a patch"
        );
        return Ok(None);
    };
    ensure!(response["patchType"] == "JSONPatch", "{answer:#}");
    let bytes = STANDARD
        .decode(encoded)
        .context("the patch is not base64")?;
    Ok(Some(serde_json::from_slice(&bytes)?))
}

/// `review` with its object replaced by `object`.
fn with_object(review: &Value, object: &Value) -> Value {
    let mut review = review.clone();
    review["request"]["object"] = object.clone();
    review
}

fn mounts(container: &k8s_openapi::api::core::v1::Container) -> Vec<(&str, &str, Option<bool>)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect()
}

#[tokio::test]
async fn an_agent_pod_gets_its_tool_tokens_once_and_the_final_pod_passes_validation() -> Result<()>
{
    let routes = Routes::new()?;
    let review: Value = serde_json::from_str(POD_CREATE)?;
    let answer = routes.post(MUTATE_PODS_PATH, &review).await?;
    assert_eq!(answer["response"]["allowed"], true, "{answer:#}");
    assert_eq!(
        answer["response"]["uid"], review["request"]["uid"],
        "{answer:#}"
    );
    assert_eq!(
        answer["response"]["auditAnnotations"]["agent"],
        "researcher"
    );
    let patch = patch_of(&answer)?.context("an agent pod gets a patch")?;
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch)?;

    let pod: Pod = serde_json::from_value(object.clone())?;
    let spec = pod.spec.as_ref().context("a spec")?;
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "agent-token",
            "workspace",
            "prompts",
            "mandate-tool-docs",
            "mandate-tool-web-search"
        ],
        "the user's volumes stay first and unchanged"
    );
    let web_search = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mandate-tool-web-search")
        .and_then(|v| {
            v.projected
                .as_ref()?
                .sources
                .as_ref()?
                .first()?
                .service_account_token
                .clone()
        })
        .context("the web-search token")?;
    assert_eq!(
        web_search.audience.as_deref(),
        Some("mandate.dev/agents/web-search")
    );
    assert_eq!(web_search.expiration_seconds, Some(3600), "ReadOnly's TTL");
    assert_eq!(web_search.path, "token");
    let init = &spec.init_containers.as_ref().context("init containers")?[0];
    assert_eq!(
        &mounts(init)[2..],
        [
            (
                "mandate-tool-docs",
                "/var/run/mandate.dev/tools/docs",
                Some(true)
            ),
            (
                "mandate-tool-web-search",
                "/var/run/mandate.dev/tools/web-search",
                Some(true)
            ),
        ]
    );
    assert_eq!(mounts(&spec.containers[0]).len(), 4);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(TOOL_CREDENTIALS_ANNOTATION)
            .map(String::as_str),
        Some("docs,web-search")
    );
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "the pod's own annotations stay"
    );

    // The API server's reinvocation: the patched pod gets no further patch.
    let patched = with_object(&review, &object);
    let again = routes.post(MUTATE_PODS_PATH, &patched).await?;
    assert_eq!(again["response"]["allowed"], true);
    assert!(patch_of(&again)?.is_none(), "{again:#}");

    // The validating webhook sees the final pod: its tool tokens are allowed.
    let validated = routes.post(server::VALIDATE_PODS_PATH, &patched).await?;
    assert_eq!(validated["response"]["allowed"], true, "{validated:#}");

    let metrics = routes.metrics.encode()?;
    assert!(
        metrics.contains(
            r#"mandate_admission_requests_total{resource="pods/credentials",decision="allowed",reason="none",mode="enforce"} 2"#
        ),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_claiming_tool_credentials_without_their_volumes_is_refused() -> Result<()> {
    let routes = Routes::new()?;
    let mut review: Value = serde_json::from_str(POD_CREATE)?;
    review["request"]["object"]["metadata"]["annotations"][TOOL_CREDENTIALS_ANNOTATION] =
        json!("docs,web-search");
    let answer = routes.post(server::VALIDATE_PODS_PATH, &review).await?;
    assert_eq!(answer["response"]["allowed"], false, "{answer:#}");
    assert_eq!(answer["response"]["auditAnnotations"]["reason"], "TokenTTL");
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message
            .contains("names tool web-search, but the pod has no volume mandate-tool-web-search"),
        "{message}"
    );
    Ok(())
}
