//! Prometheus metrics: observations from the webhook (labelled with the verdict's [`Decision`])
//! and the controllers in; OpenMetrics text out. Recording is lock-free apart from a read lock on
//! the label family, so it is cheap on the admission hot path. Never does I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::Decision;

/// Content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Admission latency buckets in seconds: 100 µs to 1 s (the API server's webhook timeout is
/// at most 30 s, but a healthy decision takes well under a millisecond).
const ADMISSION_BUCKETS: [f64; 13] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Reconcile latency buckets in seconds: 1 ms to 10 s (a reconcile makes API calls).
const RECONCILE_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `decision` label is the admission verdict's own [`Decision`]: one enum from the verdict
/// to the metrics.
impl EncodeLabelValue for Decision {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of `mandate_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// The API resource (`pods`, `deployments`, `toolbindings`, ...), or `unknown`.
    pub resource: Cow<'static, str>,
    /// `allowed`, `denied`, `warned`, `audited`, `skipped` (the verdict's), or `invalid` and
    /// `error` (the server's, when no verdict answered).
    pub decision: Decision,
    /// The primary reason code (`NoIdentity`, ...), `none` when nothing was found.
    pub reason: Cow<'static, str>,
    /// `enforce`, `warn`, `audit`, or `none` when no mode applied.
    pub mode: Cow<'static, str>,
}

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReconcileResult {
    Success,
    Error,
}

impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(
            encoder,
            match self {
                ReconcileResult::Success => "success",
                ReconcileResult::Error => "error",
            },
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: Cow<'static, str>,
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: Cow<'static, str>,
}

/// Labels of `mandate_authz_decisions_total`: all from closed sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    /// `grpc` (Envoy ext_authz), `http` (its HTTP variant and forward-auth) or `authzen`.
    protocol: Cow<'static, str>,
    /// `allowed` or `denied`.
    decision: Cow<'static, str>,
    /// The reason code, `Allowed` when allowed.
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: bool,
}

/// Labels of `mandate_namespace_mode_weakened_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeakenedLabels {
    by_approver: bool,
}

/// Labels of `mandate_watch_healthy`: the index's own watch names, a closed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    watch: Cow<'static, str>,
}

