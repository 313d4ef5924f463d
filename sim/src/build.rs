//! Building a run's nodes from a resolved scenario, for every engine: each component's seed, the
//! addresses the protocol sees, the agents, origins and trackers themselves, and the flow model's
//! topology. The discrete-event engine (`engine`) and the async driver (`driver`) both build from
//! here, so neither imports the other.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use shoal_protocols::agent::{Agent, AgentConfig};
use shoal_protocols::config::{Policy, TrackerConfig};
use shoal_protocols::origin::{BlobContent, Origin};
use shoal_protocols::peer::picker::PickerFactory;
use shoal_protocols::policy::dragonfly::HostLocation;
use shoal_protocols::tracker::{PeerHandout, Places, Tracker};
use shoal_protocols::{Digest, Instant, PeerId, PeerInfo};

use crate::net::{GroupSpec, HostSpec, Topology as NetTopology, TopologySpec};
use crate::scenario::{Place, Scenario};

/// Builds a tracker's handout policy from its configuration (the scenario's `[protocol.tracker]`,
/// as the policy leaves it); see [`PolicyHooks::handout`].
pub type HandoutFactory = Arc<dyn Fn(&TrackerConfig) -> Box<dyn PeerHandout> + Send + Sync>;

/// Policy implementations substituted for the configured ones when a run's nodes are built, so a
/// crate that embeds the simulator can run its own [`shoal_protocols::peer::picker::PiecePicker`]
/// or [`PeerHandout`] on any scenario (`shoal-bench`'s scenario benchmarks take them). The default
/// substitutes nothing: the nodes are exactly the ones the scenario configures.
///
/// The discrete-event engine applies them through [`crate::engine::RunOptions::hooks`], to every
/// node it builds, restarted ones included.
#[derive(Clone, Default)]
pub struct PolicyHooks {
    /// Every agent's piece picker ([`shoal_protocols::agent::Agent::set_picker_factory`]): replaces
    /// Kraken's `dispatch.piece_request_policy`; the BitTorrent policy installs its own picker over
    /// it and Dragonfly's client picks from its parents.
    pub picker: Option<PickerFactory>,
    /// Every tracker's handout ([`Tracker::set_handout`]): replaces `tracker.handout_policy` under
    /// the Kraken, BitTorrent and origin-only policies; Dragonfly's scheduler assigns parents instead.
    pub handout: Option<HandoutFactory>,
}

impl fmt::Debug for PolicyHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHooks")
            .field("picker", &self.picker.is_some())
            .field("handout", &self.handout.is_some())
            .finish()
    }
}

impl PolicyHooks {
    /// True if no hook is set (the nodes are the scenario's own).
    pub fn is_empty(&self) -> bool {
        self.picker.is_none() && self.handout.is_none()
    }

    /// Installs the picker hook, if any, on a freshly built agent.
    pub fn apply_agent(&self, agent: &mut Agent) {
        if let Some(f) = &self.picker {
            agent.set_picker_factory(f.clone());
        }
    }

    /// Installs the handout hook, if any, on a freshly built tracker.
    pub fn apply_tracker(&self, s: &Scenario, tracker: &mut Tracker) {
        if let Some(f) = &self.handout {
            tracker.set_handout(f(&s.protocol.tracker));
        }
    }
}

/// Derives a component's seed from the master seed: independent of the order components are built
/// in, so adding one component changes no other's seed.
pub fn derive_seed(master: u64, kind: &str, index: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(master.to_be_bytes());
    h.update(kind.as_bytes());
    h.update(index.to_be_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha256 is 32 bytes"))
}

/// Agent `i` listens on 127.a.b.c:7000 (loopback addresses: nothing here is ever dialled for real).
pub fn agent_addr(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8), 7000))
}

/// Origin `i` listens on 127.250.x.y:9000 with x.y = i + 1 (up to 65 535 origins; the scenario
/// allows 10 000).
pub fn origin_addr(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 250, (n >> 8) as u8, n as u8), 9000))
}

