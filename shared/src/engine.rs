//! The landing and commit protocol, per partition of one delivery.
//!
//! Ordered mode (the default; Kafka, and Kinesis with ParallelizationFactor 1):
//!
//! 1. read the checkpoint (strongly consistent);
//! 2. skip records at or below it ([`first_unlanded`]);
//! 3. encode the rest; poison records go to the DLQ (before anything is committed);
//! 4. write the object with `If-None-Match: *`; an object already at that key holds the same
//!    records (the key is a function of partition and cursor range) and is adopted;
//! 5. commit: append the commit-log entry and move the checkpoint, in one conditional
//!    transaction that fails if the checkpoint moved since step 1;
//! 6. sweep objects left by crashed attempts that overlap the committed range.
//!
//! A crash between any two steps leaves the checkpoint where it was, so the retry
//! (whatever its batch boundaries) starts again at step 1 and lands each record once.
//! Interleaved mode (Kinesis with ParallelizationFactor above 1) is described in
//! `docs/landing-contract.md`.

use crate::bronze::{self, BronzeWriter};
use crate::config::StreamSettings;
use crate::cursor::{Cursor, CursorError};
use crate::dlq::DeadLetter;
use crate::ports::{
    Checkpoint, CommitEntry, DeadLetterQueue, ObjectStore, PortError, PutOutcome, StateStore,
};
use crate::record::{PartitionBatch, PartitionId, Record, first_unlanded};
use crate::telemetry::{AlreadyLanded, LandingFailed, Metrics, RecordDeadLettered, RecordsLanded};
use std::sync::Arc;

/// Why a partition could not be landed. The cursor is the first record not committed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An outside service failed.
    #[error("{partition} at cursor {cursor}: {source}")]
    Port {
        /// The partition.
        partition: String,
        /// First cursor not landed.
        cursor: String,
        /// The service error (transient or permanent).
        source: PortError,
    },
    /// The stored checkpoint is not a valid cursor for this source: the state table holds
    /// foreign or corrupted data. Permanent.
    #[error("{partition}: stored checkpoint {stored:?} is unreadable: {source}")]
    BadCheckpoint {
        /// The partition.
        partition: String,
        /// What is stored.
        stored: String,
        /// The parse error.
        source: CursorError,
    },
}

impl EngineError {
    /// True when a retry of the same records can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Port { source, .. } => source.is_transient(),
            EngineError::BadCheckpoint { .. } => false,
        }
    }
}

/// The result of landing one partition's records.
#[derive(Debug)]
pub enum PartitionOutcome<C> {
    /// The records were committed (some may have been skipped as already landed).
    Landed {
        /// The commit-log entry written.
        commit: CommitEntry,
        /// Records skipped as already landed.
        skipped: usize,
    },
    /// Every record was already landed; nothing was written.
    AlreadyLanded {
        /// Records skipped.
        skipped: usize,
    },
    /// Records from `first_unlanded` on are not committed; everything before is.
    Failed {
        /// The first record that is not committed. Retrying from here is safe.
        first_unlanded: C,
        /// What went wrong.
        error: EngineError,
    },
}

/// Who is landing, and when (metadata only: never part of a key).
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The run id: the Lambda request id, or the runner's id.
    pub run_id: &'a str,
    /// Wall-clock now, ms since the epoch, for commit metadata and dead letters.
    pub now_ms: i64,
    /// Where telemetry events are counted.
    pub metrics: &'a Metrics,
}

/// The landing engine: stateless apart from its ports, shared across invocations.
#[derive(Debug, Clone)]
pub struct Lander {
    objects: Arc<dyn ObjectStore>,
    state: Arc<dyn StateStore>,
    dlq: Arc<dyn DeadLetterQueue>,
    prefix: String,
}

