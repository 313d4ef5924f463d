//! The network model against exact analytic answers (DESIGN.md §4), and the incremental solver
//! against the full one.

use std::time::Duration;

use shoal_protocols::Instant;
use shoal_sim::net::{
    FlowId, GroupSpec, HostSpec, Level, Locality, Network, ResourceId, ResourceKind, Solver, Topology,
    TopologyError, TopologySpec,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Every solver the exact tests must agree on.
const SOLVERS: [Solver; 3] = [
    Solver::Full,
    Solver::Incremental { tolerance: 0.0 },
    Solver::Incremental { tolerance: Solver::DEFAULT_TOLERANCE },
];

const T0: Instant = Instant::ZERO;

fn at_secs(s: f64) -> Instant {
    Instant::from_nanos((s * 1e9).round() as u64)
}

/// Relative comparison for rates; the exact cases are exact up to float rounding.
fn assert_rate(net: &Network, id: FlowId, want: f64) {
    let got = net.rate(id).expect("flow is active");
    assert!((got - want).abs() <= 1e-9 * want, "rate {got}, want {want}");
}

/// Pops every completion, jumping time to each in turn: (token, finish time in ns). A wake-up
/// that completes nothing must be a deferred solve (`Solver::Stepped`), which then has run.
fn drain(net: &mut Network) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while let Some(t) = net.next_completion() {
        match net.pop_completed(t) {
            Some(done) => {
                assert_eq!(done.at, t);
                out.push((done.token, done.at.as_nanos()));
            }
            None => assert!(net.pending_solve().is_none_or(|p| p > t), "woken at {t:?} for nothing"),
        }
    }
    out
}

/// Finish times are exact up to the nanosecond rounding of a rate recomputed through a shared
/// float sum.
fn assert_ns(got: u64, want_ns: u64) {
    assert!(got.abs_diff(want_ns) <= 1, "finished at {got} ns, want {want_ns} ns");
}

fn host(up: u64, down: u64) -> HostSpec {
    HostSpec { upload_bytes_per_s: up, download_bytes_per_s: down, ..HostSpec::default() }
}

fn in_rack(up: u64, down: u64, rack: u32) -> HostSpec {
    HostSpec { rack: Some(rack), ..host(up, down) }
}

fn group(up: u64, down: u64, latency_us: u64) -> GroupSpec {
    GroupSpec {
        uplink_bytes_per_s: up,
        downlink_bytes_per_s: down,
        latency: Duration::from_micros(latency_us),
    }
}

/// A network of raw resources (capacities in bytes/s, 0 = unlimited).
fn raw(caps: &[u64], solver: Solver) -> Network {
    Network::new(caps, solver)
}

fn r(i: u32) -> ResourceId {
    ResourceId(i)
}

/// A seeded generator for the property tests (ChaCha8, as the simulator's own).
struct Rng(rand_chacha::ChaCha8Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..n)
    }
}

// ---------------------------------------------------------------------------------------------
// Topology

