//! The risk floor: a tool and the installation's [`RiskFloor`] in; its effective risk out, the
//! declared one raised to High when what the tool reaches or does is too much for Low, with the
//! reasons ([`ToolRisk`]). One function ([`RiskFloor::assess`]) for the validator (and so the
//! reconciler and the binding's status), admission's four eyes, `mandate check` and `mandate
//! inventory`. Pure: no I/O.
//!
//! What raises a tool to High:
//! - an `external` destination whose CIDRs together (overlaps counted once, per family) reach
//!   more addresses than one prefix of the configured length holds (IPv4 /16: more than 65,536;
//!   IPv6 /48). IPv4 reached through IPv6 (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`)
//!   counts as IPv4. A CIDR that cannot be read raises the tool too (fail closed);
//! - a `pods` destination whose namespaceSelector, when present, names no label value, or
//!   whose podSelector names none: a selector narrows only through the values it names
//!   (matchLabels, or an `In` expression); one without (empty, or only `Exists`, `NotIn`,
//!   `DoesNotExist`) picks every namespace or every pod, and `Exists` on
//!   `mandate.dev/agent` would pick every agent. An absent namespaceSelector means the
//!   ToolBinding's own namespace and is not raised;
//! - a declared action in the configured set (by default `delete` and `execute`).
//!
//! Service destinations name one Service; `kubernetesAPI` destinations are not projected yet
//! and are not raised here.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{Action, ExternalDestination, PodsDestination, Risk, Tool};

/// The installation's floor under declared risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskFloor {
    /// A tool whose IPv4 CIDRs reach more addresses than one prefix of this length holds is
    /// High (16: more than 65,536). 0: no IPv4 span is too wide.
    pub ipv4_prefix: u8,
    /// The same for IPv6 (48). 0: no IPv6 span is too wide.
    pub ipv6_prefix: u8,
    /// A tool declaring any of these actions is High.
    pub actions: ActionSet,
}

/// The default IPv4 limit: more addresses than a /16 (65,536) is High.
pub const DEFAULT_IPV4_PREFIX: u8 = 16;
/// The default IPv6 limit: more addresses than a /48 (one site's allocation) is High.
pub const DEFAULT_IPV6_PREFIX: u8 = 48;
/// The actions that make a tool High by default.
pub const DEFAULT_HIGH_ACTIONS: [Action; 2] = [Action::Delete, Action::Execute];

impl Default for RiskFloor {
    fn default() -> Self {
        RiskFloor {
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            actions: ActionSet::of(DEFAULT_HIGH_ACTIONS),
        }
    }
}

/// A set of actions, small enough to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionSet(u8);

impl ActionSet {
    pub fn of(actions: impl IntoIterator<Item = Action>) -> Self {
        ActionSet(actions.into_iter().fold(0, |bits, a| bits | bit(a)))
    }

    pub fn contains(self, action: Action) -> bool {
        self.0 & bit(action) != 0
    }

    /// The actions in the set, in [`Action::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Reads a comma-separated list (`delete,execute`); empty: no action.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                Action::parse(name).ok_or_else(|| {
                    format!("{name:?} is not an action (read, write, delete, execute)")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ActionSet::of)
    }
}

impl fmt::Display for ActionSet {
    /// `delete,execute`, as [`ActionSet::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

fn bit(action: Action) -> u8 {
    match action {
        Action::Read => 1,
        Action::Write => 2,
        Action::Delete => 4,
        Action::Execute => 8,
    }
}

/// A tool's risk: as declared, as it counts, and why the floor raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRisk {
    pub declared: Risk,
    /// The higher of the declared risk and the floor.
    pub effective: Risk,
    /// Why the floor makes the tool High (empty: it does not).
    pub floor: Vec<String>,
}

impl ToolRisk {
    pub fn is_high(&self) -> bool {
        self.effective == Risk::High
    }

    /// Whether the floor, not the declaration, makes the tool High.
    pub fn raised(&self) -> bool {
        self.declared == Risk::Low && self.is_high()
    }

