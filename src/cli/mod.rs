//! The command line: argument types (clap) and the subcommands that need no cluster.
//! `main.rs` parses, sets up telemetry and dispatches here.

pub mod crds;
pub mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind.
    Crds {
        /// Write `<plural>.mandate.dev.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}
