//! The operator itself (issue 14) on the real control plane, attacked the way it was:
//!
//! - (a) a namespace developer (`kubectl --as dev`, holding `edit` and the right to patch the
//!   namespace) removes the `mandate.dev/mode` label, or sets `warn`, on a namespace where an
//!   identity lives: refused (`ModeWeakened`); a member of the approver group (`--as carol
//!   --as-group mandate:approvers`) does it: admitted, with an Event on the namespace and
//!   `mandate_namespace_mode_weakened_total` moved (a dry run moves neither), and the identity
//!   then reports `ServiceAccountGuarded=False`;
//! - (b) an identity in a namespace that is not opted in reports `ServiceAccountGuarded=False`
//!   (and `mandate inventory` lists it), and True once the namespace opts in;
//! - (c) with `--webhook-client-ca`, reviews through the API server (which presents the client
//!   certificate of e2e/cluster.sh's admission configuration) still refuse and admit pods, and
//!   a review posted straight to the port without that certificate (none, or the cluster
//!   admin's) is refused during the TLS handshake: no metric moves, no decision is logged;
//! - (d) mandate run with the chart's RBAC: revoking its right to list and watch namespaces
//!   turns `/readyz` false after the stall bound, naming the watch, and `mandate_watch_healthy`
//!   to 0; restoring it turns both back;
//! - (e) 300 reviews of random resources posted straight to the webhook port (no client CA)
//!   leave the number of `mandate_admission_requests_total` series unchanged;
//! - (f) with `--authz-client-ca`, a gateway presenting a certificate that CA signed may assert
//!   an agent's SPIFFE ID to the decision service and gets a decision (logged with
//!   `gateway_verified: true`), over AuthZEN and over Envoy's gRPC (`source.principal`); a
//!   client without a certificate, or with the cluster admin's, is refused during the TLS
//!   handshake and no decision is logged. (Without a client CA, the
//!   same asserted SPIFFE ID is refused as `Unauthenticated`: e2e/tests/authz.rs.)
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use mandate::api::AgentIdentity;
use mandate::api::conditions::SERVICE_ACCOUNT_GUARDED;
use mandate_e2e::admission::{NAMESPACE_MODES, PODS_IN_AGENT_NAMESPACES};
use mandate_e2e::ext_authz::{self, McpCall};
use mandate_e2e::operator::{Operator, OperatorOptions, http_get, mandate_binary};
use mandate_e2e::resources::install_crds;
use mandate_e2e::scene::{Agent, Scene};
use mandate_e2e::{
    TestNamespace, block_on_side_runtime, client, eventually, kubeconfig_path, kubectl_ok,
    kubectl_with_stdin, repo_root, state_dir,
};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
const ISOLATION_LABEL: &str = "e2e.mandate.dev/hardening";
const DEV: &str = "dev";
const APPROVER: &str = "carol";
const APPROVERS: &str = "mandate:approvers";

/// The operator, its webhooks scoped to this test's namespaces.
struct Hardening {
    scene: Scene,
}

impl std::ops::Deref for Hardening {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl Hardening {
    async fn start(test: &str, options: OperatorOptions) -> anyhow::Result<Self> {
        let scene = Scene::start(test, ISOLATION_LABEL, options).await?;
        Ok(Hardening { scene })
    }

    /// Applies identity `name` with one live tool (as the admin) and waits until it is Ready
    /// (so the webhook's view holds it).
    async fn ready_agent(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        self.scene.ready_agent(ns, &Agent::named(name)).await
    }

