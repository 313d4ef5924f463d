//! Reports for shoal runs (DESIGN.md §1, §6): typed readers for downloads.csv, timeseries.csv and
//! summary.json, figures drawn with plotters (PNG with a bundled font, and SVG), a self-contained
//! report.html and a report.md per run, and comparisons between runs.
//!
//! This crate depends on the output schema only (docs/outputs.md), never on the simulator, so
//! results produced elsewhere render the same way.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

pub mod compare;
pub mod compare_cases;
pub mod plots;
pub mod report;
pub mod schema;
pub mod stats;
pub mod sweep;

pub use compare::{Comparison, compare};
pub use report::render;
pub use schema::{Run, check_run_dir};
pub use sweep::{SweepInput, SweepRun, render_sweep};

/// Why a run folder could not be read or its report written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("{}: {msg}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The file is there but does not follow the schema.
    #[error("{}{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
        field.as_ref().map(|f| format!(": field `{f}`")).unwrap_or_default())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The line, 1-based, when the parser knows it.
        line: Option<u64>,
        /// The column (CSV) or path (JSON) of the bad field, when known.
        field: Option<String>,
        /// What the parser said.
        msg: String,
    },
    /// A figure could not be drawn.
    #[error("{}: drawing failed: {msg}", file.display())]
    Plot {
        /// The figure's PNG file.
        file: PathBuf,
        /// What plotters said.
        msg: String,
    },
}

impl Error {
    pub(crate) fn file(path: &Path, msg: impl Into<String>) -> Error {
        Error::File { file: path.to_path_buf(), msg: msg.into() }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::File { file, .. } | Error::Parse { file, .. } | Error::Plot { file, .. } => file,
        }
    }
}

/// Writes `contents` to `path`, naming the file on failure.
pub(crate) fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::file(path, e.to_string()))
}
