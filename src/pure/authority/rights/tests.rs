//! The evaluator against rule and subject shapes, and against the API server's own bootstrap
//! policy (`testdata/`, copied from kubernetes v1.37.2).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;

const NS: &str = "team-a";
const SA: &str = "bot";

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named(mut rule: Value, names: &[&str]) -> Value {
    rule["resourceNames"] = json!(names);
    rule
}

fn cluster_role(name: &str, rules: &[Value]) -> ClusterRole {
    from(json!({"metadata": {"name": name}, "rules": rules}))
}

fn role(namespace: &str, name: &str, rules: &[Value]) -> Role {
    from(json!({"metadata": {"name": name, "namespace": namespace}, "rules": rules}))
}

fn sa(namespace: Option<&str>, name: &str) -> Value {
    match namespace {
        Some(ns) => json!({"kind": "ServiceAccount", "name": name, "namespace": ns}),
        None => json!({"kind": "ServiceAccount", "name": name}),
    }
}

fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn role_binding(
    namespace: &str,
    name: &str,
    role_kind: &str,
    role: &str,
    subjects: &[Value],
) -> RoleBinding {
    from(json!({
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    }))
}

fn cluster_role_binding(name: &str, role: &str, subjects: &[Value]) -> ClusterRoleBinding {
    from(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }))
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
}

/// The rights of team-a/bot as `verb resource scope` strings.
fn texts(rbac: &Rbac) -> Vec<String> {
    texts_of(rbac, NS, SA)
}

fn texts_of(rbac: &Rbac, namespace: &str, name: &str) -> Vec<String> {
    rbac.rights_of(namespace, name)
        .iter()
        .map(|r| format!("{} {}", r.right_text(), r.scope))
        .collect()
}

/// An index with one ClusterRole granting `rules`, bound to team-a/bot cluster-wide.
fn bound_cluster_wide(rules: &[Value]) -> Rbac {
    let mut rbac = Rbac::default();
    rbac.upsert_cluster_role(&cluster_role("r", rules));
    rbac.upsert_cluster_role_binding(&cluster_role_binding("b", "r", &[sa(Some(NS), SA)]));
    rbac
}

#[test]
fn impersonating_service_accounts_through_a_role_is_reported_with_its_binding_and_role() {
    let mut rbac = Rbac::default();
    rbac.upsert_role(&role(
        NS,
        "impersonator",
        &[rule(&["impersonate"], &[""], &["serviceaccounts"])],
    ));
    rbac.upsert_role_binding(&role_binding(
        NS,
        "bot-impersonates",
        "Role",
        "impersonator",
        &[sa(Some(NS), SA)],
    ));
    let rights = rbac.rights_of(NS, SA);
    assert_eq!(rights.len(), 1);
    assert_eq!(rights[0].right.to_string(), "impersonate serviceaccounts");
    assert_eq!(rights[0].scope, Scope::Namespace(NS.into()));
    assert_eq!(
        describe(&rights),
        "RoleBinding team-a/bot-impersonates -> Role team-a/impersonator grants in team-a: \
         impersonate serviceaccounts"
    );
    assert!(rbac.rights_of(NS, "other").is_empty());
    assert!(rbac.rights_of("team-b", SA).is_empty());
}

