//! Every configuration value of Kraken's scheduler, tracker and origin (reference/kraken.md §4.7,
//! §5, §6), with Kraken's code default, named with its unit.
//!
//! `Default` is Kraken's *code* default. The presets [`SchedulerConfig::agent_base_yaml`] and
//! [`SchedulerConfig::origin_base_yaml`] apply what Kraken's shipped `config/*/base.yaml` overrides.
//! Where shoal departs from Kraken, the knob is in [`Quirks`] and documented there.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metainfo::PieceLengths;
use crate::time::ms;

/// The P2P scheduler, shared by agents and origins (`lib/torrent/scheduler/config.go`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A complete torrent unread for this long drops its control (the data stays).
    pub seeder_tti_ms: u64,
    /// An incomplete torrent with no good piece written for this long fails and is deleted.
    pub leecher_tti_ms: u64,
    /// A connection with no piece sent or received for this long is closed.
    pub conn_tti_ms: u64,
    /// A connection older than this is closed.
    pub conn_ttl_ms: u64,
    /// How often idle connections and torrents are evicted.
    pub preemption_interval_ms: u64,
    /// Turns the periodic eviction of idle connections and torrents off (Kraken: for tests; default false).
    pub disable_preemption: bool,
    /// Connection admission and the blacklist.
    pub conn_state: ConnStateConfig,
    /// Per-connection settings: handshake timeout, queues, bandwidth.
    pub conn: ConnConfig,
    /// Piece requests: policy, pipelining, timeouts, endgame.
    pub dispatch: DispatchConfig,
    /// The announce timer.
    pub announcer: AnnouncerConfig,
    /// Metainfo download from the tracker.
    pub metainfo_client: MetaInfoClientConfig,
    /// Kraken behaviours shoal reproduces by default or can fix.
    pub quirks: Quirks,
    /// The BitTorrent classic peer behaviour (choking, interest, piece order, endgame), set by
    /// [`BitTorrentConfig::apply_scheduler`] under `protocol.policy = "bittorrent"`; `None` runs Kraken's.
    /// Not read from scenario tables: `[protocol.bittorrent]` holds its values.
    #[serde(skip)]
    pub bittorrent: Option<BitTorrentConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            seeder_tti_ms: 5 * 60_000,
            leecher_tti_ms: 5 * 60_000,
            conn_tti_ms: 30_000,
            conn_ttl_ms: 60 * 60_000,
            preemption_interval_ms: 30_000,
            disable_preemption: false,
            conn_state: ConnStateConfig::default(),
            conn: ConnConfig::default(),
            dispatch: DispatchConfig::default(),
            announcer: AnnouncerConfig::default(),
            metainfo_client: MetaInfoClientConfig::default(),
            quirks: Quirks::default(),
            bittorrent: None,
        }
    }
}

impl SchedulerConfig {
    /// Kraken's shipped agent configuration (`config/agent/base.yaml`): rarest-first piece selection and
    /// the bandwidth limiter enabled.
    pub fn agent_base_yaml() -> Self {
        let mut c = SchedulerConfig::default();
        c.dispatch.piece_request_policy = PiecePolicy::RarestFirst;
        c.conn.bandwidth.enable = true;
        c
    }

    /// Kraken's shipped origin configuration: code defaults, bandwidth unlimited.
    pub fn origin_base_yaml() -> Self {
        SchedulerConfig::default()
    }

    /// `seeder_tti_ms` as a [`Duration`].
    pub fn seeder_tti(&self) -> Duration {
        ms(self.seeder_tti_ms)
    }
    /// `leecher_tti_ms` as a [`Duration`].
    pub fn leecher_tti(&self) -> Duration {
        ms(self.leecher_tti_ms)
    }
    /// `conn_tti_ms` as a [`Duration`].
    pub fn conn_tti(&self) -> Duration {
        ms(self.conn_tti_ms)
    }
    /// `conn_ttl_ms` as a [`Duration`].
    pub fn conn_ttl(&self) -> Duration {
        ms(self.conn_ttl_ms)
    }
    /// `preemption_interval_ms` as a [`Duration`], at least 1 ms so the timer always advances.
    pub fn preemption_interval(&self) -> Duration {
        ms(self.preemption_interval_ms.max(1))
    }
}

