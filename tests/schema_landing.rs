//! Landing with a schema, through `cargo lambda invoke`, with the schema in AWS Glue on the
//! local stack: Glue-framed Avro payloads are decoded and land with their schema id and
//! version; a payload that does not decode and one naming an unknown schema id go to the DLQ
//! with the schema id and the reason.

use base64::Engine as _;
use bronze::record::Source;
use bronze::registry::SchemaId;
use bronze::registry::SchemaRegistry;
use bronze::registry::glue::GlueRegistry;
use bronze::schema::SchemaFormat;
use bronze::wire::frame;
use integration_tests::*;
use serde_json::json;

const AVRO: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"sku","type":"string"}]}"#;

/// Avro binary encoding of `{"id": id, "sku": sku}` (zig-zag varints, length-prefixed string).
fn datum(id: i64, sku: &str) -> Vec<u8> {
    fn long(out: &mut Vec<u8>, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut out = Vec::new();
    long(&mut out, id);
    long(&mut out, sku.len() as i64);
    out.extend_from_slice(sku.as_bytes());
    out
}

fn kafka_record(offset: i64, value: &[u8]) -> serde_json::Value {
    json!({"topic": "orders", "partition": 0, "offset": offset, "timestamp": 1795737600000i64 + offset,
           "timestampType": "CREATE_TIME", "key": null,
           "value": base64::engine::general_purpose::STANDARD.encode(value), "headers": []})
}

#[tokio::test]
async fn glue_framed_avro_lands_decoded_and_bad_payloads_are_dead_lettered() {
    let stack = Stack::new().await.unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (registry_name, subject) = (format!("reg-{}", &id[..8]), format!("orders-{}", &id[..8]));
    let glue = GlueRegistry::new(&stack.sdk, &registry_name);
    glue.ensure_registry().await.unwrap();
    let v1 = glue
        .register(&subject, SchemaFormat::Avro, AVRO)
        .await
        .unwrap();
    assert!(matches!(v1.id, SchemaId::Glue(_)));

    let config = format!(
        r#"manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: {{ layer: bronze }}
runtime: {{ kind: aws_lambda }}
defaults: {{ key_strategy: raw, cursor_strategy: last_landed }}
registries:
  glue: {{ registry_name: {registry_name} }}
streams:
  strategy: config_defined
  items:
    - name: orders
      source: kafka
      schema: {{ registry: glue, subject: {subject}, format: avro, wire_format: glue }}
"#
    );
    stack
        .s3()
        .put_object()
        .bucket(&stack.bucket)
        .key("connector.yaml")
        .body(config.into_bytes().into())
        .send()
        .await
        .unwrap();
    let uri = format!("s3://{}/connector.yaml", stack.bucket);
    let watch = Watch::start(&stack, &[("CONNECTOR_CONFIG", &uri)]).unwrap();

    let unknown = SchemaId::Glue("00000000-0000-4000-8000-000000000000".into());
    let event = json!({"eventSource": "aws:kafka", "records": {"orders-0": [
        kafka_record(1, &frame(&v1.id, &datum(7, "A-1"))),
        kafka_record(2, &frame(&v1.id, &[0x0e])),
        kafka_record(3, &frame(&unknown, &datum(8, "B-2"))),
        kafka_record(4, &frame(&v1.id, &datum(9, "C-3"))),
    ]}});
    let response = watch
        .invoke("kafka-consumer", &event)
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log()));
    assert_eq!(response, json!({"batchItemFailures": []}));

    let lines = stack.committed_lines(Source::Kafka, "orders", "0").await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["cursor"], "1");
    assert_eq!(lines[0]["payload"], json!({"id": 7, "sku": "A-1"}));
    assert_eq!(lines[0]["payload_encoding"], "avro");
    assert_eq!(lines[0]["schema_id"], v1.id.to_string());
    assert_eq!(lines[0]["schema_version"], 1);
    assert_eq!(lines[1]["payload"], json!({"id": 9, "sku": "C-3"}));

    let mut letters = stack.dead_letters().await;
    letters.sort_by_key(|l| l["cursor"].as_str().unwrap().to_owned());
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["cursor"], "2");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&v1.id.to_string()) && reason.contains("cannot decode"),
        "{reason}"
    );
    assert_eq!(letters[1]["cursor"], "3");
    let reason = letters[1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("glue:00000000-0000-4000-8000-000000000000")
            && reason.contains("unknown schema id"),
        "{reason}"
    );
    let checkpoint = stack
        .checkpoint(Source::Kafka, "orders", "0")
        .await
        .unwrap();
    assert_eq!(bronze::cursor::unpad(&checkpoint.cursor), "4");
}
