//! Piece selection policies (`dispatch/piecerequest/*_policy.go`).
//!
//! A policy chooses up to `quota` pieces for one peer among the candidates (pieces the peer has and we
//! lack) that are `valid` (not already requested; see [`super::requests`]). Policies are trait objects
//! so later work can add BitTorrent- or Dragonfly-style selection without touching the dispatcher.

use std::fmt;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::bitfield::Bitfield;
use crate::config::PiecePolicy;
use crate::types::PieceIndex;

/// What a policy may look at when choosing pieces.
#[derive(Debug)]
pub struct Selection<'a> {
    /// Pieces the peer has.
    pub remote: &'a Bitfield,
    /// Pieces we have.
    pub own: &'a Bitfield,
    /// How many connected peers have each piece.
    pub num_peers_by_piece: &'a [u32],
    /// How many pieces to choose at most.
    pub quota: usize,
}

/// A piece selection policy.
pub trait PiecePicker: fmt::Debug + Send {
    /// Chooses up to `sel.quota` pieces among `sel.remote & !sel.own` for which `valid` holds.
    fn select(
        &mut self,
        rng: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(PieceIndex) -> bool,
    ) -> Vec<PieceIndex>;
}

/// Builds a torrent's piece picker from the configured policy: installed on an agent with
/// [`crate::agent::Agent::set_picker_factory`], it replaces [`picker_for`] for every torrent the agent
/// downloads or seeds from then on. Called once per torrent; `Arc` so one factory serves every agent.
pub type PickerFactory = Arc<dyn Fn(PiecePolicy) -> Box<dyn PiecePicker + Send> + Send + Sync>;

/// Builds the picker a configuration names.
pub fn picker_for(policy: PiecePolicy) -> Box<dyn PiecePicker + Send> {
    match policy {
        PiecePolicy::Random => Box::new(ReservoirPicker),
        PiecePolicy::RarestFirst => Box::new(RarestFirstPicker::default()),
    }
}

/// Kraken's `default` policy: reservoir sampling of `quota` valid candidates. Reproduced as Kraken
/// writes it: the k-th valid candidate past the reservoir replaces slot `rand.Intn(k)` when that is
/// below the quota, where k counts the valid candidates before it — so the first one past a full
/// reservoir always replaces one, a slight bias toward later pieces compared with textbook
/// reservoir sampling (`rand.Intn(k + 1)`).
#[derive(Debug, Default)]
pub struct ReservoirPicker;

impl PiecePicker for ReservoirPicker {
    fn select(
        &mut self,
        rng: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(PieceIndex) -> bool,
    ) -> Vec<PieceIndex> {
        let mut chosen = Vec::with_capacity(sel.quota);
        if sel.quota == 0 {
            return chosen;
        }
        let mut seen = 0usize;
        for i in sel.remote.iter_missing_from(sel.own) {
            if !valid(i) {
                continue;
            }
            if chosen.len() < sel.quota {
                chosen.push(i);
            } else {
                let j = rng.random_range(0..seen);
                if j < sel.quota {
                    chosen[j] = i;
                }
            }
            seen += 1;
        }
        chosen
    }
}

/// Kraken's `rarest_first` policy: a min-heap on the number of connected peers holding each piece,
/// popped until `quota` valid pieces are found.
///
/// Ties break in heap order, which Kraken leaves to Go's `container/heap`; this reproduces that heap's
/// push and pop exactly (candidates pushed in ascending index order), so the order among equally rare
/// pieces is deterministic and the same as Kraken's — including the herding it causes.
#[derive(Debug, Default)]
pub struct RarestFirstPicker {
    /// Reused between calls to avoid an allocation per selection.
    heap: Vec<(u32, PieceIndex)>,
}

impl RarestFirstPicker {
    fn push(&mut self, item: (u32, PieceIndex)) {
        self.heap.push(item);
        // Go's heap.up: sift the new last element up while it is strictly less than its parent.
        let mut j = self.heap.len() - 1;
        while j > 0 {
            let i = (j - 1) / 2;
            if self.heap[j].0 >= self.heap[i].0 {
                break;
            }
            self.heap.swap(i, j);
            j = i;
        }
    }

    fn pop(&mut self) -> Option<(u32, PieceIndex)> {
        let n = self.heap.len().checked_sub(1)?;
        // Go's heap.Pop: swap the root with the last element, sift the root down over [0, n), remove last.
        self.heap.swap(0, n);
        let mut i = 0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            let j2 = j1 + 1;
            if j2 < n && self.heap[j2].0 < self.heap[j1].0 {
                j = j2;
            }
            if self.heap[j].0 >= self.heap[i].0 {
                break;
            }
            self.heap.swap(i, j);
            i = j;
        }
        self.heap.pop()
    }
}

impl PiecePicker for RarestFirstPicker {
    fn select(
        &mut self,
        _rng: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(PieceIndex) -> bool,
    ) -> Vec<PieceIndex> {
        let mut chosen = Vec::with_capacity(sel.quota);
        if sel.quota == 0 {
            return chosen;
        }
        self.heap.clear();
        for i in sel.remote.iter_missing_from(sel.own) {
            let count = sel.num_peers_by_piece.get(i as usize).copied().unwrap_or(0);
            self.push((count, i));
        }
        while chosen.len() < sel.quota {
            let Some((_, i)) = self.pop() else { break };
            if valid(i) {
                chosen.push(i);
            }
        }
        chosen
    }
}

