//! Dragonfly v2: the scheduler's invariants over random histories, its retry and back-to-source
//! rules, and whole swarms of Dragonfly clients.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_protocols::announce::{AnnounceRequest, AnnounceResponse};
use shoal_protocols::config::{OriginConfig, SchedulerConfig};
use shoal_protocols::metainfo::PieceLengths;
use shoal_protocols::origin::BlobContent;
use shoal_protocols::policy::dragonfly::scheduler::{DragonflyScheduler, PeerState};
use shoal_protocols::policy::dragonfly::{Decision, DragonflyConfig, DragonflyReport, Evaluator};
use shoal_protocols::{Digest, InfoHash, Message, PeerId, PeerInfo};

use crate::harness::*;

const PIECES: u32 = 20;

fn peer(i: usize) -> PeerInfo {
    let addr: SocketAddr = SocketAddr::from(([127, 1, 0, i as u8 + 1], 7000));
    PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: false, complete: false }
}

fn origin(i: usize) -> PeerInfo {
    let addr: SocketAddr = SocketAddr::from(([127, 2, 0, i as u8 + 1], 9000));
    PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: true, complete: true }
}

fn task(t: usize) -> (Digest, InfoHash) {
    let (digest, mi) = blob(&format!("task-{t}"), u64::from(PIECES) * MIB, MIB);
    (digest, mi.info_hash())
}

#[allow(clippy::too_many_arguments)] // A test helper mirroring the report's fields.
fn report(
    df: &mut DragonflyScheduler,
    rng: &mut ChaCha8Rng,
    t: usize,
    p: &PeerInfo,
    finished: u32,
    reschedule: bool,
    blocklist: Vec<PeerId>,
    owners: &[PeerInfo],
) -> AnnounceResponse {
    let (digest, info_hash) = task(t);
    let complete = finished >= PIECES;
    let request = AnnounceRequest {
        digest,
        info_hash,
        peer: PeerInfo { complete, ..p.clone() },
        dragonfly: Some(DragonflyReport {
            finished_pieces: finished,
            total_pieces: PIECES,
            content_bytes: u64::from(PIECES) * MIB,
            reschedule,
            blocklist,
            tx_bytes_per_s: 50 * MIB,
            max_tx_bytes_per_s: 100 * MIB,
            piece_costs_ms: vec![100],
        }),
    };
    df.announce(rng, &request, owners, 500_000_000)
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    /// Peer `p` reports on task `t` with `finished` pieces, asking for parents or not.
    Report { t: usize, p: usize, finished: u32, reschedule: bool },
    /// Peer `p` reports having lost parent `q` (blocklisted) and asks for new ones.
    Lost { t: usize, p: usize, q: usize },
    /// Peer `p` leaves task `t`.
    Leave { t: usize, p: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..24usize, 0..=PIECES, any::<bool>())
            .prop_map(|(t, p, finished, reschedule)| Op::Report { t, p, finished, reschedule }),
        2 => (0..2usize, 0..24usize, 0..24usize).prop_map(|(t, p, q)| Op::Lost { t, p, q }),
        1 => (0..2usize, 0..24usize).prop_map(|(t, p)| Op::Leave { t, p }),
    ]
}

