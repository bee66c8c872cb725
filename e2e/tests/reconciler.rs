//! The reconciler on the real control plane, with the operator as a local process: samples
//! become ServiceAccounts and NetworkPolicies, expiry is enforced on time, unsafe delegation
//! loses its network path, garbage collection removes projections, a NetworkPolicy tampered
//! with by a namespace developer is restored at once, and the operator converges after being
//! killed mid-reconcile or losing the API server.
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mandate::api::conditions::{DELEGATION_SAFE, READY, is_true};
use mandate::api::{AgentIdentity, ToolBinding};
use mandate::assess::projections_applied;
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::{install_crds, samples_dir};
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> anyhow::Result<(Client, TestNamespace)> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix, &[]).await?;
    Ok((client, ns))
}

fn apply_samples(ns: &str, files: &[&str]) -> anyhow::Result<()> {
    let dir = samples_dir();
    let mut args = vec!["apply".to_owned(), "-n".to_owned(), ns.to_owned()];
    for file in files {
        args.push("-f".to_owned());
        args.push(dir.join(file).to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl_ok(&args, None)?;
    Ok(())
}

/// Ready says the projections are applied; a binding may be seen a moment later, so tests that
/// look at tools wait for them too.
async fn wait_ready_with_tools(
    api: &Api<AgentIdentity>,
    name: &str,
    tools: i32,
) -> anyhow::Result<AgentIdentity> {
    eventually(
        &format!("AgentIdentity {name} Ready with {tools} tool(s)"),
        TIMEOUT,
        || async {
            let identity = api.get(name).await?;
            let done = identity
                .status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == tools);
            Ok(done.then_some(identity))
        },
    )
    .await
}

/// Waits until the identity's projections are applied (Ready, or not Ready only for want of a
/// live tool).
async fn wait_projected(api: &Api<AgentIdentity>, name: &str) -> anyhow::Result<AgentIdentity> {
    eventually(
        &format!("AgentIdentity {name} to be projected"),
        TIMEOUT,
        || async {
            let identity = api.get(name).await?;
            let projected = projections_applied(identity.status.as_ref());
            Ok(projected.then_some(identity))
        },
    )
    .await
}

fn spec_of(policy: &NetworkPolicy) -> Value {
    serde_json::to_value(policy.spec.as_ref()).unwrap_or_default()
}

fn dns_rule() -> Value {
    json!({
        "ports": [{"port": 53, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
        }]
    })
}

fn identity(name: &str, extra_spec: Value) -> anyhow::Result<AgentIdentity> {
    let mut spec = json!({
        "owner": {"kind": "User", "name": "alice"},
        "purpose": "e2e test agent",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": name}, "spec": spec
    }))?)
}

