//! Bearer tokens verified by the API server: a token in; the caller it proves (namespace,
//! ServiceAccount, the audiences TokenReview confirmed, the pod it is bound to) or why not out.
//! A token is never trusted by decoding it: its unverified claims only say which audiences to
//! ask TokenReview about and how long an answer may be cached. Holds no rule: the decision
//! itself is `decide::decide`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::decide::{Authentication, Caller, parse_service_account_username};

/// The `user.extra` key under which TokenReview names the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// How long a verified token is trusted without asking again, at most: a token bound to a pod
/// that is deleted meanwhile is refused at most this much later (its expiry bounds it too).
pub const MAX_CACHE: Duration = Duration::from_secs(10);
/// How long a refusal is remembered, so a flood of one bad token costs one TokenReview.
const REFUSAL_CACHE: Duration = Duration::from_secs(2);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// What verifies tokens: the API server in `mandate run`, a fixed table in tests.
pub trait TokenReviewer: Send + Sync + 'static {
    /// Asks whether `token` is valid for one of `audiences`. `Err` when the question could not
    /// be asked (the API server is unreachable), which refuses the call but is not cached.
    fn review(
        &self,
        token: &str,
        audiences: Vec<String>,
    ) -> BoxFuture<'_, Result<Reviewed, String>>;
}

/// What TokenReview answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewed {
    Authenticated {
        username: String,
        /// The requested audiences the token carries.
        audiences: Vec<String>,
        /// The pod the token is bound to, if any.
        pod: Option<String>,
    },
    Refused(String),
}

/// TokenReview against the API server (`create tokenreviews`).
pub struct ApiTokenReviewer {
    api: Api<TokenReview>,
}

impl ApiTokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        ApiTokenReviewer {
            api: Api::all(client),
        }
    }
}

impl TokenReviewer for ApiTokenReviewer {
    fn review(
        &self,
        token: &str,
        audiences: Vec<String>,
    ) -> BoxFuture<'_, Result<Reviewed, String>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(audiences),
            },
            ..TokenReview::default()
        };
        Box::pin(async move {
            let answered = self
                .api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("TokenReview failed: {e}"))?;
            let status = answered.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                let why = status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "not authenticated".into());
                return Ok(Reviewed::Refused(format!(
                    "TokenReview refused the token: {why}"
                )));
            }
            let user = status.user.unwrap_or_default();
            let pod = user
                .extra
                .as_ref()
                .and_then(|extra| extra.get(POD_NAME_EXTRA))
                .and_then(|names| names.first().cloned());
            Ok(Reviewed::Authenticated {
                username: user.username.unwrap_or_default(),
                audiences: status.audiences.unwrap_or_default(),
                pod,
            })
        })
    }
}

/// Verifies bearer tokens through a [`TokenReviewer`], caching each answer.
#[derive(Clone)]
pub struct TokenVerifier {
    reviewer: Arc<dyn TokenReviewer>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Clone)]
struct Cached {
    answer: Authentication,
    until: Instant,
}

impl TokenVerifier {
    pub fn new(reviewer: Arc<dyn TokenReviewer>) -> Self {
        TokenVerifier {
            reviewer,
            cache: Arc::default(),
        }
    }

    /// The caller `token` proves: a ServiceAccount token bound to a pod that still exists, for
    /// the audiences TokenReview confirmed. Refused otherwise, with the reason.
    pub async fn verify(&self, token: &str) -> Authentication {
        let now = Instant::now();
        if let Some(hit) = self.cached(token, now) {
            return hit;
        }
        let claims = match Claims::read(token) {
            Ok(claims) => claims,
            Err(why) => return Authentication::Refused(why),
        };
        let (answer, keep) = match self.reviewer.review(token, claims.audiences).await {
            Err(why) => return Authentication::Refused(why),
            Ok(Reviewed::Refused(why)) => (Authentication::Refused(why), REFUSAL_CACHE),
            Ok(Reviewed::Authenticated {
                username,
                audiences,
                pod,
            }) => {
                let answer = match (parse_service_account_username(&username), pod) {
                    (Err(why), _) => Authentication::Refused(why),
                    (Ok(_), None) => Authentication::Refused(format!(
                        "the token of {username} is bound to no pod: agents call tools with a projected token of their pod"
                    )),
                    (Ok((namespace, service_account)), Some(_)) => {
                        Authentication::Verified(Caller {
                            namespace,
                            service_account,
                            audiences: Some(audiences),
                        })
                    }
                };
                (answer, claims.lifetime.min(MAX_CACHE))
            }
        };
        self.remember(token, answer.clone(), now + keep);
        answer
    }

    fn cached(&self, token: &str, now: Instant) -> Option<Authentication> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(token)
            .filter(|c| c.until > now)
            .map(|c| c.answer.clone())
    }

    fn remember(&self, token: &str, answer: Authentication, until: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= SWEEP_AT {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
        }
        cache.insert(token.to_owned(), Cached { answer, until });
    }
}

