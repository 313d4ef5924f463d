//! Timed `[[faults]]` in the discrete-event engine: every verb of the turmoil engine, with its
//! reporting (scenarios/README.md, "`[[faults]]`"). A fault applies at its exact time, before the
//! events of that time.
//!
//! A node's software stopping (a crash, or the first half of a bounce) is modelled as:
//! - every event addressed to it is dropped from the queue: its timers, deliveries and closes on
//!   its connections, dials it made, control requests it sent and replies due to it. Messages it
//!   sent that are already on the wire (queued deliveries to live nodes, a reply from an origin)
//!   still arrive;
//! - each of its connections ends: its flows and the flows into it are cancelled (the bytes are
//!   lost), and each live remote end learns of the close one latency later (after what was already
//!   on the wire to it), as a peer of a crashed process sees its connection reset. Until then what
//!   the remote sends on it is lost;
//! - a tracker's pending metainfo requests are answered `Unreachable` (the agents' requests were
//!   on connections that broke); an agent's running downloads fail with `host crashed` or
//!   `host restarted`.
//!
//! While a node is down, a dial to it is refused (the dialer sees the connection close one latency
//! after its dial arrived), a request to a tracker or an origin's metainfo endpoint is answered
//! `Unreachable` one latency after it arrived (a refused connection: an agent moves on to its
//! next tracker, as with any unreachable tracker), and a pull due on a down host starts and fails at once
//! (`host down`). A bounced node comes back at once as a fresh state machine, seeded from its own
//! seed and its restart count; a restarted agent only does its later pulls (the run's metrics
//! already hold its earlier ones). Requests that arrive after the restart are served by the new
//! incarnation.
//!
//! Links (`partition`, `repair`, `hold`, `release`) keep turmoil's model: each link between two
//! nodes is healthy, partitioned or held, the last verb winning. What crosses a link is judged
//! when it would arrive, so messages in flight when the verb applies are caught too:
//! - partitioned: dropped. Messages in flight are dropped at once (a `repair` does not bring them
//!   back), and so are messages held on the link. Payload flows crossing the link are cancelled
//!   (their bytes, and the messages queued behind them, are lost), and a payload sent across it
//!   later starts no flow. A dial is lost (the dialer's handshake timeout ends it), a control
//!   request gets no reply (the protocol's timeouts handle it), a close is never seen;
//! - held: kept, and handed over at `release`, in the order they would have arrived, at the time
//!   of the release. Payload flows go on using the network (as turmoil's senders go on writing),
//!   only their deliveries wait;
//! - `repair` makes a link healthy and keeps what it holds; `release` makes it healthy and hands
//!   over what it holds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use shoal_protocols::Instant;
use shoal_protocols::announce::{AnnounceError, MetaInfoReply};

use super::{Control, End, Engine, Event};
use crate::build::{
    Addresses, backend, build_agent_seeded, build_origin_seeded, build_tracker_seeded, incarnation_seed,
};
use crate::scenario::{FaultVerb, LinkState, NodeSet, Scenario};

/// What the engine knows of the scenario's faults: the next to apply, and which nodes are down.
#[derive(Debug)]
pub(super) struct Faults {
    /// Index in `Scenario::faults` of the next fault to apply.
    next: usize,
    /// Per network node (agents, then origins): its software is down.
    down: Vec<bool>,
    tracker_down: Vec<bool>,
    /// Per network node and per tracker: how many times it was restarted (seeds its next start).
    restarts: Vec<u32>,
    tracker_restarts: Vec<u32>,
    /// Network nodes; tracker `t` is node `nodes + t` in `links`.
    nodes: u32,
    /// Links with a `partition` or a `hold` on them, by (lower, higher) node.
    links: BTreeMap<(u32, u32), Link>,
    /// Events held so far: orders the held events of every link by when they arrived.
    held: u64,
}

/// One link's state, as turmoil keeps it: one of healthy, partitioned or held (the last verb
/// wins), and the messages held on it.
#[derive(Debug, Default)]
struct Link {
    state: LinkState,
    /// What arrived while held, in arrival order, each numbered by `Faults::held`. Kept through a
    /// `repair`; dropped by a `partition`; delivered by a `release`.
    buffer: Vec<(u64, Event)>,
}

fn link(x: u32, y: u32) -> (u32, u32) {
    (x.min(y), x.max(y))
}

impl Faults {
    /// The engine's fault state for a scenario.
    pub(super) fn new(s: &Scenario) -> Self {
        let nodes = s.topology.hosts.len() + s.origins.len();
        Faults {
            nodes: nodes as u32,
            links: BTreeMap::new(),
            held: 0,
            next: 0,
            down: vec![false; nodes],
            tracker_down: vec![false; s.trackers],
            restarts: vec![0; nodes],
            tracker_restarts: vec![0; s.trackers],
        }
    }

