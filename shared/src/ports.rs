//! The outside world as small async traits: where objects land ([`ObjectStore`]), where
//! checkpoints and the commit log live ([`StateStore`]) and where dead letters go
//! ([`DeadLetterQueue`]). AWS adapters are in [`crate::aws`], in-memory ones in
//! [`crate::memory`].

use crate::record::PartitionId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A failure of an outside service, classified once as transient or permanent.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PortError {
    /// Control flow: the stored checkpoint was not the one this writer read. Another writer
    /// (a concurrent or zombie invocation) committed first.
    #[error("{partition}: checkpoint moved: expected {expected:?}, found {found:?}")]
    CheckpointMoved {
        /// The partition.
        partition: String,
        /// What this writer read (sortable cursor), `None` for "no checkpoint yet".
        expected: Option<String>,
        /// What is stored now.
        found: Option<String>,
    },
    /// Control flow: the checkpoint is where this writer read it, but the commit log already
    /// holds an entry starting at this batch's first cursor. Only interleaved mode writes
    /// log entries without moving the checkpoint, so the partition was landed in interleaved
    /// mode before (a parallelization factor above 1, or a Pulsar Key_Shared subscription).
    /// Permanent: the checkpoint cannot tell which records of the batch those entries hold
    /// (a lane holds only some partition keys), so neither skipping nor re-landing is safe.
    #[error(
        "{partition}: the commit log already has an entry starting at {first} while the checkpoint is still at {checkpoint:?}: this partition was landed in interleaved mode (parallelization factor above 1, or Pulsar Key_Shared) and cannot switch to ordered mode in place; set the factor (or subscription type) back so it lands in interleaved mode again"
    )]
    LogEntryExists {
        /// The partition.
        partition: String,
        /// The batch's first cursor (sortable).
        first: String,
        /// The checkpoint this writer read.
        checkpoint: Option<String>,
    },
    /// Throttling, a 5xx, a timeout or a connection failure that outlasted the SDK's retries.
    #[error("{operation} {target}: transient failure: {message}")]
    Transient {
        /// The operation, e.g. `s3:PutObject`.
        operation: &'static str,
        /// What it was applied to (key, partition, queue).
        target: String,
        /// The service's message.
        message: String,
    },
    /// A failure retrying cannot fix: missing bucket/table/queue, access denied, bad request.
    #[error("{operation} {target}: permanent failure: {message}")]
    Permanent {
        /// The operation, e.g. `dynamodb:TransactWriteItems`.
        operation: &'static str,
        /// What it was applied to.
        target: String,
        /// The service's message.
        message: String,
    },
}

impl PortError {
    /// True when trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PortError::Transient { .. } | PortError::CheckpointMoved { .. }
        )
    }
}

/// What a conditional put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// Control flow: an object already exists at the key (`If-None-Match: *` failed).
    AlreadyExists,
}

/// Object storage: the Bronze bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes `body` at `key` only if no object exists there (`If-None-Match: *`).
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<PutOutcome, PortError>;
    /// Writes `body` at `key`, replacing what is there (for deterministic side objects).
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), PortError>;
    /// Reads an object, `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError>;
    /// Lists keys under `prefix` that sort after `start_after`, in key order.
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>, PortError>;
    /// Deletes an object (no error when it is already gone).
    async fn delete(&self, key: &str) -> Result<(), PortError>;
    /// A URL naming the object, e.g. `s3://bucket/key`, for pointers in dead letters.
    fn url(&self, key: &str) -> String;
}

/// The stored checkpoint of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sortable cursor of the last landed record.
    pub cursor: String,
    /// The commit that set this checkpoint.
    pub last_commit: CommitEntry,
}

/// One commit-log entry: which object holds which cursor range of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEntry {
    /// Sortable cursor of the first record this commit covers.
    pub first: String,
    /// Sortable cursor of the last record this commit covers; the new checkpoint.
    pub last: String,
    /// The Bronze object, `None` when every record of the range went to the DLQ.
    pub object_key: Option<String>,
    /// Records in the object.
    pub records: u64,
    /// Records of the range sent to the DLQ instead.
    pub dead_lettered: u64,
    /// Compressed object size.
    pub object_bytes: u64,
    /// Sum of the landed payload sizes before encoding.
    pub payload_bytes: u64,
    /// The run (Lambda request id) that committed.
    pub run_id: String,
    /// Wall-clock commit time, ms since the epoch (metadata only; never part of a key).
    pub committed_at_ms: i64,
    /// Fingerprint of the record at `last` ([`crate::record::fingerprint`]), so that a source
    /// whose cursors restart (a recreated topic) is recognised when it delivers another
    /// record at that cursor. `None` in entries written before it existed.
    #[serde(default)]
    pub last_fingerprint: Option<String>,
    /// The display cursors of the records this commit dead-lettered, when there are at most
    /// [`MAX_LISTED_DEAD_LETTERS`]; `None` when there were more, or in older entries.
    /// Interleaved mode uses it to tell a committed batch's poison from another lane's
    /// records.
    #[serde(default)]
    pub dead_cursors: Option<Vec<String>>,
    /// The entry's **commit-log position**: 1 for a partition's first commit, then one more
    /// for each commit, in the order the commits happened (ordered and interleaved mode
    /// alike). The state store assigns it in the commit's own transaction, conditioned on
    /// the previous position ([`LogPositions`]), so an entry written later always has a
    /// higher position, whatever its cursors; positions are dense, and the positions a
    /// reader sees are always 1..n except for entries being committed while it reads.
    /// `None` in entries passed to a commit (the store sets it) and in entries written
    /// before positions existed.
    #[serde(default)]
    pub position: Option<u64>,
}

