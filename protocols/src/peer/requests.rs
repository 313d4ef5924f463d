//! The piece request table of one torrent (`dispatch/piecerequest/manager.go`).
//!
//! Invariant: at most one request per (piece, peer). A request is *failed* when it is invalid (bad
//! payload or an ERROR reply), unsent, or pending past its deadline; failed requests stay in the table
//! until the piece completes or the peer leaves, and are re-sent elsewhere by the dispatcher's watcher.

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

/// The requests of one torrent, with the timeout they share.
///
/// One list in the order each (piece, peer) was first asked — a request re-sent to the same peer
/// keeps its place — plus a count per piece. A torrent has few requests at a time (its peers'
/// pipelines, and failed ones until their piece completes), so per-peer questions scan the short
/// list, and the common per-piece question, "is anything asked for this piece?", is answered by
/// the count without a scan. Every order the table reports (by piece, then in the order asked) is
/// the order a table per piece keeps.
#[derive(Debug)]
pub struct Requests {
    reqs: Vec<Request>,
    /// Requests (any status) in `reqs` for each piece.
    per_piece: Vec<u32>,
    timeout: Duration,
}

impl Requests {
    /// An empty table for `num_pieces` pieces whose requests expire after `timeout`.
    pub fn new(num_pieces: u32, timeout: Duration) -> Self {
        Requests { reqs: Vec::new(), per_piece: vec![0; num_pieces as usize], timeout }
    }

    /// How long a pending request stays live ([`crate::config::DispatchConfig::piece_request_timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Kraken: expired once `now` is *after* sent + timeout.
    #[inline]
    fn live(&self, r: &Request, now: Instant) -> bool {
        r.status == Status::Pending && now <= r.sent_at + self.timeout
    }

    /// The requests for piece `i`, in the order asked; nothing for a piece out of range.
    #[inline]
    fn for_piece(&self, i: PieceIndex) -> impl Iterator<Item = &Request> {
        let any = self.per_piece.get(i as usize).is_some_and(|&n| n > 0);
        self.reqs.iter().filter(move |r| any && r.piece == i)
    }

    /// Whether piece `i` may be requested from `peer`: no live request for it to this peer, and, unless
    /// duplicates are allowed (endgame), none to any peer. False for a piece out of range.
    pub fn valid(&self, now: Instant, peer: &PeerId, i: PieceIndex, allow_duplicates: bool) -> bool {
        match self.per_piece.get(i as usize) {
            None => false,
            Some(0) => true,
            Some(_) => self.for_piece(i).all(|r| !self.live(r, now) || (r.peer != *peer && allow_duplicates)),
        }
    }

    /// Live requests to `peer`, counted against its pipeline limit.
    pub fn live_to(&self, now: Instant, peer: &PeerId) -> usize {
        self.reqs.iter().filter(|r| r.peer == *peer && self.live(r, now)).count()
    }

    /// Live requests to every peer together.
    pub fn live_total(&self, now: Instant) -> usize {
        self.reqs.iter().filter(|r| self.live(r, now)).count()
    }

    /// Records a pending request, replacing any earlier one for the same (piece, peer).
    pub fn insert(&mut self, now: Instant, peer: PeerId, piece: PieceIndex) {
        let req = Request { piece, peer, status: Status::Pending, sent_at: now };
        if self.per_piece[piece as usize] > 0
            && let Some(r) = self.reqs.iter_mut().find(|r| r.piece == piece && r.peer == peer)
        {
            *r = req;
            return;
        }
        self.per_piece[piece as usize] += 1;
        self.reqs.push(req);
    }

    /// Sets the status of the request for `piece` to `peer`; no-op if there is none.
    pub fn mark(&mut self, peer: &PeerId, piece: PieceIndex, status: Status) {
        if self.per_piece.get(piece as usize).is_none_or(|&n| n == 0) {
            return;
        }
        if let Some(r) = self.reqs.iter_mut().find(|r| r.piece == piece && r.peer == *peer) {
            r.status = status;
        }
    }

    /// Forgets every request for a piece (it completed).
    pub fn clear_piece(&mut self, piece: PieceIndex) {
        let Some(n) = self.per_piece.get_mut(piece as usize) else { return };
        if *n == 0 {
            return;
        }
        *n = 0;
        self.reqs.retain(|r| r.piece != piece);
    }

    /// Forgets every request to a peer (it left).
    pub fn clear_peer(&mut self, peer: &PeerId) {
        let per_piece = &mut self.per_piece;
        self.reqs.retain(|r| {
            let keep = r.peer != *peer;
            if !keep {
                per_piece[r.piece as usize] -= 1;
            }
            keep
        });
    }

    /// Every failed request, in piece order (and in the order asked within a piece).
    pub fn failed(&self, now: Instant) -> Vec<(PieceIndex, PeerId, Failure)> {
        let mut out = Vec::new();
        for r in &self.reqs {
            let f = match r.status {
                Status::Invalid => Failure::Invalid,
                Status::Unsent => Failure::Unsent,
                Status::Pending if !self.live(r, now) => Failure::Expired,
                Status::Pending => continue,
            };
            out.push((r.piece, r.peer, f));
        }
        // Stable: requests for one piece stay in the order asked.
        out.sort_by_key(|&(piece, _, _)| piece);
        out
    }

    /// Whether a live request for `piece` to `peer` exists.
    pub fn is_live(&self, now: Instant, peer: &PeerId, piece: PieceIndex) -> bool {
        self.for_piece(piece).any(|r| r.peer == *peer && self.live(r, now))
    }

    /// When the request for `piece` to `peer` was sent, if there is one.
    pub fn sent_at(&self, peer: &PeerId, piece: PieceIndex) -> Option<Instant> {
        self.for_piece(piece).find(|r| r.peer == *peer).map(|r| r.sent_at)
    }

    /// Number of live requests for a piece across all peers (duplicates appear only in endgame).
    pub fn live_for_piece(&self, now: Instant, piece: PieceIndex) -> usize {
        self.for_piece(piece).filter(|r| self.live(r, now)).count()
    }

    /// Requests in the table, any status (an upper bound on the pieces with a live request).
    pub fn num_entries(&self) -> usize {
        self.reqs.len()
    }

    /// The peers with a live request for `piece`, in the order they were asked.
    pub fn live_peers_for(&self, now: Instant, piece: PieceIndex) -> Vec<PeerId> {
        self.for_piece(piece).filter(|r| self.live(r, now)).map(|r| r.peer).collect()
    }
}
