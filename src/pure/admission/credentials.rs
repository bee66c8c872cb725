//! A credential per tool: an agent pod, a [`Snapshot`] and the instant in; out, the JSON patch
//! (RFC 6902) mandate's mutating webhook answers with: one projected ServiceAccount token per
//! live tool of the pod's identity (the tool's audience, the identity's TTL), mounted read-only
//! into every init and regular container at `/var/run/mandate.dev/tools/<tool>/token`, and the
//! `mandate.dev/tool-credentials` annotation naming the tools. Also the rules that read what the
//! patch wrote: the annotation must be backed by the token volumes (pod validation), and which
//! pods of an agent lack the token of a tool it holds now (the identity's `CredentialsStale`).
//! Pure: never does I/O, never reads a clock.
//!
//! The patch is idempotent: a pod that already carries exactly these volumes, mounts and
//! annotation gets none, so the API server's reinvocation changes nothing. Names starting with
//! `mandate-tool-` and mount paths under `/var/run/mandate.dev/tools/` are mandate's (reserved):
//! one that differs from what a live tool needs is replaced, one for a tool no longer held is
//! removed. The user's own volumes and mounts are never touched.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::jiff::Timestamp;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::{Value, json};

use super::pod::{EXTENDED_TOKEN_SECONDS, PodView, agent_pod_mode};
use super::request::{Object, Request};
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Finding, Mode, Reason, Verdict};
use crate::api::{AGENT_LABEL, AgentIdentity, TOOL_CREDENTIALS_ANNOTATION};
use crate::authority::Authority;

/// The prefix of the token volumes mandate adds (`mandate-tool-<tool>`); reserved.
pub const VOLUME_PREFIX: &str = "mandate-tool-";
/// The directory the tokens are mounted under, one subdirectory per tool; reserved.
pub const TOOLS_DIRECTORY: &str = "/var/run/mandate.dev/tools";
/// The file name of the token in each tool's directory.
pub const TOKEN_FILE: &str = "token";
/// The longest volume name the API server accepts (a DNS label).
const MAX_VOLUME_NAME: usize = 63;

/// The token one tool gets in an agent's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCredential {
    pub tool: String,
    /// The tool's token audience: the decision service refuses the token at every other tool.
    pub audience: String,
    /// The token's lifetime: the identity's TTL (see [`credential_seconds`]).
    pub expiration_seconds: i64,
}

/// One RFC 6902 operation. Paths are JSON pointers into the pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOperation {
    Add { path: String, value: Value },
    Replace { path: String, value: Value },
    Remove { path: String },
}

/// The mutating webhook's answer: the verdict (allowed, or refused while mandate has not
/// synced) and the patch (empty: nothing to change).
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub verdict: Verdict,
    /// The tools the pod carries a credential for once patched, sorted; empty when it is no
    /// agent pod with live tools.
    pub tools: Vec<String>,
    pub patch: Vec<PatchOperation>,
}

/// What the index keeps of an agent's pod: its name and its `mandate.dev/tool-credentials`
/// annotation (`None` when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    pub name: String,
    pub credentials: Option<String>,
}

/// A pod lacking the token of a tool its agent holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StalePod {
    pub pod: String,
    /// The live tools it has no token for, sorted.
    pub missing: Vec<String>,
}

impl ToolCredential {
    /// The projected volume holding the token.
    pub fn volume(&self) -> Volume {
        Volume {
            name: volume_name(&self.tool),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![self.projection()]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    /// The read-only mount of [`ToolCredential::volume`] every container gets.
    pub fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: volume_name(&self.tool),
            mount_path: mount_path(&self.tool),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }

    fn projection(&self) -> VolumeProjection {
        VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                audience: Some(self.audience.clone()),
                expiration_seconds: Some(self.expiration_seconds),
                path: TOKEN_FILE.to_owned(),
                user: None,
            }),
            ..VolumeProjection::default()
        }
    }
}

/// The volume of `tool`'s token: `mandate-tool-<tool>`, or, when that would exceed 63
/// characters, the tool's name cut short and a hash of the whole name, so two long names never
/// share a volume.
pub fn volume_name(tool: &str) -> String {
    let name = format!("{VOLUME_PREFIX}{tool}");
    if name.len() <= MAX_VOLUME_NAME {
        return name;
    }
    let hash = format!("{:08x}", fnv1a(tool.as_bytes()));
    let keep = MAX_VOLUME_NAME - VOLUME_PREFIX.len() - 1 - hash.len();
    // Tool names are DNS labels (ASCII), so any byte index is a character boundary.
    format!("{VOLUME_PREFIX}{}-{hash}", &tool[..keep.min(tool.len())])
}

