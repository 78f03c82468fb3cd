//! The publisher against real storage and a real catalog: landings through the engine
//! (in-memory state table and bucket), a SQLite SQL catalog and a local warehouse, read
//! back by pyiceberg (same catalog file) and DuckDB (the Parquet files the table lists).
//! Every committed record is in the table exactly once with its payload byte for byte,
//! after crashes at every step of a publish and with two publishers at once.

mod common;

use bronze::compress::Compression;
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::{Cursor as _, KafkaOffset, KinesisCursor, SequenceNumber};
use bronze::ports::StateStore as _;
use bronze::record::{PartitionId, Source};
use common::Env;
use iceberg::{Catalog, TableIdent};
use publish::publisher::PublishStep;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    env.check().await;

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
    let read = env.check().await;
    let summary = &read["summary"];
    // 125 single-record commits, then 7 records in 4 commits: commit-log position 129.
    assert_eq!(summary["bronze.watermark.kafka#orders#0"], "position:129");
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
        env.crash_at(catalog.as_ref(), step).await;
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
        env.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_at_once_publish_exactly_once() {
    let mut env = Env::new();
    let first = env.catalog().await;
    let second = env.catalog().await;
    let snapshots = env
        .two_publishers_at_once(first.as_ref(), second.as_ref(), 4)
        .await;
    assert!(snapshots >= 4);
    env.check().await;
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
    env.check().await;
}

fn settings(parallelization_factor: u32) -> StreamSettings {
    StreamSettings {
        group: None,
        payload_format: PayloadFormat::Auto,
        key_strategy: KeyStrategy::Raw,
        parallelization_factor,
        schema: None,
        compression: Compression::default(),
    }
}

fn kinesis_sequence(i: u64) -> KinesisCursor {
    let seq = format!("4959{:040}", 1_000_000 + i);
    KinesisCursor::plain(SequenceNumber::parse(&seq).expect("sequence"))
}

/// Kinesis with a ParallelizationFactor above 1: two lanes of one shard commit
/// interleaved entries, and the lane holding the lower sequence numbers commits after the
/// other lane's entries were published. A watermark on cursors would skip it forever (its
/// first cursor sorts below the published last one); the commit-log position does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interleaved_lane_committed_late_is_published_once() {
    let mut env = Env::new();
    let catalog = env.catalog().await;
    let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000007");
    let lanes = settings(2);
    // Lane 1 (odd sequence numbers) commits its first two batches; lane 0 nothing yet.
    env.land_batch(&id, [1, 3, 5], &lanes, kinesis_sequence)
        .await;
    env.land_batch(&id, [7, 9], &lanes, kinesis_sequence).await;
    let first = env.publish(catalog.as_ref()).await;
    assert_eq!((first.records, first.entries), (5, 2));
    // Lane 0 commits records 0..=8 (its first sorts below everything published), then
    // lane 1 goes on.
    env.land_batch(&id, [0, 2, 4], &lanes, kinesis_sequence)
        .await;
    env.land_batch(&id, [6, 8], &lanes, kinesis_sequence).await;
    env.land_batch(&id, [11, 13], &lanes, kinesis_sequence)
        .await;
    let log = env.state.commit_log(&id).await.expect("log");
    let mut positions: Vec<u64> = log.iter().filter_map(|e| e.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, [1, 2, 3, 4, 5], "positions in commit order");
    let at = |p: u64| log.iter().find(|e| e.position == Some(p)).expect("entry");
    assert!(
        at(3).first < at(2).last,
        "the late lane's entry sorts below the published cursors"
    );
    let second = env.publish(catalog.as_ref()).await;
    assert_eq!((second.records, second.entries), (7, 3));
    assert_eq!(env.publish(catalog.as_ref()).await.records, 0);
    let read = env.check().await;
    assert_eq!(
        read["summary"]["bronze.watermark.kinesis#clicks#shardId-000000000007"],
        "position:5"
    );
}

