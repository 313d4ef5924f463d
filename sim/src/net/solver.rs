//! Max-min fair rates by progressive filling, over all flows or over a growing set of flows.
//!
//! **Progressive filling** (both solvers): every unfixed flow's rate rises together; the resource
//! whose remaining capacity divided by its unfixed flows (its *share*) is smallest saturates first
//! and fixes its unfixed flows at that level; their rates are taken off their other resources.
//! Levels popped never decrease. A min-heap of shares with lazy re-evaluation gives
//! O((F·L) log R) for F flows of path length L: a share is re-queued only when it drops below its
//! queued key; an entry whose share grew is re-queued when it pops.
//!
//! **Incremental solver.** Around an event, a set `S` of flows is re-solved; every other flow is
//! *frozen* at its current rate, which the resource's load sum takes off its capacity (so frozen
//! flows are not visited to compute residuals). `S` starts as the new flow, or, when a flow ends, as
//! the flows that may have shared its bottleneck (on each of its resources, the flows as fast as
//! the fastest, the ended flow included). During the fill, frozen flows on a resource `r`
//! of `S` join `S`, unfixed at the current level, when:
//!   (ii) `r` is about to saturate at level `l` and they run faster than `l·(1+tolerance)`: a flow
//!        of `S` would be held below them on a shared bottleneck, which max-min forbids; or
//!   (i)  `r` was saturated before the event and they were its fastest flows (`r` may be their
//!        bottleneck), and either the level reaches their rate while flows of `S` on `r` are still
//!        rising (a *trigger* entry in the heap), or every flow of `S` on `r` is fixed elsewhere
//!        leaving slack above `tolerance` times their rate.
//! "Fastest" and "saturated" are judged within `2·tolerance`, so that the small imbalances the
//! tolerance leaves behind cannot hide a bottleneck from later events. When the heap is empty,
//! every flow of `S` is fixed and the new rates are applied.
//!
//! Why joining mid-fill is exact: a flow that joins at level `l` with rate `x ≥ l` consumed `x`
//! while frozen; had it been in `S` from the start it would have consumed the level, i.e. less, on
//! its resources, so the resources that saturated before `l` would have saturated later, not
//! earlier — except that a resource on its path that saturated at `l' < x` would have pulled it in
//! by (ii) then. So the fill up to `l` is the one a fresh fill over the larger `S` would have done.
//! Joins by (i) happen at the flow's rate (up to the slack tolerance). A frozen flow that must join
//! but crosses a resource that already saturated in this fill cannot: it was counted there at its
//! old rate. Then the whole fill is redone with it in `S` from the start (`SolverStats::refills`;
//! about one solve in 10 000 in the churn benchmark).
//!
//! Why the result is max-min (up to the tolerance): before the event every flow had a bottleneck
//! (a saturated resource on which no flow was faster). After the fill, a flow of `S` fixed at `r`
//! has `r` saturated, no flow of `S` on it faster (filling order) and, by (ii), no frozen flow
//! faster either; a frozen flow's old bottleneck is either untouched by `S` or, by (i), still
//! saturated with no faster flow. With `tolerance = 0` the answer is exact up to float rounding
//! (tests check it against [`Solver::Full`] on random instances). `S` only grows, so the fill ends;
//! at worst it covers the whole connected component, like the full solver.
//!
//! Tolerance in practice: rule (ii) and the slack test leave flows of `S` up to `tolerance` below
//! their max-min rate; imbalances left by successive events add up a little. Measured with
//! `examples/net_churn.rs`, the largest relative rate error against the full solver was about
//! twice the tolerance (see [`Solver::DEFAULT_TOLERANCE`]).
//!
//! Cost where shared links saturate (`scenarios/racks-2600.toml`: 65 racks behind 4:1 rack links,
//! ~4 000 flows, ~64 per rack uplink). Every rack link is saturated at nearly the same level, so a
//! flow ending on one uplink lifts its ~64 flows by ~1/64 (above the tolerance); each of them is
//! then held by some destination downlink, whose ~30 flows must share with it (rule (i)). A solve
//! re-rates ~1 200–1 500 flows (measured: `examples/net_churn.rs --hosts 2600 --rack-hosts 40
//! --per-host 1.6`, and the engine's `solver_flows_resolved / solver_solves`), nearly all of
//! which do change rate. The work is per flow of `S` (join, fix, apply the rate); making such runs
//! fast *exactly* needs a representation where the flows held by one link share one rate (progress
//! in "virtual time" per link), not a cheaper fill. What shoal offers today is
//! [`Solver::Stepped`]: the same fill, run once per step over the union of the step's seeds, so
//! the work per step is bounded by the flows alive rather than multiplied by the events (the
//! `net_churn_racks` bench: 5.6× the completions per second at a 1 ms step; the full `racks-2600`
//! run in 265 s). Its cost in accuracy is the step each start and end waits, measured in README.md.
//!
//! Ties: at equal share, a resource whose flows are all in `S` is filled before one with frozen
//! flows (whose share is compared as if `BOUNDARY_BIAS` larger). Without it, a flow whose unchanged
//! bottleneck ties with the residual its own old rate leaves elsewhere could look held there and
//! pull in frozen flows for nothing.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::network::{Flow, Network, Resource, State};
use super::{FlowId, Solver};

