//! The simulated record processor: reports every call to the [`Ledger`], fails batches and
//! checkpoints at random points according to its [`ProcessorProfile`].
//!
//! A batch goes through three steps: maybe fail before touching it (`Err`: the library
//! delivers the same batch again), process it (its records count as processed from then on),
//! maybe checkpoint (everything, or at a random record of the batch), then maybe fail anyway
//! (a failure after the side effects: the batch is redelivered and processed twice, which
//! at-least-once allows). At shard end it checkpoints `SHARD_END`, except that a forgetful
//! profile sometimes forgets or checkpoints its last record instead, and does it right when
//! the library asks again. A batch that fails
//! before processing may report partial progress (a prefix done); poison records fail every
//! delivery (or make the processor ask for a restart, as a crashing daemon child); when the
//! retry policy is exhausted, the processor skips the records (always when
//! a poison record is among them), which the ledger records as consented skips. In
//! `Shutdown::Requested` (a hand-off, a graceful stop) it maybe checkpoints everything, and
//! tells the ledger when that succeeded (a consented move: **planned-move-duplicate**).

use crate::ledger::Ledger;
use crate::trace::{Source, Trace};
use async_trait::async_trait;
use kinesis_client::processor::{RetriesExhausted, RetryDecision};
use kinesis_client::{
    Checkpointer, InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor,
    RecordProcessorFactory, RestartShard, Shutdown,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// How processors behave (probabilities per call).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessorProfile {
    /// `initialize` fails.
    pub init_fail: f64,
    /// A batch fails before it is processed.
    pub fail_before: f64,
    /// A batch fails after it was processed (and maybe checkpointed).
    pub fail_after: f64,
    /// The processor asks for a restart of the shard (`RestartShard`) instead of processing.
    pub restart: f64,
    /// Checkpoint after a processed batch.
    pub checkpoint: f64,
    /// When checkpointing, at a random record of the batch rather than at its end.
    pub partial_checkpoint: f64,
    /// At shard end, forget to checkpoint (the library asks again after its backoff).
    pub forget_shard_end: f64,
    /// Checkpoint when a graceful shutdown is requested.
    pub checkpoint_on_shutdown: f64,
    /// When a batch fails before processing, process a random prefix first and report it
    /// done (`ProcessorError::done_through`); at a poison record, the records before it.
    pub progress: f64,
    /// When the retry policy is exhausted, skip the records (else keep retrying); records
    /// with a poison record among them are always skipped.
    pub skip: f64,
    /// Records (per thousand, by sequence number) that fail every delivery.
    pub poison_per_mille: u32,
    /// At a poison record, ask for a restart of the shard (`RestartShard`, as a
    /// MultiLangDaemon child that crashes on it) instead of failing the batch: the restarted
    /// consumer re-reads from the checkpoint, with whatever arrived meanwhile.
    pub poison_restarts: f64,
    /// At shard end, checkpoint the last record delivered instead of `SHARD_END` (as a
    /// MultiLangDaemon child answering `shardEnded` with a sequence number); the library asks
    /// again after its backoff.
    pub shard_end_early: f64,
    /// KCL 3.x: in `shutdown(Requested)` (a hand-off, or a graceful stop), hang first, for a
    /// time drawn from `requested_hang_for` (often past the hand-off timeout: the lease then
    /// passes on without the processor's checkpoint, which is refused when it comes).
    pub requested_hang: f64,
    /// The shortest and longest of those hangs.
    pub requested_hang_for: (std::time::Duration, std::time::Duration),
}

/// Whether the record with this sequence number is poison at `per_mille` (a fixed function
/// of the sequence number).
pub fn is_poison(sequence_number: &str, per_mille: u32) -> bool {
    let seq: u128 = sequence_number.parse().unwrap_or(0);
    per_mille > 0 && (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 64) % 1000 < per_mille as u128
}

/// Makes one [`SimProcessor`] per consumer of one worker.
pub struct SimProcessorFactory {
    /// The worker's id.
    pub worker: String,
    /// The run's ground truth.
    pub ledger: Arc<Mutex<Ledger>>,
    /// The run's trace.
    pub trace: Trace,
    /// Behaviour.
    pub profile: ProcessorProfile,
    /// The run's seed (each instance seeds its generator from it and its id).
    pub seed: u64,
}

