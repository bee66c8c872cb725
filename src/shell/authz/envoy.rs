//! Envoy's external authorization protocol (`envoy.service.auth.v3.Authorization/Check`): a
//! CheckRequest in, what it asks ([`Asked`]) out; a decision in, a CheckResponse out (OK, or
//! 403 with the reason code and what to change). Translation only: no rule, no I/O.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HttpStatusCode, OkHttpResponse,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{Struct, value::Kind};

use super::{Answer, Asked};
use crate::decide::{Body, Forwarded, McpRequest, read_call};

/// Envoy's MCP filter metadata namespaces, newest first (`mcp_proxy` is the older name that
/// kube-agentic-networking still writes).
pub const MCP_METADATA_NAMESPACES: [&str; 2] = ["envoy.filters.http.mcp", "mcp_proxy"];
/// The context extension (set on the gateway's route or virtual host) naming the called
/// Service as `<namespace>/<name>`; without it the Host header names it.
pub const SERVICE_EXTENSION: &str = "mandate.dev/service";
/// The header carrying the delegators' tokens, outermost first, comma-separated; removed from
/// an allowed request before it goes on to the tool.
pub const DELEGATOR_HEADER: &str = "x-mandate-delegator";
/// The response header carrying the decision id, for the gateway's access log.
pub const DECISION_HEADER: &str = "x-mandate-decision-id";
/// The response header carrying the reason code of a refusal.
pub const REASON_HEADER: &str = "x-mandate-reason";

/// The header naming the called Service as `<namespace>/<name>` where a gateway cannot set a
/// context extension (Envoy's HTTP variant, forward-auth proxies): the gateway must set it
/// itself (Envoy's `authorization_request.headers_to_add`), never pass the client's.
pub const SERVICE_HEADER: &str = "x-mandate-service";
/// The header Envoy adds when it forwarded only part of the body (`allow_partial_message`).
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// What a CheckRequest asks. Absent attributes become empty values, which the decision refuses
/// with a reason.
pub fn read_check(request: &CheckRequest) -> Asked {
    let attributes = request.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let empty = HashMap::new();
    let headers = http.map_or(&empty, |h| &h.headers);
    let principal = attributes
        .and_then(|a| a.source.as_ref())
        .map(|s| s.principal.clone())
        .filter(|p| !p.is_empty());
    let metadata = attributes
        .and_then(|a| a.metadata_context.as_ref())
        .and_then(|m| {
            MCP_METADATA_NAMESPACES
                .iter()
                .find_map(|ns| m.filter_metadata.get(*ns))
        })
        .and_then(mcp_from_metadata);
    let body = http.and_then(|h| {
        let bytes = if h.raw_body.is_empty() {
            h.body.as_bytes()
        } else {
            &h.raw_body[..]
        };
        (!bytes.is_empty()).then_some(bytes)
    });
    let service = attributes
        .and_then(|a| a.context_extensions.get(SERVICE_EXTENSION))
        .cloned();
    read_request(Request {
        header: &|name| headers.get(name).map(String::as_str),
        method: http.map_or("", |h| &h.method),
        path: http.map_or("", |h| &h.path),
        host: http.map_or("", |h| &h.host),
        body,
        cut: false,
        metadata,
        principal,
        service,
    })
}

/// An HTTP request as any variant of Envoy's protocol (or a forward-auth proxy) passes it.
pub(super) struct Request<'a> {
    /// A header by its lowercase name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    /// The body, when the gateway forwards it.
    pub body: Option<&'a [u8]>,
    /// Only part of the body arrived (besides what the gateway says in
    /// [`PARTIAL_BODY_HEADER`]).
    pub cut: bool,
    /// What Envoy's MCP filter read from the body.
    pub metadata: Option<McpRequest>,
    /// The mTLS peer's SPIFFE ID, as the gateway asserts it.
    pub principal: Option<String>,
    /// The called Service, as the gateway's own configuration names it.
    pub service: Option<String>,
}

