//! `shoal`: run scenarios, print their lower bound, render reports, compare runs and gate on
//! baselines. All logic lives in the `shoal_sim` and `shoal_reports` libraries; this is argument
//! parsing and error-to-exit-code mapping.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant as WallClock;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use shoal_sim::driver::{self, DriverOptions, process};
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::gate::{self, GateConfig, GateOptions};
use shoal_sim::net::Solver;
use shoal_sim::scenario::Scenario;

/// A simulation and benchmarking harness for peer-to-peer container registries (Uber Kraken's
/// agent, origin and tracker protocols, and BitTorrent, Dragonfly and origin-only policies on the
/// same nodes, replayed at scale).
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and write downloads.csv, timeseries.csv, summary.json and perf.json, then its
    /// report (report.html, report.md and PNG figures) unless --no-report.
    ///
    /// Prints the seed and the exact command that replays the run. The same scenario, seed and
    /// build give byte-identical outputs (all but perf.json).
    Run {
        /// The scenario file (TOML; see scenarios/README.md).
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder [default: results/<scenario>-<seed>/].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override any scenario field: `--set topology.hosts=100 --set protocol.agent.dispatch.pipeline_limit=5`;
        /// the policy with `--set protocol.policy=kraken|bittorrent|dragonfly|origin_only` and the tracker's
        /// handout with `--set protocol.tracker.handout_policy=completeness|default|topology|naive_locality`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Which engine runs the scenario.
        #[arg(long, value_enum, default_value_t = EngineKind::Des)]
        engine: EngineKind,
        /// Time-series interval in milliseconds.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Bandwidth-sharing solver of the des engine: incremental max-min on every event (default),
        /// full recomputation (exact, slow), or stepped: the incremental solver at most once per
        /// --solve-step-ms over all changes since (each flow start and end then waits up to one
        /// step; for large runs with saturated rack links, see README "Solvers").
        #[arg(long, value_enum, default_value_t = SolverKind::Incremental)]
        solver: SolverKind,
        /// The step of `--solver stepped`, in milliseconds of simulated time [default: 1].
        #[arg(long, value_name = "MS")]
        solve_step_ms: Option<f64>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Do not write the report (report.html, report.md, figures) after the run.
        #[arg(long)]
        no_report: bool,
    },
    /// Render the report of each run folder in place: report.html (self-contained), report.md and
    /// its PNG figures.
    ///
    /// Reads only downloads.csv, timeseries.csv and summary.json, so runs produced elsewhere in the
    /// same format (docs/outputs.md) render too.
    Report {
        /// Run folders, each holding downloads.csv, timeseries.csv and summary.json.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Compare runs: overlaid CDFs of per-host image completion and a table of p50, p99, p99.9,
    /// max, origin egress and efficiency, each with its ratio to the first run.
    ///
    /// Writes compare.html (self-contained), compare.md and compare-cdf.png.
    Compare {
        /// Run folders; the first is the baseline.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "results/compare")]
        out: PathBuf,
    },
    /// Merge the output folders of the agents of one run that ran as separate processes
    /// (`shoal agent`) into one run folder that `report` and `compare` read like any other.
    ///
    /// Checks the folders are of one run and that no host is given twice; concatenates
    /// downloads.csv (sorted by host), adds up timeseries.csv interval by interval, and rebuilds
    /// summary.json (percentiles over all hosts, summed bytes and messages, efficiency against the
    /// lower bound). Each agent must have pulled one image. Then writes the report unless
    /// --no-report.
    Merge {
        /// The agents' output folders (`shoal agent --out`).
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Output folder of the merged run.
        #[arg(long, default_value = "results/merged")]
        out: PathBuf,
        /// Do not write the report (report.html, report.md, figures).
        #[arg(long)]
        no_report: bool,
    },
    /// Regression gate: run the pinned scenarios of the gate config and compare their deterministic
    /// metrics with the committed baselines.
    ///
    /// Prints a Markdown table (scenario, metric, baseline, now, change) sorted by the size of the
    /// change on stdout, progress on stderr. Exit status: 0 pass, 1 a metric regressed beyond its
    /// tolerance, 2 bad input (config, scenario or missing baseline). Simulator speed is reported
    /// as an advisory ratio and never fails the gate.
    Gate {
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
    },
    /// Run one agent of a scenario as its own process (nodes on separate processes or machines).
    ///
    /// Start one `shoal tracker`, `shoal origin` and `shoal agent` process per node of the
    /// scenario, all with the same scenario, seed, --set overrides and addresses. The agent starts
    /// its pulls at the scenario's times on its own clock (from when it starts), downloads and
    /// verifies the blobs (CRC32 per piece, SHA-256 per blob), writes its own rows of
    /// downloads.csv (and a summary of its pulls only) into --out, and exits: 0 when every
    /// download completed, 1 otherwise. Merge the agents' rows with
    /// `head -1 a0/downloads.csv; tail -q -n +2 a*/downloads.csv`.
    Agent {
        #[command(flatten)]
        node: NodeArgs,
        /// Output folder for this agent's downloads.csv, timeseries.csv, summary.json, perf.json
        /// [default: results/<scenario>-<seed>-agent<INDEX>/].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one origin of a scenario as its own process; it serves until --max-time-s (or is
    /// killed). See `shoal agent --help`.
    Origin {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run one tracker of a scenario as its own process; it serves until --max-time-s (or is
    /// killed). See `shoal agent --help`.
    Tracker {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print the physical lower bound of a scenario, term by term.
    Bound {
        scenario: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

/// Which node a single-node process runs and where every node listens.
///
/// Addresses: every process must be given the same addresses. By default all nodes are on --ip
/// (127.0.0.1): agent i listens on BASE+i, origin o on BASE+1000+o and its HTTP port
/// BASE+2000+o, tracker t on BASE+3000+t. --agents, --origins, --origin-http and --trackers
/// replace a role's addresses (one ip:port per node of that kind, comma-separated), so nodes can
/// sit on different machines. A process binds and dials only these addresses.
#[derive(Debug, clap::Args)]
struct NodeArgs {
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
}

impl NodeArgs {
    fn load(&self) -> Result<(Scenario, driver::NodeAddrs, std::time::Duration)> {
        let mut sets = self.sets.clone();
        if let Some(seed) = self.seed {
            sets.push(format!("seed={seed}"));
        }
        let s = Scenario::load_with_sets(&self.scenario, &sets)?;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// The discrete-event engine: scales to thousands of hosts.
    Des,
    /// The async driver on turmoil's simulated TCP: deterministic, tens of hosts.
    Turmoil,
    /// The async driver on real TCP sockets on 127.0.0.1, wall-clock time: tens of hosts.
    Real,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SolverKind {
    Incremental,
    Full,
    Stepped,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gate { bless, config, only, sets, no_speed } => {
            let config = GateConfig::load(&config)?;
            let options = GateOptions { bless, only, extra_sets: sets, speed: !no_speed };
            let report = gate::run(&config, &options, &mut |line| eprintln!("{line}"))?;
            print!("{}", report.markdown());
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Agent { node, out } => {
            let started = WallClock::now();
            let run = node.run(process::Role::Agent(node.index))?.context("an agent run")?;
            let report = run.report(started.elapsed().as_secs_f64());
            let out = out.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "results/{}-{}-agent{}",
                    run.scenario.name, run.scenario.seed, node.index
                ))
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
        Command::Origin { node } => {
            node.run(process::Role::Origin(node.index))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tracker { node } => {
            node.run(process::Role::Tracker(node.index))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bound { scenario, sets } => {
            let s = Scenario::load_with_sets(&scenario, &sets)?;
            print!("{}", s.lower_bound());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dirs } => {
            for dir in &dirs {
                let r = shoal_reports::render(dir)?;
                println!("{}", r.html.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { dirs, out, no_report } => {
            let m = shoal_sim::engine::merge(&dirs, &out)?;
            let images = &m.summary.host_images;
            let pct = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.3} s"));
            eprintln!(
                "merged {} folders: {} downloads, {} of {} hosts complete; image pull p50 {}  p99 {}  max {}",
                dirs.len(),
                m.rows,
                images.completed,
                m.summary.hosts,
                pct(images.p50),
                pct(images.p99),
                pct(images.max)
            );
            if !no_report {
                let r = shoal_reports::render(&out)?;
                println!("{}", r.html.display());
            } else {
                println!("{}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { dirs, out } => {
            let c = shoal_reports::compare(&dirs, &out)?;
            if !c.comparison.same_scenario() {
                eprintln!("note: the runs are of different scenarios");
            }
            println!("{}", c.html.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            scenario,
            seed,
            out,
            mut sets,
            engine,
            interval_ms,
            solver,
            solve_step_ms,
            quiet,
            no_report,
        } => {
            if solver != SolverKind::Stepped && solve_step_ms.is_some() {
                anyhow::bail!("--solve-step-ms applies to --solver stepped only");
            }
            let solve_step_ms = solve_step_ms.unwrap_or(1.0);
            let solver = match solver {
                SolverKind::Incremental => Solver::default(),
                SolverKind::Full => Solver::Full,
                SolverKind::Stepped => {
                    if !(solve_step_ms.is_finite() && solve_step_ms > 0.0 && solve_step_ms <= 1000.0) {
                        anyhow::bail!(
                            "--solve-step-ms {solve_step_ms}: give a step in milliseconds, above 0 and at \
                             most 1000 (1 is the usual choice)"
                        );
                    }
                    Solver::stepped(std::time::Duration::from_secs_f64(solve_step_ms / 1e3))
                }
            };
            if engine != EngineKind::Des && solver != Solver::default() {
                anyhow::bail!(
                    "--solver applies to the des engine only: turmoil and real move bytes on (simulated \
                     or real) sockets"
                );
            }
            if let Some(seed) = seed {
                sets.push(format!("seed={seed}"));
            }
            let s = Scenario::load_with_sets(&scenario, &sets)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("results/{}-{}", s.name, s.seed)));
            let mut replay = s.replay_command();
            replay.push_str(&solver.cli_flags());
            match engine {
                EngineKind::Des => {}
                EngineKind::Turmoil => replay.push_str(" --engine turmoil"),
                EngineKind::Real => replay.push_str(" --engine real"),
            }
            eprintln!("seed={}", s.seed);
            eprintln!("replay: {replay}");
            let shared_links = [&s.topology.racks, &s.topology.pods, &s.topology.zones]
                .iter()
                .any(|l| l.as_ref().is_some_and(|l| l.groups.iter().any(|g| g.uplink_bytes_per_s.is_some())));
            if engine == EngineKind::Des
                && solver == Solver::default()
                && shared_links
                && s.topology.hosts.len() >= 1000
            {
                eprintln!(
                    "hint: {} hosts behind capacity-limited group links re-rate many flows per event; \
                     `--solver stepped` runs such scenarios several times faster (README.md, \"Solvers\")",
                    s.topology.hosts.len()
                );
            }
            let bar =
                if quiet { ProgressBar::hidden() } else { ProgressBar::new(s.workload.pulls.len() as u64) };
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pulls  {msg}",
                )
                .expect("valid template"),
            );
            let pb = bar.clone();
            let options = RunOptions {
                interval: std::time::Duration::from_millis(interval_ms.max(1)),
                solver,
                progress: Some(Box::new(move |t, done, _| {
                    pb.set_position(done as u64);
                    pb.set_message(format!("{t:.2} s"));
                })),
            };
            let started = WallClock::now();
            let report = if engine == EngineKind::Des {
                let mut e = Engine::new(&s, options).map_err(anyhow::Error::msg)?;
                e.run();
                bar.finish_and_clear();
                let report = e.report("des", started.elapsed().as_secs_f64());
                e.write_outputs(&out, &report).with_context(|| format!("writing {}", out.display()))?;
                report
            } else {
                let options = DriverOptions {
                    interval: options.interval,
                    progress: options.progress,
                    ..DriverOptions::default()
                };
                let run = match engine {
                    EngineKind::Real => driver::real::run(s.clone(), options),
                    _ => driver::sim::run(s.clone(), options),
                }
                .map_err(anyhow::Error::msg)?;
                bar.finish_and_clear();
                let report = run.report(started.elapsed().as_secs_f64());
                run.write_outputs(&out, &report).with_context(|| format!("writing {}", out.display()))?;
                report
            };
            let sm = &report.summary;
            let fmt = |v: Option<f64>| v.map_or("unfinished".to_string(), |v| format!("{v:.3} s"));
            println!("{}: {} hosts, seed {}", sm.scenario, sm.hosts, sm.seed);
            println!(
                "image pull   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                fmt(sm.host_images.p50),
                fmt(sm.host_images.p90),
                fmt(sm.host_images.p99),
                fmt(sm.host_images.p99_9),
                fmt(sm.host_images.max)
            );
            if let Some(r) = &sm.reference {
                let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v} s"));
                println!(
                    "published    p50 {}  p99 {}  p99.9 {}  ({})",
                    f(r.p50_s),
                    f(r.p99_s),
                    f(r.p99_9_s),
                    r.source
                );
            }
            println!(
                "lower bound  {:.3} s ({}); efficiency p50 {}  max {}",
                sm.lower_bound.t_min_s,
                sm.lower_bound.binding_term,
                sm.efficiency.p50.map_or("-".into(), |e| format!("{:.1} %", e * 100.0)),
                sm.efficiency.max.map_or("-".into(), |e| format!("{:.1} %", e * 100.0)),
            );
            println!(
                "wall {:.2} s, {} events ({:.0}/s), peak memory {} MiB",
                report.perf.wall_s,
                report.perf.events,
                report.perf.events_per_s,
                report.perf.peak_rss_bytes.map_or(0, |b| b >> 20)
            );
            println!("outputs in {}", out.display());
            if !no_report {
                let r = shoal_reports::render(&out)?;
                println!("report in {}", r.html.display());
            }
            if sm.failed_downloads + sm.unfinished_downloads > 0 {
                eprintln!(
                    "{} downloads failed, {} unfinished at the time limit",
                    sm.failed_downloads, sm.unfinished_downloads
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
