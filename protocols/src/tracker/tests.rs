//! Scenario tests for the tracker, driven with explicit time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::config::HandoutPolicy;
use crate::metainfo::MetaInfo;
use crate::types::PeerId;

const T0: Instant = Instant::from_nanos(1_000_000_000);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn agent(i: u32, complete: bool) -> PeerInfo {
    let addr = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 16001));
    PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: false, complete }
}

fn origin(i: u8) -> PeerInfo {
    let addr = SocketAddr::from(([10, 0, 0, i], 15002));
    PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: false, complete: false }
}

fn origins(n: u8) -> Vec<PeerInfo> {
    (1..=n).map(origin).collect()
}

fn blob() -> Digest {
    Digest::of(b"layer 1")
}

fn info_hash() -> InfoHash {
    InfoHash::of(b"layer 1 info")
}

fn announce(peer: &PeerInfo) -> AnnounceRequest {
    AnnounceRequest { digest: blob(), info_hash: info_hash(), peer: peer.clone(), dragonfly: None }
}

fn tracker(n_origins: u8, max_replica: usize) -> Tracker {
    Tracker::new(TrackerConfig::default(), origins(n_origins), max_replica, 7)
}

fn drain(t: &mut Tracker) -> Vec<TrackerOutput> {
    std::iter::from_fn(|| t.poll_output()).collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

mod announce {
    use super::*;

    #[test]
    fn completeness_orders_seeders_then_origins_then_leechers() {
        let mut t = tracker(3, 3);
        for i in 0..20 {
            t.handle_announce(T0, &announce(&agent(i, i % 2 == 0))).unwrap();
        }
        let mut first_seeders = BTreeSet::new();
        for k in 0..20 {
            let me = agent(100 + k, false);
            let resp = t.handle_announce(T0, &announce(&me)).unwrap();
            let classes: Vec<u8> = resp.peers.iter().map(CompletenessHandout::priority).collect();
            assert!(classes.is_sorted(), "{classes:?}");
            assert_eq!(classes.iter().filter(|&&c| c == 0).count(), 10);
            assert_eq!(classes.iter().filter(|&&c| c == 1).count(), 3);
            assert_eq!(classes.iter().filter(|&&c| c == 2).count(), 10 + 1 + k as usize);
            assert!(resp.peers.iter().filter(|p| p.origin).all(|p| p.complete));
            assert_eq!(resp.interval_ns, 3_000_000_000);
            first_seeders.insert(resp.peers[0].peer_id);
        }
        // Random order within a class: the first complete agent is not always the same one.
        assert!(first_seeders.len() > 3, "{first_seeders:?}");
    }

    #[test]
    fn default_policy_keeps_sample_order_with_origins_last() {
        let config = TrackerConfig { handout_policy: HandoutPolicy::Default, ..TrackerConfig::default() };
        let mut t = Tracker::new(config, origins(3), 2, 1);
        for i in 0..10 {
            t.handle_announce(T0, &announce(&agent(i, i < 5))).unwrap();
        }
        let resp = t.handle_announce(T0, &announce(&agent(50, false))).unwrap();
        assert_eq!(resp.peers.len(), 11 + 2);
        assert!(resp.peers[..11].iter().all(|p| !p.origin));
        assert_eq!(resp.peers[11..].to_vec(), t.owners(&blob()));
    }

    #[test]
    fn handout_is_capped_at_fifty_agents_with_origins_on_top() {
        let mut t = tracker(4, 2);
        for i in 0..200 {
            t.handle_announce(T0, &announce(&agent(i, false))).unwrap();
        }
        assert_eq!(t.peer_count(T0, &info_hash()), 200);
        let resp = t.handle_announce(T0, &announce(&agent(7, false))).unwrap();
        let agents: BTreeSet<PeerId> = resp.peers.iter().filter(|p| !p.origin).map(|p| p.peer_id).collect();
        assert_eq!(agents.len(), 50);
        let handed_origins: Vec<PeerInfo> = resp.peers.iter().filter(|p| p.origin).cloned().collect();
        assert_eq!(handed_origins.len(), 2);
        assert_eq!(resp.peers.len(), 52);
        let owners: BTreeSet<SocketAddr> = t.owners(&blob()).iter().map(|o| o.addr).collect();
        assert_eq!(handed_origins.iter().map(|o| o.addr).collect::<BTreeSet<_>>(), owners);
    }

    #[test]
    fn sample_covers_the_swarm_uniformly() {
        let config = TrackerConfig { announce_limit: 5, ..TrackerConfig::default() };
        let mut t = Tracker::new(config, Vec::new(), 3, 3);
        for i in 0..20 {
            t.handle_announce(T0, &announce(&agent(i, false))).unwrap();
        }
        let mut counts = [0u32; 20];
        for _ in 0..2000 {
            let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
            assert_eq!(resp.peers.len(), 5);
            for p in &resp.peers {
                let i = (0..20).position(|i| agent(i, false).peer_id == p.peer_id).unwrap();
                counts[i] += 1;
            }
        }
        // 2000 × 5 / 20 = 500 expected each.
        assert!(counts.iter().all(|&c| (400..=600).contains(&c)), "{counts:?}");
    }

    #[test]
    fn complete_peer_gets_no_peers() {
        let mut t = tracker(3, 3);
        for i in 0..5 {
            t.handle_announce(T0, &announce(&agent(i, false))).unwrap();
        }
        let resp = t.handle_announce(T0, &announce(&agent(9, true))).unwrap();
        assert!(resp.peers.is_empty());
        assert_eq!(resp.interval(), secs(3));
        // It is stored, as a seeder, for the others.
        let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
        assert!(resp.peers[0].complete && !resp.peers[0].origin);
    }

    #[test]
    fn peers_expire_after_ttl_unless_they_announce_again() {
        let mut t = tracker(0, 3);
        let ttl = secs(5 * 3600);
        t.handle_announce(T0, &announce(&agent(1, false))).unwrap();
        t.handle_announce(T0, &announce(&agent(2, false))).unwrap();
        // Agent 2 refreshes at T0 + 1 h; agent 1 stays silent.
        t.handle_announce(T0 + secs(3600), &announce(&agent(2, false))).unwrap();

        // Live up to and including the expiry instant (Kraken expires strictly after).
        assert_eq!(t.peer_count(T0 + ttl, &info_hash()), 2);
        let later = T0 + ttl + Duration::from_nanos(1);
        assert_eq!(t.peer_count(later, &info_hash()), 1);
        let resp = t.handle_announce(later, &announce(&agent(3, false))).unwrap();
        let ids: BTreeSet<PeerId> = resp.peers.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids, BTreeSet::from([agent(2, false).peer_id, agent(3, false).peer_id]));

        // Long after, only the newest announcer is left.
        let much_later = later + ttl + secs(1);
        let resp = t.handle_announce(much_later, &announce(&agent(4, false))).unwrap();
        assert_eq!(resp.peers, vec![agent(4, false)]);
    }

    #[test]
    fn requester_receives_itself_as_in_kraken() {
        let mut t = tracker(0, 3);
        let me = agent(1, false);
        let resp = t.handle_announce(T0, &announce(&me)).unwrap();
        assert_eq!(resp.peers, vec![me.clone()]);

        t.set_exclude_requester(true);
        assert_eq!(t.handle_announce(T0, &announce(&me)), Err(AnnounceError::NoPeers));
        let resp = t.handle_announce(T0, &announce(&agent(2, false))).unwrap();
        assert_eq!(resp.peers, vec![me]);
    }

    #[test]
    fn no_peers_when_the_handout_is_empty() {
        let config = TrackerConfig { announce_limit: 0, ..TrackerConfig::default() };
        let mut t = Tracker::new(config.clone(), Vec::new(), 3, 1);
        assert_eq!(t.handle_announce(T0, &announce(&agent(1, false))), Err(AnnounceError::NoPeers));
        // Origins alone are a handout.
        let mut t = Tracker::new(config, origins(2), 3, 1);
        let resp = t.handle_announce(T0, &announce(&agent(1, false))).unwrap();
        assert_eq!(resp.peers.len(), 2);
        assert!(resp.peers.iter().all(|p| p.origin && p.complete));
    }

    #[test]
    fn announced_origin_flag_is_not_stored() {
        let mut t = tracker(0, 3);
        let liar = PeerInfo { origin: true, ..agent(1, false) };
        t.handle_announce(T0, &announce(&liar)).unwrap();
        let resp = t.handle_announce(T0, &announce(&agent(2, false))).unwrap();
        assert!(resp.peers.iter().all(|p| !p.origin));
    }

    #[test]
    fn unhealthy_owners_are_replaced_per_ring_rules() {
        let mut t = tracker(5, 2);
        let ordered: Vec<SocketAddr> =
            t.ring().ordered(&blob()).into_iter().map(|l| l.parse().unwrap()).collect();
        let handed = |t: &mut Tracker| -> Vec<SocketAddr> {
            let resp = t.handle_announce(T0, &announce(&agent(1, false))).unwrap();
            resp.peers.iter().filter(|p| p.origin).map(|p| p.addr).collect()
        };
        assert_eq!(
            handed(&mut t).into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([ordered[0], ordered[1]])
        );
        t.set_origin_healthy(ordered[0], false);
        assert_eq!(handed(&mut t), vec![ordered[1]]);
        t.set_origin_healthy(ordered[1], false);
        assert_eq!(handed(&mut t), vec![ordered[2]]);
    }

    #[derive(Debug)]
    struct OriginsOnly;

    impl PeerHandout for OriginsOnly {
        fn order(&mut self, _: &mut ChaCha8Rng, ctx: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>) {
            assert!(!ctx.requester.origin);
            peers.retain(|p| p.origin);
        }
    }

    #[test]
    fn custom_policy_can_reorder_and_trim() {
        let mut t = tracker(3, 2);
        t.set_handout(Box::new(OriginsOnly));
        for i in 0..5 {
            t.handle_announce(T0, &announce(&agent(i, true))).unwrap();
        }
        let resp = t.handle_announce(T0, &announce(&agent(9, false))).unwrap();
        assert_eq!(resp.peers.len(), 2);
        assert!(resp.peers.iter().all(|p| p.origin));
    }

    #[test]
    fn same_seed_same_handouts() {
        let run = |seed| {
            let mut t = Tracker::new(TrackerConfig::default(), origins(3), 2, seed);
            (0..80)
                .map(|i| t.handle_announce(T0 + secs(i.into()), &announce(&agent(i, i % 3 == 0))))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}

mod metainfo {
    use super::*;

    fn ready() -> MetaInfoReply {
        MetaInfoReply::Ready(MetaInfo::synthetic(blob(), 10 << 20, 4 << 20).unwrap())
    }

    fn fetches(outputs: &[TrackerOutput]) -> Vec<SocketAddr> {
        outputs
            .iter()
            .filter_map(|o| match o {
                TrackerOutput::FetchMetaInfo { origin, .. } => Some(*origin),
                _ => None,
            })
            .collect()
    }

    fn answers(outputs: &[TrackerOutput]) -> Vec<(u64, MetaInfoReply)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                TrackerOutput::MetaInfo { request_id, reply } => Some((*request_id, reply.clone())),
                _ => None,
            })
            .collect()
    }

    /// Issues a request and returns the origin asked, if any.
    fn request(t: &mut Tracker, now: Instant, id: u64) -> Vec<TrackerOutput> {
        t.handle_metainfo_request(now, id, "docker", blob());
        drain(t)
    }

    #[test]
    fn concurrent_misses_cause_one_origin_fetch() {
        let mut t = tracker(3, 3);
        let out = request(&mut t, T0, 1);
        let primary = t.owners(&blob())[0].addr;
        assert_eq!(
            out,
            vec![TrackerOutput::FetchMetaInfo {
                origin: primary,
                namespace: "docker".into(),
                digest: blob()
            }]
        );
        assert!(request(&mut t, T0 + secs(1), 2).is_empty());
        assert!(request(&mut t, T0 + secs(2), 3).is_empty());
        assert_eq!(t.metainfo_fetches_in_flight(), 1);

        t.handle_origin_metainfo(T0 + secs(2), "docker", blob(), primary, ready());
        let out = drain(&mut t);
        assert_eq!(answers(&out), vec![(1, ready()), (2, ready()), (3, ready())]);
        assert_eq!(t.metainfo_fetches_in_flight(), 0);

        // Another namespace is another cache key.
        t.handle_metainfo_request(T0 + secs(2), 4, "other", blob());
        assert_eq!(fetches(&drain(&mut t)), vec![primary]);
    }

    #[test]
    fn ready_is_cached_for_five_minutes() {
        let mut t = tracker(3, 3);
        let primary = fetches(&request(&mut t, T0, 1))[0];
        t.handle_origin_metainfo(T0, "docker", blob(), primary, ready());
        assert_eq!(answers(&drain(&mut t)), vec![(1, ready())]);

        let almost = T0 + (secs(300) - Duration::from_nanos(1));
        assert_eq!(
            request(&mut t, almost, 2),
            vec![TrackerOutput::MetaInfo { request_id: 2, reply: ready() }]
        );
        assert_eq!(fetches(&request(&mut t, T0 + secs(300), 3)), vec![primary]);
    }

    #[test]
    fn pending_is_cached_for_one_second_only() {
        let mut t = tracker(3, 3);
        let primary = fetches(&request(&mut t, T0, 1))[0];
        t.handle_origin_metainfo(T0, "docker", blob(), primary, MetaInfoReply::Pending);
        assert_eq!(answers(&drain(&mut t)), vec![(1, MetaInfoReply::Pending)]);

        // 202 stops the walk: nobody else is asked.
        let hit = request(&mut t, T0 + Duration::from_millis(999), 2);
        assert_eq!(answers(&hit), vec![(2, MetaInfoReply::Pending)]);
        assert!(fetches(&hit).is_empty());

        let out = request(&mut t, T0 + secs(1), 3);
        assert_eq!(fetches(&out), vec![primary]);
        t.handle_origin_metainfo(T0 + secs(1), "docker", blob(), primary, ready());
        assert_eq!(answers(&drain(&mut t)), vec![(3, ready())]);
    }

    #[test]
    fn unreachable_falls_through_to_the_next_owner() {
        let mut t = tracker(3, 3);
        let owners: Vec<SocketAddr> = t.owners(&blob()).iter().map(|o| o.addr).collect();
        assert_eq!(fetches(&request(&mut t, T0, 1)), vec![owners[0]]);
        assert!(request(&mut t, T0, 2).is_empty());

        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], MetaInfoReply::Unreachable);
        assert_eq!(fetches(&drain(&mut t)), vec![owners[1]]);
        t.handle_origin_metainfo(T0, "docker", blob(), owners[1], MetaInfoReply::Unreachable);
        assert_eq!(fetches(&drain(&mut t)), vec![owners[2]]);
        t.handle_origin_metainfo(T0, "docker", blob(), owners[2], ready());
        assert_eq!(answers(&drain(&mut t)), vec![(1, ready()), (2, ready())]);
    }

    #[test]
    fn every_owner_unreachable_answers_unreachable_briefly() {
        let mut t = tracker(2, 2);
        let owners: Vec<SocketAddr> = t.owners(&blob()).iter().map(|o| o.addr).collect();
        let _ = request(&mut t, T0, 1);
        for o in &owners {
            t.handle_origin_metainfo(T0, "docker", blob(), *o, MetaInfoReply::Unreachable);
        }
        assert_eq!(answers(&drain(&mut t)), vec![(1, MetaInfoReply::Unreachable)]);
        assert_eq!(answers(&request(&mut t, T0, 2)), vec![(2, MetaInfoReply::Unreachable)]);
        assert_eq!(fetches(&request(&mut t, T0 + secs(1), 3)), vec![owners[0]]);

        // No origin at all: answered at once.
        let mut t = tracker(0, 3);
        assert_eq!(answers(&request(&mut t, T0, 1)), vec![(1, MetaInfoReply::Unreachable)]);
    }

    #[test]
    fn not_found_tries_next_owner_unless_configured_to_stop() {
        let mut t = tracker(3, 3);
        t.set_metainfo_not_found_tries_next_owner(false);
        let owners: Vec<SocketAddr> = t.owners(&blob()).iter().map(|o| o.addr).collect();
        let _ = request(&mut t, T0, 1);
        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], MetaInfoReply::NotFound);
        assert_eq!(
            drain(&mut t),
            vec![TrackerOutput::MetaInfo { request_id: 1, reply: MetaInfoReply::NotFound }]
        );

        let mut t = tracker(3, 3);
        let _ = request(&mut t, T0, 1);
        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], MetaInfoReply::NotFound);
        assert_eq!(fetches(&drain(&mut t)), vec![owners[1]]);
    }

    #[test]
    fn stale_and_unsolicited_replies_are_ignored() {
        let mut t = tracker(3, 3);
        let owners: Vec<SocketAddr> = t.owners(&blob()).iter().map(|o| o.addr).collect();
        // Nothing in flight.
        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], ready());
        assert!(drain(&mut t).is_empty());

        let _ = request(&mut t, T0, 1);
        // From an origin that was not asked.
        t.handle_origin_metainfo(T0, "docker", blob(), owners[1], ready());
        t.handle_origin_metainfo(T0, "docker", blob(), addr("192.0.2.1:1"), ready());
        assert!(drain(&mut t).is_empty());
        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], MetaInfoReply::Pending);
        assert_eq!(answers(&drain(&mut t)), vec![(1, MetaInfoReply::Pending)]);
        // A duplicate after the fetch ended changes nothing.
        t.handle_origin_metainfo(T0, "docker", blob(), owners[0], ready());
        assert!(drain(&mut t).is_empty());
        assert_eq!(answers(&request(&mut t, T0, 2)), vec![(2, MetaInfoReply::Pending)]);
        assert_eq!(t.poll_timeout(), None);
    }
}

