//! Event source mappings: where a Kinesis function learns each stream's ParallelizationFactor.
//!
//! With a factor above 1, Lambda delivers several batches of one shard at once ("lanes",
//! records grouped by partition key), and ordered mode's shard-wide "last landed" checkpoint
//! would skip the other lanes' records as already landed: silent loss. The factor therefore
//! comes from the function's own mappings (`lambda:ListEventSourceMappings`), never from a
//! hand-kept copy; the connector file may repeat it, and a file that disagrees is an error.
//!
//! - [`MappingSource`] is the port; [`LambdaMappings`] reads the Lambda API and
//!   [`MemoryMappings`] is the in-memory adapter for tests.
//! - [`effective_mode`] is the pure decision: declared factor plus what the mapping says
//!   gives the landing mode, or the mismatch error.
//! - [`MappingFactors`] caches the mappings per execution environment: read at init, again
//!   for an event source not seen since the last read, and after the refresh interval.

use crate::config::{ConfigError, StreamSettings};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The largest ParallelizationFactor Lambda accepts. An interleaved mode whose factor is not
/// known lands as if the mapping had this one (the engine only asks "above 1?").
pub const MAX_PARALLELIZATION_FACTOR: u32 = 10;

/// How often the mappings are read again (`BRONZE_MAPPING_REFRESH_SECONDS`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Why the factor could not be learned, or why the learned one cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Neither `BRONZE_FUNCTION_NAME` nor `AWS_LAMBDA_FUNCTION_NAME` is set, so there is no
    /// function whose mappings could be listed. Lands in interleaved mode.
    #[error(
        "the function name is unknown (neither BRONZE_FUNCTION_NAME nor AWS_LAMBDA_FUNCTION_NAME is set)"
    )]
    NoFunctionName,
    /// Listing failed (permission missing, API failure). Lands in interleaved mode.
    #[error("cannot list the event source mappings of {function}: {reason}")]
    Unreadable {
        /// The function name or ARN asked about.
        function: String,
        /// What the API said.
        reason: String,
    },
    /// The connector file states a factor the mapping does not have. Permanent: every
    /// invocation fails (nothing lands) until one of the two is changed.
    #[error(
        "stream {stream}: the connector file says parallelization_factor {declared} but the event source mapping of {function} has ParallelizationFactor {mapping}; remove parallelization_factor from the connector file (the function reads it from the mapping) or make the two equal"
    )]
    FactorMismatch {
        /// The stream.
        stream: String,
        /// What the connector file states.
        declared: u32,
        /// What the mapping has.
        mapping: u32,
        /// The function whose mapping was read.
        function: String,
    },
}

/// One event source mapping of this function, as far as landing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The mapping's event source: a stream ARN or a stream consumer ARN (enhanced fan-out).
    pub event_source_arn: String,
    /// Its ParallelizationFactor; `None` when the API leaves it out (Lambda's default, 1).
    pub parallelization_factor: Option<u32>,
}

/// Where the function's event source mappings are read.
#[async_trait]
pub trait MappingSource: Send + Sync + std::fmt::Debug {
    /// Every mapping of the function, or why they cannot be read.
    async fn mappings(&self) -> Result<Vec<Mapping>, MappingError>;

    /// The function whose mappings these are, for messages.
    fn function(&self) -> &str;
}

/// The stream ARN an event source ARN belongs to: a stream consumer ARN
/// (`.../stream/<name>/consumer/<consumer>:<n>`) becomes its stream's ARN, so that a
/// mapping through enhanced fan-out matches the records' `eventSourceARN`.
pub fn stream_arn(event_source_arn: &str) -> &str {
    match event_source_arn.find(":stream/") {
        Some(at) => {
            let name_start = at + ":stream/".len();
            match event_source_arn[name_start..].find('/') {
                Some(end) => &event_source_arn[..name_start + end],
                None => event_source_arn,
            }
        }
        None => event_source_arn,
    }
}

/// The landing mode of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandingMode {
    /// One batch of a shard at a time: the checkpoint skips what is landed.
    Ordered,
    /// Batches of a shard interleave (lanes): nothing is skipped by the checkpoint.
    Interleaved {
        /// The mapping's factor, `None` when it could not be read.
        factor: Option<u32>,
    },
}

