//! The scenario file as written: every table refuses unknown fields, quantities keep their units
//! until [`super::resolve`] checks and converts them.
//!
//! The protocol tables are kept as TOML tables here because they are merged onto a preset and have
//! their unit strings converted before being deserialized into `shoal_protocols::config` types.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::units::{ByteRate, ByteSize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub limits: RawLimits,
    pub topology: RawTopology,
    #[serde(default)]
    pub origins: RawOrigins,
    #[serde(default)]
    pub trackers: RawTrackers,
    pub workload: RawWorkload,
    #[serde(default)]
    pub protocol: RawProtocol,
    pub reference: Option<RawReference>,
    /// `[[faults]]`: timed faults (every engine).
    #[serde(default)]
    pub faults: Vec<RawFault>,
    /// `[bench]`: read by shoal-bench's scenario benchmarks (which metrics, how many seeds), and
    /// ignored by every engine, so a bench scenario also runs with `shoal run`. Checked there.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted and skipped: the table belongs to shoal-bench")]
    pub bench: Option<serde::de::IgnoredAny>,
}

/// One `[[faults]]` entry: a verb at a time, applied to nodes (`crash`, `bounce`) or to the links
/// between two node sets `a` and `b` (`partition`, `repair`, `hold`, `release`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub at_s: f64,
    pub verb: FaultVerb,
    pub hosts: Option<Vec<i64>>,
    pub origins: Option<Vec<i64>>,
    pub trackers: Option<Vec<i64>>,
    pub a: Option<RawNodeSet>,
    pub b: Option<RawNodeSet>,
}

/// A set of nodes by index: agent hosts, origins, trackers.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNodeSet {
    pub hosts: Vec<i64>,
    pub origins: Vec<i64>,
    pub trackers: Vec<i64>,
}

/// What a fault does (turmoil's fault-injection verbs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultVerb {
    /// Stop the nodes' software: every task and socket is dropped.
    Crash,
    /// Restart the nodes' software (a crashed node comes back; a running one restarts).
    Bounce,
    /// Drop every message between `a` and `b`, in flight or sent later.
    Partition,
    /// End a partition between `a` and `b` (held messages stay held).
    Repair,
    /// Hold every message between `a` and `b` until `release`.
    Hold,
    /// Deliver the held messages between `a` and `b` and let new ones through.
    Release,
}

/// The state of the link between two nodes, as its last link verb left it (turmoil's model, which
/// every engine keeps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkState {
    #[default]
    Healthy,
    Partitioned,
    Held,
}

