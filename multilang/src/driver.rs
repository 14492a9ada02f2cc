//! The conversation with one child process: send a call, serve its checkpoint requests, wait
//! for its status.
//!
//! [`Driver`] is generic over the child's stdin ([`ChildInput`]: any [`AsyncWrite`], or the
//! daemon's [`ThreadedStdin`](crate::stdin_thread::ThreadedStdin)) and stdout
//! ([`AsyncBufRead`]), so it is tested over in-memory pipes; the daemon plugs in the child
//! process's pipes.
//!
//! One [`Driver::call`] follows Java's `MultiLangProtocol`, with the rules the Python and Node
//! client libraries need (each breaks, often by exiting, when one is not kept):
//!
//! 1. write the message (one line) — while also reading stdout, so a child that prints a lot
//!    before reading its stdin cannot deadlock against a large `processRecords` write;
//! 2. read lines until a `status`: blank lines are skipped, noise is logged and skipped,
//!    each checkpoint request goes to the [`CheckpointHandler`] and its [`CheckpointReply`] is
//!    written before anything else is read (the Python client blocks on stdin after a
//!    checkpoint request, and takes whatever line comes next as its reply). Without a
//!    handler (`initialize`, `leaseLost`) the reply is `InvalidStateException`, as Java's
//!    checkpoint without a checkpointer. A checkpoint failure does not fail the call;
//! 3. the status must name the action sent, else [`DriverError::ProtocolViolation`].
//!
//! **Timeout**: with `Some(t)`, the child must produce its next protocol message (a status or
//! a checkpoint request) within `t` of the daemon's last write to it (the call, or the latest
//! checkpoint reply). Noise does not extend it; time spent inside the handler does not count.
//! Java halts the whole JVM on expiry; here it is [`DriverError::Timeout`] and the daemon
//! restarts that shard's child: the daemon survives its children.
//!
//! After a successful `shardEnded` or `leaseLost`, use [`Driver::close_and_drain`] (close the
//! child's stdin, drain its output, wait for it to exit, as Java's child shutdown sequence).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::lines::{Line, LineReader, Overflow};
use crate::protocol::{
    parse_child_line, CheckpointFailure, CheckpointReply, ChildLine, ChildMessage, EncodedCall,
};

/// Longest stdout line kept; protocol lines are under 200 bytes, longer lines are noise.
pub const MAX_STDOUT_LINE: usize = 64 * 1024;

