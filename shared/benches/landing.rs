//! Landing throughput: a 10,000-record Kinesis batch of 1 KiB JSON payloads (decode, group,
//! encode, compress) beside the compressor alone on the same payload bytes, in the same run.
//! Run with `make bench`; results are in BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

mod common;

fn landing(c: &mut Criterion) {
    let (event, payloads) = common::kinesis_event();
    let payload_bytes: usize = payloads.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("kinesis_10k_x_1KiB");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload_bytes as u64));
    group.bench_function("land (decode+encode+gzip)", |b| {
        b.iter(|| black_box(common::land(black_box(&event))))
    });
    group.bench_function("gzip only (same payload bytes)", |b| {
        b.iter(|| black_box(common::gzip_only(black_box(&payloads))))
    });
    group.finish();
}

criterion_group!(benches, landing);
criterion_main!(benches);
