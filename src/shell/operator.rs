//! `mandate run`: the long-running process. Flags, the cluster's watches (one index shared by
//! everything) and signals in; out, on every replica the admin server, the admission webhook,
//! the decision service gateways ask about tool calls,
//! the admission snapshots it publishes for the webhook and the gauges it refreshes, and the
//! three controllers, which write only while this replica holds the leader Lease. Each of the
//! index's subscriptions is moved to the task that polls it (the snapshot publisher, the
//! controllers); none is kept here, where nothing would poll it. Returns when a signal asks it
//! to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::{FutureExt, StreamExt};
use k8s_openapi::jiff::SignedDuration;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::admission::{AdmissionConfig, MandateReviewer, Mode, Snapshot, SnapshotSource};
use crate::api::conditions;
use crate::authority;
use crate::authz::Authorizer;
use crate::authz::server::serve as serve_authz;
use crate::authz::tokens::{ApiTokenReviewer, TokenVerifier};
use crate::cli::risk_floor::RiskFloorArgs;
use crate::controller::{self, Settings};
use crate::index::{self, Stores};
use crate::project::{DnsEgress, NetworkConfig, TrustDomain};
use crate::telemetry::{LogFormat, Metrics, Readiness, serve_admin};
use crate::webhook::namespaces::ModeWeakenings;
use crate::webhook::server::{WebhookConfig, serve as serve_webhook};
use crate::webhook::tls::TlsFiles;

/// Settings of `mandate run`; every flag can also come from the environment.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the plain-HTTP admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "MANDATE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// SPIFFE trust domain of projected identities (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT).
    #[arg(long, env = "MANDATE_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// How far ahead a High-risk tool's validUntil may lie, in hours.
    #[arg(long, env = "MANDATE_MAX_HIGH_RISK_HOURS", default_value_t = 24)]
    pub max_high_risk_hours: i64,
    #[command(flatten)]
    pub risk_floor: RiskFloorArgs,
    /// Namespace of the cluster DNS pods agents may query; empty opens no DNS egress.
    #[arg(long, env = "MANDATE_DNS_NAMESPACE", default_value = "kube-system")]
    pub dns_namespace: String,
    /// Label (key=value) picking the cluster DNS pods.
    #[arg(long, env = "MANDATE_DNS_LABEL", default_value = "k8s-app=kube-dns")]
    pub dns_label: String,
    /// How often every object is reconciled even when nothing changed, in seconds.
    #[arg(long, env = "MANDATE_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Elect a leader through a Lease; without it this replica always writes.
    #[arg(long, env = "MANDATE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (mandate's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mandate-system")]
    pub namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "MANDATE_LEASE_NAME", default_value = "mandate-controller")]
    pub lease_name: String,
    /// Address of the HTTPS admission webhook.
    #[arg(long, env = "MANDATE_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Address of the decision service (Envoy ext_authz over gRPC, TLS with the webhook's
    /// certificate) that gateways ask about each tool call.
    #[arg(long, env = "MANDATE_AUTHZ_ADDR", default_value = "0.0.0.0:9444")]
    pub authz_addr: SocketAddr,
    /// PEM certificate of the webhook and the decision service (reloaded when the file changes).
    #[arg(long, env = "MANDATE_TLS_CERT", default_value = "/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key of the webhook and the decision service (reloaded when the file changes).
    #[arg(long, env = "MANDATE_TLS_KEY", default_value = "/tls/tls.key")]
    pub tls_key: PathBuf,
    /// PEM file of the CA that signed the API server's client certificate for webhooks (its
    /// admission configuration): with it, the webhook refuses every TLS client without a
    /// certificate signed by that CA. Read at start.
    #[arg(long, env = "MANDATE_WEBHOOK_CLIENT_CA")]
    pub webhook_client_ca: Option<PathBuf>,
    /// PEM file of the CA that signed the gateways' client certificates: with it, the decision
    /// service refuses every TLS client without a certificate signed by that CA, and believes
    /// the SPIFFE IDs (`source.principal`) those gateways assert. Without it, anyone who
    /// reaches the port may ask, and only agents' tokens identify callers. Read at start.
    #[arg(long, env = "MANDATE_AUTHZ_CLIENT_CA")]
    pub authz_client_ca: Option<PathBuf>,
    /// How long a watch may fail before /readyz turns false (seconds, `s` or `m` suffix
    /// allowed: 60, 60s, 2m).
    #[arg(long, env = "MANDATE_WATCH_STALL_BOUND", default_value = "60s", value_parser = parse_bound)]
    pub watch_stall_bound: Duration,
    /// Mode for agent pods in namespaces without a mandate.dev/mode label: enforce, warn or audit.
    #[arg(long, env = "MANDATE_DEFAULT_MODE", default_value = "enforce", value_parser = crate::cli::parse_mode)]
    pub default_mode: Mode,
    /// Group whose members may approve High-risk ToolBindings and Pod Security exemptions (and
    /// are not the agent's owner).
    #[arg(
        long,
        env = "MANDATE_APPROVER_GROUP",
        default_value = "mandate:approvers"
    )]
    pub approver_group: String,
    /// The API server's token audiences (its --api-audiences, comma-separated): a TokenRequest
    /// for them is a token for the API server, which every agent may have.
    #[arg(
        long,
        env = "MANDATE_API_AUDIENCES",
        value_delimiter = ',',
        default_value = crate::admission::snapshot::DEFAULT_API_AUDIENCE
    )]
    pub api_audiences: Vec<String>,
    /// The username mandate authenticates as (its NetworkPolicy writes are its own, and it may
    /// delete its projections). Empty: asked of the API server at start (a SelfSubjectReview).
    #[arg(long, env = "MANDATE_OPERATOR_USER", default_value = "")]
    pub operator_user: String,
    /// Who besides mandate may delete its projections (comma-separated usernames): Kubernetes'
    /// garbage collector and namespace controller.
    #[arg(
        long,
        env = "MANDATE_PROJECTION_DELETERS",
        value_delimiter = ',',
        default_value = DEFAULT_PROJECTION_DELETERS_FLAG
    )]
    pub projection_deleters: Vec<String>,
    /// Log format.
    #[arg(long, env = "MANDATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "MANDATE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A duration in whole seconds: `90`, `90s` or `2m`; at least one second.
