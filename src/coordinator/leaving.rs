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

    /// Other workers the last scan showed alive, with how many leases each owns: the owners
    /// of leases renewed within the failover time and in no hand-off (a lease in a hand-off is
    /// renewed by its outgoing owner, so it says nothing of its receiver; and a worker all of
    /// whose leases are being handed over is leaving).
    fn live_workers(&self) -> BTreeMap<String, usize> {
        let me = self.worker_id();
        let now = Instant::now();
        let failover = self.inner.config.failover_time;
        let mut live = BTreeMap::new();
        for o in self.inner.observed.lock().values() {
            if let Some(owner) = o.lease.owner.as_deref().filter(|w| *w != me) {
                if !o.is_expired(now, failover) && !o.lease.is_in_handoff() {
                    *live.entry(owner.to_string()).or_default() += 1;
                }
            }
        }
        live
    }

    /// As a leaderless worker stops (after its leases were released or passed on): give back
    /// the leases being handed to it (steals under way, and leases a leaving worker named it
    /// for), so that their outgoing owners keep them instead of passing them to a worker that
    /// will not adopt them; and release a lease passed on to it meanwhile. Without this, each
    /// would wait for expiry (the failover time).
    pub(crate) async fn give_back_incoming(&self) {
        if self.protocol() != Protocol::Leaderless {
            return;
        }
        let me = self.worker_id().to_string();
        let held = self.held_keys();
        let mine: Vec<String> = self
            .inner
            .observed
            .lock()
            .values()
            .filter(|o| {
                o.lease.owner.as_deref() == Some(me.as_str()) && !held.contains(&o.lease.key)
            })
            .map(|o| o.lease.key.clone())
            .collect();
        for key in mine {
            let Ok(Some(lease)) = self.inner.store.get_lease(&key).await else {
                continue;
            };
            if lease.owner.as_deref() != Some(me.as_str()) {
                continue;
            }
            let outcome = match lease.checkpoint_owner.clone() {
                Some(from) => self.inner.store.assign_lease(&lease, &from).await,
                None => self.inner.store.evict_lease(&lease).await,
            };
            if let Ok(WriteOutcome::Applied(_)) = outcome {
                tracing::info!(worker_id = %me, lease_key = %key, back_to = ?lease.checkpoint_owner, "stopping: a lease coming to this worker given back");
            }
        }
    }
}
