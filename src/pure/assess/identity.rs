//! An AgentIdentity assessed: the identity, the authority snapshot of its namespace, the
//! Services its tools name and the instant in; its projections (ServiceAccount, NetworkPolicy),
//! its status (SPIFFE ID, live tools, delegation, escalation paths and the four conditions), the
//! events that report what changed since the status it carries, and the next instant its
//! authority changes by itself out. Pure.
//!
//! The conditions tell one story:
//! - `Ready`: pods of this agent can run: its ServiceAccount and NetworkPolicy are applied and
//!   it holds at least one live tool. False with the blocking finding's code when its
//!   ServiceAccount belongs to someone else (never adopted), or `NoLiveTools`.
//! - `ToolsBound`: at least one tool is live now.
//! - `Isolated`: its NetworkPolicy is applied (tool destinations left out are named).
//! - `DelegationSafe`: no delegation chain through it escalates authority.
//! - `NetworkExclusive`: no NetworkPolicy but mandate's can select its pods. False (reason
//!   `ForeignNetworkPolicy`, each policy named, with a warning event when the set changes)
//!   when one can (`authority::network`): NetworkPolicies add up, so it widens the agent. It
//!   does not make the identity not Ready: mandate cannot take the policy away, only report it
//!   (and refuse new ones in agent namespaces).
//! - `CredentialsStale`: True when a pod of the agent lacks the token of a tool it holds now
//!   (its `mandate.dev/tool-credentials` annotation does not name the tool: it started before
//!   the tool was granted), naming the pods and tools, with a warning event when it turns True;
//!   False when every pod the index knows has every live tool's token. Left as it is when the
//!   caller knows no pods (`mandate check`). It does not make the identity not Ready: the
//!   pod is short of a tool, not of its boundary.
//! - `ServiceAccountGuarded`: every pod that runs as its ServiceAccount reaches admission, so
//!   the hijack rule covers it: True when its namespace carries `mandate.dev/mode`. False
//!   (reason `NamespaceNotOptedIn`) elsewhere, where only pods labelled `mandate.dev/agent`
//!   are sent to mandate: an unlabelled pod running as the ServiceAccount is not checked
//!   ([`service_account_guard`], which `mandate inventory` applies too). It does not make the
//!   identity not Ready.
//! - `ApiRightsContained`: its ServiceAccount holds no dangerous Kubernetes API right through
//!   RBAC (`authority::rights`). False (reason `DangerousApiRights`, each right named with the
//!   binding and role granting it, with a warning event when the set changes) when it does. It
//!   does not make the identity not Ready either: admission refuses its pods in enforce mode from
//!   the live RBAC state (`DangerousApiRights`), so there is no reconcile lag, and warn and audit
//!   namespaces keep their agents running while the grant is reported.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Event;
use super::api_rights::{API_RIGHTS_CONTAINED_EVENT, api_rights_condition};
use crate::admission::credentials::{AgentPod, stale_pods};
use crate::api::conditions::{
    self, API_RIGHTS_CONTAINED, CREDENTIALS_STALE, DELEGATION_SAFE, ISOLATED, NETWORK_EXCLUSIVE,
    READY, SERVICE_ACCOUNT_GUARDED, TOOLS_BOUND,
};
use crate::api::{AGENT_LABEL, AgentIdentity, AgentIdentityStatus, MODE_LABEL};
use crate::authority::network::foreign_policies_selecting;
use crate::authority::{Authority, Finding, Reason};
use crate::project::{
    self, NetworkConfig, NetworkInputs, ProjectError, ServiceDirectory, TrustDomain,
};

/// Ready's reason when the projections are applied and a tool is live.
pub const PROJECTED: &str = "Projected";
/// Ready's and ToolsBound's reason when no ToolBinding grants a tool now.
pub const NO_LIVE_TOOLS: &str = "NoLiveTools";
/// CredentialsStale's reason when a pod lacks a live tool's token (True).
pub const PODS_MISSING_CREDENTIALS: &str = "PodsMissingCredentials";
/// CredentialsStale's reason when no pod does (False), and the event when that is so again.
pub const CREDENTIALS_CURRENT: &str = "CredentialsCurrent";
/// ServiceAccountGuarded's reason when the namespace carries `mandate.dev/mode`.
pub const NAMESPACE_OPTED_IN: &str = "NamespaceOptedIn";
/// ServiceAccountGuarded's reason when it does not: unlabelled pods are not reviewed there.
pub const NAMESPACE_NOT_OPTED_IN: &str = "NamespaceNotOptedIn";

/// Whether every pod running as an agent's ServiceAccount reaches admission, and what to do
/// when not: the `ServiceAccountGuarded` condition, and `mandate inventory`'s report of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountGuard {
    pub guarded: bool,
    /// [`NAMESPACE_OPTED_IN`] or [`NAMESPACE_NOT_OPTED_IN`].
    pub reason: &'static str,
    pub message: String,
}

