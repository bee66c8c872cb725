//! mandate's ValidatingWebhookConfiguration and MutatingWebhookConfiguration, as DESIGN section 3
//! scopes them: the operator's webhook URL, its CA bundle, mandate's own namespace and an
//! isolation label in; the configurations out, plus a guard that registers them on the control
//! plane and deletes them again.
//! The Helm chart renders the same webhooks (with a Service instead of a URL): keep the two in
//! step, webhook by webhook.
//!
//! Thirteen webhooks, each with its own name (the API server prefixes the audit annotations with it,
//! so `pods.namespaces.mandate.dev/decision` says which scope judged a pod) and its own path:
//!
//! - `pods.namespaces.mandate.dev`: every pod in a namespace labelled `mandate.dev/mode`
//!   (`/validate/pods`, Fail);
//! - `pods.agents.mandate.dev`: pods labelled `mandate.dev/agent` in every other namespace
//!   (`/validate/pods`, Fail);
//! - `workloads.mandate.dev`: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
//!   CronJobs everywhere (`/validate/workloads`, Ignore: warnings only);
//! - `secrets.namespaces.mandate.dev`: legacy service-account-token Secrets in labelled
//!   namespaces (`/validate`, Fail);
//! - `secrets.mandate.dev`: the same in every other namespace (`/validate`, Ignore);
//! - `resources.mandate.dev`: AgentIdentities, ToolBindings and DelegationPolicies and their
//!   status everywhere (`/validate/mandate`, Fail: each of them concerns an agent);
//! - `credentials.namespaces.mandate.dev`: TokenRequests (`serviceaccounts/token`) and updates
//!   of legacy token Secrets in labelled namespaces (`/validate`, Fail);
//! - `credentials.mandate.dev`: the same in every other namespace (`/validate`, Ignore);
//! - `connect.namespaces.mandate.dev`: CONNECT (`kubectl exec`, `attach`, `port-forward`, the
//!   pod proxy) to pods in labelled namespaces (`/validate/pods`, Fail);
//! - `connect.mandate.dev`: the same in every other namespace (`/validate/pods`, Ignore).
//! - `networkpolicies.namespaces.mandate.dev`: NetworkPolicies written or deleted and
//!   ServiceAccounts deleted in labelled namespaces (`/validate`, Fail: foreign policies and the
//!   deletion of mandate's projections);
//! - `projections.mandate.dev`: the deletion of NetworkPolicies and ServiceAccounts labelled as
//!   mandate's in every other namespace (`/validate`, Fail: only mandate's objects match).
//! - `namespaces.mandate.dev`: changes of the `mandate.dev/mode` label of namespaces that are
//!   (or were) labelled (`/validate`, Fail: only opted-in namespaces match; `NoneOnDryRun`, as
//!   a weakening let through is recorded).
//!
//!
//! And the MutatingWebhookConfiguration of the same name ([`mutating_webhook_configuration`]):
//! `tool-tokens.namespaces.mandate.dev` and `tool-tokens.agents.mandate.dev`, pod CREATEs
//! scoped as the two pod webhooks (`/mutate/pods`, Fail, reinvocationPolicy IfNeeded), which
//! give each agent pod one projected token per live tool.
//!
//! "Every namespace" always leaves out kube-system, kube-node-lease and mandate's own namespace,
//! so a broken mandate can neither stop the cluster nor stop its own repair.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mandate::api::{AGENT_LABEL, MODE_LABEL};
use mandate::webhook::mutate::MUTATE_PODS_PATH;
use mandate::webhook::server::{
    VALIDATE_MANDATE_PATH, VALIDATE_PATH, VALIDATE_PODS_PATH, VALIDATE_WORKLOADS_PATH,
};
use serde_json::{Value, json};

