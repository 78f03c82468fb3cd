//! Kafka through an rdkafka consumer group, with the state registry as the source of truth.
//!
//! The consumer lives on its own thread (a `BaseConsumer` polled in a loop), so that the
//! rebalance callback may block on the state registry and on the pipeline:
//!
//! - **assigned**: read each partition's checkpoint and start at it (its record is checked
//!   against the one landed and skipped; or at the configured start for a partition never
//!   landed). Kafka's committed offsets are not
//!   trusted for this; they are only written afterwards, as an advisory copy for lag tools.
//! - **revoked**: hand the records polled but not yet handed over to the pipeline, then the
//!   partitions, which it lands and commits, and only then give them up.
//! - every assignment of a partition gets a new [`Epoch`]; each record is stamped with the
//!   epoch it was read under, so the pipeline drops records of an ended assignment instead
//!   of landing them after a gap, and a landing that outlives its assignment touches
//!   nothing of the next one.
//! - a **zombie** that lost its partitions without a callback (session timeout) still holds
//!   records; its commit is conditional on the checkpoint it read, so it fails with
//!   "checkpoint moved" and overwrites nothing.
//!
//! Backpressure: when the pipeline's buffered bytes reach the cap, every assigned partition
//! is paused; they resume below half the cap. The consumer keeps polling while paused, so it
//! stays in the group.

use super::kafka_headers::RawHeader;
use super::{
    Acknowledge, Assignment, Chunk, Context, Epoch, Input, PipelineSetup, Running, Shared,
};
use crate::config::{KafkaConfig, SaslMechanism, StartFrom};
use crate::secrets::SaslCredentials;
use bronze::config::ConnectorConfig;
use bronze::cursor::{Cursor, KafkaOffset};
use bronze::ports::StateStore;
use bronze::record::{Header, PartitionId, Record, Source};
use futures::StreamExt;
use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Why the Kafka consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The client could not be created (bad property, bad TLS file).
    #[error("cannot create the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    /// Subscribing failed.
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The topics and patterns.
        topics: Vec<String>,
        /// The client error.
        source: KafkaError,
    },
    /// The broker refused our credentials or permissions. Retrying cannot help.
    #[error("Kafka authentication or authorization failed: {0}")]
    Auth(String),
    /// Something else the runner cannot go on after (a stored checkpoint it cannot read,
    /// a topic the connector file refuses).
    #[error("{0}")]
    Fatal(String),
}

/// A partition of a topic, as librdkafka names it.
type TopicPartition = (String, i32);

fn partition_id(topic: &str, partition: i32) -> PartitionId {
    PartitionId::new(Source::Kafka, topic, partition.to_string())
}

/// Lag of a Kafka partition: the high watermark is the next offset to be written.
pub fn lag(last_committed: Option<&KafkaOffset>, high_watermark: u64) -> u64 {
    high_watermark.saturating_sub(last_committed.map_or(0, |o| o.0 + 1))
}

/// Offsets committed by the pipeline, waiting to be copied to Kafka (advisory, for tools
/// that read consumer-group lag).
#[derive(Debug, Default)]
pub struct KafkaAcks {
    pending: Mutex<HashMap<TopicPartition, i64>>,
}

impl Acknowledge<KafkaOffset> for KafkaAcks {
    fn committed(&self, partition: &PartitionId, records: &[Record<KafkaOffset>]) {
        let (Ok(p), Some(last)) = (partition.partition.parse::<i32>(), records.last()) else {
            return;
        };
        let last = &last.cursor;
        let next = i64::try_from(last.0).unwrap_or(i64::MAX - 1) + 1;
        let mut pending = self.pending.lock().expect("acks lock");
        let slot = pending.entry((partition.stream.clone(), p)).or_insert(next);
        *slot = (*slot).max(next);
    }
}

/// How a token for MSK IAM is made.
#[derive(Debug, Clone)]
struct IamSigner {
    region: aws_config::Region,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
}

