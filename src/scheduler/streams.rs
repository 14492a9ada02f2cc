//! The streams a worker consumes now: one for a single-stream application, the tracked set
//! for a multi-stream one, each with its client, initial position and fan-out consumer.

use crate::config::{Config, InitialPosition, RetrievalMode};
use crate::lease::Lease;
use crate::multi_stream::StreamConfig;
use crate::retrieval::fanout::{ConsumerRegistration, RegistrationPolicy};
use crate::retrieval::{ConsumerRef, ConsumerRegistrationError, StreamClient};
use crate::stream::StreamIdentifier;
use crate::sync::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Builds the Kinesis client of each stream of a multi-stream application (see
/// [`Scheduler::multi_stream`](crate::Scheduler::multi_stream)). Any
/// `Fn(&StreamConfig) -> Arc<dyn StreamClient>` is one.
pub trait StreamClients: Send + Sync + 'static {
    /// The client of `stream`.
    fn client(&self, stream: &StreamConfig) -> Arc<dyn StreamClient>;
}

impl<F> StreamClients for F
where
    F: Fn(&StreamConfig) -> Arc<dyn StreamClient> + Send + Sync + 'static,
{
    fn client(&self, stream: &StreamConfig) -> Arc<dyn StreamClient> {
        self(stream)
    }
}

/// One stream the worker consumes.
#[derive(Debug)]
pub(crate) struct ActiveStream {
    /// The stream, as leases and processors name it.
    pub(crate) id: StreamIdentifier,
    /// Where its new shards' leases start.
    pub(crate) initial_position: InitialPosition,
    /// Reads it.
    pub(crate) client: Arc<dyn StreamClient>,
    /// Its enhanced fan-out consumer: `Some` reads by SubscribeToShard, `None` polls.
    pub(crate) fan_out: Option<Arc<ConsumerRegistration>>,
    /// What the application configured (multi-stream): a change means a new stream entry.
    pub(crate) config: Option<StreamConfig>,
}

impl ActiveStream {
    /// The stream of a single-stream application.
    pub(crate) fn single(config: &Config, client: Arc<dyn StreamClient>) -> Self {
        ActiveStream {
            id: StreamIdentifier::single(config.stream().name()),
            initial_position: config.initial_position,
            fan_out: registration(config, &client, || config.fan_out_consumer()),
            client,
            config: None,
        }
    }

    /// A stream of a multi-stream application.
    pub(crate) fn multi(
        config: &Config,
        stream: &StreamConfig,
        client: Arc<dyn StreamClient>,
    ) -> Self {
        ActiveStream {
            id: stream.stream.clone(),
            initial_position: stream.initial_position,
            fan_out: registration(config, &client, || config.fan_out_consumer_of(stream)),
            client,
            config: Some(stream.clone()),
        }
    }

    /// Whether leases of this stream are multi-stream leases (their stream named on them).
    pub(crate) fn lease_stream(&self) -> Option<&StreamIdentifier> {
        self.id.is_multi_stream().then_some(&self.id)
    }
}

fn registration(
    config: &Config,
    client: &Arc<dyn StreamClient>,
    consumer: impl FnOnce() -> ConsumerRef,
) -> Option<Arc<ConsumerRegistration>> {
    (config.retrieval_mode == RetrievalMode::FanOut).then(|| {
        let f = &config.fan_out;
        Arc::new(ConsumerRegistration::new(
            client.clone(),
            consumer(),
            RegistrationPolicy {
                max_describe_stream_consumer_retries: f.max_describe_stream_consumer_retries,
                register_stream_consumer_retries: f.register_stream_consumer_retries,
                retry_backoff: f.retry_backoff,
            },
        ))
    })
}

/// The streams consumed now, by serialized identifier (the `streamName` of their leases; the
/// stream name for a single-stream application). Cheap to clone; a change is announced to
/// [`StreamSet::subscribe`]rs.
#[derive(Clone)]
pub(crate) struct StreamSet {
    streams: Arc<Mutex<BTreeMap<String, Arc<ActiveStream>>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl StreamSet {
    /// A set of these streams.
    pub(crate) fn new(streams: impl IntoIterator<Item = ActiveStream>) -> Self {
        let set = StreamSet {
            streams: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        };
        for s in streams {
            set.insert(s);
        }
        set
    }

    /// Add (or replace) a stream.
    pub(crate) fn insert(&self, stream: ActiveStream) {
        self.streams
            .lock()
            .insert(stream.id.to_string(), Arc::new(stream));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Remove the stream serialized `key`.
    pub(crate) fn remove(&self, key: &str) -> Option<Arc<ActiveStream>> {
        let removed = self.streams.lock().remove(key);
        if removed.is_some() {
            self.changed.send_modify(|v| *v += 1);
        }
        removed
    }

    /// The stream serialized `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<ActiveStream>> {
        self.streams.lock().get(key).cloned()
    }

    /// The stream `lease` belongs to, if it is consumed: the stream its `streamName` names
    /// (multi-stream), or the one stream (single-stream).
    pub(crate) fn of_lease(&self, lease: &Lease) -> Option<Arc<ActiveStream>> {
        let streams = self.streams.lock();
        match &lease.multi_stream {
            Some(m) => streams.get(&m.stream.to_string()).cloned(),
            None => streams.values().find(|s| !s.id.is_multi_stream()).cloned(),
        }
    }

    /// Every stream, in key order.
    pub(crate) fn all(&self) -> Vec<Arc<ActiveStream>> {
        self.streams.lock().values().cloned().collect()
    }

    /// The serialized identifiers of every stream.
    pub(crate) fn keys(&self) -> std::collections::BTreeSet<String> {
        self.streams.lock().keys().cloned().collect()
    }

    /// Announces every change to the set.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The lasting failure of a single-stream worker's fan-out consumer (never, without one;
    /// a multi-stream worker runs on, see [`Scheduler::run`](crate::Scheduler::run)).
    pub(crate) async fn fan_out_failed(&self) -> ConsumerRegistrationError {
        match self.all().into_iter().find_map(|s| s.fan_out.clone()) {
            Some(registration) => registration.failed().await,
            None => std::future::pending().await,
        }
    }
}
