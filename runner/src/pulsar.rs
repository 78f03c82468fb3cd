//! Pulsar through the `pulsar` crate: one consumer on the configured topics (a partitioned
//! topic is read partition by partition), the message id as cursor, acknowledgement only
//! after the commit.
//!
//! - The subscription starts at the earliest message, and nothing is acknowledged before its
//!   commit, so the subscription's position is never past the checkpoint: after a crash
//!   the broker redelivers what is not committed, and the engine skips what is.
//! - Exclusive and Failover: one consumer per partition at a time, so a partition's records
//!   arrive in order and land in ordered mode; acknowledgements are cumulative.
//! - Key_Shared: several consumers share a partition by key, so each sees an interleaved
//!   subset; they land in interleaved mode (see the landing contract) and acknowledge
//!   message by message, since Pulsar refuses cumulative acknowledgements there.
//! - A failed landing is retried from memory (the pipeline keeps the records); poison goes
//!   to the DLQ like every source.
//! - Backpressure: the consumer stops reading while the buffer is full; Pulsar's flow
//!   control then stops delivery once the receiver queue is full.

use crate::config::{PulsarConfig, SubscriptionType};
use crate::pipeline::{Acknowledge, Input, Pipeline, Shared, record_footprint};
use bronze::cursor::PulsarMessageId;
use bronze::engine::Lander;
use bronze::ports::StateStore;
use bronze::record::{Header, PartitionId, Record, Source};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::proto::MessageIdData;
use pulsar::{ConsumerOptions, SubType, TokioExecutor};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The stream name a topic lands under: the topic without its `persistent://` scheme and
/// without a `-partition-N` suffix, e.g. `public/default/events`.
pub fn stream_name(topic: &str) -> String {
    let name = topic
        .strip_prefix("persistent://")
        .or_else(|| topic.strip_prefix("non-persistent://"))
        .unwrap_or(topic);
    split_partition(name).0.to_owned()
}

/// Splits `name-partition-N` into `(name, Some(N))`.
fn split_partition(topic: &str) -> (&str, Option<u32>) {
    match topic.rsplit_once("-partition-") {
        Some((base, n)) => match n.parse() {
            Ok(n) => (base, Some(n)),
            Err(_) => (topic, None),
        },
        None => (topic, None),
    }
}

/// The partition id of a message from `topic` (the broker's full topic name). A topic that
/// is not partitioned is partition `-1`, as Pulsar numbers it.
pub fn partition_id(topic: &str) -> PartitionId {
    let (_, n) = split_partition(topic);
    PartitionId::new(
        Source::Pulsar,
        stream_name(topic),
        n.map_or("-1".to_owned(), |n| n.to_string()),
    )
}

/// Pulsar has no cheap high watermark per partition here; lag is not reported.
fn no_lag(_: Option<&PulsarMessageId>, _: u64) -> u64 {
    0
}

/// Acknowledgement requests from the pipeline to the consumer task.
#[derive(Debug, Default)]
pub struct PulsarAcks {
    committed: Mutex<HashMap<PartitionId, PulsarMessageId>>,
    notify: tokio::sync::Notify,
}

impl Acknowledge<PulsarMessageId> for PulsarAcks {
    fn committed(&self, partition: &PartitionId, last: &PulsarMessageId) {
        let mut c = self.committed.lock().expect("acks lock");
        let slot = c.entry(partition.clone()).or_insert(*last);
        if *last > *slot {
            *slot = *last;
        }
        drop(c);
        self.notify.notify_one();
    }
}

/// Converts a message into a source-neutral record.
fn to_record(message: &pulsar::consumer::Message<Vec<u8>>) -> Record<PulsarMessageId> {
    let id = message.message_id();
    let meta = &message.payload.metadata;
    let timestamp = meta
        .event_time
        .filter(|t| *t > 0)
        .unwrap_or(meta.publish_time);
    Record {
        cursor: PulsarMessageId::new(id.ledger_id, id.entry_id, id.batch_index),
        key: meta.partition_key.as_ref().map(|k| k.as_bytes().to_vec()),
        headers: meta
            .properties
            .iter()
            .map(|kv| Header {
                key: kv.key.clone(),
                value: Some(kv.value.clone().into_bytes()),
            })
            .collect(),
        timestamp_ms: i64::try_from(timestamp).ok(),
        payload: Some(message.payload.data.clone()),
        defect: None,
        schema_id: None,
    }
}

