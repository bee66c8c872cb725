//! Test fixtures: names in, AgentIdentities, ToolBindings, DelegationPolicies, ServiceAccounts
//! and Pods with sensible defaults out, so tests state only what matters. Compiled only into the
//! crate's own unit tests (`#[cfg(test)]`), never into the library; no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, Pod, PodSpec, ProjectedVolumeSource,
    SecretEnvSource, SecretKeySelector, SecretVolumeSource, SecurityContext, ServiceAccount,
    ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource;

use crate::api::conditions;
use crate::api::{
    AGENT_LABEL, Action, AgentClass, AgentIdentity, AgentIdentitySpec, AgentIdentityStatus,
    ApiResourceRef, Approval, BaselineControl, Credentials, Delegate, DelegationPolicy,
    DelegationPolicySpec, Destination, Endpoint, EndpointPort, ExternalDestination, HttpMethod,
    HttpOperation, KubernetesApiDestination, MANAGED_BY_LABEL, MANAGER, McpOperations, McpTool,
    Owner, OwnerKind, OwnerRef, PodSecurityExemption, PodsDestination, Protocol, Risk,
    ServiceDestination, Tool, ToolBinding, ToolBindingSpec,
};

/// The namespace fixtures live in unless told otherwise.
pub const NS: &str = "agents";
/// A fixed instant the tests call now.
pub const NOW: Timestamp = Timestamp::constant(1_800_000_000, 0);

/// `NOW` shifted by `h` hours.
pub fn hours(h: i64) -> Timestamp {
    NOW.checked_add(SignedDuration::from_hours(h))
        .unwrap_or(NOW)
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: Some(format!("uid-{namespace}-{name}")),
        ..ObjectMeta::default()
    }
}

pub struct IdentityBuilder {
    identity: AgentIdentity,
}

/// The owner of fixture identities unless told otherwise (a Group).
pub const DEFAULT_OWNER: &str = "team-a";

pub fn identity(name: &str) -> IdentityBuilder {
    let spec = AgentIdentitySpec {
        owner: Owner {
            kind: OwnerKind::Group,
            name: DEFAULT_OWNER.into(),
            contact: None,
        },
        class: AgentClass::ReadOnly,
        purpose: format!("{name} does its job"),
        service_account_name: None,
        credentials: None,
        endpoint: None,
        pod_security_exemptions: Vec::new(),
    };
    let mut identity = AgentIdentity::new(name, spec);
    identity.metadata = meta(NS, name);
    IdentityBuilder { identity }
}

impl IdentityBuilder {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.identity.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn class(mut self, class: AgentClass) -> Self {
        self.identity.spec.class = class;
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.identity.spec.service_account_name = Some(name.to_owned());
        self
    }

    pub fn endpoint(mut self, ports: impl IntoIterator<Item = (i32, Protocol)>) -> Self {
        self.identity.spec.endpoint = Some(Endpoint {
            ports: ports
                .into_iter()
                .map(|(port, protocol)| EndpointPort { port, protocol })
                .collect(),
        });
        self
    }

    /// Owned by `name`, a person (`User`) or a team (`Group`).
    pub fn owner(mut self, kind: OwnerKind, name: &str) -> Self {
        self.identity.spec.owner = Owner {
            kind,
            name: name.to_owned(),
            contact: None,
        };
        self
    }

    /// Limits projected tokens to `seconds` and the extra `audiences`.
    pub fn credentials<'a>(
        mut self,
        seconds: Option<i64>,
        audiences: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.identity.spec.credentials = Some(Credentials {
            token_ttl_seconds: seconds,
            audiences: audiences.into_iter().map(str::to_owned).collect(),
        });
        self
    }

    /// Exempts the agent's pods from baseline `control` (naming `items` for Capabilities and
    /// Sysctls), approved by `approver` for the owner set so far.
    pub fn exempt(mut self, control: BaselineControl, items: &[&str], approver: &str) -> Self {
        let items: Vec<String> = items.iter().map(|&i| i.to_owned()).collect();
        let (capabilities, sysctls) = match control {
            BaselineControl::Capabilities => (items, Vec::new()),
            BaselineControl::Sysctls => (Vec::new(), items),
            _ => (Vec::new(), Vec::new()),
        };
        self.identity
            .spec
            .pod_security_exemptions
            .push(PodSecurityExemption {
                control,
                capabilities,
                sysctls,
                approval: Approval {
                    approved_by: approver.to_owned(),
                    for_owner: Some(OwnerRef::from(&self.identity.spec.owner)),
                    reason: "needed".to_owned(),
                },
            });
        self
    }

    /// Status with `Ready=True`, as the reconciler reports once every projection is applied.
    pub fn ready(mut self) -> Self {
        let ready = conditions::new(conditions::READY, true, "Applied", "", Some(1), Time(NOW));
        self.identity.status = Some(AgentIdentityStatus {
            conditions: vec![ready],
            ..AgentIdentityStatus::default()
        });
        self
    }

    pub fn build(self) -> AgentIdentity {
        self.identity
    }
}

