//! The runner's landing pipeline, the same for every source: per-partition buffers, file
//! cuts, landing with the shared [`Lander`] under an adaptive concurrency limit, retries,
//! and draining on revocation and shutdown.
//!
//! A source ([`crate::sources`]: Kafka, Pulsar, Kinesis) feeds [`Input`]s into one
//! channel, in delivery order:
//!
//! - [`Input::Assign`] opens a buffer for a partition, with a new [`Epoch`], the checkpoint
//!   read at assignment and the cursor the source was positioned at. A buffer exists only
//!   between an assignment and its revocation.
//! - [`Input::Records`] carries a [`Chunk`]: records stamped with the epoch of the assignment
//!   they were read under, and the [`Footprint`] (memory) they hold. A record whose epoch is
//!   not its partition's current one was read under an earlier assignment: it is dropped,
//!   never landed after a gap (the next owner reads it again from the checkpoint).
//! - [`Input::Revoke`] lands and commits what is buffered for the partitions given up, and
//!   forgets them; a landing still running then is stale: its result touches nothing of a
//!   successor (it carries its epoch too).
//!
//! Memory accounting is structural: bytes are reserved in [`Shared::buffered`] by creating a
//! [`Footprint`] and released when that footprint is dropped. Footprints move with the
//! records (chunk, buffer, landing task), so every reserved byte is released exactly once,
//! whichever path the records take, and the counter cannot wrap.
//!
//! Records only leave memory committed: a failed landing puts its records back at the head
//! of the partition's buffer and retries after a backoff; the checkpoint in the state
//! registry decides, at every attempt, what is already landed.

use crate::concurrency::{AdaptiveLimit, Observation};
use crate::config::{ConcurrencyConfig, FileConfig};
use bronze::config::{ConnectorConfig, StreamSettings};
use bronze::cursor::Cursor;
use bronze::engine::{EngineError, Lander, PartitionOutcome, RunContext};
use bronze::record::{PartitionBatch, PartitionId, Record};
use bronze::telemetry::{CursorRestartDetected, Metrics};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One assignment of a partition to this process. Every assignment gets a new epoch, so
/// records read and landings started under an earlier one are recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition handed to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<C> {
    /// Which partition.
    pub partition: PartitionId,
    /// This assignment's epoch: records and landings of other epochs are stale.
    pub epoch: Epoch,
    /// The checkpoint read at assignment (last landed), if the partition has one. Lag
    /// counts from it until this process commits.
    pub checkpoint: Option<C>,
    /// The first cursor the source delivers (Kafka: the seek position, checkpoint + 1), when
    /// it is known. A record below it is already landed.
    pub start: Option<C>,
}

/// One record read under an assignment.
#[derive(Debug)]
pub struct Delivery<C> {
    /// Its partition.
    pub partition: PartitionId,
    /// The epoch of the assignment it was read under.
    pub epoch: Epoch,
    /// The record.
    pub record: Record<C>,
}

/// Records handed to the pipeline at once, with the memory they hold.
#[derive(Debug)]
pub struct Chunk<C> {
    /// Records in delivery order.
    pub records: Vec<Delivery<C>>,
    /// What they hold in memory, reserved when each was added.
    pub footprint: Footprint,
}

impl<C> Chunk<C> {
    /// An empty chunk counting into `shared`.
    pub fn new(shared: &Arc<Shared>) -> Self {
        Self {
            records: Vec::new(),
            footprint: shared.reserve(0),
        }
    }

    /// Adds a record, reserving its [`record_footprint`].
    pub fn push(&mut self, partition: PartitionId, epoch: Epoch, record: Record<C>) {
        let footprint = self.footprint.shared.reserve(record_footprint(&record));
        self.footprint.absorb(footprint);
        self.records.push(Delivery {
            partition,
            epoch,
            record,
        });
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Bytes reserved in [`Shared::buffered`], released when dropped. It cannot be copied, and
/// splitting or merging moves bytes between footprints, so a reserved byte is released once.
#[derive(Debug)]
#[must_use = "dropping a footprint releases its bytes"]
pub struct Footprint {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Footprint {
    /// The bytes it holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes over `other`'s bytes.
    pub fn absorb(&mut self, mut other: Footprint) {
        debug_assert!(
            Arc::ptr_eq(&self.shared, &other.shared),
            "footprints of one pipeline"
        );
        self.bytes = self.bytes.saturating_add(std::mem::take(&mut other.bytes));
    }

    /// Moves `bytes` (at most all it holds) into a new footprint.
    pub fn split(&mut self, bytes: u64) -> Footprint {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Footprint {
            shared: self.shared.clone(),
            bytes,
        }
    }
}

impl Drop for Footprint {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.shared.release(self.bytes);
        }
    }
}

/// What a source sends to the pipeline.
#[derive(Debug)]
pub enum Input<C> {
    /// Partitions assigned to this process: a buffer opens for each (replacing one of an
    /// earlier epoch).
    Assign(Vec<Assignment<C>>),
    /// Records in delivery order (per partition, cursor order).
    Records(Chunk<C>),
    /// The source is giving these partitions up (rebalance): land and commit what is
    /// buffered for them, forget them, then answer.
    Revoke(Vec<PartitionId>, oneshot::Sender<()>),
    /// Like [`Input::Revoke`], for each partition only while its buffer is still of that
    /// epoch: a revocation sent late (after the reader of an ended assignment stopped) must
    /// not land and close the buffer of a newer assignment of the same partition, whose
    /// records would then be dropped as stale while its reader goes on.
    RevokeEpochs(Vec<(PartitionId, Epoch)>, oneshot::Sender<()>),
    /// The newest cursor each partition has (Kafka: the high watermark), for lag.
    HighWatermarks(Vec<(PartitionId, u64)>),
    /// The source is stopping: every drain from now on (revocations and the final one)
    /// ends by this deadline, so a shutdown is one drain bounded by `shutdown_timeout_ms`.
    Stop(Instant),
}

/// The source's side of a commit.
pub trait Acknowledge<C>: Send + Sync + 'static {
    /// These records of `partition` (in cursor order) are committed, or were already;
    /// everything at or below the checkpoint is landed. Only records of a commit are given.
    fn committed(&self, partition: &PartitionId, records: &[Record<C>]);
}

/// Lag of a partition in records, from its last committed cursor and the source's newest.
pub type LagFn<C> = fn(last_committed: Option<&C>, high_watermark: u64) -> u64;

/// State the pipeline shares with the source and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Shared {
    /// Memory held by records received and not yet committed: the sum of the live
    /// [`Footprint`]s (reserved by the source, released when the records are committed or
    /// given up).
    pub buffered: AtomicU64,
    /// Landings running.
    pub in_flight: AtomicUsize,
    /// The current concurrency limit.
    pub limit: AtomicUsize,
    /// Records behind the high watermark, per partition.
    pub lag: Mutex<BTreeMap<PartitionId, u64>>,
    /// Why the pipeline is unhealthy (a permanent landing failure), if it is.
    pub unhealthy: Mutex<Option<String>>,
    /// Landing attempts that failed.
    pub failures: AtomicU64,
    /// Fetch pauses because the buffer was full.
    pub pauses: AtomicU64,
    /// Since when (ms since the epoch) the source has paused fetching on a full buffer; 0
    /// when it is not paused.
    pub paused_since_ms: AtomicU64,
    /// When (ms since the epoch) a landing last finished with its records committed; 0
    /// before the first.
    pub last_progress_ms: AtomicU64,
    /// Records dropped because they were read under an assignment that has ended.
    pub stale_records: AtomicU64,
    /// Records not taken because their partition's cursors restarted below its checkpoint
    /// (the engine's `CursorRestart`, or [`Pipeline::rewinds_are_restarts`]): never landed or
    /// committed, so they are read again once the partition is reset.
    pub refused_records: AtomicU64,
    /// Counters of landed, skipped and dead-lettered records, per stream.
    pub metrics: Metrics,
    /// Per stream, the largest age (ms) of the newest record of a landing started since the
    /// last metrics publication: the `OffsetLagMilliseconds` the template's autoscaling tracks.
    pub window_lag_ms: Mutex<BTreeMap<(bronze::record::Source, String), i64>>,
}

