//! The Dragonfly scheduler (reference/peers.md §1.2): a DAG of peers per task, parent→child edges,
//! upload slots counted per host across tasks, the filters, the evaluators, and the retry and
//! back-to-source rules of `ScheduleCandidateParents`.
//!
//! One call per announce ([`DragonflyScheduler::announce`]). Dragonfly's scheduler loops and sleeps
//! `RetryInterval` between attempts; shoal's has no timers, so each attempt is one report: a peer
//! without parents reports again after `retry_interval_ms` and the scheduler counts the attempts.
//!
//! Invariants (checked by the property test): no edge closes a cycle; a host's out-edges across
//! tasks never exceed its upload slots; a peer never parents itself or a peer on its own host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::{Decision, DragonflyAnswer, DragonflyConfig, DragonflyReport, Evaluator, HostLocation};
use crate::announce::{AnnounceRequest, AnnounceResponse};
use crate::types::{InfoHash, PeerId, PeerInfo};

/// A peer's state in a task (Dragonfly's peer FSM, reduced to what the filters read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Registered, not yet scheduled (`ReceivedNormal`): a bad node, never a parent.
    Registered,
    /// Has parents (`Running`).
    Running,
    /// Downloading from the source (`BackToSource`).
    BackToSource,
    /// Has every piece (or is a seed peer): a parent, with no parents of its own.
    Succeeded,
}

/// Piece costs of a peer, for the bad-node rule.
#[derive(Clone, Debug, Default)]
struct Costs {
    /// Samples before the latest.
    n: u32,
    sum: f64,
    sum_sq: f64,
    last: Option<f64>,
}

impl Costs {
    fn push(&mut self, c: f64) {
        if let Some(prev) = self.last.replace(c) {
            self.n += 1;
            self.sum += prev;
            self.sum_sq += prev * prev;
        }
    }
}

#[derive(Clone, Debug)]
struct Vertex {
    info: PeerInfo,
    seed: bool,
    state: PeerState,
    finished: u32,
    parents: BTreeSet<PeerId>,
    children: BTreeSet<PeerId>,
    /// Failed scheduling attempts since the last success.
    attempts: u32,
    costs: Costs,
}

#[derive(Clone, Debug)]
struct Task {
    total: u32,
    vertices: BTreeMap<PeerId, Vertex>,
    /// Peer ids in insertion order, for uniform sampling without hashing.
    order: Vec<PeerId>,
    back_to_source: BTreeSet<PeerId>,
}

/// A host's load, across tasks.
#[derive(Clone, Debug)]
struct Host {
    upload_slots: u32,
    /// DAG out-edges across tasks (`ConcurrentUploadCount`).
    uploads: u32,
    tx_bytes_per_s: u64,
    max_tx_bytes_per_s: u64,
    /// Bytes of content promised to current children (`UploadContentLength`).
    upload_content_bytes: u64,
}

/// The scheduler of one tracker.
#[derive(Debug)]
pub struct DragonflyScheduler {
    config: DragonflyConfig,
    tasks: BTreeMap<InfoHash, Task>,
    hosts: BTreeMap<PeerId, Host>,
    locations: BTreeMap<SocketAddr, HostLocation>,
    /// Each task's content length in bytes, from its first report (the load-aware evaluator's
    /// upload duration).
    content_length: BTreeMap<InfoHash, u64>,
}

impl DragonflyScheduler {
    /// A scheduler with no task or host yet.
    pub fn new(config: DragonflyConfig) -> Self {
        DragonflyScheduler {
            config,
            tasks: BTreeMap::new(),
            hosts: BTreeMap::new(),
            locations: BTreeMap::new(),
            content_length: BTreeMap::new(),
        }
    }

    /// The configuration the scheduler was built with.
    pub fn config(&self) -> &DragonflyConfig {
        &self.config
    }

    /// Where a host sits (its IDC and location strings), for the affinity scores.
    pub fn set_location(&mut self, addr: SocketAddr, location: HostLocation) -> &mut Self {
        self.locations.insert(addr, location);
        self
    }

