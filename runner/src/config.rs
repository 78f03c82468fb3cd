//! The runner's section of the connector file (`runner:`): brokers and subscriptions, the
//! buffer cap, file cuts, landing concurrency and the HTTP port. Parsed with
//! `deny_unknown_fields`; every error names the field, e.g. `runner.kafka.security.mechanism`.

use bronze::config::ConnectorConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Why the runner's configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunnerConfigError {
    /// The connector file has no `runner:` section.
    #[error("the connector file has no `runner:` section")]
    Missing,
    /// A field is missing, unknown or has a bad value.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `runner.kafka.topics`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The `runner:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Kafka consumer group settings, when the runner reads Kafka.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Pulsar subscription settings, when the runner reads Pulsar.
    #[serde(default)]
    pub pulsar: Option<PulsarConfig>,
    /// Kinesis streams read with shard leases, when the runner reads Kinesis.
    #[serde(default)]
    pub kinesis: Option<KinesisConfig>,
    /// The memory bound.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// When a partition's buffered records become a file.
    #[serde(default)]
    pub files: FileConfig,
    /// Landing concurrency.
    #[serde(default)]
    pub concurrency: ConcurrencyConfig,
    /// `/metrics` and `/healthz`.
    #[serde(default)]
    pub http: HttpConfig,
    /// How long a graceful shutdown may take before buffered records are abandoned (they
    /// are not committed, so the next owner reads them again). Keep it below the task's
    /// stop timeout (120 s in the template).
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_timeout_ms: u64,
    /// How long fetching may stay paused on a full buffer with no landing committed before
    /// `/healthz` reports the runner stalled (503); `verify` also uses it as the age past
    /// which a partition with records beyond its checkpoint and no recent commit is reported.
    #[serde(default = "default_stall_ms")]
    pub stall_timeout_ms: u64,
}

fn default_shutdown_ms() -> u64 {
    90_000
}

fn default_stall_ms() -> u64 {
    300_000
}

/// Where consumption starts for a partition that has no checkpoint yet.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record (the default: Bronze keeps everything).
    #[default]
    Earliest,
    /// Only records produced after the partition is first assigned: the end of its log
    /// then, recorded in the state table by the first runner that reads it, so that later
    /// owners (a rebalance, a restart before its first commit) start at the same offset.
    Latest,
}

/// Kafka consumer group settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,...`.
    pub bootstrap_servers: String,
    /// The consumer group; runners sharing it split the partitions.
    pub group_id: String,
    /// Topics by exact name.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Topics by regular expression (librdkafka syntax, anchored with a leading `^`).
    /// New topics and partitions that match are picked up at the next metadata refresh.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Where a partition without a checkpoint starts.
    #[serde(default)]
    pub start_from: StartFrom,
    /// How often topic metadata is refreshed: the delay before a new matching topic or
    /// partition is consumed.
    #[serde(default = "default_metadata_refresh_ms")]
    pub metadata_refresh_ms: u64,
    /// Authentication and TLS.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// Extra librdkafka properties (never credentials: those come from Secrets Manager).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_metadata_refresh_ms() -> u64 {
    30_000
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL (local brokers only).
    #[default]
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS (MSK SCRAM and IAM).
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanism.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Username and password in clear (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512 (MSK's SCRAM).
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// MSK IAM: OAUTHBEARER with a SigV4-signed token from the task's credentials.
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl SaslMechanism {
    /// The librdkafka `sasl.mechanism` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::AwsMskIam => "OAUTHBEARER",
        }
    }
}

/// Kafka authentication and TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `AWS_MSK_IAM`; required with SASL.
    #[serde(default)]
    pub mechanism: Option<SaslMechanism>,
    /// Secrets Manager secret (ARN or name) holding `{"username": ..., "password": ...}`
    /// for PLAIN and SCRAM (the format MSK's SCRAM secrets use). Without it, the
    /// `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD` environment variables are used
    /// (ECS injects them from Secrets Manager).
    #[serde(default)]
    pub secret_arn: Option<String>,
    /// AWS region of the MSK cluster for IAM tokens (default: the SDK's region).
    #[serde(default)]
    pub region: Option<String>,
    /// CA bundle for TLS (default: the system store).
    #[serde(default)]
    pub ca_location: Option<String>,
}

/// Pulsar subscription type.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionType {
    /// One consumer per subscription; others are refused.
    Exclusive,
    /// One active consumer per partition, the others stand by (the default).
    #[default]
    Failover,
    /// Consumers share each partition by key hash: records of one partition interleave
    /// across consumers, so they land in interleaved mode (see the landing contract).
    KeyShared,
}

