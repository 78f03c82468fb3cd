//! # publish: Bronze as an Apache Iceberg table
//!
//! Publishes the objects the commit log names as committed to an Iceberg table, as Parquet,
//! exactly once, without changing the landing protocol. See `docs/landing-contract.md`,
//! section 10.
//!
//! # Layout
//! - [`table`]: the table's schema and partition spec (stream, `day(timestamp)`), and how a
//!   Bronze line becomes a typed row (payload text byte for byte).
//! - [`plan`]: pure decisions: the watermarks in a snapshot summary, which commit-log entries
//!   a publish takes, data file names.
//! - [`catalog`]: opening a catalog (`sqlite:<path>` for the local stack, `glue` for AWS)
//!   and the fence that turns Iceberg's append rebase into a conflict.
//! - [`publisher`]: one publish: read past the watermarks, write one Parquet file per stream
//!   partition (and day), append them in one snapshot carrying the new watermarks.
//! - [`job`]: one publish from its settings (bucket, state table, catalog, warehouse,
//!   table), shared by `streaming-connector publish` and the scheduled Lambda function.
//! - [`audit`]: `verify`'s table check: each partition's rows are the records of the
//!   commit-log entries its watermark covers, none twice.
//!
//! This crate links Arrow and Parquet; the Lambda consumers do not depend on it (only the
//! publisher function does).

pub mod audit;
pub mod catalog;
pub mod job;
pub mod plan;
pub mod publisher;
pub mod table;
