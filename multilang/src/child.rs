//! A [`kinesis_client::RecordProcessor`] that is a child process speaking the MultiLangDaemon protocol.
//!
//! One child per shard consumer. A child that cannot start, exits, hangs past
//! `timeoutInSeconds` or breaks the protocol is killed, and the processor returns
//! [`RestartShard`]: the shard restarts with a new child from its last checkpoint (after a
//! backoff that grows with each failure on the same records), while every other shard goes on.
//! The daemon itself never exits because of a child. A child that fails on the same records
//! again and again is restarted forever, unless the properties set a retry policy
//! (`skipFailingRecordsAfterAttempts`, `skipFailingRecordsAfterAgeSeconds`): then those
//! records are skipped (logged by shard and sequence number) once it is exhausted.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches only the
//! daemon, which then shuts them down gracefully (`shutdownRequested`, then `leaseLost`). A
//! child that is killed (crash, hang, protocol error, or no exit within [`CHILD_EXIT_GRACE`]
//! of its stdin closing) is killed with its whole process group, and a child that exits leaves
//! no process of its group behind: a processor started through a wrapper (`sh -c`,
//! `npm start`, a venv shim) goes with the wrapper. On Linux the direct child also dies with
//! the daemon if the daemon is killed outright (`PR_SET_PDEATHSIG`); that signal does not reach
//! a wrapper's children. The Java MultiLangDaemon destroys only the direct child process.

use crate::driver::{CheckpointHandler, Driver, DriverError};
use crate::protocol::{process_records_call, CheckpointFailure, DaemonMessage, EncodedCall};
use crate::stderr::spawn_stderr_drain;
use async_trait::async_trait;
use kinesis_client::error::ErrorKind;
use kinesis_client::processor::{RetriesExhausted, RetryDecision};
use kinesis_client::StreamIdentifier;
use kinesis_client::{
    CheckpointError, Checkpointer, InitializationInput, ProcessRecordsInput, ProcessorError,
    RecordProcessor, RestartShard, Shutdown,
};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout, Command};

/// A child's stdin as the driver writes it: from a thread of its own where there are file
/// descriptors (see [`crate::stdin_thread`]).
#[cfg(unix)]
type Stdin = crate::stdin_thread::ThreadedStdin;
#[cfg(not(unix))]
type Stdin = tokio::process::ChildStdin;

/// How long a child may take to exit after its stdin is closed before it is killed.
pub const CHILD_EXIT_GRACE: Duration = Duration::from_secs(5);

/// The environment variable that names the shard's stream to the child (amazon-kclpy does not
/// pass the initialize message's `streamName` on to the processor).
pub const STREAM_NAME_ENV: &str = "KCL_STREAM_NAME";

/// What to run for each shard.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Program and arguments (`executableName` split on spaces).
    pub argv: Vec<String>,
    /// Per-message timeout (`timeoutInSeconds`); `None` waits forever.
    pub timeout: Option<Duration>,
}

/// The record processor of one shard: drives one child process.
pub struct ChildProcessor {
    shard_id: String,
    /// The shard's stream, known from `initialize`.
    stream: Option<StreamIdentifier>,
    spec: Arc<ChildSpec>,
    child: Option<RunningChild>,
}

struct RunningChild {
    process: Child,
    driver: Driver<Stdin, BufReader<ChildStdout>>,
}

impl ChildProcessor {
    /// A processor for `shard_id`; the child starts in `initialize`.
    pub fn new(shard_id: &str, spec: Arc<ChildSpec>) -> Self {
        ChildProcessor {
            shard_id: shard_id.to_string(),
            stream: None,
            spec,
            child: None,
        }
    }

    fn stream_name(&self) -> Option<String> {
        self.stream.as_ref().map(|s| s.name().to_string())
    }

