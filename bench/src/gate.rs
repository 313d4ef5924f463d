//! The regression gate (DESIGN.md §8): run pinned scenarios, compare their deterministic metrics
//! with committed baselines, each with a relative tolerance, and report a Markdown table sorted by
//! the size of the change. `shoal gate` is a thin wrapper around [`run`].
//!
//! - **Deterministic metrics gate.** A scenario and seed give the same summary on every run, so a
//!   change in a metric is a change in behaviour, never noise. Tolerances only say how much of a
//!   change counts: within it a metric is `ok`; beyond it in the worse direction (slower, more
//!   bytes, more messages) it is a `regression` (exit 1); in the better direction `improved`.
//! - **Speed is advisory.** Simulator speed is measured as a ratio, the scenario's events per
//!   second over the events per second of a fixed synthetic reference loop ([`reference_loop`])
//!   run in the same process just before, so a slower or busier machine moves both and the ratio
//!   stays roughly put. Even so it is noisy on shared machines: it is compared with a generous
//!   tolerance, only against a baseline blessed with the same build profile, and never fails the
//!   gate — a `slower` row is a prompt to look, with `cargo bench -p shoal-bench`.
//!
//! - **Seeds.** A scenario may give `seeds = N`: it then runs on seeds 1..=N (shifted by
//!   [`GateOptions::seed_offset`]), its baseline keeps every seed's values, and a metric is a
//!   regression only when its mean moved beyond its tolerance in the worse direction *and* the
//!   change is significant given the spread over seeds: a two-sided t-test — paired on the seeds when
//!   both sides ran the same seeds (common random numbers: seed-to-seed spread cancels), Welch's
//!   otherwise — at p < 0.05 / m, Bonferroni over the scenario's m metrics, so a scenario raises a
//!   false alarm at most 5 % of the time. Beyond tolerance but not significant is `within seed
//!   noise`. The verdict is deterministic: the same build gives the same runs.
//!
//! The configuration (`bench/gate.toml`) lists the scenarios; each has a baseline
//! `<baselines>/<name>.json` written by [`run`] with `bless`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant as WallClock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::output::Summary;
use shoal_sim::scenario::{Scenario, ScenarioError};

/// The relative tolerance of a metric the configuration does not name.
pub const DEFAULT_TOLERANCE: f64 = 0.01;
/// The default relative tolerance of the advisory speed ratio: flagged below half the baseline.
pub const DEFAULT_SPEED_TOLERANCE: f64 = 0.5;

/// Why the gate could not run (exit code 2): never a regression.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("scenario `{name}`: {error}")]
    Scenario { name: String, error: ScenarioError },
    #[error("scenario `{name}`: {message}")]
    Engine { name: String, message: String },
    #[error("{}: no baseline; create it with `shoal gate --bless`", path.display())]
    MissingBaseline { path: PathBuf },
    #[error("{}: {message}", path.display())]
    BadBaseline { path: PathBuf, message: String },
    #[error("{}: cannot write: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
    #[error("no scenario named `{0}` in the gate configuration")]
    UnknownScenario(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    baselines: Option<String>,
    #[serde(default)]
    tolerance: BTreeMap<String, f64>,
    #[serde(default)]
    speed: RawSpeed,
    #[serde(default)]
    scenario: Vec<RawScenario>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpeed {
    tolerance: Option<f64>,
    min_wall_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    path: String,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    tolerance: BTreeMap<String, f64>,
    seeds: Option<u64>,
}

/// Most seeds a gate scenario may run.
pub const MAX_SEEDS: u64 = 100;
/// The family-wise false-alarm rate of a seeded scenario's verdicts.
pub const ALPHA: f64 = 0.05;

/// One pinned scenario.
#[derive(Clone, Debug)]
pub struct GateScenario {
    pub name: String,
    /// As written in the configuration (relative to its folder).
    pub path: String,
    pub sets: Vec<String>,
    /// Per-metric tolerances for this scenario only (same keys as [`GateConfig::tolerances`]).
    pub tolerances: BTreeMap<String, f64>,
    /// Seeds it runs on (1: the scenario's own seed, unless [`GateOptions::seed_offset`]).
    pub seeds: u64,
}

/// `bench/gate.toml`.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// The folder paths in the file are relative to.
    pub dir: PathBuf,
    pub baselines: PathBuf,
    /// Relative tolerances by metric: an exact metric name, a prefix ending in `.*`
    /// (`messages.*`), or `default`.
    pub tolerances: BTreeMap<String, f64>,
    pub speed_tolerance: f64,
    /// Speed runs of short scenarios repeat until they took this long in all (best run kept).
    pub speed_min_wall_s: f64,
    pub scenarios: Vec<GateScenario>,
}