    /// Waits until the identity's condition `type_` has `status`; returns its (reason, message).
    async fn condition(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        status: bool,
    ) -> anyhow::Result<(String, String)> {
        let identities: Api<AgentIdentity> = Api::namespaced(self.client.clone(), ns);
        let wanted = if status { "True" } else { "False" };
        eventually(
            &format!("{type_}={wanted} on AgentIdentity {ns}/{name}"),
            TIMEOUT,
            || async {
                let identity = identities.get(name).await?;
                Ok(identity
                    .status
                    .iter()
                    .flat_map(|s| &s.conditions)
                    .find(|c| c.type_ == type_ && c.status == wanted)
                    .map(|c| (c.reason.clone(), c.message.clone())))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }
}

/// Cluster-scoped RBAC objects made by a test, deleted when dropped.
struct ClusterObjects(Vec<String>);

impl ClusterObjects {
    fn apply(&mut self, object: &Value) -> anyhow::Result<()> {
        kubectl_ok(&["apply", "-f", "-"], Some(&object.to_string()))?;
        let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.0
            .push(format!("{kind}.rbac.authorization.k8s.io/{name}"));
        Ok(())
    }
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let objects = std::mem::take(&mut self.0);
        block_on_side_runtime(async move {
            for object in objects {
                let _ = kubectl_with_stdin(&["delete", &object, "--ignore-not-found"], None);
            }
            Ok(())
        });
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless `out` is mandate's refusal by `webhook` naming `code`.
fn refused(out: &Output, webhook: &str, code: &str) -> anyhow::Result<()> {
    let text = stderr(out);
    if out.status.success()
        || !text.contains(&format!(
            "admission webhook \"{webhook}\" denied the request"
        ))
        || !text.contains(code)
    {
        bail!(
            "expected {webhook} to refuse with {code}; got {:?}: {text}",
            out.status
        );
    }
    Ok(())
}

/// The value of the metric series `series` (name and labels as printed), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The series of `mandate_admission_requests_total`.
fn admission_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("mandate_admission_requests_total{"))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (a) Weakening a namespace's mode

/// `dev` holds `edit` in `ns` and may get and patch that namespace (a developer who labels
/// it); so may `carol`, who is in the approver group.
fn grant_namespace_labelling(rbac: &mut ClusterObjects, ns: &str, run: &str) -> anyhow::Result<()> {
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "dev-edit",
            "--clusterrole=edit",
            "--user",
            DEV,
            "-n",
            ns,
        ],
        None,
    )?;
    let name = format!("mandate-e2e-{run}-label-{ns}");
    rbac.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [ns],
            "verbs": ["get", "patch", "update"]}],
    }))?;
    rbac.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DEV},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APPROVER},
        ],
    }))
}

fn as_dev(args: &[&str]) -> anyhow::Result<Output> {
    let mut all = vec!["--as", DEV];
    all.extend_from_slice(args);
    kubectl_with_stdin(&all, None)
}

fn as_approver(args: &[&str]) -> anyhow::Result<Output> {
    let mut all = vec!["--as", APPROVER, "--as-group", APPROVERS];
    all.extend_from_slice(args);
    kubectl_with_stdin(&all, None)
}

fn mode_of(ns: &str) -> anyhow::Result<String> {
    kubectl_ok(
        &[
            "get",
            "namespace",
            ns,
            "-o",
            "jsonpath={.metadata.labels.mandate\\.dev/mode}",
        ],
        None,
    )
}

