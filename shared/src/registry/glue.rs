//! AWS Glue Schema Registry adapter: a subject is a Glue schema in one registry, a version's
//! id is its schema version UUID (what the Glue wire format puts in each record).
//!
//! # Compatibility `NONE` in Glue
//! Schemas are created with Glue compatibility `NONE` because the connector checks
//! compatibility itself ([`super::check_and_register`]) with the rules in
//! [`crate::schema`]. Two checkers with slightly different rules would make a change pass one
//! and fail the other, and Glue's check is asynchronous (a version is `PENDING`, then
//! `AVAILABLE` or `FAILURE`). moto does not check at all. An operator who also wants Glue to
//! guard producers that register on their own can call `set_compatibility`; a version Glue
//! then refuses (`FAILURE`) is reported as [`RegistryError::Incompatible`].
//!
//! # Calls
//! - `versions`: `GetSchema` (format, latest version number), then `GetSchemaVersion` per
//!   version number; deleted, pending and failed versions are left out. `ListSchemaVersions`
//!   would also need one `GetSchemaVersion` per version (it returns no definitions), and
//!   moto does not implement it.
//! - `register`: `GetSchema` (`CreateSchema` for a new subject), `GetSchemaByDefinition` (an
//!   identical definition is the existing version, and needs no write permission), else
//!   `RegisterSchemaVersion` (itself idempotent in Glue); then `GetSchemaVersion` until the
//!   version leaves `PENDING`.
//! - `by_id`: `GetSchemaVersion` by `SchemaVersionId`; the subject is read from the schema
//!   ARN. Version ids are account-wide, so an id from another registry resolves too.
//!
//! Errors are classified by [`crate::aws::classify`] (after the SDK's own retries).

use super::{RegisteredSchema, RegistryError, SchemaId, SchemaRegistry};
use crate::aws::classify;
use crate::ports::PortError;
use crate::schema::{CompatibilityMode, SchemaFormat};
use async_trait::async_trait;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::operation::get_schema_version::GetSchemaVersionOutput;
use aws_sdk_glue::types::{
    Compatibility, DataFormat, RegistryId, SchemaId as GlueSchemaId, SchemaVersionNumber,
    SchemaVersionStatus,
};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;

/// How long `register` waits for Glue to move a new version out of `PENDING`.
const PENDING_POLLS: u32 = 40;
const PENDING_INTERVAL: Duration = Duration::from_millis(250);
/// `GetSchemaVersion` calls in flight while listing a subject's versions.
const FETCH_CONCURRENCY: usize = 4;

/// One Glue registry. Subjects must be valid Glue schema names (letters, digits, `-_$#.`).
#[derive(Debug, Clone)]
pub struct GlueRegistry {
    client: aws_sdk_glue::Client,
    registry_name: String,
}

fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    code(err) == Some("EntityNotFoundException")
}

fn is_already_exists<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    code(err) == Some("AlreadyExistsException")
}

fn glue_format(format: SchemaFormat) -> DataFormat {
    match format {
        SchemaFormat::Avro => DataFormat::Avro,
        SchemaFormat::JsonSchema => DataFormat::Json,
    }
}

fn glue_compatibility(mode: CompatibilityMode) -> Compatibility {
    match mode {
        CompatibilityMode::Backward => Compatibility::Backward,
        CompatibilityMode::BackwardTransitive => Compatibility::BackwardAll,
        CompatibilityMode::Forward => Compatibility::Forward,
        CompatibilityMode::ForwardTransitive => Compatibility::ForwardAll,
        CompatibilityMode::Full => Compatibility::Full,
        CompatibilityMode::FullTransitive => Compatibility::FullAll,
        CompatibilityMode::None => Compatibility::None,
    }
}

/// The schema name in `arn:aws:glue:<region>:<account>:schema/<registry>/<schema>`.
fn subject_from_arn(arn: &str) -> Option<&str> {
    let (_, path) = arn.split_once(":schema/")?;
    let (_registry, schema) = path.split_once('/')?;
    Some(schema)
}

