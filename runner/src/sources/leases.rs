//! Kinesis shard leases in the state table, and the pure decision of which leases to take.
//!
//! One item per shard: `pk` = `lease#kinesis#<stream>`, `sk` = the shard id. The state
//! registry's own items have `pk` = `<source>#<stream>#<partition>` (a source name first,
//! never `lease`) and `partitions()` only lists items whose `sk` is `checkpoint`, so lease
//! items never collide with checkpoints or commit-log entries and the state commands
//! (`status`, `verify`, `sweep`, `reset`) never see them.
//!
//! A lease has an owner (a runner's worker id, or none), a counter that every take, renewal,
//! release and finish increments (each write is conditional on the counter read, so two
//! runners can never both believe they won the same lease), an expiry (ms since the epoch,
//! renewed by heartbeat), the shard's parents, and `finished` once a closed shard is read
//! to its end and everything read is committed. Expiry compares wall clocks of different
//! hosts: keep the lease duration well above the clock skew (NTP keeps it to milliseconds).
//!
//! The lease only decides who *reads* a shard. Landing stays fenced by the engine's
//! conditional commit on the checkpoint, so a runner that has lost a lease and still lands
//! what it buffered cannot land a record twice.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The stream.
    pub stream: String,
    /// The shard id.
    pub shard: String,
    /// The runner holding it, if any.
    pub owner: Option<String>,
    /// Incremented by every write: the fencing token of conditional writes.
    pub counter: u64,
    /// Until when (ms since the epoch) the owner holds it without renewing.
    pub expires_ms: i64,
    /// The shard's parent shards (one after a split, two after a merge).
    pub parents: Vec<String>,
    /// The shard is closed, read to its end, and everything read is committed.
    pub finished: bool,
}

