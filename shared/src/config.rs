//! Configuration: the environment of a function and the per-stream YAML connector file.
//!
//! A bad configuration stops start-up with a [`ConfigError`] that names the field.

use crate::compress::{Codec, Compression, LevelOutOfRange};
use crate::record::Source;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The only manifest version this build understands.
pub const MANIFEST_VERSION: &str = "1.0";
/// The connector id the manifest must carry.
pub const CONNECTOR_ID: &str = "conn::global::streaming::kafka_kinesis::consume";

/// A configuration problem, always naming the field or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required environment variable is unset or empty.
    #[error("environment variable {name} is required but not set")]
    MissingEnv {
        /// Variable name.
        name: &'static str,
    },
    /// A variable or field has a value this build cannot accept.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the field, or the variable name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connector file could not be fetched from S3.
    #[error("cannot fetch connector config {uri}: {reason}")]
    Fetch {
        /// The `s3://bucket/key` URI.
        uri: String,
        /// What went wrong.
        reason: String,
    },
    /// The connector file could not be read.
    #[error("cannot read connector config {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How a stream's payload is interpreted when it is landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Must be JSON; a payload that is not is a poison message and goes to the DLQ.
    Json,
    /// Landed as JSON when it parses as JSON, as base64 otherwise. Never poison.
    Auto,
    /// Always landed as base64.
    Bytes,
}

/// How the record key is written into Bronze lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    /// UTF-8 text when the key is valid UTF-8, base64 otherwise. The manifest's
    /// `source_declared_or_config` means the same: the key the source declares (Kafka record
    /// key, Kinesis partition key, Pulsar key), unless a stream's own `key_strategy` says
    /// otherwise.
    #[serde(alias = "source_declared_or_config")]
    Raw,
    /// Always base64.
    Base64,
    /// Only the SHA-256 of the key (hex), for keys that carry personal data.
    Sha256,
    /// The key is not written.
    Drop,
}

/// What the stored checkpoint means. Only one meaning exists; the field is in the manifest
/// so that a file written for another meaning is refused instead of misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorStrategy {
    /// The checkpoint is the cursor of the last landed record of each partition. The
    /// manifest's `partition_offset` names the same per-partition cursor.
    #[serde(alias = "partition_offset")]
    LastLanded,
}

/// Settings that apply to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The logical group the stream belongs to (written into each Bronze line).
    pub group: Option<String>,
    /// Payload interpretation.
    pub payload_format: PayloadFormat,
    /// Key representation.
    pub key_strategy: KeyStrategy,
    /// The ParallelizationFactor landing uses. Above 1, batches of one shard interleave and
    /// the engine switches to its per-batch commit mode. From the connector file this is the
    /// stated value, else 1; the Kinesis function replaces it with the factor of its event
    /// source mapping ([`crate::mappings`]), and the runner forces interleaved mode for Pulsar
    /// Key_Shared. [`ConnectorConfig::declared_parallelization_factor`] tells whether the file
    /// stated it.
    pub parallelization_factor: u32,
    /// The schema payloads must match, if the stream declares one.
    pub schema: Option<StreamSchema>,
    /// The format and level of the stream's Bronze objects (`compression`,
    /// `compression_level`; gzip 6 unless the file says otherwise).
    pub compression: Compression,
}

/// Which registry holds a stream's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryKind {
    /// AWS Glue Schema Registry (`registries.glue`).
    Glue,
    /// A Confluent-compatible REST registry (`registries.confluent`).
    Confluent,
}

/// A stream's schema declaration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSchema {
    /// Which registry.
    pub registry: RegistryKind,
    /// Subject (Confluent) or schema name (Glue).
    pub subject: String,
    /// Avro or JSON Schema.
    pub format: crate::schema::SchemaFormat,
    /// How producers frame payloads with the schema id.
    pub wire_format: crate::wire::WireFormat,
    /// The compatibility mode new versions must satisfy (checked by the connector itself).
    #[serde(default = "default_compatibility")]
    pub compatibility: crate::schema::CompatibilityMode,
    /// The schema definition file, relative to the connector file (for `schema check` and
    /// `schema register`).
    pub definition: Option<String>,
}

fn default_compatibility() -> crate::schema::CompatibilityMode {
    crate::schema::CompatibilityMode::Backward
}