impl GlueRegistry {
    /// The adapter for `registry_name`, with the same SDK configuration as the other AWS
    /// clients ([`crate::aws::sdk_config`]).
    pub fn new(config: &aws_config::SdkConfig, registry_name: impl Into<String>) -> Self {
        Self::from_client(aws_sdk_glue::Client::new(config), registry_name)
    }

    /// The adapter over an existing client.
    pub fn from_client(client: aws_sdk_glue::Client, registry_name: impl Into<String>) -> Self {
        Self {
            client,
            registry_name: registry_name.into(),
        }
    }

    /// The registry's name.
    pub fn registry_name(&self) -> &str {
        &self.registry_name
    }

    fn label(&self) -> String {
        format!("glue registry {}", self.registry_name)
    }

    fn schema_id(&self, subject: &str) -> GlueSchemaId {
        GlueSchemaId::builder()
            .registry_name(&self.registry_name)
            .schema_name(subject)
            .build()
    }

    fn error<E>(
        &self,
        operation: &'static str,
        target: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> RegistryError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let registry = self.label();
        // `classify` only answers Transient or Permanent.
        match classify(operation, target, err) {
            PortError::Transient { message, .. } => RegistryError::Transient {
                registry,
                operation,
                message: format!("{target}: {message}"),
            },
            other => RegistryError::Permanent {
                registry,
                operation,
                message: match other {
                    PortError::Permanent { message, .. } => format!("{target}: {message}"),
                    other => other.to_string(),
                },
            },
        }
    }

    fn malformed(&self, operation: &'static str, message: String) -> RegistryError {
        RegistryError::Permanent {
            registry: self.label(),
            operation,
            message,
        }
    }

