//! Operator commands that read rather than land: `discover`, `status` and `verify`.

use crate::config::RunnerConfig;
use crate::secrets::SaslCredentials;
use anyhow::Context as _;
use bronze::cursor::{Cursor, KafkaOffset, KinesisCursor};
use bronze::ports::{ObjectStore, StateStore};
use bronze::record::{PartitionId, Source};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka client for metadata and audits (no group membership, nothing committed).
pub fn kafka_reader(
    runner: &RunnerConfig,
    credentials: Option<&SaslCredentials>,
) -> anyhow::Result<Option<BaseConsumer>> {
    let Some(kafka) = &runner.kafka else {
        return Ok(None);
    };
    let mut config = crate::kafka::client_config(kafka, runner.buffer.max_bytes);
    crate::kafka::with_credentials(&mut config, credentials);
    // An audit client never joins the group nor commits.
    config.set("group.id", format!("{}-audit", kafka.group_id));
    Ok(Some(config.create()?))
}

/// Topics and partition counts that the runner's Kafka subscription matches now.
pub fn kafka_topics(
    runner: &RunnerConfig,
    consumer: &BaseConsumer,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let kafka = runner.kafka.as_ref().expect("kafka configured");
    let patterns = kafka
        .patterns
        .iter()
        .map(|p| {
            regex::Regex::new(p).map_err(|e| anyhow::anyhow!("runner.kafka.patterns: {p}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    let mut topics = BTreeMap::new();
    for t in metadata.topics() {
        let name = t.name();
        if name.starts_with("__") {
            continue;
        }
        if kafka.topics.iter().any(|x| x == name) || patterns.iter().any(|p| p.is_match(name)) {
            topics.insert(name.to_owned(), t.partitions().len());
        }
    }
    for t in &kafka.topics {
        if !topics.contains_key(t) {
            anyhow::bail!("topic {t} (runner.kafka.topics) does not exist on the cluster");
        }
    }
    Ok(topics)
}

/// `discover`: prints what the configuration would subscribe to, then a `streams.items`
/// section for it.
///
/// `kinesis`: the shards of each stream in `runner.kinesis`, as ListShards returned them.
pub fn discover(
    runner: &RunnerConfig,
    consumer: Option<&BaseConsumer>,
    kinesis: &[(String, Vec<aws_sdk_kinesis::types::Shard>)],
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut items = Vec::new();
    if let Some(consumer) = consumer {
        let topics = kafka_topics(runner, consumer)?;
        out.push_str("# Kafka topics matched by runner.kafka (topic: partitions)\n");
        for (topic, partitions) in &topics {
            out.push_str(&format!("#   {topic}: {partitions}\n"));
            items.push(format!("    - name: {topic}\n      source: kafka\n"));
        }
    }
    if let Some(p) = &runner.pulsar {
        out.push_str("# Pulsar topics listed in runner.pulsar\n");
        for topic in &p.topics {
            out.push_str(&format!("#   {topic}\n"));
            items.push(format!(
                "    - name: {}\n      source: pulsar\n",
                crate::pulsar::stream_name(topic)
            ));
        }
    }
    if !kinesis.is_empty() {
        out.push_str(
            "# Kinesis streams listed in runner.kinesis (shard: parents, open or closed)\n",
        );
    }
    for (stream, shards) in kinesis {
        out.push_str(&format!("#   {stream}: {} shards\n", shards.len()));
        for shard in shards {
            let parents = crate::kinesis::parents(shard);
            let closed = shard
                .sequence_number_range
                .as_ref()
                .is_some_and(|r| r.ending_sequence_number.is_some());
            out.push_str(&format!(
                "#     {} parents [{}] {}\n",
                shard.shard_id,
                parents.join(", "),
                if closed { "closed" } else { "open" }
            ));
        }
        items.push(format!("    - name: {stream}\n      source: kinesis\n"));
    }
    out.push_str("streams:\n  strategy: config_defined\n  items:\n");
    for item in items {
        out.push_str(&item);
    }
    Ok(out)
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// The partition.
    pub partition: PartitionId,
    /// Last landed cursor (display form), if any.
    pub checkpoint: Option<String>,
    /// Kafka: the high watermark (next offset to be written).
    pub high_watermark: Option<i64>,
    /// Kafka: records not yet landed. Kinesis: `MillisBehindLatest` after the checkpoint (ms).
    pub lag: Option<u64>,
    /// When the last commit happened (ms since the epoch) and who made it.
    pub last_commit: Option<(i64, String)>,
}

/// `status`: checkpoints and lag per partition, for the partitions the state registry
/// knows plus (for Kafka) those the subscription matches now.
pub async fn status(
    runner: &RunnerConfig,
    state: &dyn StateStore,
    consumer: Option<&BaseConsumer>,
) -> anyhow::Result<Vec<StatusRow>> {
    let mut ids: std::collections::BTreeSet<PartitionId> =
        state.partitions().await?.into_iter().collect();
    let mut marks = BTreeMap::new();
    if let Some(consumer) = consumer {
        for (topic, partitions) in kafka_topics(runner, consumer)? {
            for p in 0..partitions {
                let id = PartitionId::new(Source::Kafka, &topic, p.to_string());
                let (_, high) = consumer.fetch_watermarks(&topic, p as i32, METADATA_TIMEOUT)?;
                marks.insert(id.clone(), high);
                ids.insert(id);
            }
        }
    }
    let mut rows = Vec::new();
    for id in ids {
        let checkpoint = state.checkpoint(&id).await?;
        let display = checkpoint
            .as_ref()
            .map(|c| bronze::cursor::display(id.source, &c.cursor));
        let high = marks.get(&id).copied();
        let lag = match (id.source, high) {
            (Source::Kafka, Some(h)) => {
                let last = checkpoint
                    .as_ref()
                    .and_then(|c| KafkaOffset::parse(&c.cursor).ok());
                Some(crate::kafka::lag(
                    last.as_ref(),
                    u64::try_from(h).unwrap_or(0),
                ))
            }
            _ => None,
        };
        rows.push(StatusRow {
            partition: id,
            checkpoint: display,
            high_watermark: high,
            lag,
            last_commit: checkpoint.map(|c| (c.last_commit.committed_at_ms, c.last_commit.run_id)),
        });
    }
    Ok(rows)
}

/// Adds the Kinesis side to `status` rows: a row per shard of each stream in
/// `runner.kinesis` (with or without a checkpoint), and its lag as `MillisBehindLatest`
/// after the checkpoint.
pub async fn kinesis_status(
    rows: &mut Vec<StatusRow>,
    client: &aws_sdk_kinesis::Client,
    runner: &RunnerConfig,
    state: &dyn StateStore,
) -> anyhow::Result<()> {
    let Some(k) = &runner.kinesis else {
        return Ok(());
    };
    for stream in &k.streams {
        for shard in crate::kinesis::list_shards(client, stream).await? {
            let id = crate::kinesis::partition_id(stream, &shard.shard_id);
            let index = match rows.iter().position(|r| r.partition == id) {
                Some(i) => i,
                None => {
                    let checkpoint = state.checkpoint(&id).await?;
                    rows.push(StatusRow {
                        partition: id.clone(),
                        checkpoint: checkpoint
                            .as_ref()
                            .map(|c| bronze::cursor::display(id.source, &c.cursor)),
                        high_watermark: None,
                        lag: None,
                        last_commit: checkpoint
                            .map(|c| (c.last_commit.committed_at_ms, c.last_commit.run_id)),
                    });
                    rows.len() - 1
                }
            };
            let checkpoint = rows[index]
                .checkpoint
                .as_deref()
                .map(KinesisCursor::parse)
                .transpose()?;
            let behind = crate::kinesis::millis_behind_latest(
                client,
                stream,
                &shard.shard_id,
                checkpoint.as_ref(),
            )
            .await?;
            rows[index].lag = behind.map(|ms| u64::try_from(ms).unwrap_or(0));
        }
    }
    rows.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(())
}

/// Renders `status` rows as a table.
pub fn status_table(rows: &[StatusRow]) -> String {
    let mut out = format!(
        "{:<8} {:<32} {:<14} {:>22} {:>14} {:>10}  {}\n",
        "SOURCE", "STREAM", "PARTITION", "CHECKPOINT", "HIGH_WATERMARK", "LAG", "LAST_COMMIT_BY"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<32} {:<14} {:>22} {:>14} {:>10}  {}\n",
            r.partition.source.as_str(),
            r.partition.stream,
            r.partition.partition,
            r.checkpoint.as_deref().unwrap_or("-"),
            r.high_watermark.map_or("-".into(), |h| h.to_string()),
            r.lag.map_or("-".into(), |l| match r.partition.source {
                // MillisBehindLatest: time, not records.
                Source::Kinesis => format!("{l}ms"),
                _ => l.to_string(),
            }),
            r.last_commit.as_ref().map_or("-", |(_, by)| by.as_str()),
        ));
    }
    out
}

/// A broken promise found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where.
    pub partition: PartitionId,
    /// What.
    pub problem: String,
}