mod locality {
    use super::*;
    use crate::config::{LocalityConfig, TopologyLevel};

    /// Agent `i` sits in rack i / 10, pod i / 20, zone i / 40 (10 hosts a rack, 2 racks a pod, 2 pods
    /// a zone); agents 1000 and up have no place.
    fn place(i: u32) -> Location {
        Location { rack: Some(i / 10), pod: Some(i / 20), zone: Some(i / 40) }
    }

    fn places(agents: impl IntoIterator<Item = u32>) -> Places {
        agents.into_iter().filter(|&i| i < 1000).map(|i| (agent(i, false).addr, place(i))).collect()
    }

    fn located(policy: HandoutPolicy, spill_peers: usize, limit: usize, n: u32) -> Tracker {
        let config = TrackerConfig {
            handout_policy: policy,
            announce_limit: limit,
            locality: LocalityConfig { spill_peers, group_level: TopologyLevel::Zone },
            ..TrackerConfig::default()
        };
        let mut t = Tracker::new(config, origins(3), 2, 5);
        t.set_exclude_requester(true);
        t.set_places(places(0..n));
        t
    }

    fn fill(t: &mut Tracker, agents: impl IntoIterator<Item = (u32, bool)>) {
        for (i, complete) in agents {
            t.handle_announce(T0, &announce(&agent(i, complete))).unwrap();
        }
    }

