//! Redelivery: replaying an event lands nothing new, and an overlapping event with other
//! batch boundaries lands only the new records.

use bronze::record::Source;
use integration_tests::*;
use serde_json::json;

#[tokio::test]
async fn kinesis_replay_and_overlapping_boundaries() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let full = event("kinesis.json");
    let cursors = kinesis_cursors(&full);
    let shard = "shardId-000000000006";

    watch
        .invoke("kinesis-consumer", &kinesis_slice(&full, 0..3))
        .unwrap();
    assert_eq!(
        stack
            .committed_cursors(Source::Kinesis, "clickstream", shard)
            .await,
        cursors[..3]
    );

    // Overlapping retry with a different boundary (as after bisect or a larger retry batch).
    let response = watch
        .invoke("kinesis-consumer", &kinesis_slice(&full, 1..5))
        .unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(
        stack
            .committed_cursors(Source::Kinesis, "clickstream", shard)
            .await,
        cursors
    );
    let log = stack
        .commit_log(Source::Kinesis, "clickstream", shard)
        .await;
    assert_eq!(log.len(), 2);
    assert_eq!(
        bronze::cursor::unpad(&log[1].first),
        cursors[3],
        "second commit starts after the checkpoint"
    );

    // Full replay: nothing new is written or committed.
    let keys_before = stack.keys().await;
    watch.invoke("kinesis-consumer", &full).unwrap();
    assert_eq!(
        stack
            .commit_log(Source::Kinesis, "clickstream", shard)
            .await
            .len(),
        2
    );
    assert_eq!(stack.keys().await, keys_before);
    assert_eq!(
        stack
            .committed_cursors(Source::Kinesis, "clickstream", shard)
            .await,
        cursors
    );
    assert!(watch.log().contains("records already landed, skipped"));
}

#[tokio::test]
async fn kafka_replay_and_overlapping_boundaries() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let msk = event("msk.json");
    watch.invoke("kafka-consumer", &msk).unwrap();
    let keys_before = stack.keys().await;
    watch.invoke("kafka-consumer", &msk).unwrap();
    assert_eq!(stack.keys().await, keys_before, "replay writes nothing");
    for ((topic, partition), offsets) in kafka_partitions(&msk) {
        assert_eq!(
            stack
                .committed_cursors(Source::Kafka, &topic, &partition)
                .await,
            offsets
        );
        assert_eq!(
            stack
                .commit_log(Source::Kafka, &topic, &partition)
                .await
                .len(),
            1
        );
    }

    // orders-0 held 100..=103; deliver 102..=105 (two old, two new).
    let template = msk["records"]["orders-0"][3].clone();
    let records: Vec<_> = (102..106)
        .map(|offset| {
            let mut r = template.clone();
            r["offset"] = json!(offset);
            r
        })
        .collect();
    let overlap = json!({"eventSource": "aws:kafka", "eventSourceArn": msk["eventSourceArn"], "records": {"orders-0": records}});
    watch.invoke("kafka-consumer", &overlap).unwrap();
    assert_eq!(
        stack.committed_cursors(Source::Kafka, "orders", "0").await,
        ["100", "101", "102", "103", "104", "105"]
    );
    assert_eq!(
        stack.commit_log(Source::Kafka, "orders", "0").await.len(),
        2
    );
}