impl Lease {
    /// True when nobody holds it now: no owner, or the owner stopped renewing.
    pub fn is_free(&self, now_ms: i64) -> bool {
        self.owner.is_none() || self.expires_ms <= now_ms
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The conditional write lost: another runner wrote the lease since it was read (a take,
    /// or its own renewal). Control flow: the lease is not ours.
    #[error("lease {stream}/{shard}: changed since it was read (counter {counter})")]
    Lost {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// The counter the write expected.
        counter: u64,
    },
    /// DynamoDB failed.
    #[error("lease table {table}: {message}")]
    Store {
        /// The table.
        table: String,
        /// The SDK error, with its code.
        message: String,
    },
}

/// The lease items of the state table.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The partition key of a stream's lease items.
pub fn lease_pk(stream: &str) -> String {
    format!("lease#kinesis#{stream}")
}

fn parse(stream: &str, item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let number = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).cloned();
    Some(Lease {
        stream: stream.to_owned(),
        shard: text("sk")?,
        owner: text("owner"),
        counter: number("counter")?.parse().ok()?,
        expires_ms: number("expires_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        parents: item
            .get("parents")
            .and_then(|v| v.as_l().ok())
            .map(|l| {
                l.iter()
                    .filter_map(|p| p.as_s().ok().cloned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        finished: item
            .get("finished")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    })
}

impl LeaseStore {
    /// Lease items in `table` (the state table).
    pub fn new(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.to_owned(),
        }
    }

    fn store_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        e: SdkError<E, R>,
    ) -> LeaseError {
        LeaseError::Store {
            table: self.table.clone(),
            message: format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            ),
        }
    }

    /// Every lease of `stream` (strongly consistent).
    pub async fn list(&self, stream: &str) -> Result<Vec<Lease>, LeaseError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(lease_pk(stream)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.store_error(e))?;
            out.extend(page.items().iter().filter_map(|i| parse(stream, i)));
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Creates the lease of a newly discovered shard, unowned; an existing one is kept.
    pub async fn create(
        &self,
        stream: &str,
        shard: &str,
        parents: &[String],
    ) -> Result<(), LeaseError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(lease_pk(stream)))
            .item("sk", s(shard))
            .item("counter", n(0))
            .item("expires_ms", n(0))
            .item("finished", AttributeValue::Bool(false))
            .condition_expression("attribute_not_exists(pk)");
        if !parents.is_empty() {
            put = put.item(
                "parents",
                AttributeValue::L(parents.iter().map(|p| s(p.clone())).collect()),
            );
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// One conditional write: the lease as read (`counter`) becomes `owner`'s (or nobody's)
    /// until `expires_ms`, and `finished` if asked. Returns the lease as written.
    async fn write(
        &self,
        lease: &Lease,
        owner: Option<&str>,
        expires_ms: i64,
        finished: bool,
    ) -> Result<Lease, LeaseError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(lease_pk(&lease.stream)))
            .key("sk", s(&lease.shard))
            .condition_expression("#c = :expected")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":expected", n(lease.counter))
            .expression_attribute_values(":next", n(lease.counter + 1))
            .expression_attribute_values(":expires", n(expires_ms))
            .expression_attribute_values(":finished", AttributeValue::Bool(finished));
        update = match owner {
            Some(owner) => update
                .update_expression(
                    "SET #c = :next, expires_ms = :expires, finished = :finished, #o = :owner",
                )
                .expression_attribute_names("#o", "owner")
                .expression_attribute_values(":owner", s(owner)),
            None => update
                .update_expression(
                    "SET #c = :next, expires_ms = :expires, finished = :finished REMOVE #o",
                )
                .expression_attribute_names("#o", "owner"),
        };
        match update.send().await {
            Ok(_) => Ok(Lease {
                owner: owner.map(str::to_owned),
                counter: lease.counter + 1,
                expires_ms,
                finished,
                ..lease.clone()
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(LeaseError::Lost {
                    stream: lease.stream.clone(),
                    shard: lease.shard.clone(),
                    counter: lease.counter,
                })
            }
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Takes (or steals) `lease` as read: fails with [`LeaseError::Lost`] when another
    /// runner wrote it since.
    pub async fn take(
        &self,
        lease: &Lease,
        owner: &str,
        expires_ms: i64,
    ) -> Result<Lease, LeaseError> {
        self.write(lease, Some(owner), expires_ms, false).await
    }

    /// Renews a lease this runner holds (the one it last wrote).
    pub async fn renew(&self, lease: &Lease, expires_ms: i64) -> Result<Lease, LeaseError> {
        let owner = lease.owner.clone();
        self.write(lease, owner.as_deref(), expires_ms, false).await
    }

    /// Gives a lease up (graceful shutdown): another runner may take it at once.
    pub async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.write(lease, None, 0, false).await
    }

    /// Marks a closed shard finished (read to its end, all of it committed) and gives it up:
    /// its children may now be read.
    pub async fn finish(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.write(lease, None, 0, true).await
    }
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard: String,
    /// Its parent and adjacent parent (merge), if any.
    pub parents: Vec<String>,
}

/// May `lease`'s shard be read? Only when every parent is finished, or gone (trimmed: no
/// lease and not listed any more). A parent that exists but has no lease yet is not
/// finished.
pub fn readable(
    lease: &Lease,
    leases: &BTreeMap<String, Lease>,
    listed: &BTreeSet<String>,
) -> bool {
    !lease.finished
        && lease.parents.iter().all(|p| match leases.get(p) {
            Some(parent) => parent.finished,
            None => !listed.contains(p),
        })
}

/// What to take this heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Free (unowned or expired) leases to take, as read.
    pub take: Vec<Lease>,
    /// Leases to steal from runners holding more than their share, as read.
    pub steal: Vec<Lease>,
}

