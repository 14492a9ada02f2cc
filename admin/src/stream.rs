//! Reading the stream: how far behind a checkpoint is, when the first unprocessed record
//! arrived, and which shards exist.

use crate::error::AdminError;
use crate::position::NextRecord;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_smithy_types::DateTime;
use kinesis_client::aws::AwsError;
use kinesis_client::retrieval::deaggregation::deaggregate;
use kinesis_client::{Checkpoint, Record, SequenceNumber};
use serde::Serialize;
use std::time::Duration;

/// How far before a time `checkpoint_before` looks, in turn (seconds; `None`: the trim
/// horizon).
const WINDOWS: [Option<u64>; 6] = [
    Some(60),
    Some(3_600),
    Some(86_400),
    Some(7 * 86_400),
    Some(365 * 86_400),
    None,
];

/// At most this many GetRecords calls to find the last record before a time.
pub const MAX_SCAN_CALLS: usize = 50;

/// The checkpoint at record `r`: at its last user record when it is a KPL aggregate.
fn checkpoint_of(shard: &str, r: aws_sdk_kinesis::types::Record) -> Result<Checkpoint, AdminError> {
    let sequence: SequenceNumber =
        r.sequence_number()
            .parse()
            .map_err(|_| AdminError::Position {
                shard: shard.to_string(),
                why: format!(
                    "the stream returned a sequence number that is not one: {:?}",
                    r.sequence_number()
                ),
            })?;
    let record = Record::new(
        r.data().clone().into_inner(),
        r.partition_key().unwrap_or_default().to_string(),
        sequence,
    );
    let mut user_records = Vec::new();
    deaggregate(record.clone(), None, &mut user_records);
    Ok(user_records.last().unwrap_or(&record).checkpoint())
}

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

    /// The checkpoint from which a worker resumes `shard` at the first record that arrived at
    /// or after `t`: the last record before `t` (inside a KPL aggregate: its last user
    /// record), or `TRIM_HORIZON` when the shard keeps no record from before `t`. It reads
    /// from `t` minus a widening window (a minute up to a week, then the trim horizon) until
    /// the window holds a record from before `t`, at most [`MAX_SCAN_CALLS`] GetRecords
    /// calls in all.
    pub async fn checkpoint_before(
        &self,
        stream: &str,
        shard: &str,
        t: DateTime,
    ) -> Result<Checkpoint, AdminError> {
        let mut calls = 0;
        for window in WINDOWS.iter().map(|w| w.map(Duration::from_secs)) {
            let req = self
                .client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard);
            let req = match window {
                Some(w) => req
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_secs_f64(t.as_secs_f64() - w.as_secs_f64())),
                None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let out = req
                .send()
                .await
                .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
            let mut iterator = out.shard_iterator().map(str::to_string);
            let mut before: Option<aws_sdk_kinesis::types::Record> = None;
            'read: while let Some(it) = iterator.take() {
                calls += 1;
                if calls > MAX_SCAN_CALLS {
                    return Err(AdminError::Usage(format!(
                        "{shard}: more than {MAX_SCAN_CALLS} GetRecords calls to find the last                          record before {}: give the position as SEQUENCE=",
                        crate::position::fmt_time(&t)
                    )));
                }
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(&it)
                    .limit(PAGE)
                    .send()
                    .await
                    .map_err(|e| err(stream, AwsError::from_sdk(e)))?;
                for r in page.records() {
                    if r.approximate_arrival_timestamp().is_some_and(|a| *a >= t) {
                        break 'read;
                    }
                    before = Some(r.clone());
                }
                // Read on while there is more: records, or an empty page short of the tip.
                let more = !page.records().is_empty()
                    || page.millis_behind_latest().is_some_and(|ms| ms > 0);
                iterator = page
                    .next_shard_iterator()
                    .filter(|_| more)
                    .map(str::to_string);
            }
            if let Some(r) = before {
                return checkpoint_of(shard, r);
            }
            if window.is_none() {
                return Ok(Checkpoint::TrimHorizon);
            }
        }
        unreachable!("the last window is the trim horizon")
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
