//! The discrete-event engine (DESIGN.md §3): one event queue ordered by (time, sequence) drives the
//! protocol state machines directly; piece payloads move through the flow-level network model as
//! lengths with content tags; everything else pays latency.
//!
//! Transport: each connection direction is a FIFO, like a TCP stream. A payload occupies its
//! direction while its flow is in the network; messages sent behind it wait, then every message is
//! delivered one latency after it leaves. A close is delivered after everything already sent (a
//! FIN); the closing side's incoming flow is cancelled, since nobody will read it.
//!
//! Connection set-up costs what TCP's does: a dial is accepted one round trip after it starts (SYN
//! out, SYN-ACK back), and only then does the dialer send, so its first message arrives a round
//! trip and a half after the dial. HTTP calls (announce, metainfo, the tracker's metainfo fetch
//! from an origin) run on kept-alive connections like Kraken's Go clients: a call that finds an
//! idle connection to its server pays one latency each way; otherwise it first pays the connect
//! round trip (`HttpPool`).

mod conns;
mod faults;
mod output;
mod world;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocols::announce::{AnnounceError, AnnounceRequest, AnnounceResponse, MetaInfoReply};
use shoal_protocols::peer::{ConnId, Event as NodeEvent, Output};
use shoal_protocols::tracker::TrackerOutput;
use shoal_protocols::{Digest, Instant, Message};

pub use world::World;

pub use crate::build::PolicyHooks;
use crate::build::{self, derive_seed};
use crate::net::{FlowId, Network, Solver};
use crate::output::{Metrics, RackSample, Source};
use crate::scenario::Scenario;

/// Lookup-only maps (never iterated where order reaches output), keyed by small integers:
/// rustc-hash's Fx hash, deterministic and much cheaper than SipHash on the hot path.
type Map<K, V> = rustc_hash::FxHashMap<K, V>;

/// One end of a connection: network node and the node's connection handle.
type End = (u32, ConnId);

/// Bits of a flow token that hold the connection id; the node is above them.
const TOKEN_CONN_BITS: u32 = 40;

/// The token of a payload flow names the connection direction it carries, so a completion finds
/// its connection without a map. A direction has one flow at a time, and a flow that ends
/// otherwise than by completing is cancelled in the network first.
fn flow_token((node, conn): End) -> u64 {
    // Nodes are fewer than 2^24 (checked in `Engine::new`); a node opens far fewer than 2^40
    // connections in any run that fits in memory.
    assert!(conn.0 < 1 << TOKEN_CONN_BITS, "connection id {} overflows a flow token", conn.0);
    (u64::from(node) << TOKEN_CONN_BITS) | conn.0
}

fn token_end(token: u64) -> End {
    ((token >> TOKEN_CONN_BITS) as u32, ConnId(token & ((1 << TOKEN_CONN_BITS) - 1)))
}

/// Queue entries are moved on every heap operation: the frequent kinds are kept small and the
/// control-plane ones, rare and large, are boxed.
#[derive(Debug)]
enum Event {
    Control(Box<Control>),
    Timer {
        node: u32,
    },
    Connect {
        from: End,
        to: u32,
    },
    Deliver {
        to: End,
        msg: Message,
    },
    Closed {
        to: End,
    },
    Pull {
        host: u32,
        image: u32,
    },
    /// Samples rack link utilisation at the end of a time-series interval (racks only).
    Sample,
}

