//! The decision on its own: fixtures in, decisions out, every reason code reached.

use k8s_openapi::jiff::SignedDuration;

use super::*;
use crate::api::{Action, AgentClass, HttpMethod};
use crate::authority::fixtures::{NOW, NS, ToolBuilder, binding, hours, identity, policy, tool};
use crate::authority::{Authority, AuthorityBuilder};

const SERVER: &str = "docs-mcp";

/// `docs`: a read-only tool at Service `docs-mcp` exposing MCP `search` and `get_*` (read) and
/// HTTP GET/HEAD on `/v1/docs/*`.
fn docs_read() -> ToolBuilder {
    tool("docs")
        .service(SERVER, None, [])
        .mcp("search", Some(Action::Read))
        .mcp("get_*", Some(Action::Read))
        .http(
            [HttpMethod::Get, HttpMethod::Head],
            ["/v1/docs/*", "/v1/status"],
        )
}

fn base() -> AuthorityBuilder {
    Authority::builder()
        .identity(identity("reader").build())
        .binding(
            binding("reader-tools")
                .agent("reader")
                .tool(docs_read())
                .build(),
        )
}

/// `reader` holding `tool` through ToolBinding `b`, valid at any time.
fn reader_holding(tool: impl Into<crate::api::Tool>) -> Authority {
    Authority::builder()
        .identity(identity("reader").build())
        .binding(binding("b").agent("reader").tool(tool))
        .build()
}

fn caller(agent: &str) -> Caller {
    Caller {
        namespace: NS.into(),
        service_account: agent.into(),
        audiences: None,
    }
}

fn with_token(agent: &str, audience: &str) -> Caller {
    Caller {
        audiences: Some(vec![audience.into()]),
        ..caller(agent)
    }
}

fn server() -> Result<Server, String> {
    Ok(Server::Service {
        namespace: NS.into(),
        name: SERVER.into(),
    })
}

fn mcp(tool: &str) -> Operation {
    Operation::Mcp {
        method: "tools/call".into(),
        tool: Some(tool.into()),
    }
}

fn method(method: &str) -> Operation {
    Operation::Mcp {
        method: method.into(),
        tool: None,
    }
}

fn http(method: &str, path: &str) -> Operation {
    Operation::Http {
        method: method.into(),
        path: path.into(),
    }
}

fn call(caller: Caller, operation: Operation) -> Call {
    Call {
        caller: Authentication::Verified(caller),
        server: server(),
        operation: Ok(operation),
        delegators: Vec::new(),
    }
}

fn code(authority: &Authority, call: &Call) -> &'static str {
    decide(authority, call, NOW).code()
}

// ---- allowed, and what the log records ----

#[test]
fn a_read_only_agent_calling_its_read_tool_is_allowed_with_the_binding_that_allowed_it() {
    let decision = decide(&base().build(), &call(caller("reader"), mcp("search")), NOW);
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.code(), "Allowed");
    assert_eq!(decision.agent.as_deref(), Some("reader"));
    assert_eq!(decision.owner.as_deref(), Some("Group:team-a"));
    assert_eq!(decision.tool.as_deref(), Some("docs"));
    assert_eq!(decision.binding.as_deref(), Some("reader-tools"));
    assert_eq!(decision.action, Some(Action::Read));
    assert!(decision.chain.is_empty());
}

#[test]
fn the_decision_names_the_generation_of_the_binding_that_allowed_it() {
    let mut granting = binding("reader-tools")
        .agent("reader")
        .tool(docs_read())
        .build();
    granting.metadata.generation = Some(7);
    let authority = Authority::builder()
        .identity(identity("reader").build())
        .binding(granting)
        .build();
    let decision = decide(&authority, &call(caller("reader"), mcp("search")), NOW);
    assert_eq!(decision.generation, Some(7));
}

// ---- MCP operations ----

#[test]
fn a_read_only_agent_calling_a_tool_its_binding_does_not_name_is_refused() {
    let authority = base().build();
    for name in ["update_doc", "delete_doc", "searchx", "Search"] {
        let decision = decide(&authority, &call(caller("reader"), mcp(name)), NOW);
        assert_eq!(decision.code(), "OperationNotDeclared", "{name}");
        assert!(decision.detail.contains(name), "{}", decision.detail);
    }
}

