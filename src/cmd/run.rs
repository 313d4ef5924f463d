//! `shoal run`: one scenario on one engine, its outputs and its report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant as WallClock;

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_sim::driver::{self, DriverOptions};
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::net::Solver;
use shoal_sim::output::Summary;
use shoal_sim::scenario::Scenario;
use shoal_sim::sizing;
use shoal_sim::{StopFlag, output};
use std::sync::atomic::Ordering;

/// Run a scenario and write downloads.csv, timeseries.csv, summary.json and perf.json, then its
/// report (report.html, report.md and PNG figures) unless --no-report.
///
/// Prints the seed and the exact command that replays the run. The same scenario, seed and
/// build give byte-identical outputs (all but perf.json).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML; see scenarios/README.md).
    scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder (default: `results/<scenario>-<seed>/`).
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
    /// How `--engine real` connects its nodes. `loopback`: every node on 127.0.0.1 in this
    /// process's namespace, bandwidth from the driver's token buckets. `netns` (Linux, root, iproute2):
    /// every agent, origin and tracker in its own network namespace (`shoal-<pid>-<run>-<n>`) on a
    /// veth pair to one bridge, with an address in 198.18.0.0/15; each host's upload and download
    /// shaped by the kernel (tc htb with a class per peer on egress, and on an ifb device for
    /// ingress) from the scenario's rates, shared by TCP's congestion control. The kernel here has
    /// no netem, so the driver still adds the scenario's latency. Everything is deleted when the run ends (also after an error or
    /// Ctrl-C); rack, pod or zone uplink capacities are refused. See README "Engines".
    #[arg(long, value_enum, default_value_t = NetKind::Loopback)]
    net: NetKind,
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
    /// `--engine real`: where agents and origins keep blobs on disk, as Kraken's agents do (one
    /// file per blob and agent, pieces written at their offsets). The run makes a folder of its own
    /// in it, `shoal-data-<pid>-<n>`, checks first that the blobs fit on that disk, and removes the
    /// folder at the end unless --keep-data [default: the system's temporary folder].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `--engine real`: keep the run's data folder (the generated blobs and every agent's copies)
    /// after the run, to inspect.
    #[arg(long)]
    keep_data: bool,
    /// Run even if a value is legal but extreme (scenarios/README.md, "Valid ranges"), the estimated
    /// peak memory exceeds what the machine has available, or --out holds another run's outputs.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// The discrete-event engine: scales to thousands of hosts.
    Des,
    /// The async driver on turmoil's simulated TCP: deterministic, tens of hosts.
    Turmoil,
    /// The async driver on real TCP sockets on 127.0.0.1, wall-clock time, blobs on disk: tens of
    /// hosts.
    Real,
}