#[test]
fn path_crosses_the_groups_below_the_shared_one() {
    // Two zones; zone 0 has pod 0 with racks 0 and 1; zone 1 has pod 1 with rack 2.
    let spec = TopologySpec {
        base_latency: Duration::from_micros(10),
        hosts: vec![
            HostSpec { rack: Some(0), pod: Some(0), zone: Some(0), ..host(100, 100) },
            HostSpec { rack: Some(0), pod: Some(0), zone: Some(0), ..host(100, 100) },
            HostSpec { rack: Some(1), pod: Some(0), zone: Some(0), ..host(100, 100) },
            HostSpec { rack: Some(2), pod: Some(1), zone: Some(1), ..host(100, 100) },
        ],
        racks: vec![group(10, 20, 1), group(10, 20, 2), group(10, 20, 3)],
        pods: vec![group(30, 40, 100), group(30, 40, 200)],
        zones: vec![group(50, 60, 1000), group(50, 60, 2000)],
    };
    let topo = spec.build().expect("valid topology");
    assert_eq!(topo.resource_count(), 8 + 6 + 4 + 4);

    let same_rack = topo.path(0, 1);
    assert_eq!(same_rack.resources(), &[topo.host_upload(0), topo.host_download(1)]);
    assert_eq!(same_rack.latency, Duration::from_micros(10));
    assert_eq!(same_rack.locality, Locality::Rack);

    let same_pod = topo.path(0, 2);
    let want = [
        topo.host_upload(0),
        topo.uplink(Level::Rack, 0),
        topo.downlink(Level::Rack, 1),
        topo.host_download(2),
    ];
    assert_eq!(same_pod.resources(), &want);
    assert_eq!(same_pod.latency, Duration::from_micros(10 + 1 + 2));
    assert_eq!(same_pod.locality, Locality::Pod);

    let global = topo.path(1, 3);
    let want = [
        topo.host_upload(1),
        topo.uplink(Level::Rack, 0),
        topo.uplink(Level::Pod, 0),
        topo.uplink(Level::Zone, 0),
        topo.downlink(Level::Zone, 1),
        topo.downlink(Level::Pod, 1),
        topo.downlink(Level::Rack, 2),
        topo.host_download(3),
    ];
    assert_eq!(global.resources(), &want);
    assert_eq!(global.latency, Duration::from_micros(10 + 1 + 100 + 1000 + 2000 + 200 + 3));
    assert_eq!(topo.locality(1, 3), Locality::Global);

    let lo = topo.path(2, 2);
    assert!(lo.resources().is_empty());
    assert_eq!((lo.latency, lo.locality), (Duration::ZERO, Locality::Host));

    assert_eq!(topo.resource_kind(topo.uplink(Level::Pod, 1)), ResourceKind::Uplink(Level::Pod, 1));
    assert_eq!(topo.resource_kind(topo.host_download(3)), ResourceKind::HostDownload(3));
    assert_eq!(topo.capacities()[topo.downlink(Level::Zone, 1).index()], 60);
}

#[test]
fn ungrouped_hosts_pay_base_latency_only() {
    let topo = TopologySpec::flat(3, 5, 7, Duration::from_micros(40)).build().expect("valid");
    let p = topo.path(0, 2);
    assert_eq!(p.resources(), &[ResourceId(0), ResourceId(5)]);
    assert_eq!(p.latency, Duration::from_micros(40));
    assert_eq!(p.locality, Locality::Global);
}

#[test]
fn bad_topologies_are_rejected() {
    let unknown = TopologySpec { hosts: vec![in_rack(1, 1, 3)], ..TopologySpec::default() };
    assert_eq!(
        unknown.build().map(|_| ()),
        Err(TopologyError::UnknownGroup { host: 0, level: Level::Rack, group: 3 })
    );
    let split_rack = TopologySpec {
        hosts: vec![
            HostSpec { rack: Some(0), pod: Some(0), ..host(1, 1) },
            HostSpec { rack: Some(0), pod: Some(1), ..host(1, 1) },
        ],
        racks: vec![group(1, 1, 0)],
        pods: vec![group(1, 1, 0), group(1, 1, 0)],
        ..TopologySpec::default()
    };
    assert!(matches!(split_rack.build(), Err(TopologyError::InconsistentNesting { host: 1, .. })));
}

// ---------------------------------------------------------------------------------------------
// Exact analytic answers

#[test]
fn one_flow_takes_size_over_the_smallest_capacity() {
    for solver in SOLVERS {
        let topo =
            TopologySpec { hosts: vec![host(100_000_000, 1), host(1, 50_000_000)], ..Default::default() }
                .build()
                .expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let id = net.start_flow(T0, topo.path(0, 1).resources(), 4 << 20, 1);
        assert_rate(&net, id, 50e6);
        // 4 MiB at 50 MB/s = 83 886 080 ns exactly.
        assert_eq!(drain(&mut net), vec![(1, 83_886_080)]);
        assert_eq!(net.bytes_completed(), 4 << 20);
        assert_eq!(Network::transfer_time(4 << 20, 50e6), Duration::from_nanos(83_886_080));
    }
}