impl LandingMode {
    /// The factor to land with ([`StreamSettings::parallelization_factor`], which selects
    /// the engine's mode).
    pub fn settings_factor(self) -> u32 {
        match self {
            LandingMode::Ordered => 1,
            LandingMode::Interleaved { factor } => factor
                .filter(|f| *f > 1)
                .unwrap_or(MAX_PARALLELIZATION_FACTOR),
        }
    }

    /// Sets the stream's settings to land in this mode.
    pub fn apply(self, settings: &mut StreamSettings) {
        settings.parallelization_factor = self.settings_factor();
    }
}

/// What the mappings say about one stream.
pub type Learned = Result<Option<u32>, MappingError>;

/// The landing mode from the factor the connector file declares (if any) and what the
/// mapping says (`Ok(Some(factor))`; `Ok(None)`: no mapping of this function reads the
/// stream, i.e. a direct invocation; `Err`: the mappings cannot be read).
///
/// - The mapping's factor decides; a declared factor must equal it
///   ([`MappingError::FactorMismatch`] otherwise, with `stream` and `function` left empty for
///   the caller to fill in).
/// - No mapping for the stream: the declared factor (1 when absent) decides.
/// - Unreadable: interleaved, whatever the file says. Never a guess of 1: interleaved mode
///   never skips, so at worst it lands a documented duplicate, never loses a record.
pub fn effective_mode(
    declared: Option<u32>,
    learned: &Learned,
) -> Result<LandingMode, MappingError> {
    let by_factor = |factor: u32| {
        if factor > 1 {
            LandingMode::Interleaved {
                factor: Some(factor),
            }
        } else {
            LandingMode::Ordered
        }
    };
    match learned {
        Ok(Some(mapping)) => match declared {
            Some(declared) if declared != *mapping => Err(MappingError::FactorMismatch {
                stream: String::new(),
                declared,
                mapping: *mapping,
                function: String::new(),
            }),
            _ => Ok(by_factor(*mapping)),
        },
        Ok(None) => Ok(by_factor(declared.unwrap_or(1))),
        Err(_) => Ok(LandingMode::Interleaved {
            factor: declared.filter(|d| *d > 1),
        }),
    }
}

/// The Lambda API adapter: `ListEventSourceMappings` for one function (paginated).
#[derive(Debug, Clone)]
pub struct LambdaMappings {
    client: aws_sdk_lambda::Client,
    function: Option<String>,
}

impl LambdaMappings {
    /// Lists the mappings of `function` (a name, or a version or alias ARN); `None` when the
    /// name is unknown.
    pub fn new(config: &aws_config::SdkConfig, function: Option<String>) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(config),
            function,
        }
    }
}

#[async_trait]
impl MappingSource for LambdaMappings {
    async fn mappings(&self) -> Result<Vec<Mapping>, MappingError> {
        let function = self
            .function
            .as_deref()
            .ok_or(MappingError::NoFunctionName)?;
        let unreadable = |reason: String| MappingError::Unreadable {
            function: function.to_owned(),
            reason,
        };
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page =
                self.client
                    .list_event_source_mappings()
                    .function_name(function)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| {
                        use aws_sdk_lambda::error::ProvideErrorMetadata as _;
                        unreadable(match e.as_service_error() {
                            Some(service) => format!(
                                "{}: {}",
                                service.code().unwrap_or("Unknown"),
                                service.message().unwrap_or_default()
                            ),
                            None => aws_smithy_types::error::display::DisplayErrorContext(&e)
                                .to_string(),
                        })
                    })?;
            for m in page.event_source_mappings() {
                if let Some(arn) = m.event_source_arn() {
                    out.push(Mapping {
                        event_source_arn: arn.to_owned(),
                        parallelization_factor: m
                            .parallelization_factor()
                            .and_then(|f| u32::try_from(f).ok()),
                    });
                }
            }
            match page.next_marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    fn function(&self) -> &str {
        self.function.as_deref().unwrap_or("<unknown function>")
    }
}