#[test]
fn a_prefix_and_a_star_match_mcp_tool_names() {
    let authority = base().build();
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("get_doc"))),
        "Allowed"
    );
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("get_"))),
        "Allowed"
    );
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("ge"))),
        "OperationNotDeclared"
    );
    let everything = reader_holding(
        tool("docs")
            .service(SERVER, None, [])
            .mcp("*", Some(Action::Read)),
    );
    assert_eq!(
        code(&everything, &call(caller("reader"), mcp("anything"))),
        "Allowed"
    );
}

#[test]
fn an_mcp_tool_whose_action_the_tool_does_not_declare_is_refused_even_if_the_api_server_let_it_in()
{
    // The CRD's CEL rule refuses this binding; manifests read from disk or an older CRD may not.
    let authority = reader_holding(
        tool("docs")
            .service(SERVER, None, [])
            .mcp("purge", Some(Action::Delete))
            .mcp("update", None),
    );
    let purge = decide(&authority, &call(caller("reader"), mcp("purge")), NOW);
    assert_eq!(purge.code(), "ActionNotDeclared");
    assert_eq!(purge.action, Some(Action::Delete));
    assert!(purge.detail.contains("performs delete"), "{}", purge.detail);
    let update = decide(&authority, &call(caller("reader"), mcp("update")), NOW);
    assert_eq!(update.code(), "ActionNotDeclared");
    assert_eq!(
        update.action,
        Some(Action::Write),
        "no action declared: write"
    );
}

#[test]
fn session_methods_are_allowed_to_a_holder_of_an_mcp_tool_without_an_action() {
    let authority = base().build();
    for name in [
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "notifications/initialized",
    ] {
        let decision = decide(&authority, &call(caller("reader"), method(name)), NOW);
        assert_eq!(decision.code(), "Allowed", "{name}");
        assert_eq!(decision.action, None);
    }
}

#[test]
fn mcp_methods_no_tool_can_declare_yet_are_refused() {
    let authority = base().build();
    for name in ["resources/read", "prompts/get", "sampling/createMessage"] {
        assert_eq!(
            code(&authority, &call(caller("reader"), method(name))),
            "OperationNotDeclared",
            "{name}"
        );
    }
}

#[test]
fn a_tool_that_declares_no_mcp_tools_refuses_every_mcp_method() {
    let authority = reader_holding(tool("docs").service(SERVER, None, []));
    for operation in [method("initialize"), method("tools/list"), mcp("search")] {
        assert_eq!(
            code(&authority, &call(caller("reader"), operation)),
            "OperationNotDeclared"
        );
    }
}

#[test]
fn a_tools_call_without_a_tool_name_or_a_call_without_a_method_is_unreadable() {
    let authority = base().build();
    for operation in [
        method("tools/call"),
        mcp(""),
        method(""),
        http("", "/v1/status"),
    ] {
        assert_eq!(
            code(&authority, &call(caller("reader"), operation.clone())),
            "UnreadableCall",
            "{operation:?}"
        );
    }
}

#[test]
fn a_called_tool_name_outside_mcps_characters_is_unreadable_even_under_a_prefix_pattern() {
    // Two Mcp-Name headers arrive joined by a comma: `get_*` must not match them.
    let authority = base().build();
    for name in [
        "get_doc,delete_doc",
        "get_doc delete",
        "get_*",
        &"g".repeat(129),
    ] {
        assert_eq!(
            code(&authority, &call(caller("reader"), mcp(name))),
            "UnreadableCall",
            "{name}"
        );
    }
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("get_doc.v2/x-y"))),
        "Allowed"
    );
}

#[test]
fn a_call_the_gateway_could_not_read_is_refused_once_the_agent_is_known() {
    let mut unreadable = call(caller("reader"), mcp("search"));
    unreadable.operation = Err(Unreadable(
        "the Mcp-Name header says read_doc but the body says delete_doc".into(),
    ));
    let decision = decide(&base().build(), &unreadable, NOW);
    assert_eq!(decision.code(), "UnreadableCall");
    assert_eq!(decision.agent.as_deref(), Some("reader"));
    assert!(
        decision.detail.contains("delete_doc"),
        "{}",
        decision.detail
    );
}

// ---- HTTP operations ----

