//! Webhook and admin server tests: AdmissionReview fixture files in, over real TLS and real
//! HTTP/1.1 and HTTP/2 on 127.0.0.1; status codes, AdmissionReview answers, served certificates
//! and metrics out. The reviewer is a stub (denies pods labelled `test.mandate.dev/deny`): the
//! decisions themselves are tested elsewhere.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mandate::admission::{Finding, Mode, Reason, Request as Review, Reviewer, Verdict};
use mandate::telemetry::{Metrics, Readiness, serve_admin};
use mandate::webhook::pods::NoPodLookup;
use mandate::webhook::server::{self, WebhookConfig, WebhookServer};
use mandate::webhook::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

const POD_CREATE: &str = include_str!("fixtures/admission/pod-create.json");
const POD_CREATE_TRUNCATED: &str = include_str!("fixtures/admission/pod-create-truncated.json");
const WRONG_KIND: &str = include_str!("fixtures/admission/wrong-kind-pod.json");
const V1BETA1: &str = include_str!("fixtures/admission/pod-create-v1beta1.json");
const POD_CREATE_UID: &str = "7f3c1a52-94b1-4e1e-8d4b-2b6a0c9d5e11";

const DENY_LABEL: &str = "test.mandate.dev/deny";
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Stub reviewers

/// Denies (enforce mode, NoIdentity then NoOwner) every object labelled [`DENY_LABEL`]; allows
/// the rest with no reason.
struct DenyLabelled;

impl Reviewer for DenyLabelled {
    fn review(&self, request: &Review) -> Verdict {
        let denied = request
            .object
            .metadata()
            .and_then(|metadata| metadata.labels.as_ref())
            .is_some_and(|labels| labels.contains_key(DENY_LABEL));
        let verdict = Verdict::reviewed(format!("Pod {}", request.name), Mode::Enforce);
        if !denied {
            return verdict;
        }
        verdict
            .finding(Finding::new(
                Reason::NoIdentity,
                format!("{DENY_LABEL} is set"),
            ))
            .finding(Finding::new(Reason::NoOwner, "the stub wants an owner"))
    }
}

struct Panicking;

impl Reviewer for Panicking {
    fn review(&self, _request: &Review) -> Verdict {
        panic!("stub reviewer panics on purpose");
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA that issues serving certificates for 127.0.0.1.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
}

/// A serving certificate and its key, as PEM files would hold them.
struct Leaf {
    certificate_pem: String,
    private_key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "mandate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key)?.der().clone();
        Ok(Pki {
            issuer: Issuer::new(params, key),
            ca,
        })
    }

    fn issue(&self, common_name: &str, serial: u64) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            der: certificate.der().clone(),
        })
    }

    fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Replaces the files the way a Secret volume does: write aside, then rename into place.
