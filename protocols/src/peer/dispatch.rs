//! The per-torrent dispatcher (`lib/torrent/scheduler/dispatch/dispatcher.go`): which peer has which
//! piece, what we asked of whom, and what to do with each message.
//!
//! The dispatcher never touches connections itself: it queues messages to send and reports the
//! peers to close and the moment of completion as [`Effect`]s, which the scheduler applies (closing a
//! connection changes admission and blacklist state the scheduler owns).

use std::collections::BTreeMap;

use litemap::LiteMap;
use std::time::Duration;

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use super::ConnId;
use super::choker::{ChokeChange, Choker};
use super::picker::{BitTorrentPicker, PiecePicker, Selection};
use super::requests::{Failure, Requests, Status};
use crate::bitfield::Bitfield;
use crate::config::{BitTorrentConfig, DispatchConfig, Quirks};
use crate::message::{ErrorCode, Message, Payload};
use crate::metainfo::MetaInfo;
use crate::policy::dragonfly::client::ClientPicker;
use crate::time::Instant;
use crate::types::{PeerId, PieceIndex};

/// Counters of one download, reported when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadStats {
    /// Good pieces written.
    pub pieces: u32,
    /// Payloads for pieces already complete (endgame duplicates, mostly).
    pub duplicates: u32,
    /// Payloads that failed their length or CRC check.
    pub corrupt: u32,
    /// PIECE_REQUEST messages sent.
    pub requests_sent: u32,
    /// Requests re-sent after a timeout, an invalid payload or an ERROR reply.
    pub requests_resent: u32,
    /// Pieces received from origins.
    pub pieces_from_origins: u32,
}

/// What the scheduler must do after a dispatcher call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send the message on the connection.
    Send(ConnId, Message),
    /// Close the connection to this peer.
    Close(PeerId),
    /// Close this connection (its peer was refused before being added).
    CloseConn(ConnId),
    /// Every piece is present and good (emitted once).
    Completed,
    /// Every piece is present but the blob's SHA-256 does not match its digest.
    DigestMismatch,
}

/// A peer that finished its handshake.
#[derive(Debug)]
pub struct NewPeer {
    /// The peer's id, as its handshake gave it.
    pub id: PeerId,
    /// The connection to it.
    pub conn: ConnId,
    /// From the tracker's handout; acceptors always say false (origins never dial).
    pub is_origin: bool,
    /// The pieces it has, from its handshake.
    pub bitfield: Bitfield,
}

#[derive(Debug)]
struct Peer {
    conn: ConnId,
    bitfield: Bitfield,
    is_origin: bool,
    last_good_piece_received: Option<Instant>,
    last_piece_sent: Option<Instant>,
}

/// Where served piece bytes come from.
#[derive(Debug)]
enum Content {
    /// Simulated: pieces are served as tagged payloads.
    Tagged,
    /// Real bytes received piece by piece (an agent).
    Pieces(Vec<Option<Bytes>>),
    /// A whole blob in memory (an origin).
    Blob(Bytes),
}

/// The dispatcher of one torrent (Kraken's `Dispatcher`): our pieces, the connected peers and their
/// bitfields, the requests in flight, and the policy's choker or Dragonfly picker when set.
#[derive(Debug)]
pub struct Dispatcher {
    metainfo: MetaInfo,
    config: DispatchConfig,
    tolerate_corrupt: bool,
    verify_sha256: bool,
    own: Bitfield,
    content: Content,
    /// A flat sorted map (a torrent has tens of peers at most): ordered as a `BTreeMap`, searched in
    /// one allocation.
    peers: LiteMap<PeerId, Peer>,
    num_peers_by_piece: Vec<u32>,
    requests: Requests,
    picker: Box<dyn PiecePicker + Send>,
    completed: bool,
    /// BitTorrent's choking and interest; `None` under Kraken's policy.
    choker: Option<Choker>,
    /// A peer holding an unchoke slot left: rechoke after the scheduler removes it.
    rechoke_pending: bool,
    /// This download's counters.
    pub stats: DownloadStats,
    /// When a good piece was last written (creation until then); the leecher TTI counts from it.
    pub last_write: Instant,
    /// When a piece was last served to a peer (creation until then); the seeder TTI counts from it unless
    /// `quirks.seeder_tti_from_creation`.
    pub last_read: Instant,
    /// When the dispatcher was created; the seeder TTI counts from it under
    /// `quirks.seeder_tti_from_creation`.
    pub created_at: Instant,
    next_watch: Instant,
    /// Dragonfly's client-side piece and parent choice replaces Kraken's per-peer pipelines when set.
    dragonfly: Option<ClientPicker>,
}