#[test]
fn http_methods_on_declared_paths_are_allowed_with_the_methods_action() {
    let authority = base().build();
    for (m, path) in [
        ("GET", "/v1/docs/42"),
        ("HEAD", "/v1/docs/"),
        ("GET", "/v1/status"),
        ("GET", "/v1/status?verbose=1"),
    ] {
        let decision = decide(&authority, &call(caller("reader"), http(m, path)), NOW);
        assert_eq!(decision.code(), "Allowed", "{m} {path}");
        assert_eq!(decision.action, Some(Action::Read));
    }
}

#[test]
fn http_methods_or_paths_the_tool_does_not_declare_are_refused() {
    let authority = base().build();
    for (m, path) in [
        ("POST", "/v1/docs/42"),
        ("DELETE", "/v1/docs/42"),
        ("GET", "/v1/statusx"),
        ("GET", "/v1/docs"),
        ("OPTIONS", "/v1/status"),
        ("get", "/v1/status"),
    ] {
        assert_eq!(
            code(&authority, &call(caller("reader"), http(m, path))),
            "OperationNotDeclared",
            "{m} {path}"
        );
    }
}

#[test]
fn a_declared_http_method_whose_action_the_tool_lacks_is_refused() {
    let authority = reader_holding(
        tool("docs")
            .service(SERVER, None, [])
            .http([HttpMethod::Get, HttpMethod::Delete], ["/v1/*"]),
    );
    let decision = decide(
        &authority,
        &call(caller("reader"), http("DELETE", "/v1/x")),
        NOW,
    );
    assert_eq!(decision.code(), "ActionNotDeclared");
    assert_eq!(decision.action, Some(Action::Delete));
}

#[test]
fn paths_that_could_climb_out_of_a_declared_prefix_are_unreadable() {
    let authority = base().build();
    for path in [
        "/v1/docs/../admin",
        "/v1/docs/./x",
        "/v1/docs/..",
        "/v1/docs/%2e%2e/admin",
        "/v1/docs/%2F..%2Fadmin",
        "/v1/docs\\..\\admin",
        "v1/docs/1",
    ] {
        assert_eq!(
            code(&authority, &call(caller("reader"), http("GET", path))),
            "UnreadableCall",
            "{path}"
        );
    }
}

// ---- who calls ----

#[test]
fn a_caller_without_a_verified_credential_is_unauthenticated() {
    let mut unverified = call(caller("reader"), mcp("search"));
    unverified.caller = Authentication::Refused("no bearer token and no mTLS peer".into());
    let decision = decide(&base().build(), &unverified, NOW);
    assert_eq!(decision.code(), "Unauthenticated");
    assert_eq!(decision.detail, "no bearer token and no mTLS peer");
}

#[test]
fn a_service_account_of_no_agent_is_refused() {
    let decision = decide(
        &base().build(),
        &call(caller("default"), mcp("search")),
        NOW,
    );
    assert_eq!(decision.code(), "NotAnAgent");
    assert_eq!(decision.namespace.as_deref(), Some(NS));
    let mut elsewhere = caller("reader");
    elsewhere.namespace = "other".into();
    assert_eq!(
        code(&base().build(), &call(elsewhere, mcp("search"))),
        "NotAnAgent"
    );
}

#[test]
fn an_agent_is_known_by_its_service_account_not_its_name() {
    let authority = Authority::builder()
        .identity(identity("reader").service_account("reader-sa").build())
        .binding(binding("b").agent("reader").tool(docs_read()))
        .build();
    assert_eq!(
        code(&authority, &call(caller("reader-sa"), mcp("search"))),
        "Allowed"
    );
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("search"))),
        "NotAnAgent"
    );
}

// ---- where the call goes ----

#[test]
fn a_call_to_a_server_the_agent_holds_no_tool_at_is_refused() {
    let authority = base().build();
    for server in [
        Server::Service {
            namespace: NS.into(),
            name: "billing".into(),
        },
        Server::Service {
            namespace: "other".into(),
            name: SERVER.into(),
        },
    ] {
        let mut elsewhere = call(caller("reader"), mcp("search"));
        elsewhere.server = Ok(server.clone());
        let decision = decide(&authority, &elsewhere, NOW);
        assert_eq!(decision.code(), "ToolNotHeld", "{server:?}");
        assert!(decision.detail.contains("bind one"), "{}", decision.detail);
    }
}

