//! BitTorrent classic's choking and interest (BEP 3, Cohen's reference client; reference/peers.md §9),
//! for one torrent. Used by the dispatcher only under `protocol.policy = "bittorrent"`.
//!
//! - Each side tells the other whether it is *interested* (the other has a piece it lacks) and whether
//!   it *chokes* it (will not serve its requests). Connections start choked and not interested.
//! - Every `rechoke_interval` the choker unchokes the `unchoke_slots` interested peers with the best
//!   rate over `rate_window`: while leeching, the rate they upload to us (tit-for-tat); while seeding,
//!   the rate we upload to them (Cohen's seed rule: serve those who take it fastest). Peers that have
//!   not sent us a piece for `snub_timeout` while we leech are *snubbed* and not ranked.
//! - On top, `optimistic_slots` interested peers not in that set are unchoked at random, whatever their
//!   rate (snubbed ones included); the choice moves every `optimistic_rotate`.
//! - Between ticks the set is recomputed (without moving the optimistic unchoke) when a slot frees up
//!   or a peer becomes interested while one is free, as the reference client does on these events.
//!
//! Ties in rate keep currently unchoked peers first, then break at random, so the choice is stable at
//! start (every rate zero) and reproducible from the node's seeded generator.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::BitTorrentConfig;
use crate::time::Instant;
use crate::types::PeerId;

/// Bytes moved over a sliding window.
#[derive(Clone, Debug, Default)]
pub struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
    sum: u64,
}

impl RateMeter {
    /// Records `bytes` moved at `now` and drops samples older than `window`.
    pub fn add(&mut self, now: Instant, bytes: u64, window: Duration) {
        self.samples.push_back((now, bytes));
        self.sum += bytes;
        self.prune(now, window);
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(&(t, b)) = self.samples.front() {
            if now - t < window {
                break;
            }
            self.samples.pop_front();
            self.sum -= b;
        }
    }

    /// Bytes per second over the window ending at `now`.
    pub fn rate(&mut self, now: Instant, window: Duration) -> f64 {
        self.prune(now, window);
        self.sum as f64 / window.as_secs_f64()
    }
}

/// The choke and interest state of one connection.
#[derive(Clone, Debug)]
pub struct PeerChoke {
    /// We refuse this peer's requests.
    pub am_choking: bool,
    /// We told this peer it has something we want.
    pub am_interested: bool,
    /// This peer refuses our requests.
    pub peer_choking: bool,
    /// This peer wants something we have.
    pub peer_interested: bool,
    connected_at: Instant,
    last_piece_received: Option<Instant>,
    down: RateMeter,
    up: RateMeter,
}

/// A choke decision to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChokeChange {
    /// Send CHOKE to this peer: its requests are refused from now on.
    Choke(PeerId),
    /// Send UNCHOKE to this peer: its requests are served from now on.
    Unchoke(PeerId),
}

/// The choker of one torrent.
#[derive(Debug)]
pub struct Choker {
    config: BitTorrentConfig,
    peers: BTreeMap<PeerId, PeerChoke>,
    /// The optimistically unchoked peers.
    optimistic: Vec<PeerId>,
    next_rechoke: Instant,
    next_rotate: Instant,
}

impl Choker {
    /// A choker with no peers; the first rechoke and rotation are one interval after `now`.
    pub fn new(now: Instant, config: BitTorrentConfig) -> Self {
        Choker {
            next_rechoke: now + config.rechoke_interval(),
            next_rotate: now + config.optimistic_rotate(),
            config,
            peers: BTreeMap::new(),
            optimistic: Vec::new(),
        }
    }

    /// The BitTorrent parameters in force.
    pub fn config(&self) -> &BitTorrentConfig {
        &self.config
    }

    /// Starts tracking a new connection: choked both ways and not interested, connected at `now`.
    pub fn add_peer(&mut self, now: Instant, id: PeerId) {
        let p = PeerChoke {
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            connected_at: now,
            last_piece_received: None,
            down: RateMeter::default(),
            up: RateMeter::default(),
        };
        self.peers.insert(id, p);
    }

    /// Forgets a peer; true if it held an unchoke slot (the caller then rechokes).
    pub fn remove_peer(&mut self, id: &PeerId) -> bool {
        self.optimistic.retain(|p| p != id);
        self.peers.remove(id).is_some_and(|p| !p.am_choking && p.peer_interested)
    }

    /// The choke state of `id`, if connected.
    pub fn peer(&self, id: &PeerId) -> Option<&PeerChoke> {
        self.peers.get(id)
    }

    /// The choke state of `id`, mutably, if connected.
    pub fn peer_mut(&mut self, id: &PeerId) -> Option<&mut PeerChoke> {
        self.peers.get_mut(id)
    }

    /// Whether `id`'s requests are served now.
    pub fn serves(&self, id: &PeerId) -> bool {
        self.peers.get(id).is_some_and(|p| !p.am_choking)
    }

    /// Whether we may send requests to `id` now.
    pub fn may_request(&self, id: &PeerId) -> bool {
        self.peers.get(id).is_some_and(|p| !p.peer_choking)
    }