    /// How messages call a High tool `name`: `tool pay is High risk`, or `tool web is High by
    /// the risk floor (<why>) though declared Low`.
    pub fn describe(&self, name: &str) -> String {
        if self.raised() {
            format!(
                "tool {name} is High by the risk floor ({}) though declared Low",
                self.floor.join("; ")
            )
        } else {
            format!("tool {name} is High risk")
        }
    }
}

impl RiskFloor {
    /// The effective risk of `tool`.
    pub fn assess(&self, tool: &Tool) -> ToolRisk {
        let floor = self.reasons(tool);
        let effective = if floor.is_empty() {
            tool.risk
        } else {
            Risk::High
        };
        ToolRisk {
            declared: tool.risk,
            effective,
            floor,
        }
    }

    /// Why `tool` is High whatever it declares (empty: the floor is Low).
    pub fn reasons(&self, tool: &Tool) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(external) = &tool.destination.external {
            reasons.extend(self.external(external));
        }
        if let Some(pods) = &tool.destination.pods {
            reasons.extend(pods_reasons(pods));
        }
        let high: Vec<&str> = tool
            .actions
            .iter()
            .filter(|a| self.actions.contains(**a))
            .map(|a| a.as_str())
            .collect();
        if !high.is_empty() {
            reasons.push(format!("it declares {}", high.join(", ")));
        }
        reasons
    }

    fn external(&self, external: &ExternalDestination) -> Vec<String> {
        let mut reasons = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in &external.cidrs {
            match parse_cidr(cidr) {
                Some(Block::V4(range)) => v4.push(range),
                Some(Block::V6(range)) => {
                    v4.extend(EMBEDDED_IPV4.iter().filter_map(|prefix| {
                        let start = range.0.max(prefix.0);
                        let end = range.1.min(prefix.1);
                        (start <= end).then(|| (start - prefix.0, end - prefix.0))
                    }));
                    v6.push(range);
                }
                None => reasons.push(format!("CIDR {cidr:?} cannot be read")),
            }
        }
        for (family, ranges, bits, prefix) in [
            ("IPv4", v4, 32u32, self.ipv4_prefix),
            ("IPv6", v6, 128, self.ipv6_prefix),
        ] {
            let reached = span(ranges);
            let prefix_bits = u32::from(prefix);
            let limit = (1..=bits)
                .contains(&prefix_bits)
                .then(|| 1u128 << (bits - prefix_bits));
            if let Some(limit) = limit
                && reached > limit
            {
                let count = if family == "IPv4" {
                    grouped(reached)
                } else {
                    format!("about 2^{}", 127 - reached.leading_zeros())
                };
                reasons.push(format!(
                    "its CIDRs reach {count} {family} addresses, more than a /{prefix} holds"
                ));
            }
        }
        reasons
    }
}

/// Why a pods destination reaches every namespace or every pod.
fn pods_reasons(pods: &PodsDestination) -> Vec<String> {
    let every_namespace = pods
        .namespace_selector
        .as_ref()
        .is_some_and(|s| !names_a_value(s));
    let mut reasons = Vec::new();
    if every_namespace {
        reasons.push(
            "its namespaceSelector names no label value, so it picks every namespace".to_owned(),
        );
    }
    if !names_a_value(&pods.pod_selector) {
        let whose = if pods.namespace_selector.is_some() {
            "of the namespaces it picks"
        } else {
            "of the ToolBinding's namespace"
        };
        reasons.push(format!(
            "its podSelector names no label value, so it picks every pod {whose}"
        ));
    }
    reasons
}

/// Whether a selector narrows through a value it names: a matchLabels entry or an `In`
/// expression with values. The requirements are ANDed, so one such is enough.
fn names_a_value(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_some_and(|l| !l.is_empty())
        || selector
            .match_expressions
            .iter()
            .flatten()
            .any(|e| e.operator == "In" && e.values.as_ref().is_some_and(|v| !v.is_empty()))
}

/// One CIDR as an inclusive range of addresses.
enum Block {
    V4((u128, u128)),
    V6((u128, u128)),
}

