//! Shared by the publisher's integration tests: landings through the engine into an
//! in-memory state table, a table in one of four places (a SQLite SQL catalog with a local
//! warehouse; moto's Glue with the warehouse and the Bronze objects in a moto bucket; a moto
//! S3 Tables table bucket, the Bronze objects in a moto bucket; or the REST catalog of
//! `tests/rest_catalog_server.py` with a local warehouse), and the table read back by
//! pyiceberg and DuckDB (`scripts/read_iceberg.py`).

#![allow(dead_code, unreachable_pub)] // each test file uses its own part

pub mod rest_server;
pub mod stale;

use bronze::compress::{Codec, Compression};
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::{Cursor, KafkaOffset, KinesisCursor, SequenceNumber};
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
use bronze::ports::ObjectStore;
use bronze::record::Source;
use bronze::record::{Header, PartitionBatch, PartitionId, Record};
use bronze::telemetry::Metrics;
use iceberg::{Catalog, TableIdent};
use publish::catalog::CatalogSpec;
use publish::publisher::{PublishFaults, PublishSettings, Publisher};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a record must look like in the table: (source, stream, partition, cursor) to
/// (payload text, payload bytes as base64, timestamp µs).
pub type Expected =
    BTreeMap<(String, String, String, String), (Option<String>, Option<String>, Option<i64>)>;

pub struct Env {
    pub dir: PathBuf,
    pub objects: Arc<dyn ObjectStore>,
    pub state: Arc<MemoryStateStore>,
    pub lander: Lander,
    pub expected: Expected,
    pub next: HashMap<PartitionId, u64>,
    /// The table, `bronze.records` unless the catalog is shared between tests (Glue).
    pub ident: TableIdent,
    place: Place,
}

/// Where the table lives.
enum Place {
    /// A SQLite SQL catalog and a warehouse in `dir`.
    Local,
    /// moto's Glue, with the warehouse (`iceberg/`) and the Bronze objects in `bucket`.
    Glue {
        bucket: String,
        s3: aws_sdk_s3::Client,
    },
    /// A moto S3 Tables table bucket (each table's warehouse is a moto bucket S3 Tables
    /// made), with the Bronze objects in a moto bucket.
    S3Tables {
        arn: String,
        s3: aws_sdk_s3::Client,
        s3tables: aws_sdk_s3tables::Client,
    },
    /// The test REST catalog (a SQLite `catalog.db` and a warehouse in `dir`), asked for
    /// with a bearer token.
    Rest(rest_server::RestServer),
}

