//! Recording the namespace mode weakenings the webhook let through: every answered request and
//! its verdict in; for a weakening let through (`admission::namespace::let_through`, the rule's
//! own reading of the verdict) that is not a dry run, one count of
//! `mandate_namespace_mode_weakened_total{by_approver}`, one warning log line and one Event on
//! the namespace out. Decides nothing itself; never waits on the API server (the Event is
//! created in a task of its own).
//!
//! The webhook is registered with `sideEffects: NoneOnDryRun` for this: a dry run records
//! nothing. A weakening mandate let through may still be refused by a later admission step;
//! the record says what mandate allowed, the API server's audit log what happened.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;

use super::server::Recorder;
use crate::admission::namespace::{Weakening, let_through};
use crate::admission::request::{Object, Request};
use crate::admission::{AdmissionConfig, Reason, Verdict};
use crate::assess::EventType;
use crate::controller::events::EventPublisher;
use crate::telemetry::Metrics;

/// The operator's [`Recorder`]: records let-through weakenings of namespace modes.
pub struct ModeWeakenings {
    events: Arc<EventPublisher>,
    config: AdmissionConfig,
    metrics: Metrics,
}

impl ModeWeakenings {
    pub fn new(client: Client, config: AdmissionConfig, metrics: Metrics) -> Self {
        ModeWeakenings {
            events: Arc::new(EventPublisher::new(client)),
            config,
            metrics,
        }
    }
}

impl Recorder for ModeWeakenings {
    fn answered(&self, request: &Request, verdict: &Verdict) {
        if request.dry_run {
            return;
        }
        let Some(weakening) = let_through(request, verdict, &self.config) else {
            return;
        };
        self.metrics.record_mode_weakened(weakening.by_approver);
        let note = note(&weakening, &self.config.approver_group);
        tracing::warn!(
            namespace = %weakening.namespace,
            from = weakening.from.as_str(),
            to = weakening.to.map_or("none", |mode| mode.as_str()),
            by = %weakening.by,
            by_approver = weakening.by_approver,
            "namespace mode weakened"
        );
        let uid = match &request.object {
            Object::Namespace(namespaces) => namespaces
                .object
                .get()
                .ok()
                .and_then(|namespace| namespace.metadata.uid.clone()),
            _ => None,
        };
        let regarding = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some(weakening.namespace.clone()),
            uid,
            ..ObjectReference::default()
        };
        let events = Arc::clone(&self.events);
        tokio::spawn(async move {
            let published = events
                .publish_action(
                    "Admit",
                    regarding,
                    EventType::Warning,
                    Reason::ModeWeakened.code(),
                    note,
                )
                .await;
            if let Err(error) = published {
                tracing::warn!(%error, namespace = %weakening.namespace, "recording the mode weakening as an Event");
            }
        });
    }
}

/// The Event's note: what changed, by whom, and why it was let through.
fn note(weakening: &Weakening, approver_group: &str) -> String {
    let to = weakening
        .to
        .map_or_else(|| "none (label removed)".to_owned(), |m| m.to_string());
    let why = if weakening.by_approver {
        format!("a member of the approver group {approver_group}")
    } else {
        "no AgentIdentity lives in the namespace".to_owned()
    };
    format!(
        "mandate.dev/mode weakened from {} to {to} by {}: let through, {why}",
        weakening.from, weakening.by
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Mode;

    #[test]
    fn the_note_names_the_change_who_made_it_and_why_it_passed() {
        let weakening = Weakening {
            namespace: "agents".to_owned(),
            from: Mode::Enforce,
            to: None,
            by: "carol".to_owned(),
            by_approver: true,
        };
        assert_eq!(
            note(&weakening, "mandate:approvers"),
            "mandate.dev/mode weakened from enforce to none (label removed) by carol: let \
             through, a member of the approver group mandate:approvers"
        );
    }
}
