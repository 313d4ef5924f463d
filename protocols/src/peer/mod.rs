//! The P2P scheduler shared by agents and origins (`lib/torrent/scheduler/`): connections, handshakes,
//! per-torrent dispatchers, preemption.
//!
//! [`crate::agent::Agent`] and [`crate::origin::Origin`] wrap a `Scheduler` (crate-private) with what
//! differs between them: agents announce, fetch metainfo and dial; origins only accept, and serve blobs
//! from a backend.

pub mod choker;
pub mod connstate;
pub mod dispatch;
pub mod picker;
pub mod requests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use litemap::LiteMap;
use std::net::SocketAddr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use self::connstate::ConnState;
use self::dispatch::{Dispatcher, DownloadStats, Effect, NewPeer};
use self::picker::{PickerFactory, PiecePicker, picker_for};
use crate::announce::AnnounceRequest;
use crate::config::SchedulerConfig;
use crate::message::{Handshake, Message};
use crate::time::Instant;
use crate::types::{Digest, InfoHash, PeerId, PeerInfo};

/// A connection handle, allocated by the node for dials and for accepted connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Something the driver must do for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a connection to `addr`; messages sent on `conn` before it is established are queued.
    /// Report failure with `handle_closed`.
    Dial {
        /// The handle the node allocated for the new connection.
        conn: ConnId,
        /// The peer's listening address.
        addr: SocketAddr,
    },
    /// Send a message on a connection.
    Send {
        /// The connection to send on.
        conn: ConnId,
        /// The message, to be framed by [`crate::wire`] on real sockets.
        message: Message,
    },
    /// Close a connection. The node has already forgotten it; no `handle_closed` is expected.
    Close {
        /// The connection to close.
        conn: ConnId,
    },
    /// Announce to a tracker; answer with `handle_announce_response(now, id, …)`.
    Announce {
        /// The request's id, unique per node, to give back with the answer.
        id: u64,
        /// The tracker to send it to.
        tracker: SocketAddr,
        /// The announce body.
        request: AnnounceRequest,
    },
    /// Fetch metainfo from a tracker; answer with `handle_metainfo_response(now, id, …)`.
    FetchMetaInfo {
        /// The request's id, unique per node, to give back with the answer.
        id: u64,
        /// The tracker to ask.
        tracker: SocketAddr,
        /// The blob's namespace.
        namespace: String,
        /// The blob.
        digest: Digest,
    },
}

/// What happened to a download, for the driver's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The blob is complete: every piece passed its check (and the blob its SHA-256, with
    /// `quirks.verify_blob_sha256` and real bytes), or it was complete already when asked for.
    DownloadComplete {
        /// The blob.
        digest: Digest,
        /// The download's counters.
        stats: DownloadStats,
    },
    /// The download failed; the torrent's control and connections are gone.
    DownloadFailed {
        /// The blob.
        digest: Digest,
        /// Why.
        error: DownloadError,
        /// The download's counters up to the failure (default when it failed before it started).
        stats: DownloadStats,
    },
}

/// Why a download failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// No good piece was written for `leecher_tti_ms`; holds that TTI in whole seconds.
    #[error("no good piece written for the leecher TTI ({0} s)")]
    LeecherTimeout(u64),
    /// The tracker answered 404 for the metainfo (or metainfo for another digest).
    #[error("metainfo not found (404)")]
    MetaInfoNotFound,
    /// Still 202 after `metainfo_client.give_up_after_ms`; holds that limit in whole seconds.
    #[error("metainfo still not ready (202) after {0} s")]
    MetaInfoTimeout(u64),
    /// Every tracker was unreachable (or none is configured).
    #[error("no tracker reachable for metainfo")]
    TrackersUnreachable,
    /// Every piece arrived but the blob's SHA-256 is not its digest (`quirks.verify_blob_sha256`).
    #[error("blob content does not match its digest")]
    DigestMismatch,
    /// The download was taken away from outside the protocol (the real-socket driver uses it for an
    /// agent it kills).
    #[error("removed")]
    Removed,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// We dialled and sent our handshake; waiting for the reply.
    Opening {
        h: InfoHash,
        expected: PeerId,
        is_origin: bool,
    },
    /// We accepted; waiting for the opener's handshake.
    Accepted,
    Active {
        h: InfoHash,
        peer: PeerId,
    },
}