/// The moto settings, as the integration tests default them (`make test` exports its own).
pub fn aws_env() -> Vec<(&'static str, String)> {
    [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:5055"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, default)| (k, std::env::var(k).unwrap_or_else(|_| default.to_owned())))
    .collect()
}

fn aws(name: &str) -> String {
    aws_env()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// An SDK configuration for moto.
pub async fn moto_sdk() -> aws_config::SdkConfig {
    let creds = aws_sdk_s3::config::Credentials::new(
        aws("AWS_ACCESS_KEY_ID"),
        aws("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "tests",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(aws("AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new(aws("AWS_REGION")))
        .credentials_provider(creds)
        .load()
        .await
}

pub const DAY_MS: i64 = 86_400_000;
pub const T0: i64 = 1_764_201_600_000; // 2025-11-27T00:00:00Z

impl Env {
    /// A SQLite SQL catalog and a local warehouse; in-memory Bronze bucket.
    pub fn new() -> Self {
        let faults = Faults::new();
        let objects = Arc::new(MemoryObjectStore::new(faults));
        Self::with(objects, Place::Local, "bronze")
    }

    /// moto's Glue: a fresh bucket holding the Bronze objects and the warehouse, and a fresh
    /// Glue database (the table's namespace, created by the first publish). A missing moto
    /// is a failure that says so.
    pub async fn glue() -> Self {
        let (sdk, s3, id, bucket) = moto_bucket().await;
        let objects = Arc::new(bronze::aws::S3ObjectStore::new(&sdk, &bucket));
        Self::with(
            objects,
            Place::Glue { bucket, s3 },
            &format!("bronze_{}", &id[..12]),
        )
    }

    /// moto's S3 Tables: a fresh table bucket (the catalog; the table's namespace `bronze` is
    /// created by the first publish) and a fresh moto bucket with the Bronze objects. A
    /// missing moto is a failure that says so.
    pub async fn s3tables() -> Self {
        let (sdk, s3, id, bucket) = moto_bucket().await;
        let s3tables = aws_sdk_s3tables::Client::new(&sdk);
        let arn = s3tables
            .create_table_bucket()
            .name(format!("bronze-tables-{}", &id[..12]))
            .send()
            .await
            .expect("create the table bucket")
            .arn;
        let objects = Arc::new(bronze::aws::S3ObjectStore::new(&sdk, &bucket));
        Self::with(objects, Place::S3Tables { arn, s3, s3tables }, "bronze")
    }

    /// The REST catalog of `tests/rest_catalog_server.py`, started for this test on a free
    /// port (stopped when the `Env` is dropped); in-memory Bronze bucket.
    pub fn rest() -> Self {
        let objects = Arc::new(MemoryObjectStore::new(Faults::new()));
        let mut env = Self::with(objects, Place::Local, "bronze");
        let server = rest_server::RestServer::start(&env.dir.join("catalog.db"), &env.warehouse());
        env.place = Place::Rest(server);
        env
    }

    fn with(objects: Arc<dyn ObjectStore>, place: Place, namespace: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bronze-publish-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("warehouse")).expect("temp dir");
        let faults = Faults::new();
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
            ident: TableIdent::from_strs([namespace, "records"]).expect("ident"),
            place,
        }
    }

    /// The catalog, as `--catalog` spells it.
    pub fn catalog_spec(&self) -> CatalogSpec {
        match &self.place {
            Place::Local => CatalogSpec::Sql {
                uri: format!("sqlite:{}", self.dir.join("catalog.db").display()),
            },
            Place::Glue { .. } => CatalogSpec::Glue { catalog_id: None },
            Place::S3Tables { arn, .. } => CatalogSpec::S3Tables {
                table_bucket_arn: arn.clone(),
            },
            Place::Rest(server) => CatalogSpec::Rest {
                uri: server.uri.clone(),
            },
        }
    }

    pub fn warehouse(&self) -> String {
        match &self.place {
            Place::Local | Place::Rest(_) => {
                format!("file://{}", self.dir.join("warehouse").display())
            }
            Place::Glue { bucket, .. } => format!("s3://{bucket}/iceberg"),
            // Not used by S3 Tables (it chooses the location), as on AWS.
            Place::S3Tables { .. } => "s3://not-used-by-s3tables/".to_owned(),
        }
    }

    /// Storage and Glue client settings for moto, as the commands derive them from the
    /// environment.
    pub fn props(&self) -> HashMap<String, String> {
        match &self.place {
            Place::Local => HashMap::new(),
            // The token the server demands, as `ICEBERG_REST_TOKEN` gives it.
            Place::Rest(server) => publish::catalog::props_from_lookup(|name| {
                (name == "ICEBERG_REST_TOKEN").then(|| server.token.clone())
            }),
            Place::Glue { .. } | Place::S3Tables { .. } => {
                publish::catalog::props_from_lookup(|name| {
                    aws_env()
                        .into_iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v)
                })
            }
        }
    }

    /// A new catalog connection.
    pub async fn catalog(&self) -> Arc<dyn Catalog> {
        publish::catalog::open(&self.catalog_spec(), &self.warehouse(), self.props())
            .await
            .expect("open the catalog")
    }

    pub fn publisher<'a>(
        &'a self,
        catalog: &'a dyn Catalog,
        faults: Arc<PublishFaults>,
    ) -> Publisher<'a> {
        Publisher {
            state: self.state.as_ref(),
            objects: self.objects.as_ref(),
            catalog,
            table: self.ident.clone(),
            settings: PublishSettings::default(),
            faults,
        }
    }

    /// Lands `n` more records on each of three Kafka partitions and one Kinesis shard, in
    /// batches of `batch`, with payloads of every shape.
    pub async fn land(&mut self, n: u64, batch: usize) {
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
    pub async fn land_partition<C: Cursor>(
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

    /// Lands one batch: records `indices` (payload `i`, cursor `cursor(i)`), in this order.
    pub async fn land_batch<C: Cursor>(
        &mut self,
        id: &PartitionId,
        indices: impl IntoIterator<Item = u64>,
        settings: &StreamSettings,
        cursor: impl Fn(u64) -> C,
    ) {
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "run-2",
            now_ms: T0,
            metrics: &metrics,
        };
        let records: Vec<Record<C>> = indices
            .into_iter()
            .map(|i| self.record(id, cursor(i), i))
            .collect();
        let batch = PartitionBatch {
            id: id.clone(),
            records,
        };
        let outcome = self.lander.land(&batch, settings, run).await;
        assert!(
            matches!(outcome, PartitionOutcome::Landed { .. }),
            "{outcome:?}"
        );
    }

    pub async fn publish(&self, catalog: &dyn Catalog) -> publish::publisher::PublishReport {
        self.publisher(catalog, Arc::default())
            .publish()
            .await
            .expect("publish")
    }

    pub fn record<C: Cursor>(&mut self, id: &PartitionId, cursor: C, i: u64) -> Record<C> {
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

    /// The table as pyiceberg and DuckDB read it (`scripts/read_iceberg.py`).
    pub fn read(&self) -> Value {
        let (catalog, script) = match self.place {
            Place::Local | Place::Rest(_) => (
                self.dir.join("catalog.db").display().to_string(),
                workspace().join("scripts/read_iceberg.py"),
            ),
            Place::Glue { .. } => (
                self.catalog_spec().to_string(),
                workspace().join("scripts/read_iceberg.py"),
            ),
            Place::S3Tables { .. } => (
                self.catalog_spec().to_string(),
                workspace().join("publish/tests/common/read_s3tables.py"),
            ),
        };
        let out = std::process::Command::new(python())
            .arg(script)
            .arg(catalog)
            .arg(self.warehouse())
            .arg(self.ident.to_string())
            .envs(aws_env())
            .output()
            .expect("run scripts/read_iceberg.py");
        assert!(
            out.status.success(),
            "read_iceberg.py failed (run `make venv`: pyiceberg and duckdb are in requirements-dev.txt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Reads the table with pyiceberg and DuckDB and checks it holds exactly the expected
    /// records, each once, byte for byte; and that the warehouse holds no orphan.
    pub async fn check(&self) -> Value {
        let read = self.read();
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
                assert!(
                    row["log_position"].as_i64().is_some(),
                    "{engine}: log_position"
                );
            }
            assert_eq!(seen.len(), self.expected.len(), "{engine}: record count");
            for (key, want) in &self.expected {
                assert_eq!(seen.get(key), Some(want), "{engine}: {key:?}");
            }
        }
        // No orphan: the warehouse's data files are exactly the ones the table lists. An S3
        // Tables warehouse cannot be listed (moto refuses ListObjects and DeleteObject on it,
        // as AWS does; S3 Tables' unreferenced file removal deletes orphans): the files the
        // table lists were all read above.
        if matches!(self.place, Place::S3Tables { .. }) {
            return read;
        }
        let mut listed: Vec<String> = read["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f.as_str().unwrap_or_default().to_owned())
            .collect();
        listed.sort();
        let mut on_disk = self.data_files().await;
        on_disk.sort();
        assert_eq!(on_disk, listed, "orphaned or missing data files");
        read
    }
}

impl Env {
    /// Every Parquet file in the warehouse, as the table lists them.
    pub async fn data_files(&self) -> Vec<String> {
        match &self.place {
            Place::Local | Place::Rest(_) => local_files(&self.dir.join("warehouse"))
                .iter()
                .map(|p| format!("file://{}", p.display()))
                .collect(),
            Place::Glue { bucket, s3 } => list_parquet(s3, bucket, "iceberg/").await,
            Place::S3Tables { .. } => {
                panic!("an S3 Tables warehouse cannot be listed (ListObjects is refused)")
            }
        }
    }

    /// S3 Tables' client and table bucket ARN.
    pub fn s3tables_client(&self) -> (&aws_sdk_s3tables::Client, &str) {
        match &self.place {
            Place::S3Tables { s3tables, arn, .. } => (s3tables, arn),
            _ => panic!("not an S3 Tables place"),
        }
    }

    /// The warehouse location S3 Tables gave the table (`s3://<name>--table-s3`).
    pub async fn s3tables_location(&self) -> String {
        let (client, arn) = self.s3tables_client();
        client
            .get_table()
            .table_bucket_arn(arn)
            .namespace(&self.ident.namespace().as_ref()[0])
            .name(self.ident.name())
            .send()
            .await
            .expect("the S3 Tables table")
            .warehouse_location
    }
}

/// A fresh moto bucket (for the Bronze objects, with a warehouse for Glue): the SDK
/// configuration, a path-style S3 client, a unique id and the bucket's name. A missing moto
/// is a failure that says so.
pub async fn moto_bucket() -> (aws_config::SdkConfig, aws_sdk_s3::Client, String, String) {
    let sdk = moto_sdk().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let bucket = format!("bronze-{}", &id[..12]);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the local stack is not answering at {}: run `make stack-up` (make test does): {e:?}",
                aws("AWS_ENDPOINT_URL")
            )
        });
    (sdk, s3, id, bucket)
}

