//! Runner throughput on a Kafka backlog (issue 5), against a consume-only baseline.
//!
//! One tansu broker, one topic with 4 partitions, `BENCH_MESSAGES` (default 1,000,000) small
//! messages produced up front (the test harness's `Tansu::produce_batched`: key `k<n>`, payload
//! `{"n":<n>,"pad":"xx.."}`, one header). Then, in the same run and on the same topic:
//!
//! 1. consume-only: an rdkafka `BaseConsumer` (the runner's crate and librdkafka) in a fresh
//!    group reads every message from the beginning, copying key, payload and headers into
//!    owned vectors as the runner's `to_record` does, and drops them;
//! 2. runner: `streaming-connector run` (the bench-profile build) in another fresh group
//!    lands every message into Bronze objects on the local stack (moto) and commits them;
//!    the clock stops when the DynamoDB checkpoints cover all messages.
//!
//! Needs tansu (`scripts/brokers.sh`) and moto at `AWS_ENDPOINT_URL`.
//! Run: `cargo bench -p streaming-connector --bench kafka_backlog`. Settings (environment):
//! `BENCH_MESSAGES` [1000000], `BENCH_BATCH` messages per produced record batch [1],
//! `BENCH_PAD` extra payload bytes per message [100],
//! `BENCH_BUFFER_MIB` the runner's buffer cap [4], `BENCH_TIMEOUT_S` [1800].

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{
    RunnerProc, Tansu, committed, connector_yaml, cpu_secs, env_u64, find_pid, get, machine, metric,
};
use integration_tests::Stack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
/// Group timings for both readers: generous, so a slow broker response is not a rebalance.
const SESSION_TIMEOUT_MS: &str = "30000";
const HEARTBEAT_MS: &str = "3000";

/// The runner's memory bound for this bench: `BENCH_BUFFER_MIB`, 4 MiB unless set (librdkafka's
/// prefetch queue is a quarter of it, at least 1 MiB). With 32 MiB (an 8 MiB queue) tansu 0.6
/// served one partition at a time and the consumer lost its assignment after 152,178 messages.
fn buffer_max_bytes() -> u64 {
    env_u64("BENCH_BUFFER_MIB", 4) << 20
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
    /// Messages delivered again at an offset already read (tansu 0.6 sends a partition back
    /// to its start at times), not counted as read.
    redelivered: u64,
    /// Times a partition went back to an offset already read.
    rewinds: u64,
}

/// Reads the `n` messages of `topic` (offsets `0..` in each partition, round-robin) from the
/// beginning in a fresh group, each once: a message at an offset below the partition's next
/// one is a redelivery and is skipped, as the runner skips it.
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
        // The same prefetch cap the runner derives from its buffer.
        .set(
            "queued.max.messages.kbytes",
            (buffer_max_bytes() / 4 / 1024)
                .clamp(1024, 65_536)
                .to_string(),
        )
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", HEARTBEAT_MS)
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut read = 0u64;
    let mut payload_bytes = 0u64;
    let mut first = None;
    let deadline = started + Duration::from_secs(env_u64("BENCH_TIMEOUT_S", 1800));
    let stall = Duration::from_secs(env_u64("BENCH_STALL_S", 60));
    let mut per_partition = [0u64; PARTITIONS as usize];
    let mut next_offset = [0i64; PARTITIONS as usize];
    let mut in_rewind = [false; PARTITIONS as usize];
    let (mut redelivered, mut rewinds) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    while read < n {
        if Instant::now() > deadline {
            bail!("consume-only read {read} of {n} before the timeout");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "consume-only: {read} read after {:.0} s, per partition {per_partition:?}, \
                 {redelivered} redelivered in {rewinds} rewinds",
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
                if m.offset() < next_offset[p] {
                    redelivered += 1;
                    if !in_rewind[p] {
                        in_rewind[p] = true;
                        rewinds += 1;
                    }
                    continue;
                }
                in_rewind[p] = false;
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
        redelivered,
        rewinds,
    })
}

fn runner_section(bootstrap: &str, group: &str, topic: &str) -> String {
    let buffer = buffer_max_bytes();
    // The runner requires a file to fit in half of the buffer.
    let file_bytes = (buffer / 2).min(16 << 20);
    format!(
        r#"  kafka:
    bootstrap_servers: {bootstrap}
    group_id: {group}
    topics: [{topic}]
    properties: {{session.timeout.ms: "{SESSION_TIMEOUT_MS}", heartbeat.interval.ms: "{HEARTBEAT_MS}"}}
  buffer: {{max_bytes: {buffer}}}
  files: {{max_records: 50000, max_bytes: {file_bytes}, max_latency_ms: 2000}}
  concurrency: {{max: 8}}
  http: {{bind: 127.0.0.1, port: 0}}
  shutdown_timeout_ms: 20000
"#
    )
}

/// CPU seconds of the bench itself, the broker and moto (where known).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    broker: f64,
    moto: f64,
}

