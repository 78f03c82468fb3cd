//! Regression tests for the first acceptance run, through the real functions on moto:
//! valid JSON that panicked or was changed lands byte for byte, record timestamps are exact
//! for every shape AWS sends, and a Kinesis event from another source is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bronze::record::Source;
use integration_tests::*;
use serde_json::{Value, json};

/// Payloads that panicked the landing (number out of range, 200-deep nesting, both with a
/// raw newline) or were silently changed (big integers, long decimals, duplicate keys).
fn edge_payloads() -> Vec<Vec<u8>> {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    vec![
        b"{\n \"big\": 1e400 \n}".to_vec(),
        format!("{{\n\"deep\": {deep}\n}}").into_bytes(),
        b"123456789012345678901234567890".to_vec(),
        b"{\"f\":1.0000000000000000001,\r\n\"n\":-0}".to_vec(),
        b"{\"a\":1,\"a\":2}".to_vec(),
        b"  {\"padded\": true}\n".to_vec(),
        b"\xEF\xBB\xBF{\"bom\":1}".to_vec(),
        vec![0xff, 0xfe, 0x00],
    ]
}

/// What a Bronze line holds for a payload: the inline JSON text, or the base64 bytes.
fn landed_bytes(raw_line: &str, line: &Value) -> Vec<u8> {
    match line["payload_encoding"].as_str().unwrap() {
        "json" => {
            let at = raw_line.find(",\"payload\":").unwrap() + 11;
            raw_line.as_bytes()[at..raw_line.len() - 1].to_vec()
        }
        "base64" => B64
            .decode(line["payload_base64"].as_str().unwrap())
            .unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
}

fn newline_as_space(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect()
}

/// The raw lines of every committed object of a partition, in commit order.
async fn committed_raw_lines(
    stack: &Stack,
    source: Source,
    stream: &str,
    part: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for entry in stack.commit_log(source, stream, part).await {
        if let Some(key) = entry.object_key {
            let body = bronze::ports::ObjectStore::get(&stack.objects(), &key)
                .await
                .unwrap()
                .unwrap();
            out.extend(bronze::bronze::read_raw_lines(&body).unwrap());
        }
    }
    out
}

fn kinesis_record(stream: &str, seq: u64, data: &[u8], arrival: Value, source: &str) -> Value {
    let seq = format!("4959033827149025660855969253836157109592157598913658{seq:04}");
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": format!("pk-{seq}"),
            "sequenceNumber": seq,
            "data": B64.encode(data),
            "approximateArrivalTimestamp": arrival
        },
        "eventSource": source,
        "eventVersion": "1.0",
        "eventID": format!("shardId-000000000000:{seq}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
        "awsRegion": "us-east-1",
        "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}")
    })
}

#[tokio::test]
async fn kinesis_payloads_land_byte_for_byte_with_exact_timestamps() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let stream = "raw-exact";
    // Arrival times AWS sends: whole seconds, one to three decimals (milliseconds ending in
    // 0 once read as 5, 25 and 98 ms), and more decimals than milliseconds.
    let arrivals = [
        (json!(1764201600.5), 1_764_201_600_500i64),
        (json!(1764201600.25), 1_764_201_600_250),
        (json!(1764201600.98), 1_764_201_600_980),
        (json!(1764201600.001), 1_764_201_600_001),
        (json!(1764201600.12345), 1_764_201_600_123),
        (json!(1764201600), 1_764_201_600_000),
        (json!(1764201600.5), 1_764_201_600_500),
        (json!(1764201600.999), 1_764_201_600_999),
    ];
    let payloads = edge_payloads();
    let records: Vec<Value> = payloads
        .iter()
        .zip(&arrivals)
        .enumerate()
        .map(|(i, (p, (t, _)))| kinesis_record(stream, i as u64, p, t.clone(), "aws:kinesis"))
        .collect();
    let response = watch
        .invoke("kinesis-consumer", &json!({ "Records": records }))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "{}",
        watch.log()
    );

    let shard = "shardId-000000000000";
    let raw = committed_raw_lines(&stack, Source::Kinesis, stream, shard).await;
    let lines = stack.committed_lines(Source::Kinesis, stream, shard).await;
    assert_eq!(lines.len(), payloads.len(), "every record landed once");
    for (i, ((raw, line), payload)) in raw.iter().zip(&lines).zip(&payloads).enumerate() {
        let landed = landed_bytes(raw, line);
        let expected = if line["payload_encoding"] == "json" {
            newline_as_space(payload)
        } else {
            payload.clone()
        };
        assert_eq!(landed, expected, "record {i} changed: {raw}");
        assert_eq!(line["timestamp_ms"], json!(arrivals[i].1), "record {i}");
    }
    // Only the two payloads that are not JSON (a BOM, invalid UTF-8) went to base64.
    let base64 = lines
        .iter()
        .filter(|l| l["payload_encoding"] == "base64")
        .count();
    assert_eq!(base64, 2);
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test]
async fn kinesis_event_from_another_source_is_refused() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let stream = "foreign";
    let records = vec![
        kinesis_record(stream, 1, b"{}", json!(1764201600.5), "aws:kinesis"),
        kinesis_record(stream, 2, b"{}", json!(1764201600.5), "aws:dynamodb"),
    ];
    let err = watch
        .invoke("kinesis-consumer", &json!({ "Records": records }))
        .expect_err("a foreign record fails the invocation");
    assert!(
        err.contains("eventSource") && err.contains("aws:dynamodb"),
        "{err}"
    );
    assert!(stack.keys().await.is_empty(), "nothing landed");
}