/// The unverified claims of a JWT that steer verification: its audiences and remaining life.
struct Claims {
    audiences: Vec<String>,
    lifetime: Duration,
}

impl Claims {
    fn read(token: &str) -> Result<Claims, String> {
        let unreadable = || "the bearer token is not a JWT".to_owned();
        let payload = token.split('.').nth(1).ok_or_else(unreadable)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| unreadable())?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| unreadable())?;
        let audiences: Vec<String> = match &claims["aud"] {
            serde_json::Value::String(one) => vec![one.clone()],
            serde_json::Value::Array(many) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if audiences.is_empty() {
            return Err("the bearer token names no audience".into());
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let expires = claims["exp"]
            .as_i64()
            .ok_or_else(|| "the bearer token has no expiry".to_owned())?;
        let left = u64::try_from(expires.saturating_sub(now)).unwrap_or(0);
        Ok(Claims {
            audiences,
            lifetime: Duration::from_secs(left),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A reviewer answering from a table, counting questions.
    struct Table {
        answer: Result<Reviewed, String>,
        asked: AtomicUsize,
    }

    impl TokenReviewer for Table {
        fn review(
            &self,
            _token: &str,
            _audiences: Vec<String>,
        ) -> BoxFuture<'_, Result<Reviewed, String>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.clone();
            Box::pin(async move { answer })
        }
    }

    fn jwt(aud: &str, exp_in: i64) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let exp = k8s_openapi::jiff::Timestamp::now().as_second() + exp_in;
        let claims = serde_json::json!({ "aud": [aud], "exp": exp, "sub": "x" });
        format!(
            "{}.{}.sig",
            engine.encode(br#"{"alg":"RS256"}"#),
            engine.encode(claims.to_string())
        )
    }

    fn verifier(answer: Result<Reviewed, String>) -> (TokenVerifier, Arc<Table>) {
        let table = Arc::new(Table {
            answer,
            asked: AtomicUsize::new(0),
        });
        (TokenVerifier::new(table.clone()), table)
    }

    fn authenticated(username: &str, pod: Option<&str>) -> Result<Reviewed, String> {
        Ok(Reviewed::Authenticated {
            username: username.into(),
            audiences: vec!["mandate.dev/agents/docs".into()],
            pod: pod.map(str::to_owned),
        })
    }

    #[tokio::test]
    async fn a_pod_bound_service_account_token_proves_its_caller_and_is_asked_about_once() {
        let (verifier, table) = verifier(authenticated(
            "system:serviceaccount:agents:reader",
            Some("reader-0"),
        ));
        let token = jwt("mandate.dev/agents/docs", 600);
        for _ in 0..3 {
            assert_eq!(
                verifier.verify(&token).await,
                Authentication::Verified(Caller {
                    namespace: "agents".into(),
                    service_account: "reader".into(),
                    audiences: Some(vec!["mandate.dev/agents/docs".into()]),
                })
            );
        }
        assert_eq!(table.asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn tokens_of_no_pod_or_no_service_account_are_refused() {
        for (username, pod) in [
            ("system:serviceaccount:agents:reader", None),
            ("alice", Some("reader-0")),
        ] {
            let (verifier, _) = verifier(authenticated(username, pod));
            let answer = verifier.verify(&jwt("mandate.dev/agents/docs", 600)).await;
            assert!(matches!(answer, Authentication::Refused(_)), "{username}");
        }
    }

    #[tokio::test]
    async fn a_refusal_or_an_unreachable_api_server_refuses_and_only_a_refusal_is_cached() {
        let (refusing, table) = verifier(Ok(Reviewed::Refused("expired".into())));
        let token = jwt("a", 600);
        for _ in 0..2 {
            assert!(matches!(
                refusing.verify(&token).await,
                Authentication::Refused(_)
            ));
        }
        assert_eq!(table.asked.load(Ordering::SeqCst), 1);
        let (unreachable, table) = verifier(Err("connection refused".into()));
        for _ in 0..2 {
            assert_eq!(
                unreachable.verify(&token).await,
                Authentication::Refused("connection refused".into())
            );
        }
        assert_eq!(table.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn what_is_no_jwt_with_an_audience_and_expiry_is_refused_without_asking() {
        let (verifier, table) = verifier(authenticated(
            "system:serviceaccount:agents:reader",
            Some("p"),
        ));
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let no_exp = format!("h.{}.s", engine.encode(r#"{"aud":"a"}"#));
        let no_aud = format!("h.{}.s", engine.encode(r#"{"exp":1}"#));
        for token in ["", "opaque", "a.b.c", no_exp.as_str(), no_aud.as_str()] {
            assert!(
                matches!(verifier.verify(token).await, Authentication::Refused(_)),
                "{token}"
            );
        }
        assert_eq!(table.asked.load(Ordering::SeqCst), 0);
    }
}