pub struct ToolBuilder {
    tool: Tool,
}

/// A Low-risk `read` tool reached through the Service of the same name.
pub fn tool(name: &str) -> ToolBuilder {
    ToolBuilder {
        tool: Tool {
            name: name.to_owned(),
            actions: vec![Action::Read],
            risk: Risk::Low,
            destination: Destination {
                service: Some(ServiceDestination {
                    name: name.to_owned(),
                    namespace: None,
                    ports: Vec::new(),
                }),
                ..Destination::default()
            },
            mcp: None,
            http: Vec::new(),
            audience: None,
        },
    }
}

impl ToolBuilder {
    pub fn actions(mut self, actions: impl IntoIterator<Item = Action>) -> Self {
        self.tool.actions = actions.into_iter().collect();
        self
    }

    pub fn high(mut self) -> Self {
        self.tool.risk = Risk::High;
        self
    }

    /// Reach it through Service `name` in `namespace` (None: the binding's), on `ports`.
    pub fn service(
        mut self,
        name: &str,
        namespace: Option<&str>,
        ports: impl IntoIterator<Item = IntOrString>,
    ) -> Self {
        self.tool.destination = Destination {
            service: Some(ServiceDestination {
                name: name.to_owned(),
                namespace: namespace.map(str::to_owned),
                ports: ports.into_iter().collect(),
            }),
            ..Destination::default()
        };
        self
    }

    pub fn pods(
        mut self,
        namespace_selector: Option<LabelSelector>,
        pod_selector: LabelSelector,
        ports: impl IntoIterator<Item = IntOrString>,
    ) -> Self {
        self.tool.destination = Destination {
            pods: Some(PodsDestination {
                namespace_selector,
                pod_selector,
                ports: ports.into_iter().collect(),
            }),
            ..Destination::default()
        };
        self
    }

    pub fn external(
        mut self,
        cidrs: impl IntoIterator<Item = &'static str>,
        ports: impl IntoIterator<Item = i32>,
    ) -> Self {
        self.tool.destination = Destination {
            external: Some(ExternalDestination {
                cidrs: cidrs.into_iter().map(str::to_owned).collect(),
                ports: ports.into_iter().collect(),
            }),
            ..Destination::default()
        };
        self
    }

    pub fn kubernetes_api(mut self, resource: &str) -> Self {
        self.tool.destination = Destination {
            kubernetes_api: Some(KubernetesApiDestination {
                resources: vec![ApiResourceRef {
                    group: String::new(),
                    resource: resource.to_owned(),
                    names: Vec::new(),
                }],
            }),
            ..Destination::default()
        };
        self
    }

    /// Exposes MCP tool `name`, performing `action` (None: the default, write).
    pub fn mcp(mut self, name: &str, action: Option<Action>) -> Self {
        self.tool
            .mcp
            .get_or_insert_with(McpOperations::default)
            .tools
            .push(McpTool {
                name: name.to_owned(),
                action,
            });
        self
    }

    /// Exposes `methods` on `paths`.
    pub fn http<'a>(
        mut self,
        methods: impl IntoIterator<Item = HttpMethod>,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.tool.http.push(HttpOperation {
            methods: methods.into_iter().collect(),
            paths: paths.into_iter().map(str::to_owned).collect(),
        });
        self
    }

    pub fn audience(mut self, audience: &str) -> Self {
        self.tool.audience = Some(audience.to_owned());
        self
    }

    pub fn build(self) -> Tool {
        self.tool
    }
}

