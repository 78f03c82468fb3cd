//! Pure decisions of a publish: watermarks, what to take, file names.
//!
//! A **watermark** is the sortable `last` cursor of the last commit-log entry of a partition
//! whose records are in the table. Watermarks live in the summary of the table's current
//! snapshot, one property per partition ([`watermark_key`]); every publish copies the ones it
//! does not move, so the current snapshot always holds all of them. A publish takes the
//! entries whose `first` sorts above the watermark.

use bronze::ports::CommitEntry;
use bronze::record::PartitionId;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Prefix of the snapshot-summary properties that hold watermarks.
pub const WATERMARK_PREFIX: &str = "bronze.watermark.";

/// The state-table key of a partition (`source#stream#partition`), which names it in
/// watermarks.
pub fn partition_key(id: &PartitionId) -> String {
    format!("{}#{}#{}", id.source, id.stream, id.partition)
}

/// The summary property holding `id`'s watermark.
pub fn watermark_key(id: &PartitionId) -> String {
    format!("{WATERMARK_PREFIX}{}", partition_key(id))
}

/// The watermarks in a snapshot summary: partition key to sortable cursor.
pub fn watermarks(summary: &HashMap<String, String>) -> BTreeMap<String, String> {
    summary
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(WATERMARK_PREFIX)
                .map(|pk| (pk.to_owned(), v.clone()))
        })
        .collect()
}

/// The commit-log entries a publish takes: those starting above the watermark, in order.
/// Sortable cursors of one partition compare as bytes (a KPL sub-sequence sorts after its
/// plain sequence number, being longer with the same prefix).
pub fn pending<'a>(log: &'a [CommitEntry], watermark: Option<&str>) -> Vec<&'a CommitEntry> {
    let mut out: Vec<&CommitEntry> = log
        .iter()
        .filter(|e| watermark.is_none_or(|w| e.first.as_str() > w))
        .collect();
    out.sort_by(|a, b| a.first.cmp(&b.first));
    out
}

/// A short stable tag for a partition, used in data file names.
pub fn partition_tag(id: &PartitionId) -> String {
    let digest = Sha256::digest(partition_key(id).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The file-name prefix of one publish attempt's files for a partition:
/// `<partition tag>-<first sortable cursor taken>-<attempt id>`. The first cursor lets a later
/// publish recognise an orphan ([`is_orphan`]).
pub fn file_prefix(id: &PartitionId, first: &str, attempt: &str) -> String {
    format!("{}-{first}-{attempt}", partition_tag(id))
}

/// Whether a data file that the table does not reference can be deleted: its name says it
/// starts at or below the partition's watermark, so the snapshot it was written against is
/// gone and no publisher can ever commit it (a commit is fenced on its base snapshot).
pub fn is_orphan(file_name: &str, watermarks_by_tag: &HashMap<String, String>) -> bool {
    let mut parts = file_name.splitn(3, '-');
    let (Some(tag), Some(first)) = (parts.next(), parts.next()) else {
        return false;
    };
    watermarks_by_tag
        .get(tag)
        .is_some_and(|w| first <= w.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::record::Source;

    fn entry(first: &str, last: &str) -> CommitEntry {
        CommitEntry {
            first: first.into(),
            last: last.into(),
            object_key: Some(format!("k/{first}")),
            records: 1,
            dead_lettered: 0,
            object_bytes: 1,
            payload_bytes: 1,
            run_id: "r".into(),
            committed_at_ms: 0,
            last_fingerprint: None,
            dead_cursors: None,
        }
    }

    #[test]
    fn pending_takes_entries_above_the_watermark_in_order() {
        let log = vec![entry("05", "09"), entry("00", "04"), entry("10", "10")];
        let firsts = |w| {
            pending(&log, w)
                .iter()
                .map(|e| e.first.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(firsts(None), ["00", "05", "10"]);
        assert_eq!(firsts(Some("04")), ["05", "10"]);
        assert_eq!(firsts(Some("10")), Vec::<String>::new());
    }

    #[test]
    fn kpl_sub_sequences_sort_after_their_sequence() {
        let plain = "1".repeat(128);
        let sub = format!("{plain}{:010}", 0);
        let log = vec![entry(&sub, &sub)];
        assert_eq!(pending(&log, Some(&plain)).len(), 1);
    }

    #[test]
    fn watermarks_round_trip_through_the_summary() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let mut summary = HashMap::from([("added-records".to_owned(), "4".to_owned())]);
        summary.insert(watermark_key(&id), "0042".into());
        assert_eq!(
            watermarks(&summary),
            BTreeMap::from([("kafka#orders#3".to_owned(), "0042".to_owned())])
        );
    }

    #[test]
    fn orphans_are_files_at_or_below_the_watermark() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let tag = partition_tag(&id);
        let by_tag = HashMap::from([(tag.clone(), "0010".to_owned())]);
        let name = |first: &str| format!("{}-00000.parquet", file_prefix(&id, first, "a1"));
        assert!(is_orphan(&name("0005"), &by_tag));
        assert!(is_orphan(&name("0010"), &by_tag));
        assert!(!is_orphan(&name("0011"), &by_tag));
        assert!(!is_orphan("other-0001-x.parquet", &by_tag));
    }
}
