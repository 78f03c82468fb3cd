//! Catalogs: the SQL catalog (SQLite for the local stack), AWS Glue (production, what Athena
//! reads), Amazon S3 Tables, any Iceberg REST catalog, and the fence on appends.
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
//! (moto's Glue ignores `VersionId`: conflict tests stay on the SQL catalog). S3 Tables does
//! the same with the table's version token on `UpdateTableMetadataLocation` (moto checks it);
//! a REST catalog sends the requirements to the server, whose job it is to check them
//! (HTTP 409 on a conflict).

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
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_catalog_s3tables::{
    S3TABLES_CATALOG_PROP_ENDPOINT_URL, S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN,
    S3TablesCatalogBuilder,
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
    /// `s3tables:<table bucket ARN>`: Amazon S3 Tables; the table bucket is the catalog, its
    /// namespaces the namespaces, and S3 Tables chooses each table's location (the warehouse
    /// is not used).
    S3Tables {
        /// `arn:<partition>:s3tables:<region>:<account id>:bucket/<name>`.
        table_bucket_arn: String,
    },
    /// `rest:<http(s) URI>`: an Iceberg REST catalog; the warehouse is sent to its
    /// `/v1/config` as `warehouse` (a location or a name, as the server expects).
    Rest {
        /// The catalog's base URI (before `/v1/...`).
        uri: String,
    },
}

/// A `--catalog` / `ICEBERG_CATALOG` value that names no catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "catalog {0:?}: expected `sqlite:<path>`, `glue`, `glue:<12-digit account id>`, \
     `s3tables:arn:aws:s3tables:<region>:<account id>:bucket/<name>` or `rest:<http(s) URI>`"
)]
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
        if let Some(arn) = s.strip_prefix("s3tables:") {
            return if is_table_bucket_arn(arn) {
                Ok(CatalogSpec::S3Tables {
                    table_bucket_arn: arn.to_owned(),
                })
            } else {
                Err(bad())
            };
        }
        if let Some(uri) = s.strip_prefix("rest:") {
            let host = uri
                .strip_prefix("http://")
                .or_else(|| uri.strip_prefix("https://"));
            return match host {
                Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(CatalogSpec::Rest {
                    uri: uri.trim_end_matches('/').to_owned(),
                }),
                _ => Err(bad()),
            };
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

/// `arn:<partition>:s3tables:<region>:<12-digit account id>:bucket/<name>`.
fn is_table_bucket_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", partition, "s3tables", region, account, resource] => {
            !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("bucket/")
                    .is_some_and(|name| !name.is_empty() && !name.contains('/'))
        }
        _ => false,
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
            CatalogSpec::S3Tables { table_bucket_arn } => write!(f, "s3tables:{table_bucket_arn}"),
            CatalogSpec::Rest { uri } => write!(f, "rest:{uri}"),
        }
    }
}

/// Opens the catalog `spec` with tables under `warehouse` (`s3://bucket/prefix`, or
/// `file:///...` for the SQL catalog; S3 Tables does not use it; a REST catalog receives it
/// as its `warehouse`). `props` carries the storage and client settings of
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
        CatalogSpec::S3Tables { table_bucket_arn } => open_s3tables(table_bucket_arn, props).await,
        CatalogSpec::Rest { uri } => open_rest(uri, warehouse, props).await,
    }
}