    /// When the next fault is due, if any is left.
    pub(super) fn next_at(&self, s: &Scenario) -> Option<Instant> {
        s.faults.get(self.next).map(|f| Instant::ZERO + f.at)
    }

    /// Network node `node`'s software is down (crashed, not yet bounced).
    /// Whether tracker `t` is crashed.
    pub(super) fn tracker_is_down(&self, t: usize) -> bool {
        self.tracker_down[t]
    }

    pub(super) fn is_down(&self, node: u32) -> bool {
        self.down[node as usize]
    }

    /// Some link is partitioned or held (or has held messages).
    pub(super) fn links_faulted(&self) -> bool {
        !self.links.is_empty()
    }

    /// The link between network nodes `x` and `y` is partitioned.
    pub(super) fn partitioned(&self, x: u32, y: u32) -> bool {
        self.links.get(&link(x, y)).is_some_and(|l| l.state == LinkState::Partitioned)
    }

    /// Every node of a set, as link ends.
    fn ids(&self, s: &Scenario, set: &NodeSet) -> Vec<u32> {
        let agents = s.topology.hosts.len();
        let hosts = set.hosts.iter().copied();
        let origins = set.origins.iter().map(|o| agents + o);
        let trackers = set.trackers.iter().map(|t| self.nodes as usize + t);
        hosts.chain(origins).chain(trackers).map(|n| n as u32).collect()
    }
}

/// Whether a queued event is addressed to a node whose software stops (`nodes`: network nodes,
/// `trackers`), or was sent by it and not yet on the wire to anyone (its dials and requests).
fn addressed(event: &Event, nodes: &[bool], trackers: &[bool]) -> bool {
    match event {
        Event::Timer { node } => nodes[*node as usize],
        Event::Connect { from, .. } => nodes[from.0 as usize],
        Event::Deliver { to, .. } | Event::Closed { to } => nodes[to.0 as usize],
        Event::Pull { .. } | Event::Sample => false,
        Event::Control(c) => match &**c {
            Control::Announce { agent, .. }
            | Control::AnnounceReply { agent, .. }
            | Control::MetaInfoRequest { agent, .. }
            | Control::MetaInfoReply { agent, .. } => nodes[*agent as usize],
            Control::OriginMetaInfo { tracker, .. } | Control::OriginMetaInfoReply { tracker, .. } => {
                trackers[*tracker]
            }
        },
    }
}

