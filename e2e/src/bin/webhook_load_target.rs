//! Load-test target for `make bench-admission`: serves, side by side over the same TLS stack,
//! mandate's webhook with a synthetic snapshot of N identities, and a baseline webhook that only
//! parses the AdmissionReview and allows it. Runs until killed.
//!
//! Usage: webhook_load_target <mandate-addr> <baseline-addr> <cert.pem> <key.pem> <identities>

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use mandate::admission::{AdmissionConfig, MandateReviewer, Request, Reviewer, Verdict, synthetic};
use mandate::telemetry::Metrics;
use mandate::webhook::pods::NoPodLookup;
use mandate::webhook::server::{NoRecorder, WebhookConfig, serve};
use mandate::webhook::tls::TlsFiles;

/// Parses (the server does) and allows: the floor any webhook pays.
struct AllowAll;

impl Reviewer for AllowAll {
    fn review(&self, _request: &Request) -> Verdict {
        Verdict::ignored()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mandate_addr, baseline_addr, cert, key, identities] = args.as_slice() else {
        anyhow::bail!(
            "usage: webhook_load_target <mandate-addr> <baseline-addr> <cert> <key> <identities>"
        );
    };
    let mandate_addr: SocketAddr = mandate_addr.parse().context("mandate address")?;
    let baseline_addr: SocketAddr = baseline_addr.parse().context("baseline address")?;
    let identities: usize = identities.parse().context("identity count")?;
    let tls = TlsFiles::new(cert.as_str(), key.as_str());

    let snapshot = synthetic::snapshot(identities);
    let reviewer = MandateReviewer::new(
        Arc::new(ArcSwapOption::from_pointee(snapshot)),
        AdmissionConfig::default(),
    );
    let never = std::future::pending::<()>;
    let mandate = serve(
        WebhookConfig::new(mandate_addr, tls.clone()),
        Arc::new(reviewer),
        Arc::new(NoPodLookup),
        Arc::new(NoRecorder),
        Metrics::new(),
        never(),
    )
    .await?;
    let baseline = serve(
        WebhookConfig::new(baseline_addr, tls),
        Arc::new(AllowAll),
        Arc::new(NoPodLookup),
        Arc::new(NoRecorder),
        Metrics::new(),
        never(),
    )
    .await?;
    eprintln!(
        "serving mandate ({identities} identities) on {} and the parse-only baseline on {}",
        mandate.local_addr(),
        baseline.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
