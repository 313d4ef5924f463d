//! Single rules of Kraken's scheduler, each driven by explicit time: timeouts, corrupt pieces,
//! handshakes and the blacklist, cold origins, idle leechers.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_protocols::announce::{AnnounceError, AnnounceResponse};
use shoal_protocols::config::{OriginConfig, SchedulerConfig, TrackerConfig};
use shoal_protocols::metainfo::PieceLengths;
use shoal_protocols::origin::BlobContent;
use shoal_protocols::{Bitfield, Digest, Instant, Message, MetaInfo, PeerId, PeerInfo};

use crate::harness::*;

fn two_origins(size: u64) -> (Swarm, Digest, MetaInfo) {
    let (digest, mi) = blob("rules", size, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    for seed in 0..2 {
        let blobs = BTreeMap::from([(digest, BlobContent::Synthetic { size })]);
        let cfg = OriginConfig { piece_lengths: PieceLengths::fixed(MIB), ..Default::default() };
        swarm.add_origin(cfg, blobs, seed);
    }
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 1);
    swarm.keep_log = true;
    (swarm, digest, mi)
}

fn requests_to(swarm: &Swarm, to: Node) -> Vec<(Instant, u32)> {
    swarm
        .log
        .iter()
        .filter_map(|(t, _, dst, m)| match m {
            Message::PieceRequest { index, .. } if *dst == to => Some((*t, *index)),
            _ => None,
        })
        .collect()
}

#[test]
fn timed_out_request_is_resent_to_a_different_peer() {
    let (mut swarm, digest, mi) = two_origins(16 * MIB);
    // Origin 0 swallows every payload it sends.
    swarm.tamper =
        Some(Box::new(|from, _, m| !(from == Node::Origin(0) && matches!(m, Message::PiecePayload { .. }))));
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 5);
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    assert!(swarm.run_until(Duration::from_secs(120), |s| !s.completed().is_empty()));
    let to_bad = requests_to(&swarm, Node::Origin(0));
    let to_good = requests_to(&swarm, Node::Origin(1));
    assert!(!to_bad.is_empty(), "the test needs requests to the silent origin");
    let timeout = Duration::from_secs(4); // max(4 s, 4 s × 1 MiB)
    for (t, piece) in &to_bad {
        let resent =
            to_good.iter().find(|(_, p)| p == piece).expect("every lost piece is asked of the other peer");
        assert!(resent.0 >= *t + timeout, "piece {piece} re-sent after {:?}", resent.0 - *t);
        // Never asked of the silent origin twice.
        assert_eq!(to_bad.iter().filter(|(_, p)| p == piece).count(), 1);
    }
    let d = swarm.agents[a].dispatcher(&digest).unwrap();
    assert_eq!(d.stats.pieces, mi.num_pieces());
    assert!(d.stats.requests_resent as usize >= to_bad.len());
}

#[test]
fn corrupt_piece_is_refetched_from_another_peer_and_sender_kept() {
    let (mut swarm, digest, mi) = two_origins(16 * MIB);
    let h = mi.info_hash();
    swarm.tamper = Some(corrupt_from(Node::Origin(0)));
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 5);
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    let corrupt = |s: &Swarm| s.agents[0].dispatcher(&digest).is_some_and(|d| d.stats.corrupt > 0);
    assert!(swarm.run_until(Duration::from_secs(10), corrupt));
    // Kraken only marks the request invalid: the sender stays connected and is not blacklisted.
    let bad = swarm.origins[0].peer_info().peer_id;
    assert_eq!(swarm.agents[a].num_active(&h), 2);
    assert!(!swarm.agents[a].is_blacklisted(swarm.now, &h, &bad));
    assert!(swarm.run_until(Duration::from_secs(120), |s| !s.completed().is_empty()));
    let d = swarm.agents[a].dispatcher(&digest).unwrap();
    assert_eq!(d.stats.pieces, mi.num_pieces());
    let corrupted: Vec<u32> = requests_to(&swarm, Node::Origin(0)).iter().map(|r| r.1).collect();
    let good: Vec<u32> = requests_to(&swarm, Node::Origin(1)).iter().map(|r| r.1).collect();
    assert!(
        corrupted.iter().all(|p| good.contains(p)),
        "every corrupt piece was fetched from the good origin"
    );
    assert_eq!(d.stats.corrupt as usize, corrupted.len());
}