/// Every `.parquet` object under `prefix` in `bucket`, as `s3://bucket/key`.
pub async fn list_parquet(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for object in page.expect("list the warehouse").contents() {
            let key = object.key().unwrap_or_default();
            if key.ends_with(".parquet") {
                keys.push(format!("s3://{bucket}/{key}"));
            }
        }
    }
    keys
}

fn local_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(local_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

pub fn python() -> PathBuf {
    let venv = workspace().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

impl Env {
    /// Runs a publish that crashes at `step`, and checks that it did.
    pub async fn crash_at(&self, catalog: &dyn Catalog, step: publish::publisher::PublishStep) {
        use publish::publisher::PublishError;
        let faults = Arc::new(PublishFaults::default());
        faults.arm(step);
        let crashed = self.publisher(catalog, faults).publish().await;
        assert!(
            matches!(crashed, Err(PublishError::Crashed(s)) if s == step),
            "{step:?}: {crashed:?}"
        );
    }

    /// `rounds` rounds of landings, each published by two publishers at once through their
    /// own connections (`first`, `second`): every record is published by exactly one of
    /// them. Returns how many snapshots they made.
    pub async fn two_publishers_at_once(
        &mut self,
        first: &dyn Catalog,
        second: &dyn Catalog,
        rounds: usize,
    ) -> usize {
        let mut snapshots = 0;
        for round in 0..rounds {
            self.land(9, 2 + round).await;
            let (pa, pb) = (
                self.publisher(first, Arc::default()),
                self.publisher(second, Arc::default()),
            );
            let (a, b) = tokio::join!(pa.publish(), pb.publish());
            let (a, b) = (a.expect("first publisher"), b.expect("second publisher"));
            snapshots +=
                usize::from(a.snapshot_id.is_some()) + usize::from(b.snapshot_id.is_some());
            assert_eq!(a.records + b.records, 36, "round {round}: {a:?} {b:?}");
        }
        snapshots
    }
}
