//! A synthetic cluster for benchmarks and load tests: `n` Ready identities spread over
//! namespaces, each with one live binding (tool `catalogue` at Service `catalogue`, exposing the
//! MCP tool `search`) and its managed ServiceAccount, namespaces labelled `enforce`. Plain data in, a [`Snapshot`] out; never used on a review path. Compiled only for
//! tests and with the `fixtures` feature (benches, the e2e crate's load target), never into the
//! shipped binary.
//!
//! The identity `researcher` in namespace `agents` always exists, so the realistic pod review
//! in `tests/fixtures/admission/pod-create.json` is admitted against it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::snapshot::Snapshot;
use crate::api::conditions::{self, READY};
use crate::api::{
    AGENT_LABEL, AgentIdentity, AgentIdentityStatus, MANAGED_BY_LABEL, MANAGER, MODE_LABEL,
    ToolBinding,
};
use crate::authority::{self, Authority};

/// Identities per synthetic namespace.
const PER_NAMESPACE: usize = 100;

/// A snapshot of `identities` Ready agents (at least one: `agents/researcher`).
pub fn snapshot(identities: usize) -> Snapshot {
    let mut agents = vec![("agents".to_owned(), "researcher".to_owned())];
    agents.extend((1..identities).map(|i| {
        (
            format!("ns-{:03}", i / PER_NAMESPACE),
            format!("agent-{i:05}"),
        )
    }));
    let mut builder = Authority::builder().config(authority::Config::default());
    let mut namespaces = BTreeMap::new();
    for (namespace, name) in &agents {
        builder.add_identity(identity(namespace, name));
        builder.add_binding(binding(namespace, name));
        builder.add_service_account(service_account(namespace, name));
        namespaces
            .entry(namespace.clone())
            .or_insert_with(|| ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some([(MODE_LABEL.to_owned(), "enforce".to_owned())].into()),
                ..ObjectMeta::default()
            });
    }
    Snapshot::from_objects(
        builder.build(),
        namespaces.into_values(),
        Vec::<ObjectMeta>::new(),
    )
}

fn identity(namespace: &str, name: &str) -> AgentIdentity {
    let mut identity: AgentIdentity = serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"), "generation": 1},
        "spec": {"owner": {"kind": "Group", "name": "research-team"}, "purpose": "synthetic agent",
            "credentials": {"audiences": ["mandate.dev/tools"]}}
    }))
    .expect("a literal identity parses");
    let mut status = AgentIdentityStatus::default();
    conditions::set(
        &mut status.conditions,
        conditions::new(
            READY,
            true,
            "Projected",
            "",
            Some(1),
            Time(Timestamp::UNIX_EPOCH),
        ),
    );
    identity.status = Some(status);
    identity
}

fn binding(namespace: &str, agent: &str) -> ToolBinding {
    serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": format!("{agent}-tools"), "namespace": namespace},
        "spec": {"agent": agent, "tools": [{"name": "catalogue", "actions": ["read"],
            "destination": {"service": {"name": "catalogue", "ports": ["http"]}},
            "mcp": {"tools": [{"name": "search", "action": "read"}]}}]}
    }))
    .expect("a literal binding parses")
}

fn service_account(namespace: &str, agent: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(agent.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                    (AGENT_LABEL.to_owned(), agent.to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_snapshot_holds_the_requested_identities_and_the_researcher() {
        let snapshot = snapshot(250);
        let authority = snapshot.authority();
        assert!(authority.identity("agents", "researcher").is_some());
        let total: usize = authority
            .namespaces()
            .iter()
            .map(|ns| authority.identities_in(ns).count())
            .sum();
        assert_eq!(total, 250);
        assert_eq!(
            snapshot.namespace_mode("agents").map(|m| m.as_str()),
            Some("enforce")
        );
    }
}

#[cfg(test)]
mod fixture_tests {
    use std::sync::Arc;

    use arc_swap::ArcSwapOption;

    use super::snapshot;
    use crate::admission::{AdmissionConfig, MandateReviewer, Reviewer};
    use crate::webhook::server::parse_review;

    #[test]
    fn the_realistic_pod_review_is_admitted_against_the_synthetic_snapshot() {
        let body = include_bytes!("../../../tests/fixtures/admission/pod-create.json");
        let request = parse_review(body).expect("the fixture is an AdmissionReview");
        let reviewer = MandateReviewer::new(
            Arc::new(ArcSwapOption::from_pointee(snapshot(10))),
            AdmissionConfig::default(),
        );
        let verdict = reviewer.review(&request);
        assert!(verdict.codes().is_empty(), "{:?}", verdict.message());
    }
}
