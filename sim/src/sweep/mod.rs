//! Sweeps: many runs of one or more scenarios over a grid of overrides (or explicit cases) and
//! several seeds. A sweep file (docs/sweeps.md) is parsed and every case validated into a [`Plan`]
//! before any run starts; [`run::run_plan`] then runs the plan's runs (or one shard's share) on
//! local threads, each into an ordinary run folder `runs/<case>/<seed>/` written by the same calls
//! as `shoal run`, and skips runs already complete.
//!
//! Errors are [`ScenarioError`]s naming the sweep file, line, column and field; a case's scenario
//! that refuses one of its overrides is reported at the line of the sweep file that wrote it.

pub mod run;

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::scenario::error::{FieldError, Locator};
use crate::scenario::{Location, Scenario, ScenarioError};
use crate::sizing;

/// A validated sweep: its cases in file order, its seeds, and every (case, seed) run in the order
/// they are numbered (case-major), which is the order of sweep.csv and of shard assignment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The sweep file, as given.
    pub sweep: String,
    /// A hash of the runs (folders and replay commands): two plans with the same id make the same
    /// runs.
    pub id: String,
    /// The axes' key paths, in file order (`scenario` first when several scenarios are swept).
    pub axes: Vec<String>,
    pub cases: Vec<Case>,
    pub seeds: Vec<u64>,
    pub runs: Vec<PlannedRun>,
}

/// One case: a scenario with its overrides.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    /// The folder name under `runs/`: `key=value,key=value` for a grid, or the explicit label.
    pub label: String,
    /// The scenario file, relative to the working directory (as the replay command gives it).
    pub scenario: String,
    /// Its overrides in the order applied: the sweep's `sets`, then the case's own.
    pub sets: Vec<String>,
    /// The case's value on each axis, in [`Plan::axes`] order (empty for explicit cases).
    pub axis_values: Vec<String>,
    /// Estimated peak memory of one of its runs ([`sizing::estimate`], des engine).
    pub peak_bytes: u64,
}

/// One (case, seed) run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedRun {
    /// Index into [`Plan::cases`].
    pub case: usize,
    pub seed: u64,
    /// Its folder relative to the sweep's output folder: `runs/<case>/<seed>`.
    pub dir: String,
    /// The `shoal run` command that replays it, as its summary.json records.
    pub replay: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    scenario: Option<String>,
    scenarios: Option<Vec<String>>,
    #[serde(default)]
    axis: Vec<RawAxis>,
    #[serde(default)]
    case: Vec<RawCase>,
    seeds: Option<RawSeeds>,
    #[serde(default)]
    sets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAxis {
    key: String,
    values: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    label: String,
    #[serde(default)]
    set: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSeeds {
    Count(i64),
    List(Vec<u64>),
}

/// A case before validation: its overrides, each with the sweep-file path that wrote it.
struct Draft {
    label: String,
    label_at: Vec<String>,
    scenario: String,
    scenario_at: Vec<String>,
    sets: Vec<(String, Vec<String>)>,
    axis_values: Vec<String>,
}

fn path(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| s.to_string()).collect()
}

/// `value` as `--set` takes it: strings bare unless they would read as another TOML value.
fn override_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => {
            let reparsed = format!("v = {s}").parse::<toml::Table>().ok();
            if reparsed.is_some() { v.to_string() } else { s.clone() }
        }
        other => other.to_string(),
    }
}

/// A folder-safe form of a label: anything but letters, digits and `._=,+-` becomes `_`.
pub fn safe_label(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._=,+-".contains(c) { c } else { '_' }).collect()
}

/// `base.join(rel)` with `.` and `name/..` removed lexically, so a scenario next to the sweep
/// file reads `scenarios/x.toml` rather than `sweeps/../scenarios/x.toml` in replay commands.
fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    let rel = Path::new(rel);
    let joined: Vec<Component<'_>> = if rel.is_absolute() {
        rel.components().collect()
    } else {
        base.components().chain(rel.components()).collect()
    };
    for c in joined {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect()
}

