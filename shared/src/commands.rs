//! `streaming-connector schema check` and `schema register`: walk the connector file's
//! streams that declare a schema with a definition file, and check (or check and register)
//! each definition against its subject's history under the declared compatibility mode.
//! The connector runs the check itself, so a registry that does not enforce compatibility
//! (moto's Glue, or Glue schemas created with `NONE`) never lets a breaking change through.

use crate::config::ConnectorConfig;
use crate::decode::RegistrySet;
use crate::registry::{self, RegistryError};
use std::path::Path;

/// What happened to one stream's schema.
#[derive(Debug)]
pub struct SchemaReport {
    /// `source/stream`.
    pub stream: String,
    /// The subject.
    pub subject: String,
    /// `Ok(message)` or the failure.
    pub result: Result<String, CommandError>,
}

/// Why a stream's schema was refused or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The definition file could not be read.
    #[error("{stream}: cannot read schema definition {path}: {source}")]
    Definition {
        /// `source/stream`.
        stream: String,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry refused or failed (incompatible, invalid, unreachable).
    #[error("{stream}: {source}")]
    Registry {
        /// `source/stream`.
        stream: String,
        /// The registry's answer.
        source: RegistryError,
    },
}

/// Checks (and with `register`, registers) every declared schema. `config_dir` is where
/// definition paths are relative to. Streams without a definition file are skipped.
pub async fn schemas(
    connector: &ConnectorConfig,
    config_dir: &Path,
    registries: &RegistrySet,
    register: bool,
) -> Vec<SchemaReport> {
    let mut streams: Vec<_> = connector
        .streams()
        .filter(|(_, _, s)| s.schema.is_some())
        .collect();
    streams.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut reports = Vec::new();
    for (source, name, settings) in streams {
        let declared = settings.schema.as_ref().expect("filtered");
        let Some(definition_path) = &declared.definition else {
            continue;
        };
        let stream = format!("{source}/{name}");
        let path = config_dir.join(definition_path);
        let result = async {
            let definition =
                std::fs::read_to_string(&path).map_err(|source| CommandError::Definition {
                    stream: stream.clone(),
                    path: path.display().to_string(),
                    source,
                })?;
            let registry = registries
                .iter()
                .find(|(kind, _)| *kind == declared.registry)
                .map(|(_, r)| r.as_ref())
                .expect("the config validates that the registry is configured");
            let fail = |source| CommandError::Registry {
                stream: stream.clone(),
                source,
            };
            let mode = declared.compatibility;
            if register {
                let version = registry::check_and_register(
                    registry,
                    &declared.subject,
                    declared.format,
                    mode,
                    &definition,
                )
                .await
                .map_err(fail)?;
                Ok(format!(
                    "registered as version {} (id {}) under {mode}",
                    version.version, version.id
                ))
            } else {
                registry::check(
                    registry,
                    &declared.subject,
                    declared.format,
                    mode,
                    &definition,
                )
                .await
                .map_err(fail)?;
                Ok(format!("compatible under {mode}"))
            }
        }
        .await;
        reports.push(SchemaReport {
            stream,
            subject: declared.subject.clone(),
            result,
        });
    }
    reports
}
