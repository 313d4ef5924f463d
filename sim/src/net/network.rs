//! The set of flows in flight, their progress, and per-resource accounting.
//!
//! Invariants (between public calls):
//! - an `Active` flow is listed exactly once in `resources[r].flows` for every `r` of its path, at
//!   index `pos[i]`; its rate is positive unless every resource it crosses is saturated by
//!   floating-point noise, in which case its finish time is "never" until the next re-solve;
//! - `remaining` is the flow's bytes still to send at `updated_ns`; between rate changes it drains
//!   linearly, so the projected finish is `updated_ns + ceil(remaining / rate)` nanoseconds;
//! - every `Active` and `Immediate` flow is in `heap` at its projected finish; nothing else is;
//! - `resources[r].rates[i]` is the rate of flow `resources[r].flows[i]`;
//! - `resources[r].load` is the sum of the rates of the flows crossing `r`, and `carried` is the
//!   integral of `load` up to `updated_ns`.
//!
//! Flows are stored in a slab (`Vec` plus free list), so iteration order and ids depend only on the
//! sequence of calls: the model is deterministic.

use std::time::Duration;

use super::heap::CompletionHeap;
use super::solver::Scratch;
use super::{FlowId, Instant, MAX_PATH_LEN, ResourceId, Solver};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free,
    /// Zero bytes or no limited resource on the path: completes at its start time and holds no
    /// capacity.
    Immediate,
    /// Crossing its resources, sharing their capacity.
    Active,
}

#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub(crate) id: FlowId,
    pub(crate) state: State,
    pub(crate) token: u64,
    pub(crate) bytes: u64,
    pub(crate) remaining: f64,
    /// Bytes per second; 0 only between insertion and the first solve.
    pub(crate) rate: f64,
    pub(crate) updated_ns: u64,
    pub(crate) finish_ns: u64,
    pub(crate) len: u8,
    pub(crate) path: [u32; MAX_PATH_LEN],
    /// `pos[i]`: index of this flow in `resources[path[i]].flows`.
    pub(crate) pos: [u32; MAX_PATH_LEN],
    /// Segments appended behind the current one (bytes, token), sent back to back at the flow's
    /// rate; see [`Network::append`].
    pub(crate) queued: std::collections::VecDeque<(u64, u64)>,
}

impl Flow {
    pub(crate) fn path(&self) -> &[u32] {
        &self.path[..usize::from(self.len)]
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Resource {
    /// Bytes per second; `f64::INFINITY` when unlimited. The solver ignores unlimited resources.
    pub(crate) capacity: f64,
    /// Slots of the flows crossing this resource. Order is insertion order perturbed by
    /// `swap_remove`: deterministic.
    pub(crate) flows: Vec<u32>,
    /// `rates[i]` is the rate of `flows[i]`: the solver scans rates on a resource often, and a
    /// contiguous copy avoids a cache miss per flow.
    pub(crate) rates: Vec<f64>,
    pub(crate) load: f64,
    pub(crate) carried: f64,
    pub(crate) updated_ns: u64,
}

impl Resource {
    pub(crate) fn limited(&self) -> bool {
        self.capacity.is_finite()
    }

    fn advance(&mut self, now_ns: u64) {
        self.carried += self.load * (now_ns - self.updated_ns) as f64 * 1e-9;
        self.updated_ns = now_ns;
    }
}

/// A flow that has delivered its last byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    pub id: FlowId,
    pub token: u64,
    pub bytes: u64,
    /// When the last byte left the path (the engine adds the path latency).
    pub at: Instant,
}

/// A flow removed by [`Network::cancel_flow`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cancelled {
    pub token: u64,
    pub bytes: u64,
    /// Bytes sent before the cancellation (fractional: the model is a fluid).
    pub bytes_sent: f64,
}

