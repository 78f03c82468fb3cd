//! Schema checks at landing: unframe each payload (Confluent or Glue wire format), find its
//! schema (cached: no registry call per record), decode Avro / validate JSON Schema.
//!
//! A payload that fails is poison and goes to the DLQ with the schema id and the reason; a
//! registry that cannot be reached is a transient failure of the whole batch, never a reason
//! to dead-letter a record.

use crate::config::{RegistryKind, StreamSchema};
use crate::cursor::Cursor;
use crate::ports::PortError;
use crate::record::{PartitionId, Record};
use crate::registry::{RegisteredSchema, RegistryError, SchemaCache, SchemaId, SchemaRegistry};
use crate::schema::SchemaFormat;
use crate::schema::avro::AvroDecoder;
use crate::schema::json_schema::JsonValidator;
use crate::wire::{WireFormat, unframe};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A payload that matched its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The schema id (`confluent:<n>` or `glue:<uuid>`).
    pub schema_id: String,
    /// The version within its subject (0 when the registry cannot say).
    pub schema_version: u32,
    /// What lands as the line's `payload`.
    pub value: DecodedValue,
}

/// The `payload` of a record that matched its schema.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedValue {
    /// A binary Avro datum decoded to JSON (`payload_encoding: avro`).
    Avro(serde_json::Value),
    /// A JSON text that was checked (against its JSON Schema, or delivered as JSON by a mapping
    /// that decodes Avro): the text as produced, after the wire-format frame, landed byte for
    /// byte like any raw JSON payload (`payload_encoding: json`). The parsed value it was
    /// checked with is not what lands: parsing loses big numbers and the order of keys (a
    /// text with a repeated key is not checked at all, see [`checkable_json`]).
    Json(Vec<u8>),
}

impl Decoded {
    /// `avro` or `json`.
    pub fn encoding(&self) -> &'static str {
        match self.value {
            DecodedValue::Avro(_) => "avro",
            DecodedValue::Json(_) => "json",
        }
    }
}

/// The verdict for one record: `None` for a null payload (a tombstone carries no schema).
pub type Verdict = Option<Result<Decoded, String>>;

/// Parses a JSON payload for its schema check. The text lands as it is, so the value checked
/// must be the one a reader sees: an object with a repeated key is refused (which of its
/// values a reader takes is up to the reader, RFC 8259 section 4), as is a text
/// `serde_json::Value` cannot hold (nesting deeper than 128, a number beyond f64 such as
/// `1e400`). Numbers are checked as f64.
fn checkable_json(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice::<Unique>(body)
        .map(|u| u.0)
        .map_err(|e| format!("payload cannot be checked against its schema: {e}"))
}

/// A JSON value whose objects have no repeated key.
struct Unique(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("repeated key {key:?}")));
            }
            out.insert(key, value);
        }
        Ok(out.into())
    }
}

/// A schema compiled once for many records.
#[derive(Debug)]
enum Compiled {
    Avro(AvroDecoder),
    Json(JsonValidator),
}

/// A fetched schema and its compiled form (or why it does not compile).
type CompiledEntry = Arc<(Arc<RegisteredSchema>, Result<Compiled, String>)>;

/// The registries a connector uses, by kind.
pub type RegistrySet = Vec<(RegistryKind, Arc<dyn SchemaRegistry>)>;

/// Finds and applies schemas for the streams that declare one. Built once per process.
#[derive(Debug, Default)]
pub struct SchemaDecoder {
    caches: HashMap<RegistryKind, SchemaCache>,
    compiled: Mutex<HashMap<SchemaId, CompiledEntry>>,
}

fn registry_failure(partition: &PartitionId, e: RegistryError) -> PortError {
    let (operation, target, message) = ("registry:get", partition.to_string(), e.to_string());
    if e.is_transient() {
        PortError::Transient {
            operation,
            target,
            message,
        }
    } else {
        PortError::Permanent {
            operation,
            target,
            message,
        }
    }
}

impl SchemaDecoder {
    /// A decoder over the configured registries.
    pub fn new(
        registries: impl IntoIterator<Item = (RegistryKind, Arc<dyn SchemaRegistry>)>,
    ) -> Self {
        Self {
            caches: registries
                .into_iter()
                .map(|(k, r)| (k, SchemaCache::new(r)))
                .collect(),
            compiled: Mutex::default(),
        }
    }

