//! Projection: an AgentIdentity plus an authority snapshot (and, for the NetworkPolicy, the
//! Services and EndpointSlices its tools name) in; the objects Kubernetes enforces out: the
//! desired ServiceAccount (with its SPIFFE ID) and NetworkPolicy. Also the namespace default
//! deny (`default_deny`): what mandate knows of a namespace in, its default-deny policy out. Pure: never does I/O, never
//! calls the API server; the controller applies what comes out with server-side apply.
//!
//! Every projected object of an identity carries the labels `app.kubernetes.io/managed-by: mandate` and
//! `mandate.dev/agent: <name>` and a controller ownerReference to its AgentIdentity, so garbage
//! collection does the deletes. Output is deterministic: projecting twice gives equal objects.

mod default_deny;
mod network_policy;
mod service_account;
mod spiffe;

pub use default_deny::{DEFAULT_DENY_NAME, DenyScope, default_deny_scope, desired_default_deny};
pub use network_policy::{
    DesiredNetworkPolicy, DnsEgress, NetworkConfig, NetworkInputs, ServiceDirectory, Services,
    Unresolvable, desired_network_policy, network_policy_name, service_name_of_slice,
};
pub use service_account::desired_service_account;
pub use spiffe::{TrustDomain, TrustDomainError, spiffe_id};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::{AGENT_LABEL, AgentIdentity, MANAGED_BY_LABEL, MANAGER};

/// Why an object could not be projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// Owner references need the identity's name and uid, which only objects read from the
    /// API server have.
    #[error(
        "building the owner reference: the AgentIdentity has no {missing} (it must be read from the API server)"
    )]
    OwnerReference { missing: &'static str },
    /// Projected objects live in the identity's namespace.
    #[error("placing the projection: the AgentIdentity {name} has no namespace")]
    Namespace { name: String },
}

/// What an identity's projections share: its name, namespace, labels and owner reference.
struct Owned {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
}

impl Owned {
    fn of(identity: &AgentIdentity) -> Result<Owned, ProjectError> {
        let name = identity
            .metadata
            .name
            .clone()
            .ok_or(ProjectError::OwnerReference { missing: "name" })?;
        let namespace = identity
            .metadata
            .namespace
            .clone()
            .ok_or_else(|| ProjectError::Namespace { name: name.clone() })?;
        let owner = identity
            .controller_owner_ref(&())
            .ok_or(ProjectError::OwnerReference { missing: "uid" })?;
        Ok(Owned {
            labels: BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                (AGENT_LABEL.to_owned(), name.clone()),
            ]),
            name,
            namespace,
            owner: OwnerReference {
                block_owner_deletion: Some(true),
                ..owner
            },
        })
    }

    /// Metadata for a projected object called `name`.
    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}
