//! Four eyes and self-escalation (issue 14) on the real control plane, each attack made with
//! kubectl as the user who would make it: a namespace developer `dev` (the built-in `edit` role
//! plus the verbs on mandate.dev kinds, since this control plane runs no ClusterRole
//! aggregation), the agent's owner `alice` (herself an approver), approvers `bob` and `carol`
//! (`--as-group mandate:approvers`), and the cluster admin.
//!
//! - risk is not what a tool declares: a tool declared Low whose CIDRs reach every IPv4 address,
//!   or whose pods destination picks every namespace or every pod, is High by the risk floor and
//!   refused without an approval (MissingApproval); approved, its binding says so (RISK High);
//! - an owner change is four eyes: neither the old nor the new owner may make it (FourEyes), an
//!   approver who is neither may; it voids the approvals given before (the High-risk binding
//!   turns Invalid, its tool and its network path are withdrawn) until an approver re-approves
//!   for the new owner, and changing the owner back voids that approval again;
//! - only mandate writes the status of its kinds: `kubectl patch --subresource=status` by the
//!   developer (with a Role granting it) and by the cluster admin is refused (ProtectedStatus),
//!   while the operator, running as a ServiceAccount of its own, keeps writing statuses.
//!
//! Tests here run one at a time (each starts its own operator), serialised by `SERIAL`.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use mandate::api::conditions::{ACCEPTED, READY, is_true};
use mandate::api::{AgentIdentity, Risk, ToolBinding, ToolBindingPhase};
use mandate_e2e::admission::MANDATE_RESOURCES;
use mandate_e2e::operator::{OPERATOR_NAMESPACE, OperatorOptions};
use mandate_e2e::resources::rfc3339_from_now;
use mandate_e2e::scene::{Agent, Scene, grant, grant_cluster_role};
use mandate_e2e::{
    TestNamespace, eventually, kubeconfig_path, kubectl_ok, kubectl_output, kubectl_with_stdin,
    state_dir,
};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);
const ISOLATION_LABEL: &str = "e2e.mandate.dev/four-eyes";
const APPROVERS: &str = "mandate:approvers";
const DEV: &str = "dev";

/// Who sends a request: a user and the groups kubectl impersonates.
#[derive(Clone, Copy)]
struct As {
    user: &'static str,
    groups: &'static [&'static str],
}

const DEVELOPER: As = As {
    user: DEV,
    groups: &[],
};
const ALICE: As = As {
    user: "alice",
    groups: &[APPROVERS],
};
const BOB: As = As {
    user: "bob",
    groups: &[APPROVERS],
};
const CAROL: As = As {
    user: "carol",
    groups: &[APPROVERS],
};

impl As {
    /// kubectl as this user in `ns`.
    fn kubectl(self, ns: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut all = vec!["--as", self.user, "-n", ns];
        for group in self.groups {
            all.extend(["--as-group", group]);
        }
        all.extend_from_slice(args);
        kubectl_with_stdin(&all, stdin)
    }
}

/// A ServiceAccount the operator runs as (bound to cluster-admin), so the cluster admin is not
/// mandate: removed with its binding when dropped.
struct OperatorAccount {
    name: String,
    kubeconfig: PathBuf,
}