    /// The schema with `id`, compiled; `Ok(None)` when the registry does not know the id.
    async fn schema(
        &self,
        partition: &PartitionId,
        cache: &SchemaCache,
        id: &SchemaId,
    ) -> Result<Option<CompiledEntry>, PortError> {
        if let Some(hit) = self.compiled.lock().expect("decoder lock").get(id) {
            return Ok(Some(hit.clone()));
        }
        let schema = match cache.get(id).await {
            Ok(s) => s,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(registry_failure(partition, e)),
        };
        let compiled = match schema.format {
            SchemaFormat::Avro => AvroDecoder::new(&schema.definition).map(Compiled::Avro),
            SchemaFormat::JsonSchema => serde_json::from_str(&schema.definition)
                .map_err(|e| format!("schema is not JSON: {e}"))
                .and_then(|s| JsonValidator::new(&s))
                .map(Compiled::Json),
        };
        let entry = Arc::new((schema, compiled));
        self.compiled
            .lock()
            .expect("decoder lock")
            .insert(id.clone(), entry.clone());
        Ok(Some(entry))
    }

    /// Checks every record of a batch against the stream's schema. `Err` only for registry
    /// failures that are not about one record (unreachable, throttled, access denied).
    pub async fn check_batch<C: Cursor>(
        &self,
        partition: &PartitionId,
        records: &[Record<C>],
        declared: &StreamSchema,
    ) -> Result<Vec<Verdict>, PortError> {
        let cache = self
            .caches
            .get(&declared.registry)
            .ok_or_else(|| PortError::Permanent {
                operation: "registry:get",
                target: partition.to_string(),
                message: format!(
                    "stream declares a {:?} schema but that registry is not configured",
                    declared.registry
                ),
            })?;
        // Unframed payloads are checked against the subject's latest version, read once per batch.
        let latest = if declared.wire_format == WireFormat::None {
            let versions = cache
                .registry()
                .versions(&declared.subject)
                .await
                .map_err(|e| registry_failure(partition, e))?;
            let last = versions.last().ok_or_else(|| PortError::Permanent {
                operation: "registry:versions",
                target: partition.to_string(),
                message: format!("subject {:?} has no versions", declared.subject),
            })?;
            Some(last.id.clone())
        } else {
            None
        };
        let mut out = Vec::with_capacity(records.len());
        // Ids the registry does not know, asked once per batch.
        let mut unknown: std::collections::HashSet<SchemaId> = Default::default();
        for record in records {
            let Some(payload) = record.payload.as_deref() else {
                out.push(None);
                continue;
            };
            // The frame names the schema; failing that, the delivery's metadata (the mapping may
            // have removed the frame); failing that, the subject's latest version.
            let (framed_id, body) =
                match (unframe(declared.wire_format, payload), &record.schema_id) {
                    (Ok(parts), _) => parts,
                    (Err(_), Some(_)) => (None, std::borrow::Cow::Borrowed(payload)),
                    (Err(e), None) => {
                        out.push(Some(Err(format!("subject {}: {e}", declared.subject))));
                        continue;
                    }
                };
            let framed = framed_id.is_some();
            let Some(id) = framed_id
                .or_else(|| record.schema_id.clone())
                .or_else(|| latest.clone())
            else {
                out.push(Some(Err("no schema id".into())));
                continue;
            };
            let entry = if unknown.contains(&id) {
                None
            } else {
                self.schema(partition, cache, &id).await?
            };
            let Some(entry) = entry else {
                out.push(Some(Err(format!(
                    "schema {id}: unknown schema id in the registry"
                ))));
                unknown.insert(id);
                continue;
            };
            let (schema, compiled) = (&entry.0, &entry.1);
            let at = format!(
                "schema {id} (subject {:?}, version {})",
                schema.subject, schema.version
            );
            let verdict = match compiled {
                Err(e) => Err(format!("{at}: {e}")),
                // A mapping that decodes records for the function delivers Avro values as JSON,
                // without a frame (a framed payload is binary Avro, whatever its first byte).
                Ok(Compiled::Avro(_))
                    if !framed && record.schema_id.is_some() && body.first() == Some(&b'{') =>
                {
                    checkable_json(&body).map(|_| DecodedValue::Json(body.into_owned()))
                }
                Ok(Compiled::Avro(decoder)) => decoder.decode(&body).map(DecodedValue::Avro),
                Ok(Compiled::Json(validator)) => checkable_json(&body)
                    .and_then(|v| validator.validate(&v))
                    .map(|()| DecodedValue::Json(body.into_owned())),
            };
            out.push(Some(
                verdict
                    .map(|value| Decoded {
                        schema_id: id.to_string(),
                        schema_version: schema.version,
                        value,
                    })
                    .map_err(|e| {
                        if e.starts_with("schema ") {
                            e
                        } else {
                            format!("{at}: {e}")
                        }
                    }),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyStrategy, PayloadFormat, StreamSettings};
    use crate::cursor::KafkaOffset;
    use crate::engine::{Lander, PartitionOutcome, RunContext};
    use crate::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
    use crate::ports::StateStore;
    use crate::record::{PartitionBatch, Source};
    use crate::registry::memory::MemoryRegistry;
    use crate::schema::CompatibilityMode;
    use crate::telemetry::Metrics;
    use crate::wire::frame;

    const AVRO: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"sku","type":"string"}]}"#;
    const JSON_SCHEMA: &str =
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;

