//! Authority: an immutable snapshot of AgentIdentities, ToolBindings, DelegationPolicies,
//! ServiceAccounts and RBAC (Roles, ClusterRoles and their bindings) in; answers out: who an
//! agent is, which tools it holds at an instant, when that changes next, the delegation graph
//! and its violations, the dangerous Kubernetes API rights its ServiceAccount holds
//! ([`rights`]), and the validation findings the webhook, the reconciler and `mandate check`
//! share. Pure: never does I/O, never calls the API server.
//!
//! Every lookup is by (namespace, name). The snapshot is indexed once when built (hash maps per
//! namespace, sorted maps inside) so the admission webhook can query it on its hot path; it is
//! `Send + Sync` and meant to be published behind `arc_swap::ArcSwap`.

mod config;
mod graph;
pub mod network;
mod reason;
pub mod rights;
pub mod risk;
mod tools;
mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

pub use config::Config;
pub use graph::{DelegationGraph, Edge, Violation, ViolationKind};
pub use reason::{Finding, Reason, codes};
pub use risk::{ActionSet, RiskFloor, ToolRisk};
pub use tools::{BindingWindow, HeldTool, PolicyWindow};
pub use validate::{approval_lapse, exemption_rules};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::api::{AgentIdentity, DelegationPolicy, LiveTool, Owner, ToolBinding, ToolBindingPhase};

/// The snapshot. Build it with [`Authority::builder`] or [`Authority::from_objects`], or keep
/// one current with the `upsert_*` and `remove_*` methods.
///
/// Objects without a name or a namespace cannot be looked up and are left out; callers that
/// read manifests from disk set the namespace before building.
///
/// Every map inside is persistent (`imbl`): a clone is O(1) and shares all structure, and one
/// object's change costs O(log n). The operator keeps one live `Authority` current from the
/// watches and hands each reconcile and the webhook a clone, so no reader ever rebuilds it.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    config: Config,
    namespaces: imbl::HashMap<String, Namespace>,
    /// Roles, ClusterRoles and their bindings, for the API rights of agents' ServiceAccounts.
    rbac: rights::Rbac,
}

/// The kinds of object an [`Authority`] is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Identity,
    Binding,
    Policy,
    ServiceAccount,
    Rbac(rights::RbacKind),
}

/// Who owns a ServiceAccount, as its controller ownerReference proves. Labels prove nothing:
/// anyone who may edit a ServiceAccount may set them, and an identity that took a labelled
/// account as its own would adopt its RoleBindings (and have it garbage-collected with itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAccountOwnership {
    /// No ServiceAccount of that name exists in the snapshot.
    Absent,
    /// Its controller ownerReference is the AgentIdentity `agent` with UID `uid` (which may be
    /// an earlier identity of that name, still being garbage-collected).
    Managed { agent: String, uid: String },
    /// It exists but no AgentIdentity controls it: mandate never adopts it.
    Unmanaged,
}
/// What mandate reads of a ServiceAccount: who manages it (by its labels) and whether it
/// automounts a token (known only where the whole object was read, as by `mandate check`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceAccountEntry {
    ownership: ServiceAccountOwnership,
    automount_token: Option<bool>,
}

/// Collects objects into an [`Authority`]. Later objects with the same (namespace, name)
/// replace earlier ones.
#[derive(Debug, Default)]
pub struct AuthorityBuilder {
    authority: Authority,
}

type Map<V> = imbl::OrdMap<String, V>;

/// Everything in one namespace, indexed. Every map is sorted by name.
#[derive(Debug, Clone, Default)]
struct Namespace {
    identities: Map<Arc<AgentIdentity>>,
    bindings: Map<Arc<ToolBinding>>,
    policies: Map<Arc<DelegationPolicy>>,
    /// ServiceAccount name -> what mandate reads of it.
    service_accounts: Map<ServiceAccountEntry>,
    /// Agent name -> its bindings, sorted by binding name. Small sorted lists behind an Arc
    /// rather than inner persistent maps: most agents have one binding and most ServiceAccounts
    /// one claimant, and an imbl node holds 64 slots however few are used.
    bindings_by_agent: Map<SortedList<Arc<ToolBinding>>>,
    /// ServiceAccount name -> the identities claiming it, sorted by identity name.
    claims: Map<SortedList<String>>,
}

/// A short list kept sorted by a name, shared between snapshots until one of them changes it.
type SortedList<T> = Arc<Vec<T>>;

/// Inserts `item` into a sorted list, replacing an item of the same name.
fn insert_sorted<T: Clone>(list: &mut SortedList<T>, item: T, name: impl Fn(&T) -> &str) {
    let list = Arc::make_mut(list);
    match list.binary_search_by(|probe| name(probe).cmp(name(&item))) {
        Ok(at) => list[at] = item,
        Err(at) => list.insert(at, item),
    }
}

