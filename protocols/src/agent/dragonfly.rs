//! The agent as a Dragonfly client (reference/peers.md §1.3): each torrent registers with the
//! scheduler and reports progress and load every `report_interval_ms` (every `retry_interval_ms`
//! while it has no parent); it dials the parents the scheduler assigns, or the origins when sent
//! back to source, and asks to be rescheduled when every parent is gone. Piece and parent choice
//! live in the dispatcher's [`ClientPicker`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::{Agent, AgentConfig};
use crate::announce::AnnounceResponse;
use crate::policy::dragonfly::client::ClientPicker;
use crate::policy::dragonfly::{DEFAULT_MAX_TX_BYTES_PER_S, Decision, DragonflyConfig, DragonflyReport};
use crate::time::{Instant, ms};
use crate::types::{InfoHash, PeerId, PeerInfo};

#[derive(Debug, Default)]
struct Torrent {
    parents: Vec<PeerInfo>,
    /// Parents that failed this peer, sent with every reschedule.
    blocklist: BTreeSet<PeerId>,
    back_to_source: bool,
    /// An announce is in flight; the next report waits for its answer.
    in_flight: bool,
    next_at: Option<Instant>,
}

/// The Dragonfly client state of an agent.
#[derive(Debug)]
pub(crate) struct DfAgent {
    config: DragonflyConfig,
    torrents: BTreeMap<InfoHash, Torrent>,
    max_tx_bytes_per_s: u64,
    /// Transmit rate over the last measurement window.
    tx_bytes_per_s: u64,
    tx_since: Instant,
    served_at_since: u64,
}

impl Agent {
    /// An agent running the Dragonfly client. Its scheduler configuration is adapted with
    /// [`DragonflyConfig::agent_scheduler`]; its transmit capacity is the bandwidth limiter's egress
    /// rate when enabled, else Dragonfly's 10 Gbit/s default.
    pub fn with_dragonfly(
        now: Instant,
        mut config: AgentConfig,
        addr: SocketAddr,
        seed: u64,
        dragonfly: DragonflyConfig,
    ) -> Agent {
        config.scheduler = dragonfly.agent_scheduler(config.scheduler);
        let bw = &config.scheduler.conn.bandwidth;
        let max_tx_bytes_per_s =
            if bw.enable { bw.egress_bits_per_s / 8 } else { DEFAULT_MAX_TX_BYTES_PER_S };
        let mut a = Agent::new(now, config, addr, seed);
        a.dragonfly = Some(DfAgent {
            config: dragonfly,
            torrents: BTreeMap::new(),
            max_tx_bytes_per_s,
            tx_bytes_per_s: 0,
            tx_since: now,
            served_at_since: 0,
        });
        a
    }

    /// Whether this agent runs the Dragonfly client.
    pub fn is_dragonfly(&self) -> bool {
        self.dragonfly.is_some()
    }

    /// The parents currently assigned for torrent `h` (Dragonfly only).
    pub fn dragonfly_parents(&self, h: &InfoHash) -> Vec<PeerId> {
        let Some(df) = &self.dragonfly else { return Vec::new() };
        df.torrents.get(h).map(|t| t.parents.iter().map(|p| p.peer_id).collect()).unwrap_or_default()
    }

    /// Whether torrent `h` was sent back to source (Dragonfly only).
    pub fn dragonfly_back_to_source(&self, h: &InfoHash) -> bool {
        self.dragonfly.as_ref().and_then(|df| df.torrents.get(h)).is_some_and(|t| t.back_to_source)
    }

    /// A torrent joins the client: the dispatcher gets its picker, and it registers at once.
    pub(super) fn df_start(&mut self, now: Instant, h: InfoHash) {
        let Some(df) = &mut self.dragonfly else { return };
        let pieces = df.config.concurrent_pieces;
        df.torrents.entry(h).or_default();
        if let Some(t) = self.sched.torrents.get_mut(&h)
            && t.dispatcher.dragonfly().is_none()
        {
            t.dispatcher.set_dragonfly(ClientPicker::new(pieces));
        }
        self.df_report(now, h);
    }

    /// Sends torrent `h`'s report now, unless one is in flight.
    pub(super) fn df_report(&mut self, now: Instant, h: InfoHash) {
        let Some(df) = &mut self.dragonfly else { return };
        let t = df.torrents.entry(h).or_default();
        if t.in_flight {
            return;
        }
        t.in_flight = true;
        t.next_at = None;
        self.announce(now, h, false);
    }