const WEAKENED_BY_APPROVER: &str = r#"mandate_namespace_mode_weakened_total{by_approver="true"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weakening_a_namespaces_mode_where_identities_live_needs_an_approver_and_is_recorded()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let hardening = Hardening::start("weaken", OperatorOptions::unique()).await?;
    let ns = hardening.namespace("weaken", Some("enforce")).await?;
    let n = ns.name.as_str();
    let mut rbac = ClusterObjects(Vec::new());
    grant_namespace_labelling(&mut rbac, n, &hardening.run)?;
    hardening.ready_agent(n, "researcher").await?;
    let (reason, _) = hardening
        .condition(n, "researcher", SERVICE_ACCOUNT_GUARDED, true)
        .await?;
    assert_eq!(reason, "NamespaceOptedIn");

    // The developer opts the namespace out, or down to warn: refused.
    let out = as_dev(&["label", "namespace", n, "mandate.dev/mode-"])?;
    refused(&out, NAMESPACE_MODES, "ModeWeakened")?;
    assert!(stderr(&out).contains("researcher"), "{}", stderr(&out));
    let out = as_dev(&[
        "label",
        "namespace",
        n,
        "mandate.dev/mode=warn",
        "--overwrite",
    ])?;
    refused(&out, NAMESPACE_MODES, "ModeWeakened")?;
    assert_eq!(mode_of(n)?, "enforce");
    // Anything else about the namespace is not mandate's to judge.
    let out = as_dev(&["label", "namespace", n, "team=research"])?;
    ensure!(out.status.success(), "an unrelated label: {}", stderr(&out));

    let metrics = hardening.operator.metrics()?;
    assert_eq!(
        metric(&metrics, WEAKENED_BY_APPROVER),
        Some(0.0),
        "{metrics}"
    );

    // An approver's dry run is admitted and records nothing.
    let out = as_approver(&[
        "label",
        "namespace",
        n,
        "mandate.dev/mode-",
        "--dry-run=server",
    ])?;
    ensure!(out.status.success(), "approver's dry run: {}", stderr(&out));
    assert_eq!(mode_of(n)?, "enforce");
    let metrics = hardening.operator.metrics()?;
    assert_eq!(
        metric(&metrics, WEAKENED_BY_APPROVER),
        Some(0.0),
        "{metrics}"
    );

    // The approver does it: admitted, counted, an Event on the namespace.
    let out = as_approver(&["label", "namespace", n, "mandate.dev/mode-"])?;
    ensure!(out.status.success(), "approver: {}", stderr(&out));
    assert_eq!(mode_of(n)?, "");
    let metrics = hardening.operator.metrics()?;
    assert_eq!(
        metric(&metrics, WEAKENED_BY_APPROVER),
        Some(1.0),
        "{metrics}"
    );
    let events: Api<Event> = Api::namespaced(hardening.client.clone(), "default");
    let note = eventually(
        "the ModeWeakened Event on the namespace",
        TIMEOUT,
        || async {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={n}")))
                .await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("ModeWeakened")
                        && e.involved_object.kind.as_deref() == Some("Namespace")
                })
                .map(|e| e.message.unwrap_or_default()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", hardening.operator.log()))?;
    assert!(
        note.contains("from enforce to none (label removed) by carol"),
        "{note}"
    );
    let log = hardening.operator.log();
    assert!(
        log.lines().any(|l| l.contains("namespace mode weakened")
            && l.contains(n)
            && l.contains("\"by_approver\":true")),
        "{log}"
    );

    // Opted out, its pods are no longer all reviewed: the identity says so.
    let (reason, message) = hardening
        .condition(n, "researcher", SERVICE_ACCOUNT_GUARDED, false)
        .await?;
    assert_eq!(reason, "NamespaceNotOptedIn");
    assert!(message.contains("are not checked"), "{message}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) An identity outside opted-in namespaces

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outside_opted_in_namespaces_reports_its_service_account_unguarded()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let hardening = Hardening::start("unguarded", OperatorOptions::unique()).await?;
    let ns = hardening.namespace("unguarded", None).await?;
    let n = ns.name.as_str();
    hardening.ready_agent(n, "scout").await?;
    let (reason, message) = hardening
        .condition(n, "scout", SERVICE_ACCOUNT_GUARDED, false)
        .await?;
    assert_eq!(reason, "NamespaceNotOptedIn");
    assert!(
        message.contains(
            "pods running as ServiceAccount scout without the mandate.dev/agent label are not checked"
        ) && message.contains(&format!("kubectl label namespace {n} mandate.dev/mode=enforce")),
        "{message}"
    );

    // mandate inventory says the same.
    let out = Command::new(mandate_binary())
        .args(["inventory", "-n", n, "-o", "json"])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    ensure!(out.status.success(), "inventory: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let scout = report["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["name"] == "scout"))
        .context("scout in the inventory")?;
    assert_eq!(scout["serviceAccountGuarded"], json!(false), "{scout:#}");
    let out = Command::new(mandate_binary())
        .args(["inventory", "-n", n])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("UNGUARDED SERVICE ACCOUNTS (1)"), "{table}");

    // Opting the namespace in (a strengthening: nobody's approval needed) guards it.
    kubectl_ok(&["label", "namespace", n, "mandate.dev/mode=audit"], None)?;
    let (reason, _) = hardening
        .condition(n, "scout", SERVICE_ACCOUNT_GUARDED, true)
        .await?;
    assert_eq!(reason, "NamespaceOptedIn");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Posting reviews straight to the webhook port

