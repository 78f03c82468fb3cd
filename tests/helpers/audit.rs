//! The exactly-once audit of one partition on the local stack, written from the landing
//! contract (docs/landing-contract.md, sections 3-5) rather than from the engine:
//!
//! 1. every input record is in exactly one place: one committed Bronze line (read through
//!    the commit log, the way a reader must) or the DLQ, never both, never twice;
//! 2. dead letters may repeat (a retry after a failure between the send and the commit sends
//!    the letter again) but only with the same deterministic id `source/stream/partition/
//!    cursor`: letters are deduplicated by id, and repeats are counted, not hidden;
//! 3. committed lines are in strictly increasing cursor order, each object holds as many
//!    lines as its log entry says, inside the entry's range, and entries do not overlap;
//! 4. the checkpoint is the commit log's last entry;
//! 5. no uncommitted object is left under the partition's prefix: the keys listed there are
//!    exactly the commit log's object keys (call this after a successful commit, which
//!    sweeps what failed attempts left).
//!
//! The DLQ is drained as it is read, so the letters of a test are kept in a [`Ledger`].

use crate::Stack;
use bronze::ports::ObjectStore;
use bronze::record::{PartitionId, Source};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Every dead letter received from a test's queue so far.
#[derive(Debug, Default)]
pub struct Ledger {
    letters: Vec<Value>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves what is in the queue now into the ledger.
    pub async fn drain(&mut self, stack: &Stack) {
        self.letters.extend(stack.dead_letters().await);
    }

    /// Every letter received, repeats included.
    pub fn letters(&self) -> &[Value] {
        &self.letters
    }
}

/// What the audit of one partition found (when it passed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionAudit {
    /// Input records audited.
    pub records: usize,
    /// Of those, landed in Bronze.
    pub landed: usize,
    /// Of those, in the DLQ.
    pub dead_lettered: usize,
    /// Letters received for the partition, repeats included.
    pub letters_received: usize,
    /// Letters received more than once (same id), counted once per extra copy.
    pub letter_repeats: usize,
    /// Commit-log entries.
    pub commits: usize,
}

