//! Runner throughput on a Kafka backlog (issue 5), against a consume-only baseline.
//!
//! One tansu broker, one topic with 4 partitions, `BENCH_MESSAGES` (default 1,000,000) small
//! messages produced up front (the test harness's `Tansu::produce`: key `k<n>`, payload
//! `{"n":<n>}`, one header). Then, in the same run and on the same topic:
//!
//! 1. consume-only: an rdkafka `BaseConsumer` (the runner's crate and librdkafka) in a fresh
//!    group reads every message from the beginning, copying key, payload and headers into
//!    owned vectors as the runner's `to_record` does, and drops them;
//! 2. runner: `streaming-connector run` (the bench-profile build) in another fresh group
//!    lands every message into Bronze objects on the local stack (moto) and commits them;
//!    the clock stops when the DynamoDB checkpoints cover all messages.
//!
//! Needs tansu (`scripts/brokers.sh`) and moto at `AWS_ENDPOINT_URL`.
//! Run: `cargo bench -p streaming-connector --bench kafka_backlog`.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{RunnerProc, Tansu, committed, connector_yaml};
use integration_tests::Stack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
/// The runner's memory bound for this bench (32 MiB).
const BUFFER_MAX_BYTES: u64 = 32 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

/// What the runner's `to_record` copies out of a message.
#[derive(Debug)]
#[allow(dead_code)]
struct Owned {
    offset: i64,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
    payload: Option<Vec<u8>>,
}

#[derive(Debug)]
struct ConsumeOnly {
    total: Duration,
    first: Duration,
    payload_bytes: u64,
}

/// Reads `n` messages of `topic` from the beginning in a fresh group.
fn consume_only(bootstrap: &str, topic: &str, n: u64) -> Result<ConsumeOnly> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("bench-consume-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // The same prefetch cap the runner derives from its 32 MiB buffer.
        .set(
            "queued.max.messages.kbytes",
            (BUFFER_MAX_BYTES / 4 / 1024)
                .clamp(1024, 65_536)
                .to_string(),
        )
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut read = 0u64;
    let mut payload_bytes = 0u64;
    let mut first = None;
    let deadline = started + Duration::from_secs(env_u64("BENCH_TIMEOUT_S", 1800));
    let stall = Duration::from_secs(env_u64("BENCH_STALL_S", 60));
    let mut per_partition = [0u64; PARTITIONS as usize];
    let mut next_offset = [0i64; PARTITIONS as usize];
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    while read < n {
        if Instant::now() > deadline {
            bail!("consume-only read {read} of {n} before the timeout");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "consume-only: {read} read after {:.0} s, per partition {per_partition:?}, next offsets {next_offset:?}",
                started.elapsed().as_secs_f64()
            );
        }
        if last_progress.elapsed() > stall {
            bail!(
                "consume-only stalled for {stall:?} at {read} of {n}: per partition \
                 {per_partition:?}, next offsets {next_offset:?}, assignment {:?}",
                consumer.assignment()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consume-only: {e}"),
            Some(Ok(m)) => {
                first.get_or_insert_with(|| started.elapsed());
                last_progress = Instant::now();
                let p = m.partition() as usize;
                per_partition[p] += 1;
                next_offset[p] = m.offset() + 1;
                let owned = Owned {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis(),
                    payload: m.payload().map(<[u8]>::to_vec),
                };
                payload_bytes += owned.payload.as_ref().map_or(0, |p| p.len() as u64);
                drop(std::hint::black_box(owned));
                read += 1;
            }
        }
    }
    let total = started.elapsed();
    consumer.unsubscribe();
    Ok(ConsumeOnly {
        total,
        first: first.unwrap_or_default(),
        payload_bytes,
    })
}