    fn index(p: &PeerInfo) -> u32 {
        let std::net::IpAddr::V4(ip) = p.addr.ip() else { unreachable!("test agents are IPv4") };
        let o = ip.octets();
        u32::from(o[2]) << 8 | u32::from(o[3])
    }

    fn dist(me: u32, p: &PeerInfo) -> u8 {
        let l = |i: u32| (i < 1000).then(|| place(i));
        distance(l(me), l(index(p)))
    }

    #[test]
    fn distance_levels_and_unknown_places() {
        let at = |i| Some(place(i));
        assert_eq!(distance(at(0), at(9)), 0);
        assert_eq!(distance(at(0), at(10)), 1);
        assert_eq!(distance(at(0), at(20)), 2);
        assert_eq!(distance(at(0), at(40)), 3);
        assert_eq!(distance(None, at(0)), 3);
        assert_eq!(distance(at(0), None), 3);
        assert_eq!(distance(Some(Location::default()), Some(Location::default())), 3, "no group in common");
    }

    #[test]
    fn topology_hands_out_nearest_first_with_origins() {
        let mut t = located(HandoutPolicy::Topology, 0, 50, 80);
        fill(&mut t, (1..80).map(|i| (i, false)));
        let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
        let agents: Vec<&PeerInfo> = resp.peers.iter().filter(|p| !p.origin).collect();
        assert_eq!(agents.len(), 50);
        assert_eq!(resp.peers.iter().filter(|p| p.origin).count(), 2, "the owners, on top of the limit");
        let d: Vec<u8> = agents.iter().map(|p| dist(0, p)).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first: {d:?}");
        // 9 in the rack, 10 more in the pod, 20 more in the zone, then 11 from anywhere.
        assert_eq!([0, 1, 2, 3].map(|l| d.iter().filter(|&&x| x == l).count()), [9, 10, 20, 11]);
        // Origins come before incomplete agents (no seeder in the rack here).
        assert!(resp.peers[0].origin && resp.peers[1].origin);
    }

