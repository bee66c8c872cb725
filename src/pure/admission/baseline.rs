//! The Pod Security Standards' baseline profile: a pod spec and the pod's annotations in; every
//! violation out, each with its control, the field that failed (`spec.containers[0].
//! securityContext.privileged`) and what is wrong with it. Then the exemptions of the agent's
//! identity in, the [`Finding`]s (`PodSecurityBaseline`) of what they do not cover out. Pure:
//! never does I/O.
//!
//! The controls and allowed values are those of the Kubernetes documentation (Pod Security
//! Standards, baseline) as Pod Security Admission v1.37 implements them
//! (`k8s.io/pod-security-admission/policy`): init, regular and ephemeral containers alike.
//! hostNetwork is left out on purpose: the pod rules refuse it as `HostNetwork`, once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Lifecycle, PodSpec, Probe, SELinuxOptions, SeccompProfile, SecurityContext,
    WindowsSecurityContextOptions,
};

use crate::api::{AgentIdentity, BaselineControl, OwnerKind, PodSecurityExemption};
use crate::authority::{Finding, Reason, approval_lapse};

/// Capabilities a container may add under baseline (the container runtimes' default set).
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The safe sysctls a pod may set under baseline (Kubernetes v1.37's list: namespaced and
/// isolated from other pods on the node). Kubernetes adds to it now and then: keep it in step
/// with the documentation.
pub const SAFE_SYSCTLS: [&str; 14] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// SELinux types a pod or container may set (empty: the runtime's).
const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The annotation prefix of the (deprecated, still honoured) per-container AppArmor profile.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// One failed baseline control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub control: BaselineControl,
    /// The field that failed, as a path into the pod (`spec.hostPID`).
    pub field: String,
    /// What is wrong with it (`is true`).
    pub problem: String,
    /// The capability or sysctl, for the controls whose exemptions name them.
    pub item: Option<String>,
}

impl Violation {
    fn new(control: BaselineControl, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Violation {
            control,
            field: field.into(),
            problem: problem.into(),
            item: None,
        }
    }

    fn naming(mut self, item: &str) -> Self {
        self.item = Some(item.to_owned());
        self
    }

    /// `spec.hostPID is true`.
    pub fn message(&self) -> String {
        format!("{} {}", self.field, self.problem)
    }
}

/// The parts of a container (init, regular or ephemeral) the controls read, with its path.
struct ContainerView<'a> {
    path: String,
    security: Option<&'a SecurityContext>,
    host_ports: Vec<i32>,
    probes: [(&'static str, Option<&'a Probe>); 3],
    lifecycle: Option<&'a Lifecycle>,
}

/// The view of a `Container` or an `EphemeralContainer`: two types with the same fields.
macro_rules! container_view {
    ($path:expr, $c:expr) => {{
        let c = $c;
        ContainerView {
            path: $path,
            security: c.security_context.as_ref(),
            host_ports: host_ports(c.ports.iter().flatten().map(|p| p.host_port)),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
        }
    }};
}

/// Every port's hostPort, 0 where none is set (so indexes stay those of `ports`).
fn host_ports(ports: impl Iterator<Item = Option<i32>>) -> Vec<i32> {
    ports.map(|p| p.unwrap_or_default()).collect()
}

/// Init containers, containers and ephemeral containers, each with its path.
fn containers(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let init = spec.init_containers.iter().flatten().enumerate();
    let regular = spec.containers.iter().enumerate();
    let ephemeral = spec.ephemeral_containers.iter().flatten().enumerate();
    let ephemeral =
        ephemeral.map(|(i, c)| container_view!(format!("spec.ephemeralContainers[{i}]"), c));
    init.map(|(i, c)| container_view!(format!("spec.initContainers[{i}]"), c))
        .chain(regular.map(|(i, c)| container_view!(format!("spec.containers[{i}]"), c)))
        .chain(ephemeral)
        .collect()
}