fn runner_section(bootstrap: &str, group: &str, topic: &str) -> String {
    format!(
        r#"  kafka:
    bootstrap_servers: {bootstrap}
    group_id: {group}
    topics: [{topic}]
    properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
  buffer: {{max_bytes: {BUFFER_MAX_BYTES}}}
  files: {{max_records: 50000, max_bytes: 16777216, max_latency_ms: 2000}}
  concurrency: {{max: 8}}
  http: {{bind: 127.0.0.1, port: 0}}
  shutdown_timeout_ms: 20000
"#
    )
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cpus} CPUs (nproc), {model}")
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`. `cargo test --all-targets` runs bench targets too,
    // without it: a multi-minute measurement has no place there, so it only says so.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "kafka_backlog: a benchmark; run it with `cargo bench -p streaming-connector --bench kafka_backlog`"
        );
        return Ok(());
    }
    let n = env_u64("BENCH_MESSAGES", 1_000_000);
    let timeout = Duration::from_secs(env_u64("BENCH_TIMEOUT_S", 1800));
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    eprintln!("kafka_backlog: {n} messages over {PARTITIONS} partitions, librdkafka {librdkafka}");

    let stack = Stack::new().await?;
    let broker = Tansu::start()?;
    let topic = format!(
        "backlog-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    broker.create_topic(&topic, PARTITIONS).await?;

    let t = Instant::now();
    broker.produce(&topic, PARTITIONS, 0, n).await?;
    let produce = t.elapsed();
    let payload_bytes: u64 = (0..n).map(|i| format!("{{\"n\":{i}}}").len() as u64).sum();
    let key_header_bytes: u64 = (0..n)
        .map(|i| (format!("k{i}").len() + 1 + i.to_string().len()) as u64)
        .sum();
    eprintln!(
        "produced {n} in {:.1} s ({:.0} msg/s)",
        produce.as_secs_f64(),
        rate(n, produce)
    );

    let bootstrap = broker.bootstrap.clone();
    let topic2 = topic.clone();
    let consume =
        tokio::task::spawn_blocking(move || consume_only(&bootstrap, &topic2, n)).await??;
    if consume.payload_bytes != payload_bytes {
        bail!(
            "consume-only read {} payload bytes, expected {payload_bytes}",
            consume.payload_bytes
        );
    }
    eprintln!(
        "consume-only: {:.2} s ({:.0} records/s)",
        consume.total.as_secs_f64(),
        rate(n, consume.total)
    );

    let group = format!("bench-runner-{}", uuid::Uuid::new_v4().simple());
    let config = connector_yaml(&runner_section(&broker.bootstrap, &group, &topic));
    let started = Instant::now();
    let mut runner = RunnerProc::run(&stack, &config)?;
    let mut first_commit = None;
    let mut peak_rss = 0;
    loop {
        let done = committed(&stack, &topic, PARTITIONS).await;
        peak_rss = peak_rss.max(runner.peak_rss_kib().unwrap_or(0));
        if done > 0 {
            first_commit.get_or_insert_with(|| started.elapsed());
        }
        if done == n {
            break;
        }
        if done > n {
            bail!("{done} records committed, more than the {n} produced");
        }
        if started.elapsed() > timeout {
            bail!(
                "only {done} of {n} committed after {timeout:?}:\n{}",
                runner.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed = started.elapsed();
    peak_rss = peak_rss.max(runner.peak_rss_kib().context("runner peak RSS")?);
    let status = runner.terminate(Duration::from_secs(60))?;
    if !status.success() {
        bail!("runner exit {status:?}:\n{}", runner.log());
    }
    let mut files = 0;
    for p in 0..PARTITIONS {
        files += stack
            .commit_log(bronze::record::Source::Kafka, &topic, &p.to_string())
            .await
            .len();
    }

    let ratio = landed.as_secs_f64() / consume.total.as_secs_f64();
    println!();
    println!("== kafka_backlog (issue 5) ==");
    println!("machine            : {}", machine());
    println!(
        "runner binary      : {}",
        env!("CARGO_BIN_EXE_streaming-connector")
    );
    println!("librdkafka         : {librdkafka} (rdkafka 0.39)");
    println!("messages (N)       : {n} over {PARTITIONS} partitions");
    println!(
        "payload bytes      : {payload_bytes} ({:.1} B/message; keys+headers add {key_header_bytes})",
        payload_bytes as f64 / n as f64
    );
    println!(
        "produce            : {:.2} s ({:.0} msg/s, batch.num.messages=1)",
        produce.as_secs_f64(),
        rate(n, produce)
    );
    println!(
        "consume-only       : {:.2} s, {:.0} records/s, {:.3} MB/s payload (first message at {:.2} s)",
        consume.total.as_secs_f64(),
        rate(n, consume.total),
        mb_s(payload_bytes, consume.total),
        consume.first.as_secs_f64()
    );
    println!(
        "runner (committed) : {:.2} s, {:.0} records/s, {:.3} MB/s payload (first commit at {:.2} s)",
        landed.as_secs_f64(),
        rate(n, landed),
        mb_s(payload_bytes, landed),
        first_commit.unwrap_or_default().as_secs_f64()
    );
    println!("ratio runner/consume: {ratio:.2}x");
    println!("runner peak RSS    : {peak_rss} KiB (VmHWM before SIGTERM)");
    println!("files committed    : {files} (commit-log entries over {PARTITIONS} partitions)");
    Ok(())
}
