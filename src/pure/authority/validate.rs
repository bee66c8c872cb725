//! The one validator: a proposed AgentIdentity, ToolBinding or DelegationPolicy and an
//! authority snapshot in; findings out, each with a stable reason code and a detail that says
//! what to change (the [`Finding`] and [`Reason`] of `authority::reason`, the only ones). The
//! webhook, the reconciler and `mandate check` all call it, so the webhook never admits what the
//! reconciler would refuse. Pure: no I/O.
//!
//! Rules that need the requesting user (four-eyes approval, no self-escalation) belong to
//! admission; this module exposes what they need (`Authority::owner`,
//! `Authority::identity_for_service_account`).

use k8s_openapi::jiff::Timestamp;

use super::reason::{Finding, Reason};
use super::{Authority, Config, ServiceAccountOwnership, ViolationKind};
use crate::api::{AgentIdentity, Approval, DelegationPolicy, Owner, OwnerRef, ToolBinding};

impl Authority {
    /// Rules for an AgentIdentity as proposed (created or changed): its ServiceAccount must
    /// not be claimed by another identity, nor exist without being mandate's for this agent.
    pub fn validate_identity(&self, identity: &AgentIdentity) -> Vec<Finding> {
        let namespace = identity.metadata.namespace.as_deref().unwrap_or_default();
        let name = identity.metadata.name.as_deref().unwrap_or_default();
        let sa = identity.service_account_name();
        let mut findings = Vec::new();
        let others: Vec<&str> = self
            .identities_for_service_account(namespace, sa)
            .filter_map(|other| other.metadata.name.as_deref())
            .filter(|other| *other != name)
            .collect();
        for other in &others {
            findings.push(Finding::new(
                Reason::ServiceAccountClaimed,
                format!(
                    "ServiceAccount {sa} is already claimed by AgentIdentity {other}: set a \
                     different serviceAccountName"
                ),
            ));
        }
        let uid = identity.metadata.uid.as_deref();
        match self.service_account_ownership(namespace, sa) {
            ServiceAccountOwnership::Absent => {}
            ServiceAccountOwnership::Managed { agent, uid: owner } if agent == name => {
                // An identity deleted and created again under its name: its predecessor's
                // ServiceAccount waits for the garbage collector, and is not this one's.
                if uid.is_some_and(|uid| uid != owner) {
                    findings.push(Finding::new(
                        Reason::ServiceAccountClaimed,
                        format!(
                            "ServiceAccount {sa} belongs to an earlier AgentIdentity {name} (uid \
                             {owner}) and waits for the garbage collector: mandate creates this \
                             identity's once it is gone"
                        ),
                    ));
                }
            }
            ServiceAccountOwnership::Managed { agent, .. } => {
                if !others.contains(&agent.as_str()) {
                    findings.push(Finding::new(
                        Reason::ServiceAccountClaimed,
                        format!(
                            "ServiceAccount {sa} is controlled by AgentIdentity {agent}: set a \
                             different serviceAccountName"
                        ),
                    ));
                }
            }
            ServiceAccountOwnership::Unmanaged => findings.push(Finding::new(
                Reason::ServiceAccountUnmanaged,
                format!(
                    "ServiceAccount {sa} exists and no AgentIdentity controls it (labels do not \
                     count): mandate never adopts one, with its RoleBindings; set a different \
                     serviceAccountName, or move its workloads off it and delete it"
                ),
            )),
        }
        findings
    }

    /// Rules for a ToolBinding as proposed: its agent exists, the agent's class permits every
    /// declared action, and every High-risk tool (declared, or raised by the risk floor) has an
    /// approval given for the agent's current owner and a validUntil at most
    /// `Config::max_high_risk_validity` ahead of `now`.
    pub fn validate_binding(&self, binding: &ToolBinding, now: Timestamp) -> Vec<Finding> {
        let namespace = binding.metadata.namespace.as_deref().unwrap_or_default();
        let identity = self.identity(namespace, &binding.spec.agent);
        binding_rules(identity, binding, now, &self.config)
            .into_iter()
            .chain(identity.is_none().then(|| {
                Finding::new(
                    Reason::MissingIdentity,
                    format!(
                        "spec.agent names AgentIdentity {}, which does not exist in namespace \
                         {namespace}: create the AgentIdentity first or fix spec.agent",
                        binding.spec.agent
                    ),
                )
            }))
            .collect()
    }

