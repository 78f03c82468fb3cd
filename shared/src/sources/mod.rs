//! Lambda event adapters. Each turns an event source mapping's payload into partition batches,
//! lands them with the [`Lander`], and answers in the form the mapping expects.

pub mod event;
pub mod kafka;
pub mod kinesis;
pub mod kpl;

use crate::aws::{DynamoStateStore, S3ObjectStore, SqsDeadLetterQueue};
use crate::config::{
    ConfigError, ConnectorConfig, ConnectorLocation, EnvConfig, RegistryKind, StreamSettings,
};
use crate::cursor::Cursor;
use crate::decode::{RegistrySet, SchemaDecoder};
use crate::engine::{EngineError, Lander, PartitionOutcome, RunContext};
use crate::mappings::{LambdaMappings, MappingError, MappingFactors, MappingSettings};
use crate::record::{PartitionBatch, PartitionId};
use crate::registry::confluent::ConfluentRegistry;
use crate::registry::glue::GlueRegistry;
use crate::telemetry::{BatchReceived, Metrics};
use futures::StreamExt;
use std::sync::Arc;

/// Partitions of one event landed at the same time.
pub const PARTITION_CONCURRENCY: usize = 4;

/// Why an invocation fails as a whole (the mapping then retries the batch).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The event itself is malformed (never the case for events Lambda sends).
    #[error("malformed {source_kind} event: record {index}: {reason}")]
    MalformedEvent {
        /// `kinesis` or `kafka`.
        source_kind: &'static str,
        /// Position of the record in the event.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The stream is not in the connector file and unlisted streams are refused.
    #[error(
        "{partition}: stream is not listed in the connector config (streams.allow_unlisted is false)"
    )]
    UnlistedStream {
        /// The first partition of that stream in the event.
        partition: String,
    },
    /// The stream's parallelization factor cannot be used: the connector file states one the
    /// event source mapping does not have. Permanent; nothing lands until they agree.
    #[error(transparent)]
    Parallelization(#[from] MappingError),
    /// Landing failed in a way a retry of the same records cannot fix (missing bucket,
    /// table or queue, access denied, corrupted state), or a transient failure on a source
    /// without partial batch responses. Nothing from the named cursors on is committed.
    #[error("{count} partition(s) not landed; first: {first}")]
    Landing {
        /// How many partitions failed.
        count: usize,
        /// The first failure.
        first: Box<EngineError>,
    },
}

/// Everything a Lambda function needs, built once per execution environment.
#[derive(Debug, Clone)]
pub struct App {
    /// The engine.
    pub lander: Lander,
    /// Per-stream settings.
    pub connector: Arc<ConnectorConfig>,
    /// The environment.
    pub env: EnvConfig,
    /// The function's event source mappings, where the Kinesis function learns each
    /// stream's parallelization factor (read at init by the Kinesis binary, then cached).
    pub mappings: Arc<MappingFactors>,
}

impl App {
    /// Reads the environment and the connector file and builds the AWS clients (no call is
    /// made to them here).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let env = EnvConfig::from_env()?;
        let sdk = crate::aws::sdk_config().await;
        let connector = load_connector(&env, &sdk).await?;
        let lander = Lander::new(
            Arc::new(S3ObjectStore::new(&sdk, &env.bucket).with_multipart(env.multipart)),
            Arc::new(DynamoStateStore::new(&sdk, &env.state_table)),
            Arc::new(SqsDeadLetterQueue::new(&sdk, &env.dlq_url)),
            env.prefix.clone(),
        )
        .with_schemas(Arc::new(schema_decoder(&connector, &sdk)?));
        let mapping_settings = MappingSettings::from_env()?;
        let mappings = Arc::new(MappingFactors::new(
            Arc::new(LambdaMappings::new(&sdk, mapping_settings.function)),
            mapping_settings.refresh,
        ));
        Ok(Self {
            lander,
            connector: Arc::new(connector),
            env,
            mappings,
        })
    }
}

