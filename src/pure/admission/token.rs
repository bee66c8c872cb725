//! TokenRequest admission: a TokenRequest (`serviceaccounts/token`), the ServiceAccount it is
//! for, a [`Snapshot`], the installation's [`AdmissionConfig`] and the instant in; a [`Verdict`]
//! out. A token for an agent's ServiceAccount is judged as the pod rules judge a projected
//! token ([`judge_token`]: the identity's TTL, the 3607-second extension, its audiences and
//! those of the tools it holds at that instant), in the namespace's mode (or the default mode);
//! a token for any other ServiceAccount is skipped. Pure: never does I/O.

use std::collections::BTreeSet;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::jiff::Timestamp;

use super::pod::{DEFAULT_TOKEN_EXPIRATION_SECONDS, EXTENDED_TOKEN_SECONDS, judge_token};
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::Verdict;
use crate::authority::HeldTool;

/// Reviews `token`, requested for ServiceAccount `service_account` in `namespace`.
pub fn review_token_request(
    token: &TokenRequest,
    namespace: &str,
    service_account: &str,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict {
    let subject = format!("TokenRequest {namespace}/{service_account}");
    let Some(identity) = snapshot.claimants(namespace, service_account).next() else {
        return Verdict::skipped(subject);
    };
    let agent = identity.metadata.name.as_deref().unwrap_or_default();
    let mode = snapshot
        .namespace_mode(namespace)
        .unwrap_or(config.default_mode);
    // The API server defaults an unset expirationSeconds to an hour before admission; a
    // request built by hand may still leave it out.
    let spec = token.spec.as_ref();
    let seconds = spec
        .and_then(|s| s.expiration_seconds)
        .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS);
    let ttl = identity.token_ttl_seconds();
    let advice = format!(
        "ask for {} seconds or less (kubectl create token --duration={}s)",
        ttl.min(EXTENDED_TOKEN_SECONDS - 1),
        ttl.min(EXTENDED_TOKEN_SECONDS - 1),
    );
    let audiences = spec
        .and_then(|s| s.audiences.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        // The API server fills its own audiences into a request that names none.
        .filter(|a| !a.is_empty() && !config.api_audiences.iter().any(|api| api == a));
    // A token for a tool the agent holds now is what its pods' credential volumes project.
    let tool_audiences: BTreeSet<String> = snapshot
        .authority()
        .held_tools(namespace, agent, now)
        .iter()
        .map(HeldTool::audience)
        .collect();
    let findings = judge_token(
        &format!("the TokenRequest for ServiceAccount {service_account} asks for a token"),
        seconds,
        audiences,
        agent,
        identity,
        &tool_audiences,
        &advice,
    );
    Verdict::reviewed(subject, mode)
        .agent(agent)
        .owner(&identity.spec.owner)
        .findings(findings)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::TokenRequestSpec;

    use super::*;
    use crate::admission::verdict::{Decision, Mode};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn token(seconds: Option<i64>, audiences: &[&str]) -> TokenRequest {
        TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: seconds,
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        }
    }

    /// `agents` enforces; `researcher` allows two hours and audience `mandate.dev/tools`;
    /// `scraper` lives in the unlabelled `team-b` with the default TTL.
    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(
                identity("researcher")
                    .credentials(Some(7200), ["mandate.dev/tools"])
                    .ready()
                    .build(),
            )
            .identity(identity("scraper").namespace("team-b").ready().build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build()
    }

    fn review(token: &TokenRequest, namespace: &str, service_account: &str) -> Verdict {
        review_token_request(
            token,
            namespace,
            service_account,
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        )
    }

    #[test]
    fn a_year_long_token_for_an_agents_service_account_is_refused_with_token_ttl() {
        let verdict = review(&token(Some(31_536_000), &[]), NS, "researcher");
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.agent_name(), Some("researcher"));
        let detail = &verdict.all_findings()[0].detail;
        assert!(detail.contains("longer than the 7200s"), "{detail}");
    }

    #[test]
    fn a_token_for_an_audience_the_identity_does_not_allow_is_refused_with_token_ttl() {
        let verdict = review(
            &token(Some(600), &["mandate.dev/tools", "https://other.example"]),
            NS,
            "researcher",
        );
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        assert_eq!(verdict.all_findings().len(), 1);
        let detail = &verdict.all_findings()[0].detail;
        assert!(
            detail.contains("audience https://other.example"),
            "{detail}"
        );
    }

    #[test]
    fn a_token_of_exactly_3607_seconds_is_refused_because_the_api_server_extends_it() {
        let verdict = review(&token(Some(3607), &[]), NS, "researcher");
        assert_eq!(verdict.codes(), ["TokenTTL"]);
        let detail = &verdict.all_findings()[0].detail;
        assert!(detail.contains("extends to a year"), "{detail}");
    }

    #[test]
    fn a_token_within_the_ttl_for_the_api_server_or_an_allowed_audience_is_allowed() {
        for request in [
            token(None, &[]),
            token(Some(3600), &[]),
            token(Some(7200), &["mandate.dev/tools"]),
        ] {
            let verdict = review(&request, NS, "researcher");
            assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
        }
    }

    #[test]
    fn a_token_for_the_audience_of_a_tool_the_agent_holds_now_is_allowed() {
        let authority = Authority::builder()
            .identity(identity("reader").ready().build())
            .binding(
                binding("docs")
                    .agent("reader")
                    .tool(tool("docs"))
                    .valid_until(hours(1))
                    .build(),
            )
            .build();
        let snapshot = Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build();
        let request = token(Some(600), &["mandate.dev/agents/docs"]);
        let at = |now| {
            review_token_request(
                &request,
                NS,
                "reader",
                &snapshot,
                &AdmissionConfig::default(),
                now,
            )
        };
        assert_eq!(at(NOW).decision(), Some(Decision::Allowed), "{:?}", at(NOW));
        // Once the tool has expired, its audience is no longer the agent's.
        assert_eq!(at(hours(2)).codes(), ["TokenTTL"]);
    }

    #[test]
    fn an_unset_expiration_counts_as_the_api_servers_default_hour() {
        let verdict = review_token_request(
            &token(None, &[]),
            "team-b",
            "scraper",
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        let ttl = identity("scraper").build().token_ttl_seconds();
        let expected = if ttl < 3600 {
            Some(Decision::Denied)
        } else {
            Some(Decision::Allowed)
        };
        assert_eq!(verdict.decision(), expected, "{verdict:?}");
    }

    #[test]
    fn outside_labelled_namespaces_the_default_mode_applies() {
        let config = AdmissionConfig {
            default_mode: Mode::Warn,
            ..AdmissionConfig::default()
        };
        let verdict = review_token_request(
            &token(Some(31_536_000), &[]),
            "team-b",
            "scraper",
            &snapshot(),
            &config,
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
    }

    #[test]
    fn a_token_for_the_api_servers_own_audience_is_a_token_for_the_api_server() {
        let verdict = review(
            &token(Some(600), &["https://kubernetes.default.svc.cluster.local"]),
            NS,
            "researcher",
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed), "{verdict:?}");
    }

    #[test]
    fn a_token_for_a_service_account_of_no_agent_is_skipped() {
        let verdict = review(&token(Some(31_536_000), &["anything"]), NS, "default");
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }
}
