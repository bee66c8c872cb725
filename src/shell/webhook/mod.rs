//! The admission webhook: HTTPS requests from the API server in, AdmissionReview answers out.
//! [`server`] reads each body once (`admission::parse_review`), asks the pure review for a
//! verdict, answers, logs and counts it; [`tls`] is its certificate, reloaded on change.

pub mod server;
pub mod tls;
