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
//!   subset, and a redelivery after a consumer leaves arrives after newer messages; they land
//!   in interleaved mode (see the landing contract), each file sorted by message id with
//!   repeats dropped, and acknowledge exactly the messages committed, entry by entry, since
//!   Pulsar refuses cumulative acknowledgements there.
//! - A failed landing is retried from memory (the pipeline keeps the records); poison goes
//!   to the DLQ like every source.
//! - Backpressure: the consumer stops reading while the buffer is full; Pulsar's flow
//!   control then stops delivery once the receiver queue is full.

use super::{
    Acknowledge, Assignment, Chunk, Context, Epoch, Input, PipelineSetup, Running, Shared,
};
use crate::config::{PulsarConfig, SubscriptionType};
use bronze::cursor::PulsarMessageId;
use bronze::record::{Header, PartitionId, Record, Source};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::proto::MessageIdData;
use pulsar::{ConsumerOptions, SubType, TokioExecutor};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// The pipeline's assignment epoch for Pulsar partitions: the consumer has no rebalance
/// callbacks, so a partition is assigned once, when its first message arrives.
const PULSAR_EPOCH: Epoch = Epoch(1);

/// Acknowledgement requests from the pipeline to the consumer task: the message ids of
/// each commit.
#[derive(Debug, Default)]
pub struct PulsarAcks {
    committed: Mutex<HashMap<PartitionId, Vec<PulsarMessageId>>>,
    notify: tokio::sync::Notify,
}

impl Acknowledge<PulsarMessageId> for PulsarAcks {
    fn committed(&self, partition: &PartitionId, records: &[Record<PulsarMessageId>]) {
        self.committed
            .lock()
            .expect("acks lock")
            .entry(partition.clone())
            .or_default()
            .extend(records.iter().map(|r| r.cursor));
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
                raw_key: None,
            })
            .collect(),
        timestamp_ms: i64::try_from(timestamp).ok(),
        payload: Some(message.payload.data.clone()),
        defect: None,
        schema_id: None,
    }
}

/// Starts the Pulsar pipeline and consumer.
pub async fn start(config: PulsarConfig, ctx: &Context) -> anyhow::Result<Running> {
    let run_id = ctx.run_id.as_str();
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
            let value = crate::secrets::fetch(&ctx.sdk, arn).await?;
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
    let shared = Arc::new(Shared::default());
    let key_shared = config.subscription_type == SubscriptionType::KeyShared;
    if key_shared {
        tracing::warn!(
            subscription = %config.subscription,
            "Key_Shared lands at least once: a message committed by one consumer and redelivered before its acknowledgement can land again (same stream, partition and cursor); use failover where exactly once matters"
        );
    }
    let setup = PipelineSetup {
        interleaved: key_shared,
        ..Default::default()
    };
    let (tx, pipeline) = ctx.pipeline(&shared, acks.clone(), no_lag, setup);
    let consumer = tokio::spawn(consume(
        consumer,
        tx,
        acks,
        shared.clone(),
        ctx.runner.buffer.max_bytes,
        !key_shared,
        ctx.stop.clone(),
        ctx.drain_timeout(),
    ));
    Ok(Running {
        name: "pulsar",
        shared,
        pipeline,
        consumer,
    })
}

/// Delivered, not yet acknowledged messages of one partition, with the broker's topic name.
#[derive(Debug, Default)]
struct Unacked {
    topic: String,
    /// Every message delivered and not acknowledged, by id; a redelivery of one of them
    /// (after a reconnect, or a broker that sends an entry twice) is not handed over again.
    held: BTreeMap<PulsarMessageId, MessageIdData>,
    /// Those of them that are committed.
    committed: BTreeSet<PulsarMessageId>,
    /// The entry (ledger, entry) of the newest message delivered: it may still be arriving.
    receiving: Option<(u64, u64)>,
}

