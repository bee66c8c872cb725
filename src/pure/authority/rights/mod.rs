//! Effective Kubernetes API rights of ServiceAccounts: Roles, ClusterRoles, RoleBindings and
//! ClusterRoleBindings (plain k8s-openapi objects) in, kept as an index ([`Rbac`]); out, for a
//! ServiceAccount (namespace, name), every dangerous right it holds ([`danger`]), each with the
//! binding and role that grant it and where (cluster-wide or in one namespace). Pure: never does
//! I/O, never asks the API server.
//!
//! It evaluates RBAC as the API server's authorizer does (kubernetes'
//! `pkg/registry/rbac/validation/rule.go`, `VisitRulesFor`):
//! - a ServiceAccount's token authenticates as user `system:serviceaccount:<ns>:<name>` in the
//!   groups `system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`:
//!   a binding applies when a subject names that user, one of those groups, or the
//!   ServiceAccount (a ServiceAccount subject without a namespace means the RoleBinding's own
//!   namespace; in a ClusterRoleBinding it matches nobody). There are no wildcard subjects;
//! - a ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding grants its Role, or
//!   its ClusterRole, in its own namespace only, and so never a right on a cluster-scoped
//!   resource ([`danger::Reach`]);
//! - a role is read as stored: an aggregated ClusterRole's `rules` are what the aggregation
//!   controller wrote, which is what the authorizer reads; a binding to a role that does not
//!   exist grants nothing;
//! - rules match per [`rules`] (wildcards, subresources, resourceNames).
//!
//! Every map is persistent (`imbl`): a clone is O(1) and one object's change O(log n), so the
//! index lives inside [`crate::authority::Authority`]. A role is digested once, when it
//! changes, into the dangerous rights it grants (most grant none), so evaluating a
//! ServiceAccount costs five hash lookups and a walk over the few bindings that name it.

pub mod danger;
mod rules;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use danger::Reach;
pub use danger::Right;
pub use rules::{Granted, Names, dangerous_rights};

/// The groups every ServiceAccount token carries besides its namespace's
/// (`system:serviceaccounts:<ns>`).
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The user a ServiceAccount's token authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The kinds of RBAC object the index is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RbacKind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl RbacKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RbacKind::Role => "Role",
            RbacKind::ClusterRole => "ClusterRole",
            RbacKind::RoleBinding => "RoleBinding",
            RbacKind::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }
}

/// A Role or ClusterRole (namespace `""`), or a RoleBinding or ClusterRoleBinding (namespace
/// `""`), by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    pub kind: RbacKind,
    pub namespace: String,
    pub name: String,
}

impl ObjectName {
    fn new(kind: RbacKind, namespace: &str, name: &str) -> Self {
        ObjectName {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectName {
    /// `RoleBinding ns/name`, `ClusterRole name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// Where a right is held.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Through a ClusterRoleBinding: in every namespace, and on cluster-scoped resources.
    Cluster,
    /// Through a RoleBinding: in its namespace.
    Namespace(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("cluster-wide"),
            Scope::Namespace(namespace) => write!(f, "in {namespace}"),
        }
    }
}

/// One dangerous right a ServiceAccount holds, and what grants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiRight {
    /// The RoleBinding or ClusterRoleBinding that names the ServiceAccount (or its groups).
    pub binding: ObjectName,
    /// The Role or ClusterRole it refers to.
    pub role: ObjectName,
    pub scope: Scope,
    pub right: Right,
    pub names: Names,
}

impl ApiRight {
    /// `get secrets` or `get secrets (only a, b)`.
    pub fn right_text(&self) -> String {
        match &self.names {
            Names::All => self.right.to_string(),
            Names::Only(names) => format!(
                "{} (only {})",
                self.right,
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// A binding as the evaluator keeps it: the role it grants and the subjects it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    /// `None` when the roleRef can grant nothing (a ClusterRoleBinding to a Role, an unknown
    /// kind).
    role: Option<ObjectName>,
    subjects: Vec<SubjectKey>,
}

/// Who a binding subject is, as the authorizer compares it: a user name or a group name. A
/// ServiceAccount subject is its user name (`system:serviceaccount:<ns>:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SubjectKey {
    User(String),
    Group(String),
}

/// The RBAC index. Build it with the `upsert_*` methods; ask it [`Rbac::rights_of`].
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    /// Roles and ClusterRoles -> the dangerous rights they grant (most: none).
    roles: imbl::HashMap<ObjectName, Arc<[Granted]>>,
    bindings: imbl::HashMap<ObjectName, Arc<Binding>>,
    /// Subject -> the bindings naming it.
    by_subject: imbl::HashMap<SubjectKey, imbl::OrdSet<ObjectName>>,
}

impl Rbac {
    pub fn upsert_role(&mut self, role: &Role) {
        if let Some((namespace, name)) = namespaced(&role.metadata) {
            self.put_role(
                ObjectName::new(RbacKind::Role, namespace, name),
                role.rules.as_deref(),
            );
        }
    }

