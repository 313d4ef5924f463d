//! `shoal bound`: a scenario's physical lower bound.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use shoal_sim::scenario::Scenario;
use shoal_sim::sizing;

/// Print the physical lower bound of a scenario, term by term, and what a run of it is estimated
/// to cost (peak memory and events on each engine), with any legal-but-extreme value it holds.
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
    println!("{}", s.lower_bound().to_string().trim_end());
    let des = sizing::estimate(&s, sizing::EngineKind::Des);
    println!("sizing: --engine des: {des}; {} connections per torrent per agent", des.conns_per_torrent);
    let turmoil = sizing::estimate(&s, sizing::EngineKind::Turmoil);
    println!(
        "sizing: --engine turmoil: estimated peak memory {} (every node keeps its blobs' bytes)",
        sizing::human_bytes(turmoil.peak_bytes)
    );
    let real = sizing::estimate(&s, sizing::EngineKind::Real);
    println!(
        "sizing: --engine real: estimated peak memory {} (buffers per connection), and {} on disk \
         (every blob once, plus every host's copies)",
        sizing::human_bytes(real.peak_bytes),
        sizing::human_bytes(shoal_sim::driver::store::disk_bytes_needed(&s))
    );
    if let Some(a) = sizing::available_memory() {
        println!("sizing: {} available on this machine", sizing::human_bytes(a));
    }
    for e in &s.extremes {
        println!("warning: {e} (shoal run refuses it unless --force)");
    }
    Ok(ExitCode::SUCCESS)
}
