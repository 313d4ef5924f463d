//! The files a run writes (DESIGN.md §6): downloads.csv, timeseries.csv and summary.json are
//! byte-identical for the same scenario, seed and build; perf.json holds what is not.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_protocols::Instant;

pub use merge::{MergeError, Merged, merge};
pub use metrics::{
    DownloadRecord, ImageRecord, LOCALITIES, Metrics, Percentiles, RackSample, Source, round_us,
};

use crate::scenario::{BoundTerm, Scenario};

mod merge;
mod metrics;
pub mod read;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoundSummary {
    pub t_min_s: f64,
    pub binding_term: String,
    pub terms: Vec<TermSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TermSummary {
    pub name: String,
    pub formula: String,
    pub seconds: f64,
}

impl From<&BoundTerm> for TermSummary {
    fn from(t: &BoundTerm) -> Self {
        TermSummary { name: t.name.to_string(), formula: t.formula.to_string(), seconds: round_us(t.seconds) }
    }
}

/// Lower bound ÷ achieved time, for the headline percentiles of per-host image completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Efficiency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MessageCount {
    pub count: u64,
    pub bytes: u64,
}

/// summary.json: deterministic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub source: String,
    pub seed: u64,
    pub engine: String,
    /// `protocol.policy` of the scenario.
    pub policy: String,
    pub hosts: usize,
    pub origins: usize,
    pub trackers: usize,
    /// Simulated time when the run ended.
    pub sim_time_s: f64,
    pub blob_downloads: Percentiles,
    pub host_images: Percentiles,
    pub failed_downloads: usize,
    pub unfinished_downloads: usize,
    pub lower_bound: BoundSummary,
    pub efficiency: Efficiency,
    pub origin_egress_bytes: u64,
    pub bytes_by_locality: BTreeMap<String, u64>,
    /// Payload bytes that crossed between zones; only for topologies with zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_zone_bytes: Option<CrossZoneBytes>,
    pub messages: BTreeMap<String, MessageCount>,
    pub announces: u64,
    pub metainfo_requests: u64,
    /// Published numbers for the same workload, from the scenario's `[reference]`.
    pub reference: Option<crate::scenario::Reference>,
    /// The command that replays this run.
    pub replay: String,
    /// The run was stopped early (Ctrl-C) at `sim_time_s`: downloads that had not ended are
    /// unfinished. Absent for runs that ended by themselves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Payload bytes received by a node from a node in another zone (a node outside every zone, such as
/// origins placed "separate", counts as another zone): what a cloud bills as inter-AZ traffic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrossZoneBytes {
    pub total: u64,
    pub from_origins: u64,
    pub from_peers: u64,
    /// `total` over all payload bytes delivered.
    pub share: f64,
}

/// perf.json: how the run went on this machine; never compared byte for byte.
#[derive(Clone, Debug, Serialize)]
pub struct Perf {
    pub wall_s: f64,
    pub events: u64,
    pub events_per_s: f64,
    pub sim_time_s: f64,
    /// Simulated seconds per wall second.
    pub speedup: f64,
    pub piece_transfers: u64,
    pub piece_transfers_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub solver: String,
    pub solver_solves: u64,
    pub solver_flows_resolved: u64,
    pub build: &'static str,
    pub version: &'static str,
    pub cpus: usize,
    /// Which build made the run: the first 16 hex digits of the SHA-256 of the running binary
    /// (`shoal sweep --resume` redoes runs of another build).
    pub build_id: &'static str,
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub summary: Summary,
    pub perf: Perf,
}

fn secs(i: Instant) -> f64 {
    round_us(i.as_secs_f64())
}

/// What any engine knows at the end of a run, for [`summarize`].
#[derive(Debug)]
pub struct RunFacts<'a> {
    pub scenario: &'a Scenario,
    pub metrics: &'a Metrics,
    /// When the run ended (simulated or elapsed time).
    pub now: Instant,
    /// Events (or messages) the engine processed.
    pub events: u64,
    /// The exact command that replays the run.
    pub replay: String,
    pub solver: String,
    pub solver_solves: u64,
    pub solver_flows_resolved: u64,
    /// Stopped early (Ctrl-C) rather than finished or timed out.
    pub interrupted: bool,
}

