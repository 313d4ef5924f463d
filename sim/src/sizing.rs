//! Sizing a run before it starts: an estimate of its peak memory and, roughly, of its number of
//! events, from the resolved scenario alone — so `shoal run` can refuse a run the machine cannot
//! hold instead of aborting half-way, and `shoal bound` can say what a run will cost.
//!
//! The model is linear in what a run allocates, with coefficients measured on this build's release
//! binary (peak RSS from `/usr/bin/time`, des engine, kraken-2600 at 200, 600 and 2600 hosts, with 4×
//! the pieces and with 3× the connections, and racks at 400 hosts):
//!
//! - a fixed 7 MiB (the binary, its allocator, the output writers);
//! - per host 17 KB (agent, metrics, tracker store entry);
//! - per connection slot — a host's connections per torrent times the torrents it pulls — 2.2 KB on a
//!   flat network, plus 2.2 KB for each level of capacity-limited group links its flows cross
//!   (the solver's per-link flow lists);
//! - per piece a host pulls, 17 B (its piece states, bitfields, request table);
//! - turmoil holds every blob's bytes in memory at every node that has it, so its estimate adds the
//!   bytes each host pulls plus one copy of every blob per origin, times 1.25 for buffers (agree-16
//!   on turmoil: 1.32 GiB measured for 1 GiB of pulled bytes);
//! - real keeps blobs on disk (checked apart, `driver::store::check_disk`) and writes pieces there as
//!   they arrive; in memory it holds a read buffer, a write buffer and at most one read of decoder
//!   input per connection, so its estimate adds 192 KiB per connection slot (agree-16 at 64 hosts:
//!   225 MiB measured).
//!
//! Events: about 0.5 + 0.6 × (connections per torrent) per piece per host (a piece is requested,
//! sent, received and announced to every connection), measured on the same runs.
//!
//! The estimate is a guide, within 2× of the measured peak on the shipped scenarios (table in
//! scenarios/README.md, "Sizing"), not a bound.

use shoal_protocols::config::Policy;

use crate::scenario::Scenario;

const MIB: f64 = 1024.0 * 1024.0;
const BASE_BYTES: f64 = 7.0 * MIB;
const PER_HOST_BYTES: f64 = 17_000.0;
const PER_CONN_BYTES: f64 = 2_200.0;
const PER_PIECE_BYTES: f64 = 17.0;
const SOCKET_BUFFER_FACTOR: f64 = 1.25;
/// `--engine real`: a connection's read and write buffers and one read of decoder input.
const REAL_PER_CONN_BYTES: f64 = 3.0 * 64.0 * 1024.0;

/// Which engine will run the scenario: the socket engines keep blob bytes in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Des,
    Turmoil,
    Real,
}

/// What a run is expected to cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Estimated peak resident memory, bytes.
    pub peak_bytes: u64,
    /// Roughly how many events the des engine will process (the socket engines' tasks are not events).
    pub events: u64,
    /// Connections per torrent the estimate assumes for an agent.
    pub conns_per_torrent: u64,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let events = if self.events >= 1_000_000 {
            format!("{:.1} M", self.events as f64 / 1e6)
        } else {
            format!("{:.1} k", self.events as f64 / 1e3)
        };
        write!(f, "estimated peak memory {}, about {events} events", human_bytes(self.peak_bytes))
    }
}

/// `1.5 GiB`, `230 MiB`.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * MIB { format!("{:.2} GiB", b / (1024.0 * MIB)) } else { format!("{:.0} MiB", b / MIB) }
}

/// Connections an agent holds per torrent under the scenario's policy.
fn conns_per_torrent(s: &Scenario) -> u64 {
    let hosts = s.topology.hosts.len() as u64;
    let owners = (s.protocol.origin.max_replica as u64).min(s.origins.len() as u64);
    let reachable = hosts.saturating_sub(1) + owners;
    let p = &s.protocol;
    let conns = match p.policy {
        Policy::Kraken => p.agent.conn_state.max_open_conn as u64,
        Policy::BitTorrent => (p.bittorrent.max_connections as u64).min(2 * p.bittorrent.max_initiate as u64),
        // Up to `candidate_parent_limit` parents, and as many children on average.
        Policy::Dragonfly => 2 * p.dragonfly.candidate_parent_limit as u64 + owners,
        Policy::OriginOnly => owners,
    };
    conns.min(reachable).max(1)
}

/// The estimate for `s` on `engine`.
pub fn estimate(s: &Scenario, engine: EngineKind) -> Estimate {
    let hosts = s.topology.hosts.len() as f64;
    let per_host = crate::scenario::blobs_per_host(s);
    let torrents: f64 = per_host.iter().map(|b| b.len() as f64).sum();
    let pieces: f64 = per_host
        .iter()
        .flat_map(|blobs| blobs.iter())
        .map(|&b| {
            let size = s.workload.blobs[b].size;
            size.div_ceil(s.protocol.origin.piece_lengths.select(size)) as f64
        })
        .sum();
    let conns = conns_per_torrent(s);
    let limited_levels = [&s.topology.racks, &s.topology.pods, &s.topology.zones]
        .iter()
        .filter(|l| l.as_ref().is_some_and(|l| l.groups.iter().any(|g| g.uplink_bytes_per_s.is_some())))
        .count() as f64;
    let mut peak = BASE_BYTES
        + hosts * PER_HOST_BYTES
        + torrents * conns as f64 * PER_CONN_BYTES * (1.0 + limited_levels)
        + pieces * PER_PIECE_BYTES;
    if engine == EngineKind::Real {
        peak += torrents * conns as f64 * REAL_PER_CONN_BYTES;
    } else if engine == EngineKind::Turmoil {
        let pulled: f64 = s.bytes_per_host().iter().map(|&b| b as f64).sum();
        let blobs: f64 = s.workload.blobs.iter().map(|b| b.size as f64).sum();
        peak += SOCKET_BUFFER_FACTOR * (pulled + blobs * s.origins.len() as f64);
    }
    let events = pieces * (0.5 + 0.6 * conns as f64);
    Estimate { peak_bytes: peak as u64, events: events as u64, conns_per_torrent: conns }
}

/// Memory available to a new process (`MemAvailable` of `/proc/meminfo`), if the system says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a run whose estimate exceeds the memory available (if known), with what to do instead.
pub fn check_fits(s: &Scenario, engine: EngineKind, estimate: &Estimate) -> Result<(), String> {
    let Some(available) = available_memory() else { return Ok(()) };
    if estimate.peak_bytes <= available {
        return Ok(());
    }
    let socket = match engine {
        EngineKind::Des => "",
        EngineKind::Turmoil => " turmoil keeps every node's blobs in memory: --engine des holds none.",
        EngineKind::Real => " real holds buffers per connection (its blobs are on disk).",
    };
    Err(format!(
        "{}: the run does not fit in memory: {} hosts, {} (estimated before the run), but {} is \
         available on this machine.{socket} Lower topology.hosts (or the blobs' sizes, or raise \
         protocol.origin.piece_length), run it on a larger machine, or pass --force to try anyway \
         (the estimate is within about 2× of the measured peak)",
        s.source,
        s.topology.hosts.len(),
        estimate,
        human_bytes(available)
    ))
}
