//! The three CRDs on a real API server: the generated files install and become Established,
//! `kubectl explain` and `kubectl get mandate` show what the Rust types declare, every sample in
//! `config/samples/` applies, and the schemas and CEL rules refuse each kind of invalid object
//! with a message naming the offending field while accepting its valid variant.
//!
//! No operator and no webhook run here: everything asserted is decided by the API server alone.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mandate_e2e::resources::{
    FIELD_MANAGER, Kind, crd_files, install_crds, is_established, refusal_message,
    rfc3339_from_now, sample_files, samples_dir, with_valid_until, yaml_documents,
};
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok, kubectl_output};
use serde_json::{Value, json};

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test]
async fn the_generated_crds_apply_idempotently_and_become_established() -> anyhow::Result<()> {
    let client = client().await?;
    let expected: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("{}.yaml", k.crd_name()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let files: Vec<String> = crd_files()?
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, expected, "crds/ holds one file per kind");

    install_crds(&client).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut generations = BTreeMap::new();
    for kind in Kind::ALL {
        let crd = crds.get(&kind.crd_name()).await?;
        assert!(is_established(&crd), "{} is Established", kind.crd_name());
        assert_eq!(crd.spec.names.kind, kind.name());
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["mandate".to_owned()][..]),
            "{} is in the mandate category",
            kind.name()
        );
        generations.insert(kind.name(), crd.metadata.generation);
    }

    install_crds(&client).await?;
    for kind in Kind::ALL {
        let crd = crds.get(&kind.crd_name()).await?;
        assert_eq!(
            crd.metadata.generation,
            generations[kind.name()],
            "applying the same {} again changes nothing",
            kind.crd_name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_prints_the_owner_fields_documentation() -> anyhow::Result<()> {
    install_crds(&client().await?).await?;
    // The published OpenAPI document lags a CRD change by a moment.
    let text = eventually("kubectl explain to know AgentIdentity", TIMEOUT, || async {
        let out = kubectl_output(&["explain", "agentidentity.spec.owner"])?;
        Ok(out
            .status
            .success()
            .then(|| collapse_whitespace(&String::from_utf8_lossy(&out.stdout))))
    })
    .await?;
    for expected in [
        "KIND: AgentIdentity",
        "FIELD: owner <Object>",
        "The accountable human or team: who answers for what this agent does.",
        "kind <string> -required- enum: User, Group",
        "Whether the owner is a single person (`User`) or a team (`Group`).",
        "name <string> -required-",
        "The owner's name as the cluster's authentication knows it (a username or group name).",
        "How to reach the owner (a chat channel, an email address, a pager rotation).",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let out = kubectl_output(&["explain", "agentidentity.spec.podSecurityExemptions"])?;
    let text = collapse_whitespace(&String::from_utf8_lossy(&out.stdout));
    for expected in [
        "FIELD: podSecurityExemptions <[]Object>",
        "Pod Security baseline controls this agent's pods may break, one entry per control",
        "approval <Object> -required-",
        "control <string> -required- enum: HostProcess, HostPID, HostIPC, Privileged",
        "capabilities <[]string> For control Capabilities (and only then)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_prints_how_a_tool_names_its_operations_and_audience() -> anyhow::Result<()>
{
    install_crds(&client().await?).await?;
    let text = eventually(
        "kubectl explain to know tool operations",
        TIMEOUT,
        || async {
            let out = kubectl_output(&["explain", "toolbinding.spec.tools"])?;
            let text = collapse_whitespace(&String::from_utf8_lossy(&out.stdout));
            Ok((out.status.success() && text.contains("mcp <Object>")).then_some(text))
        },
    )
    .await?;
    for expected in [
        "mcp <Object>",
        "The MCP tools this tool exposes, each with the action it performs.",
        "http <[]Object>",
        "GET and HEAD read; POST, PUT and PATCH write; DELETE deletes.",
        "audience <string>",
        "Absent: `mandate.dev/<namespace>/<tool name>`.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_get_mandate_lists_all_three_kinds_with_their_printer_columns() -> anyhow::Result<()>
{
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "crds-columns", &[]).await?;
    let samples = samples_dir();
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "-n",
            &ns.name,
            "-k",
            samples.to_str().unwrap(),
        ],
        None,
    )?;

    let out = kubectl_ok(&["get", "mandate", "-n", &ns.name], None)?;
    let tables = tables_by_kind(&out);
    let expected: [(&str, &[&str]); 3] = [
        (
            "agentidentity.mandate.dev",
            &[
                "NAME",
                "OWNER",
                "CLASS",
                "TOOLS",
                "SPIFFE ID",
                "READY",
                "AGE",
            ],
        ),
        (
            "toolbinding.mandate.dev",
            &["NAME", "AGENT", "PHASE", "RISK", "EXPIRES", "AGE"],
        ),
        (
            "delegationpolicy.mandate.dev",
            &["NAME", "DELEGATOR", "MAX DEPTH", "SAFE", "AGE"],
        ),
    ];
    assert_eq!(
        tables.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "agentidentity.mandate.dev",
            "delegationpolicy.mandate.dev",
            "toolbinding.mandate.dev"
        ],
        "kubectl get mandate lists the three kinds:\n{out}"
    );
    for (kind, columns) in expected {
        let (header, _) = &tables[kind];
        assert_eq!(header, columns, "columns of {kind} in:\n{out}");
    }

    let (_, agents) = &tables["agentidentity.mandate.dev"];
    let researcher = agents
        .iter()
        .find(|row| row.contains("agentidentity.mandate.dev/researcher"))
        .unwrap_or_else(|| panic!("researcher is listed:\n{out}"));
    assert!(
        researcher.contains("research-team") && researcher.contains("ReadOnly"),
        "the researcher row shows its owner and class: {researcher}"
    );
    let (_, bindings) = &tables["toolbinding.mandate.dev"];
    assert!(
        bindings.iter().any(
            |row| row.contains("toolbinding.mandate.dev/researcher-tools")
                && row.contains("researcher")
        ),
        "the researcher's binding shows its agent:\n{out}"
    );
    let (_, policies) = &tables["delegationpolicy.mandate.dev"];
    assert!(
        policies
            .iter()
            .any(|row| row.contains("planner") && row.contains(" 1 ")),
        "the delegation policy shows its delegator and max depth:\n{out}"
    );
    Ok(())
}

#[tokio::test]
async fn every_sample_applies_with_the_high_risk_window_set_at_apply_time() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "crds-samples", &[]).await?;
    let until = rfc3339_from_now(3600)?;

    let files = sample_files()?;
    assert!(!files.is_empty(), "config/samples holds manifests");
    let mut applied = Vec::new();
    for file in &files {
        let raw = std::fs::read_to_string(samples_dir().join(file))?;
        let manifest = with_valid_until(&raw, &until);
        let out = mandate_e2e::kubectl_with_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                FIELD_MANAGER,
                "-n",
                &ns.name,
                "-f",
                "-",
            ],
            Some(&manifest),
        )?;
        assert!(
            out.status.success(),
            "config/samples/{} applies: {}\n{manifest}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        applied.extend(yaml_documents(&manifest)?);
    }

    // Every mandate object in the samples is stored as written (plus the schema's defaults).
    let mandate_objects: Vec<&Value> = applied.iter().filter(|o| Kind::of(o).is_ok()).collect();
    assert!(mandate_objects.len() >= 10, "the samples show every kind");
    for object in mandate_objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(
            object["metadata"].get("namespace").is_none(),
            "samples leave the namespace to `-n`: {name}"
        );
        let stored = Kind::of(object)?.api(&client, &ns.name).get(name).await?;
        assert!(
            contains(&stored.data["spec"], &object["spec"]),
            "{name} is stored as written:\n{:#}\nstored:\n{:#}",
            object["spec"],
            stored.data["spec"]
        );
    }

    // The High-risk grant carries the window set at apply time and an approval.
    let deploy = Kind::ToolBinding
        .api(&client, &ns.name)
        .get("code-agent-deploy")
        .await?;
    assert_eq!(deploy.data["spec"]["validUntil"], json!(until));
    assert_eq!(deploy.data["spec"]["tools"][0]["risk"], "High");
    assert!(deploy.data["spec"]["approval"]["approvedBy"].is_string());

    // The kustomization lists every sample except the two that only an approver may apply: the
    // High-risk grant, which also needs a fresh window, and the Pod Security exemption.
    let kustomization: Value = serde_yaml::from_str(&std::fs::read_to_string(
        samples_dir().join("kustomization.yaml"),
    )?)?;
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|f| f != "code-agent-deploy.yaml" && f != "net-diagnostics.yaml")
        .collect();
    assert_eq!(listed, expected);

    assert_delegation_is_attenuated(&applied);
    Ok(())
}

