//! `verify` for the table: the table's records of each partition are exactly the records of
//! the commit-log entries its watermark covers, none twice.
//!
//! A record is identified by its commit-log position and cursor (`log_position`,
//! `cursor_sortable`): the same cursor under two positions is two commits of the landing
//! (interleaved mode's documented duplicate, or a reset), which the landing audit judges;
//! the same pair twice is a record the table holds twice. Rows at or below a partition's
//! reset floor were published before a reset archived their entries; they are counted, not
//! compared. Entries above the watermark are not published yet; they are counted too.

use crate::plan::{Watermark, partition_key};
use crate::publisher::{PublishError, published_watermarks};
use arrow_array::{Array, Int64Array, LargeStringArray, RecordBatch, StringArray};
use bronze::ports::{CommitEntry, ObjectStore, StateStore};
use bronze::record::PartitionId;
use futures::TryStreamExt;
use iceberg::{Catalog, TableIdent};
use std::collections::{BTreeMap, HashMap};

/// What the table audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableAudit {
    /// Partitions compared.
    pub partitions: usize,
    /// Rows of the table compared with the commit log.
    pub rows: u64,
    /// Rows published before a reset of their partition (not compared).
    pub before_reset: u64,
    /// Committed records not published yet (their entries are above the watermark).
    pub unpublished: u64,
    /// Everything wrong: (partition, problem).
    pub violations: Vec<(String, String)>,
}

/// One record's identity in the comparison: (commit-log position, sortable cursor).
type Key = (Option<i64>, String);

/// Compares the table with the commit log for every partition (or those of `only_stream`).
pub async fn verify_table(
    state: &dyn StateStore,
    objects: &dyn ObjectStore,
    catalog: &dyn Catalog,
    ident: &TableIdent,
    only_stream: Option<&str>,
) -> Result<TableAudit, PublishError> {
    let mut audit = TableAudit::default();
    let table = catalog.load_table(ident).await?;
    let marks = published_watermarks(&table);
    let mut rows: HashMap<String, BTreeMap<Key, u64>> = HashMap::new();
    if table.metadata().current_snapshot().is_some() {
        let mut batches = table
            .scan()
            .select([
                "source",
                "stream",
                "partition",
                "cursor_sortable",
                "log_position",
            ])
            .build()?
            .to_arrow()
            .await?;
        while let Some(batch) = batches.try_next().await? {
            collect_rows(&batch, &mut rows)?;
        }
    }
    for id in state.logged_partitions().await? {
        if only_stream.is_some_and(|s| s != id.stream) {
            continue;
        }
        audit.partitions += 1;
        let pk = partition_key(&id);
        let floor = state.log_positions(&id).await?.map_or(0, |p| p.reset_floor);
        let log = state.commit_log(&id).await?;
        let mut problem = |p: String| audit.violations.push((id.to_string(), p));
        let mut want: BTreeMap<Key, u64> = BTreeMap::new();
        for entry in &log {
            let key_of = |c: String| (entry.position.and_then(|p| i64::try_from(p).ok()), c);
            if !published(entry, marks.get(&pk)) {
                audit.unpublished += entry.records;
                continue;
            }
            for cursor in cursors(objects, &id, entry).await? {
                *want.entry(key_of(cursor)).or_default() += 1;
            }
        }
        let mut have = rows.remove(&pk).unwrap_or_default();
        have.retain(|(position, _), n| {
            let archived = position.is_some_and(|p| u64::try_from(p).is_ok_and(|p| p <= floor));
            if archived {
                audit.before_reset += *n;
            }
            !archived
        });
        audit.rows += have.values().sum::<u64>();
        for ((position, cursor), n) in &have {
            let expected = want.get(&(*position, cursor.clone())).copied().unwrap_or(0);
            let at = position.map_or("no position".to_owned(), |p| format!("position {p}"));
            if *n > 1 {
                problem(format!("cursor {cursor} ({at}) is in the table {n} times"));
            }
            if expected == 0 {
                problem(format!(
                    "cursor {cursor} ({at}) is in the table but in no published commit"
                ));
            }
        }
        for key in want.keys() {
            if !have.contains_key(key) {
                let at = key
                    .0
                    .map_or("no position".to_owned(), |p| format!("position {p}"));
                problem(format!(
                    "cursor {} ({at}) is committed and covered by the watermark but not in the table",
                    key.1
                ));
            }
        }
    }
    for (pk, left) in rows {
        if only_stream.is_some_and(|s| pk.split('#').nth(1) != Some(s)) {
            continue;
        }
        audit.violations.push((
            pk,
            format!(
                "{} row(s) of a partition the state table does not know",
                left.values().sum::<u64>()
            ),
        ));
    }
    Ok(audit)
}