/// What `verify` checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Partitions audited.
    pub partitions: usize,
    /// Commit-log entries audited.
    pub commits: usize,
    /// Records found in committed objects.
    pub records: u64,
    /// Records the commit log says went to the DLQ.
    pub dead_lettered: u64,
    /// Everything wrong.
    pub violations: Vec<Violation>,
    /// Kinesis partitions the probe could not find in this account (landed from elsewhere):
    /// audited against their commit log only.
    pub unchecked: Vec<PartitionId>,
}

/// Reads the records of a Kafka partition in `[from, to)` that the broker still has, to
/// tell a gap the source has (compaction, transaction markers, retention) from a lost record.
pub trait SourceProbe {
    /// Offsets present in the source in `[from, to)`.
    fn offsets(&self, topic: &str, partition: i32, from: u64, to: u64) -> anyhow::Result<Vec<u64>>;

    /// The partition's high watermark (the next offset to be written), when known.
    fn high_watermark(&self, _topic: &str, _partition: i32) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
}

impl SourceProbe for BaseConsumer {
    fn high_watermark(&self, topic: &str, partition: i32) -> anyhow::Result<Option<u64>> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match self.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
            Ok((_, high)) => Ok(u64::try_from(high).ok()),
            // A partition this broker does not have (landed from another cluster by a
            // Lambda mapping, or deleted): nothing to compare with here.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        Code::UnknownPartition | Code::UnknownTopic | Code::UnknownTopicOrPartition
                    )
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn offsets(&self, topic: &str, partition: i32, from: u64, to: u64) -> anyhow::Result<Vec<u64>> {
        let (low, high) = self.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let from = from.max(u64::try_from(low).unwrap_or(0));
        let to = to.min(u64::try_from(high).unwrap_or(0));
        if from >= to {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from as i64))?;
        self.assign(&tpl)?;
        let mut found = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match self.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let o = m.offset() as u64;
                    if o >= to {
                        break;
                    }
                    found.push(o);
                    if o + 1 >= to {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        self.unassign()?;
        Ok(found)
    }
}

