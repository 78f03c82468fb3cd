//! Deaggregation of Kinesis Producer Library (KPL) aggregated records.
//!
//! Producers using the KPL pack many user records into one Kinesis record; the event source
//! mapping (and GetRecords) hand that record over as it is, and AWS documents that the
//! consumer must deaggregate it. The format: the magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord` (definition in `shared/proto/kpl.proto`, decoded with `prost`), and the
//! 16-byte MD5 digest of the protobuf bytes.
//!
//! Each user record gets the cursor `(sequence number, index in the aggregate)`
//! ([`crate::cursor::KinesisCursor`]), its own partition key and, when the producer set one,
//! its explicit hash key. A record that starts with the magic bytes but cannot be
//! deaggregated (digest mismatch, protobuf that does not decode, a key index outside the
//! tables, no user records) is kept whole, as AWS's deaggregators do: it lands as the raw
//! record, and the caller logs and counts it.

use md5::{Digest as _, Md5};
use prost::Message as _;

/// The first four bytes of every KPL aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// `AggregatedRecord` of `kpl.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// Partition keys, referenced by index from the records.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Explicit hash keys, referenced by index from the records.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in the order the producer added them.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<AggregatedUserRecord>,
}

/// `Record` of `kpl.proto`: one user record inside an aggregate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedUserRecord {
    /// Index into [`AggregatedRecord::partition_key_table`].
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index into [`AggregatedRecord::explicit_hash_key_table`], when set.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The user record's bytes.
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    /// KPL tags (not delivered to consumers by the KCL either; not landed).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag` of `kpl.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    /// Tag name.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Tag value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// One user record taken out of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, when the producer set one.
    pub explicit_hash_key: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What a Kinesis record's data turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deaggregated {
    /// Not a KPL aggregate: the data as it came.
    Plain(Vec<u8>),
    /// A KPL aggregate: its user records in order (index = sub-sequence number).
    Aggregate(Vec<UserRecord>),
    /// Starts with the magic bytes but is not a valid aggregate: the data as it came, and why.
    Undecodable {
        /// The record's bytes, unchanged.
        data: Vec<u8>,
        /// What is wrong with it (no data bytes).
        reason: String,
    },
}

/// Deaggregates a Kinesis record's (base64-decoded) data. Never panics.
pub fn deaggregate(data: Vec<u8>) -> Deaggregated {
    if !data.starts_with(&MAGIC) {
        return Deaggregated::Plain(data);
    }
    match decode(&data) {
        Ok(records) => Deaggregated::Aggregate(records),
        Err(reason) => Deaggregated::Undecodable { data, reason },
    }
}

fn decode(data: &[u8]) -> Result<Vec<UserRecord>, String> {
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(format!(
            "KPL aggregate of {} bytes is shorter than its magic bytes and digest",
            data.len()
        ));
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err("KPL aggregate's MD5 digest does not match its body".into());
    }
    let aggregate = AggregatedRecord::decode(body)
        .map_err(|e| format!("KPL aggregate's protobuf does not decode: {e}"))?;
    if aggregate.records.is_empty() {
        return Err("KPL aggregate holds no user records".into());
    }
    if u32::try_from(aggregate.records.len()).is_err() {
        return Err(
            "KPL aggregate holds more user records than a sub-sequence number counts".into(),
        );
    }
    let AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: hash_keys,
        records,
    } = aggregate;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let partition_key = lookup(&keys, r.partition_key_index)
                .ok_or_else(|| {
                    format!(
                        "KPL user record {i} names partition key {} of a table of {}",
                        r.partition_key_index,
                        keys.len()
                    )
                })?
                .clone();
            let explicit_hash_key = match r.explicit_hash_key_index {
                None => None,
                Some(index) => Some(
                    lookup(&hash_keys, index)
                        .ok_or_else(|| {
                            format!(
                                "KPL user record {i} names explicit hash key {index} of a table of {}",
                                hash_keys.len()
                            )
                        })?
                        .clone(),
                ),
            };
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data: r.data,
            })
        })
        .collect()
}

fn lookup(table: &[String], index: u64) -> Option<&String> {
    usize::try_from(index).ok().and_then(|i| table.get(i))
}

