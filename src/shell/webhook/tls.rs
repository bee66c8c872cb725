//! Webhook TLS: certificate and key PEM file paths (and optionally the CA of the clients allowed
//! to call) in; a rustls server configuration whose certificate can be swapped while connections
//! are open out. A background poll re-reads the files and swaps the certificate when their
//! contents change; a bad new pair is logged and the old one kept. With a client CA
//! ([`client_verifier`]), a client that presents no certificate signed by it is refused during
//! the handshake, before it can send a byte of HTTP. Never talks to the API server.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// ALPN protocols offered, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the serving certificate (PEM, leaf first, then intermediates) and its private key
/// (PEM, PKCS#8, PKCS#1 or SEC1) live, e.g. a mounted Secret's `tls.crt` and `tls.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl TlsFiles {
    pub fn new(certificate: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            certificate: certificate.into(),
            private_key: private_key.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate file {path}: {source}")]
    ReadCertificate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading private key file {path}: {source}")]
    ReadPrivateKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing certificate PEM in {path}: {source}")]
    ParseCertificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate file {path} holds no CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("parsing private key PEM in {path} (expected a PRIVATE KEY block): {source}")]
    ParsePrivateKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "private key in {private_key} does not match certificate {certificate} or is unsupported: {source}"
    )]
    LoadCertifiedKey {
        certificate: PathBuf,
        private_key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("configuring TLS protocol versions: {0}")]
    ConfigureProtocols(#[source] rustls::Error),
    #[error("reading the client CA file {path}: {source}")]
    ReadClientCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the client CA PEM in {path}: {source}")]
    ParseClientCa {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("client CA file {path} holds no usable CA certificate: {reason}")]
    NoClientCa { path: PathBuf, reason: String },
}

/// The crypto provider the webhook uses (ring), independent of any process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The raw contents of the two files, kept to notice changes.
#[derive(Clone, PartialEq, Eq)]
struct PemPair {
    certificate: Vec<u8>,
    private_key: Vec<u8>,
}

async fn read_pem_pair(files: &TlsFiles) -> Result<PemPair, TlsError> {
    let certificate = tokio::fs::read(&files.certificate)
        .await
        .map_err(|source| TlsError::ReadCertificate {
            path: files.certificate.clone(),
            source,
        })?;
    let private_key = tokio::fs::read(&files.private_key)
        .await
        .map_err(|source| TlsError::ReadPrivateKey {
            path: files.private_key.clone(),
            source,
        })?;
    Ok(PemPair {
        certificate,
        private_key,
    })
}

/// Parses a certificate chain and key and checks that they belong together.
pub fn certified_key(
    certificate_pem: &[u8],
    private_key_pem: &[u8],
    files: &TlsFiles,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseCertificate {
            path: files.certificate.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.certificate.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem).map_err(|source| {
        TlsError::ParsePrivateKey {
            path: files.private_key.clone(),
            source,
        }
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::LoadCertifiedKey {
        certificate: files.certificate.clone(),
        private_key: files.private_key.clone(),
        source,
    })
}

/// Answers every TLS handshake with the current certificate; [`CertificateReloader`] swaps it.
/// Handshakes read it without a lock; connections already established keep the one they got.
pub struct SwappableCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for SwappableCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwappableCertResolver")
            .finish_non_exhaustive()
    }
}

impl SwappableCertResolver {
    pub fn new(initial: CertifiedKey) -> Self {
        SwappableCertResolver {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    pub fn replace(&self, next: CertifiedKey) {
        self.current.store(Arc::new(next));
    }
}

impl ResolvesServerCert for SwappableCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server configuration (TLS 1.2 and 1.3, no client authentication, ALPN h2 and
/// http/1.1) that takes its certificate from `resolver`.
pub fn server_config(resolver: Arc<SwappableCertResolver>) -> Result<ServerConfig, TlsError> {
    server_config_for_clients(resolver, None)
}

/// [`server_config`], verifying clients with `clients` when given: a client that presents no
/// certificate, or one the verifier refuses, fails the handshake.
pub fn server_config_for_clients(
    resolver: Arc<SwappableCertResolver>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ConfigureProtocols)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A verifier that accepts only client certificates signed by a CA in the PEM file at `path`
/// (the CA that signed the API server's client certificate for webhooks); a client without a
/// certificate is refused. Read once, at start.
pub fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadClientCa {
        path: path.to_owned(),
        source,
    })?;
    client_verifier_from_pem(&pem, path)
}

fn client_verifier_from_pem(
    pem: &[u8],
    path: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseClientCa {
            path: path.to_owned(),
            source,
        })?;
    let no_ca = |reason: String| TlsError::NoClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| no_ca(error.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| no_ca(error.to_string()))
}

/// What one poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold what was last tried.
    Unchanged,
    /// The files changed and the new certificate now serves new handshakes.
    Reloaded,
}

/// Owns the files' last-seen contents and the resolver it feeds.
pub struct CertificateReloader {
    files: TlsFiles,
    resolver: Arc<SwappableCertResolver>,
    /// The contents last tried, good or bad: a bad pair is reported once, not at every poll.
    last_tried: PemPair,
    /// The last read error reported, so an unchanged failure is not logged at every poll.
    last_read_error: Option<String>,
}

