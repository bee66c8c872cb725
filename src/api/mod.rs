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

pub use agent_identity::*;
pub use delegation_policy::*;
pub use tool_binding::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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
/// Standard label marking objects mandate manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] and the server-side apply field manager.
pub const MANAGER: &str = "mandate";

/// The CustomResourceDefinitions of all three kinds, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        AgentIdentity::crd(),
        ToolBinding::crd(),
        DelegationPolicy::crd(),
    ]
}
