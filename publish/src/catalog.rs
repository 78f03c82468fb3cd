//! Catalogs: the SQL catalog (SQLite for the local stack), AWS Glue (production, what Athena
//! reads), and the fence on appends.
//!
//! Iceberg's `Transaction::commit` reloads the table and, when another writer committed in
//! between, re-applies a fast append on top of the new snapshot. That is right for plain
//! appends and wrong here: the append carries records chosen from the old watermarks, so a
//! rebase would publish them twice. [`Fenced`] refuses to load a table whose current
//! snapshot is not the one the publish was planned on; the catalog's own check closes the
//! window after that load. The SQL catalog verifies the commit's `assert-ref-snapshot-id`
//! against the row it updates with a compare-and-set on the metadata location; the Glue
//! catalog verifies it against the table it loads for the commit and sends that load's
//! `VersionId` with `UpdateTable`, which AWS Glue refuses when the table changed since
//! (moto's Glue ignores `VersionId`: conflict tests stay on the SQL catalog).

use async_trait::async_trait;
use iceberg::io::StorageFactory;
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use iceberg_catalog_glue::{
    AWS_ACCESS_KEY_ID, AWS_REGION_NAME, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    GLUE_CATALOG_PROP_CATALOG_ID, GLUE_CATALOG_PROP_URI, GLUE_CATALOG_PROP_WAREHOUSE,
    GlueCatalogBuilder,
};
use iceberg_catalog_sql::{SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The catalog name in the SQL catalog's tables (`pyiceberg` must load it by this name).
pub const CATALOG_NAME: &str = "bronze";

/// Which catalog holds the table, as `--catalog` and `ICEBERG_CATALOG` spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSpec {
    /// `sqlite:<path>`: the SQL catalog on a SQLite file (created when missing); local stack.
    Sql {
        /// The sqlx URI, `sqlite:<path>`.
        uri: String,
    },
    /// `glue` (this account's Data Catalog) or `glue:<account id>` (another account's, shared
    /// with this one): AWS Glue, the catalog Athena reads. The Glue database is the table's
    /// namespace.
    Glue {
        /// The Data Catalog's id (an AWS account id); `None` for the caller's own.
        catalog_id: Option<String>,
    },
}

/// A `--catalog` / `ICEBERG_CATALOG` value that names no catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog {0:?}: expected `sqlite:<path>`, `glue` or `glue:<12-digit account id>`")]
pub struct BadCatalogSpec(pub String);

impl FromStr for CatalogSpec {
    type Err = BadCatalogSpec;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || BadCatalogSpec(s.to_owned());
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(CatalogSpec::Sql { uri: s.to_owned() });
        }
        match s.strip_prefix("glue") {
            Some("") => Ok(CatalogSpec::Glue { catalog_id: None }),
            Some(rest) => {
                let id = rest.strip_prefix(':').ok_or_else(bad)?;
                if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(CatalogSpec::Glue {
                        catalog_id: Some(id.to_owned()),
                    })
                } else {
                    Err(bad())
                }
            }
            None => Err(bad()),
        }
    }
}

impl fmt::Display for CatalogSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogSpec::Sql { uri } => f.write_str(uri),
            CatalogSpec::Glue { catalog_id: None } => f.write_str("glue"),
            CatalogSpec::Glue {
                catalog_id: Some(id),
            } => write!(f, "glue:{id}"),
        }
    }
}