/// The consumer's context: callbacks run on the consumer thread.
struct Ctx {
    runtime: tokio::runtime::Handle,
    state: Arc<dyn StateStore>,
    connector: Arc<ConnectorConfig>,
    tx: mpsc::Sender<Input<KafkaOffset>>,
    start_from: StartFrom,
    paused: AtomicBool,
    assignment: Mutex<BTreeSet<TopicPartition>>,
    fatal: Mutex<Option<KafkaSourceError>>,
    high_watermarks: Mutex<HashMap<TopicPartition, i64>>,
    iam: Option<IamSigner>,
    acks: Arc<KafkaAcks>,
    shared: Arc<Shared>,
    /// The epoch of each assigned partition's current assignment.
    epochs: Mutex<HashMap<TopicPartition, Epoch>>,
    next_epoch: AtomicU64,
    /// Records polled and not yet handed to the pipeline. It lives here, not in the poll
    /// loop, so that the revoke callback (which runs inside `poll`) hands them over first.
    chunk: Mutex<Chunk<KafkaOffset>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// Checkpoint reads in flight at once when partitions are assigned.
const CHECKPOINT_READS: usize = 16;

/// A state-table call made while partitions are assigned, retried while it fails
/// transiently (8 attempts with backoff), then fatal.
async fn retried<T, F, Fut>(id: &PartitionId, what: &str, call: F) -> Result<T, KafkaSourceError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, bronze::ports::PortError>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < 8 => {
                attempt += 1;
                tracing::warn!(partition = %id, error = %e, attempt, "{what} failed; retrying");
                tokio::time::sleep(crate::pipeline::backoff(attempt, false)).await;
            }
            Err(e) => {
                return Err(KafkaSourceError::Fatal(format!("{id}: {what} failed: {e}")));
            }
        }
    }
}

impl Ctx {
    fn fail(&self, error: KafkaSourceError) {
        tracing::error!(error = %error, "Kafka consumer cannot go on");
        let mut fatal = self.fatal.lock().expect("fatal lock");
        if fatal.is_none() {
            *fatal = Some(error);
        }
    }

    /// Where a newly assigned partition starts: the offset to seek to, the checkpoint, and
    /// the first offset the partition should deliver (for the pipeline's checks). A
    /// partition with a checkpoint starts *at* it: its record is read once more so that the
    /// engine can check it is the one landed there (a recreated topic whose new log reaches
    /// the checkpoint is caught there, not skipped as landed), and the engine skips it. A
    /// partition without one starts at its beginning (`start_from: earliest`) or at the start
    /// position recorded for it (`latest`: the end of its log when it was first assigned,
    /// recorded in the state table by the first runner that read it, so that a rebalance or a
    /// restart before its first commit skips nothing).
    async fn start_offset(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
        partition: i32,
    ) -> Result<(Offset, Option<KafkaOffset>, Option<KafkaOffset>), KafkaSourceError> {
        let id = partition_id(topic, partition);
        if self.connector.stream(Source::Kafka, topic).is_none() {
            return Err(KafkaSourceError::Fatal(format!(
                "{id}: topic is not listed in the connector file and streams.allow_unlisted is false"
            )));
        }
        let checkpoint = retried(&id, "checkpoint read", || self.state.checkpoint(&id)).await?;
        if let Some(c) = checkpoint {
            let last = KafkaOffset::parse(&c.cursor).map_err(|e| {
                KafkaSourceError::Fatal(format!("{id}: stored checkpoint {:?}: {e}", c.cursor))
            })?;
            tracing::info!(partition = %id, checkpoint = %last, "assigned; resuming at the checkpoint");
            let offset = Offset::Offset(i64::try_from(last.0).unwrap_or(i64::MAX));
            return Ok((offset, Some(last), Some(last)));
        }
        match self.start_from {
            StartFrom::Earliest => {
                tracing::info!(partition = %id, "assigned; no checkpoint yet: reading from the beginning");
                Ok((Offset::Beginning, None, None))
            }
            StartFrom::Latest => {
                let recorded =
                    retried(&id, "start position read", || self.state.start(&id)).await?;
                let stored = match recorded {
                    Some(stored) => stored,
                    None => {
                        // The end of the log now (librdkafka answers with the last stable
                        // offset under read_committed, where Offset::End would also start).
                        let end = self.log_end(consumer, &id, topic, partition).await?;
                        let proposed = KafkaOffset(end).sortable();
                        retried(&id, "start position claim", || {
                            self.state.claim_start(&id, &proposed)
                        })
                        .await?
                    }
                };
                let start = KafkaOffset::parse(&stored).map_err(|e| {
                    KafkaSourceError::Fatal(format!("{id}: stored start position {stored:?}: {e}"))
                })?;
                tracing::info!(partition = %id, start = %start, "assigned; no checkpoint yet: start position (start_from: latest)");
                let offset = Offset::Offset(i64::try_from(start.0).unwrap_or(i64::MAX));
                Ok((offset, None, Some(start)))
            }
        }
    }

