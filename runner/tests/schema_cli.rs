//! `streaming-connector schema check|register` against AWS Glue on the local stack (moto):
//! compatible versions register, an incompatible change is refused with an explanation and a
//! non-zero exit, and nothing is registered (moto's Glue does not check compatibility: the
//! connector does).

use bronze::registry::SchemaRegistry;
use bronze::registry::glue::GlueRegistry;
use integration_tests::{Stack, aws_env};
use std::process::Command;

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;
const V3: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""},{"name":"customer","type":"string"}]}"#;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streaming-connector"))
        .args(args)
        .envs(aws_env())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn register_compatible_versions_and_refuse_a_breaking_change() {
    let stack = Stack::names().await.unwrap(); // probes the local stack; fails clearly without it
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (registry, subject) = (
        format!("reg-{}", &id[..8]),
        format!("orders-value-{}", &id[..8]),
    );
    let dir = std::env::temp_dir().join(format!("schema-cli-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("connector.yaml");
    std::fs::write(
        &config,
        format!(
            r#"manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: {{ layer: bronze }}
runtime: {{ kind: cli }}
defaults: {{ key_strategy: raw, cursor_strategy: last_landed }}
registries:
  glue: {{ registry_name: {registry} }}
streams:
  strategy: config_defined
  items:
    - name: orders
      source: kafka
      schema: {{ registry: glue, subject: {subject}, format: avro, wire_format: glue, compatibility: BACKWARD, definition: orders.avsc }}
"#
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let avsc = dir.join("orders.avsc");

    std::fs::write(&avsc, V1).unwrap();
    let (ok, out) = run(&["schema", "register", "--config", config]);
    assert!(ok, "{out}");
    assert!(out.contains("registered as version 1"), "{out}");

    std::fs::write(&avsc, V2).unwrap();
    let (ok, out) = run(&["schema", "check", "--config", config]);
    assert!(ok && out.contains("compatible under BACKWARD"), "{out}");
    let (ok, out) = run(&["schema", "register", "--config", config]);
    assert!(ok && out.contains("registered as version 2"), "{out}");

    std::fs::write(&avsc, V3).unwrap();
    let (ok, out) = run(&["schema", "check", "--config", config]);
    assert!(!ok, "an incompatible change must exit non-zero: {out}");
    assert!(
        out.contains("customer"),
        "the explanation names the field: {out}"
    );
    let (ok, out) = run(&["schema", "register", "--config", config]);
    assert!(!ok, "{out}");

    let glue = GlueRegistry::new(&stack.sdk, &registry);
    let versions = glue.versions(&subject).await.unwrap();
    assert_eq!(versions.len(), 2, "the breaking version was not registered");
    assert_eq!(versions[1].definition.replace(' ', ""), V2.replace(' ', ""));
}