/// Relative handicap, in the fill order, of resources with frozen flows (see the module doc).
const BOUNDARY_BIAS: f64 = 1e-12;

/// Relative slack under which a resource counts as saturated when the tolerance is smaller: float
/// sums of rates miss the capacity by ~1e-15, and erring towards "saturated" only widens more.
const SATURATION_EPS: f64 = 1e-9;

/// Per-resource solver state. Stamps are compared with the current event, so no array is ever
/// cleared.
#[derive(Clone, Copy, Debug, Default)]
struct ResScratch {
    /// Event in which the resource was last touched (reset of the fields below).
    seen: u64,
    /// Flows of `S` crossing it, and those not yet fixed.
    s_count: u32,
    unfixed: u32,
    /// Invalidates stale share entries in the heap.
    version: u32,
    /// Whether an overtaking trigger (rule (i)) was queued.
    trigger: bool,
    /// Whether a valid share entry is in the heap, and its key. Shares only need re-queueing when
    /// they drop below it: an entry whose share has grown is re-evaluated when it pops.
    queued: bool,
    /// Whether it is listed in `Scratch::dirty` (share changed since the last flush).
    dirty: bool,
    queued_key: f64,
    /// Cached fastest frozen flow, valid while `scanned_at == s_count` (flows joining since then
    /// were all slower, so the maximum stands).
    max_frozen: f64,
    scanned_at: u32,
    /// Sum and maximum of the pre-event rates of the flows of `S` crossing it.
    s_old_sum: f64,
    max_s_old: f64,
    /// Sum of the levels of its fixed flows of `S`.
    fixed_sum: f64,
    /// Level at which it saturated, or -1 if it has not.
    sat_level: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowScratch {
    /// Event in which the flow is in `S`.
    in_s: u64,
    /// Event in which the flow was fixed.
    fixed: u64,
    new_rate: f64,
}

/// A heap entry: a resource's share, or a rule-(i) trigger at the level where flows of `S` on
/// the resource would overtake its fastest frozen flows.
///
/// 16 bytes, because heap operations are a third of the solver's time. A share entry's level is
/// recomputed when it pops; a trigger's level is its key.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Ordering key: the level, biased for shares of resources with frozen flows.
    key: f64,
    res: u32,
    /// The resource's share version, or `TRIGGER`.
    version: u32,
}

/// `Entry::version` of a trigger. Share versions restart at every first touch of a resource in
/// an event and stay far below it.
const TRIGGER: u32 = u32::MAX;

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.total_cmp(&other.key).then(self.res.cmp(&other.res)).then(self.version.cmp(&other.version))
    }
}