#[test]
fn k_flows_out_of_one_upload_share_it_equally() {
    for solver in SOLVERS {
        let k = 7u32;
        let mut hosts = vec![host(700, 0)];
        hosts.extend((0..k).map(|_| host(0, 1000)));
        let topo = TopologySpec { hosts, ..Default::default() }.build().expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let ids: Vec<_> =
            (1..=k).map(|d| net.start_flow(T0, topo.path(0, d).resources(), 1000, u64::from(d))).collect();
        for &id in &ids {
            assert_rate(&net, id, 100.0);
        }
        assert!((net.utilisation(topo.host_upload(0)) - 1.0).abs() < 1e-12);
        // All finish together after 1000 B / 100 B/s, in start order.
        let done = drain(&mut net);
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), (1..=u64::from(k)).collect::<Vec<_>>());
        for (_, t) in done {
            assert_ns(t, 10_000_000_000);
        }
    }
}

#[test]
fn k_flows_into_one_download_share_it_equally() {
    for solver in SOLVERS {
        let k = 5u32;
        let mut hosts = vec![host(0, 500)];
        hosts.extend((0..k).map(|_| host(1000, 0)));
        let topo = TopologySpec { hosts, ..Default::default() }.build().expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let ids: Vec<_> = (1..=k).map(|s| net.start_flow(T0, topo.path(s, 0).resources(), 300, 0)).collect();
        for &id in &ids {
            assert_rate(&net, id, 100.0);
        }
        assert!((net.load(topo.host_download(0)) - 500.0).abs() < 1e-9);
        for (_, t) in drain(&mut net) {
            assert_ns(t, 3_000_000_000);
        }
    }
}

#[test]
fn shared_link_with_a_host_limited_flow() {
    // A and B leave rack 0 through its uplink of 10 B/s; A's host uploads at most 2 B/s.
    // Max-min: A = 2 (its host), B = 8 (the rest of the link).
    for solver in SOLVERS {
        let spec = TopologySpec {
            hosts: vec![in_rack(2, 0, 0), in_rack(100, 0, 0), in_rack(0, 100, 1), in_rack(0, 100, 1)],
            racks: vec![group(10, 0, 0), group(0, 0, 0)],
            ..TopologySpec::default()
        };
        let topo = spec.build().expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let a = net.start_flow(T0, topo.path(0, 2).resources(), 1_000, 0);
        let b = net.start_flow(T0, topo.path(1, 3).resources(), 1_000, 1);
        assert_rate(&net, a, 2.0);
        assert_rate(&net, b, 8.0);
        assert!((net.utilisation(topo.uplink(Level::Rack, 0)) - 1.0).abs() < 1e-12);
    }
}

#[test]
fn classic_three_flows_two_links() {
    // Links L0 = 10, L1 = 4. f0 crosses both, f1 only L0, f2 only L1.
    // L1 saturates first at 2 (f0, f2 fixed at 2), then f1 takes L0's remaining 8.
    for solver in SOLVERS {
        let mut net = raw(&[10, 4], solver);
        let f0 = net.start_flow(T0, &[r(0), r(1)], 100, 0);
        let f1 = net.start_flow(T0, &[r(0)], 100, 1);
        let f2 = net.start_flow(T0, &[r(1)], 100, 2);
        assert_rate(&net, f0, 2.0);
        assert_rate(&net, f1, 8.0);
        assert_rate(&net, f2, 2.0);
    }
}

#[test]
fn bertsekas_gallager_four_links() {
    // A chain of four links of capacity 3 (Bertsekas & Gallager's example shape): one long flow
    // crosses all of them, links 0–2 carry one short flow each, link 3 three. Link 3 saturates first
    // at 3/4 (long flow and its three), then each short flow takes the 2.25 left on its link.
    for solver in SOLVERS {
        let mut net = raw(&[3, 3, 3, 3], solver);
        let long = net.start_flow(T0, &[r(0), r(1), r(2), r(3)], 100, 0);
        let shorts: Vec<_> = (0..3).map(|l| net.start_flow(T0, &[r(l)], 100, 1)).collect();
        let last: Vec<_> = (0..3).map(|_| net.start_flow(T0, &[r(3)], 100, 2)).collect();
        assert_rate(&net, long, 0.75);
        for id in shorts {
            assert_rate(&net, id, 2.25);
        }
        for id in last {
            assert_rate(&net, id, 0.75);
        }
    }
}

