//! Effective Kubernetes API rights of agents (issue 14) on the real control plane, granted the
//! way they would be in a cluster:
//! - a namespace admin (`--as ada`, holding the built-in `admin` in the namespace, which may bind
//!   what it holds) binds ClusterRole `edit` to the agent's ServiceAccount with a RoleBinding;
//! - the cluster admin (the admin kubeconfig: only a cluster admin may write
//!   ClusterRoleBindings) lets group `system:serviceaccounts:<ns>` get Secrets cluster-wide;
//! - the namespace admin writes a Role allowing `impersonate serviceaccounts` and binds it to
//!   the agent; the agent's own token (a TokenRequest for its ServiceAccount) is then told by the
//!   API server that it may impersonate: the self-escalation path, since the webhook only sees
//!   the impersonated user.
//!
//! Each grant shows on the identity (ApiRightsContained=False naming the right and the binding,
//! with a DangerousApiRights event), in `mandate inventory`, and a new agent pod in the enforce
//! namespace is refused with DangerousApiRights; once the binding is deleted the condition is
//! True again and the pod is admitted. The control plane runs the ClusterRole aggregation
//! controller, so `edit` and `admin` hold their aggregated rules here. Tests run one at a time
//! (each starts its own operator), serialised by `SERIAL`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Event, ServiceAccount};
use kube::Api;
use kube::api::ListParams;
use mandate::api::AgentIdentity;
use mandate::api::conditions::{API_RIGHTS_CONTAINED, READY, is_true};
use mandate_e2e::admission::PODS_IN_AGENT_NAMESPACES;
use mandate_e2e::operator::{OperatorOptions, mandate_binary};
use mandate_e2e::scene::{Agent, Scene, grant_cluster_role};
use mandate_e2e::{
    TestNamespace, block_on_side_runtime, eventually, kubeconfig_path, kubectl_ok, kubectl_output,
    kubectl_with_stdin, state_dir,
};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
const ISOLATION_LABEL: &str = "e2e.mandate.dev/api-rights";
/// The namespace admin.
const ADA: &str = "ada";
const AGENT: &str = "bot";

/// The operator, its webhooks scoped to this test's namespace, and the namespace (enforce),
/// where `ada` holds `admin` and `bot` is a Ready agent.
struct World {
    scene: Scene,
    ns: TestNamespace,
}

impl std::ops::Deref for World {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl World {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let scene = Scene::start(test, ISOLATION_LABEL, OperatorOptions::unique()).await?;
        let ns = scene.namespace(test, Some("enforce")).await?;
        let n = ns.name.clone();
        grant_cluster_role(&n, "ada-admin", "admin", &[ADA])?;
        let world = World { scene, ns };
        world.ready_agent().await?;
        // The aggregated `admin` rules and the binding take a moment to apply.
        eventually("ada to be an admin of the namespace", TIMEOUT, || async {
            let out = kubectl_output(&[
                "auth",
                "can-i",
                "create",
                "rolebindings",
                "-n",
                &n,
                "--as",
                ADA,
            ])?;
            Ok((String::from_utf8_lossy(&out.stdout).trim() == "yes").then_some(()))
        })
        .await?;
        Ok(world)
    }

    fn ns(&self) -> &str {
        &self.ns.name
    }

    /// Applies `bot` with one live tool (as the admin), waits until it is Ready and its
    /// ServiceAccount exists.
    async fn ready_agent(&self) -> anyhow::Result<()> {
        let ns = self.ns();
        self.scene.ready_agent(ns, &Agent::named(AGENT)).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        eventually("the agent's ServiceAccount", TIMEOUT, || async {
            Ok(accounts.get_opt(AGENT).await?.map(|_| ()))
        })
        .await
    }

