//! The desired NetworkPolicy of an AgentIdentity: the identity, an authority snapshot with its
//! analysed delegation graph, the Services and EndpointSlices its tools name, the DNS setting
//! and the instant in; a default-deny NetworkPolicy opening exactly the agent's live tools and
//! safe delegations out, plus the destinations that could not be resolved. Pure: no I/O; the
//! controller passes its reflector stores through [`ServiceDirectory`].
//!
//! What each destination becomes:
//! - `service` with a selector: the Service's pods (its selector, in its namespace through the
//!   `kubernetes.io/metadata.name` namespace label) on its *target* ports, because policies
//!   apply after the Service's address translation;
//! - `service` without a selector: its EndpointSlices' addresses as /32 or /128 ipBlocks on
//!   the slices' ports; no addresses, an ExternalName Service or FQDN slices: unresolvable;
//! - `pods`: the namespaceSelector and podSelector as given;
//! - `external`: one ipBlock per CIDR;
//! - `kubernetesAPI`: no network rule. Access to the API server is an RBAC matter, projected
//!   as Role/RoleBinding in a later wave; until then such tools open nothing here.
//!
//! An unresolvable destination opens nothing (fail closed) and is returned in
//! [`DesiredNetworkPolicy::problems`] for the reconciler to report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::{Owned, ProjectError};
use crate::api::{AGENT_LABEL, AgentIdentity, ServiceDestination, Tool};
use crate::authority::{Authority, DelegationGraph, HeldTool};

/// The namespace label the API server sets to every namespace's own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The EndpointSlice label naming the Service a slice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services and their EndpointSlices, looked up by (namespace, name). The controller
/// implements it over its reflector stores; tests use [`Services`].
pub trait ServiceDirectory {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The EndpointSlices labelled `kubernetes.io/service-name: <service>` in `namespace`.
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
}

/// A plain [`ServiceDirectory`] built from object lists.
#[derive(Debug, Clone, Default)]
pub struct Services {
    services: BTreeMap<(String, String), Arc<Service>>,
    slices: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>>,
}

/// Where agent pods resolve names. DNS is opened on UDP and TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEgress {
    /// The namespace of the DNS pods.
    pub namespace: String,
    /// Labels picking the DNS pods.
    pub pod_labels: BTreeMap<String, String>,
    pub port: i32,
}

/// Settings of the NetworkPolicy projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// DNS egress every agent gets; `None` opens no DNS (for clusters that resolve through a
    /// node-local cache the installation opens itself).
    pub dns: Option<DnsEgress>,
}

/// Everything besides the identity the projection reads.
#[derive(Clone, Copy)]
pub struct NetworkInputs<'a> {
    pub authority: &'a Authority,
    /// The identity's namespace's delegation graph at `now`
    /// (`authority.delegation_graph(ns, now)`), shared with the status the reconciler writes.
    pub graph: &'a DelegationGraph,
    pub services: &'a dyn ServiceDirectory,
    pub config: &'a NetworkConfig,
    pub now: Timestamp,
}

/// The projected policy and the destinations left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNetworkPolicy {
    pub policy: NetworkPolicy,
    /// Tool destinations that open nothing because they could not be resolved, sorted.
    pub problems: Vec<Unresolvable>,
}

/// A tool destination that could not be turned into a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unresolvable {
    pub tool: String,
    pub binding: String,
    /// What is missing, in words.
    pub reason: String,
}

impl fmt::Display for Unresolvable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tool {} (ToolBinding {}): {}",
            self.tool, self.binding, self.reason
        )
    }
}

impl Default for DnsEgress {
    /// The cluster DNS of kubeadm and most distributions: pods labelled `k8s-app: kube-dns`
    /// in `kube-system`, port 53.
    fn default() -> Self {
        DnsEgress {
            namespace: "kube-system".to_owned(),
            pod_labels: BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]),
            port: 53,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            dns: Some(DnsEgress::default()),
        }
    }
}

impl Services {
    pub fn new() -> Self {
        Services::default()
    }

    /// Builds a directory from lists (objects without namespace or name are left out).
    pub fn from_objects(
        services: impl IntoIterator<Item = impl Into<Arc<Service>>>,
        slices: impl IntoIterator<Item = impl Into<Arc<EndpointSlice>>>,
    ) -> Self {
        let mut directory = Services::new();
        services.into_iter().for_each(|s| directory.add_service(s));
        slices
            .into_iter()
            .for_each(|s| directory.add_endpoint_slice(s));
        directory
    }