#[test]
fn a_role_binding_to_a_cluster_role_grants_in_its_namespace_only_and_nothing_cluster_scoped() {
    let mut rbac = Rbac::default();
    rbac.upsert_cluster_role(&cluster_role("everything", &[rule(&["*"], &["*"], &["*"])]));
    rbac.upsert_role_binding(&role_binding(
        "team-b",
        "all-of-b",
        "ClusterRole",
        "everything",
        &[sa(Some(NS), SA)],
    ));
    let rights = rbac.rights_of(NS, SA);
    assert!(!rights.is_empty());
    assert!(
        rights
            .iter()
            .all(|r| r.scope == Scope::Namespace("team-b".into()))
    );
    let texts: Vec<String> = rights.iter().map(|r| r.right.to_string()).collect();
    for namespaced in [
        "impersonate serviceaccounts",
        "create serviceaccounts/token",
        "get secrets",
        "create pods/exec",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create rolebindings.rbac.authorization.k8s.io",
        "update agentidentities.mandate.dev/status",
        "patch namespaces",
        "create deployments.apps",
    ] {
        assert!(
            texts.iter().any(|t| t == namespaced),
            "{namespaced} missing"
        );
    }
    for cluster_scoped in [
        "impersonate users",
        "impersonate groups",
        "escalate clusterroles.rbac.authorization.k8s.io",
        "create clusterrolebindings.rbac.authorization.k8s.io",
        "patch validatingwebhookconfigurations.admissionregistration.k8s.io",
        "get nodes/proxy",
        "update certificatesigningrequests.certificates.k8s.io/approval",
        "delete customresourcedefinitions.apiextensions.k8s.io",
    ] {
        assert!(
            !texts.iter().any(|t| t == cluster_scoped),
            "a RoleBinding cannot grant {cluster_scoped}"
        );
    }
}

#[test]
fn a_cluster_role_binding_grants_everywhere_including_cluster_scoped_resources() {
    let rbac = bound_cluster_wide(&[rule(&["*"], &["*"], &["*"])]);
    let rights = rbac.rights_of(NS, SA);
    assert_eq!(
        rights.len(),
        Right::all().count(),
        "a wildcard role holds every dangerous right"
    );
    assert!(rights.iter().all(|r| r.scope == Scope::Cluster));
}

#[test]
fn a_service_account_is_matched_by_itself_its_user_name_and_its_three_groups() {
    let secrets = [rule(&["get"], &[""], &["secrets"])];
    let subjects_that_match = [
        sa(Some(NS), SA),
        user("system:serviceaccount:team-a:bot"),
        group("system:serviceaccounts"),
        group("system:serviceaccounts:team-a"),
        group("system:authenticated"),
    ];
    for subject in subjects_that_match {
        let mut rbac = Rbac::default();
        rbac.upsert_cluster_role(&cluster_role("r", &secrets));
        rbac.upsert_cluster_role_binding(&cluster_role_binding(
            "b",
            "r",
            std::slice::from_ref(&subject),
        ));
        assert_eq!(texts(&rbac), ["get secrets cluster-wide"], "{subject}");
    }
    let subjects_that_do_not = [
        sa(Some("team-b"), SA),
        sa(Some(NS), "other"),
        // A ClusterRoleBinding's ServiceAccount subject without a namespace matches nobody.
        sa(None, SA),
        user("bot"),
        user("system:serviceaccount:team-a:bot2"),
        group("system:serviceaccounts:team-b"),
        group("system:unauthenticated"),
        group("system:masters"),
        json!({"kind": "Robot", "name": "bot"}),
        // No wildcard subjects.
        user("*"),
        group("*"),
    ];
    for subject in subjects_that_do_not {
        let mut rbac = Rbac::default();
        rbac.upsert_cluster_role(&cluster_role("r", &secrets));
        rbac.upsert_cluster_role_binding(&cluster_role_binding(
            "b",
            "r",
            std::slice::from_ref(&subject),
        ));
        assert!(texts(&rbac).is_empty(), "{subject} must not match");
    }
}

#[test]
fn a_role_binding_subject_without_a_namespace_is_the_bindings_namespace() {
    let mut rbac = Rbac::default();
    rbac.upsert_cluster_role(&cluster_role(
        "reader",
        &[rule(&["list"], &[""], &["secrets"])],
    ));
    rbac.upsert_role_binding(&role_binding(
        NS,
        "b",
        "ClusterRole",
        "reader",
        &[sa(None, SA)],
    ));
    rbac.upsert_role_binding(&role_binding(
        "team-b",
        "b",
        "ClusterRole",
        "reader",
        &[sa(None, SA)],
    ));
    assert_eq!(texts(&rbac), ["list secrets in team-a"]);
    assert_eq!(texts_of(&rbac, "team-b", SA), ["list secrets in team-b"]);
}