/// Removes the item named `key` from a sorted list; whether the list is now empty.
fn remove_sorted<T: Clone>(list: &mut SortedList<T>, key: &str, name: impl Fn(&T) -> &str) -> bool {
    if let Ok(at) = list.binary_search_by(|probe| name(probe).cmp(key)) {
        Arc::make_mut(list).remove(at);
    }
    list.is_empty()
}

fn binding_name(binding: &Arc<ToolBinding>) -> &str {
    binding.metadata.name.as_deref().unwrap_or_default()
}

impl Namespace {
    fn is_empty(&self) -> bool {
        self.identities.is_empty()
            && self.bindings.is_empty()
            && self.policies.is_empty()
            && self.service_accounts.is_empty()
    }

    fn unclaim(&mut self, identity: &AgentIdentity, name: &str) {
        let service_account = identity.service_account_name();
        if let Some(claimants) = self.claims.get_mut(service_account)
            && remove_sorted(claimants, name, String::as_str)
        {
            self.claims.remove(service_account);
        }
    }

    fn unindex_binding(&mut self, binding: &ToolBinding, name: &str) {
        let agent = binding.spec.agent.as_str();
        if let Some(bindings) = self.bindings_by_agent.get_mut(agent)
            && remove_sorted(bindings, name, binding_name)
        {
            self.bindings_by_agent.remove(agent);
        }
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authority>();
};

impl AuthorityBuilder {
    /// The knobs validation uses.
    pub fn config(mut self, config: Config) -> Self {
        self.authority.config = config;
        self
    }

    pub fn identity(mut self, identity: impl Into<Arc<AgentIdentity>>) -> Self {
        self.add_identity(identity);
        self
    }

    pub fn binding(mut self, binding: impl Into<Arc<ToolBinding>>) -> Self {
        self.add_binding(binding);
        self
    }

    pub fn policy(mut self, policy: impl Into<Arc<DelegationPolicy>>) -> Self {
        self.add_policy(policy);
        self
    }

    pub fn service_account(mut self, service_account: impl Into<Arc<ServiceAccount>>) -> Self {
        self.add_service_account(service_account);
        self
    }

    pub fn add_identity(&mut self, identity: impl Into<Arc<AgentIdentity>>) {
        self.authority.upsert_identity(identity.into());
    }

    pub fn add_binding(&mut self, binding: impl Into<Arc<ToolBinding>>) {
        self.authority.upsert_binding(binding.into());
    }

    pub fn add_policy(&mut self, policy: impl Into<Arc<DelegationPolicy>>) {
        self.authority.upsert_policy(policy.into());
    }

    pub fn add_service_account(&mut self, service_account: impl Into<Arc<ServiceAccount>>) {
        let service_account = service_account.into();
        self.authority.upsert_service_account(
            &service_account.metadata,
            service_account.automount_service_account_token,
        );
    }

    pub fn role(mut self, role: &Role) -> Self {
        self.authority.rbac.upsert_role(role);
        self
    }

    pub fn cluster_role(mut self, role: &ClusterRole) -> Self {
        self.authority.rbac.upsert_cluster_role(role);
        self
    }

    pub fn role_binding(mut self, binding: &RoleBinding) -> Self {
        self.authority.rbac.upsert_role_binding(binding);
        self
    }

    pub fn cluster_role_binding(mut self, binding: &ClusterRoleBinding) -> Self {
        self.authority.rbac.upsert_cluster_role_binding(binding);
        self
    }

    /// The RBAC objects, to add them one by one.
    pub fn rbac_mut(&mut self) -> &mut rights::Rbac {
        &mut self.authority.rbac
    }

    pub fn build(self) -> Authority {
        self.authority
    }
}

fn key(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// Who controls a ServiceAccount: the AgentIdentity of its controller ownerReference.
fn ownership_from_owner_reference(meta: &ObjectMeta) -> ServiceAccountOwnership {
    match controlling_identity(meta) {
        Some((agent, uid)) => ServiceAccountOwnership::Managed {
            agent: agent.to_owned(),
            uid: uid.to_owned(),
        },
        None => ServiceAccountOwnership::Unmanaged,
    }
}

/// The (name, UID) of the AgentIdentity an object's controller ownerReference names: how
/// mandate tells its projections from look-alikes (labels anyone may copy).
pub fn controlling_identity(meta: &ObjectMeta) -> Option<(&str, &str)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == AgentIdentity::kind(&())
                && owner.api_version == AgentIdentity::api_version(&())
        })
        .map(|owner| (owner.name.as_str(), owner.uid.as_str()))
}

impl Authority {
    pub fn builder() -> AuthorityBuilder {
        AuthorityBuilder::default()
    }

    /// An empty snapshot with these knobs, to be kept current with `upsert_*`/`remove_*`.
    pub fn new(config: Config) -> Authority {
        Authority {
            config,
            namespaces: imbl::HashMap::new(),
            rbac: rights::Rbac::default(),
        }
    }

