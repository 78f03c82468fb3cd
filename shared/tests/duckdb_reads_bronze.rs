//! DuckDB (`read_json`, the PyPI package in `.venv`) reads the Bronze objects the engine lands,
//! in both formats and with several compressed members per object, finding the format from
//! the key's suffix as it would on S3. Needs `make venv` (duckdb is in requirements-dev.txt);
//! without it the test fails and says so.

use bronze::compress::{Codec, Compression};
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::KafkaOffset;
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
use bronze::record::{PartitionBatch, PartitionId, Record, Source};
use bronze::telemetry::Metrics;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RECORDS: u64 = 3000;

fn payload(n: u64) -> Vec<u8> {
    format!(
        "{{\"n\":{n},\"text\":\"caf\u{e9} \\\"{n}\\\"\",\"pad\":\"{}\",\"list\":[1,2.5,null,true]}}",
        "x".repeat((n % 900) as usize)
    )
    .into_bytes()
}

/// Lands `RECORDS` records with `compression` and writes the object under its key's file name.
async fn land(compression: Compression, dir: &Path) -> PathBuf {
    let faults = Faults::new();
    let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
    let lander = Lander::new(
        objects.clone(),
        Arc::new(MemoryStateStore::new(faults.clone())),
        Arc::new(MemoryDlq::new(faults)),
        "bronze",
    );
    let settings = StreamSettings {
        group: Some("g".into()),
        payload_format: PayloadFormat::Json,
        key_strategy: KeyStrategy::Raw,
        parallelization_factor: 1,
        schema: None,
        compression,
    };
    let batch = PartitionBatch {
        id: PartitionId::new(Source::Kafka, "orders", "0"),
        records: (0..RECORDS)
            .map(|n| Record {
                cursor: KafkaOffset(n),
                key: Some(format!("k{n}").into_bytes()),
                headers: vec![],
                timestamp_ms: Some(1_795_737_600_000 + n as i64),
                payload: Some(payload(n)),
                defect: None,
                schema_id: None,
            })
            .collect(),
    };
    let metrics = Metrics::default();
    let run = RunContext {
        run_id: "run-1",
        now_ms: 1_795_737_700_000,
        metrics: &metrics,
    };
    let outcome = lander.land(&batch, &settings, run).await;
    assert!(
        matches!(outcome, PartitionOutcome::Landed { .. }),
        "{outcome:?}"
    );
    let keys = objects.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(key.ends_with(compression.codec().suffix()), "{key}");
    let body = objects.body(key).unwrap();
    assert_eq!(Codec::of_body(&body), Some(compression.codec()));
    let path = dir.join(key.rsplit('/').next().unwrap());
    std::fs::write(&path, body).unwrap();
    path
}

/// Rows as DuckDB reads them: `cursor<TAB>payload` (the payload as DuckDB's JSON text).
fn duckdb_rows(path: &Path) -> Vec<(String, serde_json::Value)> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = r#"
import json, sys, duckdb
rows = duckdb.sql(
    "SELECT cursor, stream, CAST(payload AS VARCHAR) FROM read_json(?, format = 'newline_delimited', "
    "columns = {'cursor': 'VARCHAR', 'stream': 'VARCHAR', 'payload': 'JSON'})",
    params=[sys.argv[1]],
).fetchall()
for cursor, stream, payload in rows:
    assert stream == "orders", stream
    print(cursor + "\t" + payload)
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run `make venv` first", python.display()));
    assert!(
        out.status.success(),
        "duckdb could not read {} (run `make venv` if duckdb is missing): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (cursor, payload) = l.split_once('\t').unwrap();
            (cursor.to_owned(), serde_json::from_str(payload).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn duckdb_reads_gzip_and_zstd_objects_with_many_members() {
    let dir = std::env::temp_dir().join(format!("bronze-duckdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for compression in [
        Compression::default(),
        Compression::new(Codec::Zstd, 3).unwrap(),
        Compression::new(Codec::Gzip, 1).unwrap(),
    ] {
        let path = land(compression, &dir).await;
        let rows = duckdb_rows(&path);
        assert_eq!(rows.len() as u64, RECORDS, "{}", path.display());
        for (n, (cursor, payload)) in rows.iter().enumerate() {
            assert_eq!(cursor, &n.to_string());
            let expected: serde_json::Value = serde_json::from_slice(&self::payload(n as u64))
                .expect("the test's payloads are JSON");
            assert_eq!(payload, &expected, "{} cursor {n}", path.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_test_objects_have_several_members() {
    // 3000 records of up to 1 KB: well above one member, so the test above reads
    // multi-member objects.
    let bytes: usize = (0..RECORDS).map(|n| payload(n).len()).sum();
    assert!(bytes > 2 * bronze::bronze::MEMBER_TARGET_BYTES, "{bytes}");
}
