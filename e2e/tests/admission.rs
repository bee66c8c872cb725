//! Admission on the real control plane: the operator runs as a local process, its webhooks are
//! registered as the Helm chart will register them (but scoped to this test's namespaces by an
//! isolation label), and every request goes through `kubectl` or a kube client to the API
//! server, which calls the webhook over TLS. Each reason code is triggered by a real request and
//! named in the answer; warn and audit modes, the scoping, workload warnings, self-escalation
//! and four eyes are shown the same way.
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};
use mandate::assess::projections_applied;
use mandate_e2e::admission::{
    AGENT_PODS_ELSEWHERE, CONNECT_ELSEWHERE, CONNECT_IN_AGENT_NAMESPACES,
    CREDENTIALS_IN_AGENT_NAMESPACES, MANDATE_RESOURCES, PODS_IN_AGENT_NAMESPACES,
    RegisteredWebhooks, SECRETS_IN_AGENT_NAMESPACES, register_isolated,
};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::{Kind, install_crds, rfc3339_from_now};
use mandate_e2e::{
    TestNamespace, client, client_with_token, eventually, kubeconfig_path, kubectl_ok,
    kubectl_output, kubectl_with_stdin, repo_root, state_dir,
};
use serde_json::{Value, json};

/// The Pod Security baseline of agent pods and its exemptions.
#[path = "admission/pod_security.rs"]
mod pod_security;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a decision may lag behind the API server: the webhook judges from the operator's
/// watch caches, which see a change a moment after it is stored.
const CACHE_LAG: Duration = Duration::from_secs(20);
/// The namespace label that scopes this test's webhooks to this test's namespaces.
const ISOLATION_LABEL: &str = "e2e.mandate.dev/admission";
const APPROVERS: &str = "mandate:approvers";

// ---------------------------------------------------------------------------------------------
// The installation under test
// ---------------------------------------------------------------------------------------------

/// mandate as a test sees it: the operator and its webhooks, scoped to namespaces made with
/// [`Mandate::namespace`]. Dropping it deletes the webhooks first, then stops the operator.
struct Mandate {
    client: Client,
    run: String,
    _webhooks: RegisteredWebhooks,
    operator: Operator,
    probe: TestNamespace,
    /// The namespaces made for the test, described when it fails.
    namespaces: std::sync::Mutex<Vec<String>>,
}

impl Mandate {
    /// Starts an operator, registers its webhooks for namespaces labelled with a value unique to
    /// `test`, and waits until the API server calls them.
    async fn start(test: &str) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let run = format!("{test}-{}", std::process::id());
        let operator = Operator::start(OperatorOptions::unique()).await?;
        let webhooks = register_isolated(&client, &operator, ISOLATION_LABEL, &run).await?;
        let probe = namespace_for(&client, &run, "adm-probe", Some("enforce")).await?;
        let mandate = Mandate {
            client,
            run,
            _webhooks: webhooks,
            operator,
            probe,
            namespaces: std::sync::Mutex::default(),
        };
        mandate.wait_until_called().await?;
        Ok(mandate)
    }

    /// The API server picks up new webhook configurations asynchronously: wait until a stray
    /// pod in the probe namespace is refused (server-side dry run: nothing is stored).
    async fn wait_until_called(&self) -> anyhow::Result<()> {
        let probe = pod("probe", None, "default").with("/spec/automountServiceAccountToken", false);
        let namespace = self.probe.name.clone();
        eventually("the API server to call mandate's webhooks", TIMEOUT, || {
            let manifest = in_namespace(probe.clone(), &namespace);
            async move {
                let out = apply_with(&manifest, None, &["--dry-run=server"])?;
                Ok(stderr(&out).contains("NoIdentity").then_some(()))
            }
        })
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    /// A namespace in this test's scope, opted in with `mode` (`None`: not opted in). Returns
    /// once the webhook judges pods there in that mode.
    async fn namespace(&self, prefix: &str, mode: Option<&str>) -> anyhow::Result<TestNamespace> {
        let ns = namespace_for(&self.client, &self.run, prefix, mode).await?;
        self.remember(&ns.name);
        if let Some(mode) = mode {
            let probe = pod("cache-probe", None, "default");
            self.wait_judged(&in_namespace(probe, &ns.name), |d| d["mode"] == mode)
                .await?;
        }
        Ok(ns)
    }

    /// The webhook's log lines ("admission decision") about objects in `namespace`.
    fn decisions(&self, namespace: &str) -> Vec<Value> {
        self.operator
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["message"] == "admission decision" && line["namespace"] == namespace
            })
            .collect()
    }

    /// Sends `manifest` as a server-side dry run (nothing is stored) until the webhook's log
    /// shows a decision on it that satisfies `expected`. The webhook judges from watch caches
    /// that see a change a moment after the API server stored it; this waits them out where
    /// the client cannot tell (audit mode answers the same whatever it found).
    async fn wait_judged(
        &self,
        manifest: &Value,
        expected: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let namespace = manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let deadline = Instant::now() + CACHE_LAG;
        loop {
            apply_with(manifest, None, &["--dry-run=server"])?;
            let judged = self
                .decisions(namespace)
                .into_iter()
                .any(|d| d["name"] == name && d["dry_run"] == true && expected(&d));
            if judged {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the webhook never judged {namespace}/{name} as expected; its decisions: {:#?}",
                    self.decisions(namespace)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn remember(&self, namespace: &str) {
        if let Ok(mut namespaces) = self.namespaces.lock() {
            namespaces.push(namespace.to_owned());
        }
    }

    /// Runs a test's body; when it fails, prints the operator's log and what its namespaces
    /// hold before handing the error on.
    async fn explain(&self, body: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
        let outcome = body.await;
        if outcome.is_err() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.operator.log_path.display(),
                self.operator.log()
            );
            let namespaces = self
                .namespaces
                .lock()
                .map(|n| n.clone())
                .unwrap_or_default();
            for namespace in namespaces {
                let described = kubectl_output(&[
                    "get",
                    "agentidentities,toolbindings,serviceaccounts,pods,replicasets,events",
                    "-n",
                    &namespace,
                    "-o",
                    "yaml",
                ])
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
                eprintln!("---- namespace {namespace} ----\n{described}");
            }
        }
        outcome
    }

    /// Puts an existing namespace into this test's scope and opts it in with `mode`.
    fn take_into_scope(&self, namespace: &str, mode: &str) -> anyhow::Result<()> {
        self.remember(namespace);
        kubectl_ok(
            &[
                "label",
                "namespace",
                namespace,
                &format!("{ISOLATION_LABEL}={}", self.run),
                &format!("mandate.dev/mode={mode}"),
            ],
            None,
        )?;
        Ok(())
    }

    fn identities(&self, namespace: &str) -> Api<AgentIdentity> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Waits until the reconciler reports `name` projected with `tools` live tools (and Ready
    /// exactly when it holds one).
    async fn wait_ready(&self, namespace: &str, name: &str, tools: i32) -> anyhow::Result<()> {
        let identities = self.identities(namespace);
        eventually(
            &format!("AgentIdentity {namespace}/{name} to become Ready with {tools} tools"),
            TIMEOUT,
            || async {
                let identity = identities.get(name).await?;
                // Ready means pods can run: projected and holding a tool. An identity without
                // tools is projected but not Ready (NoLiveTools).
                let status = identity.status.as_ref();
                let ready = projections_applied(status)
                    && status.is_some_and(|s| {
                        s.tool_count == tools && is_true(&s.conditions, READY) == (tools > 0)
                    });
                Ok(ready.then_some(()))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    /// Applies an identity (and its binding, when it has tools) and waits until it is Ready.
    async fn ready_agent(
        &self,
        namespace: &str,
        identity: Value,
        binding: Option<Value>,
    ) -> anyhow::Result<()> {
        let name = identity["metadata"]["name"]
            .as_str()
            .context("the identity has a name")?
            .to_owned();
        admitted(&in_namespace(identity, namespace), None).await?;
        let tools = match binding {
            Some(binding) => {
                admitted(&in_namespace(binding, namespace), None).await?;
                1
            }
            None => 0,
        };
        self.wait_ready(namespace, &name, tools).await
    }
}

async fn namespace_for(
    client: &Client,
    run: &str,
    prefix: &str,
    mode: Option<&str>,
) -> anyhow::Result<TestNamespace> {
    let mut labels = vec![(ISOLATION_LABEL, run)];
    if let Some(mode) = mode {
        labels.push(("mandate.dev/mode", mode));
    }
    let ns = TestNamespace::create(client, prefix, &labels).await?;
    wait_for_default_service_account(client, &ns.name).await?;
    Ok(ns)
}

/// The ServiceAccount admission plugin refuses pods whose ServiceAccount does not exist (before
/// any webhook runs), so pods in a new namespace wait for its `default` ServiceAccount.
async fn wait_for_default_service_account(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("the default ServiceAccount in {namespace}"),
        TIMEOUT,
        || async { Ok(sas.get_opt("default").await?.map(|_| ())) },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// Sets the field at a JSON pointer, creating objects on the way.
trait With {
    fn with(self, pointer: &str, value: impl Into<Value>) -> Self;
}

impl With for Value {
    fn with(mut self, pointer: &str, value: impl Into<Value>) -> Self {
        let mut at = &mut self;
        for key in pointer.trim_start_matches('/').split('/') {
            let key = key.replace("~1", "/").replace("~0", "~");
            at = match (at, key.parse::<usize>()) {
                (Value::Array(items), Ok(index)) => items.get_mut(index).expect("an existing item"),
                (at, _) => {
                    if !at.is_object() {
                        *at = json!({});
                    }
                    at.as_object_mut()
                        .expect("an object")
                        .entry(key)
                        .or_insert(Value::Null)
                }
            };
        }
        *at = value.into();
        self
    }
}

fn in_namespace(manifest: Value, namespace: &str) -> Value {
    manifest.with("/metadata/namespace", namespace)
}

fn identity(name: &str, class: &str, owner_kind: &str, owner: &str) -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": name},
        "spec": {
            "owner": {"kind": owner_kind, "name": owner},
            "class": class,
            "purpose": "an agent of the admission end-to-end tests",
        }
    })
}

/// A ReadOnly identity owned by user alice (tokens up to 3600 s).
fn reader(name: &str) -> Value {
    identity(name, "ReadOnly", "User", "alice")
}

/// A binding of one external tool with `actions` to `agent`.
fn binding(name: &str, agent: &str, actions: &[&str]) -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": name},
        "spec": {
            "agent": agent,
            "tools": [{
                "name": "search",
                "actions": actions,
                "destination": {"external": {"cidrs": ["192.0.2.0/24"], "ports": [443]}},
            }],
        }
    })
}