fn install(leaf: &Leaf, files: &TlsFiles) -> Result<()> {
    write_atomically(&files.certificate, leaf.certificate_pem.as_bytes())?;
    write_atomically(&files.private_key, leaf.private_key_pem.as_bytes())
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("renaming onto {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Server and clients

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().boxed_unsync()
}

/// A body whose chunks the test sends when it chooses; dropping the sender ends it.
fn streamed() -> (mpsc::UnboundedSender<Bytes>, Body) {
    let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    (sender, StreamBody::new(frames).boxed_unsync())
}

struct Webhook {
    server: WebhookServer,
    shutdown: oneshot::Sender<()>,
    pki: Pki,
    files: TlsFiles,
    first: Leaf,
    metrics: Metrics,
    _dir: TempDir,
}

async fn start_webhook(reviewer: Arc<dyn Reviewer>) -> Result<Webhook> {
    start_webhook_with(reviewer, |_| {}).await
}

async fn start_webhook_with(
    reviewer: Arc<dyn Reviewer>,
    configure: impl FnOnce(&mut WebhookConfig),
) -> Result<Webhook> {
    let dir = tempfile::tempdir()?;
    let files = TlsFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let pki = Pki::new()?;
    let first = pki.issue("webhook-first", 1001)?;
    install(&first, &files)?;
    let mut config = WebhookConfig::new(SocketAddr::from((LOCALHOST, 0)), files.clone());
    config.reload_interval = Duration::from_millis(50);
    configure(&mut config);
    let metrics = Metrics::new();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = server::serve(
        config,
        reviewer,
        Arc::new(NoPodLookup),
        Arc::new(server::NoRecorder),
        metrics.clone(),
        async move {
            let _ = stop.await;
        },
    )
    .await?;
    Ok(Webhook {
        server,
        shutdown,
        pki,
        files,
        first,
        metrics,
        _dir: dir,
    })
}

/// One TLS connection to the webhook, with the certificate the server presented on it.
struct TlsConnection {
    peer_certificate: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl Webhook {
    async fn tls_connect(&self, alpn: &[&[u8]]) -> Result<TlsConnection> {
        let connector = TlsConnector::from(self.pki.client_config(alpn)?);
        let tcp = TcpStream::connect(self.server.local_addr()).await?;
        let tls = connector
            .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
            .await?;
        let (_, session) = tls.get_ref();
        let peer_certificate = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .context("the server presented no certificate")?
            .clone()
            .into_owned();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        Ok(TlsConnection {
            peer_certificate,
            alpn,
            io: TokioIo::new(tls),
        })
    }

    async fn http1(&self) -> Result<(http1::SendRequest<Body>, CertificateDer<'static>)> {
        let connection = self.tls_connect(&[b"http/1.1"]).await?;
        let (sender, driver) = http1::handshake(connection.io).await?;
        tokio::spawn(driver);
        Ok((sender, connection.peer_certificate))
    }

    /// Sends one request on a new HTTP/1.1 connection.
    async fn send(&self, method: Method, path: &str, body: Body) -> Result<(StatusCode, Bytes)> {
        let (mut sender, _) = self.http1().await?;
        send(&mut sender, request(method, path, body)?).await
    }

    async fn post(&self, path: &str, body: &str) -> Result<(StatusCode, Value)> {
        let (status, body) = self.send(Method::POST, path, full(body.to_owned())).await?;
        Ok((status, json(&body)?))
    }

    /// Opens new connections until one presents `expected` (the reload poll runs every 50 ms).
    async fn wait_for_certificate(&self, expected: &CertificateDer<'_>) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, presented) = self.http1().await?;
            if presented == *expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the server still presents the old certificate after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        tokio::time::timeout(WAIT, self.server.stopped()).await??;
        Ok(())
    }
}

fn request(method: Method, path: &str, body: Body) -> Result<Request<Body>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)?)
}

async fn send(
    sender: &mut http1::SendRequest<Body>,
    request: Request<Body>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body)
        .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(body)))
}

fn pod_create_with_deny_label() -> Result<String> {
    let mut review: Value = serde_json::from_str(POD_CREATE)?;
    let labels = review
        .pointer_mut("/request/object/metadata/labels")
        .and_then(Value::as_object_mut)
        .context("fixture pod has labels")?;
    labels.insert(DENY_LABEL.to_owned(), Value::from("yes"));
    Ok(review.to_string())
}

/// Plain HTTP/1.1 GET against the admin server.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, driver) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(driver);
    let (status, body) = send(&mut sender, request(Method::GET, path, empty())?).await?;
    Ok((status, String::from_utf8(body.to_vec())?))
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn a_pod_create_review_is_answered_allowed_with_its_uid_echoed() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let (status, answer) = webhook.post(server::VALIDATE_PODS_PATH, POD_CREATE).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], POD_CREATE_UID);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer.get("request").is_none(), "{answer}");
    webhook.stop().await
}

#[tokio::test]
async fn a_denied_pod_is_answered_with_allowed_false_and_the_reviewers_message() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let (status, answer) = webhook
        .post(server::VALIDATE_PODS_PATH, &pod_create_with_deny_label()?)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["response"]["uid"], POD_CREATE_UID);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&format!("NoIdentity: {DENY_LABEL} is set")),
        "{answer}"
    );
    assert_eq!(
        answer["response"]["auditAnnotations"]["reason"],
        "NoIdentity,NoOwner"
    );
    webhook.stop().await
}

