//! The three custom resources of group `mandate.dev/v1alpha1` and the vocabulary they share:
//! well-known labels and annotations, condition types and reasons. Types only: no client code.
//!
//! The `///` comments on CRD fields are user documentation (`kubectl explain` prints them);
//! `//` comments are for maintainers.

mod agent_identity;
pub mod conditions;
mod delegation_policy;
mod schema;
mod tool_binding;

#[cfg(test)]
mod tests;

pub use agent_identity::*;
pub use delegation_policy::*;
pub use tool_binding::*;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

/// API group of every mandate resource.
pub const GROUP: &str = "mandate.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Label naming the AgentIdentity a pod (or a projected object) belongs to.
pub const AGENT_LABEL: &str = "mandate.dev/agent";
/// Namespace label opting a namespace into admission: `enforce`, `warn` or `audit`.
pub const MODE_LABEL: &str = "mandate.dev/mode";
/// Annotation on a projected ServiceAccount carrying its SPIFFE ID.
pub const SPIFFE_ID_ANNOTATION: &str = "mandate.dev/spiffe-id";
/// Annotation mandate's mutating webhook sets on an agent pod: the tools it gave the pod a
/// token for, comma-separated and sorted (`docs,search`). A pod whose annotation lacks a live
/// tool was started before the tool was granted (the identity's `CredentialsStale`).
pub const TOOL_CREDENTIALS_ANNOTATION: &str = "mandate.dev/tool-credentials";
/// Standard label marking objects mandate manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] and the server-side apply field manager.
pub const MANAGER: &str = "mandate";

/// The ServiceAccount a pod runs as: `serviceAccountName`, the deprecated `serviceAccount`, or
/// `default`, which the API server's ServiceAccount admission plugin fills in before validating
/// webhooks see the pod (so the fallback matters for manifests and for pods read elsewhere).
pub fn pod_service_account(spec: &k8s_openapi::api::core::v1::PodSpec) -> &str {
    spec.service_account_name
        .as_deref()
        .filter(|name| !name.is_empty())
        .or(spec
            .service_account
            .as_deref()
            .filter(|name| !name.is_empty()))
        .unwrap_or("default")
}

/// The CustomResourceDefinitions of all three kinds, in a stable order. Use this rather than
/// `AgentIdentity::crd()`: only this one is accepted by a real API server, since it declares
/// `metadata.name` for the name-length rule.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        declare_metadata_name(
            AgentIdentity::crd(),
            "The agent's name: at most 63 characters, since pods carry it as the mandate.dev/agent label value.",
        ),
        ToolBinding::crd(),
        DelegationPolicy::crd(),
    ]
}

/// Declares `metadata.name` in the root schema. A real kube-apiserver refuses a root CEL rule
/// with `fieldPath: .metadata.name` ("must be a valid path") unless the schema declares that
/// field; `name` and `generateName` are the only metadata fields a CRD may declare, and
/// `metadata` itself may carry nothing but its type (not even a description).
fn declare_metadata_name(mut crd: CustomResourceDefinition, doc: &str) -> CustomResourceDefinition {
    let metadata = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([(
            "name".to_owned(),
            JSONSchemaProps {
                type_: Some("string".into()),
                description: Some(doc.into()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        if let Some(properties) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
        {
            properties.insert("metadata".to_owned(), metadata.clone());
        }
    }
    crd
}