#[derive(Clone, Debug)]
struct Conn {
    phase: Phase,
    opened_at: Instant,
    /// Handshake deadline while not active.
    deadline: Instant,
}

/// A torrent the scheduler serves or downloads (Kraken's `torrentControl`).
#[derive(Debug)]
pub(crate) struct Torrent {
    pub namespace: String,
    pub dispatcher: Dispatcher,
    /// A seeder control dropped by the seeder TTI: the data stays, the next incoming handshake revives it.
    pub dormant: bool,
}

/// A handshake for a torrent the scheduler has no control for; the role decides.
#[derive(Debug)]
pub(crate) struct UnknownTorrent {
    pub handshake: Box<Handshake>,
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    pub config: SchedulerConfig,
    pub me: PeerInfo,
    pub rng: ChaCha8Rng,
    /// A flat sorted map: ids are handed out in increasing order, so inserts append, and a
    /// node's few connections are found by a binary search of one allocation.
    conns: LiteMap<ConnId, Conn>,
    /// (deadline, conn) of connections still handshaking.
    deadlines: BTreeSet<(Instant, ConnId)>,
    next_conn: u64,
    pub state: ConnState,
    pub torrents: BTreeMap<InfoHash, Torrent>,
    pub out: VecDeque<Output>,
    pub events: VecDeque<Event>,
    /// Torrents that completed since the role last looked (agents announce them).
    pub completed: Vec<InfoHash>,
    /// Torrents removed since the role last looked (agents take them out of the announce queue).
    pub removed: Vec<InfoHash>,
    next_preemption: Instant,
    fx: Vec<Effect>,
    /// Payload bytes handed to the driver so far (a host's transmit volume, for Dragonfly's load
    /// reports).
    pub served_bytes: u64,
    /// Replaces [`picker_for`] when set ([`crate::agent::Agent::set_picker_factory`]).
    pub picker_factory: Option<FactoryHook>,
}

/// A [`PickerFactory`] with a `Debug` that names it only.
#[derive(Clone)]
pub(crate) struct FactoryHook(pub PickerFactory);

impl std::fmt::Debug for FactoryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PickerFactory")
    }
}

impl Scheduler {
    pub fn new(now: Instant, config: SchedulerConfig, me: PeerInfo, seed: u64) -> Self {
        let state = ConnState::new(config.conn_state.clone(), &config.quirks);
        Scheduler {
            next_preemption: now + config.preemption_interval(),
            config,
            me,
            rng: ChaCha8Rng::seed_from_u64(seed),
            conns: LiteMap::new(),
            deadlines: BTreeSet::new(),
            next_conn: 0,
            state,
            torrents: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            completed: Vec::new(),
            removed: Vec::new(),
            fx: Vec::new(),
            served_bytes: 0,
            picker_factory: None,
        }
    }

    /// A new torrent's picker: the installed factory's, else the configured policy's.
    fn picker(&self) -> Box<dyn PiecePicker + Send> {
        let policy = self.config.dispatch.piece_request_policy;
        match &self.picker_factory {
            Some(FactoryHook(f)) => f(policy),
            None => picker_for(policy),
        }
    }

    fn alloc_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub fn new_leecher(&self, now: Instant, metainfo: crate::MetaInfo) -> Dispatcher {
        let picker = self.picker();
        let d = Dispatcher::leecher(now, metainfo, &self.config.dispatch, &self.config.quirks, picker);
        self.with_policy(now, d)
    }

    /// A leecher that starts with some pieces.
    pub fn new_partial(&self, now: Instant, metainfo: crate::MetaInfo, have: crate::Bitfield) -> Dispatcher {
        let picker = self.picker();
        let d = Dispatcher::partial(now, metainfo, have, &self.config.dispatch, &self.config.quirks, picker);
        self.with_policy(now, d)
    }

