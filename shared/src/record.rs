//! Source records, partition identity, grouping by partition and the skip decision.

use crate::cursor::Cursor;
use std::fmt;

/// Which kind of streaming platform a record came from. It is part of every object key
/// and every checkpoint key, so Lambda consumers and the runner share checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Apache Kafka: Amazon MSK and self-managed clusters alike.
    Kafka,
    /// Amazon Kinesis Data Streams.
    Kinesis,
    /// Apache Pulsar.
    Pulsar,
}

impl Source {
    /// The lower-case name used in keys, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kafka => "kafka",
            Source::Kinesis => "kinesis",
            Source::Pulsar => "pulsar",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short fingerprint of a record's identity (its key and payload): the first 16 bytes of
/// SHA-256 over the length-prefixed key and the payload, in hex. Stored with each commit for
/// its last record, so a different record delivered at a landed cursor is recognised.
pub fn fingerprint<C>(record: &Record<C>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    match &record.key {
        Some(k) => {
            h.update([1u8]);
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
        }
        None => h.update([0u8]),
    }
    match &record.payload {
        Some(p) => {
            h.update([1u8]);
            h.update(p);
        }
        None => h.update([0u8]),
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The unit of ordering and of checkpointing: one partition (Kafka) or shard (Kinesis)
/// of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// The platform.
    pub source: Source,
    /// Topic (Kafka, Pulsar) or stream name (Kinesis).
    pub stream: String,
    /// Partition number (Kafka, Pulsar) or shard id (Kinesis).
    pub partition: String,
}

impl PartitionId {
    /// Builds a partition id.
    pub fn new(source: Source, stream: impl Into<String>, partition: impl Into<String>) -> Self {
        Self {
            source,
            stream: stream.into(),
            partition: partition.into(),
        }
    }

    /// The state-table partition key: `source#stream#partition`.
    pub fn state_key(&self) -> String {
        format!("{}#{}#{}", self.source, self.stream, self.partition)
    }

    /// Reads a [`Self::state_key`] back (`None` for a key this connector did not write).
    pub fn from_state_key(key: &str) -> Option<Self> {
        let (source, rest) = key.split_once('#')?;
        let (stream, partition) = rest.rsplit_once('#')?;
        let source = match source {
            "kafka" => Source::Kafka,
            "kinesis" => Source::Kinesis,
            "pulsar" => Source::Pulsar,
            _ => return None,
        };
        (!stream.is_empty() && !partition.is_empty()).then(|| Self::new(source, stream, partition))
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.stream, self.partition)
    }
}

/// One record header. Kafka headers are byte arrays; a header may also carry no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Raw header bytes.
    pub value: Option<Vec<u8>>,
    /// The name's exact bytes when they are not UTF-8 (`key` then holds them with
    /// replacement characters). Kafka header names are strings, so a source that sets this
    /// also marks the record poison; its dead letter carries these bytes.
    pub raw_key: Option<Vec<u8>>,
}

/// One source record, source-neutral. The payload is raw bytes exactly as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<C> {
    /// Position within the partition.
    pub cursor: C,
    /// Record key (Kafka key, Kinesis partition key), if any.
    pub key: Option<Vec<u8>>,
    /// Record headers in delivery order.
    pub headers: Vec<Header>,
    /// The record's own timestamp (producer or broker time, or Kinesis arrival time), in ms.
    pub timestamp_ms: Option<i64>,
    /// The payload bytes; `None` for a Kafka tombstone (null value).
    pub payload: Option<Vec<u8>>,
    /// Set by a source adapter that found the record unusable (e.g. a value that is not
    /// valid base64): the record is poison and goes to the DLQ with this reason.
    pub defect: Option<String>,
    /// The schema id the delivery carries beside the payload (the Kafka event's
    /// `valueSchemaMetadata.schemaId`), used when the payload itself is not framed.
    pub schema_id: Option<crate::registry::SchemaId>,
}

/// The records of one partition from one delivery, sorted by cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch<C> {
    /// Which partition.
    pub id: PartitionId,
    /// Records in strictly increasing cursor order.
    pub records: Vec<Record<C>>,
}