/// Starts the Pulsar pipeline and consumer. Returns their tasks.
#[allow(clippy::type_complexity)]
pub async fn start(
    config: PulsarConfig,
    setup: &crate::app::Setup,
    lander: Lander,
    _state: Arc<dyn StateStore>,
    shared: Arc<Shared>,
    run_id: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(
    tokio::task::JoinHandle<usize>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let runner = &setup.runner;
    let mut builder = pulsar::Pulsar::builder(config.service_url.clone(), TokioExecutor)
        // Reconnect for as long as it takes (a broker restart, a network cut), backing off
        // to 10 s; what is not acknowledged is redelivered and skipped when committed.
        .with_connection_retry_options(pulsar::ConnectionRetryOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_retries: u32::MAX,
            ..Default::default()
        });
    let token = match &config.token_secret_arn {
        Some(arn) => {
            let value = crate::secrets::fetch(&setup.sdk, arn).await?;
            let raw = value.expose();
            Some(
                serde_json::from_str::<serde_json::Value>(raw)
                    .ok()
                    .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| raw.to_owned()),
            )
        }
        None => std::env::var("PULSAR_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if let Some(token) = token {
        builder = builder.with_auth(pulsar::Authentication {
            name: "token".into(),
            data: token.into_bytes(),
        });
    }
    let client = builder
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("runner.pulsar.service_url {}: {e}", config.service_url))?;
    let sub_type = match config.subscription_type {
        SubscriptionType::Exclusive => SubType::Exclusive,
        SubscriptionType::Failover => SubType::Failover,
        SubscriptionType::KeyShared => SubType::KeyShared,
    };
    let consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topics(&config.topics)
        .with_subscription(&config.subscription)
        .with_subscription_type(sub_type)
        .with_consumer_name(run_id)
        .with_options(ConsumerOptions {
            initial_position: InitialPosition::Earliest,
            durable: Some(true),
            ..Default::default()
        })
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "subscribing {} to {:?}: {e}",
                config.subscription,
                config.topics
            )
        })?;
    tracing::info!(topics = ?config.topics, subscription = %config.subscription, kind = ?config.subscription_type, "subscribed to Pulsar");
    let acks = Arc::new(PulsarAcks::default());
    let mut pipeline = Pipeline::new(
        lander,
        setup.connector.clone(),
        runner.files.clone(),
        runner.buffer.max_bytes,
        &runner.concurrency,
        shared.clone(),
        acks.clone(),
        run_id,
        no_lag,
    );
    if config.subscription_type == SubscriptionType::KeyShared {
        pipeline = pipeline.interleaved();
    }
    let (tx, rx) = mpsc::channel(16);
    let drain = Duration::from_millis(runner.shutdown_timeout_ms);
    let pipeline_task = tokio::spawn(pipeline.run(rx, drain));
    let cumulative = config.subscription_type != SubscriptionType::KeyShared;
    let max_buffer = runner.buffer.max_bytes;
    let consumer_task = tokio::spawn(consume(
        consumer, tx, acks, shared, max_buffer, cumulative, stop,
    ));
    Ok((pipeline_task, consumer_task))
}

/// Delivered, not yet acknowledged message ids of one partition, with the broker's topic name.
#[derive(Debug, Default)]
struct Unacked {
    topic: String,
    ids: VecDeque<(PulsarMessageId, MessageIdData)>,
    /// The same ids, to recognise a redelivery of a message still held (after a reconnect,
    /// or a broker that sends an entry twice): it is not handed over again.
    pending: HashSet<PulsarMessageId>,
}

/// The acknowledgements that make everything up to `last` acknowledged, without
/// acknowledging an entry part of whose batch is not committed yet (the crate acknowledges
/// a batched entry as a whole). Pops what it covers from `ids`.
fn ackable(
    ids: &mut VecDeque<(PulsarMessageId, MessageIdData)>,
    pending: &mut HashSet<PulsarMessageId>,
    last: PulsarMessageId,
) -> Vec<MessageIdData> {
    let mut done = Vec::new();
    while ids.front().is_some_and(|(c, _)| *c <= last) {
        let (cursor, data) = ids.pop_front().expect("checked");
        pending.remove(&cursor);
        done.push((cursor, data));
    }
    // An entry is complete when none of its messages is still waiting.
    let incomplete = ids.front().map(|(c, _)| (c.ledger, c.entry));
    let mut out: Vec<MessageIdData> = Vec::new();
    let mut held: Vec<(PulsarMessageId, MessageIdData)> = Vec::new();
    for (cursor, data) in done {
        if Some((cursor.ledger, cursor.entry)) == incomplete {
            held.push((cursor, data));
        } else {
            out.push(data);
        }
    }
    // Messages of the incomplete entry stay until the rest of it is committed.
    for (cursor, data) in held.into_iter().rev() {
        pending.insert(cursor);
        ids.push_front((cursor, data));
    }
    out
}

