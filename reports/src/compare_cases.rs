//! Comparing the cases of sweeps (`shoal compare SWEEP_DIR...`): each headline metric of each case
//! against the first case, as a relative difference of means with its 95 % confidence interval over
//! seeds, and whether the difference is within seed noise (the interval holds 0).
//!
//! When both cases ran the same seeds, the interval is the paired one — Student's t over the
//! per-seed relative differences (x_i − r_i) / r_i: the seeds are common random numbers, so the
//! seed-to-seed spread that both cases share cancels. Otherwise it is Welch's interval of the
//! difference of means, divided by the reference mean.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, stats, write};

/// The metrics compared, with how they are shown.
pub const METRICS: [(&str, &str); 5] = [
    ("host_images.p50", "image p50"),
    ("host_images.p99", "image p99"),
    ("host_images.max", "image max"),
    ("blob_downloads.p99", "blob p99"),
    ("origin_egress_bytes", "origin egress"),
];

/// One case of a sweep as read from its sweep.csv: metric → seed → value.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The case label, prefixed with its sweep folder's name when several folders are compared.
    pub label: String,
    /// Runs of the case, whatever their status.
    pub runs: usize,
    /// Runs that did not complete (failed, unfinished, error, missing).
    pub incomplete: usize,
    /// metric → (seed → value), for runs that have the value.
    pub values: BTreeMap<String, BTreeMap<u64, f64>>,
}

/// One metric of one case against the reference case.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The case's label.
    pub case: String,
    /// The metric's dotted name in sweep.csv.
    pub metric: String,
    /// The reference case's mean over its seeds.
    pub reference_mean: Option<f64>,
    /// This case's mean over its seeds.
    pub mean: Option<f64>,
    /// Relative difference of the means.
    pub change: Option<f64>,
    /// 95 % interval of the relative difference; `None` with fewer than 2 seeds on a side.
    pub ci95: Option<(f64, f64)>,
    /// Seeds used: paired seeds, or the smaller side's count for Welch.
    pub seeds: usize,
    /// True when the interval is the paired one.
    pub paired: bool,
}

impl Difference {
    /// True when the interval holds 0: the change cannot be told from seed noise.
    pub fn within_noise(&self) -> bool {
        self.ci95.is_none_or(|(lo, hi)| lo <= 0.0 && hi >= 0.0)
    }

    /// `p99 −12.3 % (95 % CI −15.1 % to −9.4 %, 10 seeds, paired)`.
    pub fn sentence(&self, name: &str) -> String {
        let pct = |v: f64| format!("{:+.1} %", v * 100.0).replace('-', "−");
        match (self.change, self.ci95) {
            (None, _) => format!("{name}: no value (a run left it unfinished)"),
            (Some(c), None) => format!("{name} {} ({} seed(s): no interval)", pct(c), self.seeds),
            (Some(_), Some((lo, hi))) if lo == 0.0 && hi == 0.0 => {
                format!("{name} identical on every one of {} seeds", self.seeds)
            }
            (Some(c), Some((lo, hi))) => format!(
                "{name} {} (95 % CI {} to {}, {} seeds, {}){}",
                pct(c),
                pct(lo),
                pct(hi),
                self.seeds,
                if self.paired { "paired" } else { "Welch" },
                if self.within_noise() { ": within noise" } else { "" }
            ),
        }
    }
}

/// True if `dir` is a sweep's output folder.
pub fn is_sweep_dir(dir: &Path) -> bool {
    dir.join("sweep.csv").is_file() && dir.join("sweep.json").is_file()
}