/// Opens the catalog `spec` with tables under `warehouse` (`s3://bucket/prefix`, or
/// `file:///...` for the SQL catalog). `props` carries the storage and client settings of
/// [`props_from_lookup`].
pub async fn open(
    spec: &CatalogSpec,
    warehouse: &str,
    props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>> {
    match spec {
        CatalogSpec::Sql { uri } => open_sql(uri, warehouse, props).await,
        CatalogSpec::Glue { catalog_id } => {
            open_glue(catalog_id.as_deref(), warehouse, props).await
        }
    }
}

/// Opens the AWS Glue Data Catalog (`catalog_id`: another account's, else the caller's own).
/// The Glue client takes its endpoint, region and keys from `props` ([`props_from_lookup`]
/// fills them from `AWS_ENDPOINT_URL_GLUE` / `AWS_ENDPOINT_URL`, `AWS_REGION` and static
/// keys), else from the SDK's default chain (a role). A table created here lives at
/// `<warehouse>/<database>.db/<table>` unless the Glue database has a location.
pub async fn open_glue(
    catalog_id: Option<&str>,
    warehouse: &str,
    props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>> {
    let mut all = props;
    all.insert(GLUE_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse.to_owned());
    if let Some(id) = catalog_id {
        all.insert(GLUE_CATALOG_PROP_CATALOG_ID.to_owned(), id.to_owned());
    }
    let factory: Arc<dyn StorageFactory> = Arc::new(OpenDalResolvingStorageFactory::new());
    let catalog = GlueCatalogBuilder::default()
        .with_storage_factory(factory)
        .load(CATALOG_NAME, all)
        .await?;
    Ok(Arc::new(catalog))
}

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

/// Storage and catalog-client settings from the process environment: see
/// [`props_from_lookup`].
pub fn props_from_env() -> HashMap<String, String> {
    props_from_lookup(|name| std::env::var(name).ok())
}

/// Storage settings for an `s3://` warehouse, and the Glue client's, from the same variables
/// the SDK reads: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_GLUE` or `AWS_ENDPOINT_URL` (a
/// local stack; S3 then uses path-style access), `AWS_REGION`, and static keys when set
/// (else each client's own credential chain). The SQL catalog ignores the Glue settings.
pub fn props_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
    use iceberg::io::{
        S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
        S3_SESSION_TOKEN,
    };
    let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let mut props = HashMap::new();
    if let Some(endpoint) = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")) {
        props.insert(S3_ENDPOINT.to_owned(), endpoint);
        props.insert(S3_PATH_STYLE_ACCESS.to_owned(), "true".to_owned());
        // Only beside an S3 endpoint: the Glue catalog also sends S3 to its `uri` when no S3
        // endpoint is set. Without one, the Glue SDK reads AWS_ENDPOINT_URL_GLUE itself.
        if let Some(glue) = var("AWS_ENDPOINT_URL_GLUE").or_else(|| var("AWS_ENDPOINT_URL")) {
            props.insert(GLUE_CATALOG_PROP_URI.to_owned(), glue);
        }
    }
    if let Some(region) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
        props.insert(S3_REGION.to_owned(), region.clone());
        props.insert(AWS_REGION_NAME.to_owned(), region);
    }
    for (env, s3_key, glue_key) in [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID),
        (
            "AWS_SECRET_ACCESS_KEY",
            S3_SECRET_ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY,
        ),
        ("AWS_SESSION_TOKEN", S3_SESSION_TOKEN, AWS_SESSION_TOKEN),
    ] {
        if let Some(value) = var(env) {
            props.insert(s3_key.to_owned(), value.clone());
            props.insert(glue_key.to_owned(), value);
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_specs() {
        let parse = |s: &str| s.parse::<CatalogSpec>();
        assert_eq!(
            parse("sqlite:/tmp/c.db"),
            Ok(CatalogSpec::Sql {
                uri: "sqlite:/tmp/c.db".into()
            })
        );
        assert_eq!(parse("glue"), Ok(CatalogSpec::Glue { catalog_id: None }));
        assert_eq!(
            parse("glue:123456789012"),
            Ok(CatalogSpec::Glue {
                catalog_id: Some("123456789012".into())
            })
        );
        for bad in [
            "",
            "sqlite:",
            "glue:",
            "glue:12345",
            "glue:12345678901a",
            "gluex",
            "rest",
            "s3://x",
        ] {
            assert_eq!(parse(bad), Err(BadCatalogSpec(bad.into())), "{bad:?}");
        }
        for spec in ["sqlite:/tmp/c.db", "glue", "glue:123456789012"] {
            assert_eq!(parse(spec).map(|s| s.to_string()).as_deref(), Ok(spec));
        }
    }

    #[test]
    fn props_follow_the_sdk_environment() {
        let env: HashMap<&str, &str> = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5081"),
            ("AWS_ENDPOINT_URL_GLUE", "http://glue.local"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", ""),
        ]
        .into();
        let props = props_from_lookup(|k| env.get(k).map(|v| v.to_string()));
        let get = |k: &str| props.get(k).map(String::as_str);
        assert_eq!(get("s3.endpoint"), Some("http://127.0.0.1:5081"));
        assert_eq!(get("s3.path-style-access"), Some("true"));
        assert_eq!(get(GLUE_CATALOG_PROP_URI), Some("http://glue.local"));
        assert_eq!(get("s3.region"), Some("eu-west-1"));
        assert_eq!(get(AWS_REGION_NAME), Some("eu-west-1"));
        assert_eq!(get(AWS_ACCESS_KEY_ID), Some("AK"));
        assert_eq!(get("s3.secret-access-key"), Some("SK"));
        assert_eq!(get(AWS_SESSION_TOKEN), None, "an empty variable is unset");

        // A Glue endpoint alone is left to the Glue SDK, so that S3 is not sent there.
        let props = props_from_lookup(|k| {
            (k == "AWS_ENDPOINT_URL_GLUE").then(|| "http://glue.local".to_owned())
        });
        assert!(props.is_empty(), "{props:?}");

        // On AWS: no endpoint, no keys; the clients use the role.
        let props = props_from_lookup(|k| (k == "AWS_REGION").then(|| "us-east-1".to_owned()));
        assert_eq!(props.len(), 2, "{props:?}");
    }
}