impl Shared {
    /// Reserves `bytes` of buffer memory until the returned footprint is dropped.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Footprint {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
        Footprint {
            shared: self.clone(),
            bytes,
        }
    }

    fn release(&self, bytes: u64) {
        // Saturating as a second guard: footprints already make a double release impossible.
        let _ = self
            .buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Records whether the source is paused on a full buffer (for stall detection).
    pub fn set_paused(&self, paused: bool) {
        let value = if paused { now_ms().max(1) } else { 0 };
        self.paused_since_ms.store(value, Ordering::Relaxed);
    }

    /// Backpressure for a source that reads from tasks of its own (Pulsar's consumer, one
    /// Kinesis reader per shard): whether to hold off reading now. Fetching stops once
    /// `max_buffer` bytes are held and resumes below half of it, for every task at once;
    /// the pause is counted once and feeds stall detection, as Kafka's pause does.
    pub fn hold_fetching(&self, max_buffer: u64) -> bool {
        let buffered = self.buffered.load(Ordering::Relaxed);
        let paused = self.paused_since_ms.load(Ordering::Relaxed) != 0;
        if !paused && buffered >= max_buffer {
            let since = now_ms().max(1);
            if self
                .paused_since_ms
                .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.pauses.fetch_add(1, Ordering::Relaxed);
                tracing::info!(buffered, cap = max_buffer, "backpressure: not reading");
            }
            true
        } else if paused && buffered < max_buffer / 2 {
            if self.paused_since_ms.swap(0, Ordering::Relaxed) != 0 {
                tracing::info!(buffered, "backpressure released");
            }
            false
        } else {
            paused
        }
    }

    /// Why the pipeline is stalled, if it is: paused on a full buffer for at least
    /// `timeout` with no landing committed in that time.
    pub fn stalled(&self, timeout: Duration) -> Option<String> {
        stall(
            now_ms(),
            self.paused_since_ms.load(Ordering::Relaxed),
            self.last_progress_ms.load(Ordering::Relaxed),
            timeout,
        )
    }
}

/// The stall decision: fetching paused since `paused_since_ms` (0: not paused) and the last
/// commit at `last_progress_ms` (0: none yet), both at least `timeout` before `now_ms`.
pub fn stall(
    now_ms: u64,
    paused_since_ms: u64,
    last_progress_ms: u64,
    timeout: Duration,
) -> Option<String> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if paused_since_ms == 0 || now_ms.saturating_sub(paused_since_ms) < timeout_ms {
        return None;
    }
    if last_progress_ms != 0 && now_ms.saturating_sub(last_progress_ms) < timeout_ms {
        return None;
    }
    Some(format!(
        "stalled: fetching paused on a full buffer for {} s and {}",
        now_ms.saturating_sub(paused_since_ms) / 1000,
        if last_progress_ms == 0 {
            "nothing committed since the start".to_owned()
        } else {
            format!(
                "nothing committed for {} s",
                now_ms.saturating_sub(last_progress_ms) / 1000
            )
        }
    ))
}

/// What to do with a record, given where its buffer stands (a pure decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<C> {
    /// It continues the buffer: keep it.
    Continue,
    /// At or below a cursor already received, or below where the partition was positioned:
    /// a redelivery of a record held or landed. Keeping it would land it twice.
    Redelivery,
    /// The first record of an assignment lies past the position the partition was seeked
    /// to: the source has nothing in between (Kafka: transaction markers, compaction,
    /// retention). Kept, and reported.
    Gap {
        /// The cursor the partition was positioned at.
        expected: C,
    },
}

/// Decides whether `cursor` continues a buffer that starts at `start` (the seek position,
/// if known) and has received up to `last_received`, in ordered mode.
pub fn admit<C: Cursor>(start: Option<&C>, last_received: Option<&C>, cursor: &C) -> Admission<C> {
    match (last_received, start) {
        (Some(last), _) if cursor <= last => Admission::Redelivery,
        (Some(_), _) => Admission::Continue,
        (None, Some(start)) if cursor < start => Admission::Redelivery,
        (None, Some(start)) if cursor > start => Admission::Gap {
            expected: start.clone(),
        },
        _ => Admission::Continue,
    }
}

/// What a record holds in memory, for the buffer bound: its data ([`record_bytes`]) plus the
/// record itself and one allocator chunk per heap block. For small messages the overhead is
/// most of it (a 120-byte payload with a key and a header takes about 400 bytes), so counting
/// data alone would let the buffer hold several times its cap.
pub fn record_footprint<C>(record: &Record<C>) -> u64 {
    /// Per heap block: glibc's chunk header plus alignment, rounded.
    const CHUNK: usize = 16;
    let block = |len: usize| if len == 0 { 0 } else { len + CHUNK };
    let headers: usize =
        block(record.headers.len() * std::mem::size_of::<bronze::record::Header>())
            + record
                .headers
                .iter()
                .map(|h| {
                    block(h.key.len())
                        + h.value.as_ref().map_or(0, |v| block(v.len()))
                        + h.raw_key.as_ref().map_or(0, |k| block(k.len()))
                })
                .sum::<usize>();
    (std::mem::size_of::<Record<C>>()
        + record.payload.as_ref().map_or(0, |v| block(v.len()))
        + record.key.as_ref().map_or(0, |v| block(v.len()))
        + record.defect.as_ref().map_or(0, |d| block(d.len()))
        + headers) as u64
}

/// A record's data bytes (payload, key, header keys and values): what `files.max_bytes`
/// counts.
pub fn record_bytes<C>(record: &Record<C>) -> u64 {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    (record.payload.as_ref().map_or(0, Vec::len)
        + record.key.as_ref().map_or(0, Vec::len)
        + headers) as u64
}

/// The file being filled in one partition: input-derived counters only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenFile {
    /// Records in it.
    pub records: usize,
    /// Their payload bytes.
    pub bytes: u64,
    /// Smallest and largest record timestamps seen.
    pub span: Option<(i64, i64)>,
}

impl OpenFile {
    /// True when a record with timestamp `ts` must start a new file because it would
    /// stretch this one's timestamp span beyond `max_span_ms`.
    pub fn span_exceeded_by(&self, ts: Option<i64>, limits: &FileConfig) -> bool {
        match (self.span, ts) {
            (Some((lo, hi)), Some(ts)) if self.records > 0 => {
                hi.max(ts).saturating_sub(lo.min(ts)) > limits.max_span_ms
            }
            _ => false,
        }
    }

    /// Adds a record.
    pub fn add(&mut self, ts: Option<i64>, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
        if let Some(ts) = ts {
            self.span = Some(match self.span {
                None => (ts, ts),
                Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
            });
        }
    }

    /// True when the file has reached its record or byte limit.
    pub fn is_full(&self, limits: &FileConfig) -> bool {
        self.records >= limits.max_records || self.bytes >= limits.max_bytes
    }
}

/// Where the records of one assigned partition go: sealed files wait to land, in order, and
/// the open one fills up.
#[derive(Debug)]
struct PartitionBuffer<C> {
    settings: StreamSettings,
    /// The assignment this buffer belongs to.
    epoch: Epoch,
    sealed: VecDeque<Vec<Record<C>>>,
    open: Vec<Record<C>>,
    open_file: OpenFile,
    open_since: Option<Instant>,
    /// Memory of the records held here (sealed and open; a landing owns its own).
    held: Footprint,
    in_flight: bool,
    retry_at: Option<Instant>,
    failures: u32,
    /// The last committed cursor: the checkpoint read at assignment, then this process's
    /// commits.
    last_committed: Option<C>,
    /// Where the source was positioned at assignment, when known.
    start: Option<C>,
    last_received: Option<C>,
    /// Why the partition takes no more records: its cursors restarted (the error's text).
    restarted: Option<String>,
}

impl<C: Cursor> PartitionBuffer<C> {
    fn new(settings: StreamSettings, assignment: Assignment<C>, held: Footprint) -> Self {
        Self {
            settings,
            epoch: assignment.epoch,
            sealed: VecDeque::new(),
            open: Vec::new(),
            open_file: OpenFile::default(),
            open_since: None,
            held,
            in_flight: false,
            retry_at: None,
            failures: 0,
            last_committed: assignment.checkpoint,
            start: assignment.start,
            last_received: None,
            restarted: None,
        }
    }

    fn interleaved(&self) -> bool {
        self.settings.parallelization_factor > 1
    }

    fn push(&mut self, record: Record<C>, footprint: Footprint, limits: &FileConfig) {
        if self.open_file.span_exceeded_by(record.timestamp_ms, limits) {
            self.seal();
        }
        if self.open.is_empty() {
            self.open_since = Some(Instant::now());
        }
        self.open_file
            .add(record.timestamp_ms, record_bytes(&record));
        self.open.push(record);
        self.held.absorb(footprint);
        if self.open_file.is_full(limits) {
            self.seal();
        }
    }

    /// Closes the open file. In interleaved mode records arrive in any order (a Key_Shared
    /// redelivery after a consumer leaves comes after newer records), so a file is put in
    /// cursor order and a cursor held twice is kept once: a landing is always sorted.
    fn seal(&mut self) {
        if !self.open.is_empty() {
            let mut file = std::mem::take(&mut self.open);
            if self.interleaved() {
                file.sort_by(|a, b| a.cursor.cmp(&b.cursor));
                let mut dropped = 0u64;
                file.dedup_by(|later, kept| {
                    let same = later.cursor == kept.cursor;
                    if same {
                        dropped += record_footprint(later);
                    }
                    same
                });
                drop(self.held.split(dropped));
            }
            self.sealed.push_back(file);
        }
        self.open_file = OpenFile::default();
        self.open_since = None;
    }

