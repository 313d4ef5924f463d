//! Max-min fair rates by progressive filling, over all flows or over a growing neighbourhood.
//!
//! **Progressive filling** (both solvers): every unfixed flow's rate rises together; the resource
//! whose remaining capacity divided by its unfixed flows (its *share*) is smallest saturates first
//! and fixes its unfixed flows at that level; their rates are taken off their other resources,
//! whose shares are re-queued. Shares popped never decrease. A min-heap of (share, resource,
//! version) with lazy invalidation gives O((F·L) log R) for F flows of path length L.
//!
//! **Incremental solver.** Around an event (a flow starting or ending), the *dirty* resources are
//! those of its path. All flows crossing a dirty resource are re-solved (the set `S`); every other
//! flow is *frozen* at its current rate, and its rate is taken off the capacity of the *boundary*
//! resources (non-dirty resources crossed by a flow of `S`). Progressive filling over `S` with these
//! residual capacities gives candidate rates. A boundary resource `r` then becomes dirty, and the
//! round is repeated over the larger `S`, if
//!   (i)  some flow of `S` crossing `r` changed rate by more than `tolerance` (relative), or
//!   (ii) `r` saturated during the fill at level `l` while a frozen flow on `r` runs faster than
//!        `l·(1+tolerance)` — a flow of `S` is held below a frozen one on a shared bottleneck,
//!        which max-min forbids.
//! When no boundary resource qualifies, the candidate rates are applied.
//!
//! Why that is max-min (up to the tolerance): before the event every flow had a bottleneck (a
//! saturated resource on which no flow was faster). After the last round, (a) a flow of `S` fixed
//! at a dirty resource has it as bottleneck (every flow there is in `S`); (b) one fixed at a
//! boundary resource is, by (ii), not slower than any frozen flow there; (c) a frozen flow crosses
//! only resources that are not dirty, on which, by (i), no rate moved by more than the tolerance,
//! so its old bottleneck still holds. With `tolerance = 0` the rounds only stop when nothing at the
//! boundary moves, and the answer is the exact one (up to float rounding). Dirty sets only grow, so
//! the loop ends; at worst it re-solves the whole connected component, like the full solver.
//!
//! Cost per event: the flows on the dirty resources and their boundary, times the rounds. In a
//! swarm of hosts with ~10 flows each a change spreads over more and more flows with smaller and
//! smaller rate changes; the tolerance cuts it off after a few hops (measured in
//! `examples/net_churn.rs`).
//!
//! Ties: at equal share, a dirty resource is filled before a boundary one (boundary shares are
//! compared as if `BOUNDARY_BIAS` larger). Without it, a flow whose unchanged bottleneck ties with
//! the residual its own old rate leaves on a boundary resource would look held at that boundary and
//! trigger (ii) for nothing.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::network::Network;
use super::{FlowId, Solver};

/// Relative handicap of boundary resources in the fill order (see the module doc).
const BOUNDARY_BIAS: f64 = 1e-12;

