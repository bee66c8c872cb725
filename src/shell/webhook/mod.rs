//! The admission webhook: HTTPS requests from the API server in, AdmissionReview answers out.
//! [`server`] reads each body once (`admission::parse_review`), asks the pure review for a
//! verdict, answers, logs and counts it; [`mutate`] puts the pure per-tool credential patch into
//! the mutating webhook's answer; [`pods`] looks up the pod a CONNECT goes to, which the request
//! does not describe; [`namespaces`] records the namespace mode weakenings a verdict let through;
//! [`tls`] is its certificate, reloaded on change, and the optional check of the caller's client
//! certificate.

pub mod mutate;
pub mod namespaces;
pub mod pods;
pub mod server;
pub mod tls;
