//! The publisher on Amazon S3 Tables, against moto (S3 Tables and S3): the first publish
//! creates the namespace and the table in a fresh table bucket, in the warehouse location S3
//! Tables chose (its own moto bucket); pyiceberg (on the table's current metadata) and DuckDB
//! read every committed record once, byte for byte; a second publish appends a snapshot; a
//! publish that crashes before or after its commit is redone exactly once. A commit planned
//! on a stale snapshot is refused (iceberg-catalog-s3tables checks its requirements against
//! the table it loads), and S3 Tables itself refuses a metadata update whose version token is
//! not the table's current one (moto checks it).
//!
//! An S3 Tables warehouse cannot be listed nor its objects deleted through the S3 API (moto
//! refuses ListObjects and DeleteObject on it, as AWS does), so the files of a crashed
//! attempt stay until S3 Tables' unreferenced file removal deletes them; the table never
//! lists them.

mod common;

use common::Env;
use publish::publisher::PublishStep;

/// The table as S3 Tables records it (metadata location, version token).
async fn get_table(env: &Env) -> aws_sdk_s3tables::operation::get_table::GetTableOutput {
    let (client, arn) = env.s3tables_client();
    client
        .get_table()
        .table_bucket_arn(arn)
        .namespace(&env.ident.namespace().as_ref()[0])
        .name(env.ident.name())
        .send()
        .await
        .expect("get the table")
}

/// The table's metadata location as S3 Tables records it.
async fn metadata_location(env: &Env) -> String {
    get_table(env)
        .await
        .metadata_location
        .expect("a metadata location")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_s3tables_appends_and_reruns_exactly_once() {
    let mut env = Env::s3tables().await;
    let catalog = env.catalog().await;

    // The first publish creates the namespace and the table where S3 Tables puts it.
    env.land(20, 4).await;
    let first = env.publish(catalog.as_ref()).await;
    assert_eq!((first.records, first.entries, first.files), (80, 20, 8));
    let location = env.s3tables_location().await;
    assert!(
        location.starts_with("s3://") && location.ends_with("--table-s3"),
        "{location}"
    );
    let table = catalog.load_table(&env.ident).await.expect("load");
    assert_eq!(
        table.metadata().location().trim_end_matches('/'),
        location.trim_end_matches('/')
    );
    let first_metadata = table.metadata_location().expect("a metadata location");
    assert!(
        first_metadata.starts_with(&format!("{location}/metadata/")),
        "{first_metadata}"
    );
    env.check().await;

    // Nothing new: no snapshot, the table does not move.
    assert_eq!(env.publish(catalog.as_ref()).await.snapshot_id, None);
    assert_eq!(metadata_location(&env).await, first_metadata);

    // A second publish appends a snapshot; S3 Tables points at the new metadata.
    env.land(5, 2).await;
    let second = env.publish(catalog.as_ref()).await;
    assert_eq!((second.records, second.entries), (20, 12));
    assert_ne!(metadata_location(&env).await, first_metadata);
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
            // The rerun publishes the crashed attempt's records. It cannot sweep the
            // crashed attempt's files (the warehouse cannot be listed); S3 Tables'
            // unreferenced file removal deletes them. The table does not list them: the
            // check below reads exactly the committed records once.
            PublishStep::BeforeCommit => {
                assert_eq!(rerun.records, 12, "{step:?}: {rerun:?}");
                assert_eq!(rerun.orphans_deleted, 0, "{step:?}: {rerun:?}");
            }
            // The crashed attempt's snapshot stands: nothing left to publish.
            _ => assert_eq!(rerun.snapshot_id, None, "{step:?}: {rerun:?}"),
        }
        env.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_commit_is_refused_and_the_version_token_is_checked() {
    let mut env = Env::s3tables().await;
    let catalog = env.catalog().await;
    let (stale, current) = common::stale::stale_and_current(&mut env, catalog.as_ref()).await;
    // A commit planned on the old snapshot, without the publisher's fence: refused.
    common::stale::assert_stale_append_refused(catalog.as_ref(), &stale, &current).await;

    // Under that check, S3 Tables' own: an update carrying the version token of a load that
    // another update followed is refused (ConflictException), and the table stays put.
    let (client, arn) = env.s3tables_client();
    let (ns, name) = (&env.ident.namespace().as_ref()[0], env.ident.name());
    let loaded = get_table(&env).await;
    let location = loaded.metadata_location.clone().expect("a location");
    let update = |token: &str, location: &str| {
        client
            .update_table_metadata_location()
            .table_bucket_arn(arn)
            .namespace(ns)
            .name(name)
            .version_token(token)
            .metadata_location(location)
            .send()
    };
    update(&loaded.version_token, &location)
        .await
        .expect("an update with the current token");
    let stale_token = update(
        &loaded.version_token,
        stale.metadata_location().expect("stale location"),
    )
    .await;
    assert!(
        stale_token
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_conflict_exception()),
        "{stale_token:?}"
    );
    assert_eq!(metadata_location(&env).await, location);

    // The publisher goes on from the table as it is: exactly once.
    env.land(2, 2).await;
    assert_eq!(env.publish(catalog.as_ref()).await.records, 8);
    env.check().await;
}