#[derive(Debug)]
enum Control {
    Announce {
        agent: u32,
        id: u64,
        tracker: usize,
        request: AnnounceRequest,
    },
    AnnounceReply {
        agent: u32,
        id: u64,
        /// The tracker replying (for `[[faults]]` on its link).
        tracker: usize,
        result: Result<AnnounceResponse, AnnounceError>,
    },
    MetaInfoRequest {
        agent: u32,
        id: u64,
        tracker: usize,
        namespace: String,
        digest: Digest,
    },
    OriginMetaInfo {
        tracker: usize,
        origin: u32,
        namespace: String,
        digest: Digest,
    },
    OriginMetaInfoReply {
        tracker: usize,
        origin: u32,
        namespace: String,
        digest: Digest,
        reply: MetaInfoReply,
    },
    MetaInfoReply {
        agent: u32,
        id: u64,
        /// The tracker replying (for `[[faults]]` on its link).
        tracker: usize,
        reply: MetaInfoReply,
    },
}

/// One end of an HTTP exchange: a network node (agent or origin) or a tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HttpEnd {
    Node(u32),
    Tracker(usize),
}

/// The idle kept-alive HTTP connections of every (client, server) pair, as Go's `http.Transport`
/// (which Kraken's clients use) keeps them: at most [`HttpPool::MAX_IDLE`] per pair, each reused
/// while it has been idle less than [`HttpPool::IDLE_TIMEOUT`]. Calls in flight hold their
/// connection; a call that finds none idle opens a new one. Lookups only, never iterated.
#[derive(Debug, Default)]
struct HttpPool {
    /// (client, server) → when each idle connection went idle.
    idle: Map<(HttpEnd, HttpEnd), Vec<Instant>>,
}

impl HttpPool {
    /// Go's `DefaultMaxIdleConnsPerHost`.
    const MAX_IDLE: usize = 2;
    /// Kraken's nginx (in front of trackers and origins) closes connections idle for 65 s
    /// (`keepalive_timeout 65`), before Go's client would (90 s).
    const IDLE_TIMEOUT: Duration = Duration::from_secs(65);

    /// Takes an idle connection from `client` to `server` for a call starting at `now`; `false`
    /// when the call must connect first.
    fn take(&mut self, client: HttpEnd, server: HttpEnd, now: Instant) -> bool {
        let Some(idle) = self.idle.get_mut(&(client, server)) else { return false };
        idle.retain(|&since| now < since + Self::IDLE_TIMEOUT);
        idle.pop().is_some()
    }

    /// Drops the idle connections of every pair with an end for which `gone` holds (a crashed or
    /// restarted node's connections are closed).
    fn forget(&mut self, gone: impl Fn(HttpEnd) -> bool) {
        self.idle.retain(|(client, server), _| !gone(*client) && !gone(*server));
    }

    /// A call's response reached its client at `now`: its connection is idle again.
    fn put(&mut self, client: HttpEnd, server: HttpEnd, now: Instant) {
        let idle = self.idle.entry((client, server)).or_default();
        idle.retain(|&since| now < since + Self::IDLE_TIMEOUT);
        if idle.len() < Self::MAX_IDLE {
            idle.push(now);
        }
    }
}

struct Queued {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The sending side of one connection direction: a FIFO, like a TCP stream.
#[derive(Debug, Default)]
struct Conn {
    remote: Option<End>,
    /// Sent before the connection was established.
    unsent: VecDeque<Message>,
    /// In the network, in order: every payload is a segment of `flow`; a control message waits
    /// behind the payload before it.
    in_flight: VecDeque<Message>,
    /// The flow carrying this direction's payloads, and its token.
    flow: Option<(FlowId, u64)>,
    /// Deliveries on this direction never go back in time (FIFO).
    last_delivery: Instant,
    /// Closed by its node: send what is queued, then the close.
    closing: bool,
    /// The blob this connection's torrent is, once a handshake names it.
    blob: Option<u32>,
}

/// Options of a run that are not part of the scenario.
pub struct RunOptions {
    /// Time-series interval.
    pub interval: Duration,
    pub solver: Solver,
    /// Called every so often with (simulated seconds, image pulls finished, image pulls in all).
    pub progress: Option<ProgressFn>,
    /// Stops the run early when set (checked every 4096 events); see [`Engine::interrupted`].
    pub stop: Option<crate::StopFlag>,
    /// Stops the run early after this many events (rounded up to a multiple of 4096), as `stop`
    /// does: for fuzzing and for bounded tests.
    pub max_events: Option<u64>,
    /// Policies substituted for the scenario's (none by default).
    pub hooks: PolicyHooks,
}

pub use crate::ProgressFn;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("interval", &self.interval)
            .field("solver", &self.solver)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            interval: Duration::from_millis(100),
            solver: Solver::default(),
            progress: None,
            stop: None,
            max_events: None,
            hooks: PolicyHooks::default(),
        }
    }
}

