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
    // Warm the restarted broker up on another topic first: while it reloads its storage, a
    // produce request can time out after it was written, and the test producer (no
    // idempotence: tansu has no InitProducerId) then writes that message twice. That would be
    // a second record in the topic, not a duplicate landing, but it would break the count.
    broker.create_topic("warm-up", 1).await.unwrap();
    broker.produce("warm-up", 1, 0, 50).await.unwrap();
    broker.produce(t, 2, 600, 600).await.unwrap();
    wait_committed(&stack, t, 2, 1200, Duration::from_secs(180), &[&runner])
        .await
        .unwrap();
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());
    assert_exactly_once(&stack, t, 2, 1200).await;
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}
