//! Publishing 1,000,000 landed records to the Iceberg table, against DuckDB reading the same
//! JSON Lines objects and writing Parquet (`COPY ... TO ... (FORMAT parquet)`), on the same
//! machine in one run.
//!
//!     cargo bench -p bronze-publish --bench publish_1m
//!
//! 1. Lands `BENCH_RECORDS` records (default 1,000,000; 4 Kafka partitions, batches of
//!    `BENCH_BATCH`, default 5,000; 256-byte JSON payloads) through the engine with the
//!    in-memory ports, and writes the committed objects (gzip JSON Lines, as Bronze holds
//!    them) and the commit log to a temporary directory.
//! 2. Runs itself under `/usr/bin/time -v` to publish them (state loaded from the commit log,
//!    objects read from the directory, SQLite catalog, local warehouse): the time of
//!    `Publisher::publish` alone, and the process's peak RSS.
//! 3. Runs DuckDB (`.venv`'s python, else `python3`) under `/usr/bin/time -v` on the same
//!    objects: `COPY (SELECT * FROM read_json([...])) TO '...' (FORMAT parquet,
//!    COMPRESSION zstd)`, timed inside the process, and its peak RSS.
//!
//! Prints both rates, both peaks, both processes' CPU time, both output sizes, the cores
//! each side could use and the load average before, between and after. Nothing here is asserted: it is a measurement,
//! see BENCHMARKS.md.

use async_trait::async_trait;
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::KafkaOffset;
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
use bronze::ports::{CommitEntry, ObjectStore, PortError, PutOutcome, StateStore};
use bronze::record::{PartitionBatch, PartitionId, Record, Source};
use bronze::telemetry::Metrics;
use iceberg::TableIdent;
use publish::catalog::open_sql;
use publish::publisher::{PublishSettings, Publisher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const PARTITIONS: u64 = 4;
const PAYLOAD_BYTES: usize = 256;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 256-byte JSON payload that varies with `i` (deterministic).
fn payload(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut text = format!(
        "{{\"event_id\":\"{:016x}{:016x}\",\"n\":{i},\"user\":\"user-{}\",\"amount\":{}.{:02},\"page\":\"/p/{}\",\"attrs\":{{\"a\":\"{:08x}\",\"b\":{}}},\"pad\":\"",
        next(),
        next(),
        next() % 100_000,
        next() % 10_000,
        next() % 100,
        next() % 1000,
        next() as u32,
        next() % 7
    );
    while text.len() < PAYLOAD_BYTES - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    text.into_bytes()
}

/// Bronze objects read from a directory (the bench's stand-in for the bucket).
#[derive(Debug)]
struct DirObjects(PathBuf);

#[async_trait]
impl ObjectStore for DirObjects {
    async fn put_if_absent(&self, key: &str, _: Vec<u8>) -> Result<PutOutcome, PortError> {
        Err(read_only(key))
    }
    async fn put(&self, key: &str, _: Vec<u8>) -> Result<(), PortError> {
        Err(read_only(key))
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        match std::fs::read(self.0.join(key)) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PortError::Permanent {
                operation: "fs:read",
                target: key.to_owned(),
                message: e.to_string(),
            }),
        }
    }
    async fn list_after(&self, _: &str, _: &str) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    fn url(&self, key: &str) -> String {
        format!("file://{}", self.0.join(key).display())
    }
}

fn read_only(key: &str) -> PortError {
    PortError::Permanent {
        operation: "fs:write",
        target: key.to_owned(),
        message: "the bench's object directory is read-only".into(),
    }
}