    /// Rules for a DelegationPolicy as proposed: its delegator and delegates exist, and the
    /// namespace's delegation graph *with this policy applied* (replacing one of the same
    /// name) has no escalation path, cycle or depth violation that uses this policy's edges.
    pub fn validate_policy(&self, policy: &DelegationPolicy, now: Timestamp) -> Vec<Finding> {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        let mut findings = Vec::new();
        if self.identity(namespace, &policy.spec.delegator).is_none() {
            findings.push(Finding::new(
                Reason::MissingDelegator,
                format!(
                    "spec.delegator names AgentIdentity {}, which does not exist in namespace \
                     {namespace}: create the AgentIdentity first or fix spec.delegator",
                    policy.spec.delegator
                ),
            ));
        }
        for delegate in &policy.spec.delegates {
            if self.identity(namespace, &delegate.agent).is_none() {
                findings.push(Finding::new(
                    Reason::MissingDelegate,
                    format!(
                        "delegate {} is not an AgentIdentity in namespace {namespace} \
                         (cross-namespace delegation is not supported): create it first or \
                         remove it from spec.delegates",
                        delegate.agent
                    ),
                ));
            }
        }
        let graph = self.delegation_graph_with(policy, now);
        for violation in graph.violations_of_policy(name) {
            let (reason, advice) = match violation.kind {
                ViolationKind::Escalation => (
                    Reason::DelegationEscalation,
                    "bind the tool to that agent first, or remove it from delegates[].tools",
                ),
                ViolationKind::Cycle => (
                    Reason::DelegationCycle,
                    "remove one of the delegations in the cycle",
                ),
                ViolationKind::Depth => (
                    Reason::DelegationDepth,
                    "raise maxDepth on the policies along the chain, or shorten the chain",
                ),
            };
            findings.push(Finding::new(
                reason,
                format!("{}: {advice}", violation.message),
            ));
        }
        findings
    }
}

/// The rules a binding must meet to grant anything, given its identity (when it exists).
pub(super) fn binding_rules(
    identity: Option<&AgentIdentity>,
    binding: &ToolBinding,
    now: Timestamp,
    config: &Config,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(identity) = identity {
        let class = identity.spec.class;
        let agent = identity.metadata.name.as_deref().unwrap_or_default();
        for tool in &binding.spec.tools {
            let refused: Vec<&str> = tool
                .actions
                .iter()
                .filter(|a| !class.permits(**a))
                .map(|a| a.as_str())
                .collect();
            if !refused.is_empty() {
                findings.push(Finding::new(
                    Reason::ClassViolation,
                    format!(
                        "tool {} declares {} but AgentIdentity {agent} is {class:?}: declare only \
                         read, or raise the identity's class to WriteCapable",
                        tool.name,
                        refused.join(", ")
                    ),
                ));
            }
        }
    }
    let limit = now
        .checked_add(config.max_high_risk_validity)
        .unwrap_or(Timestamp::MAX);
    let max = config.max_high_risk_validity;
    let owner = identity.map(|i| &i.spec.owner);
    for tool in &binding.spec.tools {
        let risk = config.risk_floor.assess(tool);
        if !risk.is_high() {
            continue;
        }
        let high = risk.describe(&tool.name);
        match binding.spec.valid_until.as_ref() {
            None => findings.push(Finding::new(
                Reason::HighRiskValidity,
                format!(
                    "{high}, and the binding has no validUntil: set validUntil at most {max:#} \
                     ahead"
                ),
            )),
            Some(until) if until.0 > limit => findings.push(Finding::new(
                Reason::HighRiskValidity,
                format!(
                    "{high}, and validUntil {} lies more than {max:#} ahead: set it to {limit} \
                     or earlier",
                    until.0
                ),
            )),
            Some(_) => {}
        }
        let lapse = match (&binding.spec.approval, owner) {
            (None, _) => Some(
                "set approval.approvedBy, approval.forOwner and approval.reason (an approver \
                 who is not the agent's owner applies it)"
                    .to_owned(),
            ),
            (Some(approval), Some(owner)) => approval_lapse(approval, owner, "approval"),
            // No identity: MissingIdentity says it; no owner to approve for yet.
            (Some(_), None) => None,
        };
        if let Some(lapse) = lapse {
            findings.push(Finding::new(
                Reason::MissingApproval,
                format!("{high}: {lapse}"),
            ));
        }
    }
    findings
}

