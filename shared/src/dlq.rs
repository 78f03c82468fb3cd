//! Dead letters: everything needed to understand and replay a record that cannot land.

use crate::cursor::Cursor;
use crate::record::{PartitionId, Record};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// SQS accepts messages up to 256 KiB; letters above this size carry an S3 pointer instead
/// of the inline payload (leaving room for attributes).
pub const MAX_INLINE_LETTER_BYTES: usize = 240 * 1024;

/// The longest `reason` a letter carries, in bytes: reasons come from parsers and
/// registries and are bounded so that a letter stays small and predictable.
pub const MAX_REASON_BYTES: usize = 1024;

/// Cuts `reason` to [`MAX_REASON_BYTES`] at a character boundary, saying that it did.
pub fn bound_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES - 16;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(" …(truncated)");
    }
    reason
}

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
    /// The record's cursor in its display form: Kafka offset, Kinesis sequence number (`<sequence>:<sub>` for a KPL user record) or Pulsar `ledger:entry:batch`.
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
    /// The record had no payload at all (a Kafka tombstone), not an empty one: its
    /// `payload_base64` is empty either way, and a replay must produce a tombstone. Omitted
    /// when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
    /// Kafka headers or similar, base64 values.
    pub headers: Vec<(String, Option<String>)>,
    /// The exact bytes, as base64, of each header name that is not UTF-8 (a Kafka header
    /// name is a string, so such a record cannot land): `(index in headers, name)`; the
    /// name in `headers` holds replacement characters. Omitted when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_keys_base64: Vec<(usize, String)>,
    /// `s3://bucket/key` of a JSON object `{"key_base64", "headers"}`, when even without
    /// its payload the letter is too large for the queue (very large keys or headers);
    /// `key_base64` and `headers` are then empty here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_s3: Option<String>,
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
            reason: bound_reason(reason),
            attempts: 1,
            run_id: run_id.to_owned(),
            failed_at: chrono::DateTime::from_timestamp_millis(now_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            timestamp_ms: record.timestamp_ms,
            payload_base64: Some(B64.encode(payload)),
            payload_s3: None,
            payload_bytes: payload.len(),
            tombstone: record.payload.is_none(),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_deref().map(|v| B64.encode(v))))
                .collect(),
            header_keys_base64: record
                .headers
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.raw_key.as_deref().map(|k| (i, B64.encode(k))))
                .collect(),
            envelope_s3: None,
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

    /// The key and headers as a JSON object, for the S3 copy when they are too large.
    pub fn envelope_json(&self) -> String {
        let mut envelope =
            serde_json::json!({"key_base64": self.key_base64, "headers": self.headers});
        if !self.header_keys_base64.is_empty() {
            envelope["header_keys_base64"] = serde_json::json!(self.header_keys_base64);
        }
        envelope.to_string()
    }

    /// Replaces the inline key and headers with a pointer to their S3 copy.
    pub fn point_envelope_to(&mut self, url: String) {
        self.key_base64 = None;
        self.headers.clear();
        self.header_keys_base64.clear();
        self.envelope_s3 = Some(url);
    }

    /// Decodes the inline payload (for replay tools and tests): empty for a tombstone, see
    /// [`Self::tombstone`].
    pub fn payload(&self) -> Option<Vec<u8>> {
        self.payload_base64
            .as_deref()
            .and_then(|p| B64.decode(p).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::KafkaOffset;
    use crate::record::{Header, Source};

    #[test]
    fn reasons_are_bounded_at_a_char_boundary() {
        assert_eq!(bound_reason("short".into()), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let bounded = bound_reason(long);
        assert!(bounded.len() <= MAX_REASON_BYTES, "{}", bounded.len());
        assert!(bounded.ends_with("(truncated)"));
    }

    #[test]
    fn huge_headers_move_out_so_the_letter_fits() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let record = Record {
            cursor: KafkaOffset(3),
            key: Some(vec![b'k'; 100 * 1024]),
            headers: vec![Header {
                key: "h".into(),
                value: Some(vec![1; 300 * 1024]),
                raw_key: None,
            }],
            timestamp_ms: None,
            payload: Some(vec![2; 10]),
            defect: None,
            schema_id: None,
        };
        let mut letter = DeadLetter::new(&id, &record, "x".repeat(5000), "r", 0);
        assert!(letter.reason.len() <= MAX_REASON_BYTES);
        letter.point_to("s3://b/p.bin".into());
        assert!(DeadLetter::too_large(&letter.to_json().unwrap()));
        let envelope = letter.envelope_json();
        letter.point_envelope_to("s3://b/p.bin.envelope.json".into());
        let body = letter.to_json().unwrap();
        assert!(!DeadLetter::too_large(&body), "{}", body.len());
        let back: serde_json::Value = serde_json::from_str(&envelope).unwrap();
        assert_eq!(back["headers"][0][0], "h");
    }

    #[test]
    fn a_tombstone_is_told_from_an_empty_payload() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let record = |payload: Option<Vec<u8>>| Record {
            cursor: KafkaOffset(3),
            key: Some(b"k".to_vec()),
            headers: vec![],
            timestamp_ms: None,
            payload,
            defect: Some("header key not UTF-8".into()),
            schema_id: None,
        };
        let tombstone = DeadLetter::new(&id, &record(None), "r".into(), "run", 0);
        let empty = DeadLetter::new(&id, &record(Some(vec![])), "r".into(), "run", 0);
        assert!(tombstone.tombstone && !empty.tombstone);
        let json: serde_json::Value = serde_json::from_str(&tombstone.to_json().unwrap()).unwrap();
        assert_eq!(json["tombstone"], true);
        assert_eq!(json["payload_bytes"], 0);
        let body = empty.to_json().unwrap();
        assert!(!body.contains("tombstone"), "{body}");
        // A letter written before the field reads as no tombstone.
        let back: DeadLetter = serde_json::from_str(&body).unwrap();
        assert_eq!(back, empty);
    }

    /// Defect 10: a header name that is not UTF-8 reaches the letter byte for byte.
    #[test]
    fn header_names_that_are_not_utf8_keep_their_bytes() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let header = |key: &str, raw_key: Option<&[u8]>| Header {
            key: key.into(),
            value: Some(b"v".to_vec()),
            raw_key: raw_key.map(<[u8]>::to_vec),
        };
        let mut record = Record {
            cursor: KafkaOffset(3),
            key: None,
            headers: vec![header("ok", None), header("\u{fffd}k", Some(b"\xffk"))],
            timestamp_ms: None,
            payload: Some(b"{}".to_vec()),
            defect: Some("header key not UTF-8".into()),
            schema_id: None,
        };
        let letter = DeadLetter::new(&id, &record, "r".into(), "run", 0);
        assert_eq!(letter.header_keys_base64, vec![(1, B64.encode(b"\xffk"))]);
        let json: serde_json::Value = serde_json::from_str(&letter.to_json().unwrap()).unwrap();
        assert_eq!(json["header_keys_base64"], serde_json::json!([[1, "/2s="]]));
        let back: DeadLetter = serde_json::from_value(json).unwrap();
        assert_eq!(back, letter);
        let envelope: serde_json::Value = serde_json::from_str(&letter.envelope_json()).unwrap();
        assert_eq!(
            envelope["header_keys_base64"],
            serde_json::json!([[1, "/2s="]])
        );

        // Without such a name the field is left out, as before.
        record.headers.truncate(1);
        let body = DeadLetter::new(&id, &record, "r".into(), "run", 0)
            .to_json()
            .unwrap();
        assert!(!body.contains("header_keys_base64"), "{body}");
        let old: DeadLetter = serde_json::from_str(&body).unwrap();
        assert!(old.header_keys_base64.is_empty());
    }
}