    /// Applies the policy's per-torrent behaviour to a new dispatcher.
    fn with_policy(&self, now: Instant, d: Dispatcher) -> Dispatcher {
        match &self.config.bittorrent {
            Some(bt) => d.with_bittorrent(now, bt),
            None => d,
        }
    }

    pub fn new_seeder(
        &self,
        now: Instant,
        metainfo: crate::MetaInfo,
        blob: Option<bytes::Bytes>,
    ) -> Dispatcher {
        let picker = self.picker();
        let d = Dispatcher::seeder(now, metainfo, blob, &self.config.dispatch, &self.config.quirks, picker);
        self.with_policy(now, d)
    }

    pub fn add_torrent(&mut self, namespace: String, dispatcher: Dispatcher) {
        let h = dispatcher.metainfo().info_hash();
        self.torrents.insert(h, Torrent { namespace, dispatcher, dormant: false });
    }

    fn handshake(&self, h: &InfoHash, namespace: String) -> Option<Box<Handshake>> {
        let t = self.torrents.get(h)?;
        Some(Box::new(Handshake {
            peer_id: self.me.peer_id,
            info_hash: *h,
            digest: t.dispatcher.metainfo().digest(),
            bitfield: t.dispatcher.bitfield().clone(),
            remote_bitfields: t.dispatcher.remote_bitfields(),
            namespace,
        }))
    }

    /// Dials `peer` for torrent `h` if admission allows. Returns the admission error otherwise.
    pub fn dial(&mut self, now: Instant, h: InfoHash, peer: &PeerInfo) -> Result<(), connstate::AdmitError> {
        self.state.add_pending(h, peer.peer_id, None)?;
        let conn = self.alloc_conn();
        let deadline = now + self.config.conn.handshake_timeout();
        let phase = Phase::Opening { h, expected: peer.peer_id, is_origin: peer.origin };
        self.conns.insert(conn, Conn { phase, opened_at: now, deadline });
        self.deadlines.insert((deadline, conn));
        let namespace = self.torrents.get(&h).map(|t| t.namespace.clone()).unwrap_or_default();
        let hs = self.handshake(&h, namespace).expect("dial is only called for a known torrent");
        self.out.push_back(Output::Dial { conn, addr: peer.addr });
        self.out.push_back(Output::Send { conn, message: Message::Bitfield(hs) });
        Ok(())
    }

