//! The runner against a real Kafka-protocol broker (tansu) and the local stack (moto):
//! landing and draining on SIGTERM, status and verify, a rebalance between two runners,
//! kill -9 and restart, and a pattern subscription picking up a new topic.

mod common;

use common::*;
use integration_tests::Stack;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn topic(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[tokio::test(flavor = "multi_thread")]
async fn lands_everything_drains_on_sigterm_and_verifies() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = topic("orders");
    broker.create_topic(&t, 3).await.unwrap();
    broker.produce(&t, 3, 0, 1000).await.unwrap();
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, &topic("g"), &t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &t, 3, 1000, WAIT, &[&runner])
        .await
        .unwrap();

    // The endpoints answer while it runs.
    let addr = runner
        .http_address()
        .expect("the runner logs its HTTP address");
    let health = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/healthz")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n");
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains(&format!(
            "bronze_messages_total{{source=\"kafka\",stream=\"{t}\"}} 1000"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("bronze_concurrency_limit"));

    // More records arrive; SIGTERM must land them before exiting 0.
    broker.produce(&t, 3, 1000, 500).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());
    // Whatever was polled before the signal is committed; the rest is read by the next run.
    let after_first = committed(&stack, &t, 3).await;
    assert!(after_first >= 1000);
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &t, 3, 1500, WAIT, &[&runner])
        .await
        .unwrap();
    let status = runner.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit {status:?}: {}", runner.log());
    assert_exactly_once(&stack, &t, 3, 1500).await;

    // status: checkpoint 499 per partition, lag 0.
    let mut status = RunnerProc::start(&stack, &config, &["status"], &[]).unwrap();
    assert!(status.wait(WAIT).unwrap().success(), "{}", status.log());
    let table = status.log();
    for p in 0..3 {
        let row = table
            .lines()
            .find(|l| {
                l.starts_with("kafka")
                    && l.contains(&t)
                    && l.split_whitespace().nth(2) == Some(&p.to_string())
            })
            .unwrap_or_else(|| panic!("no status row for partition {p}: {table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[3], "499", "{row}");
        assert_eq!(cols[4], "500", "{row}");
        assert_eq!(cols[5], "0", "{row}");
    }
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
    assert!(out.contains("1500 records landed"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_rebalance_mid_stream_without_loss_or_duplicate() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = topic("events");
    broker.create_topic(&t, 4).await.unwrap();
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, &topic("g"), &t, ""));
    broker.produce(&t, 4, 0, 2000).await.unwrap();
    let a = RunnerProc::run(&stack, &config).unwrap();
    // Let A take everything and start landing, then B joins mid-stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b = RunnerProc::run(&stack, &config).unwrap();
    broker.produce(&t, 4, 2000, 2000).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.produce(&t, 4, 4000, 2000).await.unwrap();
    wait_committed(&stack, &t, 4, 6000, WAIT, &[&a, &b])
        .await
        .unwrap();
    let mut a = a;
    assert!(
        a.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        a.log()
    );
    // B takes A's partitions over after A leaves; more records still land once.
    broker.produce(&t, 4, 6000, 1000).await.unwrap();
    wait_committed(&stack, &t, 4, 7000, WAIT, &[&b])
        .await
        .unwrap();
    assert!(
        b.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        b.log()
    );
    assert!(
        a.log().contains("partitions revoked") && b.log().contains("partitions assigned"),
        "expected a rebalance: A:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    // Both runners committed something.
    let mut by_run = std::collections::BTreeSet::new();
    for p in 0..4 {
        for e in stack
            .commit_log(bronze::record::Source::Kafka, &t, &p.to_string())
            .await
        {
            by_run.insert(e.run_id);
        }
    }
    assert!(by_run.len() >= 2, "only {by_run:?} committed");
    assert_exactly_once(&stack, &t, 4, 7000).await;
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_batch_and_restart_lands_exactly_once() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = topic("payments");
    broker.create_topic(&t, 2).await.unwrap();
    broker.produce(&t, 2, 0, 20_000).await.unwrap();
    let config = connector_yaml(&kafka_runner(&broker.bootstrap, &topic("g"), &t, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    // Kill it while it is landing: some files committed, some not.
    let deadline = std::time::Instant::now() + WAIT;
    while committed(&stack, &t, 2).await < 2_000 {
        assert!(std::time::Instant::now() < deadline, "{}", runner.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.kill9();
    let at_kill = committed(&stack, &t, 2).await;
    assert!(
        at_kill < 20_000,
        "everything landed before the kill; the test proves nothing"
    );
    let restarted = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &t, 2, 20_000, WAIT, &[&restarted])
        .await
        .unwrap();
    drop(restarted);
    assert_exactly_once(&stack, &t, 2, 20_000).await;
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pattern_subscription_picks_up_a_new_topic_without_restart() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let prefix = format!("ev{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let first = format!("{prefix}.a");
    broker.create_topic(&first, 1).await.unwrap();
    broker.produce(&first, 1, 0, 50).await.unwrap();
    let section = format!(
        r#"  kafka:
    bootstrap_servers: {}
    group_id: g-{prefix}
    patterns: ["^{prefix}\\..*"]
    metadata_refresh_ms: 1000
  files: {{max_records: 200, max_latency_ms: 500}}
  http: {{bind: 127.0.0.1, port: 0}}
"#,
        broker.bootstrap
    );
    let config = connector_yaml(&section);
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, &first, 1, 50, WAIT, &[&runner])
        .await
        .unwrap();
    let second = format!("{prefix}.b");
    broker.create_topic(&second, 2).await.unwrap();
    broker.produce(&second, 2, 0, 80).await.unwrap();
    wait_committed(&stack, &second, 2, 80, WAIT, &[&runner])
        .await
        .unwrap();
    assert!(runner.terminate(Duration::from_secs(60)).unwrap().success());
    assert_exactly_once(&stack, &second, 2, 80).await;

    // discover lists both topics and prints a streams section for them.
    let mut d = RunnerProc::start(&stack, &config, &["discover"], &[]).unwrap();
    assert!(d.wait(WAIT).unwrap().success(), "{}", d.log());
    let out = d.log();
    assert!(
        out.contains(&format!("#   {first}: 1")) && out.contains(&format!("#   {second}: 2")),
        "{out}"
    );
    assert!(
        out.contains(&format!("    - name: {second}\n      source: kafka")),
        "{out}"
    );
}

/// Defect (audit): with `start_from: latest` every assignment of a partition without a
/// checkpoint sought to the end of the log, so records produced after the first runner was
/// assigned but before the partition's first commit were skipped when it changed owner (a
/// rebalance, a restart). Now the high watermark at the first assignment is recorded in the
/// state table and every later owner starts there.
#[tokio::test(flavor = "multi_thread")]
async fn latest_is_resolved_once_and_survives_a_change_of_owner() {
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = topic("late");
    broker.create_topic(&t, 2).await.unwrap();
    // Before any runner: not landed under `latest`.
    broker.produce(&t, 2, 0, 100).await.unwrap();
    let config = connector_yaml(
        &kafka_runner(&broker.bootstrap, &topic("g"), &t, "").replace(
            "    metadata_refresh_ms: 1000",
            "    metadata_refresh_ms: 1000\n    start_from: latest",
        ),
    );
    let mut first = RunnerProc::run(&stack, &config).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while first
        .log()
        .matches("start position (start_from: latest)")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{}", first.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped before its first commit: nothing new was produced.
    assert!(first.terminate(Duration::from_secs(30)).unwrap().success());
    // Produced while no runner reads: the next owner must land all of it.
    broker.produce(&t, 2, 100, 300).await.unwrap();
    let second = RunnerProc::run(&stack, &config).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let seen = loop {
        let mut seen = Vec::new();
        for p in 0..2 {
            for line in stack
                .committed_lines(bronze::record::Source::Kafka, &t, &p.to_string())
                .await
            {
                seen.push(line["payload"]["n"].as_u64().unwrap());
            }
        }
        if seen.len() >= 300 || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = second.log();
    drop(second);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (100..400).collect::<Vec<u64>>(),
        "exactly the records produced after the first assignment, once each; second runner:\n{log}"
    );
}
