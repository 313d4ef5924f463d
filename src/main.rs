//! `shoal`: run scenarios and sweeps of them, print their lower bound, render reports, compare runs and gate on
//! baselines. The logic lives in the library crates (`shoal-sim`, `shoal-reports`,
//! `shoal-bench`); each subcommand's module in `cmd/` parses its arguments, calls them, prints,
//! and maps errors to exit codes: 0 success, 1 a run or gate that failed (downloads failed or
//! unfinished, a regression), 2 bad input.

mod cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A simulation and benchmarking harness for peer-to-peer container registries (Uber Kraken's
/// agent, origin and tracker protocols, and BitTorrent, Dragonfly and origin-only policies on the
/// same nodes, replayed at scale).
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    /// Log what the engines do on stderr: -v run starts and ends, -vv every dial and close of
    /// the socket engines, -vvv everything. `RUST_LOG` (e.g. `RUST_LOG=shoal_sim=debug`) takes
    /// precedence when set.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(cmd::run::Args),
    Sweep(cmd::sweep::Args),
    Report(cmd::report::Args),
    Compare(cmd::compare::Args),
    Merge(cmd::merge::Args),
    Gate(cmd::gate::Args),
    Agent(cmd::node::AgentArgs),
    Origin(cmd::node::OriginArgs),
    Tracker(cmd::node::TrackerArgs),
    Bound(cmd::bound::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run(args) => cmd::run::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Merge(args) => cmd::merge::run(args),
        Command::Gate(args) => cmd::gate::run(args),
        Command::Agent(args) => cmd::node::agent(args),
        Command::Origin(args) => cmd::node::origin(args),
        Command::Tracker(args) => cmd::node::tracker(args),
        Command::Bound(args) => cmd::bound::run(args),
    }
}

/// Events of the `tracing` crate on stderr, filtered by `RUST_LOG` or else by `-v`; with
/// neither, no subscriber is installed and the libraries' events cost a relaxed load each.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => match verbose {
            0 => return,
            1 => EnvFilter::new("info"),
            2 => EnvFilter::new("debug"),
            _ => EnvFilter::new("trace"),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .without_time()
        .init();
}
