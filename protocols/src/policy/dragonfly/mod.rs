//! Dragonfly v2: a central scheduler assigns parents, the client picks a parent per piece
//! (reference/peers.md §1.1–§1.3, §11 item 6).
//!
//! In shoal the scheduler is the tracker ([`scheduler::DragonflyScheduler`], enabled with
//! [`crate::tracker::Tracker::set_dragonfly`]); agents register and report progress and load with
//! their announces ([`DragonflyReport`], a shoal extension of the announce request) and receive
//! parents, back-to-source orders and their parents' idle upload in the answer ([`DragonflyAnswer`]).
//! The client side ([`client::ClientPicker`]) keeps [`DragonflyConfig::concurrent_pieces`] pieces in
//! flight and sends each request to a parent chosen at random, weighted by its idle upload
//! `max(maxTx − tx, maxTx / 10)`. Origins are the seed peers: they join a task's DAG when its first
//! peer registers, and they are also the source a peer downloads from when sent back to source.
//!
//! What shoal simplifies, each documented where it is done:
//! - pieces: the workload's piece length (`protocol.origin.piece_length`), not Dragonfly's
//!   `clamp(next_pow2(size / 500), 4 MiB, 64 MiB)` — the same pieces for every policy keeps the
//!   comparison about scheduling, and for the 1.5 GB layers of the 2600-host run both rules give 4 MiB;
//! - host load reaches a child through the scheduler's answers (every `report_interval_ms`) rather
//!   than a stream from each parent (Dragonfly's `sync_host`, every 500 ms): at most two intervals old;
//! - a host's transmit rate is what it handed to the transport over the last report interval;
//!   origins do not report and count as idle (Dragonfly's 10 Gbit/s default for an unknown host);
//! - the piece collector's 100 ms wait for every parent is left out: a piece is requested as soon as
//!   a parent has it, lowest index first (parents' completion order; no rarest-first, as Dragonfly);
//! - uploads never fail in simulation, so the base evaluator's upload success rate is always 1;
//! - a peer whose scheduling fails after `retry_limit` attempts starts over (registers again) rather
//!   than failing its download.

pub mod client;
pub mod scheduler;

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::types::PeerId;

/// Dragonfly's default weight for a host whose transmit capacity is unknown: 10 Gbit/s, in bytes/s.
pub const DEFAULT_MAX_TX_BYTES_PER_S: u64 = 10_000_000_000 / 8;

/// How the scheduler scores candidate parents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluator {
    /// Dragonfly2 ≤ Dec 2024 (`evaluator_base.go`): finished pieces 0.2, upload success 0.2, free
    /// upload slots 0.15, host type 0.15, IDC 0.15, location 0.15.
    #[default]
    Base,
    /// dragonflyoss/dragonfly 2025+ (`evaluator_default.go`): 0.6 load quality (0.5 peak bandwidth,
    /// 0.3 bandwidth duration, 0.2 concurrency), 0.2 IDC, 0.1 location, 0.1 host type.
    LoadAware,
}

/// `[protocol.dragonfly]`: every parameter with Dragonfly's default and its unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DragonflyConfig {
    /// Random candidates drawn from the task's DAG per scheduling (`filterParentLimit`).
    pub filter_parent_limit: usize,
    /// Parents handed out: the best-scored candidates (`candidateParentLimit`; 4 in Dragonfly2 Dec
    /// 2024, 3 in later dragonflyoss/dragonfly).
    pub candidate_parent_limit: usize,
    /// How candidate parents are scored (default: the base evaluator).
    pub evaluator: Evaluator,
    /// Wait before a scheduling that found no parent is tried again (`RetryInterval`).
    pub retry_interval_ms: u64,
    /// Failed schedulings after which a peer is sent back to source, if the task allows more
    /// back-to-source peers (`RetryBackToSourceLimit`).
    pub retry_back_to_source_limit: u32,
    /// Failed schedulings after which scheduling fails (`RetryLimit`).
    pub retry_limit: u32,
    /// Peers of one task that may go back to source (`BackToSourceCount`; Dragonfly allows one more,
    /// `count <= limit`, which shoal reproduces).
    pub back_to_source_count: u32,
    /// Children one normal host may serve at once, across tasks (DAG out-edges; `ConcurrentUploadLimit`).
    pub peer_upload_slots: u32,
    /// Children one seed peer (an origin) may serve at once.
    pub seed_upload_slots: u32,
    /// Pieces a client downloads at once (`download.concurrent_piece_count`).
    pub concurrent_pieces: usize,
    /// How often a client reports progress and load to the scheduler, and learns its parents' load
    /// (Dragonfly refreshes host info every 500 ms).
    pub report_interval_ms: u64,
    /// A parent's latest piece cost above this multiple of its earlier mean makes it a bad node
    /// (fewer than `bad_node_sigma_samples` samples).
    pub bad_node_cost_multiplier: f64,
    /// From this many samples on, the rule is mean + 3σ instead.
    pub bad_node_sigma_samples: u32,
    /// Transmit capacity assumed for seed peers (origins), bytes/s: Dragonfly's 10 Gbit/s default for a
    /// host without network information.
    pub seed_max_tx_bytes_per_s: u64,
}