fn external_binding(
    name: &str,
    agent: &str,
    cidr: &str,
    valid_until: Option<&str>,
) -> anyhow::Result<ToolBinding> {
    let mut spec = json!({
        "agent": agent,
        "tools": [{"name": "search", "actions": ["read"], "destination": {"external": {"cidrs": [cidr], "ports": [443]}}}]
    });
    if let Some(until) = valid_until {
        spec["validUntil"] = json!(until);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": name}, "spec": spec
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_become_service_accounts_with_spiffe_ids_and_network_policies() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-samples").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    apply_samples(
        &ns.name,
        &[
            "support/services.yaml",
            "researcher.yaml",
            "planner-executor.yaml",
        ],
    )?;

    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    let researcher = wait_ready_with_tools(&identities, "researcher", 2).await?;
    let status = researcher.status.expect("a Ready identity has a status");
    let spiffe = format!("spiffe://cluster.local/ns/{}/sa/researcher", ns.name);
    assert_eq!(status.spiffe_id.as_deref(), Some(spiffe.as_str()));
    assert_eq!(status.service_account.as_deref(), Some("researcher"));
    assert_eq!(status.network_policy.as_deref(), Some("mandate-researcher"));
    let tools: Vec<_> = status
        .tools
        .iter()
        .map(|t| (t.name.as_str(), t.binding.as_str()))
        .collect();
    assert_eq!(
        tools,
        [
            ("catalogue", "researcher-tools"),
            ("web-search", "researcher-tools")
        ]
    );
    assert_eq!(status.tool_count, 2);
    assert_eq!(status.observed_generation, researcher.metadata.generation);

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("researcher")
        .await?;
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(sa.annotations().get("mandate.dev/spiffe-id"), Some(&spiffe));
    assert_eq!(
        sa.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("mandate")
    );
    assert_eq!(
        sa.labels().get("mandate.dev/agent").map(String::as_str),
        Some("researcher")
    );
    let owner = &sa.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("AgentIdentity", "researcher", Some(true))
    );
    assert_eq!(
        owner.uid,
        researcher.metadata.uid.clone().unwrap_or_default()
    );

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    // Two live tools do not yet say the catalogue Service was seen: a reconcile before it
    // leaves that rule out until the Service's own event reconciles the researcher again.
    let np = eventually(
        "the researcher's NetworkPolicy to reach DNS and both tools",
        TIMEOUT,
        || async {
            let np = policies.get("mandate-researcher").await?;
            let rules = spec_of(&np)["egress"].as_array().map_or(0, Vec::len);
            Ok((rules == 3).then_some(np))
        },
    )
    .await?;
    assert_eq!(np.owner_references()[0].name, "researcher");
    assert_eq!(
        np.labels().get("mandate.dev/agent").map(String::as_str),
        Some("researcher")
    );
    let spec = spec_of(&np);
    assert_eq!(
        spec["podSelector"],
        json!({"matchLabels": {"mandate.dev/agent": "researcher"}})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(
        spec.get("ingress").is_none_or(|i| i == &json!([])),
        "no endpoint: no ingress: {spec}"
    );
    let egress = spec["egress"].as_array().expect("egress rules");
    assert_eq!(egress.len(), 3, "DNS, catalogue, web-search: {spec}");
    assert_eq!(egress[0], dns_rule());
    // The Service is reached through its pods on the target port (8080), not its port 80.
    assert_eq!(
        egress[1],
        json!({
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "catalogue"}}
            }]
        })
    );
    assert_eq!(
        egress[2],
        json!({
            "ports": [{"port": 443, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "2001:db8:100::/48"}}, {"ipBlock": {"cidr": "203.0.113.0/24"}}]
        })
    );

    for name in ["planner", "executor"] {
        wait_projected(&identities, name).await?;
    }
    // Ready says the projections are applied, not that the delegation has reached them: the
    // executor may have been reconciled before the policy or the planner's tools were seen.
    let executor = eventually(
        "the executor's NetworkPolicy to admit the planner's pods",
        TIMEOUT,
        || async {
            let spec = spec_of(&policies.get("mandate-executor").await?);
            let admits = spec["ingress"]
                .as_array()
                .is_some_and(|rules| !rules.is_empty());
            Ok(admits.then_some(spec))
        },
    )
    .await?;
    assert_eq!(
        executor["ingress"],
        json!([{
            "from": [{"podSelector": {"matchLabels": {"mandate.dev/agent": "planner"}}}],
            "ports": [{"port": 8443, "protocol": "TCP"}]
        }])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_binding_leaves_the_network_policy_within_five_seconds() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-expiry").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    let bindings: Api<ToolBinding> = Api::namespaced(client.clone(), &ns.name);
    identities
        .create(&PostParams::default(), &identity("scout", json!({}))?)
        .await?;
    let expiry =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(20);
    let until = expiry.to_string();
    bindings
        .create(
            &PostParams::default(),
            &external_binding("scout-search", "scout", "198.51.100.0/24", Some(&until))?,
        )
        .await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    let has_rule = |np: &NetworkPolicy| spec_of(np).to_string().contains("198.51.100.0/24");
    eventually("the tool's rule in the NetworkPolicy", TIMEOUT, || async {
        Ok(policies
            .get_opt("mandate-scout")
            .await?
            .filter(|np| has_rule(np))
            .map(|_| ()))
    })
    .await?;
    assert_eq!(
        wait_ready_with_tools(&identities, "scout", 1)
            .await?
            .status
            .map(|s| s.tool_count),
        Some(1)
    );

    eventually(
        "the rule to disappear after expiry",
        Duration::from_secs(40),
        || async {
            let np = policies.get("mandate-scout").await?;
            Ok((!has_rule(&np)).then_some(()))
        },
    )
    .await?;
    let gone_at = k8s_openapi::jiff::Timestamp::now();
    let late = gone_at.duration_since(expiry);
    assert!(
        late <= k8s_openapi::jiff::SignedDuration::from_secs(5),
        "the rule disappeared {late:?} after validUntil"
    );
    let status = identities.get("scout").await?.status.expect("status");
    assert!(
        status.tools.is_empty(),
        "no live tools after expiry: {:?}",
        status.tools
    );
    assert_eq!(status.tool_count, 0);
    let binding = bindings.get("scout-search").await?;
    assert_eq!(
        binding.status.and_then(|s| s.phase),
        Some(mandate::api::ToolBindingPhase::Expired)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_delegators_own_binding_withdraws_the_delegation_path() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-delegation").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    apply_samples(
        &ns.name,
        &["support/services.yaml", "planner-executor.yaml"],
    )?;
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    wait_projected(&identities, "planner").await?;
    wait_projected(&identities, "executor").await?;
    let admits_planner = |np: &NetworkPolicy| {
        spec_of(np)["ingress"]
            .to_string()
            .contains("\"mandate.dev/agent\":\"planner\"")
    };
    eventually(
        "the executor's policy to admit the planner",
        TIMEOUT,
        || async { Ok(admits_planner(&policies.get("mandate-executor").await?).then_some(())) },
    )
    .await?;
    // Each side is its own reconcile: the planner's egress may land a moment later.
    eventually(
        "the planner's policy to reach the executor",
        TIMEOUT,
        || async {
            let egress = spec_of(&policies.get("mandate-planner").await?)["egress"].to_string();
            Ok(egress
                .contains("\"mandate.dev/agent\":\"executor\"")
                .then_some(()))
        },
    )
    .await?;

    Api::<ToolBinding>::namespaced(client.clone(), &ns.name)
        .delete("planner-tools", &DeleteParams::default())
        .await?;

    let planner = eventually(
        "the planner to report an escalation path",
        TIMEOUT,
        || async {
            let planner = identities.get("planner").await?;
            let unsafe_now = planner.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == DELEGATION_SAFE && c.status == "False")
            });
            Ok(unsafe_now.then_some(planner))
        },
    )
    .await?;
    let paths = planner
        .status
        .map(|s| s.escalation_paths)
        .unwrap_or_default();
    assert_eq!(
        paths,
        ["planner -> executor -> ledger: planner does not hold ledger"]
    );

    eventually(
        "the executor's policy to stop admitting the planner",
        TIMEOUT,
        || async { Ok((!admits_planner(&policies.get("mandate-executor").await?)).then_some(())) },
    )
    .await?;
    let planner_egress = spec_of(&policies.get("mandate-planner").await?)["egress"].to_string();
    assert!(
        !planner_egress.contains("executor"),
        "planner egress still reaches the executor: {planner_egress}"
    );

    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let note = eventually("an event naming the chain", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find_map(|e| {
            (e.reason.as_deref() == Some("EscalationPath")
                && e.involved_object.name.as_deref() == Some("planner"))
            .then(|| e.message.unwrap_or_default())
        }))
    })
    .await?;
    assert!(note.contains("planner -> executor -> ledger"), "{note}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_identity_garbage_collects_its_projections() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-gc").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    identities
        .create(&PostParams::default(), &identity("short-lived", json!({}))?)
        .await?;
    wait_projected(&identities, "short-lived").await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    assert!(sas.get_opt("short-lived").await?.is_some());
    assert!(nps.get_opt("mandate-short-lived").await?.is_some());

    identities
        .delete("short-lived", &DeleteParams::background())
        .await?;
    eventually(
        "garbage collection of the ServiceAccount and NetworkPolicy",
        TIMEOUT,
        || async {
            let gone = sas.get_opt("short-lived").await?.is_none()
                && nps.get_opt("mandate-short-lived").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await
}

/// A namespace developer with the built-in `edit` role, as `kubectl --as` arguments.
fn developer_with_edit(ns: &str) -> anyhow::Result<[String; 4]> {
    let user = format!("dev-{ns}");
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "developer-edit",
            "-n",
            ns,
            "--clusterrole=edit",
            "--user",
            &user,
        ],
        None,
    )?;
    Ok([
        "--as".to_owned(),
        user,
        "--as-group".to_owned(),
        "system:authenticated".to_owned(),
    ])
}

