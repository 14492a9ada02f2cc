//! A Kinesis record as delivered to a record processor, and [`Records`], the shared batch a
//! processor receives.
//!
//! Records are cheap to pass around: a record's payload is the [`Bytes`] buffer the AWS SDK
//! decoded the response into (handed through, never copied), and a batch is shared between
//! the shard consumer (which keeps it to deliver again if the processor fails it) and the
//! processor, so delivering a batch copies nothing. The partition key is the `String` the SDK
//! decoded (a KPL user record's shares its aggregate's buffer: [`PartitionKey`]), and the sequence number a [`SequenceNumber`] around the SDK's `String` (checked
//! once, when the response is read); with the batch shared, nothing on the way clones them.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber, SequenceNumber};
pub use bytes::Bytes;
pub use partition_key::PartitionKey;

mod partition_key;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

/// One record of a shard: a Kinesis record, or a user record de-aggregated from a KPL
/// aggregate (see [`crate::retrieval::deaggregation`]).
///
/// The user records of one aggregate share the aggregate's sequence number and arrival time
/// and are told apart by their sub-sequence numbers (0, 1, 2, … in the aggregate's order); a
/// checkpoint at a user record ([`Record::checkpoint`], [`crate::Checkpointer::checkpoint_record`])
/// names both, so a restart resumes right after that user record, inside the aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The payload (shared: cloning a record does not copy it; `&record.data[..]` is the bytes).
    pub data: Bytes,
    /// The partition key the producer gave (a string: `&record.partition_key[..]`,
    /// `record.partition_key == "k"`, `String::from(record.partition_key)`).
    pub partition_key: PartitionKey,
    /// The sequence number Kinesis assigned.
    pub sequence_number: SequenceNumber,
    /// The KPL sub-sequence number: the user record's index in its aggregate (0 for records
    /// that were not aggregated).
    pub sub_sequence_number: u64,
    /// The explicit hash key the producer gave a de-aggregated user record, if it gave one
    /// (a decimal 128-bit number; Kinesis does not return it for plain records).
    pub explicit_hash_key: Option<String>,
    /// True for a user record de-aggregated from a KPL aggregate (the Java KCL's
    /// `KinesisClientRecord.aggregated()`).
    pub aggregated: bool,
    /// When Kinesis accepted the record (approximate), if known; the aggregate's for a
    /// de-aggregated user record.
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

impl Record {
    /// A plain (not aggregated) record: sub-sequence number 0, no explicit hash key, no
    /// arrival time (set the public fields for others). The sequence number is a
    /// [`SequenceNumber`] (`"42".parse()?`) or an integer (`42u64`).
    pub fn new(
        data: impl Into<Bytes>,
        partition_key: impl Into<PartitionKey>,
        sequence_number: impl Into<SequenceNumber>,
    ) -> Self {
        Record {
            data: data.into(),
            partition_key: partition_key.into(),
            sequence_number: sequence_number.into(),
            sub_sequence_number: 0,
            explicit_hash_key: None,
            aggregated: false,
            approximate_arrival_timestamp: None,
        }
    }

    /// The record's position as an extended sequence number.
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::from_parts(self.sequence_number.clone(), self.sub_sequence_number)
    }

    /// The checkpoint that covers this record and everything before it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::Sequence(self.extended_sequence_number())
    }
}

/// The records of one batch, in sequence order: a shared, read-only list.
///
/// Cloning it copies nothing (the consumer keeps the batch it hands to a processor, to deliver
/// it again if the processor fails it). It dereferences to `[Record]`, so `records.len()`,
/// `records.last()`, `records[0]`, `records.iter()` and `for r in &records` work as on a
/// `Vec`; [`Records::into_vec`] gives an owned `Vec` (without copying when nothing else holds
/// the batch). Build one from a `Vec<Record>` with `.into()`.
#[derive(Clone, Default)]
pub struct Records {
    batch: Arc<Vec<Record>>,
    /// The records before this index are not part of this view.
    start: usize,
}

impl Records {
    /// A batch of `records`.
    pub fn new(records: Vec<Record>) -> Self {
        Records {
            batch: Arc::new(records),
            start: 0,
        }
    }

    /// The records as a slice.
    pub fn as_slice(&self) -> &[Record] {
        &self.batch[self.start..]
    }

    /// The records as an owned `Vec`: moved out if nothing else holds the batch, else cloned
    /// (payloads are shared, not copied).
    pub fn into_vec(self) -> Vec<Record> {
        match Arc::try_unwrap(self.batch) {
            Ok(mut all) => {
                all.drain(..self.start);
                all
            }
            Err(shared) => shared[self.start..].to_vec(),
        }
    }

    /// The records after the first `n` (none if `n` is at least the length), sharing this
    /// batch.
    pub fn skip(&self, n: usize) -> Records {
        Records {
            batch: self.batch.clone(),
            start: (self.start + n).min(self.batch.len()),
        }
    }
}

impl Deref for Records {
    type Target = [Record];

    fn deref(&self) -> &[Record] {
        self.as_slice()
    }
}

impl AsRef<[Record]> for Records {
    fn as_ref(&self) -> &[Record] {
        self.as_slice()
    }
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Records {}

impl PartialEq<[Record]> for Records {
    fn eq(&self, other: &[Record]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<Record>> for Records {
    fn eq(&self, other: &Vec<Record>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<Vec<Record>> for Records {
    fn from(records: Vec<Record>) -> Self {
        Records::new(records)
    }
}

impl FromIterator<Record> for Records {
    fn from_iter<I: IntoIterator<Item = Record>>(iter: I) -> Self {
        Records::new(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a Record;
    type IntoIter = std::slice::Iter<'a, Record>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl IntoIterator for Records {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;

    /// See [`Records::into_vec`].
    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u32) -> Record {
        Record::new(format!("r{seq}"), "pk", u64::from(seq))
    }

    #[test]
    fn clones_share_the_batch_and_views_skip_a_prefix() {
        let records: Records = (1..=4).map(record).collect();
        let kept = records.clone();
        assert!(std::ptr::eq(kept.as_slice(), records.as_slice()));
        let rest = records.skip(1);
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].sequence_number, "2");
        assert!(std::ptr::eq(&rest[0], &records[1]), "a view copies nothing");
        assert!(records.skip(9).is_empty());
        // Shared: into_vec clones (the payload is shared, not copied).
        let owned = rest.into_vec();
        assert_eq!(owned.len(), 3);
        assert_eq!(owned[0].data.as_ptr(), records[1].data.as_ptr());
        drop(records);
        // Sole owner: moved out.
        let first = kept.as_slice().as_ptr();
        let all = kept.into_vec();
        assert_eq!(all.as_ptr(), first);
        let seqs: Vec<String> = Records::from(all)
            .skip(2)
            .into_iter()
            .map(|r| r.sequence_number.into_string())
            .collect();
        assert_eq!(seqs, ["3", "4"]);
    }
}
