//! Bronze encoding (JSON Lines, compressed by [`crate::compress`]) and object keys.
//!
//! One line per landed record:
//!
//! ```json
//! {"source":"kafka","stream":"orders","partition":"0","cursor":"42","group":"commerce",
//!  "key":"user-1","key_encoding":"utf8","headers":[{"key":"trace","value":"abc"}],
//!  "timestamp":"2026-11-27T00:00:00.000Z","timestamp_ms":1795737600000,
//!  "run_id":"<lambda request id>","payload_encoding":"json","payload":{"id":1}}
//! ```
//!
//! `payload` holds JSON payloads inline; other payloads go to `payload_base64`.
//! Keys are pure functions of the data ([`object_key`]).

use crate::compress::{Codec, Compression};
use crate::config::{KeyStrategy, PayloadFormat, StreamSettings};
use crate::cursor::Cursor;
use crate::decode::{Decoded, DecodedValue};
use crate::record::{PartitionId, Record};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::value::RawValue;

/// Why a record cannot be landed. Every variant is permanent: the record is a poison message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BronzeError {
    /// The source adapter found the record unusable before encoding.
    #[error("{partition} cursor {cursor}: {detail}")]
    Defective {
        /// Where the record came from.
        partition: String,
        /// Its cursor.
        cursor: String,
        /// What the adapter found.
        detail: String,
    },
    /// The stream declares a schema and the payload does not match it (bad frame, unknown
    /// schema id, not decodable, not valid).
    #[error("{partition} cursor {cursor}: {detail}")]
    SchemaMismatch {
        /// Where the record came from.
        partition: String,
        /// Its cursor.
        cursor: String,
        /// The schema id and what does not match.
        detail: String,
    },
    /// The stream is declared `json` and the payload does not parse as JSON.
    #[error("{partition} cursor {cursor}: payload is not valid JSON: {detail}")]
    PayloadNotJson {
        /// Where the record came from.
        partition: String,
        /// Its cursor.
        cursor: String,
        /// The parser's message (line and column).
        detail: String,
    },
}

/// Where the writer starts a new compressed member: after the record that brings the
/// member's lines to this many bytes, not counting the run id (so the cut points are a
/// function of the records and the stream's settings alone, never of the run or of the
/// cores). 512 KiB lets a 5 MB batch use the 6 vCPUs of the largest Lambda function, and
/// costs gzip nothing measurable (its window is 32 KiB) and zstd under 1% (BENCHMARKS.md).
pub const MEMBER_TARGET_BYTES: usize = 512 * 1024;

/// Escapes one key path segment: keeps `[A-Za-z0-9._-]`, percent-encodes every other byte,
/// so a topic or shard name can never introduce `/` or `=` into the key layout.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key prefix under which all objects of one partition live (ends with `/`).
pub fn partition_prefix(prefix: &str, id: &PartitionId) -> String {
    format!(
        "{prefix}/source={}/stream={}/partition={}/",
        id.source,
        segment(&id.stream),
        segment(&id.partition)
    )
}

/// The object key for the records `first..=last` of one partition:
/// `<prefix>/source=<s>/stream=<stream>/partition=<p>/<first>-<last>.jsonl.gz` (`.jsonl.zst`
/// for zstd), with both cursors in their zero-padded sortable form. It depends on the data
/// (and the stream's format) alone, so a replay of the same range lands on the same key, and
/// keys list in cursor order.
pub fn object_key<C: Cursor>(
    prefix: &str,
    id: &PartitionId,
    first: &C,
    last: &C,
    codec: Codec,
) -> String {
    format!(
        "{}{}-{}{}",
        partition_prefix(prefix, id),
        first.sortable(),
        last.sortable(),
        codec.suffix()
    )
}