/// BitTorrent classic's piece order (BEP 3, BitTornado's `PiecePicker`): uniformly random pieces until
/// `random_first_cutoff` are held (a newcomer gets something to trade quickly), then rarest-first with a
/// random order among equally rare pieces (unlike Kraken's heap order). Whole pieces are requested, so
/// BitTorrent's strict priority for partly downloaded pieces has nothing to apply to.
#[derive(Debug)]
pub struct BitTorrentPicker {
    random_first_cutoff: u32,
    /// Reused between calls: (holders, shuffle key, piece).
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u32, u64, PieceIndex)>>,
}

impl BitTorrentPicker {
    /// A picker that chooses at random until `random_first_cutoff` pieces are held, then rarest-first.
    pub fn new(random_first_cutoff: u32) -> Self {
        BitTorrentPicker { random_first_cutoff, heap: Default::default() }
    }
}

impl PiecePicker for BitTorrentPicker {
    fn select(
        &mut self,
        rng: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(PieceIndex) -> bool,
    ) -> Vec<PieceIndex> {
        let mut chosen = Vec::with_capacity(sel.quota);
        if sel.quota == 0 {
            return chosen;
        }
        let random_first = sel.own.count_ones() < self.random_first_cutoff;
        // One draw per call keys a pseudo-random permutation of piece indices (a multiply-xorshift hash),
        // which orders equally rare pieces — every piece in random-first mode — at random.
        let salt: u64 = rng.random();
        let key = |i: PieceIndex| {
            let mut x = (u64::from(i) ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            x.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        };
        self.heap.clear();
        for i in sel.remote.iter_missing_from(sel.own) {
            let holders =
                if random_first { 0 } else { sel.num_peers_by_piece.get(i as usize).copied().unwrap_or(0) };
            self.heap.push(std::cmp::Reverse((holders, key(i), i)));
        }
        while chosen.len() < sel.quota {
            let Some(std::cmp::Reverse((_, _, i))) = self.heap.pop() else { break };
            if valid(i) {
                chosen.push(i);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;

    fn sel<'a>(remote: &'a Bitfield, own: &'a Bitfield, counts: &'a [u32], quota: usize) -> Selection<'a> {
        Selection { remote, own, num_peers_by_piece: counts, quota }
    }

    #[test]
    fn rarest_first_picks_the_rarest_piece() {
        let remote = Bitfield::full(6);
        let mut own = Bitfield::new(6);
        own.set(0);
        let counts = [1, 5, 4, 1, 3, 2];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = RarestFirstPicker::default();
        // Piece 0 is rarest but owned; piece 3 is the rarest candidate, then 5, then 4.
        let got = p.select(&mut rng, &sel(&remote, &own, &counts, 3), &mut |_| true);
        assert_eq!(got, vec![3, 5, 4]);
        // Invalid pieces (already requested) are skipped, not counted.
        let got = p.select(&mut rng, &sel(&remote, &own, &counts, 2), &mut |i| i != 3);
        assert_eq!(got, vec![5, 4]);
    }

    #[test]
    fn rarest_first_heap_matches_go_container_heap_tie_order() {
        // All equal priorities: Go's heap pops index 0 first, then the last pushed element rises to the
        // root, so the order is 0, n-1, ... — not ascending. Pinned so the emulation stays exact.
        let remote = Bitfield::full(5);
        let own = Bitfield::new(5);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let got =
            RarestFirstPicker::default().select(&mut rng, &sel(&remote, &own, &[0; 5], 5), &mut |_| true);
        assert_eq!(got, vec![0, 4, 3, 2, 1]);
    }

    #[test]
    fn bittorrent_picks_at_random_first_then_rarest() {
        let remote = Bitfield::full(8);
        let counts = [5, 5, 1, 5, 2, 2, 5, 5];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut p = BitTorrentPicker::new(2);
        // Below the cutoff, rarity is ignored: over many draws every piece comes first sometimes.
        let own = Bitfield::new(8);
        let mut first = [0u32; 8];
        for _ in 0..800 {
            let got = p.select(&mut rng, &sel(&remote, &own, &counts, 1), &mut |_| true);
            first[got[0] as usize] += 1;
        }
        assert!(first.iter().all(|&n| n > 40), "{first:?}");
        // At the cutoff, the rarest piece first, then the two with 2 holders in either order.
        let mut own = Bitfield::new(8);
        own.set(0);
        own.set(1);
        let mut orders = BTreeSet::new();
        for _ in 0..50 {
            let got = p.select(&mut rng, &sel(&remote, &own, &counts, 3), &mut |_| true);
            assert_eq!(got[0], 2);
            let mut tail = got[1..].to_vec();
            tail.sort();
            assert_eq!(tail, vec![4, 5]);
            orders.insert(got);
        }
        assert_eq!(orders.len(), 2, "equally rare pieces come in random order");
        // Invalid pieces are skipped.
        let got = p.select(&mut rng, &sel(&remote, &own, &counts, 2), &mut |i| i != 2);
        assert_eq!(got.len(), 2);
        assert!(!got.contains(&2));
    }

    #[test]
    fn reservoir_respects_quota_and_validity() {
        let remote = Bitfield::full(10);
        let own = Bitfield::new(10);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut hits = [0u32; 10];
        for _ in 0..5000 {
            let got = ReservoirPicker.select(&mut rng, &sel(&remote, &own, &[0; 10], 2), &mut |i| i != 9);
            assert_eq!(got.len(), 2);
            assert_ne!(got[0], got[1]);
            for i in got {
                hits[i as usize] += 1;
            }
        }
        assert_eq!(hits[9], 0);
        // Every valid piece is chosen sometimes; Kraken's sampling leans toward later pieces.
        assert!(hits[..9].iter().all(|&h| h > 500), "{hits:?}");
        assert!(hits[8] > hits[0], "{hits:?}");
    }
}
