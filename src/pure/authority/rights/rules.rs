//! A role's rules against the dangerous list: PolicyRules in; out, every dangerous right they
//! grant and on which names (all, or those the rules list). Matches exactly as the API
//! server's RBAC authorizer does (`RuleAllows` in kubernetes' `plugin/pkg/auth/authorizer/rbac`
//! with the helpers of `pkg/apis/rbac/v1/evaluation_helpers.go`): verbs and API groups match
//! themselves or `*`; a resource matches itself, `*`, or `*/<subresource>` for a subresource
//! request; a rule with resourceNames matches only those names. Pure: never does I/O.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::danger::{Right, Sub, Target};

/// The names a right is granted on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Names {
    /// Every object (the rule lists no resourceNames).
    All,
    /// Only these (sorted, never empty).
    Only(BTreeSet<String>),
}

impl Names {
    /// The names two grants together give.
    fn union(self, other: Names) -> Names {
        match (self, other) {
            (Names::Only(mut a), Names::Only(b)) => {
                a.extend(b);
                Names::Only(a)
            }
            _ => Names::All,
        }
    }
}

/// A dangerous right a role grants, and on which names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Granted {
    pub right: Right,
    pub names: Names,
}

/// Every dangerous right `rules` grant, once each (names merged across rules), in the list's
/// order. Rules for non-resource URLs grant none.
pub fn dangerous_rights(rules: &[PolicyRule]) -> Vec<Granted> {
    let mut granted: Vec<Granted> = Vec::new();
    for right in Right::all() {
        let names = rules
            .iter()
            .filter_map(|rule| names_granted(rule, right))
            .reduce(Names::union);
        if let Some(names) = names {
            granted.push(Granted { right, names });
        }
    }
    granted
}

/// The names `rule` grants `right` on, if it grants it at all.
fn names_granted(rule: &PolicyRule, right: Right) -> Option<Names> {
    let target = right.target();
    let allows = matches_word(&rule.verbs, right.verb())
        && rule
            .api_groups
            .as_deref()
            .is_some_and(|groups| matches_word(groups, target.group))
        && rule
            .resources
            .as_deref()
            .is_some_and(|resources| resources.iter().any(|r| resource_matches(r, target)));
    if !allows {
        return None;
    }
    match rule.resource_names.as_deref() {
        None | Some([]) => Some(Names::All),
        Some(_) if !right.can_be_limited_to_names() => None,
        Some(names) => Some(Names::Only(names.iter().cloned().collect())),
    }
}

/// `VerbMatches` and `APIGroupMatches`: the word itself or `*`.
fn matches_word(words: &[String], wanted: &str) -> bool {
    words.iter().any(|w| w == "*" || w == wanted)
}

/// `ResourceMatches` for the target's request: `*`, the exact `resource[/subresource]`, or
/// `*/subresource` when the request has a subresource. For [`Sub::Any`] (some subresource,
/// whichever), any rule resource that would match some subresource of it.
fn resource_matches(rule_resource: &str, target: &Target) -> bool {
    if rule_resource == "*" {
        return true;
    }
    match target.sub {
        Sub::None => rule_resource == target.resource,
        Sub::Named(sub) => {
            rule_resource
                .strip_prefix(target.resource)
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(sub)
                || rule_resource.strip_prefix("*/") == Some(sub)
        }
        Sub::Any => {
            let some_sub = |rest: Option<&str>| rest.is_some_and(|sub| !sub.is_empty());
            some_sub(
                rule_resource
                    .strip_prefix(target.resource)
                    .and_then(|rest| rest.strip_prefix('/')),
            ) || some_sub(rule_resource.strip_prefix("*/"))
        }
    }
}
