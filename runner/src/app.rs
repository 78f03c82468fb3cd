//! The commands: setup shared by all of them, `run`, `discover`, `status`, `verify`.

use crate::config::{RunnerConfig, SaslMechanism};
use crate::sources::{self, kinesis};
use crate::{audit, http, secrets};
use anyhow::Context;
use bronze::aws::{DynamoStateStore, S3ObjectStore, SqsDeadLetterQueue};
use bronze::config::{ConnectorConfig, EnvConfig};
use bronze::engine::Lander;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment, with `--config` as the connector file.
fn env_with(config: Option<&str>) -> anyhow::Result<EnvConfig> {
    let env = EnvConfig::from_lookup(|name| match (name, config) {
        ("CONNECTOR_CONFIG", Some(c)) => Some(c.to_owned()),
        _ => std::env::var(name).ok(),
    })?;
    Ok(env)
}

/// What every command reads: environment, SDK, connector file, runner section, credentials.
#[derive(Debug)]
pub struct Setup {
    /// The environment (bucket, table, queue, prefix).
    pub env: EnvConfig,
    /// AWS SDK configuration.
    pub sdk: aws_config::SdkConfig,
    /// The connector file.
    pub connector: Arc<ConnectorConfig>,
    /// Its `runner:` section.
    pub runner: RunnerConfig,
    /// Kafka PLAIN/SCRAM credentials, when configured.
    pub credentials: Option<secrets::SaslCredentials>,
}

/// Reads the environment, the connector file and the credentials.
pub async fn setup(config: &str) -> anyhow::Result<Setup> {
    let env = env_with(Some(config))?;
    let sdk = bronze::aws::sdk_config().await;
    let connector = bronze::sources::load_connector(&env, &sdk).await?;
    let runner = RunnerConfig::from_connector(&connector)?;
    let credentials = match runner.kafka.as_ref().and_then(|k| k.security.mechanism) {
        Some(SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512) => {
            let arn = runner
                .kafka
                .as_ref()
                .and_then(|k| k.security.secret_arn.as_deref());
            Some(secrets::sasl_credentials(&sdk, arn).await?)
        }
        _ => None,
    };
    Ok(Setup {
        env,
        sdk,
        connector: Arc::new(connector),
        runner,
        credentials,
    })
}

fn lander(setup: &Setup) -> anyhow::Result<Lander> {
    let env = &setup.env;
    Ok(Lander::new(
        Arc::new(S3ObjectStore::new(&setup.sdk, &env.bucket).with_multipart(env.multipart)),
        Arc::new(DynamoStateStore::new(&setup.sdk, &env.state_table)),
        Arc::new(SqsDeadLetterQueue::new(&setup.sdk, &env.dlq_url)),
        env.prefix.clone(),
    )
    .with_schemas(Arc::new(bronze::sources::schema_decoder(
        &setup.connector,
        &setup.sdk,
    )?)))
}

/// `run`: consume and land until SIGTERM or a consumer error.
pub async fn run(config: String) -> anyhow::Result<ExitCode> {
    // Listen for SIGTERM before anything else, so an early stop is a clean stop too.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let setup = setup(&config).await?;
    let run_id = format!("runner-{}", uuid::Uuid::new_v4());
    let lander = lander(&setup)?;
    let state: Arc<dyn bronze::ports::StateStore> =
        Arc::new(DynamoStateStore::new(&setup.sdk, &setup.env.state_table));
    let runner = setup.runner.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let context = sources::Context {
        sdk: setup.sdk.clone(),
        connector: setup.connector.clone(),
        runner: runner.clone(),
        credentials: setup.credentials.clone(),
        lander,
        state,
        state_table: setup.env.state_table.clone(),
        run_id,
        stop: stop.clone(),
    };
    let mut pipelines = Vec::new();
    let mut shareds = Vec::new();
    let mut consumers = Vec::new();
    for source in sources::start(&context).await? {
        pipelines.push(source.pipeline);
        consumers.push(source.consumer);
        shareds.push(source.shared);
    }

    let addr = http::serve(
        &runner.http.bind,
        runner.http.port,
        http::Endpoints {
            pipelines: shareds.clone(),
            stall_timeout: Duration::from_millis(runner.stall_timeout_ms),
        },
    )
    .await
    .with_context(|| format!("binding {}:{}", runner.http.bind, runner.http.port))?;
    tracing::info!(address = %addr, "serving /metrics and /healthz");
    // One metrics window for the per-minute publication and the final one at shutdown.
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&setup.sdk);
    let window = Arc::new(tokio::sync::Mutex::new(
        crate::cloudwatch::MetricsWindow::default(),
    ));
    let metrics_task = {
        let pipelines = shareds.clone();
        let window = window.clone();
        let cloudwatch = cloudwatch.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let points = window
                    .lock()
                    .await
                    .take(&pipelines, bronze::aws::peek_retries());
                crate::cloudwatch::publish(&cloudwatch, &points).await;
            }
        })
    };

    // Stop on SIGTERM/SIGINT, or when a consumer ends by itself (an error).
    let mut consumers = futures::future::select_all(consumers);
    let mut failed = false;
    let mut remaining = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); Vec::new() }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: draining"); Vec::new() }
        (result, _, rest) = &mut consumers => {
            failed |= report(result);
            rest
        }
    };
    stop.store(true, Ordering::Relaxed);
    if remaining.is_empty() {
        remaining = consumers.into_inner();
    }
    for result in futures::future::join_all(remaining).await {
        failed |= report(result);
    }
    let mut abandoned = 0;
    for p in pipelines {
        abandoned += p.await.unwrap_or(1);
    }
    metrics_task.abort();
    let points = window
        .lock()
        .await
        .take(&shareds, bronze::aws::peek_retries());
    crate::cloudwatch::publish(&cloudwatch, &points).await;
    if abandoned > 0 {
        tracing::warn!(
            partitions = abandoned,
            "stopped with uncommitted records; they will be read again"
        );
    }
    tracing::info!(failed, "stopped");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn report(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> bool {
    match result {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "consumer stopped");
            eprintln!("error: {e:#}");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "consumer task failed");
            true
        }
    }
}

