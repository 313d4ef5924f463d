//! Numbers derived from the rows: per-host image completion and nearest-rank percentiles; and, over
//! the seeds of a sweep's case, mean, standard deviation and a Student t confidence interval.

use std::collections::BTreeMap;

use crate::schema::{Download, Outcome};

/// Per-host image completion: `max end_s − min start_s` over the host's rows, for every host whose
/// downloads are all complete. Hosts in ascending order; `None` for incomplete hosts.
pub fn host_completion(downloads: &[Download]) -> BTreeMap<u64, Option<f64>> {
    let mut spans: BTreeMap<u64, Option<(f64, f64)>> = BTreeMap::new();
    for d in downloads {
        let entry = spans.entry(d.host).or_insert(Some((f64::INFINITY, f64::NEG_INFINITY)));
        match (d.outcome, d.end_s, entry.as_mut()) {
            (Outcome::Complete, Some(end), Some((start, last))) => {
                *start = start.min(d.start_s);
                *last = last.max(end);
            }
            _ => *entry = None,
        }
    }
    spans.into_iter().map(|(h, s)| (h, s.map(|(start, end)| end - start))).collect()
}

/// The completion times of complete hosts, sorted ascending.
pub fn sorted_complete(times: impl IntoIterator<Item = Option<f64>>) -> Vec<f64> {
    let mut v: Vec<f64> = times.into_iter().flatten().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of `total` times of which `sorted` are the finished
/// ones (ascending); unfinished ones count as infinitely late, so `None` when the rank falls on one.
pub fn percentile(sorted: &[f64], total: usize, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as usize).clamp(1, total);
    sorted.get(rank - 1).copied()
}

/// Two-sided 97.5 % quantiles of Student's t for 1 to 30 degrees of freedom (to 4 decimals, as
/// printed in every statistics table).
const T_975: [f64; 30] = [
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
    2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
    2.0518, 2.0484, 2.0452, 2.0423,
];

/// The 0.975 quantile of Student's t with `df` degrees of freedom (`df` ≥ 1): the table up to 30,
/// then the Cornish–Fisher expansion around the normal quantile, within 1e-4 of the exact value
/// beyond 30 and tending to 1.959964.
pub fn t_975(df: usize) -> f64 {
    assert!(df >= 1, "t needs at least one degree of freedom");
    if df <= 30 {
        return T_975[df - 1];
    }
    let z: f64 = 1.959_963_984_540_054;
    let n = df as f64;
    let g1 = (z.powi(3) + z) / 4.0;
    let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
    let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
    z + g1 / n + g2 / (n * n) + g3 / (n * n * n)
}

/// One metric over the runs of a case.
#[derive(Clone, Debug, PartialEq)]
pub struct Describe {
    /// Values counted.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` for one value.
    pub sd: Option<f64>,
    /// 95 % confidence interval of the mean, Student t: mean ± t(0.975, n − 1) · sd / √n; `None` for
    /// one value.
    pub ci95: Option<(f64, f64)>,
    /// The middle value (the mean of the middle two for even n).
    pub median: f64,
    /// The least value.
    pub min: f64,
    /// The greatest value.
    pub max: f64,
}

/// Describes `values` (in any order; the result depends on their order only through float
/// rounding, so callers pass them in a fixed order); `None` when empty.
pub fn describe(values: &[f64]) -> Option<Describe> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    let (sd, ci95) = if n >= 2 {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let half = t_975(n - 1) * sd / (n as f64).sqrt();
        (Some(sd), Some((mean - half, mean + half)))
    } else {
        (None, None)
    };
    Some(Describe { n, mean, sd, ci95, median, min: sorted[0], max: sorted[n - 1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_t_interval_of_a_hand_computed_example() {
        // 1..=5: mean 3, sd √2.5 = 1.58114, se 0.70711, t(0.975, 4) = 2.7764, half-width 1.96322.
        let d = describe(&[4.0, 1.0, 5.0, 2.0, 3.0]).unwrap();
        assert_eq!((d.n, d.mean, d.median, d.min, d.max), (5, 3.0, 3.0, 1.0, 5.0));
        assert!((d.sd.unwrap() - 1.581_139).abs() < 1e-6);
        let (lo, hi) = d.ci95.unwrap();
        assert!((lo - 1.036_78).abs() < 1e-4 && (hi - 4.963_22).abs() < 1e-4, "{lo} {hi}");
        let d = describe(&[2.0, 4.0]).unwrap();
        assert_eq!(d.median, 3.0);
        // sd √2, se 1, t(0.975, 1) = 12.7062.
        assert!((d.ci95.unwrap().1 - 15.7062).abs() < 1e-9);
        let one = describe(&[7.0]).unwrap();
        assert_eq!((one.sd, one.ci95), (None, None));
        assert_eq!(describe(&[]), None);
    }

    #[test]
    fn t_quantiles_join_the_table_and_tend_to_the_normal() {
        assert!((t_975(31) - 2.0395).abs() < 1e-4, "{}", t_975(31));
        assert!((t_975(60) - 2.0003).abs() < 1e-4, "{}", t_975(60));
        assert!((t_975(120) - 1.9799).abs() < 1e-4, "{}", t_975(120));
        assert!((t_975(100_000) - 1.96).abs() < 1e-3);
        assert!((t_975(30) - t_975(31)) < 0.01 && t_975(30) > t_975(31));
    }

    fn row(host: u64, start: f64, end: Option<f64>) -> Download {
        Download {
            host,
            blob: "b".into(),
            start_s: start,
            end_s: end,
            duration_s: end.map(|e| e - start),
            bytes_from_origins: 0,
            bytes_from_same_rack: 0,
            bytes_from_other_racks: 0,
            bytes_cross_zone: 0,
            pieces: 0,
            duplicates: 0,
            outcome: if end.is_some() { Outcome::Complete } else { Outcome::Unfinished },
            error: None,
        }
    }

    #[test]
    fn host_completion_spans_first_start_to_last_end_and_drops_incomplete_hosts() {
        let rows =
            [row(0, 1.0, Some(3.0)), row(0, 0.5, Some(2.0)), row(1, 0.0, Some(1.0)), row(1, 0.0, None)];
        let c = host_completion(&rows);
        assert_eq!(c[&0], Some(2.5));
        assert_eq!(c[&1], None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 4, 0.5), Some(2.0));
        assert_eq!(percentile(&v, 4, 1.0), Some(4.0));
        assert_eq!(percentile(&v, 5, 1.0), None);
        assert_eq!(percentile(&[], 0, 0.5), None);
    }
}