    /// The offset after the partition's last record (a blocking broker call: it runs inside
    /// the rebalance callback, like the checkpoint reads).
    async fn log_end(
        &self,
        consumer: &BaseConsumer<Ctx>,
        id: &PartitionId,
        topic: &str,
        partition: i32,
    ) -> Result<u64, KafkaSourceError> {
        let mut attempt = 0u32;
        loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                Ok((_, high)) => return Ok(high.max(0) as u64),
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(partition = %id, error = %e, attempt, "reading the end of the log failed; retrying");
                    tokio::time::sleep(crate::pipeline::backoff(attempt, false)).await;
                }
                Err(e) => {
                    return Err(KafkaSourceError::Fatal(format!(
                        "{id}: cannot read the end of the log for start_from: latest: {e}"
                    )));
                }
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Ctx>, tpl: &mut TopicPartitionList) {
        let elements: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // One consistent read per partition, several at a time: a large assignment must not
        // wait for hundreds of round trips in a row inside the rebalance.
        let offsets: Vec<_> = self.runtime.block_on(
            futures::stream::iter(
                elements
                    .iter()
                    .map(|(t, p)| self.start_offset(consumer, t, *p)),
            )
            .buffered(CHECKPOINT_READS)
            .collect(),
        );
        let mut assignments = Vec::new();
        let mut epochs = Vec::new();
        for ((topic, partition), offset) in elements.iter().zip(offsets) {
            match offset {
                Ok((offset, checkpoint, start)) => {
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
                        self.fail(KafkaSourceError::Fatal(format!(
                            "{topic}/{partition}: cannot set the start offset: {e}"
                        )));
                        continue;
                    }
                    let epoch = Epoch(self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1);
                    epochs.push(((topic.clone(), *partition), epoch));
                    assignments.push(Assignment {
                        partition: partition_id(topic, *partition),
                        epoch,
                        start,
                        checkpoint,
                    });
                }
                Err(e) => self.fail(e),
            }
        }
        // The pipeline opens the buffers before any record of these partitions is polled.
        if self.tx.blocking_send(Input::Assign(assignments)).is_err() {
            self.fail(KafkaSourceError::Fatal(
                "the landing pipeline stopped".into(),
            ));
        }
        self.epochs.lock().expect("epochs lock").extend(epochs);
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            self.fail(KafkaSourceError::Fatal(format!("assign failed: {e}")));
            return;
        }
        if self.paused.load(Ordering::Relaxed) || self.fatal.lock().expect("fatal lock").is_some() {
            let _ = consumer.pause(tpl);
        }
        self.assignment
            .lock()
            .expect("assignment lock")
            .extend(elements);
        tracing::info!(partitions = tpl.count(), "partitions assigned");
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let elements: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let ids: Vec<PartitionId> = elements.iter().map(|(t, p)| partition_id(t, *p)).collect();
        tracing::info!(
            partitions = ids.len(),
            "partitions revoked; landing what is buffered for them"
        );
        // Records polled but not yet handed over go first, under the epoch they were read
        // in, so the revocation lands them; then the partitions' epochs end, and anything
        // read under them later is dropped by the pipeline.
        self.flush();
        {
            let mut epochs = self.epochs.lock().expect("epochs lock");
            for e in &elements {
                epochs.remove(e);
            }
        }
        let (ack, done) = oneshot::channel();
        if self.tx.blocking_send(Input::Revoke(ids, ack)).is_ok() {
            let _ = done.blocking_recv();
        }
        self.commit_advisory(consumer, Some(&elements));
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "unassign failed");
        }
        let mut assignment = self.assignment.lock().expect("assignment lock");
        for e in &elements {
            assignment.remove(e);
        }
        self.high_watermarks
            .lock()
            .expect("watermarks lock")
            .retain(|tp, _| !elements.contains(tp));
    }

    /// Hands the records polled so far to the pipeline. False when the pipeline stopped.
    fn flush(&self) -> bool {
        let chunk = {
            let mut chunk = self.chunk.lock().expect("chunk lock");
            if chunk.is_empty() {
                return true;
            }
            std::mem::replace(&mut *chunk, Chunk::new(&self.shared))
        };
        self.tx.blocking_send(Input::Records(chunk)).is_ok()
    }

    /// Copies committed offsets to Kafka (advisory only; the state registry decides).
    fn commit_advisory(&self, consumer: &BaseConsumer<Ctx>, only: Option<&[TopicPartition]>) {
        let pending: Vec<(TopicPartition, i64)> = {
            let mut pending = self.acks.pending.lock().expect("acks lock");
            match only {
                None => pending.drain().collect(),
                Some(only) => only
                    .iter()
                    .filter_map(|tp| pending.remove(tp).map(|o| (tp.clone(), o)))
                    .collect(),
            }
        };
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &pending {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "advisory offset commit failed");
        }
    }
}