    /// Builds a snapshot from plain object lists, such as reflector stores (`Arc<T>`) or
    /// manifests read from disk (`T`).
    pub fn from_objects<I, B, P, S>(
        config: Config,
        identities: I,
        bindings: B,
        policies: P,
        service_accounts: S,
    ) -> Authority
    where
        I: IntoIterator,
        I::Item: Into<Arc<AgentIdentity>>,
        B: IntoIterator,
        B::Item: Into<Arc<ToolBinding>>,
        P: IntoIterator,
        P::Item: Into<Arc<DelegationPolicy>>,
        S: IntoIterator,
        S::Item: Into<Arc<ServiceAccount>>,
    {
        let mut builder = Authority::builder().config(config);
        identities.into_iter().for_each(|o| builder.add_identity(o));
        bindings.into_iter().for_each(|o| builder.add_binding(o));
        policies.into_iter().for_each(|o| builder.add_policy(o));
        service_accounts
            .into_iter()
            .for_each(|o| builder.add_service_account(o));
        builder.build()
    }

    /// Adds an identity or replaces the one of the same (namespace, name).
    pub fn upsert_identity(&mut self, identity: Arc<AgentIdentity>) {
        let Some((namespace, name)) = key(&identity.metadata) else {
            return;
        };
        let name = name.to_owned();
        let ns = self.namespaces.entry(namespace.to_owned()).or_default();
        if let Some(previous) = ns.identities.get(&name).cloned() {
            ns.unclaim(&previous, &name);
        }
        insert_sorted(
            ns.claims
                .entry(identity.service_account_name().to_owned())
                .or_default(),
            name.clone(),
            String::as_str,
        );
        ns.identities.insert(name, identity);
    }

    pub fn remove_identity(&mut self, namespace: &str, name: &str) {
        self.edit(namespace, |ns| {
            if let Some(previous) = ns.identities.remove(name) {
                ns.unclaim(&previous, name);
            }
        });
    }

    /// Adds a ToolBinding or replaces the one of the same (namespace, name).
    pub fn upsert_binding(&mut self, binding: Arc<ToolBinding>) {
        let Some((namespace, name)) = key(&binding.metadata) else {
            return;
        };
        let name = name.to_owned();
        let ns = self.namespaces.entry(namespace.to_owned()).or_default();
        if let Some(previous) = ns.bindings.get(&name).cloned() {
            ns.unindex_binding(&previous, &name);
        }
        insert_sorted(
            ns.bindings_by_agent
                .entry(binding.spec.agent.clone())
                .or_default(),
            Arc::clone(&binding),
            binding_name,
        );
        ns.bindings.insert(name, binding);
    }

    pub fn remove_binding(&mut self, namespace: &str, name: &str) {
        self.edit(namespace, |ns| {
            if let Some(previous) = ns.bindings.remove(name) {
                ns.unindex_binding(&previous, name);
            }
        });
    }

    /// Adds a DelegationPolicy or replaces the one of the same (namespace, name).
    pub fn upsert_policy(&mut self, policy: Arc<DelegationPolicy>) {
        let Some((namespace, name)) = key(&policy.metadata) else {
            return;
        };
        let name = name.to_owned();
        let ns = self.namespaces.entry(namespace.to_owned()).or_default();
        ns.policies.insert(name, policy);
    }

    pub fn remove_policy(&mut self, namespace: &str, name: &str) {
        self.edit(namespace, |ns| {
            ns.policies.remove(name);
        });
    }

    /// Records a ServiceAccount from its metadata and, where known, its
    /// `automountServiceAccountToken` (a metadata-only watch does not know it).
    pub fn upsert_service_account(&mut self, meta: &ObjectMeta, automount_token: Option<bool>) {
        let Some((namespace, name)) = key(meta) else {
            return;
        };
        let entry = ServiceAccountEntry {
            ownership: ownership_from_owner_reference(meta),
            automount_token,
        };
        let ns = self.namespaces.entry(namespace.to_owned()).or_default();
        // Owners rarely change: most updates (token Secrets, resourceVersion) leave it alone.
        if ns.service_accounts.get(name) != Some(&entry) {
            ns.service_accounts.insert(name.to_owned(), entry);
        }
    }

    pub fn remove_service_account(&mut self, namespace: &str, name: &str) {
        self.edit(namespace, |ns| {
            ns.service_accounts.remove(name);
        });
    }

    /// Removes one object of `kind`, if present.
    pub fn remove(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        match kind {
            ObjectKind::Identity => self.remove_identity(namespace, name),
            ObjectKind::Binding => self.remove_binding(namespace, name),
            ObjectKind::Policy => self.remove_policy(namespace, name),
            ObjectKind::ServiceAccount => self.remove_service_account(namespace, name),
            ObjectKind::Rbac(kind) => self.rbac.remove(kind, namespace, name),
        }
    }

