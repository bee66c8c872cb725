//! Pod admission: a pod (or a workload's pod template), a [`Snapshot`], the installation's
//! [`AdmissionConfig`] and the time in; a [`Verdict`] out. Decides which pods are agent pods and
//! applies the pod rules of DESIGN section 3 to them, and the hijack and long-lived-token rules
//! to every pod. Pure: never does I/O, never reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod, PodSpec};
use k8s_openapi::jiff::Timestamp;

use super::baseline::baseline_findings;
use super::credentials::annotation_findings;
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Finding, Mode, Reason, Verdict};
use crate::api::{AGENT_LABEL, AgentIdentity};
use crate::assess::projections_applied;
use crate::authority::HeldTool;
use crate::authority::rights::describe;

/// What the API server defaults `expirationSeconds` of a projected token to.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// The prefix of the token volume the ServiceAccount admission plugin injects when tokens are
/// automounted.
pub const AUTOMOUNT_VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime the API server extends to a year (the automounted token's, when
/// `--service-account-extend-token-expiration` is on, its default): never allowed to an agent,
/// whatever its TTL.
pub const EXTENDED_TOKEN_SECONDS: i64 = 3607;

/// The parts of a pod the rules read: a Pod's, or a workload template's with the workload's
/// namespace.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Read by the baseline's AppArmor control (its beta annotation).
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub spec: &'a PodSpec,
}

impl<'a> PodView<'a> {
    /// A pod's view; `None` when it has no spec. A pod without a namespace is reviewed as if in
    /// `""` (callers reading manifests set the namespace first).
    pub fn of(pod: &'a Pod) -> Option<Self> {
        Some(PodView {
            namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
            labels: pod.metadata.labels.as_ref(),
            annotations: pod.metadata.annotations.as_ref(),
            spec: pod.spec.as_ref()?,
        })
    }

    /// The `mandate.dev/agent` label.
    pub fn agent(&self) -> Option<&'a str> {
        self.labels
            .and_then(|labels| labels.get(AGENT_LABEL))
            .map(String::as_str)
    }

    /// The ServiceAccount the pod runs as: `serviceAccountName`, the deprecated
    /// `serviceAccount`, or `default` (the API server's ServiceAccount plugin fills it in before
    /// validating webhooks run, so the fallback only matters for manifests).
    pub fn service_account(&self) -> &'a str {
        self.spec
            .service_account_name
            .as_deref()
            .or(self.spec.service_account.as_deref())
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
    }
}