    /// The current parents of `peer` in task `h` (for tests and inspection).
    pub fn parents(&self, h: &InfoHash, peer: &PeerId) -> Vec<PeerId> {
        self.vertex(h, peer).map(|v| v.parents.iter().copied().collect()).unwrap_or_default()
    }

    /// The state of `peer` in task `h`, if it registered.
    pub fn state(&self, h: &InfoHash, peer: &PeerId) -> Option<PeerState> {
        self.vertex(h, peer).map(|v| v.state)
    }

    /// DAG out-edges of a host across tasks.
    pub fn uploads(&self, host: &PeerId) -> u32 {
        self.hosts.get(host).map_or(0, |h| h.uploads)
    }

    /// Children a host may serve at once (`peer_upload_slots` or `seed_upload_slots`); 0 if unknown.
    pub fn upload_slots(&self, host: &PeerId) -> u32 {
        self.hosts.get(host).map_or(0, |h| h.upload_slots)
    }

    /// Every edge (parent, child) of task `h`.
    pub fn edges(&self, h: &InfoHash) -> Vec<(PeerId, PeerId)> {
        let Some(t) = self.tasks.get(h) else { return Vec::new() };
        t.vertices.iter().flat_map(|(c, v)| v.parents.iter().map(move |p| (*p, *c))).collect()
    }

    /// Peers of task `h` sent back to source so far.
    pub fn back_to_source_peers(&self, h: &InfoHash) -> usize {
        self.tasks.get(h).map_or(0, |t| t.back_to_source.len())
    }

    fn vertex(&self, h: &InfoHash, peer: &PeerId) -> Option<&Vertex> {
        self.tasks.get(h)?.vertices.get(peer)
    }

    /// One announce of a Dragonfly peer. `owners` are the origins owning the blob: the task's seed
    /// peers, and the source. A request without a report registers the peer as if it asked to be
    /// scheduled.
    pub fn announce(
        &mut self,
        rng: &mut ChaCha8Rng,
        request: &AnnounceRequest,
        owners: &[PeerInfo],
        interval_ns: u64,
    ) -> AnnounceResponse {
        let h = request.info_hash;
        let me = request.peer.peer_id;
        let report =
            request.dragonfly.clone().unwrap_or(DragonflyReport { reschedule: true, ..Default::default() });
        let total = report.total_pieces.max(1);
        self.ensure_task(h, total, owners);
        self.content_length.entry(h).or_insert(report.content_bytes);
        self.update_host(me, &report);
        let task = self.tasks.get_mut(&h).expect("ensured above");
        if !task.vertices.contains_key(&me) {
            task.order.push(me);
            task.vertices.insert(
                me,
                Vertex {
                    info: PeerInfo { origin: false, ..request.peer.clone() },
                    seed: false,
                    state: PeerState::Registered,
                    finished: 0,
                    parents: BTreeSet::new(),
                    children: BTreeSet::new(),
                    attempts: 0,
                    costs: Costs::default(),
                },
            );
        }
        let v = task.vertices.get_mut(&me).expect("inserted above");
        v.finished = report.finished_pieces.min(task.total);
        for c in &report.piece_costs_ms {
            v.costs.push(f64::from(*c));
        }
        let answer = |decision, peers: Vec<PeerInfo>, weights| AnnounceResponse {
            peers,
            interval_ns,
            dragonfly: Some(DragonflyAnswer { decision, weights }),
        };

        if request.peer.complete || v.finished >= task.total {
            // A finished peer frees its parents' upload slots and serves as a succeeded parent.
            v.state = PeerState::Succeeded;
            self.delete_in_edges(&h, &me);
            return answer(Decision::Keep, Vec::new(), Vec::new());
        }
        let state = v.state;
        if state == PeerState::BackToSource && report.reschedule {
            // It lost the source's connections: the source again (it stays counted once).
            return answer(Decision::BackToSource, owners.to_vec(), Vec::new());
        }
        if state == PeerState::BackToSource || (!report.reschedule && state == PeerState::Running) {
            let weights = self.weights(&h, &me);
            return answer(Decision::Keep, Vec::new(), weights);
        }

        // ScheduleCandidateParents, one attempt per report.
        let n = v.attempts;
        let can_back_to_source = task.back_to_source.len() as u32 <= self.config.back_to_source_count;
        if can_back_to_source && n >= self.config.retry_back_to_source_limit {
            let v = task.vertices.get_mut(&me).expect("present");
            v.state = PeerState::BackToSource;
            v.attempts = 0;
            task.back_to_source.insert(me);
            self.delete_in_edges(&h, &me);
            return answer(Decision::BackToSource, owners.to_vec(), Vec::new());
        }
        if n >= self.config.retry_limit {
            task.vertices.get_mut(&me).expect("present").attempts = 0;
            self.delete_in_edges(&h, &me);
            return answer(Decision::Failed, Vec::new(), Vec::new());
        }
        self.delete_in_edges(&h, &me);
        let blocklist: BTreeSet<PeerId> = report.blocklist.iter().copied().collect();
        let parents = self.find_candidate_parents(rng, &h, &me, &blocklist);
        let task = self.tasks.get_mut(&h).expect("present");
        let v = task.vertices.get_mut(&me).expect("present");
        if parents.is_empty() {
            v.attempts += 1;
            return answer(Decision::Retry, Vec::new(), Vec::new());
        }
        v.attempts = 0;
        v.state = PeerState::Running;
        for p in &parents {
            self.add_edge(&h, *p, me);
        }
        let infos = parents.iter().filter_map(|p| self.vertex(&h, p).map(|v| v.info.clone())).collect();
        let weights = self.weights(&h, &me);
        answer(Decision::Parents, infos, weights)
    }

