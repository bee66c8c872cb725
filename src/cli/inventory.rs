//! `mandate inventory`: the cluster in the kubeconfig in; the report of every agent, its
//! tools and delegation, the unmanaged objects and the expiring tools out, as a table, JSON,
//! YAML, a Graphviz dot graph or a Mermaid flowchart. Reads the cluster (lists only); the
//! report itself is `report::build`, a pure function of what was listed and the time.

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::cluster::{self, FetchError, Namespaces};
use super::render;
use super::report::{self, DurationError, Report};
use super::risk_floor::RiskFloorArgs;
use crate::authority;

/// Arguments of `mandate inventory`.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// Only this namespace (default: the kubeconfig context's namespace).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = InventoryOutput::Table)]
    pub output: InventoryOutput,
    /// List live tools whose grant ends within this time (for example 24h, 90m, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = report::parse_duration)]
    pub expiring: SignedDuration,
    /// How far ahead a High-risk tool's validUntil may lie, in hours (as `mandate run` is
    /// configured): a binding breaking it grants nothing.
    #[arg(long, default_value_t = 24)]
    pub max_high_risk_hours: i64,
    #[command(flatten)]
    pub risk_floor: RiskFloorArgs,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// Output formats of `mandate inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryOutput {
    Table,
    Json,
    Yaml,
    Dot,
    Mermaid,
}

/// Why `mandate inventory` failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("--expiring: {0}")]
    Horizon(#[from] DurationError),
    #[error("rendering the report as {format}: {message}")]
    Render {
        format: &'static str,
        message: String,
    },
}

/// Lists the cluster and prints the report on stdout.
pub async fn run(args: InventoryArgs) -> Result<(), InventoryError> {
    let (client, server) = cluster::connect(args.context.as_deref()).await?;
    let scope = if args.all_namespaces {
        Namespaces::All
    } else {
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Namespaces::Only(vec![namespace])
    };
    let objects = cluster::fetch(&client, &server, &scope).await?;
    let config = authority::Config {
        max_high_risk_validity: SignedDuration::from_hours(args.max_high_risk_hours),
        risk_floor: args.risk_floor.floor(),
    };
    let report = report::build(&objects, config, Timestamp::now(), args.expiring);
    print!("{}", render_as(&report, args.output)?);
    Ok(())
}

/// The report in `format`.
pub fn render_as(report: &Report, format: InventoryOutput) -> Result<String, InventoryError> {
    Ok(match format {
        InventoryOutput::Table => render::table(report, render::TABLE_WIDTH),
        InventoryOutput::Json => {
            let mut text =
                serde_json::to_string_pretty(report).map_err(|e| InventoryError::Render {
                    format: "JSON",
                    message: e.to_string(),
                })?;
            text.push('\n');
            text
        }
        InventoryOutput::Yaml => {
            serde_yaml::to_string(report).map_err(|e| InventoryError::Render {
                format: "YAML",
                message: e.to_string(),
            })?
        }
        InventoryOutput::Dot => render::dot(report),
        InventoryOutput::Mermaid => render::mermaid(report),
    })
}
