//! The async driver (DESIGN.md §3): one tokio task per node runs its sans-IO state machine — socket
//! reads, timers (`poll_timeout`) and tracker replies become inputs carrying the current time, and
//! every output (dial, send, close, announce, metainfo fetch) is carried out on a transport.
//!
//! The driver is written once, generic over [`Transport`], and runs on two:
//!
//! - [`real`]: tokio TCP on 127.0.0.1 (`shoal run --engine real`), wall-clock time, or between
//!   network namespaces on kernel-shaped links ([`netns`], `--net netns`);
//! - [`sim`]: turmoil's simulated TCP (`shoal run --engine turmoil`), seeded, simulated time.
//!
//! So the code that handles real sockets is the code turmoil tests deterministically.
//!
//! What the driver does, node by node:
//!
//! - **agents and origins** (`peer`): a listener task hands accepted streams to the node's task;
//!   each connection gets a reader task (bytes → [`wire::Decoder`] → messages, refusing tagged
//!   payloads and frames larger than the scenario's pieces) and a writer task (messages →
//!   [`wire::encode_header`] + payload bytes in chunks). A decoding error closes the connection
//!   and the node learns of it as a close (Kraken's blacklist then applies).
//! - **bandwidth**: each host's upload and download capacity from the scenario is a
//!   [`bucket::TokenBucket`] shared by its connections — payload bytes are reserved before they
//!   are written, and bytes read are reserved before the next read, so a slow reader pushes back
//!   on the sender through TCP. With `--net netns` the kernel shapes each host's link instead
//!   (tc; [`netns`]) and the buckets are unlimited.
//! - **latency** (`real` only; turmoil's network has its own): every message a connection reads
//!   reaches the node one emulated one-way delay later (the scenario's latency plus a jitter draw),
//!   through one queue per node that releases messages in order of their arrival times. tokio's
//!   timers tick in whole milliseconds, so a timer per message would release everything due within
//!   the same millisecond in a fixed order and erase sub-millisecond jitter — and at a
//!   synchronized start, the order handshakes arrive in decides which hosts get Kraken's ten
//!   connection slots (issue #4). HTTP exchanges wait one delay each way.
//! - **connection set-up**: every new TCP connection (a dial, or an HTTP call that finds no idle
//!   connection) costs a round trip before its dialer sends, as a real TCP connect does. turmoil
//!   charges the SYN's latency but completes the connect the moment the listener accepts, so the
//!   driver waits one more latency (the SYN-ACK's); on loopback (`real`) it waits both
//!   ([`ConnectCost`]). HTTP connections are kept alive as Kraken's Go clients keep them
//!   (`peer::HttpClient`): an agent's announces reuse the connection of its metainfo request.
//! - **trackers** (`tracker`): HTTP/1.1 with Kraken's endpoints, `POST /announce/{infohash}`
//!   and `GET /namespace/{ns}/blobs/{digest}/metainfo`; the tracker asks origins on
//!   `GET /internal/namespace/{ns}/blobs/{digest}/metainfo`, served on the origin's HTTP port.
//! - **content**: real bytes. Every blob is generated from the scenario seed, its digest is its
//!   SHA-256 (not the scenario's name-derived digest), agents check each piece's CRC32 and the
//!   blob's SHA-256 on completion (`quirks.verify_blob_sha256`). On turmoil the bytes are in memory
//!   (origins serve [`BlobContent::Bytes`](shoal_protocols::origin::BlobContent), agents keep their
//!   pieces); on `real` they are on disk, one file per blob and agent, and the driver reads and
//!   writes them around the state machines ([`store`]).
//! - **faults** (`real` only; turmoil's network applies its own): every node runs as an
//!   incarnation whose tasks a `[[faults]]` crash aborts all at once (`lifecycle`), and the delay
//!   line judges each message by the link it crosses when it arrives (`faults`).
//!
//! [`wire::Decoder`]: shoal_protocols::wire::Decoder
//! [`wire::encode_header`]: shoal_protocols::wire::encode_header

