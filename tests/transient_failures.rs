//! When the retry budget for transient failures runs out, Kinesis answers with a partial
//! batch response naming the first record not landed, and Kafka fails the invocation or,
//! where enabled, answers with `batchItemFailures`. Nothing is committed.

use bronze::record::Source;
use integration_tests::*;
use serde_json::json;

/// An endpoint where nothing listens: every call is a connection failure (transient).
fn dead_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn kinesis_reports_first_unlanded_sequence_number() {
    let stack = Stack::new().await.unwrap();
    let dead = dead_endpoint();
    let watch = Watch::start(&stack, &[("AWS_ENDPOINT_URL", &dead)]).unwrap();
    let event = event("kinesis.json");
    let response = watch.invoke("kinesis-consumer", &event).unwrap();
    let first = &kinesis_cursors(&event)[0];
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": first}]})
    );
    assert!(
        stack
            .checkpoint(Source::Kinesis, "clickstream", "shardId-000000000006")
            .await
            .is_none()
    );
    let log = watch.log();
    assert!(log.contains("\"Retries\":"), "{log}");
    assert!(
        !log.contains("\"Retries\":0"),
        "SDK retries are counted: {log}"
    );
}

#[tokio::test]
async fn kafka_fails_or_reports_batch_item_failures() {
    let stack = Stack::new().await.unwrap();
    let dead = dead_endpoint();
    let event = event("msk.json");
    let watch = Watch::start(&stack, &[("AWS_ENDPOINT_URL", &dead)]).unwrap();
    let err = watch
        .invoke("kafka-consumer", &event)
        .expect_err("without partial responses the invocation fails");
    assert!(err.contains("transient failure"), "{err}");
    drop(watch);

    let watch = Watch::start(
        &stack,
        &[
            ("AWS_ENDPOINT_URL", &dead),
            ("KAFKA_PARTIAL_BATCH_RESPONSE", "true"),
        ],
    )
    .unwrap();
    let response = watch.invoke("kafka-consumer", &event).unwrap();
    let mut failures: Vec<_> = response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].clone())
        .collect();
    failures.sort_by_key(|f| f["partition"].as_str().unwrap().to_owned());
    assert_eq!(
        failures,
        vec![
            json!({"partition": "orders-0", "offset": 100}),
            json!({"partition": "orders-1", "offset": 42}),
            json!({"partition": "payments-0", "offset": 7}),
        ]
    );
    assert!(stack.keys().await.is_empty());
}
