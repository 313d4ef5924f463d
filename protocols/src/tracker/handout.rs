//! Peer handout policies: how the tracker orders (and may trim) the peers it returns to an announce
//! (Kraken's `tracker/peerhandoutpolicy`, reference/kraken.md §5).
//!
//! A policy receives the candidate list (the store's random sample followed by the owning origins) and
//! rewrites it in place. Kraken's policies only reorder; the `&mut Vec` also lets later policies drop
//! candidates (a Dragonfly-style scheduler handing out a few parents) or cap the list.
//!
//! Locality: a topology-aware policy needs to know where each peer sits. Placement is static and
//! belongs to the driver (like Kraken agents' `--zone`/`--cluster` flags), so the driver gives the
//! tracker a peer address → [`Location`] map ([`super::Tracker::set_places`]) and every policy reads
//! it through [`HandoutContext::places`]. An address missing from the map is "somewhere unknown":
//! farther than everything, in no group.
//!
//! A policy sees the store's random sample of [`PeerHandout::sample_limit`] peers (by default the
//! tracker's `announce_limit`, Kraken's 50); the locality policies ask for every live peer, since a
//! random 50 of 2600 holds almost nobody of the requester's rack, and cut the handout to
//! [`HandoutContext::announce_limit`] agents themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::config::{HandoutPolicy, LocalityConfig, TopologyLevel, TrackerConfig};
use crate::time::Instant;
use crate::types::{Digest, InfoHash, PeerInfo};

/// What a policy may know about the announce it answers. A struct rather than separate arguments so
/// that adding a field later does not break existing policies.
#[derive(Clone, Copy, Debug)]
pub struct HandoutContext<'a> {
    /// The time of the announce.
    pub now: Instant,
    /// The announcing peer, as stored (origin is always false).
    pub requester: &'a PeerInfo,
    /// The torrent announced.
    pub info_hash: &'a InfoHash,
    /// The blob of that torrent (its origins are placed by this digest).
    pub digest: &'a Digest,
    /// Where each peer sits, as given to the tracker (empty if the driver gave nothing).
    pub places: &'a Places,
    /// Agents the handout should hold at most (the tracker's `announce_limit`); origins come on top.
    pub announce_limit: usize,
}

/// Where a node sits in the host hierarchy. Group numbers are global (rack 3 is one rack whatever
/// its pod); `None` at a level means in no group of that level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The rack's global number.
    pub rack: Option<u32>,
    /// The pod's global number.
    pub pod: Option<u32>,
    /// The zone's global number.
    pub zone: Option<u32>,
}

impl Location {
    /// The group at `level`.
    pub fn group(&self, level: TopologyLevel) -> Option<u32> {
        match level {
            TopologyLevel::Rack => self.rack,
            TopologyLevel::Pod => self.pod,
            TopologyLevel::Zone => self.zone,
        }
    }
}

/// Peer address → where it sits.
pub type Places = BTreeMap<SocketAddr, Location>;

/// How far apart two places are: 0 same rack, 1 same pod, 2 same zone, 3 otherwise (or unknown).
pub fn distance(a: Option<Location>, b: Option<Location>) -> u8 {
    let (Some(a), Some(b)) = (a, b) else { return 3 };
    let same = |x: Option<u32>, y: Option<u32>| x.is_some() && x == y;
    if same(a.rack, b.rack) {
        0
    } else if same(a.pod, b.pod) {
        1
    } else if same(a.zone, b.zone) {
        2
    } else {
        3
    }
}

/// Orders the tracker's handout. Implementations must be deterministic given `rng`: all randomness
/// comes from the tracker's seeded generator.
pub trait PeerHandout: fmt::Debug + Send {
    /// Reorders `peers` in place; may also remove entries. Never panics, whatever the input.
    fn order(&mut self, rng: &mut ChaCha8Rng, ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>);

    /// How many random live peers the tracker draws from its store before [`PeerHandout::order`]:
    /// by default the `announce_limit` itself (Kraken). A policy returning more must cut the
    /// handout to `ctx.announce_limit` agents.
    fn sample_limit(&self, announce_limit: usize) -> usize {
        announce_limit
    }
}

/// The policy named by [`HandoutPolicy`], with default parameters.
pub fn from_config(policy: HandoutPolicy) -> Box<dyn PeerHandout> {
    from_tracker_config(&TrackerConfig { handout_policy: policy, ..TrackerConfig::default() })
}

/// The policy `config.handout_policy` names, with its parameters from `config`.
pub fn from_tracker_config(config: &TrackerConfig) -> Box<dyn PeerHandout> {
    let LocalityConfig { spill_peers, group_level } = config.locality;
    match config.handout_policy {
        HandoutPolicy::Default => Box::new(DefaultHandout),
        HandoutPolicy::Completeness => Box::new(CompletenessHandout),
        HandoutPolicy::Topology => Box::new(TopologyHandout { spill_peers }),
        HandoutPolicy::NaiveLocality => Box::new(NaiveLocalityHandout { group_level }),
    }
}

/// Kraken's `default` policy: priority 0 for every peer, so the handout keeps the store's random sample
/// order with the origins after it.
///
/// Kraken runs `sort.Slice` even here; with equal keys Go's insertion sort (≤ 12 elements) keeps the
/// order and pdqsort may permute it deterministically, which over a random sample is still a random
/// order. Keeping the order is the faithful reading.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultHandout;