impl GateConfig {
    pub fn load(path: &Path) -> Result<Self, GateError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| GateError::Read { path: path.into(), error })?;
        Self::parse(&text, path)
    }

    /// Parses a configuration's text; `path` locates it (paths inside are relative to its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Self, GateError> {
        let bad = |message: String| GateError::Config { path: path.into(), message };
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let check = |what: &str, t: &BTreeMap<String, f64>| -> Result<(), GateError> {
            match t.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                Some((k, v)) => Err(bad(format!("{what}.{k}: tolerance must be a number ≥ 0, not {v}"))),
                None => Ok(()),
            }
        };
        check("tolerance", &raw.tolerance)?;
        if raw.scenario.is_empty() {
            return Err(bad("no [[scenario]] listed".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &raw.scenario {
            check(&format!("scenario `{}` tolerance", s.name), &s.tolerance)?;
            let valid = !s.name.is_empty()
                && s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                return Err(bad(format!("scenario name `{}`: use letters, digits, `-`, `_` or `.`", s.name)));
            }
            if !names.insert(s.name.clone()) {
                return Err(bad(format!("scenario `{}` listed twice", s.name)));
            }
            if let Some(n) = s.seeds
                && !(1..=MAX_SEEDS).contains(&n)
            {
                return Err(bad(format!("scenario `{}` seeds: must be 1 to {MAX_SEEDS}, not {n}", s.name)));
            }
        }
        let speed_tolerance = raw.speed.tolerance.unwrap_or(DEFAULT_SPEED_TOLERANCE);
        if !(speed_tolerance.is_finite() && speed_tolerance >= 0.0) {
            return Err(bad(format!("speed.tolerance must be a number ≥ 0, not {speed_tolerance}")));
        }
        Ok(GateConfig {
            baselines: dir.join(raw.baselines.as_deref().unwrap_or("baselines")),
            dir,
            tolerances: raw.tolerance,
            speed_tolerance,
            speed_min_wall_s: raw.speed.min_wall_s.unwrap_or(0.5).clamp(0.0, 60.0),
            scenarios: raw
                .scenario
                .into_iter()
                .map(|s| GateScenario {
                    name: s.name,
                    path: s.path,
                    sets: s.set,
                    tolerances: s.tolerance,
                    seeds: s.seeds.unwrap_or(1),
                })
                .collect(),
        })
    }

    /// The tolerance of `metric` in `scenario`: the scenario's own table first, then the global
    /// one; in each an exact name wins over the longest `prefix.*`, and `default` comes last.
    pub fn tolerance(&self, scenario: &GateScenario, metric: &str) -> f64 {
        fn find(t: &BTreeMap<String, f64>, metric: &str) -> Option<f64> {
            if let Some(v) = t.get(metric) {
                return Some(*v);
            }
            t.iter()
                .filter_map(|(k, v)| {
                    let prefix = k.strip_suffix('*')?;
                    metric.starts_with(prefix).then_some((prefix.len(), *v))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, v)| v)
        }
        find(&scenario.tolerances, metric)
            .or_else(|| find(&self.tolerances, metric))
            .or_else(|| scenario.tolerances.get("default").copied())
            .or_else(|| self.tolerances.get("default").copied())
            .unwrap_or(DEFAULT_TOLERANCE)
    }

    fn baseline_path(&self, name: &str) -> PathBuf {
        self.baselines.join(format!("{name}.json"))
    }
}

/// Which way is worse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Times, origin and cross-network bytes, message counts: more is worse.
    LowerIsBetter,
    /// Bytes served within a rack, pod or zone: more is better (the same payload moved more locally).
    HigherIsBetter,
}

/// The direction of a metric [`metrics`] produces.
pub fn direction(metric: &str) -> Direction {
    match metric.strip_prefix("bytes_by_locality.") {
        Some(l) if l.starts_with("same_") => Direction::HigherIsBetter,
        _ => Direction::LowerIsBetter,
    }
}

/// The gated metrics of a summary, by name. `None` is a percentile that falls on an unfinished or
/// failed download (infinitely late).
pub fn metrics(s: &Summary) -> BTreeMap<String, Option<f64>> {
    let mut m = BTreeMap::new();
    for (name, p) in [("host_images", &s.host_images), ("blob_downloads", &s.blob_downloads)] {
        for (q, v) in [("p50", p.p50), ("p99", p.p99), ("max", p.max)] {
            m.insert(format!("{name}.{q}"), v);
        }
    }
    m.insert("incomplete_downloads".into(), Some((s.failed_downloads + s.unfinished_downloads) as f64));
    m.insert("origin_egress_bytes".into(), Some(s.origin_egress_bytes as f64));
    for (k, v) in &s.bytes_by_locality {
        m.insert(format!("bytes_by_locality.{k}"), Some(*v as f64));
    }
    for (k, v) in &s.messages {
        m.insert(format!("messages.{k}.count"), Some(v.count as f64));
    }
    m.insert("announces".into(), Some(s.announces as f64));
    m.insert("metainfo_requests".into(), Some(s.metainfo_requests as f64));
    m
}

