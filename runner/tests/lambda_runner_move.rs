//! A stream moves from the Lambda path to the runner and back with no loss and no duplicate:
//! both read and write the same checkpoints, keys and commit log.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use integration_tests::{Stack, Watch};
use serde_json::json;
use std::time::Duration;

/// An MSK event holding messages `range` of a one-partition topic (message n at offset n,
/// as `Tansu::produce` writes them).
fn msk_event(topic: &str, range: std::ops::Range<u64>) -> serde_json::Value {
    let records: Vec<_> = range
        .map(|n| {
            json!({
                "topic": topic,
                "partition": 0,
                "offset": n,
                "timestamp": 1_700_000_000_000u64 + n,
                "timestampType": "CREATE_TIME",
                "key": B64.encode(format!("k{n}")),
                "value": B64.encode(format!("{{\"n\":{n}}}")),
                "headers": [],
            })
        })
        .collect();
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/local/abc",
        "bootstrapServers": "127.0.0.1:9092",
        "records": { format!("{topic}-0"): records },
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_to_runner_and_back_lands_each_record_once() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = format!("moving-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    broker.create_topic(&t, 1).await.unwrap();
    broker.produce(&t, 1, 0, 100).await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();

    // 1. The Lambda mapping lands offsets 0..=39.
    watch
        .invoke("kafka-consumer", &msk_event(&t, 0..40))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(committed(&stack, &t, 1).await, 40);

    // 2. The runner takes over and resumes at offset 40.
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, &format!("g-{t}"), &t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &t, 1, 100, Duration::from_secs(120), &[&runner])
        .await
        .unwrap();
    assert!(
        runner.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        runner.log()
    );

    // 3. Back to Lambda, with a batch that overlaps what the runner landed: only 100.. land.
    broker.produce(&t, 1, 100, 50).await.unwrap();
    watch
        .invoke("kafka-consumer", &msk_event(&t, 90..150))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(committed(&stack, &t, 1).await, 150);

    assert_exactly_once(&stack, &t, 1, 150).await;
    let log = stack
        .commit_log(bronze::record::Source::Kafka, &t, "0")
        .await;
    assert!(
        log.first().unwrap().run_id != log[1].run_id,
        "the runner did not take over"
    );
    assert_eq!(bronze::cursor::unpad(&log.last().unwrap().first), "100");
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}
