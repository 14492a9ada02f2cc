//! The KPL's aggregation format written, for tests: what the Kinesis Producer Library puts in
//! one Kinesis record (see [`crate::retrieval::deaggregation`] for the format).

use crate::retrieval::deaggregation::{AggregatedRecord, UserRecord, DIGEST_LEN, KPL_MAGIC};
use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

/// One user record to aggregate with [`aggregate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecordSpec {
    /// The partition key.
    pub partition_key: String,
    /// The explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
}

/// A KPL aggregate of `records`, in the KPL's format (partition keys and explicit hash keys
/// de-duplicated into their tables, as the KPL writes them).
pub fn aggregate(records: &[UserRecordSpec]) -> Vec<u8> {
    fn index(table: &mut Vec<String>, key: &str) -> u64 {
        match table.iter().position(|k| k == key) {
            Some(i) => i as u64,
            None => {
                table.push(key.to_string());
                table.len() as u64 - 1
            }
        }
    }
    let mut message = AggregatedRecord::default();
    for r in records {
        let partition_key_index = index(&mut message.partition_key_table, &r.partition_key);
        let explicit_hash_key_index = r
            .explicit_hash_key
            .as_deref()
            .map(|k| index(&mut message.explicit_hash_key_table, k));
        message.records.push(UserRecord {
            partition_key_index,
            explicit_hash_key_index,
            data: Bytes::copy_from_slice(&r.data),
        });
    }
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(KPL_MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&KPL_MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}