/// The mode a pod is reviewed in as an agent pod: its namespace's mode when the namespace is
/// labelled, else the default mode when the pod carries `mandate.dev/agent`; `None` for a pod
/// that is no agent pod (only the hijack and long-lived-token rules apply to it).
pub fn agent_pod_mode(
    pod: &PodView<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Option<Mode> {
    agent_mode(pod.namespace, pod.agent(), snapshot, config)
}

/// [`agent_pod_mode`] of a pod known only by its namespace and its `mandate.dev/agent` label
/// (`agent`): what a CONNECT review knows of the pod it goes to.
pub fn agent_mode(
    namespace: &str,
    agent: Option<&str>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Option<Mode> {
    snapshot
        .namespace_mode(namespace)
        .or_else(|| agent.map(|_| config.default_mode))
}

/// Reviews a pod. A pod without a spec is refused as [`Reason::InvalidObject`].
pub fn review_pod(
    pod: &Pod,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    let subject = format!("Pod {namespace}/{name}");
    match PodView::of(pod) {
        Some(view) => review_pod_view(&view, subject, snapshot, config, now),
        None => Verdict::reviewed(subject, Mode::Enforce).finding(Finding::new(
            Reason::InvalidObject,
            "the pod has no spec: send a complete Pod",
        )),
    }
}

/// Applies the pod rules to `pod`, naming it `subject` in messages.
pub fn review_pod_view(
    pod: &PodView<'_>,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let authority = snapshot.authority();
    let namespace = pod.namespace;
    let label = pod.agent();
    let hijacked = hijack(pod, snapshot);
    let mut findings: Vec<Finding> = long_lived_tokens(pod, snapshot);

    let Some(mode) = agent_pod_mode(pod, snapshot, config) else {
        // Not an agent pod: only the rules that protect agents' credentials apply.
        let Some((agent, finding)) = hijacked else {
            if findings.is_empty() {
                return Verdict::skipped(subject);
            }
            return Verdict::reviewed(subject, config.default_mode).findings(findings);
        };
        let mut verdict = Verdict::reviewed(subject, config.default_mode)
            .agent(agent)
            .finding(finding)
            .findings(findings);
        if let Some(owner) = authority.owner(namespace, agent) {
            verdict = verdict.owner(owner);
        }
        return verdict;
    };

    let mut verdict = Verdict::reviewed(subject, mode);
    if let Some((_, finding)) = hijacked {
        findings.push(finding);
    }
    match label {
        None => findings.push(Finding::new(
            Reason::NoIdentity,
            format!(
                "the pod has no {AGENT_LABEL} label: label the pod {AGENT_LABEL}=<name> of an \
                 AgentIdentity in namespace {namespace}, or create the AgentIdentity"
            ),
        )),
        Some(agent) => {
            verdict = verdict.agent(agent);
            match authority.identity(namespace, agent) {
                None => findings.push(Finding::new(
                    Reason::NoIdentity,
                    format!(
                        "{AGENT_LABEL}={agent} names no AgentIdentity in namespace {namespace}: \
                         create the AgentIdentity {agent} or label the pod with an existing one"
                    ),
                )),
                Some(identity) => {
                    verdict = verdict.owner(&identity.spec.owner);
                    findings.extend(identity_rules(pod, agent, identity, snapshot, now));
                }
            }
        }
    }
    if pod.spec.host_network == Some(true) {
        findings.push(Finding::new(
            Reason::HostNetwork,
            "the pod sets hostNetwork: true, which bypasses the agent's NetworkPolicy: remove \
             hostNetwork",
        ));
    }
    // Host access and privilege would let the agent act outside its identity (other pods'
    // tokens, the node's credentials); only its identity's approved exemptions allow them.
    let exemptions = label.and_then(|agent| Some((agent, authority.identity(namespace, agent)?)));
    findings.extend(baseline_findings(pod.spec, pod.annotations, exemptions));
    if pod.spec.automount_service_account_token == Some(true) {
        let ttl = label
            .and_then(|agent| authority.identity(namespace, agent))
            .map_or(
                DEFAULT_TOKEN_EXPIRATION_SECONDS,
                AgentIdentity::token_ttl_seconds,
            );
        findings.push(Finding::new(
            Reason::TokenTTL,
            format!(
                "the pod sets automountServiceAccountToken: true, and the API server may extend \
                 automounted tokens to a year: set it to false and project a serviceAccountToken \
                 volume with expirationSeconds <= {ttl}"
            ),
        ));
    }
    verdict.findings(findings)
}

/// The rules that need the pod's identity.
fn identity_rules(
    pod: &PodView<'_>,
    agent: &str,
    identity: &AgentIdentity,
    snapshot: &Snapshot,
    now: Timestamp,
) -> Vec<Finding> {
    let namespace = pod.namespace;
    let mut findings = Vec::new();
    if identity.spec.owner.name.trim().is_empty() {
        findings.push(Finding::new(
            Reason::NoOwner,
            format!(
                "AgentIdentity {agent} names no owner: set spec.owner to the accountable user or \
                 group"
            ),
        ));
    }
    if !projections_applied(identity.status.as_ref()) {
        findings.push(Finding::new(
            Reason::IdentityNotReady,
            format!(
                "AgentIdentity {agent} is not Ready (its ServiceAccount and NetworkPolicy are not \
                 applied yet): wait for Ready=True (kubectl get agent {agent} -n {namespace}) and \
                 create the pod again"
            ),
        ));
    }
    let held = snapshot.authority().held_tools(namespace, agent, now);
    if held.is_empty() {
        findings.push(Finding::new(
            Reason::NoBoundTools,
            format!(
                "AgentIdentity {agent} holds no live tool now: create a ToolBinding for it, or \
                 check the validity window and phase of its ToolBindings"
            ),
        ));
    }
    let expected = identity.service_account_name();
    let actual = pod.service_account();
    if actual != expected {
        findings.push(Finding::new(
            Reason::ServiceAccountMismatch,
            format!(
                "the pod runs as ServiceAccount {actual} but AgentIdentity {agent} runs as \
                 {expected}: set spec.serviceAccountName: {expected}"
            ),
        ));
    }
    let rights = snapshot.authority().api_rights(namespace, expected);
    if !rights.is_empty() {
        findings.push(Finding::new(
            Reason::DangerousApiRights,
            format!(
                "ServiceAccount {expected} of AgentIdentity {agent} holds Kubernetes API rights \
                 outside its mandate: {}: delete the bindings or take the rights out of the \
                 roles (the identity's ApiRightsContained condition lists them)",
                describe(&rights)
            ),
        ));
    }
    let tool_audiences: BTreeSet<String> = held.iter().map(HeldTool::audience).collect();
    findings.extend(token_rules(pod, agent, identity, &tool_audiences));
    findings.extend(annotation_findings(pod, agent, snapshot.authority(), now));
    findings
}

/// Projected tokens must live no longer than the identity allows and serve only the API server,
/// the identity's audiences or the audiences of its live tools (`tool_audiences`).
fn token_rules(
    pod: &PodView<'_>,
    agent: &str,
    identity: &AgentIdentity,
    tool_audiences: &BTreeSet<String>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for volume in pod.spec.volumes.iter().flatten() {
        let sources = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten();
        for token in sources.filter_map(|s| s.service_account_token.as_ref()) {
            let name = &volume.name;
            let seconds = token
                .expiration_seconds
                .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS);
            let ttl = identity.token_ttl_seconds();
            let advice = if name.starts_with(AUTOMOUNT_VOLUME_PREFIX) {
                format!(
                    "set automountServiceAccountToken: false and project a serviceAccountToken \
                     volume with expirationSeconds <= {ttl} (not {EXTENDED_TOKEN_SECONDS})"
                )
            } else {
                format!(
                    "set expirationSeconds to {} or less",
                    ttl.min(EXTENDED_TOKEN_SECONDS - 1)
                )
            };
            let audience = token.audience.as_deref().filter(|a| !a.is_empty());
            findings.extend(judge_token(
                &format!("volume {name} projects a token"),
                seconds,
                audience.into_iter(),
                agent,
                identity,
                tool_audiences,
                &advice,
            ));
        }
    }
    findings
}

/// Judges one token of agent `agent`'s identity, `what` (`volume x projects a token`, `the
/// TokenRequest asks for a token`), valid `seconds` and for `audiences` (none: the API
/// server's): longer than the identity's TTL, exactly [`EXTENDED_TOKEN_SECONDS`], or for an
/// audience that is neither one of the identity's `credentials.audiences` nor the audience of
/// one of its live tools (`tool_audiences`, see `HeldTool::audience`) is `TokenTTL`. `advice`
/// says how to shorten it. The one judgment of tokens for projected volumes (mandate's per-tool
/// credentials among them) and TokenRequests alike.
pub fn judge_token<'a>(
    what: &str,
    seconds: i64,
    audiences: impl Iterator<Item = &'a str>,
    agent: &str,
    identity: &AgentIdentity,
    tool_audiences: &BTreeSet<String>,
    advice: &str,
) -> Vec<Finding> {
    let ttl = identity.token_ttl_seconds();
    let allowed: Vec<&str> = identity
        .spec
        .credentials
        .iter()
        .flat_map(|c| c.audiences.iter())
        .chain(tool_audiences)
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut findings = Vec::new();
    if seconds > ttl {
        findings.push(Finding::new(
            Reason::TokenTTL,
            format!(
                "{what} valid {seconds}s, longer than the {ttl}s AgentIdentity {agent} allows: \
                 {advice}"
            ),
        ));
    } else if seconds == EXTENDED_TOKEN_SECONDS {
        findings.push(Finding::new(
            Reason::TokenTTL,
            format!(
                "{what} valid exactly {EXTENDED_TOKEN_SECONDS}s, which the API server extends to \
                 a year (--service-account-extend-token-expiration, on by default): {advice}"
            ),
        ));
    }
    for audience in audiences.filter(|a| !allowed.contains(a)) {
        let allowed = if allowed.is_empty() {
            "none besides the API server's".to_owned()
        } else {
            allowed.join(", ")
        };
        findings.push(Finding::new(
            Reason::TokenTTL,
            format!(
                "{what} for audience {audience}, which AgentIdentity {agent} does not allow \
                 (allowed: {allowed}): use the audience of a tool it holds now or one of its \
                 spec.credentials.audiences"
            ),
        ));
    }
    findings
}

