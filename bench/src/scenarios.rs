//! Scenario benchmarks: criterion measures what a scenario is about — distribution time over seeds.
//!
//! Each benchmark is one headline metric of one scenario file ([`Metric`]: per-host image p50,
//! p99 and max, blob p99 in simulated seconds ([`SimSeconds`]), origin egress in [`Bytes`]), plus
//! the wall time of the runs. Each criterion sample is one run of the scenario with the next seed,
//! 1, 2, 3, … in that order, so criterion's statistics over samples are statistics over seeds and
//! the same build gives the same numbers; `--save-baseline` / `--baseline` then tell a real change
//! from seed noise. The runs are made once per seed and shared by every metric of the scenario.
//!
//! A folder of scenario files is a suite: [`discover`] finds every `*.toml` in it, and a file's
//! optional `[bench]` table ([`BenchConfig`]) chooses the metrics, the number of seeds and the
//! overrides (the simulator ignores that table, so the file still runs with `shoal run`).
//! [`BenchOptions`] adds `--set`-style overrides for every scenario (`SHOAL_BENCH_SET`) and the
//! policies to run ([`PolicyHooks`]: a crate's own `PiecePicker` or `PeerHandout`).
//!
//! In criterion's test mode (`cargo test`, or `cargo bench -- --test`) every benchmark runs once,
//! on seed 1, with the file's `[bench] test_sets` overrides on top (a smaller size).
//!
//! A crate that depends on shoal benchmarks its own policy on its own scenarios with a bench
//! target (`[[bench]] name = "my_policy"`, `harness = false` in its Cargo.toml):
//!
//! ```no_run
//! // benches/my_policy.rs
//! use std::sync::Arc;
//!
//! use rand_chacha::ChaCha8Rng;
//! use shoal_bench::scenarios::{BenchOptions, PolicyHooks, bench_dir};
//! use shoal_protocols::peer::picker::{PiecePicker, Selection};
//!
//! /// Lowest piece index first.
//! #[derive(Debug)]
//! struct InOrder;
//!
//! impl PiecePicker for InOrder {
//!     fn select(&mut self, _: &mut ChaCha8Rng, sel: &Selection<'_>, valid: &mut dyn FnMut(u32) -> bool) -> Vec<u32> {
//!         sel.remote.iter_missing_from(sel.own).filter(|&i| valid(i)).take(sel.quota).collect()
//!     }
//! }
//!
//! fn main() {
//!     let hooks = PolicyHooks { picker: Some(Arc::new(|_policy| Box::new(InOrder))), ..PolicyHooks::default() };
//!     let options = BenchOptions::from_env().expect("SHOAL_BENCH_SET").hooks(hooks).set("topology.hosts=100");
//!     let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scenarios");
//!     if let Err(e) = bench_dir(&dir, options) {
//!         eprintln!("{e}");
//!         std::process::exit(2);
//!     }
//! }
//! ```
//!
//! `cargo bench --bench my_policy -- --save-baseline before`, change the policy, then
//! `cargo bench --bench my_policy -- --baseline before`: criterion prints each metric's estimate
//! over seeds and "Performance has regressed" / "improved" / "No change in performance detected".
//! For finer control, [`Suite`] benchmarks one [`BenchScenario`] at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{Criterion, SamplingMode};
use serde::Deserialize;
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::output::Summary;
use shoal_sim::scenario::{Scenario, ScenarioError};

pub use crate::measure::{Bytes, SimSeconds};
pub use shoal_sim::build::{HandoutFactory, PolicyHooks};

/// Seeds per benchmark unless `[bench] sample_size` says otherwise (criterion's minimum).
pub const DEFAULT_SAMPLE_SIZE: usize = 10;

/// The environment variable whose `;`-separated `key=value` overrides [`BenchOptions::from_env`]
/// applies to every scenario: `SHOAL_BENCH_SET='protocol.agent.conn_state.max_open_conn=5'`.
pub const SET_ENV: &str = "SHOAL_BENCH_SET";

/// A headline metric of a run, read from its summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Per-host image completion time, median (simulated seconds).
    ImageP50,
    /// Per-host image completion time, 99th percentile.
    ImageP99,
    /// Per-host image completion time, the slowest host.
    ImageMax,
    /// Per-blob download time, 99th percentile.
    BlobP99,
    /// Bytes the origins sent.
    OriginEgress,
}