fn kubectl_as(who: &[String; 4], args: &[&str]) -> anyhow::Result<String> {
    let mut all: Vec<&str> = who.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    kubectl_ok(&all, None)
}

/// How fast "at once" is here: the restore of a tampered projection must land well inside the
/// 30 s an added rule used to survive.
const RESTORE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_policy_widened_by_a_namespace_developer_is_restored_at_once()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-tamper").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    identities
        .create(&PostParams::default(), &identity("scout", json!({}))?)
        .await?;
    Api::<ToolBinding>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &external_binding("scout-tools", "scout", "203.0.113.0/24", None)?,
        )
        .await?;
    wait_ready_with_tools(&identities, "scout", 1).await?;
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    let projected = spec_of(&nps.get("mandate-scout").await?);
    let developer = developer_with_edit(&ns.name)?;

    // 1. An ingress rule that admits everyone, added to mandate's own (empty) ingress list.
    kubectl_as(
        &developer,
        &[
            "patch",
            "networkpolicy",
            "mandate-scout",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"ingress":[{}]}}"#,
        ],
    )?;
    let started = Instant::now();
    eventually(
        "the added ingress rule to be taken back",
        RESTORE_WITHIN,
        || async {
            let spec = spec_of(&nps.get("mandate-scout").await?);
            Ok((spec == projected).then_some(()))
        },
    )
    .await?;
    let first = started.elapsed();

    // 2. The ownerReferences removed (so garbage collection and the owner lookup lose it) and
    //    egress opened to everything, in one patch.
    kubectl_as(
        &developer,
        &[
            "patch",
            "networkpolicy",
            "mandate-scout",
            "-n",
            &ns.name,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/ownerReferences"},{"op":"add","path":"/spec/egress/-","value":{}}]"#,
        ],
    )?;
    let started = Instant::now();
    eventually(
        "the opened egress and the ownerReferences to be restored",
        RESTORE_WITHIN,
        || async {
            let np = nps.get("mandate-scout").await?;
            let owned = np
                .owner_references()
                .iter()
                .any(|o| o.kind == "AgentIdentity" && o.name == "scout");
            Ok((owned && spec_of(&np) == projected).then_some(()))
        },
    )
    .await?;
    let second = started.elapsed();

    // 3. Labels and ownerReferences both gone (the policy leaves mandate's labelled watch).
    kubectl_as(
        &developer,
        &[
            "patch",
            "networkpolicy",
            "mandate-scout",
            "-n",
            &ns.name,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/ownerReferences"},{"op":"remove","path":"/metadata/labels"},{"op":"replace","path":"/spec/egress","value":[{}]}]"#,
        ],
    )?;
    eventually(
        "the unlabelled, opened policy to be restored",
        RESTORE_WITHIN,
        || async {
            let np = nps.get("mandate-scout").await?;
            let labelled = np
                .labels()
                .get("app.kubernetes.io/managed-by")
                .is_some_and(|v| v == "mandate");
            Ok((labelled && spec_of(&np) == projected).then_some(()))
        },
    )
    .await?;
    // 4. A server-side apply that takes the ingress list from mandate's field manager.
    let manifest = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: mandate-scout, namespace: {}}}\nspec:\n  podSelector: {{matchLabels: {{mandate.dev/agent: scout}}}}\n  ingress: [{{}}]\n",
        ns.name
    );
    let mut apply: Vec<&str> = developer.iter().map(String::as_str).collect();
    apply.extend_from_slice(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=dev",
        "-f",
        "-",
    ]);
    kubectl_ok(&apply, Some(&manifest))?;
    eventually(
        "the ingress list taken with --force-conflicts to be taken back",
        RESTORE_WITHIN,
        || async {
            let spec = spec_of(&nps.get("mandate-scout").await?);
            Ok((spec == projected).then_some(()))
        },
    )
    .await?;
    println!("restored after {first:?} and {second:?}");
    Ok(())
}

