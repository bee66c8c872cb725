//! The HTTPS admission webhook: TLS connections from the API server in, AdmissionReview JSON
//! answers out. Reads the body once into a typed [`Request`] ([`parse_review`]), looks up the pod
//! of a CONNECT (exec, attach, port-forward, proxy; [`PodLookup`]: the request carries none of
//! its labels), hands the request to a [`Reviewer`], answers with the [`Verdict`] ([`respond`],
//! echoing the uid), and records one metric sample and one log line per request, both carrying
//! the verdict's [`Decision`], then hands the answered request to a [`Recorder`] (for the
//! effects a verdict asks for, such as the Event of a let-through namespace mode weakening).
//! At [`MUTATE_PODS_PATH`] the answer also carries the pure per-tool credential patch
//! (`Reviewer::mutate`, see `mutate`). Bad input is answered with 4xx and a JSON error, never a
//! panic. Reviews nothing itself.
//!
//! Who calls: with a client CA (`WebhookConfig::client_ca`), only a client presenting a
//! certificate signed by it (the API server) gets past the TLS handshake; without one, anyone
//! who reaches the port can post reviews. Every log line says which (`caller_authenticated`),
//! and the metric's labels come from closed sets whoever calls (the `resource` label is the
//! kind mandate read the object as, `Object::resource`, never the text of the body).
//!
//! Status codes: 200 with an AdmissionReview for every request the reviewer answered (allowed or
//! denied); 400 for a body that is not a readable `admission.k8s.io/v1` AdmissionReview; 413 for a
//! body over the size limit; 404 for a path not served; 405 for a method other than POST on one
//! of them; 408 for a body that does not arrive in time; 500 when the reviewer panicked.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::core::admission::{AdmissionReview, META_API_VERSION_V1, META_KIND};
use kube::core::{DynamicObject, TypeMeta};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::{Reply, Response};

use super::mutate::{MUTATE_PODS_PATH, with_patch};
use super::pods::{PodLookup, target_pod};
use super::tls::{
    CertificateReloader, TlsError, TlsFiles, client_verifier, server_config_for_clients,
};
use crate::admission::Reviewer;
use crate::admission::credentials::Mutation;
use crate::admission::request::Request;
pub use crate::admission::request::{BadReview, parse_review};
use crate::admission::verdict::{Decision, Verdict};
use crate::telemetry::metrics::{AdmissionLabels, Metrics};

/// Every path that serves validating admission reviews; all route to the same reviewer (it tells
/// resources apart by the request's `resource`). The mutating webhook is served at
/// [`MUTATE_PODS_PATH`]. One path per webhook entry keeps the API server's metrics
/// and our logs readable.
pub const VALIDATE_PATHS: [&str; 4] = [
    VALIDATE_PATH,
    VALIDATE_PODS_PATH,
    VALIDATE_WORKLOADS_PATH,
    VALIDATE_MANDATE_PATH,
];
pub const VALIDATE_PATH: &str = "/validate";
pub const VALIDATE_PODS_PATH: &str = "/validate/pods";
pub const VALIDATE_WORKLOADS_PATH: &str = "/validate/workloads";
pub const VALIDATE_MANDATE_PATH: &str = "/validate/mandate";

/// Default body limit: the API server's own request limit is 3 MiB, and a review carries the
/// object (and on update the old object), so 3 MiB covers every real review.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How much of an oversized body is still read (and discarded) so the 413 reaches the client.
pub const DRAIN_AFTER_LIMIT: usize = 1024 * 1024;
/// Default interval between checks of the certificate files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Default limit for a TLS handshake, and for HTTP/1 request headers to arrive.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for receiving a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time open connections get to finish after shutdown before they are cut.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default limit for looking up the pod of a CONNECT: well within the webhook's own timeout
/// (5 s by default), so a slow lookup is answered as a failed one rather than by the API
/// server's failure policy.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How to run the webhook server.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Address to bind; port 0 picks a free one (see [`WebhookServer::local_addr`]).
    pub addr: SocketAddr,
    pub tls: TlsFiles,
    /// Larger bodies are refused with 413 without being read further.
    pub max_body_bytes: usize,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
    /// Limit for the TLS handshake and for HTTP/1 request headers.
    pub handshake_timeout: Duration,
    /// Limit for receiving a request body (answered with 408 when exceeded).
    pub body_timeout: Duration,
    /// Time open connections get to finish after shutdown before they are cut.
    pub drain_timeout: Duration,
    /// Limit for looking up the pod of a CONNECT.
    pub lookup_timeout: Duration,
    /// PEM file of the CA whose client certificates may call (the API server's, from its
    /// admission configuration). `None`: any client may.
    pub client_ca: Option<PathBuf>,
}

