//! The admission webhook: HTTPS requests from the API server in, AdmissionReview answers out.
//! [`server`] reads each body once (`admission::parse_review`), asks the pure review for a
//! verdict, answers, logs and counts it; [`mutate`] puts the pure per-tool credential patch into
//! the mutating webhook's answer; [`pods`] looks up the pod a CONNECT goes to, which the request
//! does not describe; [`tls`] is its certificate, reloaded on change.

pub mod mutate;
pub mod pods;
pub mod server;
pub mod tls;