impl PeerHandout for DefaultHandout {
    fn order(&mut self, _rng: &mut ChaCha8Rng, _ctx: &HandoutContext<'_>, _peers: &mut Vec<PeerInfo>) {}
}

/// Kraken's `completeness` policy (its shipped configuration): complete agents first (priority 0),
/// then origins (1), then incomplete agents (2).
///
/// Within a class Kraken's order comes from Go's unstable `sort.Slice` over a random sample; shoal
/// shuffles each class with the tracker's generator, so that no class member (e.g. the primary origin)
/// is systematically first.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompletenessHandout;

impl CompletenessHandout {
    /// Kraken's priority: lower is handed out first.
    pub fn priority(peer: &PeerInfo) -> u8 {
        if peer.origin {
            1
        } else if peer.complete {
            0
        } else {
            2
        }
    }
}

impl PeerHandout for CompletenessHandout {
    fn order(&mut self, rng: &mut ChaCha8Rng, _ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>) {
        // Stable, so the shuffle below is the only source of order within a class.
        peers.sort_by_key(Self::priority);
        let mut start = 0;
        while start < peers.len() {
            let class = Self::priority(&peers[start]);
            let len = peers[start..].iter().take_while(|p| Self::priority(p) == class).count();
            peers[start..start + len].shuffle(rng);
            start += len;
        }
    }
}

/// Topology-aware handout (`topology`): nearest first, with a spill so that no group is left alone.
///
/// From every live peer of the torrent, in random order:
/// 1. **spill**: the first `spill_peers` peers outside the requester's rack (a uniform random choice
///    among them, whatever their level) — every group keeps learning about the others, which is what
///    Kraken #244's locality policy lacked;
/// 2. **nearest**: the others sorted by distance (same rack, pod, zone, anywhere), complete agents
///    first within a level, random otherwise, cut so that the handout holds `announce_limit` agents.
///    A level with fewer candidates than the handout spills to the next by itself.
///
/// Order of the handout: the complete agents at the nearest distance present (usually the
/// requester's rack: they have everything, nearby), then the spill peers and the origins (so a rack
/// with no copy yet dials them among its first connections: agents dial in handout order until they
/// reach `max_open_conn`), then the other agents nearest first. Origins are always included, on top
/// of the limit as in Kraken. Without places every peer is "anywhere", and the order is Kraken's
/// completeness order (seeders, origins, the rest) with the spill peers just before the origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopologyHandout {
    /// Up to this many agents from outside the requester's rack go into every handout
    /// (`locality.spill_peers`, default 1).
    pub spill_peers: usize,
}

impl PeerHandout for TopologyHandout {
    fn sample_limit(&self, _announce_limit: usize) -> usize {
        usize::MAX
    }

    fn order(&mut self, rng: &mut ChaCha8Rng, ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>) {
        let me = ctx.places.get(&ctx.requester.addr).copied();
        let (origins, mut agents): (Vec<PeerInfo>, Vec<PeerInfo>) = peers.drain(..).partition(|p| p.origin);
        // The store's sample is random already; shuffling again keeps the policy's randomness its own.
        agents.shuffle(rng);
        let limit = ctx.announce_limit;
        let n_spill = self.spill_peers.min(limit);
        let mut spill = Vec::with_capacity(n_spill);
        let mut near: Vec<(u8, bool, PeerInfo)> = Vec::with_capacity(agents.len());
        for p in agents {
            let d = distance(me, ctx.places.get(&p.addr).copied());
            if spill.len() < n_spill && d > 0 {
                spill.push(p);
            } else {
                near.push((d, !p.complete, p));
            }
        }
        // Stable: the shuffle orders peers within a (level, completeness) class.
        near.sort_by_key(|(d, incomplete, _)| (*d, *incomplete));
        near.truncate(limit - spill.len());
        let nearest = near.first().map(|(d, _, _)| *d);
        let local_seeders =
            near.iter().take_while(|(d, incomplete, _)| Some(*d) == nearest && !incomplete).count();
        let mut near = near.into_iter().map(|(_, _, p)| p);
        peers.extend(near.by_ref().take(local_seeders));
        peers.extend(spill);
        peers.extend(origins);
        peers.extend(near);
    }
}

/// The naive locality policy of Kraken #244 (`naive_locality`): only agents of the requester's own
/// group at `group_level` (up to `announce_limit` of them, at random), plus the origins, in Kraken's
/// completeness order. A requester in no group (or of unknown place) gets the origins alone.
///
/// Its failure: an early group connects to the origins up to their per-torrent connection cap; a
/// later group's dials to the origins are refused (and blacklisted), it is never told about the
/// early group, and its agents connect only among themselves, where nobody has a piece, until the
/// early group finishes and its origin connections go idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaiveLocalityHandout {
    /// The level whose group the handout is confined to (`locality.group_level`, default zone).
    pub group_level: TopologyLevel,
}

impl PeerHandout for NaiveLocalityHandout {
    fn sample_limit(&self, _announce_limit: usize) -> usize {
        usize::MAX
    }

    fn order(&mut self, rng: &mut ChaCha8Rng, ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>) {
        let group = ctx.places.get(&ctx.requester.addr).and_then(|l| l.group(self.group_level));
        let in_group = |p: &PeerInfo| {
            group.is_some() && ctx.places.get(&p.addr).and_then(|l| l.group(self.group_level)) == group
        };
        let mut kept = 0;
        peers.retain(|p| {
            let keep = p.origin || (kept < ctx.announce_limit && in_group(p));
            kept += usize::from(keep && !p.origin);
            keep
        });
        CompletenessHandout.order(rng, ctx, peers);
    }
}
