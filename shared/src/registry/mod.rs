//! Schema registries behind one trait: where a subject's schema versions are kept and where
//! a schema id found in a record is resolved to its definition.
//!
//! # Adapters
//! - [`glue::GlueRegistry`]: AWS Glue Schema Registry (subject = Glue schema name, id = schema
//!   version UUID).
//! - [`confluent::ConfluentRegistry`]: the published Confluent Schema Registry REST API, as
//!   served by Confluent, Karapace and Apicurio's `ccompat` endpoint (id = global integer).
//! - [`memory::MemoryRegistry`]: in memory, with a call counter and fault injection, for tests.
//!
//! # Who enforces compatibility
//! The connector does, in [`check_and_register`], before anything is written: a registry may
//! not check at all (moto's Glue does not), or check with rules that differ from the ones in
//! [`crate::schema`]. A registry's own refusal (Confluent's HTTP 409) is still reported as
//! [`RegistryError::Incompatible`].
//!
//! # Landing
//! [`SchemaCache`] resolves ids once per process, so landing makes no registry call per
//! record.

pub mod confluent;
pub mod glue;
pub mod memory;

use crate::schema::{self, CompatibilityMode, SchemaError, SchemaFormat};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The id a producer puts in front of a payload to say which schema wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SchemaId {
    /// A Confluent-compatible registry's global integer id (the 4 bytes after the magic byte
    /// of the Confluent wire format).
    Confluent(u32),
    /// An AWS Glue schema version id: a UUID, lowercase `8-4-4-4-12` hex (build it with
    /// [`SchemaId::glue`] or [`SchemaId::from_glue_bytes`] so it is normalised).
    Glue(String),
}

impl SchemaId {
    /// A Glue id from its text form, lowercased; `None` unless it is a `8-4-4-4-12` hex UUID.
    pub fn glue(uuid: &str) -> Option<SchemaId> {
        let groups: Vec<&str> = uuid.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        let hex = groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        (lengths == [8, 4, 4, 4, 12] && hex).then(|| SchemaId::Glue(uuid.to_ascii_lowercase()))
    }

    /// A Glue id from the 16 bytes of the Glue wire format's header.
    pub fn from_glue_bytes(bytes: &[u8; 16]) -> SchemaId {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        SchemaId::Glue(format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ))
    }
}

impl fmt::Display for SchemaId {
    /// `confluent:42` or `glue:<uuid>`, so a log line says which kind of registry it was.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaId::Confluent(id) => write!(f, "confluent:{id}"),
            SchemaId::Glue(uuid) => write!(f, "glue:{uuid}"),
        }
    }
}

/// One version of a subject, as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The id producers put in records.
    pub id: SchemaId,
    /// The subject (Confluent subject, Glue schema name). Empty when a registry cannot say
    /// (see [`confluent::ConfluentRegistry`]'s `by_id`).
    pub subject: String,
    /// The version within the subject, from 1; 0 when the registry cannot say.
    pub version: u32,
    /// The schema language.
    pub format: SchemaFormat,
    /// The definition as the registry returns it.
    pub definition: String,
}

/// A registry failure, classified once: [`RegistryError::is_transient`] says whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The subject, version or id does not exist in the registry. Permanent: a record naming
    /// an unknown id is poison.
    #[error("{registry}: {what} not found")]
    NotFound {
        /// Which registry (e.g. `glue registry orders`, a Confluent base URL).
        registry: String,
        /// What was looked up, e.g. `schema id confluent:7`, `subject orders-value`.
        what: String,
    },
    /// Control flow: the new schema breaks the subject's compatibility, by the connector's own
    /// check or the registry's. Nothing was registered; the caller shows the explanation.
    #[error("subject {subject}: schema refused: {explanation}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why, naming the fields involved.
        explanation: String,
    },
    /// The definition (or a stored version it must be checked against) is not a valid schema.
    #[error("subject {subject}: {source}")]
    Invalid {
        /// The subject.
        subject: String,
        /// The parser's verdict.
        #[source]
        source: SchemaError,
    },
    /// Throttling, a 5xx, a timeout or a connection failure (after the client's retries).
    #[error("{operation} on {registry}: transient failure: {message}")]
    Transient {
        /// Which registry.
        registry: String,
        /// The operation, e.g. `glue:RegisterSchemaVersion`, `GET /schemas/ids/{id}`.
        operation: &'static str,
        /// The registry's message, prefixed with the subject or id it was about.
        message: String,
    },
    /// A failure retrying cannot fix: access denied, bad request, an unreadable answer.
    #[error("{operation} on {registry}: permanent failure: {message}")]
    Permanent {
        /// Which registry.
        registry: String,
        /// The operation.
        operation: &'static str,
        /// The registry's message, prefixed with the subject or id it was about.
        message: String,
    },
}