/// The guard of ServiceAccount `service_account` in `namespace`, opted in (labelled
/// `mandate.dev/mode`) or not. Only a namespace's label puts unlabelled pods in the webhooks'
/// scope: elsewhere only pods labelled `mandate.dev/agent` are sent to mandate.
pub fn service_account_guard(
    namespace: &str,
    service_account: &str,
    opted_in: bool,
) -> ServiceAccountGuard {
    if opted_in {
        ServiceAccountGuard {
            guarded: true,
            reason: NAMESPACE_OPTED_IN,
            message: format!(
                "namespace {namespace} is opted in ({MODE_LABEL}): every pod running as \
                 ServiceAccount {service_account} is reviewed, labelled or not"
            ),
        }
    } else {
        ServiceAccountGuard {
            guarded: false,
            reason: NAMESPACE_NOT_OPTED_IN,
            message: format!(
                "pods running as ServiceAccount {service_account} without the {AGENT_LABEL} \
                 label are not checked: namespace {namespace} has no {MODE_LABEL} label, so only \
                 labelled pods reach mandate; opt it in (kubectl label namespace {namespace} \
                 {MODE_LABEL}=enforce, or warn or audit) to have every pod reviewed"
            ),
        }
    }
}

/// What an identity is assessed against besides itself.
#[derive(Clone, Copy)]
pub struct IdentityInputs<'a> {
    pub authority: &'a Authority,
    pub trust_domain: &'a TrustDomain,
    pub network: &'a NetworkConfig,
    pub services: &'a dyn ServiceDirectory,
    /// The NetworkPolicies of the identity's namespace (others are ignored), mandate's among
    /// them: the foreign ones that can select its pods are reported.
    pub network_policies: &'a [std::sync::Arc<NetworkPolicy>],
    /// The identity's pods (labelled with its name in its namespace), as far as the caller
    /// knows them; `None` when it knows no pods at all, and `CredentialsStale` is left alone.
    pub pods: Option<&'a [AgentPod]>,
    /// Whether the identity's namespace carries `mandate.dev/mode` (ServiceAccountGuarded).
    pub namespace_opted_in: bool,
    pub now: Timestamp,
}

/// What the operator makes true for one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityAssessment {
    /// `None` while the ServiceAccount belongs to another identity or to a workload mandate
    /// does not manage: it is never adopted.
    pub service_account: Option<ServiceAccount>,
    pub network_policy: NetworkPolicy,
    pub status: AgentIdentityStatus,
    /// What changed since the status the identity carries (empty when nothing did).
    pub events: Vec<Event>,
    /// The next instant strictly after `now` at which the identity's authority changes.
    pub next_change: Option<Timestamp>,
}

/// The findings that keep an identity's ServiceAccount from being projected: another identity
/// claims it, or it exists without being mandate's.
pub fn service_account_blockers(authority: &Authority, identity: &AgentIdentity) -> Vec<Finding> {
    authority
        .validate_identity(identity)
        .into_iter()
        .filter(|f| {
            matches!(
                f.reason,
                Reason::ServiceAccountClaimed | Reason::ServiceAccountUnmanaged
            )
        })
        .collect()
}

/// Whether an identity's status says its projections are applied, as admission reads it:
/// `Ready`, or not Ready only for want of a live tool (which admission reports on its own, as
/// `NoBoundTools`, from the live authority).
pub fn projections_applied(status: Option<&AgentIdentityStatus>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|ready| ready.status == conditions::TRUE || ready.reason == NO_LIVE_TOOLS)
}

