//! Pure decisions of a publish: watermarks, what to take, file names.
//!
//! A **watermark** says which commit-log entries of a partition are in the table. It is the
//! commit-log position ([`CommitEntry::position`]) of the last entry published: the state
//! store gives each commit of a partition the next position in the commit's own
//! transaction, so an entry committed later always has a higher position, whatever its
//! cursors. That matters when batches of one shard interleave (Kinesis with a
//! ParallelizationFactor above 1, Pulsar Key_Shared): a slower lane commits an entry whose
//! cursors sort below entries already published, and a cursor watermark would skip it
//! forever. A publish takes the entries just above the watermark, in position order, and
//! stops at the first position it has not seen (an entry being committed while the log was
//! read), so it never moves past an entry it did not publish.
//!
//! Entries written before positions existed have none; they are published first, in cursor
//! order, with a cursor watermark ([`Watermark::Cursor`]), as ordered mode wrote them.
//!
//! Watermarks live in the summary of the table's snapshots, one property per partition
//! ([`watermark_key`]); every publish copies the ones it does not move, so the newest
//! published snapshot always holds all of them.

use bronze::ports::{CommitEntry, LogPositions};
use bronze::record::PartitionId;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Prefix of the snapshot-summary properties that hold watermarks.
pub const WATERMARK_PREFIX: &str = "bronze.watermark.";

/// Where a partition's publishing stands. `Cursor` sorts below every `Position`: entries
/// without a position were all written before the first entry with one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watermark {
    /// Every entry without a position whose first cursor sorts at or below this sortable
    /// cursor is in the table.
    Cursor(String),
    /// Every entry without a position, and every entry at or below this position, is in
    /// the table (or was archived by a reset before it was published).
    Position(u64),
}

impl Watermark {
    /// The summary property's value: `position:<n>` or `cursor:<sortable cursor>`.
    pub fn encode(&self) -> String {
        match self {
            Watermark::Cursor(c) => format!("cursor:{c}"),
            Watermark::Position(p) => format!("position:{p}"),
        }
    }

    /// Reads a summary property's value; `None` when it is neither form.
    pub fn decode(text: &str) -> Option<Watermark> {
        if let Some(p) = text.strip_prefix("position:") {
            return p.parse().ok().map(Watermark::Position);
        }
        text.strip_prefix("cursor:")
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .map(|c| Watermark::Cursor(c.to_owned()))
    }

    /// The watermark that covers `entry` (what a publish that takes it moves to).
    pub fn of(entry: &CommitEntry) -> Watermark {
        match entry.position {
            Some(p) => Watermark::Position(p),
            None => Watermark::Cursor(entry.last.clone()),
        }
    }

    /// The token a data file's name starts with after the partition tag: the first entry a
    /// publish took, so that a later publish can tell an orphan ([`is_orphan`]). Sorts like
    /// the watermark (`c` < `p`, positions zero-padded).
    pub fn start_token(entry: &CommitEntry) -> String {
        match entry.position {
            Some(p) => format!("p{p:020}"),
            None => format!("c{}", entry.first),
        }
    }

    /// Whether the entry starting a file with `token` is covered by this watermark.
    fn covers_token(&self, token: &str) -> Option<bool> {
        if let Some(p) = token.strip_prefix('p') {
            let p: u64 = p.parse().ok()?;
            return Some(matches!(self, Watermark::Position(w) if p <= *w));
        }
        let c = token.strip_prefix('c')?;
        Some(match self {
            Watermark::Position(_) => true,
            Watermark::Cursor(w) => c <= w.as_str(),
        })
    }
}

/// The state-table key of a partition (`source#stream#partition`), which names it in
/// watermarks.
pub fn partition_key(id: &PartitionId) -> String {
    format!("{}#{}#{}", id.source, id.stream, id.partition)
}

/// The summary property holding `id`'s watermark.
pub fn watermark_key(id: &PartitionId) -> String {
    format!("{WATERMARK_PREFIX}{}", partition_key(id))
}

/// The watermarks in a snapshot summary: partition key to watermark. A value in neither
/// form (written by an older publisher as a bare sortable cursor) counts as a cursor.
pub fn watermarks(summary: &HashMap<String, String>) -> BTreeMap<String, Watermark> {
    summary
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(WATERMARK_PREFIX).map(|pk| {
                let mark = Watermark::decode(v).unwrap_or_else(|| Watermark::Cursor(v.clone()));
                (pk.to_owned(), mark)
            })
        })
        .collect()
}

/// Why a partition cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The table has published a position the state table has not reached: the state
    /// table was replaced or its positions item lost. Publishing would skip (or repeat)
    /// entries, so it stops instead.
    #[error(
        "the table's watermark is position {watermark}, the state table's last position is {last}: \
         the state table was replaced or lost its positions item"
    )]
    WatermarkAhead {
        /// The table's watermark.
        watermark: u64,
        /// The state table's last position.
        last: u64,
    },
}