#[tokio::test]
async fn every_validate_path_reaches_the_reviewer() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    for path in server::VALIDATE_PATHS {
        let (status, answer) = webhook.post(path, POD_CREATE).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        assert_eq!(answer["response"]["uid"], POD_CREATE_UID, "{path}");
    }
    webhook.stop().await
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_serves_reviews() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let connection = webhook.tls_connect(&[b"h2", b"http/1.1"]).await?;
    assert_eq!(connection.alpn.as_deref(), Some(&b"h2"[..]));
    let (mut sender, driver) = http2::handshake(TokioExecutor::new(), connection.io).await?;
    tokio::spawn(driver);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let uri = format!("https://127.0.0.1{}", server::VALIDATE_PATH);
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(full(POD_CREATE))?;
        sender.ready().await?;
        answers.push(sender.send_request(request));
    }
    for answer in answers {
        let response = tokio::time::timeout(WAIT, answer).await??;
        assert_eq!(response.status(), StatusCode::OK);
        let body = json(&response.into_body().collect().await?.to_bytes())?;
        assert_eq!(body["response"]["uid"], POD_CREATE_UID);
    }
    webhook.stop().await
}

// ---------------------------------------------------------------------------------------------
// Bad input

async fn assert_refused(
    webhook: &Webhook,
    body: &str,
    status: StatusCode,
    reason: &str,
) -> Result<Value> {
    let (got, answer) = webhook.post(server::VALIDATE_PATH, body).await?;
    assert_eq!(got, status, "{answer}");
    assert_eq!(answer["code"], status.as_u16(), "{answer}");
    assert_eq!(answer["reason"], reason, "{answer}");
    ensure!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "refusal without a message: {answer}"
    );
    Ok(answer)
}

#[tokio::test]
async fn malformed_json_is_refused_with_400_malformed_json() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    assert_refused(
        &webhook,
        "{\"kind\": AdmissionReview,",
        StatusCode::BAD_REQUEST,
        "MalformedJson",
    )
    .await?;
    webhook.stop().await
}

#[tokio::test]
async fn a_truncated_review_is_refused_with_400_truncated_json() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let answer = assert_refused(
        &webhook,
        POD_CREATE_TRUNCATED,
        StatusCode::BAD_REQUEST,
        "TruncatedJson",
    )
    .await?;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("truncated")),
        "{answer}"
    );
    assert_refused(&webhook, "", StatusCode::BAD_REQUEST, "TruncatedJson").await?;
    webhook.stop().await
}

#[tokio::test]
async fn a_pod_posted_instead_of_a_review_is_refused_with_400_wrong_kind() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let answer = assert_refused(&webhook, WRONG_KIND, StatusCode::BAD_REQUEST, "WrongKind").await?;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"Pod\"")),
        "{answer}"
    );
    webhook.stop().await
}

#[tokio::test]
async fn json_that_is_not_an_admission_review_is_refused_with_400() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    assert_refused(
        &webhook,
        V1BETA1,
        StatusCode::BAD_REQUEST,
        "UnsupportedApiVersion",
    )
    .await?;
    assert_refused(
        &webhook,
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
        StatusCode::BAD_REQUEST,
        "MissingRequest",
    )
    .await?;
    assert_refused(
        &webhook,
        r#"["AdmissionReview"]"#,
        StatusCode::BAD_REQUEST,
        "NotAdmissionReview",
    )
    .await?;
    webhook.stop().await
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_with_or_without_content_length() -> Result<()> {
    let webhook = start_webhook_with(Arc::new(DenyLabelled), |config| {
        config.max_body_bytes = 1024;
    })
    .await?;
    // Full bodies carry a Content-Length.
    assert_refused(
        &webhook,
        POD_CREATE,
        StatusCode::PAYLOAD_TOO_LARGE,
        "BodyTooLarge",
    )
    .await?;
    // A streamed body is chunked: the limit is found while reading.
    let (chunks, body) = streamed();
    for chunk in POD_CREATE.as_bytes().chunks(512) {
        chunks.send(Bytes::copy_from_slice(chunk))?;
    }
    drop(chunks);
    let (status, answer) = webhook
        .send(Method::POST, server::VALIDATE_PATH, body)
        .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&answer)?["reason"], "BodyTooLarge");
    // A body under the limit still passes on the same server.
    let small = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#;
    assert_refused(&webhook, small, StatusCode::BAD_REQUEST, "MissingRequest").await?;
    webhook.stop().await
}

