//! Verdicts: the findings of one review (a reason code and what to change) and the mode they
//! were reviewed in; the [`Decision`] (the one the audit annotation, the log line and the
//! `decision` metric label all carry), the one denial message, the warnings and the audit
//! annotations out. This is the only place that words an admission answer, so every message
//! reads alike. Pure: never does I/O.

use std::fmt;

use kube::core::Status;
use kube::core::admission::AdmissionResponse;

use super::request::Request;
use super::{AUDIT_AGENT, AUDIT_DECISION, AUDIT_MODE, AUDIT_OWNER, AUDIT_REASON};
use crate::api::{Owner, OwnerKind};
/// The one reason set and the one finding (`crate::authority::reason`), by their admission path.
pub use crate::authority::{Finding, Reason};

/// How a namespace (or the installation, for agent pods elsewhere) wants findings treated: the
/// value of the `mandate.dev/mode` namespace label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Refuse the request and list every failed rule.
    #[default]
    Enforce,
    /// Admit, returning one warning per failed rule.
    Warn,
    /// Admit silently; the audit annotations record the findings.
    Audit,
}

/// What became of a request: the value of the `decision` audit annotation, of the `decision`
/// field of the webhook's log line and of the `decision` label of
/// `mandate_admission_requests_total`. One enum from the verdict to the metrics.
///
/// A [`Verdict`] yields the first five; the webhook server adds the last two for requests no
/// verdict answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Reviewed and nothing failed.
    Allowed,
    /// Reviewed in enforce mode and something failed.
    Denied,
    /// Admitted with a warning per failed rule.
    Warned,
    /// Admitted silently although something failed (audit mode).
    Audited,
    /// Not subject to the rules (not an agent pod, an unchanged update, mandate's namespace).
    Skipped,
    /// The body was not an AdmissionReview the server could read (HTTP 400, 408 or 413). Never
    /// a verdict's.
    Invalid,
    /// The reviewer failed (panicked) or the answer could not be written (HTTP 500). Never a
    /// verdict's.
    Error,
}

/// The outcome of reviewing one request: who it concerns, the findings, and how they count.
/// Build one with [`Verdict::reviewed`], [`Verdict::skipped`] or [`Verdict::ignored`]; answer
/// with [`Verdict::respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    coverage: Coverage,
    /// What the request is about, for the message (`Pod agents/researcher-x`).
    subject: String,
    agent: Option<String>,
    owner: Option<String>,
    /// Sorted by reason (stable), so the most important comes first.
    findings: Vec<Finding>,
}

/// Whether and how the rules covered the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// Not a request mandate reviews: no annotations at all.
    Ignored,
    /// Reviewed and found not subject to the rules.
    Skipped,
    /// Reviewed in `mode`; `warn_only` findings never deny (workload templates).
    Reviewed { mode: Mode, warn_only: bool },
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Enforce, Mode::Warn, Mode::Audit];

    /// The label value (`enforce`, `warn`, `audit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }

    /// The mode a label value names, if it names one (exact, lower case, like Pod Security
    /// Admission's labels).
    pub fn parse(value: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.as_str() == value)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    /// The value of the audit annotation, the log field and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Warned => "warned",
            Decision::Audited => "audited",
            Decision::Skipped => "skipped",
            Decision::Invalid => "invalid",
            Decision::Error => "error",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an owner appears in the `owner` audit annotation: `User:alice`, `Group:team-a`.
pub fn owner_label(owner: &Owner) -> String {
    let kind = match owner.kind {
        OwnerKind::User => "User",
        OwnerKind::Group => "Group",
    };
    format!("{kind}:{}", owner.name)
}

impl Verdict {
    /// A request mandate does not review (an unknown kind): allowed without annotations.
    pub fn ignored() -> Self {
        Verdict {
            coverage: Coverage::Ignored,
            subject: String::new(),
            agent: None,
            owner: None,
            findings: Vec::new(),
        }
    }

    /// A request reviewed and found not subject to the rules: allowed, `decision=skipped`.
    /// Findings added to it are recorded in the annotations but never deny.
    pub fn skipped(subject: impl Into<String>) -> Self {
        Verdict {
            coverage: Coverage::Skipped,
            ..Verdict::reviewed(subject, Mode::Audit)
        }
    }

