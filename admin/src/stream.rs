//! Reading the stream: how far behind a checkpoint is, when the first unprocessed record
//! arrived, and which shards exist.

use crate::error::AdminError;
use crate::position::NextRecord;
use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_client::aws::AwsError;
use kinesis_client::Checkpoint;
use serde::Serialize;

/// At most this many GetRecords calls to count the records behind one checkpoint.
pub const MAX_GET_RECORDS_CALLS: usize = 5;
/// Records per GetRecords call when counting.
const PAGE: i32 = 10_000;

/// How far a checkpoint is behind the tip of its shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lag {
    /// `MillisBehindLatest` of the first unprocessed record's GetRecords.
    pub millis_behind: Option<i64>,
    /// Kinesis records after the checkpoint (an aggregate counts as one), counted up to
    /// [`MAX_GET_RECORDS_CALLS`] calls.
    pub records: u64,
    /// True when the count stopped at the bound: there are at least `records`.
    pub at_least: bool,
}

impl Lag {
    /// `12.3s / 450 records` (or `≥ 50000 records`).
    pub fn show(&self) -> String {
        let time = self
            .millis_behind
            .map_or("?".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        format!(
            "{time} / {}{} rec",
            if self.at_least { ">=" } else { "" },
            self.records
        )
    }
}

/// A Kinesis client and the stream to read.
#[derive(Debug, Clone)]
pub struct Stream {
    client: aws_sdk_kinesis::Client,
}

fn err(stream: &str, e: impl Into<AwsError>) -> AdminError {
    AdminError::Stream {
        stream: stream.to_string(),
        source: e.into(),
    }
}

impl Stream {
    /// Reading with `client`.
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Stream { client }
    }

    /// A shard iterator just after `checkpoint`; `None` for a position that is not in the
    /// stream (`LATEST`, `AT_TIMESTAMP` without a time, `SHARD_END`).
    async fn iterator_after(
        &self,
        stream: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Option<String>, AdminError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard);
        let req = match checkpoint {
            // A KPL checkpoint inside an aggregate: the rest of that aggregate is not counted.
            Checkpoint::Sequence(esn) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(esn.sequence_number()),
            Checkpoint::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            _ => return Ok(None),
        };
        let out = req
            .send()
            .await
            .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
        Ok(out.shard_iterator().map(str::to_string))
    }

    /// How far `checkpoint` is behind the tip of `shard`: `None` when it cannot be told
    /// (`AT_TIMESTAMP`, whose time is in the workers' configuration) or does not apply
    /// (`SHARD_END`). `LATEST` is at the tip.
    pub async fn lag(
        &self,
        stream: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Option<Lag>, AdminError> {
        if matches!(checkpoint, Checkpoint::Latest) {
            return Ok(Some(Lag {
                millis_behind: Some(0),
                records: 0,
                at_least: false,
            }));
        }
        let Some(mut iterator) = self.iterator_after(stream, shard, checkpoint).await? else {
            return Ok(None);
        };
        let mut lag = Lag {
            millis_behind: None,
            records: 0,
            at_least: false,
        };
        for call in 0..MAX_GET_RECORDS_CALLS {
            // The first call reads one record: its MillisBehindLatest is the checkpoint's.
            let limit = if call == 0 { 1 } else { PAGE };
            let out = self
                .client
                .get_records()
                .shard_iterator(&iterator)
                .limit(limit)
                .send()
                .await
                .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
            if call == 0 {
                lag.millis_behind = out.millis_behind_latest();
            }
            lag.records += out.records().len() as u64;
            // An empty page short of the tip (MillisBehindLatest > 0) is a gap: read on.
            let behind = out.millis_behind_latest().is_some_and(|ms| ms > 0);
            match out.next_shard_iterator() {
                Some(next) if !out.records().is_empty() || behind => iterator = next.to_string(),
                _ => return Ok(Some(lag)),
            }
        }
        lag.at_least = true;
        Ok(Some(lag))
    }

    /// When the first record after `checkpoint` arrived.
    pub async fn next_record(
        &self,
        stream: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<NextRecord, AdminError> {
        let Some(mut iterator) = self.iterator_after(stream, shard, checkpoint).await? else {
            return Ok(NextRecord::Unknown);
        };
        for _ in 0..MAX_GET_RECORDS_CALLS {
            let out = self
                .client
                .get_records()
                .shard_iterator(&iterator)
                .limit(1)
                .send()
                .await
                .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
            if let Some(r) = out.records().first() {
                return Ok(match r.approximate_arrival_timestamp() {
                    Some(t) => NextRecord::ArrivedAt(*t),
                    None => NextRecord::Unknown,
                });
            }
            match out.next_shard_iterator() {
                Some(next) if out.millis_behind_latest().is_some_and(|ms| ms > 0) => {
                    iterator = next.to_string()
                }
                _ => return Ok(NextRecord::None),
            }
        }
        Ok(NextRecord::Unknown)
    }

    /// The shard ids of `stream`.
    pub async fn shard_ids(&self, stream: &str) -> Result<Vec<String>, AdminError> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(stream),
            };
            let out = req
                .send()
                .await
                .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
            ids.extend(out.shards().iter().map(|s| s.shard_id().to_string()));
            match out.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(ids),
            }
        }
    }
}
