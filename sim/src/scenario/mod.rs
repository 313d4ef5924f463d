//! Scenario files: what is simulated — topology, origins, trackers, workload, protocol
//! configuration and seed — loaded from TOML, overridden with `key=value`, validated, and resolved
//! into [`Scenario`], the form every engine consumes. The format is documented field by field in
//! `scenarios/README.md`.
//!
//! Loading is: parse the TOML text → apply overrides to the document → deserialize into the raw
//! file form (unknown fields refused everywhere) → check and resolve. Every failure is a
//! [`ScenarioError`] naming the file, line and column (or the override) and the field path.
//!
//! Units: the resolved form holds exact integers — sizes in bytes, rates in bytes per second,
//! times as [`Duration`]. Decimal (`GB` = 10⁹) and binary (`GiB` = 2³⁰) units exist only in input
//! strings ([`units`]).

mod bound;
pub(crate) mod error;
pub(crate) mod overrides;
mod protocol;
pub mod ranges;
mod raw;
mod resolve;
pub mod units;

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use shoal_protocols::Digest;
use shoal_protocols::config::{BitTorrentConfig, OriginConfig, Policy, SchedulerConfig, TrackerConfig};
use shoal_protocols::policy::dragonfly::DragonflyConfig;

pub use bound::{BoundTerm, LowerBound};
pub use error::{Location, ScenarioError};
pub use protocol::Preset;

use error::Locator;

/// A loaded, validated scenario. Indices are stable: host `i` is `topology.hosts[i]`, blob `b` is
/// `workload.blobs[b]`, and so on.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it was loaded from, as given (or the name passed to [`Scenario::from_toml`]).
    pub source: String,
    pub seed: u64,
    /// The simulation stops here whatever is still running.
    pub max_sim_time: Duration,
    pub topology: Topology,
    /// Origin `o` is `origins[o]`; all have the same rates and place.
    pub origins: Vec<Origin>,
    /// How many trackers; they carry control traffic only and sit outside every rack.
    pub trackers: usize,
    pub workload: Workload,
    pub protocol: Protocol,
    /// Published numbers for this workload, if the scenario replays a measurement.
    pub reference: Option<Reference>,
    /// The `key=value` overrides it was loaded with, in order.
    pub overrides: Vec<(String, String)>,
    /// `[[faults]]`, sorted by time (file order among equal times). Every engine applies them.
    pub faults: Vec<Fault>,
    /// Legal values that make the run cost far more than it looks (`ranges`): `shoal run`
    /// refuses a scenario that has any unless given `--force` ([`Scenario::refuse_extremes`]).
    pub extremes: Vec<ExtremeValue>,
}

pub use ranges::ExtremeValue;
pub use raw::{FaultVerb, LinkState};

/// A timed fault: `verb` at `at` on `nodes` (`crash`, `bounce`), or on every link between a node
/// of `nodes` and a node of `peers` (`partition`, `repair`, `hold`, `release`; the sets are
/// disjoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub at: Duration,
    pub verb: FaultVerb,
    pub nodes: NodeSet,
    /// Empty for `crash` and `bounce`.
    pub peers: NodeSet,
}

/// Nodes by index, each list ascending without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    pub hosts: Vec<usize>,
    pub origins: Vec<usize>,
    pub trackers: Vec<usize>,
}

impl NodeSet {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.origins.is_empty() && self.trackers.is_empty()
    }
}

/// Published per-host image completion times the scenario replays (`[reference]`), reported beside
/// the run's own so the two can be compared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub source: String,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub p99_9_s: Option<f64>,
}

/// Agent hosts and the optional rack → pod → zone hierarchy above them.
#[derive(Clone, Debug)]
pub struct Topology {
    pub hosts: Vec<Host>,
    /// One-way latency between any two nodes.
    pub latency: Duration,
    /// Each message's latency is increased by a uniform random amount in [0, this), drawn from the
    /// run's seed (connections still deliver in order). Real networks and start times are never
    /// exactly synchronous; without jitter, ties are broken by host index, which biases who
    /// connects to whom.
    pub latency_jitter: Duration,
    pub racks: Option<Level>,
    pub pods: Option<Level>,
    pub zones: Option<Level>,
}

