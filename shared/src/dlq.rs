//! Dead letters: everything needed to understand and replay a record that cannot land.

use crate::cursor::Cursor;
use crate::record::{PartitionId, Record};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// SQS accepts messages up to 256 KiB; letters above this size carry an S3 pointer instead
/// of the inline payload (leaving room for attributes).
pub const MAX_INLINE_LETTER_BYTES: usize = 240 * 1024;

/// Why a dead letter could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The letter could not be serialized (should never happen; kept for completeness).
    #[error("{partition} cursor {cursor}: cannot serialize dead letter: {source}")]
    Serialize {
        /// Where the record came from.
        partition: String,
        /// Its cursor.
        cursor: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// One dead letter as sent to the queue (JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Deterministic id `source/stream/partition/cursor`: a redelivered poison record yields
    /// the same id, so DLQ consumers can drop repeats.
    pub id: String,
    /// `kafka`, `kinesis` or `pulsar`.
    pub source: String,
    /// Topic or stream name.
    pub stream: String,
    /// Partition number or shard id.
    pub partition: String,
    /// The record's cursor (offset or sequence number), in its display form.
    pub cursor: String,
    /// The record key as base64, if any.
    pub key_base64: Option<String>,
    /// Why the record cannot land.
    pub reason: String,
    /// How many landing attempts this run made before giving up on the record.
    pub attempts: u32,
    /// The run (Lambda request id) that gave up.
    pub run_id: String,
    /// When it gave up (RFC 3339).
    pub failed_at: String,
    /// The record's own timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The raw payload as base64, when it fits in the message.
    pub payload_base64: Option<String>,
    /// `s3://bucket/key` of the raw payload, when it is too large for the message.
    pub payload_s3: Option<String>,
    /// Size of the raw payload in bytes.
    pub payload_bytes: usize,
    /// Kafka headers or similar, base64 values.
    pub headers: Vec<(String, Option<String>)>,
}

impl DeadLetter {
    /// Builds the letter for `record` with the payload inline.
    pub fn new<C: Cursor>(
        id: &PartitionId,
        record: &Record<C>,
        reason: String,
        run_id: &str,
        now_ms: i64,
    ) -> Self {
        let payload = record.payload.as_deref().unwrap_or_default();
        DeadLetter {
            id: format!(
                "{}/{}/{}/{}",
                id.source, id.stream, id.partition, record.cursor
            ),
            source: id.source.to_string(),
            stream: id.stream.clone(),
            partition: id.partition.clone(),
            cursor: record.cursor.to_string(),
            key_base64: record.key.as_deref().map(|k| B64.encode(k)),
            reason,
            attempts: 1,
            run_id: run_id.to_owned(),
            failed_at: chrono::DateTime::from_timestamp_millis(now_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            timestamp_ms: record.timestamp_ms,
            payload_base64: Some(B64.encode(payload)),
            payload_s3: None,
            payload_bytes: payload.len(),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_deref().map(|v| B64.encode(v))))
                .collect(),
        }
    }

    /// Serializes the letter.
    pub fn to_json(&self) -> Result<String, DlqError> {
        serde_json::to_string(self).map_err(|source| DlqError::Serialize {
            partition: format!("{}/{}/{}", self.source, self.stream, self.partition),
            cursor: self.cursor.clone(),
            source,
        })
    }

    /// True when the serialized letter is too large to go inline.
    pub fn too_large(body: &str) -> bool {
        body.len() > MAX_INLINE_LETTER_BYTES
    }

    /// Replaces the inline payload with a pointer to its S3 copy.
    pub fn point_to(&mut self, url: String) {
        self.payload_base64 = None;
        self.payload_s3 = Some(url);
    }

    /// Decodes the inline payload (for replay tools and tests).
    pub fn payload(&self) -> Option<Vec<u8>> {
        self.payload_base64
            .as_deref()
            .and_then(|p| B64.decode(p).ok())
    }
}
