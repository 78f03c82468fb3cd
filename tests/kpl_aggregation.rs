//! KPL aggregated Kinesis records through the real Kinesis function on moto. The aggregates
//! are built by AWS's reference aggregator (PyPI `aws-kinesis-agg`, in the project's
//! virtualenv), so the test checks the wire format, not our own encoder against itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bronze::record::Source;
use integration_tests::fault_proxy::{Fault, FaultProxy, Rule};
use integration_tests::*;
use serde_json::{Value, json};

/// One user record: partition key, explicit hash key, data.
type User = (&'static str, Option<&'static str>, Vec<u8>);

/// One KPL aggregate per list, by AWS's reference aggregator.
fn aggregates(lists: &[Vec<User>]) -> Vec<Vec<u8>> {
    let lists: Vec<Vec<integration_tests::KplUserRecord>> = lists
        .iter()
        .map(|users| {
            users
                .iter()
                .map(|(pk, ehk, data)| ((*pk).to_owned(), ehk.map(str::to_owned), data.clone()))
                .collect()
        })
        .collect();
    kpl_aggregates(&lists)
}

fn seq(n: u64) -> String {
    format!("4959033827149025660855969253836157109592157598913658{n:04}")
}

fn record(stream: &str, shard: &str, n: u64, key: &str, data: &[u8]) -> Value {
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": seq(n),
            "data": B64.encode(data),
            "approximateArrivalTimestamp": 1764201600.25
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{shard}:{}", seq(n)),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
        "awsRegion": "us-east-1",
        "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}")
    })
}

fn batch(records: &[Value]) -> Value {
    json!({ "Records": records })
}

fn users(prefix: &str, n: usize) -> Vec<User> {
    (0..n)
        .map(|i| {
            let key: &'static str = Box::leak(format!("{prefix}-k{}", i % 2).into_boxed_str());
            let ehk = (i == 1).then_some("170141183460469231731687303715884105728");
            (key, ehk, format!("{{\"{prefix}\":{i}}}").into_bytes())
        })
        .collect()
}

/// Every committed line of a shard: (cursor, key, payload text, explicit hash key header).
async fn landed(
    stack: &Stack,
    stream: &str,
    shard: &str,
) -> Vec<(String, String, String, Option<String>)> {
    stack
        .committed_lines(Source::Kinesis, stream, shard)
        .await
        .into_iter()
        .map(|l| {
            let ehk = l["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h["key"] == "kinesis.explicit_hash_key"))
                .map(|h| h["value"].as_str().unwrap().to_owned());
            (
                l["cursor"].as_str().unwrap().to_owned(),
                l["key"].as_str().unwrap().to_owned(),
                l["payload"].to_string(),
                ehk,
            )
        })
        .collect()
}

#[tokio::test]
async fn aggregated_and_plain_records_land_once_each_with_their_own_keys() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    // clickstream is `payload_format: json`, so a user record that is not JSON is poison.
    let stream = "clickstream";
    let shard = "shardId-000000000007";
    let mut poisoned = users("b", 3);
    poisoned[1].2 = b"not json".to_vec();
    let aggs = aggregates(&[users("a", 3), poisoned]);
    let records = vec![
        record(stream, shard, 1, "plain-1", b"{\"p\":1}"),
        record(stream, shard, 2, "outer-key", &aggs[0]),
        record(stream, shard, 3, "plain-3", b"{\"p\":3}"),
        record(stream, shard, 4, "outer-key", &aggs[1]),
        record(stream, shard, 5, "plain-5", b"{\"p\":5}"),
    ];
    let response = watch
        .invoke("kinesis-consumer", &batch(&records))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "{}",
        watch.log()
    );

    let ehk = Some("170141183460469231731687303715884105728".to_owned());
    let expected = vec![
        (seq(1), "plain-1".into(), "{\"p\":1}".into(), None),
        (
            format!("{}:0", seq(2)),
            "a-k0".into(),
            "{\"a\":0}".into(),
            None,
        ),
        (
            format!("{}:1", seq(2)),
            "a-k1".into(),
            "{\"a\":1}".into(),
            ehk.clone(),
        ),
        (
            format!("{}:2", seq(2)),
            "a-k0".into(),
            "{\"a\":2}".into(),
            None,
        ),
        (seq(3), "plain-3".into(), "{\"p\":3}".into(), None),
        (
            format!("{}:0", seq(4)),
            "b-k0".into(),
            "{\"b\":0}".into(),
            None,
        ),
        (
            format!("{}:2", seq(4)),
            "b-k0".into(),
            "{\"b\":2}".into(),
            None,
        ),
        (seq(5), "plain-5".into(), "{\"p\":5}".into(), None),
    ];
    assert_eq!(landed(&stack, stream, shard).await, expected);
    // The poison user record is in the DLQ with its sequence and sub-sequence number.
    let letters = stack.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["partition"], shard);
    assert_eq!(letters[0]["cursor"], format!("{}:1", seq(4)));
    assert_eq!(
        B64.decode(letters[0]["payload_base64"].as_str().unwrap())
            .unwrap(),
        b"not json"
    );

    // Replays with other batch boundaries (Lambda's retry, a bisected batch) land nothing.
    let keys = stack.keys().await;
    for slice in [&records[..], &records[1..3], &records[3..4]] {
        let response = watch.invoke("kinesis-consumer", &batch(slice)).unwrap();
        assert_eq!(response, json!({"batchItemFailures": []}));
    }
    assert_eq!(stack.keys().await, keys, "a replay writes nothing");
    assert_eq!(landed(&stack, stream, shard).await, expected);
    assert!(stack.dead_letters().await.is_empty(), "no second letter");
}