    /// A good piece of `bytes` arrived from `id`.
    pub fn received(&mut self, now: Instant, id: &PeerId, bytes: u64) {
        let window = self.config.rate_window();
        if let Some(p) = self.peers.get_mut(id) {
            p.down.add(now, bytes, window);
            p.last_piece_received = Some(now);
        }
    }

    /// A piece of `bytes` was sent to `id`.
    pub fn sent(&mut self, now: Instant, id: &PeerId, bytes: u64) {
        let window = self.config.rate_window();
        if let Some(p) = self.peers.get_mut(id) {
            p.up.add(now, bytes, window);
        }
    }

    /// Whether a free unchoke slot exists (a newly interested peer then triggers a rechoke).
    pub fn has_free_slot(&self) -> bool {
        let unchoked = self.peers.values().filter(|p| !p.am_choking && p.peer_interested).count();
        unchoked < self.config.unchoke_slots + self.config.optimistic_slots
    }

    /// The next periodic rechoke.
    pub fn next_tick(&self) -> Instant {
        self.next_rechoke
    }

    /// The periodic rechoke, if due: recomputes the set, moving the optimistic unchoke when its period
    /// is up. Keeps the phase of both timers.
    pub fn tick(&mut self, now: Instant, rng: &mut ChaCha8Rng, seeding: bool) -> Vec<ChokeChange> {
        if now < self.next_rechoke {
            return Vec::new();
        }
        self.next_rechoke = advance(self.next_rechoke, now, self.config.rechoke_interval());
        let rotate = now >= self.next_rotate;
        if rotate {
            self.next_rotate = advance(self.next_rotate, now, self.config.optimistic_rotate());
        }
        self.rechoke(now, rng, seeding, rotate)
    }

    /// Whether `id` is snubbed: we leech, and it sent us no piece for the snub timeout.
    fn snubbed(&self, now: Instant, p: &PeerChoke, seeding: bool) -> bool {
        !seeding && now - p.last_piece_received.unwrap_or(p.connected_at) > self.config.snub_timeout()
    }