/// Tracker `i` listens on 127.251.x.y:8000 with x.y = i + 1 (up to 65 535 trackers; the scenario
/// allows 10 000).
pub fn tracker_addr(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 251, (n >> 8) as u8, n as u8), 8000))
}

/// Where every node listens. The discrete-event engine uses [`Addresses::simulated`]; the socket
/// engines use the ports or simulated hosts they bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub agents: Vec<SocketAddr>,
    pub origins: Vec<SocketAddr>,
    pub trackers: Vec<SocketAddr>,
}

impl Addresses {
    pub fn simulated(s: &Scenario) -> Self {
        Addresses {
            agents: (0..s.topology.hosts.len()).map(agent_addr).collect(),
            origins: (0..s.origins.len()).map(origin_addr).collect(),
            trackers: (0..s.trackers).map(tracker_addr).collect(),
        }
    }
}

/// The seed of a node's software after its `restarts`-th restart (`[[faults]]` `bounce`): the
/// node's own derived seed for the first run, a seed derived from it and the count after that.
pub fn incarnation_seed(s: &Scenario, kind: &str, i: usize, restarts: u32) -> u64 {
    let seed = derive_seed(s.seed, kind, i as u64);
    if restarts == 0 { seed } else { derive_seed(seed, "restart", u64::from(restarts)) }
}

/// Agent `i` of a scenario, with its derived seed.
pub fn build_agent(s: &Scenario, i: usize, addrs: &Addresses, now: Instant) -> Agent {
    build_agent_seeded(s, i, addrs, now, derive_seed(s.seed, "agent", i as u64))
}

/// Agent `i` of a scenario, with the given seed (a restarted agent's, [`incarnation_seed`]).
pub fn build_agent_seeded(s: &Scenario, i: usize, addrs: &Addresses, now: Instant, seed: u64) -> Agent {
    let cfg = AgentConfig { scheduler: s.protocol.agent.clone(), trackers: addrs.trackers.clone() };
    match dragonfly(s) {
        Some(df) => Agent::with_dragonfly(now, cfg, addrs.agents[i], seed, df.clone()),
        None => Agent::new(now, cfg, addrs.agents[i], seed),
    }
}

/// `[protocol.dragonfly]` when the scenario runs the Dragonfly policy.
fn dragonfly(s: &Scenario) -> Option<&shoal_protocols::policy::dragonfly::DragonflyConfig> {
    (s.protocol.policy == Policy::Dragonfly).then_some(&s.protocol.dragonfly)
}

/// Origin `o` of a scenario, serving `backend`, with its derived seed.
pub fn build_origin(
    s: &Scenario,
    o: usize,
    addrs: &Addresses,
    backend: BTreeMap<Digest, BlobContent>,
    now: Instant,
) -> Origin {
    build_origin_seeded(s, o, addrs, backend, now, derive_seed(s.seed, "origin", o as u64))
}

/// Origin `o` of a scenario, with the given seed (a restarted origin's, [`incarnation_seed`]).
pub fn build_origin_seeded(
    s: &Scenario,
    o: usize,
    addrs: &Addresses,
    backend: BTreeMap<Digest, BlobContent>,
    now: Instant,
    seed: u64,
) -> Origin {
    let scheduler = s.protocol.origin_scheduler.clone();
    let scheduler = match dragonfly(s) {
        Some(df) => df.origin_scheduler(scheduler),
        None => scheduler,
    };
    Origin::new(now, scheduler, s.protocol.origin.clone(), addrs.origins[o], backend, seed)
}

/// Tracker `t` of a scenario, knowing every origin, with its derived seed.
pub fn build_tracker(s: &Scenario, t: usize, addrs: &Addresses) -> Tracker {
    build_tracker_seeded(s, addrs, derive_seed(s.seed, "tracker", t as u64))
}