/// What a Kinesis shard holds, read back with GetRecords for `verify`: Kinesis sequence
/// numbers have gaps by design, so only the shard can say which records a range should hold.
#[async_trait::async_trait]
pub trait ShardProbe: Send + Sync {
    /// The landable records of `stream`/`shard` from `from` through `to` (user records of
    /// KPL aggregates counted one by one), in order, or `None` when this account has no such
    /// stream or shard (a stream landed elsewhere by a Lambda mapping).
    async fn span(
        &self,
        stream: &str,
        shard: &str,
        from: &KinesisCursor,
        to: &KinesisCursor,
    ) -> anyhow::Result<Option<ShardSpan>>;
}

/// A shard's records between two cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSpan {
    /// Cursors of the records in the range, in order.
    pub cursors: Vec<KinesisCursor>,
    /// The range's start is past the shard's retention: `cursors` begin at the trim
    /// horizon, and nothing older can be checked.
    pub trimmed: bool,
    /// Arrival time (ms since the epoch) of the first record after the range, if any.
    pub next_arrival_ms: Option<i64>,
}

/// The sources `verify` may ask which records exist.
#[derive(Clone, Copy, Default)]
pub struct Probes<'a> {
    /// The Kafka cluster of `runner.kafka`.
    pub kafka: Option<&'a dyn SourceProbe>,
    /// Kinesis (GetRecords).
    pub kinesis: Option<&'a dyn ShardProbe>,
}

impl std::fmt::Debug for Probes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("kafka", &self.kafka.is_some())
            .field("kinesis", &self.kinesis.is_some())
            .finish()
    }
}

#[async_trait::async_trait]
impl ShardProbe for aws_sdk_kinesis::Client {
    async fn span(
        &self,
        stream: &str,
        shard: &str,
        from: &KinesisCursor,
        to: &KinesisCursor,
    ) -> anyhow::Result<Option<ShardSpan>> {
        use aws_sdk_kinesis::error::ProvideErrorMetadata;
        use aws_sdk_kinesis::types::ShardIteratorType;
        let named = |action: &str, e: &dyn std::fmt::Display| {
            anyhow::anyhow!("kinesis:{action} on stream {stream} shard {shard}: {e}")
        };
        let iterator = |kind: ShardIteratorType| {
            self.get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard)
                .shard_iterator_type(kind.clone())
                .set_starting_sequence_number(
                    (kind == ShardIteratorType::AtSequenceNumber)
                        .then(|| from.sequence.to_string()),
                )
                .send()
        };
        let mut span = ShardSpan::default();
        let mut next = match iterator(ShardIteratorType::AtSequenceNumber).await {
            Ok(out) => out.shard_iterator,
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            // The start is older than the shard's retention: read what is left.
            Err(e) if e.code() == Some("InvalidArgumentException") => {
                span.trimmed = true;
                iterator(ShardIteratorType::TrimHorizon)
                    .await
                    .map_err(|e| {
                        named(
                            "GetShardIterator",
                            &aws_smithy_types::error::display::DisplayErrorContext(e),
                        )
                    })?
                    .shard_iterator
            }
            Err(e) => {
                return Err(named(
                    "GetShardIterator",
                    &aws_smithy_types::error::display::DisplayErrorContext(e),
                ));
            }
        };
        let mut first_call = true;
        while let Some(it) = next.take() {
            if !first_call {
                // Kinesis allows 5 GetRecords per second per shard, shared by every reader.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            first_call = false;
            let out = self
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| {
                    named(
                        "GetRecords",
                        &aws_smithy_types::error::display::DisplayErrorContext(e),
                    )
                })?;
            let caught_up = out.records.is_empty() && out.millis_behind_latest == Some(0);
            for record in out.records {
                let arrival = record
                    .approximate_arrival_timestamp
                    .and_then(crate::kinesis::arrival_millis);
                let (records, _) = crate::kinesis::to_records(record)?;
                for r in records {
                    if r.cursor > *to {
                        span.next_arrival_ms = arrival;
                        return Ok(Some(span));
                    }
                    if r.cursor >= *from {
                        span.cursors.push(r.cursor);
                    }
                }
            }
            if !caught_up {
                next = out.next_shard_iterator;
            }
        }
        Ok(Some(span))
    }
}

