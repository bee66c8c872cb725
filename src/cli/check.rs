//! `mandate check`: manifests (and, with `--cluster`, the live cluster's objects), a user and an
//! instant in; the admission decision on every pod, workload, Secret and mandate resource among
//! the manifests out, with its reason codes. The decisions are `admission::review`'s, the
//! webhook's own function: this module only builds the snapshot the webhook would read and the
//! requests the API server would send. It never writes to the cluster.
//!
//! How the snapshot is built from manifests:
//! - Namespaces, AgentIdentities, ToolBindings, DelegationPolicies, ServiceAccounts and Secrets
//!   (metadata) among the manifests are added after the cluster's (so they replace them);
//! - each AgentIdentity from the manifests gets the status the reconciler would write
//!   (`assess::assess_identity`, the reconciler's own function), and its ServiceAccount when the
//!   reconciler would project it;
//! - every object is reviewed as a CREATE by the given user, against the snapshot of all
//!   manifests (a mandate resource refused at admission still counts for the others: fix it
//!   first);
//! - Roles, ClusterRoles and their bindings among the manifests (and, with `--cluster`, the
//!   cluster's, all of them) join the snapshot: an agent pod whose ServiceAccount they grant a
//!   dangerous right is refused as the webhook would (`DangerousApiRights`), and each RBAC
//!   manifest that grants an agent one is reported as warned, naming the agents and rights (the
//!   API server admits RBAC; mandate refuses the agents' pods and reports the identities);
//! - pods first get what the API server's ServiceAccount admission plugin adds before webhooks
//!   see them: `serviceAccountName: default` when unset, and the automounted token volume
//!   (`kube-api-access-*`, 3607 seconds) unless the pod or its ServiceAccount turns automount
//!   off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::{
    Pod, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection, Volume,
    VolumeProjection,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde::Serialize;
use serde_json::{Value, json};

use super::cluster::{self, FetchError, Namespaces};
use super::manifests::{self, Manifest, ManifestError};
use super::report::Objects;
use super::risk_floor::RiskFloorArgs;
use crate::admission::namespace::namespace_mode;
use crate::admission::pod::AUTOMOUNT_VOLUME_PREFIX;
use crate::admission::snapshot::{DEFAULT_APPROVER_GROUP, DEFAULT_NAMESPACE};
use crate::admission::{AdmissionConfig, Decision, Mode, Request, Snapshot, Verdict, review};
use crate::api::{
    AgentIdentity, DelegationPolicy, GROUP, ToolBinding, VERSION, pod_service_account,
};
use crate::assess::{IdentityInputs, api_rights_granted_by, assess_identity};
use crate::authority::rights::{ObjectName, RbacKind, describe};
use crate::authority::{self, Authority, Reason};
use crate::project::{NetworkConfig, Services, TrustDomain};

/// The lifetime the API server gives automounted tokens (`kube-api-access-*` volumes).
pub const AUTOMOUNT_EXPIRATION_SECONDS: i64 = 3607;
/// Where the automounted token is mounted; a pod that mounts something there gets none.
pub const AUTOMOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Arguments of `mandate check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// A manifest file, a directory of them (recursive), or - for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Namespace of manifests that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Also read the live cluster's objects in the manifests' namespaces (kubeconfig); the
    /// manifests replace cluster objects of the same name.
    #[arg(long)]
    pub cluster: bool,
    /// Judge at this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub at: Option<Timestamp>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
    /// The installation's mode for agent pods outside labelled namespaces.
    #[arg(long, default_value = "enforce", value_parser = super::parse_mode)]
    pub default_mode: Mode,
    /// The installation's approver group for High-risk ToolBindings and Pod Security exemptions.
    #[arg(long, default_value = DEFAULT_APPROVER_GROUP)]
    pub approver_group: String,
    /// The API server's token audiences (its --api-audiences, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = crate::admission::snapshot::DEFAULT_API_AUDIENCE)]
    pub api_audiences: Vec<String>,
    /// The installation's own namespace (never reviewed).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub mandate_namespace: String,
    /// How far ahead a High-risk tool's validUntil may lie, in hours.
    #[arg(long, default_value_t = 24)]
    pub max_high_risk_hours: i64,
    #[command(flatten)]
    pub risk_floor: RiskFloorArgs,
    /// The user who applies the manifests.
    #[arg(long = "as", value_name = "USER", default_value = "mandate-check")]
    pub as_user: String,
    /// A group of that user. Repeatable. (system:authenticated is always added.)
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_groups: Vec<String>,
    /// The kubeconfig context for --cluster (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// Output formats of `mandate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    Text,
    Json,
}

