//! Kinesis Data Streams through GetRecords polling, with shard leases in the state table
//! ([`crate::leases`]) so that several runners share the shards.
//!
//! - **Records** are the same as the Lambda function's ([`to_records`] mirrors
//!   `bronze::sources::kinesis::to_batches_reporting`): partition `kinesis/<stream>/<shard>`,
//!   the sequence number (plus the sub-sequence for a KPL user record) as cursor, the
//!   partition key as key, the explicit hash key of a user record as a header, the arrival
//!   time as timestamp. A stream moves between the event source mapping and the runner with
//!   the same checkpoints.
//! - **Coordinator** (one task): every heartbeat it lists the leases, renews its own, takes
//!   free or expired ones up to an even share of the readable shards and steals at most
//!   `max_steals_per_heartbeat` from the runner holding the most. Every `discovery_interval_ms`
//!   it runs ListShards and creates the leases of new shards (no restart needed after a
//!   reshard). A lease it fails to renew (another runner took it) stops its reader at once;
//!   what it buffered is drained by a revocation, fenced by the engine's conditional commit.
//! - **Resharding**: a shard is readable only when its parents are finished
//!   ([`crate::leases::readable`]). A reader that reaches the end of a closed shard (no next
//!   iterator, or a position at the ending sequence number ListShards reports) reports its
//!   last record; once the checkpoint reaches it, the lease is marked finished and the
//!   children become readable, so per-key order holds across the reshard. A child without a
//!   checkpoint starts at TRIM_HORIZON whatever `start_from` says.
//! - **Readers** (one task per leased shard): GetRecords at most 5 times a second per shard,
//!   `poll_interval_ms` after an empty answer, exponential backoff on throttling; an expired
//!   iterator is renewed after the last record received (AFTER_SEQUENCE_NUMBER), or from the
//!   checkpoint when nothing was received: AFTER_SEQUENCE_NUMBER of a plain record,
//!   AT_SEQUENCE_NUMBER of an aggregate a user record of which is the checkpoint (the user
//!   records at or below it are dropped before landing). A shard without a checkpoint starts
//!   at `start_from`; `latest` is resolved once per shard, to the time it was first leased
//!   (recorded in the state table, read AT_TIMESTAMP), so a renewed iterator or a later owner
//!   skips nothing that arrived meanwhile. `MillisBehindLatest` is the partition's lag: the
//!   `bronze_consumer_lag_milliseconds` gauge, and the concurrency ceiling's demand signal
//!   (one permit per `concurrency.lag_ms_per_permit`).
//! - **Shutdown**: readers stop, the pipeline lands and commits what it holds, leases are
//!   released (or finished), so another runner continues at once.

use super::leases::{Lease, LeaseError, LeaseStore, plan, readable};
use super::{
    Acknowledge, Assignment, Chunk, Context, Epoch, Input, PipelineSetup, Running, Shared,
};
use crate::config::{KinesisConfig, KinesisStart};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use bronze::cursor::{Cursor, KinesisCursor, SequenceNumber};
use bronze::ports::StateStore;
use bronze::record::{PartitionId, Record, Source};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The partition a shard lands under (the Lambda function's too).
pub fn partition_id(stream: &str, shard: &str) -> PartitionId {
    PartitionId::new(Source::Kinesis, stream, shard)
}

/// Lag of a Kinesis partition: the source reports `MillisBehindLatest` itself.
fn millis_behind(_: Option<&KinesisCursor>, millis_behind_latest: u64) -> u64 {
    millis_behind_latest
}

/// One Kinesis record as landed records: a plain record, or the user records of a KPL
/// aggregate (each with its sub-sequence index, partition key and explicit hash key). The
/// second value says why a record with the KPL magic bytes could not be deaggregated (it
/// then lands whole). Same output as the Lambda path for the same record.
pub fn to_records(
    record: aws_sdk_kinesis::types::Record,
) -> Result<(Vec<Record<KinesisCursor>>, Option<String>), bronze::cursor::CursorError> {
    let aws_sdk_kinesis::types::Record {
        sequence_number,
        approximate_arrival_timestamp,
        data,
        partition_key,
        ..
    } = record;
    let sequence = SequenceNumber::parse(&sequence_number)?;
    let timestamp_ms = approximate_arrival_timestamp.and_then(arrival_millis);
    Ok(bronze::sources::kinesis::records_of(
        sequence,
        partition_key,
        data.into_inner(),
        timestamp_ms,
    ))
}

/// A record's `ApproximateArrivalTimestamp` in ms since the epoch, exactly as Kinesis set it.
/// The SDK reads the JSON number (`1764201600.123`) as an f64 and truncates its fraction to
/// whole nanoseconds (122,999,906 ns), so `DateTime::to_millis` would land about half of all
/// records 1 ms early, unlike the Lambda path, which reads the number's text. Kinesis sets
/// whole milliseconds and the float's error is far below half of one, so rounding to the
/// nearest millisecond gives the value back.
pub fn arrival_millis(t: aws_smithy_types::DateTime) -> Option<i64> {
    let rounded = (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000;
    t.secs().checked_mul(1000)?.checked_add(rounded)
}

/// Every shard of `stream` (ListShards, all pages).
pub async fn list_shards(
    client: &Client,
    stream: &str,
) -> anyhow::Result<Vec<aws_sdk_kinesis::types::Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = client.list_shards();
        let request = match &token {
            Some(t) => request.next_token(t),
            None => request.stream_name(stream),
        };
        let out = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "kinesis:ListShards on stream {stream}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            )
        })?;
        shards.extend(out.shards.unwrap_or_default());
        match out.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(shards)
}