/// The commit-log entries a publish takes, in publish order, and the watermark they move
/// the partition to (`None` when nothing is taken).
///
/// `positions` must be read before `log`: then every entry at or below its `reset_floor`
/// that is missing from `log` was archived by a reset and will never appear.
pub fn pending<'a>(
    log: &'a [CommitEntry],
    watermark: Option<&Watermark>,
    positions: Option<LogPositions>,
) -> Result<(Vec<&'a CommitEntry>, Option<Watermark>), PlanError> {
    if let (Some(Watermark::Position(w)), Some(p)) = (watermark, positions)
        && *w > p.last
    {
        return Err(PlanError::WatermarkAhead {
            watermark: *w,
            last: p.last,
        });
    }
    let mut taken: Vec<&CommitEntry> = Vec::new();
    // Entries without a position, in cursor order, while the watermark is a cursor.
    let cursor_mark = match watermark {
        None => Some(""),
        Some(Watermark::Cursor(c)) => Some(c.as_str()),
        Some(Watermark::Position(_)) => None,
    };
    if let Some(mark) = cursor_mark {
        let mut legacy: Vec<&CommitEntry> = log
            .iter()
            .filter(|e| e.position.is_none() && e.first.as_str() > mark)
            .collect();
        legacy.sort_by(|a, b| a.first.cmp(&b.first));
        taken.extend(legacy);
    }
    // Entries with a position: the contiguous run just above the watermark (or the floor
    // of the latest reset, below which missing positions were archived).
    let published = match watermark {
        Some(Watermark::Position(w)) => *w,
        _ => 0,
    };
    let start = published.max(positions.map_or(0, |p| p.reset_floor)) + 1;
    let by_position: BTreeMap<u64, &CommitEntry> = log
        .iter()
        .filter_map(|e| e.position.map(|p| (p, e)))
        .filter(|(p, _)| *p >= start)
        .collect();
    for (next, (p, entry)) in (start..).zip(by_position) {
        if p != next {
            break; // being committed while the log was read: the next publish takes it
        }
        taken.push(entry);
    }
    let moved = taken.last().map(|e| Watermark::of(e));
    Ok((taken, moved))
}