impl ClientContext for Ctx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let mut marks = self.high_watermarks.lock().expect("watermarks lock");
        let assignment = self.assignment.lock().expect("assignment lock");
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                let tp = (topic.clone(), *partition);
                if *partition >= 0 && p.hi_offset >= 0 && assignment.contains(&tp) {
                    marks.insert(tp, p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match code {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => self.fail(KafkaSourceError::Auth(format!("{error}: {reason}"))),
            Some(RDKafkaErrorCode::Fatal) => self.fail(KafkaSourceError::Fatal(format!(
                "librdkafka fatal error: {reason}"
            ))),
            _ => tracing::warn!(error = %error, "librdkafka: {reason}"),
        }
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let signer = self
            .iam
            .clone()
            .ok_or("OAUTHBEARER is only used with mechanism AWS_MSK_IAM")?;
        let runtime = self.runtime.clone();
        // The callback runs on the consumer thread, outside the runtime: block on it there.
        let (token, expiry_ms) = std::thread::spawn(move || {
            runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
                        signer.region,
                        signer.credentials,
                    ),
                )
                .await
            })
        })
        .join()
        .map_err(|_| "MSK IAM token thread panicked")???;
        Ok(OAuthToken {
            token,
            principal_name: String::new(),
            lifetime_ms: expiry_ms,
        })
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error; giving up the assignment");
                let all: TopicPartitionList = tpl.clone();
                self.on_revoke(consumer, &all);
            }
        }
    }
}