/// `streaming-connector reset` of a partition (a recreated topic: offsets start again at 0
/// with other records) between two publishes. The re-landed records reach the table once
/// each; the records published before the reset stay, told apart by `log_position` (at or
/// below the reset's floor); the records landed before the reset and never published were
/// archived with their objects and never reach the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_partition_is_published_again_exactly_once() {
    let mut env = Env::new();
    let catalog = env.catalog().await;
    let id = PartitionId::new(Source::Kafka, "orders", "0");
    let ordered = settings(1);
    env.land_batch(&id, 0..6, &ordered, KafkaOffset).await;
    env.land_batch(&id, 6..10, &ordered, KafkaOffset).await;
    assert_eq!(env.publish(catalog.as_ref()).await.records, 10);
    // Landed, not yet published, then archived by the reset.
    env.land_batch(&id, 10..15, &ordered, KafkaOffset).await;
    let reset = bronze::reset::reset_partition(
        env.objects.as_ref(),
        env.state.as_ref(),
        "bronze",
        &id,
        "reset-1",
        true,
    )
    .await
    .expect("reset");
    assert!(reset.applied && reset.state_items > 0);
    let positions = env.state.log_positions(&id).await.expect("positions");
    assert_eq!(
        positions,
        Some(bronze::ports::LogPositions {
            last: 3,
            reset_floor: 3
        })
    );
    // The recreated topic: offsets 0..12 again, other payloads (indices 100..).
    env.land_batch(&id, 100..104, &ordered, |i| KafkaOffset(i - 100))
        .await;
    env.land_batch(&id, 104..112, &ordered, |i| KafkaOffset(i - 100))
        .await;
    let report = env.publish(catalog.as_ref()).await;
    assert_eq!((report.records, report.entries), (12, 2));
    assert_eq!(env.publish(catalog.as_ref()).await.records, 0);

    let read = env.read();
    for engine in ["pyiceberg", "duckdb"] {
        let mut before: BTreeMap<String, usize> = BTreeMap::new();
        let mut after: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
        for row in read[engine].as_array().expect("rows") {
            let cursor = row["cursor"].as_str().expect("cursor").to_owned();
            let position = row["log_position"].as_i64().expect("log_position");
            if position <= 3 {
                *before.entry(cursor).or_default() += 1;
            } else {
                let seen = after.entry(cursor).or_default();
                seen.0 += 1;
                seen.1 = row["payload"].as_str().map(str::to_owned);
            }
        }
        let cursors = |n: u64| (0..n).map(|o| o.to_string()).collect::<Vec<_>>();
        assert_eq!(
            before.keys().cloned().collect::<Vec<_>>().len(),
            10,
            "{engine}"
        );
        assert!(before.values().all(|&n| n == 1), "{engine}: {before:?}");
        let mut want: Vec<String> = cursors(12);
        want.sort();
        assert_eq!(after.keys().cloned().collect::<Vec<_>>(), want, "{engine}");
        for (cursor, (n, payload)) in &after {
            assert_eq!(*n, 1, "{engine}: offset {cursor} twice after the reset");
            let key = (
                "kafka".to_owned(),
                "orders".to_owned(),
                "0".to_owned(),
                cursor.clone(),
            );
            assert_eq!(
                payload.as_ref(),
                env.expected[&key].0.as_ref(),
                "{engine}: offset {cursor} holds the re-landed record"
            );
        }
    }
}