    /// Stops a partition whose cursors restarted: what it receives from now on is neither
    /// landed nor committed (it is read again once the partition is reset), and `/healthz`
    /// reports `error` until the process ends. With `drop_held`, so are the records it holds
    /// (they came from the restarted log); without, they still land (they were read before
    /// the cursors went back, from a log that may no longer exist).
    fn stop_restarted(&mut self, error: &EngineError, shared: &Shared, drop_held: bool) {
        let text = error.to_string();
        *shared.unhealthy.lock().expect("health lock") = Some(text.clone());
        self.restarted = Some(text);
        if !drop_held {
            return;
        }
        let held = self.sealed.iter().map(Vec::len).sum::<usize>() + self.open.len();
        shared
            .refused_records
            .fetch_add(held as u64, Ordering::Relaxed);
        self.sealed.clear();
        self.open.clear();
        self.open_file = OpenFile::default();
        self.open_since = None;
        drop(self.held.split(self.held.bytes()));
    }

    fn ready(&self, now: Instant) -> bool {
        !self.in_flight && !self.sealed.is_empty() && self.retry_at.is_none_or(|t| t <= now)
    }

    fn holds_records(&self) -> bool {
        self.in_flight || !self.sealed.is_empty() || !self.open.is_empty()
    }
}

/// Backoff before retrying a partition after its `failures`-th failure in a row.
pub fn backoff(failures: u32, permanent: bool) -> Duration {
    let (base, cap) = if permanent {
        (Duration::from_secs(5), Duration::from_secs(300))
    } else {
        (Duration::from_millis(250), Duration::from_secs(30))
    };
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(cap)
}

/// What a landing task hands back.
#[derive(Debug)]
struct Landed<C> {
    /// The epoch of the assignment the landing was started under.
    epoch: Epoch,
    batch: PartitionBatch<C>,
    /// The memory of the batch's records, owned by the landing.
    footprint: Footprint,
    outcome: PartitionOutcome<C>,
    elapsed: Duration,
    retries: u64,
}

/// The pipeline's fixed parts.
#[derive(Debug)]
pub struct Pipeline<C, A> {
    lander: Lander,
    connector: Arc<ConnectorConfig>,
    files: FileConfig,
    max_buffer: u64,
    shared: Arc<Shared>,
    acker: Arc<A>,
    run_id: Arc<str>,
    lag_fn: LagFn<C>,
    /// Settings override applied to every stream of this source (Pulsar Key_Shared lands
    /// in interleaved mode).
    interleaved: bool,
    /// A record at or below one already received is a restart of the source's cursors, not a
    /// redelivery (Kafka).
    rewinds_are_restarts: bool,
    limiter: AdaptiveLimit,
    buffers: HashMap<PartitionId, PartitionBuffer<C>>,
    high_watermarks: HashMap<PartitionId, u64>,
    tasks: JoinSet<Landed<C>>,
    /// Set when the source stops: no drain goes past it.
    stop_deadline: Option<Instant>,
}