/// The key for records `first..=last` of one partition when another object of the same
/// range holds a different set of records (a record's verdict changed between attempts):
/// `<first>-<last>~<set>.jsonl.gz` (or `.jsonl.zst`), where `<set>` is a hash of the landed
/// cursors. Still a pure function of the data, and it never collides with the object it
/// stands beside.
pub fn object_key_for_set<C: Cursor>(
    prefix: &str,
    id: &PartitionId,
    first: &C,
    last: &C,
    set: &str,
    codec: Codec,
) -> String {
    format!(
        "{}{}-{}~{set}{}",
        partition_prefix(prefix, id),
        first.sortable(),
        last.sortable(),
        codec.suffix()
    )
}

/// Reads the sortable `(first, last)` cursors back out of an object key made by [`object_key`]
/// or [`object_key_for_set`], in either format (a stream's format may change between
/// objects).
pub fn parse_object_range(key: &str) -> Option<(&str, &str)> {
    let name = key.rsplit('/').next()?;
    let name = name.strip_suffix(Codec::of_key(name)?.suffix())?;
    let name = name.split_once('~').map_or(name, |(range, _)| range);
    let (first, last) = name.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(first) && digits(last)).then_some((first, last))
}

/// The key of the S3 copy of a dead letter's payload, when it is too large for SQS.
pub fn dead_letter_payload_key<C: Cursor>(prefix: &str, id: &PartitionId, cursor: &C) -> String {
    format!(
        "{prefix}/_dead_letters/source={}/stream={}/partition={}/{}.bin",
        id.source,
        segment(&id.stream),
        segment(&id.partition),
        cursor.sortable()
    )
}

#[derive(Serialize)]
struct LineHeader<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// A value serialised as the JSON string of its `Display` text, written straight into the
/// line (serde's `collect_str`: no `String` per record).
struct Shown<'a, T: std::fmt::Display>(&'a T);

impl<T: std::fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

#[derive(Serialize)]
#[serde(bound = "")]
struct Line<'a, C: Cursor> {
    source: &'a str,
    stream: &'a str,
    partition: &'a str,
    cursor: Shown<'a, C>,
    group: Option<&'a str>,
    key: Option<std::borrow::Cow<'a, str>>,
    key_encoding: Option<&'static str>,
    headers: Vec<LineHeader<'a>>,
    timestamp: Option<String>,
    timestamp_ms: Option<i64>,
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_version: Option<u32>,
    payload_encoding: &'static str,
    /// A decoded value; raw JSON payloads are appended after serialisation instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// How a payload will be written.
enum Payload<'a> {
    /// The producer's bytes, a valid JSON text (surrounding whitespace included), written
    /// inline as they are; raw CR and LF become spaces (see [`write_raw_json`]).
    Json(&'a [u8]),
    /// A payload checked against the stream's schema: decoded Avro, or a JSON text written
    /// inline as it is, like [`Payload::Json`].
    Decoded(&'a Decoded),
    /// Any other bytes, base64-encoded.
    Base64,
    /// No payload (a tombstone).
    Null,
}

/// Decides how a payload is written, or why it cannot be. Pure and panic-free for any
/// bytes: JSON validity is checked by `serde_json`'s raw-value scanner, which has no
/// recursion limit and does not convert numbers, so every valid JSON text (deep nesting,
/// numbers beyond f64, duplicate keys) is accepted and kept as it is.
fn classify_payload<'a, C: Cursor>(
    id: &PartitionId,
    record: &'a Record<C>,
    format: PayloadFormat,
) -> Result<Payload<'a>, BronzeError> {
    if let Some(detail) = &record.defect {
        return Err(BronzeError::Defective {
            partition: id.to_string(),
            cursor: record.cursor.to_string(),
            detail: detail.clone(),
        });
    }
    let Some(bytes) = record.payload.as_deref() else {
        return Ok(Payload::Null);
    };
    if format == PayloadFormat::Bytes {
        return Ok(Payload::Base64);
    }
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(_) => Ok(Payload::Json(bytes)),
        Err(_) if format == PayloadFormat::Auto => Ok(Payload::Base64),
        Err(e) => Err(BronzeError::PayloadNotJson {
            partition: id.to_string(),
            cursor: record.cursor.to_string(),
            detail: e.to_string(),
        }),
    }
}