/// `verify`'s table check finds nothing wrong with a published table, and finds both
/// faults a broken writer can cause: records the watermark covers but the table lacks, and
/// records the table holds twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_audit_finds_missing_and_doubled_records() {
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    use publish::audit::verify_table;
    use publish::publisher::ATTEMPT_PROPERTY;

    let mut env = Env::new();
    let catalog = env.catalog().await;
    let ident = TableIdent::from_strs(["bronze", "records"]).expect("ident");
    env.land(6, 2).await;
    env.publish(catalog.as_ref()).await;
    env.land(4, 2).await;
    let audit = |env: &Env, catalog: Arc<dyn Catalog>| {
        let ident = ident.clone();
        let state = env.state.clone();
        let objects = env.objects.clone();
        async move {
            verify_table(
                state.as_ref(),
                objects.as_ref(),
                catalog.as_ref(),
                &ident,
                None,
            )
            .await
            .expect("audit")
        }
    };
    let clean = audit(&env, catalog.clone()).await;
    assert_eq!(clean.violations, Vec::<(String, String)>::new());
    assert_eq!(
        (clean.partitions, clean.rows, clean.unpublished),
        (4, 24, 16)
    );

    // A writer that moves kafka#orders#1's watermark to its last position without its
    // records: 4 committed records the table lacks.
    let rogue = |marks: Vec<(String, String)>| {
        let catalog = catalog.clone();
        let ident = ident.clone();
        async move {
            let table = catalog.load_table(&ident).await.expect("load");
            let mut props: HashMap<String, String> =
                publish::publisher::published_watermarks(&table)
                    .into_iter()
                    .map(|(pk, w)| {
                        (
                            format!("{}{pk}", publish::plan::WATERMARK_PREFIX),
                            w.encode(),
                        )
                    })
                    .collect();
            props.extend(marks);
            props.insert(ATTEMPT_PROPERTY.to_owned(), "rogue".to_owned());
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .set_snapshot_properties(props)
                .apply(tx)
                .expect("apply");
            tx.commit(catalog.as_ref()).await.expect("commit");
        }
    };
    let last = env
        .state
        .log_positions(&PartitionId::new(Source::Kafka, "orders", "1"))
        .await
        .expect("positions")
        .expect("some")
        .last;
    rogue(vec![(
        "bronze.watermark.kafka#orders#1".to_owned(),
        format!("position:{last}"),
    )])
    .await;
    let missing = audit(&env, catalog.clone()).await;
    let lacking: Vec<_> = missing
        .violations
        .iter()
        .filter(|(p, m)| p == "kafka/orders/1" && m.contains("not in the table"))
        .collect();
    assert_eq!(lacking.len(), 4, "{:?}", missing.violations);

    // A writer that moves kafka#orders#2's watermark back to nothing: the next publish
    // publishes its records again.
    rogue(vec![(
        "bronze.watermark.kafka#orders#2".to_owned(),
        "position:0".to_owned(),
    )])
    .await;
    env.publish(catalog.as_ref()).await;
    let doubled = audit(&env, catalog.clone()).await;
    let twice: Vec<_> = doubled
        .violations
        .iter()
        .filter(|(p, m)| p == "kafka/orders/2" && m.contains("2 times"))
        .collect();
    assert_eq!(twice.len(), 6, "{:?}", doubled.violations);
}