/// Connection admission and the blacklist (`connstate/config.go`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnStateConfig {
    /// Pending plus active connections per torrent.
    pub max_open_conn: usize,
    /// An incoming peer is refused if more than this many of its neighbours are ours too. `None` means
    /// `max_open_conn`, Kraken's default, which makes the check effectively off.
    pub max_mutual_conn: Option<usize>,
    /// How long a failed (peer, torrent) is not dialled again.
    pub blacklist_duration_ms: u64,
    /// Never blacklist a (peer, torrent) (Kraken: for tests; default false).
    pub disable_blacklist: bool,
}

impl Default for ConnStateConfig {
    fn default() -> Self {
        ConnStateConfig {
            max_open_conn: 10,
            max_mutual_conn: None,
            blacklist_duration_ms: 30_000,
            disable_blacklist: false,
        }
    }
}

impl ConnStateConfig {
    /// `max_mutual_conn`, or `max_open_conn` when unset.
    pub fn max_mutual_conn(&self) -> usize {
        self.max_mutual_conn.unwrap_or(self.max_open_conn)
    }
    /// `blacklist_duration_ms` as a [`Duration`].
    pub fn blacklist_duration(&self) -> Duration {
        ms(self.blacklist_duration_ms)
    }
}

/// Per-connection settings (`conn/config.go`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnConfig {
    /// Dial, handshake write and handshake read deadline.
    pub handshake_timeout_ms: u64,
    /// Messages queued for sending before further sends are dropped.
    pub sender_buffer_size: usize,
    /// Kraken's receive queue per connection, in messages (default 10,000). Kept for configuration parity:
    /// no shoal node or driver reads it.
    pub receiver_buffer_size: usize,
    /// The per-host bandwidth limiter.
    pub bandwidth: BandwidthConfig,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            handshake_timeout_ms: 5_000,
            sender_buffer_size: 10_000,
            receiver_buffer_size: 10_000,
            bandwidth: BandwidthConfig::default(),
        }
    }
}

impl ConnConfig {
    /// `handshake_timeout_ms` as a [`Duration`].
    pub fn handshake_timeout(&self) -> Duration {
        ms(self.handshake_timeout_ms)
    }
}

/// The per-host token bucket (`utils/bandwidth/limiter.go`). Drivers apply it: the discrete-event
/// engine as the host's link capacity, the real driver as a token bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandwidthConfig {
    /// Whether the limiter applies. Kraken's code default is false; `config/agent/base.yaml` enables it for
    /// agents, origins stay unlimited.
    pub enable: bool,
    /// 200 MiB/s.
    pub egress_bits_per_s: u64,
    /// 300 MiB/s.
    pub ingress_bits_per_s: u64,
    /// 8 Mbit = 1 MiB; the burst is one second of rate.
    pub token_size_bits: u64,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        BandwidthConfig {
            enable: false,
            egress_bits_per_s: 200 * 8 * (1 << 20),
            ingress_bits_per_s: 300 * 8 * (1 << 20),
            token_size_bits: 8 * (1 << 20),
        }
    }
}

/// How a leecher picks the pieces it requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiecePolicy {
    /// Kraken's `default`: reservoir sampling, a uniform random choice among valid candidates.
    #[default]
    #[serde(alias = "default")]
    Random,
    /// Fewest connected holders first; ties in heap order (deterministic).
    RarestFirst,
}

