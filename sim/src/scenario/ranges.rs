//! The valid range of every numeric field of a scenario and of every protocol table, in one table
//! that the loader checks and `scenarios/README.md` prints (a test keeps the two equal).
//!
//! Two kinds of limit:
//! - **hard**: values no field can mean — a zero limit, a zero interval, a count beyond what any
//!   machine could hold, a time past what a `Duration` sum can carry. Refused, always.
//! - **extreme** (`--force`): values that are legal but make a run cost far more than it looks —
//!   a periodic timer firing many times per simulated second on every node, a blob cut into more than
//!   100 000 pieces. Loading records them ([`super::Scenario::extremes`]); `shoal run` refuses them
//!   unless given `--force`, naming the reason.
//!
//! Times in milliseconds are capped at 10¹² ms (about 31 years): every such time is added to the
//! simulated clock, and the cap keeps every sum far from overflow.

use std::fmt;

use toml::Value;

use super::error::FieldError;

/// Largest time in milliseconds any field may hold: about 31 years.
const MS_MAX: f64 = 1e12;
/// Largest rate in bytes per second: 10 TB/s, above any NIC or uplink by two orders of magnitude.
const RATE_MAX: f64 = 1e13;
/// Largest count of connections, slots or peers: a million.
const COUNT_MAX: f64 = 1e6;

/// Where a legal value becomes extreme.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Extreme {
    /// Below this value, for the reason given.
    Below(f64, &'static str),
    /// Above this value, for the reason given.
    Above(f64, &'static str),
}

/// One numeric field's range: `min ≤ v ≤ max` (`min < v` when `min_open`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldRange {
    /// Dotted path. In the protocol tables the path is relative to the table type (`dispatch.pipeline_limit`
    /// of `[protocol.agent]` and `[protocol.origin_scheduler]`); `*` matches a list index.
    pub field: &'static str,
    pub min: f64,
    /// True if `min` itself is refused (a ratio or rate that must be above 0).
    pub min_open: bool,
    pub max: f64,
    pub unit: &'static str,
    pub extreme: Option<Extreme>,
}

const fn r(field: &'static str, min: f64, max: f64, unit: &'static str) -> FieldRange {
    FieldRange { field, min, min_open: false, max, unit, extreme: None }
}

const fn above_zero(field: &'static str, max: f64, unit: &'static str) -> FieldRange {
    FieldRange { field, min: 0.0, min_open: true, max, unit, extreme: None }
}

const fn ex(mut f: FieldRange, e: Extreme) -> FieldRange {
    f.extreme = Some(e);
    f
}

const TIMER: &str = "a periodic timer this short fires on every node many times per simulated second, \
                     so a run costs millions of events per simulated second";

/// The scenario's own fields (the protocol tables are below).
pub const SCENARIO: &[FieldRange] = &[
    above_zero("limits.max_sim_time_s", 31_536_000.0, "s"),
    r("topology.hosts", 1.0, 1_000_000.0, "count"),
    r("topology.upload_bytes_per_s", 1.0, RATE_MAX, "B/s"),
    r("topology.download_bytes_per_s", 1.0, RATE_MAX, "B/s"),
    r("topology.latency_ms", 0.0, 60_000.0, "ms"),
    r("topology.latency_jitter_ms", 0.0, 60_000.0, "ms"),
    r("topology.racks.hosts_per_rack", 1.0, 10_000_000.0, "count"),
    r("topology.pods.racks_per_pod", 1.0, 10_000_000.0, "count"),
    r("topology.zones.pods_per_zone", 1.0, 10_000_000.0, "count"),
    r("topology.zones.count", 1.0, 10_000_000.0, "count"),
    r("topology.racks.uplink_bytes_per_s", 1.0, 1e15, "B/s"),
    r("topology.pods.uplink_bytes_per_s", 1.0, 1e15, "B/s"),
    r("topology.zones.uplink_bytes_per_s", 1.0, 1e15, "B/s"),
    above_zero("topology.racks.oversubscription", 1e6, "ratio"),
    above_zero("topology.pods.oversubscription", 1e6, "ratio"),
    above_zero("topology.zones.oversubscription", 1e6, "ratio"),
    r("topology.racks.latency_ms", 0.0, 60_000.0, "ms"),
    r("topology.pods.latency_ms", 0.0, 60_000.0, "ms"),
    r("topology.zones.latency_ms", 0.0, 60_000.0, "ms"),
    r("origins.count", 1.0, 10_000.0, "count"),
    r("origins.upload_bytes_per_s", 1.0, RATE_MAX, "B/s"),
    r("origins.download_bytes_per_s", 1.0, RATE_MAX, "B/s"),
    r("trackers.count", 1.0, 10_000.0, "count"),
    r("workload.blobs.*.size", 1.0, 1e15, "B"),
    r("workload.pulls.*.start_s", 0.0, 31_536_000.0, "s"),
    r("workload.pulls.*.arrival.waves", 1.0, 10_000_000.0, "count"),
    r("workload.pulls.*.arrival.interval_s", 0.0, 31_536_000.0, "s"),
    above_zero("workload.pulls.*.arrival.rate_per_s", 1e9, "1/s"),
    r("faults.*.at_s", 0.0, 31_536_000.0, "s"),
    above_zero("reference.p50_s", 1e9, "s"),
    above_zero("reference.p99_s", 1e9, "s"),
    above_zero("reference.p99_9_s", 1e9, "s"),
];