impl fmt::Debug for CertificateReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertificateReloader {
    /// Reads and checks the files once; fails if they are unreadable or do not form a pair.
    pub async fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let pair = read_pem_pair(&files).await?;
        let key = certified_key(&pair.certificate, &pair.private_key, &files)?;
        Ok(CertificateReloader {
            resolver: Arc::new(SwappableCertResolver::new(key)),
            files,
            last_tried: pair,
            last_read_error: None,
        })
    }

    pub fn resolver(&self) -> Arc<SwappableCertResolver> {
        Arc::clone(&self.resolver)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files and swaps the certificate if their contents changed and form a valid
    /// pair. On error the current certificate stays.
    pub async fn reload_if_changed(&mut self) -> Result<ReloadOutcome, TlsError> {
        let pair = read_pem_pair(&self.files).await?;
        if pair == self.last_tried {
            return Ok(ReloadOutcome::Unchanged);
        }
        let result = certified_key(&pair.certificate, &pair.private_key, &self.files);
        self.last_tried = pair;
        self.resolver.replace(result?);
        Ok(ReloadOutcome::Reloaded)
    }

    /// Polls every `interval` until `stop` resolves, logging reloads and failures.
    pub async fn run(mut self, interval: Duration, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: the files were just loaded
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => self.poll_once().await,
            }
        }
    }

    async fn poll_once(&mut self) {
        match self.reload_if_changed().await {
            Ok(ReloadOutcome::Unchanged) => {
                self.last_read_error = None;
            }
            Ok(ReloadOutcome::Reloaded) => {
                self.last_read_error = None;
                tracing::info!(
                    certificate = %self.files.certificate.display(),
                    private_key = %self.files.private_key.display(),
                    "reloaded the webhook certificate"
                );
            }
            Err(error @ (TlsError::ReadCertificate { .. } | TlsError::ReadPrivateKey { .. })) => {
                // Often transient while a Secret volume swaps its files: report each new failure once.
                let message = error.to_string();
                if self.last_read_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "cannot read the webhook certificate files; keeping the current certificate");
                    self.last_read_error = Some(message);
                }
            }
            Err(error) => {
                self.last_read_error = None;
                tracing::error!(%error, "new webhook certificate files are invalid; keeping the current certificate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(name: &str) -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn files() -> TlsFiles {
        TlsFiles::new("/certs/tls.crt", "/certs/tls.key")
    }

    #[test]
    fn a_matching_certificate_and_key_form_a_certified_key()
    -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = generated("localhost")?;
        let certified = certified_key(cert.as_bytes(), key.as_bytes(), &files())?;
        assert_eq!(certified.cert.len(), 1);
        Ok(())
    }

    #[test]
    fn a_key_from_another_certificate_is_refused_naming_both_files()
    -> Result<(), Box<dyn std::error::Error>> {
        let (cert, _) = generated("localhost")?;
        let (_, other_key) = generated("localhost")?;
        let error = certified_key(cert.as_bytes(), other_key.as_bytes(), &files()).err();
        assert!(
            matches!(error, Some(TlsError::LoadCertifiedKey { .. })),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("/certs/tls.key") && message.contains("/certs/tls.crt"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_certificate_file_without_a_certificate_block_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_, key) = generated("localhost")?;
        let error = certified_key(key.as_bytes(), key.as_bytes(), &files()).err();
        assert!(
            matches!(error, Some(TlsError::NoCertificate { .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_key_file_without_a_key_block_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, _) = generated("localhost")?;
        let error = certified_key(cert.as_bytes(), b"not a key", &files()).err();
        assert!(
            matches!(error, Some(TlsError::ParsePrivateKey { .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_client_ca_file_without_a_certificate_is_refused_naming_the_file()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_, key) = generated("localhost")?;
        let path = Path::new("/ca/clients.crt");
        let error = client_verifier_from_pem(key.as_bytes(), path).err();
        assert!(
            matches!(error, Some(TlsError::NoClientCa { .. })),
            "{error:?}"
        );
        assert!(error.is_some_and(|e| e.to_string().contains("/ca/clients.crt")));
        Ok(())
    }

    #[test]
    fn a_client_ca_builds_a_verifier_that_requires_a_certificate()
    -> Result<(), Box<dyn std::error::Error>> {
        let (ca, _) = generated("mandate-clients")?;
        let verifier = client_verifier_from_pem(ca.as_bytes(), Path::new("ca.crt"))?;
        assert!(verifier.offer_client_auth());
        assert!(verifier.client_auth_mandatory());
        Ok(())
    }

    #[test]
    fn the_server_config_offers_h2_then_http1() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = generated("localhost")?;
        let resolver = Arc::new(SwappableCertResolver::new(certified_key(
            cert.as_bytes(),
            key.as_bytes(),
            &files(),
        )?));
        let config = server_config(resolver)?;
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        Ok(())
    }
}