/// The librdkafka configuration for a runner (without credentials, which are added by
/// [`with_credentials`]). Public for `discover`, `status` and `verify`, which connect the same way.
pub fn client_config(kafka: &KafkaConfig, buffer_max_bytes: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Only a position outside the log is reset: a partition without a checkpoint is
        // positioned explicitly (`start_from`), one with a checkpoint at it. Resetting to the
        // oldest record keeps what retention left (a position that retention passed resumes at
        // the log start, reported as a gap; one beyond a recreated log's end goes back, which
        // the pipeline refuses as a restart). "latest" would skip every record still there.
        .set("auto.offset.reset", "earliest")
        .set(
            "topic.metadata.refresh.interval.ms",
            kafka.metadata_refresh_ms.to_string(),
        )
        .set("statistics.interval.ms", "5000")
        // librdkafka's prefetch queue counts against memory too: keep it to a quarter of
        // the pipeline's buffer (at most librdkafka's 64 MiB default).
        .set(
            "queued.max.messages.kbytes",
            (buffer_max_bytes / 4 / 1024)
                .clamp(1024, 65_536)
                .to_string(),
        )
        .set("security.protocol", kafka.security.protocol.as_librdkafka())
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(m) = kafka.security.mechanism {
        config.set("sasl.mechanism", m.as_librdkafka());
    }
    if let Some(ca) = &kafka.security.ca_location {
        config.set("ssl.ca.location", ca);
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    config
}

/// Adds PLAIN/SCRAM credentials to a client configuration.
pub fn with_credentials(config: &mut ClientConfig, credentials: Option<&SaslCredentials>) {
    if let Some(c) = credentials {
        config
            .set("sasl.username", &c.username)
            .set("sasl.password", c.password.expose());
    }
}

/// Everything the consumer thread needs.
#[derive(Debug)]
pub struct KafkaSource {
    /// Topics and patterns.
    pub config: KafkaConfig,
    /// Buffer cap, for pausing.
    pub max_buffer: u64,
    /// PLAIN/SCRAM credentials, if any.
    pub credentials: Option<SaslCredentials>,
    /// The SDK config (for MSK IAM tokens).
    pub sdk: aws_config::SdkConfig,
    /// The state registry.
    pub state: Arc<dyn StateStore>,
    /// The connector file.
    pub connector: Arc<ConnectorConfig>,
    /// Pipeline state.
    pub shared: Arc<Shared>,
    /// Committed offsets to copy to Kafka.
    pub acks: Arc<KafkaAcks>,
    /// How long a shutdown may take: one drain, bounded by this.
    pub shutdown_timeout: Duration,
}

/// Starts the Kafka pipeline and the consumer thread (a blocking task: librdkafka's poll
/// loop and rebalance callbacks run there).
pub fn start(config: KafkaConfig, ctx: &Context) -> Running {
    let shared = Arc::new(Shared::default());
    let acks = Arc::new(KafkaAcks::default());
    // librdkafka never delivers an offset below the one it fetches from, so an offset that
    // goes back means the log was recreated or truncated (`auto.offset.reset` moved the
    // position): the partition stops instead of skipping the new records as landed.
    let setup = PipelineSetup {
        rewinds_are_restarts: true,
        ..Default::default()
    };
    let (tx, pipeline) = ctx.pipeline(&shared, acks.clone(), lag, setup);
    tracing::info!(kafka = %describe(&config), run_id = %ctx.run_id, "starting the Kafka consumer");
    let source = KafkaSource {
        config,
        max_buffer: ctx.runner.buffer.max_bytes,
        credentials: ctx.credentials.clone(),
        sdk: ctx.sdk.clone(),
        state: ctx.state.clone(),
        connector: ctx.connector.clone(),
        shared: shared.clone(),
        acks,
        shutdown_timeout: ctx.drain_timeout(),
    };
    let handle = tokio::runtime::Handle::current();
    let stop = ctx.stop.clone();
    let consumer = tokio::task::spawn_blocking(move || {
        source.run(handle, tx, stop).map_err(anyhow::Error::from)
    });
    Running {
        name: "kafka",
        shared,
        pipeline,
        consumer,
    }
}

/// Records handed to the pipeline per message.
const CHUNK: usize = 500;

impl KafkaSource {
    /// Runs the consumer on the calling (non-runtime) thread until `stop` is set, then leaves
    /// the group (which revokes, landing what is buffered) and returns.
    pub fn run(
        self,
        runtime: tokio::runtime::Handle,
        tx: mpsc::Sender<Input<KafkaOffset>>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), KafkaSourceError> {
        let mut config = client_config(&self.config, self.max_buffer);
        with_credentials(&mut config, self.credentials.as_ref());
        let iam =
            (self.config.security.mechanism == Some(SaslMechanism::AwsMskIam)).then(|| IamSigner {
                region: self
                    .config
                    .security
                    .region
                    .clone()
                    .map(aws_config::Region::new)
                    .or_else(|| self.sdk.region().cloned())
                    .unwrap_or_else(|| aws_config::Region::new("us-east-1")),
                credentials: self
                    .sdk
                    .credentials_provider()
                    .expect("the SDK config has a credentials provider"),
            });
        let ctx = Ctx {
            runtime,
            state: self.state.clone(),
            connector: self.connector.clone(),
            tx: tx.clone(),
            start_from: self.config.start_from,
            paused: AtomicBool::new(false),
            assignment: Mutex::new(BTreeSet::new()),
            fatal: Mutex::new(None),
            high_watermarks: Mutex::new(HashMap::new()),
            iam,
            acks: self.acks.clone(),
            shared: self.shared.clone(),
            epochs: Mutex::new(HashMap::new()),
            next_epoch: AtomicU64::new(0),
            chunk: Mutex::new(Chunk::new(&self.shared)),
        };
        let consumer: BaseConsumer<Ctx> = config
            .create_with_context(ctx)
            .map_err(KafkaSourceError::Create)?;
        let mut topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        topics.extend(self.config.patterns.iter().map(String::as_str));
        consumer
            .subscribe(&topics)
            .map_err(|source| KafkaSourceError::Subscribe {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                source,
            })?;
        tracing::info!(topics = ?topics, group = %self.config.group_id, "subscribed");
        let result = self.poll_loop(&consumer, &tx, &stop);
        // One drain, bounded by the shutdown timeout: the pipeline ends every drain from now
        // on (the revocation below and its final one) by this deadline.
        let deadline = Instant::now() + self.shutdown_timeout;
        let _ = tx.blocking_send(Input::Stop(tokio::time::Instant::from_std(deadline)));
        // Leave the group: the revocation lands and commits what is buffered.
        consumer.unsubscribe();
        // A moment past the deadline, for the group leave itself once the drain has ended.
        let leave_by = deadline + Duration::from_secs(2);
        while !consumer
            .context()
            .assignment
            .lock()
            .expect("assignment lock")
            .is_empty()
            && Instant::now() < leave_by
        {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        consumer.context().commit_advisory(&consumer, None);
        drop(consumer);
        result
    }

    fn poll_loop(
        &self,
        consumer: &BaseConsumer<Ctx>,
        tx: &mpsc::Sender<Input<KafkaOffset>>,
        stop: &AtomicBool,
    ) -> Result<(), KafkaSourceError> {
        let ctx = consumer.context();
        let stopped = || KafkaSourceError::Fatal("the landing pipeline stopped".into());
        let mut last_housekeeping = Instant::now();
        loop {
            if let Some(e) = ctx.fatal.lock().expect("fatal lock").take() {
                return Err(e);
            }
            if stop.load(Ordering::Relaxed) {
                ctx.flush();
                return Ok(());
            }
            self.backpressure(consumer);
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let tp = (message.topic().to_owned(), message.partition());
                    // The epoch of the assignment this record was read under. A partition
                    // with none is not (or no longer) assigned: the record is not ours.
                    let epoch = ctx.epochs.lock().expect("epochs lock").get(&tp).copied();
                    let Some(epoch) = epoch else {
                        tracing::debug!(topic = %tp.0, partition = tp.1, offset = message.offset(), "record of a partition not assigned; dropped");
                        continue;
                    };
                    let record = to_record(&message, super::kafka_headers::read(&message));
                    let full = {
                        let mut chunk = ctx.chunk.lock().expect("chunk lock");
                        chunk.push(partition_id(&tp.0, tp.1), epoch, record);
                        chunk.len() >= CHUNK
                    };
                    if full && !ctx.flush() {
                        return Err(stopped());
                    }
                }
                Some(Err(e)) => match e.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed,
                    ) => return Err(KafkaSourceError::Auth(e.to_string())),
                    _ => tracing::warn!(error = %e, "consumer error; continuing"),
                },
                None => {
                    if !ctx.flush() {
                        return Err(stopped());
                    }
                }
            }
            if last_housekeeping.elapsed() >= Duration::from_secs(2) {
                last_housekeeping = Instant::now();
                ctx.commit_advisory(consumer, None);
                let marks: Vec<(PartitionId, u64)> = ctx
                    .high_watermarks
                    .lock()
                    .expect("watermarks lock")
                    .iter()
                    .map(|((t, p), hw)| (partition_id(t, *p), u64::try_from(*hw).unwrap_or(0)))
                    .collect();
                if !marks.is_empty() {
                    let _ = tx.blocking_send(Input::HighWatermarks(marks));
                }
            }
        }
    }

    /// Pauses every assigned partition at the buffer cap; resumes below half of it.
    fn backpressure(&self, consumer: &BaseConsumer<Ctx>) {
        let ctx = consumer.context();
        let buffered = self.shared.buffered.load(Ordering::Relaxed);
        let paused = ctx.paused.load(Ordering::Relaxed);
        let flip = if !paused && buffered >= self.max_buffer {
            Some(true)
        } else if paused && buffered < self.max_buffer / 2 {
            Some(false)
        } else {
            None
        };
        let Some(pause) = flip else { return };
        let mut tpl = TopicPartitionList::new();
        for (t, p) in ctx.assignment.lock().expect("assignment lock").iter() {
            tpl.add_partition(t, *p);
        }
        let result = if pause {
            self.shared.pauses.fetch_add(1, Ordering::Relaxed);
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                ctx.paused.store(pause, Ordering::Relaxed);
                self.shared.set_paused(pause);
                tracing::info!(
                    buffered,
                    cap = self.max_buffer,
                    paused = pause,
                    "backpressure"
                );
            }
            Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
        }
    }
}

