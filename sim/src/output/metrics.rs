//! What a run records, and the deterministic outputs made from it (DESIGN.md §6).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use shoal_protocols::peer::Event as NodeEvent;
use shoal_protocols::{Instant, MessageKind};

use crate::net::Locality;
use crate::scenario::Scenario;

/// Names of [`Metrics::bytes_by_locality`]'s entries, in summary.json.
pub const LOCALITIES: [&str; 6] = ["origins", "same_host", "same_rack", "same_pod", "same_zone", "elsewhere"];

/// Where a payload came from, relative to the host that received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Origin,
    Peer(Locality),
}

/// One (host, blob) download.
#[derive(Clone, Debug, Default)]
pub struct DownloadRecord {
    pub host: u32,
    pub blob: u32,
    pub start: Instant,
    pub end: Option<Instant>,
    pub failed: Option<String>,
    pub bytes_from_origins: u64,
    pub bytes_same_rack: u64,
    pub bytes_other_racks: u64,
    /// Of all the above, bytes from a node in another zone (only with `[topology.zones]`).
    pub bytes_cross_zone: u64,
    pub pieces: u32,
    pub duplicates: u32,
}

impl DownloadRecord {
    pub fn outcome(&self) -> &'static str {
        match (&self.end, &self.failed) {
            (Some(_), _) => "complete",
            (None, Some(_)) => "failed",
            (None, None) => "unfinished",
        }
    }
}

/// Counters kept while the run goes.
#[derive(Debug, Default)]
pub struct Metrics {
    pub downloads: Vec<DownloadRecord>,
    /// Per host, (blob, index into `downloads`): looked up on every payload delivered, so one short
    /// list per host rather than one ordered map over every download.
    index: Vec<Vec<(u32, usize)>>,
    /// Per host: when its image pull started and how many layers are still missing.
    /// One record per image pull (a host may pull several images).
    pub images: Vec<ImageRecord>,
    /// Per host, its image pulls (indices into `images`).
    pub host_pulls: Vec<Vec<usize>>,
    /// Indexed like [`LOCALITIES`].
    pub bytes_by_locality: [u64; 6],
    /// Payload bytes that crossed between zones: (from origins, from agents). Counted only when the
    /// topology has zones; a node outside every zone (origins placed "separate") is in another zone.
    pub cross_zone: (u64, u64),
    pub origin_egress: u64,
    pub messages: BTreeMap<MessageKind, (u64, u64)>,
    pub announces: u64,
    pub metainfo_requests: u64,
    /// Payload bytes delivered and origin egress, per time-series interval.
    pub series: Vec<(u64, u64)>,
    pub interval: Duration,
    /// Per rack, cumulative (uplink, downlink) bytes at the last sample.
    pub racks: Vec<(f64, f64)>,
    pub rack_samples: Vec<RackSample>,
    /// Blob downloads started and not yet finished or failed.
    pub pending_downloads: usize,
}

/// One rack's link traffic over one time-series interval.
#[derive(Clone, Copy, Debug)]
pub struct RackSample {
    pub at: Instant,
    pub rack: u32,
    pub up_bytes: f64,
    pub down_bytes: f64,
}

#[derive(Clone, Debug)]
pub struct ImageRecord {
    pub start: Instant,
    /// Layers (blob indices) not yet downloaded.
    pub missing: Vec<u32>,
    pub end: Option<Instant>,
    pub failed: bool,
}

impl ImageRecord {
    pub fn finished(&self) -> bool {
        self.end.is_some() || self.failed
    }
}

impl Metrics {
    pub fn new(hosts: usize, interval: Duration) -> Self {
        Metrics {
            host_pulls: vec![Vec::new(); hosts],
            index: vec![Vec::new(); hosts],
            interval,
            ..Metrics::default()
        }
    }

    /// The index into `downloads` of `host`'s download of `blob`, if it started.
    #[inline]
    fn download_of(&self, (host, blob): (u32, u32)) -> Option<usize> {
        self.index.get(host as usize)?.iter().find(|&&(b, _)| b == blob).map(|&(_, i)| i)
    }

    fn bucket(&mut self, at: Instant) -> &mut (u64, u64) {
        let i = (at.as_nanos() / self.interval.as_nanos().max(1) as u64) as usize;
        if self.series.len() <= i {
            self.series.resize(i + 1, (0, 0));
        }
        &mut self.series[i]
    }

    pub fn payload_delivered(
        &mut self,
        at: Instant,
        to_host: Option<(u32, u32)>,
        source: Source,
        cross_zone: bool,
        bytes: u64,
    ) {
        if cross_zone {
            match source {
                Source::Origin => self.cross_zone.0 += bytes,
                Source::Peer(_) => self.cross_zone.1 += bytes,
            }
        }
        let key = match source {
            Source::Origin => 0,
            Source::Peer(Locality::Host) => 1,
            Source::Peer(Locality::Rack) => 2,
            Source::Peer(Locality::Pod) => 3,
            Source::Peer(Locality::Zone) => 4,
            Source::Peer(Locality::Global) => 5,
        };
        self.bytes_by_locality[key] += bytes;
        let b = self.bucket(at);
        b.0 += bytes;
        if source == Source::Origin {
            b.1 += bytes;
            self.origin_egress += bytes;
        }
        if let Some(i) = to_host.and_then(|k| self.download_of(k)) {
            let d = &mut self.downloads[i];
            match source {
                Source::Origin => d.bytes_from_origins += bytes,
                Source::Peer(Locality::Host | Locality::Rack) => d.bytes_same_rack += bytes,
                Source::Peer(_) => d.bytes_other_racks += bytes,
            }
            if cross_zone {
                d.bytes_cross_zone += bytes;
            }
        }
    }