    pub fn with_service(mut self, service: impl Into<Arc<Service>>) -> Self {
        self.add_service(service);
        self
    }

    pub fn with_endpoint_slice(mut self, slice: impl Into<Arc<EndpointSlice>>) -> Self {
        self.add_endpoint_slice(slice);
        self
    }

    pub fn add_service(&mut self, service: impl Into<Arc<Service>>) {
        let service = service.into();
        if let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) {
            self.services
                .insert((ns.clone(), name.clone()), Arc::clone(&service));
        }
    }

    pub fn add_endpoint_slice(&mut self, slice: impl Into<Arc<EndpointSlice>>) {
        let slice = slice.into();
        if let (Some(ns), Some(service)) =
            (&slice.metadata.namespace, service_name_of_slice(&slice))
        {
            self.slices
                .entry((ns.clone(), service.to_owned()))
                .or_default()
                .push(Arc::clone(&slice));
        }
    }
}

impl ServiceDirectory for Services {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .get(&(namespace.to_owned(), service.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn service_name_of_slice(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

/// `mandate-<agent>`.
pub fn network_policy_name(agent: &str) -> String {
    format!("mandate-{agent}")
}

/// The NetworkPolicy for `identity`: it selects the agent's pods (`mandate.dev/agent=<name>`)
/// and denies both ways except:
/// - egress to DNS (when configured), to each live tool's destination, and to the endpoint
///   ports of each *safe* delegate (a delegation on an unsafe chain loses its path);
/// - ingress from the pods of each safe delegator, on the agent's own endpoint ports (none
///   without an endpoint).
pub fn desired_network_policy(
    identity: &AgentIdentity,
    inputs: &NetworkInputs<'_>,
) -> Result<DesiredNetworkPolicy, ProjectError> {
    let owned = Owned::of(identity)?;
    let agent = owned.name.as_str();
    let namespace = owned.namespace.as_str();
    let mut egress = Vec::new();
    let mut problems = Vec::new();

    if let Some(dns) = &inputs.config.dns {
        egress.push(dns_rule(dns));
    }
    for held in inputs.authority.held_tools(namespace, agent, inputs.now) {
        match tool_rules(&held, namespace, inputs.services) {
            Ok(rules) => egress.extend(rules),
            Err(reason) => problems.push(Unresolvable {
                tool: held.tool.name.clone(),
                binding: held.binding_name().to_owned(),
                reason,
            }),
        }
    }
    for delegate in inputs.graph.safe_delegates(agent) {
        let ports = inputs
            .authority
            .identity(namespace, delegate)
            .map(endpoint_ports)
            .unwrap_or_default();
        if !ports.is_empty() {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![agent_peer(delegate)]),
                ports: Some(ports),
            });
        }
    }
    dedup(&mut egress);

    let own_ports = endpoint_ports(identity);
    let delegators = inputs.graph.safe_delegators(agent);
    let ingress = if own_ports.is_empty() || delegators.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyIngressRule {
            from: Some(delegators.into_iter().map(agent_peer).collect()),
            ports: Some(own_ports),
        }]
    };

    problems.sort();
    problems.dedup();
    let policy = NetworkPolicy {
        metadata: owned.meta(network_policy_name(agent)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels([(AGENT_LABEL, agent)])),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            // Both rule lists are always written, empty ones too: with both policy types
            // listed an empty list denies all, and only a list mandate applies is a list its
            // field manager owns, so a rule someone adds to it is taken back at the next apply
            // (a list left out was never mandate's, and an added `ingress: [{}]` stayed).
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    };
    Ok(DesiredNetworkPolicy { policy, problems })
}

fn dns_rule(dns: &DnsEgress) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels([(
                NAMESPACE_NAME_LABEL,
                dns.namespace.as_str(),
            )])),
            pod_selector: Some(LabelSelector {
                match_labels: Some(dns.pod_labels.clone()),
                ..LabelSelector::default()
            }),
            ip_block: None,
        }]),
        ports: Some(sorted_ports(vec![
            port(IntOrString::Int(dns.port), "UDP"),
            port(IntOrString::Int(dns.port), "TCP"),
        ])),
    }
}

