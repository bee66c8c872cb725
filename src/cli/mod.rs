//! The command line: argument types (clap) and the subcommands (`crds`, `inventory`, `check`;
//! `run` starts the operator, `crate::operator` in the shell). `main.rs` parses, sets up
//! telemetry and dispatches here.

pub mod check;
pub mod cluster;
pub mod crds;
pub mod inventory;
pub mod manifests;
pub mod plugin;
pub mod render;
pub mod report;
pub mod risk_floor;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admission::Mode;

/// Accountable owners, workload identity, time-bounded tools and bounded delegation for AI
/// agents on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant (run's flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers, the admission webhook and the admin server.
    Run(crate::operator::RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind.
    Crds {
        /// Write `<plural>.mandate.dev.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List every agent with its owner, class, SPIFFE ID, live tools and delegation, the
    /// escalation paths, and what is unmanaged, from the cluster in the kubeconfig.
    Inventory(inventory::InventoryArgs),
    /// Predict the admission decisions for manifests (offline, or with --cluster) with the
    /// webhook's own rules; exits 1 when anything would be refused.
    Check(check::CheckArgs),
}

/// `enforce`, `warn` or `audit`, for the flags that take an admission mode.
pub(crate) fn parse_mode(value: &str) -> Result<Mode, String> {
    Mode::parse(value).ok_or_else(|| format!("{value:?} is not one of enforce, warn, audit"))
}
