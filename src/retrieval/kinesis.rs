//! [`StreamClient`] on the AWS SDK's Kinesis client.

use super::{
    ChildShard, ConsumerRef, ConsumerStatus, IteratorPosition, RecordBatch, RetrievalError,
    RetrievalFailure, Shard, StreamClient, StreamConsumer, StreamOp, SubscribeToShardEvent,
    SubscribeToShardEvents,
};
use crate::aws::AwsError;
use crate::checkpoint::SequenceNumber;
use crate::error::{Cause, ErrorKind};
use crate::lease::HashKeyRange;
use crate::record::Record;
use async_trait::async_trait;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod fast_records;

/// How a stream is named: by name, or by ARN (required for cross-account access).
///
/// From a string: `"my-stream".into()`, `"arn:aws:kinesis:…:stream/my-stream".into()` or
/// `.parse()`: a string that starts with `arn:` is an ARN, anything else a name (both are
/// validated by [`ConfigBuilder::build`](crate::ConfigBuilder::build)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

impl From<String> for StreamRef {
    fn from(s: String) -> Self {
        if s.starts_with("arn:") {
            StreamRef::Arn(s)
        } else {
            StreamRef::Name(s)
        }
    }
}

impl From<&str> for StreamRef {
    fn from(s: &str) -> Self {
        StreamRef::from(s.to_string())
    }
}

impl std::str::FromStr for StreamRef {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StreamRef::from(s))
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

/// Reads one stream through the AWS SDK: polling (GetRecords) and enhanced fan-out
/// (SubscribeToShard over the SDK's event stream; the SDK's default HTTP client negotiates
/// HTTP/2, which Kinesis requires for it).
#[derive(Debug, Clone)]
pub struct KinesisStreamClient {
    pub(crate) client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    request_timeout: Duration,
    /// The stream's ARN, looked up once (DescribeStreamSummary) when it was given by name:
    /// the consumer calls need it.
    stream_arn: Arc<tokio::sync::OnceCell<String>>,
    /// GetRecords' records decoded by [`fast_records`] (off only to compare with the SDK path
    /// in tests).
    fast_records: bool,
}

impl KinesisStreamClient {
    /// A client for `stream`.
    pub fn new(client: aws_sdk_kinesis::Client, stream: StreamRef) -> Self {
        KinesisStreamClient {
            client,
            stream,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_arn: Arc::default(),
            fast_records: true,
        }
    }

    /// Bound every request by `timeout` (a timed-out request is retryable): the client waits
    /// at most this long, and the SDK client's operation and attempt timeouts become the same
    /// (see [the `aws` module](crate::aws#retries-and-timeouts-one-layer-decides)). A
    /// SubscribeToShard subscription is bounded only until its first response.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self.client = aws_sdk_kinesis::Client::from_conf(
            self.client
                .config()
                .to_builder()
                .timeout_config(crate::aws::request_timeouts(timeout))
                .build(),
        );
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
                } else if info.is_resource_in_use() && is_fan_out(operation) {
                    RetrievalFailure::ResourceInUse
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

    /// The failure of a subscription's event stream, classified.
    fn event_stream_error(
        stream: &str,
        shard: &str,
        err: SdkError<
            aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
            aws_smithy_types::event_stream::RawMessage,
        >,
    ) -> RetrievalError {
        let info = AwsError::from_subscribe_to_shard_events(err);
        let failure = if info.is_resource_not_found() {
            RetrievalFailure::ResourceNotFound
        } else if info.is_resource_in_use() {
            RetrievalFailure::ResourceInUse
        } else {
            match info.kind() {
                ErrorKind::Throttled => RetrievalFailure::Throttled,
                ErrorKind::Retryable => RetrievalFailure::Retryable,
                _ => RetrievalFailure::Fatal,
            }
        };
        RetrievalError::new(
            failure,
            StreamOp::SubscribeToShard,
            stream,
            Some(shard),
            Cause::Aws(info),
        )
    }

    /// The stream's ARN (the consumer calls need it), looked up once when only the name was
    /// given.
    async fn resolved_stream_arn(&self, operation: StreamOp) -> Result<String, RetrievalError> {
        let name = match &self.stream {
            StreamRef::Arn(a) => return Ok(a.clone()),
            StreamRef::Name(n) => n,
        };
        self.stream_arn
            .get_or_try_init(|| async {
                let out = self
                    .call(
                        operation,
                        None,
                        self.client
                            .describe_stream_summary()
                            .stream_name(name)
                            .send(),
                    )
                    .await?;
                out.stream_description_summary()
                    .map(|s| s.stream_arn().to_string())
                    .ok_or_else(|| {
                        self.error(
                            operation,
                            None,
                            RetrievalFailure::Fatal,
                            Cause::BadAnswer("DescribeStreamSummary without a stream ARN".into()),
                        )
                    })
            })
            .await
            .cloned()
    }
}

