//! The table's schema and partition spec, and how a Bronze line becomes a row.
//!
//! Columns follow the Bronze line (`docs/landing-contract.md`, section 3): `cursor` keeps the
//! display form and `cursor_sortable` the fixed-width form whose byte order is cursor order;
//! `timestamp` is the record's own time (`timestamp_ms`) as `timestamptz`; `payload` is the
//! line's `payload` JSON text byte for byte, `payload_base64` the decoded bytes. `object_key`
//! names the Bronze object the record was published from and `log_position` the
//! commit-log position of the entry that committed it (which tells records landed before
//! a reset of the partition from those landed after it). Iceberg `binary` is Arrow
//! `LargeBinary`, `string` is `Utf8`.

use arrow_array::builder::{
    Int32Builder, Int64Builder, LargeBinaryBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, LargeBinaryArray, ListArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, SchemaRef as ArrowSchemaRef};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bronze::cursor::{Cursor, KafkaOffset, KinesisCursor, PulsarMessageId};
use bronze::record::Source;
use iceberg::spec::{
    ListType, NestedField, PrimitiveType, Schema, StructType, Transform, Type, UnboundPartitionSpec,
};
use serde::Deserialize;
use std::sync::Arc;

/// Why a line of a committed object could not become a row. Permanent: the object is
/// committed, so publishing stops at it rather than skip a record.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is not a Bronze line (not JSON, or a field of the wrong type).
    #[error("{object_key} line {line}: not a Bronze line: {detail}")]
    Malformed {
        /// The Bronze object.
        object_key: String,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        detail: String,
    },
}

/// Field ids; stable, they are the table's column identities.
mod id {
    pub(super) const SOURCE: i32 = 1;
    pub(super) const STREAM: i32 = 2;
    pub(super) const PARTITION: i32 = 3;
    pub(super) const CURSOR: i32 = 4;
    pub(super) const CURSOR_SORTABLE: i32 = 5;
    pub(super) const GROUP: i32 = 6;
    pub(super) const KEY: i32 = 7;
    pub(super) const KEY_ENCODING: i32 = 8;
    pub(super) const HEADERS: i32 = 9;
    pub(super) const TIMESTAMP: i32 = 10;
    pub(super) const RUN_ID: i32 = 11;
    pub(super) const PAYLOAD_ENCODING: i32 = 12;
    pub(super) const PAYLOAD: i32 = 13;
    pub(super) const PAYLOAD_BASE64: i32 = 14;
    pub(super) const SCHEMA_ID: i32 = 15;
    pub(super) const SCHEMA_VERSION: i32 = 16;
    pub(super) const OBJECT_KEY: i32 = 17;
    pub(super) const LOG_POSITION: i32 = 18;
    pub(super) const HEADER: i32 = 20;
    pub(super) const HEADER_KEY: i32 = 21;
    pub(super) const HEADER_VALUE: i32 = 22;
    pub(super) const HEADER_VALUE_BASE64: i32 = 23;
}

/// The Iceberg schema of the Bronze table.
pub fn schema() -> iceberg::Result<Schema> {
    let s = || Type::Primitive(PrimitiveType::String);
    let header = StructType::new(vec![
        NestedField::required(id::HEADER_KEY, "key", s()).into(),
        NestedField::optional(id::HEADER_VALUE, "value", s()).into(),
        NestedField::optional(
            id::HEADER_VALUE_BASE64,
            "value_base64",
            Type::Primitive(PrimitiveType::Binary),
        )
        .into(),
    ]);
    let headers =
        ListType::new(NestedField::required(id::HEADER, "element", Type::Struct(header)).into());
    Schema::builder()
        .with_fields(vec![
            NestedField::required(id::SOURCE, "source", s()).into(),
            NestedField::required(id::STREAM, "stream", s()).into(),
            NestedField::required(id::PARTITION, "partition", s()).into(),
            NestedField::required(id::CURSOR, "cursor", s()).into(),
            NestedField::required(id::CURSOR_SORTABLE, "cursor_sortable", s()).into(),
            NestedField::optional(id::GROUP, "group", s()).into(),
            NestedField::optional(id::KEY, "key", s()).into(),
            NestedField::optional(id::KEY_ENCODING, "key_encoding", s()).into(),
            NestedField::optional(id::HEADERS, "headers", Type::List(headers)).into(),
            NestedField::optional(
                id::TIMESTAMP,
                "timestamp",
                Type::Primitive(PrimitiveType::Timestamptz),
            )
            .into(),
            NestedField::optional(id::RUN_ID, "run_id", s()).into(),
            NestedField::required(id::PAYLOAD_ENCODING, "payload_encoding", s()).into(),
            NestedField::optional(id::PAYLOAD, "payload", s()).into(),
            NestedField::optional(
                id::PAYLOAD_BASE64,
                "payload_base64",
                Type::Primitive(PrimitiveType::Binary),
            )
            .into(),
            NestedField::optional(id::SCHEMA_ID, "schema_id", s()).into(),
            NestedField::optional(
                id::SCHEMA_VERSION,
                "schema_version",
                Type::Primitive(PrimitiveType::Int),
            )
            .into(),
            NestedField::required(id::OBJECT_KEY, "object_key", s()).into(),
            NestedField::optional(
                id::LOG_POSITION,
                "log_position",
                Type::Primitive(PrimitiveType::Long),
            )
            .into(),
        ])
        .build()
}

