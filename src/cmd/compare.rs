//! `shoal compare`: runs side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Compare runs: overlaid CDFs of per-host image completion and a table of p50, p99, p99.9,
/// max, origin egress and efficiency, each with its ratio to the first run.
///
/// Writes compare.html (self-contained), compare.md and compare-cdf.png.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folders; the first is the baseline.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "results/compare")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let c = shoal_reports::compare(&args.dirs, &args.out)?;
    if !c.comparison.same_scenario() {
        eprintln!("note: the runs are of different scenarios");
    }
    println!("{}", c.html.display());
    Ok(ExitCode::SUCCESS)
}
