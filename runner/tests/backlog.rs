//! A backlog far larger than the buffer drains with bounded memory: fetching pauses at the
//! buffer cap and resumes below half of it, and peak memory stays well below the backlog.
//!
//! tansu delivers single-record batches slower than the runner lands them, so the buffer
//! would never fill on its own here. The test therefore starts the runner before its bucket
//! exists: every landing fails (a permanent error, retried from memory with backoff,
//! `/healthz` answering 503), records pile up until the buffer is full and fetching pauses;
//! then the bucket is created and the backlog drains. The one-million-message backlog is
//! drained in `benches/kafka_backlog.rs`, which reports its peak RSS (BENCHMARKS.md).

mod common;

use common::*;
use integration_tests::Stack;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_thirty_times_the_buffer_pauses_fetching_and_drains_with_bounded_memory() {
    let messages: u64 = 60_000;
    let pad = 2_000usize;
    // No bucket yet: nothing can land.
    let stack = Stack::names().await.unwrap();
    stack.create_table().await.unwrap();
    stack.create_queue().await.unwrap();
    let broker = Tansu::start().unwrap();
    let t = "backlog";
    broker.create_topic(t, 4).await.unwrap();
    broker
        .produce_batched(t, 4, 0, messages, pad, 1)
        .await
        .unwrap();
    let backlog_kib = messages * (pad as u64 + 20) / 1024;
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let addr = loop {
        if let Some(a) = runner.http_address() {
            break a;
        }
        assert!(Instant::now() < deadline, "{}", runner.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The buffer fills and fetching pauses; health reports the failing landing.
    loop {
        let (_, metrics) = get(&addr, "/metrics");
        if metric(&metrics, "bronze_buffer_pauses_total") > 0 {
            let buffered = metric(&metrics, "bronze_buffered_bytes");
            assert!(buffered >= 4 << 20, "paused at {buffered} bytes");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never paused: {metrics}\n{}",
            runner.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("s3:PutObject"),
        "the reason names the failing call: {body}"
    );
    // While paused, the buffer stays at the cap (plus what one poll hands over).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, metrics) = get(&addr, "/metrics");
    let buffered = metric(&metrics, "bronze_buffered_bytes");
    assert!(
        buffered < 6 << 20,
        "the buffer grew past its cap while paused: {buffered}"
    );

    // The bucket appears: landings succeed, fetching resumes, the backlog drains.
    stack.create_bucket().await.unwrap();
    wait_committed(&stack, t, 4, messages, Duration::from_secs(300), &[&runner])
        .await
        .unwrap();
    let (code, _) = get(&addr, "/healthz");
    assert_eq!(code, 200);
    let peak_kib = runner.peak_rss_kib().expect("VmHWM of the runner");
    assert!(
        runner.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        runner.log()
    );
    eprintln!("backlog {backlog_kib} KiB, runner peak RSS {peak_kib} KiB");
    // Bounded: the 4 MiB buffer, librdkafka's 1 MiB queue, landings of 1 MiB files being
    // encoded and the process itself, whatever the backlog.
    assert!(
        peak_kib < 160 * 1024,
        "peak RSS {peak_kib} KiB for a {backlog_kib} KiB backlog"
    );
    assert!(peak_kib < backlog_kib, "memory grew with the backlog");
    assert_exactly_once_padded(&stack, t, 4, messages).await;
}

/// Every message once (the padded payloads carry `n`).
async fn assert_exactly_once_padded(stack: &Stack, topic: &str, partitions: i32, total: u64) {
    let mut seen = vec![0u32; total as usize];
    for p in 0..partitions {
        for line in stack
            .committed_lines(bronze::record::Source::Kafka, topic, &p.to_string())
            .await
        {
            seen[line["payload"]["n"].as_u64().unwrap() as usize] += 1;
        }
    }
    let wrong: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "not exactly once: {wrong:?}");
}