/// Where the driver writes a child's input: whole lines, then the end of the input.
///
/// Every [`AsyncWrite`] is one; the daemon uses
/// [`ThreadedStdin`](crate::stdin_thread::ThreadedStdin), which takes each line by value and
/// writes it from a thread of its own.
#[async_trait::async_trait]
pub trait ChildInput: Send {
    /// Writes `line` whole and flushes it.
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()>;
    /// Ends the input (the child reads EOF once everything before is read).
    async fn close(&mut self) -> io::Result<()>;
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Unpin + Send> ChildInput for W {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        self.write_all(&line).await?;
        self.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

/// Performs the checkpoints a child asks for during one call.
///
/// Arguments are exactly what the child sent. Java semantics: `sequence_number` `None` means
/// "everything delivered so far" (`checkpoint()`; SHARD_END during `shardEnded`; Java then
/// ignores `sub_sequence_number`); `Some(seq)` with `None` sub is `checkpoint(seq)`; both set is
/// `checkpoint(seq, sub)`.
#[async_trait::async_trait]
pub trait CheckpointHandler: Send {
    /// Checkpoints, or says why not (sent to the child as the Java exception name).
    async fn checkpoint(
        &mut self,
        sequence_number: Option<String>,
        sub_sequence_number: Option<u64>,
    ) -> Result<(), CheckpointFailure>;
}

/// What happened during a successful call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOutcome {
    /// Checkpoint requests the child made (each was answered).
    pub checkpoint_requests: usize,
    /// Of those, how many the handler performed successfully.
    pub checkpoints_succeeded: usize,
}

impl CallOutcome {
    /// Whether at least one checkpoint succeeded. A `shardEnded` call returning `false` here
    /// did not checkpoint SHARD_END (rule 13: kclpy swallows processor errors and still
    /// sends the status).
    pub fn checkpointed(&self) -> bool {
        self.checkpoints_succeeded > 0
    }
}

/// Why a call failed. Every variant means the child is unusable: stop it and restart the
/// shard from its last checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The child's stdout ended (it exited or closed stdout) before the status.
    #[error("shard {shard_id}: child process closed its stdout (exited?) while the daemon waited for the status of {action}")]
    ChildExited {
        /// The shard.
        shard_id: String,
        /// The call in progress.
        action: &'static str,
    },
    /// No protocol message within the timeout.
    #[error("shard {shard_id}: child process sent nothing for {action} within {timeout:?} (timeoutInSeconds)")]
    Timeout {
        /// The shard.
        shard_id: String,
        /// The call in progress.
        action: &'static str,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The child broke the protocol (wrong or missing `responseFor`).
    #[error("shard {shard_id}: protocol violation during {action}: {detail}")]
    ProtocolViolation {
        /// The shard.
        shard_id: String,
        /// The call in progress.
        action: &'static str,
        /// What the child did.
        detail: String,
    },
    /// Writing to the child's stdin or reading its stdout failed (e.g. broken pipe).
    #[error("shard {shard_id}: I/O error talking to the child during {action}: {source}")]
    Io {
        /// The shard.
        shard_id: String,
        /// The call in progress.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Internal failure before shard/action context is attached.
enum Failure {
    Eof,
    Timeout,
    Io(io::Error),
    Violation(String),
}

/// Drives the protocol over one child's stdin and stdout.
#[derive(Debug)]
pub struct Driver<W, R> {
    shard_id: String,
    stdin: W,
    stdout: LineReader<R>,
    timeout: Option<Duration>,
}

impl<W, R> Driver<W, R>
where
    W: ChildInput,
    R: AsyncBufRead + Unpin + Send,
{
    /// A driver for the child serving `shard_id` (used in logs and errors). `timeout` is the
    /// per-message timeout (`timeoutInSeconds`; `None` waits forever, as Java by default).
    pub fn new(
        shard_id: impl Into<String>,
        stdin: W,
        stdout: R,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            shard_id: shard_id.into(),
            stdin,
            stdout: LineReader::new(stdout, MAX_STDOUT_LINE, Overflow::Truncate),
            timeout,
        }
    }

    /// The shard this driver talks for.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Sends `msg` and runs the conversation until the child's matching status.
    pub async fn call(
        &mut self,
        msg: impl Into<EncodedCall>,
        mut checkpointer: Option<&mut dyn CheckpointHandler>,
    ) -> Result<CallOutcome, DriverError> {
        let EncodedCall { action, line } = msg.into();
        tracing::debug!(shard_id = %self.shard_id, action, bytes = line.len(), "sending to child");
        self.converse(action, line, &mut checkpointer)
            .await
            .map_err(|failure| self.error(action, failure))
    }

    async fn converse(
        &mut self,
        action: &'static str,
        line: Vec<u8>,
        checkpointer: &mut Option<&mut dyn CheckpointHandler>,
    ) -> Result<CallOutcome, Failure> {
        let mut outcome = CallOutcome::default();
        let mut deadline = self.timeout.map(|t| Instant::now() + t);
        let mut pending = self.write_while_reading(line, deadline).await?;

        loop {
            let next = match pending.pop_front() {
                Some(line) => line,
                None => match with_deadline(deadline, self.stdout.next_line()).await? {
                    Ok(Some(line)) => line,
                    Ok(None) => return Err(Failure::Eof),
                    Err(e) => return Err(Failure::Io(e)),
                },
            };
            let text = String::from_utf8_lossy(&next.bytes);
            let parsed = if next.truncated {
                ChildLine::Noise {
                    reason: format!("line longer than {MAX_STDOUT_LINE} bytes (truncated)"),
                }
            } else {
                parse_child_line(&text)
            };
            match parsed {
                ChildLine::Blank => {}
                ChildLine::Noise { reason } => {
                    tracing::info!(
                        shard_id = %self.shard_id,
                        action,
                        reason = %reason,
                        line = %text.trim_end(),
                        "skipping unexpected line on child stdout"
                    );
                }
                ChildLine::Message(ChildMessage::Status { response_for }) => {
                    return match response_for {
                        Some(r) if r == action => {
                            tracing::debug!(shard_id = %self.shard_id, action, "child finished");
                            Ok(outcome)
                        }
                        Some(other) => Err(Failure::Violation(format!(
                            "sent {action} but the child answered status for {other:?}"
                        ))),
                        None => Err(Failure::Violation(format!(
                            "status message without a string responseFor: {}",
                            text.trim()
                        ))),
                    };
                }
                ChildLine::Message(ChildMessage::Checkpoint {
                    sequence_number,
                    sub_sequence_number,
                }) => {
                    outcome.checkpoint_requests += 1;
                    let result = match checkpointer {
                        Some(handler) => {
                            handler
                                .checkpoint(sequence_number.clone(), sub_sequence_number)
                                .await
                        }
                        None => Err(CheckpointFailure::InvalidState),
                    };
                    match &result {
                        Ok(()) => outcome.checkpoints_succeeded += 1,
                        Err(failure) => tracing::info!(
                            shard_id = %self.shard_id,
                            action,
                            sequence_number = ?sequence_number,
                            sub_sequence_number = ?sub_sequence_number,
                            error = %failure,
                            "checkpoint requested by child failed"
                        ),
                    }
                    let reply = CheckpointReply {
                        sequence_number,
                        sub_sequence_number,
                        error: result.err(),
                    };
                    deadline = self.timeout.map(|t| Instant::now() + t);
                    self.write_reply(&reply, deadline).await?;
                }
                ChildLine::Message(ChildMessage::InvalidCheckpoint {
                    sequence_number,
                    problem,
                }) => {
                    outcome.checkpoint_requests += 1;
                    tracing::warn!(
                        shard_id = %self.shard_id,
                        action,
                        problem = %problem,
                        "child sent an unusable checkpoint request; answering IllegalArgumentException"
                    );
                    let reply = CheckpointReply {
                        sequence_number,
                        sub_sequence_number: None,
                        error: Some(CheckpointFailure::IllegalArgument),
                    };
                    deadline = self.timeout.map(|t| Instant::now() + t);
                    self.write_reply(&reply, deadline).await?;
                }
            }
        }
    }

    /// Writes a call while collecting whatever the child prints meanwhile.
    async fn write_while_reading(
        &mut self,
        line: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<VecDeque<Line>, Failure> {
        let Self { stdin, stdout, .. } = self;
        let mut pending = VecDeque::new();
        let work = async {
            let write = stdin.write_line(line);
            tokio::pin!(write);
            loop {
                tokio::select! {
                    biased;
                    written = &mut write => return written.map_err(Failure::Io),
                    read = stdout.next_line() => match read {
                        Ok(Some(line)) => pending.push_back(line),
                        Ok(None) => return Err(Failure::Eof),
                        Err(e) => return Err(Failure::Io(e)),
                    },
                }
            }
        };
        with_deadline(deadline, work).await??;
        Ok(pending)
    }

    async fn write_reply(
        &mut self,
        reply: &CheckpointReply,
        deadline: Option<Instant>,
    ) -> Result<(), Failure> {
        let write = self.stdin.write_line(reply.to_line());
        with_deadline(deadline, write).await?.map_err(Failure::Io)
    }

    fn error(&self, action: &'static str, failure: Failure) -> DriverError {
        let shard_id = self.shard_id.clone();
        match failure {
            Failure::Eof => DriverError::ChildExited { shard_id, action },
            Failure::Timeout => DriverError::Timeout {
                shard_id,
                action,
                timeout: self.timeout.unwrap_or_default(),
            },
            Failure::Io(source) => DriverError::Io {
                shard_id,
                action,
                source,
            },
            Failure::Violation(detail) => DriverError::ProtocolViolation {
                shard_id,
                action,
                detail,
            },
        }
    }

    /// Ends the conversation: closes the child's stdin (both clients exit 0 on EOF) and reads
    /// its stdout to the end, logging any non-blank line. Returns how many lines were logged.
    /// Completes when the child closes stdout (normally by exiting); wrap it in a timeout.
    pub async fn close_and_drain(self) -> io::Result<usize> {
        let Self {
            shard_id,
            mut stdin,
            mut stdout,
            ..
        } = self;
        // A child that already exited makes this fail with a broken pipe; that is fine.
        let _ = stdin.close().await;
        drop(stdin);
        let mut logged = 0;
        while let Some(line) = stdout.next_line().await? {
            let text = String::from_utf8_lossy(&line.bytes);
            if !text.trim().is_empty() {
                logged += 1;
                tracing::info!(shard_id = %shard_id, line = %text.trim_end(), "child stdout after its last message");
            }
        }
        Ok(logged)
    }

    /// Takes the pipes back (e.g. to kill the child after an error).
    pub fn into_parts(self) -> (W, R) {
        (self.stdin, self.stdout.into_inner())
    }
}

async fn with_deadline<F: Future>(deadline: Option<Instant>, f: F) -> Result<F::Output, Failure> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, f)
            .await
            .map_err(|_| Failure::Timeout),
        None => Ok(f.await),
    }
}

#[cfg(test)]
mod tests;
