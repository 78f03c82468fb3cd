//! Fault injection on the Lambda paths. Both functions run under `cargo lambda watch` with
//! `AWS_ENDPOINT_URL` pointing at a fault proxy in front of moto (`helpers/fault_proxy.rs`),
//! and every step of the landing protocol is failed in every way S3, DynamoDB and SQS fail:
//!
//! | step | operation | faults |
//! |---|---|---|
//! | write the object | `s3:PutObject` | 503 SlowDown, 500, connection reset, response lost, 403 |
//! | read the checkpoint | `dynamodb:GetItem` | 503, 500, throttling, reset, response lost, 403 |
//! | commit | `dynamodb:TransactWriteItems` | the same, `TransactionCanceledException` with each reason, an outage that ends by itself |
//! | send the dead letters | `sqs:SendMessageBatch` | 503, 500, reset, response lost, 403 (a throttling outage: `dead_letter_throttling_is_transient`) |
//!
//! Each outage scenario lands a first batch, fails the step for every call (so the fault
//! outlasts the SDK's own retries) while an overlapping batch with a poison record arrives,
//! asserts the response the contract documents (section 5: Kinesis answers a partial batch
//! response naming the first unlanded record, Kafka fails the invocation or answers
//! `batchItemFailures` with `KAFKA_PARTIAL_BATCH_RESPONSE=true`; a permanent fault fails the
//! invocation), asserts the fault fired as often as expected, ends the fault, retries as
//! Lambda would (from the reported record, with more records than before, so the batch
//! boundary differs) and replays the failed batch, then audits every partition touched
//! (`helpers/audit.rs`: each input record exactly once in Bronze or the DLQ, checkpoint at
//! the log's end, no uncommitted object left).
//!
//! Each "absorbed" scenario fails the step's next `MAX_ATTEMPTS - 1` calls (or slows every
//! call): the SDK's retries absorb it, and the invocation must succeed with no failure at
//! all. `TransactionCanceledException` and 403 are not retried by the SDK, so they are only
//! outage cases.
//!
//! The SDK's retry quota (a token bucket per service and process) would run dry after a few
//! dozen failed calls, so each step's outages get a fresh `cargo lambda watch` (fresh
//! function processes); the scenarios of one step share it.

use bronze::record::Source;
use integration_tests::audit::{Ledger, PartitionAudit, audit_partition};
use integration_tests::fault_proxy::{Fault, FaultProxy, Rule};
use integration_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const KINESIS: &str = "kinesis-consumer";
const KAFKA: &str = "kafka-consumer";
/// Attempts the functions' SDK makes per request (`bronze::aws::MAX_ATTEMPTS`).
const ATTEMPTS: u64 = bronze::aws::MAX_ATTEMPTS as u64;
/// How long an outage that ends by itself lasts: longer than the SDK's retries (at most
/// 0.1 + 0.2 + 0.4 + 0.8 s of backoff between five attempts).
const TIMED_OUTAGE: Duration = Duration::from_secs(4);

/// A step of the landing protocol (docs/landing-contract.md, section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Put,
    Checkpoint,
    Commit,
    DeadLetter,
}

impl Step {
    const ALL: [Step; 4] = [Step::Put, Step::Checkpoint, Step::Commit, Step::DeadLetter];

    fn operation(self) -> &'static str {
        match self {
            Step::Put => "s3:PutObject",
            Step::Checkpoint => "dynamodb:GetItem",
            Step::Commit => "dynamodb:TransactWriteItems",
            Step::DeadLetter => "sqs:SendMessageBatch",
        }
    }
}

/// What the contract says the fault is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Transient,
    Permanent,
}

#[derive(Debug, Clone)]
struct Case {
    step: Step,
    fault: Fault,
    class: Class,
    /// The SDK retries this fault itself (so an outage is hit `ATTEMPTS` times per call).
    retried: bool,
    /// An outage that ends by itself after this long, instead of being cleared.
    lasts: Option<Duration>,
}

impl Case {
    fn name(&self) -> String {
        match self.lasts {
            Some(d) => format!("{} {:?} for {d:?}", self.step.operation(), self.fault),
            None => format!("{} {:?}", self.step.operation(), self.fault),
        }
    }

    fn rule(&self) -> Rule {
        match self.lasts {
            Some(d) => Rule::outage_for(self.step.operation(), self.fault.clone(), d),
            None => Rule::outage(self.step.operation(), self.fault.clone()),
        }
    }

