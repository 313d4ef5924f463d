//! Comparing runs: overlaid CDFs of per-host image completion and a table of headline metrics with
//! each run's ratio to the first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plots::{Cdf, Chart};
use crate::report::{escape, gigabytes, html_page, html_table, inline_svg, markdown_table, percent, secs};
use crate::schema::Run;
use crate::{Error, stats, write};

/// The headline metrics, in table order.
pub const METRICS: [&str; 7] =
    ["p50 (s)", "p99 (s)", "p99.9 (s)", "max (s)", "origin egress", "efficiency p50", "efficiency max"];

/// One run's headline metrics (host image completion, origin egress, efficiency).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The run folder's name, or its whole path when two runs share a name.
    pub label: String,
    /// summary.json's `scenario`.
    pub scenario: String,
    /// `protocol.policy` of the run.
    pub policy: String,
    /// Agent hosts in the run.
    pub hosts: usize,
    /// The run's seed.
    pub seed: u64,
    /// The run's `--set` overrides, from summary.json's `replay` (absent in older summaries).
    pub settings: Option<String>,
    /// In the order of `METRICS`; `None` where the run did not finish (or has no efficiency).
    pub values: [Option<f64>; 7],
}

/// A comparison of runs; the first is the baseline.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// One row per run, in the order given; the first is the baseline of the ratios.
    pub rows: Vec<Row>,
    /// Sorted per-host completion times and host count, per run.
    pub cdfs: Vec<Cdf>,
    /// The lower bound, when all runs share it.
    pub lower_bound_s: Option<f64>,
}

impl Comparison {
    /// Compares loaded runs; the first is the baseline.
    pub fn of(runs: &[Run]) -> Comparison {
        let mut labels: Vec<String> = runs.iter().map(Run::label).collect();
        let unique = labels.iter().enumerate().all(|(i, l)| !labels[..i].contains(l));
        if !unique {
            labels = runs.iter().map(|r| r.dir.display().to_string()).collect();
        }
        let rows = runs
            .iter()
            .zip(&labels)
            .map(|(r, label)| {
                let s = &r.summary;
                let h = &s.host_images;
                Row {
                    label: label.clone(),
                    scenario: s.scenario.clone(),
                    policy: s.policy.clone(),
                    hosts: s.hosts,
                    seed: s.seed,
                    settings: s.replay.as_deref().map(settings_of),
                    values: [
                        h.p50,
                        h.p99,
                        h.p99_9,
                        h.max,
                        Some(s.origin_egress_bytes as f64),
                        s.efficiency.p50,
                        s.efficiency.max,
                    ],
                }
            })
            .collect();
        let cdfs = runs
            .iter()
            .zip(&labels)
            .map(|(r, label)| {
                let hosts = stats::host_completion(&r.downloads);
                Cdf {
                    label: label.clone(),
                    total: hosts.len(),
                    sorted: stats::sorted_complete(hosts.values().copied()),
                }
            })
            .collect();
        let bounds: Vec<f64> = runs.iter().map(|r| r.summary.lower_bound.t_min_s).collect();
        let lower_bound_s = bounds.first().copied().filter(|b| bounds.iter().all(|x| x == b));
        Comparison { rows, cdfs, lower_bound_s }
    }

    /// Whether every run is of the same scenario.
    pub fn same_scenario(&self) -> bool {
        self.rows.iter().all(|r| r.scenario == self.rows[0].scenario)
    }

    /// Whether the runs, of different scenarios or not, pull the same workload over networks with
    /// the same lower bound and host count: then they compare policies or topologies fairly.
    pub fn same_workload(&self) -> bool {
        self.lower_bound_s.is_some() && self.rows.iter().all(|r| r.hosts == self.rows[0].hosts)
    }

    /// Run `i`'s value of metric `m` over the first run's; `None` when either is missing or the
    /// first is zero.
    pub fn ratio(&self, i: usize, m: usize) -> Option<f64> {
        let base = self.rows.first()?.values[m]?;
        let v = self.rows.get(i)?.values[m]?;
        (base != 0.0).then(|| v / base)
    }

    /// Whether the runs of one scenario were run with different `--set` overrides.
    pub fn different_settings(&self) -> bool {
        self.rows.iter().any(|r| r.settings.is_some() && r.settings != self.rows[0].settings)
    }

