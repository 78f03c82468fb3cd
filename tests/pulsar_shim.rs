//! pulsar-lite and the `pulsar` crate, with and without `helpers/pulsar_shim.rs`.
//!
//! - The exact defect: a MESSAGE frame read raw from pulsar-lite has no magic number and
//!   checksum, the crate's own `Codec` rejects it, and the shim's rewrite of the same bytes
//!   decodes (checksum verified by the crate).
//! - The crate's consumer straight against pulsar-lite receives nothing.
//! - Through the shim: 100 messages over a partitioned topic with their message ids,
//!   individual and cumulative acks, redelivery of exactly the unacked messages after a
//!   reconnect, a network cut and a broker restart; the four subscription types; batch ids.
//!
//! Needs pulsar-lite (`make venv`); a missing broker fails, it does not skip.

use futures::StreamExt;
use integration_tests::pulsar::{PulsarLite, client, produce};
use integration_tests::pulsar_shim::{
    Change, Direction, MAGIC_CRC32C, PulsarShim, rewrite_broker_frame, split_frame,
};
use prost::Message as _;
use pulsar::consumer::{InitialPosition, Message};
use pulsar::proto::{self, BaseCommand, MessageIdData, base_command::Type};
use pulsar::{Consumer, ConsumerOptions, Pulsar, SubType, TokioExecutor};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

type Msg = Message<Vec<u8>>;

async fn subscribe_named(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    sub_type: SubType,
    name: &str,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription("s")
        .with_subscription_type(sub_type)
        .with_consumer_name(name)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
}

async fn subscribe(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
    sub_type: SubType,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_subscription_type(sub_type)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
}

/// Messages until `distinct` different payloads have arrived, or nothing arrives for
/// `quiet`. Duplicates are kept: pulsar-lite sometimes dispatches an entry twice to a
/// consumer that follows the tail while messages are being published (its log shows the
/// same `Sent message L:E` twice), so tests that publish to live consumers count distinct
/// payloads.
async fn receive(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    distinct: usize,
    quiet: Duration,
) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    while seen.len() < distinct {
        match tokio::time::timeout(quiet, consumer.next()).await {
            Ok(Some(Ok(m))) => {
                seen.insert(m.payload.data.clone());
                out.push(m);
            }
            Ok(Some(Err(e))) => panic!("consumer error after {} messages: {e}", out.len()),
            Ok(None) => panic!("consumer stream ended after {} messages", out.len()),
            Err(_) => break,
        }
    }
    out
}

fn text(m: &Msg) -> String {
    String::from_utf8(m.payload.data.clone()).unwrap()
}

fn texts(ms: &[Msg]) -> BTreeSet<String> {
    ms.iter().map(text).collect()
}

fn id(m: &MessageIdData) -> (u64, u64, i32, Option<i32>) {
    (
        m.ledger_id,
        m.entry_id,
        m.partition.unwrap_or(-1),
        m.batch_index,
    )
}

fn names(prefix: &str, range: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
    range.into_iter().map(|i| format!("{prefix}{i}")).collect()
}

/// The acks reach the broker through the consumer's engine and connection tasks: give them
/// a moment before closing (the crate's `ack` returns once the ack is queued).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn close(mut consumer: Consumer<Vec<u8>, TokioExecutor>) {
    consumer.close().await.unwrap();
}

/// A minimal blocking Pulsar client speaking the binary protocol, to read frames exactly as
/// pulsar-lite sends them.
struct Raw(std::net::TcpStream);

