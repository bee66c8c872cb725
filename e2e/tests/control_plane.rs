//! The local control plane is real: the pinned server version, controllers that create and
//! garbage-collect objects, service-account tokens that authenticate, and admission webhooks
//! called over TLS through `clientConfig.url`.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use mandate_e2e::webhook::{DENIAL_MESSAGE, DENY_LABEL, TestWebhook};
use mandate_e2e::{
    ServingCert, TestNamespace, client, client_with_token, eventually, kubectl_output, pinned,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_server_reports_the_pinned_kubernetes_version() -> anyhow::Result<()> {
    let version = client().await?.apiserver_version().await?;
    assert_eq!(version.git_version, pinned("KUBE_VERSION")?);
    Ok(())
}

#[test]
fn the_k8s_openapi_feature_matches_the_pinned_server_minor() -> anyhow::Result<()> {
    let kube_version = pinned("KUBE_VERSION")?;
    let minor = kube_version
        .split('.')
        .nth(1)
        .expect("KUBE_VERSION is vMAJOR.MINOR.PATCH");
    let cargo = std::fs::read_to_string(mandate_e2e::repo_root().join("Cargo.toml"))?;
    assert!(
        cargo.contains(&format!("\"v1_{minor}\"")),
        "Cargo.toml's k8s-openapi feature must be v1_{minor} to match {kube_version}"
    );
    let go_mod = std::fs::read_to_string(mandate_e2e::repo_root().join("e2e/controlplane/go.mod"))?;
    assert!(go_mod.contains(&format!("k8s.io/kubernetes {kube_version}")));
    Ok(())
}

#[tokio::test]
async fn a_deployment_yields_replicasets_and_pods_and_deleting_it_collects_them()
-> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "cp-gc", &[]).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let pod_count = eventually("the deployment's two pods", TIMEOUT, || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        Ok((list.items.len() == 2).then_some(list.items.len()))
    })
    .await?;
    assert_eq!(pod_count, 2);
    let rs = replica_sets.list(&ListParams::default()).await?;
    assert_eq!(rs.items.len(), 1);
    assert_eq!(rs.items[0].owner_references()[0].name, "web");

    deployments
        .delete("web", &DeleteParams::background())
        .await?;
    eventually(
        "garbage collection of the replica set and pods",
        TIMEOUT,
        || async {
            let rs = replica_sets.list(&ListParams::default()).await?.items.len();
            let pods = pods.list(&ListParams::default()).await?.items.len();
            Ok((rs == 0 && pods == 0).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn a_token_from_kubectl_create_token_authenticates_as_its_service_account()
-> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "cp-token", &[]).await?;
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "researcher" } }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await?;

    let out = kubectl_output(&[
        "create",
        "token",
        "researcher",
        "-n",
        &ns.name,
        "--duration",
        "10m",
    ])?;
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT has three parts");

    let as_sa = client_with_token(&token).await?;
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    }))?;
    let review = Api::<SelfSubjectReview>::all(as_sa)
        .create(&PostParams::default(), &review)
        .await?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some(format!("system:serviceaccount:{}:researcher", ns.name).as_str())
    );
    Ok(())
}

// Multi-threaded: kubectl runs as a blocking child process while the webhook serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_calls_a_webhook_registered_by_url_and_its_denial_reaches_the_client()
-> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "cp-webhook", &[]).await?;
    let cert = ServingCert::generate("e2e-webhook")?;
    let webhook = TestWebhook::start(&cert).await?;

    let name = format!("e2e-{}", ns.name);
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": name },
        "webhooks": [{
            "name": "deny.e2e.mandate.dev",
            "clientConfig": { "url": webhook.url(), "caBundle": ByteString(cert.ca_pem.clone()) },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"] }],
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name } },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))?;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configs.create(&PostParams::default(), &config).await?;
    let _cleanup = DeleteWebhookConfig(name.clone());

    // The API server picks up new webhook configurations asynchronously: retry until the
    // labelled ConfigMap is refused by our webhook.
    let stderr = eventually("the webhook to deny a labelled ConfigMap", TIMEOUT, || async {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: refused\n  namespace: {}\n  labels:\n    {DENY_LABEL}: \"true\"\n",
            ns.name
        );
        let out = mandate_e2e::kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        Ok((!out.status.success() && stderr.contains(DENIAL_MESSAGE)).then_some(stderr))
    })
    .await?;
    assert!(
        stderr.contains("admission webhook \"deny.e2e.mandate.dev\" denied the request"),
        "{stderr}"
    );

    let before = webhook.reviews();
    let out = kubectl_output(&["create", "configmap", "allowed", "-n", &ns.name])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        webhook.reviews() > before,
        "the allowed ConfigMap was reviewed by the webhook"
    );
    Ok(())
}

/// Deletes the webhook configuration when the test ends, pass or fail, so a dead test server
/// never blocks later tests.
struct DeleteWebhookConfig(String);

impl Drop for DeleteWebhookConfig {
    fn drop(&mut self) {
        let name = self.0.clone();
        mandate_e2e::block_on_side_runtime(async move {
            Api::<ValidatingWebhookConfiguration>::all(client().await?)
                .delete(&name, &DeleteParams::default())
                .await?;
            Ok(())
        });
    }
}
