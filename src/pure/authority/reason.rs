//! Reasons and findings: the one closed set of reason codes, and the one finding (a reason and
//! what to change) that the validator, the reconciler's conditions, admission verdicts and
//! `mandate check` all speak. Data in (a reason, a detail), stable strings out (`code()`, the
//! `code: detail` line). Pure: never does I/O.
//!
//! The codes are metric labels, log fields, condition reasons and documentation anchors: a code
//! never changes once published, and a test pins every one of them.

use std::fmt;

/// Why something is refused (or warned about). A closed set. Declaration order is importance:
/// a verdict lists its findings, and a metric takes its `reason` label, in this order. The
/// rules of the shared validator (from [`Reason::MissingIdentity`] on) come after those only
/// admission applies; codes published after the first release are appended at the end, since a
/// published code never changes its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// mandate has not synced its caches yet, so it cannot review the request.
    NotReady,
    /// The request's object cannot be read as the kind it claims to be.
    InvalidObject,
    /// A ServiceAccount that belongs to an agent tries to create or change a mandate resource.
    SelfEscalation,
    /// A High-risk grant or a Pod Security exemption is not applied by an approver other than
    /// the agent's owner.
    FourEyes,
    /// The pod names no AgentIdentity, or one that does not exist in its namespace.
    NoIdentity,
    /// The pod's AgentIdentity names no accountable owner.
    NoOwner,
    /// The pod's AgentIdentity is not Ready (its projections are not applied yet).
    IdentityNotReady,
    /// The pod's AgentIdentity holds no live tool now.
    NoBoundTools,
    /// The pod runs as an agent's ServiceAccount without being that agent.
    ServiceAccountHijack,
    /// The pod does not run as its AgentIdentity's ServiceAccount.
    ServiceAccountMismatch,
    /// The pod uses the host's network, which bypasses its NetworkPolicy.
    HostNetwork,
    /// A projected token lives longer, or serves an audience, than the identity allows; or the
    /// pod asks for an automounted token.
    TokenTTL,
    /// A legacy (never-expiring) service-account-token Secret of an agent is mounted or created.
    LongLivedToken,
    /// A ToolBinding names an AgentIdentity that does not exist in its namespace.
    MissingIdentity,
    /// A ReadOnly identity is bound to a tool declaring actions other than `read`.
    ClassViolation,
    /// A High-risk tool has no validUntil, or one further ahead than allowed.
    HighRiskValidity,
    /// A High-risk tool has no approval.
    MissingApproval,
    /// A DelegationPolicy's delegator does not exist in its namespace.
    MissingDelegator,
    /// A DelegationPolicy's delegate does not exist in its namespace.
    MissingDelegate,
    /// A delegation chain hands on a tool its delegator (or delegate) does not hold.
    DelegationEscalation,
    /// Delegation comes back to where it started.
    DelegationCycle,
    /// A delegation chain is longer than the smallest maxDepth along it.
    DelegationDepth,
    /// Another AgentIdentity, or a mandate-managed ServiceAccount of another agent, already
    /// claims the ServiceAccount.
    ServiceAccountClaimed,
    /// The ServiceAccount exists and mandate does not manage it; mandate never adopts one.
    ServiceAccountUnmanaged,
    // Codes published later come last (a published code never moves).
    /// A NetworkPolicy not written by mandate selects agent pods: NetworkPolicies add up, so it
    /// would widen what their mandate allows.
    ForeignNetworkPolicy,
    /// Someone other than mandate (or the garbage collector) deletes one of mandate's
    /// projections.
    ProtectedProjection,
    /// `exec`, `attach` or `port-forward` into an agent pod by someone who is neither the
    /// identity's owner nor an approver.
    ExecNotOwner,
    /// An agent pod fails the Pod Security Standards' baseline profile without an approved
    /// exemption on its identity.
    PodSecurityBaseline,
    /// A tool call whose caller no credential identifies: no mTLS SPIFFE ID or bearer token,
    /// or one that did not verify (TokenReview refused it or could not be asked).
    Unauthenticated,
    /// A tool call from a ServiceAccount that belongs to no AgentIdentity.
    NotAnAgent,
    /// A tool call that names no server or operation mandate can read safely (no MCP tool
    /// name, a path with dot segments or encoded slashes, a host that is no Service).
    UnreadableCall,
    /// A tool call to a server where the agent holds no live tool (none bound, expired, not
    /// yet valid, or its binding breaks a rule such as a High-risk tool without approval).
    ToolNotHeld,
    /// A tool call whose operation (MCP tool, HTTP method and path) the agent's tool at that
    /// server does not declare.
    OperationNotDeclared,
    /// A tool call whose operation performs an action the tool does not declare.
    ActionNotDeclared,
    /// A tool call with a token whose audience is not the called tool's.
    WrongAudience,
    /// A delegated tool call that no safe DelegationPolicy covers for that tool and depth.
    DelegationNotAllowed,
    /// The agent's ServiceAccount holds a dangerous Kubernetes API right (impersonate, token
    /// requests, pods/exec, secrets, RBAC, ...) through a RoleBinding or ClusterRoleBinding:
    /// its real authority exceeds its mandate.
    DangerousApiRights,
    /// Someone other than mandate writes the status of one of mandate's kinds, which admission
    /// trusts (Ready).
    ProtectedStatus,
    /// A change of a namespace's `mandate.dev/mode` that weakens it (enforce to warn or audit,
    /// warn to audit, or removal) while identities live there, by someone outside the approver
    /// group.
    ModeWeakened,
}

