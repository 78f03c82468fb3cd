//! # streaming-connector: the long-running runner
//!
//! Consumes Kafka (rdkafka consumer groups), Pulsar (the `pulsar` crate) and Kinesis
//! (GetRecords with shard leases) and lands with
//! the same engine, keys and checkpoints as the Lambda functions (`bronze`), so a stream can
//! move between the two in either direction.
//!
//! # Layout
//! - [`app`]: the commands (`run`, `discover`, `status`, `verify`) and their shared setup.
//! - [`config`]: the connector file's `runner:` section.
//! - [`pipeline`]: per-partition buffers, input-derived file cuts, landing under the
//!   concurrency limit, retries, draining on revocation and shutdown; the same for every source.
//! - [`concurrency`]: the adaptive limit (additive increase, multiplicative decrease, a
//!   ceiling raised by consumer lag).
//! - [`kafka`]: the consumer thread: rebalance callbacks against the state registry,
//!   pause/resume backpressure, MSK IAM tokens, advisory offset commits.
//! - [`kafka_headers`]: message headers read through librdkafka's C API with every byte
//!   kept (the workspace's one audited `unsafe` module).
//! - [`pulsar`]: the Pulsar consumer: message ids as cursors, acknowledgement after commit.
//! - [`kinesis`]: Kinesis GetRecords readers per leased shard, discovery, resharding.
//! - [`leases`]: shard leases in the state table and the balancing decision.
//! - [`secrets`]: credentials from Secrets Manager, never printed.
//! - [`audit`]: `discover`, `status` and `verify`.
//! - [`http`]: Prometheus `/metrics` and `/healthz`.
//! - [`cloudwatch`]: per-minute `PutMetricData` (the metric the template's autoscaling tracks).

pub mod app;
pub mod audit;
pub mod cloudwatch;
pub mod concurrency;
pub mod config;
pub mod http;
pub mod kafka;
pub mod kafka_headers;
pub mod kinesis;
pub mod leases;
pub mod pipeline;
pub mod pulsar;
pub mod secrets;