/// Summarises a finished run of any engine; `wall_s` is the wall time it took.
pub fn summarize(f: &RunFacts<'_>, engine: &str, wall_s: f64) -> RunReport {
    let s = f.scenario;
    let m = f.metrics;
    let now = f.now;
    let blob_times = m.downloads.iter().map(|d| d.end.map(|e| (e - d.start).as_secs_f64())).collect();
    let image_times: Vec<Option<f64>> =
        m.images.iter().map(|i| i.end.map(|e| (e - i.start).as_secs_f64())).collect();
    let host_images = Percentiles::of(image_times);
    let bound = s.lower_bound();
    let t_min = bound.t_min_s();
    let eff = |t: Option<f64>| t.filter(|t| *t > 0.0).map(|t| round_us(t_min / t));
    let messages = m
        .messages
        .iter()
        .map(|(k, (count, bytes))| (k.name().to_string(), MessageCount { count: *count, bytes: *bytes }))
        .collect();
    let summary = Summary {
        scenario: s.name.clone(),
        source: s.source.clone(),
        seed: s.seed,
        engine: engine.to_string(),
        policy: s.protocol.policy.name().to_string(),
        hosts: s.topology.hosts.len(),
        origins: s.origins.len(),
        trackers: s.trackers,
        sim_time_s: secs(now),
        blob_downloads: Percentiles::of(blob_times),
        efficiency: Efficiency {
            p50: eff(host_images.p50),
            p99: eff(host_images.p99),
            max: eff(host_images.max),
        },
        host_images,
        failed_downloads: m.downloads.iter().filter(|d| d.failed.is_some()).count(),
        unfinished_downloads: m.downloads.iter().filter(|d| d.end.is_none() && d.failed.is_none()).count(),
        lower_bound: BoundSummary {
            t_min_s: round_us(t_min),
            binding_term: bound.binding_term().name.to_string(),
            terms: bound.terms.iter().map(TermSummary::from).collect(),
        },
        origin_egress_bytes: m.origin_egress,
        bytes_by_locality: metrics::LOCALITIES
            .iter()
            .zip(m.bytes_by_locality)
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        cross_zone_bytes: s.topology.zones.as_ref().map(|_| {
            let (from_origins, from_peers) = m.cross_zone;
            let total = from_origins + from_peers;
            let all: u64 = m.bytes_by_locality.iter().sum();
            let share = if all == 0 { 0.0 } else { round_us(total as f64 / all as f64) };
            CrossZoneBytes { total, from_origins, from_peers, share }
        }),
        messages,
        announces: m.announces,
        metainfo_requests: m.metainfo_requests,
        reference: s.reference.clone(),
        replay: f.replay.clone(),
        interrupted: f.interrupted,
    };
    let pieces = m.messages.get(&shoal_protocols::MessageKind::PiecePayload).map_or(0, |c| c.0);
    let wall = wall_s.max(1e-9);
    let perf = Perf {
        wall_s: (wall_s * 1e3).round() / 1e3,
        events: f.events,
        events_per_s: (f.events as f64 / wall).round(),
        sim_time_s: secs(now),
        speedup: ((now.as_secs_f64() / wall) * 1e3).round() / 1e3,
        piece_transfers: pieces,
        piece_transfers_per_s: (pieces as f64 / wall).round(),
        peak_rss_bytes: peak_rss_bytes(),
        solver: f.solver.clone(),
        solver_solves: f.solver_solves,
        solver_flows_resolved: f.solver_flows_resolved,
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        version: env!("CARGO_PKG_VERSION"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        build_id: build_id(),
    };
    RunReport { summary, perf }
}

/// Writes downloads.csv, timeseries.csv, then the engine's own files (`extra`, e.g. racks.csv),
/// then summary.json and perf.json into `dir` (any engine).
pub fn write_run_files(
    dir: &Path,
    scenario: &Scenario,
    metrics: &Metrics,
    now: Instant,
    report: &RunReport,
    extra: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // summary.json goes first and comes back last: while the folder is being written it holds no
    // summary, so a run killed half-way never leaves outputs that read as complete.
    for name in ["summary.json"].iter().chain(OUTPUT_FILES.iter().filter(|n| **n != "summary.json")) {
        remove_if_present(&dir.join(name))?;
    }
    let staging = dir.join(format!(".partial-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir(&staging)?;
    let written = (|| {
        write_downloads(&staging, scenario, metrics)?;
        write_timeseries(&staging, metrics, now)?;
        extra(&staging)?;
        write_json(&staging, report)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let mut names: Vec<_> =
        fs::read_dir(&staging)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    // Renamed in a fixed order, summary.json last.
    names.sort_by_key(|n| (n == "summary.json", n.clone()));
    for name in names {
        fs::rename(staging.join(&name), dir.join(&name))?;
    }
    fs::remove_dir(&staging)
}

/// The files a run writes into its folder (reports add report.html, report.md and figures).
pub const OUTPUT_FILES: [&str; 5] =
    ["downloads.csv", "timeseries.csv", "racks.csv", "summary.json", "perf.json"];

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `dir` may receive the outputs of the run that `replay` replays: it does not exist, holds
/// no summary.json (nothing, or a run that never finished writing), or holds the same run's. Else the
/// message says whose outputs are there and how to proceed.
pub fn check_out_dir(dir: &Path, replay: &str) -> Result<(), String> {
    let path = dir.join("summary.json");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let theirs = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("replay").and_then(|r| r.as_str()).map(str::to_string));
    match theirs {
        Some(r) if r == replay => Ok(()),
        Some(r) => Err(format!(
            "{} holds the outputs of another run ({r}); choose another --out, remove the folder, or pass \
             --force to replace them",
            dir.display()
        )),
        None => Err(format!(
            "{} holds a summary.json that is not a shoal run's; choose another --out, or pass --force to \
             replace it",
            dir.display()
        )),
    }
}

fn write_json(dir: &Path, report: &RunReport) -> io::Result<()> {
    let mut summary = serde_json::to_string_pretty(&report.summary).map_err(io::Error::other)?;
    summary.push('\n');
    fs::write(dir.join("summary.json"), summary)?;
    let mut perf = serde_json::to_string_pretty(&report.perf).map_err(io::Error::other)?;
    perf.push('\n');
    fs::write(dir.join("perf.json"), perf)
}

fn write_downloads(dir: &Path, s: &Scenario, m: &Metrics) -> io::Result<()> {
    let mut w = csv::Writer::from_path(dir.join("downloads.csv"))?;
    w.write_record([
        "host",
        "blob",
        "start_s",
        "end_s",
        "duration_s",
        "bytes_from_origins",
        "bytes_from_same_rack",
        "bytes_from_other_racks",
        "bytes_cross_zone",
        "pieces",
        "duplicates",
        "outcome",
        "error",
    ])?;
    for d in &m.downloads {
        let end = d.end.map(|e| format!("{:.6}", e.as_secs_f64())).unwrap_or_default();
        let dur = d.end.map(|e| format!("{:.6}", (e - d.start).as_secs_f64())).unwrap_or_default();
        w.write_record([
            d.host.to_string(),
            s.workload.blobs[d.blob as usize].name.clone(),
            format!("{:.6}", d.start.as_secs_f64()),
            end,
            dur,
            d.bytes_from_origins.to_string(),
            d.bytes_same_rack.to_string(),
            d.bytes_other_racks.to_string(),
            d.bytes_cross_zone.to_string(),
            d.pieces.to_string(),
            d.duplicates.to_string(),
            d.outcome().to_string(),
            d.failed.clone().unwrap_or_default(),
        ])?;
    }
    w.flush()
}

/// The columns of timeseries.csv (docs/outputs.md).
pub const TIMESERIES_COLUMNS: [&str; 7] = [
    "time_s",
    "bytes_moved",
    "throughput_bytes_per_s",
    "origin_egress_bytes",
    "downloads_active",
    "downloads_finished",
    "images_finished",
];

fn write_timeseries(dir: &Path, m: &Metrics, end: Instant) -> io::Result<()> {
    let mut w = csv::Writer::from_path(dir.join("timeseries.csv"))?;
    w.write_record(TIMESERIES_COLUMNS)?;
    let step = m.interval.as_nanos().max(1) as u64;
    let buckets = (end.as_nanos() / step + 1) as usize;
    let mut starts: Vec<u64> = m.downloads.iter().map(|d| d.start.as_nanos()).collect();
    let mut ends: Vec<u64> = m.downloads.iter().filter_map(|d| d.end.map(Instant::as_nanos)).collect();
    let mut image_ends: Vec<u64> = m.images.iter().filter_map(|i| i.end.map(Instant::as_nanos)).collect();
    starts.sort_unstable();
    ends.sort_unstable();
    image_ends.sort_unstable();
    for b in 0..buckets {
        let t = (b as u64 + 1) * step;
        let (moved, origin) = m.series.get(b).copied().unwrap_or((0, 0));
        let started = starts.partition_point(|&x| x <= t);
        let finished = ends.partition_point(|&x| x <= t);
        let images = image_ends.partition_point(|&x| x <= t);
        w.write_record([
            format!("{:.6}", t as f64 / 1e9),
            moved.to_string(),
            format!("{:.0}", moved as f64 * 1e9 / step as f64),
            origin.to_string(),
            started.saturating_sub(finished).to_string(),
            finished.to_string(),
            images.to_string(),
        ])?;
    }
    w.flush()
}

/// The first 16 hex digits of the SHA-256 of the running executable, computed once; `unknown`
/// where it cannot be read.
pub fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use sha2::Digest as _;
        std::env::current_exe()
            .and_then(fs::read)
            .map(|bytes| sha2::Sha256::digest(&bytes)[..8].iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_else(|_| "unknown".to_string())
    })
}

/// The process's peak resident set size, from /proc (Linux); `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
