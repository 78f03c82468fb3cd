//! Kafka: events from the MSK (`aws:kafka`) and self-managed (`SelfManagedKafka`) event
//! source mappings. Both land under source `kafka`, so they share checkpoints with the runner.
//!
//! One event may hold several topics and partitions. On a transient failure the invocation
//! fails (Lambda retries the batch; landed partitions are skipped by their checkpoints), or,
//! with `KAFKA_PARTIAL_BATCH_RESPONSE=true` and ReportBatchItemFailures on the mapping, the
//! function answers with `batchItemFailures` naming each failed partition's first offset not
//! landed.

pub use super::event::KafkaEvent;
use super::{App, SourceError, failures, land_all, newest_record_age, prepare};
use crate::cursor::KafkaOffset;
use crate::engine::RunContext;
use crate::record::{Header, PartitionBatch, PartitionId, Record, Source, group_by_partition};
use crate::registry::SchemaId;
use crate::telemetry::Metrics;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Identifies the first record not landed in one partition: `partition` is `<topic>-<n>`
/// as in the event's `records` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaItemIdentifier {
    /// `<topic>-<partition>`.
    pub partition: String,
    /// The offset Lambda retries from.
    pub offset: i64,
}

/// One entry of a Kafka partial batch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchItemFailure {
    /// The failed record.
    pub item_identifier: KafkaItemIdentifier,
}

/// The function's answer: empty on success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEventResponse {
    /// Failed records, one per failed partition.
    pub batch_item_failures: Vec<KafkaBatchItemFailure>,
}

/// Turns an event into partition batches. A key or value that is not valid base64 makes the
/// record poison (it goes to the DLQ with the undecoded text), never a silent drop.
pub fn to_batches(event: KafkaEvent) -> Result<Vec<PartitionBatch<KafkaOffset>>, SourceError> {
    if let Some(source) = event.event_source.as_deref() {
        if source != "aws:kafka" && source != "SelfManagedKafka" {
            return Err(SourceError::MalformedEvent {
                source_kind: "kafka",
                index: 0,
                reason: format!("eventSource {source:?} is neither aws:kafka nor SelfManagedKafka"),
            });
        }
    }
    // The records map is read into a BTreeMap: processing follows its sorted keys.
    let mut records = Vec::new();
    let mut index = 0;
    for (group_key, group) in event.records {
        for r in group {
            let topic = match r.topic {
                Some(t) => t,
                None => group_key
                    .rsplit_once('-')
                    .map(|(t, _)| t.to_owned())
                    .ok_or_else(|| SourceError::MalformedEvent {
                        source_kind: "kafka",
                        index,
                        reason: format!("record has no topic and map key {group_key:?} is not <topic>-<partition>"),
                    })?,
            };
            let offset = u64::try_from(r.offset).map_err(|_| SourceError::MalformedEvent {
                source_kind: "kafka",
                index,
                reason: format!("negative offset {} in {topic}-{}", r.offset, r.partition),
            })?;
            if r.partition < 0 {
                return Err(SourceError::MalformedEvent {
                    source_kind: "kafka",
                    index,
                    reason: format!("negative partition {} in topic {topic}", r.partition),
                });
            }
            let mut defects = Vec::new();
            let mut decode = |field: &str, text: Option<String>| -> Option<Vec<u8>> {
                let text = text?;
                match B64.decode(text.as_bytes()) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        defects.push(format!("{field} is not valid base64 ({e})"));
                        Some(text.into_bytes())
                    }
                }
            };
            let key = decode("key", r.key);
            let payload = decode("value", r.value);
            let mut headers = Vec::new();
            for (k, v) in r.headers.into_iter().flat_map(|h| h.0) {
                let value = match v.to_bytes() {
                    Ok(bytes) => bytes,
                    Err(bad) => {
                        defects.push(format!("header {k:?} holds {bad}, which is not a byte"));
                        Some(Vec::new())
                    }
                };
                headers.push(Header {
                    key: k,
                    value,
                    raw_key: None,
                });
            }
            records.push((
                PartitionId::new(Source::Kafka, topic, r.partition.to_string()),
                Record {
                    cursor: KafkaOffset(offset),
                    key,
                    headers,
                    timestamp_ms: record_time(r.timestamp, r.timestamp_type.as_deref()),
                    payload,
                    defect: (!defects.is_empty()).then(|| defects.join("; ")),
                    schema_id: r.value_schema_metadata.as_ref().and_then(value_schema_id),
                },
            ));
            index += 1;
        }
    }
    Ok(group_by_partition(records))
}

