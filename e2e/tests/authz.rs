//! The decision service end to end, through a real gateway: the operator runs as a local process
//! against the real control plane; Envoy (the official build) sits in front of an MCP server
//! built with the Go MCP SDK, with its MCP filter and ext_authz asking the operator over gRPC and
//! TLS (or over its HTTP variant); an MCP client calls through Envoy with a real token (a
//! TokenRequest for the agent's ServiceAccount bound to its stored, Pending pod, verified by
//! TokenReview). Every decision is checked in the client's answer, in the operator's JSON
//! decision lines and in its metrics.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context;
use kube::Api;
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};
use mandate_e2e::ext_authz::{self, McpCall};
use mandate_e2e::gateway::{
    ApiServerProxy, Envoy, EnvoySettings, McpServer, Variant, api_server_addr, mcp_call,
    mcp_call_for,
};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::install_crds;
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A ReadOnly agent `reader` holding tool `docs` at Service `docs-mcp`, which names only the
/// MCP tool `read_doc` (read) and GET on the server's HTTP API `/v1/docs/*`; its token audience is allowed on the identity (what a cluster
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
    http:
    - {{methods: [GET], paths: ["/v1/docs/*"]}}
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

/// The MCP test server as Service `docs-mcp` of `namespace`, behind Envoy asking `operator`
/// over gRPC.
async fn docs_gateway(operator: &Operator, namespace: &str) -> anyhow::Result<(McpServer, Envoy)> {
    docs_gateway_asking(operator, namespace, Variant::Grpc).await
}

async fn docs_gateway_asking(
    operator: &Operator,
    namespace: &str,
    variant: Variant,
) -> anyhow::Result<(McpServer, Envoy)> {
    let server = McpServer::start().await?;
    let envoy = Envoy::start(&EnvoySettings {
        upstream: server.addr,
        authorizer: operator.authz,
        authorizer_ca: &operator.cert.ca_pem,
        service: &format!("{namespace}/docs-mcp"),
        variant,
    })
    .await?;
    Ok((server, envoy))
}

/// What came back from a plain HTTP request.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// `curl` through Envoy (plain HTTP) or to the decision service (TLS, its CA): `method` on
/// `url` with `headers` and `body`; never fails on an HTTP status.
fn curl(
    operator: &Operator,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Reply> {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sS", "-D", "-", "-X", method, "--cacert"])
        .arg(operator.cert.dir.join("ca.crt"));
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let out = command.arg(url).output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head}"))?;
    Ok(Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

/// A JSON-RPC `tools/call` of `tool` whose `Mcp-Name` header names `header_tool`, POSTed as an
/// MCP client would: the header lies when the two differ.
fn smuggled_call(
    operator: &Operator,
    envoy: &Envoy,
    token: &str,
    header_tool: &str,
    tool: &str,
) -> anyhow::Result<Reply> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": tool, "arguments": {"name": "handbook"}}});
    curl(
        operator,
        "POST",
        &envoy.url(),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-method", "tools/call"),
            ("mcp-name", header_tool),
        ],
        Some(&body.to_string()),
    )
}

/// Every field the issue asks of a decision line is there: who, what, and what allowed it (or
/// the reason code that refused it).
fn assert_complete(line: &Value) {
    let text = |key: &str| line[key].as_str().is_some_and(|v| !v.is_empty());
    for key in [
        "decision_id",
        "time",
        "protocol",
        "reason",
        "operation",
        "detail",
    ] {
        assert!(text(key), "{key} missing: {line:#}");
    }
    assert!(
        k8s_openapi::jiff::Timestamp::from_str(line["time"].as_str().unwrap_or_default()).is_ok(),
        "{line:#}"
    );
    assert!(line["chain"].is_string(), "{line:#}");
    assert!(line["gateway_verified"].is_boolean(), "{line:#}");
    if line["allowed"] == true {
        for key in ["agent", "owner", "spiffe_id", "tool", "binding"] {
            assert!(text(key), "{key} missing from an allowed call: {line:#}");
        }
        // MCP session methods (initialize, tools/list, notifications) perform no action.
        let operation = line["operation"].as_str().unwrap_or_default();
        let session = ["initialize", "ping", "tools/list", "server/discover"].contains(&operation)
            || operation.starts_with("notifications/");
        assert!(session || text("action"), "action missing: {line:#}");
        assert!(line["generation"].as_i64().is_some(), "{line:#}");
        assert_eq!(line["reason"], "Allowed");
    } else {
        assert_eq!(line["allowed"], false, "{line:#}");
        assert_ne!(line["reason"], "Allowed", "{line:#}");
        assert!(line["binding"].is_null(), "{line:#}");
    }
}

