//! A Kinesis mapping's ParallelizationFactor is learned from the mapping itself (moto's
//! `ListEventSourceMappings`), never from a hand-kept copy: lanes of one shard land every
//! record exactly once, a connector file that disagrees with the mapping is an error naming
//! both values, an unreadable mapping lands in interleaved mode with a warning, and a factor
//! changed on the mapping is picked up by the next invocations.
//!
//! Lambda's lanes are simulated as Lambda forms them: 100 records of one shard, grouped by
//! partition key into 4 lanes (each lane in sequence order), 2 batches per lane, invoked with
//! the lanes interleaved, in three rounds (rounds 2 and 3 redeliver everything).

use bronze::record::Source;
use integration_tests::mapping::MotoMapping;
use integration_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const SHARD: &str = "shardId-000000000000";
const LANES: usize = 4;
const RECORDS: usize = 100;

/// A 56-digit sequence number, increasing with `i`.
fn sequence_number(i: usize) -> String {
    format!(
        "49590338271490256608559692538361571095921575{:012}",
        (i + 1) * 1000
    )
}

fn record(stream_arn: &str, i: usize) -> Value {
    use base64::Engine as _;
    let lane = i % LANES;
    let data =
        base64::engine::general_purpose::STANDARD.encode(format!(r#"{{"n":{i},"lane":{lane}}}"#));
    let seq = sequence_number(i);
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": format!("key-{lane}"),
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": 1795737600.25
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{SHARD}:{seq}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream_arn
    })
}

/// The events Lambda would send with 4 lanes for records `range` of the shard: each lane's
/// records in order, cut into 2 batches, lanes interleaved (lane 0 batch 0, lane 1 batch 0,
/// ..., lane 0 batch 1, ...), the lane order rotated by `rotate`.
fn lane_events(stream_arn: &str, range: std::ops::Range<usize>, rotate: usize) -> Vec<Value> {
    let lanes: Vec<Vec<usize>> = (0..LANES)
        .map(|l| range.clone().filter(|i| i % LANES == l).collect())
        .collect();
    let mut events = Vec::new();
    for batch in 0..2 {
        for k in 0..LANES {
            let lane = &lanes[(k + rotate) % LANES];
            let half = lane.len().div_ceil(2);
            let part = if batch == 0 {
                &lane[..half]
            } else {
                &lane[half..]
            };
            if !part.is_empty() {
                let records: Vec<Value> = part.iter().map(|&i| record(stream_arn, i)).collect();
                events.push(json!({ "Records": records }));
            }
        }
    }
    events
}

/// One event with records `range` in order (what a mapping with factor 1 sends).
fn ordered_event(stream_arn: &str, range: std::ops::Range<usize>) -> Value {
    let records: Vec<Value> = range.map(|i| record(stream_arn, i)).collect();
    json!({ "Records": records })
}

/// Invokes every event; each must succeed with no batch item failures.
fn invoke_all(watch: &Watch, events: &[Value]) {
    for event in events {
        let response = watch
            .invoke("kinesis-consumer", event)
            .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
        assert_eq!(
            response,
            json!({"batchItemFailures": []}),
            "{}",
            watch.log()
        );
    }
}

/// Committed records of the shard, audited through the commit log: (distinct sequence
/// numbers, total committed lines).
async fn committed(stack: &Stack, stream: &str) -> (BTreeSet<String>, usize) {
    let cursors = stack
        .committed_cursors(Source::Kinesis, stream, SHARD)
        .await;
    let total = cursors.len();
    (cursors.into_iter().collect(), total)
}

/// Three rounds of lanes over all records; returns (distinct landed, total landed).
async fn three_rounds(stack: &Stack, watch: &Watch, mapping: &MotoMapping) -> (usize, usize) {
    for round in 0..3 {
        invoke_all(watch, &lane_events(&mapping.stream_arn, 0..RECORDS, round));
    }
    let (distinct, total) = committed(stack, &mapping.stream).await;
    eprintln!(
        "lanes: {} of {RECORDS} records landed ({total} committed lines)",
        distinct.len()
    );
    (distinct.len(), total)
}

fn all_sequence_numbers(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(sequence_number).collect()
}

