//! What a call does, read from everything the gateway forwarded: Envoy's MCP filter metadata,
//! the `Mcp-Method`/`Mcp-Name` headers, the JSON-RPC body (when the gateway forwards it) and the
//! HTTP method and path in; one [`Operation`] (with the JSON-RPC id a refusal answers) or why
//! the call cannot be read safely out. The MCP server acts on the body, so the body (or the
//! metadata Envoy parsed from it) is what counts: a header that disagrees with it is an attempt
//! to have one call judged and another executed, and is refused. Pure: no I/O.

use serde::Deserialize;
use serde_json::Value;

use super::{Operation, Unreadable};

/// The largest body read for a JSON-RPC request; a larger one is not judged by its content.
pub const MAX_BODY: usize = 1 << 20;

/// An MCP request as one source names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpRequest {
    pub method: String,
    /// `params.name`: the tool of a `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC id, when the source carries it.
    pub id: Option<Value>,
}

/// The request body as the gateway forwarded it.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub bytes: &'a [u8],
    /// The gateway cut the body at its buffer limit (Envoy's `x-envoy-auth-partial-body`).
    pub truncated: bool,
}

/// Everything the gateway passed about what the call does.
#[derive(Debug, Clone, Default)]
pub struct Forwarded<'a> {
    /// From Envoy's MCP filter (namespace `envoy.filters.http.mcp` or `mcp_proxy`).
    pub metadata: Option<McpRequest>,
    /// From the `Mcp-Method` and `Mcp-Name` headers (set by the client).
    pub headers: Option<McpRequest>,
    /// The body, when the gateway forwards it (`with_request_body`); `None` otherwise.
    pub body: Option<Body<'a>>,
    pub method: &'a str,
    pub path: &'a str,
}

/// The call as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCall {
    pub operation: Result<Operation, Unreadable>,
    /// Whether it is (or claims to be) an MCP call: a refusal then reads as a JSON-RPC error.
    pub mcp: bool,
    /// The JSON-RPC id a refusal answers.
    pub id: Option<Value>,
}

/// Reads the call. The MCP filter's metadata, else a JSON-RPC request in the body, names the
/// operation; headers must agree with it. Without either, the headers name it when no body was
/// forwarded (the MCP server must then check them against the body, as the Go MCP SDK does),
/// and are refused when a forwarded body is no JSON-RPC request. Neither metadata nor headers
/// nor a JSON-RPC body: a plain HTTP call. A JSON-RPC batch is never judged as one call.
pub fn read_call(forwarded: &Forwarded<'_>) -> ReadCall {
    let body = forwarded.body.map(classify);
    let from_body = match &body {
        Some(BodyRead::Request(request)) => Some(request),
        _ => None,
    };
    let claimed = forwarded.metadata.as_ref().or(from_body);
    let mcp =
        claimed.is_some() || forwarded.headers.is_some() || matches!(body, Some(BodyRead::Batch));
    let id = claimed.and_then(|r| r.id.clone());
    let refuse = |why: String| ReadCall {
        operation: Err(Unreadable(why)),
        mcp,
        id: id.clone(),
    };
    match &body {
        Some(BodyRead::Batch) => {
            return refuse(
                "the body is a JSON-RPC batch: mandate judges one request per call, send them one by one"
                    .into(),
            );
        }
        // JSON mandate cannot read may be read by the server as a call: never judge around it.
        Some(BodyRead::Malformed(why)) => return refuse(format!("the body is {why}")),
        _ => {}
    }
    if let (Some(metadata), Some(from_body)) = (&forwarded.metadata, from_body)
        && !agree(metadata, from_body)
    {
        return refuse(format!(
            "Envoy's MCP metadata says {} but the body says {}",
            describe(metadata),
            describe(from_body)
        ));
    }
    match (claimed, &forwarded.headers) {
        (Some(request), Some(headers)) if !agree(request, headers) => refuse(format!(
            "the Mcp-Method/Mcp-Name headers say {} but the body says {}: the server acts on the body",
            describe(headers),
            describe(request)
        )),
        (Some(request), _) => ReadCall {
            operation: Ok(operation(request)),
            mcp,
            id,
        },
        (None, Some(headers)) => match &body {
            None => ReadCall {
                operation: Ok(operation(headers)),
                mcp,
                id,
            },
            Some(read) => refuse(format!(
                "the Mcp-Method/Mcp-Name headers say {} but the forwarded body is {}",
                describe(headers),
                read.describe()
            )),
        },
        (None, None) => ReadCall {
            operation: Ok(Operation::Http {
                method: forwarded.method.to_owned(),
                path: forwarded.path.to_owned(),
            }),
            mcp,
            id,
        },
    }
}

