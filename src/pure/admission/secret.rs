//! Secret admission: a Secret's metadata and type (never its data), a [`Snapshot`] and the
//! installation's [`AdmissionConfig`] in; a [`Verdict`] out. Creating a legacy
//! service-account-token Secret for an agent's ServiceAccount is `LongLivedToken`, reviewed in
//! the namespace's mode (or the default mode). Pure: never does I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::snapshot::{
    AdmissionConfig, SERVICE_ACCOUNT_NAME_ANNOTATION, SERVICE_ACCOUNT_TOKEN_TYPE, Snapshot,
};
use super::verdict::{Finding, Reason, Verdict};

/// Reviews the creation of a Secret of type `secret_type` with metadata `meta`.
pub fn review_secret(
    meta: &ObjectMeta,
    secret_type: Option<&str>,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
) -> Verdict {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta
        .name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .unwrap_or_default();
    let subject = format!("Secret {namespace}/{name}");
    let service_account = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
        .map(String::as_str);
    let (Some(SERVICE_ACCOUNT_TOKEN_TYPE), Some(service_account)) = (secret_type, service_account)
    else {
        return Verdict::skipped(subject);
    };
    let Some(agent) = snapshot.agent_of_service_account(namespace, service_account) else {
        return Verdict::skipped(subject);
    };
    let mode = snapshot
        .namespace_mode(namespace)
        .unwrap_or(config.default_mode);
    let mut verdict = Verdict::reviewed(subject, mode)
        .agent(agent)
        .finding(Finding::new(
            Reason::LongLivedToken,
            format!(
                "a {SERVICE_ACCOUNT_TOKEN_TYPE} Secret never expires, and ServiceAccount \
                 {service_account} belongs to agent {agent}: project a short-lived \
                 serviceAccountToken volume in the agent's pods instead of creating the Secret"
            ),
        ));
    if let Some(owner) = snapshot.authority().owner(namespace, agent) {
        verdict = verdict.owner(owner);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::verdict::{Decision, Mode};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn secret(namespace: &str, service_account: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("token".into()),
            namespace: Some(namespace.into()),
            annotations: Some(BTreeMap::from([(
                SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(),
                service_account.to_owned(),
            )])),
            ..ObjectMeta::default()
        }
    }

    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .identity(identity("scraper").namespace("team-b").build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build()
    }

    #[test]
    fn creating_a_token_secret_for_an_agent_service_account_is_refused_with_long_lived_token() {
        let verdict = review_secret(
            &secret(NS, "researcher"),
            Some(SERVICE_ACCOUNT_TOKEN_TYPE),
            &snapshot(),
            &AdmissionConfig::default(),
        );
        assert_eq!(verdict.codes(), ["LongLivedToken"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.agent_name(), Some("researcher"));
    }

    #[test]
    fn outside_labelled_namespaces_the_default_mode_applies() {
        let config = AdmissionConfig {
            default_mode: Mode::Warn,
            ..AdmissionConfig::default()
        };
        let verdict = review_secret(
            &secret("team-b", "scraper"),
            Some(SERVICE_ACCOUNT_TOKEN_TYPE),
            &snapshot(),
            &config,
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
    }

    #[test]
    fn other_secrets_and_tokens_of_other_service_accounts_are_skipped() {
        let snapshot = snapshot();
        let config = AdmissionConfig::default();
        for (meta, kind) in [
            (secret(NS, "default"), Some(SERVICE_ACCOUNT_TOKEN_TYPE)),
            (secret(NS, "researcher"), Some("Opaque")),
            (secret(NS, "researcher"), None),
        ] {
            let verdict = review_secret(&meta, kind, &snapshot, &config);
            assert_eq!(verdict.decision(), Some(Decision::Skipped));
        }
    }
}