/// Why `mandate check` could not decide.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("reading the cluster (--cluster): {0}")]
    Cluster(#[from] FetchError),
    #[error("{source_}: {kind} cannot be reviewed: {message}")]
    Request {
        source_: String,
        kind: String,
        message: String,
    },
    #[error("printing the results as JSON: {0}")]
    Print(#[source] serde_json::Error),
}

/// Who applies the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The decision on one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `allowed`, `denied`, `warned`, `audited` or `skipped`.
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The distinct reason codes, most important first.
    pub reasons: Vec<String>,
    pub findings: Vec<FindingOut>,
    /// The denial message the API server would return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingOut {
    pub reason: String,
    pub detail: String,
}

/// Everything `mandate check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// The instant judged (RFC 3339).
    pub at: String,
    /// Whether anything would be refused.
    pub refused: bool,
    pub results: Vec<Outcome>,
    /// Objects of kinds admission does not review (Services, ConfigMaps, ...).
    pub not_reviewed: usize,
}

fn parse_time(value: &str) -> Result<Timestamp, String> {
    value
        .parse()
        .map_err(|e| format!("{value:?} is not an RFC 3339 time (2027-01-15T08:00:00Z): {e}"))
}

/// Reads the manifests (and the cluster with `--cluster`), reviews them and prints the
/// results. Returns whether anything would be refused.
pub async fn run(args: CheckArgs) -> Result<bool, CheckError> {
    let manifests = manifests::read_all(&args.files)?;
    let manifests = with_namespace(manifests, &args.namespace);
    let cluster_objects = if args.cluster {
        let (client, server) = cluster::connect(args.context.as_deref()).await?;
        let scope = Namespaces::Only(namespaces_of(&manifests, &args.namespace));
        Some(cluster::fetch(&client, &server, &scope).await?)
    } else {
        None
    };
    let at = args.at.unwrap_or_else(Timestamp::now);
    let config = authority::Config {
        max_high_risk_validity: SignedDuration::from_hours(args.max_high_risk_hours),
        risk_floor: args.risk_floor.floor(),
    };
    let admission = AdmissionConfig {
        default_mode: args.default_mode,
        approver_group: args.approver_group.clone(),
        own_namespace: args.mandate_namespace.clone(),
        api_audiences: args.api_audiences.clone(),
        ..AdmissionConfig::default()
    };
    let user = User {
        name: args.as_user.clone(),
        groups: args.as_groups.clone(),
    };
    let snapshot = snapshot(cluster_objects.as_ref(), &manifests, config, at);
    let results = review_all(&manifests, &snapshot, &admission, &user, at)?;
    match args.output {
        CheckOutput::Text => print!("{}", text(&results)),
        CheckOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&results).map_err(CheckError::Print)?
        ),
    }
    Ok(results.refused)
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The RBAC kind of a manifest, if it is one.
fn rbac_kind(api_version: &str, kind: &str) -> Option<RbacKind> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if group != RBAC_GROUP {
        return None;
    }
    match kind {
        "Role" => Some(RbacKind::Role),
        "ClusterRole" => Some(RbacKind::ClusterRole),
        "RoleBinding" => Some(RbacKind::RoleBinding),
        "ClusterRoleBinding" => Some(RbacKind::ClusterRoleBinding),
        _ => None,
    }
}

/// The kinds `check` sets a namespace on when a manifest names none.
fn is_namespaced_kind(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    matches!(
        (group, kind),
        ("", "Pod" | "Secret" | "ServiceAccount")
            | (
                "apps",
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            )
            | ("batch", "Job" | "CronJob")
            | ("networking.k8s.io", "NetworkPolicy")
            | (RBAC_GROUP, "Role" | "RoleBinding")
    ) || group == GROUP
}

