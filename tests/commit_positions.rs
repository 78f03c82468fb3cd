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