/// Appends a valid JSON text to a line byte for byte, except that raw CR and LF become
/// spaces so the record stays on one line. This is lossless: in valid JSON a raw CR or LF
/// can only be whitespace between tokens (inside strings they must be escaped), so no
/// value changes.
fn write_raw_json(out: &mut Vec<u8>, json: &[u8]) {
    // Most payloads have no raw CR or LF: one search (memchr's SIMD) and one copy.
    let mut rest = json;
    while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
        out.extend_from_slice(&rest[..at]);
        out.push(b' ');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// Checks whether a record can be landed under `settings`, without encoding it.
pub fn check_record<C: Cursor>(
    id: &PartitionId,
    record: &Record<C>,
    settings: &StreamSettings,
) -> Result<(), BronzeError> {
    classify_payload(id, record, settings.payload_format).map(|_| ())
}

/// Hex SHA-256 of a key, for logs and the `sha256` key strategy.
pub fn key_hash(key: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode_key(
    key: Option<&[u8]>,
    strategy: KeyStrategy,
) -> (Option<std::borrow::Cow<'_, str>>, Option<&'static str>) {
    let Some(key) = key else { return (None, None) };
    match strategy {
        KeyStrategy::Drop => (None, None),
        KeyStrategy::Sha256 => (Some(key_hash(key).into()), Some("sha256")),
        KeyStrategy::Base64 => (Some(B64.encode(key).into()), Some("base64")),
        KeyStrategy::Raw => match std::str::from_utf8(key) {
            Ok(text) => (Some(text.into()), Some("utf8")),
            Err(_) => (Some(B64.encode(key).into()), Some("base64")),
        },
    }
}

fn format_timestamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Encodes the records of one partition into the JSON Lines of one object, cut into members
/// of about [`MEMBER_TARGET_BYTES`] at record boundaries; [`crate::compress`] compresses them.
pub struct BronzeWriter<'a> {
    id: &'a PartitionId,
    settings: &'a StreamSettings,
    run_id: &'a str,
    /// Finished members.
    members: Vec<Vec<u8>>,
    /// The member being written.
    current: Vec<u8>,
    /// Run-id bytes in `current` (its lines' length without them decides the cut).
    current_run_id_bytes: usize,
    records: u64,
    raw_bytes: u64,
}

impl std::fmt::Debug for BronzeWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BronzeWriter")
            .field("partition", &self.id.to_string())
            .field("records", &self.records)
            .finish()
    }
}

impl<'a> BronzeWriter<'a> {
    /// Starts an object for one partition; `capacity_hint` (the expected size of its lines)
    /// sizes the member buffers.
    pub fn new(
        id: &'a PartitionId,
        settings: &'a StreamSettings,
        run_id: &'a str,
        capacity_hint: usize,
    ) -> Self {
        Self {
            id,
            settings,
            run_id,
            members: Vec::with_capacity(capacity_hint / MEMBER_TARGET_BYTES + 1),
            current: Vec::with_capacity(Self::member_capacity(capacity_hint)),
            current_run_id_bytes: 0,
            records: 0,
            raw_bytes: 0,
        }
    }

    fn member_capacity(hint: usize) -> usize {
        hint.min(MEMBER_TARGET_BYTES) + 16 * 1024
    }

    /// Appends one record, or returns why it is poison (and writes nothing).
    pub fn push<C: Cursor>(&mut self, record: &Record<C>) -> Result<(), BronzeError> {
        self.push_checked(record, None)
    }

