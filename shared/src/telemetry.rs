//! Telemetry: one struct per event. `emit()` writes one structured log line and updates the
//! invocation's [`Metrics`], which are flushed as CloudWatch Embedded Metric Format (EMF)
//! lines on stdout: no API calls, no added latency.
//!
//! Every line about records carries source, stream, partition, cursor, key hash and run id.

use crate::record::{PartitionId, Source};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// CloudWatch namespace of the connector's metrics.
pub const NAMESPACE: &str = "BronzeConnector";

/// Per-stream counters of one invocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamMetrics {
    /// Records landed (committed).
    pub messages: u64,
    /// Payload bytes landed.
    pub bytes: u64,
    /// Records skipped because they were already landed.
    pub skipped: u64,
    /// Records sent to the DLQ.
    pub dead_letters: u64,
    /// Partitions that failed to land.
    pub errors: u64,
    /// Deliveries refused because the source's cursors restarted below the checkpoint.
    pub cursor_restarts: u64,
    /// Kinesis records with the KPL magic bytes that could not be deaggregated (landed whole).
    pub undecodable_aggregates: u64,
    /// Kinesis shards that left the stream (trimmed after the retention period) before they
    /// were read to their end: records after their checkpoint, if any, were lost upstream.
    pub shards_trimmed: u64,
    /// Lag in ms: Kinesis iterator age, Kafka age of the newest record (max seen).
    pub lag_ms: Option<i64>,
}

/// One stream's counters: `((source, stream), counters)`.
pub type StreamSnapshot = ((Source, String), StreamMetrics);

/// Low-cardinality metrics of one invocation, keyed by (source, stream).
#[derive(Debug, Default)]
pub struct Metrics {
    streams: Mutex<BTreeMap<(Source, String), StreamMetrics>>,
    retries: AtomicU64,
}

impl Metrics {
    fn update(&self, id: &PartitionId, f: impl FnOnce(&mut StreamMetrics)) {
        let mut streams = self.streams.lock().expect("metrics lock");
        f(streams.entry((id.source, id.stream.clone())).or_default());
    }

    /// Adds SDK retries observed during the invocation.
    pub fn add_retries(&self, n: u64) {
        self.retries.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of one stream so far.
    pub fn stream(&self, source: Source, stream: &str) -> StreamMetrics {
        self.streams
            .lock()
            .expect("metrics lock")
            .get(&(source, stream.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Every stream's counters so far, with the retries, for exporters that read totals
    /// (the runner's Prometheus endpoint).
    pub fn snapshot(&self) -> (Vec<StreamSnapshot>, u64) {
        let streams = self.streams.lock().expect("metrics lock");
        (
            streams
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            self.retries.load(Ordering::Relaxed),
        )
    }

    /// The EMF documents for this invocation, one per stream.
    pub fn emf_lines(&self, timestamp_ms: i64) -> Vec<String> {
        let retries = self.retries.load(Ordering::Relaxed);
        let streams = self.streams.lock().expect("metrics lock");
        streams
            .iter()
            .map(|((source, stream), m)| emf_document(*source, stream, m, retries, timestamp_ms))
            .collect()
    }

    /// Prints the EMF documents to stdout, where Lambda ships them to CloudWatch.
    pub fn flush(&self, timestamp_ms: i64) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for line in self.emf_lines(timestamp_ms) {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// One EMF document: a stream's counters (and lag, when known) in the [`NAMESPACE`]
/// namespace with dimensions Source and Stream.
pub fn emf_document(
    source: Source,
    stream: &str,
    m: &StreamMetrics,
    retries: u64,
    timestamp_ms: i64,
) -> String {
    let mut metrics = vec![
        serde_json::json!({"Name": "Messages", "Unit": "Count"}),
        serde_json::json!({"Name": "Bytes", "Unit": "Bytes"}),
        serde_json::json!({"Name": "Skipped", "Unit": "Count"}),
        serde_json::json!({"Name": "DeadLetters", "Unit": "Count"}),
        serde_json::json!({"Name": "Errors", "Unit": "Count"}),
        serde_json::json!({"Name": "CursorRestarts", "Unit": "Count"}),
        serde_json::json!({"Name": "UndecodableAggregates", "Unit": "Count"}),
        serde_json::json!({"Name": "ShardsTrimmed", "Unit": "Count"}),
        serde_json::json!({"Name": "Retries", "Unit": "Count"}),
    ];
    let mut doc = serde_json::json!({
        "Source": source.as_str(),
        "Stream": stream,
        "Messages": m.messages,
        "Bytes": m.bytes,
        "Skipped": m.skipped,
        "DeadLetters": m.dead_letters,
        "Errors": m.errors,
        "CursorRestarts": m.cursor_restarts,
        "UndecodableAggregates": m.undecodable_aggregates,
        "ShardsTrimmed": m.shards_trimmed,
        "Retries": retries,
    });
    if let Some(lag) = m.lag_ms {
        let name = match source {
            Source::Kinesis => "IteratorAgeMilliseconds",
            _ => "OffsetLagMilliseconds",
        };
        metrics.push(serde_json::json!({"Name": name, "Unit": "Milliseconds"}));
        doc[name] = lag.into();
    }
    doc["_aws"] = serde_json::json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [["Source", "Stream"]],
            "Metrics": metrics,
        }],
    });
    doc.to_string()
}

/// A delivery arrived; records its lag.
#[derive(Debug)]
pub struct BatchReceived<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// Records delivered for it.
    pub records: usize,
    /// Lag in ms (see [`StreamMetrics::lag_ms`]).
    pub lag_ms: Option<i64>,
    /// The run id.
    pub run_id: &'a str,
}

impl BatchReceived<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::debug!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, records = self.records,
            lag_ms = self.lag_ms, run_id = self.run_id, "batch received"
        );
        if let Some(lag) = self.lag_ms {
            metrics.update(self.partition, |m| {
                m.lag_ms = Some(m.lag_ms.map_or(lag, |l| l.max(lag)))
            });
        }
    }
}