    /// A request reviewed in `mode`: denied (enforce), warned (warn) or audited (audit) when it
    /// has findings, allowed when it has none.
    pub fn reviewed(subject: impl Into<String>, mode: Mode) -> Self {
        Verdict {
            coverage: Coverage::Reviewed {
                mode,
                warn_only: false,
            },
            subject: subject.into(),
            agent: None,
            owner: None,
            findings: Vec::new(),
        }
    }

    /// Findings only warn, whatever the mode (audit mode still records silently). Workload
    /// templates are reviewed this way.
    #[must_use]
    pub fn warn_only(mut self) -> Self {
        if let Coverage::Reviewed { warn_only, .. } = &mut self.coverage {
            *warn_only = true;
        }
        self
    }

    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    #[must_use]
    pub fn owner(mut self, owner: &Owner) -> Self {
        self.owner = Some(owner_label(owner));
        self
    }

    #[must_use]
    pub fn finding(mut self, finding: Finding) -> Self {
        self.push(finding);
        self
    }

    #[must_use]
    pub fn findings(mut self, findings: impl IntoIterator<Item = Finding>) -> Self {
        findings.into_iter().for_each(|f| self.push(f));
        self
    }

    /// Adds a finding after those of the same or a more important reason.
    pub fn push(&mut self, finding: Finding) {
        let at = self
            .findings
            .partition_point(|f| f.reason <= finding.reason);
        self.findings.insert(at, finding);
    }

    /// The decision; `None` for an ignored request.
    pub fn decision(&self) -> Option<Decision> {
        let Coverage::Reviewed { mode, warn_only } = self.coverage else {
            return match self.coverage {
                Coverage::Ignored => None,
                _ => Some(Decision::Skipped),
            };
        };
        Some(match (self.findings.is_empty(), mode, warn_only) {
            (true, _, _) => Decision::Allowed,
            (false, Mode::Audit, _) => Decision::Audited,
            (false, Mode::Warn, _) | (false, Mode::Enforce, true) => Decision::Warned,
            (false, Mode::Enforce, false) => Decision::Denied,
        })
    }

