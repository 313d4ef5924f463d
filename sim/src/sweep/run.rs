//! Running a plan's runs on local threads: which runs are still to do, how many at once fit in
//! memory, and each run made exactly as `shoal run` makes it (des engine, default solver and
//! interval), written by the same [`Engine::write_outputs`].
//!
//! Ordering: workers take runs in plan order from a shared counter; each run's outputs depend on
//! its scenario and seed only, so which worker ran it, and when, changes nothing but perf.json.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as WallClock;

use super::{Plan, PlannedRun, Shard};
use crate::StopFlag;
use crate::engine::{Engine, RunOptions};
use crate::scenario::Scenario;
use crate::sizing;

/// The file that marks a folder as a sweep's and holds its plan.
pub const PLAN_FILE: &str = "sweep.json";
/// Written into a run's folder when the run could not be made (the scenario failed to build, the
/// disk was full): the message.
pub const ERROR_FILE: &str = "error.txt";

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Runs at once, at most; lowered to what fits in memory.
    pub jobs: usize,
    pub shard: Option<Shard>,
    /// Keep complete runs of the same plan already in the folder.
    pub resume: bool,
    /// Replace whatever the folder holds, and run extreme or too-large runs.
    pub force: bool,
    /// Also require this file in a run folder for the run to count as complete (the binary's
    /// report, `report.html`), so a run killed while its report was drawn is redone.
    pub complete_marker: Option<String>,
}

/// What became of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Its outputs were already in the folder.
    Skipped,
    /// Made now; whether its downloads all completed is summary.json's business.
    Done,
    /// Stopped by the stop flag before it finished: nothing written, redone on `--resume`.
    Interrupted,
    /// Could not be made; the message is also in the folder's error.txt.
    Error(String),
}

/// Progress: a run started or ended (index into [`Plan::runs`]).
#[derive(Debug)]
pub enum Event<'a> {
    Started { run: usize, planned: &'a PlannedRun },
    Ended { run: usize, planned: &'a PlannedRun, status: &'a RunStatus, wall_s: f64 },
}

/// What [`run_plan`] decided before running, for the binary to print.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The runs of this shard, in plan order.
    pub share: Vec<usize>,
    /// The runs among them still to make.
    pub todo: Vec<usize>,
    /// Runs at once.
    pub jobs: usize,
    /// Why `jobs` is below what was asked, if it is.
    pub lowered: Option<String>,
}

/// Why a sweep could not start.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The output folder holds something this sweep must not overwrite, or a run does not fit.
    #[error("{0}")]
    Refused(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io { path: path.to_path_buf(), source }
}