    pub fn upsert_cluster_role(&mut self, role: &ClusterRole) {
        if let Some(name) = role.metadata.name.as_deref() {
            self.put_role(
                ObjectName::new(RbacKind::ClusterRole, "", name),
                role.rules.as_deref(),
            );
        }
    }

    pub fn upsert_role_binding(&mut self, binding: &RoleBinding) {
        if let Some((namespace, name)) = namespaced(&binding.metadata) {
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            self.put_binding(
                ObjectName::new(RbacKind::RoleBinding, namespace, name),
                &binding.role_ref,
                subjects,
            );
        }
    }

    pub fn upsert_cluster_role_binding(&mut self, binding: &ClusterRoleBinding) {
        if let Some(name) = binding.metadata.name.as_deref() {
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            self.put_binding(
                ObjectName::new(RbacKind::ClusterRoleBinding, "", name),
                &binding.role_ref,
                subjects,
            );
        }
    }

    /// Removes one object; `namespace` is ignored for the cluster-scoped kinds.
    pub fn remove(&mut self, kind: RbacKind, namespace: &str, name: &str) {
        let key = ObjectName::new(kind, if is_cluster(kind) { "" } else { namespace }, name);
        match kind {
            RbacKind::Role | RbacKind::ClusterRole => {
                self.roles.remove(&key);
            }
            RbacKind::RoleBinding | RbacKind::ClusterRoleBinding => self.drop_binding(&key),
        }
    }

    /// Removes every object of `kind` (before a fresh list of that kind is applied).
    pub fn clear(&mut self, kind: RbacKind) {
        match kind {
            RbacKind::Role | RbacKind::ClusterRole => self.roles.retain(|key, _| key.kind != kind),
            RbacKind::RoleBinding | RbacKind::ClusterRoleBinding => {
                let keys: Vec<ObjectName> = self
                    .bindings
                    .keys()
                    .filter(|key| key.kind == kind)
                    .cloned()
                    .collect();
                for key in keys {
                    self.drop_binding(&key);
                }
            }
        }
    }

