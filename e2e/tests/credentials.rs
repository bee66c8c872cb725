//! A credential per tool (issue 15) on the real control plane, with mandate's validating and
//! mutating webhooks registered as the chart installs them, attacked as a namespace developer
//! would: kubectl `--as dev` holding `edit` plus the pod verbs (no ClusterRole aggregation here).
//!
//! - an agent pod gets one projected token volume per live tool (the tool's audience, the
//!   identity's TTL, read-only at `/var/run/mandate.dev/tools/<tool>/token` in every container),
//!   read back from the API server; the same manifest under another name gets the same; the
//!   stored pod sent again (a server dry run) gets no second patch;
//! - the tokens are real: a TokenRequest for a live tool's audience, bound to the pod, is
//!   admitted (one for another agent's tool is not), and the decision service accepts it at its
//!   tool and refuses it at another (`WrongAudience`);
//! - a pod started before a tool was granted makes the identity report `CredentialsStale`
//!   naming it (condition, event, `mandate inventory`); a new pod gets the new tool; deleting
//!   the old pod clears the condition;
//! - forging the credentials annotation, or mounting a token for another agent's tool, is
//!   refused (`TokenTTL`); mandate's reserved volume names are mandate's.
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use mandate::api::conditions::{CREDENTIALS_STALE, READY, is_true};
use mandate::api::{AgentIdentity, TOOL_CREDENTIALS_ANNOTATION};
use mandate_e2e::admission::{CREDENTIALS_IN_AGENT_NAMESPACES, PODS_IN_AGENT_NAMESPACES};
use mandate_e2e::operator::{Operator, OperatorOptions, mandate_binary};
use mandate_e2e::scene::{Scene, grant, grant_cluster_role};
use mandate_e2e::{TestNamespace, eventually, kubeconfig_path, kubectl_ok, kubectl_with_stdin};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
const ISOLATION_LABEL: &str = "e2e.mandate.dev/credentials";
const DEV: &str = "dev";
/// The reader's token lifetime: its pods' tool tokens must carry exactly this.
const READER_TTL: i64 = 1200;

/// The operator, its webhooks (validating and mutating) scoped to this test's namespace, and
/// the namespace, opted in with `enforce`, where `dev` holds `edit` and the pod verbs.
struct World {
    scene: Scene,
    ns: TestNamespace,
}

impl std::ops::Deref for World {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl World {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let scene = Scene::start(test, ISOLATION_LABEL, OperatorOptions::unique()).await?;
        let ns = scene.namespace("credentials", Some("enforce")).await?;
        grant_cluster_role(&ns.name, "dev-edit", "edit", &[DEV])?;
        grant(
            &ns.name,
            "dev-pods",
            "get,list,watch,create,update,patch,delete",
            "pods",
            &[DEV],
        )?;
        Ok(World { scene, ns })
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    /// Applies `manifests` as the admin until admitted (a binding applied right after its
    /// identity may meet a webhook cache a few milliseconds behind).
    async fn apply(&self, manifests: &str) -> anyhow::Result<()> {
        let ns = self.name();
        eventually("the manifests to be admitted", TIMEOUT, || async {
            let out = kubectl_with_stdin(&["apply", "-n", ns, "-f", "-"], Some(manifests))?;
            Ok(out.status.success().then_some(()))
        })
        .await
    }

    /// The identity `agent` once `check` holds for it.
    async fn identity_where(
        &self,
        agent: &str,
        what: &str,
        check: impl Fn(&AgentIdentity) -> bool,
    ) -> anyhow::Result<AgentIdentity> {
        let identities: Api<AgentIdentity> = Api::namespaced(self.client.clone(), self.name());
        eventually(&format!("{agent}: {what}"), TIMEOUT, || async {
            let identity = identities.get(agent).await?;
            Ok(check(&identity).then_some(identity))
        })
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    async fn ready(&self, agent: &str, tools: i32) -> anyhow::Result<()> {
        self.identity_where(agent, &format!("Ready with {tools} tool(s)"), |i| {
            i.status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == tools)
        })
        .await
        .map(|_| ())
    }