/// Pods in namespaces that opted in with `mandate.dev/mode`: every pod there is an agent pod.
pub const PODS_IN_AGENT_NAMESPACES: &str = "pods.namespaces.mandate.dev";
/// Pods labelled `mandate.dev/agent` in namespaces that did not opt in (judged in the
/// installation's default mode).
pub const AGENT_PODS_ELSEWHERE: &str = "pods.agents.mandate.dev";
/// Workload templates: warnings at apply time, never a denial.
pub const WORKLOADS: &str = "workloads.mandate.dev";
/// Legacy service-account-token Secrets in namespaces that opted in.
pub const SECRETS_IN_AGENT_NAMESPACES: &str = "secrets.namespaces.mandate.dev";
/// Legacy service-account-token Secrets everywhere else.
pub const SECRETS_ELSEWHERE: &str = "secrets.mandate.dev";
/// mandate's own resources.
pub const MANDATE_RESOURCES: &str = "resources.mandate.dev";
/// TokenRequests and updates of legacy token Secrets in namespaces that opted in.
pub const CREDENTIALS_IN_AGENT_NAMESPACES: &str = "credentials.namespaces.mandate.dev";
/// TokenRequests and updates of legacy token Secrets everywhere else.
pub const CREDENTIALS_ELSEWHERE: &str = "credentials.mandate.dev";
/// exec, attach, port-forward and proxy into pods in namespaces that opted in.
pub const CONNECT_IN_AGENT_NAMESPACES: &str = "connect.namespaces.mandate.dev";
/// exec, attach, port-forward and proxy into pods everywhere else.
pub const CONNECT_ELSEWHERE: &str = "connect.mandate.dev";

/// NetworkPolicies written or deleted, and ServiceAccounts deleted, in namespaces that opted in.
pub const NETWORK_IN_AGENT_NAMESPACES: &str = "networkpolicies.namespaces.mandate.dev";
/// The deletion of mandate's projections everywhere else.
pub const PROJECTIONS_ELSEWHERE: &str = "projections.mandate.dev";
/// Changes of a namespace's `mandate.dev/mode` (weakening it needs an approver).
pub const NAMESPACE_MODES: &str = "namespaces.mandate.dev";

/// The CEL condition of [`NAMESPACE_MODES`]: the label's value (or its absence) changes.
pub const MODE_LABEL_CHANGES: &str = "(has(oldObject.metadata.labels) && 'mandate.dev/mode' in oldObject.metadata.labels ? oldObject.metadata.labels['mandate.dev/mode'] : '') != (has(object.metadata.labels) && 'mandate.dev/mode' in object.metadata.labels ? object.metadata.labels['mandate.dev/mode'] : '')";

/// Mutating: every pod created in a namespace that opted in gets one token per live tool.
pub const TOOL_TOKENS_IN_AGENT_NAMESPACES: &str = "tool-tokens.namespaces.mandate.dev";
/// Mutating: agent-labelled pods created everywhere else get one token per live tool.
pub const TOOL_TOKENS_ELSEWHERE: &str = "tool-tokens.agents.mandate.dev";

/// Namespaces no webhook ever looks at, besides mandate's own.
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-node-lease"];
/// How long the API server waits for an answer. Short: the webhook answers from memory in
/// well under a millisecond, and a slow webhook on the pod path stalls every controller.
pub const TIMEOUT_SECONDS: i32 = 5;

/// What the configuration is built from.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Name of the ValidatingWebhookConfiguration (cluster-scoped: make it unique in tests).
    pub name: String,
    /// Where the operator serves the webhook, without a path (`https://127.0.0.1:9443`). The
    /// chart uses `clientConfig.service` with the same paths instead.
    pub base_url: String,
    /// PEM of the CA that signed the webhook's serving certificate.
    pub ca_bundle: Vec<u8>,
    /// mandate's own namespace (the operator's `--namespace`), never reviewed.
    pub own_namespace: String,
    /// Labels every reviewed namespace must also carry. Empty in an installation; tests set a
    /// label unique to them so their webhooks never see another test's (or engineer's)
    /// namespaces.
    pub isolation: BTreeMap<String, String>,
}

impl WebhookSettings {
    /// Settings for mandate's default namespace and no isolation.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>, ca_bundle: &[u8]) -> Self {
        WebhookSettings {
            name: name.into(),
            base_url: base_url.into(),
            ca_bundle: ca_bundle.to_vec(),
            own_namespace: mandate::admission::snapshot::DEFAULT_NAMESPACE.to_owned(),
            isolation: BTreeMap::new(),
        }
    }

    /// Also require `key=value` on every reviewed namespace.
    #[must_use]
    pub fn isolated_by(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.isolation.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn own_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.own_namespace = namespace.into();
        self
    }
}

