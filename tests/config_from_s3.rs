//! A deployed function reads its connector file from S3 (`CONNECTOR_CONFIG=s3://bucket/key`);
//! a bad file stops start-up with an error naming the field.

use bronze::record::Source;
use integration_tests::*;

const CONFIG: &str = r#"
manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: { layer: bronze }
runtime: { kind: aws_lambda }
defaults: { key_strategy: base64, cursor_strategy: last_landed, payload_format: bytes }
streams:
  strategy: config_defined
  items:
    - { name: orders, source: kafka, group: from-s3, payload_format: json }
"#;

#[tokio::test]
async fn connector_file_is_read_from_s3() {
    let stack = Stack::new().await.unwrap();
    stack
        .s3()
        .put_object()
        .bucket(&stack.bucket)
        .key("config/connector.yaml")
        .body(CONFIG.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let uri = format!("s3://{}/config/connector.yaml", stack.bucket);
    let watch = Watch::start(&stack, &[("CONNECTOR_CONFIG", &uri)]).unwrap();
    watch
        .invoke("kafka-consumer", &event("msk.json"))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    let orders = stack.committed_lines(Source::Kafka, "orders", "0").await;
    assert_eq!(
        orders[0]["group"], "from-s3",
        "stream settings from the S3 file"
    );
    assert_eq!(orders[0]["payload_encoding"], "json");
    assert_eq!(
        orders[0]["key_encoding"], "base64",
        "defaults from the S3 file"
    );
    let payments = stack.committed_lines(Source::Kafka, "payments", "0").await;
    assert_eq!(
        payments[0]["payload_encoding"], "base64",
        "unlisted stream uses the file's defaults"
    );
}

#[tokio::test]
async fn bad_connector_file_in_s3_fails_start_up_naming_the_field() {
    let stack = Stack::new().await.unwrap();
    let bad = CONFIG.replace("payload_format: json", "payload_format: xml");
    stack
        .s3()
        .put_object()
        .bucket(&stack.bucket)
        .key("bad.yaml")
        .body(bad.into_bytes().into())
        .send()
        .await
        .unwrap();
    let uri = format!("s3://{}/bad.yaml", stack.bucket);
    let watch = Watch::start(&stack, &[("CONNECTOR_CONFIG", &uri)]).unwrap();
    let err = watch
        .invoke("kafka-consumer", &event("msk.json"))
        .expect_err("start-up must fail");
    let all = format!("{err}\n{}", watch.log());
    assert!(all.contains("streams.items[0].payload_format"), "{all}");
    assert!(
        stack.keys().await.iter().all(|k| !k.contains("source=")),
        "nothing landed"
    );
}
