//! DelegationPolicy: which agents one agent may hand work to, with which of its tools, and how
//! far that authority may travel; and the status the reconciler reports (safety, violations).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{DNS_LABEL, DNS_SUBDOMAIN, default_max_depth};

/// Lets one agent delegate work to others, handing on only tools it holds itself.
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mandate.dev",
    version = "v1alpha1",
    kind = "DelegationPolicy",
    namespaced,
    status = "DelegationPolicyStatus",
    shortname = "dp",
    category = "mandate",
    derive = "PartialEq",
    doc = "DelegationPolicy lets one AgentIdentity (the delegator) hand work to other agents in its namespace, exercising only tools that both it and the delegate hold, for at most maxDepth further hops.",
    printcolumn(name = "Delegator", type_ = "string", json_path = ".spec.delegator"),
    printcolumn(name = "Max Depth", type_ = "integer", json_path = ".spec.maxDepth"),
    printcolumn(
        name = "Safe",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Safe\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.delegates.all(d, d.agent != self.delegator)").message("an agent cannot delegate to itself").field_path(".delegates"))]
#[serde(rename_all = "camelCase")]
pub struct DelegationPolicySpec {
    /// The AgentIdentity, in this namespace, that hands work on.
    #[schemars(length(min = 1, max = 63), pattern(DNS_SUBDOMAIN))]
    pub delegator: String,
    /// The agents it may hand work to, 1 to 32, each at most once.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["agent".into()]))]
    pub delegates: Vec<Delegate>,
    /// How many hops this authority may travel from the delegator (1 to 8, default 1: the
    /// delegates may not hand it further).
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 1, max = 8))]
    pub max_depth: i32,
    /// When the policy ends (RFC 3339). Absent: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
}

/// One agent a delegator may hand work to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    /// The delegate AgentIdentity, in this namespace (cross-namespace delegation is not
    /// supported in v1alpha1).
    #[schemars(length(min = 1, max = 63), pattern(DNS_SUBDOMAIN))]
    pub agent: String,
    /// The tools the delegator may exercise through this delegate. Each must be a live tool
    /// of both the delegator and the delegate.
    #[schemars(
        length(min = 1, max = 64),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub tools: Vec<String>,
}

/// What the reconciler last observed for a DelegationPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DelegationPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted and Safe.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Escalation paths, cycles and depth violations this policy takes part in, as readable
    /// chains.
    #[serde(default)]
    pub violations: Vec<String>,
}