impl OperatorAccount {
    fn create(name: &str) -> anyhow::Result<Self> {
        let yaml = kubectl_ok(
            &[
                "create",
                "namespace",
                OPERATOR_NAMESPACE,
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        )?;
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml))?;
        kubectl_ok(
            &["create", "serviceaccount", name, "-n", OPERATOR_NAMESPACE],
            None,
        )?;
        let account = OperatorAccount {
            name: name.to_owned(),
            kubeconfig: state_dir().join(format!("{name}.kubeconfig")),
        };
        kubectl_ok(
            &[
                "create",
                "clusterrolebinding",
                name,
                "--clusterrole=cluster-admin",
                &format!("--serviceaccount={OPERATOR_NAMESPACE}:{name}"),
            ],
            None,
        )?;
        let token = kubectl_ok(
            &[
                "create",
                "token",
                name,
                "-n",
                OPERATOR_NAMESPACE,
                "--duration=2h",
            ],
            None,
        )?;
        let admin: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "mandate", "user": {"token": token.trim()}}],
            "contexts": [{"name": "mandate", "context": {"cluster": "local", "user": "mandate"}}],
            "current-context": "mandate",
        });
        std::fs::write(&account.kubeconfig, serde_yaml::to_string(&kubeconfig)?)?;
        Ok(account)
    }

    fn username(&self) -> String {
        format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{}", self.name)
    }
}

