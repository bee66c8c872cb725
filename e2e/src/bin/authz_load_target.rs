//! Load-test target for `make bench-authz`: mandate's decision service (its real TLS listener,
//! a synthetic snapshot of N identities, TokenReview faked to vouch for any token as the agent
//! `agents/researcher` once, then cached as always) and, beside it on the same TLS and HTTP/2
//! stack, an Envoy ext_authz gRPC server that allows every call without looking at it: the
//! floor any authorizer costs. Logs decisions as `mandate run` does (JSON lines on stderr).
//! Runs until killed.
//!
//! Usage: authz_load_target <mandate-addr> <allow-all-addr> <cert.pem> <key.pem> <identities>

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mandate::admission::{SnapshotSource, synthetic};
use mandate::authz::tokens::{Reviewed, TokenReviewer, TokenVerifier};
use mandate::authz::{Authorizer, server};
use mandate::project::TrustDomain;
use mandate::telemetry::{LogFormat, Metrics, init_logging};
use mandate::webhook::tls::{CertificateReloader, TlsFiles, server_config};
use tokio_rustls::TlsAcceptor;

/// Every token belongs to the synthetic agent `agents/researcher`, for its tool's audience.
struct Researcher;

impl TokenReviewer for Researcher {
    fn review(&self, _: &str, _: Vec<String>) -> BoxFuture<'_, Result<Reviewed, String>> {
        Box::pin(async {
            Ok(Reviewed::Authenticated {
                username: "system:serviceaccount:agents:researcher".into(),
                audiences: vec!["mandate.dev/agents/catalogue".into()],
                pod: Some("researcher-0".into()),
                pod_uid: Some("uid-researcher-0".into()),
            })
        })
    }
}

/// Allows every call without reading it.
struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let mut response = CheckResponse::new();
        response.set_status(tonic::Status::ok(""));
        Ok(tonic::Response::new(response))
    }
}

/// Serves [`AllowAll`] over TLS and HTTP/2 as the decision service serves gRPC.
async fn serve_allow_all(addr: SocketAddr, tls: TlsFiles) -> anyhow::Result<()> {
    let reloader = CertificateReloader::load(tls).await?;
    let acceptor = TlsAcceptor::from(Arc::new(server_config(reloader.resolver())?));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let routes = tonic::service::Routes::new(AuthorizationServer::new(AllowAll)).prepare();
    let http = auto::Builder::new(TokioExecutor::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, http, routes) = (acceptor.clone(), http.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = TowerToHyperService::new(routes);
                let _ = http.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mandate_addr, allow_all_addr, cert, key, identities] = args.as_slice() else {
        anyhow::bail!(
            "usage: authz_load_target <mandate-addr> <allow-all-addr> <cert> <key> <identities>"
        );
    };
    let mandate_addr: SocketAddr = mandate_addr.parse().context("mandate address")?;
    let allow_all_addr: SocketAddr = allow_all_addr.parse().context("allow-all address")?;
    let identities: usize = identities.parse().context("identity count")?;
    let tls = TlsFiles::new(cert.as_str(), key.as_str());
    init_logging(LogFormat::Json, "info")?;

    let snapshots = SnapshotSource::default();
    snapshots.store(Some(Arc::new(synthetic::snapshot(identities))));
    let authorizer = Authorizer::new(
        snapshots,
        TokenVerifier::new(Arc::new(Researcher)),
        TrustDomain::default(),
        Metrics::new(),
    );
    let mandate = server::serve(
        mandate_addr,
        tls.clone(),
        None,
        authorizer,
        std::future::pending::<()>(),
    )
    .await?;
    serve_allow_all(allow_all_addr, tls).await?;
    eprintln!(
        "serving mandate's decision service ({identities} identities) on {} and an allow-all authorizer on {allow_all_addr}",
        mandate.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
