//! Operator maintenance of a partition's Bronze data and state.
//!
//! `streaming-connector sweep`: delete objects that no commit references and no writer can
//! commit any more ([`sweep_partition`]). The engine sweeps after each ordered commit, but
//! not after a delivery that was already landed, so an object a crashed attempt left can
//! otherwise stay in the prefix until the next commit of that range.
//!
//! `streaming-connector reset`: start a partition over after its source's cursors restarted
//! (a recreated topic or stream, a mapping pointed at another cluster with the same names).
//!
//! The engine refuses such deliveries instead of skipping them as "already landed"
//! ([`crate::engine::EngineError::CursorRestart`]). Starting over keeps the old data: every
//! object under the partition's prefix is copied to
//! `<prefix>/_archive/<tag>/source=.../stream=.../partition=.../` and deleted, then the
//! partition's checkpoint and commit log are deleted, so the new records land from their first
//! cursor under fresh keys. Objects go first: a reset interrupted after them is simply run
//! again; state is never deleted while objects it points to are still in place.
//!
//! The partition's commit-log positions ([`crate::ports::LogPositions`]) are not deleted: the
//! reset raises their `reset_floor` to the last position, and the entries landed after it
//! get positions above it. A publisher's watermark (a position) therefore never hides the
//! re-landed records, and it knows that positions at or below the floor that it has not
//! published were archived, not lost in flight.

use crate::bronze;
use crate::ports::{ObjectStore, PortError, StateStore};
use crate::record::PartitionId;

/// What a reset did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Objects moved to the archive.
    pub archived: Vec<String>,
    /// Where they went (the archive prefix).
    pub archive_prefix: String,
    /// Checkpoint and commit-log items deleted.
    pub state_items: u64,
    /// Whether anything was changed.
    pub applied: bool,
}

/// The archive prefix for a reset tagged `tag` (e.g. a timestamp the operator sees).
pub fn archive_prefix(prefix: &str, id: &PartitionId, tag: &str) -> String {
    let live = bronze::partition_prefix(prefix, id);
    let relative = live.strip_prefix(&format!("{prefix}/")).unwrap_or(&live);
    format!("{prefix}/_archive/{tag}/{relative}")
}

/// Archives a partition's objects and forgets its state. With `apply == false` it only
/// lists what it would move.
pub async fn reset_partition(
    objects: &dyn ObjectStore,
    state: &dyn StateStore,
    prefix: &str,
    id: &PartitionId,
    tag: &str,
    apply: bool,
) -> Result<ResetReport, PortError> {
    let live = bronze::partition_prefix(prefix, id);
    let archive = archive_prefix(prefix, id, tag);
    let keys = objects.list_after(&live, &live).await?;
    if apply {
        for key in &keys {
            let Some(name) = key.strip_prefix(&live) else {
                continue;
            };
            if let Some(body) = objects.get(key).await? {
                objects.put(&format!("{archive}{name}"), body).await?;
            }
            objects.delete(key).await?;
        }
    }
    let state_items = if apply {
        state.forget_partition(id).await?
    } else {
        state.commit_log(id).await?.len() as u64
    };
    Ok(ResetReport {
        archived: keys,
        archive_prefix: archive,
        state_items,
        applied: apply,
    })
}

/// What a sweep found (and, when applied, deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Unreferenced objects at or below the checkpoint.
    pub orphans: Vec<String>,
    /// Whether they were deleted.
    pub applied: bool,
}