    /// Removes every object of `kind` (before a fresh list of that kind is applied).
    pub fn clear(&mut self, kind: ObjectKind) {
        if let ObjectKind::Rbac(kind) = kind {
            self.rbac.clear(kind);
            return;
        }
        let keys: Vec<(String, String)> = self
            .namespaces
            .iter()
            .flat_map(|(namespace, ns)| {
                let names: Vec<&String> = match kind {
                    ObjectKind::Identity => ns.identities.keys().collect(),
                    ObjectKind::Binding => ns.bindings.keys().collect(),
                    ObjectKind::Policy => ns.policies.keys().collect(),
                    ObjectKind::ServiceAccount => ns.service_accounts.keys().collect(),
                    ObjectKind::Rbac(_) => Vec::new(),
                };
                names
                    .into_iter()
                    .map(move |name| (namespace.clone(), name.clone()))
            })
            .collect();
        for (namespace, name) in keys {
            self.remove(kind, &namespace, &name);
        }
    }

    /// Changes one namespace, and forgets it once it holds nothing.
    fn edit(&mut self, namespace: &str, change: impl FnOnce(&mut Namespace)) {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return;
        };
        change(ns);
        if ns.is_empty() {
            self.namespaces.remove(namespace);
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The RBAC index.
    pub fn rbac(&self) -> &rights::Rbac {
        &self.rbac
    }

    /// The RBAC index, to keep it current change by change.
    pub fn rbac_mut(&mut self) -> &mut rights::Rbac {
        &mut self.rbac
    }

    /// Every dangerous Kubernetes API right ServiceAccount `namespace/service_account` holds
    /// through RBAC, with the binding and role granting each (see [`rights`]).
    pub fn api_rights(&self, namespace: &str, service_account: &str) -> Vec<rights::ApiRight> {
        self.rbac.rights_of(namespace, service_account)
    }

    /// Namespaces holding at least one object, sorted.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.namespaces.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn identity(&self, namespace: &str, name: &str) -> Option<&AgentIdentity> {
        self.namespace(namespace)?
            .identities
            .get(name)
            .map(Arc::as_ref)
    }

    /// The identities of a namespace, sorted by name.
    pub fn identities_in(&self, namespace: &str) -> impl Iterator<Item = &AgentIdentity> {
        self.namespace(namespace)
            .into_iter()
            .flat_map(|ns| ns.identities.values().map(Arc::as_ref))
    }

    pub fn binding(&self, namespace: &str, name: &str) -> Option<&ToolBinding> {
        self.namespace(namespace)?
            .bindings
            .get(name)
            .map(Arc::as_ref)
    }

    /// Every ToolBinding whose `spec.agent` names `agent`, live or not, sorted by name.
    pub fn bindings_for(&self, namespace: &str, agent: &str) -> impl Iterator<Item = &ToolBinding> {
        self.namespace(namespace)
            .and_then(|ns| ns.bindings_by_agent.get(agent))
            .into_iter()
            .flat_map(|bindings| bindings.iter().map(Arc::as_ref))
    }

    pub fn policy(&self, namespace: &str, name: &str) -> Option<&DelegationPolicy> {
        self.namespace(namespace)?
            .policies
            .get(name)
            .map(Arc::as_ref)
    }

    /// The DelegationPolicies of a namespace, sorted by name.
    pub fn policies_in(&self, namespace: &str) -> impl Iterator<Item = &DelegationPolicy> {
        self.namespace(namespace)
            .into_iter()
            .flat_map(|ns| ns.policies.values().map(Arc::as_ref))
    }

    /// The accountable owner of an identity.
    pub fn owner(&self, namespace: &str, agent: &str) -> Option<&Owner> {
        self.identity(namespace, agent).map(|i| &i.spec.owner)
    }