/// Sets `namespace` on namespaced objects that name none.
pub fn with_namespace(mut manifests: Vec<Manifest>, namespace: &str) -> Vec<Manifest> {
    for manifest in &mut manifests {
        let api_version = manifest.object["apiVersion"].as_str().unwrap_or_default();
        let kind = manifest.object["kind"].as_str().unwrap_or_default();
        if !is_namespaced_kind(api_version, kind) {
            continue;
        }
        if let Some(meta) = manifest.object.as_object_mut().map(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        }) {
            let missing = meta["namespace"].as_str().is_none_or(str::is_empty);
            if missing && let Some(meta) = meta.as_object_mut() {
                meta.insert("namespace".into(), Value::String(namespace.to_owned()));
            }
        }
    }
    manifests
}

/// The namespaces the manifests touch (and `default_namespace`), sorted.
pub fn namespaces_of(manifests: &[Manifest], default_namespace: &str) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::from([default_namespace.to_owned()]);
    for m in manifests {
        if let Some(ns) = m.object["metadata"]["namespace"].as_str() {
            names.insert(ns.to_owned());
        }
        if m.object["kind"] == "Namespace"
            && let Some(name) = m.object["metadata"]["name"].as_str()
        {
            names.insert(name.to_owned());
        }
    }
    names.into_iter().collect()
}

/// The objects among the manifests that a snapshot is built from (typed; those that cannot be
/// read as their kind are left out: their own review reports them).
pub fn objects_of(manifests: &[Manifest]) -> Objects {
    let mut objects = Objects::default();
    for m in manifests {
        let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
        let kind = m.object["kind"].as_str().unwrap_or_default();
        let value = m.object.clone();
        let mandate = api_version == format!("{GROUP}/{VERSION}");
        match (api_version, kind) {
            ("v1", "Namespace") => {
                if let Ok(meta) = serde_json::from_value::<ObjectMeta>(value["metadata"].clone()) {
                    objects.namespaces.push(meta);
                }
            }
            ("v1", "ServiceAccount") => {
                if let Ok(sa) = serde_json::from_value::<ServiceAccount>(value) {
                    objects.service_accounts.push(sa);
                }
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                if let Ok(policy) = serde_json::from_value::<NetworkPolicy>(value) {
                    objects.network_policies.push(policy);
                }
            }
            ("v1", "Secret") => {
                if let Ok(meta) = serde_json::from_value::<ObjectMeta>(value["metadata"].clone()) {
                    objects.secrets.push(meta);
                }
            }
            (_, "AgentIdentity") if mandate => {
                if let Ok(identity) = serde_json::from_value::<AgentIdentity>(value) {
                    objects.identities.push(identity);
                }
            }
            (_, "ToolBinding") if mandate => {
                if let Ok(binding) = serde_json::from_value::<ToolBinding>(value) {
                    objects.bindings.push(binding);
                }
            }
            (_, "DelegationPolicy") if mandate => {
                if let Ok(policy) = serde_json::from_value::<DelegationPolicy>(value) {
                    objects.policies.push(policy);
                }
            }
            _ => match rbac_kind(api_version, kind) {
                Some(RbacKind::Role) => objects
                    .roles
                    .extend(serde_json::from_value::<Role>(value).ok()),
                Some(RbacKind::ClusterRole) => objects
                    .cluster_roles
                    .extend(serde_json::from_value::<ClusterRole>(value).ok()),
                Some(RbacKind::RoleBinding) => objects
                    .role_bindings
                    .extend(serde_json::from_value::<RoleBinding>(value).ok()),
                Some(RbacKind::ClusterRoleBinding) => objects
                    .cluster_role_bindings
                    .extend(serde_json::from_value::<ClusterRoleBinding>(value).ok()),
                None => {}
            },
        }
    }
    objects
}

