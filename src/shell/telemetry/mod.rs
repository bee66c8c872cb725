//! Telemetry: log set-up in, and out to the world: JSON (or text) log lines on stderr, Prometheus
//! metrics recorded by the webhook and the controllers, and the plain-HTTP admin server that
//! exposes them (`/metrics`, `/healthz`, `/readyz`). Never decides anything about admission.

pub mod admin;
pub mod logging;
pub mod metrics;

pub use admin::{AdminError, AdminServer, Readiness, serve_admin};
pub use logging::{LogFormat, LoggingError, init_logging};
pub use metrics::{AdmissionLabels, Metrics, ReconcileResult};
