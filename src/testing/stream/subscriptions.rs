//! Enhanced fan-out on the in-memory stream: stream consumers and SubscribeToShard
//! subscriptions, modelled on what Kinesis documents:
//!
//! * RegisterStreamConsumer creates a consumer `CREATING`; it is `ACTIVE`
//!   [`DEFAULT_CONSUMER_ACTIVATION_DELAY`] later (settable). A second registration of the same
//!   name fails with `ResourceInUseException`; more than 20 consumers with
//!   `LimitExceededException`.
//! * SubscribeToShard needs an `ACTIVE` consumer (else `ResourceInUseException`) and an
//!   existing shard (else `ResourceNotFoundException`, as for an unknown consumer). One call
//!   per second per consumer and shard ([`MIN_TIME_BETWEEN_SUBSCRIBES`]; more fail with
//!   `LimitExceededException`). A second subscription of the same consumer to the same shard
//!   within [`SUBSCRIPTION_TAKEOVER_AFTER`] of the first fails with `ResourceInUseException`;
//!   a later one takes over, and the first fails with `ResourceInUseException` at its next
//!   event.
//! * A subscription pushes an event as soon as records are there (all of them, up to
//!   [`MAX_EVENT_BYTES`]), an empty one every [`SUBSCRIPTION_HEARTBEAT`] otherwise (and one at
//!   once when it starts), and completes after [`SUBSCRIPTION_LIFETIME`] (settable). The
//!   continuation sequence number of an event is its last record's, or, without records, the
//!   position just before the next record (so `AFTER_SEQUENCE_NUMBER` of it skips nothing).
//!   At the end of a closed shard the last event has no continuation and lists the child
//!   shards; then the subscription ends.
//! * Before each event the stream's fault injector is asked with
//!   [`StreamOp::SubscribeToShardEvent`]: `Reset`, `Throttle`, `Timeout`, `ResourceInUse`,
//!   `LimitExceeded` and `AccessDenied` fail the subscription, `Silence` stops it sending anything (it stays open
//!   until dropped), `EndSubscription` completes it, `Delay` holds the event back.