/// The per-torrent dispatcher (`dispatch/config.go`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// How a leecher picks the pieces it requests: code default `random`, agent base.yaml `rarest_first`.
    pub piece_request_policy: PiecePolicy,
    /// Floor of a piece request's timeout (Kraken default 4 s); see
    /// [`DispatchConfig::piece_request_timeout`].
    pub piece_request_min_timeout_ms: u64,
    /// Multiplied by the largest piece length in MiB.
    pub piece_request_timeout_per_mib_ms: u64,
    /// Requests in flight to an agent peer.
    pub pipeline_limit: usize,
    /// Requests in flight to an origin peer (Kraken PR #585).
    pub origin_pipeline_limit: usize,
    /// Remaining pieces at or below which duplicate requests are allowed. `None` means
    /// `pipeline_limit`, Kraken's default.
    pub endgame_threshold: Option<u32>,
    /// Never allow duplicate requests near the end of a download (Kraken default false).
    pub disable_endgame: bool,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            piece_request_policy: PiecePolicy::Random,
            piece_request_min_timeout_ms: 4_000,
            piece_request_timeout_per_mib_ms: 4_000,
            pipeline_limit: 3,
            origin_pipeline_limit: 5,
            endgame_threshold: None,
            disable_endgame: false,
        }
    }
}

impl DispatchConfig {
    /// `endgame_threshold`, or `pipeline_limit` when unset.
    pub fn endgame_threshold(&self) -> u32 {
        self.endgame_threshold.unwrap_or(self.pipeline_limit as u32)
    }

    /// max(min timeout, per-MiB timeout × max piece length in MiB).
    pub fn piece_request_timeout(&self, max_piece_length: u64) -> Duration {
        let per_mib = self.piece_request_timeout_per_mib_ms as u128 * max_piece_length as u128 / (1 << 20);
        let ms_total = (self.piece_request_min_timeout_ms as u128).max(per_mib);
        Duration::from_millis(u64::try_from(ms_total).unwrap_or(u64::MAX))
    }
}

/// The announce timer (`announcer/announcer.go`): not YAML-configurable in Kraken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnouncerConfig {
    /// Interval before the first tracker response, and when a response says 0 or too much.
    pub default_interval_ms: u64,
    /// A tracker interval above this is replaced by the default.
    pub max_interval_ms: u64,
    /// An announce unanswered for this long counts as a network error (Kraken's HTTP timeout).
    pub timeout_ms: u64,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        AnnouncerConfig { default_interval_ms: 5_000, max_interval_ms: 60_000, timeout_ms: 10_000 }
    }
}

/// Metainfo download from the tracker, polling while the origin answers 202
/// (`tracker/metainfoclient/client.go`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaInfoClientConfig {
    /// One metainfo request unanswered for this long counts as an unreachable tracker, and the next tracker
    /// is tried (Kraken's HTTP timeout, 10 s).
    pub timeout_ms: u64,
    /// First wait after a 202 (pending) answer (Kraken default 1 s).
    pub backoff_initial_ms: u64,
    /// Factor applied to the wait after each 202 (Kraken default 1.3).
    pub backoff_multiplier: f64,
    /// Each wait is scaled by a uniform factor in [1 − jitter, 1 + jitter].
    pub backoff_jitter: f64,
    /// Cap on the wait between polls, before jitter (Kraken default 5 s).
    pub backoff_max_ms: u64,
    /// Total time after which the download fails.
    pub give_up_after_ms: u64,
}

impl Default for MetaInfoClientConfig {
    fn default() -> Self {
        MetaInfoClientConfig {
            timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_multiplier: 1.3,
            backoff_jitter: 0.05,
            backoff_max_ms: 5_000,
            give_up_after_ms: 15 * 60_000,
        }
    }
}