/// Rules for the Pod Security exemptions of an AgentIdentity as proposed: each approval names
/// the identity's owner (`approval.forOwner`), so an owner change re-approves them all in the
/// same update. Who applies them is admission's rule (four eyes).
pub fn exemption_rules(identity: &AgentIdentity) -> Vec<Finding> {
    identity
        .spec
        .pod_security_exemptions
        .iter()
        .filter_map(|exemption| {
            let control = exemption.control.as_str();
            let field = format!("podSecurityExemptions[{control}].approval");
            let lapse = approval_lapse(&exemption.approval, &identity.spec.owner, &field)?;
            Some(Finding::new(
                Reason::MissingApproval,
                format!("the {control} exemption does not count: {lapse}"),
            ))
        })
        .collect()
}

/// Why `approval` (at `field`, for the message) does not count for an agent owned by `owner`
/// (`None`: it counts). An approval names the owner it was given for (`forOwner`); one given
/// for another owner, or for none, is void. So changing an agent's owner voids every approval
/// given before, and an approval obtained while someone else owned the agent does not follow
/// it back. The one rule for High-risk tools and Pod Security exemptions.
pub fn approval_lapse(approval: &Approval, owner: &Owner, field: &str) -> Option<String> {
    let current = OwnerRef::from(owner);
    let redo = format!(
        "an approver who is not the owner re-approves, setting {field}.forOwner to {current} and \
         naming themself in {field}.approvedBy"
    );
    match &approval.for_owner {
        Some(for_owner) if for_owner.names(owner) => None,
        Some(for_owner) => Some(format!(
            "approved for {for_owner}; the owner is now {current}: {redo}"
        )),
        None => Some(format!(
            "{field}.forOwner names no owner it was given for: {redo}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::codes;
    use super::super::fixtures::*;
    use super::*;
    use crate::api::{Action, AgentClass};

    #[test]
    fn a_binding_naming_a_missing_identity_is_refused_with_missing_identity() {
        let authority = Authority::builder().build();
        let findings =
            authority.validate_binding(&binding("b").agent("ghost").tool(tool("t")).build(), NOW);
        assert_eq!(codes(&findings), ["MissingIdentity"]);
        assert!(findings[0].detail.contains("create the AgentIdentity"));
    }

    #[test]
    fn a_read_only_identity_bound_to_a_write_tool_is_a_class_violation() {
        // No action raises the risk here, so the class speaks alone.
        let no_high_actions = Config {
            risk_floor: super::super::RiskFloor {
                actions: super::super::ActionSet::default(),
                ..Default::default()
            },
            ..Config::default()
        };
        let authority = Authority::builder()
            .config(no_high_actions)
            .identity(identity("reader").build())
            .build();
        let proposed = binding("b")
            .agent("reader")
            .tool(tool("crm").actions([Action::Read, Action::Write, Action::Delete]))
            .build();
        let findings = authority.validate_binding(&proposed, NOW);
        assert_eq!(codes(&findings), ["ClassViolation"]);
        assert!(findings[0].detail.contains("declares write, delete"));
    }

    #[test]
    fn a_write_capable_identity_may_hold_a_write_tool() {
        let authority = Authority::builder()
            .identity(identity("writer").class(AgentClass::WriteCapable).build())
            .build();
        let proposed = binding("b")
            .agent("writer")
            .tool(tool("crm").actions([Action::Write]))
            .build();
        assert!(authority.validate_binding(&proposed, NOW).is_empty());
    }

    #[test]
    fn a_high_risk_tool_needs_a_valid_until_within_the_configured_limit() {
        let authority = Authority::builder()
            .identity(
                identity("exec")
                    .class(AgentClass::TransactionExecutor)
                    .build(),
            )
            .build();
        let open = binding("b")
            .agent("exec")
            .tool(tool("pay").high())
            .approved()
            .build();
        let far = binding("b")
            .agent("exec")
            .tool(tool("pay").high())
            .approved()
            .valid_until(hours(25))
            .build();
        let near = binding("b")
            .agent("exec")
            .tool(tool("pay").high())
            .approved()
            .valid_until(hours(24))
            .build();
        assert_eq!(
            codes(&authority.validate_binding(&open, NOW)),
            ["HighRiskValidity"]
        );
        let findings = authority.validate_binding(&far, NOW);
        assert_eq!(codes(&findings), ["HighRiskValidity"]);
        assert!(
            findings[0].detail.contains("more than 24h ahead"),
            "{}",
            findings[0].detail
        );
        assert!(authority.validate_binding(&near, NOW).is_empty());
    }

    #[test]
    fn the_high_risk_limit_is_configurable() {
        let authority = Authority::builder()
            .config(Config {
                max_high_risk_validity: k8s_openapi::jiff::SignedDuration::from_hours(2),
                ..Config::default()
            })
            .identity(
                identity("exec")
                    .class(AgentClass::TransactionExecutor)
                    .build(),
            )
            .build();
        let proposed = binding("b")
            .agent("exec")
            .tool(tool("pay").high())
            .approved()
            .valid_until(hours(3))
            .build();
        assert_eq!(
            codes(&authority.validate_binding(&proposed, NOW)),
            ["HighRiskValidity"]
        );
    }

    #[test]
    fn a_high_risk_tool_without_approval_is_refused() {
        let authority = Authority::builder()
            .identity(
                identity("exec")
                    .class(AgentClass::TransactionExecutor)
                    .build(),
            )
            .build();
        let proposed = binding("b")
            .agent("exec")
            .tool(tool("pay").high())
            .valid_until(hours(1))
            .build();
        assert_eq!(
            codes(&authority.validate_binding(&proposed, NOW)),
            ["MissingApproval"]
        );
    }

    #[test]
    fn a_policy_naming_missing_agents_is_refused_for_each() {
        let authority = Authority::builder().identity(identity("a").build()).build();
        let proposed = policy("p")
            .delegator("ghost")
            .delegate("a", ["t"])
            .delegate("phantom", ["t"])
            .build();
        let findings = authority.validate_policy(&proposed, NOW);
        assert_eq!(codes(&findings), ["MissingDelegator", "MissingDelegate"]);
        assert!(findings[1].detail.contains("phantom"));
    }

    #[test]
    fn a_policy_handing_on_a_tool_the_delegator_lacks_is_an_escalation() {
        let authority = Authority::builder()
            .identity(identity("planner").build())
            .identity(identity("executor").build())
            .binding(
                binding("exec")
                    .agent("executor")
                    .tool(tool("erp-api"))
                    .build(),
            )
            .build();
        let proposed = policy("p")
            .delegator("planner")
            .delegate("executor", ["erp-api"])
            .build();
        let findings = authority.validate_policy(&proposed, NOW);
        assert_eq!(codes(&findings), ["DelegationEscalation"]);
        assert!(
            findings[0]
                .detail
                .starts_with("planner -> executor -> erp-api: planner does not hold erp-api"),
            "{}",
            findings[0].detail
        );
    }

    #[test]
    fn a_policy_closing_a_cycle_is_refused_as_the_cycle() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .binding(binding("ta").agent("a").tool(tool("t")).build())
            .binding(binding("tb").agent("b").tool(tool("t")).build())
            .policy(
                policy("ab")
                    .delegator("a")
                    .delegate("b", ["t"])
                    .max_depth(3)
                    .build(),
            )
            .build();
        let proposed = policy("ba")
            .delegator("b")
            .delegate("a", ["t"])
            .max_depth(3)
            .build();
        let findings = authority.validate_policy(&proposed, NOW);
        assert_eq!(codes(&findings), ["DelegationCycle"]);
        assert!(
            findings[0]
                .detail
                .starts_with("a -> b -> a: delegation cycle")
        );
    }

    #[test]
    fn a_proposed_policy_replaces_the_existing_one_of_the_same_name() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .binding(binding("ta").agent("a").tool(tool("t")).build())
            .binding(
                binding("tb")
                    .agent("b")
                    .tool(tool("t"))
                    .tool(tool("u"))
                    .build(),
            )
            .policy(policy("ab").delegator("a").delegate("b", ["u"]).build())
            .build();
        let fixed = policy("ab").delegator("a").delegate("b", ["t"]).build();
        assert!(authority.validate_policy(&fixed, NOW).is_empty());
        let existing = authority
            .policy(NS, "ab")
            .cloned()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            codes(&authority.validate_policy(&existing, NOW)),
            ["DelegationEscalation"]
        );
    }

    #[test]
    fn a_policy_making_a_chain_longer_than_max_depth_is_a_depth_violation() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .identity(identity("c").build())
            .binding(binding("ta").agent("a").tool(tool("t")).build())
            .binding(binding("tb").agent("b").tool(tool("t")).build())
            .binding(binding("tc").agent("c").tool(tool("t")).build())
            .policy(
                policy("ab")
                    .delegator("a")
                    .delegate("b", ["t"])
                    .max_depth(1)
                    .build(),
            )
            .build();
        let proposed = policy("bc")
            .delegator("b")
            .delegate("c", ["t"])
            .max_depth(2)
            .build();
        let findings = authority.validate_policy(&proposed, NOW);
        assert_eq!(codes(&findings), ["DelegationDepth"]);
        assert!(
            findings[0]
                .detail
                .starts_with("a -> b -> c: 2 hops, more than maxDepth 1 of DelegationPolicy ab"),
            "{}",
            findings[0].detail
        );
    }

    #[test]
    fn an_expired_policy_is_not_judged_against_the_graph() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .build();
        let expired = policy("p")
            .delegator("a")
            .delegate("b", ["t"])
            .valid_until(hours(-1))
            .build();
        assert!(authority.validate_policy(&expired, NOW).is_empty());
    }

    #[test]
    fn an_identity_claiming_another_identitys_service_account_is_refused() {
        let authority = Authority::builder()
            .identity(identity("first").service_account("shared").build())
            .build();
        let proposed = identity("second").service_account("shared").build();
        let findings = authority.validate_identity(&proposed);
        assert_eq!(codes(&findings), ["ServiceAccountClaimed"]);
        assert!(findings[0].detail.contains("AgentIdentity first"));
        let itself = identity("first").service_account("shared").build();
        assert!(authority.validate_identity(&itself).is_empty());
    }

    #[test]
    fn labels_anyone_may_set_do_not_make_a_service_account_mandates() {
        // The adoption attack: a developer labels an existing account (with its RoleBindings)
        // as mandate's for a new identity. Only a controller ownerReference proves ownership.
        let authority = Authority::builder()
            .service_account(service_account("ci-bot").labelled_for("ci-bot").build())
            .build();
        let findings = authority.validate_identity(&identity("ci-bot").build());
        assert_eq!(codes(&findings), ["ServiceAccountUnmanaged"]);
        assert!(findings[0].detail.contains("labels do not count"));
        assert_eq!(
            authority.service_account_ownership(NS, "ci-bot"),
            ServiceAccountOwnership::Unmanaged
        );
    }

    #[test]
    fn an_account_controlled_by_an_earlier_identity_of_the_same_name_is_not_this_ones() {
        let authority = Authority::builder()
            .service_account(
                service_account("researcher")
                    .labelled_for("researcher")
                    .controlled_by("researcher", "uid-of-the-deleted-one")
                    .build(),
            )
            .build();
        let findings = authority.validate_identity(&identity("researcher").build());
        assert_eq!(codes(&findings), ["ServiceAccountClaimed"]);
        assert!(findings[0].detail.contains("garbage collector"));
        let same = service_account("researcher")
            .managed_for("researcher")
            .build();
        let authority = Authority::builder().service_account(same).build();
        assert!(
            authority
                .validate_identity(&identity("researcher").build())
                .is_empty()
        );
    }

    #[test]
    fn an_identity_claiming_an_unmanaged_service_account_is_refused() {
        let authority = Authority::builder()
            .service_account(service_account("default").build())
            .service_account(service_account("mine").managed_for("mine").build())
            .service_account(
                service_account("orphan")
                    .managed_for("deleted-agent")
                    .build(),
            )
            .build();
        assert_eq!(
            codes(&authority.validate_identity(&identity("default").build())),
            ["ServiceAccountUnmanaged"]
        );
        assert!(
            authority
                .validate_identity(&identity("mine").build())
                .is_empty()
        );
        assert_eq!(
            codes(&authority.validate_identity(&identity("x").service_account("orphan").build())),
            ["ServiceAccountClaimed"]
        );
    }
}