#[test]
fn the_group_of_every_service_account_in_a_namespace_is_bound_where_the_binding_lives() {
    let mut rbac = Rbac::default();
    rbac.upsert_cluster_role(&cluster_role(
        "reader",
        &[rule(&["get"], &[""], &["secrets"])],
    ));
    // A RoleBinding in team-b naming team-a's group: team-a's accounts read team-b's Secrets.
    rbac.upsert_role_binding(&role_binding(
        "team-b",
        "a-reads-b",
        "ClusterRole",
        "reader",
        &[group("system:serviceaccounts:team-a")],
    ));
    assert_eq!(texts(&rbac), ["get secrets in team-b"]);
    assert!(texts_of(&rbac, "team-b", SA).is_empty());
}

#[test]
fn wildcards_and_subresources_match_as_the_authorizer_matches_them() {
    let cases: [(Value, &[&str]); 9] = [
        (
            rule(&["*"], &[""], &["secrets"]),
            &[
                "create secrets",
                "get secrets",
                "list secrets",
                "watch secrets",
            ],
        ),
        (rule(&["get"], &["*"], &["secrets"]), &["get secrets"]),
        (rule(&["create"], &[""], &["*/exec"]), &["create pods/exec"]),
        // `pods/*` is no wildcard: only the literal subresource `*` would match it.
        (rule(&["create"], &[""], &["pods/*"]), &[]),
        (rule(&["create"], &[""], &["pods"]), &["create pods"]),
        // Deployments are in `apps`; `extensions` no longer serves NetworkPolicies.
        (rule(&["create"], &[""], &["deployments"]), &[]),
        (
            rule(&["create"], &["extensions"], &["networkpolicies"]),
            &[],
        ),
        (
            rule(
                &["impersonate"],
                &["authentication.k8s.io"],
                &["userextras/scopes"],
            ),
            &["impersonate userextras.authentication.k8s.io/*"],
        ),
        (json!({"verbs": ["*"], "nonResourceURLs": ["*"]}), &[]),
    ];
    for (shape, expected) in cases {
        let rbac = bound_cluster_wide(std::slice::from_ref(&shape));
        let rights: Vec<String> = rbac
            .rights_of(NS, SA)
            .iter()
            .map(|r| r.right.to_string())
            .collect();
        assert_eq!(rights, expected.to_vec(), "{shape}");
    }
}

#[test]
fn a_rule_limited_to_names_grants_on_those_names_except_where_a_request_has_no_name() {
    let rbac = bound_cluster_wide(&[
        named(rule(&["get"], &[""], &["secrets"]), &["db"]),
        named(rule(&["get"], &[""], &["secrets"]), &["api"]),
        named(rule(&["create"], &[""], &["pods/exec"]), &["web-0"]),
        // Creating names nothing when it is authorized: a rule limited to names never allows it.
        named(
            rule(
                &["create", "deletecollection"],
                &["networking.k8s.io"],
                &["networkpolicies"],
            ),
            &["x"],
        ),
        named(
            rule(&["patch"], &["networking.k8s.io"], &["networkpolicies"]),
            &["x"],
        ),
    ]);
    assert_eq!(
        texts(&rbac),
        [
            "get secrets (only api, db) cluster-wide",
            "create pods/exec (only web-0) cluster-wide",
            "patch networkpolicies.networking.k8s.io (only x) cluster-wide",
        ]
    );
    // A rule without names next to one with names: every name.
    let rbac = bound_cluster_wide(&[
        named(rule(&["get"], &[""], &["secrets"]), &["db"]),
        rule(&["get"], &[""], &["secrets"]),
    ]);
    assert_eq!(texts(&rbac), ["get secrets cluster-wide"]);
}