/// Where the registries are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// AWS Glue Schema Registry, reached through the standard SDK configuration.
    pub glue: Option<GlueRegistryConfig>,
    /// A Confluent-compatible REST registry.
    pub confluent: Option<ConfluentRegistryConfig>,
}

/// AWS Glue Schema Registry settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueRegistryConfig {
    /// The Glue registry name.
    pub registry_name: String,
}

/// Confluent-compatible registry settings. Credentials come from `SCHEMA_REGISTRY_USERNAME`
/// and `SCHEMA_REGISTRY_PASSWORD` (or, for compatibility, the URL's user-info); they are
/// never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfluentRegistryConfig {
    /// Base URL, e.g. `https://registry.example.com`.
    pub url: String,
}

impl std::fmt::Debug for ConfluentRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfluentRegistryConfig")
            .field("url", &crate::registry::confluent::redact_url(&self.url))
            .finish()
    }
}

/// Runners a manifest may list in `runtime.supported_runners`.
pub const KNOWN_RUNNERS: &[&str] = &["lambda", "fargate", "ec2"];
/// Network patterns a manifest may list in `runtime.network_patterns`.
pub const KNOWN_NETWORK_PATTERNS: &[&str] = &[
    "private_link",
    "vpc_endpoint",
    "vpc_peering",
    "transit_gateway",
    "nat_gateway",
    "public",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    /// `1.0` as a YAML number or `"1.0"` as a string.
    manifest_version: serde_yaml::Value,
    id: String,
    /// A display name; informational.
    #[serde(default)]
    name: Option<String>,
    taxonomy: HashMap<String, serde_yaml::Value>,
    runtime: RawRuntime,
    /// Stream defaults at the top level (older files); `streams.defaults` is the
    /// specified place.
    #[serde(default)]
    defaults: Option<RawDefaults>,
    streams: RawStreams,
    #[serde(default)]
    registries: Registries,
    /// The runner's section (brokers, subscriptions, buffers); validated by the runner,
    /// which owns its shape. The Lambda functions ignore it.
    #[serde(default)]
    runner: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawRuntime {
    #[serde(default)]
    supported_runners: Option<Vec<String>>,
    #[serde(default)]
    network_patterns: Option<Vec<String>>,
    /// Other descriptive keys (`kind`, `language`, ...) are kept as written.
    #[serde(flatten)]
    other: HashMap<String, serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default = "default_key_strategy")]
    key_strategy: KeyStrategy,
    #[serde(default = "default_cursor_strategy")]
    cursor_strategy: CursorStrategy,
    #[serde(default = "default_payload_format")]
    payload_format: PayloadFormat,
    #[serde(default)]
    compression: Codec,
    #[serde(default)]
    compression_level: Option<u32>,
}

impl Default for RawDefaults {
    fn default() -> Self {
        Self {
            key_strategy: default_key_strategy(),
            cursor_strategy: default_cursor_strategy(),
            payload_format: default_payload_format(),
            compression: Codec::default(),
            compression_level: None,
        }
    }
}

/// A stream's compression: its codec at its own level, else at the defaults' level when the
/// defaults name the same codec (a level belongs to the codec it was given for), else at the
/// codec's default level.
fn compression(
    codec: Codec,
    level: Option<u32>,
    defaults: Option<Compression>,
) -> Result<Compression, LevelOutOfRange> {
    match (level, defaults) {
        (Some(level), _) => Compression::new(codec, level),
        (None, Some(d)) if d.codec() == codec => Ok(d),
        (None, _) => Ok(Compression::of(codec)),
    }
}

fn default_key_strategy() -> KeyStrategy {
    KeyStrategy::Raw
}

fn default_cursor_strategy() -> CursorStrategy {
    CursorStrategy::LastLanded
}

fn default_payload_format() -> PayloadFormat {
    PayloadFormat::Auto
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreams {
    strategy: String,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default = "yes")]
    allow_unlisted: bool,
    #[serde(default)]
    items: Vec<RawStream>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: String,
    source: RawSource,
    group: Option<String>,
    payload_format: Option<PayloadFormat>,
    key_strategy: Option<KeyStrategy>,
    parallelization_factor: Option<u32>,
    schema: Option<StreamSchema>,
    compression: Option<Codec>,
    compression_level: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
enum RawSource {
    Kafka,
    Kinesis,
    Pulsar,
}

