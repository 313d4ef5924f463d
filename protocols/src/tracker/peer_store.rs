//! The tracker's peer store (Kraken's `peerstore.LocalStore`, its default since PR #270).
//!
//! info hash → {peer id → (peer, expires at)}. Every announce refreshes the entry's expiry to
//! `now + ttl`. An entry is live while `now <= expires_at` (Kraken: expired once `now.After(expiresAt)`).
//!
//! Expiry is swept lazily, with no timer: the group being read is swept before sampling, so expired
//! entries are never handed out (Kraken may return "slightly expired" ones until its 5-minute sweep;
//! shoal does not, which only matters for peers silent for 5 h). Other groups are swept at most every
//! [`SWEEP_INTERVAL`] of input time, on the next write, and empty groups are dropped then, which bounds
//! memory like Kraken's periodic cleanup does.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::time::Instant;
use crate::types::{InfoHash, PeerId, PeerInfo};

/// How often every group is swept (Kraken's `_cleanupExpiredPeerEntriesInterval`).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Debug)]
struct Entry {
    peer: PeerInfo,
    expires_at: Instant,
}

/// Peers per torrent with a time to live.
#[derive(Clone, Debug)]
pub struct PeerStore {
    ttl: Duration,
    /// BTreeMaps: sampling walks a group in key order before shuffling, so the order must not depend
    /// on hashing.
    groups: BTreeMap<InfoHash, BTreeMap<PeerId, Entry>>,
    next_sweep_at: Instant,
}

impl PeerStore {
    /// An empty store whose entries live `ttl` after their last announce.
    pub fn new(ttl: Duration) -> Self {
        PeerStore { ttl, groups: BTreeMap::new(), next_sweep_at: Instant::ZERO }
    }

    /// Inserts or refreshes `peer` for `info_hash`. The stored copy always has `origin = false`: the
    /// store holds agents only, origins come from the ring.
    pub fn update(&mut self, now: Instant, info_hash: InfoHash, peer: &PeerInfo) {
        self.sweep_if_due(now);
        let stored = PeerInfo { origin: false, ..peer.clone() };
        self.groups
            .entry(info_hash)
            .or_default()
            .insert(peer.peer_id, Entry { peer: stored, expires_at: now + self.ttl });
    }

    /// Up to `limit` live peers of `info_hash`, chosen uniformly at random and in random order
    /// (Kraken's local store relies on Go's randomised map iteration; its Redis store on `SRANDMEMBER`).
    pub fn sample(
        &mut self,
        now: Instant,
        info_hash: &InfoHash,
        limit: usize,
        rng: &mut ChaCha8Rng,
    ) -> Vec<PeerInfo> {
        if limit == 0 {
            return Vec::new();
        }
        let Some(group) = self.groups.get_mut(info_hash) else {
            return Vec::new();
        };
        group.retain(|_, e| now <= e.expires_at);
        let mut live: Vec<&PeerInfo> = group.values().map(|e| &e.peer).collect();
        let (chosen, _) = live.partial_shuffle(rng, limit);
        chosen.iter().map(|&p| p.clone()).collect()
    }

    /// Live peers of `info_hash`.
    pub fn len(&self, now: Instant, info_hash: &InfoHash) -> usize {
        self.groups.get(info_hash).map_or(0, |g| g.values().filter(|e| now <= e.expires_at).count())
    }

    /// Torrents with at least one stored entry (live or not yet swept).
    pub fn torrents(&self) -> usize {
        self.groups.len()
    }

    fn sweep_if_due(&mut self, now: Instant) {
        if now < self.next_sweep_at {
            return;
        }
        self.next_sweep_at = now + SWEEP_INTERVAL;
        self.groups.retain(|_, group| {
            group.retain(|_, e| now <= e.expires_at);
            !group.is_empty()
        });
    }
}
