//! Admission rules end to end in-process: real `admission.k8s.io/v1` AdmissionReview JSON (files
//! under `tests/fixtures/admission/`, one per rule) in through `server::parse_review`, reviewed
//! by `MandateReviewer` over a snapshot built from manifests, and out through `server::respond`
//! as the JSON the API server would read: allowed, the message with its codes, warnings and
//! audit annotations; and through the webhook's routes, out as the
//! `mandate_admission_requests_total` series each decision is counted under. CONNECTs (exec,
//! attach, port-forward) go through the routes, which look their pod up in a fixed set of pods
//! here. No network.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use mandate::admission::{
    AdmissionConfig, FixedClock, MandateReviewer, Reviewer, Snapshot, SnapshotSource,
};
use mandate::api::{AgentIdentity, DelegationPolicy, ToolBinding};
use mandate::authority::{Authority, Config};
use mandate::telemetry::Metrics;
use mandate::webhook::pods::{NoPodLookup, PodLookup, PodLookupError};
use mandate::webhook::server::{self, WebhookConfig, parse_review, respond};
use mandate::webhook::tls::TlsFiles;
use serde_json::{Value, json};

/// The instant the fixtures were written for.
const NOW: &str = "2026-03-02T10:00:00Z";

// ---------------------------------------------------------------------------------------------
// The cluster the fixtures meet

fn ready() -> Value {
    json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "",
        "lastTransitionTime": "2026-03-01T08:00:00Z"}]})
}

fn identity(
    namespace: &str,
    name: &str,
    spec: Value,
    status: Option<Value>,
) -> Result<AgentIdentity> {
    let mut object = json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).with_context(|| format!("identity {name}"))
}

fn binding(namespace: &str, name: &str, agent: &str, tool: &str) -> Result<ToolBinding> {
    serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"agent": agent, "tools": [{"name": tool, "actions": ["read"],
            "destination": {"service": {"name": tool}}}]},
    }))
    .with_context(|| format!("binding {name}"))
}

fn meta(
    namespace: Option<&str>,
    name: &str,
    labels: Value,
    annotations: Value,
) -> Result<ObjectMeta> {
    Ok(serde_json::from_value(json!({
        "name": name, "namespace": namespace, "labels": labels, "annotations": annotations,
    }))?)
}

/// `agents` (enforce): `researcher` (Ready, bound), `drafter` (bound, not Ready), `idle` (Ready,
/// no tools), all three allowing token audience `mandate.dev/tools`; `payer` (owned by user
/// alice); a legacy token Secret of `researcher`. `agents-warn` and `agents-audit` are empty;
/// `team-b` is unlabelled and has `scraper`.
fn snapshot() -> Result<Snapshot> {
    let group = |name: &str| json!({"kind": "Group", "name": name});
    let tools = json!({"audiences": ["mandate.dev/tools"]});
    let identities = vec![
        identity(
            "agents",
            "researcher",
            json!({"owner": group("team-research"), "purpose": "answers questions",
                "credentials": tools}),
            Some(ready()),
        )?,
        identity(
            "agents",
            "drafter",
            json!({"owner": group("team-research"), "purpose": "drafts", "credentials": tools}),
            None,
        )?,
        identity(
            "agents",
            "idle",
            json!({"owner": group("team-research"), "purpose": "waits", "credentials": tools}),
            Some(ready()),
        )?,
        identity(
            "agents",
            "payer",
            json!({"owner": {"kind": "User", "name": "alice"}, "class": "TransactionExecutor",
                "purpose": "pays invoices"}),
            Some(ready()),
        )?,
        identity(
            "team-b",
            "scraper",
            json!({"owner": group("team-b"), "purpose": "scrapes"}),
            Some(ready()),
        )?,
    ];
    let bindings = vec![
        binding("agents", "research-tools", "researcher", "web-search")?,
        binding("agents", "drafter-tools", "drafter", "wiki")?,
        binding("team-b", "scraper-tools", "scraper", "web")?,
    ];
    let authority = Authority::from_objects(
        Config::default(),
        identities,
        bindings,
        Vec::<DelegationPolicy>::new(),
        Vec::<ServiceAccount>::new(),
    );
    let mode = |m: &str| json!({"mandate.dev/mode": m});
    let namespaces = vec![
        meta(None, "agents", mode("enforce"), json!({}))?,
        meta(None, "agents-warn", mode("warn"), json!({}))?,
        meta(None, "agents-audit", mode("audit"), json!({}))?,
        meta(None, "team-b", json!({}), json!({}))?,
    ];
    let secrets = vec![
        meta(
            Some("agents"),
            "researcher-token",
            json!({}),
            json!({"kubernetes.io/service-account.name": "researcher"}),
        )?,
        meta(Some("agents"), "researcher-prompts", json!({}), json!({}))?,
    ];
    Ok(Snapshot::from_objects(authority, namespaces, secrets))
}