impl From<RawSource> for Source {
    fn from(s: RawSource) -> Self {
        match s {
            RawSource::Kafka => Source::Kafka,
            RawSource::Kinesis => Source::Kinesis,
            RawSource::Pulsar => Source::Pulsar,
        }
    }
}

/// The parsed connector file: manifest header plus per-stream settings.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    name: Option<String>,
    supported_runners: Vec<String>,
    network_patterns: Vec<String>,
    cursor_strategy: CursorStrategy,
    registries: Registries,
    defaults: StreamSettings,
    allow_unlisted: bool,
    streams: HashMap<(Source, String), StreamSettings>,
    /// The factors the file states explicitly (absent: not stated, 1 by default).
    declared_factors: HashMap<(Source, String), u32>,
    runner: Option<serde_yaml::Value>,
}

impl Default for ConnectorConfig {
    /// The configuration used when no file is given: every stream lands with `auto`
    /// payloads and raw keys.
    fn default() -> Self {
        Self {
            name: None,
            supported_runners: Vec::new(),
            network_patterns: Vec::new(),
            cursor_strategy: CursorStrategy::LastLanded,
            registries: Registries::default(),
            defaults: StreamSettings {
                group: None,
                payload_format: PayloadFormat::Auto,
                key_strategy: KeyStrategy::Raw,
                parallelization_factor: 1,
                schema: None,
                compression: Compression::default(),
            },
            allow_unlisted: true,
            streams: HashMap::new(),
            declared_factors: HashMap::new(),
            runner: None,
        }
    }
}

