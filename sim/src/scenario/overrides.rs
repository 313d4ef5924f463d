//! Overrides (`--set key=value`) and the TOML-level preparation of the protocol tables.
//!
//! Overrides are applied to the parsed document before it is deserialized, so an override goes
//! through exactly the validation a value written in the file does.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::error::{FieldError, ScenarioError};

/// Splits `a.b.0.c=value` into its path and its value. The value is parsed as a TOML value
/// (`100`, `1.5`, `true`, `"x"`, `[1, 2]`, `{ kind = "waves", waves = 2, interval_s = 1 }`); anything
/// that is not one is taken as a string, so `--set workload.blobs.0.size=1GB` needs no quotes.
pub fn parse_override(text: &str) -> Result<(Vec<String>, Value), ScenarioError> {
    let bad =
        |message: &str| ScenarioError::Override { text: text.to_string(), message: message.to_string() };
    let (key, raw) = text.split_once('=').ok_or_else(|| bad("expected key=value"))?;
    let key = key.trim();
    let path: Vec<String> = key.split('.').map(|s| s.trim().to_string()).collect();
    if key.is_empty() || path.iter().any(|s| s.is_empty()) {
        return Err(bad("the key must be a dotted path like topology.hosts"));
    }
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    Ok((path, value))
}

/// Sets `path` in `doc` to `value`, creating missing tables. A numeric segment indexes an array,
/// which must already have that element: an override replaces, it does not grow arrays.
pub fn apply_override(
    doc: &mut Value,
    path: &[String],
    value: Value,
    text: &str,
) -> Result<(), ScenarioError> {
    let bad = |message: String| ScenarioError::Override { text: text.to_string(), message };
    let (last, parents) = path.split_last().expect("parse_override refuses empty paths");
    let mut here: &mut Value = doc;
    for (i, seg) in parents.iter().enumerate() {
        let at = path[..=i].join(".");
        here = match here {
            Value::Table(t) => t.entry(seg.clone()).or_insert_with(|| Value::Table(Table::new())),
            Value::Array(a) => {
                let len = a.len();
                let idx = seg.parse::<usize>().map_err(|_| bad(format!("{at}: expected an array index")))?;
                a.get_mut(idx).ok_or_else(|| bad(format!("{at}: index {idx} out of range (length {len})")))?
            }
            other => return Err(bad(format!("{at}: is a {}, not a table", other.type_str()))),
        };
    }
    match here {
        Value::Table(t) => {
            t.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let len = a.len();
            let idx = last
                .parse::<usize>()
                .map_err(|_| bad(format!("{}: expected an array index", path.join("."))))?;
            let slot = a
                .get_mut(idx)
                .ok_or_else(|| bad(format!("{}: index {idx} out of range (length {len})", path.join("."))))?;
            *slot = value;
        }
        other => return Err(bad(format!("{}: is a {}, not a table", parents.join("."), other.type_str()))),
    }
    Ok(())
}

/// Deserializes `value` as a `T`, reporting the field path prefixed with `prefix`.
pub fn deserialize_at<T: DeserializeOwned>(value: Value, prefix: &[&str]) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        path.extend(e.path().iter().filter_map(|seg| match seg {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        }));
        let inner = e.into_inner();
        FieldError::at(path, inner.message().trim_end().to_string())
    })
}