/// A partition's commit-log positions ([`CommitEntry::position`]), kept in their own state
/// item, which a reset does not delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPositions {
    /// The position of the partition's latest commit (0 before the first).
    pub last: u64,
    /// The last position at the partition's latest reset (0 if never reset): entries at or
    /// below it were archived by the reset, and a position at or below it that a reader has
    /// not seen will never appear.
    pub reset_floor: u64,
}

/// The most dead-lettered cursors a commit entry lists (keeps the item far below
/// DynamoDB's 400 KB).
pub const MAX_LISTED_DEAD_LETTERS: usize = 256;

/// The state registry: checkpoints and the commit log, per partition.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The current checkpoint (strongly consistent), `None` before the first commit.
    async fn checkpoint(&self, partition: &PartitionId) -> Result<Option<Checkpoint>, PortError>;
    /// Atomically appends `entry` to the commit log and moves the checkpoint to `entry.last`,
    /// only if the stored checkpoint is still `expected` (sortable cursor, `None` = none yet).
    /// Fails with [`PortError::CheckpointMoved`] otherwise, changing nothing.
    async fn commit(
        &self,
        partition: &PartitionId,
        expected: Option<&str>,
        entry: &CommitEntry,
    ) -> Result<(), PortError>;
    /// Records a commit-log entry without moving the checkpoint, only if no entry starts at
    /// `entry.first` yet. Used when batches of one shard interleave (ParallelizationFactor > 1).
    /// Returns the entry already stored when there is one.
    async fn log_commit(
        &self,
        partition: &PartitionId,
        entry: &CommitEntry,
    ) -> Result<Option<CommitEntry>, PortError>;
    /// The commit-log entry that starts at `first` (sortable cursor), if any.
    async fn commit_entry(
        &self,
        partition: &PartitionId,
        first: &str,
    ) -> Result<Option<CommitEntry>, PortError>;
    /// The commit log of a partition in cursor order.
    async fn commit_log(&self, partition: &PartitionId) -> Result<Vec<CommitEntry>, PortError>;
    /// Every partition that has a checkpoint, for audits (`status`, `verify`).
    async fn partitions(&self) -> Result<Vec<PartitionId>, PortError>;
    /// Deletes a partition's checkpoint and commit log (the operator's `reset`, after its
    /// objects are archived); returns how many items were deleted. Its [`LogPositions`] stay
    /// and their `reset_floor` moves up to `last`, so the entries landed after the reset get
    /// positions above every entry before it (a publisher's watermark never hides them).
    async fn forget_partition(&self, partition: &PartitionId) -> Result<u64, PortError>;
    /// The partition's commit-log positions, `None` before its first positioned commit.
    async fn log_positions(
        &self,
        partition: &PartitionId,
    ) -> Result<Option<LogPositions>, PortError>;
    /// Every partition with a commit log or commit-log positions: [`StateStore::partitions`]
    /// plus partitions landed only in interleaved mode (which have no checkpoint) and
    /// partitions reset since. For publishers, which must see every commit.
    async fn logged_partitions(&self) -> Result<Vec<PartitionId>, PortError>;
    /// The start position of a partition that has no checkpoint yet and starts at the
    /// source's end (`start_from: latest`): `proposed` when none is recorded (it is recorded,
    /// atomically), else the one recorded first. So `latest` is resolved once per partition,
    /// when it is first read, and every later reader (after a rebalance, a restart, a lost
    /// lease, an expired iterator) starts there instead of at a newer end, which would skip
    /// what arrived in between. Opaque to the store: the runner's sources define it (Kafka: a
    /// sortable offset; Kinesis: ms since the epoch). [`StateStore::forget_partition`]
    /// deletes it.
    async fn claim_start(
        &self,
        partition: &PartitionId,
        proposed: &str,
    ) -> Result<String, PortError>;
    /// The start position recorded by [`StateStore::claim_start`], if any (strongly
    /// consistent), for a source that only computes a proposal when none is recorded.
    async fn start(&self, partition: &PartitionId) -> Result<Option<String>, PortError>;
}

/// The dead-letter queue.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync + std::fmt::Debug {
    /// Sends one serialized dead letter. `dedup_id` is deterministic per source record.
    async fn send(&self, dedup_id: &str, body: &str) -> Result<(), PortError>;

    /// Sends several `(dedup_id, body)` letters; `Ok` only when every one was accepted. A
    /// letter may be sent more than once when this is retried (its id is deterministic, so
    /// consumers and FIFO queues drop repeats). The default sends them one by one; the SQS
    /// adapter batches them.
    async fn send_all(&self, letters: &[(String, String)]) -> Result<(), PortError> {
        for (dedup_id, body) in letters {
            self.send(dedup_id, body).await?;
        }
        Ok(())
    }
}