/// IPv6 prefixes through which IPv4 is reached: IPv4-mapped (`::ffff:0:0/96`) and NAT64's
/// well-known prefix (`64:ff9b::/96`), as inclusive ranges.
const EMBEDDED_IPV4: [(u128, u128); 2] = [
    (0xffff_0000_0000, 0xffff_ffff_ffff),
    (
        0x0064_ff9b_0000_0000_0000_0000_0000_0000,
        0x0064_ff9b_0000_0000_0000_0000_ffff_ffff,
    ),
];

/// Reads `a.b.c.d/n` or `x::/n` (host bits ignored, as the network they lie in is reached).
fn parse_cidr(cidr: &str) -> Option<Block> {
    let (address, prefix) = cidr.trim().split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) if prefix <= 32 => {
            Some(Block::V4(range(u128::from(ip.to_bits()), prefix, 32)))
        }
        IpAddr::V6(ip) if prefix <= 128 => Some(Block::V6(range(ip.to_bits(), prefix, 128))),
        _ => None,
    }
}

/// The inclusive range of the `prefix`-bit network of `address` in a `bits`-bit family.
fn range(address: u128, prefix: u32, bits: u32) -> (u128, u128) {
    let host_bits = bits - prefix;
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (address & !host_mask, address | host_mask)
}

