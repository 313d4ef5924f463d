//! `shoal merge`: one run folder from the folders of the agents of one run that ran as separate
//! processes (`shoal agent`), so that `shoal report` and `shoal compare` read it like any run.
//!
//! Each agent writes the outputs of its own host. The merge
//! - checks the folders are of one run (same scenario, source, seed, engine, policy and node counts)
//!   and that no host appears in two of them;
//! - concatenates downloads.csv, rows kept verbatim, sorted by host then start;
//! - adds up timeseries.csv interval by interval (cumulative columns carry their last value past
//!   the end of a shorter series);
//! - rebuilds summary.json: percentiles over the merged downloads and hosts (each agent's
//!   `host_images` must hold one image pull, whose time is exact), sums of counts and bytes, the
//!   efficiency against the scenario's lower bound;
//! - writes perf.json with the summed events and the longest wall time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::metrics::{Percentiles, round_us};
use super::read::{
    DownloadRow as Download, IntervalRow as Interval, Outcome, ReadError, read_csv, read_json,
};
use super::{Efficiency, Summary, TIMESERIES_COLUMNS};

/// Why folders could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {msg}", dir.display())]
    Mismatch { dir: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Write { path: PathBuf, msg: String },
}

/// What `merge` wrote.
#[derive(Debug)]
pub struct Merged {
    pub summary: Summary,
    pub rows: usize,
}

struct Part {
    dir: PathBuf,
    summary: Summary,
    headers: csv::StringRecord,
    /// (typed, verbatim) rows of downloads.csv.
    rows: Vec<(Download, csv::StringRecord)>,
    series: Vec<Interval>,
    perf: serde_json::Value,
}

fn load(dir: &Path) -> Result<Part, MergeError> {
    let summary: Summary = super::read::read_summary(&dir.join("summary.json"))?;
    let (headers, rows) = super::read::read_csv_records::<Download>(&dir.join("downloads.csv"))?;
    let series: Vec<Interval> = read_csv(&dir.join("timeseries.csv"))?;
    let perf = read_json(&dir.join("perf.json")).unwrap_or(serde_json::Value::Null);
    Ok(Part { dir: dir.to_path_buf(), summary, headers, rows, series, perf })
}

fn mismatch(dir: &Path, msg: impl Into<String>) -> MergeError {
    MergeError::Mismatch { dir: dir.to_path_buf(), msg: msg.into() }
}

/// Merges the run folders `dirs` (at least one) into `out`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged, MergeError> {
    let parts = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>, _>>()?;
    let Some(first) = parts.first() else {
        return Err(mismatch(out, "nothing to merge: name the agents' output folders"));
    };
    let key = |s: &Summary| {
        [
            ("scenario", s.scenario.clone()),
            ("source", s.source.clone()),
            ("seed", s.seed.to_string()),
            ("engine", s.engine.clone()),
            ("policy", s.policy.clone()),
            ("hosts", s.hosts.to_string()),
            ("origins", s.origins.to_string()),
            ("trackers", s.trackers.to_string()),
        ]
    };
    let want = key(&first.summary);
    let mut hosts_seen: BTreeMap<u64, &Path> = BTreeMap::new();
    for p in &parts {
        for ((field, a), (_, b)) in want.iter().zip(key(&p.summary)) {
            if *a != b {
                return Err(mismatch(
                    &p.dir,
                    format!(
                        "summary.json has {field} `{b}` but {} has `{a}`: merge the agents of one run only",
                        first.dir.display()
                    ),
                ));
            }
        }
        if p.headers != first.headers {
            return Err(mismatch(&p.dir, "downloads.csv has other columns than the first folder's"));
        }
        let hosts: BTreeSet<u64> = p.rows.iter().map(|(d, _)| d.host).collect();
        for h in &hosts {
            if let Some(other) = hosts_seen.insert(*h, &p.dir) {
                return Err(mismatch(
                    &p.dir,
                    format!("host {h} also has rows in {}: give each agent's folder once", other.display()),
                ));
            }
        }
        let images = &p.summary.host_images;
        if images.count > 1 || (images.count == 1 && hosts.len() != 1) {
            return Err(mismatch(
                &p.dir,
                format!(
                    "summary.json counts {} image pulls on {} hosts; merge rebuilds per-host times from \
                     one image pull per agent",
                    images.count,
                    hosts.len()
                ),
            ));
        }
        if p.series.first().map(|i| i.time_s) != first.series.first().map(|i| i.time_s) {
            return Err(mismatch(&p.dir, "timeseries.csv has another interval than the first folder's"));
        }
    }

    fs::create_dir_all(out).map_err(|e| MergeError::Write { path: out.to_path_buf(), msg: e.to_string() })?;
    let mut rows: Vec<&(Download, csv::StringRecord)> = parts.iter().flat_map(|p| &p.rows).collect();
    rows.sort_by(|(a, _), (b, _)| a.host.cmp(&b.host).then(a.start_s.total_cmp(&b.start_s)));
    write_downloads(&out.join("downloads.csv"), &first.headers, &rows)?;
    let series: Vec<&[Interval]> = parts.iter().map(|p| p.series.as_slice()).collect();
    write_timeseries(&out.join("timeseries.csv"), &series)?;

    let summary = merged_summary(&parts, &rows);
    write_json(&out.join("summary.json"), &summary)?;
    write_json(&out.join("perf.json"), &merged_perf(&parts))?;
    Ok(Merged { summary, rows: rows.len() })
}

