//! Typed readers for the files a run writes (docs/outputs.md). They depend on the schema only, not
//! on shoal-sim: results produced elsewhere in the same format render too. Fields this crate does not
//! use (messages, perf.json) are ignored, so the schema can grow without breaking old readers.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// One row of downloads.csv: one (host, blob) download.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Download {
    /// Agent host index, 0-based as in the scenario.
    pub host: u64,
    /// Blob name from the scenario.
    pub blob: String,
    /// When the host asked for the blob (its image pull began), seconds since the run started.
    pub start_s: f64,
    /// When the last piece was written, seconds; `None` unless complete.
    pub end_s: Option<f64>,
    /// `end_s − start_s`, seconds; `None` unless complete.
    pub duration_s: Option<f64>,
    /// Payload bytes received from origins.
    pub bytes_from_origins: u64,
    /// Payload bytes received from agents in the host's rack.
    pub bytes_from_same_rack: u64,
    /// Payload bytes received from agents elsewhere (every agent, in a flat topology).
    pub bytes_from_other_racks: u64,
    /// Of the three above, bytes received from a node in another zone; 0 without zones. Absent in
    /// results written before zones were counted.
    #[serde(default)]
    pub bytes_cross_zone: u64,
    /// Good pieces written.
    pub pieces: u64,
    /// Payloads received for pieces already complete (endgame).
    pub duplicates: u64,
    /// How the download ended.
    pub outcome: Outcome,
    /// Why the download failed; empty otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

/// How a download ended (the `outcome` column).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum Outcome {
    /// `complete`: every piece written.
    Complete,
    /// `failed`: the download failed (the row's `error` says why).
    Failed,
    /// `unfinished`: still running at the time limit.
    Unfinished,
}

impl TryFrom<String> for Outcome {
    type Error = String;

    // The csv reader cannot name the column of an error raised here, so the message does.
    fn try_from(s: String) -> Result<Outcome, String> {
        match s.as_str() {
            "complete" => Ok(Outcome::Complete),
            "failed" => Ok(Outcome::Failed),
            "unfinished" => Ok(Outcome::Unfinished),
            _ => Err(format!("field `outcome`: expected complete, failed or unfinished, found `{s}`")),
        }
    }
}

/// One row of timeseries.csv: one interval ending at `time_s`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Interval {
    /// End of the interval, seconds since the run started.
    pub time_s: f64,
    /// Payload bytes delivered during the interval (a piece counts when its last byte arrives).
    pub bytes_moved: u64,
    /// `bytes_moved` over the interval length.
    pub throughput_bytes_per_s: f64,
    /// Of `bytes_moved`, bytes that came from origins.
    pub origin_egress_bytes: u64,
    /// Blob downloads started and not finished at `time_s`.
    pub downloads_active: u64,
    /// Blob downloads complete at `time_s`.
    pub downloads_finished: u64,
    /// Hosts whose whole image is complete at `time_s`.
    pub images_finished: u64,
}

/// Headline percentiles in seconds; `None` where the percentile falls on an unfinished download.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Downloads (or image pulls) counted.
    pub count: usize,
    /// Of those, how many completed.
    pub completed: usize,
    /// Median, seconds (nearest rank).
    pub p50: Option<f64>,
    /// 90th percentile, seconds.
    pub p90: Option<f64>,
    /// 99th percentile, seconds.
    pub p99: Option<f64>,
    /// 99.9th percentile, seconds.
    pub p99_9: Option<f64>,
    /// The slowest, seconds.
    pub max: Option<f64>,
}

/// One term of the lower bound (DESIGN.md §7).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BoundTerm {
    /// The term's name.
    pub name: String,
    /// How it is computed, as text.
    pub formula: String,
    /// Its value, seconds.
    pub seconds: f64,
}

/// summary.json's `lower_bound`: no run can finish the workload faster (DESIGN.md §7).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LowerBound {
    /// The bound, seconds: the largest term.
    pub t_min_s: f64,
    /// The name of the term that sets it.
    pub binding_term: String,
    /// Every term (absent in older summaries).
    #[serde(default)]
    pub terms: Vec<BoundTerm>,
}

/// summary.json's `efficiency`: lower bound ÷ host-image completion; `None` where the percentile
/// falls on an unfinished download.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Efficiency {
    /// At the median host image.
    pub p50: Option<f64>,
    /// At the 99th percentile.
    pub p99: Option<f64>,
    /// At the slowest host image.
    pub max: Option<f64>,
}

/// Published numbers for the same workload, from the scenario's `[reference]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Reference {
    /// Where the numbers were published.
    pub source: String,
    /// Published median host-image completion, seconds.
    pub p50_s: Option<f64>,
    /// Published 99th percentile, seconds.
    pub p99_s: Option<f64>,
    /// Published 99.9th percentile, seconds.
    pub p99_9_s: Option<f64>,
}

/// summary.json's `cross_zone_bytes`: payload bytes received from a node in another zone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CrossZoneBytes {
    /// `from_origins + from_peers`.
    pub total: u64,
    /// Cross-zone bytes received from origins.
    pub from_origins: u64,
    /// Cross-zone bytes received from agents.
    pub from_peers: u64,
    /// `total` over all payload bytes, 0–1.
    pub share: f64,
}

