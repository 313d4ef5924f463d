//! The Dragonfly client's piece and parent choice (reference/peers.md §1.3), held by a torrent's
//! dispatcher when the policy is Dragonfly.
//!
//! At most `concurrent_pieces` requests are in flight for the torrent, whoever they went to. When a
//! slot is free the client takes the lowest-index piece that a parent has, that it lacks and that is
//! not requested, and sends the request to one of the parents holding it, chosen at random with
//! probability proportional to the parent's idle-upload weight `max(maxTx − tx, maxTx / 10)` (from the
//! scheduler's answers; a parent without one weighs Dragonfly's 10 Gbit/s default). Only parents
//! are asked: children connected to this peer are served, never requested from.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::DEFAULT_MAX_TX_BYTES_PER_S;
use crate::types::PeerId;

/// The client-side state of one torrent.
#[derive(Clone, Debug)]
pub struct ClientPicker {
    /// Requests in flight for the torrent at most, across parents (at least 1).
    pub concurrent_pieces: usize,
    /// Current parents (or the origins, back to source) and their weights, bytes/s.
    parents: BTreeMap<PeerId, u64>,
    /// Piece costs (ms, request to arrival) not yet reported.
    pub costs_ms: Vec<u32>,
}

impl ClientPicker {
    /// A picker with no parents yet, keeping up to `concurrent_pieces` (at least 1) requests in flight.
    pub fn new(concurrent_pieces: usize) -> Self {
        ClientPicker {
            concurrent_pieces: concurrent_pieces.max(1),
            parents: BTreeMap::new(),
            costs_ms: Vec::new(),
        }
    }

    /// Replaces the parents; their weights start at the default until the scheduler sends them.
    pub fn set_parents(&mut self, parents: impl IntoIterator<Item = PeerId>) {
        let old = std::mem::take(&mut self.parents);
        for p in parents {
            let w = old.get(&p).copied().unwrap_or(DEFAULT_MAX_TX_BYTES_PER_S);
            self.parents.insert(p, w);
        }
    }

    /// Updates the weights of current parents; others are ignored.
    pub fn set_weights(&mut self, weights: &[(PeerId, u64)]) {
        for (p, w) in weights {
            if let Some(x) = self.parents.get_mut(p) {
                *x = *w;
            }
        }
    }

    /// True if `peer` is a current parent.
    pub fn is_parent(&self, peer: &PeerId) -> bool {
        self.parents.contains_key(peer)
    }

    /// The current parents with their idle-upload weights, bytes/s, in peer id order.
    pub fn parents(&self) -> impl Iterator<Item = (&PeerId, &u64)> {
        self.parents.iter()
    }