/// The calls of enhanced fan-out (where `ResourceInUseException` means "busy, retry").
fn is_fan_out(operation: StreamOp) -> bool {
    matches!(
        operation,
        StreamOp::DescribeStreamConsumer
            | StreamOp::RegisterStreamConsumer
            | StreamOp::SubscribeToShard
    )
}

fn consumer_status(s: &aws_sdk_kinesis::types::ConsumerStatus) -> ConsumerStatus {
    use aws_sdk_kinesis::types::ConsumerStatus as S;
    match s {
        S::Active => ConsumerStatus::Active,
        S::Deleting => ConsumerStatus::Deleting,
        // Creating, and whatever a newer service may add: not usable (yet).
        _ => ConsumerStatus::Creating,
    }
}

/// The records of a response as the SDK decoded them (GetRecords or a SubscribeToShard
/// event): the buffers the SDK decoded the response into are handed through, not copied. A
/// record whose sequence number is not decimal (Kinesis never sends one) makes the response
/// unusable.
fn records(
    records: Vec<aws_sdk_kinesis::types::Record>,
    operation: StreamOp,
    stream: &str,
    shard: &str,
) -> Result<Vec<Record>, RetrievalError> {
    records
        .into_iter()
        .map(|r| {
            let arrival = r.approximate_arrival_timestamp().and_then(to_system_time);
            let sequence_number = SequenceNumber::new(r.sequence_number).map_err(|bad| {
                RetrievalError::new(
                    RetrievalFailure::Fatal,
                    operation,
                    stream,
                    Some(shard),
                    Cause::BadAnswer(format!("a record with an {bad}")),
                )
            })?;
            let mut record = Record::new(
                r.data.into_bytes(),
                r.partition_key.unwrap_or_default(),
                sequence_number,
            );
            record.approximate_arrival_timestamp = arrival;
            Ok(record)
        })
        .collect()
}

/// Child shards as the SDK decoded them (those without a valid hash key range are dropped).
fn child_shards(children: &[aws_sdk_kinesis::types::ChildShard]) -> Vec<ChildShard> {
    children
        .iter()
        .filter_map(|c| {
            let r = c.hash_key_range()?;
            Some(ChildShard {
                shard_id: c.shard_id().to_string(),
                parent_shards: c.parent_shards().to_vec(),
                hash_key_range: range(r.starting_hash_key(), r.ending_hash_key())?,
            })
        })
        .collect()
}