// ---------------------------------------------------------------------------------------------
// Reviewing a fixture

/// The AdmissionReview answer, as JSON.
struct Answer(Value);

impl Answer {
    fn response(&self) -> &Value {
        &self.0["response"]
    }

    fn allowed(&self) -> bool {
        self.response()["allowed"] == json!(true)
    }

    fn message(&self) -> &str {
        self.response()["status"]["message"]
            .as_str()
            .unwrap_or_default()
    }

    fn warnings(&self) -> Vec<&str> {
        self.response()["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.response()["auditAnnotations"][key].as_str()
    }

    fn reasons(&self) -> Vec<&str> {
        self.annotation("reason")
            .map(|r| r.split(',').filter(|c| !c.is_empty()).collect())
            .unwrap_or_default()
    }
}

fn reviewer(snapshot: Option<Snapshot>) -> Result<MandateReviewer> {
    let source: SnapshotSource = Arc::new(ArcSwapOption::new(snapshot.map(Arc::new)));
    let now: Timestamp = NOW.parse()?;
    Ok(MandateReviewer::new(source, AdmissionConfig::default()).with_clock(FixedClock(now)))
}

fn review_with(reviewer: &MandateReviewer, fixture: &str) -> Result<Answer> {
    let body = fixture_body(fixture)?;
    let request = parse_review(&body).with_context(|| format!("parsing {fixture}"))?;
    let verdict = reviewer.review(&request);
    let answer = serde_json::to_value(respond(&request, &verdict))?;
    ensure!(
        answer["response"]["uid"] == json!(request.uid),
        "the answer must echo the request's uid"
    );
    Ok(Answer(answer))
}

fn review(fixture: &str) -> Result<Answer> {
    review_with(&reviewer(Some(snapshot()?))?, fixture)
}

fn fixture_body(fixture: &str) -> Result<Vec<u8>> {
    let path = format!(
        "{}/tests/fixtures/admission/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).with_context(|| format!("reading {path}"))
}

/// Asserts a denial in enforce mode carrying exactly `codes`, each named in the message.
fn assert_denied(answer: &Answer, codes: &[&str]) {
    assert!(!answer.allowed(), "expected a denial: {:#}", answer.0);
    assert_eq!(answer.reasons(), codes, "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("denied"));
    assert_eq!(answer.annotation("mode"), Some("enforce"));
    assert_eq!(answer.response()["status"]["code"], json!(403));
    for code in codes {
        assert!(
            answer.message().contains(&format!("{code}: ")),
            "message lacks {code}: {}",
            answer.message()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

#[test]
fn a_pod_running_as_its_ready_bound_identity_is_allowed_and_annotated() -> Result<()> {
    let answer = review("pod-create.json")?;
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("allowed"));
    assert_eq!(answer.annotation("mode"), Some("enforce"));
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    assert_eq!(answer.annotation("owner"), Some("Group:team-research"));
    assert_eq!(answer.annotation("reason"), Some(""));
    assert!(answer.warnings().is_empty());
    Ok(())
}

#[test]
fn a_pod_without_agent_label_in_an_enforce_namespace_is_refused_with_no_identity() -> Result<()> {
    let answer = review("pod-no-identity.json")?;
    assert_denied(&answer, &["NoIdentity"]);
    assert!(
        answer
            .message()
            .contains("label the pod mandate.dev/agent=<name> of an AgentIdentity in namespace agents, or create the AgentIdentity"),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn a_pod_naming_a_missing_identity_is_refused_with_no_identity() -> Result<()> {
    let answer = review("pod-unknown-agent.json")?;
    assert_denied(&answer, &["NoIdentity"]);
    assert!(answer.message().contains("create the AgentIdentity ghost"));
    assert_eq!(answer.annotation("agent"), Some("ghost"));
    Ok(())
}

#[test]
fn a_pod_whose_identity_is_not_ready_is_refused_with_identity_not_ready() -> Result<()> {
    assert_denied(
        &review("pod-identity-not-ready.json")?,
        &["IdentityNotReady"],
    );
    Ok(())
}

#[test]
fn a_pod_whose_identity_holds_no_tool_is_refused_with_no_bound_tools() -> Result<()> {
    assert_denied(&review("pod-no-bound-tools.json")?, &["NoBoundTools"]);
    Ok(())
}

#[test]
fn a_pod_left_on_the_default_service_account_with_its_automounted_token_is_refused_for_both()
-> Result<()> {
    let answer = review("pod-service-account-mismatch.json")?;
    assert_denied(&answer, &["ServiceAccountMismatch", "TokenTTL"]);
    assert!(
        answer
            .message()
            .contains("set spec.serviceAccountName: researcher")
    );
    assert!(
        answer
            .message()
            .contains("volume kube-api-access-x7k2p projects a token valid 3607s")
    );
    Ok(())
}

#[test]
fn a_non_agent_pod_running_as_an_agents_service_account_is_refused_as_a_hijack() -> Result<()> {
    let answer = review("pod-service-account-hijack.json")?;
    assert_denied(&answer, &["ServiceAccountHijack"]);
    assert_eq!(answer.annotation("agent"), Some("scraper"));
    assert_eq!(answer.annotation("owner"), Some("Group:team-b"));
    Ok(())
}

#[test]
fn a_pod_on_the_host_network_is_refused_with_host_network() -> Result<()> {
    assert_denied(&review("pod-host-network.json")?, &["HostNetwork"]);
    Ok(())
}

/// Even a member of the owner group, who may debug the pod, may not debug it privileged.
#[test]
fn kubectl_debug_with_the_sysadmin_profile_is_refused_with_pod_security_baseline() -> Result<()> {
    let answer = review("pod-ephemeral-sysadmin.json")?;
    assert_denied(&answer, &["PodSecurityBaseline"]);
    assert!(
        answer.message().contains(
            "spec.ephemeralContainers[0].securityContext.privileged is true (Privileged)"
        ),
        "{}",
        answer.message()
    );
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    Ok(())
}

#[test]
fn a_day_long_token_for_a_foreign_audience_is_refused_with_token_ttl() -> Result<()> {
    let answer = review("pod-token-ttl.json")?;
    assert_denied(&answer, &["TokenTTL"]);
    assert!(
        answer
            .message()
            .contains("valid 86400s, longer than the 3600s")
    );
    assert!(answer.message().contains("audience vault.example.com"));
    assert!(answer.message().contains("(2 rules failed)"));
    Ok(())
}

#[test]
fn a_pod_asking_for_an_automounted_token_is_refused_with_token_ttl() -> Result<()> {
    let answer = review("pod-automount-token.json")?;
    assert_denied(&answer, &["TokenTTL"]);
    assert!(
        answer
            .message()
            .contains("automountServiceAccountToken: true")
    );
    Ok(())
}

#[test]
fn a_pod_mounting_an_agents_legacy_token_secret_is_refused_with_long_lived_token() -> Result<()> {
    let answer = review("pod-long-lived-token.json")?;
    assert_denied(&answer, &["LongLivedToken"]);
    assert!(answer.message().contains("Secret researcher-token"));
    Ok(())
}

#[test]
fn a_warn_namespace_admits_with_one_warning_per_finding() -> Result<()> {
    let answer = review("pod-warn-namespace.json")?;
    assert!(answer.allowed());
    assert_eq!(answer.annotation("decision"), Some("warned"));
    assert_eq!(answer.annotation("mode"), Some("warn"));
    assert_eq!(answer.reasons(), ["NoIdentity"]);
    let warnings = answer.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with("NoIdentity: "), "{warnings:?}");
    Ok(())
}

#[test]
fn an_audit_namespace_admits_silently_and_records_the_reasons() -> Result<()> {
    let answer = review("pod-audit-namespace.json")?;
    assert!(answer.allowed());
    assert!(answer.warnings().is_empty());
    assert_eq!(answer.annotation("decision"), Some("audited"));
    assert_eq!(answer.annotation("mode"), Some("audit"));
    assert_eq!(answer.reasons(), ["NoIdentity"]);
    Ok(())
}

#[test]
fn a_plain_pod_in_an_unlabelled_namespace_is_skipped() -> Result<()> {
    let answer = review("pod-unlabelled-namespace.json")?;
    assert!(answer.allowed());
    assert_eq!(answer.annotation("decision"), Some("skipped"));
    assert_eq!(answer.annotation("mode"), None);
    assert!(answer.reasons().is_empty());
    Ok(())
}

#[test]
fn a_pod_whose_object_cannot_be_read_is_refused_not_panicked_on() -> Result<()> {
    let answer = review("pod-unparseable.json")?;
    assert_denied(&answer, &["InvalidObject"]);
    assert!(answer.message().contains("the object is not a valid Pod"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Before the caches synced

#[test]
fn an_agent_pod_is_refused_while_the_caches_have_not_synced() -> Result<()> {
    let answer = review_with(&reviewer(None)?, "pod-create.json")?;
    assert_denied(&answer, &["NotReady"]);
    assert!(
        answer
            .message()
            .contains("mandate is starting: its caches have not synced")
    );
    Ok(())
}

#[test]
fn mandate_resources_are_refused_while_the_caches_have_not_synced() -> Result<()> {
    let answer = review_with(&reviewer(None)?, "toolbinding-high-risk-approved.json")?;
    assert_denied(&answer, &["NotReady"]);
    Ok(())
}

#[test]
fn a_plain_pod_is_let_through_while_the_caches_have_not_synced() -> Result<()> {
    let answer = review_with(&reviewer(None)?, "pod-unlabelled-namespace.json")?;
    assert!(answer.allowed());
    assert_eq!(answer.annotation("decision"), Some("skipped"));
    assert_eq!(answer.reasons(), ["NotReady"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workloads, Secrets, other kinds

#[test]
fn a_deployment_whose_template_lacks_an_identity_is_admitted_with_warnings() -> Result<()> {
    let answer = review("deployment-create.json")?;
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("warned"));
    assert_eq!(answer.reasons(), ["NoIdentity"]);
    assert!(answer.warnings()[0].starts_with("NoIdentity: "));
    Ok(())
}

#[test]
fn a_cron_jobs_template_on_the_default_service_account_is_admitted_with_warnings() -> Result<()> {
    let answer = review("cronjob-create.json")?;
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.reasons(), ["ServiceAccountMismatch"]);
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    assert_eq!(answer.warnings().len(), 1);
    Ok(())
}

#[test]
fn creating_a_legacy_token_secret_for_an_agent_is_refused_with_long_lived_token() -> Result<()> {
    let answer = review("secret-token-create.json")?;
    assert_denied(&answer, &["LongLivedToken"]);
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    Ok(())
}

#[test]
fn retargeting_a_legacy_token_secret_at_an_agent_is_refused_with_long_lived_token() -> Result<()> {
    let answer = review("secret-token-retarget.json")?;
    assert_denied(&answer, &["LongLivedToken"]);
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    Ok(())
}

#[test]
fn a_year_long_token_request_for_an_agent_is_refused_with_token_ttl_only() -> Result<()> {
    let answer = review("tokenrequest-create.json")?;
    // Only the lifetime: the audience the API server filled in is its own.
    assert_denied(&answer, &["TokenTTL"]);
    assert!(
        answer.message().contains("valid 31536000s"),
        "{}",
        answer.message()
    );
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    Ok(())
}

#[test]
fn a_network_policy_selecting_every_pod_of_an_agent_namespace_is_refused_as_foreign() -> Result<()>
{
    let answer = review("networkpolicy-foreign.json")?;
    assert_denied(&answer, &["ForeignNetworkPolicy"]);
    assert!(
        answer
            .message()
            .contains("agent(s) drafter, idle, payer, researcher"),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn deleting_an_agents_network_policy_is_refused_as_a_protected_projection() -> Result<()> {
    let answer = review("networkpolicy-delete-projection.json")?;
    assert_denied(&answer, &["ProtectedProjection"]);
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    Ok(())
}

#[test]
fn kinds_mandate_does_not_review_are_allowed_without_annotations() -> Result<()> {
    let answer = review("configmap-create.json")?;
    assert!(answer.allowed());
    assert!(
        answer.response().get("auditAnnotations").is_none(),
        "{:#}",
        answer.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Namespaces

#[test]
fn removing_the_mode_of_a_namespace_where_identities_live_is_refused_with_mode_weakened()
-> Result<()> {
    let answer = review("namespace-mode-removed.json")?;
    assert_denied(&answer, &["ModeWeakened"]);
    assert!(
        answer.message().contains("mandate:approvers"),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn an_approver_weakening_the_mode_is_let_through_and_recorded_in_the_audit_log() -> Result<()> {
    let answer = review("namespace-mode-weakened-by-approver.json")?;
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("audited"));
    assert_eq!(answer.reasons(), ["ModeWeakened"]);
    Ok(())
}

#[test]
fn the_recorder_is_told_of_the_weakening_an_approver_made_and_not_of_a_refused_one() -> Result<()> {
    use mandate::admission::namespace::let_through;
    let reviewer = reviewer(Some(snapshot()?))?;
    let weakening = |fixture: &str| -> Result<_> {
        let request = parse_review(&fixture_body(fixture)?)?;
        let verdict = reviewer.review(&request);
        Ok(let_through(&request, &verdict, reviewer.config()))
    };
    assert_eq!(weakening("namespace-mode-removed.json")?, None);
    let recorded = weakening("namespace-mode-weakened-by-approver.json")?
        .context("the approver's weakening is recorded")?;
    assert_eq!(
        (
            recorded.namespace.as_str(),
            recorded.by.as_str(),
            recorded.by_approver
        ),
        ("agents", "carol", true)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mandate's own resources

#[test]
fn the_agents_owner_may_not_approve_a_high_risk_grant_for_it() -> Result<()> {
    let answer = review("toolbinding-high-risk-by-owner.json")?;
    assert_denied(&answer, &["FourEyes"]);
    assert!(answer.message().contains("alice owns AgentIdentity payer"));
    assert_eq!(answer.annotation("owner"), Some("User:alice"));
    Ok(())
}

#[test]
fn an_approver_who_is_not_the_owner_may_grant_a_high_risk_tool() -> Result<()> {
    let answer = review("toolbinding-high-risk-approved.json")?;
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("allowed"));
    assert_eq!(answer.annotation("agent"), Some("payer"));
    Ok(())
}

#[test]
fn a_tool_declared_low_that_reaches_every_ipv4_address_is_high_by_the_risk_floor() -> Result<()> {
    let answer = review("toolbinding-risk-floor.json")?;
    assert_denied(
        &answer,
        &["FourEyes", "HighRiskValidity", "MissingApproval"],
    );
    assert!(
        answer.message().contains(
            "tool open-web is High by the risk floor (its CIDRs reach 4,294,967,296 IPv4 \
             addresses, more than a /16 holds) though declared Low"
        ),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn the_owner_may_not_hand_the_agent_to_someone_else() -> Result<()> {
    let answer = review("agentidentity-owner-change-by-owner.json")?;
    assert_denied(&answer, &["FourEyes"]);
    assert!(
        answer
            .message()
            .contains("changes of owner (User alice to User bob)"),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn the_cluster_admin_may_not_write_an_identitys_status_even_before_the_caches_synced() -> Result<()>
{
    for answer in [
        review("agentidentity-status-by-admin.json")?,
        review_with(&reviewer(None)?, "agentidentity-status-by-admin.json")?,
    ] {
        assert_denied(&answer, &["ProtectedStatus"]);
        assert!(answer.message().contains("kubernetes-admin is not mandate"));
        assert_eq!(answer.annotation("agent"), Some("payer"));
    }
    Ok(())
}

#[test]
fn a_write_tool_for_a_read_only_agent_is_refused_with_class_violation() -> Result<()> {
    assert_denied(
        &review("toolbinding-class-violation.json")?,
        &["ClassViolation"],
    );
    Ok(())
}

#[test]
fn an_agents_service_account_may_not_create_an_identity() -> Result<()> {
    let answer = review("agentidentity-self-escalation.json")?;
    assert_denied(&answer, &["SelfEscalation"]);
    assert!(
        answer
            .message()
            .contains("ServiceAccount agents/researcher of agent researcher")
    );
    Ok(())
}

#[test]
fn a_policy_handing_on_a_tool_the_delegator_lacks_is_refused_with_delegation_escalation()
-> Result<()> {
    let answer = review("delegationpolicy-escalation.json")?;
    assert_denied(&answer, &["DelegationEscalation"]);
    assert!(
        answer.message().contains("idle does not hold web-search"),
        "{}",
        answer.message()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counting decisions

/// Posts each fixture to the webhook's routes in-process (no socket, no TLS), as the API server
/// would to `/validate/pods`, with `pods` as the pods the webhook can look up; returns the
/// answers and the metrics as `/metrics` would serve them.
async fn post(fixtures: &[&str], pods: Arc<dyn PodLookup>) -> Result<(Vec<Answer>, String)> {
    let bodies = fixtures
        .iter()
        .map(|fixture| Ok(((*fixture).to_owned(), fixture_body(fixture)?)))
        .collect::<Result<Vec<_>>>()?;
    post_bodies(bodies, pods, &Metrics::new()).await
}

/// [`post`] for bodies given as (name, bytes), counting into `metrics`.
async fn post_bodies(
    bodies: Vec<(String, Vec<u8>)>,
    pods: Arc<dyn PodLookup>,
    metrics: &Metrics,
) -> Result<(Vec<Answer>, String)> {
    let config = WebhookConfig::new(
        ([127, 0, 0, 1], 0).into(),
        TlsFiles::new("unused.crt", "unused.key"),
    );
    let routes = server::routes(
        Arc::new(reviewer(Some(snapshot()?))?),
        pods,
        Arc::new(server::NoRecorder),
        metrics.clone(),
        &config,
    );
    let service = TowerToHyperService::new(warp::service(routes));
    let mut answers = Vec::new();
    for (fixture, body) in bodies {
        let request = hyper::Request::post(server::VALIDATE_PODS_PATH)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = service.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == hyper::StatusCode::OK,
            "{fixture}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        answers.push(Answer(serde_json::from_slice(&body)?));
    }
    Ok((answers, metrics.encode()?))
}

/// The series of `mandate_admission_requests_total` in `metrics`.
fn admission_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("mandate_admission_requests_total{"))
        .collect()
}

/// `pod-create.json` claiming to be about `resource` (and, with `kind`, of that kind).
fn forged(n: u64, resource: &str, kind: Option<(&str, &str)>) -> Result<(String, Vec<u8>)> {
    let mut review: Value = serde_json::from_slice(&fixture_body("pod-create.json")?)?;
    review["request"]["uid"] = json!(format!("forged-{n}"));
    review["request"]["resource"]["resource"] = json!(resource);
    if let Some((group, kind)) = kind {
        review["request"]["kind"] = json!({"group": group, "version": "v1", "kind": kind});
        review["request"]["resource"]["group"] = json!(group);
    }
    Ok((format!("forged {n}"), serde_json::to_vec(&review)?))
}

#[tokio::test]
async fn three_hundred_reviews_of_random_resources_do_not_grow_the_series() -> Result<()> {
    let metrics = Metrics::new();
    // A pseudo-random sequence (no dependency needed): resources and kinds nobody registered.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bodies = |count: u64| -> Result<Vec<(String, Vec<u8>)>> {
        (0..count)
            .map(|n| {
                let resource = format!("r{:x}", next());
                if n % 2 == 0 {
                    // A real pod review under a made-up resource.
                    forged(n, &resource, None)
                } else {
                    let group = format!("g{:x}.example.com", next());
                    forged(n, &resource, Some((&group, &format!("K{:x}", next()))))
                }
            })
            .collect()
    };
    // Once each way first: the series of a pod and of a kind mandate does not review.
    post_bodies(bodies(2)?, Arc::new(NoPodLookup), &metrics).await?;
    let before = metrics.encode()?;
    let (answers, after) = post_bodies(bodies(300)?, Arc::new(NoPodLookup), &metrics).await?;
    ensure!(answers.len() == 300);
    assert_eq!(
        admission_series(&before).len(),
        admission_series(&after).len(),
        "the series grew:\n{after}"
    );
    for series in admission_series(&after) {
        let resource = series
            .split("resource=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert!(
            mandate::admission::request::RESOURCES.contains(&resource),
            "{resource} is not a resource mandate serves: {series}"
        );
    }
    assert!(
        after.contains(r#"resource="other""#) && after.contains(r#"resource="pods""#),
        "{after}"
    );
    Ok(())
}

/// The metrics after posting `fixtures` (no pods to look up).
async fn count(fixtures: &[&str]) -> Result<String> {
    Ok(post(fixtures, Arc::new(NoPodLookup)).await?.1)
}

/// Asserts `metrics` holds `series` (labels and value) of `mandate_admission_requests_total`.
fn assert_counted(metrics: &str, series: &str) {
    let expected = format!("mandate_admission_requests_total{series}");
    assert!(
        metrics.contains(&expected),
        "missing {expected:?} in\n{metrics}"
    );
}

#[tokio::test]
async fn warned_audited_skipped_and_denied_requests_are_each_counted_as_such() -> Result<()> {
    let metrics = count(&[
        "pod-warn-namespace.json",
        "pod-audit-namespace.json",
        "pod-unlabelled-namespace.json",
        "pod-no-identity.json",
        "pod-no-identity.json",
    ])
    .await?;
    for expected in [
        r#"mandate_admission_requests_total{resource="pods",decision="warned",reason="NoIdentity",mode="warn"} 1"#,
        r#"mandate_admission_requests_total{resource="pods",decision="audited",reason="NoIdentity",mode="audit"} 1"#,
        r#"mandate_admission_requests_total{resource="pods",decision="skipped",reason="none",mode="none"} 1"#,
        r#"mandate_admission_requests_total{resource="pods",decision="denied",reason="NoIdentity",mode="enforce"} 2"#,
        "mandate_admission_duration_seconds_count 5",
    ] {
        assert!(
            metrics.contains(&format!("{expected}\n")),
            "missing {expected:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(r#"decision="allowed""#),
        "admitted with findings, or skipped, is not allowed:\n{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn an_allowed_request_is_counted_as_allowed_with_no_reason() -> Result<()> {
    let metrics = count(&["pod-create.json"]).await?;
    assert_counted(
        &metrics,
        r#"{resource="pods",decision="allowed",reason="none",mode="enforce"} 1"#,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// exec, attach, port-forward

/// The pods the webhook's lookup finds: `agents/researcher-0` (agent `researcher`, owned by
/// group team-research) and `team-b/web-0` (no agent).
struct Pods;

impl PodLookup for Pods {
    fn metadata<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<ObjectMeta>, PodLookupError>> {
        let found = match (namespace, name) {
            ("agents", "researcher-0") => meta(
                Some(namespace),
                name,
                json!({"mandate.dev/agent": "researcher"}),
                json!({}),
            )
            .ok(),
            ("team-b", "web-0") => meta(Some(namespace), name, json!({}), json!({})).ok(),
            _ => None,
        };
        Box::pin(async move { Ok(found) })
    }
}

#[tokio::test]
async fn an_exec_into_an_agent_pod_by_a_developer_is_refused_with_exec_not_owner() -> Result<()> {
    let (answers, metrics) = post(&["pod-exec.json"], Arc::new(Pods)).await?;
    let answer = &answers[0];
    assert_denied(answer, &["ExecNotOwner"]);
    assert_eq!(
        answer.message(),
        "mandate refused exec into Pod agents/researcher-0 (1 rule failed): ExecNotOwner: dana \
         is neither the owner of agent researcher (Group:team-research) nor in group \
         mandate:approvers, and only they may exec into its pods: ask the owner or an approver"
    );
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    assert_eq!(answer.annotation("owner"), Some("Group:team-research"));
    assert_counted(
        &metrics,
        r#"{resource="pods",decision="denied",reason="ExecNotOwner",mode="enforce"} 1"#,
    );
    Ok(())
}

#[tokio::test]
async fn a_port_forward_by_a_member_of_the_owner_group_is_allowed_and_still_recorded() -> Result<()>
{
    let (answers, metrics) = post(&["pod-portforward-by-owner.json"], Arc::new(Pods)).await?;
    let answer = &answers[0];
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("allowed"));
    assert_eq!(answer.annotation("mode"), Some("enforce"));
    assert_eq!(answer.annotation("agent"), Some("researcher"));
    assert_eq!(answer.annotation("owner"), Some("Group:team-research"));
    assert_counted(
        &metrics,
        r#"{resource="pods",decision="allowed",reason="none",mode="enforce"} 1"#,
    );
    Ok(())
}

#[tokio::test]
async fn an_attach_to_a_pod_that_is_no_agent_pod_is_skipped() -> Result<()> {
    let (answers, _) = post(&["pod-attach-unlabelled-namespace.json"], Arc::new(Pods)).await?;
    let answer = &answers[0];
    assert!(answer.allowed(), "{:#}", answer.0);
    assert_eq!(answer.annotation("decision"), Some("skipped"));
    Ok(())
}

#[tokio::test]
async fn an_exec_whose_pod_cannot_be_looked_up_is_refused_in_an_agent_namespace() -> Result<()> {
    let (answers, _) = post(&["pod-exec.json"], Arc::new(NoPodLookup)).await?;
    let answer = &answers[0];
    assert_denied(answer, &["ExecNotOwner"]);
    assert!(
        answer.message().contains(
            "could not look up pod agents/researcher-0 to learn its agent and owner \
                       (this webhook server has no pod lookup)"
        ),
        "{}",
        answer.message()
    );
    Ok(())
}

#[test]
fn a_connect_reviewed_without_a_lookup_is_never_allowed() -> Result<()> {
    // The reviewer alone (as `mandate check` would call it) has no pod: it refuses.
    assert_denied(&review("pod-exec.json")?, &["ExecNotOwner"]);
    Ok(())
}

/// A lookup the API server never answers.
struct Stalled;

impl PodLookup for Stalled {
    fn metadata<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<ObjectMeta>, PodLookupError>> {
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn an_exec_whose_lookup_never_answers_is_refused_within_the_webhooks_timeout() -> Result<()> {
    let started = std::time::Instant::now();
    let (answers, _) = post(&["pod-exec.json"], Arc::new(Stalled)).await?;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the lookup must give up well within the webhook's 5 s timeout"
    );
    assert_denied(&answers[0], &["ExecNotOwner"]);
    assert!(
        answers[0].message().contains("took longer than 2s"),
        "{}",
        answers[0].message()
    );
    Ok(())
}