/// Whether the watermark covers `entry`.
fn published(entry: &CommitEntry, mark: Option<&Watermark>) -> bool {
    match (mark, entry.position) {
        (None, _) => false,
        (Some(Watermark::Position(w)), Some(p)) => p <= *w,
        (Some(Watermark::Position(_)), None) => true,
        (Some(Watermark::Cursor(_)), Some(_)) => false,
        (Some(Watermark::Cursor(c)), None) => entry.first.as_str() <= c.as_str(),
    }
}

/// The sortable cursors of a committed entry's records, from its object.
async fn cursors(
    objects: &dyn ObjectStore,
    id: &PartitionId,
    entry: &CommitEntry,
) -> Result<Vec<String>, PublishError> {
    let Some(key) = &entry.object_key else {
        return Ok(Vec::new());
    };
    let bad = |detail: String| PublishError::BadObject {
        partition: id.to_string(),
        object_key: key.clone(),
        detail,
    };
    let body = crate::publisher::fetch_object(objects, &id.to_string(), key).await?;
    let lines = bronze::bronze::read_raw_lines(&body).map_err(|e| bad(e.to_string()))?;
    lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            crate::table::parse_line(key, n + 1, line)
                .map(|row| row.cursor_sortable)
                .map_err(PublishError::from)
        })
        .collect()
}

fn collect_rows(
    batch: &RecordBatch,
    rows: &mut HashMap<String, BTreeMap<Key, u64>>,
) -> Result<(), PublishError> {
    let schema_error = |c: &str| {
        PublishError::Arrow(arrow_schema::ArrowError::SchemaError(format!(
            "column {c} is missing or not of its table type"
        )))
    };
    let text = |name: &str| -> Result<Vec<Option<String>>, PublishError> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| schema_error(name))?;
        if let Some(a) = column.as_any().downcast_ref::<StringArray>() {
            return Ok(a.iter().map(|v| v.map(str::to_owned)).collect());
        }
        if let Some(a) = column.as_any().downcast_ref::<LargeStringArray>() {
            return Ok(a.iter().map(|v| v.map(str::to_owned)).collect());
        }
        Err(schema_error(name))
    };
    let (source, stream, partition, cursor) = (
        text("source")?,
        text("stream")?,
        text("partition")?,
        text("cursor_sortable")?,
    );
    let positions = batch
        .column_by_name("log_position")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| schema_error("log_position"))?;
    for i in 0..batch.num_rows() {
        let pk = format!(
            "{}#{}#{}",
            source[i].as_deref().unwrap_or_default(),
            stream[i].as_deref().unwrap_or_default(),
            partition[i].as_deref().unwrap_or_default()
        );
        let position = (!positions.is_null(i)).then(|| positions.value(i));
        let key = (position, cursor[i].clone().unwrap_or_default());
        *rows.entry(pk).or_default().entry(key).or_default() += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: &str, position: Option<u64>) -> CommitEntry {
        CommitEntry {
            first: first.into(),
            last: first.into(),
            object_key: None,
            records: 1,
            dead_lettered: 0,
            object_bytes: 0,
            payload_bytes: 0,
            run_id: "r".into(),
            committed_at_ms: 0,
            last_fingerprint: None,
            dead_cursors: None,
            position,
        }
    }

    #[test]
    fn the_watermark_decides_what_must_be_in_the_table() {
        let p = Watermark::Position(3);
        let c = Watermark::Cursor("05".into());
        assert!(published(&entry("09", Some(3)), Some(&p)));
        assert!(!published(&entry("00", Some(4)), Some(&p)));
        assert!(published(&entry("99", None), Some(&p)));
        assert!(published(&entry("05", None), Some(&c)));
        assert!(!published(&entry("06", None), Some(&c)));
        assert!(!published(&entry("00", Some(1)), Some(&c)));
        assert!(!published(&entry("00", Some(1)), None));
    }
}
