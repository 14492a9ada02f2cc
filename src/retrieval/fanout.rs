//! Enhanced fan-out retrieval: one shard's records pushed by SubscribeToShard, behind a
//! [`RecordSource`] like the polling fetcher (see [`super::source`] for what every source
//! shares: the byte bounds, the hand-off, filtering, shard end, resume positions).
//!
//! * The first subscription starts at the checkpoint (`AT_SEQUENCE_NUMBER`, the checkpointed
//!   record filtered out as in polling) or at the initial position; every later one starts
//!   `AFTER_SEQUENCE_NUMBER` of the continuation sequence number of the last event delivered,
//!   so nothing is skipped or repeated across subscriptions. A source that started at
//!   `LATEST` and must subscribe again before its first event resumes at `AT_TIMESTAMP` of its
//!   first request, never at a new `LATEST`.
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
//!   it ended with no children; otherwise the consumer was deregistered, and it is found or
//!   registered again ([`ConsumerRegistration`]) before the next subscription. (The Java KCL
//!   ends the shard in both cases, which skips the rest of it when the consumer was deleted.)
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

    async fn run(self) {
        let mut backoff = Backoff::new(RESUBSCRIBE_BACKOFF_BASE, RESUBSCRIBE_BACKOFF_MAX);
        let mut last_subscribe: Option<Instant> = None;
        let (mut failures, mut unconfirmed_ends) = (0u32, 0u32);
        loop {
            let arn = match self.registration.arn().await {
                Ok(arn) => arn,
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
            if position == IteratorPosition::Latest {
                self.sink.note_latest_requested(self.stream.now());
            }
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
                    if e.failure == RetrievalFailure::ResourceNotFound
                        && self.shard_gone(&arn, &e).await
                    {
                        return;
                    }
                    failures += 1;
                    let delay = backoff.next().unwrap_or(RESUBSCRIBE_BACKOFF_MAX);
                    self.log_failure(failures, delay, &describe_failure(&e));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Deliver the events of one subscription until it ends.
    async fn consume(
        &self,
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
                let last = event.records.last().map(|r| r.sequence_number.clone());
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

    /// After `ResourceNotFoundException`: true (and the shard's end delivered) when the shard
    /// no longer exists; otherwise the consumer is gone and will be registered again.
    async fn shard_gone(&self, arn: &str, e: &RetrievalError) -> bool {
        match self
            .stream
            .get_shard_iterator(self.shard(), &IteratorPosition::TrimHorizon)
            .await
        {
            Ok(None) => {
                tracing::warn!(shard_id = self.shard(), error = %e, "shard no longer exists; treating it as ended with no children");
                self.sink.shard_gone().await;
                true
            }
            Ok(Some(_)) => {
                tracing::warn!(shard_id = self.shard(), consumer_arn = arn, error = %e, "the shard exists but the fan-out consumer does not (deregistered?); registering it again");
                self.registration.forget(arn).await;
                false
            }
            Err(check) => {
                tracing::debug!(shard_id = self.shard(), error = %check, "cannot tell whether the shard still exists; subscribing again");
                false
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
