//! Runner throughput on a Kinesis backlog (issue 11), against a GetRecords-only loop.
//!
//! One stream on moto with `BENCH_SHARDS` (4) shards and `BENCH_RECORDS` (1,000,000) user
//! records produced up front: every second Kinesis record a KPL aggregate of `BENCH_AGG` (100)
//! user records built by AWS's reference aggregator (PyPI `aws-kinesis-agg`), the others plain
//! records; each user record is a JSON payload of about `BENCH_PAD` + 30 bytes under key
//! `k<n % 97>`. Then, in the same run and on the same stream:
//!
//! 1. GetRecords-only: a separate process (this binary re-run with `--get-records-loop`)
//!    reads every shard from TRIM_HORIZON with the runner's SDK configuration
//!    (`bronze::aws::sdk_config`) and the runner's reading rules (one task per shard,
//!    GetRecords with the runner's `Limit`, at most 5 calls per second per shard), turns each
//!    Kinesis record into records exactly as the runner does
//!    (`streaming_connector::kinesis::to_records`: KPL deaggregation, keys, cursors), and
//!    drops them; the clock stops when every shard's last record is read. It reports its own
//!    peak RSS (VmHWM).
//! 2. runner: `streaming-connector run` (the bench-profile build) with the stream in its
//!    `kinesis` section lands everything into Bronze objects on the same moto and commits; the
//!    clock stops when its `bronze_messages_total` (records landed and committed, read from
//!    `/metrics` every 50 ms) reaches the total. The bench then checks that every shard's
//!    DynamoDB checkpoint is its last user record, and the commit log: its records and
//!    payload bytes must equal what was produced.
//! 3. GetRecords-only again (moto now also holds the landed objects); the ratio is the
//!    runner's records/s over the faster loop's.
//!
//! Needs moto at `AWS_ENDPOINT_URL` and the virtualenv (`make venv`) for `aws-kinesis-agg`.
//! With `BENCH_KINESIS_ENDPOINT` set, the stream lives on a second moto at that address
//! (the producer, both loops and the runner reach it there; the runner and the loop through
//! the SDK's `AWS_ENDPOINT_URL_KINESIS`), and S3 and DynamoDB stay at `AWS_ENDPOINT_URL`:
//! on AWS the stream is not served by the process that serves the runner's objects and
//! commits, while one moto is a single Python thread serving all three. moto's CPU is then
//! reported per process.
//! Run: `make bench-runner-kinesis` (which starts the second moto on `KINESIS_MOTO_PORT`,
//! 5057, and stops it afterwards; with `BENCH_KINESIS_ENDPOINT=` set empty the bench uses one
//! moto all the same), or `cargo bench -p
//! streaming-connector --bench kinesis_backlog`. Settings (environment): `BENCH_RECORDS` [1000000], `BENCH_SHARDS` [4],
//! `BENCH_AGG` user records per aggregate [100], `BENCH_PAD` [100], `BENCH_LIMIT` the
//! GetRecords `Limit` of both readers (the runner's `kinesis.max_records`) [500],
//! `BENCH_BUFFER_MIB` the runner's buffer [256, the runner's default], `BENCH_LATENCY_MS` the runner's
//! `files.max_latency_ms` [2000, as in the Kafka bench], `BENCH_COMPRESSION`
//! `<codec>:<level>` of the Bronze objects [the connector's default, gzip 6],
//! `BENCH_TIMEOUT_S` [900].
//!
//! `BENCH_LIMIT`: moto answers a GetRecords with up to `Limit` records whatever their size,
//! while AWS stops at 10 MB per call. 500 records of the default aggregates (13 KB each) are
//! about 6.5 MB a call, as on AWS; at 10,000 moto returns a whole shard (33 MB) in one answer,
//! which no Kinesis stream does.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use bronze::cursor::{Cursor, KinesisCursor, SequenceNumber};
use bronze::record::Source;
use common::{RunnerProc, connector_yaml, cpu_secs, env_u64, find_pid, machine};
use integration_tests::Stack;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// At most 5 GetRecords per second per shard, as the runner reads.
const MIN_GAP: Duration = Duration::from_millis(200);