/// The snapshot the webhook would read once the manifests were applied (on top of `cluster`
/// when given) and reconciled.
pub fn snapshot(
    cluster: Option<&Objects>,
    manifests: &[Manifest],
    config: authority::Config,
    at: Timestamp,
) -> Snapshot {
    let empty = Objects::default();
    let cluster = cluster.unwrap_or(&empty);
    let ours = objects_of(manifests);
    let build = |identities: &[AgentIdentity], projected: &[ServiceAccount]| {
        let mut builder = Authority::builder().config(config);
        for identity in cluster.identities.iter().chain(identities) {
            builder.add_identity(identity.clone());
        }
        for binding in cluster.bindings.iter().chain(&ours.bindings) {
            builder.add_binding(binding.clone());
        }
        for policy in cluster.policies.iter().chain(&ours.policies) {
            builder.add_policy(policy.clone());
        }
        for sa in cluster
            .service_accounts
            .iter()
            .chain(projected)
            .chain(&ours.service_accounts)
        {
            builder.add_service_account(sa.clone());
        }
        // The manifests' RBAC after the cluster's, so it replaces objects of the same name.
        cluster.add_rbac_to(&mut builder);
        ours.add_rbac_to(&mut builder);
        builder.build()
    };
    // As applied, before the reconciler ran; then each new identity as the reconciler would
    // assess it: its status, and its ServiceAccount when that is free to project.
    let before = build(&ours.identities, &[]);
    let (trust_domain, network, services) = (
        TrustDomain::default(),
        NetworkConfig::default(),
        Services::new(),
    );
    let network_policies: Vec<std::sync::Arc<NetworkPolicy>> = cluster
        .network_policies
        .iter()
        .chain(&ours.network_policies)
        .cloned()
        .map(std::sync::Arc::new)
        .collect();
    let mut identities = Vec::new();
    let mut projected = Vec::new();
    for identity in &ours.identities {
        let mut identity = identity.clone();
        // The API server gives every object a uid on create; projections need one.
        if identity.metadata.uid.is_none() {
            identity.metadata.uid = Some(format!(
                "mandate-check-{}-{}",
                identity.metadata.namespace.as_deref().unwrap_or_default(),
                identity.metadata.name.as_deref().unwrap_or_default()
            ));
        }
        let namespace = identity.metadata.namespace.as_deref().unwrap_or_default();
        let namespace_opted_in = cluster.namespaces.iter().chain(&ours.namespaces).any(|n| {
            n.name.as_deref() == Some(namespace) && namespace_mode(n.labels.as_ref()).is_some()
        });
        let inputs = IdentityInputs {
            authority: &before,
            trust_domain: &trust_domain,
            network: &network,
            services: &services,
            network_policies: &network_policies,
            // Manifests are not running pods: CredentialsStale is the operator's to report.
            pods: None,
            namespace_opted_in,
            now: at,
        };
        // An identity that cannot be projected at all (no name) keeps no status: its own
        // review reports it.
        if let Ok(assessment) = assess_identity(&identity, &inputs) {
            identity.status = Some(assessment.status);
            projected.extend(assessment.service_account);
        }
        identities.push(identity);
    }
    let authority = build(&identities, &projected);
    let namespaces = cluster.namespaces.iter().chain(&ours.namespaces);
    let secrets = cluster.secrets.iter().chain(&ours.secrets);
    Snapshot::from_objects(authority, namespaces, secrets)
}

/// What the API server's ServiceAccount admission plugin does to a pod before validating
/// webhooks see it: fills in `serviceAccountName` and mounts an automounted token unless the
/// pod or its ServiceAccount turns automount off. A pod that cannot be read is left alone.
pub fn as_admitted_pod(object: &Value, snapshot: &Snapshot) -> Value {
    let Ok(mut pod) = serde_json::from_value::<Pod>(object.clone()) else {
        return object.clone();
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(spec) = pod.spec.as_mut() else {
        return object.clone();
    };
    let service_account = pod_service_account(spec).to_owned();
    spec.service_account_name = Some(service_account.clone());
    let sa_automount = snapshot
        .authority()
        .service_account_automount(&namespace, &service_account);
    let automount = spec
        .automount_service_account_token
        .or(sa_automount)
        .unwrap_or(true);
    let mounted_already = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == AUTOMOUNT_PATH);
    if automount && !mounted_already {
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: format!("{AUTOMOUNT_VOLUME_PREFIX}check"),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(AUTOMOUNT_EXPIRATION_SECONDS),
                        path: "token".to_owned(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    serde_json::to_value(&pod).unwrap_or_else(|_| object.clone())
}

/// The AdmissionRequest the API server would send for creating `object` as `user`.
pub fn create_request(
    uid: &str,
    object: &Value,
    user: &User,
) -> Result<AdmissionRequest<DynamicObject>, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": plural(kind)},
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": object["metadata"]["namespace"].as_str().unwrap_or_default(),
            "operation": "CREATE",
            "userInfo": {"username": user.name, "groups": groups},
            "object": object,
            "dryRun": true,
        }
    });
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review).map_err(|e| e.to_string())?;
    review.try_into().map_err(|e| format!("{e:?}"))
}

