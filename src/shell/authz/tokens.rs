//! Bearer tokens verified by the API server: a token in; the caller it proves (namespace,
//! ServiceAccount, the audiences TokenReview confirmed, the pod it is bound to) or why not out.
//! A token is never trusted by decoding it: its unverified claims only say which audiences to
//! ask TokenReview about and how long an answer may be cached. An answer is cached at most
//! [`MAX_CACHE`]. Once the verifier tracks pods ([`TokenVerifier::track_pods`]) a token is
//! trusted only while its pod is known to exist: the pod watch's deletion drops it from the
//! cache at once, and a pod the watch does not know is looked up by name. TokenReview alone
//! is not enough for that: the API server caches its own answers, and went on authenticating
//! a deleted pod's recently reviewed token for seconds (seen on kube-apiserver 1.37). Holds no
//! rule: the decision itself is `decide::decide`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::decide::{Authentication, Caller, parse_service_account_username};
use crate::webhook::pods::PodLookup;

/// The `user.extra` key under which TokenReview names the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The `user.extra` key under which TokenReview gives that pod's UID.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// How long a verified token is trusted without asking again, at most (its expiry bounds it
/// too). Pod deletions drop a token at once while the pod watch runs; this bounds how long one
/// missed (the watch down) is trusted.
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
        /// That pod's UID.
        pod_uid: Option<String>,
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
            let extra = |key: &str| {
                user.extra
                    .as_ref()
                    .and_then(|extra| extra.get(key))
                    .and_then(|values| values.first().cloned())
            };
            Ok(Reviewed::Authenticated {
                pod: extra(POD_NAME_EXTRA),
                pod_uid: extra(POD_UID_EXTRA),
                username: user.username.unwrap_or_default(),
                audiences: status.audiences.unwrap_or_default(),
            })
        })
    }
}

/// Verifies bearer tokens through a [`TokenReviewer`], caching each answer.
#[derive(Clone)]
pub struct TokenVerifier {
    reviewer: Arc<dyn TokenReviewer>,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    answers: HashMap<String, Cached>,
    /// The pods known to exist, once tracked: `None` until [`TokenVerifier::track_pods`].
    pods: Option<LivePods>,
}

struct LivePods {
    /// The watch has listed and runs: `uids` is current.
    listed: bool,
    uids: HashSet<String>,
    /// Asks the API server about a pod the watch does not know (yet, or while it is down).
    lookup: Arc<dyn PodLookup>,
}

/// Whether the pod a verified token is bound to exists.
enum PodCheck {
    /// The watch knows it: the answer may be cached.
    Known,
    /// The API server has it, though the watch does not (yet): trusted for this call only.
    Confirmed,
    /// Gone, replaced, or not confirmable: why.
    Refused(String),
}

#[derive(Clone)]
struct Cached {
    answer: Authentication,
    until: Instant,
    /// The UID of the pod a verified token is bound to.
    pod: Option<String>,
}

impl Cache {
    /// Whether an answer for a token bound to `pod` may be kept: always without pod tracking;
    /// with it, only while the pod is known to exist (never on a watch that has not listed).
    fn may_keep(&self, pod: Option<&str>) -> bool {
        match (&self.pods, pod) {
            (None, _) => true,
            (Some(live), Some(uid)) => live.listed && live.uids.contains(uid),
            (Some(_), None) => false,
        }
    }

    fn forget_pods_not_in(&mut self, keep: impl Fn(&str) -> bool) {
        self.answers
            .retain(|_, cached| cached.pod.as_deref().is_none_or(&keep));
    }
}

impl TokenVerifier {
    pub fn new(reviewer: Arc<dyn TokenReviewer>) -> Self {
        TokenVerifier {
            reviewer,
            cache: Arc::default(),
        }
    }

