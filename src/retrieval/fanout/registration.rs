//! The worker's enhanced fan-out consumer: found by name (registered when missing) or given
//! by ARN, and waited for until it is `ACTIVE`, as the Java KCL's `FanOutConsumerRegistration`.
//!
//! * By name: DescribeStreamConsumer; when there is none, RegisterStreamConsumer. Several
//!   workers may register at once: the losers get `ResourceInUseException` and describe
//!   again, finding the winner's consumer, after a pause of `retry_backoff` (0–10 % more, so
//!   that workers drift apart): a describe that keeps finding nothing while the registration
//!   keeps answering `ResourceInUseException` (eventual consistency) must not become a busy
//!   loop. Those pauses, and throttled or otherwise transient registrations, count against
//!   `register_stream_consumer_retries`.
//! * Then DescribeStreamConsumer (by ARN) every `retry_backoff` until the consumer is
//!   `ACTIVE`, at most `max_describe_stream_consumer_retries` times (skipped when it already
//!   was).
//! * By ARN (`consumer_arn` configured): the ARN must name a consumer of the stream read —
//!   the same partition, account, region and stream name as the stream's ARN
//!   ([`StreamClient::stream_arn`]) — then only the wait for `ACTIVE`. An ARN naming no
//!   consumer, or one of another stream, is an error that retrying does not fix.
//!
//! One registration per worker, shared by its shards: the first caller of
//! [`ConsumerRegistration::arn`] registers while the others wait, then all use the ARN. A
//! shard source that finds the consumer gone ([`ConsumerRegistration::forget`]) makes the
//! next caller find or register it again (by name), once for all the shards. A consumer
//! given by ARN that is gone is not replaced: that is
//! [`ConsumerRegistrationError::Deleted`]. Every error retrying cannot fix (that one, a
//! missing permission, an ARN of another stream) is kept: every later call returns it at
//! once, and [`ConsumerRegistration::failed`] reports it (the scheduler then stops the
//! worker). Consumers are never deregistered (as in the Java KCL): a restart or another
//! worker reuses them.

use crate::backoff::jitter_unit;
use crate::error::ErrorKind;
use crate::retrieval::{
    ConsumerRef, ConsumerStatus, RetrievalError, RetrievalFailure, StreamClient,
};
use crate::validation::{parse_consumer_arn, parse_stream_arn};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How patiently a consumer is registered and waited for (the Java KCL's `FanOutConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// DescribeStreamConsumer calls while waiting for `ACTIVE`.
    pub max_describe_stream_consumer_retries: u32,
    /// Retries of a throttled or failed RegisterStreamConsumer (also: describing again after
    /// `ResourceInUseException`).
    pub register_stream_consumer_retries: u32,
    /// The pause between those calls (a throttled call, or one after
    /// `ResourceInUseException`, waits 0–10 % longer).
    pub retry_backoff: Duration,
}

/// The stream consumer could not be found, registered or seen `ACTIVE`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerRegistrationError {
    /// A DescribeStreamConsumer or RegisterStreamConsumer call failed.
    #[error("cannot register or describe the stream consumer {consumer}: {source}")]
    Call {
        /// The consumer (name or ARN).
        consumer: String,
        /// The failed call.
        #[source]
        source: RetrievalError,
    },
    /// The consumer did not become `ACTIVE` in time.
    #[error(
        "the stream consumer {consumer} is still {status} after {checks} checks {backoff:?} apart"
    )]
    NotActive {
        /// The consumer's ARN.
        consumer: String,
        /// Its last status.
        status: ConsumerStatus,
        /// DescribeStreamConsumer calls made.
        checks: u32,
        /// Their spacing.
        backoff: Duration,
    },
    /// The configured consumer ARN names no consumer.
    #[error("no stream consumer has the ARN {0} (check the configured consumer ARN, or configure a name instead: it is registered when missing)")]
    NotFound(String),
    /// The consumer configured by ARN was deleted (or is being deleted) after the worker
    /// started using it. A consumer given by ARN is never registered again: the worker
    /// cannot read any more.
    #[error("the stream consumer {0} was deleted; a consumer configured by ARN is not registered again (register one and configure its ARN, or configure a consumer name instead: a named consumer is registered again when deleted)")]
    Deleted(String),
    /// The configured consumer ARN is a consumer of another stream than the one read: the
    /// same stream name in another account or region, say.
    #[error("the stream consumer {consumer} is not a consumer of the stream read, {stream}: the {mismatch} differs")]
    OtherStream {
        /// The configured consumer ARN.
        consumer: String,
        /// The ARN of the stream read.
        stream: String,
        /// The first part that differs (`partition`, `account`, `region`, `stream name`).
        mismatch: &'static str,
    },
}

