//! Load generator for `make bench-authz`: Envoy ext_authz gRPC Check requests (a `tools/call`
//! with a bearer token, as Envoy sends it after its MCP filter) over TLS and HTTP/2, from
//! `connections` connections with `streams` requests in flight on each, for `seconds`. Every
//! answer must be OK (an allowed call) or the run fails. Prints one JSON line: requests, the
//! rate, and latency percentiles in milliseconds.
//!
//! Usage: authz_load <addr> <ca.pem> <seconds> <connections> <streams>

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use mandate_e2e::ext_authz::{self, McpCall, Sender};

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
    let token = token();
    McpCall {
        service: "agents/catalogue",
        tool: "search",
        principal: None,
        bearer: Some(&token),
    }
    .frame()
}

async fn connect(addr: SocketAddr, ca: &[u8]) -> anyhow::Result<Sender> {
    ext_authz::connect(addr, ca, None).await
}

/// One Check: its latency, or why it was no OK.
async fn check(sender: &mut Sender, frame: &Bytes, addr: SocketAddr) -> anyhow::Result<Duration> {
    let (answer, elapsed) = ext_authz::check(sender, frame, addr).await?;
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