/// What a forwarded body turned out to be.
#[derive(Debug)]
enum BodyRead {
    Request(McpRequest),
    Batch,
    /// JSON-RPC but no request (a response to the server), JSON of another shape, or no JSON.
    Other,
    /// JSON that does not parse (or repeats a key mandate reads).
    Malformed(String),
    /// Cut by the gateway, or too large to read.
    Unread(String),
}

impl BodyRead {
    fn describe(&self) -> String {
        match self {
            BodyRead::Request(request) => describe(request),
            BodyRead::Batch => "a JSON-RPC batch".into(),
            BodyRead::Other => "no JSON-RPC request".into(),
            BodyRead::Malformed(why) | BodyRead::Unread(why) => why.clone(),
        }
    }
}

/// The fields of a JSON-RPC request mandate reads. Parsed with serde's derive, which refuses a
/// duplicate key: a body with two `method`s (or two `params.name`s) could be read one way here
/// and another by the server.
#[derive(Deserialize)]
struct Message {
    jsonrpc: Option<String>,
    method: Option<String>,
    params: Option<Params>,
    id: Option<Value>,
}

#[derive(Deserialize)]
struct Params {
    name: Option<Value>,
}

fn classify(body: Body<'_>) -> BodyRead {
    if body.truncated {
        return BodyRead::Unread("cut: the gateway forwarded only part of it".into());
    }
    if body.bytes.len() > MAX_BODY {
        return BodyRead::Unread(format!("larger than {MAX_BODY} bytes"));
    }
    let text = body.bytes.trim_ascii_start();
    match text.first() {
        Some(b'[') => match serde_json::from_slice::<Vec<Value>>(text) {
            Ok(items) if items.iter().any(|item| item.get("method").is_some()) => BodyRead::Batch,
            Ok(_) => BodyRead::Other,
            Err(error) => BodyRead::Malformed(format!("malformed JSON: {error}")),
        },
        Some(b'{') => match serde_json::from_slice::<Message>(text) {
            Ok(Message {
                jsonrpc: Some(version),
                method: Some(method),
                params,
                id,
            }) if version == "2.0" => {
                let tool = match params.and_then(|p| p.name) {
                    None => None,
                    Some(Value::String(name)) => Some(name),
                    // A name that is no string names no tool the server could call.
                    Some(other) => Some(other.to_string()),
                };
                BodyRead::Request(McpRequest { method, tool, id })
            }
            Ok(_) => BodyRead::Other,
            Err(error) => BodyRead::Malformed(format!("malformed JSON: {error}")),
        },
        _ => BodyRead::Other,
    }
}

/// Two sources agree when they name the same method and, for `tools/call`, the same tool.
fn agree(a: &McpRequest, b: &McpRequest) -> bool {
    a.method == b.method && (a.method != "tools/call" || a.tool == b.tool)
}

fn describe(request: &McpRequest) -> String {
    operation(request).describe()
}