/// One level of the hierarchy.
#[derive(Clone, Debug)]
pub struct Level {
    /// Added to the one-way latency when a path leaves a group of this level.
    pub latency: Duration,
    pub groups: Vec<Group>,
}

/// A rack, pod or zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Children: host indices for a rack, rack indices for a pod, pod indices for a zone. Groups are
    /// contiguous and only the last of a level may be partial.
    pub members: Range<usize>,
    /// Capacity of the uplink in each direction; `None` is non-blocking.
    pub uplink_bytes_per_s: Option<u64>,
    /// The group of the next level up, if that level exists.
    pub parent: Option<usize>,
}

/// Where a node sits; `None` at a level means outside every group of that level (in the core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub rack: Option<usize>,
    pub pod: Option<usize>,
    pub zone: Option<usize>,
}

impl Place {
    /// The place as the tracker's locality policies see it (`Tracker::set_places`): every driver
    /// gives the tracker each node's listening address → `place.location()`.
    pub fn location(self) -> shoal_protocols::tracker::Location {
        let id = |g: Option<usize>| g.and_then(|g| u32::try_from(g).ok());
        shoal_protocols::tracker::Location { rack: id(self.rack), pod: id(self.pod), zone: id(self.zone) }
    }
}

/// An agent host. Rates are what the host can use: the NIC rate from `[topology]`, capped by the
/// agent's bandwidth limiter (`protocol.agent.conn.bandwidth`) when it is enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub place: Place,
    pub upload_bytes_per_s: u64,
    pub download_bytes_per_s: u64,
}

