//! Publishing Kubernetes Events (events.k8s.io/v1) about mandate's objects: one change of
//! authority in, one Event created out.
//!
//! kube's `Recorder` keeps every Event it publishes for six minutes to fold repeats into a
//! series. mandate's Events are distinct changes that rarely repeat, and with 10,000 identities
//! that cache of whole Events was the operator's largest allocation, so Events are created
//! directly.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::assess::EventType;

/// Creates Events as controller `mandate`, reported by this replica.
pub(crate) struct EventPublisher {
    client: Client,
    instance: String,
}

/// The longest note the API server accepts is 1 KiB.
const MAX_NOTE: usize = 1000;

impl EventPublisher {
    pub(crate) fn new(client: Client) -> Self {
        EventPublisher {
            client,
            // reportingInstance is required: the pod's name where the chart sets it.
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "mandate".to_owned()),
        }
    }

    pub(crate) async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        self.publish_action("Reconcile", regarding, type_, reason, note)
            .await
    }

    /// [`publish`](Self::publish) for an `action` other than a reconcile (`Admit`). An Event
    /// about a cluster-scoped object (a Namespace) lives in `default`, as the API server
    /// requires and `kubectl describe` looks for it.
    pub(crate) async fn publish_action(
        &self,
        action: &str,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(regarding.name.as_deref().unwrap_or("mandate"))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(truncate(note, MAX_NOTE)),
            type_: Some(type_.as_str().to_owned()),
            reporting_controller: Some("mandate".to_owned()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(regarding),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

/// `<object>.<hex nanoseconds>`, as client-go names Events, with a per-process sequence so two
/// Events in one nanosecond still differ (`generateName` cannot end in the `.` this needs).
fn event_name(object: &str) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{object}.{nanos:x}{sequence:x}")
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{event_name, truncate};

    #[test]
    fn event_names_are_valid_and_distinct() {
        let (one, two) = (event_name("agent-1"), event_name("agent-1"));
        assert_ne!(one, two);
        assert!(one.starts_with("agent-1."));
        assert!(
            one.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        );
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("ééé".into(), 3);
        assert_eq!(cut, "é");
    }
}