impl Plan {
    /// Reads a sweep file and validates every case by loading its scenario with its overrides;
    /// `force` accepts extreme values, as `shoal run --force` does.
    pub fn load(file: &Path, force: bool) -> Result<Plan, ScenarioError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ScenarioError::Read { path: file.to_path_buf(), source })?;
        Plan::from_toml(&text, file, force)
    }

    /// As [`Plan::load`] from the text of `file`.
    pub fn from_toml(text: &str, file: &Path, force: bool) -> Result<Plan, ScenarioError> {
        let source = file.display().to_string();
        let locator = Locator { file: source.clone(), text: text.to_string(), overrides: Vec::new() };
        let table: toml::Table = toml::from_str(text).map_err(|e| locator.syntax(&e))?;
        let raw: RawSweep = crate::scenario::overrides::deserialize_at(toml::Value::Table(table), &[])
            .map_err(|e| locator.error(e))?;
        let err = |p: Vec<String>, m: String| locator.error(FieldError::at(p, m));
        let base = file.parent().unwrap_or(Path::new(""));

        let scenarios = match (&raw.scenario, &raw.scenarios) {
            (Some(s), None) => vec![s.clone()],
            (None, Some(v)) if !v.is_empty() => v.clone(),
            (None, Some(_)) => return Err(err(path(&["scenarios"]), "give at least one scenario".into())),
            (Some(_), Some(_)) => {
                return Err(err(path(&["scenarios"]), "give `scenario` or `scenarios`, not both".into()));
            }
            (None, None) => {
                return Err(err(path(&["scenario"]), "missing: the scenario file the sweep runs".into()));
            }
        };
        let seeds: Vec<u64> = match &raw.seeds {
            None => return Err(err(path(&["seeds"]), "missing: a count (`seeds = 10`) or a list".into())),
            Some(RawSeeds::Count(n)) if *n < 1 => {
                return Err(err(path(&["seeds"]), format!("{n} seeds: give at least 1")));
            }
            Some(RawSeeds::Count(n)) if *n > 100_000 => {
                return Err(err(path(&["seeds"]), format!("{n} seeds: at most 100000")));
            }
            Some(RawSeeds::Count(n)) => (1..=*n as u64).collect(),
            Some(RawSeeds::List(v)) if v.is_empty() => {
                return Err(err(path(&["seeds"]), "an empty list: give at least one seed".into()));
            }
            Some(RawSeeds::List(v)) => {
                let mut seen = BTreeSet::new();
                if let Some(d) = v.iter().find(|s| !seen.insert(**s)) {
                    return Err(err(path(&["seeds"]), format!("seed {d} is listed twice")));
                }
                v.clone()
            }
        };
        if !raw.axis.is_empty() && !raw.case.is_empty() {
            return Err(err(path(&["case"]), "give `[[axis]]` or `[[case]]` entries, not both".into()));
        }
        let check_set = |text: &str, at: Vec<String>| -> Result<(), ScenarioError> {
            match text.split_once('=') {
                None => Err(err(at, format!("`{text}`: expected key=value"))),
                Some((k, _)) if k.trim() == "seed" => {
                    Err(err(at, "the seed is the sweep's: give `seeds`, not a `seed=` override".into()))
                }
                Some(_) => Ok(()),
            }
        };
        for (i, s) in raw.sets.iter().enumerate() {
            check_set(s, path(&["sets", &i.to_string()]))?;
        }
        let common: Vec<(String, Vec<String>)> =
            raw.sets.iter().enumerate().map(|(i, s)| (s.clone(), path(&["sets", &i.to_string()]))).collect();

        let mut axes: Vec<String> = Vec::new();
        let several = scenarios.len() > 1;
        if several {
            axes.push("scenario".into());
        }
        for (i, a) in raw.axis.iter().enumerate() {
            let at = path(&["axis", &i.to_string(), "key"]);
            if a.key.trim() == "seed" {
                return Err(err(at, "the seed is the sweep's: give `seeds`, not a seed axis".into()));
            }
            if a.key.trim().is_empty() {
                return Err(err(at, "give a key path such as topology.hosts".into()));
            }
            if axes.contains(&a.key) {
                return Err(err(at, format!("axis `{}` is given twice", a.key)));
            }
            if a.values.is_empty() {
                return Err(err(path(&["axis", &i.to_string(), "values"]), "give at least one value".into()));
            }
            axes.push(a.key.clone());
        }

        // Cases: each scenario × (the grid of the axes, or the explicit cases, or the base alone).
        let mut drafts: Vec<Draft> = Vec::new();
        for (si, sc) in scenarios.iter().enumerate() {
            let scenario_at =
                if several { path(&["scenarios", &si.to_string()]) } else { path(&["scenario"]) };
            let scenario = join_clean(base, sc).display().to_string();
            let stem = Path::new(sc).file_stem().map_or(sc.clone(), |s| s.to_string_lossy().into_owned());
            let prefix = if several { vec![format!("scenario={stem}")] } else { vec![] };
            let axis_prefix = if several { vec![stem.clone()] } else { vec![] };
            if !raw.case.is_empty() {
                for (ci, c) in raw.case.iter().enumerate() {
                    let label_at = path(&["case", &ci.to_string(), "label"]);
                    if c.label.is_empty()
                        || c.label.contains('/')
                        || c.label.contains('\\')
                        || c.label == "."
                        || c.label == ".."
                    {
                        return Err(err(
                            label_at,
                            format!("`{}`: a label names a folder: not empty, no `/`", c.label),
                        ));
                    }
                    let mut sets = common.clone();
                    for (k, s) in c.set.iter().enumerate() {
                        let at = path(&["case", &ci.to_string(), "set", &k.to_string()]);
                        check_set(s, at.clone())?;
                        sets.push((s.clone(), at));
                    }
                    let label = if several { format!("{stem},{}", c.label) } else { c.label.clone() };
                    drafts.push(Draft {
                        label,
                        label_at,
                        scenario: scenario.clone(),
                        scenario_at: scenario_at.clone(),
                        sets,
                        axis_values: axis_prefix.clone(),
                    });
                }
                continue;
            }
            // The grid, first axis slowest.
            let mut combos: Vec<Vec<usize>> = vec![vec![]];
            for a in &raw.axis {
                combos = combos
                    .into_iter()
                    .flat_map(|c| (0..a.values.len()).map(move |v| [c.clone(), vec![v]].concat()))
                    .collect();
            }
            for combo in combos {
                let mut sets = common.clone();
                let mut parts = prefix.clone();
                let mut values = axis_prefix.clone();
                for (ai, &vi) in combo.iter().enumerate() {
                    let a = &raw.axis[ai];
                    let v = override_text(&a.values[vi]);
                    sets.push((
                        format!("{}={v}", a.key),
                        path(&["axis", &ai.to_string(), "values", &vi.to_string()]),
                    ));
                    parts.push(format!("{}={v}", a.key));
                    values.push(v);
                }
                let label = if parts.is_empty() { "base".to_string() } else { safe_label(&parts.join(",")) };
                drafts.push(Draft {
                    label,
                    label_at: if raw.axis.is_empty() { scenario_at.clone() } else { path(&["axis"]) },
                    scenario: scenario.clone(),
                    scenario_at: scenario_at.clone(),
                    sets,
                    axis_values: values,
                });
            }
        }
        let mut labels = BTreeSet::new();
        for d in &drafts {
            if !labels.insert(d.label.clone()) {
                return Err(err(d.label_at.clone(), format!("case label `{}` is used twice", d.label)));
            }
        }

        let mut cases = Vec::new();
        let mut runs = Vec::new();
        for d in drafts {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for (s, _) in &d.sets {
                let (k, v) = s.split_once('=').expect("checked above");
                pairs.push((k.trim().to_string(), v.trim().to_string()));
            }
            pairs.push(("seed".into(), seeds[0].to_string()));
            let s = Scenario::load(&d.scenario, &pairs).map_err(|e| relocate(e, &d, &locator))?;
            if !force {
                s.refuse_extremes().map_err(|e| ScenarioError::Invalid {
                    at: locator.locate(&d.label_at),
                    field: "case".into(),
                    message: format!("case `{}` (--force runs it anyway): {e}", d.label),
                })?;
            }
            let peak_bytes = sizing::estimate(&s, sizing::EngineKind::Des).peak_bytes;
            let case = cases.len();
            for &seed in &seeds {
                let mut r = s.clone();
                r.seed = seed;
                runs.push(PlannedRun {
                    case,
                    seed,
                    dir: format!("runs/{}/{seed}", d.label),
                    replay: r.replay_command(),
                });
            }
            cases.push(Case {
                label: d.label,
                scenario: d.scenario,
                sets: d.sets.into_iter().map(|(s, _)| s).collect(),
                axis_values: d.axis_values,
                peak_bytes,
            });
        }
        let id = plan_id(&axes, &runs);
        Ok(Plan { sweep: source, id, axes, cases, seeds, runs })
    }

    /// The runs of shard `i` of `n` (1-based): run k goes to shard `k mod n + 1`.
    pub fn shard(&self, shard: Option<Shard>) -> Vec<usize> {
        (0..self.runs.len()).filter(|k| shard.is_none_or(|s| k % s.count == s.index - 1)).collect()
    }
}