#[test]
fn a_binding_to_a_role_that_does_not_exist_or_cannot_be_bound_grants_nothing() {
    let mut rbac = Rbac::default();
    let everything = [rule(&["*"], &["*"], &["*"])];
    rbac.upsert_role(&role("team-b", "everything", &everything));
    // Role refs resolve in the RoleBinding's own namespace: team-a has no Role `everything`.
    rbac.upsert_role_binding(&role_binding(
        NS,
        "b",
        "Role",
        "everything",
        &[sa(Some(NS), SA)],
    ));
    rbac.upsert_role_binding(&role_binding(
        NS,
        "c",
        "ClusterRole",
        "missing",
        &[sa(Some(NS), SA)],
    ));
    // A ClusterRoleBinding cannot refer to a Role.
    let mut to_role = cluster_role_binding("d", "everything", &[sa(Some(NS), SA)]);
    to_role.role_ref.kind = "Role".into();
    rbac.upsert_cluster_role_binding(&to_role);
    assert!(texts(&rbac).is_empty());

    // The role appearing later is picked up by the binding already there.
    rbac.upsert_cluster_role(&cluster_role(
        "missing",
        &[rule(&["watch"], &[""], &["secrets"])],
    ));
    assert_eq!(texts(&rbac), ["watch secrets in team-a"]);
}

#[test]
fn changing_or_removing_a_binding_or_role_changes_the_rights_and_clear_forgets_a_kind() {
    let mut rbac = bound_cluster_wide(&[rule(&["get"], &[""], &["secrets"])]);
    assert_eq!(texts(&rbac), ["get secrets cluster-wide"]);
    // The binding now names someone else.
    rbac.upsert_cluster_role_binding(&cluster_role_binding("b", "r", &[sa(Some(NS), "other")]));
    assert!(texts(&rbac).is_empty());
    assert_eq!(texts_of(&rbac, NS, "other"), ["get secrets cluster-wide"]);
    rbac.remove(RbacKind::ClusterRoleBinding, "", "b");
    assert!(texts_of(&rbac, NS, "other").is_empty());

    let mut rbac = bound_cluster_wide(&[rule(&["get"], &[""], &["secrets"])]);
    rbac.upsert_cluster_role(&cluster_role(
        "r",
        &[rule(&["get"], &[""], &["configmaps"])],
    ));
    assert!(texts(&rbac).is_empty(), "the role no longer grants it");
    let mut rbac = bound_cluster_wide(&[rule(&["get"], &[""], &["secrets"])]);
    rbac.remove(RbacKind::ClusterRole, "ignored", "r");
    assert!(texts(&rbac).is_empty());

    let mut rbac = bound_cluster_wide(&[rule(&["get"], &[""], &["secrets"])]);
    rbac.upsert_role_binding(&role_binding(NS, "rb", "ClusterRole", "r", &[sa(None, SA)]));
    let before = rbac.clone();
    rbac.clear(RbacKind::ClusterRoleBinding);
    assert_eq!(texts(&rbac), ["get secrets in team-a"]);
    rbac.clear(RbacKind::RoleBinding);
    assert!(texts(&rbac).is_empty());
    assert_eq!(rbac.len(), 1, "the ClusterRole stays");
    assert_eq!(
        texts(&before).len(),
        2,
        "a clone taken earlier is a snapshot"
    );
}