/// Converts a Kafka message and its headers (read with [`super::kafka_headers::read`]) into a
/// source-neutral record, bytes exactly as delivered.
fn to_record<M: Message>(message: &M, headers: Vec<RawHeader>) -> Record<KafkaOffset> {
    let (headers, defect) = to_headers(headers);
    Record {
        cursor: KafkaOffset(u64::try_from(message.offset()).unwrap_or(0)),
        key: message.key().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
        payload: message.payload().map(<[u8]>::to_vec),
        defect,
        schema_id: None,
    }
}

/// A record's headers, and why it is poison if a header name is not UTF-8. Kafka header
/// names are strings, so such a record cannot land as written; it is dead-lettered with
/// every header, the name in replacement characters and its exact bytes beside it
/// ([`Header::raw_key`], the letter's `header_keys_base64`).
fn to_headers(raw: Vec<RawHeader>) -> (Vec<Header>, Option<String>) {
    let mut unreadable = Vec::new();
    let headers = raw
        .into_iter()
        .enumerate()
        .map(|(i, h)| match String::from_utf8(h.key) {
            Ok(key) => Header {
                key,
                value: h.value,
                raw_key: None,
            },
            Err(e) => {
                unreadable.push(i);
                let bytes = e.into_bytes();
                Header {
                    key: String::from_utf8_lossy(&bytes).into_owned(),
                    value: h.value,
                    raw_key: Some(bytes),
                }
            }
        })
        .collect();
    let defect = (!unreadable.is_empty()).then(|| {
        format!(
            "Kafka header(s) at index {unreadable:?} have a name that is not UTF-8 (Kafka header names are strings); the dead letter keeps the name's bytes in header_keys_base64"
        )
    });
    (headers, defect)
}