impl Dispatcher {
    /// A leecher with no pieces.
    pub fn leecher(
        now: Instant,
        metainfo: MetaInfo,
        config: &DispatchConfig,
        quirks: &Quirks,
        picker: Box<dyn PiecePicker + Send>,
    ) -> Self {
        let own = Bitfield::new(metainfo.num_pieces());
        Dispatcher::with_bitfield(now, metainfo, own, Content::Tagged, config, quirks, picker)
    }

    /// A complete seeder; `blob` holds the bytes when they are real.
    pub fn seeder(
        now: Instant,
        metainfo: MetaInfo,
        blob: Option<Bytes>,
        config: &DispatchConfig,
        quirks: &Quirks,
        picker: Box<dyn PiecePicker + Send>,
    ) -> Self {
        let own = Bitfield::full(metainfo.num_pieces());
        let content = blob.map_or(Content::Tagged, Content::Blob);
        let mut d = Dispatcher::with_bitfield(now, metainfo, own, content, config, quirks, picker);
        d.completed = true;
        d
    }

    /// A leecher that starts with some pieces (tests and scenarios that pre-seed hosts). Pieces are
    /// simulated unless a blob is given.
    pub fn partial(
        now: Instant,
        metainfo: MetaInfo,
        own: Bitfield,
        config: &DispatchConfig,
        quirks: &Quirks,
        picker: Box<dyn PiecePicker + Send>,
    ) -> Self {
        Dispatcher::with_bitfield(now, metainfo, own, Content::Tagged, config, quirks, picker)
    }

    fn with_bitfield(
        now: Instant,
        metainfo: MetaInfo,
        own: Bitfield,
        content: Content,
        config: &DispatchConfig,
        quirks: &Quirks,
        picker: Box<dyn PiecePicker + Send>,
    ) -> Self {
        let n = metainfo.num_pieces();
        let timeout = config.piece_request_timeout(metainfo.piece_length());
        Dispatcher {
            config: config.clone(),
            tolerate_corrupt: quirks.tolerate_corrupt_pieces,
            verify_sha256: quirks.verify_blob_sha256,
            completed: own.is_full(),
            own,
            content,
            peers: LiteMap::new(),
            num_peers_by_piece: vec![0; n as usize],
            requests: Requests::new(n, timeout),
            picker,
            choker: None,
            rechoke_pending: false,
            stats: DownloadStats::default(),
            last_write: now,
            last_read: now,
            created_at: now,
            next_watch: now + timeout / 2,
            dragonfly: None,
            metainfo,
        }
    }

    /// Runs BitTorrent classic on this torrent: choking, interest, its piece order and its endgame.
    pub fn with_bittorrent(mut self, now: Instant, config: &BitTorrentConfig) -> Self {
        self.picker = Box::new(BitTorrentPicker::new(config.random_first_cutoff));
        self.choker = Some(Choker::new(now, config.clone()));
        self
    }

    /// The choker, under the BitTorrent policy.
    pub fn choker(&self) -> Option<&Choker> {
        self.choker.as_ref()
    }

    /// Switches this torrent to Dragonfly's client-side piece and parent choice.
    pub fn set_dragonfly(&mut self, picker: ClientPicker) {
        self.dragonfly = Some(picker);
    }

    /// Dragonfly's client-side picker, if [`Dispatcher::set_dragonfly`] set one.
    pub fn dragonfly(&self) -> Option<&ClientPicker> {
        self.dragonfly.as_ref()
    }

    /// Dragonfly's client-side picker, mutably (the agent sets parents and weights, takes piece costs).
    pub fn dragonfly_mut(&mut self) -> Option<&mut ClientPicker> {
        self.dragonfly.as_mut()
    }