#[test]
fn a_service_in_another_namespace_is_reached_only_by_a_tool_naming_that_namespace() {
    let authority = reader_holding(
        tool("docs")
            .service(SERVER, Some("shared"), [])
            .mcp("search", Some(Action::Read)),
    );
    let mut shared = call(caller("reader"), mcp("search"));
    shared.server = Ok(Server::Service {
        namespace: "shared".into(),
        name: SERVER.into(),
    });
    assert_eq!(code(&authority, &shared), "Allowed");
    assert_eq!(
        code(&authority, &call(caller("reader"), mcp("search"))),
        "ToolNotHeld"
    );
}

#[test]
fn a_request_that_names_no_service_is_unreadable() {
    let mut nowhere = call(caller("reader"), mcp("search"));
    nowhere.server = Err("\"10.0.0.1\" names no Service".into());
    assert_eq!(code(&base().build(), &nowhere), "UnreadableCall");
}

// ---- time and approval ----

#[test]
fn validity_windows_are_judged_at_call_time_to_the_second() {
    let until = hours(1);
    let authority = Authority::builder()
        .identity(identity("reader").build())
        .binding(
            binding("b")
                .agent("reader")
                .tool(docs_read())
                .valid_until(until),
        )
        .build();
    let just_before = until.checked_sub(SignedDuration::from_secs(1)).unwrap();
    let call = call(caller("reader"), mcp("search"));
    assert_eq!(decide(&authority, &call, just_before).code(), "Allowed");
    let expired = decide(&authority, &call, until);
    assert_eq!(expired.code(), "ToolNotHeld");
    assert!(expired.detail.contains("Expired"), "{}", expired.detail);
    let later = until.checked_add(SignedDuration::from_secs(1)).unwrap();
    assert_eq!(decide(&authority, &call, later).code(), "ToolNotHeld");
}

#[test]
fn a_binding_not_yet_valid_grants_nothing() {
    let authority = Authority::builder()
        .identity(identity("reader").build())
        .binding(
            binding("b")
                .agent("reader")
                .tool(docs_read())
                .valid_from(hours(1)),
        )
        .build();
    let decision = decide(&authority, &call(caller("reader"), mcp("search")), NOW);
    assert_eq!(decision.code(), "ToolNotHeld");
    assert!(decision.detail.contains("Pending"), "{}", decision.detail);
}

#[test]
fn a_high_risk_tool_is_allowed_only_while_its_approval_is_in_force() {
    let high = || {
        binding("b")
            .agent("writer")
            .tool(docs_read().high())
            .valid_until(hours(2))
    };
    let writer = || identity("writer").class(AgentClass::WriteCapable).build();
    let approved = Authority::builder()
        .identity(writer())
        .binding(high().approved())
        .build();
    assert_eq!(
        code(&approved, &call(caller("writer"), mcp("search"))),
        "Allowed"
    );
    let withdrawn = Authority::builder()
        .identity(writer())
        .binding(high())
        .build();
    let decision = decide(&withdrawn, &call(caller("writer"), mcp("search")), NOW);
    assert_eq!(decision.code(), "ToolNotHeld");
    assert!(
        decision.detail.contains("MissingApproval"),
        "{}",
        decision.detail
    );
}

// ---- tokens ----

#[test]
fn a_token_must_carry_the_tools_audience_by_default_mandate_dev_namespace_tool() {
    let authority = base().build();
    let own = call(
        with_token("reader", "mandate.dev/agents/docs"),
        mcp("search"),
    );
    assert_eq!(code(&authority, &own), "Allowed");
    for audience in [
        "mandate.dev/agents/billing",
        "mandate.dev/other/docs",
        "https://kubernetes.default.svc.cluster.local",
    ] {
        let decision = decide(
            &authority,
            &call(with_token("reader", audience), mcp("search")),
            NOW,
        );
        assert_eq!(decision.code(), "WrongAudience", "{audience}");
        assert!(
            decision.detail.contains("audience mandate.dev/agents/docs"),
            "{}",
            decision.detail
        );
    }
}

#[test]
fn a_tool_with_its_own_audience_wants_exactly_that_one() {
    let authority = reader_holding(docs_read().audience("https://docs.example.com"));
    let with = |aud| code(&authority, &call(with_token("reader", aud), mcp("search")));
    assert_eq!(with("https://docs.example.com"), "Allowed");
    assert_eq!(with("mandate.dev/agents/docs"), "WrongAudience");
}

