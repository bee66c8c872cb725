//! The network boundary (issue 13) on the real control plane, attacked the way a namespace
//! developer would: kubectl `--as dev` holding `edit` (plus the NetworkPolicy, ServiceAccount
//! and pod verbs `edit` aggregates, since this control plane runs no ClusterRole aggregation).
//!
//! - a NetworkPolicy selecting agent pods is refused in enforce (ForeignNetworkPolicy), warned
//!   in warn; one that existed before the namespace opted in is reported on the identity's
//!   NetworkExclusive condition, in an event and by `mandate inventory`;
//! - deleting `mandate-<agent>`, the default deny or an agent's ServiceAccount is refused
//!   (ProtectedProjection); the default deny changed or deleted by other means is restored;
//! - deleting an identity removes its projections (garbage collection) and leaves its pods
//!   selected by the default deny; so is a pod relabelled to an agent without an identity;
//! - agent pods outside opted-in namespaces are covered by the label-based default deny;
//! - a ServiceAccount the developer labels as mandate's is not adopted by an identity claiming
//!   it (refused in scope, reported out of scope) nor collected with it (issue 14).
//!
//! There is no CNI: "isolated" is asserted on the API objects (which policy selects which pod).
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Event, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use mandate::api::AgentIdentity;
use mandate::api::conditions::{NETWORK_EXCLUSIVE, READY, is_true};
use mandate::project::DEFAULT_DENY_NAME;
use mandate_e2e::admission::{
    MANDATE_RESOURCES, NETWORK_IN_AGENT_NAMESPACES, PROJECTIONS_ELSEWHERE,
};
use mandate_e2e::operator::{OperatorOptions, mandate_binary};
use mandate_e2e::scene::{Agent, Scene, grant, grant_cluster_role};
use mandate_e2e::{TestNamespace, eventually, kubeconfig_path, kubectl_ok, kubectl_with_stdin};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
/// "At once": a restored projection must be back well within this.
const RESTORE_WITHIN: Duration = Duration::from_secs(10);
const ISOLATION_LABEL: &str = "e2e.mandate.dev/network";
const DEV: &str = "dev";

/// The operator and its webhooks scoped to this test's namespaces.
struct Boundary {
    scene: Scene,
}

impl std::ops::Deref for Boundary {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl Boundary {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let scene = Scene::start(test, ISOLATION_LABEL, OperatorOptions::unique()).await?;
        Ok(Boundary { scene })
    }

    /// A namespace in this test's scope, opted in with `mode` (`None`: not opted in), where
    /// `dev` holds `edit` and the verbs on pods, NetworkPolicies and ServiceAccounts it grants.
    async fn namespace(&self, prefix: &str, mode: Option<&str>) -> anyhow::Result<TestNamespace> {
        let ns = self.scene.namespace(prefix, mode).await?;
        grant_cluster_role(&ns.name, "dev-edit", "edit", &[DEV])?;
        grant(
            &ns.name,
            "dev-network",
            "get,list,watch,create,update,patch,delete",
            "networkpolicies.networking.k8s.io,serviceaccounts,pods",
            &[DEV],
        )?;
        Ok(ns)
    }

    /// Applies an identity `name` with one live tool (as the admin) and waits until it is Ready.
    async fn ready_agent(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        self.scene.ready_agent(ns, &Agent::named(name)).await
    }

    /// The policy `name` in `ns` once it exists.
    async fn policy(&self, ns: &str, name: &str) -> anyhow::Result<NetworkPolicy> {
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
        eventually(&format!("NetworkPolicy {ns}/{name}"), TIMEOUT, || async {
            Ok(policies.get_opt(name).await?)
        })
        .await
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

/// Fails unless `out` is mandate's refusal by `webhook` naming `code`.
fn refused(out: &Output, webhook: &str, code: &str) -> anyhow::Result<()> {
    let text = stderr(out);
    if out.status.success()
        || !text.contains(&format!(
            "admission webhook \"{webhook}\" denied the request"
        ))
        || !text.contains(code)
    {
        bail!(
            "expected {webhook} to refuse with {code}; got {:?}: {text}",
            out.status
        );
    }
    Ok(())
}

fn policy_manifest(name: &str, selector: Value) -> String {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{}]},
    })
    .to_string()
}

fn pod_manifest(name: &str, agent: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"mandate.dev/agent": agent}},
        "spec": {"serviceAccountName": agent, "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "example.invalid/agent"}]},
    })
    .to_string()
}

