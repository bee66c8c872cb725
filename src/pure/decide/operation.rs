//! Operations: what a call does (an MCP method and tool, or an HTTP method and path) in; whether
//! a tool declares it and which action it performs out. Pure: no I/O.

use crate::api::{Action, HttpMethod, Tool};

/// What a call does, as the gateway reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A JSON-RPC request to an MCP server: its method and, for `tools/call`, the tool's name.
    Mcp {
        method: String,
        tool: Option<String>,
    },
    /// A plain HTTP request: its method and path (a query is ignored).
    Http { method: String, path: String },
}

/// MCP methods that open, keep or describe a session rather than act: any agent holding an MCP
/// tool of the server may send them (they carry no action). `server/discover` is how clients of
/// protocol 2026-07-28 and later start. Everything else but `tools/call` is refused until a
/// tool can declare it.
const MCP_SESSION_METHODS: [&str; 4] = ["initialize", "server/discover", "ping", "tools/list"];
const MCP_NOTIFICATIONS: &str = "notifications/";

/// How one tool judges one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The tool declares the operation; it performs this action (None: an MCP session method).
    Declared(Option<Action>),
    /// The tool does not declare it.
    NotDeclared,
}

/// Why an operation cannot be judged at all, whatever the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl Operation {
    /// The operation as a log field: `tools/call search_orders`, `GET /v1/products`.
    pub fn describe(&self) -> String {
        match self {
            Operation::Mcp {
                method,
                tool: Some(tool),
            } => format!("{method} {tool}"),
            Operation::Mcp { method, tool: None } => method.clone(),
            Operation::Http { method, path } => format!("{method} {path}"),
        }
    }

    /// Refuses what no tool can be matched against safely: a `tools/call` without a tool name
    /// or with one MCP does not allow, an empty method, a path that is not absolute or that could climb out of a declared
    /// prefix once the server decodes it (dot segments, encoded `.` or `/`, backslashes).
    pub fn check_readable(&self) -> Result<(), Unreadable> {
        match self {
            Operation::Mcp { method, .. } if method.is_empty() => {
                Err(Unreadable("the call names no MCP method".into()))
            }
            Operation::Mcp { method, tool }
                if method == "tools/call" && tool.as_deref().is_none_or(str::is_empty) =>
            {
                Err(Unreadable(
                    "the MCP tools/call names no tool (params.name)".into(),
                ))
            }
            Operation::Mcp {
                method,
                tool: Some(tool),
            } if method == "tools/call" && !is_mcp_tool_name(tool) => Err(Unreadable(format!(
                "the MCP tools/call names {tool:?}, which is no MCP tool name (1 to 128 of A-Z, a-z, 0-9, _, -, . and /)"
            ))),
            Operation::Mcp { .. } => Ok(()),
            Operation::Http { method, .. } if method.is_empty() => {
                Err(Unreadable("the call names no HTTP method".into()))
            }
            Operation::Http { path, .. } => check_path(path_only(path)),
        }
    }

    /// Whether `tool` declares this operation, and its action. Call [`Self::check_readable`]
    /// first.
    pub fn match_tool(&self, tool: &Tool) -> Match {
        match self {
            Operation::Mcp { method, tool: name } => {
                let Some(mcp) = &tool.mcp else {
                    return Match::NotDeclared;
                };
                if MCP_SESSION_METHODS.contains(&method.as_str())
                    || method.starts_with(MCP_NOTIFICATIONS)
                {
                    return Match::Declared(None);
                }
                match (method.as_str(), name) {
                    ("tools/call", Some(name)) => mcp
                        .tools
                        .iter()
                        .find(|entry| pattern_matches(&entry.name, name))
                        .map_or(Match::NotDeclared, |entry| {
                            Match::Declared(Some(entry.action.unwrap_or(Action::Write)))
                        }),
                    _ => Match::NotDeclared,
                }
            }
            Operation::Http { method, path } => {
                let Some(method) = HttpMethod::parse(method) else {
                    return Match::NotDeclared;
                };
                let path = path_only(path);
                let declared = tool.http.iter().any(|op| {
                    op.methods.contains(&method)
                        && op.paths.iter().any(|p| pattern_matches(p, path))
                });
                if declared {
                    Match::Declared(Some(method.action()))
                } else {
                    Match::NotDeclared
                }
            }
        }
    }
}

/// Whether `name` is spelled as MCP tool names are (and declared ones are matched): a name
/// with a comma, a space or a `*` could be two headers joined, or match a prefix pattern it
/// was never meant to.
fn is_mcp_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

/// The path without its query or fragment.
fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

fn check_path(path: &str) -> Result<(), Unreadable> {
    if !path.starts_with('/') {
        return Err(Unreadable(format!("the path {path:?} is not absolute")));
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "\\"]
        .iter()
        .any(|s| lower.contains(s))
    {
        return Err(Unreadable(format!(
            "the path {path:?} encodes '.', '/' or '\\': the server could read it as another path"
        )));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(Unreadable(format!(
            "the path {path:?} has a '.' or '..' segment: normalize paths in the gateway"
        )));
    }
    Ok(())
}

/// `*` matches everything; a pattern ending in `*` matches what starts with the rest; any
/// other pattern matches itself only.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}
