//! An in-memory [`FleetStore`] with DynamoDB's conditional semantics, and a switch to make it
//! fail (an outage of the fleet's tables).

use crate::error::{Cause, ErrorKind};
use crate::fleet::{
    ClientVersion, FleetStore, FleetStoreError, LockItem, MigrationState, WorkerMetricStats,
};
use crate::sync::Mutex;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Tables {
    migration: Option<MigrationState>,
    lock: Option<LockItem>,
    metrics: BTreeMap<String, WorkerMetricStats>,
    prepared: bool,
}

/// A fleet's items in memory. Cheap to clone: clones share the items.
#[derive(Clone, Default)]
pub struct InMemoryFleetStore {
    tables: Arc<Mutex<Tables>>,
    failing: Arc<AtomicBool>,
}

impl fmt::Debug for InMemoryFleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tables.lock();
        f.debug_struct("InMemoryFleetStore")
            .field("migration", &t.migration)
            .field("lock", &t.lock)
            .field("workers", &t.metrics.len())
            .finish()
    }
}

impl InMemoryFleetStore {
    /// No items.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make every call fail with a retryable error (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The lock item now.
    pub fn lock_item(&self) -> Option<LockItem> {
        self.tables.lock().lock.clone()
    }

    /// The migration item now.
    pub fn migration(&self) -> Option<MigrationState> {
        self.tables.lock().migration.clone()
    }

    /// Set the fleet's client version directly (test set-up, or a migration tool's write).
    pub fn set_client_version(&self, version: ClientVersion) {
        let mut t = self.tables.lock();
        t.prepared = true;
        t.migration = Some(MigrationState::new(version, "test"));
    }

    /// The metrics rows now, by worker.
    pub fn metrics(&self) -> BTreeMap<String, WorkerMetricStats> {
        self.tables.lock().metrics.clone()
    }

    fn with<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Tables) -> R,
    ) -> Result<R, FleetStoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(FleetStoreError {
                operation,
                table: "in-memory fleet".into(),
                cause: Cause::simulated(ErrorKind::Retryable, "simulated outage"),
            });
        }
        Ok(f(&mut self.tables.lock()))
    }
}

#[async_trait]
impl FleetStore for InMemoryFleetStore {
    async fn prepare_for_3x(&self) -> Result<(), FleetStoreError> {
        self.with("prepare_for_3x", |t| t.prepared = true)
    }

    async fn migration_state(&self) -> Result<Option<MigrationState>, FleetStoreError> {
        self.with("migration_state", |t| t.migration.clone())
    }

    async fn create_migration_state(
        &self,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        self.with("create_migration_state", |t| {
            if t.migration.is_some() {
                return false;
            }
            t.migration = Some(state.clone());
            true
        })
    }

    async fn update_migration_state(
        &self,
        expected: &ClientVersion,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        self.with("update_migration_state", |t| {
            if t.migration.as_ref().map(|m| &m.client_version) != Some(expected) {
                return false;
            }
            t.migration = Some(state.clone());
            true
        })
    }

    async fn lock(&self) -> Result<Option<LockItem>, FleetStoreError> {
        self.with("lock", |t| t.lock.clone())
    }

    async fn acquire_lock(
        &self,
        item: &LockItem,
        stale: Option<&str>,
    ) -> Result<bool, FleetStoreError> {
        self.with("acquire_lock", |t| {
            let ok = match (&t.lock, stale) {
                (None, None) => true,
                (Some(cur), Some(v)) => cur.record_version == v,
                _ => false,
            };
            if ok {
                t.lock = Some(item.clone());
            }
            ok
        })
    }

    async fn heartbeat_lock(
        &self,
        item: &LockItem,
        new_version: &str,
    ) -> Result<bool, FleetStoreError> {
        self.with("heartbeat_lock", |t| match &mut t.lock {
            Some(cur) if cur.record_version == item.record_version && cur.owner == item.owner => {
                cur.record_version = new_version.to_string();
                cur.lease_duration = item.lease_duration;
                true
            }
            _ => false,
        })
    }

    async fn release_lock(&self, item: &LockItem) -> Result<bool, FleetStoreError> {
        self.with("release_lock", |t| match &t.lock {
            Some(cur) if cur.record_version == item.record_version && cur.owner == item.owner => {
                t.lock = None;
                true
            }
            _ => false,
        })
    }

    async fn put_worker_metrics(&self, row: &WorkerMetricStats) -> Result<(), FleetStoreError> {
        self.with("put_worker_metrics", |t| {
            t.metrics.insert(row.worker_id.clone(), row.clone());
        })
    }

    async fn worker_metrics(&self) -> Result<Vec<WorkerMetricStats>, FleetStoreError> {
        self.with("worker_metrics", |t| t.metrics.values().cloned().collect())
    }

    async fn delete_worker_metrics(
        &self,
        worker_id: &str,
        last_update_s: u64,
    ) -> Result<bool, FleetStoreError> {
        self.with("delete_worker_metrics", |t| {
            match t.metrics.get(worker_id) {
                Some(r) if r.last_update_s == last_update_s => {
                    t.metrics.remove(worker_id);
                    true
                }
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_memory_fleet_store_passes_the_contract() {
        crate::testing::fleet_contract::run(&super::InMemoryFleetStore::new()).await;
    }
}
