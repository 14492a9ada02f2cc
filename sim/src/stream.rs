//! One worker's view of the shared stream: the shared [`InMemoryStream`] (whose own fault
//! injector carries the run's stream faults) behind the worker's [`Gate`]. Every call passes
//! the gate before and after; so does every event of a fan-out subscription.

use crate::gate::Gate;
use crate::ledger::Ledger;
use async_trait::async_trait;
use futures::StreamExt;
use kinesis_client::retrieval::{
    ConsumerRef, IteratorPosition, RecordBatch, RetrievalError, Shard, StreamClient,
    StreamConsumer, SubscribeToShardEvents,
};
use kinesis_client::testing::InMemoryStream;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A worker's stream client.
pub struct SimStream {
    inner: InMemoryStream,
    gate: Gate,
    worker: String,
    ledger: Arc<Mutex<Ledger>>,
    /// Multi-stream: the stream, whose lease keys name its shards in the ledger.
    stream: Option<kinesis_client::StreamIdentifier>,
}

impl fmt::Debug for SimStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimStream").finish()
    }
}

impl SimStream {
    /// `inner` as seen through `gate` by `worker` (its `LATEST` iterators go to `ledger`).
    pub fn new(
        inner: InMemoryStream,
        gate: Gate,
        worker: &str,
        ledger: Arc<Mutex<Ledger>>,
    ) -> Self {
        SimStream {
            inner,
            gate,
            worker: worker.to_string(),
            ledger,
            stream: None,
        }
    }

    /// The same for a stream of a multi-stream application, named `stream` in the leases.
    pub fn of_stream(mut self, stream: kinesis_client::StreamIdentifier) -> Self {
        self.stream = Some(stream);
        self
    }

    /// The ledger's name of `shard_id`.
    fn key(&self, shard_id: &str) -> String {
        match &self.stream {
            Some(s) => s.lease_key(shard_id),
            None => shard_id.to_string(),
        }
    }
}

#[async_trait]
impl StreamClient for SimStream {
    fn stream_name(&self) -> &str {
        self.inner.stream_name()
    }

    fn now(&self) -> SystemTime {
        self.inner.now()
    }

    async fn stream_arn(&self) -> Result<Option<String>, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.stream_arn().await;
        self.gate.pass().await;
        r
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.list_shards().await;
        self.gate.pass().await;
        r
    }

    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.get_shard_iterator(shard_id, position).await;
        if matches!((position, &r), (IteratorPosition::Latest, Ok(Some(_)))) {
            self.ledger
                .lock()
                .unwrap()
                .on_latest_iterator(&self.worker, &self.key(shard_id));
        }
        self.gate.pass().await;
        r
    }

    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.get_records(shard_id, iterator, limit).await;
        self.gate.pass().await;
        r
    }

    async fn describe_stream_consumer(
        &self,
        consumer: &ConsumerRef,
    ) -> Result<Option<StreamConsumer>, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.describe_stream_consumer(consumer).await;
        self.gate.pass().await;
        r
    }

    async fn register_stream_consumer(
        &self,
        consumer_name: &str,
    ) -> Result<StreamConsumer, RetrievalError> {
        self.gate.pass().await;
        let r = self.inner.register_stream_consumer(consumer_name).await;
        self.gate.pass().await;
        r
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        self.gate.pass().await;
        let r = self
            .inner
            .subscribe_to_shard(consumer_arn, shard_id, position)
            .await;
        if matches!((position, &r), (IteratorPosition::Latest, Ok(_))) {
            self.ledger
                .lock()
                .unwrap()
                .on_latest_iterator(&self.worker, &self.key(shard_id));
        }
        self.gate.pass().await;
        let gate = self.gate.clone();
        r.map(|events| {
            events
                .then(move |event| {
                    let gate = gate.clone();
                    async move {
                        gate.pass().await;
                        event
                    }
                })
                .boxed()
        })
    }
}