    /// Appends one record of a stream with a schema, given the schema check's verdict
    /// (`None` when there is nothing to check), or returns why it is poison.
    pub fn push_checked<C: Cursor>(
        &mut self,
        record: &Record<C>,
        verdict: Option<&Result<Decoded, String>>,
    ) -> Result<(), BronzeError> {
        let payload = match verdict {
            _ if record.defect.is_some() => {
                classify_payload(self.id, record, self.settings.payload_format)?
            }
            Some(Err(detail)) => {
                return Err(BronzeError::SchemaMismatch {
                    partition: self.id.to_string(),
                    cursor: record.cursor.to_string(),
                    detail: detail.clone(),
                });
            }
            Some(Ok(decoded)) => Payload::Decoded(decoded),
            None => classify_payload(self.id, record, self.settings.payload_format)?,
        };
        let (key, key_encoding) = encode_key(record.key.as_deref(), self.settings.key_strategy);
        let headers = record
            .headers
            .iter()
            .map(|h| {
                let text = h.value.as_deref().and_then(|v| std::str::from_utf8(v).ok());
                LineHeader {
                    key: &h.key,
                    value: text,
                    value_base64: match (text, &h.value) {
                        (None, Some(v)) => Some(B64.encode(v)),
                        _ => None,
                    },
                }
            })
            .collect();
        let (payload_encoding, payload_json, payload_base64) = match &payload {
            Payload::Json(_) => ("json", None, None),
            Payload::Decoded(d) => (
                d.encoding(),
                match &d.value {
                    DecodedValue::Avro(value) => Some(value),
                    DecodedValue::Json(_) => None,
                },
                None,
            ),
            Payload::Base64 => (
                "base64",
                None,
                record.payload.as_deref().map(|p| B64.encode(p)),
            ),
            Payload::Null => ("null", None, None),
        };
        let line = Line {
            source: self.id.source.as_str(),
            stream: &self.id.stream,
            partition: &self.id.partition,
            cursor: Shown(&record.cursor),
            group: self.settings.group.as_deref(),
            key,
            key_encoding,
            headers,
            timestamp: record.timestamp_ms.and_then(format_timestamp),
            timestamp_ms: record.timestamp_ms,
            run_id: self.run_id,
            schema_id: match &payload {
                Payload::Decoded(d) => Some(d.schema_id.as_str()),
                _ => None,
            },
            schema_version: match &payload {
                Payload::Decoded(d) => Some(d.schema_version),
                _ => None,
            },
            payload_encoding,
            payload: payload_json,
            payload_base64,
        };
        // Written straight into the member: nothing below can fail half-way.
        let out = &mut self.current;
        serde_json::to_writer(&mut *out, &line)
            .expect("a Line has only string keys, so serialising it to a Vec cannot fail");
        let raw_json = match &payload {
            Payload::Json(json) => Some(*json),
            Payload::Decoded(Decoded {
                value: DecodedValue::Json(json),
                ..
            }) => Some(json.as_slice()),
            _ => None,
        };
        if let Some(json) = raw_json {
            // `payload` is the last field written: reopen the object and append it as is.
            out.pop();
            out.extend_from_slice(b",\"payload\":");
            write_raw_json(out, json);
            out.push(b'}');
        }
        out.push(b'\n');
        self.current_run_id_bytes += self.run_id.len();
        if self.current.len() - self.current_run_id_bytes >= MEMBER_TARGET_BYTES {
            let next = Vec::with_capacity(self.current.capacity());
            self.members
                .push(std::mem::replace(&mut self.current, next));
            self.current_run_id_bytes = 0;
        }
        self.records += 1;
        self.raw_bytes += record.payload.as_ref().map_or(0, |p| p.len() as u64);
        Ok(())
    }

    /// How many records were appended.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Sum of the appended payload sizes, before encoding.
    pub fn payload_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Takes the members completed so far (in order), so they can be compressed while the
    /// writer goes on; [`Self::into_members`] then returns only the rest.
    pub fn take_finished(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.members)
    }

    /// The object's uncompressed members, in order (none when nothing was appended), for
    /// [`crate::compress::compress`].
    pub fn into_members(mut self) -> Vec<Vec<u8>> {
        if !self.current.is_empty() {
            self.members.push(self.current);
        }
        self.members
    }

    /// Compresses the object with the stream's compression (on the current rayon pool) and
    /// returns its body.
    pub fn finish(self) -> Vec<u8> {
        let compression: Compression = self.settings.compression;
        crate::compress::compress(self.into_members(), compression)
    }
}