/// Every baseline violation of a pod with `spec` and `annotations`, pod-level fields first,
/// then container by container.
pub fn violations(
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<Violation> {
    let mut found = Vec::new();
    if spec.host_pid == Some(true) {
        found.push(Violation::new(
            BaselineControl::HostPid,
            "spec.hostPID",
            "is true",
        ));
    }
    if spec.host_ipc == Some(true) {
        found.push(Violation::new(
            BaselineControl::HostIpc,
            "spec.hostIPC",
            "is true",
        ));
    }
    pod_security_context(spec, &mut found);
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if let Some(host) = &volume.host_path {
            found.push(Violation::new(
                BaselineControl::HostPath,
                format!("spec.volumes[{i}].hostPath"),
                format!("mounts the node's {} (volume {})", host.path, volume.name),
            ));
        }
    }
    // A pod in its own user namespace may unmask /proc (baseline since v1.35).
    let user_namespace = spec.host_users == Some(false);
    for container in containers(spec) {
        container_violations(&container, user_namespace, &mut found);
    }
    for (key, value) in annotations.into_iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX)
            && !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/"))
        {
            found.push(Violation::new(
                BaselineControl::AppArmor,
                format!("metadata.annotations['{key}']"),
                format!("is {value}, not runtime/default or localhost/<profile>"),
            ));
        }
    }
    found
}

/// The pod-level security context: HostProcess, SELinux, seccomp, AppArmor, sysctls.
fn pod_security_context(spec: &PodSpec, found: &mut Vec<Violation>) {
    let Some(context) = &spec.security_context else {
        return;
    };
    let path = "spec.securityContext";
    shared_options(
        path,
        &context.windows_options,
        &context.se_linux_options,
        &context.seccomp_profile,
        &context.app_armor_profile,
        found,
    );
    for (i, sysctl) in context.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            found.push(
                Violation::new(
                    BaselineControl::Sysctls,
                    format!("{path}.sysctls[{i}].name"),
                    format!("is {}, outside the safe set", sysctl.name),
                )
                .naming(&sysctl.name),
            );
        }
    }
}

fn container_violations(c: &ContainerView<'_>, user_namespace: bool, found: &mut Vec<Violation>) {
    let path = &c.path;
    if let Some(security) = c.security {
        let context = format!("{path}.securityContext");
        if security.privileged == Some(true) {
            found.push(Violation::new(
                BaselineControl::Privileged,
                format!("{context}.privileged"),
                "is true",
            ));
        }
        let added = security.capabilities.as_ref().and_then(|c| c.add.as_ref());
        for (i, capability) in added.into_iter().flatten().enumerate() {
            if !BASELINE_CAPABILITIES.contains(&capability.as_str()) {
                found.push(
                    Violation::new(
                        BaselineControl::Capabilities,
                        format!("{context}.capabilities.add[{i}]"),
                        format!("is {capability}, beyond the baseline set"),
                    )
                    .naming(capability),
                );
            }
        }
        if let Some(mount) = security.proc_mount.as_deref()
            && mount != "Default"
            && !user_namespace
        {
            found.push(Violation::new(
                BaselineControl::ProcMount,
                format!("{context}.procMount"),
                format!("is {mount}, not Default (outside a user namespace, hostUsers: false)"),
            ));
        }
        shared_options(
            &context,
            &security.windows_options,
            &security.se_linux_options,
            &security.seccomp_profile,
            &security.app_armor_profile,
            found,
        );
    }
    for (i, port) in c.host_ports.iter().enumerate() {
        if *port != 0 {
            found.push(Violation::new(
                BaselineControl::HostPorts,
                format!("{path}.ports[{i}].hostPort"),
                format!("is {port}"),
            ));
        }
    }
    let probes = c
        .probes
        .iter()
        .filter_map(|(name, probe)| Some((*name, (*probe)?)))
        .map(|(name, p)| (name.to_owned(), p.http_get.as_ref(), p.tcp_socket.as_ref()));
    let hooks = c.lifecycle.into_iter().flat_map(|l| {
        [
            ("postStart", l.post_start.as_ref()),
            ("preStop", l.pre_stop.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, hook)| Some((format!("lifecycle.{name}"), hook?)))
        .map(|(name, h)| (name, h.http_get.as_ref(), h.tcp_socket.as_ref()))
    });
    for (name, http, tcp) in probes.chain(hooks) {
        let hosts = [
            ("httpGet", http.and_then(|h| h.host.as_deref())),
            ("tcpSocket", tcp.and_then(|t| t.host.as_deref())),
        ];
        for (action, host) in hosts {
            if let Some(host) = host.filter(|h| !h.is_empty()) {
                found.push(Violation::new(
                    BaselineControl::HostProbes,
                    format!("{path}.{name}.{action}.host"),
                    format!("is {host}: probes and hooks may only reach the pod itself"),
                ));
            }
        }
    }
}