/// What a Kinesis partition's commit log says was handled, for the check against the shard.
#[derive(Debug, Default)]
struct KinesisHandled {
    /// Cursors found in the committed objects.
    landed: Vec<KinesisCursor>,
    /// Cursors the entries list as dead-lettered.
    dead: Vec<KinesisCursor>,
    /// Dead letters of entries that did not list their cursors (more than the list holds).
    dead_unlisted: u64,
    /// The smallest committed cursor.
    first: Option<KinesisCursor>,
}

/// Compares a Kinesis partition's landed and dead-lettered records with what the shard holds
/// from its first committed record through the checkpoint: every record of the shard is
/// accounted for, and nothing landed that the shard does not hold.
fn kinesis_problems(
    handled: &KinesisHandled,
    span: &ShardSpan,
    from: &KinesisCursor,
    to: &KinesisCursor,
) -> Vec<String> {
    use std::collections::BTreeSet;
    let mut problems = Vec::new();
    let known: BTreeSet<&KinesisCursor> = handled.landed.iter().chain(&handled.dead).collect();
    let missing: Vec<&KinesisCursor> = span.cursors.iter().filter(|c| !known.contains(c)).collect();
    if missing.len() as u64 > handled.dead_unlisted {
        problems.push(format!(
            "{} records of the shard between {from} and the checkpoint {to} are neither landed nor dead-lettered (first: {})",
            missing.len() as u64 - handled.dead_unlisted,
            missing[0]
        ));
    }
    let in_shard: BTreeSet<&KinesisCursor> = span.cursors.iter().collect();
    let floor = span.cursors.first().filter(|_| span.trimmed);
    let phantom: Vec<&KinesisCursor> = handled
        .landed
        .iter()
        .filter(|c| !in_shard.contains(c) && floor.is_none_or(|f| *c >= f))
        .collect();
    if let Some(first) = phantom.first() {
        problems.push(format!(
            "{} landed records are not in the shard (first: {first})",
            phantom.len()
        ));
    }
    problems
}

