//! A [`StreamClient`] that stores nothing: every GetRecords makes up `per_read` fresh records
//! of `record_size` bytes. For measuring a worker's own memory: an `InMemoryStream` would hold
//! every record put into it in the same process, and Kinesis does not.

use async_trait::async_trait;
use kinesis_client::lease::HashKeyRange;
use kinesis_client::retrieval::{
    IteratorPosition, RecordBatch, RetrievalError, Shard, StreamClient,
};
use kinesis_client::Record;
use std::time::SystemTime;

/// The first sequence number handed out.
const BASE: u128 = 49_000_000_000_000_000_000;

/// A stream of `shards` open shards whose reads return `per_read` new records each.
#[derive(Debug)]
pub struct SyntheticStream {
    shards: Vec<Shard>,
    per_read: usize,
    record_size: usize,
}

impl SyntheticStream {
    /// `shards` shards; each read returns `per_read` records of `record_size` bytes.
    pub fn new(shards: usize, per_read: usize, record_size: usize) -> Self {
        let width = u128::MAX / shards as u128;
        let shards = (0..shards)
            .map(|i| {
                let range = HashKeyRange {
                    start: width * i as u128,
                    end: if i + 1 == shards {
                        u128::MAX
                    } else {
                        width * (i as u128 + 1) - 1
                    },
                };
                Shard::new(format!("shardId-{i:012}"), range, BASE.to_string())
            })
            .collect();
        SyntheticStream {
            shards,
            per_read,
            record_size,
        }
    }
}

fn parse(it: &str) -> Option<(&str, u128)> {
    let (shard, seq) = it.rsplit_once(':')?;
    Some((shard, seq.parse().ok()?))
}

#[async_trait]
impl StreamClient for SyntheticStream {
    fn stream_name(&self) -> &str {
        "synthetic"
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
        Ok(self.shards.clone())
    }

    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError> {
        let seq = match position {
            IteratorPosition::AtSequenceNumber(s) => s.parse().unwrap_or(BASE),
            IteratorPosition::AfterSequenceNumber(s) => s.parse::<u128>().unwrap_or(BASE) + 1,
            _ => BASE,
        };
        Ok(Some(format!("{shard_id}:{seq}")))
    }

    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError> {
        let (_, from) = parse(iterator).unwrap_or((shard_id, BASE));
        let n = self.per_read.min(limit as usize);
        let now = SystemTime::now();
        let records = (0..n as u128)
            .map(|i| {
                let mut r = Record::new(vec![b'x'; self.record_size], "k", from + i);
                r.approximate_arrival_timestamp = Some(now);
                r
            })
            .collect();
        let mut batch = RecordBatch::default();
        batch.records = records;
        batch.next_iterator = Some(format!("{shard_id}:{}", from + n as u128));
        batch.millis_behind_latest = Some(0);
        Ok(batch)
    }
}