/// Step 1: land the records, write objects and the commit log under `dir`.
async fn prepare(dir: &Path, records: u64, batch: u64) -> u64 {
    let faults = Faults::new();
    let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
    let state = Arc::new(MemoryStateStore::new(faults.clone()));
    let lander = Lander::new(
        objects.clone(),
        state.clone(),
        Arc::new(MemoryDlq::new(faults)),
        "bronze",
    );
    let settings = StreamSettings {
        group: None,
        payload_format: PayloadFormat::Auto,
        key_strategy: KeyStrategy::Raw,
        parallelization_factor: 1,
        schema: None,
        compression: Default::default(),
    };
    let metrics = Metrics::default();
    let run = RunContext {
        run_id: "bench",
        now_ms: 1_795_737_600_000,
        metrics: &metrics,
    };
    let per_partition = records / PARTITIONS;
    let mut log: Vec<(PartitionId, Vec<CommitEntry>)> = Vec::new();
    let mut bytes = 0u64;
    for p in 0..PARTITIONS {
        let id = PartitionId::new(Source::Kafka, "bench", p.to_string());
        let mut start = 0;
        while start < per_partition {
            let end = (start + batch).min(per_partition);
            let records: Vec<Record<KafkaOffset>> = (start..end)
                .map(|o| Record {
                    cursor: KafkaOffset(o),
                    key: Some(format!("k{}", o % 1000).into_bytes()),
                    headers: vec![],
                    timestamp_ms: Some(1_795_737_600_000 + o as i64),
                    payload: Some(payload(p * per_partition + o)),
                    defect: None,
                    schema_id: None,
                })
                .collect();
            let outcome = lander
                .land(
                    &PartitionBatch {
                        id: id.clone(),
                        records,
                    },
                    &settings,
                    run,
                )
                .await;
            assert!(
                matches!(outcome, PartitionOutcome::Landed { .. }),
                "{outcome:?}"
            );
            start = end;
        }
        let entries = state.commit_log(&id).await.expect("log");
        for e in &entries {
            let key = e.object_key.as_deref().expect("object");
            let body = objects.get(key).await.expect("get").expect("object");
            bytes += body.len() as u64;
            let path = dir.join("objects").join(key);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, body).expect("write object");
        }
        log.push((id, entries));
    }
    let log: Vec<(String, Vec<CommitEntry>)> = log
        .into_iter()
        .map(|(id, e)| (format!("{}#{}#{}", id.source, id.stream, id.partition), e))
        .collect();
    std::fs::write(
        dir.join("log.json"),
        serde_json::to_vec(&log).expect("json"),
    )
    .expect("write log");
    bytes
}

/// Step 2 (child process): publish everything under `dir`; prints `records seconds`.
async fn publish_phase(dir: &Path) {
    let log: Vec<(String, Vec<CommitEntry>)> =
        serde_json::from_slice(&std::fs::read(dir.join("log.json")).expect("log")).expect("json");
    let state = MemoryStateStore::new(Faults::new());
    for (pk, entries) in &log {
        let id = PartitionId::from_state_key(pk).expect("partition");
        let mut expected: Option<String> = None;
        for e in entries {
            state
                .commit(&id, expected.as_deref(), e)
                .await
                .expect("load the commit log");
            expected = Some(e.last.clone());
        }
    }
    let objects = DirObjects(dir.join("objects"));
    let warehouse = dir.join("warehouse");
    std::fs::create_dir_all(&warehouse).expect("warehouse");
    let catalog = open_sql(
        &format!("sqlite:{}", dir.join("catalog.db").display()),
        &format!("file://{}", warehouse.display()),
        HashMap::new(),
    )
    .await
    .expect("catalog");
    let publisher = Publisher {
        state: &state,
        objects: &objects,
        catalog: catalog.as_ref(),
        table: TableIdent::from_strs(["bronze", "records"]).expect("ident"),
        settings: PublishSettings::default(),
        faults: Arc::default(),
    };
    let started = Instant::now();
    let report = publisher.publish().await.expect("publish");
    let secs = started.elapsed().as_secs_f64();
    println!("{} {secs} {}", report.records, report.files);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// What `/usr/bin/time -v` measured of a process.
struct Measured {
    /// Its stdout.
    stdout: String,
    /// Peak RSS, KiB.
    rss_kib: u64,
    /// User plus system CPU time, seconds (the whole process, setup included).
    cpu_secs: f64,
}

/// Runs `cmd` under `/usr/bin/time -v`.
fn timed(cmd: &mut Command) -> Measured {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()
        .expect("/usr/bin/time (GNU time) is needed for peak RSS");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("GNU time's {name:?} line"))
    };
    Measured {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        rss_kib: field("Maximum resident set size (kbytes):") as u64,
        cpu_secs: field("User time (seconds):") + field("System time (seconds):"),
    }
}