    /// Creates the registry unless it exists (for set-up scripts and tests).
    ///
    /// # Errors
    /// The classified SDK failure.
    pub async fn ensure_registry(&self) -> Result<(), RegistryError> {
        let registry_id = RegistryId::builder()
            .registry_name(&self.registry_name)
            .build();
        match self
            .client
            .get_registry()
            .registry_id(registry_id)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(self.error("glue:GetRegistry", &self.registry_name, &err)),
        }
        match self
            .client
            .create_registry()
            .registry_name(&self.registry_name)
            .description("Bronze connector schemas")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_already_exists(&err) => Ok(()),
            Err(err) => Err(self.error("glue:CreateRegistry", &self.registry_name, &err)),
        }
    }

    /// `(format, latest version number)` of a subject, `None` when it does not exist.
    async fn schema(&self, subject: &str) -> Result<Option<(SchemaFormat, i64)>, RegistryError> {
        const OP: &str = "glue:GetSchema";
        let out = match self
            .client
            .get_schema()
            .schema_id(self.schema_id(subject))
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(self.error(OP, subject, &err)),
        };
        let format = self.format(OP, subject, out.data_format())?;
        Ok(Some((format, out.latest_schema_version().unwrap_or(0))))
    }

    fn format(
        &self,
        operation: &'static str,
        target: &str,
        format: Option<&DataFormat>,
    ) -> Result<SchemaFormat, RegistryError> {
        match format {
            Some(DataFormat::Avro) => Ok(SchemaFormat::Avro),
            Some(DataFormat::Json) => Ok(SchemaFormat::JsonSchema),
            other => Err(self.malformed(
                operation,
                format!(
                    "{target}: data format {} is not supported (AVRO and JSON are)",
                    other.map_or("<missing>", |f| f.as_str())
                ),
            )),
        }
    }

    fn to_registered(
        &self,
        subject: Option<&str>,
        out: &GetSchemaVersionOutput,
    ) -> Result<RegisteredSchema, RegistryError> {
        const OP: &str = "glue:GetSchemaVersion";
        let raw_id = out.schema_version_id().unwrap_or_default();
        let id = SchemaId::glue(raw_id).ok_or_else(|| {
            self.malformed(OP, format!("schema version id {raw_id:?} is not a UUID"))
        })?;
        let subject = subject
            .or_else(|| out.schema_arn().and_then(subject_from_arn))
            .unwrap_or_default()
            .to_owned();
        let version = out
            .version_number()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.malformed(OP, format!("{id}: no usable version number")))?;
        let definition = out
            .schema_definition()
            .ok_or_else(|| self.malformed(OP, format!("{id}: no schema definition")))?
            .to_owned();
        let format = self.format(OP, &id.to_string(), out.data_format())?;
        Ok(RegisteredSchema {
            id,
            subject,
            version,
            format,
            definition,
        })
    }

    /// One version by number, `None` when it does not exist (deleted).
    async fn version(
        &self,
        subject: &str,
        number: i64,
    ) -> Result<Option<GetSchemaVersionOutput>, RegistryError> {
        match self
            .client
            .get_schema_version()
            .schema_id(self.schema_id(subject))
            .schema_version_number(
                SchemaVersionNumber::builder()
                    .version_number(number)
                    .build(),
            )
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.error(
                "glue:GetSchemaVersion",
                &format!("{subject} version {number}"),
                &err,
            )),
        }
    }

    /// Waits for a version to leave `PENDING`; `FAILURE` is Glue's own compatibility refusal.
    async fn settle(
        &self,
        subject: &str,
        version_id: Option<&str>,
    ) -> Result<RegisteredSchema, RegistryError> {
        const OP: &str = "glue:GetSchemaVersion";
        let version_id = version_id.ok_or_else(|| {
            self.malformed(OP, format!("{subject}: no schema version id returned"))
        })?;
        for _ in 0..PENDING_POLLS {
            let out = self
                .client
                .get_schema_version()
                .schema_version_id(version_id)
                .send()
                .await
                .map_err(|err| self.error(OP, version_id, &err))?;
            match out.status() {
                Some(SchemaVersionStatus::Available) | None => {
                    return self.to_registered(Some(subject), &out);
                }
                Some(SchemaVersionStatus::Pending) => tokio::time::sleep(PENDING_INTERVAL).await,
                Some(SchemaVersionStatus::Failure) => {
                    return Err(RegistryError::Incompatible {
                        subject: subject.to_owned(),
                        explanation: format!(
                            "AWS Glue refused version {version_id} (status FAILURE) under the schema's own compatibility setting"
                        ),
                    });
                }
                Some(other) => {
                    return Err(self.malformed(
                        OP,
                        format!("{subject}: version {version_id} is {}", other.as_str()),
                    ));
                }
            }
        }
        Err(RegistryError::Transient {
            registry: self.label(),
            operation: OP,
            message: format!("{subject}: version {version_id} is still PENDING"),
        })
    }

    /// `CreateSchema` with the first version; `None` when the schema appeared meanwhile.
    async fn create(
        &self,
        subject: &str,
        format: SchemaFormat,
        definition: &str,
    ) -> Result<Option<RegisteredSchema>, RegistryError> {
        const OP: &str = "glue:CreateSchema";
        let registry_id = RegistryId::builder()
            .registry_name(&self.registry_name)
            .build();
        match self
            .client
            .create_schema()
            .registry_id(registry_id)
            .schema_name(subject)
            .data_format(glue_format(format))
            // The connector checks compatibility itself (module docs).
            .compatibility(Compatibility::None)
            .schema_definition(definition)
            .send()
            .await
        {
            Ok(out) => self
                .settle(subject, out.schema_version_id())
                .await
                .map(Some),
            Err(err) if is_already_exists(&err) => Ok(None),
            Err(err) if is_not_found(&err) => Err(RegistryError::NotFound {
                registry: self.label(),
                what: format!(
                    "registry {} (creating schema {subject})",
                    self.registry_name
                ),
            }),
            Err(err) => Err(self.error(OP, subject, &err)),
        }
    }
}