/// Kraken behaviours read from its code that a simulator must decide on (reference/kraken.md §11.6).
/// Each default reproduces Kraken, except `verify_blob_sha256`, a check shoal adds; setting a flag to
/// its other value is shoal's fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quirks {
    /// Kraken updates a seeder's `lastRead` only on a read error, so seeder TTI counts from creation.
    /// Reproduced (true); its effect is small because active connections keep serving.
    pub seeder_tti_from_creation: bool,
    /// One announce per tick for the whole host, not per torrent. Reproduced (true): with several
    /// layers each torrent re-announces every N × interval. False announces every ready torrent.
    pub announce_one_torrent_per_tick: bool,
    /// Every closed connection is blacklisted, idle closes and completed peers included. Reproduced
    /// (true); false blacklists only failures (handshake failures, protocol errors).
    pub blacklist_every_closed_conn: bool,
    /// Two peers dialling each other at once both refuse the other's handshake and blacklist each
    /// other. Reproduced (true); false lets the peer with the lower id accept.
    pub cross_dial_collision: bool,
    /// Incoming handshakes are not checked against the blacklist. Reproduced (true); false refuses
    /// blacklisted peers on accept too.
    pub blacklist_ignores_incoming: bool,
    /// Kraken has no cap on connections across torrents. 0 reproduces that; a positive value caps
    /// pending plus active connections per host.
    pub max_open_conn_total: usize,
    /// Kraken only marks a request whose payload fails its CRC as invalid and re-sends it elsewhere; the
    /// sender stays connected. Reproduced (true); false also closes the connection (which blacklists it).
    pub tolerate_corrupt_pieces: bool,
    /// Kraken agents do not re-check a blob's SHA-256 when a download completes. shoal does (true) when
    /// the pieces are real bytes, and fails the download on a mismatch; simulated payloads are covered
    /// by their CRC tags alone. False reproduces Kraken.
    pub verify_blob_sha256: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            seeder_tti_from_creation: true,
            announce_one_torrent_per_tick: true,
            blacklist_every_closed_conn: true,
            cross_dial_collision: true,
            blacklist_ignores_incoming: true,
            max_open_conn_total: 0,
            tolerate_corrupt_pieces: true,
            verify_blob_sha256: true,
        }
    }
}

/// Which distribution protocol every node runs (`protocol.policy` in a scenario). Each policy is a
/// configuration of the same agent, origin and tracker state machines, so every engine runs every
/// policy unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Kraken's agent, origin and tracker as configured by the other `[protocol.*]` tables.
    #[default]
    Kraken,
    /// BitTorrent classic (BEP 3 and Cohen's reference client): tit-for-tat choking, random first
    /// pieces then rarest-first, endgame when every missing piece is requested, a random 50-peer
    /// handout. The same nodes with [`BitTorrentConfig`] applied; see protocols/README.md.
    #[serde(rename = "bittorrent")]
    BitTorrent,
    /// Dragonfly v2: the tracker schedules parents, agents pick a parent per piece by idle upload
    /// (`crate::policy::dragonfly`, configured by `[protocol.dragonfly]`).
    Dragonfly,
    /// The baseline P2P is measured against (reference/peers.md §11 policy 1): every host pulls from
    /// the origins only. The same state machines, configured by [`Policy::configure`]: the tracker
    /// hands out the owning origins and no agent (so no agent ever dials, or is dialled by, another
    /// agent), and origins accept a connection from every host instead of Kraken's 10 per torrent.
    OriginOnly,
}

impl Policy {
    /// The name used in scenario files and outputs.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Kraken => "kraken",
            Policy::BitTorrent => "bittorrent",
            Policy::Dragonfly => "dragonfly",
            Policy::OriginOnly => "origin_only",
        }
    }

    /// Rewrites the configurations the policy fixes, for a swarm of `hosts` agents. `Kraken` changes
    /// nothing. `OriginOnly`:
    /// - the tracker's `announce_limit` becomes 0: the handout is the owning origins alone (agents
    ///   still announce), so no agent ever dials, or is dialled by, another agent;
    /// - origins' `max_open_conn` rises to at least `hosts`: a registry serves every client, where
    ///   Kraken's 10 per torrent would make this baseline measure refusals and 30 s blacklists;
    /// - agents wait at least 5 min for a piece (`piece_request_min_timeout_ms`): with thousands of
    ///   clients sharing an origin, Kraken's 5 pipelined 4 MiB requests per connection wait behind
    ///   each other past the 16 s timeout and are requested again (at 600 hosts, 16 % of the
    ///   origins' egress were such duplicates), a cost of Kraken's agent under overload, not of
    ///   pulling from a registry. (One request in flight instead would also avoid it, but makes
    ///   every piece a new flow and the run 10× slower to simulate.)
    pub fn configure(
        self,
        hosts: usize,
        agent: &mut SchedulerConfig,
        origin_scheduler: &mut SchedulerConfig,
        tracker: &mut TrackerConfig,
    ) {
        match self {
            // BitTorrent's and Dragonfly's settings come from their own tables
            // (`BitTorrentConfig::apply_*`, `DragonflyConfig`), applied where the scenario is resolved.
            Policy::Kraken | Policy::BitTorrent | Policy::Dragonfly => {}
            Policy::OriginOnly => {
                tracker.announce_limit = 0;
                let c = &mut origin_scheduler.conn_state;
                c.max_open_conn = c.max_open_conn.max(hosts);
                c.max_mutual_conn = None;
                let t = &mut agent.dispatch.piece_request_min_timeout_ms;
                *t = (*t).max(5 * 60_000);
            }
        }
    }
}