/// The rules one held tool opens, or why it opens nothing.
fn tool_rules(
    held: &HeldTool<'_>,
    namespace: &str,
    services: &dyn ServiceDirectory,
) -> Result<Vec<NetworkPolicyEgressRule>, String> {
    let Tool { destination, .. } = held.tool;
    if let Some(service) = &destination.service {
        return service_rules(service, namespace, services);
    }
    if let Some(pods) = &destination.pods {
        return Ok(vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: pods.namespace_selector.clone(),
                pod_selector: Some(pods.pod_selector.clone()),
                ip_block: None,
            }]),
            ports: optional_ports(pods.ports.iter().map(|p| port(p.clone(), "TCP")).collect()),
        }]);
    }
    if let Some(external) = &destination.external {
        let cidrs: BTreeSet<&String> = external.cidrs.iter().collect();
        return Ok(vec![NetworkPolicyEgressRule {
            to: Some(cidrs.into_iter().map(|c| ip_block(c.clone())).collect()),
            ports: optional_ports(
                external
                    .ports
                    .iter()
                    .map(|p| port(IntOrString::Int(*p), "TCP"))
                    .collect(),
            ),
        }]);
    }
    // kubernetesAPI (RBAC, a later wave) or no destination at all: nothing to open.
    Ok(Vec::new())
}

/// A Service destination: its pods on its target ports, or its endpoints' addresses.
fn service_rules(
    destination: &ServiceDestination,
    namespace: &str,
    services: &dyn ServiceDirectory,
) -> Result<Vec<NetworkPolicyEgressRule>, String> {
    let ns = destination.namespace.as_deref().unwrap_or(namespace);
    let name = destination.name.as_str();
    let service = services
        .service(ns, name)
        .ok_or_else(|| format!("Service {ns}/{name} does not exist"))?;
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(format!(
            "Service {ns}/{name} is an ExternalName Service, which has no addresses to allow: \
             use an external destination with its CIDRs"
        ));
    }
    let service_ports = spec.ports.unwrap_or_default();
    let mut chosen = Vec::new();
    if destination.ports.is_empty() {
        chosen.extend(service_ports.iter());
    } else {
        for wanted in &destination.ports {
            let found = service_ports.iter().find(|p| match wanted {
                IntOrString::Int(n) => p.port == *n,
                IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
            });
            match found {
                Some(p) => chosen.push(p),
                None => {
                    let wanted = match wanted {
                        IntOrString::Int(n) => n.to_string(),
                        IntOrString::String(s) => s.clone(),
                    };
                    return Err(format!("Service {ns}/{name} has no port {wanted}"));
                }
            }
        }
    }
    if chosen.is_empty() {
        return Err(format!("Service {ns}/{name} has no ports"));
    }

    let selector = spec.selector.filter(|s| !s.is_empty());
    if let Some(selector) = selector {
        let ports = chosen
            .iter()
            .map(|p| {
                let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                port(target, p.protocol.as_deref().unwrap_or("TCP"))
            })
            .collect();
        return Ok(vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels([(NAMESPACE_NAME_LABEL, ns)])),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(selector),
                    ..LabelSelector::default()
                }),
                ip_block: None,
            }]),
            ports: Some(sorted_ports(ports)),
        }]);
    }

    // No selector: whoever manages the Service's EndpointSlices says where it goes.
    let wanted: BTreeSet<(&str, &str)> = chosen
        .iter()
        .map(|p| {
            (
                p.name.as_deref().unwrap_or_default(),
                p.protocol.as_deref().unwrap_or("TCP"),
            )
        })
        .collect();
    // Port set -> addresses with exactly those ports.
    let mut groups: BTreeMap<Vec<(String, i32)>, BTreeSet<String>> = BTreeMap::new();
    for slice in services.endpoint_slices(ns, name) {
        let prefix = match slice.address_type.as_str() {
            "IPv4" => 32,
            "IPv6" => 128,
            other => {
                return Err(format!(
                    "Service {ns}/{name} has {other} endpoints, which a NetworkPolicy cannot \
                     allow: give it a selector or use an external destination"
                ));
            }
        };
        let ports: BTreeSet<(String, i32)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = p.protocol.as_deref().unwrap_or("TCP");
                let named = (p.name.as_deref().unwrap_or_default(), protocol);
                wanted
                    .contains(&named)
                    .then_some((protocol.to_owned(), p.port?))
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let addresses: BTreeSet<String> = slice
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| &e.addresses)
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .map(|ip| format!("{ip}/{prefix}"))
            .collect();
        groups
            .entry(ports.into_iter().collect())
            .or_default()
            .extend(addresses);
    }
    groups.retain(|_, addresses| !addresses.is_empty());
    if groups.is_empty() {
        return Err(format!(
            "Service {ns}/{name} has no selector and no endpoint addresses on the wanted ports"
        ));
    }
    Ok(groups
        .into_iter()
        .map(|(ports, addresses)| NetworkPolicyEgressRule {
            to: Some(addresses.into_iter().map(ip_block).collect()),
            ports: Some(sorted_ports(
                ports
                    .into_iter()
                    .map(|(protocol, n)| port(IntOrString::Int(n), &protocol))
                    .collect(),
            )),
        })
        .collect())
}