/// SubscribeToShard's `StartingPosition` for `position`.
fn starting_position(position: &IteratorPosition) -> StartingPosition {
    let b = StartingPosition::builder();
    let b = match position {
        IteratorPosition::TrimHorizon => b.r#type(ShardIteratorType::TrimHorizon),
        IteratorPosition::Latest => b.r#type(ShardIteratorType::Latest),
        IteratorPosition::AtTimestamp(t) => b
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*t)),
        IteratorPosition::AtSequenceNumber(s) => b
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(s),
        IteratorPosition::AfterSequenceNumber(s) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(s),
    };
    b.build().expect("the type is always set")
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

    async fn stream_arn(&self) -> Result<Option<String>, RetrievalError> {
        self.resolved_stream_arn(StreamOp::DescribeStreamConsumer)
            .await
            .map(Some)
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
        let (mut out, fast) = if self.fast_records {
            let (interceptor, slot) = fast_records::FastRecords::new();
            let send = req.customize().interceptor(interceptor).send();
            let out = self
                .call(StreamOp::GetRecords, Some(shard_id), send)
                .await?;
            let fast = slot.lock().take();
            (out, fast)
        } else {
            let out = self
                .call(StreamOp::GetRecords, Some(shard_id), req.send())
                .await?;
            (out, None)
        };
        let records = match fast {
            // Decoded from the body the SDK read with `"Records":[]`.
            Some(records) if out.records.is_empty() => records,
            // The SDK's (the fast path did not take the body): the buffers the SDK decoded
            // the response into are handed through, not copied.
            _ => records(
                std::mem::take(&mut out.records),
                StreamOp::GetRecords,
                self.stream.name(),
                shard_id,
            )?,
        };
        Ok(RecordBatch {
            records,
            next_iterator: out.next_shard_iterator().map(str::to_string),
            millis_behind_latest: out.millis_behind_latest(),
            child_shards: child_shards(out.child_shards()),
        })
    }

    async fn describe_stream_consumer(
        &self,
        consumer: &ConsumerRef,
    ) -> Result<Option<StreamConsumer>, RetrievalError> {
        let op = StreamOp::DescribeStreamConsumer;
        let req = self.client.describe_stream_consumer();
        let req = match consumer {
            ConsumerRef::Name(n) => req
                .stream_arn(self.resolved_stream_arn(op).await?)
                .consumer_name(n),
            ConsumerRef::Arn(a) => req.consumer_arn(a),
        };
        match self.call(op, None, req.send()).await {
            Ok(out) => Ok(out.consumer_description().map(|d| StreamConsumer {
                consumer_name: d.consumer_name().to_string(),
                consumer_arn: d.consumer_arn().to_string(),
                status: consumer_status(d.consumer_status()),
            })),
            Err(e) if e.failure == RetrievalFailure::ResourceNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn register_stream_consumer(
        &self,
        consumer_name: &str,
    ) -> Result<StreamConsumer, RetrievalError> {
        let op = StreamOp::RegisterStreamConsumer;
        let req = self
            .client
            .register_stream_consumer()
            .stream_arn(self.resolved_stream_arn(op).await?)
            .consumer_name(consumer_name);
        let out = self.call(op, None, req.send()).await?;
        let c = out.consumer().ok_or_else(|| {
            self.error(
                op,
                None,
                RetrievalFailure::Fatal,
                Cause::BadAnswer("RegisterStreamConsumer without a consumer".into()),
            )
        })?;
        Ok(StreamConsumer {
            consumer_name: c.consumer_name().to_string(),
            consumer_arn: c.consumer_arn().to_string(),
            status: consumer_status(c.consumer_status()),
        })
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        let req = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(starting_position(position));
        // `send` returns once the first message arrived (the service's initial response, or,
        // from emulators that send none, the first event, which the SDK keeps for `recv`).
        let out = self
            .call(StreamOp::SubscribeToShard, Some(shard_id), req.send())
            .await?;
        let (stream, shard) = (self.stream.name().to_string(), shard_id.to_string());
        let events = futures::stream::unfold(Some(out.event_stream), move |receiver| {
            let (stream, shard) = (stream.clone(), shard.clone());
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(mut e))) => {
                            let records = match records(
                                std::mem::take(&mut e.records),
                                StreamOp::SubscribeToShard,
                                &stream,
                                &shard,
                            ) {
                                Ok(records) => records,
                                Err(e) => return Some((Err(e), None)),
                            };
                            let event = SubscribeToShardEvent {
                                records,
                                continuation_sequence_number: Some(
                                    e.continuation_sequence_number().to_string(),
                                )
                                .filter(|c| !c.is_empty()),
                                millis_behind_latest: Some(e.millis_behind_latest()),
                                child_shards: child_shards(e.child_shards()),
                            };
                            return Some((Ok(event), Some(receiver)));
                        }
                        // An event type this SDK does not know: nothing to deliver.
                        Ok(Some(_)) => continue,
                        Ok(None) => return None,
                        Err(err) => {
                            let e = KinesisStreamClient::event_stream_error(&stream, &shard, err);
                            return Some((Err(e), None));
                        }
                    }
                }
            }
        });
        Ok(events.boxed())
    }
}
