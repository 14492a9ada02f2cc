//! An in-memory [`LeaseStore`] with the same conditional semantics as DynamoDB, plus fault
//! injection (throttling, timeouts before or after the write applies, slow calls, forced
//! conflicts) for deterministic tests and simulation.

pub use super::LeaseOp;
use super::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use crate::error::ErrorKind;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault to inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with a throttling error; nothing is written.
    Throttle,
    /// Fail with a timeout; nothing is written.
    Timeout,
    /// Apply the write, then fail with a timeout (the response was lost).
    TimeoutAfterApply,
    /// Wait this long (tokio time), then proceed normally.
    Delay(Duration),
    /// Report a lost condition without writing.
    Conflict,
}

/// Decides which calls fail. Called once per operation.
pub trait FaultInjector: Send + Sync {
    /// The fault for this call, if any.
    fn fault(&self, op: LeaseOp, lease_key: Option<&str>) -> Option<Fault>;
}

impl<F> FaultInjector for F
where
    F: Fn(LeaseOp, Option<&str>) -> Option<Fault> + Send + Sync,
{
    fn fault(&self, op: LeaseOp, lease_key: Option<&str>) -> Option<Fault> {
        self(op, lease_key)
    }
}

/// A lease table in memory. Cheap to clone: clones share the table.
#[derive(Clone, Default)]
pub struct InMemoryLeaseStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    leases: Mutex<BTreeMap<String, Lease>>,
    faults: Mutex<Option<Arc<dyn FaultInjector>>>,
}

impl fmt::Debug for InMemoryLeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.leases.lock().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("InMemoryLeaseStore")
            .field("leases", &n)
            .finish()
    }
}

const TABLE: &str = "in-memory";

impl InMemoryLeaseStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Install (or with `None`, remove) a fault injector.
    pub fn set_fault_injector(&self, injector: Option<Arc<dyn FaultInjector>>) {
        *self.inner.faults.lock().unwrap() = injector;
    }

    /// A copy of every lease, by key (for assertions).
    pub fn snapshot(&self) -> BTreeMap<String, Lease> {
        self.inner.leases.lock().unwrap().clone()
    }

    /// Run `f` on the table directly, bypassing conditions and faults (test set-up).
    pub fn with_table<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Lease>) -> R) -> R {
        f(&mut self.inner.leases.lock().unwrap())
    }

    /// Inject the configured fault, if any. `Ok(true)` means "apply, then time out".
    async fn before(&self, op: LeaseOp, key: Option<&str>) -> Result<FaultAfter, LeaseStoreError> {
        let injector = self.inner.faults.lock().unwrap().clone();
        let Some(fault) = injector.and_then(|i| i.fault(op, key)) else {
            return Ok(FaultAfter::None);
        };
        let err = |kind, msg: &str| LeaseStoreError::simulated(kind, op, TABLE, key, msg);
        match fault {
            Fault::Throttle => Err(err(ErrorKind::Throttled, "injected throttling")),
            Fault::Timeout => Err(err(ErrorKind::Retryable, "injected timeout")),
            Fault::TimeoutAfterApply => Ok(FaultAfter::TimeoutAfterApply),
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(FaultAfter::None)
            }
            Fault::Conflict => Ok(FaultAfter::Conflict),
        }
    }

    /// A conditional write on one lease: `apply` returns the new lease or `None` (condition lost).
    async fn write(
        &self,
        op: LeaseOp,
        key: &str,
        apply: impl FnOnce(Option<&Lease>) -> Option<Lease>,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let after = self.before(op, Some(key)).await?;
        if after == FaultAfter::Conflict {
            return Ok(WriteOutcome::Conflict);
        }
        let outcome = {
            let mut table = self.inner.leases.lock().unwrap();
            match apply(table.get(key)) {
                Some(new) => {
                    table.insert(key.to_string(), new.clone());
                    WriteOutcome::Applied(new)
                }
                None => WriteOutcome::Conflict,
            }
        };
        if after == FaultAfter::TimeoutAfterApply {
            return Err(LeaseStoreError::simulated(
                ErrorKind::Retryable,
                op,
                TABLE,
                Some(key),
                "injected timeout after the write was applied",
            ));
        }
        Ok(outcome)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FaultAfter {
    None,
    TimeoutAfterApply,
    Conflict,
}

fn counter_matches(current: Option<&Lease>, expected: &Lease) -> bool {
    current.is_some_and(|c| c.counter == expected.counter)
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        self.before(LeaseOp::CreateTable, None).await?;
        Ok(())
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let outcome = self
            .write(LeaseOp::Create, &lease.key, |current| match current {
                Some(_) => None,
                None => Some(lease.clone()),
            })
            .await?;
        Ok(matches!(outcome, WriteOutcome::Applied(_)))
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.before(LeaseOp::List, None).await?;
        Ok(self
            .inner
            .leases
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect())
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        self.before(LeaseOp::Get, Some(key)).await?;
        Ok(self.inner.leases.lock().unwrap().get(key).cloned())
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(LeaseOp::Renew, &lease.key, |current| {
            let current = current.filter(|_| counter_matches(current, lease))?;
            Some(current.renewed())
        })
        .await
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(LeaseOp::Take, &lease.key, |current| {
            let current = current.filter(|_| counter_matches(current, lease))?;
            Some(current.taken_by(owner))
        })
        .await
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(LeaseOp::Evict, &lease.key, |current| {
            let current =
                current.filter(|c| c.counter == lease.counter && c.owner == lease.owner)?;
            Some(current.evicted())
        })
        .await
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(LeaseOp::Update, &lease.key, |current| {
            let current = current.filter(|_| counter_matches(current, lease))?;
            let mut new = current.clone();
            new.counter += 1;
            new.checkpoint = lease.checkpoint.clone();
            new.pending_checkpoint = lease.pending_checkpoint.clone();
            new.pending_checkpoint_state = lease.pending_checkpoint_state.clone();
            new.owner_switches_since_checkpoint = lease.owner_switches_since_checkpoint;
            if !lease.child_shard_ids.is_empty() {
                new.child_shard_ids = lease.child_shard_ids.clone();
            }
            if lease.hash_key_range.is_some() {
                new.hash_key_range = lease.hash_key_range;
            }
            Some(new)
        })
        .await
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(LeaseOp::UpdateChildren, key, |current| {
            let mut new = current?.clone();
            new.child_shard_ids = super::sorted(child_shard_ids.iter().cloned());
            Some(new)
        })
        .await
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        let after = self.before(LeaseOp::Delete, Some(key)).await?;
        if after != FaultAfter::Conflict {
            self.inner.leases.lock().unwrap().remove(key);
        }
        if after == FaultAfter::TimeoutAfterApply {
            return Err(LeaseStoreError::simulated(
                ErrorKind::Retryable,
                LeaseOp::Delete,
                TABLE,
                Some(key),
                "injected timeout after the write was applied",
            ));
        }
        Ok(())
    }
}
