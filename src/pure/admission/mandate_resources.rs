//! Admission of mandate's own resources: a proposed AgentIdentity, ToolBinding or
//! DelegationPolicy (and the object it replaces, on update), the requesting user, a
//! [`Snapshot`] and the time in; an always-enforced [`Verdict`] out. One review for the three
//! kinds ([`review_resource`]), each kind saying what differs through [`MandateResource`] (as
//! linkerd's policy controller admits every kind through one generic `admit_spec`). The shared
//! validator (`Authority::validate_*`, the reconciler's rulebook) decides what the object may
//! say; this module adds the rules that need the requester: no self-escalation, four eyes on
//! High-risk grants (declared or raised by the risk floor) and on owner changes, and who may
//! write the status of mandate's kinds ([`review_status`]). Pure: never does I/O.

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::network_policy::is_operator;
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Mode, Verdict};
use crate::api::{
    AgentIdentity, AgentIdentitySpec, DelegationPolicy, DelegationPolicySpec, Owner, OwnerKind,
    OwnerRef, PodSecurityExemption, ToolBinding, ToolBindingSpec,
};
use crate::authority::{Finding, Reason, exemption_rules};

/// Who sends a request, as the API server's authentication saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

/// The prefix of a ServiceAccount's username: `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

impl<'a> Requester<'a> {
    pub fn new(username: &'a str, groups: &'a [String]) -> Self {
        Requester { username, groups }
    }

    pub fn from_user_info(user: &'a UserInfo) -> Self {
        Requester {
            username: user.username.as_deref().unwrap_or_default(),
            groups: user.groups.as_deref().unwrap_or_default(),
        }
    }