    /// Dragonfly: fills the free request slots, lowest-index piece a parent has first, each request
    /// to a parent holding the piece chosen by idle-upload weight.
    pub fn fill(&mut self, now: Instant, rng: &mut ChaCha8Rng, fx: &mut Vec<Effect>) {
        let Some(df) = &self.dragonfly else { return };
        if self.own.is_full() {
            return;
        }
        let limit = df.concurrent_pieces;
        let parents: Vec<PeerId> =
            df.parents().map(|(p, _)| *p).filter(|p| self.peers.contains_key(p)).collect();
        if parents.is_empty() {
            return;
        }
        let mut in_flight = self.requests.live_total(now);
        // Each round picks the lowest missing piece a parent has and nobody is asked for; every
        // piece below it is then held or asked for, so the next round starts after it (without the
        // cursor, 500 pieces in flight cost 500² bitfield scans per fill).
        let mut start: PieceIndex = 0;
        while in_flight < limit {
            let mut best: Option<PieceIndex> = None;
            for p in &parents {
                for i in self.peers[p].bitfield.iter_missing_from_at(&self.own, start) {
                    if best.is_some_and(|b| i >= b) {
                        break;
                    }
                    if self.requests.live_for_piece(now, i) == 0 {
                        best = Some(i);
                        break;
                    }
                }
            }
            let Some(i) = best else { break };
            start = i + 1;
            let holders: Vec<PeerId> =
                parents.iter().filter(|p| self.peers[*p].bitfield.get(i)).copied().collect();
            let p = self.dragonfly.as_ref().expect("checked above").choose(rng, &holders);
            let conn = self.peers[&p].conn;
            self.send_request(now, conn, p, i, fx);
            in_flight += 1;
        }
    }

    /// The torrent's metainfo.
    pub fn metainfo(&self) -> &MetaInfo {
        &self.metainfo
    }

    /// The pieces we have.
    pub fn bitfield(&self) -> &Bitfield {
        &self.own
    }

    /// True once we have every piece.
    pub fn is_complete(&self) -> bool {
        self.own.is_full()
    }

    /// Peers connected for this torrent (handshake done).
    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    /// True if `peer` is connected for this torrent.
    pub fn has_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The bitfields of every connected peer, sent in our handshakes.
    pub fn remote_bitfields(&self) -> BTreeMap<PeerId, Bitfield> {
        self.peers.iter().map(|(id, p)| (*id, p.bitfield.clone())).collect()
    }

    /// The latest time a piece moved on the connection to `peer`, for connection idle eviction.
    pub fn last_progress(&self, peer: &PeerId) -> Option<Instant> {
        let p = self.peers.get(peer)?;
        p.last_good_piece_received.max(p.last_piece_sent)
    }

