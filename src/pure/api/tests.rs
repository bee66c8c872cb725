//! The CRD types on their own: serde defaults and the schema defaults the API server applies
//! agree, every kind survives JSON and YAML round trips with its status, every sample in
//! `config/samples/` is one of these types without dropped fields, and every field of every
//! generated schema carries a description (`kubectl explain` prints it), and no printer column
//! shows a future instant as a `date` (kubectl would print `<invalid>`). No API server here:
//! what it decides is tested in `e2e/tests/crds.rs` and `e2e/tests/tables.rs`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::*;

fn at(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
}

fn minimal_identity(class: Option<&str>) -> AgentIdentity {
    let mut spec = json!({
        "owner": { "kind": "User", "name": "alice" },
        "purpose": "Answers questions about the product catalogue."
    });
    if let Some(class) = class {
        spec["class"] = json!(class);
    }
    serde_json::from_value(json!({
        "apiVersion": "mandate.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": { "name": "researcher", "namespace": "agents" },
        "spec": spec
    }))
    .unwrap()
}

// ---- defaults ----

#[test]
fn an_identity_without_a_class_is_read_only_with_hour_long_tokens() {
    let identity = minimal_identity(None);
    assert_eq!(identity.spec.class, AgentClass::ReadOnly);
    assert_eq!(identity.token_ttl_seconds(), 3600);
}

#[test]
fn token_lifetimes_default_shorter_the_more_a_class_can_change() {
    let ttl = |class| minimal_identity(Some(class)).token_ttl_seconds();
    assert_eq!(ttl("ReadOnly"), 3600);
    assert_eq!(ttl("WriteCapable"), 900);
    assert_eq!(ttl("TransactionExecutor"), 600);
}

#[test]
fn an_explicit_token_lifetime_overrides_the_class_default() {
    let mut identity = minimal_identity(Some("TransactionExecutor"));
    identity.spec.credentials = Some(Credentials {
        token_ttl_seconds: Some(1800),
        audiences: vec![],
    });
    assert_eq!(identity.token_ttl_seconds(), 1800);
}

#[test]
fn an_identity_without_a_service_account_name_runs_as_its_own_name() {
    let mut identity = minimal_identity(None);
    assert_eq!(identity.service_account_name(), "researcher");
    identity.spec.service_account_name = Some("researcher-sa".into());
    assert_eq!(identity.service_account_name(), "researcher-sa");
}

#[test]
fn a_tool_without_a_risk_is_low_risk() {
    let tool: Tool = serde_json::from_value(json!({
        "name": "catalogue",
        "actions": ["read"],
        "destination": { "service": { "name": "catalogue" } }
    }))
    .unwrap();
    assert_eq!(tool.risk, Risk::Low);
}

#[test]
fn an_endpoint_port_without_a_protocol_is_tcp() {
    let port: EndpointPort = serde_json::from_value(json!({ "port": 8443 })).unwrap();
    assert_eq!(port.protocol, Protocol::Tcp);
    assert_eq!(port.protocol.as_str(), "TCP");
}

#[test]
fn a_policy_without_a_max_depth_allows_one_hop() {
    let spec: DelegationPolicySpec = serde_json::from_value(json!({
        "delegator": "planner",
        "delegates": [{ "agent": "executor", "tools": ["ledger"] }]
    }))
    .unwrap();
    assert_eq!(spec.max_depth, 1);
}

#[test]
fn the_schema_defaults_are_the_serde_defaults() {
    // The API server fills these in before anything reads the object; the Rust side must agree.
    let schema = |kind: &str| {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        serde_json::to_value(&crd.spec.versions[0].schema).unwrap()
    };
    let spec = "/openAPIV3Schema/properties/spec/properties";
    let identity = schema("AgentIdentity");
    assert_eq!(
        identity.pointer(&format!("{spec}/class/default")),
        Some(&json!("ReadOnly"))
    );
    assert_eq!(
        identity.pointer(&format!(
            "{spec}/endpoint/properties/ports/items/properties/protocol/default"
        )),
        Some(&json!("TCP"))
    );
    assert_eq!(
        schema("ToolBinding").pointer(&format!("{spec}/tools/items/properties/risk/default")),
        Some(&json!("Low"))
    );
    assert_eq!(
        schema("DelegationPolicy").pointer(&format!("{spec}/maxDepth/default")),
        Some(&json!(1))
    );
}

