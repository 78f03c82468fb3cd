//! Landing throughput on one core: a 10,000-record Kinesis batch of 1 KiB JSON payloads
//! (decode, group, encode, compress) beside the encoders alone on the same payload bytes, in
//! the same run. Run with `make bench`; results are in BENCHMARKS.md.
//!
//! - `encoders/*`: each candidate encoder on the payloads (newline-separated, 10.2 MB), one
//!   thread; the output sizes are printed first, so levels can be compared at equal size.
//! - `land/*`: the landing core for gzip (the default) and zstd on a one-thread rayon pool
//!   (per core), and on the global pool (every core: members compress in parallel).

use bronze::compress::{Codec, Compression, compress_member};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

mod common;

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

fn landing(c: &mut Criterion) {
    let (event, payloads) = common::kinesis_event();
    let input = common::joined(&payloads);
    let payload_bytes: usize = payloads.iter().map(Vec::len).sum();
    let gzip = |level| Compression::new(Codec::Gzip, level).unwrap();
    let zstd = |level| Compression::new(Codec::Zstd, level).unwrap();
    let candidates: Vec<(String, Compression)> = [4, 5, 6, 9]
        .map(|l| (format!("libdeflate gzip {l}"), gzip(l)))
        .into_iter()
        .chain([1, 3].map(|l| (format!("zstd {l}"), zstd(l))))
        .collect();

    eprintln!("output bytes for {} input bytes:", input.len());
    for level in [6, 9] {
        eprintln!(
            "  zlib-rs gzip {level}: {} bytes",
            common::zlib_rs(&input, level)
        );
    }
    for (name, c) in &candidates {
        eprintln!("  {name}: {} bytes", compress_member(&input, *c).len());
    }
    let pool = one_thread();
    for (name, c) in [
        ("gzip 6", gzip(6)),
        ("zstd 3", zstd(3)),
        ("zstd 1", zstd(1)),
    ] {
        eprintln!(
            "  landed object, {name}: {} bytes",
            pool.install(|| common::land_with(&event, c)).1
        );
    }

    let mut group = c.benchmark_group("encoders");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload_bytes as u64));
    group.bench_function("zlib-rs gzip 6", |b| {
        b.iter(|| black_box(common::zlib_rs(black_box(&input), 6)))
    });
    for (name, c) in &candidates {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| black_box(compress_member(black_box(&input), *c)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("stages");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload_bytes as u64));
    group.bench_function("decode event into batches", |b| {
        b.iter(|| black_box(common::decode(black_box(&event))))
    });
    let batches = common::decode(&event);
    group.bench_function("encode lines (no compression)", |b| {
        b.iter(|| black_box(common::encode_lines(black_box(&batches))))
    });
    group.finish();

    let mut group = c.benchmark_group("land");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload_bytes as u64));
    for (name, c) in [
        ("gzip 6", gzip(6)),
        ("zstd 3", zstd(3)),
        ("zstd 1", zstd(1)),
    ] {
        group.bench_function(format!("{name}, 1 thread"), |b| {
            b.iter(|| pool.install(|| black_box(common::land_with(black_box(&event), c))))
        });
        group.bench_function(format!("{name}, all cores"), |b| {
            b.iter(|| black_box(common::land_with(black_box(&event), c)))
        });
    }
    group.finish();
}

criterion_group!(benches, landing);
criterion_main!(benches);