    /// A connection arrived; the opener's handshake is expected within the handshake timeout.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        let conn = self.alloc_conn();
        let deadline = now + self.config.conn.handshake_timeout();
        self.conns.insert(conn, Conn { phase: Phase::Accepted, opened_at: now, deadline });
        self.deadlines.insert((deadline, conn));
        conn
    }

    /// Number of connections in any phase.
    pub fn num_conns(&self) -> usize {
        self.conns.len()
    }

    /// Handles a message. Returns the handshake of an accepted connection for a torrent this node has
    /// no control for: the role decides to [`Scheduler::accept_handshake`] or [`Scheduler::close`].
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, msg: Message) -> Option<UnknownTorrent> {
        let phase = self.conns.get(&conn)?.phase;
        match (phase, msg) {
            (Phase::Opening { h, expected, is_origin }, Message::Bitfield(hs)) => {
                let n = self.torrents.get(&h).map(|t| t.dispatcher.metainfo().num_pieces());
                // The reply must come from the peer the tracker named, for this torrent.
                if hs.peer_id != expected || hs.info_hash != h || Some(hs.bitfield.len()) != n {
                    self.fail_conn(now, conn);
                    return None;
                }
                self.activate(now, conn, h, expected, is_origin, hs.bitfield);
                None
            }
            (Phase::Opening { .. }, _) => {
                self.fail_conn(now, conn);
                None
            }
            (Phase::Accepted, Message::Bitfield(hs)) => self.incoming_handshake(now, conn, hs),
            (Phase::Accepted, _) => {
                self.close(now, conn);
                None
            }
            (Phase::Active { h, peer }, msg) => {
                let t = self.torrents.get_mut(&h)?;
                let mut fx = std::mem::take(&mut self.fx);
                t.dispatcher.handle_message(now, &mut self.rng, &peer, msg, &mut fx);
                self.apply(now, h, &mut fx);
                self.fx = fx;
                None
            }
        }
    }

    fn incoming_handshake(
        &mut self,
        now: Instant,
        conn: ConnId,
        hs: Box<Handshake>,
    ) -> Option<UnknownTorrent> {
        let h = hs.info_hash;
        let quirks = &self.config.quirks;
        if !quirks.blacklist_ignores_incoming && self.state.is_blacklisted(now, &h, &hs.peer_id) {
            self.close(now, conn);
            return None;
        }
        if !quirks.cross_dial_collision
            && self.state.is_pending(&h, &hs.peer_id)
            && self.me.peer_id < hs.peer_id
        {
            // shoal's fix for simultaneous cross-dials: the lower id gives up its own dial and accepts.
            if let Some(out) = self.opening_conn(&h, &hs.peer_id) {
                self.state.delete_pending(&h, &hs.peer_id);
                self.forget(out);
                self.out.push_back(Output::Close { conn: out });
            }
        }
        let mut neighbours = hs.remote_bitfields.keys();
        if self.state.add_pending(h, hs.peer_id, Some(&mut neighbours)).is_err() {
            self.close(now, conn);
            return None;
        }
        let known = self.torrents.get(&h).is_some_and(|t| {
            t.dispatcher.metainfo().digest() == hs.digest
                && hs.bitfield.len() == t.dispatcher.metainfo().num_pieces()
        });
        if !known {
            return Some(UnknownTorrent { handshake: hs });
        }
        self.accept_handshake(now, conn, *hs);
        None
    }

    fn opening_conn(&self, h: &InfoHash, peer: &PeerId) -> Option<ConnId> {
        self.conns.iter().find_map(|(id, c)| match &c.phase {
            Phase::Opening { h: ch, expected, .. } if ch == h && expected == peer => Some(*id),
            _ => None,
        })
    }

    /// Completes an incoming handshake for a torrent this node now has: reply with our bitfield (and an
    /// empty namespace) and activate. The acceptor does not know whether the opener is an origin;
    /// origins never dial.
    pub fn accept_handshake(&mut self, now: Instant, conn: ConnId, hs: Handshake) {
        let h = hs.info_hash;
        let Some(t) = self.torrents.get_mut(&h) else {
            self.state.delete_pending(&h, &hs.peer_id);
            self.close(now, conn);
            return;
        };
        if t.dormant {
            t.dormant = false;
            t.dispatcher.created_at = now;
            t.dispatcher.last_read = now;
            if t.dispatcher.is_complete() {
                // A revived seeder control fires DispatcherComplete at once and re-announces complete.
                self.completed.push(h);
            }
        }
        let reply = self.handshake(&h, String::new()).expect("torrent checked above");
        self.out.push_back(Output::Send { conn, message: Message::Bitfield(reply) });
        self.activate(now, conn, h, hs.peer_id, false, hs.bitfield);
    }

    fn activate(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: InfoHash,
        peer: PeerId,
        is_origin: bool,
        bitfield: crate::Bitfield,
    ) {
        self.state.move_pending_to_active(&h, &peer);
        if let Some(c) = self.conns.get_mut(&conn) {
            self.deadlines.remove(&(c.deadline, conn));
            c.phase = Phase::Active { h, peer };
            c.opened_at = now;
        }
        let Some(t) = self.torrents.get_mut(&h) else { return };
        let mut fx = std::mem::take(&mut self.fx);
        t.dispatcher.add_peer(now, &mut self.rng, NewPeer { id: peer, conn, is_origin, bitfield }, &mut fx);
        self.apply(now, h, &mut fx);
        self.fx = fx;
    }

    /// Applies dispatcher effects.
    fn apply(&mut self, now: Instant, h: InfoHash, fx: &mut Vec<Effect>) {
        for e in fx.drain(..) {
            match e {
                Effect::Send(conn, message) => {
                    if let Message::PiecePayload { payload, .. } = &message {
                        self.served_bytes += payload.len();
                    }
                    self.out.push_back(Output::Send { conn, message })
                }
                Effect::Close(peer) => {
                    if let Some(conn) = self.active_conn(&h, &peer) {
                        self.close(now, conn);
                    }
                }
                Effect::CloseConn(conn) => self.fail_conn(now, conn),
                Effect::Completed => {
                    self.state.clear_blacklist(now, &h);
                    self.completed.push(h);
                    if let Some(t) = self.torrents.get(&h) {
                        let stats = t.dispatcher.stats.clone();
                        self.events.push_back(Event::DownloadComplete {
                            digest: t.dispatcher.metainfo().digest(),
                            stats,
                        });
                    }
                }
                Effect::DigestMismatch => self.fail_torrent(now, h, DownloadError::DigestMismatch),
            }
        }
    }

    /// Dragonfly: lets torrent `h` fill its free request slots (after its parents changed).
    pub fn kick(&mut self, now: Instant, h: InfoHash) {
        let Some(t) = self.torrents.get_mut(&h) else { return };
        let mut fx = std::mem::take(&mut self.fx);
        t.dispatcher.fill(now, &mut self.rng, &mut fx);
        self.apply(now, h, &mut fx);
        self.fx = fx;
    }

    fn active_conn(&self, h: &InfoHash, peer: &PeerId) -> Option<ConnId> {
        let t = self.torrents.get(h)?;
        t.dispatcher.peer_conns().find(|(id, _)| id == peer).map(|(_, c)| c)
    }

    /// Drops a torrent's control and connections, failing its download.
    pub fn fail_torrent(&mut self, now: Instant, h: InfoHash, error: DownloadError) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| match &c.phase {
                Phase::Active { h: ch, .. } | Phase::Opening { h: ch, .. } => *ch == h,
                Phase::Accepted => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.close(now, conn);
        }
        if let Some(t) = self.torrents.remove(&h) {
            self.removed.push(h);
            let digest = t.dispatcher.metainfo().digest();
            self.events.push_back(Event::DownloadFailed { digest, error, stats: t.dispatcher.stats });
        }
        self.state.forget_torrent_if_idle(&h);
    }

    /// A failure while handshaking or a protocol violation: close and blacklist.
    fn fail_conn(&mut self, now: Instant, conn: ConnId) {
        self.close_inner(now, conn, true, true);
    }

    /// Closes a connection from this side.
    pub fn close(&mut self, now: Instant, conn: ConnId) {
        self.close_inner(now, conn, false, true);
    }

    /// The remote closed the connection, or the dial failed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.close_inner(now, conn, false, false);
    }

    fn forget(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        self.deadlines.remove(&(c.deadline, conn));
        Some(c)
    }

    fn close_inner(&mut self, now: Instant, conn: ConnId, failure: bool, local: bool) {
        let Some(c) = self.forget(conn) else { return };
        if local {
            self.out.push_back(Output::Close { conn });
        }
        let every = self.config.quirks.blacklist_every_closed_conn;
        match c.phase {
            // A failed outgoing handshake is always blacklisted.
            Phase::Opening { h, expected, .. } => {
                self.state.delete_pending(&h, &expected);
                self.state.blacklist(now, h, expected);
            }
            Phase::Accepted => {}
            Phase::Active { h, peer } => {
                self.state.delete_active(&h, &peer);
                if every || failure {
                    self.state.blacklist(now, h, peer);
                }
                if let Some(t) = self.torrents.get_mut(&h) {
                    t.dispatcher.remove_peer(&peer);
                    if t.dispatcher.rechoke_pending() {
                        // BitTorrent: an unchoke slot came free.
                        let mut fx = Vec::new();
                        t.dispatcher.handle_rechoke(now, &mut self.rng, &mut fx);
                        self.apply(now, h, &mut fx);
                    }
                }
            }
        }
    }

    /// Refuses an incoming handshake the role could not serve.
    pub fn refuse(&mut self, now: Instant, conn: ConnId, hs: &Handshake) {
        self.state.delete_pending(&hs.info_hash, &hs.peer_id);
        self.close(now, conn);
    }

    /// The next time [`Scheduler::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = if self.config.disable_preemption { Instant::FAR_FUTURE } else { self.next_preemption };
        if let Some(&(d, _)) = self.deadlines.first() {
            t = t.min(d);
        }
        for tor in self.torrents.values() {
            if !tor.dispatcher.is_complete() && tor.dispatcher.num_peers() > 0 {
                t = t.min(tor.dispatcher.next_watch());
            }
            if let Some(r) = tor.dispatcher.next_rechoke()
                && tor.dispatcher.num_peers() > 0
            {
                t = t.min(r);
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Handshakes that did not finish in time.
        while let Some(&(d, conn)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            match self.conns.get(&conn).map(|c| &c.phase) {
                Some(Phase::Opening { .. }) => self.fail_conn(now, conn),
                Some(Phase::Accepted) => self.close(now, conn),
                _ => {}
            }
        }
        // Request watchers.
        let due: Vec<InfoHash> =
            self.torrents.iter().filter(|(_, t)| t.dispatcher.next_watch() <= now).map(|(h, _)| *h).collect();
        for h in due {
            let mut fx = std::mem::take(&mut self.fx);
            if let Some(t) = self.torrents.get_mut(&h) {
                t.dispatcher.handle_watch(now, &mut self.rng, &mut fx);
            }
            self.apply(now, h, &mut fx);
            self.fx = fx;
        }
        // BitTorrent rechokes.
        let due: Vec<InfoHash> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.dispatcher.next_rechoke().is_some_and(|r| r <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let mut fx = std::mem::take(&mut self.fx);
            if let Some(t) = self.torrents.get_mut(&h) {
                t.dispatcher.handle_rechoke(now, &mut self.rng, &mut fx);
            }
            self.apply(now, h, &mut fx);
            self.fx = fx;
        }
        if !self.config.disable_preemption && self.next_preemption <= now {
            self.next_preemption = now + self.config.preemption_interval();
            self.preempt(now);
        }
    }

    /// Kraken's `preemptionTickEvent`: close idle and old connections, drop idle torrents.
    fn preempt(&mut self, now: Instant) {
        let (tti, ttl) = (self.config.conn_tti(), self.config.conn_ttl());
        let mut to_close = Vec::new();
        for (id, c) in &self.conns {
            let Phase::Active { h, peer } = c.phase else { continue };
            let progress = self.torrents.get(&h).and_then(|t| t.dispatcher.last_progress(&peer));
            let last = progress.map_or(c.opened_at, |p| p.max(c.opened_at));
            if now - last > tti || now - c.opened_at > ttl {
                to_close.push(*id);
            }
        }
        for conn in to_close {
            self.close(now, conn);
        }
        let (seeder_tti, leecher_tti) = (self.config.seeder_tti(), self.config.leecher_tti());
        let from_creation = self.config.quirks.seeder_tti_from_creation;
        let mut failed = Vec::new();
        for (h, t) in &mut self.torrents {
            let d = &t.dispatcher;
            if d.is_complete() {
                let last_read = if from_creation { d.created_at } else { d.last_read };
                // Kraken drops the control but its orphaned dispatcher keeps serving active
                // connections; shoal keeps the control until they are gone, which serves the same.
                if now - last_read >= seeder_tti && d.num_peers() == 0 {
                    t.dormant = true;
                }
            } else if now - d.last_write >= leecher_tti {
                failed.push(*h);
            }
        }
        for h in failed {
            let secs = leecher_tti.as_secs();
            self.fail_torrent(now, h, DownloadError::LeecherTimeout(secs));
        }
    }
}
