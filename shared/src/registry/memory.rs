//! An in-memory [`SchemaRegistry`] with Confluent-style global integer ids, a call counter
//! and fault injection, for tests of the cache and of the connector's own compatibility
//! check.
//!
//! Like moto's Glue, it does not enforce compatibility: [`MemoryRegistry::set_compatibility`]
//! only records the mode. Whatever reaches [`SchemaRegistry::register`] is stored, so a test
//! can prove that [`super::check_and_register`] refused a change by itself.

use super::{RegisteredSchema, RegistryError, SchemaId, SchemaRegistry, same_definition};
use crate::schema::{CompatibilityMode, SchemaFormat};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const NAME: &str = "memory registry";

#[derive(Debug, Default)]
struct Inner {
    /// Subject -> ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    /// Global id -> version.
    schemas: HashMap<u32, RegisteredSchema>,
    /// Subject -> recorded mode.
    compatibility: HashMap<String, CompatibilityMode>,
    next_id: u32,
    fail_next: Option<RegistryError>,
    delay: Option<Duration>,
}

/// Schemas in a map. Every trait call counts, failed or not ([`MemoryRegistry::calls`]).
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    inner: Mutex<Inner>,
    calls: AtomicU64,
}

impl MemoryRegistry {
    /// An empty registry; the first id is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trait calls so far (`versions`, `register`, `by_id`, `set_compatibility`).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The next trait call fails with `err` (once).
    pub fn fail_next(&self, err: RegistryError) {
        self.lock().fail_next = Some(err);
    }

    /// Every trait call sleeps `delay` first (to make concurrent callers overlap).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = Some(delay);
    }

    /// The mode last given to `set_compatibility` for `subject`.
    pub fn compatibility(&self, subject: &str) -> Option<CompatibilityMode> {
        self.lock().compatibility.get(subject).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory registry lock")
    }

    /// Counts the call, waits the configured delay and fires an injected failure.
    async fn enter(&self) -> Result<(), RegistryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.lock().delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match self.lock().fail_next.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl SchemaRegistry for MemoryRegistry {
    async fn versions(&self, subject: &str) -> Result<Vec<RegisteredSchema>, RegistryError> {
        self.enter().await?;
        let inner = self.lock();
        Ok(inner
            .subjects
            .get(subject)
            .map(|ids| ids.iter().map(|id| inner.schemas[id].clone()).collect())
            .unwrap_or_default())
    }

    async fn register(
        &self,
        subject: &str,
        format: SchemaFormat,
        definition: &str,
    ) -> Result<RegisteredSchema, RegistryError> {
        self.enter().await?;
        let mut inner = self.lock();
        let ids = inner.subjects.get(subject).cloned().unwrap_or_default();
        let held = ids.first().map(|id| inner.schemas[id].format);
        if let Some(held) = held.filter(|held| *held != format) {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                explanation: format!("the subject holds {held} schemas, not {format}"),
            });
        }
        if let Some(existing) = ids
            .iter()
            .map(|id| &inner.schemas[id])
            .find(|v| same_definition(&v.definition, definition))
        {
            return Ok(existing.clone());
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let registered = RegisteredSchema {
            id: SchemaId::Confluent(id),
            subject: subject.to_owned(),
            version: u32::try_from(ids.len() + 1).expect("fewer than 2^32 versions"),
            format,
            definition: definition.to_owned(),
        };
        inner.schemas.insert(id, registered.clone());
        inner
            .subjects
            .entry(subject.to_owned())
            .or_default()
            .push(id);
        Ok(registered)
    }

    async fn by_id(&self, id: &SchemaId) -> Result<RegisteredSchema, RegistryError> {
        self.enter().await?;
        let found = match id {
            SchemaId::Confluent(n) => self.lock().schemas.get(n).cloned(),
            SchemaId::Glue(_) => None,
        };
        found.ok_or_else(|| RegistryError::NotFound {
            registry: NAME.to_owned(),
            what: format!("schema id {id}"),
        })
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), RegistryError> {
        self.enter().await?;
        self.lock().compatibility.insert(subject.to_owned(), mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"type":"string"}"#;
    const B: &str = r#"{"type":"long"}"#;

    #[tokio::test]
    async fn ids_are_global_and_versions_per_subject() {
        let registry = MemoryRegistry::new();
        assert!(registry.versions("x").await.unwrap().is_empty());
        let a1 = registry.register("x", SchemaFormat::Avro, A).await.unwrap();
        let b1 = registry.register("y", SchemaFormat::Avro, B).await.unwrap();
        let a2 = registry.register("x", SchemaFormat::Avro, B).await.unwrap();
        assert_eq!(
            [&a1.id, &b1.id, &a2.id],
            [
                &SchemaId::Confluent(1),
                &SchemaId::Confluent(2),
                &SchemaId::Confluent(3)
            ]
        );
        assert_eq!((a1.version, b1.version, a2.version), (1, 1, 2));
        let versions = registry.versions("x").await.unwrap();
        assert_eq!(versions, vec![a1.clone(), a2]);
        assert_eq!(
            registry.register("x", SchemaFormat::Avro, A).await.unwrap(),
            a1
        );
        assert_eq!(registry.by_id(&SchemaId::Confluent(2)).await.unwrap(), b1);
        assert!(matches!(
            registry.by_id(&SchemaId::Confluent(9)).await,
            Err(RegistryError::NotFound { what, .. }) if what == "schema id confluent:9"
        ));
        assert!(matches!(
            registry.register("x", SchemaFormat::JsonSchema, "{}").await,
            Err(RegistryError::Incompatible { .. })
        ));
        registry
            .set_compatibility("x", CompatibilityMode::Full)
            .await
            .unwrap();
        assert_eq!(registry.compatibility("x"), Some(CompatibilityMode::Full));
        assert_eq!(registry.calls(), 10);
    }
}
