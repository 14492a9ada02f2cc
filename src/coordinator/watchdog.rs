//! The expiry watchdog: loses held leases not renewed within the failover time.
//!
//! Local expiry is judged by the clock alone: a renewal or checkpoint write that hangs
//! (a stalled network, a paused process) must not keep a lease "held" here while
//! other workers take it after the failover time.

use super::LeaseCoordinator;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the per-lease gauges are reported (at most).
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

impl LeaseCoordinator {
    /// Lose overdue leases, looking again when the next one would expire, until `shutdown`
    /// is cancelled.
    pub(super) async fn run_watchdog(&self, shutdown: &CancellationToken) {
        let mut gauges_due = Instant::now();
        loop {
            let next = self.expire_overdue();
            self.inner.health.heartbeat();
            if Instant::now() >= gauges_due {
                self.report_gauges();
                gauges_due = Instant::now() + GAUGE_PERIOD;
            }
            // Wake for the gauges too, so that they stay fresh.
            let next = next.min(gauges_due);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// `CurrentLeases`, and per held lease `SecondsSinceLastCheckpoint`.
    fn report_gauges(&self) {
        let held = self.inner.held.lock();
        self.inner.metrics.current_leases(held.len());
        for slot in held.values() {
            slot.metrics
                .since_last_checkpoint(slot.checkpointed.elapsed());
        }
    }

    /// Lose every held lease whose last successful write started more than the failover time
    /// ago, whatever I/O is pending on it; returns when to look again.
    fn expire_overdue(&self) -> Instant {
        let failover = self.inner.config.failover_time;
        let now = Instant::now();
        let mut next = now + self.inner.config.renew_interval;
        let mut overdue = Vec::new();
        for (key, slot) in self.inner.held.lock().iter() {
            let written = slot.last_write.get();
            if now.saturating_duration_since(written) > failover {
                overdue.push((key.clone(), slot.tenure.token, now - written));
            } else {
                next = next.min(written + failover + Duration::from_millis(1));
            }
        }
        for (key, token, since) in overdue {
            self.lose_expired(&key, token, since);
        }
        next
    }

    /// End the tenure `token` of `key`: its last successful write started `since` ago, more
    /// than the failover time.
    pub(super) fn lose_expired(&self, key: &str, token: uuid::Uuid, since: Duration) {
        let failover = self.inner.config.failover_time;
        self.lose(
            key,
            token,
            &format!("expired locally: not renewed for {since:?} (failover time {failover:?})"),
        );
    }
}
