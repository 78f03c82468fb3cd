//! The publisher on the AWS Glue Data Catalog, against moto (Glue and S3): the first publish
//! creates the Glue database and an Iceberg table Athena can read (`table_type=ICEBERG`,
//! `metadata_location`, columns); pyiceberg's own Glue catalog and DuckDB read every
//! committed record once, byte for byte; a second publish appends a snapshot; a publish that
//! crashes before or after its commit is redone exactly once. The Bronze objects and the
//! warehouse are in one moto bucket, so the rerun also sweeps the crashed attempt's files.
//!
//! Conflicts are tested on the SQL catalog only (`publish_exactly_once.rs`): moto's Glue does
//! not check `VersionId` on `UpdateTable`, so it cannot show the catalog's own check.

mod common;

use common::Env;
use publish::publisher::PublishStep;
use std::collections::HashMap;

/// The Glue table's parameters and column names.
async fn glue_table(env: &Env) -> (HashMap<String, String>, Vec<String>, String) {
    let glue = aws_sdk_glue::Client::new(&common::moto_sdk().await);
    let table = glue
        .get_table()
        .database_name(&env.ident.namespace().as_ref()[0])
        .name(env.ident.name())
        .send()
        .await
        .expect("the Glue table")
        .table
        .expect("a table");
    let descriptor = table.storage_descriptor.expect("a storage descriptor");
    let columns = descriptor
        .columns()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    (
        table.parameters.unwrap_or_default(),
        columns,
        descriptor.location.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_glue_appends_and_reruns_exactly_once() {
    let mut env = Env::glue().await;
    let catalog = env.catalog().await;

    // The first publish creates the database and the table.
    env.land(20, 4).await;
    let first = env.publish(catalog.as_ref()).await;
    assert_eq!((first.records, first.entries, first.files), (80, 20, 8));
    let (params, columns, location) = glue_table(&env).await;
    assert_eq!(
        params.get("table_type").map(String::as_str),
        Some("ICEBERG")
    );
    let first_metadata = params["metadata_location"].clone();
    assert!(
        first_metadata.starts_with(&format!(
            "{}/{}.db/records/metadata/",
            env.warehouse(),
            env.ident.namespace().as_ref()[0]
        )),
        "{first_metadata}"
    );
    assert!(location.ends_with(".db/records"), "{location}");
    for column in [
        "stream",
        "cursor",
        "timestamp",
        "payload",
        "payload_base64",
        "log_position",
    ] {
        assert!(
            columns.iter().any(|c| c == column),
            "{column} in {columns:?}"
        );
    }
    env.check().await;

    // Nothing new: no snapshot, the Glue table does not move.
    assert_eq!(env.publish(catalog.as_ref()).await.snapshot_id, None);
    assert_eq!(
        glue_table(&env).await.0["metadata_location"],
        first_metadata
    );

    // A second publish appends a snapshot; Glue points at the new metadata.
    env.land(5, 2).await;
    let second = env.publish(catalog.as_ref()).await;
    assert_eq!((second.records, second.entries), (20, 12));
    let (params, _, _) = glue_table(&env).await;
    assert_ne!(params["metadata_location"], first_metadata);
    assert_eq!(params["previous_metadata_location"], first_metadata);
    let read = env.check().await;
    assert_eq!(read["summary"]["operation"], "append");
    assert_eq!(
        read["summary"]["bronze.watermark.kafka#orders#0"],
        "position:8"
    );

    // A publish that crashes before or after its commit, then a rerun in a new process.
    for step in [PublishStep::BeforeCommit, PublishStep::AfterCommit] {
        env.land(3, 1).await;
        env.crash_at(catalog.as_ref(), step).await;
        let catalog = env.catalog().await;
        let rerun = env.publish(catalog.as_ref()).await;
        match step {
            // The crashed attempt's files are swept, its records published by the rerun.
            PublishStep::BeforeCommit => {
                assert_eq!(rerun.records, 12, "{step:?}: {rerun:?}");
                assert!(rerun.orphans_deleted > 0, "{step:?}: {rerun:?}");
            }
            // The crashed attempt's snapshot stands: nothing left to publish.
            _ => assert_eq!(rerun.snapshot_id, None, "{step:?}: {rerun:?}"),
        }
        env.check().await;
    }
}