pub mod bucket;
mod faults;
pub mod http;
mod lifecycle;
pub mod netns;
mod peer;
pub mod process;
pub mod real;
pub mod rogue;
pub mod sim;
pub mod store;
mod tracker;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocols::origin::BlobContent;
use shoal_protocols::{Digest, Instant, PeerId};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::build::{Addresses, derive_seed};
use crate::net::Topology as NetTopology;
use crate::output::{Metrics, RunFacts, RunReport, summarize, write_run_files};
use crate::scenario::{Place, Scenario};

pub use bucket::TokenBucket;
pub use netns::Net;
pub use store::{BlobBytes, BlobData, MAX_CONTENT_BYTES, generate_blobs};

/// What the driver needs of a network: streams, listeners and a clock.
pub trait Transport: Clone + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    type Listener: 'static;

    /// Time since the start of the run.
    fn now(&self) -> Duration;
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>>;
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>>;
}

/// The current time as the protocol sees it.
fn now<T: Transport>(t: &T) -> Instant {
    Instant::from_nanos(u64::try_from(t.now().as_nanos()).unwrap_or(u64::MAX))
}

/// A duration since the start of the run as a protocol instant.
fn now_of(d: Duration) -> Instant {
    Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Sleeps until `at` on the transport's clock (far futures sleep an hour and are re-checked).
async fn sleep_until<T: Transport>(t: &T, at: Instant) {
    let wait = at.saturating_duration_since(now(t)).min(Duration::from_secs(3600));
    tokio::time::sleep(wait).await;
}

/// Where every node of a socket run listens: the P2P addresses the protocol sees, plus each
/// origin's HTTP address.
#[derive(Clone, Debug)]
pub struct NodeAddrs {
    pub p2p: Addresses,
    pub origin_http: Vec<SocketAddr>,
}

/// Everything the nodes of one run share: the scenario, addresses, content and the run's records.
/// Single-threaded: every task of a run is on one thread (a `LocalSet`, or turmoil's hosts).
#[derive(Debug)]
pub(crate) struct Ctx {
    pub scenario: Scenario,
    pub addrs: NodeAddrs,
    pub blobs: Vec<BlobData>,
    pub blob_by_digest: BTreeMap<Digest, u32>,
    /// Network node (agents, then origins) by peer id.
    pub node_by_peer: BTreeMap<PeerId, u32>,
    pub net: NetTopology,
    /// Largest piece of any blob: the decoder's payload limit.
    pub max_piece: u64,
    pub metrics: RefCell<Metrics>,
    /// Inputs handled by all nodes (perf.json's `events`).
    pub events: Cell<u64>,
    /// When the last download ended.
    pub last_end: Cell<Instant>,
    /// Per network node: (upload, download) buckets.
    pub buckets: Vec<(TokenBucket, TokenBucket)>,
    /// Whether the driver delays messages by the scenario's latency (real sockets; turmoil applies
    /// latency itself).
    pub emulate_latency: bool,
    /// What a new connection still waits once the transport has connected (see
    /// [`ConnectCost`]).
    pub connect_cost: ConnectCost,
    /// Draws of the scenario's latency jitter.
    pub jitter_rng: RefCell<ChaCha8Rng>,
    /// Per agent: its pulls (start time, image) in time order.
    pub pulls_by_host: Vec<Vec<(Instant, u32)>>,
    /// Where agents keep their blobs (`agent-<n>/<digest>`) when blobs are on disk
    /// ([`store`]); `None`: in memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// Set when the run cannot go on (a piece could not be written): the run fails with it.
    pub fatal: RefCell<Option<String>>,
    /// Per agent: how many of its pulls have started. Shared, not the task's own, so that an agent
    /// restarted by a fault does not start its earlier pulls again, and pulls that come due while
    /// it is down are consumed (and failed) by the engine.
    pub next_pull: Vec<Cell<usize>>,
    /// Partitioned and held links (`[[faults]]` on the real engine; turmoil's network applies
    /// its own, and these stay healthy).
    pub links: faults::Links,
}

impl Ctx {
    pub fn new(
        scenario: Scenario,
        addrs: NodeAddrs,
        blobs: Vec<BlobData>,
        interval: Duration,
    ) -> Result<Ctx, String> {
        let s = &scenario;
        let net = crate::build::net_topology(s).map_err(|e| format!("topology: {e:?}"))?;
        let agents = s.topology.hosts.len();
        tracing::info!(scenario = %s.name, seed = s.seed, hosts = agents, "socket run start");
        let mut node_by_peer = BTreeMap::new();
        for (i, a) in addrs.p2p.agents.iter().enumerate() {
            node_by_peer.insert(PeerId::from_addr(*a), i as u32);
        }
        for (o, a) in addrs.p2p.origins.iter().enumerate() {
            node_by_peer.insert(PeerId::from_addr(*a), (agents + o) as u32);
        }
        let blob_by_digest = blobs.iter().enumerate().map(|(i, b)| (b.digest, i as u32)).collect();
        let max_piece = s
            .workload
            .blobs
            .iter()
            .map(|b| s.protocol.origin.piece_lengths.select(b.size).min(b.size))
            .max()
            .unwrap_or(0);
        let token = |cfg: &shoal_protocols::config::SchedulerConfig| cfg.conn.bandwidth.token_size_bits / 8;
        let bucket = |rate: u64, token: u64| TokenBucket::new(rate, token.max(1));
        let mut buckets: Vec<(TokenBucket, TokenBucket)> = s
            .topology
            .hosts
            .iter()
            .map(|h| {
                let t = token(&s.protocol.agent);
                (bucket(h.upload_bytes_per_s, t), bucket(h.download_bytes_per_s, t))
            })
            .collect();
        buckets.extend(s.origins.iter().map(|o| {
            let t = token(&s.protocol.origin_scheduler);
            (bucket(o.upload_bytes_per_s, t), bucket(o.download_bytes_per_s, t))
        }));
        let mut pulls_by_host = vec![Vec::new(); agents];
        for p in &s.workload.pulls {
            pulls_by_host[p.host].push((Instant::ZERO + p.at, p.image as u32));
        }
        Ok(Ctx {
            next_pull: (0..agents).map(|_| Cell::new(0)).collect(),
            data_dir: None,
            fatal: RefCell::new(None),
            links: faults::Links::new((agents + s.origins.len()) as u32),
            pulls_by_host,
            metrics: RefCell::new(Metrics::new(agents, interval)),
            net,
            node_by_peer,
            blob_by_digest,
            max_piece,
            blobs,
            addrs,
            events: Cell::new(0),
            last_end: Cell::new(Instant::ZERO),
            buckets,
            emulate_latency: false,
            connect_cost: ConnectCost::Transport,
            jitter_rng: RefCell::new(ChaCha8Rng::seed_from_u64(derive_seed(s.seed, "latency", 0))),
            scenario,
        })
    }

    /// Where a network node sits; `None` is a tracker (outside every group).
    pub fn place(&self, node: Option<u32>) -> Place {
        let agents = self.agents();
        match node {
            Some(n) if n < agents => self.scenario.topology.hosts[n as usize].place,
            Some(n) => {
                self.scenario.origins.get((n - agents) as usize).map_or_else(Place::default, |o| o.place)
            }
            None => Place::default(),
        }
    }

    /// The one-way delay the driver adds between two nodes (`None`: a tracker): the scenario's
    /// latency plus a jitter draw when the driver emulates latency, zero otherwise.
    pub fn one_way(&self, a: Option<u32>, b: Option<u32>) -> Duration {
        if !self.emulate_latency {
            return Duration::ZERO;
        }
        self.latency_draw(a, b)
    }

    /// How long a new connection from `a` to `b` (`None`: a tracker) waits after the transport
    /// connected, so that every connection costs TCP's round trip before its dialer sends.
    pub fn connect_wait(&self, a: Option<u32>, b: Option<u32>) -> Duration {
        match self.connect_cost {
            ConnectCost::Transport => Duration::ZERO,
            ConnectCost::SynAck => self.latency_draw(b, a),
            ConnectCost::RoundTrip => self.latency_draw(a, b) + self.latency_draw(b, a),
        }
    }

    /// One draw of the scenario's latency from `a` to `b`: base, boundaries crossed and jitter.
    fn latency_draw(&self, a: Option<u32>, b: Option<u32>) -> Duration {
        let topo = &self.scenario.topology;
        let j = topo.latency_jitter.as_nanos() as u64;
        let jitter = if j == 0 { 0 } else { self.jitter_rng.borrow_mut().random_range(0..j) };
        topo.latency_between(self.place(a), self.place(b)) + Duration::from_nanos(jitter)
    }

    pub fn agents(&self) -> u32 {
        self.scenario.topology.hosts.len() as u32
    }

    /// The backend every origin serves: each blob's real bytes, or its metainfo when the driver
    /// serves the bytes from disk.
    pub fn backend(&self) -> BTreeMap<Digest, BlobContent> {
        self.blobs
            .iter()
            .map(|b| {
                let content = match &b.bytes {
                    BlobBytes::Memory(bytes) => BlobContent::Bytes(bytes.clone()),
                    BlobBytes::File { .. } => BlobContent::Stored(b.metainfo.clone()),
                };
                (b.digest, content)
            })
            .collect()
    }

    /// Records why the run cannot go on (the first reason wins).
    pub fn fail_run(&self, why: String) {
        self.fatal.borrow_mut().get_or_insert(why);
    }

    /// Every pull has ended.
    pub fn done(&self) -> bool {
        let m = self.metrics.borrow();
        m.pending_downloads == 0 && m.images.len() == self.scenario.workload.pulls.len()
    }

    /// Fails every running download of agent `host` (its software is gone) with `reason`.
    pub fn fail_host(&self, host: u32, now: Instant, reason: &str) {
        if self.metrics.borrow_mut().fail_host(host, now, reason) > 0 {
            self.last_end.set(self.last_end.get().max(now));
        }
    }

    /// Starts, and fails at once, every pull of agent `host` due by `now`: the host is down.
    pub fn fail_due_pulls(&self, host: u32, now: Instant) {
        let pulls = &self.pulls_by_host[host as usize];
        let cursor = &self.next_pull[host as usize];
        while let Some(&(at, image)) = pulls.get(cursor.get()) {
            if at > now {
                break;
            }
            cursor.set(cursor.get() + 1);
            self.metrics.borrow_mut().start_pull(&self.scenario, host, image, now);
            self.fail_host(host, now, "host down");
        }
    }

    pub fn count_event(&self) {
        self.events.set(self.events.get() + 1);
    }
}

/// What a TCP connect costs beyond what the transport charges. A real connect costs a round trip
/// (SYN out, SYN-ACK back) before the dialer can send; the driver makes up what its transport
/// leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectCost {
    /// The transport's own (a real network).
    Transport,
    /// One latency back: turmoil delivers the SYN after the link's latency but completes the
    /// connect the moment the listener accepts (its SYN-ACK takes no time).
    SynAck,
    /// The whole round trip: loopback connects at once, and the driver emulates the latency.
    RoundTrip,
}

