//! Reading back the files a run wrote (`shoal merge`, sweeps): summary.json, downloads.csv and
//! timeseries.csv, typed, with errors that name the file, the line and the field.
//!
//! The reports crate has readers of the same files of its own: it depends on the output schema
//! only, never on this crate (DESIGN.md §1), so that results written by other tools render too.
//! These readers serve the simulator's own needs and read only the columns it uses.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a run folder's file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is missing or unreadable.
    #[error("{}: {msg}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The file is there but does not follow the schema (docs/outputs.md).
    #[error("{}{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
        field.as_ref().map(|f| format!(": field `{f}`")).unwrap_or_default())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The line, where known.
        line: Option<u64>,
        /// The field or column, where known.
        field: Option<String>,
        /// What is wrong.
        msg: String,
    },
}

impl ReadError {
    fn file(path: &Path, msg: impl Into<String>) -> Self {
        ReadError::File { file: path.to_path_buf(), msg: msg.into() }
    }
}

/// How a download ended (the `outcome` column of downloads.csv).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every piece arrived and verified.
    Complete,
    /// The download failed (its `error` column says why).
    Failed,
    /// Still going when the run stopped.
    Unfinished,
}

/// The columns of one downloads.csv row that the simulator reads back.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DownloadRow {
    /// The host (agent index).
    pub host: u64,
    /// When the download started, in seconds.
    pub start_s: f64,
    /// How long it took, in seconds; empty unless complete.
    pub duration_s: Option<f64>,
    /// How it ended.
    pub outcome: Outcome,
}

/// One row of timeseries.csv: one interval ending at `time_s`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct IntervalRow {
    /// The end of the interval, in seconds.
    pub time_s: f64,
    /// Payload bytes delivered in the interval.
    pub bytes_moved: u64,
    /// `bytes_moved` over the interval's length.
    pub throughput_bytes_per_s: f64,
    /// Payload bytes the origins sent in the interval.
    pub origin_egress_bytes: u64,
    /// Downloads started and not finished at the end of the interval.
    pub downloads_active: u64,
    /// Downloads finished by the end of the interval.
    pub downloads_finished: u64,
    /// Image pulls finished by the end of the interval.
    pub images_finished: u64,
}

/// Reads a JSON file; a bad document is an error naming the file, the line and the field.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReadError::file(path, e.to_string()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ReadError::Parse {
            file: path.to_path_buf(),
            line: Some(e.inner().line() as u64),
            field: (field != ".").then_some(field),
            msg: e.inner().to_string(),
        }
    })
}

/// Reads a run's summary.json; a document that is not one says so (another tool's, another version's).
pub fn read_summary(path: &Path) -> Result<super::Summary, ReadError> {
    read_json(path).map_err(|e| match e {
        ReadError::Parse { file, line, field, msg } => ReadError::Parse {
            file,
            line,
            field,
            msg: format!("not the summary.json of a run of this shoal version: {msg}"),
        },
        other => other,
    })
}

/// Reads every row of a CSV file with a header line; a bad row is an error naming the file, the
/// line and the column.
pub fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, ReadError> {
    Ok(read_csv_records(path)?.1.into_iter().map(|(row, _)| row).collect())
}

/// Reads a CSV file as its header and its rows, each typed and verbatim.
pub fn read_csv_records<T: for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<(csv::StringRecord, Vec<(T, csv::StringRecord)>), ReadError> {
    let file = std::fs::File::open(path).map_err(|e| ReadError::file(path, e.to_string()))?;
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    let headers = reader.headers().map_err(|e| ReadError::file(path, e.to_string()))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, &headers, e))?;
        let row = record.deserialize(Some(&headers)).map_err(|e| csv_error(path, &headers, e))?;
        rows.push((row, record));
    }
    Ok((headers, rows))
}

fn csv_error(path: &Path, headers: &csv::StringRecord, e: csv::Error) -> ReadError {
    let line = e.position().map(|p| p.line());
    let (field, msg) = match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let field = err.field().and_then(|i| headers.get(i as usize)).map(str::to_string);
            (field, err.kind().to_string())
        }
        _ => (None, e.to_string()),
    };
    ReadError::Parse { file: path.to_path_buf(), line, field, msg }
}