/// Opens the S3 Tables table bucket `table_bucket_arn` as a catalog. Its client takes the
/// endpoint, region and keys from `props` ([`props_from_lookup`] fills them from
/// `AWS_ENDPOINT_URL_S3TABLES` / `AWS_ENDPOINT_URL`, `AWS_REGION` and static keys), else from
/// the SDK's default chain (a role). Tables live where S3 Tables puts them (each table has
/// its own warehouse location); data and metadata files are written there through OpenDAL
/// with `props`' S3 settings.
pub async fn open_s3tables(
    table_bucket_arn: &str,
    props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>> {
    let mut all = props;
    all.insert(
        S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN.to_owned(),
        table_bucket_arn.to_owned(),
    );
    let factory: Arc<dyn StorageFactory> = Arc::new(OpenDalResolvingStorageFactory::new());
    let catalog = S3TablesCatalogBuilder::default()
        .with_storage_factory(factory)
        .load(CATALOG_NAME, all)
        .await?;
    Ok(Arc::new(catalog))
}

/// Opens the Iceberg REST catalog at `uri` (before `/v1`), asking for `warehouse` (none when
/// empty). `props` carries storage settings and the REST client's authentication
/// ([`props_from_lookup`]: `ICEBERG_REST_CREDENTIAL`, `ICEBERG_REST_TOKEN`, ...); the server's
/// `/v1/config` answer adds its own (its `overrides` win). The server checks each commit's
/// requirements; nothing is sent until the first call.
pub async fn open_rest(
    uri: &str,
    warehouse: &str,
    props: HashMap<String, String>,
) -> Result<Arc<dyn Catalog>> {
    // The REST client's rustls has no provider of its own (see Cargo.toml); install the one
    // the workspace's rustls is built with, unless the process already has a default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut all = props;
    all.insert(REST_CATALOG_PROP_URI.to_owned(), uri.to_owned());
    if !warehouse.is_empty() {
        all.insert(REST_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse.to_owned());
    }
    let factory: Arc<dyn StorageFactory> = Arc::new(OpenDalResolvingStorageFactory::new());
    let catalog = RestCatalogBuilder::default()
        .with_storage_factory(factory)
        .load(CATALOG_NAME, all)
        .await?;
    Ok(Arc::new(catalog))
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

/// The REST catalog's authentication, from the environment to the REST client's property:
/// an OAuth2 client credential (`client_id:client_secret`, exchanged for a token at the
/// server's `/v1/oauth/tokens` or at `ICEBERG_REST_OAUTH2_SERVER_URI`), its scope, or a
/// bearer token used as is.
pub const REST_ENV: [(&str, &str); 4] = [
    ("ICEBERG_REST_CREDENTIAL", "credential"),
    ("ICEBERG_REST_TOKEN", "token"),
    ("ICEBERG_REST_OAUTH2_SERVER_URI", "oauth2-server-uri"),
    ("ICEBERG_REST_SCOPE", "scope"),
];

/// Storage and catalog-client settings from the process environment: see
/// [`props_from_lookup`].
pub fn props_from_env() -> HashMap<String, String> {
    props_from_lookup(|name| std::env::var(name).ok())
}

/// Storage settings for an `s3://` warehouse, and the Glue and S3 Tables clients', from the
/// same variables the SDK reads: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_GLUE` /
/// `AWS_ENDPOINT_URL_S3TABLES` or `AWS_ENDPOINT_URL` (a local stack; S3 then uses path-style
/// access), `AWS_REGION`, and static keys when set (else each client's own credential chain).
/// The REST client's authentication comes from [`REST_ENV`]. Each catalog ignores the other
/// catalogs' settings.
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
    // Only when set: without it the S3 Tables SDK reads its own environment (or AWS's).
    if let Some(s3tables) = var("AWS_ENDPOINT_URL_S3TABLES").or_else(|| var("AWS_ENDPOINT_URL")) {
        props.insert(S3TABLES_CATALOG_PROP_ENDPOINT_URL.to_owned(), s3tables);
    }
    for (env, key) in REST_ENV {
        if let Some(value) = var(env) {
            props.insert(key.to_owned(), value);
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
        let arn = "arn:aws:s3tables:us-east-1:123456789012:bucket/bronze-tables";
        assert_eq!(
            parse(&format!("s3tables:{arn}")),
            Ok(CatalogSpec::S3Tables {
                table_bucket_arn: arn.into()
            })
        );
        assert_eq!(
            parse("rest:https://catalog.example.com/api/catalog/"),
            Ok(CatalogSpec::Rest {
                uri: "https://catalog.example.com/api/catalog".into()
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
            "rest:",
            "rest:catalog.example.com",
            "rest:ftp://catalog.example.com",
            "rest:http://",
            "rest:https:///v1",
            "s3://x",
            "s3tables",
            "s3tables:",
            "s3tables:bronze-tables",
            "s3tables:arn:aws:s3:::bronze-tables",
            "s3tables:arn:aws:s3tables:us-east-1:123456789012:bucket/",
            "s3tables:arn:aws:s3tables:us-east-1:1234:bucket/b",
            "s3tables:arn:aws:s3tables::123456789012:bucket/b",
            "s3tables:arn:aws:s3tables:us-east-1:123456789012:table/b",
            "s3tables:arn:aws:s3tables:us-east-1:123456789012:bucket/b/table/t",
        ] {
            assert_eq!(parse(bad), Err(BadCatalogSpec(bad.into())), "{bad:?}");
        }
        for spec in [
            "sqlite:/tmp/c.db",
            "glue",
            "glue:123456789012",
            "s3tables:arn:aws-cn:s3tables:cn-north-1:123456789012:bucket/b",
            "rest:http://127.0.0.1:8181",
            "rest:https://catalog.example.com/api/catalog",
        ] {
            assert_eq!(parse(spec).map(|s| s.to_string()).as_deref(), Ok(spec));
        }
    }

    #[test]
    fn a_bad_catalog_names_every_accepted_form() {
        let message = "nessie:http://x"
            .parse::<CatalogSpec>()
            .unwrap_err()
            .to_string();
        for form in [
            "\"nessie:http://x\"",
            "`sqlite:<path>`",
            "`glue`",
            "`glue:<12-digit account id>`",
            "`s3tables:arn:aws:s3tables:<region>:<account id>:bucket/<name>`",
            "`rest:<http(s) URI>`",
        ] {
            assert!(message.contains(form), "{form} in {message}");
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
        assert_eq!(
            get(S3TABLES_CATALOG_PROP_ENDPOINT_URL),
            Some("http://127.0.0.1:5081")
        );
        assert_eq!(get("credential"), None);
        assert_eq!(get("token"), None);

        // S3 Tables' own endpoint wins; the REST client's authentication.
        let env: HashMap<&str, &str> = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5081"),
            ("AWS_ENDPOINT_URL_S3TABLES", "http://s3tables.local"),
            ("ICEBERG_REST_CREDENTIAL", "client:secret"),
            ("ICEBERG_REST_TOKEN", "t0k"),
            ("ICEBERG_REST_OAUTH2_SERVER_URI", "https://idp.local/token"),
            ("ICEBERG_REST_SCOPE", "PRINCIPAL_ROLE:ALL"),
        ]
        .into();
        let props = props_from_lookup(|k| env.get(k).map(|v| v.to_string()));
        let get = |k: &str| props.get(k).map(String::as_str);
        assert_eq!(
            get(S3TABLES_CATALOG_PROP_ENDPOINT_URL),
            Some("http://s3tables.local")
        );
        assert_eq!(get("s3.endpoint"), Some("http://127.0.0.1:5081"));
        assert_eq!(get("credential"), Some("client:secret"));
        assert_eq!(get("token"), Some("t0k"));
        assert_eq!(get("oauth2-server-uri"), Some("https://idp.local/token"));
        assert_eq!(get("scope"), Some("PRINCIPAL_ROLE:ALL"));

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