/// mandate's ValidatingWebhookConfiguration for `settings` (the ten webhooks listed above).
pub fn webhook_configuration(
    settings: &WebhookSettings,
) -> anyhow::Result<ValidatingWebhookConfiguration> {
    let namespaces = |opted_in: Option<bool>| namespace_selector(settings, opted_in);
    let webhook = |name: &str, path: &str, failure_policy: &str, rest: Value| {
        webhook_entry(settings, name, path, failure_policy, rest)
    };
    // Pods, ephemeral containers added to them later (`kubectl debug`), which could otherwise
    // smuggle in what the pod rules refuse, and the status subresource, through which a pod's
    // labels change too (the reviewer judges a status update only when the agent label changes).
    let pod_rules = json!([{
        "apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["pods", "pods/ephemeralcontainers", "pods/status"],
        "scope": "Namespaced",
    }]);
    // Only legacy token Secrets: mandate never needs to see any other Secret, not even its
    // metadata, and Secrets are created all the time (Helm releases, TLS, ...).
    let secret_rules = json!([{
        "apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["secrets"],
        "scope": "Namespaced",
    }]);
    let token_secrets_only = json!([{
        "name": "service-account-token",
        "expression": "has(object.type) && object.type == 'kubernetes.io/service-account-token'",
    }]);

    // TokenRequests for agents' ServiceAccounts (TokenTTL), and updates that could retarget a
    // legacy token Secret at one (LongLivedToken); of Secrets, again only token Secrets.
    let credential_rules = json!([
        {
            "apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["serviceaccounts/token"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["secrets"],
            "scope": "Namespaced",
        },
    ]);
    let token_requests_or_token_secrets = json!([{
        "name": "token-request-or-service-account-token",
        "expression": "request.resource.resource != 'secrets' || (has(object.type) && object.type == 'kubernetes.io/service-account-token')",
    }]);

    // NetworkPolicies (written: ForeignNetworkPolicy; deleted: ProtectedProjection), and
    // ServiceAccounts deleted (ProtectedProjection).
    let network_rule = |operations: &[&str]| {
        json!({
            "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
            "operations": operations,
            "resources": ["networkpolicies"],
            "scope": "Namespaced",
        })
    };
    let service_account_deletes = json!({
        "apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["DELETE"],
        "resources": ["serviceaccounts"],
        "scope": "Namespaced",
    });
    // Connections into pods: exec and attach act with the pod's token and network authority,
    // port-forward and the proxy reach it around its NetworkPolicy.
    let connect_rules = json!([{
        "apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["CONNECT"],
        "resources": ["pods/exec", "pods/attach", "pods/portforward", "pods/proxy"],
        "scope": "Namespaced",
    }]);

    let webhooks = vec![
        // 1. Every pod in a namespace that opted in. Fail: these are agent namespaces, and an
        //    agent pod must never run unjudged because the webhook was down.
        webhook(
            PODS_IN_AGENT_NAMESPACES,
            VALIDATE_PODS_PATH,
            "Fail",
            json!({"rules": pod_rules, "namespaceSelector": namespaces(Some(true))}),
        ),
        // 2. Agent-labelled pods everywhere else, in the default mode. Fail: only agent pods
        //    match. Namespaces that opted in are left to webhook 1, so no pod is judged twice.
        webhook(
            AGENT_PODS_ELSEWHERE,
            VALIDATE_PODS_PATH,
            "Fail",
            json!({
                "rules": pod_rules,
                "namespaceSelector": namespaces(Some(false)),
                "objectSelector": {
                    "matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}],
                },
            }),
        ),
        // 3. Workload templates, so `kubectl apply` shows at once what would later be a silent
        //    FailedCreate. Everywhere, since a template's labels cannot be selected on. Ignore:
        //    the answer is only ever warnings, and no workload should wait on mandate.
        webhook(
            WORKLOADS,
            VALIDATE_WORKLOADS_PATH,
            "Ignore",
            json!({
                "rules": [
                    {
                        "apiGroups": ["apps"], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
                        "scope": "Namespaced",
                    },
                    {
                        "apiGroups": ["batch"], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["jobs", "cronjobs"],
                        "scope": "Namespaced",
                    },
                ],
                "namespaceSelector": namespaces(None),
            }),
        ),
        // 4. Legacy token Secrets in namespaces that opted in (LongLivedToken). Fail: agent
        //    namespaces. The reviewer tells Secrets apart by kind, so this is the generic path.
        webhook(
            SECRETS_IN_AGENT_NAMESPACES,
            VALIDATE_PATH,
            "Fail",
            json!({
                "rules": secret_rules,
                "namespaceSelector": namespaces(Some(true)),
                "matchConditions": token_secrets_only,
            }),
        ),
        // 5. The same elsewhere: agents' ServiceAccounts live wherever their identities do, but
        //    a namespace that did not opt in is not an agent namespace, so Ignore.
        webhook(
            SECRETS_ELSEWHERE,
            VALIDATE_PATH,
            "Ignore",
            json!({
                "rules": secret_rules,
                "namespaceSelector": namespaces(Some(false)),
                "matchConditions": token_secrets_only,
            }),
        ),
        // 6. mandate's own resources: the validator the reconciler uses, no self-escalation,
        //    four eyes on High-risk grants and owner changes. Fail: every one of them concerns
        //    an agent, and with Ignore an unreachable webhook would let an owner grant themself
        //    a High-risk tool (the reconciler cannot know who applied a binding). Only
        //    mandate.dev resources are affected while mandate is down. Their status
        //    subresources too: admission trusts a status (Ready), so only mandate writes one
        //    (ProtectedStatus).
        webhook(
            MANDATE_RESOURCES,
            VALIDATE_MANDATE_PATH,
            "Fail",
            json!({
                "rules": [{
                    "apiGroups": [mandate::api::GROUP], "apiVersions": [mandate::api::VERSION],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["agentidentities", "toolbindings", "delegationpolicies",
                        "agentidentities/status", "toolbindings/status", "delegationpolicies/status"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": namespaces(None),
            }),
        ),
        // 7. Credentials in namespaces that opted in. Fail: agent namespaces. A TokenRequest
        //    carries no label of the agent (an objectSelector sees the TokenRequest, not the
        //    ServiceAccount), so the namespace is the scope; the reviewer skips tokens for
        //    ServiceAccounts of no agent.
        webhook(
            CREDENTIALS_IN_AGENT_NAMESPACES,
            VALIDATE_PATH,
            "Fail",
            json!({
                "rules": credential_rules,
                "namespaceSelector": namespaces(Some(true)),
                "matchConditions": token_requests_or_token_secrets,
            }),
        ),
        // 8. The same elsewhere: not agent namespaces, and every TokenRequest there is sent,
        //    agents' or not, so Ignore.
        webhook(
            CREDENTIALS_ELSEWHERE,
            VALIDATE_PATH,
            "Ignore",
            json!({
                "rules": credential_rules,
                "namespaceSelector": namespaces(Some(false)),
                "matchConditions": token_requests_or_token_secrets,
            }),
        ),
        // 9. Connections into pods in namespaces that opted in. Fail: agent namespaces. A
        //    CONNECT carries its options (PodExecOptions, ...), not the pod, so an
        //    objectSelector cannot see the agent label: the namespace is the scope, and the
        //    webhook looks the pod up.
        webhook(
            CONNECT_IN_AGENT_NAMESPACES,
            VALIDATE_PODS_PATH,
            "Fail",
            json!({
                "rules": connect_rules,
                "namespaceSelector": namespaces(Some(true)),
            }),
        ),
        // 10. The same elsewhere, where only agent-labelled pods are judged (after the lookup)
        //     and every other pod's connections are sent too, so Ignore.
        webhook(
            CONNECT_ELSEWHERE,
            VALIDATE_PODS_PATH,
            "Ignore",
            json!({
                "rules": connect_rules,
                "namespaceSelector": namespaces(Some(false)),
            }),
        ),
        // 11. The network boundary in namespaces that opted in. Fail: agent namespaces. A
        //     NetworkPolicy not written by mandate that selects agent pods is refused per the
        //     mode (ForeignNetworkPolicy); deleting mandate's projections (its policies, the
        //     default deny, its ServiceAccounts) is refused to all but mandate and Kubernetes'
        //     garbage collector and namespace controller (ProtectedProjection). Every
        //     ServiceAccount DELETE there is sent, so stripping a projection's labels first
        //     does not get its deletion past the webhook.
        webhook(
            NETWORK_IN_AGENT_NAMESPACES,
            VALIDATE_PATH,
            "Fail",
            json!({
                "rules": [network_rule(&["CREATE", "UPDATE", "DELETE"]), service_account_deletes],
                "namespaceSelector": namespaces(Some(true)),
            }),
        ),
        // 12. The deletion of mandate's projections elsewhere (the default deny of namespaces
        //      holding identities, projections of identities outside agent namespaces). Fail:
        //      only objects labelled as mandate's match.
        webhook(
            PROJECTIONS_ELSEWHERE,
            VALIDATE_PATH,
            "Fail",
            json!({
                "rules": [network_rule(&["DELETE"]), service_account_deletes],
                "namespaceSelector": namespaces(Some(false)),
                "objectSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/managed-by": "mandate",
                    },
                },
            }),
        ),
        // 13. A namespace's opt-in (ModeWeakened): an UPDATE that weakens mandate.dev/mode while
        //     identities live there needs an approver. The objectSelector matches the old object
        //     or the new one, so removing the label is seen (a namespaceSelector reads only a
        //     namespace's new labels); the matchCondition sends only changes of the label. Fail:
        //     only opted-in namespaces match. NoneOnDryRun: a weakening let through is recorded
        //     (an Event and a metric), never for a dry run.
        webhook(
            NAMESPACE_MODES,
            VALIDATE_PATH,
            "Fail",
            json!({
                "sideEffects": "NoneOnDryRun",
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    "resources": ["namespaces"],
                    "scope": "Cluster",
                }],
                "namespaceSelector": namespaces(None),
                "objectSelector": {
                    "matchExpressions": [{"key": MODE_LABEL, "operator": "Exists"}],
                },
                "matchConditions": [{
                    "name": "mode-label-changes",
                    "expression": MODE_LABEL_CHANGES,
                }],
            }),
        ),
    ];

    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": settings.name,
            "labels": {
                "app.kubernetes.io/name": "mandate",
                "app.kubernetes.io/part-of": "mandate",
                "app.kubernetes.io/component": "operator",
            },
        },
        "webhooks": webhooks,
    }))
    .context("building mandate's ValidatingWebhookConfiguration")
}