#[test]
fn corrupt_sender_is_dropped_when_tolerance_is_off() {
    let (mut swarm, digest, mi) = two_origins(16 * MIB);
    let h = mi.info_hash();
    swarm.tamper = Some(corrupt_from(Node::Origin(0)));
    let mut cfg = SchedulerConfig::agent_base_yaml();
    cfg.quirks.tolerate_corrupt_pieces = false;
    let a = swarm.add_agent(cfg, 5);
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    let corrupt = |s: &Swarm| s.agents[0].dispatcher(&digest).is_some_and(|d| d.stats.corrupt > 0);
    assert!(swarm.run_until(Duration::from_secs(10), corrupt));
    let bad = swarm.origins[0].peer_info().peer_id;
    assert!(swarm.agents[a].is_blacklisted(swarm.now, &h, &bad));
    assert!(swarm.run_until(Duration::from_secs(120), |s| !s.completed().is_empty()));
}

/// A tracker that always hands out `peers`.
fn fixed_tracker(peers: Vec<PeerInfo>) -> TrackerFn {
    Box::new(move |_, _| {
        Ok(AnnounceResponse { peers: peers.clone(), interval_ns: 3_000_000_000, dragonfly: None })
    })
}

#[test]
fn wrong_peer_id_fails_the_handshake_and_blacklists_for_30s() {
    let (_, mi) = blob("hs", 4 * MIB, MIB);
    let h = mi.info_hash();
    let mut swarm = Swarm::new(Box::new(|_, _| Err(AnnounceError::NoPeers)));
    let seeder = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 1);
    swarm.agents[seeder].add_seeded(swarm.now, "ns", mi.clone(), None);
    // The tracker names the seeder's address with somebody else's id.
    let impostor = PeerId::from_raw([7; 20]);
    let peers = vec![PeerInfo { peer_id: impostor, addr: agent_addr(seeder), origin: false, complete: true }];
    swarm.tracker = fixed_tracker(peers);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    swarm.run_until(Duration::from_secs(29), |_| false);
    assert!(swarm.agents[a].is_blacklisted(swarm.now, &h, &impostor));
    let dials: Vec<Instant> = swarm.dials.iter().filter(|d| d.1 == Node::Agent(a)).map(|d| d.0).collect();
    assert_eq!(dials.len(), 1, "blacklisted peers are not dialled again: {dials:?}");
    swarm.run_until(Duration::from_secs(11), |_| false);
    let dials: Vec<Instant> = swarm.dials.iter().filter(|d| d.1 == Node::Agent(a)).map(|d| d.0).collect();
    assert_eq!(dials.len(), 2, "dialled again once the blacklist expired");
    assert!(dials[1] - dials[0] >= Duration::from_secs(30));
    assert!(swarm.completed().is_empty());
}

#[test]
fn right_peer_id_completes_the_handshake() {
    let (digest, mi) = blob("hs-ok", 4 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| Err(AnnounceError::NoPeers)));
    let seeder = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 1);
    swarm.agents[seeder].add_seeded(swarm.now, "ns", mi.clone(), None);
    let id = swarm.agents[seeder].peer_id();
    swarm.tracker = fixed_tracker(vec![PeerInfo {
        peer_id: id,
        addr: agent_addr(seeder),
        origin: false,
        complete: true,
    }]);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    assert!(swarm.run_until(Duration::from_secs(10), |s| s.agents[a].has_blob(&digest)));
}

