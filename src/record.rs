//! A Kinesis record as delivered to a record processor.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber};
use std::time::SystemTime;

/// One record of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The payload.
    pub data: Vec<u8>,
    /// The partition key the producer gave.
    pub partition_key: String,
    /// The sequence number Kinesis assigned (decimal digits).
    pub sequence_number: String,
    /// The KPL sub-sequence number (0 for records that were not aggregated).
    pub sub_sequence_number: u64,
    /// When Kinesis accepted the record (approximate), if known.
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

impl Record {
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