impl ConsumerRegistrationError {
    /// Whether a later attempt may succeed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConsumerRegistrationError::Call { source, .. } => source.kind(),
            ConsumerRegistrationError::NotActive { .. } => ErrorKind::Retryable,
            ConsumerRegistrationError::NotFound(_)
            | ConsumerRegistrationError::Deleted(_)
            | ConsumerRegistrationError::OtherStream { .. } => ErrorKind::Fatal,
        }
    }
}

/// The worker's fan-out consumer (see the module docs).
#[derive(Debug)]
pub struct ConsumerRegistration {
    stream: Arc<dyn StreamClient>,
    consumer: ConsumerRef,
    policy: RegistrationPolicy,
    state: tokio::sync::Mutex<State>,
    /// The first error retrying cannot fix, once there was one.
    failed: watch::Sender<Option<ConsumerRegistrationError>>,
}

#[derive(Debug, Default)]
struct State {
    /// The `ACTIVE` consumer's ARN, while it is believed to exist.
    arn: Option<String>,
    /// An ARN was in use (so a configured ARN that names nothing now was deleted).
    used: bool,
}

impl ConsumerRegistration {
    /// The consumer `consumer` of `stream`'s stream.
    pub fn new(
        stream: Arc<dyn StreamClient>,
        consumer: ConsumerRef,
        policy: RegistrationPolicy,
    ) -> Self {
        ConsumerRegistration {
            stream,
            consumer,
            policy,
            state: tokio::sync::Mutex::new(State::default()),
            failed: watch::Sender::new(None),
        }
    }