/// The parents of a shard (one after a split, two after a merge).
pub fn parents(shard: &aws_sdk_kinesis::types::Shard) -> Vec<String> {
    shard
        .parent_shard_id
        .iter()
        .chain(shard.adjacent_parent_shard_id.iter())
        .cloned()
        .collect()
}

/// `MillisBehindLatest` of a shard read from after `checkpoint` (from its beginning without
/// one): one GetShardIterator and one GetRecords of at most one record, for `status`.
pub async fn millis_behind_latest(
    client: &Client,
    stream: &str,
    shard: &str,
    checkpoint: Option<&KinesisCursor>,
) -> anyhow::Result<Option<i64>> {
    let (kind, sequence, _) = iterator_request(
        &Position::Checkpoint(checkpoint.cloned()),
        KinesisStart::TrimHorizon,
        None,
        false,
    );
    let iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "kinesis:GetShardIterator on stream {stream} shard {shard}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            )
        })?
        .shard_iterator;
    let Some(iterator) = iterator else {
        return Ok(Some(0));
    };
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "kinesis:GetRecords on stream {stream} shard {shard}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            )
        })?;
    Ok(out.millis_behind_latest)
}

/// Where a reader asks for its next iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Nothing received under this lease: the checkpoint (last landed), if any.
    Checkpoint(Option<KinesisCursor>),
    /// After this record, the last one received (its aggregate is received whole).
    Received(KinesisCursor),
}

/// The GetShardIterator request for a position (a pure decision): type, sequence number,
/// timestamp (ms). `has_parents`: a child shard without a checkpoint starts at its
/// beginning whatever `start_from` says (its parents are landed up to their end).
pub fn iterator_request(
    position: &Position,
    start_from: KinesisStart,
    start_timestamp_ms: Option<i64>,
    has_parents: bool,
) -> (ShardIteratorType, Option<String>, Option<i64>) {
    match position {
        Position::Received(c) => (
            ShardIteratorType::AfterSequenceNumber,
            Some(c.sequence.to_string()),
            None,
        ),
        Position::Checkpoint(Some(c)) if c.sub.is_some() => (
            ShardIteratorType::AtSequenceNumber,
            Some(c.sequence.to_string()),
            None,
        ),
        Position::Checkpoint(Some(c)) => (
            ShardIteratorType::AfterSequenceNumber,
            Some(c.sequence.to_string()),
            None,
        ),
        Position::Checkpoint(None) if has_parents => (ShardIteratorType::TrimHorizon, None, None),
        Position::Checkpoint(None) => match start_from {
            KinesisStart::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
            // The start position recorded when the shard was first leased (see
            // `Coordinator::start_reader`): renewals and later owners start there, not at a
            // newer end.
            KinesisStart::Latest => match start_timestamp_ms {
                Some(ms) => (ShardIteratorType::AtTimestamp, None, Some(ms)),
                None => (ShardIteratorType::Latest, None, None),
            },
            KinesisStart::AtTimestamp => (ShardIteratorType::AtTimestamp, None, start_timestamp_ms),
        },
    }
}

/// Has a reader at `position` read a closed shard to its end? `ending`: the shard's ending
/// sequence number from ListShards (moto reports the last record's; AWS reports the range's
/// end and ends the iterator, which the reader sees first).
pub fn at_end(position: &Position, ending: &SequenceNumber) -> bool {
    let at = match position {
        Position::Received(c) | Position::Checkpoint(Some(c)) => &c.sequence,
        Position::Checkpoint(None) => return ending.as_str() == "0",
    };
    at >= ending
}

/// How a reader ended.
#[derive(Debug)]
enum ReaderEnd {
    /// The shard is closed and read to its end; the last record received, if any.
    Drained(Option<KinesisCursor>),
    /// Stopped (lease lost, shutdown).
    Cancelled,
    /// The runner cannot go on (access denied, stream gone).
    Fatal(String),
    /// Kinesis does not know the shard (ResourceNotFoundException): trimmed from the stream,
    /// or the stream is gone. The coordinator asks ListShards which.
    Gone(String),
}

/// What the readers and the coordinator share.
#[derive(Debug)]
struct Ctx {
    client: Client,
    config: KinesisConfig,
    tx: mpsc::Sender<Input<KinesisCursor>>,
    shared: Arc<Shared>,
    max_buffer: u64,
    /// Ending sequence numbers of closed shards, from ListShards.
    closed: Mutex<HashMap<PartitionId, SequenceNumber>>,
    run_id: String,
}

/// Sleeps up to `d`, returning early (true) when `cancel` is set.
async fn pause(d: Duration, cancel: &AtomicBool) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

