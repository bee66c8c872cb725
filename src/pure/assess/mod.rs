//! Assessments: one pure decision per kind of mandate's. An object, the authority snapshot and
//! the instant in; everything the operator should make true about it out: its conditions (with
//! reasons and messages), its whole status, the events that report a change of authority, for
//! an AgentIdentity its projections, and the next instant at which any of it changes by itself.
//!
//! Never does I/O and never reads a clock. The reconcilers apply what comes out; `mandate
//! check` and `mandate inventory` call the same functions, so what they print is what the
//! operator would write.

mod api_rights;
mod binding;
mod identity;
mod policy;

pub use api_rights::{
    api_rights_condition, api_rights_granted_by, identities_with_changed_api_rights,
};
pub use binding::{BindingAssessment, assess_binding};
pub use identity::{
    IdentityAssessment, IdentityInputs, NAMESPACE_NOT_OPTED_IN, NAMESPACE_OPTED_IN,
    ServiceAccountGuard, assess_identity, projections_applied, service_account_blockers,
    service_account_guard,
};
pub use policy::{PolicyAssessment, assess_policy};

use crate::authority::Finding;

/// The Event types Kubernetes knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One change of authority worth an Event on the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// A stable CamelCase word (`ToolsGranted`, `EscalationPath`, ...).
    pub reason: &'static str,
    pub note: String,
}

impl Event {
    fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Event {
            type_: EventType::Normal,
            reason,
            note: note.into(),
        }
    }

    fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Event {
            type_: EventType::Warning,
            reason,
            note: note.into(),
        }
    }
}

/// The Accepted condition's reason and message for validation findings: `Valid`, or the first
/// finding's code with every finding listed.
fn accepted(findings: &[Finding], what: &str) -> (&'static str, String) {
    match findings.first() {
        None => ("Valid", format!("the {what} passed validation")),
        Some(first) => (
            first.reason.code(),
            findings
                .iter()
                .map(|f| format!("{}: {}", f.reason.code(), f.detail))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}
