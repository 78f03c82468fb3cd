//! The scheduled publisher's handler logic against the local stack (moto: S3, DynamoDB and
//! Glue): records landed by the engine through its AWS adapters (the Bronze bucket and the
//! state table the functions use), then the function's job built from its environment, run
//! as each scheduled invocation runs it. Afterwards the Glue table holds every committed
//! record once (the `verify --catalog` audit against the DynamoDB commit log, and pyiceberg
//! reading the table through Glue), a run with nothing new adds no snapshot, and a run after
//! more landings appends.

use anyhow::{Context, Result, ensure};
use bronze::aws::{DynamoStateStore, S3ObjectStore};
use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
use bronze::cursor::KafkaOffset;
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::memory::{Faults, MemoryDlq};
use bronze::record::{PartitionBatch, PartitionId, Record, Source};
use bronze::telemetry::Metrics;
use integration_tests::{Stack, aws_env, workspace};
use publish::job::PublishJob;
use std::collections::BTreeMap;
use std::sync::Arc;

const PARTITIONS: u32 = 3;

/// Lands `n` records on each partition of topic `orders`, from offset `from`, in batches of
/// `batch`; payload `{"offset":<o>,"p":<p>}`.
async fn land(stack: &Stack, from: u64, n: u64, batch: usize) -> Result<()> {
    let lander = Lander::new(
        Arc::new(S3ObjectStore::new(&stack.sdk, &stack.bucket)),
        Arc::new(DynamoStateStore::new(&stack.sdk, &stack.table)),
        Arc::new(MemoryDlq::new(Faults::new())),
        stack.prefix.clone(),
    );
    let settings = StreamSettings {
        group: Some("commerce".into()),
        payload_format: PayloadFormat::Auto,
        key_strategy: KeyStrategy::Raw,
        parallelization_factor: 1,
        schema: None,
        compression: Default::default(),
    };
    let metrics = Metrics::default();
    let run = RunContext {
        run_id: "scheduled-publish-test",
        now_ms: 1_764_201_600_000,
        metrics: &metrics,
    };
    for p in 0..PARTITIONS {
        let id = PartitionId::new(Source::Kafka, "orders", p.to_string());
        let records: Vec<Record<KafkaOffset>> = (from..from + n)
            .map(|o| Record {
                cursor: KafkaOffset(o),
                key: Some(format!("k{o}").into_bytes()),
                headers: vec![],
                timestamp_ms: Some(1_764_201_600_000 + o as i64),
                payload: Some(format!("{{\"offset\":{o},\"p\":{p}}}").into_bytes()),
                defect: None,
                schema_id: None,
            })
            .collect();
        for chunk in records.chunks(batch) {
            let batch = PartitionBatch {
                id: id.clone(),
                records: chunk.to_vec(),
            };
            let outcome = lander.land(&batch, &settings, run).await;
            ensure!(
                matches!(outcome, PartitionOutcome::Landed { .. }),
                "{outcome:?}"
            );
        }
    }
    Ok(())
}

/// The function's environment for this stack: the Glue catalog, the warehouse in the Bronze
/// bucket, a database of its own.
fn job(stack: &Stack, database: &str) -> Result<PublishJob> {
    let mut vars: BTreeMap<String, String> = aws_env().into_iter().collect();
    vars.insert("BRONZE_BUCKET".into(), stack.bucket.clone());
    vars.insert("STATE_TABLE".into(), stack.table.clone());
    vars.insert("ICEBERG_CATALOG".into(), "glue".into());
    vars.insert(
        "ICEBERG_WAREHOUSE".into(),
        format!("s3://{}/iceberg", stack.bucket),
    );
    vars.insert("ICEBERG_TABLE".into(), format!("{database}.records"));
    Ok(PublishJob::from_lookup(|name| vars.get(name).cloned())?)
}

/// `verify --catalog`'s audit: the table against the DynamoDB commit log.
async fn audit(stack: &Stack, job: &PublishJob) -> Result<publish::audit::TableAudit> {
    let catalog = publish::catalog::open(&job.catalog, &job.warehouse, job.props.clone()).await?;
    Ok(publish::audit::verify_table(
        &stack.state(),
        &stack.objects(),
        catalog.as_ref(),
        &job.table,
        None,
    )
    .await?)
}