/// Creates `count` identities with one binding each, `concurrency` at a time.
async fn create_agents(
    client: &Client,
    ns: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), ns);
    let bindings: Api<ToolBinding> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(range)
        .map(|i| {
            let (identities, bindings) = (identities.clone(), bindings.clone());
            async move {
                let name = format!("agent-{i:04}");
                identities
                    .create(&PostParams::default(), &identity(&name, json!({}))?)
                    .await?;
                let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
                bindings
                    .create(
                        &PostParams::default(),
                        &external_binding(&format!("{name}-tools"), &name, &cidr, None)?,
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Waits until every identity in `ns` is Ready, then checks that each has exactly its own
/// ServiceAccount and NetworkPolicy and nothing else is managed there.
async fn assert_converged(client: &Client, ns: &str, expected: usize) -> anyhow::Result<()> {
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{expected} Ready identities"),
        Duration::from_secs(180),
        || async {
            let list = identities.list(&ListParams::default()).await?;
            let (ready, waiting): (Vec<_>, Vec<_>) = list.items.iter().partition(|i| {
                i.status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == 1)
            });
            if ready.len() == expected {
                return Ok(Some(()));
            }
            // Said on timeout: which identities are still waiting, and what their status says.
            anyhow::bail!(
                "{} of {expected} Ready; waiting, first few: {}",
                ready.len(),
                waiting
                    .iter()
                    .take(4)
                    .map(|i| format!("{} {:?}", i.name_any(), i.status))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    )
    .await?;
    let names: BTreeSet<String> = identities
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|i| i.name_any())
        .collect();
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=mandate");
    let sas: BTreeSet<String> = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .list(&managed)
        .await?
        .items
        .iter()
        .map(|sa| sa.name_any())
        .collect();
    let nps: BTreeSet<String> = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&managed)
        .await?
        .items
        .iter()
        .map(|np| np.name_any())
        .collect();
    assert_eq!(
        sas, names,
        "exactly one managed ServiceAccount per identity"
    );
    // One per identity, and the namespace's default deny (owned by no identity).
    let expected_nps: BTreeSet<String> = names
        .iter()
        .map(|n| format!("mandate-{n}"))
        .chain([mandate::project::DEFAULT_DENY_NAME.to_owned()])
        .collect();
    assert_eq!(
        nps, expected_nps,
        "exactly one managed NetworkPolicy per identity, and the default deny"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_restarted_mid_reconcile_of_200_identities_converges()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-restart").await?;
    let mut first = Operator::start(OperatorOptions::unique()).await?;
    create_agents(&client, &ns.name, 0..200).await?;
    let identities: Api<AgentIdentity> = Api::namespaced(client.clone(), &ns.name);
    // Kill it part-way: once some but not all identities carry a status.
    eventually("the operator to be part-way through", TIMEOUT, || async {
        let list = identities.list(&ListParams::default()).await?;
        let done = list.items.iter().filter(|i| i.status.is_some()).count();
        Ok((done >= 20).then_some(done))
    })
    .await?;
    first.kill();
    let started = Instant::now();
    // Same Lease: the successor waits for the dead leader's lease to lapse, as in a cluster.
    let _second = first.restart_like().await?;
    assert_converged(&client, &ns.name, 200).await?;
    eprintln!("converged {:?} after the restart", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_survives_an_api_server_restart_during_reconciliation() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, ns) = setup("rec-apiserver").await?;
    let _operator = Operator::start(OperatorOptions::unique()).await?;
    create_agents(&client, &ns.name, 0..40).await?;
    let cluster = mandate_e2e::repo_root().join("e2e/cluster.sh");
    let out = std::process::Command::new("bash")
        .arg(&cluster)
        .arg("restart-apiserver")
        .output()?;
    assert!(
        out.status.success(),
        "restart-apiserver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A client made before the restart may hold dead connections: make a fresh one.
    let client = mandate_e2e::client().await?;
    create_agents(&client, &ns.name, 40..80).await?;
    assert_converged(&client, &ns.name, 80).await
}
