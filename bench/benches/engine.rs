//! The discrete-event engine end to end, on the scenarios the gate pins: `smoke-40` (small) and
//! `kraken-2600` at 200 hosts (medium). Reported twice, as events per second and as piece transfers
//! per second (both counts are deterministic for a scenario and seed, so they are measured once up
//! front).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use shoal_bench::repo_path;
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::scenario::Scenario;
use std::hint::black_box;
use std::time::Duration;

fn run(s: &Scenario) -> (u64, u64) {
    let mut e = Engine::new(s, RunOptions::default()).expect("valid scenario");
    e.run();
    let perf = e.report("des", 1.0).perf;
    (perf.events, perf.piece_transfers)
}

fn engine(c: &mut Criterion) {
    let scenarios = [
        ("smoke-40", "scenarios/smoke-40.toml", &[][..]),
        ("kraken-200", "scenarios/kraken-2600.toml", &["topology.hosts=200"][..]),
    ];
    let loaded: Vec<(&str, Scenario, (u64, u64))> = scenarios
        .iter()
        .map(|(name, path, sets)| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let s = Scenario::load_with_sets(repo_path(path), &sets).expect("scenario loads");
            let counts = run(&s);
            (*name, s, counts)
        })
        .collect();
    for (unit, pick) in [("events", 0usize), ("piece_transfers", 1)] {
        let mut group = c.benchmark_group(format!("engine_{unit}"));
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for (name, s, counts) in &loaded {
            let n = if pick == 0 { counts.0 } else { counts.1 };
            group.throughput(Throughput::Elements(n));
            group.bench_with_input(BenchmarkId::new("des", name), s, |b, s| b.iter(|| black_box(run(s))));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = engine
}
criterion_main!(benches);
