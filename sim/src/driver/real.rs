//! `--engine real`: the driver on tokio TCP sockets on 127.0.0.1, in one process, with wall-clock
//! time. Every node binds its own loopback port; nothing listens on or dials any other address.
//! With `--net netns` ([`super::netns`]) every node is in its own network namespace instead, with
//! its own address and kernel-shaped links.
//!
//! All tasks share one thread (a `LocalSet` on a current-thread runtime): the run is bounded by
//! the scenario's `max_sim_time` as a wall-clock limit, and everything — sockets, tasks, buffers —
//! is released when the runtime is dropped at the end of [`run`]. Each node runs as an
//! incarnation that `[[faults]]` can crash and bounce ([`super::lifecycle`]); link faults are
//! applied in the driver's delay line ([`super::faults`]).

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{LocalSet, spawn_local};

use super::lifecycle::{self, Nodes};
use super::netns::{Net, Network, NodeNet};
use super::peer::Node;
use super::rogue::{RogueReport, run_rogue};
use super::store::{DataDir, check_disk, generate_blob_files, prefill_agent_files};
use super::{Ctx, DriverOptions, DriverRun, NodeAddrs, Transport};
use crate::build::Addresses;
use crate::scenario::Scenario;

/// tokio TCP: loopback only, or only the addresses of an allow-list.
#[derive(Clone, Debug)]
pub struct TokioTcp {
    start: tokio::time::Instant,
    /// The only addresses it binds or dials; `None`: loopback addresses only.
    allowed: Option<Arc<BTreeSet<SocketAddr>>>,
    /// The node's network namespace (`--net netns`): sockets are made there.
    netns: Option<NodeNet>,
}

impl TokioTcp {
    /// A loopback-only transport whose clock starts now.
    pub fn new() -> Self {
        TokioTcp { start: tokio::time::Instant::now(), allowed: None, netns: None }
    }

    /// The same transport (and clock) making its sockets in a node's namespace.
    pub fn in_netns(&self, node: NodeNet) -> Self {
        TokioTcp { netns: Some(node), ..self.clone() }
    }

    /// A new unbound socket for listening on `addr`: in the node's namespace (`addr` must be its
    /// address), or on loopback.
    pub(crate) fn listen_socket(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        match &self.netns {
            Some(ns) => ns.socket_for(addr),
            None => {
                loopback_only(addr)?;
                if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            }
        }
    }

    /// A transport that binds and dials only `allowed` (any IP), whose clock starts now.
    pub fn with_allowed(allowed: impl IntoIterator<Item = SocketAddr>) -> Self {
        TokioTcp {
            start: tokio::time::Instant::now(),
            allowed: Some(Arc::new(allowed.into_iter().collect())),
            netns: None,
        }
    }

    fn check(&self, addr: SocketAddr) -> io::Result<()> {
        match &self.allowed {
            None => loopback_only(addr),
            Some(set) if set.contains(&addr) => Ok(()),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{addr} is not one of the node addresses given"),
            )),
        }
    }
}

impl Default for TokioTcp {
    fn default() -> Self {
        TokioTcp::new()
    }
}

fn loopback_only(addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{addr} is not a loopback address")))
    }
}

