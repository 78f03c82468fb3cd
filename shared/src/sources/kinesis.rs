//! Kinesis Data Streams: events from the Kinesis event source mapping.
//!
//! One event holds records of one shard. Transient failures are answered with a partial
//! batch response (ReportBatchItemFailures) naming the first sequence number not landed, so
//! Lambda retries from there; permanent failures fail the invocation.

pub use super::event::KinesisEvent;
use super::event::{KinesisPayload, seconds_text_to_millis};
use super::kpl;
use super::{App, SourceError, failures, land_all, newest_record_age, prepare};
use crate::cursor::{Cursor, KinesisCursor, SequenceNumber};
use crate::engine::RunContext;
use crate::record::{Header, PartitionBatch, PartitionId, Record, Source, group_by_partition};
use crate::telemetry::Metrics;
use aws_lambda_events::streams::{KinesisBatchItemFailure, KinesisEventResponse};
/// Stream name from an event source ARN `arn:aws:kinesis:<region>:<account>:stream/<name>`.
pub fn stream_name(arn: &str) -> Option<&str> {
    arn.split_once(":stream/")
        .map(|(_, name)| name.split('/').next().unwrap_or(name))
}

/// The `eventSource` of every record a Kinesis event source mapping delivers.
pub const EVENT_SOURCE: &str = "aws:kinesis";

/// A record that starts with the KPL magic bytes but could not be deaggregated; it lands
/// whole, as the raw record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableAggregate {
    /// Its shard.
    pub partition: PartitionId,
    /// Its cursor.
    pub cursor: KinesisCursor,
    /// Why it could not be deaggregated.
    pub reason: String,
}

/// The header a user record's explicit hash key lands under (Kinesis records have no headers
/// of their own, so the name cannot collide).
pub const EXPLICIT_HASH_KEY_HEADER: &str = "kinesis.explicit_hash_key";

/// Turns an event into partition batches, keeping each record's arrival time for lag.
/// See [`to_batches_reporting`]; this drops the report of undecodable aggregates.
pub fn to_batches(event: KinesisEvent) -> Result<Vec<PartitionBatch<KinesisCursor>>, SourceError> {
    to_batches_reporting(event).map(|(batches, _)| batches)
}

/// Turns an event into partition batches, keeping each record's arrival time for lag.
/// Takes the event by value so payloads move into the records instead of being copied.
///
/// KPL aggregated records are deaggregated ([`super::kpl`]): each user record becomes its
/// own record with cursor `(sequence number, index)`, its own partition key and its explicit
/// hash key (as the [`EXPLICIT_HASH_KEY_HEADER`] header). A record with the magic bytes that
/// does not deaggregate is kept whole and reported in the second value.
///
/// A record from another event source, or without its shard, stream or a valid sequence
/// number, fails the event with [`SourceError::MalformedEvent`]. A `data` field that is not
/// valid base64 makes that record poison (dead-lettered with the text as it came).
pub fn to_batches_reporting(
    event: KinesisEvent,
) -> Result<
    (
        Vec<PartitionBatch<KinesisCursor>>,
        Vec<UndecodableAggregate>,
    ),
    SourceError,
> {
    let malformed = |index: usize, reason: String| SourceError::MalformedEvent {
        source_kind: "kinesis",
        index,
        reason,
    };
    let mut records = Vec::with_capacity(event.records.len());
    let mut undecodable = Vec::new();
    for (index, r) in event.records.into_iter().enumerate() {
        match r.event_source.as_deref() {
            Some(EVENT_SOURCE) => {}
            other => {
                return Err(malformed(
                    index,
                    format!(
                        "eventSource {other:?} is not {EVENT_SOURCE:?}: this function only lands Kinesis records"
                    ),
                ));
            }
        }
        let shard = r
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':').map(|(shard, _)| shard))
            .filter(|shard| !shard.is_empty())
            .ok_or_else(|| {
                malformed(
                    index,
                    "eventID has no shard id (expected shardId-...:<sequence number>)".into(),
                )
            })?;
        let stream = r
            .event_source_arn
            .as_deref()
            .and_then(stream_name)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| malformed(index, "eventSourceARN is not a Kinesis stream ARN".into()))?;
        let sequence = SequenceNumber::parse(&r.kinesis.sequence_number)
            .map_err(|e| malformed(index, e.to_string()))?;
        let timestamp_ms = r
            .kinesis
            .approximate_arrival_timestamp
            .as_deref()
            .map(|t| seconds_text_to_millis(t.get()))
            .transpose()
            .map_err(|e| malformed(index, format!("approximateArrivalTimestamp {e}")))?;
        let id = PartitionId::new(Source::Kinesis, stream, shard);
        let (landed, bad) = match r.kinesis.data {
            KinesisPayload::Bytes(bytes) => {
                records_of(sequence, r.kinesis.partition_key, bytes, timestamp_ms)
            }
            KinesisPayload::NotBase64 { text, reason } => {
                let mut record =
                    records_of(sequence, r.kinesis.partition_key, Vec::new(), timestamp_ms)
                        .0
                        .remove(0);
                record.payload = Some(text);
                record.defect = Some(format!("data is not valid base64 ({reason})"));
                (vec![record], None)
            }
        };
        if let Some(reason) = bad {
            undecodable.push(UndecodableAggregate {
                partition: id.clone(),
                cursor: KinesisCursor::plain(landed[0].cursor.sequence.clone()),
                reason,
            });
        }
        records.extend(landed.into_iter().map(|record| (id.clone(), record)));
    }
    Ok((group_by_partition(records), undecodable))
}

