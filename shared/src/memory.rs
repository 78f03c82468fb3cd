//! In-memory adapters for the ports, with fault injection, so the commit protocol can be
//! tested with a crash between any two steps.

use crate::ports::{
    Checkpoint, CommitEntry, DeadLetterQueue, LogPositions, ObjectStore, PortError, PutOutcome,
    StateStore,
};
use crate::record::PartitionId;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where an injected crash happens relative to the numbered operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The operation does not take effect.
    Before,
    /// The operation takes effect, then the process dies before seeing the result.
    After,
}

/// Counts side-effecting operations across all in-memory adapters and kills the "process"
/// at a chosen one. After the crash every operation fails, as it would in a dead process.
#[derive(Debug, Default)]
pub struct Faults {
    step: AtomicU64,
    crash: Mutex<Option<(u64, CrashPoint)>>,
    crashed: AtomicBool,
}

impl Faults {
    /// A new, disarmed injector.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Arms a crash at operation number `step` (counting from 0 from now on).
    pub fn arm(&self, step: u64, point: CrashPoint) {
        self.step.store(0, Ordering::SeqCst);
        self.crashed.store(false, Ordering::SeqCst);
        *self.crash.lock().expect("faults lock") = Some((step, point));
    }

    /// Disarms and revives: the next invocation is a fresh process.
    pub fn disarm(&self) {
        self.step.store(0, Ordering::SeqCst);
        self.crashed.store(false, Ordering::SeqCst);
        *self.crash.lock().expect("faults lock") = None;
    }

    /// Whether the armed crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Operations counted since the last `arm`/`disarm`.
    pub fn steps(&self) -> u64 {
        self.step.load(Ordering::SeqCst)
    }

    fn dead(operation: &'static str) -> PortError {
        PortError::Transient {
            operation,
            target: "<injected crash>".into(),
            message: "process died".into(),
        }
    }

    /// Runs `op` as one numbered step, crashing before or after it when armed.
    fn run<T>(
        &self,
        operation: &'static str,
        op: impl FnOnce() -> Result<T, PortError>,
    ) -> Result<T, PortError> {
        if self.crashed() {
            return Err(Self::dead(operation));
        }
        let n = self.step.fetch_add(1, Ordering::SeqCst);
        let armed = *self.crash.lock().expect("faults lock");
        match armed {
            Some((at, CrashPoint::Before)) if at == n => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(Self::dead(operation))
            }
            Some((at, CrashPoint::After)) if at == n => {
                let _ = op();
                self.crashed.store(true, Ordering::SeqCst);
                Err(Self::dead(operation))
            }
            _ => op(),
        }
    }
}

/// An object store in memory.
#[derive(Debug)]
pub struct MemoryObjectStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    faults: Arc<Faults>,
}

