//! The publisher against real storage and a real catalog: landings through the engine
//! (in-memory state table and bucket), a SQLite SQL catalog and a local warehouse, read
//! back by pyiceberg (same catalog file) and DuckDB (the Parquet files the table lists).
//! Every committed record is in the table exactly once with its payload byte for byte,
//! after crashes at every step of a publish and with two publishers at once.

use bronze::compress::{Codec, Compression};
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::{Cursor, KafkaOffset, KinesisCursor, SequenceNumber};
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
use bronze::record::{Header, PartitionBatch, PartitionId, Record, Source};
use bronze::telemetry::Metrics;
use iceberg::{Catalog, TableIdent};
use publish::catalog::open_sql;
use publish::publisher::{PublishError, PublishFaults, PublishSettings, PublishStep, Publisher};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a record must look like in the table: (source, stream, partition, cursor) to
/// (payload text, payload bytes as base64, timestamp µs).
type Expected =
    BTreeMap<(String, String, String, String), (Option<String>, Option<String>, Option<i64>)>;

struct Env {
    dir: PathBuf,
    objects: Arc<MemoryObjectStore>,
    state: Arc<MemoryStateStore>,
    lander: Lander,
    expected: Expected,
    next: HashMap<PartitionId, u64>,
}

const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_764_201_600_000; // 2025-11-27T00:00:00Z

