//! The nodes of a real-socket run (`--engine real`) as software that can stop and start: each
//! agent, origin and tracker runs as an [`Incarnation`] (its task and every task it spawned), and
//! the scenario's `[[faults]]` are applied to them on the wall clock, with the semantics of
//! scenarios/README.md and the discrete-event engine (`engine/faults.rs`):
//!
//! - `crash`: every task of the node is aborted and dropped — its state machine, its listeners
//!   (an origin's P2P and HTTP ports, a tracker's), and the reader, writer, dial and HTTP tasks
//!   of its connections — so its sockets close and its peers see them reset or closed. A crashed
//!   agent's running downloads fail (`host crashed`), and its pulls that come due while it is down
//!   start and fail at once (`host down`). Its ports stay bound by sockets that do not listen, so
//!   a dial to it is refused and no other socket takes the port meanwhile.
//! - `bounce`: the same stop, then at once a fresh state machine seeded from the node's seed and
//!   its restart count ([`incarnation_seed`], as the discrete-event engine does), listening on the
//!   same addresses. A running agent's downloads fail (`host restarted`); a restarted agent goes on
//!   with its later pulls only (`Ctx::next_pull` is the run's, not the task's).
//! - `partition`, `repair`, `hold`, `release`: applied to the run's [`super::faults::Links`],
//!   which the delay line and the connection set-up consult.
//!
//! A fault applies at the first turn of the run's loop at or after its time (a few milliseconds
//! late at most; the loop wakes for it).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shoal_protocols::Instant;
use tokio::net::{TcpListener, TcpSocket};

use super::faults::Incarnation;
use super::peer::{Node, run_node};
use super::real::TokioTcp;
use super::tracker::run_tracker_seeded;
use super::{Ctx, Transport, now};
use crate::build::{build_agent_seeded, build_origin_seeded, incarnation_seed};
use crate::scenario::{Fault, FaultVerb};

/// Listen backlog of every node's listener.
const BACKLOG: u32 = 1024;

/// Binds a loopback listener that a later incarnation, or a port holder, can bind again while it
/// is still open (`SO_REUSEPORT`; and `SO_REUSEADDR` for connections of an earlier incarnation in
/// `TIME_WAIT`).
#[cfg(test)]
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_in(&TokioTcp::new(), addr)
}

/// [`listen`] with transport `t`'s sockets (in its node's namespace with `--net netns`).
pub(crate) fn listen_in(t: &TokioTcp, addr: SocketAddr) -> io::Result<TcpListener> {
    reusable(t, addr)?.listen(BACKLOG)
}

/// A socket bound to `addr` that does not listen: connections to it are refused.
fn hold_port(t: &TokioTcp, addr: SocketAddr) -> io::Result<TcpSocket> {
    reusable(t, addr)
}

fn reusable(t: &TokioTcp, addr: SocketAddr) -> io::Result<TcpSocket> {
    let s = t.listen_socket(addr)?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    Ok(s)
}

/// One node's software: running, or down with its ports held.
#[derive(Debug)]
enum Life {
    Up(Incarnation),
    /// Its ports, bound by sockets that do not listen (held until the node starts again).
    Down {
        _ports: Vec<TcpSocket>,
    },
}

/// Every node of a real run, and the faults still to apply.
pub(crate) struct Nodes {
    t: TokioTcp,
    /// Each slot's transport (`--net netns`: in its namespace); `t` where none was set.
    transports: Vec<Option<TokioTcp>>,
    ctx: Rc<Ctx>,
    /// Network nodes (agents, then origins), then trackers.
    lives: Vec<Life>,
    /// How many times each was restarted (seeds its next incarnation).
    restarts: Vec<u32>,
    /// Index in `Scenario::faults` of the next fault to apply.
    next_fault: usize,
}

impl Nodes {
    pub(crate) fn new(t: TokioTcp, ctx: Rc<Ctx>) -> Self {
        let all = ctx.agents() as usize + ctx.scenario.origins.len() + ctx.scenario.trackers;
        Nodes {
            t,
            transports: vec![None; all],
            ctx,
            lives: (0..all).map(|_| Life::Down { _ports: Vec::new() }).collect(),
            restarts: vec![0; all],
            next_fault: 0,
        }
    }

