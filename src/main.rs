//! The `mandate` binary: parse the command line and dispatch.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use mandate::cli::{self, Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            mandate::telemetry::init_logging(args.log_format, &args.log_level)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(cli::run::run(args))?;
        }
        Command::Crds { out: None } => {
            print!("{}", cli::crds::print_all()?);
        }
        Command::Crds { out: Some(dir) } => {
            for path in cli::crds::write_all(&dir).context("writing CRDs")? {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