/// Reads the cases of a sweep folder from its sweep.csv, in file order.
pub fn read_cases(dir: &Path) -> Result<Vec<Case>, Error> {
    let path = dir.join("sweep.csv");
    let file = std::fs::File::open(&path).map_err(|e| Error::file(&path, e.to_string()))?;
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader.headers().map_err(|e| Error::file(&path, e.to_string()))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(&path, format!("no `{name}` column: not a sweep.csv of this shoal version"))
        })
    };
    let (case_col, seed_col, status_col) = (col("case")?, col("seed")?, col("status")?);
    let metric_cols: Vec<(String, usize)> = METRICS
        .iter()
        .filter_map(|(m, _)| headers.iter().position(|h| h == *m).map(|i| (m.to_string(), i)))
        .collect();
    let mut cases: Vec<Case> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let bad =
            |msg: String| Error::Parse { file: path.clone(), line: Some(line as u64), field: None, msg };
        let record = record.map_err(|e| bad(e.to_string()))?;
        let label = record.get(case_col).unwrap_or_default().to_string();
        let seed: u64 = record.get(seed_col).unwrap_or_default().parse().map_err(|_| {
            bad(format!("seed {:?} is not a number", record.get(seed_col).unwrap_or_default()))
        })?;
        let k = match cases.iter().position(|c| c.label == label) {
            Some(k) => k,
            None => {
                cases.push(Case { label, runs: 0, incomplete: 0, values: BTreeMap::new() });
                cases.len() - 1
            }
        };
        let case = &mut cases[k];
        case.runs += 1;
        if record.get(status_col) != Some("complete") {
            case.incomplete += 1;
        }
        for (m, c) in &metric_cols {
            let cell = record.get(*c).unwrap_or_default();
            if cell.is_empty() {
                continue;
            }
            let v: f64 = cell.parse().map_err(|_| bad(format!("{m}: {cell:?} is not a number")))?;
            case.values.entry(m.clone()).or_default().insert(seed, v);
        }
    }
    if cases.is_empty() {
        return Err(Error::file(&path, "holds no runs"));
    }
    Ok(cases)
}

/// The difference of `case` from `reference` on `metric`.
pub fn difference(reference: &Case, case: &Case, metric: &str) -> Difference {
    let empty = BTreeMap::new();
    let r = reference.values.get(metric).unwrap_or(&empty);
    let x = case.values.get(metric).unwrap_or(&empty);
    let mean = |v: &BTreeMap<u64, f64>| (!v.is_empty()).then(|| v.values().sum::<f64>() / v.len() as f64);
    let (rm, xm) = (mean(r), mean(x));
    let mut d = Difference {
        case: case.label.clone(),
        metric: metric.to_string(),
        reference_mean: rm,
        mean: xm,
        change: None,
        ci95: None,
        seeds: r.len().min(x.len()),
        paired: false,
    };
    let (Some(rm), Some(xm)) = (rm, xm) else { return d };
    if rm == 0.0 {
        return d;
    }
    d.change = Some((xm - rm) / rm.abs());
    let same_seeds = r.len() == x.len() && r.keys().eq(x.keys()) && r.values().all(|v| *v != 0.0);
    if same_seeds && r.len() >= 2 {
        let rel: Vec<f64> = r.iter().map(|(s, rv)| (x[s] - rv) / rv.abs()).collect();
        let desc = stats::describe(&rel).expect("at least two values");
        d.change = Some(desc.mean);
        d.ci95 = desc.ci95;
        d.paired = true;
    } else if r.len() >= 2 && x.len() >= 2 {
        let var = |v: &BTreeMap<u64, f64>, m: f64| {
            v.values().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 / v.len() as f64
        };
        let (vr, vx) = (var(r, rm), var(x, xm));
        let se = (vr + vx).sqrt();
        let df = if se == 0.0 {
            f64::INFINITY
        } else {
            (vr + vx).powi(2) / (vr * vr / (r.len() - 1) as f64 + vx * vx / (x.len() - 1) as f64)
        };
        let t = stats::t_975((df.floor() as usize).clamp(1, 100_000));
        let diff = xm - rm;
        d.ci95 = Some(((diff - t * se) / rm.abs(), (diff + t * se) / rm.abs()));
    }
    d
}

/// What [`compare_cases`] wrote.
#[derive(Clone, Debug)]
pub struct CaseComparison {
    /// The cases compared, the reference first.
    pub cases: Vec<Case>,
    /// Every (case, metric) but the reference's, in case then metric order.
    pub differences: Vec<Difference>,
    /// compare-cases.md.
    pub markdown: PathBuf,
}