    /// The report carried by torrent `h`'s announce. Called by `announce` once per request.
    pub(super) fn df_build_report(&mut self, now: Instant, h: InfoHash) -> Option<DragonflyReport> {
        let df = self.dragonfly.as_mut()?;
        // The host's transmit rate, measured over windows of at least one report interval.
        let window = ms(df.config.report_interval_ms.max(1));
        let elapsed = now - df.tx_since;
        if elapsed >= window {
            let bytes = self.sched.served_bytes - df.served_at_since;
            df.tx_bytes_per_s = (bytes as f64 / elapsed.as_secs_f64()) as u64;
            df.tx_since = now;
            df.served_at_since = self.sched.served_bytes;
        }
        let tor = self.sched.torrents.get_mut(&h)?;
        let d = &mut tor.dispatcher;
        let finished_pieces = d.bitfield().count_ones();
        let total_pieces = d.bitfield().len();
        let complete = d.is_complete();
        let content_bytes = d.metainfo().length();
        let piece_costs_ms = d.dragonfly_mut().map(|p| std::mem::take(&mut p.costs_ms)).unwrap_or_default();
        let t = df.torrents.entry(h).or_default();
        let alive =
            t.parents.iter().any(|p| d.has_peer(&p.peer_id) || self.sched.state.is_pending(&h, &p.peer_id));
        let mut reschedule = false;
        if !complete && !alive {
            // Every parent (or origin, back to source) is gone: ask for new ones.
            for p in t.parents.drain(..) {
                if !p.origin || !t.back_to_source {
                    t.blocklist.insert(p.peer_id);
                }
            }
            t.back_to_source = false;
            reschedule = true;
        }
        Some(DragonflyReport {
            finished_pieces,
            total_pieces,
            content_bytes,
            reschedule,
            blocklist: t.blocklist.iter().copied().collect(),
            tx_bytes_per_s: df.tx_bytes_per_s,
            max_tx_bytes_per_s: df.max_tx_bytes_per_s,
            piece_costs_ms,
        })
    }

    /// The scheduler's answer to torrent `h`'s report (or `None`: the announce failed).
    pub(super) fn df_answer(&mut self, now: Instant, h: InfoHash, resp: Option<AnnounceResponse>) {
        let Some(df) = &mut self.dragonfly else { return };
        let (report, retry) = (ms(df.config.report_interval_ms), ms(df.config.retry_interval_ms));
        let Some(t) = df.torrents.get_mut(&h) else { return };
        t.in_flight = false;
        let Some(resp) = resp else {
            t.next_at = Some(now + retry);
            return;
        };
        let Some(answer) = resp.dragonfly else {
            t.next_at = Some(now + retry);
            return;
        };
        let mut dial = Vec::new();
        match answer.decision {
            Decision::Parents | Decision::BackToSource => {
                t.back_to_source = answer.decision == Decision::BackToSource;
                t.parents = resp.peers.clone();
                dial = resp.peers;
            }
            Decision::Keep => {}
            Decision::Retry => {}
            Decision::Failed => {
                // Start over: Dragonfly's client would fail the download here (documented).
                t.parents.clear();
                t.blocklist.clear();
            }
        }
        let scheduled = !t.parents.is_empty();
        t.next_at = Some(now + if scheduled { report } else { retry });
        let ids: Vec<PeerId> = t.parents.iter().map(|p| p.peer_id).collect();
        if let Some(tor) = self.sched.torrents.get_mut(&h)
            && let Some(p) = tor.dispatcher.dragonfly_mut()
        {
            if !dial.is_empty() {
                p.set_parents(ids);
            }
            p.set_weights(&answer.weights);
        }
        for peer in &dial {
            if peer.peer_id == self.sched.me.peer_id
                || self.sched.state.is_blacklisted(now, &h, &peer.peer_id)
            {
                continue;
            }
            // Already connected (or dialling) is fine; a full table is not expected with the
            // adapted limits.
            let _ = self.sched.dial(now, h, peer);
        }
        self.sched.kick(now, h);
    }

    /// The next report due.
    pub(super) fn df_timeout(&self) -> Instant {
        let Some(df) = &self.dragonfly else { return Instant::FAR_FUTURE };
        df.torrents.values().filter_map(|t| t.next_at).min().unwrap_or(Instant::FAR_FUTURE)
    }

    /// Reports that are due; torrents that are gone leave the client.
    pub(super) fn df_handle_timeout(&mut self, now: Instant) {
        let Some(df) = &mut self.dragonfly else { return };
        let torrents = &self.sched.torrents;
        df.torrents.retain(|h, _| torrents.contains_key(h));
        let due: Vec<InfoHash> = df
            .torrents
            .iter()
            .filter(|(_, t)| t.next_at.is_some_and(|at| at <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            // A seeder dropped by the seeder TTI stops reporting until a handshake revives it (it then
            // reports again, as a completion).
            if self.sched.torrents.get(&h).is_some_and(|t| t.dormant) {
                if let Some(t) = self.dragonfly.as_mut().and_then(|df| df.torrents.get_mut(&h)) {
                    t.next_at = None;
                }
                continue;
            }
            self.df_report(now, h);
        }
    }
}
