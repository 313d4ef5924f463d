//! The discrete-event engine's world: every protocol node of a run, built by [`crate::build`], and
//! the lookups the engine needs to route between them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use shoal_protocols::agent::Agent;
use shoal_protocols::origin::Origin;
use shoal_protocols::tracker::Tracker;
use shoal_protocols::{Digest, Instant};

use crate::build::{
    Addresses, PolicyHooks, agent_addr, backend, build_agent, build_origin, build_tracker, net_topology,
    origin_addr,
};
use crate::net::Topology as NetTopology;
use crate::scenario::{Place, Scenario};

/// Every protocol node of a run. Network node `n` is agent `n` for `n < agents.len()`, then origin
/// `n - agents.len()`; trackers carry control traffic only and are not network nodes.
#[derive(Debug)]
pub struct World {
    pub agents: Vec<Agent>,
    pub origins: Vec<Origin>,
    pub trackers: Vec<Tracker>,
    /// Where each network node sits, for latency.
    pub places: Vec<Place>,
    pub addrs: BTreeMap<SocketAddr, u32>,
    pub tracker_addrs: BTreeMap<SocketAddr, usize>,
    pub blob_by_digest: BTreeMap<Digest, u32>,
    pub net: NetTopology,
}

impl World {
    /// The scenario's nodes, with `hooks`' policies installed.
    pub fn build(s: &Scenario, hooks: &PolicyHooks) -> Result<World, String> {
        let now = Instant::ZERO;
        let addrs = Addresses::simulated(s);
        let trackers_addrs = addrs.trackers.clone();
        let agents: Vec<Agent> = (0..s.topology.hosts.len())
            .map(|i| {
                let mut a = build_agent(s, i, &addrs, now);
                hooks.apply_agent(&mut a);
                a
            })
            .collect();
        let backend = backend(s);
        let origins: Vec<Origin> =
            (0..s.origins.len()).map(|o| build_origin(s, o, &addrs, backend.clone(), now)).collect();
        let trackers: Vec<Tracker> = (0..s.trackers)
            .map(|t| {
                let mut tr = build_tracker(s, t, &addrs);
                hooks.apply_tracker(s, &mut tr);
                tr
            })
            .collect();

        let mut places: Vec<Place> = s.topology.hosts.iter().map(|h| h.place).collect();
        places.extend(s.origins.iter().map(|o| o.place));
        let mut addrs = BTreeMap::new();
        for i in 0..agents.len() {
            addrs.insert(agent_addr(i), i as u32);
        }
        for o in 0..origins.len() {
            addrs.insert(origin_addr(o), (agents.len() + o) as u32);
        }
        let tracker_addrs = trackers_addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let blob_by_digest = s.workload.blobs.iter().enumerate().map(|(i, b)| (b.digest, i as u32)).collect();
        let net = net_topology(s).map_err(|e| format!("topology: {e:?}"))?;
        Ok(World { agents, origins, trackers, places, addrs, tracker_addrs, blob_by_digest, net })
    }
}
