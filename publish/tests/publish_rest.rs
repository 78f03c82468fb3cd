//! The publisher on an Iceberg REST catalog: `tests/rest_catalog_server.py` (pyiceberg's
//! `SqlCatalog` behind the REST API, checking every commit's requirements and answering 409
//! on a conflict) runs for each test on a free port and demands a bearer token. The table is
//! read back by pyiceberg and DuckDB: every committed record once, byte for byte; a publish
//! that crashes at any step is redone exactly once; two publishers at once publish exactly
//! once; a commit planned on a stale snapshot is refused by the server itself.

mod common;

use common::Env;
use publish::publisher::PublishStep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_rest_appends_and_reruns_exactly_once() {
    let mut env = Env::rest();
    let catalog = env.catalog().await;

    env.land(20, 4).await;
    let first = env.publish(catalog.as_ref()).await;
    assert_eq!((first.records, first.entries, first.files), (80, 20, 8));
    // The server chose the table's location, under the warehouse it serves.
    let table = catalog.load_table(&env.ident).await.expect("load");
    assert_eq!(
        table.metadata().location(),
        format!("{}/bronze/records", env.warehouse())
    );
    env.check().await;

    // Nothing new: no snapshot.
    assert_eq!(env.publish(catalog.as_ref()).await.snapshot_id, None);

    env.land(5, 2).await;
    let second = env.publish(catalog.as_ref()).await;
    assert_eq!((second.records, second.entries), (20, 12));
    let read = env.check().await;
    assert_eq!(read["summary"]["operation"], "append");
    assert_eq!(
        read["summary"]["bronze.watermark.kafka#orders#0"],
        "position:8"
    );

    // A crash at every step, then a rerun in a new process: exactly once, orphans swept.
    for step in [
        PublishStep::BeforeWrite,
        PublishStep::AfterFirstFile,
        PublishStep::BeforeCommit,
        PublishStep::AfterCommit,
    ] {
        env.land(3, 1).await;
        env.crash_at(catalog.as_ref(), step).await;
        env.land(2, 2).await;
        let catalog = env.catalog().await;
        let rerun = env.publish(catalog.as_ref()).await;
        let leftover = matches!(
            step,
            PublishStep::AfterFirstFile | PublishStep::BeforeCommit
        );
        assert_eq!(rerun.orphans_deleted > 0, leftover, "{step:?}: {rerun:?}");
        env.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_at_once_through_rest_publish_exactly_once() {
    let mut env = Env::rest();
    let first = env.catalog().await;
    let second = env.catalog().await;
    let snapshots = env
        .two_publishers_at_once(first.as_ref(), second.as_ref(), 4)
        .await;
    assert!(snapshots >= 4);
    env.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_stale_commit() {
    let mut env = Env::rest();
    let catalog = env.catalog().await;
    let (stale, current) = common::stale::stale_and_current(&mut env, catalog.as_ref()).await;
    // The client sends the old snapshot's requirements as they are: the server answers 409.
    common::stale::assert_stale_append_refused(catalog.as_ref(), &stale, &current).await;
    env.land(2, 2).await;
    assert_eq!(env.publish(catalog.as_ref()).await.records, 8);
    env.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warehouse_and_the_token_reach_the_server() {
    let env = Env::rest();
    // The server serves one warehouse and demands its token: a catalog asking for another
    // warehouse, or without the token, fails on its first call.
    let other = publish::catalog::open(&env.catalog_spec(), "file:///elsewhere", env.props())
        .await
        .expect("open");
    let err = other
        .list_namespaces(None)
        .await
        .expect_err("another warehouse");
    assert!(err.to_string().contains("no warehouse"), "{err}");
    let anonymous = publish::catalog::open(
        &env.catalog_spec(),
        &env.warehouse(),
        std::collections::HashMap::new(),
    )
    .await
    .expect("open");
    let err = anonymous.list_namespaces(None).await.expect_err("no token");
    assert!(err.to_string().contains("bearer token"), "{err}");
    let catalog = env.catalog().await;
    assert_eq!(catalog.list_namespaces(None).await.expect("list"), vec![]);

    // `https://` has a TLS client (iceberg-catalog-rest's reqwest has none of its own): a
    // plain HTTP server fails the handshake, rather than the URI being refused.
    let https = publish::catalog::CatalogSpec::Rest {
        uri: env
            .catalog_spec()
            .to_string()
            .replace("rest:http://", "https://"),
    };
    let tls = publish::catalog::open(&https, &env.warehouse(), env.props())
        .await
        .expect("open");
    let err = format!(
        "{:?}",
        tls.list_namespaces(None).await.expect_err("not TLS")
    );
    assert!(!err.contains("scheme is not http"), "{err}");
    assert!(err.contains("error sending request"), "{err}");
}