/// A committed baseline: `bench/baselines/<name>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub scenario: String,
    pub path: String,
    pub set: Vec<String>,
    pub seed: u64,
    /// Each metric; with several seeds, its mean over them (`None` if any run left it unfinished).
    pub metrics: BTreeMap<String, Option<f64>>,
    /// The seeds of a seeded scenario, in order (absent for one seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Every seed's value of each metric, in `seeds` order (absent for one seed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_seed: BTreeMap<String, Vec<Option<f64>>>,
    /// Advisory; not deterministic.
    pub speed: Option<SpeedSample>,
}

/// How fast a scenario ran relative to the reference loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedSample {
    /// Scenario events per second ÷ reference-loop events per second.
    pub ratio: f64,
    pub events_per_s: f64,
    pub reference_events_per_s: f64,
    /// `release` or `debug`: ratios are compared only within one.
    pub build: String,
}

/// The verdict on one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Regression,
    Improved,
    Ok,
    /// Speed, beyond its tolerance in the worse direction: reported, never failing.
    Slower,
    /// Speed, beyond its tolerance in the better direction.
    Faster,
    /// Speed, within tolerance, or not comparable (another build profile).
    Advisory,
    /// A seeded metric whose mean moved beyond its tolerance, but not significantly given the
    /// spread over seeds: not a regression.
    WithinNoise,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Regression => "**regression**",
            Verdict::Improved => "improved",
            Verdict::Ok => "ok",
            Verdict::Slower => "slower (advisory)",
            Verdict::Faster => "faster (advisory)",
            Verdict::Advisory => "advisory",
            Verdict::WithinNoise => "within seed noise",
        }
    }
}

/// One compared metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub now: Option<f64>,
    /// `(now - baseline) / |baseline|`; ±∞ when the baseline is 0 (or unfinished) and now is not.
    pub change: f64,
    pub tolerance: f64,
    pub verdict: Verdict,
    /// For a seeded metric: the t-test's two-sided p-value (paired or Welch's) and the threshold
    /// it was held to (0.05 over the scenario's number of metrics).
    pub p_value: Option<(f64, f64)>,
}

/// The relative change from `baseline` to `now`, `None` counting as +∞ (never finished).
pub fn relative_change(baseline: Option<f64>, now: Option<f64>) -> f64 {
    match (baseline, now) {
        (None, None) => 0.0,
        (Some(_), None) => f64::INFINITY,
        (None, Some(_)) => f64::NEG_INFINITY,
        (Some(b), Some(n)) if b == n => 0.0,
        (Some(0.0), Some(n)) => f64::INFINITY.copysign(n),
        (Some(b), Some(n)) => (n - b) / b.abs(),
    }
}

/// Compares one metric.
pub fn compare(
    scenario: &str,
    metric: &str,
    baseline: Option<f64>,
    now: Option<f64>,
    tolerance: f64,
    direction: Direction,
) -> Row {
    let change = relative_change(baseline, now);
    let worse = match direction {
        Direction::LowerIsBetter => change,
        Direction::HigherIsBetter => -change,
    };
    let verdict = if worse > tolerance {
        Verdict::Regression
    } else if worse < -tolerance {
        Verdict::Improved
    } else {
        Verdict::Ok
    };
    Row {
        scenario: scenario.into(),
        metric: metric.into(),
        baseline,
        now,
        change,
        tolerance,
        verdict,
        p_value: None,
    }
}

/// The mean of per-seed values, `None` if any is `None` (a run left it unfinished).
pub fn seed_mean(values: &[Option<f64>]) -> Option<f64> {
    let v: Option<Vec<f64>> = values.iter().copied().collect();
    v.filter(|v| !v.is_empty()).map(|v| crate::stats::mean_sd(&v).0)
}

/// Compares one seeded metric: its means as [`compare`] does, then — if the mean moved beyond the
/// tolerance — a t-test at `threshold` decides between a change and seed noise. `paired` when
/// both sides ran the same seeds, in the same order.
#[allow(clippy::too_many_arguments)]
pub fn compare_seeds(
    scenario: &str,
    metric: &str,
    baseline: &[Option<f64>],
    now: &[Option<f64>],
    tolerance: f64,
    direction: Direction,
    paired: bool,
    threshold: f64,
) -> Row {
    let mut row = compare(scenario, metric, seed_mean(baseline), seed_mean(now), tolerance, direction);
    let all = |v: &[Option<f64>]| v.iter().copied().collect::<Option<Vec<f64>>>();
    if let (Some(b), Some(n)) = (all(baseline), all(now))
        && b.len() >= 2
        && n.len() >= 2
    {
        let p = if paired && b.len() == n.len() {
            crate::stats::paired(&b, &n).2
        } else {
            crate::stats::welch(&b, &n).2
        };
        row.p_value = Some((p, threshold));
        if matches!(row.verdict, Verdict::Regression | Verdict::Improved) && p >= threshold {
            row.verdict = Verdict::WithinNoise;
        }
    }
    row
}

