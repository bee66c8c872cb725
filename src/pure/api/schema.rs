//! Patterns and defaults shared by the CRD schemas. Kept in one place so the three kinds
//! refuse the same malformed names with the same words.

/// A DNS-1123 label: what Kubernetes accepts for namespaces and what mandate requires of tool
/// names.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: Kubernetes object names such as ServiceAccounts.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

pub fn default_max_depth() -> i32 {
    1
}