impl WebhookConfig {
    /// The defaults above for `addr` and `tls`.
    pub fn new(addr: SocketAddr, tls: TlsFiles) -> Self {
        WebhookConfig {
            addr,
            tls,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            client_ca: None,
        }
    }
}

/// Whether the caller of a request presented a client certificate the server verified (only
/// possible with a client CA): the API server at the webhook, a gateway at the decision service.
/// Set on each request by the connection it arrived on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerAuthenticated(pub bool);

impl CallerAuthenticated {
    /// For a connection whose TLS handshake has completed on a server that `verifies` client
    /// certificates (has a client CA): only a verified certificate completes it there, and
    /// without a client CA no client presents any.
    pub fn of_connection<IO>(verifies: bool, tls: &TlsStream<IO>) -> Self {
        CallerAuthenticated(
            verifies
                && tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
        )
    }

    /// What a request's connection set; `false` for a request that carries nothing (served in
    /// process, as tests do).
    pub fn of_request(extensions: &warp::http::Extensions) -> bool {
        extensions.get::<CallerAuthenticated>().is_some_and(|c| c.0)
    }
}

/// Told of every answered request after the answer is written: for the effects a verdict asks
/// for besides the answer. Called on the hot path: it must not block (spawn what waits).
pub trait Recorder: Send + Sync + 'static {
    fn answered(&self, request: &Request, verdict: &Verdict);
}

/// A [`Recorder`] that records nothing (tests, tools).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn answered(&self, _: &Request, _: &Verdict) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the webhook certificate: {0}")]
    LoadCertificate(#[from] TlsError),
    #[error("binding the webhook server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the webhook server's bound address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// A running webhook server.
#[derive(Debug)]
pub struct WebhookServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WebhookServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped: its shutdown future resolved, the listener closed and
    /// open connections finished (or the drain timeout cut them).
    pub async fn stopped(self) -> Result<(), tokio::task::JoinError> {
        self.task.await
    }
}

/// Wraps the answer to `request` in an `admission.k8s.io/v1` AdmissionReview: the verdict's
/// decision, message, warnings and audit annotations, with the request's uid. Pure.
pub fn respond(request: &Request, verdict: &Verdict) -> AdmissionReview<DynamicObject> {
    let mut response = verdict.respond(request);
    let types = TypeMeta {
        api_version: META_API_VERSION_V1.to_owned(),
        kind: META_KIND.to_owned(),
    };
    response.types = types.clone();
    AdmissionReview {
        types,
        request: None,
        response: Some(response),
    }
}

/// The `resource` label: the resource of the kind mandate read the object as, from the closed
/// set it serves (`Object::resource`; `other` for every kind it does not review), never the
/// text of the body, so a caller cannot grow the series.
fn resource_label(request: &Request) -> Cow<'static, str> {
    Cow::Borrowed(request.object.resource())
}

/// The labels of an answered request, all from its verdict: the decision (a request of a kind
/// mandate does not review counts as `allowed`, as it is), the first reason code or `none`, the
/// mode or `none`.
fn labels(request: &Request, verdict: &Verdict) -> AdmissionLabels {
    AdmissionLabels {
        resource: resource_label(request),
        decision: verdict.decision().unwrap_or(Decision::Allowed),
        reason: Cow::Borrowed(
            verdict
                .all_findings()
                .first()
                .map_or("none", |finding| finding.reason.code()),
        ),
        mode: Cow::Borrowed(verdict.mode().map_or("none", |mode| mode.as_str())),
    }
}

