//! The Pod Security baseline of agent pods (issue 13) on the real control plane: a namespace
//! developer tries, with kubectl, to run an agent pod privileged, on the node's PID namespace,
//! with a host path or with SYS_ADMIN; the agent's owner, who may debug its pods, tries to add
//! a privileged debug container to a running one (`kubectl debug --profile=sysadmin`); each is
//! refused naming the field. An
//! exemption on the identity lets a pod in only when an approver other than the owner applied
//! it. A submodule of `admission.rs`, so it shares its installation under test and helpers.

use super::*;

/// Makes `name` a namespace developer in `namespace`: a client certificate of their own, the
/// built-in `edit` role, and `pods/ephemeralcontainers`, which `edit` does not grant but teams
/// hand out so developers may `kubectl debug` their pods.
async fn developer(namespace: &str, name: &str) -> anyhow::Result<User> {
    let users = state_dir().join("users").join(namespace);
    std::fs::create_dir_all(&users)?;
    let user = User::create(&users, name, "developers")?;
    grant_edit(namespace, name).await?;
    grant_role(
        namespace,
        "pod-debugger",
        "get,update,patch",
        "pods/ephemeralcontainers",
        &[name],
    )?;
    Ok(user)
}

/// `name` with just enough rights to `kubectl debug` pods in `namespace`: read them and add
/// ephemeral containers.
fn owner_who_may_debug(namespace: &str, name: &str) -> anyhow::Result<User> {
    let users = state_dir().join("users").join(namespace);
    std::fs::create_dir_all(&users)?;
    let user = User::create(&users, name, "owners")?;
    grant_role(namespace, "owner-pods", "get,list", "pods", &[name])?;
    grant_role(
        namespace,
        "owner-debugger",
        "get,update,patch",
        "pods/ephemeralcontainers",
        &[name],
    )?;
    Ok(user)
}

/// A Role `role` in `namespace` with `verbs` on `resources` (comma-separated), bound to
/// `users`.
fn grant_role(
    namespace: &str,
    role: &str,
    verbs: &str,
    resources: &str,
    users: &[&str],
) -> anyhow::Result<()> {
    let verbs = format!("--verb={verbs}");
    let resources = format!("--resource={resources}");
    kubectl_ok(
        &["create", "role", role, &verbs, &resources, "-n", namespace],
        None,
    )?;
    let role_ref = format!("--role={role}");
    let mut binding = vec!["create", "rolebinding", role, &role_ref, "-n", namespace];
    let users: Vec<String> = users.iter().map(|u| format!("--user={u}")).collect();
    binding.extend(users.iter().map(String::as_str));
    kubectl_ok(&binding, None)?;
    Ok(())
}

