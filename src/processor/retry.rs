//! When a failing batch stops being redelivered: the [`RetryPolicy`], and what the processor's
//! [`retries_exhausted`](super::RecordProcessor::retries_exhausted) hook is told and decides.

use crate::record::Records;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

/// How long a failing batch is redelivered before the processor is asked what to do with it
/// ([`RecordProcessor::retries_exhausted`](super::RecordProcessor::retries_exhausted)).
///
/// The default has no limit: a failing batch is redelivered until it succeeds. With a limit,
/// when a redelivery is due and the batch was already delivered `max_attempts` times, or its
/// first record is older than `max_record_age`, the hook is called (once for those records)
/// and decides: skip them (e.g. after writing them to a dead-letter queue) or keep retrying.
/// Records are never skipped without the hook's consent. The limits apply only to batches
/// that failed at least once (a slow consumer's first delivery of an old record is not
/// skipped), and count a processor restart ([`RestartShard`](super::RestartShard) or a
/// panic) on the same records as a failed delivery.
///
/// Attempts are counted by this worker: a shard that moves to another worker starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    max_attempts: Option<u32>,
    max_record_age: Option<Duration>,
}

impl RetryPolicy {
    /// No limit: redeliver until the batch succeeds (the default).
    pub const UNLIMITED: RetryPolicy = RetryPolicy {
        max_attempts: None,
        max_record_age: None,
    };

    /// Ask the hook once the records were delivered `attempts` times (the first delivery
    /// included; at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Ask the hook once the first record of the failing batch is older than `age` (by its
    /// approximate arrival time on the stream's clock).
    pub fn with_max_record_age(mut self, age: Duration) -> Self {
        self.max_record_age = Some(age);
        self
    }

    /// The attempt limit, if any.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The record age limit, if any.
    pub fn max_record_age(&self) -> Option<Duration> {
        self.max_record_age
    }

    /// True when the policy never gives up.
    pub fn is_unlimited(&self) -> bool {
        self.max_attempts.is_none() && self.max_record_age.is_none()
    }

    /// Whether records delivered `attempts` times, the oldest `age` old (if known), have
    /// exhausted the policy.
    pub fn is_exhausted(&self, attempts: u32, age: Option<Duration>) -> bool {
        self.max_attempts.is_some_and(|max| attempts >= max)
            || matches!((self.max_record_age, age), (Some(max), Some(age)) if age >= max)
    }
}

/// What [`RecordProcessor::retries_exhausted`](super::RecordProcessor::retries_exhausted) is
/// told: records that failed as often, or as long, as the [`RetryPolicy`] allows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetriesExhausted {
    /// The shard.
    pub shard_id: String,
    /// The records that keep failing (the rest of the batch, after any partial progress), in
    /// order. Skipping skips exactly these.
    pub records: Records,
    /// How many times they were delivered (restarts of the processor on them included).
    pub attempts: u32,
    /// How old the first of them is, if Kinesis reported its arrival time.
    pub age: Option<Duration>,
    /// The last failure, typed: the error `process_records` returned (its
    /// [`ProcessorError::into_error`](super::ProcessorError::into_error), so
    /// `last_error.downcast_ref::<MyError>()` finds the application's own error type), or a
    /// [`ProcessorPanicked`] when the processor panicked on these records.
    pub last_error: SharedError,
}

/// An error shared between the shard's redelivery state and the
/// [`retries_exhausted`](super::RecordProcessor::retries_exhausted) hook.
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// The record processor panicked on the records (the panic was contained to its shard, which
/// restarted from its last checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record processor panicked: {message}")]
#[non_exhaustive]
pub struct ProcessorPanicked {
    /// The panic's message (its payload, when that is a string).
    pub message: String,
}

impl ProcessorPanicked {
    /// A panic with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ProcessorPanicked {
            message: message.into(),
        }
    }
}

/// What to do with records whose retries are exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryDecision {
    /// Skip them: they count as processed (the processor has taken care of them, e.g. written
    /// them to a dead-letter queue). The skip is logged (shard, sequence numbers) and counted
    /// ([`SchedulerHandle::skipped_records`](crate::SchedulerHandle::skipped_records)).
    Skip,
    /// Keep redelivering them until they succeed; the hook is not asked again for them.
    KeepRetrying,
}

/// What a processor without a `retries_exhausted` hook does: log, and keep retrying.
pub(crate) fn keep_retrying(failure: &RetriesExhausted) -> RetryDecision {
    tracing::warn!(
        attempts = failure.attempts,
        records = failure.records.len(),
        last_error = %format!("{:#}", failure.last_error),
        "retry policy exhausted, but the record processor has no retries_exhausted hook to skip (dead-letter) the records; redelivering them"
    );
    RetryDecision::KeepRetrying
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_by_attempts_or_age() {
        let unlimited = RetryPolicy::default();
        assert!(unlimited.is_unlimited());
        assert!(!unlimited.is_exhausted(u32::MAX, Some(Duration::MAX)));
        let p = RetryPolicy::default()
            .with_max_attempts(3)
            .with_max_record_age(Duration::from_secs(60));
        assert!(!p.is_exhausted(2, Some(Duration::from_secs(59))));
        assert!(!p.is_exhausted(2, None));
        assert!(p.is_exhausted(3, None));
        assert!(p.is_exhausted(1, Some(Duration::from_secs(60))));
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            Some(1)
        );
    }
}
