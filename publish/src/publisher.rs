//! One publish: committed Bronze objects past the watermarks become one Iceberg snapshot.
//!
//! Steps (each one a crash point in tests, [`PublishStep`]):
//! 1. Load the table; read the watermarks from the summary of its newest snapshot that a
//!    publisher made ([`published_watermarks`]).
//! 2. For every partition of the state table (ordered, interleaved or reset:
//!    `StateStore::logged_partitions`), read its commit-log positions, then its commit log,
//!    and take the entries just above its watermark in commit-log position order
//!    ([`crate::plan::pending`]).
//! 3. Per partition (two partitions at a time), read the taken objects and check each holds
//!    the number of records its entry says, with cursors inside its range (a few objects at
//!    a time are fetched, decompressed, parsed and turned into Arrow batches on the blocking
//!    pool while the partition's writer task encodes Parquet), and write one Parquet data
//!    file per stream partition and day (rolled at the target size), named after the
//!    partition and the first cursor taken.
//! 4. Append all files in one snapshot whose summary carries every watermark (moved ones
//!    and carried ones) and this attempt's id, through [`Fenced`]: the commit succeeds only
//!    on the snapshot it was planned on.
//! 5. Delete data files that the table does not reference and that start at or below their
//!    partition's watermark: orphans of crashed or fenced attempts.
//!
//! A crash anywhere leaves the table at a snapshot whose watermarks describe exactly its
//! records, so a rerun takes exactly what is missing. Two publishers at once: one commit
//! wins, the other sees the conflict, deletes its files and plans again.

use crate::catalog::{Fenced, ensure_table};
use crate::plan::{
    self, PlanError, Watermark, file_prefix, partition_key, partition_tag, watermark_key,
};
use crate::table::{LineError, Row, parse_line, to_batch};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use bronze::ports::{CommitEntry, ObjectStore, PortError, StateStore};
use bronze::record::PartitionId;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileFormat, Literal, PartitionKey, PartitionSpec, SchemaRef, Struct,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, ErrorKind, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Summary property naming the publish attempt that made a snapshot.
pub const ATTEMPT_PROPERTY: &str = "bronze.publish-attempt";

/// Errors of a publish. Every variant but [`PublishError::Crashed`] leaves the table as it
/// was or at a complete snapshot; rerunning is always safe.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The catalog or the table's storage failed.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// The state table or the Bronze bucket failed.
    #[error("state or objects: {0}")]
    Port(#[from] PortError),
    /// A committed object is missing: permanent, the commit log and the bucket disagree.
    #[error("{partition}: committed object {object_key} is missing")]
    MissingObject {
        /// The partition.
        partition: String,
        /// The object its commit log names.
        object_key: String,
    },
    /// A committed object is not what its commit-log entry says: permanent.
    #[error("{partition}: object {object_key}: {detail}")]
    BadObject {
        /// The partition.
        partition: String,
        /// The object.
        object_key: String,
        /// What is wrong.
        detail: String,
    },
    /// A committed object cannot be read for a reason a retry does not fix (access denied
    /// to it, or archived to a storage class that needs a restore): permanent.
    #[error("{partition}: committed object {object_key} cannot be read: {source}")]
    Unreadable {
        /// The partition.
        partition: String,
        /// The object its commit log names.
        object_key: String,
        /// The storage's answer (boxed: the error stays small).
        source: Box<PortError>,
    },
    /// A line of a committed object is not a Bronze line: permanent.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The table and the state table disagree about a partition: permanent.
    #[error("{partition}: {source}")]
    Plan {
        /// The partition.
        partition: String,
        /// What disagrees.
        source: PlanError,
    },
    /// A decoding task on the blocking pool did not finish (the runtime is shutting down).
    #[error("decoding an object: {0}")]
    Decode(String),
    /// Building an Arrow batch failed (a schema bug, not data).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Control flow: other publishers kept winning for `attempts` attempts.
    #[error("gave up after {attempts} attempts lost to concurrent publishers")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// Control flow for tests: a crash injected at this step.
    #[error("crash injected {0:?}")]
    Crashed(PublishStep),
}