    /// Gives `slot` (agents, origins, then trackers) its own transport, on the same clock.
    pub(crate) fn set_transport(&mut self, slot: usize, t: TokioTcp) {
        if let Some(s) = self.transports.get_mut(slot) {
            *s = Some(t);
        }
    }

    fn transport(&self, slot: usize) -> TokioTcp {
        self.transports.get(slot).cloned().flatten().unwrap_or_else(|| self.t.clone())
    }

    fn network_nodes(&self) -> usize {
        self.ctx.agents() as usize + self.ctx.scenario.origins.len()
    }

    /// Starts network node `n` (`state`, built by [`Node::build`] or [`fresh_node`]) on its
    /// listeners.
    pub(crate) fn start_node(&mut self, n: u32, state: Node, l: TcpListener, http: Option<TcpListener>) {
        let inc = Incarnation::default();
        inc.spawn(run_node(self.transport(n as usize), self.ctx.clone(), n, state, l, http));
        self.lives[n as usize] = Life::Up(inc);
    }

    /// Starts tracker `i` on its listener.
    pub(crate) fn start_tracker(&mut self, i: usize, l: TcpListener) {
        let slot = self.network_nodes() + i;
        let inc = Incarnation::default();
        inc.spawn(run_tracker_seeded(self.transport(slot), self.ctx.clone(), i, l, self.restarts[slot]));
        self.lives[slot] = Life::Up(inc);
    }

    /// How long until the next fault is due (`None`: none is left).
    pub(crate) fn until_next_fault(&self) -> Option<Duration> {
        let f = self.ctx.scenario.faults.get(self.next_fault)?;
        Some(f.at.saturating_sub(self.t.now()))
    }

    /// Applies every fault due by now, in order; then fails the pulls due on down agents.
    pub(crate) async fn apply_due(&mut self) {
        // Bounded by the scenario's faults.
        while let Some(f) = self.ctx.scenario.faults.get(self.next_fault)
            && f.at <= self.t.now()
        {
            let f = f.clone();
            self.next_fault += 1;
            self.fail_due_pulls();
            self.apply(&f).await;
        }
        self.fail_due_pulls();
    }

    /// Starts and fails at once every pull due on an agent that is down (`host down`).
    pub(crate) fn fail_due_pulls(&self) {
        let now = now(&self.t);
        for h in 0..self.ctx.agents() {
            if matches!(self.lives[h as usize], Life::Down { .. }) {
                self.ctx.fail_due_pulls(h, now);
            }
        }
    }

    async fn apply(&mut self, f: &Fault) {
        tracing::debug!(at = %now(&self.t), verb = ?f.verb, "fault");
        let agents = self.ctx.agents() as usize;
        if !matches!(f.verb, FaultVerb::Crash | FaultVerb::Bounce) {
            self.ctx.links.apply(f.verb, agents, &f.nodes, &f.peers);
            return;
        }
        let crash = f.verb == FaultVerb::Crash;
        let nodes = self.network_nodes();
        let slots: Vec<usize> = f
            .nodes
            .hosts
            .iter()
            .copied()
            .chain(f.nodes.origins.iter().map(|o| agents + o))
            .chain(f.nodes.trackers.iter().map(|t| nodes + t))
            .filter(|&s| s < self.lives.len())
            .collect();
        let reason = if crash { "host crashed" } else { "host restarted" };
        // Every node stops at once, then the bounced ones start, as in the other engines.
        let stopped: Vec<Incarnation> = slots.iter().filter_map(|&s| self.halt(s, reason)).collect();
        for inc in stopped {
            wait_stopped(inc).await;
        }
        if !crash {
            for &s in &slots {
                self.restart(s);
            }
        }
    }

    /// Stops agent `host`'s software for good, its running downloads failing with `reason`
    /// (`DriverOptions::kill_agent`).
    pub(crate) async fn kill_agent(&mut self, host: u32, reason: &str) {
        if host < self.ctx.agents()
            && let Some(inc) = self.halt(host as usize, reason)
        {
            wait_stopped(inc).await;
        }
    }