/// Loads the connector file from where `CONNECTOR_CONFIG` points: a local file, an S3 object
/// (read once per execution environment), or nothing (defaults).
pub async fn load_connector(
    env: &EnvConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<ConnectorConfig, ConfigError> {
    use crate::ports::ObjectStore as _;
    match env.connector_location() {
        ConnectorLocation::Defaults => Ok(ConnectorConfig::default()),
        ConnectorLocation::File(path) => ConnectorConfig::from_file(path),
        ConnectorLocation::S3 { uri, bucket, key } => {
            let fetch = |reason: String| ConfigError::Fetch {
                uri: uri.to_owned(),
                reason,
            };
            let body = S3ObjectStore::new(sdk, bucket)
                .get(key)
                .await
                .map_err(|e| fetch(e.to_string()))?
                .ok_or_else(|| fetch("no such object".into()))?;
            let text = String::from_utf8(body).map_err(|e| fetch(format!("not UTF-8: {e}")))?;
            ConnectorConfig::from_yaml(&text)
        }
    }
}

/// Builds the schema decoder over the registries the connector file configures.
pub fn schema_decoder(
    connector: &ConnectorConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<SchemaDecoder, ConfigError> {
    Ok(SchemaDecoder::new(registries(connector, sdk)?))
}

/// The registries the connector file configures.
pub fn registries(
    connector: &ConnectorConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<RegistrySet, ConfigError> {
    let mut registries: RegistrySet = Vec::new();
    if let Some(glue) = &connector.registries().glue {
        registries.push((
            RegistryKind::Glue,
            Arc::new(GlueRegistry::new(sdk, &glue.registry_name)),
        ));
    }
    if let Some(confluent) = &connector.registries().confluent {
        // Credentials come from the environment (the template fills them from Secrets
        // Manager) or from the URL's user-info; either way they never appear in a message.
        let auth = match (
            std::env::var("SCHEMA_REGISTRY_USERNAME"),
            std::env::var("SCHEMA_REGISTRY_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) if !user.is_empty() => Some((user, password)),
            _ => None,
        };
        let registry =
            ConfluentRegistry::new(&confluent.url, auth).map_err(|e| ConfigError::Invalid {
                field: "registries.confluent.url".into(),
                reason: e.to_string(),
            })?;
        registries.push((RegistryKind::Confluent, Arc::new(registry)));
    }
    Ok(registries)
}

/// One partition's batch with its settings and lag, ready to land.
#[derive(Debug)]
pub(crate) struct Prepared<C> {
    pub(crate) batch: PartitionBatch<C>,
    pub(crate) settings: StreamSettings,
    pub(crate) lag_ms: Option<i64>,
}

/// Looks up the settings of every batch, refusing unlisted streams.
pub(crate) fn prepare<C: Cursor>(
    connector: &ConnectorConfig,
    batches: Vec<PartitionBatch<C>>,
    lag: impl Fn(&PartitionBatch<C>) -> Option<i64>,
) -> Result<Vec<Prepared<C>>, SourceError> {
    batches
        .into_iter()
        .map(|batch| {
            let settings = connector
                .stream(batch.id.source, &batch.id.stream)
                .cloned()
                .ok_or_else(|| SourceError::UnlistedStream {
                    partition: batch.id.to_string(),
                })?;
            let lag_ms = lag(&batch);
            Ok(Prepared {
                batch,
                settings,
                lag_ms,
            })
        })
        .collect()
}

/// Lands every partition (a few at a time) and returns the outcomes in input order.
pub(crate) async fn land_all<C: Cursor>(
    lander: &Lander,
    prepared: &[Prepared<C>],
    run: RunContext<'_>,
) -> Vec<(PartitionId, PartitionOutcome<C>)> {
    futures::stream::iter(prepared)
        .map(|p| async move {
            BatchReceived {
                partition: &p.batch.id,
                records: p.batch.records.len(),
                lag_ms: p.lag_ms,
                run_id: run.run_id,
            }
            .emit(run.metrics);
            (
                p.batch.id.clone(),
                lander.land(&p.batch, &p.settings, run).await,
            )
        })
        .buffered(PARTITION_CONCURRENCY)
        .collect()
        .await
}

/// Splits outcomes into permanent failures and the transient ones (with their first
/// unlanded cursor).
pub(crate) fn failures<C: Cursor>(
    outcomes: Vec<(PartitionId, PartitionOutcome<C>)>,
) -> (Vec<EngineError>, Vec<(PartitionId, C, EngineError)>) {
    let mut permanent = Vec::new();
    let mut transient = Vec::new();
    for (id, outcome) in outcomes {
        if let PartitionOutcome::Failed {
            first_unlanded,
            error,
        } = outcome
        {
            if error.is_transient() {
                transient.push((id, first_unlanded, error));
            } else {
                permanent.push(error);
            }
        }
    }
    (permanent, transient)
}

/// Lag of a batch: now minus the newest record's own timestamp. For Kinesis that timestamp is
/// the approximate arrival time, so this is the iterator age; for Kafka it is the age of the
/// newest record.
pub(crate) fn newest_record_age<C>(batch: &PartitionBatch<C>, now_ms: i64) -> Option<i64> {
    batch
        .records
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .max()
        .map(|t| now_ms.saturating_sub(t).max(0))
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Flushes metrics for the invocation, including SDK retries.
pub fn finish_invocation(metrics: &Metrics) {
    metrics.add_retries(crate::aws::take_retries());
    metrics.flush(now_ms());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::KafkaOffset;
    use crate::record::{PartitionId, Record, Source};

    #[test]
    fn lag_is_the_age_of_the_newest_record() {
        let record = |ts: Option<i64>| Record {
            cursor: KafkaOffset(0),
            key: None,
            headers: vec![],
            timestamp_ms: ts,
            payload: None,
            defect: None,
            schema_id: None,
        };
        let batch = PartitionBatch {
            id: PartitionId::new(Source::Kafka, "t", "0"),
            records: vec![record(Some(1_000)), record(Some(4_000)), record(None)],
        };
        assert_eq!(newest_record_age(&batch, 10_000), Some(6_000));
        assert_eq!(
            newest_record_age(&batch, 3_000),
            Some(0),
            "clock skew never gives negative lag"
        );
        let empty = PartitionBatch {
            id: batch.id.clone(),
            records: vec![record(None)],
        };
        assert_eq!(newest_record_age(&empty, 10_000), None);
        // Any time a record can carry, however far in the past (a Kafka timestamp of i64::MIN,
        // a Kinesis arrival time of -9.2e15 s): a saturated lag, never an overflow.
        let ancient = PartitionBatch {
            id: batch.id.clone(),
            records: vec![record(Some(i64::MIN))],
        };
        assert_eq!(newest_record_age(&ancient, 10_000), Some(i64::MAX));
    }
}
