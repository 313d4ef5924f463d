//! One run's report: four figures (PNG and SVG), report.md beside the PNGs, and a self-contained
//! report.html with the SVGs inline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plots::{Cdf, Chart};
use crate::schema::{Outcome, Percentiles, Run, Summary};
use crate::{Error, stats, write};

/// Bucket width of the download-time histogram, as in Kraken's published figure.
pub const BUCKET_S: f64 = 2.0;

/// The figures of a report, by file stem.
pub const FIGURES: [(&str, &str); 5] = [
    ("blob-download-histogram", "Per-blob download time"),
    ("host-completion-cdf", "Per-host image completion"),
    ("timeseries", "Throughput, origin egress and downloads in progress"),
    ("bytes-by-locality", "Bytes by locality"),
    // Only for topologies with racks (racks.csv).
    ("rack-uplinks", "Rack uplink utilisation"),
];

/// What `render` wrote.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// report.html.
    pub html: PathBuf,
    /// report.md.
    pub markdown: PathBuf,
    /// The PNG figures, in [`FIGURES`] order.
    pub pngs: Vec<PathBuf>,
}

/// Reads the run in `dir` and writes its figures, report.md and report.html into the same folder.
pub fn render(dir: &Path) -> Result<Rendered, Error> {
    let run = Run::load(dir)?;
    let charts = charts(&run);
    let mut pngs = Vec::new();
    let mut svgs = Vec::new();
    for ((stem, _), chart) in FIGURES.iter().zip(&charts) {
        let png = dir.join(format!("{stem}.png"));
        svgs.push(chart.render(&png)?);
        pngs.push(png);
    }
    let markdown = dir.join("report.md");
    write(&markdown, markdown_report(&run.summary, charts.len()))?;
    let html = dir.join("report.html");
    write(&html, html_report(&run.summary, &svgs))?;
    Ok(Rendered { html, markdown, pngs })
}

/// The figures of a run, in the order of `FIGURES`: four, and a fifth where the topology has racks.
pub fn charts(run: &Run) -> Vec<Chart> {
    let s = &run.summary;
    let name = format!("{} (seed {})", s.scenario, s.seed);
    let durations: Vec<f64> = run
        .downloads
        .iter()
        .filter(|d| d.outcome == Outcome::Complete)
        .filter_map(|d| d.duration_s)
        .collect();
    let hosts = stats::host_completion(&run.downloads);
    let cdf = Cdf {
        label: "image completion".into(),
        total: hosts.len(),
        sorted: stats::sorted_complete(hosts.values().copied()),
    };
    let mut previous = 0.0;
    let origin_egress = run
        .timeseries
        .iter()
        .map(|r| {
            let dt = r.time_s - previous;
            previous = r.time_s;
            if dt > 0.0 { r.origin_egress_bytes as f64 / dt } else { 0.0 }
        })
        .collect();
    let mut charts = vec![
        Chart::Histogram { title: format!("Per-blob download time: {name}"), durations, bucket_s: BUCKET_S },
        Chart::Cdf {
            title: format!("Per-host image completion: {name}"),
            cdfs: vec![cdf],
            lower_bound_s: Some(s.lower_bound.t_min_s),
        },
        Chart::Timeseries {
            title: format!("Throughput and downloads over time: {name}"),
            time_s: run.timeseries.iter().map(|r| r.time_s).collect(),
            throughput: run.timeseries.iter().map(|r| r.throughput_bytes_per_s).collect(),
            origin_egress,
            active: run.timeseries.iter().map(|r| r.downloads_active).collect(),
        },
        Chart::Bars { title: format!("Payload bytes by locality: {name}"), bars: localities(s) },
    ];
    if let Some(rows) = &run.racks {
        charts.push(rack_chart(rows, &name));
    }
    charts
}

