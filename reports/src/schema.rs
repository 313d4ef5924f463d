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
    pub host: u64,
    pub blob: String,
    pub start_s: f64,
    pub end_s: Option<f64>,
    pub duration_s: Option<f64>,
    pub bytes_from_origins: u64,
    pub bytes_from_same_rack: u64,
    pub bytes_from_other_racks: u64,
    /// Absent in results written before zones were counted.
    #[serde(default)]
    pub bytes_cross_zone: u64,
    pub pieces: u64,
    pub duplicates: u64,
    pub outcome: Outcome,
    #[serde(default)]
    pub error: Option<String>,
}

/// How a download ended (the `outcome` column).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum Outcome {
    Complete,
    Failed,
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
    pub time_s: f64,
    pub bytes_moved: u64,
    pub throughput_bytes_per_s: f64,
    pub origin_egress_bytes: u64,
    pub downloads_active: u64,
    pub downloads_finished: u64,
    pub images_finished: u64,
}

/// Headline percentiles in seconds; `None` where the percentile falls on an unfinished download.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub completed: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BoundTerm {
    pub name: String,
    pub formula: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LowerBound {
    pub t_min_s: f64,
    pub binding_term: String,
    #[serde(default)]
    pub terms: Vec<BoundTerm>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Efficiency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Published numbers for the same workload, from the scenario's `[reference]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Reference {
    pub source: String,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub p99_9_s: Option<f64>,
}

/// summary.json's `cross_zone_bytes`: payload bytes received from a node in another zone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CrossZoneBytes {
    pub total: u64,
    pub from_origins: u64,
    pub from_peers: u64,
    pub share: f64,
}

/// summary.json, the fields reports use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Summary {
    pub scenario: String,
    pub source: String,
    pub seed: u64,
    pub engine: String,
    /// `protocol.policy`; absent in results written before policies existed.
    #[serde(default = "default_policy")]
    pub policy: String,
    pub hosts: usize,
    pub origins: usize,
    pub trackers: usize,
    pub sim_time_s: f64,
    pub blob_downloads: Percentiles,
    pub host_images: Percentiles,
    pub failed_downloads: usize,
    pub unfinished_downloads: usize,
    pub lower_bound: LowerBound,
    pub efficiency: Efficiency,
    pub origin_egress_bytes: u64,
    pub bytes_by_locality: BTreeMap<String, u64>,
    /// Only for topologies with zones (and absent in older summaries).
    #[serde(default)]
    pub cross_zone_bytes: Option<CrossZoneBytes>,
    #[serde(default)]
    pub reference: Option<Reference>,
    /// The exact command that replays the run, overrides included (absent in older summaries).
    #[serde(default)]
    pub replay: Option<String>,
}

/// One row of racks.csv: a rack's link traffic over one interval (written only for topologies with
/// racks). Utilisation is empty for an unlimited link.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RackInterval {
    pub time_s: f64,
    pub rack: u32,
    pub uplink_bytes: f64,
    pub uplink_utilisation: Option<f64>,
    pub downlink_bytes: f64,
    pub downlink_utilisation: Option<f64>,
}

/// A run folder, read and checked.
#[derive(Clone, Debug)]
pub struct Run {
    pub dir: PathBuf,
    pub downloads: Vec<Download>,
    pub timeseries: Vec<Interval>,
    pub summary: Summary,
    /// racks.csv, when the topology has racks.
    pub racks: Option<Vec<RackInterval>>,
}

impl Run {
    /// Reads downloads.csv, timeseries.csv and summary.json from `dir`.
    pub fn load(dir: &Path) -> Result<Run, Error> {
        Ok(Run {
            dir: dir.to_path_buf(),
            downloads: read_csv(&dir.join("downloads.csv"))?,
            timeseries: read_csv(&dir.join("timeseries.csv"))?,
            summary: read_json(&dir.join("summary.json"))?,
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
