//! Pod creation latency through the real API server, for `make bench-admission`.
//!
//! Usage: bench_pod_create <clients> <rounds> <pods-per-round> <agent> <namespace>...
//!
//! Each namespace is one admission configuration (none, a ValidatingAdmissionPolicy, a
//! webhook). In each round every namespace gets `pods-per-round` creates, in blocks of 250
//! that take turns (in an order rotated from round to round), from `clients` concurrent tasks
//! sharing one client. Taking turns in blocks, rather than one configuration after another,
//! spreads what the machine does meanwhile (an API server garbage collection, an etcd
//! compaction, a neighbour's burst) over all configurations alike: on two shared cores a
//! configuration measured alone for two seconds saw its p99 vary threefold from one round to
//! the next. A block is still five times the concurrency or more, so most creates in flight
//! at any moment belong to one configuration and its cost to the API server shows in its
//! own latencies. After each round the pods are deleted and the next round waits for the
//! deletions to settle, so that no round meets a fuller API server than another.
//!
//! Pods carry `mandate.dev/agent=<agent>` and run as its ServiceAccount. Prints one JSON line
//! per namespace: creates per second while its blocks ran, and its latencies in ms, sorted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const BLOCK: usize = 250;

fn pod(name: String, agent: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "mandate.dev/agent": agent}},
        "spec": {"serviceAccountName": agent,
            "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]}
    }))?)
}

/// One create: its block, the namespace it went to, when it started and ended.
struct Create {
    block: usize,
    namespace: usize,
    started: Instant,
    ended: Instant,
}

/// Creates `per_namespace` pods in each of `apis`, blocks taking turns from `first` on.
async fn round(
    apis: &[Api<Pod>],
    agent: &str,
    clients: usize,
    per_namespace: usize,
    first: usize,
    tag: &str,
) -> anyhow::Result<Vec<Create>> {
    let total = per_namespace * apis.len();
    futures::stream::iter(0..total)
        .map(|i| {
            let (block, namespace) = (i / BLOCK, (first + i / BLOCK) % apis.len());
            let api = apis[namespace].clone();
            let pod = pod(format!("bench-{tag}-{i}"), agent);
            async move {
                let pod = pod?;
                let started = Instant::now();
                api.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating pod {i} of round {tag}"))?;
                let ended = Instant::now();
                anyhow::Ok(Create {
                    block,
                    namespace,
                    started,
                    ended,
                })
            }
        })
        .buffer_unordered(clients)
        .try_collect()
        .await
}

/// Deletes every pod in the namespaces, waits until none is left, then a few seconds more
/// for the controller manager and etcd to work through the deletions.
async fn clear(apis: &[Api<Pod>]) -> anyhow::Result<()> {
    for api in apis {
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .context("deleting the round's pods")?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for api in apis {
        while !api
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
        {
            anyhow::ensure!(Instant::now() < deadline, "pods still present after 120 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, clients, rounds, per_round, agent, namespaces @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: bench_pod_create <clients> <rounds> <pods-per-round> <agent> <namespace>..."
        );
    };
    anyhow::ensure!(!namespaces.is_empty(), "name at least one namespace");
    let (clients, rounds, per_round): (usize, usize, usize) =
        (clients.parse()?, rounds.parse()?, per_round.parse()?);
    let client: Client = mandate_e2e::client().await?;
    let apis: Vec<Api<Pod>> = namespaces
        .iter()
        .map(|ns| Api::namespaced(client.clone(), ns))
        .collect();
    let run = std::process::id();

    // Warm-up: the client's connections, and each configuration's first call.
    round(&apis, agent, clients, BLOCK, 0, &format!("{run}-warm")).await?;
    clear(&apis).await?;

    let mut latencies = vec![Vec::new(); apis.len()];
    // Per namespace, the time its blocks took (first start to last end of each): its rate.
    let mut busy = vec![Duration::ZERO; apis.len()];
    for r in 0..rounds {
        let created = round(&apis, agent, clients, per_round, r, &format!("{run}-{r}")).await?;
        let mut blocks: BTreeMap<usize, (usize, Instant, Instant)> = BTreeMap::new();
        for c in created {
            latencies[c.namespace].push(c.ended - c.started);
            let span = blocks
                .entry(c.block)
                .or_insert((c.namespace, c.started, c.ended));
            span.1 = span.1.min(c.started);
            span.2 = span.2.max(c.ended);
        }
        for (namespace, first, last) in blocks.into_values() {
            busy[namespace] += last - first;
        }
        clear(&apis).await?;
    }
    for ((namespace, mut latencies), busy) in namespaces.iter().zip(latencies).zip(busy) {
        latencies.sort();
        println!(
            "{}",
            json!({
                "namespace": namespace, "clients": clients, "pods": latencies.len(),
                "creates_per_second": latencies.len() as f64 / busy.as_secs_f64(),
                "latencies_ms": latencies.iter().map(|l| (l.as_secs_f64() * 1e5).round() / 1e2).collect::<Vec<_>>(),
            })
        );
    }
    Ok(())
}