    /// Recomputes the unchoke set; `rotate` picks new optimistic unchokes. Returns what changed, in
    /// peer order.
    pub fn rechoke(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        seeding: bool,
        rotate: bool,
    ) -> Vec<ChokeChange> {
        let window = self.config.rate_window();
        // Rank the interested, non-snubbed peers: rate, then currently unchoked, then at random.
        let mut ranked: Vec<(f64, bool, u64, PeerId)> = Vec::new();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in &ids {
            let snubbed = self.snubbed(now, &self.peers[id], seeding);
            let p = self.peers.get_mut(id).expect("id from the map");
            if !p.peer_interested || snubbed {
                continue;
            }
            let rate = if seeding { p.up.rate(now, window) } else { p.down.rate(now, window) };
            ranked.push((rate, !p.am_choking, rng.random::<u64>(), *id));
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let regular: Vec<PeerId> = ranked.iter().take(self.config.unchoke_slots).map(|r| r.3).collect();

        // Optimistic unchokes: interested peers outside the regular set.
        if rotate {
            self.optimistic.clear();
        }
        let peers = &self.peers;
        self.optimistic
            .retain(|id| peers.get(id).is_some_and(|p| p.peer_interested) && !regular.contains(id));
        let mut pool: Vec<PeerId> = ids
            .iter()
            .filter(|id| {
                self.peers[*id].peer_interested && !regular.contains(id) && !self.optimistic.contains(id)
            })
            .copied()
            .collect();
        while self.optimistic.len() < self.config.optimistic_slots && !pool.is_empty() {
            let k = rng.random_range(0..pool.len());
            self.optimistic.push(pool.swap_remove(k));
        }

        let mut changes = Vec::new();
        for (id, p) in &mut self.peers {
            let unchoke = regular.contains(id) || self.optimistic.contains(id);
            if unchoke && p.am_choking {
                p.am_choking = false;
                changes.push(ChokeChange::Unchoke(*id));
            } else if !unchoke && !p.am_choking {
                p.am_choking = true;
                changes.push(ChokeChange::Choke(*id));
            }
        }
        changes
    }
}

/// The first `start + k × period` after `now`.
fn advance(start: Instant, now: Instant, period: Duration) -> Instant {
    let period = period.as_nanos().max(1) as u64;
    let behind = now.as_nanos().saturating_sub(start.as_nanos());
    Instant::from_nanos(start.as_nanos() + (behind / period + 1) * period)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn id(i: u8) -> PeerId {
        PeerId::from_addr(std::net::SocketAddr::from(([10, 0, 0, i], 7000)))
    }

    fn secs(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    fn unchoked(c: &Choker) -> BTreeSet<PeerId> {
        c.peers.iter().filter(|(_, p)| !p.am_choking).map(|(id, _)| *id).collect()
    }

    /// Ten interested peers; peer `i` uploads `i` MiB to us every second for the first 9 s.
    fn leecher_with_rates() -> Choker {
        let mut c = Choker::new(Instant::ZERO, BitTorrentConfig::default());
        for i in 1..=10 {
            c.add_peer(Instant::ZERO, id(i));
            c.peer_mut(&id(i)).unwrap().peer_interested = true;
        }
        for t in 0..9 {
            for i in 1..=10u8 {
                c.received(secs(t), &id(i), u64::from(i) * MIB);
            }
        }
        c
    }

    #[test]
    fn rate_meter_forgets_what_left_the_window() {
        let w = Duration::from_secs(20);
        let mut m = RateMeter::default();
        m.add(secs(0), 20 * MIB, w);
        m.add(secs(10), 20 * MIB, w);
        assert_eq!(m.rate(secs(10), w), 2.0 * MIB as f64);
        assert_eq!(m.rate(secs(20), w), MIB as f64);
        assert_eq!(m.rate(secs(31), w), 0.0);
    }

    #[test]
    fn the_four_fastest_uploaders_and_one_optimistic_are_unchoked() {
        let mut c = leecher_with_rates();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let changes = c.tick(secs(10), &mut rng, false);
        let set = unchoked(&c);
        assert_eq!(set.len(), 5, "{changes:?}");
        for i in 7..=10 {
            assert!(set.contains(&id(i)), "peer {i} is among the 4 fastest");
        }
        assert_eq!(c.optimistic.len(), 1);
        let opt = c.optimistic[0];
        assert!((1..=6).any(|i| id(i) == opt));
        assert_eq!(changes.len(), 5);
        assert!(changes.iter().all(|ch| matches!(ch, ChokeChange::Unchoke(_))));
        // The next rechoke keeps the same regular set (rates unchanged) and the optimistic peer.
        let changes = c.tick(secs(20), &mut rng, false);
        assert_eq!(changes, vec![]);
        assert_eq!(c.optimistic, vec![opt]);
    }

    #[test]
    fn not_interested_peers_are_never_unchoked() {
        let mut c = leecher_with_rates();
        for i in [9, 10] {
            c.peer_mut(&id(i)).unwrap().peer_interested = false;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        c.tick(secs(10), &mut rng, false);
        let set = unchoked(&c);
        assert!(!set.contains(&id(9)) && !set.contains(&id(10)));
        for i in 5..=8 {
            assert!(set.contains(&id(i)));
        }
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn the_optimistic_unchoke_moves_every_30_s_and_not_before() {
        let mut c = Choker::new(Instant::ZERO, BitTorrentConfig::default());
        for i in 1..=20 {
            c.add_peer(Instant::ZERO, id(i));
            c.peer_mut(&id(i)).unwrap().peer_interested = true;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // All rates zero: keep the sender alive in a rate window so nobody is snubbed; seeding ranks by
        // upload, here the same for the 4 first peers.
        let mut history = Vec::new();
        for t in 1..=12u64 {
            for i in 1..=4 {
                c.sent(secs(t * 10 - 1), &id(i), MIB);
            }
            c.tick(secs(t * 10), &mut rng, true);
            history.push(c.optimistic.clone());
            // The regular slots go to the 4 peers we upload to.
            for i in 1..=4 {
                assert!(c.serves(&id(i)), "t={t}");
            }
            assert_eq!(unchoked(&c).len(), 5);
        }
        // Rotation at 30, 60, 90 and 120 s only: within each 30 s period the optimistic peer stays.
        for (k, w) in history.windows(2).enumerate() {
            let t = (k as u64 + 2) * 10;
            if !t.is_multiple_of(30) {
                assert_eq!(w[0], w[1], "moved at {t} s");
            }
        }
        let distinct: BTreeSet<_> = history.iter().flatten().collect();
        assert!(distinct.len() >= 3, "the optimistic unchoke rotates: {history:?}");
    }

    #[test]
    fn snubbed_peers_lose_their_regular_slot() {
        let mut c = leecher_with_rates();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        c.tick(secs(10), &mut rng, false);
        assert!(c.serves(&id(10)));
        // Peers 1..=9 keep sending; peer 10, the fastest so far, goes silent.
        for t in 10..=70 {
            for i in 1..=9u8 {
                c.received(secs(t), &id(i), u64::from(i) * MIB);
            }
        }
        let changes = c.tick(secs(70), &mut rng, false);
        assert!(!c.regular_contains(&id(10), secs(70)));
        // Peer 10 is choked unless it won the optimistic slot.
        if c.optimistic.contains(&id(10)) {
            assert!(c.serves(&id(10)));
        } else {
            assert!(!c.serves(&id(10)));
            assert!(changes.contains(&ChokeChange::Choke(id(10))));
        }
        for i in 6..=9 {
            assert!(c.serves(&id(i)));
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let run = |seed| {
            let mut c = Choker::new(Instant::ZERO, BitTorrentConfig::default());
            for i in 1..=30 {
                c.add_peer(Instant::ZERO, id(i));
                c.peer_mut(&id(i)).unwrap().peer_interested = true;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=10).map(|t| c.tick(secs(t * 10), &mut rng, false)).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    impl Choker {
        /// Whether `id` is unchoked for its rate (not optimistically).
        fn regular_contains(&self, id: &PeerId, _now: Instant) -> bool {
            self.serves(id) && !self.optimistic.contains(id)
        }
    }
}