/// Per interval, the least, median and most utilised rack uplink (unlimited links are skipped).
fn rack_chart(rows: &[crate::schema::RackInterval], name: &str) -> Chart {
    let mut by_time: std::collections::BTreeMap<u64, Vec<f64>> = std::collections::BTreeMap::new();
    let mut racks = std::collections::BTreeSet::new();
    for r in rows {
        racks.insert(r.rack);
        if let Some(u) = r.uplink_utilisation {
            by_time.entry((r.time_s * 1e6).round() as u64).or_default().push(u);
        }
    }
    let (mut time_s, mut min, mut median, mut max) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (t, mut v) in by_time {
        v.sort_by(f64::total_cmp);
        time_s.push(t as f64 / 1e6);
        min.push(v[0]);
        median.push(v[v.len() / 2]);
        max.push(v[v.len() - 1]);
    }
    Chart::Racks {
        title: format!("Rack uplink utilisation: {name}"),
        time_s,
        min,
        median,
        max,
        racks: racks.len(),
    }
}

/// `bytes_by_locality` from nearest to farthest, then anything else the file names.
pub fn localities(s: &Summary) -> Vec<(String, u64)> {
    const ORDER: [&str; 5] = ["origins", "same_rack", "same_pod", "same_zone", "elsewhere"];
    let mut v: Vec<(String, u64)> =
        ORDER.iter().filter_map(|k| s.bytes_by_locality.get(*k).map(|b| (k.to_string(), *b))).collect();
    v.extend(
        s.bytes_by_locality
            .iter()
            .filter(|(k, _)| !ORDER.contains(&k.as_str()))
            .map(|(k, b)| (k.clone(), *b)),
    );
    v
}

/// The command that replays the run: summary.json's own `replay`, or for older summaries without
/// it, the scenario file and seed.
pub fn replay(s: &Summary) -> String {
    s.replay.clone().unwrap_or_else(|| format!("shoal run {} --seed {}", s.source, s.seed))
}

pub(crate) fn secs(v: Option<f64>) -> String {
    v.map_or("unfinished".into(), |v| format!("{v:.3}"))
}

pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

pub(crate) fn gigabytes(b: u64) -> String {
    format!("{:.3} GB", b as f64 / 1e9)
}

/// Rows of a table: header first.
pub(crate) type Table = Vec<Vec<String>>;

fn overview(s: &Summary) -> Table {
    let mut t = vec![
        vec!["".into(), "".into()],
        vec!["scenario".into(), format!("{} ({})", s.scenario, s.source)],
        vec!["seed".into(), s.seed.to_string()],
        vec!["engine".into(), s.engine.clone()],
        vec!["policy".into(), s.policy.clone()],
        vec!["hosts / origins / trackers".into(), format!("{} / {} / {}", s.hosts, s.origins, s.trackers)],
        vec!["simulated time".into(), format!("{:.3} s", s.sim_time_s)],
        vec![
            "lower bound".into(),
            format!("{:.3} s ({})", s.lower_bound.t_min_s, s.lower_bound.binding_term),
        ],
        vec![
            "efficiency (bound ÷ host image completion)".into(),
            format!(
                "p50 {}, p99 {}, max {}",
                percent(s.efficiency.p50),
                percent(s.efficiency.p99),
                percent(s.efficiency.max)
            ),
        ],
        vec!["origin egress".into(), gigabytes(s.origin_egress_bytes)],
        vec![
            "failed / unfinished downloads".into(),
            format!("{} / {}", s.failed_downloads, s.unfinished_downloads),
        ],
    ];
    if s.interrupted {
        t.push(vec![
            "interrupted".into(),
            format!("stopped early (Ctrl-C) at {:.3} s: unfinished downloads were cut short", s.sim_time_s),
        ]);
    }
    if let Some(z) = &s.cross_zone_bytes {
        t.push(vec![
            "cross-zone bytes".into(),
            format!(
                "{} ({}; from origins {}, from peers {})",
                gigabytes(z.total),
                percent(Some(z.share)),
                gigabytes(z.from_origins),
                gigabytes(z.from_peers)
            ),
        ]);
    }
    if let Some(r) = &s.reference {
        t.push(vec!["published reference".into(), r.source.clone()]);
    }
    t
}