/// mandate's MutatingWebhookConfiguration for `settings`: the two `tool-tokens` webhooks, which
/// give each agent pod one projected token per live tool (`/mutate/pods`), scoped as the two
/// validating pod webhooks are, on pod CREATE only, reinvoked if a later webhook changes the pod.
pub fn mutating_webhook_configuration(
    settings: &WebhookSettings,
) -> anyhow::Result<MutatingWebhookConfiguration> {
    let pod_creates = json!([{
        "apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["pods"],
        "scope": "Namespaced",
    }]);
    let webhooks = vec![
        // 1. Every pod created in a namespace that opted in. Fail, as the validating pod
        //    webhook: an agent pod must not start without its credentials.
        webhook_entry(
            settings,
            TOOL_TOKENS_IN_AGENT_NAMESPACES,
            MUTATE_PODS_PATH,
            "Fail",
            json!({
                "rules": pod_creates,
                "namespaceSelector": namespace_selector(settings, Some(true)),
                "reinvocationPolicy": "IfNeeded",
            }),
        ),
        // 2. Agent-labelled pods created everywhere else. Fail: only agent pods match.
        webhook_entry(
            settings,
            TOOL_TOKENS_ELSEWHERE,
            MUTATE_PODS_PATH,
            "Fail",
            json!({
                "rules": pod_creates,
                "namespaceSelector": namespace_selector(settings, Some(false)),
                "objectSelector": {
                    "matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}],
                },
                "reinvocationPolicy": "IfNeeded",
            }),
        ),
    ];
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": settings.name,
            "labels": {
                "app.kubernetes.io/name": "mandate",
                "app.kubernetes.io/part-of": "mandate",
                "app.kubernetes.io/component": "operator",
            },
        },
        "webhooks": webhooks,
    }))
    .context("building mandate's MutatingWebhookConfiguration")
}