impl ConnectorConfig {
    /// Parses and validates a connector file's text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawManifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                field: if path == "." {
                    "<document>".into()
                } else {
                    path
                },
                reason: e.into_inner().to_string(),
            }
        })?;
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            field: field.to_owned(),
            reason,
        };
        let version_ok = match &raw.manifest_version {
            serde_yaml::Value::String(v) => v == MANIFEST_VERSION || v == "1",
            serde_yaml::Value::Number(n) => n.as_f64() == Some(1.0),
            _ => false,
        };
        if !version_ok {
            return Err(invalid(
                "manifest_version",
                format!(
                    "expected {MANIFEST_VERSION}, found {}",
                    serde_yaml::to_string(&raw.manifest_version)
                        .unwrap_or_default()
                        .trim()
                ),
            ));
        }
        if raw.id != CONNECTOR_ID {
            return Err(invalid(
                "id",
                format!("expected {CONNECTOR_ID:?}, found {:?}", raw.id),
            ));
        }
        if raw.taxonomy.is_empty() {
            return Err(invalid("taxonomy", "must not be empty".into()));
        }
        let runtime_list = |field: &str, values: Option<Vec<String>>, known: &[&str]| {
            let values = values.unwrap_or_default();
            match values.iter().find(|v| !known.contains(&v.as_str())) {
                Some(bad) => Err(invalid(
                    &format!("runtime.{field}"),
                    format!("unknown value {bad:?}; expected any of {known:?}"),
                )),
                None => Ok(values),
            }
        };
        if raw.runtime.supported_runners.is_none()
            && raw.runtime.network_patterns.is_none()
            && raw.runtime.other.is_empty()
        {
            return Err(invalid("runtime", "must not be empty".into()));
        }
        let supported_runners = runtime_list(
            "supported_runners",
            raw.runtime.supported_runners,
            KNOWN_RUNNERS,
        )?;
        let network_patterns = runtime_list(
            "network_patterns",
            raw.runtime.network_patterns,
            KNOWN_NETWORK_PATTERNS,
        )?;
        let defaults_field = if raw.defaults.is_some() {
            "defaults"
        } else {
            "streams.defaults"
        };
        let raw_defaults = match (raw.defaults, raw.streams.defaults) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "defaults",
                    "stream defaults are given twice, at the top level and in streams.defaults: keep only streams.defaults".into(),
                ));
            }
            (Some(d), None) | (None, Some(d)) => d,
            (None, None) => RawDefaults::default(),
        };
        if raw.streams.strategy != "config_defined" {
            return Err(invalid(
                "streams.strategy",
                format!(
                    "expected \"config_defined\", found {:?}",
                    raw.streams.strategy
                ),
            ));
        }
        let defaults = StreamSettings {
            group: None,
            payload_format: raw_defaults.payload_format,
            key_strategy: raw_defaults.key_strategy,
            parallelization_factor: 1,
            schema: None,
            compression: compression(
                raw_defaults.compression,
                raw_defaults.compression_level,
                None,
            )
            .map_err(|e| {
                invalid(
                    &format!("{defaults_field}.compression_level"),
                    e.to_string(),
                )
            })?,
        };
        let mut streams = HashMap::new();
        let mut declared_factors = HashMap::new();
        for (i, s) in raw.streams.items.into_iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(invalid(
                    &format!("streams.items[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            let pf = s.parallelization_factor.unwrap_or(1);
            if !(1..=10).contains(&pf) {
                return Err(invalid(
                    &format!("streams.items[{i}].parallelization_factor"),
                    format!("must be between 1 and 10, found {pf}"),
                ));
            }
            if pf > 1 && s.source != RawSource::Kinesis {
                return Err(invalid(
                    &format!("streams.items[{i}].parallelization_factor"),
                    "only Kinesis streams have a parallelization factor".into(),
                ));
            }
            let settings = StreamSettings {
                group: s.group,
                payload_format: s.payload_format.unwrap_or(defaults.payload_format),
                key_strategy: s.key_strategy.unwrap_or(defaults.key_strategy),
                parallelization_factor: pf,
                schema: s.schema,
                compression: compression(
                    s.compression.unwrap_or(defaults.compression.codec()),
                    s.compression_level,
                    Some(defaults.compression),
                )
                .map_err(|e| {
                    invalid(
                        &format!("streams.items[{i}].compression_level"),
                        e.to_string(),
                    )
                })?,
            };
            if let Some(schema) = &settings.schema {
                let field = |f: &str| format!("streams.items[{i}].schema.{f}");
                if schema.subject.trim().is_empty() {
                    return Err(invalid(&field("subject"), "must not be empty".into()));
                }
                let configured = match schema.registry {
                    RegistryKind::Glue => raw.registries.glue.is_some(),
                    RegistryKind::Confluent => raw.registries.confluent.is_some(),
                };
                if !configured {
                    return Err(invalid(
                        &field("registry"),
                        format!(
                            "registries.{} is not configured",
                            match schema.registry {
                                RegistryKind::Glue => "glue",
                                RegistryKind::Confluent => "confluent",
                            }
                        ),
                    ));
                }
            }
            if let Some(declared) = s.parallelization_factor {
                declared_factors.insert((s.source.into(), s.name.clone()), declared);
            }
            if streams
                .insert((s.source.into(), s.name.clone()), settings)
                .is_some()
            {
                return Err(invalid(
                    &format!("streams.items[{i}].name"),
                    format!("stream {:?} is listed twice", s.name),
                ));
            }
        }
        Ok(Self {
            name: raw.name,
            supported_runners,
            network_patterns,
            cursor_strategy: raw_defaults.cursor_strategy,
            registries: raw.registries,
            defaults,
            allow_unlisted: raw.streams.allow_unlisted,
            streams,
            declared_factors,
            runner: raw.runner,
        })
    }

    /// Reads and validates a connector file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Where the schema registries are.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Every listed stream with its settings, for commands that walk the file.
    pub fn streams(&self) -> impl Iterator<Item = (Source, &str, &StreamSettings)> {
        self.streams
            .iter()
            .map(|((source, name), s)| (*source, name.as_str(), s))
    }

    /// The manifest's display name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `runtime.supported_runners` (validated against [`KNOWN_RUNNERS`]).
    pub fn supported_runners(&self) -> &[String] {
        &self.supported_runners
    }

    /// `runtime.network_patterns` (validated against [`KNOWN_NETWORK_PATTERNS`]).
    pub fn network_patterns(&self) -> &[String] {
        &self.network_patterns
    }

    /// The file's `runner:` section as written, for the runner to parse and validate.
    pub fn runner_section(&self) -> Option<&serde_yaml::Value> {
        self.runner.as_ref()
    }

    /// What stored checkpoints mean.
    pub fn cursor_strategy(&self) -> CursorStrategy {
        self.cursor_strategy
    }

    /// The parallelization factor the file states for a stream, `None` when it states none
    /// (the stream is unlisted, or listed without `parallelization_factor`). A stated factor
    /// is only a copy of the mapping's: the Kinesis function checks it against the mapping
    /// and refuses to land when they differ ([`crate::mappings::effective_mode`]).
    pub fn declared_parallelization_factor(&self, source: Source, stream: &str) -> Option<u32> {
        self.declared_factors
            .get(&(source, stream.to_owned()))
            .copied()
    }

    /// Settings for a stream, or `None` when the stream is not listed and unlisted streams
    /// are refused.
    pub fn stream(&self, source: Source, stream: &str) -> Option<&StreamSettings> {
        match self.streams.get(&(source, stream.to_owned())) {
            Some(s) => Some(s),
            None if self.allow_unlisted => Some(&self.defaults),
            None => None,
        }
    }
}

