//! `make bench-reconcile` on the local control plane (a benchmark, not a test):
//! 1. the time for 1,000 identities with one binding each to become Ready, against the time a
//!    bare kube client takes to create the same number of ServiceAccounts and NetworkPolicies:
//!    the identities and bindings are created first and the operator is then started, so the
//!    time is the operator's own work (as a second figure, the same while the operator runs and
//!    the objects are being created, which adds the creates themselves);
//! 2. an operator restart with everything in sync: time to steady state, and how many objects
//!    changed resourceVersion;
//! 3. the operator's peak RSS with 10,000 identities and 10,000 bindings synced;
//! 4. for scale, a bare client making the operator's writes by hand: all five per agent, and
//!    only the three an identity cannot be Ready without (what any reconciler must do).
//!
//! The cluster holds RBAC the operator evaluates for every identity (a few hundred
//! RoleBindings, some naming the agents' ServiceAccounts, and a ClusterRole bound to every
//! ServiceAccount), and with 10,000 agents synced that ClusterRole is changed harmlessly: the
//! number of identity reconciles it causes is reported (it should be none).
//!
//! Uses the operator binary named by MANDATE_E2E_BINARY (the Makefile passes the release build).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

/// Which of the operator's writes for a new agent a bare client makes by hand.
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    /// All five: the ServiceAccount, the NetworkPolicy, the identity's status, the binding's
    /// status and one Event.
    All,
    /// Only the three without which no identity can report Ready: its ServiceAccount, its
    /// NetworkPolicy and its own status. The floor for any reconciler that does what the issue
    /// asks.
    UntilReady,
}

/// A bare client doing, for `range`'s agents (already created in `ns`), the writes the
/// operator makes for a new agent (`which`): apply its ServiceAccount and NetworkPolicy, apply
/// the identity's and the binding's status, and create one Event. Separates the cost of the
/// work the API requires from any overhead of the operator's own.
async fn operator_writes_by_hand(
    client: &Client,
    ns: &str,
    range: std::ops::Range<usize>,
    which: Writes,
) -> anyhow::Result<()> {
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Patch, PatchParams};
    let apply = PatchParams::apply("bench-by-hand").force();
    let (identities, bindings) = (
        Api::<AgentIdentity>::namespaced(client.clone(), ns),
        Api::<ToolBinding>::namespaced(client.clone(), ns),
    );
    let (sas, nps, events) = (
        Api::<ServiceAccount>::namespaced(client.clone(), ns),
        Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        Api::<Event>::namespaced(client.clone(), ns),
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str| {
        json!({"type": type_, "status": "True", "reason": "Projected",
        "message": "ServiceAccount and NetworkPolicy applied", "lastTransitionTime": now, "observedGeneration": 1})
    };
    futures::stream::iter(range)
        .map(|i| {
            let name = format!("agent-{i:05}");
            let (identities, bindings, sas, nps, events, apply) = (
                identities.clone(), bindings.clone(), sas.clone(), nps.clone(), events.clone(), apply.clone(),
            );
            let conditions: Vec<_> = ["ToolsBound", "Isolated", "DelegationSafe", "Ready"].map(condition).into();
            let binding_conditions: Vec<_> = ["Accepted", "Active"].map(condition).into();
            let now = now.clone();
            async move {
                let identity = identities.get(&name).await?;
                let owner = json!([{"apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity", "name": name,
                    "uid": identity.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
                let labels = json!({"app.kubernetes.io/managed-by": "mandate", "mandate.dev/agent": name});
                sas.patch(&name, &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "labels": labels, "ownerReferences": owner,
                        "annotations": {"mandate.dev/spiffe-id": format!("spiffe://cluster.local/ns/{ns}/sa/{name}")}},
                    "automountServiceAccountToken": false}))).await?;
                let np = format!("mandate-{name}");
                nps.patch(&np, &apply, &Patch::Apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": np, "labels": labels, "ownerReferences": owner},
                    "spec": {"podSelector": {"matchLabels": {"mandate.dev/agent": name}}, "policyTypes": ["Ingress", "Egress"],
                        "egress": [{"to": [{"ipBlock": {"cidr": format!("10.{}.{}.0/24", i / 256 % 256, i % 256)}}],
                            "ports": [{"port": 443, "protocol": "TCP"}]}]}}))).await?;
                identities.patch_status(&name, &apply, &Patch::Apply(json!({"apiVersion": "mandate.dev/v1alpha1",
                    "kind": "AgentIdentity", "status": {"spiffeID": format!("spiffe://cluster.local/ns/{ns}/sa/{name}"),
                    "serviceAccount": name, "networkPolicy": np, "toolCount": 1, "observedGeneration": 1,
                    "conditions": conditions}}))).await?;
                if which == Writes::UntilReady {
                    return anyhow::Ok(());
                }
                let binding = format!("{name}-tools");
                bindings.patch_status(&binding, &apply, &Patch::Apply(json!({"apiVersion": "mandate.dev/v1alpha1",
                    "kind": "ToolBinding", "status": {"phase": "Active", "observedGeneration": 1,
                    "conditions": binding_conditions}}))).await?;
                let event: Event = serde_json::from_value(json!({"metadata": {"name": format!("{name}.by-hand")},
                    "eventTime": now, "action": "Reconcile", "reason": "ToolsGranted", "note": "now holds search",
                    "type": "Normal", "reportingController": "bench", "reportingInstance": "bench",
                    "regarding": {"apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity", "name": name,
                        "namespace": ns, "uid": identity.metadata.uid}}))?;
                events.create(&PostParams::default(), &event).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Creates 1,000 agents in a new namespace `ns`, then times `which` writes for them by hand.