/// Which namespaces a webhook sees: never the system ones nor mandate's own, only the isolated
/// ones, and, depending on the webhook, only those that opted in (`Some(true)`) or only the
/// rest (`Some(false)`).
fn namespace_selector(settings: &WebhookSettings, opted_in: Option<bool>) -> Value {
    let mut expressions = vec![json!({
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": [SYSTEM_NAMESPACES[0], SYSTEM_NAMESPACES[1], settings.own_namespace],
    })];
    match opted_in {
        Some(true) => expressions.push(json!({"key": MODE_LABEL, "operator": "Exists"})),
        Some(false) => expressions.push(json!({"key": MODE_LABEL, "operator": "DoesNotExist"})),
        None => {}
    }
    json!({"matchLabels": settings.isolation, "matchExpressions": expressions})
}

/// One webhook entry with the fields every one shares (mandate answers quickly, has no side
/// effects, speaks v1) and `rest` (rules, selectors).
fn webhook_entry(
    settings: &WebhookSettings,
    name: &str,
    path: &str,
    failure_policy: &str,
    rest: Value,
) -> Value {
    let mut webhook = json!({
        "name": name,
        "clientConfig": {
            "url": format!("{}{path}", settings.base_url),
            "caBundle": ByteString(settings.ca_bundle.clone()),
        },
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "admissionReviewVersions": ["v1"],
        "matchPolicy": "Equivalent",
    });
    if let (Some(webhook), Some(rest)) = (webhook.as_object_mut(), rest.as_object()) {
        webhook.extend(rest.clone());
    }
    webhook
}