impl MemoryObjectStore {
    /// An empty store sharing `faults`.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            objects: Mutex::default(),
            faults,
        }
    }

    /// All keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects
            .lock()
            .expect("store lock")
            .keys()
            .cloned()
            .collect()
    }

    /// One object's body.
    pub fn body(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().expect("store lock").get(key).cloned()
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<PutOutcome, PortError> {
        self.faults.run("s3:PutObject", || {
            let mut objects = self.objects.lock().expect("store lock");
            if objects.contains_key(key) {
                return Ok(PutOutcome::AlreadyExists);
            }
            objects.insert(key.to_owned(), body);
            Ok(PutOutcome::Created)
        })
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.faults.run("s3:PutObject", || {
            self.objects
                .lock()
                .expect("store lock")
                .insert(key.to_owned(), body);
            Ok(())
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.objects.lock().expect("store lock").get(key).cloned())
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>, PortError> {
        self.faults.run("s3:ListObjectsV2", || {
            let objects = self.objects.lock().expect("store lock");
            Ok(objects
                .range::<str, _>((
                    std::ops::Bound::Excluded(start_after),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        })
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.faults.run("s3:DeleteObject", || {
            self.objects.lock().expect("store lock").remove(key);
            Ok(())
        })
    }

    fn url(&self, key: &str) -> String {
        format!("memory://{key}")
    }
}

#[derive(Debug, Default, Clone)]
struct PartitionState {
    checkpoint: Option<Checkpoint>,
    log: BTreeMap<String, CommitEntry>,
    positions: Option<LogPositions>,
    /// The `start_from: latest` start position ([`StateStore::claim_start`]).
    start: Option<String>,
}

impl PartitionState {
    /// `entry` with the next commit-log position; the caller stores both or neither.
    fn positioned(&self, entry: &CommitEntry) -> (CommitEntry, LogPositions) {
        let mut positions = self.positions.unwrap_or_default();
        positions.last += 1;
        let mut entry = entry.clone();
        entry.position = Some(positions.last);
        (entry, positions)
    }
}

/// A state registry in memory with the same conditional semantics as the DynamoDB one.
#[derive(Debug)]
pub struct MemoryStateStore {
    partitions: Mutex<HashMap<String, PartitionState>>,
    faults: Arc<Faults>,
}

impl MemoryStateStore {
    /// An empty registry sharing `faults`.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            partitions: Mutex::default(),
            faults,
        }
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn checkpoint(&self, partition: &PartitionId) -> Result<Option<Checkpoint>, PortError> {
        self.faults.run("dynamodb:GetItem", || {
            Ok(self
                .partitions
                .lock()
                .expect("state lock")
                .get(&partition.state_key())
                .and_then(|p| p.checkpoint.clone()))
        })
    }

    async fn commit(
        &self,
        partition: &PartitionId,
        expected: Option<&str>,
        entry: &CommitEntry,
    ) -> Result<(), PortError> {
        self.faults.run("dynamodb:TransactWriteItems", || {
            let mut partitions = self.partitions.lock().expect("state lock");
            let state = partitions.entry(partition.state_key()).or_default();
            let found = state.checkpoint.as_ref().map(|c| c.cursor.clone());
            if found.as_deref() != expected {
                return Err(PortError::CheckpointMoved {
                    partition: partition.to_string(),
                    expected: expected.map(str::to_owned),
                    found,
                });
            }
            if state.log.contains_key(&entry.first) {
                return Err(PortError::LogEntryExists {
                    partition: partition.to_string(),
                    first: entry.first.clone(),
                    checkpoint: found,
                });
            }
            let (entry, positions) = state.positioned(entry);
            state.log.insert(entry.first.clone(), entry.clone());
            state.checkpoint = Some(Checkpoint {
                cursor: entry.last.clone(),
                last_commit: entry,
            });
            state.positions = Some(positions);
            Ok(())
        })
    }

    async fn log_commit(
        &self,
        partition: &PartitionId,
        entry: &CommitEntry,
    ) -> Result<Option<CommitEntry>, PortError> {
        self.faults.run("dynamodb:PutItem", || {
            let mut partitions = self.partitions.lock().expect("state lock");
            let state = partitions.entry(partition.state_key()).or_default();
            if let Some(existing) = state.log.get(&entry.first) {
                return Ok(Some(existing.clone()));
            }
            let (entry, positions) = state.positioned(entry);
            state.log.insert(entry.first.clone(), entry);
            state.positions = Some(positions);
            Ok(None)
        })
    }

    async fn commit_entry(
        &self,
        partition: &PartitionId,
        first: &str,
    ) -> Result<Option<CommitEntry>, PortError> {
        self.faults.run("dynamodb:GetItem", || {
            Ok(self
                .partitions
                .lock()
                .expect("state lock")
                .get(&partition.state_key())
                .and_then(|p| p.log.get(first).cloned()))
        })
    }

    async fn commit_log(&self, partition: &PartitionId) -> Result<Vec<CommitEntry>, PortError> {
        Ok(self
            .partitions
            .lock()
            .expect("state lock")
            .get(&partition.state_key())
            .map(|p| p.log.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn partitions(&self) -> Result<Vec<PartitionId>, PortError> {
        let mut ids: Vec<PartitionId> = self
            .partitions
            .lock()
            .expect("state lock")
            .iter()
            .filter(|(_, p)| p.checkpoint.is_some())
            .filter_map(|(k, _)| PartitionId::from_state_key(k))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn forget_partition(&self, partition: &PartitionId) -> Result<u64, PortError> {
        self.faults.run("dynamodb:DeleteItem", || {
            let mut partitions = self.partitions.lock().expect("state lock");
            let Some(state) = partitions.get_mut(&partition.state_key()) else {
                return Ok(0);
            };
            let removed = state.log.len() as u64
                + u64::from(state.checkpoint.is_some())
                + u64::from(state.start.is_some());
            state.log.clear();
            state.checkpoint = None;
            state.start = None;
            if let Some(p) = state.positions.as_mut() {
                p.reset_floor = p.last;
            }
            Ok(removed)
        })
    }

    async fn log_positions(
        &self,
        partition: &PartitionId,
    ) -> Result<Option<LogPositions>, PortError> {
        self.faults.run("dynamodb:GetItem", || {
            Ok(self
                .partitions
                .lock()
                .expect("state lock")
                .get(&partition.state_key())
                .and_then(|p| p.positions))
        })
    }

    async fn claim_start(
        &self,
        partition: &PartitionId,
        proposed: &str,
    ) -> Result<String, PortError> {
        self.faults.run("dynamodb:PutItem", || {
            let mut partitions = self.partitions.lock().expect("state lock");
            let state = partitions.entry(partition.state_key()).or_default();
            Ok(state
                .start
                .get_or_insert_with(|| proposed.to_owned())
                .clone())
        })
    }

    async fn start(&self, partition: &PartitionId) -> Result<Option<String>, PortError> {
        self.faults.run("dynamodb:GetItem", || {
            Ok(self
                .partitions
                .lock()
                .expect("state lock")
                .get(&partition.state_key())
                .and_then(|p| p.start.clone()))
        })
    }

    async fn logged_partitions(&self) -> Result<Vec<PartitionId>, PortError> {
        let mut ids: Vec<PartitionId> = self
            .partitions
            .lock()
            .expect("state lock")
            .iter()
            .filter(|(_, p)| p.checkpoint.is_some() || !p.log.is_empty() || p.positions.is_some())
            .filter_map(|(k, _)| PartitionId::from_state_key(k))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// A dead-letter queue in memory.
#[derive(Debug)]
pub struct MemoryDlq {
    letters: Mutex<Vec<(String, String)>>,
    faults: Arc<Faults>,
}

impl MemoryDlq {
    /// An empty queue sharing `faults`.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            letters: Mutex::default(),
            faults,
        }
    }

    /// Every `(dedup id, body)` sent, in order.
    pub fn letters(&self) -> Vec<(String, String)> {
        self.letters.lock().expect("dlq lock").clone()
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryDlq {
    async fn send(&self, dedup_id: &str, body: &str) -> Result<(), PortError> {
        self.faults.run("sqs:SendMessage", || {
            self.letters
                .lock()
                .expect("dlq lock")
                .push((dedup_id.to_owned(), body.to_owned()));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Source;

    #[tokio::test]
    async fn a_start_is_claimed_once_and_a_reset_forgets_it() {
        let state = MemoryStateStore::new(Faults::new());
        let p = PartitionId::new(Source::Kafka, "t", "0");
        assert_eq!(state.start(&p).await.unwrap(), None);
        assert_eq!(state.claim_start(&p, "7").await.unwrap(), "7");
        assert_eq!(state.start(&p).await.unwrap().as_deref(), Some("7"));
        assert_eq!(
            state.claim_start(&p, "9").await.unwrap(),
            "7",
            "a later reader starts where the first one did"
        );
        assert!(
            state.partitions().await.unwrap().is_empty()
                && state.logged_partitions().await.unwrap().is_empty(),
            "a start position is not a landed partition"
        );
        assert_eq!(state.forget_partition(&p).await.unwrap(), 1);
        assert_eq!(state.start(&p).await.unwrap(), None);
        assert_eq!(state.claim_start(&p, "9").await.unwrap(), "9");
    }
}
