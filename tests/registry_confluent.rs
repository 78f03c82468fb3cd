//! The Confluent-compatible registry adapter against an in-process server that follows the
//! published Schema Registry REST API (`helpers/confluent_server.rs`; a test double, not a
//! real registry, which cannot run here without Kafka): register, fetch, list and resolve
//! ids; idempotent re-registration; 404 handling; error classification; and the connector's
//! own compatibility check refusing a breaking JSON Schema change.

use base64::Engine;
use bronze::registry::confluent::{CONTENT_TYPE_V1, ConfluentRegistry};
use bronze::registry::{
    RegistryError, SchemaCache, SchemaId, SchemaRegistry, check, check_and_register,
};
use bronze::schema::{CompatibilityMode, SchemaFormat};
use integration_tests::confluent_server::ConfluentServer;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const AVRO_V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const AVRO_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#;

const JSON_V1: &str = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":false}"#;
/// Adds an optional property to a closed model: backward compatible.
const JSON_V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"email":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
/// Makes `email` required: old documents without it are no longer valid.
const JSON_V3: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"email":{"type":"string"}},"required":["id","email"],"additionalProperties":false}"#;

fn registry(server: &ConfluentServer) -> ConfluentRegistry {
    ConfluentRegistry::new(&server.url(), None).expect("registry")
}

#[tokio::test]
async fn register_fetch_list_and_resolve_ids() {
    let server = ConfluentServer::start();
    let registry = registry(&server);
    let subject = "orders-value";

    let v1 = registry
        .register(subject, SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap();
    assert_eq!(v1.id, SchemaId::Confluent(1));
    assert_eq!((v1.subject.as_str(), v1.version), (subject, 1));
    assert_eq!(v1.format, SchemaFormat::Avro);
    assert_eq!(v1.definition, AVRO_V1);

    // Idempotent: the same schema (also with another layout) is the same version.
    assert_eq!(
        registry
            .register(subject, SchemaFormat::Avro, AVRO_V1)
            .await
            .unwrap(),
        v1
    );
    let relaid = AVRO_V1.replace(',', ", ");
    assert_eq!(
        registry
            .register(subject, SchemaFormat::Avro, &relaid)
            .await
            .unwrap()
            .id,
        v1.id
    );
    assert_eq!(server.version_count(subject), 1);

    let v2 = registry
        .register(subject, SchemaFormat::Avro, AVRO_V2)
        .await
        .unwrap();
    assert_eq!((v2.id.clone(), v2.version), (SchemaId::Confluent(2), 2));

    let versions = registry.versions(subject).await.unwrap();
    assert_eq!(versions, vec![v1.clone(), v2.clone()]);

    // by_id round trip, with subject and version from /schemas/ids/{id}/versions.
    assert_eq!(registry.by_id(&v2.id).await.unwrap(), v2);

    // A JSON Schema subject: schemaType travels both ways.
    let json = registry
        .register("users-value", SchemaFormat::JsonSchema, JSON_V1)
        .await
        .unwrap();
    assert_eq!(json.format, SchemaFormat::JsonSchema);
    assert_eq!(json.id, SchemaId::Confluent(3));
    let fetched = registry.by_id(&json.id).await.unwrap();
    assert_eq!(fetched.format, SchemaFormat::JsonSchema);
    assert_eq!(fetched.definition, JSON_V1);

    // Every request with a body used the registry's media type.
    let received = server.received();
    let posts: Vec<_> = received.iter().filter(|r| r.method == "POST").collect();
    assert!(!posts.is_empty());
    assert!(
        posts
            .iter()
            .all(|r| r.content_type.as_deref() == Some(CONTENT_TYPE_V1)),
        "{posts:?}"
    );
}

#[tokio::test]
async fn subjects_are_encoded_in_the_path() {
    let server = ConfluentServer::start();
    let registry = registry(&server);
    let subject = "team/orders value";
    let v1 = registry
        .register(subject, SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap();
    assert_eq!(v1.subject, subject);
    assert_eq!(registry.versions(subject).await.unwrap(), vec![v1]);
    assert!(
        server
            .received()
            .iter()
            .any(|r| r.path == "/subjects/team%2Forders%20value/versions"),
        "{:?}",
        server.received()
    );
}

#[tokio::test]
async fn missing_subjects_and_ids() {
    let server = ConfluentServer::start();
    let registry = registry(&server);

    // 40401: no subject is an empty history, not an error.
    assert!(registry.versions("nobody").await.unwrap().is_empty());

    // 40403: an unknown id is NotFound (permanent: a record naming it is poison).
    let err = registry.by_id(&SchemaId::Confluent(999)).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::NotFound { what, .. } if what.contains("confluent:999") && what.contains("40403")),
        "{err}"
    );
    assert!(!err.is_transient());

    // A Glue id cannot live in a Confluent registry.
    let glue = SchemaId::glue("b6f5e1b2-0d1c-4e5f-9a8b-7c6d5e4f3a2b").unwrap();
    assert!(matches!(
        registry.by_id(&glue).await,
        Err(RegistryError::NotFound { .. })
    ));

    // A 404 without the subject error code (e.g. a wrong base path) is not an empty history.
    let wrong = ConfluentRegistry::new(&format!("{}/wrong/prefix", server.url()), None).unwrap();
    server.reply_once(
        "GET",
        "/wrong/prefix/subjects/orders/versions",
        404,
        json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
    );
    assert!(matches!(
        wrong.versions("orders").await,
        Err(RegistryError::NotFound { .. })
    ));

    // Registries older than 5.5 have no /schemas/ids/{id}/versions: subject "" and version 0.
    let v1 = registry
        .register("orders-value", SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap();
    server.reply_once(
        "GET",
        "/schemas/ids/1/versions",
        404,
        json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
    );
    let bare = registry.by_id(&v1.id).await.unwrap();
    assert_eq!((bare.subject.as_str(), bare.version), ("", 0));
    assert_eq!(bare.definition, AVRO_V1);
}

#[tokio::test]
async fn check_and_register_refuses_an_incompatible_json_schema_change() {
    let server = ConfluentServer::start();
    let registry = registry(&server);
    let subject = "users-value";
    let (json, backward) = (SchemaFormat::JsonSchema, CompatibilityMode::Backward);

    let v1 = check_and_register(&registry, subject, json, backward, JSON_V1)
        .await
        .unwrap();
    let v2 = check_and_register(&registry, subject, json, backward, JSON_V2)
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));

    check(&registry, subject, json, backward, JSON_V3)
        .await
        .expect_err("dry run must refuse");
    let err = check_and_register(&registry, subject, json, backward, JSON_V3)
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
    assert!(explanation.contains("\"email\""), "{explanation}");
    assert!(explanation.contains("BACKWARD"), "{explanation}");
    // Nothing reached the registry: the test server would have stored anything.
    assert_eq!(server.version_count(subject), 2);
    let posts_after_v2 = server
        .received()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts_after_v2, 4, "two registrations, two lookups");

    // FORWARD allows it (old readers ignore nothing they need).
    let v3 = check_and_register(
        &registry,
        subject,
        json,
        CompatibilityMode::Forward,
        JSON_V3,
    )
    .await
    .unwrap();
    assert_eq!(v3.version, 3);
}

