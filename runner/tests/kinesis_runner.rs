//! The runner reading Kinesis on moto: shard leases, KPL aggregates (built by AWS's
//! reference aggregator, PyPI `aws-kinesis-agg`), resharding and two runners sharing a
//! stream. Every test audits what is committed against what the stream holds: every user
//! record once, in order per shard.

mod common;
mod kinesis;

use aws_sdk_kinesis::Client;
use bronze::record::Source;
use common::*;
use integration_tests::{Stack, workspace};
use kinesis::*;
// Not the Kafka one of `common`.
use kinesis::assert_exactly_once;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server of this test's own, with Kinesis resharding as AWS does it (see
/// `kinesis/moto_reshard.py`), and a stack on it.
struct ReshardMoto {
    child: std::process::Child,
    url: String,
}

impl Drop for ReshardMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn reshard_stack() -> (ReshardMoto, Stack) {
    let port = free_port();
    let child = Command::new(workspace().join(".venv/bin/python"))
        .arg(workspace().join("runner/tests/kinesis/moto_reshard.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run .venv/bin/python with moto (make venv installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let moto = ReshardMoto { child, url };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_reshard.py did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stack = Stack {
        sdk,
        bucket: format!("bronze-{}", &id[..12]),
        table: format!("state-{}", &id[..12]),
        queue_url: format!("{}/123456789012/dlq-{}", moto.url, &id[..12]),
        prefix: "bronze".to_owned(),
    };
    stack.create_bucket().await.unwrap();
    stack.create_table().await.unwrap();
    stack.create_queue().await.unwrap();
    (moto, stack)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_runner_lands_eight_shards_of_aggregated_and_plain_records_exactly_once() {
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-one");
    create_stream(&client, &stream, 8).await;
    // 50,000 user records, half produced before the runner starts and half while it reads:
    // every third Kinesis record a KPL aggregate of 20 (6,832 Kinesis records; 45,440 user
    // records in 2,272 aggregates, 4,560 plain).
    let total = 50_000;
    let first = plan(0, total / 2, 97, 3, 20);
    let second = plan(total / 2, total / 2, 97, 3, 20);
    produce(&client, &stream, &first).await;
    let config = connector_yaml(&runner_section(&stream, ""));
    let started = Instant::now();
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    produce(&client, &stream, &second).await;
    let want = wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(300),
        &[&runner],
    )
    .await;
    eprintln!(
        "{total} user records landed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(want.len(), 8);
    let status = runner.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{}", runner.log());
    assert_exactly_once(&stack, &stream, &want, total).await;
    // Graceful shutdown released every lease.
    let held = leases(&stack, &stream).await;
    assert_eq!(held.len(), 8);
    assert!(held.iter().all(|l| l.owner.is_none()), "{held:?}");
    let log = runner.log();
    assert!(log.contains("lease released"), "{log}");
    // The operator commands see the shards: status (lag 0 after everything landed),
    // discover (shards with parents) and verify.
    for (command, expect) in [
        ("status", "shardId-000000000007"),
        ("discover", "source: kinesis"),
        ("verify", "0 violation(s)"),
    ] {
        let mut p = RunnerProc::start(&stack, &config, &[command], &[]).unwrap();
        let exit = p.wait(Duration::from_secs(60)).unwrap();
        let out = p.log();
        assert!(exit.success() && out.contains(expect), "{command}: {out}");
        if command == "verify" {
            // Each shard was read back with GetRecords, not only audited against its log.
            assert!(!out.contains("commit log only"), "{out}");
        }
        if command == "status" {
            let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("kinesis ")).collect();
            assert_eq!(rows.len(), 8, "{out}");
            // Lag 0: Kinesis lag is MillisBehindLatest, printed `<n>ms`.
            assert!(
                rows.iter()
                    .all(|r| r.split_whitespace().nth(5) == Some("0ms")),
                "{out}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn split_and_merge_keep_per_key_order_across_parents_and_children() {
    let (moto, stack) = reshard_stack().await;
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-reshard");
    create_stream(&client, &stream, 2).await;
    let keys = 23;
    produce(&client, &stream, &plan(0, 1_000, keys, 0, 0)).await;
    // Split shard 0 before the runner starts: parent and children hold records at once, so
    // reading the children early would land keys out of order.
    let before = shards(&client, &stream).await;
    let s0 = before[0].clone();
    let range = s0.hash_key_range.unwrap();
    let lo: u128 = range.starting_hash_key.parse().unwrap();
    let hi: u128 = range.ending_hash_key.parse().unwrap();
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&s0.shard_id)
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    produce(&client, &stream, &plan(1_000, 1_000, keys, 0, 0)).await;
    let config = connector_yaml(&runner_section(&stream, ""));
    let mut runner = RunnerProc::start(
        &stack,
        &config,
        &["run"],
        &[("AWS_ENDPOINT_URL", moto.url.as_str())],
    )
    .unwrap();
    // Mid-stream: merge the upper child with the old shard 1 while the runner reads.
    produce(&client, &stream, &plan(2_000, 500, keys, 0, 0)).await;
    let open: Vec<_> = shards(&client, &stream)
        .await
        .into_iter()
        .filter(|s| {
            s.sequence_number_range
                .as_ref()
                .is_some_and(|r| r.ending_sequence_number.is_none())
        })
        .collect();
    assert_eq!(open.len(), 3, "two children and shard 1");
    let by_start = |s: &aws_sdk_kinesis::types::Shard| -> u128 {
        s.hash_key_range
            .as_ref()
            .unwrap()
            .starting_hash_key
            .parse()
            .unwrap()
    };
    let mut open = open;
    open.sort_by_key(by_start);
    client
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&open[1].shard_id)
        .adjacent_shard_to_merge(&open[2].shard_id)
        .send()
        .await
        .unwrap();
    produce(&client, &stream, &plan(2_500, 500, keys, 0, 0)).await;
    let want = wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(120),
        &[&runner],
    )
    .await;
    assert_eq!(
        want.len(),
        5,
        "2 + 2 children of the split + 1 of the merge"
    );
    assert!(runner.terminate(Duration::from_secs(30)).unwrap().success());
    let lines = assert_exactly_once(&stack, &stream, &want, 3_000).await;
    // Per key, across parents and children: the produced order. A child was read only after
    // its parents were finished, so its first commit is after their last.
    let all = shards(&client, &stream).await;
    for s in &all {
        let parents = streaming_connector::kinesis::parents(s);
        let child_log = stack
            .commit_log(Source::Kinesis, &stream, &s.shard_id)
            .await;
        let Some(first_child) = child_log.first() else {
            continue;
        };
        for p in parents {
            let parent_log = stack.commit_log(Source::Kinesis, &stream, &p).await;
            if let Some(last_parent) = parent_log.last() {
                assert!(
                    last_parent.committed_at_ms <= first_child.committed_at_ms,
                    "{} committed before its parent {p} was finished",
                    s.shard_id
                );
            }
        }
    }
    // Order by lineage (parents first): per key, n increases.
    let mut order: Vec<String> = Vec::new();
    let mut placed = BTreeSet::new();
    while order.len() < all.len() {
        for s in &all {
            let ready = streaming_connector::kinesis::parents(s)
                .iter()
                .all(|p| placed.contains(p));
            if ready && placed.insert(s.shard_id.clone()) {
                order.push(s.shard_id.clone());
            }
        }
    }
    let mut last_by_key: BTreeMap<String, u64> = BTreeMap::new();
    for shard in &order {
        for line in &lines[shard] {
            let key = line["key"].as_str().unwrap().to_owned();
            let n = line["payload"]["n"].as_u64().unwrap();
            if let Some(prev) = last_by_key.insert(key.clone(), n) {
                assert!(
                    prev < n,
                    "key {key}: {n} landed after {prev} (shard {shard})"
                );
            }
        }
    }
    // Closed parents are finished.
    let held = leases(&stack, &stream).await;
    let finished: BTreeSet<String> = held
        .iter()
        .filter(|l| l.finished)
        .map(|l| l.shard.clone())
        .collect();
    assert_eq!(
        finished.len(),
        3,
        "the split parent and the two merged: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_share_the_shards_and_one_takes_over_after_a_kill() {
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-two");
    create_stream(&client, &stream, 6).await;
    produce(&client, &stream, &plan(0, 3_000, 31, 4, 10)).await;
    let config = connector_yaml(&runner_section(&stream, ""));
    let mut a = RunnerProc::run(&stack, &config).unwrap();
    let mut b = RunnerProc::run(&stack, &config).unwrap();
    // The leases split evenly: three each.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = leases(&stack, &stream).await;
        let mut by_owner: BTreeMap<String, usize> = BTreeMap::new();
        for l in &held {
            if let Some(o) = &l.owner {
                *by_owner.entry(o.clone()).or_default() += 1;
            }
        }
        if by_owner.len() == 2 && by_owner.values().all(|c| *c == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases not split evenly: {by_owner:?}\n{}\n----\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    produce(&client, &stream, &plan(3_000, 3_000, 31, 4, 10)).await;
    // Kill one while it reads: no drain, no release.
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill9();
    produce(&client, &stream, &plan(6_000, 3_000, 31, 4, 10)).await;
    let want = wait_landed(&stack, &client, &stream, Duration::from_secs(120), &[&b]).await;
    let held = leases(&stack, &stream).await;
    let owners: BTreeSet<Option<String>> = held.iter().map(|l| l.owner.clone()).collect();
    assert_eq!(owners.len(), 1, "the survivor holds every lease: {held:?}");
    assert!(b.terminate(Duration::from_secs(30)).unwrap().success());
    assert_exactly_once(&stack, &stream, &want, 9_000).await;
    assert!(b.log().contains("lease taken"));
}

/// A runner reading `stream` with every AWS call through `proxy`.
fn run_behind(
    stack: &Stack,
    stream: &str,
    proxy: &integration_tests::fault_proxy::FaultProxy,
) -> RunnerProc {
    let config = connector_yaml(&runner_section(stream, ""));
    RunnerProc::start(
        stack,
        &config,
        &["run"],
        &[("AWS_ENDPOINT_URL", proxy.url())],
    )
    .unwrap()
}

fn kinesis_error(code: &str) -> integration_tests::fault_proxy::Fault {
    integration_tests::fault_proxy::Fault::Error {
        status: 400,
        code: code.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_expired_iterators_are_survived_without_loss() {
    use integration_tests::fault_proxy::{FaultProxy, Rule};
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-faults");
    create_stream(&client, &stream, 4).await;
    produce(&client, &stream, &plan(0, 2_000, 17, 3, 10)).await;
    let proxy = FaultProxy::start().unwrap();
    let throttled = proxy.add(Rule::next(
        "kinesis:GetRecords",
        kinesis_error("ProvisionedThroughputExceededException"),
        12,
    ));
    let expired = proxy.add(Rule::next(
        "kinesis:GetRecords",
        kinesis_error("ExpiredIteratorException"),
        6,
    ));
    let mut runner = run_behind(&stack, &stream, &proxy);
    produce(&client, &stream, &plan(2_000, 2_000, 17, 3, 10)).await;
    let want = wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(120),
        &[&runner],
    )
    .await;
    assert!(runner.terminate(Duration::from_secs(30)).unwrap().success());
    assert_eq!(throttled.stats().injected, 12);
    assert_eq!(expired.stats().injected, 6);
    // Throttling is retried with backoff by the SDK's standard retry first (it classifies
    // ProvisionedThroughputExceededException as throttling), then by the reader.
    let log = runner.log();
    assert!(log.contains("shard iterator expired"), "{log}");
    assert_exactly_once(&stack, &stream, &want, 4_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_get_records_stops_the_runner_naming_the_action_and_stream() {
    use integration_tests::fault_proxy::{FaultProxy, Rule, Times};
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-denied");
    create_stream(&client, &stream, 1).await;
    let proxy = FaultProxy::start().unwrap();
    proxy.add(Rule {
        operation: "kinesis:GetRecords".into(),
        body_contains: None,
        fault: kinesis_error("AccessDeniedException"),
        times: Times::UntilCleared,
    });
    let mut runner = run_behind(&stack, &stream, &proxy);
    let status = runner.wait(Duration::from_secs(60)).unwrap();
    assert!(!status.success());
    let log = runner.log();
    assert!(
        log.contains(&format!("kinesis:GetRecords on stream {stream}"))
            && log.contains("AccessDeniedException"),
        "{log}"
    );
}

/// Defect (audit): a DynamoDB failure that outlasted the SDK's retries in the lease
/// coordinator's heartbeat (listing the leases, reading a checkpoint) ended the runner with
/// exit code 1, so a DynamoDB outage became a crash loop. Now the heartbeat logs and tries
/// again; leases and commits resume when DynamoDB answers, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread")]
async fn a_dynamodb_outage_longer_than_the_sdk_retries_is_survived_without_loss() {
    use integration_tests::fault_proxy::{Fault, FaultProxy, Rule, Times};
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-ddb-outage");
    create_stream(&client, &stream, 2).await;
    produce(&client, &stream, &plan(0, 1_000, 11, 3, 10)).await;
    let proxy = FaultProxy::start().unwrap();
    let mut runner = run_behind(&stack, &stream, &proxy);
    // Every DynamoDB call fails for 12 s (longer than the lease duration and than the SDK's
    // three attempts), once the runner is reading.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !runner.log().contains("reading the shard") {
        assert!(std::time::Instant::now() < deadline, "{}", runner.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rules: Vec<_> = [
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:TransactWriteItems",
    ]
    .iter()
    .map(|op| {
        proxy.add(Rule {
            operation: (*op).to_owned(),
            body_contains: None,
            fault: Fault::InternalError,
            times: Times::For(Duration::from_secs(12)),
        })
    })
    .collect();
    produce(&client, &stream, &plan(1_000, 1_000, 11, 3, 10)).await;
    let want = wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(180),
        &[&runner],
    )
    .await;
    let injected: u64 = rules.iter().map(|r| r.stats().injected).sum();
    let queries = rules[0].stats().injected;
    assert!(runner.exited().unwrap().is_none(), "{}", runner.log());
    assert!(runner.terminate(Duration::from_secs(30)).unwrap().success());
    let log = runner.log();
    assert!(
        queries > 0 && log.contains("could not list the leases"),
        "the heartbeat met the outage ({injected} faults): {log}"
    );
    assert_exactly_once(&stack, &stream, &want, 2_000).await;
}

/// Defect (audit): an unfinished lease of a shard the stream no longer has (trimmed after the
/// retention period while another consumer read the stream) made GetShardIterator answer
/// ResourceNotFoundException, which stopped the runner; the next runner took the lease and
/// stopped in turn, and the shard's children were never read. Now the shard is reported,
/// counted and finished, and its children are read. moto cannot trim a shard: the trimmed
/// parent is a lease seeded for a shard id the stream never had.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_lease_of_a_trimmed_shard_is_reported_and_its_children_read() {
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-trimmed");
    create_stream(&client, &stream, 2).await;
    produce(&client, &stream, &plan(0, 1_000, 13, 3, 10)).await;
    let (gone, unleased) = ("shardId-000000009998", "shardId-000000009999");
    let store = streaming_connector::leases::LeaseStore::new(&stack.sdk, &stack.table);
    // Seeded before the runner's discovery, which keeps the leases it finds.
    store.create(&stream, gone, &[]).await.unwrap();
    store
        .create(&stream, "shardId-000000000000", &[gone.to_owned()])
        .await
        .unwrap();
    // A parent neither leased nor listed holds nothing back.
    store
        .create(&stream, "shardId-000000000001", &[unleased.to_owned()])
        .await
        .unwrap();
    let config = connector_yaml(&runner_section(&stream, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    let want = wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(120),
        &[&runner],
    )
    .await;
    assert!(runner.exited().unwrap().is_none(), "{}", runner.log());
    let (_, metrics) = get(&runner.http_address().unwrap(), "/metrics");
    assert_eq!(
        metric(&metrics, "bronze_shards_trimmed_total"),
        1,
        "{metrics}"
    );
    assert!(runner.terminate(Duration::from_secs(30)).unwrap().success());
    let log = runner.log();
    assert!(
        log.contains("shard trimmed from the stream before it was read to its end")
            && log.contains(gone),
        "{log}"
    );
    assert_exactly_once(&stack, &stream, &want, 1_000).await;
    let held = leases(&stack, &stream).await;
    assert!(
        held.iter()
            .any(|l| l.shard == gone && l.finished && l.owner.is_none()),
        "{held:?}"
    );
}

/// Defect (audit): with `start_from: latest` a shard without a checkpoint was read from
/// LATEST by every new owner and every renewed iterator, so records written after the first
/// runner started but before the shard's first commit were skipped when the lease moved (a
/// restart, a stolen lease). Now the start is resolved once, recorded in the state table, and
/// read AT_TIMESTAMP by later owners: records from before the first lease are not landed,
/// every record after it is, once.
#[tokio::test(flavor = "multi_thread")]
async fn latest_is_resolved_once_and_survives_a_change_of_owner() {
    let stack = Stack::new().await.unwrap();
    let client = Client::new(&stack.sdk);
    let stream = unique("kin-latest");
    create_stream(&client, &stream, 2).await;
    // Before any runner: not landed under `latest`.
    produce(&client, &stream, &plan(0, 500, 17, 0, 1)).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let config = connector_yaml(&runner_section(&stream, "").replace(
        "    poll_interval_ms: 200",
        "    poll_interval_ms: 200\n    start_from: latest",
    ));
    let mut first = RunnerProc::run(&stack, &config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first
        .log()
        .matches("start position (start_from: latest)")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", first.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped before its first commit: it read nothing new.
    assert!(first.terminate(Duration::from_secs(30)).unwrap().success());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Written while no runner reads: the next owner must land all of it.
    produce(&client, &stream, &plan(500, 2_000, 17, 3, 10)).await;
    let second = RunnerProc::run(&stack, &config).unwrap();
    let shard_ids: Vec<String> = shards(&client, &stream)
        .await
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let mut seen = Vec::new();
        for shard in &shard_ids {
            for line in stack.committed_lines(Source::Kinesis, &stream, shard).await {
                seen.push(line["payload"]["n"].as_u64().unwrap());
            }
        }
        if seen.len() >= 2_000 || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let log = second.log();
    drop(second);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (500..2_500).collect::<Vec<u64>>(),
        "exactly the records written after the first lease, once each; second runner:\n{log}"
    );
}
