//! KPL de-aggregation: the user records packed into one Kinesis record.
//!
//! The Kinesis Producer Library (and `aws-kinesis-agg`, Fluent Bit, and other aggregators)
//! packs many *user records* into one Kinesis record, in this format:
//!
//! ```text
//! F3 89 9A C2 | AggregatedRecord (protobuf) | MD5 of the protobuf bytes (16 bytes)
//! ```
//!
//! `AggregatedRecord` holds a table of partition keys, a table of explicit hash keys, and the
//! user records, each naming its partition key (and optionally its explicit hash key) by index
//! into those tables. [`deaggregate`] turns one Kinesis record into its user records: each
//! carries its own data, partition key and explicit hash key, and the aggregate's sequence
//! number and arrival time; its sub-sequence number is its index in the aggregate. This is
//! what the Java KCL's `AggregatorUtil` does, with two differences:
//!
//! * **Nothing is dropped for lying outside the shard's hash key range.** The Java KCL drops
//!   the *whole aggregate* when one of its user records has an effective hash key (the
//!   explicit hash key, else the MD5 of the partition key) outside the shard's range. That
//!   happens when the producer's shard map was stale (after a reshard), and always with
//!   aggregators that do not know the shard map (`aws-kinesis-agg` packs records of every
//!   partition key together: on a stream of 2 or more shards the Java KCL delivers almost none
//!   of them). Those records exist only in this shard: here they are delivered, and counted
//!   ([`Outcome::Aggregate::outside_hash_range`]).
//! * **A record with the magic bytes that is not a valid aggregate** (MD5 mismatch, a
//!   truncated or undecodable protobuf, an index outside its table, no user records) is
//!   delivered as it is, whole, with the reason ([`Outcome::Corrupt`]); the Java KCL does the
//!   same for MD5 and protobuf failures, but drops the rest of an aggregate whose index is out
//!   of range.
//!
//! The user records' payloads are slices of the aggregate's buffer (nothing is copied).
//!
//! A record without the magic bytes is not an aggregate and is delivered as it is.

use crate::lease::HashKeyRange;
use crate::record::Record;
use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

/// The first four bytes of every KPL aggregate.
pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

/// The aggregate's protobuf message (`messages.proto` of the KPL, proto2).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<UserRecord>,
}

/// One user record of an [`AggregatedRecord`] (its `tags`, field 4, are skipped: no KCL
/// delivers them).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct UserRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: Bytes,
}

/// What [`deaggregate`] found in one Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Not an aggregate (no KPL magic bytes): the record was passed on as it is.
    Plain,
    /// An aggregate: its `user_records` were passed on, in order.
    Aggregate {
        /// How many user records it held.
        user_records: usize,
        /// How many of them have an effective hash key (explicit hash key, else MD5 of the
        /// partition key) outside the shard's range (0 when the range is not known). They
        /// were passed on all the same; the Java KCL drops the whole aggregate.
        outside_hash_range: usize,
    },
    /// It has the KPL magic bytes but is not a valid aggregate: the record was passed on as
    /// it is (raw, sub-sequence number 0).
    Corrupt(CorruptAggregate),
}

/// Why a record with the KPL magic bytes is not a valid aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptAggregate {
    /// Too short to hold a message and the MD5 trailer.
    #[error("{len} bytes is too short for a KPL aggregate (magic, message and 16-byte MD5)")]
    TooShort {
        /// The record's length.
        len: usize,
    },
    /// The MD5 trailer does not match the message.
    #[error("the MD5 trailer does not match the aggregated message")]
    DigestMismatch,
    /// The message does not decode (e.g. truncated).
    #[error("the aggregated message does not decode: {0}")]
    Protobuf(String),
    /// A user record names a partition key or explicit hash key that is not in its table.
    #[error("user record {record} names {table} index {index}, but the table has {len} entries")]
    BadIndex {
        /// The user record's position in the aggregate.
        record: usize,
        /// `partition key` or `explicit hash key`.
        table: &'static str,
        /// The index it names.
        index: u64,
        /// The table's length.
        len: usize,
    },
    /// An aggregate without user records.
    #[error("the aggregate holds no user records")]
    Empty,
}