/// BitTorrent classic's parameters (`[protocol.bittorrent]`), with the defaults of BEP 3 and Cohen's
/// reference client (reference/peers.md §9, §11 item 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BitTorrentConfig {
    /// Peers the tracker hands out per announce (the tracker's `numwant`), chosen at random.
    pub numwant: usize,
    /// An agent stops dialling a torrent's peers once it has this many connections (pending plus
    /// active) to it.
    pub max_initiate: usize,
    /// Connections per torrent, dialled plus accepted; further incoming handshakes are refused. The
    /// reference client has no cap; shoal uses BitTorrent mainline's `max_allow_in` of 80.
    pub max_connections: usize,
    /// Interested peers unchoked for their rate (tit-for-tat).
    pub unchoke_slots: usize,
    /// Interested peers unchoked at random on top, whatever their rate.
    pub optimistic_slots: usize,
    /// How often the regular unchoke set is recomputed.
    pub rechoke_interval_ms: u64,
    /// How often the optimistic unchoke moves to another peer.
    pub optimistic_rotate_ms: u64,
    /// The window over which transfer rates are measured.
    pub rate_window_ms: u64,
    /// A leecher that received no piece from a peer for this long (since it connected) treats it as
    /// snubbed: the peer can be unchoked only optimistically.
    pub snub_timeout_ms: u64,
    /// Pieces are chosen at random until this many are held, then rarest-first.
    pub random_first_cutoff: u32,
    /// A connection with no piece sent or received for this long is closed (BitTornado's `timeout`).
    /// Replaces Kraken's `conn_tti_ms`, which would close choked connections after 30 s.
    pub idle_timeout_ms: u64,
}

impl Default for BitTorrentConfig {
    fn default() -> Self {
        BitTorrentConfig {
            numwant: 50,
            max_initiate: 40,
            max_connections: 80,
            unchoke_slots: 4,
            optimistic_slots: 1,
            rechoke_interval_ms: 10_000,
            optimistic_rotate_ms: 30_000,
            rate_window_ms: 20_000,
            snub_timeout_ms: 60_000,
            random_first_cutoff: 2,
            idle_timeout_ms: 300_000,
        }
    }
}

impl BitTorrentConfig {
    /// Makes an agent's or origin's scheduler configuration run BitTorrent: choking and the piece
    /// order come from `self`, connection limits are BitTorrent's. Everything else (pipelining, request
    /// timeouts, bandwidth, blacklist) stays as given.
    pub fn apply_scheduler(&self, s: &mut SchedulerConfig) {
        s.conn_state.max_open_conn = self.max_connections.max(1);
        s.conn_state.max_mutual_conn = None;
        s.conn_tti_ms = self.idle_timeout_ms;
        s.bittorrent = Some(self.clone());
    }

    /// Makes a tracker hand out `numwant` random peers (the owning origins still come on top: they are
    /// the initial seeds and never announce).
    pub fn apply_tracker(&self, t: &mut TrackerConfig) {
        t.announce_limit = self.numwant;
        t.handout_policy = HandoutPolicy::Default;
    }

    /// `rechoke_interval_ms` as a [`Duration`], at least 1 ms.
    pub fn rechoke_interval(&self) -> Duration {
        ms(self.rechoke_interval_ms.max(1))
    }
    /// `optimistic_rotate_ms` as a [`Duration`], at least 1 ms.
    pub fn optimistic_rotate(&self) -> Duration {
        ms(self.optimistic_rotate_ms.max(1))
    }
    /// `rate_window_ms` as a [`Duration`], at least 1 ms.
    pub fn rate_window(&self) -> Duration {
        ms(self.rate_window_ms.max(1))
    }
    /// `snub_timeout_ms` as a [`Duration`].
    pub fn snub_timeout(&self) -> Duration {
        ms(self.snub_timeout_ms)
    }
}

