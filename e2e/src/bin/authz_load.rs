//! Load generator for `make bench-authz`: Envoy ext_authz gRPC Check requests (a `tools/call`
//! with a bearer token, as Envoy sends it after its MCP filter) over TLS and HTTP/2, from
//! `connections` connections with `streams` requests in flight on each, for `seconds`. Every
//! answer must be OK (an allowed call) or the run fails. Prints one JSON line: requests, the
//! rate, and latency percentiles in milliseconds.
//!
//! Usage: authz_load <addr> <ca.pem> <seconds> <connections> <streams>

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

/// A JWT-shaped token; the load target's TokenReview vouches for any.
fn token() -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = k8s_openapi::jiff::Timestamp::now().as_second() + 3600;
    let claims = serde_json::json!({"aud": ["mandate.dev/agents/catalogue"], "exp": exp});
    format!(
        "{}.{}.signature",
        engine.encode(br#"{"alg":"RS256"}"#),
        engine.encode(claims.to_string())
    )
}

/// The gRPC frame of the Check request for `tools/call search` at Service agents/catalogue.
fn request_frame() -> Bytes {
    let params = Struct {
        fields: [("name".to_owned(), string("search"))].into(),
    };
    let mcp = Struct {
        fields: [
            ("method".to_owned(), string("tools/call")),
            (
                "params".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(params)),
                },
            ),
        ]
        .into(),
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/mcp".into(),
                    host: "catalogue.agents:8080".into(),
                    headers: HashMap::from([
                        ("authorization".to_owned(), format!("Bearer {}", token())),
                        ("mcp-method".to_owned(), "tools/call".to_owned()),
                        ("mcp-name".to_owned(), "search".to_owned()),
                    ]),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            context_extensions: HashMap::from([(
                "mandate.dev/service".to_owned(),
                "agents/catalogue".to_owned(),
            )]),
            metadata_context: Some(Metadata {
                filter_metadata: HashMap::from([("envoy.filters.http.mcp".to_owned(), mcp)]),
                ..Metadata::default()
            }),
            ..AttributeContext::default()
        }),
    };
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).expect("a small message"));
    frame.put_slice(&message);
    frame.freeze()
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, ca: &[u8]) -> anyhow::Result<Sender> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One Check: its latency, or why it was no OK.
async fn check(sender: &mut Sender, frame: &Bytes, addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let request = hyper::Request::post(format!("https://{addr}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    let elapsed = started.elapsed();
    if status != "0" {
        bail!("grpc-status {status}");
    }
    let body = collected.to_bytes();
    let answer = CheckResponse::decode(body.get(5..).context("no gRPC frame")?)?;
    if answer.status.as_ref().map(|s| s.code) != Some(0) {
        bail!("the call was refused: {answer:?}");
    }
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, ca, seconds, connections, streams] = args.as_slice() else {
        bail!("usage: authz_load <addr> <ca.pem> <seconds> <connections> <streams>");
    };
    let addr: SocketAddr = addr.parse()?;
    let ca = std::fs::read(ca)?;
    let seconds: u64 = seconds.parse()?;
    let connections: usize = connections.parse()?;
    let streams: usize = streams.parse()?;
    let frame = request_frame();

    // Warm up: the first call verifies the token (cached from then on).
    let mut first = connect(addr, &ca).await?;
    check(&mut first, &frame, addr).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let sender = connect(addr, &ca).await?;
        for _ in 0..streams {
            let (mut sender, frame, stop) = (sender.clone(), frame.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    latencies.push(check(&mut sender, &frame, addr).await?);
                }
                anyhow::Ok(latencies)
            }));
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "requests": latencies.len(),
            "per_second": (latencies.len() as f64 / elapsed).round(),
            "p50_ms": percentile(&latencies, 0.5),
            "p99_ms": percentile(&latencies, 0.99),
            "p999_ms": percentile(&latencies, 0.999),
            "connections": connections,
            "streams": streams,
        })
    );
    Ok(())
}