/// A record's time, or none: Kafka writes -1 (`RecordBatch.NO_TIMESTAMP`) with
/// `NO_TIMESTAMP_TYPE` for a record without one (a message format before 0.10). The runner
/// reads such a record as no time through rdkafka (`Timestamp::to_millis`), so a stream lands
/// the same line through either path; -1 is never landed as the millisecond before 1970.
fn record_time(timestamp: Option<i64>, kind: Option<&str>) -> Option<i64> {
    match (timestamp, kind) {
        (_, Some("NO_TIMESTAMP_TYPE")) | (Some(-1), _) => None,
        (t, _) => t,
    }
}

/// The schema id of the value from the event's `valueSchemaMetadata` (present when the
/// mapping is configured with a schema registry): a Glue schema version UUID or a
/// Confluent integer id.
fn value_schema_id(metadata: &serde_json::Value) -> Option<SchemaId> {
    let id = metadata.get("schemaId")?;
    match id {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(SchemaId::Confluent),
        serde_json::Value::String(s) => {
            SchemaId::glue(s).or_else(|| s.parse().ok().map(SchemaId::Confluent))
        }
        _ => None,
    }
}

/// Handles one MSK or self-managed Kafka event.
pub async fn handle(
    app: &App,
    event: KafkaEvent,
    run_id: &str,
    now_ms: i64,
    metrics: &Metrics,
) -> Result<KafkaEventResponse, SourceError> {
    let batches = to_batches(event)?;
    let prepared = prepare(&app.connector, batches, |b| newest_record_age(b, now_ms))?;
    let run = RunContext {
        run_id,
        now_ms,
        metrics,
    };
    let outcomes = land_all(&app.lander, &prepared, run).await;
    let (mut permanent, transient) = failures(outcomes);
    if !permanent.is_empty() || (!transient.is_empty() && !app.env.kafka_partial_batch_response) {
        let count = permanent.len() + transient.len();
        let first = if permanent.is_empty() {
            transient
                .into_iter()
                .next()
                .map(|(_, _, e)| e)
                .expect("non-empty")
        } else {
            permanent.remove(0)
        };
        return Err(SourceError::Landing {
            count,
            first: Box::new(first),
        });
    }
    Ok(KafkaEventResponse {
        batch_item_failures: transient
            .into_iter()
            .map(|(id, first_unlanded, _)| KafkaBatchItemFailure {
                item_identifier: KafkaItemIdentifier {
                    partition: format!("{}-{}", id.stream, id.partition),
                    offset: first_unlanded.0 as i64,
                },
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_events_group_by_topic_and_partition() {
        for text in [
            include_str!("../../../events/msk.json"),
            include_str!("../../../events/self-managed-kafka.json"),
        ] {
            let event: KafkaEvent = serde_json::from_str(text).unwrap();
            let batches = to_batches(event).unwrap();
            assert!(batches.len() >= 3, "several topics and partitions");
            let topics: std::collections::BTreeSet<_> =
                batches.iter().map(|b| b.id.stream.clone()).collect();
            assert!(topics.len() >= 2);
            // Null keys survive as None; negative header bytes survive as bytes >= 0x80.
            let all: Vec<_> = batches.iter().flat_map(|b| b.records.iter()).collect();
            assert!(all.iter().any(|r| r.key.is_none()));
            assert!(
                all.iter().flat_map(|r| r.headers.iter()).any(|h| h
                    .value
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|b| *b >= 0x80))
            );
            for b in &batches {
                assert!(b.records.windows(2).all(|w| w[0].cursor < w[1].cursor));
            }
        }
    }

    #[test]
    fn a_record_without_a_time_lands_without_one() {
        // What the mapping delivers for a record Kafka stores without a timestamp, beside
        // ordinary ones; a null header value is a header without a value, not a failed event.
        let text = r#"{"eventSource":"aws:kafka","records":{"t-0":[
            {"topic":"t","partition":0,"offset":1,"timestamp":-1,"timestampType":"NO_TIMESTAMP_TYPE","key":null,"value":"e30=","headers":[{"h":null}]},
            {"topic":"t","partition":0,"offset":2,"timestamp":-1,"timestampType":"CREATE_TIME","key":null,"value":"e30=","headers":[]},
            {"topic":"t","partition":0,"offset":3,"timestamp":0,"timestampType":"CREATE_TIME","key":null,"value":"e30=","headers":[]},
            {"topic":"t","partition":0,"offset":4,"timestamp":1700000000000,"timestampType":"LOG_APPEND_TIME","key":null,"value":"e30=","headers":[]}
        ]}}"#;
        let event: KafkaEvent = serde_json::from_str(text).unwrap();
        let batches = to_batches(event).unwrap();
        let times: Vec<_> = batches[0].records.iter().map(|r| r.timestamp_ms).collect();
        assert_eq!(times, vec![None, None, Some(0), Some(1_700_000_000_000)]);
        let first = &batches[0].records[0];
        assert_eq!(first.defect, None);
        assert_eq!(first.headers.len(), 1);
        assert_eq!(
            (
                first.headers[0].key.as_str(),
                first.headers[0].value.as_deref()
            ),
            ("h", None)
        );
    }

    #[test]
    fn bad_base64_value_becomes_a_defect_not_a_drop() {
        let text = r#"{"eventSource":"aws:kafka","records":{"t-0":[{"topic":"t","partition":0,"offset":5,"timestamp":1700000000000,"timestampType":"CREATE_TIME","key":null,"value":"!!!not base64","headers":[]}]}}"#;
        let event: KafkaEvent = serde_json::from_str(text).unwrap();
        let batches = to_batches(event).unwrap();
        let r = &batches[0].records[0];
        assert!(
            r.defect
                .as_deref()
                .unwrap()
                .contains("value is not valid base64")
        );
        assert_eq!(r.payload.as_deref(), Some(&b"!!!not base64"[..]));
    }

    #[test]
    fn value_schema_metadata_gives_the_schema_id() {
        let text = r#"{"eventSource":"aws:kafka","records":{"t-0":[
            {"topic":"t","partition":0,"offset":1,"timestamp":1700000000000,"timestampType":"CREATE_TIME","key":null,"value":"e30=","headers":[],
             "valueSchemaMetadata":{"dataFormat":"AVRO","schemaId":"0F8B7C2E-1D2A-4C3B-9E8F-0123456789AB"}},
            {"topic":"t","partition":0,"offset":2,"timestamp":1700000000000,"timestampType":"CREATE_TIME","key":null,"value":"e30=","headers":[],
             "valueSchemaMetadata":{"dataFormat":"JSON","schemaId":"42"}},
            {"topic":"t","partition":0,"offset":3,"timestamp":1700000000000,"timestampType":"CREATE_TIME","key":null,"value":"e30=","headers":[]}]}}"#;
        let batches = to_batches(serde_json::from_str(text).unwrap()).unwrap();
        let ids: Vec<_> = batches[0]
            .records
            .iter()
            .map(|r| r.schema_id.clone())
            .collect();
        assert_eq!(
            ids,
            vec![
                SchemaId::glue("0f8b7c2e-1d2a-4c3b-9e8f-0123456789ab"),
                Some(SchemaId::Confluent(42)),
                None
            ]
        );
    }

    #[test]
    fn partial_response_shape() {
        let r = KafkaEventResponse {
            batch_item_failures: vec![KafkaBatchItemFailure {
                item_identifier: KafkaItemIdentifier {
                    partition: "orders-0".into(),
                    offset: 7,
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 7}}]})
        );
    }
}
