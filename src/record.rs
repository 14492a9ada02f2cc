//! A Kinesis record as delivered to a record processor.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber};
use std::time::SystemTime;

/// One record of a shard: a Kinesis record, or a user record de-aggregated from a KPL
/// aggregate (see [`crate::retrieval::deaggregation`]).
///
/// The user records of one aggregate share the aggregate's sequence number and arrival time
/// and are told apart by their sub-sequence numbers (0, 1, 2, … in the aggregate's order); a
/// checkpoint at a user record ([`Record::checkpoint`], [`crate::Checkpointer::checkpoint_record`])
/// names both, so a restart resumes right after that user record, inside the aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The payload.
    pub data: Vec<u8>,
    /// The partition key the producer gave.
    pub partition_key: String,
    /// The sequence number Kinesis assigned (decimal digits).
    pub sequence_number: String,
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
    /// arrival time.
    pub fn new(
        data: impl Into<Vec<u8>>,
        partition_key: impl Into<String>,
        sequence_number: impl Into<String>,
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
    ///
    /// # Panics
    /// If the sequence number is not decimal (Kinesis never produces one).
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(self.sequence_number.clone(), self.sub_sequence_number)
            .expect("Kinesis sequence numbers are decimal")
    }

    /// The checkpoint that covers this record and everything before it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::Sequence(self.extended_sequence_number())
    }
}