/// The last decision line for `operation` by `agent` (any agent when `None`).
fn last_line(operator: &Operator, agent: Option<&str>, operation: &str) -> anyhow::Result<Value> {
    let lines = decisions(operator);
    lines
        .iter()
        .rev()
        .find(|l| l["operation"] == operation && agent.is_none_or(|a| l["agent"] == a))
        .cloned()
        .with_context(|| format!("no decision line for {agent:?} {operation}:\n{lines:#?}"))
}

/// Asserts `metrics` holds each series (with a count of at least 1).
fn assert_counted(operator: &Operator, series: &[String]) -> anyhow::Result<()> {
    let metrics = operator.metrics()?;
    for one in series {
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix(one.as_str()))
            .and_then(|rest| rest.trim().parse::<f64>().ok());
        assert!(
            counted.is_some_and(|n| n >= 1.0),
            "{one} missing:\n{metrics}"
        );
    }
    Ok(())
}

fn counter(protocol: &str, reason: &str) -> String {
    let decision = if reason == "Allowed" {
        "allowed"
    } else {
        "denied"
    };
    format!(
        r#"mandate_authz_decisions_total{{protocol="{protocol}",decision="{decision}",reason="{reason}"}}"#
    )
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

    // tools/list is a session method: any holder of an MCP tool of the server may list.
    let listed = mcp_call(&envoy.url(), token, None)?;
    assert!(
        listed.ok,
        "tools/list refused: {}\n{}",
        listed.output,
        explain()
    );
    assert!(listed.output.contains("read_doc"), "{}", listed.output);
    // The server's plain HTTP API follows the tool's `http` operations: GET only.
    let bearer = format!("Bearer {token}");
    let docs_url = format!("http://{}/v1/docs/handbook", envoy.addr);
    let get = curl(
        &operator,
        "GET",
        &docs_url,
        &[("authorization", &bearer)],
        None,
    )?;
    assert_eq!(
        get.status,
        200,
        "{}{}\n{}",
        get.headers,
        get.body,
        explain()
    );
    assert_eq!(get.body.trim(), "GET handbook");
    let delete = curl(
        &operator,
        "DELETE",
        &docs_url,
        &[("authorization", &bearer)],
        None,
    )?;
    assert_eq!(delete.status, 403, "{}{}", delete.headers, delete.body);
    assert!(
        delete
            .headers
            .contains("x-mandate-reason: operationnotdeclared"),
        "{}",
        delete.headers
    );
    // An Mcp-Name header naming the read tool over a body calling the destructive one: Envoy's
    // MCP filter read the body, and mandate refuses the disagreement.
    let smuggled = smuggled_call(&operator, &envoy, token, "read_doc", "delete_doc")?;
    assert_eq!(
        smuggled.status, 403,
        "{}{}",
        smuggled.headers, smuggled.body
    );
    assert!(
        smuggled.body.contains("UnreadableCall") && smuggled.body.contains("\"id\":42"),
        "the refusal answers the JSON-RPC request with the reason: {}",
        smuggled.body
    );

    // One JSON line per decision, with who, what, and what allowed or refused it.
    let lines = decisions(&operator);
    for line in &lines {
        assert_complete(line);
    }
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
    // Anyone who reaches the port may claim the agent's SPIFFE ID: without a client CA
    // (--authz-client-ca) no gateway is verified, so the claim names nobody.
    let (_, forged) = authzen(
        &operator,
        "/access/v1/evaluation",
        &serde_json::json!({
            "subject": {"type": "agent",
                        "id": format!("spiffe://cluster.local/ns/{namespace}/sa/reader")},
            "action": {"name": "tools/call"},
            "resource": {"type": "mcp_tool", "id": "read_doc",
                         "properties": {"service": format!("{namespace}/docs-mcp")}},
        }),
    )?;
    assert_eq!(forged["decision"], false, "{forged:#}");
    assert_eq!(forged["context"]["reason"], "Unauthenticated", "{forged:#}");
    assert!(
        forged["context"]["reason_admin"]["en"]
            .as_str()
            .is_some_and(|m| m.contains("--authz-client-ca")),
        "{forged:#}"
    );
    // The same claim as Envoy makes it, source.principal in a Check sent straight to the port.
    let service = format!("{namespace}/docs-mcp");
    let spiffe = format!("spiffe://cluster.local/ns/{namespace}/sa/reader");
    let forged_check = McpCall {
        service: &service,
        tool: "read_doc",
        principal: Some(&spiffe),
        bearer: None,
    }
    .frame();
    let mut grpc = ext_authz::connect(operator.authz, &operator.cert.ca_pem, None).await?;
    let (answer, _) = ext_authz::check(&mut grpc, &forged_check, operator.authz).await?;
    assert_eq!(
        ext_authz::refusal_reason(&answer).as_deref(),
        Some("Unauthenticated"),
        "{answer:?}"
    );
    let discovery = curl_authz(&operator, &["/.well-known/authzen-configuration"])?;
    assert!(discovery.contains("/access/v1/evaluations"), "{discovery}");

    for (operation, reason) in [
        ("tools/list", "Allowed"),
        ("GET /v1/docs/handbook", "Allowed"),
        ("DELETE /v1/docs/handbook", "OperationNotDeclared"),
        ("unreadable call", "UnreadableCall"),
    ] {
        let line = last_line(&operator, Some("reader"), operation)?;
        assert_eq!(line["reason"], reason, "{line:#}");
    }
    let get = last_line(&operator, Some("reader"), "GET /v1/docs/handbook")?;
    assert_eq!(get["action"], "read", "{get:#}");
    let smuggled = last_line(&operator, Some("reader"), "unreadable call")?;
    assert!(
        smuggled["detail"]
            .as_str()
            .is_some_and(|d| d.contains("read_doc") && d.contains("delete_doc")),
        "{smuggled:#}"
    );

    // And the counters moved.
    assert_counted(
        &operator,
        &[
            counter("grpc", "Allowed"),
            counter("grpc", "OperationNotDeclared"),
            counter("grpc", "UnreadableCall"),
            counter("authzen", "Allowed"),
            counter("authzen", "OperationNotDeclared"),
            "mandate_authz_duration_seconds_count".into(),
        ],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_http_variant_judges_the_forwarded_body_and_refuses_a_header_that_disagrees_with_it()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    let ns = TestNamespace::create(&client, "authz-http", &[]).await?;
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
    // No MCP filter: Envoy forwards the body and the MCP headers to mandate's HTTP endpoint.
    let (server, envoy) = docs_gateway_asking(&operator, namespace, Variant::Http).await?;
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
    let write = mcp_call(&envoy.url(), token, Some("write_doc"))?;
    assert!(
        !write.ok
            && write.output.contains("Forbidden")
            && write.output.contains("OperationNotDeclared"),
        "{}\n{}",
        write.output,
        explain()
    );
    let smuggled = smuggled_call(&operator, &envoy, token, "read_doc", "delete_doc")?;
    assert_eq!(
        smuggled.status, 403,
        "{}{}",
        smuggled.headers, smuggled.body
    );
    assert!(
        smuggled
            .headers
            .contains("x-mandate-reason: unreadablecall"),
        "{}",
        smuggled.headers
    );
    // Header and body agree: allowed (the server then runs what was judged).
    let honest = smuggled_call(&operator, &envoy, token, "read_doc", "read_doc")?;
    assert_eq!(
        honest.status,
        200,
        "{}{}\n{}",
        honest.headers,
        honest.body,
        explain()
    );

    let allowed = last_line(&operator, Some("reader"), "tools/call read_doc")?;
    assert_complete(&allowed);
    assert_eq!(allowed["protocol"], "http", "{allowed:#}");
    assert_eq!(allowed["binding"], "reader-tools");
    let smuggled = last_line(&operator, Some("reader"), "unreadable call")?;
    assert_complete(&smuggled);
    assert_eq!(smuggled["reason"], "UnreadableCall");
    // The decision id reached Envoy's access log through the allowed response headers.
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
                .contains(&format!("decision={id}"))
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("Envoy's log:\n{}", envoy.process.log()))?;

    // A forward-auth proxy asks the same port with X-Forwarded-* headers.
    let forward_auth = format!("https://{}/forward-auth", operator.authz);
    let bearer = format!("Bearer {token}");
    let host = format!("docs-mcp.{namespace}.svc.cluster.local");
    let ask = |method: &str| {
        curl(
            &operator,
            "GET",
            &forward_auth,
            &[
                ("authorization", &bearer),
                ("x-forwarded-method", method),
                ("x-forwarded-uri", "/v1/docs/handbook"),
                ("x-forwarded-host", &host),
            ],
            None,
        )
    };
    assert_eq!(ask("GET")?.status, 200);
    let delete = ask("DELETE")?;
    assert_eq!(delete.status, 403);
    assert!(
        delete.body.contains("OperationNotDeclared"),
        "{}",
        delete.body
    );

    assert_counted(
        &operator,
        &[
            counter("http", "Allowed"),
            counter("http", "OperationNotDeclared"),
            counter("http", "UnreadableCall"),
        ],
    )?;
    Ok(())
}

