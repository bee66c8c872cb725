//! Admission decisions: AdmissionReview bodies in, verdicts out. [`request`] reads a body once
//! into a typed [`Request`]; the reviews (pure, one per kind) turn it into a [`Verdict`] behind
//! the [`Reviewer`] trait. Reviews never do I/O and never wait on the API server; the HTTPS
//! webhook around them, which answers with the verdict and counts its [`Decision`], is
//! `crate::webhook` in the shell.

pub mod baseline;
pub mod connect;
pub mod credentials;
pub mod mandate_resources;
pub mod namespace;
pub mod network_policy;
pub mod pod;
pub mod request;
pub mod reviewer;
pub mod secret;
pub mod snapshot;
/// A synthetic cluster for benchmarks and load tests: only in test builds, or with the
/// `fixtures` feature (the benches and the e2e crate enable it), never in the shipped binary.
#[cfg(any(test, feature = "fixtures"))]
#[doc(hidden)]
pub mod synthetic;
pub mod token;
pub mod verdict;
pub mod workload;

/// The one reason set and the one finding, defined in `crate::authority` (`authority::reason`).
pub use crate::authority::{Finding, Reason};
pub use request::{BadReview, ConnectKind, Object, Request, TargetPod, parse_review};
pub use reviewer::{Clock, FixedClock, MandateReviewer, SnapshotSource, SystemClock, review};
pub use snapshot::{AdmissionConfig, Snapshot, SnapshotBuilder, Unmanaged};
pub use verdict::{Decision, Mode, Verdict};

/// `auditAnnotations` key for the decision (`allowed`, `denied`, `warned`, ...). Keys carry no
/// prefix: the API server prefixes them with the webhook's name.
pub const AUDIT_DECISION: &str = "decision";
/// `auditAnnotations` key for the reason codes found, comma-separated, most important first
/// (`NoIdentity,TokenTTL`). The first one is also the `reason` metric label (`none` when there
/// is none).
pub const AUDIT_REASON: &str = "reason";
/// `auditAnnotations` key for the mode that applied (`enforce`, `warn`, `audit`); absent when
/// none did (the `mode` metric label is then `none`).
pub const AUDIT_MODE: &str = "mode";
/// `auditAnnotations` key for the agent the request concerns.
pub const AUDIT_AGENT: &str = "agent";
/// `auditAnnotations` key for the agent's owner.
pub const AUDIT_OWNER: &str = "owner";

/// Reviews one admission request. The server calls it on its async hot path, so it must answer
/// from memory (an authority snapshot) without blocking.
///
/// Contract with the server:
/// - Return the [`Verdict`]: the server words the answer from it ([`Verdict::respond`], with
///   the request's uid), takes the `decision`, `reason` and `mode` labels of
///   `mandate_admission_requests_total` and its log line from it, and the API server copies its
///   audit annotations into its audit log.
/// - A panic is caught, logged and answered with HTTP 500 (the API server then applies the
///   webhook's failurePolicy); it never takes the server down.
pub trait Reviewer: Send + Sync + 'static {
    fn review(&self, request: &Request) -> Verdict;

    /// The mutating webhook's answer (`/mutate/pods`): the verdict and the JSON patch that
    /// gives an agent pod its per-tool credentials (`credentials::mutate`). The same contract
    /// as [`Reviewer::review`]. A reviewer that gives no credentials keeps this default, which
    /// changes nothing.
    fn mutate(&self, _request: &Request) -> credentials::Mutation {
        credentials::Mutation {
            verdict: Verdict::ignored(),
            tools: Vec::new(),
            patch: Vec::new(),
        }
    }
}