/// What a request asks: the caller's credentials from its headers, the operation from the MCP
/// metadata, headers and body (`decide::read_call`).
pub(super) fn read_request(request: Request<'_>) -> Asked {
    let header = request.header;
    let read = read_call(&Forwarded {
        metadata: request.metadata,
        headers: mcp_from_headers(header),
        body: request.body.map(|bytes| Body {
            bytes,
            truncated: request.cut || header(PARTIAL_BODY_HEADER) == Some("true"),
        }),
        method: request.method,
        path: request.path,
    });
    Asked {
        principal: request.principal,
        gateway_verified: false,
        bearer: header("authorization").and_then(bearer),
        delegators: header(DELEGATOR_HEADER)
            .map(|v| {
                v.split(',')
                    .map(|t| t.trim().trim_start_matches("Bearer ").trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        service: request.service,
        host: request.host.to_owned(),
        operation: read.operation,
        mcp: read.mcp,
        rpc_id: read.id,
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

fn mcp_from_metadata(fields: &Struct) -> Option<McpRequest> {
    let method = string_field(fields, "method")?;
    let tool = match fields.fields.get("params").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(params)) => string_field(params, "name"),
        _ => None,
    };
    let id = match fields.fields.get("id").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(id)) => Some(serde_json::Value::from(id.clone())),
        Some(Kind::NumberValue(id)) => serde_json::Number::from_f64(*id).map(|n| {
            // JSON-RPC ids are usually integers; keep them integers.
            if id.fract() == 0.0 && id.abs() < 9.0e15 {
                serde_json::Value::from(*id as i64)
            } else {
                serde_json::Value::Number(n)
            }
        }),
        _ => None,
    };
    Some(McpRequest { method, tool, id })
}

fn mcp_from_headers<'a>(header: &dyn Fn(&str) -> Option<&'a str>) -> Option<McpRequest> {
    Some(McpRequest {
        method: header("mcp-method")?.to_owned(),
        tool: header("mcp-name").map(str::to_owned),
        id: None,
    })
}