/// `researcher`'s pod `name` with `path` set to `value`.
fn agent_pod_with(name: &str, namespace: &str, path: &str, value: Value) -> Value {
    in_namespace(pod(name, Some("researcher"), "researcher"), namespace).with(path, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_cannot_give_an_agent_pod_host_access_or_privilege_nor_debug_it_privileged()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-podsec").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-podsec", Some("enforce")).await?;
            let ns = ns.name.as_str();
            mandate
                .ready_agent(
                    ns,
                    reader("researcher"),
                    Some(binding("researcher-tools", "researcher", &["read"])),
                )
                .await?;
            let dev = developer(ns, "dev").await?;
            let dev_config = Some(dev.kubeconfig.as_path());
            // researcher's owner, who may debug its pods (ExecNotOwner lets them), but not
            // with privilege.
            let owner = owner_who_may_debug(ns, "alice")?;

            let cases = [
                (
                    "privileged",
                    "/spec/containers/0/securityContext",
                    json!({"privileged": true}),
                    "spec.containers[0].securityContext.privileged is true (Privileged)",
                ),
                (
                    "host-pid",
                    "/spec/hostPID",
                    json!(true),
                    "spec.hostPID is true (HostPID)",
                ),
                (
                    "host-path",
                    "/spec/volumes",
                    json!([{"name": "node", "hostPath": {"path": "/var/lib/kubelet"}}]),
                    "spec.volumes[0].hostPath mounts the node's /var/lib/kubelet (volume node) \
                     (HostPath)",
                ),
                (
                    "sys-admin",
                    "/spec/containers/0/securityContext",
                    json!({"capabilities": {"add": ["SYS_ADMIN"]}}),
                    "spec.containers[0].securityContext.capabilities.add[0] is SYS_ADMIN, \
                     beyond the baseline set (Capabilities)",
                ),
            ];
            for (name, path, value, field) in cases {
                let manifest = agent_pod_with(name, ns, path, value);
                let refusal = refused(&manifest, "PodSecurityBaseline", dev_config).await?;
                assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
                assert_eq!(
                    refusal.codes,
                    ["PodSecurityBaseline"],
                    "{}",
                    refusal.message
                );
                assert!(
                    refusal.message.contains(field),
                    "{name}: {}",
                    refusal.message
                );
                assert!(
                    refusal
                        .message
                        .contains("to AgentIdentity researcher (spec.podSecurityExemptions)"),
                    "{name}: {}",
                    refusal.message
                );
            }

            // A Deployment's template is only warned about: its pods are judged when created.
            let template = pod("x", Some("researcher"), "researcher")
                .with("/metadata/labels/app", "privileged-agents")
                .with("/spec/containers/0/securityContext/privileged", true);
            let deployment = in_namespace(
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "privileged-agents"},
                    "spec": {
                        "replicas": 0,
                        "selector": {"matchLabels": {"app": "privileged-agents"}},
                        "template": {"metadata": template["metadata"], "spec": template["spec"]},
                    }
                }),
                ns,
            );
            let out = admitted(&deployment, dev_config).await?;
            let warnings = stderr(&out);
            assert!(
                warnings.contains(
                    "Warning: PodSecurityBaseline: spec.containers[0].securityContext.privileged \
                     is true"
                ),
                "{warnings}"
            );

            // `kubectl debug --profile=sysadmin` adds a privileged ephemeral container through
            // pods/ephemeralcontainers: refused, even to the agent's owner, and for that alone. (No kubelet runs here, so the pod stays
            // Pending; the API server accepts ephemeral containers on it all the same, as the
            // baseline-profile debug container below shows.)
            admitted(
                &in_namespace(pod("running", Some("researcher"), "researcher"), ns),
                None,
            )
            .await?;
            let refusal = refused_as(
                &owner.kubeconfig,
                &[
                    "debug",
                    "running",
                    "-n",
                    ns,
                    "--profile=sysadmin",
                    "--image=busybox",
                    "--container=debug-sysadmin",
                ],
                "PodSecurityBaseline",
            )
            .await?;
            assert_eq!(refusal.webhook, PODS_IN_AGENT_NAMESPACES);
            assert_eq!(refusal.codes, ["PodSecurityBaseline"], "{refusal:?}");
            assert!(
                refusal.message.contains(
                    "spec.ephemeralContainers[0].securityContext.privileged is true (Privileged)"
                ),
                "{}",
                refusal.message
            );
            let out = kubectl_as(
                &owner.kubeconfig,
                &[
                    "debug",
                    "running",
                    "-n",
                    ns,
                    "--profile=baseline",
                    "--image=busybox",
                    "--container=debug-baseline",
                ],
            )?;
            ensure!(
                out.status.success(),
                "a baseline debug container was refused: {}",
                stderr(&out)
            );
            let ephemeral = kubectl_ok(
                &[
                    "get",
                    "pod",
                    "running",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.spec.ephemeralContainers[*].name}",
                ],
                None,
            )?;
            assert_eq!(ephemeral.trim(), "debug-baseline");
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_security_exemption_added_by_the_owner_is_refused_and_one_from_another_approver_lets_the_pod_in()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mandate = Mandate::start("adm-exempt").await?;
    mandate
        .explain(async {
            let ns = mandate.namespace("adm-exempt", Some("enforce")).await?;
            let ns = ns.name.as_str();
            let users = state_dir().join("users").join(ns);
            std::fs::create_dir_all(&users)?;
            // The owner is an approver too: four eyes still needs someone else.
            let owner = User::create(&users, "olivia", APPROVERS)?;
            let approver = User::create(&users, "victor", APPROVERS)?;
            grant_role(
                ns,
                "agent-editor",
                "get,list,create,update,patch",
                "agentidentities.mandate.dev,pods",
                &[&owner.name, &approver.name],
            )?;
            let inspector = identity("inspector", "ReadOnly", "User", &owner.name);
            mandate
                .ready_agent(
                    ns,
                    inspector.clone(),
                    Some(binding("inspector-tools", "inspector", &["read"])),
                )
                .await?;
            let exempted = |approved_by: &str| {
                in_namespace(inspector.clone(), ns).with(
                    "/spec/podSecurityExemptions",
                    json!([{"control": "Privileged",
                        "approval": {"approvedBy": approved_by, "reason": "SEC-7 node triage",
                            "forOwner": {"kind": "User", "name": owner.name}}}]),
                )
            };
            let privileged = in_namespace(pod("triage", Some("inspector"), "inspector"), ns)
                .with("/spec/containers/0/securityContext/privileged", true);

            let refusal =
                refused(&exempted(&owner.name), "FourEyes", Some(&owner.kubeconfig)).await?;
            assert_eq!(refusal.webhook, MANDATE_RESOURCES);
            assert!(
                refusal
                    .message
                    .contains("olivia owns AgentIdentity inspector, and Pod Security exemptions (Privileged) need an approver who is not the agent's owner"),
                "{}",
                refusal.message
            );
            refused(&privileged, "PodSecurityBaseline", Some(&owner.kubeconfig)).await?;

            admitted(&exempted(&approver.name), Some(&approver.kubeconfig)).await?;
            admitted(&privileged, Some(&owner.kubeconfig)).await?;
            // The exemption names one control: host access stays refused.
            let host_pid = in_namespace(pod("triage-pid", Some("inspector"), "inspector"), ns)
                .with("/spec/hostPID", true);
            let refusal =
                refused(&host_pid, "PodSecurityBaseline", Some(&owner.kubeconfig)).await?;
            assert!(
                refusal.message.contains("spec.hostPID is true (HostPID)"),
                "{}",
                refusal.message
            );
            Ok(())
        })
        .await
}