#[async_trait]
impl SchemaRegistry for GlueRegistry {
    async fn versions(&self, subject: &str) -> Result<Vec<RegisteredSchema>, RegistryError> {
        let Some((_, latest)) = self.schema(subject).await? else {
            return Ok(Vec::new());
        };
        let outs: Vec<Option<GetSchemaVersionOutput>> = futures::stream::iter(1..=latest)
            .map(|number| self.version(subject, number))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut versions = outs
            .iter()
            .flatten()
            .filter(|out| matches!(out.status(), Some(SchemaVersionStatus::Available) | None))
            .map(|out| self.to_registered(Some(subject), out))
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn register(
        &self,
        subject: &str,
        format: SchemaFormat,
        definition: &str,
    ) -> Result<RegisteredSchema, RegistryError> {
        let held = match self.schema(subject).await? {
            Some((held, _)) => held,
            None => match self.create(subject, format, definition).await? {
                Some(created) => return Ok(created),
                // Another writer created it between GetSchema and CreateSchema.
                None => match self.schema(subject).await? {
                    Some((held, _)) => held,
                    None => {
                        return Err(RegistryError::NotFound {
                            registry: self.label(),
                            what: format!("schema {subject} (reported as existing)"),
                        });
                    }
                },
            },
        };
        if held != format {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                explanation: format!("the subject holds {held} schemas, not {format}"),
            });
        }
        match self
            .client
            .get_schema_by_definition()
            .schema_id(self.schema_id(subject))
            .schema_definition(definition)
            .send()
            .await
        {
            Ok(out) if matches!(out.status(), Some(SchemaVersionStatus::Available)) => {
                return self.settle(subject, out.schema_version_id()).await;
            }
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(self.error("glue:GetSchemaByDefinition", subject, &err)),
        }
        let out = self
            .client
            .register_schema_version()
            .schema_id(self.schema_id(subject))
            .schema_definition(definition)
            .send()
            .await
            .map_err(|err| self.error("glue:RegisterSchemaVersion", subject, &err))?;
        self.settle(subject, out.schema_version_id()).await
    }

    async fn by_id(&self, id: &SchemaId) -> Result<RegisteredSchema, RegistryError> {
        const OP: &str = "glue:GetSchemaVersion";
        let SchemaId::Glue(uuid) = id else {
            return Err(RegistryError::NotFound {
                registry: self.label(),
                what: format!("schema id {id} (not a Glue schema version id)"),
            });
        };
        match self
            .client
            .get_schema_version()
            .schema_version_id(uuid)
            .send()
            .await
        {
            Ok(out) => self.to_registered(None, &out),
            Err(err) if is_not_found(&err) => Err(RegistryError::NotFound {
                registry: self.label(),
                what: format!("schema id {id}"),
            }),
            Err(err) => Err(self.error(OP, uuid, &err)),
        }
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), RegistryError> {
        match self
            .client
            .update_schema()
            .schema_id(self.schema_id(subject))
            // Glue requires a checkpoint version with a compatibility change.
            .schema_version_number(SchemaVersionNumber::builder().latest_version(true).build())
            .compatibility(glue_compatibility(mode))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => Err(RegistryError::NotFound {
                registry: self.label(),
                what: format!("subject {subject}"),
            }),
            Err(err) => Err(self.error("glue:UpdateSchema", subject, &err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_comes_from_the_schema_arn() {
        assert_eq!(
            subject_from_arn("arn:aws:glue:us-east-1:123456789012:schema/reg/orders-value"),
            Some("orders-value")
        );
        assert_eq!(
            subject_from_arn("arn:aws:glue:us-east-1:1:registry/reg"),
            None
        );
    }

    #[test]
    fn modes_map_to_glue_names() {
        let names: Vec<String> = CompatibilityMode::ALL
            .into_iter()
            .map(|m| glue_compatibility(m).as_str().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "BACKWARD",
                "BACKWARD_ALL",
                "FORWARD",
                "FORWARD_ALL",
                "FULL",
                "FULL_ALL",
                "NONE"
            ]
        );
        assert_eq!(glue_format(SchemaFormat::Avro).as_str(), "AVRO");
        assert_eq!(glue_format(SchemaFormat::JsonSchema).as_str(), "JSON");
    }
}