impl RegistryError {
    /// True when trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Transient { .. })
    }
}

/// Where schemas are kept. Implementations must be cheap to share (`Arc<dyn SchemaRegistry>`).
#[async_trait]
pub trait SchemaRegistry: Send + Sync + fmt::Debug {
    /// Every version of `subject`, oldest first; empty when the subject does not exist.
    async fn versions(&self, subject: &str) -> Result<Vec<RegisteredSchema>, RegistryError>;

    /// Registers `definition` as the next version of `subject` (creating the subject).
    /// Idempotent: an identical definition returns the existing version. Does not check
    /// compatibility itself; use [`check_and_register`].
    async fn register(
        &self,
        subject: &str,
        format: SchemaFormat,
        definition: &str,
    ) -> Result<RegisteredSchema, RegistryError>;

    /// Resolves an id found in a record.
    async fn by_id(&self, id: &SchemaId) -> Result<RegisteredSchema, RegistryError>;

    /// Sets the registry's own compatibility mode for `subject`, for producers that register
    /// without the connector. Not needed by [`check_and_register`], which checks itself.
    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), RegistryError>;
}

/// True when two definitions are the same schema text: equal as JSON values when both parse
/// as JSON (whitespace and key order do not matter), else equal as strings.
pub(crate) fn same_definition(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What [`check`] decided, so [`check_and_register`] does not fetch the history twice.
enum Verdict {
    /// The definition is already a version of the subject.
    Existing(RegisteredSchema),
    /// The definition may be registered as the next version.
    Compatible,
}

async fn decide(
    registry: &dyn SchemaRegistry,
    subject: &str,
    format: SchemaFormat,
    mode: CompatibilityMode,
    definition: &str,
) -> Result<Verdict, RegistryError> {
    let history = registry.versions(subject).await?;
    if let Some(other) = history.iter().rev().find(|v| v.format != format) {
        return Err(RegistryError::Incompatible {
            subject: subject.to_owned(),
            explanation: format!(
                "the subject holds {} schemas (version {}), not {format}",
                other.format, other.version
            ),
        });
    }
    if let Some(existing) = history
        .iter()
        .find(|v| same_definition(&v.definition, definition))
    {
        return Ok(Verdict::Existing(existing.clone()));
    }
    let previous: Vec<(u32, &str)> = history
        .iter()
        .map(|v| (v.version, v.definition.as_str()))
        .collect();
    match schema::check_compatibility(format, mode, definition, &previous) {
        Ok(()) => Ok(Verdict::Compatible),
        Err(err @ SchemaError::Incompatible { .. }) => Err(RegistryError::Incompatible {
            subject: subject.to_owned(),
            explanation: err.to_string(),
        }),
        Err(source) => Err(RegistryError::Invalid {
            subject: subject.to_owned(),
            source,
        }),
    }
}

/// Dry run of [`check_and_register`]: `Ok` when `definition` is already a version of
/// `subject` or may be registered under `mode`; nothing is written (for `schema check`).
///
/// # Errors
/// [`RegistryError::Incompatible`] with the explanation, [`RegistryError::Invalid`] when a
/// schema does not parse, or the registry's failure.
pub async fn check(
    registry: &dyn SchemaRegistry,
    subject: &str,
    format: SchemaFormat,
    mode: CompatibilityMode,
    definition: &str,
) -> Result<(), RegistryError> {
    decide(registry, subject, format, mode, definition)
        .await
        .map(|_| ())
}

/// Registers `definition` under `subject` only if the connector's own check says it is
/// `mode` compatible with the subject's history (the registry may not check: moto's Glue does
/// not, and the Glue adapter creates schemas with compatibility `NONE`). An identical
/// definition returns the existing version without a check, as registries do.
///
/// Between the check and the registration another writer may register a version; the
/// registry's own check (where configured) is the only guard against that race.
///
/// # Errors
/// [`RegistryError::Incompatible`] (nothing registered) with every incompatibility found,
/// [`RegistryError::Invalid`] when a schema does not parse, or the registry's failure.
pub async fn check_and_register(
    registry: &dyn SchemaRegistry,
    subject: &str,
    format: SchemaFormat,
    mode: CompatibilityMode,
    definition: &str,
) -> Result<RegisteredSchema, RegistryError> {
    match decide(registry, subject, format, mode, definition).await? {
        Verdict::Existing(existing) => Ok(existing),
        Verdict::Compatible => registry.register(subject, format, definition).await,
    }
}

/// Resolves schema ids through a registry once per process: the first [`SchemaCache::get`]
/// of an id calls the registry (concurrent callers of the same id wait for that one call),
/// later ones are answered from memory. Schema versions are immutable, so entries never
/// expire. Failures are not cached: the next `get` asks again.
#[derive(Debug, Clone)]
pub struct SchemaCache {
    registry: Arc<dyn SchemaRegistry>,
    entries: Arc<Mutex<HashMap<SchemaId, Slot>>>,
}

/// One id's entry: filled by the first successful fetch, awaited by concurrent callers.
type Slot = Arc<OnceCell<Arc<RegisteredSchema>>>;

impl SchemaCache {
    /// An empty cache in front of `registry`.
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Self {
        Self {
            registry,
            entries: Arc::default(),
        }
    }

    /// The registry behind the cache.
    pub fn registry(&self) -> &Arc<dyn SchemaRegistry> {
        &self.registry
    }

    /// The schema with `id`, fetched on first use.
    ///
    /// # Errors
    /// The registry's failure ([`RegistryError::NotFound`] for an unknown id).
    pub async fn get(&self, id: &SchemaId) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let cell = {
            let mut entries = self.entries.lock().expect("schema cache lock");
            Arc::clone(entries.entry(id.clone()).or_default())
        };
        cell.get_or_try_init(|| async { self.registry.by_id(id).await.map(Arc::new) })
            .await
            .map(Arc::clone)
    }

    /// The schema with `id` if it was already fetched; never calls the registry.
    pub fn cached(&self, id: &SchemaId) -> Option<Arc<RegisteredSchema>> {
        let entries = self.entries.lock().expect("schema cache lock");
        entries.get(id).and_then(|cell| cell.get().cloned())
    }

    /// How many ids are resolved.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().expect("schema cache lock");
        entries.values().filter(|cell| cell.initialized()).count()
    }

    /// True when no id is resolved yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryRegistry;
    use super::*;

    const V1: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
    const V2_OPTIONAL: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null}]}"#;
    const V3_REQUIRED: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null},{"name":"country","type":"string"}]}"#;

    #[test]
    fn glue_ids_are_normalised_and_validated() {
        let id = SchemaId::glue("B6F5E1B2-0D1C-4E5F-9A8B-7C6D5E4F3A2B").unwrap();
        assert_eq!(
            id,
            SchemaId::Glue("b6f5e1b2-0d1c-4e5f-9a8b-7c6d5e4f3a2b".into())
        );
        assert_eq!(id.to_string(), "glue:b6f5e1b2-0d1c-4e5f-9a8b-7c6d5e4f3a2b");
        assert!(SchemaId::glue("b6f5e1b2-0d1c-4e5f-9a8b").is_none());
        assert!(SchemaId::glue("g6f5e1b2-0d1c-4e5f-9a8b-7c6d5e4f3a2b").is_none());
        assert!(SchemaId::glue("b6f5e1b20d1c4e5f9a8b7c6d5e4f3a2b").is_none());
        let bytes = [
            0xb6, 0xf5, 0xe1, 0xb2, 0x0d, 0x1c, 0x4e, 0x5f, 0x9a, 0x8b, 0x7c, 0x6d, 0x5e, 0x4f,
            0x3a, 0x2b,
        ];
        assert_eq!(SchemaId::from_glue_bytes(&bytes), id);
        assert_eq!(SchemaId::Confluent(42).to_string(), "confluent:42");
    }

    #[test]
    fn same_definition_ignores_json_layout_only() {
        assert!(same_definition(
            r#"{"a":1,"b":2}"#,
            "{ \"b\": 2,\n \"a\": 1 }"
        ));
        assert!(!same_definition(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(same_definition("not json", "not json"));
        assert!(!same_definition("not json", "not  json"));
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let transient = RegistryError::Transient {
            registry: "r".into(),
            operation: "op",
            message: "m".into(),
        };
        assert!(transient.is_transient());
        for err in [
            RegistryError::NotFound {
                registry: "r".into(),
                what: "w".into(),
            },
            RegistryError::Incompatible {
                subject: "s".into(),
                explanation: "e".into(),
            },
            RegistryError::Permanent {
                registry: "r".into(),
                operation: "op",
                message: "m".into(),
            },
        ] {
            assert!(!err.is_transient(), "{err}");
        }
    }

    #[tokio::test]
    async fn check_and_register_walks_a_history() {
        let registry = MemoryRegistry::new();
        let subject = "users-value";
        let (avro, backward) = (SchemaFormat::Avro, CompatibilityMode::Backward);
        let v1 = check_and_register(&registry, subject, avro, backward, V1)
            .await
            .unwrap();
        assert_eq!((v1.version, &v1.subject[..]), (1, subject));
        // Identical (modulo layout): the existing version, no new one.
        let again = check_and_register(&registry, subject, avro, backward, &format!(" {V1}\n"))
            .await
            .unwrap();
        assert_eq!(again, v1);
        let v2 = check_and_register(&registry, subject, avro, backward, V2_OPTIONAL)
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_ne!(v2.id, v1.id);

        check(&registry, subject, avro, backward, V2_OPTIONAL)
            .await
            .unwrap();
        let err = check(&registry, subject, avro, backward, V3_REQUIRED)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::Incompatible { explanation, .. } if explanation.contains("\"country\"")),
            "{err}"
        );
        let err = check_and_register(&registry, subject, avro, backward, V3_REQUIRED)
            .await
            .unwrap_err();
        let RegistryError::Incompatible {
            subject: refused,
            explanation,
        } = &err
        else {
            panic!("expected Incompatible, got {err}");
        };
        assert_eq!(refused, subject);
        assert!(explanation.contains("BACKWARD"), "{explanation}");
        assert!(explanation.contains("\"country\""), "{explanation}");
        assert!(!err.is_transient());
        assert_eq!(registry.versions(subject).await.unwrap().len(), 2);

        // NONE lets it through: the connector's check was the only guard.
        let v3 = check_and_register(
            &registry,
            subject,
            avro,
            CompatibilityMode::None,
            V3_REQUIRED,
        )
        .await
        .unwrap();
        assert_eq!(v3.version, 3);
    }

    #[tokio::test]
    async fn invalid_schemas_and_format_changes_are_refused() {
        let registry = MemoryRegistry::new();
        let mode = CompatibilityMode::Backward;
        let err = check_and_register(
            &registry,
            "s",
            SchemaFormat::Avro,
            mode,
            "{\"type\":\"recrd\"}",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Invalid {
                    source: SchemaError::Parse { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(registry.versions("s").await.unwrap().is_empty());

        check_and_register(&registry, "s", SchemaFormat::Avro, mode, V1)
            .await
            .unwrap();
        let err = check_and_register(
            &registry,
            "s",
            SchemaFormat::JsonSchema,
            mode,
            r#"{"type":"object"}"#,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, RegistryError::Incompatible { explanation, .. } if explanation.contains("avro")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn registry_failures_pass_through_check_and_register() {
        let registry = MemoryRegistry::new();
        registry.fail_next(RegistryError::Transient {
            registry: "memory".into(),
            operation: "versions",
            message: "injected".into(),
        });
        let err = check_and_register(
            &registry,
            "s",
            SchemaFormat::Avro,
            CompatibilityMode::Backward,
            V1,
        )
        .await
        .unwrap_err();
        assert!(err.is_transient());
        assert!(registry.versions("s").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn cache_fetches_each_id_once() {
        let registry = Arc::new(MemoryRegistry::new());
        let v1 = registry
            .register("s", SchemaFormat::Avro, V1)
            .await
            .unwrap();
        let cache = SchemaCache::new(registry.clone());
        assert!(cache.cached(&v1.id).is_none());
        assert!(cache.is_empty());
        let before = registry.calls();

        let first = cache.get(&v1.id).await.unwrap();
        assert_eq!(*first, v1);
        assert_eq!(registry.calls(), before + 1);
        let second = cache.get(&v1.id).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            registry.calls(),
            before + 1,
            "second get called the registry"
        );
        assert!(Arc::ptr_eq(&cache.cached(&v1.id).unwrap(), &first));
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_gets_of_one_id_make_one_call() {
        let registry = Arc::new(MemoryRegistry::new());
        let v1 = registry
            .register("s", SchemaFormat::Avro, V1)
            .await
            .unwrap();
        registry.set_delay(std::time::Duration::from_millis(50));
        let cache = SchemaCache::new(registry.clone());
        let before = registry.calls();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                let id = v1.id.clone();
                tokio::spawn(async move { cache.get(&id).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(*task.await.unwrap().unwrap(), v1);
        }
        assert_eq!(registry.calls(), before + 1);
    }

    #[tokio::test]
    async fn cache_does_not_remember_failures() {
        let registry = Arc::new(MemoryRegistry::new());
        let cache = SchemaCache::new(registry.clone());
        let unknown = SchemaId::Confluent(99);
        assert!(matches!(
            cache.get(&unknown).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(cache.cached(&unknown).is_none());
        let v1 = registry
            .register("s", SchemaFormat::Avro, V1)
            .await
            .unwrap();
        registry.fail_next(RegistryError::Transient {
            registry: "memory".into(),
            operation: "by_id",
            message: "injected".into(),
        });
        assert!(cache.get(&v1.id).await.unwrap_err().is_transient());
        assert_eq!(*cache.get(&v1.id).await.unwrap(), v1);
    }
}