#[test]
fn a_flow_ending_midway_lets_the_others_speed_up() {
    for solver in SOLVERS {
        // One upload of 100 B/s, flows of 1000, 2000 and 3000 B.
        // 0–30 s: 33.3 B/s each; the first ends at 30 s. The others have 1000 and 2000 left at 50 B/s:
        // the second ends at 50 s; the third has 1000 left at 100 B/s and ends at 60 s.
        let mut net = raw(&[100], solver);
        for (i, bytes) in [1000, 2000, 3000].into_iter().enumerate() {
            net.start_flow(T0, &[r(0)], bytes, i as u64);
        }
        let done = drain(&mut net);
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_ns(done[0].1, 30_000_000_000);
        assert_ns(done[1].1, 50_000_000_000);
        assert_ns(done[2].1, 60_000_000_000);
        assert!((net.bytes_moved(at_secs(60.0)) - 6000.0).abs() < 1e-6);
        assert!((net.bytes_carried(r(0), at_secs(60.0)) - 6000.0).abs() < 1e-6);
    }
}

#[test]
fn redistribution_crosses_two_hops() {
    // Host 0 uploads to hosts 1 and 2; host 3 also uploads to host 2. All capacities 100 except
    // host 0's upload (60). Rates: 0→1 = 30, 0→2 = 30, 3→2 = 70. When 0→1 ends, 0→2 rises to 50 and
    // 3→2 drops to 50: a change two resources away from the ended flow.
    for solver in SOLVERS {
        let topo = TopologySpec {
            hosts: vec![host(60, 100), host(100, 100), host(100, 100), host(100, 100)],
            ..Default::default()
        }
        .build()
        .expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let a = net.start_flow(T0, topo.path(0, 1).resources(), 300, 0); // ends at 10 s
        let b = net.start_flow(T0, topo.path(0, 2).resources(), 1_000, 1);
        let c = net.start_flow(T0, topo.path(3, 2).resources(), 1_700, 2);
        assert_rate(&net, a, 30.0);
        assert_rate(&net, b, 30.0);
        assert_rate(&net, c, 70.0);
        let first = net.pop_completed(at_secs(10.0)).expect("a ends at 10 s");
        assert_eq!(first.id, a);
        assert_rate(&net, b, 50.0);
        assert_rate(&net, c, 50.0);
        // b: 700 left at 50 B/s → 24 s; c: 1000 left at 50 B/s, so b ends first and c takes 100.
        let done = drain(&mut net);
        assert_eq!(done[0].0, 1);
        assert_ns(done[0].1, 24_000_000_000);
        // c sent 700 + 14·50 = 1400 by 24 s; 300 left at 100 B/s.
        assert_ns(done[1].1, 27_000_000_000);
    }
}

#[test]
fn cancelling_reports_bytes_sent_and_frees_capacity() {
    for solver in SOLVERS {
        let mut net = raw(&[100], solver);
        let a = net.start_flow(T0, &[r(0)], 10_000, 0);
        let b = net.start_flow(T0, &[r(0)], 1_000, 1);
        let c = net.cancel_flow(at_secs(4.0), a).expect("active");
        assert_eq!((c.token, c.bytes), (0, 10_000));
        assert!((c.bytes_sent - 200.0).abs() < 1e-6);
        assert_rate(&net, b, 100.0);
        assert_eq!(net.cancel_flow(at_secs(4.0), a), None);
        // b: 200 sent by 4 s, 800 left at 100 B/s.
        assert_eq!(drain(&mut net), vec![(1, 12_000_000_000)]);
    }
}

#[test]
fn rack_oversubscription_caps_the_aggregate_at_the_uplink() {
    // 40 hosts in rack 1 each download from a distinct host in rack 2. Hosts have 300 MB/s; rack 2's
    // uplink is 4:1 oversubscribed: 40 · 300 MB/s / 4 = 3 GB/s.
    for solver in SOLVERS {
        let rate = 300_000_000;
        let mut hosts: Vec<_> = (0..40).map(|_| in_rack(rate, rate, 0)).collect();
        hosts.extend((0..40).map(|_| in_rack(rate, rate, 1)));
        let spec = TopologySpec {
            hosts,
            racks: vec![group(40 * rate / 4, 40 * rate / 4, 5), group(40 * rate / 4, 40 * rate / 4, 5)],
            ..TopologySpec::default()
        };
        let topo = spec.build().expect("valid");
        let mut net = Network::new(&topo.capacities(), solver);
        let ids: Vec<_> =
            (0..40u32).map(|i| net.start_flow(T0, topo.path(40 + i, i).resources(), 1 << 30, 0)).collect();
        let uplink = topo.uplink(Level::Rack, 1);
        let total: f64 = ids.iter().map(|&id| net.rate(id).expect("active")).sum();
        assert!((total - 3e9).abs() < 1e-3, "aggregate {total}");
        assert!((net.load(uplink) - 3e9).abs() < 1e-3);
        for &id in &ids {
            assert_rate(&net, id, 75e6);
        }
        // One second later the uplink has carried 3 GB.
        assert!((net.bytes_carried(uplink, at_secs(1.0)) - 3e9).abs() < 1.0);
        assert_eq!(net.flows_on(uplink), 40);
    }
}

