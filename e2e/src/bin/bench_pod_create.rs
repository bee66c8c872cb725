//! Pod creation latency through the real API server, for `make bench-admission`: creates
//! `pods` pods in `namespace` from `clients` concurrent tasks and prints one JSON line with
//! the creates per second, the p50/p99 latency of a create, and every latency (so that rounds
//! can be pooled: a p99 of 2,000 samples rests on its 20 slowest).
//!
//! Usage: bench_pod_create <namespace> <clients> <pods> [agent]
//! With an agent, pods carry `mandate.dev/agent=<agent>` and run as its ServiceAccount.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (namespace, clients, pods, agent) = match args.as_slice() {
        [_, ns, c, p] => (ns.clone(), c.parse()?, p.parse()?, None),
        [_, ns, c, p, a] => (ns.clone(), c.parse()?, p.parse()?, Some(a.clone())),
        _ => anyhow::bail!("usage: bench_pod_create <namespace> <clients> <pods> [agent]"),
    };
    let client = mandate_e2e::client().await?;
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let run = std::process::id();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..pods)
        .map(|i: usize| {
            let (api, agent) = (api.clone(), agent.clone());
            async move {
                let mut pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("bench-{run}-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]}
                });
                if let Some(agent) = &agent {
                    pod["metadata"]["labels"]["mandate.dev/agent"] = json!(agent);
                    pod["spec"]["serviceAccountName"] = json!(agent);
                }
                let pod: Pod = serde_json::from_value(pod)?;
                let t = Instant::now();
                api.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating pod {i}"))?;
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(clients)
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    println!(
        "{}",
        json!({
            "namespace": namespace, "clients": clients, "pods": pods,
            "creates_per_second": pods as f64 / elapsed.as_secs_f64(),
            "p50_ms": at(0.50).as_secs_f64() * 1e3,
            "p99_ms": at(0.99).as_secs_f64() * 1e3,
            "latencies_ms": latencies.iter().map(|l| (l.as_secs_f64() * 1e5).round() / 1e2).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
