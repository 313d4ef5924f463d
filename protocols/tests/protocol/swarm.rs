//! Whole swarms: every agent ends with every piece.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_protocols::config::{OriginConfig, SchedulerConfig, TrackerConfig};
use shoal_protocols::origin::BlobContent;
use shoal_protocols::{Bitfield, Message};

use crate::harness::*;

fn origin_with(swarm: &mut Swarm, digest: shoal_protocols::Digest, size: u64, piece_length: u64) {
    let blobs = BTreeMap::from([(digest, BlobContent::Synthetic { size })]);
    let cfg = OriginConfig {
        piece_lengths: shoal_protocols::metainfo::PieceLengths::fixed(piece_length),
        ..Default::default()
    };
    swarm.add_origin(cfg, blobs, 99);
}

#[test]
fn one_origin_seeds_one_agent() {
    let (digest, mi) = blob("one", 10 * MIB + 5, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    origin_with(&mut swarm, digest, mi.length(), MIB);
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 1);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 1);
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    swarm.run_until(Duration::from_secs(60), |s| !s.completed().is_empty() || !s.failed().is_empty());
    assert_eq!(swarm.completed(), vec![a], "failures: {:?}", swarm.failed());
    assert!(swarm.agents[a].bitfield(&digest).unwrap().is_full());
    assert_eq!(swarm.agents[a].dispatcher(&digest).unwrap().stats.pieces, 11);
    // 11 MiB at 100 MiB/s plus latencies: well under a second, and not faster than the transfer.
    let t = swarm.now.as_secs_f64();
    assert!((0.1..1.0).contains(&t), "took {t}s");
}

/// Runs `n` agents pulling one blob from one origin with the real tracker; returns the swarm.
fn pull(n: usize, policy_rarest: bool, keep_log: bool) -> (Swarm, shoal_protocols::Digest, u32) {
    let (digest, mi) = blob("swarm", 32 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    swarm.keep_log = keep_log;
    origin_with(&mut swarm, digest, mi.length(), MIB);
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 7);
    let mut cfg = SchedulerConfig::agent_base_yaml();
    if !policy_rarest {
        cfg.dispatch.piece_request_policy = shoal_protocols::config::PiecePolicy::Random;
    }
    for i in 0..n {
        let a = swarm.add_agent(cfg.clone(), 100 + i as u64);
        swarm.agents[a].handle_download(swarm.now, "ns", digest);
    }
    let ok = swarm.run_until(Duration::from_secs(600), |s| s.completed().len() + s.failed().len() == n);
    assert!(ok, "swarm stalled at {}: {} done", swarm.now, swarm.completed().len());
    (swarm, digest, mi.num_pieces())
}

#[test]
fn one_origin_and_twenty_agents_all_finish() {
    for rarest in [true, false] {
        let (swarm, digest, n) = pull(20, rarest, false);
        assert!(swarm.failed().is_empty(), "{:?}", swarm.failed());
        assert_eq!(swarm.completed().into_iter().collect::<BTreeSet<_>>().len(), 20);
        for a in &swarm.agents {
            assert_eq!(a.bitfield(&digest).unwrap().count_ones(), n);
        }
        // Peers served each other: the origin sent far less than 20 copies.
        let from_origin: u32 =
            swarm.agents.iter().map(|a| a.dispatcher(&digest).unwrap().stats.pieces_from_origins).sum();
        assert!(from_origin < 20 * n / 2, "origin served {from_origin} of {} pieces", 20 * n);
    }
}

#[test]
fn twenty_agents_with_one_distinct_piece_each_finish_without_origins() {
    let (digest, mi) = blob("distinct", 20 * MIB, MIB);
    let mut swarm = Swarm::new(real_tracker(vec![], TrackerConfig::default(), 3));
    for i in 0..20 {
        let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), i);
        let mut have = Bitfield::new(mi.num_pieces());
        have.set(i as u32);
        swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), have);
    }
    let ok = swarm.run_until(Duration::from_secs(600), |s| s.completed().len() == 20);
    assert!(
        ok,
        "stalled at {} with {} complete; failed {:?}",
        swarm.now,
        swarm.completed().len(),
        swarm.failed()
    );
    assert!(swarm.agents.iter().all(|a| a.has_blob(&digest)));
}

/// Replays the message log, tracking per (requester, responder) outstanding requests and per agent
/// the pieces it has, and checks the pipeline and endgame rules at every request.
#[test]
fn pipeline_limits_hold_and_duplicates_only_in_endgame() {
    let (swarm, _digest, n) = pull(12, true, true);
    let mut outstanding: BTreeMap<(Node, Node), BTreeSet<u32>> = BTreeMap::new();
    let mut have: BTreeMap<Node, BTreeSet<u32>> = BTreeMap::new();
    for (_, from, to, msg) in &swarm.log {
        match msg {
            Message::PieceRequest { index, .. } => {
                let asked_elsewhere =
                    outstanding.iter().any(|((r, s), set)| r == from && s != to && set.contains(index));
                if asked_elsewhere {
                    let remaining = n - have.get(from).map_or(0, |h| h.len() as u32);
                    assert!(remaining <= 3, "duplicate request with {remaining} pieces remaining");
                }
                let set = outstanding.entry((*from, *to)).or_default();
                set.insert(*index);
                let limit = if matches!(to, Node::Origin(_)) { 5 } else { 3 };
                assert!(set.len() <= limit, "{from:?} has {} requests in flight to {to:?}", set.len());
            }
            Message::PiecePayload { index, .. } | Message::Error { index, .. } => {
                if let Some(set) = outstanding.get_mut(&(*to, *from)) {
                    set.remove(index);
                }
                if matches!(msg, Message::PiecePayload { .. }) {
                    have.entry(*to).or_default().insert(*index);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn same_seed_same_run() {
    let a = pull(8, true, true).0;
    let b = pull(8, true, true).0;
    assert_eq!(a.now, b.now);
    assert_eq!(a.log.len(), b.log.len());
    assert!(a.log.iter().zip(&b.log).all(|(x, y)| x == y));
}

/// Lowest index first: the picker an embedding crate might install through the factory hook.
#[derive(Debug)]
struct InOrder(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl shoal_protocols::peer::picker::PiecePicker for InOrder {
    fn select(
        &mut self,
        _rng: &mut rand_chacha::ChaCha8Rng,
        sel: &shoal_protocols::peer::picker::Selection<'_>,
        valid: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<u32> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sel.remote.iter_missing_from(sel.own).filter(|&i| valid(i)).take(sel.quota).collect()
    }
}

#[test]
fn picker_factory_replaces_the_configured_picker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (digest, mi) = blob("factory", 8 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    origin_with(&mut swarm, digest, mi.length(), MIB);
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 1);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 1);
    let (built, selections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (b, s) = (built.clone(), selections.clone());
    swarm.agents[a].set_picker_factory(Arc::new(move |_policy| {
        b.fetch_add(1, Ordering::Relaxed);
        Box::new(InOrder(s.clone()))
    }));
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    swarm.run_until(Duration::from_secs(60), |s| !s.completed().is_empty() || !s.failed().is_empty());
    assert_eq!(swarm.completed(), vec![a], "failures: {:?}", swarm.failed());
    assert_eq!(built.load(Ordering::Relaxed), 1, "one picker for the one torrent");
    assert!(selections.load(Ordering::Relaxed) > 0, "the installed picker chose the pieces");
}