/// What a socket run produced.
#[derive(Debug)]
pub struct DriverRun {
    pub scenario: Scenario,
    pub metrics: Metrics,
    /// When the run ended: the last download's end, or the time limit.
    pub end: Instant,
    pub events: u64,
    pub engine: &'static str,
    /// What the misbehaving peer saw, when [`DriverOptions::rogue`] was set.
    pub rogue: Option<rogue::RogueReport>,
    /// Where the nodes listened.
    pub addrs: NodeAddrs,
    /// Stopped early by [`DriverOptions::stop`]: downloads that had not ended are unfinished.
    pub interrupted: bool,
    /// How the `real` engine's nodes were connected.
    pub net: Net,
}

impl DriverRun {
    pub(crate) fn from_ctx(ctx: &Ctx, engine: &'static str, timed_out: bool) -> DriverRun {
        let end = if timed_out { Instant::ZERO + ctx.scenario.max_sim_time } else { ctx.last_end.get() };
        tracing::info!(engine, at = %end, events = ctx.events.get(), timed_out, "socket run end");
        DriverRun {
            scenario: ctx.scenario.clone(),
            metrics: std::mem::take(&mut *ctx.metrics.borrow_mut()),
            end,
            events: ctx.events.get(),
            engine,
            rogue: None,
            addrs: ctx.addrs.clone(),
            interrupted: false,
            net: Net::Loopback,
        }
    }

