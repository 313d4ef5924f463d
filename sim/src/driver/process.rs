//! One node per process: `shoal agent`, `shoal origin` and `shoal tracker` run a single node of a
//! scenario on tokio TCP, so the nodes of a run can be separate processes on separate machines.
//!
//! Every process loads the same scenario (and seed): blob content, digests, piece lengths and each
//! node's configuration follow from it. Every process is given the same [`NodeAddrs`] — where each
//! agent, origin and tracker listens — and binds and dials only those addresses. Each process's
//! clock starts when it starts — an agent's once every tracker and origin accepts connections —
//! and an agent starts its pulls at the scenario's times on that clock.
//!
//! An agent process ends when all its pulls have ended (or at the time limit) and returns its
//! [`DriverRun`]: its own downloads only. Origins and trackers serve until the time limit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::task::{LocalSet, spawn_local};

use super::peer::{Node, run_node};
use super::real::TokioTcp;
use super::store::{DataDir, check_disk, generate_blob_files};
use super::tracker::run_tracker;
use super::{Ctx, DriverRun, NodeAddrs, Transport};
use crate::build::Addresses;
use crate::scenario::Scenario;

/// Which node of the scenario a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent(usize),
    Origin(usize),
    Tracker(usize),
}

/// Explicit address lists, each overriding the base-port layout for its role.
#[derive(Clone, Debug, Default)]
pub struct AddrLists {
    pub agents: Option<Vec<SocketAddr>>,
    pub origins: Option<Vec<SocketAddr>>,
    pub origin_http: Option<Vec<SocketAddr>>,
    pub trackers: Option<Vec<SocketAddr>>,
}

/// Every node's address: on `ip`, agent `i` listens on `base + i`, origin `o` on `base + 1000 + o`
/// (its HTTP port `base + 2000 + o`), tracker `t` on `base + 3000 + t`; `lists` replace a role's
/// addresses. Each list must have one address per node of the scenario.
pub fn node_addrs(s: &Scenario, ip: IpAddr, base: u16, lists: &AddrLists) -> Result<NodeAddrs, String> {
    let layout = |offset: u32, n: usize, what: &str| -> Result<Vec<SocketAddr>, String> {
        (0..n)
            .map(|i| {
                let port = u32::from(base) + offset + i as u32;
                u16::try_from(port).map(|p| SocketAddr::new(ip, p)).map_err(|_| {
                    format!("--base-port {base}: {what} {i} would need port {port}, above 65535")
                })
            })
            .collect()
    };
    let pick = |given: &Option<Vec<SocketAddr>>, offset: u32, n: usize, what: &str, flag: &str| match given {
        Some(v) if v.len() != n => {
            Err(format!("{flag}: {} addresses given, the scenario has {n} {what}s", v.len()))
        }
        Some(v) => Ok(v.clone()),
        None => layout(offset, n, what),
    };
    if s.topology.hosts.len() > 1000 || s.origins.len() > 1000 || s.trackers > 1000 {
        return Err(
            "the base-port layout holds up to 1000 nodes of each kind; give explicit addresses".into()
        );
    }
    let addrs = NodeAddrs {
        p2p: Addresses {
            agents: pick(&lists.agents, 0, s.topology.hosts.len(), "agent", "--agents")?,
            origins: pick(&lists.origins, 1000, s.origins.len(), "origin", "--origins")?,
            trackers: pick(&lists.trackers, 3000, s.trackers, "tracker", "--trackers")?,
        },
        origin_http: pick(&lists.origin_http, 2000, s.origins.len(), "origin", "--origin-http")?,
    };
    let mut all: Vec<SocketAddr> = addrs.p2p.agents.clone();
    all.extend(&addrs.p2p.origins);
    all.extend(&addrs.p2p.trackers);
    all.extend(&addrs.origin_http);
    let mut sorted = all.clone();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("{} is given to two nodes", w[0]));
    }
    Ok(addrs)
}