/// The directory `tool`'s token is mounted at: `/var/run/mandate.dev/tools/<tool>` (the file is
/// `token` inside it).
pub fn mount_path(tool: &str) -> String {
    format!("{TOOLS_DIRECTORY}/{tool}")
}

/// The lifetime of an identity's tool tokens: its TTL, as the TokenTTL rule reads it; one
/// second less when that is exactly 3607 s, which the API server would extend to a year.
pub fn credential_seconds(identity: &AgentIdentity) -> i64 {
    match identity.token_ttl_seconds() {
        EXTENDED_TOKEN_SECONDS => EXTENDED_TOKEN_SECONDS - 1,
        ttl => ttl,
    }
}

/// The credentials the pods of `identity` carry at `now`: one per live tool name, sorted by
/// tool. When two ToolBindings grant tools of the same name, the first by binding name gives
/// the audience (the tool directory is named after the tool).
pub fn tool_credentials(
    authority: &Authority,
    identity: &AgentIdentity,
    now: Timestamp,
) -> Vec<ToolCredential> {
    let namespace = identity.metadata.namespace.as_deref().unwrap_or_default();
    let agent = identity.metadata.name.as_deref().unwrap_or_default();
    let seconds = credential_seconds(identity);
    let mut credentials: Vec<ToolCredential> = Vec::new();
    // Sorted by (tool, binding): the first of each name wins.
    for held in authority.held_tools(namespace, agent, now) {
        if credentials.last().is_some_and(|c| c.tool == held.tool.name) {
            continue;
        }
        credentials.push(ToolCredential {
            tool: held.tool.name.clone(),
            audience: held.audience(),
            expiration_seconds: seconds,
        });
    }
    credentials
}

