//! The runner's landing pipeline, the same for every source: per-partition buffers, file
//! cuts, landing with the shared [`Lander`] under an adaptive concurrency limit, retries,
//! and draining on revocation and shutdown.
//!
//! A source (the Kafka consumer thread, the Pulsar consumers) feeds [`Input`]s into one
//! channel, in delivery order, and counts the bytes it hands over in [`Shared::buffered`]
//! (it pauses fetching when that reaches the cap). The pipeline subtracts them once the
//! records are committed or given up, and tells the source what is committed through
//! [`Acknowledge`] (Kafka: an advisory offset commit; Pulsar: the acknowledgement).
//!
//! Records only leave memory committed: a failed landing puts its records back at the head
//! of the partition's buffer and retries after a backoff; the checkpoint in the state
//! registry decides, at every attempt, what is already landed.

use crate::concurrency::{AdaptiveLimit, Observation};
use crate::config::{ConcurrencyConfig, FileConfig};
use bronze::config::{ConnectorConfig, StreamSettings};
use bronze::cursor::Cursor;
use bronze::engine::{Lander, PartitionOutcome, RunContext};
use bronze::record::{PartitionBatch, PartitionId, Record};
use bronze::telemetry::Metrics;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// What a source sends to the pipeline.
#[derive(Debug)]
pub enum Input<C> {
    /// Records in delivery order (per partition, cursor order).
    Records(Vec<(PartitionId, Record<C>)>),
    /// The source is giving these partitions up (rebalance): land and commit what is
    /// buffered for them, forget them, then answer.
    Revoke(Vec<PartitionId>, oneshot::Sender<()>),
    /// The newest cursor each partition has (Kafka: the high watermark), for lag.
    HighWatermarks(Vec<(PartitionId, u64)>),
}

/// The source's side of a commit.
pub trait Acknowledge<C>: Send + Sync + 'static {
    /// Everything up to and including `last` in `partition` is committed (or was already).
    fn committed(&self, partition: &PartitionId, last: &C);
}

/// Lag of a partition in records, from its last committed cursor and the source's newest.
pub type LagFn<C> = fn(last_committed: Option<&C>, high_watermark: u64) -> u64;

/// State the pipeline shares with the source and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Shared {
    /// Payload bytes received and not yet committed (the source adds, the pipeline subtracts).
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
    /// Counters of landed, skipped and dead-lettered records, per stream.
    pub metrics: Metrics,
    /// Per stream, the largest age (ms) of the newest record of a landing started since the
    /// last metrics publication: the `OffsetLagMilliseconds` the template's autoscaling tracks.
    pub window_lag_ms: Mutex<BTreeMap<(bronze::record::Source, String), i64>>,
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
                .map(|h| block(h.key.len()) + h.value.as_ref().map_or(0, |v| block(v.len())))
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
                hi.max(ts) - lo.min(ts) > limits.max_span_ms
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

/// Where the records of one partition go: sealed files wait to land, in order, and the open
/// one fills up.
#[derive(Debug)]
struct PartitionBuffer<C> {
    settings: StreamSettings,
    sealed: VecDeque<Vec<Record<C>>>,
    open: Vec<Record<C>>,
    open_file: OpenFile,
    open_since: Option<Instant>,
    /// Bytes of everything buffered here (sealed, open and in flight).
    bytes: u64,
    in_flight: bool,
    retry_at: Option<Instant>,
    failures: u32,
    last_committed: Option<C>,
    last_received: Option<C>,
}

impl<C: Cursor> PartitionBuffer<C> {
    fn new(settings: StreamSettings) -> Self {
        Self {
            settings,
            sealed: VecDeque::new(),
            open: Vec::new(),
            open_file: OpenFile::default(),
            open_since: None,
            bytes: 0,
            in_flight: false,
            retry_at: None,
            failures: 0,
            last_committed: None,
            last_received: None,
        }
    }

    fn push(&mut self, record: Record<C>, limits: &FileConfig) {
        let footprint = record_footprint(&record);
        if self.open_file.span_exceeded_by(record.timestamp_ms, limits) {
            self.seal();
        }
        if self.open.is_empty() {
            self.open_since = Some(Instant::now());
        }
        self.open_file
            .add(record.timestamp_ms, record_bytes(&record));
        self.open.push(record);
        self.bytes += footprint;
        if self.open_file.is_full(limits) {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.sealed.push_back(std::mem::take(&mut self.open));
        }
        self.open_file = OpenFile::default();
        self.open_since = None;
    }

