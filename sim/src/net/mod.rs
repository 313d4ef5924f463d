//! The flow-level network model of the discrete-event engine (DESIGN.md §4).
//!
//! Hose model plus optional shared links. Every host has an upload and a download
//! [resource](ResourceId); racks, pods and zones optionally add an uplink (traffic leaving the group)
//! and a downlink (traffic entering it). A [`Topology`] maps a (source, destination) pair to the
//! [`Path`] of resources a transfer crosses, its one-way latency and its [`Locality`].
//!
//! A transfer in flight is a *flow* in a [`Network`]: a number of bytes moving along a path. Active
//! flows share capacity **max-min fairly**, re-solved whenever a flow starts, ends or is cancelled.
//! The engine interleaves its own event queue with [`Network::next_completion`] and drains finished
//! flows with [`Network::pop_completed`]. Latency is *not* part of a flow: the engine adds
//! [`Path::latency`] itself (SimGrid's convention: latency paid up front, then the bytes).
//!
//! Two solvers ([`Solver`]):
//! - [`Solver::Full`]: exact progressive filling over every flow on every event — the reference;
//! - [`Solver::Incremental`] (default): progressive filling restricted to the flows whose rates can
//!   change, grown outward only while rates change by more than a relative tolerance (see `solver.rs`);
//! - [`Solver::Stepped`]: the incremental solver run at most once per time step over every change
//!   of the step — an explicit approximation for runs where shared links saturate (see its doc).
//!
//! Units: capacities in bytes per second (`u64`, **0 means unlimited**), sizes in bytes, times are
//! integer nanoseconds ([`Instant`]), rates are `f64` bytes per second.
//!
//! ```
//! use shoal_sim::net::{HostSpec, Network, Solver, TopologySpec};
//! use shoal_protocols::Instant;
//! use std::time::Duration;
//!
//! let topo = TopologySpec::flat(2, 100, 100, Duration::from_micros(50)).build().expect("valid");
//! let mut net = Network::new(&topo.capacities(), Solver::default());
//! let path = topo.path(0, 1);
//! let id = net.start_flow(Instant::ZERO, path.resources(), 1_000, 7);
//! assert_eq!(net.rate(id), Some(100.0));
//! let at = net.next_completion().expect("one flow");
//! assert_eq!(at, Instant::from_nanos(10_000_000_000)); // 1000 B at 100 B/s
//! let done = net.pop_completed(at).expect("finished");
//! assert_eq!((done.id, done.token), (id, 7));
//! # let _ = HostSpec::default();
//! ```

mod heap;
mod network;
mod solver;
mod topology;

pub use network::{Cancelled, Completed, Network, SolverStats};
pub use topology::{
    GroupSpec, HostSpec, Level, Locality, Path, ResourceKind, Topology, TopologyError, TopologySpec,
};

pub use shoal_protocols::Instant;

/// The longest path a topology produces: host upload, three group uplinks, three group downlinks,
/// host download.
pub const MAX_PATH_LEN: usize = 8;

/// A capacity-limited resource: a host's upload or download, or a group's uplink or downlink.
///
/// Dense indices `0..Topology::resource_count()`, usable as `Vec` indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(pub u32);

impl ResourceId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A flow in a [`Network`]. Never reused within one network.
///
/// Ordering follows start order: the high 40 bits are a start sequence number, the low 24 bits the
/// flow's storage slot (so at most 2^24 flows may be active at once). Flows finishing at the same
/// nanosecond are reported in `FlowId` order, i.e. in the order they were started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(u64);

impl FlowId {
    const SLOT_BITS: u32 = 24;
    const SLOT_MASK: u64 = (1 << Self::SLOT_BITS) - 1;

    fn new(seq: u64, slot: u32) -> Self {
        FlowId((seq << Self::SLOT_BITS) | u64::from(slot))
    }

    fn slot(self) -> usize {
        (self.0 & Self::SLOT_MASK) as usize
    }

