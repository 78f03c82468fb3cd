//! Poison records reach the DLQ with their coordinates and raw payload, and the rest of the
//! batch lands.

use base64::Engine as _;
use bronze::cursor::unpad;
use bronze::record::Source;
use integration_tests::*;
use serde_json::json;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn kinesis_poison_goes_to_dlq_and_rest_lands() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = event("kinesis-poison.json");
    let cursors = kinesis_cursors(&event);
    let response = watch.invoke("kinesis-consumer", &event).unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "poison does not block the shard"
    );

    let letters = stack.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    let poison = &event["Records"][2];
    assert_eq!(letter["source"], "kinesis");
    assert_eq!(letter["stream"], "clickstream");
    assert_eq!(letter["partition"], "shardId-000000000006");
    assert_eq!(letter["cursor"], poison["kinesis"]["sequenceNumber"]);
    assert_eq!(
        b64(letter["payload_base64"].as_str().unwrap()),
        b64(poison["kinesis"]["data"].as_str().unwrap())
    );
    assert_eq!(
        b64(letter["key_base64"].as_str().unwrap()),
        poison["kinesis"]["partitionKey"]
            .as_str()
            .unwrap()
            .as_bytes()
    );
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{letter}"
    );
    assert_eq!(letter["attempts"], 1);
    assert!(!letter["run_id"].as_str().unwrap().is_empty());
    assert!(letter["failed_at"].as_str().unwrap().ends_with('Z'));

    let landed = stack
        .committed_cursors(Source::Kinesis, "clickstream", "shardId-000000000006")
        .await;
    let expected: Vec<_> = cursors
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(landed, expected);
    let checkpoint = stack
        .checkpoint(Source::Kinesis, "clickstream", "shardId-000000000006")
        .await
        .unwrap();
    assert_eq!(
        unpad(&checkpoint.cursor),
        cursors.last().unwrap(),
        "the checkpoint moves past the poison"
    );
    assert_eq!(checkpoint.last_commit.dead_lettered, 1);
}

#[tokio::test]
async fn kafka_poison_goes_to_dlq_and_rest_lands() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    for (name, topic, offset) in [
        ("msk-poison.json", "orders", 105),
        ("self-managed-kafka-poison.json", "inventory", 1004),
    ] {
        let event = event(name);
        let response = watch.invoke("kafka-consumer", &event).unwrap();
        assert_eq!(response, json!({"batchItemFailures": []}));
        let letters = stack.dead_letters().await;
        assert_eq!(letters.len(), 1, "{name}: {letters:?}");
        assert_eq!(letters[0]["source"], "kafka");
        assert_eq!(letters[0]["stream"], topic);
        assert_eq!(letters[0]["partition"], "0");
        assert_eq!(letters[0]["cursor"], offset.to_string());
        assert_eq!(letters[0]["id"], format!("kafka/{topic}/0/{offset}"));
        assert_eq!(
            b64(letters[0]["payload_base64"].as_str().unwrap()),
            b"<xml>not json</xml>"
        );
        for ((t, p), offsets) in kafka_partitions(&event) {
            let expected: Vec<_> = offsets
                .iter()
                .filter(|o| !(t == topic && p == "0" && **o == offset.to_string()))
                .cloned()
                .collect();
            assert_eq!(
                stack.committed_cursors(Source::Kafka, &t, &p).await,
                expected,
                "{name} {t}-{p}"
            );
        }
    }
}

#[tokio::test]
async fn kafka_value_that_is_not_base64_is_dead_lettered_not_dropped() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = json!({"eventSource": "SelfManagedKafka", "records": {"raw-0": [
        {"topic": "raw", "partition": 0, "offset": 1, "timestamp": 1795737600000i64, "timestampType": "CREATE_TIME", "key": null, "value": "eyJhIjoxfQ==", "headers": []},
        {"topic": "raw", "partition": 0, "offset": 2, "timestamp": 1795737600001i64, "timestampType": "CREATE_TIME", "key": null, "value": "%%%", "headers": []}
    ]}});
    watch.invoke("kafka-consumer", &event).unwrap();
    let letters = stack.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("value is not valid base64"),
        "{}",
        letters[0]
    );
    assert_eq!(b64(letters[0]["payload_base64"].as_str().unwrap()), b"%%%");
    assert_eq!(
        stack.committed_cursors(Source::Kafka, "raw", "0").await,
        ["1"]
    );
    assert_eq!(
        unpad(
            &stack
                .checkpoint(Source::Kafka, "raw", "0")
                .await
                .unwrap()
                .cursor
        ),
        "2"
    );
}