/// Decompresses a Bronze object (gzip or zstd, every member) into its lines (without the
/// newlines), for byte-level readers and tests.
pub fn read_raw_lines(body: &[u8]) -> Result<Vec<String>, std::io::Error> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(crate::compress::decompressed(body)?);
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if !line.is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// Decompresses and parses a Bronze object, for readers, audits and tests. Each field is
/// parsed on its own, so a payload nested deeper than `serde_json`'s recursion limit (128)
/// does not make the line unreadable: that field is returned as a string holding its JSON
/// text.
pub fn read_lines(body: &[u8]) -> Result<Vec<serde_json::Value>, std::io::Error> {
    read_raw_lines(body)?
        .iter()
        .map(|line| parse_line(line).map_err(std::io::Error::other))
        .collect()
}

fn parse_line(line: &str) -> Result<serde_json::Value, serde_json::Error> {
    let fields: Vec<(String, Box<RawValue>)> =
        serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(line)?
            .into_iter()
            .collect();
    let mut out = serde_json::Map::new();
    for (name, raw) in fields {
        let value = serde_json::from_str(raw.get())
            .unwrap_or_else(|_| serde_json::Value::String(raw.get().to_owned()));
        out.insert(name, value);
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::{KafkaOffset, SequenceNumber};
    use crate::record::{Header, Source};

    fn settings(format: PayloadFormat) -> StreamSettings {
        StreamSettings {
            group: Some("g".into()),
            payload_format: format,
            key_strategy: KeyStrategy::Raw,
            parallelization_factor: 1,
            schema: None,
            compression: Compression::default(),
        }
    }

    #[test]
    fn key_is_a_pure_function_of_the_data() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let k1 = object_key("bronze", &id, &KafkaOffset(7), &KafkaOffset(9), Codec::Gzip);
        let k2 = object_key("bronze", &id, &KafkaOffset(7), &KafkaOffset(9), Codec::Gzip);
        assert_eq!(k1, k2);
        assert_eq!(
            k1,
            "bronze/source=kafka/stream=orders/partition=3/00000000000000000007-00000000000000000009.jsonl.gz"
        );
        assert_eq!(
            parse_object_range(&k1),
            Some(("00000000000000000007", "00000000000000000009"))
        );
        // Keys of later ranges sort later.
        let k3 = object_key(
            "bronze",
            &id,
            &KafkaOffset(10),
            &KafkaOffset(10),
            Codec::Gzip,
        );
        assert!(k3 > k1);
        let other = PartitionId::new(Source::Kafka, "orders", "4");
        assert_ne!(
            object_key(
                "bronze",
                &other,
                &KafkaOffset(7),
                &KafkaOffset(9),
                Codec::Gzip
            ),
            k1
        );
    }

    #[test]
    fn zstd_objects_have_their_own_suffix_and_range() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let (a, b) = (KafkaOffset(7), KafkaOffset(9));
        let zst = object_key("bronze", &id, &a, &b, Codec::Zstd);
        assert!(zst.ends_with("/00000000000000000007-00000000000000000009.jsonl.zst"));
        let set = object_key_for_set("bronze", &id, &a, &b, "abcd", Codec::Zstd);
        assert!(set.ends_with("-00000000000000000009~abcd.jsonl.zst"));
        for key in [&zst, &set] {
            assert_eq!(
                parse_object_range(key),
                Some(("00000000000000000007", "00000000000000000009"))
            );
        }
        assert_eq!(parse_object_range("bronze/x/7-9.jsonl"), None);
        assert_eq!(parse_object_range("bronze/x/7-9.jsonl.bz2"), None);
    }

    #[test]
    fn members_are_cut_from_the_records_alone() {
        // Same records, run ids of different lengths: the same cut points.
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let s = settings(PayloadFormat::Json);
        let records: Vec<Record<KafkaOffset>> = (0..3000u64)
            .map(|i| Record {
                cursor: KafkaOffset(i),
                key: None,
                headers: vec![],
                timestamp_ms: None,
                payload: Some(
                    format!(
                        "{{\"i\":{i},\"pad\":\"{}\"}}",
                        "x".repeat((i % 700) as usize)
                    )
                    .into_bytes(),
                ),
                defect: None,
                schema_id: None,
            })
            .collect();
        let cuts = |run_id: &str| {
            let mut w = BronzeWriter::new(&id, &s, run_id, 0);
            for r in &records {
                w.push(r).unwrap();
            }
            w.into_members()
                .iter()
                .map(|m| m.iter().filter(|b| **b == b'\n').count())
                .collect::<Vec<_>>()
        };
        let short = cuts("r");
        assert!(short.len() > 1, "{short:?}");
        assert_eq!(short, cuts("a-much-longer-run-id-than-the-other-one"));
        assert_eq!(short.iter().sum::<usize>(), records.len());
    }

    #[test]
    fn key_segments_are_escaped() {
        let id = PartitionId::new(Source::Kafka, "a/b=c", "0");
        assert!(partition_prefix("p", &id).contains("stream=a%2Fb%3Dc/"));
    }

    #[test]
    fn kinesis_keys_sort_numerically() {
        let id = PartitionId::new(Source::Kinesis, "s", "shardId-000000000000");
        let a: SequenceNumber = "9".parse().unwrap();
        let b: SequenceNumber = "10".parse().unwrap();
        let key = |c: &SequenceNumber| object_key("p", &id, c, c, Codec::Gzip);
        assert!(key(&a) < key(&b));
    }

    #[test]
    fn lines_round_trip_with_metadata() {
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let s = settings(PayloadFormat::Auto);
        let mut w = BronzeWriter::new(&id, &s, "run-1", 0);
        let pretty = b"{\n  \"a\": [1,\n 2]\n}".to_vec();
        w.push(&Record {
            cursor: KafkaOffset(1),
            key: Some(b"k".to_vec()),
            headers: vec![
                Header {
                    key: "h".into(),
                    value: Some(b"v".to_vec()),
                    raw_key: None,
                },
                Header {
                    key: "bin".into(),
                    value: Some(vec![0xff, 0x00]),
                    raw_key: None,
                },
            ],
            timestamp_ms: Some(1_700_000_000_123),
            payload: Some(pretty),
            defect: None,
            schema_id: None,
        })
        .unwrap();
        w.push(&Record {
            cursor: KafkaOffset(2),
            key: None,
            headers: vec![],
            timestamp_ms: None,
            payload: Some(vec![0xde, 0xad]),
            defect: None,
            schema_id: None,
        })
        .unwrap();
        w.push(&Record {
            cursor: KafkaOffset(3),
            key: Some(vec![0xff]),
            headers: vec![],
            timestamp_ms: None,
            payload: None,
            defect: None,
            schema_id: None,
        })
        .unwrap();
        let lines = read_lines(&w.finish()).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["payload"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(lines[0]["cursor"], "1");
        assert_eq!(lines[0]["key"], "k");
        assert_eq!(lines[0]["group"], "g");
        assert_eq!(lines[0]["run_id"], "run-1");
        assert_eq!(lines[0]["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(lines[0]["headers"][0]["value"], "v");
        assert_eq!(lines[0]["headers"][1]["value_base64"], "/wA=");
        assert_eq!(lines[1]["payload_encoding"], "base64");
        assert_eq!(lines[1]["payload_base64"], "3q0=");
        assert!(lines[1]["key"].is_null());
        assert_eq!(lines[2]["payload_encoding"], "null");
        assert_eq!(lines[2]["key_encoding"], "base64");
    }

    #[test]
    fn json_stream_rejects_non_json_without_writing() {
        let id = PartitionId::new(Source::Kinesis, "s", "shardId-1");
        let s = settings(PayloadFormat::Json);
        let mut w = BronzeWriter::new(&id, &s, "r", 0);
        let seq: SequenceNumber = "5".parse().unwrap();
        let err = w
            .push(&Record {
                cursor: seq,
                key: None,
                headers: vec![],
                timestamp_ms: None,
                payload: Some(b"not json".to_vec()),
                defect: None,
                schema_id: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("cursor 5"), "{err}");
        assert_eq!(w.records(), 0);
        assert!(read_lines(&w.finish()).unwrap().is_empty());
    }

    #[test]
    fn key_strategies() {
        assert_eq!(
            encode_key(Some(b"abc"), KeyStrategy::Raw),
            (Some("abc".into()), Some("utf8"))
        );
        assert_eq!(
            encode_key(Some(b"abc"), KeyStrategy::Base64),
            (Some("YWJj".into()), Some("base64"))
        );
        assert_eq!(encode_key(Some(b"abc"), KeyStrategy::Drop), (None, None));
        let (h, e) = encode_key(Some(b"abc"), KeyStrategy::Sha256);
        assert_eq!(e, Some("sha256"));
        assert_eq!(
            h.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// The text of a line's inline `payload`, exactly as written.
    fn inline_payload(line: &str) -> &str {
        let at = line
            .find(",\"payload\":")
            .expect("line has an inline payload")
            + 11;
        &line[at..line.len() - 1]
    }

    fn record(payload: Option<Vec<u8>>) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(1),
            key: None,
            headers: vec![],
            timestamp_ms: None,
            payload,
            defect: None,
            schema_id: None,
        }
    }

    /// The JSON texts the first acceptance run found changed or panicking, and their kin.
    fn json_edge_cases() -> Vec<Vec<u8>> {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<Vec<u8>> = [
            "{\n \"big\": 1e400 \n}",
            "123456789012345678901234567890",
            "1.0000000000000000001",
            "{\"a\":1,\"a\":2}",
            "{\r\n\t\"a\" : -0.0e-0 ,\n\"b\":[1E-400,\n18446744073709551616]}",
            "-0",
            "\"\\ud800\"",
            "\"caf\u{e9} \\n \u{1F600}\"",
            "  {\"padded\":true}\r\n",
            "null",
            "[]",
            "{\"x\":1,\"payload\":2}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        cases.push(deep(200).into_bytes());
        cases.push(format!("{{\n\"deep\":{}\n}}", deep(5000)).into_bytes());
        cases
    }

    #[test]
    fn valid_json_lands_byte_for_byte_and_never_panics() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        for format in [PayloadFormat::Auto, PayloadFormat::Json] {
            let s = settings(format);
            for case in json_edge_cases() {
                let mut w = BronzeWriter::new(&id, &s, "r", 0);
                w.push(&record(Some(case.clone()))).unwrap();
                let lines = read_raw_lines(&w.finish()).unwrap();
                assert_eq!(lines.len(), 1, "one line per record");
                let expected: Vec<u8> = case
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                    .collect();
                assert_eq!(
                    inline_payload(&lines[0]).as_bytes(),
                    &expected[..],
                    "{format:?}: {}",
                    String::from_utf8_lossy(&case)
                );
                let parsed = read_lines(&w_body(&id, &s, &case)).unwrap();
                assert_eq!(parsed[0]["payload_encoding"], "json");
            }
        }
    }

    #[test]
    fn checked_json_lands_like_raw_json() {
        // A JSON text checked against a schema is written inline by the same path: every edge
        // case a schema check can pass (serde_json's Value holds it) lands byte for byte.
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let s = settings(PayloadFormat::Bytes);
        for case in json_edge_cases() {
            if serde_json::from_slice::<serde_json::Value>(&case).is_err() {
                continue;
            }
            let verdict = Ok(Decoded {
                schema_id: "confluent:1".into(),
                schema_version: 1,
                value: DecodedValue::Json(case.clone()),
            });
            let mut w = BronzeWriter::new(&id, &s, "r", 0);
            w.push_checked(&record(Some(case.clone())), Some(&verdict))
                .unwrap();
            let body = w.finish();
            let raw = read_raw_lines(&body).unwrap();
            assert_eq!(raw.len(), 1);
            let expected: Vec<u8> = case
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect();
            assert_eq!(inline_payload(&raw[0]).as_bytes(), &expected[..]);
            let line = &read_lines(&body).unwrap()[0];
            assert_eq!(line["payload_encoding"], "json");
            assert_eq!(line["schema_id"], "confluent:1");
        }
    }

    fn w_body(id: &PartitionId, s: &StreamSettings, payload: &[u8]) -> Vec<u8> {
        let mut w = BronzeWriter::new(id, s, "r", 0);
        w.push(&record(Some(payload.to_vec()))).unwrap();
        w.finish()
    }

    #[test]
    fn numbers_and_duplicate_keys_are_not_normalised() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        let s = settings(PayloadFormat::Auto);
        let body = w_body(
            &id,
            &s,
            b"{\"n\":123456789012345678901234567890,\n\"f\":1.0000000000000000001,\"n\":1}",
        );
        let line = &read_raw_lines(&body).unwrap()[0];
        assert!(line.ends_with(
            "\"payload\":{\"n\":123456789012345678901234567890, \"f\":1.0000000000000000001,\"n\":1}}"
        ), "{line}");
    }

    #[test]
    fn non_json_is_base64_in_auto_and_poison_in_json() {
        let id = PartitionId::new(Source::Kafka, "t", "0");
        for payload in [
            &b"\xEF\xBB\xBF{\"bom\":1}"[..],
            b"{\"a\":NaN}",
            b"Infinity",
            b"{\"s\":\"\xff\"}",
            b"\"raw\nnewline in a string\"",
            b"{\"a\":1} {\"b\":2}",
            b"",
        ] {
            let body = w_body(&id, &settings(PayloadFormat::Auto), payload);
            let line = &read_lines(&body).unwrap()[0];
            assert_eq!(line["payload_encoding"], "base64");
            assert_eq!(
                B64.decode(line["payload_base64"].as_str().unwrap())
                    .unwrap(),
                payload
            );
            let s = settings(PayloadFormat::Json);
            let mut w = BronzeWriter::new(&id, &s, "r", 0);
            let err = w.push(&record(Some(payload.to_vec()))).unwrap_err();
            assert!(matches!(err, BronzeError::PayloadNotJson { .. }), "{err}");
            assert!(!err.to_string().contains("newline in a string"), "{err}");
        }
    }

    proptest::proptest! {
        /// Any bytes under any format: no panic; landed byte for byte (inline JSON or
        /// base64), or refused with a reason naming the cursor.
        #[test]
        fn any_payload_lands_exactly_or_is_refused(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            case in 0usize..14,
            use_case in proptest::bool::ANY,
        ) {
            let payload = if use_case { json_edge_cases()[case].clone() } else { payload };
            let id = PartitionId::new(Source::Kafka, "t", "0");
            for format in [PayloadFormat::Auto, PayloadFormat::Json, PayloadFormat::Bytes] {
                let s = settings(format);
                let mut w = BronzeWriter::new(&id, &s, "r", 0);
                match w.push(&record(Some(payload.clone()))) {
                    Ok(()) => {
                        let raw = read_raw_lines(&w.finish()).unwrap();
                        let line = read_lines(&w_body(&id, &s, &payload)).unwrap().remove(0);
                        match line["payload_encoding"].as_str().unwrap() {
                            "base64" => proptest::prop_assert_eq!(
                                B64.decode(line["payload_base64"].as_str().unwrap()).unwrap(),
                                payload.clone()
                            ),
                            "json" => {
                                let expected: Vec<u8> = payload
                                    .iter()
                                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                                    .collect();
                                proptest::prop_assert_eq!(inline_payload(&raw[0]).as_bytes(), &expected[..]);
                            }
                            other => proptest::prop_assert!(false, "encoding {}", other),
                        }
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(format, PayloadFormat::Json);
                        proptest::prop_assert!(e.to_string().contains("cursor 1"));
                    }
                }
            }
        }
    }
}