/// Every tool a sample DelegationPolicy hands on is bound to both the delegator and the
/// delegate, so the samples never demonstrate an escalation path.
fn assert_delegation_is_attenuated(objects: &[Value]) {
    let mut bound: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for binding in objects.iter().filter(|o| o["kind"] == "ToolBinding") {
        let agent = binding["spec"]["agent"].as_str().unwrap();
        for tool in binding["spec"]["tools"].as_array().unwrap() {
            bound
                .entry(agent)
                .or_default()
                .insert(tool["name"].as_str().unwrap());
        }
    }
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "DelegationPolicy")
        .collect();
    assert!(!policies.is_empty(), "the samples show a delegation");
    for policy in policies {
        let delegator = policy["spec"]["delegator"].as_str().unwrap();
        for delegate in policy["spec"]["delegates"].as_array().unwrap() {
            let agent = delegate["agent"].as_str().unwrap();
            for tool in delegate["tools"].as_array().unwrap() {
                let tool = tool.as_str().unwrap();
                for holder in [delegator, agent] {
                    assert!(
                        bound.get(holder).is_some_and(|tools| tools.contains(tool)),
                        "{delegator} -> {agent} hands on {tool}, which {holder} is not bound to"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_api_server_refuses_each_invalid_object_naming_the_field_and_accepts_its_valid_variant()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "crds-rules", &[]).await?;
    let cases = cases();
    assert!(cases.len() >= 15, "one case per rule");

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        match submit(&client, &ns.name, &case.invalid, &format!("c{i}-invalid")).await? {
            Verdict::Accepted(object) => failures.push(format!(
                "{}: accepted, expected a refusal naming {}\n{object}",
                case.rule, case.field
            )),
            // The server writes each error as `<field>: <kind of error>: <detail>`.
            Verdict::Refused(object, message)
                if !message.contains(&format!("{}: ", case.field)) =>
            {
                failures.push(format!(
                    "{}: refused without naming {}: {message}\n{object}",
                    case.rule, case.field
                ))
            }
            Verdict::Refused(..) => {}
        }
        if let Verdict::Refused(object, message) =
            submit(&client, &ns.name, &case.valid, &format!("c{i}-valid")).await?
        {
            failures.push(format!(
                "{} (valid variant): refused: {message}\n{object}",
                case.rule
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    Ok(())
}

/// One rule of the API: an object (or an update) that breaks it, the field the refusal must
/// name, and the nearest object that keeps it.
struct Case {
    rule: &'static str,
    field: &'static str,
    invalid: Change,
    valid: Change,
}

enum Change {
    /// Create this object.
    Create(Value),
    /// Create `base`, then merge-patch it with `patch`.
    Update { base: Value, patch: Value },
}

enum Verdict {
    /// The object or patch (pretty JSON) was stored.
    Accepted(String),
    /// The object or patch (pretty JSON) and the API server's message.
    Refused(String, String),
}

fn cases() -> Vec<Case> {
    use Change::{Create, Update};
    let tools = |n: usize| {
        (0..n)
            .map(|i| tool(&format!("tool-{i}")))
            .collect::<Vec<_>>()
    };
    vec![
        Case {
            rule: "a tool has two destinations",
            field: "spec.tools[0].destination",
            invalid: Create(binding().set(
                "/spec/tools/0/destination/external",
                json!({ "cidrs": ["203.0.113.0/24"] }),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/destination",
                json!({ "external": { "cidrs": ["203.0.113.0/24"] } }),
            )),
        },
        Case {
            rule: "a tool has no destination",
            field: "spec.tools[0].destination",
            invalid: Create(binding().set("/spec/tools/0/destination", json!({}))),
            valid: Create(binding()),
        },
        Case {
            rule: "two tools share a name",
            field: "spec.tools[1]",
            invalid: Create(binding().set("/spec/tools", json!([tool("git"), tool("git")]))),
            valid: Create(binding().set("/spec/tools", json!([tool("git"), tool("git-admin")]))),
        },
        Case {
            rule: "a Low-risk tool reaches 0.0.0.0/0",
            field: "spec.tools[0].destination.external.cidrs",
            invalid: Create(binding().set("/spec/tools/0", external_tool("0.0.0.0/0"))),
            valid: Create(high_risk(
                binding().set("/spec/tools/0", external_tool("0.0.0.0/0")),
            )),
        },
        Case {
            rule: "a Low-risk tool reaches ::/0",
            field: "spec.tools[0].destination.external.cidrs",
            invalid: Create(binding().set("/spec/tools/0", external_tool("::/0"))),
            valid: Create(binding().set("/spec/tools/0", external_tool("2001:db8::/32"))),
        },
        Case {
            rule: "an external destination lists something that is not a CIDR",
            field: "spec.tools[0].destination.external.cidrs",
            invalid: Create(binding().set("/spec/tools/0", external_tool("203.0.113.0/33"))),
            valid: Create(binding().set("/spec/tools/0", external_tool("203.0.113.0/32"))),
        },
        Case {
            rule: "an MCP tool performs an action its tool does not declare",
            field: "spec.tools[0].mcp.tools",
            invalid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "search", "action": "read" }, { "name": "update_order" }] }),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "search", "action": "read" }, { "name": "get_*", "action": "read" }] }),
            )),
        },
        Case {
            rule: "two MCP tools share a name",
            field: "spec.tools[0].mcp.tools[1]",
            invalid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "search", "action": "read" }, { "name": "search", "action": "read" }] }),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "*", "action": "read" }] }),
            )),
        },
        Case {
            rule: "an MCP tool name has a character MCP does not allow",
            field: "spec.tools[0].mcp.tools[0].name",
            invalid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "search orders", "action": "read" }] }),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/mcp",
                json!({ "tools": [{ "name": "search_orders", "action": "read" }] }),
            )),
        },
        Case {
            rule: "an HTTP method performs an action its tool does not declare",
            field: "spec.tools[0].http",
            invalid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET", "DELETE"], "paths": ["/v1/products"] }]),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET", "HEAD"], "paths": ["/v1/products"] }]),
            )),
        },
        Case {
            rule: "an HTTP path climbs out with a .. segment",
            field: "spec.tools[0].http[0].paths",
            invalid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET"], "paths": ["/v1/products/../admin"] }]),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET"], "paths": ["/v1/products/*"] }]),
            )),
        },
        Case {
            rule: "an HTTP path does not start with / or has a * before its end",
            field: "spec.tools[0].http[0].paths[0]",
            invalid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET"], "paths": ["v1/*/products"] }]),
            )),
            valid: Create(binding().set(
                "/spec/tools/0/http",
                json!([{ "methods": ["GET"], "paths": ["/v1/products*"] }]),
            )),
        },
        Case {
            rule: "a token audience contains whitespace",
            field: "spec.tools[0].audience",
            invalid: Create(binding().set("/spec/tools/0/audience", json!("catalogue api"))),
            valid: Create(binding().set("/spec/tools/0/audience", json!("https://catalogue.example.com"))),
        },
        Case {
            rule: "validUntil lies before validFrom",
            field: "spec.validUntil",
            invalid: Create(
                binding()
                    .set("/spec/validFrom", json!("2030-01-02T00:00:00Z"))
                    .set("/spec/validUntil", json!("2030-01-01T00:00:00Z")),
            ),
            valid: Create(
                binding()
                    .set("/spec/validFrom", json!("2030-01-01T00:00:00Z"))
                    .set("/spec/validUntil", json!("2030-01-02T00:00:00Z")),
            ),
        },
        Case {
            rule: "a High-risk tool comes without an approval",
            field: "spec.approval",
            invalid: Create(binding().set("/spec/tools/0/risk", json!("High"))),
            valid: Create(high_risk(binding())),
        },
        Case {
            rule: "tokens live 599 seconds, under the minimum",
            field: "spec.credentials.tokenTtlSeconds",
            invalid: Create(identity().set("/spec/credentials", json!({ "tokenTtlSeconds": 599 }))),
            valid: Create(identity().set("/spec/credentials", json!({ "tokenTtlSeconds": 600 }))),
        },
        Case {
            rule: "tokens live 86401 seconds, over the maximum",
            field: "spec.credentials.tokenTtlSeconds",
            invalid: Create(
                identity().set("/spec/credentials", json!({ "tokenTtlSeconds": 86401 })),
            ),
            valid: Create(identity().set("/spec/credentials", json!({ "tokenTtlSeconds": 86400 }))),
        },
        Case {
            rule: "the owner's name is empty",
            field: "spec.owner.name",
            invalid: Create(identity().set("/spec/owner/name", json!(""))),
            valid: Create(identity().set("/spec/owner/name", json!("research-team"))),
        },
        Case {
            rule: "a tool name is not a DNS label",
            field: "spec.tools[0].name",
            invalid: Create(binding().set("/spec/tools/0/name", json!("Web_Search"))),
            valid: Create(binding().set("/spec/tools/0/name", json!("web-search"))),
        },
        Case {
            rule: "a binding grants 65 tools",
            field: "spec.tools",
            invalid: Create(binding().set("/spec/tools", json!(tools(65)))),
            valid: Create(binding().set("/spec/tools", json!(tools(64)))),
        },
        Case {
            rule: "a binding grants no tools",
            field: "spec.tools",
            invalid: Create(binding().set("/spec/tools", json!([]))),
            valid: Create(binding().set("/spec/tools", json!(tools(1)))),
        },
        Case {
            rule: "maxDepth is a string",
            field: "spec.maxDepth",
            invalid: Create(policy().set("/spec/maxDepth", json!("2"))),
            valid: Create(policy().set("/spec/maxDepth", json!(2))),
        },
        Case {
            rule: "maxDepth is over 8",
            field: "spec.maxDepth",
            invalid: Create(policy().set("/spec/maxDepth", json!(9))),
            valid: Create(policy().set("/spec/maxDepth", json!(8))),
        },
        Case {
            rule: "an endpoint port is a string",
            field: "spec.endpoint.ports[0].port",
            invalid: Create(
                identity().set("/spec/endpoint", json!({ "ports": [{ "port": "8443" }] })),
            ),
            valid: Create(identity().set("/spec/endpoint", json!({ "ports": [{ "port": 8443 }] }))),
        },
        Case {
            rule: "an external port is a string",
            field: "spec.tools[0].destination.external.ports[0]",
            invalid: Create(
                binding()
                    .set("/spec/tools/0", external_tool("203.0.113.0/24"))
                    .set("/spec/tools/0/destination/external/ports", json!(["443"])),
            ),
            valid: Create(
                binding()
                    .set("/spec/tools/0", external_tool("203.0.113.0/24"))
                    .set("/spec/tools/0/destination/external/ports", json!([443])),
            ),
        },
        Case {
            rule: "the class is not one of the three",
            field: "spec.class",
            invalid: Create(identity().set("/spec/class", json!("God"))),
            valid: Create(identity().set("/spec/class", json!("TransactionExecutor"))),
        },
        Case {
            rule: "a tool's risk is neither Low nor High",
            field: "spec.tools[0].risk",
            invalid: Create(binding().set("/spec/tools/0/risk", json!("Medium"))),
            valid: Create(binding().set("/spec/tools/0/risk", json!("Low"))),
        },
        Case {
            rule: "a tool declares an unknown action",
            field: "spec.tools[0].actions[0]",
            invalid: Create(binding().set("/spec/tools/0/actions", json!(["sudo"]))),
            valid: Create(binding().set("/spec/tools/0/actions", json!(["execute"]))),
        },
        Case {
            rule: "the owner is neither a User nor a Group",
            field: "spec.owner.kind",
            invalid: Create(identity().set("/spec/owner/kind", json!("Robot"))),
            valid: Create(identity().set("/spec/owner/kind", json!("Group"))),
        },
        Case {
            rule: "an agent delegates to itself",
            field: "spec.delegates",
            invalid: Create(policy().set("/spec/delegates/0/agent", json!("planner"))),
            valid: Create(policy()),
        },
        Case {
            rule: "an identity's name is longer than 63 characters",
            field: "metadata.name",
            invalid: Create(identity().set("/metadata/name", json!("a".repeat(64)))),
            valid: Create(identity().set("/metadata/name", json!("a".repeat(63)))),
        },
        Case {
            rule: "an update changes spec.agent",
            field: "spec.agent",
            invalid: Update {
                base: binding(),
                patch: json!({ "spec": { "agent": "code-agent" } }),
            },
            valid: Update {
                base: binding(),
                patch: json!({ "spec": { "validUntil": "2030-01-01T00:00:00Z" } }),
            },
        },
        Case {
            rule: "a Capabilities exemption names no capability",
            field: "spec.podSecurityExemptions[0].capabilities",
            invalid: Create(exempt(json!({ "control": "Capabilities" }))),
            valid: Create(exempt(
                json!({ "control": "Capabilities", "capabilities": ["NET_RAW"] }),
            )),
        },
        Case {
            rule: "a Privileged exemption names capabilities",
            field: "spec.podSecurityExemptions[0].capabilities",
            invalid: Create(exempt(
                json!({ "control": "Privileged", "capabilities": ["SYS_ADMIN"] }),
            )),
            valid: Create(exempt(json!({ "control": "Privileged" }))),
        },
        Case {
            rule: "a Sysctls exemption names no sysctl",
            field: "spec.podSecurityExemptions[0].sysctls",
            invalid: Create(exempt(json!({ "control": "Sysctls" }))),
            valid: Create(exempt(
                json!({ "control": "Sysctls", "sysctls": ["kernel.msgmax"] }),
            )),
        },
        Case {
            rule: "an exemption names a control outside the baseline profile",
            field: "spec.podSecurityExemptions[0].control",
            invalid: Create(exempt(json!({ "control": "HostNetwork" }))),
            valid: Create(exempt(json!({ "control": "HostPID" }))),
        },
        Case {
            rule: "an exemption has no approval",
            field: "spec.podSecurityExemptions[0].approval",
            invalid: Create(identity().set(
                "/spec/podSecurityExemptions",
                json!([{ "control": "HostIPC" }]),
            )),
            valid: Create(exempt(json!({ "control": "HostIPC" }))),
        },
        Case {
            rule: "two exemptions name the same control",
            field: "spec.podSecurityExemptions[1]",
            invalid: Create(identity().set(
                "/spec/podSecurityExemptions",
                json!([
                    exemption(json!({ "control": "HostPath" })),
                    exemption(json!({ "control": "HostPath" })),
                ]),
            )),
            valid: Create(identity().set(
                "/spec/podSecurityExemptions",
                json!([
                    exemption(json!({ "control": "HostPath" })),
                    exemption(json!({ "control": "HostPorts" })),
                ]),
            )),
        },
        Case {
            rule: "an update changes spec.serviceAccountName",
            field: "spec.serviceAccountName",
            invalid: Update {
                base: identity().set("/spec/serviceAccountName", json!("researcher-sa")),
                patch: json!({ "spec": { "serviceAccountName": "other-sa" } }),
            },
            valid: Update {
                base: identity().set("/spec/serviceAccountName", json!("researcher-sa")),
                patch: json!({ "spec": { "serviceAccountName": "researcher-sa", "purpose": "Summarises support tickets." } }),
            },
        },
        Case {
            rule: "an update adds spec.serviceAccountName",
            field: "spec.serviceAccountName",
            invalid: Update {
                base: identity(),
                patch: json!({ "spec": { "serviceAccountName": "researcher-sa" } }),
            },
            valid: Create(identity().set("/spec/serviceAccountName", json!("researcher-sa"))),
        },
        Case {
            rule: "an update removes spec.serviceAccountName",
            field: "spec.serviceAccountName",
            invalid: Update {
                base: identity().set("/spec/serviceAccountName", json!("researcher-sa")),
                patch: json!({ "spec": { "serviceAccountName": null } }),
            },
            valid: Update {
                base: identity(),
                patch: json!({ "spec": { "purpose": "Summarises support tickets." } }),
            },
        },
    ]
}

/// Sends `change` under `name` (unless the object names itself) and reports the server's
/// verdict on the object or, for an update, on the patch. Errors other than a refusal, and a
/// refused base object of an update, fail the test.
async fn submit(
    client: &Client,
    namespace: &str,
    change: &Change,
    name: &str,
) -> anyhow::Result<Verdict> {
    let named = |object: &Value| {
        let mut object = object.clone();
        if object["metadata"].get("name").is_none() {
            object["metadata"]["name"] = json!(name);
        }
        object
    };
    match change {
        Change::Create(object) => {
            let object = named(object);
            let api = Kind::of(&object)?.api(client, namespace);
            let shown = serde_json::to_string_pretty(&object)?;
            let dynamic: DynamicObject = serde_json::from_value(object)?;
            Ok(match api.create(&PostParams::default(), &dynamic).await {
                Ok(_) => Verdict::Accepted(shown),
                Err(e) => Verdict::Refused(shown, refusal_message(e)?),
            })
        }
        Change::Update { base, patch } => {
            let base = named(base);
            let api = Kind::of(&base)?.api(client, namespace);
            let object_name = base["metadata"]["name"].as_str().unwrap().to_owned();
            let dynamic: DynamicObject = serde_json::from_value(base.clone())?;
            api.create(&PostParams::default(), &dynamic)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the base object was refused: {e}\n{}",
                        serde_json::to_string_pretty(&base).unwrap_or_default()
                    )
                })?;
            let shown = format!(
                "{}\npatched with\n{}",
                serde_json::to_string_pretty(&base)?,
                serde_json::to_string_pretty(patch)?
            );
            Ok(
                match api
                    .patch(&object_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => Verdict::Accepted(shown),
                    Err(e) => Verdict::Refused(shown, refusal_message(e)?),
                },
            )
        }
    }
}

fn identity() -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {},
        "spec": {
            "owner": { "kind": "User", "name": "alice" },
            "purpose": "Answers questions about the product catalogue."
        }
    })
}

/// `fields` of a Pod Security exemption, approved.
fn exemption(fields: Value) -> Value {
    let mut exemption = fields;
    exemption["approval"] = json!({ "approvedBy": "carol", "reason": "SEC-1",
        "forOwner": { "kind": "User", "name": "alice" } });
    exemption
}

/// The identity with one exemption made of `fields`.
fn exempt(fields: Value) -> Value {
    identity().set("/spec/podSecurityExemptions", json!([exemption(fields)]))
}

fn binding() -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1",
        "kind": "ToolBinding",
        "metadata": {},
        "spec": { "agent": "researcher", "tools": [tool("catalogue")] }
    })
}

fn policy() -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1",
        "kind": "DelegationPolicy",
        "metadata": {},
        "spec": {
            "delegator": "planner",
            "delegates": [{ "agent": "executor", "tools": ["ledger"] }]
        }
    })
}

fn tool(name: &str) -> Value {
    json!({
        "name": name,
        "actions": ["read"],
        "destination": { "service": { "name": name } }
    })
}

fn external_tool(cidr: &str) -> Value {
    json!({
        "name": "web-search",
        "actions": ["read"],
        "destination": { "external": { "cidrs": [cidr], "ports": [443] } }
    })
}

/// Marks the binding's first tool High risk, with the approval and bounded window it needs.
fn high_risk(binding: Value) -> Value {
    binding
        .set("/spec/tools/0/risk", json!("High"))
        .set("/spec/validUntil", json!("2030-01-01T00:00:00Z"))
        .set(
            "/spec/approval",
            json!({ "approvedBy": "bob", "reason": "CHG-1234: release window",
                "forOwner": { "kind": "User", "name": "alice" } }),
        )
}

trait Edit {
    /// Sets the value at a JSON pointer whose parent exists (an object key or an array index).
    fn set(self, pointer: &str, value: Value) -> Self;
}

impl Edit for Value {
    fn set(mut self, pointer: &str, value: Value) -> Self {
        let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
        match self.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.insert(key.to_owned(), value);
            }
            Some(Value::Array(items)) => {
                items[key.parse::<usize>().expect("an array index")] = value;
            }
            _ => panic!("no object or array at {parent:?} to set {key:?} in"),
        }
        self
    }
}

/// kubectl's tables by resource (`agentidentity.mandate.dev`): the header's columns and the
/// rows. `kubectl get` on a category prints one table per kind, separated by blank lines.
fn tables_by_kind(out: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    out.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines().filter(|l| !l.trim().is_empty());
            let header = lines.next().unwrap_or_default();
            let columns = header
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let rows: Vec<String> = lines.map(str::to_owned).collect();
            let kind = rows
                .first()
                .and_then(|row| row.split('/').next())
                .unwrap_or_default()
                .to_owned();
            (kind, (columns, rows))
        })
        .collect()
}

/// Whether `whole` holds every field of `part` with the same value (arrays element by element).
fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(whole), Value::Object(part)) => part
            .iter()
            .all(|(k, v)| whole.get(k).is_some_and(|w| contains(w, v))),
        (Value::Array(whole), Value::Array(part)) => {
            whole.len() == part.len() && whole.iter().zip(part).all(|(w, p)| contains(w, p))
        }
        _ => whole == part,
    }
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