/// Pulsar settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulsarConfig {
    /// `pulsar://host:6650` or `pulsar+ssl://host:6651`.
    pub service_url: String,
    /// Topics, e.g. `persistent://public/default/events`; a partitioned topic is read
    /// partition by partition.
    pub topics: Vec<String>,
    /// The subscription name.
    pub subscription: String,
    /// `exclusive`, `failover` or `key_shared`.
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    /// Secrets Manager secret holding a JWT (`{"token": ...}` or the bare token), if the
    /// cluster uses token authentication. `PULSAR_AUTH_TOKEN` is the environment fallback.
    #[serde(default)]
    pub token_secret_arn: Option<String>,
}

/// Where a Kinesis shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KinesisStart {
    /// The oldest record in the shard (the default: Bronze keeps everything).
    #[default]
    TrimHorizon,
    /// Only records written after the shard is first leased: that time, recorded in the
    /// state table by the first runner that leases it, and read AT_TIMESTAMP by every later
    /// owner and renewed iterator.
    Latest,
    /// Records from `start_timestamp_ms` on.
    AtTimestamp,
}

/// Kinesis settings: streams, where a shard without a checkpoint starts, shard leases and
/// polling. Leases live in the state table (see `crate::leases`); runners reading the same
/// streams with the same table share the shards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// Stream names.
    pub streams: Vec<String>,
    /// `trim_horizon` (default), `latest` or `at_timestamp`.
    #[serde(default)]
    pub start_from: KinesisStart,
    /// With `at_timestamp`: ms since the epoch.
    #[serde(default)]
    pub start_timestamp_ms: Option<i64>,
    /// How long a lease holds without a heartbeat: a runner that stops renewing loses its
    /// shards to the others after this.
    #[serde(default = "default_lease_ms")]
    pub lease_duration_ms: u64,
    /// How often leases are renewed, taken and balanced (below a third of the lease).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How often ListShards runs: the delay before a new shard (after a reshard) is read.
    #[serde(default = "default_discovery_ms")]
    pub discovery_interval_ms: u64,
    /// The pause after a GetRecords that returned nothing new (at least 200 ms: Kinesis
    /// allows 5 reads per second per shard, shared by every polling consumer).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Records per GetRecords call (at most 10,000).
    #[serde(default = "default_get_records_limit")]
    pub max_records: i32,
    /// Leases taken from other runners per heartbeat when the shards are unevenly spread.
    #[serde(default = "default_steals")]
    pub max_steals_per_heartbeat: usize,
}

fn default_lease_ms() -> u64 {
    10_000
}
fn default_heartbeat_ms() -> u64 {
    3_000
}
fn default_discovery_ms() -> u64 {
    30_000
}
fn default_poll_ms() -> u64 {
    1_000
}
fn default_get_records_limit() -> i32 {
    10_000
}
fn default_steals() -> usize {
    1
}

/// The memory bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Memory held by received and not yet committed records across all partitions: their
    /// payloads, keys and headers plus per-record overhead. Fetching pauses at this mark and
    /// resumes below half of it.
    #[serde(default = "default_buffer_bytes")]
    pub max_bytes: u64,
}

fn default_buffer_bytes() -> u64 {
    256 << 20
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_buffer_bytes(),
        }
    }
}

/// File cuts. Records, bytes and timestamp span come from the input alone, so a replay of
/// the same records cuts the same files. `max_latency_ms` (wall clock) lands a partial file
/// so that a quiet partition is not held back; its key is still `<first>-<last>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Records per file.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Payload bytes per file (before compression).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The span of the records' own timestamps in one file.
    #[serde(default = "default_max_span_ms")]
    pub max_span_ms: i64,
    /// How long the oldest buffered record of a partition may wait.
    #[serde(default = "default_max_latency_ms")]
    pub max_latency_ms: u64,
}

fn default_max_records() -> usize {
    50_000
}
fn default_max_bytes() -> u64 {
    32 << 20
}
fn default_max_span_ms() -> i64 {
    300_000
}
fn default_max_latency_ms() -> u64 {
    30_000
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            max_span_ms: default_max_span_ms(),
            max_latency_ms: default_max_latency_ms(),
        }
    }
}