/// The mutating webhook's answer to `request`. Only pod CREATEs are patched (volumes are
/// immutable afterwards). Before the first snapshot an agent-labelled pod is refused
/// ([`Reason::NotReady`]): it would start without its credentials.
pub fn mutate(
    request: &Request,
    snapshot: Option<&Snapshot>,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Mutation {
    let Object::Pod(pods) = &request.object else {
        return Mutation::unchanged(Verdict::ignored());
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let subject = format!("Pod {namespace}/{}", request.name);
    if request.operation != Operation::Create
        || request.sub_resource.is_some()
        || namespace == config.own_namespace
    {
        return Mutation::unchanged(Verdict::skipped(subject));
    }
    // An unreadable pod is the validating webhook's to refuse.
    let Ok(pod) = pods.object.get() else {
        return Mutation::unchanged(Verdict::skipped(subject));
    };
    let Some(snapshot) = snapshot else {
        let finding = Finding::new(
            Reason::NotReady,
            "mandate is starting: its caches have not synced, so it cannot give this agent pod \
             its tool credentials yet; retry in a few seconds",
        );
        let labelled = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(AGENT_LABEL));
        return Mutation::unchanged(match labelled {
            Some(agent) => Verdict::reviewed(subject, Mode::Enforce)
                .agent(agent.as_str())
                .finding(finding),
            None => Verdict::skipped(subject).finding(finding),
        });
    };
    mutate_pod(pod, subject, snapshot, config, now)
}

/// [`mutate`] for a pod already read: patched when it is an agent pod running as its
/// identity's ServiceAccount and the identity holds live tools; otherwise left alone (the
/// validating webhook judges it).
pub fn mutate_pod(
    pod: &Pod,
    subject: String,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Mutation {
    let Some(view) = PodView::of(pod) else {
        return Mutation::unchanged(Verdict::skipped(subject));
    };
    let (Some(mode), Some(agent)) = (agent_pod_mode(&view, snapshot, config), view.agent()) else {
        return Mutation::unchanged(Verdict::skipped(subject));
    };
    let Some(identity) = snapshot.authority().identity(view.namespace, agent) else {
        return Mutation::unchanged(Verdict::skipped(subject));
    };
    // A token projects the pod's own ServiceAccount: a pod running as another is refused by
    // the validating rules (ServiceAccountMismatch) and gets no token for this agent's tools.
    if view.service_account() != identity.service_account_name() {
        return Mutation::unchanged(Verdict::skipped(subject));
    }
    let credentials = tool_credentials(snapshot.authority(), identity, now);
    if credentials.is_empty() {
        return Mutation::unchanged(Verdict::skipped(subject));
    }
    Mutation {
        verdict: Verdict::reviewed(subject, mode)
            .agent(agent)
            .owner(&identity.spec.owner),
        tools: credentials.iter().map(|c| c.tool.clone()).collect(),
        patch: credential_patch(pod, &credentials),
    }
}

impl Mutation {
    fn unchanged(verdict: Verdict) -> Self {
        Mutation {
            verdict,
            tools: Vec::new(),
            patch: Vec::new(),
        }
    }
}

/// The operations that give `pod` exactly `credentials`: their volumes, a read-only mount of
/// each in every init and regular container (ephemeral ones cannot be added at creation), and
/// the annotation. Empty when the pod already has them.
pub fn credential_patch(pod: &Pod, credentials: &[ToolCredential]) -> Vec<PatchOperation> {
    let mut patch = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return patch;
    };
    let volumes: Vec<(String, Volume)> = credentials
        .iter()
        .map(|c| (volume_name(&c.tool), c.volume()))
        .collect();
    sync_list(
        "/spec/volumes",
        spec.volumes.as_deref(),
        &volumes,
        |v| v.name.clone(),
        |v| v.name.starts_with(VOLUME_PREFIX),
        same_volume,
        &mut patch,
    );
    let kept: BTreeSet<String> = volumes.iter().map(|(name, _)| name.clone()).collect();
    let mounts: Vec<(String, VolumeMount)> = credentials
        .iter()
        .map(|c| (mount_path(&c.tool), c.mount()))
        .collect();
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let all =
        mount_lists("initContainers", init).chain(mount_lists("containers", &spec.containers));
    for (path, container) in all {
        // Mounts of mandate's volumes that are going away go with them (the API server refuses
        // a mount of a volume the pod lacks).
        let is_mandates = |m: &VolumeMount| {
            m.mount_path.starts_with(&format!("{TOOLS_DIRECTORY}/"))
                || (m.name.starts_with(VOLUME_PREFIX) && !kept.contains(&m.name))
        };
        sync_list(
            &path,
            container.volume_mounts.as_deref(),
            &mounts,
            |m| m.mount_path.clone(),
            is_mandates,
            same_mount,
            &mut patch,
        );
    }
    let tools = credentials
        .iter()
        .map(|c| c.tool.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let annotations = pod.metadata.annotations.as_ref();
    match annotations {
        None => patch.push(PatchOperation::Add {
            path: "/metadata/annotations".to_owned(),
            value: json!({ TOOL_CREDENTIALS_ANNOTATION: tools }),
        }),
        Some(annotations) if annotations.get(TOOL_CREDENTIALS_ANNOTATION) != Some(&tools) => {
            // `add` on an existing member replaces its value (RFC 6902, 4.1).
            patch.push(PatchOperation::Add {
                path: format!(
                    "/metadata/annotations/{}",
                    pointer_token(TOOL_CREDENTIALS_ANNOTATION)
                ),
                value: Value::String(tools),
            });
        }
        Some(_) => {}
    }
    patch
}

/// Each container of `list` (the pod's `field`) with the path of its volumeMounts.
fn mount_lists<'a>(
    field: &'static str,
    list: &'a [Container],
) -> impl Iterator<Item = (String, &'a Container)> {
    list.iter()
        .enumerate()
        .map(move |(i, c)| (format!("/spec/{field}/{i}/volumeMounts"), c))
}

/// Appends to `patch` the operations that make the list at `path` (`existing`) hold each of
/// `desired` once. Entries are matched by `key` (a volume's name, a mount's path); an entry
/// with a desired key that is not already `same` as the desired one is replaced, an entry
/// nobody wants is removed when `is_mandates` says it is mandate's (from the last, so earlier
/// indices stay valid), missing ones are appended; anything else stays as it is.
fn sync_list<T: Serialize>(
    path: &str,
    existing: Option<&[T]>,
    desired: &[(String, T)],
    key_of: impl Fn(&T) -> String,
    is_mandates: impl Fn(&T) -> bool,
    same: impl Fn(&T, &T) -> bool,
    patch: &mut Vec<PatchOperation>,
) {
    let value = |entry: &T| serde_json::to_value(entry).unwrap_or(Value::Null);
    let Some(existing) = existing else {
        if !desired.is_empty() {
            patch.push(PatchOperation::Add {
                path: path.to_owned(),
                value: Value::Array(desired.iter().map(|(_, d)| value(d)).collect()),
            });
        }
        return;
    };
    let wanted: BTreeMap<&str, &T> = desired.iter().map(|(k, d)| (k.as_str(), d)).collect();
    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut removals = Vec::new();
    for (index, entry) in existing.iter().enumerate() {
        let key = key_of(entry);
        match wanted.get(key.as_str()) {
            // A desired entry seen twice (a mount path repeated): the first one counts.
            Some(_) if present.contains(&key) => removals.push(index),
            Some(desired) => {
                if !same(entry, desired) {
                    patch.push(PatchOperation::Replace {
                        path: format!("{path}/{index}"),
                        value: value(desired),
                    });
                }
                present.insert(key);
            }
            None if is_mandates(entry) => removals.push(index),
            None => {}
        }
    }
    for index in removals.into_iter().rev() {
        patch.push(PatchOperation::Remove {
            path: format!("{path}/{index}"),
        });
    }
    for (key, desired) in desired {
        if !present.contains(key) {
            patch.push(PatchOperation::Add {
                path: format!("{path}/-"),
                value: value(desired),
            });
        }
    }
}

/// Whether `volume` is `desired`'s token volume, whatever defaults the API server filled in
/// (the projection's `defaultMode`).
fn same_volume(volume: &Volume, desired: &Volume) -> bool {
    let bare = |v: &Volume| Volume {
        projected: None,
        ..v.clone()
    };
    let sources = |v: &Volume| v.projected.as_ref().and_then(|p| p.sources.clone());
    bare(volume) == bare(desired) && sources(volume) == sources(desired)
}

/// Whether `mount` is `desired`, reading the API server's spelled-out defaults as unset.
fn same_mount(mount: &VolumeMount, desired: &VolumeMount) -> bool {
    let unset = |value: &Option<String>, default: &str| {
        value
            .as_deref()
            .is_none_or(|v| v.is_empty() || v == default)
    };
    mount.name == desired.name
        && mount.mount_path == desired.mount_path
        && mount.read_only == desired.read_only
        && unset(&mount.sub_path, "")
        && unset(&mount.sub_path_expr, "")
        && unset(&mount.mount_propagation, "None")
        && unset(&mount.recursive_read_only, "Disabled")
        && mount.bind_mount_options.as_ref().is_none_or(Vec::is_empty)
}

/// `text` as one JSON pointer reference token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn pointer_token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// 32-bit FNV-1a: a stable hash for shortened names (the standard library's may change).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The tools a `mandate.dev/tool-credentials` value names.
pub fn given_tools(annotation: &str) -> BTreeSet<&str> {
    annotation
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The annotation must be backed: every tool it names needs its token volume
/// (`mandate-tool-<tool>`) projecting a token for the audience of a tool of that name the
/// agent holds now. A pod cannot claim credentials it lacks (and so hide from
/// `CredentialsStale`). Each failure is [`Reason::TokenTTL`].
pub fn annotation_findings(
    pod: &PodView<'_>,
    agent: &str,
    authority: &Authority,
    now: Timestamp,
) -> Vec<Finding> {
    let Some(annotation) = pod
        .annotations
        .and_then(|a| a.get(TOOL_CREDENTIALS_ANNOTATION))
    else {
        return Vec::new();
    };
    let mut audiences: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for held in authority.held_tools(pod.namespace, agent, now) {
        audiences
            .entry(held.tool.name.as_str())
            .or_default()
            .insert(held.audience());
    }
    let volumes = pod.spec.volumes.as_deref().unwrap_or(&[]);
    given_tools(annotation)
        .into_iter()
        .filter_map(|tool| {
            let name = volume_name(tool);
            let projected: Vec<&str> = volumes
                .iter()
                .filter(|v| v.name == name)
                .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
                .filter_map(|s| s.service_account_token.as_ref()?.audience.as_deref())
                .collect();
            let why = match audiences.get(tool) {
                None => format!("AgentIdentity {agent} holds no tool {tool} now"),
                Some(wanted) if projected.iter().any(|a| wanted.contains(*a)) => return None,
                Some(wanted) => format!(
                    "the pod has no volume {name} projecting a token for audience {}",
                    wanted.iter().cloned().collect::<Vec<_>>().join(" or ")
                ),
            };
            Some(Finding::new(
                Reason::TokenTTL,
                format!(
                    "annotation {TOOL_CREDENTIALS_ANNOTATION} names tool {tool}, but {why}: remove \
                     the annotation and let mandate's webhook write it"
                ),
            ))
        })
        .collect()
}

/// The pods among `pods` that lack a token of one of `live` (tool names), by their
/// annotation, sorted by pod name. A pod without the annotation lacks every live tool's.
pub fn stale_pods(pods: &[AgentPod], live: &BTreeSet<&str>) -> Vec<StalePod> {
    let mut stale: Vec<StalePod> = pods
        .iter()
        .filter_map(|pod| {
            let given = pod
                .credentials
                .as_deref()
                .map(given_tools)
                .unwrap_or_default();
            let missing: Vec<String> = live
                .iter()
                .filter(|tool| !given.contains(*tool))
                .map(|tool| (*tool).to_owned())
                .collect();
            (!missing.is_empty()).then(|| StalePod {
                pod: pod.name.clone(),
                missing,
            })
        })
        .collect();
    stale.sort_by(|a, b| a.pod.cmp(&b.pod));
    stale
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::api::AgentClass;
    use crate::authority::fixtures::*;

    /// `researcher` (Ready, TTL one hour) holds `web-search` and `docs` (audience
    /// `https://docs.example.com`) in the enforce namespace `agents`; `idle` holds nothing.
    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").ready().build())
            .binding(
                binding("search")
                    .agent("researcher")
                    .tool(tool("web-search"))
                    .tool(tool("docs").audience("https://docs.example.com"))
                    .build(),
            )
            .identity(identity("idle").ready().build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build()
    }

    fn mutation(pod: &Pod, snapshot: &Snapshot) -> Mutation {
        mutate_pod(
            pod,
            "Pod agents/p".to_owned(),
            snapshot,
            &AdmissionConfig::default(),
            NOW,
        )
    }

    /// `pod` with `patch` applied, as the API server applies it.
    fn patched(pod: &Pod, patch: &[PatchOperation]) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap_or_else(|e| panic!("{e}"));
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(patch).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        json_patch::patch(&mut value, &patch).unwrap_or_else(|e| panic!("{e}: {patch:?}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn with_init_container(pod: PodBuilder) -> PodBuilder {
        pod.with_spec(|spec| {
            spec.init_containers = Some(vec![Container {
                name: "setup".into(),
                ..Container::default()
            }]);
        })
    }

    fn volumes(pod: &Pod) -> Vec<Volume> {
        pod.spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
    }

    fn mounts(container: &Container) -> Vec<(String, String, Option<bool>)> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
            .collect()
    }

    fn annotation(pod: &Pod) -> Option<&str> {
        pod.metadata
            .annotations
            .as_ref()?
            .get(TOOL_CREDENTIALS_ANNOTATION)
            .map(String::as_str)
    }

    #[test]
    fn an_agent_pod_gets_one_token_per_live_tool_mounted_read_only_in_every_container() {
        let snapshot = snapshot();
        let pod = with_init_container(pod("p").runs_as("researcher")).build();
        let mutation = mutation(&pod, &snapshot);
        assert_eq!(mutation.tools, ["docs", "web-search"]);
        assert_eq!(
            mutation.verdict.decision(),
            Some(crate::admission::Decision::Allowed)
        );
        assert_eq!(mutation.verdict.agent_name(), Some("researcher"));
        let pod = patched(&pod, &mutation.patch);

        let tokens: Vec<(String, Option<String>, Option<i64>, String)> = volumes(&pod)
            .iter()
            .flat_map(|v| {
                v.projected
                    .iter()
                    .flat_map(|p| p.sources.iter().flatten())
                    .filter_map(|s| s.service_account_token.as_ref())
                    .map(|t| {
                        (
                            v.name.clone(),
                            t.audience.clone(),
                            t.expiration_seconds,
                            t.path.clone(),
                        )
                    })
            })
            .collect();
        assert_eq!(
            tokens,
            [
                (
                    "mandate-tool-docs".to_owned(),
                    Some("https://docs.example.com".to_owned()),
                    Some(3600),
                    "token".to_owned()
                ),
                (
                    "mandate-tool-web-search".to_owned(),
                    Some("mandate.dev/agents/web-search".to_owned()),
                    Some(3600),
                    "token".to_owned()
                ),
            ]
        );
        let spec = pod.spec.as_ref().unwrap_or_else(|| unreachable!());
        let expected = vec![
            (
                "mandate-tool-docs".to_owned(),
                "/var/run/mandate.dev/tools/docs".to_owned(),
                Some(true),
            ),
            (
                "mandate-tool-web-search".to_owned(),
                "/var/run/mandate.dev/tools/web-search".to_owned(),
                Some(true),
            ),
        ];
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            assert_eq!(mounts(container), expected, "{}", container.name);
        }
        assert_eq!(annotation(&pod), Some("docs,web-search"));
    }

    #[test]
    fn a_patched_pod_gets_no_patch_the_second_time_even_with_the_api_servers_defaults() {
        let snapshot = snapshot();
        let pod = with_init_container(pod("p").runs_as("researcher")).build();
        let once = patched(&pod, &mutation(&pod, &snapshot).patch);
        assert_eq!(mutation(&once, &snapshot).patch, []);

        // What the API server fills in after a patch: the projection's default mode.
        let mut defaulted = once.clone();
        for volume in defaulted
            .spec
            .as_mut()
            .and_then(|s| s.volumes.as_mut())
            .into_iter()
            .flatten()
        {
            if let Some(projected) = volume.projected.as_mut() {
                projected.default_mode = Some(0o644);
            }
        }
        assert_eq!(mutation(&defaulted, &snapshot).patch, []);
    }

    #[test]
    fn a_container_another_webhook_added_gets_the_mounts_when_mandate_is_called_again() {
        let snapshot = snapshot();
        let pod = pod("p").runs_as("researcher").build();
        let mut once = patched(&pod, &mutation(&pod, &snapshot).patch);
        // A sidecar injector runs after mandate; the API server calls mandate again.
        if let Some(spec) = once.spec.as_mut() {
            spec.containers.push(Container {
                name: "proxy".into(),
                ..Container::default()
            });
        }
        let again = mutation(&once, &snapshot).patch;
        assert_eq!(
            again
                .iter()
                .map(|op| match op {
                    PatchOperation::Add { path, .. } => path.as_str(),
                    _ => "not an add",
                })
                .collect::<Vec<_>>(),
            ["/spec/containers/1/volumeMounts"]
        );
        let twice = patched(&once, &again);
        assert_eq!(mutation(&twice, &snapshot).patch, []);
    }

    #[test]
    fn the_users_own_volumes_mounts_and_annotations_stay_as_they_were() {
        let snapshot = snapshot();
        let pod = pod("p")
            .runs_as("researcher")
            .token_volume("vault", Some("vault"), Some(600))
            .secret_volume("config", "app-config")
            .with_spec(|spec| {
                spec.containers[0].volume_mounts = Some(vec![VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/app".into(),
                    ..VolumeMount::default()
                }]);
            })
            .build();
        let mut pod = pod;
        pod.metadata.annotations = Some([("team".to_owned(), "a".to_owned())].into());
        let after = patched(&pod, &mutation(&pod, &snapshot).patch);
        let names: Vec<String> = volumes(&after).into_iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            [
                "vault",
                "config",
                "mandate-tool-docs",
                "mandate-tool-web-search"
            ]
        );
        assert_eq!(volumes(&after)[..2], volumes(&pod)[..]);
        let spec = after.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(mounts(&spec.containers[0])[0].1, "/etc/app");
        assert_eq!(mounts(&spec.containers[0]).len(), 3);
        let annotations = after.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            annotations
                .get(TOOL_CREDENTIALS_ANNOTATION)
                .map(String::as_str),
            Some("docs,web-search")
        );
    }

    #[test]
    fn mandates_volumes_for_tools_no_longer_held_go_and_wrong_ones_are_put_right() {
        let snapshot = snapshot();
        // A pod copied from an older one: a token of a withdrawn tool, a stale lifetime for
        // docs, and the annotation as it was.
        let mut pod = pod("p")
            .runs_as("researcher")
            .token_volume(
                "mandate-tool-retired",
                Some("mandate.dev/agents/retired"),
                Some(3600),
            )
            .token_volume(
                "mandate-tool-docs",
                Some("https://docs.example.com"),
                Some(86_400),
            )
            .with_spec(|spec| {
                spec.containers[0].volume_mounts = Some(vec![
                    VolumeMount {
                        name: "mandate-tool-retired".into(),
                        mount_path: "/var/run/mandate.dev/tools/retired".into(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: "mandate-tool-docs".into(),
                        mount_path: "/var/run/mandate.dev/tools/docs".into(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    },
                ]);
            })
            .build();
        pod.metadata.annotations = Some(
            [(
                TOOL_CREDENTIALS_ANNOTATION.to_owned(),
                "docs,retired".to_owned(),
            )]
            .into(),
        );
        let after = patched(&pod, &mutation(&pod, &snapshot).patch);
        let credentials = tool_credentials(
            snapshot.authority(),
            snapshot
                .authority()
                .identity(NS, "researcher")
                .unwrap_or_else(|| unreachable!()),
            NOW,
        );
        let expected: Vec<Volume> = credentials.iter().map(ToolCredential::volume).collect();
        assert_eq!(volumes(&after), expected);
        let spec = after.spec.as_ref().unwrap_or_else(|| unreachable!());
        let paths: Vec<String> = mounts(&spec.containers[0])
            .into_iter()
            .map(|m| m.1)
            .collect();
        assert_eq!(
            paths,
            [
                "/var/run/mandate.dev/tools/docs",
                "/var/run/mandate.dev/tools/web-search"
            ]
        );
        assert_eq!(annotation(&after), Some("docs,web-search"));
        assert_eq!(mutation(&after, &snapshot).patch, []);
    }

    #[test]
    fn a_long_tool_name_gets_a_short_hashed_volume_name_that_no_other_name_shares() {
        let long = "a".repeat(60);
        let other = format!("{}b", "a".repeat(59));
        let (one, two) = (volume_name(&long), volume_name(&other));
        assert_eq!(one.len(), 63);
        assert_eq!(two.len(), 63);
        assert_ne!(one, two);
        assert!(one.starts_with("mandate-tool-aaaa"), "{one}");
        assert_eq!(volume_name(&long), one, "stable");
        assert_eq!(volume_name("docs"), "mandate-tool-docs");
        assert_eq!(volume_name(&"c".repeat(50)).len(), 63);
        assert_eq!(
            volume_name(&"c".repeat(50)),
            format!("mandate-tool-{}", "c".repeat(50))
        );
    }

    #[test]
    fn a_ttl_of_exactly_3607_seconds_becomes_3606() {
        let odd = identity("x").credentials(Some(3607), []).build();
        assert_eq!(credential_seconds(&odd), 3606);
        let payer = identity("payer")
            .class(AgentClass::TransactionExecutor)
            .build();
        assert_eq!(credential_seconds(&payer), 600);
    }

    #[test]
    fn pods_that_are_no_agents_pods_or_whose_identity_holds_nothing_are_left_alone() {
        let snapshot = snapshot();
        for pod in [
            pod("web").namespace("team-b").build(),
            pod("p").runs_as("ghost").build(),
            pod("p").runs_as("idle").build(),
            pod("p")
                .agent("researcher")
                .service_account("default")
                .build(),
        ] {
            let mutation = mutation(&pod, &snapshot);
            assert_eq!(mutation.patch, [], "{pod:?}");
            assert!(mutation.tools.is_empty());
            assert_ne!(
                mutation.verdict.decision(),
                Some(crate::admission::Decision::Denied)
            );
        }
    }

    fn request(pod: &Pod, operation: &str) -> Request {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p",
                "namespace": NS,
                "operation": operation,
                "userInfo": {"username": "dev"},
                "object": pod,
                "oldObject": if operation == "UPDATE" { json!(pod) } else { Value::Null },
            }
        });
        crate::admission::parse_review(review.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_pod_creates_are_patched_and_before_the_first_snapshot_agent_pods_are_refused() {
        let snapshot = snapshot();
        let config = AdmissionConfig::default();
        let pod = pod("p").runs_as("researcher").build();
        let created = mutate(&request(&pod, "CREATE"), Some(&snapshot), &config, NOW);
        assert_eq!(created.tools, ["docs", "web-search"]);
        assert!(!created.patch.is_empty());
        let updated = mutate(&request(&pod, "UPDATE"), Some(&snapshot), &config, NOW);
        assert_eq!(updated.patch, []);

        let unsynced = mutate(&request(&pod, "CREATE"), None, &config, NOW);
        assert_eq!(unsynced.patch, []);
        assert_eq!(unsynced.verdict.codes(), ["NotReady"]);
        assert_eq!(
            unsynced.verdict.decision(),
            Some(crate::admission::Decision::Denied)
        );
        let stranger = crate::authority::fixtures::pod("web").build();
        let unsynced = mutate(&request(&stranger, "CREATE"), None, &config, NOW);
        assert_ne!(
            unsynced.verdict.decision(),
            Some(crate::admission::Decision::Denied)
        );
    }

    #[test]
    fn the_patch_is_json_patch_with_the_annotation_key_escaped() {
        let snapshot = snapshot();
        let mut pod = pod("p").runs_as("researcher").build();
        pod.metadata.annotations = Some([("team".to_owned(), "a".to_owned())].into());
        let patch =
            serde_json::to_value(mutation(&pod, &snapshot).patch).unwrap_or_else(|e| panic!("{e}"));
        let ops = patch.as_array().cloned().unwrap_or_default();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/volumes");
        assert_eq!(ops[1]["path"], "/spec/containers/0/volumeMounts");
        assert_eq!(
            ops.last().map(|op| op["path"].clone()),
            Some(json!("/metadata/annotations/mandate.dev~1tool-credentials"))
        );
    }

    fn agent_pod(name: &str, credentials: Option<&str>) -> AgentPod {
        AgentPod {
            name: name.to_owned(),
            credentials: credentials.map(str::to_owned),
        }
    }

    #[test]
    fn a_pod_whose_annotation_lacks_a_live_tool_is_stale_naming_what_it_lacks() {
        let live: BTreeSet<&str> = ["docs", "search"].into();
        let pods = [
            agent_pod("new", Some("docs,search")),
            agent_pod("old", Some("docs")),
            agent_pod("ancient", None),
            agent_pod("extra", Some("docs,retired,search")),
        ];
        assert_eq!(
            stale_pods(&pods, &live),
            [
                StalePod {
                    pod: "ancient".into(),
                    missing: vec!["docs".into(), "search".into()]
                },
                StalePod {
                    pod: "old".into(),
                    missing: vec!["search".into()]
                },
            ]
        );
        assert_eq!(stale_pods(&pods, &BTreeSet::new()), []);
    }

    fn findings_for(pod: &Pod, snapshot: &Snapshot) -> Vec<Finding> {
        let view = PodView::of(pod).unwrap_or_else(|| unreachable!());
        annotation_findings(&view, "researcher", snapshot.authority(), NOW)
    }

    #[test]
    fn an_annotation_is_accepted_only_with_the_token_volumes_it_names() {
        let snapshot = snapshot();
        let bare = pod("p").runs_as("researcher").build();
        let good = patched(&bare, &mutation(&bare, &snapshot).patch);
        assert_eq!(findings_for(&good, &snapshot), []);

        let mut forged = bare.clone();
        forged.metadata.annotations = Some(
            [(
                TOOL_CREDENTIALS_ANNOTATION.to_owned(),
                "docs,web-search,vault".to_owned(),
            )]
            .into(),
        );
        let findings = findings_for(&forged, &snapshot);
        let details: Vec<&str> = findings.iter().map(|f| f.detail.as_str()).collect();
        assert_eq!(findings.len(), 3, "{details:?}");
        assert!(findings.iter().all(|f| f.reason == Reason::TokenTTL));
        assert!(
            details[0].contains(
                "names tool docs, but the pod has no volume mandate-tool-docs \
                                 projecting a token for audience https://docs.example.com"
            ),
            "{details:?}"
        );
        assert!(
            details[1].contains("holds no tool vault now"),
            "{details:?}"
        );

        // The volume exists but projects a token for another audience.
        let mut wrong = pod("p")
            .runs_as("researcher")
            .token_volume(
                "mandate-tool-docs",
                Some("mandate.dev/agents/other"),
                Some(600),
            )
            .build();
        wrong.metadata.annotations =
            Some([(TOOL_CREDENTIALS_ANNOTATION.to_owned(), "docs".to_owned())].into());
        assert_eq!(findings_for(&wrong, &snapshot).len(), 1);
    }
}