/// Work done by the solver, for benchmarks and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SolverStats {
    /// Flow starts, ends and cancellations that needed a re-solve.
    pub solves: u64,
    /// Sum over rounds of the flows re-solved.
    pub flows_resolved: u64,
    /// Rate changes applied.
    pub rate_changes: u64,
    /// Entries pushed on the solver's heap (shares and triggers).
    pub heap_pushes: u64,
    /// Full scans of a resource's frozen flows.
    pub scans: u64,
    /// Solves whose fill had to be redone with more flows (a flow that had to move was held by
    /// a resource saturated earlier in the fill).
    pub refills: u64,
}

/// Flows sharing capacity max-min fairly. See the module documentation of [`crate::net`].
#[derive(Debug)]
pub struct Network {
    pub(crate) solver: Solver,
    /// Time of the latest mutation; calls must not go back before it.
    now_ns: u64,
    pub(crate) resources: Vec<Resource>,
    pub(crate) flows: Vec<Flow>,
    free: Vec<u32>,
    next_seq: u64,
    active: usize,
    heap: CompletionHeap,
    total_load: f64,
    moved: f64,
    moved_updated_ns: u64,
    completed_bytes: u64,
    pub(crate) scratch: Scratch,
    pub(crate) stats: SolverStats,
    /// [`Solver::Stepped`]: when the deferred solve runs, and the flows it starts from.
    pending_at: Option<u64>,
    pending: Vec<u32>,
}

fn ns_to_instant(ns: u64) -> Instant {
    Instant::from_nanos(ns)
}

/// Projected finish: the first nanosecond at which `remaining` bytes at `rate` are sent.
fn finish_ns(now_ns: u64, remaining: f64, rate: f64) -> u64 {
    // Below a millionth of a byte the flow is done; this absorbs float drift of `remaining`.
    if remaining <= 1e-6 {
        return now_ns;
    }
    if rate <= 0.0 {
        return u64::MAX;
    }
    let dt = (remaining * 1e9 / rate).ceil();
    // `as` saturates for values beyond u64 (and the flow then never finishes).
    now_ns.saturating_add(dt as u64)
}

impl Network {
    /// A network over resources with the given capacities in bytes per second (0 = unlimited),
    /// indexed by [`ResourceId`]; typically `topology.capacities()`.
    pub fn new(capacities_bytes_per_s: &[u64], solver: Solver) -> Self {
        let resources = capacities_bytes_per_s
            .iter()
            .map(|&c| Resource {
                capacity: if c == 0 { f64::INFINITY } else { c as f64 },
                flows: Vec::new(),
                rates: Vec::new(),
                load: 0.0,
                carried: 0.0,
                updated_ns: 0,
            })
            .collect::<Vec<_>>();
        Network {
            solver,
            now_ns: 0,
            scratch: Scratch::new(resources.len()),
            resources,
            flows: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            active: 0,
            heap: CompletionHeap::default(),
            total_load: 0.0,
            moved: 0.0,
            moved_updated_ns: 0,
            completed_bytes: 0,
            stats: SolverStats::default(),
            pending_at: None,
            pending: Vec::new(),
        }
    }

    pub fn solver(&self) -> Solver {
        self.solver
    }

    /// Moves the model clock to `now`.
    ///
    /// # Panics
    /// If `now` is before an earlier call's time: the engine must feed events in time order.
    fn advance_clock(&mut self, now: Instant) -> u64 {
        let now_ns = now.as_nanos();
        assert!(now_ns >= self.now_ns, "network model time went backwards: {now_ns} ns < {} ns", self.now_ns);
        // A deferred solve due before `now` runs at its own time first (the engine pops it through
        // `pop_completed`; this keeps direct callers consistent).
        if let Some(at) = self.pending_at.filter(|&at| at < now_ns) {
            self.run_pending(at);
        }
        self.now_ns = now_ns;
        now_ns
    }

    /// Re-solves around `scratch.seeds` now, or with [`Solver::Stepped`] adds them to the next
    /// step's solve.
    fn solve_or_defer(&mut self, now_ns: u64) {
        let step = self.solver.step_ns();
        if step == 0 {
            self.resolve(now_ns);
            return;
        }
        self.pending.append(&mut self.scratch.seeds);
        let at = now_ns.div_ceil(step).saturating_mul(step);
        self.pending_at = Some(self.pending_at.map_or(at, |p| p.min(at)));
    }

