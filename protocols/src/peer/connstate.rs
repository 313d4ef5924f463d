//! Connection admission and the blacklist (`lib/torrent/scheduler/connstate/state.go`).
//!
//! Connections are keyed by (info hash, peer id) and are pending (handshake under way) or active.
//! Pending plus active per torrent never exceeds `max_open_conn`. The blacklist keeps a failed
//! (torrent, peer) from being dialled for `blacklist_duration`; it is consulted only before dialling
//! (unless the `blacklist_ignores_incoming` quirk is turned off).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConnStateConfig, Quirks};
use crate::time::Instant;
use crate::types::{InfoHash, PeerId};

/// Why a connection was not admitted (Kraken's `connstate` errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The torrent already has `max_open_conn` pending plus active connections.
    #[error("torrent at capacity")]
    TorrentAtCapacity,
    /// The host has `quirks.max_open_conn_total` connections across torrents (only when that cap is set).
    #[error("host at its total connection cap")]
    HostAtCapacity,
    /// A connection to this peer for this torrent is already handshaking.
    #[error("connection already pending")]
    AlreadyPending,
    /// A connection to this peer for this torrent is already active.
    #[error("connection already active")]
    AlreadyActive,
    /// An incoming peer shares more than `max_mutual_conn` neighbours with us for this torrent.
    #[error("too many mutual connections")]
    TooManyMutualConns,
    /// The (torrent, peer) is blacklisted. Never returned by [`ConnState::add_pending`]: callers check
    /// [`ConnState::is_blacklisted`] before dialling.
    #[error("peer is blacklisted")]
    Blacklisted,
}

#[derive(Debug, Default)]
struct TorrentConns {
    pending: BTreeSet<PeerId>,
    active: BTreeSet<PeerId>,
}

impl TorrentConns {
    fn count(&self) -> usize {
        self.pending.len() + self.active.len()
    }
}

/// The connections of one node, pending and active per torrent, and its blacklist (Kraken's
/// `connstate.State`).
#[derive(Debug)]
pub struct ConnState {
    config: ConnStateConfig,
    max_total: usize,
    torrents: BTreeMap<InfoHash, TorrentConns>,
    blacklist: BTreeMap<(InfoHash, PeerId), Instant>,
    total: usize,
}

impl ConnState {
    /// No connections and an empty blacklist; the host-wide cap comes from `quirks.max_open_conn_total`.
    pub fn new(config: ConnStateConfig, quirks: &Quirks) -> Self {
        ConnState {
            config,
            max_total: quirks.max_open_conn_total,
            torrents: BTreeMap::new(),
            blacklist: BTreeMap::new(),
            total: 0,
        }
    }

    /// Pending plus active connections allowed per torrent.
    pub fn max_open_conn(&self) -> usize {
        self.config.max_open_conn
    }

    /// Admits a pending connection. `neighbours` are the peers the remote says it is connected to; they
    /// are checked against `max_mutual_conn` for incoming connections only (`Some`).
    pub fn add_pending(
        &mut self,
        h: InfoHash,
        peer: PeerId,
        neighbours: Option<&mut dyn Iterator<Item = &PeerId>>,
    ) -> Result<(), AdmitError> {
        let t = self.torrents.entry(h).or_default();
        if t.pending.contains(&peer) {
            return Err(AdmitError::AlreadyPending);
        }
        if t.active.contains(&peer) {
            return Err(AdmitError::AlreadyActive);
        }
        if t.count() >= self.config.max_open_conn {
            return Err(AdmitError::TorrentAtCapacity);
        }
        if self.max_total > 0 && self.total >= self.max_total {
            return Err(AdmitError::HostAtCapacity);
        }
        if let Some(neighbours) = neighbours {
            let mutual = neighbours.filter(|n| t.pending.contains(n) || t.active.contains(n)).count();
            if mutual > self.config.max_mutual_conn() {
                return Err(AdmitError::TooManyMutualConns);
            }
        }
        t.pending.insert(peer);
        self.total += 1;
        Ok(())
    }

    /// Forgets a pending connection (handshake failed or the connection closed); no-op if not pending.
    pub fn delete_pending(&mut self, h: &InfoHash, peer: &PeerId) {
        if let Some(t) = self.torrents.get_mut(h)
            && t.pending.remove(peer)
        {
            self.total -= 1;
        }
    }

    /// Moves a pending connection to active; false if it was not pending.
    pub fn move_pending_to_active(&mut self, h: &InfoHash, peer: &PeerId) -> bool {
        let Some(t) = self.torrents.get_mut(h) else { return false };
        if !t.pending.remove(peer) {
            return false;
        }
        t.active.insert(*peer);
        true
    }

    /// Forgets an active connection (it closed); no-op if not active.
    pub fn delete_active(&mut self, h: &InfoHash, peer: &PeerId) {
        if let Some(t) = self.torrents.get_mut(h)
            && t.active.remove(peer)
        {
            self.total -= 1;
        }
    }