impl Metric {
    /// Every metric, the default of a scenario without `[bench] metrics`.
    pub const HEADLINE: [Metric; 5] =
        [Metric::ImageP50, Metric::ImageP99, Metric::ImageMax, Metric::BlobP99, Metric::OriginEgress];

    /// The benchmark's name within its scenario's group (as in `[bench] metrics`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::ImageP50 => "image_p50",
            Metric::ImageP99 => "image_p99",
            Metric::ImageMax => "image_max",
            Metric::BlobP99 => "blob_p99",
            Metric::OriginEgress => "origin_egress",
        }
    }

    /// True if the metric is in bytes ([`Bytes`]), false if in simulated seconds ([`SimSeconds`]).
    pub fn is_bytes(self) -> bool {
        self == Metric::OriginEgress
    }

    /// The metric's value in a run's summary; `None` if the pulls it covers did not all finish.
    pub fn of(self, s: &Summary) -> Option<f64> {
        match self {
            Metric::ImageP50 => s.host_images.p50,
            Metric::ImageP99 => s.host_images.p99,
            Metric::ImageMax => s.host_images.max,
            Metric::BlobP99 => s.blob_downloads.p99,
            Metric::OriginEgress => Some(s.origin_egress_bytes as f64),
        }
    }
}

/// A scenario file's optional `[bench]` table. Unknown fields are refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// The metrics benchmarked (default: [`Metric::HEADLINE`]).
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    /// Seeds per benchmark, at least 10 (default [`DEFAULT_SAMPLE_SIZE`]).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Overrides applied before anything else, as `shoal run --set` takes them.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Overrides added in criterion's test mode only (e.g. `["topology.hosts=100"]`).
    #[serde(default)]
    pub test_sets: Vec<String>,
    /// Whether to report the runs' wall time too (default true).
    #[serde(default = "yes")]
    pub wall_time: bool,
}

fn yes() -> bool {
    true
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            metrics: None,
            sample_size: None,
            sets: Vec::new(),
            test_sets: Vec::new(),
            wall_time: true,
        }
    }
}

/// Why a bench scenario could not be loaded or run. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The folder or file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The folder holds no `*.toml`.
    #[error("{}: no scenario files (*.toml) to benchmark", path.display())]
    Empty {
        /// The folder.
        path: PathBuf,
    },
    /// The scenario itself (or an override) is invalid.
    #[error("bench scenario {}: {source}", path.display())]
    Scenario {
        /// The file.
        path: PathBuf,
        /// The loader's error, with its line or override.
        source: Box<ScenarioError>,
    },
    /// The `[bench]` table is invalid.
    #[error("bench scenario {}: [bench]: {message}", path.display())]
    Bench {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run did not produce a metric (some pulls unfinished or failed).
    #[error("bench scenario {}: {message}", path.display())]
    Run {
        /// The file.
        path: PathBuf,
        /// What is missing, and the command that replays the run.
        message: String,
    },
}

/// One scenario file to benchmark: its name (the file stem, criterion's group), path and `[bench]`.
#[derive(Clone, Debug)]
pub struct BenchScenario {
    /// The benchmark group: the file name without `.toml`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its `[bench]` table (defaults if absent).
    pub config: BenchConfig,
}