    /// Stops the software in `slot` if it runs: its ports are held first, so that no other socket
    /// takes them, then every task is aborted (dropped when the scheduler next runs it: see
    /// [`wait_stopped`]). An agent's running downloads fail with `reason`.
    fn halt(&mut self, slot: usize, reason: &str) -> Option<Incarnation> {
        let life = std::mem::replace(&mut self.lives[slot], Life::Down { _ports: Vec::new() });
        let inc = match life {
            Life::Up(inc) => inc,
            down => {
                self.lives[slot] = down;
                return None;
            }
        };
        let t = self.transport(slot);
        let holders = self.addrs_of(slot).into_iter().filter_map(|a| hold_port(&t, a).ok()).collect();
        self.lives[slot] = Life::Down { _ports: holders };
        inc.abort();
        if slot < self.ctx.agents() as usize {
            self.ctx.fail_host(slot as u32, now(&self.t), reason);
        }
        Some(inc)
    }

    /// Starts the software in `slot` again as a fresh state machine on its own addresses. If a
    /// port cannot be bound again the node stays down (its later pulls fail `host down`).
    fn restart(&mut self, slot: usize) {
        if let Life::Up(_) = self.lives[slot] {
            return;
        }
        let t = self.transport(slot);
        let listeners: io::Result<Vec<TcpListener>> =
            self.addrs_of(slot).into_iter().map(|a| listen_in(&t, a)).collect();
        let mut listeners = match listeners {
            Ok(l) => l.into_iter(),
            Err(e) => {
                tracing::warn!(slot, error = %e, "a bounced node could not bind its port again; it stays down");
                return;
            }
        };
        // The new listeners are bound: the holders can go.
        self.lives[slot] = Life::Down { _ports: Vec::new() };
        self.restarts[slot] += 1;
        let r = self.restarts[slot];
        let nodes = self.network_nodes();
        let Some(l) = listeners.next() else { return };
        if slot < nodes {
            let state = fresh_node(&self.ctx, slot as u32, now(&self.t), r);
            self.start_node(slot as u32, state, l, listeners.next());
        } else {
            self.start_tracker(slot - nodes, l);
        }
    }

    /// The addresses the software in `slot` listens on.
    fn addrs_of(&self, slot: usize) -> Vec<SocketAddr> {
        let (p, agents, nodes) = (&self.ctx.addrs.p2p, self.ctx.agents() as usize, self.network_nodes());
        if slot < agents {
            vec![p.agents[slot]]
        } else if slot < nodes {
            let o = slot - agents;
            vec![p.origins[o], self.ctx.addrs.origin_http[o]]
        } else {
            p.trackers.get(slot - nodes).copied().into_iter().collect()
        }
    }
}

/// Waits until a halted incarnation's tasks are dropped (its sockets closed).
async fn wait_stopped(inc: Incarnation) {
    if !inc.stop().await {
        tracing::warn!("a stopped node's tasks are still being dropped");
    }
}