/// One Kinesis record (its data already base64-decoded, as GetRecords returns it) as the
/// records that land: the record itself, or the user records of a KPL aggregate, each with
/// its sub-sequence index, its own partition key and its explicit hash key (header
/// [`EXPLICIT_HASH_KEY_HEADER`]). The second value says why a record with the KPL magic bytes
/// could not be deaggregated (it then lands whole). The Lambda function and the runner both
/// build their records here, so a stream moving between them lands the same records.
pub fn records_of(
    sequence: SequenceNumber,
    partition_key: String,
    data: Vec<u8>,
    timestamp_ms: Option<i64>,
) -> (Vec<Record<KinesisCursor>>, Option<String>) {
    let record = |cursor, key: String, headers, payload| Record {
        cursor,
        key: Some(key.into_bytes()),
        headers,
        timestamp_ms,
        payload: Some(payload),
        defect: None,
        schema_id: None,
    };
    match kpl::deaggregate(data) {
        kpl::Deaggregated::Plain(payload) => (
            vec![record(
                KinesisCursor::plain(sequence),
                partition_key,
                Vec::new(),
                payload,
            )],
            None,
        ),
        kpl::Deaggregated::Undecodable { data, reason } => (
            vec![record(
                KinesisCursor::plain(sequence),
                partition_key,
                Vec::new(),
                data,
            )],
            Some(reason),
        ),
        kpl::Deaggregated::Aggregate(users) => (
            (0u32..)
                .zip(users)
                .map(|(sub, user)| {
                    let headers = user
                        .explicit_hash_key
                        .map(|hash| Header {
                            key: EXPLICIT_HASH_KEY_HEADER.to_owned(),
                            raw_key: None,
                            value: Some(hash.into_bytes()),
                        })
                        .into_iter()
                        .collect();
                    record(
                        KinesisCursor::user_record(sequence.clone(), sub),
                        user.partition_key,
                        headers,
                        user.data,
                    )
                })
                .collect(),
            None,
        ),
    }
}

