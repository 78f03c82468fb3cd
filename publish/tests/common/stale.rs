//! A writer that planned on an old table: [`StaleView`] answers `load_table` with the table
//! as it was, and sends everything else (the commit) to the real catalog. A transaction
//! committed through it carries requirements of the old snapshot, so only the catalog's own
//! check stands between it and the table (the publisher's `Fenced` is not involved).

use async_trait::async_trait;
use iceberg::ErrorKind;
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};
use std::collections::HashMap;

/// The real catalog, with one table frozen as it was loaded.
#[derive(Debug)]
pub struct StaleView<'a> {
    /// The real catalog.
    pub inner: &'a dyn Catalog,
    /// The table as an earlier load saw it.
    pub stale: Table,
}

#[async_trait]
impl Catalog for StaleView<'_> {
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
        if table == self.stale.identifier() {
            return Ok(self.stale.clone());
        }
        self.inner.load_table(table).await
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

/// Commits a fast append (no files, one snapshot property) planned on `stale` through
/// `catalog`: what a publisher that lost the race would send without its fence.
pub async fn commit_stale_append(catalog: &dyn Catalog, stale: &Table) -> Result<Table> {
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    let view = StaleView {
        inner: catalog,
        stale: stale.clone(),
    };
    let tx = Transaction::new(stale);
    tx.fast_append()
        .set_snapshot_properties(HashMap::from([("stale".to_owned(), "yes".to_owned())]))
        .apply(tx)?
        .commit(&view)
        .await
}

/// Publishes twice, loading the table in between: the table as the first publish left it
/// (stale) and as the second left it.
pub async fn stale_and_current(env: &mut super::Env, catalog: &dyn Catalog) -> (Table, Table) {
    env.land(3, 3).await;
    env.publish(catalog).await;
    let stale = catalog.load_table(&env.ident).await.expect("load");
    env.land(3, 3).await;
    env.publish(catalog).await;
    let current = catalog.load_table(&env.ident).await.expect("load");
    assert_ne!(
        stale.metadata().current_snapshot_id(),
        current.metadata().current_snapshot_id()
    );
    (stale, current)
}

/// A commit planned on `stale`, sent without the publisher's fence, is refused as a conflict
/// by the catalog itself, and the table stays at `current`.
pub async fn assert_stale_append_refused(catalog: &dyn Catalog, stale: &Table, current: &Table) {
    let refused = commit_stale_append(catalog, stale).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts),
        "{refused:?}"
    );
    let after = catalog
        .load_table(current.identifier())
        .await
        .expect("load");
    assert_eq!(after.metadata_location(), current.metadata_location());
}