/// `discover`.
pub async fn discover(config: String) -> anyhow::Result<ExitCode> {
    let setup = setup(&config).await?;
    let consumer = audit::kafka_reader(&setup.runner, setup.credentials.as_ref())?;
    print!("{}", manifest_summary(&setup.connector));
    let mut kinesis_shards = Vec::new();
    if let Some(k) = &setup.runner.kinesis {
        let client = aws_sdk_kinesis::Client::new(&setup.sdk);
        for stream in &k.streams {
            kinesis_shards.push((stream.clone(), kinesis::list_shards(&client, stream).await?));
        }
    }
    print!(
        "{}",
        audit::discover(&setup.runner, consumer.as_ref(), &kinesis_shards)?
    );
    Ok(ExitCode::SUCCESS)
}

/// The manifest's header as `discover` shows it (YAML comments above the streams section).
pub fn manifest_summary(connector: &ConnectorConfig) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "(not stated)".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "# connector: {}\n# supported runners: {}\n# network patterns: {}\n",
        connector.name().unwrap_or("(unnamed)"),
        list(connector.supported_runners()),
        list(connector.network_patterns()),
    )
}

/// `status`.
pub async fn status(config: String) -> anyhow::Result<ExitCode> {
    let setup = setup(&config).await?;
    let consumer = audit::kafka_reader(&setup.runner, setup.credentials.as_ref())?;
    let state = DynamoStateStore::new(&setup.sdk, &setup.env.state_table);
    let mut rows = audit::status(&setup.runner, &state, consumer.as_ref()).await?;
    let kinesis_client = aws_sdk_kinesis::Client::new(&setup.sdk);
    audit::kinesis_status(&mut rows, &kinesis_client, &setup.runner, &state).await?;
    print!("{}", audit::status_table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `verify`; with `table` (`catalog`, `warehouse`, `namespace.table`) it also checks the
/// Iceberg table against the commit log (`publish::audit::verify_table`).
pub async fn verify(
    config: Option<String>,
    stream: Option<String>,
    table: Option<(String, String, String)>,
) -> anyhow::Result<ExitCode> {
    let (env, sdk, consumer, stuck_after) = match &config {
        Some(c) => {
            let setup = setup(c).await?;
            let consumer = audit::kafka_reader(&setup.runner, setup.credentials.as_ref())?;
            let stuck_after = Duration::from_millis(setup.runner.stall_timeout_ms);
            (setup.env, setup.sdk, consumer, Some(stuck_after))
        }
        None => (env_with(None)?, bronze::aws::sdk_config().await, None, None),
    };
    let state = DynamoStateStore::new(&sdk, &env.state_table);
    let objects = S3ObjectStore::new(&sdk, &env.bucket);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let probes = audit::Probes {
        kafka: consumer.as_ref().map(|c| c as &dyn audit::SourceProbe),
        kinesis: Some(&kinesis),
    };
    let report = audit::verify(&state, &objects, probes, stream.as_deref(), stuck_after).await?;
    for v in &report.violations {
        println!("VIOLATION {}: {}", v.partition, v.problem);
    }
    if !report.unchecked.is_empty() {
        let names: Vec<String> = report.unchecked.iter().map(|p| p.to_string()).collect();
        println!(
            "not in this account's Kinesis, checked against the commit log only: {}",
            names.join(", ")
        );
    }
    println!(
        "verified {} partitions, {} commits, {} records landed, {} dead-lettered: {} violation(s)",
        report.partitions,
        report.commits,
        report.records,
        report.dead_lettered,
        report.violations.len()
    );
    let mut violations = report.violations.len();
    if let Some((catalog, warehouse, ident)) = table {
        let catalog = publish::catalog::open(
            &catalog.parse()?,
            &warehouse,
            publish::catalog::props_from_env(),
        )
        .await?;
        let ident = publish::job::parse_table(&ident)?;
        let audit = publish::audit::verify_table(
            &state,
            &objects,
            catalog.as_ref(),
            &ident,
            stream.as_deref(),
        )
        .await?;
        for (partition, problem) in &audit.violations {
            println!("VIOLATION table {ident} {partition}: {problem}");
        }
        println!(
            "table {ident}: {} partitions, {} rows compared with the commit log, {} committed records not published yet, {} rows from before a reset: {} violation(s)",
            audit.partitions,
            audit.rows,
            audit.unpublished,
            audit.before_reset,
            audit.violations.len()
        );
        violations += audit.violations.len();
    }
    Ok(if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_shows_the_manifest_runtime() {
        let connector = ConnectorConfig::from_yaml(
            "manifest_version: 1.0\nid: conn::global::streaming::kafka_kinesis::consume\nname: Global Streaming Connector\ntaxonomy: {origin: enterprise}\nruntime: {supported_runners: [fargate, ec2], network_patterns: [private_link]}\nstreams: {strategy: config_defined}\n",
        )
        .unwrap();
        assert_eq!(
            manifest_summary(&connector),
            "# connector: Global Streaming Connector\n# supported runners: fargate, ec2\n# network patterns: private_link\n"
        );
    }
}
