//! A sweep's tables and report: sweep.csv (one row per run), cases.csv (per case and metric: n,
//! mean, sd, 95 % Student t interval, median, min, max), sweep.md and sweep.html with a figure of
//! each headline metric against each axis.
//!
//! Every run of the plan appears, whatever became of it: a run folder without summary.json is
//! `error` (it holds error.txt) or `missing` (never made, or interrupted); a run whose downloads
//! did not all complete is `failed` or `unfinished` and still contributes its metrics.
//!
//! Determinism: rows come in plan order and metrics in name order; numbers are printed in Rust's
//! shortest round-trip form, so the same runs give byte-identical CSVs whatever order they were
//! made in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plots::{CdfBand, Chart, IntervalSeries};
use crate::report::{Table, escape, html_page, html_table, inline_svg, markdown_table};
use crate::schema::{Download, read_csv};
use crate::stats::{Describe, describe};
use crate::{Error, write};

/// The metrics drawn against each axis.
pub const HEADLINE: [&str; 3] = ["host_images.p50", "host_images.p99", "host_images.max"];

/// The statuses of a run, in the order they are counted.
pub const STATUSES: [&str; 5] = ["complete", "failed", "unfinished", "error", "missing"];

/// One run of the sweep, as the plan names it.
#[derive(Clone, Debug)]
pub struct SweepRun {
    /// Index into [`SweepInput::cases`].
    pub case: usize,
    /// The seed.
    pub seed: u64,
    /// The run's folder.
    pub dir: PathBuf,
}

/// What a sweep's report is made of: its axes, its cases and every run, in plan order.
#[derive(Clone, Debug)]
pub struct SweepInput {
    /// The sweep file, for titles.
    pub title: String,
    /// The axes' key paths.
    pub axes: Vec<String>,
    /// (label, value on each axis) per case.
    pub cases: Vec<(String, Vec<String>)>,
    /// Every run of the plan.
    pub runs: Vec<SweepRun>,
}

/// A run as read back: its status and its numeric metrics by dotted name.
#[derive(Clone, Debug)]
struct Row {
    status: &'static str,
    metrics: BTreeMap<String, f64>,
}

/// What [`render_sweep`] wrote.
#[derive(Clone, Debug)]
pub struct SweepRendered {
    /// sweep.csv.
    pub runs_csv: PathBuf,
    /// cases.csv.
    pub cases_csv: PathBuf,
    /// sweep.md.
    pub markdown: PathBuf,
    /// sweep.html.
    pub html: PathBuf,
    /// Runs per status, in [`STATUSES`] order.
    pub counts: [usize; 5],
}

/// Every number in `v`, flattened to dotted names (`host_images.p50`, `lower_bound.terms.0.seconds`).
fn flatten(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, f64>) {
    let name = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(v, &name(k), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, &name(&i.to_string()), out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_string(), f);
            }
        }
        _ => {}
    }
}

fn read_row(dir: &Path) -> Result<Row, Error> {
    let path = dir.join("summary.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            let status = if dir.join("error.txt").exists() { "error" } else { "missing" };
            return Ok(Row { status, metrics: BTreeMap::new() });
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        file: path.clone(),
        line: Some(e.line() as u64),
        field: None,
        msg: e.to_string(),
    })?;
    let count = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let status = if v.get("interrupted").and_then(|i| i.as_bool()).unwrap_or(false) {
        "unfinished"
    } else if count("failed_downloads") > 0 {
        "failed"
    } else if count("unfinished_downloads") > 0 {
        "unfinished"
    } else {
        "complete"
    };
    let mut metrics = BTreeMap::new();
    flatten(&v, "", &mut metrics);
    metrics.remove("seed");
    Ok(Row { status, metrics })
}

/// A number as the CSVs print it: shortest round-trip form, empty for none.
fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