#[tokio::test]
async fn the_default_body_limit_is_three_mebibytes() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let padding = " ".repeat(3 * 1024 * 1024 - POD_CREATE.len());
    let (status, _) = webhook
        .post(server::VALIDATE_PATH, &format!("{POD_CREATE}{padding}"))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = webhook
        .post(server::VALIDATE_PATH, &format!("{POD_CREATE}{padding} "))
        .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    webhook.stop().await
}

#[tokio::test]
async fn a_body_that_stalls_is_refused_with_408() -> Result<()> {
    let webhook = start_webhook_with(Arc::new(DenyLabelled), |config| {
        config.body_timeout = Duration::from_millis(200);
    })
    .await?;
    let (chunks, body) = streamed();
    chunks.send(Bytes::from(&POD_CREATE[..100]))?;
    let (status, answer) = webhook
        .send(Method::POST, server::VALIDATE_PATH, body)
        .await?;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(json(&answer)?["reason"], "BodyTimeout");
    drop(chunks);
    webhook.stop().await
}

#[tokio::test]
async fn a_get_on_a_validate_path_is_refused_with_405_and_allow_post() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let (mut sender, _) = webhook.http1().await?;
    sender.ready().await?;
    let response = sender
        .send_request(request(Method::GET, server::VALIDATE_PODS_PATH, empty())?)
        .await?;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let answer = json(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(answer["reason"], "MethodNotAllowed");
    webhook.stop().await
}

#[tokio::test]
async fn an_unknown_path_is_refused_with_404() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    for path in ["/", "/mutate", "/validate/pods/extra", "/validatepods"] {
        let (status, answer) = webhook.post(path, POD_CREATE).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_eq!(answer["reason"], "NotFound");
    }
    webhook.stop().await
}

#[tokio::test]
async fn a_panicking_reviewer_gets_500_and_the_server_keeps_serving() -> Result<()> {
    let webhook = start_webhook(Arc::new(Panicking)).await?;
    for _ in 0..2 {
        let (status, answer) = webhook.post(server::VALIDATE_PATH, POD_CREATE).await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer["reason"], "ReviewerPanicked");
    }
    let metrics = webhook.metrics.encode()?;
    assert!(
        metrics.contains(r#"mandate_admission_requests_total{resource="pods",decision="error",reason="ReviewerPanicked",mode="none"} 2"#),
        "{metrics}"
    );
    webhook.stop().await
}

// ---------------------------------------------------------------------------------------------
// Certificates

#[tokio::test]
async fn a_new_certificate_serves_new_connections_while_an_in_flight_request_completes()
-> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let (mut old_connection, presented) = webhook.http1().await?;
    assert_eq!(presented, webhook.first.der);

    // A request is in flight on the old connection: half its body sent.
    let (chunks, body) = streamed();
    let (first_half, second_half) = POD_CREATE.split_at(POD_CREATE.len() / 2);
    chunks.send(Bytes::from(first_half))?;
    old_connection.ready().await?;
    let in_flight = tokio::spawn(old_connection.send_request(request(
        Method::POST,
        server::VALIDATE_PATH,
        body,
    )?));

    let second = webhook.pki.issue("webhook-second", 2002)?;
    install(&second, &webhook.files)?;
    webhook.wait_for_certificate(&second.der).await?;

    chunks.send(Bytes::from(second_half))?;
    drop(chunks);
    let response = tokio::time::timeout(WAIT, in_flight).await???;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(answer["response"]["uid"], POD_CREATE_UID);

    // The old connection keeps working (it keeps the certificate it was opened with).
    let (status, _) = send(
        &mut old_connection,
        request(Method::POST, server::VALIDATE_PATH, full(POD_CREATE))?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    webhook.stop().await
}