#[test]
fn a_token_for_one_tool_of_a_server_does_not_open_another_tool_of_the_same_server() {
    let authority = Authority::builder()
        .identity(identity("writer").class(AgentClass::WriteCapable).build())
        .binding(
            binding("b").agent("writer").tool(docs_read()).tool(
                tool("docs-edit")
                    .actions([Action::Write])
                    .service(SERVER, None, [])
                    .mcp("update_doc", Some(Action::Write)),
            ),
        )
        .build();
    let read_token = |op| call(with_token("writer", "mandate.dev/agents/docs"), op);
    assert_eq!(code(&authority, &read_token(mcp("search"))), "Allowed");
    let decision = decide(&authority, &read_token(mcp("update_doc")), NOW);
    assert_eq!(decision.code(), "WrongAudience");
    assert_eq!(decision.tool.as_deref(), Some("docs-edit"));
    let edit_token = call(
        with_token("writer", "mandate.dev/agents/docs-edit"),
        mcp("update_doc"),
    );
    let decision = decide(&authority, &edit_token, NOW);
    assert_eq!(decision.code(), "Allowed");
    assert_eq!(decision.tool.as_deref(), Some("docs-edit"));
    assert_eq!(decision.action, Some(Action::Write));
}

// ---- delegation ----

fn delegation(max_depth: i32, tools: &[&str]) -> AuthorityBuilder {
    let holds = |agent: &str| {
        binding(&format!("{agent}-tools"))
            .agent(agent)
            .tool(docs_read())
            .build()
    };
    Authority::builder()
        .identity(identity("planner").build())
        .identity(identity("executor").build())
        .identity(identity("helper").build())
        .binding(holds("planner"))
        .binding(holds("executor"))
        .binding(holds("helper"))
        .policy(
            policy("planner-to-executor")
                .delegator("planner")
                .delegate("executor", tools.iter().copied())
                .max_depth(max_depth)
                .build(),
        )
}

fn delegated(caller_agent: &str, delegators: &[&str]) -> Call {
    Call {
        delegators: delegators
            .iter()
            .map(|d| Authentication::Verified(caller(d)))
            .collect(),
        ..call(caller(caller_agent), mcp("search"))
    }
}

#[test]
fn delegated_work_covered_by_a_policy_is_allowed_and_names_the_chain() {
    let decision = decide(
        &delegation(1, &["docs"]).build(),
        &delegated("executor", &["planner"]),
        NOW,
    );
    assert_eq!(decision.code(), "Allowed", "{}", decision.detail);
    assert_eq!(decision.chain, ["planner", "executor"]);
}

#[test]
fn delegated_work_outside_every_policy_is_refused() {
    let authority = delegation(1, &["docs"]).build();
    // helper is no delegate of planner; executor never delegates to planner.
    for (agent, delegators) in [("helper", ["planner"]), ("planner", ["executor"])] {
        let decision = decide(&authority, &delegated(agent, &delegators), NOW);
        assert_eq!(decision.code(), "DelegationNotAllowed", "{agent}");
        assert_eq!(decision.chain, [delegators[0], agent]);
        // The binding is named only when it allowed the call.
        assert_eq!((decision.binding, decision.generation), (None, None));
    }
}

#[test]
fn delegated_work_with_a_tool_the_policy_does_not_hand_on_is_refused() {
    let authority = delegation(1, &["billing"]).build();
    assert_eq!(
        code(&authority, &delegated("executor", &["planner"])),
        "DelegationNotAllowed"
    );
}

#[test]
fn a_chain_longer_than_the_policies_max_depth_is_refused() {
    let deeper = |max_depth| {
        delegation(max_depth, &["docs"])
            .policy(
                policy("executor-to-helper")
                    .delegator("executor")
                    .delegate("helper", ["docs"])
                    .max_depth(max_depth)
                    .build(),
            )
            .build()
    };
    let chain = delegated("helper", &["planner", "executor"]);
    let shallow = decide(&deeper(1), &chain, NOW);
    assert_eq!(shallow.code(), "DelegationNotAllowed");
    assert!(shallow.detail.contains("2 hop(s)"), "{}", shallow.detail);
    let decision = decide(&deeper(2), &chain, NOW);
    assert_eq!(decision.code(), "Allowed", "{}", decision.detail);
    assert_eq!(decision.chain, ["planner", "executor", "helper"]);
}