fn cpu(broker: Option<u32>, moto: Option<u32>) -> Cpu {
    Cpu {
        bench: cpu_secs(std::process::id()).unwrap_or(0.0),
        broker: broker.and_then(cpu_secs).unwrap_or(0.0),
        moto: moto.and_then(cpu_secs).unwrap_or(0.0),
    }
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
    // Messages per produced record batch. 1 by default (tansu 0.6 skips the rest of a batch
    // when a fetch starts inside it, which the runner's pause and resume can do); more makes
    // tansu serve the fetches faster, with a buffer large enough that the runner never pauses.
    let batch = env_u64("BENCH_BATCH", 1) as usize;
    // Extra payload bytes per message: about 120-byte JSON payloads by default.
    let pad = env_u64("BENCH_PAD", 100) as usize;
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
    let broker_port = broker.bootstrap.rsplit(':').next().unwrap_or_default();
    let broker_pid = find_pid(&["tansu", &format!("tcp://127.0.0.1:{broker_port} ")]);
    let moto_pid = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .and_then(|u| {
            u.rsplit(':')
                .next()
                .map(|p| p.trim_end_matches('/').to_owned())
        })
        .and_then(|port| find_pid(&["moto_server", &format!("-p {port}")]));

    let t = Instant::now();
    broker
        .produce_batched(&topic, PARTITIONS, 0, n, pad, batch)
        .await?;
    let produce = t.elapsed();
    // `{"n":<n>}`, or `{"n":<n>,"pad":"<pad x>"}` (the harness's producer).
    let pad_bytes = if pad == 0 { 0 } else { pad as u64 + 9 };
    let payload_bytes: u64 = (0..n)
        .map(|i| format!("{{\"n\":{i}}}").len() as u64 + pad_bytes)
        .sum();
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
    let cpu_before = cpu(broker_pid, moto_pid);
    let consume =
        tokio::task::spawn_blocking(move || consume_only(&bootstrap, &topic2, n)).await??;
    let cpu_consume = cpu(broker_pid, moto_pid);
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
    // The runner's own account of what it holds, sampled from /metrics every half second.
    let mut peak_buffered = 0;
    let mut last_scrape = Instant::now();
    loop {
        let done = committed(&stack, &topic, PARTITIONS).await;
        peak_rss = peak_rss.max(runner.peak_rss_kib().unwrap_or(0));
        if last_scrape.elapsed() >= Duration::from_millis(500) {
            last_scrape = Instant::now();
            if let Some(addr) = runner.http_address() {
                let (_, page) = get(&addr, "/metrics");
                peak_buffered = peak_buffered.max(metric(&page, "bronze_buffered_bytes"));
            }
        }
        if done > 0 {
            first_commit.get_or_insert_with(|| started.elapsed());
        }
        if done == n {
            break;
        }
        if done > n {
            bail!("{done} records committed, more than the {n} produced");
        }
        if let Some(status) = runner.exited()? {
            bail!(
                "the runner exited ({status}) with {done} of {n} committed:\n{}",
                runner.log()
            );
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
    let cpu_runner_phase = cpu(broker_pid, moto_pid);
    let runner_cpu = cpu_secs(runner.pid()).unwrap_or(0.0);
    peak_rss = peak_rss.max(runner.peak_rss_kib().context("runner peak RSS")?);
    let pauses = runner
        .http_address()
        .map(|addr| metric(&get(&addr, "/metrics").1, "bronze_buffer_pauses_total"))
        .unwrap_or(0);
    let status = runner.terminate(Duration::from_secs(60))?;
    if !status.success() {
        bail!("runner exit {status:?}:\n{}", runner.log());
    }
    // The checkpoints say how far each partition got; the commit log says what landed. Every
    // message must be in a committed object (none is poison here), with its payload.
    let (mut files, mut landed_records, mut landed_payload) = (0, 0, 0);
    for p in 0..PARTITIONS {
        for entry in stack
            .commit_log(bronze::record::Source::Kafka, &topic, &p.to_string())
            .await
        {
            files += 1;
            landed_records += entry.records + entry.dead_lettered;
            landed_payload += entry.payload_bytes;
        }
    }
    if (landed_records, landed_payload) != (n, payload_bytes) {
        bail!(
            "the commit log covers {landed_records} records and {landed_payload} payload \
             bytes, expected {n} and {payload_bytes}"
        );
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
        "produce            : {:.2} s ({:.0} msg/s, batch.num.messages={batch})",
        produce.as_secs_f64(),
        rate(n, produce)
    );
    println!("runner buffer      : {} MiB", buffer_max_bytes() >> 20);
    println!(
        "consume-only       : {:.2} s, {:.0} records/s, {:.3} MB/s payload (first message at {:.2} s)",
        consume.total.as_secs_f64(),
        rate(n, consume.total),
        mb_s(payload_bytes, consume.total),
        consume.first.as_secs_f64()
    );
    println!(
        "  redelivered       : {} messages in {} rewinds to an offset already read (skipped)",
        consume.redelivered, consume.rewinds
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
    println!(
        "runner buffer use  : peak {:.1} MiB sampled (bronze_buffered_bytes), {pauses} pauses",
        peak_buffered as f64 / f64::from(1 << 20)
    );
    println!(
        "CPU s, consume-only: consumer {:.1}, broker {:.1}",
        cpu_consume.bench - cpu_before.bench,
        cpu_consume.broker - cpu_before.broker,
    );
    println!(
        "CPU s, runner      : runner {runner_cpu:.1}, broker {:.1}, moto {}, bench polling {:.1}",
        cpu_runner_phase.broker - cpu_consume.broker,
        if moto_pid.is_some() {
            format!("{:.1}", cpu_runner_phase.moto - cpu_consume.moto)
        } else {
            "(not found)".to_owned()
        },
        cpu_runner_phase.bench - cpu_consume.bench,
    );
    println!(
        "files committed    : {files} (commit-log entries over {PARTITIONS} partitions), \
         {landed_records} records and {landed_payload} payload bytes, as produced"
    );
    Ok(())
}
