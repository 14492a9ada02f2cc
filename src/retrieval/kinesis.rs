//! [`StreamClient`] on the AWS SDK's Kinesis client.

use super::{
    ChildShard, IteratorPosition, RecordBatch, RetrievalError, RetrievalFailure, Shard,
    StreamClient, StreamOp,
};
use crate::aws::AwsError;
use crate::error::{Cause, ErrorKind};
use crate::lease::HashKeyRange;
use crate::record::Record;
use async_trait::async_trait;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use std::time::{Duration, SystemTime};

/// How a stream is named: by name, or by ARN (required for cross-account access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRef {
    /// The stream name.
    Name(String),
    /// The stream ARN, `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    Arn(String),
}

impl StreamRef {
    /// The stream name (parsed out of an ARN).
    pub fn name(&self) -> &str {
        match self {
            StreamRef::Name(n) => n,
            StreamRef::Arn(a) => a.rsplit_once("stream/").map_or(a.as_str(), |(_, n)| n),
        }
    }
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamRef::Name(n) => f.write_str(n),
            StreamRef::Arn(a) => f.write_str(a),
        }
    }
}

/// Default bound on one Kinesis request (the Java KCL's `kinesisRequestTimeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one stream through the AWS SDK.
#[derive(Debug, Clone)]
pub struct KinesisStreamClient {
    client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    request_timeout: Duration,
}

impl KinesisStreamClient {
    /// A client for `stream`.
    pub fn new(client: aws_sdk_kinesis::Client, stream: StreamRef) -> Self {
        KinesisStreamClient {
            client,
            stream,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Bound every request by `timeout` (a timed-out request is retryable).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn error(
        &self,
        operation: StreamOp,
        shard: Option<&str>,
        failure: RetrievalFailure,
        cause: Cause,
    ) -> RetrievalError {
        RetrievalError::new(failure, operation, self.stream.name(), shard, cause)
    }

    async fn call<T, E, F>(
        &self,
        operation: StreamOp,
        shard: Option<&str>,
        fut: F,
    ) -> Result<T, RetrievalError>
    where
        F: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => Err(self.error(
                operation,
                shard,
                RetrievalFailure::Retryable,
                Cause::Timeout(self.request_timeout),
            )),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let info = AwsError::from_sdk(e);
                let failure = if info.is_expired_iterator()
                    || info.is_invalid_argument() && operation == StreamOp::GetRecords
                {
                    RetrievalFailure::ExpiredIterator
                } else if info.is_resource_not_found() {
                    RetrievalFailure::ResourceNotFound
                } else {
                    match info.kind() {
                        ErrorKind::Throttled => RetrievalFailure::Throttled,
                        ErrorKind::Retryable => RetrievalFailure::Retryable,
                        _ => RetrievalFailure::Fatal,
                    }
                };
                Err(self.error(operation, shard, failure, Cause::Aws(info)))
            }
        }
    }
}

fn range(start: &str, end: &str) -> Option<HashKeyRange> {
    Some(HashKeyRange {
        start: start.parse().ok()?,
        end: end.parse().ok()?,
    })
}

fn to_system_time(t: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

#[async_trait]
impl StreamClient for KinesisStreamClient {
    fn stream_name(&self) -> &str {
        self.stream.name()
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_shards();
            req = match (&token, &self.stream) {
                (Some(t), _) => req.next_token(t),
                (None, StreamRef::Name(n)) => req.stream_name(n),
                (None, StreamRef::Arn(a)) => req.stream_arn(a),
            };
            let out = self.call(StreamOp::ListShards, None, req.send()).await?;
            for s in out.shards() {
                let Some(r) = s
                    .hash_key_range()
                    .and_then(|r| range(r.starting_hash_key(), r.ending_hash_key()))
                else {
                    return Err(self.error(
                        StreamOp::ListShards,
                        Some(s.shard_id()),
                        RetrievalFailure::Fatal,
                        Cause::BadAnswer("shard without a valid hash key range".into()),
                    ));
                };
                let seq = s.sequence_number_range();
                shards.push(Shard {
                    shard_id: s.shard_id().to_string(),
                    parent_shard_id: s.parent_shard_id().map(str::to_string),
                    adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_string),
                    hash_key_range: r,
                    starting_sequence_number: seq
                        .map(|r| r.starting_sequence_number().to_string())
                        .unwrap_or_default(),
                    ending_sequence_number: seq
                        .and_then(|r| r.ending_sequence_number())
                        .map(str::to_string),
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError> {
        let mut req = self.client.get_shard_iterator().shard_id(shard_id);
        req = match &self.stream {
            StreamRef::Name(n) => req.stream_name(n),
            StreamRef::Arn(a) => req.stream_arn(a),
        };
        req = match position {
            IteratorPosition::TrimHorizon => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            IteratorPosition::AtTimestamp(t) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*t)),
            IteratorPosition::AtSequenceNumber(s) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s),
            IteratorPosition::AfterSequenceNumber(s) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s),
        };
        match self
            .call(StreamOp::GetShardIterator, Some(shard_id), req.send())
            .await
        {
            Ok(out) => Ok(out.shard_iterator().map(str::to_string)),
            Err(e) if e.failure == RetrievalFailure::ResourceNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError> {
        let mut req = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 10_000) as i32);
        if let StreamRef::Arn(a) = &self.stream {
            req = req.stream_arn(a);
        }
        let mut out = self
            .call(StreamOp::GetRecords, Some(shard_id), req.send())
            .await?;
        // The buffers the SDK decoded the response into are handed through, not copied.
        let records = std::mem::take(&mut out.records)
            .into_iter()
            .map(|r| Record {
                approximate_arrival_timestamp: r
                    .approximate_arrival_timestamp()
                    .and_then(to_system_time),
                data: r.data.into_bytes(),
                partition_key: r.partition_key.unwrap_or_default(),
                sequence_number: r.sequence_number,
                sub_sequence_number: 0,
                explicit_hash_key: None,
                aggregated: false,
            })
            .collect();
        let child_shards = out
            .child_shards()
            .iter()
            .filter_map(|c| {
                let r = c.hash_key_range()?;
                Some(ChildShard {
                    shard_id: c.shard_id().to_string(),
                    parent_shards: c.parent_shards().to_vec(),
                    hash_key_range: range(r.starting_hash_key(), r.ending_hash_key())?,
                })
            })
            .collect();
        Ok(RecordBatch {
            records,
            next_iterator: out.next_shard_iterator().map(str::to_string),
            millis_behind_latest: out.millis_behind_latest(),
            child_shards,
        })
    }
}
