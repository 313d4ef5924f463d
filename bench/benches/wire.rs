//! Kraken's wire format: encoding and decoding the messages an agent sends most (handshakes,
//! requests, payload headers), in bytes per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_bench::{handshake, payload_header, request};
use shoal_protocols::wire::{Decoder, DecoderLimits, encode};
use std::hint::black_box;
use std::time::Duration;

fn wire(c: &mut Criterion) {
    let messages = [("handshake", handshake()), ("request", request()), ("payload_header", payload_header())];
    let mut group = c.benchmark_group("wire");
    for (name, msg) in &messages {
        let mut frame = Vec::new();
        encode(msg, &mut frame).expect("encodable");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), msg, |b, msg| {
            let mut out = Vec::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                encode(black_box(msg), &mut out).expect("encodable");
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, frame| {
            let mut decoder = Decoder::new(DecoderLimits::default());
            b.iter(|| {
                decoder.feed(black_box(frame));
                black_box(decoder.next_message().expect("valid").expect("whole frame"))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = wire
}
criterion_main!(benches);
