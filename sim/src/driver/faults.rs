//! What the driver needs to carry out `[[faults]]` itself, where the transport does not (the
//! real-socket engine; turmoil applies the verbs in its simulated network): the tasks of a node's
//! software, so that a crash can stop every one of them, and the state of each link between two
//! nodes, so that the delay line can drop or hold what crosses it. The real engine's crash and
//! bounce are in [`super::lifecycle`].
//!
//! # Tasks
//!
//! Dropping a tokio `JoinHandle` does not stop its task. A node's software is its task plus every
//! task it spawns (listeners, the delay pump, a reader and a writer per connection, dials, HTTP
//! calls and the connections an HTTP listener serves), and tasks spawned by those. Every task of
//! the driver is spawned with [`spawn_local`]: inside a task of an [`Incarnation`] it joins that
//! incarnation, and the task it spawns inherits it (a tokio task-local). Stopping the incarnation
//! aborts them all, which drops their futures and with them every socket they own, so the peers
//! see their connections reset or closed. Outside an incarnation (turmoil's hosts, node
//! processes) [`spawn_local`] is tokio's.
//!
//! # Links
//!
//! [`Links`] keeps turmoil's model, as the discrete-event engine does (`engine/faults.rs`): each
//! link between two nodes is healthy, partitioned or held, the last verb winning. What crosses a
//! link is judged when it would arrive (one emulated latency after it was read), so messages in
//! flight when a verb applies are caught too:
//! - partitioned: a message is dropped; a new connection (a dial, an HTTP call with no kept-alive
//!   connection) is refused at once, as turmoil drops the SYN; a request on a kept-alive HTTP
//!   connection, or its reply, is lost (the call's timeout ends it). A `partition` also drops
//!   what the link holds;
//! - held: messages, dials and HTTP requests and replies are kept and handed over at `release`
//!   in the order they arrived, at the time of the release;
//! - `repair` makes a link healthy and keeps what it holds; `release` makes it healthy and hands
//!   over what it holds.
//!
//! What a link holds is numbered by a generation: a `partition` or a `release` decides the fate
//! of the current generation (dropped or delivered) and opens the next, so a held item only has
//! to remember its link and generation.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use super::Ctx;
use crate::scenario::{FaultVerb, LinkState, NodeSet};

tokio::task_local! {
    /// The incarnation the running task belongs to, if any.
    static TASKS: Rc<Tasks>;
}

/// Every task of one node incarnation, by abort handle.
#[derive(Debug, Default)]
struct Tasks {
    handles: RefCell<Vec<AbortHandle>>,
    /// Length at which finished tasks are next pruned from `handles` (so it stays within twice
    /// the live tasks).
    prune_at: Cell<usize>,
    /// Aborted: a task spawned from now on is aborted at once.
    stopped: Cell<bool>,
}

impl Tasks {
    fn add(&self, h: AbortHandle) {
        if self.stopped.get() {
            h.abort();
            return;
        }
        let mut v = self.handles.borrow_mut();
        if v.len() >= self.prune_at.get().max(64) {
            v.retain(|h| !h.is_finished());
            self.prune_at.set(v.len() * 2);
        }
        v.push(h);
    }

    fn abort_all(&self) {
        self.stopped.set(true);
        for h in self.handles.borrow().iter() {
            h.abort();
        }
    }

    /// Every task has ended and its future (with its sockets) has been dropped.
    fn all_finished(&self) -> bool {
        self.handles.borrow().iter().all(AbortHandle::is_finished)
    }
}

/// Spawns `f` on the current `LocalSet`. Called from a task of an [`Incarnation`], the new task
/// joins it (and so do the tasks it spawns); elsewhere this is tokio's `spawn_local`.
pub(crate) fn spawn_local<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match TASKS.try_with(Rc::clone) {
        Ok(tasks) => {
            let h = tokio::task::spawn_local(TASKS.scope(tasks.clone(), f));
            tasks.add(h.abort_handle());
            h
        }
        Err(_) => tokio::task::spawn_local(f),
    }
}

/// One run of a node's software: the tasks spawned through it and, transitively, by them.
/// Dropping it aborts them all; [`Incarnation::stop`] also waits until they are gone.
#[derive(Debug, Default)]
pub(crate) struct Incarnation {
    tasks: Rc<Tasks>,
}