impl RecordProcessorFactory for SimProcessorFactory {
    type Processor = SimProcessor;

    fn create(&self, shard_id: &str) -> SimProcessor {
        let id = self
            .ledger
            .lock()
            .unwrap()
            .new_instance(&self.worker, shard_id);
        SimProcessor {
            id,
            worker: self.worker.clone(),
            shard: shard_id.to_string(),
            ledger: self.ledger.clone(),
            trace: self.trace.clone(),
            profile: self.profile,
            last: None,
            rng: StdRng::seed_from_u64(
                self.seed ^ 0x5EED_0000_0000 ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
        }
    }
}

/// One processor instance.
pub struct SimProcessor {
    id: u64,
    worker: String,
    shard: String,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    profile: ProcessorProfile,
    /// The last record delivered.
    last: Option<kinesis_client::Record>,
    rng: StdRng,
}

impl SimProcessor {
    fn log(&self, text: String) {
        self.trace.push(
            Source::Processor,
            Some(&self.worker),
            Some(&self.shard),
            format!("#{} {text}", self.id),
        );
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Checkpoint everything delivered; true if the checkpoint succeeded.
    async fn checkpoint_all(&mut self, checkpointer: &mut Checkpointer, why: &str) -> bool {
        let r = checkpointer.checkpoint().await;
        self.log(format!(
            "checkpoint ({why}): {}",
            match &r {
                Ok(()) => format!("ok at {}", checkpointer.last_checkpoint()),
                Err(e) => format!("refused: {e}"),
            }
        ));
        r.is_ok()
    }
}

impl Drop for SimProcessor {
    fn drop(&mut self) {
        // Never poisoned unless a check already panicked; then there is nothing to record.
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.end_instance(self.id);
        }
    }
}

#[async_trait]
impl RecordProcessor for SimProcessor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        if input.stream.is_multi_stream() {
            // The factory is given the shard id: the ledger names the shard by lease key.
            self.shard = input.stream.lease_key(&input.shard_id);
            self.ledger
                .lock()
                .unwrap()
                .set_instance_shard(self.id, &self.shard);
        }
        if self.chance(self.profile.init_fail) {
            self.log(format!(
                "initialize at {}: injected failure",
                input.checkpoint
            ));
            return Err("injected initialize failure".into());
        }
        self.log(format!("initialize at {}", input.checkpoint));
        self.ledger
            .lock()
            .unwrap()
            .on_initialize(self.id, &input.checkpoint);
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let records = &input.records;
        let span = match (records.first(), records.last()) {
            (Some(a), Some(b)) => format!("{}..={}", a.sequence_number, b.sequence_number),
            _ => "empty".to_string(),
        };
        self.ledger.lock().unwrap().on_delivery(self.id, records);
        if let Some(last) = records.last() {
            self.last = Some(last.clone());
        }
        let poison = records
            .iter()
            .position(|r| is_poison(&r.sequence_number, self.profile.poison_per_mille));
        if poison.is_some() && self.chance(self.profile.poison_restarts) {
            self.log(format!(
                "batch {span} ({}, attempt {}): poison; asks for a restart",
                records.len(),
                input.attempt
            ));
            self.ledger
                .lock()
                .unwrap()
                .on_batch_done(self.id, records, false);
            return Err(RestartShard("poison record: the child crashed".into()).into());
        }
        if self.chance(self.profile.restart) {
            self.log(format!(
                "batch {span} ({}): asks for a restart",
                records.len()
            ));
            self.ledger
                .lock()
                .unwrap()
                .on_batch_done(self.id, records, false);
            return Err(RestartShard("injected restart".into()).into());
        }
        let fails = poison.is_some() || self.chance(self.profile.fail_before);
        if fails {
            // Partial progress: a prefix (before the poison record, if any) is done.
            let done = match poison {
                Some(p) if self.chance(self.profile.progress) => p,
                None if records.len() > 1 && self.chance(self.profile.progress) => {
                    self.rng.random_range(1..records.len())
                }
                _ => 0,
            };
            let mut error = ProcessorError::new(match poison {
                Some(_) => "poison record",
                None => "injected failure before processing",
            });
            if done > 0 {
                self.ledger
                    .lock()
                    .unwrap()
                    .on_processed(self.id, &records[..done]);
                error = error.done_through(&records[done - 1]);
            }
            self.log(format!(
                "batch {span} ({}, attempt {}): fails before processing{}{}",
                records.len(),
                input.attempt,
                if poison.is_some() { " (poison)" } else { "" },
                if done > 0 {
                    format!(", {done} done")
                } else {
                    String::new()
                }
            ));
            let mut ledger = self.ledger.lock().unwrap();
            ledger.on_batch_done(self.id, records, false);
            ledger.on_progress(self.id, &records[..done]);
            return Err(error);
        }
        self.ledger.lock().unwrap().on_processed(self.id, records);
        self.log(format!("batch {span} ({}): processed", records.len()));
        if !records.is_empty() && self.chance(self.profile.checkpoint) {
            if self.chance(self.profile.partial_checkpoint) {
                let i = self.rng.random_range(0..records.len());
                let r = checkpointer.checkpoint_record(&records[i]).await;
                self.log(format!(
                    "checkpoint at record {i} ({}): {}",
                    records[i].sequence_number,
                    r.map_or_else(|e| format!("refused: {e}"), |()| "ok".into())
                ));
            } else {
                self.checkpoint_all(checkpointer, "batch").await;
            }
        }
        if self.chance(self.profile.fail_after) {
            self.log("fails after processing".into());
            self.ledger
                .lock()
                .unwrap()
                .on_batch_done(self.id, records, false);
            return Err("injected failure after processing".into());
        }
        self.ledger
            .lock()
            .unwrap()
            .on_batch_done(self.id, records, true);
        Ok(())
    }

    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        let poisoned = failure
            .records
            .iter()
            .any(|r| is_poison(&r.sequence_number, self.profile.poison_per_mille));
        let skip = poisoned || self.chance(self.profile.skip);
        self.log(format!(
            "retries exhausted after {} attempts for {} records from {}: {}",
            failure.attempts,
            failure.records.len(),
            failure
                .records
                .first()
                .map_or("-", |r| r.sequence_number.as_str()),
            if skip { "skip" } else { "keep retrying" }
        ));
        if !skip {
            return RetryDecision::KeepRetrying;
        }
        self.ledger
            .lock()
            .unwrap()
            .on_skipped(self.id, &failure.records);
        RetryDecision::Skip
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } => {
                if self.chance(self.profile.forget_shard_end) {
                    self.log("shard ended: forgets to checkpoint".into());
                } else if let Some(last) = self
                    .last
                    .clone()
                    .filter(|_| self.chance(self.profile.shard_end_early))
                {
                    let r = checkpointer.checkpoint_record(&last).await;
                    self.log(format!(
                        "shard ended: checkpoints the last record ({}) instead of SHARD_END: {}",
                        last.sequence_number,
                        r.map_or_else(|e| format!("refused: {e}"), |()| "ok".into())
                    ));
                } else {
                    self.checkpoint_all(checkpointer, "shard end").await;
                }
            }
            Shutdown::Requested { checkpointer } => {
                if self.chance(self.profile.requested_hang) {
                    let (lo, hi) = self.profile.requested_hang_for;
                    let d = std::time::Duration::from_millis(
                        self.rng
                            .random_range(lo.as_millis() as u64..=hi.as_millis().max(1) as u64),
                    );
                    self.log(format!("shutdown requested: hangs {d:?} first"));
                    tokio::time::sleep(d).await;
                    self.log("shutdown requested: hang over".into());
                }
                if self.chance(self.profile.checkpoint_on_shutdown) {
                    if self
                        .checkpoint_all(checkpointer, "shutdown requested")
                        .await
                    {
                        // Consent to a clean move when it covers all this processor was given.
                        self.ledger
                            .lock()
                            .unwrap()
                            .on_requested_checkpoint(self.id, &checkpointer.last_checkpoint());
                    }
                } else {
                    self.log("shutdown requested: no checkpoint".into());
                }
            }
            Shutdown::LeaseLost => self.log("lease lost".into()),
            other => self.log(format!("shutdown: {}", other.name())),
        }
        Ok(())
    }
}
