//! The decision service's own TLS port: an address, certificate files and the [`Authorizer`]
//! in; a listener serving Envoy's ext_authz (gRPC, and HTTP with forward-auth) and the AuthZEN
//! API (HTTP/2 or
//! HTTP/1.1 over TLS, the certificate reloaded on change, like the webhook's) out, until
//! shutdown. Never decides anything itself.
//!
//! Who asks: with a client CA, only gateways presenting a certificate it signed get past the
//! TLS handshake, and each request carries [`CallerAuthenticated`] so that the SPIFFE ID a
//! gateway asserts is believed; without one, anyone who reaches the port may ask.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::grpc::GrpcAuthorizer;
use super::{Authorizer, authzen, http};
use crate::webhook::server::{CallerAuthenticated, ServeError, handshake, stop_signal};
use crate::webhook::tls::{
    CertificateReloader, TlsFiles, client_verifier, server_config_for_clients,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a change.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A running decision service.
pub struct AuthzServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AuthzServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped.
    pub async fn stopped(self) -> Result<(), tokio::task::JoinError> {
        self.task.await
    }
}

/// Binds `addr` and serves the decision service over TLS until `shutdown` resolves; with
/// `client_ca`, only clients whose certificate it signed complete the handshake. Returns
/// once the socket is bound.
pub async fn serve(
    addr: SocketAddr,
    tls: TlsFiles,
    client_ca: Option<&Path>,
    authorizer: Arc<Authorizer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AuthzServer, ServeError> {
    let reloader = CertificateReloader::load(tls).await?;
    let clients = client_ca.map(client_verifier).transpose()?;
    let verify_clients = clients.is_some();
    let acceptor = TlsAcceptor::from(Arc::new(server_config_for_clients(
        reloader.resolver(),
        clients,
    )?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(reloader.run(RELOAD_INTERVAL, stop_signal(stop_rx.clone())));

    let grpc = tonic::service::Routes::new(AuthorizationServer::from_arc(Arc::new(
        GrpcAuthorizer::new(authorizer.clone()),
    )))
    .prepare();
    let authzen = warp::service(authzen::routes(authorizer.clone()));
    // One port for all: Envoy's HTTP variant and forward-auth by their paths (first, since
    // they copy the original request's content type, which may be gRPC), gRPC (Envoy
    // ext_authz) by its content type, the rest is AuthZEN.
    let dispatch = tower::service_fn(move |request: hyper::Request<Incoming>| {
        let (grpc, authzen, authorizer) = (grpc.clone(), authzen.clone(), authorizer.clone());
        async move {
            if http::handles(request.uri().path()) {
                let response = http::check(&authorizer, request).await;
                return Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync()));
            }
            let is_grpc = request
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            let response: hyper::Response<Body> = if is_grpc {
                let response = grpc.oneshot(request).await?;
                response.map(|b| b.map_err(BoxError::from).boxed_unsync())
            } else {
                let response = authzen.oneshot(request).await?;
                response.map(|b| b.map_err(BoxError::from).boxed_unsync())
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http2().timer(TokioTimer::new());

    let task = tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (acceptor, http, stop) = (acceptor.clone(), http.clone(), stop_rx.clone());
                        let dispatch = dispatch.clone();
                        connections.spawn(async move {
                            let Some(tls) = handshake(&acceptor, stream, peer, HANDSHAKE_TIMEOUT).await else {
                                return;
                            };
                            let gateway = CallerAuthenticated::of_connection(verify_clients, &tls);
                            let service = TowerToHyperService::new(dispatch.map_request(
                                move |mut request: hyper::Request<Incoming>| {
                                    request.extensions_mut().insert(gateway);
                                    request
                                },
                            ));
                            let connection = http.serve_connection(TokioIo::new(tls), service);
                            let mut connection = std::pin::pin!(connection);
                            tokio::select! {
                                _ = connection.as_mut() => {}
                                () = stop_signal(stop) => {
                                    connection.as_mut().graceful_shutdown();
                                    let _ = connection.await;
                                }
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accepting a decision-service connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
        tracing::info!(%local_addr, "decision service stopped");
    });
    tracing::info!(%local_addr, "decision service listening (Envoy ext_authz gRPC and HTTP, forward-auth, AuthZEN)");
    Ok(AuthzServer { local_addr, task })
}
