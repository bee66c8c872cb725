//! `mandate inventory` and `mandate check` on the real control plane, with the operator running
//! so statuses are real: the inventory of the samples plus deliberately unmanaged objects (its
//! JSON asserted, its table's width and whole SPIFFE IDs, its dot output rendered by Graphviz,
//! the kubectl plugin name), clear errors, and the parity of `mandate check` with the webhook on every fixture of
//! `e2e/fixtures/check/`.
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};
use kube::Api;
use mandate::admission::Reason;
use mandate::api::AgentIdentity;
use mandate::api::conditions::READY;
use mandate::assess::projections_applied;
use mandate_e2e::admission::{RegisteredWebhooks, WebhookSettings, webhook_configuration};
use mandate_e2e::operator::{Operator, OperatorOptions, mandate_binary};
use mandate_e2e::resources::{install_crds, rfc3339_from_now, samples_dir, with_valid_until};
use mandate_e2e::{
    TestNamespace, bin_dir, client, eventually, kubeconfig_path, kubectl_ok, kubectl_with_stdin,
    repo_root, state_dir,
};
use serde_json::Value;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
/// The namespace label that scopes this file's webhooks to its own namespaces.
const ISOLATION_LABEL: &str = "e2e.mandate.dev/cli";

/// Runs `mandate <args>` against the local control plane.
fn mandate(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(mandate_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()?)
}

/// Runs `mandate <args>` and returns its stdout; fails with its stderr unless it exited 0.
fn mandate_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = mandate(args)?;
    if !out.status.success() {
        bail!(
            "mandate {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Waits until the identity reports whether its projections are applied (Ready, or not Ready
/// only for want of a live tool).
async fn wait_projected(
    api: &Api<AgentIdentity>,
    name: &str,
    projected: bool,
) -> anyhow::Result<()> {
    eventually(
        &format!("AgentIdentity {name} to report projected={projected}"),
        TIMEOUT,
        || async {
            let identity = api.get(name).await?;
            let status = identity.status.as_ref();
            let reported = status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY));
            let is_projected = projections_applied(status);
            Ok((reported && is_projected == projected).then_some(()))
        },
    )
    .await
}

