//! The worker's enhanced fan-out consumer: found by name (registered when missing) or given
//! by ARN, and waited for until it is `ACTIVE`, as the Java KCL's `FanOutConsumerRegistration`.
//!
//! * By name: DescribeStreamConsumer; when there is none, RegisterStreamConsumer. Several
//!   workers may register at once: the losers get `ResourceInUseException` and describe
//!   again, finding the winner's consumer. A throttled or otherwise transient registration is
//!   retried up to `register_stream_consumer_retries` times.
//! * Then DescribeStreamConsumer (by ARN) every `retry_backoff` until the consumer is
//!   `ACTIVE`, at most `max_describe_stream_consumer_retries` times (skipped when it already
//!   was).
//! * By ARN (`consumer_arn` configured): only the wait for `ACTIVE`; an ARN naming no
//!   consumer is an error that retrying does not fix.
//!
//! One registration per worker, shared by its shards: the first caller of
//! [`ConsumerRegistration::arn`] registers while the others wait, then all use the ARN. A
//! shard source that finds the consumer gone ([`ConsumerRegistration::forget`]) makes the
//! next caller register it again. Consumers are never deregistered (as in the Java KCL): a
//! restart or another worker reuses them.

use crate::backoff::jitter_unit;
use crate::error::ErrorKind;
use crate::retrieval::{
    ConsumerRef, ConsumerStatus, RetrievalError, RetrievalFailure, StreamClient,
};
use std::sync::Arc;
use std::time::Duration;

/// How patiently a consumer is registered and waited for (the Java KCL's `FanOutConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// DescribeStreamConsumer calls while waiting for `ACTIVE`.
    pub max_describe_stream_consumer_retries: u32,
    /// Retries of a throttled or failed RegisterStreamConsumer.
    pub register_stream_consumer_retries: u32,
    /// The pause between those calls (a throttled call waits 0–10 % longer).
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
}

impl ConsumerRegistrationError {
    /// Whether a later attempt may succeed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConsumerRegistrationError::Call { source, .. } => source.kind(),
            ConsumerRegistrationError::NotActive { .. } => ErrorKind::Retryable,
            ConsumerRegistrationError::NotFound(_) => ErrorKind::Fatal,
        }
    }
}

/// The worker's fan-out consumer (see the module docs).
#[derive(Debug)]
pub struct ConsumerRegistration {
    stream: Arc<dyn StreamClient>,
    consumer: ConsumerRef,
    policy: RegistrationPolicy,
    arn: tokio::sync::Mutex<Option<String>>,
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
            arn: tokio::sync::Mutex::new(None),
        }
    }

    /// The ARN of the `ACTIVE` consumer, registering it first if needed (callers wait for
    /// the one registering).
    pub async fn arn(&self) -> Result<String, ConsumerRegistrationError> {
        let mut arn = self.arn.lock().await;
        if let Some(a) = &*arn {
            return Ok(a.clone());
        }
        let active = self.ensure_active().await?;
        *arn = Some(active.clone());
        Ok(active)
    }

    /// The consumer `arn` is gone (a subscription found no such consumer): the next
    /// [`ConsumerRegistration::arn`] finds or registers it again.
    pub async fn forget(&self, arn: &str) {
        let mut current = self.arn.lock().await;
        if current.as_deref() == Some(arn) {
            *current = None;
        }
    }

    fn call_error(&self, source: RetrievalError) -> ConsumerRegistrationError {
        ConsumerRegistrationError::Call {
            consumer: self.consumer.to_string(),
            source,
        }
    }

    /// The pause after a failed call: the backoff, plus up to 10 % when throttled.
    async fn pause(&self, throttled: bool) {
        let extra = if throttled {
            self.policy.retry_backoff.mul_f64(0.1 * jitter_unit())
        } else {
            Duration::ZERO
        };
        tokio::time::sleep(self.policy.retry_backoff + extra).await;
    }

    async fn ensure_active(&self) -> Result<String, ConsumerRegistrationError> {
        let name = match &self.consumer {
            ConsumerRef::Arn(arn) => return self.wait_until_active(arn).await,
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
                    Err(e) if e.failure == RetrievalFailure::ResourceInUse => {
                        tracing::debug!(consumer = %name, "another worker registered the stream consumer meanwhile; describing it");
                    }
                    Err(e)
                        if e.kind().is_retryable()
                            && registers < self.policy.register_stream_consumer_retries =>
                    {
                        registers += 1;
                        tracing::warn!(consumer = %name, error = %e, attempt = registers, "cannot register the stream consumer; retrying");
                        self.pause(e.failure == RetrievalFailure::Throttled).await;
                    }
                    Err(e) => return Err(self.call_error(e)),
                },
            }
        }
    }

    async fn wait_until_active(&self, arn: &str) -> Result<String, ConsumerRegistrationError> {
        let by_arn = ConsumerRef::Arn(arn.to_string());
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
                Ok(Some(c)) => status = c.status,
                // Just registered: not visible everywhere yet. A configured ARN: wrong.
                Ok(None) if matches!(self.consumer, ConsumerRef::Arn(_)) => {
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
    use crate::retrieval::memory::{StreamFault, StreamOp};
    use crate::retrieval::InMemoryStream;
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
        assert!(started.elapsed() >= crate::retrieval::memory::DEFAULT_CONSUMER_ACTIVATION_DELAY);
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
