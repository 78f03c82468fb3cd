//! Both functions, through `cargo lambda invoke`, land the sample events completely and
//! readably, and each checkpoint equals the last cursor of its partition.

use base64::Engine as _;
use bronze::cursor::unpad;
use bronze::record::Source;
use integration_tests::*;
use serde_json::json;

#[tokio::test]
async fn kinesis_sample_lands_completely_and_checkpoints_last_cursor() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = event("kinesis.json");
    let response = watch
        .invoke("kinesis-consumer", &event)
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(response, json!({"batchItemFailures": []}));

    let shard = "shardId-000000000006";
    let lines = stack
        .committed_lines(Source::Kinesis, "clickstream", shard)
        .await;
    let cursors: Vec<_> = lines
        .iter()
        .map(|l| l["cursor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        cursors,
        kinesis_cursors(&event),
        "every record, once, in order"
    );
    for (line, record) in lines.iter().zip(event["Records"].as_array().unwrap()) {
        let data = base64::engine::general_purpose::STANDARD
            .decode(record["kinesis"]["data"].as_str().unwrap())
            .unwrap();
        let original: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(line["payload"], original, "payload landed as JSON");
        assert_eq!(line["key"], record["kinesis"]["partitionKey"]);
        assert_eq!(line["source"], "kinesis");
        assert_eq!(line["partition"], shard);
        assert_eq!(line["group"], "web");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(
            !line["run_id"].as_str().unwrap().is_empty(),
            "run id is the Lambda request id"
        );
    }
    let checkpoint = stack
        .checkpoint(Source::Kinesis, "clickstream", shard)
        .await
        .unwrap();
    assert_eq!(
        unpad(&checkpoint.cursor),
        kinesis_cursors(&event).last().unwrap()
    );
    // The object key is derived from the data: partition and cursor range, no clock, no uuid.
    let key = checkpoint.last_commit.object_key.unwrap();
    assert!(
        key.starts_with("bronze/source=kinesis/stream=clickstream/partition=shardId-000000000006/"),
        "{key}"
    );
    assert!(
        key.ends_with(&format!(
            "{:0>128}.jsonl.gz",
            kinesis_cursors(&event).last().unwrap()
        )),
        "{key}"
    );
    // The function emitted EMF metrics and JSON logs with coordinates.
    let log = watch.log();
    assert!(
        log.contains("\"CloudWatchMetrics\""),
        "EMF line missing:\n{log}"
    );
    assert!(log.contains("\"Messages\":5"), "{log}");
    assert!(
        log.contains("\"partition\":\"shardId-000000000006\""),
        "{log}"
    );
}

#[tokio::test]
async fn kafka_samples_land_completely_for_msk_and_self_managed() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    for name in ["msk.json", "self-managed-kafka.json"] {
        let event = event(name);
        let response = watch
            .invoke("kafka-consumer", &event)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", watch.log()));
        assert_eq!(response, json!({"batchItemFailures": []}), "{name}");
        for ((topic, partition), offsets) in kafka_partitions(&event) {
            assert_eq!(
                stack
                    .committed_cursors(Source::Kafka, &topic, &partition)
                    .await,
                offsets,
                "{name} {topic}-{partition}"
            );
            let checkpoint = stack
                .checkpoint(Source::Kafka, &topic, &partition)
                .await
                .unwrap();
            assert_eq!(
                unpad(&checkpoint.cursor),
                offsets.last().unwrap().as_str(),
                "{topic}-{partition}"
            );
        }
    }
    // Null keys stay null; header bytes, negative ones included, survive.
    let lines = stack.committed_lines(Source::Kafka, "orders", "0").await;
    assert_eq!(lines[2]["cursor"], "102");
    assert!(lines[2]["key"].is_null(), "offset 102 has a null key");
    assert_eq!(lines[2]["key_encoding"], serde_json::Value::Null);
    assert_eq!(lines[2]["headers"][1]["key"], "bin");
    assert_eq!(
        lines[2]["headers"][1]["value_base64"], "/4AAfw==",
        "bytes [-1, -128, 0, 127] as sent"
    );
    assert_eq!(lines[1]["key"], "orders-key-101");
    // Payments are keyed by SHA-256 per the connector config.
    let payments = stack.committed_lines(Source::Kafka, "payments", "0").await;
    assert_eq!(payments[1]["key_encoding"], "sha256");
}
