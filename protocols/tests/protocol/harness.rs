//! A small in-memory network with explicit time (quinn's `Pair`, grown to a swarm): agents, origins
//! and a tracker exchange messages through one event queue ordered by (time, sequence). Every node
//! sends payloads one at a time at a fixed upload rate, every message pays a fixed latency and each
//! connection delivers in order — all these tests need; the flow-level network model of the
//! discrete-event engine lives in shoal-sim. Set `HARNESS_TRACE=1` to print every node output.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_protocols::agent::{Agent, AgentConfig};
use shoal_protocols::announce::{AnnounceError, AnnounceRequest, AnnounceResponse, MetaInfoReply};
use shoal_protocols::config::{OriginConfig, SchedulerConfig, TrackerConfig};
use shoal_protocols::origin::{BlobContent, Origin};
use shoal_protocols::peer::{ConnId, Event, Output};
use shoal_protocols::policy::dragonfly::DragonflyConfig;
use shoal_protocols::tracker::Tracker;
use shoal_protocols::{Digest, Instant, Message, MetaInfo, Payload, PeerInfo};

pub const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Agent(usize),
    Origin(usize),
}

#[derive(Debug)]
enum Delivery {
    Connect { from: (Node, ConnId), to: Node },
    Message { to: (Node, ConnId), msg: Message },
    Closed { from: Option<(Node, ConnId)>, to: (Node, ConnId) },
    Announce { agent: usize, id: u64, request: AnnounceRequest },
    MetaInfo { agent: usize, id: u64, digest: Digest },
    Timer { node: Node },
}

/// One direction of a connection.
#[derive(Debug)]
struct Link {
    remote: Option<(Node, ConnId)>,
    busy_until: Instant,
    /// Closed by this end: nothing more is sent, what was sent is still delivered, then the close.
    closed: bool,
}

/// How the tracker answers announces.
pub type TrackerFn = Box<dyn FnMut(Instant, &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError>>;

/// What a test may do to messages in flight.
pub type Tamper = Box<dyn FnMut(Node, Node, &mut Message) -> bool>;

pub struct Swarm {
    pub now: Instant,
    pub latency: Duration,
    /// Upload bytes per second of every node.
    pub rate: u64,
    pub agents: Vec<Agent>,
    pub origins: Vec<Origin>,
    pub tracker: TrackerFn,
    /// Called for every message sent; return false to drop it. May mutate it.
    pub tamper: Option<Tamper>,
    pub events: Vec<(Instant, usize, Event)>,
    /// Every message delivered: (time, from, to, message kind, piece index if any).
    pub log: Vec<(Instant, Node, Node, Message)>,
    pub keep_log: bool,
    addrs: BTreeMap<SocketAddr, Node>,
    links: BTreeMap<(Node, ConnId), Link>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pending: BTreeMap<usize, Delivery>,
    seq: u64,
    timers: BTreeMap<Node, Instant>,
    uplink: BTreeMap<Node, Instant>,
    pub steps: u64,
    /// Every dial: (time, dialler, address).
    pub dials: Vec<(Instant, Node, SocketAddr)>,
}

pub fn agent_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 7000))
}

pub fn origin_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 2, 0, i as u8 + 1], 9000))
}

pub fn tracker_addr() -> SocketAddr {
    SocketAddr::from(([127, 3, 0, 1], 8000))
}

impl Swarm {
    pub fn new(tracker: TrackerFn) -> Self {
        Swarm {
            now: Instant::ZERO,
            latency: Duration::from_millis(1),
            rate: 100 * MIB,
            agents: Vec::new(),
            origins: Vec::new(),
            tracker,
            tamper: None,
            events: Vec::new(),
            log: Vec::new(),
            keep_log: false,
            addrs: BTreeMap::new(),
            links: BTreeMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            timers: BTreeMap::new(),
            uplink: BTreeMap::new(),
            steps: 0,
            dials: Vec::new(),
        }
    }