impl Incarnation {
    /// Spawns `f` as a task of this incarnation.
    pub(crate) fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let h = tokio::task::spawn_local(TASKS.scope(self.tasks.clone(), f));
        self.tasks.add(h.abort_handle());
        h
    }

    /// Aborts every task (each is dropped the next time the scheduler runs it).
    pub(crate) fn abort(&self) {
        self.tasks.abort_all();
    }

    /// Aborts every task and waits until each has been dropped, so that its sockets are closed
    /// (listeners included: the port can be bound again). Bounded: after [`STOP_YIELDS`] turns of
    /// the scheduler and then [`STOP_SLEEPS`] 1 ms sleeps it gives up waiting (an aborted task is
    /// dropped the next time the `LocalSet` runs it, so this takes a few turns).
    pub(crate) async fn stop(self) -> bool {
        self.tasks.abort_all();
        for _ in 0..STOP_YIELDS {
            if self.tasks.all_finished() {
                return true;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..STOP_SLEEPS {
            if self.tasks.all_finished() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.tasks.all_finished()
    }

    /// Tasks not yet pruned (live ones, and finished ones pruned later).
    #[cfg(test)]
    pub(crate) fn tasks(&self) -> usize {
        self.tasks.handles.borrow().len()
    }
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

const STOP_YIELDS: usize = 1000;
const STOP_SLEEPS: usize = 200;

/// What happens to a generation of held items once a verb has decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Deliver,
    Drop,
}

#[derive(Debug, Default)]
struct Link {
    state: LinkState,
    /// The generation items held now join.
    generation: u64,
    /// The fate of every generation before `generation`, by generation.
    fates: Vec<Fate>,
}

/// What becomes of something crossing a link when it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    /// Held, in this generation of the link's held items.
    Hold(u64),
}

/// Every link with a fault verb applied to it; link ends are network nodes (agents, then
/// origins) and trackers (`nodes + t`).
#[derive(Debug)]
pub(crate) struct Links {
    nodes: u32,
    links: RefCell<BTreeMap<(u32, u32), Link>>,
    /// Counts verbs applied; a held buffer re-checks its items when it changes.
    version: Cell<u64>,
    /// Wakes every delay pump and held crossing when a verb is applied.
    changed: Notify,
}

fn key(x: u32, y: u32) -> (u32, u32) {
    (x.min(y), x.max(y))
}

impl Links {
    /// The links of a run with `nodes` network nodes, all healthy.
    pub(crate) fn new(nodes: u32) -> Self {
        Links { nodes, links: RefCell::new(BTreeMap::new()), version: Cell::new(0), changed: Notify::new() }
    }

    /// Tracker `t` as a link end.
    pub(crate) fn tracker(&self, t: usize) -> u32 {
        self.nodes.saturating_add(u32::try_from(t).unwrap_or(u32::MAX))
    }

    /// Every node of a set as link ends.
    fn ends(&self, agents: usize, set: &NodeSet) -> Vec<u32> {
        let hosts = set.hosts.iter().copied();
        let origins = set.origins.iter().map(|o| agents + o);
        let mut v: Vec<u32> = hosts.chain(origins).map(|n| n as u32).collect();
        v.extend(set.trackers.iter().map(|&t| self.tracker(t)));
        v
    }

    /// Applies `partition`, `repair`, `hold` or `release` to every link between `a` and `b`
    /// (crash and bounce are not link verbs: ignored).
    pub(crate) fn apply(&self, verb: FaultVerb, agents: usize, a: &NodeSet, b: &NodeSet) {
        let (a, b) = (self.ends(agents, a), self.ends(agents, b));
        let mut links = self.links.borrow_mut();
        for &x in &a {
            for &y in &b {
                let l = links.entry(key(x, y)).or_default();
                match verb {
                    FaultVerb::Partition => {
                        l.state = LinkState::Partitioned;
                        l.fates.push(Fate::Drop);
                        l.generation += 1;
                    }
                    FaultVerb::Repair => l.state = LinkState::Healthy,
                    FaultVerb::Hold => l.state = LinkState::Held,
                    FaultVerb::Release => {
                        l.state = LinkState::Healthy;
                        l.fates.push(Fate::Deliver);
                        l.generation += 1;
                    }
                    FaultVerb::Crash | FaultVerb::Bounce => {}
                }
            }
        }
        drop(links);
        self.version.set(self.version.get() + 1);
        self.changed.notify_waiters();
    }

    /// What becomes of something from `from` arriving at `to` now.
    pub(crate) fn judge(&self, from: u32, to: u32) -> Verdict {
        if self.version.get() == 0 {
            return Verdict::Pass;
        }
        match self.links.borrow().get(&key(from, to)) {
            None => Verdict::Pass,
            Some(l) => match l.state {
                LinkState::Healthy => Verdict::Pass,
                LinkState::Partitioned => Verdict::Drop,
                LinkState::Held => Verdict::Hold(l.generation),
            },
        }
    }

    /// The fate of generation `generation` of what the link between `x` and `y` holds, once a
    /// verb has decided it.
    pub(crate) fn fate(&self, x: u32, y: u32, generation: u64) -> Option<Fate> {
        let links = self.links.borrow();
        let l = links.get(&key(x, y))?;
        l.fates.get(usize::try_from(generation).ok()?).copied()
    }

    /// Whether something from `from` gets to `to`: at once when the link is healthy, never when
    /// it is partitioned, and when held, at the `release` (or never, if a `partition` comes
    /// first). Loops once per verb applied while it waits: bounded by the scenario's faults.
    pub(crate) async fn crosses(&self, from: u32, to: u32) -> bool {
        let generation = match self.judge(from, to) {
            Verdict::Pass => return true,
            Verdict::Drop => return false,
            Verdict::Hold(g) => g,
        };
        loop {
            let changed = self.changed.notified();
            if let Some(f) = self.fate(from, to, generation) {
                return f == Fate::Deliver;
            }
            changed.await;
        }
    }

    /// Resolves when a verb is applied.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// What a node's delay line holds on held links, in arrival order.
#[derive(Debug)]
pub(crate) struct Held<I> {
    items: Vec<HeldItem<I>>,
    /// The [`Links`] version last checked.
    seen: u64,
}

#[derive(Debug)]
struct HeldItem<I> {
    from: u32,
    to: u32,
    generation: u64,
    input: I,
}

impl<I> Default for Held<I> {
    fn default() -> Self {
        Held { items: Vec::new(), seen: 0 }
    }
}

impl<I> Held<I> {
    /// `input`, arriving at node `to` from `from` (`None`: not yet known, as before a handshake),
    /// if the link lets it through now; held or dropped otherwise.
    pub(crate) fn arrive(&mut self, links: &Links, from: Option<u32>, to: u32, input: I) -> Option<I> {
        let Some(from) = from else { return Some(input) };
        match links.judge(from, to) {
            Verdict::Pass => Some(input),
            Verdict::Drop => None,
            Verdict::Hold(generation) => {
                self.items.push(HeldItem { from, to, generation, input });
                None
            }
        }
    }

    /// What a `release` has let through since the last call, in arrival order; what a
    /// `partition` dropped is forgotten.
    pub(crate) fn released(&mut self, links: &Links) -> Vec<I> {
        let version = links.version.get();
        if version == self.seen || self.items.is_empty() {
            self.seen = version;
            return Vec::new();
        }
        self.seen = version;
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for it in self.items.drain(..) {
            match links.fate(it.from, it.to, it.generation) {
                None => kept.push(it),
                Some(Fate::Deliver) => out.push(it.input),
                Some(Fate::Drop) => {}
            }
        }
        self.items = kept;
        out
    }
}

/// The link ends of an HTTP call by client `me` (a network node) or tracker `me_tracker`, to
/// `server` (a network node) or the tracker at `addr`; `None` when either end is no node of the
/// run (a test's rogue peer).
pub(crate) fn http_ends(
    ctx: &Ctx,
    me: Option<u32>,
    me_tracker: Option<usize>,
    server: Option<u32>,
    addr: SocketAddr,
) -> Option<(u32, u32)> {
    let from = me.or_else(|| me_tracker.map(|t| ctx.links.tracker(t)))?;
    let to = server
        .or_else(|| ctx.addrs.p2p.trackers.iter().position(|a| *a == addr).map(|t| ctx.links.tracker(t)))?;
    Some((from, to))
}

/// A new connection from `from` to `to` (network nodes) crossing the link: waits while it is held,
/// and is refused across a partition (turmoil drops the SYN, and its connect fails).
pub(crate) async fn dial_crosses(ctx: &Ctx, from: Option<u32>, to: Option<u32>) -> io::Result<()> {
    let (Some(from), Some(to)) = (from, to) else { return Ok(()) };
    if ctx.links.crosses(from, to).await { Ok(()) } else { Err(refused()) }
}

/// An HTTP request arriving at its server: refused across a partition when it needs a new
/// connection; on a kept-alive connection (`kept_alive`) it is lost, and waits for the call's
/// timeout. Held, it waits for the `release`.
pub(crate) async fn request_crosses(ctx: &Ctx, ends: Option<(u32, u32)>, kept_alive: bool) -> io::Result<()> {
    let Some((from, to)) = ends else { return Ok(()) };
    if ctx.links.crosses(from, to).await {
        return Ok(());
    }
    if kept_alive {
        std::future::pending::<()>().await;
    }
    Err(refused())
}

/// An HTTP reply arriving at its client: lost across a partition (the call's timeout ends it).
pub(crate) async fn reply_crosses(ctx: &Ctx, ends: Option<(u32, u32)>) {
    let Some((from, to)) = ends else { return };
    if !ctx.links.crosses(to, from).await {
        std::future::pending::<()>().await;
    }
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, "partitioned link")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(hosts: &[usize], origins: &[usize], trackers: &[usize]) -> NodeSet {
        NodeSet { hosts: hosts.to_vec(), origins: origins.to_vec(), trackers: trackers.to_vec() }
    }

    #[test]
    fn links_keep_turmoils_model_the_last_verb_winning() {
        // Three agents, one origin (node 3), one tracker (end 4).
        let l = Links::new(4);
        let (a, b) = (set(&[0], &[], &[]), set(&[1], &[0], &[0]));
        assert_eq!(l.judge(0, 1), Verdict::Pass);
        l.apply(FaultVerb::Hold, 3, &a, &b);
        assert_eq!(l.judge(1, 0), Verdict::Hold(0));
        assert_eq!(l.judge(0, 3), Verdict::Hold(0));
        assert_eq!(l.judge(4, 0), Verdict::Hold(0));
        assert_eq!(l.judge(1, 2), Verdict::Pass, "a link outside the sets");
        let mut held = Held::default();
        assert_eq!(held.arrive(&l, Some(1), 0, "first"), None);
        assert_eq!(held.arrive(&l, Some(3), 0, "second"), None);
        assert_eq!(held.arrive(&l, None, 0, "no remote yet"), Some("no remote yet"));
        assert!(held.released(&l).is_empty(), "nothing released yet");
        // A repair lets new messages through and keeps what is held.
        l.apply(FaultVerb::Repair, 3, &set(&[0], &[], &[]), &set(&[1], &[], &[]));
        assert_eq!(l.judge(0, 1), Verdict::Pass);
        assert!(held.released(&l).is_empty());
        // Releasing hands over what the released links held, in arrival order.
        l.apply(FaultVerb::Release, 3, &a, &b);
        assert_eq!(held.released(&l), ["first", "second"]);
        // A partition drops what crosses, and what the link held.
        l.apply(FaultVerb::Hold, 3, &a, &b);
        assert_eq!(held.arrive(&l, Some(1), 0, "lost"), None);
        l.apply(FaultVerb::Partition, 3, &a, &b);
        assert_eq!(l.judge(0, 1), Verdict::Drop);
        assert_eq!(held.arrive(&l, Some(1), 0, "dropped"), None);
        l.apply(FaultVerb::Release, 3, &a, &b);
        assert!(held.released(&l).is_empty(), "the partition dropped what was held");
        assert_eq!(l.judge(0, 1), Verdict::Pass);
    }

    #[test]
    fn a_held_crossing_waits_for_the_release() {
        let rt = super::super::current_thread_runtime().unwrap();
        rt.block_on(async {
            let l = Rc::new(Links::new(2));
            let (a, b) = (set(&[0], &[], &[]), set(&[1], &[], &[]));
            l.apply(FaultVerb::Hold, 2, &a, &b);
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let l2 = l.clone();
                    let crossing = tokio::task::spawn_local(async move { l2.crosses(0, 1).await });
                    tokio::task::yield_now().await;
                    assert!(!crossing.is_finished());
                    l.apply(FaultVerb::Release, 2, &a, &b);
                    assert!(crossing.await.unwrap(), "released");
                    l.apply(FaultVerb::Hold, 2, &a, &b);
                    let l2 = l.clone();
                    let crossing = tokio::task::spawn_local(async move { l2.crosses(1, 0).await });
                    tokio::task::yield_now().await;
                    l.apply(FaultVerb::Partition, 2, &a, &b);
                    assert!(!crossing.await.unwrap(), "dropped by the partition");
                })
                .await;
        });
    }
}