/// Numeric order of two cursors in their plain decimal form (Kafka offsets, Kinesis
/// sequence numbers): longer is larger, then digit by digit.
fn cmp_cursor(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Audits one partition against the records delivered to it (`input`, plain cursors, in
/// any order, repeats allowed). `Err` lists every violation found.
pub async fn audit_partition(
    stack: &Stack,
    ledger: &Ledger,
    source: Source,
    stream: &str,
    partition: &str,
    input: &[String],
) -> Result<PartitionAudit, String> {
    let mut problems = Vec::new();
    let input: BTreeSet<&str> = input.iter().map(String::as_str).collect();
    let log = stack.commit_log(source, stream, partition).await;

    // 3. The log and the objects it names.
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let mut previous_line: Option<String> = None;
    let mut previous_last: Option<String> = None;
    let mut committed_keys = BTreeSet::new();
    for entry in &log {
        let (first, last) = (
            bronze::cursor::unpad(&entry.first).to_owned(),
            bronze::cursor::unpad(&entry.last).to_owned(),
        );
        if cmp_cursor(&first, &last) == Ordering::Greater {
            problems.push(format!("log entry {first}..{last} has first > last"));
        }
        if let Some(prev) = &previous_last {
            if cmp_cursor(&first, prev) != Ordering::Greater {
                problems.push(format!(
                    "log entry {first}..{last} overlaps the previous one ending at {prev}"
                ));
            }
        }
        previous_last = Some(last.clone());
        let Some(key) = &entry.object_key else {
            if entry.records != 0 {
                problems.push(format!(
                    "log entry {first}..{last} counts {} records but names no object",
                    entry.records
                ));
            }
            continue;
        };
        committed_keys.insert(key.clone());
        let body = match stack.objects().get(key).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                problems.push(format!("committed object {key} is missing"));
                continue;
            }
            Err(e) => {
                problems.push(format!("committed object {key} is unreadable: {e}"));
                continue;
            }
        };
        let lines = match bronze::bronze::read_lines(&body) {
            Ok(lines) => lines,
            Err(e) => {
                problems.push(format!("committed object {key} does not decode: {e}"));
                continue;
            }
        };
        if lines.len() as u64 != entry.records {
            problems.push(format!(
                "{key} holds {} lines, its log entry counts {}",
                lines.len(),
                entry.records
            ));
        }
        for line in lines {
            let Some(cursor) = line["cursor"].as_str().map(str::to_owned) else {
                problems.push(format!("{key}: a line has no cursor: {line}"));
                continue;
            };
            if line["partition"].as_str() != Some(partition) || line["stream"] != stream {
                problems.push(format!("{key}: line {cursor} names another partition"));
            }
            if cmp_cursor(&cursor, &first) == Ordering::Less
                || cmp_cursor(&cursor, &last) == Ordering::Greater
            {
                problems.push(format!("{key}: line {cursor} is outside {first}..{last}"));
            }
            if let Some(prev) = &previous_line {
                if cmp_cursor(&cursor, prev) != Ordering::Greater {
                    problems.push(format!("{key}: line {cursor} follows {prev} (order)"));
                }
            }
            previous_line = Some(cursor.clone());
            *landed.entry(cursor).or_default() += 1;
        }
    }

    // 2. Dead letters of this partition, deduplicated by id.
    let mut letters: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut received = 0;
    for letter in ledger.letters() {
        if letter["source"] != source.as_str()
            || letter["stream"] != stream
            || letter["partition"] != partition
        {
            continue;
        }
        received += 1;
        let cursor = letter["cursor"].as_str().unwrap_or_default().to_owned();
        let id = letter["id"].as_str().unwrap_or_default().to_owned();
        let expected_id = format!("{}/{stream}/{partition}/{cursor}", source.as_str());
        if id != expected_id {
            problems.push(format!(
                "letter id {id:?} is not the deterministic {expected_id:?}"
            ));
        }
        if letter["payload_base64"].is_null() && letter["payload_s3"].is_null() {
            problems.push(format!("letter {id} carries no payload"));
        }
        letters
            .entry(id)
            .and_modify(|(_, n)| *n += 1)
            .or_insert((cursor, 1));
    }
    let letter_repeats = letters.values().map(|(_, n)| n - 1).sum();
    let dead: BTreeMap<&str, usize> = letters
        .values()
        .map(|(cursor, _)| (cursor.as_str(), 1))
        .collect();

    // 1. Exactly once, in one place.
    for cursor in &input {
        let in_bronze = landed.get(*cursor).copied().unwrap_or(0);
        let in_dlq = dead.get(cursor).copied().unwrap_or(0);
        match (in_bronze, in_dlq) {
            (1, 0) | (0, 1) => {}
            (0, 0) => problems.push(format!(
                "record {cursor} is lost: not landed, not in the DLQ"
            )),
            (b, d) => problems.push(format!(
                "record {cursor} is in Bronze {b} time(s) and in the DLQ {d} time(s)"
            )),
        }
    }
    for cursor in landed
        .keys()
        .map(String::as_str)
        .chain(dead.keys().copied())
    {
        if !input.contains(cursor) {
            problems.push(format!(
                "cursor {cursor} was never delivered but is committed"
            ));
        }
    }

    // 4. The checkpoint is the log's end.
    let checkpoint = stack.checkpoint(source, stream, partition).await;
    match (&checkpoint, log.last()) {
        (Some(cp), Some(end)) => {
            if cp.cursor != end.last || &cp.last_commit != end {
                problems.push(format!(
                    "checkpoint {} (commit {}..) is not the log's last entry {}..{}",
                    cp.cursor, cp.last_commit.first, end.first, end.last
                ));
            }
        }
        (None, None) => {}
        (cp, end) => problems.push(format!(
            "checkpoint {:?} but log end {:?}",
            cp.as_ref().map(|c| &c.cursor),
            end.map(|e| &e.last)
        )),
    }

    // 5. No orphans under the partition's prefix.
    let id = PartitionId::new(source, stream, partition);
    let prefix = bronze::bronze::partition_prefix(&stack.prefix, &id);
    match stack.objects().list_after(&prefix, "").await {
        Ok(keys) => {
            let listed: BTreeSet<String> = keys.into_iter().collect();
            for orphan in listed.difference(&committed_keys) {
                problems.push(format!(
                    "uncommitted object left under the prefix: {orphan}"
                ));
            }
        }
        Err(e) => problems.push(format!("cannot list {prefix}: {e}")),
    }

    if problems.is_empty() {
        Ok(PartitionAudit {
            records: input.len(),
            landed: landed.len(),
            dead_lettered: dead.len(),
            letters_received: received,
            letter_repeats,
            commits: log.len(),
        })
    } else {
        Err(format!(
            "{source}/{stream}/{partition}: {}",
            problems.join("; ")
        ))
    }
}