/// Builds an aggregate as the KPL does (for tests and benchmarks): magic, protobuf, MD5.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    let mut keys: Vec<String> = Vec::new();
    let mut hash_keys: Vec<String> = Vec::new();
    let index_of = |table: &mut Vec<String>, key: &str| -> u64 {
        match table.iter().position(|k| k == key) {
            Some(i) => i as u64,
            None => {
                table.push(key.to_owned());
                (table.len() - 1) as u64
            }
        }
    };
    let records = records
        .iter()
        .map(|r| AggregatedUserRecord {
            partition_key_index: index_of(&mut keys, &r.partition_key),
            explicit_hash_key_index: r
                .explicit_hash_key
                .as_deref()
                .map(|k| index_of(&mut hash_keys, k)),
            data: r.data.clone(),
            tags: Vec::new(),
        })
        .collect();
    let body = AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: hash_keys,
        records,
    }
    .encode_to_vec();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(key: &str, hash: Option<&str>, data: &[u8]) -> UserRecord {
        UserRecord {
            partition_key: key.into(),
            explicit_hash_key: hash.map(Into::into),
            data: data.to_vec(),
        }
    }

    #[test]
    fn plain_records_pass_through() {
        assert_eq!(
            deaggregate(b"{\"a\":1}".to_vec()),
            Deaggregated::Plain(b"{\"a\":1}".to_vec())
        );
        assert_eq!(deaggregate(Vec::new()), Deaggregated::Plain(Vec::new()));
    }

    #[test]
    fn an_aggregate_gives_its_user_records_in_order() {
        let records = vec![
            user("a", None, b"one"),
            user("b", Some("170141183460469231731687303715884105728"), b""),
            user("a", None, &[0xff, 0x00]),
        ];
        assert_eq!(
            deaggregate(aggregate(&records)),
            Deaggregated::Aggregate(records)
        );
    }

    #[test]
    fn a_bad_digest_or_body_keeps_the_record_whole() {
        let mut data = aggregate(&[user("a", None, b"x")]);
        let last = data.len() - 1;
        data[last] ^= 1;
        let Deaggregated::Undecodable { data: kept, reason } = deaggregate(data.clone()) else {
            panic!("not undecodable")
        };
        assert_eq!(kept, data);
        assert!(reason.contains("MD5"), "{reason}");

        // Valid digest over bytes that are not an AggregatedRecord.
        let body = [0x0a, 0xff, 0xff];
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(body));
        assert!(
            matches!(deaggregate(data), Deaggregated::Undecodable { reason, .. } if reason.contains("protobuf"))
        );

        // A key index outside the table.
        let body = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![AggregatedUserRecord {
                partition_key_index: 3,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: vec![],
            }],
        }
        .encode_to_vec();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        assert!(
            matches!(deaggregate(data), Deaggregated::Undecodable { reason, .. } if reason.contains("partition key 3"))
        );

        // Magic bytes alone, and an aggregate with no records.
        assert!(matches!(
            deaggregate(MAGIC.to_vec()),
            Deaggregated::Undecodable { .. }
        ));
        assert!(matches!(
            deaggregate(aggregate(&[])),
            Deaggregated::Undecodable { reason, .. } if reason.contains("no user records")
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&tail);
            match deaggregate(data.clone()) {
                Deaggregated::Undecodable { data: kept, .. } => prop_assert_eq!(kept, data),
                Deaggregated::Aggregate(_) => {}
                Deaggregated::Plain(_) => prop_assert!(false, "magic bytes read as plain"),
            }
        }

        #[test]
        fn aggregates_round_trip(
            records in proptest::collection::vec(
                ("[a-c]{1,3}", proptest::option::of("[0-9]{1,39}"), proptest::collection::vec(any::<u8>(), 0..64)),
                1..20,
            )
        ) {
            let records: Vec<UserRecord> = records
                .into_iter()
                .map(|(k, h, d)| UserRecord { partition_key: k, explicit_hash_key: h, data: d })
                .collect();
            prop_assert_eq!(deaggregate(aggregate(&records)), Deaggregated::Aggregate(records));
        }
    }
}
