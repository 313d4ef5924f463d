//! `shoal report`: (re)render the report of run folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Render the report of each run folder in place: report.html (self-contained), report.md and
/// its PNG figures.
///
/// Reads only downloads.csv, timeseries.csv and summary.json, so runs produced elsewhere in the
/// same format (docs/outputs.md) render too.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folders, each holding downloads.csv, timeseries.csv and summary.json.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    for dir in &args.dirs {
        let r = shoal_reports::render(dir)?;
        println!("{}", r.html.display());
    }
    Ok(ExitCode::SUCCESS)
}