fn operation(request: &McpRequest) -> Operation {
    Operation::Mcp {
        method: request.method.clone(),
        tool: request.tool.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(method: &str, tool: Option<&str>) -> McpRequest {
        McpRequest {
            method: method.into(),
            tool: tool.map(str::to_owned),
            id: None,
        }
    }

    fn call_body(tool: &str) -> String {
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": tool, "arguments": {"name": "handbook"}}})
        .to_string()
    }

    fn forwarded<'a>(
        metadata: Option<McpRequest>,
        headers: Option<McpRequest>,
        body: Option<&'a str>,
    ) -> Forwarded<'a> {
        Forwarded {
            metadata,
            headers,
            body: body.map(|b| Body {
                bytes: b.as_bytes(),
                truncated: false,
            }),
            method: "POST",
            path: "/mcp",
        }
    }

    fn tool_call(tool: &str) -> Operation {
        Operation::Mcp {
            method: "tools/call".into(),
            tool: Some(tool.into()),
        }
    }

    fn refused(read: &ReadCall) -> &str {
        match &read.operation {
            Err(Unreadable(why)) => why,
            Ok(operation) => panic!("read as {operation:?}"),
        }
    }

    #[test]
    fn the_body_names_the_call_when_nothing_else_does_with_its_json_rpc_id() {
        let body = call_body("read_doc");
        let read = read_call(&forwarded(None, None, Some(&body)));
        assert_eq!(read.operation, Ok(tool_call("read_doc")));
        assert!(read.mcp);
        assert_eq!(read.id, Some(json!(4)));
    }

    #[test]
    fn headers_that_agree_with_the_body_or_the_metadata_are_fine() {
        let body = call_body("read_doc");
        let headers = Some(request("tools/call", Some("read_doc")));
        let read = read_call(&forwarded(None, headers.clone(), Some(&body)));
        assert_eq!(read.operation, Ok(tool_call("read_doc")));
        let metadata = Some(request("tools/call", Some("read_doc")));
        let read = read_call(&forwarded(metadata, headers, None));
        assert_eq!(read.operation, Ok(tool_call("read_doc")));
        // Outside tools/call only the method is compared (Mcp-Name then names a resource or prompt).
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
        let read = read_call(&forwarded(
            None,
            Some(request("tools/list", Some("x"))),
            Some(&ping),
        ));
        assert_eq!(
            read.operation,
            Ok(Operation::Mcp {
                method: "tools/list".into(),
                tool: None
            })
        );
    }

    #[test]
    fn a_header_that_disagrees_with_the_body_or_the_metadata_is_refused() {
        let body = call_body("delete_doc");
        for (metadata, body) in [
            (None, Some(body.as_str())),
            (Some(request("tools/call", Some("delete_doc"))), None),
            (
                Some(request("tools/call", Some("delete_doc"))),
                Some(body.as_str()),
            ),
        ] {
            let read = read_call(&forwarded(
                metadata,
                Some(request("tools/call", Some("read_doc"))),
                body,
            ));
            let why = refused(&read);
            assert!(
                why.contains("say tools/call read_doc") && why.contains("tools/call delete_doc"),
                "{why}"
            );
            assert!(read.mcp);
        }
        let read = read_call(&forwarded(
            None,
            Some(request("tools/list", None)),
            Some(&body),
        ));
        refused(&read);
    }

    #[test]
    fn metadata_that_disagrees_with_the_body_is_refused() {
        let body = call_body("delete_doc");
        let read = read_call(&forwarded(
            Some(request("tools/call", Some("read_doc"))),
            None,
            Some(&body),
        ));
        assert!(refused(&read).contains("metadata"), "{read:?}");
    }

    #[test]
    fn headers_alone_name_the_call_when_no_body_was_forwarded() {
        let read = read_call(&forwarded(
            None,
            Some(request("tools/call", Some("read_doc"))),
            None,
        ));
        assert_eq!(read.operation, Ok(tool_call("read_doc")));
        assert!(read.mcp);
    }

    #[test]
    fn headers_over_a_body_that_is_no_json_rpc_request_are_refused() {
        let headers = Some(request("tools/call", Some("read_doc")));
        let duplicate = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_doc","name":"delete_doc"}}"#;
        let response = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        for body in [
            "not json",
            "{\"jsonrpc\": \"2.0\", \"method\": ",
            duplicate,
            response,
        ] {
            let read = read_call(&forwarded(None, headers.clone(), Some(body)));
            refused(&read);
        }
        let mut cut = forwarded(None, headers, None);
        let whole = call_body("read_doc");
        cut.body = Some(Body {
            bytes: whole.as_bytes(),
            truncated: true,
        });
        assert!(refused(&read_call(&cut)).contains("part"));
        // Without a claim to be MCP, a cut body is an HTTP call's.
        cut.headers = None;
        assert!(matches!(
            read_call(&cut).operation,
            Ok(Operation::Http { .. })
        ));
    }

    #[test]
    fn a_json_rpc_batch_is_refused_whatever_else_says() {
        let batch = format!("[{}, {}]", call_body("read_doc"), call_body("delete_doc"));
        for metadata in [None, Some(request("tools/call", Some("read_doc")))] {
            let read = read_call(&forwarded(metadata, None, Some(&batch)));
            assert!(refused(&read).contains("batch"));
        }
    }

    #[test]
    fn malformed_json_or_a_repeated_key_is_refused_and_a_body_over_the_limit_is_not_read() {
        let duplicate = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#;
        for body in [duplicate, "{\"jsonrpc\": \"2.0\", \"method\": ", "[1,"] {
            let read = read_call(&forwarded(None, None, Some(body)));
            assert!(refused(&read).contains("malformed JSON"), "{body}");
        }
        let huge = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_doc","arguments":"{}"}}}}"#,
            "x".repeat(MAX_BODY)
        );
        let read = read_call(&forwarded(
            None,
            Some(request("tools/call", Some("read_doc"))),
            Some(&huge),
        ));
        assert!(refused(&read).contains("larger than"));
    }

    #[test]
    fn without_mcp_anything_the_call_is_its_http_method_and_path() {
        for body in [None, Some("a=b"), Some(r#"{"query":"x"}"#)] {
            let read = read_call(&forwarded(None, None, body));
            assert_eq!(
                read.operation,
                Ok(Operation::Http {
                    method: "POST".into(),
                    path: "/mcp".into()
                })
            );
            assert!(!read.mcp);
        }
    }

    #[test]
    fn a_tool_name_that_is_no_string_is_kept_as_json_so_nothing_declared_matches_it() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["read_doc"]}}"#;
        let read = read_call(&forwarded(None, None, Some(body)));
        assert_eq!(read.operation, Ok(tool_call(r#"["read_doc"]"#)));
    }
}
