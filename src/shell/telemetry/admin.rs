//! The admin server: plain HTTP on its own port, metrics and a readiness flag in; `/metrics`
//! (OpenMetrics text), `/healthz` (200 while the process serves) and `/readyz` (200 only when the
//! caller has said so, 503 with the reason otherwise) out. No TLS, no admission decisions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::Filter;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use super::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Path of the Prometheus scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the liveness probe.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Path of the readiness probe.
pub const READYZ_PATH: &str = "/readyz";

/// A shared readiness flag: clones see the same state. Starts not ready with a reason; the owner
/// of the caches calls [`Readiness::set_ready`] once they have synced. Lock-free to read.
#[derive(Clone, Debug)]
pub struct Readiness {
    not_ready: Arc<ArcSwapOption<String>>,
}

impl Readiness {
    /// Not ready, for `reason` (shown by `/readyz`).
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness {
            not_ready: Arc::new(ArcSwapOption::from_pointee(reason.into())),
        }
    }

    pub fn set_ready(&self) {
        self.not_ready.store(None);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.not_ready.store(Some(Arc::new(reason.into())));
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready.load().is_none()
    }

    /// `Ok` when ready, otherwise why not.
    pub fn status(&self) -> Result<(), Arc<String>> {
        match self.not_ready.load_full() {
            None => Ok(()),
            Some(reason) => Err(reason),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the admin server's bound address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped after its shutdown future resolved and open
    /// connections finished.
    pub async fn stopped(self) -> Result<(), tokio::task::JoinError> {
        self.task.await
    }
}

/// The admin routes, for serving or for `warp::test`.
pub fn routes(
    metrics: Metrics,
    readiness: Readiness,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let metrics_route = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || metrics_reply(&metrics));
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| warp::reply::with_status("ok\n", StatusCode::OK).into_response());
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || readyz_reply(&readiness));
    metrics_route.or(healthz).unify().or(readyz).unify()
}

fn metrics_reply(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(text) => warp::reply::with_header(text, header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            warp::reply::with_status(
                "encoding metrics failed\n",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .into_response()
        }
    }
}

fn readyz_reply(readiness: &Readiness) -> Response {
    match readiness.status() {
        Ok(()) => warp::reply::with_status("ready\n", StatusCode::OK).into_response(),
        Err(reason) => warp::reply::with_status(
            format!("not ready: {reason}\n"),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response(),
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the admin routes in a background task until
/// `shutdown` resolves. Returns once the socket is bound.
pub async fn serve_admin(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AdminServer, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(AdminError::LocalAddr)?;
    let server = warp::serve(routes(metrics, readiness))
        .incoming(listener)
        .graceful(shutdown);
    let task = tokio::spawn(async move {
        server.run().await;
        tracing::info!(%local_addr, "admin server stopped");
    });
    tracing::info!(%local_addr, "admin server listening");
    Ok(AdminServer { local_addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reports_its_reason_until_set_ready_and_clones_share_it() {
        let readiness = Readiness::not_ready("caches not synced");
        let probe = readiness.clone();
        assert_eq!(
            probe.status().map_err(|reason| reason.to_string()),
            Err("caches not synced".to_owned())
        );
        readiness.set_ready();
        assert!(probe.is_ready());
        readiness.set_not_ready("lost the API server");
        assert!(!probe.is_ready());
    }
}