/// Handles one Kinesis event.
///
/// Each stream lands in the mode its event source mapping's ParallelizationFactor calls for
/// ([`crate::mappings`]): interleaved above 1 (and when the mapping cannot be read), ordered
/// otherwise. A connector file stating another factor than the mapping's fails the
/// invocation before anything lands.
pub async fn handle(
    app: &App,
    event: KinesisEvent,
    run_id: &str,
    now_ms: i64,
    metrics: &Metrics,
) -> Result<KinesisEventResponse, SourceError> {
    let sources = event_source_arns(&event);
    let (batches, undecodable) = to_batches_reporting(event)?;
    for u in &undecodable {
        crate::telemetry::AggregateUndecodable {
            partition: &u.partition,
            cursor: &u.cursor.to_string(),
            reason: &u.reason,
            run_id,
        }
        .emit(metrics);
    }
    let mut prepared = prepare(&app.connector, batches, |b| newest_record_age(b, now_ms))?;
    for p in &mut prepared {
        landing_mode(app, &p.batch.id.stream, &sources, false)
            .await?
            .apply(&mut p.settings);
    }
    let run = RunContext {
        run_id,
        now_ms,
        metrics,
    };
    let mut outcomes = land_all(&app.lander, &prepared, run).await;
    recheck_skipped(app, &prepared, &mut outcomes, &sources, run).await?;
    let (mut permanent, transient) = failures(outcomes);
    if !permanent.is_empty() {
        return Err(SourceError::Landing {
            count: permanent.len() + transient.len(),
            first: Box::new(permanent.remove(0)),
        });
    }
    let mut response = KinesisEventResponse::default();
    // Lambda retries from the lowest sequence number reported; report each shard's first
    // unlanded record (for a user record, its aggregate's sequence number: the retry delivers
    // the whole aggregate again and the user records already landed are skipped by index).
    for (_, first_unlanded, _) in transient {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(first_unlanded.sequence.to_string());
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

/// Stream name -> the event source ARN its records carry (the first one seen).
fn event_source_arns(event: &KinesisEvent) -> std::collections::HashMap<String, String> {
    let mut arns = std::collections::HashMap::new();
    for r in &event.records {
        if let Some(arn) = r.event_source_arn.as_deref() {
            if let Some(name) = stream_name(arn) {
                arns.entry(name.to_owned())
                    .or_insert_with(|| arn.to_owned());
            }
        }
    }
    arns
}

/// The landing mode of a stream: its mapping's factor (read again first when `fresh`), checked
/// against the factor the connector file states.
async fn landing_mode(
    app: &App,
    stream: &str,
    sources: &std::collections::HashMap<String, String>,
    fresh: bool,
) -> Result<crate::mappings::LandingMode, crate::mappings::MappingError> {
    let declared = app
        .connector
        .declared_parallelization_factor(Source::Kinesis, stream);
    match sources.get(stream) {
        Some(arn) if fresh => app.mappings.mode_now(stream, arn, declared).await,
        Some(arn) => app.mappings.mode(stream, arn, declared).await,
        // Every record names its stream through its ARN, so this is not reached.
        None => crate::mappings::effective_mode(declared, &Ok(None)),
    }
}

/// Ordered mode skipped records as already landed, or lost a commit race to a concurrent
/// batch of the same shard. Either this is a redelivery, or the mapping's factor was raised
/// since it was read and another lane moved the checkpoint past these records. The mapping is
/// read again; when the stream now lands interleaved, the records ordered mode did not land
/// are landed in interleaved mode (a redelivery of records that were in fact landed can then
/// land a duplicate, never lose one).
async fn recheck_skipped(
    app: &App,
    prepared: &[super::Prepared<KinesisCursor>],
    outcomes: &mut [(PartitionId, crate::engine::PartitionOutcome<KinesisCursor>)],
    sources: &std::collections::HashMap<String, String>,
    run: RunContext<'_>,
) -> Result<(), SourceError> {
    use crate::engine::{EngineError, PartitionOutcome};
    use crate::ports::PortError;
    for (p, (_, outcome)) in prepared.iter().zip(outcomes.iter_mut()) {
        if p.settings.parallelization_factor > 1 {
            continue;
        }
        let not_landed = match outcome {
            PartitionOutcome::Landed { skipped, .. }
            | PartitionOutcome::AlreadyLanded { skipped }
                if *skipped > 0 =>
            {
                *skipped
            }
            PartitionOutcome::Failed {
                error:
                    EngineError::Port {
                        source: PortError::CheckpointMoved { .. },
                        ..
                    },
                ..
            } => p.batch.records.len(),
            _ => continue,
        };
        tracing::info!(
            source = %p.batch.id.source, stream = %p.batch.id.stream,
            partition = %p.batch.id.partition, records = not_landed, run_id = run.run_id,
            "ordered mode skipped records: reading the event source mapping again"
        );
        let mode = landing_mode(app, &p.batch.id.stream, sources, true).await?;
        if mode == crate::mappings::LandingMode::Ordered {
            continue;
        }
        let mut settings = p.settings.clone();
        mode.apply(&mut settings);
        let batch = PartitionBatch {
            id: p.batch.id.clone(),
            records: p.batch.records[..not_landed].to_vec(),
        };
        let relanded = app.lander.land(&batch, &settings, run).await;
        if matches!(outcome, PartitionOutcome::Failed { .. })
            || matches!(relanded, PartitionOutcome::Failed { .. })
        {
            *outcome = relanded;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    #[test]
    fn stream_name_from_arn() {
        assert_eq!(
            stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/clicks"),
            Some("clicks")
        );
        assert_eq!(
            stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/clicks/consumer/c:1"),
            Some("clicks")
        );
        assert_eq!(stream_name("arn:aws:sqs:us-east-1:1:q"), None);
    }

    #[test]
    fn sample_event_groups_by_shard() {
        let event: KinesisEvent =
            serde_json::from_str(include_str!("../../../events/kinesis.json")).unwrap();
        let batches = to_batches(event).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].id.stream, "clickstream");
        assert!(batches[0].id.partition.starts_with("shardId-"));
        assert!(
            batches[0]
                .records
                .windows(2)
                .all(|w| w[0].cursor < w[1].cursor)
        );
        assert!(
            batches[0]
                .records
                .iter()
                .all(|r| r.cursor.sub.is_none() && r.cursor.sequence.as_str().len() == 56)
        );
    }

    fn record(seq: &str, key: &str, data: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": key,
                "sequenceNumber": seq,
                "data": B64.encode(data),
                "approximateArrivalTimestamp": 1764201600.5
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("shardId-000000000001:{seq}"),
            "eventName": "aws:kinesis:record",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
        })
    }

    fn event(records: Vec<serde_json::Value>) -> KinesisEvent {
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    fn users() -> Vec<kpl::UserRecord> {
        vec![
            kpl::UserRecord {
                partition_key: "a".into(),
                explicit_hash_key: None,
                data: b"{\"n\":1}".to_vec(),
            },
            kpl::UserRecord {
                partition_key: "b".into(),
                explicit_hash_key: Some("42".into()),
                data: b"{\"n\":2}".to_vec(),
            },
            kpl::UserRecord {
                partition_key: "a".into(),
                explicit_hash_key: None,
                data: b"{\"n\":3}".to_vec(),
            },
        ]
    }

    #[test]
    fn aggregates_become_one_record_per_user_record() {
        let mut bad = kpl::aggregate(&users());
        bad[5] ^= 1;
        let (batches, undecodable) = to_batches_reporting(event(vec![
            record("10", "p", b"{}"),
            record("20", "ignored", &kpl::aggregate(&users())),
            record("30", "q", &bad),
        ]))
        .unwrap();
        let records = &batches[0].records;
        let cursors: Vec<String> = records.iter().map(|r| r.cursor.to_string()).collect();
        assert_eq!(cursors, ["10", "20:0", "20:1", "20:2", "30"]);
        let keys: Vec<&[u8]> = records.iter().map(|r| r.key.as_deref().unwrap()).collect();
        assert_eq!(keys, [&b"p"[..], b"a", b"b", b"a", b"q"]);
        assert_eq!(records[2].payload.as_deref(), Some(&b"{\"n\":2}"[..]));
        assert_eq!(
            records[2].headers,
            vec![Header {
                key: EXPLICIT_HASH_KEY_HEADER.into(),
                raw_key: None,
                value: Some(b"42".to_vec())
            }]
        );
        assert!(records[1].headers.is_empty());
        assert!(
            records
                .iter()
                .all(|r| r.timestamp_ms == Some(1_764_201_600_500))
        );
        // The undecodable aggregate lands whole and is reported.
        assert_eq!(records[4].payload.as_deref(), Some(&bad[..]));
        assert_eq!(undecodable.len(), 1);
        assert_eq!(undecodable[0].cursor.to_string(), "30");
        assert!(undecodable[0].reason.contains("MD5"));
    }

    /// A checkpoint inside an aggregate (the runner may land part of one): the redelivered
    /// aggregate lands only its user records above it.
    #[tokio::test]
    async fn a_checkpoint_inside_an_aggregate_skips_by_sub_sequence() {
        use crate::engine::{Lander, PartitionOutcome};
        use crate::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
        use std::sync::Arc;
        let faults = Faults::new();
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let lander = Lander::new(
            Arc::new(MemoryObjectStore::new(faults.clone())),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        let connector = crate::config::ConnectorConfig::from_yaml(include_str!(
            "../../../config/connector.yaml"
        ))
        .unwrap();
        let settings = connector
            .stream(Source::Kinesis, "clickstream")
            .unwrap()
            .clone();
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "r",
            now_ms: 1_764_201_600_600,
            metrics: &metrics,
        };
        let all = to_batches(event(vec![record("20", "k", &kpl::aggregate(&users()))]))
            .unwrap()
            .remove(0);
        let first_two = PartitionBatch {
            id: all.id.clone(),
            records: all.records[..2].to_vec(),
        };
        assert!(matches!(
            lander.land(&first_two, &settings, run).await,
            PartitionOutcome::Landed { .. }
        ));
        match lander.land(&all, &settings, run).await {
            PartitionOutcome::Landed { commit, skipped } => {
                assert_eq!((commit.records, skipped), (1, 2));
                assert_eq!(
                    commit.first,
                    KinesisCursor::parse("20:2").unwrap().sortable()
                );
            }
            other => panic!("{other:?}"),
        }
        let checkpoint = crate::ports::StateStore::checkpoint(&*state, &all.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            checkpoint.cursor,
            KinesisCursor::parse("20:2").unwrap().sortable()
        );
    }
}
