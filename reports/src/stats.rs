//! Numbers derived from the rows: per-host image completion and nearest-rank percentiles.

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

#[cfg(test)]
mod tests {
    use super::*;

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