    /// The mode the request was reviewed in; `None` when it was skipped or ignored.
    pub fn mode(&self) -> Option<Mode> {
        match self.coverage {
            Coverage::Reviewed { mode, .. } => Some(mode),
            _ => None,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn agent_name(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    pub fn owner_name(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The findings, most important first.
    pub fn all_findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The distinct reason codes, most important first: tests, metrics and the `reason`
    /// annotation read them.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> = Vec::with_capacity(self.findings.len());
        for finding in &self.findings {
            let code = finding.reason.code();
            if codes.last() != Some(&code) {
                codes.push(code);
            }
        }
        codes
    }

    /// The denial message: every failed rule, each saying what to change. `None` unless the
    /// decision is [`Decision::Denied`].
    pub fn message(&self) -> Option<String> {
        if self.decision() != Some(Decision::Denied) {
            return None;
        }
        let count = self.findings.len();
        let rules = if count == 1 { "rule" } else { "rules" };
        let listed: Vec<String> = self.findings.iter().map(Finding::to_string).collect();
        Some(format!(
            "mandate refused {} ({count} {rules} failed): {}",
            self.subject,
            listed.join("; ")
        ))
    }

    /// One warning per finding, prefixed by its code. Empty unless the decision is
    /// [`Decision::Warned`].
    pub fn warnings(&self) -> Vec<String> {
        if self.decision() != Some(Decision::Warned) {
            return Vec::new();
        }
        self.findings.iter().map(Finding::to_string).collect()
    }

    /// The audit annotations (keys without prefix; the API server adds the webhook's name).
    /// Reviewed requests carry all five keys (`agent` and `owner` empty when unknown); skipped ones
    /// the decision and any reason recorded; ignored ones none.
    pub fn audit_annotations(&self) -> Vec<(&'static str, String)> {
        let Some(decision) = self.decision() else {
            return Vec::new();
        };
        let reason = self.codes().join(",");
        match self.mode() {
            Some(mode) => vec![
                (AUDIT_DECISION, decision.as_str().to_owned()),
                (AUDIT_MODE, mode.as_str().to_owned()),
                (AUDIT_REASON, reason),
                (AUDIT_AGENT, self.agent.clone().unwrap_or_default()),
                (AUDIT_OWNER, self.owner.clone().unwrap_or_default()),
            ],
            None => {
                let mut annotations = vec![(AUDIT_DECISION, decision.as_str().to_owned())];
                if !reason.is_empty() {
                    annotations.push((AUDIT_REASON, reason));
                }
                annotations
            }
        }
    }

    /// The answer to `request`: its uid, allowed or denied (403 with [`Verdict::message`]),
    /// warnings and audit annotations.
    pub fn respond(&self, request: &Request) -> AdmissionResponse {
        // kube builds an allowing answer only from its own AdmissionRequest type; `invalid` is
        // its one constructor that needs none, so start from it and make it an allowing answer.
        let mut response = AdmissionResponse::invalid("");
        response.allowed = true;
        response.result = Status::default();
        response.uid.clone_from(&request.uid);
        if let Some(message) = self.message() {
            response.allowed = false;
            response.result = Status::failure(&message, "Forbidden").with_code(403);
        }
        let warnings = self.warnings();
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
        response.audit_annotations.extend(
            self.audit_annotations()
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value)),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_findings(mode: Mode) -> Verdict {
        Verdict::reviewed("Pod agents/p", mode)
            .agent("researcher")
            .finding(Finding::new(Reason::TokenTTL, "shorten the token"))
            .finding(Finding::new(Reason::NoIdentity, "label the pod"))
    }

    #[test]
    fn the_mode_label_values_round_trip_and_nothing_else_parses() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(Mode::parse("Enforce"), None);
        assert_eq!(Mode::parse(""), None);
    }

    #[test]
    fn findings_are_listed_most_important_first() {
        assert_eq!(
            two_findings(Mode::Enforce).codes(),
            ["NoIdentity", "TokenTTL"]
        );
    }

    #[test]
    fn enforce_denies_with_one_message_listing_every_finding() {
        let verdict = two_findings(Mode::Enforce);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(
            verdict.message().as_deref(),
            Some(
                "mandate refused Pod agents/p (2 rules failed): NoIdentity: label the pod; \
                 TokenTTL: shorten the token"
            )
        );
        assert!(verdict.warnings().is_empty());
    }

    #[test]
    fn warn_admits_with_one_warning_per_finding() {
        let verdict = two_findings(Mode::Warn);
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        assert_eq!(verdict.message(), None);
        assert_eq!(
            verdict.warnings(),
            ["NoIdentity: label the pod", "TokenTTL: shorten the token"]
        );
    }

    #[test]
    fn audit_admits_silently_but_records_the_reasons() {
        let verdict = two_findings(Mode::Audit);
        assert_eq!(verdict.decision(), Some(Decision::Audited));
        assert_eq!(verdict.message(), None);
        assert!(verdict.warnings().is_empty());
        assert!(
            verdict
                .audit_annotations()
                .contains(&(AUDIT_REASON, "NoIdentity,TokenTTL".to_owned()))
        );
    }

    #[test]
    fn warn_only_verdicts_never_deny_even_in_enforce_mode() {
        let verdict = two_findings(Mode::Enforce).warn_only();
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        assert_eq!(verdict.warnings().len(), 2);
        assert_eq!(
            two_findings(Mode::Audit).warn_only().decision(),
            Some(Decision::Audited)
        );
    }

    #[test]
    fn a_reviewed_verdict_without_findings_is_allowed_and_annotated_in_full() {
        let verdict = Verdict::reviewed("Pod agents/p", Mode::Enforce)
            .agent("researcher")
            .owner(&Owner {
                kind: OwnerKind::Group,
                name: "team-a".into(),
                contact: None,
            });
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
        assert_eq!(
            verdict.audit_annotations(),
            [
                (AUDIT_DECISION, "allowed".to_owned()),
                (AUDIT_MODE, "enforce".to_owned()),
                (AUDIT_REASON, String::new()),
                (AUDIT_AGENT, "researcher".to_owned()),
                (AUDIT_OWNER, "Group:team-a".to_owned()),
            ]
        );
    }

    #[test]
    fn skipped_verdicts_say_so_and_ignored_ones_say_nothing() {
        assert_eq!(
            Verdict::skipped("Pod x/y").audit_annotations(),
            [(AUDIT_DECISION, "skipped".to_owned())]
        );
        let recorded = Verdict::skipped("Pod x/y").finding(Finding::new(Reason::NotReady, "wait"));
        assert_eq!(recorded.decision(), Some(Decision::Skipped));
        assert_eq!(recorded.message(), None);
        assert_eq!(
            recorded.audit_annotations(),
            [
                (AUDIT_DECISION, "skipped".to_owned()),
                (AUDIT_REASON, "NotReady".to_owned())
            ]
        );
        assert!(Verdict::ignored().audit_annotations().is_empty());
        assert_eq!(Verdict::ignored().decision(), None);
    }
}
