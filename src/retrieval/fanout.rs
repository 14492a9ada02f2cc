//! Enhanced fan-out retrieval: one shard's records pushed by SubscribeToShard, behind a
//! [`RecordSource`] like the polling fetcher (see [`super::source`] for what every source
//! shares: the byte bounds, the hand-off, filtering, shard end, resume positions).
//!
//! * The first subscription starts at the checkpoint (`AT_SEQUENCE_NUMBER`, the checkpointed
//!   record filtered out as in polling) or at the initial position; every later one starts
//!   `AFTER_SEQUENCE_NUMBER` of the continuation sequence number of the last event delivered,
//!   so nothing is skipped or repeated across subscriptions. A source that started at
//!   `LATEST` and must subscribe again before its first event resumes at `AT_TIMESTAMP` of the
//!   time it first subscribed, never at a new `LATEST`.
//! * Kinesis completes a subscription after 5 minutes: the source subscribes again at once.
//! * The shard has ended when an event has no continuation sequence number; it lists the
//!   child shards (the same parent/child handling as polling follows). An end without child
//!   shards is checked by subscribing again (up to 3 times) before it is believed, as polling
//!   re-reads one.
//! * Any error (a previous subscription still open: `ResourceInUseException`;
//!   `LimitExceededException` and throttling; connection resets; server errors), and a
//!   subscription that sends nothing for [`SUBSCRIPTION_SILENCE_TIMEOUT`] (Kinesis sends an
//!   event at least every few seconds), end the subscription: the source backs off
//!   ([`RESUBSCRIBE_BACKOFF_BASE`] doubling to [`RESUBSCRIBE_BACKOFF_MAX`]) and subscribes
//!   again from the same position. Each failure is logged once, with the shard id (a warning;
//!   an error from the fifth in a row). Subscriptions of one shard are at least
//!   [`MIN_TIME_BETWEEN_SUBSCRIBES`] apart (Kinesis allows one call per second per consumer
//!   and shard).
//! * `ResourceNotFoundException`: if the shard no longer exists (GetShardIterator says so),
//!   it ended with no children; otherwise the consumer was deleted. A consumer registered by
//!   name is found or registered again ([`ConsumerRegistration`]: once for all the worker's
//!   shards, the others wait for it) before the next subscription, and every shard
//!   subscribes with the new ARN right after its last event delivered. A consumer given by
//!   ARN is not replaced (the application chose that one): the registration fails for good
//!   ([`ConsumerRegistrationError::Deleted`]), the source reads nothing more, and the
//!   scheduler stops the worker with that error, releasing its leases
//!   ([`crate::SchedulerError::FanOutConsumerDeleted`]); so does any registration error
//!   retrying cannot fix (a missing permission). (The Java KCL ends the shard in both cases,
//!   which skips the rest of it when the consumer was deleted.)
//! * Backpressure: the next event is read from the subscription only when the shard and the
//!   worker have room in their read-ahead budgets; until then HTTP/2 flow control holds the
//!   service back. At most one event beyond the bounds is held per shard.

mod registration;

pub use registration::{ConsumerRegistration, ConsumerRegistrationError, RegistrationPolicy};

use super::source::{BatchSink, BufferConfig, RecordSource, StartPosition};
use super::{
    IteratorPosition, RetrievalError, RetrievalFailure, StreamClient, SubscribeToShardEvent,
    SubscribeToShardEvents,
};
use crate::backoff::Backoff;
use crate::error::ErrorKind;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A subscription (or a SubscribeToShard call) that sends nothing for this long is dropped
/// and renewed from the last position (the Java KCL's HTTP read timeout).
pub const SUBSCRIPTION_SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time between two SubscribeToShard calls for one shard: Kinesis allows one per
/// second per consumer and shard.
pub const MIN_TIME_BETWEEN_SUBSCRIBES: Duration = Duration::from_secs(1);
/// The first pause before subscribing again after a failure.
pub const RESUBSCRIBE_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest pause before subscribing again after failures in a row.
pub const RESUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Ends without child shards believed after this many subscriptions confirmed them.
const END_CONFIRMATIONS: u32 = 3;
/// Failures in a row logged as warnings; later ones are errors.
const WARNINGS_IN_A_ROW: u32 = 4;

