//! `make bench-reconcile` on the local control plane (a benchmark, not a test):
//! 1. the time for 1,000 identities with one binding each to become Ready, against the time a
//!    bare kube client takes to create the same number of ServiceAccounts and NetworkPolicies:
//!    the identities and bindings are created first and the operator is then started, so the
//!    time is the operator's own work (as a second figure, the same while the operator runs and
//!    the objects are being created, which adds the creates themselves);
//! 2. an operator restart with everything in sync: time to steady state, and how many objects
//!    changed resourceVersion;
//! 3. the operator's peak RSS with 10,000 identities and 10,000 bindings synced.
//!
//! Uses the operator binary named by MANDATE_E2E_BINARY (the Makefile passes the release build).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mandate::api::conditions::{READY, is_true};
use mandate::api::{AgentIdentity, ToolBinding};
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::install_crds;
use serde_json::json;

const CONCURRENCY: usize = 16;

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn agent_objects(
    range: std::ops::Range<usize>,
) -> anyhow::Result<(Vec<AgentIdentity>, Vec<ToolBinding>)> {
    let mut identities = Vec::new();
    let mut bindings = Vec::new();
    for i in range {
        let name = format!("agent-{i:05}");
        identities.push(serde_json::from_value(json!({
            "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name},
            "spec": {"owner": {"kind": "Group", "name": "bench"}, "purpose": "benchmark agent"}
        }))?);
        bindings.push(serde_json::from_value(json!({
            "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding", "metadata": {"name": format!("{name}-tools")},
            "spec": {"agent": name, "tools": [{"name": "search", "actions": ["read"],
                "destination": {"external": {"cidrs": [format!("10.{}.{}.0/24", i / 256 % 256, i % 256)], "ports": [443]}}}]}
        }))?);
    }
    Ok((identities, bindings))
}