impl BenchScenario {
    /// Reads a scenario file and its `[bench]` table, and checks that the scenario loads with its
    /// bench overrides (and with its test-mode ones).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BenchError> {
        let path = path.as_ref().to_path_buf();
        let scenario_err =
            |e: ScenarioError| BenchError::Scenario { path: path.clone(), source: Box::new(e) };
        let bench_err = |message: String| BenchError::Bench { path: path.clone(), message };
        // The scenario loader reports syntax errors with their line; it ignores `[bench]`.
        Scenario::load(&path, &[]).map_err(scenario_err)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|source| BenchError::Read { path: path.clone(), source })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| bench_err(e.to_string()))?;
        let config = match table.get("bench") {
            None => BenchConfig::default(),
            Some(v) => BenchConfig::deserialize(v.clone()).map_err(|e| bench_err(e.to_string()))?,
        };
        if let Some(n) = config.sample_size
            && n < 10
        {
            return Err(bench_err(format!("sample_size: at least 10 (criterion's minimum), got {n}")));
        }
        if config.metrics.as_ref().is_some_and(|m| m.is_empty()) {
            return Err(bench_err("metrics: name at least one".into()));
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let bs = BenchScenario { name, path, config };
        for test_mode in [false, true] {
            bs.scenario(1, test_mode, &[])?;
        }
        Ok(bs)
    }

    /// The metrics benchmarked, in a fixed order.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut m = self.config.metrics.clone().unwrap_or_else(|| Metric::HEADLINE.to_vec());
        m.sort();
        m.dedup();
        m
    }

    /// Seeds per benchmark.
    pub fn sample_size(&self) -> usize {
        self.config.sample_size.unwrap_or(DEFAULT_SAMPLE_SIZE)
    }

    /// The scenario as run for `seed`: the file, its `[bench] sets`, in test mode its `test_sets`,
    /// then `extra`, then the seed.
    pub fn scenario(&self, seed: u64, test_mode: bool, extra: &[String]) -> Result<Scenario, BenchError> {
        let mut sets = self.config.sets.clone();
        if test_mode {
            sets.extend(self.config.test_sets.iter().cloned());
        }
        sets.extend(extra.iter().cloned());
        sets.push(format!("seed={seed}"));
        Scenario::load_with_sets(&self.path, &sets)
            .map_err(|e| BenchError::Scenario { path: self.path.clone(), source: Box::new(e) })
    }
}

/// Every `*.toml` in `dir`, sorted by file name, each loaded and checked ([`BenchScenario::load`]);
/// the first bad file is the error.
pub fn discover(dir: impl AsRef<Path>) -> Result<Vec<BenchScenario>, BenchError> {
    let dir = dir.as_ref();
    let read_err = |source| BenchError::Read { path: dir.to_path_buf(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(BenchError::Empty { path: dir.to_path_buf() });
    }
    paths.sort();
    paths.iter().map(BenchScenario::load).collect()
}

/// What every benchmark of a suite shares: overrides on top of each file's, and the policies.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// `key=value` overrides applied to every scenario after its `[bench]` ones.
    pub sets: Vec<String>,
    /// Policies substituted for the scenarios' own.
    pub hooks: PolicyHooks,
}

impl BenchOptions {
    /// Options with the overrides of [`SET_ENV`] (`;`-separated `key=value`s; empty if unset).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(SET_ENV) {
            Ok(v) => Ok(BenchOptions { sets: split_sets(&v), ..BenchOptions::default() }),
            Err(std::env::VarError::NotPresent) => Ok(BenchOptions::default()),
            Err(e) => Err(format!("{SET_ENV}: {e}")),
        }
    }

    /// Adds an override.
    pub fn set(mut self, key_value: impl Into<String>) -> Self {
        self.sets.push(key_value.into());
        self
    }

    /// Replaces the policy hooks.
    pub fn hooks(mut self, hooks: PolicyHooks) -> Self {
        self.hooks = hooks;
        self
    }
}

/// `key=value;key=value` as [`SET_ENV`] holds it: `;` separates (TOML values use `,` inside
/// inline tables and arrays), blanks around each are dropped, empty entries skipped.
pub fn split_sets(v: &str) -> Vec<String> {
    v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// One run's outcome, as the benchmarks read it.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The run's summary (what `summary.json` holds).
    pub summary: Summary,
    /// How long the run took (building the nodes, running, summarising).
    pub wall: Duration,
}

/// Runs a scenario once on the discrete-event engine with `hooks` installed.
pub fn run(s: &Scenario, hooks: &PolicyHooks) -> Result<Measured, String> {
    let started = Instant::now();
    let mut e = Engine::new(s, RunOptions { hooks: hooks.clone(), ..RunOptions::default() })?;
    e.run();
    let report = e.report("des", started.elapsed().as_secs_f64());
    Ok(Measured { summary: report.summary, wall: started.elapsed() })
}

/// Runs `bs` with `seed` as a benchmark does (test mode adds the file's `test_sets`).
pub fn measure(
    bs: &BenchScenario,
    seed: u64,
    test_mode: bool,
    options: &BenchOptions,
) -> Result<Measured, BenchError> {
    let s = bs.scenario(seed, test_mode, &options.sets)?;
    run(&s, &options.hooks).map_err(|message| BenchError::Run { path: bs.path.clone(), message })
}