#[test]
fn empty_and_unconstrained_flows_complete_at_once() {
    for solver in SOLVERS {
        // Resource 0 is unlimited (capacity 0), resource 1 is 10 B/s.
        let mut net = raw(&[0, 10], solver);
        let now = at_secs(1.0);
        let free = net.start_flow(now, &[r(0)], 1_000, 1);
        let empty = net.start_flow(now, &[r(1)], 0, 2);
        let loopback = net.start_flow(now, &[], 5, 3);
        assert_eq!(net.capacity(r(0)), None);
        assert_eq!(net.rate(free), Some(f64::INFINITY));
        assert_eq!(net.next_completion(), Some(now));
        let tokens: Vec<_> = std::iter::from_fn(|| net.pop_completed(now)).map(|c| (c.id, c.token)).collect();
        assert_eq!(tokens, vec![(free, 1), (empty, 2), (loopback, 3)]);
        assert_eq!(net.active_flows(), 0);
        assert!((net.bytes_carried(r(0), now) - 1_000.0).abs() < 1e-9);
        // A flow across an unlimited and a limited resource is limited by the latter.
        let mixed = net.start_flow(now, &[r(0), r(1)], 100, 4);
        assert_rate(&net, mixed, 10.0);
    }
}

#[test]
fn simultaneous_completions_come_in_start_order() {
    let mut net = raw(&[10, 10, 10], Solver::default());
    let ids: Vec<_> = [2u32, 0, 1].iter().map(|&l| net.start_flow(T0, &[r(l)], 100, u64::from(l))).collect();
    let done: Vec<_> = std::iter::from_fn(|| net.pop_completed(at_secs(10.0))).map(|c| c.id).collect();
    assert_eq!(done, ids);
}

// ---------------------------------------------------------------------------------------------
// Incremental against full, on random instances

/// A random topology of `hosts` hosts in up to 3 racks with random capacities, some unlimited.
fn random_topology(rng: &mut Rng, hosts: u32) -> Topology {
    let cap = |rng: &mut Rng| if rng.below(10) == 0 { 0 } else { 10 + rng.below(90) };
    let racks = 1 + rng.below(3) as u32;
    let spec = TopologySpec {
        hosts: (0..hosts)
            .map(|_| HostSpec { rack: Some(rng.below(u64::from(racks)) as u32), ..host(cap(rng), cap(rng)) })
            .collect(),
        racks: (0..racks).map(|_| group(cap(rng) * 3, cap(rng) * 3, 0)).collect(),
        ..TopologySpec::default()
    };
    spec.build().expect("valid")
}

/// Replays random starts, cancellations and completions; after every event, checks each flow's
/// rate against the exact max-min rates within `rel_tol`. Returns the largest relative error.
fn replay_against_reference(seed: u64, solver: Solver, rel_tol: f64) -> f64 {
    let mut rng = Rng::new(seed);
    let hosts = 3 + rng.below(10) as u32;
    let topo = random_topology(&mut rng, hosts);
    let mut net = Network::new(&topo.capacities(), solver);
    let mut now = T0;
    let mut worst: f64 = 0.0;
    for step in 0..120 {
        match rng.below(10) {
            0..=5 => {
                let (s, d) = (rng.below(u64::from(hosts)) as u32, rng.below(u64::from(hosts)) as u32);
                net.start_flow(now, topo.path(s, d).resources(), 1 + rng.below(5_000), step);
            }
            6 => {
                let ids = net.flow_ids();
                if !ids.is_empty() {
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    net.cancel_flow(now, id);
                }
            }
            _ => {
                if let Some(t) = net.next_completion() {
                    now = t;
                    net.pop_completed(now);
                }
            }
        }
        for (id, want) in net.reference_rates() {
            let got = net.rate(id).expect("active");
            if want.is_finite() && got.is_finite() {
                let err = (got - want).abs() / want;
                worst = worst.max(err);
                assert!(err <= rel_tol, "seed {seed} step {step}: flow {id:?} rate {got}, max-min {want}");
            }
        }
    }
    worst
}