/// A TLS client of the webhook port (HTTP/1.1), presenting `identity` when given.
fn tls_client(ca_pem: &[u8], identity: Option<(&Path, &Path)>) -> anyhow::Result<TlsConnector> {
    mandate_e2e::tls_client(ca_pem, identity, b"http/1.1")
}

/// POSTs each body to `/validate` over one HTTP/1.1 connection; returns the status codes.
async fn post_reviews(
    addr: SocketAddr,
    connector: &TlsConnector,
    bodies: Vec<Value>,
) -> anyhow::Result<Vec<u16>> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (mut sender, driver) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(driver);
    let mut statuses = Vec::new();
    for body in bodies {
        sender.ready().await?;
        let request = hyper::Request::post("/validate")
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        statuses.push(response.status().as_u16());
        response.into_body().collect().await?;
    }
    Ok(statuses)
}

/// A pod CREATE review by a made-up user, for `resource` (and, with `kind`, of that kind).
fn forged_review(n: usize, resource: &str, kind: Option<&str>) -> Value {
    let (group, kind) = match kind {
        Some(kind) => ("forged.example.com", kind),
        None => ("", "Pod"),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("forged-{n}"),
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "name": format!("forged-{n}"), "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": format!("mallory-{n}"), "groups": ["system:masters"]},
            "object": {"apiVersion": "v1", "kind": kind,
                "metadata": {"name": format!("forged-{n}"), "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]}},
        }
    })
}

/// Resource and kind names nobody registered, different at every call.
fn random_name(seed: &mut u64) -> String {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    format!("r{:x}", *seed)
}

// ---------------------------------------------------------------------------------------------
// (c) The client certificate of the API server