/// Published measurements the scenario replays, printed beside the run's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReference {
    pub source: String,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub p99_9_s: Option<f64>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    pub max_sim_time_s: f64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits { max_sim_time_s: 3600.0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    pub hosts: i64,
    pub upload_bytes_per_s: ByteRate,
    pub download_bytes_per_s: ByteRate,
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub latency_jitter_ms: f64,
    pub racks: Option<RawRacks>,
    pub pods: Option<RawPods>,
    pub zones: Option<RawZones>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRacks {
    pub hosts_per_rack: i64,
    pub uplink_bytes_per_s: Option<ByteRate>,
    pub oversubscription: Option<f64>,
    #[serde(default)]
    pub latency_ms: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPods {
    pub racks_per_pod: i64,
    pub uplink_bytes_per_s: Option<ByteRate>,
    pub oversubscription: Option<f64>,
    #[serde(default)]
    pub latency_ms: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZones {
    pub pods_per_zone: Option<i64>,
    pub count: Option<i64>,
    pub uplink_bytes_per_s: Option<ByteRate>,
    pub oversubscription: Option<f64>,
    #[serde(default)]
    pub latency_ms: f64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOrigins {
    pub count: i64,
    /// Required unless `count = 0`, checked in resolution.
    pub upload_bytes_per_s: Option<ByteRate>,
    pub download_bytes_per_s: Option<ByteRate>,
    pub placement: RawPlacement,
}

impl Default for RawOrigins {
    fn default() -> Self {
        RawOrigins {
            count: 1,
            upload_bytes_per_s: None,
            download_bytes_per_s: None,
            placement: RawPlacement::default(),
        }
    }
}

/// `"separate"` or `{ rack = N }`.
#[derive(Debug, Default, PartialEq)]
pub enum RawPlacement {
    #[default]
    Separate,
    Rack(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementTable {
    rack: i64,
}

impl<'de> Deserialize<'de> for RawPlacement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPlacement;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"separate\" or a table { rack = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPlacement, E> {
                match v {
                    "separate" => Ok(RawPlacement::Separate),
                    _ => Err(E::custom(format!(
                        "unknown placement {v:?} (expected \"separate\" or {{ rack = N }})"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPlacement, A::Error> {
                let t = PlacementTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawPlacement::Rack(t.rack))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTrackers {
    pub count: i64,
}

impl Default for RawTrackers {
    fn default() -> Self {
        RawTrackers { count: 1 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    #[serde(default)]
    pub blobs: Vec<RawBlob>,
    #[serde(default)]
    pub images: Vec<RawImage>,
    pub pulls: Vec<RawPull>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlob {
    pub name: String,
    pub size: ByteSize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub name: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    /// An image name, or a blob name (a blob pulled alone is an image of one layer).
    pub image: String,
    #[serde(default)]
    pub pullers: RawPullers,
    #[serde(default)]
    pub arrival: RawArrival,
    #[serde(default)]
    pub start_s: f64,
}

/// `"all"`, a host count, or every host of one group: `{ rack = N }`, `{ pod = N }`, `{ zone = N }`.
#[derive(Debug, Default, PartialEq)]
pub enum RawPullers {
    #[default]
    All,
    Count(i64),
    /// (level name, group index).
    Group(&'static str, i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupTable {
    rack: Option<i64>,
    pod: Option<i64>,
    zone: Option<i64>,
}

impl<'de> Deserialize<'de> for RawPullers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPullers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all\", a number of hosts, or { rack | pod | zone = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPullers, E> {
                match v {
                    "all" => Ok(RawPullers::All),
                    _ => Err(E::custom(format!(
                        "unknown pullers {v:?} (expected \"all\" or a number of hosts)"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPullers, E> {
                Ok(RawPullers::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPullers, E> {
                Ok(RawPullers::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPullers, A::Error> {
                let t = GroupTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (t.rack, t.pod, t.zone) {
                    (Some(r), None, None) => Ok(RawPullers::Group("racks", r)),
                    (None, Some(p), None) => Ok(RawPullers::Group("pods", p)),
                    (None, None, Some(z)) => Ok(RawPullers::Group("zones", z)),
                    _ => {
                        Err(de::Error::custom("expected exactly one of rack, pod or zone, e.g. { zone = 1 }"))
                    }
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalKind {
    #[default]
    AllAtOnce,
    Waves,
    Poisson,
}

/// `"all_at_once"`, or a table with `kind` and that kind's fields (checked in resolution, so that a
/// field of the wrong kind is reported by name).
#[derive(Debug, Default)]
pub struct RawArrival {
    pub kind: ArrivalKind,
    pub waves: Option<i64>,
    pub interval_s: Option<f64>,
    pub rate_per_s: Option<f64>,
}

impl<'de> Deserialize<'de> for RawArrival {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArrival;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all_at_once\", \"waves\", \"poisson\" or a table with kind = …")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArrival, E> {
                let kind = ArrivalKind::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(RawArrival { kind, ..RawArrival::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawArrival, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    kind: ArrivalKind,
                    waves: Option<i64>,
                    interval_s: Option<f64>,
                    rate_per_s: Option<f64>,
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawArrival {
                    kind: t.kind,
                    waves: t.waves,
                    interval_s: t.interval_s,
                    rate_per_s: t.rate_per_s,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtocol {
    #[serde(default)]
    pub policy: shoal_protocols::config::Policy,
    pub agent: Option<toml::Table>,
    pub origin_scheduler: Option<toml::Table>,
    pub tracker: Option<toml::Table>,
    pub origin: Option<toml::Table>,
    pub bittorrent: Option<toml::Table>,
    /// Read only with `policy = "dragonfly"`.
    pub dragonfly: Option<toml::Table>,
}