impl Default for DragonflyConfig {
    fn default() -> Self {
        DragonflyConfig {
            filter_parent_limit: 15,
            candidate_parent_limit: 4,
            evaluator: Evaluator::Base,
            retry_interval_ms: 500,
            retry_back_to_source_limit: 4,
            retry_limit: 5,
            back_to_source_count: 200,
            peer_upload_slots: 200,
            seed_upload_slots: 2000,
            concurrent_pieces: 8,
            report_interval_ms: 500,
            bad_node_cost_multiplier: 20.0,
            bad_node_sigma_samples: 30,
            seed_max_tx_bytes_per_s: DEFAULT_MAX_TX_BYTES_PER_S,
        }
    }
}

impl DragonflyConfig {
    /// The first field whose value cannot work, with why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let positive = [
            ("filter_parent_limit", self.filter_parent_limit as u64),
            ("candidate_parent_limit", self.candidate_parent_limit as u64),
            ("concurrent_pieces", self.concurrent_pieces as u64),
            ("retry_interval_ms", self.retry_interval_ms),
            ("report_interval_ms", self.report_interval_ms),
            ("peer_upload_slots", u64::from(self.peer_upload_slots)),
            ("seed_upload_slots", u64::from(self.seed_upload_slots)),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err((field, "must be at least 1"));
            }
        }
        if self.bad_node_cost_multiplier.is_nan() || self.bad_node_cost_multiplier <= 1.0 {
            return Err(("bad_node_cost_multiplier", "must be above 1"));
        }
        Ok(())
    }

    /// Adapts an agent's Kraken scheduler to Dragonfly: a host holds up to `peer_upload_slots`
    /// children plus its parents and the origins (Kraken's 10 connections per torrent would refuse
    /// them), and no endgame (Dragonfly has none).
    pub fn agent_scheduler(&self, mut s: SchedulerConfig) -> SchedulerConfig {
        let conns = self.peer_upload_slots as usize + self.candidate_parent_limit + 16;
        s.conn_state.max_open_conn = s.conn_state.max_open_conn.max(conns);
        s.dispatch.disable_endgame = true;
        s
    }

    /// Adapts an origin's scheduler: a seed peer holds up to `seed_upload_slots` children, plus the
    /// peers back to source.
    pub fn origin_scheduler(&self, mut s: SchedulerConfig) -> SchedulerConfig {
        let conns = self.seed_upload_slots as usize + self.back_to_source_count as usize + 1;
        s.conn_state.max_open_conn = s.conn_state.max_open_conn.max(conns);
        s
    }
}

/// What a host's scheduler uses to place it (Dragonfly's `idc` and `location` host strings). Empty
/// strings match nothing, as in Dragonfly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLocation {
    /// The host's IDC (data centre) name; equal non-empty names score the IDC affinity 1.
    pub idc: String,
    /// Up to five `|`-separated elements, most general first, e.g. `"zone0|pod1|rack12"`.
    pub location: String,
}

/// shoal extension of the announce request: a Dragonfly peer's registration and progress report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DragonflyReport {
    /// Pieces the peer has.
    pub finished_pieces: u32,
    /// Pieces of the blob in all.
    pub total_pieces: u32,
    /// The blob's length in bytes.
    pub content_bytes: u64,
    /// The peer needs (new) parents: first registration, or every parent lost.
    pub reschedule: bool,
    /// Parents that failed this peer (closed, refused); never handed out to it again.
    pub blocklist: Vec<PeerId>,
    /// Bytes per second the host handed to its uploads over the last report interval.
    pub tx_bytes_per_s: u64,
    /// The host's transmit capacity, bytes per second.
    pub max_tx_bytes_per_s: u64,
    /// Milliseconds each piece took from request to arrival, since the last report.
    pub piece_costs_ms: Vec<u32>,
}

/// What the scheduler decided for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// New parents (`NormalTaskResponse`): the response's `peers`.
    Parents,
    /// Nothing changed; the weights of the current parents are fresh.
    Keep,
    /// No parent found; report again after `retry_interval_ms`.
    Retry,
    /// Download the rest from the source (`NeedBackToSourceResponse`): the response's `peers` are
    /// the origins.
    BackToSource,
    /// Scheduling failed after `retry_limit` attempts.
    Failed,
}

/// shoal extension of the announce response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DragonflyAnswer {
    /// What the scheduler decided.
    pub decision: Decision,
    /// Idle upload weight `max(maxTx − tx, maxTx / 10)` of each current parent, bytes/s.
    pub weights: Vec<(PeerId, u64)>,
}