/// Three agents: `reader` holds `docs` (at docs-mcp, `read_doc`) until `valid_until` and `search`
/// (at search-mcp); `writer` holds only `search`; `admin` holds the High-risk `docs-admin` (at
/// docs-mcp, `write_doc`), approved by carol, until `valid_until` as well.
fn two_agents(namespace: &str, valid_until: &str) -> String {
    let tool = |name: &str, service: &str, mcp_tool: &str| {
        format!(
            "  - name: {name}\n    actions: [read]\n    destination: {{service: {{name: {service}}}}}\n    mcp: {{tools: [{{name: {mcp_tool}, action: read}}]}}\n"
        )
    };
    let identity = |name: &str, class: &str| {
        format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {{name: {name}}}\nspec:\n  owner: {{kind: Group, name: docs-team}}\n  class: {class}\n  purpose: Works with the team's documents.\n  credentials: {{audiences: [\"mandate.dev/{namespace}/docs\", \"mandate.dev/{namespace}/search\", \"mandate.dev/{namespace}/docs-admin\"]}}\n---\n"
        )
    };
    let service = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 8080}}]\n---\n"
        )
    };
    let admin = format!(
        "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: admin-tools}}\nspec:\n  agent: admin\n  validUntil: \"{valid_until}\"\n  approval: {{approvedBy: carol, forOwner: {{kind: Group, name: docs-team}}, reason: CHG-7 handbook rewrite}}\n  tools:\n  - name: docs-admin\n    actions: [write]\n    risk: High\n    destination: {{service: {{name: docs-mcp}}}}\n    mcp: {{tools: [{{name: write_doc, action: write}}]}}\n"
    );
    format!(
        "{}{}{}{}{}apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: reader-tools}}\nspec:\n  agent: reader\n  validUntil: \"{valid_until}\"\n  tools:\n{}{}---\napiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: writer-tools}}\nspec:\n  agent: writer\n  tools:\n{}---\n{}",
        service("docs-mcp"),
        service("search-mcp"),
        identity("reader", "ReadOnly"),
        identity("writer", "WriteCapable"),
        identity("admin", "WriteCapable"),
        tool("docs", "docs-mcp", "read_doc"),
        tool("search", "search-mcp", "search"),
        tool("search", "search-mcp", "search"),
        admin,
    )
}

