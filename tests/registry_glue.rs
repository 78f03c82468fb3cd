//! The Glue registry adapter against the local stack (moto): register, idempotent
//! re-registration, a compatible evolution through the connector's check, id round trips,
//! ordered versions, and a breaking change refused by the connector itself (moto's Glue does
//! not check compatibility, so the refusal can only come from `check_and_register`).

use anyhow::{Context, Result, ensure};
use bronze::registry::glue::GlueRegistry;
use bronze::registry::{RegistryError, SchemaId, SchemaRegistry, check, check_and_register};
use bronze::schema::{CompatibilityMode, SchemaFormat};
use integration_tests::{Stack, aws_env};

const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"amount","type":"double"}]}"#;
/// Adds an optional field with a default: backward compatible.
const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"amount","type":"double"},{"name":"note","type":["null","string"],"default":null}]}"#;
/// Adds a required field without a default: new readers cannot read old data.
const V3: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"amount","type":"double"},{"name":"note","type":["null","string"],"default":null},{"name":"currency","type":"string"}]}"#;

fn endpoint() -> String {
    aws_env()
        .into_iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A fresh, uniquely named registry on the local stack; a missing stack is a failure.
async fn fresh() -> Result<(GlueRegistry, aws_sdk_glue::Client)> {
    let sdk = Stack::sdk().await;
    let client = aws_sdk_glue::Client::new(&sdk);
    client.list_registries().send().await.with_context(|| {
        format!(
            "the local stack is not answering at {}: run `make stack-up` (make test does)",
            endpoint()
        )
    })?;
    let name = format!(
        "bronze-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let registry = GlueRegistry::new(&sdk, name);
    registry
        .ensure_registry()
        .await
        .context("create registry")?;
    // Idempotent.
    registry
        .ensure_registry()
        .await
        .context("create registry again")?;
    Ok((registry, client))
}

fn schema_id(registry: &GlueRegistry, subject: &str) -> aws_sdk_glue::types::SchemaId {
    aws_sdk_glue::types::SchemaId::builder()
        .registry_name(registry.registry_name())
        .schema_name(subject)
        .build()
}

#[tokio::test]
async fn evolves_a_subject_and_refuses_a_breaking_change() -> Result<()> {
    let (registry, glue) = fresh().await?;
    let subject = "orders-value";
    let (avro, backward) = (SchemaFormat::Avro, CompatibilityMode::Backward);

    ensure!(registry.versions(subject).await?.is_empty());

    // v1 creates the schema.
    let v1 = registry.register(subject, avro, V1).await?;
    ensure!(v1.version == 1 && v1.subject == subject && v1.format == avro);
    ensure!(
        matches!(&v1.id, SchemaId::Glue(uuid) if SchemaId::glue(uuid).as_ref() == Some(&v1.id))
    );
    ensure!(v1.definition == V1);

    // The schema is created with compatibility NONE: the connector checks itself.
    let described = glue
        .get_schema()
        .schema_id(schema_id(&registry, subject))
        .send()
        .await?;
    ensure!(described.compatibility().map(|c| c.as_str()) == Some("NONE"));
    ensure!(described.data_format().map(|f| f.as_str()) == Some("AVRO"));

    // Identical definitions (same text, or the same JSON laid out differently) are v1.
    ensure!(registry.register(subject, avro, V1).await? == v1);
    let relaid = V1.replace(',', ", ");
    let again = registry.register(subject, avro, &relaid).await?;
    ensure!(again.id == v1.id && again.version == 1, "{again:?}");

    // A compatible v2 through the connector's check.
    let v2 = check_and_register(&registry, subject, avro, backward, V2).await?;
    ensure!(v2.version == 2 && v2.id != v1.id, "{v2:?}");
    // Re-registering through the check is idempotent too.
    ensure!(check_and_register(&registry, subject, avro, backward, V2).await? == v2);

    // by_id round trip (subject from the schema ARN).
    let fetched = registry.by_id(&v2.id).await?;
    ensure!(fetched == v2, "{fetched:?} != {v2:?}");
    ensure!(fetched.definition == V2);

    // Versions, oldest first.
    let versions = registry.versions(subject).await?;
    ensure!(versions == vec![v1.clone(), v2.clone()], "{versions:?}");

    // v3 breaks BACKWARD: refused by the connector, dry run and for real.
    let dry = check(&registry, subject, avro, backward, V3).await;
    ensure!(
        matches!(dry, Err(RegistryError::Incompatible { .. })),
        "{dry:?}"
    );
    let err = check_and_register(&registry, subject, avro, backward, V3)
        .await
        .expect_err("v3 must be refused");
    let RegistryError::Incompatible {
        subject: refused,
        explanation,
    } = &err
    else {
        anyhow::bail!("expected Incompatible, got {err}");
    };
    ensure!(refused == subject);
    ensure!(explanation.contains("\"currency\""), "{explanation}");
    ensure!(explanation.contains("BACKWARD"), "{explanation}");
    ensure!(!err.is_transient());

    // moto's Glue still has exactly two versions, asked without the adapter.
    let described = glue
        .get_schema()
        .schema_id(schema_id(&registry, subject))
        .send()
        .await?;
    ensure!(
        described.latest_schema_version() == Some(2),
        "latest version is {:?}",
        described.latest_schema_version()
    );
    let v3_lookup = glue
        .get_schema_by_definition()
        .schema_id(schema_id(&registry, subject))
        .schema_definition(V3)
        .send()
        .await;
    ensure!(v3_lookup.is_err(), "v3 reached Glue: {v3_lookup:?}");
    ensure!(registry.versions(subject).await?.len() == 2);
    Ok(())
}

#[tokio::test]
async fn ids_and_subjects_that_do_not_exist() -> Result<()> {
    let (registry, _) = fresh().await?;
    let unknown = SchemaId::glue("00000000-0000-4000-8000-000000000000").unwrap();
    let err = registry.by_id(&unknown).await.expect_err("unknown id");
    ensure!(
        matches!(&err, RegistryError::NotFound { what, .. } if what.contains("00000000-0000-4000-8000-000000000000")),
        "{err}"
    );
    ensure!(!err.is_transient());
    let confluent = registry.by_id(&SchemaId::Confluent(1)).await;
    ensure!(matches!(confluent, Err(RegistryError::NotFound { .. })));
    ensure!(registry.versions("nobody").await?.is_empty());

    // A registry that does not exist: registering names it.
    let sdk = Stack::sdk().await;
    let missing = GlueRegistry::new(&sdk, format!("missing-{}", uuid::Uuid::new_v4().simple()));
    let err = missing
        .register("s", SchemaFormat::Avro, V1)
        .await
        .expect_err("no registry");
    ensure!(
        matches!(&err, RegistryError::NotFound { what, .. } if what.contains(missing.registry_name())),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn json_schema_subjects_and_compatibility_settings() -> Result<()> {
    let (registry, glue) = fresh().await?;
    let subject = "users-value";
    let json_v1 = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
    let v1 = check_and_register(
        &registry,
        subject,
        SchemaFormat::JsonSchema,
        CompatibilityMode::FullTransitive,
        json_v1,
    )
    .await?;
    ensure!(v1.format == SchemaFormat::JsonSchema && v1.version == 1);
    let described = glue
        .get_schema()
        .schema_id(schema_id(&registry, subject))
        .send()
        .await?;
    ensure!(described.data_format().map(|f| f.as_str()) == Some("JSON"));
    ensure!(registry.by_id(&v1.id).await?.format == SchemaFormat::JsonSchema);

    // The subject's format cannot change.
    let err = check_and_register(
        &registry,
        subject,
        SchemaFormat::Avro,
        CompatibilityMode::None,
        V1,
    )
    .await
    .expect_err("format change");
    ensure!(
        matches!(&err, RegistryError::Incompatible { explanation, .. } if explanation.contains("json_schema")),
        "{err}"
    );
    let err = registry
        .register(subject, SchemaFormat::Avro, V1)
        .await
        .expect_err("format change");
    ensure!(matches!(err, RegistryError::Incompatible { .. }), "{err}");

    // An operator may also let Glue guard producers that register on their own.
    registry
        .set_compatibility(subject, CompatibilityMode::BackwardTransitive)
        .await?;
    let described = glue
        .get_schema()
        .schema_id(schema_id(&registry, subject))
        .send()
        .await?;
    ensure!(described.compatibility().map(|c| c.as_str()) == Some("BACKWARD_ALL"));
    Ok(())
}
