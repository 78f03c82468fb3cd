//! The runner when Kafka misbehaves: refused credentials, and a broker that dies and comes
//! back mid-stream.

mod common;

use common::*;
use integration_tests::Stack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn wrong_sasl_credentials_fail_clearly_with_nothing_committed() {
    let stack = Stack::new().await.unwrap();
    // tansu with --authentication: it knows no user, so SCRAM fails as for a wrong password
    // (tansu 0.6's in-memory and S3 storage cannot store SCRAM users at all).
    let broker = Tansu::start_with("memory://tansu/", &["--authentication"]).unwrap();
    let section = format!(
        r#"  kafka:
    bootstrap_servers: {}
    group_id: g-auth
    topics: [secured]
    security: {{protocol: sasl_plaintext, mechanism: SCRAM-SHA-512}}
  http: {{bind: 127.0.0.1, port: 0}}
"#,
        broker.bootstrap
    );
    let config = connector_yaml(&section);
    let mut runner = RunnerProc::start(
        &stack,
        &config,
        &["run"],
        &[
            ("KAFKA_SASL_USERNAME", "bronze"),
            ("KAFKA_SASL_PASSWORD", "not-the-password"),
        ],
    )
    .unwrap();
    let status = runner.wait(Duration::from_secs(60)).unwrap();
    let log = runner.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("Kafka authentication or authorization failed"),
        "{log}"
    );
    assert!(log.contains("SASL"), "the error names SASL: {log}");
    assert!(
        !log.contains("not-the-password"),
        "the password was logged: {log}"
    );
    assert!(stack.keys().await.is_empty(), "something landed");

    // Credentials that are not configured at all are a configuration error (exit 2), named.
    let mut runner = RunnerProc::start(&stack, &config, &["run"], &[]).unwrap();
    let status = runner.wait(Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(2), "{}", runner.log());
    assert!(
        runner.log().contains("KAFKA_SASL_USERNAME"),
        "{}",
        runner.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let stack = Stack::new().await.unwrap();
    // S3 storage (on the local stack) so the broker's data survives its restart.
    let bucket = format!("tansu-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    stack
        .s3()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut broker = Tansu::start_with(&format!("s3://{bucket}/"), &[]).unwrap();
    let t = "restarts";
    broker.create_topic(t, 2).await.unwrap();
    broker.produce(t, 2, 0, 600).await.unwrap();
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, "g-restart", t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, t, 2, 600, Duration::from_secs(120), &[&runner])
        .await
        .unwrap();

    // The broker dies (SIGKILL) and comes back on the same port with the same storage.
    broker.restart().unwrap();
    // While the restarted broker reloads its storage, a produce request can time out after it
    // was written, and the test producer (no idempotence: tansu has no InitProducerId) then
    // writes that message a second time, at another offset (seen: 1201 and 1202 records for
    // 1200 messages). The topic then holds more records than messages, so the check here is
    // on what the runner owes the topic: every offset landed once, in order, and every
    // message present.
    broker.create_topic("warm-up", 1).await.unwrap();
    broker.produce("warm-up", 1, 0, 50).await.unwrap();
    broker.produce(t, 2, 600, 600).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut seen = std::collections::BTreeSet::new();
        for p in 0..2 {
            for line in stack
                .committed_lines(bronze::record::Source::Kafka, t, &p.to_string())
                .await
            {
                seen.insert(line["payload"]["n"].as_u64().unwrap());
            }
        }
        if seen.len() == 1200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 1200 messages committed: {}",
            seen.len(),
            runner.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());
    for p in 0..2 {
        let offsets: Vec<u64> = stack
            .committed_lines(bronze::record::Source::Kafka, t, &p.to_string())
            .await
            .iter()
            .map(|l| l["cursor"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            offsets.iter().enumerate().all(|(i, o)| *o == i as u64),
            "partition {p}: every offset from 0 landed once, in order: {offsets:?}"
        );
    }
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}

/// A recreated topic: a broker with in-memory storage restarts empty and the topic is created
/// again, its new log reaching past the checkpoint. The runner resumes *at* its checkpoint's
/// offset, finds there a record other than the one it landed, and must not skip the new
/// log's records below the checkpoint as already landed: the partition stops, says why and
/// how to reset it, lands and commits nothing of the new log, and the process keeps running
/// (no crash loop). (A new log shorter than the checkpoint: on Kafka the consumer's position
/// is then out of range and `auto.offset.reset` moves it back, which the pipeline refuses;
/// tansu answers such a fetch with nothing, so that case is covered by the pipeline's tests.)
#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_topic_stops_its_partition_instead_of_being_skipped() {
    let stack = Stack::new().await.unwrap();
    let mut broker = Tansu::start().unwrap();
    let t = "recreated";
    broker.create_topic(t, 1).await.unwrap();
    broker.produce(t, 1, 0, 40).await.unwrap();
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, "g-recreated", t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, t, 1, 40, Duration::from_secs(120), &[&runner])
        .await
        .unwrap();
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());

    // The broker comes back empty; the topic is created again with 65 new records.
    broker.restart().unwrap();
    broker.create_topic(t, 1).await.unwrap();
    broker.produce(t, 1, 1000, 65).await.unwrap();
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (health, metrics) = loop {
        if let Some(addr) = runner.http_address() {
            let (code, health) = get(&addr, "/healthz");
            let (_, metrics) = get(&addr, "/metrics");
            // Offsets 39 to 64 of the new log reached the runner and were refused.
            if code != 200 && metric(&metrics, "bronze_refused_records_total") == 26 {
                break (health, metrics);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner never refused the new log: {}",
            runner.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        health.contains("restarted below the checkpoint 39 ")
            && health.contains("is not the one landed there")
            && health.contains(
                "streaming-connector reset --source kafka --stream recreated --partition 0"
            ),
        "{health}"
    );
    assert_eq!(metric(&metrics, "bronze_buffered_bytes"), 0, "{metrics}");
    assert!(runner.exited().unwrap().is_none(), "{}", runner.log());
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());
    let ns: Vec<u64> = stack
        .committed_lines(bronze::record::Source::Kafka, t, "0")
        .await
        .iter()
        .map(|l| l["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..40).collect::<Vec<u64>>());
    assert_eq!(committed(&stack, t, 1).await, 40);
}