#[test]
fn cold_origin_refuses_the_handshake_until_its_backend_fetch_completes() {
    let size = 8 * MIB;
    let (digest, mi) = blob("cold", size, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    let cfg = OriginConfig {
        piece_lengths: PieceLengths::fixed(MIB),
        warm_cache: false,
        backend_latency_ms: 2_000,
        ..Default::default()
    };
    swarm.add_origin(cfg, BTreeMap::from([(digest, BlobContent::Synthetic { size })]), 1);
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 1);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    // The agent already has the metainfo, so its first contact with the origin is a handshake.
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    assert!(swarm.run_until(Duration::from_secs(120), |s| s.agents[a].has_blob(&digest)));
    let dials: Vec<Instant> = swarm.dials.iter().map(|d| d.0).collect();
    assert_eq!(dials.len(), 2, "{dials:?}");
    assert!(dials[1] - dials[0] >= Duration::from_secs(30), "the refused origin is blacklisted for 30 s");
    assert!(swarm.origins[0].is_cached(&digest));
}

#[test]
fn metainfo_202_is_polled_until_the_origin_has_the_blob() {
    let size = 8 * MIB;
    let (digest, _) = blob("cold-meta", size, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    let cfg = OriginConfig {
        piece_lengths: PieceLengths::fixed(MIB),
        warm_cache: false,
        backend_latency_ms: 3_000,
        ..Default::default()
    };
    swarm.add_origin(cfg, BTreeMap::from([(digest, BlobContent::Synthetic { size })]), 1);
    swarm.tracker = real_tracker(swarm.origin_infos(), TrackerConfig::default(), 1);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].handle_download(swarm.now, "ns", digest);
    assert!(swarm.run_until(Duration::from_secs(60), |s| !s.completed().is_empty()));
    // Polls at about 1 s, 2.3 s, 4 s (1 s × 1.3^k with 5 % jitter): ready after the 3 s fetch, and
    // the origin is then warm, so no handshake is refused.
    let t = swarm.now.as_secs_f64();
    assert!((3.0..6.0).contains(&t), "completed at {t}s");
    assert_eq!(swarm.dials.len(), 1);
}

#[test]
fn unknown_blob_fails_the_download() {
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    swarm.add_origin(OriginConfig::default(), BTreeMap::new(), 1);
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].handle_download(swarm.now, "ns", Digest::of(b"nothing"));
    swarm.run_until(Duration::from_secs(5), |s| !s.failed().is_empty());
    assert_eq!(swarm.failed(), vec![(a, "metainfo not found (404)".to_string())]);
}

#[test]
fn idle_leecher_fails_after_leecher_tti() {
    let (_, mi) = blob("idle", 4 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| Err(AnnounceError::NoPeers)));
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    assert!(swarm.run_until(Duration::from_secs(400), |s| !s.failed().is_empty()));
    let (t, _, _) = &swarm.events[0];
    // Checked on the 30 s preemption tick: between 5 min and 5.5 min.
    assert!((300.0..=330.0).contains(&t.as_secs_f64()), "failed at {t}");
    assert!(swarm.failed()[0].1.contains("leecher TTI"));
}