    pub fn add_agent(&mut self, config: SchedulerConfig, seed: u64) -> usize {
        let i = self.agents.len();
        let cfg = AgentConfig { scheduler: config, trackers: vec![tracker_addr()] };
        self.agents.push(Agent::new(self.now, cfg, agent_addr(i), seed));
        self.addrs.insert(agent_addr(i), Node::Agent(i));
        self.arm(Node::Agent(i));
        i
    }

    /// An agent running the Dragonfly client.
    pub fn add_dragonfly_agent(&mut self, config: SchedulerConfig, df: DragonflyConfig, seed: u64) -> usize {
        let i = self.agents.len();
        let cfg = AgentConfig { scheduler: config, trackers: vec![tracker_addr()] };
        self.agents.push(Agent::with_dragonfly(self.now, cfg, agent_addr(i), seed, df));
        self.addrs.insert(agent_addr(i), Node::Agent(i));
        self.arm(Node::Agent(i));
        i
    }

    /// An origin whose scheduler is adapted to Dragonfly's seed upload slots.
    pub fn add_dragonfly_origin(
        &mut self,
        config: OriginConfig,
        df: &DragonflyConfig,
        blobs: BTreeMap<Digest, BlobContent>,
        seed: u64,
    ) -> usize {
        let i = self.origins.len();
        let sched = df.origin_scheduler(SchedulerConfig::origin_base_yaml());
        self.origins.push(Origin::new(self.now, sched, config, origin_addr(i), blobs, seed));
        self.addrs.insert(origin_addr(i), Node::Origin(i));
        self.arm(Node::Origin(i));
        i
    }

    pub fn add_origin(
        &mut self,
        config: OriginConfig,
        blobs: BTreeMap<Digest, BlobContent>,
        seed: u64,
    ) -> usize {
        self.add_origin_with(SchedulerConfig::origin_base_yaml(), config, blobs, seed)
    }

    /// An origin with its own scheduler configuration.
    pub fn add_origin_with(
        &mut self,
        sched: SchedulerConfig,
        config: OriginConfig,
        blobs: BTreeMap<Digest, BlobContent>,
        seed: u64,
    ) -> usize {
        let i = self.origins.len();
        self.origins.push(Origin::new(self.now, sched, config, origin_addr(i), blobs, seed));
        self.addrs.insert(origin_addr(i), Node::Origin(i));
        self.arm(Node::Origin(i));
        i
    }

    pub fn origin_infos(&self) -> Vec<PeerInfo> {
        self.origins.iter().map(Origin::peer_info).collect()
    }

    fn push(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        let key = self.seq as usize;
        self.pending.insert(key, d);
        self.queue.push(Reverse((at, self.seq, key)));
    }

    /// Re-reads a node's next deadline and schedules a timer event for it.
    fn arm(&mut self, node: Node) {
        let t = match node {
            Node::Agent(i) => self.agents[i].poll_timeout(),
            Node::Origin(i) => self.origins[i].poll_timeout(),
        };
        if t == Instant::FAR_FUTURE {
            return;
        }
        let t = t.max(self.now);
        if self.timers.get(&node) == Some(&t) {
            return;
        }
        self.timers.insert(node, t);
        self.push(t, Delivery::Timer { node });
    }

    fn drain(&mut self, node: Node) {
        loop {
            let out = match node {
                Node::Agent(i) => self.agents[i].poll_output(),
                Node::Origin(i) => self.origins[i].poll_output(),
            };
            let Some(out) = out else { break };
            self.output(node, out);
        }
        if let Node::Agent(i) = node {
            while let Some(e) = self.agents[i].poll_event() {
                self.events.push((self.now, i, e));
            }
        }
        self.arm(node);
    }