/// Settings every Lambda function reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    /// `BRONZE_BUCKET`: where objects land.
    pub bucket: String,
    /// `BRONZE_PREFIX`: key prefix inside the bucket (default `bronze`).
    pub prefix: String,
    /// `STATE_TABLE`: the DynamoDB state registry.
    pub state_table: String,
    /// `DLQ_URL`: the SQS dead-letter queue.
    pub dlq_url: String,
    /// `CONNECTOR_CONFIG`: the YAML connector file, if any: a local path, or
    /// `s3://bucket/key` (how a deployed function gets it).
    pub connector_config: Option<String>,
    /// `KAFKA_PARTIAL_BATCH_RESPONSE`: answer Kafka batches with `batchItemFailures`
    /// instead of failing the invocation (only when the mapping enables it).
    pub kafka_partial_batch_response: bool,
    /// `BRONZE_MULTIPART_THRESHOLD_BYTES` and `BRONZE_MULTIPART_PART_BYTES`: when objects are
    /// uploaded in parts.
    pub multipart: Multipart,
}

/// When the Bronze bucket adapter uploads an object as a multipart upload instead of one
/// `PutObject`: objects of at least `threshold` bytes go up in parts of `part_size` bytes (the
/// last one shorter), several at once, and are completed with `If-None-Match: *`, so they stay
/// conditional exactly like a single put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart {
    /// Objects this large or larger are uploaded in parts.
    pub threshold: usize,
    /// The size of every part but the last (S3 requires at least 5 MiB).
    pub part_size: usize,
    /// Parts uploaded at once.
    pub concurrency: usize,
}

impl Multipart {
    /// S3's smallest part (every part but the last).
    pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
    /// S3's largest number of parts in one upload.
    pub const MAX_PARTS: usize = 10_000;

    /// Reads `BRONZE_MULTIPART_THRESHOLD_BYTES` (default 16 MiB) and
    /// `BRONZE_MULTIPART_PART_BYTES` (default 8 MiB, at least 5 MiB, at most the threshold).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bytes = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match lookup(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                    field: name.into(),
                    reason: format!("expected a number of bytes, found {v:?}"),
                }),
            }
        };
        let defaults = Self::default();
        let threshold = bytes("BRONZE_MULTIPART_THRESHOLD_BYTES", defaults.threshold)?;
        let part_size = bytes("BRONZE_MULTIPART_PART_BYTES", defaults.part_size)?;
        if part_size < Self::MIN_PART_SIZE {
            return Err(ConfigError::Invalid {
                field: "BRONZE_MULTIPART_PART_BYTES".into(),
                reason: format!(
                    "{part_size} is below S3's smallest part, {} bytes",
                    Self::MIN_PART_SIZE
                ),
            });
        }
        if threshold < part_size {
            return Err(ConfigError::Invalid {
                field: "BRONZE_MULTIPART_THRESHOLD_BYTES".into(),
                reason: format!(
                    "{threshold} is below the part size ({part_size}): an object of one part is a plain PutObject"
                ),
            });
        }
        Ok(Self {
            threshold,
            part_size,
            concurrency: defaults.concurrency,
        })
    }

    /// The part size for an object of `len` bytes: `part_size`, raised when the object would
    /// otherwise need more than S3's 10,000 parts.
    pub fn part_size_for(&self, len: usize) -> usize {
        self.part_size.max(len.div_ceil(Self::MAX_PARTS))
    }
}

impl Default for Multipart {
    fn default() -> Self {
        Self {
            threshold: 16 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            concurrency: 4,
        }
    }
}

