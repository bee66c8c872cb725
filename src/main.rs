//! The `mandate` binary: parse the command line and dispatch.
#![forbid(unsafe_code)]

use anyhow::Context;
use mandate::cli::{self, Command};
use mandate::operator;

fn main() -> anyhow::Result<()> {
    // `kubectl-mandate` (the kubectl plugin) parses the same commands.
    let cli = cli::plugin::parse();
    match cli.command {
        Command::Run(args) => {
            mandate::telemetry::init_logging(args.log_format, &args.log_level)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(operator::run(args))?;
        }
        Command::Crds { out: None } => {
            print!("{}", cli::crds::print_all()?);
        }
        Command::Crds { out: Some(dir) } => {
            for path in cli::crds::write_all(&dir).context("writing CRDs")? {
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Inventory(args) => {
            client_runtime()?.block_on(cli::inventory::run(args))?;
        }
        Command::Check(args) => {
            // Exit 1: something would be refused; exit 2: the check itself failed.
            match client_runtime()?.block_on(cli::check::run(args)) {
                Ok(false) => {}
                Ok(true) => std::process::exit(1),
                Err(error) => {
                    eprintln!("Error: {error}");
                    std::process::exit(2);
                }
            }
        }
    }
    Ok(())
}

/// A small runtime for the CLI commands that talk to the API server.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