#[test]
fn a_binding_naming_the_account_twice_counts_once_and_rights_are_described_per_binding() {
    let mut rbac = Rbac::default();
    rbac.upsert_cluster_role(&cluster_role(
        "reader",
        &[rule(&["get", "list"], &[""], &["secrets"])],
    ));
    rbac.upsert_cluster_role(&cluster_role(
        "impersonator",
        &[rule(&["impersonate"], &[""], &["serviceaccounts"])],
    ));
    rbac.upsert_cluster_role_binding(&cluster_role_binding(
        "x",
        "impersonator",
        &[sa(Some(NS), SA), group("system:serviceaccounts")],
    ));
    rbac.upsert_role_binding(&role_binding(
        "ns-a",
        "edit-bot",
        "ClusterRole",
        "reader",
        &[sa(Some(NS), SA)],
    ));
    assert_eq!(
        describe(&rbac.rights_of(NS, SA)),
        "RoleBinding ns-a/edit-bot -> ClusterRole reader grants in ns-a: get,list secrets; \
         ClusterRoleBinding x -> ClusterRole impersonator grants cluster-wide: impersonate \
         serviceaccounts"
    );
    // Verbs go together per resource and names, in the list's order.
    let rbac = bound_cluster_wide(&[
        rule(&["create", "get"], &[""], &["secrets", "pods/exec"]),
        named(rule(&["watch"], &[""], &["secrets"]), &["db"]),
    ]);
    assert_eq!(
        describe(&rbac.rights_of(NS, SA)),
        "ClusterRoleBinding b -> ClusterRole r grants cluster-wide: create,get secrets, watch \
         secrets (only db), create pods/exec"
    );
}

#[test]
fn every_right_of_the_list_has_its_own_index_and_text() {
    let rights: Vec<Right> = Right::all().collect();
    assert!(rights.len() < usize::from(u8::MAX));
    let texts: std::collections::BTreeSet<String> =
        rights.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), rights.len(), "two rights read alike");
    let mut sorted = rights.clone();
    sorted.sort();
    assert_eq!(sorted, rights, "the list's order is the rights' order");
}