/// The PKI of e2e/cluster.sh, and an operator's options trusting with `flag` the CA that signed
/// the API server's webhook client certificate (which a gateway presents here as well).
fn trusting_the_client_ca(flag: &str) -> anyhow::Result<(PathBuf, OperatorOptions)> {
    let pki = state_dir().join("pki");
    let client_ca = pki.join("webhook-clients/ca.crt");
    ensure!(
        client_ca.exists(),
        "{} is missing: restart the control plane with this checkout's e2e/cluster.sh",
        client_ca.display()
    );
    let options = OperatorOptions::unique()
        .arg(flag)
        .arg(client_ca.to_string_lossy());
    Ok((pki, options))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_the_api_server_gets_past_the_webhooks_handshake()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (pki, options) = trusting_the_client_ca("--webhook-client-ca")?;
    let hardening = Hardening::start("client-ca", options).await?;
    let operator = &hardening.operator;
    let ns = hardening.namespace("client-ca", Some("enforce")).await?;
    let n = ns.name.as_str();

    // Through the API server, which presents its client certificate: judged as ever.
    hardening.ready_agent(n, "researcher").await?;
    let pod = |name: &str, agent: Option<&str>| {
        let mut labels = json!({});
        if let Some(agent) = agent {
            labels["mandate.dev/agent"] = json!(agent);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": n, "labels": labels},
            "spec": {"serviceAccountName": agent.unwrap_or("default"),
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "example.invalid/agent"}]},
        })
        .to_string()
    };
    let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(&pod("stray", None)))?;
    refused(&out, PODS_IN_AGENT_NAMESPACES, "NoIdentity")?;
    let out = kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&pod("researcher-0", Some("researcher"))),
    )?;
    ensure!(out.status.success(), "the agent pod: {}", stderr(&out));
    let log = operator.log();
    let decided = |log: &str, name: &str| {
        log.lines()
            .filter(|l| l.contains("\"admission decision\"") && l.contains(name))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let lines = decided(&log, "researcher-0");
    ensure!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l.contains("\"caller_authenticated\":true")),
        "the API server's reviews are logged as authenticated: {lines:?}"
    );

    // Straight to the port: without a certificate, or with the cluster admin's (another CA),
    // refused during the handshake: no metric moves, no decision is logged.
    let before = operator.metrics()?;
    let decisions_before = decided(&operator.log(), "").len();
    let anonymous = tls_client(&operator.cert.ca_pem, None)?;
    let admin = tls_client(
        &operator.cert.ca_pem,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    )?;
    for (who, connector) in [("no certificate", &anonymous), ("the admin's", &admin)] {
        let posted = post_reviews(
            operator.webhook,
            connector,
            vec![forged_review(0, "pods", None)],
        )
        .await;
        ensure!(
            posted.is_err(),
            "a review with {who} was answered: {posted:?}"
        );
    }
    let after = operator.metrics()?;
    assert_eq!(
        metric(&before, "mandate_admission_duration_seconds_count"),
        metric(&after, "mandate_admission_duration_seconds_count"),
        "a refused caller moved the metrics:\n{after}"
    );
    assert_eq!(admission_series(&before), admission_series(&after));
    let log = operator.log();
    assert_eq!(decided(&log, "").len(), decisions_before, "{log}");
    assert!(!log.contains("forged-0"), "{log}");
    assert!(!log.contains("mallory"), "{log}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (f) The gateways' client certificate at the decision service

/// A Service `docs-mcp` and an agent `reader` holding tool `docs` there: MCP tool `read_doc`.
fn docs_reader() -> (String, String) {
    let identity = "apiVersion: v1\nkind: Service\nmetadata: {name: docs-mcp}\n\
        spec: {selector: {app: docs-mcp}, ports: [{name: http, port: 8080}]}\n---\n\
        apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {name: reader}\n\
        spec:\n  owner: {kind: User, name: olivia}\n  purpose: end-to-end test\n";
    let binding = "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\n\
        metadata: {name: reader-tools}\nspec:\n  agent: reader\n  tools:\n  - name: docs\n    \
        actions: [read]\n    destination: {service: {name: docs-mcp}}\n    \
        mcp: {tools: [{name: read_doc, action: read}]}\n";
    (identity.to_owned(), binding.to_owned())
}

/// `curl` POSTing `body` to the decision service's AuthZEN endpoint, presenting `identity`
/// (certificate and key files) when given.
fn ask_authzen(
    operator: &Operator,
    identity: Option<(&Path, &Path)>,
    body: &Value,
) -> anyhow::Result<Output> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
        .arg(operator.cert.dir.join("ca.crt"));
    if let Some((certificate, key)) = identity {
        curl.arg("--cert").arg(certificate).arg("--key").arg(key);
    }
    Ok(curl
        .args([
            "-H",
            "content-type: application/json",
            "--data",
            &body.to_string(),
        ])
        .arg(format!("https://{}/access/v1/evaluation", operator.authz))
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_authz_client_ca_only_gateways_it_signed_ask_and_their_spiffe_ids_are_believed()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (pki, options) = trusting_the_client_ca("--authz-client-ca")?;
    let hardening = Hardening::start("authz-client-ca", options).await?;
    let operator = &hardening.operator;
    let ns = hardening.namespace("authz-ca", Some("enforce")).await?;
    let n = ns.name.as_str();
    let (identity, binding) = docs_reader();
    kubectl_ok(&["apply", "-n", n, "-f", "-"], Some(&identity))?;
    eventually("ToolBinding reader-tools admitted", TIMEOUT, || async {
        let out = kubectl_with_stdin(&["apply", "-n", n, "-f", "-"], Some(&binding))?;
        Ok(out.status.success().then_some(()))
    })
    .await?;
    hardening.condition(n, "reader", "Ready", true).await?;

    // A gateway asserting the agent's SPIFFE ID, as a mesh asserts source.principal.
    let spiffe = format!("spiffe://cluster.local/ns/{n}/sa/reader");
    let evaluation = json!({
        "subject": {"type": "agent", "id": spiffe},
        "action": {"name": "tools/call"},
        "resource": {"type": "mcp_tool", "id": "read_doc",
                     "properties": {"service": format!("{n}/docs-mcp")}},
    });
    let decided = |log: &str| {
        log.lines()
            .filter(|l| l.contains("\"tool call decided\"") && l.contains(&spiffe))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect::<Vec<_>>()
    };

    // Without a certificate, or with the cluster admin's (another CA): refused during the
    // handshake, no decision made.
    let admin = (pki.join("admin.crt"), pki.join("admin.key"));
    for (who, identity) in [
        ("no certificate", None),
        ("the admin's", Some((admin.0.as_path(), admin.1.as_path()))),
    ] {
        let out = ask_authzen(operator, identity, &evaluation)?;
        ensure!(
            !out.status.success() && out.stdout.is_empty(),
            "a client with {who} got an answer: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    ensure!(
        decided(&operator.log()).is_empty(),
        "a refused client was judged:\n{}",
        operator.log()
    );

    // With the certificate the CA signed: the asserted SPIFFE ID is believed. The webhook is
    // reconciled from the same snapshot, so the answer may lag the Ready condition briefly.
    let gateway = (
        pki.join("webhook-client.crt"),
        pki.join("webhook-client.key"),
    );
    let answer = eventually("the verified gateway's call allowed", TIMEOUT, || async {
        let out = ask_authzen(
            operator,
            Some((gateway.0.as_path(), gateway.1.as_path())),
            &evaluation,
        )?;
        ensure!(
            out.status.success(),
            "the verified gateway was refused: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout)?;
        Ok((answer["decision"] == true).then_some(answer))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    let id = answer["context"]["id"].as_str().context("a decision id")?;
    let log = operator.log();
    let line = decided(&log)
        .into_iter()
        .find(|l| l["decision_id"] == id)
        .with_context(|| format!("no decision line for {id}:\n{log}"))?;
    assert_eq!(line["gateway_verified"], true, "{line:#}");
    assert_eq!(line["agent"], "reader", "{line:#}");
    assert_eq!(line["allowed"], true, "{line:#}");

    // Over gRPC, as Envoy asserts source.principal: the same without a certificate fails the
    // handshake, and with the gateway's is allowed.
    let service = format!("{n}/docs-mcp");
    let check = McpCall {
        service: &service,
        tool: "read_doc",
        principal: Some(&spiffe),
        bearer: None,
    }
    .frame();
    let anonymous = async {
        let mut grpc = ext_authz::connect(operator.authz, &operator.cert.ca_pem, None).await?;
        ext_authz::check(&mut grpc, &check, operator.authz).await
    };
    let refused = anonymous.await;
    ensure!(
        refused.is_err(),
        "a Check without a client certificate was answered: {refused:?}"
    );
    let mut grpc = ext_authz::connect(
        operator.authz,
        &operator.cert.ca_pem,
        Some((gateway.0.as_path(), gateway.1.as_path())),
    )
    .await?;
    let (answer, _) = ext_authz::check(&mut grpc, &check, operator.authz).await?;
    assert_eq!(
        answer.status.as_ref().map(|s| s.code),
        Some(0),
        "{answer:?}"
    );
    let grpc_lines = decided(&operator.log())
        .into_iter()
        .filter(|l| l["protocol"] == "grpc")
        .collect::<Vec<_>>();
    ensure!(
        grpc_lines.len() == 1
            && grpc_lines[0]["gateway_verified"] == true
            && grpc_lines[0]["allowed"] == true,
        "one verified, allowed gRPC decision: {grpc_lines:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (d) Readiness when a watch fails

/// A ServiceAccount in `ns` holding the chart's RBAC (config/rbac/role.yaml), with its right
/// to list and watch namespaces in a ClusterRoleBinding of its own (returned, to revoke).
fn chart_identity(
    rbac: &mut ClusterObjects,
    ns: &str,
    run: &str,
) -> anyhow::Result<(PathBuf, Value)> {
    let account = "mandate";
    kubectl_ok(&["create", "serviceaccount", account, "-n", ns], None)?;
    let role: Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("config/rbac/role.yaml"),
    )?)?;
    // Every rule of the chart's, namespaces left out of them.
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().context("rules")? {
        let mut rule = rule.clone();
        if let Some(resources) = rule["resources"].as_array_mut() {
            resources.retain(|r| r != "namespaces");
            if resources.is_empty() {
                continue;
            }
        }
        rules.push(rule);
    }
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": ns}]);
    let main = format!("mandate-e2e-{run}-chart");
    let namespaces = format!("mandate-e2e-{run}-namespaces");
    rbac.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": main}, "rules": rules,
    }))?;
    rbac.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": main},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": main},
        "subjects": subject,
    }))?;
    rbac.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": namespaces},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}],
    }))?;
    let grant = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": namespaces},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": namespaces},
        "subjects": subject,
    });
    rbac.apply(&grant)?;

    let token = kubectl_ok(
        &["create", "token", account, "-n", ns, "--duration=1h"],
        None,
    )?;
    let admin: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "mandate", "user": {"token": token.trim()}}],
        "contexts": [{"name": "mandate", "context": {"cluster": "local", "user": "mandate"}}],
        "current-context": "mandate",
    });
    let dir = state_dir().join("hardening");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{run}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
    Ok((path, grant))
}

