//! A client of Envoy's ext_authz gRPC protocol, as a gateway speaks it to mandate's decision
//! service: a `CheckRequest` for an MCP `tools/call` as Envoy builds it after its MCP filter
//! (the caller as an asserted `source.principal` and/or a bearer token) in, its gRPC frame,
//! an HTTP/2 connection over TLS (presenting a client certificate when given) and the decoded
//! `CheckResponse` with its latency out. Used by the load generator of `make bench-authz` and by
//! tests that ask the decision service directly, as a forger would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use rustls::pki_types::ServerName;

/// The gRPC method Envoy calls.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// An MCP `tools/call` of `tool` at Service `service` (`<namespace>/<name>`, as the route's
/// context extension names it).
#[derive(Debug, Clone)]
pub struct McpCall<'a> {
    pub service: &'a str,
    pub tool: &'a str,
    /// The mTLS peer's SPIFFE ID the gateway asserts (`source.principal`).
    pub principal: Option<&'a str>,
    /// The caller's token (`authorization: Bearer`).
    pub bearer: Option<&'a str>,
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

impl McpCall<'_> {
    /// The Check request Envoy sends for this call: MCP filter metadata, the MCP headers, the
    /// Service as a context extension, the caller as given.
    pub fn check_request(&self) -> CheckRequest {
        let params = Struct {
            fields: [("name".to_owned(), string(self.tool))].into(),
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
        let (namespace, name) = self.service.split_once('/').unwrap_or(("", self.service));
        let mut headers = HashMap::from([
            ("mcp-method".to_owned(), "tools/call".to_owned()),
            ("mcp-name".to_owned(), self.tool.to_owned()),
        ]);
        if let Some(token) = self.bearer {
            headers.insert("authorization".to_owned(), format!("Bearer {token}"));
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                source: self.principal.map(|principal| Peer {
                    principal: principal.to_owned(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        path: "/mcp".into(),
                        host: format!("{name}.{namespace}:8080"),
                        headers,
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                context_extensions: HashMap::from([(
                    "mandate.dev/service".to_owned(),
                    self.service.to_owned(),
                )]),
                metadata_context: Some(Metadata {
                    filter_metadata: HashMap::from([("envoy.filters.http.mcp".to_owned(), mcp)]),
                    ..Metadata::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }
}

impl McpCall<'_> {
    /// [`Self::check_request`] as one gRPC message.
    pub fn frame(&self) -> Bytes {
        frame(&self.check_request())
    }
}

/// `request` as one length-prefixed gRPC message.
pub fn frame(request: &CheckRequest) -> Bytes {
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).expect("a small message"));
    frame.put_slice(&message);
    frame.freeze()
}

pub type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection over TLS to `addr`, trusting `ca_pem`, presenting `identity`
/// (certificate and key PEM files) when given.
pub async fn connect(
    addr: SocketAddr,
    ca_pem: &[u8],
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = crate::tls_client(ca_pem, identity, b"h2")?
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One Check: the answer and the time until its headers and trailers arrived; an error when
/// the gRPC call itself failed (not when the call was refused: that is in the answer).
pub async fn check(
    sender: &mut Sender,
    frame: &Bytes,
    addr: SocketAddr,
) -> anyhow::Result<(CheckResponse, Duration)> {
    let started = Instant::now();
    let request = hyper::Request::post(format!("https://{addr}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await?;
    let elapsed = started.elapsed();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    if status != "0" {
        bail!("grpc-status {status}");
    }
    let body = collected.to_bytes();
    let answer = CheckResponse::decode(body.get(5..).context("no gRPC frame")?)?;
    Ok((answer, elapsed))
}

/// The `x-mandate-reason` of a refusal, `None` for an allowed call.
pub fn refusal_reason(answer: &CheckResponse) -> Option<String> {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    match &answer.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => Some(
            denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-mandate-reason")
                .map_or_else(|| "no reason header".to_owned(), |h| h.value.clone()),
        ),
        _ => None,
    }
}