/// The partition spec: `stream` (identity) and `day(timestamp)`.
pub fn partition_spec() -> iceberg::Result<UnboundPartitionSpec> {
    Ok(UnboundPartitionSpec::builder()
        .add_partition_field(id::STREAM, "stream", Transform::Identity)?
        .add_partition_field(id::TIMESTAMP, "timestamp_day", Transform::Day)?
        .build())
}

/// One header of a row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RowHeader {
    /// Header name.
    pub key: String,
    /// UTF-8 value.
    pub value: Option<String>,
    /// Other values, decoded.
    #[serde(default, rename = "value_base64", deserialize_with = "de_base64")]
    pub value_bytes: Option<Vec<u8>>,
}

/// One record of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `kafka`, `kinesis` or `pulsar`.
    pub source: String,
    /// Topic or stream.
    pub stream: String,
    /// Partition or shard.
    pub partition: String,
    /// Display cursor.
    pub cursor: String,
    /// Sortable cursor.
    pub cursor_sortable: String,
    /// Logical group.
    pub group: Option<String>,
    /// Encoded key.
    pub key: Option<String>,
    /// `utf8`, `base64` or `sha256`.
    pub key_encoding: Option<String>,
    /// Headers in order.
    pub headers: Vec<RowHeader>,
    /// The record's own time, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The run that landed it.
    pub run_id: Option<String>,
    /// `json`, `avro`, `base64` or `null`.
    pub payload_encoding: String,
    /// The `payload` JSON text exactly as in the Bronze line.
    pub payload: Option<String>,
    /// The decoded `payload_base64`.
    pub payload_bytes: Option<Vec<u8>>,
    /// Registry schema id.
    pub schema_id: Option<String>,
    /// Registry schema version.
    pub schema_version: Option<i32>,
    /// The Bronze object.
    pub object_key: String,
    /// The commit-log position of the entry that committed the object (`None` for entries
    /// written before positions existed).
    pub log_position: Option<i64>,
}

impl Row {
    /// Days since the epoch of the record's time (the `day` partition value).
    pub fn day(&self) -> Option<i32> {
        self.timestamp_ms
            .and_then(|ms| i32::try_from(ms.div_euclid(86_400_000)).ok())
    }
}

