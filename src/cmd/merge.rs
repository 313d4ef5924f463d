//! `shoal merge`: one run folder from separate agent processes' folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Merge the output folders of the agents of one run that ran as separate processes
/// (`shoal agent`) into one run folder that `report` and `compare` read like any other.
///
/// Checks the folders are of one run and that no host is given twice; concatenates
/// downloads.csv (sorted by host), adds up timeseries.csv interval by interval, and rebuilds
/// summary.json (percentiles over all hosts, summed bytes and messages, efficiency against the
/// lower bound). Each agent must have pulled one image. Then writes the report unless
/// --no-report.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agents' output folders (`shoal agent --out`).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Output folder of the merged run.
    #[arg(long, default_value = "results/merged")]
    out: PathBuf,
    /// Do not write the report (report.html, report.md, figures).
    #[arg(long)]
    no_report: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    for dir in &args.dirs {
        shoal_reports::check_run_dir(dir)?;
    }
    let m = shoal_sim::output::merge(&args.dirs, &args.out)?;
    let images = &m.summary.host_images;
    let pct = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.3} s"));
    eprintln!(
        "merged {} folders: {} downloads, {} of {} hosts complete; image pull p50 {}  p99 {}  max {}",
        args.dirs.len(),
        m.rows,
        images.completed,
        m.summary.hosts,
        pct(images.p50),
        pct(images.p99),
        pct(images.max)
    );
    if !args.no_report {
        let r = shoal_reports::render(&args.out)?;
        println!("{}", r.html.display());
    } else {
        println!("{}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