    fn output(&mut self, node: Node, out: Output) {
        if std::env::var("HARNESS_TRACE").is_ok() {
            eprintln!("{} {node:?} {out:?}", self.now);
        }
        let now = self.now;
        match out {
            Output::Dial { conn, addr } => {
                self.dials.push((now, node, addr));
                let establish = now + self.latency;
                self.links.insert((node, conn), Link { remote: None, busy_until: establish, closed: false });
                match self.addrs.get(&addr) {
                    Some(&to) => self.push(establish, Delivery::Connect { from: (node, conn), to }),
                    None => self.push(establish, Delivery::Closed { from: None, to: (node, conn) }),
                }
            }
            Output::Send { conn, mut message } => {
                let Some(link) = self.links.get(&(node, conn)).filter(|l| !l.closed) else { return };
                let to = link.remote.map(|r| r.0);
                if let (Some(tamper), Some(to)) = (self.tamper.as_mut(), to)
                    && !tamper(node, to, &mut message)
                {
                    return;
                }
                // Payloads queue on the sender's uplink, one at a time at `rate`; every message then
                // pays the latency, and a connection delivers in order.
                let arrive = match &message {
                    Message::PiecePayload { payload, .. } => {
                        let up = self.uplink.entry(node).or_insert(Instant::ZERO);
                        let start = (*up).max(now);
                        *up = start + Duration::from_nanos(payload.len() * 1_000_000_000 / self.rate);
                        *up + self.latency
                    }
                    _ => now + self.latency,
                };
                let link = self.links.get_mut(&(node, conn)).expect("checked above");
                let at = arrive.max(link.busy_until);
                link.busy_until = at;
                // Addressed to our own end: resolved to the remote end at delivery.
                self.push(at, Delivery::Message { to: (node, conn), msg: message });
            }
            Output::Close { conn } => {
                let Some(link) = self.links.get_mut(&(node, conn)) else { return };
                link.closed = true;
                // Like TCP's FIN: after everything already sent on the connection.
                if let Some(remote) = link.remote {
                    let at = link.busy_until.max(now + self.latency);
                    self.push(at, Delivery::Closed { from: Some((node, conn)), to: remote });
                }
            }
            Output::Announce { id, request, .. } => {
                let Node::Agent(agent) = node else { panic!("origins never announce") };
                self.push(now + self.latency, Delivery::Announce { agent, id, request });
            }
            Output::FetchMetaInfo { id, digest, .. } => {
                let Node::Agent(agent) = node else { panic!("origins never fetch metainfo") };
                self.push(now + self.latency, Delivery::MetaInfo { agent, id, digest });
            }
        }
    }