/// summary.json, the fields reports use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The scenario file the run was loaded from, as given.
    pub source: String,
    /// The run's seed.
    pub seed: u64,
    /// `des`, `turmoil` or `real`.
    pub engine: String,
    /// `protocol.policy`; absent in results written before policies existed.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Agent hosts.
    pub hosts: usize,
    /// Origins.
    pub origins: usize,
    /// Trackers.
    pub trackers: usize,
    /// When the run ended, seconds (see docs/outputs.md for each engine).
    pub sim_time_s: f64,
    /// Per-blob download times.
    pub blob_downloads: Percentiles,
    /// Per-image-pull completion times.
    pub host_images: Percentiles,
    /// Downloads that failed.
    pub failed_downloads: usize,
    /// Downloads still running at the time limit.
    pub unfinished_downloads: usize,
    /// The workload's lower bound.
    pub lower_bound: LowerBound,
    /// Lower bound ÷ host-image completion.
    pub efficiency: Efficiency,
    /// Payload bytes the origins sent.
    pub origin_egress_bytes: u64,
    /// Payload bytes by where they came from (`origins`, `same_host`, `same_rack`, `same_pod`,
    /// `same_zone`, `elsewhere`).
    pub bytes_by_locality: BTreeMap<String, u64>,
    /// Only for topologies with zones (and absent in older summaries).
    #[serde(default)]
    pub cross_zone_bytes: Option<CrossZoneBytes>,
    /// The scenario's `[reference]`, when it has one.
    #[serde(default)]
    pub reference: Option<Reference>,
    /// The exact command that replays the run, overrides included (absent in older summaries).
    #[serde(default)]
    pub replay: Option<String>,
    /// True if the run was stopped early (Ctrl-C): its unfinished downloads were cut short.
    #[serde(default)]
    pub interrupted: bool,
}

/// One row of racks.csv: a rack's link traffic over one interval (written only for topologies with
/// racks). Utilisation is empty for an unlimited link.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RackInterval {
    /// End of the interval, seconds.
    pub time_s: f64,
    /// Rack index.
    pub rack: u32,
    /// Bytes that left the rack over its uplink during the interval.
    pub uplink_bytes: f64,
    /// `uplink_bytes` over the link's capacity × interval, 0–1; `None` for an unlimited link.
    pub uplink_utilisation: Option<f64>,
    /// Bytes that entered the rack over its uplink during the interval.
    pub downlink_bytes: f64,
    /// `downlink_bytes` over the link's capacity × interval, 0–1; `None` for an unlimited link.
    pub downlink_utilisation: Option<f64>,
}

/// A run folder, read and checked.
#[derive(Clone, Debug)]
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// downloads.csv, in file order.
    pub downloads: Vec<Download>,
    /// timeseries.csv, in file order.
    pub timeseries: Vec<Interval>,
    /// summary.json.
    pub summary: Summary,
    /// racks.csv, when the topology has racks.
    pub racks: Option<Vec<RackInterval>>,
}

impl Run {
    /// Reads downloads.csv, timeseries.csv and summary.json from `dir`.
    pub fn load(dir: &Path) -> Result<Run, Error> {
        check_run_dir(dir)?;
        let summary_path = dir.join("summary.json");
        let summary = read_json(&summary_path).map_err(|e| match e {
            Error::Parse { file, line, field, msg } => Error::Parse {
                file,
                line,
                field,
                msg: format!("not the summary.json of a run of this shoal version: {msg}"),
            },
            other => other,
        })?;
        Ok(Run {
            dir: dir.to_path_buf(),
            downloads: read_csv(&dir.join("downloads.csv"))?,
            timeseries: read_csv(&dir.join("timeseries.csv"))?,
            summary,
            racks: {
                let path = dir.join("racks.csv");
                if path.exists() { Some(read_csv(&path)?) } else { None }
            },
        })
    }

    /// A short name for legends and tables: the folder's name.
    pub fn label(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }
}

/// Checks that `dir` is a run's output folder with complete outputs, before any file is parsed: it
/// exists, is a folder, and holds a summary.json (written last, so its absence means the run never
/// finished writing) and downloads.csv.
pub fn check_run_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Err(Error::file(
            dir,
            "no such folder (give a run's output folder, e.g. results/<scenario>-<seed>)",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "not a folder (give a run's output folder, not one of its files)"));
    }
    let has = |name: &str| dir.join(name).is_file();
    if !has("summary.json") {
        let msg = if has("downloads.csv")
            || dir.read_dir().is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".partial")))
            }) {
            "no summary.json: the run's outputs are incomplete (it was killed or is still writing; \
             summary.json is written last); run it again"
        } else {
            "not a run folder: no summary.json (a `shoal run` folder holds downloads.csv, timeseries.csv, \
             summary.json and perf.json)"
        };
        return Err(Error::file(dir, msg));
    }
    if !has("downloads.csv") {
        return Err(Error::file(dir, "has a summary.json but no downloads.csv: not a complete run folder"));
    }
    Ok(())
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::file(path, e.to_string()))
}

/// Reads a CSV file with a header row into typed rows; a bad row is an error naming the file, the
/// line and the field.
pub fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, Error> {
    let mut reader = csv::Reader::from_reader(open(path)?);
    let headers = reader.headers().map_err(|e| Error::file(path, e.to_string()))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, &headers, e))?;
        let row = record.deserialize(Some(&headers)).map_err(|e| csv_error(path, &headers, e))?;
        rows.push(row);
    }
    Ok(rows)
}

fn csv_error(path: &Path, headers: &csv::StringRecord, e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let (field, msg) = match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let field = err.field().and_then(|i| headers.get(i as usize)).map(str::to_string);
            (field, err.kind().to_string())
        }
        _ => (None, e.to_string()),
    };
    Error::Parse { file: path.to_path_buf(), line, field, msg }
}

/// Reads a JSON file; a bad document is an error naming the file, the line and the field.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        Error::Parse {
            file: path.to_path_buf(),
            line: Some(e.inner().line() as u64),
            field: (field != ".").then_some(field),
            msg: e.inner().to_string(),
        }
    })
}

fn default_policy() -> String {
    "kraken".to_string()
}