/// Reusable buffers of the solver; sized to the resources and flow slots.
#[derive(Debug)]
pub(crate) struct Scratch {
    stamp: u64,
    res: Vec<ResScratch>,
    flows: Vec<FlowScratch>,
    /// Flows the caller asks to re-solve (filled before `resolve`).
    pub(crate) seeds: Vec<u32>,
    s: Vec<u32>,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Resources whose share changed since the heap was last brought up to date.
    dirty: Vec<u32>,
    /// Flows that had to join but could not (see `Fill::join_frozen`).
    deferred: Vec<u32>,
    /// Counters for `SolverStats`.
    pub(crate) refills: u64,
    pub(crate) pushes: u64,
    pub(crate) scans: u64,
}

impl Scratch {
    pub(crate) fn new(resources: usize) -> Self {
        Scratch {
            stamp: 0,
            res: vec![ResScratch::default(); resources],
            flows: Vec::new(),
            seeds: Vec::new(),
            s: Vec::new(),
            heap: BinaryHeap::new(),
            dirty: Vec::new(),
            deferred: Vec::new(),
            refills: 0,
            pushes: 0,
            scans: 0,
        }
    }

    pub(crate) fn grow_flows(&mut self, slots: usize) {
        self.flows.resize(slots, FlowScratch::default());
    }
}

/// One progressive filling over `S`, growing `S` as rules (i) and (ii) fire.
struct Fill<'a> {
    resources: &'a [Resource],
    flows: &'a [Flow],
    sc: &'a mut Scratch,
    event: u64,
    /// Whether other flows stay frozen (incremental) or every flow is in `S` (full).
    incremental: bool,
    tol: f64,
    eps: f64,
    level: f64,
    /// Flows of `S` not yet fixed. When it drops to 0 the fill is over: every entry left in the
    /// heap is for a resource without unfixed flows and would be skipped.
    open: usize,
}

