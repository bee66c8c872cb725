//! The risk floor's flags, shared by `mandate run`, `mandate check` and `mandate inventory`
//! with the same names and defaults, so each judges a tool's risk as the installation does.
//! Flags in; the authority's [`RiskFloor`] out.

use clap::Args;

use crate::authority::risk::{DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX};
use crate::authority::{ActionSet, RiskFloor};

/// What makes a tool High whatever it declares (chart values `riskFloor.*`).
#[derive(Debug, Clone, Args)]
pub struct RiskFloorArgs {
    /// A tool whose external CIDRs together reach more IPv4 addresses than one prefix of this
    /// length holds is High risk (16: more than 65,536). 0 turns the IPv4 limit off.
    #[arg(
        long,
        env = "MANDATE_RISK_FLOOR_IPV4_PREFIX",
        default_value_t = DEFAULT_IPV4_PREFIX,
        value_parser = clap::value_parser!(u8).range(0..=32)
    )]
    pub risk_floor_ipv4_prefix: u8,
    /// The same for IPv6 (48). 0 turns the IPv6 limit off.
    #[arg(
        long,
        env = "MANDATE_RISK_FLOOR_IPV6_PREFIX",
        default_value_t = DEFAULT_IPV6_PREFIX,
        value_parser = clap::value_parser!(u8).range(0..=128)
    )]
    pub risk_floor_ipv6_prefix: u8,
    /// Actions (comma-separated: read, write, delete, execute) that make a tool declaring any
    /// of them High risk. Empty: none does.
    #[arg(
        long,
        env = "MANDATE_RISK_FLOOR_ACTIONS",
        default_value = "delete,execute",
        value_parser = ActionSet::parse
    )]
    pub risk_floor_actions: ActionSet,
}

impl RiskFloorArgs {
    pub fn floor(&self) -> RiskFloor {
        RiskFloor {
            ipv4_prefix: self.risk_floor_ipv4_prefix,
            ipv6_prefix: self.risk_floor_ipv6_prefix,
            actions: self.risk_floor_actions,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        floor: RiskFloorArgs,
    }

    #[test]
    fn the_flags_default_to_the_authoritys_floor() {
        let cli = Cli::try_parse_from(["mandate"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.floor.floor(), RiskFloor::default());
    }

    #[test]
    fn the_flags_set_each_limit_and_an_empty_action_list_raises_nothing() {
        let cli = Cli::try_parse_from([
            "mandate",
            "--risk-floor-ipv4-prefix=24",
            "--risk-floor-ipv6-prefix=56",
            "--risk-floor-actions=",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.floor.floor(),
            RiskFloor {
                ipv4_prefix: 24,
                ipv6_prefix: 56,
                actions: ActionSet::default(),
            }
        );
        assert!(Cli::try_parse_from(["mandate", "--risk-floor-ipv4-prefix=33"]).is_err());
        assert!(Cli::try_parse_from(["mandate", "--risk-floor-actions=drop"]).is_err());
    }
}