impl<C: Cursor, A: Acknowledge<C>> Pipeline<C, A> {
    /// Builds a pipeline.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lander: Lander,
        connector: Arc<ConnectorConfig>,
        files: FileConfig,
        max_buffer: u64,
        concurrency: &ConcurrencyConfig,
        shared: Arc<Shared>,
        acker: Arc<A>,
        run_id: &str,
        lag_fn: LagFn<C>,
    ) -> Self {
        let limiter = AdaptiveLimit::new(concurrency);
        shared.limit.store(limiter.limit(), Ordering::Relaxed);
        Self {
            lander,
            connector,
            files,
            max_buffer,
            shared,
            acker,
            run_id: run_id.into(),
            lag_fn,
            interleaved: false,
            rewinds_are_restarts: false,
            limiter,
            buffers: HashMap::new(),
            high_watermarks: HashMap::new(),
            tasks: JoinSet::new(),
            stop_deadline: None,
        }
    }

    /// Lands every stream of this source in interleaved mode (records of one partition are
    /// shared among several consumers, e.g. Pulsar Key_Shared).
    pub fn interleaved(mut self) -> Self {
        self.interleaved = true;
        self
    }

    /// Takes a record below the seek position, or at or below one already received, for
    /// proof that the source's cursors restarted (a recreated or truncated Kafka topic: the
    /// consumer's position fell outside the log and `auto.offset.reset` moved it), instead of
    /// dropping it as a redelivery. Dropping would skip the new log's records up to the
    /// checkpoint as "already landed". The partition then takes no more records: the ones it
    /// holds still land, the rest are neither landed nor committed, the restart is logged and
    /// counted once (`CursorRestarts`) and `/healthz` reports it with the `reset` command
    /// that starts the partition over. For a source whose cursors only move forward within
    /// one assignment (Kafka); Kinesis and Pulsar redeliver legitimately.
    pub fn rewinds_are_restarts(mut self) -> Self {
        self.rewinds_are_restarts = true;
        self
    }

    /// Runs until the input channel closes (the source stopped), then lands and commits
    /// everything buffered, by the deadline of [`Input::Stop`] or within `drain_timeout`.
    /// Returns the number of partitions that could not be drained (their records are not
    /// committed and will be read again).
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Input<C>>,
        drain_timeout: Duration,
    ) -> usize {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(landed) => self.finished(landed),
                        Err(e) => panic!("landing task failed: {e}"),
                    }
                }
                message = input.recv() => match message {
                    Some(Input::Assign(assignments)) => self.assign(assignments),
                    Some(Input::Records(chunk)) => self.push(chunk),
                    Some(Input::Revoke(partitions, ack)) => {
                        self.revoke(&partitions, drain_timeout).await;
                        let _ = ack.send(());
                    }
                    Some(Input::RevokeEpochs(partitions, ack)) => {
                        let current: Vec<PartitionId> = partitions
                            .into_iter()
                            .filter(|(id, epoch)| {
                                self.buffers.get(id).is_some_and(|b| b.epoch == *epoch)
                            })
                            .map(|(id, _)| id)
                            .collect();
                        self.revoke(&current, drain_timeout).await;
                        let _ = ack.send(());
                    }
                    Some(Input::HighWatermarks(marks)) => {
                        self.high_watermarks.extend(
                            marks.into_iter().filter(|(id, _)| self.buffers.contains_key(id)),
                        );
                        self.update_lag();
                    }
                    Some(Input::Stop(deadline)) => {
                        self.stop_deadline =
                            Some(self.stop_deadline.map_or(deadline, |d| d.min(deadline)));
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.seal_expired();
                    self.relieve_pressure();
                    self.update_lag();
                }
            }
            self.schedule();
        }
        let all: Vec<PartitionId> = self.buffers.keys().cloned().collect();
        self.revoke(&all, drain_timeout).await
    }

    fn settings(&self, id: &PartitionId) -> StreamSettings {
        let mut settings = self
            .connector
            .stream(id.source, &id.stream)
            .cloned()
            .unwrap_or_else(|| {
                // The source only subscribes to listed streams when unlisted ones are
                // refused; land with the defaults rather than drop if one slips through.
                bronze::config::ConnectorConfig::default()
                    .stream(id.source, &id.stream)
                    .cloned()
                    .expect("defaults accept every stream")
            });
        if self.interleaved {
            // The engine's interleaved mode is selected by a parallelization factor above 1.
            settings.parallelization_factor = settings.parallelization_factor.max(2);
        }
        settings
    }

    /// Opens a buffer per assigned partition. A buffer of an earlier epoch is replaced: its
    /// records were read under an assignment that has ended (their memory is released, a
    /// landing of it still running is stale).
    fn assign(&mut self, assignments: Vec<Assignment<C>>) {
        for assignment in assignments {
            let id = assignment.partition.clone();
            tracing::debug!(partition = %id, epoch = %assignment.epoch, "buffer opened");
            let buffer =
                PartitionBuffer::new(self.settings(&id), assignment, self.shared.reserve(0));
            if let Some(old) = self.buffers.insert(id.clone(), buffer) {
                if old.holds_records() {
                    tracing::warn!(partition = %id, epoch = %old.epoch, "assigned again while records of the previous assignment were held; they will be read again");
                }
            }
        }
        self.update_lag();
    }

    fn push(&mut self, chunk: Chunk<C>) {
        let Chunk {
            records,
            mut footprint,
        } = chunk;
        for Delivery {
            partition: id,
            epoch,
            record,
        } in records
        {
            let own = footprint.split(record_footprint(&record));
            let Some(buffer) = self.buffers.get_mut(&id).filter(|b| b.epoch == epoch) else {
                // Read under an assignment that has ended (revoked, or assigned again since):
                // the checkpoint decides where the current owner reads it again.
                self.shared.stale_records.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(partition = %id, cursor = %record.cursor, epoch = %epoch, "record of an ended assignment dropped");
                continue;
            };
            if buffer.restarted.is_some() {
                self.shared.refused_records.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !buffer.interleaved() {
                match admit(
                    buffer.start.as_ref(),
                    buffer.last_received.as_ref(),
                    &record.cursor,
                ) {
                    Admission::Continue => {}
                    Admission::Redelivery if self.rewinds_are_restarts => {
                        let evidence = match &buffer.last_received {
                            Some(last) => format!(
                                "offset {} was delivered after offset {last}: the partition's offsets went back",
                                record.cursor
                            ),
                            None => format!(
                                "the first record after the seek to offset {} is at offset {}: the partition's log no longer reaches its checkpoint",
                                buffer
                                    .start
                                    .as_ref()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                                record.cursor
                            ),
                        };
                        let checkpoint = buffer
                            .last_committed
                            .as_ref()
                            .map_or_else(|| "(none)".to_owned(), ToString::to_string);
                        CursorRestartDetected {
                            partition: &id,
                            checkpoint: &checkpoint,
                            evidence: &evidence,
                            run_id: &self.run_id,
                        }
                        .emit(&self.shared.metrics);
                        let error = EngineError::CursorRestart {
                            partition: id.to_string(),
                            checkpoint,
                            evidence,
                            origin: id.source.to_string(),
                            stream: id.stream.clone(),
                            part: id.partition.clone(),
                        };
                        buffer.stop_restarted(&error, &self.shared, false);
                        self.shared.refused_records.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // A redelivery of a record still held (or committed): keeping it would
                    // land it twice.
                    Admission::Redelivery => continue,
                    Admission::Gap { expected } => {
                        tracing::warn!(
                            partition = %id,
                            cursor = %record.cursor,
                            expected = %expected,
                            epoch = %epoch,
                            "source gap: the first record after the seek position is later than it (the source has nothing in between: transaction markers, compaction or retention)"
                        );
                    }
                }
            }
            buffer.last_received = Some(record.cursor.clone());
            buffer.push(record, own, &self.files);
        }
    }

    fn seal_expired(&mut self) {
        let max = Duration::from_millis(self.files.max_latency_ms);
        for buffer in self.buffers.values_mut() {
            if buffer.open_since.is_some_and(|t| t.elapsed() >= max) {
                buffer.seal();
            }
        }
    }

    /// When the buffer is half full and nothing is ready to land, the largest open file is
    /// cut early, so that a buffer full of partial files cannot wait for the latency cut.
    fn relieve_pressure(&mut self) {
        if self.shared.buffered.load(Ordering::Relaxed) < self.max_buffer / 2 {
            return;
        }
        if self.buffers.values().any(|b| !b.sealed.is_empty()) {
            return;
        }
        if let Some(buffer) = self
            .buffers
            .values_mut()
            .filter(|b| !b.open.is_empty())
            .max_by_key(|b| b.open_file.bytes)
        {
            buffer.seal();
        }
    }

    /// Lag of the assigned partitions, from the last committed cursor (the checkpoint read
    /// at assignment until this process commits).
    fn update_lag(&mut self) {
        let mut total = 0u64;
        let mut lag = BTreeMap::new();
        for (id, hw) in &self.high_watermarks {
            let Some(buffer) = self.buffers.get(id) else {
                continue;
            };
            let l = (self.lag_fn)(buffer.last_committed.as_ref(), *hw);
            total = total.saturating_add(l);
            lag.insert(id.clone(), l);
        }
        if !self.high_watermarks.is_empty() {
            self.limiter.set_lag(total);
            self.shared
                .limit
                .store(self.limiter.limit(), Ordering::Relaxed);
        }
        *self.shared.lag.lock().expect("lag lock") = lag;
    }

    /// Starts landings, oldest-waiting partitions first, up to the concurrency limit.
    fn schedule(&mut self) {
        let now = Instant::now();
        let limit = self.limiter.limit();
        let mut ready: Vec<PartitionId> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.ready(now))
            .map(|(id, _)| id.clone())
            .collect();
        ready.sort_by_key(|id| self.buffers[id].held.bytes());
        ready.reverse();
        for id in ready {
            if self.tasks.len() >= limit {
                break;
            }
            let buffer = self.buffers.get_mut(&id).expect("listed");
            let records = buffer.sealed.pop_front().expect("ready has a sealed file");
            buffer.in_flight = true;
            let footprint = buffer
                .held
                .split(records.iter().map(record_footprint).sum());
            if let Some(newest) = records.iter().filter_map(|r| r.timestamp_ms).max() {
                let age = chrono_now_ms().saturating_sub(newest).max(0);
                let mut lag = self.shared.window_lag_ms.lock().expect("lag lock");
                let slot = lag.entry((id.source, id.stream.clone())).or_insert(age);
                *slot = (*slot).max(age);
            }
            let batch = PartitionBatch {
                id: id.clone(),
                records,
            };
            let epoch = buffer.epoch;
            let lander = self.lander.clone();
            let settings = buffer.settings.clone();
            let shared = self.shared.clone();
            let run_id = self.run_id.clone();
            self.tasks.spawn(async move {
                let started = Instant::now();
                let before = bronze::aws::peek_retries();
                let run = RunContext {
                    run_id: &run_id,
                    now_ms: chrono_now_ms(),
                    metrics: &shared.metrics,
                };
                let outcome = lander.land(&batch, &settings, run).await;
                Landed {
                    epoch,
                    batch,
                    footprint,
                    outcome,
                    elapsed: started.elapsed(),
                    retries: bronze::aws::peek_retries().saturating_sub(before),
                }
            });
        }
        self.shared
            .in_flight
            .store(self.tasks.len(), Ordering::Relaxed);
        self.shared.limit.store(limit, Ordering::Relaxed);
    }

    /// Books a finished landing: commits free their memory and are acknowledged; failures
    /// put the uncommitted records back at the head of the buffer. A landing of an ended
    /// assignment touches nothing but its own memory, which it releases.
    fn finished(&mut self, landed: Landed<C>) {
        let Landed {
            epoch,
            batch,
            mut footprint,
            outcome,
            elapsed,
            retries,
        } = landed;
        let id = batch.id;
        let mut records = batch.records;
        let (committed_upto, observation, error) = match outcome {
            PartitionOutcome::Landed { .. } | PartitionOutcome::AlreadyLanded { .. } => {
                let obs = if retries > 0 {
                    Observation::Retried(elapsed)
                } else {
                    Observation::Ok(elapsed)
                };
                (records.len(), obs, None)
            }
            PartitionOutcome::Failed {
                first_unlanded,
                error,
            } => {
                let n = records.partition_point(|r| r.cursor < first_unlanded);
                (n, Observation::Throttled, Some(error))
            }
        };
        self.limiter.observe(observation);
        if error.is_none() {
            self.shared
                .last_progress_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        let rest = records.split_off(committed_upto);
        // The committed records leave memory.
        drop(footprint.split(records.iter().map(record_footprint).sum()));
        let Some(buffer) = self.buffers.get_mut(&id).filter(|b| b.epoch == epoch) else {
            // Given up (revocation timed out) while landing, maybe assigned again since: the
            // current owner reads what this landing did not commit from the checkpoint.
            tracing::info!(partition = %id, epoch = %epoch, committed = records.len(), "landing of an ended assignment finished; its result is not booked");
            return;
        };
        buffer.in_flight = false;
        // What is left (the uncommitted records) stays in memory with the buffer.
        buffer.held.absorb(footprint);
        if let Some(last) = records.last() {
            if buffer
                .last_committed
                .as_ref()
                .is_none_or(|c| last.cursor > *c)
            {
                buffer.last_committed = Some(last.cursor.clone());
            }
            self.acker.committed(&id, &records);
        }
        match error {
            None => {
                buffer.failures = 0;
                buffer.retry_at = None;
                if self.shared.unhealthy.lock().expect("health lock").is_some()
                    && self
                        .buffers
                        .values()
                        .all(|b| b.failures == 0 && b.restarted.is_none())
                {
                    *self.shared.unhealthy.lock().expect("health lock") = None;
                }
            }
            Some(error @ EngineError::CursorRestart { .. }) => {
                // Retrying cannot help, and holding the partition's records would fill the
                // buffer and pause every other partition: the partition stops.
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .refused_records
                    .fetch_add(rest.len() as u64, Ordering::Relaxed);
                buffer.stop_restarted(&error, &self.shared, true);
            }
            Some(error) => {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                buffer.failures += 1;
                let permanent = !error.is_transient();
                buffer.retry_at = Some(Instant::now() + backoff(buffer.failures, permanent));
                if permanent {
                    *self.shared.unhealthy.lock().expect("health lock") =
                        Some(format!("{id}: {error}"));
                }
                if !rest.is_empty() {
                    buffer.sealed.push_front(rest);
                }
            }
        }
    }

    /// Lands and commits everything buffered for `partitions`, then forgets them. Records
    /// that cannot be committed before `timeout` (or the stop deadline, if sooner) are given
    /// up uncommitted (the next owner reads them again from the checkpoint). Returns how
    /// many partitions were given up.
    async fn revoke(&mut self, partitions: &[PartitionId], timeout: Duration) -> usize {
        let deadline = {
            let d = Instant::now() + timeout;
            self.stop_deadline.map_or(d, |s| s.min(d))
        };
        let wanted: std::collections::HashSet<&PartitionId> = partitions.iter().collect();
        for buffer in self
            .buffers
            .iter_mut()
            .filter(|(id, _)| wanted.contains(id))
            .map(|(_, b)| b)
        {
            buffer.seal();
            buffer.retry_at = None;
        }
        loop {
            let pending = partitions.iter().any(|id| {
                self.buffers
                    .get(id)
                    .is_some_and(|b| b.in_flight || !b.sealed.is_empty())
            });
            if !pending || Instant::now() >= deadline {
                break;
            }
            // Land revoked partitions first; others wait for the rebalance to end.
            self.schedule_only(&wanted);
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait.min(Duration::from_millis(200)), self.tasks.join_next())
                .await
            {
                Ok(Some(Ok(landed))) => self.finished(landed),
                Ok(Some(Err(e))) => panic!("landing task failed: {e}"),
                Ok(None) | Err(_) => {}
            }
        }
        let mut abandoned = 0;
        for id in partitions {
            if let Some(buffer) = self.buffers.remove(id) {
                if buffer.holds_records() {
                    abandoned += 1;
                    tracing::warn!(
                        partition = %id,
                        epoch = %buffer.epoch,
                        bytes = buffer.held.bytes(),
                        landing = buffer.in_flight,
                        "partition given up with uncommitted records; they will be read again"
                    );
                }
                // Dropping the buffer releases the memory of its records; a landing still
                // running owns (and will release) its own.
            }
            self.high_watermarks.remove(id);
        }
        self.update_lag();
        self.shared
            .in_flight
            .store(self.tasks.len(), Ordering::Relaxed);
        abandoned
    }

    /// Like [`Self::schedule`], restricted to `only` and ignoring backoff deadlines once
    /// their time has come (a revocation retries promptly but not in a tight loop).
    fn schedule_only(&mut self, only: &std::collections::HashSet<&PartitionId>) {
        let hidden: Vec<PartitionId> = self
            .buffers
            .keys()
            .filter(|id| !only.contains(id))
            .cloned()
            .collect();
        let mut parked = Vec::new();
        for id in hidden {
            let buffer = self.buffers.remove(&id).expect("listed");
            parked.push((id, buffer));
        }
        self.schedule();
        self.buffers.extend(parked);
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono_now_ms()).unwrap_or(0)
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::cursor::KafkaOffset;
    use bronze::memory::{MemoryDlq, MemoryObjectStore, MemoryStateStore};
    use bronze::ports::StateStore;
    use bronze::record::Source;

    #[test]
    fn fetching_holds_from_the_cap_until_below_half_and_counts_one_pause() {
        let shared = Arc::new(Shared::default());
        assert!(!shared.hold_fetching(100));
        let first = shared.reserve(60);
        let second = shared.reserve(40);
        // Several readers see the full buffer: one pause, and stall detection sees it.
        assert!(shared.hold_fetching(100));
        assert!(shared.hold_fetching(100));
        assert_eq!(shared.pauses.load(Ordering::Relaxed), 1);
        assert_ne!(shared.paused_since_ms.load(Ordering::Relaxed), 0);
        // Below the cap but not below half: still held.
        drop(second);
        assert!(shared.hold_fetching(100));
        // Below half: every reader resumes.
        drop(first);
        let _small = shared.reserve(49);
        assert!(!shared.hold_fetching(100));
        assert!(!shared.hold_fetching(100));
        assert_eq!(shared.paused_since_ms.load(Ordering::Relaxed), 0);
        assert_eq!(shared.pauses.load(Ordering::Relaxed), 1);
    }

    fn limits(max_records: usize, max_bytes: u64, max_span_ms: i64) -> FileConfig {
        FileConfig {
            max_records,
            max_bytes,
            max_span_ms,
            max_latency_ms: 1_000,
        }
    }

    fn record(offset: u64, ts: i64, size: usize) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(offset),
            key: None,
            headers: Vec::new(),
            timestamp_ms: Some(ts),
            payload: Some(vec![b'x'; size]),
            defect: None,
            schema_id: None,
        }
    }

    #[test]
    fn the_buffer_counts_what_a_record_holds_in_memory_not_only_its_data() {
        let mut r = record(7, 0, 120);
        r.key = Some(b"k123456".to_vec());
        r.headers = vec![bronze::record::Header {
            key: "h".to_owned(),
            value: Some(b"123456".to_vec()),
            raw_key: None,
        }];
        assert_eq!(record_bytes(&r), 120 + 7 + 1 + 6);
        let footprint = record_footprint(&r);
        // The record itself and five heap blocks (payload, key, header list, header key and
        // value) with their allocator chunks: about three times the data for a small message.
        assert!(
            footprint
                >= record_bytes(&r) + std::mem::size_of::<Record<KafkaOffset>>() as u64 + 5 * 16,
            "{footprint}"
        );
        assert!((300..=500).contains(&footprint), "{footprint}");
        // The same record counts the same when it is released (adds and subtracts balance).
        assert_eq!(record_footprint(&r.clone()), footprint);
        // A tombstone with nothing on the heap still costs its struct.
        let mut t = record(8, 0, 0);
        t.payload = None;
        assert_eq!(
            record_footprint(&t),
            std::mem::size_of::<Record<KafkaOffset>>() as u64
        );
    }

    fn cuts(records: Vec<Record<KafkaOffset>>, l: &FileConfig) -> Vec<(u64, u64)> {
        let shared = Arc::new(Shared::default());
        let mut b = PartitionBuffer::new(
            ConnectorConfig::default()
                .stream(Source::Kafka, "t")
                .cloned()
                .unwrap(),
            assignment(&PartitionId::new(Source::Kafka, "t", "0"), 1, None),
            shared.reserve(0),
        );
        for r in records {
            let f = shared.reserve(record_footprint(&r));
            b.push(r, f, l);
        }
        b.seal();
        b.sealed
            .iter()
            .map(|f| (f[0].cursor.0, f.last().unwrap().cursor.0))
            .collect()
    }

    #[test]
    fn files_are_cut_on_records_bytes_and_span() {
        let by_count = cuts(
            (0..10).map(|i| record(i, 0, 1)).collect(),
            &limits(4, 1 << 20, 1000),
        );
        assert_eq!(by_count, vec![(0, 3), (4, 7), (8, 9)]);
        let by_bytes = cuts(
            (0..6).map(|i| record(i, 0, 40)).collect(),
            &limits(100, 100, 1000),
        );
        // 40+40+40 >= 100: the third record fills the file.
        assert_eq!(by_bytes, vec![(0, 2), (3, 5)]);
        // Timestamps out of order still count as a span (min..max).
        let ts = [0, 500, 200, 1200, 1300, 100];
        let by_span = cuts(
            ts.iter()
                .enumerate()
                .map(|(i, t)| record(i as u64, *t, 1))
                .collect(),
            &limits(100, 1 << 20, 1000),
        );
        assert_eq!(by_span, vec![(0, 2), (3, 4), (5, 5)]);
        // The extremes a Kafka timestamp can take: a span too wide for i64, never an overflow.
        let extremes = cuts(
            [i64::MIN, i64::MAX, 0]
                .iter()
                .enumerate()
                .map(|(i, t)| record(i as u64, *t, 1))
                .collect(),
            &limits(100, 1 << 20, 1000),
        );
        assert_eq!(extremes, vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn cuts_depend_on_the_input_alone() {
        // The same records cut the same way whatever the delivery chunking.
        let l = limits(7, 300, 50);
        let records: Vec<_> = (0..40)
            .map(|i| record(i, (i as i64 * 13) % 97, (i as usize * 7) % 60))
            .collect();
        let a = cuts(records.clone(), &l);
        let b = cuts(records, &l);
        assert_eq!(a, b);
        assert!(a.len() > 3);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, false), Duration::from_millis(250));
        assert_eq!(backoff(2, false), Duration::from_millis(500));
        assert_eq!(backoff(30, false), Duration::from_secs(30));
        assert_eq!(backoff(1, true), Duration::from_secs(5));
        assert_eq!(backoff(30, true), Duration::from_secs(300));
    }

    /// What the pipeline acknowledged: the last cursor of each commit, and every cursor.
    #[derive(Debug, Default)]
    struct Acks {
        last: Mutex<Vec<(PartitionId, u64)>>,
        cursors: Mutex<Vec<(PartitionId, u64)>>,
    }

    impl Acknowledge<KafkaOffset> for Acks {
        fn committed(&self, partition: &PartitionId, records: &[Record<KafkaOffset>]) {
            let last = records.last().expect("a commit has records").cursor.0;
            self.last.lock().unwrap().push((partition.clone(), last));
            self.cursors
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| (partition.clone(), r.cursor.0)));
        }
    }

    fn kafka_lag(last: Option<&KafkaOffset>, hw: u64) -> u64 {
        hw.saturating_sub(last.map_or(0, |l| l.0 + 1))
    }

    fn memory_pipeline(
        faults: &Arc<bronze::memory::Faults>,
        files: FileConfig,
    ) -> (
        Pipeline<KafkaOffset, Acks>,
        Arc<MemoryStateStore>,
        Arc<Shared>,
        Arc<Acks>,
    ) {
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let lander = Lander::new(
            Arc::new(MemoryObjectStore::new(faults.clone())),
            state.clone(),
            Arc::new(MemoryDlq::new(faults.clone())),
            "bronze",
        );
        let shared = Arc::new(Shared::default());
        let acks = Arc::new(Acks::default());
        let pipeline = Pipeline::new(
            lander,
            Arc::new(ConnectorConfig::default()),
            files,
            1 << 30,
            &ConcurrencyConfig::default(),
            shared.clone(),
            acks.clone(),
            "test",
            kafka_lag,
        );
        (pipeline, state, shared, acks)
    }

    fn assignment(
        id: &PartitionId,
        epoch: u64,
        checkpoint: Option<u64>,
    ) -> Assignment<KafkaOffset> {
        Assignment {
            partition: id.clone(),
            epoch: Epoch(epoch),
            checkpoint: checkpoint.map(KafkaOffset),
            start: checkpoint.map(|c| KafkaOffset(c + 1)),
        }
    }

    fn assign(id: &PartitionId, epoch: u64, checkpoint: Option<u64>) -> Input<KafkaOffset> {
        Input::Assign(vec![assignment(id, epoch, checkpoint)])
    }

    /// Records of `id` read under `epoch` (the first assignment is epoch 1 in these tests).
    fn chunk(
        shared: &Arc<Shared>,
        id: &PartitionId,
        epoch: u64,
        offsets: impl IntoIterator<Item = u64>,
    ) -> Input<KafkaOffset> {
        let mut chunk = Chunk::new(shared);
        for o in offsets {
            chunk.push(id.clone(), Epoch(epoch), record(o, 0, 10));
        }
        Input::Records(chunk)
    }

    fn batch(
        shared: &Arc<Shared>,
        id: &PartitionId,
        offsets: std::ops::Range<u64>,
    ) -> Input<KafkaOffset> {
        chunk(shared, id, 1, offsets)
    }

    #[tokio::test]
    async fn failed_landings_keep_their_records_and_retry_until_committed() {
        let faults = bronze::memory::Faults::new();
        // Every operation from the fourth on fails (transient) until disarmed.
        faults.arm(3, bronze::memory::CrashPoint::After);
        let (pipeline, state, shared, _acks) =
            memory_pipeline(&faults, limits(10, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let id = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&id, 1, None)).await.unwrap();
        tx.send(batch(&shared, &id, 0..45)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            shared.failures.load(Ordering::Relaxed) > 0,
            "the fault was not hit"
        );
        assert!(state.commit_log(&id).await.unwrap().len() < 5);
        faults.disarm();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let log = state.commit_log(&id).await.unwrap();
        let ranges: Vec<_> = log
            .iter()
            .map(|e| {
                (
                    bronze::cursor::unpad(&e.first).to_owned(),
                    bronze::cursor::unpad(&e.last).to_owned(),
                )
            })
            .collect();
        // Contiguous, no overlap, everything once.
        let mut next = 0u64;
        for (first, last) in &ranges {
            assert_eq!(first.parse::<u64>().unwrap(), next, "{ranges:?}");
            next = last.parse::<u64>().unwrap() + 1;
        }
        assert_eq!(next, 45);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn revoke_commits_only_the_revoked_partitions_before_answering() {
        let faults = bronze::memory::Faults::new();
        // No trigger fires: only the revocation (or the final drain) lands anything.
        let files = FileConfig {
            max_latency_ms: 3_600_000,
            ..limits(1000, 1 << 20, 60_000)
        };
        let (pipeline, state, shared, acks) = memory_pipeline(&faults, files);
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let p0 = PartitionId::new(Source::Kafka, "t", "0");
        let p1 = PartitionId::new(Source::Kafka, "t", "1");
        tx.send(assign(&p0, 1, None)).await.unwrap();
        tx.send(assign(&p1, 1, None)).await.unwrap();
        tx.send(batch(&shared, &p0, 0..30)).await.unwrap();
        tx.send(batch(&shared, &p1, 0..20)).await.unwrap();
        let (ack, done) = oneshot::channel();
        tx.send(Input::Revoke(vec![p0.clone()], ack)).await.unwrap();
        done.await.unwrap();
        let c0 = state
            .checkpoint(&p0)
            .await
            .unwrap()
            .expect("p0 committed on revoke");
        assert_eq!(bronze::cursor::unpad(&c0.cursor), "29");
        assert!(
            state.checkpoint(&p1).await.unwrap().is_none(),
            "p1 is not revoked"
        );
        assert_eq!(
            shared.buffered.load(Ordering::Relaxed),
            20 * record_footprint(&record(0, 0, 10))
        );
        assert!(acks.last.lock().unwrap().contains(&(p0.clone(), 29)));
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        assert_eq!(
            bronze::cursor::unpad(&state.checkpoint(&p1).await.unwrap().unwrap().cursor),
            "19"
        );
    }

    #[tokio::test]
    async fn a_redelivered_record_is_not_landed_twice() {
        let faults = bronze::memory::Faults::new();
        let (pipeline, state, shared, _acks) =
            memory_pipeline(&faults, limits(1000, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let id = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&id, 1, None)).await.unwrap();
        tx.send(batch(&shared, &id, 0..10)).await.unwrap();
        // The source reconnects and delivers 5.. again, then new records.
        tx.send(batch(&shared, &id, 5..15)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let log = state.commit_log(&id).await.unwrap();
        assert_eq!(log.iter().map(|e| e.records).sum::<u64>(), 15, "{log:?}");
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn drains_on_close_commits_everything_and_frees_the_buffer() {
        let faults = bronze::memory::Faults::new();
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let lander = Lander::new(
            Arc::new(MemoryObjectStore::new(faults.clone())),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        let shared = Arc::new(Shared::default());
        let acks = Arc::new(Acks::default());
        let pipeline = Pipeline::new(
            lander,
            Arc::new(ConnectorConfig::default()),
            limits(10, 1 << 20, 60_000),
            1 << 30,
            &ConcurrencyConfig::default(),
            shared.clone(),
            acks.clone(),
            "test",
            kafka_lag,
        );
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(10)));
        let ids: Vec<_> = (0..3)
            .map(|p| PartitionId::new(Source::Kafka, "t", p.to_string()))
            .collect();
        for id in &ids {
            tx.send(assign(id, 1, None)).await.unwrap();
        }
        for n in 0..5u64 {
            let mut records = Chunk::new(&shared);
            for id in &ids {
                for i in 0..7 {
                    records.push(id.clone(), Epoch(1), record(n * 7 + i, 0, 10));
                }
            }
            tx.send(Input::Records(records)).await.unwrap();
        }
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
        for id in &ids {
            let log = state.commit_log(id).await.unwrap();
            let ranges: Vec<_> = log
                .iter()
                .map(|e| (e.first.clone(), e.last.clone()))
                .collect();
            assert_eq!(ranges.len(), 4, "{ranges:?}");
            assert_eq!(bronze::cursor::unpad(&log[3].last), "34");
        }
        let acks = acks.last.lock().unwrap();
        for id in &ids {
            assert_eq!(
                acks.iter().filter(|(p, _)| p == id).map(|(_, o)| *o).max(),
                Some(34)
            );
        }
    }

    /// Offsets committed for `id`, in order (from the objects the log references).
    async fn committed_offsets(
        state: &MemoryStateStore,
        objects: &MemoryObjectStore,
        id: &PartitionId,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        for e in state.commit_log(id).await.unwrap() {
            assert!(
                e.first <= e.last,
                "a log entry with first after last: {e:?}"
            );
            let body = objects.body(e.object_key.as_deref().unwrap()).unwrap();
            for line in bronze::bronze::read_lines(&body).unwrap() {
                out.push(line["cursor"].as_str().unwrap().parse().unwrap());
            }
        }
        out
    }

    /// An object store whose writes wait while its gate is closed: an S3 call that hangs
    /// through an outage and completes after it.
    #[derive(Debug)]
    struct Gated {
        inner: Arc<MemoryObjectStore>,
        open: tokio::sync::watch::Receiver<bool>,
    }

    #[async_trait::async_trait]
    impl bronze::ports::ObjectStore for Gated {
        async fn put_if_absent(
            &self,
            key: &str,
            body: Vec<u8>,
        ) -> Result<bronze::ports::PutOutcome, bronze::ports::PortError> {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
            self.inner.put_if_absent(key, body).await
        }
        async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), bronze::ports::PortError> {
            self.inner.put(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, bronze::ports::PortError> {
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

    struct Harness {
        state: Arc<MemoryStateStore>,
        objects: Arc<MemoryObjectStore>,
        shared: Arc<Shared>,
        acks: Arc<Acks>,
        gate: tokio::sync::watch::Sender<bool>,
        faults: Arc<bronze::memory::Faults>,
    }

    fn gated_pipeline(files: FileConfig) -> (Pipeline<KafkaOffset, Acks>, Harness) {
        let faults = bronze::memory::Faults::new();
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let (gate, open) = tokio::sync::watch::channel(true);
        let lander = Lander::new(
            Arc::new(Gated {
                inner: objects.clone(),
                open,
            }),
            state.clone(),
            Arc::new(MemoryDlq::new(faults.clone())),
            "bronze",
        );
        let shared = Arc::new(Shared::default());
        let acks = Arc::new(Acks::default());
        let pipeline = Pipeline::new(
            lander,
            Arc::new(ConnectorConfig::default()),
            files,
            1 << 30,
            &ConcurrencyConfig::default(),
            shared.clone(),
            acks.clone(),
            "test",
            kafka_lag,
        );
        let harness = Harness {
            state,
            objects,
            shared,
            acks,
            gate,
            faults,
        };
        (pipeline, harness)
    }

    fn footprints(offsets: std::ops::Range<u64>) -> u64 {
        offsets.map(|o| record_footprint(&record(o, 0, 10))).sum()
    }

    async fn revoke(tx: &mpsc::Sender<Input<KafkaOffset>>, id: &PartitionId) {
        let (ack, done) = oneshot::channel();
        tx.send(Input::Revoke(vec![id.clone()], ack)).await.unwrap();
        done.await.unwrap();
    }

    /// Defect: records of a revoked partition that the poll loop still held reached the
    /// pipeline after the revocation, opened a new buffer and committed after a gap (the
    /// old checkpoint as condition): everything in between was skipped for good.
    #[tokio::test]
    async fn records_of_an_ended_assignment_are_never_landed_after_a_gap() {
        let files = FileConfig {
            max_latency_ms: 100,
            ..limits(1000, 1 << 20, 60_000)
        };
        let (pipeline, h) = gated_pipeline(files);
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_millis(500)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        // Landed up to 919 before this runner got the partition.
        tx.send(assign(&p, 1, None)).await.unwrap();
        tx.send(chunk(&h.shared, &p, 1, 0..920)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(committed_offsets(&h.state, &h.objects, &p).await.len(), 920);
        // S3 fails through the revocation: nothing more is committed, the partition is
        // given up after the revoke timeout.
        h.faults.arm(0, bronze::memory::CrashPoint::Before);
        tx.send(chunk(&h.shared, &p, 1, 920..1000)).await.unwrap();
        revoke(&tx, &p).await;
        // The poll loop's chunk, read under the ended assignment, arrives afterwards.
        tx.send(chunk(&h.shared, &p, 1, 1631..1700)).await.unwrap();
        h.faults.disarm();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h.shared.stale_records.load(Ordering::Relaxed), 69);
        // Nothing past the checkpoint was landed: the next owner reads 920.. again.
        let landed = committed_offsets(&h.state, &h.objects, &p).await;
        assert_eq!(landed, (0..920).collect::<Vec<_>>());
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
        // Assigned again (a new epoch, seeked after the checkpoint): records from the seek
        // position land; a late record of the old epoch is still dropped.
        tx.send(assign(&p, 2, Some(919))).await.unwrap();
        tx.send(chunk(&h.shared, &p, 1, 1700..1710)).await.unwrap();
        tx.send(chunk(&h.shared, &p, 2, 920..1100)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let landed = committed_offsets(&h.state, &h.objects, &p).await;
        assert_eq!(landed, (0..1100).collect::<Vec<_>>());
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
    }

    /// Defect: a landing given up at a revocation that finished later cleared the new
    /// buffer's `in_flight` and subtracted its bytes a second time, wrapping `buffered`.
    #[tokio::test]
    async fn a_landing_that_outlives_its_assignment_touches_nothing_of_the_next() {
        let (pipeline, h) = gated_pipeline(limits(10, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_millis(500)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        // S3 hangs: the landing of 0..9 starts and does not finish before the revoke timeout.
        h.gate.send(false).unwrap();
        tx.send(assign(&p, 1, None)).await.unwrap();
        tx.send(chunk(&h.shared, &p, 1, 0..10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h.shared.in_flight.load(Ordering::Relaxed), 1);
        revoke(&tx, &p).await;
        // The running landing still holds its records' memory, and only it.
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), footprints(0..10));
        // Assigned again: the new epoch reads from the checkpoint (none) and buffers 0..24.
        tx.send(assign(&p, 2, None)).await.unwrap();
        tx.send(chunk(&h.shared, &p, 2, 0..25)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Two landings now: the stale one and the new epoch's first, both waiting on S3.
        assert_eq!(h.shared.in_flight.load(Ordering::Relaxed), 2);
        assert_eq!(
            h.shared.buffered.load(Ordering::Relaxed),
            footprints(0..10) + footprints(0..25)
        );
        // S3 is back: both finish. The stale one books nothing; the new epoch lands its
        // files one at a time, in order.
        h.gate.send(true).unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
        let landed = committed_offsets(&h.state, &h.objects, &p).await;
        assert_eq!(landed, (0..25).collect::<Vec<_>>());
        // Only the current epoch's commits were acknowledged.
        let acked: Vec<u64> = h
            .acks
            .cursors
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(acked, (0..25).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn lag_counts_from_the_checkpoint_read_at_assignment() {
        let (pipeline, h) = gated_pipeline(limits(1000, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(3)));
        let taken = PartitionId::new(Source::Kafka, "t", "0");
        let fresh = PartitionId::new(Source::Kafka, "t", "1");
        let foreign = PartitionId::new(Source::Kafka, "t", "2");
        // Taken over at checkpoint 16252 with the log ending at 16253: fully caught up.
        tx.send(assign(&taken, 1, Some(16_252))).await.unwrap();
        tx.send(assign(&fresh, 1, None)).await.unwrap();
        tx.send(Input::HighWatermarks(vec![
            (taken.clone(), 16_253),
            (fresh.clone(), 40),
            (foreign.clone(), 99),
        ]))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lag = h.shared.lag.lock().unwrap().clone();
        assert_eq!(lag.get(&taken), Some(&0));
        assert_eq!(lag.get(&fresh), Some(&40));
        // Not assigned here: not this runner's lag.
        assert_eq!(lag.get(&foreign), None);
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
    }

    #[test]
    fn admission_starts_at_the_seek_position() {
        let k = KafkaOffset;
        assert_eq!(admit(Some(&k(10)), None, &k(10)), Admission::Continue);
        assert_eq!(admit(Some(&k(10)), None, &k(9)), Admission::Redelivery);
        assert_eq!(
            admit(Some(&k(10)), None, &k(12)),
            Admission::Gap { expected: k(10) }
        );
        assert_eq!(admit(None, None, &k(12)), Admission::Continue);
        assert_eq!(
            admit(Some(&k(10)), Some(&k(11)), &k(11)),
            Admission::Redelivery
        );
        assert_eq!(
            admit(Some(&k(10)), Some(&k(11)), &k(14)),
            Admission::Continue
        );
    }

    #[tokio::test]
    async fn records_below_the_seek_position_are_not_landed_again() {
        let (pipeline, h) = gated_pipeline(limits(1000, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(3)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&p, 1, Some(9))).await.unwrap();
        tx.send(chunk(&h.shared, &p, 1, 5..15)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let landed = committed_offsets(&h.state, &h.objects, &p).await;
        assert_eq!(landed, (10..15).collect::<Vec<_>>());
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
    }

    /// Defect: a Kafka topic recreated (or truncated) below the checkpoint moved the
    /// consumer's position with `auto.offset.reset`, and the new log's records up to the
    /// checkpoint were dropped as redeliveries: lost without a word.
    #[tokio::test]
    async fn kafka_offsets_that_go_back_stop_the_partition_instead_of_being_skipped() {
        let faults = bronze::memory::Faults::new();
        let (pipeline, state, shared, _acks) =
            memory_pipeline(&faults, limits(1000, 1 << 20, 60_000));
        let pipeline = pipeline.rewinds_are_restarts();
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        // p: checkpoint 9, seeked to 10; the recreated log's first record is offset 0.
        let p = PartitionId::new(Source::Kafka, "t", "0");
        // q: going back in the middle of an assignment (truncated while it was read).
        let q = PartitionId::new(Source::Kafka, "t", "1");
        // r: a healthy partition landing after both.
        let r = PartitionId::new(Source::Kafka, "t", "2");
        tx.send(Input::Assign(vec![
            assignment(&p, 1, Some(9)),
            assignment(&q, 1, None),
            assignment(&r, 1, None),
        ]))
        .await
        .unwrap();
        tx.send(batch(&shared, &p, 0..5)).await.unwrap();
        tx.send(batch(&shared, &q, 0..10)).await.unwrap();
        tx.send(batch(&shared, &q, 0..3)).await.unwrap();
        tx.send(batch(&shared, &q, 3..20)).await.unwrap();
        tx.send(batch(&shared, &r, 0..4)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let landed = |id: PartitionId| {
            let state = state.clone();
            async move {
                state
                    .commit_log(&id)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| (e.first.clone(), e.last.clone(), e.records))
                    .collect::<Vec<_>>()
            }
        };
        // Nothing of the new log is landed or committed for p; q lands what it had received
        // before its offsets went back, and nothing after.
        assert_eq!(landed(p.clone()).await, vec![]);
        let q_log = landed(q.clone()).await;
        assert_eq!(q_log.iter().map(|e| e.2).sum::<u64>(), 10, "{q_log:?}");
        assert_eq!(
            q_log.last().map(|e| e.1.as_str()),
            Some("00000000000000000009"),
            "{q_log:?}"
        );
        assert_eq!(landed(r.clone()).await.iter().map(|e| e.2).sum::<u64>(), 4);
        assert_eq!(shared.refused_records.load(Ordering::Relaxed), 5 + 3 + 17);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
        let restarts = shared.metrics.stream(Source::Kafka, "t").cursor_restarts;
        assert_eq!(restarts, 2, "each partition's restart is counted once");
        // A later good landing elsewhere does not make the pipeline look healthy again.
        let health = shared.unhealthy.lock().unwrap().clone().unwrap_or_default();
        assert!(health.contains("restarted"), "{health}");
        assert!(health.contains("streaming-connector reset"), "{health}");
    }

    /// A Kafka partition is read again from its checkpoint's own offset; when the record
    /// there is not the one landed (a recreated topic whose new log reaches the checkpoint),
    /// the engine refuses to skip, and the partition stops without holding its records (which
    /// would fill the buffer and pause every other partition) while the others go on.
    #[tokio::test]
    async fn a_record_at_the_checkpoint_that_is_not_the_one_landed_stops_only_its_partition() {
        let faults = bronze::memory::Faults::new();
        let (pipeline, state, shared, _acks) = memory_pipeline(&faults, limits(5, 1 << 20, 60_000));
        let pipeline = pipeline.rewinds_are_restarts();
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        let r = PartitionId::new(Source::Kafka, "t", "1");
        tx.send(Input::Assign(vec![
            assignment(&p, 1, None),
            assignment(&r, 1, None),
        ]))
        .await
        .unwrap();
        tx.send(batch(&shared, &p, 0..10)).await.unwrap();
        revoke(&tx, &p).await;
        // Assigned again at its checkpoint 9, as the Kafka source seeks: the record now at
        // offset 9 differs from the one landed there.
        tx.send(Input::Assign(vec![Assignment {
            partition: p.clone(),
            epoch: Epoch(2),
            checkpoint: Some(KafkaOffset(9)),
            start: Some(KafkaOffset(9)),
        }]))
        .await
        .unwrap();
        let mut chunk = Chunk::new(&shared);
        chunk.push(p.clone(), Epoch(2), record(9, 0, 11));
        for o in 10..15 {
            chunk.push(p.clone(), Epoch(2), record(o, 0, 10));
        }
        // Files of 5: [9, 13] lands (and is refused), 14 is still open.
        tx.send(Input::Records(chunk)).await.unwrap();
        tx.send(batch(&shared, &r, 0..4)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let records =
            |log: Vec<bronze::ports::CommitEntry>| log.iter().map(|e| e.records).sum::<u64>();
        assert_eq!(records(state.commit_log(&p).await.unwrap()), 10);
        assert_eq!(records(state.commit_log(&r).await.unwrap()), 4);
        assert_eq!(shared.refused_records.load(Ordering::Relaxed), 6);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
        let health = shared.unhealthy.lock().unwrap().clone().unwrap_or_default();
        assert!(
            health.contains("is not the one landed there")
                && health.contains("streaming-connector reset"),
            "{health}"
        );
    }

    /// Defect (audit): the Kinesis source revokes a lost lease's partition only once its old
    /// reader has stopped, and by then this runner may have taken the lease again. The late
    /// revocation closed the new assignment's buffer, and everything its reader delivered
    /// afterwards was dropped as stale: the shard stalled without an error.
    #[tokio::test]
    async fn a_late_revocation_of_an_ended_assignment_leaves_the_next_one_alone() {
        let faults = bronze::memory::Faults::new();
        let (pipeline, state, shared, _acks) =
            memory_pipeline(&faults, limits(1000, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&p, 1, None)).await.unwrap();
        tx.send(chunk(&shared, &p, 1, 0..5)).await.unwrap();
        // The lease is lost and taken again: epoch 2 reads from the checkpoint (none).
        tx.send(assign(&p, 2, None)).await.unwrap();
        tx.send(chunk(&shared, &p, 2, 0..10)).await.unwrap();
        // The revocation of epoch 1 arrives now.
        let (ack, done) = oneshot::channel();
        tx.send(Input::RevokeEpochs(vec![(p.clone(), Epoch(1))], ack))
            .await
            .unwrap();
        done.await.unwrap();
        tx.send(chunk(&shared, &p, 2, 10..20)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let log = state.commit_log(&p).await.unwrap();
        assert_eq!(log.iter().map(|e| e.records).sum::<u64>(), 20, "{log:?}");
        assert_eq!(shared.stale_records.load(Ordering::Relaxed), 0);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn kafka_restart_evidence_names_the_offsets() {
        let faults = bronze::memory::Faults::new();
        let (pipeline, _state, shared, _acks) =
            memory_pipeline(&faults, limits(1000, 1 << 20, 60_000));
        let pipeline = pipeline.rewinds_are_restarts();
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&p, 1, Some(9))).await.unwrap();
        tx.send(batch(&shared, &p, 2..3)).await.unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let health = shared.unhealthy.lock().unwrap().clone().unwrap_or_default();
        assert!(
            health.contains("checkpoint 9")
                && health.contains("seek to offset 10 is at offset 2")
                && health.contains("--source kafka --stream t --partition 0"),
            "{health}"
        );
    }

    /// Defect (item 13): a shutdown ran two full drains (the revocation's, then the final
    /// one), each up to `shutdown_timeout_ms`, past ECS's stop timeout.
    #[tokio::test]
    async fn a_shutdown_is_one_drain_bounded_by_the_stop_deadline() {
        let (pipeline, h) = gated_pipeline(limits(10, 1 << 20, 60_000));
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(30)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        let q = PartitionId::new(Source::Kafka, "t", "1");
        tx.send(assign(&p, 1, None)).await.unwrap();
        tx.send(assign(&q, 1, None)).await.unwrap();
        // S3 hangs for good.
        h.gate.send(false).unwrap();
        tx.send(chunk(&h.shared, &p, 1, 0..30)).await.unwrap();
        tx.send(chunk(&h.shared, &q, 1, 0..30)).await.unwrap();
        let started = Instant::now();
        tx.send(Input::Stop(started + Duration::from_secs(1)))
            .await
            .unwrap();
        // The source's revocation at shutdown covers one partition; the final drain the other.
        revoke(&tx, &p).await;
        drop(tx);
        assert_eq!(run.await.unwrap(), 1);
        // One drain to the stop deadline, not the revocation's 30 s and then the final 30 s.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
    }

    /// Defect: in interleaved mode (Pulsar Key_Shared) a redelivery after a consumer left
    /// came after newer records and was landed as it came: a file [500, 501, 120] with a log
    /// entry whose first is after its last.
    #[tokio::test]
    async fn interleaved_landings_are_sorted_and_acknowledge_only_what_they_commit() {
        let (pipeline, h) = gated_pipeline(limits(4, 1 << 20, 60_000));
        let pipeline = pipeline.interleaved();
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(3)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&p, 1, None)).await.unwrap();
        // 120 twice (a redelivery while held), then one more file.
        tx.send(chunk(&h.shared, &p, 1, [500, 501, 120, 120, 130, 502]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let log = h.state.commit_log(&p).await.unwrap();
        let ranges: Vec<(String, String)> = log
            .iter()
            .map(|e| {
                (
                    bronze::cursor::unpad(&e.first).to_owned(),
                    bronze::cursor::unpad(&e.last).to_owned(),
                )
            })
            .collect();
        assert_eq!(
            ranges,
            vec![("120".into(), "501".into()), ("130".into(), "502".into())]
        );
        let mut landed = committed_offsets(&h.state, &h.objects, &p).await;
        assert_eq!(landed, vec![120, 500, 501, 130, 502]);
        // Every acknowledged record is committed, and every committed one acknowledged once.
        let mut acked: Vec<u64> = h
            .acks
            .cursors
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| *o)
            .collect();
        acked.sort();
        landed.sort();
        assert_eq!(acked, landed);
        assert_eq!(h.shared.buffered.load(Ordering::Relaxed), 0);
    }

    /// A consumer that takes over the unacknowledged messages of one that left (committed,
    /// not yet acknowledged) gets them mixed with its own keys: a landing [120, 130, 502]
    /// after a committed [120, 500, 501] must land 130 and 502 (the engine's interleaved
    /// mode skips only the records the committed entry holds).
    #[tokio::test]
    async fn interleaved_redelivery_of_a_committed_first_cursor_loses_nothing() {
        let (pipeline, h) = gated_pipeline(limits(3, 1 << 20, 60_000));
        let pipeline = pipeline.interleaved();
        let (tx, rx) = mpsc::channel(8);
        let run = tokio::spawn(pipeline.run(rx, Duration::from_secs(3)));
        let p = PartitionId::new(Source::Kafka, "t", "0");
        tx.send(assign(&p, 1, None)).await.unwrap();
        tx.send(chunk(&h.shared, &p, 1, [500, 501, 120, 120, 130, 502]))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(run.await.unwrap(), 0);
        let mut landed = committed_offsets(&h.state, &h.objects, &p).await;
        landed.sort();
        landed.dedup();
        assert_eq!(landed, vec![120, 130, 500, 501, 502]);
    }
}