    /// Every identity that claims `service_account` as its ServiceAccount, sorted by name.
    /// More than one means a conflict the validator reports.
    pub fn identities_for_service_account(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> impl Iterator<Item = &AgentIdentity> {
        let ns = self.namespace(namespace);
        ns.and_then(|ns| ns.claims.get(service_account))
            .into_iter()
            .flat_map(|claimants| claimants.iter())
            .filter_map(move |name| ns.and_then(|ns| ns.identities.get(name)).map(Arc::as_ref))
    }

    /// The identity that runs as `service_account`: the first claimant by name. Admission uses
    /// it to tell an agent's ServiceAccount from any other (`ServiceAccountHijack`).
    pub fn identity_for_service_account(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Option<&AgentIdentity> {
        self.identities_for_service_account(namespace, service_account)
            .next()
    }

    /// Whether a ServiceAccount exists and which identity controls it (by ownerReference).
    pub fn service_account_ownership(
        &self,
        namespace: &str,
        name: &str,
    ) -> ServiceAccountOwnership {
        self.service_account_entry(namespace, name)
            .map_or(ServiceAccountOwnership::Absent, |e| e.ownership.clone())
    }

    /// The names of a namespace's ServiceAccounts, managed or not, sorted.
    pub fn service_accounts_in(&self, namespace: &str) -> impl Iterator<Item = &str> {
        self.namespace(namespace)
            .into_iter()
            .flat_map(|ns| ns.service_accounts.keys().map(String::as_str))
    }

    /// The agent whose AgentIdentity controls a ServiceAccount (by ownerReference), and that
    /// identity's UID: it may be gone, its account waiting for the garbage collector.
    pub fn service_account_controller(&self, namespace: &str, name: &str) -> Option<(&str, &str)> {
        match &self.service_account_entry(namespace, name)?.ownership {
            ServiceAccountOwnership::Managed { agent, uid } => Some((agent, uid)),
            _ => None,
        }
    }

    /// The agent a ServiceAccount belongs to by its controller ownerReference.
    pub fn managed_service_account_agent(&self, namespace: &str, name: &str) -> Option<&str> {
        self.service_account_controller(namespace, name)
            .map(|(agent, _)| agent)
    }

    /// A ServiceAccount's `automountServiceAccountToken`, when the snapshot knows it.
    pub fn service_account_automount(&self, namespace: &str, name: &str) -> Option<bool> {
        self.service_account_entry(namespace, name)?.automount_token
    }

    fn service_account_entry(&self, namespace: &str, name: &str) -> Option<&ServiceAccountEntry> {
        self.namespace(namespace)?.service_accounts.get(name)
    }

    /// The tools `agent` holds at `now`, sorted by (tool, binding). A binding grants nothing
    /// outside its validity window, and nothing at all while it breaks a rule (a ReadOnly
    /// agent with a write tool, a High-risk tool without a bounded validUntil, a missing
    /// approval): fail closed. An agent that does not exist holds nothing.
    pub fn held_tools(&self, namespace: &str, agent: &str, now: Timestamp) -> Vec<HeldTool<'_>> {
        let Some(identity) = self.identity(namespace, agent) else {
            return Vec::new();
        };
        let mut held: Vec<HeldTool<'_>> = self
            .bindings_for(namespace, agent)
            .filter(|b| b.is_live_at(now))
            .filter(|b| validate::binding_rules(Some(identity), b, now, &self.config).is_empty())
            .flat_map(|binding| {
                binding.spec.tools.iter().map(move |tool| HeldTool {
                    binding,
                    tool,
                    risk: self.config.risk_floor.assess(tool).effective,
                    expires_at: binding.spec.valid_until.as_ref().map(|t| t.0),
                })
            })
            .collect();
        held.sort_by(|a, b| {
            (a.tool.name.as_str(), a.binding_name()).cmp(&(b.tool.name.as_str(), b.binding_name()))
        });
        held
    }

    /// [`Authority::held_tools`] in the shape of `AgentIdentity.status.tools`.
    pub fn live_tools(&self, namespace: &str, agent: &str, now: Timestamp) -> Vec<LiveTool> {
        self.held_tools(namespace, agent, now)
            .iter()
            .map(HeldTool::to_live_tool)
            .collect()
    }

    /// The names of the tools `agent` holds at `now`.
    pub fn held_tool_names(
        &self,
        namespace: &str,
        agent: &str,
        now: Timestamp,
    ) -> BTreeSet<String> {
        self.held_tools(namespace, agent, now)
            .into_iter()
            .map(|h| h.tool.name.clone())
            .collect()
    }

    /// Where a ToolBinding stands at `now`: Invalid when it breaks a rule, else Expired,
    /// Pending or Active by its window.
    pub fn binding_phase(&self, binding: &ToolBinding, now: Timestamp) -> ToolBindingPhase {
        Authority::phase_given(binding, &self.validate_binding(binding, now), now)
    }

    /// [`Authority::binding_phase`] for a binding already validated (its `findings`), so a
    /// caller that needs both validates once.
    pub fn phase_given(
        binding: &ToolBinding,
        findings: &[Finding],
        now: Timestamp,
    ) -> ToolBindingPhase {
        if findings.is_empty() {
            binding.window_phase(now)
        } else {
            ToolBindingPhase::Invalid
        }
    }

    /// The next instant strictly after `now` at which what `agent` may do changes: a
    /// validFrom or validUntil of its bindings, a validUntil of a policy it takes part in, and
    /// the same for every agent connected to it through delegation (their tools decide
    /// whether its delegation is safe). The reconciler requeues exactly then.
    pub fn next_boundary(&self, namespace: &str, agent: &str, now: Timestamp) -> Option<Timestamp> {
        let ns = self.namespace(namespace)?;
        // Agents weakly connected to `agent` through policies that have not expired.
        let mut component: BTreeSet<&str> = BTreeSet::from([agent]);
        let mut frontier = vec![agent];
        let live_policies: Vec<&DelegationPolicy> = ns
            .policies
            .values()
            .map(Arc::as_ref)
            .filter(|p| p.is_live_at(now))
            .collect();
        while let Some(current) = frontier.pop() {
            for policy in &live_policies {
                let delegator = policy.spec.delegator.as_str();
                let delegates = policy.spec.delegates.iter().map(|d| d.agent.as_str());
                let touches = delegator == current
                    || policy.spec.delegates.iter().any(|d| d.agent == current);
                if touches {
                    for other in std::iter::once(delegator).chain(delegates) {
                        if component.insert(other) {
                            frontier.push(other);
                        }
                    }
                }
            }
        }
        let binding_times = component
            .iter()
            .filter_map(|a| ns.bindings_by_agent.get(*a))
            .flat_map(|bindings| bindings.iter())
            .flat_map(|b| [b.spec.valid_from.as_ref(), b.spec.valid_until.as_ref()]);
        let policy_times = live_policies
            .iter()
            .filter(|p| {
                component.contains(p.spec.delegator.as_str())
                    || p.spec
                        .delegates
                        .iter()
                        .any(|d| component.contains(d.agent.as_str()))
            })
            .map(|p| p.spec.valid_until.as_ref());
        binding_times
            .chain(policy_times)
            .flatten()
            .map(|t| t.0)
            .filter(|t| *t > now)
            .min()
    }

    /// The delegation graph of a namespace at `now`, analysed. Expired policies do not count,
    /// and a delegation naming an agent that does not exist is left out (the validator reports
    /// it).
    pub fn delegation_graph(&self, namespace: &str, now: Timestamp) -> DelegationGraph {
        self.graph_with(namespace, now, None)
    }

    /// The delegation graph as if `proposed` were applied, replacing any policy of the same
    /// name in its namespace.
    pub fn delegation_graph_with(
        &self,
        proposed: &DelegationPolicy,
        now: Timestamp,
    ) -> DelegationGraph {
        let namespace = proposed.metadata.namespace.as_deref().unwrap_or_default();
        self.graph_with(namespace, now, Some(proposed))
    }

    fn graph_with(
        &self,
        namespace: &str,
        now: Timestamp,
        proposed: Option<&DelegationPolicy>,
    ) -> DelegationGraph {
        let proposed_name = proposed.and_then(|p| p.metadata.name.as_deref());
        let existing = self
            .namespace(namespace)
            .into_iter()
            .flat_map(|ns| ns.policies.iter())
            .filter(|(name, _)| Some(name.as_str()) != proposed_name)
            .map(|(name, p)| (name.as_str(), p.as_ref()));
        let proposed = proposed.map(|p| (proposed_name.unwrap_or_default(), p));
        let mut edges = Vec::new();
        for (name, policy) in existing.chain(proposed) {
            if !policy.is_live_at(now) || self.identity(namespace, &policy.spec.delegator).is_none()
            {
                continue;
            }
            for delegate in &policy.spec.delegates {
                if self.identity(namespace, &delegate.agent).is_none() {
                    continue;
                }
                edges.push(Edge {
                    policy: name.to_owned(),
                    delegator: policy.spec.delegator.clone(),
                    delegate: delegate.agent.clone(),
                    tools: delegate.tools.iter().cloned().collect(),
                    // A negative maxDepth (the schema forbids it) allows no hop at all.
                    max_depth: u32::try_from(policy.spec.max_depth).unwrap_or(0),
                });
            }
        }
        let agents: BTreeSet<&str> = edges
            .iter()
            .flat_map(|e| [e.delegator.as_str(), e.delegate.as_str()])
            .collect();
        let held: BTreeMap<String, BTreeSet<String>> = agents
            .into_iter()
            .map(|a| (a.to_owned(), self.held_tool_names(namespace, a, now)))
            .collect();
        DelegationGraph::analyse(edges, &held)
    }

    fn namespace(&self, namespace: &str) -> Option<&Namespace> {
        self.namespaces.get(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::api::{Action, Risk};

    #[test]
    fn live_tools_are_those_of_bindings_naming_the_identity_inside_their_window() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .identity(identity("other").build())
            .binding(
                binding("search")
                    .agent("researcher")
                    .tool(tool("web-search"))
                    .build(),
            )
            .binding(
                binding("later")
                    .agent("researcher")
                    .tool(tool("crm"))
                    .valid_from(hours(1))
                    .build(),
            )
            .binding(
                binding("gone")
                    .agent("researcher")
                    .tool(tool("wiki"))
                    .valid_until(hours(-1))
                    .build(),
            )
            .binding(binding("theirs").agent("other").tool(tool("erp")).build())
            .build();
        let tools = authority.live_tools(NS, "researcher", NOW);
        assert_eq!(names(&tools), ["web-search"]);
        assert_eq!(tools[0].binding, "search");
        assert_eq!(tools[0].risk, Risk::Low);
        assert_eq!(tools[0].actions, [Action::Read]);
        assert_eq!(tools[0].expires_at, None);
    }

    #[test]
    fn a_tool_is_live_from_valid_from_and_gone_at_valid_until() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .binding(
                binding("window")
                    .agent("researcher")
                    .tool(tool("crm"))
                    .valid_from(hours(0))
                    .valid_until(hours(2))
                    .build(),
            )
            .build();
        assert_eq!(names(&authority.live_tools(NS, "researcher", NOW)), ["crm"]);
        assert_eq!(
            authority.live_tools(NS, "researcher", NOW)[0].expires_at,
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(hours(
                2
            )))
        );
        assert!(authority.live_tools(NS, "researcher", hours(2)).is_empty());
        assert!(authority.live_tools(NS, "researcher", hours(-1)).is_empty());
    }