#[tokio::test]
async fn kafka_payloads_timestamps_and_headers_are_exact() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let topic = "raw-exact-kafka";
    let payloads = edge_payloads();
    let timestamps = [
        1_764_201_600_001i64,
        1_764_201_600_999,
        1_764_201_600_010,
        9_007_199_254_740_993,
        1,
        1_764_201_600_123,
        1_764_201_600_000,
        1_764_201_600_777,
    ];
    let mut records: Vec<Value> = payloads
        .iter()
        .zip(timestamps)
        .enumerate()
        .map(|(i, (p, ts))| {
            json!({
                "topic": topic, "partition": 0, "offset": i, "timestamp": ts,
                "timestampType": "CREATE_TIME", "key": B64.encode(format!("k{i}")),
                "value": B64.encode(p),
                "headers": [{"z-first": [1, -1]}, {"a-second": [104, 105]}]
            })
        })
        .collect();
    // A record Kafka holds without a time (-1, NO_TIMESTAMP_TYPE) and a header whose value is
    // null: no time (not 1969), and a header without a value (not a failed event).
    records.push(json!({
        "topic": topic, "partition": 0, "offset": payloads.len(), "timestamp": -1,
        "timestampType": "NO_TIMESTAMP_TYPE", "key": null, "value": B64.encode("{}"),
        "headers": [{"no-value": null}]
    }));
    let event = json!({
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "127.0.0.1:9092",
        "records": { format!("{topic}-0"): records }
    });
    let response = watch
        .invoke("kafka-consumer", &event)
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "{}",
        watch.log()
    );
    let raw = committed_raw_lines(&stack, Source::Kafka, topic, "0").await;
    let lines = stack.committed_lines(Source::Kafka, topic, "0").await;
    assert_eq!(lines.len(), payloads.len() + 1);
    let untimed = &lines[payloads.len()];
    assert_eq!(untimed["timestamp_ms"], Value::Null, "{untimed}");
    assert_eq!(untimed["timestamp"], Value::Null, "{untimed}");
    assert_eq!(
        untimed["headers"],
        json!([{"key": "no-value"}]),
        "{untimed}"
    );
    assert_eq!(untimed["payload"], json!({}));
    for (i, ((raw, line), payload)) in raw.iter().zip(&lines).zip(&payloads).enumerate() {
        let expected = if line["payload_encoding"] == "json" {
            newline_as_space(payload)
        } else {
            payload.clone()
        };
        assert_eq!(landed_bytes(raw, line), expected, "record {i}: {raw}");
        assert_eq!(line["timestamp_ms"], json!(timestamps[i]), "record {i}");
        // Headers keep their order and their bytes (-1 is 0xff).
        assert_eq!(line["headers"][0]["key"], "z-first");
        assert_eq!(line["headers"][0]["value_base64"], B64.encode([1u8, 0xff]));
        assert_eq!(line["headers"][1]["key"], "a-second");
        assert_eq!(line["headers"][1]["value"], "hi");
    }
}
