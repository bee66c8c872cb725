//! Packaging on the real control plane: the Helm chart lints, renders and passes the API
//! server's dry run in each variant; installs, upgrades (keeping its webhook certificate) and
//! uninstalls; the kustomize install (`config/default`) passes the dry run and stays equal to
//! the chart; mandate run as a local process with a token of the chart's own ServiceAccount
//! reconciles and admits (the chart's RBAC is sufficient) while that token cannot read Secrets
//! or write RBAC (it is narrow: it lists and watches RBAC only); with mandate down, the chart's
//! webhooks hold back only agent pods, what is in opted-in namespaces that mandate must judge,
//! and mandate's kinds; and the Dockerfile's static build step runs.
//!
//! Every installed release adds an isolation label to all its webhooks' namespaceSelectors, so
//! its webhooks match only namespaces this file creates with that label.
//!
//! cert-manager and prometheus-operator are not installed on the local control plane and this
//! file does not install their CRDs (cluster-wide objects other tests would see): the
//! Certificate, Issuer and ServiceMonitor are checked as rendered (kinds, names, the Secret and
//! Service they point at), and every other object of those variants goes through the dry run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};
use mandate_e2e::admission::{
    NAMESPACE_MODES, WebhookSettings, mutating_webhook_configuration, webhook_configuration,
};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::{install_crds, samples_dir};
use mandate_e2e::{
    TestNamespace, bin_dir, client, eventually, kubeconfig_path, kubectl_ok, kubectl_output,
    kubectl_with_stdin, pinned, repo_root, state_dir,
};
use serde_json::{Value, json};

const ISOLATION_KEY: &str = "e2e.mandate.dev/packaging";
const TIMEOUT: Duration = Duration::from_secs(60);

