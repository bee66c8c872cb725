//! Why a reconcile failed, named by the step that failed. Permanent errors (the spec itself is
//! wrong) wait for a change; the rest are retried with backoff.

use crate::project::ProjectError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{kind} {name} has no namespace")]
    MissingNamespace { kind: &'static str, name: String },
    #[error("reading the authority for {kind} {name}: {source}")]
    ReadAuthority {
        kind: &'static str,
        name: String,
        #[source]
        source: crate::index::AuthorityLagging,
    },
    #[error("projecting AgentIdentity {name}: {source}")]
    Project {
        name: String,
        #[source]
        source: ProjectError,
    },
    #[error("applying ServiceAccount {namespace}/{name}: {source}")]
    ApplyServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying NetworkPolicy {namespace}/{name}: {source}")]
    ApplyNetworkPolicy {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    WriteStatus {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// Whether retrying cannot help until the object changes.
    pub fn is_permanent(&self) -> bool {
        match self {
            ReconcileError::MissingNamespace { .. } | ReconcileError::Project { .. } => true,
            ReconcileError::ReadAuthority { .. } => false,
            ReconcileError::ApplyServiceAccount { source, .. }
            | ReconcileError::ApplyNetworkPolicy { source, .. }
            | ReconcileError::WriteStatus { source, .. } => namespace_terminating(source),
        }
    }
}

/// The namespace is being deleted: nothing can be created in it, and the identity goes with
/// it, so retrying is only noise.
fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403 && status.message.contains("is being terminated"))
}
