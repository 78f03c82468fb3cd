//! The cost of KPL deaggregation per user record (issue 11).
//!
//! User records like the runner benchmark's (`{"n":..,"k":"k..","pad":"xx.."}`, about 130
//! bytes, keys `k<n % 97>`), aggregated by `bronze::sources::kpl::aggregate` (the KPL format:
//! magic, protobuf, MD5; the integration tests check the same decoder against AWS's
//! `aws-kinesis-agg`). Throughput is in user records, so criterion's time per element is the
//! cost per user record.
//!
//! - `kpl deaggregate`: `kpl::deaggregate` alone (MD5 check, protobuf decode, one
//!   `UserRecord` per user record), for aggregates of 10, 100 and 1,000 user records.
//! - `records_of`: what the Lambda function and the runner do per Kinesis record
//!   (`bronze::sources::kinesis::records_of`: landed records with cursor, key and
//!   explicit-hash-key header): 100 user records as one aggregate, against the same 100 as
//!   plain Kinesis records. The difference is what aggregation adds per user record.
//!
//! Run: `cargo bench -p bronze-shared --bench kpl` (`make bench` runs it after the landing
//! benchmark).

use bronze::cursor::{Cursor as _, SequenceNumber};
use bronze::sources::{kinesis, kpl};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn user_records(count: u64) -> Vec<kpl::UserRecord> {
    let pad = "x".repeat(100);
    (0..count)
        .map(|n| kpl::UserRecord {
            partition_key: format!("k{}", n % 97),
            explicit_hash_key: None,
            data: format!("{{\"n\":{n},\"k\":\"k{}\",\"pad\":\"{pad}\"}}", n % 97).into_bytes(),
        })
        .collect()
}

fn sequence() -> SequenceNumber {
    SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap()
}

fn deaggregation(c: &mut Criterion) {
    let mut group = c.benchmark_group("kpl deaggregate");
    for size in [10u64, 100, 1_000] {
        let aggregate = kpl::aggregate(&user_records(size));
        group.throughput(Throughput::Elements(size));
        group.bench_function(
            format!("aggregate of {size} ({} bytes)", aggregate.len()),
            |b| {
                b.iter_batched(
                    || aggregate.clone(),
                    |data| black_box(kpl::deaggregate(data)),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();

    let users = user_records(100);
    let aggregate = kpl::aggregate(&users);
    let mut group = c.benchmark_group("records_of");
    group.throughput(Throughput::Elements(users.len() as u64));
    group.bench_function("100 user records in one aggregate", |b| {
        b.iter_batched(
            || (sequence(), aggregate.clone()),
            |(sequence, data)| {
                black_box(kinesis::records_of(
                    sequence,
                    "k0".to_owned(),
                    data,
                    Some(1_764_201_600_250),
                ))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("100 plain records", |b| {
        b.iter_batched(
            || {
                users
                    .iter()
                    .map(|u| (sequence(), u.clone()))
                    .collect::<Vec<_>>()
            },
            |records| {
                for (sequence, user) in records {
                    black_box(kinesis::records_of(
                        sequence,
                        user.partition_key,
                        user.data,
                        Some(1_764_201_600_250),
                    ));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, deaggregation);
criterion_main!(benches);