impl Unacked {
    fn deliver(&mut self, cursor: PulsarMessageId, data: MessageIdData) -> bool {
        if self.held.contains_key(&cursor) {
            return false;
        }
        self.receiving = Some((cursor.ledger, cursor.entry));
        self.held.insert(cursor, data);
        true
    }

    /// Books a commit. Cumulative (ordered) subscriptions commit in order, so everything held
    /// up to the last committed id is landed (the engine skips what is at or below the
    /// checkpoint); interleaved ones commit exactly `cursors`.
    fn commit(&mut self, cursors: &[PulsarMessageId], cumulative: bool) {
        if cumulative {
            if let Some(last) = cursors.iter().max() {
                let upto: Vec<_> = self.held.range(..=*last).map(|(c, _)| *c).collect();
                self.committed.extend(upto);
            }
        } else {
            self.committed
                .extend(cursors.iter().filter(|c| self.held.contains_key(c)));
        }
    }

    /// The acknowledgements that may be sent now, removed from what is held. A message is
    /// acknowledged only when it is committed; the crate acknowledges a batched entry as a
    /// whole, so an entry goes only when every message of it is delivered (its batch size,
    /// or a later entry has started arriving) and committed. Cumulative: one acknowledgement
    /// for the longest run of complete entries from the oldest; otherwise one per complete
    /// entry.
    fn ackable(&mut self, cumulative: bool) -> Vec<MessageIdData> {
        let mut entries: BTreeMap<(u64, u64), Vec<PulsarMessageId>> = BTreeMap::new();
        for cursor in self.held.keys() {
            entries
                .entry((cursor.ledger, cursor.entry))
                .or_default()
                .push(*cursor);
        }
        let mut out = Vec::new();
        for (entry, cursors) in entries {
            let data = &self.held[&cursors[0]];
            let delivered = match data.batch_size {
                Some(size) if data.batch_index.is_some() => {
                    cursors.len() >= usize::try_from(size).unwrap_or(usize::MAX)
                        || self.receiving != Some(entry)
                }
                _ => true,
            };
            let complete = delivered && cursors.iter().all(|c| self.committed.contains(c));
            if !complete {
                if cumulative {
                    break;
                }
                continue;
            }
            let data = data.clone();
            for c in &cursors {
                self.held.remove(c);
                self.committed.remove(c);
            }
            if cumulative {
                out.clear();
            }
            out.push(data);
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
async fn consume(
    mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor>,
    tx: mpsc::Sender<Input<PulsarMessageId>>,
    acks: Arc<PulsarAcks>,
    shared: Arc<Shared>,
    max_buffer: u64,
    cumulative: bool,
    stop: Arc<AtomicBool>,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let mut unacked: HashMap<PartitionId, Unacked> = HashMap::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            // Read nothing more; the pipeline drains what it holds.
            break;
        }
        let paused = shared.hold_fetching(max_buffer);
        tokio::select! {
            message = consumer.next(), if !paused => match message {
                Some(Ok(message)) => {
                    let record = to_record(&message);
                    let id = partition_id(&message.topic);
                    let entry = match unacked.entry(id.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            // The first message of a partition assigns it to the pipeline.
                            let assignment = Assignment {
                                partition: id.clone(),
                                epoch: PULSAR_EPOCH,
                                checkpoint: None,
                                start: None,
                            };
                            if tx.send(Input::Assign(vec![assignment])).await.is_err() {
                                anyhow::bail!("the landing pipeline stopped");
                            }
                            e.insert(Unacked {
                                topic: message.topic.clone(),
                                ..Default::default()
                            })
                        }
                    };
                    if !entry.deliver(record.cursor, message.message_id().clone()) {
                        tracing::debug!(partition = %id, cursor = %record.cursor, "redelivery of a message still held; ignored");
                        continue;
                    }
                    let mut chunk = Chunk::new(&shared);
                    chunk.push(id, PULSAR_EPOCH, record);
                    if tx.send(Input::Records(chunk)).await.is_err() {
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
    // One drain bounded by the shutdown timeout: the pipeline lands and commits what it
    // holds by this deadline, acknowledging as it goes; then the input closes.
    let deadline = tokio::time::Instant::now() + shutdown_timeout;
    let _ = tx.send(Input::Stop(deadline)).await;
    drop(tx);
    let leave_by = deadline + Duration::from_secs(2);
    while shared.buffered.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < leave_by {
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

/// Acknowledges the committed messages that may be acknowledged (see [`Unacked::ackable`]).
async fn acknowledge(
    consumer: &mut pulsar::Consumer<Vec<u8>, TokioExecutor>,
    acks: &PulsarAcks,
    unacked: &mut HashMap<PartitionId, Unacked>,
    cumulative: bool,
) {
    let committed: Vec<(PartitionId, Vec<PulsarMessageId>)> =
        acks.committed.lock().expect("acks lock").drain().collect();
    for (id, cursors) in committed {
        let Some(entry) = unacked.get_mut(&id) else {
            continue;
        };
        entry.commit(&cursors, cumulative);
        let ids = entry.ackable(cumulative);
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

    fn held(ids: &[(PulsarMessageId, MessageIdData)]) -> Unacked {
        let mut u = Unacked::default();
        for (c, d) in ids {
            assert!(u.deliver(*c, d.clone()));
        }
        u
    }

    fn entries(acked: &[MessageIdData]) -> Vec<u64> {
        acked.iter().map(|d| d.entry_id).collect()
    }

    #[test]
    fn a_batched_entry_is_acknowledged_only_when_all_of_it_is_committed() {
        let all = [
            id(0, None, None),
            id(1, Some(0), Some(3)),
            id(1, Some(1), Some(3)),
            id(1, Some(2), Some(3)),
            id(2, None, None),
        ];
        for cumulative in [true, false] {
            let mut u = held(&all);
            // Committed up to the middle of entry 1: only entry 0 may be acknowledged.
            u.commit(&[all[0].0, all[1].0, all[2].0], cumulative);
            assert_eq!(entries(&u.ackable(cumulative)), vec![0], "{cumulative}");
            assert_eq!(u.held.len(), 4);
            // The rest of entry 1 is committed: all of it goes, as one acknowledgement.
            u.commit(&[all[3].0], cumulative);
            assert_eq!(entries(&u.ackable(cumulative)), vec![1], "{cumulative}");
            assert_eq!(u.held.len(), 1);
        }
    }

    #[test]
    fn a_batch_still_arriving_is_not_acknowledged() {
        let all = [id(1, Some(0), Some(3)), id(1, Some(1), Some(3))];
        let mut u = held(&all);
        u.commit(&[all[0].0, all[1].0], false);
        // Two of three delivered and committed; the third is not here yet.
        assert!(u.ackable(false).is_empty());
        let third = id(1, Some(2), Some(3));
        assert!(u.deliver(third.0, third.1.clone()));
        assert!(u.ackable(false).is_empty(), "the third is not committed");
        u.commit(&[third.0], false);
        assert_eq!(entries(&u.ackable(false)), vec![1]);
    }

    #[test]
    fn key_shared_acknowledges_only_what_is_committed() {
        // A redelivery after a consumer left arrives after newer messages: 500, 501, then 120.
        let all = [
            id(500, None, None),
            id(501, None, None),
            id(120, None, None),
        ];
        let mut u = held(&all);
        assert!(
            !u.deliver(all[0].0, all[0].1.clone()),
            "a held message again"
        );
        // A landing of 500 and 501 commits: 120 (delivered, not committed) must stay unacked.
        // (Acknowledging "everything up to 501" acknowledged 120 too: lost on a crash.)
        u.commit(&[all[0].0, all[1].0], false);
        assert_eq!(entries(&u.ackable(false)), vec![500, 501]);
        assert_eq!(u.held.keys().copied().collect::<Vec<_>>(), vec![all[2].0]);
        u.commit(&[all[2].0], false);
        assert_eq!(entries(&u.ackable(false)), vec![120]);
        assert!(u.held.is_empty() && u.committed.is_empty());
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
