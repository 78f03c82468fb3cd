//! `streaming-connector`: the long-running runner and the connector's operator commands.
//!
//! - `run --config connector.yaml`: consume Kafka (consumer group) and/or Pulsar
//!   (subscription) and land into Bronze with the same engine and checkpoints as the
//!   Lambda functions. SIGTERM drains: stop fetching, land and commit what is buffered,
//!   exit 0.
//! - `discover --config`: the topics and partitions the config would subscribe to, and a
//!   `streams` section for them.
//! - `status --config`: checkpoint, high watermark and lag per partition.
//! - `verify [--config] [--stream S] [--catalog C --warehouse W]`: audits the
//!   committed Bronze data against the commit log, and with a catalog the Iceberg table too;
//!   exits 1 on a violation.
//! - `schema check|register --config`: schema compatibility (see `bronze::commands`).
//! - `publish --catalog <sqlite:<path> | glue | glue:<account id> | s3tables:<table bucket ARN> |
//!   rest:<uri>> --warehouse <s3://... or
//!   file://...> [--every <seconds>]`: publish committed Bronze objects to the Iceberg table
//!   once, or continuously (see the `publish` crate).
//! - `sweep [--stream S] [--apply]`: delete objects no commit references at or below each
//!   partition's checkpoint (see `bronze::reset::sweep_partition`).
//! - `reset --source S --stream T --partition P [--apply]`: start a partition over after its
//!   source's cursors restarted (see `bronze::reset`); without `--apply` it only shows what
//!   it would do.
//!
//! The bucket, table and queue come from the same environment variables as the functions
//! (`BRONZE_BUCKET`, `STATE_TABLE`, `DLQ_URL`, `BRONZE_PREFIX`). `--config` may be a path or
//! `s3://bucket/key`.

use anyhow::Context;
use bronze::config::ConnectorConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use streaming_connector::app::{discover, run, status, verify};

