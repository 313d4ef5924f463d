//! `shoal gate`: the regression gate over `shoal_bench::gate`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use shoal_bench::gate::{self, GateConfig, GateOptions};

/// Regression gate: run the pinned scenarios of the gate config and compare their deterministic
/// metrics with the committed baselines.
///
/// Prints a Markdown table (scenario, metric, baseline, now, change) sorted by the size of the
/// change on stdout, progress on stderr. Exit status: 0 pass, 1 a metric regressed beyond its
/// tolerance, 2 bad input (config, scenario or missing baseline). Simulator speed is reported
/// as an advisory ratio and never fails the gate.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rewrite the baselines from this run (a deliberate change of behaviour).
    #[arg(long)]
    bless: bool,
    /// The gate configuration.
    #[arg(long, default_value = "bench/gate.toml")]
    config: PathBuf,
    /// Only this scenario of the config (repeatable).
    #[arg(long = "scenario", value_name = "NAME")]
    only: Vec<String>,
    /// Extra override for every scenario, to see what a change does to the gate (not with --bless).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Skip the advisory speed measurement.
    #[arg(long)]
    no_speed: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = GateConfig::load(&args.config)?;
    let options =
        GateOptions { bless: args.bless, only: args.only, extra_sets: args.sets, speed: !args.no_speed };
    let report = gate::run(&config, &options, &mut |line| eprintln!("{line}"))?;
    print!("{}", report.markdown());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