/// Compares `cases` (the first is the reference) and writes compare-cases.md into `out`.
pub fn compare_cases(cases: Vec<Case>, out: &Path) -> Result<CaseComparison, Error> {
    let Some(reference) = cases.first() else {
        return Err(Error::file(out, "no case to compare"));
    };
    let mut differences = Vec::new();
    for case in &cases[1..] {
        for (m, _) in METRICS {
            differences.push(difference(reference, case, m));
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep cases compared\n");
    let _ = writeln!(
        md,
        "Reference: `{}`. Each metric's mean over seeds against the reference's, as a relative difference \
         with its 95 % confidence interval (paired over the same seeds, else Welch); \"within noise\" when \
         the interval holds 0.\n",
        reference.label
    );
    let _ = writeln!(md, "| case | metric | reference mean | mean | change | 95 % CI | seeds | verdict |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|---:|---|");
    let fmt = |m: &str, v: Option<f64>| match v {
        None => "-".to_string(),
        Some(v) if m.starts_with("origin") => format!("{:.3} GB", v / 1e9),
        Some(v) => format!("{v:.3} s"),
    };
    for d in &differences {
        let pct = |v: f64| format!("{:+.1} %", v * 100.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            d.case,
            d.metric,
            fmt(&d.metric, d.reference_mean),
            fmt(&d.metric, d.mean),
            d.change.map_or("-".into(), pct),
            d.ci95.map_or("-".into(), |(lo, hi)| format!("{} to {}", pct(lo), pct(hi))),
            d.seeds,
            if d.change.is_none() {
                "-"
            } else if d.within_noise() {
                "within noise"
            } else if d.paired {
                "differs (paired)"
            } else {
                "differs (Welch)"
            }
        );
    }
    let incomplete: Vec<&Case> = cases.iter().filter(|c| c.incomplete > 0).collect();
    if !incomplete.is_empty() {
        let _ = writeln!(md, "\nRuns that did not complete (they count with the metrics they have):\n");
        for c in incomplete {
            let _ = writeln!(md, "- `{}`: {} of {} runs", c.label, c.incomplete, c.runs);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    let markdown = out.join("compare-cases.md");
    write(&markdown, md)?;
    Ok(CaseComparison { cases, differences, markdown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(label: &str, p99: &[(u64, f64)]) -> Case {
        let mut values = BTreeMap::new();
        values.insert("host_images.p99".to_string(), p99.iter().copied().collect());
        Case { label: label.into(), runs: p99.len(), incomplete: 0, values }
    }

    #[test]
    fn paired_interval_over_the_same_seeds() {
        let r = case("a", &[(1, 10.0), (2, 20.0), (3, 40.0)]);
        // −10 %, −20 %, −30 % per seed: mean −20 %, sd 10 %, t(0.975, 2) = 4.303.
        let x = case("b", &[(1, 9.0), (2, 16.0), (3, 28.0)]);
        let d = difference(&r, &x, "host_images.p99");
        assert!(d.paired);
        assert!((d.change.unwrap() + 0.2).abs() < 1e-12);
        let half = 4.302_652_729_911_275 * 0.1 / 3f64.sqrt();
        let (lo, hi) = d.ci95.unwrap();
        assert!((lo - (-0.2 - half)).abs() < 1e-4 && (hi - (-0.2 + half)).abs() < 1e-4, "{lo} {hi}");
        assert!(d.within_noise(), "−20 % ± 24.8 % holds 0");
        assert!(
            d.sentence("p99")
                .starts_with("p99 −20.0 % (95 % CI −44.8 % to +4.8 %, 3 seeds, paired): within noise"),
            "{}",
            d.sentence("p99")
        );
    }

    #[test]
    fn welch_interval_over_other_seeds_and_a_clear_difference() {
        let r = case("a", &[(1, 10.0), (2, 10.2), (3, 9.8)]);
        let x = case("b", &[(4, 12.0), (5, 12.2), (6, 11.8)]);
        let d = difference(&r, &x, "host_images.p99");
        assert!(!d.paired && !d.within_noise(), "{d:?}");
        assert!((d.change.unwrap() - 0.2).abs() < 1e-12);
        // No value on one side, or one seed: no interval, never "differs".
        let one = case("c", &[(1, 11.0)]);
        assert!(difference(&r, &one, "host_images.p99").ci95.is_none());
        assert_eq!(difference(&r, &x, "origin_egress_bytes").change, None);
    }
}
