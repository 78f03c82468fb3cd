//! A backlog far larger than the buffer drains with bounded memory: fetching pauses at the
//! buffer cap and resumes below half of it, and peak memory stays well below the backlog.
//! (Throughput is measured in `benches/kafka_backlog.rs`, not here.)

mod common;

use common::*;
use integration_tests::Stack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_million_message_backlog_drains_with_bounded_memory() {
    let messages: u64 = std::env::var("BACKLOG_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let stack = Stack::new().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = "backlog";
    broker.create_topic(t, 4).await.unwrap();
    // ~110 bytes of payload each: the backlog is ~110 MB for a million.
    broker.produce_padded(t, 4, 0, messages, 90).await.unwrap();
    let backlog_kib = messages * 110 / 1024;
    let section = format!(
        r#"  kafka:
    bootstrap_servers: {}
    group_id: g-backlog
    topics: [{t}]
  buffer: {{max_bytes: 4194304}}
  files: {{max_records: 50000, max_bytes: 1048576, max_latency_ms: 1000}}
  concurrency: {{max: 4}}
  http: {{bind: 127.0.0.1, port: 0}}
"#,
        broker.bootstrap
    );
    let config = connector_yaml(&section);
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    wait_committed(&stack, t, 4, messages, Duration::from_secs(900), &[&runner])
        .await
        .unwrap();
    let peak_kib = runner.peak_rss_kib().expect("VmHWM of the runner");
    let addr = runner.http_address().unwrap();
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        runner.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        runner.log()
    );
    eprintln!("backlog {backlog_kib} KiB, runner peak RSS {peak_kib} KiB");
    // The buffer filled and fetching paused at least once.
    let pauses: u64 = metrics
        .lines()
        .find(|l| l.starts_with("bronze_buffer_pauses_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(pauses > 0, "fetching never paused: {metrics}");
    // Bounded: the 4 MiB buffer, librdkafka's 1 MiB queue, up to 4 landings of 1 MiB files
    // being encoded, and the process itself stay under 160 MiB, whatever the backlog.
    assert!(
        peak_kib < 160 * 1024,
        "peak RSS {peak_kib} KiB for a {backlog_kib} KiB backlog"
    );
    if messages >= 1_000_000 {
        assert!(peak_kib < backlog_kib, "memory grew with the backlog");
    }
    let (ok, out) = verify(&stack, &config);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{messages} records landed")), "{out}");
}
