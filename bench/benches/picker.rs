//! Piece pickers over a 750-piece torrent: Kraken's rarest-first heap and its reservoir sampling,
//! choosing a pipeline's worth (3) of pieces for one peer. Throughput: selections per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_bench::{PIECES, half_bitfield};
use shoal_protocols::Bitfield;
use shoal_protocols::peer::picker::{PiecePicker, RarestFirstPicker, ReservoirPicker, Selection};
use std::hint::black_box;
use std::time::Duration;

fn picker(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // The remote has every piece; we have every other one: 375 candidates.
    let remote = Bitfield::full(PIECES);
    let own = half_bitfield(PIECES);
    let counts: Vec<u32> = (0..PIECES).map(|_| rng.random_range(0..10)).collect();
    let sel = Selection { remote: &remote, own: &own, num_peers_by_piece: &counts, quota: 3 };
    let mut group = c.benchmark_group("picker");
    group.throughput(Throughput::Elements(1));
    let pickers: [(&str, Box<dyn PiecePicker>); 2] =
        [("rarest_first", Box::new(RarestFirstPicker::default())), ("reservoir", Box::new(ReservoirPicker))];
    for (name, mut p) in pickers {
        group.bench_function(BenchmarkId::new(name, PIECES), |b| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            // A third of the candidates are already requested from other peers.
            b.iter(|| black_box(p.select(&mut rng, black_box(&sel), &mut |i| i % 3 != 0)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = picker
}
criterion_main!(benches);