    /// Faults injected when `calls` calls of the step fail for good.
    fn injections(&self, calls: u64) -> u64 {
        if self.retried {
            calls * ATTEMPTS
        } else {
            calls
        }
    }
}

/// The faults the SDK retries by itself.
fn retried_faults(step: Step) -> Vec<Fault> {
    let mut faults = vec![
        Fault::SlowDown,
        Fault::InternalError,
        Fault::Throttle,
        Fault::Reset,
        Fault::ResponseLost,
    ];
    if step == Step::Put {
        // S3's throttling answer is SlowDown, already in the list.
        faults.retain(|f| *f != Fault::Throttle);
    }
    faults
}

/// [`retried_faults`] whose outage the matrix checks. SQS throttling that outlasts the
/// retries has its own test (`dead_letter_throttling_is_transient`); a short one is absorbed
/// by the SDK here like every other fault.
fn outage_faults(step: Step) -> Vec<Fault> {
    let mut faults = retried_faults(step);
    if step == Step::DeadLetter {
        faults.retain(|f| *f != Fault::Throttle);
    }
    faults
}

fn outage_cases(step: Step) -> Vec<Case> {
    let case = |fault, class, retried| Case {
        step,
        fault,
        class,
        retried,
        lasts: None,
    };
    let mut cases: Vec<Case> = outage_faults(step)
        .into_iter()
        .map(|f| case(f, Class::Transient, true))
        .collect();
    cases.push(case(
        Fault::Error {
            status: 403,
            code: "AccessDenied".into(),
        },
        Class::Permanent,
        false,
    ));
    if step == Step::Commit {
        // Reasons come in the transaction's item order: the checkpoint put, then the log put.
        for (reasons, class) in [
            (["TransactionConflict", "None"], Class::Transient),
            (["None", "TransactionConflict"], Class::Transient),
            (["ThrottlingError", "None"], Class::Transient),
            (["ProvisionedThroughputExceeded", "None"], Class::Transient),
            // The checkpoint's condition failed, yet the checkpoint is where it was read: a
            // conflict that resolved itself; the retry lands.
            (["ConditionalCheckFailed", "None"], Class::Transient),
            // Only the log entry exists: the partition was landed in interleaved mode.
            (["None", "ConditionalCheckFailed"], Class::Permanent),
            (["ValidationError", "None"], Class::Permanent),
        ] {
            cases.push(case(
                Fault::TransactionCanceled(reasons.iter().map(|r| (*r).to_owned()).collect()),
                class,
                false,
            ));
        }
        cases.push(Case {
            lasts: Some(TIMED_OUTAGE),
            ..case(Fault::InternalError, Class::Transient, true)
        });
    }
    cases
}

/// Faults that must be invisible: the next `ATTEMPTS - 1` calls fail, or every call is slow.
fn absorbed_rules(step: Step) -> Vec<Rule> {
    let mut rules: Vec<Rule> = retried_faults(step)
        .into_iter()
        .map(|f| Rule::next(step.operation(), f, ATTEMPTS - 1))
        .collect();
    rules.push(Rule::outage(
        step.operation(),
        Fault::Latency(Duration::from_millis(300)),
    ));
    rules
}

/// One test's stack, proxy, dead letters and figures.
struct Run {
    stack: Stack,
    proxy: FaultProxy,
    ledger: Ledger,
    next: u32,
    scenarios: usize,
    partitions: usize,
    records: usize,
    letter_repeats: usize,
    started: Instant,
}

impl Run {
    async fn new() -> Self {
        Self {
            stack: Stack::new().await.unwrap(),
            proxy: FaultProxy::start().unwrap(),
            ledger: Ledger::new(),
            next: 0,
            scenarios: 0,
            partitions: 0,
            records: 0,
            letter_repeats: 0,
            started: Instant::now(),
        }
    }

    fn watch(&self, extra: &[(&str, &str)]) -> Watch {
        let mut vars = vec![("AWS_ENDPOINT_URL", self.proxy.url())];
        vars.extend_from_slice(extra);
        Watch::start(&self.stack, &vars).unwrap()
    }

    /// A fresh partition number for the next scenario (scenarios never share partitions).
    fn partition(&mut self) -> u32 {
        self.next += 2;
        self.next
    }