/// Groups records by partition. Partitions keep the order in which they first appear;
/// records within a partition are put in cursor order (a stable sort, so a delivery that
/// is already in order is untouched) and a cursor delivered twice in one batch is kept once.
pub fn group_by_partition<C: Cursor>(
    records: impl IntoIterator<Item = (PartitionId, Record<C>)>,
) -> Vec<PartitionBatch<C>> {
    let mut batches: Vec<PartitionBatch<C>> = Vec::new();
    let mut index: std::collections::HashMap<PartitionId, usize> = Default::default();
    for (id, record) in records {
        let slot = match index.get(&id) {
            Some(&slot) => slot,
            None => {
                index.insert(id.clone(), batches.len());
                batches.push(PartitionBatch {
                    id,
                    records: Vec::new(),
                });
                batches.len() - 1
            }
        };
        batches[slot].records.push(record);
    }
    for batch in &mut batches {
        if !batch.records.is_sorted_by(|a, b| a.cursor < b.cursor) {
            batch.records.sort_by(|a, b| a.cursor.cmp(&b.cursor));
            batch.records.dedup_by(|a, b| a.cursor == b.cursor);
        }
    }
    batches
}

/// Index of the first record that is not yet landed: the first whose cursor is above the
/// checkpoint ("last landed"). Records must be in cursor order. Returns `records.len()` when
/// everything is already landed.
pub fn first_unlanded<C: Cursor>(records: &[Record<C>], checkpoint: Option<&C>) -> usize {
    match checkpoint {
        None => 0,
        Some(done) => records.partition_point(|r| &r.cursor <= done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::{KafkaOffset, SequenceNumber};

    fn rec<C>(cursor: C) -> Record<C> {
        Record {
            cursor,
            key: None,
            headers: vec![],
            timestamp_ms: None,
            payload: Some(b"{}".to_vec()),
            defect: None,
            schema_id: None,
        }
    }

    fn pid(p: &str) -> PartitionId {
        PartitionId::new(Source::Kafka, "orders", p)
    }

    #[test]
    fn grouping_keeps_partition_order_and_sorts_within() {
        let input = vec![
            (pid("1"), rec(KafkaOffset(10))),
            (pid("0"), rec(KafkaOffset(5))),
            (pid("1"), rec(KafkaOffset(11))),
            (pid("0"), rec(KafkaOffset(4))),
            (pid("0"), rec(KafkaOffset(4))),
        ];
        let groups = group_by_partition(input);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].id, pid("1"));
        let cursors = |g: &PartitionBatch<KafkaOffset>| {
            g.records.iter().map(|r| r.cursor.0).collect::<Vec<_>>()
        };
        assert_eq!(cursors(&groups[0]), vec![10, 11]);
        assert_eq!(cursors(&groups[1]), vec![4, 5]);
    }

    #[test]
    fn grouping_separates_same_partition_number_of_different_topics() {
        let a = PartitionId::new(Source::Kafka, "a", "0");
        let b = PartitionId::new(Source::Kafka, "b", "0");
        let groups = group_by_partition(vec![
            (a.clone(), rec(KafkaOffset(1))),
            (b, rec(KafkaOffset(1))),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].id, a);
    }

    #[test]
    fn skip_at_or_below_checkpoint() {
        let records: Vec<_> = [3u64, 4, 5, 6]
            .into_iter()
            .map(|o| rec(KafkaOffset(o)))
            .collect();
        assert_eq!(first_unlanded(&records, None), 0);
        assert_eq!(first_unlanded(&records, Some(&KafkaOffset(2))), 0);
        assert_eq!(first_unlanded(&records, Some(&KafkaOffset(3))), 1);
        assert_eq!(first_unlanded(&records, Some(&KafkaOffset(5))), 3);
        assert_eq!(first_unlanded(&records, Some(&KafkaOffset(6))), 4);
        assert_eq!(first_unlanded(&records, Some(&KafkaOffset(100))), 4);
    }

    #[test]
    fn skip_uses_numeric_order_for_long_sequence_numbers() {
        let s = |t: &str| t.parse::<SequenceNumber>().unwrap();
        let records = vec![
            rec(s(
                "99999999999999999999999999999999999999999999999999999998",
            )),
            rec(s(
                "99999999999999999999999999999999999999999999999999999999",
            )),
            rec(s(
                "100000000000000000000000000000000000000000000000000000000",
            )),
        ];
        let cp = s("99999999999999999999999999999999999999999999999999999999");
        assert_eq!(first_unlanded(&records, Some(&cp)), 2);
    }
}