/// Runs node `role` of the scenario until it is done (an agent whose pulls have all ended) or
/// `max_time` has passed. Returns the agent's run (its own downloads); `None` for origins and
/// trackers.
pub fn run_process(
    scenario: Scenario,
    addrs: NodeAddrs,
    role: Role,
    max_time: Duration,
    interval: Duration,
) -> Result<Option<DriverRun>, String> {
    let agents = scenario.topology.hosts.len();
    let (count, what) = match role {
        Role::Agent(i) => (agents, i),
        Role::Origin(o) => (scenario.origins.len(), o),
        Role::Tracker(t) => (scenario.trackers, t),
    };
    if what >= count {
        return Err(format!("{role:?}: the scenario has {count} of this kind (numbered from 0)"));
    }
    // Blobs on disk, as in `--engine real`: a folder of this process's own in the system's
    // temporary folder, removed when the process's run ends.
    let parent = std::env::temp_dir();
    check_disk(&scenario, &parent)?;
    let data = DataDir::create(&parent, false)?;
    let blobs = generate_blob_files(&scenario, &data)?;
    let data_path = data.path().to_path_buf();
    let rt = super::current_thread_runtime()?;
    let local = LocalSet::new();
    let result = local.block_on(&rt, async move {
        let mut allowed: Vec<SocketAddr> = addrs.p2p.agents.clone();
        allowed.extend(&addrs.p2p.origins);
        allowed.extend(&addrs.p2p.trackers);
        allowed.extend(&addrs.origin_http);
        let mut ctx = Ctx::new(scenario, addrs, blobs, interval)?;
        ctx.data_dir = Some(data_path);
        let ctx = Rc::new(ctx);
        let bind_err = |a: SocketAddr| move |e: io::Error| format!("binding {a}: {e}");
        let node = match role {
            Role::Agent(i) => Some((i as u32, ctx.addrs.p2p.agents[i], None)),
            Role::Origin(o) => {
                Some(((agents + o) as u32, ctx.addrs.p2p.origins[o], Some(ctx.addrs.origin_http[o])))
            }
            Role::Tracker(_) => None,
        };
        // Built before the clock starts (an origin hashes its blobs).
        let state = node.map(|(n, _, _)| Node::build(&ctx, n, shoal_protocols::Instant::ZERO));
        if let Role::Agent(_) = role {
            // An agent's first metainfo request fails at once if no tracker or origin answers:
            // wait (bounded) until every tracker and origin HTTP port accepts connections.
            let probe = TokioTcp::with_allowed(allowed.clone());
            let mut waiting: Vec<SocketAddr> = ctx.addrs.p2p.trackers.clone();
            waiting.extend(&ctx.addrs.origin_http);
            while let Some(&a) = waiting.first() {
                if probe.now() >= max_time {
                    return Err(format!("{a} did not accept connections within {max_time:?}"));
                }
                match tokio::time::timeout(Duration::from_secs(1), probe.connect(a)).await {
                    Ok(Ok(_)) => {
                        waiting.remove(0);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        // The node's clock starts now.
        let t = TokioTcp::with_allowed(allowed);
        match (role, node, state) {
            (Role::Tracker(i), _, _) => {
                let a = ctx.addrs.p2p.trackers[i];
                let l = t.bind(a).await.map_err(bind_err(a))?;
                spawn_local(run_tracker(t.clone(), ctx.clone(), i, l));
            }
            (_, Some((n, a, http)), Some(state)) => {
                let l = t.bind(a).await.map_err(bind_err(a))?;
                let h = match http {
                    Some(h) => Some(t.bind(h).await.map_err(bind_err(h))?),
                    None => None,
                };
                spawn_local(run_node(t.clone(), ctx.clone(), n, state, l, h));
            }
            _ => return Err(format!("{role:?}: no node to run")),
        }
        let mut timed_out = false;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(why) = ctx.fatal.borrow_mut().take() {
                return Err(why);
            }
            if let Role::Agent(i) = role
                && agent_done(&ctx, i)
            {
                break;
            }
            if t.now() >= max_time {
                timed_out = true;
                break;
            }
        }
        Ok(matches!(role, Role::Agent(_)).then(|| DriverRun::from_ctx(&ctx, "real", timed_out)))
    });
    drop(local);
    drop(rt);
    drop(data);
    result
}

/// Agent `i`'s pulls have all started and ended.
fn agent_done(ctx: &Ctx, i: usize) -> bool {
    let m = ctx.metrics.borrow();
    ctx.next_pull[i].get() == ctx.pulls_by_host[i].len()
        && m.pending_downloads == 0
        && m.images.iter().all(|im| im.finished())
}
