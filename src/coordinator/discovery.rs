//! KCL 3.x discovery: under [`Protocol::Assigned`](super::Protocol::Assigned) the worker never
//! takes; it looks for the leases a leader assigned it (`leaseOwner` = this worker, no hand-off
//! under way) every `discovery_interval`, and adopts each with a renewal (which proves the
//! assignment still stands and starts its tenure).

use super::LeaseCoordinator;
use crate::lease::{Lease, LeaseStoreError, WriteOutcome};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl LeaseCoordinator {
    /// One discovery round: adopt the leases assigned to this worker that it does not hold.
    /// Returns how many it adopted.
    pub async fn discovery_round(&self) -> Result<usize, LeaseStoreError> {
        let started = Instant::now();
        let keys = self.inner.store.lease_keys_owned_by(self.worker_id()).await;
        self.inner.health.scan(keys.is_ok());
        let held = self.held_keys();
        let new: Vec<String> = keys?.into_iter().filter(|k| !held.contains(k)).collect();
        if new.is_empty() {
            return Ok(0);
        }
        let leases = futures::future::join_all(new.iter().map(|k| self.inner.store.get_lease(k)))
            .await
            .into_iter()
            .filter_map(|r| match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(worker_id = %self.worker_id(), error = %e, "reading an assigned lease failed; will retry");
                    None
                }
            })
            .collect::<Vec<_>>();
        let adopted = self.adopt_all_assigned(self.of_this_mode(leases)).await;
        if adopted > 0 {
            tracing::debug!(worker_id = %self.worker_id(), adopted, took = ?started.elapsed(), "discovery round");
        }
        Ok(adopted)
    }

    /// Adopt `lease`, assigned to this worker by a leader (read just now), with a renewal. Not
    /// when a hand-off to this worker is still under way (its outgoing owner processes it until
    /// it has checkpointed), when the worker is shutting down, or when it holds it already.
    /// Call [`LeaseCoordinator::publish`] afterwards.
    pub(crate) async fn adopt_assigned(&self, lease: Lease) -> bool {
        let me = self.worker_id();
        if lease.owner.as_deref() != Some(me)
            || lease.is_in_handoff()
            || !self.inner.taking.load(Ordering::SeqCst)
            || self.inner.held.lock().contains_key(&lease.key)
        {
            return false;
        }
        let started = Instant::now();
        match self.inner.store.renew_lease(&lease).await {
            Ok(WriteOutcome::Applied(renewed)) => {
                if started.elapsed() >= self.inner.config.failover_time {
                    return false;
                }
                tracing::info!(worker_id = %me, lease_key = %renewed.key, "assigned lease adopted");
                self.inner.metrics.take_lease(true, started.elapsed());
                self.adopt(renewed, started);
                true
            }
            Ok(WriteOutcome::Conflict) => false,
            Err(e) => {
                tracing::warn!(worker_id = %me, lease_key = %lease.key, error = %e, "adopting an assigned lease failed; will retry");
                false
            }
        }
    }

    /// Adopt `leases`, assigned or passed on to this worker, at once (a renewal each; see
    /// [`LeaseCoordinator::adopt_assigned`]), and publish. Returns how many it adopted.
    pub(crate) async fn adopt_all_assigned(&self, leases: Vec<Lease>) -> usize {
        let adopted = futures::future::join_all(leases.into_iter().map(|l| self.adopt_assigned(l)))
            .await
            .into_iter()
            .filter(|a| *a)
            .count();
        if adopted > 0 {
            self.publish();
        }
        adopted
    }
}