/// Holds the Lease `name` for someone else for an hour, so an operator electing on it never
/// leads (and never reconciles).
async fn lease_held_elsewhere(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(mandate_e2e::operator::OPERATOR_NAMESPACE.to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("elsewhere".into()),
            lease_duration_seconds: Some(3600),
            acquire_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    kubectl_ok(
        &[
            "create",
            "namespace",
            mandate_e2e::operator::OPERATOR_NAMESPACE,
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    )
    .and_then(|yaml| kubectl_ok(&["apply", "-f", "-"], Some(&yaml)))?;
    Api::<Lease>::namespaced(client.clone(), mandate_e2e::operator::OPERATOR_NAMESPACE)
        .create(&kube::api::PostParams::default(), &lease)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_envoy_mandate_refuses_foreign_tokens_deleted_pods_expired_tools_and_fails_closed_when_stopped()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    // The leader reconciles (projects ServiceAccounts, so pods can be stored); a second replica
    // that never leads decides every call below: nothing it decides waits for a reconcile.
    let leader = Operator::start(OperatorOptions::unique()).await?;
    let follower_options = OperatorOptions::unique();
    lease_held_elsewhere(&client, &follower_options.lease_name).await?;
    let mut operator = Operator::start(follower_options).await?;
    let ns = TestNamespace::create(&client, "authz-refusals", &[]).await?;
    let namespace = ns.name.as_str();
    let valid_for = 45;
    let valid_until = mandate_e2e::resources::rfc3339_from_now(valid_for)?;
    let expires = std::time::Instant::now() + Duration::from_secs(valid_for as u64);
    kubectl_ok(
        &["apply", "-n", namespace, "-f", "-"],
        Some(&two_agents(namespace, &valid_until)),
    )?;
    for agent in ["reader", "writer", "admin"] {
        ready(&client, namespace, agent, &leader).await?;
    }
    for (pod_name, agent) in [
        ("reader-0", "reader"),
        ("reader-1", "reader"),
        ("writer-0", "writer"),
        ("admin-0", "admin"),
    ] {
        kubectl_ok(
            &["apply", "-n", namespace, "-f", "-"],
            Some(&pod(pod_name, agent)),
        )?;
    }
    let docs = format!("mandate.dev/{namespace}/docs");
    let search = format!("mandate.dev/{namespace}/search");
    let admin = format!("mandate.dev/{namespace}/docs-admin");
    let reader_docs = token(namespace, "reader", "reader-0", &docs)?;
    let reader_search = token(namespace, "reader", "reader-0", &search)?;
    let writer_docs = token(namespace, "writer", "writer-0", &docs)?;
    let admin_tools = token(namespace, "admin", "admin-0", &admin)?;
    let doomed_pod = token(namespace, "reader", "reader-1", &docs)?;

    let (_server, envoy) = docs_gateway(&operator, namespace).await?;
    let call = |token: &str, tool: &str| mcp_call(&envoy.url(), token, Some(tool));
    let refused = |token: &str, tool: &str, reason: &str| -> anyhow::Result<()> {
        let call = call(token, tool)?;
        anyhow::ensure!(
            !call.ok && call.output.contains(reason),
            "expected a refusal naming {reason}, got: {}\nenvoy log:\n{}",
            call.output,
            envoy.process.log()
        );
        Ok(())
    };
    let allowed = |token: &str, tool: &str| -> anyhow::Result<()> {
        let call = call(token, tool)?;
        anyhow::ensure!(
            call.ok,
            "{tool} refused: {}\nenvoy log:\n{}\noperator decisions:\n{:#?}",
            call.output,
            envoy.process.log(),
            decisions(&operator)
        );
        Ok(())
    };

    allowed(&reader_docs, "read_doc")?;
    // A token of the right agent for another of its tools.
    refused(&reader_search, "read_doc", "WrongAudience")?;
    // Another agent's token: it holds nothing at this server for that audience.
    refused(&writer_docs, "read_doc", "ToolNotHeld")?;
    // A High-risk tool, approved: allowed, and the line names the binding that allowed it.
    allowed(&admin_tools, "write_doc")?;
    let high = last_line(&operator, Some("admin"), "tools/call write_doc")?;
    assert_complete(&high);
    assert_eq!(high["binding"], "admin-tools", "{high:#}");
    assert_eq!(high["generation"], 1, "{high:#}");
    assert_eq!(high["tool"], "docs-admin");
    assert_eq!(high["action"], "write");
    // Its approval cannot be taken away while the tool is High risk: the API server refuses.
    let removal = mandate_e2e::kubectl_output(&[
        "patch",
        "toolbinding",
        "admin-tools",
        "-n",
        namespace,
        "--type",
        "json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/approval"}]"#,
    ])?;
    assert!(
        !removal.status.success()
            && String::from_utf8_lossy(&removal.stderr).contains("approval is required"),
        "{}",
        String::from_utf8_lossy(&removal.stderr)
    );

    // A token whose pod is deleted, after it was verified and cached: refused at once. The pod
    // watch drops it from the cache, and the pod is gone when mandate checks (TokenReview
    // itself went on vouching for such a token for seconds: the API server caches its answers).
    allowed(&doomed_pod, "read_doc")?;
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
    refused(&doomed_pod, "read_doc", "Unauthenticated")?;
    let gone = decisions(&operator)
        .into_iter()
        .rev()
        .find(|l| l["reason"] == "Unauthenticated")
        .context("no Unauthenticated line")?;
    assert_complete(&gone);
    assert!(
        gone["detail"].as_str().is_some_and(|d| d
            .contains("reader-1 the token is bound to no longer exists")
            || d.contains("TokenReview refused")),
        "{gone:#}"
    );

    // One second after validUntil, with no reconcile by this replica in between: the expired
    // read tool and the High-risk tool (its approval was for that long) are refused.
    tokio::time::sleep_until((expires + Duration::from_secs(1)).into()).await;
    refused(&reader_docs, "read_doc", "ToolNotHeld")?;
    refused(&admin_tools, "write_doc", "ToolNotHeld")?;
    for agent in ["reader", "admin"] {
        let lines = decisions(&operator);
        let expired = lines
            .iter()
            .rev()
            .find(|l| l["reason"] == "ToolNotHeld" && l["agent"] == agent)
            .with_context(|| format!("no ToolNotHeld line for {agent}:\n{lines:#?}"))?;
        assert_complete(expired);
        assert!(
            expired["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Expired")),
            "{expired:#}"
        );
    }
    assert!(
        !operator.log().contains(r#""leading":true"#),
        "the deciding replica led (and may have reconciled):\n{}",
        operator.log()
    );
    let lines = decisions(&operator);
    for line in &lines {
        assert_complete(line);
    }
    for reason in ["WrongAudience", "Unauthenticated", "ToolNotHeld"] {
        assert!(
            lines.iter().any(|l| l["reason"] == reason),
            "no {reason} line:\n{lines:#?}"
        );
    }
    assert_counted(
        &operator,
        &[
            counter("grpc", "Allowed"),
            counter("grpc", "WrongAudience"),
            counter("grpc", "ToolNotHeld"),
            counter("grpc", "Unauthenticated"),
        ],
    )?;

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
    drop(leader);
    Ok(())
}

