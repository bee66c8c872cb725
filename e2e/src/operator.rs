//! The operator under test as a local process: `target/debug/mandate run` pointed at the local
//! control plane, with its own admin port and log file. Killed when dropped; its log is printed
//! when a test fails (call [`Operator::dump_log_on_panic`] or read [`Operator::log`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{ServingCert, kubeconfig_path, repo_root, state_dir};

/// Namespace of the operator's leader Lease.
pub const OPERATOR_NAMESPACE: &str = "mandate-system";

/// How to start the operator.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Lease name: operators sharing one elect a single leader.
    pub lease_name: String,
    /// Extra arguments after `mandate run`.
    pub args: Vec<String>,
    /// Environment (for example `KUBECONFIG` of another identity).
    pub env: Vec<(String, String)>,
    /// Kubeconfig to run as instead of the admin one (for example a ServiceAccount token's).
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader Lease instead of [`OPERATOR_NAMESPACE`].
    pub namespace: Option<String>,
}

impl OperatorOptions {
    /// A lease of its own, so the operator leads at once.
    pub fn unique() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        OperatorOptions {
            lease_name: format!(
                "mandate-e2e-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            args: Vec::new(),
            env: Vec::new(),
            kubeconfig: None,
            namespace: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A running operator process.
pub struct Operator {
    child: Child,
    pub admin: SocketAddr,
    /// The HTTPS admission webhook, serving a certificate for 127.0.0.1.
    pub webhook: SocketAddr,
    /// The decision service (Envoy ext_authz gRPC over TLS), with the webhook's certificate.
    pub authz: SocketAddr,
    pub cert: ServingCert,
    pub log_path: PathBuf,
    pub options: OperatorOptions,
}

/// The mandate binary built from this checkout (`cargo build --bin mandate`).
/// `MANDATE_E2E_BINARY` overrides it (benchmarks use the release build).
pub fn mandate_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("MANDATE_E2E_BINARY") {
        return PathBuf::from(binary);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug/mandate")
}

/// `N` distinct free TCP ports on 127.0.0.1, held together while they are picked so none is
/// handed out twice (released before use: another process may still take one, which
/// [`Operator::start`] survives by trying again).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// How often [`Operator::start`] tries fresh ports when the chosen ones were taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// How long an operator may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Operator {
    /// Starts the operator and waits until `/readyz` answers 200; on ports taken between
    /// picking and binding them, starts it again on others.
    pub async fn start(options: OperatorOptions) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut operator = Operator::spawn(options.clone()).await?;
            match operator.wait_started().await {
                Ok(()) => return Ok(operator),
                Err(_) if attempt < START_ATTEMPTS && operator.lost_its_port() => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits until `/readyz` answers 200; fails at once if the process exits meanwhile.
    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited ({status}); its log:\n{}", self.log());
            }
            if http_get(self.admin, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "timed out after {READY_TIMEOUT:?} waiting for the operator to become ready; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the operator exited because one of its ports was taken.
    fn lost_its_port(&self) -> bool {
        self.log().contains("Address already in use")
    }

    /// Starts the operator process on fresh ports without waiting for it.
    async fn spawn(options: OperatorOptions) -> anyhow::Result<Self> {
        crate::kubectl_ok(
            &[
                "create",
                "namespace",
                OPERATOR_NAMESPACE,
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        )
        .and_then(|yaml| crate::kubectl_ok(&["apply", "-f", "-"], Some(&yaml)))?;
        let binary = mandate_binary();
        if !binary.exists() {
            bail!(
                "{} is missing: run `cargo build --bin mandate`",
                binary.display()
            );
        }
        let [admin_port, webhook_port, authz_port] = free_ports()?;
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
        let webhook: SocketAddr = format!("127.0.0.1:{webhook_port}").parse()?;
        let authz: SocketAddr = format!("127.0.0.1:{authz_port}").parse()?;
        let cert = ServingCert::generate("mandate-webhook")?;
        let logs = state_dir().join("operator-logs");
        std::fs::create_dir_all(&logs)?;
        let log_path = logs.join(format!("{}.log", options.lease_name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("run")
            .args(["--admin-addr", &admin.to_string()])
            .args(["--webhook-addr", &webhook.to_string()])
            .args(["--authz-addr", &authz.to_string()])
            .arg("--tls-cert")
            .arg(&cert.cert_path)
            .arg("--tls-key")
            .arg(&cert.key_path)
            .args(["--lease-name", &options.lease_name])
            .args([
                "--namespace",
                options.namespace.as_deref().unwrap_or(OPERATOR_NAMESPACE),
            ])
            .args(["--log-format", "json"])
            .args(&options.args)
            .env(
                "KUBECONFIG",
                options.kubeconfig.clone().unwrap_or_else(kubeconfig_path),
            )
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Operator {
            child,
            admin,
            webhook,
            authz,
            cert,
            log_path,
            options,
        })
    }

    /// The webhook URL of `path` for `clientConfig.url`.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.webhook)
    }

    /// Starts a second operator with the same options (for restarts).
    pub async fn restart_like(&self) -> anyhow::Result<Self> {
        Operator::start(self.options.clone()).await
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let (code, body) = http_get(self.admin, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        self.kill();
    }
}

/// A minimal HTTP/1.0 GET on loopback: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