use super::{
    first_sequence, millis_behind, InMemoryStream, ShardState, State, StreamFault, StreamOp, K,
};
use crate::record::Record;
use crate::retrieval::source::record_bytes;
use crate::retrieval::{
    ConsumerRef, ConsumerStatus, IteratorPosition, RetrievalError, StreamConsumer,
    SubscribeToShardEvent, SubscribeToShardEvents,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a newly registered consumer stays `CREATING` (unless changed with
/// [`InMemoryStream::set_consumer_activation_delay`]).
pub const DEFAULT_CONSUMER_ACTIVATION_DELAY: Duration = Duration::from_secs(2);
/// How long a subscription lasts (Kinesis: 5 minutes; see
/// [`InMemoryStream::set_subscription_lifetime`]).
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(300);
/// Within this time of a subscription's start, another one of the same consumer to the same
/// shard is refused; later, it takes over.
pub const SUBSCRIPTION_TAKEOVER_AFTER: Duration = Duration::from_secs(5);
/// The least time between two SubscribeToShard calls of one consumer for one shard.
pub const MIN_TIME_BETWEEN_SUBSCRIBES: Duration = Duration::from_secs(1);
/// How often an idle subscription sends an empty event.
pub const SUBSCRIPTION_HEARTBEAT: Duration = Duration::from_secs(5);
/// The most bytes of records (data plus partition keys) one event carries (at least one
/// record).
pub const MAX_EVENT_BYTES: usize = 2 << 20;
/// The most consumers a stream may have.
const MAX_CONSUMERS: usize = 20;

/// The fan-out part of the stream's state.
pub(super) struct FanOutState {
    /// By name.
    consumers: BTreeMap<String, Consumer>,
    /// The open subscription of each (consumer ARN, shard).
    active: BTreeMap<(String, String), Active>,
    /// When each (consumer ARN, shard) was last subscribed (the call-rate limit).
    last_call: BTreeMap<(String, String), Instant>,
    next_id: u64,
    activation_delay: Duration,
    lifetime: Duration,
    subscribe_calls: u64,
}

impl Default for FanOutState {
    fn default() -> Self {
        FanOutState {
            consumers: BTreeMap::new(),
            active: BTreeMap::new(),
            last_call: BTreeMap::new(),
            next_id: 0,
            activation_delay: DEFAULT_CONSUMER_ACTIVATION_DELAY,
            lifetime: SUBSCRIPTION_LIFETIME,
            subscribe_calls: 0,
        }
    }
}

struct Consumer {
    arn: String,
    registered: Instant,
}

#[derive(Clone, Copy)]
struct Active {
    id: u64,
    started: Instant,
}

impl FanOutState {
    fn status(&self, c: &Consumer) -> ConsumerStatus {
        if Instant::now() - c.registered >= self.activation_delay {
            ConsumerStatus::Active
        } else {
            ConsumerStatus::Creating
        }
    }

    fn describe(&self, name: &str, c: &Consumer) -> StreamConsumer {
        StreamConsumer {
            consumer_name: name.to_string(),
            consumer_arn: c.arn.clone(),
            status: self.status(c),
        }
    }

    fn by_arn(&self, arn: &str) -> Option<(&String, &Consumer)> {
        self.consumers.iter().find(|(_, c)| c.arn == arn)
    }
}

impl InMemoryStream {
    /// How long newly registered consumers stay `CREATING` (default
    /// [`DEFAULT_CONSUMER_ACTIVATION_DELAY`]).
    pub fn set_consumer_activation_delay(&self, delay: Duration) {
        self.state.lock().fan_out.activation_delay = delay;
    }

    /// How long new subscriptions last (default [`SUBSCRIPTION_LIFETIME`], as Kinesis).
    pub fn set_subscription_lifetime(&self, lifetime: Duration) {
        self.state.lock().fan_out.lifetime = lifetime;
    }

    /// Every registered consumer, by name.
    pub fn consumers(&self) -> Vec<StreamConsumer> {
        let s = self.state.lock();
        let f = &s.fan_out;
        f.consumers.iter().map(|(n, c)| f.describe(n, c)).collect()
    }

    /// Register a consumer named `name` as RegisterStreamConsumer does, without asking the
    /// fault injector (for tests and simulations acting as an operator).
    pub fn register_consumer(&self, name: &str) -> Result<StreamConsumer, RetrievalError> {
        self.register(name)
    }

    /// Deregister a consumer: its subscriptions fail with `ResourceNotFoundException` at
    /// their next event. False when there is none of that name.
    pub fn deregister_consumer(&self, name: &str) -> bool {
        let mut s = self.state.lock();
        let Some(c) = s.fan_out.consumers.remove(name) else {
            return false;
        };
        s.fan_out.active.retain(|(arn, _), _| *arn != c.arn);
        s.changed();
        true
    }

    /// How many SubscribeToShard calls were made (failed ones included, injected faults not).
    pub fn subscribe_calls(&self) -> u64 {
        self.state.lock().fan_out.subscribe_calls
    }

    /// The shards with an open subscription of the consumer `consumer_arn`.
    pub fn subscribed_shards(&self, consumer_arn: &str) -> Vec<String> {
        let s = self.state.lock();
        s.fan_out
            .active
            .keys()
            .filter(|(arn, _)| arn == consumer_arn)
            .map(|(_, shard)| shard.clone())
            .collect()
    }

    pub(super) fn consumer(&self, consumer: &ConsumerRef) -> Option<StreamConsumer> {
        let s = self.state.lock();
        let f = &s.fan_out;
        match consumer {
            ConsumerRef::Name(n) => f.consumers.get(n).map(|c| f.describe(n, c)),
            ConsumerRef::Arn(a) => f.by_arn(a).map(|(n, c)| f.describe(n, c)),
        }
    }

    pub(super) fn register(&self, name: &str) -> Result<StreamConsumer, RetrievalError> {
        let op = StreamOp::RegisterStreamConsumer;
        let mut s = self.state.lock();
        if s.fan_out.consumers.contains_key(name) {
            return Err(self.error(
                op,
                None,
                K::ResourceInUse,
                format!("consumer {name} exists"),
            ));
        }
        if s.fan_out.consumers.len() >= MAX_CONSUMERS {
            return Err(self.error(
                op,
                None,
                K::Throttled,
                format!("LimitExceededException: only {MAX_CONSUMERS} consumers per stream"),
            ));
        }
        let created = s
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let arn = format!("{}/consumer/{name}:{}", self.arn(), created.as_secs());
        let c = Consumer {
            arn,
            registered: Instant::now(),
        };
        let described = s.fan_out.describe(name, &c);
        s.fan_out.consumers.insert(name.to_string(), c);
        Ok(described)
    }

    pub(super) fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        let op = StreamOp::SubscribeToShard;
        let fail = |kind, msg: String| Err(self.error(op, Some(shard_id), kind, msg));
        let mut s = self.state.lock();
        let now = Instant::now();
        let key = (consumer_arn.to_string(), shard_id.to_string());
        s.fan_out.subscribe_calls += 1;
        if let Some(last) = s.fan_out.last_call.insert(key.clone(), now) {
            if now - last < MIN_TIME_BETWEEN_SUBSCRIBES {
                return fail(
                    K::Throttled,
                    format!("LimitExceededException: more than one SubscribeToShard per second for {shard_id}"),
                );
            }
        }
        let status = match s.fan_out.by_arn(consumer_arn) {
            None => {
                return fail(
                    K::ResourceNotFound,
                    format!("consumer {consumer_arn} not found"),
                )
            }
            Some((_, c)) => s.fan_out.status(c),
        };
        if status != ConsumerStatus::Active {
            return fail(
                K::ResourceInUse,
                format!("consumer {consumer_arn} is {status}"),
            );
        }
        let Some(sh) = s.shards.get(shard_id) else {
            return fail(K::ResourceNotFound, format!("shard {shard_id} not found"));
        };
        let from_seq = first_sequence(sh, s.next_seq, position)
            .map_err(|e| self.error(op, Some(shard_id), K::Fatal, e.to_string()))?;
        if let Some(a) = s.fan_out.active.get(&key) {
            if now - a.started < SUBSCRIPTION_TAKEOVER_AFTER {
                return fail(
                    K::ResourceInUse,
                    format!("another subscription of this consumer to {shard_id} is open"),
                );
            }
        }
        s.fan_out.next_id += 1;
        let id = s.fan_out.next_id;
        s.fan_out
            .active
            .insert(key.clone(), Active { id, started: now });
        let subscription = Subscription {
            stream: self.clone(),
            key,
            id,
            from_seq,
            expires: now + s.fan_out.lifetime,
            last_event: None,
            done: false,
            changes: s.changes.clone(),
        };
        drop(s);
        Ok(futures::stream::unfold(subscription, |mut sub| async move {
            let item = sub.next_event().await?;
            Some((item, sub))
        })
        .boxed())
    }
}

/// One open subscription (the state behind its event stream). Dropping it closes it.
struct Subscription {
    stream: InMemoryStream,
    /// (consumer ARN, shard).
    key: (String, String),
    id: u64,
    /// The next sequence number to send.
    from_seq: u128,
    expires: Instant,
    last_event: Option<Instant>,
    done: bool,
    changes: Arc<tokio::sync::Notify>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut s = self.stream.state.lock();
        if s.fan_out
            .active
            .get(&self.key)
            .is_some_and(|a| a.id == self.id)
        {
            s.fan_out.active.remove(&self.key);
        }
    }
}