/// What to do after a failed Kinesis call.
enum Failure {
    /// Wait and retry (throttling, a network error, a 5xx).
    Retry(String),
    /// The iterator expired: get a new one.
    Expired,
    /// Stop the runner.
    Fatal(String),
    /// ResourceNotFoundException: the shard or the stream does not exist.
    Gone(String),
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
    action: &str,
    stream: &str,
    shard: &str,
) -> Failure {
    let code = e.code().unwrap_or("").to_owned();
    let text = format!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    );
    match code.as_str() {
        "ExpiredIteratorException" => Failure::Expired,
        // AT_TIMESTAMP of a start recorded by a runner whose clock runs ahead of Kinesis's:
        // valid as soon as Kinesis's clock passes it.
        "InvalidArgumentException" if text.contains("currentTimestampInMillis") => {
            Failure::Retry(text)
        }
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSNotFoundException"
        | "InvalidArgumentException"
        | "UnrecognizedClientException" => Failure::Fatal(format!(
            "kinesis:{action} on stream {stream} shard {shard} refused ({code}): {text}"
        )),
        "ResourceNotFoundException" => Failure::Gone(format!(
            "kinesis:{action} on stream {stream} shard {shard} refused ({code}): {text}"
        )),
        _ => Failure::Retry(text),
    }
}

/// Reads one leased shard until it is drained, cancelled or refused.
async fn read_shard(
    ctx: Arc<Ctx>,
    lease: Lease,
    epoch: Epoch,
    checkpoint: Option<KinesisCursor>,
    start_timestamp_ms: Option<i64>,
    cancel: Arc<AtomicBool>,
) -> ReaderEnd {
    let id = partition_id(&lease.stream, &lease.shard);
    let (stream, shard) = (lease.stream.as_str(), lease.shard.as_str());
    let mut position = Position::Checkpoint(checkpoint.clone());
    let mut iterator: Option<String> = None;
    let mut throttled: u32 = 0;
    let min_gap = Duration::from_millis(200);
    let idle = Duration::from_millis(ctx.config.poll_interval_ms);
    let mut last_call: Option<tokio::time::Instant> = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return ReaderEnd::Cancelled;
        }
        // Backpressure: read nothing from the buffer cap until it is below half of it.
        if ctx.shared.hold_fetching(ctx.max_buffer) {
            if pause(Duration::from_millis(100), &cancel).await {
                return ReaderEnd::Cancelled;
            }
            continue;
        }
        // At most 5 calls per second on this shard.
        if let Some(at) = last_call {
            let since = at.elapsed();
            if since < min_gap && pause(min_gap - since, &cancel).await {
                return ReaderEnd::Cancelled;
            }
        }
        last_call = Some(tokio::time::Instant::now());
        let current = match iterator.take() {
            Some(it) => it,
            None => {
                let (kind, sequence, at) = iterator_request(
                    &position,
                    ctx.config.start_from,
                    start_timestamp_ms,
                    !lease.parents.is_empty(),
                );
                tracing::info!(stream, shard, kind = %kind.as_str(), sequence = ?sequence, "shard iterator");
                let mut request = ctx
                    .client
                    .get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(shard)
                    .shard_iterator_type(kind)
                    .set_starting_sequence_number(sequence);
                if let Some(ms) = at {
                    request = request.timestamp(aws_smithy_types::DateTime::from_millis(ms));
                }
                match request.send().await {
                    Ok(out) => match out.shard_iterator {
                        Some(it) => it,
                        None => return ReaderEnd::Drained(received(&position)),
                    },
                    Err(e) => match classify(e, "GetShardIterator", stream, shard) {
                        Failure::Fatal(m) => return ReaderEnd::Fatal(m),
                        Failure::Gone(m) => return ReaderEnd::Gone(m),
                        Failure::Retry(m) => {
                            throttled += 1;
                            let wait = crate::pipeline::backoff(throttled, false);
                            tracing::warn!(stream, shard, error = %m, wait_ms = wait.as_millis() as u64, "GetShardIterator failed; retrying");
                            if pause(wait, &cancel).await {
                                return ReaderEnd::Cancelled;
                            }
                            continue;
                        }
                        Failure::Expired => continue,
                    },
                }
            }
        };
        let out = match ctx
            .client
            .get_records()
            .shard_iterator(&current)
            .limit(ctx.config.max_records)
            .send()
            .await
        {
            Ok(out) => {
                throttled = 0;
                out
            }
            Err(e) => match classify(e, "GetRecords", stream, shard) {
                Failure::Expired => {
                    tracing::info!(
                        stream,
                        shard,
                        "shard iterator expired; renewing it from the last record received"
                    );
                    continue;
                }
                Failure::Fatal(m) => return ReaderEnd::Fatal(m),
                Failure::Gone(m) => return ReaderEnd::Gone(m),
                Failure::Retry(m) => {
                    throttled += 1;
                    let wait = crate::pipeline::backoff(throttled, false);
                    tracing::warn!(stream, shard, error = %m, wait_ms = wait.as_millis() as u64, "GetRecords failed or throttled; backing off");
                    iterator = Some(current);
                    if pause(wait, &cancel).await {
                        return ReaderEnd::Cancelled;
                    }
                    continue;
                }
            },
        };
        let next = out.next_shard_iterator;
        let lag = out.millis_behind_latest.unwrap_or(0).max(0) as u64;
        let got = out.records.len();
        let mut chunk = Chunk::new(&ctx.shared);
        for record in out.records {
            let sequence = record.sequence_number.clone();
            let (records, undecodable) = match to_records(record) {
                Ok(r) => r,
                Err(e) => {
                    return ReaderEnd::Fatal(format!(
                        "stream {stream} shard {shard}: sequence number {sequence:?}: {e}"
                    ));
                }
            };
            if let Some(reason) = undecodable {
                bronze::telemetry::AggregateUndecodable {
                    partition: &id,
                    cursor: &sequence,
                    reason: &reason,
                    run_id: &ctx.run_id,
                }
                .emit(&ctx.shared.metrics);
            }
            for r in records {
                position = Position::Received(r.cursor.clone());
                // After AT_SEQUENCE_NUMBER of a partly landed aggregate: drop what is landed.
                if checkpoint.as_ref().is_some_and(|c| r.cursor <= *c) {
                    continue;
                }
                chunk.push(id.clone(), epoch, r);
            }
        }
        if !chunk.is_empty() && ctx.tx.send(Input::Records(chunk)).await.is_err() {
            return ReaderEnd::Cancelled;
        }
        let _ = ctx
            .tx
            .send(Input::HighWatermarks(vec![(id.clone(), lag)]))
            .await;
        match next {
            None => return ReaderEnd::Drained(received(&position)),
            Some(next) => iterator = Some(next),
        }
        if got == 0 {
            let ending = ctx.closed.lock().expect("closed lock").get(&id).cloned();
            if ending.is_some_and(|e| at_end(&position, &e)) {
                return ReaderEnd::Drained(received(&position));
            }
            if pause(idle, &cancel).await {
                return ReaderEnd::Cancelled;
            }
        }
    }
}