async fn consume(
    mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor>,
    tx: mpsc::Sender<Input<PulsarMessageId>>,
    acks: Arc<PulsarAcks>,
    shared: Arc<Shared>,
    max_buffer: u64,
    cumulative: bool,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut unacked: HashMap<PartitionId, Unacked> = HashMap::new();
    let mut paused = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            // Read nothing more; the pipeline drains what it holds.
            break;
        }
        let buffered = shared.buffered.load(Ordering::Relaxed);
        if !paused && buffered >= max_buffer {
            paused = true;
            shared.pauses.fetch_add(1, Ordering::Relaxed);
            tracing::info!(buffered, cap = max_buffer, "backpressure: not reading");
        } else if paused && buffered < max_buffer / 2 {
            paused = false;
            tracing::info!(buffered, "backpressure released");
        }
        tokio::select! {
            message = consumer.next(), if !paused => match message {
                Some(Ok(message)) => {
                    let record = to_record(&message);
                    let id = partition_id(&message.topic);
                    let entry = unacked.entry(id.clone()).or_insert_with(|| Unacked {
                        topic: message.topic.clone(),
                        ..Default::default()
                    });
                    if !entry.pending.insert(record.cursor) {
                        tracing::debug!(partition = %id, cursor = %record.cursor, "redelivery of a message still held; ignored");
                        continue;
                    }
                    shared.buffered.fetch_add(record_footprint(&record), Ordering::Relaxed);
                    entry.ids.push_back((record.cursor, message.message_id().clone()));
                    if tx.send(Input::Records(vec![(id, record)])).await.is_err() {
                        anyhow::bail!("the landing pipeline stopped");
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "Pulsar consumer error; the client reconnects"),
                None => anyhow::bail!("the Pulsar consumer stream ended"),
            },
            _ = acks.notify.notified() => {
                acknowledge(&mut consumer, &acks, &mut unacked, cumulative).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Close the input: the pipeline lands and commits what it holds, acknowledging as it goes.
    drop(tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while shared.buffered.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = acks.notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        acknowledge(&mut consumer, &acks, &mut unacked, cumulative).await;
    }
    acknowledge(&mut consumer, &acks, &mut unacked, cumulative).await;
    let _ = consumer.close().await;
    Ok(())
}

/// Acknowledges every delivered message up to each partition's committed cursor.
async fn acknowledge(
    consumer: &mut pulsar::Consumer<Vec<u8>, TokioExecutor>,
    acks: &PulsarAcks,
    unacked: &mut HashMap<PartitionId, Unacked>,
    cumulative: bool,
) {
    let committed: Vec<(PartitionId, PulsarMessageId)> =
        acks.committed.lock().expect("acks lock").drain().collect();
    for (id, last) in committed {
        let Some(entry) = unacked.get_mut(&id) else {
            continue;
        };
        let ids = ackable(&mut entry.ids, &mut entry.pending, last);
        let result = if cumulative {
            match ids.into_iter().last() {
                Some(data) => consumer.cumulative_ack_with_id(&entry.topic, data).await,
                None => Ok(()),
            }
        } else {
            let mut result = Ok(());
            let mut seen = HashSet::new();
            for data in ids {
                // One acknowledgement per entry: the crate acknowledges a batch as a whole.
                if seen.insert((data.ledger_id, data.entry_id)) {
                    if let Err(e) = consumer.ack_with_id(&entry.topic, data).await {
                        result = Err(e);
                    }
                }
            }
            result
        };
        if let Err(e) = result {
            tracing::warn!(partition = %id, error = %e, "acknowledgement failed; the broker redelivers and the engine skips what is committed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(entry: u64, batch: Option<i32>, size: Option<i32>) -> (PulsarMessageId, MessageIdData) {
        (
            PulsarMessageId::new(1, entry, batch),
            MessageIdData {
                ledger_id: 1,
                entry_id: entry,
                batch_index: batch,
                batch_size: size,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_batched_entry_is_acknowledged_only_when_all_of_it_is_committed() {
        let mut ids: VecDeque<_> = [
            id(0, None, None),
            id(1, Some(0), Some(3)),
            id(1, Some(1), Some(3)),
            id(1, Some(2), Some(3)),
            id(2, None, None),
        ]
        .into_iter()
        .collect();
        let mut pending: HashSet<_> = ids.iter().map(|(c, _)| *c).collect();
        // Committed up to the middle of entry 1: only entry 0 may be acknowledged.
        let acked = ackable(&mut ids, &mut pending, PulsarMessageId::new(1, 1, Some(1)));
        assert_eq!(
            acked.iter().map(|d| d.entry_id).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(ids.len(), 4);
        assert!(pending.contains(&PulsarMessageId::new(1, 1, Some(0))));
        // The rest of entry 1 is committed: all of it goes.
        let acked = ackable(&mut ids, &mut pending, PulsarMessageId::new(1, 1, Some(2)));
        assert_eq!(acked.len(), 3);
        assert_eq!(ids.len(), 1);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn partitions_and_stream_names() {
        assert_eq!(
            stream_name("persistent://public/default/events"),
            "public/default/events"
        );
        let id = partition_id("persistent://public/default/events-partition-3");
        assert_eq!(
            (id.stream.as_str(), id.partition.as_str()),
            ("public/default/events", "3")
        );
        let id = partition_id("persistent://public/default/plain");
        assert_eq!(id.partition, "-1");
        // A name that merely contains the word keeps it.
        assert_eq!(
            stream_name("persistent://t/n/x-partition-y"),
            "t/n/x-partition-y"
        );
    }
}