impl Drop for OperatorAccount {
    fn drop(&mut self) {
        for args in [
            vec![
                "delete",
                "clusterrolebinding",
                &self.name,
                "--ignore-not-found",
            ],
            vec![
                "delete",
                "serviceaccount",
                &self.name,
                "-n",
                OPERATOR_NAMESPACE,
                "--ignore-not-found",
            ],
        ] {
            if let Err(e) = kubectl_ok(&args, None) {
                eprintln!("cleaning up the operator's account: {e:#}");
            }
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The operator (as its own ServiceAccount), its webhooks scoped to this test's namespaces, and
/// the admin client. Dropped in field order: webhooks first, then the operator, then its
/// account.
struct FourEyes {
    scene: Scene,
    account: OperatorAccount,
}

impl std::ops::Deref for FourEyes {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl FourEyes {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let account = OperatorAccount::create(&format!("mandate-{test}-{}", std::process::id()))?;
        let mut options = OperatorOptions::unique();
        options.kubeconfig = Some(account.kubeconfig.clone());
        let scene = Scene::start(test, ISOLATION_LABEL, options).await?;
        Ok(FourEyes { scene, account })
    }

    /// An enforce namespace in this test's scope where `dev` holds `edit`, and every user here
    /// the verbs on mandate.dev kinds (no aggregation adds them to `edit`).
    async fn namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        let ns = self.scene.namespace(prefix, Some("enforce")).await?;
        grant_cluster_role(&ns.name, "dev-edit", "edit", &[DEV])?;
        grant(
            &ns.name,
            "mandate-editor",
            "get,list,watch,create,update,patch,delete",
            "agentidentities.mandate.dev,toolbindings.mandate.dev,delegationpolicies.mandate.dev",
            &[DEV, "alice", "bob", "carol"],
        )?;
        Ok(ns)
    }

    /// Applies (as the admin) identity `name` of `class` owned by user `owner`, holding the
    /// narrow Low tool `status-page` through binding `<name>-status`, and waits until it is
    /// Ready: the webhook's cache then knows it.
    async fn ready_agent(
        &self,
        ns: &str,
        name: &str,
        class: &str,
        owner: &str,
    ) -> anyhow::Result<()> {
        let agent = Agent::named(name)
            .owned_by(owner)
            .of_class(class)
            .holding(&format!("{name}-status"), "status-page");
        self.scene.ready_agent(ns, &agent).await
    }

    async fn wait_identity(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        done: impl Fn(&AgentIdentity) -> bool,
    ) -> anyhow::Result<()> {
        let identities: Api<AgentIdentity> = Api::namespaced(self.client.clone(), ns);
        eventually(
            &format!("AgentIdentity {ns}/{name} {what}"),
            TIMEOUT,
            || async { Ok(done(&identities.get(name).await?).then_some(())) },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    /// Waits until ToolBinding `name` reports `phase` for its current generation; returns it.
    async fn wait_binding(
        &self,
        ns: &str,
        name: &str,
        phase: ToolBindingPhase,
    ) -> anyhow::Result<ToolBinding> {
        let bindings: Api<ToolBinding> = Api::namespaced(self.client.clone(), ns);
        eventually(
            &format!("ToolBinding {ns}/{name} {phase:?}"),
            TIMEOUT,
            || async {
                let binding = bindings.get(name).await?;
                let status = binding.status.as_ref();
                let current = status.is_some_and(|s| {
                    s.phase == Some(phase) && s.observed_generation == binding.metadata.generation
                });
                Ok(current.then_some(binding))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }

    /// Whether `mandate-<agent>` opens egress to `cidr`.
    async fn egress_reaches(&self, ns: &str, agent: &str, cidr: &str) -> anyhow::Result<bool> {
        let policy = Api::<NetworkPolicy>::namespaced(self.client.clone(), ns)
            .get(&format!("mandate-{agent}"))
            .await?;
        let egress = serde_json::to_string(&policy.spec.and_then(|s| s.egress))?;
        Ok(egress.contains(&format!("\"cidr\":\"{cidr}\"")))
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless `out` is the refusal of mandate's resources webhook naming every one of `codes`;
/// returns the message.
fn refused(out: &Output, codes: &[&str]) -> anyhow::Result<String> {
    let text = stderr(out);
    let by_mandate = text.contains(&format!(
        "admission webhook \"{MANDATE_RESOURCES}\" denied the request"
    ));
    if out.status.success() || !by_mandate || !codes.iter().all(|c| text.contains(c)) {
        bail!(
            "expected {MANDATE_RESOURCES} to refuse with {codes:?}; got {:?}: {text}",
            out.status
        );
    }
    Ok(text)
}

fn admitted(out: &Output) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!("expected the request to be admitted: {}", stderr(out));
    }
    Ok(())
}

/// A ToolBinding `name` for `agent` with one tool `tool` (`destination` as YAML flow) declared
/// Low, `extra` lines appended to its spec.
fn binding_yaml(name: &str, agent: &str, tool: &str, destination: &str, extra: &str) -> String {
    format!(
        "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: {name}}}\n\
         spec:\n  agent: {agent}\n  tools:\n  - name: {tool}\n    actions: [read]\n    \
         risk: Low\n    destination: {destination}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_declared_low_that_reaches_too_much_needs_an_approval_like_a_high_one()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = FourEyes::start("eyes-floor").await?;
    let ns = mandate.namespace("eyes-floor").await?;
    let n = ns.name.as_str();
    mandate
        .ready_agent(n, "researcher", "ReadOnly", "alice")
        .await?;

    // The developer grants the whole IPv4 internet in two halves, declared Low.
    let halves = "{external: {cidrs: [0.0.0.0/1, 128.0.0.0/1], ports: [443]}}";
    let open_web = binding_yaml("open-web", "researcher", "web", halves, "");
    let out = DEVELOPER.kubectl(n, &["apply", "-f", "-"], Some(&open_web))?;
    let message = refused(&out, &["MissingApproval", "FourEyes", "HighRiskValidity"])?;
    assert!(
        message.contains(
            "tool web is High by the risk floor (its CIDRs reach 4,294,967,296 IPv4 addresses, \
             more than a /16 holds) though declared Low"
        ),
        "{message}"
    );
    // Pods in every namespace, and every pod of its own namespace: the same.
    let everywhere = binding_yaml(
        "peers",
        "researcher",
        "peers",
        "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: peer}}, ports: [8080]}}",
        "",
    );
    let out = DEVELOPER.kubectl(n, &["apply", "-f", "-"], Some(&everywhere))?;
    let message = refused(&out, &["MissingApproval"])?;
    assert!(message.contains("so it picks every namespace"), "{message}");
    let every_pod = binding_yaml(
        "neighbours",
        "researcher",
        "neighbours",
        "{pods: {podSelector: {}, ports: [8080]}}",
        "",
    );
    let out = DEVELOPER.kubectl(n, &["apply", "-f", "-"], Some(&every_pod))?;
    let message = refused(&out, &["MissingApproval"])?;
    assert!(
        message.contains("so it picks every pod of the ToolBinding's namespace"),
        "{message}"
    );
    // A narrow tool declared Low stays Low: the developer may grant it.
    let narrow = binding_yaml(
        "narrow",
        "researcher",
        "docs",
        "{external: {cidrs: [198.51.100.0/24], ports: [443]}}",
        "",
    );
    admitted(&DEVELOPER.kubectl(n, &["apply", "-f", "-"], Some(&narrow))?)?;

    // Approved like any High-risk tool, by an approver for the owner, it is admitted, and its
    // status and `kubectl get` show the effective risk and why.
    let approval = format!(
        "  validUntil: \"{}\"\n  approval: {{approvedBy: carol, forOwner: {{kind: User, name: alice}}, \
         reason: SEC-9 web research}}\n",
        rfc3339_from_now(4 * 3600)?
    );
    let approved = binding_yaml("open-web", "researcher", "web", halves, &approval);
    admitted(&CAROL.kubectl(n, &["apply", "-f", "-"], Some(&approved))?)?;
    let binding = mandate
        .wait_binding(n, "open-web", ToolBindingPhase::Active)
        .await?;
    let status = binding.status.unwrap_or_default();
    assert_eq!(status.risk, Some(Risk::High));
    assert_eq!(
        status.risk_floor,
        ["web: its CIDRs reach 4,294,967,296 IPv4 addresses, more than a /16 holds"]
    );
    mandate
        .wait_binding(n, "narrow", ToolBindingPhase::Active)
        .await?;
    let table = kubectl_ok(&["get", "tb", "open-web", "narrow", "-n", n], None)?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..4], ["NAME", "AGENT", "PHASE", "RISK"], "{table}");
    assert_eq!(
        rows[1][..4],
        ["open-web", "researcher", "Active", "High"],
        "{table}"
    );
    assert_eq!(
        rows[2][..4],
        ["narrow", "researcher", "Active", "Low"],
        "{table}"
    );
    mandate
        .wait_identity(n, "researcher", "holding web as High", |i| {
            i.status.as_ref().is_some_and(|s| {
                s.tools
                    .iter()
                    .any(|t| t.name == "web" && t.risk == Risk::High)
            })
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_change_takes_an_approver_who_is_neither_owner_and_voids_every_approval()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = FourEyes::start("eyes-owner").await?;
    let ns = mandate.namespace("eyes-owner").await?;
    let n = ns.name.as_str();
    mandate
        .ready_agent(n, "payer", "TransactionExecutor", "alice")
        .await?;
    let ledger = "198.51.100.0/24";
    let payments = |approver: &str, for_owner: &str| -> anyhow::Result<String> {
        Ok(format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\nmetadata: {{name: payments}}\n\
             spec:\n  agent: payer\n  tools:\n  - name: ledger\n    actions: [read, write]\n    \
             risk: High\n    destination: {{external: {{cidrs: [{ledger}], ports: [443]}}}}\n  \
             validUntil: \"{}\"\n  approval: {{approvedBy: {approver}, forOwner: {{kind: User, \
             name: {for_owner}}}, reason: FIN-1 quarter close}}\n",
            rfc3339_from_now(4 * 3600)?
        ))
    };

    // alice owns payer: she may not approve for it, whichever owner she names.
    let out = ALICE.kubectl(n, &["apply", "-f", "-"], Some(&payments("alice", "alice")?))?;
    let message = refused(&out, &["FourEyes"])?;
    assert!(
        message.contains("alice owns AgentIdentity payer"),
        "{message}"
    );
    let out = ALICE.kubectl(n, &["apply", "-f", "-"], Some(&payments("alice", "bob")?))?;
    let message = refused(&out, &["FourEyes", "MissingApproval"])?;
    assert!(
        message.contains("approved for User bob; the owner is now User alice"),
        "{message}"
    );
    // carol approves it for alice: live, and the agent's NetworkPolicy reaches the ledger.
    admitted(&CAROL.kubectl(n, &["apply", "-f", "-"], Some(&payments("carol", "alice")?))?)?;
    mandate
        .wait_binding(n, "payments", ToolBindingPhase::Active)
        .await?;
    mandate
        .wait_identity(n, "payer", "holding ledger", |i| {
            i.status.as_ref().is_some_and(|s| s.tool_count == 2)
        })
        .await?;
    assert!(mandate.egress_reaches(n, "payer", ledger).await?);

    // Neither the old owner nor the new one may change the owner, nor a non-approver.
    let to = |owner: &str| format!(r#"{{"spec":{{"owner":{{"kind":"User","name":"{owner}"}}}}}}"#);
    let patch_owner = |who: As, owner: &str| {
        who.kubectl(
            n,
            &["patch", "agent", "payer", "--type=merge", "-p", &to(owner)],
            None,
        )
    };
    let message = refused(&patch_owner(ALICE, "bob")?, &["FourEyes"])?;
    assert!(
        message.contains(
            "alice owns AgentIdentity payer, and changes of owner (User alice to User bob) need \
             an approver who is neither the agent's owner before nor after the change"
        ),
        "{message}"
    );
    let message = refused(&patch_owner(BOB, "bob")?, &["FourEyes"])?;
    assert!(
        message.contains("bob owns AgentIdentity payer"),
        "{message}"
    );
    let message = refused(&patch_owner(DEVELOPER, "bob")?, &["FourEyes"])?;
    assert!(
        message.contains("must be granted by a member of group mandate:approvers"),
        "{message}"
    );

    // carol, an approver who is neither, hands payer to bob: admitted, and alice's approval
    // stops counting at once: the binding grants nothing, the tool and its network path go.
    admitted(&patch_owner(CAROL, "bob")?)?;
    let binding = mandate
        .wait_binding(n, "payments", ToolBindingPhase::Invalid)
        .await?;
    let accepted = binding
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ACCEPTED))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        accepted.contains(
            "MissingApproval: tool ledger is High risk: approved for User alice; the owner is now \
             User bob: an approver who is not the owner re-approves"
        ),
        "{accepted}"
    );
    mandate
        .wait_identity(n, "payer", "without ledger", |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.tool_count == 1 && s.tools.iter().all(|t| t.name != "ledger"))
        })
        .await?;
    eventually("the ledger to leave payer's egress", TIMEOUT, || async {
        Ok((!mandate.egress_reaches(n, "payer", ledger).await?).then_some(()))
    })
    .await?;

    // carol re-approves for bob: live again.
    admitted(&CAROL.kubectl(n, &["apply", "-f", "-"], Some(&payments("carol", "bob")?))?)?;
    mandate
        .wait_binding(n, "payments", ToolBindingPhase::Active)
        .await?;
    eventually("the ledger back in payer's egress", TIMEOUT, || async {
        Ok(mandate
            .egress_reaches(n, "payer", ledger)
            .await?
            .then_some(()))
    })
    .await?;

    // Handing payer back to alice does not carry bob's approval with it.
    admitted(&patch_owner(CAROL, "alice")?)?;
    mandate
        .wait_binding(n, "payments", ToolBindingPhase::Invalid)
        .await?;
    eventually(
        "the ledger to leave payer's egress again",
        TIMEOUT,
        || async { Ok((!mandate.egress_reaches(n, "payer", ledger).await?).then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mandate_writes_the_status_of_its_kinds() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = FourEyes::start("eyes-status").await?;
    let ns = mandate.namespace("eyes-status").await?;
    let n = ns.name.as_str();
    // The developer may write identities' and bindings' status as far as RBAC goes.
    kubectl_ok(
        &[
            "create",
            "role",
            "status-writer",
            "--verb=get,update,patch",
            "--resource=agentidentities.mandate.dev/status,toolbindings.mandate.dev/status",
            "-n",
            n,
        ],
        None,
    )?;
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "status-writer",
            "--role=status-writer",
            "--user",
            DEV,
            "-n",
            n,
        ],
        None,
    )?;
    // mandate writes statuses as its own ServiceAccount: the researcher becomes Ready.
    mandate
        .ready_agent(n, "researcher", "ReadOnly", "alice")
        .await?;
    // An identity without tools: not Ready, which is what an attacker would want to change.
    kubectl_ok(
        &["apply", "-n", n, "-f", "-"],
        Some(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {name: idle}\n\
             spec:\n  owner: {kind: User, name: alice}\n  purpose: holds nothing yet\n",
        ),
    )?;
    mandate
        .wait_identity(n, "idle", "reported without tools", |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.observed_generation.is_some() && !is_true(&s.conditions, READY))
        })
        .await?;

    let ready = r#"{"status":{"toolCount":3,"conditions":[{"type":"Ready","status":"True","reason":"Applied","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    let patch_status = |kind: &str, name: &str, body: &str, who: Option<&str>| {
        let mut args = vec!["patch", kind, name, "-n", n, "--subresource=status"];
        args.extend(["--type=merge", "-p", body]);
        if let Some(who) = who {
            args.extend(["--as", who]);
        }
        kubectl_output(&args)
    };
    // The developer, allowed by RBAC, and the cluster admin, allowed everything: refused.
    for who in [Some(DEV), None] {
        let out = patch_status("agent", "idle", ready, who)?;
        let message = refused(&out, &["ProtectedStatus"])?;
        assert!(
            message.contains("is not mandate") && message.contains(&mandate.account.username()),
            "{message}"
        );
    }
    let active = r#"{"status":{"phase":"Active"}}"#;
    refused(
        &patch_status("tb", "researcher-status", active, None)?,
        &["ProtectedStatus"],
    )?;
    mandate
        .ready_agent(n, "helper", "ReadOnly", "alice")
        .await?;
    kubectl_ok(
        &["apply", "-n", n, "-f", "-"],
        Some(
            "apiVersion: mandate.dev/v1alpha1\nkind: DelegationPolicy\nmetadata: {name: hands-off}\n\
             spec:\n  delegator: researcher\n  delegates:\n  - {agent: helper, tools: [status-page]}\n",
        ),
    )?;
    refused(
        &patch_status("dp", "hands-off", r#"{"status":{"violations":[]}}"#, None)?,
        &["ProtectedStatus"],
    )?;
    let identities: Api<AgentIdentity> = Api::namespaced(mandate.client.clone(), n);
    let idle = identities.get("idle").await?;
    assert!(
        !idle
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, READY)),
        "idle was marked Ready: {:?}",
        idle.status
    );

    // mandate's own status writes still pass: a spec change is reported for its generation.
    kubectl_ok(
        &[
            "patch",
            "agent",
            "idle",
            "-n",
            n,
            "--type=merge",
            "-p",
            r#"{"spec":{"purpose":"holds nothing, still"}}"#,
        ],
        None,
    )?;
    let generation = identities.get("idle").await?.metadata.generation;
    mandate
        .wait_identity(n, "idle", "reported for its new generation", |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == generation)
        })
        .await?;
    // The webhook judged mandate's own status writes, and let every one of them through.
    let operator = mandate.account.username();
    let own_status_writes: Vec<Value> = mandate
        .operator
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["message"] == "admission decision"
                && line["subresource"] == "status"
                && line["user"] == operator.as_str()
        })
        .collect();
    assert!(
        !own_status_writes.is_empty(),
        "no status write of mandate's reached the webhook"
    );
    assert!(
        own_status_writes.iter().all(|w| w["allowed"] == true),
        "mandate's own status writes were refused: {own_status_writes:#?}"
    );
    Ok(())
}