/// No edge closes a cycle, nobody parents itself, and no host has more children across tasks than
/// its upload slots — whatever the order of registrations, progress reports, losses and departures.
fn check(df: &DragonflyScheduler, hosts: &[PeerId]) -> Result<(), TestCaseError> {
    let mut out_degree: BTreeMap<PeerId, u32> = BTreeMap::new();
    for t in 0..2 {
        let (_, h) = task(t);
        let edges = df.edges(&h);
        let mut children: BTreeMap<PeerId, Vec<PeerId>> = BTreeMap::new();
        for (p, c) in &edges {
            prop_assert_ne!(p, c, "self edge");
            children.entry(*p).or_default().push(*c);
            *out_degree.entry(*p).or_default() += 1;
        }
        // Acyclic: depth-first search with colours.
        let mut state: BTreeMap<PeerId, u8> = BTreeMap::new();
        fn visit(
            x: PeerId,
            children: &BTreeMap<PeerId, Vec<PeerId>>,
            state: &mut BTreeMap<PeerId, u8>,
        ) -> bool {
            match state.get(&x) {
                Some(1) => return false,
                Some(2) => return true,
                _ => {}
            }
            state.insert(x, 1);
            for c in children.get(&x).into_iter().flatten() {
                if !visit(*c, children, state) {
                    return false;
                }
            }
            state.insert(x, 2);
            true
        }
        for x in children.keys() {
            prop_assert!(visit(*x, &children, &mut state), "cycle in task {}", t);
        }
    }
    for h in hosts {
        let d = out_degree.get(h).copied().unwrap_or(0);
        prop_assert_eq!(df.uploads(h), d, "upload count out of step with the DAG");
        prop_assert!(d <= df.upload_slots(h) || df.upload_slots(h) == 0 && d == 0, "{} > slots", d);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_never_closes_a_cycle_nor_exceeds_upload_slots(
        ops in prop::collection::vec(op(), 1..300),
        seed in any::<u64>(),
        load_aware in any::<bool>(),
    ) {
        let config = DragonflyConfig {
            peer_upload_slots: 2,
            seed_upload_slots: 3,
            candidate_parent_limit: 3,
            filter_parent_limit: 8,
            evaluator: if load_aware { Evaluator::LoadAware } else { Evaluator::Base },
            ..DragonflyConfig::default()
        };
        let mut df = DragonflyScheduler::new(config);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let owners = vec![origin(0), origin(1)];
        let peers: Vec<PeerInfo> = (0..24).map(peer).collect();
        let hosts: Vec<PeerId> = peers.iter().chain(&owners).map(|p| p.peer_id).collect();
        for op in ops {
            match op {
                Op::Report { t, p, finished, reschedule } => {
                    let r = report(&mut df, &mut rng, t, &peers[p], finished, reschedule, vec![], &owners);
                    let answer = r.dragonfly.expect("the scheduler always answers with a decision");
                    if answer.decision == Decision::Parents {
                        prop_assert!(!r.peers.is_empty() && r.peers.len() <= 3);
                        prop_assert!(r.peers.iter().all(|x| x.peer_id != peers[p].peer_id));
                    }
                }
                Op::Lost { t, p, q } => {
                    let lost = peers[q].peer_id;
                    let r = report(&mut df, &mut rng, t, &peers[p], 1, true, vec![lost], &owners);
                    prop_assert!(r.peers.iter().all(|x| x.peer_id != lost), "blocklisted parent handed out");
                }
                Op::Leave { t, p } => df.leave(&task(t).1, &peers[p].peer_id),
            }
            check(&df, &hosts)?;
        }
    }
}

/// With no seed peer and nobody ahead, a peer is told to retry every report, and after
/// `retry_back_to_source_limit` failed schedulings goes back to source; once the task's
/// back-to-source count is used up, the next lone peer fails after `retry_limit` instead.
#[test]
fn back_to_source_after_the_retry_limit() {
    let config = DragonflyConfig { back_to_source_count: 0, ..DragonflyConfig::default() };
    let mut df = DragonflyScheduler::new(config);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (a, b) = (peer(0), peer(1));
    let decisions = |df: &mut DragonflyScheduler, rng: &mut ChaCha8Rng, p: &PeerInfo, n: usize| {
        (0..n)
            .map(|_| report(df, rng, 0, p, 0, true, vec![], &[]).dragonfly.unwrap().decision)
            .collect::<Vec<_>>()
    };
    let got = decisions(&mut df, &mut rng, &a, 5);
    assert_eq!(
        got,
        [Decision::Retry, Decision::Retry, Decision::Retry, Decision::Retry, Decision::BackToSource]
    );
    let (_, h) = task(0);
    assert_eq!(df.state(&h, &a.peer_id), Some(PeerState::BackToSource));
    assert_eq!(df.back_to_source_peers(&h), 1);
    // Having lost the source's connections, it is sent back to source again, not stranded.
    let again = report(&mut df, &mut rng, 0, &a, 3, true, vec![], &[origin(0)]);
    assert_eq!(again.dragonfly.unwrap().decision, Decision::BackToSource);
    assert_eq!(again.peers, vec![origin(0)]);
    assert_eq!(df.back_to_source_peers(&h), 1);
    // A back-to-source peer is a valid parent (it fetches from the source) — but b's first attempt
    // happens to find it only if it is sampled, which with two vertices it always is.
    let got = decisions(&mut df, &mut rng, &b, 1);
    assert_eq!(got, [Decision::Parents]);
    assert_eq!(df.parents(&h, &b.peer_id), vec![a.peer_id]);
    // c blocklists a and b: nothing is left; the count (1 > 0) forbids back-to-source, so after
    // `retry_limit` attempts scheduling fails.
    let c = peer(2);
    let block = vec![a.peer_id, b.peer_id];
    let got: Vec<Decision> = (0..6)
        .map(|_| report(&mut df, &mut rng, 0, &c, 0, true, block.clone(), &[]).dragonfly.unwrap().decision)
        .collect();
    assert_eq!(got[..5], [Decision::Retry; 5]);
    assert_eq!(got[5], Decision::Failed);
}

/// A cold task: the first peer gets the seed peers (origins) as parents.
#[test]
fn seed_peers_first_on_a_cold_task() {
    let mut df = DragonflyScheduler::new(DragonflyConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let owners = [origin(0), origin(1)];
    let r = report(&mut df, &mut rng, 0, &peer(0), 0, true, vec![], &owners);
    assert_eq!(r.dragonfly.as_ref().unwrap().decision, Decision::Parents);
    let got: BTreeSet<PeerId> = r.peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(got, owners.iter().map(|o| o.peer_id).collect());
    assert!(r.peers.iter().all(|p| p.origin));
    // The weights of the parents come with the answer: seeds at Dragonfly's 10 Gbit/s default.
    assert_eq!(r.dragonfly.unwrap().weights.len(), 2);
    // A peer registered but not yet scheduled is no parent; one with parents is.
    let r = report(&mut df, &mut rng, 0, &peer(1), 0, true, vec![], &owners);
    assert!(r.peers.iter().any(|p| p.peer_id == peer(0).peer_id));
}

fn dragonfly_pull(n: usize, df: DragonflyConfig, seed: u64) -> (Swarm, Digest) {
    let (digest, mi) = blob("dragonfly", 24 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    swarm.keep_log = true;
    let blobs = BTreeMap::from([(digest, BlobContent::Synthetic { size: mi.length() })]);
    let cfg = OriginConfig { piece_lengths: PieceLengths::fixed(MIB), ..Default::default() };
    swarm.add_dragonfly_origin(cfg, &df, blobs, 99);
    swarm.tracker = dragonfly_tracker(swarm.origin_infos(), df.clone(), seed);
    // Peers join 40 ms apart, so later ones find earlier ones ahead of them: with every piece at the
    // origin from the start, peers that start together would take every piece from it first.
    for i in 0..n {
        let a =
            swarm.add_dragonfly_agent(SchedulerConfig::agent_base_yaml(), df.clone(), seed + 100 + i as u64);
        swarm.agents[a].handle_download(swarm.now, "ns", digest);
        swarm.run_until(Duration::from_millis(40), |_| false);
    }
    let ok = swarm.run_until(Duration::from_secs(300), |s| s.completed().len() + s.failed().len() == n);
    assert!(ok, "swarm stalled at {}: {} done", swarm.now, swarm.completed().len());
    (swarm, digest)
}

/// A small swarm of Dragonfly clients completes; peers serve each other; no client ever has more
/// than `concurrent_pieces` requests in flight, and it only asks its parents or the origin.
#[test]
fn a_small_dragonfly_swarm_completes() {
    for evaluator in [Evaluator::Base, Evaluator::LoadAware] {
        let df = DragonflyConfig { evaluator, ..DragonflyConfig::default() };
        let (swarm, digest) = dragonfly_pull(16, df, 5);
        assert!(swarm.failed().is_empty(), "{:?}", swarm.failed());
        assert_eq!(swarm.completed().into_iter().collect::<BTreeSet<_>>().len(), 16);
        assert!(swarm.agents.iter().all(|a| a.has_blob(&digest)));
        let from_peers = swarm
            .log
            .iter()
            .filter(|(_, from, to, m)| {
                matches!(m, Message::PiecePayload { .. })
                    && matches!((from, to), (Node::Agent(_), Node::Agent(_)))
            })
            .count();
        assert!(from_peers > 0, "{evaluator:?}: no piece moved between peers");
        let mut in_flight: BTreeMap<Node, BTreeSet<(Node, u32)>> = BTreeMap::new();
        for (_, from, to, msg) in &swarm.log {
            match msg {
                Message::PieceRequest { index, .. } => {
                    let set = in_flight.entry(*from).or_default();
                    set.insert((*to, *index));
                    assert!(set.len() <= 8, "{from:?} has {} pieces in flight", set.len());
                }
                Message::PiecePayload { index, .. } | Message::Error { index, .. } => {
                    if let Some(set) = in_flight.get_mut(to) {
                        set.remove(&(*from, *index));
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn same_seed_same_dragonfly_run() {
    let a = dragonfly_pull(8, DragonflyConfig::default(), 9).0;
    let b = dragonfly_pull(8, DragonflyConfig::default(), 9).0;
    assert_eq!(a.now, b.now);
    assert_eq!(a.log.len(), b.log.len());
    assert!(a.log.iter().zip(&b.log).all(|(x, y)| x == y));
}

/// A finished peer keeps reporting (it is a parent, its load matters) until the seeder TTI drops its
/// torrent; then it falls silent.
#[test]
fn a_seeder_reports_until_its_torrent_goes_dormant() {
    use std::cell::RefCell;
    use std::rc::Rc;

    let (digest, mi) = blob("seeded", 4 * MIB, MIB);
    let df = DragonflyConfig::default();
    let mut t = shoal_protocols::tracker::Tracker::new(Default::default(), vec![], 1, 1);
    t.set_dragonfly(df.clone());
    let times: Rc<RefCell<Vec<f64>>> = Rc::default();
    let seen = times.clone();
    let mut swarm = Swarm::new(Box::new(move |now, req| {
        seen.borrow_mut().push(now.as_secs_f64());
        t.handle_announce(now, req)
    }));
    let a = swarm.add_dragonfly_agent(SchedulerConfig::agent_base_yaml(), df, 1);
    let now = swarm.now;
    swarm.agents[a].add_seeded(now, "ns", mi, None);
    swarm.run_until(Duration::from_secs(600), |_| false);
    let times = times.borrow();
    assert!(times.iter().filter(|&&t| t < 60.0).count() >= 100, "reports every 500 ms: {}", times.len());
    assert!(!times.iter().any(|&t| t > 360.0), "still reporting after the seeder TTI");
    assert!(swarm.agents[a].has_blob(&digest));
}