    /// The identity's ApiRightsContained condition: (status, reason, message).
    async fn api_rights(&self) -> anyhow::Result<Option<(String, String, String)>> {
        let identity = Api::<AgentIdentity>::namespaced(self.client.clone(), self.ns())
            .get(AGENT)
            .await?;
        Ok(identity
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == API_RIGHTS_CONTAINED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone())))
    }

    /// Waits until ApiRightsContained is False naming every one of `expected`; its message.
    async fn reported(&self, expected: &[&str]) -> anyhow::Result<String> {
        eventually(
            &format!("ApiRightsContained=False naming {expected:?}"),
            TIMEOUT,
            || async {
                Ok(self
                    .api_rights()
                    .await?
                    .and_then(|(status, reason, message)| {
                        (status == "False"
                            && reason == "DangerousApiRights"
                            && expected.iter().all(|e| message.contains(e)))
                        .then_some(message)
                    }))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    async fn contained(&self) -> anyhow::Result<()> {
        eventually("ApiRightsContained=True", TIMEOUT, || async {
            Ok(self
                .api_rights()
                .await?
                .filter(|(status, reason, _)| status == "True" && reason == "NoDangerousRights")
                .map(|_| ()))
        })
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    /// Creates an agent pod for `bot` as the admin.
    fn create_pod(&self, name: &str) -> anyhow::Result<Output> {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"mandate.dev/agent": AGENT}},
            "spec": {"serviceAccountName": AGENT, "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "example.invalid/agent"}]},
        });
        kubectl_with_stdin(
            &["create", "-n", self.ns(), "-f", "-"],
            Some(&pod.to_string()),
        )
    }

    /// Waits until a new agent pod is refused naming DangerousApiRights (the webhook's snapshot
    /// follows the watch within milliseconds).
    async fn pod_refused(&self, name: &str) -> anyhow::Result<String> {
        eventually("the agent pod refused", TIMEOUT, || async {
            let out = self.create_pod(name)?;
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                kubectl_ok(
                    &["delete", "pod", name, "-n", self.ns(), "--wait=false"],
                    None,
                )?;
                return Ok(None);
            }
            Ok((text.contains(&format!(
                "admission webhook \"{PODS_IN_AGENT_NAMESPACES}\" denied the request"
            )) && text.contains("DangerousApiRights"))
            .then_some(text))
        })
        .await
    }

    async fn pod_admitted(&self, name: &str) -> anyhow::Result<()> {
        eventually("the agent pod admitted", TIMEOUT, || async {
            let out = self.create_pod(name)?;
            Ok(out.status.success().then_some(()))
        })
        .await
    }

    async fn event_reported(&self, reason: &str, containing: &str) -> anyhow::Result<()> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        eventually(&format!("a {reason} event"), TIMEOUT, || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.message
                            .as_deref()
                            .unwrap_or_default()
                            .contains(containing)
                });
            Ok(found.then_some(()))
        })
        .await
    }

    /// `mandate inventory -n <ns> -o json`'s agent.
    fn inventory_agent(&self) -> anyhow::Result<Value> {
        let out = Command::new(mandate_binary())
            .args(["inventory", "-n", self.ns(), "-o", "json"])
            .env("KUBECONFIG", kubeconfig_path())
            .output()?;
        let inventory: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "mandate inventory: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok(inventory["agents"][0].clone())
    }

    fn inventory_table(&self) -> anyhow::Result<String> {
        let out = Command::new(mandate_binary())
            .args(["inventory", "-n", self.ns()])
            .env("KUBECONFIG", kubeconfig_path())
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Asserts the inventory lists `right` granted through `binding` for the agent.
    fn inventory_names(&self, right: &str, binding: &str) -> anyhow::Result<()> {
        let agent = self.inventory_agent()?;
        let listed = agent["dangerousApiRights"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["right"] == right && r["binding"] == binding);
        if !listed {
            bail!("inventory does not list {right} via {binding}: {agent:#}");
        }
        let table = self.inventory_table()?;
        if !table.contains("DANGEROUS API RIGHTS (1)") {
            bail!("inventory table has no dangerous rights section:\n{table}");
        }
        Ok(())
    }

    /// Asserts the inventory lists no dangerous right for the agent.
    fn inventory_clean(&self) -> anyhow::Result<()> {
        let agent = self.inventory_agent()?;
        if agent["dangerousApiRights"] != json!([]) {
            bail!("inventory still lists dangerous rights: {agent:#}");
        }
        Ok(())
    }
}

/// kubectl as the namespace admin.
fn as_ada(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--as", ADA, "-n", ns];
    all.extend_from_slice(args);
    kubectl_ok(&all, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_admin_binding_edit_to_an_agent_is_reported_and_its_pods_refused_until_removed()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = World::start("rights-edit").await?;
    let ns = world.ns();
    world.contained().await?;
    world.pod_admitted("before").await?;

    as_ada(
        ns,
        &[
            "create",
            "rolebinding",
            "bot-edit",
            "--clusterrole=edit",
            &format!("--serviceaccount={ns}:{AGENT}"),
        ],
    )?;
    let via = format!("RoleBinding {ns}/bot-edit -> ClusterRole edit grants in {ns}: ");
    let message = world
        .reported(&[
            &via,
            "impersonate serviceaccounts",
            "create,get,list,watch secrets",
            "create pods/exec",
        ])
        .await?;
    println!("ApiRightsContained: {message}");
    world.event_reported("DangerousApiRights", &via).await?;
    let refusal = world.pod_refused("during").await?;
    assert!(refusal.contains(&via), "{refusal}");
    world.inventory_names("get secrets", &format!("RoleBinding {ns}/bot-edit"))?;
    // Ready is not what admission refuses on: the identity stays Ready, its pods are refused.
    let identity = Api::<AgentIdentity>::namespaced(world.client.clone(), ns)
        .get(AGENT)
        .await?;
    assert!(
        identity
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, READY))
    );

    as_ada(ns, &["delete", "rolebinding", "bot-edit"])?;
    world.contained().await?;
    world
        .event_reported("ApiRightsContained", "holds no dangerous")
        .await?;
    world.pod_admitted("after").await?;
    world.inventory_clean()?;
    Ok(())
}