fn selinux(context: &str, options: &SELinuxOptions, found: &mut Vec<Violation>) {
    let path = format!("{context}.seLinuxOptions");
    let type_ = options.type_.as_deref().unwrap_or_default();
    if !SELINUX_TYPES.contains(&type_) {
        found.push(Violation::new(
            BaselineControl::SeLinux,
            format!("{path}.type"),
            format!("is {type_}, not one of container_t, container_init_t, container_kvm_t, container_engine_t"),
        ));
    }
    for (field, value) in [("user", &options.user), ("role", &options.role)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            found.push(Violation::new(
                BaselineControl::SeLinux,
                format!("{path}.{field}"),
                format!("is set ({value})"),
            ));
        }
    }
}

/// The options pod and container security contexts share (HostProcess, SELinux, seccomp,
/// AppArmor), of the one at `context`.
fn shared_options(
    context: &str,
    windows: &Option<WindowsSecurityContextOptions>,
    selinux_options: &Option<SELinuxOptions>,
    seccomp: &Option<SeccompProfile>,
    apparmor: &Option<AppArmorProfile>,
    found: &mut Vec<Violation>,
) {
    if windows.as_ref().and_then(|w| w.host_process) == Some(true) {
        found.push(Violation::new(
            BaselineControl::HostProcess,
            format!("{context}.windowsOptions.hostProcess"),
            "is true",
        ));
    }
    if let Some(options) = selinux_options {
        selinux(context, options, found);
    }
    if let Some(p) = seccomp {
        let field = format!("{context}.seccompProfile.type");
        profile(BaselineControl::Seccomp, field, &p.type_, found);
    }
    if let Some(p) = apparmor {
        let field = format!("{context}.appArmorProfile.type");
        profile(BaselineControl::AppArmor, field, &p.type_, found);
    }
}

/// A seccomp or AppArmor profile `type_` at `field`: RuntimeDefault and Localhost pass, the
/// rest (Unconfined) fails `control`.
fn profile(control: BaselineControl, field: String, type_: &str, found: &mut Vec<Violation>) {
    if !matches!(type_, "RuntimeDefault" | "Localhost") {
        found.push(Violation::new(
            control,
            field,
            format!("is {type_}, not RuntimeDefault or Localhost"),
        ));
    }
}

/// A capability without its optional `CAP_` prefix, as runtimes read it.
fn capability(name: &str) -> &str {
    name.strip_prefix("CAP_").unwrap_or(name)
}

/// The exemption of `identity` for `violation`'s control (and its capability or sysctl).
fn exemption_for<'a>(
    violation: &Violation,
    identity: &'a AgentIdentity,
) -> Option<&'a PodSecurityExemption> {
    let exemption = identity
        .spec
        .pod_security_exemptions
        .iter()
        .find(|e| e.control == violation.control)?;
    let Some(item) = violation.item.as_deref() else {
        return Some(exemption);
    };
    let named = match violation.control {
        BaselineControl::Capabilities => exemption
            .capabilities
            .iter()
            .any(|c| capability(c) == capability(item)),
        _ => exemption.sysctls.iter().any(|s| s == item),
    };
    named.then_some(exemption)
}