/// Network node `n`'s state machine after its `restarts`-th restart.
fn fresh_node(ctx: &Ctx, n: u32, now: Instant, restarts: u32) -> Node {
    let (s, agents) = (&ctx.scenario, ctx.agents());
    if n < agents {
        let seed = incarnation_seed(s, "agent", n as usize, restarts);
        Node::Agent(Box::new(build_agent_seeded(s, n as usize, &ctx.addrs.p2p, now, seed)))
    } else {
        let o = (n - agents) as usize;
        let seed = incarnation_seed(s, "origin", o, restarts);
        Node::Origin(Box::new(build_origin_seeded(s, o, &ctx.addrs.p2p, ctx.backend(), now, seed)))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::AsyncReadExt;

    use super::super::faults::spawn_local;
    use super::super::{NodeAddrs, http};
    use super::*;
    use crate::build::Addresses;
    use crate::scenario::{NodeSet, Scenario};

    fn fault(verb: FaultVerb, nodes: NodeSet) -> Fault {
        Fault { at: Duration::ZERO, verb, nodes, peers: NodeSet::default() }
    }

    async fn refused(addr: SocketAddr) -> bool {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// Reads until the peer closes; true if it did within 5 s.
    async fn closed(s: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 256];
        // Bounded by the timeout.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// A crashed origin's P2P and HTTP ports, and a crashed tracker's, close their connections and
    /// refuse new ones; bounced, they serve again on the same addresses, as fresh state machines.
    #[test]
    fn a_crash_closes_every_port_and_connection_of_the_node_and_a_bounce_serves_again() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/agree-16.toml");
        let sets: Vec<String> =
            ["topology.hosts=1", "workload.blobs.0.size=64KiB", "protocol.origin.piece_length=64KiB"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let s = Scenario::load_with_sets(path, &sets).unwrap();
        let blobs = super::super::generate_blobs(&s).unwrap();
        let digest = blobs[0].digest;
        let rt = super::super::current_thread_runtime().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let (agent, origin, origin_http, tracker) =
                (listen(any).unwrap(), listen(any).unwrap(), listen(any).unwrap(), listen(any).unwrap());
            let a = |l: &TcpListener| l.local_addr().unwrap();
            let addrs = NodeAddrs {
                p2p: Addresses {
                    agents: vec![a(&agent)],
                    origins: vec![a(&origin)],
                    trackers: vec![a(&tracker)],
                },
                origin_http: vec![a(&origin_http)],
            };
            let (o, oh, tr) = (a(&origin), a(&origin_http), a(&tracker));
            let ctx = Rc::new(Ctx::new(s, addrs, blobs, Duration::from_millis(100)).unwrap());
            let t = TokioTcp::new();
            let mut nodes = Nodes::new(t, ctx.clone());
            nodes.start_tracker(0, tracker);
            nodes.start_node(0, Node::build(&ctx, 0, Instant::ZERO), agent, None);
            nodes.start_node(1, Node::build(&ctx, 1, Instant::ZERO), origin, Some(origin_http));
            let metainfo = format!("/internal/namespace/image/blobs/{}/metainfo", digest.hex());
            let get = |addr: SocketAddr| {
                let path = metainfo.clone();
                async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    http::write_request(&mut s, "GET", &addr.to_string(), &path, b"").await?;
                    http::read_response(&mut s).await.map(|r| (r.status, s))
                }
            };
            // An open HTTP connection (kept alive after a request) and a P2P one, to each port.
            let (status, mut h) = get(oh).await.unwrap();
            assert_eq!(status, 200);
            let mut p = tokio::net::TcpStream::connect(o).await.unwrap();
            let mut tc = tokio::net::TcpStream::connect(tr).await.unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let both = NodeSet { origins: vec![0], trackers: vec![0], ..NodeSet::default() };
            nodes.apply(&fault(FaultVerb::Crash, both.clone())).await;
            assert!(closed(&mut h).await, "the origin's HTTP connection closed");
            assert!(closed(&mut p).await, "the origin's P2P connection closed");
            assert!(closed(&mut tc).await, "the tracker's connection closed");
            for addr in [o, oh, tr] {
                assert!(refused(addr).await, "{addr} refuses while down");
            }
            nodes.apply(&fault(FaultVerb::Bounce, both)).await;
            assert_eq!(get(oh).await.unwrap().0, 200, "the restarted origin serves metainfo");
            assert!(!refused(o).await && !refused(tr).await, "the P2P and tracker ports accept again");
            assert_eq!(nodes.restarts, [0, 1, 1]);
        });
    }

    /// A stopped incarnation's tasks are gone, those its tasks spawned too, and with them its
    /// listener and the connections it accepted; the port can be held and bound again.
    #[test]
    fn stopping_an_incarnation_closes_its_sockets_and_its_tasks_tasks() {
        let rt = super::super::current_thread_runtime().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let l = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
            let addr = l.local_addr().unwrap();
            let inc = Incarnation::default();
            inc.spawn(async move {
                // Bounded by the test's two connections.
                for _ in 0..2 {
                    let (s, _) = l.accept().await.unwrap();
                    // A task of a task: holds the accepted stream until aborted.
                    spawn_local(async move {
                        let _s = s;
                        std::future::pending::<()>().await;
                    });
                }
                std::future::pending::<()>().await;
            });
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(inc.tasks(), 3, "the acceptor and one task per accepted stream");
            let holder =
                hold_port(&TokioTcp::new(), addr).expect("the port can be held while the listener is open");
            assert!(inc.stop().await, "every task dropped");
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap();
            assert!(matches!(n, Ok(0) | Err(_)), "the peer sees its connection close: {n:?}");
            let e = tokio::net::TcpStream::connect(addr).await.expect_err("nothing listens");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            let again = listen(addr).expect("the port binds again");
            drop(holder);
            let _c3 = tokio::net::TcpStream::connect(addr).await.expect("the new listener accepts");
            drop(again);
        });
    }
}