    /// Peers in id order with their connection.
    pub fn peer_conns(&self) -> impl Iterator<Item = (PeerId, ConnId)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.conn))
    }

    /// How many connected peers have piece `i`.
    pub fn rarity(&self, i: PieceIndex) -> u32 {
        self.num_peers_by_piece.get(i as usize).copied().unwrap_or(0)
    }

    /// Live requests for piece `i` (more than one only in endgame).
    pub fn live_requests_for(&self, now: Instant, i: PieceIndex) -> usize {
        self.requests.live_for_piece(now, i)
    }

    /// Live requests to `peer`.
    pub fn live_requests_to(&self, now: Instant, peer: &PeerId) -> usize {
        self.requests.live_to(now, peer)
    }

    /// When [`Dispatcher::handle_watch`] is next due: every half request timeout, in phase with the
    /// dispatcher's creation.
    pub fn next_watch(&self) -> Instant {
        self.next_watch
    }

    fn in_endgame(&self, now: Instant) -> bool {
        if self.config.disable_endgame {
            return false;
        }
        if self.choker.is_some() {
            return self.all_requested(now);
        }
        self.own.len() - self.own.count_ones() <= self.config.endgame_threshold()
    }

    /// BitTorrent's endgame condition: every missing piece has a live request.
    fn all_requested(&self, now: Instant) -> bool {
        let missing = (self.own.len() - self.own.count_ones()) as usize;
        if missing == 0 || missing > self.requests.num_entries() {
            return false;
        }
        (0..self.own.len()).filter(|&i| !self.own.get(i)).all(|i| self.requests.live_for_piece(now, i) > 0)
    }

    /// BitTorrent: tells `id` whether it has a piece we lack, when that changed.
    fn update_interest(&mut self, id: &PeerId, fx: &mut Vec<Effect>) {
        let (Some(c), Some(p)) = (self.choker.as_mut(), self.peers.get(id)) else { return };
        let want = p.bitfield.iter_missing_from(&self.own).next().is_some();
        let Some(pc) = c.peer_mut(id) else { return };
        if pc.am_interested != want {
            pc.am_interested = want;
            fx.push(Effect::Send(p.conn, if want { Message::Interested } else { Message::NotInterested }));
        }
    }

    /// BitTorrent: sends the choke changes a rechoke decided.
    fn send_choke_changes(&mut self, changes: Vec<ChokeChange>, fx: &mut Vec<Effect>) {
        for ch in changes {
            let (id, msg) = match ch {
                ChokeChange::Choke(id) => (id, Message::Choke),
                ChokeChange::Unchoke(id) => (id, Message::Unchoke),
            };
            if let Some(p) = self.peers.get(&id) {
                fx.push(Effect::Send(p.conn, msg));
            }
        }
    }

    /// BitTorrent: recomputes the unchoke set now, keeping the optimistic unchoke.
    fn rechoke_now(&mut self, now: Instant, rng: &mut ChaCha8Rng, fx: &mut Vec<Effect>) {
        let seeding = self.own.is_full();
        let Some(c) = self.choker.as_mut() else { return };
        let changes = c.rechoke(now, rng, seeding, false);
        self.send_choke_changes(changes, fx);
    }

    /// The next periodic rechoke, under the BitTorrent policy.
    pub fn next_rechoke(&self) -> Option<Instant> {
        self.choker.as_ref().map(Choker::next_tick)
    }

    /// The periodic rechoke (BitTorrent), and one owed because an unchoked peer left.
    pub fn handle_rechoke(&mut self, now: Instant, rng: &mut ChaCha8Rng, fx: &mut Vec<Effect>) {
        let seeding = self.own.is_full();
        let Some(c) = self.choker.as_mut() else { return };
        let mut changes = c.tick(now, rng, seeding);
        if std::mem::take(&mut self.rechoke_pending) && changes.is_empty() {
            changes = c.rechoke(now, rng, seeding, false);
        }
        self.send_choke_changes(changes, fx);
    }

    /// Whether a peer that left owes a rechoke ([`Dispatcher::handle_rechoke`]).
    pub fn rechoke_pending(&self) -> bool {
        self.rechoke_pending
    }

    fn pipeline_limit(&self, is_origin: bool) -> usize {
        if is_origin { self.config.origin_pipeline_limit } else { self.config.pipeline_limit }
    }

    /// A peer finished its handshake: count its pieces and ask it for some.
    pub fn add_peer(&mut self, now: Instant, rng: &mut ChaCha8Rng, new: NewPeer, fx: &mut Vec<Effect>) {
        let NewPeer { id, conn, is_origin, bitfield } = new;
        // The scheduler checks handshakes; a bitfield of another length, or a peer already here on
        // another connection, is refused rather than trusted.
        if bitfield.len() != self.own.len() || self.peers.contains_key(&id) {
            fx.push(Effect::CloseConn(conn));
            return;
        }
        for i in bitfield.iter_ones() {
            self.num_peers_by_piece[i as usize] += 1;
        }
        let peer = Peer { conn, bitfield, is_origin, last_good_piece_received: None, last_piece_sent: None };
        self.peers.insert(id, peer);
        if let Some(c) = self.choker.as_mut() {
            // Connections start choked both ways; say whether we want anything.
            c.add_peer(now, id);
            self.update_interest(&id, fx);
        }
        self.request_more(now, rng, &id, fx);
    }

    /// A peer's connection closed.
    pub fn remove_peer(&mut self, id: &PeerId) {
        if let Some(p) = self.peers.remove(id) {
            for i in p.bitfield.iter_ones() {
                self.num_peers_by_piece[i as usize] -= 1;
            }
            self.requests.clear_peer(id);
        }
        if let Some(c) = self.choker.as_mut()
            && c.remove_peer(id)
        {
            self.rechoke_pending = true;
        }
    }

    /// Sets a bit of a peer's bitfield, keeping the rarity counters in step.
    fn set_remote(&mut self, id: &PeerId, i: PieceIndex) {
        if let Some(p) = self.peers.get_mut(id)
            && p.bitfield.set(i)
        {
            self.num_peers_by_piece[i as usize] += 1;
        }
    }

    /// Kraken's `maybeRequestMorePieces`: fill the peer's pipeline with pieces the policy chooses.
    fn request_more(&mut self, now: Instant, rng: &mut ChaCha8Rng, id: &PeerId, fx: &mut Vec<Effect>) {
        if let Some(df) = &self.dragonfly {
            // Only a parent's news (a new peer, a piece, completion) can free work; children are
            // never asked.
            if df.is_parent(id) {
                self.fill(now, rng, fx);
            }
            return;
        }
        let Some(peer) = self.peers.get(id) else { return };
        if self.choker.as_ref().is_some_and(|c| !c.may_request(id)) {
            return;
        }
        let quota = self.pipeline_limit(peer.is_origin).saturating_sub(self.requests.live_to(now, id));
        if quota == 0 || self.own.is_full() {
            return;
        }
        let allow_dup = self.in_endgame(now);
        let sel = Selection {
            remote: &peer.bitfield,
            own: &self.own,
            num_peers_by_piece: &self.num_peers_by_piece,
            quota,
        };
        let requests = &self.requests;
        let pieces = self.picker.select(rng, &sel, &mut |i| requests.valid(now, id, i, allow_dup));
        let conn = peer.conn;
        for i in pieces {
            self.send_request(now, conn, *id, i, fx);
        }
    }

    fn send_request(&mut self, now: Instant, conn: ConnId, id: PeerId, i: PieceIndex, fx: &mut Vec<Effect>) {
        self.requests.insert(now, id, i);
        self.stats.requests_sent += 1;
        fx.push(Effect::Send(
            conn,
            Message::PieceRequest { index: i, offset: 0, length: self.metainfo.piece_len(i) },
        ));
    }

    /// The driver could not queue a request (the connection's send buffer was full).
    pub fn mark_unsent(&mut self, peer: &PeerId, i: PieceIndex) {
        self.requests.mark(peer, i, Status::Unsent);
    }

    /// Handles a message from an active peer. The handshake is not passed here.
    pub fn handle_message(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        from: &PeerId,
        msg: Message,
        fx: &mut Vec<Effect>,
    ) {
        if !self.peers.contains_key(from) {
            return;
        }
        match msg {
            // BitTorrent: a choked peer's requests are dropped (it forgets them when the CHOKE arrives).
            Message::PieceRequest { .. } if self.choker.as_ref().is_some_and(|c| !c.serves(from)) => {}
            Message::PieceRequest { index, offset, length } => {
                self.serve(now, from, index, offset, length, fx)
            }
            Message::PiecePayload { index, payload, .. } => self.receive(now, rng, from, index, payload, fx),
            Message::AnnouncePiece { index } => {
                if index < self.own.len() {
                    self.set_remote(from, index);
                    if !self.own.get(index) {
                        self.update_interest(from, fx);
                    }
                    self.request_more(now, rng, from, fx);
                }
            }
            Message::Complete => {
                if self.own.is_full() {
                    fx.push(Effect::Close(*from));
                } else {
                    if let Some(p) = self.peers.get_mut(from) {
                        for i in 0..p.bitfield.len() {
                            if p.bitfield.set(i) {
                                self.num_peers_by_piece[i as usize] += 1;
                            }
                        }
                    }
                    self.update_interest(from, fx);
                    self.request_more(now, rng, from, fx);
                }
            }
            Message::Error { index, .. } => self.requests.mark(from, index, Status::Invalid),
            // After the handshake a BITFIELD is unexpected and ignored; CANCEL_PIECE is a no-op (shoal
            // serves a request when it arrives, so there is never a queued one to cancel).
            Message::Bitfield(_) | Message::CancelPiece { .. } => {}
            Message::Choke => {
                let Some(c) = self.choker.as_mut() else { return };
                if let Some(p) = c.peer_mut(from) {
                    p.peer_choking = true;
                }
                // BEP 3: requests to a peer that chokes us are discarded; ask the others for them.
                self.requests.clear_peer(from);
                let others: Vec<PeerId> = self.peers.keys().filter(|id| *id != from).copied().collect();
                for id in others {
                    self.request_more(now, rng, &id, fx);
                }
            }
            Message::Unchoke => {
                let Some(c) = self.choker.as_mut() else { return };
                if let Some(p) = c.peer_mut(from) {
                    p.peer_choking = false;
                }
                self.request_more(now, rng, from, fx);
            }
            Message::Interested => {
                let Some(c) = self.choker.as_mut() else { return };
                let Some(p) = c.peer_mut(from) else { return };
                p.peer_interested = true;
                if p.am_choking && c.has_free_slot() {
                    self.rechoke_now(now, rng, fx);
                }
            }
            Message::NotInterested => {
                let Some(c) = self.choker.as_mut() else { return };
                let Some(p) = c.peer_mut(from) else { return };
                p.peer_interested = false;
                if !p.am_choking {
                    self.rechoke_now(now, rng, fx);
                }
            }
        }
    }

    fn serve(
        &mut self,
        now: Instant,
        from: &PeerId,
        i: PieceIndex,
        offset: u64,
        length: u64,
        fx: &mut Vec<Effect>,
    ) {
        let conn = self.peers[from].conn;
        // Only whole pieces are served (Kraken's `isFullPiece`).
        if !self.own.get(i) || offset != 0 || length != self.metainfo.piece_len(i) {
            let message = if self.own.get(i) { "chunk not supported" } else { "piece not available" };
            fx.push(Effect::Send(
                conn,
                Message::Error { index: i, code: ErrorCode::PieceRequestFailed, message: message.into() },
            ));
            return;
        }
        let payload = self.payload(i);
        if let Some(c) = self.choker.as_mut() {
            c.sent(now, from, payload.len());
        }
        fx.push(Effect::Send(conn, Message::PiecePayload { index: i, offset: 0, payload }));
        self.last_read = now;
        if let Some(p) = self.peers.get_mut(from) {
            p.last_piece_sent = Some(now);
        }
        // Kraken assumes the remote now has the piece.
        self.set_remote(from, i);
    }

    fn payload(&self, i: PieceIndex) -> Payload {
        let len = self.metainfo.piece_len(i);
        let start = u64::from(i) * self.metainfo.piece_length();
        match &self.content {
            Content::Blob(b) => Payload::Bytes(b.slice(start as usize..(start + len) as usize)),
            Content::Pieces(p) if p[i as usize].is_some() => {
                Payload::Bytes(p[i as usize].clone().expect("checked by the guard"))
            }
            _ => Payload::Tagged { len, tag: self.metainfo.piece_sum(i).expect("own pieces are in range") },
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        from: &PeerId,
        i: PieceIndex,
        payload: Payload,
        fx: &mut Vec<Effect>,
    ) {
        if i >= self.own.len() {
            return;
        }
        if payload.len() != self.metainfo.piece_len(i) || Some(payload.crc32()) != self.metainfo.piece_sum(i)
        {
            self.stats.corrupt += 1;
            self.requests.mark(from, i, Status::Invalid);
            if !self.tolerate_corrupt {
                fx.push(Effect::Close(*from));
            }
            return;
        }
        if let Some(c) = self.choker.as_mut() {
            c.received(now, from, payload.len());
        }
        if self.own.get(i) {
            self.stats.duplicates += 1;
            return;
        }
        if self.choker.is_some() && self.in_endgame(now) {
            // BitTorrent's endgame: cancel the duplicate requests for this piece.
            for id in self.requests.live_peers_for(now, i) {
                if id != *from
                    && let Some(p) = self.peers.get(&id)
                {
                    fx.push(Effect::Send(p.conn, Message::CancelPiece { index: i }));
                }
            }
        }
        self.own.set(i);
        if let Payload::Bytes(b) = payload {
            if !matches!(self.content, Content::Pieces(_)) {
                self.content = Content::Pieces(vec![None; self.own.len() as usize]);
            }
            if let Content::Pieces(p) = &mut self.content {
                p[i as usize] = Some(b);
            }
        }
        self.stats.pieces += 1;
        self.last_write = now;
        let is_origin = {
            let p = self.peers.get_mut(from).expect("checked by handle_message");
            p.last_good_piece_received = Some(now);
            p.is_origin
        };
        if is_origin {
            self.stats.pieces_from_origins += 1;
        }
        if let Some(df) = &mut self.dragonfly
            && let Some(sent) = self.requests.sent_at(from, i)
        {
            df.costs_ms.push(u32::try_from((now - sent).as_millis()).unwrap_or(u32::MAX));
        }
        if self.own.is_full() {
            self.complete(fx);
        }
        self.requests.clear_piece(i);
        if self.choker.is_some() {
            // Peers whose only piece we lacked was this one are no longer interesting.
            let holders: Vec<PeerId> =
                self.peers.iter().filter(|(_, p)| p.bitfield.get(i)).map(|(id, _)| *id).collect();
            for id in holders {
                self.update_interest(&id, fx);
            }
        }
        self.request_more(now, rng, from, fx);
        for (id, p) in &self.peers {
            if id != from {
                fx.push(Effect::Send(p.conn, Message::AnnouncePiece { index: i }));
            }
        }
    }

    /// Kraken's `complete()`: report once, close peers that are complete too, tell the others.
    fn complete(&mut self, fx: &mut Vec<Effect>) {
        if self.completed {
            return;
        }
        self.completed = true;
        if self.verify_sha256 && !self.digest_matches() {
            fx.push(Effect::DigestMismatch);
            return;
        }
        fx.push(Effect::Completed);
        for (id, p) in &self.peers {
            if p.bitfield.is_full() {
                fx.push(Effect::Close(*id));
            } else {
                fx.push(Effect::Send(p.conn, Message::Complete));
            }
        }
    }

    /// The blob's SHA-256 against its digest, when every piece is real bytes; simulated content has
    /// nothing to hash and passes (its pieces passed their tags).
    fn digest_matches(&self) -> bool {
        let Content::Pieces(pieces) = &self.content else { return true };
        let mut h = Sha256::new();
        for p in pieces {
            match p {
                Some(b) => h.update(b),
                None => return true,
            }
        }
        <[u8; 32]>::from(h.finalize()) == *self.metainfo.digest().as_bytes()
    }

    /// The request watcher, every half request timeout: re-send failed requests to other peers.
    pub fn handle_watch(&mut self, now: Instant, rng: &mut ChaCha8Rng, fx: &mut Vec<Effect>) {
        // Kraken's watcher ticks every half timeout from the dispatcher's creation; keep that phase
        // across stretches when it had nothing to do.
        let period = (self.requests.timeout() / 2).max(Duration::from_millis(1)).as_nanos() as u64;
        let behind = now.as_nanos().saturating_sub(self.next_watch.as_nanos());
        self.next_watch = Instant::from_nanos(self.next_watch.as_nanos() + (behind / period + 1) * period);
        if self.peers.is_empty() || self.own.is_full() {
            return;
        }
        if self.dragonfly.is_some() {
            // Failed requests are no longer live: the pieces are free to be requested again.
            self.fill(now, rng, fx);
            return;
        }
        let failed = self.requests.failed(now);
        if failed.is_empty() {
            return;
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        let allow_dup = self.in_endgame(now);
        for (piece, failed_peer, failure) in failed {
            if self.own.get(piece) {
                continue;
            }
            // Kraken ranges over a sync.Map, whose order is unspecified, once per failed request.
            let start = rand::Rng::random_range(rng, 0..ids.len());
            for k in 0..ids.len() {
                let id = ids[(start + k) % ids.len()];
                // Expired and invalid requests are never re-sent to the same peer; unsent ones may be.
                if failure != Failure::Unsent && id == failed_peer {
                    continue;
                }
                if self.choker.as_ref().is_some_and(|c| !c.may_request(&id)) {
                    continue;
                }
                let p = &self.peers[&id];
                let quota = self.pipeline_limit(p.is_origin).saturating_sub(self.requests.live_to(now, &id));
                if p.bitfield.get(piece) && quota > 0 && self.requests.valid(now, &id, piece, allow_dup) {
                    let conn = p.conn;
                    self.stats.requests_resent += 1;
                    self.send_request(now, conn, id, piece, fx);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::peer::picker::picker_for;

    fn peer(i: u8) -> PeerId {
        PeerId::from_addr(std::net::SocketAddr::from(([10, 0, 0, i], 7000)))
    }

    fn bt_seeder(now: Instant) -> Dispatcher {
        let mi = MetaInfo::synthetic(crate::Digest::of(b"bt"), 4 << 20, 1 << 20).unwrap();
        let cfg = DispatchConfig::default();
        let picker = picker_for(cfg.piece_request_policy);
        Dispatcher::seeder(now, mi, None, &cfg, &Quirks::default(), picker)
            .with_bittorrent(now, &BitTorrentConfig::default())
    }

    fn payloads(fx: &[Effect]) -> usize {
        fx.iter().filter(|e| matches!(e, Effect::Send(_, Message::PiecePayload { .. }))).count()
    }

    #[test]
    fn a_choked_peers_requests_are_dropped_until_it_is_unchoked() {
        let now = Instant::ZERO;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut d = bt_seeder(now);
        let mut fx = Vec::new();
        let new = NewPeer { id: peer(1), conn: ConnId(1), is_origin: false, bitfield: Bitfield::new(4) };
        d.add_peer(now, &mut rng, new, &mut fx);
        // A seeder wants nothing: no INTERESTED, and the peer starts choked.
        assert!(fx.is_empty(), "{fx:?}");
        let req = Message::PieceRequest { index: 0, offset: 0, length: 1 << 20 };
        d.handle_message(now, &mut rng, &peer(1), req.clone(), &mut fx);
        assert!(fx.is_empty(), "a choked peer's request is dropped silently: {fx:?}");
        // INTERESTED with a slot free: unchoked at once, then served.
        d.handle_message(now, &mut rng, &peer(1), Message::Interested, &mut fx);
        assert_eq!(fx, vec![Effect::Send(ConnId(1), Message::Unchoke)]);
        fx.clear();
        d.handle_message(now, &mut rng, &peer(1), req.clone(), &mut fx);
        assert_eq!(payloads(&fx), 1);
        fx.clear();
        // NOT_INTERESTED frees the slot: choked again, and requests are dropped again.
        d.handle_message(now, &mut rng, &peer(1), Message::NotInterested, &mut fx);
        assert_eq!(fx, vec![Effect::Send(ConnId(1), Message::Choke)]);
        fx.clear();
        d.handle_message(now, &mut rng, &peer(1), req, &mut fx);
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn a_leecher_requests_only_from_peers_that_unchoke_it() {
        let now = Instant::ZERO;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mi = MetaInfo::synthetic(crate::Digest::of(b"bt"), 4 << 20, 1 << 20).unwrap();
        let cfg = DispatchConfig::default();
        let mut d =
            Dispatcher::leecher(now, mi, &cfg, &Quirks::default(), picker_for(cfg.piece_request_policy))
                .with_bittorrent(now, &BitTorrentConfig::default());
        let mut fx = Vec::new();
        let new = NewPeer { id: peer(1), conn: ConnId(1), is_origin: true, bitfield: Bitfield::full(4) };
        d.add_peer(now, &mut rng, new, &mut fx);
        assert_eq!(fx, vec![Effect::Send(ConnId(1), Message::Interested)], "interested, no request yet");
        fx.clear();
        d.handle_message(now, &mut rng, &peer(1), Message::Unchoke, &mut fx);
        let requests =
            fx.iter().filter(|e| matches!(e, Effect::Send(_, Message::PieceRequest { .. }))).count();
        assert_eq!(requests, cfg.origin_pipeline_limit.min(4));
        fx.clear();
        // CHOKE discards the requests: the table forgets them.
        d.handle_message(now, &mut rng, &peer(1), Message::Choke, &mut fx);
        assert_eq!(d.live_requests_to(now, &peer(1)), 0);
        assert!(fx.is_empty(), "{fx:?}");
    }
}
