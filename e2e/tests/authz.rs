//! The decision service end to end, through a real gateway: the operator runs as a local process
//! against the real control plane; Envoy (the official build) sits in front of an MCP server
//! built with the Go MCP SDK, with its MCP filter and ext_authz asking the operator over gRPC and
//! TLS; an MCP client calls through Envoy with a real token (a TokenRequest for the agent's
//! ServiceAccount bound to its stored, Pending pod, verified by TokenReview). Every decision is
//! checked in the client's answer, in the operator's JSON decision lines and in its metrics.

use std::time::Duration;

use anyhow::Context;
use kube::Api;
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};
use mandate_e2e::gateway::{Envoy, EnvoySettings, McpServer, mcp_call};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::install_crds;
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A ReadOnly agent `reader` holding tool `docs` at Service `docs-mcp`, which names only the
/// MCP tool `read_doc` (read); its token audience is allowed on the identity (what a cluster
/// with mandate's TokenRequest webhook requires), and a pod `reader-0` runs as it.
fn manifests(namespace: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: docs-mcp}}
spec:
  selector: {{app: docs-mcp}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {{name: reader}}
spec:
  owner: {{kind: Group, name: docs-team}}
  class: ReadOnly
  purpose: Reads the team handbook for questions.
  credentials: {{audiences: ["mandate.dev/{namespace}/docs"]}}
---
apiVersion: mandate.dev/v1alpha1
kind: ToolBinding
metadata: {{name: reader-tools}}
spec:
  agent: reader
  tools:
  - name: docs
    actions: [read]
    destination: {{service: {{name: docs-mcp}}}}
    mcp:
      tools:
      - {{name: read_doc, action: read}}
"#
    )
}

/// A stored (Pending) pod of `agent`, which TokenRequests can bind tokens to.
fn pod(name: &str, agent: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{mandate.dev/agent: {agent}}}
spec:
  serviceAccountName: {agent}
  automountServiceAccountToken: false
  containers: [{{name: agent, image: registry.example/agent:1}}]
"#
    )
}

/// A real token for `agent`'s ServiceAccount with `audience`, bound to `pod`.
fn token(namespace: &str, agent: &str, pod: &str, audience: &str) -> anyhow::Result<String> {
    Ok(kubectl_ok(
        &[
            "create",
            "token",
            agent,
            "-n",
            namespace,
            "--audience",
            audience,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "10m",
        ],
        None,
    )?
    .trim()
    .to_owned())
}

