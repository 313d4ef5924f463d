//! Max-min fair rates by progressive filling, over all flows or over a growing set of flows.
//!
//! **Progressive filling** (both solvers): every unfixed flow's rate rises together; the resource
//! whose remaining capacity divided by its unfixed flows (its *share*) is smallest saturates first
//! and fixes its unfixed flows at that level; their rates are taken off their other resources,
//! whose shares are re-queued. Shares popped never decrease. A min-heap of (share, resource,
//! version) with lazy invalidation gives O((F·L) log R) for F flows of path length L.
//!
//! **Incremental solver.** Around an event, a set `S` of flows is re-solved; every other flow is
//! *frozen* at its current rate. `S` starts as the new flow, or, when a flow ends, as the flows that
//! shared its bottleneck (on each of its resources that was saturated, the flows as fast as the
//! fastest). Progressive filling over `S`, on the capacity the frozen flows leave (capacity minus
//! the resource's load plus the old rates of its `S` flows: no visit of the frozen flows), gives
//! candidate rates. Then, on each resource `r` crossed by `S`, frozen flows join `S` if
//!   (ii) `r` saturated during the fill at level `l` and they run faster than `l·(1+tolerance)`:
//!        a flow of `S` is held below them on a shared bottleneck, which max-min forbids; or
//!   (i)  `r` was saturated and they were its fastest flows (so `r` may be their bottleneck), and
//!        either `r` now has slack above `tolerance` times their rate, or a flow of `S` now runs
//!        faster than them by more than `tolerance` (relative).
//! and the fill is repeated over the larger `S`. When no flow joins, the candidates are applied.
//!
//! Why that is max-min (up to the tolerance): before the event every flow had a bottleneck (a
//! saturated resource on which no flow was faster). After the last round, a flow of `S` fixed at
//! `r` has `r` saturated, no flow of `S` on it faster (filling order) and, by (ii), no frozen flow
//! faster either; a frozen flow's old bottleneck is either untouched by `S` or, by (i), still
//! saturated with no faster flow. With `tolerance = 0` the answer is the exact one up to float
//! rounding (tests check it against [`Solver::Full`] on random instances). `S` only grows, so the
//! loop ends; at worst it re-solves the whole connected component, like the full solver.
//!
//! Errors do not compound in practice: each event leaves every flow within about `tolerance` of a
//! valid bottleneck, and later events re-solve what they touch exactly. Measured numbers are in
//! `examples/net_churn.rs` and the report of the change that added this module.
//!
//! Ties: at equal share, a resource whose flows are all in `S` is filled before one with frozen
//! flows (whose share is compared as if `BOUNDARY_BIAS` larger). Without it, a flow whose unchanged
//! bottleneck ties with the residual its own old rate leaves elsewhere could look held there and
//! pull in frozen flows for nothing.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::network::{Network, State};
use super::{FlowId, Solver};

/// Relative handicap, in the fill order, of resources with frozen flows (see the module doc).
const BOUNDARY_BIAS: f64 = 1e-12;

/// Relative slack under which a resource counts as saturated when the tolerance is smaller: float
/// sums of rates miss the capacity by ~1e-15, and erring towards "saturated" only widens more.
const SATURATION_EPS: f64 = 1e-9;