    /// Creates `manifest` as dev until admitted (the webhook's snapshot may lag the binding
    /// by milliseconds); the stored pod.
    async fn create_pod(&self, name: &str, manifest: &str) -> anyhow::Result<Pod> {
        let ns = self.name();
        eventually(&format!("pod {name} to be admitted"), TIMEOUT, || async {
            Ok(as_dev(ns, &["create", "-f", "-"], Some(manifest))?
                .status
                .success()
                .then_some(()))
        })
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))?;
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .get(name)
            .await?)
    }

    /// The CredentialsStale condition of `agent` once it has `status`: (status, message).
    async fn credentials_stale(&self, agent: &str, status: &str) -> anyhow::Result<String> {
        let identity = self
            .identity_where(agent, &format!("CredentialsStale={status}"), |i| {
                stale_condition(i).is_some_and(|(s, _)| s == status)
            })
            .await?;
        Ok(stale_condition(&identity)
            .map(|(_, message)| message)
            .unwrap_or_default())
    }

    /// Whether an event of `reason` about `agent` exists.
    async fn event(&self, agent: &str, reason: &str) -> anyhow::Result<()> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.name());
        eventually(&format!("a {reason} event on {agent}"), TIMEOUT, || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(agent)
                });
            Ok(found.then_some(()))
        })
        .await
    }

    /// The operator's log lines (JSON) of the mutating webhook's decisions on pod `name`.
    fn mutations_of(&self, name: &str) -> Vec<Value> {
        self.operator
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["path"] == "/mutate/pods" && line["name"] == name)
            .collect()
    }
}

fn stale_condition(identity: &AgentIdentity) -> Option<(String, String)> {
    identity
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CREDENTIALS_STALE)
        .map(|c| (c.status.clone(), c.message.clone()))
}

/// `reader` (ReadOnly, tokens of 1200 s, no extra audiences) and `writer`, each with one
/// binding, and the Services their tools live at. `reader_tools` are the reader's first
/// binding's tools.
fn agents(reader_tools: &[&str]) -> String {
    let tool = |name: &str| {
        format!(
            "  - name: {name}\n    actions: [read]\n    destination: {{service: {{name: {name}-mcp}}}}\n    mcp: {{tools: [{{name: use_{name}, action: read}}]}}\n"
        )
    };
    let tools: String = reader_tools.iter().map(|t| tool(t)).collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: docs-mcp}}
spec: {{selector: {{app: docs-mcp}}, ports: [{{port: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: search-mcp}}
spec: {{selector: {{app: search-mcp}}, ports: [{{port: 8080}}]}}
---
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {{name: reader}}
spec:
  owner: {{kind: Group, name: docs-team}}
  class: ReadOnly
  purpose: Reads the handbook and searches the web.
  credentials: {{tokenTtlSeconds: {READER_TTL}}}
---
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {{name: writer}}
spec:
  owner: {{kind: Group, name: finance}}
  class: WriteCapable
  purpose: Books invoices.
---
apiVersion: mandate.dev/v1alpha1
kind: ToolBinding
metadata: {{name: reader-tools}}
spec:
  agent: reader
  tools:
{tools}---
apiVersion: mandate.dev/v1alpha1
kind: ToolBinding
metadata: {{name: writer-tools}}
spec:
  agent: writer
  tools:
  - name: ledger
    actions: [write]
    destination: {{service: {{name: ledger-api}}}}
"#
    )
}

/// A pod of `agent` with an init container and a main container, and `extra` merged into it.
fn pod(name: &str, agent: &str, extra: Value) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"mandate.dev/agent": agent}},
        "spec": {
            "serviceAccountName": agent,
            "automountServiceAccountToken": false,
            "initContainers": [{"name": "setup", "image": "registry.example/setup:1"}],
            "containers": [{"name": "agent", "image": "registry.example/agent:1"}],
        },
    });
    merge(&mut pod, extra);
    pod.to_string()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