    /// The raw value, for logs and CSV output.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// How the network re-solves rates when the set of flows changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Solver {
    /// Exact max-min by progressive filling over all flows, on every event. O(flows · log) per
    /// event: the reference, for tests and small scenarios.
    Full,
    /// Progressive filling restricted to the flows around the event, pulling in other flows while
    /// the fill would break their bottleneck or they would break a re-solved flow's by more than
    /// `tolerance` (relative). With `tolerance = 0` the answer is exact max-min (up to float
    /// rounding); otherwise each rate is within about `tolerance` of it (measured, see
    /// [`Solver::DEFAULT_TOLERANCE`]).
    Incremental { tolerance: f64 },
    /// The incremental solver, run at most once per `step` (at multiples of `step` of model time)
    /// over every start, end and cancellation since the previous solve, instead of once per event
    /// (reference/simulation.md §4, "time-stepped"). Between solves, a new flow waits at rate 0
    /// and capacity freed by an ended flow stays idle, so each start and end costs up to `step`
    /// (half on average); streams of back-to-back segments ([`Network::append`]) pay it once.
    ///
    /// Why: where shared links saturate (racks behind oversubscribed uplinks) one event re-rates
    /// ~1 500 flows, and a 2600-host run has ~10 M events; per step the work is bounded by the
    /// flows alive, whatever the event rate. An explicit, named approximation (DESIGN.md §4):
    /// measured against [`Solver::Incremental`] in README.md ("Solvers").
    Stepped { step: std::time::Duration, tolerance: f64 },
}

impl Solver {
    /// The default tolerance of [`Solver::Incremental`]: imbalances below 0.1 % of a flow's rate
    /// are not propagated further. Measured against [`Solver::Full`] by `examples/net_churn.rs`
    /// (300 hosts, ~2 850 concurrent 4 MiB flows, 200 000 completions, 11.4 M rate samples): the
    /// largest relative rate error was 2.0e-3 (about twice the tolerance: small imbalances left by
    /// successive events add up), the 99.9th percentile 3e-13.
    ///
    /// Larger tolerances are not validated: at 1e-2 the same benchmark showed a worst error of
    /// 0.4 (99.9th percentile 5e-3) for a 6 % speed-up, i.e. imbalances left behind then stop
    /// being caught by later events. Stay at or below this value.
    pub const DEFAULT_TOLERANCE: f64 = 1e-3;

    /// [`Solver::Stepped`] with the default tolerance and a step of 1 ms: a 4 MiB piece at
    /// 30 MB/s takes 140 ms, so the delay a start or an end pays is ~0.4 % of a piece.
    pub const fn stepped(step: std::time::Duration) -> Self {
        Solver::Stepped { step, tolerance: Self::DEFAULT_TOLERANCE }
    }

    /// The relative tolerance of the fill (0 for [`Solver::Full`]).
    pub(crate) fn tolerance(self) -> f64 {
        match self {
            Solver::Full => 0.0,
            Solver::Incremental { tolerance } | Solver::Stepped { tolerance, .. } => tolerance.max(0.0),
        }
    }

    /// The `shoal run` flags that select this solver ("" for the default).
    pub fn cli_flags(self) -> String {
        match self {
            Solver::Full => " --solver full".to_owned(),
            Solver::Stepped { step, .. } => {
                format!(" --solver stepped --solve-step-ms {}", step.as_secs_f64() * 1e3)
            }
            Solver::Incremental { .. } => String::new(),
        }
    }

    /// The solve step in nanoseconds; 0 when every event is solved at once.
    pub(crate) fn step_ns(self) -> u64 {
        match self {
            Solver::Stepped { step, .. } => u64::try_from(step.as_nanos()).unwrap_or(u64::MAX),
            _ => 0,
        }
    }
}

impl Default for Solver {
    fn default() -> Self {
        Solver::Incremental { tolerance: Self::DEFAULT_TOLERANCE }
    }
}