impl Fill<'_> {
    fn frozen_here(&self, r: usize) -> bool {
        self.sc.res[r].s_count as usize != self.resources[r].flows.len()
    }

    /// Capacity left for the unfixed flows of `S`. Frozen flows take their current rates, read off
    /// the load sum; a resource with every flow in `S` uses its exact capacity.
    fn residual(&self, r: usize) -> f64 {
        let (res, rs) = (&self.resources[r], &self.sc.res[r]);
        let base = if self.frozen_here(r) { res.capacity - (res.load - rs.s_old_sum) } else { res.capacity };
        base - rs.fixed_sum
    }

    fn was_saturated(&self, r: usize) -> bool {
        let res = &self.resources[r];
        res.load >= res.capacity * (1.0 - self.eps)
    }

    /// Current share of `r` and its ordering key.
    fn share(&self, r: usize) -> (f64, f64) {
        let level = self.residual(r).max(0.0) / f64::from(self.sc.res[r].unfixed);
        let key = if self.frozen_here(r) { level * (1.0 + BOUNDARY_BIAS) } else { level };
        (level, key)
    }

    /// Notes that the share of `r` may have dropped. The heap is brought up to date by `flush`
    /// before the next pop: a batch of joins onto one busy link (every flow of a saturated rack
    /// uplink) then costs one heap entry, not one per flow. Which entries are queued does not
    /// change the fill: an entry with a stale (low) key is re-queued when it pops, so resources
    /// saturate in order of their current share, ties by index, either way.
    fn requeue(&mut self, r: usize) {
        let rs = &mut self.sc.res[r];
        if !rs.dirty {
            rs.dirty = true;
            self.sc.dirty.push(r as u32);
        }
    }

    /// Re-queues every resource marked by `requeue`.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.sc.dirty);
        for &r in &dirty {
            self.sc.res[r as usize].dirty = false;
            self.requeue_now(r as usize);
        }
        dirty.clear();
        self.sc.dirty = dirty;
    }

    /// Keeps the invariant: every resource with unfixed flows has a valid heap entry whose key is
    /// at most its current share key.
    fn requeue_now(&mut self, r: usize) {
        if self.sc.res[r].unfixed == 0 {
            return;
        }
        let (_, key) = self.share(r);
        let rs = &mut self.sc.res[r];
        if rs.queued && rs.queued_key <= key {
            return;
        }
        rs.queued = true;
        rs.queued_key = key;
        rs.version += 1;
        let version = rs.version;
        self.sc.heap.push(Reverse(Entry { key, res: r as u32, version }));
        self.sc.pushes += 1;
    }

    /// A frozen flow crossing a resource that already saturated in this fill cannot join: it is
    /// held there (rule (ii) would have pulled it in had it been faster than that level).
    fn blocked(&self, f: u32) -> bool {
        self.flows[f as usize].path().iter().any(|&r| {
            let rs = &self.sc.res[r as usize];
            rs.seen == self.event && rs.sat_level >= 0.0
        })
    }

    /// Moves flow `f` into `S`, unfixed at the current level.
    fn join(&mut self, f: u32) {
        let fs = &mut self.sc.flows[f as usize];
        if fs.in_s == self.event {
            return;
        }
        fs.in_s = self.event;
        self.sc.s.push(f);
        self.open += 1;
        let flow = &self.flows[f as usize];
        let rate = flow.rate;
        for &r in flow.path() {
            let r = r as usize;
            if !self.resources[r].limited() {
                continue;
            }
            let rs = &mut self.sc.res[r];
            let first = rs.seen != self.event;
            if first {
                *rs = ResScratch { seen: self.event, sat_level: -1.0, ..ResScratch::default() };
            } else if rs.scanned_at == rs.s_count && rate < rs.max_frozen {
                rs.scanned_at += 1; // a slower flow left the frozen set: the cached maximum stands
            }
            rs.s_count += 1;
            rs.unfixed += 1;
            rs.s_old_sum += rate;
            rs.max_s_old = rs.max_s_old.max(rate);
            self.requeue(r);
            // Rule (i), overtaking: if frozen flows may be bottlenecked here, a trigger at the level
            // where S would pass them. (Whether they are is checked again when it pops: more flows
            // of S may have joined.)
            if self.incremental && first && self.frozen_here(r) && self.was_saturated(r) {
                let max_frozen = self.max_frozen(r);
                if max_frozen >= rate * (1.0 - self.eps) {
                    self.sc.res[r].trigger = true;
                    self.push_trigger(r, max_frozen * (1.0 + SATURATION_EPS));
                }
            }
        }
    }

    fn push_trigger(&mut self, r: usize, level: f64) {
        self.sc.heap.push(Reverse(Entry { key: level, res: r as u32, version: TRIGGER }));
        self.sc.pushes += 1;
    }

    /// Fastest frozen flow on `r` (cached; see `ResScratch::max_frozen`).
    fn max_frozen(&mut self, r: usize) -> f64 {
        let rs = &self.sc.res[r];
        if rs.scanned_at == rs.s_count && rs.scanned_at > 0 {
            return rs.max_frozen;
        }
        // Usually the fastest flow on the resource is frozen: find it in the contiguous rates and
        // check only it; otherwise filter the whole list.
        self.sc.scans += 1;
        let res = &self.resources[r];
        let mut max = 0.0;
        let mut arg = None;
        for (i, &x) in res.rates.iter().enumerate() {
            if x > max {
                max = x;
                arg = Some(i);
            }
        }
        let frozen = |i: usize| self.sc.flows[res.flows[i] as usize].in_s != self.event;
        if !arg.is_some_and(frozen) {
            max = (0..res.flows.len()).filter(|&i| frozen(i)).map(|i| res.rates[i]).fold(0.0, f64::max);
        }
        let rs = &mut self.sc.res[r];
        rs.max_frozen = max;
        rs.scanned_at = rs.s_count;
        max
    }

    /// Joins the frozen flows on `r` running at least at `min_rate` (strictly above if `strict`).
    fn join_frozen(&mut self, r: usize, min_rate: f64, strict: bool) -> bool {
        let resources = self.resources;
        let mut joined = false;
        let res = &resources[r];
        for (&f, &rate) in res.flows.iter().zip(&res.rates) {
            let fast = if strict { rate > min_rate } else { rate >= min_rate };
            if fast && self.sc.flows[f as usize].in_s != self.event {
                if self.blocked(f) {
                    // It should move but is counted at its old rate on a resource that already
                    // saturated: the fill is redone with it in S from the start.
                    self.sc.deferred.push(f);
                } else {
                    self.join(f);
                    joined = true;
                }
            }
        }
        joined
    }

    /// The frozen flows bottlenecked at `r` (it was saturated and they were its fastest flows),
    /// if any: their rate and the threshold to join them.
    fn frozen_bottleneck(&mut self, r: usize) -> Option<(f64, f64)> {
        let max_frozen = self.max_frozen(r);
        let top = max_frozen.max(self.sc.res[r].max_s_old);
        (max_frozen > 0.0 && max_frozen >= top * (1.0 - self.eps))
            .then_some((max_frozen, top * (1.0 - self.eps)))
    }

    /// `r` saturates at the current level: fix its unfixed flows of `S`.
    fn saturate(&mut self, r: usize) {
        let level = self.level;
        let rs = &mut self.sc.res[r];
        rs.sat_level = level;
        rs.unfixed = 0;
        let resources = self.resources;
        for &f in &resources[r].flows {
            let fs = &mut self.sc.flows[f as usize];
            if fs.in_s != self.event || fs.fixed == self.event {
                continue;
            }
            fs.fixed = self.event;
            fs.new_rate = level;
            self.open -= 1;
            for &r2 in self.flows[f as usize].path() {
                let r2 = r2 as usize;
                if !resources[r2].limited() {
                    continue;
                }
                self.sc.res[r2].fixed_sum += level;
                if r2 == r {
                    continue;
                }
                self.sc.res[r2].unfixed -= 1;
                if self.sc.res[r2].unfixed > 0 {
                    self.requeue(r2);
                } else {
                    self.drained(r2);
                }
            }
        }
    }

    /// Every flow of `S` on `r` was fixed elsewhere. Rule (i), slack: frozen flows bottlenecked at
    /// `r` may use what is left.
    fn drained(&mut self, r: usize) {
        if !self.incremental || !self.frozen_here(r) || !self.was_saturated(r) {
            return;
        }
        let slack = self.residual(r);
        if slack <= self.tol * self.sc.res[r].max_s_old {
            return;
        }
        if let Some((max_frozen, min_rate)) = self.frozen_bottleneck(r)
            && slack > self.tol * max_frozen
        {
            self.join_frozen(r, min_rate, false);
        }
    }

    fn run(&mut self) {
        loop {
            self.flush();
            if self.open == 0 {
                self.sc.heap.clear();
                break;
            }
            let Some(Reverse(e)) = self.sc.heap.pop() else { break };
            let r = e.res as usize;
            let trigger = e.version == TRIGGER;
            let current = !trigger && e.version == self.sc.res[r].version;
            if current {
                self.sc.res[r].queued = false;
            }
            if self.sc.res[r].unfixed == 0 {
                continue;
            }
            if trigger {
                let Some((max_frozen, min_rate)) = self.frozen_bottleneck(r) else { continue };
                let threshold = max_frozen * (1.0 + SATURATION_EPS);
                if e.key < threshold {
                    self.push_trigger(r, threshold);
                    continue;
                }
                // The key sits just above the frozen flows' rate so that the trigger pops after
                // shares at that rate; the fill goes on from their rate itself. Starting from the
                // key would leave the joined flows `SATURATION_EPS` faster than their peers if a
                // later share clamps to the level, an imbalance the next event could not see
                // at tolerance 0 (its "fastest" test is within that same margin).
                self.level = self.level.max(max_frozen);
                self.join_frozen(r, min_rate, false);
                continue;
            }
            if !current {
                continue;
            }
            let (share, key) = self.share(r);
            if key > e.key {
                // The share grew since it was queued: not the minimum any more, maybe.
                self.requeue(r);
                continue;
            }
            // Levels popped are non-decreasing in exact arithmetic; keep it so under rounding.
            let level = self.level.max(share);
            self.level = level;
            // Rule (ii): no frozen flow may be faster than the level this resource would hold its
            // flows of S at. The ones that are join, and the resource is re-queued.
            if self.incremental
                && self.frozen_here(r)
                && self.max_frozen(r) > level * (1.0 + self.tol)
                && self.join_frozen(r, level * (1.0 + self.tol), true)
            {
                continue;
            }
            self.saturate(r);
        }
    }
}