/// Whether `dir` holds the complete outputs of the run `replay` replays: a summary.json that
/// parses, names the same replay command, and did not stop early, made by this build (perf.json's
/// `build_id`), and the marker file, if any. `Err` names another run's replay command found there.
pub fn is_complete(dir: &Path, replay: &str, marker: Option<&str>) -> Result<bool, String> {
    let Ok(text) = fs::read_to_string(dir.join("summary.json")) else { return Ok(false) };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(false) };
    match v.get("replay").and_then(|r| r.as_str()) {
        Some(r) if r == replay => {}
        Some(r) => return Err(r.to_string()),
        None => return Ok(false),
    }
    let interrupted = v.get("interrupted").and_then(|i| i.as_bool()).unwrap_or(false);
    let same_build = fs::read_to_string(dir.join("perf.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|p| p.get("build_id").and_then(|b| b.as_str()) == Some(crate::output::build_id()));
    Ok(!interrupted && same_build && marker.is_none_or(|m| dir.join(m).exists()))
}

/// Decides what to run: checks the folder, finds the runs of `options.shard` still to make and
/// how many fit in memory at once. Writes `sweep.json`. Nothing is run yet.
pub fn schedule(plan: &Plan, out: &Path, options: &SweepOptions) -> Result<Schedule, SweepError> {
    let plan_path = out.join(PLAN_FILE);
    if !options.force
        && let Ok(text) = fs::read_to_string(&plan_path)
    {
        let theirs: Option<String> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
        if theirs.as_deref() != Some(plan.id.as_str()) {
            return Err(SweepError::Refused(format!(
                "{} holds another sweep (plan {}); choose another --out, remove the folder, or pass --force \
                 to replace its runs",
                out.display(),
                theirs.unwrap_or_else(|| "unreadable".into())
            )));
        }
    }
    let share = plan.shard(options.shard);
    let marker = options.complete_marker.as_deref();
    let mut todo = Vec::new();
    let mut complete = 0;
    for &k in &share {
        let r = &plan.runs[k];
        let dir = out.join(&r.dir);
        match is_complete(&dir, &r.replay, marker) {
            Ok(true) if !options.force => complete += 1,
            Err(other) if !options.force => {
                return Err(SweepError::Refused(format!(
                    "{} holds the outputs of another run ({other}); choose another --out, or pass --force",
                    dir.display()
                )));
            }
            _ => todo.push(k),
        }
    }
    if complete > 0 && !options.resume {
        return Err(SweepError::Refused(format!(
            "{} already holds {complete} complete runs of this sweep; pass --resume to keep them and make the \
             rest, or --force to make them all again",
            out.display()
        )));
    }
    let available = sizing::available_memory();
    let mut peaks: Vec<u64> = todo.iter().map(|&k| plan.cases[plan.runs[k].case].peak_bytes).collect();
    peaks.sort_unstable_by(|a, b| b.cmp(a));
    let asked = options.jobs.max(1);
    let mut jobs = asked.min(todo.len().max(1));
    let mut lowered = None;
    if let Some(avail) = available {
        if let Some(&largest) = peaks.first()
            && largest > avail
            && !options.force
        {
            return Err(SweepError::Refused(format!(
                "a run of this sweep does not fit in memory: {} estimated, {} available; lower topology.hosts, \
                 run it on a larger machine, or pass --force",
                sizing::human_bytes(largest),
                sizing::human_bytes(avail)
            )));
        }
        if let Some(fit) = fit_jobs(&peaks, avail, jobs) {
            lowered = Some(format!(
                "--jobs lowered from {asked} to {fit}: {fit} of this sweep's largest runs ({} each, estimated) \
                 fit in the {} available",
                sizing::human_bytes(peaks[0]),
                sizing::human_bytes(avail)
            ));
            jobs = fit;
        }
    }
    fs::create_dir_all(out).map_err(io(out))?;
    let mut json = serde_json::to_string_pretty(plan).map_err(|e| SweepError::Refused(e.to_string()))?;
    json.push('\n');
    // Written aside and renamed: shards sharing the folder write the same plan at once, and a
    // reader must never see half of it.
    let staging = out.join(format!(".{PLAN_FILE}.{}", std::process::id()));
    fs::write(&staging, json).map_err(io(&staging))?;
    fs::rename(&staging, &plan_path).map_err(io(&plan_path))?;
    Ok(Schedule { share, todo, jobs, lowered })
}

/// Runs at once, lowered from `jobs` if the largest `jobs` of `peaks` (sorted descending) could be
/// running together and do not fit in `available` bytes: the most that do (at least 1); `None`
/// when `jobs` fit.
pub fn fit_jobs(peaks: &[u64], available: u64, jobs: usize) -> Option<usize> {
    let mut sum = 0u64;
    let fit = peaks.iter().take_while(|p| {
        sum = sum.saturating_add(**p);
        sum <= available
    });
    let fit = fit.count().max(1);
    (fit < jobs).then_some(fit)
}

/// Makes the scheduled runs, `schedule.jobs` at a time, calling `finish` on each run folder once
/// its outputs are written (the binary renders the report there) and `progress` as runs start
/// and end. Once `stop` is set no run starts, and runs under way end early without writing.
/// Returns each run's status, in `schedule.todo` order.
pub fn run_plan(
    plan: &Plan,
    out: &Path,
    schedule: &Schedule,
    stop: &StopFlag,
    finish: &(dyn Fn(&Path) -> Result<(), String> + Sync),
    progress: &(dyn Fn(Event<'_>) + Sync),
) -> Vec<(usize, RunStatus)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..schedule.jobs {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&k) = schedule.todo.get(i) else { break };
                    let r = &plan.runs[k];
                    progress(Event::Started { run: k, planned: r });
                    let started = WallClock::now();
                    let status = make_run(plan, out, r, stop, finish);
                    progress(Event::Ended {
                        run: k,
                        planned: r,
                        status: &status,
                        wall_s: started.elapsed().as_secs_f64(),
                    });
                    results.lock().expect("no worker panics holding it").push((i, k, status));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no worker panicked");
    results.sort_by_key(|(i, _, _)| *i);
    results.into_iter().map(|(_, k, s)| (k, s)).collect()
}

/// One run, as `shoal run <replay>` makes it.
fn make_run(
    plan: &Plan,
    out: &Path,
    r: &PlannedRun,
    stop: &StopFlag,
    finish: &(dyn Fn(&Path) -> Result<(), String> + Sync),
) -> RunStatus {
    let dir = out.join(&r.dir);
    let error_file = dir.join(ERROR_FILE);
    let _ = fs::remove_file(&error_file);
    let fail = |message: String| {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::write(&error_file, format!("{message}\n"));
        RunStatus::Error(message)
    };
    let case = &plan.cases[r.case];
    let mut sets = case.sets.clone();
    sets.push(format!("seed={}", r.seed));
    let s = match Scenario::load_with_sets(&case.scenario, &sets) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let options = RunOptions { stop: Some(stop.clone()), ..RunOptions::default() };
    let started = WallClock::now();
    let mut e = match Engine::new(&s, options) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    e.run();
    if e.interrupted() {
        return RunStatus::Interrupted;
    }
    let report = e.report("des", started.elapsed().as_secs_f64());
    if report.summary.replay != r.replay {
        return fail(format!(
            "the run's replay command `{}` is not the plan's `{}`",
            report.summary.replay, r.replay
        ));
    }
    if let Err(e) = e.write_outputs(&dir, &report) {
        return fail(format!("writing {}: {e}", dir.display()));
    }
    match finish(&dir) {
        Ok(()) => RunStatus::Done,
        Err(e) => fail(e),
    }
}