    /// Records that `host` starts pulling `image` at `now`; returns the blobs it must ask its agent
    /// for (layers it already has or is fetching for another image are shared, as on a real host).
    pub fn start_pull(&mut self, s: &Scenario, host: u32, image: u32, now: Instant) -> Vec<u32> {
        let img = &s.workload.images[image as usize];
        let mut record = ImageRecord { start: now, missing: Vec::new(), end: None, failed: false };
        let mut ask = Vec::new();
        for &b in &img.layers {
            let key = (host, b as u32);
            if let Some(i) = self.download_of(key) {
                let d = &self.downloads[i];
                record.failed |= d.failed.is_some();
                if d.end.is_none() && d.failed.is_none() {
                    record.missing.push(b as u32);
                }
                continue;
            }
            record.missing.push(b as u32);
            self.index[host as usize].push((b as u32, self.downloads.len()));
            self.downloads.push(DownloadRecord { host, blob: b as u32, start: now, ..Default::default() });
            self.pending_downloads += 1;
            ask.push(b as u32);
        }
        if record.missing.is_empty() && !record.failed {
            record.end = Some(now);
        }
        self.host_pulls[host as usize].push(self.images.len());
        self.images.push(record);
        ask
    }

    /// An agent reported the end of its download of `blob` (first report only).
    pub fn download_event(&mut self, host: u32, blob: u32, now: Instant, ev: NodeEvent) {
        let (stats, failure) = match ev {
            NodeEvent::DownloadComplete { stats, .. } => (stats, None),
            NodeEvent::DownloadFailed { error, stats, .. } => (stats, Some(error.to_string())),
        };
        self.end_download(host, blob, now, Some((stats.pieces, stats.duplicates)), failure);
    }

    /// Fails every download of `host` still running, with `reason` as its error (the host's agent
    /// is gone: a crash in a socket engine). Returns how many there were.
    pub fn fail_host(&mut self, host: u32, now: Instant, reason: &str) -> usize {
        let pending: Vec<u32> = self
            .downloads
            .iter()
            .filter(|d| d.host == host && d.end.is_none() && d.failed.is_none())
            .map(|d| d.blob)
            .collect();
        for &blob in &pending {
            self.end_download(host, blob, now, None, Some(reason.to_string()));
        }
        pending.len()
    }

    /// Ends a download (first end only); `counts` are its (pieces, duplicates) when known.
    fn end_download(
        &mut self,
        host: u32,
        blob: u32,
        now: Instant,
        counts: Option<(u32, u32)>,
        failure: Option<String>,
    ) {
        let Some(i) = self.download_of((host, blob)) else { return };
        let d = &mut self.downloads[i];
        if d.end.is_some() || d.failed.is_some() {
            return;
        }
        if let Some((pieces, duplicates)) = counts {
            d.pieces = pieces;
            d.duplicates = duplicates;
        }
        let failed = failure.is_some();
        match failure {
            None => d.end = Some(now),
            Some(e) => d.failed = Some(e),
        }
        self.pending_downloads -= 1;
        for &p in &self.host_pulls[host as usize] {
            let img = &mut self.images[p];
            if let Some(k) = img.missing.iter().position(|&m| m == blob) {
                img.missing.swap_remove(k);
                img.failed |= failed;
                if img.missing.is_empty() && !img.failed {
                    img.end = Some(now);
                }
            }
        }
    }

    /// Image pulls that ended (complete or failed).
    pub fn images_finished(&self) -> usize {
        self.images.iter().filter(|i| i.finished()).count()
    }

    pub fn message_sent(&mut self, kind: MessageKind, bytes: u64) {
        let e = self.messages.entry(kind).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
}

/// A percentile by the nearest-rank method over completion times in seconds; unfinished entries
/// count as infinitely late, so a percentile that falls on one is `None`.
pub fn percentile(sorted: &[Option<f64>], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sorts completion times, unfinished last.
pub fn sort_times(mut v: Vec<Option<f64>>) -> Vec<Option<f64>> {
    v.sort_by(|a, b| match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    v
}

/// The headline percentiles of a set of completion times, in seconds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub completed: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    pub fn of(times: Vec<Option<f64>>) -> Self {
        let sorted = sort_times(times);
        Percentiles {
            count: sorted.len(),
            completed: sorted.iter().filter(|t| t.is_some()).count(),
            p50: percentile(&sorted, 0.5).map(round_us),
            p90: percentile(&sorted, 0.9).map(round_us),
            p99: percentile(&sorted, 0.99).map(round_us),
            p99_9: percentile(&sorted, 0.999).map(round_us),
            max: percentile(&sorted, 1.0).map(round_us),
        }
    }
}

/// Seconds rounded to the microsecond, so JSON output is short and stable.
pub fn round_us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Option<f64>> = (1..=100).map(|i| Some(i as f64)).collect();
        let p = Percentiles::of(v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (Some(50.0), Some(90.0), Some(99.0), Some(100.0)));
        let mut v: Vec<Option<f64>> = (1..=99).map(|i| Some(i as f64)).collect();
        v.push(None);
        let p = Percentiles::of(v);
        assert_eq!(p.p99, Some(99.0));
        assert_eq!(p.max, None, "an unfinished download is infinitely late");
        assert_eq!(p.completed, 99);
    }
}
