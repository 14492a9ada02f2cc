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
//! The user records' payloads and partition keys are slices of the aggregate's buffer (nothing
//! is copied), and the message is read in place (no intermediate decoded message).
//!
//! A record without the magic bytes is not an aggregate and is delivered as it is.

use crate::lease::HashKeyRange;
use crate::record::{PartitionKey, Record};
use bytes::Bytes;
use md5::{Digest, Md5};
use std::ops::Range;
use wire::{Cursor, LEN, VARINT};

mod wire;

/// The first four bytes of every KPL aggregate.
pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

/// The aggregate's protobuf message (`messages.proto` of the KPL, proto2), for the testing
/// kit's encoder and the tests ([`deaggregate`] reads the message in place, without it).
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, PartialEq, prost::Message)]
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
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, PartialEq, prost::Message)]
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
    u128::from_be_bytes(message_digest(partition_key.as_bytes()))
}

/// The MD5 of `message`: what an aggregate's trailer holds for its protobuf message, computed
/// by the implementation [`deaggregate`] checks trailers with (the floor of its cost: every
/// byte of an aggregate is hashed once).
pub fn message_digest(message: &[u8]) -> [u8; DIGEST_LEN] {
    Md5::digest(message).into()
}

/// De-aggregates one Kinesis record, appending what a processor gets to `out`: the user
/// records of a valid aggregate, else the record itself. Pure: no I/O, no logging (the caller
/// logs what [`Outcome`] says, with the shard).
///
/// `shard_range` is the shard's hash key range, when known: only used to count user records
/// outside it (all are passed on).
///
/// Past the MD5 check, the message is read in place: each user record gets its payload and its
/// partition key as slices of the aggregate's buffer, a copy of its explicit hash key (if it
/// has one) and the aggregate's sequence number (one copy of its digits shared by all).
/// Nothing else is allocated per user record.
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
    if message_digest(&data[KPL_MAGIC.len()..body_end])[..] != data[body_end..] {
        out.push(record);
        return Outcome::Corrupt(CorruptAggregate::DigestMismatch);
    }
    let before = out.len();
    let mut record = record;
    match unpack(&mut record, shard_range, out) {
        Ok(last) => {
            // The last user record takes what the aggregate no longer needs.
            let Record {
                sequence_number,
                approximate_arrival_timestamp,
                ..
            } = record;
            out.push(Record {
                data: last.data,
                partition_key: last.partition_key,
                sequence_number,
                sub_sequence_number: last.user_records as u64 - 1,
                explicit_hash_key: last.explicit_hash_key,
                aggregated: true,
                approximate_arrival_timestamp,
            });
            Outcome::Aggregate {
                user_records: last.user_records,
                outside_hash_range: last.outside_hash_range,
            }
        }
        Err(why) => {
            // Whole or nothing: what was appended of this aggregate goes.
            out.truncate(before);
            out.push(record);
            Outcome::Corrupt(why)
        }
    }
}

/// The tables of an aggregate's message (slices of it), and where its user records are.
struct Tables<'a> {
    partition_keys: Vec<&'a str>,
    explicit_hash_keys: Vec<&'a str>,
    user_records: usize,
    /// Where the first user record's field starts.
    first_user_record: usize,
}

/// One user record's fields: table indices and where its payload is in the message.
struct UserFields {
    partition_key: usize,
    explicit_hash_key: Option<usize>,
    data: Range<usize>,
}

/// The last user record of an aggregate, and what [`Outcome::Aggregate`] says of it.
struct Last {
    data: Bytes,
    partition_key: PartitionKey,
    explicit_hash_key: Option<String>,
    user_records: usize,
    outside_hash_range: usize,
}

/// Appends the user records of the aggregate `record` (its trailer checked) but the last to
/// `out`, and returns the last, or the reason the record is not a valid aggregate (`out` may
/// then hold some of its user records: the caller removes them).
fn unpack(
    record: &mut Record,
    shard_range: Option<HashKeyRange>,
    out: &mut Vec<Record>,
) -> Result<Last, CorruptAggregate> {
    let buffer = &record.data;
    let message = &buffer[KPL_MAGIC.len()..buffer.len() - DIGEST_LEN];
    let tables = scan(message)?;
    let mut outside = match shard_range {
        Some(range) if !(range.start == 0 && range.end == u128::MAX) => {
            Some(OutsideCounter::new(&tables, range))
        }
        _ => None,
    };
    let n = tables.user_records;
    if n > 2 {
        // One copy of the digits for all of them (with two user records, one copy either way).
        record.sequence_number.share();
    }
    out.reserve(n);
    let mut cursor = Cursor::new(message, tables.first_user_record..message.len());
    let mut outside_hash_range = 0;
    for i in 0..n {
        let fields = next_user_record(&mut cursor, &tables, i)?;
        if let Some(counter) = &mut outside {
            outside_hash_range += usize::from(counter.is_outside(&fields));
        }
        let partition_key = shared_key(buffer, tables.partition_keys[fields.partition_key]);
        let explicit_hash_key = fields
            .explicit_hash_key
            .map(|e| tables.explicit_hash_keys[e].to_owned());
        if i + 1 == n {
            return Ok(Last {
                data: payload(buffer, &fields),
                partition_key,
                explicit_hash_key,
                user_records: n,
                outside_hash_range,
            });
        }
        out.push(Record {
            data: payload(buffer, &fields),
            partition_key,
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: i as u64,
            explicit_hash_key,
            aggregated: true,
            approximate_arrival_timestamp: record.approximate_arrival_timestamp,
        });
    }
    unreachable!("`scan` found at least one user record")
}

