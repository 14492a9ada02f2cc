//! One worker's view of the KCL 3.x fleet's items (the `Migration3.0` item, the leader lock,
//! the workers' metrics rows): the shared [`InMemoryFleetStore`] behind the worker's
//! [`Gate`] (a paused worker's fleet calls hang too, so its lock heartbeats stop and its
//! metrics row goes stale) and the run's fleet faults ([`FleetFaults`]: one worker's outages,
//! per-call failures and slow calls). Outages of every worker are the shared store's own
//! `set_failing`, switched by the world.
//!
//! Installed with `Scheduler::with_fleet_store` in [`Mode::Fleet`](crate::Mode::Fleet) runs
//! only: other runs keep the store the lease table answers (unchanged behaviour).

use crate::faults::{FleetFault, FleetFaults};
use crate::gate::Gate;
use crate::trace::{Source, Trace};
use async_trait::async_trait;
use kinesis_client::error::{Cause, ErrorKind};
use kinesis_client::fleet::{
    ClientVersion, FleetStore, FleetStoreError, LockItem, MigrationState, WorkerMetricStats,
};
use kinesis_client::testing::InMemoryFleetStore;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// A worker's fleet store.
pub struct SimFleetStore {
    inner: InMemoryFleetStore,
    worker: String,
    gate: Gate,
    faults: Arc<FleetFaults>,
    trace: Trace,
}

impl fmt::Debug for SimFleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFleetStore")
            .field("worker", &self.worker)
            .finish()
    }
}

impl SimFleetStore {
    /// `worker`'s view of `inner`.
    pub fn new(
        inner: InMemoryFleetStore,
        worker: &str,
        gate: Gate,
        faults: Arc<FleetFaults>,
        trace: Trace,
    ) -> Self {
        SimFleetStore {
            inner,
            worker: worker.to_string(),
            gate,
            faults,
            trace,
        }
    }

    /// Run `call` (named `operation`) behind the gate and the faults.
    async fn call<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<R, FleetStoreError>>,
    ) -> Result<R, FleetStoreError> {
        self.gate.pass().await;
        match self.faults.draw(&self.worker) {
            Some(FleetFault::Fail(wait)) => {
                if !wait.is_zero() {
                    self.trace.push(
                        Source::Store,
                        Some(&self.worker),
                        None,
                        format!("fleet {operation} times out after {wait:?} (fleet-store outage)"),
                    );
                    tokio::time::sleep(wait).await;
                }
                self.gate.pass().await;
                return Err(FleetStoreError::new(
                    operation,
                    "sim fleet",
                    Cause::simulated(ErrorKind::Retryable, "injected fleet-store fault"),
                ));
            }
            Some(FleetFault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.gate.pass().await;
            }
            None => {}
        }
        let result = call.await;
        self.gate.pass().await;
        result
    }
}

#[async_trait]
impl FleetStore for SimFleetStore {
    async fn prepare_for_3x(&self) -> Result<(), FleetStoreError> {
        self.call("prepare_for_3x", self.inner.prepare_for_3x())
            .await
    }

    async fn migration_state(&self) -> Result<Option<MigrationState>, FleetStoreError> {
        self.call("migration_state", self.inner.migration_state())
            .await
    }

    async fn create_migration_state(
        &self,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        let created = self
            .call(
                "create_migration_state",
                self.inner.create_migration_state(state),
            )
            .await;
        if let Ok(true) = created {
            self.trace.push(
                Source::Store,
                Some(&self.worker),
                None,
                format!(
                    "created the fleet's Migration3.0 item: {}",
                    state.client_version
                ),
            );
        }
        created
    }

    async fn update_migration_state(
        &self,
        expected: &ClientVersion,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        self.call(
            "update_migration_state",
            self.inner.update_migration_state(expected, state),
        )
        .await
    }

    async fn lock(&self) -> Result<Option<LockItem>, FleetStoreError> {
        self.call("lock", self.inner.lock()).await
    }

    async fn acquire_lock(
        &self,
        item: &LockItem,
        stale: Option<&str>,
    ) -> Result<bool, FleetStoreError> {
        let acquired = self
            .call("acquire_lock", self.inner.acquire_lock(item, stale))
            .await;
        if let Ok(true) = acquired {
            self.trace.push(
                Source::Store,
                Some(&self.worker),
                None,
                format!(
                    "acquired the leader lock ({})",
                    if stale.is_some() {
                        "a stale one"
                    } else {
                        "none held"
                    }
                ),
            );
        }
        acquired
    }

    async fn heartbeat_lock(
        &self,
        item: &LockItem,
        new_version: &str,
    ) -> Result<bool, FleetStoreError> {
        self.call(
            "heartbeat_lock",
            self.inner.heartbeat_lock(item, new_version),
        )
        .await
    }

    async fn release_lock(&self, item: &LockItem) -> Result<bool, FleetStoreError> {
        let released = self
            .call("release_lock", self.inner.release_lock(item))
            .await;
        if let Ok(true) = released {
            self.trace.push(
                Source::Store,
                Some(&self.worker),
                None,
                "released the leader lock".to_string(),
            );
        }
        released
    }

    async fn put_worker_metrics(&self, row: &WorkerMetricStats) -> Result<(), FleetStoreError> {
        self.call("put_worker_metrics", self.inner.put_worker_metrics(row))
            .await
    }

    async fn worker_metrics(&self) -> Result<Vec<WorkerMetricStats>, FleetStoreError> {
        self.call("worker_metrics", self.inner.worker_metrics())
            .await
    }

    async fn delete_worker_metrics(
        &self,
        worker_id: &str,
        last_update_s: u64,
    ) -> Result<bool, FleetStoreError> {
        let deleted = self
            .call(
                "delete_worker_metrics",
                self.inner.delete_worker_metrics(worker_id, last_update_s),
            )
            .await;
        if let Ok(true) = deleted {
            self.trace.push(
                Source::Store,
                Some(&self.worker),
                None,
                format!("deleted the metrics row of {worker_id}"),
            );
        }
        deleted
    }
}