/// `/readyz`'s status and body.
fn readyz(operator: &Operator) -> anyhow::Result<(u16, String)> {
    http_get(operator.admin, "/readyz")
}

const NAMESPACES_HEALTHY: &str = r#"mandate_watch_healthy{watch="namespaces"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_falls_while_a_watch_is_refused_and_returns_once_it_is_allowed_again()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    install_crds(&client).await?;
    let run = format!("ready-{}", std::process::id());
    let home = TestNamespace::create(&client, "hardening-rbac", &[]).await?;
    let mut rbac = ClusterObjects(Vec::new());
    let (kubeconfig, grant) = chart_identity(&mut rbac, &home.name, &run)?;
    let mut options = OperatorOptions::unique()
        .arg("--leader-elect=false")
        .arg("--watch-stall-bound=3s");
    options.kubeconfig = Some(kubeconfig);
    // Ready: every watch listed with the chart's rights.
    let operator = Operator::start(options).await?;
    assert_eq!(metric(&operator.metrics()?, NAMESPACES_HEALTHY), Some(1.0));

    // Revoked: the open watch runs to its end (a minute at most), then cannot resume or list.
    let grant_name = grant["metadata"]["name"].as_str().unwrap_or_default();
    kubectl_ok(&["delete", "clusterrolebinding", grant_name], None)?;
    let reason = eventually(
        "/readyz to fail naming the namespaces watch",
        Duration::from_secs(150),
        || async {
            let (code, body) = readyz(&operator)?;
            Ok((code == 503).then_some(body))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    assert!(reason.contains("watch namespaces failing for"), "{reason}");
    assert!(reason.contains("forbidden"), "{reason}");
    assert_eq!(metric(&operator.metrics()?, NAMESPACES_HEALTHY), Some(0.0));
    assert!(
        operator
            .log()
            .lines()
            .any(|l| l.contains("\"not ready\"") && l.contains("namespaces")),
        "the fall is logged"
    );

    // Restored: the watch lists again, and the operator is ready again.
    rbac.apply(&grant)?;
    eventually("/readyz to pass again", TIMEOUT, || async {
        let (code, _) = readyz(&operator)?;
        Ok((code == 200).then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    assert_eq!(metric(&operator.metrics()?, NAMESPACES_HEALTHY), Some(1.0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (e) The resource label

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_reviews_of_random_resources_do_not_grow_the_series() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    let connector = tls_client(&operator.cert.ca_pem, None)?;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut bodies = |count: usize| {
        (0..count)
            .map(|n| {
                let resource = random_name(&mut seed);
                if n % 2 == 0 {
                    forged_review(n, &resource, None)
                } else {
                    let kind = random_name(&mut seed);
                    forged_review(n, &resource, Some(&kind))
                }
            })
            .collect::<Vec<_>>()
    };
    // Once each way first (a pod, a kind mandate does not review): their series exist.
    post_reviews(operator.webhook, &connector, bodies(2)).await?;
    let before = admission_series(&operator.metrics()?);
    let statuses = post_reviews(operator.webhook, &connector, bodies(300)).await?;
    ensure!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = operator.metrics()?;
    let after = admission_series(&text);
    assert_eq!(before, after, "the series changed:\n{text}");
    for series in &after {
        let resource = series
            .split("resource=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert!(
            mandate::admission::request::RESOURCES.contains(&resource),
            "{series}"
        );
    }
    // Without a client CA anyone may post; the log says they were not authenticated.
    let log = operator.log();
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"admission decision\"") && l.contains("forged-"))
        .collect();
    ensure!(forged.len() == 302, "{} decisions logged", forged.len());
    assert!(
        forged
            .iter()
            .all(|l| l.contains("\"caller_authenticated\":false")),
        "{forged:?}"
    );
    Ok(())
}
