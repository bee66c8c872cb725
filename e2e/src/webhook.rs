//! A minimal validating webhook for proving the control plane calls webhooks over TLS: it
//! denies any object labelled `e2e.mandate.dev/deny: "true"` and counts the reviews it saw.
//! Serves HTTPS on 127.0.0.1 with a certificate from [`crate::ServingCert`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ServingCert;

/// Label that makes the test webhook deny an object.
pub const DENY_LABEL: &str = "e2e.mandate.dev/deny";
/// The message the test webhook denies with.
pub const DENIAL_MESSAGE: &str = "denied by the e2e test webhook";

/// A running test webhook.
pub struct TestWebhook {
    pub addr: SocketAddr,
    reviews: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestWebhook {
    /// Starts serving on 127.0.0.1 with an ephemeral port.
    pub async fn start(cert: &ServingCert) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_file_iter(&cert.cert_path)
            .context("reading webhook certificate")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&cert.key_path).context("reading webhook key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let reviews = Arc::new(AtomicUsize::new(0));
        let counter = reviews.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let counter = counter.clone();
                        async move { review(req, &counter).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            reviews,
            task,
        })
    }

    /// The URL to register in `clientConfig.url`.
    pub fn url(&self) -> String {
        format!("https://{}/validate", self.addr)
    }

    /// How many AdmissionReviews the webhook answered.
    pub fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn review(
    req: Request<hyper::body::Incoming>,
    counter: &AtomicUsize,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return Ok(Response::builder()
            .status(400)
            .body(Full::from("not JSON"))
            .unwrap_or_default());
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let request = &review["request"];
    let denied = request["object"]["metadata"]["labels"][DENY_LABEL] == "true";
    let mut response = json!({ "uid": request["uid"], "allowed": !denied });
    if denied {
        response["status"] = json!({ "code": 403, "message": DENIAL_MESSAGE });
    }
    let out = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::from(out.to_string()))
        .unwrap_or_default())
}