impl Engine<'_> {
    /// Applies the next scenario fault at `self.now`.
    pub(super) fn apply_fault(&mut self) {
        let s = self.scenario;
        let f = &s.faults[self.faults.next];
        self.faults.next += 1;
        let now = self.now;
        if !matches!(f.verb, FaultVerb::Crash | FaultVerb::Bounce) {
            self.link_fault(f.verb, &f.nodes, &f.peers);
            return;
        }
        let crash = f.verb == FaultVerb::Crash;
        let agents = self.agents() as usize;
        for &h in &f.nodes.hosts {
            if !self.faults.down[h] {
                let reason = if crash { "host crashed" } else { "host restarted" };
                self.metrics.fail_host(h as u32, now, reason);
            }
        }
        let nodes: Vec<u32> = f
            .nodes
            .hosts
            .iter()
            .copied()
            .chain(f.nodes.origins.iter().map(|o| agents + o))
            .map(|n| n as u32)
            .collect();
        self.stop(&nodes, &f.nodes.trackers);
        for &n in &nodes {
            self.faults.down[n as usize] = crash;
        }
        for &t in &f.nodes.trackers {
            self.faults.tracker_down[t] = crash;
        }
        if crash {
            return;
        }
        let addrs = Addresses::simulated(s);
        for &n in &nodes {
            let i = n as usize;
            self.faults.restarts[i] += 1;
            let r = self.faults.restarts[i];
            if i < agents {
                let seed = incarnation_seed(s, "agent", i, r);
                self.world.agents[i] = build_agent_seeded(s, i, &addrs, now, seed);
                self.options.hooks.apply_agent(&mut self.world.agents[i]);
            } else {
                let o = i - agents;
                let seed = incarnation_seed(s, "origin", o, r);
                self.world.origins[o] = build_origin_seeded(s, o, &addrs, backend(s), now, seed);
            }
            self.drain(n);
        }
        for &t in &f.nodes.trackers {
            self.faults.tracker_restarts[t] += 1;
            let seed = incarnation_seed(s, "tracker", t, self.faults.tracker_restarts[t]);
            self.world.trackers[t] = build_tracker_seeded(s, &addrs, seed);
            self.options.hooks.apply_tracker(s, &mut self.world.trackers[t]);
        }
    }

    /// The software of network nodes `nodes` and trackers `trackers` stops: what was addressed to
    /// it is dropped and its connections end (module docs).
    fn stop(&mut self, nodes: &[u32], trackers: &[usize]) {
        let now = self.now;
        let mut hit = vec![false; self.faults.down.len()];
        for &n in nodes {
            hit[n as usize] = true;
        }
        let mut thit = vec![false; self.faults.tracker_down.len()];
        for &t in trackers {
            thit[t] = true;
        }
        // Events addressed to the old software. The queue pops by (time, sequence), unique, so
        // rebuilding the heap changes no order.
        let queue = std::mem::take(&mut self.queue).into_vec();
        let kept: Vec<_> = queue.into_iter().filter(|Reverse(q)| !addressed(&q.event, &hit, &thit)).collect();
        self.queue = BinaryHeap::from(kept);
        for l in self.faults.links.values_mut() {
            l.buffer.retain(|(_, e)| !addressed(e, &hit, &thit));
        }
        for &n in nodes {
            self.armed[n as usize] = Instant::FAR_FUTURE;
        }
        // Their kept-alive HTTP connections broke with them: the next call connects again.
        self.http.forget(|e| match e {
            super::HttpEnd::Node(n) => hit[n as usize],
            super::HttpEnd::Tracker(t) => thit[t],
        });
        // Metainfo requests the trackers hold: forget a stopped agent's; answer those a stopped
        // tracker held (its connections broke).
        let mut held: Vec<(u64, (u32, u64, usize))> = self
            .metainfo_requests
            .iter()
            .filter(|(_, (a, _, t))| hit[*a as usize] || thit[*t])
            .map(|(&rid, &v)| (rid, v))
            .collect();
        held.sort_unstable_by_key(|(rid, _)| *rid);
        for (rid, (agent, id, tracker)) in held {
            self.metainfo_requests.remove(&rid);
            if !hit[agent as usize] {
                let at = now + self.tracker_latency(agent);
                let reply = MetaInfoReply::Unreachable;
                self.push(at, Event::Control(Box::new(Control::MetaInfoReply { agent, id, tracker, reply })));
            }
        }
        // Connections: the stopped nodes' ends go; live ends connected to them are orphaned.
        let mut dead: Vec<End> = Vec::new();
        let mut orphans: Vec<End> = Vec::new();
        for (end, c) in self.conns.iter() {
            if hit[end.0 as usize] {
                dead.push(end);
            } else if c.remote.is_some_and(|r| hit[r.0 as usize]) {
                orphans.push(end);
            }
        }
        dead.sort_unstable();
        orphans.sort_unstable();
        let mut closes: Vec<(End, u32, Instant)> = Vec::new();
        for end in dead {
            let c = self.conns.remove(&end).expect("listed above");
            if let Some(flow) = c.flow {
                self.cancel(flow);
            }
            if let Some(r) = c.remote
                && !hit[r.0 as usize]
            {
                closes.push((r, end.0, c.last_delivery));
            }
        }
        for end in orphans {
            let c = self.conns.get_mut(&end).expect("listed above");
            c.remote = None;
            c.unsent.clear();
            c.in_flight.clear();
            if let Some(flow) = c.flow.take() {
                self.cancel(flow);
            }
        }
        for (to, from, last) in closes {
            let at = last.max(now + self.latency(from, to.0));
            self.push(at, Event::Closed { to });
        }
    }

    /// `partition`, `repair`, `hold` or `release` on every link between `a` and `b`.
    fn link_fault(&mut self, verb: FaultVerb, a: &NodeSet, b: &NodeSet) {
        let (a, b) = (self.faults.ids(self.scenario, a), self.faults.ids(self.scenario, b));
        let mut released = Vec::new();
        for &x in &a {
            for &y in &b {
                let l = self.faults.links.entry(link(x, y)).or_default();
                match verb {
                    FaultVerb::Partition => {
                        l.state = LinkState::Partitioned;
                        l.buffer.clear();
                    }
                    FaultVerb::Repair => l.state = LinkState::Healthy,
                    FaultVerb::Hold => l.state = LinkState::Held,
                    FaultVerb::Release => {
                        l.state = LinkState::Healthy;
                        released.append(&mut l.buffer);
                    }
                    FaultVerb::Crash | FaultVerb::Bounce => unreachable!("node faults are applied apart"),
                }
            }
        }
        self.faults.links.retain(|_, l| l.state != LinkState::Healthy || !l.buffer.is_empty());
        // Held messages arrive now, in the order they first arrived.
        released.sort_unstable_by_key(|(n, _)| *n);
        for (_, e) in released {
            self.push(self.now, e);
        }
        if verb != FaultVerb::Partition {
            return;
        }
        // Messages in flight across the partition are lost.
        let queue = std::mem::take(&mut self.queue).into_vec();
        let kept: Vec<_> = queue
            .into_iter()
            .filter(|Reverse(q)| !self.link_of(&q.event).is_some_and(|k| self.faults.partitioned(k.0, k.1)))
            .collect();
        self.queue = BinaryHeap::from(kept);
        // Payload flows crossing a new partition stop; their bytes, and the messages queued
        // behind them, are lost. A connection whose node already closed it is gone.
        let mut cut: Vec<End> = self
            .conns
            .iter()
            .filter(|(e, c)| c.flow.is_some() && c.remote.is_some_and(|r| self.faults.partitioned(e.0, r.0)))
            .map(|(e, _)| e)
            .collect();
        cut.sort_unstable();
        for end in cut {
            let c = self.conns.get_mut(&end).expect("listed above");
            c.in_flight.clear();
            let flow = c.flow.take().expect("listed with a flow");
            if c.closing {
                self.conns.remove(&end);
            }
            self.cancel(flow);
        }
    }

    /// An event crossing a faulted link: dropped (partitioned), kept until `release` (held), or
    /// given back to be handled.
    pub(super) fn across_links(&mut self, event: Event) -> Option<Event> {
        let Some(key) = self.link_of(&event) else { return Some(event) };
        let Some(l) = self.faults.links.get_mut(&key) else { return Some(event) };
        match l.state {
            LinkState::Healthy => Some(event),
            LinkState::Partitioned => None,
            LinkState::Held => {
                self.faults.held += 1;
                l.buffer.push((self.faults.held, event));
                None
            }
        }
    }

    /// The link a message crosses (sender and receiver), if the event is a message.
    fn link_of(&self, event: &Event) -> Option<(u32, u32)> {
        let t = |tracker: usize| self.faults.nodes + tracker as u32;
        let (x, y) = match event {
            // The receiving end knows its remote; an end orphaned by a crash has none.
            Event::Deliver { to, .. } | Event::Closed { to } => (self.conns.get(to)?.remote?.0, to.0),
            Event::Connect { from, to } => (from.0, *to),
            Event::Control(c) => match &**c {
                Control::Announce { agent, tracker, .. }
                | Control::AnnounceReply { agent, tracker, .. }
                | Control::MetaInfoRequest { agent, tracker, .. }
                | Control::MetaInfoReply { agent, tracker, .. } => (*agent, t(*tracker)),
                Control::OriginMetaInfo { tracker, origin, .. }
                | Control::OriginMetaInfoReply { tracker, origin, .. } => (*origin, t(*tracker)),
            },
            Event::Timer { .. } | Event::Pull { .. } | Event::Sample => return None,
        };
        Some(link(x, y))
    }

    /// A dial reached a node that is down: the dialer sees its connection close one latency later.
    pub(super) fn refuse(&mut self, from: End, to: u32) {
        let at = self.now + self.latency(to, from.0);
        self.push(at, Event::Closed { to: from });
    }

    /// A pull came due on a host that is down: it starts and fails at once.
    pub(super) fn pull_while_down(&mut self, host: u32, image: u32) {
        let _ = self.metrics.start_pull(self.scenario, host, image, self.now);
        self.metrics.fail_host(host, self.now, "host down");
    }

    /// A control message, unless it is addressed to a node that is down: then a request is
    /// answered `Unreachable` one latency later (a refused connection) and a reply is dropped.
    pub(super) fn unless_down(&mut self, c: Control) -> Option<Control> {
        let now = self.now;
        let reply = match c {
            Control::Announce { agent, id, tracker, .. } if self.faults.tracker_down[tracker] => {
                let result = Err(AnnounceError::Unreachable);
                (agent, Control::AnnounceReply { agent, id, tracker, result })
            }
            Control::MetaInfoRequest { agent, id, tracker, .. } if self.faults.tracker_down[tracker] => {
                (agent, Control::MetaInfoReply { agent, id, tracker, reply: MetaInfoReply::Unreachable })
            }
            Control::OriginMetaInfo { tracker, origin, namespace, digest } if self.faults.is_down(origin) => {
                let reply = MetaInfoReply::Unreachable;
                (origin, Control::OriginMetaInfoReply { tracker, origin, namespace, digest, reply })
            }
            Control::OriginMetaInfoReply { tracker, .. } if self.faults.tracker_down[tracker] => return None,
            Control::AnnounceReply { agent, .. } | Control::MetaInfoReply { agent, .. }
                if self.faults.is_down(agent) =>
            {
                return None;
            }
            c => return Some(c),
        };
        let (node, reply) = reply;
        let at = now + self.tracker_latency(node);
        self.push(at, Event::Control(Box::new(reply)));
        None
    }
}