struct State {
    reviewer: Arc<dyn Reviewer>,
    pods: Arc<dyn PodLookup>,
    recorder: Arc<dyn Recorder>,
    metrics: Metrics,
    max_body_bytes: usize,
    body_timeout: Duration,
    lookup_timeout: Duration,
}

/// The webhook's routes, for serving (see [`serve`]) or wrapping in other filters. `pods` looks
/// up the pods CONNECTs go to; `recorder` is told of every answered request. A request carries
/// [`CallerAuthenticated`] as an extension when served by [`serve`]; without it (in-process
/// tests) the caller counts as not authenticated.
pub fn routes(
    reviewer: Arc<dyn Reviewer>,
    pods: Arc<dyn PodLookup>,
    recorder: Arc<dyn Recorder>,
    metrics: Metrics,
    config: &WebhookConfig,
) -> BoxedFilter<(Response,)> {
    let state = Arc::new(State {
        reviewer,
        pods,
        recorder,
        metrics,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
        lookup_timeout: config.lookup_timeout,
    });
    warp::path::full()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<CallerAuthenticated>())
        .and(warp::body::stream())
        .then(
            move |path: FullPath,
                  method: Method,
                  headers: HeaderMap,
                  caller: Option<CallerAuthenticated>,
                  body| {
                let state = Arc::clone(&state);
                let caller = caller.unwrap_or_default();
                async move { handle(&state, path.as_str(), &method, &headers, caller, body).await }
            },
        )
        .boxed()
}

async fn handle<S, B>(
    state: &State,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    caller: CallerAuthenticated,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if !VALIDATE_PATHS.contains(&path) && path != MUTATE_PODS_PATH {
        return error_reply(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "no webhook at {path}; served paths: {}, {MUTATE_PODS_PATH}",
                VALIDATE_PATHS.join(", ")
            ),
        );
    }
    if method != Method::POST {
        let mut reply = error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not allowed on {path}; send the AdmissionReview with POST"),
        );
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return reply;
    }
    let started = Instant::now();
    let read = tokio::time::timeout(
        state.body_timeout,
        read_body(headers, body, state.max_body_bytes),
    );
    let request = match read.await {
        Ok(Ok(body)) => parse_review(&body),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(BadReview::BodyTimeout {
            timeout: state.body_timeout,
        }),
    };
    let mut request = match request {
        Ok(request) => request,
        Err(error) => return refuse(state, path, caller, &error, started),
    };
    // The one wait on the API server in a review: the Reviewer is synchronous and pure, so the
    // pod a CONNECT goes to is looked up first and handed to it as data.
    if let Some((namespace, name)) = request.connect_target() {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let pod = target_pod(&*state.pods, &namespace, &name, state.lookup_timeout).await;
        request.set_target_pod(pod);
    }
    let reviewer = &state.reviewer;
    if path == MUTATE_PODS_PATH {
        let Ok(mutation) = catch_unwind(AssertUnwindSafe(|| reviewer.mutate(&request))) else {
            return reviewer_failed(state, path, caller, &request, started);
        };
        return answer(
            state,
            path,
            caller,
            &request,
            &mutation.verdict,
            Some(&mutation),
            started,
        );
    }
    let Ok(verdict) = catch_unwind(AssertUnwindSafe(|| reviewer.review(&request))) else {
        return reviewer_failed(state, path, caller, &request, started);
    };
    let response = answer(state, path, caller, &request, &verdict, None, started);
    state.recorder.answered(&request, &verdict);
    response
}

/// Collects the body. A body over `limit` is refused with [`BadReview::BodyTooLarge`], but up to
/// [`DRAIN_AFTER_LIMIT`] more bytes are read and discarded first, so the client can read the 413
/// before the connection closes (closing on unread data resets the connection, and the client may
/// lose the answer). A declared Content-Length beyond that is refused without reading.
async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Vec<u8>, BadReview>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let drain_limit = limit.saturating_add(DRAIN_AFTER_LIMIT);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > drain_limit as u64) {
        return Err(BadReview::BodyTooLarge { limit });
    }
    let capacity = declared
        .map_or(16 * 1024, |length| length as usize)
        .min(limit);
    let mut data = Vec::with_capacity(capacity);
    let mut seen: usize = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(BadReview::ReadBody)?;
        seen = seen.saturating_add(chunk.remaining());
        if seen > limit {
            data = Vec::new();
            if seen > drain_limit {
                break;
            }
            continue;
        }
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            let read = bytes.len();
            data.extend_from_slice(bytes);
            chunk.advance(read);
        }
    }
    if seen > limit {
        return Err(BadReview::BodyTooLarge { limit });
    }
    Ok(data)
}