impl From<ToolBuilder> for Tool {
    fn from(builder: ToolBuilder) -> Tool {
        builder.build()
    }
}

pub struct BindingBuilder {
    binding: ToolBinding,
}

pub fn binding(name: &str) -> BindingBuilder {
    let mut binding = ToolBinding::new(
        name,
        ToolBindingSpec {
            agent: String::new(),
            tools: Vec::new(),
            valid_from: None,
            valid_until: None,
            approval: None,
        },
    );
    binding.metadata = meta(NS, name);
    BindingBuilder { binding }
}

impl BindingBuilder {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.binding.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn agent(mut self, agent: &str) -> Self {
        self.binding.spec.agent = agent.to_owned();
        self
    }

    pub fn tool(mut self, tool: impl Into<Tool>) -> Self {
        self.binding.spec.tools.push(tool.into());
        self
    }

    pub fn valid_from(mut self, at: Timestamp) -> Self {
        self.binding.spec.valid_from = Some(Time(at));
        self
    }

    pub fn valid_until(mut self, at: Timestamp) -> Self {
        self.binding.spec.valid_until = Some(Time(at));
        self
    }

    /// Approved by `security-lead` for the fixtures' default owner (Group team-a).
    pub fn approved(self) -> Self {
        self.approved_for("security-lead", OwnerKind::Group, DEFAULT_OWNER)
    }

    /// Approved by `user` for the fixtures' default owner (Group team-a).
    pub fn approved_by(self, user: &str) -> Self {
        self.approved_for(user, OwnerKind::Group, DEFAULT_OWNER)
    }

    /// Approved by `user` for the owner `kind` `name`.
    pub fn approved_for(mut self, user: &str, kind: OwnerKind, name: &str) -> Self {
        self.binding.spec.approval = Some(Approval {
            approved_by: user.to_owned(),
            for_owner: Some(OwnerRef {
                kind,
                name: name.to_owned(),
            }),
            reason: "TICKET-2".into(),
        });
        self
    }

    /// Approved by `user` with no `forOwner` (as written before approvals named one).
    pub fn approved_for_nobody(mut self, user: &str) -> Self {
        self.binding.spec.approval = Some(Approval {
            approved_by: user.to_owned(),
            for_owner: None,
            reason: "TICKET-3".into(),
        });
        self
    }

    pub fn build(self) -> ToolBinding {
        self.binding
    }
}

impl From<BindingBuilder> for std::sync::Arc<ToolBinding> {
    fn from(builder: BindingBuilder) -> Self {
        std::sync::Arc::new(builder.build())
    }
}

pub struct PolicyBuilder {
    policy: DelegationPolicy,
}

pub fn policy(name: &str) -> PolicyBuilder {
    let mut policy = DelegationPolicy::new(
        name,
        DelegationPolicySpec {
            delegator: String::new(),
            delegates: Vec::new(),
            max_depth: 1,
            valid_until: None,
        },
    );
    policy.metadata = meta(NS, name);
    PolicyBuilder { policy }
}

impl PolicyBuilder {
    pub fn delegator(mut self, agent: &str) -> Self {
        self.policy.spec.delegator = agent.to_owned();
        self
    }

    pub fn delegate<'a>(mut self, agent: &str, tools: impl IntoIterator<Item = &'a str>) -> Self {
        self.policy.spec.delegates.push(Delegate {
            agent: agent.to_owned(),
            tools: tools.into_iter().map(str::to_owned).collect(),
        });
        self
    }

    pub fn max_depth(mut self, depth: i32) -> Self {
        self.policy.spec.max_depth = depth;
        self
    }

    pub fn valid_until(mut self, at: Timestamp) -> Self {
        self.policy.spec.valid_until = Some(Time(at));
        self
    }

    pub fn build(self) -> DelegationPolicy {
        self.policy
    }
}

pub struct ServiceAccountBuilder {
    service_account: ServiceAccount,
}

/// A ServiceAccount nobody manages.
pub fn service_account(name: &str) -> ServiceAccountBuilder {
    ServiceAccountBuilder {
        service_account: ServiceAccount {
            metadata: meta(NS, name),
            ..ServiceAccount::default()
        },
    }
}