/// The resource name of a kind, as the API server would send it (only informative: decisions
/// go by kind).
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.as_str() {
        "delegationpolicy" => "delegationpolicies".to_owned(),
        "networkpolicy" => "networkpolicies".to_owned(),
        "agentidentity" => "agentidentities".to_owned(),
        _ => format!("{lower}s"),
    }
}

/// Reviews every manifest admission judges; others are counted as not reviewed.
pub fn review_all(
    manifests: &[Manifest],
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    user: &User,
    at: Timestamp,
) -> Result<Results, CheckError> {
    let mut results = Vec::new();
    let mut not_reviewed = 0;
    for (i, manifest) in manifests.iter().enumerate() {
        let kind = manifest.object["kind"].as_str().unwrap_or_default();
        let object = if manifest.object["apiVersion"] == "v1" && kind == "Pod" {
            as_admitted_pod(&manifest.object, snapshot)
        } else {
            manifest.object.clone()
        };
        let request =
            create_request(&format!("mandate-check-{i}"), &object, user).map_err(|message| {
                CheckError::Request {
                    source_: manifest.source.clone(),
                    kind: kind.to_owned(),
                    message,
                }
            })?;
        let verdict = review(&Request::from(&request), Some(snapshot), config, at);
        let Some(decision) = verdict.decision() else {
            match rbac_outcome(manifest, &request, snapshot) {
                Some(outcome) => results.push(outcome),
                None => not_reviewed += 1,
            }
            continue;
        };
        results.push(outcome(manifest, &request, &verdict, decision));
    }
    let refused = results
        .iter()
        .any(|r| r.decision == Decision::Denied.as_str());
    Ok(Results {
        at: at.to_string(),
        refused,
        results,
        not_reviewed,
    })
}

