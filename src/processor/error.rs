//! [`ProcessorError`]: what a processor call returns when it fails, and what happens next.

use crate::checkpoint::ExtendedSequenceNumber;
use crate::record::Record;
use std::error::Error as StdError;
use std::fmt;

/// Any error, boxed (what [`ProcessorError`] wraps).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Ask for a restart of the shard: the processor is dropped and the shard restarts with a new
/// one from its last checkpoint, after a backoff.
///
/// Use it when the processor's own state is broken (e.g. the MultiLangDaemon's child process
/// died): records delivered since the last checkpoint are delivered again, to the new
/// processor. Return it as `Err(RestartShard(..).into())` or with
/// [`ProcessorError::restart_shard`]; it may also arrive through `?` wrapped in other errors
/// (e.g. `anyhow::Context`): any `RestartShard` in an error's [`source`](StdError::source)
/// chain restarts the shard. (An `anyhow::Error` made directly from a `RestartShard`, without
/// context, hides it from that chain: use `ProcessorError::restart_shard` there.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart the shard from its last checkpoint: {0}")]
pub struct RestartShard(pub String);

/// What happens after a failed processor call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnError {
    /// Call again (`process_records`: deliver the batch again) after a backoff.
    Retry,
    /// Drop the processor and restart the shard from its last checkpoint ([`RestartShard`]).
    RestartShard,
}

/// The error a processor call returns: an error, and what the library does about it
/// ([`OnError`]), which the error carries as a value (no downcast at the receiving end).
///
/// `?` converts any error into it (`std::error::Error + Send + Sync`, `anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`, `String`, `&str`): such an error is retried, unless a
/// [`RestartShard`] is in its source chain. Like `anyhow::Error`, it is not itself a
/// `std::error::Error` (that is what lets `?` convert everything into it); use
/// [`into_error`](Self::into_error) to pass it on as one.
pub struct ProcessorError {
    on_error: OnError,
    done_through: Option<ExtendedSequenceNumber>,
    error: BoxError,
}

impl ProcessorError {
    /// `error`, retried (or, if a [`RestartShard`] is in its source chain, a restart).
    pub fn new(error: impl Into<BoxError>) -> Self {
        let error = error.into();
        let on_error = if chain_has_restart(error.as_ref()) {
            OnError::RestartShard
        } else {
            OnError::Retry
        };
        ProcessorError {
            on_error,
            done_through: None,
            error,
        }
    }

    /// Restart the shard from its last checkpoint with a new processor, because of `reason`.
    pub fn restart_shard(reason: impl Into<BoxError>) -> Self {
        ProcessorError {
            on_error: OnError::RestartShard,
            done_through: None,
            error: reason.into(),
        }
    }

    /// Partial progress: the records of the failed batch up to and including `record` are
    /// done (as if the batch had succeeded that far), so only those after it are delivered
    /// again, as Lambda's batch item failures do. Nothing is written to the lease table: the
    /// processor's next checkpoint (or the default `shutdown`'s) may cover them. The
    /// redelivery counts as attempt 2 of the records after `record` (this failure stopped at
    /// them). A `record` at or after the end of the batch makes the batch done (the error is
    /// logged); one before the batch changes nothing. Ignored for a restart, which starts
    /// from the last checkpoint.
    ///
    /// ```
    /// # use kinesis_client::{Checkpointer, ProcessRecordsInput, ProcessorError};
    /// # async fn send(_: &[u8]) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn process_records(input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
    /// for (i, r) in input.records.iter().enumerate() {
    ///     if let Err(e) = send(&r.data).await {
    ///         let error = ProcessorError::new(e);
    ///         return Err(match i {
    ///             0 => error,
    ///             _ => error.done_through(&input.records[i - 1]),
    ///         });
    ///     }
    /// }
    /// Ok(cp.checkpoint().await?)
    /// # }
    /// ```
    pub fn done_through(mut self, record: &Record) -> Self {
        self.done_through = Some(record.extended_sequence_number());
        self
    }

    /// The last record done, if the processor reported partial progress.
    pub fn processed_through(&self) -> Option<&ExtendedSequenceNumber> {
        self.done_through.as_ref()
    }

    /// What the library does about this error.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// True when this error restarts the shard.
    pub fn is_restart(&self) -> bool {
        self.on_error == OnError::RestartShard
    }

    /// The error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.error.as_ref()
    }

    /// The error, as a boxed `std::error::Error`.
    pub fn into_error(self) -> BoxError {
        self.error
    }
}

/// Whether a [`RestartShard`] (or a boxed one) is anywhere in `error`'s source chain.
fn chain_has_restart(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<RestartShard>() || e.is::<Box<RestartShard>>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl<E: Into<BoxError>> From<E> for ProcessorError {
    fn from(error: E) -> Self {
        ProcessorError::new(error)
    }
}

impl fmt::Display for ProcessorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)?;
        // `{:#}` shows the causes too, as anyhow does.
        if f.alternate() {
            let mut source = self.error.source();
            while let Some(s) = source {
                write!(f, ": {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ProcessorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorError")
            .field("on_error", &self.on_error)
            .field("done_through", &self.done_through)
            .field("error", &self.error)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn restart() -> Result<(), RestartShard> {
        Err(RestartShard("the child died".into()))
    }

    #[test]
    fn restart_survives_wrapping_and_ordinary_errors_are_retried() {
        let wrapped = || -> Result<(), ProcessorError> {
            restart().context("while talking to the child")?;
            Ok(())
        };
        let e = wrapped().unwrap_err();
        assert!(e.is_restart(), "{e:?}");
        assert_eq!(e.to_string(), "while talking to the child");
        assert!(format!("{e:#}").contains("the child died"));

        let twice = || -> Result<(), ProcessorError> {
            let r: anyhow::Result<()> = restart().context("inner");
            r.context("outer")?;
            Ok(())
        };
        assert!(twice().unwrap_err().is_restart());

        let direct: ProcessorError = RestartShard("x".into()).into();
        assert!(direct.is_restart());
        let boxed: ProcessorError = Box::new(RestartShard("x".into())).into();
        assert!(boxed.is_restart());
        assert!(ProcessorError::restart_shard("broken state").is_restart());

        let io = || -> Result<(), ProcessorError> {
            std::fs::read("/nonexistent/kinesis-client")?;
            Ok(())
        };
        assert_eq!(io().unwrap_err().on_error(), OnError::Retry);
        let text: ProcessorError = "bad record".into();
        assert_eq!(text.on_error(), OnError::Retry);
        let any = || -> Result<(), ProcessorError> {
            Err(anyhow::anyhow!("plain")).context("ctx")?;
            Ok(())
        };
        assert_eq!(any().unwrap_err().on_error(), OnError::Retry);
    }
}