/// Landing concurrency: an adaptive limit between `min` and `max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// The floor.
    #[serde(default = "default_min")]
    pub min: usize,
    /// The hard ceiling.
    #[serde(default = "default_max")]
    pub max: usize,
    /// The limit at start.
    #[serde(default = "default_initial")]
    pub initial: usize,
    /// Lagging records (high watermark minus checkpoint, summed) that justify one more
    /// permit above the floor: lag raises the ceiling the limit may grow to.
    #[serde(default = "default_lag_per_permit")]
    pub lag_per_permit: u64,
    /// The same for Kinesis shards, whose lag is time (`MillisBehindLatest`, summed over
    /// the leased shards), not records: milliseconds behind that justify one more permit.
    #[serde(default = "default_lag_ms_per_permit")]
    pub lag_ms_per_permit: u64,
}

impl ConcurrencyConfig {
    /// The settings for a source whose lag is measured in milliseconds (Kinesis): the
    /// limiter then counts `lag_ms_per_permit` per permit.
    pub fn for_lag_in_millis(&self) -> Self {
        Self {
            lag_per_permit: self.lag_ms_per_permit,
            ..self.clone()
        }
    }
}

fn default_min() -> usize {
    1
}
fn default_max() -> usize {
    16
}
fn default_initial() -> usize {
    2
}
fn default_lag_per_permit() -> u64 {
    10_000
}
fn default_lag_ms_per_permit() -> u64 {
    5_000
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            min: default_min(),
            max: default_max(),
            initial: default_initial(),
            lag_per_permit: default_lag_per_permit(),
            lag_ms_per_permit: default_lag_ms_per_permit(),
        }
    }
}

/// The HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Port for `/metrics` and `/healthz` (0 picks a free one, logged at start).
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_port() -> u16 {
    9898
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            port: default_port(),
        }
    }
}