fn payload(n: u64, pad: &str) -> Vec<u8> {
    format!("{{\"n\":{n},\"k\":\"k{}\",\"pad\":\"{pad}\"}}", n % 97).into_bytes()
}

/// What was produced to one shard.
#[derive(Debug, Default, Clone)]
struct ShardLoad {
    /// The last Kinesis record's sequence number and, for an aggregate, its last user
    /// record's sub-sequence number.
    last: Option<KinesisCursor>,
    kinesis_records: u64,
    user_records: u64,
}

/// Produces the backlog. Returns what each shard holds and the payload bytes of all user
/// records.
async fn produce(
    client: &Client,
    stream: &str,
    n: u64,
    agg: u64,
    pad: usize,
) -> Result<(BTreeMap<String, ShardLoad>, u64)> {
    let padding = "x".repeat(pad);
    // (partition key, user record numbers): a plain record has one, an aggregate `agg`.
    let mut plan: Vec<(String, Vec<u64>)> = Vec::new();
    let mut next = 0;
    while next < n {
        let size = if plan.len() % 2 == 0 {
            agg.min(n - next)
        } else {
            1
        };
        plan.push((format!("k{}", next % 97), (next..next + size).collect()));
        next += size;
    }
    let lists: Vec<Vec<integration_tests::KplUserRecord>> = plan
        .iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(_, users)| {
            users
                .iter()
                .map(|u| (format!("k{}", u % 97), None, payload(*u, &padding)))
                .collect()
        })
        .collect();
    let mut built = integration_tests::kpl_aggregates(&lists).into_iter();
    let mut entries = Vec::with_capacity(plan.len());
    for (key, users) in &plan {
        let data = if users.len() > 1 {
            built.next().context("an aggregate per list")?
        } else {
            payload(users[0], &padding)
        };
        entries.push((
            users.len() as u64,
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()?,
        ));
    }
    let payload_bytes: u64 = (0..n).map(|u| payload(u, &padding).len() as u64).sum();
    let mut shards: BTreeMap<String, ShardLoad> = BTreeMap::new();
    for chunk in entries.chunks(500) {
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.iter().map(|(_, e)| e.clone()).collect()))
            .send()
            .await?;
        if out.failed_record_count.unwrap_or(0) > 0 {
            bail!("PutRecords failed for some records");
        }
        for ((users, _), result) in chunk.iter().zip(out.records) {
            let shard = result.shard_id.context("shard id")?;
            let sequence = SequenceNumber::parse(&result.sequence_number.context("sequence")?)?;
            let load = shards.entry(shard).or_default();
            load.kinesis_records += 1;
            load.user_records += users;
            load.last = Some(if *users > 1 {
                KinesisCursor::user_record(sequence, (*users - 1) as u32)
            } else {
                KinesisCursor::plain(sequence)
            });
        }
    }
    Ok((shards, payload_bytes))
}

/// What the GetRecords-only process reports (one line of JSON on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LoopReport {
    seconds: f64,
    user_records: u64,
    kinesis_records: u64,
    payload_bytes: u64,
    calls: u64,
    peak_rss_kib: u64,
    /// CPU seconds the process used, start-up included.
    cpu_seconds: f64,
}