/// A hash of what the runs are: folders and replay commands, in order.
fn plan_id(axes: &[String], runs: &[PlannedRun]) -> String {
    let mut h = Sha256::new();
    h.update(b"shoal sweep 1\n");
    for a in axes {
        h.update(a.as_bytes());
        h.update(b"\n");
    }
    for r in runs {
        h.update(format!("{}\t{}\n", r.dir, r.replay).as_bytes());
    }
    h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A case's scenario refused an override: say so at the line of the sweep file that wrote it.
fn relocate(e: ScenarioError, d: &Draft, locator: &Locator) -> ScenarioError {
    let origin = |text: &str| d.sets.iter().find(|(s, _)| s == text).map(|(_, at)| at.clone());
    let context = format!(" (case `{}`, scenario {})", d.label, d.scenario);
    match e {
        ScenarioError::Invalid { at: Location::Override(text), field, message } => match origin(&text) {
            Some(at) => ScenarioError::Invalid {
                at: locator.locate(&at),
                field,
                message: format!("{message}: `{text}`{context}"),
            },
            None => ScenarioError::Invalid { at: Location::Override(text), field, message },
        },
        ScenarioError::Override { text, message } => match origin(&text) {
            Some(at) => ScenarioError::Invalid {
                at: locator.locate(&at),
                field: text.split_once('=').map_or(text.clone(), |(k, _)| k.to_string()),
                message: format!("{message}: `{text}`{context}"),
            },
            None => ScenarioError::Override { text, message },
        },
        ScenarioError::Read { path, source } => ScenarioError::Invalid {
            at: locator.locate(&d.scenario_at),
            field: d.scenario_at[0].clone(),
            message: format!("{}: cannot read: {source}", path.display()),
        },
        other => other,
    }
}

/// `--shard I/N`: the I-th of N shares (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s}: give I/N with 1 ≤ I ≤ N, e.g. 2/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests;