    /// The ARN of the `ACTIVE` consumer, registering it first if needed (callers wait for
    /// the one registering). After an error retrying cannot fix, that error, at once.
    pub async fn arn(&self) -> Result<String, ConsumerRegistrationError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let mut state = self.state.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if let Some(a) = &state.arn {
            return Ok(a.clone());
        }
        match self.ensure_active().await {
            Ok(active) => {
                state.arn = Some(active.clone());
                state.used = true;
                Ok(active)
            }
            Err(e) if e.kind() == ErrorKind::Fatal => {
                let e = match e {
                    ConsumerRegistrationError::NotFound(arn) if state.used => {
                        ConsumerRegistrationError::Deleted(arn)
                    }
                    e => e,
                };
                tracing::error!(consumer = %self.consumer, error = %e, "the enhanced fan-out consumer cannot be used, and retrying does not help");
                self.failed.send_replace(Some(e.clone()));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The consumer `arn` is gone (a subscription found no such consumer): the next
    /// [`ConsumerRegistration::arn`] finds or registers it again.
    pub async fn forget(&self, arn: &str) {
        let mut state = self.state.lock().await;
        if state.arn.as_deref() == Some(arn) {
            state.arn = None;
        }
    }

    /// The error retrying cannot fix, if there was one.
    pub fn failure(&self) -> Option<ConsumerRegistrationError> {
        self.failed.borrow().clone()
    }

    /// Wait for an error retrying cannot fix (see [`ConsumerRegistration::failure`]).
    pub async fn failed(&self) -> ConsumerRegistrationError {
        let mut rx = self.failed.subscribe();
        let failed = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as self");
        failed.clone().expect("waited for Some")
    }

    fn call_error(&self, source: RetrievalError) -> ConsumerRegistrationError {
        ConsumerRegistrationError::Call {
            consumer: self.consumer.to_string(),
            source,
        }
    }

    /// The pause after a failed call: the backoff, plus up to 10 % when `jitter` (throttled,
    /// or racing other workers).
    async fn pause(&self, jitter: bool) {
        let extra = if jitter {
            self.policy.retry_backoff.mul_f64(0.1 * jitter_unit())
        } else {
            Duration::ZERO
        };
        tokio::time::sleep(self.policy.retry_backoff + extra).await;
    }

    /// A configured consumer ARN must name a consumer of the stream read (when the client
    /// knows the stream's ARN: a failure to look it up that retrying does not fix, such as a
    /// missing DescribeStreamSummary permission, skips the check with a warning).
    async fn check_stream(&self, arn: &str) -> Result<(), ConsumerRegistrationError> {
        let stream = match self.stream.stream_arn().await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Ok(()),
            Err(e) if e.kind().is_retryable() => return Err(self.call_error(e)),
            Err(e) => {
                tracing::warn!(consumer = arn, error = %e, "cannot look up the stream's ARN; not checking that the configured consumer ARN is of the same account and region");
                return Ok(());
            }
        };
        // Both were validated already (the configuration, the service): unparsable ones are
        // left to the service to refuse.
        let (Ok(consumer), Ok(parsed)) = (parse_consumer_arn(arn), parse_stream_arn(&stream))
        else {
            return Ok(());
        };
        match consumer.stream_mismatch(&parsed) {
            None => Ok(()),
            Some(mismatch) => Err(ConsumerRegistrationError::OtherStream {
                consumer: arn.to_string(),
                stream,
                mismatch,
            }),
        }
    }

    async fn ensure_active(&self) -> Result<String, ConsumerRegistrationError> {
        let name = match &self.consumer {
            ConsumerRef::Arn(arn) => {
                self.check_stream(arn).await?;
                return self.wait_until_active(arn).await;
            }
            ConsumerRef::Name(name) => name.clone(),
        };
        let (mut registers, mut describes) = (0u32, 0u32);
        loop {
            let described = match self.stream.describe_stream_consumer(&self.consumer).await {
                Ok(d) => d,
                Err(e)
                    if e.kind().is_retryable()
                        && describes < self.policy.max_describe_stream_consumer_retries =>
                {
                    describes += 1;
                    tracing::warn!(consumer = %name, error = %e, "cannot describe the stream consumer; retrying");
                    self.pause(e.failure == RetrievalFailure::Throttled).await;
                    continue;
                }
                Err(e) => return Err(self.call_error(e)),
            };
            match described {
                Some(c) if c.status == ConsumerStatus::Active => {
                    tracing::info!(consumer = %name, arn = %c.consumer_arn, "using the stream consumer");
                    return Ok(c.consumer_arn);
                }
                Some(c) if c.status == ConsumerStatus::Creating => {
                    return self.wait_until_active(&c.consumer_arn).await;
                }
                Some(c) => {
                    // Being deleted: register it again once it is gone.
                    describes += 1;
                    if describes > self.policy.max_describe_stream_consumer_retries {
                        return Err(ConsumerRegistrationError::NotActive {
                            consumer: c.consumer_arn,
                            status: c.status,
                            checks: describes,
                            backoff: self.policy.retry_backoff,
                        });
                    }
                    tracing::info!(consumer = %name, status = %c.status, "the stream consumer is being deleted; registering it again once it is gone");
                    self.pause(false).await;
                }
                None => match self.stream.register_stream_consumer(&name).await {
                    Ok(c) => {
                        tracing::info!(consumer = %name, arn = %c.consumer_arn, "registered the stream consumer (enhanced fan-out); waiting until it is ACTIVE");
                        if c.status == ConsumerStatus::Active {
                            return Ok(c.consumer_arn);
                        }
                        return self.wait_until_active(&c.consumer_arn).await;
                    }
                    Err(e)
                        if e.kind().is_retryable()
                            && registers < self.policy.register_stream_consumer_retries =>
                    {
                        registers += 1;
                        if e.failure == RetrievalFailure::ResourceInUse {
                            // Registered meanwhile (another worker), though the describe did
                            // not see it yet: describe again, after a pause (not at once: a
                            // describe that keeps lagging would make this a busy loop).
                            tracing::debug!(consumer = %name, attempt = registers, "the stream consumer exists already (another worker registered it?); describing it again after a pause");
                        } else {
                            tracing::warn!(consumer = %name, error = %e, attempt = registers, "cannot register the stream consumer; retrying");
                        }
                        self.pause(matches!(
                            e.failure,
                            RetrievalFailure::Throttled | RetrievalFailure::ResourceInUse
                        ))
                        .await;
                    }
                    Err(e) => return Err(self.call_error(e)),
                },
            }
        }
    }

    async fn wait_until_active(&self, arn: &str) -> Result<String, ConsumerRegistrationError> {
        let by_arn = ConsumerRef::Arn(arn.to_string());
        let configured = matches!(self.consumer, ConsumerRef::Arn(_));
        let mut status = ConsumerStatus::Creating;
        let mut checks = 0;
        loop {
            match self.stream.describe_stream_consumer(&by_arn).await {
                Ok(Some(c)) if c.status == ConsumerStatus::Active => {
                    if checks > 0 {
                        tracing::info!(arn, "the stream consumer is ACTIVE");
                    }
                    return Ok(c.consumer_arn);
                }
                // A configured ARN being deleted never becomes usable again.
                Ok(Some(c)) if configured && c.status == ConsumerStatus::Deleting => {
                    return Err(ConsumerRegistrationError::Deleted(arn.to_string()))
                }
                Ok(Some(c)) => status = c.status,
                // Just registered: not visible everywhere yet. A configured ARN: wrong, or
                // deleted.
                Ok(None) if configured => {
                    return Err(ConsumerRegistrationError::NotFound(arn.to_string()))
                }
                Ok(None) => {}
                Err(e) if e.kind().is_retryable() => {
                    tracing::debug!(arn, error = %e, "cannot describe the stream consumer; retrying");
                }
                Err(e) => return Err(self.call_error(e)),
            }
            checks += 1;
            if checks > self.policy.max_describe_stream_consumer_retries {
                return Err(ConsumerRegistrationError::NotActive {
                    consumer: arn.to_string(),
                    status,
                    checks,
                    backoff: self.policy.retry_backoff,
                });
            }
            self.pause(false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::InMemoryStream;
    use crate::testing::stream::{StreamFault, StreamOp};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            max_describe_stream_consumer_retries: 10,
            register_stream_consumer_retries: 10,
            retry_backoff: Duration::from_secs(1),
        }
    }

    fn registration(stream: &InMemoryStream, consumer: ConsumerRef) -> ConsumerRegistration {
        ConsumerRegistration::new(Arc::new(stream.clone()), consumer, policy())
    }

    /// Five workers register the same name at once: one consumer, every worker gets its ARN
    /// once it is ACTIVE; a second call asks nothing more.
    #[tokio::test(start_paused = true)]
    async fn concurrent_workers_register_one_consumer_and_wait_until_active() {
        let stream = InMemoryStream::new("s", 1);
        let started = tokio::time::Instant::now();
        let workers: Vec<ConsumerRegistration> = (0..5)
            .map(|_| registration(&stream, ConsumerRef::Name("app".into())))
            .collect();
        let arns = futures::future::join_all(workers.iter().map(|w| w.arn())).await;
        let consumers = stream.consumers();
        assert_eq!(consumers.len(), 1);
        assert_eq!(consumers[0].status, ConsumerStatus::Active);
        for arn in arns {
            assert_eq!(arn.unwrap(), consumers[0].consumer_arn);
        }
        assert!(started.elapsed() >= crate::testing::stream::DEFAULT_CONSUMER_ACTIVATION_DELAY);
        // Registered already: the next worker describes it and is done at once.
        let t = tokio::time::Instant::now();
        let late = registration(&stream, ConsumerRef::Name("app".into()));
        assert_eq!(late.arn().await.unwrap(), consumers[0].consumer_arn);
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    /// Throttled registrations are retried; a configured ARN that names nothing is fatal.
    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_and_an_unknown_arn_is_fatal() {
        let stream = InMemoryStream::new("s", 1);
        let calls = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(Arc::new({
            let calls = calls.clone();
            move |op: StreamOp, _: Option<&str>| {
                (op == StreamOp::RegisterStreamConsumer && calls.fetch_add(1, Ordering::SeqCst) < 3)
                    .then_some(StreamFault::LimitExceeded)
            }
        })));
        let r = registration(&stream, ConsumerRef::Name("app".into()));
        let arn = r.arn().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(stream.consumers()[0].consumer_arn, arn);
        let wrong = registration(&stream, ConsumerRef::Arn(format!("{arn}-nope")));
        let err = wrong.arn().await.unwrap_err();
        assert!(
            matches!(err, ConsumerRegistrationError::NotFound(_)),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Fatal);
    }

    /// RegisterStreamConsumer answering ResourceInUse while DescribeStreamConsumer finds no
    /// consumer (an eventually consistent describe, or another worker's registration not yet
    /// visible) is retried after a pause, not at once: in 60 s of such answers the calls are
    /// bounded by the backoff (one per second), not a busy loop.
    #[tokio::test(start_paused = true)]
    async fn resource_in_use_on_registration_is_retried_after_a_pause() {
        let stream = InMemoryStream::new("s", 1);
        let start = tokio::time::Instant::now();
        let span = Duration::from_secs(60);
        let (registers, describes) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        // At most this many refusals: without a backoff the loop never lets paused time move.
        const CAP: u32 = 10_000;
        stream.set_fault_injector(Some(Arc::new({
            let (registers, describes) = (registers.clone(), describes.clone());
            move |op: StreamOp, _: Option<&str>| match op {
                StreamOp::RegisterStreamConsumer => {
                    let n = registers.fetch_add(1, Ordering::SeqCst);
                    (n < CAP && tokio::time::Instant::now() < start + span)
                        .then_some(StreamFault::ResourceInUse)
                }
                StreamOp::DescribeStreamConsumer => {
                    describes.fetch_add(1, Ordering::SeqCst);
                    None
                }
                _ => None,
            }
        })));
        let r = ConsumerRegistration::new(
            Arc::new(stream.clone()),
            ConsumerRef::Name("app".into()),
            RegistrationPolicy {
                register_stream_consumer_retries: 1000,
                ..policy()
            },
        );
        let _ = tokio::time::timeout(span, r.arn()).await;
        let (registers, describes) = (
            registers.load(Ordering::SeqCst),
            describes.load(Ordering::SeqCst),
        );
        // One call per `retry_backoff` (1 s, up to 10 % more), and the first at once.
        assert!(
            (50..=61).contains(&registers),
            "{registers} RegisterStreamConsumer calls in {span:?}"
        );
        assert!(describes <= registers + 1, "{describes} describes");
    }

    /// A consumer given by ARN that is deleted after it was used is a lasting fatal error
    /// saying so: every later call gets it at once, without asking the service again.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_consumer_given_by_arn_is_a_lasting_fatal_error() {
        let stream = InMemoryStream::new("s", 1);
        let arn = registration(&stream, ConsumerRef::Name("ext".into()))
            .arn()
            .await
            .unwrap();
        let describes = stream.count_calls(StreamOp::DescribeStreamConsumer);
        let r = registration(&stream, ConsumerRef::Arn(arn.clone()));
        assert_eq!(r.arn().await.unwrap(), arn);
        assert!(stream.deregister_consumer("ext"));
        r.forget(&arn).await;
        let err = r.arn().await.unwrap_err();
        assert!(
            matches!(&err, ConsumerRegistrationError::Deleted(a) if *a == arn),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("{arn} was deleted")),
            "{err}"
        );
        assert!(r.failure().is_some());
        assert_eq!(err.kind(), ErrorKind::Fatal);
        let asked = describes.load(Ordering::SeqCst);
        let again = r.arn().await.unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
        assert_eq!(describes.load(Ordering::SeqCst), asked, "not asked again");
        assert_eq!(stream.consumers().len(), 0, "never registered again");
    }

