//! `shoal agent`, `shoal origin`, `shoal tracker`: one node of a scenario as its own process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant as WallClock;

use anyhow::{Context, Result};
use shoal_sim::driver::{self, process};
use shoal_sim::scenario::Scenario;

/// Run one agent of a scenario as its own process (nodes on separate processes or machines).
///
/// Start one `shoal tracker`, `shoal origin` and `shoal agent` process per node of the
/// scenario, all with the same scenario, seed, --set overrides and addresses. The agent starts
/// its pulls at the scenario's times on its own clock (from when it starts), downloads and
/// verifies the blobs (CRC32 per piece, SHA-256 per blob), writes its own rows of
/// downloads.csv (and a summary of its pulls only) into --out, and exits: 0 when every
/// download completed, 1 otherwise. `shoal merge` makes one run folder of the agents' folders.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Output folder for this agent's downloads.csv, timeseries.csv, summary.json, perf.json
    /// (default: `results/<scenario>-<seed>-agent<INDEX>/`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run one origin of a scenario as its own process; it serves until --max-time-s (or is
/// killed). See `shoal agent --help`.
#[derive(Debug, clap::Args)]
pub struct OriginArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Run one tracker of a scenario as its own process; it serves until --max-time-s (or is
/// killed). See `shoal agent --help`.
#[derive(Debug, clap::Args)]
pub struct TrackerArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub fn agent(AgentArgs { node, out }: AgentArgs) -> Result<ExitCode> {
    let started = WallClock::now();
    let run = node.run(process::Role::Agent(node.index))?.context("an agent run")?;
    let report = run.report(started.elapsed().as_secs_f64());
    let out = out.unwrap_or_else(|| {
        PathBuf::from(format!("results/{}-{}-agent{}", run.scenario.name, run.scenario.seed, node.index))
    });
    run.write_outputs(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    let sm = &report.summary;
    println!(
        "agent {}: {} of {} image pulls complete, {} downloads failed, {} unfinished; outputs in {}",
        node.index,
        sm.host_images.completed,
        run.metrics.images.len(),
        sm.failed_downloads,
        sm.unfinished_downloads,
        out.display()
    );
    let ok = sm.failed_downloads + sm.unfinished_downloads == 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn origin(OriginArgs { node }: OriginArgs) -> Result<ExitCode> {
    node.run(process::Role::Origin(node.index))?;
    Ok(ExitCode::SUCCESS)
}

pub fn tracker(TrackerArgs { node }: TrackerArgs) -> Result<ExitCode> {
    node.run(process::Role::Tracker(node.index))?;
    Ok(ExitCode::SUCCESS)
}

/// Which node a single-node process runs and where every node listens.
///
/// Addresses: every process must be given the same addresses. By default all nodes are on --ip
/// (127.0.0.1): agent i listens on BASE+i, origin o on BASE+1000+o and its HTTP port
/// BASE+2000+o, tracker t on BASE+3000+t. --agents, --origins, --origin-http and --trackers
/// replace a role's addresses (one ip:port per node of that kind, comma-separated), so nodes can
/// sit on different machines. A process binds and dials only these addresses.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    scenario: PathBuf,
    /// Which node of its kind (0-based, as in the scenario).
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Override the scenario's seed (it decides the blob content: use the same in every process).
    #[arg(long)]
    seed: Option<u64>,
    /// Override any scenario field (the same in every process).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The IP of the base-port layout.
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// The first port of the base-port layout: on --ip, agent i listens on BASE+i, origin o on
    /// BASE+1000+o and its HTTP port on BASE+2000+o, tracker t on BASE+3000+t. --agents,
    /// --origins, --origin-http and --trackers replace a role's addresses. Every process must be
    /// given the same addresses; a process binds and dials only these.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Every agent's P2P address, in agent order.
    #[arg(long, value_delimiter = ',', value_name = "IP:PORT,...")]
    agents: Option<Vec<std::net::SocketAddr>>,
    /// Every origin's P2P address, in origin order.
    #[arg(long, value_delimiter = ',', value_name = "IP:PORT,...")]
    origins: Option<Vec<std::net::SocketAddr>>,
    /// Every origin's HTTP (metainfo) address, in origin order.
    #[arg(long, value_delimiter = ',', value_name = "IP:PORT,...")]
    origin_http: Option<Vec<std::net::SocketAddr>>,
    /// Every tracker's address, in tracker order.
    #[arg(long, value_delimiter = ',', value_name = "IP:PORT,...")]
    trackers: Option<Vec<std::net::SocketAddr>>,
    /// Stop after this many seconds of wall time [default: the scenario's limits.max_sim_time_s].
    #[arg(long)]
    max_time_s: Option<f64>,
    /// Run even if the scenario holds a legal but extreme value (scenarios/README.md, "Valid ranges").
    #[arg(long)]
    force: bool,
}

impl NodeArgs {
    fn load(&self) -> Result<(Scenario, driver::NodeAddrs, std::time::Duration)> {
        let mut sets = self.sets.clone();
        if let Some(seed) = self.seed {
            sets.push(format!("seed={seed}"));
        }
        let s = Scenario::load_with_sets(&self.scenario, &sets)?;
        if !self.force {
            s.refuse_extremes()?;
        }
        let lists = process::AddrLists {
            agents: self.agents.clone(),
            origins: self.origins.clone(),
            origin_http: self.origin_http.clone(),
            trackers: self.trackers.clone(),
        };
        let addrs = process::node_addrs(&s, self.ip, self.base_port, &lists).map_err(anyhow::Error::msg)?;
        let max = match self.max_time_s {
            Some(v) if !(v.is_finite() && v > 0.0 && v < 1e9) => {
                anyhow::bail!("--max-time-s: must be a positive number of seconds, got {v}")
            }
            Some(v) => std::time::Duration::from_secs_f64(v),
            None => s.max_sim_time,
        };
        Ok((s, addrs, max))
    }

    fn run(&self, role: process::Role) -> Result<Option<driver::DriverRun>> {
        let (s, addrs, max) = self.load()?;
        eprintln!("{role:?} of {} (seed {}), for at most {:.1} s", s.name, s.seed, max.as_secs_f64());
        process::run_process(s, addrs, role, max, std::time::Duration::from_millis(100))
            .map_err(anyhow::Error::msg)
    }
}