/// `verify`: audits the committed Bronze data against the commit log, per partition:
/// every committed object exists and holds exactly the records its entry says, in cursor
/// order, inside the entry's range; no cursor is committed twice (ranges do not overlap,
/// no record is in two objects); the checkpoint is the end of the log; and, for Kafka,
/// every offset between the first and last committed one is landed or dead-lettered unless
/// the broker confirms the source does not have it; for Kinesis with a probe, the shard's
/// records from the first committed one through the checkpoint (read with GetRecords: gaps
/// in sequence numbers are normal) are each landed or dead-lettered, and nothing landed
/// that the shard does not hold; and, with a probe and `stuck_after`, the source has no
/// records past the checkpoint that nothing has landed for that long (a partition stuck
/// behind a stalled or lost owner).
pub async fn verify(
    state: &dyn StateStore,
    objects: &dyn ObjectStore,
    probes: Probes<'_>,
    only_stream: Option<&str>,
    stuck_after: Option<std::time::Duration>,
) -> anyhow::Result<VerifyReport> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut report = VerifyReport::default();
    for id in state.partitions().await? {
        if only_stream.is_some_and(|s| s != id.stream) {
            continue;
        }
        report.partitions += 1;
        let mut problem = |p: String| {
            report.violations.push(Violation {
                partition: id.clone(),
                problem: p,
            })
        };
        let log = state.commit_log(&id).await?;
        let checkpoint = state.checkpoint(&id).await?;
        if let (Some(c), Some(last)) = (&checkpoint, log.iter().map(|e| &e.last).max()) {
            if &c.cursor != last {
                problem(format!(
                    "checkpoint {} is not the last committed cursor {}",
                    bronze::cursor::display(id.source, &c.cursor),
                    bronze::cursor::display(id.source, last)
                ));
            }
        }
        if let (Source::Kafka, Some(probe), Some(after), Some(c)) =
            (id.source, probes.kafka, stuck_after, &checkpoint)
        {
            if let Some(problem_text) = stuck(probe, &id, c, now_ms, after)? {
                problem(problem_text);
            }
        }
        let mut previous: Option<&bronze::ports::CommitEntry> = None;
        let mut kafka_missing: Vec<(u64, u64)> = Vec::new();
        let mut kinesis = KinesisHandled::default();
        let mut records = 0u64;
        let mut dead = 0u64;
        for entry in &log {
            if entry.first > entry.last {
                problem(format!(
                    "commit {}..{} has first after last",
                    entry.first, entry.last
                ));
            }
            if let Some(prev) = previous {
                if entry.first <= prev.last {
                    problem(format!(
                        "cursors committed twice: commit {}..{} overlaps {}..{}",
                        bronze::cursor::display(id.source, &entry.first),
                        bronze::cursor::display(id.source, &entry.last),
                        bronze::cursor::display(id.source, &prev.first),
                        bronze::cursor::display(id.source, &prev.last)
                    ));
                }
            }
            dead += entry.dead_lettered;
            let cursors: Vec<String> = match &entry.object_key {
                None => Vec::new(),
                Some(key) => match objects.get(key).await? {
                    None => {
                        problem(format!("committed object {key} is missing"));
                        previous = Some(entry);
                        continue;
                    }
                    Some(body) => bronze::bronze::read_lines(&body)?
                        .iter()
                        .map(|l| l["cursor"].as_str().unwrap_or_default().to_owned())
                        .collect(),
                },
            };
            if cursors.len() as u64 != entry.records {
                problem(format!(
                    "object {} holds {} records, the commit says {}",
                    entry.object_key.as_deref().unwrap_or("-"),
                    cursors.len(),
                    entry.records
                ));
            }
            records += cursors.len() as u64;
            if id.source == Source::Kinesis {
                for c in &cursors {
                    match KinesisCursor::parse(c) {
                        Ok(c) => kinesis.landed.push(c),
                        Err(e) => problem(format!(
                            "unreadable cursor {c:?} in {:?}: {e}",
                            entry.object_key
                        )),
                    }
                }
                match &entry.dead_cursors {
                    Some(listed) => {
                        for c in listed {
                            if let Ok(c) = KinesisCursor::parse(c) {
                                kinesis.dead.push(c);
                            }
                        }
                    }
                    None => kinesis.dead_unlisted += entry.dead_lettered,
                }
                if let Ok(first) = KinesisCursor::parse(&entry.first) {
                    if kinesis.first.as_ref().is_none_or(|f| first < *f) {
                        kinesis.first = Some(first);
                    }
                }
            }
            if id.source == Source::Kafka {
                let mut offsets = Vec::with_capacity(cursors.len());
                for c in &cursors {
                    match KafkaOffset::parse(c) {
                        Ok(o) => offsets.push(o.0),
                        Err(e) => problem(format!(
                            "unreadable cursor {c:?} in {:?}: {e}",
                            entry.object_key
                        )),
                    }
                }
                let (Ok(first), Ok(last)) = (
                    KafkaOffset::parse(&entry.first),
                    KafkaOffset::parse(&entry.last),
                ) else {
                    problem(format!(
                        "unreadable commit range {}..{}",
                        entry.first, entry.last
                    ));
                    continue;
                };
                if offsets.windows(2).any(|w| w[0] >= w[1]) {
                    problem(format!(
                        "object {:?} is not in strictly increasing offset order",
                        entry.object_key
                    ));
                }
                if offsets.first().is_some_and(|o| *o < first.0)
                    || offsets.last().is_some_and(|o| *o > last.0)
                {
                    problem(format!(
                        "object {:?} holds offsets outside {}..{}",
                        entry.object_key, first.0, last.0
                    ));
                }
                let span = last.0 - first.0 + 1;
                if offsets.len() as u64 + entry.dead_lettered < span {
                    // Offsets in the range that are neither landed nor dead-lettered.
                    let mut expected = first.0;
                    for o in offsets.iter().copied().chain(std::iter::once(last.0 + 1)) {
                        if o > expected {
                            kafka_missing.push((expected, o));
                        }
                        expected = o + 1;
                    }
                }
                if let Some(prev) = previous {
                    if let Ok(p) = KafkaOffset::parse(&prev.last) {
                        if first.0 > p.0 + 1 {
                            kafka_missing.push((p.0 + 1, first.0));
                        }
                    }
                }
            }
            previous = Some(entry);
        }
        report.commits += log.len();
        report.records += records;
        report.dead_lettered += dead;
        if let (Source::Kinesis, Some(shards), Some(from), Some(c)) =
            (id.source, probes.kinesis, &kinesis.first, &checkpoint)
        {
            let to =
                KinesisCursor::parse(&c.cursor).with_context(|| format!("checkpoint of {id}"))?;
            match shards.span(&id.stream, &id.partition, from, &to).await? {
                None => report.unchecked.push(id.clone()),
                Some(span) => {
                    for p in kinesis_problems(&kinesis, &span, from, &to) {
                        problem(p);
                    }
                    let idle_ms = now_ms.saturating_sub(c.last_commit.committed_at_ms);
                    if let (Some(after), Some(arrived)) = (stuck_after, span.next_arrival_ms) {
                        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                        if idle_ms >= after_ms && now_ms.saturating_sub(arrived) >= after_ms {
                            problem(format!(
                                "records past the checkpoint {to} arrived {} s ago and nothing committed for {} s: nothing is landing this shard",
                                now_ms.saturating_sub(arrived) / 1000,
                                idle_ms / 1000
                            ));
                        }
                    }
                }
            }
        }
        // Dead-lettered offsets are among the missing ones, so only a shortfall beyond them
        // is a loss; the broker tells which offsets exist.
        let missing_total: u64 = kafka_missing.iter().map(|(a, b)| b - a).sum();
        if missing_total > dead {
            let partition: i32 = id.partition.parse().unwrap_or(-1);
            match probes.kafka {
                Some(probe) => {
                    let mut present = 0u64;
                    let mut example = None;
                    for (a, b) in &kafka_missing {
                        let found = probe.offsets(&id.stream, partition, *a, *b)?;
                        present += found.len() as u64;
                        if example.is_none() {
                            example = found.first().copied();
                        }
                    }
                    if present > dead {
                        problem(format!(
                            "{} offsets exist in the source but are neither landed nor dead-lettered (first: {})",
                            present - dead,
                            example.map_or("-".into(), |e| e.to_string())
                        ));
                    }
                }
                None => problem(format!(
                    "{} offsets between committed ranges are neither landed nor dead-lettered \
                     (first gap {}..{}); pass a config with runner.kafka to check them against the broker",
                    missing_total - dead,
                    kafka_missing[0].0,
                    kafka_missing[0].1
                )),
            }
        }
    }
    Ok(report)
}