fn refuse(
    state: &State,
    path: &str,
    caller: CallerAuthenticated,
    error: &BadReview,
    started: Instant,
) -> Response {
    let elapsed = started.elapsed();
    state.metrics.record_admission(
        &AdmissionLabels {
            resource: Cow::Borrowed("unknown"),
            decision: Decision::Invalid,
            reason: Cow::Borrowed(error.code()),
            mode: Cow::Borrowed("none"),
        },
        elapsed,
    );
    tracing::warn!(
        path,
        caller_authenticated = caller.0,
        reason = error.code(),
        %error,
        elapsed_us = elapsed.as_micros() as u64,
        "refused an unreadable admission request"
    );
    error_reply(error.status(), error.code(), &error.to_string())
}

fn reviewer_failed(
    state: &State,
    path: &str,
    caller: CallerAuthenticated,
    request: &Request,
    started: Instant,
) -> Response {
    let elapsed = started.elapsed();
    state.metrics.record_admission(
        &AdmissionLabels {
            resource: resource_label(request),
            decision: Decision::Error,
            reason: Cow::Borrowed("ReviewerPanicked"),
            mode: Cow::Borrowed("none"),
        },
        elapsed,
    );
    tracing::error!(
        path,
        caller_authenticated = caller.0,
        uid = %request.uid,
        resource = request.object.resource(),
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        "the reviewer panicked; answering 500 so the API server applies the failure policy"
    );
    error_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ReviewerPanicked",
        "the admission reviewer failed; see the webhook's log",
    )
}

/// Answers with `verdict` and, from the mutating webhook, its `mutation`'s patch (counted
/// under the resource `pods/credentials`, so pod admissions are not counted twice).
fn answer(
    state: &State,
    path: &str,
    caller: CallerAuthenticated,
    request: &Request,
    verdict: &Verdict,
    mutation: Option<&Mutation>,
    started: Instant,
) -> Response {
    let mut labels = labels(request, verdict);
    if mutation.is_some() {
        labels.resource = Cow::Borrowed("pods/credentials");
    }
    let allowed = labels.decision != Decision::Denied;
    let reasons = verdict.codes().join(",");
    let patch = mutation.map_or(&[][..], |m| m.patch.as_slice());
    let body = match with_patch(&respond(request, verdict), patch)
        .and_then(|r| serde_json::to_vec(&r))
    {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, uid = %request.uid, "serializing the AdmissionReview answer");
            return error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SerializeResponse",
                "the admission answer could not be serialized; see the webhook's log",
            );
        }
    };
    let elapsed = started.elapsed();
    state.metrics.record_admission(&labels, elapsed);
    tracing::info!(
        path,
        caller_authenticated = caller.0,
        uid = %request.uid,
        operation = ?request.operation,
        resource = %labels.resource,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        subresource = request.sub_resource.as_deref().unwrap_or(""),
        user = request.user_info.username.as_deref().unwrap_or(""),
        dry_run = request.dry_run,
        allowed,
        decision = labels.decision.as_str(),
        reasons = %reasons,
        mode = %labels.mode,
        tool_credentials = %mutation.map(|m| m.tools.join(",")).unwrap_or_default(),
        patch_operations = patch.len(),
        elapsed_us = elapsed.as_micros() as u64,
        "admission decision"
    );
    json_bytes_reply(StatusCode::OK, body)
}

fn error_reply(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({ "code": status.as_u16(), "reason": reason, "message": message });
    json_bytes_reply(status, body.to_string().into_bytes())
}

