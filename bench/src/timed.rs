//! A [`StreamClient`] wrapper that measures the time spent inside each GetRecords call (the
//! emulator's share of a read, plus HTTP and decoding). The fan-out calls pass through
//! unmeasured.

use async_trait::async_trait;
use kinesis_client::retrieval::{
    ConsumerRef, IteratorPosition, RecordBatch, RetrievalError, Shard, StreamClient,
    StreamConsumer, SubscribeToShardEvents,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Delegates to `inner`, summing the time spent in GetRecords.
#[derive(Debug)]
pub struct TimedStream {
    inner: Arc<dyn StreamClient>,
    get_records_nanos: AtomicU64,
    get_records_calls: AtomicU64,
    records: AtomicU64,
    durations: Mutex<Vec<Duration>>,
    first_call: Mutex<Option<Instant>>,
}

/// What a [`TimedStream`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Total time inside GetRecords.
    pub get_records: Duration,
    /// GetRecords calls.
    pub calls: u64,
    /// Records returned.
    pub records: u64,
}

impl TimedStream {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn StreamClient>) -> Self {
        TimedStream {
            inner,
            get_records_nanos: AtomicU64::new(0),
            get_records_calls: AtomicU64::new(0),
            records: AtomicU64::new(0),
            durations: Mutex::new(Vec::new()),
            first_call: Mutex::new(None),
        }
    }

    /// When the first GetRecords call started.
    pub fn first_call(&self) -> Option<Instant> {
        *self.first_call.lock().unwrap()
    }

    /// Totals so far.
    pub fn timing(&self) -> Timing {
        Timing {
            get_records: Duration::from_nanos(self.get_records_nanos.load(Ordering::Relaxed)),
            calls: self.get_records_calls.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }

    /// Every GetRecords call's duration so far (and forget them).
    pub fn take_durations(&self) -> Vec<Duration> {
        std::mem::take(&mut self.durations.lock().unwrap())
    }
}

#[async_trait]
impl StreamClient for TimedStream {
    fn stream_name(&self) -> &str {
        self.inner.stream_name()
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
        self.inner.list_shards().await
    }

    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError> {
        self.inner.get_shard_iterator(shard_id, position).await
    }

    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError> {
        let started = Instant::now();
        self.first_call.lock().unwrap().get_or_insert(started);
        let result = self.inner.get_records(shard_id, iterator, limit).await;
        let took = started.elapsed();
        self.get_records_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.get_records_calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(b) = &result {
            self.records
                .fetch_add(b.records.len() as u64, Ordering::Relaxed);
        }
        self.durations.lock().unwrap().push(took);
        result
    }

    async fn describe_stream_consumer(
        &self,
        consumer: &ConsumerRef,
    ) -> Result<Option<StreamConsumer>, RetrievalError> {
        self.inner.describe_stream_consumer(consumer).await
    }

    async fn register_stream_consumer(
        &self,
        consumer_name: &str,
    ) -> Result<StreamConsumer, RetrievalError> {
        self.inner.register_stream_consumer(consumer_name).await
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        self.inner
            .subscribe_to_shard(consumer_arn, shard_id, position)
            .await
    }
}