/// The bootstrap ClusterRoles of kubernetes v1.37.2, with the aggregated ones (admin, edit,
/// view) filled in as the aggregation controller fills them.
fn bootstrap_cluster_roles() -> BTreeMap<String, ClusterRole> {
    #[derive(serde::Deserialize)]
    struct List<T> {
        items: Vec<T>,
    }
    let list: List<ClusterRole> = serde_yaml::from_str(include_str!("testdata/cluster-roles.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut roles: BTreeMap<String, ClusterRole> = list
        .items
        .into_iter()
        .map(|r| (r.metadata.name.clone().unwrap_or_default(), r))
        .collect();
    // Aggregation feeds aggregated roles into each other (view into edit into admin): a few
    // passes reach the fixpoint.
    for _ in 0..3 {
        let snapshot = roles.clone();
        for role in roles.values_mut() {
            let Some(aggregation) = &role.aggregation_rule else {
                continue;
            };
            let mut rules = Vec::new();
            for selector in aggregation.cluster_role_selectors.iter().flatten() {
                let wanted = selector.match_labels.clone().unwrap_or_default();
                for source in snapshot.values() {
                    let labels = source.metadata.labels.clone().unwrap_or_default();
                    if wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                        rules.extend(source.rules.clone().unwrap_or_default());
                    }
                }
            }
            role.rules = Some(rules);
        }
    }
    roles
}

fn bootstrap_cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    #[derive(serde::Deserialize)]
    struct List<T> {
        items: Vec<T>,
    }
    let list: List<ClusterRoleBinding> =
        serde_yaml::from_str(include_str!("testdata/cluster-role-bindings.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
    list.items
}

fn rights_of_role(roles: &BTreeMap<String, ClusterRole>, name: &str) -> Vec<String> {
    let role = roles
        .get(name)
        .unwrap_or_else(|| panic!("no bootstrap ClusterRole {name}"));
    dangerous_rights(role.rules.as_deref().unwrap_or_default())
        .iter()
        .map(|g| g.right.to_string())
        .collect()
}

#[test]
fn the_bootstrap_bindings_give_a_service_account_nothing_dangerous() {
    let mut rbac = Rbac::default();
    for role in bootstrap_cluster_roles().values() {
        rbac.upsert_cluster_role(role);
    }
    let bindings = bootstrap_cluster_role_bindings();
    assert!(bindings.len() > 10);
    for binding in &bindings {
        rbac.upsert_cluster_role_binding(binding);
    }
    assert!(
        rbac.rights_of(NS, SA).is_empty(),
        "{}",
        describe(&rbac.rights_of(NS, SA))
    );
    // The controllers' own accounts in kube-system are bound to powerful roles: the evaluator
    // sees it (a binding by ServiceAccount in the bootstrap policy, not by group).
    let mut controllers = rbac.clone();
    controllers.upsert_cluster_role_binding(&cluster_role_binding(
        "admin-bot",
        "cluster-admin",
        &[sa(Some(NS), SA)],
    ));
    assert_eq!(controllers.rights_of(NS, SA).len(), Right::all().count());
}

#[test]
fn view_basic_user_and_discovery_grant_nothing_dangerous_and_edit_and_admin_do() {
    let roles = bootstrap_cluster_roles();
    for harmless in [
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:service-account-issuer-discovery",
    ] {
        assert!(
            rights_of_role(&roles, harmless).is_empty(),
            "{harmless}: {:?}",
            rights_of_role(&roles, harmless)
        );
    }
    let edit = rights_of_role(&roles, "edit");
    for expected in [
        "impersonate serviceaccounts",
        "create serviceaccounts/token",
        "create secrets",
        "get secrets",
        "list secrets",
        "watch secrets",
        "create pods/exec",
        "create pods/attach",
        "create pods/portforward",
        "create pods/proxy",
        "get services/proxy",
        "create pods",
        "create deployments.apps",
        "create cronjobs.batch",
        "create replicationcontrollers",
        "create networkpolicies.networking.k8s.io",
        "delete networkpolicies.networking.k8s.io",
    ] {
        assert!(edit.iter().any(|r| r == expected), "edit: {expected}");
    }
    for not_in_edit in [
        "create rolebindings.rbac.authorization.k8s.io",
        "bind clusterroles.rbac.authorization.k8s.io",
        "patch namespaces",
        "create agentidentities.mandate.dev",
        "impersonate users",
    ] {
        assert!(
            !edit.iter().any(|r| r == not_in_edit),
            "edit: {not_in_edit}"
        );
    }
    let admin = rights_of_role(&roles, "admin");
    for expected in [
        "create rolebindings.rbac.authorization.k8s.io",
        "delete roles.rbac.authorization.k8s.io",
        "get secrets",
    ] {
        assert!(admin.iter().any(|r| r == expected), "admin: {expected}");
    }
    assert_eq!(
        rights_of_role(&roles, "cluster-admin").len(),
        Right::all().count()
    );
}

#[test]
fn ten_thousand_accounts_are_evaluated_against_a_thousand_bindings_quickly() {
    let mut rbac = Rbac::default();
    for role in bootstrap_cluster_roles().values() {
        rbac.upsert_cluster_role(role);
    }
    for binding in &bootstrap_cluster_role_bindings() {
        rbac.upsert_cluster_role_binding(binding);
    }
    for i in 0..1000 {
        let namespace = format!("ns-{}", i % 50);
        rbac.upsert_role_binding(&role_binding(
            &namespace,
            &format!("view-{i}"),
            "ClusterRole",
            if i % 100 == 0 { "edit" } else { "view" },
            &[sa(None, &format!("agent-{i}"))],
        ));
    }
    let started = std::time::Instant::now();
    let mut holding = 0;
    for i in 0..10_000 {
        let namespace = format!("ns-{}", i % 50);
        if !rbac.rights_of(&namespace, &format!("agent-{i}")).is_empty() {
            holding += 1;
        }
    }
    assert_eq!(holding, 10, "the ten bound to edit");
    // Generous for a debug build on a busy machine; a scan of every binding per account would
    // take far longer.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