/// A discrete-event run of one scenario.
pub struct Engine<'s> {
    scenario: &'s Scenario,
    world: World,
    net: Network,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    conns: conns::Conns,
    /// The time each node's timer event is armed for.
    armed: Vec<Instant>,
    /// Tracker metainfo request id → (agent, agent's request id, tracker).
    metainfo_requests: Map<u64, (u32, u64, usize)>,
    next_request: u64,
    /// Kept-alive HTTP connections.
    http: HttpPool,
    pub metrics: Metrics,
    /// Latency jitter; seeded from the scenario.
    rng: ChaCha8Rng,
    events: u64,
    options: RunOptions,
    /// `[[faults]]`: the next to apply and which nodes are down.
    faults: faults::Faults,
    /// Stopped early by [`RunOptions::stop`].
    interrupted: bool,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("now", &self.now).field("events", &self.events).finish()
    }
}

impl<'s> Engine<'s> {
    pub fn new(scenario: &'s Scenario, options: RunOptions) -> Result<Self, String> {
        let faults = faults::Faults::new(scenario);
        let world = World::build(scenario, &options.hooks)?;
        let net = Network::new(&world.net.capacities(), options.solver);
        let nodes = world.agents.len() + world.origins.len();
        if nodes >= 1 << (64 - TOKEN_CONN_BITS) {
            return Err(format!(
                "{nodes} agents and origins: the discrete-event engine holds fewer than 2^24"
            ));
        }
        let mut e = Engine {
            scenario,
            net,
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            conns: conns::Conns::new(nodes),
            armed: vec![Instant::FAR_FUTURE; nodes],
            metainfo_requests: Map::default(),
            next_request: 0,
            http: HttpPool::default(),
            metrics: Metrics::new(world.agents.len(), options.interval),
            rng: ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, "network", 0)),
            world,
            events: 0,
            options,
            faults,
            interrupted: false,
        };
        for pull in &scenario.workload.pulls {
            let at = Instant::ZERO + pull.at;
            e.push(at, Event::Pull { host: pull.host as u32, image: pull.image as u32 });
        }
        for n in 0..nodes as u32 {
            e.arm(n);
        }
        if let Some(racks) = &scenario.topology.racks {
            e.metrics.racks = vec![(0.0, 0.0); racks.groups.len()];
            let at = Instant::ZERO + e.options.interval;
            e.push(at, Event::Sample);
        }
        Ok(e)
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn events_processed(&self) -> u64 {
        self.events
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, event }));
    }

    fn agents(&self) -> u32 {
        self.world.agents.len() as u32
    }

    fn latency(&mut self, a: u32, b: u32) -> Duration {
        let (pa, pb) = (self.world.places[a as usize], self.world.places[b as usize]);
        self.scenario.topology.latency_between(pa, pb) + self.jitter()
    }

    /// Latency between a network node and the trackers (outside every group).
    fn tracker_latency(&mut self, n: u32) -> Duration {
        self.scenario.topology.latency_between(self.world.places[n as usize], Default::default())
            + self.jitter()
    }

    /// How long an HTTP request from `client` to `server` takes to arrive, where `net` is the
    /// network node at the other end from the tracker: one latency on a kept-alive connection, or
    /// three (SYN, SYN-ACK, then the request) on a new one.
    fn http_request_delay(&mut self, client: HttpEnd, server: HttpEnd, net: u32) -> Duration {
        let legs = if self.http.take(client, server, self.now) { 1 } else { 3 };
        (0..legs).map(|_| self.tracker_latency(net)).sum()
    }

    fn jitter(&mut self) -> Duration {
        let j = self.scenario.topology.latency_jitter.as_nanos() as u64;
        if j == 0 { Duration::ZERO } else { Duration::from_nanos(self.rng.random_range(0..j)) }
    }

    /// True if the run was stopped early by [`RunOptions::stop`] or [`RunOptions::max_events`]: downloads that had not ended are
    /// unfinished in its outputs, and summary.json says `"interrupted": true`.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// Runs until every pull has finished or failed, or the scenario's time limit, or until
    /// [`RunOptions::stop`] is set.
    pub fn run(&mut self) {
        let limit = Instant::ZERO + self.scenario.max_sim_time;
        let total = self.scenario.workload.pulls.len();
        let s = self.scenario;
        tracing::info!(scenario = %s.name, seed = s.seed, hosts = s.topology.hosts.len(), "des run start");
        loop {
            let next_event = self.queue.peek().map(|q| q.0.at);
            let next_flow = self.net.next_completion();
            let next_fault = self.faults.next_at(self.scenario);
            let at = match (next_event, next_flow) {
                (None, None) => None,
                (Some(a), Some(b)) => Some(a.min(b)),
                (Some(a), None) | (None, Some(a)) => Some(a),
            };
            if let Some(f) = next_fault
                && f <= limit
                && at.is_none_or(|a| f <= a)
            {
                // A fault comes first, before the events of its own time.
                self.now = self.now.max(f);
                self.apply_fault();
                continue;
            }
            let Some(at) = at else { break };
            if at > limit {
                break;
            }
            self.now = at;
            self.events += 1;
            if next_flow == Some(at) && next_event.is_none_or(|e| e >= at) {
                while let Some(done) = self.net.pop_completed(at) {
                    self.flow_done(done.token);
                }
            } else {
                let Reverse(q) = self.queue.pop().expect("peeked above");
                self.handle(q.event);
            }
            if self.events.is_multiple_of(4096)
                && (crate::stopped(&self.options.stop)
                    || self.options.max_events.is_some_and(|m| self.events >= m))
            {
                self.interrupted = true;
                break;
            }
            if self.events.is_multiple_of(65_536) {
                let done = self.metrics.images.iter().filter(|i| i.finished()).count();
                let now = self.now.as_secs_f64();
                if let Some(p) = self.options.progress.as_mut() {
                    p(now, done, total);
                }
            }
            if self.metrics.pending_downloads == 0 && self.metrics.images.len() == total {
                break;
            }
        }
        tracing::info!(at = %self.now, events = self.events, "des run end");
    }

    fn handle(&mut self, event: Event) {
        let now = self.now;
        // A partitioned link drops what crosses it; a held one keeps it until `release`.
        let event = if self.faults.links_faulted() {
            let Some(event) = self.across_links(event) else { return };
            event
        } else {
            event
        };
        match event {
            Event::Timer { node } => {
                if self.armed[node as usize] != now {
                    return;
                }
                self.armed[node as usize] = Instant::FAR_FUTURE;
                if node < self.agents() {
                    self.world.agents[node as usize].handle_timeout(now);
                } else {
                    let o = (node - self.agents()) as usize;
                    self.world.origins[o].handle_timeout(now);
                }
                self.drain(node);
            }
            Event::Connect { from, to } if self.faults.is_down(to) => self.refuse(from, to),
            Event::Connect { from, to } => self.connect(from, to),
            Event::Deliver { to, msg } => self.deliver(to, msg),
            Event::Closed { to } => {
                let Some(c) = self.conns.remove(&to) else { return };
                if let Some(flow) = c.flow {
                    self.cancel(flow);
                }
                if !c.closing {
                    self.node_closed(to);
                }
            }
            Event::Pull { host, image } if self.faults.is_down(host) => self.pull_while_down(host, image),
            Event::Pull { host, image } => self.pull(host, image),
            Event::Sample => self.sample(),
            Event::Control(c) => {
                if let Some(c) = self.unless_down(*c) {
                    self.control(c);
                }
            }
        }
    }

    fn control(&mut self, c: Control) {
        let now = self.now;
        match c {
            Control::Announce { agent, id, tracker, request } => {
                self.metrics.announces += 1;
                let result = self.world.trackers[tracker].handle_announce(now, &request);
                let at = now + self.tracker_latency(agent);
                self.push(
                    at,
                    Event::Control(Box::new(Control::AnnounceReply { agent, id, tracker, result })),
                );
            }
            Control::AnnounceReply { agent, id, tracker, result } => {
                // A call refused by a down server opened no connection to keep.
                if !self.faults.tracker_is_down(tracker) {
                    self.http.put(HttpEnd::Node(agent), HttpEnd::Tracker(tracker), now);
                }
                self.world.agents[agent as usize].handle_announce_response(now, id, result);
                self.drain(agent);
            }
            Control::MetaInfoRequest { agent, id, tracker, namespace, digest } => {
                self.metrics.metainfo_requests += 1;
                self.next_request += 1;
                let rid = self.next_request;
                self.metainfo_requests.insert(rid, (agent, id, tracker));
                self.world.trackers[tracker].handle_metainfo_request(now, rid, &namespace, digest);
                self.drain_tracker(tracker);
            }
            Control::OriginMetaInfo { tracker, origin, namespace, digest } => {
                let o = (origin - self.agents()) as usize;
                let reply = self.world.origins[o].handle_metainfo_request(now, &namespace, digest);
                self.drain(origin);
                let at = now + self.tracker_latency(origin);
                self.push(
                    at,
                    Event::Control(Box::new(Control::OriginMetaInfoReply {
                        tracker,
                        origin,
                        namespace,
                        digest,
                        reply,
                    })),
                );
            }
            Control::OriginMetaInfoReply { tracker, origin, namespace, digest, reply } => {
                if !self.faults.is_down(origin) {
                    self.http.put(HttpEnd::Tracker(tracker), HttpEnd::Node(origin), now);
                }
                let addr = build::origin_addr((origin - self.agents()) as usize);
                self.world.trackers[tracker].handle_origin_metainfo(now, &namespace, digest, addr, reply);
                self.drain_tracker(tracker);
            }
            Control::MetaInfoReply { agent, id, tracker, reply } => {
                // A call refused by a down server opened no connection to keep.
                if !self.faults.tracker_is_down(tracker) {
                    self.http.put(HttpEnd::Node(agent), HttpEnd::Tracker(tracker), now);
                }
                self.world.agents[agent as usize].handle_metainfo_response(now, id, reply);
                self.drain(agent);
            }
        }
    }

    /// Records each rack's uplink and downlink bytes over the interval just ended.
    fn sample(&mut self) {
        use crate::net::Level;
        let now = self.now;
        for r in 0..self.metrics.racks.len() {
            let up = self.net.bytes_carried(self.world.net.uplink(Level::Rack, r as u32), now);
            let down = self.net.bytes_carried(self.world.net.downlink(Level::Rack, r as u32), now);
            let (up0, down0) = std::mem::replace(&mut self.metrics.racks[r], (up, down));
            self.metrics.rack_samples.push(RackSample {
                at: now,
                rack: r as u32,
                up_bytes: (up - up0).max(0.0),
                down_bytes: (down - down0).max(0.0),
            });
        }
        self.push(now + self.options.interval, Event::Sample);
    }

    fn pull(&mut self, host: u32, image: u32) {
        let namespace = self.scenario.workload.images[image as usize].name.clone();
        for b in self.metrics.start_pull(self.scenario, host, image, self.now) {
            let digest = self.scenario.workload.blobs[b as usize].digest;
            self.world.agents[host as usize].handle_download(self.now, &namespace, digest);
        }
        self.drain(host);
    }

    /// Re-reads a node's next deadline and arms its timer event.
    fn arm(&mut self, node: u32) {
        let t = if node < self.agents() {
            self.world.agents[node as usize].poll_timeout()
        } else {
            self.world.origins[(node - self.agents()) as usize].poll_timeout()
        };
        if t == Instant::FAR_FUTURE {
            return;
        }
        // A deadline already past is due now; the armed time must be the event's own time, or the
        // timer event would not recognise itself and the node would never be woken again.
        let t = t.max(self.now);
        if self.armed[node as usize] == t {
            return;
        }
        self.armed[node as usize] = t;
        self.push(t, Event::Timer { node });
    }

    /// Carries out everything a node asked for after an input.
    fn drain(&mut self, node: u32) {
        let agents = self.agents();
        loop {
            let out = if node < agents {
                self.world.agents[node as usize].poll_output()
            } else {
                self.world.origins[(node - agents) as usize].poll_output()
            };
            let Some(out) = out else { break };
            self.output(node, out);
        }
        if node < agents {
            while let Some(ev) = self.world.agents[node as usize].poll_event() {
                self.download_event(node, ev);
            }
        }
        self.arm(node);
    }

    fn drain_tracker(&mut self, tracker: usize) {
        while let Some(out) = self.world.trackers[tracker].poll_output() {
            match out {
                TrackerOutput::FetchMetaInfo { origin, namespace, digest } => {
                    let Some(&node) = self.world.addrs.get(&origin) else { continue };
                    let at = self.now
                        + self.http_request_delay(HttpEnd::Tracker(tracker), HttpEnd::Node(node), node);
                    self.push(
                        at,
                        Event::Control(Box::new(Control::OriginMetaInfo {
                            tracker,
                            origin: node,
                            namespace,
                            digest,
                        })),
                    );
                }
                TrackerOutput::MetaInfo { request_id, reply } => {
                    let Some((agent, id, _)) = self.metainfo_requests.remove(&request_id) else { continue };
                    let at = self.now + self.tracker_latency(agent);
                    self.push(
                        at,
                        Event::Control(Box::new(Control::MetaInfoReply { agent, id, tracker, reply })),
                    );
                }
            }
        }
    }

    fn download_event(&mut self, host: u32, ev: NodeEvent) {
        let digest = match &ev {
            NodeEvent::DownloadComplete { digest, .. } | NodeEvent::DownloadFailed { digest, .. } => *digest,
        };
        let Some(&blob) = self.world.blob_by_digest.get(&digest) else { return };
        self.metrics.download_event(host, blob, self.now, ev);
    }

    fn output(&mut self, node: u32, out: Output) {
        let now = self.now;
        match out {
            Output::Dial { conn, addr } => {
                let end = (node, conn);
                self.conns.insert(end, Conn { last_delivery: now, ..Conn::default() });
                match self.world.addrs.get(&addr).copied() {
                    Some(to) => {
                        // TCP's handshake: the SYN out and the SYN-ACK back before the dialer
                        // may send (the acceptor is told then too; its first input is the
                        // dialer's handshake, which arrives one latency later).
                        let at = now + self.latency(node, to) + self.latency(to, node);
                        self.push(at, Event::Connect { from: end, to });
                    }
                    None => self.push(now, Event::Closed { to: end }),
                }
            }
            Output::Send { conn, message } => {
                let end = (node, conn);
                let blob = match &message {
                    Message::Bitfield(hs) => self.world.blob_by_digest.get(&hs.digest).copied(),
                    _ => None,
                };
                let Some(c) = self.conns.get_mut(&end) else { return };
                if c.closing {
                    return;
                }
                if blob.is_some() {
                    c.blob = blob;
                }
                self.metrics.message_sent(message.kind(), message.wire_len());
                let c = self.conns.get_mut(&end).expect("looked up above");
                if c.remote.is_none() {
                    c.unsent.push_back(message);
                } else {
                    self.send(end, message);
                }
            }
            Output::Close { conn } => self.close(node, conn),
            Output::Announce { id, tracker, request } => {
                let Some(&t) = self.world.tracker_addrs.get(&tracker) else { return };
                let at = now + self.http_request_delay(HttpEnd::Node(node), HttpEnd::Tracker(t), node);
                self.push(
                    at,
                    Event::Control(Box::new(Control::Announce { agent: node, id, tracker: t, request })),
                );
            }
            Output::FetchMetaInfo { id, tracker, namespace, digest } => {
                let Some(&t) = self.world.tracker_addrs.get(&tracker) else { return };
                let at = now + self.http_request_delay(HttpEnd::Node(node), HttpEnd::Tracker(t), node);
                self.push(
                    at,
                    Event::Control(Box::new(Control::MetaInfoRequest {
                        agent: node,
                        id,
                        tracker: t,
                        namespace,
                        digest,
                    })),
                );
            }
        }
    }

    /// Puts a message on an established connection direction.
    fn send(&mut self, end: End, msg: Message) {
        let now = self.now;
        let Some(remote) = self.conns.get(&end).and_then(|c| c.remote) else { return };
        if self.faults.links_faulted() && self.faults.partitioned(end.0, remote.0) {
            // Lost in the partition: no flow, no delivery.
            return;
        }
        let c = self.conns.get_mut(&end).expect("checked above");
        if let Some((flow, token)) = c.flow {
            // Behind the payload in flight: a payload becomes the flow's next segment.
            if let Message::PiecePayload { payload, .. } = &msg {
                let appended = self.net.append(flow, payload.len(), token);
                debug_assert!(appended, "a connection's flow lives while it has payloads in flight");
            }
            c.in_flight.push_back(msg);
            return;
        }
        if let Message::PiecePayload { payload, .. } = &msg {
            let token = flow_token(end);
            let path = self.world.net.path(end.0, remote.0);
            let flow = self.net.start_flow(now, path.resources(), payload.len(), token);
            let c = self.conns.get_mut(&end).expect("checked above");
            c.flow = Some((flow, token));
            c.in_flight.push_back(msg);
            return;
        }
        let lat = self.latency(end.0, remote.0);
        let c = self.conns.get_mut(&end).expect("checked above");
        let at = c.last_delivery.max(now + lat);
        c.last_delivery = at;
        self.push(at, Event::Deliver { to: remote, msg });
    }

    /// A payload segment left the network: deliver it and the control messages behind it.
    fn flow_done(&mut self, token: u64) {
        let end = token_end(token);
        // Every flow that ends otherwise is cancelled in the network, which then never completes it.
        let Some(remote) =
            self.conns.get(&end).filter(|c| c.flow.is_some_and(|(_, t)| t == token)).and_then(|c| c.remote)
        else {
            debug_assert!(false, "a completed flow's connection carries it");
            return;
        };
        let lat = self.latency(end.0, remote.0);
        let now = self.now;
        let c = self.conns.get_mut(&end).expect("checked above");
        let at = c.last_delivery.max(now + lat);
        c.last_delivery = at;
        let mut deliveries = Vec::new();
        if let Some(payload) = c.in_flight.pop_front() {
            deliveries.push(payload);
        }
        while c.in_flight.front().is_some_and(|m| !matches!(m, Message::PiecePayload { .. })) {
            deliveries.push(c.in_flight.pop_front().expect("front checked"));
        }
        let idle = c.in_flight.is_empty();
        if idle {
            // The network retired the flow with its last segment.
            c.flow = None;
        }
        let close = idle && c.closing;
        for msg in deliveries {
            self.push(at, Event::Deliver { to: remote, msg });
        }
        if close {
            self.conns.remove(&end);
            self.push(at, Event::Closed { to: remote });
        }
    }

    fn connect(&mut self, from: End, to: u32) {
        if self.conns.get(&from).is_none_or(|c| c.closing) {
            self.conns.remove(&from);
            return;
        }
        let remote_addr = if from.0 < self.agents() {
            build::agent_addr(from.0 as usize)
        } else {
            build::origin_addr((from.0 - self.agents()) as usize)
        };
        let conn = if to < self.agents() {
            self.world.agents[to as usize].handle_accept(self.now, remote_addr)
        } else {
            let o = (to - self.agents()) as usize;
            self.world.origins[o].handle_accept(self.now, remote_addr)
        };
        let end = (to, conn);
        self.conns.insert(end, Conn { remote: Some(from), last_delivery: self.now, ..Conn::default() });
        let c = self.conns.get_mut(&from).expect("checked above");
        c.remote = Some(end);
        c.last_delivery = self.now;
        let unsent = std::mem::take(&mut c.unsent);
        for msg in unsent {
            self.send(from, msg);
        }
        self.arm(to);
    }

    fn deliver(&mut self, to: End, msg: Message) {
        let Some(c) = self.conns.get_mut(&to) else { return };
        if c.closing {
            return;
        }
        if let Message::Bitfield(hs) = &msg
            && let Some(&b) = self.world.blob_by_digest.get(&hs.digest)
        {
            c.blob = Some(b);
        }
        let (blob, from) = (c.blob, c.remote.map(|r| r.0));
        if let (Message::PiecePayload { payload, .. }, Some(from)) = (&msg, from) {
            let source = if from >= self.agents() {
                Source::Origin
            } else {
                Source::Peer(self.world.net.locality(from, to.0))
            };
            let host = (to.0 < self.agents()).then_some(to.0).zip(blob);
            let cross_zone = self.scenario.topology.zones.is_some()
                && self.world.places[from as usize].zone != self.world.places[to.0 as usize].zone;
            self.metrics.payload_delivered(self.now, host, source, cross_zone, payload.len());
        }
        let now = self.now;
        if to.0 < self.agents() {
            self.world.agents[to.0 as usize].handle_message(now, to.1, msg);
        } else {
            let o = (to.0 - self.agents()) as usize;
            self.world.origins[o].handle_message(now, to.1, msg);
        }
        self.drain(to.0);
    }

    /// A node closed its end: its incoming direction is abandoned, its outgoing one drains first.
    fn close(&mut self, node: u32, conn: ConnId) {
        let end = (node, conn);
        let Some(c) = self.conns.get_mut(&end) else { return };
        c.closing = true;
        c.unsent.clear();
        let (remote, busy) = (c.remote, c.flow.is_some());
        let Some(remote) = remote else { return };
        if let Some(rc) = self.conns.get_mut(&remote) {
            rc.in_flight.clear();
            if let Some(flow) = rc.flow.take() {
                self.cancel(flow);
            }
        }
        if !busy {
            let lat = self.latency(node, remote.0);
            let at = self.conns[&end].last_delivery.max(self.now + lat);
            self.conns.remove(&end);
            self.push(at, Event::Closed { to: remote });
        }
    }

    fn cancel(&mut self, (flow, _token): (FlowId, u64)) {
        let _ = self.net.cancel_flow(self.now, flow);
    }

    /// The remote closed: the node learns of it.
    fn node_closed(&mut self, end: End) {
        let now = self.now;
        if end.0 < self.agents() {
            self.world.agents[end.0 as usize].handle_closed(now, end.1);
        } else {
            let o = (end.0 - self.agents()) as usize;
            self.world.origins[o].handle_closed(now, end.1);
        }
        self.drain(end.0);
    }
}