/// A committed object that cannot be published as its commit-log entry says (overwritten
/// with something else, or gone) holds back its partition at that object: the entries
/// before it and every other partition are published, nothing is left behind in the
/// warehouse, every later publish stops there again, and once the object is back the rest
/// of the partition is published, each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_a_bad_object_is_held_back_and_the_others_published() {
    let mut env = Env::new();
    let catalog = env.catalog().await;
    // 4 partitions x 4 committed objects of 3 records.
    env.land(12, 3).await;
    let bad = PartitionId::new(Source::Kafka, "orders", "1");
    let log = env.state.commit_log(&bad).await.expect("log");
    assert_eq!(log.len(), 4);
    // Its third object: offsets 6 to 8.
    let key = log[2].object_key.clone().expect("an object");
    let body = env.objects.get(&key).await.expect("get").expect("object");
    let all = env.expected.clone();
    env.expected = all
        .iter()
        .filter(|((_, stream, partition, cursor), _)| {
            !(stream == "orders" && partition == "1") || cursor.parse::<u64>().is_ok_and(|o| o < 6)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(env.expected.len(), 42);

    env.objects
        .put(&key, b"not a Bronze object".to_vec())
        .await
        .expect("overwrite");
    let first = env.publish(catalog.as_ref()).await;
    assert_eq!(
        (first.records, first.partitions, first.entries),
        (42, 4, 14),
        "{first:?}"
    );
    assert_eq!(first.held_back.len(), 1, "{first:?}");
    assert_eq!(first.held_back[0].partition, "kafka/orders/1");
    assert!(first.held_back[0].reason.contains(&key), "{first:?}");
    let read = env.check().await;
    assert_eq!(
        read["summary"]["bronze.watermark.kafka#orders#1"],
        format!("position:{}", log[1].position.expect("a position")),
        "the watermark of the held-back partition is its last entry before the bad object"
    );

    // Still bad, and now gone: stopped there again, no snapshot, nothing left behind.
    env.objects.delete(&key).await.expect("delete");
    let again = env.publish(catalog.as_ref()).await;
    assert_eq!((again.snapshot_id, again.records), (None, 0), "{again:?}");
    assert_eq!(again.held_back.len(), 1, "{again:?}");
    assert!(again.held_back[0].reason.contains("missing"), "{again:?}");
    env.check().await;

    // The object restored: the rest of the partition is published, once.
    env.objects.put(&key, body).await.expect("restore");
    env.expected = all;
    let fixed = env.publish(catalog.as_ref()).await;
    assert_eq!((fixed.records, fixed.partitions), (6, 1), "{fixed:?}");
    assert!(fixed.held_back.is_empty(), "{fixed:?}");
    env.check().await;
}

/// A store that refuses to read one key, as S3 answers for an object it will not serve
/// (access denied to it, or archived to a storage class that needs a restore).
#[derive(Debug)]
struct Refusing {
    inner: Arc<dyn bronze::ports::ObjectStore>,
    key: String,
}

#[async_trait::async_trait]
impl bronze::ports::ObjectStore for Refusing {
    async fn put_if_absent(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> Result<bronze::ports::PutOutcome, bronze::ports::PortError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), bronze::ports::PortError> {
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, bronze::ports::PortError> {
        if key == self.key {
            return Err(bronze::ports::PortError::Permanent {
                operation: "s3:GetObject",
                target: key.to_owned(),
                message: "InvalidObjectState: the object is archived".into(),
            });
        }
        self.inner.get(key).await
    }
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<String>, bronze::ports::PortError> {
        self.inner.list_after(prefix, start_after).await
    }
    async fn delete(&self, key: &str) -> Result<(), bronze::ports::PortError> {
        self.inner.delete(key).await
    }
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
}

/// An object the store permanently refuses to serve holds its partition back like a missing
/// one (PublishError::Unreadable), instead of failing every publish; once it can be read,
/// the rest of the partition is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_store_refuses_holds_back_its_partition() {
    let mut env = Env::new();
    let catalog = env.catalog().await;
    env.land(12, 3).await;
    let bad = PartitionId::new(Source::Kafka, "orders", "2");
    let log = env.state.commit_log(&bad).await.expect("log");
    // Its first object: nothing of the partition can be published.
    let key = log[0].object_key.clone().expect("an object");
    let all = env.expected.clone();
    env.expected = all
        .iter()
        .filter(|((_, stream, partition, _), _)| !(stream == "orders" && partition == "2"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let store = env.objects.clone();
    env.objects = Arc::new(Refusing {
        inner: store.clone(),
        key: key.clone(),
    });
    let held = env.publish(catalog.as_ref()).await;
    assert_eq!((held.records, held.partitions), (36, 3), "{held:?}");
    assert_eq!(held.held_back.len(), 1, "{held:?}");
    assert_eq!(held.held_back[0].partition, "kafka/orders/2");
    assert!(
        held.held_back[0].reason.contains("cannot be read")
            && held.held_back[0].reason.contains(&key),
        "{held:?}"
    );
    env.check().await;

    env.objects = store;
    env.expected = all;
    let fixed = env.publish(catalog.as_ref()).await;
    assert_eq!((fixed.records, fixed.partitions), (12, 1), "{fixed:?}");
    assert!(fixed.held_back.is_empty(), "{fixed:?}");
    env.check().await;
}