impl Transport for TokioTcp {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        if let Some(ns) = &self.netns {
            return ns.bind(addr);
        }
        self.check(addr)?;
        TcpListener::bind(addr).await
    }

    async fn accept(&self, l: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = l.accept().await?;
        // Small control messages must not wait behind Nagle's algorithm.
        s.set_nodelay(true)?;
        Ok((s, a))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = match &self.netns {
            Some(ns) => ns.connect(addr).await?,
            None => {
                self.check(addr)?;
                TcpStream::connect(addr).await?
            }
        };
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// Runs a scenario on loopback sockets until every pull has ended or `max_sim_time` of wall time
/// has passed, applying its `[[faults]]` on the wall clock ([`super::lifecycle`]). Blobs are kept on disk ([`super::store`]) in a folder of the run's own under
/// `options.data_dir` (default: the system's temporary folder), removed at the end unless
/// `options.keep_data`; the run is refused when they would not fit there.
pub fn run(scenario: Scenario, mut options: DriverOptions) -> Result<DriverRun, String> {
    if options.net == Net::Netns && options.rogue.is_some() {
        return Err(
            "the misbehaving peer of a robustness test runs on loopback only, not with --net netns".into()
        );
    }
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("creating the data folder {}: {e}", parent.display()))?;
    check_disk(&scenario, &parent)?;
    let data = DataDir::create(&parent, options.keep_data)?;
    let blobs = generate_blob_files(&scenario, &data)?;
    prefill_agent_files(&scenario, &blobs, &data)?;
    let data_path = data.path().to_path_buf();
    let keep_data = options.keep_data;
    // Made before the runtime, so dropped after it: once every socket in the namespaces is closed.
    let network = match options.net {
        Net::Loopback => None,
        Net::Netns => Some(Network::create(&scenario)?),
    };
    let network = network.as_ref();
    let rt = super::current_thread_runtime()?;
    let local = LocalSet::new();
    let result = local.block_on(&rt, async move {
        // Network node n's transport: agents, then origins, then trackers (the slots of `Nodes`).
        let on = |t: &TokioTcp, n: usize| match network.and_then(|net| net.node(n)) {
            Some(node) => t.in_netns(node),
            None => t.clone(),
        };
        let t0 = TokioTcp::new();
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let err = |e: io::Error| format!("binding a loopback port: {e}");
        // Nodes listen on ports a restarted incarnation can bind again (`lifecycle::listen_in`).
        let bind = |n: usize| {
            let addr = network.and_then(|net| net.addr(n)).map_or(any, |ip| SocketAddr::from((ip, 0)));
            lifecycle::listen_in(&on(&t0, n), addr).map_err(|e| format!("node {n}: binding {addr}: {e}"))
        };
        let (hosts, origins) = (scenario.topology.hosts.len(), scenario.origins.len());
        let mut agent_l = Vec::new();
        for n in 0..hosts {
            agent_l.push(bind(n)?);
        }
        let mut origin_l = Vec::new();
        for o in 0..origins {
            origin_l.push((bind(hosts + o)?, bind(hosts + o)?));
        }
        let mut tracker_l = Vec::new();
        for k in 0..scenario.trackers {
            tracker_l.push(bind(hosts + origins + k)?);
        }
        let local_addr =
            |l: &TcpListener| l.local_addr().map_err(|e| format!("reading a local address: {e}"));
        let addrs = NodeAddrs {
            p2p: Addresses {
                agents: agent_l.iter().map(local_addr).collect::<Result<_, _>>()?,
                origins: origin_l.iter().map(|(p, _)| local_addr(p)).collect::<Result<_, _>>()?,
                trackers: tracker_l.iter().map(local_addr).collect::<Result<_, _>>()?,
            },
            origin_http: origin_l.iter().map(|(_, h)| local_addr(h)).collect::<Result<_, _>>()?,
        };
        let limit = scenario.max_sim_time;
        let mut ctx = Ctx::new(scenario, addrs, blobs, options.interval)?;
        // Loopback has next to no latency: the driver adds the scenario's.
        ctx.emulate_latency = true;
        ctx.connect_cost = super::ConnectCost::RoundTrip;
        ctx.data_dir = Some(data_path);
        if network.is_some() {
            // The kernel shapes every link (tc); TCP shares the bandwidth.
            for b in &mut ctx.buckets {
                *b = (super::TokenBucket::new(0, 0), super::TokenBucket::new(0, 0));
            }
        }
        let ctx = Rc::new(ctx);
        let agents = ctx.agents();
        let nodes: Vec<Node> = (0..agents + ctx.scenario.origins.len() as u32)
            .map(|n| Node::build(&ctx, n, shoal_protocols::Instant::ZERO))
            .collect();
        // The clock starts now, with every node built.
        let t = TokioTcp::new();
        let mut lives = Nodes::new(t.clone(), ctx.clone());
        for slot in 0..hosts + origins + ctx.scenario.trackers {
            lives.set_transport(slot, on(&t, slot));
        }
        for (i, l) in tracker_l.into_iter().enumerate() {
            lives.start_tracker(i, l);
        }
        let mut origin_l = origin_l.into_iter();
        let mut agent_l = agent_l.into_iter();
        for (n, state) in nodes.into_iter().enumerate() {
            let n = n as u32;
            let (l, http) = if n < agents {
                (agent_l.next().expect("one listener per agent"), None)
            } else {
                let (l, h) = origin_l.next().expect("two listeners per origin");
                (l, Some(h))
            };
            lives.start_node(n, state, l, http);
        }
        let rogue_report = Rc::new(std::cell::RefCell::new(RogueReport::default()));
        if let Some(kind) = options.rogue {
            let l = t.bind(any).await.map_err(err)?;
            let addr = local_addr(&l)?;
            spawn_local(run_rogue(t.clone(), ctx.clone(), kind, l, addr, rogue_report.clone()));
        }
        let total = ctx.scenario.workload.pulls.len();
        let mut timed_out = false;
        let mut interrupted = false;
        let mut killed = false;
        loop {
            // Faults due at 0 apply before any node has run.
            lives.apply_due().await;
            if let Some((host, at)) = options.kill_agent
                && !killed
                && t.now() >= at
            {
                killed = true;
                let error = shoal_protocols::peer::DownloadError::Removed.to_string();
                lives.kill_agent(host, &error).await;
                // A killed agent's later pulls fail as they come due.
                lives.fail_due_pulls();
            }
            if let Some(why) = ctx.fatal.borrow_mut().take() {
                return Err(why);
            }
            if ctx.done() {
                break;
            }
            if t.now() >= limit {
                timed_out = true;
                break;
            }
            if crate::stopped(&options.stop) {
                interrupted = true;
                break;
            }
            if let Some(p) = options.progress.as_mut() {
                let done = ctx.metrics.borrow().images_finished();
                p(t.now().as_secs_f64(), done, total);
            }
            // Wakes for the next fault, or every 5 ms.
            let tick = Duration::from_millis(5);
            tokio::time::sleep(lives.until_next_fault().map_or(tick, |d| d.min(tick))).await;
        }
        let mut run = DriverRun::from_ctx(&ctx, "real", timed_out);
        run.net = options.net;
        if interrupted {
            run = run.interrupted_at(super::now(&t));
        }
        if options.rogue.is_some() {
            run.rogue = Some(rogue_report.borrow().clone());
        }
        Ok(run)
    });
    // Dropping the LocalSet and the runtime cancels every task and closes every socket (the
    // nodes' incarnations were dropped, so aborted, with the block above).
    drop(local);
    drop(rt);
    if keep_data {
        tracing::info!(path = %data.path().display(), "blobs kept");
    }
    drop(data);
    result
}