    /// Marks a run stopped early at `now` (Ctrl-C).
    pub(crate) fn interrupted_at(mut self, now: Instant) -> DriverRun {
        self.interrupted = true;
        self.end = now;
        self
    }

    /// summary.json and perf.json contents; `wall_s` is the wall time the run took.
    pub fn report(&self, wall_s: f64) -> RunReport {
        let facts = RunFacts {
            scenario: &self.scenario,
            metrics: &self.metrics,
            now: self.end,
            events: self.events,
            replay: format!(
                "{} --engine {}{}",
                self.scenario.replay_command(),
                self.engine,
                self.net.cli_flags()
            ),
            solver: match self.net {
                Net::Loopback => "none (token buckets)",
                Net::Netns => "none (kernel links: tc tbf per host)",
            }
            .to_string(),
            solver_solves: 0,
            solver_flows_resolved: 0,
            interrupted: self.interrupted,
        };
        summarize(&facts, self.engine, wall_s)
    }

    /// Writes downloads.csv, timeseries.csv, summary.json and perf.json into `dir`.
    pub fn write_outputs(&self, dir: &std::path::Path, report: &RunReport) -> io::Result<()> {
        write_run_files(dir, &self.scenario, &self.metrics, self.end, report, |_| Ok(()))
    }
}