    /// Chooses one of `holders` (parents holding a piece) by weight; uniform if every weight is 0.
    /// `holders` must be non-empty and parents.
    pub fn choose(&self, rng: &mut ChaCha8Rng, holders: &[PeerId]) -> PeerId {
        let weights: Vec<u64> = holders.iter().map(|p| self.parents.get(p).copied().unwrap_or(0)).collect();
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        if total == 0 {
            return holders[rng.random_range(0..holders.len())];
        }
        let mut x = rng.random_range(0..total);
        for (p, w) in holders.iter().zip(weights) {
            if x < u128::from(w) {
                return *p;
            }
            x -= u128::from(w);
        }
        *holders.last().expect("holders is non-empty")
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn id(i: u8) -> PeerId {
        PeerId::from_raw([i; 20])
    }

    /// Parent choice follows the idle-upload weights: 1000 draws at weights 1:2:7 with a fixed seed
    /// land within a few percent of 10 %, 20 %, 70 %.
    #[test]
    fn choice_follows_idle_upload_weights() {
        let mut c = ClientPicker::new(8);
        c.set_parents([id(1), id(2), id(3)]);
        c.set_weights(&[(id(1), 100), (id(2), 200), (id(3), 700), (id(9), 5)]);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let holders = [id(1), id(2), id(3)];
        let mut hits = [0u32; 3];
        let n = 10_000;
        for _ in 0..n {
            let p = c.choose(&mut rng, &holders);
            hits[holders.iter().position(|h| *h == p).unwrap()] += 1;
        }
        let share: Vec<f64> = hits.iter().map(|&h| f64::from(h) / f64::from(n)).collect();
        for (s, want) in share.iter().zip([0.1, 0.2, 0.7]) {
            assert!((s - want).abs() < 0.02, "shares {share:?}");
        }
        // Only holders are chosen, and a zero-weight set falls back to uniform.
        c.set_weights(&[(id(1), 0), (id(2), 0), (id(3), 0)]);
        let mut seen = [false; 2];
        for _ in 0..100 {
            let p = c.choose(&mut rng, &[id(1), id(2)]);
            seen[usize::from(p == id(2))] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn idle_weight_has_a_floor_of_a_tenth() {
        use super::super::scheduler::idle_weight;
        assert_eq!(idle_weight(1000, 300), 700);
        assert_eq!(idle_weight(1000, 990), 100);
        assert_eq!(idle_weight(1000, 5000), 100);
        assert_eq!(idle_weight(0, 0), DEFAULT_MAX_TX_BYTES_PER_S);
    }
}

/// The picker inside a dispatcher: requests go only to parents, never more than `concurrent_pieces`
/// at once, and split between two parents holding every piece in the ratio of their weights.
#[cfg(test)]
mod dispatcher_tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::ClientPicker;
    use crate::bitfield::Bitfield;
    use crate::config::{DispatchConfig, Quirks};
    use crate::message::{Message, Payload};
    use crate::metainfo::MetaInfo;
    use crate::peer::ConnId;
    use crate::peer::dispatch::{Dispatcher, Effect, NewPeer};
    use crate::peer::picker::picker_for;
    use crate::time::Instant;
    use crate::types::{Digest, PeerId};

    #[test]
    fn requests_follow_parent_weights_within_the_concurrency_cap() {
        let n = 2000;
        let mi = MetaInfo::synthetic(Digest::of(b"weights"), u64::from(n) * 1024, 1024).unwrap();
        let cfg = DispatchConfig { disable_endgame: true, ..DispatchConfig::default() };
        let picker = picker_for(cfg.piece_request_policy);
        let now = Instant::ZERO;
        let mut d = Dispatcher::leecher(now, mi.clone(), &cfg, &Quirks::default(), picker);
        let (a, b, child) = (PeerId::from_raw([1; 20]), PeerId::from_raw([2; 20]), PeerId::from_raw([3; 20]));
        let mut p = ClientPicker::new(8);
        p.set_parents([a, b]);
        p.set_weights(&[(a, 100), (b, 300)]);
        d.set_dragonfly(p);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut fx = Vec::new();
        let conns = [(a, ConnId(1)), (b, ConnId(2)), (child, ConnId(3))];
        for (id, conn) in conns {
            let bitfield = Bitfield::full(n);
            d.add_peer(now, &mut rng, NewPeer { id, conn, is_origin: false, bitfield }, &mut fx);
        }
        let mut counts = [0u32; 3];
        let mut in_flight = std::collections::VecDeque::new();
        let mut step = 0;
        while !d.is_complete() {
            step += 1;
            assert!(step < 10 * n, "no progress");
            for e in fx.drain(..) {
                if let Effect::Send(c, Message::PieceRequest { index, .. }) = e {
                    counts[conns.iter().position(|(_, x)| *x == c).unwrap()] += 1;
                    in_flight.push_back((c, index));
                }
            }
            assert!(in_flight.len() <= 8, "{} requests in flight", in_flight.len());
            // Answer the oldest request; its slot is filled again at once.
            let Some((conn, index)) = in_flight.pop_front() else {
                panic!("nothing requested with {} pieces missing", n - d.bitfield().count_ones())
            };
            let from = conns.iter().find(|(_, c)| *c == conn).unwrap().0;
            let payload = Payload::Tagged { len: mi.piece_len(index), tag: mi.piece_sum(index).unwrap() };
            let msg = Message::PiecePayload { index, offset: 0, payload };
            d.handle_message(now, &mut rng, &from, msg, &mut fx);
        }
        assert_eq!(counts[2], 0, "a child was asked for a piece");
        let share_b = f64::from(counts[1]) / f64::from(counts[0] + counts[1]);
        assert_eq!(counts[0] + counts[1], n);
        assert!((share_b - 0.75).abs() < 0.03, "parent b got {share_b:.3} of the requests, weights say 0.75");
    }
}