    /// Runs the deferred solve at `at_ns` over the flows seeded since the last one that are still
    /// active (a slot freed and reused meanwhile holds a new flow, itself seeded).
    fn run_pending(&mut self, at_ns: u64) {
        self.pending_at = None;
        let mut seeds = std::mem::take(&mut self.pending);
        seeds.retain(|&s| self.flows[s as usize].state == State::Active);
        seeds.sort_unstable();
        seeds.dedup();
        self.pending = std::mem::replace(&mut self.scratch.seeds, seeds);
        self.pending.clear();
        if !self.scratch.seeds.is_empty() {
            self.resolve(at_ns);
        }
    }

    fn advance_moved(&mut self, now_ns: u64) {
        self.moved += self.total_load * (now_ns - self.moved_updated_ns) as f64 * 1e-9;
        self.moved_updated_ns = now_ns;
    }

    /// Starts a flow of `bytes` along `path` (resources in order; duplicates are ignored) and
    /// re-solves rates. `token` is returned with the completion. A flow of zero bytes, or whose path
    /// has no limited resource, completes at `now`.
    ///
    /// The engine must have popped every completion due at or before `now` first.
    ///
    /// # Panics
    /// If `now` is earlier than a previous call, a resource id is out of range, the path has more
    /// than [`MAX_PATH_LEN`] distinct resources, or more than 2^24 flows are active.
    pub fn start_flow(&mut self, now: Instant, path: &[ResourceId], bytes: u64, token: u64) -> FlowId {
        let now_ns = self.advance_clock(now);
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => {
                assert!(self.flows.len() < (1 << 24), "more than 2^24 concurrent flows");
                self.flows.push(Flow {
                    id: FlowId(0),
                    state: State::Free,
                    token: 0,
                    bytes: 0,
                    remaining: 0.0,
                    rate: 0.0,
                    updated_ns: 0,
                    finish_ns: 0,
                    len: 0,
                    path: [0; MAX_PATH_LEN],
                    pos: [0; MAX_PATH_LEN],
                    queued: std::collections::VecDeque::new(),
                });
                self.scratch.grow_flows(self.flows.len());
                self.flows.len() - 1
            }
        };
        let id = FlowId::new(self.next_seq, slot as u32);
        self.next_seq += 1;

        let mut res = [0u32; MAX_PATH_LEN];
        let mut len = 0usize;
        let mut constrained = false;
        for r in path {
            assert!(r.index() < self.resources.len(), "resource {} out of range", r.0);
            if res[..len].contains(&r.0) {
                continue;
            }
            assert!(len < MAX_PATH_LEN, "path longer than {MAX_PATH_LEN} resources");
            res[len] = r.0;
            len += 1;
            constrained |= self.resources[r.index()].limited();
        }
        let flow = &mut self.flows[slot];
        flow.id = id;
        flow.token = token;
        flow.bytes = bytes;
        flow.remaining = bytes as f64;
        flow.rate = 0.0;
        flow.updated_ns = now_ns;
        flow.finish_ns = now_ns;
        flow.len = len as u8;
        flow.path = res;
        flow.queued.clear();
        self.active += 1;