impl Env {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bronze-publish-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("warehouse")).expect("temp dir");
        let faults = Faults::new();
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let lander = Lander::new(
            objects.clone(),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        Self {
            dir,
            objects,
            state,
            lander,
            expected: BTreeMap::new(),
            next: HashMap::new(),
        }
    }

    fn catalog_uri(&self) -> String {
        format!("sqlite:{}", self.dir.join("catalog.db").display())
    }

    fn warehouse(&self) -> String {
        format!("file://{}", self.dir.join("warehouse").display())
    }

    async fn catalog(&self) -> Arc<dyn Catalog> {
        open_sql(&self.catalog_uri(), &self.warehouse(), HashMap::new())
            .await
            .expect("open the SQL catalog")
    }

    fn publisher<'a>(
        &'a self,
        catalog: &'a dyn Catalog,
        faults: Arc<PublishFaults>,
    ) -> Publisher<'a> {
        Publisher {
            state: self.state.as_ref(),
            objects: self.objects.as_ref(),
            catalog,
            table: TableIdent::from_strs(["bronze", "records"]).expect("ident"),
            settings: PublishSettings::default(),
            faults,
        }
    }

    /// Lands `n` more records on each of three Kafka partitions and one Kinesis shard, in
    /// batches of `batch`, with payloads of every shape.
    async fn land(&mut self, n: u64, batch: usize) {
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "run-1",
            now_ms: T0,
            metrics: &metrics,
        };
        let kafka = StreamSettings {
            group: Some("commerce".into()),
            payload_format: PayloadFormat::Auto,
            key_strategy: KeyStrategy::Raw,
            parallelization_factor: 1,
            schema: None,
            compression: Compression::default(),
        };
        for p in 0..3 {
            let id = PartitionId::new(Source::Kafka, "orders", p.to_string());
            self.land_partition(&id, n, batch, &kafka, &run, KafkaOffset)
                .await;
        }
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000000");
        let sequence = |i: u64| {
            let seq = format!("4959{:040}", 1_000_000 + i);
            KinesisCursor::plain(SequenceNumber::parse(&seq).expect("sequence"))
        };
        // The Kinesis stream lands zstd objects: the publisher reads both formats.
        let kinesis = StreamSettings {
            compression: Compression::of(Codec::Zstd),
            ..kafka
        };
        self.land_partition(&id, n, batch, &kinesis, &run, sequence)
            .await;
    }

    /// Lands the partition's next `n` records (cursor `i` from `cursor(i)`) in batches.
    async fn land_partition<C: Cursor>(
        &mut self,
        id: &PartitionId,
        n: u64,
        batch: usize,
        settings: &StreamSettings,
        run: &RunContext<'_>,
        cursor: impl Fn(u64) -> C,
    ) {
        let start = *self.next.get(id).unwrap_or(&0);
        let records: Vec<Record<C>> = (start..start + n)
            .map(|i| self.record(id, cursor(i), i))
            .collect();
        self.next.insert(id.clone(), start + n);
        for chunk in records.chunks(batch) {
            let batch = PartitionBatch {
                id: id.clone(),
                records: chunk.to_vec(),
            };
            let outcome = self.lander.land(&batch, settings, *run).await;
            assert!(
                matches!(outcome, PartitionOutcome::Landed { .. }),
                "{outcome:?}"
            );
        }
    }

    fn record<C: Cursor>(&mut self, id: &PartitionId, cursor: C, i: u64) -> Record<C> {
        let payload: Option<Vec<u8>> = match i % 6 {
            0 => Some(format!("{{\"n\":{i},\"big\":123456789012345678901234567890}}").into_bytes()),
            1 => Some(
                format!(" {{\"a\":1,\"a\":2,\r\n\"f\":1.0000000000000000001,\"i\":{i}}} ")
                    .into_bytes(),
            ),
            2 => Some(vec![0xff, 0x00, b'x', (i % 256) as u8]),
            3 => None,
            4 => Some(format!("{}{i}{}", "[".repeat(200), "]".repeat(200)).into_bytes()),
            _ => Some(format!("\"caf\u{e9} {i} ,\\\"payload\\\":1\"").into_bytes()),
        };
        let (text, bytes) = match &payload {
            None => (None, None),
            Some(p) if serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok() || i % 6 == 4 => {
                let lossless: Vec<u8> = p
                    .iter()
                    .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                    .collect();
                (Some(String::from_utf8(lossless).expect("utf8")), None)
            }
            Some(p) => {
                use base64::Engine as _;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(p)),
                )
            }
        };
        // Two days, so the day partition splits files.
        let ts = T0 + (i as i64 % 2) * DAY_MS + i as i64;
        self.expected.insert(
            (
                id.source.to_string(),
                id.stream.clone(),
                id.partition.clone(),
                cursor.to_string(),
            ),
            (text, bytes, Some(ts * 1000)),
        );
        Record {
            cursor,
            key: Some(format!("k{i}").into_bytes()),
            headers: vec![
                Header {
                    key: "trace".into(),
                    value: Some(b"abc".to_vec()),
                    raw_key: None,
                },
                Header {
                    key: "bin".into(),
                    value: Some(vec![0xc3, 0x28]),
                    raw_key: None,
                },
            ],
            timestamp_ms: Some(ts),
            payload,
            defect: None,
            schema_id: None,
        }
    }

    /// Reads the table with pyiceberg and DuckDB and checks it holds exactly the expected
    /// records, each once, byte for byte; and that the warehouse holds no orphan.
    fn check(&self) -> Value {
        let out = std::process::Command::new(python())
            .arg(workspace().join("scripts/read_iceberg.py"))
            .arg(self.dir.join("catalog.db"))
            .arg(self.warehouse())
            .output()
            .expect("run scripts/read_iceberg.py");
        assert!(
            out.status.success(),
            "read_iceberg.py failed (run `make venv`: pyiceberg and duckdb are in requirements-dev.txt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: Value = serde_json::from_slice(&out.stdout).expect("json");
        for engine in ["pyiceberg", "duckdb"] {
            let rows = read[engine].as_array().expect("rows");
            let mut seen: Expected = BTreeMap::new();
            for row in rows {
                let s = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
                let key = (s("source"), s("stream"), s("partition"), s("cursor"));
                let value = (
                    row["payload"].as_str().map(str::to_owned),
                    row["payload_base64"].as_str().map(str::to_owned),
                    row["timestamp"].as_i64(),
                );
                assert!(
                    seen.insert(key.clone(), value).is_none(),
                    "{engine}: {key:?} twice"
                );
                assert_eq!(
                    row["headers"][1]["value_base64"], "wyg=",
                    "{engine}: headers"
                );
                assert_eq!(row["headers"][0]["value"], "abc", "{engine}: headers");
            }
            assert_eq!(seen.len(), self.expected.len(), "{engine}: record count");
            for (key, want) in &self.expected {
                assert_eq!(seen.get(key), Some(want), "{engine}: {key:?}");
            }
        }
        // No orphan: the warehouse's data files are exactly the ones the table lists.
        let mut listed: Vec<String> = read["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f.as_str().unwrap_or_default().to_owned())
            .collect();
        listed.sort();
        let mut on_disk: Vec<String> = data_files(&self.dir.join("warehouse"))
            .iter()
            .map(|p| format!("file://{}", p.display()))
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, listed, "orphaned or missing data files");
        read
    }
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(data_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn python() -> PathBuf {
    let venv = workspace().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_committed_record_once_compacted() {
    let mut env = Env::new();
    let catalog = env.catalog().await;
    // 4 partitions x 125 records, one per delivery: 500 small committed objects.
    env.land(125, 1).await;
    let report = env
        .publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    assert_eq!(report.records, 500);
    assert_eq!(report.entries, 500);
    // One file per stream partition and day: 4 partitions x 2 days.
    assert_eq!(report.files, 8);
    env.check();

    // Nothing new: no snapshot.
    let again = env
        .publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    assert_eq!(again.snapshot_id, None);

    env.land(7, 2).await;
    let report = env
        .publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    assert_eq!(report.records, 28);
    let read = env.check();
    let summary = &read["summary"];
    assert_eq!(
        summary["bronze.watermark.kafka#orders#0"],
        format!("{:020}", 131)
    );
    assert_eq!(summary["operation"], "append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_then_a_rerun_publishes_exactly_once() {
    for step in [
        PublishStep::BeforeWrite,
        PublishStep::AfterFirstFile,
        PublishStep::BeforeCommit,
        PublishStep::AfterCommit,
    ] {
        let mut env = Env::new();
        let catalog = env.catalog().await;
        env.land(10, 4).await;
        env.publisher(catalog.as_ref(), Arc::default())
            .publish()
            .await
            .expect("publish");
        env.land(10, 3).await;
        let faults = Arc::new(PublishFaults::default());
        faults.arm(step);
        let crashed = env.publisher(catalog.as_ref(), faults).publish().await;
        assert!(
            matches!(crashed, Err(PublishError::Crashed(s)) if s == step),
            "{step:?}: {crashed:?}"
        );
        // More landings before the rerun: its plan differs from the crashed one.
        env.land(5, 2).await;
        // A new process: a fresh catalog connection.
        let catalog = env.catalog().await;
        let report = env
            .publisher(catalog.as_ref(), Arc::default())
            .publish()
            .await
            .expect("rerun");
        let leftover = matches!(
            step,
            PublishStep::AfterFirstFile | PublishStep::BeforeCommit
        );
        assert_eq!(report.orphans_deleted > 0, leftover, "{step:?}: {report:?}");
        env.check();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_at_once_publish_exactly_once() {
    let mut env = Env::new();
    let first = env.catalog().await;
    let second = env.catalog().await;
    let mut snapshots = 0;
    for round in 0..4 {
        env.land(9, 2 + round).await;
        let (pa, pb) = (
            env.publisher(first.as_ref(), Arc::default()),
            env.publisher(second.as_ref(), Arc::default()),
        );
        let (a, b) = tokio::join!(pa.publish(), pb.publish());
        let (a, b) = (a.expect("first publisher"), b.expect("second publisher"));
        snapshots += usize::from(a.snapshot_id.is_some()) + usize::from(b.snapshot_id.is_some());
        assert_eq!(a.records + b.records, 36, "round {round}: {a:?} {b:?}");
    }
    assert!(snapshots >= 4);
    env.check();
}

/// The hazard the fence exists for, shown deterministically: iceberg-rust rebases a stale
/// fast append onto the newer snapshot (which would publish its records twice); through
/// `Fenced` the same commit is refused as a conflict and the table does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_append_is_fenced_not_rebased() {
    use iceberg::ErrorKind;
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    use publish::catalog::Fenced;

    let mut env = Env::new();
    let catalog = env.catalog().await;
    let ident = TableIdent::from_strs(["bronze", "records"]).expect("ident");
    env.land(3, 3).await;
    env.publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    let stale = catalog.load_table(&ident).await.expect("load");
    let planned_on = stale.metadata().current_snapshot_id();
    env.land(3, 3).await;
    env.publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    let current = catalog
        .load_table(&ident)
        .await
        .expect("load")
        .metadata()
        .current_snapshot_id();
    assert_ne!(planned_on, current);

    let stale_append = || {
        let tx = Transaction::new(&stale);
        tx.fast_append()
            .set_snapshot_properties(HashMap::from([("stale".to_owned(), "yes".to_owned())]))
            .apply(tx)
            .expect("apply")
    };
    let fenced = Fenced {
        inner: catalog.as_ref(),
        table: &ident,
        expected: planned_on,
    };
    let refused = stale_append().commit(&fenced).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts),
        "{refused:?}"
    );
    let after = catalog.load_table(&ident).await.expect("load");
    assert_eq!(after.metadata().current_snapshot_id(), current);

    // Unfenced, iceberg-rust rebases it onto the newer snapshot and commits.
    let rebased = stale_append()
        .commit(catalog.as_ref())
        .await
        .expect("rebased commit");
    assert_eq!(
        rebased
            .metadata()
            .current_snapshot()
            .and_then(|s| s.parent_snapshot_id()),
        current
    );
    // That foreign snapshot carries no watermarks: the publisher takes them from the newest
    // snapshot it made, so nothing is published twice.
    let again = env
        .publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    assert_eq!(again.records, 0);
    env.land(2, 2).await;
    let more = env
        .publisher(catalog.as_ref(), Arc::default())
        .publish()
        .await
        .expect("publish");
    assert_eq!(more.records, 8);
    env.check();
}