/// Compares every metric of a baseline and a run (the union of their names; a metric missing on
/// one side, such as a message kind never sent, counts as 0).
pub fn compare_all(
    config: &GateConfig,
    scenario: &GateScenario,
    baseline: &BTreeMap<String, Option<f64>>,
    now: &BTreeMap<String, Option<f64>>,
) -> Vec<Row> {
    let names: std::collections::BTreeSet<&String> = baseline.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .map(|m| {
            let get = |t: &BTreeMap<String, Option<f64>>| t.get(m).copied().unwrap_or(Some(0.0));
            compare(&scenario.name, m, get(baseline), get(now), config.tolerance(scenario, m), direction(m))
        })
        .collect()
}

/// Sorts rows by the size of their change, largest first; ties by scenario and metric.
pub fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        b.change
            .abs()
            .total_cmp(&a.change.abs())
            .then_with(|| a.scenario.cmp(&b.scenario))
            .then_with(|| a.metric.cmp(&b.metric))
    });
}

/// Options of a gate run beyond its configuration.
#[derive(Clone, Debug, Default)]
pub struct GateOptions {
    /// Rewrite the baselines from this run instead of comparing.
    pub bless: bool,
    /// Only these scenarios (all when empty).
    pub only: Vec<String>,
    /// Overrides applied to every scenario on top of its own: to see what a change would do to
    /// the gate. Not allowed with `bless`.
    pub extra_sets: Vec<String>,
    /// Measure (and compare) the advisory speed ratio.
    pub speed: bool,
    /// Seeded scenarios run on seeds offset+1 ..= offset+N instead of 1 ..= N (and a scenario of
    /// one seed on seed offset+1): to check that other seeds are not flagged.
    pub seed_offset: u64,
}

/// What a gate run found.
#[derive(Clone, Debug, Default)]
pub struct GateReport {
    /// Metric rows, sorted by size of change.
    pub rows: Vec<Row>,
    /// Speed rows (advisory), one per scenario measured.
    pub speed: Vec<Row>,
    pub blessed: Vec<PathBuf>,
    pub scenarios: usize,
    /// The extra overrides the run was made with.
    pub extra_sets: Vec<String>,
}

impl GateReport {
    pub fn regressions(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict == Verdict::Regression).count()
    }

    pub fn passed(&self) -> bool {
        self.regressions() == 0
    }

    /// The report as Markdown: a verdict line, the metrics table (sorted by size of change) and
    /// the advisory speed table.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## shoal gate\n");
        if !self.blessed.is_empty() {
            let _ = writeln!(out, "Blessed {} baseline(s):\n", self.blessed.len());
            for p in &self.blessed {
                let _ = writeln!(out, "- `{}`", p.display());
            }
            return out;
        }
        let improved = self.rows.iter().filter(|r| r.verdict == Verdict::Improved).count();
        let ok = self.rows.iter().filter(|r| r.verdict == Verdict::Ok).count();
        let noise = self.rows.iter().filter(|r| r.verdict == Verdict::WithinNoise).count();
        let _ = writeln!(
            out,
            "**{}**: {} regression(s), {} improvement(s), {} within tolerance, {} within seed noise; {} metrics of {} scenario(s).\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.regressions(),
            improved,
            ok,
            noise,
            self.rows.len(),
            self.scenarios
        );
        if !self.extra_sets.is_empty() {
            let _ = writeln!(out, "Run with extra overrides: `{}`.\n", self.extra_sets.join("`, `"));
        }
        table(&mut out, &self.rows);
        if !self.speed.is_empty() {
            let _ = writeln!(
                out,
                "\nSimulator speed (advisory, never fails the gate): scenario events/s ÷ reference-loop events/s, \
                 measured in the same process.\n"
            );
            table(&mut out, &self.speed);
        }
        out
    }
}

fn fmt_value(metric: &str, v: Option<f64>) -> String {
    match v {
        None => "unfinished".into(),
        Some(v) if metric.starts_with("host_images.") || metric.starts_with("blob_downloads.") => {
            format!("{v:.3} s")
        }
        Some(v) if metric == "speed.ratio" => format!("{v:.3}"),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e18 => group_digits(v as i128),
        Some(v) => format!("{v}"),
    }
}

fn group_digits(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn fmt_change(c: f64) -> String {
    if c.is_infinite() {
        if c > 0.0 { "+∞".into() } else { "−∞".into() }
    } else if c == 0.0 {
        "0".into()
    } else {
        format!("{:+.2} %", c * 100.0)
    }
}

fn table(out: &mut String, rows: &[Row]) {
    let _ =
        writeln!(out, "| scenario | metric | baseline | now | change | tolerance | p (seeds) | verdict |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let p = r.p_value.map_or("".to_string(), |(p, t)| format!("{p:.2e} (< {t:.1e}?)"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | ±{} % | {p} | {} |",
            r.scenario,
            r.metric,
            fmt_value(&r.metric, r.baseline),
            fmt_value(&r.metric, r.now),
            fmt_change(r.change),
            r.tolerance * 100.0,
            r.verdict.label()
        );
    }
}

/// The build profile this code was compiled with, as `perf.json` names it.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