/// Records were landed and committed.
#[derive(Debug)]
pub struct RecordsLanded<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// First cursor of the committed range.
    pub first: &'a str,
    /// Last cursor of the committed range (the new checkpoint).
    pub last: &'a str,
    /// Records in the object.
    pub records: u64,
    /// Payload bytes in the object.
    pub bytes: u64,
    /// Records of the range dead-lettered.
    pub dead_lettered: u64,
    /// The object, if any.
    pub object_key: Option<&'a str>,
    /// Whether an object left by an earlier attempt was adopted instead of written.
    pub adopted: bool,
    /// The run id.
    pub run_id: &'a str,
}

impl RecordsLanded<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition,
            cursor = crate::cursor::display(self.partition.source, self.last),
            first = crate::cursor::display(self.partition.source, self.first),
            records = self.records, bytes = self.bytes, dead_lettered = self.dead_lettered,
            object_key = self.object_key, adopted = self.adopted, run_id = self.run_id,
            "records landed and committed"
        );
        metrics.update(self.partition, |m| {
            m.messages += self.records;
            m.bytes += self.bytes;
        });
    }
}

/// Records at or below the checkpoint were skipped.
#[derive(Debug)]
pub struct AlreadyLanded<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// Records skipped.
    pub skipped: u64,
    /// The checkpoint they were at or below.
    pub checkpoint: &'a str,
    /// The run id.
    pub run_id: &'a str,
}

impl AlreadyLanded<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, cursor = self.checkpoint,
            skipped = self.skipped, run_id = self.run_id, "records already landed, skipped"
        );
        metrics.update(self.partition, |m| m.skipped += self.skipped);
    }
}

/// A poison record went to the DLQ.
#[derive(Debug)]
pub struct RecordDeadLettered<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// The record's cursor.
    pub cursor: &'a str,
    /// SHA-256 of the record key, if any (never the key itself).
    pub key_hash: Option<&'a str>,
    /// Why it cannot land.
    pub reason: &'a str,
    /// Whether its payload went to S3 because it is too large for SQS.
    pub payload_in_s3: bool,
    /// The run id.
    pub run_id: &'a str,
}

impl RecordDeadLettered<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, cursor = self.cursor,
            key_hash = self.key_hash, reason = self.reason, payload_in_s3 = self.payload_in_s3,
            run_id = self.run_id, "poison record sent to the dead-letter queue"
        );
        metrics.update(self.partition, |m| m.dead_letters += 1);
    }
}

/// A partition could not be landed in this invocation; nothing from `cursor` on is committed.
#[derive(Debug)]
pub struct LandingFailed<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// The first cursor not landed.
    pub cursor: &'a str,
    /// The error.
    pub error: &'a str,
    /// Whether a retry can succeed.
    pub transient: bool,
    /// The run id.
    pub run_id: &'a str,
}

impl LandingFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::error!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, cursor = self.cursor,
            error = self.error, transient = self.transient, run_id = self.run_id,
            "landing failed; nothing from this cursor on is committed"
        );
        metrics.update(self.partition, |m| m.errors += 1);
    }
}

/// A delivery holds a different record at a cursor that is already landed: the source's
/// cursors restarted (a recreated topic, a mapping pointed at another cluster).
#[derive(Debug)]
pub struct CursorRestartDetected<'a> {
    /// The partition.
    pub partition: &'a PartitionId,
    /// The stored checkpoint (display form).
    pub checkpoint: &'a str,
    /// What shows the restart.
    pub evidence: &'a str,
    /// The run id.
    pub run_id: &'a str,
}

impl CursorRestartDetected<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::error!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, checkpoint = self.checkpoint,
            evidence = self.evidence, run_id = self.run_id,
            "source cursors restarted below the checkpoint: refusing to skip records as already landed"
        );
        metrics.update(self.partition, |m| m.cursor_restarts += 1);
    }
}