#[test]
fn a_delegator_that_is_unverified_foreign_or_no_agent_is_refused() {
    let authority = delegation(1, &["docs"]).build();
    let mut unverified = delegated("executor", &[]);
    unverified.delegators = vec![Authentication::Refused("token expired".into())];
    let mut foreign = delegated("executor", &[]);
    foreign.delegators = vec![Authentication::Verified(Caller {
        namespace: "other".into(),
        ..caller("planner")
    })];
    let stranger = delegated("executor", &["default"]);
    for (case, call) in [
        ("unverified", unverified),
        ("foreign", foreign),
        ("stranger", stranger),
    ] {
        assert_eq!(code(&authority, &call), "DelegationNotAllowed", "{case}");
    }
}

#[test]
fn a_delegator_whose_token_is_for_another_tool_is_refused() {
    let authority = delegation(1, &["docs"]).build();
    let mut call = delegated("executor", &[]);
    call.delegators = vec![Authentication::Verified(with_token(
        "planner",
        "mandate.dev/agents/billing",
    ))];
    assert_eq!(code(&authority, &call), "DelegationNotAllowed");
}

#[test]
fn delegation_expires_with_its_policy_at_call_time() {
    let authority = Authority::builder()
        .identity(identity("planner").build())
        .identity(identity("executor").build())
        .binding(binding("p").agent("planner").tool(docs_read()))
        .binding(binding("e").agent("executor").tool(docs_read()))
        .policy(
            policy("p-to-e")
                .delegator("planner")
                .delegate("executor", ["docs"])
                .valid_until(hours(1))
                .build(),
        )
        .build();
    let call = delegated("executor", &["planner"]);
    assert_eq!(decide(&authority, &call, NOW).code(), "Allowed");
    assert_eq!(
        decide(&authority, &call, hours(1)).code(),
        "DelegationNotAllowed"
    );
}

// ---- names ----

#[test]
fn spiffe_ids_of_this_trust_domain_name_a_namespace_and_service_account() {
    assert_eq!(
        parse_spiffe_id(
            "cluster.local",
            "spiffe://cluster.local/ns/agents/sa/reader"
        ),
        Ok(("agents".into(), "reader".into()))
    );
    for bad in [
        "spiffe://example.org/ns/agents/sa/reader",
        "spiffe://cluster.local/ns/agents/sa/reader/x",
        "spiffe://cluster.local/ns//sa/reader",
        "spiffe://cluster.local",
        "https://cluster.local/ns/agents/sa/reader",
    ] {
        assert!(parse_spiffe_id("cluster.local", bad).is_err(), "{bad}");
    }
}

#[test]
fn only_service_account_usernames_name_a_caller() {
    assert_eq!(
        parse_service_account_username("system:serviceaccount:agents:reader"),
        Ok(("agents".into(), "reader".into()))
    );
    for bad in [
        "alice",
        "system:serviceaccount:agents",
        "system:serviceaccount::reader",
        "system:serviceaccount:agents:reader:x",
        "system:node:n1",
    ] {
        assert!(parse_service_account_username(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_host_names_a_service_as_cluster_dns_resolves_it_from_the_callers_namespace() {
    let svc = |ns: &str, name: &str| {
        Ok(Server::Service {
            namespace: ns.into(),
            name: name.into(),
        })
    };
    assert_eq!(parse_host("docs-mcp", NS), svc(NS, "docs-mcp"));
    assert_eq!(parse_host("docs-mcp:8080", NS), svc(NS, "docs-mcp"));
    assert_eq!(parse_host("docs-mcp.tools", NS), svc("tools", "docs-mcp"));
    assert_eq!(
        parse_host("docs-mcp.tools.svc", NS),
        svc("tools", "docs-mcp")
    );
    assert_eq!(
        parse_host("Docs-MCP.tools.svc.cluster.local.:443", NS),
        svc("tools", "docs-mcp")
    );
    for bad in [
        "10.0.0.1",
        "10.0.0.1:80",
        "[::1]:80",
        "",
        "a.b.c",
        "docs_mcp",
        "-x",
    ] {
        assert!(parse_host(bad, NS).is_err(), "{bad}");
    }
}