/// Records in the source past a Kafka partition's checkpoint that nothing has committed
/// for `after`: a partition no runner is landing.
fn stuck(
    probe: &dyn SourceProbe,
    id: &PartitionId,
    checkpoint: &bronze::ports::Checkpoint,
    now_ms: i64,
    after: std::time::Duration,
) -> anyhow::Result<Option<String>> {
    let partition: i32 = id.partition.parse().unwrap_or(-1);
    let Ok(last) = KafkaOffset::parse(&checkpoint.cursor) else {
        return Ok(None);
    };
    let Some(high) = probe.high_watermark(&id.stream, partition)? else {
        return Ok(None);
    };
    let next = last.0.saturating_add(1);
    if high <= next {
        return Ok(None);
    }
    let age_ms = now_ms.saturating_sub(checkpoint.last_commit.committed_at_ms);
    if age_ms < i64::try_from(after.as_millis()).unwrap_or(i64::MAX) {
        return Ok(None);
    }
    // Only records count (not a transaction marker at the end): look at the first few.
    let found = probe.offsets(
        &id.stream,
        partition,
        next,
        high.min(next.saturating_add(10)),
    )?;
    let Some(first) = found.first() else {
        return Ok(None);
    };
    Ok(Some(format!(
        "{} offsets past the checkpoint {last} (first record {first}, high watermark {high}) and nothing committed for {} s: nothing is landing this partition",
        high - next,
        age_ms / 1000
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::config::ConnectorConfig;
    use bronze::engine::{Lander, RunContext};
    use bronze::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
    use bronze::ports::CommitEntry;
    use bronze::record::{PartitionBatch, Record};
    use std::sync::Arc;

    fn record(o: u64) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(o),
            key: None,
            headers: vec![],
            timestamp_ms: Some(0),
            payload: Some(format!("{{\"n\":{o}}}").into_bytes()),
            defect: None,
            schema_id: None,
        }
    }

    async fn landed(
        ranges: &[std::ops::Range<u64>],
    ) -> (Arc<MemoryStateStore>, Arc<MemoryObjectStore>, PartitionId) {
        let faults = Faults::new();
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let lander = Lander::new(
            objects.clone(),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let settings = ConnectorConfig::default()
            .stream(Source::Kafka, "orders")
            .cloned()
            .unwrap();
        let metrics = bronze::telemetry::Metrics::default();
        for r in ranges {
            let batch = PartitionBatch {
                id: id.clone(),
                records: r.clone().map(record).collect(),
            };
            lander
                .land(
                    &batch,
                    &settings,
                    RunContext {
                        run_id: "t",
                        now_ms: 0,
                        metrics: &metrics,
                    },
                )
                .await;
        }
        (state, objects, id)
    }

    #[tokio::test]
    async fn clean_log_passes() {
        let (state, objects, _) = landed(&[0..10, 10..25, 25..30]).await;
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes::default(),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.violations, vec![]);
        assert_eq!(
            (report.partitions, report.commits, report.records),
            (1, 3, 30)
        );
    }

    #[tokio::test]
    async fn gap_and_double_commit_and_missing_object_are_violations() {
        // A gap: 10..15 never landed.
        let (state, objects, _) = landed(&[0..10, 15..20]).await;
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes::default(),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].problem.contains("first gap 10..15"));

        // A probe that says the source has no offsets there: a compacted gap is fine.
        struct Empty;
        impl SourceProbe for Empty {
            fn offsets(&self, _: &str, _: i32, _: u64, _: u64) -> anyhow::Result<Vec<u64>> {
                Ok(vec![])
            }
        }
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes {
                kafka: Some(&Empty),
                ..Probes::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.violations, vec![]);

        // A range committed twice (forged log entry overlapping the checkpointed range).
        let (state, objects, id) = landed(&[0..10, 10..20]).await;
        let log = state.commit_log(&id).await.unwrap();
        let forged = CommitEntry {
            first: KafkaOffset(15).sortable(),
            last: KafkaOffset(20).sortable(),
            ..log[1].clone()
        };
        state.log_commit(&id, &forged).await.unwrap();
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes::default(),
            None,
            None,
        )
        .await
        .unwrap();
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.problem.contains("committed twice")),
            "{:?}",
            report.violations
        );

        // A committed object that disappeared.
        let (state, objects, id) = landed(&[0..5, 5..10]).await;
        let key = state.commit_log(&id).await.unwrap()[0]
            .object_key
            .clone()
            .unwrap();
        objects.delete(&key).await.unwrap();
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes::default(),
            None,
            None,
        )
        .await
        .unwrap();
        assert!(report.violations[0].problem.contains("is missing"));
    }

    #[tokio::test]
    async fn records_past_the_checkpoint_that_nothing_lands_are_a_violation() {
        // Landed 0..30 long ago (the commits carry now_ms 0); the source has 40 records.
        let (state, objects, _) = landed(&[0..10, 10..30]).await;
        struct Broker(u64);
        impl SourceProbe for Broker {
            fn offsets(&self, _: &str, _: i32, from: u64, to: u64) -> anyhow::Result<Vec<u64>> {
                Ok((from..to.min(self.0)).collect())
            }
            fn high_watermark(&self, _: &str, _: i32) -> anyhow::Result<Option<u64>> {
                Ok(Some(self.0))
            }
        }
        let minute = Some(Duration::from_secs(60));
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes {
                kafka: Some(&Broker(40)),
                ..Probes::default()
            },
            None,
            minute,
        )
        .await
        .unwrap();
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0]
                .problem
                .contains("10 offsets past the checkpoint 29 (first record 30"),
            "{:?}",
            report.violations
        );
        // Caught up: nothing to report.
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes {
                kafka: Some(&Broker(30)),
                ..Probes::default()
            },
            None,
            minute,
        )
        .await
        .unwrap();
        assert_eq!(report.violations, vec![]);
        // Without the threshold (no runner section), the check is off.
        let report = verify(
            state.as_ref(),
            objects.as_ref(),
            Probes {
                kafka: Some(&Broker(40)),
                ..Probes::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.violations, vec![]);
    }

    fn seq(n: u64) -> bronze::cursor::SequenceNumber {
        bronze::cursor::SequenceNumber::parse(&format!("4963{n:020}")).unwrap()
    }

    fn kinesis_cursor(n: u64, sub: Option<u32>) -> KinesisCursor {
        match sub {
            None => KinesisCursor::plain(seq(n)),
            Some(s) => KinesisCursor::user_record(seq(n), s),
        }
    }

    /// Lands `batches` of a Kinesis shard (a record whose payload is `poison` is unusable and
    /// goes to the DLQ).
    async fn landed_kinesis(
        batches: &[Vec<(u64, Option<u32>, &str)>],
    ) -> (Arc<MemoryStateStore>, Arc<MemoryObjectStore>, PartitionId) {
        let faults = Faults::new();
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let lander = Lander::new(
            objects.clone(),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000000");
        let settings = ConnectorConfig::default()
            .stream(Source::Kinesis, "clicks")
            .cloned()
            .unwrap();
        let metrics = bronze::telemetry::Metrics::default();
        for batch in batches {
            let batch = PartitionBatch {
                id: id.clone(),
                records: batch
                    .iter()
                    .map(|(n, sub, payload)| Record {
                        cursor: kinesis_cursor(*n, *sub),
                        key: Some(b"k".to_vec()),
                        headers: vec![],
                        timestamp_ms: Some(0),
                        payload: Some(payload.as_bytes().to_vec()),
                        defect: (*payload == "poison").then(|| "unusable".to_owned()),
                        schema_id: None,
                    })
                    .collect(),
            };
            let outcome = lander
                .land(
                    &batch,
                    &settings,
                    RunContext {
                        run_id: "t",
                        now_ms: 0,
                        metrics: &metrics,
                    },
                )
                .await;
            assert!(
                matches!(outcome, bronze::engine::PartitionOutcome::Landed { .. }),
                "{outcome:?}"
            );
        }
        (state, objects, id)
    }

    /// A shard as GetRecords would return it (`None`: not in this account).
    struct Shard(Option<Vec<KinesisCursor>>);

    #[async_trait::async_trait]
    impl ShardProbe for Shard {
        async fn span(
            &self,
            _: &str,
            _: &str,
            from: &KinesisCursor,
            to: &KinesisCursor,
        ) -> anyhow::Result<Option<ShardSpan>> {
            Ok(self.0.as_ref().map(|all| ShardSpan {
                cursors: all
                    .iter()
                    .filter(|c| *c >= from && *c <= to)
                    .cloned()
                    .collect(),
                trimmed: false,
                next_arrival_ms: None,
            }))
        }
    }

    async fn verify_kinesis(
        state: &MemoryStateStore,
        objects: &MemoryObjectStore,
        shard: &Shard,
    ) -> VerifyReport {
        let probes = Probes {
            kinesis: Some(shard),
            ..Probes::default()
        };
        verify(state, objects, probes, None, None).await.unwrap()
    }

    #[tokio::test]
    async fn kinesis_partitions_are_checked_against_what_the_shard_holds() {
        // Sequence numbers 10, 20 and 35 plain, 40 an aggregate of three user records, and
        // 50 a poison record: gaps between sequence numbers are normal in Kinesis.
        let (state, objects, id) = landed_kinesis(&[
            vec![(10, None, "{}"), (20, None, "{}")],
            vec![(35, None, "{}"), (40, Some(0), "{}"), (40, Some(1), "{}")],
            vec![(40, Some(2), "{}"), (50, None, "poison")],
        ])
        .await;
        let shard = |extra: &[(u64, Option<u32>)]| {
            let mut all: Vec<KinesisCursor> = [
                (10, None),
                (20, None),
                (35, None),
                (40, Some(0)),
                (40, Some(1)),
                (40, Some(2)),
                (50, None),
                (60, None),
            ]
            .iter()
            .chain(extra)
            .map(|(n, s)| kinesis_cursor(*n, *s))
            .collect();
            all.sort();
            Shard(Some(all))
        };
        let report = verify_kinesis(&state, &objects, &shard(&[])).await;
        assert_eq!(report.violations, vec![], "sequence gaps are not losses");
        assert_eq!((report.records, report.dead_lettered), (6, 1));
        assert!(report.unchecked.is_empty());

        // The shard holds a record nothing landed or dead-lettered: a loss.
        let report = verify_kinesis(&state, &objects, &shard(&[(30, None)])).await;
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert_eq!(report.violations[0].partition, id);
        let text = &report.violations[0].problem;
        assert!(
            text.contains("1 records of the shard") && text.contains(&seq(30).to_string()),
            "{text}"
        );

        // A user record of an aggregate missing from the landed data is one too.
        let report = verify_kinesis(&state, &objects, &shard(&[(40, Some(3))])).await;
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0]
                .problem
                .contains(&format!("{}:3", seq(40))),
            "{:?}",
            report.violations
        );

        // A landed record the shard does not hold.
        let without_35: Vec<KinesisCursor> = shard(&[])
            .0
            .unwrap()
            .into_iter()
            .filter(|c| *c != kinesis_cursor(35, None))
            .collect();
        let report = verify_kinesis(&state, &objects, &Shard(Some(without_35))).await;
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0]
                .problem
                .contains("1 landed records are not in the shard"),
            "{:?}",
            report.violations
        );

        // A stream this account does not have: audited against the log only, and said so.
        let report = verify_kinesis(&state, &objects, &Shard(None)).await;
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.unchecked, vec![id]);
    }

    #[test]
    fn a_trimmed_shard_is_only_checked_from_its_trim_horizon() {
        let c = |n| kinesis_cursor(n, None);
        let handled = KinesisHandled {
            landed: vec![c(10), c(20), c(30)],
            first: Some(c(10)),
            ..KinesisHandled::default()
        };
        let span = ShardSpan {
            cursors: vec![c(20), c(30)],
            trimmed: true,
            next_arrival_ms: None,
        };
        assert_eq!(
            kinesis_problems(&handled, &span, &c(10), &c(30)),
            Vec::<String>::new()
        );
        let untrimmed = ShardSpan {
            trimmed: false,
            ..span
        };
        assert_eq!(
            kinesis_problems(&handled, &untrimmed, &c(10), &c(30)).len(),
            1
        );
    }

    #[test]
    fn discover_lists_kinesis_shards_with_parents() {
        let connector = bronze::config::ConnectorConfig::from_yaml(
            "manifest_version: \"1.0\"\nid: conn::global::streaming::kafka_kinesis::consume\ntaxonomy: {layer: bronze}\nruntime: {kind: runner}\ndefaults: {key_strategy: raw, cursor_strategy: last_landed}\nstreams: {strategy: config_defined}\nrunner:\n  kinesis: {streams: [orders]}\n",
        )
        .unwrap();
        let runner = RunnerConfig::from_connector(&connector).unwrap();
        let shard = |id: &str, parent: Option<&str>, closed: bool| {
            let mut range = aws_sdk_kinesis::types::SequenceNumberRange::builder()
                .starting_sequence_number("1");
            if closed {
                range = range.ending_sequence_number("9");
            }
            aws_sdk_kinesis::types::Shard::builder()
                .shard_id(id)
                .set_parent_shard_id(parent.map(str::to_owned))
                .sequence_number_range(range.build().unwrap())
                .build()
                .unwrap()
        };
        let shards = vec![(
            "orders".to_owned(),
            vec![
                shard("shardId-0", None, true),
                shard("shardId-1", Some("shardId-0"), false),
            ],
        )];
        let out = discover(&runner, None, &shards).unwrap();
        assert!(out.contains("#     shardId-0 parents [] closed\n"), "{out}");
        assert!(
            out.contains("#     shardId-1 parents [shardId-0] open\n"),
            "{out}"
        );
        assert!(
            out.contains("    - name: orders\n      source: kinesis\n"),
            "{out}"
        );
    }
}