#[tokio::test]
async fn registry_answers_are_classified() {
    let server = ConfluentServer::start();
    let registry = registry(&server);

    // The registry's own compatibility refusal.
    server.reply_next(
        409,
        json!({"error_code": 409, "message": "Schema being registered is incompatible with an earlier schema"}),
    );
    let err = registry
        .register("s", SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Incompatible { subject, explanation } if subject == "s" && explanation.contains("incompatible with an earlier schema")),
        "{err}"
    );

    server.reply_next(
        500,
        json!({"error_code": 50001, "message": "Error in the backend data store"}),
    );
    let err = registry.versions("s").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("50001"), "{err}");

    server.reply_next(
        429,
        json!({"error_code": 429, "message": "Too many requests"}),
    );
    assert!(
        registry
            .by_id(&SchemaId::Confluent(1))
            .await
            .unwrap_err()
            .is_transient()
    );

    server.reply_next(
        422,
        json!({"error_code": 42201, "message": "Invalid schema"}),
    );
    let err = registry
        .register("s", SchemaFormat::Avro, "not a schema")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Permanent { .. }), "{err}");

    // A 2xx body that is not the documented shape is permanent.
    server.reply_next(200, json!({"unexpected": true}));
    let err = registry.by_id(&SchemaId::Confluent(1)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Permanent { .. }), "{err}");

    // A registry that does not answer in time is transient.
    let impatient =
        ConfluentRegistry::with_timeout(&server.url(), None, Duration::from_millis(200)).unwrap();
    server.delay_next(Duration::from_secs(2));
    let err = impatient.versions("s").await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    // Nobody listening is transient too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = ConfluentRegistry::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    assert!(closed.versions("s").await.unwrap_err().is_transient());
}

#[tokio::test]
async fn basic_auth_and_compatibility_config() {
    let server = ConfluentServer::start();
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("api-key:api-secret")
    );
    server.require_authorization(&header);

    let anonymous = registry(&server);
    let err = anonymous.versions("s").await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Permanent { message, .. } if message.contains("401")),
        "{err}"
    );

    let registry = ConfluentRegistry::new(
        &server.url(),
        Some(("api-key".to_owned(), "api-secret".to_owned())),
    )
    .unwrap();
    registry
        .register("s", SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap();
    registry
        .set_compatibility("s", CompatibilityMode::FullTransitive)
        .await
        .unwrap();
    assert_eq!(
        server.compatibility("s").as_deref(),
        Some("FULL_TRANSITIVE")
    );
    assert!(!format!("{registry:?}").contains("api-secret"));
}

#[tokio::test]
async fn the_cache_resolves_each_id_with_one_round_trip() {
    let server = ConfluentServer::start();
    let registry = Arc::new(registry(&server));
    let v1 = registry
        .register("orders-value", SchemaFormat::Avro, AVRO_V1)
        .await
        .unwrap();
    let cache = SchemaCache::new(registry);
    let before = server.received().len();
    for _ in 0..5 {
        assert_eq!(*cache.get(&v1.id).await.unwrap(), v1);
    }
    // One by_id: GET /schemas/ids/1 and GET /schemas/ids/1/versions.
    assert_eq!(server.received().len() - before, 2);
}