#[tokio::test]
async fn invalid_new_certificate_files_are_ignored_until_a_valid_pair_arrives() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let second = webhook.pki.issue("webhook-second", 2002)?;
    let third = webhook.pki.issue("webhook-third", 3003)?;

    // Garbage in the certificate file.
    write_atomically(&webhook.files.certificate, b"-----BEGIN GARBAGE-----\n")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, presented) = webhook.http1().await?;
    assert_eq!(presented, webhook.first.der);

    // A certificate with someone else's key.
    write_atomically(
        &webhook.files.certificate,
        second.certificate_pem.as_bytes(),
    )?;
    write_atomically(&webhook.files.private_key, third.private_key_pem.as_bytes())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, presented) = webhook.http1().await?;
    assert_eq!(presented, webhook.first.der);

    // A missing key file.
    std::fs::remove_file(&webhook.files.private_key)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, presented) = webhook.http1().await?;
    assert_eq!(presented, webhook.first.der);

    install(&third, &webhook.files)?;
    webhook.wait_for_certificate(&third.der).await?;
    webhook.stop().await
}

#[tokio::test]
async fn the_server_does_not_start_without_a_valid_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let files = TlsFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let config = WebhookConfig::new(SocketAddr::from((LOCALHOST, 0)), files);
    let started = server::serve(
        config,
        Arc::new(DenyLabelled),
        Arc::new(NoPodLookup),
        Arc::new(server::NoRecorder),
        Metrics::new(),
        async {},
    )
    .await;
    let error = started
        .err()
        .context("serve started without certificate files")?;
    assert!(error.to_string().contains("tls.crt"), "{error}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client certificates

/// A client certificate (clientAuth) issued by `pki`, and a TLS client presenting it.
fn client_with_certificate(pki: &Pki, issuer: &Pki) -> Result<Arc<rustls::ClientConfig>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.signed_by(&key, &issuer.issuer)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![certificate.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// POSTs the pod fixture over a new connection made with `config`.
async fn post_with(webhook: &Webhook, config: Arc<rustls::ClientConfig>) -> Result<StatusCode> {
    let tcp = TcpStream::connect(webhook.server.local_addr()).await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
        .await?;
    let (mut sender, driver) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(driver);
    let request = request(Method::POST, server::VALIDATE_PODS_PATH, full(POD_CREATE))?;
    Ok(send(&mut sender, request).await?.0)
}

#[tokio::test]
async fn with_a_client_ca_only_clients_it_signed_get_past_the_handshake() -> Result<()> {
    let clients = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("clients-ca.crt");
    std::fs::write(&ca_path, pem_of(&clients.ca))?;
    let webhook = start_webhook_with(Arc::new(DenyLabelled), |config| {
        config.client_ca = Some(ca_path.clone());
    })
    .await?;

    // No certificate, then one from another CA: refused before any HTTP, so nothing counted.
    let anonymous = post_with(&webhook, webhook.pki.client_config(&[b"http/1.1"])?).await;
    ensure!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );
    let stranger = post_with(
        &webhook,
        client_with_certificate(&webhook.pki, &Pki::new()?)?,
    )
    .await;
    ensure!(
        stranger.is_err(),
        "served a certificate of another CA: {stranger:?}"
    );
    let metrics = webhook.metrics.encode()?;
    ensure!(
        !metrics.contains("mandate_admission_requests_total{"),
        "a refused caller was counted:\n{metrics}"
    );

    let status = post_with(&webhook, client_with_certificate(&webhook.pki, &clients)?).await?;
    assert_eq!(status, StatusCode::OK);
    let metrics = webhook.metrics.encode()?;
    ensure!(
        metrics.contains(r#"mandate_admission_requests_total{resource="pods",decision="allowed",reason="none",mode="enforce"} 1"#),
        "{metrics}"
    );
    webhook.stop().await
}

/// A DER certificate as PEM.
fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_closes_the_listener() -> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let addr = webhook.server.local_addr();
    let (mut connection, _) = webhook.http1().await?;
    let (chunks, body) = streamed();
    chunks.send(Bytes::from(&POD_CREATE[..100]))?;
    connection.ready().await?;
    let in_flight =
        tokio::spawn(connection.send_request(request(Method::POST, server::VALIDATE_PATH, body)?));
    // Let the request's head reach the server before shutting down.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let Webhook {
        server, shutdown, ..
    } = webhook;
    let _ = shutdown.send(());
    let stopped = tokio::spawn(server.stopped());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts after shutdown"
    );

    chunks.send(Bytes::from(&POD_CREATE[100..]))?;
    drop(chunks);
    let response = tokio::time::timeout(WAIT, in_flight).await???;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::timeout(WAIT, stopped).await???;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admin server