fn write_downloads(
    path: &Path,
    headers: &csv::StringRecord,
    rows: &[&(Download, csv::StringRecord)],
) -> Result<(), MergeError> {
    let err = |e: &dyn std::fmt::Display| MergeError::Write { path: path.to_path_buf(), msg: e.to_string() };
    let mut w = csv::Writer::from_path(path).map_err(|e| err(&e))?;
    w.write_record(headers).map_err(|e| err(&e))?;
    for (_, raw) in rows {
        w.write_record(raw).map_err(|e| err(&e))?;
    }
    w.flush().map_err(|e| err(&e))
}

fn write_timeseries(path: &Path, parts: &[&[Interval]]) -> Result<(), MergeError> {
    let err = |e: &dyn std::fmt::Display| MergeError::Write { path: path.to_path_buf(), msg: e.to_string() };
    let len = parts.iter().map(|p| p.len()).max().unwrap_or(0);
    let step = parts.first().and_then(|p| p.first()).map_or(0.1, |i| i.time_s);
    let mut w = csv::Writer::from_path(path).map_err(|e| err(&e))?;
    w.write_record(TIMESERIES_COLUMNS).map_err(|e| err(&e))?;
    for b in 0..len {
        let (mut moved, mut origin, mut active, mut finished, mut images) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for p in parts {
            match p.get(b) {
                Some(i) => {
                    moved += i.bytes_moved;
                    origin += i.origin_egress_bytes;
                    active += i.downloads_active;
                    finished += i.downloads_finished;
                    images += i.images_finished;
                }
                // Past the end of this agent's series: nothing moves, what finished stays finished.
                None => {
                    if let Some(last) = p.last() {
                        finished += last.downloads_finished;
                        images += last.images_finished;
                    }
                }
            }
        }
        w.write_record([
            format!("{:.6}", step * (b + 1) as f64),
            moved.to_string(),
            format!("{:.0}", moved as f64 / step),
            origin.to_string(),
            active.to_string(),
            finished.to_string(),
            images.to_string(),
        ])
        .map_err(|e| err(&e))?;
    }
    w.flush().map_err(|e| err(&e))
}