/// Finds the objects of an ordered-mode partition that no commit-log entry references and
/// whose first cursor is at or below the checkpoint: no writer can ever commit them (a
/// commit's condition is the checkpoint it read, which is below their first cursor, and the
/// checkpoint only moves forward). Deletes them when `apply`. Objects above the checkpoint
/// are left alone: a writer may be about to commit them.
pub async fn sweep_partition(
    objects: &dyn ObjectStore,
    state: &dyn StateStore,
    prefix: &str,
    id: &PartitionId,
    apply: bool,
) -> Result<SweepReport, PortError> {
    let Some(checkpoint) = state.checkpoint(id).await? else {
        return Ok(SweepReport {
            orphans: Vec::new(),
            applied: apply,
        });
    };
    let referenced: std::collections::HashSet<String> = state
        .commit_log(id)
        .await?
        .into_iter()
        .filter_map(|e| e.object_key)
        .collect();
    let live = bronze::partition_prefix(prefix, id);
    let mut orphans = Vec::new();
    for key in objects.list_after(&live, &live).await? {
        let Some((first, _)) = bronze::parse_object_range(&key) else {
            continue;
        };
        if first <= checkpoint.cursor.as_str() && !referenced.contains(&key) {
            orphans.push(key);
        }
    }
    if apply {
        for key in &orphans {
            objects.delete(key).await?;
        }
    }
    Ok(SweepReport {
        orphans,
        applied: apply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Codec;
    use crate::config::{KeyStrategy, PayloadFormat, StreamSettings};
    use crate::cursor::KafkaOffset;
    use crate::engine::{Lander, PartitionOutcome, RunContext};
    use crate::memory::{Faults, MemoryDlq, MemoryObjectStore, MemoryStateStore};
    use crate::record::{PartitionBatch, Record, Source};
    use crate::telemetry::Metrics;
    use std::sync::Arc;

    /// In-memory ports, an engine over them and `auto` settings.
    fn world() -> (
        Arc<MemoryObjectStore>,
        Arc<MemoryStateStore>,
        Lander,
        StreamSettings,
    ) {
        let faults = Faults::new();
        let objects = Arc::new(MemoryObjectStore::new(faults.clone()));
        let state = Arc::new(MemoryStateStore::new(faults.clone()));
        let lander = Lander::new(
            objects.clone(),
            state.clone(),
            Arc::new(MemoryDlq::new(faults)),
            "bronze",
        );
        let settings = StreamSettings {
            group: None,
            payload_format: PayloadFormat::Auto,
            key_strategy: KeyStrategy::Raw,
            parallelization_factor: 1,
            schema: None,
            compression: Default::default(),
        };
        (objects, state, lander, settings)
    }

    #[tokio::test]
    async fn a_reset_partition_lands_its_new_records_and_keeps_the_old_ones() {
        let (objects, state, lander, settings) = world();
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "r",
            now_ms: 1,
            metrics: &metrics,
        };
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let batch = |tag: &str| PartitionBatch {
            id: id.clone(),
            records: (0..4)
                .map(|o| Record {
                    cursor: KafkaOffset(o),
                    key: None,
                    headers: vec![],
                    timestamp_ms: None,
                    payload: Some(format!("{{\"{tag}\":{o}}}").into_bytes()),
                    defect: None,
                    schema_id: None,
                })
                .collect(),
        };
        assert!(matches!(
            lander.land(&batch("old"), &settings, run).await,
            PartitionOutcome::Landed { .. }
        ));
        // The topic is recreated: the engine refuses the new records at landed offsets.
        assert!(matches!(
            lander.land(&batch("new"), &settings, run).await,
            PartitionOutcome::Failed { .. }
        ));
        let dry = reset_partition(objects.as_ref(), state.as_ref(), "bronze", &id, "t1", false)
            .await
            .unwrap();
        assert_eq!((dry.archived.len(), dry.applied), (1, false));
        assert!(
            state.checkpoint(&id).await.unwrap().is_some(),
            "dry run changes nothing"
        );
        let done = reset_partition(objects.as_ref(), state.as_ref(), "bronze", &id, "t1", true)
            .await
            .unwrap();
        assert_eq!(done.state_items, 2, "checkpoint and one log entry");
        assert!(state.checkpoint(&id).await.unwrap().is_none());
        let archived = objects.keys();
        assert!(
            archived.iter().all(
                |k| k.starts_with("bronze/_archive/t1/source=kafka/stream=orders/partition=0/")
            ),
            "{archived:?}"
        );
        // The new records land from offset 0 under the live prefix.
        assert!(matches!(
            lander.land(&batch("new"), &settings, run).await,
            PartitionOutcome::Landed { .. }
        ));
        let live: Vec<_> = objects
            .keys()
            .into_iter()
            .filter(|k| !k.contains("_archive"))
            .collect();
        assert_eq!(live.len(), 1);
        let lines = bronze::read_lines(&objects.body(&live[0]).unwrap()).unwrap();
        assert_eq!(lines[0]["payload"], serde_json::json!({"new": 0}));
    }

    #[tokio::test]
    async fn sweep_deletes_only_unreferenced_objects_at_or_below_the_checkpoint() {
        let (objects, state, lander, settings) = world();
        let metrics = Metrics::default();
        let run = RunContext {
            run_id: "r",
            now_ms: 1,
            metrics: &metrics,
        };
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        let rec = |o: u64| Record {
            cursor: KafkaOffset(o),
            key: None,
            headers: vec![],
            timestamp_ms: None,
            payload: Some(b"{}".to_vec()),
            defect: None,
            schema_id: None,
        };
        lander
            .land(
                &PartitionBatch {
                    id: id.clone(),
                    records: (0..5).map(rec).collect(),
                },
                &settings,
                run,
            )
            .await;
        // Leftovers of crashed attempts: one inside the committed range (written when the
        // stream was zstd: the sweep knows both formats), one above it.
        let below =
            bronze::object_key("bronze", &id, &KafkaOffset(2), &KafkaOffset(3), Codec::Zstd);
        let above =
            bronze::object_key("bronze", &id, &KafkaOffset(5), &KafkaOffset(6), Codec::Gzip);
        for key in [&below, &above] {
            objects.put(key, b"x".to_vec()).await.unwrap();
        }
        let dry = sweep_partition(objects.as_ref(), state.as_ref(), "bronze", &id, false)
            .await
            .unwrap();
        assert_eq!(dry.orphans, vec![below.clone()]);
        assert_eq!(objects.keys().len(), 3, "a dry run deletes nothing");
        sweep_partition(objects.as_ref(), state.as_ref(), "bronze", &id, true)
            .await
            .unwrap();
        let left = objects.keys();
        assert!(!left.contains(&below) && left.contains(&above), "{left:?}");
        assert_eq!(left.len(), 2, "the committed object stays");
    }
}