/// Reads every run and writes sweep.csv, cases.csv, the figures, sweep.md and sweep.html into `out`.
pub fn render_sweep(out: &Path, input: &SweepInput) -> Result<SweepRendered, Error> {
    let rows: Vec<Row> = input.runs.iter().map(|r| read_row(&r.dir)).collect::<Result<_, _>>()?;
    let names: Vec<String> = {
        let mut all = std::collections::BTreeSet::new();
        for r in &rows {
            all.extend(r.metrics.keys().cloned());
        }
        all.into_iter().collect()
    };
    let mut counts = [0usize; 5];
    for r in &rows {
        counts[STATUSES.iter().position(|s| *s == r.status).expect("a known status")] += 1;
    }

    // sweep.csv
    let runs_csv = out.join("sweep.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["case".to_string()];
    header.extend(input.axes.iter().cloned());
    header.extend(["seed".to_string(), "status".to_string()]);
    header.extend(names.iter().cloned());
    w.write_record(&header).map_err(|e| Error::file(&runs_csv, e.to_string()))?;
    for (run, row) in input.runs.iter().zip(&rows) {
        let (label, values) = &input.cases[run.case];
        let mut rec = vec![label.clone()];
        rec.extend(values.iter().cloned());
        rec.extend([run.seed.to_string(), row.status.to_string()]);
        rec.extend(names.iter().map(|n| num(row.metrics.get(n).copied())));
        w.write_record(&rec).map_err(|e| Error::file(&runs_csv, e.to_string()))?;
    }
    write(&runs_csv, w.into_inner().map_err(|e| Error::file(&runs_csv, e.to_string()))?)?;

    // cases.csv
    let per_case = per_case(input, &rows, &names);
    let cases_csv = out.join("cases.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["case".to_string()];
    header.extend(input.axes.iter().cloned());
    header.push("runs".into());
    header.extend(STATUSES.iter().map(|s| s.to_string()));
    header.extend(
        ["metric", "n", "mean", "sd", "ci95_low", "ci95_high", "median", "min", "max"].map(String::from),
    );
    w.write_record(&header).map_err(|e| Error::file(&cases_csv, e.to_string()))?;
    for (c, (label, values)) in input.cases.iter().enumerate() {
        let pc = &per_case[c];
        for name in &names {
            let mut rec = vec![label.clone()];
            rec.extend(values.iter().cloned());
            rec.push(pc.runs.to_string());
            rec.extend(pc.counts.iter().map(|n| n.to_string()));
            rec.push(name.clone());
            match pc.metrics.get(name) {
                Some(d) => rec.extend([
                    d.n.to_string(),
                    num(Some(d.mean)),
                    num(d.sd),
                    num(d.ci95.map(|c| c.0)),
                    num(d.ci95.map(|c| c.1)),
                    num(Some(d.median)),
                    num(Some(d.min)),
                    num(Some(d.max)),
                ]),
                None => {
                    rec.extend(["0".to_string()].into_iter().chain(std::iter::repeat_n(String::new(), 7)))
                }
            }
            w.write_record(&rec).map_err(|e| Error::file(&cases_csv, e.to_string()))?;
        }
    }
    write(&cases_csv, w.into_inner().map_err(|e| Error::file(&cases_csv, e.to_string()))?)?;

    // Figures: each headline metric against each axis (or against the cases, with no axes).
    let mut figures = Vec::new();
    for metric in HEADLINE {
        if input.axes.is_empty() {
            let chart = Chart::Intervals {
                title: format!("{metric} by case (mean, 95 % CI)"),
                x_desc: "case".into(),
                y_desc: format!("{metric} (s)"),
                categories: input.cases.iter().map(|c| c.0.clone()).collect(),
                series: vec![IntervalSeries {
                    label: String::new(),
                    points: per_case.iter().map(|pc| point(pc.metrics.get(metric))).collect(),
                }],
            };
            figures.push((format!("sweep-{}-by-case", metric.replace('.', "-")), chart));
            continue;
        }
        for (a, axis) in input.axes.iter().enumerate() {
            figures.push((
                format!("sweep-{}-vs-{}", metric.replace('.', "-"), axis.replace('.', "-")),
                axis_chart(input, &per_case, metric, a, axis),
            ));
        }
    }
    figures.push(("sweep-host-completion-cdf".to_string(), cdf_chart(input, &rows)?));
    let mut svgs = Vec::new();
    for (stem, chart) in &figures {
        svgs.push(chart.render(&out.join(format!("{stem}.png")))?);
    }

    let tables = summary_tables(input, &per_case);
    let counts_line =
        STATUSES.iter().zip(counts).map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
    let title = format!("shoal sweep: {}", input.title);
    let note = format!(
        "{} runs: {counts_line}. Every run is counted; failed and unfinished runs contribute their \
         metrics, error and missing runs none. Intervals are 95 % Student t intervals of the mean over \
         seeds (mean ± t(0.975, n−1)·sd/√n).",
        input.runs.len()
    );
    let mut md = format!("# {title}\n\n{note}\n\n");
    let mut html = format!("<h1>{}</h1>\n<p>{}</p>\n", escape(&title), escape(&note));
    for (metric, t) in HEADLINE.iter().zip(&tables) {
        let _ = write!(md, "## {metric} (s)\n\n{}\n", markdown_table(t));
        let _ = write!(html, "<h2>{} (s)</h2>\n{}", escape(metric), html_table(t));
    }
    md += "## Figures\n\n";
    html += "<h2>Figures</h2>\n";
    for ((stem, chart), svg) in figures.iter().zip(&svgs) {
        let (Chart::Intervals { title, .. } | Chart::CdfBands { title, .. }) = chart else {
            unreachable!("sweep figures are intervals and CDF bands")
        };
        let _ = writeln!(md, "### {title}\n\n![{title}]({stem}.png)\n");
        let _ = write!(html, "<figure>\n<h3>{}</h3>\n{}\n</figure>\n", escape(title), inline_svg(svg));
    }
    let markdown = out.join("sweep.md");
    write(&markdown, md)?;
    let html_path = out.join("sweep.html");
    write(&html_path, html_page(&title, &html))?;
    Ok(SweepRendered { runs_csv, cases_csv, markdown, html: html_path, counts })
}

struct PerCase {
    runs: usize,
    counts: [usize; 5],
    metrics: BTreeMap<String, Describe>,
}

fn per_case(input: &SweepInput, rows: &[Row], names: &[String]) -> Vec<PerCase> {
    (0..input.cases.len())
        .map(|c| {
            let mine: Vec<&Row> =
                input.runs.iter().zip(rows).filter(|(r, _)| r.case == c).map(|(_, row)| row).collect();
            let mut counts = [0usize; 5];
            for r in &mine {
                counts[STATUSES.iter().position(|s| *s == r.status).expect("a known status")] += 1;
            }
            let metrics = names
                .iter()
                .filter_map(|n| {
                    let values: Vec<f64> = mine.iter().filter_map(|r| r.metrics.get(n).copied()).collect();
                    describe(&values).map(|d| (n.clone(), d))
                })
                .collect();
            PerCase { runs: mine.len(), counts, metrics }
        })
        .collect()
}

/// (mean, interval low, interval high).
type Point = (f64, f64, f64);

fn point(d: Option<&Describe>) -> Option<Point> {
    d.map(|d| {
        let (lo, hi) = d.ci95.unwrap_or((d.mean, d.mean));
        (d.mean, lo, hi)
    })
}

/// `metric` against axis `a`: one series per combination of the other axes' values.
fn axis_chart(input: &SweepInput, per_case: &[PerCase], metric: &str, a: usize, axis: &str) -> Chart {
    let mut categories: Vec<String> = Vec::new();
    let mut series: Vec<(String, BTreeMap<usize, Option<Point>>)> = Vec::new();
    for (c, (_, values)) in input.cases.iter().enumerate() {
        let x = match categories.iter().position(|v| *v == values[a]) {
            Some(x) => x,
            None => {
                categories.push(values[a].clone());
                categories.len() - 1
            }
        };
        let others: Vec<String> = input
            .axes
            .iter()
            .zip(values)
            .enumerate()
            .filter(|(i, _)| *i != a)
            .map(|(_, (k, v))| format!("{k}={v}"))
            .collect();
        let label = others.join(", ");
        let s = match series.iter().position(|(l, _)| *l == label) {
            Some(s) => s,
            None => {
                series.push((label, BTreeMap::new()));
                series.len() - 1
            }
        };
        series[s].1.insert(x, point(per_case[c].metrics.get(metric)));
    }
    let k = categories.len();
    Chart::Intervals {
        title: format!("{metric} against {axis} (mean, 95 % CI)"),
        x_desc: axis.to_string(),
        y_desc: format!("{metric} (s)"),
        categories,
        series: series
            .into_iter()
            .map(|(label, pts)| IntervalSeries {
                label,
                points: (0..k).map(|x| pts.get(&x).copied().flatten()).collect(),
            })
            .collect(),
    }
}

fn summary_tables(input: &SweepInput, per_case: &[PerCase]) -> Vec<Table> {
    let f = |v: f64| format!("{v:.3}");
    HEADLINE
        .iter()
        .map(|metric| {
            let mut t: Table = vec![
                [
                    "case",
                    "runs",
                    "complete",
                    "failed",
                    "unfinished",
                    "error",
                    "missing",
                    "n",
                    "mean",
                    "95 % CI",
                    "sd",
                    "median",
                    "min",
                    "max",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for (c, (label, _)) in input.cases.iter().enumerate() {
                let pc = &per_case[c];
                let mut row = vec![label.clone(), pc.runs.to_string()];
                row.extend(pc.counts.iter().map(|n| n.to_string()));
                match pc.metrics.get(*metric) {
                    Some(d) => row.extend([
                        d.n.to_string(),
                        f(d.mean),
                        d.ci95.map_or("-".into(), |(lo, hi)| format!("{} to {}", f(lo), f(hi))),
                        d.sd.map_or("-".into(), f),
                        f(d.median),
                        f(d.min),
                        f(d.max),
                    ]),
                    None => row
                        .extend(["0".to_string()].into_iter().chain(std::iter::repeat_n("-".to_string(), 6))),
                }
                t.push(row);
            }
            t
        })
        .collect()
}

/// Points on the time grid of the pooled CDFs.
const GRID: usize = 240;

/// Per case, the CDF of per-host image completion pooled over the seeds that wrote outputs, and
/// the band between their lowest and highest CDFs.
fn cdf_chart(input: &SweepInput, rows: &[Row]) -> Result<Chart, Error> {
    // (case, sorted complete times, hosts) per run with outputs.
    let mut runs: Vec<(usize, Vec<f64>, usize)> = Vec::new();
    for (run, row) in input.runs.iter().zip(rows) {
        if matches!(row.status, "error" | "missing") {
            continue;
        }
        let downloads: Vec<Download> = read_csv(&run.dir.join("downloads.csv"))?;
        let hosts = crate::stats::host_completion(&downloads);
        runs.push((run.case, crate::stats::sorted_complete(hosts.values().copied()), hosts.len()));
    }
    let longest = runs.iter().filter_map(|r| r.1.last().copied()).fold(0.0, f64::max);
    let x: Vec<f64> = (0..=GRID).map(|i| longest * i as f64 / GRID as f64).collect();
    let share = |sorted: &[f64], t: f64| sorted.partition_point(|v| *v <= t);
    let bands = input
        .cases
        .iter()
        .enumerate()
        .filter_map(|(c, (label, _))| {
            let mine: Vec<&(usize, Vec<f64>, usize)> = runs.iter().filter(|r| r.0 == c).collect();
            let total: usize = mine.iter().map(|r| r.2).sum();
            if mine.is_empty() || total == 0 {
                return None;
            }
            let mut band = CdfBand {
                label: format!("{label} ({} seeds)", mine.len()),
                x: x.clone(),
                pooled: Vec::with_capacity(x.len()),
                lo: Vec::with_capacity(x.len()),
                hi: Vec::with_capacity(x.len()),
            };
            for &t in &x {
                let per: Vec<f64> = mine.iter().map(|r| share(&r.1, t) as f64 / r.2.max(1) as f64).collect();
                let done: usize = mine.iter().map(|r| share(&r.1, t)).sum();
                band.pooled.push(done as f64 / total as f64);
                band.lo.push(per.iter().copied().fold(f64::INFINITY, f64::min));
                band.hi.push(per.iter().copied().fold(0.0, f64::max));
            }
            Some(band)
        })
        .collect();
    Ok(Chart::CdfBands { title: "Per-host image completion by case, pooled over seeds".into(), bands })
}