    /// Creates a task on its first registration; the owning origins join as seed peers (Dragonfly
    /// triggers its seed peers for a cold task).
    fn ensure_task(&mut self, h: InfoHash, total: u32, owners: &[PeerInfo]) {
        if self.tasks.contains_key(&h) {
            return;
        }
        let mut task =
            Task { total, vertices: BTreeMap::new(), order: Vec::new(), back_to_source: BTreeSet::new() };
        for o in owners {
            let id = o.peer_id;
            task.order.push(id);
            task.vertices.insert(
                id,
                Vertex {
                    info: PeerInfo { origin: true, complete: true, ..o.clone() },
                    seed: true,
                    state: PeerState::Succeeded,
                    finished: total,
                    parents: BTreeSet::new(),
                    children: BTreeSet::new(),
                    attempts: 0,
                    costs: Costs::default(),
                },
            );
            let slots = self.config.seed_upload_slots;
            let max_tx = self.config.seed_max_tx_bytes_per_s;
            self.hosts.entry(id).or_insert(Host {
                upload_slots: slots,
                uploads: 0,
                tx_bytes_per_s: 0,
                max_tx_bytes_per_s: max_tx,
                upload_content_bytes: 0,
            });
        }
        self.tasks.insert(h, task);
    }

    fn update_host(&mut self, id: PeerId, report: &DragonflyReport) {
        let slots = self.config.peer_upload_slots;
        let host = self.hosts.entry(id).or_insert(Host {
            upload_slots: slots,
            uploads: 0,
            tx_bytes_per_s: 0,
            max_tx_bytes_per_s: 0,
            upload_content_bytes: 0,
        });
        host.tx_bytes_per_s = report.tx_bytes_per_s;
        host.max_tx_bytes_per_s = report.max_tx_bytes_per_s;
    }

    fn add_edge(&mut self, h: &InfoHash, parent: PeerId, child: PeerId) {
        let content = self.content_length.get(h).copied().unwrap_or(0);
        let Some(task) = self.tasks.get_mut(h) else { return };
        if let Some(v) = task.vertices.get_mut(&child) {
            v.parents.insert(parent);
        }
        if let Some(v) = task.vertices.get_mut(&parent) {
            v.children.insert(child);
        }
        if let Some(host) = self.hosts.get_mut(&parent) {
            host.uploads += 1;
            host.upload_content_bytes += content;
        }
    }