/// Registers mandate's webhooks for `operator`, validating and mutating as the chart installs
/// them, scoped to the namespaces labelled `isolation=run` (a test's own), named after `run`.
pub async fn register_isolated(
    client: &Client,
    operator: &crate::operator::Operator,
    isolation: &str,
    run: &str,
) -> anyhow::Result<RegisteredWebhooks> {
    let settings = WebhookSettings::new(
        format!("mandate-e2e-{run}"),
        format!("https://{}", operator.webhook),
        &operator.cert.ca_pem,
    )
    .isolated_by(isolation, run);
    let mut registered =
        RegisteredWebhooks::register(client, &webhook_configuration(&settings)?).await?;
    registered
        .register_mutating(client, &mutating_webhook_configuration(&settings)?)
        .await?;
    Ok(registered)
}

/// A registered webhook configuration (and the mutating one of the same name, when registered),
/// deleted when dropped (pass or fail), so a stopped operator never leaves a `Fail` webhook
/// behind.
pub struct RegisteredWebhooks {
    pub name: String,
    mutating: bool,
}

impl RegisteredWebhooks {
    /// Creates the configuration on the control plane.
    pub async fn register(
        client: &Client,
        configuration: &ValidatingWebhookConfiguration,
    ) -> anyhow::Result<Self> {
        let name = configuration
            .metadata
            .name
            .clone()
            .context("the webhook configuration has no name")?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), configuration)
            .await
            .with_context(|| format!("registering ValidatingWebhookConfiguration {name}"))?;
        Ok(RegisteredWebhooks {
            name,
            mutating: false,
        })
    }

    /// Creates the mutating configuration too; it must bear the same name.
    pub async fn register_mutating(
        &mut self,
        client: &Client,
        configuration: &MutatingWebhookConfiguration,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            configuration.metadata.name.as_deref() == Some(self.name.as_str()),
            "the mutating configuration must be named {}",
            self.name
        );
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), configuration)
            .await
            .with_context(|| format!("registering MutatingWebhookConfiguration {}", self.name))?;
        self.mutating = true;
        Ok(())
    }
}

