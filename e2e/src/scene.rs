//! One test's own mandate on the shared control plane, set up the way a cluster admin would:
//! the test's name, its isolation label and the operator's options in; out, a [`Scene`] with
//! the operator, its webhooks registered only for namespaces carrying the test's isolation
//! label, and namespaces, users' rights and Ready agents made with kubectl as the admin.
//! Dropping the scene unregisters the webhooks first, then stops the operator.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};
use mandate::api::AgentIdentity;
use mandate::api::conditions::{READY, is_true};

use crate::admission::{RegisteredWebhooks, register_isolated};
use crate::operator::{Operator, OperatorOptions};
use crate::resources::install_crds;
use crate::{TestNamespace, client, eventually, kubectl_ok, kubectl_with_stdin};

/// How long a scene waits for the API server or the operator to reach a state.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A test's operator and the webhooks scoped to its namespaces.
pub struct Scene {
    pub client: Client,
    /// The value of the isolation label on this test's namespaces.
    pub run: String,
    isolation_label: &'static str,
    // Fields drop in order: the webhooks go before the operator that answers them.
    _webhooks: RegisteredWebhooks,
    pub operator: Operator,
}

impl Scene {
    /// Installs the CRDs, starts an operator with `options` and registers its webhooks for
    /// namespaces labelled `isolation_label: <test>-<pid>`.
    pub async fn start(
        test: &str,
        isolation_label: &'static str,
        options: OperatorOptions,
    ) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let run = format!("{test}-{}", std::process::id());
        let operator = Operator::start(options).await?;
        let webhooks = register_isolated(&client, &operator, isolation_label, &run).await?;
        Ok(Scene {
            client,
            run,
            isolation_label,
            _webhooks: webhooks,
            operator,
        })
    }

    /// A namespace in this scene's scope, opted in with `mode` (`None`: not opted in), once its
    /// default ServiceAccount exists (pods are refused by the API server until it does).
    pub async fn namespace(
        &self,
        prefix: &str,
        mode: Option<&str>,
    ) -> anyhow::Result<TestNamespace> {
        let mut labels = vec![(self.isolation_label, self.run.as_str())];
        if let Some(mode) = mode {
            labels.push(("mandate.dev/mode", mode));
        }
        let ns = TestNamespace::create(&self.client, prefix, &labels).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns.name);
        eventually(
            &format!("the default ServiceAccount in {}", ns.name),
            TIMEOUT,
            || async { Ok(accounts.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(ns)
    }

    /// Applies `agent` (as the admin) and waits until it is Ready with its one tool. The binding
    /// is applied again until the webhook's cache knows the identity (README: it is judged
    /// from a watch cache a few milliseconds behind).
    pub async fn ready_agent(&self, ns: &str, agent: &Agent) -> anyhow::Result<()> {
        let Agent {
            name,
            owner,
            class,
            binding,
            tool,
        } = agent;
        let class = class
            .as_deref()
            .map(|class| format!("  class: {class}\n"))
            .unwrap_or_default();
        let identity = format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: AgentIdentity\nmetadata: {{name: {name}}}\n\
             spec:\n  owner: {{kind: User, name: {owner}}}\n{class}  purpose: end-to-end test\n"
        );
        let binding_yaml = format!(
            "apiVersion: mandate.dev/v1alpha1\nkind: ToolBinding\n\
             metadata: {{name: {binding}}}\nspec:\n  agent: {name}\n  tools:\n  \
             - name: {tool}\n    actions: [read]\n    \
             destination: {{external: {{cidrs: [203.0.113.0/24], ports: [443]}}}}\n"
        );
        kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&identity))?;
        eventually(
            &format!("ToolBinding {ns}/{binding} admitted"),
            TIMEOUT,
            || async {
                let out = kubectl_with_stdin(&["apply", "-n", ns, "-f", "-"], Some(&binding_yaml))?;
                Ok(out.status.success().then_some(()))
            },
        )
        .await?;
        let identities: Api<AgentIdentity> = Api::namespaced(self.client.clone(), ns);
        eventually(
            &format!("AgentIdentity {ns}/{name} Ready with its tool"),
            TIMEOUT,
            || async {
                let identity = identities.get(name).await?;
                let ready = identity
                    .status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, READY) && s.tool_count == 1);
                Ok(ready.then_some(()))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.operator.log()))
    }
}

/// An agent as [`Scene::ready_agent`] applies it: an identity and one binding of one narrow,
/// Low-risk, read-only external tool (203.0.113.0/24:443).
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub owner: String,
    pub class: Option<String>,
    pub binding: String,
    pub tool: String,
}

impl Agent {
    /// `name`, owned by user `olivia`, holding tool `search` through binding `<name>-tools`.
    pub fn named(name: &str) -> Self {
        Agent {
            name: name.to_owned(),
            owner: "olivia".to_owned(),
            class: None,
            binding: format!("{name}-tools"),
            tool: "search".to_owned(),
        }
    }

    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = owner.to_owned();
        self
    }

    pub fn of_class(mut self, class: &str) -> Self {
        self.class = Some(class.to_owned());
        self
    }

    /// Holds `tool` through binding `binding` instead.
    pub fn holding(mut self, binding: &str, tool: &str) -> Self {
        self.binding = binding.to_owned();
        self.tool = tool.to_owned();
        self
    }
}

/// Binds ClusterRole `cluster_role` to `users` in namespace `ns` (RoleBinding `binding`).
pub fn grant_cluster_role(
    ns: &str,
    binding: &str,
    cluster_role: &str,
    users: &[&str],
) -> anyhow::Result<()> {
    let role = format!("--clusterrole={cluster_role}");
    bind(ns, binding, &role, users)
}

/// Creates Role `role` in `ns` allowing `verbs` on `resources` (comma-separated, as kubectl
/// takes them) and binds it to `users` (RoleBinding of the same name).
pub fn grant(
    ns: &str,
    role: &str,
    verbs: &str,
    resources: &str,
    users: &[&str],
) -> anyhow::Result<()> {
    let verbs = format!("--verb={verbs}");
    let resources = format!("--resource={resources}");
    kubectl_ok(
        &["create", "role", role, &verbs, &resources, "-n", ns],
        None,
    )?;
    bind(ns, role, &format!("--role={role}"), users)
}

fn bind(ns: &str, binding: &str, role: &str, users: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["create", "rolebinding", binding, role, "-n", ns];
    for user in users {
        args.extend(["--user", user]);
    }
    kubectl_ok(&args, None).map(|_| ())
}