/// How the tracker orders its handout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoutPolicy {
    /// Every peer has priority 0: the order is the store's random sample.
    Default,
    /// Complete agents, then origins, then incomplete agents; random within a class (Go's unstable sort
    /// over a random sample). Kraken's shipped tracker configuration.
    #[default]
    Completeness,
    /// Topology-aware (reference/peers.md §11 item 10, shoal's fix of Kraken #244): nearest peers
    /// first — same rack, then same pod, then same zone, then anywhere — with `locality.spill_peers`
    /// random peers from outside the requester's rack and the origins always near the front. Needs
    /// the peers' places ([`crate::tracker::Tracker::set_places`]); see `TopologyHandout`.
    Topology,
    /// The naive locality policy Kraken's maintainers described in #244: only peers of the
    /// requester's own group at `locality.group_level`, plus the origins. A group that arrives late
    /// is never told about the others and starves while an earlier group holds every origin
    /// connection. Kept to reproduce that failure; see `NaiveLocalityHandout`.
    NaiveLocality,
}

/// A level of the host hierarchy, as the tracker's locality policies see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyLevel {
    /// The rack: the smallest group of hosts.
    Rack,
    /// The pod: a group of racks.
    Pod,
    /// The zone: a group of pods; the widest level, and the default.
    #[default]
    Zone,
}

/// Parameters of the locality handout policies (`protocol.tracker.locality`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalityConfig {
    /// `topology`: peers from outside the requester's rack (uniformly at random among them) put at
    /// the front of every handout, so every group keeps learning about the others (the #244 fix).
    /// The rest of the handout is filled nearest first, so a group with fewer candidates than the
    /// handout spills to the next level by itself. Default 1: each spill peer costs locality (on
    /// racks-2600 at 200 hosts, 89 % of payload bytes stay in the rack with 0, 64 % with 1, 53 % with
    /// 2), and 0 leaves a late group that already fills its handouts unable to find the others.
    pub spill_peers: usize,
    /// `naive_locality`: the level whose group the handout is confined to.
    pub group_level: TopologyLevel,
}

impl Default for LocalityConfig {
    fn default() -> Self {
        LocalityConfig { spill_peers: 1, group_level: TopologyLevel::Zone }
    }
}

/// The tracker (`tracker/trackerserver/config.go`, `peerstore/`, `peerhandoutpolicy/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// The interval returned to agents.
    pub announce_interval_ms: u64,
    /// Peers handed out per announce; the owning origins come on top.
    pub announce_limit: usize,
    /// A peer that has not announced a torrent for this long is dropped from its store (Kraken default 5 h).
    pub peer_ttl_ms: u64,
    /// How the peers handed out are ordered; Kraken's shipped tracker uses `completeness`.
    pub handout_policy: HandoutPolicy,
    /// How long a metainfo answer from the origins is cached (nginx): 200s for 5 min, others for 1 s.
    pub metainfo_cache_ttl_ms: u64,
    /// How long any other metainfo answer (202, 404, every owner unreachable) is cached (nginx: 1 s).
    pub metainfo_error_cache_ttl_ms: u64,
    /// Parameters of the `topology` and `naive_locality` handout policies.
    pub locality: LocalityConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            announce_interval_ms: 3_000,
            announce_limit: 50,
            peer_ttl_ms: 5 * 60 * 60_000,
            handout_policy: HandoutPolicy::Completeness,
            metainfo_cache_ttl_ms: 5 * 60_000,
            metainfo_error_cache_ttl_ms: 1_000,
            locality: LocalityConfig::default(),
        }
    }
}