fn json_bytes_reply(status: StatusCode, body: Vec<u8>) -> Response {
    let mut reply = warp::reply::with_status(body, status).into_response();
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

/// Loads the certificate, binds `config.addr` and serves the webhook routes over TLS in a
/// background task until `shutdown` resolves; a second task re-reads the certificate files every
/// `config.reload_interval`. Returns once the socket is bound, so callers (and tests using port 0)
/// can read the address at once.
pub async fn serve(
    config: WebhookConfig,
    reviewer: Arc<dyn Reviewer>,
    pods: Arc<dyn PodLookup>,
    recorder: Arc<dyn Recorder>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WebhookServer, ServeError> {
    let reloader = CertificateReloader::load(config.tls.clone()).await?;
    let clients = config
        .client_ca
        .as_deref()
        .map(client_verifier)
        .transpose()?;
    let verify_clients = clients.is_some();
    let acceptor = TlsAcceptor::from(Arc::new(server_config_for_clients(
        reloader.resolver(),
        clients,
    )?));
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(ServeError::LocalAddr)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(reloader.run(config.reload_interval, stop_signal(stop_rx.clone())));

    let service = warp::service(routes(reviewer, pods, recorder, metrics, &config));
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout);
    http.http2().timer(TokioTimer::new());
    let handshake_timeout = config.handshake_timeout;

    let task = tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // A review's answer leaves as several small TLS records (HTTP/2 headers,
                        // then data): with Nagle's algorithm the later ones wait for the API
                        // server's delayed ACK, up to 40 ms per review.
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%peer, %error, "setting TCP_NODELAY");
                        }
                        let acceptor = acceptor.clone();
                        let http = http.clone();
                        let service = service.clone();
                        let stop = stop_rx.clone();
                        connections.spawn(async move {
                            let Some(tls) = handshake(&acceptor, stream, peer, handshake_timeout).await else {
                                return;
                            };
                            let caller = CallerAuthenticated::of_connection(verify_clients, &tls);
                            let service = TowerToHyperService::new(service.map_request(
                                move |mut request: warp::http::Request<hyper::body::Incoming>| {
                                    request.extensions_mut().insert(caller);
                                    request
                                },
                            ));
                            let connection = http.serve_connection(TokioIo::new(tls), service);
                            let mut connection = std::pin::pin!(connection);
                            let finished = tokio::select! {
                                finished = connection.as_mut() => finished,
                                () = stop_signal(stop) => {
                                    // Finish the requests in flight, then close.
                                    connection.as_mut().graceful_shutdown();
                                    connection.await
                                }
                            };
                            if let Err(error) = finished {
                                tracing::debug!(%peer, %error, "webhook connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accepting a webhook connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(%local_addr, open = connections.len(), "webhook server stopping; draining connections");
        // Ignored error: no receivers left only means every connection already ended.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(config.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "cutting webhook connections that outlived the drain timeout"
            );
            connections.abort_all();
        }
        tracing::info!(%local_addr, "webhook server stopped");
    });
    tracing::info!(%local_addr, verify_clients, "webhook server listening");
    Ok(WebhookServer { local_addr, task })
}

/// The TLS handshake, bounded in time; failures are the client's and only logged at debug.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook TLS handshake timed out");
            None
        }
    }
}

