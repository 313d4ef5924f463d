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
    let socket = sizing::estimate(&s, sizing::EngineKind::Real);
    println!(
        "sizing: --engine turmoil or real: estimated peak memory {} (every node keeps its blobs' bytes)",
        sizing::human_bytes(socket.peak_bytes)
    );
    if let Some(a) = sizing::available_memory() {
        println!("sizing: {} available on this machine", sizing::human_bytes(a));
    }
    for e in &s.extremes {
        println!("warning: {e} (shoal run refuses it unless --force)");
    }
    Ok(ExitCode::SUCCESS)
}