fn percentiles(s: &Summary) -> Table {
    let row = |name: &str, p: &Percentiles| {
        vec![
            name.to_string(),
            p.count.to_string(),
            p.completed.to_string(),
            secs(p.p50),
            secs(p.p90),
            secs(p.p99),
            secs(p.p99_9),
            secs(p.max),
        ]
    };
    let mut t = vec![
        ["", "count", "complete", "p50 (s)", "p90 (s)", "p99 (s)", "p99.9 (s)", "max (s)"]
            .map(String::from)
            .to_vec(),
        row("blob downloads", &s.blob_downloads),
        row("host images", &s.host_images),
    ];
    if let Some(r) = &s.reference {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v}"));
        t.push(vec![
            "published (host images)".into(),
            "".into(),
            "".into(),
            f(r.p50_s),
            "-".into(),
            f(r.p99_s),
            f(r.p99_9_s),
            "-".into(),
        ]);
    }
    t
}

fn bound_terms(s: &Summary) -> Table {
    let mut t = vec![["term", "formula", "seconds"].map(String::from).to_vec()];
    t.extend(
        s.lower_bound
            .terms
            .iter()
            .map(|x| vec![x.name.clone(), x.formula.clone(), format!("{:.3}", x.seconds)]),
    );
    t
}

pub(crate) fn markdown_table(t: &Table) -> String {
    let mut out = String::new();
    for (i, row) in t.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(row.len()));
        }
    }
    out
}

pub(crate) fn html_table(t: &Table) -> String {
    let mut out = String::from("<table>\n");
    for (i, row) in t.iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Escapes text for HTML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Prepares a plotters SVG document for inlining: HTML5 needs no namespace declaration, and
/// report.html carries no URL of any kind.
pub(crate) fn inline_svg(svg: &str) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

const REPLAY_NOTE: &str = "Same scenario, seed and build give byte-identical outputs (all but perf.json).";

fn markdown_report(s: &Summary, figures: usize) -> String {
    let mut md = format!("# shoal report: {} (seed {})\n\n", s.scenario, s.seed);
    md += &markdown_table(&overview(s));
    let _ = write!(md, "\nReplay:\n\n    {}\n\n({REPLAY_NOTE})\n\n", replay(s));
    md += "## Completion times\n\n";
    md += &markdown_table(&percentiles(s));
    md += "\nNearest-rank percentiles; an unfinished or failed download counts as infinitely late.\n\n";
    md += "## Lower bound\n\n";
    md += &markdown_table(&bound_terms(s));
    md += "\n## Figures\n\n";
    for (stem, caption) in FIGURES.iter().take(figures) {
        let _ = writeln!(md, "### {caption}\n\n![{caption}]({stem}.png)\n");
    }
    md
}

pub(crate) const CSS: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}\
pre{background:#f6f6f6;padding:8px;overflow-x:auto}svg{max-width:100%;height:auto}figure{margin:1.5em 0}";

pub(crate) fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn html_report(s: &Summary, svgs: &[String]) -> String {
    let title = format!("shoal report: {} (seed {})", s.scenario, s.seed);
    let mut b = format!("<h1>{}</h1>\n", escape(&title));
    b += &html_table(&overview(s));
    let _ = write!(b, "<p>Replay:</p>\n<pre>{}</pre>\n<p>{}</p>\n", escape(&replay(s)), escape(REPLAY_NOTE));
    b += "<h2>Completion times</h2>\n";
    b += &html_table(&percentiles(s));
    b += "<p>Nearest-rank percentiles; an unfinished or failed download counts as infinitely late.</p>\n";
    b += "<h2>Lower bound</h2>\n";
    b += &html_table(&bound_terms(s));
    b += "<h2>Figures</h2>\n";
    for ((_, caption), svg) in FIGURES.iter().zip(svgs) {
        let _ = write!(b, "<figure>\n<h3>{}</h3>\n{}\n</figure>\n", escape(caption), inline_svg(svg));
    }
    html_page(&title, &b)
}
