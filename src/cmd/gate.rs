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
/// tolerance, 2 bad input (config, scenario or missing baseline). A scenario with `seeds = N`
/// runs N seeds and counts a change only when it is significant given the spread over seeds
/// (paired t-test on the same seeds, Welch's on others; Bonferroni over its metrics). Simulator
/// speed is reported as an advisory ratio and never fails the gate.
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
    /// Run seeded scenarios on seeds K+1..=K+N instead of the baseline's 1..=N: a different draw of
    /// seeds should not be flagged (not with --bless).
    #[arg(long, value_name = "K", default_value_t = 0)]
    seed_offset: u64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = GateConfig::load(&args.config)?;
    if args.bless && args.seed_offset != 0 {
        anyhow::bail!("--seed-offset: baselines are blessed on seeds 1..=N; drop --seed-offset to bless");
    }
    let options = GateOptions {
        bless: args.bless,
        only: args.only,
        extra_sets: args.sets,
        speed: !args.no_speed,
        seed_offset: args.seed_offset,
    };
    let report = gate::run(&config, &options, &mut |line| eprintln!("{line}"))?;
    print!("{}", report.markdown());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