#[test]
fn incremental_with_zero_tolerance_is_exact_on_random_instances() {
    for seed in 0..200 {
        replay_against_reference(seed, Solver::Incremental { tolerance: 0.0 }, 1e-9);
    }
}

#[test]
fn incremental_with_zero_tolerance_is_exact_on_a_swarm() {
    // A swarm shaped like the main scenario, scaled down: 60 hosts in 4 racks behind 2:1 uplinks,
    // about 8 flows per host, random starts and completions. Checked every 25 events.
    let mut rng = Rng::new(7);
    let hosts = 60u32;
    let cap = 1_000u64;
    let spec = TopologySpec {
        hosts: (0..hosts)
            .map(|h| HostSpec { rack: Some(h % 4), ..host(cap + rng.below(cap), cap + rng.below(cap)) })
            .collect(),
        racks: (0..4).map(|_| group(15 * cap / 2, 15 * cap / 2, 0)).collect(),
        ..TopologySpec::default()
    };
    let topo = spec.build().expect("valid");
    let mut net = Network::new(&topo.capacities(), Solver::Incremental { tolerance: 0.0 });
    let mut now = T0;
    for step in 0..2_000u64 {
        if net.active_flows() < 480 {
            let (s, d) = (rng.below(u64::from(hosts)) as u32, rng.below(u64::from(hosts)) as u32);
            net.start_flow(now, topo.path(s, d).resources(), 100 + rng.below(2_000), step);
        } else if let Some(t) = net.next_completion() {
            now = t;
            net.pop_completed(now);
        }
        if step % 25 == 0 {
            assert_eq!(net.unbottlenecked_flows(1e-9), Vec::new(), "step {step}: a flow lost its bottleneck");
            for (id, want) in net.reference_rates() {
                let got = net.rate(id).expect("active");
                if want.is_finite() {
                    assert!(
                        (got - want).abs() <= 1e-9 * want,
                        "step {step}: {id:?} rate {got}, max-min {want}"
                    );
                }
            }
        }
    }
}

/// Hosts of equal capacity in racks of `rack_hosts`, racks in pods of two, behind uplinks and
/// downlinks oversubscribed `oversub`:1 (rack) and 2:1 (pod): the shape of `racks-2600` scaled
/// down, where every link saturates at nearly the same level and a rate change spreads from link
/// to link.
fn oversubscribed_racks(hosts: u32, rack_hosts: u32, oversub: u64, cap: u64) -> Topology {
    let racks = hosts.div_ceil(rack_hosts);
    let pods = racks.div_ceil(2);
    let rack_link = u64::from(rack_hosts) * cap / oversub;
    let spec = TopologySpec {
        hosts: (0..hosts)
            .map(|h| HostSpec { rack: Some(h / rack_hosts), pod: Some(h / rack_hosts / 2), ..host(cap, cap) })
            .collect(),
        racks: (0..racks).map(|_| group(rack_link, rack_link, 0)).collect(),
        pods: (0..pods).map(|_| group(rack_link, rack_link, 0)).collect(),
        ..TopologySpec::default()
    };
    spec.build().expect("valid")
}

/// Random churn on oversubscribed racks: starts between random hosts (some back to back on a
/// live flow), cancellations and completions, keeping about `per_host` flows per host. Every
/// `check_every` events, each rate is compared with the exact max-min rate. Returns the largest
/// relative error.
fn churn_on_racks(seed: u64, solver: Solver, rel_tol: f64, check_every: u64) -> f64 {
    churn_on_racks_checked(seed, solver, rel_tol, |_, step| step % check_every == 0).0
}