async fn timed_writes_by_hand(
    client: &Client,
    ns: &str,
    which: Writes,
) -> anyhow::Result<Duration> {
    namespace(client, ns).await?;
    create_agents(client, ns, 0..1000).await?;
    let started = Instant::now();
    operator_writes_by_hand(client, ns, 0..1000, which).await?;
    Ok(started.elapsed())
}

fn is_ready(identity: &AgentIdentity) -> bool {
    identity
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == 1)
}

/// Waits until `expected` identities in `namespaces` are Ready with their one tool. Follows a
/// watch rather than polling lists, so the measurement adds next to no load of its own.
async fn wait_ready(client: &Client, namespaces: &[String], expected: usize) -> anyhow::Result<()> {
    use kube::runtime::watcher::{self, Event};
    let streams = namespaces.iter().map(|ns| {
        watcher::watcher(
            Api::<AgentIdentity>::namespaced(client.clone(), ns),
            watcher::Config::default(),
        )
        .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut ready = std::collections::HashSet::new();
    let deadline = tokio::time::sleep(Duration::from_secs(1800));
    tokio::pin!(deadline);
    while ready.len() < expected {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut deadline => anyhow::bail!("timed out waiting for {expected} Ready identities"),
        };
        let Some(event) = event else {
            anyhow::bail!("the watch of identities ended");
        };
        match event? {
            Event::Apply(identity) | Event::InitApply(identity) => {
                let key = (identity.namespace(), identity.name_any());
                if is_ready(&identity) {
                    ready.insert(key);
                } else {
                    ready.remove(&key);
                }
            }
            Event::Delete(identity) => {
                ready.remove(&(identity.namespace(), identity.name_any()));
            }
            Event::Init | Event::InitDone => {}
        }
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

/// Peak RSS, current RSS, and the current RSS's anonymous (heap, stacks) and file-backed (the
/// binary's pages) parts, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<[u64; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(["VmHWM:", "VmRSS:", "RssAnon:", "RssFile:"].map(field))
}

/// RBAC for the evaluator to work through, none of it dangerous: in `ns`, 300 RoleBindings,
/// every third binding `view` to one of the first 100 agents' ServiceAccounts and the others
/// `edit` to users; and a ClusterRole bound to every ServiceAccount (`system:serviceaccounts`).
async fn bench_rbac(client: &Client, ns: &str, run: u32) -> anyhow::Result<String> {
    let bindings: Vec<RoleBinding> = (0..300)
        .map(|i| {
            let subject = if i % 3 == 0 {
                json!({"kind": "ServiceAccount", "name": format!("agent-{:05}", i / 3)})
            } else {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("dev-{i}")})
            };
            let role = if i % 3 == 0 { "view" } else { "edit" };
            serde_json::from_value(json!({"metadata": {"name": format!("bench-{i:03}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [subject]}))
        })
        .collect::<Result<_, _>>()?;
    create_all(
        &Api::<RoleBinding>::namespaced(client.clone(), ns),
        bindings,
    )
    .await?;
    let role = format!("bench-{run}-every-account");
    let cluster_role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": role},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]}))?;
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &cluster_role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts"}]}))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(role)
}

/// resourceVersions of every AgentIdentity in the cluster, by namespace/name.
async fn identity_versions(client: &Client) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(Api::<AgentIdentity>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|i| {
            (
                format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()),
                i.resource_version().unwrap_or_default(),
            )
        })
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = mandate_e2e::client().await?;
    install_crds(&client).await?;
    let run = std::process::id();
    let bare_ns = format!("bench-bare-{run}");
    let op_ns = format!("bench-op-{run}");
    let mut bare_namespaces = Vec::new();
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
    // Three rounds in namespaces of their own; the median, as a single round varies by half.
    let mut rounds = Vec::new();
    for round in 0..3 {
        let ns = format!("{bare_ns}-{round}");
        namespace(&client, &ns).await?;
        let started = Instant::now();
        create_all(
            &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            sas.clone(),
        )
        .await?;
        create_all(
            &Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
            nps.clone(),
        )
        .await?;
        rounds.push(started.elapsed());
        bare_namespaces.push(ns);
    }
    rounds.sort();
    let bare = rounds[1];
    eprintln!(
        "bare client: 1000 ServiceAccounts + 1000 NetworkPolicies in {bare:.2?} (median of {rounds:.2?})"
    );

    // 1b. The operator making 1,000 existing identities Ready, from its start, with RBAC to
    // evaluate for each.
    let cluster_role = bench_rbac(&client, &op_ns, run).await?;
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
    let [hwm, rss, anon, file] = rss_kib(restarted.pid())?;
    eprintln!(
        "{total} identities + bindings synced: peak RSS {} MiB, current RSS {} MiB ({} MiB anonymous, {} MiB of the binary)",
        hwm / 1024,
        rss / 1024,
        anon / 1024,
        file / 1024
    );

    // A harmless change of the ClusterRole bound to every ServiceAccount: judged in memory, it
    // changes no identity's API rights, so it should wake no reconcile.
    let before_change = reconciles(&restarted.metrics()?, "AgentIdentity");
    let versions_before = identity_versions(&client).await?;
    Api::<ClusterRole>::all(client.clone())
        .patch(
            &cluster_role,
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]}]})),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Reconciles may include periodic resyncs that fell into the window; writes may not.
    let rbac_reconciles =
        reconciles(&restarted.metrics()?, "AgentIdentity").saturating_sub(before_change);
    let versions_after = identity_versions(&client).await?;
    let rbac_writes = versions_before
        .iter()
        .filter(|(k, v)| versions_after.get(*k) != Some(v))
        .count();
    eprintln!(
        "a change of a ClusterRole bound to all {total} agents' ServiceAccounts (no dangerous right): {rbac_writes} identities written, {rbac_reconciles} identity reconciles (periodic resyncs included)"
    );

    drop(restarted);
    // 4. The same writes the operator makes, by hand, for 1,000 existing agents (after the
    // operator has stopped, so it does not reconcile them too).
    let by_hand_ns = format!("bench-by-hand-{run}");
    let by_hand = timed_writes_by_hand(&client, &by_hand_ns, Writes::All).await?;
    let until_ready_ns = format!("bench-until-ready-{run}");
    let until_ready = timed_writes_by_hand(&client, &until_ready_ns, Writes::UntilReady).await?;
    bare_namespaces.extend([by_hand_ns, until_ready_ns]);
    eprintln!(
        "bare client doing the operator's writes (2 applies, 2 status applies, 1 event per agent) for 1000 agents: {by_hand:.2?}"
    );
    eprintln!(
        "bare client doing only the writes before Ready (2 applies, the identity's status) for 1000 agents: {until_ready:.2?}, {:.1}x the bare creates",
        until_ready.as_secs_f64() / bare.as_secs_f64()
    );

    println!(
        "{}",
        json!({
            "bare_client_seconds": bare.as_secs_f64(),
            "operator_seconds": operator_time.as_secs_f64(),
            "ratio": operator_time.as_secs_f64() / bare.as_secs_f64(),
            "by_hand_seconds": by_hand.as_secs_f64(),
            "ratio_to_same_writes_by_hand": operator_time.as_secs_f64() / by_hand.as_secs_f64(),
            "writes_until_ready_by_hand_seconds": until_ready.as_secs_f64(),
            "writes_until_ready_ratio": until_ready.as_secs_f64() / bare.as_secs_f64(),
            "created_beforehand_seconds": created.as_secs_f64(),
            "operator_running_create_seconds": live_created.as_secs_f64(),
            "operator_running_ready_seconds": live_time.as_secs_f64(),
            "restart_ready_seconds": ready_after.as_secs_f64(),
            "restart_steady_seconds": steady.as_secs_f64(),
            "restart_changed_objects": changed.len(),
            "restart_changed": changed,
            "identities_for_rss": total,
            "peak_rss_mib": hwm as f64 / 1024.0,
            "identities_written_after_harmless_cluster_wide_rbac_change": rbac_writes,
            "reconciles_after_harmless_cluster_wide_rbac_change": rbac_reconciles,
        })
    );
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&cluster_role, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(&cluster_role, &DeleteParams::default())
        .await;

    for ns in bare_namespaces.into_iter().chain(namespaces) {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::background())
            .await;
    }
    Ok(())
}