/// The rows pyiceberg reads through Glue (`scripts/read_iceberg.py`), as (partition, cursor)
/// to payload.
fn read(job: &PublishJob) -> Result<BTreeMap<(String, String), String>> {
    let python = workspace().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg(workspace().join("scripts/read_iceberg.py"))
        .arg(job.catalog.to_string())
        .arg(&job.warehouse)
        .arg(job.table.to_string())
        .envs(aws_env())
        .output()
        .with_context(|| format!("run {}: `make venv` installs it", python.display()))?;
    ensure!(
        out.status.success(),
        "read_iceberg.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut rows = BTreeMap::new();
    for row in read["pyiceberg"].as_array().context("rows")? {
        let s = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
        let key = (s("partition"), s("cursor"));
        ensure!(
            rows.insert(key.clone(), s("payload")).is_none(),
            "{key:?} twice"
        );
    }
    Ok(rows)
}

fn expected(offsets: std::ops::Range<u64>) -> BTreeMap<(String, String), String> {
    (0..PARTITIONS)
        .flat_map(|p| {
            offsets.clone().map(move |o| {
                (
                    (p.to_string(), o.to_string()),
                    format!("{{\"offset\":{o},\"p\":{p}}}"),
                )
            })
        })
        .collect()
}

/// A fresh stack with 10 records landed on each partition, and a job for a database of its
/// own.
async fn landed() -> Result<(Stack, String, PublishJob)> {
    let stack = Stack::new().await?;
    let database = format!(
        "bronze_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let job = job(&stack, &database)?;
    land(&stack, 0, 10, 3).await?;
    Ok((stack, database, job))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_publish_the_state_table_to_glue_exactly_once() -> Result<()> {
    let (stack, database, job) = landed().await?;

    // The first run creates the Glue database and table and publishes everything committed.
    let first = job.run(&stack.sdk).await?;
    ensure!(
        (first.records, first.entries, first.partitions) == (30, 12, 3),
        "{first:?}"
    );
    let glue = aws_sdk_glue::Client::new(&stack.sdk);
    let table = glue
        .get_table()
        .database_name(&database)
        .name("records")
        .send()
        .await?
        .table
        .context("the Glue table")?;
    let params = table.parameters.unwrap_or_default();
    ensure!(
        params.get("table_type").map(String::as_str) == Some("ICEBERG"),
        "{params:?}"
    );
    let clean = audit(&stack, &job).await?;
    ensure!(clean.violations.is_empty(), "{:?}", clean.violations);
    ensure!(
        (clean.partitions, clean.rows, clean.unpublished) == (3, 30, 0),
        "{clean:?}"
    );
    ensure!(
        read(&job)? == expected(0..10),
        "the table after the first run"
    );

    // A run with nothing new adds no snapshot.
    let idle = job.run(&stack.sdk).await?;
    ensure!(idle.snapshot_id.is_none() && idle.records == 0, "{idle:?}");

    // More landings: the next run appends exactly them.
    land(&stack, 10, 5, 2).await?;
    let second = job.run(&stack.sdk).await?;
    ensure!((second.records, second.entries) == (15, 9), "{second:?}");
    check_table(
        &stack,
        &job,
        (45, 0),
        expected(0..15),
        "after the second run",
    )
    .await
}

/// The table audit finds no violation and `(rows, unpublished records)`, and pyiceberg reads
/// exactly `want` through Glue.
async fn check_table(
    stack: &Stack,
    job: &PublishJob,
    counts: (u64, u64),
    want: BTreeMap<(String, String), String>,
    when: &str,
) -> Result<()> {
    let audit = audit(stack, job).await?;
    ensure!(
        audit.violations.is_empty(),
        "{when}: {:?}",
        audit.violations
    );
    ensure!(
        (audit.rows, audit.unpublished) == counts,
        "{when}: {audit:?}"
    );
    ensure!(read(job)? == want, "the table {when}");
    Ok(())
}

/// Waits (at most `limit`) until the table audit shows `rows` rows; fails with the last audit.
async fn wait_for_rows(stack: &Stack, job: &PublishJob, rows: u64) -> Result<()> {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let audit = audit(stack, job).await;
        if audit
            .as_ref()
            .is_ok_and(|a| a.rows == rows && a.unpublished == 0)
        {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < limit,
            "the continuous publisher never published {rows} rows: {audit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `streaming-connector publish --every`: one publisher publishing continuously picks up what
/// lands meanwhile, publishes each record once, and stops between publishes when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_publishing_picks_up_new_landings_and_stops_between_publishes() -> Result<()> {
    let (stack, _database, job) = landed().await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut published = Vec::new();
    // Lands while the publisher runs, then tells it to stop (also when a wait failed).
    let driver = async {
        let result = async {
            wait_for_rows(&stack, &job, 30).await?;
            land(&stack, 10, 5, 2).await?;
            wait_for_rows(&stack, &job, 45).await
        }
        .await;
        stop.send(()).ok();
        result
    };
    let publisher = job.run_every(
        &stack.sdk,
        std::time::Duration::from_millis(200),
        async {
            let _ = stopped.await;
        },
        |report| published.push(report.records),
    );
    let (runs, driven) = tokio::join!(publisher, driver);
    driven?;
    let runs = runs?;

    ensure!(
        runs >= 2 && published.len() as u64 == runs,
        "{runs} runs: {published:?}"
    );
    ensure!(published.iter().sum::<u64>() == 45, "{published:?}");
    let after = audit(&stack, &job).await?;
    ensure!(after.violations.is_empty(), "{:?}", after.violations);
    ensure!(
        read(&job)? == expected(0..15),
        "the table after continuous publishing"
    );
    Ok(())
}

/// A committed object gone from the bucket (deleted by hand, or expired by a lifecycle rule
/// before it was published) holds back its partition at that object: the scheduled run
/// publishes the entries before it and every other partition, then fails naming the
/// partition and the object; the warehouse holds only the table's files; and the first run
/// after the object is back publishes the rest of the partition, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_holds_back_its_partition_and_the_others_are_published() -> Result<()> {
    use bronze::ports::{ObjectStore as _, StateStore as _};
    let (stack, _database, job) = landed().await?;
    let (objects, state) = (stack.objects(), stack.state());
    let id = PartitionId::new(Source::Kafka, "orders", "1");
    // Its third object: offsets 6 to 8 (the fourth holds offset 9).
    let key = state
        .commit_log(&id)
        .await?
        .get(2)
        .and_then(|e| e.object_key.clone())
        .context("a third committed object")?;
    let body = objects.get(&key).await?.context("the object")?;
    objects.delete(&key).await?;

    let held = match job.run_complete(&stack.sdk).await {
        Err(publish::job::JobError::HeldBack { report }) => report,
        other => anyhow::bail!("expected the partition held back: {other:?}"),
    };
    ensure!((held.records, held.partitions) == (26, 3), "{held:?}");
    ensure!(held.held_back.len() == 1, "{held:?}");
    ensure!(held.held_back[0].partition == "kafka/orders/1", "{held:?}");
    ensure!(held.held_back[0].reason.contains(&key), "{held:?}");
    let mut published = expected(0..10);
    published.retain(|(partition, offset), _| {
        partition != "1" || offset.parse::<u64>().is_ok_and(|o| o < 6)
    });
    check_table(&stack, &job, (26, 4), published, "with orders/1 held back").await?;
    // Only the table's own data files in the warehouse, one per partition.
    let parquet: Vec<String> = objects
        .list_after("iceberg/", "")
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    ensure!(parquet.len() == 3, "one file per partition: {parquet:?}");

    // The object back: the next run publishes the rest of the partition, exactly once.
    objects.put(&key, body).await?;
    let fixed = job.run_complete(&stack.sdk).await?;
    ensure!(
        (fixed.records, fixed.partitions) == (4, 1) && fixed.held_back.is_empty(),
        "{fixed:?}"
    );
    check_table(
        &stack,
        &job,
        (30, 0),
        expected(0..10),
        "after the object came back",
    )
    .await
}