/// Deletes cluster-scoped objects when dropped (pass or fail).
struct ClusterObjects(Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let objects = std::mem::take(&mut self.0);
        block_on_side_runtime(async move {
            for object in objects {
                let _ = kubectl_output(&["delete", &object, "--ignore-not-found"]);
            }
            Ok(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_role_binding_to_the_namespaces_service_account_group_is_reported_cluster_wide()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = World::start("rights-group").await?;
    let ns = world.ns();
    let role = format!("{ns}-secret-reader");
    let binding = format!("{ns}-accounts-read-secrets");
    let _cleanup = ClusterObjects(vec![
        format!("clusterrolebinding/{binding}"),
        format!("clusterrole/{role}"),
    ]);
    world.contained().await?;

    kubectl_ok(
        &[
            "create",
            "clusterrole",
            &role,
            "--verb=get",
            "--resource=secrets",
        ],
        None,
    )?;
    kubectl_ok(
        &[
            "create",
            "clusterrolebinding",
            &binding,
            &format!("--clusterrole={role}"),
            &format!("--group=system:serviceaccounts:{ns}"),
        ],
        None,
    )?;
    let via = format!(
        "ClusterRoleBinding {binding} -> ClusterRole {role} grants cluster-wide: get secrets"
    );
    world.reported(&[&via]).await?;
    world.pod_refused("during").await?;
    world.inventory_names("get secrets", &format!("ClusterRoleBinding {binding}"))?;

    kubectl_ok(&["delete", "clusterrolebinding", &binding], None)?;
    world.contained().await?;
    world.pod_admitted("after").await?;
    Ok(())
}

/// A kubeconfig for the local control plane that authenticates with `token` only.
fn kubeconfig_with_token(token: &str, name: &str) -> anyhow::Result<PathBuf> {
    let mut kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
    for user in kubeconfig["users"].as_array_mut().into_iter().flatten() {
        if let Some(user) = user["user"].as_object_mut() {
            user.retain(|k, _| !k.starts_with("client-"));
            user.insert("token".into(), Value::String(token.trim().to_owned()));
        }
    }
    let dir = state_dir().join(format!("api-rights-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_that_may_impersonate_service_accounts_is_reported() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = World::start("rights-impersonate").await?;
    let ns = world.ns();
    world.contained().await?;

    as_ada(
        ns,
        &[
            "create",
            "role",
            "impersonator",
            "--verb=impersonate",
            "--resource=serviceaccounts",
        ],
    )?;
    as_ada(
        ns,
        &[
            "create",
            "rolebinding",
            "bot-impersonates",
            "--role=impersonator",
            &format!("--serviceaccount={ns}:{AGENT}"),
        ],
    )?;

    // The agent's own token, as its pod would get it.
    let token = kubectl_ok(
        &["create", "token", AGENT, "-n", ns, "--duration=10m"],
        None,
    )?;
    let kubeconfig = kubeconfig_with_token(&token, "bot")?;
    let can = eventually(
        "the agent's token to be allowed to impersonate",
        TIMEOUT,
        || async {
            let out = Command::new(mandate_e2e::bin_dir()?.join("kubectl"))
                .args(["auth", "can-i", "impersonate", "serviceaccounts", "-n", ns])
                .env("KUBECONFIG", &kubeconfig)
                .output()?;
            Ok((String::from_utf8_lossy(&out.stdout).trim() == "yes").then_some(()))
        },
    )
    .await;
    let _ = std::fs::remove_file(&kubeconfig);
    can?;

    let via = format!(
        "RoleBinding {ns}/bot-impersonates -> Role {ns}/impersonator grants in {ns}: \
         impersonate serviceaccounts"
    );
    world.reported(&[&via]).await?;
    world.event_reported("DangerousApiRights", &via).await?;
    world.pod_refused("during").await?;
    world.inventory_names(
        "impersonate serviceaccounts",
        &format!("RoleBinding {ns}/bot-impersonates"),
    )?;

    as_ada(ns, &["delete", "rolebinding", "bot-impersonates"])?;
    world.contained().await?;
    world.pod_admitted("after").await?;
    Ok(())
}