impl Lander {
    /// Builds an engine over the given ports, landing under `prefix`.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        state: Arc<dyn StateStore>,
        dlq: Arc<dyn DeadLetterQueue>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            objects,
            state,
            dlq,
            prefix: prefix.into(),
        }
    }

    /// The key prefix objects land under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The state store (for status and audits).
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// The object store (for readers and audits).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Lands one partition's records (in cursor order) and reports what happened.
    /// Telemetry events are emitted for every outcome.
    pub async fn land<C: Cursor>(
        &self,
        batch: &PartitionBatch<C>,
        settings: &StreamSettings,
        run: RunContext<'_>,
    ) -> PartitionOutcome<C> {
        let outcome = if batch.records.is_empty() {
            PartitionOutcome::AlreadyLanded { skipped: 0 }
        } else if settings.parallelization_factor > 1 {
            self.land_interleaved(&batch.id, &batch.records, settings, run)
                .await
        } else {
            self.land_ordered(&batch.id, &batch.records, settings, run)
                .await
        };
        if let PartitionOutcome::Failed {
            first_unlanded,
            error,
        } = &outcome
        {
            LandingFailed {
                partition: &batch.id,
                cursor: &first_unlanded.to_string(),
                error: &error.to_string(),
                transient: error.is_transient(),
                run_id: run.run_id,
            }
            .emit(run.metrics);
        }
        outcome
    }

    async fn land_ordered<C: Cursor>(
        &self,
        id: &PartitionId,
        records: &[Record<C>],
        settings: &StreamSettings,
        run: RunContext<'_>,
    ) -> PartitionOutcome<C> {
        let fail = |at: &C, source: PortError| PartitionOutcome::Failed {
            first_unlanded: at.clone(),
            error: EngineError::Port {
                partition: id.to_string(),
                cursor: at.to_string(),
                source,
            },
        };
        // 1. Read the checkpoint.
        let checkpoint = match self.state.checkpoint(id).await {
            Ok(c) => c,
            Err(e) => return fail(&records[0].cursor, e),
        };
        let done = match checkpoint.as_ref().map(|c| C::parse(&c.cursor)).transpose() {
            Ok(done) => done,
            Err(source) => {
                return PartitionOutcome::Failed {
                    first_unlanded: records[0].cursor.clone(),
                    error: EngineError::BadCheckpoint {
                        partition: id.to_string(),
                        stored: checkpoint.map(|c| c.cursor).unwrap_or_default(),
                        source,
                    },
                };
            }
        };
        // 2. Skip what is already landed.
        let start = first_unlanded(records, done.as_ref());
        if start == records.len() {
            AlreadyLanded {
                partition: id,
                skipped: start as u64,
                checkpoint: &done.map(|d| d.to_string()).unwrap_or_default(),
                run_id: run.run_id,
            }
            .emit(run.metrics);
            return PartitionOutcome::AlreadyLanded { skipped: start };
        }
        let pending = &records[start..];
        let first = &pending[0].cursor;
        // 3-5. Encode, dead-letter, write, commit.
        let landed = match self.write_object(id, pending, settings, run).await {
            Ok(landed) => landed,
            Err(e) => return fail(first, e),
        };
        let entry = landed.entry(pending, run);
        let expected = checkpoint.as_ref().map(|c| c.cursor.as_str());
        match self.state.commit(id, expected, &entry).await {
            Ok(()) => {}
            Err(PortError::CheckpointMoved { found, .. }) => {
                // Another writer committed since step 1. Whatever it committed is landed;
                // the rest is retried from the first record above its checkpoint.
                return self.after_conflict(id, pending, found, start, run);
            }
            Err(e) => return fail(first, e),
        }
        self.emit_landed(id, &entry, landed.adopted, run);
        // 6. Sweep leftovers of crashed attempts. Best effort: they are not in the commit log.
        self.sweep(id, checkpoint.as_ref(), &entry).await;
        PartitionOutcome::Landed {
            commit: entry,
            skipped: start,
        }
    }

    fn after_conflict<C: Cursor>(
        &self,
        id: &PartitionId,
        pending: &[Record<C>],
        found: Option<String>,
        skipped_before: usize,
        run: RunContext<'_>,
    ) -> PartitionOutcome<C> {
        let found_cursor = found.as_deref().and_then(|f| C::parse(f).ok());
        let next = first_unlanded(pending, found_cursor.as_ref());
        if next == pending.len() {
            AlreadyLanded {
                partition: id,
                skipped: (skipped_before + pending.len()) as u64,
                checkpoint: &found_cursor.map(|c| c.to_string()).unwrap_or_default(),
                run_id: run.run_id,
            }
            .emit(run.metrics);
            return PartitionOutcome::AlreadyLanded {
                skipped: skipped_before + pending.len(),
            };
        }
        let at = &pending[next].cursor;
        PartitionOutcome::Failed {
            first_unlanded: at.clone(),
            error: EngineError::Port {
                partition: id.to_string(),
                cursor: at.to_string(),
                source: PortError::CheckpointMoved {
                    partition: id.to_string(),
                    expected: None,
                    found,
                },
            },
        }
    }

    /// Interleaved mode: batches of one shard may arrive concurrently and out of order, so the
    /// checkpoint cannot be used to skip. The commit log, keyed by first cursor, is used
    /// instead: a batch that starts where a committed batch started is (a prefix of) that
    /// batch and is not landed again.
    async fn land_interleaved<C: Cursor>(
        &self,
        id: &PartitionId,
        records: &[Record<C>],
        settings: &StreamSettings,
        run: RunContext<'_>,
    ) -> PartitionOutcome<C> {
        let mut start = 0;
        loop {
            let pending = &records[start..];
            let first = &pending[0].cursor;
            let fail = |source: PortError| PartitionOutcome::Failed {
                first_unlanded: first.clone(),
                error: EngineError::Port {
                    partition: id.to_string(),
                    cursor: first.to_string(),
                    source,
                },
            };
            let landed = match self.write_object(id, pending, settings, run).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            let entry = landed.entry(pending, run);
            match self.state.log_commit(id, &entry).await {
                Ok(None) => {
                    self.emit_landed(id, &entry, landed.adopted, run);
                    return PartitionOutcome::Landed {
                        commit: entry,
                        skipped: start,
                    };
                }
                Ok(Some(existing)) => {
                    // Our object is not referenced by the log unless it is the same range.
                    if entry.object_key != existing.object_key {
                        if let Some(key) = &entry.object_key {
                            let _ = self.objects.delete(key).await;
                        }
                    }
                    let last_done = match C::parse(&existing.last) {
                        Ok(c) => c,
                        Err(source) => {
                            return PartitionOutcome::Failed {
                                first_unlanded: first.clone(),
                                error: EngineError::BadCheckpoint {
                                    partition: id.to_string(),
                                    stored: existing.last,
                                    source,
                                },
                            };
                        }
                    };
                    let next = start + first_unlanded(pending, Some(&last_done));
                    if next == records.len() {
                        AlreadyLanded {
                            partition: id,
                            skipped: records.len() as u64,
                            checkpoint: &last_done.to_string(),
                            run_id: run.run_id,
                        }
                        .emit(run.metrics);
                        return PartitionOutcome::AlreadyLanded {
                            skipped: records.len(),
                        };
                    }
                    start = next;
                }
                Err(e) => return fail(e),
            }
        }
    }

    /// Encodes `pending`, dead-letters poison records and writes the object (if any record
    /// is left). Nothing here moves a checkpoint.
    async fn write_object<C: Cursor>(
        &self,
        id: &PartitionId,
        pending: &[Record<C>],
        settings: &StreamSettings,
        run: RunContext<'_>,
    ) -> Result<Written, PortError> {
        let hint = pending
            .iter()
            .map(|r| r.payload.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            / 3;
        let mut writer = BronzeWriter::new(id, settings, run.run_id, hint);
        let mut range: Option<(&C, &C)> = None;
        let mut dead = 0u64;
        for record in pending {
            match writer.push(record) {
                Ok(()) => {
                    range = Some((range.map_or(&record.cursor, |(f, _)| f), &record.cursor));
                }
                Err(poison) => {
                    self.dead_letter(id, record, poison.to_string(), run)
                        .await?;
                    dead += 1;
                }
            }
        }
        let records = writer.records();
        let payload_bytes = writer.payload_bytes();
        let Some((first, last)) = range else {
            return Ok(Written {
                object_key: None,
                records: 0,
                payload_bytes: 0,
                object_bytes: 0,
                dead_lettered: dead,
                adopted: false,
            });
        };
        let key = bronze::object_key(&self.prefix, id, first, last);
        let body = writer.finish();
        let object_bytes = body.len() as u64;
        let adopted = self.objects.put_if_absent(&key, body).await? == PutOutcome::AlreadyExists;
        Ok(Written {
            object_key: Some(key),
            records,
            payload_bytes,
            object_bytes,
            dead_lettered: dead,
            adopted,
        })
    }

    async fn dead_letter<C: Cursor>(
        &self,
        id: &PartitionId,
        record: &Record<C>,
        reason: String,
        run: RunContext<'_>,
    ) -> Result<(), PortError> {
        let mut letter = DeadLetter::new(id, record, reason, run.run_id, run.now_ms);
        let mut body = letter.to_json().map_err(|e| PortError::Permanent {
            operation: "dlq:serialize",
            target: letter.id.clone(),
            message: e.to_string(),
        })?;
        let in_s3 = DeadLetter::too_large(&body);
        if in_s3 {
            let key = bronze::dead_letter_payload_key(&self.prefix, id, &record.cursor);
            self.objects
                .put(&key, record.payload.clone().unwrap_or_default())
                .await?;
            letter.point_to(self.objects.url(&key));
            body = letter.to_json().map_err(|e| PortError::Permanent {
                operation: "dlq:serialize",
                target: letter.id.clone(),
                message: e.to_string(),
            })?;
        }
        self.dlq.send(&letter.id, &body).await?;
        RecordDeadLettered {
            partition: id,
            cursor: &letter.cursor,
            key_hash: record.key.as_deref().map(bronze::key_hash).as_deref(),
            reason: &letter.reason,
            payload_in_s3: in_s3,
            run_id: run.run_id,
        }
        .emit(run.metrics);
        Ok(())
    }

    fn emit_landed(
        &self,
        id: &PartitionId,
        entry: &CommitEntry,
        adopted: bool,
        run: RunContext<'_>,
    ) {
        RecordsLanded {
            partition: id,
            first: &entry.first,
            last: &entry.last,
            records: entry.records,
            bytes: entry.payload_bytes,
            dead_lettered: entry.dead_lettered,
            object_key: entry.object_key.as_deref(),
            adopted,
            run_id: run.run_id,
        }
        .emit(run.metrics);
    }

    /// Deletes objects of this partition that start inside the range from the previous commit
    /// to this one and are referenced by neither. No writer can ever commit them: their
    /// first cursor is at or below the checkpoint now.
    async fn sweep(&self, id: &PartitionId, previous: Option<&Checkpoint>, entry: &CommitEntry) {
        let prefix = bronze::partition_prefix(&self.prefix, id);
        let start_after = match previous {
            Some(cp) => format!("{prefix}{}", cp.last_commit.first),
            None => prefix.clone(),
        };
        let keys = match self.objects.list_after(&prefix, &start_after).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(partition = %id, error = %e, "orphan sweep skipped");
                return;
            }
        };
        let keep = [
            entry.object_key.as_deref(),
            previous.and_then(|p| p.last_commit.object_key.as_deref()),
        ];
        for key in keys {
            let Some((first, _)) = bronze::parse_object_range(&key) else {
                continue;
            };
            if first > entry.last.as_str() {
                break;
            }
            if keep.contains(&Some(key.as_str())) {
                continue;
            }
            match self.objects.delete(&key).await {
                Ok(()) => {
                    tracing::info!(partition = %id, object_key = %key, "deleted uncommitted object")
                }
                Err(e) => {
                    tracing::warn!(partition = %id, object_key = %key, error = %e, "could not delete uncommitted object")
                }
            }
        }
    }
}

/// What step 3-4 produced.
#[derive(Debug)]
struct Written {
    object_key: Option<String>,
    records: u64,
    payload_bytes: u64,
    object_bytes: u64,
    dead_lettered: u64,
    adopted: bool,
}

impl Written {
    fn entry<C: Cursor>(&self, pending: &[Record<C>], run: RunContext<'_>) -> CommitEntry {
        CommitEntry {
            first: pending[0].cursor.sortable(),
            last: pending[pending.len() - 1].cursor.sortable(),
            object_key: self.object_key.clone(),
            records: self.records,
            dead_lettered: self.dead_lettered,
            object_bytes: self.object_bytes,
            payload_bytes: self.payload_bytes,
            run_id: run.run_id.to_owned(),
            committed_at_ms: run.now_ms,
        }
    }
}
