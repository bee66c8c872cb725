//! The desired ServiceAccount of an AgentIdentity: the identity and the trust domain in; a
//! ServiceAccount that mounts no token by default and carries its SPIFFE ID out. Pure, no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{Owned, ProjectError, TrustDomain, spiffe_id};
use crate::api::{AgentIdentity, SPIFFE_ID_ANNOTATION};

/// The ServiceAccount `identity` runs as: named by `spec.serviceAccountName` (default: the
/// identity's name), `automountServiceAccountToken: false` (agents that need a token mount a
/// short-lived projected one), annotated with its SPIFFE ID, labelled and owned like every
/// projection.
pub fn desired_service_account(
    identity: &AgentIdentity,
    trust_domain: &TrustDomain,
) -> Result<ServiceAccount, ProjectError> {
    let owned = Owned::of(identity)?;
    let name = identity.service_account_name().to_owned();
    let mut metadata = owned.meta(name.clone());
    metadata.annotations = Some(BTreeMap::from([(
        SPIFFE_ID_ANNOTATION.to_owned(),
        spiffe_id(trust_domain, &owned.namespace, &name),
    )]));
    Ok(ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::authority::fixtures::*;
    use crate::project::ProjectError;

    #[test]
    fn the_service_account_is_named_for_the_identity_and_mounts_no_token() {
        let sa = desired_service_account(&identity("researcher").build(), &TrustDomain::default());
        let sa = sa.unwrap_or_default();
        assert_eq!(sa.metadata.name.as_deref(), Some("researcher"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert_eq!(
            sa.metadata.annotations,
            Some(BTreeMap::from([(
                "mandate.dev/spiffe-id".to_owned(),
                "spiffe://cluster.local/ns/agents/sa/researcher".to_owned()
            )]))
        );
        assert_eq!(
            sa.metadata.labels,
            Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "mandate".to_owned()
                ),
                ("mandate.dev/agent".to_owned(), "researcher".to_owned()),
            ]))
        );
        assert_eq!(
            sa.metadata.owner_references,
            Some(vec![OwnerReference {
                api_version: "mandate.dev/v1alpha1".into(),
                kind: "AgentIdentity".into(),
                name: "researcher".into(),
                uid: "uid-agents-researcher".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }])
        );
    }

    #[test]
    fn the_service_account_name_comes_from_the_spec_when_set() {
        let identity = identity("researcher")
            .service_account("research-bot")
            .build();
        let td = TrustDomain::parse("example.org").unwrap_or_default();
        let sa = desired_service_account(&identity, &td).unwrap_or_default();
        assert_eq!(sa.metadata.name.as_deref(), Some("research-bot"));
        assert_eq!(
            sa.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("mandate.dev/spiffe-id"))
                .map(String::as_str),
            Some("spiffe://example.org/ns/agents/sa/research-bot")
        );
        assert_eq!(
            sa.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("mandate.dev/agent"))
                .map(String::as_str),
            Some("researcher")
        );
    }

    #[test]
    fn an_identity_without_a_uid_cannot_own_its_service_account() {
        let mut identity = identity("researcher").build();
        identity.metadata.uid = None;
        assert_eq!(
            desired_service_account(&identity, &TrustDomain::default()),
            Err(ProjectError::OwnerReference { missing: "uid" })
        );
    }
}