    /// From now on, trusts a token only while its pod is known to exist: the returned handle
    /// is fed by a watch of agent pods (see `pods`), and a pod the watch does not know is looked
    /// up through `lookup` (refused when the lookup fails). Only answers for known pods are
    /// cached.
    pub fn track_pods(&self, lookup: Arc<dyn PodLookup>) -> PodEvents {
        self.lock().pods = Some(LivePods {
            listed: false,
            uids: HashSet::new(),
            lookup,
        });
        PodEvents {
            cache: self.cache.clone(),
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
        let (answer, keep, pod) = match self.reviewer.review(token, claims.audiences).await {
            Err(why) => return Authentication::Refused(why),
            Ok(Reviewed::Refused(why)) => (Authentication::Refused(why), REFUSAL_CACHE, None),
            Ok(Reviewed::Authenticated {
                username,
                audiences,
                pod,
                pod_uid,
            }) => {
                let answer = match (parse_service_account_username(&username), pod) {
                    (Err(why), _) => Authentication::Refused(why),
                    (Ok(_), None) => Authentication::Refused(format!(
                        "the token of {username} is bound to no pod: agents call tools with a projected token of their pod"
                    )),
                    (Ok((namespace, service_account)), Some(pod)) => {
                        match self.check_pod(&namespace, &pod, pod_uid.as_deref()).await {
                            PodCheck::Refused(why) => return Authentication::Refused(why),
                            PodCheck::Known | PodCheck::Confirmed => {
                                Authentication::Verified(Caller {
                                    namespace,
                                    service_account,
                                    audiences: Some(audiences),
                                })
                            }
                        }
                    }
                };
                (answer, claims.lifetime.min(MAX_CACHE), pod_uid)
            }
        };
        self.remember(token, answer.clone(), now + keep, pod);
        answer
    }

    /// Whether pod `namespace/name` (of UID `uid`) exists: known to the watch, else asked of
    /// the API server by name. Without pod tracking, TokenReview's word is taken.
    async fn check_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> PodCheck {
        let lookup = {
            let cache = self.lock();
            let Some(live) = &cache.pods else {
                return PodCheck::Known;
            };
            if live.listed && uid.is_some_and(|uid| live.uids.contains(uid)) {
                return PodCheck::Known;
            }
            live.lookup.clone()
        };
        match lookup.metadata(namespace, name).await {
            Ok(Some(pod)) if uid.is_none_or(|uid| pod.uid.as_deref() == Some(uid)) => {
                PodCheck::Confirmed
            }
            Ok(Some(_)) => PodCheck::Refused(format!(
                "the token is bound to an earlier pod {namespace}/{name}, which was replaced"
            )),
            Ok(None) => PodCheck::Refused(format!(
                "the pod {namespace}/{name} the token is bound to no longer exists"
            )),
            Err(error) => PodCheck::Refused(format!(
                "cannot confirm that the pod {namespace}/{name} the token is bound to still exists: {error}"
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, token: &str, now: Instant) -> Option<Authentication> {
        self.lock()
            .answers
            .get(token)
            .filter(|c| c.until > now)
            .map(|c| c.answer.clone())
    }

    fn remember(&self, token: &str, answer: Authentication, until: Instant, pod: Option<String>) {
        let mut cache = self.lock();
        let verified = matches!(answer, Authentication::Verified(_));
        // The pod may have gone while TokenReview answered: checked under the same lock the
        // watch's deletions take.
        if verified && !cache.may_keep(pod.as_deref()) {
            return;
        }
        if cache.answers.len() >= SWEEP_AT {
            let now = Instant::now();
            cache.answers.retain(|_, c| c.until > now);
        }
        cache
            .answers
            .insert(token.to_owned(), Cached { answer, until, pod });
    }
}

/// What a watch of agent pods tells the token cache.
#[derive(Clone)]
pub struct PodEvents {
    cache: Arc<Mutex<Cache>>,
}

impl PodEvents {
    fn with_pods(&self, change: impl FnOnce(&mut LivePods, &mut HashMap<String, Cached>)) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let Cache { answers, pods } = &mut *cache;
        if let Some(live) = pods {
            change(live, answers);
        }
    }

    /// A complete list: these pods exist, no other. Tokens of pods not among them are dropped.
    pub fn listed(&self, uids: HashSet<String>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.forget_pods_not_in(|uid| uids.contains(uid));
        if let Some(live) = &mut cache.pods {
            live.listed = true;
            live.uids = uids;
        }
    }

    /// A pod was created (or changed).
    pub fn applied(&self, uid: &str) {
        self.with_pods(|live, _| {
            live.uids.insert(uid.to_owned());
        });
    }

    /// A pod is gone: its tokens are asked about again (and TokenReview refuses them).
    pub fn deleted(&self, uid: &str) {
        self.with_pods(|live, answers| {
            live.uids.remove(uid);
            answers.retain(|_, cached| cached.pod.as_deref() != Some(uid));
        });
    }

    /// Whether the watch has listed, and the pods it knows (for tests).
    #[cfg(test)]
    pub(super) fn known(&self) -> Option<(bool, HashSet<String>)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.pods.as_ref().map(|p| (p.listed, p.uids.clone()))
    }

    /// The watch failed: deletions may be missed until it lists again, so nothing pod-bound is
    /// trusted from the cache meanwhile.
    pub fn lost(&self) {
        self.with_pods(|live, answers| {
            live.listed = false;
            answers.retain(|_, cached| cached.pod.is_none());
        });
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
    use crate::webhook::pods::PodLookupError;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
            pod_uid: pod.map(|p| format!("uid-{p}")),
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

    /// The API server's answer about pod `reader-0` (whose UID is `uid-reader-0`).
    enum Pod {
        Exists,
        Gone,
        Unreachable,
    }

    struct Lookup(Pod, AtomicUsize);

    impl PodLookup for Lookup {
        fn metadata<'a>(
            &'a self,
            _namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<ObjectMeta>, PodLookupError>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let answer = match self.0 {
                Pod::Exists => Ok(Some(ObjectMeta {
                    name: Some(name.to_owned()),
                    uid: Some(format!("uid-{name}")),
                    ..ObjectMeta::default()
                })),
                Pod::Gone => Ok(None),
                Pod::Unreachable => Err(PodLookupError::Unavailable),
            };
            Box::pin(async move { answer })
        }
    }

    fn tracking(pod: Pod) -> (TokenVerifier, Arc<Table>, Arc<Lookup>, PodEvents, String) {
        let (verifier, table) = verifier(authenticated(
            "system:serviceaccount:agents:reader",
            Some("reader-0"),
        ));
        let lookup = Arc::new(Lookup(pod, AtomicUsize::new(0)));
        let pods = verifier.track_pods(lookup.clone());
        (
            verifier,
            table,
            lookup,
            pods,
            jwt("mandate.dev/agents/docs", 600),
        )
    }

    async fn verified(verifier: &TokenVerifier, token: &str) -> bool {
        matches!(verifier.verify(token).await, Authentication::Verified(_))
    }

    #[tokio::test]
    async fn a_pod_the_watch_does_not_know_is_looked_up_and_its_token_not_cached() {
        let (verifier, table, lookup, pods, token) = tracking(Pod::Exists);
        // The watch has not listed: looked up, asked every time.
        assert!(verified(&verifier, &token).await);
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 2);
        assert_eq!(lookup.1.load(Ordering::SeqCst), 2);
        // Listed without the pod (a new pod the watch has not seen yet): the same.
        pods.listed(HashSet::from(["uid-other".to_owned()]));
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 3);
        // The pod appears: cached, no lookup.
        pods.applied("uid-reader-0");
        assert!(verified(&verifier, &token).await);
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 4);
        assert_eq!(lookup.1.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_deleted_pods_token_is_refused_at_once_though_tokenreview_still_vouches_for_it() {
        // TokenReview (the table) keeps saying "authenticated", as the API server's own cache
        // does for seconds after the pod is gone.
        let (verifier, table, _, pods, token) = tracking(Pod::Gone);
        pods.listed(HashSet::from(["uid-reader-0".to_owned()]));
        assert!(verified(&verifier, &token).await);
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 1);
        pods.deleted("uid-reader-0");
        match verifier.verify(&token).await {
            Authentication::Refused(why) => assert!(why.contains("no longer exists"), "{why}"),
            verified => panic!("a deleted pod's token verified: {verified:?}"),
        }
    }

    #[tokio::test]
    async fn when_a_pod_cannot_be_looked_up_its_token_is_refused() {
        let (verifier, _, _, _, token) = tracking(Pod::Unreachable);
        match verifier.verify(&token).await {
            Authentication::Refused(why) => assert!(why.contains("cannot confirm"), "{why}"),
            verified => panic!("verified without confirming the pod: {verified:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_pod_watch_or_a_relist_without_the_pod_drops_its_tokens() {
        let (verifier, table, _, pods, token) = tracking(Pod::Exists);
        pods.listed(HashSet::from(["uid-reader-0".to_owned()]));
        assert!(verified(&verifier, &token).await);
        pods.lost();
        assert!(verified(&verifier, &token).await);
        assert!(verified(&verifier, &token).await);
        assert_eq!(
            table.asked.load(Ordering::SeqCst),
            3,
            "not cached while lost"
        );
        pods.listed(HashSet::from(["uid-reader-0".to_owned()]));
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 4);
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 4, "cached again");
        pods.listed(HashSet::new());
        assert!(verified(&verifier, &token).await);
        assert_eq!(table.asked.load(Ordering::SeqCst), 5);
    }
}