fn admission_histogram() -> Histogram {
    Histogram::new(ADMISSION_BUCKETS)
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

/// Every metric mandate exports, and the registry that encodes them. Cloning is cheap and clones
/// share the same series, so hand a clone to each component.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    admission_requests: Family<AdmissionLabels, Counter>,
    admission_duration: Histogram,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    agents: Family<ReadyLabels, Gauge>,
    escalation_paths: Gauge,
    unmanaged_workloads: Gauge,
    authz_decisions: Family<AuthzLabels, Counter>,
    authz_duration: Histogram,
    mode_weakened: Family<WeakenedLabels, Counter>,
    watch_healthy: Family<WatchLabels, Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every series registered (all names start with `mandate_`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mandate");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by resource, decision, primary reason code and mode",
            admission_requests.clone(),
        );
        let admission_duration = admission_histogram();
        registry.register_with_unit(
            "admission_duration",
            "Time from receiving an admission request to answering it",
            Unit::Seconds,
            admission_duration.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, by kind",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let agents = Family::<ReadyLabels, Gauge>::default();
        registry.register("agents", "AgentIdentities by readiness", agents.clone());
        let escalation_paths = Gauge::default();
        registry.register(
            "escalation_paths",
            "Delegation chains that reach a tool the delegator does not hold",
            escalation_paths.clone(),
        );
        let unmanaged_workloads = Gauge::default();
        registry.register(
            "unmanaged_workloads",
            "ServiceAccounts in mandate namespaces that no identity owns, and legacy token Secrets \
             there or of agents (what mandate inventory lists as unmanaged, pods aside)",
            unmanaged_workloads.clone(),
        );
        let authz_decisions = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Tool calls decided by the decision service, by protocol, decision and reason code",
            authz_decisions.clone(),
        );
        let authz_duration = admission_histogram();
        registry.register_with_unit(
            "authz_duration",
            "Time from receiving a tool-call check to answering it (TokenReview included)",
            Unit::Seconds,
            authz_duration.clone(),
        );
        let mode_weakened = Family::<WeakenedLabels, Counter>::default();
        registry.register(
            "namespace_mode_weakened",
            "Changes of a namespace's mandate.dev/mode that weakened it and were let through, by \
             whether an approver made them",
            mode_weakened.clone(),
        );
        let watch_healthy = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "watch_healthy",
            "1 while a watch of the index works, 0 once it has failed for longer than the stall \
             bound (readiness falls with it)",
            watch_healthy.clone(),
        );
        // Both readiness series exist from the start, so dashboards see 0 rather than nothing.
        agents.get_or_create(&ReadyLabels { ready: true }).set(0);
        agents.get_or_create(&ReadyLabels { ready: false }).set(0);
        for by_approver in [true, false] {
            mode_weakened
                .get_or_create(&WeakenedLabels { by_approver })
                .inc_by(0);
        }
        Metrics {
            registry: Arc::new(registry),
            admission_requests,
            admission_duration,
            reconciles,
            reconcile_duration,
            agents,
            escalation_paths,
            unmanaged_workloads,
            authz_decisions,
            authz_duration,
            mode_weakened,
            watch_healthy,
        }
    }

    /// Counts one weakening of a namespace's mode let through.
    pub fn record_mode_weakened(&self, by_approver: bool) {
        self.mode_weakened
            .get_or_create(&WeakenedLabels { by_approver })
            .inc();
    }

    /// Sets whether the watch `watch` (one of the index's watch names) is healthy.
    pub fn set_watch_healthy(&self, watch: impl Into<Cow<'static, str>>, healthy: bool) {
        self.watch_healthy
            .get_or_create(&WatchLabels {
                watch: watch.into(),
            })
            .set(i64::from(healthy));
    }

    /// Counts one tool-call decision and observes how long it took.
    pub fn record_authz(
        &self,
        protocol: &'static str,
        allowed: bool,
        reason: &'static str,
        elapsed: Duration,
    ) {
        let labels = AuthzLabels {
            protocol: protocol.into(),
            decision: if allowed { "allowed" } else { "denied" }.into(),
            reason: reason.into(),
        };
        self.authz_decisions.get_or_create(&labels).inc();
        self.authz_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one answered admission request and observes how long it took.
    pub fn record_admission(&self, labels: &AdmissionLabels, elapsed: Duration) {
        self.admission_requests.get_or_create(labels).inc();
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one reconcile of `kind` (`AgentIdentity`, `ToolBinding`, `DelegationPolicy`).
    pub fn record_reconcile(
        &self,
        kind: impl Into<Cow<'static, str>>,
        result: ReconcileResult,
        elapsed: Duration,
    ) {
        let kind = kind.into();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.clone() })
            .observe(elapsed.as_secs_f64());
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
    }

    /// Sets the number of AgentIdentities that are ready and not ready.
    pub fn set_agents(&self, ready: u64, not_ready: u64) {
        self.agents
            .get_or_create(&ReadyLabels { ready: true })
            .set(saturating_i64(ready));
        self.agents
            .get_or_create(&ReadyLabels { ready: false })
            .set(saturating_i64(not_ready));
    }

    pub fn set_escalation_paths(&self, count: u64) {
        self.escalation_paths.set(saturating_i64(count));
    }

    /// Sets the number of unmanaged ServiceAccounts and legacy token Secrets
    /// (`Snapshot::unmanaged`).
    pub fn set_unmanaged_workloads(&self, count: u64) {
        self.unmanaged_workloads.set(saturating_i64(count));
    }

    /// All series as OpenMetrics text ([`OPENMETRICS_CONTENT_TYPE`]), ending in `# EOF`.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied_pod() -> AdmissionLabels {
        AdmissionLabels {
            resource: "pods".into(),
            decision: Decision::Denied,
            reason: "NoIdentity".into(),
            mode: "enforce".into(),
        }
    }

    #[test]
    fn an_admission_is_counted_with_all_four_labels_and_timed() -> Result<(), fmt::Error> {
        let metrics = Metrics::new();
        metrics.record_admission(&denied_pod(), Duration::from_micros(300));
        metrics.record_admission(&denied_pod(), Duration::from_micros(300));
        let text = metrics.encode()?;
        assert!(
            text.contains(
                r#"mandate_admission_requests_total{resource="pods",decision="denied",reason="NoIdentity",mode="enforce"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("mandate_admission_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"mandate_admission_duration_seconds_bucket{le="0.0005"} 2"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        Ok(())
    }

    #[test]
    fn reconciles_and_gauges_are_exported_under_their_documented_names() -> Result<(), fmt::Error> {
        let metrics = Metrics::new();
        metrics.record_reconcile(
            "AgentIdentity",
            ReconcileResult::Success,
            Duration::from_millis(20),
        );
        metrics.set_agents(3, 1);
        metrics.set_escalation_paths(2);
        metrics.set_unmanaged_workloads(5);
        let text = metrics.encode()?;
        for expected in [
            r#"mandate_reconciles_total{kind="AgentIdentity",result="success"} 1"#,
            r#"mandate_reconcile_duration_seconds_count{kind="AgentIdentity"} 1"#,
            r#"mandate_agents{ready="true"} 3"#,
            r#"mandate_agents{ready="false"} 1"#,
            "mandate_escalation_paths 2",
            "mandate_unmanaged_workloads 5",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        Ok(())
    }

    #[test]
    fn weakenings_and_watch_health_are_exported_under_their_documented_names()
    -> Result<(), fmt::Error> {
        let metrics = Metrics::new();
        let text = metrics.encode()?;
        assert!(
            text.contains(r#"mandate_namespace_mode_weakened_total{by_approver="true"} 0"#),
            "both series exist from the start:\n{text}"
        );
        metrics.record_mode_weakened(false);
        metrics.set_watch_healthy("namespaces", false);
        metrics.set_watch_healthy("secrets", true);
        let text = metrics.encode()?;
        for expected in [
            r#"mandate_namespace_mode_weakened_total{by_approver="false"} 1"#,
            r#"mandate_watch_healthy{watch="namespaces"} 0"#,
            r#"mandate_watch_healthy{watch="secrets"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        Ok(())
    }
}