    fn ready(&self, now: Instant) -> bool {
        !self.in_flight && !self.sealed.is_empty() && self.retry_at.is_none_or(|t| t <= now)
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
    batch: PartitionBatch<C>,
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
    limiter: AdaptiveLimit,
    buffers: HashMap<PartitionId, PartitionBuffer<C>>,
    high_watermarks: HashMap<PartitionId, u64>,
    tasks: JoinSet<Landed<C>>,
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
            limiter,
            buffers: HashMap::new(),
            high_watermarks: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Lands every stream of this source in interleaved mode (records of one partition are
    /// shared among several consumers, e.g. Pulsar Key_Shared).
    pub fn interleaved(mut self) -> Self {
        self.interleaved = true;
        self
    }

    /// Runs until the input channel closes (the source stopped), then lands and commits
    /// everything buffered within `drain_timeout`. Returns the number of partitions that
    /// could not be drained (their records are not committed and will be read again).
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
                    Some(Input::Records(records)) => self.push(records),
                    Some(Input::Revoke(partitions, ack)) => {
                        self.revoke(&partitions, drain_timeout).await;
                        let _ = ack.send(());
                    }
                    Some(Input::HighWatermarks(marks)) => {
                        self.high_watermarks.extend(marks);
                        self.update_lag();
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

    fn push(&mut self, records: Vec<(PartitionId, Record<C>)>) {
        for (id, record) in records {
            if !self.buffers.contains_key(&id) {
                let settings = self.settings(&id);
                self.buffers
                    .insert(id.clone(), PartitionBuffer::new(settings));
            }
            let buffer = self.buffers.get_mut(&id).expect("just inserted");
            // In ordered mode a cursor at or below one already received is a redelivery of
            // a record still held (or committed): keeping it would land it twice.
            if buffer.settings.parallelization_factor <= 1
                && buffer
                    .last_received
                    .as_ref()
                    .is_some_and(|l| record.cursor <= *l)
            {
                self.shared
                    .buffered
                    .fetch_sub(record_footprint(&record), Ordering::Relaxed);
                continue;
            }
            buffer.last_received = Some(record.cursor.clone());
            buffer.push(record, &self.files);
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

    fn update_lag(&mut self) {
        let mut total = 0u64;
        let mut lag = BTreeMap::new();
        for (id, hw) in &self.high_watermarks {
            let last = self.buffers.get(id).and_then(|b| b.last_committed.as_ref());
            let l = (self.lag_fn)(last, *hw);
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
        ready.sort_by_key(|id| self.buffers[id].bytes);
        ready.reverse();
        for id in ready {
            if self.tasks.len() >= limit {
                break;
            }
            let buffer = self.buffers.get_mut(&id).expect("listed");
            let records = buffer.sealed.pop_front().expect("ready has a sealed file");
            buffer.in_flight = true;
            if let Some(newest) = records.iter().filter_map(|r| r.timestamp_ms).max() {
                let age = (chrono_now_ms() - newest).max(0);
                let mut lag = self.shared.window_lag_ms.lock().expect("lag lock");
                let slot = lag.entry((id.source, id.stream.clone())).or_insert(age);
                *slot = (*slot).max(age);
            }
            let batch = PartitionBatch {
                id: id.clone(),
                records,
            };
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
                    batch,
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

    /// Books a finished landing: commits free their bytes and are acknowledged; failures
    /// put the uncommitted records back at the head of the buffer.
    fn finished(&mut self, landed: Landed<C>) {
        let Landed {
            batch,
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
        let rest = records.split_off(committed_upto);
        let freed: u64 = records.iter().map(record_footprint).sum();
        let Some(buffer) = self.buffers.get_mut(&id) else {
            // Given up (revocation timed out) while landing: its bytes were released then.
            return;
        };
        self.shared.buffered.fetch_sub(freed, Ordering::Relaxed);
        buffer.in_flight = false;
        buffer.bytes -= freed;
        if let Some(last) = records.last() {
            buffer.last_committed = Some(last.cursor.clone());
            self.acker.committed(&id, &last.cursor);
        }
        match error {
            None => {
                buffer.failures = 0;
                buffer.retry_at = None;
                if self.shared.unhealthy.lock().expect("health lock").is_some()
                    && self.buffers.values().all(|b| b.failures == 0)
                {
                    *self.shared.unhealthy.lock().expect("health lock") = None;
                }
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
    /// that cannot be committed before `timeout` are given up uncommitted (the next owner
    /// reads them again from the checkpoint). Returns how many partitions were given up.
    async fn revoke(&mut self, partitions: &[PartitionId], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
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
                if buffer.bytes > 0 {
                    abandoned += 1;
                    tracing::warn!(
                        partition = %id,
                        bytes = buffer.bytes,
                        "partition given up with uncommitted records; they will be read again"
                    );
                    self.shared
                        .buffered
                        .fetch_sub(buffer.bytes, Ordering::Relaxed);
                }
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
        let mut b = PartitionBuffer::new(
            ConnectorConfig::default()
                .stream(Source::Kafka, "t")
                .cloned()
                .unwrap(),
        );
        for r in records {
            b.push(r, l);
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

    #[derive(Debug, Default)]
    struct Acks(Mutex<Vec<(PartitionId, u64)>>);

    impl Acknowledge<KafkaOffset> for Acks {
        fn committed(&self, partition: &PartitionId, last: &KafkaOffset) {
            self.0.lock().unwrap().push((partition.clone(), last.0));
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

    fn batch(
        shared: &Shared,
        id: &PartitionId,
        offsets: std::ops::Range<u64>,
    ) -> Input<KafkaOffset> {
        Input::Records(
            offsets
                .map(|o| {
                    let r = record(o, 0, 10);
                    shared
                        .buffered
                        .fetch_add(record_footprint(&r), Ordering::Relaxed);
                    (id.clone(), r)
                })
                .collect(),
        )
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
        assert!(acks.0.lock().unwrap().contains(&(p0.clone(), 29)));
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
        for chunk in 0..5u64 {
            let mut records = Vec::new();
            for id in &ids {
                for i in 0..7 {
                    let r = record(chunk * 7 + i, 0, 10);
                    shared
                        .buffered
                        .fetch_add(record_footprint(&r), Ordering::Relaxed);
                    records.push((id.clone(), r));
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
        let acks = acks.0.lock().unwrap();
        for id in &ids {
            assert_eq!(
                acks.iter().filter(|(p, _)| p == id).map(|(_, o)| *o).max(),
                Some(34)
            );
        }
    }
}
