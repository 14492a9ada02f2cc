//! A bare lease coordinator, for tests and benchmarks of lease handling alone.

use crate::coordinator::{CoordinatorConfig, LeaseCoordinator};
use crate::lease::{LeaseStore, LeaseStoreError};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The lease coordination of one worker without consumers: it takes, renews, balances,
/// steals and loses leases exactly as a [`Scheduler`](crate::Scheduler)'s does, at the
/// scheduler's default intervals for `failover_time` (renew and take every third of it).
#[derive(Debug, Clone)]
pub struct TestCoordinator {
    inner: LeaseCoordinator,
}

impl TestCoordinator {
    /// Worker `worker_id` on `store`.
    pub fn new(store: Arc<dyn LeaseStore>, worker_id: &str, failover_time: Duration) -> Self {
        TestCoordinator {
            inner: LeaseCoordinator::new(store, CoordinatorConfig::new(worker_id, failover_time)),
        }
    }

    /// Renew and take leases until `shutdown` completes; then stop without releasing them
    /// (as a worker that dies: other workers take them after the failover time).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let run = self.inner.run(stop.clone());
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            () = shutdown => {
                stop.cancel();
                run.await;
            }
        }
    }

    /// One take round by hand (instead of [`run`](Self::run)): scan the table and take what
    /// the taker decides. Returns the keys taken.
    pub async fn take_round(&self) -> Result<Vec<String>, LeaseStoreError> {
        let report = self.inner.take_round().await?;
        Ok(report.taken.into_iter().map(|(key, _)| key).collect())
    }

    /// One renewal pass by hand: renew every held lease once.
    pub async fn renew_all(&self) {
        self.inner.renew_all().await
    }

    /// The leases held now.
    pub fn held_keys(&self) -> BTreeSet<String> {
        self.inner.held_keys()
    }

    /// The renewal interval in use.
    pub fn renew_interval(&self) -> Duration {
        self.inner.config().renew_interval
    }
}