/// Creates the agents (identity then binding, interleaved as users would apply them).
async fn create_agents(
    client: &Client,
    ns: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let (identities, bindings) = agent_objects(range)?;
    let (ia, ba) = (
        Api::<AgentIdentity>::namespaced(client.clone(), ns),
        Api::<ToolBinding>::namespaced(client.clone(), ns),
    );
    futures::stream::iter(identities.into_iter().zip(bindings))
        .map(|(i, b)| {
            let (ia, ba) = (ia.clone(), ba.clone());
            async move {
                ia.create(&PostParams::default(), &i).await?;
                ba.create(&PostParams::default(), &b).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn ready_count(client: &Client, namespaces: &[String]) -> anyhow::Result<usize> {
    let mut ready = 0;
    for ns in namespaces {
        let list = Api::<AgentIdentity>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?;
        ready += list
            .items
            .iter()
            .filter(|i| {
                i.status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == 1)
            })
            .count();
    }
    Ok(ready)
}

async fn wait_ready(client: &Client, namespaces: &[String], expected: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while ready_count(client, namespaces).await? < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {expected} Ready identities"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// resourceVersions of the managed ServiceAccounts and NetworkPolicies and of the identities.
async fn versions(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=mandate");
    let mut out = BTreeMap::new();
    for sa in Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .list(&managed)
        .await?
        .items
    {
        out.insert(
            format!("ServiceAccount/{}", sa.name_any()),
            sa.resource_version().unwrap_or_default(),
        );
    }
    for np in Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&managed)
        .await?
        .items
    {
        out.insert(
            format!("NetworkPolicy/{}", np.name_any()),
            np.resource_version().unwrap_or_default(),
        );
    }
    for i in Api::<AgentIdentity>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
    {
        out.insert(
            format!("AgentIdentity/{}", i.name_any()),
            i.resource_version().unwrap_or_default(),
        );
    }
    Ok(out)
}

fn reconciles(metrics: &str, kind: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("mandate_reconciles_total") && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmHWM:"), field("VmRSS:")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = mandate_e2e::client().await?;
    install_crds(&client).await?;
    let run = std::process::id();
    let bare_ns = format!("bench-bare-{run}");
    let op_ns = format!("bench-op-{run}");
    namespace(&client, &bare_ns).await?;
    namespace(&client, &op_ns).await?;

    // 1a. A bare client creating the projections directly.
    let sas: Vec<ServiceAccount> = (0..1000)
        .map(|i| serde_json::from_value(json!({"metadata": {"name": format!("agent-{i:05}"),
            "labels": {"app.kubernetes.io/managed-by": "bench"}, "annotations": {"mandate.dev/spiffe-id": "spiffe://x"}},
            "automountServiceAccountToken": false})))
        .collect::<Result<_, _>>()?;
    let nps: Vec<NetworkPolicy> = (0..1000)
        .map(|i| serde_json::from_value(json!({"metadata": {"name": format!("mandate-agent-{i:05}")},
            "spec": {"podSelector": {"matchLabels": {"mandate.dev/agent": format!("agent-{i:05}")}}, "policyTypes": ["Ingress", "Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]}})))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    create_all(
        &Api::<ServiceAccount>::namespaced(client.clone(), &bare_ns),
        sas,
    )
    .await?;
    create_all(
        &Api::<NetworkPolicy>::namespaced(client.clone(), &bare_ns),
        nps,
    )
    .await?;
    let bare = started.elapsed();
    eprintln!("bare client: 1000 ServiceAccounts + 1000 NetworkPolicies in {bare:.2?}");

    // 1b. The operator making 1,000 existing identities Ready, from its start.
    let started = Instant::now();
    create_agents(&client, &op_ns, 0..1000).await?;
    let created = started.elapsed();
    let started = Instant::now();
    let mut operator =
        Operator::start(OperatorOptions::unique().arg("--log-level").arg("warn")).await?;
    wait_ready(&client, std::slice::from_ref(&op_ns), 1000).await?;
    let operator_time = started.elapsed();
    eprintln!(
        "operator: 1000 identities + bindings (created beforehand in {created:.2?}) all Ready {operator_time:.2?} after the operator started"
    );

    // 1c. The same while they are being created, the operator running.
    let live_ns = format!("bench-live-{run}");
    namespace(&client, &live_ns).await?;
    let started = Instant::now();
    create_agents(&client, &live_ns, 1000..2000).await?;
    let live_created = started.elapsed();
    wait_ready(&client, std::slice::from_ref(&live_ns), 1000).await?;
    let live_time = started.elapsed();
    eprintln!(
        "operator running: 1000 identities + bindings created in {live_created:.2?}, all Ready {live_time:.2?} after the first create"
    );

    // 2. Restart in sync.
    let before = versions(&client, &op_ns).await?;
    operator.kill();
    let started = Instant::now();
    let restarted =
        Operator::start(OperatorOptions::unique().arg("--log-level").arg("warn")).await?;
    let ready_after = started.elapsed();
    let steady = loop {
        let metrics = restarted.metrics()?;
        if reconciles(&metrics, "AgentIdentity") >= 1000
            && reconciles(&metrics, "ToolBinding") >= 1000
        {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "restart did not settle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = versions(&client, &op_ns).await?;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "restart in sync: ready in {ready_after:.2?}, every object reconciled after {steady:.2?}; {} of {} objects changed resourceVersion",
        changed.len(),
        before.len()
    );

    // 3. Peak RSS with 10,000 identities and bindings: the 2,000 above and 80 namespaces of 100.
    let mut namespaces = vec![op_ns.clone(), live_ns.clone()];
    for n in 20..100 {
        let ns = format!("bench-op-{run}-{n:02}");
        namespace(&client, &ns).await?;
        create_agents(&client, &ns, n * 100..n * 100 + 100).await?;
        namespaces.push(ns);
    }
    let total = 2000 + 80 * 100;
    wait_ready(&client, &namespaces, total).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (hwm, rss) = peak_rss_kib(restarted.pid())?;
    eprintln!(
        "{total} identities + bindings synced: peak RSS {} MiB, current RSS {} MiB",
        hwm / 1024,
        rss / 1024
    );

    println!(
        "{}",
        json!({
            "bare_client_seconds": bare.as_secs_f64(),
            "operator_seconds": operator_time.as_secs_f64(),
            "ratio": operator_time.as_secs_f64() / bare.as_secs_f64(),
            "created_beforehand_seconds": created.as_secs_f64(),
            "operator_running_create_seconds": live_created.as_secs_f64(),
            "operator_running_ready_seconds": live_time.as_secs_f64(),
            "restart_ready_seconds": ready_after.as_secs_f64(),
            "restart_steady_seconds": steady.as_secs_f64(),
            "restart_changed_objects": changed.len(),
            "restart_changed": changed,
            "identities_for_rss": total,
            "peak_rss_mib": hwm as f64 / 1024.0,
        })
    );

    drop(restarted);
    for ns in std::iter::once(bare_ns).chain(namespaces) {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::background())
            .await;
    }
    Ok(())
}