/// An origin. Rates as for [`Host`], capped by `protocol.origin_scheduler.conn.bandwidth` if enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub place: Place,
    pub upload_bytes_per_s: u64,
    pub download_bytes_per_s: u64,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub blobs: Vec<Blob>,
    /// Declared images, then one single-layer image per blob pulled directly.
    pub images: Vec<Image>,
    /// The `[[workload.pulls]]` entries, in file order.
    pub groups: Vec<PullGroup>,
    /// Every (host, image) pull with its start time, sorted by (time, host, group).
    pub pulls: Vec<Pull>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub name: String,
    pub size: u64,
    /// sha256 of `"shoal blob " + name`: stable across runs, and distinct names give distinct digests
    /// (and so rendezvous-hash independently onto origins).
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    /// Blob indices, in layer order, without repeats.
    pub layers: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PullGroup {
    pub image: usize,
    /// Host indices, ascending.
    pub pullers: Vec<usize>,
    pub arrival: Arrival,
    pub start: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival {
    AllAtOnce,
    /// Puller k of the group starts at start + (k mod waves) × interval.
    Waves {
        waves: u32,
        interval: Duration,
    },
    /// Exponential gaps at this mean rate, pullers in a seeded random order.
    Poisson {
        rate_per_s: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pull {
    pub host: usize,
    pub image: usize,
    pub at: Duration,
    /// Index into [`Workload::groups`].
    pub group: usize,
}

/// The distribution policy and Kraken's configuration for each role.
#[derive(Clone, Debug, PartialEq)]
pub struct Protocol {
    /// `protocol.policy`: which protocol the nodes run.
    pub policy: Policy,
    pub agent: SchedulerConfig,
    pub origin_scheduler: SchedulerConfig,
    pub tracker: TrackerConfig,
    pub origin: OriginConfig,
    /// `[protocol.bittorrent]`: BitTorrent classic's parameters, read whatever the policy and applied to
    /// `agent`, `origin_scheduler` and `tracker` when `policy` is [`Policy::BitTorrent`].
    pub bittorrent: BitTorrentConfig,
    /// `[protocol.dragonfly]`: Dragonfly's parameters (defaults unless the policy is Dragonfly).
    pub dragonfly: DragonflyConfig,
}

impl Scenario {
    /// Reads and resolves a scenario file, with `overrides` as (dotted key, value) pairs applied in
    /// order — e.g. `("topology.hosts", "100")`, `("workload.blobs.0.size", "1GB")`.
    pub fn load(path: impl AsRef<Path>, overrides: &[(String, String)]) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        Scenario::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Like [`Scenario::load`] with `key=value` strings, as given to `--set`.
    pub fn load_with_sets(path: impl AsRef<Path>, sets: &[String]) -> Result<Scenario, ScenarioError> {
        let pairs = sets
            .iter()
            .map(|s| {
                s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                    ScenarioError::Override { text: s.clone(), message: "expected key=value".into() }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Scenario::load(path, &pairs)
    }

    /// Resolves scenario text; `source` names it in errors.
    pub fn from_toml(
        text: &str,
        source: &str,
        overrides: &[(String, String)],
    ) -> Result<Scenario, ScenarioError> {
        let mut locator = Locator { file: source.to_string(), text: text.to_string(), overrides: Vec::new() };
        let table: toml::Table = toml::from_str(text).map_err(|e| locator.syntax(&e))?;
        let mut doc = toml::Value::Table(table);
        for (key, value) in overrides {
            let written = format!("{key}={value}");
            let (path, value) = overrides::parse_override(&written)?;
            overrides::apply_override(&mut doc, &path, value, &written)?;
            locator.overrides.push((path, written));
        }
        let raw: raw::RawScenario = overrides::deserialize_at(doc, &[]).map_err(|e| locator.error(e))?;
        let mut s = resolve::resolve(raw, source).map_err(|e| locator.error(e))?;
        for e in &mut s.extremes {
            let path: Vec<String> = e.field.split('.').map(String::from).collect();
            e.at = Some(locator.locate(&path).to_string());
        }
        s.overrides = overrides.to_vec();
        Ok(s)
    }

    /// Refuses a scenario with extreme values ([`Scenario::extremes`]), naming each with its reason
    /// and the flag that allows them.
    pub fn refuse_extremes(&self) -> Result<(), ScenarioError> {
        if self.extremes.is_empty() {
            return Ok(());
        }
        Err(ScenarioError::Extreme { values: self.extremes.clone() })
    }

    /// The `shoal run` command that replays this scenario: its file, seed and every other override.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("shoal run {} --seed {}", self.source, self.seed);
        for (k, v) in self.overrides.iter().filter(|(k, _)| k != "seed") {
            cmd.push_str(&format!(" --set {k}={v}"));
        }
        cmd
    }

    /// The physical lower bound on the time to finish every pull (see [`LowerBound`]).
    pub fn lower_bound(&self) -> LowerBound {
        bound::lower_bound(self)
    }

    /// Distinct bytes each host pulls (the union of the blobs of every image it pulls).
    pub fn bytes_per_host(&self) -> Vec<u64> {
        resolve::blobs_per_host(&self.workload, self.topology.hosts.len())
            .iter()
            .map(|set| set.iter().map(|&b| self.workload.blobs[b].size).sum())
            .collect()
    }
}

/// Distinct blobs each host pulls, in blob order.
pub(crate) fn blobs_per_host(s: &Scenario) -> Vec<std::collections::BTreeSet<usize>> {
    resolve::blobs_per_host(&s.workload, s.topology.hosts.len())
}

impl Topology {
    /// One-way latency between two places: the base latency plus each level's latency where the two
    /// places are in different groups of that level (outside every group counts as different from
    /// inside one; two nodes both outside are together in the core).
    pub fn latency_between(&self, a: Place, b: Place) -> Duration {
        let mut d = self.latency;
        for (level, x, y) in
            [(&self.racks, a.rack, b.rack), (&self.pods, a.pod, b.pod), (&self.zones, a.zone, b.zone)]
        {
            if let Some(l) = level
                && x != y
            {
                d += l.latency;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests;