/// Whether a podSelector selects a pod with these labels (as the API server reads selectors).
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let value = label(e["key"].as_str().unwrap_or_default());
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// The names of the policies in `ns` that select pod `pod`, denying both ways.
async fn policies_selecting(client: &Client, ns: &str, pod: &str) -> anyhow::Result<Vec<String>> {
    let pod = serde_json::to_value(Api::<Pod>::namespaced(client.clone(), ns).get(pod).await?)?;
    let labels = pod["metadata"]["labels"].clone();
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let mut names = Vec::new();
    for policy in policies {
        let value = serde_json::to_value(&policy)?;
        if selects(&value["spec"]["podSelector"], &labels) {
            names.push(policy.metadata.name.unwrap_or_default());
        }
    }
    names.sort();
    Ok(names)
}

#[test]
fn the_selector_reading_of_these_tests_is_the_api_servers() {
    let agent = json!({"mandate.dev/agent": "a"});
    assert!(selects(&json!({}), &json!({})));
    assert!(selects(
        &json!({"matchExpressions": [{"key": "mandate.dev/agent", "operator": "Exists"}]}),
        &agent
    ));
    assert!(!selects(
        &json!({"matchExpressions": [{"key": "mandate.dev/agent", "operator": "Exists"}]}),
        &json!({"app": "web"})
    ));
    assert!(!selects(
        &json!({"matchLabels": {"mandate.dev/agent": "b"}}),
        &agent
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_network_policies_are_refused_in_enforce_warned_in_warn_and_reported_when_older()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let boundary = Boundary::start("net-foreign").await?;
    let enforce = boundary.namespace("net-enforce", Some("enforce")).await?;
    let warn = boundary.namespace("net-warn", Some("warn")).await?;
    let later = boundary.namespace("net-later", None).await?;
    boundary.ready_agent(&enforce.name, "researcher").await?;
    boundary.ready_agent(&warn.name, "researcher").await?;

    // Enforce: a policy admitting everyone to every pod (agents included) is refused; the
    // webhook's cache may lag the namespace's creation a moment.
    let open = policy_manifest("allow-all", json!({}));
    let out = eventually(
        "the webhook to refuse a foreign policy",
        TIMEOUT,
        || async {
            let out = as_dev(&enforce.name, &["apply", "-f", "-"], Some(&open))?;
            Ok((!out.status.success()).then_some(out))
        },
    )
    .await?;
    refused(&out, NETWORK_IN_AGENT_NAMESPACES, "ForeignNetworkPolicy")?;
    assert!(
        stderr(&out).contains("agent(s) researcher"),
        "{}",
        stderr(&out)
    );
    // One that requires the agent label absent selects no agent pod: admitted.
    let others = policy_manifest(
        "not-agents",
        json!({"matchExpressions": [{"key": "mandate.dev/agent", "operator": "DoesNotExist"}]}),
    );
    kubectl_ok(
        &["--as", DEV, "-n", &enforce.name, "apply", "-f", "-"],
        Some(&others),
    )?;
    // mandate's own policy cannot be widened by the developer either.
    let out = as_dev(
        &enforce.name,
        &[
            "patch",
            "networkpolicy",
            "mandate-researcher",
            "--type=merge",
            "-p",
            r#"{"spec":{"ingress":[{}]}}"#,
        ],
        None,
    )?;
    refused(&out, NETWORK_IN_AGENT_NAMESPACES, "ForeignNetworkPolicy")?;

    // Warn: admitted, with the warning.
    let out = eventually(
        "the webhook to warn about a foreign policy",
        TIMEOUT,
        || async {
            let out = as_dev(&warn.name, &["apply", "-f", "-"], Some(&open))?;
            Ok(
                (out.status.success() && stderr(&out).contains("ForeignNetworkPolicy"))
                    .then_some(out),
            )
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", boundary.operator.log()))?;
    assert!(stderr(&out).contains("Warning:"), "{}", stderr(&out));

    // A policy that existed before the namespace opted in is reported on the identity.
    kubectl_ok(&["apply", "-n", &later.name, "-f", "-"], Some(&open))?;
    boundary.ready_agent(&later.name, "scout").await?;
    kubectl_ok(
        &["label", "namespace", &later.name, "mandate.dev/mode=audit"],
        None,
    )?;
    let identities: Api<AgentIdentity> = Api::namespaced(boundary.client.clone(), &later.name);
    let message = eventually(
        "NetworkExclusive=False naming allow-all",
        TIMEOUT,
        || async {
            let identity = identities.get("scout").await?;
            let condition = identity
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == NETWORK_EXCLUSIVE && c.status == "False")
                .filter(|c| c.reason == "ForeignNetworkPolicy" && c.message.contains("allow-all"));
            Ok(condition.map(|c| c.message.clone()))
        },
    )
    .await?;
    println!("NetworkExclusive: {message}");
    let events: Api<Event> = Api::namespaced(boundary.client.clone(), &later.name);
    eventually("the ForeignNetworkPolicy event", TIMEOUT, || async {
        let found = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .any(|e| e.reason.as_deref() == Some("ForeignNetworkPolicy"));
        Ok(found.then_some(()))
    })
    .await?;
    let out = std::process::Command::new(mandate_binary())
        .args(["inventory", "-n", &later.name, "-o", "json"])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    let inventory: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("mandate inventory: {}", stderr(&out)))?;
    assert_eq!(
        inventory["agents"][0]["foreignNetworkPolicies"],
        json!(["allow-all"]),
        "{inventory:#}"
    );
    let table = std::process::Command::new(mandate_binary())
        .args(["inventory", "-n", &later.name])
        .env("KUBECONFIG", kubeconfig_path())
        .output()?;
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("FOREIGN NETWORK POLICIES (1)"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    // Deleting it clears the condition.
    kubectl_ok(
        &["delete", "networkpolicy", "allow-all", "-n", &later.name],
        None,
    )?;
    eventually("NetworkExclusive=True again", TIMEOUT, || async {
        let identity = identities.get("scout").await?;
        let exclusive = identity
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, NETWORK_EXCLUSIVE));
        Ok(exclusive.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandates_projections_cannot_be_deleted_and_its_default_deny_outlives_identities_and_labels()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let boundary = Boundary::start("net-protect").await?;
    let ns = boundary.namespace("net-protect", Some("warn")).await?;
    let n = ns.name.as_str();
    boundary.ready_agent(n, "researcher").await?;
    let deny = boundary.policy(n, DEFAULT_DENY_NAME).await?;
    let desired = serde_json::to_value(&deny.spec)?;
    assert_eq!(desired["podSelector"], json!({}), "{desired:#}");
    // Both lists are applied empty (mandate's field manager owns them); the API server returns
    // an empty list as none.
    for list in ["ingress", "egress"] {
        assert!(
            desired[list].as_array().is_none_or(Vec::is_empty),
            "{desired:#}"
        );
    }
    assert_eq!(desired["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(
        deny.metadata.owner_references.is_none(),
        "owned by no identity"
    );

    // The developer deletes mandate's projections: refused, whatever the mode (warn here).
    for (kind, name) in [
        ("networkpolicy", "mandate-researcher"),
        ("networkpolicy", DEFAULT_DENY_NAME),
        ("serviceaccount", "researcher"),
    ] {
        let out = as_dev(n, &["delete", kind, name], None)?;
        refused(&out, NETWORK_IN_AGENT_NAMESPACES, "ProtectedProjection")
            .with_context(|| format!("deleting {kind} {name}"))?;
    }

    // Changed or deleted by other means (the cluster admin, whom the webhook lets through
    // here as it is the operator's own user), the default deny is restored at once.
    let policies: Api<NetworkPolicy> = Api::namespaced(boundary.client.clone(), n);
    kubectl_ok(
        &[
            "patch",
            "networkpolicy",
            DEFAULT_DENY_NAME,
            "-n",
            n,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/egress","value":[{}]},{"op":"replace","path":"/spec/podSelector","value":{"matchLabels":{"app":"none"}}}]"#,
        ],
        None,
    )?;
    eventually(
        "the changed default deny to be restored",
        RESTORE_WITHIN,
        || async {
            let now = serde_json::to_value(&policies.get(DEFAULT_DENY_NAME).await?.spec)?;
            Ok((now == desired).then_some(()))
        },
    )
    .await?;
    policies
        .delete(DEFAULT_DENY_NAME, &DeleteParams::default())
        .await?;
    eventually(
        "the deleted default deny to be re-created",
        RESTORE_WITHIN,
        || async {
            let now = policies.get_opt(DEFAULT_DENY_NAME).await?;
            Ok(now
                .filter(|p| serde_json::to_value(&p.spec).ok() == Some(desired.clone()))
                .map(|_| ()))
        },
    )
    .await?;

    // The per-agent policy still opens what the mandate allows on top of the default deny
    // (policies add up): DNS and the tool's CIDR.
    let own = serde_json::to_value(&policies.get("mandate-researcher").await?.spec)?;
    let egress = own["egress"].to_string();
    assert!(
        egress.contains("\"port\":53") && egress.contains("203.0.113.0/24"),
        "{own:#}"
    );

    // An agent pod; relabelled by the developer to an agent with no identity (warn admits it
    // with a warning), it is still selected by the default deny.
    kubectl_ok(
        &["apply", "-n", n, "-f", "-"],
        Some(&pod_manifest("worker", "researcher")),
    )?;
    assert_eq!(
        policies_selecting(&boundary.client, n, "worker").await?,
        ["mandate-researcher", DEFAULT_DENY_NAME]
    );
    kubectl_ok(
        &["apply", "-n", n, "-f", "-"],
        Some(&pod_manifest("drifter", "researcher")),
    )?;
    let out = as_dev(
        n,
        &[
            "label",
            "pod",
            "drifter",
            "mandate.dev/agent=ghost",
            "--overwrite",
        ],
        None,
    )?;
    anyhow::ensure!(out.status.success(), "relabel in warn: {}", stderr(&out));
    assert_eq!(
        policies_selecting(&boundary.client, n, "drifter").await?,
        [DEFAULT_DENY_NAME]
    );

    // Deleting the identity: garbage collection removes its projections (the webhook lets the
    // garbage collector through), the pod stays selected by the default deny.
    kubectl_ok(&["delete", "agentidentity", "researcher", "-n", n], None)?;
    let sas: Api<ServiceAccount> = Api::namespaced(boundary.client.clone(), n);
    eventually(
        "the identity's projections to be collected",
        TIMEOUT,
        || async {
            let gone = policies.get_opt("mandate-researcher").await?.is_none()
                && sas.get_opt("researcher").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", boundary.operator.log()))?;
    assert_eq!(
        policies_selecting(&boundary.client, n, "worker").await?,
        [DEFAULT_DENY_NAME]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pods_outside_opted_in_namespaces_are_covered_by_the_label_based_deny()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let boundary = Boundary::start("net-label").await?;
    let ns = boundary.namespace("net-label", None).await?;
    let n = ns.name.as_str();
    boundary.ready_agent(n, "scout").await?;
    let deny = boundary.policy(n, DEFAULT_DENY_NAME).await?;
    let selector = serde_json::to_value(&deny.spec)?["podSelector"].clone();
    assert_eq!(
        selector,
        json!({"matchExpressions": [{"key": "mandate.dev/agent", "operator": "Exists"}]})
    );
    kubectl_ok(
        &["apply", "-n", n, "-f", "-"],
        Some(&pod_manifest("scout-0", "scout")),
    )?;
    let web = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/web"}]}});
    kubectl_ok(&["apply", "-n", n, "-f", "-"], Some(&web.to_string()))?;
    assert_eq!(
        policies_selecting(&boundary.client, n, "scout-0").await?,
        ["mandate-scout", DEFAULT_DENY_NAME]
    );
    assert!(
        policies_selecting(&boundary.client, n, "web")
            .await?
            .is_empty(),
        "a pod of no agent outside an agent namespace is left alone"
    );
    let out = as_dev(n, &["delete", "networkpolicy", DEFAULT_DENY_NAME], None)?;
    refused(&out, PROJECTIONS_ELSEWHERE, "ProtectedProjection")?;

    // The namespace's last identity goes: its pod stays isolated (the deny is kept).
    kubectl_ok(&["delete", "agentidentity", "scout", "-n", n], None)?;
    let policies: Api<NetworkPolicy> = Api::namespaced(boundary.client.clone(), n);
    eventually("mandate-scout to be collected", TIMEOUT, || async {
        Ok(policies
            .get_opt("mandate-scout")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    // Give the namespace reconciler the chance it would need to (wrongly) drop the deny.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        policies_selecting(&boundary.client, n, "scout-0").await?,
        [DEFAULT_DENY_NAME]
    );
    Ok(())
}

/// Issue 14: "managed by mandate" was read from two labels anyone who may edit a ServiceAccount
/// can set, so labelling an existing account (with its RoleBindings) let a new identity adopt
/// it, and deleting that identity then garbage-collected it. Ownership is now a controller
/// ownerReference to the identity's UID: the labelled account is refused in scope, reported
/// (and never written to) by an identity that predates the webhooks, and outlives its deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_labelled_as_mandates_is_neither_adopted_nor_collected()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let boundary = Boundary::start("net-adopt").await?;
    let scoped = boundary.namespace("net-adopt", Some("enforce")).await?;
    // A namespace the webhooks do not see yet (no isolation label): an identity there is
    // admitted and only the reconciler stands between it and the account.
    let earlier = TestNamespace::create(&boundary.client, "net-adopt-early", &[]).await?;
    let labelled_account = |ns: &str| -> anyhow::Result<()> {
        kubectl_ok(&["create", "serviceaccount", "ci-bot", "-n", ns], None)?;
        kubectl_ok(
            &[
                "create",
                "rolebinding",
                "ci-bot-view",
                "--clusterrole=view",
                "--serviceaccount",
                &format!("{ns}:ci-bot"),
                "-n",
                ns,
            ],
            None,
        )?;
        Ok(())
    };
    labelled_account(&scoped.name)?;
    labelled_account(&earlier.name)?;
    // The attack as the namespace developer: label the account as mandate's for agent ci-bot.
    let out = as_dev(
        &scoped.name,
        &[
            "label",
            "serviceaccount",
            "ci-bot",
            "app.kubernetes.io/managed-by=mandate",
            "mandate.dev/agent=ci-bot",
        ],
        None,
    )?;
    assert!(out.status.success(), "dev may label: {}", stderr(&out));
    kubectl_ok(
        &[
            "label",
            "serviceaccount",
            "ci-bot",
            "app.kubernetes.io/managed-by=mandate",
            "mandate.dev/agent=ci-bot",
            "-n",
            &earlier.name,
        ],
        None,
    )?;
    let identity = |name: &str| {
        format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {{name: {name}}}\n\
             spec:\n  owner: {{kind: User, name: olivia}}\n  purpose: adopt a labelled account\n  \
             serviceAccountName: ci-bot\n"
        )
    };

    // In scope: the identity claiming the labelled account is refused outright, whoever
    // applies it (here the admin, whom RBAC lets create identities).
    let out = kubectl_with_stdin(
        &["apply", "-n", &scoped.name, "-f", "-"],
        Some(&identity("ci-bot")),
    )?;
    refused(&out, MANDATE_RESOURCES, "ServiceAccountUnmanaged")?;
    assert!(
        stderr(&out).contains("labels do not count"),
        "{}",
        stderr(&out)
    );

    // Out of scope: admitted, but mandate never writes the account and reports why.
    let e = earlier.name.as_str();
    kubectl_ok(&["apply", "-n", e, "-f", "-"], Some(&identity("ci-bot")))?;
    let identities: Api<AgentIdentity> = Api::namespaced(boundary.client.clone(), e);
    eventually(
        "ci-bot reports ServiceAccountUnmanaged",
        TIMEOUT,
        || async {
            let status = identities.get("ci-bot").await?.status;
            Ok(status.filter(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == READY && c.status == "False" && c.reason == "ServiceAccountUnmanaged"
                })
            }))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", boundary.operator.log()))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(boundary.client.clone(), e);
    let account = accounts.get("ci-bot").await?;
    assert!(
        account.metadata.owner_references.is_none(),
        "mandate must not adopt the account: {:?}",
        account.metadata.owner_references
    );

    // Deleting the identity leaves the account (and its RoleBinding) alone. The witness that
    // the garbage collector had its chance: an identity of mandate's own, deleted at the same
    // time, loses its ServiceAccount.
    let witness = "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {name: witness}\n\
                   spec:\n  owner: {kind: User, name: olivia}\n  purpose: garbage collection witness\n";
    kubectl_ok(&["apply", "-n", e, "-f", "-"], Some(witness))?;
    eventually(
        "mandate creates witness's ServiceAccount",
        TIMEOUT,
        || async {
            Ok(accounts
                .get_opt("witness")
                .await?
                .filter(|a| a.metadata.owner_references.is_some()))
        },
    )
    .await?;
    identities
        .delete("ci-bot", &DeleteParams::default())
        .await?;
    identities
        .delete("witness", &DeleteParams::default())
        .await?;
    eventually(
        "the garbage collector removes witness's ServiceAccount",
        TIMEOUT,
        || async { Ok(accounts.get_opt("witness").await?.is_none().then_some(())) },
    )
    .await?;
    assert!(
        accounts.get_opt("ci-bot").await?.is_some(),
        "the labelled account outlives the identity that claimed it"
    );
    kubectl_ok(&["get", "rolebinding", "ci-bot-view", "-n", e], None)?;
    Ok(())
}