    fn avro_datum(id: i64, sku: &str) -> Vec<u8> {
        use apache_avro::types::Value;
        let schema = apache_avro::Schema::parse_str(AVRO).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::Long(id)),
            ("sku".into(), Value::String(sku.into())),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn record(offset: u64, payload: Vec<u8>) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(offset),
            key: None,
            headers: vec![],
            timestamp_ms: None,
            payload: Some(payload),
            defect: None,
            schema_id: None,
        }
    }

    fn settings(format: SchemaFormat, wire: WireFormat) -> StreamSettings {
        StreamSettings {
            group: None,
            payload_format: PayloadFormat::Bytes,
            key_strategy: KeyStrategy::Raw,
            parallelization_factor: 1,
            compression: Default::default(),
            schema: Some(StreamSchema {
                registry: RegistryKind::Confluent,
                subject: "orders-value".into(),
                format,
                wire_format: wire,
                compatibility: CompatibilityMode::Backward,
                definition: None,
            }),
        }
    }

    struct World {
        registry: Arc<MemoryRegistry>,
        objects: Arc<MemoryObjectStore>,
        state: Arc<MemoryStateStore>,
        dlq: Arc<MemoryDlq>,
        lander: Lander,
    }

    fn world() -> World {
        let faults = Faults::new();
        let registry = Arc::new(MemoryRegistry::new());
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let dlq = Arc::new(MemoryDlq::new(faults));
        let decoder = SchemaDecoder::new([(
            RegistryKind::Confluent,
            registry.clone() as Arc<dyn SchemaRegistry>,
        )]);
        let lander = Lander::new(objects.clone(), state.clone(), dlq.clone(), "bronze")
            .with_schemas(Arc::new(decoder));
        World {
            registry,
            objects,
            state,
            dlq,
            lander,
        }
    }

    async fn committed_lines(w: &World, id: &PartitionId) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for entry in w.state.commit_log(id).await.unwrap() {
            if let Some(key) = entry.object_key {
                lines.extend(crate::bronze::read_lines(&w.objects.body(&key).unwrap()).unwrap());
            }
        }
        lines
    }

    #[tokio::test]
    async fn avro_payloads_are_decoded_checked_and_poison_dead_lettered() {
        let w = world();
        let v1 = w
            .registry
            .register("orders-value", SchemaFormat::Avro, AVRO)
            .await
            .unwrap();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = PartitionBatch {
            id: id.clone(),
            records: vec![
                record(1, frame(&v1.id, &avro_datum(7, "A-1"))),
                record(2, frame(&v1.id, &[0xff, 0xff, 0xff])),
                record(3, frame(&SchemaId::Confluent(999), &avro_datum(8, "B"))),
                record(4, b"{\"not\":\"framed\"}".to_vec()),
                record(5, frame(&v1.id, &avro_datum(9, "C-3"))),
            ],
        };
        let run = RunContext {
            run_id: "r",
            now_ms: 0,
            metrics: &metrics,
        };
        let outcome = w
            .lander
            .land(
                &batch,
                &settings(SchemaFormat::Avro, WireFormat::Confluent),
                run,
            )
            .await;
        assert!(
            matches!(outcome, PartitionOutcome::Landed { .. }),
            "{outcome:?}"
        );
        let lines = committed_lines(&w, &id).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0]["payload"],
            serde_json::json!({"id": 7, "sku": "A-1"})
        );
        assert_eq!(lines[0]["payload_encoding"], "avro");
        assert_eq!(lines[0]["schema_id"], v1.id.to_string());
        assert_eq!(lines[0]["schema_version"], 1);
        assert_eq!(lines[1]["cursor"], "5");
        let letters: Vec<serde_json::Value> = w
            .dlq
            .letters()
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect();
        assert_eq!(letters.len(), 3);
        let reason = |i: usize| letters[i]["reason"].as_str().unwrap().to_owned();
        assert!(
            reason(0).contains(&v1.id.to_string()) && reason(0).contains("cannot decode"),
            "{}",
            reason(0)
        );
        assert!(
            reason(1).contains("confluent:999") && reason(1).contains("unknown schema id"),
            "{}",
            reason(1)
        );
        assert!(reason(2).contains("confluent header"), "{}", reason(2));
        assert_eq!(letters[1]["cursor"], "3");
    }

    #[tokio::test]
    async fn checked_json_payloads_land_byte_for_byte() {
        let w = world();
        let json = w
            .registry
            .register("orders-value", SchemaFormat::JsonSchema, JSON_SCHEMA)
            .await
            .unwrap();
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "r",
            now_ms: 0,
            metrics: &metrics,
        };
        // Key order, numbers beyond f64 and whitespace: what a parsed value would lose or
        // change.
        let produced: [&[u8]; 2] = [
            b"{\"z\":1, \"id\":123456789012345678901234567890,\r\n\"f\":1.0000000000000000001}",
            b" {\"id\":2,\"big\":18446744073709551616,\"neg\":-0.0e-0} ",
        ];
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = PartitionBatch {
            id: id.clone(),
            records: produced
                .iter()
                .enumerate()
                .map(|(i, p)| record(i as u64, frame(&json.id, p)))
                .collect(),
        };
        let s = settings(SchemaFormat::JsonSchema, WireFormat::Confluent);
        assert!(matches!(
            w.lander.land(&batch, &s, run).await,
            PartitionOutcome::Landed { .. }
        ));
        // A repeated key: which value a reader takes is up to the reader, so the text cannot
        // be checked (here the first `id` breaks the schema, the last one passes it).
        let repeated = PartitionBatch {
            id: id.clone(),
            records: vec![record(2, frame(&json.id, b"{\"id\":\"x\",\"id\":7}"))],
        };
        assert!(matches!(
            w.lander.land(&repeated, &s, run).await,
            PartitionOutcome::Landed { .. }
        ));
        let letters = w.dlq.letters();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0].1.contains("repeated key \\\"id\\\""),
            "{}",
            letters[0].1
        );
        // An Avro stream whose mapping delivers the values decoded, as JSON.
        let avro = w
            .registry
            .register("orders-avro-value", SchemaFormat::Avro, AVRO)
            .await
            .unwrap();
        let delivered = b"{\"sku\":\"A-1\",\"id\":99999999999999999999}";
        let avro_id = PartitionId::new(Source::Kafka, "orders-avro", "0");
        let mut r = record(0, delivered.to_vec());
        r.schema_id = Some(avro.id.clone());
        let mut avro_settings = settings(SchemaFormat::Avro, WireFormat::Confluent);
        if let Some(schema) = avro_settings.schema.as_mut() {
            schema.subject = "orders-avro-value".into();
        }
        let avro_batch = PartitionBatch {
            id: avro_id.clone(),
            records: vec![r],
        };
        assert!(matches!(
            w.lander.land(&avro_batch, &avro_settings, run).await,
            PartitionOutcome::Landed { .. }
        ));
        assert_eq!(w.dlq.letters().len(), 1, "{:?}", w.dlq.letters());

        let raw_lines = |id: PartitionId| {
            let w = &w;
            async move {
                let mut lines = Vec::new();
                // (an entry of dead letters only has no object)
                let entries = w.state.commit_log(&id).await.unwrap();
                for key in entries.into_iter().filter_map(|e| e.object_key) {
                    lines.extend(
                        crate::bronze::read_raw_lines(&w.objects.body(&key).unwrap()).unwrap(),
                    );
                }
                lines
            }
        };
        let expected = |p: &[u8]| -> String {
            p.iter()
                .map(|&b| {
                    if b == b'\n' || b == b'\r' {
                        ' '
                    } else {
                        b as char
                    }
                })
                .collect()
        };
        let lines = raw_lines(id).await;
        assert_eq!(lines.len(), 2);
        for (line, p) in lines.iter().zip(produced) {
            let suffix = format!(",\"payload\":{}}}", expected(p));
            assert!(line.ends_with(&suffix), "{line} should end with {suffix}");
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(parsed["payload_encoding"], "json");
            assert_eq!(parsed["schema_id"], json.id.to_string());
        }
        let lines = raw_lines(avro_id).await;
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with(&format!(",\"payload\":{}}}", expected(delivered))),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("\"payload_encoding\":\"json\""),
            "{}",
            lines[0]
        );
    }

    #[tokio::test]
    async fn schemas_are_cached_not_fetched_per_record() {
        let w = world();
        let v1 = w
            .registry
            .register("orders-value", SchemaFormat::JsonSchema, JSON_SCHEMA)
            .await
            .unwrap();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let calls_before = w.registry.calls();
        for start in [0u64, 10] {
            let records = (start..start + 5)
                .map(|o| record(o, frame(&v1.id, format!("{{\"id\":{o}}}").as_bytes())))
                .collect();
            let batch = PartitionBatch {
                id: id.clone(),
                records,
            };
            let run = RunContext {
                run_id: "r",
                now_ms: 0,
                metrics: &metrics,
            };
            let outcome = w
                .lander
                .land(
                    &batch,
                    &settings(SchemaFormat::JsonSchema, WireFormat::Confluent),
                    run,
                )
                .await;
            assert!(matches!(outcome, PartitionOutcome::Landed { .. }));
        }
        assert_eq!(
            w.registry.calls() - calls_before,
            1,
            "one registry call for ten records in two batches"
        );
        assert_eq!(committed_lines(&w, &id).await.len(), 10);
    }

    #[tokio::test]
    async fn invalid_json_goes_to_dlq_and_unreachable_registry_fails_the_batch() {
        let w = world();
        w.registry
            .register("orders-value", SchemaFormat::JsonSchema, JSON_SCHEMA)
            .await
            .unwrap();
        let metrics = Metrics::default();
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        // Unframed payloads are checked against the subject's latest version.
        let batch = PartitionBatch {
            id: id.clone(),
            records: vec![
                record(1, b"{\"id\":1}".to_vec()),
                record(2, b"{\"id\":\"x\"}".to_vec()),
            ],
        };
        let s = settings(SchemaFormat::JsonSchema, WireFormat::None);
        let run = RunContext {
            run_id: "r",
            now_ms: 0,
            metrics: &metrics,
        };
        assert!(matches!(
            w.lander.land(&batch, &s, run).await,
            PartitionOutcome::Landed { .. }
        ));
        let letters = w.dlq.letters();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0].1.contains("/id"),
            "the reason names the field: {}",
            letters[0].1
        );
        // A registry outage is transient: nothing is dead-lettered or committed.
        w.registry.fail_next(RegistryError::Transient {
            registry: "memory".into(),
            operation: "versions",
            message: "503".into(),
        });
        let next = PartitionBatch {
            id: id.clone(),
            records: vec![record(3, b"{\"id\":3}".to_vec())],
        };
        match w.lander.land(&next, &s, run).await {
            PartitionOutcome::Failed {
                first_unlanded,
                error,
            } => {
                assert_eq!(first_unlanded, KafkaOffset(3));
                assert!(error.is_transient(), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.dlq.letters().len(), 1);
    }
}