/// One failed rule and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub reason: Reason,
    /// What is wrong and what to change, in one sentence.
    pub detail: String,
}

impl Reason {
    /// Every reason, in order of importance.
    pub const ALL: [Reason; 39] = [
        Reason::NotReady,
        Reason::InvalidObject,
        Reason::SelfEscalation,
        Reason::FourEyes,
        Reason::NoIdentity,
        Reason::NoOwner,
        Reason::IdentityNotReady,
        Reason::NoBoundTools,
        Reason::ServiceAccountHijack,
        Reason::ServiceAccountMismatch,
        Reason::HostNetwork,
        Reason::TokenTTL,
        Reason::LongLivedToken,
        Reason::MissingIdentity,
        Reason::ClassViolation,
        Reason::HighRiskValidity,
        Reason::MissingApproval,
        Reason::MissingDelegator,
        Reason::MissingDelegate,
        Reason::DelegationEscalation,
        Reason::DelegationCycle,
        Reason::DelegationDepth,
        Reason::ServiceAccountClaimed,
        Reason::ServiceAccountUnmanaged,
        Reason::ForeignNetworkPolicy,
        Reason::ProtectedProjection,
        Reason::ExecNotOwner,
        Reason::PodSecurityBaseline,
        Reason::Unauthenticated,
        Reason::NotAnAgent,
        Reason::UnreadableCall,
        Reason::ToolNotHeld,
        Reason::OperationNotDeclared,
        Reason::ActionNotDeclared,
        Reason::WrongAudience,
        Reason::DelegationNotAllowed,
        Reason::DangerousApiRights,
        Reason::ProtectedStatus,
        Reason::ModeWeakened,
    ];