/// In-memory mappings whose answer a test sets (and changes) at will.
#[derive(Debug)]
pub struct MemoryMappings {
    answer: std::sync::Mutex<Result<Vec<Mapping>, MappingError>>,
    reads: std::sync::atomic::AtomicUsize,
}

impl MemoryMappings {
    /// Mappings that answer `answer`.
    pub fn new(answer: Result<Vec<Mapping>, MappingError>) -> Self {
        Self {
            answer: std::sync::Mutex::new(answer),
            reads: Default::default(),
        }
    }

    /// Changes the answer (a mapping updated, or permission removed).
    pub fn set(&self, answer: Result<Vec<Mapping>, MappingError>) {
        *self.answer.lock().expect("memory mappings lock") = answer;
    }

    /// How many times the mappings were read.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl MappingSource for MemoryMappings {
    async fn mappings(&self) -> Result<Vec<Mapping>, MappingError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.answer.lock().expect("memory mappings lock").clone()
    }

    fn function(&self) -> &str {
        "memory"
    }
}

/// Where the mappings are read and how often, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingSettings {
    /// `BRONZE_FUNCTION_NAME`, else `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda). The first
    /// also takes a version or alias ARN, for a mapping on an alias.
    pub function: Option<String>,
    /// `BRONZE_MAPPING_REFRESH_SECONDS` (default 300).
    pub refresh: Duration,
}

impl MappingSettings {
    /// Reads the settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let function = set("BRONZE_FUNCTION_NAME").or_else(|| set("AWS_LAMBDA_FUNCTION_NAME"));
        let refresh = match set("BRONZE_MAPPING_REFRESH_SECONDS") {
            None => DEFAULT_REFRESH,
            Some(v) => Duration::from_secs(v.trim().parse().map_err(|_| ConfigError::Invalid {
                field: "BRONZE_MAPPING_REFRESH_SECONDS".into(),
                reason: format!("expected a whole number of seconds, found {v:?}"),
            })?),
        };
        Ok(Self { function, refresh })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The factor was read from a mapping.
#[derive(Debug)]
pub struct FactorLearned<'a> {
    /// The function.
    pub function: &'a str,
    /// The stream ARN.
    pub stream_arn: &'a str,
    /// The mapping's factor.
    pub factor: u32,
}

impl FactorLearned<'_> {
    /// Logs the event.
    pub fn emit(&self) {
        tracing::info!(
            function = self.function,
            stream_arn = self.stream_arn,
            factor = self.factor,
            "parallelization factor learned from the event source mapping"
        );
    }
}

/// The mappings cannot be read: Kinesis lands in interleaved mode. Emitted once per
/// execution environment (cold start): a warning line and the `ParallelizationFactorUnknown`
/// EMF metric (dimension `Source`).
#[derive(Debug)]
pub struct MappingUnreadable<'a> {
    /// Why.
    pub error: &'a MappingError,
}

