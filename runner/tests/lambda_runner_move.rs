//! A stream moves from the Lambda path to the runner and back with no loss and no duplicate:
//! both read and write the same checkpoints, keys and commit log. Kafka (a tansu topic) and
//! Kinesis (a moto stream with KPL aggregates, an aggregate straddling a move).

mod common;
mod kinesis;

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

/// A Kinesis event as the event source mapping delivers `records` of one shard (the data as
/// the producer wrote it: a KPL aggregate stays one record).
fn kinesis_event(
    arn: &str,
    shard: &str,
    records: &[aws_sdk_kinesis::types::Record],
) -> serde_json::Value {
    let records: Vec<_> = records
        .iter()
        .map(|r| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": B64.encode(r.data.as_ref()),
                    "approximateArrivalTimestamp": r
                        .approximate_arrival_timestamp
                        .map(|t| t.as_secs_f64()),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", r.sequence_number),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": arn,
            })
        })
        .collect();
    json!({ "Records": records })
}

fn is_aggregate(r: &aws_sdk_kinesis::types::Record) -> bool {
    r.data.as_ref().starts_with(&bronze::sources::kpl::MAGIC)
}

/// The sortable checkpoint of user record `sub` of the aggregate at `sequence`.
fn user_checkpoint(sequence: &str, sub: u32) -> String {
    use bronze::cursor::Cursor as _;
    bronze::cursor::KinesisCursor::user_record(
        bronze::cursor::SequenceNumber::parse(sequence).unwrap(),
        sub,
    )
    .sortable()
}

async fn kinesis_checkpoint(stack: &Stack, stream: &str, shard: &str) -> Option<String> {
    stack
        .checkpoint(bronze::record::Source::Kinesis, stream, shard)
        .await
        .map(|c| c.cursor)
}

/// Who wrote each commit of a shard, in order, runs of the same writer merged: `lambda` or
/// `runner`.
async fn writers(stack: &Stack, stream: &str, shard: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for e in stack
        .commit_log(bronze::record::Source::Kinesis, stream, shard)
        .await
    {
        let who = if e.run_id.starts_with("runner-") {
            "runner"
        } else {
            "lambda"
        };
        if out.last() != Some(&who) {
            out.push(who);
        }
    }
    out
}

