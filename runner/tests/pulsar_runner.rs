//! The runner against a Pulsar-protocol broker (pulsar-lite, through the test-only shim in
//! `tests/helpers/pulsar_shim.rs`; see the README's testing notes): a partitioned topic
//! lands exactly once across a kill -9 and restart, acknowledged only after commit.

mod common;

use common::*;
use integration_tests::Stack;
use integration_tests::pulsar::{PulsarLite, produce};
use integration_tests::pulsar_shim::PulsarShim;
use std::time::{Duration, Instant};

/// Records committed (landed or dead-lettered) per the commit logs of `partitions`.
async fn committed_pulsar(stack: &Stack, stream: &str, partitions: u32) -> u64 {
    let mut n = 0;
    for p in 0..partitions {
        for e in stack
            .commit_log(bronze::record::Source::Pulsar, stream, &p.to_string())
            .await
        {
            n += e.records + e.dead_lettered;
        }
    }
    n
}

async fn wait_pulsar(
    stack: &Stack,
    stream: &str,
    partitions: u32,
    total: u64,
    runner: &RunnerProc,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = committed_pulsar(stack, stream, partitions).await;
        assert!(n <= total, "{n} committed, more than the {total} produced");
        if n == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {total} committed: {}",
            runner.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_topic_lands_exactly_once_across_a_kill_9() {
    let stack = Stack::new().await.unwrap();
    let broker = PulsarLite::start_with_partitions(2).unwrap();
    let shim = PulsarShim::start(broker.addr).await.unwrap();
    let name = format!("events-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let topic = format!("persistent://public/default/{name}");
    let stream = format!("public/default/{name}");
    let payload = |i: usize| format!("{{\"n\":{i}}}").into_bytes();
    produce(&shim.url, &topic, 400, None, payload)
        .await
        .unwrap();
    let section = format!(
        r#"  pulsar:
    service_url: {}
    topics: ["{topic}"]
    subscription: bronze
    subscription_type: failover
  files: {{max_records: 50, max_latency_ms: 500}}
  http: {{bind: 127.0.0.1, port: 0}}
"#,
        shim.url
    );
    let config = connector_yaml(&section);
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    // Kill it mid-stream, then produce more while it is down.
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_pulsar(&stack, &stream, 2).await < 100 {
        assert!(Instant::now() < deadline, "{}", runner.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.kill9();
    produce(&shim.url, &topic, 200, None, |i| payload(400 + i))
        .await
        .unwrap();
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_pulsar(&stack, &stream, 2, 600, &runner).await;
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());

    // Every message once, in message-id order per partition.
    let mut seen = vec![0u32; 600];
    for p in 0..2 {
        let lines = stack
            .committed_lines(bronze::record::Source::Pulsar, &stream, &p.to_string())
            .await;
        let mut previous: Option<bronze::cursor::PulsarMessageId> = None;
        for line in &lines {
            use bronze::cursor::Cursor as _;
            let c =
                bronze::cursor::PulsarMessageId::parse(line["cursor"].as_str().unwrap()).unwrap();
            assert!(
                previous.is_none_or(|x| x < c),
                "partition {p}: {c} after {previous:?}"
            );
            previous = Some(c);
            seen[line["payload"]["n"].as_u64().unwrap() as usize] += 1;
        }
    }
    assert!(
        seen.iter().all(|c| *c == 1),
        "not exactly once: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, c)| **c != 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    // Everything committed was acknowledged: the subscription has nothing left to deliver.
    let client = integration_tests::pulsar::client(&shim.url).await.unwrap();
    let mut consumer: pulsar::Consumer<Vec<u8>, pulsar::TokioExecutor> = client
        .consumer()
        .with_topic(&topic)
        .with_subscription("bronze")
        .with_subscription_type(pulsar::SubType::Failover)
        .build()
        .await
        .unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(3),
        futures::StreamExt::next(&mut consumer),
    )
    .await;
    assert!(
        next.is_err(),
        "the subscription still delivers a message: {:?}",
        next.map(|m| m.map(|m| m.map(|m| m.payload.data)))
    );
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}