    /// How many roles and bindings the index holds.
    pub fn len(&self) -> usize {
        self.roles.len() + self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every dangerous right ServiceAccount `namespace/name` holds, sorted by (binding, role,
    /// scope, right). Empty when it holds none.
    pub fn rights_of(&self, namespace: &str, name: &str) -> Vec<ApiRight> {
        let keys = [
            SubjectKey::User(service_account_user(namespace, name)),
            SubjectKey::Group(SERVICE_ACCOUNTS_GROUP.to_owned()),
            SubjectKey::Group(format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}")),
            SubjectKey::Group(AUTHENTICATED_GROUP.to_owned()),
        ];
        // A binding naming the ServiceAccount twice (as itself and through a group) counts once.
        let bindings: BTreeSet<&ObjectName> = keys
            .iter()
            .filter_map(|key| self.by_subject.get(key))
            .flat_map(|bindings| bindings.iter())
            .collect();
        let mut rights = Vec::new();
        for key in bindings {
            let Some(role) = self.bindings.get(key).and_then(|b| b.role.as_ref()) else {
                continue;
            };
            let Some(granted) = self.roles.get(role) else {
                continue;
            };
            let scope = match key.kind {
                RbacKind::ClusterRoleBinding => Scope::Cluster,
                _ => Scope::Namespace(key.namespace.clone()),
            };
            for grant in granted.iter() {
                if scope != Scope::Cluster && grant.right.target().reach == Reach::Cluster {
                    continue;
                }
                rights.push(ApiRight {
                    binding: key.clone(),
                    role: role.clone(),
                    scope: scope.clone(),
                    right: grant.right,
                    names: grant.names.clone(),
                });
            }
        }
        rights
    }

    fn put_role(&mut self, key: ObjectName, rules: Option<&[PolicyRule]>) {
        let granted: Arc<[Granted]> = dangerous_rights(rules.unwrap_or_default()).into();
        // A role rewritten with the same dangerous rights (most updates) changes nothing here.
        if self.roles.get(&key).map(AsRef::as_ref) != Some(&*granted) {
            self.roles.insert(key, granted);
        }
    }

    fn put_binding(&mut self, key: ObjectName, role_ref: &RoleRef, subjects: &[Subject]) {
        let namespace = key.namespace.as_str();
        let role = match (key.kind, role_ref.kind.as_str()) {
            (RbacKind::RoleBinding, "Role") => Some(RbacKind::Role),
            (_, "ClusterRole") => Some(RbacKind::ClusterRole),
            _ => None,
        }
        .map(|kind| {
            let role_namespace = if kind == RbacKind::Role {
                namespace
            } else {
                ""
            };
            ObjectName::new(kind, role_namespace, &role_ref.name)
        });
        let mut subjects: Vec<SubjectKey> = subjects
            .iter()
            .filter_map(|s| subject_key(s, namespace))
            .collect();
        subjects.sort();
        subjects.dedup();
        let binding = Binding { role, subjects };
        if self.bindings.get(&key).map(AsRef::as_ref) == Some(&binding) {
            return;
        }
        self.drop_binding(&key);
        for subject in &binding.subjects {
            self.by_subject
                .entry(subject.clone())
                .or_default()
                .insert(key.clone());
        }
        self.bindings.insert(key, Arc::new(binding));
    }

    fn drop_binding(&mut self, key: &ObjectName) {
        let Some(previous) = self.bindings.remove(key) else {
            return;
        };
        for subject in &previous.subjects {
            if let Some(bindings) = self.by_subject.get_mut(subject) {
                bindings.remove(key);
                if bindings.is_empty() {
                    self.by_subject.remove(subject);
                }
            }
        }
    }
}

fn is_cluster(kind: RbacKind) -> bool {
    matches!(kind, RbacKind::ClusterRole | RbacKind::ClusterRoleBinding)
}

fn namespaced(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// `appliesToUser`: a User subject is its name, a Group its name, a ServiceAccount the user its
/// token authenticates as, in the subject's namespace or else the RoleBinding's
/// (`binding_namespace`, `""` for a ClusterRoleBinding, where it then matches nobody). Other
/// kinds match nobody.
fn subject_key(subject: &Subject, binding_namespace: &str) -> Option<SubjectKey> {
    match subject.kind.as_str() {
        "User" => Some(SubjectKey::User(subject.name.clone())),
        "Group" => Some(SubjectKey::Group(subject.name.clone())),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            (!namespace.is_empty())
                .then(|| SubjectKey::User(service_account_user(namespace, &subject.name)))
        }
        _ => None,
    }
}

/// The rights in one clause per (binding, role, scope), in order, the binding first (a long
/// message cut short still names it), verbs on the same resource together:
/// `ClusterRoleBinding x -> ClusterRole y grants cluster-wide: impersonate serviceaccounts;
/// RoleBinding ns-a/edit-bot -> ClusterRole edit grants in ns-a: get,list,watch secrets, create
/// pods/exec`.
pub fn describe(rights: &[ApiRight]) -> String {
    let mut clauses: Vec<String> = Vec::new();
    let mut start = 0;
    while start < rights.len() {
        let first = &rights[start];
        let same = |r: &ApiRight| {
            r.binding == first.binding && r.role == first.role && r.scope == first.scope
        };
        let end = start + rights[start..].iter().take_while(|r| same(r)).count();
        // (resource, names) -> verbs, in the order the resources first appear.
        let mut resources: Vec<(String, &Names, Vec<&str>)> = Vec::new();
        for right in &rights[start..end] {
            let resource = right.right.resource_text();
            match resources
                .iter_mut()
                .find(|(r, names, _)| *r == resource && **names == right.names)
            {
                Some((_, _, verbs)) => verbs.push(right.right.verb()),
                None => resources.push((resource, &right.names, vec![right.right.verb()])),
            }
        }
        let listed: Vec<String> = resources
            .iter()
            .map(|(resource, names, verbs)| {
                let only = match names {
                    Names::All => String::new(),
                    Names::Only(names) => format!(
                        " (only {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                format!("{} {resource}{only}", verbs.join(","))
            })
            .collect();
        clauses.push(format!(
            "{} -> {} grants {}: {}",
            first.binding,
            first.role,
            first.scope,
            listed.join(", ")
        ));
        start = end;
    }
    clauses.join("; ")
}