/// A connector file that declares `factor` for `stream`.
fn connector_file(stream: &str, factor: u32) -> std::path::PathBuf {
    let text = format!(
        r#"
manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: {{ layer: bronze }}
runtime: {{ kind: aws_lambda }}
defaults: {{ key_strategy: raw, cursor_strategy: last_landed }}
streams:
  strategy: config_defined
  items:
    - {{ name: {stream}, source: kinesis, parallelization_factor: {factor} }}
"#
    );
    let path = std::env::temp_dir().join(format!("connector-{stream}-{factor}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn lanes_land_every_record_once_with_the_mappings_factor() {
    let stack = Stack::new().await.unwrap();
    // Factor 4 on the mapping, nothing about the stream in the connector file.
    let mapping = MotoMapping::create(4).unwrap();
    let watch = Watch::start(&stack, &[("BRONZE_FUNCTION_NAME", &mapping.function)]).unwrap();
    let (distinct, total) = three_rounds(&stack, &watch, &mapping).await;
    assert_eq!(
        (distinct, total),
        (RECORDS, RECORDS),
        "every record exactly once\n{}",
        watch.log()
    );
    assert_eq!(
        committed(&stack, &mapping.stream).await.0,
        all_sequence_numbers(0..RECORDS)
    );
    assert!(stack.dead_letters().await.is_empty());
    assert!(
        watch
            .log()
            .contains("parallelization factor learned from the event source mapping"),
        "{}",
        watch.log()
    );
}

#[tokio::test]
async fn file_and_mapping_that_disagree_fail_naming_both_values() {
    for (in_mapping, in_file) in [(1, 4), (4, 1)] {
        let stack = Stack::new().await.unwrap();
        let mapping = MotoMapping::create(in_mapping).unwrap();
        let file = connector_file(&mapping.stream, in_file);
        let watch = Watch::start(
            &stack,
            &[
                ("BRONZE_FUNCTION_NAME", &mapping.function),
                ("CONNECTOR_CONFIG", file.to_str().unwrap()),
            ],
        )
        .unwrap();
        let err = watch
            .invoke(
                "kinesis-consumer",
                &ordered_event(&mapping.stream_arn, 0..10),
            )
            .expect_err("a file that disagrees with the mapping fails the invocation");
        // `cargo lambda invoke` wraps the message in a box: read it as one line.
        let err = err
            .split_whitespace()
            .filter(|w| *w != "│")
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            err.contains(&format!("parallelization_factor {in_file}"))
                && err.contains(&format!("ParallelizationFactor {in_mapping}"))
                && err.contains(&mapping.stream),
            "the error names the stream and both values: {err}"
        );
        assert!(stack.keys().await.is_empty(), "nothing lands");
        assert!(
            stack
                .commit_log(Source::Kinesis, &mapping.stream, SHARD)
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn unreadable_mapping_lands_interleaved_with_one_warning() {
    let stack = Stack::new().await.unwrap();
    let mapping = MotoMapping::create(4).unwrap();
    // The Lambda API answers nothing: a port that refuses connections.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let watch = Watch::start(
        &stack,
        &[
            ("BRONZE_FUNCTION_NAME", &mapping.function),
            ("AWS_ENDPOINT_URL_LAMBDA", &endpoint),
        ],
    )
    .unwrap();
    let (distinct, total) = three_rounds(&stack, &watch, &mapping).await;
    assert_eq!(
        (distinct, total),
        (RECORDS, RECORDS),
        "no loss\n{}",
        watch.log()
    );
    let log = watch.log();
    let warning = "cannot read the event source mappings: landing Kinesis in interleaved mode";
    assert_eq!(
        log.matches(warning).count(),
        1,
        "one warning per cold start\n{log}"
    );
    assert_eq!(
        log.matches(r#""ParallelizationFactorUnknown":1"#).count(),
        1,
        "one EMF metric per cold start\n{log}"
    );
}

/// Factor 1 on the mapping: 20 records land in order (with the checkpoint). Then the mapping
/// is changed to 4 and the other 80 records come as lanes, three rounds. Every record must be
/// committed exactly once. Returns the watcher for its log.
async fn raise_factor_between_invocations(refresh: Option<&str>) -> Watch {
    let stack = Stack::new().await.unwrap();
    let mapping = MotoMapping::create(1).unwrap();
    let mut env = vec![("BRONZE_FUNCTION_NAME", mapping.function.as_str())];
    if let Some(seconds) = refresh {
        env.push(("BRONZE_MAPPING_REFRESH_SECONDS", seconds));
    }
    let watch = Watch::start(&stack, &env).unwrap();
    invoke_all(&watch, &[ordered_event(&mapping.stream_arn, 0..20)]);
    assert!(
        stack
            .checkpoint(Source::Kinesis, &mapping.stream, SHARD)
            .await
            .is_some(),
        "factor 1 lands in ordered mode"
    );
    mapping.set_factor(4).unwrap();
    for round in 0..3 {
        invoke_all(
            &watch,
            &lane_events(&mapping.stream_arn, 20..RECORDS, round),
        );
    }
    let (distinct, total) = committed(&stack, &mapping.stream).await;
    assert_eq!(
        distinct,
        all_sequence_numbers(0..RECORDS),
        "{}",
        watch.log()
    );
    assert_eq!(total, RECORDS, "exactly once\n{}", watch.log());
    watch
}

/// With a refresh interval of 0 the next invocation reads the new factor.
#[tokio::test]
async fn factor_changed_on_the_mapping_is_used_by_the_next_invocations() {
    raise_factor_between_invocations(Some("0")).await;
}

/// With the default refresh interval (5 minutes) the cached factor 1 is stale, but the first
/// lane batch that ordered mode skips makes the function read the mapping again and land the
/// skipped records in interleaved mode.
#[tokio::test]
async fn a_stale_factor_is_corrected_when_ordered_mode_would_skip() {
    let watch = raise_factor_between_invocations(None).await;
    assert!(
        watch
            .log()
            .contains("ordered mode skipped records: reading the event source mapping again"),
        "{}",
        watch.log()
    );
}
