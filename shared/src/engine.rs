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
use crate::compress::Pipeline;
use crate::config::StreamSettings;
use crate::cursor::{Cursor, CursorError};
use crate::decode::SchemaDecoder;
use crate::dlq::DeadLetter;
use crate::ports::{
    Checkpoint, CommitEntry, DeadLetterQueue, ObjectStore, PortError, PutOutcome, StateStore,
};
use crate::record::{PartitionBatch, PartitionId, Record, first_unlanded};
use crate::telemetry::{
    AlreadyLanded, CursorRestartDetected, LandingFailed, Metrics, RecordDeadLettered, RecordsLanded,
};
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
    /// The delivery holds records at or below the checkpoint that were never landed there:
    /// the source's cursors restarted (a recreated topic or stream, a mapping pointed at
    /// another cluster with the same names). Skipping them as "already landed" would lose
    /// them, so the partition stops. Permanent.
    #[error(
        "{partition}: the source's cursors restarted below the checkpoint {checkpoint} ({evidence}); nothing is skipped or landed. To land the new records, archive this partition's Bronze objects and state and start over: streaming-connector reset --source {origin} --stream {stream} --partition {part} --apply"
    )]
    CursorRestart {
        /// The partition.
        partition: String,
        /// The stored checkpoint (display form).
        checkpoint: String,
        /// What shows the restart.
        evidence: String,
        /// For the command in the message: the source kind.
        origin: String,
        /// For the command in the message.
        stream: String,
        /// For the command in the message.
        part: String,
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
            EngineError::BadCheckpoint { .. } | EngineError::CursorRestart { .. } => false,
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
    decoder: Option<Arc<SchemaDecoder>>,
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
            decoder: None,
        }
    }

    /// Checks payloads of streams that declare a schema with `decoder`.
    pub fn with_schemas(mut self, decoder: Arc<SchemaDecoder>) -> Self {
        self.decoder = Some(decoder);
        self
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
        // 2. Skip what is already landed, unless the source's cursors restarted.
        if let (Some(cp), Some(done)) = (&checkpoint, &done) {
            if let Some(evidence) = cursor_restart(id, records, done, &cp.last_commit) {
                CursorRestartDetected {
                    partition: id,
                    checkpoint: &done.to_string(),
                    evidence: &evidence,
                    run_id: run.run_id,
                }
                .emit(run.metrics);
                return PartitionOutcome::Failed {
                    first_unlanded: records[0].cursor.clone(),
                    error: EngineError::CursorRestart {
                        partition: id.to_string(),
                        checkpoint: done.to_string(),
                        evidence,
                        origin: id.source.to_string(),
                        stream: id.stream.clone(),
                        part: id.partition.clone(),
                    },
                };
            }
        }
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
    /// instead: when a committed entry starts at the batch's first cursor, the records that
    /// entry's object holds (and its first record, landed or dead-lettered) are not landed
    /// again; every other record of the batch is. A Kinesis lane's retry is a prefix of the
    /// lane's batch and skips exactly that prefix; a Pulsar Key_Shared consumer that took over
    /// another's messages mixes them with its own keys, and none of its own is skipped.
    /// The records that entry dead-lettered are known from its `dead_cursors`; only when it
    /// dead-lettered more than [`crate::ports::MAX_LISTED_DEAD_LETTERS`] may some be
    /// dead-lettered again (with the same letter id).
    async fn land_interleaved<C: Cursor>(
        &self,
        id: &PartitionId,
        records: &[Record<C>],
        settings: &StreamSettings,
        run: RunContext<'_>,
    ) -> PartitionOutcome<C> {
        let mut pending: std::borrow::Cow<'_, [Record<C>]> = std::borrow::Cow::Borrowed(records);
        let mut skipped = 0;
        loop {
            let Some(head) = pending.first() else {
                AlreadyLanded {
                    partition: id,
                    skipped: skipped as u64,
                    checkpoint: "",
                    run_id: run.run_id,
                }
                .emit(run.metrics);
                return PartitionOutcome::AlreadyLanded { skipped };
            };
            let first = head.cursor.clone();
            let fail = |source: PortError| PartitionOutcome::Failed {
                first_unlanded: first.clone(),
                error: EngineError::Port {
                    partition: id.to_string(),
                    cursor: first.to_string(),
                    source,
                },
            };
            // Look before writing: a batch starting at a committed first cursor was landed
            // before (in part), and encoding it again would re-send its dead letters.
            let existing = match self.state.commit_entry(id, &first.sortable()).await {
                Ok(existing) => existing,
                Err(e) => return fail(e),
            };
            let existing = match existing {
                Some(existing) => existing,
                None => {
                    let landed = match self.write_object(id, &pending, settings, run).await {
                        Ok(l) => l,
                        Err(e) => return fail(e),
                    };
                    let entry = landed.entry(&pending, run);
                    match self.state.log_commit(id, &entry).await {
                        Ok(None) => {
                            self.emit_landed(id, &entry, landed.adopted, run);
                            return PartitionOutcome::Landed {
                                commit: entry,
                                skipped,
                            };
                        }
                        // A concurrent batch committed the same first cursor meanwhile; our
                        // object is not referenced by the log unless it is the same range.
                        Ok(Some(existing)) => {
                            if entry.object_key != existing.object_key {
                                if let Some(key) = &entry.object_key {
                                    let _ = self.objects.delete(key).await;
                                }
                            }
                            existing
                        }
                        Err(e) => return fail(e),
                    }
                }
            };
            let mut held = match self.committed_cursors(&existing).await {
                Ok(held) => held,
                Err(e) => return fail(e),
            };
            held.extend(existing.dead_cursors.iter().flatten().cloned());
            let before = pending.len();
            let rest: Vec<Record<C>> = pending
                .iter()
                .filter(|r| r.cursor != first && !held.contains(&r.cursor.to_string()))
                .cloned()
                .collect();
            skipped += before - rest.len();
            pending = std::borrow::Cow::Owned(rest);
        }
    }

    /// The display cursors of the records a commit's object holds.
    async fn committed_cursors(
        &self,
        entry: &CommitEntry,
    ) -> Result<std::collections::HashSet<String>, PortError> {
        match &entry.object_key {
            Some(key) => self.object_cursors(key).await,
            None => Ok(Default::default()),
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
        let verdicts = match &settings.schema {
            Some(declared) => {
                let decoder = self.decoder.as_ref().ok_or_else(|| PortError::Permanent {
                    operation: "registry:get",
                    target: id.to_string(),
                    message: "the stream declares a schema but no registry is configured".into(),
                })?;
                Some(decoder.check_batch(id, pending, declared).await?)
            }
            None => None,
        };
        // Each member is compressed on rayon's threads as soon as it is cut, so the object's
        // lines are never all held; the last members compress while the dead letters go out.
        let (encoded, pipeline) =
            encode_pipelined(id, pending, settings, run.run_id, verdicts.as_deref()).await;
        let body = pipeline.finish();
        let mut dead_cursors = Some(Vec::new());
        let mut letters = Vec::with_capacity(encoded.poison.len());
        for (i, reason) in &encoded.poison {
            letters.push(
                self.dead_letter(id, &pending[*i], reason.clone(), run)
                    .await?,
            );
        }
        // One SendMessageBatch per ten letters; then each is logged and counted.
        let bodies: Vec<(String, String)> = letters
            .iter()
            .map(|(letter, body, _)| (letter.id.clone(), body.clone()))
            .collect();
        self.dlq.send_all(&bodies).await?;
        for ((i, _), (letter, _, in_s3)) in encoded.poison.iter().zip(&letters) {
            let record = &pending[*i];
            RecordDeadLettered {
                partition: id,
                cursor: &letter.cursor,
                key_hash: record.key.as_deref().map(bronze::key_hash).as_deref(),
                reason: &letter.reason,
                payload_in_s3: *in_s3,
                run_id: run.run_id,
            }
            .emit(run.metrics);
            if let Some(list) = dead_cursors.as_mut() {
                if list.len() < crate::ports::MAX_LISTED_DEAD_LETTERS {
                    list.push(record.cursor.to_string());
                } else {
                    dead_cursors = None;
                }
            }
        }
        let dead = encoded.poison.len() as u64;
        let Some((first, last)) = encoded.range else {
            return Ok(Written {
                object_key: None,
                records: 0,
                payload_bytes: 0,
                object_bytes: 0,
                dead_lettered: dead,
                dead_cursors,
                adopted: false,
            });
        };
        let codec = settings.compression.codec();
        let mut key = bronze::object_key(
            &self.prefix,
            id,
            &pending[first].cursor,
            &pending[last].cursor,
            codec,
        );
        let (records, payload_bytes) = (encoded.records, encoded.payload_bytes);
        let body = body.await;
        let object_bytes = body.len() as u64;
        let mut adopted =
            self.objects.put_if_absent(&key, body).await? == PutOutcome::AlreadyExists;
        if adopted {
            // The key names the range, not the set: an earlier attempt whose verdicts differed
            // (a schema registered meanwhile, a changed connector file) may have written other
            // records of the same range there. Adopt it only when it holds exactly ours.
            let held = self.object_cursors(&key).await?;
            let ours: std::collections::HashSet<String> = pending
                .iter()
                .enumerate()
                .filter(|(i, _)| !encoded.poison.iter().any(|(p, _)| p == i))
                .map(|(_, r)| r.cursor.to_string())
                .collect();
            if held != ours {
                // Never touch that object (a committed entry of interleaved mode may point at
                // it): these records land under a key that also names their set.
                let mut ours: Vec<&String> = ours.iter().collect();
                ours.sort();
                let set_key = bronze::object_key_for_set(
                    &self.prefix,
                    id,
                    &pending[first].cursor,
                    &pending[last].cursor,
                    &bronze::key_hash(
                        ours.iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                            .as_bytes(),
                    )[..16],
                    codec,
                );
                tracing::warn!(
                    partition = %id, object_key = %key, replacement = %set_key, run_id = run.run_id,
                    "an object of an earlier attempt holds other records of this range (verdicts changed): landing under a key that names this set"
                );
                let (_, pipeline) =
                    encode_pipelined(id, pending, settings, run.run_id, verdicts.as_deref()).await;
                let again = pipeline.finish().await;
                adopted =
                    self.objects.put_if_absent(&set_key, again).await? == PutOutcome::AlreadyExists;
                key = set_key;
            }
        }
        Ok(Written {
            object_key: Some(key),
            records,
            payload_bytes,
            object_bytes,
            dead_lettered: dead,
            dead_cursors,
            adopted,
        })
    }

    /// The display cursors of the records an object holds.
    async fn object_cursors(
        &self,
        key: &str,
    ) -> Result<std::collections::HashSet<String>, PortError> {
        let unreadable = |message: String| PortError::Permanent {
            operation: "s3:GetObject",
            target: self.objects.url(key),
            message,
        };
        let body = self
            .objects
            .get(key)
            .await?
            .ok_or_else(|| unreadable("the object is missing".into()))?;
        let lines = bronze::read_lines(&body).map_err(|e| unreadable(e.to_string()))?;
        Ok(lines
            .iter()
            .filter_map(|l| l["cursor"].as_str().map(str::to_owned))
            .collect())
    }

    /// Builds a record's dead letter, moving its payload (and, when still too large, its key
    /// and headers) to S3 so that it fits the queue. Returns the letter, its body and whether
    /// the payload went to S3; sending is the caller's.
    async fn dead_letter<C: Cursor>(
        &self,
        id: &PartitionId,
        record: &Record<C>,
        reason: String,
        run: RunContext<'_>,
    ) -> Result<(DeadLetter, String, bool), PortError> {
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
            if DeadLetter::too_large(&body) {
                // Large keys or headers: they go to S3 beside the payload, so the letter
                // always fits the queue.
                let envelope_key = format!("{key}.envelope.json");
                self.objects
                    .put(&envelope_key, letter.envelope_json().into_bytes())
                    .await?;
                letter.point_envelope_to(self.objects.url(&envelope_key));
                body = letter.to_json().map_err(|e| PortError::Permanent {
                    operation: "dlq:serialize",
                    target: letter.id.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        Ok((letter, body, in_s3))
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

/// One encoding pass over a batch: the object's lines (uncompressed, in members cut from the
/// records alone), what it holds, and the poison records.
#[derive(Debug)]
pub struct Encoded {
    /// The lines, in members of about [`bronze::MEMBER_TARGET_BYTES`], for
    /// [`crate::compress::compress`].
    pub members: Vec<Vec<u8>>,
    /// Records written.
    pub records: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Indexes of the first and last record written.
    pub range: Option<(usize, usize)>,
    /// Index and reason of each record that cannot land.
    pub poison: Vec<(usize, String)>,
}

/// Encodes `pending` into the lines of one Bronze object (pure: the same records, settings
/// and verdicts always give the same lines and the same member cuts). Public for the landing
/// benchmark.
pub fn encode<C: Cursor>(
    id: &PartitionId,
    pending: &[Record<C>],
    settings: &StreamSettings,
    run_id: &str,
    verdicts: Option<&[Option<Result<crate::decode::Decoded, String>>]>,
) -> Encoded {
    let mut pass = EncodePass::new(id, pending, settings, run_id);
    for (i, record) in pending.iter().enumerate() {
        pass.push(i, record, verdicts);
    }
    pass.finish()
}

/// [`encode`], handing each member to a [`Pipeline`] with the stream's compression as soon as
/// it is cut (the writer waits for the oldest member in flight when the pipeline is full), so
/// that the lines of the object are compressed while the next ones are encoded and are never
/// all held. The members are the same as [`encode`] cuts; the returned [`Encoded`] has none
/// left (the body is `pipeline.finish()`, which may be awaited later).
pub async fn encode_pipelined<C: Cursor>(
    id: &PartitionId,
    pending: &[Record<C>],
    settings: &StreamSettings,
    run_id: &str,
    verdicts: Option<&[Option<Result<crate::decode::Decoded, String>>]>,
) -> (Encoded, Pipeline) {
    let mut pipeline = Pipeline::new(settings.compression);
    let mut pass = EncodePass::new(id, pending, settings, run_id);
    for (i, record) in pending.iter().enumerate() {
        pass.push(i, record, verdicts);
        for member in pass.writer.take_finished() {
            pipeline.push(member).await;
        }
    }
    let mut encoded = pass.finish();
    for member in std::mem::take(&mut encoded.members) {
        pipeline.push(member).await;
    }
    (encoded, pipeline)
}

/// The state of one encoding pass: the writer, the range written, the poison records.
struct EncodePass<'a> {
    writer: BronzeWriter<'a>,
    range: Option<(usize, usize)>,
    poison: Vec<(usize, String)>,
}

impl<'a> EncodePass<'a> {
    fn new<C: Cursor>(
        id: &'a PartitionId,
        pending: &[Record<C>],
        settings: &'a StreamSettings,
        run_id: &'a str,
    ) -> Self {
        let hint = pending
            .iter()
            .map(|r| r.payload.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            * 5
            / 4;
        Self {
            writer: BronzeWriter::new(id, settings, run_id, hint),
            range: None,
            poison: Vec::new(),
        }
    }

    fn push<C: Cursor>(
        &mut self,
        i: usize,
        record: &Record<C>,
        verdicts: Option<&[Option<Result<crate::decode::Decoded, String>>]>,
    ) {
        let verdict = verdicts.and_then(|v| v.get(i)).and_then(Option::as_ref);
        match self.writer.push_checked(record, verdict) {
            Ok(()) => self.range = Some((self.range.map_or(i, |(f, _)| f), i)),
            Err(e) => self.poison.push((i, e.to_string())),
        }
    }

    fn finish(self) -> Encoded {
        let (records, payload_bytes) = (self.writer.records(), self.writer.payload_bytes());
        Encoded {
            members: self.writer.into_members(),
            records,
            payload_bytes,
            range: self.range,
            poison: self.poison,
        }
    }
}

/// How far past its commit a landed Kinesis record's arrival time may lie before the
/// delivery is taken for a restarted stream: arrival times are set by Kinesis, and a landed
/// record arrived before it was committed, so only clock differences between Kinesis and
/// the committing host remain.
pub const RESTART_TOLERANCE_MS: i64 = 10 * 60 * 1000;

/// Decides whether a delivery shows that the source's cursors restarted below the stored
/// checkpoint, and says why (pure). Two signs, each impossible for a redelivery:
/// - the record at the checkpoint's own cursor is not the one landed there (its fingerprint
///   differs from the one the commit stored);
/// - (Kinesis) a record at or below the checkpoint arrived more than
///   [`RESTART_TOLERANCE_MS`] after that checkpoint was committed.
///
/// Kafka and Pulsar timestamps can be set by producers, so only the first sign applies.
pub fn cursor_restart<C: Cursor>(
    id: &PartitionId,
    records: &[Record<C>],
    checkpoint: &C,
    last_commit: &CommitEntry,
) -> Option<String> {
    if let Some(stored) = &last_commit.last_fingerprint {
        if let Some(r) = records.iter().find(|r| &r.cursor == checkpoint) {
            let found = crate::record::fingerprint(r);
            if &found != stored {
                return Some(format!(
                    "the record delivered at cursor {checkpoint} (fingerprint {found}) is not the one landed there ({stored})"
                ));
            }
        }
    }
    if id.source == crate::record::Source::Kinesis {
        let limit = last_commit
            .committed_at_ms
            .saturating_add(RESTART_TOLERANCE_MS);
        if let Some(r) = records
            .iter()
            .filter(|r| &r.cursor <= checkpoint)
            .find(|r| r.timestamp_ms.is_some_and(|t| t > limit))
        {
            return Some(format!(
                "the record at cursor {} arrived at {} ms, after that cursor was committed at {} ms",
                r.cursor,
                r.timestamp_ms.unwrap_or_default(),
                last_commit.committed_at_ms
            ));
        }
    }
    None
}

/// What step 3-4 produced.
#[derive(Debug)]
struct Written {
    object_key: Option<String>,
    records: u64,
    payload_bytes: u64,
    object_bytes: u64,
    dead_lettered: u64,
    dead_cursors: Option<Vec<String>>,
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
            last_fingerprint: pending.last().map(crate::record::fingerprint),
            dead_cursors: self.dead_cursors.clone(),
            position: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyStrategy, PayloadFormat};
    use crate::cursor::KafkaOffset;
    use crate::memory::{CrashPoint, Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
    use crate::record::Source;
    use async_trait::async_trait;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    struct World {
        faults: Arc<Faults>,
        objects: Arc<MemoryObjectStore>,
        state: Arc<MemoryStateStore>,
        dlq: Arc<MemoryDlq>,
        lander: Lander,
    }

    impl World {
        fn new() -> Self {
            let faults = Faults::new();
            let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
            let state = Arc::new(MemoryStateStore::new(faults.clone()));
            let dlq = Arc::new(MemoryDlq::new(faults.clone()));
            let lander = Lander::new(objects.clone(), state.clone(), dlq.clone(), "bronze");
            Self {
                faults,
                objects,
                state,
                dlq,
                lander,
            }
        }

        /// Reads the committed data the way a reader must: through the commit log.
        async fn committed(&self, id: &PartitionId) -> Vec<u64> {
            let mut cursors = Vec::new();
            for entry in self.state.commit_log(id).await.unwrap() {
                if let Some(key) = entry.object_key {
                    let body = self.objects.body(&key).expect("committed object exists");
                    for line in bronze::read_lines(&body).unwrap() {
                        cursors.push(line["cursor"].as_str().unwrap().parse::<u64>().unwrap());
                    }
                }
            }
            cursors
        }
    }

    fn settings() -> StreamSettings {
        StreamSettings {
            group: None,
            payload_format: PayloadFormat::Json,
            key_strategy: KeyStrategy::Raw,
            parallelization_factor: 1,
            schema: None,
            compression: Default::default(),
        }
    }

    fn record(offset: u64, poison: bool) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(offset),
            key: Some(format!("k{}", offset % 3).into_bytes()),
            headers: vec![],
            timestamp_ms: Some(1_700_000_000_000 + offset as i64),
            payload: Some(if poison {
                b"not json".to_vec()
            } else {
                format!("{{\"n\":{offset}}}").into_bytes()
            }),
            defect: None,
            schema_id: None,
        }
    }

    fn run_ctx<'a>(metrics: &'a Metrics, run_id: &'a str) -> RunContext<'a> {
        RunContext {
            run_id,
            now_ms: 1_800_000_000_000,
            metrics,
        }
    }

    /// One step of the simulated event source mapping.
    #[derive(Debug, Clone)]
    struct Step {
        /// Batch size per partition for this invocation.
        size: usize,
        /// Re-deliver from this many records before the ESM's position (at-least-once).
        rewind: usize,
        /// Crash plan for this invocation.
        crash: Option<(u64, bool)>,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (
                1usize..12,
                prop_oneof![4 => Just(0usize), 1 => 1usize..6],
                prop::option::weighted(0.5, (0u64..9, any::<bool>())),
            )
                .prop_map(|(size, rewind, crash)| Step {
                    size,
                    rewind,
                    crash,
                }),
            1..80,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random batches, random crash points (before or after any side effect), random
        /// redelivery boundaries: every record is committed exactly once, in order, per
        /// partition; every poison record reaches the DLQ; the checkpoint is the last cursor.
        #[test]
        fn every_record_committed_exactly_once(
            lengths in prop::collection::vec(1usize..40, 1..4),
            poison in prop::collection::btree_set(0usize..40, 0..6),
            plan in steps(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let world = World::new();
                let s = settings();
                let partitions: Vec<(PartitionId, Vec<Record<KafkaOffset>>)> = lengths
                    .iter()
                    .enumerate()
                    .map(|(p, &len)| {
                        let id = PartitionId::new(Source::Kafka, "orders", p.to_string());
                        // Offsets start at 100 and have gaps, as compacted topics do.
                        let records = (0..len).map(|i| record(100 + 2 * i as u64, poison.contains(&i))).collect();
                        (id, records)
                    })
                    .collect();
                let mut pos = vec![0usize; partitions.len()];
                // After the plan, the world heals: no more crashes, so the stream must drain.
                let mut plan = plan.into_iter().chain(std::iter::repeat(Step { size: 5, rewind: 0, crash: None }));
                let mut invocations = 0;
                while pos.iter().zip(&partitions).any(|(p, (_, r))| *p < r.len()) {
                    invocations += 1;
                    prop_assert!(invocations < 2000, "no progress");
                    let step = plan.next().unwrap();
                    match step.crash {
                        Some((at, after)) => world.faults.arm(at, if after { CrashPoint::After } else { CrashPoint::Before }),
                        None => world.faults.disarm(),
                    }
                    let metrics = Metrics::default();
                    let run_id = format!("run-{invocations}");
                    let mut results = Vec::new();
                    for (i, (id, records)) in partitions.iter().enumerate() {
                        let start = pos[i].saturating_sub(step.rewind);
                        if start >= records.len() { results.push(None); continue; }
                        let end = (pos[i] + step.size).min(records.len());
                        let batch = PartitionBatch { id: id.clone(), records: records[start..end].to_vec() };
                        let outcome = world.lander.land(&batch, &s, run_ctx(&metrics, &run_id)).await;
                        results.push(Some((end, outcome)));
                    }
                    if world.faults.crashed() {
                        // The process died: the ESM saw no answer and will retry.
                        continue;
                    }
                    for (i, result) in results.into_iter().enumerate() {
                        let Some((end, outcome)) = result else { continue };
                        pos[i] = match outcome {
                            PartitionOutcome::Landed { .. } | PartitionOutcome::AlreadyLanded { .. } => end.max(pos[i]),
                            PartitionOutcome::Failed { first_unlanded, .. } => {
                                partitions[i].1.iter().position(|r| r.cursor == first_unlanded).unwrap()
                            }
                        };
                    }
                }
                world.faults.disarm();
                let letters: BTreeSet<String> = world.dlq.letters().into_iter().map(|(id, _)| id).collect();
                for (id, records) in &partitions {
                    let expected: Vec<u64> = records.iter().enumerate().filter(|(i, _)| !poison.contains(i)).map(|(_, r)| r.cursor.0).collect();
                    prop_assert_eq!(world.committed(id).await, expected, "partition {}", id);
                    let cp = world.state.checkpoint(id).await.unwrap().unwrap();
                    prop_assert_eq!(cp.cursor, records.last().unwrap().cursor.sortable());
                    // The commit log covers the partition without gap or overlap.
                    let log = world.state.commit_log(id).await.unwrap();
                    prop_assert_eq!(&log[0].first, &records[0].cursor.sortable());
                    for pair in log.windows(2) {
                        let next = records.iter().find(|r| r.cursor.sortable() > pair[0].last).unwrap();
                        prop_assert_eq!(&pair[1].first, &next.cursor.sortable());
                    }
                    for (i, r) in records.iter().enumerate() {
                        if poison.contains(&i) {
                            let letter_id = format!("kafka/orders/{}/{}", id.partition, r.cursor);
                            prop_assert!(letters.contains(&letter_id), "missing dead letter {}", letter_id);
                        }
                    }
                    prop_assert_eq!(log.iter().map(|e| e.dead_lettered).sum::<u64>(), records.iter().enumerate().filter(|(i, _)| poison.contains(i)).count() as u64);
                }
                Ok(())
            })?;
        }
    }

    /// A state store that serves a stale checkpoint once, as a zombie writer that read it
    /// before a rebalance would see it.
    #[derive(Debug)]
    struct StaleOnce {
        inner: Arc<MemoryStateStore>,
        stale: std::sync::Mutex<Option<Option<Checkpoint>>>,
    }

    #[async_trait]
    impl StateStore for StaleOnce {
        async fn checkpoint(&self, p: &PartitionId) -> Result<Option<Checkpoint>, PortError> {
            if let Some(stale) = self.stale.lock().unwrap().take() {
                return Ok(stale);
            }
            self.inner.checkpoint(p).await
        }
        async fn commit(
            &self,
            p: &PartitionId,
            e: Option<&str>,
            c: &CommitEntry,
        ) -> Result<(), PortError> {
            self.inner.commit(p, e, c).await
        }
        async fn log_commit(
            &self,
            p: &PartitionId,
            c: &CommitEntry,
        ) -> Result<Option<CommitEntry>, PortError> {
            self.inner.log_commit(p, c).await
        }
        async fn commit_entry(
            &self,
            p: &PartitionId,
            first: &str,
        ) -> Result<Option<CommitEntry>, PortError> {
            self.inner.commit_entry(p, first).await
        }
        async fn commit_log(&self, p: &PartitionId) -> Result<Vec<CommitEntry>, PortError> {
            self.inner.commit_log(p).await
        }
        async fn partitions(&self) -> Result<Vec<PartitionId>, PortError> {
            self.inner.partitions().await
        }
        async fn forget_partition(&self, p: &PartitionId) -> Result<u64, PortError> {
            self.inner.forget_partition(p).await
        }
        async fn log_positions(
            &self,
            p: &PartitionId,
        ) -> Result<Option<crate::ports::LogPositions>, PortError> {
            self.inner.log_positions(p).await
        }
        async fn logged_partitions(&self) -> Result<Vec<PartitionId>, PortError> {
            self.inner.logged_partitions().await
        }
        async fn claim_start(&self, p: &PartitionId, proposed: &str) -> Result<String, PortError> {
            self.inner.claim_start(p, proposed).await
        }
        async fn start(&self, p: &PartitionId) -> Result<Option<String>, PortError> {
            self.inner.start(p).await
        }
    }

    #[tokio::test]
    async fn zombie_writer_is_fenced_and_its_object_swept() {
        let world = World::new();
        let s = settings();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let records: Vec<_> = (0..10).map(|o| record(o, false)).collect();
        // The new owner lands 0..=5.
        let owner = PartitionBatch {
            id: id.clone(),
            records: records[..6].to_vec(),
        };
        assert!(matches!(
            world
                .lander
                .land(&owner, &s, run_ctx(&metrics, "owner"))
                .await,
            PartitionOutcome::Landed { .. }
        ));
        // The zombie read "no checkpoint" before the owner committed, and lands 0..=3.
        let zombie_state = Arc::new(StaleOnce {
            inner: world.state.clone(),
            stale: std::sync::Mutex::new(Some(None)),
        });
        let zombie = Lander::new(
            world.objects.clone(),
            zombie_state,
            world.dlq.clone(),
            "bronze",
        );
        let batch = PartitionBatch {
            id: id.clone(),
            records: records[..4].to_vec(),
        };
        let outcome = zombie.land(&batch, &s, run_ctx(&metrics, "zombie")).await;
        assert!(
            matches!(outcome, PartitionOutcome::AlreadyLanded { skipped: 4 }),
            "{outcome:?}"
        );
        let zombie_key = bronze::object_key(
            "bronze",
            &id,
            &KafkaOffset(0),
            &KafkaOffset(3),
            crate::compress::Codec::Gzip,
        );
        assert!(
            world.objects.body(&zombie_key).is_some(),
            "zombie wrote its object"
        );
        assert_eq!(
            world.committed(&id).await,
            (0..6).collect::<Vec<_>>(),
            "the zombie did not overwrite"
        );
        // A zombie whose range goes beyond the checkpoint must not commit either.
        let zombie_state = Arc::new(StaleOnce {
            inner: world.state.clone(),
            stale: std::sync::Mutex::new(Some(None)),
        });
        let zombie = Lander::new(
            world.objects.clone(),
            zombie_state,
            world.dlq.clone(),
            "bronze",
        );
        let batch = PartitionBatch {
            id: id.clone(),
            records: records[..8].to_vec(),
        };
        match zombie.land(&batch, &s, run_ctx(&metrics, "zombie")).await {
            PartitionOutcome::Failed {
                first_unlanded,
                error,
            } => {
                assert_eq!(first_unlanded, KafkaOffset(6));
                assert!(error.is_transient());
                assert!(error.to_string().contains("checkpoint moved"), "{error}");
            }
            other => panic!("zombie committed: {other:?}"),
        }
        assert_eq!(world.committed(&id).await, (0..6).collect::<Vec<_>>());
        // The owner's next commit sweeps the zombie's uncommittable objects.
        let next = PartitionBatch {
            id: id.clone(),
            records: records[6..].to_vec(),
        };
        assert!(matches!(
            world
                .lander
                .land(&next, &s, run_ctx(&metrics, "owner"))
                .await,
            PartitionOutcome::Landed { .. }
        ));
        assert!(world.objects.body(&zombie_key).is_none(), "orphan swept");
        assert_eq!(world.committed(&id).await, (0..10).collect::<Vec<_>>());
        let listed: Vec<_> = world.objects.keys();
        let logged: Vec<_> = world
            .state
            .commit_log(&id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| e.object_key)
            .collect();
        assert_eq!(
            listed, logged,
            "after the sweep the prefix holds exactly the committed objects"
        );
    }

    #[tokio::test]
    async fn permanent_failure_commits_nothing_and_retry_lands_once() {
        // A store that refuses writes, like a missing bucket.
        #[derive(Debug)]
        struct NoBucket;
        #[async_trait]
        impl ObjectStore for NoBucket {
            async fn put_if_absent(&self, key: &str, _: Vec<u8>) -> Result<PutOutcome, PortError> {
                Err(PortError::Permanent {
                    operation: "s3:PutObject",
                    target: key.into(),
                    message: "NoSuchBucket".into(),
                })
            }
            async fn put(&self, key: &str, _: Vec<u8>) -> Result<(), PortError> {
                Err(PortError::Permanent {
                    operation: "s3:PutObject",
                    target: key.into(),
                    message: "NoSuchBucket".into(),
                })
            }
            async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, PortError> {
                Ok(None)
            }
            async fn list_after(&self, _: &str, _: &str) -> Result<Vec<String>, PortError> {
                Ok(vec![])
            }
            async fn delete(&self, _: &str) -> Result<(), PortError> {
                Ok(())
            }
            fn url(&self, key: &str) -> String {
                key.into()
            }
        }
        let world = World::new();
        let s = settings();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = PartitionBatch {
            id: id.clone(),
            records: (0..5).map(|o| record(o, false)).collect(),
        };
        let broken = Lander::new(
            Arc::new(NoBucket),
            world.state.clone(),
            world.dlq.clone(),
            "bronze",
        );
        match broken.land(&batch, &s, run_ctx(&metrics, "r1")).await {
            PartitionOutcome::Failed {
                first_unlanded,
                error,
            } => {
                assert_eq!(first_unlanded, KafkaOffset(0));
                assert!(!error.is_transient());
                assert!(
                    error.to_string().contains("NoSuchBucket")
                        && error.to_string().contains("kafka/orders/0"),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            world.state.checkpoint(&id).await.unwrap().is_none(),
            "nothing committed"
        );
        assert_eq!(
            metrics.stream(Source::Kafka, "orders").errors,
            1,
            "the failure event fired"
        );
        assert!(matches!(
            world.lander.land(&batch, &s, run_ctx(&metrics, "r2")).await,
            PartitionOutcome::Landed { .. }
        ));
        assert!(matches!(
            world.lander.land(&batch, &s, run_ctx(&metrics, "r3")).await,
            PartitionOutcome::AlreadyLanded { skipped: 5 }
        ));
        assert_eq!(world.committed(&id).await, (0..5).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn interleaved_batches_skip_nothing() {
        // ParallelizationFactor 2: lanes by key; lane B commits records past lane A's first.
        let world = World::new();
        let mut s = settings();
        s.parallelization_factor = 2;
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-0");
        let all: Vec<_> = (0..12).map(|o| record(o, false)).collect();
        let lane = |l: u64| {
            all.iter()
                .filter(|r| r.cursor.0 % 2 == l)
                .cloned()
                .collect::<Vec<_>>()
        };
        let (a, b) = (lane(0), lane(1));
        // Lane B first, then lane A: an ordered checkpoint would skip all of lane A.
        for batch in [&b[..3], &a[..4], &b[3..], &a[4..]] {
            let batch = PartitionBatch {
                id: id.clone(),
                records: batch.to_vec(),
            };
            assert!(matches!(
                world.lander.land(&batch, &s, run_ctx(&metrics, "r")).await,
                PartitionOutcome::Landed { .. }
            ));
        }
        // A retry of a committed batch, and of its first half (bisect), lands nothing new.
        for batch in [&a[..4], &a[..2]] {
            let batch = PartitionBatch {
                id: id.clone(),
                records: batch.to_vec(),
            };
            assert!(matches!(
                world.lander.land(&batch, &s, run_ctx(&metrics, "r")).await,
                PartitionOutcome::AlreadyLanded { .. }
            ));
        }
        // A retry that extends a committed batch lands only the new part, and does not send
        // the committed part's dead letter again.
        let c: Vec<_> = (12..16).map(|o| record(o, o == 13)).collect();
        let lane_c = PartitionBatch {
            id: id.clone(),
            records: c[..2].to_vec(),
        };
        world.lander.land(&lane_c, &s, run_ctx(&metrics, "r")).await;
        let longer = PartitionBatch {
            id: id.clone(),
            records: c.clone(),
        };
        assert!(matches!(
            world.lander.land(&longer, &s, run_ctx(&metrics, "r")).await,
            PartitionOutcome::Landed { skipped: 2, .. }
        ));
        assert_eq!(world.dlq.letters().len(), 1, "offset 13 dead-lettered once");
        let mut landed = world.committed(&id).await;
        landed.sort();
        let expected: Vec<u64> = (0..16).filter(|o| *o != 13).collect();
        assert_eq!(landed, expected);
    }

    #[tokio::test]
    async fn switching_an_interleaved_partition_to_ordered_fails_once_and_says_what_to_do() {
        let world = World::new();
        let mut s = settings();
        s.parallelization_factor = 2;
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-0");
        let lane_a: Vec<_> = (0..8)
            .filter(|o| o % 2 == 0)
            .map(|o| record(o, false))
            .collect();
        let batch = PartitionBatch {
            id: id.clone(),
            records: lane_a,
        };
        assert!(matches!(
            world.lander.land(&batch, &s, run_ctx(&metrics, "r")).await,
            PartitionOutcome::Landed { .. }
        ));
        // Factor 1 now: a batch of every key starting where lane A's batch started.
        s.parallelization_factor = 1;
        let all = PartitionBatch {
            id: id.clone(),
            records: (0..8).map(|o| record(o, false)).collect(),
        };
        match world.lander.land(&all, &s, run_ctx(&metrics, "r")).await {
            PartitionOutcome::Failed { error, .. } => {
                assert!(!error.is_transient(), "not retried as a conflict forever");
                let text = error.to_string();
                assert!(
                    text.contains("interleaved mode") && text.contains("set the factor"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing of lanes other than A was skipped as landed.
        assert_eq!(world.committed(&id).await, vec![0, 2, 4, 6]);
    }

    /// Payloads a source can deliver: arbitrary bytes, and JSON edge cases that once
    /// panicked the landing or were changed by it.
    fn any_payload() -> impl Strategy<Value = Option<Vec<u8>>> {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        prop_oneof![
            2 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Some),
            1 => Just(None),
            4 => prop::sample::select(vec![
                b"{\n \"big\": 1e400 \n}".to_vec(),
                b"123456789012345678901234567890".to_vec(),
                b"1.0000000000000000001".to_vec(),
                b"{\"a\":1,\"a\":2}".to_vec(),
                b"{\r\n\"tiny\":1e-400}".to_vec(),
                b"\xEF\xBB\xBF{}".to_vec(),
                b"{\"s\":\"\xC3\x28\"}".to_vec(),
                b"NaN".to_vec(),
                b"[1,2".to_vec(),
                deep(200),
                deep(3000),
            ]).prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Through the whole protocol, for every payload format: nothing panics, and each
        /// record is either committed with its payload byte for byte (inline JSON with raw
        /// CR/LF as spaces, or base64) or dead-lettered with its raw payload and a reason.
        #[test]
        fn any_payload_is_landed_exactly_or_dead_lettered(
            payloads in prop::collection::vec(any_payload(), 1..12),
            format in prop::sample::select(vec![PayloadFormat::Json, PayloadFormat::Auto, PayloadFormat::Bytes]),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let world = World::new();
                let mut s = settings();
                s.payload_format = format;
                let metrics = Metrics::default();
                let id = PartitionId::new(Source::Kafka, "raw", "0");
                let records: Vec<_> = payloads
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Record { payload: p.clone(), ..record(i as u64, false) })
                    .collect();
                let batch = PartitionBatch { id: id.clone(), records };
                let outcome = world.lander.land(&batch, &s, run_ctx(&metrics, "r")).await;
                prop_assert!(matches!(outcome, PartitionOutcome::Landed { .. }), "{:?}", outcome);
                let mut landed = std::collections::BTreeMap::new();
                for entry in world.state.commit_log(&id).await.unwrap() {
                    if let Some(key) = entry.object_key {
                        let body = world.objects.body(&key).unwrap();
                        for (raw, line) in bronze::read_raw_lines(&body).unwrap().into_iter()
                            .zip(bronze::read_lines(&body).unwrap()) {
                            let cursor: u64 = line["cursor"].as_str().unwrap().parse().unwrap();
                            let bytes = match line["payload_encoding"].as_str().unwrap() {
                                "json" => {
                                    let at = raw.find(",\"payload\":").unwrap() + 11;
                                    Some(raw.as_bytes()[at..raw.len() - 1].to_vec())
                                }
                                "base64" => Some(base64::Engine::decode(
                                    &base64::engine::general_purpose::STANDARD,
                                    line["payload_base64"].as_str().unwrap(),
                                ).unwrap()),
                                "null" => None,
                                other => panic!("encoding {other}"),
                            };
                            prop_assert!(landed.insert(cursor, bytes).is_none(), "landed twice");
                        }
                    }
                }
                let mut dead = std::collections::BTreeSet::new();
                for (_, body) in world.dlq.letters() {
                    let letter: DeadLetter = serde_json::from_str(&body).unwrap();
                    prop_assert!(!letter.reason.is_empty());
                    let cursor: u64 = letter.cursor.parse().unwrap();
                    prop_assert_eq!(letter.payload(), payloads[cursor as usize].clone().or(Some(vec![])));
                    prop_assert!(dead.insert(cursor), "dead-lettered twice");
                }
                for (i, p) in payloads.iter().enumerate() {
                    let i = i as u64;
                    match (landed.get(&i), dead.contains(&i)) {
                        (Some(bytes), false) => {
                            let is_json = line_is_inline_json(p.as_deref(), format);
                            let expected = p.as_ref().map(|p| if is_json {
                                p.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }).collect()
                            } else {
                                p.clone()
                            });
                            prop_assert_eq!(bytes, &expected, "record {} changed", i);
                        }
                        (None, true) => prop_assert_eq!(format, PayloadFormat::Json),
                        other => prop_assert!(false, "record {} is {:?}", i, other),
                    }
                }
                Ok(())
            })?;
        }
    }

    /// Whether a payload lands as inline JSON under `format`.
    fn line_is_inline_json(payload: Option<&[u8]>, format: PayloadFormat) -> bool {
        format != PayloadFormat::Bytes
            && payload
                .is_some_and(|p| serde_json::from_slice::<&serde_json::value::RawValue>(p).is_ok())
    }

    #[tokio::test]
    async fn restarted_cursors_fail_loudly_instead_of_being_skipped() {
        let world = World::new();
        let s = settings();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = |records: Vec<Record<KafkaOffset>>| PartitionBatch {
            id: id.clone(),
            records,
        };
        let first: Vec<_> = (0..6).map(|o| record(o, false)).collect();
        assert!(matches!(
            world
                .lander
                .land(&batch(first.clone()), &s, run_ctx(&metrics, "r"))
                .await,
            PartitionOutcome::Landed { .. }
        ));
        // A redelivery of the same records is skipped as before: no false alarm.
        assert!(matches!(
            world
                .lander
                .land(&batch(first[3..].to_vec()), &s, run_ctx(&metrics, "r"))
                .await,
            PartitionOutcome::AlreadyLanded { skipped: 3 }
        ));
        // The topic was recreated: offsets 3..=7 hold other records now.
        let recreated: Vec<_> = (3..8)
            .map(|o| Record {
                payload: Some(format!("{{\"new\":{o}}}").into_bytes()),
                ..record(o, false)
            })
            .collect();
        match world
            .lander
            .land(&batch(recreated), &s, run_ctx(&metrics, "r"))
            .await
        {
            PartitionOutcome::Failed {
                error,
                first_unlanded,
            } => {
                assert_eq!(first_unlanded, KafkaOffset(3));
                assert!(!error.is_transient());
                let text = error.to_string();
                assert!(
                    text.contains("restarted") && text.contains("streaming-connector reset"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(metrics.stream(Source::Kafka, "orders").cursor_restarts, 1);
        assert_eq!(
            world.committed(&id).await,
            (0..6).collect::<Vec<_>>(),
            "nothing more committed"
        );
    }

    #[test]
    fn kinesis_records_that_arrived_after_their_commit_are_a_restart() {
        let id = PartitionId::new(Source::Kinesis, "s", "shardId-0");
        let seq = |n: u64| crate::cursor::SequenceNumber::parse(&n.to_string()).unwrap();
        let rec = |n: u64, t: i64| Record {
            cursor: seq(n),
            key: None,
            headers: vec![],
            timestamp_ms: Some(t),
            payload: Some(b"{}".to_vec()),
            defect: None,
            schema_id: None,
        };
        let commit = CommitEntry {
            first: seq(1).sortable(),
            last: seq(9).sortable(),
            object_key: None,
            records: 0,
            dead_lettered: 0,
            object_bytes: 0,
            payload_bytes: 0,
            run_id: "r".into(),
            committed_at_ms: 1_000_000,
            last_fingerprint: None,
            dead_cursors: None,
            position: None,
        };
        let old = [rec(5, 999_000), rec(10, 5_000_000)];
        assert_eq!(
            cursor_restart(&id, &old, &seq(9), &commit),
            None,
            "redelivery"
        );
        let new = [rec(5, 1_000_000 + RESTART_TOLERANCE_MS + 1)];
        assert!(cursor_restart(&id, &new, &seq(9), &commit).is_some());
        // Kafka timestamps can be producer-set: the time sign is not used for them.
        let kafka = PartitionId::new(Source::Kafka, "t", "0");
        assert_eq!(cursor_restart(&kafka, &new, &seq(9), &commit), None);
    }

    #[tokio::test]
    async fn interleaved_batch_mixing_committed_and_new_keys_skips_only_what_is_held() {
        // Pulsar Key_Shared: a consumer that took over another's committed-but-unacked
        // messages gets them mixed with its own keys, at the same first cursor.
        let world = World::new();
        let mut s = settings();
        s.parallelization_factor = 2;
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let batch = |offsets: &[u64]| PartitionBatch {
            id: id.clone(),
            records: offsets.iter().map(|&o| record(o, o == 501)).collect(),
        };
        assert!(matches!(
            world
                .lander
                .land(&batch(&[120, 500, 501]), &s, run_ctx(&metrics, "r"))
                .await,
            PartitionOutcome::Landed { .. }
        ));
        assert!(matches!(
            world
                .lander
                .land(&batch(&[120, 130, 501, 502]), &s, run_ctx(&metrics, "r"))
                .await,
            PartitionOutcome::Landed { skipped: 2, .. }
        ));
        let mut landed = world.committed(&id).await;
        landed.sort();
        assert_eq!(landed, vec![120, 130, 500, 502]);
        assert_eq!(world.dlq.letters().len(), 1, "501 dead-lettered once");
    }

    #[tokio::test]
    async fn a_changed_verdict_never_adopts_an_object_holding_other_records() {
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = PartitionBatch {
            id: id.clone(),
            records: (0..3).map(|o| record(o, o == 1)).collect(),
        };
        let metrics = Metrics::default();
        // Attempt 1 (payload_format json: offset 1 is poison) writes its object {0, 2} and
        // dies before the commit.
        let mut crashed = None;
        for step in 0..10 {
            let world = World::new();
            world.faults.arm(step, CrashPoint::Before);
            world
                .lander
                .land(&batch, &settings(), run_ctx(&metrics, "r1"))
                .await;
            world.faults.disarm();
            if world.objects.keys().len() == 1
                && world.state.checkpoint(&id).await.unwrap().is_none()
            {
                crashed = Some(world);
                break;
            }
        }
        let world = crashed.expect("a crash point between the object and the commit");
        // Attempt 2 after the connector file changed to auto: offset 1 lands as base64.
        let mut auto = settings();
        auto.payload_format = PayloadFormat::Auto;
        let PartitionOutcome::Landed { commit, .. } = world
            .lander
            .land(&batch, &auto, run_ctx(&metrics, "r2"))
            .await
        else {
            panic!("attempt 2 lands");
        };
        assert_eq!(
            world.committed(&id).await,
            vec![0, 1, 2],
            "the committed object holds this attempt's records"
        );
        assert_eq!(commit.records, 3);
        assert_eq!(
            commit.dead_cursors,
            Some(vec![]),
            "nothing of this commit is dead-lettered"
        );
        assert!(
            commit.object_key.as_deref().unwrap().contains('~'),
            "{commit:?}"
        );
        assert_eq!(
            world.objects.keys(),
            vec![commit.object_key.unwrap()],
            "the other attempt's object is swept"
        );
    }
}