/// kubectl as the namespace developer.
fn as_dev(ns: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut all = vec!["--as", DEV, "-n", ns];
    all.extend_from_slice(args);
    kubectl_with_stdin(&all, stdin)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless `out` is mandate's refusal by `webhook` naming `code` and `detail`.
fn refused(out: &Output, webhook: &str, code: &str, detail: &str) -> anyhow::Result<()> {
    let text = stderr(out);
    if out.status.success()
        || !text.contains(&format!(
            "admission webhook \"{webhook}\" denied the request"
        ))
        || !text.contains(&format!("{code}: "))
        || !text.contains(detail)
    {
        bail!(
            "expected {webhook} to refuse with {code} ({detail}); got {:?}: {text}",
            out.status
        );
    }
    Ok(())
}

/// The token volumes of a pod: (volume, audience, expirationSeconds, path).
fn tokens(pod: &Pod) -> Vec<(String, String, i64, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(|v| {
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.service_account_token.as_ref())
                .map(|t| {
                    (
                        v.name.clone(),
                        t.audience.clone().unwrap_or_default(),
                        t.expiration_seconds.unwrap_or_default(),
                        t.path.clone(),
                    )
                })
        })
        .collect()
}

/// The volumeMounts of every init and regular container: (container, volume, path, readOnly).
fn mounts(pod: &Pod) -> Vec<(String, String, String, bool)> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .flat_map(|c| {
            c.volume_mounts.iter().flatten().map(|m| {
                (
                    c.name.clone(),
                    m.name.clone(),
                    m.mount_path.clone(),
                    m.read_only.unwrap_or_default(),
                )
            })
        })
        .collect()
}

fn credentials_annotation(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(TOOL_CREDENTIALS_ANNOTATION)
        .cloned()
}

/// A real token of `agent` for `audience`, bound to `pod`, asked for as the admin.
fn token_request(ns: &str, agent: &str, pod: &str, audience: &str) -> anyhow::Result<Output> {
    kubectl_with_stdin(
        &[
            "create",
            "token",
            agent,
            "-n",
            ns,
            "--audience",
            audience,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            &format!("{READER_TTL}s"),
        ],
        None,
    )
}