fn received(position: &Position) -> Option<KinesisCursor> {
    match position {
        Position::Received(c) => Some(c.clone()),
        Position::Checkpoint(_) => None,
    }
}

/// The pipeline's acknowledgements are not needed: the checkpoint is the truth.
#[derive(Debug, Default)]
struct NoAcks;

impl Acknowledge<KinesisCursor> for NoAcks {
    fn committed(&self, _: &PartitionId, _: &[Record<KinesisCursor>]) {}
}

/// A lease this runner holds, with its reader.
#[derive(Debug)]
struct Held {
    lease: Lease,
    /// The epoch of the assignment the reader runs under.
    epoch: Epoch,
    cancel: Arc<AtomicBool>,
    reader: Option<JoinHandle<ReaderEnd>>,
    /// Set when the reader drained the shard: the last record it received.
    drained: Option<Option<KinesisCursor>>,
}

/// Starts the Kinesis pipeline and the lease coordinator (which runs a reader per leased
/// shard).
pub async fn start(config: KinesisConfig, context: &Context) -> anyhow::Result<Running> {
    tracing::info!(streams = ?config.streams, run_id = %context.run_id, "starting the Kinesis readers");
    let shared = Arc::new(Shared::default());
    // Kinesis lag is MillisBehindLatest: the limiter counts `lag_ms_per_permit` per permit.
    let concurrency = context.runner.concurrency.for_lag_in_millis();
    let setup = PipelineSetup {
        concurrency: Some(&concurrency),
        channel: 64,
        ..Default::default()
    };
    let (tx, pipeline) = context.pipeline(&shared, Arc::new(NoAcks), millis_behind, setup);
    let run_id = context.run_id.as_str();
    let max_buffer = context.runner.buffer.max_bytes;
    let ctx = Arc::new(Ctx {
        client: Client::new(&context.sdk),
        config,
        tx,
        shared: shared.clone(),
        max_buffer,
        closed: Mutex::new(HashMap::new()),
        run_id: run_id.to_owned(),
    });
    let coordinator = Coordinator {
        ctx,
        leases: LeaseStore::new(&context.sdk, &context.state_table),
        state: context.state.clone(),
        me: run_id.to_owned(),
        held: BTreeMap::new(),
        listed: HashMap::new(),
        epochs: AtomicU64::new(0),
        drain: context.drain_timeout(),
    };
    let consumer = tokio::spawn(coordinator.run(context.stop.clone()));
    Ok(Running {
        name: "kinesis",
        shared,
        pipeline,
        consumer,
    })
}

