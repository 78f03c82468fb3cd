//! Kinesis Data Streams: events from the Kinesis event source mapping.
//!
//! One event holds records of one shard. Transient failures are answered with a partial
//! batch response (ReportBatchItemFailures) naming the first sequence number not landed, so
//! Lambda retries from there; permanent failures fail the invocation.

use super::{App, SourceError, failures, land_all, newest_record_age, prepare};
use crate::cursor::{Cursor, SequenceNumber};
use crate::engine::RunContext;
use crate::record::{PartitionBatch, PartitionId, Record, Source, group_by_partition};
use crate::telemetry::Metrics;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::streams::{KinesisBatchItemFailure, KinesisEventResponse};

/// Stream name from an event source ARN `arn:aws:kinesis:<region>:<account>:stream/<name>`.
pub fn stream_name(arn: &str) -> Option<&str> {
    arn.split_once(":stream/")
        .map(|(_, name)| name.split('/').next().unwrap_or(name))
}

/// Turns an event into partition batches, keeping each record's arrival time for lag.
/// Takes the event by value so payloads move into the records instead of being copied.
pub fn to_batches(event: KinesisEvent) -> Result<Vec<PartitionBatch<SequenceNumber>>, SourceError> {
    let malformed = |index: usize, reason: String| SourceError::MalformedEvent {
        source_kind: "kinesis",
        index,
        reason,
    };
    let mut records = Vec::with_capacity(event.records.len());
    for (index, r) in event.records.into_iter().enumerate() {
        let shard = r
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':').map(|(shard, _)| shard))
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
            .ok_or_else(|| malformed(index, "eventSourceARN is not a Kinesis stream ARN".into()))?;
        let cursor = SequenceNumber::parse(&r.kinesis.sequence_number)
            .map_err(|e| malformed(index, e.to_string()))?;
        records.push((
            PartitionId::new(Source::Kinesis, stream, shard),
            Record {
                cursor,
                key: Some(r.kinesis.partition_key.into_bytes()),
                headers: Vec::new(),
                timestamp_ms: Some(r.kinesis.approximate_arrival_timestamp.0.timestamp_millis()),
                payload: Some(r.kinesis.data.0),
                defect: None,
                schema_id: None,
            },
        ));
    }
    Ok(group_by_partition(records))
}

/// Handles one Kinesis event.
pub async fn handle(
    app: &App,
    event: KinesisEvent,
    run_id: &str,
    now_ms: i64,
    metrics: &Metrics,
) -> Result<KinesisEventResponse, SourceError> {
    let batches = to_batches(event)?;
    let prepared = prepare(&app.connector, batches, |b| newest_record_age(b, now_ms))?;
    let run = RunContext {
        run_id,
        now_ms,
        metrics,
    };
    let outcomes = land_all(&app.lander, &prepared, run).await;
    let (mut permanent, transient) = failures(outcomes);
    if !permanent.is_empty() {
        return Err(SourceError::Landing {
            count: permanent.len() + transient.len(),
            first: Box::new(permanent.remove(0)),
        });
    }
    let mut response = KinesisEventResponse::default();
    // Lambda retries from the lowest sequence number reported; report each shard's first
    // unlanded record.
    for (_, first_unlanded, _) in transient {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(first_unlanded.to_string());
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .all(|r| r.cursor.as_str().len() == 56)
        );
    }
}