/// Why the approval of `exemption` does not count (`None`: it counts). The API server's
/// schema requires an approval and admission checks who applied it; what can still be wrong
/// here is an approver who is (or has since become) the agent's owner, an empty name, or an
/// approval given for another owner than the current one (`authority::approval_lapse`).
pub fn invalid_approval(
    exemption: &PodSecurityExemption,
    identity: &AgentIdentity,
) -> Option<String> {
    let approver = exemption.approval.approved_by.trim();
    let owner = &identity.spec.owner;
    if approver.is_empty() {
        return Some("names no approver".to_owned());
    }
    if owner.kind == OwnerKind::User && owner.name == approver {
        return Some(format!("is approved by {approver}, the agent's owner"));
    }
    let field = format!(
        "podSecurityExemptions[{}].approval",
        exemption.control.as_str()
    );
    approval_lapse(&exemption.approval, owner, &field).map(|why| format!("is void ({why})"))
}

/// The `PodSecurityBaseline` findings of a pod of `agent` (its identity, when it exists) with
/// `spec` and `annotations`: one per violation its identity does not validly exempt.
pub fn baseline_findings(
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    agent: Option<(&str, &AgentIdentity)>,
) -> Vec<Finding> {
    violations(spec, annotations)
        .into_iter()
        .filter_map(|violation| {
            let control = violation.control.as_str();
            let what = match &violation.item {
                Some(item) => format!("a {control} exemption naming {item}"),
                None => format!("a {control} exemption"),
            };
            let advice = match agent {
                None => "remove it".to_owned(),
                Some((agent, identity)) => match exemption_for(&violation, identity) {
                    Some(exemption) => match invalid_approval(exemption, identity) {
                        None => return None,
                        Some(why) => format!(
                            "the {control} exemption of AgentIdentity {agent} {why}, which does \
                             not count: remove it, or have a member of the approver group who is \
                             not the owner approve the exemption"
                        ),
                    },
                    None => format!(
                        "remove it, or have a member of the approver group who is not the \
                         owner add {what} to AgentIdentity {agent} (spec.podSecurityExemptions)"
                    ),
                },
            };
            Some(Finding::new(
                Reason::PodSecurityBaseline,
                format!("{} ({control}): {advice}", violation.message()),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::authority::fixtures::identity;

    fn spec(value: Value) -> PodSpec {
        let mut value = value;
        if value.get("containers").is_none() {
            value["containers"] = json!([{"name": "main", "image": "i"}]);
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn container(security: Value) -> Value {
        json!({"containers": [{"name": "main", "image": "i", "securityContext": security}]})
    }

    /// The field paths of `spec`'s violations, each with its control.
    fn failed(spec: &PodSpec) -> Vec<(BaselineControl, String)> {
        violations(spec, None)
            .into_iter()
            .map(|v| (v.control, v.field))
            .collect()
    }

    fn one(control: BaselineControl, field: &str) -> Vec<(BaselineControl, String)> {
        vec![(control, field.to_owned())]
    }

    #[test]
    fn a_minimal_pod_passes_baseline() {
        assert_eq!(failed(&spec(json!({}))), vec![]);
    }

    #[test]
    fn a_privileged_container_fails_with_its_field_named() {
        let spec = spec(container(json!({"privileged": true})));
        assert_eq!(
            failed(&spec),
            one(
                BaselineControl::Privileged,
                "spec.containers[0].securityContext.privileged"
            )
        );
        assert_eq!(
            violations(&spec, None)[0].message(),
            "spec.containers[0].securityContext.privileged is true"
        );
        assert_eq!(
            failed(&self::spec(container(json!({"privileged": false})))),
            vec![]
        );
    }

    #[test]
    fn init_and_ephemeral_containers_are_judged_too() {
        let spec = spec(json!({
            "initContainers": [{"name": "init", "image": "i", "securityContext": {"privileged": true}}],
            "containers": [{"name": "main", "image": "i"}],
            "ephemeralContainers": [{"name": "debugger", "image": "busybox",
                "securityContext": {"privileged": true}}],
        }));
        assert_eq!(
            failed(&spec),
            vec![
                (
                    BaselineControl::Privileged,
                    "spec.initContainers[0].securityContext.privileged".to_owned()
                ),
                (
                    BaselineControl::Privileged,
                    "spec.ephemeralContainers[0].securityContext.privileged".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn host_pid_and_host_ipc_fail_and_host_network_is_left_to_its_own_rule() {
        let spec = spec(json!({"hostPID": true, "hostIPC": true, "hostNetwork": true}));
        assert_eq!(
            failed(&spec),
            vec![
                (BaselineControl::HostPid, "spec.hostPID".to_owned()),
                (BaselineControl::HostIpc, "spec.hostIPC".to_owned()),
            ]
        );
        assert_eq!(
            failed(&self::spec(json!({"hostPID": false, "hostIPC": false}))),
            vec![]
        );
    }

    #[test]
    fn capabilities_beyond_the_baseline_set_fail_and_the_baseline_set_passes() {
        let spec = spec(container(json!({"capabilities": {
            "add": ["CHOWN", "SYS_ADMIN", "NET_ADMIN"], "drop": ["ALL"]}})));
        let found = violations(&spec, None);
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].securityContext.capabilities.add[1]",
                "spec.containers[0].securityContext.capabilities.add[2]"
            ]
        );
        assert_eq!(found[0].item.as_deref(), Some("SYS_ADMIN"));
        assert!(found[0].message().contains("is SYS_ADMIN"), "{found:?}");
        let all = spec_with_capabilities(&BASELINE_CAPABILITIES);
        assert_eq!(failed(&all), vec![]);
    }

    fn spec_with_capabilities(capabilities: &[&str]) -> PodSpec {
        spec(container(json!({"capabilities": {"add": capabilities}})))
    }

    #[test]
    fn host_path_volumes_fail() {
        let spec = spec(json!({"volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "node", "hostPath": {"path": "/var/lib/kubelet"}},
        ]}));
        let found = violations(&spec, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "spec.volumes[1].hostPath");
        assert!(found[0].problem.contains("/var/lib/kubelet"), "{found:?}");
    }

    #[test]
    fn host_ports_fail_and_container_ports_pass() {
        let spec = spec(
            json!({"containers": [{"name": "main", "image": "i", "ports": [
                {"containerPort": 80},
                {"containerPort": 443, "hostPort": 443},
                {"containerPort": 8080, "hostPort": 0},
            ]}]}),
        );
        assert_eq!(
            failed(&spec),
            one(
                BaselineControl::HostPorts,
                "spec.containers[0].ports[1].hostPort"
            )
        );
    }

    #[test]
    fn unconfined_apparmor_fails_by_field_and_by_annotation() {
        let pod_level =
            spec(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}));
        assert_eq!(
            failed(&pod_level),
            one(
                BaselineControl::AppArmor,
                "spec.securityContext.appArmorProfile.type"
            )
        );
        let container_level = spec(container(
            json!({"appArmorProfile": {"type": "Unconfined"}}),
        ));
        assert_eq!(
            failed(&container_level),
            one(
                BaselineControl::AppArmor,
                "spec.containers[0].securityContext.appArmorProfile.type"
            )
        );
        for allowed in ["RuntimeDefault", "Localhost"] {
            let spec = spec(container(json!({"appArmorProfile": {"type": allowed}})));
            assert_eq!(failed(&spec), vec![], "{allowed}");
        }
        let key = format!("{APPARMOR_ANNOTATION_PREFIX}main");
        let plain = spec(json!({}));
        let unconfined = BTreeMap::from([(key.clone(), "unconfined".to_owned())]);
        let found = violations(&plain, Some(&unconfined));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, format!("metadata.annotations['{key}']"));
        for allowed in ["runtime/default", "localhost/agent", ""] {
            let annotations = BTreeMap::from([(key.clone(), allowed.to_owned())]);
            assert_eq!(violations(&plain, Some(&annotations)), vec![], "{allowed}");
        }
    }

    #[test]
    fn selinux_types_outside_the_container_types_and_any_user_or_role_fail() {
        let spec = spec(json!({
            "securityContext": {"seLinuxOptions": {"type": "spc_t"}},
            "containers": [{"name": "main", "image": "i", "securityContext": {
                "seLinuxOptions": {"user": "system_u", "role": "system_r", "level": "s0:c1"}}}],
        }));
        assert_eq!(
            failed(&spec),
            vec![
                (
                    BaselineControl::SeLinux,
                    "spec.securityContext.seLinuxOptions.type".to_owned()
                ),
                (
                    BaselineControl::SeLinux,
                    "spec.containers[0].securityContext.seLinuxOptions.user".to_owned()
                ),
                (
                    BaselineControl::SeLinux,
                    "spec.containers[0].securityContext.seLinuxOptions.role".to_owned()
                ),
            ]
        );
        for allowed in SELINUX_TYPES {
            let spec = self::spec(container(
                json!({"seLinuxOptions": {"type": allowed, "level": "s0"}}),
            ));
            assert_eq!(failed(&spec), vec![], "{allowed}");
        }
    }

    #[test]
    fn an_unmasked_proc_mount_fails_unless_the_pod_has_its_own_user_namespace() {
        let unmasked = spec(container(json!({"procMount": "Unmasked"})));
        assert_eq!(
            failed(&unmasked),
            one(
                BaselineControl::ProcMount,
                "spec.containers[0].securityContext.procMount"
            )
        );
        assert_eq!(
            failed(&spec(container(json!({"procMount": "Default"})))),
            vec![]
        );
        let mut own_namespace = unmasked;
        own_namespace.host_users = Some(false);
        assert_eq!(failed(&own_namespace), vec![]);
    }

    #[test]
    fn an_unconfined_seccomp_profile_fails_at_pod_and_container_level() {
        let spec = spec(json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "main", "image": "i", "securityContext": {
                "seccompProfile": {"type": "Unconfined"}}}],
        }));
        assert_eq!(
            failed(&spec),
            vec![
                (
                    BaselineControl::Seccomp,
                    "spec.securityContext.seccompProfile.type".to_owned()
                ),
                (
                    BaselineControl::Seccomp,
                    "spec.containers[0].securityContext.seccompProfile.type".to_owned()
                ),
            ]
        );
        for allowed in [
            json!({"type": "RuntimeDefault"}),
            json!({"type": "Localhost", "localhostProfile": "p.json"}),
        ] {
            let spec = self::spec(json!({"securityContext": {"seccompProfile": allowed}}));
            assert_eq!(failed(&spec), vec![], "{allowed}");
        }
    }

    #[test]
    fn sysctls_outside_the_safe_set_fail_and_the_safe_set_passes() {
        let spec = spec(json!({"securityContext": {"sysctls": [
            {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            {"name": "kernel.msgmax", "value": "65536"},
        ]}}));
        let found = violations(&spec, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "spec.securityContext.sysctls[1].name");
        assert_eq!(found[0].item.as_deref(), Some("kernel.msgmax"));
        let safe: Vec<Value> = SAFE_SYSCTLS
            .iter()
            .map(|name| json!({"name": name, "value": "1"}))
            .collect();
        let all = self::spec(json!({"securityContext": {"sysctls": safe}}));
        assert_eq!(failed(&all), vec![]);
    }

    #[test]
    fn host_process_fails_at_pod_and_container_level() {
        let spec = spec(json!({
            "securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [{"name": "main", "image": "i", "securityContext": {
                "windowsOptions": {"hostProcess": true}}}],
        }));
        assert_eq!(
            failed(&spec),
            vec![
                (
                    BaselineControl::HostProcess,
                    "spec.securityContext.windowsOptions.hostProcess".to_owned()
                ),
                (
                    BaselineControl::HostProcess,
                    "spec.containers[0].securityContext.windowsOptions.hostProcess".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn probes_and_lifecycle_hooks_naming_a_host_fail() {
        let spec = spec(json!({"containers": [{"name": "main", "image": "i",
            "livenessProbe": {"httpGet": {"port": 80, "host": "169.254.169.254"}},
            "readinessProbe": {"tcpSocket": {"port": 80}},
            "lifecycle": {"preStop": {"tcpSocket": {"port": 22, "host": "10.0.0.1"}}},
        }]}));
        assert_eq!(
            failed(&spec),
            vec![
                (
                    BaselineControl::HostProbes,
                    "spec.containers[0].livenessProbe.httpGet.host".to_owned()
                ),
                (
                    BaselineControl::HostProbes,
                    "spec.containers[0].lifecycle.preStop.tcpSocket.host".to_owned()
                ),
            ]
        );
    }

    /// The detail of the one finding on a pod with `spec` of agent `a`, identity `exempt`.
    fn one_finding(spec: &PodSpec, exempt: &AgentIdentity) -> String {
        let findings = baseline_findings(spec, None, Some(("a", exempt)));
        assert_eq!(findings.len(), 1, "{findings:?}");
        findings[0].detail.clone()
    }

    #[test]
    fn an_approved_exemption_covers_its_control_and_nothing_else() {
        let spec = spec(
            json!({"hostPID": true, "containers": [{"name": "main", "image": "i",
            "securityContext": {"privileged": true}}]}),
        );
        let exempt = identity("a")
            .exempt(BaselineControl::Privileged, &[], "carol")
            .build();
        let detail = one_finding(&spec, &exempt);
        assert!(
            detail.starts_with("spec.hostPID is true (HostPID): remove it, or have"),
            "{detail}"
        );
        assert!(detail.contains("add a HostPID exemption to AgentIdentity a"));
    }

    #[test]
    fn a_capabilities_exemption_covers_only_the_capabilities_it_names() {
        let spec = spec_with_capabilities(&["CAP_SYS_ADMIN", "NET_ADMIN"]);
        let exempt = identity("a")
            .exempt(BaselineControl::Capabilities, &["SYS_ADMIN"], "carol")
            .build();
        let detail = one_finding(&spec, &exempt);
        assert!(detail.contains("is NET_ADMIN"), "{detail}");
        assert!(detail.contains("a Capabilities exemption naming NET_ADMIN"));
    }

    #[test]
    fn a_sysctls_exemption_covers_only_the_sysctls_it_names() {
        let spec = spec(json!({"securityContext": {"sysctls": [
            {"name": "kernel.msgmax", "value": "1"}, {"name": "kernel.sem", "value": "1"}]}}));
        let exempt = identity("a")
            .exempt(BaselineControl::Sysctls, &["kernel.msgmax"], "carol")
            .build();
        assert!(one_finding(&spec, &exempt).contains("is kernel.sem"));
    }

    #[test]
    fn an_exemption_approved_by_the_agents_owner_does_not_count() {
        let spec = spec(container(json!({"privileged": true})));
        let exempt = identity("a")
            .owner(OwnerKind::User, "alice")
            .exempt(BaselineControl::Privileged, &[], "alice")
            .build();
        let detail = one_finding(&spec, &exempt);
        assert!(
            detail.contains("is approved by alice, the agent's owner, which does not count"),
            "{detail}"
        );
    }

    #[test]
    fn an_exemption_approved_for_a_former_owner_or_for_nobody_does_not_count() {
        let spec = spec(container(json!({"privileged": true})));
        // Approved while alice owned the agent; bob owns it now.
        let mut handed_over = identity("a")
            .owner(OwnerKind::User, "alice")
            .exempt(BaselineControl::Privileged, &[], "carol")
            .build();
        handed_over.spec.owner.name = "bob".into();
        let detail = one_finding(&spec, &handed_over);
        assert!(
            detail.contains(
                "is void (approved for User alice; the owner is now User bob: an approver who is \
                 not the owner re-approves, setting podSecurityExemptions[Privileged].approval.forOwner to User bob"
            ),
            "{detail}"
        );
        let mut for_nobody = identity("a")
            .exempt(BaselineControl::Privileged, &[], "carol")
            .build();
        for_nobody.spec.pod_security_exemptions[0]
            .approval
            .for_owner = None;
        let detail = one_finding(&spec, &for_nobody);
        assert!(detail.contains("forOwner names no owner"), "{detail}");
    }

    #[test]
    fn a_pod_without_an_identity_is_told_to_remove_what_fails() {
        let spec = spec(container(json!({"privileged": true})));
        let findings = baseline_findings(&spec, None, None);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].reason, Reason::PodSecurityBaseline);
        assert_eq!(
            findings[0].detail,
            "spec.containers[0].securityContext.privileged is true (Privileged): remove it"
        );
    }
}