/// Per-resource solver state. Stamps are compared with the current round or event stamp, so no
/// array is ever cleared.
#[derive(Clone, Copy, Debug, Default)]
struct ResScratch {
    /// Round in which the resource was last touched (reset of the fields below).
    seen: u64,
    /// Stamp of the event for which it was made dirty (dirty iff `dirty >= event`).
    dirty: u64,
    /// Capacity minus frozen flows minus fixed flows of `S`.
    residual: f64,
    /// Level at which it saturated in this round, or -1 if it did not.
    sat_level: f64,
    /// Fastest frozen flow crossing it.
    max_frozen: f64,
    /// Flows of `S` crossing it and not yet fixed.
    unfixed: u32,
    /// Invalidates stale heap entries.
    version: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowScratch {
    /// Round in which the flow is in `S`.
    in_s: u64,
    /// Round in which the flow was fixed.
    fixed: u64,
    new_rate: f64,
}

#[derive(Clone, Copy, Debug)]
struct Share {
    /// Ordering key: the share, biased for boundary resources.
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
    dirty: Vec<u32>,
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
            dirty: Vec::new(),
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
    /// Re-solves rates after the flows on `seeds` (a path) changed, at `now_ns`, and applies them.
    pub(crate) fn resolve(&mut self, now_ns: u64, seeds: &[u32]) {
        self.stats.solves += 1;
        let event = self.scratch.stamp + 1;
        let tolerance = match self.solver {
            Solver::Full => {
                self.mark_all_dirty(event);
                None
            }
            Solver::Incremental { tolerance } => {
                self.scratch.dirty.clear();
                for &r in seeds {
                    self.mark_dirty(r, event);
                }
                Some(tolerance.max(0.0))
            }
        };
        if self.scratch.dirty.is_empty() {
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
        for &f in &s {
            let slot = f as usize;
            let fs = self.scratch.flows[slot];
            // Invariant: every flow of S has a limited resource, so the fill fixed it.
            debug_assert_eq!(fs.fixed, self.scratch.stamp, "flow left unfixed by the fill");
            if fs.fixed == self.scratch.stamp && fs.new_rate != self.flows[slot].rate {
                self.set_rate(slot, fs.new_rate, now_ns);
            }
        }
        self.scratch.s = s;
    }

    /// Exact max-min rates of the current flows by a full progressive filling, without applying
    /// them: the reference the incremental solver is measured against. Ascending by id.
    pub fn reference_rates(&mut self) -> Vec<(FlowId, f64)> {
        let event = self.scratch.stamp + 1;
        self.mark_all_dirty(event);
        if !self.scratch.dirty.is_empty() {
            self.fill_round(event);
        }
        let st = self.scratch.stamp;
        let mut out: Vec<(FlowId, f64)> = self
            .flow_ids()
            .into_iter()
            .map(|id| {
                let fs = self.scratch.flows[id.slot()];
                let rate = if fs.fixed == st { fs.new_rate } else { self.rate(id).unwrap_or(0.0) };
                (id, rate)
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    fn mark_dirty(&mut self, r: u32, event: u64) {
        let res = &self.resources[r as usize];
        let rs = &mut self.scratch.res[r as usize];
        if res.limited() && !res.flows.is_empty() && rs.dirty < event {
            rs.dirty = event;
            self.scratch.dirty.push(r);
        }
    }

    fn mark_all_dirty(&mut self, event: u64) {
        self.scratch.dirty.clear();
        for r in 0..self.resources.len() as u32 {
            self.mark_dirty(r, event);
        }
    }

    /// One progressive filling over the flows crossing dirty resources, leaving candidate rates in
    /// `scratch.flows[..].new_rate`.
    fn fill_round(&mut self, event: u64) {
        let Network { resources, flows, scratch: sc, .. } = self;
        sc.stamp += 1;
        let st = sc.stamp;
        sc.s.clear();
        sc.touched.clear();

        // S: every flow on a dirty resource.
        for &r in &sc.dirty {
            for &f in &resources[r as usize].flows {
                let fs = &mut sc.flows[f as usize];
                if fs.in_s != st {
                    fs.in_s = st;
                    sc.s.push(f);
                }
            }
        }
        // Resources crossed by S, with the number of S flows on each.
        for &f in &sc.s {
            for &r in flows[f as usize].path() {
                let res = &resources[r as usize];
                if !res.limited() {
                    continue;
                }
                let rs = &mut sc.res[r as usize];
                if rs.seen != st {
                    *rs = ResScratch {
                        seen: st,
                        dirty: rs.dirty,
                        residual: res.capacity,
                        sat_level: -1.0,
                        max_frozen: 0.0,
                        unfixed: 0,
                        version: 0,
                    };
                    sc.touched.push(r);
                }
                rs.unfixed += 1;
            }
        }
        // Boundary resources lose the capacity of their frozen flows. (Dirty ones have none.)
        sc.heap.clear();
        for &r in &sc.touched {
            let rs = &mut sc.res[r as usize];
            let boundary = rs.dirty < event;
            if boundary {
                for &f in &resources[r as usize].flows {
                    if sc.flows[f as usize].in_s != st {
                        let rate = flows[f as usize].rate;
                        rs.residual -= rate;
                        rs.max_frozen = rs.max_frozen.max(rate);
                    }
                }
                rs.residual = rs.residual.max(0.0);
            }
            let share = rs.residual / f64::from(rs.unfixed);
            let key = if boundary { share * (1.0 + BOUNDARY_BIAS) } else { share };
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
            sc.res[r].sat_level = level;
            sc.res[r].unfixed = 0;
            for &f in &resources[r].flows {
                let fs = &mut sc.flows[f as usize];
                if fs.in_s != st || fs.fixed == st {
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
                    if rs2.unfixed > 0 {
                        rs2.version += 1;
                        let share = rs2.residual.max(0.0) / f64::from(rs2.unfixed);
                        let key = if rs2.dirty < event { share * (1.0 + BOUNDARY_BIAS) } else { share };
                        sc.heap.push(Reverse(Share { key, share, res: r2 as u32, version: rs2.version }));
                    }
                }
            }
        }
    }

    /// Marks the boundary resources that break rule (i) or (ii) dirty; true if any did.
    fn widen(&mut self, event: u64, tol: f64) -> bool {
        let Network { resources, flows, scratch: sc, .. } = self;
        let st = sc.stamp;
        let mut grew = false;
        for &r in &sc.touched {
            let rs = &sc.res[r as usize];
            if rs.dirty >= event {
                continue;
            }
            let mut widen = rs.sat_level >= 0.0 && rs.max_frozen > rs.sat_level * (1.0 + tol);
            if !widen {
                widen = resources[r as usize].flows.iter().any(|&f| {
                    let fs = &sc.flows[f as usize];
                    let old = flows[f as usize].rate;
                    fs.in_s == st && (fs.new_rate - old).abs() > tol * old.max(fs.new_rate)
                });
            }
            if widen {
                sc.res[r as usize].dirty = event;
                sc.dirty.push(r);
                grew = true;
            }
        }
        grew
    }
}