/// The value of `metric` in a run, or an error naming the run to replay.
pub fn metric_value(bs: &BenchScenario, m: &Measured, metric: Metric) -> Result<f64, BenchError> {
    metric.of(&m.summary).ok_or_else(|| BenchError::Run {
        path: bs.path.clone(),
        message: format!(
            "{} undefined: {} failed and {} unfinished downloads (replay: {})",
            metric.name(),
            m.summary.failed_downloads,
            m.summary.unfinished_downloads,
            m.summary.replay
        ),
    })
}

/// True when criterion would run in test mode for these arguments (as criterion decides it: no
/// `--bench`, or `--test`): `cargo test` runs bench targets without `--bench`.
pub fn criterion_test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// The runs of one scenario, one per seed, shared by its benchmarks.
struct Runs<'a> {
    bs: &'a BenchScenario,
    options: &'a BenchOptions,
    test_mode: bool,
    by_seed: BTreeMap<u64, Measured>,
}

impl Runs<'_> {
    fn get(&mut self, seed: u64) -> &Measured {
        if !self.by_seed.contains_key(&seed) {
            let m = measure(self.bs, seed, self.test_mode, self.options).unwrap_or_else(|e| panic!("{e}"));
            self.by_seed.insert(seed, m);
        }
        &self.by_seed[&seed]
    }
}

/// How criterion calls a benchmark's routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Calls {
    /// Test mode: once.
    Test,
    /// Benchmark mode: one warm-up call, then one per sample.
    WarmUpThenSamples,
    /// `--quick`: no warm-up, samples until the estimate settles.
    Samples,
}

impl Calls {
    fn from_args(test_mode: bool) -> Self {
        if test_mode {
            Calls::Test
        } else if std::env::args().any(|a| a == "--quick") {
            Calls::Samples
        } else {
            Calls::WarmUpThenSamples
        }
    }

    /// The seed of the routine's `call`-th call (from 0): `None` for the warm-up call (nothing is
    /// run, see [`Suite`]), then seeds 1 to `n`, cycling if criterion asks for more (profile and
    /// quick modes). In test mode the one call is seed 1.
    fn seed(self, call: u64, n: usize) -> Option<u64> {
        match (self, call) {
            (Calls::Test, _) => Some(1),
            (Calls::WarmUpThenSamples, 0) => None,
            (Calls::WarmUpThenSamples, k) => Some(1 + (k - 1) % n as u64),
            (Calls::Samples, k) => Some(1 + k % n as u64),
        }
    }
}

/// A benchmark's warm-up call: criterion only times it, to size its samples (see [`Suite`]).
fn warm_up_call() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(1) {}
}

/// criterion set up for scenario benchmarks: one `Criterion` per unit (simulated seconds, bytes,
/// wall time), each taking the command line's options (filters, `--save-baseline`, `--baseline`).
///
/// How a sample becomes one seed: every benchmark samples in [`SamplingMode::Flat`] with a 1 ns
/// warm-up, so criterion makes one warm-up call, then one call per sample. Each sample call runs
/// the next seed once and returns its value times the iteration count criterion asked for, so
/// criterion's per-iteration value is the run's metric. The warm-up call runs nothing and takes
/// 1 µs, and the measurement time is 2 µs per sample, so criterion asks for 2 iterations per
/// sample (1 if the warm-up was preempted, with criterion's "Unable to complete" warning): a power
/// of two, so that value × iterations ÷ iterations is the metric to the last bit. criterion's
/// "Collecting 10 samples in estimated 20 µs (20 iterations)" line is about that empty call.
#[allow(missing_debug_implementations)]
pub struct Suite {
    sim: Criterion<SimSeconds>,
    bytes: Criterion<Bytes>,
    wall: Criterion<WallTime>,
    options: BenchOptions,
    test_mode: bool,
    calls: Calls,
}

impl Suite {
    /// A suite configured from the command line, as `criterion_main!` would be.
    pub fn from_args(options: BenchOptions) -> Self {
        Suite::with_criterion(|| Criterion::default().configure_from_args(), criterion_test_mode(), options)
    }

    /// A suite whose three `Criterion`s come from `make` (tests set an output directory, say);
    /// `test_mode` must match the mode `make` leaves criterion in.
    pub fn with_criterion(make: impl Fn() -> Criterion, test_mode: bool, options: BenchOptions) -> Self {
        Suite {
            sim: make().with_measurement(SimSeconds),
            bytes: make().with_measurement(Bytes),
            wall: make(),
            options,
            test_mode,
            calls: Calls::from_args(test_mode),
        }
    }