/// A secret-free description of a client configuration, for logs.
pub fn describe(kafka: &KafkaConfig) -> String {
    format!(
        "{} group {} ({}{})",
        kafka.bootstrap_servers,
        kafka.group_id,
        kafka.security.protocol.as_librdkafka(),
        kafka
            .security
            .mechanism
            .map(|m| format!(", {}", m.as_librdkafka()))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;

    #[test]
    fn lag_is_high_watermark_minus_next_offset() {
        assert_eq!(lag(None, 10), 10);
        assert_eq!(lag(Some(&KafkaOffset(9)), 10), 0);
        assert_eq!(lag(Some(&KafkaOffset(4)), 10), 5);
        assert_eq!(lag(Some(&KafkaOffset(20)), 10), 0);
    }

    fn at(offset: u64) -> Record<KafkaOffset> {
        Record {
            cursor: KafkaOffset(offset),
            key: None,
            headers: Vec::new(),
            timestamp_ms: None,
            payload: None,
            defect: None,
            schema_id: None,
        }
    }

    #[test]
    fn acks_keep_the_highest_next_offset() {
        let acks = KafkaAcks::default();
        let id = partition_id("t", 3);
        acks.committed(&id, &[at(5), at(9)]);
        acks.committed(&id, &[at(4)]);
        assert_eq!(acks.pending.lock().unwrap()[&("t".to_owned(), 3)], 10);
    }

    #[test]
    fn a_position_outside_the_log_resets_to_its_start_whatever_start_from_says() {
        for start in ["earliest", "latest"] {
            let k: KafkaConfig = serde_yaml::from_str(&format!(
                "{{bootstrap_servers: b:9092, group_id: g, topics: [t], start_from: {start}}}"
            ))
            .unwrap();
            let config = client_config(&k, 64 << 20);
            assert_eq!(config.get("auto.offset.reset"), Some("earliest"), "{start}");
        }
    }

    #[test]
    fn credentials_never_reach_the_description() {
        let k: KafkaConfig = serde_yaml::from_str(
            "{bootstrap_servers: b:9092, group_id: g, topics: [t], security: {protocol: sasl_ssl, mechanism: SCRAM-SHA-512}}",
        )
        .unwrap();
        let mut config = client_config(&k, 64 << 20);
        let creds = SaslCredentials {
            username: "u".into(),
            password: Secret::new("hunter2".into()),
        };
        with_credentials(&mut config, Some(&creds));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert!(!describe(&k).contains("hunter2"));
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    fn raw(key: &[u8], value: Option<&[u8]>) -> RawHeader {
        RawHeader {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// Defect 10: a header name that is not UTF-8 panicked inside rdkafka and crashed the
    /// runner; now the record is poison, with every header and the name's exact bytes.
    #[test]
    fn a_header_name_that_is_not_utf8_makes_the_record_poison_with_its_bytes() {
        let (headers, defect) = to_headers(vec![
            raw(b"trace", Some(b"abc")),
            raw(b"\xff\xfekey", Some(b"v")),
            raw(b"empty", None),
        ]);
        assert_eq!(
            headers,
            vec![
                Header {
                    key: "trace".into(),
                    value: Some(b"abc".to_vec()),
                    raw_key: None,
                },
                Header {
                    key: "\u{fffd}\u{fffd}key".into(),
                    value: Some(b"v".to_vec()),
                    raw_key: Some(b"\xff\xfekey".to_vec()),
                },
                Header {
                    key: "empty".into(),
                    value: None,
                    raw_key: None,
                },
            ]
        );
        let reason = defect.expect("poison");
        assert!(reason.contains("index [1]"), "{reason}");
        assert!(reason.contains("not UTF-8"), "{reason}");
        let (fine, defect) = to_headers(vec![raw(b"a", Some(&[0xff]))]);
        assert_eq!(defect, None);
        assert_eq!(
            fine,
            vec![Header {
                key: "a".into(),
                value: Some(vec![0xff]),
                raw_key: None,
            }]
        );
    }

    #[test]
    fn a_message_becomes_a_record_with_its_bytes() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let message = OwnedMessage::new(
            Some(b"{\"a\":1}".to_vec()),
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::CreateTime(1_764_201_600_001),
            0,
            42,
            None,
        );
        let record = to_record(&message, vec![raw(b"h", Some(&[0xff, 0]))]);
        assert_eq!(record.cursor, KafkaOffset(42));
        assert_eq!(record.defect, None);
        assert_eq!(record.headers[0].value.as_deref(), Some(&[0xffu8, 0][..]));
        assert_eq!(record.timestamp_ms, Some(1_764_201_600_001));
    }
}