/// The balancing decision (pure): `me` should hold `ceil(readable / live runners)` of the
/// readable leases, where the live runners are the owners of unexpired readable leases plus
/// `me`. Below that share, take free leases first (lowest shard id first: parents before
/// children, old before new); when none is free, steal up to `max_steals` from the runner
/// holding the most, only while it holds more than the share.
pub fn plan(me: &str, readable: &[&Lease], now_ms: i64, max_steals: usize) -> Plan {
    let mut holders: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    holders.entry(me).or_default();
    let mut free = Vec::new();
    for lease in readable {
        match lease.owner.as_deref() {
            Some(owner) if !lease.is_free(now_ms) => holders.entry(owner).or_default().push(lease),
            _ => free.push(*lease),
        }
    }
    let share = readable.len().div_ceil(holders.len());
    let mine = holders[me].len();
    let mut out = Plan::default();
    if mine >= share {
        return out;
    }
    let mut want = share - mine;
    free.sort_by(|a, b| (&a.stream, &a.shard).cmp(&(&b.stream, &b.shard)));
    for lease in free.into_iter().take(want) {
        out.take.push(lease.clone());
        want -= 1;
    }
    let mut steals = 0;
    while want > 0 && steals < max_steals {
        let Some((_, victim)) = holders
            .iter_mut()
            .filter(|(owner, held)| **owner != me && held.len() > share)
            .max_by_key(|(owner, held)| (held.len(), std::cmp::Reverse(**owner)))
        else {
            break;
        };
        victim.sort_by(|a, b| (&a.stream, &a.shard).cmp(&(&b.stream, &b.shard)));
        let Some(lease) = victim.pop() else {
            break;
        };
        out.steal.push((*lease).clone());
        want -= 1;
        steals += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(shard: &str, owner: Option<&str>, expires_ms: i64) -> Lease {
        Lease {
            stream: "s".into(),
            shard: shard.into(),
            owner: owner.map(str::to_owned),
            counter: 1,
            expires_ms,
            parents: Vec::new(),
            finished: false,
        }
    }

    fn shards(leases: &[Lease]) -> Vec<&str> {
        leases.iter().map(|l| l.shard.as_str()).collect()
    }

    #[test]
    fn a_lone_runner_takes_every_free_lease() {
        let all: Vec<Lease> = (0..4).map(|i| lease(&format!("s{i}"), None, 0)).collect();
        let refs: Vec<&Lease> = all.iter().collect();
        let p = plan("a", &refs, 100, 1);
        assert_eq!(shards(&p.take), ["s0", "s1", "s2", "s3"]);
        assert!(p.steal.is_empty());
    }

    #[test]
    fn expired_leases_are_free_and_live_ones_count_their_owner() {
        let all = [
            lease("s0", Some("b"), 1000),
            lease("s1", Some("b"), 1000),
            lease("s2", Some("c"), 50),
            lease("s3", Some("c"), 50),
        ];
        let refs: Vec<&Lease> = all.iter().collect();
        // c expired: a and b are live, share 2; a takes c's two.
        let p = plan("a", &refs, 100, 1);
        assert_eq!(shards(&p.take), ["s2", "s3"]);
    }

    #[test]
    fn stealing_is_bounded_and_stops_at_the_share() {
        let all: Vec<Lease> = (0..8)
            .map(|i| lease(&format!("s{i}"), Some("b"), 1000))
            .collect();
        let refs: Vec<&Lease> = all.iter().collect();
        let p = plan("a", &refs, 100, 1);
        assert_eq!(shards(&p.steal), ["s7"], "one per heartbeat");
        let p = plan("a", &refs, 100, 10);
        assert_eq!(p.steal.len(), 4, "up to the even share");
        // Even already: nothing to do.
        let mut even = all.clone();
        for l in even.iter_mut().take(4) {
            l.owner = Some("a".into());
        }
        let refs: Vec<&Lease> = even.iter().collect();
        assert_eq!(plan("a", &refs, 100, 10), Plan::default());
        assert_eq!(plan("b", &refs, 100, 10), Plan::default());
    }

    #[test]
    fn a_child_is_readable_only_after_its_parents_finish() {
        let mut parent = lease("p", Some("a"), 1000);
        let mut child = lease("c", None, 0);
        child.parents = vec!["p".into()];
        let listed: BTreeSet<String> = ["p".to_owned(), "c".to_owned()].into();
        let mut leases: BTreeMap<String, Lease> = [
            ("p".to_owned(), parent.clone()),
            ("c".to_owned(), child.clone()),
        ]
        .into();
        assert!(!readable(&child, &leases, &listed));
        parent.finished = true;
        leases.insert("p".into(), parent);
        assert!(readable(&child, &leases, &listed));
        // A parent listed but without a lease yet is not finished.
        leases.remove("p");
        assert!(!readable(&child, &leases, &listed));
        // A parent trimmed away (not listed, no lease) does not hold the child back.
        assert!(readable(&child, &leases, &BTreeSet::new()));
        child.finished = true;
        assert!(
            !readable(&child, &leases, &BTreeSet::new()),
            "finished is never read again"
        );
    }
}
