//! What the coordinator keeps for the status page ([`crate::status`]): per held shard, its
//! records, restarts and samples of its lag; the worker's recent errors; and the status
//! itself, built from those and the last scan.

use super::LeaseCoordinator;
use crate::lease::Lease;
use crate::status::{
    ErrorEntry, HeldShardStatus, LeaseState, LeaseStatus, Sample, WorkerStatus, ERRORS_KEPT,
    SAMPLES_KEPT, SAMPLE_INTERVAL,
};
use crate::sync::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Records per second are measured over this window (or since the lease was taken).
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A held shard's figures for the status page, for one tenure.
#[derive(Default)]
pub(super) struct ShardBook {
    /// Records delivered to its processors.
    pub records: AtomicU64,
    /// Restarts of its processor from the last checkpoint.
    pub restarts: AtomicU64,
    samples: Mutex<VecDeque<(Instant, i64, u64)>>,
}

impl ShardBook {
    /// Add a sample: the lag now (`-1`: not known) and the records so far.
    fn sample(&self, at: Instant, behind_ms: i64) {
        let records = self.records.load(Ordering::Relaxed);
        let mut s = self.samples.lock();
        if s.len() == SAMPLES_KEPT {
            s.pop_front();
        }
        s.push_back((at, behind_ms, records));
    }
}

/// The worker's recent errors, newest last.
#[derive(Default)]
pub(super) struct ErrorLog(Mutex<VecDeque<(Instant, Option<String>, String)>>);

impl ErrorLog {
    pub(super) fn push(&self, key: Option<&str>, message: String) {
        let mut log = self.0.lock();
        if log.len() == ERRORS_KEPT {
            log.pop_front();
        }
        log.push_back((Instant::now(), key.map(str::to_string), message));
    }
}

impl LeaseCoordinator {
    /// Note an error for the status page (it is logged where it happens).
    pub(crate) fn note_error(&self, key: Option<&str>, message: impl Into<String>) {
        self.inner.errors.push(key, message.into());
    }

    /// Count a restart of the processor of held lease `key` from its last checkpoint.
    pub(crate) fn record_restart(&self, key: &str, why: &str) {
        if let Some(slot) = self.inner.held.lock().get(key) {
            slot.book.restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.note_error(
            Some(key),
            format!("processor restarted from the last checkpoint: {why}"),
        );
    }

    /// Sample every held shard every [`SAMPLE_INTERVAL`] until `shutdown`.
    pub(super) async fn run_status_sampler(&self, shutdown: &CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            for slot in self.inner.held.lock().values() {
                slot.book
                    .sample(now, slot.behind_ms.load(Ordering::Relaxed));
            }
        }
    }

    /// This worker's status (`skipped_records` 0: the scheduler fills it in).
    pub(crate) fn status(&self) -> WorkerStatus {
        let now = Instant::now();
        let failover = self.inner.config.failover_time;
        let held = self
            .inner
            .held
            .lock()
            .iter()
            .map(|(key, slot)| {
                let checkpoint = match slot.state.try_lock() {
                    Ok(st) => st.lease.checkpoint.to_string(),
                    Err(_) => slot.tenure.lease.checkpoint.to_string(),
                };
                let records = slot.book.records.load(Ordering::Relaxed);
                let samples = slot.book.samples.lock();
                // The rate since the oldest sample within the window (or since the take).
                let (from_at, from_records) = samples
                    .iter()
                    .find(|(at, _, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
                    .map(|(at, _, r)| (*at, *r))
                    .unwrap_or((slot.taken_at, 0));
                let secs = now.saturating_duration_since(from_at).as_secs_f64();
                let records_per_second = if secs > 0.0 {
                    records.saturating_sub(from_records) as f64 / secs
                } else {
                    0.0
                };
                let behind = slot.behind_ms.load(Ordering::Relaxed);
                HeldShardStatus {
                    lease_key: key.clone(),
                    checkpoint,
                    millis_behind_latest: (behind >= 0).then_some(behind),
                    records_per_second,
                    records,
                    restarts: slot.book.restarts.load(Ordering::Relaxed),
                    since_checkpoint: slot.checkpointed.elapsed(),
                    history: samples
                        .iter()
                        .map(|(at, behind, records)| Sample {
                            ago: now.saturating_duration_since(*at),
                            millis_behind_latest: (*behind >= 0).then_some(*behind),
                            records: *records,
                        })
                        .collect(),
                }
            })
            .collect();
        // The last scan, with the leases this worker holds as it holds them now (a scan
        // precedes the takes it leads to; a worker of a KCL 3.x fleet does not scan at all).
        let mine: BTreeMap<String, (Lease, Duration)> = self
            .inner
            .held
            .lock()
            .iter()
            .map(|(key, slot)| {
                let lease = match slot.state.try_lock() {
                    Ok(st) => st.lease.clone(),
                    Err(_) => slot.tenure.lease.clone(),
                };
                (key.clone(), (lease, slot.last_write.elapsed()))
            })
            .collect();
        let leases = {
            let observed = self.inner.observed.lock();
            let mut table: BTreeMap<&str, (&Lease, Duration)> = observed
                .values()
                .map(|o| {
                    let age = now.saturating_duration_since(o.last_change);
                    (o.lease.key.as_str(), (&o.lease, age))
                })
                .collect();
            for (key, (lease, age)) in &mine {
                table.insert(key, (lease, *age));
            }
            let all: Vec<&Lease> = table.values().map(|(l, _)| *l).collect();
            table
                .values()
                .map(|(lease, unchanged_for)| LeaseStatus {
                    lease_key: lease.key.clone(),
                    owner: lease.owner.clone(),
                    counter: lease.counter,
                    checkpoint: lease.checkpoint.to_string(),
                    parents: lease.parent_shard_ids.clone(),
                    throughput_kbps: lease.throughput.map(|t| t.kbps()),
                    state: LeaseState::of(lease, *unchanged_for, failover, &all),
                })
                .collect()
        };
        let errors = self
            .inner
            .errors
            .0
            .lock()
            .iter()
            .rev()
            .map(|(at, key, message)| ErrorEntry {
                ago: now.saturating_duration_since(*at),
                lease_key: key.clone(),
                message: message.clone(),
            })
            .collect();
        WorkerStatus {
            worker_id: self.worker_id().to_string(),
            health: self.inner.health.health(),
            held,
            leases,
            leases_scanned_ago: self
                .inner
                .scanned_at
                .lock()
                .map(|at| now.saturating_duration_since(at)),
            errors,
            skipped_records: 0,
        }
    }
}