impl EngineKind {
    fn sizing(self) -> sizing::EngineKind {
        match self {
            EngineKind::Des => sizing::EngineKind::Des,
            EngineKind::Turmoil => sizing::EngineKind::Turmoil,
            EngineKind::Real => sizing::EngineKind::Real,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum NetKind {
    /// Every node on 127.0.0.1; the driver's token buckets shape bandwidth.
    Loopback,
    /// One network namespace per node on a bridge; tc shapes each host's link (root).
    Netns,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SolverKind {
    Incremental,
    Full,
    Stepped,
}

impl Args {
    fn solver(&self) -> Result<Solver> {
        if self.solver != SolverKind::Stepped && self.solve_step_ms.is_some() {
            anyhow::bail!("--solve-step-ms applies to --solver stepped only");
        }
        let solver = match self.solver {
            SolverKind::Incremental => Solver::default(),
            SolverKind::Full => Solver::Full,
            SolverKind::Stepped => {
                let step_ms = self.solve_step_ms.unwrap_or(1.0);
                if !(step_ms.is_finite() && step_ms > 0.0 && step_ms <= 1000.0) {
                    anyhow::bail!(
                        "--solve-step-ms {step_ms}: give a step in milliseconds, above 0 and at most 1000 \
                         (1 is the usual choice)"
                    );
                }
                Solver::stepped(std::time::Duration::from_secs_f64(step_ms / 1e3))
            }
        };
        if self.engine != EngineKind::Des && solver != Solver::default() {
            anyhow::bail!(
                "--solver applies to the des engine only: turmoil and real move bytes on (simulated or \
                 real) sockets"
            );
        }
        Ok(solver)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let solver = args.solver()?;
    if args.engine != EngineKind::Real && (args.data_dir.is_some() || args.keep_data) {
        anyhow::bail!(
            "--data-dir and --keep-data apply to --engine real only: des and turmoil keep no blob              bytes on disk"
        );
    }
    let net = match args.net {
        NetKind::Loopback => driver::Net::Loopback,
        NetKind::Netns => driver::Net::Netns,
    };
    if net == driver::Net::Netns {
        if args.engine != EngineKind::Real {
            anyhow::bail!("--net netns applies to --engine real only (des and turmoil simulate the network)");
        }
        // Root and iproute2, checked before anything is created.
        driver::netns::preflight().map_err(anyhow::Error::msg)?;
    }
    let mut sets = args.sets.clone();
    if let Some(seed) = args.seed {
        sets.push(format!("seed={seed}"));
    }
    let s = Scenario::load_with_sets(&args.scenario, &sets)?;
    if args.interval_ms == 0 {
        anyhow::bail!("--interval-ms 0: the time-series interval must be at least 1 ms (default 100)");
    }
    let rows = s.max_sim_time.as_millis() / u128::from(args.interval_ms);
    if rows > 10_000_000 && !args.force {
        anyhow::bail!(
            "--interval-ms {}: a run that lasts to limits.max_sim_time_s ({} s) would write {rows} rows of \
             timeseries.csv; raise --interval-ms or lower limits.max_sim_time_s, or pass --force",
            args.interval_ms,
            s.max_sim_time.as_secs_f64()
        );
    }
    let estimate = sizing::estimate(&s, args.engine.sizing());
    if args.force {
        for e in &s.extremes {
            eprintln!("warning (--force): {e}");
        }
    } else {
        s.refuse_extremes()?;
        sizing::check_fits(&s, args.engine.sizing(), &estimate).map_err(anyhow::Error::msg)?;
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/{}-{}", s.name, s.seed)));
    let mut replay = s.replay_command();
    replay.push_str(&solver.cli_flags());
    match args.engine {
        EngineKind::Des => {}
        EngineKind::Turmoil => replay.push_str(" --engine turmoil"),
        EngineKind::Real => {
            replay.push_str(" --engine real");
            replay.push_str(net.cli_flags());
        }
    }
    if !args.force {
        output::check_out_dir(&out, &replay).map_err(anyhow::Error::msg)?;
    }
    eprintln!("seed={}", s.seed);
    eprintln!("replay: {replay}");
    eprintln!("sizing: {estimate}");
    let stop = StopFlag::default();
    let flag = stop.clone();
    // The first Ctrl-C stops the run at its next check and writes what it has; a second one exits.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping the run and writing its outputs (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let shared_links = [&s.topology.racks, &s.topology.pods, &s.topology.zones]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| l.groups.iter().any(|g| g.uplink_bytes_per_s.is_some())));
    if args.engine == EngineKind::Des
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
        if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(s.workload.pulls.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pulls  {msg}")
            .expect("valid template"),
    );
    let pb = bar.clone();
    let options = RunOptions {
        interval: std::time::Duration::from_millis(args.interval_ms),
        solver,
        progress: Some(Box::new(move |t, done, _| {
            pb.set_position(done as u64);
            pb.set_message(format!("{t:.2} s"));
        })),
        stop: Some(stop.clone()),
        ..RunOptions::default()
    };
    let started = WallClock::now();
    let report = if args.engine == EngineKind::Des {
        let mut e = Engine::new(&s, options).map_err(anyhow::Error::msg)?;
        e.run();
        if e.interrupted() {
            bar.abandon();
        }
        bar.finish_and_clear();
        let report = e.report("des", started.elapsed().as_secs_f64());
        e.write_outputs(&out, &report).with_context(|| format!("writing {}", out.display()))?;
        report
    } else {
        let options = DriverOptions {
            interval: options.interval,
            progress: options.progress,
            stop: options.stop,
            data_dir: args.data_dir.clone(),
            keep_data: args.keep_data,
            net,
            ..DriverOptions::default()
        };
        let run = match args.engine {
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
    print_summary(sm);
    println!(
        "wall {:.2} s, {} events ({:.0}/s), peak memory {} MiB",
        report.perf.wall_s,
        report.perf.events,
        report.perf.events_per_s,
        report.perf.peak_rss_bytes.map_or(0, |b| b >> 20)
    );
    println!("outputs in {}", out.display());
    if !args.no_report {
        let r = shoal_reports::render(&out)?;
        println!("report in {}", r.html.display());
    }
    if sm.interrupted {
        eprintln!(
            "interrupted at {:.3} s of simulated time: {} downloads unfinished, {} failed; the outputs \
             are those of the interrupted run (summary.json says \"interrupted\": true)",
            sm.sim_time_s, sm.unfinished_downloads, sm.failed_downloads
        );
        return Ok(ExitCode::from(130));
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

/// The run's headline on stdout: percentiles, the published reference, the bound.
fn print_summary(sm: &Summary) {
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
}