    /// The (namespace, name) of the ServiceAccount the requester authenticated as.
    pub fn service_account(&self) -> Option<(&'a str, &'a str)> {
        self.username
            .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?
            .split_once(':')
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What admission needs to know of one of mandate's own kinds: how its spec reads, whom it
/// concerns, and the rules it is held to besides self-escalation. Implemented by
/// [`AgentIdentity`], [`ToolBinding`] and [`DelegationPolicy`]; [`review_resource`] is the one
/// review of all three.
pub trait MandateResource: kube::Resource<DynamicType = ()> + Sized {
    /// The spec: what an update must change to be reviewed again.
    type Spec: DeserializeOwned + PartialEq;

    /// The object made of its metadata and spec. Admission reads nothing else: a status is the
    /// reconciler's, and a request never changes who may write it.
    fn from_parts(metadata: ObjectMeta, spec: Self::Spec) -> Self;

    fn spec(&self) -> &Self::Spec;

    /// The agent the object concerns (the `agent` audit annotation).
    fn agent(&self) -> &str;

    /// The agent's accountable owner: as the snapshot knows it, unless the object names it.
    fn owner<'a>(&'a self, snapshot: &'a Snapshot) -> Option<&'a Owner> {
        let namespace = self.meta().namespace.as_deref().unwrap_or_default();
        snapshot.authority().owner(namespace, self.agent())
    }

    /// The rules of this kind: the shared validator's (the reconciler's rulebook), and any that
    /// need the requester (and, on update, the object replaced: `old`).
    fn rules(
        &self,
        old: Option<&Self>,
        requester: Requester<'_>,
        snapshot: &Snapshot,
        config: &AdmissionConfig,
        now: Timestamp,
    ) -> Vec<Finding>;
}

impl MandateResource for AgentIdentity {
    type Spec = AgentIdentitySpec;

    fn from_parts(metadata: ObjectMeta, spec: Self::Spec) -> Self {
        AgentIdentity {
            metadata,
            spec,
            status: None,
        }
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    fn agent(&self) -> &str {
        names(&self.metadata).1
    }

    fn owner<'a>(&'a self, _snapshot: &'a Snapshot) -> Option<&'a Owner> {
        Some(&self.spec.owner)
    }

    /// Four eyes on an owner change and on every Pod Security exemption added or changed;
    /// every exemption approved for the (new) owner; and the validator's rules.
    fn rules(
        &self,
        old: Option<&Self>,
        requester: Requester<'_>,
        snapshot: &Snapshot,
        config: &AdmissionConfig,
        _now: Timestamp,
    ) -> Vec<Finding> {
        let mut findings = owner_change_four_eyes(self, old, requester, config);
        findings.extend(exemption_four_eyes(self, old, requester, config));
        findings.extend(exemption_rules(self));
        findings.extend(snapshot.authority().validate_identity(self));
        findings
    }
}

impl MandateResource for ToolBinding {
    type Spec = ToolBindingSpec;

    fn from_parts(metadata: ObjectMeta, spec: Self::Spec) -> Self {
        ToolBinding {
            metadata,
            spec,
            status: None,
        }
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    fn agent(&self) -> &str {
        &self.spec.agent
    }

    /// Four eyes when it grants a High-risk tool (declared, or raised by the risk floor), and
    /// the validator's rules (which also want the approval given for the current owner).
    fn rules(
        &self,
        _old: Option<&Self>,
        requester: Requester<'_>,
        snapshot: &Snapshot,
        config: &AdmissionConfig,
        now: Timestamp,
    ) -> Vec<Finding> {
        let mut findings = tool_four_eyes(self, requester, snapshot, config);
        findings.extend(snapshot.authority().validate_binding(self, now));
        findings
    }
}

impl MandateResource for DelegationPolicy {
    type Spec = DelegationPolicySpec;

    fn from_parts(metadata: ObjectMeta, spec: Self::Spec) -> Self {
        DelegationPolicy {
            metadata,
            spec,
            status: None,
        }
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    /// The delegator.
    fn agent(&self) -> &str {
        &self.spec.delegator
    }

    /// The validator checks the namespace's delegation graph as if the policy were applied.
    fn rules(
        &self,
        _old: Option<&Self>,
        _requester: Requester<'_>,
        snapshot: &Snapshot,
        _config: &AdmissionConfig,
        now: Timestamp,
    ) -> Vec<Finding> {
        snapshot.authority().validate_policy(self, now)
    }
}

/// Reviews a mandate resource being created (`old` is `None`) or changed: no self-escalation
/// ever, and the kind's own rules unless an update leaves the spec alone. Always enforced.
pub fn review_resource<R: MandateResource>(
    object: &R,
    old: Option<&R>,
    requester: Requester<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let (namespace, name) = names(object.meta());
    let kind = R::kind(&());
    let mut verdict = Verdict::reviewed(format!("{kind} {namespace}/{name}"), Mode::Enforce)
        .agent(object.agent());
    if let Some(owner) = object.owner(snapshot) {
        verdict = verdict.owner(owner);
    }
    verdict = verdict.findings(self_escalation(requester, snapshot));
    if old.is_some_and(|old| old.spec() == object.spec()) {
        return verdict;
    }
    verdict.findings(object.rules(old, requester, snapshot, config, now))
}

fn names(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name
            .as_deref()
            .or(meta.generate_name.as_deref())
            .unwrap_or_default(),
    )
}

/// An agent's ServiceAccount may never create or change mandate resources.
fn self_escalation(requester: Requester<'_>, snapshot: &Snapshot) -> Option<Finding> {
    let (namespace, service_account) = requester.service_account()?;
    let agent = snapshot.agent_of_service_account(namespace, service_account)?;
    Some(Finding::new(
        Reason::SelfEscalation,
        format!(
            "the request comes from ServiceAccount {namespace}/{service_account} of agent \
             {agent}, and agents may not create or change mandate resources: have the agent's \
             owner or a platform administrator apply it"
        ),
    ))
}

/// Who may write the status of mandate's kinds (`agentidentities/status`, ...): mandate alone
/// (`AdmissionConfig::operator_users`). Admission trusts what a status says (an identity's
/// Ready), so anyone else's write is refused (`ProtectedStatus`), whoever it is and whatever
/// it writes; the snapshot is not needed, so this holds before the caches synced too.
pub fn review_status(
    subject: String,
    agent: Option<&str>,
    requester: Requester<'_>,
    config: &AdmissionConfig,
) -> Verdict {
    let mut verdict = Verdict::reviewed(subject, Mode::Enforce);
    if let Some(agent) = agent {
        verdict = verdict.agent(agent);
    }
    if is_operator(requester, config) {
        return verdict;
    }
    let user = requester.username;
    let mandate = match config.operator_users.as_slice() {
        [] => "mandate's own user".to_owned(),
        users => users.join(", "),
    };
    verdict.finding(Finding::new(
        Reason::ProtectedStatus,
        format!(
            "only mandate ({mandate}) writes the status of AgentIdentities, ToolBindings and \
             DelegationPolicies, and {user} is not mandate: admission trusts the status (an \
             identity's Ready), so change the spec and mandate reports what follows"
        ),
    ))
}

/// An AgentIdentity update that changes `spec.owner` (its kind or name) is applied by a member
/// of the approver group who is neither the old nor the new owner: otherwise an owner could
/// hand the agent to an accomplice, approve for them, and take it back. Approvals given for
/// the old owner stop counting (`authority::approval_lapse`).
fn owner_change_four_eyes(
    identity: &AgentIdentity,
    old: Option<&AgentIdentity>,
    requester: Requester<'_>,
    config: &AdmissionConfig,
) -> Vec<Finding> {
    let Some(old) = old else {
        return Vec::new();
    };
    let (before, after) = (&old.spec.owner, &identity.spec.owner);
    if OwnerRef::from(before).names(after) {
        return Vec::new();
    }
    four_eyes(
        &Grant {
            what: format!(
                "changes of owner ({} to {})",
                OwnerRef::from(before),
                OwnerRef::from(after)
            ),
            kind: "AgentIdentity",
            field: "spec.owner",
            agent: identity.metadata.name.as_deref().unwrap_or_default(),
            owners: vec![before, after],
            approved_by: Vec::new(),
        },
        requester,
        config,
    )
}

/// A grant with a High-risk tool (declared, or raised by the risk floor) is applied by a member
/// of the approver group who is not the agent's owner, and names that requester in
/// `approval.approvedBy`.
fn tool_four_eyes(
    binding: &ToolBinding,
    requester: Requester<'_>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Vec<Finding> {
    let floor = &snapshot.authority().config().risk_floor;
    let high: Vec<&str> = binding
        .spec
        .tools
        .iter()
        .filter(|t| floor.assess(t).is_high())
        .map(|t| t.name.as_str())
        .collect();
    if high.is_empty() {
        return Vec::new();
    }
    let agent = binding.spec.agent.as_str();
    let namespace = binding.metadata.namespace.as_deref().unwrap_or_default();
    let approved_by = binding
        .spec
        .approval
        .as_ref()
        .map(|a| a.approved_by.as_str());
    four_eyes(
        &Grant {
            what: format!("High-risk tools ({})", high.join(", ")),
            kind: "ToolBinding",
            field: "approval.approvedBy",
            agent,
            owners: snapshot
                .authority()
                .owner(namespace, agent)
                .into_iter()
                .collect(),
            approved_by: approved_by.into_iter().collect(),
        },
        requester,
        config,
    )
}

/// Every Pod Security exemption an AgentIdentity create or update adds or changes is applied by
/// a member of the approver group who is not the agent's owner (before or after the change),
/// and names that requester in its `approval.approvedBy`. Removing one needs nobody.
fn exemption_four_eyes(
    identity: &AgentIdentity,
    old: Option<&AgentIdentity>,
    requester: Requester<'_>,
    config: &AdmissionConfig,
) -> Vec<Finding> {
    let before = old.map_or(&[][..], |o| o.spec.pod_security_exemptions.as_slice());
    let changed: Vec<&PodSecurityExemption> = identity
        .spec
        .pod_security_exemptions
        .iter()
        .filter(|e| !before.contains(e))
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    let controls: Vec<&str> = changed.iter().map(|e| e.control.as_str()).collect();
    let mut owners = vec![&identity.spec.owner];
    owners.extend(
        old.map(|o| &o.spec.owner)
            .filter(|before| !OwnerRef::from(*before).names(&identity.spec.owner)),
    );
    four_eyes(
        &Grant {
            what: format!("Pod Security exemptions ({})", controls.join(", ")),
            kind: "AgentIdentity",
            field: "podSecurityExemptions[].approval.approvedBy",
            agent: identity.metadata.name.as_deref().unwrap_or_default(),
            owners,
            approved_by: changed
                .iter()
                .map(|e| e.approval.approved_by.as_str())
                .collect(),
        },
        requester,
        config,
    )
}

/// Authority that needs four eyes: what it is, where it is approved and by whom.
struct Grant<'a> {
    /// `High-risk tools (payments)`.
    what: String,
    /// The kind that carries it.
    kind: &'static str,
    /// The field naming the approver.
    field: &'static str,
    agent: &'a str,
    /// The agent's owners (an update that changes the owner has two).
    owners: Vec<&'a Owner>,
    /// What each approval names.
    approved_by: Vec<&'a str>,
}

/// Four eyes: `grant` is applied by a member of the approver group who is none of the agent's
/// owners, and each approval names that requester. The one rule for High-risk tools and Pod
/// Security exemptions.
fn four_eyes(
    grant: &Grant<'_>,
    requester: Requester<'_>,
    config: &AdmissionConfig,
) -> Vec<Finding> {
    let Grant {
        what,
        kind,
        field,
        agent,
        ..
    } = grant;
    let user = requester.username;
    let group = config.approver_group.as_str();
    let mut findings = Vec::new();
    if !requester.in_group(group) {
        findings.push(Finding::new(
            Reason::FourEyes,
            format!(
                "{what} must be granted by a member of group {group}, and {user} is not one: ask \
                 an approver to review and apply the {kind}"
            ),
        ));
    }
    for owner in &grant.owners {
        let how = match owner.kind {
            OwnerKind::User if owner.name == user => format!("{user} owns AgentIdentity {agent}"),
            OwnerKind::Group if requester.in_group(&owner.name) => format!(
                "{user} is in group {}, which owns AgentIdentity {agent}",
                owner.name
            ),
            _ => continue,
        };
        let whom = if grant.owners.len() > 1 {
            "neither the agent's owner before nor after the change"
        } else {
            "not the agent's owner"
        };
        findings.push(Finding::new(
            Reason::FourEyes,
            format!(
                "{how}, and {what} need an approver who is {whom}: ask another member of group \
                 {group} to apply it"
            ),
        ));
        break;
    }
    for approved_by in grant.approved_by.iter().filter(|a| **a != user) {
        findings.push(Finding::new(
            Reason::FourEyes,
            format!(
                "{field} is {approved_by}, but {user} applies the {kind}: the approver applies it \
                 themself, naming themself in {field}",
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::verdict::Decision;
    use crate::api::{Action, AgentClass, BaselineControl};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    const APPROVER: &str = "carol";

    fn approvers() -> Vec<String> {
        vec!["mandate:approvers".into(), "system:authenticated".into()]
    }

    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").ready().build())
            .identity(
                identity("payer")
                    .class(AgentClass::TransactionExecutor)
                    .owner(OwnerKind::User, "alice")
                    .build(),
            )
            .identity(
                identity("trader")
                    .class(AgentClass::TransactionExecutor)
                    .owner(OwnerKind::Group, "finance")
                    .build(),
            )
            .binding(
                binding("search")
                    .agent("researcher")
                    .tool(tool("web-search"))
                    .build(),
            )
            .build();
        Snapshot::builder(authority).build()
    }

    /// The owner of each of the snapshot's agents.
    fn owner_of(agent: &str) -> (OwnerKind, &'static str) {
        match agent {
            "payer" => (OwnerKind::User, "alice"),
            "trader" => (OwnerKind::Group, "finance"),
            _ => (OwnerKind::Group, DEFAULT_OWNER),
        }
    }

    /// A High-risk grant for `agent` approved by `approver` for the agent's owner.
    fn high_risk_grant(agent: &str, approver: &str) -> ToolBinding {
        let (kind, owner) = owner_of(agent);
        binding("pay")
            .agent(agent)
            .tool(tool("payments").actions([Action::Execute]).high())
            .valid_until(hours(4))
            .approved_for(approver, kind, owner)
            .build()
    }

    fn review(binding: &ToolBinding, user: &str, groups: &[String]) -> Verdict {
        review_resource(
            binding,
            None,
            Requester::new(user, groups),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        )
    }

    #[test]
    fn an_approver_who_is_not_the_owner_may_grant_a_high_risk_tool() {
        let verdict = review(&high_risk_grant("payer", APPROVER), APPROVER, &approvers());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        assert_eq!(verdict.owner_name(), Some("User:alice"));
    }

    #[test]
    fn a_high_risk_grant_by_someone_outside_the_approver_group_breaks_four_eyes() {
        let verdict = review(&high_risk_grant("payer", "bob"), "bob", &[]);
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("group mandate:approvers")
        );
    }

    #[test]
    fn the_agents_owner_may_not_approve_its_own_high_risk_grant() {
        let verdict = review(&high_risk_grant("payer", "alice"), "alice", &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("alice owns AgentIdentity payer")
        );
        let mut finance = approvers();
        finance.push("finance".into());
        let verdict = review(&high_risk_grant("trader", APPROVER), APPROVER, &finance);
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("in group finance")
        );
    }

    #[test]
    fn approved_by_must_name_the_requester() {
        let verdict = review(&high_risk_grant("payer", "dave"), APPROVER, &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("approval.approvedBy is dave")
        );
    }

    #[test]
    fn low_risk_grants_need_no_approver() {
        let grant = binding("more")
            .agent("researcher")
            .tool(tool("wiki"))
            .build();
        assert_eq!(
            review(&grant, "bob", &[]).decision(),
            Some(Decision::Allowed)
        );
    }

    #[test]
    fn the_shared_validator_refuses_a_write_tool_for_a_read_only_agent() {
        let grant = binding("w")
            .agent("researcher")
            .tool(tool("crm").actions([Action::Write]))
            .build();
        let verdict = review(&grant, "bob", &[]);
        assert_eq!(verdict.codes(), ["ClassViolation"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn an_agents_service_account_may_not_change_mandate_resources() {
        let groups = vec!["system:serviceaccounts".to_owned()];
        let agent = Requester::new("system:serviceaccount:agents:researcher", &groups);
        let grant = binding("more")
            .agent("researcher")
            .tool(tool("wiki"))
            .build();
        let verdict = review_resource(
            &grant,
            None,
            agent,
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["SelfEscalation"]);
        let verdict = review_resource(
            &identity("new").build(),
            None,
            agent,
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["SelfEscalation"]);
        let proposed = policy("p")
            .delegator("researcher")
            .delegate("payer", ["web-search"])
            .build();
        let verdict = review_resource(
            &proposed,
            None,
            agent,
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes()[0], "SelfEscalation");
        // Another ServiceAccount (a CI pipeline, mandate itself) is reviewed on the object alone.
        let ci = Requester::new("system:serviceaccount:ci:deployer", &groups);
        let verdict = review_resource(
            &identity("new").build(),
            None,
            ci,
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
    }

    #[test]
    fn an_identity_claiming_another_agents_service_account_is_refused_by_the_validator() {
        let proposed = identity("copycat").service_account("researcher").build();
        let verdict = review_resource(
            &proposed,
            None,
            Requester::new("bob", &[]),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["ServiceAccountClaimed"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
    }

    #[test]
    fn a_policy_handing_on_a_tool_the_delegator_lacks_is_refused_as_an_escalation() {
        let proposed = policy("p")
            .delegator("payer")
            .delegate("researcher", ["web-search"])
            .build();
        let verdict = review_resource(
            &proposed,
            None,
            Requester::new("bob", &[]),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.codes(), ["DelegationEscalation"]);
        assert_eq!(verdict.agent_name(), Some("payer"));
    }

    #[test]
    fn an_update_that_leaves_the_spec_alone_is_only_checked_for_self_escalation() {
        let existing = high_risk_grant("payer", "alice");
        let mut relabelled = existing.clone();
        relabelled.metadata.labels = Some([("team".to_owned(), "pay".to_owned())].into());
        let verdict = review_resource(
            &relabelled,
            Some(&existing),
            Requester::new("bob", &[]),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
    }

    #[test]
    fn each_kind_is_named_in_its_subject_with_the_agent_and_owner_it_concerns() {
        let bob = Requester::new("bob", &[]);
        let config = AdmissionConfig::default();
        let snapshot = snapshot();
        let identity = identity("new").owner(OwnerKind::User, "dana").build();
        let verdict = review_resource(&identity, None, bob, &snapshot, &config, NOW);
        assert_eq!(verdict.subject(), format!("AgentIdentity {NS}/new"));
        assert_eq!(verdict.agent_name(), Some("new"));
        assert_eq!(verdict.owner_name(), Some("User:dana"));
        let grant = binding("more").agent("payer").tool(tool("wiki")).build();
        let verdict = review_resource(&grant, None, bob, &snapshot, &config, NOW);
        assert_eq!(verdict.subject(), format!("ToolBinding {NS}/more"));
        assert_eq!(verdict.agent_name(), Some("payer"));
        assert_eq!(verdict.owner_name(), Some("User:alice"));
        let proposed = policy("p")
            .delegator("trader")
            .delegate("payer", ["web-search"])
            .build();
        let verdict = review_resource(&proposed, None, bob, &snapshot, &config, NOW);
        assert_eq!(verdict.subject(), format!("DelegationPolicy {NS}/p"));
        assert_eq!(verdict.agent_name(), Some("trader"));
        assert_eq!(verdict.owner_name(), Some("Group:finance"));
        assert_eq!(verdict.mode(), Some(Mode::Enforce));
    }

    /// `payer` (owned by user alice) with a Privileged exemption approved by `approver`.
    fn exempt_identity(approver: &str) -> AgentIdentity {
        identity("payer")
            .class(AgentClass::TransactionExecutor)
            .owner(OwnerKind::User, "alice")
            .exempt(BaselineControl::Privileged, &[], approver)
            .build()
    }

    fn review_identity(
        proposed: &AgentIdentity,
        old: Option<&AgentIdentity>,
        user: &str,
        groups: &[String],
    ) -> Verdict {
        review_resource(
            proposed,
            old,
            Requester::new(user, groups),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        )
    }

    #[test]
    fn an_exemption_added_by_the_owner_alone_breaks_four_eyes() {
        let existing = identity("payer")
            .class(AgentClass::TransactionExecutor)
            .owner(OwnerKind::User, "alice")
            .build();
        let verdict = review_identity(&exempt_identity("alice"), Some(&existing), "alice", &[]);
        assert_eq!(verdict.codes(), ["FourEyes"]);
        let details: Vec<&str> = verdict
            .all_findings()
            .iter()
            .map(|f| f.detail.as_str())
            .collect();
        assert!(details[0].contains("Pod Security exemptions (Privileged) must be granted by a member of group mandate:approvers"), "{details:?}");
        assert!(
            details[1].contains("alice owns AgentIdentity payer"),
            "{details:?}"
        );
        // Even an owner who is an approver may not approve their own agent's exemption.
        let verdict = review_identity(
            &exempt_identity("alice"),
            Some(&existing),
            "alice",
            &approvers(),
        );
        assert_eq!(verdict.codes(), ["FourEyes"]);
    }

    #[test]
    fn an_exemption_applied_by_an_approver_who_is_not_the_owner_and_names_themself_is_allowed() {
        let verdict = review_identity(&exempt_identity(APPROVER), None, APPROVER, &approvers());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        let verdict = review_identity(&exempt_identity("dave"), None, APPROVER, &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(verdict.all_findings()[0].detail.contains(
            "podSecurityExemptions[].approval.approvedBy is dave, but carol applies the AgentIdentity"
        ));
    }

    #[test]
    fn the_owner_may_change_an_exempt_identity_without_touching_its_exemptions_or_remove_them() {
        let existing = exempt_identity(APPROVER);
        let mut reworded = existing.clone();
        reworded.spec.purpose = "Pays invoices, carefully.".into();
        let verdict = review_identity(&reworded, Some(&existing), "alice", &[]);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        let mut removed = existing.clone();
        removed.spec.pod_security_exemptions.clear();
        let verdict = review_identity(&removed, Some(&existing), "alice", &[]);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        // Widening one (another capability, a new approver name) is a change: four eyes again.
        let mut widened = existing.clone();
        widened.spec.pod_security_exemptions[0].approval.approved_by = "alice".into();
        let verdict = review_identity(&widened, Some(&existing), "alice", &[]);
        assert_eq!(verdict.codes(), ["FourEyes"]);
    }

    #[test]
    fn a_tool_the_risk_floor_raises_needs_four_eyes_and_an_approval_though_declared_low() {
        let open_web = binding("open-web")
            .agent("payer")
            .tool(tool("web").external(["0.0.0.0/1", "128.0.0.0/1"], [443]))
            .build();
        let verdict = review(&open_web, "dev", &[]);
        assert_eq!(
            verdict.codes(),
            ["FourEyes", "HighRiskValidity", "MissingApproval"]
        );
        let details: Vec<&str> = verdict
            .all_findings()
            .iter()
            .map(|f| f.detail.as_str())
            .collect();
        assert!(
            details.iter().any(|d| d.starts_with(
                "tool web is High by the risk floor (its CIDRs reach 4,294,967,296 IPv4 \
                 addresses, more than a /16 holds) though declared Low: set approval."
            )),
            "{details:#?}"
        );
        assert!(details[0].contains("High-risk tools (web) must be granted by a member"));
        // Every namespace, every pod: the same.
        let everywhere = binding("peers")
            .agent("payer")
            .tool(tool("peers").pods(Some(Default::default()), Default::default(), []))
            .build();
        assert!(
            review(&everywhere, "dev", &[])
                .codes()
                .contains(&"MissingApproval")
        );
        // Approved like any High-risk tool, it is admitted.
        let approved = binding("open-web")
            .agent("payer")
            .tool(tool("web").external(["0.0.0.0/1", "128.0.0.0/1"], [443]))
            .valid_until(hours(4))
            .approved_for(APPROVER, OwnerKind::User, "alice")
            .build();
        let verdict = review(&approved, APPROVER, &approvers());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn a_high_risk_grant_approved_for_another_owner_than_the_agents_is_refused() {
        let for_bob = binding("pay")
            .agent("payer")
            .tool(tool("payments").actions([Action::Execute]).high())
            .valid_until(hours(4))
            .approved_for(APPROVER, OwnerKind::User, "bob")
            .build();
        let verdict = review(&for_bob, APPROVER, &approvers());
        assert_eq!(verdict.codes(), ["MissingApproval"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("approved for User bob; the owner is now User alice"),
            "{verdict:?}"
        );
        let mut for_nobody = for_bob.clone();
        for_nobody.spec.approval = binding("x")
            .approved_for_nobody(APPROVER)
            .build()
            .spec
            .approval;
        let verdict = review(&for_nobody, APPROVER, &approvers());
        assert_eq!(verdict.codes(), ["MissingApproval"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("approval.forOwner names no owner it was given for")
        );
    }

    /// `payer` (owned by alice) handed to `to`.
    fn payer_owned_by(kind: OwnerKind, to: &str) -> (AgentIdentity, AgentIdentity) {
        let existing = identity("payer")
            .class(AgentClass::TransactionExecutor)
            .owner(OwnerKind::User, "alice")
            .build();
        let mut changed = existing.clone();
        changed.spec.owner = Owner {
            kind,
            name: to.to_owned(),
            contact: None,
        };
        (existing, changed)
    }

    #[test]
    fn an_owner_change_needs_an_approver_who_is_neither_the_old_nor_the_new_owner() {
        let (existing, to_bob) = payer_owned_by(OwnerKind::User, "bob");
        let verdict = review_identity(&to_bob, Some(&existing), "alice", &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0].detail.contains(
                "alice owns AgentIdentity payer, and changes of owner (User alice to User bob) \
                 need an approver who is neither the agent's owner before nor after the change"
            ),
            "{verdict:?}"
        );
        let verdict = review_identity(&to_bob, Some(&existing), "bob", &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(verdict.all_findings()[0].detail.contains("bob owns"));
        let verdict = review_identity(&to_bob, Some(&existing), "dave", &[]);
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("must be granted by a member of group mandate:approvers")
        );
        let verdict = review_identity(&to_bob, Some(&existing), APPROVER, &approvers());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        // A member of the group that is to own the agent is its owner too.
        let (existing, to_finance) = payer_owned_by(OwnerKind::Group, "finance");
        let mut finance = approvers();
        finance.push("finance".into());
        let verdict = review_identity(&to_finance, Some(&existing), APPROVER, &finance);
        assert_eq!(verdict.codes(), ["FourEyes"]);
        assert!(
            verdict.all_findings()[0]
                .detail
                .contains("in group finance")
        );
    }

    #[test]
    fn a_new_contact_is_no_owner_change() {
        let (existing, mut recontacted) = payer_owned_by(OwnerKind::User, "alice");
        recontacted.spec.owner.contact = Some("#payments".into());
        let verdict = review_identity(&recontacted, Some(&existing), "alice", &[]);
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn an_owner_change_re_approves_every_exemption_in_the_same_update() {
        let existing = exempt_identity(APPROVER);
        let mut to_bob = existing.clone();
        to_bob.spec.owner.name = "bob".into();
        let verdict = review_identity(&to_bob, Some(&existing), "erin", &approvers());
        assert_eq!(verdict.codes(), ["MissingApproval"]);
        assert!(
            verdict.all_findings()[0].detail.starts_with(
                "the Privileged exemption does not count: approved for User alice; the owner is \
                 now User bob"
            ),
            "{verdict:?}"
        );
        // Re-approved for bob by the approver who changes the owner: admitted.
        let mut reapproved = to_bob.clone();
        let approval = &mut reapproved.spec.pod_security_exemptions[0].approval;
        approval.approved_by = "erin".into();
        approval.for_owner = Some(OwnerRef {
            kind: OwnerKind::User,
            name: "bob".into(),
        });
        let verdict = review_identity(&reapproved, Some(&existing), "erin", &approvers());
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        // Re-approved in another approver's name: four eyes.
        let verdict = review_identity(&reapproved, Some(&existing), APPROVER, &approvers());
        assert_eq!(verdict.codes(), ["FourEyes"]);
    }

    #[test]
    fn requesters_know_their_service_account() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            Requester::new("system:serviceaccount:agents:researcher", &none).service_account(),
            Some(("agents", "researcher"))
        );
        assert_eq!(Requester::new("alice", &none).service_account(), None);
    }
}
