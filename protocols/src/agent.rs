//! The agent: the P2P scheduler of every host, which leeches and seeds, announces to trackers and
//! fetches metainfo (reference/kraken.md §4, §7).
//!
//! Run loop, as for every node in this crate: after each `handle_*` call, drain [`Agent::poll_output`]
//! and [`Agent::poll_event`] until `None`, then call [`Agent::handle_timeout`] at
//! [`Agent::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::announce::{AnnounceError, AnnounceRequest, AnnounceResponse, MetaInfoReply};
use crate::bitfield::Bitfield;
use crate::config::SchedulerConfig;
use crate::message::Message;
use crate::metainfo::MetaInfo;
use crate::peer::dispatch::Dispatcher;
use crate::peer::picker::PickerFactory;
use crate::peer::{ConnId, DownloadError, Event, Output, Scheduler};
use crate::time::{Instant, ms};
use crate::types::{Digest, InfoHash, PeerId, PeerInfo};

mod dragonfly;

/// The announce queue (`announcequeue/queue.go`): a FIFO of torrents ready to announce plus the set
/// whose announce is in flight.
#[derive(Debug, Default)]
struct AnnounceQueue {
    ready: VecDeque<InfoHash>,
    pending: BTreeSet<InfoHash>,
}

impl AnnounceQueue {
    fn add(&mut self, h: InfoHash) {
        if !self.ready.contains(&h) && !self.pending.contains(&h) {
            self.ready.push_back(h);
        }
    }

    fn next(&mut self) -> Option<InfoHash> {
        let h = self.ready.pop_front()?;
        self.pending.insert(h);
        Some(h)
    }

    /// Back of the queue, if its announce was in flight.
    fn ready(&mut self, h: InfoHash) {
        if self.pending.remove(&h) {
            self.ready.push_back(h);
        }
    }

    fn eject(&mut self, h: &InfoHash) {
        self.pending.remove(h);
        self.ready.retain(|x| x != h);
    }
}

#[derive(Debug)]
struct InFlightAnnounce {
    h: InfoHash,
    request: AnnounceRequest,
    /// Trackers for this digest in ring order, and which one this attempt went to.
    trackers: Vec<SocketAddr>,
    attempt: usize,
    /// Whether the announce queue is waiting for this answer (a tick's announce, not an immediate one).
    from_queue: bool,
    /// Kraken's HTTP client gives up after this; the answer is then a network error.
    deadline: Instant,
}

#[derive(Debug)]
struct MetaInfoFetch {
    namespace: String,
    started: Instant,
    trackers: Vec<SocketAddr>,
    attempt: usize,
    /// The next wait after a 202.
    backoff: Duration,
    /// Set while waiting to poll again after a 202; `None` while a request is in flight.
    retry_at: Option<Instant>,
    request: u64,
    /// When the request in flight times out (Kraken's 10 s per request).
    deadline: Instant,
}

/// An agent's identity and collaborators.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The P2P scheduler's configuration ([`SchedulerConfig::agent_base_yaml`] is Kraken's shipped agent).
    pub scheduler: SchedulerConfig,
    /// Every tracker; each digest is routed to them in rendezvous order.
    pub trackers: Vec<SocketAddr>,
}

/// A host's agent.
#[derive(Debug)]
pub struct Agent {
    sched: Scheduler,
    /// The trackers on a rendezvous ring keyed by digest.
    ring: crate::hrw::Ring,
    queue: AnnounceQueue,
    /// The announce ticker: one torrent per tick, rescheduled with the latest tracker interval.
    next_tick: Instant,
    interval: Duration,
    next_request: u64,
    announces: BTreeMap<u64, InFlightAnnounce>,
    fetches: BTreeMap<Digest, MetaInfoFetch>,
    /// Set by [`Agent::with_dragonfly`]: the Dragonfly client replaces Kraken's announce queue.
    dragonfly: Option<dragonfly::DfAgent>,
}