impl Network {
    /// Relative slack under which a resource counts as saturated for the current solver.
    fn saturation_eps(&self) -> f64 {
        match self.solver {
            Solver::Full => SATURATION_EPS,
            s => (2.0 * s.tolerance()).max(SATURATION_EPS),
        }
    }

    /// Seeds the re-solve after flow `slot` is removed: on each resource of its path, the flows
    /// that may have shared its bottleneck there (as fast as the fastest, the ended flow included)
    /// may speed up. Call before unlinking the flow.
    pub(crate) fn seed_removal(&mut self, slot: usize) {
        let eps = self.saturation_eps();
        let f = &self.flows[slot];
        for &r in f.path() {
            let res = &self.resources[r as usize];
            // Not gated on the resource being saturated: one left with slack by earlier
            // tolerance cuts may be the only bottleneck of its fastest flows.
            if !res.limited() {
                continue;
            }
            let max = res.rates.iter().copied().fold(0.0, f64::max);
            for (&g, &rate) in res.flows.iter().zip(&res.rates) {
                if g as usize != slot && rate >= max * (1.0 - eps) {
                    self.scratch.seeds.push(g);
                }
            }
        }
    }

    /// Runs one fill: over every active flow (`all`), or from `scratch.seeds` outward.
    fn fill(&mut self, all: bool) {
        let eps = self.saturation_eps();
        let tol = self.solver.tolerance();
        let Network { resources, flows, scratch, .. } = self;
        let mut seeds = std::mem::take(&mut scratch.seeds);
        scratch.deferred.clear();
        loop {
            scratch.stamp += 1;
            scratch.s.clear();
            scratch.heap.clear();
            scratch.dirty.clear();
            let mut fill = Fill {
                resources,
                flows,
                event: scratch.stamp,
                sc: scratch,
                incremental: !all,
                tol,
                eps,
                level: 0.0,
                open: 0,
            };
            if all {
                for (slot, f) in flows.iter().enumerate() {
                    if f.state == State::Active {
                        fill.join(slot as u32);
                    }
                }
            } else {
                for &f in &seeds {
                    fill.join(f);
                }
            }
            fill.run();
            if scratch.deferred.is_empty() {
                break;
            }
            // Rare: start again from everything re-solved so far plus the deferred flows. S only
            // grows, so this ends.
            scratch.refills += 1;
            seeds.clear();
            seeds.extend_from_slice(&scratch.s);
            seeds.append(&mut scratch.deferred);
        }
        scratch.seeds = seeds;
    }