    #[test]
    fn topology_spill_peers_come_from_outside_the_rack_early() {
        let mut t = located(HandoutPolicy::Topology, 2, 8, 80);
        // Rack 0 has a seeder (3) and more incomplete agents than the handout holds.
        fill(&mut t, (1..80).map(|i| (i, i == 3)));
        for round in 0..20 {
            let now = T0 + secs(round);
            let resp = t.handle_announce(now, &announce(&agent(0, false))).unwrap();
            let p = &resp.peers;
            assert_eq!(p.len(), 8 + 2);
            assert_eq!(index(&p[0]), 3, "the rack's seeder first");
            assert!(dist(0, &p[1]) > 0 && dist(0, &p[2]) > 0, "two spill peers: {:?}", p[1..3].to_vec());
            assert!(p[3].origin && p[4].origin);
            assert!(p[5..].iter().all(|q| dist(0, q) == 0), "then the rack");
        }
    }

    #[test]
    fn spill_never_exceeds_the_limit_and_origin_only_limit_gives_origins() {
        let mut t = located(HandoutPolicy::Topology, 5, 3, 80);
        fill(&mut t, (1..80).map(|i| (i, false)));
        let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
        assert_eq!(resp.peers.iter().filter(|p| !p.origin).count(), 3);
        assert!(resp.peers.iter().filter(|p| !p.origin).all(|p| dist(0, p) > 0), "all spill");
        let mut t = located(HandoutPolicy::Topology, 1, 0, 80);
        fill(&mut t, (1..80).map(|i| (i, false)));
        let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
        assert_eq!(resp.peers.len(), 2);
        assert!(resp.peers.iter().all(|p| p.origin));
    }