impl PublishError {
    /// Whether the error belongs to one committed object (missing, unreadable, not what its
    /// commit-log entry says): its partition is published up to the entry before it and
    /// then held back, and the other partitions are published. A commit log the table
    /// disagrees with ([`PublishError::Plan`]) is not one of them: it means the state table
    /// was replaced, which concerns every partition, so it stops the publish.
    pub fn holds_back_partition(&self) -> bool {
        matches!(
            self,
            PublishError::MissingObject { .. }
                | PublishError::Unreadable { .. }
                | PublishError::BadObject { .. }
                | PublishError::Line(_)
        )
    }

    /// Whether retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PublishError::Iceberg(_) | PublishError::Contended { .. } | PublishError::Decode(_) => {
                true
            }
            PublishError::Port(e) => e.is_transient(),
            PublishError::Crashed(_) => true,
            _ => false,
        }
    }
}

/// The points between the side effects of a publish, where tests inject a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PublishStep {
    /// Planned, nothing written.
    BeforeWrite = 1,
    /// The first partition's data files are written; the next one's may be under way (two
    /// partitions are written at once), the others are not started.
    AfterFirstFile = 2,
    /// Every data file is written; the catalog commit has not started.
    BeforeCommit = 3,
    /// The catalog commit succeeded; the orphan sweep has not run.
    AfterCommit = 4,
}

/// A crash to inject once (tests); `PublishFaults::default()` injects nothing.
#[derive(Debug, Default)]
pub struct PublishFaults(AtomicU8);

impl PublishFaults {
    /// Arms a crash at `step`, fired once.
    pub fn arm(&self, step: PublishStep) {
        self.0.store(step as u8, Ordering::SeqCst);
    }

    fn check(&self, step: PublishStep) -> Result<(), PublishError> {
        if self
            .0
            .compare_exchange(step as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(PublishError::Crashed(step));
        }
        Ok(())
    }
}

/// Knobs of a publish.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Parquet files roll over at this size (compaction target).
    pub target_file_bytes: usize,
    /// Rows per Arrow batch handed to the Parquet writer.
    pub rows_per_batch: usize,
    /// Attempts before giving up to concurrent publishers.
    pub max_attempts: u32,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            target_file_bytes: 128 * 1024 * 1024,
            rows_per_batch: 8192,
            max_attempts: 10,
        }
    }
}

/// What a publish did (printed by `publish`, returned by the scheduled function).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PublishReport {
    /// The snapshot it committed, `None` when there was nothing to publish.
    pub snapshot_id: Option<i64>,
    /// Records appended.
    pub records: u64,
    /// Commit-log entries taken.
    pub entries: usize,
    /// Data files appended.
    pub files: usize,
    /// Partitions that moved.
    pub partitions: usize,
    /// Attempts made (more than one after losing to another publisher).
    pub attempts: u32,
    /// Orphaned data files deleted.
    pub orphans_deleted: usize,
    /// Partitions stopped at a committed object that cannot be published as its commit-log
    /// entry says (missing, unreadable, or not what the entry says). Each one's entries
    /// before that object are in this snapshot and its watermark moved to the last of them;
    /// every later publish starts again at the object. The other partitions were published.
    /// Non-empty means the publish needs attention: the job fails (after committing) so
    /// alarms fire.
    pub held_back: Vec<HeldBack>,
}

/// A partition a publish stopped at a committed object it cannot publish, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldBack {
    /// The partition (`source/stream/partition`).
    pub partition: String,
    /// The error, naming the object.
    pub reason: String,
}

/// Publishes committed Bronze objects to one Iceberg table.
#[derive(Debug)]
pub struct Publisher<'a> {
    /// The state table: partitions and commit logs.
    pub state: &'a dyn StateStore,
    /// The Bronze bucket.
    pub objects: &'a dyn ObjectStore,
    /// The Iceberg catalog.
    pub catalog: &'a dyn Catalog,
    /// The table.
    pub table: TableIdent,
    /// Knobs.
    pub settings: PublishSettings,
    /// Crash injection (tests).
    pub faults: Arc<PublishFaults>,
}

/// One partition's share of a publish.
struct Taken {
    id: PartitionId,
    entries: Vec<CommitEntry>,
    moved: Watermark,
}