    async fn audit(
        &mut self,
        watch: &Watch,
        ctx: &str,
        source: Source,
        stream: &str,
        partition: &str,
        input: &[String],
    ) {
        self.ledger.drain(&self.stack).await;
        let audit: PartitionAudit =
            audit_partition(&self.stack, &self.ledger, source, stream, partition, input)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: audit failed: {e}\n{}", tail(&watch.log())));
        self.partitions += 1;
        self.records += audit.records;
        self.letter_repeats += audit.letter_repeats;
    }

    fn report(&self, what: &str) {
        println!(
            "{what}: {} scenarios, {} faults injected ({:?}), {} partitions and {} records audited, {} repeated dead letters (same id) deduplicated, {:.0?}",
            self.scenarios,
            self.proxy.injected_total(),
            self.proxy.injected(),
            self.partitions,
            self.records,
            self.letter_repeats,
            self.started.elapsed()
        );
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The response of an invocation that must have landed everything.
fn assert_clean(response: Result<Value, String>, ctx: &str, watch: &Watch) {
    match response {
        Ok(r) if r["batchItemFailures"] == json!([]) => {}
        other => panic!(
            "{ctx}: expected no failures, got {other:?}\n{}",
            tail(&watch.log())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Kinesis

/// The nine records of `kinesis.json` and `kinesis-poison.json` (one shard, the eighth is
/// poison), moved to `shard`.
fn kinesis_records(shard: &str) -> Vec<Value> {
    let mut records = Vec::new();
    for name in ["kinesis.json", "kinesis-poison.json"] {
        for mut r in event(name)["Records"].as_array().unwrap().clone() {
            let seq = r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned();
            r["eventID"] = json!(format!("{shard}:{seq}"));
            records.push(r);
        }
    }
    records
}

fn kinesis_batch(records: &[Value]) -> Value {
    json!({ "Records": records })
}

fn sequence(record: &Value) -> String {
    record["kinesis"]["sequenceNumber"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn kinesis_outage(run: &mut Run, watch: &Watch, case: &Case) {
    let shard = format!("shardId-{:012}", run.partition());
    let ctx = format!("{KINESIS} {shard} {}", case.name());
    let records = kinesis_records(&shard);
    let seqs: Vec<String> = records.iter().map(sequence).collect();
    // Records 0-3 land.
    assert_clean(
        watch.invoke(KINESIS, &kinesis_batch(&records[..4])),
        &ctx,
        watch,
    );
    // The fault, on a batch of records 2-7: two landed, four new, the last one poison.
    let rule = run.proxy.add(case.rule());
    let started = Instant::now();
    let response = watch.invoke(KINESIS, &kinesis_batch(&records[2..8]));
    // The checkpoint read failed: nothing tells which records are landed, so the first one
    // of the batch is reported; after it, the first record above the checkpoint.
    let first_unlanded = if case.step == Step::Checkpoint { 2 } else { 4 };
    match case.class {
        Class::Transient => assert_eq!(
            response,
            Ok(json!({"batchItemFailures": [{"itemIdentifier": seqs[first_unlanded]}]})),
            "{ctx}\n{}",
            tail(&watch.log())
        ),
        Class::Permanent => assert!(
            response.is_err(),
            "{ctx}: a permanent fault fails the invocation, got {response:?}"
        ),
    }
    assert_eq!(
        rule.stats().injected,
        case.injections(1),
        "{ctx}: faults injected"
    );
    end_fault(run, case, started);
    // Lambda's retry: from the reported record (the same batch after a permanent error),
    // and records 8 arrived meanwhile, so the boundary differs from the failed batch.
    let from = match case.class {
        Class::Transient => first_unlanded,
        Class::Permanent => 2,
    };
    assert_clean(
        watch.invoke(KINESIS, &kinesis_batch(&records[from..])),
        &ctx,
        watch,
    );
    // A replay of the failed batch lands nothing.
    let keys = run.stack.keys().await;
    assert_clean(
        watch.invoke(KINESIS, &kinesis_batch(&records[2..8])),
        &ctx,
        watch,
    );
    assert_eq!(
        run.stack.keys().await,
        keys,
        "{ctx}: a replay writes nothing"
    );
    run.proxy.clear();
    run.audit(watch, &ctx, Source::Kinesis, "clickstream", &shard, &seqs)
        .await;
    run.scenarios += 1;
}

fn end_fault(run: &Run, case: &Case, started: Instant) {
    match case.lasts {
        // Not cleared: the outage must end by itself.
        Some(d) => std::thread::sleep(d.saturating_sub(started.elapsed())),
        None => run.proxy.clear(),
    }
}

async fn kinesis_absorbed(run: &mut Run, watch: &Watch, rule: Rule) {
    let shard = format!("shardId-{:012}", run.partition());
    let ctx = format!(
        "{KINESIS} {shard} absorbed {} {:?} {:?}",
        rule.operation, rule.fault, rule.times
    );
    let records = kinesis_records(&shard);
    let seqs: Vec<String> = records.iter().map(sequence).collect();
    let handle = run.proxy.add(rule.clone());
    assert_clean(watch.invoke(KINESIS, &kinesis_batch(&records)), &ctx, watch);
    let stats = handle.stats();
    match rule.fault {
        Fault::Latency(_) => assert!(stats.injected >= 1, "{ctx}: {stats:?}"),
        _ => assert_eq!(stats.injected, ATTEMPTS - 1, "{ctx}: {stats:?}"),
    }
    run.proxy.clear();
    run.audit(watch, &ctx, Source::Kinesis, "clickstream", &shard, &seqs)
        .await;
    run.scenarios += 1;
}

#[tokio::test]
async fn kinesis_consumer_under_faults() {
    let mut run = Run::new().await;
    for step in Step::ALL {
        let watch = run.watch(&[]);
        for case in outage_cases(step) {
            kinesis_outage(&mut run, &watch, &case).await;
        }
    }
    let watch = run.watch(&[]);
    for step in Step::ALL {
        for rule in absorbed_rules(step) {
            kinesis_absorbed(&mut run, &watch, rule).await;
        }
    }
    run.report(KINESIS);
}

// ---------------------------------------------------------------------------------------
// Kafka

/// The records of `msk.json` and `msk-poison.json` by (topic, partition, offset); offset
/// 105 of orders-0 is poison.
struct KafkaRecords {
    template: Value,
    records: BTreeMap<(String, u64, u64), Value>,
}

impl KafkaRecords {
    fn load() -> Self {
        let template = event("msk.json");
        let mut records = BTreeMap::new();
        for name in ["msk.json", "msk-poison.json"] {
            for list in event(name)["records"].as_object().unwrap().values() {
                for r in list.as_array().unwrap() {
                    let key = (
                        r["topic"].as_str().unwrap().to_owned(),
                        r["partition"].as_u64().unwrap(),
                        r["offset"].as_u64().unwrap(),
                    );
                    records.insert(key, r.clone());
                }
            }
        }
        Self { template, records }
    }

    /// An event with, for each `(topic, sample partition, target partition, offsets)`, the
    /// sample partition's records moved to the target partition.
    fn event(&self, parts: &[(&str, u64, u32, std::ops::RangeInclusive<u64>)]) -> Value {
        let mut map = serde_json::Map::new();
        for (topic, from, to, offsets) in parts {
            let list: Vec<Value> = offsets
                .clone()
                .map(|o| {
                    let mut r = self.records[&((*topic).to_owned(), *from, o)].clone();
                    r["partition"] = json!(to);
                    r
                })
                .collect();
            map.insert(format!("{topic}-{to}"), json!(list));
        }
        let mut event = self.template.clone();
        event["records"] = Value::Object(map);
        event
    }
}

fn offsets(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|o| o.to_string()).collect()
}

async fn kafka_outage(
    run: &mut Run,
    watch: &Watch,
    kafka: &KafkaRecords,
    case: &Case,
    partial: bool,
) {
    let p = run.partition();
    let ctx = format!(
        "{KAFKA} (partial responses: {partial}) partitions {p}/{} {}",
        p + 1,
        case.name()
    );
    // msk.json lands: orders 100-103, 42-44 and payments 7-9.
    let first = kafka.event(&[
        ("orders", 0, p, 100..=103),
        ("orders", 1, p + 1, 42..=44),
        ("payments", 0, p, 7..=9),
    ]);
    assert_clean(watch.invoke(KAFKA, &first), &ctx, watch);
    // The fault, on orders 102-106 (two landed, 105 poison) and payments 10-11.
    let failing = kafka.event(&[("orders", 0, p, 102..=106), ("payments", 0, p, 10..=11)]);
    let rule = run.proxy.add(case.rule());
    let started = Instant::now();
    let response = watch.invoke(KAFKA, &failing);
    let orders_from = if case.step == Step::Checkpoint {
        102
    } else {
        104
    };
    let mut expected = vec![json!({"partition": format!("orders-{p}"), "offset": orders_from})];
    if case.step != Step::DeadLetter {
        // payments has no poison: only the dead-letter step leaves it alone.
        expected.push(json!({"partition": format!("payments-{p}"), "offset": 10}));
    }
    match (case.class, partial) {
        (Class::Transient, true) => {
            let mut failures: Vec<Value> = response
                .as_ref()
                .unwrap_or_else(|e| panic!("{ctx}: expected batchItemFailures, got {e}"))
                ["batchItemFailures"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: {response:?}"))
                .iter()
                .map(|f| f["itemIdentifier"].clone())
                .collect();
            failures.sort_by_key(|f| f["partition"].as_str().unwrap_or_default().to_owned());
            assert_eq!(failures, expected, "{ctx}\n{}", tail(&watch.log()));
        }
        _ => assert!(
            response.is_err(),
            "{ctx}: the invocation fails, got {response:?}"
        ),
    }
    let calls = expected.len() as u64;
    assert_eq!(
        rule.stats().injected,
        case.injections(calls),
        "{ctx}: faults injected"
    );
    end_fault(run, case, started);
    // The retry: from the first unlanded offsets, with offset 107 arrived meanwhile.
    let from = match case.class {
        Class::Transient => orders_from,
        Class::Permanent => 102,
    };
    let retry = kafka.event(&[("orders", 0, p, from..=107), ("payments", 0, p, 10..=11)]);
    assert_clean(watch.invoke(KAFKA, &retry), &ctx, watch);
    // A replay of the failed batch lands nothing.
    let keys = run.stack.keys().await;
    assert_clean(watch.invoke(KAFKA, &failing), &ctx, watch);
    assert_eq!(
        run.stack.keys().await,
        keys,
        "{ctx}: a replay writes nothing"
    );
    run.proxy.clear();
    for (topic, partition, input) in [
        ("orders", p, offsets(100..=107)),
        ("orders", p + 1, offsets(42..=44)),
        ("payments", p, offsets(7..=11)),
    ] {
        run.audit(
            watch,
            &ctx,
            Source::Kafka,
            topic,
            &partition.to_string(),
            &input,
        )
        .await;
    }
    run.scenarios += 1;
}

async fn kafka_absorbed(run: &mut Run, watch: &Watch, kafka: &KafkaRecords, rule: Rule) {
    let p = run.partition();
    let ctx = format!(
        "{KAFKA} partitions {p}/{} absorbed {} {:?} {:?}",
        p + 1,
        rule.operation,
        rule.fault,
        rule.times
    );
    let batch = kafka.event(&[
        ("orders", 0, p, 100..=107),
        ("orders", 1, p + 1, 42..=44),
        ("payments", 0, p, 7..=11),
    ]);
    let handle = run.proxy.add(rule.clone());
    assert_clean(watch.invoke(KAFKA, &batch), &ctx, watch);
    let stats = handle.stats();
    match rule.fault {
        Fault::Latency(_) => assert!(stats.injected >= 1, "{ctx}: {stats:?}"),
        _ => assert_eq!(stats.injected, ATTEMPTS - 1, "{ctx}: {stats:?}"),
    }
    run.proxy.clear();
    for (topic, partition, input) in [
        ("orders", p, offsets(100..=107)),
        ("orders", p + 1, offsets(42..=44)),
        ("payments", p, offsets(7..=11)),
    ] {
        run.audit(
            watch,
            &ctx,
            Source::Kafka,
            topic,
            &partition.to_string(),
            &input,
        )
        .await;
    }
    run.scenarios += 1;
}

#[tokio::test]
async fn kafka_consumer_under_faults() {
    let mut run = Run::new().await;
    let kafka = KafkaRecords::load();
    for step in Step::ALL {
        let watch = run.watch(&[]);
        for case in outage_cases(step) {
            kafka_outage(&mut run, &watch, &kafka, &case, false).await;
        }
    }
    let watch = run.watch(&[]);
    for step in Step::ALL {
        for rule in absorbed_rules(step) {
            kafka_absorbed(&mut run, &watch, &kafka, rule).await;
        }
    }
    run.report(KAFKA);
}

#[tokio::test]
async fn kafka_consumer_with_partial_batch_responses_under_faults() {
    let mut run = Run::new().await;
    let kafka = KafkaRecords::load();
    for step in Step::ALL {
        let watch = run.watch(&[("KAFKA_PARTIAL_BATCH_RESPONSE", "true")]);
        for case in outage_cases(step) {
            kafka_outage(&mut run, &watch, &kafka, &case, true).await;
        }
    }
    run.report("kafka-consumer (KAFKA_PARTIAL_BATCH_RESPONSE=true)");
}

/// SQS throttling (`RequestThrottled`) of the dead letters' SendMessageBatch that outlasts the
/// SDK's retries is transient: Kinesis names the first unlanded record, Kafka in partial mode
/// names the partition. (`bronze::aws::classify` once knew only some of the SDK's throttling
/// codes and answered this as a permanent failure.)
#[tokio::test]
async fn dead_letter_throttling_is_transient() {
    let mut run = Run::new().await;
    let kafka = KafkaRecords::load();
    let case = Case {
        step: Step::DeadLetter,
        fault: Fault::Throttle,
        class: Class::Transient,
        retried: true,
        lasts: None,
    };
    let watch = run.watch(&[]);
    kinesis_outage(&mut run, &watch, &case).await;
    drop(watch);
    let watch = run.watch(&[("KAFKA_PARTIAL_BATCH_RESPONSE", "true")]);
    kafka_outage(&mut run, &watch, &kafka, &case, true).await;
}

// ---------------------------------------------------------------------------------------
// The proxy itself

/// The proxy's error answers are read by the real SDK as the services' own errors, and
/// every operation is recognised and counted.
#[tokio::test]
async fn proxy_answers_in_each_services_wire_shape() {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
    use aws_sdk_s3::error::ProvideErrorMetadata;

    let stack = Stack::new().await.unwrap();
    let proxy = FaultProxy::start().unwrap();
    let sdk = Stack::sdk()
        .await
        .into_builder()
        .endpoint_url(proxy.url())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    // Without rules everything passes through.
    s3.put_object()
        .bucket(&stack.bucket)
        .key("bronze/a")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();

    let put = |sk: &str| {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&stack.table)
                    .item("pk", AttributeValue::S("p".into()))
                    .item("sk", AttributeValue::S(sk.into()))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    proxy.add(Rule::next(
        "dynamodb:TransactWriteItems",
        Fault::TransactionCanceled(vec!["TransactionConflict".into(), "None".into()]),
        1,
    ));
    let err = ddb
        .transact_write_items()
        .transact_items(put("a"))
        .transact_items(put("b"))
        .send()
        .await
        .unwrap_err();
    match err.into_service_error() {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            let codes: Vec<_> = e.cancellation_reasons().iter().map(|r| r.code()).collect();
            assert_eq!(codes, [Some("TransactionConflict"), Some("None")]);
        }
        other => panic!("{other:?}"),
    }

    proxy.add(Rule::next("dynamodb:GetItem", Fault::Throttle, 1));
    let err = ddb
        .get_item()
        .table_name(&stack.table)
        .key("pk", AttributeValue::S("p".into()))
        .key("sk", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
        "{err:?}"
    );

    proxy.add(Rule::next("s3:PutObject", Fault::SlowDown, 1));
    let err = s3
        .put_object()
        .bucket(&stack.bucket)
        .key("bronze/b")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SlowDown"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));

    proxy.add(Rule::next("sqs:SendMessage", Fault::Throttle, 1));
    let err = sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("RequestThrottled"), "{err:?}");

    proxy.add(Rule::next("s3:ListObjectsV2", Fault::Reset, 1));
    let err = s3
        .list_objects_v2()
        .bucket(&stack.bucket)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            aws_sdk_s3::error::SdkError::DispatchFailure(_)
                | aws_sdk_s3::error::SdkError::ResponseError(_)
        ),
        "a reset is a connection failure: {err:?}"
    );

    // The response is lost, but the write happened.
    proxy.add(Rule::next("s3:PutObject", Fault::ResponseLost, 1));
    s3.put_object()
        .bucket(&stack.bucket)
        .key("bronze/c")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert!(stack.keys().await.contains(&"bronze/c".to_owned()));

    // The outage for a duration ends by itself.
    proxy.add(Rule::outage_for(
        "s3:GetObject",
        Fault::InternalError,
        Duration::from_millis(300),
    ));
    let get = || s3.get_object().bucket(&stack.bucket).key("bronze/a").send();
    assert!(get().await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    get().await.unwrap();

    let calls = proxy.all_calls();
    for op in [
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListObjectsV2",
        "dynamodb:TransactWriteItems",
        "dynamodb:GetItem",
        "sqs:SendMessage",
    ] {
        assert!(calls.get(op).is_some_and(|n| *n >= 1), "{op}: {calls:?}");
    }
    assert_eq!(proxy.injected_total(), 7, "{:?}", proxy.injected());
}