    /// The stable code: a metrics label, a log field, a docs anchor.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NotReady => "NotReady",
            Reason::InvalidObject => "InvalidObject",
            Reason::SelfEscalation => "SelfEscalation",
            Reason::FourEyes => "FourEyes",
            Reason::NoIdentity => "NoIdentity",
            Reason::NoOwner => "NoOwner",
            Reason::IdentityNotReady => "IdentityNotReady",
            Reason::NoBoundTools => "NoBoundTools",
            Reason::ServiceAccountHijack => "ServiceAccountHijack",
            Reason::ServiceAccountMismatch => "ServiceAccountMismatch",
            Reason::HostNetwork => "HostNetwork",
            Reason::TokenTTL => "TokenTTL",
            Reason::LongLivedToken => "LongLivedToken",
            Reason::MissingIdentity => "MissingIdentity",
            Reason::ClassViolation => "ClassViolation",
            Reason::HighRiskValidity => "HighRiskValidity",
            Reason::MissingApproval => "MissingApproval",
            Reason::MissingDelegator => "MissingDelegator",
            Reason::MissingDelegate => "MissingDelegate",
            Reason::DelegationEscalation => "DelegationEscalation",
            Reason::DelegationCycle => "DelegationCycle",
            Reason::DelegationDepth => "DelegationDepth",
            Reason::ServiceAccountClaimed => "ServiceAccountClaimed",
            Reason::ServiceAccountUnmanaged => "ServiceAccountUnmanaged",
            Reason::ForeignNetworkPolicy => "ForeignNetworkPolicy",
            Reason::ProtectedProjection => "ProtectedProjection",
            Reason::ExecNotOwner => "ExecNotOwner",
            Reason::PodSecurityBaseline => "PodSecurityBaseline",
            Reason::Unauthenticated => "Unauthenticated",
            Reason::NotAnAgent => "NotAnAgent",
            Reason::UnreadableCall => "UnreadableCall",
            Reason::ToolNotHeld => "ToolNotHeld",
            Reason::OperationNotDeclared => "OperationNotDeclared",
            Reason::ActionNotDeclared => "ActionNotDeclared",
            Reason::WrongAudience => "WrongAudience",
            Reason::DelegationNotAllowed => "DelegationNotAllowed",
            Reason::DangerousApiRights => "DangerousApiRights",
            Reason::ProtectedStatus => "ProtectedStatus",
            Reason::ModeWeakened => "ModeWeakened",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Finding {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Finding {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

/// The codes of `findings`, in order: handy for tests, metrics and log lines.
pub fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.reason.code()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_code_is_still_spelled_byte_for_byte_as_before() {
        // The codes README, dashboards, logs and the e2e suite read. Never edit this list:
        // append to it.
        let published = [
            "NotReady",
            "InvalidObject",
            "SelfEscalation",
            "FourEyes",
            "NoIdentity",
            "NoOwner",
            "IdentityNotReady",
            "NoBoundTools",
            "ServiceAccountHijack",
            "ServiceAccountMismatch",
            "HostNetwork",
            "TokenTTL",
            "LongLivedToken",
            "MissingIdentity",
            "ClassViolation",
            "HighRiskValidity",
            "MissingApproval",
            "MissingDelegator",
            "MissingDelegate",
            "DelegationEscalation",
            "DelegationCycle",
            "DelegationDepth",
            "ServiceAccountClaimed",
            "ServiceAccountUnmanaged",
            "ForeignNetworkPolicy",
            "ProtectedProjection",
            "ExecNotOwner",
            "PodSecurityBaseline",
            "Unauthenticated",
            "NotAnAgent",
            "UnreadableCall",
            "ToolNotHeld",
            "OperationNotDeclared",
            "ActionNotDeclared",
            "WrongAudience",
            "DelegationNotAllowed",
            "DangerousApiRights",
            "ProtectedStatus",
            "ModeWeakened",
        ];
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, published);
    }

    #[test]
    fn every_reason_has_a_distinct_code_equal_to_its_name_and_is_listed_once_in_order() {
        let distinct: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(distinct.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(format!("{reason:?}"), reason.code());
            assert_eq!(reason.to_string(), reason.code());
        }
        assert!(
            Reason::ALL.windows(2).all(|pair| pair[0] < pair[1]),
            "ALL must follow the order of importance"
        );
    }

    #[test]
    fn a_finding_reads_as_its_code_then_what_to_change() {
        let finding = Finding::new(Reason::ClassViolation, "declare only read");
        assert_eq!(finding.to_string(), "ClassViolation: declare only read");
        assert_eq!(codes(&[finding]), ["ClassViolation"]);
    }
}