/// A tracker of a scenario with the given seed (a restarted tracker's, [`incarnation_seed`]).
pub fn build_tracker_seeded(s: &Scenario, addrs: &Addresses, seed: u64) -> Tracker {
    let origin_infos: Vec<PeerInfo> = addrs
        .origins
        .iter()
        .map(|&addr| PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: true, complete: true })
        .collect();
    let mut tracker =
        Tracker::new(s.protocol.tracker.clone(), origin_infos, s.protocol.origin.max_replica, seed);
    // Every node's place, for the tracker's locality policies (Kraken agents' --zone/--cluster).
    let places: Places = s
        .topology
        .hosts
        .iter()
        .zip(&addrs.agents)
        .map(|(h, a)| (*a, h.place.location()))
        .chain(s.origins.iter().zip(&addrs.origins).map(|(o, a)| (*a, o.place.location())))
        .collect();
    tracker.set_places(places);
    if let Some(df) = dragonfly(s) {
        tracker.set_dragonfly(df.clone());
        let sched = tracker.dragonfly_mut().expect("set above");
        let hosts = s.topology.hosts.iter().zip(&addrs.agents).map(|(h, a)| (*a, h.place));
        let origins = s.origins.iter().zip(&addrs.origins).map(|(o, a)| (*a, o.place));
        for (addr, place) in hosts.chain(origins) {
            sched.set_location(addr, host_location(place));
        }
    }
    tracker
}

/// What every origin's backend holds: every blob of the workload, as synthetic content.
pub fn backend(s: &Scenario) -> BTreeMap<Digest, BlobContent> {
    s.workload.blobs.iter().map(|b| (b.digest, BlobContent::Synthetic { size: b.size })).collect()
}

/// Dragonfly's host strings from a place: the zone is the IDC, and the location is
/// `zone|pod|rack`, so hosts in one rack match fully and hosts in one pod on two elements.
fn host_location(place: Place) -> HostLocation {
    let part = |x: Option<usize>, p: &str| x.map_or_else(String::new, |v| format!("{p}{v}"));
    let (zone, pod, rack) = (part(place.zone, "zone"), part(place.pod, "pod"), part(place.rack, "rack"));
    let location = if place.rack.is_none() && place.pod.is_none() && place.zone.is_none() {
        String::new()
    } else {
        format!("{zone}|{pod}|{rack}")
    };
    HostLocation { idc: zone, location }
}

/// The flow model's view: hosts (agents, then origins) with their capacities and groups.
pub fn net_topology(s: &Scenario) -> Result<NetTopology, crate::net::TopologyError> {
    let host = |place: Place, up: u64, down: u64| HostSpec {
        upload_bytes_per_s: up,
        download_bytes_per_s: down,
        rack: place.rack.map(|r| r as u32),
        pod: place.pod.map(|p| p as u32),
        zone: place.zone.map(|z| z as u32),
    };
    let mut hosts: Vec<HostSpec> = s
        .topology
        .hosts
        .iter()
        .map(|h| host(h.place, h.upload_bytes_per_s, h.download_bytes_per_s))
        .collect();
    hosts.extend(s.origins.iter().map(|o| host(o.place, o.upload_bytes_per_s, o.download_bytes_per_s)));
    let groups = |level: &Option<crate::scenario::Level>| -> Vec<GroupSpec> {
        level.as_ref().map_or_else(Vec::new, |l| {
            l.groups
                .iter()
                .map(|g| GroupSpec {
                    uplink_bytes_per_s: g.uplink_bytes_per_s.unwrap_or(0),
                    downlink_bytes_per_s: g.uplink_bytes_per_s.unwrap_or(0),
                    // Latency comes from the scenario's own rule (`Topology::latency_between`).
                    latency: std::time::Duration::ZERO,
                })
                .collect()
        })
    };
    TopologySpec {
        base_latency: s.topology.latency,
        hosts,
        racks: groups(&s.topology.racks),
        pods: groups(&s.topology.pods),
        zones: groups(&s.topology.zones),
    }
    .build()
}
