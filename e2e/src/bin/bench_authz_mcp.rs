//! `make bench-authz`, part 3, on the local control plane (a benchmark, not a test): MCP
//! `tools/call` latency through a real Envoy with mandate as its authorizer, against the same
//! Envoy with an authorizer that allows everything without looking, in the same run. The
//! operator (`mandate run`, the binary MANDATE_E2E_BINARY names) verifies a real token (a
//! TokenRequest bound to a stored pod) through TokenReview and caches it, as in production; the
//! Go MCP client calls `read_doc` through both Envoys in alternating blocks (e2e/mcp `bench`).
//! Prints one JSON object: each configuration's latencies in milliseconds.
//!
//! Usage: bench_authz_mcp <allow-all-addr> <allow-all-ca.pem> <blocks> <calls-per-block> <sessions>

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use kube::Api;
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};
use mandate_e2e::gateway::{Envoy, EnvoySettings, McpServer, Variant, mcp_binary, mcp_call};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::install_crds;
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok};

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
  purpose: Reads the team handbook (benchmark).
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
    mcp: {{tools: [{{name: read_doc, action: read}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: reader-0
  labels: {{mandate.dev/agent: reader}}
spec:
  serviceAccountName: reader
  automountServiceAccountToken: false
  containers: [{{name: agent, image: registry.example/agent:1}}]
"#
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, allow_all, allow_all_ca, blocks, per_block, sessions] = args.as_slice() else {
        bail!(
            "usage: bench_authz_mcp <allow-all-addr> <allow-all-ca.pem> <blocks> <calls-per-block> <sessions>"
        );
    };
    let allow_all: SocketAddr = allow_all.parse()?;
    let allow_all_ca = std::fs::read(allow_all_ca)?;

    let client = client().await?;
    install_crds(&client).await?;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    let ns = TestNamespace::create(&client, "bench-authz", &[]).await?;
    let namespace = ns.name.as_str();
    let (identity, pod) = manifests(namespace)
        .rsplit_once("---\n")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .context("two parts")?;
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&identity))?;
    let identities = Api::<AgentIdentity>::namespaced(client.clone(), namespace);
    eventually(
        "reader to become Ready",
        Duration::from_secs(60),
        || async {
            let reader = identities.get("reader").await?;
            Ok(reader
                .status
                .is_some_and(|s| is_true(&s.conditions, READY))
                .then_some(()))
        },
    )
    .await?;
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&pod))?;
    let token = kubectl_ok(
        &[
            "create",
            "token",
            "reader",
            "-n",
            namespace,
            "--audience",
            &format!("mandate.dev/{namespace}/docs"),
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "reader-0",
            "--duration",
            "1h",
        ],
        None,
    )?
    .trim()
    .to_owned();

    let server = McpServer::start().await?;
    let service = format!("{namespace}/docs-mcp");
    let gateway = |authorizer, authorizer_ca| {
        let service = service.clone();
        async move {
            Envoy::start(&EnvoySettings {
                upstream: server.addr,
                authorizer,
                authorizer_ca,
                service: &service,
                variant: Variant::Grpc,
            })
            .await
        }
    };
    let mandate = gateway(operator.authz, &operator.cert.ca_pem).await?;
    let baseline = gateway(allow_all, &allow_all_ca).await?;
    // Mandate decides (a write is refused through it, allowed through the baseline), and both
    // serve the read.
    for (envoy, write_allowed) in [(&mandate, false), (&baseline, true)] {
        let read = mcp_call(&envoy.url(), &token, Some("read_doc"))?;
        let write = mcp_call(&envoy.url(), &token, Some("write_doc"))?;
        if !read.ok || write.ok != write_allowed {
            bail!(
                "the gateways do not behave as configured: read {} / write {}\n{}",
                read.output,
                write.output,
                envoy.process.log()
            );
        }
    }

    let out = Command::new(mcp_binary()?)
        .args([
            "bench",
            "-urls",
            &format!("{},{}", mandate.url(), baseline.url()),
        ])
        .args([
            "-labels",
            "mandate,allow-all",
            "-token",
            &token,
            "-tool",
            "read_doc",
        ])
        .args([
            "-blocks",
            blocks,
            "-per-block",
            per_block,
            "-concurrency",
            sessions,
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "mcp-tools bench failed: {}\nmandate's Envoy:\n{}",
            String::from_utf8_lossy(&out.stderr),
            mandate.process.log()
        );
    }
    let metrics = operator.metrics()?;
    let allowed = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"mandate_authz_decisions_total{protocol="grpc",decision="allowed",reason="Allowed"}"#,
            )
        })
        .context("mandate counted no allowed call")?;
    eprintln!("operator: {allowed}");
    print!("{}", String::from_utf8(out.stdout)?);
    Ok(())
}