    fn note(&self) -> String {
        if self.same_scenario() && self.different_settings() {
            let runs: Vec<String> = self
                .rows
                .iter()
                .map(|r| {
                    let set = r.settings.as_deref().filter(|s| !s.is_empty()).unwrap_or("no overrides");
                    format!("{}: `{}`", r.label, set)
                })
                .collect();
            format!(
                "All runs are of scenario `{}`, **with different settings** ({}). Ratios are to the first run.",
                self.rows[0].scenario,
                runs.join("; ")
            )
        } else if self.same_scenario() {
            format!("All runs are of scenario `{}`. Ratios are to the first run.", self.rows[0].scenario)
        } else if self.same_workload() {
            let names: Vec<String> =
                self.rows.iter().map(|r| format!("{} ({})", r.scenario, r.policy)).collect();
            format!(
                "The runs are of different scenarios ({}) with the same host count and lower bound: they compare policies or topologies on one workload. Ratios are to the first run.",
                names.join(", ")
            )
        } else {
            let names: Vec<&str> = self.rows.iter().map(|r| r.scenario.as_str()).collect();
            format!(
                "**The runs are of different scenarios** ({}): their numbers measure different workloads. Ratios are to the first run.",
                names.join(", ")
            )
        }
    }

    fn table(&self) -> Vec<Vec<String>> {
        let mut header = vec!["run".to_string(), "scenario".into(), "policy".into(), "seed".into()];
        for m in METRICS {
            header.push(m.into());
            header.push("× first".into());
        }
        let mut t = vec![header];
        for (i, r) in self.rows.iter().enumerate() {
            let mut row = vec![r.label.clone(), r.scenario.clone(), r.policy.clone(), r.seed.to_string()];
            for (m, v) in r.values.iter().enumerate() {
                row.push(match m {
                    0..=3 => secs(*v),
                    4 => v.map_or("-".into(), |b| gigabytes(b as u64)),
                    _ => percent(*v),
                });
                row.push(self.ratio(i, m).map_or("-".into(), |x| format!("{x:.3}")));
            }
            t.push(row);
        }
        t
    }

    /// The comparison as Markdown, with the CDF figure as `png`.
    pub fn markdown(&self, png: &str) -> String {
        let mut md = String::from("# shoal comparison\n\n");
        let _ = writeln!(md, "{}\n", self.note());
        md += "Host image completion percentiles, origin egress and efficiency (lower bound ÷ host image completion).\n\n";
        md += &markdown_table(&self.table());
        let _ = writeln!(md, "\n![Per-host image completion]({png})");
        md
    }

    /// The comparison as a self-contained HTML page with the CDF inline.
    pub fn html(&self, svg: &str) -> String {
        let note = escape(&self.note()).replace("**", "");
        let mut b = format!("<h1>shoal comparison</h1>\n<p>{note}</p>\n");
        b += "<p>Host image completion percentiles, origin egress and efficiency (lower bound ÷ host image completion).</p>\n";
        b += &html_table(&self.table());
        let _ = write!(b, "<figure>\n{}\n</figure>\n", inline_svg(svg));
        html_page("shoal comparison", &b)
    }

    /// The overlaid CDFs.
    pub fn chart(&self) -> Chart {
        Chart::Cdf {
            title: "Per-host image completion, by run".into(),
            cdfs: self.cdfs.clone(),
            lower_bound_s: self.lower_bound_s,
        }
    }
}

/// What `compare` wrote.
#[derive(Clone, Debug)]
pub struct Compared {
    /// The comparison that was rendered.
    pub comparison: Comparison,
    /// compare.html.
    pub html: PathBuf,
    /// compare.md.
    pub markdown: PathBuf,
    /// compare-cdf.png.
    pub png: PathBuf,
}

/// Reads the runs in `dirs` and writes compare.md, compare.html and compare-cdf.png into `out`.
pub fn compare(dirs: &[PathBuf], out: &Path) -> Result<Compared, Error> {
    let runs = dirs.iter().map(|d| Run::load(d)).collect::<Result<Vec<_>, _>>()?;
    let comparison = Comparison::of(&runs);
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    let png = out.join("compare-cdf.png");
    let svg = comparison.chart().render(&png)?;
    let markdown = out.join("compare.md");
    write(&markdown, comparison.markdown("compare-cdf.png"))?;
    let html = out.join("compare.html");
    write(&html, comparison.html(&svg))?;
    Ok(Compared { comparison, html, markdown, png })
}

/// The `--set` part of a replay command (`shoal run FILE --seed N --set a=b …` → `--set a=b …`).
fn settings_of(replay: &str) -> String {
    replay.find(" --set ").map_or(String::new(), |i| replay[i + 1..].to_string())
}

#[cfg(test)]
mod tests {
    use super::settings_of;

    #[test]
    fn settings_are_the_set_overrides_of_the_replay_command() {
        assert_eq!(settings_of("shoal run s.toml --seed 1"), "");
        assert_eq!(
            settings_of("shoal run s.toml --seed 1 --set origins.count=2 --set a=b"),
            "--set origins.count=2 --set a=b"
        );
    }
}