/// One AuthZEN evaluation at the operator's decision service: `token` calling MCP tool `tool`
/// on Service `ns/service`; the answer.
fn evaluate(
    operator: &Operator,
    token: &str,
    ns: &str,
    service: &str,
    tool: &str,
) -> anyhow::Result<Value> {
    let body = json!({
        "subject": {"type": "agent", "id": "reader", "properties": {"token": token}},
        "action": {"name": "tools/call"},
        "resource": {"type": "mcp_tool", "id": tool,
                     "properties": {"service": format!("{ns}/{service}")}},
    });
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(operator.cert.dir.join("ca.crt"))
        .args(["-H", "content-type: application/json", "--data"])
        .arg(body.to_string())
        .arg(format!("https://{}/access/v1/evaluation", operator.authz))
        .output()?;
    ensure!(
        out.status.success(),
        "AuthZEN: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pod_gets_one_real_token_per_live_tool_and_the_same_patch_every_time()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = World::start("tokens").await?;
    let ns = world.name().to_owned();
    world.apply(&agents(&["docs", "search"])).await?;
    world.ready("reader", 2).await?;
    world.ready("writer", 1).await?;

    let reader = world
        .create_pod("reader-0", &pod("reader-0", "reader", json!({})))
        .await?;
    let docs = format!("mandate.dev/{ns}/docs");
    let search = format!("mandate.dev/{ns}/search");
    assert_eq!(
        tokens(&reader),
        [
            (
                "mandate-tool-docs".into(),
                docs.clone(),
                READER_TTL,
                "token".into()
            ),
            (
                "mandate-tool-search".into(),
                search.clone(),
                READER_TTL,
                "token".into()
            ),
        ],
        "one token per live tool, with its audience and the identity's TTL"
    );
    let mut expected_mounts = Vec::new();
    for container in ["setup", "agent"] {
        for tool in ["docs", "search"] {
            expected_mounts.push((
                container.to_owned(),
                format!("mandate-tool-{tool}"),
                format!("/var/run/mandate.dev/tools/{tool}"),
                true,
            ));
        }
    }
    assert_eq!(mounts(&reader), expected_mounts);
    assert_eq!(
        credentials_annotation(&reader).as_deref(),
        Some("docs,search")
    );

    // The same manifest under another name gets the same volumes, mounts and annotation.
    let twin = world
        .create_pod("reader-1", &pod("reader-1", "reader", json!({})))
        .await?;
    assert_eq!(tokens(&twin), tokens(&reader));
    assert_eq!(mounts(&twin), mounts(&reader));
    assert_eq!(
        credentials_annotation(&twin),
        credentials_annotation(&reader)
    );

    // The stored pod, sent again as a new pod (a server dry run): no second patch, nothing
    // doubled. This is what the API server's reinvocation sees.
    let mut again = serde_json::to_value(&reader)?;
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        again["metadata"].as_object_mut().map(|m| m.remove(field));
    }
    again["metadata"]["name"] = json!("reader-2");
    again.as_object_mut().map(|o| o.remove("status"));
    let out = as_dev(
        &ns,
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&again.to_string()),
    )?;
    ensure!(out.status.success(), "dry run: {}", stderr(&out));
    let dry: Pod = serde_json::from_slice(&out.stdout)?;
    assert_eq!(tokens(&dry), tokens(&reader));
    assert_eq!(mounts(&dry), mounts(&reader));
    let lines = world.mutations_of("reader-2");
    ensure!(
        lines
            .iter()
            .any(|l| l["tool_credentials"] == "docs,search" && l["patch_operations"] == 0),
        "the mutating webhook patched the stored pod again: {lines:#?}"
    );
    let first = world.mutations_of("reader-0");
    ensure!(
        first
            .iter()
            .any(|l| l["patch_operations"].as_u64() > Some(0)),
        "no patch logged for reader-0: {first:#?}"
    );

    // The tokens are real: a TokenRequest for the volume's audience, bound to the pod, is
    // admitted (the identity lists no extra audience: the live tool's counts); one for
    // another agent's tool is refused.
    let out = token_request(&ns, "reader", "reader-0", &docs)?;
    ensure!(out.status.success(), "TokenRequest: {}", stderr(&out));
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    let out = token_request(
        &ns,
        "reader",
        "reader-0",
        &format!("mandate.dev/{ns}/ledger"),
    )?;
    refused(
        &out,
        CREDENTIALS_IN_AGENT_NAMESPACES,
        "TokenTTL",
        &format!("audience mandate.dev/{ns}/ledger"),
    )?;

    // The decision service accepts it at its tool and refuses it at the other one.
    let allowed = evaluate(&world.operator, &token, &ns, "docs-mcp", "use_docs")?;
    assert_eq!(allowed["decision"], true, "{allowed:#}");
    let other = evaluate(&world.operator, &token, &ns, "search-mcp", "use_search")?;
    assert_eq!(other["decision"], false, "{other:#}");
    assert_eq!(other["context"]["reason"], "WrongAudience", "{other:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_before_a_tool_was_granted_is_reported_until_it_is_gone() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let world = World::start("stale").await?;
    let ns = world.name().to_owned();
    world.apply(&agents(&["docs"])).await?;
    world.ready("reader", 1).await?;
    let old = world
        .create_pod("old-0", &pod("old-0", "reader", json!({})))
        .await?;
    assert_eq!(credentials_annotation(&old).as_deref(), Some("docs"));
    let message = world.credentials_stale("reader", "False").await?;
    assert!(
        message.starts_with("every pod of the agent holds"),
        "{message}"
    );

    // A second binding grants search: old-0 has no token for it.
    world
        .apply(
            "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {name: reader-search}\n\
             spec:\n  agent: reader\n  tools:\n  - name: search\n    actions: [read]\n    \
             destination: {service: {name: search-mcp}}\n",
        )
        .await?;
    let message = world.credentials_stale("reader", "True").await?;
    assert!(message.starts_with("pod old-0 lacks search: "), "{message}");
    world.event("reader", "CredentialsStale").await?;

    // mandate inventory shows it.
    let out = std::process::Command::new(mandate_binary())
        .args(["inventory", "-n", &ns, "-o", "json"])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    let inventory: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("mandate inventory: {}", stderr(&out)))?;
    let reader = inventory["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "reader")
        .context("reader in the inventory")?;
    assert_eq!(
        reader["staleCredentials"],
        json!([{"pod": "old-0", "missing": ["search"]}]),
        "{inventory:#}"
    );
    let table = std::process::Command::new(mandate_binary())
        .args(["inventory", "-n", &ns])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("STALE CREDENTIALS (1)"), "{table}");

    // A pod started now gets both tools.
    let new = world
        .create_pod("new-0", &pod("new-0", "reader", json!({})))
        .await?;
    let volumes: Vec<String> = tokens(&new).into_iter().map(|t| t.0).collect();
    assert_eq!(volumes, ["mandate-tool-docs", "mandate-tool-search"]);
    assert_eq!(credentials_annotation(&new).as_deref(), Some("docs,search"));
    let message = world.credentials_stale("reader", "True").await?;
    assert!(!message.contains("new-0"), "{message}");

    // The old pod goes (no kubelet: an unscheduled pod is deleted at once): current again.
    kubectl_ok(&["delete", "pod", "old-0", "-n", &ns, "--wait=false"], None)?;
    let message = world.credentials_stale("reader", "False").await?;
    assert!(
        message.starts_with("every pod of the agent holds"),
        "{message}"
    );
    world.event("reader", "CredentialsCurrent").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_credentials_and_another_agents_tool_token_are_refused() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = World::start("forged").await?;
    let ns = world.name().to_owned();
    world.apply(&agents(&["docs", "search"])).await?;
    world.ready("reader", 2).await?;
    world.ready("writer", 1).await?;
    let ledger = format!("mandate.dev/{ns}/ledger");

    // At creation the annotation is mandate's to write: a forged one is put right.
    let forged = world
        .create_pod(
            "forged-0",
            &pod(
                "forged-0",
                "reader",
                json!({"metadata": {"annotations": {TOOL_CREDENTIALS_ANNOTATION: "docs,search,ledger"}}}),
            ),
        )
        .await?;
    assert_eq!(
        credentials_annotation(&forged).as_deref(),
        Some("docs,search")
    );

    // Afterwards, claiming a tool the pod holds no token for is refused.
    let out = as_dev(
        &ns,
        &[
            "annotate",
            "pod",
            "forged-0",
            "--overwrite",
            &format!("{TOOL_CREDENTIALS_ANNOTATION}=docs,search,ledger"),
        ],
        None,
    )?;
    refused(
        &out,
        PODS_IN_AGENT_NAMESPACES,
        "TokenTTL",
        "names tool ledger, but AgentIdentity reader holds no tool ledger now",
    )?;

    // A token volume for another agent's tool audience is refused.
    let sneaky = json!({"spec": {"volumes": [{"name": "sneaky", "projected": {"sources": [
        {"serviceAccountToken": {"audience": ledger, "expirationSeconds": 600, "path": "token"}}
    ]}}]}});
    let out = as_dev(
        &ns,
        &["create", "-f", "-"],
        Some(&pod("sneaky-0", "reader", sneaky)),
    )?;
    refused(
        &out,
        PODS_IN_AGENT_NAMESPACES,
        "TokenTTL",
        &format!("volume sneaky projects a token for audience {ledger}"),
    )?;

    // Under mandate's reserved name it is mandate's: replaced by what the reader holds.
    let reserved = json!({"spec": {"volumes": [{"name": "mandate-tool-ledger", "projected": {
        "sources": [{"serviceAccountToken": {"audience": ledger, "expirationSeconds": 600,
                                             "path": "token"}}]}}]}});
    let cleaned = world
        .create_pod("reserved-0", &pod("reserved-0", "reader", reserved))
        .await?;
    let audiences: Vec<String> = tokens(&cleaned).into_iter().map(|t| t.1).collect();
    assert_eq!(
        audiences,
        [
            format!("mandate.dev/{ns}/docs"),
            format!("mandate.dev/{ns}/search")
        ]
    );
    Ok(())
}