#[derive(Debug, Parser)]
#[command(
    name = "streaming-connector",
    version,
    about = "Streaming connector to the Bronze layer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and land until SIGTERM.
    Run {
        /// The connector file (path or s3://bucket/key).
        #[arg(long)]
        config: String,
    },
    /// List the topics and partitions the config subscribes to, and print a streams section.
    Discover {
        /// The connector file.
        #[arg(long)]
        config: String,
    },
    /// Checkpoints and lag per partition.
    Status {
        /// The connector file.
        #[arg(long)]
        config: String,
    },
    /// Audit the committed Bronze data against the commit log; exit 1 on a violation.
    Verify {
        /// The connector file: with `runner.kafka`, gaps are checked against the broker.
        #[arg(long)]
        config: Option<String>,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Also check the Iceberg table in this catalog (`sqlite:<path>`, `glue`,
        /// `glue:<account id>`, `s3tables:<table bucket ARN>` or `rest:<uri>`): each partition's rows are the records of the commits its
        /// watermark covers, none twice.
        #[arg(long, requires = "warehouse")]
        catalog: Option<String>,
        /// The table's warehouse (with `--catalog`).
        #[arg(long, requires = "catalog")]
        warehouse: Option<String>,
        /// `namespace.table` (with `--catalog`).
        #[arg(long, default_value = "bronze.records")]
        table: String,
    },
    /// Start a partition over after its source's cursors restarted (a recreated topic or
    /// stream): archive its Bronze objects under `<prefix>/_archive/reset-<epoch seconds>/` and delete
    /// its checkpoint and commit log. Without `--apply`, only shows what it would do.
    Reset {
        /// `kafka`, `kinesis` or `pulsar`.
        #[arg(long)]
        source: String,
        /// Topic or stream name.
        #[arg(long)]
        stream: String,
        /// Partition number or shard id.
        #[arg(long)]
        partition: String,
        /// Make the change (default: a dry run).
        #[arg(long)]
        apply: bool,
    },
    /// Delete objects that no commit references and no writer can commit any more (at or
    /// below each ordered partition's checkpoint). Without `--apply`, only lists them.
    Sweep {
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Delete (default: list only).
        #[arg(long)]
        apply: bool,
    },
    /// Publish committed Bronze objects to the Iceberg table once (one snapshot, exactly
    /// once; see docs/landing-contract.md section 10) and print what was published as JSON.
    Publish {
        /// The catalog: `sqlite:<path>` (SQL catalog; the file is created when missing), `glue`
        /// (this account's AWS Glue Data Catalog), `glue:<account id>`, `s3tables:<table bucket
        /// ARN>` (Amazon S3 Tables) or `rest:<http(s) URI>` (an Iceberg REST catalog;
        /// `ICEBERG_REST_TOKEN` or `ICEBERG_REST_CREDENTIAL`).
        #[arg(long)]
        catalog: String,
        /// Where tables live: `s3://bucket/prefix` or `file:///path`.
        #[arg(long)]
        warehouse: String,
        /// `namespace.table`.
        #[arg(long, default_value = "bronze.records")]
        table: String,
        /// Publish continuously: once now, then every this many seconds, until SIGTERM or
        /// SIGINT (a publish under way finishes first). A failed publish is logged and redone
        /// by the next one; a bad setting stops the command.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        every: Option<u64>,
    },
    /// Schema registry commands.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaAction {
    /// Check every declared schema definition for compatibility; register nothing.
    Check {
        /// The connector file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check, then register the compatible definitions.
    Register {
        /// The connector file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Exit code for a configuration or credentials problem (distinct from a crash).
const EXIT_CONFIG: u8 = 2;
/// `publish` committed, but held back partitions whose committed data it could not read.
const EXIT_HELD_BACK: u8 = 3;

fn main() -> ExitCode {
    bronze::telemetry::init_json_logs();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Discover { config } => runtime.block_on(discover(config)),
        Command::Status { config } => runtime.block_on(status(config)),
        Command::Verify {
            config,
            stream,
            catalog,
            warehouse,
            table,
        } => runtime.block_on(verify(
            config,
            stream,
            catalog.zip(warehouse).map(|(c, w)| (c, w, table)),
        )),
        Command::Schema { action } => runtime.block_on(schema(action)),
        Command::Sweep { stream, apply } => runtime.block_on(sweep(stream, apply)),
        Command::Publish {
            catalog,
            warehouse,
            table,
            every,
        } => runtime.block_on(publish(&catalog, &warehouse, &table, every)),
        Command::Reset {
            source,
            stream,
            partition,
            apply,
        } => runtime.block_on(reset(&source, stream, partition, apply)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn publish(
    catalog: &str,
    warehouse: &str,
    table: &str,
    every: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let env = bronze::config::EnvConfig::from_env()?;
    let sdk = bronze::aws::sdk_config().await;
    let job = publish::job::PublishJob {
        bucket: env.bucket,
        state_table: env.state_table,
        catalog: catalog.parse()?,
        warehouse: warehouse.to_owned(),
        table: publish::job::parse_table(table)?,
        props: publish::catalog::props_from_env(),
        settings: Default::default(),
    };
    let Some(every) = every else {
        return match job.run_complete(&sdk).await {
            Ok(report) => {
                println!("{}", serde_json::to_string(&report)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                if let publish::job::JobError::HeldBack { report } = &e {
                    // The other partitions are published; these need attention.
                    println!("{}", serde_json::to_string(report)?);
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EXIT_HELD_BACK));
                }
                Err(e.into())
            }
        };
    };
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping after this publish"),
            _ = int.recv() => tracing::info!("SIGINT: stopping after this publish"),
        }
    };
    let runs = job
        .run_every(
            &sdk,
            std::time::Duration::from_secs(every),
            stop,
            |report| match serde_json::to_string(report) {
                Ok(line) => println!("{line}"),
                Err(e) => tracing::error!(error = %e, "could not print the publish report"),
            },
        )
        .await?;
    tracing::info!(runs, "publisher stopped");
    Ok(ExitCode::SUCCESS)
}

async fn sweep(stream: Option<String>, apply: bool) -> anyhow::Result<ExitCode> {
    use bronze::ports::StateStore as _;
    let env = bronze::config::EnvConfig::from_env()?;
    let sdk = bronze::aws::sdk_config().await;
    let objects = bronze::aws::S3ObjectStore::new(&sdk, &env.bucket);
    let state = bronze::aws::DynamoStateStore::new(&sdk, &env.state_table);
    let mut total = 0;
    for id in state.partitions().await? {
        if stream.as_ref().is_some_and(|s| s != &id.stream) {
            continue;
        }
        let report =
            bronze::reset::sweep_partition(&objects, &state, &env.prefix, &id, apply).await?;
        for key in &report.orphans {
            println!("{} {key}", if apply { "deleted" } else { "orphan" });
        }
        total += report.orphans.len();
    }
    println!(
        "{total} orphan object(s){}",
        if apply {
            " deleted"
        } else {
            "; run again with --apply to delete them"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn reset(
    source: &str,
    stream: String,
    partition: String,
    apply: bool,
) -> anyhow::Result<ExitCode> {
    let id = bronze::record::PartitionId::from_state_key(&format!("{source}#{stream}#{partition}"))
        .with_context(|| {
            format!("--source {source:?}: expected kafka, kinesis or pulsar (and non-empty names)")
        })?;
    let env = bronze::config::EnvConfig::from_env()?;
    let sdk = bronze::aws::sdk_config().await;
    let objects = bronze::aws::S3ObjectStore::new(&sdk, &env.bucket);
    let state = bronze::aws::DynamoStateStore::new(&sdk, &env.state_table);
    let tag = format!(
        "reset-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let report =
        bronze::reset::reset_partition(&objects, &state, &env.prefix, &id, &tag, apply).await?;
    let verb = if report.applied {
        "archived"
    } else {
        "would archive"
    };
    println!(
        "{id}: {verb} {} object(s) to {} and {} {} checkpoint/commit-log item(s)",
        report.archived.len(),
        report.archive_prefix,
        if report.applied {
            "deleted"
        } else {
            "would delete"
        },
        report.state_items,
    );
    if !report.applied {
        println!("dry run: run again with --apply to make the change");
    } else {
        println!(
            "the partition now lands from the first record delivered; point the source's consumer (event source mapping or consumer group) at the records to land"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn schema(action: SchemaAction) -> anyhow::Result<ExitCode> {
    let (config, register) = match action {
        SchemaAction::Check { config } => (config, false),
        SchemaAction::Register { config } => (config, true),
    };
    let connector = ConnectorConfig::from_file(&config)?;
    let sdk = bronze::aws::sdk_config().await;
    if let (true, Some(glue)) = (register, &connector.registries().glue) {
        // Registering into a Glue registry that does not exist yet creates it.
        bronze::registry::glue::GlueRegistry::new(&sdk, &glue.registry_name)
            .ensure_registry()
            .await?;
    }
    let registries = bronze::sources::registries(&connector, &sdk)?;
    let dir = config.parent().context("config path has no directory")?;
    let reports = bronze::commands::schemas(&connector, dir, &registries, register).await;
    let mut failed = false;
    for report in &reports {
        match &report.result {
            Ok(message) => println!(
                "ok    {} (subject {}): {message}",
                report.stream, report.subject
            ),
            Err(e) => {
                failed = true;
                println!("FAIL  {} (subject {}): {e}", report.stream, report.subject);
            }
        }
    }
    if reports.is_empty() {
        println!("no stream declares a schema with a definition file");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