#[test]
fn only_past_instants_are_date_printer_columns_so_kubectl_never_prints_invalid() {
    // The API server prints a `date` column as the time since the instant; an instant ahead
    // (an expiry) comes out as `<invalid>`. Creation is always behind; anything else is a string.
    let mut columns = Vec::new();
    for crd in crds() {
        for column in crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
        {
            columns.push((
                crd.spec.names.kind.clone(),
                column.name.clone(),
                column.type_.clone(),
                column.json_path.clone(),
            ));
        }
    }
    let misdated: Vec<_> = columns
        .iter()
        .filter(|(_, _, type_, path)| type_ == "date" && path != ".metadata.creationTimestamp")
        .collect();
    assert!(
        misdated.is_empty(),
        "date columns of a future instant: {misdated:?}"
    );
    assert!(
        columns.contains(&(
            "ToolBinding".into(),
            "Expires".into(),
            "string".into(),
            ".status.expiresAt".into()
        )),
        "{columns:?}"
    );
}

// ---- round trips ----

fn condition(type_: &str) -> Condition {
    conditions::new(
        type_,
        true,
        "Applied",
        "all applied",
        Some(3),
        at(1_700_000_000),
    )
}

fn full_identity() -> AgentIdentity {
    let mut identity = AgentIdentity::new(
        "code-agent",
        AgentIdentitySpec {
            owner: Owner {
                kind: OwnerKind::User,
                name: "alice".into(),
                contact: Some("alice@example.com".into()),
            },
            class: AgentClass::WriteCapable,
            purpose: "Opens pull requests.".into(),
            service_account_name: Some("code-agent-sa".into()),
            credentials: Some(Credentials {
                token_ttl_seconds: Some(900),
                audiences: vec!["git.example.com".into()],
            }),
            endpoint: Some(Endpoint {
                ports: vec![EndpointPort {
                    port: 8443,
                    protocol: Protocol::Udp,
                }],
            }),
            pod_security_exemptions: Vec::new(),
        },
    );
    identity.metadata.namespace = Some("agents".into());
    identity.status = Some(AgentIdentityStatus {
        spiffe_id: Some("spiffe://cluster.local/ns/agents/sa/code-agent-sa".into()),
        service_account: Some("code-agent-sa".into()),
        network_policy: Some("mandate-code-agent".into()),
        tools: vec![LiveTool {
            name: "deploy-api".into(),
            binding: "code-agent-deploy".into(),
            risk: Risk::High,
            actions: vec![Action::Write, Action::Execute],
            expires_at: Some(at(1_700_003_600)),
        }],
        tool_count: 1,
        delegates_to: vec!["executor".into()],
        delegated_from: vec!["planner".into()],
        escalation_paths: vec!["planner -> code-agent -> executor: deploy-api".into()],
        observed_generation: Some(3),
        conditions: vec![
            condition(conditions::READY),
            condition(conditions::ISOLATED),
        ],
    });
    identity
}

