//! Patterns and defaults shared by the CRD schemas. Kept in one place so the three kinds
//! refuse the same malformed names with the same words.

/// A DNS-1123 label: what Kubernetes accepts for namespaces and what mandate requires of tool
/// names.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: Kubernetes object names such as ServiceAccounts.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An MCP tool name (letters, digits, `_`, `-`, `.`, `/`, as the MCP specification allows),
/// optionally ending in `*`, or `*` alone.
pub const MCP_TOOL_NAME: &str = r"^[A-Za-z0-9_./-]*\*?$";
/// An HTTP path a tool exposes: starts with `/`, no query or fragment, `*` only at the end.
pub const HTTP_PATH: &str = r"^/[^?#*\s]*\*?$";
/// A token audience: no whitespace.
pub const AUDIENCE: &str = r"^\S+$";

pub fn default_max_depth() -> i32 {
    1
}