    /// `DeletePeerInEdges`: the peer leaves its parents, freeing their upload slots.
    fn delete_in_edges(&mut self, h: &InfoHash, child: &PeerId) {
        let content = self.content_length.get(h).copied().unwrap_or(0);
        let Some(task) = self.tasks.get_mut(h) else { return };
        let Some(v) = task.vertices.get_mut(child) else { return };
        let parents = std::mem::take(&mut v.parents);
        for p in parents {
            if let Some(pv) = task.vertices.get_mut(&p) {
                pv.children.remove(child);
            }
            if let Some(host) = self.hosts.get_mut(&p) {
                host.uploads = host.uploads.saturating_sub(1);
                host.upload_content_bytes = host.upload_content_bytes.saturating_sub(content);
            }
        }
    }

    /// `CanAddPeerEdge`: false if `parent` is `child` or a descendant of it.
    fn can_add_edge(task: &Task, parent: &PeerId, child: &PeerId) -> bool {
        if parent == child {
            return false;
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![*child];
        while let Some(x) = stack.pop() {
            let Some(v) = task.vertices.get(&x) else { continue };
            for c in &v.children {
                if c == parent {
                    return false;
                }
                if seen.insert(*c) {
                    stack.push(*c);
                }
            }
        }
        true
    }

    /// `IsBadNode`: by state, or a latest piece cost far above the earlier ones.
    fn is_bad(&self, v: &Vertex) -> bool {
        if v.state == PeerState::Registered {
            return true;
        }
        let c = &v.costs;
        let Some(last) = c.last else { return false };
        // At least two samples: the latest and one before it.
        if c.n == 0 {
            return false;
        }
        let mean = c.sum / f64::from(c.n);
        if c.n + 1 < self.config.bad_node_sigma_samples {
            last > mean * self.config.bad_node_cost_multiplier
        } else {
            let var = (c.sum_sq / f64::from(c.n) - mean * mean).max(0.0);
            last > mean + 3.0 * var.sqrt()
        }
    }

    /// `FindCandidateParents`: a random sample, the filters, the evaluator, the best few.
    fn find_candidate_parents(
        &self,
        rng: &mut ChaCha8Rng,
        h: &InfoHash,
        me: &PeerId,
        blocklist: &BTreeSet<PeerId>,
    ) -> Vec<PeerId> {
        let Some(task) = self.tasks.get(h) else { return Vec::new() };
        let sample: Vec<PeerId> =
            task.order.choose_multiple(rng, self.config.filter_parent_limit).copied().collect();
        let child = &task.vertices[me];
        let mut scored: Vec<(f64, PeerId)> = Vec::new();
        for id in sample {
            let Some(v) = task.vertices.get(&id) else { continue };
            // Blocklist; the same host, which is the peer itself (one agent per host, ids from addresses).
            if blocklist.contains(&id) || id == *me {
                continue;
            }
            // A normal peer must have a parent, be back to source, or be finished.
            if !v.seed
                && v.parents.is_empty()
                && v.state != PeerState::BackToSource
                && v.state != PeerState::Succeeded
            {
                continue;
            }
            if self.is_bad(v) {
                continue;
            }
            let Some(host) = self.hosts.get(&id) else { continue };
            if host.uploads >= host.upload_slots {
                continue;
            }
            if !Self::can_add_edge(task, &id, me) {
                continue;
            }
            scored.push((self.score(task, v, host, child), id));
        }
        // Highest score first; ties keep the sample's random order.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(self.config.candidate_parent_limit).map(|(_, id)| id).collect()
    }

    fn score(&self, task: &Task, parent: &Vertex, host: &Host, child: &Vertex) -> f64 {
        let here = self.locations.get(&parent.info.addr);
        let there = self.locations.get(&child.info.addr);
        let idc = match (here, there) {
            (Some(a), Some(b)) if !a.idc.is_empty() && a.idc.eq_ignore_ascii_case(&b.idc) => 1.0,
            _ => 0.0,
        };
        let location = match (here, there) {
            (Some(a), Some(b)) => location_affinity(&a.location, &b.location),
            _ => 0.0,
        };
        // Seed peers score 1 when usable (they always are here), normal peers 0.5.
        let host_type = if parent.seed { 1.0 } else { 0.5 };
        match self.config.evaluator {
            Evaluator::Base => {
                let finished = f64::from(parent.finished) / f64::from(task.total.max(1));
                let upload_success = 1.0;
                let free = f64::from(host.upload_slots.saturating_sub(host.uploads))
                    / f64::from(host.upload_slots.max(1));
                0.2 * finished
                    + 0.2 * upload_success
                    + 0.15 * free
                    + 0.15 * host_type
                    + 0.15 * idc
                    + 0.15 * location
            }
            Evaluator::LoadAware => {
                let max = host.max_tx_bytes_per_s as f64;
                let peak = if max > 0.0 { (1.0 - host.tx_bytes_per_s as f64 / max).max(0.0) } else { 0.0 };
                let duration = if host.upload_content_bytes == 0 {
                    1.0
                } else if max > 0.0 {
                    (1.0 - host.upload_content_bytes as f64 / max / 60.0).max(0.0)
                } else {
                    0.0
                };
                // Pieces of 16 MiB the host could upload at once at full rate.
                let needed = (host.max_tx_bytes_per_s / (16 << 20)) as f64;
                let concurrent = f64::from(host.uploads) * self.config.concurrent_pieces as f64;
                let concurrency = if needed <= 1.0 {
                    0.0
                } else if concurrent <= needed {
                    1.0
                } else {
                    needed / concurrent
                };
                let load = 0.5 * peak + 0.3 * duration + 0.2 * concurrency;
                0.6 * load + 0.2 * idc + 0.1 * location + 0.1 * host_type
            }
        }
    }

    /// Idle upload weight of each current parent of `child`: `max(maxTx − tx, maxTx / 10)`.
    fn weights(&self, h: &InfoHash, child: &PeerId) -> Vec<(PeerId, u64)> {
        let Some(v) = self.vertex(h, child) else { return Vec::new() };
        v.parents.iter().filter_map(|p| self.hosts.get(p).map(|host| (*p, idle_weight_of(host)))).collect()
    }

    /// A peer left task `h` (its download failed or it is gone): its edges go.
    pub fn leave(&mut self, h: &InfoHash, peer: &PeerId) {
        self.delete_in_edges(h, peer);
        let content = self.content_length.get(h).copied().unwrap_or(0);
        let Some(task) = self.tasks.get_mut(h) else { return };
        let Some(v) = task.vertices.remove(peer) else { return };
        task.order.retain(|x| x != peer);
        for c in v.children {
            if let Some(cv) = task.vertices.get_mut(&c) {
                cv.parents.remove(peer);
            }
            if let Some(host) = self.hosts.get_mut(peer) {
                host.uploads = host.uploads.saturating_sub(1);
                host.upload_content_bytes = host.upload_content_bytes.saturating_sub(content);
            }
        }
    }

    /// A random peer id of task `h` (tests).
    pub fn random_peer(&self, rng: &mut ChaCha8Rng, h: &InfoHash) -> Option<PeerId> {
        let t = self.tasks.get(h)?;
        if t.order.is_empty() {
            return None;
        }
        Some(t.order[rng.random_range(0..t.order.len())])
    }

    /// True once a peer has announced task `h` (tasks are never dropped).
    pub fn has_task(&self, h: &InfoHash) -> bool {
        self.tasks.contains_key(h)
    }
}

/// `max(maxTx − tx, maxTx / 10)`; a host with no known capacity gets Dragonfly's 10 Gbit/s.
pub fn idle_weight(host_max_tx: u64, tx: u64) -> u64 {
    let max = if host_max_tx == 0 { super::DEFAULT_MAX_TX_BYTES_PER_S } else { host_max_tx };
    max.saturating_sub(tx).max(max / 10)
}

fn idle_weight_of(host: &Host) -> u64 {
    idle_weight(host.max_tx_bytes_per_s, host.tx_bytes_per_s)
}

/// Dragonfly's location affinity: 1 for equal strings, else the matching leading `|` elements / 5;
/// 0 if either is empty.
pub fn location_affinity(a: &str, b: &str) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a.eq_ignore_ascii_case(b) {
        return 1.0;
    }
    let matching =
        a.split('|').zip(b.split('|')).take(5).take_while(|(x, y)| x.eq_ignore_ascii_case(y)).count();
    matching as f64 / 5.0
}