    /// Re-solves rates around the flows in `scratch.seeds` at `now_ns` and applies them.
    pub(crate) fn resolve(&mut self, now_ns: u64) {
        self.stats.solves += 1;
        self.fill(self.solver == Solver::Full);
        self.stats.flows_resolved += self.scratch.s.len() as u64;
        self.stats.heap_pushes = self.scratch.pushes;
        self.stats.refills = self.scratch.refills;
        self.stats.scans = self.scratch.scans;
        let s = std::mem::take(&mut self.scratch.s);
        let event = self.scratch.stamp;
        for &f in &s {
            let slot = f as usize;
            let fs = self.scratch.flows[slot];
            // Invariant: every flow of S has a limited resource, so the fill fixed it.
            debug_assert_eq!(fs.fixed, event, "flow left unfixed by the fill");
            if fs.fixed == event && fs.new_rate != self.flows[slot].rate {
                self.set_rate(slot, fs.new_rate, now_ns);
            }
        }
        self.scratch.s = s;
    }

    /// Exact max-min rates of the current flows by a full progressive filling, without applying
    /// them: the reference the incremental solver is measured against. Ascending by id.
    pub fn reference_rates(&mut self) -> Vec<(FlowId, f64)> {
        self.fill(true);
        let event = self.scratch.stamp;
        self.flow_ids()
            .into_iter()
            .map(|id| {
                let fs = self.scratch.flows[id.slot()];
                let rate = if fs.fixed == event { fs.new_rate } else { self.rate(id).unwrap_or(0.0) };
                (id, rate)
            })
            .collect()
    }
}