fn string_field(fields: &Struct, key: &str) -> Option<String> {
    match fields.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

/// The CheckResponse for an answer: OK with the decision id as a response header, or
/// PERMISSION_DENIED with a 403 whose headers carry the decision id and reason code and whose
/// body says what to change (a JSON-RPC error for an MCP call, so MCP clients show it).
pub fn respond(answer: &Answer) -> CheckResponse {
    let mut response = CheckResponse::new();
    if answer.decision.allowed {
        let mut ok = OkHttpResponseBuilder::new();
        // The delegators' tokens proved consent to mandate; the tool has no use for them.
        ok.add_response_header(DECISION_HEADER, &answer.id, None, false)
            .remove_header(DELEGATOR_HEADER);
        response
            .set_status(tonic::Status::ok(""))
            .set_http_response(OkHttpResponse::from(ok));
    } else {
        let mut denied = DeniedHttpResponseBuilder::new();
        denied
            .set_http_status(HttpStatusCode::Forbidden)
            .add_header(DECISION_HEADER, &answer.id, None, false)
            .add_header(REASON_HEADER, answer.decision.code(), None, false)
            .add_header("content-type", "application/json", None, false)
            .set_body(answer.refusal_body());
        response
            .set_status(tonic::Status::permission_denied(answer.message()))
            .set_http_response(DeniedHttpResponse::from(denied));
    }
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::google::protobuf::Value;

    use super::*;
    use crate::authority::Reason;
    use crate::decide::{Decision, Operation};

    fn string(value: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(value.into())),
        }
    }

    fn mcp_struct(method: &str, tool: &str) -> Struct {
        let params = Struct {
            fields: [("name".to_owned(), string(tool))].into(),
        };
        Struct {
            fields: [
                (
                    "id".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(3.0)),
                    },
                ),
                ("method".to_owned(), string(method)),
                (
                    "params".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(params)),
                    },
                ),
            ]
            .into(),
        }
    }

    fn check(
        headers: &[(&str, &str)],
        metadata: &[(&str, Struct)],
        principal: &str,
    ) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: principal.into(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        path: "/mcp".into(),
                        host: "docs-mcp.agents:8080".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                context_extensions: [(SERVICE_EXTENSION.to_owned(), "agents/docs-mcp".to_owned())]
                    .into(),
                metadata_context: Some(Metadata {
                    filter_metadata: metadata
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                    ..Metadata::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }

    #[test]
    fn the_mcp_filters_metadata_names_the_method_and_tool_under_either_namespace() {
        for namespace in MCP_METADATA_NAMESPACES {
            let asked = read_check(&check(
                &[("mcp-method", "tools/call"), ("mcp-name", "read_doc")],
                &[(namespace, mcp_struct("tools/call", "read_doc"))],
                "",
            ));
            assert_eq!(asked.operation, Ok(tool_call("read_doc")), "{namespace}");
            assert!(asked.mcp);
            assert_eq!(asked.rpc_id, Some(serde_json::json!(3)));
        }
    }

    #[test]
    fn a_header_naming_another_tool_than_the_mcp_filter_read_is_unreadable() {
        let asked = read_check(&check(
            &[("mcp-method", "tools/call"), ("mcp-name", "read_doc")],
            &[(
                MCP_METADATA_NAMESPACES[0],
                mcp_struct("tools/call", "delete_doc"),
            )],
            "",
        ));
        assert!(asked.operation.is_err(), "{asked:?}");
        assert!(asked.mcp);
        assert_eq!(asked.rpc_id, Some(serde_json::json!(3)));
    }

    #[test]
    fn without_metadata_the_mcp_headers_name_the_operation_else_the_http_request_does() {
        let asked = read_check(&check(
            &[("mcp-method", "tools/call"), ("mcp-name", "write_doc")],
            &[],
            "",
        ));
        assert_eq!(asked.operation, Ok(tool_call("write_doc")));
        let asked = read_check(&check(&[], &[], ""));
        assert_eq!(
            asked.operation,
            Ok(Operation::Http {
                method: "POST".into(),
                path: "/mcp".into()
            })
        );
        assert!(!asked.mcp);
    }

    #[test]
    fn a_forwarded_body_is_read_and_must_agree_with_the_headers() {
        let body =
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"delete_doc"}}"#;
        let mut request = check(&[], &[], "");
        let http = |r: &mut CheckRequest| {
            r.attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
                .map(|h| {
                    h.body = body.into();
                })
        };
        http(&mut request);
        let asked = read_check(&request);
        assert_eq!(asked.operation, Ok(tool_call("delete_doc")));
        assert_eq!(asked.rpc_id, Some(serde_json::json!("a")));

        let mut lying = check(
            &[("mcp-method", "tools/call"), ("mcp-name", "read_doc")],
            &[],
            "",
        );
        http(&mut lying);
        assert!(read_check(&lying).operation.is_err());

        // Envoy says it cut the body: the headers cannot be checked against it.
        let mut cut = check(
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "delete_doc"),
                (PARTIAL_BODY_HEADER, "true"),
            ],
            &[],
            "",
        );
        http(&mut cut);
        assert!(read_check(&cut).operation.is_err());
    }

    fn tool_call(tool: &str) -> Operation {
        Operation::Mcp {
            method: "tools/call".into(),
            tool: Some(tool.into()),
        }
    }

    #[test]
    fn the_caller_credentials_the_service_and_the_host_are_read() {
        let asked = read_check(&check(
            &[
                ("authorization", "Bearer abc.def.ghi"),
                (DELEGATOR_HEADER, "Bearer one, two"),
            ],
            &[],
            "spiffe://cluster.local/ns/agents/sa/reader",
        ));
        assert_eq!(asked.bearer.as_deref(), Some("abc.def.ghi"));
        assert_eq!(asked.delegators, ["one", "two"]);
        assert_eq!(
            asked.principal.as_deref(),
            Some("spiffe://cluster.local/ns/agents/sa/reader")
        );
        assert_eq!(asked.service.as_deref(), Some("agents/docs-mcp"));
        assert_eq!(asked.host, "docs-mcp.agents:8080");
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("bearer x"), Some("x".into()));
    }

    fn answer(decision: Decision, mcp: bool) -> Answer {
        Answer {
            id: "d-1".into(),
            decision,
            operation: "tools/call write_doc".into(),
            mcp,
            rpc_id: serde_json::json!(7),
        }
    }

    fn header<'a>(
        headers: &'a [envoy_types::ext_authz::v3::pb::HeaderValueOption],
        key: &str,
    ) -> Option<&'a str> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    #[test]
    fn an_allowed_call_is_ok_with_the_decision_id_for_the_access_log() {
        let allowed = Decision {
            allowed: true,
            ..Decision::default()
        };
        let response = respond(&answer(allowed, true));
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("not OK: {response:?}");
        };
        assert_eq!(
            header(&ok.response_headers_to_add, DECISION_HEADER),
            Some("d-1")
        );
        assert_eq!(ok.headers_to_remove, [DELEGATOR_HEADER]);
    }

    #[test]
    fn a_refused_call_is_a_403_naming_the_reason_with_a_json_rpc_error_for_mcp() {
        let refused = Decision::refused(Reason::OperationNotDeclared, "declare write_doc");
        let response = respond(&answer(refused.clone(), true));
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(tonic::Code::PermissionDenied as i32)
        );
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("not denied: {response:?}");
        };
        assert_eq!(
            denied.status.map(|s| s.code),
            Some(HttpStatusCode::Forbidden as i32)
        );
        assert_eq!(header(&denied.headers, DECISION_HEADER), Some("d-1"));
        assert_eq!(
            header(&denied.headers, REASON_HEADER),
            Some("OperationNotDeclared")
        );
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"]["code"], -32001);
        assert_eq!(body["id"], 7);
        assert_eq!(
            body["error"]["message"],
            "mandate refused tools/call write_doc: OperationNotDeclared: declare write_doc"
        );
        assert_eq!(body["error"]["data"]["decisionId"], "d-1");

        let Some(HttpResponse::DeniedResponse(plain)) =
            respond(&answer(refused, false)).http_response
        else {
            panic!("not denied");
        };
        let body: serde_json::Value = serde_json::from_str(&plain.body).unwrap();
        assert_eq!(body["reason"], "OperationNotDeclared");
    }
}