/// [`churn_on_racks`], comparing rates after each event for which `check(net, event)` holds.
/// Returns the largest relative error and the number of checks.
fn churn_on_racks_checked(
    seed: u64,
    solver: Solver,
    rel_tol: f64,
    check: impl Fn(&Network, u64) -> bool,
) -> (f64, u64) {
    let mut rng = Rng::new(seed);
    let rack_hosts = 4 + rng.below(5) as u32;
    let hosts = rack_hosts * (2 + rng.below(5) as u32);
    let topo = oversubscribed_racks(hosts, rack_hosts, 2 + rng.below(4), 1_000);
    let mut net = Network::new(&topo.capacities(), solver);
    let target = hosts as usize * (1 + rng.below(4) as usize);
    let mut now = T0;
    let mut worst: f64 = 0.0;
    let mut checks = 0;
    for step in 0..600u64 {
        if net.active_flows() < target && rng.below(4) != 0 {
            let (s, d) = (rng.below(u64::from(hosts)) as u32, rng.below(u64::from(hosts)) as u32);
            net.start_flow(now, topo.path(s, d).resources(), 500 + rng.below(5_000), step);
        } else if rng.below(8) == 0 {
            let ids = net.flow_ids();
            if !ids.is_empty() {
                let id = ids[rng.below(ids.len() as u64) as usize];
                if rng.below(2) == 0 {
                    net.cancel_flow(now, id);
                } else {
                    net.append(id, 1 + rng.below(3_000), step);
                }
            }
        } else if let Some(t) = net.next_completion() {
            now = t;
            while net.pop_completed(now).is_some() {}
        }
        if check(&net, step) {
            checks += 1;
            for (id, want) in net.reference_rates() {
                let got = net.rate(id).expect("active");
                if want.is_finite() && got.is_finite() {
                    let err = (got - want).abs() / want;
                    worst = worst.max(err);
                    assert!(
                        err <= rel_tol,
                        "seed {seed} step {step}: flow {id:?} rate {got}, max-min {want}"
                    );
                }
            }
        }
    }
    (worst, checks)
}

#[test]
fn incremental_with_zero_tolerance_is_exact_on_oversubscribed_racks() {
    // Equal host capacities make many flows tie; seed 84 once caught a trigger that left flows a
    // hair (1e-9) faster than their peers, which hid their shared bottleneck from the next event.
    for seed in 0..100 {
        churn_on_racks(seed, Solver::Incremental { tolerance: 0.0 }, 1e-9, 2);
    }
}

#[test]
fn default_incremental_stays_within_tolerance_on_oversubscribed_racks() {
    let mut worst: f64 = 0.0;
    for seed in 0..100 {
        worst = worst.max(churn_on_racks(seed, Solver::default(), 3.0 * Solver::DEFAULT_TOLERANCE, 2));
    }
    eprintln!("worst relative rate error at the default tolerance on racks: {worst:e}");
}

#[test]
fn full_solver_matches_its_reference() {
    for seed in 0..50 {
        replay_against_reference(seed, Solver::Full, 1e-9);
    }
}

#[test]
fn default_incremental_stays_within_tolerance_on_random_instances() {
    // Imbalances below the tolerance are left in place and add up a little across events; the
    // worst measured at scale is about twice the tolerance (see `Solver::DEFAULT_TOLERANCE`).
    let mut worst: f64 = 0.0;
    for seed in 0..200 {
        worst = worst.max(replay_against_reference(seed, Solver::default(), 3.0 * Solver::DEFAULT_TOLERANCE));
    }
    eprintln!("worst relative rate error at the default tolerance: {worst:e}");
}

#[test]
fn same_inputs_give_identical_outputs() {
    let run = || {
        let mut rng = Rng::new(42);
        let topo = random_topology(&mut rng, 12);
        let mut net = Network::new(&topo.capacities(), Solver::default());
        let mut log = Vec::new();
        let mut now = T0;
        for i in 0..500u64 {
            if rng.below(2) == 0 {
                let (s, d) = (rng.below(12) as u32, rng.below(12) as u32);
                net.start_flow(now, topo.path(s, d).resources(), 1 + rng.below(10_000), i);
            } else if let Some(t) = net.next_completion() {
                now = t;
                let c = net.pop_completed(now).expect("due");
                log.push((c.id, c.token, c.at, net.bytes_moved(now).to_bits()));
            }
        }
        log
    };
    assert_eq!(run(), run());
}

// ---------------------------------------------------------------------------------------------
// Segments: a connection's back-to-back messages as one flow

