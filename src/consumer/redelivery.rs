//! What a shard remembers about failing records: how often the records at the head of the
//! shard failed (across restarts of its processor within one lease tenure on this worker),
//! and which records were skipped with the processor's consent and are not yet covered by a
//! checkpoint. The scheduler keeps one [`Redelivery`] per tenure and hands it to each
//! consumer it starts for that tenure; the decisions here are pure.

use crate::backoff::Backoff;
use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber};
use crate::processor::SharedError;
use crate::record::Record;
use crate::sync::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// One tenure's redelivery state, shared by its successive consumers.
pub type SharedRedelivery = Arc<Mutex<Redelivery>>;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Redelivery {
    failing: Option<Failing>,
    /// Inclusive ranges of records skipped with consent, not yet covered by a checkpoint: a
    /// consumer restarted from an older checkpoint does not deliver them again.
    skipped: Vec<(ExtendedSequenceNumber, ExtendedSequenceNumber)>,
}

/// Deliveries starting at one record that failed.
///
/// Only the records of a failed delivery count as failed: `first..=last`. A restart re-reads
/// from the checkpoint, and its first response also holds what arrived meanwhile; those
/// records were never delivered and are a first delivery (attempt 1), never handed to
/// `retries_exhausted` nor skipped with the failing ones.
#[derive(Debug, Clone)]
pub struct Failing {
    /// The first record of the failing deliveries.
    pub first: ExtendedSequenceNumber,
    /// The last record of the latest failing delivery.
    pub last: ExtendedSequenceNumber,
    /// How many deliveries starting at `first` failed.
    pub failures: u32,
    /// The processor's hook was asked and chose to keep retrying: not asked again.
    pub asked: bool,
    /// The last failure, for the hook.
    pub last_error: SharedError,
}

/// How a fetched batch is delivered, given what failed before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// As one batch, this attempt.
    Whole(u32),
    /// After a restart re-read the failing records: those before index `from` as a first
    /// delivery, `from..to` (the records of the failed delivery) as this attempt, and those
    /// from `to` on (they arrived after the failed delivery was read) as a first delivery.
    Split {
        /// Where the failing records start.
        from: usize,
        /// Where they end (exclusive).
        to: usize,
        /// Their attempt.
        attempt: u32,
    },
}

fn esn(r: &Record) -> ExtendedSequenceNumber {
    r.extended_sequence_number()
}

/// The wait before the delivery that follows `failures` failures: the task backoff doubled
/// per failure after the first, capped at `max`, with jitter.
pub fn backoff_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let mut backoff = Backoff::new(base, max);
    backoff
        .nth(failures.saturating_sub(1) as usize)
        .unwrap_or(base)
}

impl Redelivery {
    /// A new shared state.
    pub fn shared() -> SharedRedelivery {
        Arc::new(Mutex::new(Redelivery::default()))
    }

    /// The failing deliveries, if any.
    pub fn failing(&self) -> Option<&Failing> {
        self.failing.as_ref()
    }

    /// Remove from `records` those skipped earlier with consent; forget skipped ranges that
    /// `checkpoint` covers. Returns how many were removed.
    pub fn drop_skipped(&mut self, records: &mut Vec<Record>, checkpoint: &Checkpoint) -> usize {
        self.skipped
            .retain(|(_, last)| *checkpoint < Checkpoint::Sequence(last.clone()));
        if self.skipped.is_empty() {
            return 0;
        }
        let before = records.len();
        records.retain(|r| {
            let e = esn(r);
            !self
                .skipped
                .iter()
                .any(|(first, last)| *first <= e && e <= *last)
        });
        before - records.len()
    }

    /// How to deliver `records`, freshly fetched. Past the failing record (a checkpoint moved
    /// beyond it), the failure is forgotten.
    pub fn plan(&mut self, records: &[Record]) -> Plan {
        let Some(f) = &self.failing else {
            return Plan::Whole(1);
        };
        let Some(tail) = records.last() else {
            return Plan::Whole(1);
        };
        if esn(tail) < f.first {
            return Plan::Whole(1);
        }
        let Some(from) = records.iter().position(|r| esn(r) == f.first) else {
            // The batch spans the failing record without holding it: a checkpoint moved past
            // it (the batch starts after it), or it was trimmed: start over.
            self.failing = None;
            return Plan::Whole(1);
        };
        let to = from + records[from..].partition_point(|r| esn(r) <= f.last);
        let attempt = f.failures + 1;
        if from == 0 && to == records.len() {
            Plan::Whole(attempt)
        } else {
            Plan::Split { from, to, attempt }
        }
    }

    /// A delivery of `first..=last` failed with `error`; returns the failures so far of the
    /// deliveries starting at `first`.
    pub fn failed(&mut self, first: &Record, last: &Record, error: SharedError) -> u32 {
        let (first, last) = (esn(first), esn(last));
        match &mut self.failing {
            Some(f) if f.first == first => {
                f.failures += 1;
                // The failing records are those of the latest failed delivery: never more.
                f.last = last;
                f.last_error = error;
                f.failures
            }
            _ => {
                self.failing = Some(Failing {
                    first,
                    last,
                    failures: 1,
                    asked: false,
                    last_error: error,
                });
                1
            }
        }
    }