#[tokio::test]
async fn admin_metrics_count_each_answered_request_by_resource_decision_reason_and_mode()
-> Result<()> {
    let webhook = start_webhook(Arc::new(DenyLabelled)).await?;
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin = serve_admin(
        SocketAddr::from((LOCALHOST, 0)),
        webhook.metrics.clone(),
        Readiness::not_ready("starting"),
        async move {
            let _ = admin_stopped.await;
        },
    )
    .await?;

    webhook.post(server::VALIDATE_PODS_PATH, POD_CREATE).await?;
    webhook
        .post(server::VALIDATE_PODS_PATH, &pod_create_with_deny_label()?)
        .await?;
    webhook
        .post(server::VALIDATE_PODS_PATH, &pod_create_with_deny_label()?)
        .await?;
    webhook
        .post(server::VALIDATE_PATH, POD_CREATE_TRUNCATED)
        .await?;

    let (status, metrics) = admin_get(admin.local_addr(), "/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        r#"mandate_admission_requests_total{resource="pods",decision="allowed",reason="none",mode="enforce"} 1"#,
        r#"mandate_admission_requests_total{resource="pods",decision="denied",reason="NoIdentity",mode="enforce"} 2"#,
        r#"mandate_admission_requests_total{resource="unknown",decision="invalid",reason="TruncatedJson",mode="none"} 1"#,
        "mandate_admission_duration_seconds_count 4",
        r#"mandate_agents{ready="true"} 0"#,
        "# TYPE mandate_escalation_paths gauge",
        "# TYPE mandate_unmanaged_workloads gauge",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }

    let _ = stop_admin.send(());
    tokio::time::timeout(WAIT, admin.stopped()).await??;
    webhook.stop().await
}

#[tokio::test]
async fn readyz_answers_503_with_the_reason_until_ready_and_healthz_always_200() -> Result<()> {
    let readiness = Readiness::not_ready("caches not synced");
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin = serve_admin(
        SocketAddr::from((LOCALHOST, 0)),
        Metrics::new(),
        readiness.clone(),
        async move {
            let _ = admin_stopped.await;
        },
    )
    .await?;
    let addr = admin.local_addr();

    assert_eq!(admin_get(addr, "/healthz").await?.0, StatusCode::OK);
    let (status, body) = admin_get(addr, "/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("caches not synced"), "{body}");

    readiness.set_ready();
    assert_eq!(admin_get(addr, "/readyz").await?.0, StatusCode::OK);
    assert_eq!(admin_get(addr, "/healthz").await?.0, StatusCode::OK);

    readiness.set_not_ready("lost the API server");
    let (status, body) = admin_get(addr, "/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("lost the API server"), "{body}");

    assert_eq!(admin_get(addr, "/nothing").await?.0, StatusCode::NOT_FOUND);

    let _ = stop_admin.send(());
    tokio::time::timeout(WAIT, admin.stopped()).await??;
    Ok(())
}
