//! A leaderless worker leaving gracefully hands its leases to live workers: it names each
//! lease's next owner (a hand-off: `checkpointOwner` = this worker, `leaseOwner` = the next one)
//! while its processors still run, so that every other worker has scanned the table and is
//! watching the leases coming to it before the processors checkpoint and the leases pass on.
//! A shard then waits for its next owner only the few hundred milliseconds of one look at the
//! lease, not the other workers' next scan.

use super::take_round::HANDOFF_POLL;
use super::{LeaseCoordinator, Protocol};
use crate::lease::WriteOutcome;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

impl LeaseCoordinator {
    /// Start handing every held lease to a live worker (the least loaded first, by the last
    /// scan): leaderless protocol and graceful hand-offs only, and unfinished leases only. The
    /// leases stay this worker's, processed and renewed, until [`LeaseCoordinator::release_all`]
    /// completes the hand-offs. Returns how long to keep processing so that every live worker
    /// has scanned the table since (zero when nothing was handed).
    pub async fn announce_leaving(&self) -> Duration {
        if self.protocol() != Protocol::Leaderless || !self.inner.config.graceful_steals {
            return Duration::ZERO;
        }
        let mut receivers = self.live_workers();
        if receivers.is_empty() {
            return Duration::ZERO;
        }
        let me = self.worker_id().to_string();
        let mut announced = 0;
        for (key, tenure, state) in self.slots() {
            let mut st = state.lock().await;
            if tenure.lost.is_cancelled()
                || st.lease.is_in_handoff()
                || st.lease.checkpoint.is_shard_end()
            {
                continue;
            }
            // The least loaded live worker gets the next lease.
            let Some((to, load)) = receivers
                .iter_mut()
                .min_by_key(|(w, n)| (**n, (*w).clone()))
            else {
                break;
            };
            match self.inner.store.start_handoff(&st.lease, to).await {
                Ok(WriteOutcome::Applied(lease)) => {
                    tracing::info!(worker_id = %me, lease_key = %key, to = %to, "leaving: this lease goes to another worker once its processor has checkpointed");
                    st.lease = lease;
                    *load += 1;
                    announced += 1;
                }
                Ok(WriteOutcome::Conflict) => {
                    tracing::debug!(lease_key = %key, "the lease changed before its hand-off; it is released as usual")
                }
                Err(e) => {
                    tracing::warn!(lease_key = %key, error = %e, "naming the lease's next owner failed; it is released as usual")
                }
            }
        }
        if announced == 0 {
            return Duration::ZERO;
        }
        self.inner.config.take_interval + HANDOFF_POLL
    }

    /// Other workers whose leases the last scan showed alive (renewed within the failover
    /// time), with how many leases each owns.
    fn live_workers(&self) -> BTreeMap<String, usize> {
        let me = self.worker_id();
        let now = Instant::now();
        let failover = self.inner.config.failover_time;
        let mut live = BTreeMap::new();
        for o in self.inner.observed.lock().values() {
            if let Some(owner) = o.lease.owner.as_deref().filter(|w| *w != me) {
                if !o.is_expired(now, failover) {
                    *live.entry(owner.to_string()).or_default() += 1;
                }
            }
        }
        live
    }
}