fn full_binding() -> ToolBinding {
    let service = Tool {
        name: "git".into(),
        actions: vec![Action::Read, Action::Write],
        risk: Risk::Low,
        destination: Destination {
            service: Some(ServiceDestination {
                name: "git".into(),
                namespace: Some("scm".into()),
                ports: vec![IntOrString::String("https".into()), IntOrString::Int(22)],
            }),
            ..Default::default()
        },
        mcp: Some(McpOperations {
            tools: vec![
                McpTool {
                    name: "get_file".into(),
                    action: Some(Action::Read),
                },
                McpTool {
                    name: "open_*".into(),
                    action: None,
                },
            ],
        }),
        http: vec![HttpOperation {
            methods: vec![HttpMethod::Get, HttpMethod::Post],
            paths: vec!["/api/v1/repos/*".into()],
        }],
        audience: Some("git.example.com".into()),
    };
    let pods = Tool {
        name: "runner".into(),
        actions: vec![Action::Execute],
        risk: Risk::High,
        destination: Destination {
            pods: Some(PodsDestination {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([("team".into(), "ci".into())].into()),
                    ..Default::default()
                }),
                pod_selector: LabelSelector {
                    match_labels: Some([("app".into(), "runner".into())].into()),
                    ..Default::default()
                },
                ports: vec![IntOrString::Int(8080)],
            }),
            ..Default::default()
        },
        mcp: None,
        http: Vec::new(),
        audience: None,
    };
    let external = Tool {
        name: "web-search".into(),
        actions: vec![Action::Read],
        risk: Risk::Low,
        destination: Destination {
            external: Some(ExternalDestination {
                cidrs: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
                ports: vec![443],
            }),
            ..Default::default()
        },
        mcp: None,
        http: Vec::new(),
        audience: None,
    };
    let kubernetes = Tool {
        name: "configmaps".into(),
        actions: vec![Action::Read, Action::Delete],
        risk: Risk::Low,
        destination: Destination {
            kubernetes_api: Some(KubernetesApiDestination {
                resources: vec![ApiResourceRef {
                    group: String::new(),
                    resource: "configmaps".into(),
                    names: vec!["settings".into()],
                }],
            }),
            ..Default::default()
        },
        mcp: None,
        http: Vec::new(),
        audience: None,
    };
    let mut binding = ToolBinding::new(
        "code-agent-tools",
        ToolBindingSpec {
            agent: "code-agent".into(),
            tools: vec![service, pods, external, kubernetes],
            valid_from: Some(at(1_700_000_000)),
            valid_until: Some(at(1_700_003_600)),
            approval: Some(Approval {
                approved_by: "bob".into(),
                for_owner: Some(OwnerRef {
                    kind: OwnerKind::User,
                    name: "alice".into(),
                }),
                reason: "CHG-1234".into(),
            }),
        },
    );
    binding.status = Some(ToolBindingStatus {
        phase: Some(ToolBindingPhase::Active),
        expires_at: Some(at(1_700_003_600)),
        risk: Some(Risk::High),
        risk_floor: vec!["configmaps: it declares delete".into()],
        observed_generation: Some(2),
        conditions: vec![
            condition(conditions::ACCEPTED),
            condition(conditions::ACTIVE),
        ],
    });
    binding
}

fn full_policy() -> DelegationPolicy {
    let mut policy = DelegationPolicy::new(
        "planner-to-executor",
        DelegationPolicySpec {
            delegator: "planner".into(),
            delegates: vec![Delegate {
                agent: "executor".into(),
                tools: vec!["ledger".into()],
            }],
            max_depth: 2,
            valid_until: Some(at(1_700_003_600)),
        },
    );
    policy.status = Some(DelegationPolicyStatus {
        observed_generation: Some(1),
        conditions: vec![condition(conditions::SAFE)],
        violations: vec!["planner -> executor -> planner: cycle".into()],
    });
    policy
}

fn assert_round_trips<T>(object: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(object).unwrap();
    assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), object, "{json}");
    let yaml = serde_yaml::to_string(object).unwrap();
    assert_eq!(&serde_yaml::from_str::<T>(&yaml).unwrap(), object, "{yaml}");
}

#[test]
fn an_agent_identity_with_status_round_trips_through_json_and_yaml() {
    assert_round_trips(&full_identity());
}

#[test]
fn a_tool_binding_with_every_destination_and_status_round_trips_through_json_and_yaml() {
    assert_round_trips(&full_binding());
}

#[test]
fn a_delegation_policy_with_status_round_trips_through_json_and_yaml() {
    assert_round_trips(&full_policy());
}

