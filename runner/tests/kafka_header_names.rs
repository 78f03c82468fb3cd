//! Defect 10 end to end: a record whose Kafka header name is not UTF-8, produced to tansu
//! and consumed by the runner, is dead-lettered with the name's exact bytes (rdkafka's own
//! header accessors panic on it), and the records around it land.

mod common;

use base64::Engine as _;
use common::*;
use integration_tests::Stack;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_with_its_bytes() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = format!("hdr-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    broker.create_topic(&t, 1).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    let name: &[u8] = b"\xff\xfetrace";
    for n in 0..3u8 {
        let headers = if n == 1 {
            streaming_connector::kafka_headers::owned_headers(&[
                (b"ok", Some(b"1")),
                (name, Some(b"v")),
            ])
        } else {
            streaming_connector::kafka_headers::owned_headers(&[(b"ok", Some(b"1"))])
        };
        let payload = format!("{{\"n\":{n}}}");
        producer
            .send(
                FutureRecord::to(&t)
                    .key("k")
                    .payload(&payload)
                    .partition(0)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, &format!("g-{t}"), &t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &t, 1, 3, Duration::from_secs(120), &[&runner])
        .await
        .unwrap();
    assert!(runner.terminate(Duration::from_secs(60)).unwrap().success());
    assert!(!runner.log().contains("panicked"), "{}", runner.log());

    let landed: Vec<String> = stack
        .committed_cursors(bronze::record::Source::Kafka, &t, "0")
        .await;
    assert_eq!(landed, ["0", "2"]);
    let letters = stack.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["cursor"], "1");
    assert!(
        letter["reason"].as_str().unwrap().contains("not UTF-8"),
        "{letter}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        letter["header_keys_base64"],
        serde_json::json!([[1, b64.encode(name)]]),
        "{letter}"
    );
    assert_eq!(
        letter["headers"][0],
        serde_json::json!(["ok", b64.encode("1")])
    );
    assert_eq!(letter["headers"][1][1], b64.encode("v"));
}