/// The outcome of an RBAC manifest that grants agents dangerous API rights: warned (the API
/// server admits it; mandate refuses the agents' pods in enforce mode and reports the
/// identities), one finding per agent. `None` for other manifests, and for RBAC that grants no
/// agent a dangerous right.
fn rbac_outcome(
    manifest: &Manifest,
    request: &AdmissionRequest<DynamicObject>,
    snapshot: &Snapshot,
) -> Option<Outcome> {
    let api_version = manifest.object["apiVersion"].as_str().unwrap_or_default();
    let kind = rbac_kind(api_version, &request.kind.kind)?;
    let cluster_scoped = matches!(kind, RbacKind::ClusterRole | RbacKind::ClusterRoleBinding);
    let namespace = if cluster_scoped {
        String::new()
    } else {
        request.namespace.clone().unwrap_or_default()
    };
    let name = manifest.object["metadata"]["name"].as_str()?.to_owned();
    let object = ObjectName {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let granted = api_rights_granted_by(snapshot.authority(), &object);
    if granted.is_empty() {
        return None;
    }
    let agent = match granted.as_slice() {
        [(_, agent, _)] => Some((*agent).to_owned()),
        _ => None,
    };
    Some(Outcome {
        source: manifest.source.clone(),
        kind: request.kind.kind.clone(),
        namespace,
        name,
        decision: Decision::Warned.as_str().to_owned(),
        mode: None,
        agent,
        owner: None,
        reasons: vec![Reason::DangerousApiRights.code().to_owned()],
        findings: granted
            .iter()
            .map(|(namespace, agent, rights)| FindingOut {
                reason: Reason::DangerousApiRights.code().to_owned(),
                detail: format!(
                    "AgentIdentity {namespace}/{agent}: {}: its pods are refused in \
                     enforce mode and the identity reports it (ApiRightsContained=False); grant \
                     agents only what their mandate holds",
                    describe(rights)
                ),
            })
            .collect(),
        message: None,
    })
}

fn outcome(
    manifest: &Manifest,
    request: &AdmissionRequest<DynamicObject>,
    verdict: &Verdict,
    decision: Decision,
) -> Outcome {
    let name = manifest.object["metadata"]["name"]
        .as_str()
        .or(manifest.object["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    Outcome {
        source: manifest.source.clone(),
        kind: request.kind.kind.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
        decision: decision.as_str().to_owned(),
        mode: verdict.mode().map(|m| m.as_str().to_owned()),
        agent: verdict.agent_name().map(str::to_owned),
        owner: verdict.owner_name().map(str::to_owned),
        reasons: verdict.codes().into_iter().map(str::to_owned).collect(),
        findings: verdict
            .all_findings()
            .iter()
            .map(|f| FindingOut {
                reason: f.reason.code().to_owned(),
                detail: f.detail.clone(),
            })
            .collect(),
        message: verdict.message(),
    }
}

/// The results for people: one line per object, the findings under it, a summary.
pub fn text(results: &Results) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &results.results {
        *counts.entry(r.decision.as_str()).or_default() += 1;
        let mode = r
            .mode
            .as_deref()
            .map(|m| format!(" [{m}]"))
            .unwrap_or_default();
        let reasons = if r.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reasons.join(", "))
        };
        let _ = writeln!(
            out,
            "{:<8} {} {}/{}{mode}{reasons}  ({})",
            r.decision.to_uppercase(),
            r.kind,
            r.namespace,
            r.name,
            r.source
        );
        for f in &r.findings {
            let _ = writeln!(out, "         - {}: {}", f.reason, f.detail);
        }
    }
    let summary: Vec<String> = ["denied", "warned", "audited", "allowed", "skipped"]
        .iter()
        .filter_map(|d| counts.get(d).map(|n| format!("{n} {d}")))
        .collect();
    let _ = writeln!(
        out,
        "\n{} reviewed at {}: {}{}",
        results.results.len(),
        results.at,
        if summary.is_empty() {
            "nothing to review".to_owned()
        } else {
            summary.join(", ")
        },
        if results.not_reviewed > 0 {
            match results.not_reviewed {
                1 => "; 1 other object is not reviewed by mandate".to_owned(),
                n => format!("; {n} other objects are not reviewed by mandate"),
            }
        } else {
            String::new()
        }
    );
    if results.refused {
        let _ = writeln!(out, "mandate would refuse at least one object");
    }
    out
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::api::conditions::{self, READY};
    use crate::authority::fixtures::NOW;

    fn load(yaml: &str) -> Vec<Manifest> {
        with_namespace(
            manifests::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}")),
            "team",
        )
    }

    const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {mandate.dev/mode: enforce}}
---
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {name: researcher}
spec:
  owner: {kind: Group, name: research}
  purpose: reads
---
apiVersion: mandate.dev/v1alpha1
kind: ToolBinding
metadata: {name: researcher-tools}
spec:
  agent: researcher
  tools:
  - name: search
    actions: [read]
    destination: {external: {cidrs: [203.0.113.0/24], ports: [443]}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: legacy-bot}
---
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {name: squatter}
spec:
  owner: {kind: User, name: bob}
  purpose: takes a ServiceAccount it cannot have
  serviceAccountName: legacy-bot
