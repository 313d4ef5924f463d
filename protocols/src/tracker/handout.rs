//! Peer handout policies: how the tracker orders (and may trim) the peers it returns to an announce
//! (Kraken's `tracker/peerhandoutpolicy`, reference/kraken.md §5).
//!
//! A policy receives the candidate list (the store's random sample followed by the owning origins) and
//! rewrites it in place. Kraken's policies only reorder; the `&mut Vec` also lets later policies drop
//! candidates (a Dragonfly-style scheduler handing out a few parents) or cap the list.
//!
//! Locality: a topology-aware policy needs to know where each peer sits. Placement is static in a
//! scenario and belongs to the driver, so such a policy takes a peer → location lookup from the driver
//! when it is built (a field of the policy, e.g. a `BTreeMap<SocketAddr, RackId>` or a closure) and
//! reads the requester's and candidates' locations from it in [`PeerHandout::order`]. The trait itself
//! stays free of any topology type.

use std::fmt;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::config::HandoutPolicy;
use crate::time::Instant;
use crate::types::{Digest, InfoHash, PeerInfo};

/// What a policy may know about the announce it answers. A struct rather than separate arguments so
/// that adding a field later does not break existing policies.
#[derive(Clone, Copy, Debug)]
pub struct HandoutContext<'a> {
    pub now: Instant,
    /// The announcing peer, as stored (origin is always false).
    pub requester: &'a PeerInfo,
    pub info_hash: &'a InfoHash,
    pub digest: &'a Digest,
}

/// Orders the tracker's handout. Implementations must be deterministic given `rng`: all randomness
/// comes from the tracker's seeded generator.
pub trait PeerHandout: fmt::Debug + Send {
    /// Reorders `peers` in place; may also remove entries. Never panics, whatever the input.
    fn order(&mut self, rng: &mut ChaCha8Rng, ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>);
}

/// The policy named by [`HandoutPolicy`].
pub fn from_config(policy: HandoutPolicy) -> Box<dyn PeerHandout> {
    match policy {
        HandoutPolicy::Default => Box::new(DefaultHandout),
        HandoutPolicy::Completeness => Box::new(CompletenessHandout),
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