fn parse_bound(value: &str) -> Result<Duration, String> {
    let (number, unit) = match value.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (value.strip_suffix('s').unwrap_or(value), 1),
    };
    let seconds: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a duration such as 60, 60s or 2m"))?;
    match seconds.checked_mul(unit) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("{value:?}: the bound must be at least one second")),
    }
}

/// [`crate::admission::snapshot::DEFAULT_PROJECTION_DELETERS`] as the flag's default.
const DEFAULT_PROJECTION_DELETERS_FLAG: &str = "system:serviceaccount:kube-system:generic-garbage-collector,system:serviceaccount:kube-system:namespace-controller,system:kube-controller-manager";

impl RunArgs {
    fn admission(&self, operator_user: String) -> AdmissionConfig {
        AdmissionConfig {
            default_mode: self.default_mode,
            approver_group: self.approver_group.clone(),
            own_namespace: self.namespace.clone(),
            api_audiences: self.api_audiences.clone(),
            operator_users: vec![operator_user],
            projection_deleters: self
                .projection_deleters
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Who mandate is: `--operator-user`, or the API server's answer to a SelfSubjectReview.
    /// Failing to learn it stops the start: every write of mandate's own would be judged as
    /// someone else's.
    async fn operator_user(&self, client: &Client) -> anyhow::Result<String> {
        if !self.operator_user.is_empty() {
            return Ok(self.operator_user.clone());
        }
        use k8s_openapi::api::authentication::v1::SelfSubjectReview;
        let review = kube::Api::<SelfSubjectReview>::all(client.clone())
            .create(&kube::api::PostParams::default(), &SelfSubjectReview::default())
            .await
            .context("asking the API server who mandate is (SelfSubjectReview); set --operator-user to skip")?;
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .context("the SelfSubjectReview named no user; set --operator-user")
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        let trust_domain = TrustDomain::parse(&self.trust_domain)
            .with_context(|| format!("--trust-domain {:?}", self.trust_domain))?;
        let dns = if self.dns_namespace.is_empty() {
            None
        } else {
            let (key, value) = self
                .dns_label
                .split_once('=')
                .with_context(|| format!("--dns-label {:?} is not key=value", self.dns_label))?;
            Some(DnsEgress {
                namespace: self.dns_namespace.clone(),
                pod_labels: [(key.to_owned(), value.to_owned())].into(),
                ..DnsEgress::default()
            })
        };
        Ok(Settings {
            trust_domain,
            network: NetworkConfig { dns },
            authority: authority::Config {
                max_high_risk_validity: SignedDuration::from_hours(self.max_high_risk_hours),
                risk_floor: self.risk_floor.floor(),
            },
            resync: Duration::from_secs(self.resync_seconds.max(1)),
        })
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let client = Client::try_default()
        .await
        .context("connecting to the API server (kubeconfig or in-cluster config)")?;
    let metrics = Metrics::new();
    let readiness = Readiness::not_ready("watches have not listed yet");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        .shared()
    };

    let index = index::build(&client, settings.authority);
    let stores = index.stores.clone();
    for watch in index.watches {
        tokio::spawn(watch);
    }
    let index::Subscriptions {
        controllers: controller_subscriptions,
        snapshot: snapshot_subscriptions,
        pod_presence,
    } = index.subscriptions;
    let snapshots = SnapshotSource::default();
    tokio::spawn(publish_snapshots(
        snapshot_subscriptions.changes(),
        index.listed.clone(),
        stores.clone(),
        snapshots.clone(),
    ));
    tokio::spawn(keep_readiness(
        snapshots.clone(),
        index.listed.clone(),
        args.watch_stall_bound,
        readiness.clone(),
        metrics.clone(),
    ));
    tokio::spawn(keep_gauges(
        stores.authority.clone(),
        snapshots.clone(),
        metrics.clone(),
    ));

    let admin = serve_admin(
        args.admin_addr,
        metrics.clone(),
        readiness.clone(),
        stopped(),
    )
    .await
    .context("starting the admin server")?;

    let leader = if args.leader_elect {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.namespace)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .with_context(|| {
                format!(
                    "preparing the leader Lease {}/{}",
                    args.namespace, args.lease_name
                )
            })?;
        let (leader, _task) = manager.watch().await;
        leader
    } else {
        watch::channel(true).1
    };

    let tokens = TokenVerifier::new(Arc::new(ApiTokenReviewer::new(client.clone())));
    // A deleted agent pod's tokens are refused at once (pods the watch does not know are
    // looked up by name).
    let pod_events = tokens.track_pods(Arc::new(client.clone()));
    tokio::spawn(crate::authz::pods::follow(pod_presence, pod_events));
    let authorizer = Authorizer::new(
        snapshots.clone(),
        tokens,
        settings.trust_domain.clone(),
        metrics.clone(),
    );
    let authz = serve_authz(
        args.authz_addr,
        TlsFiles::new(args.tls_cert.clone(), args.tls_key.clone()),
        args.authz_client_ca.as_deref(),
        authorizer,
        stopped(),
    )
    .await
    .context("starting the decision service")?;

    let operator_user = args.operator_user(&client).await?;
    tracing::info!(%operator_user, "mandate's own writes are those of this user");
    let admission = args.admission(operator_user);
    let reviewer = Arc::new(MandateReviewer::new(snapshots, admission.clone()));
    let mut webhook_config = WebhookConfig::new(
        args.webhook_addr,
        TlsFiles::new(args.tls_cert.clone(), args.tls_key.clone()),
    );
    webhook_config.client_ca = args.webhook_client_ca.clone();
    let webhook = serve_webhook(
        webhook_config,
        reviewer,
        // CONNECTs (exec, attach, port-forward) name their pod only: it is looked up here.
        Arc::new(client.clone()),
        Arc::new(ModeWeakenings::new(
            client.clone(),
            admission,
            metrics.clone(),
        )),
        metrics.clone(),
        stopped(),
    )
    .await
    .context("starting the admission webhook")?;

    let ctx = Arc::new(controller::Context::new(
        client,
        stores,
        settings,
        metrics,
        leader.clone(),
    ));
    let controllers = tokio::spawn(controller::run(ctx, controller_subscriptions, stopped()));
    log_leadership(leader);

    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    let _ = admin.stopped().await;
    let _ = webhook.stopped().await;
    let _ = authz.stopped().await;
    Ok(())
}

fn log_leadership(mut leader: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let leading = *leader.borrow_and_update();
            tracing::info!(leading, "leadership");
            if leader.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Publishes the admission snapshot: first once every watch has listed (until then the
/// webhook is not ready and refuses agent pods), then after every batch of changes, at most
/// every 10 ms. The authority inside is the live one (an O(1) clone); only the namespaces'
/// modes and the token Secrets are gathered here.
async fn publish_snapshots(
    changes: impl futures::Stream<Item = ()> + Send + 'static,
    listed: index::Listed,
    stores: Stores,
    snapshots: SnapshotSource,
) {
    // Drain the subscription from the start, even before every watch has listed: a watch
    // waits for its slowest subscriber, and an undrained one would hold back its first list.
    let changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn({
        let changed = changed.clone();
        changes.for_each(move |()| {
            changed.notify_one();
            futures::future::ready(())
        })
    });
    listed.wait_all().await;
    loop {
        let started = std::time::Instant::now();
        match stores.authority.current().await {
            Ok(authority) => {
                let authority = Arc::new(authority);
                let snapshot = Snapshot::from_objects(
                    authority.clone(),
                    stores.namespaces.state().iter().map(|n| n.metadata.clone()),
                    stores.secrets.state().iter().map(|s| s.metadata.clone()),
                );
                snapshots.store(Some(Arc::new(snapshot)));
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot published"
                );
            }
            // The previous snapshot stays; the next change tries again.
            Err(error) => tracing::warn!(%error, "admission snapshot not refreshed"),
        }
        changed.notified().await;
        // Coalesce a burst (a kubectl apply of many objects) without making the webhook lag
        // behind the API server by more than a few milliseconds.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How often readiness and `mandate_watch_healthy` are brought up to date.
const READINESS_EVERY: Duration = Duration::from_secs(1);

/// Keeps `/readyz` and `mandate_watch_healthy` current: not ready until the first snapshot is
/// published (every watch listed), then not ready while a watch has been failing for longer
/// than `bound`, naming it. Each change is logged once.
async fn keep_readiness(
    snapshots: SnapshotSource,
    listed: index::Listed,
    bound: Duration,
    readiness: Readiness,
    metrics: Metrics,
) {
    let mut every = tokio::time::interval(READINESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<Result<(), String>> = None;
    loop {
        every.tick().await;
        let judged = listed.health().judge(bound, std::time::Instant::now());
        for (watch, stalled) in &judged {
            metrics.set_watch_healthy(watch.clone(), stalled.is_none());
        }
        let stalled: Vec<index::Stalled> = judged.into_iter().filter_map(|(_, s)| s).collect();
        let published = snapshots.load().is_some();
        let now = readiness_of(published, &listed.missing(), &stalled);
        match &now {
            Ok(()) => readiness.set_ready(),
            Err(reason) => readiness.set_not_ready(reason.clone()),
        }
        if reported.as_ref() != Some(&now) {
            match &now {
                Ok(()) => tracing::info!("ready"),
                Err(reason) if published => tracing::warn!(%reason, "not ready"),
                Err(reason) => tracing::info!(%reason, "not ready"),
            }
            reported = Some(now);
        }
    }
}

/// Whether mandate may be called: the first snapshot `published` (before it, `missing` names
/// the watches still listing) and no watch `stalled`; otherwise why not, naming each watch.
fn readiness_of(
    published: bool,
    missing: &[&str],
    stalled: &[index::Stalled],
) -> Result<(), String> {
    if !published {
        return Err(if missing.is_empty() {
            "watches listed; building the first snapshot".to_owned()
        } else {
            format!("watches have not listed yet: {}", missing.join(", "))
        });
    }
    if stalled.is_empty() {
        return Ok(());
    }
    let watches: Vec<String> = stalled
        .iter()
        .map(|s| {
            format!(
                "watch {} failing for {}s ({})",
                s.watch,
                s.failing_for.as_secs(),
                shortened(&s.last_error, ERROR_IN_READINESS)
            )
        })
        .collect();
    Err(format!(
        "the cluster view is stale: {}; mandate's RBAC or the API server may be at fault",
        watches.join("; ")
    ))
}

/// How much of a watch's last error `/readyz` quotes (kube's errors carry the whole API
/// Status; the log has all of it).
const ERROR_IN_READINESS: usize = 240;

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// Keeps the cluster-wide gauges (agents ready, escalation paths, the unmanaged) current. They
/// walk every identity, every delegation graph and the mandate namespaces' ServiceAccounts, so
/// every few seconds rather than on every change.
async fn keep_gauges(live: index::LiveAuthority, snapshots: SnapshotSource, metrics: Metrics) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        update_gauges(&live.latest(), snapshots.load().as_deref(), &metrics);
    }
}

/// Sets the gauges from the live authority and the latest admission snapshot (`None` until the
/// first is published: the unmanaged gauge keeps its value until then).
fn update_gauges(authority: &authority::Authority, snapshot: Option<&Snapshot>, metrics: &Metrics) {
    let now = controller::now();
    let (mut ready, mut not_ready, mut paths) = (0u64, 0u64, 0u64);
    for namespace in authority.namespaces() {
        paths += authority
            .delegation_graph(namespace, now)
            .violations()
            .len() as u64;
        for identity in authority.identities_in(namespace) {
            let is_ready = identity
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
            if is_ready { ready += 1 } else { not_ready += 1 }
        }
    }
    metrics.set_agents(ready, not_ready);
    metrics.set_escalation_paths(paths);
    if let Some(snapshot) = snapshot {
        // The operator watches only agent-labelled pods, which never run as `default`: the
        // `default` ServiceAccount never counts.
        metrics.set_unmanaged_workloads(snapshot.unmanaged(|_, _| false).count());
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::MODE_LABEL;

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn the_stall_bound_reads_seconds_and_minutes() {
        assert_eq!(parse_bound("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_bound("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_bound("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_bound("0s").is_err());
        assert!(parse_bound("soon").is_err());
    }

    #[test]
    fn readiness_waits_for_the_first_snapshot_then_falls_naming_each_stalled_watch() {
        assert_eq!(
            readiness_of(false, &["Namespace"], &[]),
            Err("watches have not listed yet: Namespace".to_owned())
        );
        assert_eq!(readiness_of(true, &[], &[]), Ok(()));
        let stalled = index::Stalled {
            watch: "namespaces".to_owned(),
            failing_for: Duration::from_secs(75),
            last_error: "403 forbidden".to_owned(),
        };
        let reason = readiness_of(true, &[], &[stalled])
            .err()
            .unwrap_or_default();
        assert!(
            reason.contains("watch namespaces failing for 75s (403 forbidden)"),
            "{reason}"
        );
        assert_eq!(shortened("ééé", 3), "é...");
        assert_eq!(shortened("short", 10), "short");
    }

    #[test]
    fn the_projection_deleters_flag_defaults_to_admissions_default() {
        let flag: Vec<&str> = DEFAULT_PROJECTION_DELETERS_FLAG.split(',').collect();
        assert_eq!(
            flag,
            crate::admission::snapshot::DEFAULT_PROJECTION_DELETERS
        );
    }

    #[test]
    fn the_unmanaged_gauge_counts_what_the_published_snapshot_knows() -> anyhow::Result<()> {
        let authority = authority::Authority::builder()
            .service_account(ServiceAccount {
                metadata: meta(Some("agents"), "legacy"),
                ..ServiceAccount::default()
            })
            .service_account(ServiceAccount {
                metadata: meta(Some("agents"), "default"),
                ..ServiceAccount::default()
            })
            .build();
        let mut namespace = meta(None, "agents");
        namespace.labels = Some([(MODE_LABEL.to_owned(), "enforce".to_owned())].into());
        let snapshot =
            Snapshot::from_objects(authority.clone(), [namespace], Vec::<ObjectMeta>::new());
        let metrics = Metrics::new();

        update_gauges(&authority, None, &metrics);
        assert!(
            metrics
                .encode()?
                .contains("mandate_unmanaged_workloads 0\n")
        );
        update_gauges(&authority, Some(&snapshot), &metrics);
        let text = metrics.encode()?;
        assert!(
            text.contains("mandate_unmanaged_workloads 1\n"),
            "the unused default ServiceAccount must not count:\n{text}"
        );
        Ok(())
    }
}