impl Raw {
    fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Self(stream);
        raw.send(BaseCommand {
            r#type: Type::Connect as i32,
            connect: Some(proto::CommandConnect {
                client_version: "bronze-raw-test".to_owned(),
                protocol_version: Some(12),
                ..Default::default()
            }),
            ..Default::default()
        });
        raw.expect(Type::Connected);
        raw
    }

    fn send(&mut self, command: BaseCommand) {
        let cmd = command.encode_to_vec();
        let mut frame = Vec::new();
        frame.extend_from_slice(&(cmd.len() as u32 + 4).to_be_bytes());
        frame.extend_from_slice(&(cmd.len() as u32).to_be_bytes());
        frame.extend_from_slice(&cmd);
        self.0.write_all(&frame).unwrap();
    }

    /// The next frame of type `ty` (whole, size prefix included), skipping others.
    fn expect(&mut self, ty: Type) -> Vec<u8> {
        loop {
            let mut size = [0u8; 4];
            self.0.read_exact(&mut size).unwrap();
            let mut frame = size.to_vec();
            frame.resize(4 + u32::from_be_bytes(size) as usize, 0);
            self.0.read_exact(&mut frame[4..]).unwrap();
            let (cmd, _) = split_frame(&frame).unwrap();
            let command = BaseCommand::decode(cmd).unwrap();
            assert_ne!(
                command.r#type,
                Type::Error as i32,
                "broker error: {command:?}"
            );
            if command.r#type == ty as i32 {
                return frame;
            }
        }
    }
}

fn decode_command(frame: &[u8]) -> BaseCommand {
    BaseCommand::decode(split_frame(frame).unwrap().0).unwrap()
}

