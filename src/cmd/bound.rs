//! `shoal bound`: a scenario's physical lower bound.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use shoal_sim::scenario::Scenario;

/// Print the physical lower bound of a scenario, term by term.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML; see scenarios/README.md).
    scenario: PathBuf,
    /// Override any scenario field, as `shoal run --set` does.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let s = Scenario::load_with_sets(&args.scenario, &args.sets)?;
    print!("{}", s.lower_bound());
    Ok(ExitCode::SUCCESS)
}