    fn spawn(&self) -> Result<RunningChild, RestartShard> {
        let (program, args) = self
            .spec
            .argv
            .split_first()
            .ok_or_else(|| RestartShard("executableName is empty".into()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(stream) = &self.stream {
            command.env(STREAM_NAME_ENV, stream.name());
        }
        #[cfg(unix)]
        command.process_group(0);
        // If the daemon itself is killed (SIGKILL, OOM), its children go too, even one that
        // ignores EOF on stdin. Spawning happens on a runtime worker thread, which lives as
        // long as the daemon's runtime.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut process = command.spawn().map_err(|e| {
            RestartShard(format!(
                "cannot start the child process {:?} for shard {}: {e}",
                self.spec.argv, self.shard_id
            ))
        })?;
        let stdin = process.stdin.take().expect("piped stdin");
        #[cfg(unix)]
        let stdin = crate::stdin_thread::ThreadedStdin::new(stdin).map_err(|e| {
            RestartShard(format!(
                "cannot start the thread that writes to the child process of shard {}: {e}",
                self.shard_id
            ))
        })?;
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = process.stderr.take().expect("piped stderr");
        spawn_stderr_drain(self.shard_id.clone(), stderr);
        tracing::info!(shard_id = %self.shard_id, pid = process.id(), command = ?self.spec.argv, "started child process");
        Ok(RunningChild {
            process,
            driver: Driver::new(
                self.shard_id.clone(),
                stdin,
                BufReader::new(stdout),
                self.spec.timeout,
            ),
        })
    }

    /// Send `msg`; on any failure kill the child and ask for a restart of the shard.
    async fn call(
        &mut self,
        msg: impl Into<EncodedCall>,
        checkpointer: Option<&mut Checkpointer>,
    ) -> Result<crate::driver::CallOutcome, ProcessorError> {
        let Some(child) = self.child.as_mut() else {
            return Err(
                RestartShard(format!("no child process for shard {}", self.shard_id)).into(),
            );
        };
        let mut handler = checkpointer.map(|c| Handler { checkpointer: c });
        let result = child
            .driver
            .call(
                msg,
                handler.as_mut().map(|h| h as &mut dyn CheckpointHandler),
            )
            .await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.kill(&e).await;
                Err(RestartShard(e.to_string()).into())
            }
        }
    }

    async fn kill(&mut self, why: &DriverError) {
        if let Some(mut child) = self.child.take() {
            let status = child.process.try_wait().ok().flatten();
            tracing::error!(shard_id = %self.shard_id, error = %why, exit_status = ?status,
                "child process failed; killing it and its process group; the shard restarts from its last checkpoint");
            kill_group(&child.process);
            let _ = child.process.kill().await;
        }
    }

    /// Close the child's stdin (it exits on EOF), drain its stdout, and reap it.
    async fn finish(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let RunningChild {
            mut process,
            driver,
        } = child;
        let shard_id = self.shard_id.clone();
        let group = process.id();
        let done = tokio::time::timeout(CHILD_EXIT_GRACE, async {
            if let Ok(n) = driver.close_and_drain().await {
                if n > 0 {
                    tracing::debug!(shard_id = %shard_id, lines = n, "child printed after its last status");
                }
            }
            process.wait().await
        })
        .await;
        match done {
            Ok(Ok(status)) => {
                tracing::info!(shard_id = %self.shard_id, %status, "child process exited");
                // What it started and left behind (a wrapper's real processor, say) goes too.
                kill_group_of(group);
            }
            _ => {
                tracing::warn!(shard_id = %self.shard_id, "child process did not exit after stdin closed; killing it and its process group");
                kill_group(&process);
                let _ = process.kill().await;
            }
        }
    }
}

/// SIGKILL to the process group of `process` (the child leads its own group: `spawn`), so
/// that a processor started through a wrapper (`sh -c`, `npm start`, a venv shim) dies with
/// the wrapper. Called while `process` is not reaped yet, so its group id is still ours.
fn kill_group(process: &Child) {
    kill_group_of(process.id());
}

/// SIGKILL to process group `group`, if any process of it is left.
fn kill_group_of(group: Option<u32>) {
    #[cfg(unix)]
    if let Some(group) = group.and_then(|g| libc::pid_t::try_from(g).ok()) {
        // SAFETY: killpg only sends a signal; ESRCH (no process left) is fine.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = group;
}

/// Runs the child's checkpoint requests on the shard's checkpointer.
struct Handler<'a> {
    checkpointer: &'a mut Checkpointer,
}

#[async_trait]
impl CheckpointHandler for Handler<'_> {
    async fn checkpoint(
        &mut self,
        sequence_number: Option<String>,
        sub_sequence_number: Option<u64>,
    ) -> Result<(), CheckpointFailure> {
        let result = match &sequence_number {
            None => self.checkpointer.checkpoint().await,
            Some(seq) => {
                self.checkpointer
                    .checkpoint_at(seq, sub_sequence_number.unwrap_or(0))
                    .await
            }
        };
        result.map_err(|e| {
            tracing::info!(shard_id = %self.checkpointer.shard_id(), error = %e, "checkpoint requested by the child failed");
            failure(&e)
        })
    }
}

