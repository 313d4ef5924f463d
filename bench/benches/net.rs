//! The network model's rate update under churn: a 300-host flat topology (Kraken's benchmark links:
//! 10 Gbit/s up, 300 MB/s down) with a fixed number of concurrent 4 MiB flows between random hosts;
//! every step pops the next completion and starts a replacement, so each step re-solves max-min rates
//! twice. Throughput: completions (with their replacement start) per second.
//!
//! `net_churn_racks`: the shape of `scenarios/racks-2600.toml` scaled down — 400 hosts with 300 MB/s
//! up and down in racks of 40 behind 4:1 oversubscribed uplinks and downlinks (3 GB/s), 640
//! concurrent flows (1.6 per host, as in that run). Nearly every flow is held by a rack link at
//! about the same level, so one event re-solves hundreds of flows; under `incremental` (every event)
//! and `stepped-1ms` (`Solver::Stepped`: one solve per millisecond of model time over all its events).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_sim::net::{GroupSpec, Network, Solver, Topology, TopologySpec};
use std::hint::black_box;
use std::time::Duration;

const HOSTS: usize = 300;
const RACK_HOSTS: usize = 40;
const RACKED_HOSTS: usize = 400;
const PIECE: u64 = 4 << 20;
/// Completions per benchmark iteration.
const STEPS: u64 = 1_000;

struct Churn {
    topo: Topology,
    net: Network,
    rng: ChaCha8Rng,
    next_token: u64,
}

impl Churn {
    fn new(concurrent: usize, solver: Solver) -> Self {
        let topo = TopologySpec::flat(HOSTS, 1_250_000_000, 300_000_000, Duration::from_micros(200))
            .build()
            .expect("valid topology");
        Self::on(topo, concurrent, solver)
    }

    /// `RACKED_HOSTS` hosts in racks of `RACK_HOSTS` with 4:1 oversubscribed rack links.
    fn racks(concurrent: usize, solver: Solver) -> Self {
        let host = 300_000_000u64;
        let mut spec = TopologySpec::flat(RACKED_HOSTS, host, host, Duration::from_micros(200));
        let link = RACK_HOSTS as u64 * host / 4;
        spec.racks =
            vec![
                GroupSpec { uplink_bytes_per_s: link, downlink_bytes_per_s: link, ..GroupSpec::default() };
                RACKED_HOSTS / RACK_HOSTS
            ];
        for (h, host) in spec.hosts.iter_mut().enumerate() {
            host.rack = Some((h / RACK_HOSTS) as u32);
        }
        Self::on(spec.build().expect("valid topology"), concurrent, solver)
    }

    fn on(topo: Topology, concurrent: usize, solver: Solver) -> Self {
        let net = Network::new(&topo.capacities(), solver);
        let mut c = Churn { topo, net, rng: ChaCha8Rng::seed_from_u64(3), next_token: 0 };
        let now = c.net.now();
        for _ in 0..concurrent {
            c.start(now);
        }
        c
    }

    fn start(&mut self, now: shoal_sim::net::Instant) {
        let hosts = self.topo.host_count() as u32;
        let src = self.rng.random_range(0..hosts);
        let dst = (src + self.rng.random_range(1..hosts)) % hosts;
        let path = self.topo.path(src, dst);
        self.next_token += 1;
        self.net.start_flow(now, path.resources(), PIECE, self.next_token);
    }

    /// Pops the next completion and starts its replacement; with `Solver::Stepped` a wake-up may
    /// only run the deferred solve, then the next one is taken.
    fn step(&mut self) -> u64 {
        loop {
            let at = self.net.next_completion().expect("flows are active");
            if let Some(done) = self.net.pop_completed(at) {
                self.start(at);
                return done.token;
            }
        }
    }
}

fn net(c: &mut Criterion) {
    let mut group = c.benchmark_group("net_churn");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Elements(STEPS));
    for (solver_name, solver, flows) in [
        ("incremental", Solver::default(), &[300usize, 3_000][..]),
        // The exact reference solver, at the smaller load only: it re-solves every flow per event.
        ("full", Solver::Full, &[300][..]),
    ] {
        for &concurrent in flows {
            let mut churn = Churn::new(concurrent, solver);
            group.bench_function(
                BenchmarkId::new(solver_name, format!("{HOSTS}hosts/{concurrent}flows")),
                |b| {
                    b.iter(|| {
                        for _ in 0..STEPS {
                            black_box(churn.step());
                        }
                    })
                },
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("net_churn_racks");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Elements(STEPS));
    let concurrent = RACKED_HOSTS * 8 / 5;
    for (solver_name, solver) in
        [("incremental", Solver::default()), ("stepped-1ms", Solver::stepped(Duration::from_millis(1)))]
    {
        let mut churn = Churn::racks(concurrent, solver);
        group.bench_function(
            BenchmarkId::new(solver_name, format!("{RACKED_HOSTS}hosts/{concurrent}flows")),
            |b| {
                b.iter(|| {
                    for _ in 0..STEPS {
                        black_box(churn.step());
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = net
}
criterion_main!(benches);
