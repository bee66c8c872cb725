//! An identity's ApiRightsContained condition: the dangerous Kubernetes API rights its
//! ServiceAccount holds (`authority::rights`) in; the condition's status, reason and message
//! out. And, for the operator's RBAC trigger, two authority snapshots in (before and after a
//! batch of RBAC changes); out, the identities whose rights differ between them or whose
//! condition does not say what they hold now. Pure: never does I/O.

use crate::api::AgentIdentity;
use crate::api::conditions::{API_RIGHTS_CONTAINED, TRUE};
use crate::authority::rights::{self, ApiRight};
use crate::authority::{Authority, Reason};

/// ApiRightsContained's reason when the ServiceAccount holds no dangerous right.
pub const NO_DANGEROUS_RIGHTS: &str = "NoDangerousRights";
/// The event when an identity's ServiceAccount no longer holds any dangerous right.
pub const API_RIGHTS_CONTAINED_EVENT: &str = "ApiRightsContained";

/// The ApiRightsContained condition for the dangerous rights an identity's ServiceAccount
/// holds: its status, reason and message.
pub fn api_rights_condition(
    service_account: &str,
    rights: &[ApiRight],
) -> (bool, &'static str, String) {
    if rights.is_empty() {
        return (
            true,
            NO_DANGEROUS_RIGHTS,
            format!("ServiceAccount {service_account} holds no dangerous Kubernetes API right"),
        );
    }
    (
        false,
        Reason::DangerousApiRights.code(),
        format!(
            "ServiceAccount {service_account} holds Kubernetes API rights outside its mandate \
             (its pods are refused in enforce mode): {}. Delete the bindings or take the rights \
             out of the roles",
            rights::describe(rights)
        ),
    )
}

/// Whether `identity`'s status carries the ApiRightsContained condition `rights` make.
fn carries(identity: &AgentIdentity, service_account: &str, rights: &[ApiRight]) -> bool {
    let (status, reason, message) = api_rights_condition(service_account, rights);
    identity.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == API_RIGHTS_CONTAINED
                && (c.status == TRUE) == status
                && c.reason == reason
                && c.message == message
        })
    })
}

/// The identities of `current`, as (namespace, name), whose ServiceAccount's dangerous rights
/// differ from those it held in `previous` (when known), or whose status does not carry the
/// condition its rights make now. A reconcile that read an older snapshot while the RBAC
/// changed is caught by the first; an identity whose status was never written, or was written
/// by an older version, by the second. Identities the change does not touch are left out, so a
/// change of a role bound cluster-wide costs memory lookups, not API calls.
pub fn identities_with_changed_api_rights<'a>(
    previous: Option<&Authority>,
    current: &'a Authority,
) -> Vec<(&'a str, &'a str)> {
    let mut affected = Vec::new();
    for namespace in current.namespaces() {
        for identity in current.identities_in(namespace) {
            let service_account = identity.service_account_name();
            let now = current.api_rights(namespace, service_account);
            let changed = previous.is_some_and(|p| p.api_rights(namespace, service_account) != now);
            if changed || !carries(identity, service_account, &now) {
                affected.push((
                    namespace,
                    identity.metadata.name.as_deref().unwrap_or_default(),
                ));
            }
        }
    }
    affected
}