    /// Benchmarks one scenario: a criterion group named after it, one benchmark per metric, and
    /// `wall` for the runs' wall time.
    pub fn bench(&mut self, bs: &BenchScenario) {
        let n = bs.sample_size();
        let (test_mode, calls) = (self.test_mode, self.calls);
        let runs =
            Rc::new(RefCell::new(Runs { bs, options: &self.options, test_mode, by_seed: BTreeMap::new() }));
        let metrics = bs.metrics();
        let seconds: Vec<Metric> = metrics.iter().copied().filter(|m| !m.is_bytes()).collect();
        let bytes: Vec<Metric> = metrics.iter().copied().filter(|m| m.is_bytes()).collect();
        bench_metrics(&mut self.sim, bs, n, calls, &runs, &seconds);
        bench_metrics(&mut self.bytes, bs, n, calls, &runs, &bytes);
        if bs.config.wall_time {
            let mut g = self.wall.benchmark_group(&bs.name);
            configure(&mut g, n);
            let mut call = 0;
            g.bench_function("wall", |b| {
                b.iter_custom(|iters| {
                    let seed = calls.seed(call, n);
                    call += 1;
                    let Some(seed) = seed else {
                        warm_up_call();
                        return Duration::ZERO;
                    };
                    let wall = runs.borrow_mut().get(seed).wall;
                    wall.mul_f64(iters as f64)
                })
            });
            g.finish();
        }
    }

    /// criterion's closing summary (what `criterion_main!` prints last).
    pub fn final_summary(&self) {
        self.sim.final_summary();
        self.bytes.final_summary();
        self.wall.final_summary();
    }
}

/// One seed per sample (see [`Suite`]).
/// One benchmark per metric of `bs` in criterion group `bs.name`, each sample the metric of the
/// run with the next seed (the warm-up call runs nothing); for seconds and bytes alike.
fn bench_metrics<M: criterion::measurement::Measurement<Value = f64>>(
    c: &mut Criterion<M>,
    bs: &BenchScenario,
    n: usize,
    calls: Calls,
    runs: &RefCell<Runs<'_>>,
    metrics: &[Metric],
) {
    if metrics.is_empty() {
        return;
    }
    let mut g = c.benchmark_group(&bs.name);
    configure(&mut g, n);
    for &m in metrics {
        // Counts the routine's calls: criterion calls the closure once per call.
        let mut call = 0;
        g.bench_function(m.name(), |b| {
            b.iter_custom(|iters| {
                let seed = calls.seed(call, n);
                call += 1;
                let Some(seed) = seed else {
                    warm_up_call();
                    return 0.0;
                };
                let mut r = runs.borrow_mut();
                let v = metric_value(bs, r.get(seed), m).unwrap_or_else(|e| panic!("{e}"));
                v * iters as f64
            })
        });
    }
    g.finish();
}

fn configure<M: criterion::measurement::Measurement>(g: &mut criterion::BenchmarkGroup<'_, M>, n: usize) {
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(n)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(Duration::from_micros(2) * n as u32);
}

/// Benchmarks every scenario of `dir` ([`discover`]) with `options`, configured from the command
/// line: the body of a bench target's `main`.
pub fn bench_dir(dir: impl AsRef<Path>, options: BenchOptions) -> Result<(), BenchError> {
    let scenarios = discover(dir)?;
    let mut suite = Suite::from_args(options);
    for bs in &scenarios {
        suite.bench(bs);
    }
    suite.final_summary();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_env_splits_on_semicolons() {
        let v = " topology.hosts=100 ; workload.pulls.0.arrival={ kind = \"waves\", waves = 2, interval_s = 1 };;";
        assert_eq!(
            split_sets(v),
            [
                "topology.hosts=100",
                "workload.pulls.0.arrival={ kind = \"waves\", waves = 2, interval_s = 1 }"
            ]
        );
        assert!(split_sets("").is_empty());
    }

    #[test]
    fn seeds_run_in_order_after_the_warm_up() {
        let seeds = |c: Calls| (0..12).map(|k| c.seed(k, 10)).collect::<Vec<_>>();
        let mut bench = vec![None];
        bench.extend((1..=10).chain(1..=1).map(Some));
        assert_eq!(seeds(Calls::WarmUpThenSamples), bench);
        assert_eq!(seeds(Calls::Samples)[..3], [Some(1), Some(2), Some(3)]);
        assert!(seeds(Calls::Test).iter().all(|s| *s == Some(1)));
    }
}