#[test]
fn field_names_on_the_wire_are_the_documented_ones() {
    let identity = serde_json::to_value(full_identity()).unwrap();
    assert_eq!(
        identity["status"]["spiffeID"],
        "spiffe://cluster.local/ns/agents/sa/code-agent-sa"
    );
    assert_eq!(identity["spec"]["credentials"]["tokenTtlSeconds"], 900);
    assert_eq!(identity["spec"]["endpoint"]["ports"][0]["protocol"], "UDP");
    let binding = serde_json::to_value(full_binding()).unwrap();
    assert_eq!(
        binding["spec"]["tools"][0]["actions"],
        json!(["read", "write"])
    );
    assert!(binding["spec"]["tools"][3]["destination"]["kubernetesAPI"].is_object());
    assert_eq!(binding["spec"]["approval"]["approvedBy"], "bob");
    assert_eq!(
        binding["spec"]["approval"]["forOwner"],
        json!({"kind": "User", "name": "alice"})
    );
    assert_eq!(binding["status"]["risk"], "High");
    assert_eq!(
        binding["status"]["riskFloor"][0],
        "configmaps: it declares delete"
    );
    assert_eq!(binding["status"]["phase"], "Active");
    let policy = serde_json::to_value(full_policy()).unwrap();
    assert_eq!(policy["spec"]["maxDepth"], 2);
}

// ---- samples ----

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

/// Parses `document` as `T` and checks that serializing it again keeps every field written.
fn typed_keeps_every_field<T>(document: &Value) -> bool
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let typed: T =
        serde_json::from_value(document.clone()).unwrap_or_else(|e| panic!("{e}: {document:#}"));
    contains(&serde_json::to_value(typed).unwrap(), document)
}

#[test]
fn every_sample_is_a_mandate_type_without_unknown_fields() {
    use serde::Deserialize;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml")
            || path.file_name().is_some_and(|n| n == "kustomization.yaml")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let document = Value::deserialize(document).unwrap();
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            let kept = match kind.as_str() {
                "AgentIdentity" => typed_keeps_every_field::<AgentIdentity>(&document),
                "ToolBinding" => typed_keeps_every_field::<ToolBinding>(&document),
                "DelegationPolicy" => typed_keeps_every_field::<DelegationPolicy>(&document),
                _ => continue,
            };
            assert!(
                kept,
                "{} has a field {kind} does not know:\n{document:#}",
                path.display()
            );
            *seen.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["AgentIdentity", "DelegationPolicy", "ToolBinding"],
        "the samples show every kind"
    );
}

// ---- documentation ----

/// Collects the paths of fields (object properties) without a description under `schema`.
fn undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, field) in properties {
            let field_path = format!("{path}.{name}");
            let documented = field["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty());
            // A real API server refuses any description on the root `metadata` (only name
            // and generateName may be declared there), so it is documented by the server.
            if !documented && field_path != ".metadata" {
                missing.push(field_path.clone());
            }
            undocumented(field, &field_path, missing);
        }
    }
    if schema["items"].is_object() {
        undocumented(&schema["items"], &format!("{path}[]"), missing);
    }
    if schema["additionalProperties"].is_object() {
        undocumented(
            &schema["additionalProperties"],
            &format!("{path}{{}}"),
            missing,
        );
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for branch in schema[combinator].as_array().into_iter().flatten() {
            undocumented(branch, path, missing);
        }
    }
}

#[test]
fn every_field_of_every_crd_has_a_description() {
    for crd in crds() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema).unwrap();
            let root = &schema["openAPIV3Schema"];
            assert!(
                root["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{} has no description",
                crd.spec.names.kind
            );
            let mut missing = Vec::new();
            undocumented(root, "", &mut missing);
            assert!(
                missing.is_empty(),
                "{} {}: fields without a `///` description: {missing:#?}",
                crd.spec.names.kind,
                version.name
            );
        }
    }
}

#[test]
fn the_undocumented_field_walk_finds_a_missing_description() {
    let schema = json!({
        "description": "root",
        "properties": {
            "spec": {
                "description": "documented",
                "properties": {
                    "tools": { "description": "list", "items": { "properties": { "name": {} } } },
                    "owner": { "description": "  " }
                }
            }
        }
    });
    let mut missing = Vec::new();
    undocumented(&schema, "", &mut missing);
    assert_eq!(missing, [".spec.owner", ".spec.tools[].name"]);
}