/// The 128-bit hash key Kinesis routes a partition key to: MD5 of its UTF-8 bytes, as an
/// unsigned big-endian integer.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// De-aggregates one Kinesis record, appending what a processor gets to `out`: the user
/// records of a valid aggregate, else the record itself. Pure: no I/O, no logging (the caller
/// logs what [`Outcome`] says, with the shard).
///
/// `shard_range` is the shard's hash key range, when known: only used to count user records
/// outside it (all are passed on).
pub fn deaggregate(
    record: Record,
    shard_range: Option<HashKeyRange>,
    out: &mut Vec<Record>,
) -> Outcome {
    let data = &record.data;
    if data.len() < KPL_MAGIC.len() || data[..KPL_MAGIC.len()] != KPL_MAGIC {
        out.push(record);
        return Outcome::Plain;
    }
    if data.len() <= KPL_MAGIC.len() + DIGEST_LEN {
        let len = data.len();
        out.push(record);
        return Outcome::Corrupt(CorruptAggregate::TooShort { len });
    }
    let body_end = data.len() - DIGEST_LEN;
    if Md5::digest(&data[KPL_MAGIC.len()..body_end])[..] != data[body_end..] {
        out.push(record);
        return Outcome::Corrupt(CorruptAggregate::DigestMismatch);
    }
    let mut record = record;
    let buffer = std::mem::take(&mut record.data);
    let decoded = AggregatedRecord::decode(buffer.slice(KPL_MAGIC.len()..body_end))
        .map_err(|e| CorruptAggregate::Protobuf(e.to_string()))
        .and_then(|message| check(&message).map(|()| message));
    let message = match decoded {
        Ok(m) => m,
        Err(why) => {
            record.data = buffer;
            out.push(record);
            return Outcome::Corrupt(why);
        }
    };
    let outside_hash_range = match shard_range {
        Some(range) if !(range.start == 0 && range.end == u128::MAX) => {
            count_outside(&message, range)
        }
        _ => 0,
    };
    let user_records = message.records.len();
    out.reserve(user_records);
    let AggregatedRecord {
        partition_key_table,
        explicit_hash_key_table,
        records,
    } = message;
    for (i, user) in records.into_iter().enumerate() {
        out.push(Record {
            data: user.data,
            partition_key: partition_key_table[user.partition_key_index as usize].clone(),
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: i as u64,
            explicit_hash_key: user
                .explicit_hash_key_index
                .map(|i| explicit_hash_key_table[i as usize].clone()),
            aggregated: true,
            approximate_arrival_timestamp: record.approximate_arrival_timestamp,
        });
    }
    Outcome::Aggregate {
        user_records,
        outside_hash_range,
    }
}

/// Every index names an entry of its table, and there is at least one user record.
fn check(message: &AggregatedRecord) -> Result<(), CorruptAggregate> {
    if message.records.is_empty() {
        return Err(CorruptAggregate::Empty);
    }
    let pks = message.partition_key_table.len();
    let ehks = message.explicit_hash_key_table.len();
    for (i, r) in message.records.iter().enumerate() {
        if r.partition_key_index >= pks as u64 {
            return Err(CorruptAggregate::BadIndex {
                record: i,
                table: "partition key",
                index: r.partition_key_index,
                len: pks,
            });
        }
        if let Some(e) = r.explicit_hash_key_index.filter(|&e| e >= ehks as u64) {
            return Err(CorruptAggregate::BadIndex {
                record: i,
                table: "explicit hash key",
                index: e,
                len: ehks,
            });
        }
    }
    Ok(())
}

/// User records whose effective hash key lies outside `range`; each table entry is hashed
/// (or parsed) once. An explicit hash key that is not a decimal 128-bit number is not counted
/// (Kinesis would have refused it as a record's own key).
fn count_outside(message: &AggregatedRecord, range: HashKeyRange) -> usize {
    let inside = |k: u128| range.start <= k && k <= range.end;
    let mut pk_inside: Vec<Option<bool>> = vec![None; message.partition_key_table.len()];
    let ehk_inside: Vec<bool> = message
        .explicit_hash_key_table
        .iter()
        .map(|k| k.parse::<u128>().map_or(true, inside))
        .collect();
    message
        .records
        .iter()
        .filter(|r| match r.explicit_hash_key_index {
            Some(e) => !ehk_inside[e as usize],
            None => {
                let i = r.partition_key_index as usize;
                !*pk_inside[i].get_or_insert_with(|| {
                    inside(partition_key_hash(&message.partition_key_table[i]))
                })
            }
        })
        .count()
}

#[cfg(test)]
mod tests;