    /// True if a connection to `peer` for torrent `h` is handshaking.
    pub fn is_pending(&self, h: &InfoHash, peer: &PeerId) -> bool {
        self.torrents.get(h).is_some_and(|t| t.pending.contains(peer))
    }

    /// True if a connection to `peer` for torrent `h` is active.
    pub fn is_active(&self, h: &InfoHash, peer: &PeerId) -> bool {
        self.torrents.get(h).is_some_and(|t| t.active.contains(peer))
    }

    /// Active connections equal `max_open_conn` (pending ones do not count): the torrent skips its
    /// announce turn.
    pub fn saturated(&self, h: &InfoHash) -> bool {
        self.torrents.get(h).is_some_and(|t| t.active.len() >= self.config.max_open_conn)
    }

    /// Active connections of torrent `h`.
    pub fn num_active(&self, h: &InfoHash) -> usize {
        self.torrents.get(h).map_or(0, |t| t.active.len())
    }

    /// Pending plus active connections of torrent `h`.
    pub fn num_open(&self, h: &InfoHash) -> usize {
        self.torrents.get(h).map_or(0, TorrentConns::count)
    }

    /// Blacklists (torrent `h`, `peer`) until `now + blacklist_duration`, unless it is already (the
    /// first failure's 30 s stand) or `disable_blacklist` is set.
    pub fn blacklist(&mut self, now: Instant, h: InfoHash, peer: PeerId) {
        // Kraken leaves an unexpired entry as it is: the 30 s count from the first failure.
        if self.config.disable_blacklist || self.is_blacklisted(now, &h, &peer) {
            return;
        }
        self.blacklist.insert((h, peer), now + self.config.blacklist_duration());
    }

    /// True while (torrent `h`, `peer`) is blacklisted: `now` before the entry's expiry.
    pub fn is_blacklisted(&self, now: Instant, h: &InfoHash, peer: &PeerId) -> bool {
        self.blacklist.get(&(*h, *peer)).is_some_and(|&until| now < until)
    }

    /// Forgets a torrent's blacklist (it completed) and expired entries of every torrent.
    pub fn clear_blacklist(&mut self, now: Instant, h: &InfoHash) {
        self.blacklist.retain(|(bh, _), until| bh != h && now < *until);
    }

    /// Drops the bookkeeping of a torrent with no connections left.
    pub fn forget_torrent_if_idle(&mut self, h: &InfoHash) {
        if self.torrents.get(h).is_some_and(|t| t.count() == 0) {
            self.torrents.remove(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId::from_raw([n; 20])
    }

    #[test]
    fn capacity_counts_pending_and_active() {
        let cfg = ConnStateConfig { max_open_conn: 2, ..Default::default() };
        let mut s = ConnState::new(cfg, &Quirks::default());
        let h = InfoHash::from_raw([1; 20]);
        s.add_pending(h, id(1), None).unwrap();
        assert_eq!(s.add_pending(h, id(1), None), Err(AdmitError::AlreadyPending));
        assert!(s.move_pending_to_active(&h, &id(1)));
        assert_eq!(s.add_pending(h, id(1), None), Err(AdmitError::AlreadyActive));
        s.add_pending(h, id(2), None).unwrap();
        assert_eq!(s.add_pending(h, id(3), None), Err(AdmitError::TorrentAtCapacity));
        assert!(!s.saturated(&h), "pending connections do not saturate");
        assert!(s.move_pending_to_active(&h, &id(2)));
        assert!(s.saturated(&h));
        s.delete_active(&h, &id(1));
        s.add_pending(h, id(3), None).unwrap();
    }

    #[test]
    fn mutual_connection_limit_is_strictly_greater() {
        let cfg = ConnStateConfig { max_open_conn: 10, max_mutual_conn: Some(1), ..Default::default() };
        let mut s = ConnState::new(cfg, &Quirks::default());
        let h = InfoHash::from_raw([1; 20]);
        s.add_pending(h, id(1), None).unwrap();
        s.add_pending(h, id(2), None).unwrap();
        let one = [id(1), id(9)];
        s.add_pending(h, id(3), Some(&mut one.iter())).unwrap();
        let two = [id(1), id(2)];
        assert_eq!(s.add_pending(h, id(4), Some(&mut two.iter())), Err(AdmitError::TooManyMutualConns));
    }

    #[test]
    fn blacklist_expires_after_its_duration() {
        let mut s = ConnState::new(ConnStateConfig::default(), &Quirks::default());
        let h = InfoHash::from_raw([1; 20]);
        let t0 = Instant::from_nanos(1_000);
        s.blacklist(t0, h, id(1));
        assert!(s.is_blacklisted(t0 + Duration::from_secs(29), &h, &id(1)));
        assert!(!s.is_blacklisted(t0 + Duration::from_secs(30), &h, &id(1)));
        s.blacklist(t0, h, id(1));
        s.clear_blacklist(t0, &h);
        assert!(!s.is_blacklisted(t0, &h, &id(1)));
    }
}