/// A leecher with two seeders and 8 pieces; returns the requests it sent as (time, to, piece) and
/// the remaining-piece count when each was sent.
fn endgame_run(disable_endgame: bool) -> (Vec<(Node, u32, u32)>, u32) {
    let (digest, mi) = blob("endgame", 8 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    swarm.keep_log = true;
    let mut seeders = Vec::new();
    for seed in 0..2 {
        let s = swarm.add_agent(SchedulerConfig::agent_base_yaml(), seed);
        swarm.agents[s].add_seeded(swarm.now, "ns", mi.clone(), None);
        let peer_id = swarm.agents[s].peer_id();
        seeders.push(PeerInfo { peer_id, addr: agent_addr(s), origin: false, complete: true });
    }
    swarm.tracker = fixed_tracker(seeders);
    let mut cfg = SchedulerConfig::agent_base_yaml();
    cfg.dispatch.disable_endgame = disable_endgame;
    let a = swarm.add_agent(cfg, 9);
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    assert!(swarm.run_until(Duration::from_secs(60), |s| s.agents[a].has_blob(&digest)));
    let mut have = std::collections::BTreeSet::new();
    let mut requests = Vec::new();
    for (_, from, to, m) in &swarm.log {
        match m {
            Message::PieceRequest { index, .. } if *from == Node::Agent(a) => {
                requests.push((*to, *index, mi.num_pieces() - have.len() as u32));
            }
            Message::PiecePayload { index, .. } if *to == Node::Agent(a) => {
                have.insert(*index);
            }
            _ => {}
        }
    }
    (requests, swarm.agents[a].dispatcher(&digest).unwrap().stats.duplicates)
}

#[test]
fn endgame_duplicates_appear_only_at_the_threshold() {
    let (requests, duplicates) = endgame_run(false);
    let mut asked = BTreeMap::new();
    let mut dup_requests = 0;
    for (to, piece, remaining) in &requests {
        if asked.get(piece).is_some_and(|t| t != to) {
            dup_requests += 1;
            assert!(*remaining <= 3, "duplicate request for {piece} with {remaining} remaining");
        }
        asked.insert(*piece, *to);
    }
    assert!(dup_requests > 0, "endgame must send duplicate requests: {requests:?}");
    // Duplicate payloads may still be in flight when the download completes and closes the
    // connections to its (complete) seeders, so their count is not asserted here.
    let _ = duplicates;

    let (requests, duplicates) = endgame_run(true);
    let mut pieces: Vec<u32> = requests.iter().map(|r| r.1).collect();
    pieces.sort_unstable();
    pieces.dedup();
    assert_eq!(pieces.len(), requests.len(), "no duplicates with endgame disabled");
    assert_eq!(duplicates, 0);
}

/// Two leechers that each hold the piece the other lacks, told about each other at the same moment.
fn cross_dial(collide: bool) -> Swarm {
    let (_, mi) = blob("cross", 2 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| unreachable!()));
    let mut cfg = SchedulerConfig::agent_base_yaml();
    cfg.quirks.cross_dial_collision = collide;
    let mut infos = Vec::new();
    for i in 0..2u32 {
        let a = swarm.add_agent(cfg.clone(), u64::from(i));
        let mut have = Bitfield::new(2);
        have.set(i);
        swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), have);
        infos.push(PeerInfo {
            peer_id: swarm.agents[a].peer_id(),
            addr: agent_addr(a),
            origin: false,
            complete: false,
        });
    }
    swarm.tracker = fixed_tracker(infos);
    swarm
}

#[test]
fn simultaneous_cross_dial_blacklists_both_sides_as_in_kraken() {
    let mut swarm = cross_dial(true);
    let h = swarm.agents[0].dispatcher(&Digest::of(b"cross")).unwrap().metainfo().info_hash();
    swarm.run_until(Duration::from_millis(10), |_| false);
    let (id0, id1) = (swarm.agents[0].peer_id(), swarm.agents[1].peer_id());
    assert!(swarm.agents[0].is_blacklisted(swarm.now, &h, &id1));
    assert!(swarm.agents[1].is_blacklisted(swarm.now, &h, &id0));
    // Same latencies and the same announce phase: they collide again each time the blacklist ends.
    assert!(!swarm.run_until(Duration::from_secs(100), |s| !s.completed().is_empty()));
}

#[test]
fn cross_dial_fix_lets_the_lower_id_accept() {
    let mut swarm = cross_dial(false);
    assert!(swarm.run_until(Duration::from_secs(1), |s| s.completed().len() == 2));
    assert_eq!(swarm.dials.len(), 2);
}