fn apply(ns: &str, yaml: &str) -> anyhow::Result<()> {
    kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(yaml))?;
    Ok(())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// inventory
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_lists_agents_edges_escalations_and_exactly_the_unmanaged() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "cli-inv", &[("mandate.dev/mode", "audit")]).await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    let n = ns.name.as_str();

    let samples = samples_dir();
    for file in [
        "support/services.yaml",
        "researcher.yaml",
        "planner-executor.yaml",
        "code-agent.yaml",
    ] {
        let path = samples.join(file);
        kubectl_ok(&["apply", "-n", n, "-f", &path.to_string_lossy()], None)?;
    }
    // The High-risk grant, valid four hours from now: it shows up as expiring within 24h.
    let deploy = std::fs::read_to_string(samples.join("code-agent-deploy.yaml"))?;
    apply(n, &with_valid_until(&deploy, &rfc3339_from_now(4 * 3600)?))?;
    // An escalation: the researcher hands on git, which it does not hold.
    apply(
        n,
        "apiVersion: mandate.dev/v1alpha1\nkind: DelegationPolicy\nmetadata: {name: researcher-to-code-agent}\n\
         spec:\n  delegator: researcher\n  delegates:\n  - agent: code-agent\n    tools: [git]\n",
    )?;
    // The unmanaged: a ServiceAccount no identity owns, a pod on it without an identity, and a
    // legacy token of it.
    apply(
        n,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: legacy-bot}\n",
    )?;
    apply(
        n,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray}\nspec:\n  serviceAccountName: legacy-bot\n  \
         automountServiceAccountToken: false\n  containers: [{name: c, image: registry.example.com/c:1}]\n",
    )?;
    apply(
        n,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: legacy-bot-token\n  annotations:\n    \
         kubernetes.io/service-account.name: legacy-bot\ntype: kubernetes.io/service-account-token\n",
    )?;

    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), n);
    for agent in ["researcher", "planner", "executor", "code-agent"] {
        wait_projected(&identities, agent, true).await?;
    }
    // The reconciler's view of the escalation has landed once the researcher reports it.
    eventually(
        "the researcher to report its escalation path",
        TIMEOUT,
        || async {
            let identity = identities.get("researcher").await?;
            Ok(identity
                .status
                .is_some_and(|s| !s.escalation_paths.is_empty())
                .then_some(()))
        },
    )
    .await?;

    let json: Value = serde_json::from_str(&mandate_ok(&["inventory", "-n", n, "-o", "json"])?)?;
    let agents: Vec<(String, bool, String, Vec<String>)> = json["agents"]
        .as_array()
        .context("agents")?
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["ready"].as_bool().unwrap_or_default(),
                a["spiffeID"].as_str().unwrap_or_default().to_owned(),
                a["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        })
        .collect();
    let spiffe = |sa: &str| format!("spiffe://cluster.local/ns/{n}/sa/{sa}");
    let tools = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        agents,
        [
            (
                "code-agent".to_owned(),
                true,
                spiffe("code-agent"),
                tools(&["deploy-api", "git"])
            ),
            (
                "executor".to_owned(),
                true,
                spiffe("executor"),
                tools(&["ledger"])
            ),
            (
                "planner".to_owned(),
                true,
                spiffe("planner"),
                tools(&["ledger"])
            ),
            (
                "researcher".to_owned(),
                true,
                spiffe("researcher"),
                tools(&["catalogue", "web-search"])
            ),
        ]
    );
    assert_eq!(json["agents"][0]["owner"], "User:alice");
    assert_eq!(json["agents"][0]["class"], "WriteCapable");

    let edges: Vec<(String, String, String, bool)> = json["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| {
            (
                e["delegator"].as_str().unwrap_or_default().to_owned(),
                e["delegate"].as_str().unwrap_or_default().to_owned(),
                e["policy"].as_str().unwrap_or_default().to_owned(),
                e["withdrawn"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            (
                "planner".to_owned(),
                "executor".to_owned(),
                "planner-to-executor".to_owned(),
                false
            ),
            (
                "researcher".to_owned(),
                "code-agent".to_owned(),
                "researcher-to-code-agent".to_owned(),
                true
            ),
        ]
    );
    let paths = json["escalationPaths"].as_array().context("paths")?;
    assert_eq!(paths.len(), 1, "{paths:#?}");
    assert_eq!(paths[0]["kind"], "escalation");
    assert_eq!(strings(&paths[0]["chain"]), ["researcher", "code-agent"]);
    assert_eq!(paths[0]["tool"], "git");

    let names = |key: &str| -> Vec<String> {
        json["unmanaged"][key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names("pods"), ["stray"]);
    assert_eq!(
        names("serviceAccounts"),
        ["legacy-bot"],
        "default is left out while no pod runs as it; the agents' own are managed"
    );
    assert_eq!(names("tokenSecrets"), ["legacy-bot-token"]);
    let expiring: Vec<(String, String)> = json["expiring"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["agent"].as_str().unwrap_or_default().to_owned(),
                t["tool"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        expiring,
        [("code-agent".to_owned(), "deploy-api".to_owned())]
    );
    let soon = mandate_ok(&["inventory", "-n", n, "-o", "json", "--expiring", "1h"])?;
    assert_eq!(
        serde_json::from_str::<Value>(&soon)?["expiring"],
        Value::Array(vec![])
    );

    // YAML says the same as JSON.
    let yaml: Value = serde_yaml::from_str(&mandate_ok(&["inventory", "-n", n, "-o", "yaml"])?)?;
    assert_eq!(names_and_tools(&yaml), names_and_tools(&json));

    // The table fits 120 columns, and every SPIFFE ID in it is whole.
    let table = mandate_ok(&["inventory", "-n", n])?;
    for line in table.lines() {
        assert!(line.chars().count() <= 120, "wider than 120: {line:?}");
    }
    for agent in ["code-agent", "executor", "planner", "researcher"] {
        assert!(
            table.contains(&format!("  {}\n", spiffe(agent))),
            "the whole SPIFFE ID of {agent} ends its row:\n{table}"
        );
    }
    assert!(table.contains("ESCALATION PATHS (1)"), "{table}");
    println!("{table}");

    // Graphviz renders the dot output without a complaint.
    let dot = mandate_ok(&["inventory", "-n", n, "-o", "dot"])?;
    assert!(dot.contains("color=red"), "{dot}");
    render_with_graphviz(&dot)?;
    let mermaid = mandate_ok(&["inventory", "-n", n, "-o", "mermaid"])?;
    assert!(mermaid.starts_with("flowchart LR"));
    assert!(mermaid.contains("linkStyle"), "{mermaid}");

    // The same binary as a kubectl plugin.
    let plugin_dir = state_dir().join(format!("cli-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&plugin_dir)?;
    let plugin = plugin_dir.join("kubectl-mandate");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(mandate_binary(), &plugin)?;
    let path = format!(
        "{}:{}:{}",
        plugin_dir.display(),
        bin_dir()?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = bin_dir()?.join("kubectl");
    let out = Command::new(&kubectl)
        .args(["mandate", "inventory", "-n", n, "-o", "json"])
        .env("PATH", &path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    assert!(
        out.status.success(),
        "kubectl mandate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let via_kubectl: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(names_and_tools(&via_kubectl), names_and_tools(&json));
    let help = Command::new(&kubectl)
        .args(["mandate", "--help"])
        .env("PATH", &path)
        .output()?;
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl mandate"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    let _ = std::fs::remove_dir_all(&plugin_dir);
    Ok(())
}

/// Each agent's name and the names of its tools (time left changes between two runs).
fn names_and_tools(report: &Value) -> Vec<(String, Vec<String>)> {
    report["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let tools = a["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
                .collect();
            (a["name"].as_str().unwrap_or_default().to_owned(), tools)
        })
        .collect()
}

/// `dot -Tsvg`, or a loud skip when Graphviz is not installed (e2e/deps.sh installs it).
fn render_with_graphviz(dot: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "!!!!! WARNING: Graphviz `dot` is not installed: SKIPPING the render check \
                 (run e2e/deps.sh) !!!!!"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    child
        .stdin
        .take()
        .context("dot stdin")?
        .write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "dot -Tsvg failed: {stderr}\n{dot}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_errors_name_what_failed() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "cli-err", &[]).await?;

    // Nothing listens on port 1.
    let kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
    let mut unreachable = kubeconfig.clone();
    for cluster in unreachable["clusters"].as_array_mut().into_iter().flatten() {
        cluster["cluster"]["server"] = Value::String("https://127.0.0.1:1".into());
    }
    let dir = state_dir().join(format!("cli-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("unreachable");
    std::fs::write(&path, serde_yaml::to_string(&unreachable)?)?;
    let out = Command::new(mandate_binary())
        .args(["inventory", "-n", &ns.name])
        .env("KUBECONFIG", &path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the cluster at https://127.0.0.1:1"),
        "{stderr}"
    );

    // A ServiceAccount without any RBAC may list nothing.
    kubectl_ok(
        &["create", "serviceaccount", "nobody", "-n", &ns.name],
        None,
    )?;
    let token = kubectl_ok(&["create", "token", "nobody", "-n", &ns.name], None)?;
    let mut forbidden = kubeconfig;
    for user in forbidden["users"].as_array_mut().into_iter().flatten() {
        if let Some(user) = user["user"].as_object_mut() {
            user.retain(|k, _| !k.starts_with("client-"));
            user.insert("token".into(), Value::String(token.trim().to_owned()));
        }
    }
    let path = dir.join("forbidden");
    std::fs::write(&path, serde_yaml::to_string(&forbidden)?)?;
    let out = Command::new(mandate_binary())
        .args(["inventory", "-n", &ns.name])
        .env("KUBECONFIG", &path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "forbidden to list agentidentities in namespace {}",
            ns.name
        )),
        "{stderr}"
    );

    // An unreadable manifest.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\n---\njust words\n")?;
    let out = mandate(&["check", "-f", &bad.to_string_lossy()])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml#2: not a Kubernetes object"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// check: parity with the webhook
// ---------------------------------------------------------------------------------------------

/// A decision as a client sees it: `allowed`, `warned` or `denied`, with the reason codes of
/// warnings and denials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    decision: String,
    reasons: Vec<String>,
}

/// The codes in `text` at the start of `; `-separated findings (denials) or of lines
/// (warnings), in order, each once.
fn codes_in(findings: impl Iterator<Item = String>) -> Vec<String> {
    let known: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    let mut codes: Vec<String> = Vec::new();
    for finding in findings {
        if let Some((code, _)) = finding.trim().split_once(':')
            && known.contains(code)
            && !codes.iter().any(|c| c == code)
        {
            codes.push(code.to_owned());
        }
    }
    codes
}

/// What the webhook decides for `file`, through `kubectl apply --dry-run=server`.
fn webhook_decision(ns: &str, file: &Path) -> anyhow::Result<Seen> {
    let out = kubectl_with_stdin(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            ns,
            "-f",
            &file.to_string_lossy(),
        ],
        None,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        let warnings: Vec<String> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("Warning: "))
            .map(str::to_owned)
            .collect();
        let reasons = codes_in(warnings.into_iter());
        let decision = if reasons.is_empty() {
            "allowed"
        } else {
            "warned"
        };
        return Ok(Seen {
            decision: decision.to_owned(),
            reasons,
        });
    }
    let Some((_, refusal)) = stderr.split_once("denied the request: ") else {
        bail!(
            "{} was refused by something other than mandate: {stderr}",
            file.display()
        );
    };
    let findings = refusal.split_once("failed): ").map_or(refusal, |(_, f)| f);
    Ok(Seen {
        decision: "denied".to_owned(),
        reasons: codes_in(findings.split("; ").map(str::to_owned)),
    })
}

/// What `mandate check` predicts for each result of its JSON output, by source file name.
fn predictions(json: &str) -> anyhow::Result<BTreeMap<String, Seen>> {
    let results: Value = serde_json::from_str(json)?;
    let mut out = BTreeMap::new();
    for r in results["results"].as_array().context("results")? {
        let source = r["source"].as_str().unwrap_or_default();
        let file = source
            .rsplit_once('#')
            .map_or(source, |(f, _)| f)
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let decision = match r["decision"].as_str().unwrap_or_default() {
            d @ ("denied" | "warned") => d,
            _ => "allowed",
        };
        let reasons = if decision == "allowed" {
            Vec::new()
        } else {
            strings(&r["reasons"])
        };
        out.insert(
            file,
            Seen {
                decision: decision.to_owned(),
                reasons,
            },
        );
    }
    Ok(out)
}

/// Copies `e2e/fixtures/check/<sub>` into `dir`, with `VALID_UNTIL_IN_4H` replaced.
fn render_fixtures(sub: &str, dir: &Path, valid_until: &str) -> anyhow::Result<Vec<PathBuf>> {
    let source = repo_root().join("e2e/fixtures/check").join(sub);
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&source)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)?
                .replace("VALID_UNTIL_IN_4H", &format!("\"{valid_until}\""));
            let target = dir.join(path.file_name().context("file name")?);
            std::fs::write(&target, text)?;
            files.push(target);
        }
    }
    files.sort();
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_predicts_exactly_what_the_webhook_decides() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    install_crds(&client).await?;
    let run = format!("cli-{}", std::process::id());
    let ns = TestNamespace::create(
        &client,
        "cli-parity",
        &[("mandate.dev/mode", "enforce"), (ISOLATION_LABEL, &run)],
    )
    .await?;
    let n = ns.name.as_str();
    // The cases go to the webhook as the admin, who must not count as mandate itself (the
    // operator runs as the admin here): else a NetworkPolicy case would be mandate's own write,
    // which `mandate check` (asked as any user) never predicts.
    let operator = Operator::start(
        OperatorOptions::unique()
            .arg("--operator-user")
            .arg("system:serviceaccount:mandate-system:mandate"),
    )
    .await?;

    let work = state_dir().join(format!("cli-parity-{}", std::process::id()));
    let valid_until = rfc3339_from_now(4 * 3600)?;
    let setup = render_fixtures("setup", &work.join("setup"), &valid_until)?;
    let cases = render_fixtures("cases", &work.join("cases"), &valid_until)?;
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let namespace_manifest = work.join("namespace.yaml");
    std::fs::write(
        &namespace_manifest,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n  labels:\n    \
             mandate.dev/mode: enforce\n"
        ),
    )?;

    // The world, before mandate's webhooks are registered (so `stuck` exists), tokens last.
    let (tokens, rest): (Vec<_>, Vec<_>) = setup
        .iter()
        .partition(|p| p.to_string_lossy().ends_with("tokens.yaml"));
    for file in &rest {
        kubectl_ok(&["apply", "-n", n, "-f", &file.to_string_lossy()], None)?;
    }
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), n);
    for agent in [
        "researcher",
        "helper",
        "planner",
        "executor",
        "auditor",
        "ownerless",
        "idle",
        "inspector",
    ] {
        wait_projected(&identities, agent, true).await?;
    }
    wait_projected(&identities, "stuck", false).await?;
    for file in &tokens {
        kubectl_ok(&["apply", "-n", n, "-f", &file.to_string_lossy()], None)?;
    }

    let settings = WebhookSettings::new(
        format!("mandate-e2e-{run}"),
        format!("https://{}", operator.webhook),
        &operator.cert.ca_pem,
    )
    .isolated_by(ISOLATION_LABEL, &run);
    let _webhooks =
        RegisteredWebhooks::register(&client, &webhook_configuration(&settings)?).await?;
    let probe = work.join("probe.yaml");
    std::fs::write(
        &probe,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe}\nspec:\n  \
         automountServiceAccountToken: false\n  containers: [{name: c, image: i}]\n",
    )?;
    eventually("the API server to call mandate's webhooks", TIMEOUT, || {
        let probe = probe.clone();
        async move {
            let seen = webhook_decision(n, &probe);
            Ok(seen
                .ok()
                .filter(|s| s.reasons.iter().any(|r| r == "NoIdentity"))
                .map(|_| ()))
        }
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    // The secret the webhook's cache must know before pods referencing it are judged.
    eventually("the operator to see the legacy token", TIMEOUT, || {
        let file = work.join("cases/secret-agent-token.yaml");
        async move {
            Ok(webhook_decision(n, &file)
                .ok()
                .filter(|s| s.decision == "denied")
                .map(|_| ()))
        }
    })
    .await?;

    let user = ["--as", "admin", "--as-group", "system:masters"];
    let mut mismatches = Vec::new();
    let mut pod_codes: BTreeSet<String> = BTreeSet::new();
    let mut table = String::new();
    for case in &cases {
        let file = case
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_owned();
        let real = webhook_decision(n, case)?;
        let case_arg = case.to_string_lossy();
        let mut offline_args = vec!["check", "-n", n, "-o", "json"];
        offline_args.extend(user);
        let setup_dir = work.join("setup");
        let setup_arg = setup_dir.to_string_lossy();
        let ns_arg = namespace_manifest.to_string_lossy();
        offline_args.extend(["-f", &setup_arg, "-f", &ns_arg, "-f", &case_arg]);
        let mut cluster_args = vec!["check", "--cluster", "-n", n, "-o", "json"];
        cluster_args.extend(user);
        cluster_args.extend(["-f", &case_arg]);
        for (mode, args) in [("offline", offline_args), ("--cluster", cluster_args)] {
            let out = mandate(&args)?;
            if !matches!(out.status.code(), Some(0 | 1)) {
                bail!(
                    "mandate {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let predicted = predictions(&String::from_utf8(out.stdout)?)?;
            let Some(predicted) = predicted.get(&file) else {
                bail!("mandate check ({mode}) reported nothing for {file}");
            };
            if *predicted != real {
                mismatches.push(format!(
                    "{file} ({mode}): check predicts {predicted:?}, the webhook says {real:?}"
                ));
            }
        }
        if file.starts_with("pod-") {
            pod_codes.extend(real.reasons.iter().cloned());
        }
        table.push_str(&format!(
            "{file:<36} {:<8} {}\n",
            real.decision,
            real.reasons.join(",")
        ));
    }
    println!("{table}");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let every_pod_code: BTreeSet<String> = [
        "NoIdentity",
        "NoOwner",
        "IdentityNotReady",
        "NoBoundTools",
        "ServiceAccountHijack",
        "ServiceAccountMismatch",
        "HostNetwork",
        "TokenTTL",
        "LongLivedToken",
        "PodSecurityBaseline",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        every_pod_code.difference(&pod_codes).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "pod reason codes no fixture covers"
    );
    let decisions: BTreeSet<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(decisions, BTreeSet::from(["allowed", "denied", "warned"]));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