impl Publisher<'_> {
    /// Runs one publish to completion (retrying when another publisher wins the commit).
    pub async fn publish(&self) -> Result<PublishReport, PublishError> {
        ensure_table(self.catalog, &self.table).await?;
        for attempt in 1..=self.settings.max_attempts {
            let table = self.catalog.load_table(&self.table).await?;
            match self.attempt(&table).await? {
                Some(mut report) => {
                    report.attempts = attempt;
                    return Ok(report);
                }
                None => {
                    tracing::info!(table = %self.table, attempt, "publish lost a commit race; planning again");
                }
            }
        }
        Err(PublishError::Contended {
            attempts: self.settings.max_attempts,
        })
    }

    /// One attempt; `None` when another publisher committed first.
    async fn attempt(&self, table: &Table) -> Result<Option<PublishReport>, PublishError> {
        let base_id = table.metadata().current_snapshot_id();
        let marks = published_watermarks(table);

        let mut taken = Vec::new();
        let mut partitions = self.state.logged_partitions().await?;
        partitions.sort_by_key(partition_key);
        for id in &partitions {
            // Positions first: a position at or below the floor missing from the log read
            // after it was archived by a reset (plan::pending).
            let positions = self.state.log_positions(id).await?;
            let log = self.state.commit_log(id).await?;
            let (entries, moved) = plan::pending(&log, marks.get(&partition_key(id)), positions)
                .map_err(|source| PublishError::Plan {
                    partition: id.to_string(),
                    source,
                })?;
            if let Some(moved) = moved {
                taken.push(Taken {
                    id: id.clone(),
                    entries: entries.into_iter().cloned().collect(),
                    moved,
                });
            }
        }
        if taken.is_empty() {
            return self.no_snapshot(table, &partitions, Vec::new()).await;
        }

        self.faults.check(PublishStep::BeforeWrite)?;
        let attempt_id = uuid::Uuid::new_v4().simple().to_string();
        let mut files: Vec<DataFile> = Vec::new();
        let mut records = 0u64;
        // Partitions are written PARTITIONS_AT_ONCE at a time, each by its own writer task;
        // results come back in partition order. A partition stopped by a bad object moves
        // to the entry before it and is held back; any other error fails the attempt.
        let mut written = futures::stream::iter(&taken)
            .map(|part| {
                let attempt_id = &attempt_id;
                async move { (part, self.write_partition(table, part, attempt_id).await) }
            })
            .buffered(PARTITIONS_AT_ONCE);
        // Each partition that moves, with the watermark it moves to and its entries taken.
        let mut moved: Vec<(&Taken, Watermark, usize)> = Vec::new();
        let mut held_back = Vec::new();
        while let Some((part, result)) = written.next().await {
            let out = result?;
            records += out.records;
            files.extend(out.files);
            let taken_entries = match out.stopped {
                None => part.entries.len(),
                Some((at, error)) => {
                    held_back.push(hold_back(&part.id, &error));
                    at
                }
            };
            // Entries are taken in log order, so the ones before a bad entry can move.
            if let Some(last) = taken_entries
                .checked_sub(1)
                .and_then(|i| part.entries.get(i))
            {
                let mark = if taken_entries == part.entries.len() {
                    part.moved.clone()
                } else {
                    Watermark::of(last)
                };
                moved.push((part, mark, taken_entries));
                if moved.len() == 1 {
                    self.faults.check(PublishStep::AfterFirstFile)?;
                }
            }
        }
        drop(written);
        if moved.is_empty() {
            // Every partition with something to publish was held back at its first entry.
            return self.no_snapshot(table, &partitions, held_back).await;
        }

        let mut properties: HashMap<String, String> = marks
            .iter()
            .map(|(pk, w)| (format!("{}{pk}", plan::WATERMARK_PREFIX), w.encode()))
            .collect();
        for (part, mark, _) in &moved {
            properties.insert(watermark_key(&part.id), mark.encode());
        }
        properties.insert(ATTEMPT_PROPERTY.to_owned(), attempt_id.clone());

        self.faults.check(PublishStep::BeforeCommit)?;
        let file_paths: Vec<String> = files.iter().map(|f| f.file_path().to_owned()).collect();
        let tx = Transaction::new(table);
        let action = tx
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(properties);
        let tx = action.apply(tx)?;
        let fenced = Fenced {
            inner: self.catalog,
            table: &self.table,
            expected: base_id,
        };
        let committed = match tx.commit(&fenced).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                // A retried commit may have succeeded before its retry saw the conflict:
                // only this attempt's own snapshot can say so.
                let current = self.catalog.load_table(&self.table).await?;
                if !committed_by(&current, base_id, &attempt_id) {
                    self.delete_files(table, &file_paths).await;
                    return Ok(None);
                }
                current
            }
            Err(e) => return Err(e.into()),
        };
        self.faults.check(PublishStep::AfterCommit)?;
        let orphans_deleted = self.sweep(&committed, &partitions).await?;
        let report = PublishReport {
            snapshot_id: committed.metadata().current_snapshot_id(),
            records,
            entries: moved.iter().map(|(_, _, n)| n).sum(),
            files: file_paths.len(),
            partitions: moved.len(),
            attempts: 0,
            orphans_deleted,
            held_back,
        };
        tracing::info!(
            table = %self.table,
            snapshot_id = ?report.snapshot_id,
            records = report.records,
            files = report.files,
            partitions = report.partitions,
            "published"
        );
        Ok(Some(report))
    }

    /// The end of an attempt that commits nothing: the sweep, and a report of what was held
    /// back.
    async fn no_snapshot(
        &self,
        table: &Table,
        partitions: &[PartitionId],
        held_back: Vec<HeldBack>,
    ) -> Result<Option<PublishReport>, PublishError> {
        let orphans_deleted = self.sweep(table, partitions).await?;
        Ok(Some(PublishReport {
            orphans_deleted,
            held_back,
            ..PublishReport::default()
        }))
    }

    /// Writes a partition's taken entries: one data file per day (rolled at the target
    /// size), rows in commit-log and line order. Objects are fetched and decoded into Arrow
    /// batches ([`decode_object`]) up to [`DECODE_AHEAD`] at a time on the blocking pool,
    /// and handed in order to this partition's writer task, which encodes Parquet; so
    /// reading, decompressing, parsing and encoding overlap, and at most that many objects'
    /// batches (plus [`WRITE_AHEAD`] in the channel) are held at once.
    ///
    /// An entry whose object cannot be published ([`PublishError::holds_back_partition`])
    /// stops the partition there: the files then hold exactly the entries before it, and
    /// [`PartitionWritten::stopped`] says where and why. Any other error deletes this
    /// attempt's files of the partition and is returned.
    async fn write_partition(
        &self,
        table: &Table,
        part: &Taken,
        attempt_id: &str,
    ) -> Result<PartitionWritten, PublishError> {
        let Some(first) = part.entries.first() else {
            return Ok(PartitionWritten::default());
        };
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
        let mut days = DayFiles {
            stream: part.id.stream.clone(),
            spec: metadata.default_partition_spec().as_ref().clone(),
            schema,
            properties: writer_properties(),
            target_file_bytes: self.settings.target_file_bytes,
            file_io: table.file_io().clone(),
            locations: DefaultLocationGenerator::new(metadata)?,
            // Clones share the file counter, so every day's files get distinct names.
            names: DefaultFileNameGenerator::new(
                file_prefix(&part.id, first, attempt_id),
                None,
                DataFileFormat::Parquet,
            ),
            open: BTreeMap::new(),
        };
        let batch_rows = self.settings.rows_per_batch.max(1);
        let partition = part.id.to_string();

        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<i32>, RecordBatch)>(WRITE_AHEAD);
        // Dropped on any early return: the writer task is aborted with it.
        let mut writer = AbortOnDrop(tokio::spawn(async move {
            while let Some((day, batch)) = rx.recv().await {
                days.write(day, batch).await?;
            }
            days.close().await
        }));
        let mut decoded = futures::stream::iter(&part.entries)
            .map(|entry| self.decode_object(&partition, entry, &arrow_schema, batch_rows))
            .buffered(DECODE_AHEAD);
        let mut records = 0u64;
        let mut fed = Ok(());
        let mut stopped = None;
        let mut at = 0;
        'feed: loop {
            match decoded.next().await {
                Some(Ok(object)) => {
                    for (day, batches) in object {
                        for batch in batches {
                            records += batch.num_rows() as u64;
                            if tx.send((day, batch)).await.is_err() {
                                break 'feed; // the writer stopped: its result says why
                            }
                        }
                    }
                    at += 1;
                }
                None => break,
                // Nothing of this entry was sent: the files hold the entries before it.
                Some(Err(e)) if e.holds_back_partition() => {
                    stopped = Some((at, e));
                    break;
                }
                Some(Err(e)) => {
                    fed = Err(e);
                    break;
                }
            }
        }
        drop(decoded);
        drop(tx);
        let written = match (&mut writer.0).await {
            Ok(files) => files,
            // A panic is a bug in the writer, not something data can cause: surface it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(PublishError::Decode(format!("writing Parquet: {e}"))),
        };
        match (fed, written) {
            (Ok(()), written) => Ok(PartitionWritten {
                records,
                files: written?,
                stopped,
            }),
            (Err(e), Ok(files)) => {
                // These files will not be committed, and they start above the watermark: the
                // sweep only reaches them once the partition has moved past them.
                let paths: Vec<String> = files.iter().map(|f| f.file_path().to_owned()).collect();
                self.delete_files(table, &paths).await;
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Fetches one taken entry's object and decodes it on the blocking pool
    /// ([`decode_rows`]) into Arrow batches of at most `batch_rows` rows, grouped by day,
    /// in line order within each day. Empty for an entry whose records were all
    /// dead-lettered (no object).
    async fn decode_object(
        &self,
        partition: &str,
        entry: &CommitEntry,
        schema: &ArrowSchemaRef,
        batch_rows: usize,
    ) -> Result<DayBatches, PublishError> {
        let Some(key) = &entry.object_key else {
            return Ok(Vec::new()); // every record of the range was dead-lettered
        };
        let body = match fetch_object(self.objects, partition, key).await {
            Err(PublishError::Port(source)) if !source.is_transient() => {
                return Err(PublishError::Unreadable {
                    partition: partition.to_owned(),
                    object_key: key.clone(),
                    source: Box::new(source),
                });
            }
            fetched => fetched?,
        };
        let (partition, entry, key) = (partition.to_owned(), entry.clone(), key.clone());
        let schema = schema.clone();
        match tokio::task::spawn_blocking(move || {
            let days = decode_rows(&partition, &entry, &key, &body)?;
            drop(body);
            days.into_iter()
                .map(|(day, rows)| {
                    let batches = rows
                        .chunks(batch_rows)
                        .map(|chunk| to_batch(&schema, chunk))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((day, batches))
                })
                .collect::<Result<DayBatches, PublishError>>()
        })
        .await
        {
            Ok(decoded) => decoded,
            // A panic is a bug in the decoder, not something data can cause: surface it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(PublishError::Decode(e.to_string())),
        }
    }

    /// Best-effort deletion of an attempt's own files after it lost the commit.
    async fn delete_files(&self, table: &Table, paths: &[String]) {
        for path in paths {
            if let Err(e) = table.file_io().delete(path).await {
                tracing::warn!(path, error = %e, "could not delete an uncommitted data file; the next publish sweeps it");
            }
        }
    }

    /// Deletes orphaned data files (see [`plan::is_orphan`]) of a table in a local
    /// (`file://`) warehouse, or in the Bronze bucket. Returns how many it deleted.
    async fn sweep(
        &self,
        table: &Table,
        partitions: &[PartitionId],
    ) -> Result<usize, PublishError> {
        if table.metadata().current_snapshot().is_none() {
            return Ok(0);
        }
        let marks = published_watermarks(table);
        let by_tag: HashMap<String, Watermark> = partitions
            .iter()
            .filter_map(|id| {
                marks
                    .get(&partition_key(id))
                    .map(|w| (partition_tag(id), w.clone()))
            })
            .collect();
        let data_dir = format!("{}/data", table.metadata().location().trim_end_matches('/'));
        let listed = self.list_files(&data_dir).await?;
        if listed.is_empty() {
            return Ok(0);
        }
        let referenced: HashSet<String> = table
            .scan()
            .select_all()
            .build()?
            .plan_files()
            .await?
            .map_ok(|task| task.data_file_path().to_owned())
            .try_collect()
            .await?;
        let mut deleted = 0;
        for path in listed {
            let name = path.rsplit('/').next().unwrap_or_default();
            if !referenced.contains(&path) && plan::is_orphan(name, &by_tag) {
                // Another publisher (the attempt that lost, or a concurrent sweep) may delete
                // it first; whatever is left is swept by the next publish.
                match table.file_io().delete(&path).await {
                    Ok(()) => {
                        tracing::info!(path, "deleted an orphaned data file");
                        deleted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path, error = %e, "could not delete an orphaned data file; the next publish sweeps it");
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Every file under `dir` (a `file://` path or a location in the Bronze bucket).
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, PublishError> {
        if let Some(local) = dir.strip_prefix("file://") {
            return Ok(list_local(std::path::Path::new(local))
                .into_iter()
                .map(|p| format!("file://{}", p.display()))
                .collect());
        }
        let bucket_url = self.objects.url("");
        if let Some(prefix) = dir.strip_prefix(&bucket_url) {
            let keys = self.objects.list_after(&format!("{prefix}/"), "").await?;
            return Ok(keys.iter().map(|k| self.objects.url(k)).collect());
        }
        tracing::warn!(
            dir,
            "cannot list this warehouse; orphaned data files are not swept"
        );
        Ok(Vec::new())
    }
}

/// Logs and records a partition held back by `error`.
fn hold_back(id: &PartitionId, error: &PublishError) -> HeldBack {
    tracing::error!(partition = %id, error = %error, "partition held back at a committed object it cannot publish: its entries before that object and the other partitions are published; every publish tries it again");
    HeldBack {
        partition: id.to_string(),
        reason: error.to_string(),
    }
}

/// A committed object's body; [`PublishError::MissingObject`] when the bucket lacks it.
pub(crate) async fn fetch_object(
    objects: &dyn ObjectStore,
    partition: &str,
    key: &str,
) -> Result<Vec<u8>, PublishError> {
    objects
        .get(key)
        .await?
        .ok_or_else(|| PublishError::MissingObject {
            partition: partition.to_owned(),
            object_key: key.to_owned(),
        })
}

/// Objects fetched and decoded ahead of the Parquet writer, per partition.
const DECODE_AHEAD: usize = 4;

/// Decoded batches waiting in a partition's channel for its writer task.
const WRITE_AHEAD: usize = 2;

/// Partitions written at once, each by its own writer task: Parquet encoding of one
/// partition runs beside another's on the runtime's worker threads, and beside decoding on
/// the blocking pool.
const PARTITIONS_AT_ONCE: usize = 2;

/// An object's rows grouped by day (the `day` partition value), in line order within each.
type DayRows = Vec<(Option<i32>, Vec<Row>)>;

/// An object's rows as Arrow batches grouped by day, in line order within each.
type DayBatches = Vec<(Option<i32>, Vec<RecordBatch>)>;

/// What [`Publisher::write_partition`] wrote of one partition.
#[derive(Default)]
struct PartitionWritten {
    /// Records in `files`.
    records: u64,
    /// The data files.
    files: Vec<DataFile>,
    /// The index (in the taken entries) and the error of the entry that stopped the
    /// partition; the files hold exactly the entries before it. `None`: every entry.
    stopped: Option<(usize, PublishError)>,
}

/// A task aborted when its handle is dropped (a publish that fails stops its writers).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A partition's data file writers, one open per day (owned by its writer task).
struct DayFiles {
    stream: String,
    spec: PartitionSpec,
    schema: SchemaRef,
    properties: WriterProperties,
    target_file_bytes: usize,
    file_io: FileIO,
    locations: DefaultLocationGenerator,
    names: DefaultFileNameGenerator,
    open: BTreeMap<
        Option<i32>,
        DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>,
    >,
}

impl DayFiles {
    /// Appends a batch to its day's file, opening it on the day's first batch.
    async fn write(&mut self, day: Option<i32>, batch: RecordBatch) -> Result<(), PublishError> {
        let writer = match self.open.entry(day) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let key = PartitionKey::new(
                    self.spec.clone(),
                    self.schema.clone(),
                    Struct::from_iter([
                        Some(Literal::string(&self.stream)),
                        day.map(Literal::date),
                    ]),
                );
                let rolling = RollingFileWriterBuilder::new(
                    ParquetWriterBuilder::new(self.properties.clone(), self.schema.clone()),
                    self.target_file_bytes,
                    self.file_io.clone(),
                    self.locations.clone(),
                    self.names.clone(),
                );
                v.insert(DataFileWriterBuilder::new(rolling).build(Some(key)).await?)
            }
        };
        writer.write(batch).await?;
        Ok(())
    }

    /// Closes every day's writer: the data files written.
    async fn close(self) -> Result<Vec<DataFile>, PublishError> {
        let mut files = Vec::new();
        for (_, mut writer) in self.open {
            files.extend(writer.close().await?);
        }
        Ok(files)
    }
}

/// Parquet writer properties of the data files: zstd (level 1), and no dictionary for
/// the columns whose values are all or nearly all distinct (a dictionary there is built,
/// then abandoned at its size limit, which costs time and saves nothing).
fn writer_properties() -> WriterProperties {
    let mut builder =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default()));
    for column in ["cursor", "cursor_sortable", "payload", "payload_base64"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
}

/// Decompresses and parses one committed object (CPU only; runs on the blocking pool): its
/// rows grouped by day, in line order within each day. Checks that it holds the number of
/// records its commit-log entry says and that every cursor is inside the entry's range.
fn decode_rows(
    partition: &str,
    entry: &CommitEntry,
    key: &str,
    body: &[u8],
) -> Result<DayRows, PublishError> {
    let bad = |detail: String| PublishError::BadObject {
        partition: partition.to_owned(),
        object_key: key.to_owned(),
        detail,
    };
    let lines = bronze::bronze::read_raw_lines(body).map_err(|e| bad(e.to_string()))?;
    if lines.len() as u64 != entry.records {
        return Err(bad(format!(
            "holds {} lines, its commit says {} records",
            lines.len(),
            entry.records
        )));
    }
    let log_position = entry.position.and_then(|p| i64::try_from(p).ok());
    let mut by_day: DayRows = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let mut row = parse_line(key, n + 1, line)?;
        row.log_position = log_position;
        if row.cursor_sortable < entry.first || row.cursor_sortable > entry.last {
            return Err(bad(format!(
                "line {} cursor {} is outside the committed range",
                n + 1,
                row.cursor
            )));
        }
        let day = row.day();
        match by_day.iter_mut().find(|(d, _)| *d == day) {
            Some((_, rows)) => rows.push(row),
            None => {
                let mut rows = Vec::with_capacity(lines.len() - n);
                rows.push(row);
                by_day.push((day, rows));
            }
        }
    }
    Ok(by_day)
}

fn list_local(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(list_local(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The watermarks of the newest snapshot on the current branch that a publisher made (it
/// carries [`ATTEMPT_PROPERTY`]). Usually the current snapshot; another writer's snapshot
/// on top (a compaction, a maintenance job) carries no watermarks and must not reset them.
pub fn published_watermarks(table: &Table) -> BTreeMap<String, Watermark> {
    let metadata = table.metadata();
    let mut current = metadata.current_snapshot();
    while let Some(snapshot) = current {
        let props = &snapshot.summary().additional_properties;
        if props.contains_key(ATTEMPT_PROPERTY) {
            return plan::watermarks(props);
        }
        current = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    BTreeMap::new()
}

/// Whether a snapshot made by `attempt_id` is on the current branch above `base`.
fn committed_by(table: &Table, base: Option<i64>, attempt_id: &str) -> bool {
    let metadata = table.metadata();
    let mut current = metadata.current_snapshot();
    while let Some(snapshot) = current {
        if Some(snapshot.snapshot_id()) == base {
            return false;
        }
        if snapshot
            .summary()
            .additional_properties
            .get(ATTEMPT_PROPERTY)
            .is_some_and(|a| a == attempt_id)
        {
            return true;
        }
        current = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    false
}