/// The origin cluster (`lib/hashring/config.go`, `lib/metainfogen`, `lib/blobrefresh`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Origins that own each blob (rendezvous hashing on the digest's shard id). Kraken's code default
    /// is 3; its example and helm configurations use 2.
    pub max_replica: usize,
    /// Piece length chosen by blob size when an origin generates metainfo.
    pub piece_lengths: PieceLengths,
    /// True if every owned blob is in the origin's cache at start; false makes the first request fetch
    /// it from the backend.
    pub warm_cache: bool,
    /// Time to first byte of a backend fetch.
    pub backend_latency_ms: u64,
    /// Backend read rate for one fetch; 0 means instantaneous.
    pub backend_bytes_per_s: u64,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            max_replica: 3,
            piece_lengths: PieceLengths::default(),
            warm_cache: true,
            backend_latency_ms: 0,
            backend_bytes_per_s: 0,
        }
    }
}

impl OriginConfig {
    /// How long the backend takes to deliver a blob of `size` bytes.
    pub fn backend_fetch_time(&self, size: u64) -> Duration {
        let transfer = if self.backend_bytes_per_s == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                u64::try_from(size as u128 * 1_000_000_000 / self.backend_bytes_per_s as u128)
                    .unwrap_or(u64::MAX),
            )
        };
        ms(self.backend_latency_ms) + transfer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeout_is_max_of_floor_and_per_mib() {
        let d = DispatchConfig::default();
        assert_eq!(d.piece_request_timeout(4 << 20), Duration::from_secs(16));
        assert_eq!(d.piece_request_timeout(1 << 20), Duration::from_secs(4));
        assert_eq!(d.piece_request_timeout(256 << 10), Duration::from_secs(4));
        assert_eq!(d.endgame_threshold(), 3);
    }

    #[test]
    fn defaults_match_kraken() {
        let s = SchedulerConfig::default();
        assert_eq!(s.conn_state.max_open_conn, 10);
        assert_eq!(s.conn_state.max_mutual_conn(), 10);
        assert_eq!(s.conn_state.blacklist_duration(), Duration::from_secs(30));
        assert_eq!(s.conn.bandwidth.egress_bits_per_s, 1_677_721_600);
        assert_eq!(s.conn.bandwidth.ingress_bits_per_s, 2_516_582_400);
        assert_eq!(s.dispatch.piece_request_policy, PiecePolicy::Random);
        assert_eq!(
            SchedulerConfig::agent_base_yaml().dispatch.piece_request_policy,
            PiecePolicy::RarestFirst
        );
        assert_eq!(TrackerConfig::default().announce_limit, 50);
    }

    #[test]
    fn origin_only_hands_out_origins_and_lets_every_host_in() {
        let (mut a, mut o, mut t) =
            (SchedulerConfig::default(), SchedulerConfig::default(), TrackerConfig::default());
        Policy::Kraken.configure(2600, &mut a, &mut o, &mut t);
        assert_eq!(
            (&a, &o, &t),
            (&SchedulerConfig::default(), &SchedulerConfig::default(), &TrackerConfig::default())
        );
        Policy::OriginOnly.configure(2600, &mut a, &mut o, &mut t);
        assert_eq!(t.announce_limit, 0);
        assert_eq!(a.dispatch.origin_pipeline_limit, 5);
        assert_eq!(a.dispatch.piece_request_timeout(4 << 20), Duration::from_secs(300));
        assert_eq!(o.conn_state.max_open_conn, 2600);
        assert_eq!(o.conn_state.max_mutual_conn(), 2600);
        assert_eq!(Policy::OriginOnly.name(), "origin_only");
        let l: TrackerConfig =
            serde_json::from_str(r#"{"handout_policy": "topology", "locality": {"spill_peers": 3}}"#)
                .unwrap();
        assert_eq!((l.handout_policy, l.locality.spill_peers), (HandoutPolicy::Topology, 3));
        assert_eq!(l.locality.group_level, TopologyLevel::Zone);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<DispatchConfig>(r#"{"pipeline_limt": 4}"#).unwrap_err();
        assert!(err.to_string().contains("pipeline_limt"));
        let ok: DispatchConfig = serde_json::from_str(r#"{"piece_request_policy": "default"}"#).unwrap();
        assert_eq!(ok.piece_request_policy, PiecePolicy::Random);
    }
}