/// What the shard has for a subscription now.
enum Ready {
    Event(SubscribeToShardEvent, u128, bool),
    Wait(Instant),
    Fail(K, String),
    Completed,
}

impl Subscription {
    fn shard(&self) -> &str {
        &self.key.1
    }

    fn error(&self, kind: K, message: String) -> RetrievalError {
        self.stream.error(
            StreamOp::SubscribeToShard,
            Some(self.shard()),
            kind,
            message,
        )
    }

    /// The next event, or `None` when the subscription completed (or failed before).
    async fn next_event(&mut self) -> Option<Result<SubscribeToShardEvent, RetrievalError>> {
        loop {
            if self.done {
                return None;
            }
            // Waiting from before the check: a change after it wakes the wait below.
            let changes = self.changes.clone();
            let changed = changes.notified();
            tokio::pin!(changed);
            let ready = {
                let mut s = self.stream.state.lock();
                self.ready(&mut s)
            };
            match ready {
                Ready::Completed => {
                    self.done = true;
                    return None;
                }
                Ready::Fail(kind, message) => {
                    self.done = true;
                    return Some(Err(self.error(kind, message)));
                }
                Ready::Wait(until) => {
                    tokio::select! {
                        biased;
                        _ = &mut changed => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
                Ready::Event(event, next_from, last) => {
                    if let Some(outcome) = self.inject().await {
                        return outcome;
                    }
                    // The fault may have waited: what is there may have changed.
                    if !self.still_current() {
                        continue;
                    }
                    self.from_seq = next_from;
                    self.last_event = Some(Instant::now());
                    self.done = last;
                    return Some(Ok(event));
                }
            }
        }
    }

    /// True while this is still the consumer's subscription to the shard, the shard and
    /// consumer exist and it has not expired (so an event prepared before an injected delay
    /// is still the one to send).
    fn still_current(&self) -> bool {
        let s = self.stream.state.lock();
        s.fan_out
            .active
            .get(&self.key)
            .is_some_and(|a| a.id == self.id)
            && s.shards.contains_key(self.shard())
            && Instant::now() < self.expires
    }

    /// Ask the fault injector about the event about to be sent: `Some` to send that instead.
    async fn inject(&mut self) -> Option<Option<Result<SubscribeToShardEvent, RetrievalError>>> {
        let injector = self.stream.state.lock().faults.clone();
        let fault =
            injector.and_then(|i| i.fault(StreamOp::SubscribeToShardEvent, Some(self.shard())));
        let fail = |this: &mut Self, kind, message: &str| {
            this.done = true;
            Some(Some(Err(this.error(kind, message.to_string()))))
        };
        match fault {
            None | Some(StreamFault::ExpireIterator) => None,
            Some(StreamFault::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(StreamFault::Reset) => fail(self, K::Retryable, "injected connection reset"),
            Some(StreamFault::Timeout) => fail(self, K::Retryable, "injected timeout"),
            Some(StreamFault::Throttle) => fail(self, K::Throttled, "injected throughput exceeded"),
            Some(StreamFault::LimitExceeded) => {
                fail(self, K::Throttled, "injected LimitExceededException")
            }
            Some(StreamFault::ResourceInUse) => {
                fail(self, K::ResourceInUse, "injected ResourceInUseException")
            }
            Some(StreamFault::AccessDenied) => {
                fail(self, K::Fatal, "injected AccessDeniedException")
            }
            Some(StreamFault::EndSubscription) => {
                self.done = true;
                Some(None)
            }
            Some(StreamFault::Silence) => std::future::pending().await,
        }
    }

    fn ready(&self, s: &mut State) -> Ready {
        let now = Instant::now();
        match s.fan_out.active.get(&self.key) {
            Some(a) if a.id == self.id => {}
            Some(_) => {
                return Ready::Fail(
                    K::ResourceInUse,
                    "a newer subscription of this consumer to the shard took over".into(),
                )
            }
            None if s.fan_out.by_arn(&self.key.0).is_none() => {
                return Ready::Fail(
                    K::ResourceNotFound,
                    format!("consumer {} not found", self.key.0),
                )
            }
            None => return Ready::Completed,
        }
        let Some(sh) = s.shards.get(self.shard()) else {
            return Ready::Fail(
                K::ResourceNotFound,
                format!("shard {} not found", self.shard()),
            );
        };
        if now >= self.expires {
            return Ready::Completed;
        }
        let first = sh.records.partition_point(|(seq, _)| *seq < self.from_seq);
        let mut bytes = 0;
        let taken: Vec<&(u128, Record)> = sh
            .records
            .range(first..)
            .take_while(|(_, r)| {
                let first_one = bytes == 0;
                bytes += record_bytes(r).max(1);
                first_one || bytes <= MAX_EVENT_BYTES
            })
            .collect();
        let at_end = first + taken.len() == sh.records.len();
        let closed = sh.shard.is_closed();
        let heartbeat_due = self
            .last_event
            .is_none_or(|t| now >= t + SUBSCRIPTION_HEARTBEAT);
        if taken.is_empty() && !(at_end && closed) && !heartbeat_due {
            let next = self
                .last_event
                .map_or(now, |t| t + SUBSCRIPTION_HEARTBEAT)
                .min(self.expires);
            return Ready::Wait(next);
        }
        let next_from = taken.last().map_or(self.from_seq, |(seq, _)| seq + 1);
        let last = at_end && closed;
        let continuation = if last {
            None
        } else {
            Some(continuation(sh, next_from).to_string())
        };
        let event = SubscribeToShardEvent {
            millis_behind_latest: Some(millis_behind(sh, taken.last().map(|(_, r)| r))),
            records: taken.into_iter().map(|(_, r)| r.clone()).collect(),
            continuation_sequence_number: continuation,
            child_shards: if last {
                sh.children.clone()
            } else {
                Vec::new()
            },
        };
        Ready::Event(event, next_from, last)
    }
}

/// The continuation sequence number before `next_from`: `AFTER_SEQUENCE_NUMBER` of it starts
/// at `next_from` and skips nothing of the shard (never below the shard's starting sequence
/// number, which no record of the shard has).
fn continuation(sh: &ShardState, next_from: u128) -> u128 {
    let start: u128 = sh.shard.starting_sequence_number.parse().unwrap_or(0);
    next_from.saturating_sub(1).max(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::{RetrievalFailure, StreamClient};
    use IteratorPosition::*;

    const S0: &str = "shardId-000000000000";

    async fn active_consumer(s: &InMemoryStream) -> String {
        s.set_consumer_activation_delay(Duration::ZERO);
        s.register_stream_consumer("app")
            .await
            .unwrap()
            .consumer_arn
    }

    fn seqs(e: &SubscribeToShardEvent) -> Vec<String> {
        e.records
            .iter()
            .map(|r| r.sequence_number.to_string())
            .collect()
    }

    async fn next(events: &mut SubscribeToShardEvents) -> SubscribeToShardEvent {
        events
            .next()
            .await
            .expect("an event")
            .expect("not an error")
    }

    #[tokio::test(start_paused = true)]
    async fn consumers_become_active_after_a_delay_and_names_are_unique() {
        let s = InMemoryStream::new("s", 1);
        let c = s.register_stream_consumer("app").await.unwrap();
        assert_eq!(c.status, ConsumerStatus::Creating);
        assert!(
            c.consumer_arn.contains(":stream/s/consumer/app:"),
            "{}",
            c.consumer_arn
        );
        let dup = s.register_stream_consumer("app").await.unwrap_err();
        assert_eq!(dup.failure, RetrievalFailure::ResourceInUse);
        let early = s
            .subscribe_to_shard(&c.consumer_arn, S0, &TrimHorizon)
            .await;
        assert_eq!(
            early.err().unwrap().failure,
            RetrievalFailure::ResourceInUse
        );
        tokio::time::advance(DEFAULT_CONSUMER_ACTIVATION_DELAY).await;
        let by_arn = ConsumerRef::Arn(c.consumer_arn.clone());
        let described = s.describe_stream_consumer(&by_arn).await.unwrap().unwrap();
        assert_eq!(described.status, ConsumerStatus::Active);
        assert_eq!(
            s.describe_stream_consumer(&ConsumerRef::Name("other".into()))
                .await
                .unwrap(),
            None
        );
        for i in 1..20 {
            s.register_stream_consumer(&format!("c{i}")).await.unwrap();
        }
        let over = s.register_stream_consumer("c20").await.unwrap_err();
        assert_eq!(over.failure, RetrievalFailure::Throttled);
    }

    /// Events push records as they arrive; continuation sequence numbers resume exactly; a
    /// subscription completes after its lifetime.
    #[tokio::test(start_paused = true)]
    async fn events_carry_records_and_continuations_that_resume_exactly() {
        let s = InMemoryStream::new("s", 1);
        let arn = active_consumer(&s).await;
        let put: Vec<String> = (0..3).map(|i| s.put("k", &[i]).1).collect();
        let mut events = s.subscribe_to_shard(&arn, S0, &TrimHorizon).await.unwrap();
        let first = next(&mut events).await;
        assert_eq!(seqs(&first), put);
        assert_eq!(first.continuation_sequence_number.as_ref(), Some(&put[2]));
        assert_eq!(first.millis_behind_latest, Some(0));
        // Nothing new: an empty event after the heartbeat, same continuation.
        let started = Instant::now();
        let idle = next(&mut events).await;
        assert_eq!(started.elapsed(), SUBSCRIPTION_HEARTBEAT);
        assert!(idle.records.is_empty());
        assert_eq!(idle.continuation_sequence_number.as_ref(), Some(&put[2]));
        tokio::time::advance(Duration::from_millis(10)).await;
        let late = s.put("k", b"late").1;
        let t = Instant::now();
        assert_eq!(seqs(&next(&mut events).await), std::slice::from_ref(&late));
        assert_eq!(t.elapsed(), Duration::ZERO, "pushed at once");
        // AFTER the continuation of an empty event on an empty shard skips nothing.
        let e = InMemoryStream::new("e", 1);
        let arn_e = active_consumer(&e).await;
        let mut ev = e
            .subscribe_to_shard(&arn_e, S0, &TrimHorizon)
            .await
            .unwrap();
        let empty = next(&mut ev).await;
        let c = empty.continuation_sequence_number.unwrap();
        drop(ev);
        let first_put = e.put("k", b"x").1;
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut ev = e
            .subscribe_to_shard(&arn_e, S0, &AfterSequenceNumber(c))
            .await
            .unwrap();
        assert_eq!(seqs(&next(&mut ev).await), [first_put]);
        // The lifetime ends the subscription.
        drop(events);
        tokio::time::advance(Duration::from_secs(1)).await;
        s.set_subscription_lifetime(Duration::from_secs(12));
        let mut events = s
            .subscribe_to_shard(&arn, S0, &AfterSequenceNumber(late))
            .await
            .unwrap();
        let t = Instant::now();
        while let Some(e) = events.next().await {
            assert!(e.unwrap().records.is_empty());
        }
        assert_eq!(t.elapsed(), Duration::from_secs(12));
    }

    /// One call per second; a second subscription within 5 s is refused, a later one takes
    /// over and the first fails; a deregistered consumer's subscription fails.
    #[tokio::test(start_paused = true)]
    async fn limits_takeover_and_deregistration() {
        let s = InMemoryStream::new("s", 2);
        let arn = active_consumer(&s).await;
        let mut first = s.subscribe_to_shard(&arn, S0, &Latest).await.unwrap();
        next(&mut first).await;
        let fast = s.subscribe_to_shard(&arn, S0, &Latest).await.err().unwrap();
        assert_eq!(fast.failure, RetrievalFailure::Throttled);
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = s.subscribe_to_shard(&arn, S0, &Latest).await.err().unwrap();
        assert_eq!(busy.failure, RetrievalFailure::ResourceInUse);
        tokio::time::advance(Duration::from_secs(4)).await;
        let _second = s.subscribe_to_shard(&arn, S0, &Latest).await.unwrap();
        let taken = first.next().await.unwrap().unwrap_err();
        assert_eq!(taken.failure, RetrievalFailure::ResourceInUse);
        assert!(first.next().await.is_none(), "nothing after an error");
        let mut other = s
            .subscribe_to_shard(&arn, "shardId-000000000001", &Latest)
            .await
            .unwrap();
        next(&mut other).await;
        assert_eq!(s.subscribed_shards(&arn).len(), 2);
        assert!(s.deregister_consumer("app"));
        let gone = other.next().await.unwrap().unwrap_err();
        assert_eq!(gone.failure, RetrievalFailure::ResourceNotFound);
        tokio::time::advance(Duration::from_secs(1)).await;
        let unknown = s.subscribe_to_shard(&arn, S0, &Latest).await.err().unwrap();
        assert_eq!(unknown.failure, RetrievalFailure::ResourceNotFound);
        assert_eq!(s.subscribe_calls(), 6);
    }

    /// A split while subscribed: the rest of the parent, then its last event with no
    /// continuation and both children; a merge ends both parents the same way.
    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_ends_with_its_children() {
        let s = InMemoryStream::new("s", 2);
        let arn = active_consumer(&s).await;
        let mut events = s.subscribe_to_shard(&arn, S0, &TrimHorizon).await.unwrap();
        assert!(next(&mut events).await.records.is_empty());
        let before = s.put_with_hash(1, "k", b"a").1;
        assert_eq!(seqs(&next(&mut events).await), [before]);
        let last = s.put_with_hash(2, "k", b"b").1;
        let (a, b) = s.split(S0, 1 << 100).unwrap();
        let end = next(&mut events).await;
        assert_eq!(seqs(&end), [last]);
        assert_eq!(end.continuation_sequence_number, None);
        let children: Vec<&str> = end
            .child_shards
            .iter()
            .map(|c| c.shard_id.as_str())
            .collect();
        assert_eq!(children, [a.as_str(), b.as_str()]);
        assert!(events.next().await.is_none());
        // Merge the two children: each ends with the one merged child.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut ea = s.subscribe_to_shard(&arn, &a, &TrimHorizon).await.unwrap();
        let child = s.merge(&a, &b).unwrap();
        let end = next(&mut ea).await;
        assert_eq!(end.continuation_sequence_number, None);
        assert_eq!(end.child_shards[0].shard_id, child);
        assert_eq!(end.child_shards[0].parent_shards, [a.clone(), b.clone()]);
    }

    /// The injector decides per event: a reset fails the subscription, silence stops it, an
    /// early end completes it; a trimmed-away shard fails with ResourceNotFound.
    #[tokio::test(start_paused = true)]
    async fn injected_event_faults_and_a_vanished_shard() {
        let s = InMemoryStream::new("s", 1);
        let arn = active_consumer(&s).await;
        let fault = Arc::new(crate::sync::Mutex::new(None::<StreamFault>));
        s.set_fault_injector(Some(Arc::new({
            let fault = fault.clone();
            move |op: StreamOp, _: Option<&str>| {
                (op == StreamOp::SubscribeToShardEvent)
                    .then(|| *fault.lock())
                    .flatten()
            }
        })));
        let subscribe = |s: InMemoryStream, arn: String| async move {
            tokio::time::advance(SUBSCRIPTION_TAKEOVER_AFTER).await;
            s.subscribe_to_shard(&arn, S0, &Latest).await.unwrap()
        };
        *fault.lock() = Some(StreamFault::Reset);
        let mut ev = subscribe(s.clone(), arn.clone()).await;
        assert_eq!(
            ev.next().await.unwrap().unwrap_err().failure,
            RetrievalFailure::Retryable
        );
        assert!(ev.next().await.is_none());
        *fault.lock() = Some(StreamFault::EndSubscription);
        let mut ev = subscribe(s.clone(), arn.clone()).await;
        assert!(ev.next().await.is_none());
        *fault.lock() = Some(StreamFault::Silence);
        let mut ev = subscribe(s.clone(), arn.clone()).await;
        s.put("k", b"never sent");
        assert!(
            tokio::time::timeout(Duration::from_secs(600), ev.next())
                .await
                .is_err(),
            "a silent subscription sends nothing"
        );
        drop(ev);
        *fault.lock() = None;
        let closed = InMemoryStream::new("c", 1);
        let arn_c = active_consumer(&closed).await;
        closed.split(S0, 5).unwrap();
        let mut ev = closed
            .subscribe_to_shard(&arn_c, S0, &TrimHorizon)
            .await
            .unwrap();
        assert!(closed.age_out(S0));
        assert_eq!(
            ev.next().await.unwrap().unwrap_err().failure,
            RetrievalFailure::ResourceNotFound
        );
    }
}