/// Per-resource solver state. Stamps are compared with the current round, so no array is ever
/// cleared.
#[derive(Clone, Copy, Debug, Default)]
struct ResScratch {
    /// Round in which the resource was last touched (reset of the fields below).
    seen: u64,
    /// Capacity minus frozen flows minus fixed flows of `S`.
    residual: f64,
    /// Level at which it saturated in this round, or -1 if it did not.
    sat_level: f64,
    /// Sum and maximum of the pre-event rates of the flows of `S` crossing it.
    s_old_sum: f64,
    max_s_old: f64,
    /// Fastest candidate rate of a flow of `S` crossing it.
    max_s_new: f64,
    /// Flows of `S` crossing it, and those not yet fixed.
    s_count: u32,
    unfixed: u32,
    /// Invalidates stale heap entries.
    version: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowScratch {
    /// Event stamp: in `S` iff `in_s >= event`.
    in_s: u64,
    /// Round in which the flow was fixed.
    fixed: u64,
    new_rate: f64,
}

#[derive(Clone, Copy, Debug)]
struct Share {
    /// Ordering key: the share, biased for resources with frozen flows.
    key: f64,
    share: f64,
    res: u32,
    version: u32,
}

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Share {}
impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Share {
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
    touched: Vec<u32>,
    heap: BinaryHeap<Reverse<Share>>,
}

impl Scratch {
    pub(crate) fn new(resources: usize) -> Self {
        Scratch {
            stamp: 0,
            res: vec![ResScratch::default(); resources],
            flows: Vec::new(),
            seeds: Vec::new(),
            s: Vec::new(),
            touched: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    pub(crate) fn grow_flows(&mut self, slots: usize) {
        self.flows.resize(slots, FlowScratch::default());
    }
}

impl Network {
    /// Relative slack under which a resource counts as saturated for the current solver.
    pub(crate) fn saturation_eps(&self) -> f64 {
        match self.solver {
            Solver::Full => SATURATION_EPS,
            Solver::Incremental { tolerance } => tolerance.max(SATURATION_EPS),
        }
    }

    /// Seeds the re-solve after flow `slot` is removed: on each resource of its path that was
    /// saturated, the flows that shared its bottleneck (as fast as the fastest, the ended flow
    /// included) may speed up. Call before unlinking the flow.
    pub(crate) fn seed_removal(&mut self, slot: usize) {
        let eps = self.saturation_eps();
        self.scratch.seeds.clear();
        let f = &self.flows[slot];
        for &r in f.path() {
            let res = &self.resources[r as usize];
            if !res.limited() || res.load < res.capacity * (1.0 - eps) {
                continue;
            }
            let max = res.flows.iter().map(|&g| self.flows[g as usize].rate).fold(0.0, f64::max);
            for &g in &res.flows {
                if g as usize != slot && self.flows[g as usize].rate >= max * (1.0 - eps) {
                    self.scratch.seeds.push(g);
                }
            }
        }
    }

    /// Re-solves rates around the flows in `scratch.seeds` at `now_ns` and applies them.
    pub(crate) fn resolve(&mut self, now_ns: u64) {
        self.stats.solves += 1;
        let event = self.scratch.stamp + 1;
        self.scratch.s.clear();
        let tolerance = match self.solver {
            Solver::Full => {
                self.seed_all(event);
                None
            }
            Solver::Incremental { tolerance } => {
                let sc = &mut self.scratch;
                for &f in &sc.seeds {
                    let fs = &mut sc.flows[f as usize];
                    if fs.in_s < event {
                        fs.in_s = event;
                        sc.s.push(f);
                    }
                }
                Some(tolerance.max(0.0))
            }
        };
        if self.scratch.s.is_empty() {
            return;
        }
        loop {
            self.fill_round(event);
            self.stats.rounds += 1;
            self.stats.flows_resolved += self.scratch.s.len() as u64;
            match tolerance {
                Some(tol) if self.widen(event, tol) => continue,
                _ => break,
            }
        }
        let s = std::mem::take(&mut self.scratch.s);
        let round = self.scratch.stamp;
        for &f in &s {
            let slot = f as usize;
            let fs = self.scratch.flows[slot];
            // Invariant: every flow of S has a limited resource, so the fill fixed it.
            debug_assert_eq!(fs.fixed, round, "flow left unfixed by the fill");
            if fs.fixed == round && fs.new_rate != self.flows[slot].rate {
                self.set_rate(slot, fs.new_rate, now_ns);
            }
        }
        self.scratch.s = s;
    }

    /// Exact max-min rates of the current flows by a full progressive filling, without applying
    /// them: the reference the incremental solver is measured against. Ascending by id.
    pub fn reference_rates(&mut self) -> Vec<(FlowId, f64)> {
        let event = self.scratch.stamp + 1;
        self.scratch.s.clear();
        self.seed_all(event);
        if !self.scratch.s.is_empty() {
            self.fill_round(event);
        }
        let round = self.scratch.stamp;
        self.flow_ids()
            .into_iter()
            .map(|id| {
                let fs = self.scratch.flows[id.slot()];
                let rate = if fs.fixed == round { fs.new_rate } else { self.rate(id).unwrap_or(0.0) };
                (id, rate)
            })
            .collect()
    }

    /// Puts every active flow crossing a resource into `S`.
    fn seed_all(&mut self, event: u64) {
        let Network { flows, scratch: sc, .. } = self;
        for (slot, f) in flows.iter().enumerate() {
            if f.state == State::Active {
                sc.flows[slot].in_s = event;
                sc.s.push(slot as u32);
            }
        }
    }

    /// Adds a frozen flow to `S`.
    fn join(sc: &mut Scratch, f: u32, event: u64) {
        let fs = &mut sc.flows[f as usize];
        if fs.in_s < event {
            fs.in_s = event;
            sc.s.push(f);
        }
    }

    /// One progressive filling over `S` (flows with `in_s >= event`), every other flow frozen,
    /// leaving candidate rates in `scratch.flows[..].new_rate`.
    fn fill_round(&mut self, event: u64) {
        let Network { resources, flows, scratch: sc, .. } = self;
        sc.stamp += 1;
        let st = sc.stamp;
        sc.touched.clear();

        // Resources crossed by S, with the number and old rates of S flows on each.
        for &f in &sc.s {
            let rate = flows[f as usize].rate;
            for &r in flows[f as usize].path() {
                if !resources[r as usize].limited() {
                    continue;
                }
                let rs = &mut sc.res[r as usize];
                if rs.seen != st {
                    *rs = ResScratch { seen: st, sat_level: -1.0, ..ResScratch::default() };
                    sc.touched.push(r);
                }
                rs.s_count += 1;
                rs.s_old_sum += rate;
                rs.max_s_old = rs.max_s_old.max(rate);
            }
        }
        // Residual capacity: what frozen flows leave. The load sum gives it without visiting the
        // frozen flows; a resource whose flows are all in S gets its exact capacity.
        sc.heap.clear();
        for &r in &sc.touched {
            let res = &resources[r as usize];
            let rs = &mut sc.res[r as usize];
            rs.unfixed = rs.s_count;
            let frozen = rs.s_count as usize != res.flows.len();
            rs.residual =
                if frozen { (res.capacity - (res.load - rs.s_old_sum)).max(0.0) } else { res.capacity };
            let share = rs.residual / f64::from(rs.unfixed);
            let key = if frozen { share * (1.0 + BOUNDARY_BIAS) } else { share };
            sc.heap.push(Reverse(Share { key, share, res: r, version: 0 }));
        }

        let mut level: f64 = 0.0;
        while let Some(Reverse(top)) = sc.heap.pop() {
            let r = top.res as usize;
            if top.version != sc.res[r].version || sc.res[r].unfixed == 0 {
                continue;
            }
            // Shares popped are non-decreasing in exact arithmetic; keep it so under rounding.
            level = level.max(top.share);
            let rs = &mut sc.res[r];
            rs.sat_level = level;
            rs.unfixed = 0;
            rs.residual = 0.0;
            rs.max_s_new = rs.max_s_new.max(level);
            for &f in &resources[r].flows {
                let fs = &mut sc.flows[f as usize];
                if fs.in_s < event || fs.fixed == st {
                    continue;
                }
                fs.fixed = st;
                fs.new_rate = level;
                for &r2 in flows[f as usize].path() {
                    let r2 = r2 as usize;
                    if r2 == r || !resources[r2].limited() {
                        continue;
                    }
                    let rs2 = &mut sc.res[r2];
                    rs2.residual -= level;
                    rs2.unfixed -= 1;
                    rs2.max_s_new = rs2.max_s_new.max(level);
                    if rs2.unfixed > 0 {
                        rs2.version += 1;
                        let share = rs2.residual.max(0.0) / f64::from(rs2.unfixed);
                        let frozen = rs2.s_count as usize != resources[r2].flows.len();
                        let key = if frozen { share * (1.0 + BOUNDARY_BIAS) } else { share };
                        sc.heap.push(Reverse(Share { key, share, res: r2 as u32, version: rs2.version }));
                    }
                }
            }
        }
    }

    /// Adds to `S` the frozen flows that rule (i) or (ii) says may move; true if any did.
    fn widen(&mut self, event: u64, tol: f64) -> bool {
        let eps = tol.max(SATURATION_EPS);
        let Network { resources, flows, scratch: sc, .. } = self;
        let before = sc.s.len();
        for i in 0..sc.touched.len() {
            let r = sc.touched[i] as usize;
            let res = &resources[r];
            let rs = sc.res[r];
            if rs.s_count as usize == res.flows.len() {
                continue; // no frozen flow here
            }
            // Rule (ii): a flow of S was held at this resource's level; frozen flows must not be
            // faster.
            if rs.sat_level >= 0.0 {
                let limit = rs.sat_level * (1.0 + tol);
                for &f in &res.flows {
                    if flows[f as usize].rate > limit {
                        Self::join(sc, f, event);
                    }
                }
            }
            // Rule (i): only frozen flows bottlenecked here (the resource was saturated, they were
            // the fastest) can be hurt: by slack appearing or by a flow of S overtaking them. The
            // cheap tests on S come first; the frozen flows are visited only if one fires.
            if res.load < res.capacity * (1.0 - eps) {
                continue;
            }
            let slack = rs.residual.max(0.0);
            if slack <= tol * rs.max_s_old && rs.max_s_new <= rs.max_s_old * (1.0 + tol) {
                continue;
            }
            let max_frozen = res
                .flows
                .iter()
                .filter(|&&f| sc.flows[f as usize].in_s < event)
                .map(|&f| flows[f as usize].rate)
                .fold(0.0, f64::max);
            let top = max_frozen.max(rs.max_s_old);
            if max_frozen < top * (1.0 - eps) {
                continue; // every frozen flow here is bottlenecked elsewhere
            }
            if slack > tol * max_frozen || rs.max_s_new > max_frozen * (1.0 + tol) {
                for &f in &res.flows {
                    if flows[f as usize].rate >= top * (1.0 - eps) {
                        Self::join(sc, f, event);
                    }
                }
            }
        }
        sc.s.len() > before
    }
}
