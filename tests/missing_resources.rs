//! A missing bucket, table or queue fails the invocation loudly and commits nothing; once the
//! fault is fixed, the retry lands everything exactly once.

use bronze::record::Source;
use integration_tests::*;

#[tokio::test]
async fn missing_bucket_fails_loudly_then_retry_lands_once() {
    let stack = Stack::names().await.unwrap();
    stack.create_table().await.unwrap();
    stack.create_queue().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = event("kinesis.json");
    let shard = "shardId-000000000006";

    let err = watch
        .invoke("kinesis-consumer", &event)
        .expect_err("a missing bucket must fail the invocation");
    assert!(
        err.contains("NoSuchBucket"),
        "error names the problem: {err}"
    );
    assert!(
        err.contains("kinesis/clickstream/shardId-000000000006"),
        "error names the partition: {err}"
    );
    assert!(
        stack
            .checkpoint(Source::Kinesis, "clickstream", shard)
            .await
            .is_none(),
        "nothing committed"
    );
    assert!(
        stack
            .commit_log(Source::Kinesis, "clickstream", shard)
            .await
            .is_empty()
    );

    stack.create_bucket().await.unwrap();
    watch.invoke("kinesis-consumer", &event).unwrap();
    watch.invoke("kinesis-consumer", &event).unwrap();
    assert_eq!(
        stack
            .committed_cursors(Source::Kinesis, "clickstream", shard)
            .await,
        kinesis_cursors(&event)
    );
    assert_eq!(stack.keys().await.len(), 1, "exactly one object");
}

#[tokio::test]
async fn missing_table_fails_loudly_then_retry_lands_once() {
    let stack = Stack::names().await.unwrap();
    stack.create_bucket().await.unwrap();
    stack.create_queue().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = event("msk.json");

    let err = watch
        .invoke("kafka-consumer", &event)
        .expect_err("a missing table must fail the invocation");
    assert!(
        err.contains("ResourceNotFoundException"),
        "error names the problem: {err}"
    );
    assert!(
        stack.keys().await.is_empty(),
        "nothing written before the checkpoint could be read"
    );

    stack.create_table().await.unwrap();
    watch.invoke("kafka-consumer", &event).unwrap();
    watch.invoke("kafka-consumer", &event).unwrap();
    for ((topic, partition), offsets) in kafka_partitions(&event) {
        assert_eq!(
            stack
                .committed_cursors(Source::Kafka, &topic, &partition)
                .await,
            offsets
        );
        assert_eq!(
            stack
                .commit_log(Source::Kafka, &topic, &partition)
                .await
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn missing_queue_blocks_the_poison_partition_until_fixed() {
    let stack = Stack::names().await.unwrap();
    stack.create_bucket().await.unwrap();
    stack.create_table().await.unwrap();
    let watch = Watch::start(&stack, &[]).unwrap();
    let event = event("msk-poison.json");

    let err = watch
        .invoke("kafka-consumer", &event)
        .expect_err("a poison record with no DLQ must not be dropped");
    assert!(err.contains("sqs:SendMessage"), "{err}");
    assert!(
        stack
            .checkpoint(Source::Kafka, "orders", "0")
            .await
            .is_none(),
        "the poison partition commits nothing"
    );
    // The partition without poison landed.
    assert_eq!(
        stack
            .committed_cursors(Source::Kafka, "payments", "0")
            .await,
        ["10", "11"]
    );

    stack.create_queue().await.unwrap();
    watch.invoke("kafka-consumer", &event).unwrap();
    assert_eq!(stack.dead_letters().await.len(), 1);
    assert_eq!(
        stack.committed_cursors(Source::Kafka, "orders", "0").await,
        ["104", "106", "107"]
    );
    assert_eq!(
        stack
            .committed_cursors(Source::Kafka, "payments", "0")
            .await,
        ["10", "11"]
    );
}