    /// The in-memory stream, except that looking up the stream's ARN is refused (a missing
    /// DescribeStreamSummary permission).
    #[derive(Debug)]
    struct NoStreamArn(InMemoryStream);

    #[async_trait::async_trait]
    impl StreamClient for NoStreamArn {
        fn stream_name(&self) -> &str {
            self.0.stream_name()
        }
        async fn stream_arn(&self) -> Result<Option<String>, RetrievalError> {
            Err(RetrievalError::new(
                RetrievalFailure::Fatal,
                StreamOp::DescribeStreamConsumer,
                "s",
                None,
                crate::error::Cause::simulated(ErrorKind::Fatal, "AccessDeniedException"),
            ))
        }
        async fn list_shards(&self) -> Result<Vec<crate::retrieval::Shard>, RetrievalError> {
            self.0.list_shards().await
        }
        async fn get_shard_iterator(
            &self,
            shard_id: &str,
            position: &crate::retrieval::IteratorPosition,
        ) -> Result<Option<String>, RetrievalError> {
            self.0.get_shard_iterator(shard_id, position).await
        }
        async fn get_records(
            &self,
            shard_id: &str,
            iterator: &str,
            limit: u32,
        ) -> Result<crate::retrieval::RecordBatch, RetrievalError> {
            self.0.get_records(shard_id, iterator, limit).await
        }
        async fn describe_stream_consumer(
            &self,
            consumer: &ConsumerRef,
        ) -> Result<Option<crate::retrieval::StreamConsumer>, RetrievalError> {
            self.0.describe_stream_consumer(consumer).await
        }
    }

