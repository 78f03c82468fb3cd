//! Helpers for the tests of Kinesis in the runner (and the Lambda <-> runner move): streams on
//! moto, records produced as plain Kinesis records or KPL aggregates built by AWS's reference
//! aggregator (PyPI `aws-kinesis-agg`), what each shard holds as the connector must land it,
//! and the audit of what is committed against it.

#![allow(dead_code, unreachable_pub)]

use crate::common::RunnerProc;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use bronze::record::Source;
use integration_tests::Stack;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use streaming_connector::leases::{Lease, LeaseStore};

/// One produced Kinesis record: a plain record or a KPL aggregate of user records.
pub enum Produce {
    /// A plain record `{"n":n,"k":key}` under `key`.
    Plain { key: String, n: u64 },
    /// An aggregate (outer partition key `key`) of user records `(key, n)`.
    Aggregate {
        key: String,
        users: Vec<(String, u64)>,
    },
}

/// The payload of record `n`: `{"n":<n>,"k":"<key>"}`.
pub fn payload(n: u64, key: &str) -> Vec<u8> {
    format!("{{\"n\":{n},\"k\":\"{key}\"}}").into_bytes()
}

/// Builds KPL aggregates with AWS's reference aggregator.
pub fn aggregates(lists: &[Vec<(String, Vec<u8>)>]) -> Vec<Vec<u8>> {
    let lists: Vec<Vec<integration_tests::KplUserRecord>> = lists
        .iter()
        .map(|users| {
            users
                .iter()
                .map(|(pk, data)| (pk.clone(), None, data.clone()))
                .collect()
        })
        .collect();
    integration_tests::kpl_aggregates(&lists)
}

/// `count` user records numbered from `start`, keys `k<n % keys>`; every `every`-th group of
/// `size` records is one aggregate (every = 0: all plain).
pub fn plan(start: u64, count: u64, keys: u64, every: u64, size: u64) -> Vec<Produce> {
    let mut out = Vec::new();
    let mut n = start;
    let mut i = 0;
    while n < start + count {
        if every > 0 && i % every == 0 && n + size <= start + count {
            let users = (n..n + size)
                .map(|m| (format!("k{}", m % keys), m))
                .collect();
            out.push(Produce::Aggregate {
                key: format!("k{}", n % keys),
                users,
            });
            n += size;
        } else {
            out.push(Produce::Plain {
                key: format!("k{}", n % keys),
                n,
            });
            n += 1;
        }
        i += 1;
    }
    out
}

/// Puts `records` to `stream` in order (PutRecords, 500 at a time).
pub async fn produce(client: &Client, stream: &str, records: &[Produce]) {
    let lists: Vec<Vec<(String, Vec<u8>)>> = records
        .iter()
        .filter_map(|r| match r {
            Produce::Aggregate { users, .. } => Some(
                users
                    .iter()
                    .map(|(k, n)| (k.clone(), payload(*n, k)))
                    .collect(),
            ),
            Produce::Plain { .. } => None,
        })
        .collect();
    let mut built = aggregates(&lists).into_iter();
    let mut entries = Vec::new();
    for r in records {
        let (key, data) = match r {
            Produce::Plain { key, n } => (key.clone(), payload(*n, key)),
            Produce::Aggregate { key, .. } => (key.clone(), built.next().unwrap()),
        };
        entries.push(
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()
                .unwrap(),
        );
    }
    for batch in entries.chunks(500) {
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(batch.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count.unwrap_or(0), 0);
    }
}

/// CreateStream with `shards` shards.
pub async fn create_stream(client: &Client, stream: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream on the local stack");
}

/// ListShards.
pub async fn shards(client: &Client, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap_or_default()
}

/// Every Kinesis record of a shard, as GetRecords returns them, from its beginning.
pub async fn raw_records(
    client: &Client,
    stream: &str,
    shard: &str,
) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator;
    let mut out = Vec::new();
    while let Some(i) = it {
        let page = client.get_records().shard_iterator(i).send().await.unwrap();
        if page.records.is_empty() {
            break;
        }
        out.extend(page.records);
        it = page.next_shard_iterator;
    }
    out
}