impl EnvConfig {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::MissingEnv { name })
        };
        let prefix = lookup("BRONZE_PREFIX").unwrap_or_else(|| "bronze".to_owned());
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.is_empty() || prefix.contains("//") {
            return Err(ConfigError::Invalid {
                field: "BRONZE_PREFIX".into(),
                reason: "must be a non-empty key prefix without empty segments".into(),
            });
        }
        let kafka_partial_batch_response = match lookup("KAFKA_PARTIAL_BATCH_RESPONSE").as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "KAFKA_PARTIAL_BATCH_RESPONSE".into(),
                    reason: format!("expected true or false, found {other:?}"),
                });
            }
        };
        Ok(Self {
            bucket: required("BRONZE_BUCKET")?,
            prefix,
            state_table: required("STATE_TABLE")?,
            dlq_url: required("DLQ_URL")?,
            connector_config: lookup("CONNECTOR_CONFIG").filter(|v| !v.is_empty()),
            kafka_partial_batch_response,
            multipart: Multipart::from_lookup(&lookup)?,
        })
    }

    /// Where `CONNECTOR_CONFIG` points.
    pub fn connector_location(&self) -> ConnectorLocation<'_> {
        match self.connector_config.as_deref() {
            None => ConnectorLocation::Defaults,
            Some(uri) => match uri
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
            {
                Some((bucket, key)) => ConnectorLocation::S3 { uri, bucket, key },
                None => ConnectorLocation::File(Path::new(uri)),
            },
        }
    }
}