/// The GetRecords-only loop over `shards` (`shard=last sequence number`), in this process.
async fn get_records_loop(
    stream: &str,
    limit: i32,
    shards: &[(String, String)],
) -> Result<LoopReport> {
    let sdk = bronze::aws::sdk_config().await;
    let client = Client::new(&sdk);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (shard, last) in shards.iter().cloned() {
        let client = client.clone();
        let stream = stream.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator;
            let (mut users, mut kinesis, mut bytes, mut calls) = (0u64, 0u64, 0u64, 0u64);
            let mut last_call: Option<Instant> = None;
            'read: while let Some(it) = iterator {
                if let Some(at) = last_call {
                    if at.elapsed() < MIN_GAP {
                        tokio::time::sleep(MIN_GAP - at.elapsed()).await;
                    }
                }
                last_call = Some(Instant::now());
                let out = client
                    .get_records()
                    .shard_iterator(it)
                    .limit(limit)
                    .send()
                    .await?;
                calls += 1;
                iterator = out.next_shard_iterator;
                let mut done = false;
                for record in out.records {
                    done |= record.sequence_number == last;
                    kinesis += 1;
                    let (records, bad) = streaming_connector::kinesis::to_records(record)?;
                    if bad.is_some() {
                        bail!("{shard}: an aggregate did not deaggregate");
                    }
                    for r in records {
                        users += 1;
                        bytes += r.payload.as_ref().map_or(0, |p| p.len() as u64);
                        drop(std::hint::black_box(r));
                    }
                }
                if done {
                    break 'read;
                }
            }
            anyhow::Ok((users, kinesis, bytes, calls))
        }));
    }
    let mut report = LoopReport {
        seconds: 0.0,
        user_records: 0,
        kinesis_records: 0,
        payload_bytes: 0,
        calls: 0,
        peak_rss_kib: 0,
        cpu_seconds: 0.0,
    };
    for t in tasks {
        let (u, k, b, c) = t.await??;
        report.user_records += u;
        report.kinesis_records += k;
        report.payload_bytes += b;
        report.calls += c;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_rss_kib = vm_hwm_kib(std::process::id()).unwrap_or(0);
    report.cpu_seconds = cpu_secs(std::process::id()).unwrap_or(0.0);
    Ok(report)
}

/// Runs the GetRecords-only loop in a process of its own (this binary with
/// `--get-records-loop`), checks that it read every record, and returns its report and
/// moto's CPU seconds meanwhile.
fn run_loop(
    stream: &str,
    limit: i32,
    shards: &BTreeMap<String, ShardLoad>,
    n: u64,
    payload_bytes: u64,
    moto: Option<u32>,
    kinesis_env: &[(&str, &str)],
) -> Result<(LoopReport, f64)> {
    let moto_before = moto.and_then(cpu_secs).unwrap_or(0.0);
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .envs(kinesis_env.iter().copied())
        .arg("--get-records-loop")
        .arg(stream)
        .arg(limit.to_string());
    for (shard, load) in shards {
        let last = load.last.as_ref().context("a record per shard")?;
        command.arg(format!("{shard}={}", last.sequence));
    }
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run the GetRecords-only process")?;
    if !out.status.success() {
        bail!("the GetRecords-only process failed: {}", out.status);
    }
    let looped: LoopReport = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("its report: {}", String::from_utf8_lossy(&out.stdout)))?;
    let moto_cpu = moto.and_then(cpu_secs).unwrap_or(0.0) - moto_before;
    if (looped.user_records, looped.payload_bytes) != (n, payload_bytes) {
        bail!(
            "the loop read {} user records and {} payload bytes, expected {n} and {payload_bytes}",
            looped.user_records,
            looped.payload_bytes
        );
    }
    eprintln!(
        "GetRecords-only: {:.2} s ({:.0} records/s)",
        looped.seconds,
        rate(n, looped.seconds)
    );
    Ok((looped, moto_cpu))
}