/// The ports an agent accepts delegated work on, sorted; empty without an endpoint.
fn endpoint_ports(identity: &AgentIdentity) -> Vec<NetworkPolicyPort> {
    sorted_ports(
        identity
            .spec
            .endpoint
            .iter()
            .flat_map(|e| &e.ports)
            .map(|p| port(IntOrString::Int(p.port), p.protocol.as_str()))
            .collect(),
    )
}

/// The pods of another agent in the policy's own namespace.
fn agent_peer(agent: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(match_labels([(AGENT_LABEL, agent)])),
        ..NetworkPolicyPeer::default()
    }
}

fn ip_block(cidr: String) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr, except: None }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(port: IntOrString, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(port),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

/// `None` for an empty list: a rule without ports allows every port.
fn optional_ports(ports: Vec<NetworkPolicyPort>) -> Option<Vec<NetworkPolicyPort>> {
    let ports = sorted_ports(ports);
    (!ports.is_empty()).then_some(ports)
}

/// Ports sorted by (protocol, number before name, value), duplicates removed.
fn sorted_ports(mut ports: Vec<NetworkPolicyPort>) -> Vec<NetworkPolicyPort> {
    fn key(p: &NetworkPolicyPort) -> (Option<String>, i32, String) {
        match &p.port {
            Some(IntOrString::Int(n)) => (p.protocol.clone(), *n, String::new()),
            Some(IntOrString::String(s)) => (p.protocol.clone(), i32::MAX, s.clone()),
            None => (p.protocol.clone(), -1, String::new()),
        }
    }
    ports.sort_by_key(key);
    ports.dedup();
    ports
}

fn match_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
        ..LabelSelector::default()
    }
}