/// The protocol's answer to a failed checkpoint: the Java KCL exception a Java checkpointer
/// would have thrown (the child's KCL language library knows these names).
fn failure(e: &CheckpointError) -> CheckpointFailure {
    match e {
        CheckpointError::LeaseLost { .. } => CheckpointFailure::Shutdown,
        CheckpointError::OutOfRange { .. } | CheckpointError::InvalidSequenceNumber(_) => {
            CheckpointFailure::IllegalArgument
        }
        CheckpointError::Store { .. } if e.kind() == ErrorKind::Throttled => {
            CheckpointFailure::Throttling
        }
        _ => CheckpointFailure::Dependency,
    }
}

#[async_trait]
impl RecordProcessor for ChildProcessor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.stream = Some(input.stream);
        if self.child.is_none() {
            self.child = Some(self.spawn()?);
        }
        let msg = DaemonMessage::Initialize {
            shard_id: input.shard_id,
            sequence_number: Some(input.checkpoint.stored_value().to_string()),
            sub_sequence_number: Some(input.checkpoint.stored_sub_sequence_number()),
            stream_name: self.stream_name(),
        };
        self.call(msg, None).await.map(|_| ())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let call = process_records_call(&input.records, input.millis_behind_latest);
        drop(input);
        self.call(call, Some(checkpointer)).await.map(|_| ())
    }

    /// Only called when the properties set a retry policy (`skipFailingRecordsAfterAttempts`,
    /// `skipFailingRecordsAfterAgeSeconds`): that setting is the consent to skip. The library
    /// logs the skipped records' sequence numbers and checkpoints past them when everything
    /// before them is checkpointed; otherwise this worker does not deliver them again and the
    /// child's next checkpoint covers them.
    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        tracing::error!(
            shard_id = %self.shard_id,
            records = failure.records.len(),
            attempts = failure.attempts,
            last_error = %failure.last_error,
            "the child process keeps failing on these records; skipping them as the skipFailingRecordsAfter* properties say"
        );
        RetryDecision::Skip
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } => self.shard_ended(checkpointer).await?,
            _ if self.child.is_none() => {}
            Shutdown::Requested { checkpointer } => {
                self.call(DaemonMessage::ShutdownRequested, Some(checkpointer))
                    .await?;
                // As the Java KCL, a requested shutdown is followed by leaseLost, which ends the child.
                self.call(DaemonMessage::LeaseLost, None).await?;
                self.finish().await;
            }
            // The lease was lost (or a reason a later library version adds): no checkpoint.
            _ => {
                self.call(DaemonMessage::LeaseLost, None).await?;
                self.finish().await;
            }
        }
        Ok(())
    }
}

impl ChildProcessor {
    /// Asks a live child to record `SHARD_END` (`shardEnded`); the child is ended only once
    /// `SHARD_END` is stored. A child that answers with no checkpoint, or with a checkpoint
    /// that is not `SHARD_END` (an earlier sequence number, or a KPL record's sequence number
    /// without its sub-sequence), is kept, and the library asks it again after the task
    /// backoff until it records `SHARD_END` or the lease is lost. If there is no child (it was
    /// never started, or the last one ended), a new one is started and initialized at the
    /// shard's checkpoint first.
    ///
    /// The Java MultiLangDaemon has this flaw: it ends the child after its first `shardEnded`
    /// answer whatever it checkpointed, and the retries of the shard end then find the
    /// processor shut down and do nothing, so the shard never finishes and its children never
    /// start.
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        if self.child.is_none() {
            self.child = Some(self.spawn()?);
            let at = checkpointer.last_checkpoint().clone();
            let msg = DaemonMessage::Initialize {
                shard_id: self.shard_id.clone(),
                sequence_number: Some(at.stored_value().to_string()),
                sub_sequence_number: Some(at.stored_sub_sequence_number()),
                stream_name: self.stream_name(),
            };
            self.call(msg, None).await?;
        }
        let outcome = self
            .call(DaemonMessage::ShardEnded, Some(&mut *checkpointer))
            .await?;
        let stored = checkpointer.last_checkpoint();
        if !stored.is_shard_end() {
            tracing::error!(
                shard_id = %self.shard_id,
                checkpoint = %stored,
                checkpoint_requests = outcome.checkpoint_requests,
                "the child answered shardEnded without checkpointing SHARD_END (call checkpointer.checkpoint() \
                 with no sequence number in shard_ended); shard {} stays unfinished and its child shards \
                 blocked; asking the same child again after the backoff",
                self.shard_id
            );
            return Ok(());
        }
        self.finish().await;
        Ok(())
    }
}