        if bytes == 0 || !constrained {
            // Crosses its resources in zero time: account the bytes now.
            flow.state = State::Immediate;
            for &r in &res[..len] {
                self.resources[r as usize].carried += bytes as f64;
            }
            self.moved += bytes as f64;
            self.heap.set(slot, now_ns, id.0);
            return id;
        }
        flow.state = State::Active;
        for (i, &r) in res[..len].iter().enumerate() {
            let res = &mut self.resources[r as usize];
            self.flows[slot].pos[i] = res.flows.len() as u32;
            res.flows.push(slot as u32);
            res.rates.push(0.0);
        }
        self.scratch.seeds.clear();
        self.scratch.seeds.push(slot as u32);
        self.solve_or_defer(now_ns);
        id
    }

    /// Removes an active flow, re-solves, and says how much it had sent. `None` if the flow already
    /// completed or was cancelled.
    ///
    /// # Panics
    /// If `now` is earlier than a previous call.
    pub fn cancel_flow(&mut self, now: Instant, id: FlowId) -> Option<Cancelled> {
        let now_ns = self.advance_clock(now);
        let slot = self.live_slot(id)?;
        let flow = &self.flows[slot];
        let (token, bytes, state) = (flow.token, flow.bytes, flow.state);
        let sent = if state == State::Active {
            let remaining = flow.remaining - flow.rate * (now_ns - flow.updated_ns) as f64 * 1e-9;
            (bytes as f64 - remaining.max(0.0)).max(0.0)
        } else {
            bytes as f64
        };
        self.retire(slot, now_ns);
        Some(Cancelled { token, bytes, bytes_sent: sent })
    }

    /// When the deferred solve of [`Solver::Stepped`] runs, if changes are waiting for it.
    pub fn pending_solve(&self) -> Option<Instant> {
        self.pending_at.map(ns_to_instant)
    }

    /// When the next flow delivers its last byte, if any flow is active; with [`Solver::Stepped`],
    /// or when the deferred solve is due if that is earlier (then [`Network::pop_completed`] at that
    /// time runs it and returns what finishes by then, possibly nothing).
    pub fn next_completion(&self) -> Option<Instant> {
        let done = self.heap.peek().map(|(t, _)| t);
        let next = match (done, self.pending_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(ns_to_instant)
    }

    /// The next flow whose last byte is sent at or before `now`, in (time, [`FlowId`]) order, or
    /// `None`. Removing it re-solves rates at its own finish time, so call this repeatedly (and
    /// ideally with `now = next_completion()`) before starting or cancelling flows at `now`.
    pub fn pop_completed(&mut self, now: Instant) -> Option<Completed> {
        debug_assert!(self.heap.len() <= self.active, "heap holds a retired flow");
        let due = |at: Option<u64>| at.filter(|&t| t <= now.as_nanos());
        let (finish, slot) = loop {
            let finish = due(self.heap.peek().map(|(t, _)| t));
            match (finish, due(self.pending_at)) {
                // Flows finishing before (or at) the solve are settled first: they seed it.
                (Some(f), p) if p.is_none_or(|p| f <= p) => break self.heap.peek()?,
                (_, Some(p)) => {
                    self.now_ns = self.now_ns.max(p);
                    self.run_pending(p);
                }
                (_, None) => return None,
            }
        };
        // A finish before the clock can only follow a contract breach (a start or cancel at a later
        // time while this completion was due); complete it at the clock rather than go back.
        let at = finish.max(self.now_ns);
        self.now_ns = at;
        let flow = &mut self.flows[slot];
        let done = Completed { id: flow.id, token: flow.token, bytes: flow.bytes, at: ns_to_instant(at) };
        self.completed_bytes += flow.bytes;
        if let Some((bytes, token)) = flow.queued.pop_front() {
            // The next segment follows on the same path: the set of flows, and so every rate, is
            // unchanged; only this flow's finish moves.
            flow.token = token;
            flow.bytes = bytes;
            flow.remaining = bytes as f64;
            flow.updated_ns = at;
            flow.finish_ns =
                if flow.state == State::Active { finish_ns(at, flow.remaining, flow.rate) } else { at };
            let (finish, id) = (flow.finish_ns, flow.id);
            if flow.state == State::Immediate {
                for &r in flow.path() {
                    self.resources[r as usize].carried += bytes as f64;
                }
                self.moved += bytes as f64;
            }
            if flow.state == State::Immediate || flow.rate > 0.0 {
                self.heap.set(slot, finish, id.0);
            }
            return Some(done);
        }
        self.retire(slot, at);
        Some(done)
    }

    /// Appends a segment of `bytes` to a live flow: it is sent right after the flow's current and
    /// already queued segments, on the same path, and completes with its own `token`. This is how a
    /// TCP connection sends messages back to back: because the set of flows does not change when one
    /// segment ends and the next begins, no rate is re-solved — a stream of pieces costs one solve
    /// when it starts and one when it goes idle, not two per piece. Returns false (and does nothing)
    /// if the flow is no longer live.
    pub fn append(&mut self, id: FlowId, bytes: u64, token: u64) -> bool {
        let Some(slot) = self.live_slot(id) else { return false };
        self.flows[slot].queued.push_back((bytes, token));
        true
    }

    /// Takes a flow out of the heap, its resources and the slab, then re-solves around it.
    fn retire(&mut self, slot: usize, now_ns: u64) {
        self.heap.remove(slot);
        self.active -= 1;
        let state = self.flows[slot].state;
        self.flows[slot].state = State::Free;
        self.free.push(slot as u32);
        if state != State::Active {
            return;
        }
        // Seed the re-solve while the flow is still linked, stop its contribution to the
        // accounting, then unlink it from every resource.
        self.scratch.seeds.clear();
        self.seed_removal(slot);
        self.set_rate(slot, 0.0, now_ns);
        let (len, path, pos) = {
            let f = &self.flows[slot];
            (usize::from(f.len), f.path, f.pos)
        };
        for i in 0..len {
            let r = path[i] as usize;
            let p = pos[i] as usize;
            self.resources[r].rates.swap_remove(p);
            let list = &mut self.resources[r].flows;
            list.swap_remove(p);
            if let Some(&moved) = list.get(p) {
                let m = &mut self.flows[moved as usize];
                // The moved flow crosses `r` exactly once (paths are deduplicated).
                if let Some(j) = m.path().iter().position(|&x| x as usize == r) {
                    m.pos[j] = p as u32;
                }
            }
            if list.is_empty() {
                // Reset accumulated float drift of the load sum.
                self.resources[r].load = 0.0;
            }
        }
        if self.active == 0 {
            self.total_load = 0.0;
        }
        self.solve_or_defer(now_ns);
    }

    /// Applies a new rate to an active flow at `now_ns`: settles its progress and the accounting
    /// at the old rate, then projects its finish at the new one.
    pub(crate) fn set_rate(&mut self, slot: usize, rate: f64, now_ns: u64) {
        self.advance_moved(now_ns);
        let f = &mut self.flows[slot];
        let dt = (now_ns - f.updated_ns) as f64 * 1e-9;
        f.remaining = (f.remaining - f.rate * dt).max(0.0);
        f.updated_ns = now_ns;
        let delta = rate - f.rate;
        f.rate = rate;
        f.finish_ns = finish_ns(now_ns, f.remaining, rate);
        let (id, finish) = (f.id, f.finish_ns);
        for (&r, &p) in f.path[..usize::from(f.len)].iter().zip(&f.pos) {
            let res = &mut self.resources[r as usize];
            res.advance(now_ns);
            res.load += delta;
            res.rates[p as usize] = rate;
        }
        self.total_load += delta;
        if rate > 0.0 {
            self.heap.set(slot, finish, id.0);
        }
        self.stats.rate_changes += 1;
    }

    fn live_slot(&self, id: FlowId) -> Option<usize> {
        let slot = id.slot();
        let f = self.flows.get(slot)?;
        (f.id == id && f.state != State::Free).then_some(slot)
    }

    /// Current rate of a flow in bytes per second (`f64::INFINITY` for one completing at once).
    pub fn rate(&self, id: FlowId) -> Option<f64> {
        let slot = self.live_slot(id)?;
        let f = &self.flows[slot];
        Some(if f.state == State::Immediate { f64::INFINITY } else { f.rate })
    }

    /// When the flow will deliver its last byte if rates do not change.
    pub fn projected_finish(&self, id: FlowId) -> Option<Instant> {
        self.live_slot(id).map(|s| ns_to_instant(self.flows[s].finish_ns))
    }

    /// Bytes the flow has still to send at `now` (not before the last mutation).
    pub fn remaining_bytes(&self, id: FlowId, now: Instant) -> Option<f64> {
        let f = &self.flows[self.live_slot(id)?];
        if f.state != State::Active {
            return Some(0.0);
        }
        let dt = now.as_nanos().saturating_sub(f.updated_ns) as f64 * 1e-9;
        Some((f.remaining - f.rate * dt).max(0.0))
    }

    /// Flows started and not yet completed or cancelled.
    pub fn active_flows(&self) -> usize {
        self.active
    }

    /// Ids of the active flows, ascending.
    pub fn flow_ids(&self) -> Vec<FlowId> {
        let mut ids: Vec<FlowId> =
            self.flows.iter().filter(|f| f.state != State::Free).map(|f| f.id).collect();
        ids.sort_unstable();
        ids
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Capacity in bytes per second; `None` when unlimited.
    pub fn capacity(&self, r: ResourceId) -> Option<f64> {
        let c = self.resources[r.index()].capacity;
        c.is_finite().then_some(c)
    }

    /// The resources an active flow crosses (deduplicated, in path order).
    pub fn flow_path(&self, id: FlowId) -> Option<Vec<ResourceId>> {
        self.live_slot(id).map(|s| self.flows[s].path().iter().map(|&r| ResourceId(r)).collect())
    }

    /// Current rates of the flows crossing `r`, in no particular order.
    pub fn rates_on(&self, r: ResourceId) -> &[f64] {
        &self.resources[r.index()].rates
    }

    /// Active flows with no bottleneck, i.e. no limited resource on their path that is saturated
    /// (load ≥ capacity·(1−`rel_tol`)) and on which no flow is faster than them by more than
    /// `rel_tol`. Empty iff the rates are max-min fair up to `rel_tol`. O(flows · path · degree):
    /// for tests and diagnostics.
    pub fn unbottlenecked_flows(&self, rel_tol: f64) -> Vec<FlowId> {
        let mut out = Vec::new();
        for f in self.flows.iter().filter(|f| f.state == State::Active) {
            let ok = f.path().iter().any(|&r| {
                let res = &self.resources[r as usize];
                let max = res.rates.iter().copied().fold(0.0, f64::max);
                res.limited() && res.load >= res.capacity * (1.0 - rel_tol) && f.rate >= max * (1.0 - rel_tol)
            });
            if !ok {
                out.push(f.id);
            }
        }
        out.sort_unstable();
        out
    }

    /// Number of active flows crossing `r`.
    pub fn flows_on(&self, r: ResourceId) -> usize {
        self.resources[r.index()].flows.len()
    }

    /// Current aggregate rate through `r`, bytes per second.
    pub fn load(&self, r: ResourceId) -> f64 {
        self.resources[r.index()].load
    }

    /// `load / capacity` (0 for an unlimited resource).
    pub fn utilisation(&self, r: ResourceId) -> f64 {
        let res = &self.resources[r.index()];
        if res.limited() { res.load / res.capacity } else { 0.0 }
    }

    /// Bytes that have crossed `r` from the start of the run up to `now` (at least the last
    /// mutation's time). Utilisation over an interval is the difference of two readings divided by
    /// capacity × interval.
    pub fn bytes_carried(&self, r: ResourceId, now: Instant) -> f64 {
        let res = &self.resources[r.index()];
        let dt = now.as_nanos().saturating_sub(res.updated_ns) as f64 * 1e-9;
        res.carried + res.load * dt
    }

    /// Bytes moved by all flows (completed, cancelled and in progress) up to `now`.
    pub fn bytes_moved(&self, now: Instant) -> f64 {
        let dt = now.as_nanos().saturating_sub(self.moved_updated_ns) as f64 * 1e-9;
        self.moved + self.total_load * dt
    }

    /// Bytes of the flows that completed (popped by [`Network::pop_completed`]); exact.
    pub fn bytes_completed(&self) -> u64 {
        self.completed_bytes
    }

    pub fn stats(&self) -> SolverStats {
        self.stats
    }

    /// Time of the latest mutation.
    pub fn now(&self) -> Instant {
        ns_to_instant(self.now_ns)
    }

    /// Transfer time of `bytes` at `rate` bytes per second, rounded up to the nanosecond: what a
    /// lone flow takes (tests and the lower bound use it).
    pub fn transfer_time(bytes: u64, rate_bytes_per_s: f64) -> Duration {
        Duration::from_nanos(finish_ns(0, bytes as f64, rate_bytes_per_s))
    }
}