    /// A configured consumer ARN is checked against the stream's ARN when the client can
    /// look it up; when that is refused for good, the check is skipped (the consumer is
    /// used), not made a new reason to fail.
    #[tokio::test(start_paused = true)]
    async fn the_stream_check_is_skipped_when_the_stream_arn_cannot_be_looked_up() {
        let stream = InMemoryStream::new("s", 1);
        let arn = registration(&stream, ConsumerRef::Name("ext".into()))
            .arn()
            .await
            .unwrap();
        let other = arn.replace(":us-east-1:", ":eu-west-1:");
        let err = registration(&stream, ConsumerRef::Arn(other.clone()))
            .arn()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerRegistrationError::OtherStream {
                    mismatch: "region",
                    ..
                }
            ),
            "{err}"
        );
        let unchecked = |consumer| {
            ConsumerRegistration::new(Arc::new(NoStreamArn(stream.clone())), consumer, policy())
        };
        let r = unchecked(ConsumerRef::Arn(arn.clone()));
        assert_eq!(r.arn().await.unwrap(), arn);
        // Unchecked, the other region's ARN is left to the service (here: not found).
        let err = unchecked(ConsumerRef::Arn(other)).arn().await.unwrap_err();
        assert!(
            matches!(err, ConsumerRegistrationError::NotFound(_)),
            "{err}"
        );
    }

    /// A consumer that never becomes ACTIVE within the describe retries is a retryable error
    /// naming its status; forgetting the ARN makes the next call register again.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_active_is_bounded_and_forget_registers_again() {
        let stream = InMemoryStream::new("s", 1);
        stream.set_consumer_activation_delay(Duration::from_secs(3600));
        let r = registration(&stream, ConsumerRef::Name("app".into()));
        let err = r.arn().await.unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerRegistrationError::NotActive {
                    status: ConsumerStatus::Creating,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Retryable);
        stream.set_consumer_activation_delay(Duration::ZERO);
        let first = r.arn().await.unwrap();
        assert!(stream.deregister_consumer("app"));
        r.forget(&first).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        let second = r.arn().await.unwrap();
        assert_eq!(stream.consumers().len(), 1);
        assert_eq!(stream.consumers()[0].consumer_arn, second);
    }
}
