//! Errors that name where the bad input is: the file, line and column, or the `--set` override that
//! introduced it, and the dotted path of the field.
//!
//! Every check, from TOML syntax to cross-field validation, reports a field path; [`Locator`] maps
//! the path to a place. Spans are looked up by re-parsing the text only when an error occurs, so the
//! happy path pays nothing for them.

use std::fmt;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

/// Where a bad value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A place in the scenario file; `line` and `column` are 1-based, absent when the field is not
    /// written in the file (e.g. a missing required field of a table that is itself absent).
    File { file: String, line_col: Option<(usize, usize)> },
    /// A `key=value` override, quoted as given.
    Override(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line_col: Some((l, c)) } => write!(f, "{file}:{l}:{c}"),
            Location::File { file, line_col: None } => f.write_str(file),
            Location::Override(o) => write!(f, "override `{o}`"),
        }
    }
}

/// Why a scenario could not be loaded. `Display` is the whole message a user needs, e.g.
/// `scenarios/x.toml:12:1: topology.racks.uplink_bytes_per_s: unknown unit "MB/z" (expected …)`.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The text is not TOML.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The text is TOML but a field is unknown, missing, of the wrong type or out of range.
    #[error("{at}: {field}: {message}")]
    Invalid { at: Location, field: String, message: String },
    /// An override is not `key=value` or its path cannot be applied.
    #[error("override `{text}`: {message}")]
    Override { text: String, message: String },
    /// Legal but extreme values (see `ranges`), refused unless the run is forced.
    #[error(
        "{}\nthese values are legal but make the run far costlier than it looks; change them, or pass --force to run anyway",
        values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
    )]
    Extreme { values: Vec<super::ExtremeValue> },
}

impl ScenarioError {
    /// The dotted field path, for errors about a field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A field path plus a message, before it is given a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: Vec<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        FieldError { path: path.iter().map(|s| s.to_string()).collect(), message: message.into() }
    }

    pub fn at(path: Vec<String>, message: impl Into<String>) -> Self {
        FieldError { path, message: message.into() }
    }
}

/// Dotted form of a path: `workload.blobs.0.size`.
pub fn dotted(path: &[String]) -> String {
    if path.is_empty() { "(top level)".to_string() } else { path.join(".") }
}

/// Maps field paths to places in the file or to the override that set them.
#[derive(Debug)]
pub struct Locator {
    pub file: String,
    pub text: String,
    /// (path, the override as written), in the order applied.
    pub overrides: Vec<(Vec<String>, String)>,
}

impl Locator {
    pub fn error(&self, e: FieldError) -> ScenarioError {
        let at = self.locate(&e.path);
        ScenarioError::Invalid { at, field: dotted(&e.path), message: e.message }
    }

    pub fn locate(&self, path: &[String]) -> Location {
        // The last override that set this field or a table containing it wins: it replaced the file.
        if let Some((_, text)) = self.overrides.iter().rev().find(|(p, _)| path.starts_with(p)) {
            return Location::Override(text.clone());
        }
        let found = DeTable::parse(&self.text).ok().map(|doc| span_of(doc.get_ref(), path));
        match found {
            Some((span, true)) => self.file_at(Some(span)),
            // Not in the file: an override that wrote below this path introduced it.
            _ => match self.overrides.iter().rev().find(|(p, _)| p.starts_with(path)) {
                Some((_, text)) => Location::Override(text.clone()),
                None => self.file_at(found.map(|(s, _)| s)),
            },
        }
    }

    pub fn syntax(&self, e: &toml::de::Error) -> ScenarioError {
        let at = self.file_at(e.span().map(|s| s.start));
        ScenarioError::Syntax { at, message: e.message().trim_end().to_string() }
    }

    fn file_at(&self, offset: Option<usize>) -> Location {
        Location::File { file: self.file.clone(), line_col: offset.map(|o| line_col(&self.text, o)) }
    }
}

/// The start of the deepest part of `path` present in `doc`, and whether all of it was present.
/// A table key is located at the key, an array element at the element.
fn span_of(doc: &DeTable<'_>, path: &[String]) -> (usize, bool) {
    let mut table = Some(doc);
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    let mut best = 0;
    for seg in path {
        let value = if let Some(t) = table {
            match t.get_key_value(seg.as_str()) {
                Some((k, v)) => {
                    best = k.span().start;
                    v
                }
                None => return (best, false),
            }
        } else if let Some(a) = array {
            match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(v) => {
                    // An element of an array of tables spans its contents; its header line is
                    // more useful, and the previous key's span already points at the first one.
                    if !v.get_ref().is_table() || v.span().start > best {
                        best = v.span().start;
                    }
                    v
                }
                None => return (best, false),
            }
        } else {
            return (best, false);
        };
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    (best, true)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