    /// A delivery ending at `last` succeeded (or its records were skipped): a failure at or
    /// before `last` is over.
    pub fn passed(&mut self, last: &Record) {
        if self.failing.as_ref().is_some_and(|f| f.first <= esn(last)) {
            self.failing = None;
        }
    }

    /// The hook chose to keep retrying the failing records: do not ask again.
    pub fn keep_retrying(&mut self) {
        if let Some(f) = &mut self.failing {
            f.asked = true;
        }
    }

    /// Records `first..=last` were skipped with consent.
    pub fn skipped(&mut self, first: &Record, last: &Record) {
        self.skipped.push((esn(first), esn(last)));
        self.passed(last);
    }

    /// The wait before restarting a processor that failed (it restarted the shard or
    /// panicked): the backoff of the failing records, or `base`.
    pub fn restart_delay(&self, base: Duration, max: Duration) -> Duration {
        match &self.failing {
            Some(f) => backoff_delay(f.failures, base, max),
            None => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u32) -> Record {
        Record::new(Bytes::new(), "pk", u64::from(seq))
    }

    fn err(message: &str) -> SharedError {
        Arc::from(crate::processor::BoxError::from(message))
    }

    fn recs(seqs: std::ops::RangeInclusive<u32>) -> Vec<Record> {
        seqs.map(rec).collect()
    }

    #[test]
    fn failures_count_per_head_record_and_survive_a_re_read() {
        let mut r = Redelivery::default();
        assert_eq!(r.plan(&recs(10..=19)), Plan::Whole(1));
        assert_eq!(r.failed(&rec(10), &rec(19), err("e1")), 1);
        assert_eq!(r.failed(&rec(10), &rec(19), err("e2")), 2);
        // After a restart the same records are read again, with earlier ones before them and
        // later ones (never delivered) after them.
        assert_eq!(r.plan(&recs(1..=9)), Plan::Whole(1));
        assert_eq!(
            r.plan(&recs(5..=25)),
            Plan::Split {
                from: 5,
                to: 15,
                attempt: 3
            }
        );
        assert_eq!(
            r.plan(&recs(10..=25)),
            Plan::Split {
                from: 0,
                to: 10,
                attempt: 3
            }
        );
        assert_eq!(r.plan(&recs(10..=19)), Plan::Whole(3));
        assert_eq!(r.plan(&recs(10..=14)), Plan::Whole(3));
        assert_eq!(r.failing().unwrap().last_error.to_string(), "e2");
        r.passed(&rec(9));
        assert!(r.failing().is_some(), "a batch before the failing record");
        r.passed(&rec(25));
        assert!(r.failing().is_none());
    }

    #[test]
    fn only_the_records_of_the_latest_failed_delivery_count_as_failed() {
        let mut r = Redelivery::default();
        r.failed(&rec(10), &rec(14), err("e1"));
        // A narrower re-read failed: the records after it are failing no more.
        r.failed(&rec(10), &rec(12), err("e2"));
        assert_eq!(
            r.plan(&recs(10..=30)),
            Plan::Split {
                from: 0,
                to: 3,
                attempt: 3
            }
        );
    }

    #[test]
    fn a_checkpoint_past_the_failing_record_forgets_it() {
        let mut r = Redelivery::default();
        r.failed(&rec(10), &rec(11), err("e"));
        assert_eq!(r.plan(&recs(12..=20)), Plan::Whole(1));
        assert!(r.failing().is_none());
    }

    #[test]
    fn skipped_records_are_dropped_until_a_checkpoint_covers_them() {
        let mut r = Redelivery::default();
        r.failed(&rec(10), &rec(12), err("e"));
        r.skipped(&rec(10), &rec(12));
        assert!(r.failing().is_none());
        let mut batch = recs(8..=14);
        assert_eq!(
            r.drop_skipped(&mut batch, &Checkpoint::TrimHorizon),
            3,
            "{batch:?}"
        );
        let seqs: Vec<&str> = batch.iter().map(|r| r.sequence_number.as_str()).collect();
        assert_eq!(seqs, ["8", "9", "13", "14"]);
        let mut batch = recs(8..=14);
        assert_eq!(r.drop_skipped(&mut batch, &rec(12).checkpoint()), 0);
        assert_eq!(batch.len(), 7);
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        crate::backoff::seed_thread_jitter(Some(7));
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(30));
        for (failures, raw) in [
            (1u32, 500u64),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (8, 30_000),
            (40, 30_000),
        ] {
            let d = backoff_delay(failures, base, max);
            let raw = Duration::from_millis(raw);
            assert!(
                d <= raw && d >= raw / 2,
                "{failures} failures: {d:?} (raw {raw:?})"
            );
        }
        crate::backoff::seed_thread_jitter(None);
    }
}
