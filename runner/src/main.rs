//! `streaming-connector`: the connector's command line.
//!
//! - `streaming-connector schema check --config connector.yaml`: checks every declared
//!   schema definition against its subject's history under the declared compatibility mode;
//!   exits 1 on an incompatible change, with an explanation of what breaks.
//! - `streaming-connector schema register --config connector.yaml`: the same check, then
//!   registers the compatible definitions.

use anyhow::Context;
use bronze::config::ConnectorConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    bronze::telemetry::init_json_logs();
    let Command::Schema { action } = Cli::parse().command;
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
