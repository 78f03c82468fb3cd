//! Commit-log positions on DynamoDB (moto): every commit of a partition, ordered or
//! interleaved, takes the next position in its own transaction. Concurrent interleaved
//! commits (lanes of one shard) get distinct, dense positions in the order they committed;
//! a reset keeps the positions and raises the floor, so positions never go back.

use bronze::cursor::{Cursor, SequenceNumber};
use bronze::ports::{CommitEntry, LogPositions, StateStore};
use bronze::record::{PartitionId, Source};
use integration_tests::*;
use std::collections::BTreeSet;

fn entry(first: u64, last: u64) -> CommitEntry {
    let sortable = |n: u64| {
        SequenceNumber::parse(&format!("4959{:040}", n))
            .expect("sequence")
            .sortable()
    };
    CommitEntry {
        first: sortable(first),
        last: sortable(last),
        object_key: None,
        records: 0,
        dead_lettered: last - first + 1,
        object_bytes: 0,
        payload_bytes: 0,
        run_id: "positions".into(),
        committed_at_ms: 0,
        last_fingerprint: None,
        dead_cursors: None,
        position: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_take_dense_positions_in_commit_order() {
    let stack = Stack::new().await.unwrap();
    let state = stack.state();
    let id = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000001");
    assert_eq!(state.log_positions(&id).await.unwrap(), None);

    // Eight lanes commit at once, highest cursors first in spawn order.
    let mut tasks = Vec::new();
    for lane in (0..8u64).rev() {
        let state = stack.state();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            state
                .log_commit(&id, &entry(lane * 10, lane * 10 + 9))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), None, "every lane's entry is new");
    }
    let log = state.commit_log(&id).await.unwrap();
    let positions: BTreeSet<u64> = log.iter().filter_map(|e| e.position).collect();
    assert_eq!(positions, (1..=8).collect(), "{log:?}");
    assert_eq!(
        state.log_positions(&id).await.unwrap(),
        Some(LogPositions {
            last: 8,
            reset_floor: 0
        })
    );
    // An interleaved partition has no checkpoint but is listed for publishers.
    assert!(!state.partitions().await.unwrap().contains(&id));
    assert!(state.logged_partitions().await.unwrap().contains(&id));

    // A retry of a committed batch finds its entry and takes no position.
    let again = state.log_commit(&id, &entry(30, 39)).await.unwrap();
    assert!(again.and_then(|e| e.position).is_some());
    assert_eq!(state.log_positions(&id).await.unwrap().unwrap().last, 8);

    // An ordered commit (factor lowered to 1) continues the same sequence.
    state.commit(&id, None, &entry(100, 109)).await.unwrap();
    let checkpoint = state.checkpoint(&id).await.unwrap().unwrap();
    assert_eq!(checkpoint.last_commit.position, Some(9));

    // A reset keeps the positions and raises the floor; the next commit gets 10.
    let deleted = state.forget_partition(&id).await.unwrap();
    assert_eq!(
        deleted, 10,
        "eight lane entries, the ordered entry and the checkpoint"
    );
    assert!(state.commit_log(&id).await.unwrap().is_empty());
    assert_eq!(
        state.log_positions(&id).await.unwrap(),
        Some(LogPositions {
            last: 9,
            reset_floor: 9
        })
    );
    state.commit(&id, None, &entry(0, 4)).await.unwrap();
    let log = state.commit_log(&id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].position, Some(10));
}

/// `start_from: latest` is resolved once per partition: the first reader's position is
/// recorded atomically and every later reader gets it back; it is not a landed partition, and
/// a reset forgets it with the rest.
#[tokio::test]
async fn a_latest_start_is_claimed_once_and_forgotten_by_a_reset() {
    let stack = Stack::new().await.unwrap();
    let state = stack.state();
    let id = PartitionId::new(Source::Kafka, "orders", "3");
    let claims: Vec<_> = ["00000000000000000042", "00000000000000000077"]
        .into_iter()
        .map(|proposed| {
            let state = state.clone();
            let id = id.clone();
            tokio::spawn(async move { state.claim_start(&id, proposed).await })
        })
        .collect();
    let mut got = BTreeSet::new();
    for c in claims {
        got.insert(c.await.unwrap().unwrap());
    }
    assert_eq!(
        got.len(),
        1,
        "concurrent claims agree on one start: {got:?}"
    );
    let first = got.into_iter().next().unwrap();
    assert_eq!(
        state.start(&id).await.unwrap().as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        state
            .claim_start(&id, "00000000000000000099")
            .await
            .unwrap(),
        first
    );
    assert!(!state.partitions().await.unwrap().contains(&id));
    assert!(!state.logged_partitions().await.unwrap().contains(&id));
    assert!(state.checkpoint(&id).await.unwrap().is_none());
    assert_eq!(state.forget_partition(&id).await.unwrap(), 1);
    assert_eq!(state.start(&id).await.unwrap(), None);
    assert_eq!(
        state
            .claim_start(&id, "00000000000000000099")
            .await
            .unwrap(),
        "00000000000000000099"
    );
}