/// The peak resident set size (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn runner_section(stream: &str, limit: i32, buffer: u64, latency_ms: u64) -> String {
    // The runner requires a file to fit in half of the buffer.
    let file_bytes = (buffer / 2).min(32 << 20);
    format!(
        r#"  kinesis:
    streams: [{stream}]
    start_from: trim_horizon
    max_records: {limit}
    poll_interval_ms: 200
  buffer: {{max_bytes: {buffer}}}
  files: {{max_records: 50000, max_bytes: {file_bytes}, max_latency_ms: {latency_ms}}}
  concurrency: {{max: 8}}
  http: {{bind: 127.0.0.1, port: 0}}
  shutdown_timeout_ms: 20000
"#
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The moto server at `endpoint` (`http://127.0.0.1:<port>`), found by its command line.
fn moto_pid(endpoint: &str) -> Option<u32> {
    let port = endpoint
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .to_owned();
    find_pid(&["moto_server", &format!("-p {port}")])
}

/// The value of `metric` (a full sample name with labels) on the runner's `/metrics`, by a
/// plain HTTP/1.0 GET.
fn scrape(address: &str, metric: &str) -> Option<u64> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(metric))
        .and_then(|v| v.trim().parse().ok())
}

fn rate(n: u64, seconds: f64) -> f64 {
    n as f64 / seconds
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // The GetRecords-only process: `--get-records-loop <stream> <limit>
    // <shard>=<last sequence>...`.
    if let Some(at) = args.iter().position(|a| a == "--get-records-loop") {
        let stream = &args[at + 1];
        let limit: i32 = args[at + 2].parse()?;
        let shards: Vec<(String, String)> = args[at + 3..]
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(s, l)| (s.to_owned(), l.to_owned()))
            .collect();
        let report = get_records_loop(stream, limit, &shards).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and a
    // measurement has no place there.
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "kinesis_backlog: a benchmark; run it with `cargo bench -p streaming-connector --bench kinesis_backlog`"
        );
        return Ok(());
    }
    let n = env_u64("BENCH_RECORDS", 1_000_000);
    let shard_count = env_u64("BENCH_SHARDS", 4) as i32;
    let agg = env_u64("BENCH_AGG", 100).max(2);
    let pad = env_u64("BENCH_PAD", 100) as usize;
    let limit = i32::try_from(env_u64("BENCH_LIMIT", 500)).context("BENCH_LIMIT")?;
    let buffer = env_u64("BENCH_BUFFER_MIB", 256) << 20;
    let latency_ms = env_u64("BENCH_LATENCY_MS", 2000);
    // `<codec>:<level>` for the Bronze objects (the connector's default is gzip 6).
    let compression: Option<(String, u32)> = match std::env::var("BENCH_COMPRESSION") {
        Ok(v) if !v.is_empty() => {
            let (codec, level) = v
                .split_once(':')
                .context("BENCH_COMPRESSION=<codec>:<level>")?;
            Some((codec.to_owned(), level.parse()?))
        }
        _ => None,
    };
    let timeout = Duration::from_secs(env_u64("BENCH_TIMEOUT_S", 900));
    let load_before = load_average();
    eprintln!("kinesis_backlog: {n} user records over {shard_count} shards, aggregates of {agg}");

    // `BENCH_KINESIS_ENDPOINT`: a second moto serving only Kinesis, as on AWS where the
    // stream is not served by the process that serves S3 and DynamoDB. The loop and the runner
    // reach it through the SDK's service-specific `AWS_ENDPOINT_URL_KINESIS`.
    let kinesis_endpoint = std::env::var("BENCH_KINESIS_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty());
    let kinesis_env: Vec<(&str, &str)> = kinesis_endpoint
        .as_deref()
        .map(|e| ("AWS_ENDPOINT_URL_KINESIS", e))
        .into_iter()
        .collect();
    let stack = Stack::new().await?;
    let client = match &kinesis_endpoint {
        Some(endpoint) => Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&stack.sdk)
                .endpoint_url(endpoint)
                .build(),
        ),
        None => Client::new(&stack.sdk),
    };
    let stream = format!(
        "backlog-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(shard_count)
        .send()
        .await
        .context("CreateStream")?;
    let sinks_endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let sinks_moto = moto_pid(&sinks_endpoint);
    // The moto serving Kinesis: the loop's only server; during the runner, moto's CPU is both
    // servers' when they are two.
    let moto = match &kinesis_endpoint {
        Some(endpoint) => moto_pid(endpoint),
        None => sinks_moto,
    };
    let split = kinesis_endpoint.is_some();
    // (the moto serving Kinesis, the other one when there are two)
    let motos_cpu = move || -> (f64, f64) {
        (
            moto.and_then(cpu_secs).unwrap_or(0.0),
            if split {
                sinks_moto.and_then(cpu_secs).unwrap_or(0.0)
            } else {
                0.0
            },
        )
    };
    let t = Instant::now();
    let (shards, payload_bytes) = produce(&client, &stream, n, agg, pad).await?;
    let produce_s = t.elapsed().as_secs_f64();
    let kinesis_records: u64 = shards.values().map(|s| s.kinesis_records).sum();
    eprintln!("produced {n} user records in {kinesis_records} Kinesis records in {produce_s:.1} s");

    // 1. GetRecords-only, in a process of its own (run again in step 3).
    let get_records_only = || {
        run_loop(
            &stream,
            limit,
            &shards,
            n,
            payload_bytes,
            moto,
            &kinesis_env,
        )
    };
    let looped = get_records_only()?;

    // 2. The runner.
    let moto_before = motos_cpu();
    let mut config = connector_yaml(&runner_section(&stream, limit, buffer, latency_ms));
    if let Some((codec, level)) = &compression {
        config = config.replace(
            "payload_format: json}",
            &format!("payload_format: json, compression: {codec}, compression_level: {level}}}"),
        );
    }
    let started = Instant::now();
    let mut runner = RunnerProc::start(&stack, &config, &["run"], &kinesis_env)?;
    let want: BTreeMap<&String, String> = shards
        .iter()
        .map(|(s, l)| (s, l.last.as_ref().expect("checked").sortable()))
        .collect();
    // Progress from the runner's own `bronze_messages_total` (records landed and committed),
    // read every 50 ms from /metrics: polling the checkpoints in DynamoDB as often would load
    // moto, which serves the runner too. The checkpoints are checked once it says all.
    let metric = format!("bronze_messages_total{{source=\"kinesis\",stream=\"{stream}\"}}");
    let mut peak_rss = 0;
    let mut first_commit = None;
    let mut address = None;
    loop {
        peak_rss = peak_rss.max(runner.peak_rss_kib().unwrap_or(0));
        if address.is_none() {
            address = runner.http_address();
        }
        let landed = address
            .as_deref()
            .and_then(|a| scrape(a, &metric))
            .unwrap_or(0);
        if landed > 0 {
            first_commit.get_or_insert_with(|| started.elapsed());
        }
        if landed >= n {
            break;
        }
        if let Some(status) = runner.exited()? {
            bail!("the runner exited ({status}):\n{}", runner.log());
        }
        if started.elapsed() > timeout {
            bail!("not landed after {timeout:?}:\n{}", runner.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let landed = started.elapsed().as_secs_f64();
    // How often reading paused on a full buffer (backpressure) meanwhile.
    let pauses = address
        .as_deref()
        .and_then(|a| scrape(a, "bronze_buffer_pauses_total"))
        .unwrap_or(0);
    let moto_after = motos_cpu();
    let (moto_kinesis, moto_sinks) = (moto_after.0 - moto_before.0, moto_after.1 - moto_before.1);
    let moto_runner = moto_kinesis + moto_sinks;
    let runner_cpu = cpu_secs(runner.pid()).unwrap_or(0.0);
    peak_rss = peak_rss.max(runner.peak_rss_kib().context("runner peak RSS")?);
    for (shard, last) in &want {
        let checkpoint = stack.checkpoint(Source::Kinesis, &stream, shard).await;
        if checkpoint.as_ref().map(|c| &c.cursor) != Some(last) {
            bail!("{shard}: checkpoint {checkpoint:?} after every record was reported landed");
        }
    }
    let status = runner.terminate(Duration::from_secs(60))?;
    if !status.success() {
        bail!("runner exit {status:?}:\n{}", runner.log());
    }
    let (mut files, mut landed_records, mut landed_payload) = (0, 0, 0);
    for shard in shards.keys() {
        for entry in stack.commit_log(Source::Kinesis, &stream, shard).await {
            files += 1;
            landed_records += entry.records + entry.dead_lettered;
            landed_payload += entry.payload_bytes;
        }
    }
    if (landed_records, landed_payload) != (n, payload_bytes) {
        bail!(
            "the commit log covers {landed_records} records and {landed_payload} payload bytes, \
             expected {n} and {payload_bytes}"
        );
    }

    // 3. GetRecords-only again, on the same moto now also holding the landed data: the
    //    ratio is against the faster of the two loops.
    let again = get_records_only()?;
    let best = looped.0.seconds.min(again.0.seconds);
    let ratio = rate(n, landed) / rate(n, best);
    println!();
    println!("== kinesis_backlog (issue 11) ==");
    println!("machine             : {}", machine());
    println!(
        "load average        : {load_before} before, {} after",
        load_average()
    );
    println!(
        "runner binary       : {}",
        env!("CARGO_BIN_EXE_streaming-connector")
    );
    println!(
        "stream              : {shard_count} shards, {kinesis_records} Kinesis records (every second one a KPL aggregate of {agg}), {n} user records, {payload_bytes} payload bytes ({:.1} B/record)",
        payload_bytes as f64 / n as f64
    );
    println!("produce             : {produce_s:.2} s (aws-kinesis-agg, PutRecords)");
    println!(
        "moto                : {}",
        match &kinesis_endpoint {
            Some(e) =>
                format!("Kinesis at {e}, S3 and DynamoDB at {sinks_endpoint} (two processes)"),
            None => format!("one process at {sinks_endpoint} serving Kinesis, S3 and DynamoDB"),
        }
    );
    println!(
        "reading             : GetRecords Limit {limit} for both; runner buffer {} MiB, files max_latency_ms {latency_ms}, Bronze objects {}",
        buffer >> 20,
        compression
            .as_ref()
            .map_or("gzip 6 (default)".to_owned(), |(c, l)| format!("{c} {l}"))
    );
    for (name, (report, moto_cpu)) in [
        ("GetRecords-only     ", &looped),
        ("  again, after      ", &again),
    ] {
        println!(
            "{name}: {:.2} s, {:.0} records/s, {:.2} MB/s payload, {} GetRecords calls; peak RSS {} KiB; CPU s: loop {:.1}, moto {moto_cpu:.1}",
            report.seconds,
            rate(n, report.seconds),
            payload_bytes as f64 / 1e6 / report.seconds,
            report.calls,
            report.peak_rss_kib,
            report.cpu_seconds
        );
    }
    println!(
        "runner (committed)  : {landed:.2} s, {:.0} records/s, {:.2} MB/s payload (first commit at {:.2} s); peak RSS {peak_rss} KiB; CPU s: runner {runner_cpu:.1}, moto {moto_runner:.1}{}; buffer pauses {pauses}",
        rate(n, landed),
        payload_bytes as f64 / 1e6 / landed,
        first_commit.unwrap_or_default().as_secs_f64(),
        if split {
            format!(" (Kinesis {moto_kinesis:.1}, S3 and DynamoDB {moto_sinks:.1})")
        } else {
            String::new()
        }
    );
    println!("ratio runner/loop   : {ratio:.2} (records/s, against the faster loop)");
    println!(
        "files committed     : {files} over {} shards, {landed_records} records and {landed_payload} payload bytes, as produced",
        shards.len()
    );
    Ok(())
}