fn chart_dir() -> PathBuf {
    repo_root().join("charts/mandate")
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs helm from the cache against the local control plane.
fn helm(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(bin_dir()?.join("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()?)
}

fn helm_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = helm(args)?;
    if !out.status.success() {
        bail!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template` arguments with `--set` for each of `sets`.
fn template_args(release: &str, namespace: &str, sets: &[String]) -> Vec<String> {
    let mut args = vec![
        "template".to_owned(),
        release.to_owned(),
        chart_dir().to_string_lossy().into_owned(),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--include-crds".to_owned(),
    ];
    for set in sets {
        args.push("--set".to_owned());
        args.push(set.clone());
    }
    args
}

/// The chart rendered by `helm template`, one JSON value per object.
fn render(release: &str, namespace: &str, sets: &[String]) -> anyhow::Result<Vec<Value>> {
    // `helm template` assumes an old Kubernetes unless told, which the chart's kubeVersion refuses.
    let kube_version = pinned("KUBE_VERSION")?;
    let mut args = template_args(release, namespace, sets);
    args.push("--kube-version".to_owned());
    args.push(kube_version);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    parse_yaml_stream(&helm_ok(&args)?)
}

fn parse_yaml_stream(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn to_yaml_stream(objects: &[&Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

/// Objects of API groups that are not installed here (cert-manager, prometheus-operator).
fn is_external(object: &Value) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    api_version.starts_with("cert-manager.io/") || api_version.starts_with("monitoring.coreos.com/")
}

/// `kubectl apply --dry-run=server` of everything the API server knows how to validate.
fn server_dry_run(objects: &[Value]) -> anyhow::Result<String> {
    let known: Vec<&Value> = objects.iter().filter(|o| !is_external(o)).collect();
    let out = kubectl_with_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&to_yaml_stream(&known)?),
    )?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "server dry run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.matches("(server dry run)").count() == known.len(),
        "not every object was dry-run:\n{stdout}"
    );
    Ok(stdout)
}

/// The webhooks as DESIGN section 3 scopes them, and as e2e/src/admission.rs builds them.
fn check_webhooks(
    objects: &[Value],
    release_namespace: &str,
    isolation: Option<&str>,
    default_webhook_values: bool,
) -> anyhow::Result<()> {
    let vwc = find(objects, "ValidatingWebhookConfiguration")?;
    let webhooks = vwc["webhooks"].as_array().context("no webhooks")?;
    ensure!(webhooks.len() == 13, "expected thirteen webhooks: {vwc:#}");
    // The per-tool credentials: two mutating webhooks, scoped as the two pod webhooks.
    let mwc = find(objects, "MutatingWebhookConfiguration")?;
    let mutating = mwc["webhooks"].as_array().context("no mutating webhooks")?;
    ensure!(
        mutating.len() == 2,
        "expected two mutating webhooks: {mwc:#}"
    );
    ensure!(vwc["metadata"]["name"] == mwc["metadata"]["name"]);
    for webhook in mutating {
        ensure!(webhook["reinvocationPolicy"] == "IfNeeded", "{webhook:#}");
        ensure!(
            webhook["rules"][0]["operations"] == json!(["CREATE"]),
            "{webhook:#}"
        );
    }
    for webhook in webhooks.iter().chain(mutating) {
        let name = webhook["name"].as_str().unwrap_or_default();
        // Only the namespace webhook has an effect (a let-through weakening is recorded), and
        // never on a dry run.
        let side_effects = if name == NAMESPACE_MODES {
            "NoneOnDryRun"
        } else {
            "None"
        };
        ensure!(
            webhook["sideEffects"] == side_effects,
            "{name}: sideEffects"
        );
        ensure!(
            webhook["timeoutSeconds"].as_i64().is_some_and(|t| t <= 10),
            "{name}: timeout is not short"
        );
        ensure!(
            webhook["admissionReviewVersions"] == json!(["v1"]),
            "{name}"
        );
        let selector = &webhook["namespaceSelector"];
        let expressions = selector["matchExpressions"]
            .as_array()
            .context("matchExpressions")?;
        let excluded = expressions
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .with_context(|| format!("{name} excludes no namespaces"))?;
        for namespace in ["kube-system", "kube-node-lease", release_namespace] {
            ensure!(
                excluded["values"]
                    .as_array()
                    .is_some_and(|v| v.contains(&json!(namespace))),
                "{name} does not exclude {namespace}"
            );
        }
        if let Some(isolation) = isolation {
            ensure!(
                selector["matchLabels"][ISOLATION_KEY] == isolation,
                "{name} lacks the isolation label: {selector}"
            );
        }
        // Fail only where scoped to agent namespaces, agent pods, mandate's own kinds or
        // mandate's own (labelled) objects.
        if webhook["failurePolicy"] == "Fail" {
            let agent_namespaces = expressions
                .iter()
                .any(|e| e["key"] == "mandate.dev/mode" && e["operator"] == "Exists");
            // Agent pods, or namespaces that are (or were) opted in.
            let selected = &webhook["objectSelector"]["matchExpressions"][0];
            let agent_objects = selected["operator"] == "Exists"
                && (selected["key"] == "mandate.dev/agent"
                    || selected["key"] == "mandate.dev/mode");
            let mandate_kinds = webhook["rules"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["apiGroups"] == json!(["mandate.dev"])));
            let mandate_objects = webhook["objectSelector"]["matchLabels"]["app.kubernetes.io/managed-by"]
                == "mandate";
            ensure!(
                agent_namespaces || agent_objects || mandate_kinds || mandate_objects,
                "{name} fails closed without being scoped"
            );
        }
    }

    if !default_webhook_values {
        return Ok(());
    }
    // The same webhooks the admission tests register (clientConfig aside).
    let mut settings = WebhookSettings::new("mandate", "https://127.0.0.1:9443", b"CA")
        .own_namespace(release_namespace);
    if let Some(isolation) = isolation {
        settings = settings.isolated_by(ISOLATION_KEY, isolation);
    }
    let reference = serde_json::to_value(webhook_configuration(&settings)?)?;
    let mutating_reference = serde_json::to_value(mutating_webhook_configuration(&settings)?)?;
    let strip = |webhooks: &Value| -> Vec<Value> {
        webhooks
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let mut w = w.clone();
                if let Some(w) = w.as_object_mut() {
                    w.remove("clientConfig");
                    if let Some(selector) = w
                        .get_mut("namespaceSelector")
                        .and_then(Value::as_object_mut)
                        && selector
                            .get("matchLabels")
                            .and_then(Value::as_object)
                            .is_some_and(|l| l.is_empty())
                    {
                        selector.remove("matchLabels");
                    }
                }
                w
            })
            .collect()
    };
    for (chart, built) in [
        (&vwc["webhooks"], &reference["webhooks"]),
        (&mwc["webhooks"], &mutating_reference["webhooks"]),
    ] {
        let (ours, theirs) = (strip(chart), strip(built));
        for (ours, theirs) in ours.iter().zip(&theirs) {
            ensure!(
                ours == theirs,
                "the chart's webhook differs from e2e/src/admission.rs:\nchart: {ours:#}\nadmission.rs: {theirs:#}"
            );
        }
        ensure!(ours.len() == theirs.len());
    }
    Ok(())
}

#[test]
fn helm_lint_passes() -> anyhow::Result<()> {
    let chart = chart_dir().to_string_lossy().into_owned();
    let out = helm_ok(&["lint", "--strict", &chart])?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // The schema refuses what `mandate run` would refuse at start.
    for bad in [
        "defaultMode=block",
        "logging.format=xml",
        "webhook.failurePolicy=Never",
        "trustDomain=Not A Domain",
        "replicaCount=0",
    ] {
        let out = helm(&["lint", &chart, "--set", bad])?;
        assert!(!out.status.success(), "helm lint accepted {bad}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_variants_pass_the_server_dry_run() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "pkg-dry", &[]).await?;
    let release = unique("dry");
    let isolation = format!("iso-{release}");
    let iso = format!("webhook.namespaceSelector.matchLabels.{ISOLATION_KEY}={isolation}")
        .replace("e2e.mandate.dev", "e2e\\.mandate\\.dev");

    // Default values: certificate generated at install, no ServiceMonitor.
    let objects = render(&release, &ns.name, &[])?;
    let expected: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(kinds(&objects), expected);
    check_webhooks(&objects, &ns.name, None, true)?;
    check_own_network(&objects)?;
    let secret = find(&objects, "Secret")?;
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let configuration = find(&objects, kind)?;
        for webhook in configuration["webhooks"].as_array().into_iter().flatten() {
            assert_eq!(
                webhook["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
                "the caBundle of {kind} is the generated CA"
            );
        }
    }
    let deployment = find(&objects, "Deployment")?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "run",
        "--leader-elect=true",
        "--default-mode=enforce",
        "--trust-domain=cluster.local",
        "--approver-group=mandate:approvers",
        "--log-format=json",
        "--dns-namespace=kube-system",
        "--watch-stall-bound=60s",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--webhook-client-ca") || a.starts_with("--authz-client-ca")),
        "client certificates are checked only when asked: {args:?}"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["POD_NAMESPACE", "POD_NAME"]);
    server_dry_run(&objects)?;

    // cert-manager off explicitly, every value changed, isolated: still valid.
    let custom: Vec<String> = [
        "certManager.enabled=false",
        "replicaCount=3",
        "defaultMode=audit",
        "dnsEgress.enabled=false",
        "logging.format=text",
        "trustDomain=example.org",
        "approverGroup=platform:approvers",
        "webhook.failurePolicy=Ignore",
        "webhook.timeoutSeconds=3",
        &iso,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let objects = render(&release, &ns.name, &custom)?;
    check_webhooks(&objects, &ns.name, Some(&isolation), false)?;
    let args = find(&objects, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    for arg in [
        "--default-mode=audit",
        "--dns-namespace=\"",
        "--log-format=text",
        "--trust-domain=example.org",
        "--approver-group=platform:approvers",
    ] {
        assert!(args.contains(arg), "{arg} missing from {args}");
    }
    server_dry_run(&objects)?;

    // cert-manager on: no generated Secret; a Certificate for the Service, the CA injected.
    let objects = render(&release, &ns.name, &["certManager.enabled=true".to_owned()])?;
    assert!(!kinds(&objects).contains("Secret"));
    let certificate = find(&objects, "Certificate")?;
    let issuer = find(&objects, "Issuer")?;
    let service = find(&objects, "Service")?;
    let deployment = find(&objects, "Deployment")?;
    assert_eq!(
        certificate["spec"]["secretName"],
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    let service_dns = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap_or_default(),
        ns.name
    );
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .is_some_and(|d| d.contains(&json!(service_dns))),
        "{certificate:#}"
    );
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let configuration = find(&objects, kind)?;
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!(
                "{}/{}",
                ns.name,
                certificate["metadata"]["name"].as_str().unwrap_or_default()
            ),
            "{kind}"
        );
        for webhook in configuration["webhooks"].as_array().into_iter().flatten() {
            assert!(webhook["clientConfig"]["caBundle"].is_null(), "{kind}");
        }
    }
    check_webhooks(&objects, &ns.name, None, true)?;
    server_dry_run(&objects)?;

    // ServiceMonitor on: it selects the metrics Service (not the webhook's) and scrapes its
    // metrics port.
    let objects = render(
        &release,
        &ns.name,
        &["serviceMonitor.enabled=true".to_owned()],
    )?;
    let monitor = find(&objects, "ServiceMonitor")?;
    let services: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Service").collect();
    assert_eq!(
        services.len(),
        2,
        "the webhook's Service and the metrics Service"
    );
    let selects = |service: &Value| {
        monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|labels| {
                labels
                    .iter()
                    .all(|(key, value)| &service["metadata"]["labels"][key] == value)
            })
    };
    let selected: Vec<&&Value> = services.iter().filter(|s| selects(s)).collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects one Service");
    let service = *selected[0];
    assert_eq!(
        service["metadata"]["name"],
        format!("{release}-mandate-metrics")
    );
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("selector")?
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].clone();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == port)),
        "the Service has no port {port}"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    server_dry_run(&objects)?;

    // Client certificates checked, at the webhook (the API server's) and at the decision
    // service (the gateways'): the CA from values (in a Secret of the chart's) or from an
    // existing Secret, mounted and named to `mandate run`; each independent of the other.
    let ca = base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\n");
    for (port, other) in [("webhook", "authz"), ("authz", "webhook")] {
        for (sets, secret) in [
            (
                vec![
                    format!("{port}.clientAuth.enabled=true"),
                    format!("{port}.clientAuth.caBundle={ca}"),
                ],
                format!("{release}-mandate-{port}-client-ca"),
            ),
            (
                vec![
                    format!("{port}.clientAuth.enabled=true"),
                    format!("{port}.clientAuth.secretName={port}-clients"),
                ],
                format!("{port}-clients"),
            ),
        ] {
            let objects = render(&release, &ns.name, &sets)?;
            let pod = &find(&objects, "Deployment")?["spec"]["template"]["spec"];
            let args = pod["containers"][0]["args"].as_array().context("args")?;
            assert!(
                args.contains(&json!(format!(
                    "--{port}-client-ca=/{port}-client-ca/ca.crt"
                ))),
                "{pod:#}"
            );
            assert!(
                !args.iter().any(|a| a
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("--{other}-client-ca")))),
                "{port}.clientAuth turned on {other}'s too: {args:?}"
            );
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == format!("{port}-client-ca")))
                .context("no client CA volume")?;
            assert_eq!(volume["secret"]["secretName"], json!(secret));
            let mounted = pod["containers"][0]["volumeMounts"]
                .as_array()
                .is_some_and(|m| {
                    m.iter().any(|m| {
                        m["name"] == format!("{port}-client-ca")
                            && m["mountPath"] == format!("/{port}-client-ca")
                    })
                });
            assert!(mounted, "{pod:#}");
            let rendered = objects
                .iter()
                .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == json!(secret));
            assert_eq!(rendered, sets[1].contains("caBundle"), "{secret}");
        }
        let out = helm(
            &template_args(
                &release,
                &ns.name,
                &[format!("{port}.clientAuth.enabled=true")],
            )
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        )?;
        assert!(
            !out.status.success(),
            "{port}: client certificates checked without a CA rendered"
        );
    }
    Ok(())
}

/// mandate's own NetworkPolicy: its pods, ingress only, the webhook and decision ports from
/// anyone, the admin port from the monitoring namespace only, nothing else; and the webhook's
/// Service does not carry the admin port.
fn check_own_network(objects: &[Value]) -> anyhow::Result<()> {
    let policy = find(objects, "NetworkPolicy")?;
    let deployment = find(objects, "Deployment")?;
    ensure!(
        policy["spec"]["podSelector"]["matchLabels"]
            == deployment["spec"]["selector"]["matchLabels"],
        "the policy selects mandate's pods: {policy:#}"
    );
    ensure!(policy["spec"]["policyTypes"] == json!(["Ingress"]));
    let rules = policy["spec"]["ingress"].as_array().context("ingress")?;
    let rule = |port: &str| {
        rules
            .iter()
            .find(|r| r["ports"] == json!([{"port": port, "protocol": "TCP"}]))
            .with_context(|| format!("no rule for port {port}: {policy:#}"))
    };
    ensure!(
        rules.len() == 3,
        "webhook, authz and metrics only: {policy:#}"
    );
    ensure!(
        rule("webhook")?.get("from").is_none(),
        "the API server's address is not known"
    );
    ensure!(rule("authz")?.get("from").is_none());
    ensure!(
        rule("metrics")?["from"]
            == json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
        "{policy:#}"
    );
    let service = find(objects, "Service")?;
    let ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    ensure!(
        ports == ["webhook", "authz"],
        "the webhook Service carries {ports:?}"
    );
    Ok(())
}

#[test]
fn the_network_policy_follows_its_values() -> anyhow::Result<()> {
    // Narrowed webhook callers, no scraper: the admin port is open to no one.
    let objects = render(
        "netpol",
        "mandate-system",
        &[
            "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24".to_owned(),
            "networkPolicy.metricsFrom=null".to_owned(),
        ],
    )?;
    let policy = find(&objects, "NetworkPolicy")?;
    let rules = policy["spec"]["ingress"].as_array().context("ingress")?;
    assert_eq!(rules.len(), 2, "{policy:#}");
    assert_eq!(
        rules[0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/24"}}])
    );
    assert!(
        rules.iter().all(|r| r["ports"][0]["port"] != "metrics"),
        "{policy:#}"
    );
    let objects = render(
        "netpol",
        "mandate-system",
        &["networkPolicy.enabled=false".to_owned()],
    )?;
    assert!(!kinds(&objects).contains("NetworkPolicy"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_meets_the_restricted_pod_security_standard() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(
        &client,
        "pkg-pss",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await?;
    let objects = render("pss", &ns.name, &[])?;
    // The pod runs as the chart's ServiceAccount, which admission looks up.
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(find(&objects, "ServiceAccount")?)?),
    )?;
    let template = &find(&objects, "Deployment")?["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "mandate-pss", "namespace": ns.name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    // Pod Security Admission refuses the pod outright if the template is not "restricted".
    let out = kubectl_with_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&serde_json::to_string(&pod)?),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("PodSecurity"), "{stderr}");
    Ok(())
}

/// A Helm release in a namespace of its own, its webhooks isolated to namespaces carrying
/// `ISOLATION_KEY=<isolation>`; uninstalled when dropped.
struct Release {
    name: String,
    namespace: TestNamespace,
    isolation: String,
}

impl Release {
    async fn install(prefix: &str, sets: &[&str]) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let namespace = TestNamespace::create(&client, prefix, &[]).await?;
        let name = unique("rel");
        let release = Release {
            isolation: format!("iso-{name}"),
            name,
            namespace,
        };
        let mut args = vec![
            "install".to_owned(),
            release.name.clone(),
            chart_dir().to_string_lossy().into_owned(),
            "--namespace".to_owned(),
            release.namespace.name.clone(),
            "--set".to_owned(),
            release.isolation_value(),
        ];
        for set in sets {
            args.push("--set".to_owned());
            args.push((*set).to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = helm_ok(&args)?;
        assert!(out.contains("STATUS: deployed"), "{out}");
        Ok(release)
    }

    fn isolation_value(&self) -> String {
        format!(
            "webhook.namespaceSelector.matchLabels.e2e\\.mandate\\.dev/packaging={}",
            self.isolation
        )
    }

    fn upgrade(&self, sets: &[&str]) -> anyhow::Result<String> {
        let chart = chart_dir().to_string_lossy().into_owned();
        let mut args = vec![
            "upgrade",
            &self.name,
            &chart,
            "--namespace",
            &self.namespace.name,
            "--reuse-values",
        ];
        for set in sets {
            args.push("--set");
            args.push(set);
        }
        helm_ok(&args)
    }

    /// The release's full name (ServiceAccount, ClusterRole, webhook configuration).
    fn fullname(&self) -> String {
        format!("{}-mandate", self.name)
    }

    /// A kubeconfig that authenticates with a fresh token of the chart's ServiceAccount.
    fn service_account_kubeconfig(&self) -> anyhow::Result<PathBuf> {
        let token = kubectl_ok(
            &[
                "create",
                "token",
                &self.fullname(),
                "-n",
                &self.namespace.name,
                "--duration=1h",
            ],
            None,
        )?;
        let admin: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
        let cluster = &admin["clusters"][0]["cluster"];
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": "mandate", "user": {"token": token.trim()}}],
            "contexts": [{"name": "mandate", "context": {"cluster": "local", "user": "mandate"}}],
            "current-context": "mandate",
        });
        let dir = state_dir().join("packaging");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.kubeconfig", self.name));
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
        Ok(path)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if std::env::var("MANDATE_E2E_KEEP").as_deref() == Ok("1") {
            return;
        }
        match helm(&["uninstall", &self.name, "--namespace", &self.namespace.name]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "helm uninstall {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("helm uninstall {} failed: {e:#}", self.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall() -> anyhow::Result<()> {
    let client = client().await?;
    let release = Release::install("pkg-install", &[]).await?;
    let ns = release.namespace.name.clone();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let tls = format!("{}-webhook-tls", release.fullname());
    let before = secrets.get(&tls).await?.data.context("no TLS data")?;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let ca_bundle = |vwc: &ValidatingWebhookConfiguration| {
        vwc.webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle.clone())
            .collect::<Vec<_>>()
    };
    let installed = webhooks.get(&release.fullname()).await?;
    assert!(
        ca_bundle(&installed)
            .iter()
            .all(|b| b.as_ref() == before.get("ca.crt")),
        "the caBundle is the Secret's CA"
    );

    let out = release.upgrade(&["replicaCount=3", "defaultMode=warn"])?;
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("REVISION: 2"), "{out}");
    let deployment: Value = serde_json::from_str(&kubectl_ok(
        &[
            "get",
            "deployment",
            &release.fullname(),
            "-n",
            &ns,
            "-o",
            "json",
        ],
        None,
    )?)?;
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("--default-mode=warn")
    );
    // The certificate and the caBundle survive the upgrade (looked up, not regenerated).
    let after = secrets.get(&tls).await?.data.context("no TLS data")?;
    assert_eq!(
        before, after,
        "the upgrade replaced the webhook certificate"
    );
    let upgraded = webhooks.get(&release.fullname()).await?;
    assert_eq!(ca_bundle(&installed), ca_bundle(&upgraded));
    // The mutating configuration trusts the same CA.
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let tokens = mutating.get(&release.fullname()).await?;
    assert!(
        tokens
            .webhooks
            .iter()
            .flatten()
            .all(|w| w.client_config.ca_bundle.as_ref() == before.get("ca.crt")),
        "the mutating caBundle is the Secret's CA"
    );

    let name = release.fullname();
    drop(release);
    assert!(
        webhooks.get_opt(&name).await?.is_none(),
        "helm uninstall left the webhook configuration"
    );
    assert!(
        mutating.get_opt(&name).await?.is_none(),
        "helm uninstall left the mutating webhook configuration"
    );
    let roles = kubectl_with_stdin(&["get", "clusterrole", &name], None)?;
    assert!(
        !roles.status.success(),
        "helm uninstall left the ClusterRole"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_default_passes_the_dry_run_and_matches_the_chart() -> anyhow::Result<()> {
    let config = repo_root().join("config/default");
    // Other tests here install the CRDs concurrently; a dry-run apply racing one of those
    // updates can hit a resourceVersion conflict, so give it a few tries.
    let out = eventually("the kustomize dry run", Duration::from_secs(30), || async {
        Ok(kubectl_ok(
            &["apply", "-k", &config.to_string_lossy(), "--dry-run=server"],
            None,
        )
        .ok())
    })
    .await?;
    for object in [
        "namespace/mandate-system",
        "customresourcedefinition.apiextensions.k8s.io/agentidentities.mandate.dev",
        "serviceaccount/mandate",
        "clusterrole.rbac.authorization.k8s.io/mandate",
        "role.rbac.authorization.k8s.io/mandate-leader-election",
        "deployment.apps/mandate",
        "service/mandate-webhook",
        "poddisruptionbudget.policy/mandate",
        "networkpolicy.networking.k8s.io/mandate",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/mandate",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/mandate",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }

    // config/ holds the chart rendered as release `mandate` in mandate-system.
    let built = parse_yaml_stream(&kubectl_ok(
        &["kustomize", &config.to_string_lossy()],
        None,
    )?)?;
    let chart = render("mandate", "mandate-system", &[])?;
    let of = |objects: &[Value], kind: &str, path: &[&str]| -> anyhow::Result<Value> {
        let mut value = find(objects, kind)?.clone();
        for key in path {
            value = value[*key].take();
        }
        Ok(value)
    };
    for (kind, path) in [
        ("ClusterRole", &["rules"][..]),
        ("Role", &["rules"]),
        ("ClusterRoleBinding", &["subjects"]),
        ("Service", &["spec"]),
        ("NetworkPolicy", &["spec"]),
        ("PodDisruptionBudget", &["spec"]),
        ("Deployment", &["spec", "replicas"]),
    ] {
        assert_eq!(of(&built, kind, path)?, of(&chart, kind, path)?, "{kind}");
    }
    let container = |objects: &[Value]| -> anyhow::Result<Value> {
        let mut c = of(
            objects,
            "Deployment",
            &["spec", "template", "spec", "containers"],
        )?[0]
            .clone();
        c["image"].take();
        Ok(c)
    };
    assert_eq!(container(&built)?, container(&chart)?);
    let webhooks = |objects: &[Value], kind: &str| -> anyhow::Result<Value> {
        let mut w = of(objects, kind, &["webhooks"])?;
        for webhook in w.as_array_mut().into_iter().flatten() {
            webhook["clientConfig"]["caBundle"].take();
            if let Some(c) = webhook["clientConfig"].as_object_mut() {
                c.remove("caBundle");
            }
        }
        Ok(w)
    };
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert_eq!(webhooks(&built, kind)?, webhooks(&chart, kind)?, "{kind}");
    }

    // config/crd/bases are the generated CRDs (kustomize refuses files outside its directory).
    for entry in std::fs::read_dir(repo_root().join("crds"))? {
        let path = entry?.path();
        let copy = repo_root()
            .join("config/crd/bases")
            .join(path.file_name().context("file name")?);
        assert_eq!(
            std::fs::read_to_string(&path)?,
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "{} differs from {}: run `cargo run -- crds --out config/crd/bases`",
            copy.display(),
            path.display()
        );
    }
    Ok(())
}

/// kubectl as the chart's ServiceAccount.
fn kubectl_as(kubeconfig: &PathBuf, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(bin_dir()?.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()?)
}

fn can_i(kubeconfig: &PathBuf, args: &[&str]) -> anyhow::Result<bool> {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = kubectl_as(kubeconfig, &all)?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {}: {other} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_service_account_is_narrow() -> anyhow::Result<()> {
    let release = Release::install("pkg-narrow", &[]).await?;
    let kubeconfig = release.service_account_kubeconfig()?;
    let ns = release.namespace.name.as_str();

    // What mandate uses.
    for args in [
        &["list", "agentidentities.mandate.dev", "-A"][..],
        &["watch", "toolbindings.mandate.dev", "-A"],
        &[
            "patch",
            "agentidentities.mandate.dev",
            "--subresource=status",
            "-A",
        ],
        &["create", "serviceaccounts", "-n", "default"],
        // After a restart, each projection is read before its first apply.
        &["get", "serviceaccounts", "-n", "default"],
        &["get", "networkpolicies.networking.k8s.io", "-n", "default"],
        &[
            "patch",
            "networkpolicies.networking.k8s.io",
            "-n",
            "default",
        ],
        &["list", "secrets", "-A"],
        &["watch", "namespaces"],
        &["list", "endpointslices.discovery.k8s.io", "-A"],
        &["create", "events.events.k8s.io", "-n", "default"],
        // The pod of a CONNECT (exec, attach, port-forward), by name; agent pods' metadata,
        // watched for the authorizer's token cache.
        &["get", "pods", "-n", "default"],
        // Agent pods' credentials annotation (a metadata-only watch): CredentialsStale.
        &["list", "pods", "-A"],
        &["watch", "pods", "-n", "default"],
        &["create", "tokenreviews.authentication.k8s.io"],
        // RBAC, to evaluate agents' API rights in memory.
        &["list", "clusterroles.rbac.authorization.k8s.io"],
        &["watch", "clusterrolebindings.rbac.authorization.k8s.io"],
        &["list", "roles.rbac.authorization.k8s.io", "-A"],
        &["watch", "rolebindings.rbac.authorization.k8s.io", "-A"],
        &["create", "leases.coordination.k8s.io", "-n", ns],
        &[
            "patch",
            "leases.coordination.k8s.io/mandate-controller",
            "-n",
            ns,
        ],
    ] {
        assert!(can_i(&kubeconfig, args)?, "cannot {args:?}");
    }
    // What it must never do.
    for args in [
        &["get", "secrets", "-A"][..],
        &["get", "secrets", "-n", ns],
        &["create", "secrets", "-n", "default"],
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "default",
        ],
        &["create", "clusterrolebindings"],
        &["create", "rolebindings", "-n", "default"],
        &["create", "rolebindings", "-n", ns],
        &["escalate", "clusterroles"],
        &["bind", "clusterroles"],
        &["patch", "clusterroles"],
        &["delete", "clusterrolebindings"],
        &["update", "roles", "-n", "default"],
        &["delete", "rolebindings", "-n", "default"],
        &["escalate", "roles", "-n", "default"],
        &["impersonate", "users"],
        &["delete", "namespaces"],
        &["patch", "namespaces"],
        &["delete", "serviceaccounts", "-n", "default"],
        &["update", "serviceaccounts", "-n", "default"],
        &[
            "delete",
            "networkpolicies.networking.k8s.io",
            "-n",
            "default",
        ],
        &["create", "pods", "-n", "default"],
        &["patch", "pods", "-n", "default"],
        &["delete", "pods", "-n", "default"],
        &["create", "pods", "--subresource=exec", "-n", "default"],
        &[
            "create",
            "pods",
            "--subresource=portforward",
            "-n",
            "default",
        ],
        &["patch", "agentidentities.mandate.dev", "-n", "default"],
        &["create", "toolbindings.mandate.dev", "-n", "default"],
        &["delete", "agentidentities.mandate.dev", "-n", "default"],
        &[
            "patch",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
        ],
        &["patch", "customresourcedefinitions.apiextensions.k8s.io"],
        &["create", "leases.coordination.k8s.io", "-n", "kube-system"],
        &["patch", "leases.coordination.k8s.io/other-lease", "-n", ns],
    ] {
        assert!(!can_i(&kubeconfig, args)?, "can {args:?}");
    }
    // And the API server refuses the real requests.
    let tls = format!("{}-webhook-tls", release.fullname());
    let out = kubectl_as(&kubeconfig, &["get", "secret", &tls, "-n", ns])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    let sa = format!("{ns}:{}", release.fullname());
    let out = kubectl_as(
        &kubeconfig,
        &[
            "create",
            "clusterrolebinding",
            &format!("{}-escalate", release.name),
            "--clusterrole=cluster-admin",
            &format!("--serviceaccount={sa}"),
        ],
    )?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandate_with_the_charts_service_account_reconciles_and_admits() -> anyhow::Result<()> {
    let client = client().await?;
    let release = Release::install("pkg-operator", &[]).await?;
    let kubeconfig = release.service_account_kubeconfig()?;
    let mut options = OperatorOptions::unique();
    options.lease_name = "mandate-controller".to_owned();
    options.namespace = Some(release.namespace.name.clone());
    options.kubeconfig = Some(kubeconfig);
    // The log is named after the lease and appended to: start from an empty one, so a refusal
    // logged by an earlier run on this machine is not read as this run's.
    let _ = std::fs::remove_file(
        state_dir()
            .join("operator-logs")
            .join(format!("{}.log", options.lease_name)),
    );
    // Ready means every watch listed with this token: the list/watch rules suffice.
    let operator = Operator::start(options).await?;

    // Point the chart's own webhook configuration at the local process.
    let point_webhooks_at = |operator: &Operator| -> anyhow::Result<()> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&operator.cert.ca_pem);
        let url = format!("webhook.url=https://{}", operator.webhook);
        let ca = format!("webhook.caBundle={ca}");
        release.upgrade(&[&url, &ca]).map(|_| ())
    };
    point_webhooks_at(&operator)?;

    let ns = TestNamespace::create(
        &client,
        "pkg-agents",
        &[
            ("mandate.dev/mode", "enforce"),
            (ISOLATION_KEY, &release.isolation),
        ],
    )
    .await?;
    // The ToolBinding is judged against the webhook's view of the cluster, which learns of the
    // AgentIdentity applied just before it a moment later: apply again until both are in.
    let dir = samples_dir();
    let services = dir.join("support/services.yaml");
    let researcher = dir.join("researcher.yaml");
    eventually("the researcher sample to be admitted", TIMEOUT, || async {
        Ok(kubectl_ok(
            &[
                "apply",
                "-n",
                &ns.name,
                "-f",
                &services.to_string_lossy(),
                "-f",
                &researcher.to_string_lossy(),
            ],
            None,
        )
        .map(|_| ())
        .ok())
    })
    .await?;
    let identities = Api::<AgentIdentity>::namespaced(client.clone(), &ns.name);
    eventually("researcher to become Ready", TIMEOUT, || async {
        let identity = identities.get("researcher").await?;
        Ok(identity
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, READY))
            .then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    // Projections were applied with the chart's RBAC.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("researcher")
        .await?;
    assert_eq!(
        sa.metadata
            .annotations
            .unwrap_or_default()
            .get("mandate.dev/spiffe-id")
            .map(String::as_str),
        Some(format!("spiffe://cluster.local/ns/{}/sa/researcher", ns.name).as_str())
    );
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns.name)
        .get("mandate-researcher")
        .await?;
    // A restarted operator reads each projection before its first apply (so a start in sync
    // writes nothing): the chart must let it get ServiceAccounts and NetworkPolicies too.
    let mut operator = operator;
    operator.kill();
    let operator = operator.restart_like().await?;
    // It serves on new ports, with a certificate of its own.
    point_webhooks_at(&operator)?;
    let everywhere = Api::<AgentIdentity>::all(client.clone());
    eventually(
        "the restarted operator to reconcile every identity once",
        Duration::from_secs(90),
        || async {
            let identities = everywhere.list(&Default::default()).await?.items.len();
            // Successes and failures alike: a refused read is a failed reconcile.
            let reconciled: f64 = operator
                .metrics()?
                .lines()
                .filter(|line| line.starts_with(r#"mandate_reconciles_total{kind="AgentIdentity""#))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            Ok((reconciled >= identities as f64).then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    // RBAC refusals read `... is forbidden: User "..." cannot ...`; other 403s (a namespace
    // being terminated by an earlier test) are not about the chart's permissions.
    let log = operator.log();
    let rbac_refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("is forbidden: User"))
        .collect();
    assert!(
        rbac_refusals.is_empty(),
        "the operator hit a permission error:\n{}",
        rbac_refusals.join("\n")
    );

    // Admission through the chart's webhook configuration: the agent pod in, an unnamed pod out.
    let pod = |name: &str, labels: Value, service_account: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns.name, "labels": labels},
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": false,
                "containers": [{"name": "agent", "image": "registry.example/agent:1"}],
            }
        })
        .to_string()
    };
    let admitted = kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(&pod(
            "researcher",
            json!({"mandate.dev/agent": "researcher"}),
            "researcher",
        )),
    )?;
    assert!(
        admitted.status.success(),
        "agent pod refused: {}\noperator log:\n{}",
        String::from_utf8_lossy(&admitted.stderr),
        operator.log()
    );
    let refused = kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(&pod("stray", json!({}), "default")),
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a pod without identity was admitted"
    );
    assert!(
        stderr.contains("pods.namespaces.mandate.dev") && stderr.contains("NoIdentity"),
        "{stderr}"
    );
    // A CONNECT names its pod only: the chart's `get pods` lets the webhook look it up, so
    // the refusal names the agent's owner instead of a failed lookup.
    let exec = kubectl_output(&["exec", "researcher", "-n", &ns.name, "--", "true"])?;
    let stderr = String::from_utf8_lossy(&exec.stderr);
    assert!(
        stderr.contains("connect.namespaces.mandate.dev")
            && stderr.contains("ExecNotOwner")
            && stderr.contains("neither the owner of agent researcher"),
        "{stderr}\noperator log:\n{}",
        operator.log()
    );
    drop(operator);
    Ok(())
}

#[test]
fn the_dockerfiles_static_build_runs_or_says_loudly_why_not() -> anyhow::Result<()> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    assert!(dockerfile.contains("FROM gcr.io/distroless/static:nonroot"));
    assert!(dockerfile.contains("USER 65532"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/mandate"]"#));
    assert!(dockerfile.contains(r#"CMD ["run"]"#));
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/static-build.sh"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The script ran the Dockerfile's own command.
    assert!(
        stdout.contains(
            "Dockerfile command: cargo build --release --locked --target \"$TARGET\" --bin mandate"
        ),
        "{stdout}"
    );
    if stdout.contains("SKIPPING the static build") {
        eprintln!("{stdout}");
    } else {
        assert!(stdout.contains("is a static binary"), "{stdout}\n{stderr}");
    }
    Ok(())
}

/// Issue 14: with mandate down, the chart's webhooks hold back only what they must. The chart's
/// own webhook configurations (rendered, isolated to this test's namespaces) are registered
/// with their `clientConfig` pointed at a loopback port nobody listens on: every call fails at
/// once, as when no replica is up. Outside opted-in namespaces nothing but agent pods and
/// mandate's kinds waits on mandate; in an opted-in namespace its pods and NetworkPolicies do,
/// as does opting the namespace out, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mandate_down_only_agent_namespaces_agent_pods_and_mandates_kinds_wait_for_it()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let release = unique("down");
    let isolation = format!("iso-{release}");
    let iso = format!("webhook.namespaceSelector.matchLabels.{ISOLATION_KEY}={isolation}")
        .replace("e2e.mandate.dev", "e2e\\.mandate\\.dev");
    let objects = render(&release, "mandate-system", &[iso])?;
    let plain =
        TestNamespace::create(&client, "pkg-down-plain", &[(ISOLATION_KEY, &isolation)]).await?;
    let agents = TestNamespace::create(
        &client,
        "pkg-down-agents",
        &[(ISOLATION_KEY, &isolation), ("mandate.dev/mode", "enforce")],
    )
    .await?;
    // Bound and dropped: closed, so each call is refused at once instead of timing out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut registered = Vec::new();
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let mut configuration = find(&objects, kind)?.clone();
        for webhook in configuration["webhooks"]
            .as_array_mut()
            .context("webhooks")?
        {
            let client_config = &webhook["clientConfig"];
            let path = client_config["service"]["path"]
                .as_str()
                .context("the chart's webhooks call its Service at a path")?;
            webhook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": client_config["caBundle"],
            });
        }
        let name = configuration["metadata"]["name"]
            .as_str()
            .context("name")?
            .to_owned();
        kubectl_ok(
            &["apply", "-f", "-"],
            Some(&serde_json::to_string(&configuration)?),
        )?;
        registered.push((kind.to_lowercase(), name));
    }
    let checked = mandate_down_checks(&plain.name, &agents.name).await;
    // Unregistered before the namespaces go, so nothing of their deletion waits on them.
    for (kind, name) in &registered {
        let _ = kubectl_output(&["delete", kind, name, "--ignore-not-found"]);
    }
    checked
}

/// What is admitted and what waits in `p` (not opted in) and `a` (opted in) with mandate down.
async fn mandate_down_checks(p: &str, a: &str) -> anyhow::Result<()> {
    let pod = |name: &str, agent: bool| {
        let labels = if agent {
            json!({"mandate.dev/agent": name})
        } else {
            json!({})
        };
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
    };
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "registry.example/web:1"}]}}}});
    let network_policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}});
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "type": "Opaque", "stringData": {"password": "x"}});
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}, "data": {"a": "b"}});
    let service_account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "ci-bot"}});
    let role_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ci-bot-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "ci-bot"}]});
    let identity = json!({"apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": "researcher"},
        "spec": {"owner": {"kind": "User", "name": "olivia"}, "purpose": "e2e"}});
    let create = |ns: &str, object: &Value| {
        kubectl_with_stdin(&["create", "-n", ns, "-f", "-"], Some(&object.to_string()))
    };
    // Admitted: retried while the namespace's default ServiceAccount is not there yet (the API
    // server's own admission refuses pods until it is), never past the timeout.
    let admitted = |ns: String, object: Value| async move {
        let what = format!(
            "{} {}/{} admitted with mandate down",
            object["kind"].as_str().unwrap_or_default(),
            ns,
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        eventually(&what, Duration::from_secs(30), || {
            let out = create(&ns, &object);
            async move {
                let out = out?;
                ensure!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(Some(()))
            }
        })
        .await
    };
    // Refused because mandate did not answer, by one of the webhooks named (a pod meets the
    // mutating webhook first).
    let waits = |ns: &str, object: &Value, webhooks: &[&str]| -> anyhow::Result<()> {
        let out = create(ns, object)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("failed calling webhook")
                && webhooks
                    .iter()
                    .any(|w| stderr.contains(&format!("webhook \"{w}\""))),
            "{} {ns}: expected one of {webhooks:?} to fail closed, got: {stderr}",
            object["kind"]
        );
        Ok(())
    };

    // Outside opted-in namespaces: only agent pods and mandate's kinds wait.
    for object in [
        &deployment,
        &network_policy,
        &secret,
        &config_map,
        &service_account,
        &role_binding,
        &pod("plain-0", false),
    ] {
        admitted(p.to_owned(), object.clone()).await?;
    }
    kubectl_ok(&["label", "namespace", p, "team=web"], None)?;
    waits(
        p,
        &pod("researcher-0", true),
        &["tool-tokens.agents.mandate.dev", "pods.agents.mandate.dev"],
    )?;
    waits(p, &identity, &["resources.mandate.dev"])?;

    // In an opted-in namespace: its pods and NetworkPolicies wait, and so does opting out;
    // workloads (judged again as pods), Secrets other than legacy tokens and the rest do not.
    for object in [
        &deployment,
        &secret,
        &config_map,
        &service_account,
        &role_binding,
    ] {
        admitted(a.to_owned(), object.clone()).await?;
    }
    waits(
        a,
        &pod("stray-0", false),
        &[
            "tool-tokens.namespaces.mandate.dev",
            "pods.namespaces.mandate.dev",
        ],
    )?;
    waits(
        a,
        &network_policy,
        &["networkpolicies.namespaces.mandate.dev"],
    )?;
    let out = kubectl_with_stdin(&["label", "namespace", a, "mandate.dev/mode-"], None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("webhook \"namespaces.mandate.dev\""),
        "opting out while mandate is down: {stderr}"
    );
    Ok(())
}