#[tokio::test]
async fn a_failed_landing_reports_the_aggregates_sequence_number_and_the_retry_lands_once() {
    let stack = Stack::new().await.unwrap();
    let proxy = FaultProxy::start().unwrap();
    let watch = Watch::start(&stack, &[("AWS_ENDPOINT_URL", proxy.url())]).unwrap();
    let stream = "clickstream";
    let shard = "shardId-000000000008";
    let aggs = aggregates(&[users("c", 4), users("d", 2)]);
    let records = vec![
        record(stream, shard, 10, "outer", &aggs[0]),
        record(stream, shard, 11, "outer", &aggs[1]),
    ];
    let rule = proxy.add(Rule::outage("s3:PutObject", Fault::SlowDown));
    let response = watch
        .invoke("kinesis-consumer", &batch(&records))
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    // Lambda knows only Kinesis records: the item is the aggregate's sequence number.
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": seq(10)}]}),
        "{}",
        watch.log()
    );
    assert!(rule.stats().injected > 0);
    proxy.clear();
    let response = watch.invoke("kinesis-consumer", &batch(&records)).unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    let cursors: Vec<String> = landed(&stack, stream, shard)
        .await
        .into_iter()
        .map(|l| l.0)
        .collect();
    let expected: Vec<String> = (0..4)
        .map(|i| format!("{}:{i}", seq(10)))
        .chain((0..2).map(|i| format!("{}:{i}", seq(11))))
        .collect();
    assert_eq!(cursors, expected);
}

#[tokio::test]
async fn an_aggregate_that_does_not_decode_lands_whole_and_is_reported() {
    let stack = Stack::new().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    // An unlisted stream lands with the defaults (`payload_format: auto`).
    let stream = "kpl-undecodable";
    let shard = "shardId-000000000009";
    let mut bad = aggregates(&[users("e", 2)]).remove(0);
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // the MD5 trailer no longer matches
    let response = watch
        .invoke(
            "kinesis-consumer",
            &batch(&[record(stream, shard, 20, "outer", &bad)]),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(response, json!({"batchItemFailures": []}));
    let lines = stack.committed_lines(Source::Kinesis, stream, shard).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["cursor"], seq(20));
    assert_eq!(lines[0]["key"], "outer");
    assert_eq!(
        B64.decode(lines[0]["payload_base64"].as_str().unwrap())
            .unwrap(),
        bad,
        "the raw record, byte for byte"
    );
    let log = watch.log();
    assert!(log.contains("does not deaggregate"), "{log}");
    assert!(log.contains("\"UndecodableAggregates\":1"), "{log}");
}