    #[test]
    fn unknown_places_never_panic_and_still_get_peers_and_origins() {
        for policy in [HandoutPolicy::Topology, HandoutPolicy::NaiveLocality] {
            // Only agents 0..20 are placed; 1000.. are unknown, and so is requester 1005.
            let mut t = located(policy, 1, 50, 20);
            fill(&mut t, (0..20).chain(1000..1010).map(|i| (i, i % 4 == 0)));
            let resp = t.handle_announce(T0, &announce(&agent(1005, false))).unwrap();
            assert_eq!(resp.peers.iter().filter(|p| p.origin).count(), 2, "{policy:?}");
            let agents = resp.peers.iter().filter(|p| !p.origin).count();
            match policy {
                // Unknown requester: everyone is "anywhere", so all 29 others.
                HandoutPolicy::Topology => assert_eq!(agents, 29),
                // In no group: origins alone.
                _ => assert_eq!(agents, 0),
            }
            // An empty map: no panic, every peer unknown.
            t.set_places(Places::new());
            let resp = t.handle_announce(T0, &announce(&agent(3, false))).unwrap();
            assert!(resp.peers.iter().any(|p| p.origin));
        }
    }

    #[test]
    fn topology_without_places_is_completeness_with_the_spill_before_the_origins() {
        let mut t = located(HandoutPolicy::Topology, 1, 50, 0);
        fill(&mut t, (1..30).map(|i| (i, i % 5 == 0)));
        let resp = t.handle_announce(T0, &announce(&agent(0, false))).unwrap();
        let p = &resp.peers;
        let first_origin = p.iter().position(|q| q.origin).unwrap();
        // The 5 seeders, one of which may be the spill peer; otherwise the spill peer (incomplete)
        // comes right before the origins.
        assert!(p[..first_origin].iter().filter(|q| q.complete).count() == 5, "{p:?}");
        assert!(first_origin == 5 || (first_origin == 6 && !p[5].complete), "{p:?}");
        assert!(p[first_origin + 2..].iter().all(|q| !q.complete && !q.origin));
        assert_eq!(p.iter().filter(|q| !q.origin).count(), 29);
    }