"#;

    fn user() -> User {
        User {
            name: "alice".into(),
            groups: vec![],
        }
    }

    fn review(extra: &str) -> Results {
        let manifests = load(&format!("{WORLD}\n---\n{extra}"));
        let snapshot = snapshot(None, &manifests, authority::Config::default(), NOW);
        review_all(
            &manifests,
            &snapshot,
            &AdmissionConfig::default(),
            &user(),
            NOW,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn of<'a>(results: &'a Results, kind: &str, name: &str) -> &'a Outcome {
        results
            .results
            .iter()
            .find(|r| r.kind == kind && r.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {results:#?}"))
    }

    #[test]
    fn manifests_without_a_namespace_get_the_given_one_and_namespaces_stay_cluster_scoped() {
        let manifests = load(WORLD);
        assert_eq!(manifests[0].object["metadata"].get("namespace"), None);
        assert_eq!(manifests[1].object["metadata"]["namespace"], "team");
        assert_eq!(namespaces_of(&manifests, "default"), ["default", "team"]);
    }

    #[test]
    fn a_valid_identity_from_manifests_counts_as_ready_with_a_managed_service_account() {
        let manifests = load(WORLD);
        let snapshot = snapshot(None, &manifests, authority::Config::default(), NOW);
        let authority = snapshot.authority();
        let ready = |name: &str| {
            authority
                .identity("team", name)
                .and_then(|i| i.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, READY))
        };
        assert!(ready("researcher"));
        assert!(!ready("squatter"), "its ServiceAccount is someone else's");
        let uid = authority
            .identity("team", "researcher")
            .and_then(|i| i.metadata.uid.clone())
            .expect("check gives an identity the uid the API server would");
        assert_eq!(
            authority.service_account_ownership("team", "researcher"),
            authority::ServiceAccountOwnership::Managed {
                agent: "researcher".into(),
                uid,
            }
        );
        assert_eq!(snapshot.namespace_mode("team"), Some(Mode::Enforce));
    }

    #[test]
    fn a_good_agent_pod_is_allowed_and_the_world_reviewed_with_the_webhooks_rules() {
        let results = review(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: good, labels: {mandate.dev/agent: researcher}}
spec:
  serviceAccountName: researcher
  containers: [{name: c, image: i}]
"#,
        );
        assert_eq!(of(&results, "Pod", "good").decision, "allowed");
        assert_eq!(
            of(&results, "AgentIdentity", "researcher").decision,
            "allowed"
        );
        assert_eq!(
            of(&results, "AgentIdentity", "squatter").reasons,
            ["ServiceAccountUnmanaged"]
        );
        assert!(results.refused);
        assert_eq!(
            results.not_reviewed, 2,
            "the Namespace and the ServiceAccount"
        );
    }

    #[test]
    fn a_pod_on_the_default_service_account_gets_the_automounted_token_the_api_server_adds() {
        let results = review(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: on-default, labels: {mandate.dev/agent: researcher}}
spec:
  containers: [{name: c, image: i}]
"#,
        );
        assert_eq!(
            of(&results, "Pod", "on-default").reasons,
            ["ServiceAccountMismatch", "TokenTTL"]
        );
    }

    #[test]
    fn a_pod_of_an_identity_that_cannot_become_ready_is_refused_as_not_ready() {
        let results = review(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: squat, labels: {mandate.dev/agent: squatter}}
spec:
  serviceAccountName: legacy-bot
  automountServiceAccountToken: false
  containers: [{name: c, image: i}]
"#,
        );
        assert_eq!(
            of(&results, "Pod", "squat").reasons,
            ["IdentityNotReady", "NoBoundTools"]
        );
    }

    #[test]
    fn a_time_after_a_binding_expired_leaves_the_agent_without_tools() {
        let manifests = load(&format!(
            "{}\n---\n{}",
            WORLD.replace(
                "  agent: researcher\n",
                "  agent: researcher\n  validUntil: \"2027-01-15T10:00:00Z\"\n"
            ),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {mandate.dev/agent: researcher}}\n\
             spec: {serviceAccountName: researcher, containers: [{name: c, image: i}]}\n"
        ));
        let at = |t: &str| t.parse::<Timestamp>().unwrap_or_else(|e| panic!("{e}"));
        for (when, expected) in [
            ("2027-01-15T09:00:00Z", vec![]),
            ("2027-01-15T11:00:00Z", vec!["NoBoundTools".to_owned()]),
        ] {
            let snapshot = snapshot(None, &manifests, authority::Config::default(), at(when));
            let results = review_all(
                &manifests,
                &snapshot,
                &AdmissionConfig::default(),
                &user(),
                at(when),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(of(&results, "Pod", "p").reasons, expected, "at {when}");
        }
    }

    #[test]
    fn a_network_policy_manifest_selecting_agents_is_refused_as_foreign_and_reported_on_them() {
        let open = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                    metadata: {name: open}\nspec: {podSelector: {}, ingress: [{}]}\n";
        let results = review(open);
        let outcome = of(&results, "NetworkPolicy", "open");
        assert_eq!(outcome.namespace, "team");
        assert_eq!(outcome.reasons, ["ForeignNetworkPolicy"]);
        assert_eq!(outcome.decision, "denied");
        // The identity `check` assesses from the same manifests names it.
        let manifests = load(&format!("{WORLD}\n---\n{open}"));
        let snapshot = snapshot(None, &manifests, authority::Config::default(), NOW);
        let researcher = snapshot
            .authority()
            .identity("team", "researcher")
            .and_then(|i| i.status.clone())
            .unwrap_or_default();
        assert!(
            !conditions::is_true(&researcher.conditions, conditions::NETWORK_EXCLUSIVE),
            "{:#?}",
            researcher.conditions
        );
    }

    #[test]
    fn manifests_replace_cluster_objects_of_the_same_name() {
        let cluster = Objects {
            namespaces: vec![ObjectMeta {
                name: Some("team".into()),
                ..ObjectMeta::default()
            }],
            ..Objects::default()
        };
        let manifests = load(WORLD);
        let snapshot = snapshot(
            Some(&cluster),
            &manifests,
            authority::Config::default(),
            NOW,
        );
        assert_eq!(snapshot.namespace_mode("team"), Some(Mode::Enforce));
        let snapshot = snapshot_without_namespaces(&cluster);
        assert_eq!(snapshot.namespace_mode("team"), None);
    }

    fn snapshot_without_namespaces(cluster: &Objects) -> Snapshot {
        snapshot(Some(cluster), &[], authority::Config::default(), NOW)
    }

    #[test]
    fn the_text_output_lists_decisions_codes_and_a_summary() {
        let results = review("");
        let out = text(&results);
        assert!(
            out.contains("DENIED   AgentIdentity team/squatter [enforce]: ServiceAccountUnmanaged")
        );
        assert!(out.contains("mandate would refuse at least one object"));
    }
    #[test]
    fn rbac_granting_an_agent_dangerous_rights_refuses_its_pods_and_is_reported_as_warned() {
        let results = review(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: impersonator}
rules:
- {verbs: [impersonate], apiGroups: [""], resources: [serviceaccounts]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: researcher-impersonates}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonator}
subjects: [{kind: ServiceAccount, name: researcher}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: viewer}
rules:
- {verbs: [get], apiGroups: [""], resources: [configmaps]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, labels: {mandate.dev/agent: researcher}}
spec:
  serviceAccountName: researcher
  containers: [{name: c, image: i}]
"#,
        );
        let pod = of(&results, "Pod", "agent");
        assert_eq!(pod.decision, "denied");
        assert!(
            pod.reasons.contains(&"DangerousApiRights".to_owned()),
            "{pod:#?}"
        );
        let via = "RoleBinding team/researcher-impersonates -> Role team/impersonator grants in \
                   team: impersonate serviceaccounts";
        for (kind, name) in [
            ("RoleBinding", "researcher-impersonates"),
            ("Role", "impersonator"),
        ] {
            let rbac = of(&results, kind, name);
            assert_eq!(rbac.decision, "warned");
            assert_eq!(rbac.reasons, ["DangerousApiRights"]);
            assert_eq!(rbac.agent.as_deref(), Some("researcher"));
            assert!(
                rbac.findings[0]
                    .detail
                    .starts_with(&format!("AgentIdentity team/researcher: {via}: ")),
                "{rbac:#?}"
            );
        }
        assert!(
            !results.results.iter().any(|r| r.name == "viewer"),
            "RBAC that grants no agent a dangerous right is not reviewed"
        );
        assert!(results.refused);
        assert!(text(&results).contains("WARNED   RoleBinding team/researcher-impersonates"));
    }
}