    #[test]
    fn lookups_never_cross_namespaces() {
        let authority = Authority::builder()
            .identity(identity("researcher").namespace("team-a").build())
            .binding(
                binding("search")
                    .namespace("team-b")
                    .agent("researcher")
                    .tool(tool("web-search"))
                    .build(),
            )
            .build();
        assert!(authority.identity("team-a", "researcher").is_some());
        assert!(authority.identity("team-b", "researcher").is_none());
        assert!(authority.live_tools("team-a", "researcher", NOW).is_empty());
        assert_eq!(authority.namespaces(), ["team-a", "team-b"]);
    }

    #[test]
    fn a_binding_that_breaks_a_rule_grants_nothing() {
        let authority = Authority::builder()
            .identity(identity("reader").build())
            .binding(
                binding("writes")
                    .agent("reader")
                    .tool(tool("crm").actions([Action::Read, Action::Write]))
                    .build(),
            )
            .build();
        assert!(authority.live_tools(NS, "reader", NOW).is_empty());
        let writes = authority
            .binding(NS, "writes")
            .cloned()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            authority.binding_phase(&writes, NOW),
            ToolBindingPhase::Invalid
        );
    }

    #[test]
    fn binding_phase_follows_the_window() {
        let authority = Authority::builder().identity(identity("a").build()).build();
        let pending = binding("p")
            .agent("a")
            .tool(tool("t"))
            .valid_from(hours(1))
            .build();
        let expired = binding("e")
            .agent("a")
            .tool(tool("t"))
            .valid_until(hours(0))
            .build();
        let active = binding("x").agent("a").tool(tool("t")).build();
        assert_eq!(
            authority.binding_phase(&pending, NOW),
            ToolBindingPhase::Pending
        );
        assert_eq!(
            authority.binding_phase(&expired, NOW),
            ToolBindingPhase::Expired
        );
        assert_eq!(
            authority.binding_phase(&active, NOW),
            ToolBindingPhase::Active
        );
    }

    #[test]
    fn next_boundary_is_the_earliest_window_edge_strictly_after_now() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .identity(identity("stranger").build())
            .binding(
                binding("one")
                    .agent("a")
                    .tool(tool("t"))
                    .valid_from(hours(-2))
                    .valid_until(hours(5))
                    .build(),
            )
            .binding(
                binding("two")
                    .agent("a")
                    .tool(tool("u"))
                    .valid_from(hours(3))
                    .build(),
            )
            .binding(
                binding("theirs")
                    .agent("stranger")
                    .tool(tool("t"))
                    .valid_until(hours(1))
                    .build(),
            )
            .build();
        assert_eq!(authority.next_boundary(NS, "a", NOW), Some(hours(3)));
        assert_eq!(authority.next_boundary(NS, "a", hours(3)), Some(hours(5)));
        assert_eq!(authority.next_boundary(NS, "a", hours(5)), None);
        assert_eq!(authority.next_boundary(NS, "b", NOW), None);
    }

    #[test]
    fn next_boundary_includes_policies_and_the_tools_of_delegation_partners() {
        let authority = Authority::builder()
            .identity(identity("a").build())
            .identity(identity("b").build())
            .binding(
                binding("bt")
                    .agent("b")
                    .tool(tool("t"))
                    .valid_until(hours(4))
                    .build(),
            )
            .policy(
                policy("ab")
                    .delegator("a")
                    .delegate("b", ["t"])
                    .valid_until(hours(6))
                    .build(),
            )
            .build();
        assert_eq!(authority.next_boundary(NS, "a", NOW), Some(hours(4)));
        assert_eq!(authority.next_boundary(NS, "a", hours(4)), Some(hours(6)));
    }

    #[test]
    fn service_account_lookups_tell_managed_unmanaged_and_claimed_apart() {
        let authority = Authority::builder()
            .identity(identity("a").service_account("shared").build())
            .identity(identity("b").service_account("shared").build())
            .service_account(service_account("shared").managed_for("a").build())
            .service_account(service_account("legacy").build())
            .build();
        assert_eq!(
            authority
                .identity_for_service_account(NS, "shared")
                .and_then(|i| i.metadata.name.as_deref()),
            Some("a")
        );
        assert_eq!(
            authority
                .identities_for_service_account(NS, "shared")
                .count(),
            2
        );
        assert!(
            authority
                .identity_for_service_account(NS, "legacy")
                .is_none()
        );
        assert_eq!(
            authority.service_account_ownership(NS, "shared"),
            ServiceAccountOwnership::Managed {
                agent: "a".into(),
                uid: format!("uid-{NS}-a"),
            }
        );
        assert_eq!(
            authority.service_account_ownership(NS, "legacy"),
            ServiceAccountOwnership::Unmanaged
        );
        assert_eq!(
            authority.service_account_ownership(NS, "nope"),
            ServiceAccountOwnership::Absent
        );
        assert_eq!(
            authority.owner(NS, "a").map(|o| o.name.as_str()),
            Some("team-a")
        );
    }

    #[test]
    fn objects_without_namespace_or_name_are_left_out() {
        let mut nameless = identity("x").build();
        nameless.metadata.name = None;
        let mut homeless = identity("y").build();
        homeless.metadata.namespace = None;
        let authority = Authority::builder()
            .identity(nameless)
            .identity(homeless)
            .build();
        assert!(authority.namespaces().is_empty());
    }

    #[test]
    fn ten_thousand_identities_and_bindings_build_and_answer_quickly() {
        let identities: Vec<_> = (0..10_000)
            .map(|i| {
                identity(&format!("agent-{i}"))
                    .namespace(&format!("ns-{}", i % 50))
                    .build()
            })
            .collect();
        let bindings: Vec<_> = (0..10_000)
            .map(|i| {
                binding(&format!("b-{i}"))
                    .namespace(&format!("ns-{}", i % 50))
                    .agent(&format!("agent-{i}"))
                    .tool(tool("web-search"))
                    .build()
            })
            .collect();
        let started = std::time::Instant::now();
        let authority = Authority::from_objects(
            Config::default(),
            identities,
            bindings,
            Vec::<DelegationPolicy>::new(),
            Vec::<ServiceAccount>::new(),
        );
        for i in 0..10_000 {
            let ns = format!("ns-{}", i % 50);
            assert_eq!(
                authority.live_tools(&ns, &format!("agent-{i}"), NOW).len(),
                1
            );
        }
        // Generous even for a debug build on a busy machine; a quadratic index would take
        // minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn an_authority_kept_current_change_by_change_answers_like_one_built_afresh() {
        let mut live = Authority::new(Config::default());
        live.upsert_identity(identity("a").service_account("shared").build().into());
        live.upsert_identity(identity("b").build().into());
        live.upsert_binding(binding("x").agent("a").tool(tool("crm")).build().into());
        live.upsert_service_account(
            &service_account("shared").managed_for("a").build().metadata,
            None,
        );
        let before = live.clone();
        // a moves to its own ServiceAccount; the binding moves from a to b; b goes away.
        live.upsert_identity(identity("a").build().into());
        live.upsert_binding(binding("x").agent("b").tool(tool("crm")).build().into());
        live.remove_identity(NS, "b");
        let afresh = Authority::builder()
            .identity(identity("a").build())
            .binding(binding("x").agent("b").tool(tool("crm")).build())
            .service_account(service_account("shared").managed_for("a").build())
            .build();
        for authority in [&live, &afresh] {
            assert_eq!(
                authority
                    .identities_for_service_account(NS, "shared")
                    .count(),
                0
            );
            assert_eq!(authority.identities_for_service_account(NS, "a").count(), 1);
            assert_eq!(authority.bindings_for(NS, "a").count(), 0);
            assert_eq!(authority.bindings_for(NS, "b").count(), 1);
            assert!(authority.identity(NS, "b").is_none());
        }
        // A clone taken earlier is a snapshot: later changes do not reach it.
        assert_eq!(
            before.identities_for_service_account(NS, "shared").count(),
            1
        );
        assert_eq!(names(&before.live_tools(NS, "a", NOW)), ["crm"]);
    }

    #[test]
    fn a_namespace_left_empty_is_forgotten_and_clear_empties_one_kind() {
        let mut live = Authority::new(Config::default());
        live.upsert_identity(identity("a").namespace("team-a").build().into());
        live.upsert_policy(policy("p").delegator("a").build().into());
        live.remove(ObjectKind::Identity, "team-a", "a");
        assert_eq!(live.namespaces(), [NS]);
        live.clear(ObjectKind::Policy);
        assert!(live.namespaces().is_empty());
    }

    fn names(tools: &[LiveTool]) -> Vec<&str> {
        tools.iter().map(|t| t.name.as_str()).collect()
    }
}