    #[test]
    fn naive_locality_confines_the_handout_to_the_zone() {
        let mut t = located(HandoutPolicy::NaiveLocality, 1, 50, 200);
        fill(&mut t, (1..200).map(|i| (i, i % 7 == 0)));
        let resp = t.handle_announce(T0, &announce(&agent(45, false))).unwrap();
        let agents: Vec<&PeerInfo> = resp.peers.iter().filter(|p| !p.origin).collect();
        assert_eq!(agents.len(), 39, "zone 1 holds agents 40..80, less the requester");
        assert!(agents.iter().all(|p| (40..80).contains(&index(p))));
        assert_eq!(resp.peers.iter().filter(|p| p.origin).count(), 2);
        // Completeness order: seeders, origins, then the rest.
        let class: Vec<u8> = resp.peers.iter().map(CompletenessHandout::priority).collect();
        assert!(class.windows(2).all(|w| w[0] <= w[1]), "{class:?}");
        // The limit holds inside a group too.
        let mut t = located(HandoutPolicy::NaiveLocality, 1, 10, 200);
        fill(&mut t, (1..200).map(|i| (i, false)));
        let resp = t.handle_announce(T0, &announce(&agent(45, false))).unwrap();
        assert_eq!(resp.peers.iter().filter(|p| !p.origin).count(), 10);
    }

    #[test]
    fn locality_handouts_are_deterministic() {
        let run = |seed| {
            let mut t = located(HandoutPolicy::Topology, 1, 10, 100);
            t.rng = ChaCha8Rng::seed_from_u64(seed);
            (0..100)
                .map(|i| t.handle_announce(T0 + secs(i.into()), &announce(&agent(i, i % 3 == 0))))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