/// A pod that runs as an agent's ServiceAccount without being labelled as that agent: the
/// agent's name and the finding.
fn hijack<'s>(pod: &PodView<'_>, snapshot: &'s Snapshot) -> Option<(&'s str, Finding)> {
    let namespace = pod.namespace;
    let service_account = pod.service_account();
    let label = pod.agent();
    let mut claimants = snapshot
        .claimants(namespace, service_account)
        .filter_map(|identity| identity.metadata.name.as_deref())
        .peekable();
    let owner_agent = match claimants.peek() {
        Some(_) => {
            let names: Vec<&str> = claimants.collect();
            if label.is_some_and(|label| names.contains(&label)) {
                return None;
            }
            names[0]
        }
        // A mandate-managed ServiceAccount of an agent whose identity is gone still is that
        // agent's.
        None => {
            let agent = snapshot.agent_of_service_account(namespace, service_account)?;
            if label == Some(agent) {
                return None;
            }
            agent
        }
    };
    let claimed_as = match label {
        Some(label) => format!("labelled {AGENT_LABEL}={label}"),
        None => format!("not labelled {AGENT_LABEL}={owner_agent}"),
    };
    Some((
        owner_agent,
        Finding::new(
            Reason::ServiceAccountHijack,
            format!(
                "the pod runs as ServiceAccount {service_account}, which belongs to agent \
                 {owner_agent}, but is {claimed_as}: run it as its own ServiceAccount"
            ),
        ),
    ))
}