    /// Runs until `done` holds, nothing is left to do, or `limit` simulated time passes. Returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Swarm) -> bool) -> bool {
        let deadline = self.now + limit;
        // Outputs of calls the test made directly on nodes.
        for i in 0..self.agents.len() {
            self.drain(Node::Agent(i));
        }
        for i in 0..self.origins.len() {
            self.drain(Node::Origin(i));
        }
        while !done(self) {
            let Some(Reverse((at, _, key))) = self.queue.pop() else { return false };
            if at > deadline {
                self.queue.push(Reverse((at, 0, key)));
                return false;
            }
            self.now = at;
            self.steps += 1;
            assert!(self.steps < 50_000_000, "runaway simulation");
            let d = self.pending.remove(&key).expect("every queued key is pending");
            self.deliver(d);
        }
        true
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Connect { from, to } => {
                if self.links.get(&from).is_none_or(|l| l.closed) {
                    return;
                }
                let remote_addr = match from.0 {
                    Node::Agent(i) => agent_addr(i),
                    Node::Origin(i) => origin_addr(i),
                };
                let conn = match to {
                    Node::Agent(i) => self.agents[i].handle_accept(now, remote_addr),
                    Node::Origin(i) => self.origins[i].handle_accept(now, remote_addr),
                };
                self.links.insert((to, conn), Link { remote: Some(from), busy_until: now, closed: false });
                self.links.get_mut(&from).expect("checked above").remote = Some((to, conn));
                self.arm(to);
            }
            Delivery::Message { to: (sender, sconn), msg } => {
                let Some(remote) = self.links.get(&(sender, sconn)).and_then(|l| l.remote) else { return };
                if self.links.get(&remote).is_none_or(|l| l.closed) {
                    return;
                }
                if self.keep_log {
                    self.log.push((now, sender, remote.0, msg.clone()));
                }
                match remote.0 {
                    Node::Agent(i) => self.agents[i].handle_message(now, remote.1, msg),
                    Node::Origin(i) => self.origins[i].handle_message(now, remote.1, msg),
                }
                self.drain(remote.0);
            }
            Delivery::Closed { from, to } => {
                if let Some(from) = from {
                    self.links.remove(&from);
                }
                // An end closed by its own node has been forgotten by it already.
                if self.links.remove(&to).is_none_or(|l| l.closed) {
                    return;
                }
                match to.0 {
                    Node::Agent(i) => self.agents[i].handle_closed(now, to.1),
                    Node::Origin(i) => self.origins[i].handle_closed(now, to.1),
                }
                self.drain(to.0);
            }
            Delivery::Announce { agent, id, request } => {
                let result = (self.tracker)(now, &request);
                self.agents[agent].handle_announce_response(now, id, result);
                self.drain(Node::Agent(agent));
            }
            Delivery::MetaInfo { agent, id, digest } => {
                let mut reply = MetaInfoReply::NotFound;
                for o in &mut self.origins {
                    match o.handle_metainfo_request(now, "ns", digest) {
                        MetaInfoReply::NotFound => continue,
                        r => {
                            reply = r;
                            break;
                        }
                    }
                }
                for i in 0..self.origins.len() {
                    self.drain(Node::Origin(i));
                }
                self.agents[agent].handle_metainfo_response(now, id, reply);
                self.drain(Node::Agent(agent));
            }
            Delivery::Timer { node } => {
                if self.timers.get(&node) != Some(&now) {
                    return;
                }
                self.timers.remove(&node);
                match node {
                    Node::Agent(i) => self.agents[i].handle_timeout(now),
                    Node::Origin(i) => self.origins[i].handle_timeout(now),
                }
                self.drain(node);
            }
        }
    }

    /// Downloads completed so far, per agent.
    pub fn completed(&self) -> Vec<usize> {
        self.events
            .iter()
            .filter_map(|(_, i, e)| matches!(e, Event::DownloadComplete { .. }).then_some(*i))
            .collect()
    }

    pub fn failed(&self) -> Vec<(usize, String)> {
        self.events
            .iter()
            .filter_map(|(_, i, e)| match e {
                Event::DownloadFailed { error, .. } => Some((*i, error.to_string())),
                _ => None,
            })
            .collect()
    }
}

/// A synthetic blob and its metainfo at `piece_length`.
pub fn blob(name: &str, size: u64, piece_length: u64) -> (Digest, MetaInfo) {
    let digest = Digest::of(name.as_bytes());
    (digest, MetaInfo::synthetic(digest, size, piece_length).unwrap())
}

/// Kraken's tracker (shoal's implementation) behind the harness's announce hook.
pub fn real_tracker(origins: Vec<PeerInfo>, config: TrackerConfig, seed: u64) -> TrackerFn {
    let max_replica = origins.len().max(1);
    let mut t = Tracker::new(config, origins, max_replica, seed);
    Box::new(move |now, req| t.handle_announce(now, req))
}

/// Shoal's tracker as Dragonfly's scheduler behind the harness's announce hook.
pub fn dragonfly_tracker(origins: Vec<PeerInfo>, df: DragonflyConfig, seed: u64) -> TrackerFn {
    let max_replica = origins.len().max(1);
    let mut t = Tracker::new(TrackerConfig::default(), origins, max_replica, seed);
    t.set_dragonfly(df);
    Box::new(move |now, req| t.handle_announce(now, req))
}

/// Flips the CRC tag of every payload `from` sends.
pub fn corrupt_from(bad: Node) -> Tamper {
    Box::new(move |from, _to, msg| {
        if from == bad
            && let Message::PiecePayload { payload: Payload::Tagged { tag, .. }, .. } = msg
        {
            *tag ^= 1;
        }
        true
    })
}
