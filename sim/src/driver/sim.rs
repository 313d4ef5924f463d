//! `--engine turmoil`: the driver on turmoil's simulated TCP, seeded from the scenario seed.
//!
//! Every node is a turmoil host with its own address (agents 10.1.x.y, origins 10.2.x.y, trackers
//! 10.3.x.y); turmoil's step is 1 ms and each link's message latency is the scenario's latency
//! between the two nodes' places (base, plus each rack, pod or zone boundary crossed) plus up to
//! its jitter. turmoil has no bandwidth model: the driver's token buckets, on turmoil's clock,
//! apply the scenario's host capacities. Same scenario, seed and build ⇒ byte-identical outputs.
//!
//! turmoil's cost per step grows with hosts³ (reference/simulation.md §1.3): keep to tens of hosts.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use turmoil::net::{TcpListener, TcpStream};

use super::peer::{Node, run_node};
use super::tracker::run_tracker;
use super::{Ctx, DriverOptions, DriverRun, NodeAddrs, Transport, generate_blobs};
use crate::build::{Addresses, derive_seed};
use crate::scenario::{Fault, FaultVerb, NodeSet, Scenario};

/// turmoil's simulated TCP; must be used from inside a turmoil host.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilTcp;

impl Transport for TurmoilTcp {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpListener>> {
        // turmoil binds the unspecified address of the host.
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))
    }

    fn accept(&self, l: &TcpListener) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> {
        l.accept()
    }

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> {
        TcpStream::connect(addr)
    }
}

fn ip(kind: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, kind, (i >> 8) as u8, i as u8))
}

/// Simulated addresses of every node.
pub fn addresses(s: &Scenario) -> NodeAddrs {
    NodeAddrs {
        p2p: Addresses {
            agents: (0..s.topology.hosts.len()).map(|i| SocketAddr::new(ip(1, i + 1), 7000)).collect(),
            origins: (0..s.origins.len()).map(|i| SocketAddr::new(ip(2, i + 1), 9000)).collect(),
            trackers: (0..s.trackers).map(|i| SocketAddr::new(ip(3, i + 1), 8000)).collect(),
        },
        origin_http: (0..s.origins.len()).map(|i| SocketAddr::new(ip(2, i + 1), 9001)).collect(),
    }
}

/// Runs a scenario in turmoil until every pull has ended or `max_sim_time` of simulated time.
pub fn run(scenario: Scenario, mut options: DriverOptions) -> Result<DriverRun, String> {
    let blobs = generate_blobs(&scenario)?;
    let addrs = addresses(&scenario);
    let limit = scenario.max_sim_time;
    let latency = scenario.topology.latency;
    let jitter = scenario.topology.latency_jitter;
    let mut builder = turmoil::Builder::new();
    // turmoil polls hosts in insertion order each step, and its 1 ms step swallows sub-millisecond
    // jitter: every tie (announces, dials arriving in the same step) would be broken by host index,
    // which decides who connects to whom (a whole clique of early hosts fills every peer's
    // connection slots). With jitter in the scenario, hosts are polled in a seeded random order
    // instead, as the discrete-event engine breaks ties by jittered latency.
    if !jitter.is_zero() {
        builder.enable_random_order();
    }
    let mut sim = builder
        .rng_seed(derive_seed(scenario.seed, "turmoil", 0))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(latency)
        .max_message_latency(latency + jitter)
        .simulation_duration(limit + Duration::from_secs(1))
        // Backlog and flow-control credit in segments (payload chunks are 64 KiB each).
        .tcp_capacity(4096)
        .build();
    let mut ctx = Ctx::new(scenario, addrs, blobs, options.interval)?;
    ctx.connect_cost = super::ConnectCost::SynAck;
    let ctx = Rc::new(ctx);
    let p2p = ctx.addrs.p2p.clone();
    for (i, addr) in p2p.trackers.iter().copied().enumerate() {
        let ctx = ctx.clone();
        sim.host(addr.ip(), move || {
            let ctx = ctx.clone();
            async move {
                let l = TurmoilTcp.bind(addr).await?;
                run_tracker(TurmoilTcp, ctx, i, l).await;
                Ok(())
            }
        });
    }
    let agents = ctx.agents();
    let nodes: Vec<SocketAddr> = p2p.agents.iter().chain(&p2p.origins).copied().collect();
    for (n, addr) in nodes.into_iter().enumerate() {
        let ctx = ctx.clone();
        let n = n as u32;
        let http = (n >= agents).then(|| ctx.addrs.origin_http[(n - agents) as usize]);
        sim.host(addr.ip(), move || {
            let ctx = ctx.clone();
            async move {
                let state = Node::build(&ctx, n, super::now(&TurmoilTcp));
                let l = TurmoilTcp.bind(addr).await?;
                let h = match http {
                    Some(h) => Some(TurmoilTcp.bind(h).await?),
                    None => None,
                };
                run_node(TurmoilTcp, ctx, n, state, l, h).await;
                Ok(())
            }
        });
    }
    set_link_latencies(&sim, &ctx);
    let total = ctx.scenario.workload.pulls.len();
    let mut timed_out = false;
    let mut steps = 0u64;
    let mut interrupted = false;
    let faults = ctx.scenario.faults.clone();
    let mut next_fault = 0;
    // Agents whose software is down (crashed, not yet bounced).
    let mut down = vec![false; agents as usize];
    loop {
        while let Some(f) = faults.get(next_fault)
            && f.at <= sim.elapsed()
        {
            next_fault += 1;
            apply_fault(&mut sim, &ctx, f, &mut down);
        }
        let now = super::now_of(sim.elapsed());
        for (h, _) in down.iter().enumerate().filter(|(_, d)| **d) {
            ctx.fail_due_pulls(h as u32, now);
        }
        if ctx.done() {
            break;
        }
        sim.step().map_err(|e| format!("turmoil: {e}"))?;
        steps += 1;
        if ctx.done() {
            break;
        }
        if sim.elapsed() >= limit {
            timed_out = true;
            break;
        }
        if crate::stopped(&options.stop) {
            interrupted = true;
            break;
        }
        if steps.is_multiple_of(100)
            && let Some(p) = options.progress.as_mut()
        {
            let done = ctx.metrics.borrow().images_finished();
            p(sim.elapsed().as_secs_f64(), done, total);
        }
    }
    let mut run = DriverRun::from_ctx(&ctx, "turmoil", timed_out);
    if interrupted {
        run = run.interrupted_at(super::now_of(sim.elapsed()));
    }
    drop(sim);
    Ok(run)
}