/// Every reference of the pod to a known legacy token Secret of an agent's ServiceAccount.
fn long_lived_tokens(pod: &PodView<'_>, snapshot: &Snapshot) -> Vec<Finding> {
    let namespace = pod.namespace;
    let mut references: Vec<(&str, String)> = Vec::new();
    for volume in pod.spec.volumes.iter().flatten() {
        if let Some(secret) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            references.push((secret, format!("volume {}", volume.name)));
        }
        let sources = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten();
        for secret in sources.filter_map(|s| s.secret.as_ref()) {
            references.push((&secret.name, format!("volume {}", volume.name)));
        }
    }
    let containers = pod
        .spec
        .containers
        .iter()
        .chain(pod.spec.init_containers.iter().flatten())
        .map(|c| (&c.name, c.env.as_deref(), c.env_from.as_deref()));
    let ephemeral = pod
        .spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (&c.name, c.env.as_deref(), c.env_from.as_deref()));
    for (container, env, env_from) in containers.chain(ephemeral) {
        references.extend(
            env_secrets(env, env_from)
                .map(|secret| (secret, format!("the environment of container {container}"))),
        );
    }
    references
        .into_iter()
        .filter_map(|(secret, place)| {
            let service_account = snapshot.token_secret(namespace, secret)?;
            let agent = snapshot.agent_of_service_account(namespace, service_account)?;
            Some(Finding::new(
                Reason::LongLivedToken,
                format!(
                    "{place} uses Secret {secret}, a long-lived token of ServiceAccount \
                     {service_account} (agent {agent}): remove it, project a short-lived \
                     serviceAccountToken volume instead, and delete the Secret"
                ),
            ))
        })
        .collect()
}