fn de_base64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| B64.decode(t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Every field of a Bronze line but `payload`.
#[derive(Deserialize)]
struct LineHead {
    source: String,
    stream: String,
    partition: String,
    cursor: String,
    group: Option<String>,
    key: Option<String>,
    key_encoding: Option<String>,
    #[serde(default)]
    headers: Vec<RowHeader>,
    timestamp_ms: Option<i64>,
    run_id: Option<String>,
    schema_id: Option<String>,
    schema_version: Option<i32>,
    payload_encoding: Option<String>,
    #[serde(default, deserialize_with = "de_base64")]
    payload_base64: Option<Vec<u8>>,
}

/// Where `payload` starts: the encoder writes it last, after `,"payload":`. Inside a JSON
/// string a quote is always escaped, so this byte sequence can only be the field separator.
const PAYLOAD_FIELD: &str = ",\"payload\":";

/// The sortable form of a display cursor, per source.
pub fn sortable_cursor(source: &str, cursor: &str) -> Result<String, String> {
    let parsed = match source {
        s if s == Source::Kafka.as_str() => KafkaOffset::parse(cursor).map(|c| c.sortable()),
        s if s == Source::Kinesis.as_str() => KinesisCursor::parse(cursor).map(|c| c.sortable()),
        s if s == Source::Pulsar.as_str() => PulsarMessageId::parse(cursor).map(|c| c.sortable()),
        other => return Err(format!("unknown source {other:?}")),
    };
    parsed.map_err(|e| e.to_string())
}

/// Parses one line of a committed Bronze object into a row, keeping `payload` as the exact
/// text of the line (no parse-and-reserialise: numbers, duplicate keys and whitespace stay).
pub fn parse_line(object_key: &str, line_no: usize, line: &str) -> Result<Row, LineError> {
    let malformed = |detail: String| LineError::Malformed {
        object_key: object_key.to_owned(),
        line: line_no,
        detail,
    };
    let (head, payload) = match line.find(PAYLOAD_FIELD) {
        Some(at) => {
            let text = line[at + PAYLOAD_FIELD.len()..]
                .strip_suffix('}')
                .ok_or_else(|| malformed("the line does not end with `}`".into()))?;
            (format!("{}}}", &line[..at]), Some(text.to_owned()))
        }
        None => (line.to_owned(), None),
    };
    let h: LineHead = serde_json::from_str(&head).map_err(|e| malformed(e.to_string()))?;
    let cursor_sortable = sortable_cursor(&h.source, &h.cursor).map_err(&malformed)?;
    Ok(Row {
        source: h.source,
        stream: h.stream,
        partition: h.partition,
        cursor: h.cursor,
        cursor_sortable,
        group: h.group,
        key: h.key,
        key_encoding: h.key_encoding,
        headers: h.headers,
        timestamp_ms: h.timestamp_ms,
        run_id: h.run_id,
        payload_encoding: h.payload_encoding.unwrap_or_else(|| "null".to_owned()),
        payload,
        payload_bytes: h.payload_base64,
        schema_id: h.schema_id,
        schema_version: h.schema_version,
        object_key: object_key.to_owned(),
        log_position: None,
    })
}

/// Builds an Arrow batch of `rows` in the table's Arrow schema (with Iceberg field ids).
pub fn to_batch(
    schema: &ArrowSchemaRef,
    rows: &[Row],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let strings = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let mut timestamps = TimestampMicrosecondBuilder::with_capacity(rows.len());
    let mut payload_bytes = LargeBinaryBuilder::new();
    let mut versions = Int32Builder::with_capacity(rows.len());
    let mut positions = Int64Builder::with_capacity(rows.len());
    for row in rows {
        positions.append_option(row.log_position);
        timestamps.append_option(row.timestamp_ms.and_then(|ms| ms.checked_mul(1000)));
        payload_bytes.append_option(row.payload_bytes.as_deref());
        versions.append_option(row.schema_version);
    }
    let timestamp_type = schema.field_with_name("timestamp")?.data_type().clone();
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.source)),
        strings(&|r| Some(&r.stream)),
        strings(&|r| Some(&r.partition)),
        strings(&|r| Some(&r.cursor)),
        strings(&|r| Some(&r.cursor_sortable)),
        strings(&|r| r.group.as_deref()),
        strings(&|r| r.key.as_deref()),
        strings(&|r| r.key_encoding.as_deref()),
        headers_array(schema.field_with_name("headers")?, rows)?,
        Arc::new(timestamps.finish().with_data_type(timestamp_type)),
        strings(&|r| r.run_id.as_deref()),
        strings(&|r| Some(&r.payload_encoding)),
        strings(&|r| r.payload.as_deref()),
        Arc::new(payload_bytes.finish()),
        strings(&|r| r.schema_id.as_deref()),
        Arc::new(versions.finish()),
        strings(&|r| Some(&r.object_key)),
        Arc::new(positions.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

fn headers_array(field: &Field, rows: &[Row]) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let DataType::List(element) = field.data_type() else {
        return Err(arrow_schema::ArrowError::SchemaError(
            "headers is not a list".into(),
        ));
    };
    let DataType::Struct(fields) = element.data_type() else {
        return Err(arrow_schema::ArrowError::SchemaError(
            "a header is not a struct".into(),
        ));
    };
    let all: Vec<&RowHeader> = rows.iter().flat_map(|r| &r.headers).collect();
    let keys: StringArray = all.iter().map(|h| Some(h.key.as_str())).collect();
    let values: StringArray = all.iter().map(|h| h.value.as_deref()).collect();
    let bytes: LargeBinaryArray = all.iter().map(|h| h.value_bytes.as_deref()).collect();
    let structs = StructArray::try_new(
        Fields::clone(fields),
        vec![Arc::new(keys), Arc::new(values), Arc::new(bytes)],
        None,
    )?;
    let lengths = rows.iter().map(|r| r.headers.len());
    Ok(Arc::new(ListArray::try_new(
        element.clone(),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(structs),
        None,
    )?))
}