/// A partition key of the aggregate's table (`key`, UTF-8 checked by [`scan`], inside `buffer`)
/// as the user record's, sharing the buffer.
fn shared_key(buffer: &Bytes, key: &str) -> PartitionKey {
    PartitionKey::shared(buffer.slice_ref(key.as_bytes()))
        .unwrap_or_else(|| PartitionKey::from(key))
}

fn payload(buffer: &Bytes, fields: &UserFields) -> Bytes {
    buffer.slice(KPL_MAGIC.len() + fields.data.start..KPL_MAGIC.len() + fields.data.end)
}

/// The first pass over the message (`AggregatedRecord`: partition key table, field 1;
/// explicit hash key table, field 2; user records, field 3; in any order, others skipped): its
/// tables, and how many user records it holds (at least one).
fn scan(message: &[u8]) -> Result<Tables<'_>, CorruptAggregate> {
    let mut tables = Tables {
        partition_keys: Vec::new(),
        explicit_hash_keys: Vec::new(),
        user_records: 0,
        first_user_record: message.len(),
    };
    let mut cursor = Cursor::new(message, 0..message.len());
    while !cursor.at_end() {
        let at = cursor.position();
        let (field, wire) = cursor.key()?;
        match field {
            1 | 2 => {
                cursor.expect(field, wire, LEN)?;
                let key =
                    std::str::from_utf8(&message[cursor.length_delimited()?]).map_err(|_| {
                        CorruptAggregate::Protobuf(format!(
                            "field {field} before byte {} is not UTF-8",
                            cursor.position()
                        ))
                    })?;
                if field == 1 {
                    tables.partition_keys.push(key);
                } else {
                    tables.explicit_hash_keys.push(key);
                }
            }
            3 => {
                cursor.expect(field, wire, LEN)?;
                cursor.length_delimited()?;
                if tables.user_records == 0 {
                    tables.first_user_record = at;
                }
                tables.user_records += 1;
            }
            _ => cursor.skip(field, wire)?,
        }
    }
    if tables.user_records == 0 {
        return Err(CorruptAggregate::Empty);
    }
    Ok(tables)
}

/// The next user record (the `index`th) from `cursor` (at a top-level field of the message),
/// its indices checked against the tables.
fn next_user_record(
    cursor: &mut Cursor<'_>,
    tables: &Tables<'_>,
    index: usize,
) -> Result<UserFields, CorruptAggregate> {
    // Framing was checked by `scan`: skip to the next field 3.
    let range = loop {
        let (field, wire) = cursor.key()?;
        if field == 3 {
            break cursor.length_delimited()?;
        }
        cursor.skip(field, wire)?;
    };
    let mut user = Cursor::new(cursor.whole(), range);
    let mut partition_key = 0u64;
    let mut explicit_hash_key = None;
    let mut data = 0..0;
    while !user.at_end() {
        let (field, wire) = user.key()?;
        match field {
            1 => {
                user.expect(field, wire, VARINT)?;
                partition_key = user.varint()?;
            }
            2 => {
                user.expect(field, wire, VARINT)?;
                explicit_hash_key = Some(user.varint()?);
            }
            3 => {
                user.expect(field, wire, LEN)?;
                data = user.length_delimited()?;
            }
            _ => user.skip(field, wire)?,
        }
    }
    let check = |table: &'static str, i: u64, len: usize| {
        if i < len as u64 {
            Ok(i as usize)
        } else {
            Err(CorruptAggregate::BadIndex {
                record: index,
                table,
                index: i,
                len,
            })
        }
    };
    Ok(UserFields {
        partition_key: check("partition key", partition_key, tables.partition_keys.len())?,
        explicit_hash_key: explicit_hash_key
            .map(|e| check("explicit hash key", e, tables.explicit_hash_keys.len()))
            .transpose()?,
        data,
    })
}

/// Tells which user records have an effective hash key outside the shard's range; each table
/// entry is hashed (or parsed) once, when first needed. An explicit hash key that is not a
/// decimal 128-bit number is not counted (Kinesis would have refused it as a record's own
/// key).
struct OutsideCounter<'t, 'a> {
    tables: &'t Tables<'a>,
    range: HashKeyRange,
    partition_key_inside: Vec<Option<bool>>,
    explicit_hash_key_inside: Vec<Option<bool>>,
}

impl<'t, 'a> OutsideCounter<'t, 'a> {
    fn new(tables: &'t Tables<'a>, range: HashKeyRange) -> Self {
        OutsideCounter {
            tables,
            range,
            partition_key_inside: vec![None; tables.partition_keys.len()],
            explicit_hash_key_inside: vec![None; tables.explicit_hash_keys.len()],
        }
    }

    fn is_outside(&mut self, user: &UserFields) -> bool {
        let range = self.range;
        let inside = move |k: u128| range.start <= k && k <= range.end;
        let tables = self.tables;
        !match user.explicit_hash_key {
            Some(e) => *self.explicit_hash_key_inside[e].get_or_insert_with(|| {
                tables.explicit_hash_keys[e]
                    .parse::<u128>()
                    .map_or(true, inside)
            }),
            None => {
                let i = user.partition_key;
                *self.partition_key_inside[i]
                    .get_or_insert_with(|| inside(partition_key_hash(tables.partition_keys[i])))
            }
        }
    }
}

#[cfg(test)]
mod tests;