/// The lease loop.
#[derive(Debug)]
struct Coordinator {
    ctx: Arc<Ctx>,
    leases: LeaseStore,
    state: Arc<dyn StateStore>,
    me: String,
    held: BTreeMap<PartitionId, Held>,
    /// Shards ListShards returned last, per stream.
    listed: HashMap<String, BTreeSet<String>>,
    epochs: AtomicU64,
    drain: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Coordinator {
    async fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let heartbeat = Duration::from_millis(self.ctx.config.heartbeat_ms);
        let discovery = Duration::from_millis(self.ctx.config.discovery_interval_ms);
        let mut next_discovery = tokio::time::Instant::now();
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            if tokio::time::Instant::now() >= next_discovery {
                match self.discover().await {
                    Ok(()) => next_discovery = tokio::time::Instant::now() + discovery,
                    Err(e) => {
                        if self.listed.is_empty() {
                            break Err(e);
                        }
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "ListShards failed; retrying at the next heartbeat"
                        );
                    }
                }
            }
            if let Err(e) = self.heartbeat().await {
                break Err(e);
            }
            if pause(heartbeat, &stop).await {
                break Ok(());
            }
        };
        self.shutdown().await;
        result
    }

    /// ListShards for every stream; creates the leases of shards seen for the first time.
    async fn discover(&mut self) -> anyhow::Result<()> {
        for stream in self.ctx.config.streams.clone() {
            let shards = list_shards(&self.ctx.client, &stream).await?;
            let known = self.listed.get(&stream).cloned().unwrap_or_default();
            let mut listed = BTreeSet::new();
            for shard in &shards {
                listed.insert(shard.shard_id.clone());
                if let Some(end) = shard
                    .sequence_number_range
                    .as_ref()
                    .and_then(|r| r.ending_sequence_number.as_deref())
                    .and_then(|e| SequenceNumber::parse(e).ok())
                {
                    self.ctx
                        .closed
                        .lock()
                        .expect("closed lock")
                        .insert(partition_id(&stream, &shard.shard_id), end);
                }
                if !known.contains(&shard.shard_id) {
                    let parents = parents(shard);
                    self.leases
                        .create(&stream, &shard.shard_id, &parents)
                        .await?;
                    tracing::info!(stream = %stream, shard = %shard.shard_id, parents = ?parents, "shard discovered");
                }
            }
            self.listed.insert(stream, listed);
        }
        Ok(())
    }

    /// One heartbeat: reap readers, finish drained shards, renew, balance.
    async fn heartbeat(&mut self) -> anyhow::Result<()> {
        // Readers that ended.
        let mut gone = Vec::new();
        for (id, held) in self.held.iter_mut() {
            if held.reader.as_ref().is_some_and(|r| r.is_finished()) {
                let reader = held.reader.take().expect("checked");
                match reader.await {
                    Ok(ReaderEnd::Drained(last)) => {
                        tracing::info!(partition = %id, last = ?last.as_ref().map(|c| c.to_string()), "shard read to its end");
                        held.drained = Some(last);
                    }
                    Ok(ReaderEnd::Cancelled) => {}
                    Ok(ReaderEnd::Fatal(m)) => anyhow::bail!(m),
                    Ok(ReaderEnd::Gone(m)) => gone.push((id.clone(), m)),
                    Err(e) => anyhow::bail!("{id}: reader task failed: {e}"),
                }
            }
        }
        for (id, refusal) in gone {
            self.trimmed(&id, refusal).await?;
        }
        // Drained shards whose last record is committed are finished.
        let drained: Vec<PartitionId> = self
            .held
            .iter()
            .filter(|(_, h)| h.drained.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in drained {
            let committed = match self.committed(&id).await {
                Ok(committed) => committed,
                // DynamoDB failing for longer than the SDK's retries must not stop the runner.
                Err(e) => {
                    tracing::warn!(partition = %id, error = %e, "could not read the checkpoint of a drained shard; retrying at the next heartbeat");
                    false
                }
            };
            if committed {
                let held = self.held.remove(&id).expect("listed");
                self.revoke(vec![id.clone()]).await;
                match self.leases.finish(&held.lease).await {
                    Ok(_) => {
                        tracing::info!(partition = %id, "shard finished: its children may be read")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %id, error = %e, "could not mark the shard finished; its next owner will")
                    }
                }
            }
        }
        // Renew.
        let expires = now_ms() + self.ctx.config.lease_duration_ms as i64;
        let ids: Vec<PartitionId> = self.held.keys().cloned().collect();
        for id in ids {
            let lease = self.held[&id].lease.clone();
            match self.leases.renew(&lease, expires).await {
                Ok(renewed) => {
                    if let Some(h) = self.held.get_mut(&id) {
                        h.lease = renewed;
                    }
                }
                Err(LeaseError::Lost { .. }) => {
                    tracing::warn!(partition = %id, "lease lost to another runner: stop reading the shard");
                    self.lose(&id).await;
                }
                Err(e) => {
                    tracing::warn!(partition = %id, error = %e, "lease renewal failed; retrying at the next heartbeat");
                }
            }
        }
        // Balance.
        let now = now_ms();
        let mut all: BTreeMap<(String, String), Lease> = BTreeMap::new();
        for stream in &self.ctx.config.streams {
            match self.leases.list(stream).await {
                Ok(leases) => {
                    for lease in leases {
                        all.insert((stream.clone(), lease.shard.clone()), lease);
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "could not list the leases; balancing at the next heartbeat");
                    return Ok(());
                }
            }
        }
        let mut candidates = Vec::new();
        for stream in &self.ctx.config.streams {
            let by_shard: BTreeMap<String, Lease> = all
                .iter()
                .filter(|((s, _), _)| s == stream)
                .map(|((_, shard), l)| (shard.clone(), l.clone()))
                .collect();
            let listed = self.listed.get(stream).cloned().unwrap_or_default();
            for lease in by_shard.values() {
                if readable(lease, &by_shard, &listed) {
                    candidates.push(lease.clone());
                }
            }
        }
        let refs: Vec<&Lease> = candidates.iter().collect();
        let decision = plan(
            &self.me,
            &refs,
            now,
            self.ctx.config.max_steals_per_heartbeat,
        );
        for (lease, stolen) in decision
            .take
            .into_iter()
            .map(|l| (l, false))
            .chain(decision.steal.into_iter().map(|l| (l, true)))
        {
            let id = partition_id(&lease.stream, &lease.shard);
            if self.held.contains_key(&id) {
                continue;
            }
            match self.leases.take(&lease, &self.me, expires).await {
                Ok(taken) => {
                    tracing::info!(partition = %id, stolen, from = ?lease.owner, counter = taken.counter, "lease taken");
                    self.start_reader(id, taken).await?;
                }
                Err(LeaseError::Lost { .. }) => {
                    tracing::debug!(partition = %id, "another runner took the lease first");
                }
                Err(e) => tracing::warn!(partition = %id, error = %e, "taking the lease failed"),
            }
        }
        Ok(())
    }

    /// A reader was told that its shard does not exist. When ListShards, asked again now,
    /// lists the stream but not the shard, the shard was trimmed after the retention period
    /// before it was read to its end (while another consumer read the stream, or while no
    /// runner ran): nobody can read it any more. What this runner holds of it lands, the
    /// event is logged and counted (`ShardsTrimmed`) with the checkpoint, and its lease is
    /// finished so that its children are read. Stopping instead would only pass the lease
    /// from runner to runner, each stopping in turn, and leave the children unread. When the
    /// stream is gone, ListShards fails, or the shard is still listed, the runner stops as
    /// for any other refusal.
    async fn trimmed(&mut self, id: &PartitionId, refusal: String) -> anyhow::Result<()> {
        let Some(held) = self.held.remove(id) else {
            return Ok(());
        };
        // What was received before the refusal lands first.
        self.revoke(vec![id.clone()]).await;
        let shards = match list_shards(&self.ctx.client, &id.stream).await {
            Ok(shards) => shards,
            // The stream is gone: stop, as for any other refusal.
            Err(e) if format!("{e:#}").contains("ResourceNotFoundException") => {
                return Err(e.context(refusal));
            }
            // Not known yet (throttled, a network error): the lease is released and the
            // shard checked again by whoever takes it next.
            Err(e) => {
                tracing::warn!(partition = %id, error = format!("{e:#}"), refusal, "a shard was refused as unknown and ListShards failed; releasing its lease to check again later");
                if let Err(e) = self.leases.release(&held.lease).await {
                    tracing::warn!(partition = %id, error = %e, "lease not released; it expires");
                }
                return Ok(());
            }
        };
        if shards.iter().any(|s| s.shard_id == id.partition) {
            anyhow::bail!(refusal);
        }
        let checkpoint = match self.state.checkpoint(id).await {
            Ok(c) => c.map(|c| c.cursor),
            Err(e) => Some(format!("unknown ({e})")),
        };
        // A child with a checkpoint means the shard was read to its end by the stream's
        // other consumer (a Lambda event source mapping reads a parent before its children).
        let mut read_by_another_consumer = false;
        for child in shards.iter().filter(|s| parents(s).contains(&id.partition)) {
            let child_id = partition_id(&id.stream, &child.shard_id);
            if matches!(self.state.checkpoint(&child_id).await, Ok(Some(_))) {
                read_by_another_consumer = true;
                break;
            }
        }
        bronze::telemetry::ShardTrimmed {
            partition: id,
            checkpoint: checkpoint.as_deref(),
            read_by_another_consumer,
            refusal: &refusal,
            run_id: &self.ctx.run_id,
        }
        .emit(&self.ctx.shared.metrics);
        match self.leases.finish(&held.lease).await {
            Ok(_) => {
                tracing::info!(partition = %id, "trimmed shard finished: its children may be read")
            }
            Err(e) => {
                tracing::warn!(partition = %id, error = %e, "could not mark the trimmed shard finished; its next owner will")
            }
        }
        Ok(())
    }

    /// Is everything the drained reader received committed?
    async fn committed(&self, id: &PartitionId) -> anyhow::Result<bool> {
        let Some(Some(last)) = self.held.get(id).and_then(|h| h.drained.clone()) else {
            return Ok(true);
        };
        let checkpoint = self.state.checkpoint(id).await?;
        Ok(checkpoint.is_some_and(|c| c.cursor >= last.sortable()))
    }

    /// Starts reading a shard whose lease was just taken. When its checkpoint cannot be read
    /// (DynamoDB failing for longer than the SDK's retries) the shard is not read: the lease,
    /// not renewed, expires and is taken again, by this runner or another.
    async fn start_reader(&mut self, id: PartitionId, lease: Lease) -> anyhow::Result<()> {
        let checkpoint = match self.state.checkpoint(&id).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                tracing::warn!(partition = %id, error = %e, "could not read the checkpoint of a shard just leased; its lease is left to expire");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let checkpoint = match checkpoint {
            Some(c) => Some(
                KinesisCursor::parse(&c.cursor)
                    .map_err(|e| anyhow::anyhow!("{id}: stored checkpoint {:?}: {e}", c.cursor))?,
            ),
            None => None,
        };
        // `start_from: latest` is resolved once per shard: the time it was first leased,
        // recorded in the state table, so that a later owner (or a renewed iterator) starts
        // there instead of at a newer end, which would skip what arrived in between.
        let start_timestamp_ms = match self.ctx.config.start_from {
            KinesisStart::Latest if checkpoint.is_none() && lease.parents.is_empty() => {
                match self.state.claim_start(&id, &now_ms().to_string()).await {
                    Ok(stored) => {
                        let ms = stored.parse::<i64>().map_err(|e| {
                            anyhow::anyhow!("{id}: stored start position {stored:?}: {e}")
                        })?;
                        tracing::info!(partition = %id, start_ms = ms, "start position (start_from: latest)");
                        Some(ms)
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(partition = %id, error = %e, "could not record the start position of a shard just leased; its lease is left to expire");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => self.ctx.config.start_timestamp_ms,
        };
        let epoch = Epoch(self.epochs.fetch_add(1, Ordering::Relaxed) + 1);
        tracing::info!(partition = %id, epoch = %epoch, checkpoint = ?checkpoint.as_ref().map(|c| c.to_string()), "reading the shard");
        let assignment = Assignment {
            partition: id.clone(),
            epoch,
            checkpoint: checkpoint.clone(),
            start: None,
        };
        if self
            .ctx
            .tx
            .send(Input::Assign(vec![assignment]))
            .await
            .is_err()
        {
            anyhow::bail!("the landing pipeline stopped");
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_shard(
            self.ctx.clone(),
            lease.clone(),
            epoch,
            checkpoint,
            start_timestamp_ms,
            cancel.clone(),
        ));
        self.held.insert(
            id,
            Held {
                lease,
                epoch,
                cancel,
                reader: Some(reader),
                drained: None,
            },
        );
        Ok(())
    }

    /// A lease another runner took: stop reading; what is buffered lands (fenced by the
    /// conditional commit) without holding up the heartbeat.
    async fn lose(&mut self, id: &PartitionId) {
        if let Some(held) = self.held.remove(id) {
            held.cancel.store(true, Ordering::Relaxed);
            let tx = self.ctx.tx.clone();
            let id = id.clone();
            tokio::spawn(async move {
                if let Some(reader) = held.reader {
                    let _ = reader.await;
                }
                // By now this runner may hold the lease again, under a newer epoch: only this
                // assignment's buffer is revoked.
                let (ack, done) = oneshot::channel();
                if tx
                    .send(Input::RevokeEpochs(vec![(id, held.epoch)], ack))
                    .await
                    .is_ok()
                {
                    let _ = done.await;
                }
            });
        }
    }

    async fn revoke(&self, ids: Vec<PartitionId>) {
        let (ack, done) = oneshot::channel();
        if self.ctx.tx.send(Input::Revoke(ids, ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Stops the readers, lands and commits what is buffered, then releases the leases (a
    /// drained shard whose records are all committed is finished instead).
    async fn shutdown(&mut self) {
        for held in self.held.values() {
            held.cancel.store(true, Ordering::Relaxed);
        }
        for (id, held) in self.held.iter_mut() {
            if let Some(reader) = held.reader.take() {
                if let Ok(ReaderEnd::Drained(last)) = reader.await {
                    tracing::info!(partition = %id, "shard read to its end");
                    held.drained = Some(last);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.drain;
        let _ = self.ctx.tx.send(Input::Stop(deadline)).await;
        let ids: Vec<PartitionId> = self.held.keys().cloned().collect();
        self.revoke(ids.clone()).await;
        for id in ids {
            let finished =
                self.held[&id].drained.is_some() && self.committed(&id).await.unwrap_or(false);
            let lease = self.held[&id].lease.clone();
            let result = if finished {
                self.leases.finish(&lease).await
            } else {
                self.leases.release(&lease).await
            };
            match result {
                Ok(_) => tracing::info!(partition = %id, finished, "lease released"),
                Err(e) => {
                    tracing::warn!(partition = %id, error = %e, "lease not released; it expires")
                }
            }
        }
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use bronze::sources::kpl;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    /// Defect (adversarial read): the runner landed about half of all arrival times 1 ms
    /// early, because the SDK reads the JSON number as an f64 and truncates it to whole
    /// nanoseconds. Every millisecond of a second, as GetRecords' JSON carries it, now gives the
    /// same `timestamp_ms` as the Lambda path reading the event's text.
    #[test]
    fn arrival_times_land_to_the_millisecond_like_the_lambda_path() {
        let mut truncated_early = 0;
        for secs in [0i64, 1_764_201_600, 4_102_444_800] {
            for ms in 0..1000 {
                let text = format!("{secs}.{ms:03}");
                // What aws-smithy-json does with an epoch-seconds number.
                let sdk = aws_smithy_types::DateTime::from_secs_f64(text.parse().unwrap());
                let lambda = bronze::sources::event::seconds_text_to_millis(&text).unwrap();
                assert_eq!(arrival_millis(sdk), Some(lambda), "{text}");
                truncated_early += usize::from(sdk.to_millis().unwrap() != lambda);
            }
        }
        assert!(
            truncated_early > 0,
            "the SDK's own conversion is what was wrong"
        );
        let negative = aws_smithy_types::DateTime::from_secs_f64(-0.25);
        assert_eq!(arrival_millis(negative), Some(-250));
    }

    #[test]
    fn iterators_resume_after_the_checkpoint_or_at_a_partly_landed_aggregate() {
        let plain = KinesisCursor::plain(seq("42"));
        let user = KinesisCursor::user_record(seq("42"), 3);
        let start = KinesisStart::Latest;
        assert_eq!(
            iterator_request(
                &Position::Checkpoint(Some(plain.clone())),
                start,
                None,
                false
            ),
            (
                ShardIteratorType::AfterSequenceNumber,
                Some("42".into()),
                None
            )
        );
        assert_eq!(
            iterator_request(
                &Position::Checkpoint(Some(user.clone())),
                start,
                None,
                false
            ),
            (ShardIteratorType::AtSequenceNumber, Some("42".into()), None)
        );
        // Received whole: after the aggregate.
        assert_eq!(
            iterator_request(&Position::Received(user), start, None, false),
            (
                ShardIteratorType::AfterSequenceNumber,
                Some("42".into()),
                None
            )
        );
        assert_eq!(
            iterator_request(&Position::Checkpoint(None), start, None, false).0,
            ShardIteratorType::Latest
        );
        assert_eq!(
            iterator_request(&Position::Checkpoint(None), start, Some(5), false),
            (ShardIteratorType::AtTimestamp, None, Some(5)),
            "renewals and later owners start at the recorded start position"
        );
        assert_eq!(
            iterator_request(&Position::Checkpoint(None), start, None, true).0,
            ShardIteratorType::TrimHorizon,
            "a child starts at its beginning"
        );
        assert_eq!(
            iterator_request(
                &Position::Checkpoint(None),
                KinesisStart::AtTimestamp,
                Some(5),
                false
            ),
            (ShardIteratorType::AtTimestamp, None, Some(5))
        );
    }

    #[test]
    fn a_closed_shard_ends_at_its_ending_sequence_number() {
        let end = seq("7");
        assert!(!at_end(&Position::Checkpoint(None), &end));
        assert!(at_end(&Position::Checkpoint(None), &seq("0")), "empty");
        assert!(!at_end(
            &Position::Received(KinesisCursor::plain(seq("6"))),
            &end
        ));
        assert!(at_end(
            &Position::Received(KinesisCursor::user_record(seq("7"), 2)),
            &end
        ));
        assert!(at_end(
            &Position::Checkpoint(Some(KinesisCursor::plain(seq("70")))),
            &end
        ));
    }

    /// The runner's records are the Lambda function's for the same Kinesis records.
    #[test]
    fn records_match_the_lambda_path() {
        let users = [
            kpl::UserRecord {
                partition_key: "a".into(),
                explicit_hash_key: Some("123".into()),
                data: b"{\"n\":1}".to_vec(),
            },
            kpl::UserRecord {
                partition_key: "b".into(),
                explicit_hash_key: None,
                data: b"{\"n\":2}".to_vec(),
            },
        ];
        let inputs: Vec<(String, String, Vec<u8>)> = vec![
            (
                "49590338271490256608559692538361571095921575989136588801".into(),
                "p".into(),
                b"{\"n\":0}".to_vec(),
            ),
            (
                "49590338271490256608559692538361571095921575989136588802".into(),
                "agg".into(),
                kpl::aggregate(&users),
            ),
            (
                "49590338271490256608559692538361571095921575989136588803".into(),
                "bad".into(),
                [&[0xF3, 0x89, 0x9A, 0xC2][..], b"garbage"].concat(),
            ),
        ];
        let arrival = 1_764_201_600_250i64;
        let mut ours = Vec::new();
        let mut undecodable = 0;
        for (sequence, key, data) in &inputs {
            let record = aws_sdk_kinesis::types::Record::builder()
                .sequence_number(sequence)
                .partition_key(key)
                .data(aws_smithy_types::Blob::new(data.clone()))
                .approximate_arrival_timestamp(aws_smithy_types::DateTime::from_millis(arrival))
                .build()
                .unwrap();
            let (records, bad) = to_records(record).unwrap();
            undecodable += usize::from(bad.is_some());
            ours.extend(records);
        }
        let event = serde_json::json!({"Records": inputs.iter().map(|(sequence, key, data)| serde_json::json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": key,
                "sequenceNumber": sequence,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "approximateArrivalTimestamp": 1764201600.25
            },
            "eventSource": "aws:kinesis",
            "eventID": format!("shardId-000000000003:{sequence}"),
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
        })).collect::<Vec<_>>()});
        let event: bronze::sources::kinesis::KinesisEvent = serde_json::from_value(event).unwrap();
        let (batches, bad) = bronze::sources::kinesis::to_batches_reporting(event).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0].id,
            partition_id("orders", "shardId-000000000003")
        );
        assert_eq!(batches[0].records, ours);
        assert_eq!((bad.len(), undecodable), (1, 1));
        assert_eq!(ours.len(), 4);
        assert_eq!(
            ours[2].cursor.to_string(),
            "49590338271490256608559692538361571095921575989136588802:1"
        );
    }
}