impl Drop for RegisteredWebhooks {
    fn drop(&mut self) {
        let (name, mutating) = (self.name.clone(), self.mutating);
        crate::block_on_side_runtime(async move {
            let client = crate::client().await?;
            if mutating {
                Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await?;
            }
            Api::<ValidatingWebhookConfiguration>::all(client)
                .delete(&name, &DeleteParams::default())
                .await?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration() -> ValidatingWebhookConfiguration {
        let settings = WebhookSettings::new("mandate", "https://127.0.0.1:9443", b"CA")
            .isolated_by("e2e.mandate.dev/run", "r1");
        webhook_configuration(&settings).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn every_webhook_excludes_the_system_namespaces_and_mandates_own_and_is_isolated() {
        for webhook in configuration().webhooks.unwrap_or_default() {
            let selector = webhook.namespace_selector.unwrap_or_default();
            let labels = selector.match_labels.unwrap_or_default();
            assert_eq!(
                labels.get("e2e.mandate.dev/run").map(String::as_str),
                Some("r1")
            );
            let excluded = selector
                .match_expressions
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
                .and_then(|e| e.values)
                .unwrap_or_default();
            assert_eq!(
                excluded,
                ["kube-system", "kube-node-lease", "mandate-system"],
                "{}",
                webhook.name
            );
            // A weakening of a namespace's mode let through is recorded, never on a dry run.
            let side_effects = if webhook.name == NAMESPACE_MODES {
                "NoneOnDryRun"
            } else {
                "None"
            };
            assert_eq!(webhook.side_effects, side_effects, "{}", webhook.name);
            assert_eq!(webhook.timeout_seconds, Some(TIMEOUT_SECONDS));
        }
    }

    #[test]
    fn only_webhooks_scoped_to_agents_fail_closed() {
        let failing: Vec<String> = configuration()
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.failure_policy.as_deref() == Some("Fail"))
            .map(|w| w.name)
            .collect();
        assert_eq!(
            failing,
            [
                PODS_IN_AGENT_NAMESPACES,
                AGENT_PODS_ELSEWHERE,
                SECRETS_IN_AGENT_NAMESPACES,
                MANDATE_RESOURCES,
                // Scoped by their namespaceSelector to opted-in namespaces, like the pods' one.
                CREDENTIALS_IN_AGENT_NAMESPACES,
                CONNECT_IN_AGENT_NAMESPACES,
                NETWORK_IN_AGENT_NAMESPACES,
                // Only objects labelled as mandate's.
                PROJECTIONS_ELSEWHERE,
                // Only namespaces that are (or were) opted in.
                NAMESPACE_MODES,
            ]
        );
    }

    #[test]
    fn the_mutating_webhooks_patch_pod_creates_of_agents_only_and_are_reinvoked() {
        let settings = WebhookSettings::new("mandate", "https://127.0.0.1:9443", b"CA")
            .isolated_by("e2e.mandate.dev/run", "r1");
        let configuration =
            mutating_webhook_configuration(&settings).unwrap_or_else(|e| panic!("{e:#}"));
        let webhooks = configuration.webhooks.unwrap_or_default();
        let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [TOOL_TOKENS_IN_AGENT_NAMESPACES, TOOL_TOKENS_ELSEWHERE]
        );
        for webhook in &webhooks {
            assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"));
            assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
            assert_eq!(webhook.side_effects, "None");
            let url = webhook.client_config.url.as_deref().unwrap_or_default();
            assert!(url.ends_with("/mutate/pods"), "{url}");
            let rules = webhook.rules.clone().unwrap_or_default();
            assert_eq!(rules.len(), 1);
            assert_eq!(
                rules[0].operations.as_deref(),
                Some(&["CREATE".to_owned()][..])
            );
            assert_eq!(
                rules[0].resources.as_deref(),
                Some(&["pods".to_owned()][..])
            );
            let labels = webhook
                .namespace_selector
                .clone()
                .unwrap_or_default()
                .match_labels
                .unwrap_or_default();
            assert_eq!(
                labels.get("e2e.mandate.dev/run").map(String::as_str),
                Some("r1")
            );
        }
        // Outside agent namespaces only agent-labelled pods, as the validating pod webhook.
        let elsewhere = webhooks[1].object_selector.clone().unwrap_or_default();
        assert_eq!(
            elsewhere.match_expressions.unwrap_or_default()[0].key,
            AGENT_LABEL
        );
    }
}