pub(crate) async fn stop_signal(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone: the server has stopped, so stop too.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::request::Object;
    use crate::admission::verdict::Mode;
    use crate::authority::{Finding, Reason};

    const POD_CREATE: &str = include_str!("../../../tests/fixtures/admission/pod-create.json");
    const POD_CREATE_TRUNCATED: &str =
        include_str!("../../../tests/fixtures/admission/pod-create-truncated.json");
    const WRONG_KIND: &str = include_str!("../../../tests/fixtures/admission/wrong-kind-pod.json");
    const V1BETA1: &str = include_str!("../../../tests/fixtures/admission/pod-create-v1beta1.json");

    #[test]
    fn the_pod_create_fixture_parses_into_a_typed_pod_request() -> Result<(), BadReview> {
        let request = parse_review(POD_CREATE.as_bytes())?;
        assert_eq!(request.uid, "7f3c1a52-94b1-4e1e-8d4b-2b6a0c9d5e11");
        assert_eq!(request.resource.resource, "pods");
        assert_eq!(request.namespace.as_deref(), Some("agents"));
        let Object::Pod(pods) = &request.object else {
            panic!("not read as a Pod: {:?}", request.object);
        };
        let pod = pods.object.get().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("mandate.dev/agent"))
                .map(String::as_str),
            Some("researcher")
        );
        Ok(())
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_own_code() {
        let code = |body: &str| parse_review(body.as_bytes()).err().map(|e| e.code());
        assert_eq!(code(POD_CREATE_TRUNCATED), Some("TruncatedJson"));
        assert_eq!(code("{\"kind\": AdmissionReview}"), Some("MalformedJson"));
        assert_eq!(code(WRONG_KIND), Some("WrongKind"));
        assert_eq!(code(V1BETA1), Some("UnsupportedApiVersion"));
        assert_eq!(code("[1, 2]"), Some("NotAdmissionReview"));
        assert_eq!(code(""), Some("TruncatedJson"));
        assert_eq!(
            code(r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#),
            Some("MissingRequest")
        );
        assert_eq!(
            code(
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":1}}"#
            ),
            Some("NotAdmissionReview")
        );
    }

    #[test]
    fn a_body_of_the_wrong_kind_is_called_so_even_when_its_request_is_unreadable() {
        let body = r#"{"kind":"Pod","apiVersion":"v1","request":{"uid":1}}"#;
        assert_eq!(
            parse_review(body.as_bytes()).err().map(|e| e.code()),
            Some("WrongKind")
        );
    }

    #[test]
    fn the_answer_echoes_the_request_uid_and_carries_the_verdict() -> Result<(), BadReview> {
        let request = parse_review(POD_CREATE.as_bytes())?;
        let verdict = Verdict::reviewed("Pod agents/p", Mode::Enforce)
            .finding(Finding::new(Reason::NoIdentity, "label the pod"));
        let review = respond(&request, &verdict);
        assert_eq!(review.types.kind, "AdmissionReview");
        assert_eq!(review.types.api_version, "admission.k8s.io/v1");
        let response = review.response.unwrap_or_else(|| panic!("no response"));
        assert_eq!(response.uid, "7f3c1a52-94b1-4e1e-8d4b-2b6a0c9d5e11");
        assert!(!response.allowed);
        assert_eq!(response.result.code, 403);
        assert_eq!(
            response
                .audit_annotations
                .get("decision")
                .map(String::as_str),
            Some("denied")
        );
        Ok(())
    }

    #[test]
    fn the_labels_come_from_the_verdict_first_code_and_mode_or_none() -> Result<(), BadReview> {
        let request = parse_review(POD_CREATE.as_bytes())?;
        let skipped = labels(&request, &Verdict::skipped("Pod agents/p"));
        assert_eq!(
            (skipped.decision, &*skipped.reason, &*skipped.mode),
            (Decision::Skipped, "none", "none")
        );
        let warned = Verdict::reviewed("Pod agents/p", Mode::Warn)
            .finding(Finding::new(Reason::TokenTTL, "shorten it"))
            .finding(Finding::new(Reason::NoIdentity, "label it"));
        let warned = labels(&request, &warned);
        assert_eq!(
            (warned.decision, &*warned.reason, &*warned.mode),
            (Decision::Warned, "NoIdentity", "warn")
        );
        let ignored = labels(&request, &Verdict::ignored());
        assert_eq!(ignored.decision, Decision::Allowed);
        Ok(())
    }

    #[test]
    fn the_resource_label_is_the_kind_read_never_the_resource_the_body_names()
    -> Result<(), BadReview> {
        let mut request = parse_review(POD_CREATE.as_bytes())?;
        assert_eq!(resource_label(&request), "pods");
        request.resource.resource = "Pods; DROP TABLE".to_owned();
        assert_eq!(resource_label(&request), "pods");
        request.resource.resource = "widgets".to_owned();
        request.object = Object::Other;
        assert_eq!(resource_label(&request), "other");
        Ok(())
    }
}