/// Gives every pair of nodes the scenario's latency between their places (base latency plus each
/// rack, pod or zone boundary the path crosses) where it differs from the base latency, keeping
/// the jitter range on top. Trackers sit outside every group.
fn set_link_latencies(sim: &turmoil::Sim<'_>, ctx: &Ctx) {
    let topo = &ctx.scenario.topology;
    let p = &ctx.addrs.p2p;
    let nodes: Vec<(IpAddr, Option<u32>)> = p
        .agents
        .iter()
        .chain(&p.origins)
        .enumerate()
        .map(|(n, a)| (a.ip(), Some(n as u32)))
        .chain(p.trackers.iter().map(|a| (a.ip(), None)))
        .collect();
    for (i, &(a, na)) in nodes.iter().enumerate() {
        for &(b, nb) in &nodes[i + 1..] {
            let lat = topo.latency_between(ctx.place(na), ctx.place(nb));
            if lat != topo.latency {
                sim.set_link_latency(a, b, lat);
                sim.set_link_max_message_latency(a, b, lat + topo.latency_jitter);
            }
        }
    }
}

/// The simulated address of every node of a set.
fn ips(addrs: &NodeAddrs, set: &NodeSet) -> Vec<IpAddr> {
    let p = &addrs.p2p;
    let pick = |list: &[SocketAddr], idx: &[usize]| idx.iter().map(|&i| list[i].ip()).collect::<Vec<_>>();
    let mut v = pick(&p.agents, &set.hosts);
    v.extend(pick(&p.origins, &set.origins));
    v.extend(pick(&p.trackers, &set.trackers));
    v
}

/// Applies one scenario fault through turmoil. A crashed or restarted agent's running downloads
/// fail at once (`host crashed`, `host restarted`), and its pulls that come due while it is down
/// fail as they start (`host down`): none is silently lost, and none is started twice.
fn apply_fault(sim: &mut turmoil::Sim<'_>, ctx: &Ctx, f: &Fault, down: &mut [bool]) {
    let now = super::now_of(sim.elapsed());
    let nodes = ips(&ctx.addrs, &f.nodes);
    match f.verb {
        FaultVerb::Crash | FaultVerb::Bounce => {
            let crash = f.verb == FaultVerb::Crash;
            for &h in &f.nodes.hosts {
                if !down[h] {
                    ctx.fail_host(h as u32, now, if crash { "host crashed" } else { "host restarted" });
                }
                down[h] = crash;
            }
            for ip in nodes {
                if crash {
                    sim.crash(ip);
                } else {
                    sim.bounce(ip);
                }
            }
        }
        verb => {
            let peers = ips(&ctx.addrs, &f.peers);
            for &a in &nodes {
                for &b in &peers {
                    match verb {
                        FaultVerb::Partition => sim.partition(a, b),
                        FaultVerb::Repair => sim.repair(a, b),
                        FaultVerb::Hold => sim.hold(a, b),
                        FaultVerb::Release => sim.release(a, b),
                        FaultVerb::Crash | FaultVerb::Bounce => unreachable!("handled above"),
                    }
                }
            }
        }
    }
}
