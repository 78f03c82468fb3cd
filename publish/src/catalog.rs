//! Catalogs: the SQL catalog (SQLite for the local stack) and the fence on appends.
//!
//! Iceberg's `Transaction::commit` reloads the table and, when another writer committed in
//! between, re-applies a fast append on top of the new snapshot. That is right for plain
//! appends and wrong here: the append carries records chosen from the old watermarks, so a
//! rebase would publish them twice. [`Fenced`] refuses to load a table whose current
//! snapshot is not the one the publish was planned on; the catalog's own check (the SQL
//! catalog verifies the commit's `assert-ref-snapshot-id` against the row it updates with a
//! compare-and-set on the metadata location) closes the window after that load.

use async_trait::async_trait;
use iceberg::io::StorageFactory;
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use iceberg_catalog_sql::{SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use std::collections::HashMap;
use std::sync::Arc;

/// The catalog name in the SQL catalog's tables (`pyiceberg` must load it by this name).
pub const CATALOG_NAME: &str = "bronze";

/// Opens the SQL catalog at `uri` (e.g. `sqlite:/path/catalog.db`; a SQLite file is created
/// when missing) with tables under `warehouse` (`file:///...` or `s3://bucket/prefix`).
/// `props` carries storage settings such as `s3.endpoint`.
pub async fn open_sql(
    uri: &str,
    warehouse: &str,
    props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>> {
    let uri = if uri.starts_with("sqlite:") && !uri.contains('?') {
        format!("{uri}?mode=rwc")
    } else {
        uri.to_owned()
    };
    let mut all = props;
    all.insert(SQL_CATALOG_PROP_URI.to_owned(), uri);
    all.insert(SQL_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse.to_owned());
    all.insert("sql_bind_style".to_owned(), "QMark".to_owned());
    let factory: Arc<dyn StorageFactory> = Arc::new(OpenDalResolvingStorageFactory::new());
    let catalog = SqlCatalogBuilder::default()
        .with_storage_factory(factory)
        .load(CATALOG_NAME, all)
        .await?;
    Ok(Arc::new(catalog))
}

/// Loads the Bronze table, creating its namespace and the table (schema and partition spec
/// of [`crate::table`]) when missing. Safe to race: a creation that lost is reloaded.
pub async fn ensure_table(catalog: &dyn Catalog, ident: &TableIdent) -> Result<Table> {
    if catalog.table_exists(ident).await? {
        return catalog.load_table(ident).await;
    }
    let ns = ident.namespace();
    // Another publisher may create it first: only an error that left no namespace counts.
    if !catalog.namespace_exists(ns).await?
        && let Err(e) = catalog.create_namespace(ns, HashMap::new()).await
        && !catalog.namespace_exists(ns).await.unwrap_or(false)
    {
        return Err(e);
    }
    let creation = TableCreation::builder()
        .name(ident.name().to_owned())
        .schema(crate::table::schema()?)
        .partition_spec(crate::table::partition_spec()?)
        .properties([(
            "write.parquet.compression-codec".to_owned(),
            "zstd".to_owned(),
        )])
        .build();
    match catalog.create_table(ns, creation).await {
        Ok(table) => Ok(table),
        // Another publisher created it first (the SQL catalog reports the unique key).
        Err(e) if catalog.table_exists(ident).await.unwrap_or(false) => {
            tracing::debug!(table = %ident, error = %e, "the table was created concurrently");
            catalog.load_table(ident).await
        }
        Err(e) => Err(e),
    }
}

/// A catalog that only loads `table` while its current snapshot is `expected`: a commit
/// planned on that snapshot is never rebased onto another one.
#[derive(Debug)]
pub struct Fenced<'a> {
    /// The real catalog.
    pub inner: &'a dyn Catalog,
    /// The table the publish was planned on.
    pub table: &'a TableIdent,
    /// Its current snapshot then (`None`: no snapshot yet).
    pub expected: Option<i64>,
}

/// The message of the fence's conflict error, for callers that match on it.
pub const FENCE_MESSAGE: &str = "the table moved since this publish was planned";

#[async_trait]
impl Catalog for Fenced<'_> {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        let loaded = self.inner.load_table(table).await?;
        if table == self.table && loaded.metadata().current_snapshot_id() != self.expected {
            return Err(
                Error::new(ErrorKind::CatalogCommitConflicts, FENCE_MESSAGE).with_retryable(false)
            );
        }
        Ok(loaded)
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}

/// Storage settings for an `s3://` warehouse from the same environment the SDK reads:
/// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (a local stack, with path-style access),
/// `AWS_REGION`, and static keys when set (else the storage's own credential chain).
pub fn storage_props_from_env() -> HashMap<String, String> {
    use iceberg::io::{
        S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
        S3_SESSION_TOKEN,
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut props = HashMap::new();
    if let Some(endpoint) = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")) {
        props.insert(S3_ENDPOINT.to_owned(), endpoint);
        props.insert(S3_PATH_STYLE_ACCESS.to_owned(), "true".to_owned());
    }
    if let Some(region) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
        props.insert(S3_REGION.to_owned(), region);
    }
    for (env, key) in [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", S3_SESSION_TOKEN),
    ] {
        if let Some(value) = var(env) {
            props.insert(key.to_owned(), value);
        }
    }
    props
}