/// Removes repeated rules (two bindings granting the same destination), keeping the first.
fn dedup<T: PartialEq>(rules: &mut Vec<T>) {
    let mut kept: Vec<T> = Vec::with_capacity(rules.len());
    for rule in rules.drain(..) {
        if !kept.contains(&rule) {
            kept.push(rule);
        }
    }
    *rules = kept;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::api::{AgentClass, Protocol};
    use crate::authority::fixtures::*;

    fn service(
        ns: &str,
        name: &str,
        selector: Option<(&str, &str)>,
        ports: Vec<ServicePort>,
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())])),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn service_port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        }
    }

    fn slice(
        ns: &str,
        service: &str,
        address_type: &str,
        addresses: &[&str],
        ports: &[(&str, i32)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-{address_type}")),
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_owned(),
                    service.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: address_type.into(),
            endpoints: Some(
                addresses
                    .iter()
                    .map(|a| Endpoint {
                        addresses: vec![(*a).to_owned()],
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some((*name).to_owned()),
                        port: Some(*port),
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }

    fn project(authority: &Authority, agent: &str, services: &Services) -> DesiredNetworkPolicy {
        project_with(authority, agent, services, &NetworkConfig::default(), NOW)
    }

    fn project_with(
        authority: &Authority,
        agent: &str,
        services: &Services,
        config: &NetworkConfig,
        now: Timestamp,
    ) -> DesiredNetworkPolicy {
        let graph = authority.delegation_graph(NS, now);
        let inputs = NetworkInputs {
            authority,
            graph: &graph,
            services,
            config,
            now,
        };
        let identity = authority
            .identity(NS, agent)
            .cloned()
            .unwrap_or_else(|| unreachable!());
        desired_network_policy(&identity, &inputs).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn spec(desired: &DesiredNetworkPolicy) -> NetworkPolicySpec {
        desired.policy.spec.clone().unwrap_or_default()
    }

    fn egress(desired: &DesiredNetworkPolicy) -> Vec<NetworkPolicyEgressRule> {
        spec(desired).egress.unwrap_or_default()
    }

    fn tcp(n: i32) -> NetworkPolicyPort {
        port(IntOrString::Int(n), "TCP")
    }

    fn selector(key: &str, value: &str) -> Option<LabelSelector> {
        Some(labels(key, value))
    }

    #[test]
    fn an_agent_without_tools_is_isolated_both_ways_except_for_dns() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .build();
        let desired = project(&authority, "researcher", &Services::new());
        let meta = &desired.policy.metadata;
        assert_eq!(meta.name.as_deref(), Some("mandate-researcher"));
        assert_eq!(meta.namespace.as_deref(), Some(NS));
        assert_eq!(
            meta.labels,
            Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "mandate".to_owned()
                ),
                ("mandate.dev/agent".to_owned(), "researcher".to_owned()),
            ]))
        );
        let owner = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!(owner[0].kind, "AgentIdentity");
        assert_eq!(owner[0].name, "researcher");
        assert_eq!(owner[0].controller, Some(true));
        assert_eq!(owner[0].block_owner_deletion, Some(true));
        let spec = spec(&desired);
        assert_eq!(
            spec.pod_selector,
            selector("mandate.dev/agent", "researcher")
        );
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
        );
        assert_eq!(spec.ingress, Some(Vec::new()));
        assert_eq!(
            spec.egress,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: selector("kubernetes.io/metadata.name", "kube-system"),
                    pod_selector: selector("k8s-app", "kube-dns"),
                    ip_block: None,
                }]),
                ports: Some(vec![tcp(53), port(IntOrString::Int(53), "UDP")]),
            }])
        );
        assert!(desired.problems.is_empty());
    }

    #[test]
    fn dns_egress_can_be_moved_or_left_out() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .build();
        let none = NetworkConfig { dns: None };
        assert_eq!(
            spec(&project_with(
                &authority,
                "researcher",
                &Services::new(),
                &none,
                NOW
            ))
            .egress,
            Some(Vec::new()),
            "an empty list, written so that mandate owns it"
        );
        let custom = NetworkConfig {
            dns: Some(DnsEgress {
                namespace: "dns".into(),
                pod_labels: BTreeMap::from([("app".to_owned(), "coredns".to_owned())]),
                port: 5353,
            }),
        };
        let rules = egress(&project_with(
            &authority,
            "researcher",
            &Services::new(),
            &custom,
            NOW,
        ));
        assert_eq!(
            rules[0].to,
            Some(vec![NetworkPolicyPeer {
                namespace_selector: selector("kubernetes.io/metadata.name", "dns"),
                pod_selector: selector("app", "coredns"),
                ip_block: None,
            }])
        );
        assert_eq!(
            rules[0].ports,
            Some(vec![tcp(5353), port(IntOrString::Int(5353), "UDP")])
        );
    }

    #[test]
    fn a_service_tool_opens_the_services_pods_on_their_target_ports() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("crm")
                    .agent("researcher")
                    .tool(tool("crm").service(
                        "crm",
                        Some("backend"),
                        [IntOrString::String("http".into()), IntOrString::Int(9090)],
                    ))
                    .build(),
            )
            .build();
        let services = Services::new().with_service(service(
            "backend",
            "crm",
            Some(("app", "crm")),
            vec![
                service_port("http", 80, Some(IntOrString::Int(8080))),
                service_port("metrics", 9090, Some(IntOrString::String("metrics".into()))),
                service_port("admin", 9999, None),
            ],
        ));
        let desired = project(&authority, "researcher", &services);
        assert!(desired.problems.is_empty(), "{:?}", desired.problems);
        assert_eq!(
            egress(&desired)[1],
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: selector("kubernetes.io/metadata.name", "backend"),
                    pod_selector: selector("app", "crm"),
                    ip_block: None,
                }]),
                ports: Some(vec![
                    tcp(8080),
                    port(IntOrString::String("metrics".into()), "TCP")
                ]),
            }
        );
    }

    #[test]
    fn a_service_tool_without_ports_opens_every_service_port_and_defaults_target_to_port() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("b")
                    .agent("researcher")
                    .tool(tool("search"))
                    .build(),
            )
            .build();
        let services = Services::new().with_service(service(
            NS,
            "search",
            Some(("app", "search")),
            vec![
                service_port("http", 80, None),
                service_port("grpc", 81, Some(IntOrString::Int(9000))),
            ],
        ));
        let rules = egress(&project(&authority, "researcher", &services));
        assert_eq!(rules[1].ports, Some(vec![tcp(80), tcp(9000)]));
        assert_eq!(
            rules[1]
                .to
                .as_ref()
                .and_then(|t| t[0].namespace_selector.clone()),
            selector("kubernetes.io/metadata.name", NS)
        );
    }

    #[test]
    fn a_service_without_selector_resolves_through_its_endpoint_slices_to_host_blocks() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("b")
                    .agent("researcher")
                    .tool(tool("legacy").service("legacy", None, [IntOrString::Int(443)]))
                    .build(),
            )
            .build();
        let services = Services::new()
            .with_service(service(
                NS,
                "legacy",
                None,
                vec![service_port("https", 443, Some(IntOrString::Int(8443)))],
            ))
            .with_endpoint_slice(slice(
                NS,
                "legacy",
                "IPv4",
                &["10.0.0.9", "10.0.0.7"],
                &[("https", 8443), ("other", 1)],
            ))
            .with_endpoint_slice(slice(
                NS,
                "legacy",
                "IPv6",
                &["fd00::1"],
                &[("https", 8443)],
            ));
        let desired = project(&authority, "researcher", &services);
        assert!(desired.problems.is_empty(), "{:?}", desired.problems);
        assert_eq!(
            egress(&desired)[1],
            NetworkPolicyEgressRule {
                to: Some(vec![
                    ip_block("10.0.0.7/32".into()),
                    ip_block("10.0.0.9/32".into()),
                    ip_block("fd00::1/128".into()),
                ]),
                ports: Some(vec![tcp(8443)]),
            }
        );
    }

    #[test]
    fn an_unresolvable_service_is_reported_and_opens_nothing() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("b")
                    .agent("researcher")
                    .tool(tool("missing"))
                    .tool(tool("empty"))
                    .tool(tool("wrong-port").service("crm", None, [IntOrString::Int(1)]))
                    .build(),
            )
            .build();
        let services = Services::new()
            .with_service(service(
                NS,
                "empty",
                None,
                vec![service_port("http", 80, None)],
            ))
            .with_service(service(
                NS,
                "crm",
                Some(("app", "crm")),
                vec![service_port("http", 80, None)],
            ));
        let desired = project(&authority, "researcher", &services);
        assert_eq!(egress(&desired).len(), 1, "only DNS");
        let problems: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "tool empty (ToolBinding b): Service agents/empty has no selector and no endpoint addresses on the wanted ports",
                "tool missing (ToolBinding b): Service agents/missing does not exist",
                "tool wrong-port (ToolBinding b): Service agents/crm has no port 1",
            ]
        );
    }

    #[test]
    fn pods_and_external_tools_open_their_selectors_and_cidrs_and_the_kubernetes_api_opens_nothing()
    {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("b")
                    .agent("researcher")
                    .tool(tool("a-pods").pods(
                        selector("team", "data"),
                        labels("app", "warehouse"),
                        [IntOrString::Int(5432)],
                    ))
                    .tool(tool("b-web").external(["203.0.113.0/24", "198.51.100.0/24"], [443]))
                    .tool(tool("c-api").kubernetes_api("configmaps"))
                    .build(),
            )
            .build();
        let rules = egress(&project(&authority, "researcher", &Services::new()));
        assert_eq!(
            rules[1..],
            [
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: selector("team", "data"),
                        pod_selector: selector("app", "warehouse"),
                        ip_block: None,
                    }]),
                    ports: Some(vec![tcp(5432)]),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![
                        ip_block("198.51.100.0/24".into()),
                        ip_block("203.0.113.0/24".into())
                    ]),
                    ports: Some(vec![tcp(443)]),
                },
            ]
        );
    }

    #[test]
    fn an_expired_tool_disappears_from_the_policy() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("b")
                    .agent("researcher")
                    .tool(tool("web").external(["203.0.113.0/24"], []))
                    .valid_until(hours(1))
                    .build(),
            )
            .build();
        let config = NetworkConfig { dns: None };
        let before = project_with(&authority, "researcher", &Services::new(), &config, NOW);
        assert_eq!(egress(&before).len(), 1);
        assert_eq!(
            egress(&before)[0].ports,
            None,
            "no ports listed: every port"
        );
        let after = project_with(
            &authority,
            "researcher",
            &Services::new(),
            &config,
            hours(1),
        );
        assert_eq!(spec(&after).egress, Some(Vec::new()));
    }

    fn delegation(tools_of_executor: &[&'static str]) -> Authority {
        let mut executor = binding("exec").agent("executor");
        for t in tools_of_executor {
            executor = executor.tool(tool(t).kubernetes_api("configmaps"));
        }
        Authority::builder()
            .identity(
                identity("planner")
                    .endpoint([(9000, Protocol::Tcp)])
                    .build(),
            )
            .identity(
                identity("executor")
                    .class(AgentClass::WriteCapable)
                    .endpoint([(8080, Protocol::Tcp), (8081, Protocol::Udp)])
                    .build(),
            )
            .binding(
                binding("plan")
                    .agent("planner")
                    .tool(tool("erp").kubernetes_api("configmaps"))
                    .build(),
            )
            .binding(executor.build())
            .policy(
                policy("planner")
                    .delegator("planner")
                    .delegate("executor", ["erp"])
                    .build(),
            )
            .build()
    }

    #[test]
    fn a_safe_delegation_opens_the_delegates_endpoint_to_the_delegators_pods() {
        let authority = delegation(&["erp"]);
        let config = NetworkConfig { dns: None };
        let planner = project_with(&authority, "planner", &Services::new(), &config, NOW);
        assert_eq!(
            spec(&planner).egress,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![agent_peer("executor")]),
                ports: Some(vec![tcp(8080), port(IntOrString::Int(8081), "UDP")]),
            }])
        );
        assert_eq!(
            spec(&planner).ingress,
            Some(Vec::new()),
            "nobody delegates to the planner"
        );
        let executor = project_with(&authority, "executor", &Services::new(), &config, NOW);
        assert_eq!(
            spec(&executor).ingress,
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: selector("mandate.dev/agent", "planner"),
                    namespace_selector: None,
                    ip_block: None,
                }]),
                ports: Some(vec![tcp(8080), port(IntOrString::Int(8081), "UDP")]),
            }])
        );
    }

    #[test]
    fn an_escalating_delegation_loses_its_network_path_both_ways() {
        // The executor does not hold erp: handing it on is an escalation.
        let authority = delegation(&[]);
        let config = NetworkConfig { dns: None };
        let planner = project_with(&authority, "planner", &Services::new(), &config, NOW);
        assert_eq!(spec(&planner).egress, Some(Vec::new()));
        let executor = project_with(&authority, "executor", &Services::new(), &config, NOW);
        assert_eq!(spec(&executor).ingress, Some(Vec::new()));
    }

    #[test]
    fn projecting_is_deterministic_whatever_order_the_objects_arrive_in() {
        let web = |name: &str| {
            binding(name)
                .agent("researcher")
                .tool(tool("web").external(["203.0.113.0/24"], [443]))
                .build()
        };
        let search = binding("s")
            .agent("researcher")
            .tool(tool("search").external(["198.51.100.0/24"], [443]))
            .build();
        let one = Authority::builder()
            .identity(identity("researcher").build())
            .binding(web("w1"))
            .binding(web("w2"))
            .binding(search.clone())
            .build();
        let other = Authority::builder()
            .binding(search)
            .binding(web("w2"))
            .identity(identity("researcher").build())
            .binding(web("w1"))
            .build();
        let first = project(&one, "researcher", &Services::new());
        assert_eq!(first, project(&one, "researcher", &Services::new()));
        assert_eq!(first, project(&other, "researcher", &Services::new()));
        assert_eq!(
            egress(&first).len(),
            3,
            "DNS, search, and web once though two bindings grant it"
        );
    }

    #[test]
    fn an_identity_without_a_namespace_cannot_be_projected() {
        let authority = Authority::builder().build();
        let graph = DelegationGraph::default();
        let inputs = NetworkInputs {
            authority: &authority,
            graph: &graph,
            services: &Services::new(),
            config: &NetworkConfig::default(),
            now: NOW,
        };
        let mut homeless = identity("x").build();
        homeless.metadata.namespace = None;
        assert_eq!(
            desired_network_policy(&homeless, &inputs).map(|_| ()),
            Err(ProjectError::Namespace { name: "x".into() })
        );
    }
}