/// Assesses `identity`. Fails only when it cannot be projected at all (no uid or namespace:
/// it was not read from the API server).
pub fn assess_identity(
    identity: &AgentIdentity,
    inputs: &IdentityInputs<'_>,
) -> Result<IdentityAssessment, ProjectError> {
    let IdentityInputs { authority, now, .. } = *inputs;
    let name = identity.name_any();
    let namespace = identity.namespace().unwrap_or_default();
    let blockers = service_account_blockers(authority, identity);
    let service_account = project::desired_service_account(identity, inputs.trust_domain)?;
    let sa_name = service_account.name_any();

    let graph = authority.delegation_graph(&namespace, now);
    let desired = project::desired_network_policy(
        identity,
        &NetworkInputs {
            authority,
            graph: &graph,
            services: inputs.services,
            config: inputs.network,
            now,
        },
    )?;
    let np_name = desired.policy.name_any();

    let tools = authority.live_tools(&namespace, &name, now);
    let distinct_tools = tools
        .iter()
        .map(|t| t.name.as_str())
        .collect::<BTreeSet<_>>();
    let tool_count = distinct_tools.len();
    let escalation_paths = graph.escalation_paths(&name);
    let generation = identity.metadata.generation;
    let set = |conditions: &mut Vec<_>, type_, status, reason: &str, message: String| {
        conditions::set(
            conditions,
            conditions::new(type_, status, reason, message, generation, Time(now)),
        );
    };

    let previous = identity.status.clone().unwrap_or_default();
    let mut conditions_now = previous.conditions.clone();
    if tool_count == 0 {
        set(
            &mut conditions_now,
            TOOLS_BOUND,
            false,
            NO_LIVE_TOOLS,
            "no ToolBinding grants this agent a tool now".to_owned(),
        );
    } else {
        set(
            &mut conditions_now,
            TOOLS_BOUND,
            true,
            "ToolsLive",
            format!(
                "{tool_count} tool(s) live: {}",
                distinct_tools
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let left_out: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
    set(
        &mut conditions_now,
        ISOLATED,
        true,
        "NetworkPolicyApplied",
        if left_out.is_empty() {
            format!("NetworkPolicy {np_name} applied")
        } else {
            format!(
                "NetworkPolicy {np_name} applied; left out: {}",
                left_out.join("; ")
            )
        },
    );
    if escalation_paths.is_empty() {
        set(
            &mut conditions_now,
            DELEGATION_SAFE,
            true,
            "NoEscalation",
            "no delegation chain through this agent escalates authority".to_owned(),
        );
    } else {
        set(
            &mut conditions_now,
            DELEGATION_SAFE,
            false,
            "EscalationPath",
            format!(
                "network paths of unsafe delegations are withdrawn: {}",
                escalation_paths.join("; ")
            ),
        );
    }
    let foreign = foreign_policies_selecting(
        inputs.network_policies.iter().map(AsRef::as_ref),
        &namespace,
        &name,
        authority,
    );
    if foreign.is_empty() {
        set(
            &mut conditions_now,
            NETWORK_EXCLUSIVE,
            true,
            "NoForeignPolicy",
            "no NetworkPolicy but mandate's can select this agent's pods".to_owned(),
        );
    } else {
        set(
            &mut conditions_now,
            NETWORK_EXCLUSIVE,
            false,
            Reason::ForeignNetworkPolicy.code(),
            foreign_message(&foreign),
        );
    }
    if let Some(pods) = inputs.pods {
        let (stale, reason, message) = credentials_condition(pods, &distinct_tools);
        set(
            &mut conditions_now,
            CREDENTIALS_STALE,
            stale,
            reason,
            message,
        );
    }
    let guard = service_account_guard(&namespace, &sa_name, inputs.namespace_opted_in);
    set(
        &mut conditions_now,
        SERVICE_ACCOUNT_GUARDED,
        guard.guarded,
        guard.reason,
        guard.message,
    );
    let (contained, reason, message) =
        api_rights_condition(&sa_name, &authority.api_rights(&namespace, &sa_name));
    set(
        &mut conditions_now,
        API_RIGHTS_CONTAINED,
        contained,
        reason,
        message,
    );
    match blockers.first() {
        Some(finding) => set(
            &mut conditions_now,
            READY,
            false,
            finding.reason.code(),
            finding.detail.clone(),
        ),
        None if tool_count == 0 => set(
            &mut conditions_now,
            READY,
            false,
            NO_LIVE_TOOLS,
            format!(
                "ServiceAccount {sa_name} and NetworkPolicy {np_name} applied, but no ToolBinding \
                 grants a tool now: its pods are refused (NoBoundTools) until one does"
            ),
        ),
        None => set(
            &mut conditions_now,
            READY,
            true,
            PROJECTED,
            format!("ServiceAccount {sa_name} and NetworkPolicy {np_name} applied"),
        ),
    }

    let status = AgentIdentityStatus {
        spiffe_id: Some(project::spiffe_id(
            inputs.trust_domain,
            &namespace,
            &sa_name,
        )),
        service_account: Some(sa_name),
        network_policy: Some(np_name),
        tool_count: i32::try_from(tool_count).unwrap_or(i32::MAX),
        tools,
        delegates_to: graph
            .delegates_to(&name)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        delegated_from: graph
            .delegated_from(&name)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        escalation_paths,
        observed_generation: generation,
        conditions: conditions_now,
    };
    Ok(IdentityAssessment {
        service_account: blockers.is_empty().then_some(service_account),
        network_policy: desired.policy,
        events: changes(&previous, &status),
        next_change: authority.next_boundary(&namespace, &name, now),
        status,
    })
}

/// How many stale pods the CredentialsStale message names before it only counts the rest.
const STALE_PODS_NAMED: usize = 10;

/// CredentialsStale's status, reason and message for `pods` and the live tool names.
fn credentials_condition(pods: &[AgentPod], live: &BTreeSet<&str>) -> (bool, &'static str, String) {
    let stale = stale_pods(pods, live);
    if stale.is_empty() {
        // Worded without the number of pods: a pod coming or going must not rewrite the
        // status of every agent whose pods are all current.
        return (
            false,
            CREDENTIALS_CURRENT,
            "every pod of the agent holds a token for each tool it holds now".to_owned(),
        );
    }
    let mut named: Vec<String> = stale
        .iter()
        .take(STALE_PODS_NAMED)
        .map(|s| format!("pod {} lacks {}", s.pod, s.missing.join(", ")))
        .collect();
    if stale.len() > STALE_PODS_NAMED {
        named.push(format!(
            "and {} more pod(s)",
            stale.len() - STALE_PODS_NAMED
        ));
    }
    (
        true,
        PODS_MISSING_CREDENTIALS,
        format!(
            "{}: they started before the tool was granted; recreate them (delete the pods, their \
             controllers start new ones) to give them every live tool's token",
            named.join("; ")
        ),
    )
}

/// The NetworkExclusive message naming the foreign policies.
fn foreign_message(policies: &[String]) -> String {
    format!(
        "NetworkPolicy {} not written by mandate can select this agent's pods and widens what \
         its mandate allows (NetworkPolicies add up): delete it, or make its podSelector exclude \
         the agent (mandate.dev/agent DoesNotExist)",
        policies.join(", ")
    )
}

/// One event per change of authority between two statuses: tools granted or withdrawn,
/// escalation paths that appear or clear, foreign NetworkPolicies that appear, dangerous API
/// rights that appear, change or clear, and the identity falling out of Ready.
fn changes(before: &AgentIdentityStatus, after: &AgentIdentityStatus) -> Vec<Event> {
    let names = |s: &AgentIdentityStatus| -> BTreeSet<String> {
        s.tools
            .iter()
            .map(|t| format!("{} (ToolBinding {})", t.name, t.binding))
            .collect()
    };
    let (had, has) = (names(before), names(after));
    let mut events = Vec::new();
    let granted: Vec<_> = has.difference(&had).cloned().collect();
    if !granted.is_empty() {
        events.push(Event::normal(
            "ToolsGranted",
            format!("now holds {}", granted.join(", ")),
        ));
    }
    let withdrawn: Vec<_> = had.difference(&has).cloned().collect();
    if !withdrawn.is_empty() {
        events.push(Event::normal(
            "ToolsWithdrawn",
            format!("no longer holds {}", withdrawn.join(", ")),
        ));
    }
    for path in after
        .escalation_paths
        .iter()
        .filter(|p| !before.escalation_paths.contains(p))
    {
        events.push(Event::warning(
            "EscalationPath",
            format!("{path}; its network path is withdrawn"),
        ));
    }
    if !before.escalation_paths.is_empty() && after.escalation_paths.is_empty() {
        events.push(Event::normal(
            "DelegationSafe",
            "no escalation path remains",
        ));
    }
    let exclusive = |s: &AgentIdentityStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == NETWORK_EXCLUSIVE)
            .filter(|c| c.status == conditions::FALSE)
            .map(|c| c.message.clone())
    };
    if let Some(message) = exclusive(after).filter(|now| exclusive(before).as_ref() != Some(now)) {
        events.push(Event::warning(Reason::ForeignNetworkPolicy.code(), message));
    }
    let stale = |s: &AgentIdentityStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == CREDENTIALS_STALE)
            .map(|c| (c.status == conditions::TRUE, c.message.clone()))
    };
    match (stale(before), stale(after)) {
        (Some((true, _)), Some((false, _))) => events.push(Event::normal(
            CREDENTIALS_CURRENT,
            "every pod of the agent holds a token for every live tool again",
        )),
        (Some((false, _)) | None, Some((true, message))) => {
            events.push(Event::warning(CREDENTIALS_STALE, message));
        }
        _ => {}
    }
    let api_rights = |s: &AgentIdentityStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == API_RIGHTS_CONTAINED)
            .map(|c| (c.status == conditions::TRUE, c.message.clone()))
    };
    match (api_rights(before), api_rights(after)) {
        (Some((false, _)), Some((true, message))) => {
            events.push(Event::normal(API_RIGHTS_CONTAINED_EVENT, message));
        }
        (was, Some((false, message))) if was != Some((false, message.clone())) => {
            events.push(Event::warning(Reason::DangerousApiRights.code(), message));
        }
        _ => {}
    }
    fn ready(
        s: &AgentIdentityStatus,
    ) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        s.conditions.iter().find(|c| c.type_ == READY)
    }
    let was_ready = ready(before).is_some_and(|c| c.status == conditions::TRUE);
    let fell = match ready(after) {
        Some(now) if now.status != conditions::TRUE => {
            // First assessment, a fall from Ready, or a new reason for not being Ready.
            was_ready || ready(before).is_none_or(|c| c.reason != now.reason)
        }
        _ => false,
    };
    if fell && let Some(c) = ready(after) {
        events.push(Event::warning("NotReady", c.message.clone()));
    }
    events
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use crate::api::conditions::{FALSE, TRUE};
    use crate::authority::fixtures::{
        NOW, binding, hours, identity, policy, service_account, tool,
    };
    use crate::project::Services;

    struct World {
        authority: Authority,
        services: Services,
        network_policies: Vec<std::sync::Arc<NetworkPolicy>>,
        pods: Option<Vec<AgentPod>>,
        trust_domain: TrustDomain,
        network: NetworkConfig,
        opted_in: bool,
    }

    impl World {
        fn of(authority: Authority) -> Self {
            World {
                authority,
                services: Services::new(),
                network_policies: Vec::new(),
                pods: None,
                trust_domain: TrustDomain::default(),
                network: NetworkConfig::default(),
                opted_in: true,
            }
        }

        fn identity(&self, name: &str) -> AgentIdentity {
            self.authority
                .identity(crate::authority::fixtures::NS, name)
                .cloned()
                .unwrap_or_else(|| panic!("no identity {name}"))
        }

        fn assess_at(&self, name: &str, now: Timestamp) -> IdentityAssessment {
            self.assess_object(&self.identity(name), now)
        }

        fn assess_object(&self, identity: &AgentIdentity, now: Timestamp) -> IdentityAssessment {
            assess_identity(
                identity,
                &IdentityInputs {
                    authority: &self.authority,
                    trust_domain: &self.trust_domain,
                    network: &self.network,
                    services: &self.services,
                    network_policies: &self.network_policies,
                    pods: self.pods.as_deref(),
                    namespace_opted_in: self.opted_in,
                    now,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
        }

        fn assess(&self, name: &str) -> IdentityAssessment {
            self.assess_at(name, NOW)
        }
    }

    fn condition<'a>(
        assessment: &'a IdentityAssessment,
        type_: &str,
    ) -> (&'a str, &'a str, &'a str) {
        let c = assessment
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {:#?}", assessment.status.conditions));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    fn reasons(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.reason).collect()
    }

    fn with_tools() -> World {
        World::of(
            Authority::builder()
                .identity(identity("researcher").build())
                .binding(
                    binding("researcher-tools")
                        .agent("researcher")
                        .tool(tool("search"))
                        .tool(tool("fetch"))
                        .build(),
                )
                .build(),
        )
    }

    #[test]
    fn an_identity_with_a_live_tool_is_ready_and_projects_both_objects() {
        let assessment = with_tools().assess("researcher");
        assert_eq!(condition(&assessment, READY).0, TRUE);
        assert_eq!(condition(&assessment, READY).1, PROJECTED);
        assert_eq!(condition(&assessment, TOOLS_BOUND).0, TRUE);
        assert_eq!(condition(&assessment, ISOLATED).0, TRUE);
        assert_eq!(condition(&assessment, DELEGATION_SAFE).0, TRUE);
        assert!(assessment.service_account.is_some());
        assert_eq!(
            assessment.network_policy.metadata.name.as_deref(),
            Some("mandate-researcher")
        );
        assert_eq!(assessment.status.tool_count, 2);
        assert_eq!(
            assessment.status.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/agents/sa/researcher")
        );
        assert!(projections_applied(Some(&assessment.status)));
    }

    #[test]
    fn an_identity_in_an_opted_in_namespace_has_its_service_account_guarded() {
        let assessment = with_tools().assess("researcher");
        let (status, reason, _) = condition(&assessment, SERVICE_ACCOUNT_GUARDED);
        assert_eq!((status, reason), (TRUE, NAMESPACE_OPTED_IN));
    }

    #[test]
    fn an_identity_outside_opted_in_namespaces_says_unlabelled_pods_are_not_checked_yet_is_ready() {
        let mut world = with_tools();
        world.opted_in = false;
        let assessment = world.assess("researcher");
        let (status, reason, message) = condition(&assessment, SERVICE_ACCOUNT_GUARDED);
        assert_eq!((status, reason), (FALSE, NAMESPACE_NOT_OPTED_IN));
        assert!(
            message.contains("pods running as ServiceAccount researcher without the mandate.dev/agent label are not checked"),
            "{message}"
        );
        assert!(
            message.contains("kubectl label namespace agents mandate.dev/mode=enforce"),
            "{message}"
        );
        assert_eq!(condition(&assessment, READY).0, TRUE);
    }

    #[test]
    fn an_identity_without_a_live_tool_is_not_ready_for_want_of_tools_yet_is_projected() {
        let world = World::of(
            Authority::builder()
                .identity(identity("idle").build())
                .build(),
        );
        let assessment = world.assess("idle");
        assert_eq!(condition(&assessment, READY).0, FALSE);
        assert_eq!(condition(&assessment, READY).1, NO_LIVE_TOOLS);
        assert!(condition(&assessment, READY).2.contains("NoBoundTools"));
        assert_eq!(condition(&assessment, TOOLS_BOUND).1, NO_LIVE_TOOLS);
        assert!(assessment.service_account.is_some());
        assert_eq!(assessment.status.tool_count, 0);
        assert!(
            projections_applied(Some(&assessment.status)),
            "admission reports the missing tools as NoBoundTools, not as IdentityNotReady"
        );
    }

    #[test]
    fn two_bindings_granting_the_same_tool_count_it_once() {
        let world = World::of(
            Authority::builder()
                .identity(identity("researcher").build())
                .binding(
                    binding("one")
                        .agent("researcher")
                        .tool(tool("search"))
                        .build(),
                )
                .binding(
                    binding("two")
                        .agent("researcher")
                        .tool(tool("search"))
                        .tool(tool("fetch"))
                        .build(),
                )
                .build(),
        );
        let assessment = world.assess("researcher");
        assert_eq!(assessment.status.tool_count, 2);
        assert_eq!(assessment.status.tools.len(), 3, "one entry per grant");
        assert_eq!(
            condition(&assessment, TOOLS_BOUND).2,
            "2 tool(s) live: fetch, search"
        );
    }

    #[test]
    fn a_service_account_held_by_another_workload_is_never_adopted_and_blocks_ready() {
        let world = World::of(
            Authority::builder()
                .identity(identity("squatter").service_account("legacy").build())
                .binding(binding("b").agent("squatter").tool(tool("search")).build())
                .service_account(service_account("legacy").build())
                .build(),
        );
        let assessment = world.assess("squatter");
        assert_eq!(assessment.service_account, None);
        assert_eq!(
            condition(&assessment, READY).1,
            Reason::ServiceAccountUnmanaged.code()
        );
        assert!(!projections_applied(Some(&assessment.status)));
        assert_eq!(reasons(&assessment.events), ["ToolsGranted", "NotReady"]);
    }

    #[test]
    fn a_service_account_claimed_by_another_identity_blocks_ready() {
        let world = World::of(
            Authority::builder()
                .identity(identity("first").build())
                .identity(identity("second").service_account("first").build())
                .service_account(service_account("first").managed_for("first").build())
                .build(),
        );
        let assessment = world.assess("second");
        assert_eq!(
            condition(&assessment, READY).1,
            Reason::ServiceAccountClaimed.code()
        );
        assert_eq!(assessment.service_account, None);
    }

    #[test]
    fn an_unresolvable_service_destination_is_named_in_isolated() {
        let world = World::of(
            Authority::builder()
                .identity(identity("researcher").build())
                .binding(
                    binding("b")
                        .agent("researcher")
                        .tool(tool("db").service("missing", None, [IntOrString::Int(5432)]))
                        .build(),
                )
                .build(),
        );
        let assessment = world.assess("researcher");
        let (status, _, message) = condition(&assessment, ISOLATED);
        assert_eq!(status, TRUE);
        assert!(message.contains("left out"), "{message}");
        assert!(message.contains("missing"), "{message}");
    }

    #[test]
    fn an_escalating_delegation_turns_delegation_safe_false_and_reports_the_path() {
        let world = World::of(
            Authority::builder()
                .identity(identity("planner").build())
                .identity(identity("executor").build())
                .binding(binding("p").agent("planner").tool(tool("search")).build())
                .binding(
                    binding("e")
                        .agent("executor")
                        .tool(tool("search"))
                        .tool(tool("pay"))
                        .build(),
                )
                .policy(
                    policy("delegation")
                        .delegator("planner")
                        .delegate("executor", ["pay"])
                        .build(),
                )
                .build(),
        );
        let assessment = world.assess("planner");
        let (status, reason, _) = condition(&assessment, DELEGATION_SAFE);
        assert_eq!((status, reason), (FALSE, "EscalationPath"));
        assert!(!assessment.status.escalation_paths.is_empty());
        assert!(reasons(&assessment.events).contains(&"EscalationPath"));
    }

    #[test]
    fn an_escalation_path_that_clears_turns_delegation_safe_true_with_an_event() {
        let policy = policy("delegation")
            .delegator("planner")
            .delegate("executor", ["pay"])
            .build();
        let executor = binding("e")
            .agent("executor")
            .tool(tool("search"))
            .tool(tool("pay"))
            .build();
        let unsafe_world = World::of(
            Authority::builder()
                .identity(identity("planner").build())
                .identity(identity("executor").build())
                .binding(binding("p").agent("planner").tool(tool("search")).build())
                .binding(executor.clone())
                .policy(policy.clone())
                .build(),
        );
        let mut planner = unsafe_world.identity("planner");
        planner.status = Some(unsafe_world.assess("planner").status);
        // The planner is granted pay too: the delegation now only hands on what it holds.
        let safe_world = World::of(
            Authority::builder()
                .identity(planner.clone())
                .identity(identity("executor").build())
                .binding(
                    binding("p")
                        .agent("planner")
                        .tool(tool("search"))
                        .tool(tool("pay"))
                        .build(),
                )
                .binding(executor)
                .policy(policy)
                .build(),
        );
        let after = safe_world.assess_object(&planner, NOW);
        assert_eq!(
            condition(&after, DELEGATION_SAFE),
            (
                TRUE,
                "NoEscalation",
                "no delegation chain through this agent escalates authority"
            )
        );
        assert!(after.status.escalation_paths.is_empty());
        assert_eq!(reasons(&after.events), ["ToolsGranted", "DelegationSafe"]);
    }

    #[test]
    fn a_binding_that_expires_is_the_next_change_and_after_it_the_tools_are_withdrawn() {
        let world = World::of(
            Authority::builder()
                .identity(identity("researcher").build())
                .binding(
                    binding("b")
                        .agent("researcher")
                        .tool(tool("search"))
                        .valid_until(hours(2))
                        .build(),
                )
                .build(),
        );
        let before = world.assess("researcher");
        assert_eq!(before.next_change, Some(hours(2)));
        let mut identity = world.identity("researcher");
        identity.status = Some(before.status.clone());
        let after = world.assess_object(&identity, hours(3));
        assert_eq!(condition(&after, READY).1, NO_LIVE_TOOLS);
        assert_eq!(condition(&after, TOOLS_BOUND).0, FALSE);
        assert_eq!(reasons(&after.events), ["ToolsWithdrawn", "NotReady"]);
        assert_eq!(after.next_change, None);
    }

    #[test]
    fn assessing_the_status_it_wrote_changes_nothing_and_reports_nothing() {
        let world = with_tools();
        let first = world.assess("researcher");
        assert_eq!(
            reasons(&first.events),
            ["ToolsGranted"],
            "a first Ready assessment only reports the grant"
        );
        let mut identity = world.identity("researcher");
        identity.status = Some(first.status.clone());
        let again = world.assess_object(&identity, hours(1));
        assert_eq!(again.status, first.status, "transition times are kept");
        assert!(again.events.is_empty());
    }

    fn agent_pod(name: &str, credentials: Option<&str>) -> AgentPod {
        AgentPod {
            name: name.to_owned(),
            credentials: credentials.map(str::to_owned),
        }
    }

    #[test]
    fn a_pod_started_before_a_tool_was_granted_makes_credentials_stale_until_it_is_gone() {
        // researcher holds search and fetch; pod old was given only search.
        let mut world = with_tools();
        world.pods = Some(vec![
            agent_pod("new", Some("fetch,search")),
            agent_pod("old", Some("search")),
        ]);
        let stale = world.assess("researcher");
        let (status, reason, message) = condition(&stale, CREDENTIALS_STALE);
        assert_eq!((status, reason), (TRUE, PODS_MISSING_CREDENTIALS));
        assert!(message.starts_with("pod old lacks fetch: "), "{message}");
        assert!(reasons(&stale.events).contains(&CREDENTIALS_STALE));
        assert_eq!(
            condition(&stale, READY).0,
            TRUE,
            "a stale pod is no boundary"
        );

        let mut identity = world.identity("researcher");
        identity.status = Some(stale.status.clone());
        let again = world.assess_object(&identity, NOW);
        assert!(again.events.is_empty(), "reported once");

        world.pods = Some(vec![agent_pod("new", Some("fetch,search"))]);
        let current = world.assess_object(&identity, NOW);
        let mut identity = world.identity("researcher");
        identity.status = Some(current.status.clone());
        world.pods = Some(vec![
            agent_pod("new", Some("fetch,search")),
            agent_pod("newer", Some("fetch,search")),
        ]);
        assert_eq!(
            world.assess_object(&identity, NOW).status,
            current.status,
            "another current pod changes nothing, so nothing is written"
        );
        assert_eq!(
            condition(&current, CREDENTIALS_STALE).0,
            FALSE,
            "{:?}",
            condition(&current, CREDENTIALS_STALE)
        );
        assert_eq!(reasons(&current.events), [CREDENTIALS_CURRENT]);
    }

    #[test]
    fn many_stale_pods_are_named_up_to_ten_and_counted_beyond() {
        let mut world = with_tools();
        world.pods = Some(
            (0..12)
                .map(|i| agent_pod(&format!("p{i:02}"), None))
                .collect(),
        );
        let assessment = world.assess("researcher");
        let message = condition(&assessment, CREDENTIALS_STALE).2;
        assert!(
            message.contains("pod p09 lacks fetch, search; and 2 more pod(s):"),
            "{message}"
        );
    }

    #[test]
    fn without_knowing_any_pod_the_credentials_condition_is_left_out() {
        let assessment = with_tools().assess("researcher");
        assert!(
            !assessment
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == CREDENTIALS_STALE)
        );
        let mut world = with_tools();
        world.pods = Some(Vec::new());
        assert_eq!(
            condition(&world.assess("researcher"), CREDENTIALS_STALE).1,
            CREDENTIALS_CURRENT
        );
    }

    #[test]
    fn a_status_without_a_ready_condition_has_no_projections_applied() {
        assert!(!projections_applied(None));
        assert!(!projections_applied(Some(&AgentIdentityStatus::default())));
    }

    fn foreign(name: &str, selector: serde_json::Value) -> std::sync::Arc<NetworkPolicy> {
        std::sync::Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": crate::authority::fixtures::NS},
                "spec": {"podSelector": selector},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn a_foreign_policy_that_can_select_the_agent_is_reported_once_and_clears_when_gone() {
        let mut world = with_tools();
        let exclusive = world.assess("researcher");
        assert_eq!(condition(&exclusive, NETWORK_EXCLUSIVE).0, TRUE);
        // Its own projection is mandate's (controller-owned by the live identity's uid).
        world.network_policies = vec![
            std::sync::Arc::new(exclusive.network_policy.clone()),
            foreign("allow-all", serde_json::json!({})),
            foreign(
                "not-agents",
                serde_json::json!({"matchExpressions": [
                    {"key": "mandate.dev/agent", "operator": "DoesNotExist"}]}),
            ),
            foreign(
                "writer-only",
                serde_json::json!({"matchLabels": {"mandate.dev/agent": "writer"}}),
            ),
        ];
        let mut identity = world.identity("researcher");
        identity.status = Some(exclusive.status.clone());
        let widened = world.assess_object(&identity, NOW);
        let (status, reason, message) = condition(&widened, NETWORK_EXCLUSIVE);
        assert_eq!((status, reason), (FALSE, "ForeignNetworkPolicy"));
        assert!(
            message.starts_with("NetworkPolicy allow-all not written"),
            "{message}"
        );
        assert_eq!(reasons(&widened.events), ["ForeignNetworkPolicy"]);
        assert_eq!(condition(&widened, READY).0, TRUE, "reported, not blocking");

        identity.status = Some(widened.status.clone());
        let again = world.assess_object(&identity, NOW);
        assert!(again.events.is_empty(), "reported once");
        world.network_policies.truncate(1);
        let cleared = world.assess_object(&identity, NOW);
        assert_eq!(condition(&cleared, NETWORK_EXCLUSIVE).0, TRUE);
    }
    #[test]
    fn a_dangerous_api_right_turns_api_rights_contained_false_once_and_true_when_gone() {
        let impersonator: k8s_openapi::api::rbac::v1::ClusterRole =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "impersonator"},
                "rules": [{"verbs": ["impersonate"], "apiGroups": [""],
                    "resources": ["serviceaccounts"]}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        let to_namespace_accounts: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "impersonator"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:agents"}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        let contained = with_tools().assess("researcher");
        assert_eq!(
            condition(&contained, API_RIGHTS_CONTAINED),
            (
                TRUE,
                "NoDangerousRights",
                "ServiceAccount researcher holds no dangerous Kubernetes API right"
            )
        );

        let granted = World::of(
            Authority::builder()
                .identity(identity("researcher").build())
                .binding(
                    binding("researcher-tools")
                        .agent("researcher")
                        .tool(tool("search"))
                        .tool(tool("fetch"))
                        .build(),
                )
                .cluster_role(&impersonator)
                .cluster_role_binding(&to_namespace_accounts)
                .build(),
        );
        let mut identity = granted.identity("researcher");
        identity.status = Some(contained.status.clone());
        let widened = granted.assess_object(&identity, NOW);
        let (status, reason, message) = condition(&widened, API_RIGHTS_CONTAINED);
        assert_eq!((status, reason), (FALSE, "DangerousApiRights"));
        assert!(
            message.contains(
                "ClusterRoleBinding x -> ClusterRole impersonator grants cluster-wide: \
                 impersonate serviceaccounts"
            ),
            "{message}"
        );
        assert_eq!(condition(&widened, READY).0, TRUE, "reported, not blocking");
        assert!(reasons(&widened.events).contains(&"DangerousApiRights"));

        identity.status = Some(widened.status.clone());
        let again = granted.assess_object(&identity, NOW);
        assert!(again.events.is_empty(), "reported once");

        let cleared = with_tools().assess_object(&identity, NOW);
        assert_eq!(condition(&cleared, API_RIGHTS_CONTAINED).0, TRUE);
        assert_eq!(reasons(&cleared.events), ["ApiRightsContained"]);
    }
}