impl ServiceAccountBuilder {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.service_account.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Makes it mandate's projection for `agent`: labelled, and controlled by the fixture
    /// identity of that name (its UID).
    pub fn managed_for(self, agent: &str) -> Self {
        let namespace = self
            .service_account
            .metadata
            .namespace
            .clone()
            .unwrap_or_default();
        self.labelled_for(agent)
            .controlled_by(agent, &format!("uid-{namespace}-{agent}"))
    }

    /// Only labels it as mandate's, for `agent`, as anyone who may edit it can.
    pub fn labelled_for(mut self, agent: &str) -> Self {
        self.service_account.metadata.labels = Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
            (AGENT_LABEL.to_owned(), agent.to_owned()),
        ]));
        self
    }

    /// Gives it a controller ownerReference to AgentIdentity `agent` with `uid`.
    pub fn controlled_by(mut self, agent: &str, uid: &str) -> Self {
        self.service_account.metadata.owner_references = Some(vec![OwnerReference {
            api_version: AgentIdentity::api_version(&()).into_owned(),
            kind: AgentIdentity::kind(&()).into_owned(),
            name: agent.to_owned(),
            uid: uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        self
    }

    pub fn build(self) -> ServiceAccount {
        self.service_account
    }
}

/// `matchLabels` with one label.
pub fn labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    }
}

pub struct PodBuilder {
    pod: Pod,
}

/// A pod in [`NS`] with one container, no labels, running as the `default` ServiceAccount
/// (what the API server's ServiceAccount admission plugin fills in) and without token volumes.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(NS.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("registry.example.com/agent:1".into()),
                    ..Container::default()
                }],
                service_account_name: Some("default".into()),
                ..PodSpec::default()
            }),
            status: None,
        },
    }
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(PodSpec::default)
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.pod.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Labels it `mandate.dev/agent: <agent>`.
    pub fn agent(self, agent: &str) -> Self {
        self.label(AGENT_LABEL, agent)
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.spec().service_account_name = Some(name.to_owned());
        self
    }

    /// Labelled as `agent` and running as the ServiceAccount of the same name.
    pub fn runs_as(self, agent: &str) -> Self {
        self.agent(agent).service_account(agent)
    }

    pub fn host_network(mut self) -> Self {
        self.spec().host_network = Some(true);
        self
    }

    /// Changes the spec with `change` (for the fields no other method sets).
    pub fn with_spec(mut self, change: impl FnOnce(&mut PodSpec)) -> Self {
        change(self.spec());
        self
    }

    /// The first container runs privileged.
    pub fn privileged(self) -> Self {
        self.with_spec(|spec| {
            spec.containers[0].security_context = Some(SecurityContext {
                privileged: Some(true),
                ..SecurityContext::default()
            });
        })
    }

    pub fn automount(mut self, automount: bool) -> Self {
        self.spec().automount_service_account_token = Some(automount);
        self
    }

    /// A projected volume `name` with a ServiceAccount token for `audience` (None: the API
    /// server's) valid `seconds` (None: the API server's default, 3600).
    pub fn token_volume(
        mut self,
        name: &str,
        audience: Option<&str>,
        seconds: Option<i64>,
    ) -> Self {
        let volume = Volume {
            name: name.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: audience.map(str::to_owned),
                        expiration_seconds: seconds,
                        path: "token".into(),
                        user: None,
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        };
        self.spec()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(volume);
        self
    }

    /// The volume the ServiceAccount admission plugin injects when tokens are automounted.
    pub fn kube_api_access(self) -> Self {
        self.token_volume("kube-api-access-x7k2p", None, Some(3607))
    }

    /// Mounts Secret `secret` as volume `volume`.
    pub fn secret_volume(mut self, volume: &str, secret: &str) -> Self {
        let volume = Volume {
            name: volume.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
        self.spec()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(volume);
        self
    }

    /// Reads key `token` of Secret `secret` into an environment variable of the container.
    pub fn secret_env(mut self, secret: &str) -> Self {
        let container = &mut self.spec().containers[0];
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    key: "token".into(),
                    name: secret.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
        self
    }

    /// Imports every key of Secret `secret` into the container's environment.
    pub fn secret_env_from(mut self, secret: &str) -> Self {
        let container = &mut self.spec().containers[0];
        container
            .env_from
            .get_or_insert_with(Vec::new)
            .push(EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.to_owned(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            });
        self
    }

    pub fn build(self) -> Pod {
        self.pod
    }
}
