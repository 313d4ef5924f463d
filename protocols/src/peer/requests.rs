//! The piece request table of one torrent (`dispatch/piecerequest/manager.go`).
//!
//! Invariant: at most one request per (piece, peer). A request is *failed* when it is invalid (bad
//! payload or an ERROR reply), unsent, or pending past its deadline; failed requests stay in the table
//! until the piece completes or the peer leaves, and are re-sent elsewhere by the dispatcher's watcher.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;
use crate::types::{PeerId, PieceIndex};

/// The state of one piece request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Sent and not answered; live until `sent_at + timeout` has passed.
    Pending,
    /// The payload failed its check, or the peer answered ERROR.
    Invalid,
    /// The send failed (the connection's queue was full).
    Unsent,
}

/// One request for a piece to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The piece asked for.
    pub piece: PieceIndex,
    /// The peer asked.
    pub peer: PeerId,
    /// Its state.
    pub status: Status,
    /// When it was sent (or last re-sent to this peer).
    pub sent_at: Instant,
}

/// Why a request is failed, which decides where it may be re-sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Pending past its deadline: never re-sent to the same peer.
    Expired,
    /// The payload failed its check or the peer answered ERROR: never re-sent to the same peer.
    Invalid,
    /// The send failed (full queue): may be re-sent to the same peer.
    Unsent,
}

/// The requests of one torrent, by piece and by peer, with the timeout they share.
#[derive(Debug)]
pub struct Requests {
    by_piece: Vec<Vec<Request>>,
    /// The pieces each peer has a request for (any status); kept in step with `by_piece` so per-peer
    /// questions do not scan every piece.
    by_peer: BTreeMap<PeerId, Vec<PieceIndex>>,
    timeout: Duration,
}

impl Requests {
    /// An empty table for `num_pieces` pieces whose requests expire after `timeout`.
    pub fn new(num_pieces: u32, timeout: Duration) -> Self {
        Requests { by_piece: vec![Vec::new(); num_pieces as usize], by_peer: BTreeMap::new(), timeout }
    }

    /// How long a pending request stays live ([`crate::config::DispatchConfig::piece_request_timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Kraken: expired once `now` is *after* sent + timeout.
    fn live(&self, r: &Request, now: Instant) -> bool {
        r.status == Status::Pending && now <= r.sent_at + self.timeout
    }

    /// Whether piece `i` may be requested from `peer`: no live request for it to this peer, and, unless
    /// duplicates are allowed (endgame), none to any peer.
    pub fn valid(&self, now: Instant, peer: &PeerId, i: PieceIndex, allow_duplicates: bool) -> bool {
        let Some(reqs) = self.by_piece.get(i as usize) else { return false };
        reqs.iter().all(|r| !self.live(r, now) || (r.peer != *peer && allow_duplicates))
    }

    /// Live requests to `peer`, counted against its pipeline limit.
    pub fn live_to(&self, now: Instant, peer: &PeerId) -> usize {
        let Some(pieces) = self.by_peer.get(peer) else { return 0 };
        pieces.iter().filter(|&&i| self.is_live(now, peer, i)).count()
    }

    /// Live requests to every peer together.
    pub fn live_total(&self, now: Instant) -> usize {
        self.by_peer
            .iter()
            .map(|(peer, pieces)| pieces.iter().filter(|&&i| self.is_live(now, peer, i)).count())
            .sum()
    }

    /// Records a pending request, replacing any earlier one for the same (piece, peer).
    pub fn insert(&mut self, now: Instant, peer: PeerId, piece: PieceIndex) {
        let reqs = &mut self.by_piece[piece as usize];
        let req = Request { piece, peer, status: Status::Pending, sent_at: now };
        match reqs.iter_mut().find(|r| r.peer == peer) {
            Some(r) => *r = req,
            None => {
                reqs.push(req);
                self.by_peer.entry(peer).or_default().push(piece);
            }
        }
    }

    /// Sets the status of the request for `piece` to `peer`; no-op if there is none.
    pub fn mark(&mut self, peer: &PeerId, piece: PieceIndex, status: Status) {
        if let Some(r) =
            self.by_piece.get_mut(piece as usize).and_then(|v| v.iter_mut().find(|r| r.peer == *peer))
        {
            r.status = status;
        }
    }

    /// Forgets every request for a piece (it completed).
    pub fn clear_piece(&mut self, piece: PieceIndex) {
        let Some(v) = self.by_piece.get_mut(piece as usize) else { return };
        for r in v.drain(..) {
            if let Some(list) = self.by_peer.get_mut(&r.peer) {
                list.retain(|&i| i != piece);
            }
        }
    }

    /// Forgets every request to a peer (it left).
    pub fn clear_peer(&mut self, peer: &PeerId) {
        for i in self.by_peer.remove(peer).unwrap_or_default() {
            self.by_piece[i as usize].retain(|r| r.peer != *peer);
        }
    }

    /// Every failed request, in piece order.
    pub fn failed(&self, now: Instant) -> Vec<(PieceIndex, PeerId, Failure)> {
        let mut out = Vec::new();
        for r in self.by_piece.iter().flatten() {
            let f = match r.status {
                Status::Invalid => Failure::Invalid,
                Status::Unsent => Failure::Unsent,
                Status::Pending if !self.live(r, now) => Failure::Expired,
                Status::Pending => continue,
            };
            out.push((r.piece, r.peer, f));
        }
        out
    }

    /// Whether a live request for `piece` to `peer` exists.
    pub fn is_live(&self, now: Instant, peer: &PeerId, piece: PieceIndex) -> bool {
        self.by_piece
            .get(piece as usize)
            .is_some_and(|v| v.iter().any(|r| r.peer == *peer && self.live(r, now)))
    }

    /// When the request for `piece` to `peer` was sent, if there is one.
    pub fn sent_at(&self, peer: &PeerId, piece: PieceIndex) -> Option<Instant> {
        self.by_piece.get(piece as usize)?.iter().find(|r| r.peer == *peer).map(|r| r.sent_at)
    }

    /// Number of live requests for a piece across all peers (duplicates appear only in endgame).
    pub fn live_for_piece(&self, now: Instant, piece: PieceIndex) -> usize {
        self.by_piece.get(piece as usize).map_or(0, |v| v.iter().filter(|r| self.live(r, now)).count())
    }

    /// Requests in the table, any status (an upper bound on the pieces with a live request).
    pub fn num_entries(&self) -> usize {
        self.by_peer.values().map(Vec::len).sum()
    }

    /// The peers with a live request for `piece`, in the order they were asked.
    pub fn live_peers_for(&self, now: Instant, piece: PieceIndex) -> Vec<PeerId> {
        self.by_piece
            .get(piece as usize)
            .map_or_else(Vec::new, |v| v.iter().filter(|r| self.live(r, now)).map(|r| r.peer).collect())
    }
}