/// Pieces per blob (`workload.blobs.*.size` over the piece length of `[protocol.origin]`): every
/// agent keeps a bitfield and every connection a copy of its peer's, and the engine an entry per
/// piece; past this the cost is quadratic-looking in memory and linear in events.
pub const PIECES_EXTREME: u64 = 100_000;
/// Pieces per blob no run may have (the wire's bitfield of 10⁷ pieces is 1.25 MB per message).
pub const PIECES_MAX: u64 = 10_000_000;

/// `[protocol.agent]` and `[protocol.origin_scheduler]` (`SchedulerConfig`).
pub const SCHEDULER: &[FieldRange] = &[
    r("seeder_tti_ms", 1.0, MS_MAX, "ms"),
    r("leecher_tti_ms", 1.0, MS_MAX, "ms"),
    r("conn_tti_ms", 1.0, MS_MAX, "ms"),
    r("conn_ttl_ms", 1.0, MS_MAX, "ms"),
    ex(r("preemption_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(100.0, TIMER)),
    r("conn_state.max_open_conn", 1.0, COUNT_MAX, "count"),
    r("conn_state.max_mutual_conn", 0.0, COUNT_MAX, "count"),
    r("conn_state.blacklist_duration_ms", 0.0, MS_MAX, "ms"),
    r("conn.handshake_timeout_ms", 1.0, MS_MAX, "ms"),
    r("conn.sender_buffer_size", 1.0, 1e9, "messages"),
    r("conn.receiver_buffer_size", 1.0, 1e9, "messages"),
    r("conn.bandwidth.egress_bits_per_s", 8.0, 8.0 * RATE_MAX, "bit/s"),
    r("conn.bandwidth.ingress_bits_per_s", 8.0, 8.0 * RATE_MAX, "bit/s"),
    r("conn.bandwidth.token_size_bits", 8.0, 8.0 * RATE_MAX, "bit"),
    r("dispatch.piece_request_min_timeout_ms", 1.0, MS_MAX, "ms"),
    r("dispatch.piece_request_timeout_per_mib_ms", 0.0, MS_MAX, "ms"),
    r("dispatch.pipeline_limit", 1.0, 100_000.0, "requests"),
    r("dispatch.origin_pipeline_limit", 1.0, 100_000.0, "requests"),
    r("dispatch.endgame_threshold", 0.0, PIECES_MAX as f64, "pieces"),
    ex(r("announcer.default_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(100.0, TIMER)),
    r("announcer.max_interval_ms", 1.0, MS_MAX, "ms"),
    r("announcer.timeout_ms", 1.0, MS_MAX, "ms"),
    r("metainfo_client.timeout_ms", 1.0, MS_MAX, "ms"),
    ex(r("metainfo_client.backoff_initial_ms", 1.0, MS_MAX, "ms"), Extreme::Below(10.0, TIMER)),
    r("metainfo_client.backoff_multiplier", 1.0, 1000.0, "factor"),
    r("metainfo_client.backoff_jitter", 0.0, 0.99, "fraction"),
    r("metainfo_client.backoff_max_ms", 1.0, MS_MAX, "ms"),
    r("metainfo_client.give_up_after_ms", 1.0, MS_MAX, "ms"),
    r("quirks.max_open_conn_total", 0.0, COUNT_MAX, "count (0 = no cap)"),
];

/// `[protocol.tracker]` (`TrackerConfig`).
pub const TRACKER: &[FieldRange] = &[
    ex(r("announce_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(100.0, TIMER)),
    r("announce_limit", 0.0, COUNT_MAX, "peers"),
    r("peer_ttl_ms", 1.0, MS_MAX, "ms"),
    r("metainfo_cache_ttl_ms", 0.0, MS_MAX, "ms"),
    r("metainfo_error_cache_ttl_ms", 0.0, MS_MAX, "ms"),
    r("locality.spill_peers", 0.0, COUNT_MAX, "peers"),
];

/// `[protocol.origin]` (`OriginConfig`); piece lengths are checked with the blobs.
pub const ORIGIN: &[FieldRange] = &[
    r("max_replica", 1.0, 10_000.0, "origins"),
    r("backend_latency_ms", 0.0, MS_MAX, "ms"),
    r("backend_bytes_per_s", 0.0, RATE_MAX, "B/s (0 = instantaneous)"),
    r("piece_length", 1.0, 4_294_967_296.0, "B"),
    r("piece_lengths.*", 1.0, 4_294_967_296.0, "B"),
];

/// `[protocol.bittorrent]` (`BitTorrentConfig`).
pub const BITTORRENT: &[FieldRange] = &[
    r("numwant", 0.0, COUNT_MAX, "peers"),
    r("max_initiate", 1.0, COUNT_MAX, "connections"),
    r("max_connections", 1.0, COUNT_MAX, "connections"),
    r("unchoke_slots", 0.0, COUNT_MAX, "peers"),
    r("optimistic_slots", 0.0, COUNT_MAX, "peers"),
    ex(r("rechoke_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(100.0, TIMER)),
    ex(r("optimistic_rotate_ms", 1.0, MS_MAX, "ms"), Extreme::Below(100.0, TIMER)),
    r("rate_window_ms", 1.0, MS_MAX, "ms"),
    r("snub_timeout_ms", 0.0, MS_MAX, "ms"),
    r("random_first_cutoff", 0.0, PIECES_MAX as f64, "pieces"),
    r("idle_timeout_ms", 1.0, MS_MAX, "ms"),
];

/// `[protocol.dragonfly]` (`DragonflyConfig`).
pub const DRAGONFLY: &[FieldRange] = &[
    r("filter_parent_limit", 1.0, COUNT_MAX, "peers"),
    r("candidate_parent_limit", 1.0, 10_000.0, "parents"),
    ex(r("retry_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(10.0, TIMER)),
    r("retry_back_to_source_limit", 0.0, COUNT_MAX, "tries"),
    r("retry_limit", 1.0, COUNT_MAX, "tries"),
    r("back_to_source_count", 0.0, 1e9, "peers"),
    r("peer_upload_slots", 1.0, COUNT_MAX, "children"),
    r("seed_upload_slots", 1.0, 1e7, "children"),
    r("concurrent_pieces", 1.0, 100_000.0, "pieces"),
    ex(r("report_interval_ms", 1.0, MS_MAX, "ms"), Extreme::Below(10.0, TIMER)),
    FieldRange {
        field: "bad_node_cost_multiplier",
        min: 1.0,
        min_open: true,
        max: 1e6,
        unit: "factor",
        extreme: None,
    },
    r("bad_node_sigma_samples", 1.0, 1e9, "samples"),
    r("seed_max_tx_bytes_per_s", 1.0, RATE_MAX, "B/s"),
];

/// The protocol tables and their ranges, in README order.
pub const TABLES: &[(&str, &[FieldRange])] = &[
    ("`[protocol.agent]` and `[protocol.origin_scheduler]`", SCHEDULER),
    ("`[protocol.tracker]`", TRACKER),
    ("`[protocol.origin]`", ORIGIN),
    ("`[protocol.bittorrent]`", BITTORRENT),
    ("`[protocol.dragonfly]`", DRAGONFLY),
];

/// A legal value that costs more than it looks, refused by `shoal run` unless `--force`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtremeValue {
    /// The dotted field path.
    pub field: String,
    /// Where it was written, once located (`file:line:col` or the override).
    pub at: Option<String>,
    /// What is extreme about it and why.
    pub message: String,
}

impl fmt::Display for ExtremeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// A value as checked: integers keep every digit in messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(v) => f.write_str(&num(v)),
        }
    }
}

macro_rules! num_from_int {
    ($($t:ty),*) => {$(impl From<$t> for Num { fn from(v: $t) -> Num { Num::Int(v as i128) } })*};
}
num_from_int!(i64, u64, usize, u32);

impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::Float(v)
    }
}

fn num(v: f64) -> String {
    let power_of_ten = v >= 1e5 && v.log10() == v.log10().round();
    if power_of_ten || v.abs() >= 1e15 {
        return format!("{v:e}");
    }
    if v == v.trunc() {
        return (v as i128).to_string();
    }
    format!("{v}")
}

impl FieldRange {
    /// The range as the README and messages write it: `[1, 100000] requests`.
    pub fn describe(&self) -> String {
        let open = if self.min_open { "(" } else { "[" };
        format!("{open}{}, {}] {}", num(self.min), num(self.max), self.unit)
    }

    fn matches(&self, path: &[String]) -> bool {
        let mut pat = self.field.split('.');
        let mut segs = path.iter();
        loop {
            match (pat.next(), segs.next()) {
                (None, None) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(s)) if p == s => {}
                _ => return false,
            }
        }
    }

    /// Checks `v` at `path`: a hard error, or an extreme value recorded in `extremes`.
    pub fn check(
        &self,
        n: impl Into<Num>,
        path: &[String],
        extremes: &mut Vec<ExtremeValue>,
    ) -> Result<(), FieldError> {
        let n = n.into();
        let v = n.as_f64();
        let below = if self.min_open { v <= self.min } else { v < self.min };
        if !v.is_finite() || below || v > self.max {
            return Err(FieldError::at(
                path.to_vec(),
                format!("{n} is out of range: must be in {}", self.describe()),
            ));
        }
        let why = match self.extreme {
            Some(Extreme::Below(t, why)) if v < t => Some((format!("below {}", num(t)), why)),
            Some(Extreme::Above(t, why)) if v > t => Some((format!("above {}", num(t)), why)),
            _ => None,
        };
        if let Some((edge, why)) = why {
            extremes.push(ExtremeValue {
                field: path.join("."),
                at: None,
                message: format!("{n} is legal but extreme ({edge}): {why}"),
            });
        }
        Ok(())
    }
}

/// The range of `path` in `ranges` (paths relative to the table).
pub fn lookup<'a>(ranges: &'a [FieldRange], path: &[String]) -> Option<&'a FieldRange> {
    ranges.iter().find(|f| f.matches(path))
}

/// Checks one value of the scenario's own fields.
pub fn check_scenario(
    path: &[&str],
    v: impl Into<Num>,
    extremes: &mut Vec<ExtremeValue>,
) -> Result<(), FieldError> {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    let range = lookup(SCENARIO, &path).unwrap_or_else(|| panic!("no range for {}", path.join(".")));
    range.check(v, &path, extremes)
}

/// Checks every number of a protocol table, given as the table's full TOML form (its configuration
/// serialized back, so defaults are checked too), against `ranges`; paths in errors get `prefix`.
/// A number without a range is refused: every numeric field must have one (a test checks the defaults).
pub fn check_table(
    table: &toml::Table,
    ranges: &[FieldRange],
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<(), FieldError> {
    fn walk(
        table: &toml::Table,
        rel: &mut Vec<String>,
        ranges: &[FieldRange],
        prefix: &[&str],
        extremes: &mut Vec<ExtremeValue>,
    ) -> Result<(), FieldError> {
        for (k, v) in table {
            rel.push(k.clone());
            let n = match v {
                Value::Table(t) => {
                    walk(t, rel, ranges, prefix, extremes)?;
                    None
                }
                Value::Integer(i) => Some(Num::from(*i)),
                Value::Float(f) => Some(Num::from(*f)),
                _ => None,
            };
            if let Some(n) = n {
                let full: Vec<String> =
                    prefix.iter().map(|s| s.to_string()).chain(rel.iter().cloned()).collect();
                let Some(range) = lookup(ranges, rel) else {
                    return Err(FieldError::at(
                        full,
                        "has no documented range (a bug in shoal: please report it)",
                    ));
                };
                range.check(n, &full, extremes)?;
            }
            rel.pop();
        }
        Ok(())
    }
    walk(table, &mut Vec::new(), ranges, prefix, extremes)
}

/// The README's table of ranges, generated from the tables above (`scenarios/README.md`, between
/// its `<!-- ranges -->` markers; `sim/src/scenario/tests.rs` keeps the two equal).
pub fn markdown() -> String {
    let mut out = String::new();
    let mut table = |title: &str, ranges: &[FieldRange]| {
        out.push_str(&format!(
            "\n{title}\n\n| field | valid range | extreme (needs `--force`) |\n|---|---|---|\n"
        ));
        for f in ranges {
            let extreme = match f.extreme {
                None => "".to_string(),
                Some(Extreme::Below(t, _)) => format!("below {}", num(t)),
                Some(Extreme::Above(t, _)) => format!("above {}", num(t)),
            };
            out.push_str(&format!("| `{}` | {} | {extreme} |\n", f.field, f.describe()));
        }
    };
    table("the scenario's own fields", SCENARIO);
    for (title, ranges) in TABLES {
        table(title, ranges);
    }
    out
}