/// What one RBAC object (a binding, or a role through the bindings that refer to it) grants
/// the identities of `authority`: (namespace, agent, the dangerous rights it is the binding or
/// the role of), for every identity it grants one, sorted. What `mandate check` reports on RBAC
/// manifests.
pub fn api_rights_granted_by<'a>(
    authority: &'a Authority,
    object: &rights::ObjectName,
) -> Vec<(&'a str, &'a str, Vec<ApiRight>)> {
    let mut granted = Vec::new();
    for namespace in authority.namespaces() {
        for identity in authority.identities_in(namespace) {
            let through: Vec<ApiRight> = authority
                .api_rights(namespace, identity.service_account_name())
                .into_iter()
                .filter(|r| r.binding == *object || r.role == *object)
                .collect();
            if !through.is_empty() {
                let name = identity.metadata.name.as_deref().unwrap_or_default();
                granted.push((namespace, name, through));
            }
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::api::conditions;
    use crate::authority::AuthorityBuilder;
    use crate::authority::fixtures::{NOW, identity};
    use crate::authority::rights::RbacKind;

    fn reader() -> ClusterRole {
        serde_json::from_value(json!({"metadata": {"name": "reader"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn viewer() -> ClusterRole {
        serde_json::from_value(json!({"metadata": {"name": "viewer"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn to_all_accounts(role: &str) -> ClusterRoleBinding {
        serde_json::from_value(json!({"metadata": {"name": format!("all-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn to_account(name: &str, role: &str) -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": format!("{name}-{role}"), "namespace": "agents"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Three identities whose statuses carry the condition the RBAC of `base` makes.
    fn world(rbac: impl Fn(AuthorityBuilder) -> AuthorityBuilder) -> Authority {
        let unassessed = rbac(
            Authority::builder()
                .identity(identity("a").build())
                .identity(identity("b").build())
                .identity(identity("c").build()),
        )
        .build();
        let mut builder = Authority::builder();
        for name in ["a", "b", "c"] {
            let mut assessed = identity(name).build();
            let rights = unassessed.api_rights("agents", name);
            let (status, reason, message) = api_rights_condition(name, &rights);
            assessed.status = Some(crate::api::AgentIdentityStatus {
                conditions: vec![conditions::new(
                    API_RIGHTS_CONTAINED,
                    status,
                    reason,
                    message,
                    None,
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW),
                )],
                ..Default::default()
            });
            builder.add_identity(assessed);
        }
        rbac(builder).build()
    }

    #[test]
    fn a_change_that_alters_no_identitys_rights_wakes_nobody() {
        let before = world(|b| {
            b.cluster_role(&viewer())
                .cluster_role_binding(&to_all_accounts("viewer"))
        });
        // A harmless role bound to every ServiceAccount changes: nobody's rights change.
        let mut wider = viewer();
        if let Some(rule) = wider.rules.as_mut().and_then(|r| r.first_mut()) {
            rule.verbs.push("list".into());
        }
        let after = world(|b| {
            b.cluster_role(&wider)
                .cluster_role_binding(&to_all_accounts("viewer"))
        });
        assert!(identities_with_changed_api_rights(Some(&before), &after).is_empty());
        assert!(identities_with_changed_api_rights(None, &after).is_empty());
    }

    #[test]
    fn a_dangerous_role_bound_to_every_account_wakes_every_identity_and_one_binding_one() {
        let before = world(|b| b.cluster_role(&reader()));
        let mut everyone = before.clone();
        everyone
            .rbac_mut()
            .upsert_cluster_role_binding(&to_all_accounts("reader"));
        assert_eq!(
            identities_with_changed_api_rights(Some(&before), &everyone),
            [("agents", "a"), ("agents", "b"), ("agents", "c")]
        );
        let mut one = before.clone();
        one.rbac_mut()
            .upsert_role_binding(&to_account("b", "reader"));
        assert_eq!(
            identities_with_changed_api_rights(Some(&before), &one),
            [("agents", "b")]
        );
        // Without a previous snapshot, a status that does not match gives it away.
        assert_eq!(
            identities_with_changed_api_rights(None, &one),
            [("agents", "b")]
        );
    }

    #[test]
    fn an_rbac_object_reports_the_identities_it_grants_a_dangerous_right() {
        let authority = world(|b| {
            b.cluster_role(&reader())
                .role_binding(&to_account("a", "reader"))
                .role_binding(&to_account("c", "reader"))
        });
        let binding = rights::ObjectName {
            kind: RbacKind::RoleBinding,
            namespace: "agents".into(),
            name: "a-reader".into(),
        };
        let granted = api_rights_granted_by(&authority, &binding);
        assert_eq!(granted.len(), 1);
        assert_eq!((granted[0].0, granted[0].1), ("agents", "a"));
        let role = rights::ObjectName {
            kind: RbacKind::ClusterRole,
            namespace: String::new(),
            name: "reader".into(),
        };
        let agents: Vec<&str> = api_rights_granted_by(&authority, &role)
            .iter()
            .map(|(_, agent, _)| *agent)
            .collect();
        assert_eq!(agents, ["a", "c"]);
    }
}