/// The reference workload for the speed ratio: a fixed, seeded loop shaped like the engine's inner
/// loop (a binary-heap event queue, random delays, a little per-node state). Returns its events
/// per second, the best of `rounds` runs of `events` events each.
pub fn reference_loop(events: u64, rounds: u32) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..rounds.max(1) {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5EED);
        let mut queue: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        let mut state = vec![0u64; 4096];
        for node in 0..4096u32 {
            queue.push(Reverse((rng.random_range(0..1_000_000), node)));
        }
        let started = WallClock::now();
        for _ in 0..events {
            let Reverse((t, node)) = queue.pop().expect("never empties");
            let s = &mut state[node as usize];
            *s = s.wrapping_mul(6364136223846793005).wrapping_add(t);
            let next = (node as u64 ^ *s) % 4096;
            queue.push(Reverse((t + rng.random_range(1..1_000_000), next as u32)));
        }
        let wall = started.elapsed().as_secs_f64();
        std::hint::black_box(&state);
        best = best.max(events as f64 / wall.max(1e-9));
    }
    best
}

fn run_once(scenario: &Scenario, name: &str) -> Result<(Summary, u64, f64), GateError> {
    let started = WallClock::now();
    let mut e = Engine::new(scenario, RunOptions::default())
        .map_err(|message| GateError::Engine { name: name.into(), message })?;
    e.run();
    let wall = started.elapsed().as_secs_f64();
    let report = e.report("des", wall);
    Ok((report.summary, report.perf.events, wall))
}

/// Runs the gate: every (selected) scenario once, then either rewrites its baseline (`bless`) or
/// compares against it. `progress` gets one line per step (the CLI sends it to stderr).
pub fn run(
    config: &GateConfig,
    options: &GateOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<GateReport, GateError> {
    if options.bless && !options.extra_sets.is_empty() {
        return Err(GateError::Config {
            path: config.dir.clone(),
            message: "refusing to bless baselines with extra --set overrides; put them in the gate config"
                .into(),
        });
    }
    for o in &options.only {
        if !config.scenarios.iter().any(|s| &s.name == o) {
            return Err(GateError::UnknownScenario(o.clone()));
        }
    }
    let selected: Vec<&GateScenario> = config
        .scenarios
        .iter()
        .filter(|s| options.only.is_empty() || options.only.contains(&s.name))
        .collect();
    let mut report = GateReport { extra_sets: options.extra_sets.clone(), ..GateReport::default() };
    for gs in selected {
        report.scenarios += 1;
        let baseline_path = config.baseline_path(&gs.name);
        let baseline = if options.bless { None } else { Some(load_baseline(&baseline_path, gs)?) };
        let mut sets = gs.sets.clone();
        sets.extend(options.extra_sets.iter().cloned());
        // One seed: the scenario's own (or offset + 1); several: offset + 1 ..= offset + N.
        let seeds: Vec<Option<u64>> = if gs.seeds == 1 && options.seed_offset == 0 {
            vec![None]
        } else {
            (1..=gs.seeds).map(|k| Some(options.seed_offset + k)).collect()
        };
        progress(&format!(
            "gate: running {} ({}){}",
            gs.name,
            describe(gs, &options.extra_sets),
            if gs.seeds > 1 { format!(" on {} seeds", gs.seeds) } else { String::new() }
        ));
        let mut runs = Vec::new();
        let mut scenario = None;
        for seed in &seeds {
            let mut sets = sets.clone();
            if let Some(seed) = seed {
                sets.push(format!("seed={seed}"));
            }
            let s = Scenario::load_with_sets(config.dir.join(&gs.path), &sets)
                .map_err(|error| GateError::Scenario { name: gs.name.clone(), error })?;
            let (summary, events, wall) = run_once(&s, &gs.name)?;
            runs.push((summary.seed, metrics(&summary), events, wall));
            scenario.get_or_insert(s);
        }
        let scenario = scenario.expect("at least one seed");
        let (_, _, events, wall) = runs[0];
        let seed = runs[0].0;
        let run_seeds: Vec<u64> = runs.iter().map(|r| r.0).collect();
        let names: std::collections::BTreeSet<String> =
            runs.iter().flat_map(|r| r.1.keys().cloned()).collect();
        let per_seed: BTreeMap<String, Vec<Option<f64>>> = names
            .into_iter()
            .map(|m| {
                let v = runs.iter().map(|r| r.1.get(&m).copied().unwrap_or(Some(0.0))).collect();
                (m, v)
            })
            .collect();
        let now: BTreeMap<String, Option<f64>> =
            per_seed.iter().map(|(m, v)| (m.clone(), seed_mean(v))).collect();
        let speed = if options.speed {
            // The reference loop right before and right after the speed runs, so both see the same
            // machine load; the best of each side counts (noise only ever slows a run down).
            let mut reference = reference_loop(300_000, 3);
            let mut best_wall = wall;
            let (mut total, mut runs) = (wall, 1);
            while total < config.speed_min_wall_s && runs < 50 {
                let (_, _, w) = run_once(&scenario, &gs.name)?;
                best_wall = best_wall.min(w);
                total += w;
                runs += 1;
            }
            reference = reference.max(reference_loop(300_000, 3));
            let eps = events as f64 / best_wall.max(1e-9);
            Some(SpeedSample {
                ratio: round_sig(eps / reference),
                events_per_s: eps.round(),
                reference_events_per_s: reference.round(),
                build: build_profile().into(),
            })
        } else {
            None
        };
        match baseline {
            None => {
                let b = Baseline {
                    scenario: gs.name.clone(),
                    path: gs.path.clone(),
                    set: gs.sets.clone(),
                    seed,
                    metrics: now,
                    seeds: if gs.seeds > 1 { run_seeds } else { Vec::new() },
                    per_seed: if gs.seeds > 1 { per_seed } else { BTreeMap::new() },
                    speed,
                };
                let mut text = serde_json::to_string_pretty(&b).expect("baselines serialise");
                text.push('\n');
                std::fs::create_dir_all(&config.baselines)
                    .map_err(|error| GateError::Write { path: config.baselines.clone(), error })?;
                std::fs::write(&baseline_path, text)
                    .map_err(|error| GateError::Write { path: baseline_path.clone(), error })?;
                report.blessed.push(baseline_path);
            }
            Some(b) if gs.seeds > 1 => {
                let names: std::collections::BTreeSet<&String> =
                    b.per_seed.keys().chain(per_seed.keys()).collect();
                let threshold = ALPHA / names.len().max(1) as f64;
                let paired = b.seeds == run_seeds;
                for m in names {
                    let zeros = vec![Some(0.0); gs.seeds as usize];
                    let base = b.per_seed.get(m).unwrap_or(&zeros);
                    let now = per_seed.get(m).unwrap_or(&zeros);
                    let tolerance = config.tolerance(gs, m);
                    report.rows.push(compare_seeds(
                        &gs.name,
                        m,
                        base,
                        now,
                        tolerance,
                        direction(m),
                        paired,
                        threshold,
                    ));
                }
                if let Some(now) = speed {
                    report.speed.push(speed_row(&gs.name, b.speed.as_ref(), &now, config.speed_tolerance));
                }
            }
            Some(b) => {
                report.rows.extend(compare_all(config, gs, &b.metrics, &now));
                if let Some(now) = speed {
                    report.speed.push(speed_row(&gs.name, b.speed.as_ref(), &now, config.speed_tolerance));
                }
            }
        }
    }
    sort_rows(&mut report.rows);
    Ok(report)
}

fn describe(gs: &GateScenario, extra: &[String]) -> String {
    let mut s = gs.path.clone();
    for set in gs.sets.iter().chain(extra) {
        s.push_str(&format!(" --set {set}"));
    }
    s
}

fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().ceil() as i32);
    (x * scale).round() / scale
}