/// Waits until `agent` is Ready (its ServiceAccount exists, so its pods can be stored).
async fn ready(
    client: &kube::Client,
    namespace: &str,
    agent: &str,
    operator: &Operator,
) -> anyhow::Result<()> {
    let identities = Api::<AgentIdentity>::namespaced(client.clone(), namespace);
    eventually(&format!("{agent} to become Ready"), TIMEOUT, || async {
        let identity = identities.get(agent).await?;
        Ok(identity
            .status
            .is_some_and(|s| is_true(&s.conditions, READY))
            .then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))
}

/// `curl` against the operator's decision service (TLS, its CA), with extra arguments; stdout.
fn curl_authz(operator: &Operator, args: &[&str]) -> anyhow::Result<String> {
    let ca = operator.cert.dir.join("ca.crt");
    let (path, rest) = args.split_first().context("a path")?;
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&ca)
        .args(rest)
        .arg(format!("https://{}{path}", operator.authz))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl {path}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// POSTs an AuthZEN request with `X-Request-ID: e2e-1`: the response headers and body.
fn authzen(operator: &Operator, path: &str, body: &Value) -> anyhow::Result<(String, Value)> {
    let out = curl_authz(
        operator,
        &[
            path,
            "-D",
            "-",
            "-H",
            "content-type: application/json",
            "-H",
            "x-request-id: e2e-1",
            "--data",
            &body.to_string(),
        ],
    )?;
    let (headers, body) = out
        .split_once("\r\n\r\n")
        .with_context(|| format!("no header/body split in {out}"))?;
    Ok((headers.to_owned(), serde_json::from_str(body)?))
}

/// The MCP test server as Service `docs-mcp` of `namespace`, behind Envoy asking `operator`.
async fn docs_gateway(operator: &Operator, namespace: &str) -> anyhow::Result<(McpServer, Envoy)> {
    let server = McpServer::start().await?;
    let envoy = Envoy::start(&EnvoySettings {
        upstream: server.addr,
        authorizer: operator.authz,
        authorizer_ca: &operator.cert.ca_pem,
        service: &format!("{namespace}/docs-mcp"),
    })
    .await?;
    Ok((server, envoy))
}

/// The operator's decision lines, in order.
fn decisions(operator: &Operator) -> Vec<Value> {
    operator
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "tool call decided")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_agent_calls_its_read_tool_through_envoy_and_is_refused_the_write_and_destructive_tools()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    let ns = TestNamespace::create(&client, "authz", &[]).await?;
    let namespace = ns.name.as_str();
    kubectl_ok(
        &["apply", "-n", namespace, "-f", "-"],
        Some(&manifests(namespace)),
    )?;
    ready(&client, namespace, "reader", &operator).await?;
    kubectl_ok(
        &["apply", "-n", namespace, "-f", "-"],
        Some(&pod("reader-0", "reader")),
    )?;
    let token = token(
        namespace,
        "reader",
        "reader-0",
        &format!("mandate.dev/{namespace}/docs"),
    )?;
    let token = token.as_str();

    let (server, envoy) = docs_gateway(&operator, namespace).await?;
    let explain = || {
        format!(
            "envoy log:\n{}\nmcp server log:\n{}\noperator decisions:\n{:#?}",
            envoy.process.log(),
            server.process.log(),
            decisions(&operator)
        )
    };

    let read = mcp_call(&envoy.url(), token, Some("read_doc"))?;
    assert!(read.ok, "read_doc refused: {}\n{}", read.output, explain());
    assert!(read.output.contains("read handbook"), "{}", read.output);
    for tool in ["write_doc", "delete_doc"] {
        let refused = mcp_call(&envoy.url(), token, Some(tool))?;
        assert!(
            !refused.ok,
            "{tool} allowed: {}\n{}",
            refused.output,
            explain()
        );
        assert!(
            refused.output.contains("Forbidden") && refused.output.contains("OperationNotDeclared"),
            "{tool}: the client's error names neither the 403 (Forbidden) nor the reason: {}\n{}",
            refused.output,
            explain()
        );
    }

    // One JSON line per decision, with who, what, and what allowed or refused it.
    let lines = decisions(&operator);
    let call = |tool: &str| {
        lines
            .iter()
            .find(|l| l["operation"] == format!("tools/call {tool}"))
            .cloned()
            .with_context(|| format!("no decision line for {tool}:\n{lines:#?}"))
    };
    let allowed = call("read_doc")?;
    assert_eq!(allowed["allowed"], true, "{allowed:#}");
    assert_eq!(allowed["reason"], "Allowed");
    assert_eq!(allowed["agent"], "reader");
    assert_eq!(allowed["namespace"], namespace);
    assert_eq!(allowed["owner"], "Group:docs-team");
    assert_eq!(
        allowed["spiffe_id"],
        format!("spiffe://cluster.local/ns/{namespace}/sa/reader")
    );
    assert_eq!(allowed["tool"], "docs");
    assert_eq!(allowed["action"], "read");
    assert_eq!(allowed["binding"], "reader-tools");
    assert_eq!(allowed["generation"], 1);
    assert_eq!(allowed["protocol"], "grpc");
    assert!(
        allowed["decision_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    for tool in ["write_doc", "delete_doc"] {
        let refused = call(tool)?;
        assert_eq!(refused["allowed"], false, "{refused:#}");
        assert_eq!(refused["reason"], "OperationNotDeclared");
        assert_eq!(refused["agent"], "reader");
        assert!(refused["binding"].is_null(), "{refused:#}");
    }
    // The gateway got the decision id back for its access log (which Envoy flushes every second).
    let id = allowed["decision_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eventually(
        "Envoy's access log to name the decision",
        TIMEOUT,
        || async {
            Ok(envoy
                .process
                .log()
                .contains(&format!("tool=read_doc decision={id}"))
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("Envoy's log:\n{}", envoy.process.log()))?;
    // The same decisions through the AuthZEN API on the same port: one evaluation, then a batch.
    let evaluation = |tool: &str| {
        serde_json::json!({
            "subject": {"type": "agent", "id": "reader", "properties": {"token": token}},
            "action": {"name": "tools/call"},
            "resource": {"type": "mcp_tool", "id": tool,
                         "properties": {"service": format!("{namespace}/docs-mcp")}},
        })
    };
    let (headers, one) = authzen(&operator, "/access/v1/evaluation", &evaluation("read_doc"))?;
    assert_eq!(one["decision"], true, "{one:#}");
    assert!(
        headers.to_ascii_lowercase().contains("x-request-id: e2e-1"),
        "{headers}"
    );
    let (_, batch) = authzen(
        &operator,
        "/access/v1/evaluations",
        &serde_json::json!({"evaluations": [evaluation("read_doc"), evaluation("delete_doc")]}),
    )?;
    assert_eq!(batch["evaluations"][0]["decision"], true, "{batch:#}");
    assert_eq!(batch["evaluations"][1]["decision"], false, "{batch:#}");
    assert_eq!(
        batch["evaluations"][1]["context"]["reason"],
        "OperationNotDeclared"
    );
    let discovery = curl_authz(&operator, &["/.well-known/authzen-configuration"])?;
    assert!(discovery.contains("/access/v1/evaluations"), "{discovery}");

    // And the counters moved.
    let metrics = operator.metrics()?;
    for series in [
        r#"mandate_authz_decisions_total{protocol="grpc",decision="allowed",reason="Allowed"}"#,
        r#"mandate_authz_decisions_total{protocol="grpc",decision="denied",reason="OperationNotDeclared"}"#,
        r#"mandate_authz_decisions_total{protocol="authzen",decision="allowed",reason="Allowed"}"#,
        "mandate_authz_duration_seconds_count",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    Ok(())
}

/// Two agents: `reader` holds `docs` (at docs-mcp, `read_doc`) until `valid_until` and `search`
/// (at search-mcp); `writer` holds only `search`.
fn two_agents(namespace: &str, valid_until: &str) -> String {
    let tool = |name: &str, service: &str, mcp_tool: &str| {
        format!(
            "  - name: {name}\n    actions: [read]\n    destination: {{service: {{name: {service}}}}}\n    mcp: {{tools: [{{name: {mcp_tool}, action: read}}]}}\n"
        )
    };
    let identity = |name: &str, class: &str| {
        format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {{name: {name}}}\nspec:\n  owner: {{kind: Group, name: docs-team}}\n  class: {class}\n  purpose: Works with the team's documents.\n  credentials: {{audiences: [\"mandate.dev/{namespace}/docs\", \"mandate.dev/{namespace}/search\"]}}\n---\n"
        )
    };
    let service = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 8080}}]\n---\n"
        )
    };
    format!(
        "{}{}{}{}apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: reader-tools}}\nspec:\n  agent: reader\n  validUntil: \"{valid_until}\"\n  tools:\n{}{}---\napiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: writer-tools}}\nspec:\n  agent: writer\n  tools:\n{}",
        service("docs-mcp"),
        service("search-mcp"),
        identity("reader", "ReadOnly"),
        identity("writer", "WriteCapable"),
        tool("docs", "docs-mcp", "read_doc"),
        tool("search", "search-mcp", "search"),
        tool("search", "search-mcp", "search"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_envoy_mandate_refuses_foreign_tokens_deleted_pods_expired_tools_and_fails_closed_when_stopped()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let mut operator = Operator::start(OperatorOptions::unique()).await?;
    let ns = TestNamespace::create(&client, "authz-refusals", &[]).await?;
    let namespace = ns.name.as_str();
    let valid_for = 45;
    let valid_until = mandate_e2e::resources::rfc3339_from_now(valid_for)?;
    let expires = std::time::Instant::now() + Duration::from_secs(valid_for as u64);
    kubectl_ok(
        &["apply", "-n", namespace, "-f", "-"],
        Some(&two_agents(namespace, &valid_until)),
    )?;
    for agent in ["reader", "writer"] {
        ready(&client, namespace, agent, &operator).await?;
    }
    for (pod_name, agent) in [
        ("reader-0", "reader"),
        ("reader-1", "reader"),
        ("writer-0", "writer"),
    ] {
        kubectl_ok(
            &["apply", "-n", namespace, "-f", "-"],
            Some(&pod(pod_name, agent)),
        )?;
    }
    let docs = format!("mandate.dev/{namespace}/docs");
    let search = format!("mandate.dev/{namespace}/search");
    let reader_docs = token(namespace, "reader", "reader-0", &docs)?;
    let reader_search = token(namespace, "reader", "reader-0", &search)?;
    let writer_docs = token(namespace, "writer", "writer-0", &docs)?;
    let doomed_pod = token(namespace, "reader", "reader-1", &docs)?;

    let (_server, envoy) = docs_gateway(&operator, namespace).await?;
    let refused = |token: &str, reason: &str| -> anyhow::Result<()> {
        let call = mcp_call(&envoy.url(), token, Some("read_doc"))?;
        anyhow::ensure!(
            !call.ok && call.output.contains(reason),
            "expected a refusal naming {reason}, got: {}\nenvoy log:\n{}",
            call.output,
            envoy.process.log()
        );
        Ok(())
    };

    let allowed = mcp_call(&envoy.url(), &reader_docs, Some("read_doc"))?;
    assert!(allowed.ok, "{}\n{}", allowed.output, envoy.process.log());
    // A token of the right agent for another of its tools.
    refused(&reader_search, "WrongAudience")?;
    // Another agent's token: it holds nothing at this server.
    refused(&writer_docs, "ToolNotHeld")?;
    // The pod the token is bound to is deleted: TokenReview refuses the token.
    kubectl_ok(
        &[
            "delete",
            "pod",
            "reader-1",
            "-n",
            namespace,
            "--grace-period=0",
            "--force",
        ],
        None,
    )?;
    refused(&doomed_pod, "Unauthenticated")?;
    // One second after validUntil, with no reconcile needed in between.
    tokio::time::sleep_until((expires + Duration::from_secs(1)).into()).await;
    refused(&reader_docs, "ToolNotHeld")?;
    let lines = decisions(&operator);
    let expired = lines
        .iter()
        .rev()
        .find(|l| l["reason"] == "ToolNotHeld" && l["agent"] == "reader")
        .with_context(|| format!("no ToolNotHeld line for reader:\n{lines:#?}"))?;
    assert!(
        expired["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Expired")),
        "{expired:#}"
    );
    for reason in ["WrongAudience", "Unauthenticated"] {
        assert!(
            lines.iter().any(|l| l["reason"] == reason),
            "no {reason} line:\n{lines:#?}"
        );
    }

    // mandate stopped: Envoy cannot ask, and refuses (failure_mode_allow: false).
    let before = decisions(&operator).len();
    operator.kill();
    let call = mcp_call(&envoy.url(), &reader_search, Some("read_doc"))?;
    assert!(
        !call.ok,
        "allowed while mandate is stopped: {}",
        call.output
    );
    assert!(call.output.contains("Forbidden"), "{}", call.output);
    assert_eq!(decisions(&operator).len(), before);
    Ok(())
}