fn merged_summary(parts: &[Part], rows: &[&(Download, csv::StringRecord)]) -> Summary {
    let mut s = parts[0].summary.clone();
    let blob_times = rows
        .iter()
        .map(|(d, _)| (d.outcome == Outcome::Complete).then_some(d.duration_s).flatten())
        .collect();
    // One image pull per agent (checked): its max is its time, or none if it did not finish.
    let image_times =
        parts.iter().filter(|p| p.summary.host_images.count == 1).map(|p| p.summary.host_images.max);
    s.blob_downloads = Percentiles::of(blob_times);
    s.host_images = Percentiles::of(image_times.collect());
    let t_min = s.lower_bound.t_min_s;
    let eff = |t: Option<f64>| t.filter(|t| *t > 0.0).map(|t| round_us(t_min / t));
    s.efficiency =
        Efficiency { p50: eff(s.host_images.p50), p99: eff(s.host_images.p99), max: eff(s.host_images.max) };
    s.sim_time_s = parts.iter().map(|p| p.summary.sim_time_s).fold(0.0, f64::max);
    s.failed_downloads = parts.iter().map(|p| p.summary.failed_downloads).sum();
    s.unfinished_downloads = parts.iter().map(|p| p.summary.unfinished_downloads).sum();
    s.origin_egress_bytes = parts.iter().map(|p| p.summary.origin_egress_bytes).sum();
    s.announces = parts.iter().map(|p| p.summary.announces).sum();
    s.metainfo_requests = parts.iter().map(|p| p.summary.metainfo_requests).sum();
    s.bytes_by_locality = BTreeMap::new();
    s.messages = BTreeMap::new();
    for p in parts {
        for (k, v) in &p.summary.bytes_by_locality {
            *s.bytes_by_locality.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &p.summary.messages {
            let m = s.messages.entry(k.clone()).or_default();
            m.count += v.count;
            m.bytes += v.bytes;
        }
    }
    if let Some(z) = s.cross_zone_bytes.as_mut() {
        let zones = parts.iter().filter_map(|p| p.summary.cross_zone_bytes.as_ref());
        (z.total, z.from_origins, z.from_peers) =
            zones.fold((0, 0, 0), |(t, o, p), c| (t + c.total, o + c.from_origins, p + c.from_peers));
        let all: u64 = s.bytes_by_locality.values().sum();
        z.share = if all == 0 { 0.0 } else { round_us(z.total as f64 / all as f64) };
    }
    s.replay = format!(
        "merged from {} agent runs (each folder's summary.json has its agent's command): shoal merge {}",
        parts.len(),
        parts.iter().map(|p| p.dir.display().to_string()).collect::<Vec<_>>().join(" ")
    );
    s
}

/// perf.json of the merged run: events and piece transfers summed, the longest wall time.
fn merged_perf(parts: &[Part]) -> serde_json::Value {
    let num = |p: &Part, k: &str| p.perf.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let wall = parts.iter().map(|p| num(p, "wall_s")).fold(0.0, f64::max);
    let events: f64 = parts.iter().map(|p| num(p, "events")).sum();
    let pieces: f64 = parts.iter().map(|p| num(p, "piece_transfers")).sum();
    let rate = |x: f64| if wall > 0.0 { (x / wall).round() } else { 0.0 };
    serde_json::json!({
        "merged_runs": parts.len(),
        "wall_s": wall,
        "events": events as u64,
        "events_per_s": rate(events),
        "piece_transfers": pieces as u64,
        "piece_transfers_per_s": rate(pieces),
        "peak_rss_bytes": parts.iter().map(|p| num(p, "peak_rss_bytes") as u64).max(),
    })
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), MergeError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| MergeError::Write { path: path.to_path_buf(), msg: e.to_string() })?;
    text.push('\n');
    fs::write(path, text).map_err(|e| MergeError::Write { path: path.to_path_buf(), msg: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(time_s: f64, moved: u64, active: u64, finished: u64, images: u64) -> Interval {
        Interval {
            time_s,
            bytes_moved: moved,
            throughput_bytes_per_s: 0.0,
            origin_egress_bytes: moved / 2,
            downloads_active: active,
            downloads_finished: finished,
            images_finished: images,
        }
    }

    #[test]
    fn timeseries_add_up_and_finished_counts_outlive_a_shorter_series() {
        let a = [interval(0.1, 100, 1, 0, 0), interval(0.2, 50, 0, 1, 1)];
        let b = [interval(0.1, 10, 1, 0, 0), interval(0.2, 10, 1, 0, 0), interval(0.3, 10, 0, 1, 1)];
        let dir = std::env::temp_dir().join(format!("shoal-merge-ts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("timeseries.csv");
        write_timeseries(&path, &[&a, &b]).unwrap();
        let rows: Vec<Interval> = read_csv(&path).unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|i| {
                (
                    i.bytes_moved,
                    i.throughput_bytes_per_s,
                    i.downloads_active,
                    i.downloads_finished,
                    i.images_finished,
                )
            })
            .collect();
        assert_eq!(got, [(110, 1100.0, 2, 0, 0), (60, 600.0, 1, 1, 1), (10, 100.0, 0, 2, 2)]);
        assert_eq!(rows[2].time_s, 0.3);
        assert_eq!(rows[0].origin_egress_bytes, 55);
    }
}