/// The advisory speed row: `Slower`/`Faster` beyond the tolerance, `Advisory` within it or when the
/// baseline was measured with another build profile (or not at all).
pub fn speed_row(scenario: &str, baseline: Option<&SpeedSample>, now: &SpeedSample, tolerance: f64) -> Row {
    let comparable = baseline.filter(|b| b.build == now.build);
    let mut row = compare(
        scenario,
        "speed.ratio",
        comparable.map(|b| b.ratio),
        Some(now.ratio),
        tolerance,
        Direction::HigherIsBetter,
    );
    row.verdict = match (comparable, row.verdict) {
        (None, _) => {
            row.baseline = baseline.map(|b| b.ratio);
            row.change = 0.0;
            Verdict::Advisory
        }
        (Some(_), Verdict::Regression) => Verdict::Slower,
        (Some(_), Verdict::Improved) => Verdict::Faster,
        (Some(_), _) => Verdict::Advisory,
    };
    row
}

fn load_baseline(path: &Path, gs: &GateScenario) -> Result<Baseline, GateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GateError::MissingBaseline { path: path.into() });
        }
        Err(error) => return Err(GateError::Read { path: path.into(), error }),
    };
    let bad = |message: String| GateError::BadBaseline { path: path.into(), message };
    let b: Baseline = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let seeded = if gs.seeds > 1 { gs.seeds as usize } else { 0 };
    if b.seeds.len() != seeded || b.per_seed.values().any(|v| v.len() != seeded) {
        return Err(bad(format!(
            "blessed with {} seed(s), but the gate config now asks for {}; re-bless with `shoal gate --bless`",
            b.seeds.len().max(1),
            gs.seeds
        )));
    }
    if b.path != gs.path || b.set != gs.sets {
        return Err(bad(format!(
            "blessed for `{}` with --set {:?}, but the gate config now says `{}` with --set {:?}; \
             re-bless with `shoal gate --bless` if that change is deliberate",
            b.path, b.set, gs.path, gs.sets
        )));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> GateConfig {
        GateConfig::parse(text, Path::new("bench/gate.toml")).expect("valid config")
    }

    const CONFIG: &str = r#"
        [tolerance]
        default = 0.02
        "messages.*" = 0.05
        "host_images.p99" = 0.0

        [[scenario]]
        name = "a"
        path = "../scenarios/smoke-40.toml"

        [[scenario]]
        name = "b"
        path = "../scenarios/kraken-2600.toml"
        set = ["topology.hosts=200"]
        tolerance = { "messages.piece_request.count" = 0.5, default = 0.03 }
    "#;

    #[test]
    fn tolerances_resolve_exact_then_prefix_then_default_scenario_first() {
        let c = config(CONFIG);
        let (a, b) = (&c.scenarios[0], &c.scenarios[1]);
        assert_eq!(c.tolerance(a, "host_images.p99"), 0.0);
        assert_eq!(c.tolerance(a, "messages.bitfield.count"), 0.05);
        assert_eq!(c.tolerance(a, "origin_egress_bytes"), 0.02);
        assert_eq!(c.tolerance(b, "messages.piece_request.count"), 0.5);
        assert_eq!(c.tolerance(b, "messages.bitfield.count"), 0.05);
        assert_eq!(c.tolerance(b, "origin_egress_bytes"), 0.03);
        assert_eq!(c.baselines, Path::new("bench/baselines"));
        assert_eq!(b.sets, vec!["topology.hosts=200".to_string()]);
        let bare = config("[[scenario]]\nname = \"x\"\npath = \"x.toml\"\n");
        assert_eq!(bare.tolerance(&bare.scenarios[0], "anything"), DEFAULT_TOLERANCE);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (text, want) in [
            ("", "no [[scenario]]"),
            ("[tolerance]\ndefault = -1\n[[scenario]]\nname='a'\npath='p'", "tolerance.default"),
            ("[[scenario]]\nname='a'\npath='p'\n[[scenario]]\nname='a'\npath='q'", "listed twice"),
            ("[[scenario]]\nname='a/b'\npath='p'", "scenario name"),
            ("[[scenario]]\nname='a'\npath='p'\nsets=[]", "unknown field"),
            ("[[scenario]]\nname='a'\npath='p'\nseeds=0", "seeds: must be 1 to 100, not 0"),
            ("[[scenario]]\nname='a'\npath='p'\nseeds=-2", "seeds"),
        ] {
            let err = GateConfig::parse(text, Path::new("g.toml")).expect_err(text).to_string();
            assert!(err.contains(want) && err.starts_with("g.toml"), "{text:?}: {err}");
        }
    }

    #[test]
    fn worse_direction_decides_regression_or_improvement() {
        let lower = |b, n, t| compare("s", "m", Some(b), Some(n), t, Direction::LowerIsBetter).verdict;
        assert_eq!(lower(10.0, 10.5, 0.01), Verdict::Regression);
        assert_eq!(lower(10.0, 9.5, 0.01), Verdict::Improved);
        assert_eq!(lower(10.0, 10.05, 0.01), Verdict::Ok);
        assert_eq!(lower(10.0, 10.0, 0.0), Verdict::Ok);
        assert_eq!(lower(10.0, 10.001, 0.0), Verdict::Regression);
        let higher = |b, n| compare("s", "m", Some(b), Some(n), 0.01, Direction::HigherIsBetter).verdict;
        assert_eq!(higher(10.0, 9.0), Verdict::Regression);
        assert_eq!(higher(10.0, 11.0), Verdict::Improved);
        assert_eq!(direction("bytes_by_locality.same_rack"), Direction::HigherIsBetter);
        assert_eq!(direction("bytes_by_locality.origins"), Direction::LowerIsBetter);
        assert_eq!(direction("bytes_by_locality.elsewhere"), Direction::LowerIsBetter);
        assert_eq!(direction("host_images.p99"), Direction::LowerIsBetter);
    }

    #[test]
    fn unfinished_and_zero_baselines_compare_as_infinite_changes() {
        assert_eq!(relative_change(Some(5.0), None), f64::INFINITY);
        assert_eq!(relative_change(None, Some(5.0)), f64::NEG_INFINITY);
        assert_eq!(relative_change(None, None), 0.0);
        assert_eq!(relative_change(Some(0.0), Some(0.0)), 0.0);
        assert_eq!(relative_change(Some(0.0), Some(3.0)), f64::INFINITY);
        assert_eq!(relative_change(Some(4.0), Some(5.0)), 0.25);
        let r = compare("s", "host_images.p99", Some(5.0), None, 1.0, Direction::LowerIsBetter);
        assert_eq!(r.verdict, Verdict::Regression);
        let r = compare("s", "incomplete_downloads", Some(0.0), Some(1.0), 0.5, Direction::LowerIsBetter);
        assert_eq!(r.verdict, Verdict::Regression);
    }

    #[test]
    fn missing_metrics_count_as_zero_and_rows_sort_by_size_of_change() {
        let c = config(CONFIG);
        let base = BTreeMap::from([
            ("host_images.p99".to_string(), Some(10.0)),
            ("messages.error.count".to_string(), Some(2.0)),
            ("origin_egress_bytes".to_string(), Some(100.0)),
        ]);
        let now = BTreeMap::from([
            ("host_images.p99".to_string(), Some(11.0)),
            ("messages.cancel_piece.count".to_string(), Some(1.0)),
            ("origin_egress_bytes".to_string(), Some(101.0)),
        ]);
        let mut rows = compare_all(&c, &c.scenarios[0], &base, &now);
        sort_rows(&mut rows);
        let got: Vec<(&str, Verdict)> = rows.iter().map(|r| (r.metric.as_str(), r.verdict)).collect();
        assert_eq!(
            got,
            vec![
                ("messages.cancel_piece.count", Verdict::Regression), // 0 → 1: +∞
                ("messages.error.count", Verdict::Improved),          // 2 → 0: −100 %
                ("host_images.p99", Verdict::Regression),             // +10 %, tolerance 0
                ("origin_egress_bytes", Verdict::Ok),                 // +1 %, tolerance 2 %
            ]
        );
        let report = GateReport { rows, scenarios: 1, ..GateReport::default() };
        assert!(!report.passed());
        let md = report.markdown();
        assert!(md.contains("**FAIL**: 2 regression(s), 1 improvement(s), 1 within tolerance"), "{md}");
        assert!(
            md.contains(
                "| a | host_images.p99 | 10.000 s | 11.000 s | +10.00 % | ±0 % |  | **regression** |"
            ),
            "{md}"
        );
        assert!(md.contains("| a | messages.cancel_piece.count | 0 | 1 | +∞ |"), "{md}");
    }

    #[test]
    fn speed_is_advisory_and_compared_only_within_a_build_profile() {
        let sample = |ratio: f64, build: &str| SpeedSample {
            ratio,
            events_per_s: 1.0,
            reference_events_per_s: 1.0,
            build: build.into(),
        };
        let now = sample(0.4, "release");
        assert_eq!(speed_row("s", Some(&sample(1.0, "release")), &now, 0.5).verdict, Verdict::Slower);
        assert_eq!(speed_row("s", Some(&sample(0.5, "release")), &now, 0.5).verdict, Verdict::Advisory);
        assert_eq!(speed_row("s", Some(&sample(0.1, "release")), &now, 0.5).verdict, Verdict::Faster);
        assert_eq!(speed_row("s", Some(&sample(1.0, "debug")), &now, 0.5).verdict, Verdict::Advisory);
        assert_eq!(speed_row("s", None, &now, 0.5).verdict, Verdict::Advisory);
        // Slower speed never fails a report.
        let report = GateReport {
            speed: vec![speed_row("s", Some(&sample(1.0, "release")), &now, 0.5)],
            ..GateReport::default()
        };
        assert!(report.passed());
        assert!(reference_loop(10_000, 1) > 0.0);
    }

    #[test]
    fn seeded_changes_count_only_when_significant() {
        let v = |x: &[f64]| x.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        let base = v(&[10.0, 11.0, 12.0, 13.0, 14.0]);
        // +10 % on every seed, same seeds: the paired test sees a consistent change.
        let worse = v(&[11.0, 12.1, 13.2, 14.3, 15.4]);
        let r =
            compare_seeds("s", "host_images.p50", &base, &worse, 0.01, Direction::LowerIsBetter, true, 0.01);
        assert_eq!(r.verdict, Verdict::Regression, "{r:?}");
        // The same means from other seeds, unpaired, with this spread: not significant.
        let shuffled = v(&[15.4, 11.0, 14.3, 12.1, 13.2]);
        let r = compare_seeds(
            "s",
            "host_images.p50",
            &base,
            &shuffled,
            0.01,
            Direction::LowerIsBetter,
            false,
            0.01,
        );
        assert_eq!(r.verdict, Verdict::WithinNoise, "{r:?}");
        // Within tolerance stays ok whatever p; an unfinished seed is an infinite change.
        let r =
            compare_seeds("s", "host_images.p50", &base, &base, 0.01, Direction::LowerIsBetter, true, 0.01);
        assert_eq!((r.verdict, r.p_value), (Verdict::Ok, Some((1.0, 0.01))));
        let mut unfinished = base.clone();
        unfinished[2] = None;
        let r = compare_seeds(
            "s",
            "host_images.p50",
            &base,
            &unfinished,
            0.01,
            Direction::LowerIsBetter,
            true,
            0.01,
        );
        assert_eq!((r.verdict, r.now), (Verdict::Regression, None));
    }

    #[test]
    fn numbers_print_readably() {
        assert_eq!(group_digits(37_319_933_696), "37,319,933,696");
        assert_eq!(group_digits(-1_000), "-1,000");
        assert_eq!(group_digits(999), "999");
        assert_eq!(fmt_change(-0.5), "-50.00 %");
        assert_eq!(round_sig(0.123456), 0.123);
        assert_eq!(round_sig(1234.5), 1230.0);
    }
}