/// The last line of a child's stdout (the result line), split at whitespace.
fn result_line(stdout: &str) -> std::str::SplitWhitespace<'_> {
    stdout.lines().last().unwrap_or_default().split_whitespace()
}

const DUCKDB: &str = r#"
import sys, time, duckdb
objects, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
# Its progress bar goes to stdout (seen under `python -c`), before the result line.
con.execute("SET enable_progress_bar = false")
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
started = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json('{objects}/**/*.jsonl.gz', format='newline_delimited')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
secs = time.perf_counter() - started
rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
print(rows, secs, threads)
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--publish-phase") {
        let dir = PathBuf::from(&args[i + 1]);
        runtime.block_on(publish_phase(&dir));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench` (and `--list` lists
        // them): a multi-minute measurement has no place there.
        println!(
            "publish_1m: a benchmark; run it with `cargo bench -p bronze-publish --bench publish_1m`"
        );
        return;
    }
    let records = env_u64("BENCH_RECORDS", 1_000_000);
    let batch = env_u64("BENCH_BATCH", 5_000);
    let dir = std::env::temp_dir().join(format!("bronze-publish-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    eprintln!(
        "landing {records} records in batches of {batch} under {}",
        dir.display()
    );
    let bytes = runtime.block_on(prepare(&dir, records, batch));
    let objects = walk(&dir.join("objects"));
    eprintln!("{} objects, {bytes} bytes (gzip)", objects.len());

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    let exe = std::env::current_exe().expect("exe");
    let publish = timed(Command::new(&exe).arg("--publish-phase").arg(&dir));
    let mut f = result_line(&publish.stdout);
    let published: u64 = f.next().and_then(|v| v.parse().ok()).expect("records");
    let publish_secs: f64 = f.next().and_then(|v| v.parse().ok()).expect("seconds");
    let files: u64 = f.next().and_then(|v| v.parse().ok()).expect("files");
    let load_between = load_average();

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("ws");
    let venv = workspace.join(".venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let duck = timed(
        Command::new(python)
            .arg("-c")
            .arg(DUCKDB)
            .arg(dir.join("objects"))
            .arg(dir.join("duckdb.parquet")),
    );
    let mut f = result_line(&duck.stdout);
    let duck_rows: u64 = f.next().and_then(|v| v.parse().ok()).expect("rows");
    let duck_secs: f64 = f.next().and_then(|v| v.parse().ok()).expect("seconds");
    let threads = f.next().unwrap_or("?").to_owned();
    let load_after = load_average();
    let publish_bytes: u64 = walk(&dir.join("warehouse"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let duck_bytes = std::fs::metadata(dir.join("duckdb.parquet")).map_or(0, |m| m.len());

    println!(
        "records landed: {records} in {} objects ({bytes} bytes gzip)",
        objects.len()
    );
    println!(
        "publisher ({cores} cores: tokio multi-thread runtime and its blocking pool): {published} records, {files} Parquet files ({publish_bytes} bytes) in {publish_secs:.2} s = {:.0} records/s, peak RSS {} MiB, process CPU {:.2} s",
        published as f64 / publish_secs,
        publish.rss_kib / 1024,
        publish.cpu_secs
    );
    println!(
        "duckdb (read_json + COPY TO parquet, {threads} threads): {duck_rows} records ({duck_bytes} bytes) in {duck_secs:.2} s = {:.0} records/s, peak RSS {} MiB, process CPU {:.2} s",
        duck_rows as f64 / duck_secs,
        duck.rss_kib / 1024,
        duck.cpu_secs
    );
    println!(
        "publisher / duckdb rate: {:.2}",
        (published as f64 / publish_secs) / (duck_rows as f64 / duck_secs)
    );
    println!(
        "load average (1, 5, 15 min): before {load_before}; between {load_between}; after {load_after}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