/// What the shard holds, as the connector must land it: cursors (display form) and `n`s.
pub async fn expected(client: &Client, stream: &str, shard: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for r in raw_records(client, stream, shard).await {
        let (records, bad) = streaming_connector::kinesis::to_records(r).unwrap();
        assert!(bad.is_none());
        for r in records {
            let v: Value = serde_json::from_slice(r.payload.as_ref().unwrap()).unwrap();
            out.push((r.cursor.to_string(), v["n"].as_u64().unwrap()));
        }
    }
    out
}

/// The runner section for `stream` with short lease timings and small files.
pub fn runner_section(stream: &str, extra: &str) -> String {
    runner_section_with(stream, "{max_records: 500, max_latency_ms: 500}", extra)
}

/// The runner section for `stream` with `files` as the files setting.
pub fn runner_section_with(stream: &str, files: &str, extra: &str) -> String {
    format!(
        r#"  kinesis:
    streams: [{stream}]
    lease_duration_ms: 3000
    heartbeat_ms: 1000
    discovery_interval_ms: 1000
    poll_interval_ms: 200
  files: {files}
  http: {{bind: 127.0.0.1, port: 0}}
  shutdown_timeout_ms: 20000
{extra}"#
    )
}

/// The checkpoint a shard has when `want` (its records as [`expected`] lists them) is
/// landed: the last one's sortable cursor.
fn last_sortable(want: &[(String, u64)]) -> Option<String> {
    want.last().map(|(c, _)| {
        use bronze::cursor::Cursor as _;
        bronze::cursor::KinesisCursor::parse(c).unwrap().sortable()
    })
}

/// Waits until every shard's checkpoint is its last record. What the shards hold is read
/// once (the stream takes no more records meanwhile), then only the checkpoints are polled.
pub async fn wait_landed(
    stack: &Stack,
    client: &Client,
    stream: &str,
    timeout: Duration,
    runners: &[&RunnerProc],
) -> BTreeMap<String, Vec<(String, u64)>> {
    let deadline = Instant::now() + timeout;
    let mut all = BTreeMap::new();
    for s in shards(client, stream).await {
        let want = expected(client, stream, &s.shard_id).await;
        all.insert(s.shard_id.clone(), want);
    }
    loop {
        let mut behind = Vec::new();
        for (shard, want) in &all {
            let have = stack
                .checkpoint(Source::Kinesis, stream, shard)
                .await
                .map(|c| c.cursor);
            if have != last_sortable(want) {
                behind.push(format!("{shard}: {have:?}"));
            }
        }
        if behind.is_empty() {
            return all;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = runners.iter().map(|r| r.log()).collect();
            panic!(
                "not everything landed after {timeout:?} ({}); runner logs:\n{}",
                behind.join(", "),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every shard's committed lines are exactly what it holds, in order; every `n` of
/// `0..total` is landed once; nothing is dead-lettered.
pub async fn assert_exactly_once(
    stack: &Stack,
    stream: &str,
    expected: &BTreeMap<String, Vec<(String, u64)>>,
    total: u64,
) -> BTreeMap<String, Vec<Value>> {
    let mut seen = vec![0u32; total as usize];
    let mut lines_by_shard = BTreeMap::new();
    for (shard, want) in expected {
        let lines = stack.committed_lines(Source::Kinesis, stream, shard).await;
        let got: Vec<(String, u64)> = lines
            .iter()
            .map(|l| {
                (
                    l["cursor"].as_str().unwrap().to_owned(),
                    l["payload"]["n"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "shard {shard}: {} lines committed, {} in the shard",
            got.len(),
            want.len()
        );
        assert_eq!(
            &got, want,
            "shard {shard}: committed lines differ from the shard"
        );
        for (line, (_, n)) in lines.iter().zip(want) {
            assert_eq!(line["key"], line["payload"]["k"], "key of {n}");
            seen[*n as usize] += 1;
        }
        lines_by_shard.insert(shard.clone(), lines);
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|i| seen[*i] == 0).collect();
    let doubled: Vec<usize> = (0..seen.len()).filter(|i| seen[*i] > 1).collect();
    assert!(missing.is_empty(), "never landed: {missing:?}");
    assert!(doubled.is_empty(), "landed twice: {doubled:?}");
    assert!(stack.dead_letters().await.is_empty(), "nothing is poison");
    lines_by_shard
}

/// The shard leases of `stream`.
pub async fn leases(stack: &Stack, stream: &str) -> Vec<Lease> {
    LeaseStore::new(&stack.sdk, &stack.table)
        .list(stream)
        .await
        .unwrap()
}

/// `name` with a random suffix.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}