#[test]
fn origin_refuses_a_handshake_of_the_wrong_length_and_keeps_serving() {
    use shoal_protocols::Handshake;
    use shoal_protocols::origin::Origin;
    use shoal_protocols::peer::Output;

    let (digest, mi) = blob("len", 8 * MIB, MIB);
    let cfg = OriginConfig { piece_lengths: PieceLengths::fixed(MIB), ..Default::default() };
    let backend = BTreeMap::from([(digest, BlobContent::Synthetic { size: mi.length() })]);
    let mut o = Origin::new(Instant::ZERO, SchedulerConfig::default(), cfg, origin_addr(0), backend, 1);
    let hs = |id: u8, pieces: u32| {
        Message::Bitfield(Box::new(Handshake {
            peer_id: PeerId::from_raw([id; 20]),
            info_hash: mi.info_hash(),
            digest,
            bitfield: Bitfield::full(pieces),
            remote_bitfields: BTreeMap::new(),
            namespace: "ns".into(),
        }))
    };
    let now = Instant::ZERO;
    let good = o.handle_accept(now, agent_addr(0));
    o.handle_message(now, good, hs(1, mi.num_pieces()));
    let bad = o.handle_accept(now, agent_addr(1));
    o.handle_message(now, bad, hs(2, mi.num_pieces() + 6));
    let out: Vec<Output> = std::iter::from_fn(|| o.poll_output()).collect();
    assert!(out.contains(&Output::Close { conn: bad }), "{out:?}");
    o.handle_message(now, good, Message::PieceRequest { index: 0, offset: 0, length: MIB });
    let out: Vec<Output> = std::iter::from_fn(|| o.poll_output()).collect();
    assert!(
        out.iter().any(
            |x| matches!(x, Output::Send { conn, message: Message::PiecePayload { .. } } if *conn == good)
        ),
        "the first peer is still served: {out:?}"
    );
}

#[test]
fn unanswered_metainfo_and_announce_requests_time_out_to_the_next_tracker() {
    use shoal_protocols::agent::{Agent, AgentConfig};
    use shoal_protocols::peer::Output;

    let trackers = vec![tracker_addr(), std::net::SocketAddr::from(([127, 3, 0, 2], 8000))];
    let cfg = AgentConfig { scheduler: SchedulerConfig::agent_base_yaml(), trackers };
    let mut a = Agent::new(Instant::ZERO, cfg, agent_addr(0), 1);
    let (digest, mi) = blob("lost", 4 * MIB, MIB);
    a.handle_download(Instant::ZERO, "ns", digest);
    let first = match a.poll_output() {
        Some(Output::FetchMetaInfo { tracker, .. }) => tracker,
        other => panic!("{other:?}"),
    };
    // Nobody answers: after Kraken's 10 s request timeout the next tracker is asked.
    let t = a.poll_timeout();
    assert_eq!(t, Instant::ZERO + Duration::from_secs(10));
    a.handle_timeout(t);
    let (id, second) = match a.poll_output() {
        Some(Output::FetchMetaInfo { id, tracker, .. }) => (id, tracker),
        other => panic!("{other:?}"),
    };
    assert_ne!(first, second);
    a.handle_metainfo_response(t, id, shoal_protocols::announce::MetaInfoReply::Ready(mi));
    let announce_to = match a.poll_output() {
        Some(Output::Announce { tracker, .. }) => tracker,
        other => panic!("{other:?}"),
    };
    // Unanswered, the announce goes to the next tracker after 10 s.
    a.handle_timeout(t + Duration::from_secs(10));
    let out: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(
        out.iter().any(|o| matches!(o, Output::Announce { tracker, .. } if *tracker != announce_to)),
        "{out:?}"
    );
}

#[test]
fn a_download_failed_by_the_leecher_tti_announces_again_when_retried() {
    let (digest, mi) = blob("retry", 4 * MIB, MIB);
    let mut swarm = Swarm::new(Box::new(|_, _| Err(AnnounceError::NoPeers)));
    let a = swarm.add_agent(SchedulerConfig::agent_base_yaml(), 2);
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    assert!(swarm.run_until(Duration::from_secs(400), |s| !s.failed().is_empty()));
    // Retried with fresh metainfo, the torrent is announced on every tick again.
    let counter = std::rc::Rc::new(std::cell::Cell::new(0));
    let c = counter.clone();
    swarm.tracker = Box::new(move |_, _| {
        c.set(c.get() + 1);
        Err(AnnounceError::NoPeers)
    });
    swarm.agents[a].add_partial(swarm.now, "ns", mi.clone(), Bitfield::new(mi.num_pieces()));
    swarm.run_until(Duration::from_secs(60), |_| false);
    assert!(counter.get() >= 10, "only {} announces in 60 s", counter.get());
    let _ = digest;
}