/// A Kinesis record starts with the KPL magic bytes but is not a valid aggregate (digest
/// mismatch, undecodable protobuf, a key index outside its tables): it lands whole, as the
/// raw record, which is what AWS's deaggregators do.
#[derive(Debug)]
pub struct AggregateUndecodable<'a> {
    /// The shard.
    pub partition: &'a PartitionId,
    /// The record's cursor (display form).
    pub cursor: &'a str,
    /// What is wrong with it.
    pub reason: &'a str,
    /// The run id.
    pub run_id: &'a str,
}

impl AggregateUndecodable<'_> {
    /// Logs and counts the event.
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, cursor = self.cursor,
            reason = self.reason, run_id = self.run_id,
            "record has the KPL magic bytes but does not deaggregate: landing it whole"
        );
        metrics.update(self.partition, |m| m.undecodable_aggregates += 1);
    }
}

/// A Kinesis shard with an unfinished lease is no longer in the stream: it was trimmed after
/// the retention period before anyone read it to its end. Its lease is finished so that its
/// children are read; what it held after the checkpoint cannot be read by anyone any more.
#[derive(Debug)]
pub struct ShardTrimmed<'a> {
    /// The shard.
    pub partition: &'a PartitionId,
    /// Its checkpoint (display form), if any: the last record landed from it.
    pub checkpoint: Option<&'a str>,
    /// Whether a child of the shard has a checkpoint: the other consumer of the stream (the
    /// Lambda event source mapping reads a parent to its end before its children) finished
    /// the shard, so nothing was lost.
    pub read_by_another_consumer: bool,
    /// What Kinesis answered.
    pub refusal: &'a str,
    /// The run id.
    pub run_id: &'a str,
}

impl ShardTrimmed<'_> {
    /// Logs the event; counts it when records may have been lost.
    pub fn emit(&self, metrics: &Metrics) {
        if self.read_by_another_consumer {
            tracing::warn!(
                source = %self.partition.source, stream = %self.partition.stream,
                partition = %self.partition.partition, checkpoint = self.checkpoint,
                refusal = self.refusal, run_id = self.run_id,
                "shard trimmed from the stream; a child of it has a checkpoint, so it was read to its end by the stream's other consumer: finishing its lease"
            );
            return;
        }
        tracing::error!(
            source = %self.partition.source, stream = %self.partition.stream,
            partition = %self.partition.partition, checkpoint = self.checkpoint,
            refusal = self.refusal, run_id = self.run_id,
            "shard trimmed from the stream before it was read to its end: records after the checkpoint, if there were any, are lost upstream; finishing its lease so that its children are read"
        );
        metrics.update(self.partition, |m| m.shards_trimmed += 1);
    }
}

/// Sets up JSON logs on stdout (for Lambda and the runner). `RUST_LOG` filters; default `info`.
pub fn init_json_logs() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_has_metrics_and_dimensions() {
        let m = Metrics::default();
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-0");
        BatchReceived {
            partition: &id,
            records: 3,
            lag_ms: Some(1500),
            run_id: "r",
        }
        .emit(&m);
        RecordsLanded {
            partition: &id,
            first: "1",
            last: "3",
            records: 2,
            bytes: 20,
            dead_lettered: 1,
            object_key: Some("k"),
            adopted: false,
            run_id: "r",
        }
        .emit(&m);
        RecordDeadLettered {
            partition: &id,
            cursor: "2",
            key_hash: None,
            reason: "x",
            payload_in_s3: false,
            run_id: "r",
        }
        .emit(&m);
        m.add_retries(2);
        let lines = m.emf_lines(1000);
        assert_eq!(lines.len(), 1);
        let doc: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(doc["Messages"], 2);
        assert_eq!(doc["Bytes"], 20);
        assert_eq!(doc["DeadLetters"], 1);
        assert_eq!(doc["Retries"], 2);
        assert_eq!(doc["IteratorAgeMilliseconds"], 1500);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][1],
            "Stream"
        );
        let names: Vec<_> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_owned())
            .collect();
        for name in names {
            assert!(doc.get(&name).is_some(), "metric {name} has no value");
        }
    }

    #[test]
    fn a_trimmed_shard_is_counted_only_when_records_may_be_lost() {
        let m = Metrics::default();
        let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000007");
        let trimmed = |read_by_another_consumer| ShardTrimmed {
            partition: &id,
            checkpoint: Some("4959"),
            read_by_another_consumer,
            refusal: "ResourceNotFoundException",
            run_id: "r",
        };
        trimmed(true).emit(&m);
        assert_eq!(m.stream(Source::Kinesis, "clicks").shards_trimmed, 0);
        trimmed(false).emit(&m);
        assert_eq!(m.stream(Source::Kinesis, "clicks").shards_trimmed, 1);
        let doc: serde_json::Value = serde_json::from_str(&m.emf_lines(1000)[0]).unwrap();
        assert_eq!(doc["ShardsTrimmed"], 1);
    }
}