/// A pod running as `service_account`, labelled as `agent` when given.
fn pod(name: &str, agent: Option<&str>, service_account: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
        }
    });
    if let Some(agent) = agent {
        pod = pod.with("/metadata/labels/mandate.dev~1agent", agent);
    }
    pod
}

/// A projected token volume valid `seconds`.
fn token_volume(seconds: i64) -> Value {
    json!([{
        "name": "token",
        "projected": {"sources": [{
            "serviceAccountToken": {"path": "token", "expirationSeconds": seconds},
        }]},
    }])
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubectl apply -f -` of `manifest`, as the user of `kubeconfig` (admin when `None`).
fn apply_with(
    manifest: &Value,
    kubeconfig: Option<&Path>,
    extra: &[&str],
) -> anyhow::Result<Output> {
    let mut args: Vec<&str> = Vec::new();
    let path;
    if let Some(kubeconfig) = kubeconfig {
        path = kubeconfig.to_string_lossy().into_owned();
        args.extend(["--kubeconfig", &path]);
    }
    args.extend(["apply", "-f", "-"]);
    args.extend(extra);
    kubectl_with_stdin(&args, Some(&manifest.to_string()))
}

/// A refusal by one of mandate's webhooks, as the client saw it.
#[derive(Debug)]
struct Refusal {
    /// The webhook that denied (`pods.namespaces.mandate.dev`).
    webhook: String,
    /// mandate's message (`mandate refused Pod ns/x (1 rule failed): NoIdentity: ...`).
    message: String,
    /// The reason codes the message lists, in its order.
    codes: Vec<String>,
}

impl Refusal {
    /// Reads a refusal from an API server error message (kubectl's stderr or a `Status`).
    fn parse(text: &str) -> Option<Refusal> {
        let (_, rest) = text.split_once("admission webhook \"")?;
        let (webhook, rest) = rest.split_once("\" denied the request: ")?;
        let message = rest.lines().next().unwrap_or_default().trim().to_owned();
        let (_, listed) = message.split_once(" failed): ")?;
        let codes = listed
            .split("; ")
            .filter_map(|finding| finding.split_once(": "))
            .map(|(code, _)| code)
            .filter(|code| !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_owned)
            .collect();
        Some(Refusal {
            webhook: webhook.to_owned(),
            message,
            codes,
        })
    }

    fn names(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c == code)
    }
}

/// Applies `manifest`, expecting a mandate webhook to refuse it naming `code`, and returns the
/// refusal. The webhook judges from the operator's watch caches, which see what the test just
/// created a moment later: server-side dry runs (which store nothing) are repeated until the
/// refusal appears, then the real request must be refused the same way.
async fn refused(
    manifest: &Value,
    code: &str,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<Refusal> {
    let deadline = Instant::now() + CACHE_LAG;
    loop {
        let out = apply_with(manifest, kubeconfig, &["--dry-run=server"])?;
        let text = stderr(&out);
        if Refusal::parse(&text).is_some_and(|r| r.names(code)) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "expected a refusal naming {code}; the last answer was: {}{text}\n{manifest:#}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = apply_with(manifest, kubeconfig, &[])?;
    let text = stderr(&out);
    if out.status.success() {
        bail!(
            "expected a refusal naming {code}, but the object was admitted: {}{text}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Refusal::parse(&text)
        .filter(|r| r.names(code))
        .with_context(|| format!("expected a refusal naming {code}; kubectl said: {text}"))
}

/// Applies `manifest` until it is admitted (mandate's caches may lag a moment behind what the
/// test just created); returns kubectl's output.
async fn admitted(manifest: &Value, kubeconfig: Option<&Path>) -> anyhow::Result<Output> {
    let deadline = Instant::now() + CACHE_LAG;
    loop {
        let out = apply_with(manifest, kubeconfig, &[])?;
        if out.status.success() {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!(
                "expected {manifest} to be admitted; kubectl said: {}",
                stderr(&out)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A user of the control plane with a client certificate (CN=name, O=group) signed by the
/// cluster's CA, and a kubeconfig of their own.
struct User {
    name: String,
    kubeconfig: PathBuf,
}

impl User {
    fn create(dir: &Path, name: &str, group: &str) -> anyhow::Result<User> {
        let pki = state_dir().join("pki");
        let certs = repo_root().join("e2e/certs.sh");
        let dir_str = dir.to_str().context("user directory is not UTF-8")?;
        let pki_str = pki.to_str().context("PKI directory is not UTF-8")?;
        let out = std::process::Command::new("bash")
            .arg(&certs)
            .args(["client", dir_str, name, name, group, pki_str])
            .output()?;
        if !out.status.success() {
            bail!("e2e/certs.sh client {name}: {}", stderr(&out));
        }
        let admin = Kubeconfig::read_from(kubeconfig_path())?;
        let server = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .context("the admin kubeconfig names no server")?;
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        let crt = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        // JSON is YAML: kubectl reads it as a kubeconfig.
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": server,
                "certificate-authority": pki.join("ca.crt"),
            }}],
            "users": [{"name": name, "user": {"client-certificate": crt, "client-key": key}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}],
            "current-context": "e2e",
        });
        std::fs::write(&kubeconfig, config.to_string())?;
        Ok(User {
            name: name.to_owned(),
            kubeconfig,
        })
    }
}

/// Grants `subjects` `verbs` on ToolBindings in `namespace` (a Role and RoleBinding, so nothing
/// cluster-scoped is left behind).
fn grant_toolbindings(namespace: &str, verbs: &[&str], subjects: Value) -> anyhow::Result<()> {
    let rbac = json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "toolbinding-editor", "namespace": namespace},
                "rules": [{
                    "apiGroups": ["mandate.dev"], "resources": ["toolbindings"], "verbs": verbs,
                }],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "toolbinding-editor", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "toolbinding-editor",
                },
                "subjects": subjects,
            },
        ]
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&rbac.to_string()))?;
    Ok(())
}

/// The API server's audit log (`e2e/.state/logs/audit.log`) from a mark on: the file is shared
/// and large, so only what was written since the mark is read.
struct AuditLog {
    path: PathBuf,
    from: u64,
}

impl AuditLog {
    fn mark() -> anyhow::Result<AuditLog> {
        let path = state_dir().join("logs/audit.log");
        let from = std::fs::metadata(&path)
            .with_context(|| format!("{} (is auditing on?)", path.display()))?
            .len();
        Ok(AuditLog { path, from })
    }

    /// The events about `pods/<name>` in `namespace` since the mark (from the start of the file
    /// if it was rotated meanwhile).
    fn pod_events(&self, namespace: &str, name: &str) -> anyhow::Result<Vec<Value>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        let from = if file.metadata()?.len() < self.from {
            0
        } else {
            self.from
        };
        file.seek(SeekFrom::Start(from))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text
            .lines()
            .filter(|line| line.contains(namespace) && line.contains(name))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| {
                event["objectRef"]["resource"] == "pods"
                    && event["objectRef"]["namespace"] == namespace
                    && event["objectRef"]["name"] == name
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_agents_pod_is_admitted_and_each_pod_rule_it_breaks_is_refused_by_name()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-pods").await?;
    mandate
        .explain(async {
        let ns = mandate.namespace("adm-pods", Some("enforce")).await?;
        let ns = ns.name.as_str();
        mandate
            .ready_agent(
                ns,
                reader("researcher"),
                Some(binding("researcher-tools", "researcher", &["read"])),
            )
            .await?;
        mandate.ready_agent(ns, reader("idle"), None).await?;
        // The CRD asks for an owner name of at least one character; a blank one passes it, and
        // only the pod rule notices that nobody answers for the agent.
        mandate
            .ready_agent(
                ns,
                identity("ownerless", "ReadOnly", "User", " "),
                Some(binding("ownerless-tools", "ownerless", &["read"])),
            )
            .await?;

        let good = pod("researcher-good", Some("researcher"), "researcher");
        admitted(&in_namespace(good.clone(), ns), None).await?;
        assert!(
            Api::<Pod>::namespaced(mandate.client.clone(), ns)
                .get_opt("researcher-good")
                .await?
                .is_some(),
            "the admitted pod is stored"
        );

        let no_token = |pod: Value| pod.with("/spec/automountServiceAccountToken", false);
        let cases: Vec<(&str, Value, &[&str])> = vec![
            (
                "an unlabelled pod",
                no_token(pod("stray", None, "default")),
                &["NoIdentity"],
            ),
            (
                "a pod naming an identity that does not exist",
                no_token(pod("ghost", Some("ghost"), "default")),
                &["NoIdentity"],
            ),
            (
                "a pod of an identity with a blank owner",
                pod("ownerless", Some("ownerless"), "ownerless"),
                &["NoOwner"],
            ),
            (
                "a pod of an identity without a live tool",
                pod("idle", Some("idle"), "idle"),
                &["NoBoundTools"],
            ),
            (
                "a researcher pod running as the default ServiceAccount",
                no_token(pod("mismatch", Some("researcher"), "default")),
                &["ServiceAccountMismatch"],
            ),
            (
                "an unlabelled pod running as the researcher's ServiceAccount",
                pod("hijacker", None, "researcher"),
                &["NoIdentity", "ServiceAccountHijack"],
            ),
            (
                "a researcher pod on the host's network",
                good.clone()
                    .with("/metadata/name", "host")
                    .with("/spec/hostNetwork", true),
                &["HostNetwork"],
            ),
            (
                "a researcher pod projecting a two-hour token (the identity allows one hour)",
                good.clone()
                    .with("/metadata/name", "long-token")
                    .with("/spec/volumes", token_volume(7200)),
                &["TokenTTL"],
            ),
            (
                "a researcher pod asking for an automounted token",
                good.with("/metadata/name", "automount")
                    .with("/spec/automountServiceAccountToken", true),
                &["TokenTTL"],
            ),
        ];
        let mut refusals = Vec::new();
        for (what, manifest, codes) in cases {
            let refusal = refused(&in_namespace(manifest, ns), codes[0], None).await?;
            assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES, "{what}");
            let mut listed = refusal.codes.clone();
            listed.dedup();
            assert_eq!(listed, codes, "{what}: {}", refusal.message);
            assert!(
                refusal.message.starts_with("mandate refused Pod "),
                "{what}: {}",
                refusal.message
            );
            refusals.push(refusal);
        }

        // The automounted token is named for what it is, with the way out: the identity's TTL.
        let automount = refusals
            .iter()
            .find(|r| r.message.contains("/automount "))
            .context("the automount refusal")?;
        assert!(
            automount
                .message
                .contains("automountServiceAccountToken: true")
                && automount.message.contains("expirationSeconds <= 3600"),
            "{}",
            automount.message
        );

        // A legacy token Secret for an agent's ServiceAccount never expires: refused on creation.
        let token_secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "researcher-token",
                "annotations": {"kubernetes.io/service-account.name": "researcher"},
            },
            "type": "kubernetes.io/service-account-token",
        });
        let refusal = refused(&in_namespace(token_secret, ns), "LongLivedToken", None).await?;
        assert_eq!(refusal.webhook, SECRETS_IN_AGENT_NAMESPACES);
        assert_eq!(refusal.codes, ["LongLivedToken"]);

        // Every refusal above was counted under its reason.
        let metrics = mandate.operator.metrics()?;
        for reason in [
            "NoIdentity",
            "NoOwner",
            "NoBoundTools",
            "HostNetwork",
            "TokenTTL",
        ] {
            let sample = format!(
                r#"mandate_admission_requests_total{{resource="pods",decision="denied",reason="{reason}",mode="enforce"}}"#
            );
            assert!(
                metrics.contains(&sample),
                "{sample} missing from:\n{metrics}"
            );
        }
        assert!(metrics.contains(
            r#"mandate_admission_requests_total{resource="secrets",decision="denied",reason="LongLivedToken",mode="enforce"}"#
        ));
        Ok(())
    })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_may_not_claim_a_foreign_service_account_and_one_that_did_is_never_ready()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-claim").await?;
    mandate
        .explain(async {
        let legacy_sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "legacy"}});
        let claiming = |name: &str| reader(name).with("/spec/serviceAccountName", "legacy");

        // In scope, the webhook refuses the claim outright.
        let scoped = mandate.namespace("adm-claim", Some("enforce")).await?;
        admitted(&in_namespace(legacy_sa.clone(), &scoped.name), None).await?;
        let refusal = refused(
            &in_namespace(claiming("stale"), &scoped.name),
            "ServiceAccountUnmanaged",
            None,
        )
        .await?;
        assert_eq!(refusal.webhook, MANDATE_RESOURCES);

        // An identity created before its namespace came under mandate's webhooks: the reconciler
        // never adopts the foreign ServiceAccount, so the identity stays not Ready, and its pods
        // are refused for that.
        let earlier = TestNamespace::create(&mandate.client, "adm-earlier", &[]).await?;
        admitted(&in_namespace(legacy_sa, &earlier.name), None).await?;
        admitted(&in_namespace(claiming("stale"), &earlier.name), None).await?;
        mandate.take_into_scope(&earlier.name, "enforce")?;
        let stale_pod =
            pod("stale", Some("stale"), "legacy").with("/spec/automountServiceAccountToken", false);
        let refusal = refused(
            &in_namespace(stale_pod, &earlier.name),
            "IdentityNotReady",
            None,
        )
        .await?;
        assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
        assert!(
            refusal.message.contains("AgentIdentity stale is not Ready"),
            "{}",
            refusal.message
        );
        let stale = mandate.identities(&earlier.name).get("stale").await?;
        assert!(
            !stale
                .status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, READY)),
            "an identity claiming an unmanaged ServiceAccount is not Ready: {:?}",
            stale.status
        );
        Ok(())
    })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_identity_may_not_be_bound_to_a_tool_that_writes() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-class").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-class", Some("enforce")).await?;
            mandate
                .ready_agent(&ns.name, reader("researcher"), None)
                .await?;

            let writer = binding("researcher-writes", "researcher", &["read", "write"]);
            let refusal = refused(&in_namespace(writer, &ns.name), "ClassViolation", None).await?;
            assert_eq!(refusal.webhook, MANDATE_RESOURCES);
            assert_eq!(refusal.codes, ["ClassViolation"]);
            assert!(
                refusal.message.contains("declares write"),
                "{}",
                refusal.message
            );
            assert!(
                Kind::ToolBinding
                    .api(&mandate.client, &ns.name)
                    .get_opt("researcher-writes")
                    .await?
                    .is_none()
            );
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_admits_and_kubectl_prints_each_finding_as_a_warning() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-warn").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-warn", Some("warn")).await?;

            let stray = pod("stray", None, "default").with("/spec/hostNetwork", true);
            let out = admitted(&in_namespace(stray, &ns.name), None).await?;
            let text = stderr(&out);
            assert!(
                text.contains("Warning: NoIdentity: the pod has no mandate.dev/agent label"),
                "{text}"
            );
            assert!(text.contains("Warning: HostNetwork: "), "{text}");
            assert!(
                Api::<Pod>::namespaced(mandate.client.clone(), &ns.name)
                    .get_opt("stray")
                    .await?
                    .is_some()
            );
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_admits_silently_and_the_audit_log_records_the_decision() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-audit").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-audit", Some("audit")).await?;
            mandate.ready_agent(&ns.name, reader("idle"), None).await?;

            let idle = in_namespace(pod("idle", Some("idle"), "idle"), &ns.name);
            mandate
                .wait_judged(&idle, |d| d["reasons"] == "NoBoundTools")
                .await?;
            let audit = AuditLog::mark()?;
            let out = admitted(&idle, None).await?;
            assert!(
                !stderr(&out).contains("Warning"),
                "audit mode warns nobody: {}",
                stderr(&out)
            );

            let key = |k: &str| format!("{PODS_IN_AGENT_NAMESPACES}/{k}");
            let annotations =
                eventually("the pod's creation in the audit log", TIMEOUT, || async {
                    Ok(audit
                        .pod_events(&ns.name, "idle")?
                        .into_iter()
                        .find_map(|event| {
                            (event["verb"] == "create"
                                && event["annotations"][key("decision")].is_string())
                            .then(|| event["annotations"].clone())
                        }))
                })
                .await?;
            assert_eq!(annotations[key("decision")], "audited", "{annotations:#}");
            assert_eq!(annotations[key("mode")], "audit");
            assert_eq!(annotations[key("reason")], "NoBoundTools");
            assert_eq!(annotations[key("agent")], "idle");
            assert_eq!(annotations[key("owner")], "User:alice");
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_opted_in_namespaces_only_agent_labelled_pods_reach_the_webhook()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-scope").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-plain", None).await?;

            let bystander = pod("bystander", None, "default").with("/spec/hostNetwork", true);
            let out = admitted(&in_namespace(bystander, &ns.name), None).await?;
            assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));

            // An agent-labelled pod in the same namespace is judged, in the default mode (enforce).
            let ghost = pod("ghost", Some("ghost"), "default")
                .with("/spec/automountServiceAccountToken", false);
            let refusal = refused(&in_namespace(ghost, &ns.name), "NoIdentity", None).await?;
            assert_eq!(refusal.webhook, AGENT_PODS_ELSEWHERE);

            // The webhook logs one line per request it answers: the ghost's, never the bystander's.
            let judged: Vec<Value> = mandate
                .decisions(&ns.name)
                .into_iter()
                .map(|d| d["name"].clone())
                .collect();
            assert!(judged.contains(&json!("ghost")), "{judged:?}");
            assert!(!judged.contains(&json!("bystander")), "{judged:?}");
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_ahead_of_its_identity_warns_and_its_pods_follow_once_the_agent_is_ready()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-deploy").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-deploy", Some("enforce")).await?;
            let ns = ns.name.as_str();
            let template = pod("builder", Some("builder"), "builder");
            let deployment = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "builder", "namespace": ns},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"mandate.dev/agent": "builder"}},
                    "template": {
                        "metadata": {"labels": template["metadata"]["labels"]},
                        "spec": template["spec"],
                    },
                }
            });
            let out = admitted(&deployment, None).await?;
            let text = stderr(&out);
            assert!(
                text.contains(
                    "Warning: NoIdentity: mandate.dev/agent=builder names no AgentIdentity"
                ),
                "{text}"
            );

            // The ReplicaSet cannot create pods: first the ServiceAccount admission plugin refuses them
            // (the ServiceAccount does not exist yet); once the identity exists (without a tool),
            // mandate refuses them, and says why in the ReplicaSet's FailedCreate events.
            mandate.ready_agent(ns, reader("builder"), None).await?;
            let events: Api<Event> = Api::namespaced(mandate.client.clone(), ns);
            let failed = eventually(
                "a FailedCreate event naming mandate's reason",
                TIMEOUT,
                || async {
                    let list = events.list(&ListParams::default()).await?;
                    Ok(list.items.into_iter().find_map(|e| {
                        let message = e.message.unwrap_or_default();
                        (e.reason.as_deref() == Some("FailedCreate")
                            && e.involved_object.kind.as_deref() == Some("ReplicaSet")
                            && message.contains("NoBoundTools"))
                        .then_some(message)
                    }))
                },
            )
            .await?;
            assert!(
                failed.contains(&format!(
                    "admission webhook \"{PODS_IN_AGENT_NAMESPACES}\" denied the request"
                )),
                "{failed}"
            );

            // A tool makes the agent whole: the ReplicaSet's retries succeed, the Deployment untouched.
            admitted(
                &in_namespace(binding("builder-tools", "builder", &["read"]), ns),
                None,
            )
            .await?;
            mandate.wait_ready(ns, "builder", 1).await?;
            let pods: Api<Pod> = Api::namespaced(mandate.client.clone(), ns);
            eventually("the builder's pod", Duration::from_secs(120), || async {
                let list = pods
                    .list(&ListParams::default().labels("mandate.dev/agent=builder"))
                    .await?;
                Ok((!list.items.is_empty()).then_some(()))
            })
            .await?;
            let stored = Api::<Deployment>::namespaced(mandate.client.clone(), ns)
                .get("builder")
                .await?;
            assert_eq!(
                stored.metadata.generation,
                Some(1),
                "the Deployment was never changed"
            );
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_service_account_may_not_change_its_tool_binding() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-self").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-self", Some("enforce")).await?;
            let ns = ns.name.as_str();
            mandate
                .ready_agent(
                    ns,
                    reader("researcher"),
                    Some(binding("researcher-tools", "researcher", &["read"])),
                )
                .await?;
            // RBAC lets the agent patch ToolBindings, so only mandate stands in the way.
            grant_toolbindings(
                ns,
                &["get", "list", "patch", "update"],
                json!([{"kind": "ServiceAccount", "name": "researcher", "namespace": ns}]),
            )?;
            let token = kubectl_ok(
                &[
                    "create",
                    "token",
                    "researcher",
                    "-n",
                    ns,
                    "--duration",
                    "10m",
                ],
                None,
            )?;
            let as_agent = client_with_token(token.trim()).await?;

            // Wider, yet within what a Low tool may reach (the risk floor's /16), so the
            // requester alone is what is refused.
            let widen = json!({"spec": {"tools": [{
                "name": "search", "actions": ["read"],
                "destination": {"external": {"cidrs": ["198.51.0.0/16"], "ports": [443]}},
            }]}});
            let own_bindings = Kind::ToolBinding.api(&as_agent, ns);
            // Dry runs first: the webhook learns whose ServiceAccount this is from its caches.
            eventually(
                "the webhook to know the agent's ServiceAccount",
                CACHE_LAG,
                || async {
                    let dry_run = PatchParams::default().dry_run();
                    let answer = own_bindings
                        .patch("researcher-tools", &dry_run, &Patch::Merge(&widen))
                        .await;
                    let refused = matches!(
                        answer,
                        Err(kube::Error::Api(status)) if status.message.contains("SelfEscalation")
                    );
                    Ok(refused.then_some(()))
                },
            )
            .await?;
            let error = own_bindings
                .patch(
                    "researcher-tools",
                    &PatchParams::default(),
                    &Patch::Merge(&widen),
                )
                .await
                .expect_err("the agent's patch of its own grant is refused");
            let message = mandate_e2e::resources::refusal_message(error)?;
            let refusal = Refusal::parse(&message)
                .with_context(|| format!("not mandate's refusal: {message}"))?;
            assert_eq!(refusal.webhook, MANDATE_RESOURCES);
            assert_eq!(refusal.codes, ["SelfEscalation"], "{}", refusal.message);
            assert!(
                refusal.message.contains(&format!(
                    "ServiceAccount {ns}/researcher of agent researcher"
                )),
                "{}",
                refusal.message
            );

            // The same change by an administrator is admitted: the requester was refused, not
            // the change.
            Kind::ToolBinding
                .api(&mandate.client, ns)
                .patch(
                    "researcher-tools",
                    &PatchParams::default(),
                    &Patch::Merge(&widen),
                )
                .await?;
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_risk_grant_is_refused_from_its_agents_owner_and_admitted_from_another_approver()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-eyes").await?;
    mandate
        .explain(async {
        let ns = mandate.namespace("adm-eyes", Some("enforce")).await?;
        let ns = ns.name.as_str();
        let users = state_dir().join("users").join(ns);
        std::fs::create_dir_all(&users)?;
        let owner = User::create(&users, "olivia", APPROVERS)?;
        let approver = User::create(&users, "victor", APPROVERS)?;
        grant_toolbindings(
            ns,
            &["get", "list", "create", "update", "patch"],
            json!([
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner.name},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": approver.name},
            ]),
        )?;
        mandate
            .ready_agent(
                ns,
                identity("deployer", "WriteCapable", "User", &owner.name),
                None,
            )
            .await?;

        let grant = |approved_by: &str| -> anyhow::Result<Value> {
            Ok(
                in_namespace(binding("deployer-prod", "deployer", &["write"]), ns)
                    .with("/spec/tools/0/risk", "High")
                    .with("/spec/validUntil", rfc3339_from_now(4 * 3600)?)
                    .with(
                        "/spec/approval",
                        json!({"approvedBy": approved_by, "reason": "release 1.2",
                            "forOwner": {"kind": "User", "name": owner.name}}),
                    ),
            )
        };

        let refusal = refused(&grant(&owner.name)?, "FourEyes", Some(&owner.kubeconfig)).await?;
        assert_eq!(refusal.webhook, MANDATE_RESOURCES);
        assert_eq!(refusal.codes, ["FourEyes"], "{}", refusal.message);
        assert!(
            refusal
                .message
                .contains("olivia owns AgentIdentity deployer"),
            "{}",
            refusal.message
        );

        admitted(&grant(&approver.name)?, Some(&approver.kubeconfig)).await?;
        mandate.wait_ready(ns, "deployer", 1).await?;
        Ok(())
    })
        .await
}

/// The pod boundary (issue 13): a running agent pod's labels decide which NetworkPolicy selects
/// it, and they change through the `status` subresource and on a terminating pod too. A
/// namespace developer (the built-in `edit` role, plus pods/status, which `edit` does not
/// grant) tries both with kubectl; mandate refuses both
/// in enforce, and still lets the status writes and finalizer removals through that leave the
/// agent label alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_cannot_relabel_an_agent_pod_through_its_status_or_while_it_terminates()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-paths").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-paths", Some("enforce")).await?;
            let ns = ns.name.as_str();
            mandate
                .ready_agent(
                    ns,
                    reader("researcher"),
                    Some(binding("researcher-tools", "researcher", &["read"])),
                )
                .await?;
            kubectl_ok(
                &[
                    "create",
                    "rolebinding",
                    "developer-edit",
                    "--clusterrole=edit",
                    "--user=dev",
                    "-n",
                    ns,
                ],
                None,
            )?;
            // This control plane runs no ClusterRole aggregation, so `edit` holds nothing here:
            // the developer also gets edit's verbs on pods, and pods/status, which `edit` does
            // not grant (a controller's or a node's credentials would).
            kubectl_ok(
                &[
                    "create",
                    "role",
                    "pod-writer",
                    "--verb=get,list,watch,create,update,patch,delete",
                    "--resource=pods,pods/status",
                    "-n",
                    ns,
                ],
                None,
            )?;
            kubectl_ok(
                &[
                    "create",
                    "rolebinding",
                    "developer-pods",
                    "--role=pod-writer",
                    "--user=dev",
                    "-n",
                    ns,
                ],
                None,
            )?;
            let as_dev = |args: &[&str]| {
                let mut all = vec!["--as", "dev", "-n", ns];
                all.extend(args);
                kubectl_output(&all)
            };
            let agent_of = |name: &str| {
                kubectl_ok(
                    &[
                        "get",
                        "pod",
                        name,
                        "-n",
                        ns,
                        "-o",
                        "jsonpath={.metadata.labels.mandate\\.dev/agent}",
                    ],
                    None,
                )
            };

            admitted(
                &in_namespace(pod("running", Some("researcher"), "researcher"), ns),
                None,
            )
            .await?;
            // The kubelet writes status all the time: a status update that leaves the agent
            // label alone goes through.
            let out = as_dev(&[
                "patch",
                "pod",
                "running",
                "--subresource=status",
                "--type=merge",
                "-p={\"metadata\":{\"labels\":{\"team\":\"research\"}}}",
            ])?;
            anyhow::ensure!(
                out.status.success(),
                "a status update that keeps the agent label was refused: {}",
                stderr(&out)
            );
            let out = as_dev(&[
                "patch",
                "pod",
                "running",
                "--subresource=status",
                "--type=merge",
                "-p={\"metadata\":{\"labels\":{\"mandate.dev/agent\":\"other\"}}}",
            ])?;
            let refusal = Refusal::parse(&stderr(&out)).with_context(|| {
                format!(
                    "relabelling through pods/status was not refused: {}",
                    stderr(&out)
                )
            })?;
            assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
            assert!(refusal.names("NoIdentity"), "{refusal:?}");
            assert_eq!(agent_of("running")?, "researcher");

            // A finalizer keeps a deleted pod terminating; it is still judged when relabelled.
            let held = pod("held", Some("researcher"), "researcher")
                .with("/metadata/finalizers", json!(["e2e.mandate.dev/hold"]));
            admitted(&in_namespace(held, ns), None).await?;
            kubectl_ok(&["delete", "pod", "held", "-n", ns, "--wait=false"], None)?;
            let relabel = as_dev(&[
                "label",
                "pod",
                "held",
                "mandate.dev/agent=other",
                "--overwrite",
            ])?;
            // Releasing the finalizer (a change that leaves the label alone) goes through, and
            // lets the namespace go.
            let release = as_dev(&[
                "patch",
                "pod",
                "held",
                "--type=json",
                "-p=[{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}]",
            ])?;
            let refusal = Refusal::parse(&stderr(&relabel)).with_context(|| {
                format!(
                    "relabelling a terminating pod was not refused: {}",
                    stderr(&relabel)
                )
            })?;
            assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
            assert!(refusal.names("NoIdentity"), "{refusal:?}");
            anyhow::ensure!(
                release.status.success(),
                "removing the finalizer of a terminating agent pod was refused: {}",
                stderr(&release)
            );
            Ok(())
        })
        .await
}

#[test]
fn refusals_are_read_from_kubectls_words() {
    let text = "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \
                \"pods.namespaces.mandate.dev\" denied the request: mandate refused Pod a/b (2 rules \
                failed): NoIdentity: label it: or else; TokenTTL: shorten it\n";
    let refusal = Refusal::parse(text).expect("a refusal");
    assert_eq!(refusal.webhook, "pods.namespaces.mandate.dev");
    assert_eq!(refusal.codes, ["NoIdentity", "TokenTTL"]);
    assert!(Refusal::parse("Error from server (NotFound): nope").is_none());
}

/// `kubectl` as the user of `kubeconfig`.
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let path = kubeconfig.to_string_lossy().into_owned();
    let mut all = vec!["--kubeconfig", path.as_str()];
    all.extend(args);
    kubectl_with_stdin(&all, None)
}

/// Runs `args` as the user of `kubeconfig` until a mandate webhook refuses it naming `code`
/// (mandate's caches may lag a moment behind the identity the test just made ready).
async fn refused_as(kubeconfig: &Path, args: &[&str], code: &str) -> anyhow::Result<Refusal> {
    let deadline = Instant::now() + CACHE_LAG;
    loop {
        let out = kubectl_as(kubeconfig, args)?;
        let text = stderr(&out);
        if let Some(refusal) = Refusal::parse(&text).filter(|r| r.names(code)) {
            return Ok(refusal);
        }
        if Instant::now() > deadline {
            bail!(
                "expected kubectl {args:?} to be refused naming {code}; it said: {}{text}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Binds the built-in `edit` ClusterRole to `user` in `namespace`: an ordinary namespace
/// developer, who may create tokens, pods and Secrets there. Returns once the API server says
/// the user may create tokens (the aggregated `edit` rules and the binding take a moment).
async fn grant_edit(namespace: &str, user: &str) -> anyhow::Result<()> {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "developer-edit", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&binding.to_string()))?;
    eventually(
        &format!("{user} to be an editor of {namespace}"),
        TIMEOUT,
        || async {
            let out = kubectl_output(&[
                "auth",
                "can-i",
                "create",
                "serviceaccounts/token",
                "-n",
                namespace,
                "--as",
                user,
            ])?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim()
                .eq("yes")
                .then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_may_mint_no_token_for_an_agent_beyond_its_ttl_or_audience_nor_retarget_a_token_secret()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-tokens").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-tokens", Some("enforce")).await?;
            let ns = ns.name.as_str();
            // researcher: ReadOnly, so tokens up to 3600 s, for the API server only.
            mandate
                .ready_agent(
                    ns,
                    reader("researcher"),
                    Some(binding("researcher-tools", "researcher", &["read"])),
                )
                .await?;
            let users = state_dir().join("users").join(ns);
            std::fs::create_dir_all(&users)?;
            let dev = User::create(&users, "dana", "developers")?;
            grant_edit(ns, &dev.name).await?;
            let kubeconfig = dev.kubeconfig.as_path();

            // A year-long token for the agent: refused, naming the TTL.
            let year = refused_as(
                kubeconfig,
                &[
                    "create",
                    "token",
                    "researcher",
                    "-n",
                    ns,
                    "--duration=8760h",
                ],
                "TokenTTL",
            )
            .await?;
            assert_eq!(year.webhook, CREDENTIALS_IN_AGENT_NAMESPACES);
            assert_eq!(year.codes, ["TokenTTL"]);
            assert!(
                year.message.contains("longer than the 3600s"),
                "{}",
                year.message
            );

            // A token for another audience: refused.
            let audience = refused_as(
                kubeconfig,
                &[
                    "create",
                    "token",
                    "researcher",
                    "-n",
                    ns,
                    "--duration=10m",
                    "--audience",
                    "https://other.example",
                ],
                "TokenTTL",
            )
            .await?;
            assert!(
                audience.message.contains("audience https://other.example"),
                "{}",
                audience.message
            );

            // Within the TTL, for the API server (no audience named, no duration: the API server's
            // default hour): allowed.
            for args in [
                vec!["create", "token", "researcher", "-n", ns, "--duration=10m"],
                vec!["create", "token", "researcher", "-n", ns],
            ] {
                let out = kubectl_as(kubeconfig, &args)?;
                ensure!(
                    out.status.success() && !out.stdout.is_empty(),
                    "kubectl {args:?} should mint a token: {}",
                    stderr(&out)
                );
            }
            // A token for a ServiceAccount of no agent is not mandate's business.
            let out = kubectl_as(
                kubeconfig,
                &["create", "token", "default", "-n", ns, "--duration=8760h"],
            )?;
            ensure!(
                out.status.success(),
                "a token for default: {}",
                stderr(&out)
            );

            // An identity that allows two hours still never gets a 3607-second token: the API
            // server would extend it to a year. Refused as a TokenRequest and as a pod's volume.
            mandate
                .ready_agent(
                    ns,
                    reader("archivist").with("/spec/credentials/tokenTtlSeconds", 7200),
                    Some(binding("archivist-tools", "archivist", &["read"])),
                )
                .await?;
            let extended = refused_as(
                kubeconfig,
                &["create", "token", "archivist", "-n", ns, "--duration=3607s"],
                "TokenTTL",
            )
            .await?;
            assert!(
                extended.message.contains("extends to a year"),
                "{}",
                extended.message
            );
            let out = kubectl_as(
                kubeconfig,
                &["create", "token", "archivist", "-n", ns, "--duration=2h"],
            )?;
            ensure!(
                out.status.success(),
                "two hours for archivist: {}",
                stderr(&out)
            );
            let pod_3607 = pod("archivist-3607", Some("archivist"), "archivist")
                .with("/spec/automountServiceAccountToken", false)
                .with("/spec/volumes", token_volume(3607));
            let refusal =
                refused(&in_namespace(pod_3607, ns), "TokenTTL", Some(kubeconfig)).await?;
            assert!(
                refusal.message.contains("extends to a year"),
                "{}",
                refusal.message
            );

            // A legacy token Secret of the default ServiceAccount, retargeted at the agent's by an
            // update: refused as its creation would be, whether applied or patched.
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {
                    "name": "legacy-token", "namespace": ns,
                    "annotations": {"kubernetes.io/service-account.name": "default"},
                },
                "type": "kubernetes.io/service-account-token",
            });
            admitted(&secret, Some(kubeconfig)).await?;
            let retargeted = secret.clone().with(
                "/metadata/annotations/kubernetes.io~1service-account.name",
                "researcher",
            );
            let applied = refused(&retargeted, "LongLivedToken", Some(kubeconfig)).await?;
            assert_eq!(applied.webhook, CREDENTIALS_IN_AGENT_NAMESPACES);
            assert_eq!(applied.codes, ["LongLivedToken"]);
            let patch = json!({"metadata": {"annotations":
            {"kubernetes.io/service-account.name": "researcher"}}});
            let patched = refused_as(
                kubeconfig,
                &[
                    "patch",
                    "secret",
                    "legacy-token",
                    "-n",
                    ns,
                    "-p",
                    &patch.to_string(),
                ],
                "LongLivedToken",
            )
            .await?;
            assert_eq!(patched.codes, ["LongLivedToken"]);
            Ok(())
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// exec, attach, port-forward and the pod proxy
// ---------------------------------------------------------------------------------------------

/// `kubectl -n namespace <args>` as `user` (impersonated, with `groups` if any), given 30
/// seconds: an admitted exec or port-forward would otherwise wait on a pod that never runs.
fn kubectl_connect(
    namespace: &str,
    user: &str,
    groups: &[&str],
    args: &[&str],
) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new("timeout");
    command
        .arg("30")
        .arg(mandate_e2e::bin_dir()?.join("kubectl"))
        .env("KUBECONFIG", kubeconfig_path())
        .args(["--as", user]);
    for group in groups {
        command.args(["--as-group", group]);
    }
    Ok(command.args(["-n", namespace]).args(args).output()?)
}

/// The CONNECT `args` names (`exec`, `attach`, `port-forward`, a raw `pods/.../proxy` GET).
fn subresource_of(args: &[&str]) -> &'static str {
    match args.first().copied() {
        Some("exec") => "exec",
        Some("attach") => "attach",
        Some("port-forward") => "portforward",
        _ => "proxy",
    }
}

impl Mandate {
    /// Runs the CONNECT `args` as `user` until mandate's webhook has judged it (its log line
    /// for `pod`, this user and subresource) with `decision`; returns kubectl's output. The
    /// webhook judges from watch caches a moment behind the identity the test just made ready.
    async fn connect_judged(
        &self,
        namespace: &str,
        pod: &str,
        (user, groups): (&str, &[&str]),
        args: &[&str],
        decision: &str,
    ) -> anyhow::Result<Output> {
        let subresource = subresource_of(args);
        let deadline = Instant::now() + CACHE_LAG;
        loop {
            let seen = self.decisions(namespace).len();
            let out = kubectl_connect(namespace, user, groups, args)?;
            let judged: Vec<Value> = self
                .decisions(namespace)
                .into_iter()
                .skip(seen)
                .filter(|d| d["name"] == pod && d["user"] == user)
                .filter(|d| d["subresource"] == subresource)
                .collect();
            if judged.iter().any(|d| d["decision"] == decision) {
                return Ok(out);
            }
            if Instant::now() > deadline {
                bail!(
                    "kubectl {args:?} as {user} was never judged {decision}; judged {judged:#?}; \
                     kubectl said: {}",
                    stderr(&out)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A ready agent `name` owned by user alice, and its pod `<name>-0`, marked Running (kubectl
/// port-forward refuses a pod that is not; no kubelet ever runs it here).
async fn agent_pod_in(mandate: &Mandate, namespace: &str, name: &str) -> anyhow::Result<String> {
    mandate
        .ready_agent(
            namespace,
            reader(name),
            Some(binding(&format!("{name}-tools"), name, &["read"])),
        )
        .await?;
    let pod_name = format!("{name}-0");
    admitted(
        &in_namespace(pod(&pod_name, Some(name), name), namespace),
        None,
    )
    .await?;
    mark_running(namespace, &pod_name)?;
    Ok(pod_name)
}

fn mark_running(namespace: &str, pod: &str) -> anyhow::Result<()> {
    kubectl_ok(
        &[
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p={\"status\":{\"phase\":\"Running\"}}",
        ],
        None,
    )?;
    Ok(())
}

/// Whether kubectl's stderr carries a refusal by mandate (of any webhook, for any reason).
fn refused_by_mandate(out: &Output) -> bool {
    let text = stderr(out);
    Refusal::parse(&text).is_some() || text.contains("ExecNotOwner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_port_forward_and_proxy_into_an_agent_pod_are_for_its_owner_and_approvers_only()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-connect").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-connect", Some("enforce")).await?;
            let ns = ns.name.as_str();
            let pod = agent_pod_in(&mandate, ns, "researcher").await?;
            // dev: an ordinary developer with `edit`, which grants pods/exec, pods/attach,
            // pods/portforward and pods/proxy. alice owns the agent; carol is an approver.
            grant_edit(ns, "dev").await?;
            kubectl_ok(
                &[
                    "create",
                    "rolebinding",
                    "owner-and-approver-edit",
                    "--clusterrole=edit",
                    "--user=alice",
                    "--user=carol",
                    "-n",
                    ns,
                ],
                None,
            )?;
            let proxy = format!("/api/v1/namespaces/{ns}/pods/{pod}/proxy/");
            let attempts: [&[&str]; 4] = [
                &["exec", &pod, "--", "cat", "/var/run/secrets/tokens/token"],
                &["attach", &pod],
                &["port-forward", &format!("pod/{pod}"), ":8080"],
                &["get", "--raw", &proxy],
            ];

            // The developer is refused on every path, naming who may.
            for args in attempts {
                let out = mandate
                    .connect_judged(ns, &pod, ("dev", &[]), args, "denied")
                    .await?;
                let refusal = Refusal::parse(&stderr(&out)).with_context(|| {
                    format!("kubectl {args:?} as dev: no refusal in {}", stderr(&out))
                })?;
                assert_eq!(refusal.webhook, CONNECT_IN_AGENT_NAMESPACES, "{args:?}");
                assert_eq!(refusal.codes, ["ExecNotOwner"], "{args:?}");
                assert!(
                    refusal.message.contains(
                        "dev is neither the owner of agent researcher (User:alice) nor in group \
                         mandate:approvers"
                    ),
                    "{refusal:?}"
                );
            }

            // The owner and an approver get past admission: their attempts fail later, at the
            // pod that no kubelet runs, and not by mandate.
            let audit = AuditLog::mark()?;
            for (user, groups) in [("alice", &[][..]), ("carol", &[APPROVERS][..])] {
                for args in attempts {
                    let out = mandate
                        .connect_judged(ns, &pod, (user, groups), args, "allowed")
                        .await?;
                    assert!(
                        !refused_by_mandate(&out),
                        "kubectl {args:?} as {user}: {}",
                        stderr(&out)
                    );
                }
            }
            // Allowed connections are audited too: the API server's audit log carries the
            // decision of the webhook that judged the owner's exec.
            let key = |k: &str| format!("{CONNECT_IN_AGENT_NAMESPACES}/{k}");
            let annotations = eventually("the owner's exec in the audit log", TIMEOUT, || async {
                Ok(audit.pod_events(ns, &pod)?.into_iter().find_map(|event| {
                    // The test impersonates: the API server audits the admin as `user`.
                    (event["objectRef"]["subresource"] == "exec"
                        && event["impersonatedUser"]["username"] == "alice"
                        && event["annotations"][key("decision")].is_string())
                    .then(|| event["annotations"].clone())
                }))
            })
            .await?;
            assert_eq!(annotations[key("decision")], "allowed", "{annotations:#}");
            assert_eq!(annotations[key("agent")], "researcher");
            assert_eq!(annotations[key("owner")], "User:alice");
            // kubectl debug adds an ephemeral container: code inside the pod, with its volumes
            // and (--target) its processes, exec by another name. Same rule, on the pod path.
            // `edit` does not grant pods/ephemeralcontainers; a debugging role does.
            for command in [
                &[
                    "create",
                    "role",
                    "debugger",
                    "--verb=get,patch,update",
                    "--resource=pods/ephemeralcontainers",
                    "-n",
                    ns,
                ][..],
                &[
                    "create",
                    "rolebinding",
                    "debuggers",
                    "--role=debugger",
                    "--user=dev",
                    "--user=alice",
                    "-n",
                    ns,
                ],
            ] {
                kubectl_ok(command, None)?;
            }
            let debug = [
                "debug",
                pod.as_str(),
                "--image=registry.invalid/debug:1",
                "--target=agent",
                // The baseline profile adds nothing the Pod Security baseline refuses, so only
                // who debugs is in question here (the default profile adds SYS_PTRACE).
                "--profile=baseline",
            ];
            let out = kubectl_connect(ns, "dev", &[], &debug)?;
            let refusal = Refusal::parse(&stderr(&out))
                .with_context(|| format!("kubectl debug as dev: {}", stderr(&out)))?;
            assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
            assert_eq!(refusal.codes, ["ExecNotOwner"], "{refusal:?}");
            assert!(
                refusal
                    .message
                    .contains("only they may add an ephemeral container (kubectl debug) to"),
                "{refusal:?}"
            );
            let out = kubectl_connect(ns, "alice", &[], &debug)?;
            ensure!(
                out.status.success(),
                "the owner's kubectl debug was refused: {}",
                stderr(&out)
            );
            let metrics = mandate.operator.metrics()?;
            for decision in ["denied", "allowed"] {
                assert!(
                    metrics.contains(&format!(
                        r#"mandate_admission_requests_total{{resource="pods",decision="{decision}","#
                    )),
                    "no {decision} pod decision in:\n{metrics}"
                );
            }
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_elsewhere_are_judged_only_into_agent_pods_and_warn_mode_admits_with_a_warning()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-connect-scope").await?;
    mandate
        .explain(async {
            // Not an agent namespace: a plain pod is left alone, an agent-labelled one is
            // judged in the default mode (enforce) by the Ignore webhook.
            let plain = mandate.namespace("adm-connect-plain", None).await?;
            let plain = plain.name.as_str();
            grant_edit(plain, "dev").await?;
            admitted(&in_namespace(pod("web-0", None, "default"), plain), None).await?;
            mark_running(plain, "web-0")?;
            let out = mandate
                .connect_judged(
                    plain,
                    "web-0",
                    ("dev", &[]),
                    &["exec", "web-0", "--", "true"],
                    "skipped",
                )
                .await?;
            assert!(!refused_by_mandate(&out), "{}", stderr(&out));
            let helper = agent_pod_in(&mandate, plain, "helper").await?;
            let out = mandate
                .connect_judged(
                    plain,
                    &helper,
                    ("dev", &[]),
                    &["exec", &helper, "--", "true"],
                    "denied",
                )
                .await?;
            let refusal = Refusal::parse(&stderr(&out))
                .with_context(|| format!("no refusal in {}", stderr(&out)))?;
            assert_eq!(refusal.webhook, CONNECT_ELSEWHERE);
            assert_eq!(refusal.codes, ["ExecNotOwner"]);

            // A warn namespace admits the developer's exec, with a warning.
            let warn = mandate.namespace("adm-connect-warn", Some("warn")).await?;
            let warn = warn.name.as_str();
            let pod = agent_pod_in(&mandate, warn, "researcher").await?;
            grant_edit(warn, "dev").await?;
            let out = mandate
                .connect_judged(
                    warn,
                    &pod,
                    ("dev", &[]),
                    &["exec", &pod, "--", "true"],
                    "warned",
                )
                .await?;
            assert!(!refused_by_mandate(&out), "{}", stderr(&out));
            // The warning is in the AdmissionResponse (the decision line says `warned`), but
            // kubectl prints no response warnings for a connection (exec, attach, port-forward
            // stream; its raw GET of the proxy answered with an error prints none either).
            Ok(())
        })
        .await
}