fn env_secrets<'a>(
    env: Option<&'a [EnvVar]>,
    env_from: Option<&'a [EnvFromSource]>,
) -> impl Iterator<Item = &'a str> {
    let from_env = env.into_iter().flatten().filter_map(|var| {
        var.value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()
            .map(|s| s.name.as_str())
    });
    let from_env_from = env_from
        .into_iter()
        .flatten()
        .filter_map(|source| source.secret_ref.as_ref().map(|s| s.name.as_str()));
    from_env.chain(from_env_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::verdict::Decision;
    use crate::api::{AgentClass, BaselineControl, MODE_LABEL, OwnerKind};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    /// `agents` is an enforce namespace with a Ready, bound `researcher` (token audiences
    /// `mandate.dev/tools`) and nothing else; `team-b` is unlabelled with a `scraper`.
    fn snapshot() -> Snapshot {
        snapshot_with(|builder| builder)
    }

    fn snapshot_with(
        extra: impl FnOnce(crate::authority::AuthorityBuilder) -> crate::authority::AuthorityBuilder,
    ) -> Snapshot {
        let authority = extra(
            Authority::builder()
                .identity(
                    identity("researcher")
                        .credentials(None, ["mandate.dev/tools"])
                        .ready()
                        .build(),
                )
                .binding(
                    binding("search")
                        .agent("researcher")
                        .tool(tool("web-search"))
                        .build(),
                )
                .identity(identity("scraper").namespace("team-b").ready().build())
                .binding(
                    binding("scrape")
                        .namespace("team-b")
                        .agent("scraper")
                        .tool(tool("web"))
                        .build(),
                ),
        )
        .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .namespace_mode("agents-warn", Mode::Warn)
            .namespace_mode("agents-audit", Mode::Audit)
            .token_secret(NS, "researcher-token", "researcher")
            .token_secret(NS, "default-token", "default")
            .build()
    }

    fn review(pod: PodBuilder) -> Verdict {
        review_with(&snapshot(), pod)
    }

    fn review_with(snapshot: &Snapshot, pod: PodBuilder) -> Verdict {
        review_pod(&pod.build(), snapshot, &AdmissionConfig::default(), NOW)
    }

    #[test]
    fn a_pod_running_as_its_ready_bound_identity_is_allowed() {
        let verdict = review(pod("p").runs_as("researcher").token_volume(
            "token",
            Some("mandate.dev/tools"),
            Some(3600),
        ));
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        assert_eq!(verdict.agent_name(), Some("researcher"));
        assert_eq!(verdict.owner_name(), Some("Group:team-a"));
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
    }

    #[test]
    fn a_pod_without_agent_label_in_an_enforce_namespace_is_refused_with_no_identity() {
        let verdict = review(pod("stray"));
        assert_eq!(verdict.codes(), ["NoIdentity"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let message = verdict.message().unwrap_or_default();
        assert!(
            message.contains("NoIdentity: the pod has no mandate.dev/agent label: label the pod mandate.dev/agent=<name>"),
            "{message}"
        );
    }

    #[test]
    fn a_pod_naming_an_identity_that_does_not_exist_in_its_namespace_has_no_identity() {
        let verdict = review(pod("p").runs_as("scraper"));
        assert_eq!(verdict.codes(), ["NoIdentity"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("create the AgentIdentity scraper")
        );
    }

    #[test]
    fn a_pod_whose_identity_names_no_owner_is_refused_with_no_owner() {
        let snapshot = snapshot_with(|b| {
            b.identity(
                identity("orphan")
                    .owner(OwnerKind::User, " ")
                    .ready()
                    .build(),
            )
            .binding(binding("o").agent("orphan").tool(tool("t")).build())
        });
        let verdict = review_with(&snapshot, pod("p").runs_as("orphan"));
        assert_eq!(verdict.codes(), ["NoOwner"]);
    }

    #[test]
    fn a_pod_whose_identity_is_not_ready_is_refused_with_identity_not_ready() {
        let snapshot = snapshot_with(|b| {
            b.identity(identity("fresh").build())
                .binding(binding("f").agent("fresh").tool(tool("t")).build())
        });
        let verdict = review_with(&snapshot, pod("p").runs_as("fresh"));
        assert_eq!(verdict.codes(), ["IdentityNotReady"]);
    }

    #[test]
    fn a_pod_whose_identity_holds_no_live_tool_is_refused_with_no_bound_tools() {
        let snapshot = snapshot_with(|b| {
            b.identity(identity("idle").ready().build()).binding(
                binding("expired")
                    .agent("idle")
                    .tool(tool("t"))
                    .valid_until(hours(-1))
                    .build(),
            )
        });
        let verdict = review_with(&snapshot, pod("p").runs_as("idle"));
        assert_eq!(verdict.codes(), ["NoBoundTools"]);
    }

    #[test]
    fn a_pod_left_on_the_default_service_account_is_a_mismatch() {
        let verdict = review(pod("p").agent("researcher"));
        assert_eq!(verdict.codes(), ["ServiceAccountMismatch"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("set spec.serviceAccountName: researcher")
        );
    }

    #[test]
    fn the_automounted_api_access_volume_outlives_a_ten_minute_token_ttl() {
        let snapshot = snapshot_with(|b| {
            b.identity(
                identity("payer")
                    .class(AgentClass::TransactionExecutor)
                    .ready()
                    .build(),
            )
            .binding(binding("p").agent("payer").tool(tool("t")).build())
        });
        let verdict = review_with(&snapshot, pod("p").runs_as("payer").kube_api_access());
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        let detail = &verdict.all_findings()[0].detail;
        assert!(
            detail.contains("valid 3607s, longer than the 600s"),
            "{detail}"
        );
        assert!(
            detail.contains("automountServiceAccountToken: false"),
            "{detail}"
        );
    }

    #[test]
    fn a_projected_token_without_expiration_lives_the_api_server_default_of_an_hour() {
        let snapshot = snapshot_with(|b| {
            b.identity(
                identity("writer")
                    .class(AgentClass::WriteCapable)
                    .ready()
                    .build(),
            )
            .binding(binding("w").agent("writer").tool(tool("t")).build())
        });
        let verdict = review_with(
            &snapshot,
            pod("p").runs_as("writer").token_volume("token", None, None),
        );
        assert_eq!(verdict.codes(), ["TokenTTL"]);
    }

    #[test]
    fn a_token_for_an_audience_the_identity_does_not_allow_is_refused_with_token_ttl() {
        let verdict = review(
            pod("p")
                .runs_as("researcher")
                .token_volume("vault", Some("vault"), Some(600))
                .token_volume("api", Some(""), Some(600)),
        );
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert_eq!(verdict.all_findings().len(), 1);
        assert!(verdict.all_findings()[0].detail.contains("audience vault"));
    }

    #[test]
    fn a_token_for_a_live_tools_audience_is_allowed_and_another_agents_tool_is_not() {
        // researcher holds web-search (audience mandate.dev/agents/web-search) and does not
        // list it in credentials.audiences; scraper's tool lives in team-b.
        let verdict = review(pod("p").runs_as("researcher").token_volume(
            "mandate-tool-web-search",
            Some("mandate.dev/agents/web-search"),
            Some(3600),
        ));
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        let verdict = review(pod("p").runs_as("researcher").token_volume(
            "stolen",
            Some("mandate.dev/team-b/web"),
            Some(600),
        ));
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        let detail = &verdict.all_findings()[0].detail;
        assert!(
            detail.contains("audience mandate.dev/team-b/web, which AgentIdentity researcher does not allow (allowed: mandate.dev/agents/web-search, mandate.dev/tools)"),
            "{detail}"
        );
    }

    #[test]
    fn a_tool_token_outliving_the_identitys_ttl_is_refused_like_any_token() {
        let verdict = review(pod("p").runs_as("researcher").token_volume(
            "mandate-tool-web-search",
            Some("mandate.dev/agents/web-search"),
            Some(86_400),
        ));
        assert_eq!(verdict.codes(), ["TokenTTL"]);
    }

    #[test]
    fn a_pod_claiming_tool_credentials_it_has_no_volume_for_is_refused_with_token_ttl() {
        let mut forged = pod("p").runs_as("researcher").build();
        forged.metadata.annotations = Some(BTreeMap::from([(
            crate::api::TOOL_CREDENTIALS_ANNOTATION.to_owned(),
            "web-search".to_owned(),
        )]));
        let verdict = review_pod(&forged, &snapshot(), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert!(
            verdict.all_findings()[0].detail.contains(
                "names tool web-search, but the pod has no volume mandate-tool-web-search"
            ),
            "{verdict:?}"
        );
    }

    /// `hours`: a Ready, bound identity whose TTL (two hours) allows 3607 seconds.
    fn snapshot_with_two_hour_ttl() -> Snapshot {
        snapshot_with(|b| {
            b.identity(
                identity("hours")
                    .credentials(Some(7200), [])
                    .ready()
                    .build(),
            )
            .binding(binding("h").agent("hours").tool(tool("t")).build())
        })
    }

    #[test]
    fn a_token_of_exactly_3607_seconds_is_refused_even_when_the_ttl_allows_it() {
        let snapshot = snapshot_with_two_hour_ttl();
        let verdict = review_with(
            &snapshot,
            pod("p")
                .runs_as("hours")
                .token_volume("token", None, Some(3607)),
        );
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        let detail = &verdict.all_findings()[0].detail;
        assert!(detail.contains("exactly 3607s"), "{detail}");
        assert!(detail.contains("extends to a year"), "{detail}");
        assert!(
            detail.contains("set expirationSeconds to 3606 or less"),
            "{detail}"
        );
    }

    #[test]
    fn the_automounted_volume_of_3607_seconds_is_refused_even_when_the_ttl_allows_it() {
        let snapshot = snapshot_with_two_hour_ttl();
        let verdict = review_with(&snapshot, pod("p").runs_as("hours").kube_api_access());
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        let detail = &verdict.all_findings()[0].detail;
        assert!(detail.contains("extends to a year"), "{detail}");
        assert!(
            detail.contains("automountServiceAccountToken: false"),
            "{detail}"
        );
    }

    #[test]
    fn tokens_just_below_and_above_3607_seconds_within_the_ttl_are_allowed() {
        let snapshot = snapshot_with_two_hour_ttl();
        for seconds in [3606, 3608, 7200] {
            let verdict = review_with(
                &snapshot,
                pod("p")
                    .runs_as("hours")
                    .token_volume("token", None, Some(seconds)),
            );
            assert_eq!(
                verdict.decision(),
                Some(Decision::Allowed),
                "{seconds}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_pod_asking_for_automounted_tokens_is_refused_with_token_ttl() {
        let verdict = review(pod("p").runs_as("researcher").automount(true));
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("automountServiceAccountToken: true")
        );
    }

    #[test]
    fn a_pod_on_the_host_network_is_refused_with_host_network() {
        let verdict = review(pod("p").runs_as("researcher").host_network());
        assert_eq!(verdict.codes(), ["HostNetwork"]);
    }

    #[test]
    fn a_privileged_agent_pod_is_refused_with_pod_security_baseline_naming_the_field() {
        let verdict = review(pod("p").runs_as("researcher").privileged());
        assert_eq!(verdict.codes(), ["PodSecurityBaseline"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let message = verdict.message().unwrap_or_default();
        assert!(
            message.contains(
                "PodSecurityBaseline: spec.containers[0].securityContext.privileged is true \
                 (Privileged): remove it, or have a member of the approver group"
            ),
            "{message}"
        );
    }

    #[test]
    fn host_network_is_reported_once_under_its_own_code() {
        let verdict = review(
            pod("p")
                .runs_as("researcher")
                .host_network()
                .with_spec(|s| s.host_pid = Some(true)),
        );
        assert_eq!(verdict.codes(), ["HostNetwork", "PodSecurityBaseline"]);
        assert_eq!(verdict.all_findings().len(), 2);
    }

    #[test]
    fn an_approved_exemption_on_the_identity_lets_its_privileged_pod_in() {
        let snapshot = snapshot_with(|b| {
            b.identity(
                identity("debugger")
                    .owner(OwnerKind::User, "alice")
                    .exempt(BaselineControl::Privileged, &[], "carol")
                    .ready()
                    .build(),
            )
            .identity(
                identity("self-approved")
                    .owner(OwnerKind::User, "alice")
                    .exempt(BaselineControl::Privileged, &[], "alice")
                    .ready()
                    .build(),
            )
            .binding(binding("d").agent("debugger").tool(tool("t")).build())
            .binding(binding("s").agent("self-approved").tool(tool("t")).build())
        });
        let verdict = review_with(&snapshot, pod("p").runs_as("debugger").privileged());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        let verdict = review_with(&snapshot, pod("p").runs_as("self-approved").privileged());
        assert_eq!(verdict.codes(), ["PodSecurityBaseline"]);
        // Another agent's exemption is no exemption for this one.
        let verdict = review_with(&snapshot, pod("p").runs_as("researcher").privileged());
        assert_eq!(verdict.codes(), ["PodSecurityBaseline"]);
    }

    #[test]
    fn baseline_findings_follow_the_pods_mode() {
        let warned = review(pod("p").namespace("agents-warn").privileged());
        assert_eq!(warned.decision(), Some(Decision::Warned));
        assert_eq!(warned.codes(), ["NoIdentity", "PodSecurityBaseline"]);
        let audited = review(pod("p").namespace("agents-audit").privileged());
        assert_eq!(audited.decision(), Some(Decision::Audited));
        // A pod that is no agent pod is left to Pod Security Admission.
        let skipped = review(pod("web").namespace("team-b").privileged());
        assert_eq!(skipped.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn a_pod_mounting_an_agents_legacy_token_secret_is_refused_with_long_lived_token() {
        for pod in [
            pod("p")
                .runs_as("researcher")
                .secret_volume("t", "researcher-token"),
            pod("p")
                .runs_as("researcher")
                .secret_env("researcher-token"),
            pod("p")
                .runs_as("researcher")
                .secret_env_from("researcher-token"),
        ] {
            assert_eq!(review(pod).codes(), ["LongLivedToken"]);
        }
        // The default ServiceAccount's token is no agent's.
        let verdict = review(
            pod("p")
                .runs_as("researcher")
                .secret_volume("t", "default-token"),
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
    }

    #[test]
    fn a_pod_in_an_unlabelled_namespace_running_as_an_agents_service_account_is_a_hijack() {
        let verdict = review(pod("p").namespace("team-b").service_account("scraper"));
        assert_eq!(verdict.codes(), ["ServiceAccountHijack"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.agent_name(), Some("scraper"));
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
    }

    #[test]
    fn a_pod_labelled_as_another_agent_while_running_as_this_ones_account_is_a_hijack() {
        let snapshot = snapshot_with(|b| {
            b.identity(identity("helper").ready().build())
                .binding(binding("h").agent("helper").tool(tool("t")).build())
        });
        let verdict = review_with(
            &snapshot,
            pod("p").agent("helper").service_account("researcher"),
        );
        assert_eq!(
            verdict.codes(),
            ["ServiceAccountHijack", "ServiceAccountMismatch"]
        );
    }

    #[test]
    fn a_pod_in_an_unlabelled_namespace_without_agent_label_is_skipped() {
        let verdict = review(pod("web").namespace("team-b"));
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        assert_eq!(verdict.mode(), None);
    }

    #[test]
    fn an_agent_labelled_pod_in_an_unlabelled_namespace_is_checked_in_the_default_mode() {
        let verdict = review(pod("p").namespace("team-c").agent("ghost"));
        assert_eq!(verdict.codes(), ["NoIdentity"]);
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
        let config = AdmissionConfig {
            default_mode: Mode::Warn,
            ..AdmissionConfig::default()
        };
        let verdict = review_pod(
            &pod("p").namespace("team-c").agent("ghost").build(),
            &snapshot(),
            &config,
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
    }

    #[test]
    fn warn_and_audit_namespaces_admit_what_enforce_refuses() {
        let warned = review(pod("p").namespace("agents-warn"));
        assert_eq!(warned.decision(), Some(Decision::Warned));
        assert_eq!(warned.warnings().len(), 1);
        assert!(warned.warnings()[0].starts_with("NoIdentity: "));
        let audited = review(pod("p").namespace("agents-audit"));
        assert_eq!(audited.decision(), Some(Decision::Audited));
        assert!(audited.warnings().is_empty());
    }

    #[test]
    fn every_failed_rule_is_listed_in_one_message() {
        let verdict = review(pod("p").agent("researcher").host_network().automount(true));
        assert_eq!(
            verdict.codes(),
            ["ServiceAccountMismatch", "HostNetwork", "TokenTTL"]
        );
        let message = verdict.message().unwrap_or_default();
        assert!(message.contains("(3 rules failed)"), "{message}");
    }

    #[test]
    fn an_unknown_mode_label_on_a_namespace_enforces() {
        let namespace = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("odd".into()),
            labels: Some(BTreeMap::from([(
                MODE_LABEL.to_owned(),
                "strict".to_owned(),
            )])),
            ..Default::default()
        };
        let snapshot = Snapshot::builder(Authority::default())
            .namespace(&namespace)
            .build();
        let verdict = review_with(&snapshot, pod("p").namespace("odd"));
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }
    /// `edit` (its secrets and exec rules) bound to `service_account` of `namespace` through a
    /// RoleBinding there.
    fn with_edit_bound_to(
        builder: crate::authority::AuthorityBuilder,
        namespace: &str,
        service_account: &str,
    ) -> crate::authority::AuthorityBuilder {
        let role: k8s_openapi::api::rbac::v1::ClusterRole =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "edit"}, "rules": [
                {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]},
                {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]},
            ]}))
            .unwrap_or_else(|e| panic!("{e}"));
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "edit-bot", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": service_account}],
            }))
            .unwrap_or_else(|e| panic!("{e}"));
        builder.cluster_role(&role).role_binding(&binding)
    }

    #[test]
    fn a_pod_whose_service_account_holds_dangerous_api_rights_is_refused_naming_them() {
        let snapshot = snapshot_with(|b| with_edit_bound_to(b, NS, "researcher"));
        let verdict = review_with(&snapshot, pod("p").runs_as("researcher"));
        assert_eq!(verdict.codes(), ["DangerousApiRights"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        let detail = &verdict.all_findings()[0].detail;
        assert!(
            detail.contains(
                "RoleBinding agents/edit-bot -> ClusterRole edit grants in agents: get,list \
                 secrets, create pods/exec"
            ),
            "{detail}"
        );
    }

    #[test]
    fn dangerous_api_rights_warn_in_a_warn_namespace_and_others_rights_do_not_count() {
        let snapshot = snapshot_with(|b| {
            let b = with_edit_bound_to(b, "agents-warn", "researcher");
            b.identity(
                identity("researcher")
                    .namespace("agents-warn")
                    .ready()
                    .build(),
            )
            .binding(
                binding("search")
                    .namespace("agents-warn")
                    .agent("researcher")
                    .tool(tool("web-search"))
                    .build(),
            )
        });
        let warned = review_with(
            &snapshot,
            pod("p").namespace("agents-warn").runs_as("researcher"),
        );
        assert_eq!(warned.decision(), Some(Decision::Warned));
        assert_eq!(warned.codes(), ["DangerousApiRights"]);
        // The same name in `agents` is another ServiceAccount: the RoleBinding lives elsewhere.
        let allowed = review_with(&snapshot, pod("p").runs_as("researcher"));
        assert_eq!(allowed.decision(), Some(Decision::Allowed), "{allowed:?}");
    }
}