/// Where the connector file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorLocation<'a> {
    /// No file: every stream lands with the defaults.
    Defaults,
    /// A local file.
    File(&'a Path),
    /// An S3 object.
    S3 {
        /// The full URI, for error messages.
        uri: &'a str,
        /// Bucket.
        bucket: &'a str,
        /// Key.
        key: &'a str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: { layer: bronze, domain: streaming }
runtime: { kind: lambda, language: rust }
defaults: { key_strategy: raw, cursor_strategy: last_landed }
streams:
  strategy: config_defined
  items:
    - { name: orders, source: kafka, group: commerce, payload_format: json }
    - { name: clicks, source: kinesis, payload_format: bytes, key_strategy: sha256, parallelization_factor: 2 }
"#;

    #[test]
    fn compression_defaults_and_per_stream() {
        let c = ConnectorConfig::from_yaml(GOOD).unwrap();
        assert_eq!(
            c.stream(Source::Kafka, "orders").unwrap().compression,
            Compression::new(Codec::Gzip, 6).unwrap(),
            "gzip 6 when the file says nothing"
        );
        let file = GOOD
            .replace(
                "cursor_strategy: last_landed }",
                "cursor_strategy: last_landed, compression: gzip, compression_level: 9 }",
            )
            .replace(
                "payload_format: json }",
                "payload_format: json, compression: zstd }",
            )
            .replace(
                "parallelization_factor: 2 }",
                "parallelization_factor: 2, compression_level: 4 }",
            );
        let c = ConnectorConfig::from_yaml(&file).unwrap();
        // A level belongs to the codec it was given for: zstd does not inherit gzip's 9.
        assert_eq!(
            c.stream(Source::Kafka, "orders").unwrap().compression,
            Compression::new(Codec::Zstd, 3).unwrap()
        );
        assert_eq!(
            c.stream(Source::Kinesis, "clicks").unwrap().compression,
            Compression::new(Codec::Gzip, 4).unwrap()
        );
        assert_eq!(
            c.stream(Source::Kafka, "unlisted").unwrap().compression,
            Compression::new(Codec::Gzip, 9).unwrap()
        );
        for (bad, field, reason) in [
            (
                "payload_format: json, compression: zstd, compression_level: 20 }",
                "streams.items[0].compression_level",
                "zstd has no level 20: expected 1 to 19",
            ),
            (
                "payload_format: json, compression_level: 0 }",
                "streams.items[0].compression_level",
                "gzip has no level 0: expected 1 to 12",
            ),
        ] {
            let err = ConnectorConfig::from_yaml(&GOOD.replace("payload_format: json }", bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(reason), "{bad}: {err}");
        }
        let err = ConnectorConfig::from_yaml(&GOOD.replace(
            "payload_format: json }",
            "payload_format: json, compression: lz4 }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("streams.items[0].compression") && err.contains("gzip"),
            "{err}"
        );
        let err = ConnectorConfig::from_yaml(&GOOD.replace(
            "cursor_strategy: last_landed }",
            "cursor_strategy: last_landed, compression_level: 13 }",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("gzip has no level 13"), "{err}");
    }

    #[test]
    fn parses_manifest_and_streams() {
        let c = ConnectorConfig::from_yaml(GOOD).unwrap();
        let orders = c.stream(Source::Kafka, "orders").unwrap();
        assert_eq!(orders.payload_format, PayloadFormat::Json);
        assert_eq!(orders.group.as_deref(), Some("commerce"));
        let clicks = c.stream(Source::Kinesis, "clicks").unwrap();
        assert_eq!(clicks.key_strategy, KeyStrategy::Sha256);
        assert_eq!(clicks.parallelization_factor, 2);
        // Stated, not stated, and unlisted.
        assert_eq!(
            c.declared_parallelization_factor(Source::Kinesis, "clicks"),
            Some(2)
        );
        assert_eq!(
            c.declared_parallelization_factor(Source::Kafka, "orders"),
            None
        );
        assert_eq!(
            c.declared_parallelization_factor(Source::Kinesis, "other"),
            None
        );
        let one = ConnectorConfig::from_yaml(
            &GOOD.replace("parallelization_factor: 2", "parallelization_factor: 1"),
        )
        .unwrap();
        assert_eq!(
            one.declared_parallelization_factor(Source::Kinesis, "clicks"),
            Some(1),
            "an explicit 1 is stated, not defaulted"
        );
        // Unlisted streams get the defaults.
        assert_eq!(
            c.stream(Source::Kafka, "other").unwrap().payload_format,
            PayloadFormat::Auto
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                GOOD.replace("payload_format: json", "payload_format: xml"),
                "streams.items[0].payload_format",
            ),
            (GOOD.replace("\"1.0\"", "\"2.0\""), "manifest_version"),
            (
                GOOD.replace("config_defined", "discovered"),
                "streams.strategy",
            ),
            (
                GOOD.replace("last_landed", "next_to_read"),
                "defaults.cursor_strategy",
            ),
            (
                GOOD.replace("parallelization_factor: 2", "parallelization_factor: 11"),
                "streams.items[1].parallelization_factor",
            ),
            (
                GOOD.replace("group: commerce", "grup: commerce"),
                "streams.items[0]",
            ),
            (GOOD.replace("id: conn", "id: xconn"), "id"),
        ];
        for (text, field) in cases {
            let err = ConnectorConfig::from_yaml(&text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(field),
                "expected error naming {field}, got: {msg}"
            );
        }
    }

    #[test]
    fn unlisted_streams_can_be_refused() {
        let text = GOOD.replace(
            "strategy: config_defined",
            "strategy: config_defined\n  allow_unlisted: false",
        );
        let c = ConnectorConfig::from_yaml(&text).unwrap();
        assert!(c.stream(Source::Kafka, "other").is_none());
        assert!(c.stream(Source::Kafka, "orders").is_some());
    }

    #[test]
    fn multipart_settings_from_env() {
        let read = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Multipart::from_lookup(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert_eq!(read(&[]).unwrap(), Multipart::default());
        let m = read(&[
            ("BRONZE_MULTIPART_THRESHOLD_BYTES", "6291456"),
            ("BRONZE_MULTIPART_PART_BYTES", "5242880"),
        ])
        .unwrap();
        assert_eq!((m.threshold, m.part_size), (6_291_456, 5_242_880));
        let err = read(&[("BRONZE_MULTIPART_PART_BYTES", "1048576")]).unwrap_err();
        assert!(
            err.to_string().contains("BRONZE_MULTIPART_PART_BYTES"),
            "{err}"
        );
        let err = read(&[("BRONZE_MULTIPART_THRESHOLD_BYTES", "5242880")]).unwrap_err();
        assert!(
            err.to_string().contains("BRONZE_MULTIPART_THRESHOLD_BYTES"),
            "{err}"
        );
        let err = read(&[("BRONZE_MULTIPART_THRESHOLD_BYTES", "16M")]).unwrap_err();
        assert!(err.to_string().contains("16M"), "{err}");
        // Never more than S3's 10,000 parts.
        let m = Multipart::default();
        assert_eq!(m.part_size_for(1024), m.part_size);
        let huge: usize = 200 * 1024 * 1024 * 1024;
        assert!(huge.div_ceil(m.part_size_for(huge)) <= Multipart::MAX_PARTS);
    }

    #[test]
    fn connector_location_from_env() {
        let with = |v: Option<&str>| EnvConfig {
            bucket: "b".into(),
            prefix: "p".into(),
            state_table: "t".into(),
            dlq_url: "q".into(),
            connector_config: v.map(str::to_owned),
            kafka_partial_batch_response: false,
            multipart: Multipart::default(),
        };
        assert_eq!(with(None).connector_location(), ConnectorLocation::Defaults);
        assert_eq!(
            with(Some("config/c.yaml")).connector_location(),
            ConnectorLocation::File(Path::new("config/c.yaml"))
        );
        assert_eq!(
            with(Some("s3://cfg/connectors/c.yaml")).connector_location(),
            ConnectorLocation::S3 {
                uri: "s3://cfg/connectors/c.yaml",
                bucket: "cfg",
                key: "connectors/c.yaml"
            }
        );
    }

    #[test]
    fn env_requires_bucket_table_and_queue() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let err =
            EnvConfig::from_lookup(env(&[("STATE_TABLE", "t"), ("DLQ_URL", "q")])).unwrap_err();
        assert!(err.to_string().contains("BRONZE_BUCKET"));
        let ok = EnvConfig::from_lookup(env(&[
            ("BRONZE_BUCKET", "b"),
            ("STATE_TABLE", "t"),
            ("DLQ_URL", "q"),
            ("BRONZE_PREFIX", "/raw/"),
        ]))
        .unwrap();
        assert_eq!(ok.prefix, "raw");
        let err = EnvConfig::from_lookup(env(&[
            ("BRONZE_BUCKET", "b"),
            ("STATE_TABLE", "t"),
            ("DLQ_URL", "q"),
            ("KAFKA_PARTIAL_BATCH_RESPONSE", "yes"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("KAFKA_PARTIAL_BATCH_RESPONSE"));
    }

    /// The manifest exactly as the specification gives it, with `streams.items` added.
    const SPECIFIED: &str = r#"
manifest_version: 1.0
id: conn::global::streaming::kafka_kinesis::consume
name: Global Streaming Connector
taxonomy:
  origin: enterprise
  source: streaming
  provider: generic
  product: streams
  method: consume
runtime:
  supported_runners: [fargate, ec2]
  network_patterns: [private_link, vpc_endpoint]
streams:
  strategy: config_defined
  defaults:
    key_strategy: source_declared_or_config
    cursor_strategy: partition_offset
  items:
    - { name: orders, source: kafka, key_strategy: sha256 }
    - { name: clicks, source: kinesis }
"#;

    #[test]
    fn the_specified_manifest_is_accepted_and_means_what_it_says() {
        let c = ConnectorConfig::from_yaml(SPECIFIED).unwrap();
        assert_eq!(c.name(), Some("Global Streaming Connector"));
        assert_eq!(c.supported_runners(), ["fargate", "ec2"]);
        assert_eq!(c.network_patterns(), ["private_link", "vpc_endpoint"]);
        assert_eq!(c.cursor_strategy(), CursorStrategy::LastLanded);
        // source_declared_or_config: the source's key, unless the stream says otherwise.
        let clicks = c.stream(Source::Kinesis, "clicks").unwrap();
        assert_eq!(clicks.key_strategy, KeyStrategy::Raw);
        let orders = c.stream(Source::Kafka, "orders").unwrap();
        assert_eq!(orders.key_strategy, KeyStrategy::Sha256);
        assert_eq!(
            c.stream(Source::Kafka, "unlisted").unwrap().key_strategy,
            KeyStrategy::Raw
        );
        // A quoted version is the same version.
        assert!(
            ConnectorConfig::from_yaml(
                &SPECIFIED.replace("manifest_version: 1.0", "manifest_version: \"1.0\"")
            )
            .is_ok()
        );
    }

    #[test]
    fn manifest_errors_name_the_field() {
        for (text, field) in [
            (
                SPECIFIED.replace("manifest_version: 1.0", "manifest_version: 2.0"),
                "manifest_version",
            ),
            (
                SPECIFIED.replace("[fargate, ec2]", "[fargate, mainframe]"),
                "runtime.supported_runners",
            ),
            (
                SPECIFIED.replace("[private_link, vpc_endpoint]", "[carrier_pigeon]"),
                "runtime.network_patterns",
            ),
            (
                SPECIFIED.replace("partition_offset", "wall_clock"),
                "streams.defaults.cursor_strategy",
            ),
            (
                format!("{SPECIFIED}defaults: {{key_strategy: raw}}\n"),
                "defaults",
            ),
        ] {
            let err = ConnectorConfig::from_yaml(&text).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }
}
