//! Shared helpers for the end-to-end tests: where the local control plane lives (kubeconfig,
//! binaries), a kube client for it, kubectl, a namespace per test that cleans up after itself,
//! and polling. The control plane itself is started by `e2e/cluster.sh up` (see `make e2e`).

pub mod admission;
pub mod ext_authz;
pub mod gateway;
pub mod operator;
pub mod resources;
pub mod scene;
pub mod webhook;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The repository root (the e2e crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate has a parent directory")
        .to_owned()
}

/// The control plane's state directory (kubeconfig, PKI, logs).
pub fn state_dir() -> PathBuf {
    std::env::var_os("MANDATE_E2E_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("e2e/.state"))
}

/// The admin kubeconfig written by `e2e/cluster.sh up`.
pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// A value from `e2e/versions.sh` (`KUBE_VERSION`, `HELM_VERSION`).
pub fn pinned(var: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_root().join("e2e/versions.sh"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{var}=")))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("{var} is not set in e2e/versions.sh"))
}

/// The directory holding the cached control-plane binaries (kubectl, helm, ...).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/build.sh"))
        .arg("--print")
        .output()?;
    if !out.status.success() {
        bail!(
            "e2e/build.sh --print failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A client for the local control plane as cluster admin.
pub async fn client() -> anyhow::Result<Client> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| {
        format!(
            "reading {} (is the control plane up? run e2e/cluster.sh up)",
            path.display()
        )
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A client that authenticates with a bearer token instead of the admin certificate.
pub async fn client_with_token(token: &str) -> anyhow::Result<Client> {
    let path = kubeconfig_path();
    let mut kubeconfig = Kubeconfig::read_from(&path)?;
    for auth in &mut kubeconfig.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.client_certificate = None;
            info.client_key = None;
            info.token = Some(token.to_owned().into());
        }
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// `kubectl` from the cache, pointed at the local control plane.
pub fn kubectl() -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin_dir()?.join("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig_path());
    Ok(cmd)
}

/// Runs kubectl with `args`; returns its output whether or not it succeeded.
pub fn kubectl_output(args: &[&str]) -> anyhow::Result<Output> {
    Ok(kubectl()?.args(args).output()?)
}

/// Runs kubectl with `args` and `stdin`; fails with its stderr unless it succeeded.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let out = kubectl_with_stdin(args, stdin)?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs kubectl with `args`, feeding `stdin` when given.
pub fn kubectl_with_stdin(args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = kubectl()?
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// A namespace of its own for one test, deleted when dropped unless `MANDATE_E2E_KEEP=1`.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<pid>-<n>` with the given labels.
    pub async fn create(
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("MANDATE_E2E_KEEP").as_deref() == Ok("1") {
            eprintln!("keeping namespace {} (MANDATE_E2E_KEEP=1)", self.name);
            return;
        }
        let name = self.name.clone();
        block_on_side_runtime(async move {
            Api::<Namespace>::all(client().await?)
                .delete(&name, &DeleteParams::background())
                .await?;
            Ok(())
        });
    }
}

/// Runs cleanup from a `Drop`: on a thread with a runtime of its own, since Drop cannot await
/// and the test's runtime may be single-threaded. The future must make its own client: a
/// client's background task lives on the runtime that created it, which is blocked here.
pub fn block_on_side_runtime<F>(cleanup: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let outcome = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(cleanup)
    })
    .join();
    if let Ok(Err(e)) = outcome {
        eprintln!("cleanup failed: {e:#}");
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA and a serving certificate for 127.0.0.1 made by `e2e/certs.sh`, for webhooks that the
/// API server calls through `clientConfig.url`.
pub struct ServingCert {
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl ServingCert {
    /// Makes a fresh CA and serving certificate in a new directory under the state dir.
    pub fn generate(name: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = state_dir().join("webhook-certs").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let certs = repo_root().join("e2e/certs.sh");
        let dir_str = dir.to_str().context("certificate directory is not UTF-8")?;
        for args in [vec!["ca", dir_str], vec!["serving", dir_str, name, dir_str]] {
            let out = Command::new("bash").arg(&certs).args(&args).output()?;
            if !out.status.success() {
                bail!(
                    "e2e/certs.sh {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(Self {
            ca_pem: std::fs::read(dir.join("ca.crt"))?,
            cert_path: dir.join(format!("{name}.crt")),
            key_path: dir.join(format!("{name}.key")),
            dir,
        })
    }
}

/// A TLS client trusting `ca_pem`, offering `alpn`, presenting `identity` (certificate and key
/// PEM files) when given: how tests reach mandate's ports the way a caller would.
pub fn tls_client(
    ca_pem: &[u8],
    identity: Option<(&Path, &Path)>,
    alpn: &[u8],
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((certificate, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(certificate)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