impl MappingUnreadable<'_> {
    /// The EMF document of the metric.
    pub fn emf_line(&self, timestamp_ms: i64) -> String {
        serde_json::json!({
            "Source": "kinesis",
            "ParallelizationFactorUnknown": 1,
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": crate::telemetry::NAMESPACE,
                    "Dimensions": [["Source"]],
                    "Metrics": [{"Name": "ParallelizationFactorUnknown", "Unit": "Count"}],
                }],
            },
        })
        .to_string()
    }

    /// Logs the warning and prints the metric.
    pub fn emit(&self) {
        use std::io::Write as _;
        tracing::warn!(
            error = %self.error,
            "cannot read the event source mappings: landing Kinesis in interleaved mode (no record is skipped by the checkpoint; a retry may land a duplicate) until they can be read; grant lambda:ListEventSourceMappings"
        );
        let line = self.emf_line(chrono::Utc::now().timestamp_millis());
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

#[derive(Debug)]
struct Cache {
    /// When the mappings were last read (`None`: never).
    read_at: Option<Instant>,
    /// Stream ARN -> the largest factor of the mappings that read it, or why unreadable.
    factors: Result<HashMap<String, u32>, MappingError>,
    /// Stream ARNs known since the last read: those it returned and those asked about.
    seen: HashSet<String>,
    /// Whether [`MappingUnreadable`] was emitted in this execution environment.
    warned: bool,
}

/// The mappings of this function, cached for an execution environment.
#[derive(Debug)]
pub struct MappingFactors {
    source: Arc<dyn MappingSource>,
    refresh: Duration,
    cache: tokio::sync::Mutex<Cache>,
}

impl MappingFactors {
    /// A cache over `source`, read again after `refresh`.
    pub fn new(source: Arc<dyn MappingSource>, refresh: Duration) -> Self {
        Self {
            source,
            refresh,
            cache: tokio::sync::Mutex::new(Cache {
                read_at: None,
                factors: Ok(HashMap::new()),
                seen: HashSet::new(),
                warned: false,
            }),
        }
    }

    /// The function whose mappings these are.
    pub fn function(&self) -> &str {
        self.source.function()
    }

    /// Reads the mappings now (at init, and when a stale value is suspected).
    pub async fn refresh(&self) {
        let mut cache = self.cache.lock().await;
        self.read(&mut cache).await;
    }

    async fn read(&self, cache: &mut Cache) {
        let factors = self.source.mappings().await.map(|mappings| {
            let mut factors: HashMap<String, u32> = HashMap::new();
            for m in mappings {
                let factor = m.parallelization_factor.unwrap_or(1).max(1);
                let entry = factors
                    .entry(stream_arn(&m.event_source_arn).to_owned())
                    .or_insert(factor);
                *entry = (*entry).max(factor);
            }
            factors
        });
        match &factors {
            Ok(factors) => {
                for (arn, factor) in factors {
                    FactorLearned {
                        function: self.function(),
                        stream_arn: arn,
                        factor: *factor,
                    }
                    .emit();
                }
            }
            Err(error) if !cache.warned => {
                MappingUnreadable { error }.emit();
                cache.warned = true;
            }
            Err(_) => {}
        }
        cache.seen = match &factors {
            Ok(factors) => factors.keys().cloned().collect(),
            Err(_) => HashSet::new(),
        };
        cache.factors = factors;
        cache.read_at = Some(Instant::now());
    }

    /// What the mappings say about the stream of `event_source_arn`, read again first when
    /// it was not asked about since the last read or the refresh interval has passed.
    pub async fn learned(&self, event_source_arn: &str) -> Learned {
        self.lookup(event_source_arn, false).await
    }

    async fn lookup(&self, event_source_arn: &str, force: bool) -> Learned {
        let arn = stream_arn(event_source_arn);
        let mut cache = self.cache.lock().await;
        let stale = cache.read_at.is_none_or(|at| at.elapsed() >= self.refresh);
        if force || stale || !cache.seen.contains(arn) {
            self.read(&mut cache).await;
        }
        cache.seen.insert(arn.to_owned());
        match &cache.factors {
            Ok(factors) => Ok(factors.get(arn).copied()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The landing mode of `stream` (from `event_source_arn`) given the factor the connector
    /// file declares. A mismatch is checked against a fresh read before it is reported, so
    /// a mapping changed a moment ago is not refused on a stale value.
    pub async fn mode(
        &self,
        stream: &str,
        event_source_arn: &str,
        declared: Option<u32>,
    ) -> Result<LandingMode, MappingError> {
        self.decide(stream, event_source_arn, declared, false).await
    }

    /// [`Self::mode`] after reading the mappings again, whatever the cache holds: for when
    /// the cached factor is suspected to be stale (ordered mode skipped records).
    pub async fn mode_now(
        &self,
        stream: &str,
        event_source_arn: &str,
        declared: Option<u32>,
    ) -> Result<LandingMode, MappingError> {
        self.decide(stream, event_source_arn, declared, true).await
    }

    async fn decide(
        &self,
        stream: &str,
        event_source_arn: &str,
        declared: Option<u32>,
        force: bool,
    ) -> Result<LandingMode, MappingError> {
        let learned = self.lookup(event_source_arn, force).await;
        let decided = match effective_mode(declared, &learned) {
            // Checked against a fresh read before it is reported.
            Err(MappingError::FactorMismatch { .. }) if !force => {
                effective_mode(declared, &self.lookup(event_source_arn, true).await)
            }
            other => other,
        };
        decided.map_err(|e| match e {
            MappingError::FactorMismatch {
                declared, mapping, ..
            } => MappingError::FactorMismatch {
                stream: stream.to_owned(),
                declared,
                mapping,
                function: self.function().to_owned(),
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks";

    fn unreadable() -> MappingError {
        MappingError::Unreadable {
            function: "f".into(),
            reason: "AccessDeniedException: not authorized".into(),
        }
    }

    #[test]
    fn the_mapping_decides_and_a_declared_factor_must_agree() {
        let interleaved = |f| LandingMode::Interleaved { factor: Some(f) };
        assert_eq!(effective_mode(None, &Ok(Some(4))), Ok(interleaved(4)));
        assert_eq!(effective_mode(Some(4), &Ok(Some(4))), Ok(interleaved(4)));
        assert_eq!(effective_mode(None, &Ok(Some(1))), Ok(LandingMode::Ordered));
        assert_eq!(
            effective_mode(Some(1), &Ok(Some(1))),
            Ok(LandingMode::Ordered)
        );
        for (declared, mapping) in [(4, 1), (1, 4), (2, 3)] {
            match effective_mode(Some(declared), &Ok(Some(mapping))) {
                Err(MappingError::FactorMismatch {
                    declared: d,
                    mapping: m,
                    ..
                }) => assert_eq!((d, m), (declared, mapping)),
                other => panic!("{declared} vs {mapping}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_a_mapping_the_file_decides() {
        assert_eq!(effective_mode(None, &Ok(None)), Ok(LandingMode::Ordered));
        assert_eq!(effective_mode(Some(1), &Ok(None)), Ok(LandingMode::Ordered));
        assert_eq!(
            effective_mode(Some(3), &Ok(None)),
            Ok(LandingMode::Interleaved { factor: Some(3) })
        );
    }

    #[test]
    fn unreadable_mappings_never_mean_ordered() {
        for declared in [None, Some(1), Some(4)] {
            let mode = effective_mode(declared, &Err(unreadable())).unwrap();
            assert!(
                matches!(mode, LandingMode::Interleaved { .. }),
                "{declared:?}"
            );
            assert!(mode.settings_factor() > 1);
        }
        assert_eq!(
            effective_mode(None, &Err(MappingError::NoFunctionName))
                .unwrap()
                .settings_factor(),
            MAX_PARALLELIZATION_FACTOR
        );
        assert_eq!(
            effective_mode(Some(4), &Err(unreadable()))
                .unwrap()
                .settings_factor(),
            4
        );
    }

    #[test]
    fn consumer_arns_match_their_stream() {
        assert_eq!(stream_arn(ARN), ARN);
        assert_eq!(stream_arn(&format!("{ARN}/consumer/efo:1700000000")), ARN);
        assert_eq!(
            stream_arn("arn:aws:sqs:us-east-1:1:q"),
            "arn:aws:sqs:us-east-1:1:q"
        );
    }

    #[test]
    fn settings_come_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = MappingSettings::from_lookup(env(&[("AWS_LAMBDA_FUNCTION_NAME", "lambda-name")]))
            .unwrap();
        assert_eq!(s.function.as_deref(), Some("lambda-name"));
        assert_eq!(s.refresh, DEFAULT_REFRESH);
        let s = MappingSettings::from_lookup(env(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "lambda-name"),
            (
                "BRONZE_FUNCTION_NAME",
                "arn:aws:lambda:us-east-1:1:function:f:live",
            ),
            ("BRONZE_MAPPING_REFRESH_SECONDS", "0"),
        ]))
        .unwrap();
        assert_eq!(
            s.function.as_deref(),
            Some("arn:aws:lambda:us-east-1:1:function:f:live")
        );
        assert_eq!(s.refresh, Duration::ZERO);
        assert_eq!(
            MappingSettings::from_lookup(env(&[])).unwrap().function,
            None
        );
        let err = MappingSettings::from_lookup(env(&[("BRONZE_MAPPING_REFRESH_SECONDS", "5m")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("BRONZE_MAPPING_REFRESH_SECONDS")
        );
    }

    fn mapping(factor: Option<u32>) -> Mapping {
        Mapping {
            event_source_arn: ARN.into(),
            parallelization_factor: factor,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cache_reads_at_refresh_interval_and_for_new_streams() {
        let source = Arc::new(MemoryMappings::new(Ok(vec![mapping(Some(4))])));
        let factors = MappingFactors::new(source.clone(), Duration::from_secs(300));
        factors.refresh().await;
        assert_eq!(source.reads(), 1);
        assert_eq!(factors.learned(ARN).await, Ok(Some(4)));
        source.set(Ok(vec![mapping(Some(2))]));
        assert_eq!(factors.learned(ARN).await, Ok(Some(4)), "cached");
        assert_eq!(source.reads(), 1);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(factors.learned(ARN).await, Ok(Some(2)), "refreshed");
        assert_eq!(source.reads(), 2);
        // A stream not seen since the last read: read again (its mapping may be new), then
        // cached as "no mapping".
        let other = "arn:aws:kinesis:us-east-1:123456789012:stream/other";
        assert_eq!(factors.learned(other).await, Ok(None));
        assert_eq!(factors.learned(other).await, Ok(None));
        assert_eq!(source.reads(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn absent_factor_is_lambdas_default_and_several_mappings_take_the_largest() {
        let source = Arc::new(MemoryMappings::new(Ok(vec![mapping(None)])));
        let factors = MappingFactors::new(source.clone(), DEFAULT_REFRESH);
        assert_eq!(factors.learned(ARN).await, Ok(Some(1)));
        source.set(Ok(vec![
            mapping(Some(2)),
            Mapping {
                event_source_arn: format!("{ARN}/consumer/efo:1"),
                parallelization_factor: Some(5),
            },
        ]));
        factors.refresh().await;
        assert_eq!(factors.learned(ARN).await, Ok(Some(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn mismatch_is_checked_against_a_fresh_read_and_names_both_values() {
        let source = Arc::new(MemoryMappings::new(Ok(vec![mapping(Some(1))])));
        let factors = MappingFactors::new(source.clone(), DEFAULT_REFRESH);
        assert_eq!(
            factors.mode("clicks", ARN, Some(1)).await,
            Ok(LandingMode::Ordered)
        );
        // The mapping changes to 4 and the file is changed to 4 with it: the stale cached 1
        // does not fail the invocation.
        source.set(Ok(vec![mapping(Some(4))]));
        assert_eq!(
            factors.mode("clicks", ARN, Some(4)).await,
            Ok(LandingMode::Interleaved { factor: Some(4) })
        );
        let err = factors.mode("clicks", ARN, Some(1)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stream clicks")
                && text.contains("parallelization_factor 1")
                && text.contains("ParallelizationFactor 4")
                && text.contains("of memory"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unreadable_mappings_warn_once_and_land_interleaved() {
        let source = Arc::new(MemoryMappings::new(Err(unreadable())));
        let factors = MappingFactors::new(source.clone(), Duration::ZERO);
        factors.refresh().await;
        for _ in 0..3 {
            let mode = factors.mode("clicks", ARN, None).await.unwrap();
            assert_eq!(mode, LandingMode::Interleaved { factor: None });
        }
        assert!(factors.cache.lock().await.warned);
        // Readable again: the mapping's factor decides.
        source.set(Ok(vec![mapping(Some(1))]));
        assert_eq!(
            factors.mode("clicks", ARN, None).await,
            Ok(LandingMode::Ordered)
        );
    }

    #[test]
    fn unreadable_metric_is_an_emf_document() {
        let error = unreadable();
        let line = MappingUnreadable { error: &error }.emf_line(1_000);
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["ParallelizationFactorUnknown"], 1);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "BronzeConnector"
        );
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "ParallelizationFactorUnknown"
        );
    }
}