#[test]
fn appended_segments_complete_back_to_back_without_resolving() {
    for solver in SOLVERS {
        let topo = TopologySpec::flat(3, 100, 100, Duration::ZERO).build().unwrap();
        let mut net = Network::new(&topo.capacities(), solver);
        let a = net.start_flow(T0, topo.path(0, 1).resources(), 100, 1);
        // Segments appended: 50 B then 25 B, after the first 100 B.
        assert!(net.append(a, 50, 2));
        assert!(net.append(a, 25, 3));
        let solves = net.stats().solves;
        let t = net.next_completion().unwrap();
        assert_eq!(t, at_secs(1.0));
        let first = net.pop_completed(t).unwrap();
        assert_eq!(first.token, 1);
        assert_eq!(net.stats().solves, solves, "a segment boundary changes no rate");
        let b = net.start_flow(at_secs(1.5), topo.path(2, 1).resources(), 50, 9);
        assert_rate(&net, a, 50.0);
        assert_rate(&net, b, 50.0);
        // Segment 2: 50 B at 100 B/s from 1.0 s, done exactly when b starts.
        let rest = drain(&mut net);
        let tokens: Vec<u64> = rest.iter().map(|r| r.0).collect();
        assert_eq!(tokens, vec![2, 3, 9]);
        assert_ns(rest[0].1, 1_500_000_000);
        // Segment 3 (25 B) at 50 B/s: done at 2.0 s; b has 25 B left then, alone at 100 B/s: 2.25 s.
        assert_ns(rest[1].1, 2_000_000_000);
        assert_ns(rest[2].1, 2_250_000_000);
        assert!(!net.append(a, 1, 4), "a finished flow takes no more segments");
    }
}

// ---------------------------------------------------------------------------------------------
// The stepped solver

fn stepped(step_ms: f64, tolerance: f64) -> Solver {
    Solver::Stepped { step: Duration::from_secs_f64(step_ms / 1e3), tolerance }
}

#[test]
fn stepped_solver_rates_a_new_flow_at_the_next_step() {
    let mut net = raw(&[100], stepped(1.0, 0.0));
    let id = net.start_flow(at_secs(0.0003), &[r(0)], 1_000, 1);
    assert_eq!(net.rate(id), Some(0.0), "no rate before the step");
    assert_eq!(net.pending_solve(), Some(at_secs(0.001)));
    assert_eq!(net.next_completion(), Some(at_secs(0.001)), "the engine is woken for the solve");
    assert!(net.pop_completed(at_secs(0.001)).is_none(), "the solve completes nothing");
    assert_eq!(net.pending_solve(), None);
    assert_rate(&net, id, 100.0);
    assert_eq!(drain(&mut net), vec![(1, 10_001_000_000)]);
}

#[test]
fn stepped_solver_frees_capacity_at_the_next_step() {
    // Two flows share 100 B/s; the short one ends at 2 s, between steps of 0.3 s: the long one
    // keeps 50 B/s until 2.1 s (105 B sent), then sends its last 895 B at 100 B/s.
    let mut net = raw(&[100], stepped(300.0, 0.0));
    net.start_flow(T0, &[r(0)], 100, 1);
    net.start_flow(T0, &[r(0)], 1_000, 2);
    assert_eq!(net.pending_solve(), Some(T0), "starts on a step boundary are solved at once");
    let done = drain(&mut net);
    assert_eq!(done.len(), 2);
    assert_ns(done[0].1, 2_000_000_000);
    assert_eq!(done[0].0, 1);
    assert_ns(done[1].1, 11_050_000_000);
}

#[test]
fn stepped_solver_with_zero_tolerance_is_max_min_after_every_solve() {
    // Random churn on oversubscribed racks; events land between steps and wait for the next one,
    // so each solve starts from the changes of many events at once. Whenever no solve is waiting,
    // every rate must be the exact max-min rate.
    let mut checks = 0;
    for seed in 0..100u64 {
        let step_ms = 50.0 + (seed * 37 % 500) as f64;
        checks +=
            churn_on_racks_checked(seed, stepped(step_ms, 0.0), 1e-9, |net, _| net.pending_solve().is_none())
                .1;
    }
    assert!(checks > 10_000, "only {checks} checks ran: the churn rarely left the solver idle");
}