impl Agent {
    /// An agent listening on `addr`; its peer id is Kraken's `addr_hash` of it.
    pub fn new(now: Instant, config: AgentConfig, addr: SocketAddr, seed: u64) -> Self {
        let me = PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: false, complete: false };
        let interval = ms(config.scheduler.announcer.default_interval_ms);
        Agent {
            sched: Scheduler::new(now, config.scheduler, me, seed),
            ring: crate::hrw::Ring::new(config.trackers.iter().map(|a| a.to_string()), config.trackers.len()),
            queue: AnnounceQueue::default(),
            next_tick: now + interval,
            interval,
            next_request: 0,
            announces: BTreeMap::new(),
            fetches: BTreeMap::new(),
            dragonfly: None,
        }
    }

    /// Replaces the piece picker of every torrent started from now on (Kraken's policies: the
    /// BitTorrent policy installs its own picker over it, and Dragonfly's client picks from its
    /// parents). The factory receives the configured `dispatch.piece_request_policy`.
    pub fn set_picker_factory(&mut self, factory: PickerFactory) -> &mut Self {
        self.sched.picker_factory = Some(crate::peer::FactoryHook(factory));
        self
    }

    /// This agent's peer id: Kraken's `addr_hash` of its listening address.
    pub fn peer_id(&self) -> PeerId {
        self.sched.me.peer_id
    }

    /// The address this agent listens on.
    pub fn addr(&self) -> SocketAddr {
        self.sched.me.addr
    }

    /// The scheduler configuration in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.sched.config
    }

    /// Pieces held of a torrent, by digest.
    pub fn bitfield(&self, digest: &Digest) -> Option<&Bitfield> {
        self.torrent(digest).map(|d| d.bitfield())
    }

    /// True if the agent holds every piece of `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.torrent(digest).is_some_and(|d| d.is_complete())
    }

    /// The dispatcher of a torrent (for inspection in tests and drivers).
    pub fn dispatcher(&self, digest: &Digest) -> Option<&Dispatcher> {
        self.torrent(digest)
    }

    fn torrent(&self, digest: &Digest) -> Option<&Dispatcher> {
        self.sched.torrents.values().map(|t| &t.dispatcher).find(|d| d.metainfo().digest() == *digest)
    }

    /// Open connections (any phase).
    pub fn num_conns(&self) -> usize {
        self.sched.num_conns()
    }

    /// Active connections of a torrent.
    pub fn num_active(&self, h: &InfoHash) -> usize {
        self.sched.state.num_active(h)
    }

    /// Whether (torrent, peer) is blacklisted now.
    pub fn is_blacklisted(&self, now: Instant, h: &InfoHash, peer: &PeerId) -> bool {
        self.sched.state.is_blacklisted(now, h, peer)
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Trackers for a digest in the order the agent tries them. shoal routes by the digest's shard,
    /// as Kraken's client-side ring does, so every announce for a blob reaches the same tracker.
    fn tracker_order(&self, digest: &Digest) -> Vec<SocketAddr> {
        // Kraken's passive ring keeps every tracker as a candidate, best first. Labels are the
        // trackers' addresses; they were built from `trackers`, so they parse back.
        self.ring.ordered(digest).iter().filter_map(|l| l.parse().ok()).collect()
    }

    /// Asks for a blob (Kraken's `scheduler.Download`). Completion or failure arrives as an [`Event`].
    pub fn handle_download(&mut self, now: Instant, namespace: &str, digest: Digest) {
        if let Some(d) = self.torrent(&digest) {
            if d.is_complete() {
                let stats = d.stats.clone();
                self.sched.events.push_back(Event::DownloadComplete { digest, stats });
            } else {
                // Kraken's newTorrentEvent announces at once for a download joining a torrent.
                let h = d.metainfo().info_hash();
                self.announce(now, h, false);
            }
            return;
        }
        if self.fetches.contains_key(&digest) {
            return;
        }
        let trackers = self.tracker_order(&digest);
        if trackers.is_empty() {
            let stats = Default::default();
            self.sched.events.push_back(Event::DownloadFailed {
                digest,
                error: DownloadError::TrackersUnreachable,
                stats,
            });
            return;
        }
        let backoff = ms(self.sched.config.metainfo_client.backoff_initial_ms);
        let fetch = MetaInfoFetch {
            namespace: namespace.to_owned(),
            started: now,
            trackers,
            attempt: 0,
            backoff,
            retry_at: None,
            request: 0,
            deadline: now,
        };
        self.fetches.insert(digest, fetch);
        self.send_fetch(now, digest);
    }

    fn send_fetch(&mut self, now: Instant, digest: Digest) {
        let id = self.request_id();
        let timeout = ms(self.sched.config.metainfo_client.timeout_ms);
        let Some(f) = self.fetches.get_mut(&digest) else { return };
        f.request = id;
        f.retry_at = None;
        f.deadline = now + timeout;
        let tracker = f.trackers[f.attempt];
        self.sched.out.push_back(Output::FetchMetaInfo {
            id,
            tracker,
            namespace: f.namespace.clone(),
            digest,
        });
    }

    /// The answer to an [`Output::FetchMetaInfo`].
    pub fn handle_metainfo_response(&mut self, now: Instant, id: u64, reply: MetaInfoReply) {
        let Some((&digest, _)) = self.fetches.iter().find(|(_, f)| f.request == id && f.retry_at.is_none())
        else {
            return;
        };
        let cfg = self.sched.config.metainfo_client.clone();
        match reply {
            MetaInfoReply::Ready(mi) if mi.digest() == digest => {
                let f = self.fetches.remove(&digest).expect("found above");
                let d = self.sched.new_leecher(now, mi);
                self.start_torrent(now, f.namespace, d);
            }
            MetaInfoReply::Ready(_) | MetaInfoReply::NotFound => {
                self.fail_fetch(digest, DownloadError::MetaInfoNotFound);
            }
            MetaInfoReply::Pending => {
                let f = self.fetches.get_mut(&digest).expect("found above");
                // Exponential backoff with jitter, capped; give up after the total limit.
                let jitter = 1.0 + cfg.backoff_jitter * (self.sched.rng.random::<f64>() * 2.0 - 1.0);
                let wait = f.backoff.mul_f64(jitter.max(0.0));
                f.backoff = f.backoff.mul_f64(cfg.backoff_multiplier).min(ms(cfg.backoff_max_ms));
                if now + wait - f.started > ms(cfg.give_up_after_ms) {
                    self.fail_fetch(digest, DownloadError::MetaInfoTimeout(cfg.give_up_after_ms / 1000));
                } else {
                    // Kraken keeps polling the tracker that answered 202.
                    f.retry_at = Some(now + wait);
                }
            }
            MetaInfoReply::Unreachable => {
                let f = self.fetches.get_mut(&digest).expect("found above");
                f.attempt += 1;
                if f.attempt < f.trackers.len() {
                    self.send_fetch(now, digest);
                } else {
                    self.fail_fetch(digest, DownloadError::TrackersUnreachable);
                }
            }
        }
    }

    fn fail_fetch(&mut self, digest: Digest, error: DownloadError) {
        self.fetches.remove(&digest);
        self.sched.events.push_back(Event::DownloadFailed { digest, error, stats: Default::default() });
    }

    /// Starts leeching a torrent whose metainfo is known: into the announce queue, and announce now.
    fn start_torrent(&mut self, now: Instant, namespace: String, d: Dispatcher) {
        let h = d.metainfo().info_hash();
        let digest = d.metainfo().digest();
        let complete = d.is_complete();
        self.sched.add_torrent(namespace, d);
        if complete {
            let stats = Default::default();
            self.sched.events.push_back(Event::DownloadComplete { digest, stats });
            return;
        }
        if self.dragonfly.is_some() {
            self.df_start(now, h);
            return;
        }
        self.enqueue(now, h);
        self.announce(now, h, false);
    }

    /// Adds a complete blob this host already has (it seeds it; it does not announce until asked).
    pub fn add_seeded(&mut self, now: Instant, namespace: &str, metainfo: MetaInfo, blob: Option<Bytes>) {
        let h = metainfo.info_hash();
        let d = self.sched.new_seeder(now, metainfo, blob);
        self.sched.add_torrent(namespace.to_owned(), d);
        // A control created complete fires DispatcherComplete at once: it announces complete.
        self.sched.completed.push(h);
        self.after_input(now);
    }

    /// Starts downloading a torrent of which this host already has some pieces (simulated content),
    /// skipping the metainfo fetch.
    pub fn add_partial(&mut self, now: Instant, namespace: &str, metainfo: MetaInfo, have: Bitfield) {
        let d = self.sched.new_partial(now, metainfo, have);
        self.start_torrent(now, namespace.to_owned(), d);
    }

    fn enqueue(&mut self, now: Instant, h: InfoHash) {
        let was_idle = self.queue.ready.is_empty();
        self.queue.add(h);
        self.catch_up_ticker(now, was_idle);
    }

    /// The ticker runs all the time in Kraken; while the queue is empty its ticks do nothing, so shoal
    /// skips them and, when work arrives, moves the next tick to where the ticker would be.
    fn catch_up_ticker(&mut self, now: Instant, was_idle: bool) {
        if was_idle && self.next_tick <= now {
            let interval = self.interval.as_nanos().max(1) as u64;
            let behind = now.as_nanos() - self.next_tick.as_nanos();
            let ticks = behind / interval + 1;
            self.next_tick = Instant::from_nanos(self.next_tick.as_nanos() + ticks * interval);
        }
    }

    fn announce(&mut self, now: Instant, h: InfoHash, from_queue: bool) {
        let Some(t) = self.sched.torrents.get(&h) else {
            if from_queue {
                self.queue.eject(&h);
            }
            return;
        };
        let digest = t.dispatcher.metainfo().digest();
        let mut peer = self.sched.me.clone();
        peer.complete = t.dispatcher.is_complete();
        let mut request = AnnounceRequest { digest, info_hash: h, peer, dragonfly: None };
        request.dragonfly = self.df_build_report(now, h);
        let trackers = self.tracker_order(&digest);
        if trackers.is_empty() {
            return;
        }
        let id = self.request_id();
        let tracker = trackers[0];
        self.sched.out.push_back(Output::Announce { id, tracker, request: request.clone() });
        let deadline = now + ms(self.sched.config.announcer.timeout_ms);
        self.announces
            .insert(id, InFlightAnnounce { h, request, trackers, attempt: 0, from_queue, deadline });
    }

    /// The answer to an [`Output::Announce`].
    pub fn handle_announce_response(
        &mut self,
        now: Instant,
        id: u64,
        result: Result<AnnounceResponse, AnnounceError>,
    ) {
        let Some(mut a) = self.announces.remove(&id) else { return };
        let resp = match result {
            Ok(resp) => resp,
            Err(AnnounceError::Unreachable) if a.attempt + 1 < a.trackers.len() => {
                // Network errors move on to the next tracker in ring order.
                a.attempt += 1;
                a.deadline = now + ms(self.sched.config.announcer.timeout_ms);
                let id = self.request_id();
                let tracker = a.trackers[a.attempt];
                self.sched.out.push_back(Output::Announce { id, tracker, request: a.request.clone() });
                self.announces.insert(id, a);
                return;
            }
            Err(_) => {
                if a.from_queue {
                    self.ready(now, a.h);
                }
                self.df_answer(now, a.h, None);
                return;
            }
        };
        if self.dragonfly.is_some() {
            self.df_answer(now, a.h, Some(resp));
            return;
        }
        let interval = resp.interval();
        let max = ms(self.sched.config.announcer.max_interval_ms);
        self.interval = if interval.is_zero() || interval > max {
            ms(self.sched.config.announcer.default_interval_ms)
        } else {
            interval
        };
        if a.from_queue {
            self.ready(now, a.h);
        }
        let h = a.h;
        let Some(t) = self.sched.torrents.get(&h) else { return };
        if t.dispatcher.is_complete() {
            return;
        }
        for peer in &resp.peers {
            if peer.peer_id == self.sched.me.peer_id
                || self.sched.state.is_blacklisted(now, &h, &peer.peer_id)
            {
                continue;
            }
            // BitTorrent stops initiating connections at `max_initiate`.
            if let Some(bt) = &self.sched.config.bittorrent
                && self.sched.state.num_open(&h) >= bt.max_initiate
            {
                break;
            }
            match self.sched.dial(now, h, peer) {
                Ok(()) => {}
                Err(crate::peer::connstate::AdmitError::TorrentAtCapacity)
                | Err(crate::peer::connstate::AdmitError::HostAtCapacity) => break,
                Err(_) => continue,
            }
        }
    }

    fn ready(&mut self, now: Instant, h: InfoHash) {
        let was_idle = self.queue.ready.is_empty();
        self.queue.ready(h);
        self.catch_up_ticker(now, was_idle);
    }

    /// A connection arrived from `remote`.
    pub fn handle_accept(&mut self, now: Instant, _remote: SocketAddr) -> ConnId {
        self.sched.accept(now)
    }

    /// A message arrived on a connection.
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        if let Some(unknown) = self.sched.handle_message(now, conn, msg) {
            // Agents serve only torrents they have: there is no archive beyond the controls.
            self.sched.refuse(now, conn, &unknown.handshake);
        }
        self.after_input(now);
    }

    /// A connection closed from the other side, or a dial failed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.sched.handle_closed(now, conn);
        self.after_input(now);
    }

    /// The next time [`Agent::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.sched.poll_timeout();
        if !self.queue.ready.is_empty() {
            t = t.min(self.next_tick);
        }
        for f in self.fetches.values() {
            t = t.min(f.retry_at.unwrap_or(f.deadline));
        }
        for a in self.announces.values() {
            t = t.min(a.deadline);
        }
        t.min(self.df_timeout())
    }

    /// Runs what is due at `now`: handshake deadlines, request watchers, rechokes and preemption,
    /// metainfo polls and request timeouts, announce timeouts, the announce tick and Dragonfly reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sched.handle_timeout(now);
        let due: Vec<Digest> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.retry_at.is_some_and(|r| r <= now))
            .map(|(d, _)| *d)
            .collect();
        for digest in due {
            self.send_fetch(now, digest);
        }
        // Requests nobody answered in time count as network errors.
        let lost: Vec<u64> = self
            .fetches
            .values()
            .filter(|f| f.retry_at.is_none() && f.deadline <= now)
            .map(|f| f.request)
            .collect();
        for id in lost {
            self.handle_metainfo_response(now, id, MetaInfoReply::Unreachable);
        }
        let lost: Vec<u64> =
            self.announces.iter().filter(|(_, a)| a.deadline <= now).map(|(id, _)| *id).collect();
        for id in lost {
            self.handle_announce_response(now, id, Err(AnnounceError::Unreachable));
        }
        if !self.queue.ready.is_empty() && self.next_tick <= now {
            self.next_tick = now + self.interval;
            self.tick(now);
        }
        self.df_handle_timeout(now);
        self.after_input(now);
    }

    /// Kraken's `announceTickEvent`: announce exactly one torrent, skipping saturated ones.
    fn tick(&mut self, now: Instant) {
        let mut skipped = Vec::new();
        let one = self.sched.config.quirks.announce_one_torrent_per_tick;
        while let Some(h) = self.queue.next() {
            if self.sched.state.saturated(&h) {
                skipped.push(h);
                continue;
            }
            self.announce(now, h, true);
            if one {
                break;
            }
        }
        for h in skipped {
            self.ready(now, h);
        }
    }

    /// Follows up on what the scheduler did: completed torrents leave the queue and announce complete.
    fn after_input(&mut self, now: Instant) {
        for h in std::mem::take(&mut self.sched.removed) {
            self.queue.eject(&h);
        }
        for h in std::mem::take(&mut self.sched.completed) {
            self.queue.eject(&h);
            if self.dragonfly.is_some() {
                // A finished peer keeps reporting its load: it is a parent now.
                self.df_start(now, h);
                continue;
            }
            self.announce(now, h, false);
        }
    }

    /// The next thing the driver must do, in the order produced.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.sched.out.pop_front()
    }

    /// The next download completion or failure, in the order produced.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.sched.events.pop_front()
    }
}