/// A Kinesis stream with KPL aggregates moves from the Lambda function to the runner and
/// back. Lambda commits whole Kinesis records only (one object per shard and invocation), so
/// its checkpoint is never inside an aggregate: it ends at an aggregate's last user record,
/// which the runner resumes AT_SEQUENCE_NUMBER of that aggregate, dropping its user records.
/// The runner cuts files by user records, so its checkpoint can be inside an aggregate: here
/// it lands user records 0..=35 of a 40-record aggregate and is killed; Lambda, handed the
/// whole aggregate again (in a batch that starts before it), lands 36..=39 and what follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_kinesis_stream_with_aggregates_moves_lambda_to_runner_and_back_exactly_once() {
    use integration_tests::fault_proxy::{Fault, FaultProxy, Rule};
    use kinesis::{Produce, plan, produce, raw_records};
    let started = std::time::Instant::now();
    let phase = |name: &str| eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    let stack = Stack::new().await.unwrap();
    let client = aws_sdk_kinesis::Client::new(&stack.sdk);
    let stream = kinesis::unique("kin-move");
    kinesis::create_stream(&client, &stream, 2).await;
    let arn = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    let keys = 13;
    // Records 0..400: plain and aggregates of 10, with a run of aggregates in the middle.
    let mut first = plan(0, 100, keys, 2, 10);
    first.extend(plan(100, 200, keys, 1, 10));
    first.extend(plan(300, 100, keys, 2, 10));
    produce(&client, &stream, &first).await;
    let shards: Vec<String> = kinesis::shards(&client, &stream)
        .await
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(shards.len(), 2);

    // 1. Lambda lands each shard up to and including an aggregate, then a batch that starts
    //    with the next aggregate fails (S3 down): the partial batch response names that
    //    aggregate's sequence number and nothing of it lands. The mapping is then disabled.
    let proxy = FaultProxy::start().unwrap();
    let watch = Watch::start(&stack, &[("AWS_ENDPOINT_URL", proxy.url())]).unwrap();
    phase("stream and watch");
    let invoke = |event: &serde_json::Value| {
        watch
            .invoke("kinesis-consumer", event)
            .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()))
    };
    let mut outer_keys = Vec::new();
    for shard in &shards {
        let raw = raw_records(&client, &stream, shard).await;
        outer_keys.push(raw[0].partition_key.clone());
        // The first place past a quarter of the shard where two aggregates follow each other.
        let k = (raw.len() / 4..raw.len())
            .find(|&k| k > 0 && is_aggregate(&raw[k - 1]) && is_aggregate(&raw[k]))
            .unwrap_or_else(|| panic!("{shard}: no two aggregates in a row"));
        let none = json!({"batchItemFailures": []});
        assert_eq!(invoke(&kinesis_event(&arn, shard, &raw[..k / 2])), none);
        assert_eq!(invoke(&kinesis_event(&arn, shard, &raw[k / 2..k])), none);
        let outage = proxy.add(Rule::outage("s3:PutObject", Fault::SlowDown));
        assert_eq!(
            invoke(&kinesis_event(&arn, shard, &raw[k..k + 3])),
            json!({"batchItemFailures": [{"itemIdentifier": raw[k].sequence_number}]}),
            "{}",
            watch.log()
        );
        assert!(outage.stats().injected > 0);
        proxy.clear();
        assert_eq!(
            kinesis_checkpoint(&stack, &stream, shard).await,
            Some(user_checkpoint(&raw[k - 1].sequence_number, 9)),
            "{shard}: Lambda's checkpoint is the last user record of the aggregate before"
        );
    }

    phase("1. Lambda");
    // 2. The runner takes over from Lambda's checkpoints while more records arrive, lands
    //    the rest and stops (SIGTERM: drains, releases its leases).
    let config = connector_yaml(&kinesis::runner_section(&stream, ""));
    let mut runner = RunnerProc::run(&stack, &config).unwrap();
    produce(&client, &stream, &plan(400, 300, keys, 3, 10)).await;
    kinesis::wait_landed(
        &stack,
        &client,
        &stream,
        Duration::from_secs(120),
        &[&runner],
    )
    .await;
    assert!(
        runner.terminate(Duration::from_secs(60)).unwrap().success(),
        "{}",
        runner.log()
    );
    let log = runner.log();
    assert!(log.contains("AT_SEQUENCE_NUMBER"), "{log}");

    phase("2. runner");
    // 3. One aggregate of 40 user records per shard; a runner cutting files every 9 user
    //    records commits 0..=35 of each (four files) and holds 36..=39 for its 2-minute
    //    latency cut; it is killed (kill -9) before that.
    let straddling: Vec<Produce> = outer_keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let from = 700 + 40 * i as u64;
            Produce::Aggregate {
                key: key.clone(),
                users: (from..from + 40)
                    .map(|n| (format!("k{}", n % keys), n))
                    .collect(),
            }
        })
        .collect();
    produce(&client, &stream, &straddling).await;
    let config_cut = connector_yaml(&kinesis::runner_section_with(
        &stream,
        "{max_records: 9, max_latency_ms: 120000}",
        "",
    ));
    let mut runner = RunnerProc::run(&stack, &config_cut).unwrap();
    let mut straddled = Vec::new();
    for shard in &shards {
        let raw = raw_records(&client, &stream, shard).await;
        let last = raw.last().unwrap();
        assert!(
            is_aggregate(last),
            "{shard}: the 40-record aggregate is last"
        );
        let want = user_checkpoint(&last.sequence_number, 35);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while kinesis_checkpoint(&stack, &stream, shard).await.as_deref() != Some(want.as_str()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{shard}: checkpoint {:?}, not {want}:\n{}",
                kinesis_checkpoint(&stack, &stream, shard).await,
                runner.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        straddled.push((shard.clone(), last.sequence_number.clone(), raw.len() - 1));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.kill9();
    for (shard, sequence, _) in &straddled {
        assert_eq!(
            kinesis_checkpoint(&stack, &stream, shard).await,
            Some(user_checkpoint(sequence, 35)),
            "{shard}: the runner stopped inside the aggregate"
        );
    }

    phase("3. runner, killed inside an aggregate");
    // 4. Back to Lambda (the runner's leases are left to expire; Lambda does not use them).
    //    More records arrive; Lambda's first batch starts three records before the straddled
    //    aggregate. With S3 down it reports the aggregate's sequence number (its first
    //    unlanded user record is 36); the retry from there lands 36..=39 and the rest, and a
    //    replay of the whole shard lands nothing.
    produce(&client, &stream, &plan(780, 220, keys, 2, 10)).await;
    for (shard, sequence, at) in &straddled {
        let raw = raw_records(&client, &stream, shard).await;
        let outage = proxy.add(Rule::outage("s3:PutObject", Fault::SlowDown));
        assert_eq!(
            invoke(&kinesis_event(&arn, shard, &raw[at - 3..])),
            json!({"batchItemFailures": [{"itemIdentifier": sequence}]}),
        );
        assert!(outage.stats().injected > 0);
        proxy.clear();
        let none = json!({"batchItemFailures": []});
        assert_eq!(invoke(&kinesis_event(&arn, shard, &raw[*at..])), none);
        let first_of_lambda = stack
            .commit_log(bronze::record::Source::Kinesis, &stream, shard)
            .await
            .into_iter()
            .find(|e| e.first == user_checkpoint(sequence, 36))
            .unwrap_or_else(|| panic!("{shard}: no commit starts at {sequence}:36"));
        assert!(!first_of_lambda.run_id.starts_with("runner-"));
        assert_eq!(invoke(&kinesis_event(&arn, shard, &raw)), none);
        assert_eq!(
            writers(&stack, &stream, shard).await,
            ["lambda", "runner", "lambda"],
            "{shard}"
        );
    }

    phase("4. Lambda");
    // Every user record once, in shard order, nothing dead-lettered; `verify` agrees.
    let want = kinesis::wait_landed(&stack, &client, &stream, Duration::from_secs(10), &[]).await;
    kinesis::assert_exactly_once(&stack, &stream, &want, 1_000).await;
    let (ok, out) = verify(&stack, &config);
    assert!(ok && out.contains("0 violation(s)"), "{out}");
    phase("audit and verify");
}