impl RunnerConfig {
    /// Parses and validates the connector file's `runner:` section.
    pub fn from_connector(connector: &ConnectorConfig) -> Result<Self, RunnerConfigError> {
        let section = connector
            .runner_section()
            .ok_or(RunnerConfigError::Missing)?;
        let config: RunnerConfig = serde_path_to_error::deserialize(section.clone()).map_err(
            |e: serde_path_to_error::Error<serde_yaml::Error>| {
                let path = e.path().to_string();
                RunnerConfigError::Invalid {
                    field: if path == "." {
                        "runner".into()
                    } else {
                        format!("runner.{path}")
                    },
                    reason: e.into_inner().to_string(),
                }
            },
        )?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), RunnerConfigError> {
        let invalid = |field: &str, reason: &str| {
            Err(RunnerConfigError::Invalid {
                field: format!("runner.{field}"),
                reason: reason.to_owned(),
            })
        };
        if self.kafka.is_none() && self.pulsar.is_none() && self.kinesis.is_none() {
            return invalid("kafka", "configure `kafka`, `pulsar`, `kinesis` or several");
        }
        if let Some(k) = &self.kinesis {
            if k.streams.is_empty() || k.streams.iter().any(|s| s.trim().is_empty()) {
                return invalid("kinesis.streams", "list one or more stream names");
            }
            if k.heartbeat_ms == 0 || k.heartbeat_ms.saturating_mul(3) > k.lease_duration_ms {
                return invalid(
                    "kinesis.heartbeat_ms",
                    "must be above 0 and at most a third of lease_duration_ms",
                );
            }
            if (k.start_from == KinesisStart::AtTimestamp) != k.start_timestamp_ms.is_some() {
                return invalid(
                    "kinesis.start_timestamp_ms",
                    "required with start_from: at_timestamp, and only then",
                );
            }
            if k.poll_interval_ms < 200 {
                return invalid(
                    "kinesis.poll_interval_ms",
                    "at least 200 (Kinesis allows 5 GetRecords per second per shard)",
                );
            }
            if !(1..=10_000).contains(&k.max_records) {
                return invalid("kinesis.max_records", "between 1 and 10000");
            }
        }
        if let Some(k) = &self.kafka {
            if k.bootstrap_servers.trim().is_empty() {
                return invalid("kafka.bootstrap_servers", "must not be empty");
            }
            if k.group_id.trim().is_empty() {
                return invalid("kafka.group_id", "must not be empty");
            }
            if k.topics.is_empty() && k.patterns.is_empty() {
                return invalid("kafka.topics", "list topics, patterns or both");
            }
            if let Some(i) = k.patterns.iter().position(|p| !p.starts_with('^')) {
                return invalid(
                    &format!("kafka.patterns[{i}]"),
                    "a pattern is a regular expression starting with `^`",
                );
            }
            if let Some(i) = k.topics.iter().position(|t| t.starts_with('^')) {
                return invalid(
                    &format!("kafka.topics[{i}]"),
                    "a name starting with `^` is a pattern: list it under `patterns`",
                );
            }
            for key in k.properties.keys() {
                let lower = key.to_ascii_lowercase();
                if lower.contains("password")
                    || lower.contains("sasl.")
                    || lower == "security.protocol"
                    || lower == "group.id"
                    || lower == "enable.auto.commit"
                    || lower == "enable.auto.offset.store"
                {
                    return invalid(
                        &format!("kafka.properties.{key}"),
                        "set by the runner (security, group and offsets have their own \
                         fields; credentials come from Secrets Manager)",
                    );
                }
            }
            let s = &k.security;
            match (s.protocol.is_sasl(), s.mechanism) {
                (true, None) => {
                    return invalid(
                        "kafka.security.mechanism",
                        "required with sasl_plaintext and sasl_ssl",
                    );
                }
                (false, Some(_)) => {
                    return invalid(
                        "kafka.security.protocol",
                        "a SASL mechanism needs protocol sasl_plaintext or sasl_ssl",
                    );
                }
                (true, Some(SaslMechanism::AwsMskIam))
                    if s.protocol != SecurityProtocol::SaslSsl =>
                {
                    return invalid(
                        "kafka.security.protocol",
                        "AWS_MSK_IAM needs sasl_ssl (MSK serves IAM on TLS only)",
                    );
                }
                _ => {}
            }
        }
        if let Some(p) = &self.pulsar {
            if !(p.service_url.starts_with("pulsar://")
                || p.service_url.starts_with("pulsar+ssl://"))
            {
                return invalid(
                    "pulsar.service_url",
                    "expected pulsar://host:port or pulsar+ssl://host:port",
                );
            }
            if p.topics.is_empty() {
                return invalid("pulsar.topics", "must not be empty");
            }
            if p.subscription.trim().is_empty() {
                return invalid("pulsar.subscription", "must not be empty");
            }
        }
        if self.buffer.max_bytes < 1 << 20 {
            return invalid("buffer.max_bytes", "must be at least 1 MiB");
        }
        if self.files.max_records == 0 {
            return invalid("files.max_records", "must be at least 1");
        }
        if self.files.max_bytes == 0 {
            return invalid("files.max_bytes", "must be at least 1");
        }
        if self.files.max_bytes > self.buffer.max_bytes / 2 {
            return invalid(
                "files.max_bytes",
                "must be at most half of buffer.max_bytes, or a single file could stall the buffer",
            );
        }
        if self.files.max_span_ms <= 0 {
            return invalid("files.max_span_ms", "must be positive");
        }
        if self.files.max_latency_ms == 0 {
            return invalid("files.max_latency_ms", "must be positive");
        }
        if self.stall_timeout_ms == 0 {
            return invalid("stall_timeout_ms", "must be positive");
        }
        let c = &self.concurrency;
        if c.min == 0 || c.min > c.max || !(c.min..=c.max).contains(&c.initial) {
            return invalid("concurrency", "need 1 <= min <= initial <= max");
        }
        if c.lag_per_permit == 0 {
            return invalid("concurrency.lag_per_permit", "must be at least 1");
        }
        if c.lag_ms_per_permit == 0 {
            return invalid("concurrency.lag_ms_per_permit", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(runner: &str) -> ConnectorConfig {
        let text = format!(
            r#"
manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: {{layer: bronze}}
runtime: {{kind: runner}}
defaults: {{key_strategy: raw, cursor_strategy: last_landed}}
streams: {{strategy: config_defined}}
runner:
{runner}
"#
        );
        ConnectorConfig::from_yaml(&text).expect("connector file")
    }

    fn error(runner: &str) -> String {
        RunnerConfig::from_connector(&connector(runner))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn full_section_parses() {
        let c = RunnerConfig::from_connector(&connector(
            r#"
  kafka:
    bootstrap_servers: 127.0.0.1:9092
    group_id: bronze
    topics: [orders]
    patterns: ["^events\\..*"]
    security: {protocol: sasl_ssl, mechanism: SCRAM-SHA-512, secret_arn: arn:aws:secretsmanager:eu-west-1:1:secret:AmazonMSK_x}
    properties: {fetch.max.bytes: "1048576"}
  pulsar:
    service_url: pulsar://127.0.0.1:6650
    topics: [persistent://public/default/events]
    subscription: bronze
    subscription_type: key_shared
  buffer: {max_bytes: 67108864}
  files: {max_records: 1000, max_bytes: 1048576, max_span_ms: 60000, max_latency_ms: 5000}
  concurrency: {min: 1, max: 8, initial: 2, lag_per_permit: 100}
  http: {port: 0}
"#,
        ))
        .unwrap();
        let k = c.kafka.unwrap();
        assert_eq!(k.security.mechanism, Some(SaslMechanism::ScramSha512));
        assert_eq!(k.start_from, StartFrom::Earliest);
        assert_eq!(
            c.pulsar.unwrap().subscription_type,
            SubscriptionType::KeyShared
        );
        assert_eq!(c.files.max_records, 1000);
        assert_eq!(c.http.port, 0);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            error(
                "  kafka: {bootstrap_servers: x, group_id: g, topics: [a], security: {protocol: sasl_ssl}}"
            ),
            "runner.kafka.security.mechanism: required with sasl_plaintext and sasl_ssl"
        );
        assert!(
            error("  kafka: {bootstrap_servers: x, group_id: g, topics: [a], security: {protocol: sasl_ssl, mechanism: KERBEROS}}")
                .starts_with("runner.kafka.security.mechanism: unknown variant `KERBEROS`")
        );
        let e = error("  kafka: {bootstrap_servers: x, group_id: g, topic: [a]}");
        assert!(e.contains("unknown field `topic`"), "{e}");
        assert!(
            error("  kafka: {bootstrap_servers: x, group_id: g}")
                .starts_with("runner.kafka.topics:")
        );
        assert!(
            error("  kafka: {bootstrap_servers: x, group_id: g, patterns: [orders]}")
                .starts_with("runner.kafka.patterns[0]:")
        );
        assert!(error("  kafka: {bootstrap_servers: x, group_id: g, topics: [a], properties: {sasl.password: p}}")
            .starts_with("runner.kafka.properties.sasl.password:"));
        assert!(error("  kafka: {bootstrap_servers: x, group_id: g, topics: [a], security: {protocol: sasl_plaintext, mechanism: AWS_MSK_IAM}}")
            .contains("AWS_MSK_IAM needs sasl_ssl"));
        assert!(error("  buffer: {max_bytes: 10}\n  kafka: {bootstrap_servers: x, group_id: g, topics: [a]}")
            .starts_with("runner.buffer.max_bytes:"));
        assert!(error("  http: {port: 1}").starts_with("runner.kafka:"));
        assert!(
            error("  pulsar: {service_url: http://x, topics: [t], subscription: s}")
                .starts_with("runner.pulsar.service_url:")
        );
    }

    #[test]
    fn missing_section_is_an_error() {
        let c = ConnectorConfig::default();
        assert!(matches!(
            RunnerConfig::from_connector(&c),
            Err(RunnerConfigError::Missing)
        ));
    }

    #[test]
    fn kinesis_section_parses_and_is_checked() {
        let c = RunnerConfig::from_connector(&connector(
            "  kinesis:\n    streams: [orders, clicks]\n    start_from: at_timestamp\n    start_timestamp_ms: 1764201600000\n",
        ))
        .unwrap();
        let k = c.kinesis.unwrap();
        assert_eq!(k.streams, ["orders", "clicks"]);
        assert_eq!(k.start_from, KinesisStart::AtTimestamp);
        assert_eq!(k.start_timestamp_ms, Some(1_764_201_600_000));
        assert_eq!((k.lease_duration_ms, k.heartbeat_ms), (10_000, 3_000));
        let c = RunnerConfig::from_connector(&connector(
            "  kinesis:\n    streams: [orders]\n    start_from: latest\n",
        ))
        .unwrap();
        assert_eq!(c.kinesis.unwrap().start_from, KinesisStart::Latest);
        assert!(
            error("  kinesis:\n    streams: []\n").starts_with("runner.kinesis.streams:"),
            "{}",
            error("  kinesis:\n    streams: []\n")
        );
        assert!(
            error("  kinesis:\n    streams: [a]\n    heartbeat_ms: 5000\n")
                .starts_with("runner.kinesis.heartbeat_ms:")
        );
        assert!(
            error("  kinesis:\n    streams: [a]\n    poll_interval_ms: 10\n")
                .starts_with("runner.kinesis.poll_interval_ms:")
        );
        assert!(error("  kinesis:\n    streams: [a]\n    shards: 2\n").contains("shards"));
        assert!(
            error("  kinesis:\n    streams: [a]\n    start_from: at_timestamp\n")
                .starts_with("runner.kinesis.start_timestamp_ms:")
        );
    }
}