/// Options of a socket run that are not part of the scenario.
pub struct DriverOptions {
    /// Time-series interval.
    pub interval: Duration,
    /// Called every so often with (seconds since start, image pulls finished, image pulls in all).
    pub progress: Option<crate::ProgressFn>,
    /// Adds a misbehaving peer to a `real` run (robustness tests).
    pub rogue: Option<rogue::Rogue>,
    /// Kills agent `host`'s software at this time into a `real` run, as a `[[faults]]` crash
    /// does (every task it spawned, and so every socket); its unfinished downloads are recorded
    /// as failed (`removed`), and its later pulls as `host down`. Robustness tests.
    pub kill_agent: Option<(u32, Duration)>,
    /// Stops the run early when set; see [`DriverRun::interrupted`].
    pub stop: Option<crate::StopFlag>,
    /// `--engine real`: the folder under which the run keeps its blobs on disk, in a folder of its
    /// own (`shoal-data-<pid>-<n>`); `None`: the system's temporary folder.
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep the run's data folder after the run instead of removing it.
    pub keep_data: bool,
    /// How a `real` run's nodes are connected: loopback (default) or network namespaces.
    pub net: Net,
}

impl std::fmt::Debug for DriverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverOptions")
            .field("interval", &self.interval)
            .field("rogue", &self.rogue)
            .finish_non_exhaustive()
    }
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            interval: Duration::from_millis(100),
            progress: None,
            rogue: None,
            kill_agent: None,
            stop: None,
            data_dir: None,
            keep_data: false,
            net: Net::Loopback,
        }
    }
}

/// The single-threaded tokio runtime the socket engines and node processes run on (with a
/// `LocalSet`: nodes share state through `Rc`).
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))
}