/// Start reading `shard_id` of `stream` by enhanced fan-out from `start`, as the consumer of
/// `registration`.
pub fn spawn(
    stream: Arc<dyn StreamClient>,
    registration: Arc<ConsumerRegistration>,
    shard_id: String,
    start: StartPosition,
    buffer: BufferConfig,
) -> RecordSource {
    RecordSource::spawn(shard_id, start, buffer, move |sink| {
        FanOutTask {
            stream,
            registration,
            sink,
        }
        .run()
    })
}

struct FanOutTask {
    stream: Arc<dyn StreamClient>,
    registration: Arc<ConsumerRegistration>,
    sink: BatchSink,
}

/// How one subscription ended.
enum Ended {
    /// The service completed it (after 5 minutes): subscribe again at once.
    Completed,
    /// The shard's last event was delivered, or the consumer is gone: stop.
    Done,
    /// Nothing arrived for the silence timeout.
    Silent,
    /// It failed.
    Failed(RetrievalError),
    /// An end without child shards: confirm it by subscribing again.
    EndWithoutChildren,
}

impl FanOutTask {
    fn shard(&self) -> &str {
        self.sink.shard_id()
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(RESUBSCRIBE_BACKOFF_BASE, RESUBSCRIBE_BACKOFF_MAX);
        let mut last_subscribe: Option<Instant> = None;
        let (mut failures, mut unconfirmed_ends) = (0u32, 0u32);
        loop {
            let arn = match self.registration.arn().await {
                Ok(arn) => arn,
                Err(e) if e.kind() == ErrorKind::Fatal => {
                    // Nothing to retry: the worker stops (the scheduler watches the
                    // registration's failure); until then this shard reads nothing.
                    tracing::error!(shard_id = self.shard(), position = ?self.sink.resume_position(), error = %e, "cannot read the shard by enhanced fan-out any more; waiting for the worker to stop");
                    return std::future::pending().await;
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff.next().unwrap_or(RESUBSCRIBE_BACKOFF_MAX);
                    self.log_failure(
                        failures,
                        delay,
                        &format!("cannot get the fan-out consumer: {e}"),
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if let Some(t) = last_subscribe {
                tokio::time::sleep_until(t + MIN_TIME_BETWEEN_SUBSCRIBES).await;
            }
            let position = self.sink.resume_position();
            let requested_at = self.stream.now();
            last_subscribe = Some(Instant::now());
            let subscribed = tokio::time::timeout(
                SUBSCRIPTION_SILENCE_TIMEOUT,
                self.stream
                    .subscribe_to_shard(&arn, self.shard(), &position),
            )
            .await;
            let ended = match subscribed {
                Err(_) => Ended::Silent,
                Ok(Err(e)) => Ended::Failed(e),
                Ok(Ok(events)) => {
                    if position == IteratorPosition::Latest {
                        self.sink.note_latest_requested(requested_at);
                    }
                    tracing::debug!(
                        shard_id = self.shard(),
                        ?position,
                        "subscribed to the shard (enhanced fan-out)"
                    );
                    self.consume(events, &mut failures, &mut unconfirmed_ends, &mut backoff)
                        .await
                }
            };
            match ended {
                Ended::Done => return,
                Ended::Completed => {
                    tracing::debug!(shard_id = self.shard(), position = ?self.sink.resume_position(), "subscription completed (Kinesis ends them after 5 minutes); subscribing again");
                }
                Ended::EndWithoutChildren => {
                    unconfirmed_ends += 1;
                    if unconfirmed_ends > END_CONFIRMATIONS {
                        tracing::warn!(shard_id = self.shard(), "the shard ended without child shards, confirmed {END_CONFIRMATIONS} times; treating it as ended with no children");
                        self.sink.shard_gone().await;
                        return;
                    }
                    tracing::debug!(
                        shard_id = self.shard(),
                        "end of shard without child shards; subscribing again to confirm"
                    );
                }
                Ended::Silent => {
                    failures += 1;
                    let delay = backoff.next().unwrap_or(RESUBSCRIBE_BACKOFF_MAX);
                    self.log_failure(
                        failures,
                        delay,
                        &format!(
                            "the subscription sent nothing for {SUBSCRIPTION_SILENCE_TIMEOUT:?}"
                        ),
                    );
                    tokio::time::sleep(delay).await;
                }
                Ended::Failed(e) => {
                    let mut what = describe_failure(&e);
                    if e.failure == RetrievalFailure::ResourceNotFound {
                        match self.what_is_gone().await {
                            Gone::Shard => {
                                tracing::warn!(shard_id = self.shard(), error = %e, "shard no longer exists; treating it as ended with no children");
                                self.sink.shard_gone().await;
                                return;
                            }
                            Gone::Consumer => {
                                self.registration.forget(&arn).await;
                                what = format!("the shard exists but the fan-out consumer {arn} does not (deregistered?), so it is registered again: {e}");
                            }
                            Gone::Unknown => {}
                        }
                    }
                    failures += 1;
                    let delay = backoff.next().unwrap_or(RESUBSCRIBE_BACKOFF_MAX);
                    self.log_failure(failures, delay, &what);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Deliver the events of one subscription until it ends.
    async fn consume(
        &mut self,
        mut events: SubscribeToShardEvents,
        failures: &mut u32,
        unconfirmed_ends: &mut u32,
        backoff: &mut Backoff,
    ) -> Ended {
        loop {
            // Read ahead only while the shard and the worker have room for more.
            self.sink.has_room().await;
            let next = match tokio::time::timeout(SUBSCRIPTION_SILENCE_TIMEOUT, events.next()).await
            {
                Err(_) => return Ended::Silent,
                Ok(next) => next,
            };
            let event: SubscribeToShardEvent = match next {
                None => return Ended::Completed,
                Some(Err(e)) => return Ended::Failed(e),
                Some(Ok(event)) => event,
            };
            if *failures > 0 {
                tracing::info!(
                    shard_id = self.shard(),
                    after_failures = *failures,
                    "the subscription delivers events again"
                );
            }
            *failures = 0;
            backoff.reset();
            let continuation = event.continuation_sequence_number.filter(|c| !c.is_empty());
            let at_end = continuation.is_none();
            if at_end && event.child_shards.is_empty() {
                // Deliver its records, then check the end with a new subscription after them.
                let last = event.records.last().map(|r| r.sequence_number.to_string());
                if !self
                    .sink
                    .deliver(event.records, event.millis_behind_latest, None, last)
                    .await
                {
                    return Ended::Done;
                }
                return Ended::EndWithoutChildren;
            }
            *unconfirmed_ends = 0;
            let delivered = self
                .sink
                .deliver(
                    event.records,
                    event.millis_behind_latest,
                    at_end.then_some(event.child_shards),
                    continuation,
                )
                .await;
            if !delivered || at_end {
                return Ended::Done;
            }
        }
    }

    /// After `ResourceNotFoundException`: whether the shard or the consumer is gone (the
    /// shard is when GetShardIterator finds no shard).
    async fn what_is_gone(&self) -> Gone {
        match self
            .stream
            .get_shard_iterator(self.shard(), &IteratorPosition::TrimHorizon)
            .await
        {
            Ok(None) => Gone::Shard,
            Ok(Some(_)) => Gone::Consumer,
            Err(check) => {
                tracing::debug!(shard_id = self.shard(), error = %check, "cannot tell whether the shard still exists");
                Gone::Unknown
            }
        }
    }

    fn log_failure(&self, consecutive: u32, retry_in: Duration, what: &str) {
        let position = self.sink.resume_position();
        if consecutive > WARNINGS_IN_A_ROW {
            tracing::error!(
                shard_id = self.shard(),
                consecutive,
                ?retry_in,
                ?position,
                "fan-out subscription keeps failing: {what}; subscribing again"
            );
        } else {
            tracing::warn!(
                shard_id = self.shard(),
                consecutive,
                ?retry_in,
                ?position,
                "fan-out subscription failed: {what}; subscribing again"
            );
        }
    }
}

/// What a `ResourceNotFoundException` was about.
enum Gone {
    /// The shard (it aged out of the stream): it has ended.
    Shard,
    /// The consumer (deregistered): register it again.
    Consumer,
    /// Cannot tell now: subscribe again.
    Unknown,
}

/// A failure in words that say what it means for this shard.
fn describe_failure(e: &RetrievalError) -> String {
    match e.failure {
        RetrievalFailure::ResourceInUse => format!(
            "a previous subscription to this shard is still open (this worker's last one, or another worker's): {e}"
        ),
        RetrievalFailure::Throttled => format!("throttled (LimitExceeded: at most one subscription per second per shard): {e}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ExtendedSequenceNumber;
    use crate::config::{
        DEFAULT_FAN_OUT_RETRY_BACKOFF, DEFAULT_MAX_DESCRIBE_STREAM_CONSUMER_RETRIES,
        DEFAULT_REGISTER_STREAM_CONSUMER_RETRIES,
    };
    use crate::retrieval::source::{record_bytes, PrefetchBudget};
    use crate::retrieval::{ConsumerRef, InMemoryStream, RecordBatch, Shard, StreamConsumer};
    use crate::sync::Mutex;
    use crate::testing::stream::{StreamFault, StreamOp};
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    const S0: &str = "shardId-000000000000";

    fn registration(stream: Arc<dyn StreamClient>) -> Arc<ConsumerRegistration> {
        Arc::new(ConsumerRegistration::new(
            stream,
            ConsumerRef::Name("app".into()),
            RegistrationPolicy {
                max_describe_stream_consumer_retries: DEFAULT_MAX_DESCRIBE_STREAM_CONSUMER_RETRIES,
                register_stream_consumer_retries: DEFAULT_REGISTER_STREAM_CONSUMER_RETRIES,
                retry_backoff: DEFAULT_FAN_OUT_RETRY_BACKOFF,
            },
        ))
    }

    fn buffer() -> BufferConfig {
        BufferConfig {
            max_pending_batches: 3,
            max_pending_bytes: 8 << 20,
            budget: PrefetchBudget::new(64 << 20),
            deaggregate: true,
            hash_key_range: None,
        }
    }

    fn from(position: IteratorPosition) -> StartPosition {
        StartPosition {
            position,
            skip_through: None,
        }
    }

    fn start(stream: Arc<dyn StreamClient>, shard: &str, at: StartPosition) -> RecordSource {
        spawn(
            stream.clone(),
            registration(stream),
            shard.into(),
            at,
            buffer(),
        )
    }

    /// Records (sequence numbers) until `want` arrived, or the shard ended (with its
    /// children). Panics after 3 600 s of (paused) time.
    async fn drain(source: &mut RecordSource, want: usize) -> (Vec<String>, Option<Vec<String>>) {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3600);
        while got.len() < want {
            let Ok(batch) = tokio::time::timeout_at(deadline, source.next()).await else {
                panic!(
                    "only {} of {want} records within 3 600 s: {got:?}",
                    got.len()
                );
            };
            let batch = batch.expect("the source task is alive");
            got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| r.sequence_number.into_string()),
            );
            if let Some(children) = batch.shard_end {
                return (
                    got,
                    Some(children.into_iter().map(|c| c.shard_id).collect()),
                );
            }
        }
        (got, None)
    }

    /// Puts a record on shard 0 every `every` for `count` records, in the background.
    fn produce(
        stream: &InMemoryStream,
        count: usize,
        every: Duration,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut put = Vec::new();
            for i in 0..count {
                put.push(stream.put_with_hash(0, "pk", format!("r{i}").as_bytes()).1);
                tokio::time::sleep(every).await;
            }
            put
        })
    }

    /// Subscriptions that expire mid-shard (every 7 s here, 5 minutes on Kinesis) are renewed
    /// from the last continuation: every record once, in order.
    #[tokio::test(start_paused = true)]
    async fn subscriptions_expiring_mid_shard_lose_and_repeat_nothing() {
        let stream = InMemoryStream::new("s", 1);
        stream.set_subscription_lifetime(Duration::from_secs(7));
        let producer = produce(&stream, 200, Duration::from_millis(300));
        let mut source = start(
            Arc::new(stream.clone()),
            S0,
            from(IteratorPosition::TrimHorizon),
        );
        let (got, end) = drain(&mut source, 200).await;
        assert_eq!(got, producer.await.unwrap());
        assert_eq!(end, None);
        assert!(
            stream.subscribe_calls() >= 8,
            "{} subscriptions",
            stream.subscribe_calls()
        );
    }

    /// Every kind of failure, on the call and mid-subscription: ResourceInUse,
    /// LimitExceeded, throttling, timeouts, connection resets, silence, early ends. Every
    /// record arrives once, in order.
    #[tokio::test(start_paused = true)]
    async fn every_subscription_failure_is_survived_without_loss_or_repeats() {
        let stream = InMemoryStream::new("s", 1);
        let (calls, events) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        stream.set_fault_injector(Some(Arc::new({
            let (calls, events) = (calls.clone(), events.clone());
            move |op: StreamOp, _: Option<&str>| match op {
                StreamOp::SubscribeToShard => match calls.fetch_add(1, Ordering::SeqCst) {
                    1 => Some(StreamFault::ResourceInUse),
                    3 => Some(StreamFault::LimitExceeded),
                    5 => Some(StreamFault::Throttle),
                    7 => Some(StreamFault::Timeout),
                    9 => Some(StreamFault::Silence),
                    11 => Some(StreamFault::Reset),
                    _ => None,
                },
                StreamOp::SubscribeToShardEvent => match events.fetch_add(1, Ordering::SeqCst) {
                    3 => Some(StreamFault::Reset),
                    6 => Some(StreamFault::ResourceInUse),
                    9 => Some(StreamFault::Silence),
                    12 => Some(StreamFault::LimitExceeded),
                    15 => Some(StreamFault::Throttle),
                    18 => Some(StreamFault::EndSubscription),
                    21 => Some(StreamFault::Timeout),
                    24 => Some(StreamFault::Delay(Duration::from_secs(3))),
                    _ => None,
                },
                _ => None,
            }
        })));
        let producer = produce(&stream, 150, Duration::from_millis(700));
        let mut source = start(
            Arc::new(stream.clone()),
            S0,
            from(IteratorPosition::TrimHorizon),
        );
        let (got, _) = drain(&mut source, 150).await;
        assert_eq!(got, producer.await.unwrap());
        assert!(
            calls.load(Ordering::SeqCst) > 12,
            "every call fault was injected"
        );
        assert!(
            events.load(Ordering::SeqCst) > 25,
            "every event fault was injected"
        );
    }

    /// A split while subscribed: the rest of the parent, then its end with both children; a
    /// merge while subscribed to one parent: its end with the merged child.
    #[tokio::test(start_paused = true)]
    async fn a_split_and_a_merge_during_a_subscription_end_the_shard_with_its_children() {
        let stream = InMemoryStream::new("s", 1);
        let client: Arc<dyn StreamClient> = Arc::new(stream.clone());
        let mut source = start(client.clone(), S0, from(IteratorPosition::TrimHorizon));
        let before: Vec<String> = (0..5)
            .map(|i| stream.put_with_hash(7, "pk", &[i]).1)
            .collect();
        let (got, end) = drain(&mut source, 5).await;
        assert_eq!((got, end), (before, None));
        let last = stream.put_with_hash(7, "pk", b"last").1;
        let (a, b) = stream.split(S0, 1 << 127).unwrap();
        let (got, end) = drain(&mut source, 10).await;
        assert_eq!(got, [last]);
        assert_eq!(end, Some(vec![a.clone(), b.clone()]));
        assert!(
            source.next().await.is_none(),
            "nothing after the shard's end"
        );
        let mut child = start(client, &a, from(IteratorPosition::TrimHorizon));
        let in_a = stream.put_with_hash(7, "pk", b"in a").1;
        assert_eq!(drain(&mut child, 1).await.0, [in_a]);
        let merged = stream.merge(&a, &b).unwrap();
        assert_eq!(drain(&mut child, 10).await, (vec![], Some(vec![merged])));
    }

    /// Counts the record bytes the service pushed (events pulled from the subscription).
    #[derive(Debug)]
    struct Observed {
        inner: InMemoryStream,
        pulled: Arc<AtomicUsize>,
        positions: Arc<Mutex<Vec<IteratorPosition>>>,
        /// The first this many subscriptions send one end without children, then end.
        fake_ends: AtomicU32,
    }

    impl Observed {
        fn new(inner: &InMemoryStream) -> Observed {
            Observed {
                inner: inner.clone(),
                pulled: Arc::default(),
                positions: Arc::default(),
                fake_ends: AtomicU32::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl StreamClient for Observed {
        fn stream_name(&self) -> &str {
            self.inner.stream_name()
        }
        fn now(&self) -> std::time::SystemTime {
            self.inner.now()
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
            self.inner.get_records(shard_id, iterator, limit).await
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
            self.positions.lock().push(position.clone());
            let fake = self
                .fake_ends
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let events = self
                .inner
                .subscribe_to_shard(consumer_arn, shard_id, position)
                .await?;
            if fake {
                drop(events);
                let end = SubscribeToShardEvent::default();
                return Ok(futures::stream::iter([Ok(end)]).boxed());
            }
            let pulled = self.pulled.clone();
            Ok(events
                .inspect(move |e| {
                    if let Ok(e) = e {
                        let bytes: usize = e.records.iter().map(record_bytes).sum();
                        pulled.fetch_add(bytes, Ordering::SeqCst);
                    }
                })
                .boxed())
        }
    }

    /// A slow processor on two shards of large records (300 KiB, one of 3 MiB): the worker's
    /// budget is never exceeded, at most one event per shard is held beyond it, everything
    /// arrives.
    #[tokio::test(start_paused = true)]
    async fn a_slow_processor_keeps_read_ahead_bounded_in_bytes() {
        use crate::retrieval::source::test_support::*;
        let stream = InMemoryStream::new("s", 2);
        let observed = Arc::new(Observed::new(&stream));
        let client: Arc<dyn StreamClient> = observed.clone();
        let budget = PrefetchBudget::new(WORKER_BUDGET);
        let reg = registration(client.clone());
        let mut sources: Vec<RecordSource> = ["shardId-000000000000", "shardId-000000000001"]
            .into_iter()
            .map(|s| {
                let at = from(IteratorPosition::TrimHorizon);
                spawn(client.clone(), reg.clone(), s.into(), at, bounded(&budget))
            })
            .collect();
        let peak = slow_processor(&stream, &observed.pulled, &budget, &mut sources).await;
        // The budget, plus one event per shard waiting for room (up to 2 MiB, or the 3 MiB
        // record alone).
        assert!(
            peak <= WORKER_BUDGET + BIG_RECORD + 2048 * KIB,
            "{} KiB held",
            peak / KIB
        );
    }

    /// A source at LATEST whose first subscriptions fail before any event resumes at
    /// AT_TIMESTAMP of its first subscription, never at a new LATEST (records that arrived
    /// meanwhile are delivered).
    #[tokio::test(start_paused = true)]
    async fn latest_is_never_resolved_twice() {
        let stream = InMemoryStream::new("s", 1);
        stream.put_with_hash(0, "pk", b"before the start");
        tokio::time::advance(Duration::from_secs(1)).await;
        let failed = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(Arc::new({
            let failed = failed.clone();
            move |op: StreamOp, _: Option<&str>| {
                (op == StreamOp::SubscribeToShardEvent && failed.fetch_add(1, Ordering::SeqCst) < 3)
                    .then_some(StreamFault::Reset)
            }
        })));
        let observed = Arc::new(Observed::new(&stream));
        let mut source = start(observed.clone(), S0, from(IteratorPosition::Latest));
        // Records put after the first request are wanted.
        while observed.positions.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let producer = produce(&stream, 10, Duration::from_millis(500));
        let (got, _) = drain(&mut source, 10).await;
        assert_eq!(got, producer.await.unwrap());
        let positions = observed.positions.lock().clone();
        assert_eq!(positions[0], IteratorPosition::Latest);
        assert!(
            positions[1..]
                .iter()
                .all(|p| matches!(p, IteratorPosition::AtTimestamp(_))),
            "{positions:?}"
        );
    }

    /// Starting at a checkpoint: AT_SEQUENCE_NUMBER, the checkpointed record filtered out.
    #[tokio::test(start_paused = true)]
    async fn starts_after_the_checkpoint() {
        let stream = InMemoryStream::new("s", 1);
        let put: Vec<String> = (0..10).map(|i| stream.put("pk", &[i]).1).collect();
        let at = StartPosition {
            position: IteratorPosition::AtSequenceNumber(put[4].clone()),
            skip_through: Some(ExtendedSequenceNumber::new(put[4].clone(), 0).unwrap()),
        };
        let mut source = start(Arc::new(stream), S0, at);
        assert_eq!(drain(&mut source, 5).await.0, put[5..]);
    }

    /// Fan-out events become batches through the same preparer as GetRecords responses: KPL
    /// aggregates are de-aggregated, and a checkpoint inside one resumes right after its
    /// user record.
    #[tokio::test(start_paused = true)]
    async fn aggregates_are_deaggregated_and_a_checkpoint_inside_one_resumes_after_it() {
        use crate::retrieval::source::test_support::user_records;
        let stream = InMemoryStream::new("s", 1);
        let (_, x) = stream.put_aggregate(&user_records("x", 6));
        let (_, after) = stream.put("pk", b"plain");
        let at = StartPosition {
            position: IteratorPosition::AtSequenceNumber(x.clone()),
            skip_through: Some(ExtendedSequenceNumber::new(x.clone(), 3).unwrap()),
        };
        let mut source = start(Arc::new(stream), S0, at);
        let mut got = Vec::new();
        while got.len() < 3 {
            let batch = source.next().await.expect("alive");
            assert_eq!(
                batch.deaggregated,
                batch.records.iter().any(|r| r.aggregated)
            );
            got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| (r.sequence_number.into_string(), r.sub_sequence_number)),
            );
        }
        assert_eq!(got, [(x.clone(), 4), (x, 5), (after, 0)]);
    }

    /// A consumer deregistered while subscribed is registered again and reading goes on
    /// where it was; a shard that disappears (aged out) ends with no children.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_consumer_is_registered_again_and_a_vanished_shard_ends() {
        let stream = InMemoryStream::new("s", 1);
        let client: Arc<dyn StreamClient> = Arc::new(stream.clone());
        let mut source = start(client.clone(), S0, from(IteratorPosition::TrimHorizon));
        let first: Vec<String> = (0..3).map(|i| stream.put("pk", &[i]).1).collect();
        assert_eq!(drain(&mut source, 3).await.0, first);
        let old = stream.consumers()[0].consumer_arn.clone();
        assert!(stream.deregister_consumer("app"));
        tokio::time::advance(Duration::from_secs(1)).await;
        let second: Vec<String> = (0..3).map(|i| stream.put("pk", &[i]).1).collect();
        assert_eq!(drain(&mut source, 3).await.0, second);
        let consumers = stream.consumers();
        assert_eq!(consumers.len(), 1);
        assert_ne!(consumers[0].consumer_arn, old, "registered again");
        // A closed shard that ages out while subscribed.
        let (a, _) = stream.split(S0, 1 << 100).unwrap();
        assert_eq!(drain(&mut source, 1).await.1.map(|c| c.len()), Some(2));
        let mut child = start(client, &a, from(IteratorPosition::TrimHorizon));
        let (_, _) = stream.split(&a, 1 << 90).unwrap();
        assert!(stream.age_out(&a));
        assert_eq!(drain(&mut child, 1).await, (vec![], Some(vec![])));
    }

    /// An end without child shards is checked by subscribing again: a spurious one is not
    /// believed (reading goes on), a persistent one ends the shard with no children.
    #[tokio::test(start_paused = true)]
    async fn an_end_without_children_is_confirmed_before_it_is_believed() {
        let stream = InMemoryStream::new("s", 1);
        let put: Vec<String> = (0..4).map(|i| stream.put("pk", &[i]).1).collect();
        let observed = Observed::new(&stream);
        observed.fake_ends.store(2, Ordering::SeqCst);
        let mut source = start(Arc::new(observed), S0, from(IteratorPosition::TrimHorizon));
        assert_eq!(drain(&mut source, 4).await, (put, None));
        let always = Observed::new(&stream);
        always.fake_ends.store(u32::MAX, Ordering::SeqCst);
        let mut source = start(Arc::new(always), S0, from(IteratorPosition::TrimHorizon));
        assert_eq!(drain(&mut source, 4).await, (vec![], Some(vec![])));
    }
}