/// How many addresses inclusive ranges reach together, overlaps counted once (saturating at
/// `u128::MAX`, which only `::/0` reaches).
fn span(mut ranges: Vec<(u128, u128)>) -> u128 {
    ranges.sort_unstable();
    let mut total: u128 = 0;
    let mut current: Option<(u128, u128)> = None;
    for (start, end) in ranges {
        current = match current {
            Some((s, e)) if start <= e.saturating_add(1) => Some((s, e.max(end))),
            Some((s, e)) => {
                total = total.saturating_add((e - s).saturating_add(1));
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total = total.saturating_add((e - s).saturating_add(1));
    }
    total
}

/// `2147483648` as `2,147,483,648`.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;
    use crate::authority::fixtures::tool;

    fn floor() -> RiskFloor {
        RiskFloor::default()
    }

    fn external(cidrs: &[&'static str]) -> ToolRisk {
        floor().assess(&tool("t").external(cidrs.iter().copied(), [443]).build())
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..LabelSelector::default()
        }
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..LabelSelector::default()
        }
    }

    fn pods(namespaces: Option<LabelSelector>, pods: LabelSelector) -> ToolRisk {
        floor().assess(&tool("t").pods(namespaces, pods, []).build())
    }

    #[test]
    fn two_halves_of_the_ipv4_internet_are_high_by_the_floor() {
        let risk = external(&["0.0.0.0/1", "128.0.0.0/1"]);
        assert_eq!(risk.effective, Risk::High);
        assert!(risk.raised());
        assert_eq!(
            risk.floor,
            ["its CIDRs reach 4,294,967,296 IPv4 addresses, more than a /16 holds"]
        );
        assert!(
            risk.describe("t")
                .starts_with("tool t is High by the risk floor (its CIDRs reach"),
            "{}",
            risk.describe("t")
        );
    }

    #[test]
    fn a_slash_16_is_low_and_two_of_them_are_high() {
        assert_eq!(external(&["10.1.0.0/16"]).effective, Risk::Low);
        assert_eq!(
            external(&["10.1.0.0/16", "10.2.0.0/16"]).effective,
            Risk::High
        );
        // Overlaps count once: a /16 and a /24 inside it reach 65,536.
        assert_eq!(
            external(&["10.1.0.0/16", "10.1.2.0/24", "10.1.0.0/17"]).effective,
            Risk::Low
        );
        // Host bits do not narrow the network reached.
        assert_eq!(external(&["10.1.2.3/15"]).effective, Risk::High);
    }

    #[test]
    fn ipv6_counts_on_its_own_and_ipv4_reached_through_ipv6_counts_as_ipv4() {
        assert_eq!(external(&["2001:db8:1::/48"]).effective, Risk::Low);
        let wide = external(&["2001:db8::/47"]);
        assert_eq!(
            wide.floor,
            ["its CIDRs reach about 2^81 IPv6 addresses, more than a /48 holds"]
        );
        assert_eq!(external(&["::/0"]).effective, Risk::High);
        // The whole IPv4 internet as IPv4-mapped or NAT64 addresses is a small IPv6 block.
        for cidr in ["::ffff:0:0/96", "64:ff9b::/96", "::/64"] {
            let risk = external(&[cidr]);
            assert_eq!(
                risk.floor,
                ["its CIDRs reach 4,294,967,296 IPv4 addresses, more than a /16 holds"],
                "{cidr}"
            );
        }
        // A v4 /16 and a v6 /48 are each within their family's limit.
        assert_eq!(
            external(&["10.0.0.0/16", "2001:db8::/48"]).effective,
            Risk::Low
        );
    }

    #[test]
    fn a_cidr_that_cannot_be_read_raises_the_tool() {
        let risk = external(&["10.0.0.0/33"]);
        assert_eq!(risk.floor, ["CIDR \"10.0.0.0/33\" cannot be read"]);
    }

    #[test]
    fn the_limits_are_configurable_and_zero_turns_one_off() {
        let narrow = RiskFloor {
            ipv4_prefix: 24,
            ..floor()
        };
        let t = tool("t").external(["10.0.0.0/23"], []).build();
        assert_eq!(narrow.assess(&t).effective, Risk::High);
        let off = RiskFloor {
            ipv4_prefix: 0,
            ..floor()
        };
        let all = tool("t").external(["0.0.0.0/1"], []).build();
        assert_eq!(off.assess(&all).effective, Risk::Low);
    }

    #[test]
    fn a_pods_destination_picking_every_namespace_or_every_pod_is_high() {
        let web = labels(&[("app", "web")]);
        assert_eq!(pods(None, web.clone()).effective, Risk::Low);
        let everywhere = pods(Some(LabelSelector::default()), web.clone());
        assert_eq!(
            everywhere.floor,
            ["its namespaceSelector names no label value, so it picks every namespace"]
        );
        let every_pod = pods(None, LabelSelector::default());
        assert_eq!(
            every_pod.floor,
            [
                "its podSelector names no label value, so it picks every pod of the ToolBinding's namespace"
            ]
        );
        // Selectors that only exclude or only ask for a key pick (nearly) everything.
        for selector in [
            expression("kubernetes.io/metadata.name", "Exists", &[]),
            expression("kubernetes.io/metadata.name", "NotIn", &["kube-system"]),
            expression("tier", "DoesNotExist", &[]),
        ] {
            assert!(
                pods(Some(selector.clone()), web.clone()).is_high(),
                "{selector:?}"
            );
        }
        assert!(pods(None, expression("mandate.dev/agent", "Exists", &[])).is_high());
        let named = expression("kubernetes.io/metadata.name", "In", &["tools"]);
        assert_eq!(pods(Some(named), web).effective, Risk::Low);
    }

    #[test]
    fn declaring_a_configured_action_is_high() {
        let delete = tool("t").actions([Action::Read, Action::Delete]).build();
        assert_eq!(floor().assess(&delete).floor, ["it declares delete"]);
        let write = tool("t").actions([Action::Write]).build();
        assert_eq!(floor().assess(&write).effective, Risk::Low);
        let strict = RiskFloor {
            actions: ActionSet::of([Action::Write]),
            ..floor()
        };
        assert!(strict.assess(&write).is_high());
    }

    #[test]
    fn a_declared_high_tool_stays_high_without_floor_reasons() {
        let risk = floor().assess(&tool("t").high().build());
        assert_eq!((risk.effective, risk.raised()), (Risk::High, false));
        assert_eq!(risk.describe("t"), "tool t is High risk");
    }

    #[test]
    fn action_sets_read_and_print_as_lists() {
        assert_eq!(
            ActionSet::parse("delete, execute"),
            Ok(ActionSet::of(DEFAULT_HIGH_ACTIONS))
        );
        assert_eq!(ActionSet::parse(""), Ok(ActionSet::default()));
        assert!(ActionSet::parse("destroy").is_err());
        assert_eq!(
            ActionSet::of(DEFAULT_HIGH_ACTIONS).to_string(),
            "delete,execute"
        );
    }
}