/// Three agents holding `docs` (read_doc at docs-mcp): `lead` may hand it to `reader` (a
/// DelegationPolicy, depth 1); `outsider` has no policy with anyone.
fn delegation(namespace: &str) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: docs-mcp}\nspec:\n  selector: {app: docs-mcp}\n  ports: [{name: http, port: 8080}]\n---\n",
    );
    for agent in ["lead", "reader", "outsider"] {
        out.push_str(&format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {{name: {agent}}}\nspec:\n  owner: {{kind: Group, name: docs-team}}\n  purpose: Answers questions from the handbook.\n  credentials: {{audiences: [\"mandate.dev/{namespace}/docs\", \"mandate.dev/{namespace}/other\"]}}\n---\napiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: {agent}-tools}}\nspec:\n  agent: {agent}\n  tools:\n  - name: docs\n    actions: [read]\n    destination: {{service: {{name: docs-mcp}}}}\n    mcp: {{tools: [{{name: read_doc, action: read}}]}}\n---\n"
        ));
    }
    out.push_str(
        "apiVersion: mandate.dev/v1alpha1\nkind: DelegationPolicy\nmetadata: {name: lead-to-reader}\nspec:\n  delegator: lead\n  delegates: [{agent: reader, tools: [docs]}]\n  maxDepth: 1\n",
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_work_through_envoy_is_allowed_only_along_a_delegation_policy_and_logged_with_its_chain()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    let ns = TestNamespace::create(&client, "authz-delegation", &[]).await?;
    let namespace = ns.name.as_str();
    kubectl_ok(
        &["apply", "-n", namespace, "-f", "-"],
        Some(&delegation(namespace)),
    )?;
    let docs = format!("mandate.dev/{namespace}/docs");
    let mut tokens = std::collections::HashMap::new();
    for agent in ["lead", "reader", "outsider"] {
        ready(&client, namespace, agent, &operator).await?;
        let pod_name = format!("{agent}-0");
        kubectl_ok(
            &["apply", "-n", namespace, "-f", "-"],
            Some(&pod(&pod_name, agent)),
        )?;
        tokens.insert(agent, token(namespace, agent, &pod_name, &docs)?);
    }
    let lead_other = token(
        namespace,
        "lead",
        "lead-0",
        &format!("mandate.dev/{namespace}/other"),
    )?;
    let (_server, envoy) = docs_gateway(&operator, namespace).await?;
    let works_for = |agent: &str, delegator: &str| {
        mcp_call_for(
            &envoy.url(),
            &tokens[agent],
            Some(delegator),
            Some("read_doc"),
        )
    };

    // reader works for lead: the policy covers docs at depth 1.
    let inside = works_for("reader", &tokens["lead"])?;
    assert!(
        inside.ok,
        "{}\nenvoy log:\n{}\ndecisions:\n{:#?}",
        inside.output,
        envoy.process.log(),
        decisions(&operator)
    );
    // reader works for outsider, and outsider for lead: no policy says so.
    for (agent, delegator) in [("reader", "outsider"), ("outsider", "lead")] {
        let outside = works_for(agent, &tokens[delegator])?;
        assert!(
            !outside.ok && outside.output.contains("DelegationNotAllowed"),
            "{agent} working for {delegator}: {}",
            outside.output
        );
    }
    // lead's token for another audience proves no consent to this tool.
    let foreign = works_for("reader", &lead_other)?;
    assert!(
        !foreign.ok && foreign.output.contains("DelegationNotAllowed"),
        "{}",
        foreign.output
    );

    // A refused delegation stops the MCP client at its first request (initialize): the chain
    // is judged for every request made on a delegator's behalf.
    let lines = decisions(&operator);
    for line in &lines {
        assert_complete(line);
    }
    let chain = |chain: &str, reason: &str| {
        lines
            .iter()
            .find(|l| l["chain"] == chain && l["reason"] == reason)
            .cloned()
            .with_context(|| format!("no {reason} line with chain {chain}:\n{lines:#?}"))
    };
    let inside = lines
        .iter()
        .find(|l| l["chain"] == "lead -> reader" && l["operation"] == "tools/call read_doc")
        .cloned()
        .with_context(|| format!("no line for reader's delegated read_doc:\n{lines:#?}"))?;
    assert_eq!(inside["reason"], "Allowed", "{inside:#}");
    assert_eq!(inside["agent"], "reader");
    assert_eq!(inside["binding"], "reader-tools");
    chain("outsider -> reader", "DelegationNotAllowed")?;
    chain("lead -> outsider", "DelegationNotAllowed")?;
    assert_counted(
        &operator,
        &[
            counter("grpc", "Allowed"),
            counter("grpc", "DelegationNotAllowed"),
        ],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_tokenreview_cannot_be_asked_every_token_is_refused() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    // This operator reaches the API server through a proxy the test cuts.
    let proxy = ApiServerProxy::start(api_server_addr()?).await?;
    let mut options = OperatorOptions::unique();
    options.kubeconfig = Some(proxy.kubeconfig()?);
    let operator = Operator::start(options).await?;
    let ns = TestNamespace::create(&client, "authz-unreachable", &[]).await?;
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
    let audience = format!("mandate.dev/{namespace}/docs");
    let used = token(namespace, "reader", "reader-0", &audience)?;
    let fresh = token(namespace, "reader", "reader-0", &audience)?;
    let (_server, envoy) = docs_gateway(&operator, namespace).await?;
    let before = mcp_call(&envoy.url(), &used, Some("read_doc"))?;
    assert!(before.ok, "{}\n{}", before.output, envoy.process.log());

    proxy.cut();
    // A token never verified: TokenReview cannot be asked, so it is refused.
    let refused = mcp_call(&envoy.url(), &fresh, Some("read_doc"))?;
    assert!(
        !refused.ok && refused.output.contains("Unauthenticated"),
        "{}",
        refused.output
    );
    let line = decisions(&operator)
        .into_iter()
        .rev()
        .find(|l| l["reason"] == "Unauthenticated")
        .context("no Unauthenticated line")?;
    assert_complete(&line);
    assert!(
        line["detail"]
            .as_str()
            .is_some_and(|d| d.contains("TokenReview failed")),
        "{line:#}"
    );
    // The token verified before the cut: its pod's deletion could go unseen now, so the cache
    // no longer vouches for it (well before its 10 seconds are up).
    eventually(
        "the cached token to be refused",
        Duration::from_secs(5),
        || async {
            let call = mcp_call(&envoy.url(), &used, Some("read_doc"))?;
            Ok((!call.ok && call.output.contains("Unauthenticated")).then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    assert_counted(
        &operator,
        &[
            counter("grpc", "Allowed"),
            counter("grpc", "Unauthenticated"),
        ],
    )?;
    Ok(())
}
