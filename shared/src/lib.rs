//! # bronze: the source-neutral landing engine
//!
//! Lands records from Kafka, Kinesis and Pulsar into the Bronze layer on S3 exactly once,
//! checkpointing in a DynamoDB state registry and dead-lettering poison records to SQS.
//! See `docs/landing-contract.md` for the contract this code keeps.
//!
//! # Layout
//! - [`cursor`]: typed cursors with a total order (Kafka offsets, Kinesis sequence numbers,
//!   Pulsar message ids).
//! - [`record`]: source records, partition ids, grouping by partition, the skip decision.
//! - [`config`]: the function's environment and the per-stream YAML connector file.
//! - [`bronze`]: Bronze encoding (JSON Lines) and deterministic object keys.
//! - [`compress`]: gzip (libdeflate) or zstd objects in independently compressed members,
//!   compressed on every core.
//! - [`ports`]: small async traits for the outside world: objects, state, dead letters.
//! - [`aws`]: the S3, DynamoDB and SQS adapters, SDK config and error classification.
//! - [`memory`]: in-memory adapters with crash injection, for protocol tests.
//! - [`wire`]: registry wire formats (Confluent magic byte + id, Glue header + UUID).
//! - [`decode`]: schema checks at landing: unframe, find the schema (cached), decode/validate.
//! - [`dlq`]: the dead-letter format.
//! - [`engine`]: the landing and commit protocol for one partition.
//! - [`registry`]: schema registries (AWS Glue, Confluent-compatible REST) behind one trait.
//! - [`schema`]: schema formats (Avro, JSON Schema) and compatibility checks.
//! - [`mappings`]: a Kinesis function's event source mappings, where it learns each stream's
//!   ParallelizationFactor (and so ordered or interleaved landing).
//! - [`sources`]: Lambda event adapters for Kinesis and Kafka (MSK and self-managed).
//! - [`commands`]: `schema check` / `schema register` for a connector file.
//! - [`reset`]: start a partition over after its source's cursors restarted (`reset`).
//! - [`telemetry`]: one struct per event, JSON logs and CloudWatch EMF metrics.

pub mod aws;
pub mod bronze;
pub mod commands;
pub mod compress;
pub mod config;
pub mod cursor;
pub mod decode;
pub mod dlq;
pub mod engine;
pub mod mappings;
pub mod memory;
pub mod ports;
pub mod record;
pub mod registry;
pub mod reset;
pub mod schema;
pub mod sources;
pub mod telemetry;
pub mod wire;
