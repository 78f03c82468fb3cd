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
//! - [`sources`]: Kafka, Pulsar and Kinesis behind one shape (partitions gained and lost
//!   with an epoch, records, acknowledgement after commit, lag), each started from one
//!   `start(config, &Context)`; re-exported here as [`kafka`], [`kafka_headers`], [`pulsar`],
//!   [`kinesis`] and [`leases`].
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
pub mod pipeline;
pub mod secrets;
pub mod sources;

pub use sources::{kafka, kafka_headers, kinesis, leases, pulsar};