#[tokio::test]
async fn pulsar_lite_sends_payloads_without_magic_and_checksum_and_the_shim_adds_them() {
    let lite = PulsarLite::start().unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let topic = "persistent://public/default/raw";
    let payload = b"hello pulsar-lite".to_vec();
    let sent = produce(&shim.url, topic, 1, Some("k1"), |_| payload.clone())
        .await
        .unwrap();
    assert_eq!(id(&sent[0]), (0, 0, -1, None));

    let lite_addr = lite.addr;
    let (lookup, message) = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(lite_addr);
        raw.send(BaseCommand {
            r#type: Type::Lookup as i32,
            lookup_topic: Some(proto::CommandLookupTopic {
                topic: topic.to_owned(),
                request_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        });
        let lookup = raw.expect(Type::LookupResponse);
        raw.send(BaseCommand {
            r#type: Type::Subscribe as i32,
            subscribe: Some(proto::CommandSubscribe {
                topic: topic.to_owned(),
                subscription: "raw".to_owned(),
                sub_type: SubType::Exclusive as i32,
                consumer_id: 1,
                request_id: 2,
                initial_position: Some(proto::command_subscribe::InitialPosition::Earliest as i32),
                ..Default::default()
            }),
            ..Default::default()
        });
        raw.expect(Type::Success);
        raw.send(BaseCommand {
            r#type: Type::Flow as i32,
            flow: Some(proto::CommandFlow {
                consumer_id: 1,
                message_permits: 10,
            }),
            ..Default::default()
        });
        (lookup, raw.expect(Type::Message))
    })
    .await
    .unwrap();
    eprintln!("MESSAGE frame from pulsar-lite: {}", hex(&message));

    // [totalSize][cmdSize][cmd] then straight [metadataSize][metadata][payload].
    let (cmd, rest) = split_frame(&message).unwrap();
    assert_eq!(
        decode_command(&message)
            .message
            .unwrap()
            .message_id
            .ledger_id,
        0
    );
    assert_ne!(u16::from_be_bytes([rest[0], rest[1]]), MAGIC_CRC32C);
    let metadata_size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
    let metadata = proto::MessageMetadata::decode(&rest[4..4 + metadata_size]).unwrap();
    assert_eq!(metadata.partition_key.as_deref(), Some("k1"));
    assert_eq!(&rest[4 + metadata_size..], payload.as_slice());
    assert_eq!(
        message.len(),
        4 + 4 + cmd.len() + 4 + metadata_size + payload.len()
    );

    // The crate's codec reads the first 6 bytes of that as magic and checksum.
    let err = pulsar::message::Codec
        .decode(&mut BytesMut::from(&message[..]))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Error decoding payload frame: Incomplete"),
        "{err}"
    );

    // The shim inserts 0x0e01 and the CRC32C of the rest; the codec verifies the checksum.
    let rewritten = rewrite_broker_frame(&message, &shim.url);
    assert_eq!(rewritten.change, Change::ChecksumAdded);
    let fixed = rewritten.bytes.unwrap();
    eprintln!("after the shim: {}", hex(&fixed));
    assert_eq!(fixed.len(), message.len() + 6);
    assert_eq!(&fixed[8 + cmd.len()..10 + cmd.len()], &[0x0e, 0x01]);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(rest);
    assert_eq!(&fixed[10 + cmd.len()..14 + cmd.len()], &crc.to_be_bytes());
    let decoded = pulsar::message::Codec
        .decode(&mut BytesMut::from(&fixed[..]))
        .unwrap()
        .unwrap();
    let decoded_payload = decoded.payload.unwrap();
    assert_eq!(decoded_payload.data, payload);
    assert_eq!(
        decoded_payload.metadata.partition_key.as_deref(),
        Some("k1")
    );
    assert_eq!(decoded.command.message.unwrap().message_id.entry_id, 0);
    // Already fixed: left alone.
    assert_eq!(
        rewrite_broker_frame(&fixed, &shim.url).change,
        Change::ChecksumPresent
    );

    // Lookups name pulsar-lite's own address; the shim makes them name the shim.
    let answer = decode_command(&lookup).lookup_topic_response.unwrap();
    assert_eq!(
        answer.broker_service_url.as_deref(),
        Some(lite.url.as_str())
    );
    assert_eq!(answer.proxy_through_service_url, Some(false));
    let rewritten = rewrite_broker_frame(&lookup, &shim.url);
    assert_eq!(rewritten.change, Change::LookupRewritten);
    let answer = decode_command(&rewritten.bytes.unwrap())
        .lookup_topic_response
        .unwrap();
    assert_eq!(
        answer.broker_service_url.as_deref(),
        Some(shim.url.as_str())
    );
    assert_eq!(answer.request_id, 1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn without_the_shim_the_crate_consumer_receives_nothing() {
    let lite = PulsarLite::start().unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let topic = "persistent://public/default/direct";
    produce(&shim.url, topic, 3, None, |i| format!("m{i}").into_bytes())
        .await
        .unwrap();
    // Producing needs no payload from the broker, so it works straight against pulsar-lite.
    produce(&lite.url, topic, 2, None, |i| {
        format!("m{}", i + 3).into_bytes()
    })
    .await
    .unwrap();

    let direct = client(&lite.url).await.unwrap();
    let mut consumer = subscribe(&direct, topic, "s", SubType::Exclusive)
        .await
        .unwrap();
    // The first MESSAGE fails to decode: the connection's reader stops with the decoding
    // error, the consumer engine treats it as unrecoverable, and the stream ends.
    let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
    assert!(
        matches!(next, Ok(None) | Ok(Some(Err(_))) | Err(_)),
        "a message was decoded without the shim: {next:?}"
    );

    // The same subscription through the shim gets all five.
    let pulsar = client(&shim.url).await.unwrap();
    let mut consumer = subscribe(&pulsar, topic, "s", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 5, Duration::from_secs(10)).await;
    assert_eq!(texts(&got), names("m", 0..5));
    assert_eq!(
        consumer.connections().await.unwrap(),
        vec![shim.url.parse().unwrap()]
    );
}

#[tokio::test]
async fn partitioned_topic_ids_acks_and_redelivery_after_reconnect() {
    const PARTITIONS: u32 = 4;
    let lite = PulsarLite::start_with_partitions(PARTITIONS).unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let topic = "persistent://public/default/orders";
    // No key: the crate's producer goes round-robin over the partitions.
    let receipts = produce(&shim.url, topic, 100, None, |i| {
        format!("m{i}").into_bytes()
    })
    .await
    .unwrap();
    let expected: BTreeMap<String, _> = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("m{i}"), id(r)))
        .collect();
    let partitions_used: BTreeSet<i32> = receipts.iter().map(|r| r.partition.unwrap()).collect();
    assert_eq!(partitions_used, (0..PARTITIONS as i32).collect());

    let pulsar = client(&shim.url).await.unwrap();
    let mut consumer = subscribe(&pulsar, topic, "bronze", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 100, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 100);
    assert_eq!(texts(&got), names("m", 0..100));
    let mut per_partition = BTreeMap::<i32, Vec<(u64, u64)>>::new();
    for m in &got {
        let mid = id(m.message_id());
        // The ids the consumer sees are the ids the producer was given.
        assert_eq!(mid, expected[&text(m)], "{}", text(m));
        let (ledger, entry, partition, batch) = mid;
        assert_eq!(batch, None);
        assert_eq!(m.topic, format!("{topic}-partition-{partition}"));
        per_partition
            .entry(partition)
            .or_default()
            .push((ledger, entry));
    }
    // Within a partition: one ledger, entries 0.. in order, no gap.
    for (partition, ids) in &per_partition {
        let ledger = ids[0].0;
        let entries: Vec<u64> = ids
            .iter()
            .map(|(l, e)| {
                assert_eq!(*l, ledger, "partition {partition}");
                *e
            })
            .collect();
        assert_eq!(entries, (0..ids.len() as u64).collect::<Vec<_>>());
    }
    // Everything went through the shim.
    assert_eq!(
        consumer.connections().await.unwrap(),
        vec![shim.url.parse().unwrap()]
    );
    assert!(shim.stats().checksums_added >= 100);
    assert!(shim.stats().lookups_rewritten > 0);

    // Ack the even ones, reconnect: exactly the odd ones come back, with the same ids.
    let index = |m: &Msg| text(m)[1..].parse::<usize>().unwrap();
    for m in got.iter().filter(|m| index(m) % 2 == 0) {
        consumer.ack(m).await.unwrap();
    }
    settle().await;
    close(consumer).await;
    let mut consumer = subscribe(&pulsar, topic, "bronze", SubType::Exclusive)
        .await
        .unwrap();
    let again = receive(&mut consumer, 100, Duration::from_secs(3)).await;
    assert_eq!(texts(&again), names("m", (0..100).filter(|i| i % 2 == 1)));
    for m in &again {
        assert_eq!(id(m.message_id()), expected[&text(m)]);
        consumer.ack(m).await.unwrap();
    }
    settle().await;
    close(consumer).await;
    let mut consumer = subscribe(&pulsar, topic, "bronze", SubType::Exclusive)
        .await
        .unwrap();
    assert!(
        receive(&mut consumer, 1, Duration::from_secs(2))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn cumulative_ack_and_redelivery_after_a_network_cut_and_a_broker_restart() {
    let mut lite = PulsarLite::start().unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let topic = "persistent://public/default/cumulative";
    produce(&shim.url, topic, 30, None, |i| format!("m{i}").into_bytes())
        .await
        .unwrap();
    let pulsar = client(&shim.url).await.unwrap();

    // Cumulative ack of m9 acks m0..=m9.
    let mut consumer = subscribe(&pulsar, topic, "cum", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 30, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 30);
    consumer.cumulative_ack(&got[9]).await.unwrap();
    settle().await;
    close(consumer).await;
    let mut consumer = subscribe(&pulsar, topic, "cum", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 30, Duration::from_secs(3)).await;
    assert_eq!(texts(&got), names("m", 10..30));

    // A network cut (every connection through the shim dropped): the same consumer
    // reconnects on its own and gets the unacked messages again, not the acked ones.
    for m in &got[..10] {
        consumer.ack(m).await.unwrap(); // m10..m19
    }
    settle().await;
    let connections = shim.stats().connections;
    shim.disconnect_all();
    let got = receive(&mut consumer, 30, Duration::from_secs(5)).await;
    assert_eq!(texts(&got), names("m", 20..30));
    assert!(shim.stats().connections > connections);

    // A broker restart (SIGKILL, same port and database): acks and messages survive.
    consumer.ack(&got[0]).await.unwrap(); // m20
    settle().await;
    let started = Instant::now();
    lite.restart().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("nothing redelivered within 30 s of the restart")
        .unwrap()
        .unwrap();
    eprintln!("first redelivery {:?} after the restart", started.elapsed());
    let mut got = vec![first];
    got.extend(receive(&mut consumer, 30, Duration::from_secs(3)).await);
    assert_eq!(texts(&got), names("m", 21..30));
    for m in &got {
        consumer.ack(m).await.unwrap();
    }
    settle().await;
    close(consumer).await;

    // And a new producer after the restart appends to the same ledger.
    let more = produce(&shim.url, topic, 1, None, |_| b"m30".to_vec())
        .await
        .unwrap();
    assert_eq!(more[0].entry_id, 30);
    let mut consumer = subscribe(&pulsar, topic, "cum", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 30, Duration::from_secs(3)).await;
    assert_eq!(texts(&got), names("m", 30..31));
}

#[tokio::test]
async fn subscription_types() {
    let lite = PulsarLite::start().unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let pulsar = client(&shim.url).await.unwrap();
    let all: BTreeSet<String> = (0..4)
        .flat_map(|k| (0..3).map(move |j| format!("key{k}-{j}")))
        .collect();
    let produce_keys = |topic: String| {
        let url = shim.url.clone();
        async move {
            for k in 0..4 {
                produce(&url, &topic, 3, Some(&format!("key{k}")), |j| {
                    format!("key{k}-{j}").into_bytes()
                })
                .await
                .unwrap();
            }
        }
    };

    // Exclusive: a second consumer is refused. pulsar-lite does it by closing the whole
    // connection ("protocol error"), not with an ERROR ConsumerBusy, so the crate reports
    // `Disconnected`, and every consumer and producer sharing that connection is cut too.
    let topic = "persistent://public/default/exclusive".to_owned();
    let mut first = subscribe(&pulsar, &topic, "s", SubType::Exclusive)
        .await
        .unwrap();
    // Hence a client of its own, so the first consumer keeps its connection.
    let other = client(&shim.url).await.unwrap();
    let second = subscribe(&other, &topic, "s", SubType::Exclusive).await;
    assert!(
        matches!(
            second,
            Err(pulsar::Error::Connection(
                pulsar::error::ConnectionError::Disconnected
            ))
        ),
        "{:?}",
        second.err()
    );
    produce_keys(topic.clone()).await;
    assert_eq!(
        texts(&receive(&mut first, 12, Duration::from_secs(5)).await),
        all
    );

    // Two consumers on one subscription of `topic`: what each received of the 12 messages.
    let two_consumers = |topic: &'static str, sub_type: SubType| {
        let pulsar = &pulsar;
        async move {
            let topic = format!("persistent://public/default/{topic}");
            let mut a = subscribe(pulsar, &topic, "s", sub_type).await.unwrap();
            let mut b = subscribe(pulsar, &topic, "s", sub_type).await.unwrap();
            produce_keys(topic).await;
            let got_a = receive(&mut a, 12, Duration::from_secs(2)).await;
            let got_b = receive(&mut b, 12, Duration::from_secs(2)).await;
            (got_a, got_b)
        }
    };

    // Shared: both consumers get some, together all.
    let (got_a, got_b) = two_consumers("shared", SubType::Shared).await;
    assert!(!got_a.is_empty() && !got_b.is_empty());
    assert_eq!(&texts(&got_a) | &texts(&got_b), all);

    // Key_Shared: every key goes to exactly one consumer.
    let (got_a, got_b) = two_consumers("key-shared", SubType::KeyShared).await;
    assert_eq!(&texts(&got_a) | &texts(&got_b), all);
    let keys = |ms: &[Msg]| ms.iter().map(|m| m.key().unwrap()).collect::<BTreeSet<_>>();
    assert!(keys(&got_a).is_disjoint(&keys(&got_b)));

    // Failover: one consumer is active and gets everything, the other none; when the
    // active one closes, the standby gets its unacked messages.
    let topic = "persistent://public/default/failover".to_owned();
    let a = subscribe_named(&pulsar, &topic, SubType::Failover, "consumer-b")
        .await
        .unwrap();
    let b = subscribe_named(&pulsar, &topic, SubType::Failover, "consumer-a")
        .await
        .unwrap();
    produce_keys(topic.clone()).await;
    let mut consumers = [a, b];
    let got_a = receive(&mut consumers[0], 12, Duration::from_secs(2)).await;
    let got_b = receive(&mut consumers[1], 12, Duration::from_secs(2)).await;
    let (active, got) = if got_a.is_empty() {
        (1, got_b)
    } else {
        (0, got_a)
    };
    eprintln!(
        "failover: the active consumer is {:?} (subscribed {})",
        consumers[active].consumer_name(),
        if active == 0 { "first" } else { "second" }
    );
    assert_eq!(texts(&got), all);
    let [a, b] = consumers;
    let (mut active, mut standby) = if active == 0 { (a, b) } else { (b, a) };
    assert!(
        receive(&mut standby, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    let acked = |m: &Msg| text(m).starts_with("key0") || text(m).starts_with("key1");
    for m in got.iter().filter(|m| acked(m)) {
        active.ack(m).await.unwrap();
    }
    settle().await;
    close(active).await;
    let got_standby = receive(&mut standby, 6, Duration::from_secs(5)).await;
    assert_eq!(
        texts(&got_standby),
        got.iter()
            .filter(|m| !acked(m))
            .map(text)
            .collect::<BTreeSet<_>>()
    );
    // pulsar-lite does not tell consumers which one is active.
    assert_eq!(
        shim.count(Direction::ToClient, Type::ActiveConsumerChange),
        0
    );
}

#[tokio::test]
async fn batched_messages_carry_batch_indexes_and_an_ack_covers_the_whole_batch() {
    let lite = PulsarLite::start().unwrap();
    let shim = PulsarShim::start(lite.addr).await.unwrap();
    let pulsar = client(&shim.url).await.unwrap();
    let topic = "persistent://public/default/batched";
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .with_options(pulsar::ProducerOptions {
            batch_size: Some(5),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for i in 0..10 {
        receipts.push(
            producer
                .send_non_blocking(format!("b{i}").into_bytes())
                .await
                .unwrap(),
        );
    }
    for (i, receipt) in receipts.into_iter().enumerate() {
        let mid = receipt.await.unwrap().message_id.unwrap();
        assert_eq!(id(&mid), (0, i as u64 / 5, -1, Some(i as i32 % 5)));
    }

    let mut consumer = subscribe(&pulsar, topic, "s", SubType::Exclusive)
        .await
        .unwrap();
    let got = receive(&mut consumer, 10, Duration::from_secs(3)).await;
    let ids: Vec<_> = got.iter().map(|m| id(m.message_id())).collect();
    let expected: Vec<_> = (0..10)
        .map(|i| (0, i / 5, -1, Some(i as i32 % 5)))
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        (0..10).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );

    // The crate sends a batch message's ack as its entry's id plus the batch index and no
    // ack set; like an Apache Pulsar broker without batch-index acks, pulsar-lite then acks
    // the whole entry. Acking b5 alone loses b6..b9 on redelivery: a consumer must ack a
    // batch only once every message in it is safe.
    consumer.ack(&got[5]).await.unwrap();
    settle().await;
    close(consumer).await;
    let mut consumer = subscribe(&pulsar, topic, "s", SubType::Exclusive)
        .await
        .unwrap();
    let again = receive(&mut consumer, 10, Duration::from_secs(3)).await;
    assert_eq!(texts(&again), names("b", 0..5));
}