/// A short stable tag for a partition, used in data file names.
pub fn partition_tag(id: &PartitionId) -> String {
    let digest = Sha256::digest(partition_key(id).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The file-name prefix of one publish attempt's files for a partition:
/// `<partition tag>-<start token of the first entry taken>-<attempt id>`. The start token
/// lets a later publish recognise an orphan ([`is_orphan`]).
pub fn file_prefix(id: &PartitionId, first: &CommitEntry, attempt: &str) -> String {
    format!(
        "{}-{}-{attempt}",
        partition_tag(id),
        Watermark::start_token(first)
    )
}

/// Whether a data file that the table does not reference can be deleted: its name says its
/// first entry is covered by the partition's watermark, so the snapshot it was written
/// against is gone and no publisher can ever commit it (a commit is fenced on its base
/// snapshot).
pub fn is_orphan(file_name: &str, watermarks_by_tag: &HashMap<String, Watermark>) -> bool {
    let mut parts = file_name.splitn(3, '-');
    let (Some(tag), Some(token)) = (parts.next(), parts.next()) else {
        return false;
    };
    watermarks_by_tag
        .get(tag)
        .and_then(|w| w.covers_token(token))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::record::Source;

    fn entry(first: &str, last: &str, position: Option<u64>) -> CommitEntry {
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
            position,
        }
    }

    fn firsts(taken: &[&CommitEntry]) -> Vec<String> {
        taken.iter().map(|e| e.first.clone()).collect()
    }

    fn positions(last: u64, reset_floor: u64) -> Option<LogPositions> {
        Some(LogPositions { last, reset_floor })
    }

    #[test]
    fn entries_without_positions_go_in_cursor_order() {
        let log = vec![
            entry("05", "09", None),
            entry("00", "04", None),
            entry("10", "10", None),
        ];
        let (taken, mark) = pending(&log, None, None).unwrap();
        assert_eq!(firsts(&taken), ["00", "05", "10"]);
        assert_eq!(mark, Some(Watermark::Cursor("10".into())));
        let (taken, _) = pending(&log, Some(&Watermark::Cursor("04".into())), None).unwrap();
        assert_eq!(firsts(&taken), ["05", "10"]);
        let (taken, mark) = pending(&log, Some(&Watermark::Cursor("10".into())), None).unwrap();
        assert!(taken.is_empty());
        assert_eq!(mark, None);
    }

    /// The gap of a cursor watermark with interleaved lanes: lane B commits 20..29 first
    /// and is published; lane A commits 10..19 afterwards. A cursor watermark (29) would
    /// skip lane A's entry forever; its position (2) is above the watermark (1).
    #[test]
    fn an_entry_committed_later_with_lower_cursors_is_taken() {
        let lane_b = entry("20", "29", Some(1));
        let (taken, mark) = pending(std::slice::from_ref(&lane_b), None, positions(1, 0)).unwrap();
        assert_eq!(firsts(&taken), ["20"]);
        assert_eq!(mark, Some(Watermark::Position(1)));
        let log = vec![entry("10", "19", Some(2)), lane_b];
        let (taken, mark) = pending(&log, Some(&Watermark::Position(1)), positions(2, 0)).unwrap();
        assert_eq!(firsts(&taken), ["10"]);
        assert_eq!(mark, Some(Watermark::Position(2)));
    }

    #[test]
    fn a_publish_stops_at_the_first_position_it_has_not_seen() {
        // Position 3 was being committed while the log was read (4 already visible).
        let log = vec![
            entry("40", "49", Some(4)),
            entry("00", "09", Some(1)),
            entry("10", "19", Some(2)),
        ];
        let (taken, mark) = pending(&log, None, positions(4, 0)).unwrap();
        assert_eq!(firsts(&taken), ["00", "10"]);
        assert_eq!(mark, Some(Watermark::Position(2)));
        let (taken, mark) = pending(&log, Some(&Watermark::Position(2)), positions(4, 0)).unwrap();
        assert!(taken.is_empty(), "4 waits for 3");
        assert_eq!(mark, None);
    }

    #[test]
    fn legacy_entries_go_first_then_positions() {
        let log = vec![
            entry("50", "59", Some(1)),
            entry("00", "09", None),
            entry("10", "19", None),
        ];
        let (taken, mark) = pending(&log, None, positions(1, 0)).unwrap();
        assert_eq!(firsts(&taken), ["00", "10", "50"]);
        assert_eq!(mark, Some(Watermark::Position(1)));
        // Once positions are published, entries without one are never taken again.
        let (taken, _) = pending(&log, Some(&Watermark::Position(1)), positions(1, 0)).unwrap();
        assert!(taken.is_empty());
    }

    /// A reset archived positions 3..=5 (4 and 5 were never published) and positions go on
    /// from 6: the publish starts above the floor instead of waiting for 4 forever.
    #[test]
    fn a_reset_floor_skips_archived_positions() {
        let log = vec![entry("00", "09", Some(6)), entry("10", "19", Some(7))];
        let (taken, mark) = pending(&log, Some(&Watermark::Position(3)), positions(7, 5)).unwrap();
        assert_eq!(firsts(&taken), ["00", "10"]);
        assert_eq!(mark, Some(Watermark::Position(7)));
        // Without the floor (read before the reset), nothing moves: no skip, no duplicate.
        let (taken, _) = pending(&log, Some(&Watermark::Position(3)), positions(5, 0)).unwrap();
        assert!(taken.is_empty());
    }

    #[test]
    fn a_watermark_above_the_state_tables_positions_is_refused() {
        let log = vec![entry("00", "09", Some(1))];
        assert_eq!(
            pending(&log, Some(&Watermark::Position(9)), positions(1, 0)),
            Err(PlanError::WatermarkAhead {
                watermark: 9,
                last: 1
            })
        );
    }

    #[test]
    fn kpl_sub_sequences_sort_after_their_sequence() {
        let plain = "1".repeat(128);
        let sub = format!("{plain}{:010}", 0);
        let log = vec![entry(&sub, &sub, None)];
        let (taken, _) = pending(&log, Some(&Watermark::Cursor(plain)), None).unwrap();
        assert_eq!(taken.len(), 1);
    }

    #[test]
    fn watermarks_round_trip_through_the_summary() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let other = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000001");
        let mut summary = HashMap::from([("added-records".to_owned(), "4".to_owned())]);
        summary.insert(watermark_key(&id), Watermark::Position(42).encode());
        summary.insert(
            watermark_key(&other),
            Watermark::Cursor("0007".into()).encode(),
        );
        assert_eq!(
            watermarks(&summary),
            BTreeMap::from([
                ("kafka#orders#3".to_owned(), Watermark::Position(42)),
                (
                    "kinesis#clicks#shardId-000000000001".to_owned(),
                    Watermark::Cursor("0007".into())
                ),
            ])
        );
        assert_eq!(Watermark::decode("position:x"), None);
        assert_eq!(Watermark::decode("cursor:"), None);
        assert!(Watermark::Cursor("99".into()) < Watermark::Position(0));
    }

    #[test]
    fn orphans_are_files_whose_first_entry_the_watermark_covers() {
        let id = PartitionId::new(Source::Kafka, "orders", "3");
        let tag = partition_tag(&id);
        let name = |first: &CommitEntry| format!("{}-00000.parquet", file_prefix(&id, first, "a1"));
        let by_tag = HashMap::from([(tag.clone(), Watermark::Position(10))]);
        assert!(is_orphan(&name(&entry("00", "01", Some(5))), &by_tag));
        assert!(is_orphan(&name(&entry("00", "01", Some(10))), &by_tag));
        assert!(!is_orphan(&name(&entry("00", "01", Some(11))), &by_tag));
        assert!(is_orphan(&name(&entry("99", "99", None)), &by_tag));
        let by_cursor = HashMap::from([(tag, Watermark::Cursor("0010".into()))]);
        assert!(is_orphan(&name(&entry("0010", "0011", None)), &by_cursor));
        assert!(!is_orphan(&name(&entry("0011", "0011", None)), &by_cursor));
        assert!(!is_orphan(
            &name(&entry("0000", "0001", Some(1))),
            &by_cursor
        ));
        assert!(!is_orphan("other-p1-x.parquet", &by_tag));
    }
}
