//! The runner's sources behind one shape.
//!
//! A source turns its platform's protocol into the pipeline's [`Input`]s and nothing else:
//!
//! - **partitions gained and lost, with an epoch**: [`Input::Assign`] with an [`Assignment`]
//!   (partition, a new [`Epoch`], the checkpoint read at assignment, the first cursor it will
//!   deliver) and [`Input::Revoke`] (land and commit what is buffered, then answer);
//! - **records**: [`Input::Records`], a [`Chunk`] of records in cursor order per partition,
//!   each stamped with the epoch it was read under and holding its memory footprint;
//! - **acknowledge after commit**: the pipeline calls the source's [`Acknowledge`] with the
//!   records of each commit (Kafka copies the offset to the group, Pulsar acknowledges the
//!   messages, Kinesis needs nothing: the checkpoint is the lease's position);
//! - **lag**: [`Input::HighWatermarks`] with the newest cursor each partition has, and a
//!   [`LagFn`] that turns it into lag (records for Kafka, milliseconds for Kinesis).
//!
//! Each source module has one entry point, `start(config, &Context) -> Running`, and
//! [`start`] starts every source the `runner:` section configures, so `app` and `pipeline`
//! hold nothing source-specific and no source reaches back into `app`.
//!
//! - [`kafka`]: the consumer thread: rebalance callbacks against the state registry,
//!   pause/resume backpressure, MSK IAM tokens, advisory offset commits.
//! - [`kafka_headers`]: message headers read through librdkafka's C API with every byte
//!   kept (the workspace's one audited `unsafe` module).
//! - [`pulsar`]: the Pulsar consumer: message ids as cursors, acknowledgement after commit.
//! - [`kinesis`]: Kinesis GetRecords readers per leased shard, discovery, resharding.
//! - [`leases`]: shard leases in the state table and the balancing decision.

pub mod kafka;
pub mod kafka_headers;
pub mod kinesis;
pub mod leases;
pub mod pulsar;

pub use crate::pipeline::{Acknowledge, Assignment, Chunk, Epoch, Input, LagFn, Shared};

use crate::config::{ConcurrencyConfig, RunnerConfig};
use crate::pipeline::Pipeline;
use crate::secrets::SaslCredentials;
use bronze::config::ConnectorConfig;
use bronze::cursor::Cursor;
use bronze::engine::Lander;
use bronze::ports::StateStore;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What every source is started with.
#[derive(Debug, Clone)]
pub struct Context {
    /// AWS SDK configuration (Kinesis, Secrets Manager, MSK IAM tokens).
    pub sdk: aws_config::SdkConfig,
    /// The connector file (stream settings).
    pub connector: Arc<ConnectorConfig>,
    /// Its `runner:` section.
    pub runner: RunnerConfig,
    /// Kafka PLAIN/SCRAM credentials, when configured.
    pub credentials: Option<SaslCredentials>,
    /// The landing engine.
    pub lander: Lander,
    /// The state registry (checkpoints, leases).
    pub state: Arc<dyn StateStore>,
    /// The state table's name (Kinesis leases live there).
    pub state_table: String,
    /// This process's run id (logs, commits, lease owner).
    pub run_id: String,
    /// Set when the runner stops: sources stop reading and drain.
    pub stop: Arc<AtomicBool>,
}

impl Context {
    /// How long a drain (revocation or shutdown) may take.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.runner.shutdown_timeout_ms)
    }

    /// Spawns a landing pipeline for a source, with its own [`Shared`] state, acknowledging
    /// through `acks` and computing lag with `lag`. Returns the channel the source feeds and
    /// the pipeline's task (it answers the partitions abandoned with uncommitted records).
    pub fn pipeline<C: Cursor, A: Acknowledge<C>>(
        &self,
        shared: &Arc<Shared>,
        acks: Arc<A>,
        lag: LagFn<C>,
        setup: PipelineSetup<'_>,
    ) -> (mpsc::Sender<Input<C>>, JoinHandle<usize>) {
        let runner = &self.runner;
        let mut pipeline = Pipeline::new(
            self.lander.clone(),
            self.connector.clone(),
            runner.files.clone(),
            runner.buffer.max_bytes,
            setup.concurrency.unwrap_or(&runner.concurrency),
            shared.clone(),
            acks,
            &self.run_id,
            lag,
        );
        if setup.interleaved {
            pipeline = pipeline.interleaved();
        }
        if setup.rewinds_are_restarts {
            pipeline = pipeline.rewinds_are_restarts();
        }
        let (tx, rx) = mpsc::channel(setup.channel);
        (tx, tokio::spawn(pipeline.run(rx, self.drain_timeout())))
    }
}

/// How a source's pipeline differs from the default.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSetup<'a> {
    /// Concurrency settings other than `runner.concurrency` (Kinesis counts lag in ms).
    pub concurrency: Option<&'a ConcurrencyConfig>,
    /// Land every stream in interleaved mode (Pulsar Key_Shared).
    pub interleaved: bool,
    /// Cursors only move forward within an assignment, so going back is a restart (Kafka;
    /// [`crate::pipeline::Pipeline::rewinds_are_restarts`]).
    pub rewinds_are_restarts: bool,
    /// Inputs the channel holds before the source waits.
    pub channel: usize,
}

impl Default for PipelineSetup<'_> {
    fn default() -> Self {
        Self {
            concurrency: None,
            interleaved: false,
            rewinds_are_restarts: false,
            channel: 16,
        }
    }
}

/// A started source.
#[derive(Debug)]
pub struct Running {
    /// Which source, for logs.
    pub name: &'static str,
    /// Its pipeline's state (metrics, `/healthz`).
    pub shared: Arc<Shared>,
    /// The pipeline: ends once the source's channel closes and everything is drained;
    /// answers the partitions abandoned with uncommitted records.
    pub pipeline: JoinHandle<usize>,
    /// The source itself: ends with an error, or once `stop` is set and it has drained.
    pub consumer: JoinHandle<anyhow::Result<()>>,
}

/// Starts every source the `runner:` section configures, each with its own pipeline.
pub async fn start(ctx: &Context) -> anyhow::Result<Vec<Running>> {
    let mut running = Vec::new();
    if let Some(config) = ctx.runner.kafka.clone() {
        running.push(kafka::start(config, ctx));
    }
    if let Some(config) = ctx.runner.pulsar.clone() {
        running.push(pulsar::start(config, ctx).await?);
    }
    if let Some(config) = ctx.runner.kinesis.clone() {
        running.push(kinesis::start(config, ctx).await?);
    }
    Ok(running)
}
