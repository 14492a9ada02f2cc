//! An in-memory [`LeaseStore`] with the same conditional semantics as DynamoDB, plus fault
//! injection (throttling, timeouts before or after the write applies, slow calls, forced
//! conflicts) for deterministic tests and simulation.

pub use crate::lease::LeaseOp;
use crate::lease::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use crate::sync::Mutex;
use crate::testing::observe::{
    into_created, into_done, into_keys, into_ready, into_write, observe, Args, Call, FaultHooks,
    Outcome, Reply,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

    /// How long an injected timeout waits before it fails (tokio time; default: not at all).
    fn timeout_wait(&self) -> Duration {
        Duration::ZERO
    }
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
    fleet: super::InMemoryFleetStore,
    faults: FaultHooks,
    calls: AtomicU64,
}

impl fmt::Debug for InMemoryLeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.leases.lock().len();
        f.debug_struct("InMemoryLeaseStore")
            .field("leases", &n)
            .finish()
    }
}

impl InMemoryLeaseStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Install (or with `None`, remove) a fault injector.
    pub fn set_fault_injector(&self, injector: Option<Arc<dyn FaultInjector>>) {
        self.inner.faults.set_injector(injector);
    }

    /// The fleet items of this table's application (what
    /// [`LeaseStore::fleet_store`] answers).
    pub fn fleet(&self) -> &super::InMemoryFleetStore {
        &self.inner.fleet
    }

    /// A copy of every lease, by key (for assertions).
    pub fn snapshot(&self) -> BTreeMap<String, Lease> {
        self.inner.leases.lock().clone()
    }

    /// Run `f` on the table directly, bypassing conditions and faults (test set-up).
    pub fn with_table<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Lease>) -> R) -> R {
        f(&mut self.inner.leases.lock())
    }

    /// Run `run` behind the injected faults.
    async fn faulty(&self, args: Args<'_>, run: impl FnOnce() -> Outcome) -> Outcome {
        let id = self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let call = Call { id, args };
        observe(&self.inner.faults, &call, async { run() }).await
    }

    /// A conditional write on one lease: `apply` returns the new lease or `None` (condition lost).
    async fn write(
        &self,
        args: Args<'_>,
        apply: impl FnOnce(Option<&Lease>) -> Option<Lease>,
    ) -> Outcome {
        let key = Call { id: 0, args }
            .lease_key()
            .unwrap_or_default()
            .to_string();
        self.faulty(args, || {
            let mut table = self.inner.leases.lock();
            Ok(Reply::Write(match apply(table.get(&key)) {
                Some(new) => {
                    table.insert(key.clone(), new.clone());
                    WriteOutcome::Applied(new)
                }
                None => WriteOutcome::Conflict,
            }))
        })
        .await
    }
}

fn counter_matches(current: Option<&Lease>, expected: &Lease) -> bool {
    current.is_some_and(|c| c.counter == expected.counter)
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        let out = self.faulty(Args::CreateTable, || Ok(Reply::Done)).await;
        into_done(LeaseOp::CreateTable, out)
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let out = self
            .write(Args::Create(lease), |current| match current {
                Some(_) => None,
                None => Some(lease.clone()),
            })
            .await;
        into_created(out)
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let out = self
            .faulty(Args::List, || {
                let table = self.inner.leases.lock();
                Ok(Reply::Leases(table.values().cloned().collect()))
            })
            .await;
        match out? {
            Reply::Leases(l) => Ok(l),
            other => unreachable!("list_leases answered {other:?}"),
        }
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        let out = self
            .faulty(Args::Get(key), || {
                Ok(Reply::Lease(self.inner.leases.lock().get(key).cloned()))
            })
            .await;
        match out? {
            Reply::Lease(l) => Ok(l),
            other => unreachable!("get_lease answered {other:?}"),
        }
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::Renew(lease), |current| {
                let current = current.filter(|c| {
                    counter_matches(current, lease)
                        && (c.checkpoint_owner.is_none() || lease.checkpoint_owner.is_some())
                })?;
                let mut new = current.renewed();
                if lease.throughput.is_some() {
                    new.throughput = lease.throughput;
                }
                Some(new)
            })
            .await;
        into_write(LeaseOp::Renew, out)
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::Take(lease, owner), |current| {
                let current = current.filter(|_| counter_matches(current, lease))?;
                Some(current.taken_by(owner))
            })
            .await;
        into_write(LeaseOp::Take, out)
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::Evict(lease), |current| {
                let current =
                    current.filter(|c| c.counter == lease.counter && c.owner == lease.owner)?;
                Some(current.evicted())
            })
            .await;
        into_write(LeaseOp::Evict, out)
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::Update(lease), |current| {
                let current = current.filter(|c| {
                    counter_matches(current, lease)
                        && (c.checkpoint_owner.is_none() || lease.checkpoint_owner.is_some())
                })?;
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
                if lease.throughput.is_some() {
                    new.throughput = lease.throughput;
                }
                Some(new)
            })
            .await;
        into_write(LeaseOp::Update, out)
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::UpdateChildren(key, child_shard_ids), |current| {
                let mut new = current?.clone();
                new.child_shard_ids = crate::lease::sorted(child_shard_ids.iter().cloned());
                Some(new)
            })
            .await;
        into_write(LeaseOp::UpdateChildren, out)
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        let out = self
            .faulty(Args::Delete(key), || {
                self.inner.leases.lock().remove(key);
                Ok(Reply::Done)
            })
            .await;
        into_done(LeaseOp::Delete, out)
    }

    async fn assign_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::Assign(lease, owner), |current| {
                let current = current.filter(|c| {
                    c.owner == lease.owner && c.checkpoint_owner == lease.checkpoint_owner
                })?;
                Some(current.assigned_to(owner))
            })
            .await;
        into_write(LeaseOp::Assign, out)
    }

    async fn start_handoff(
        &self,
        lease: &Lease,
        to: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let out = self
            .write(Args::StartHandoff(lease, to), |current| {
                let current =
                    current.filter(|c| c.owner == lease.owner && c.checkpoint_owner.is_none())?;
                Some(current.handing_off_to(to))
            })
            .await;
        into_write(LeaseOp::StartHandoff, out)
    }

    fn fleet_store(
        &self,
        _application: &str,
        _config: &crate::fleet::FleetConfig,
    ) -> Option<Arc<dyn crate::fleet::FleetStore>> {
        Some(Arc::new(self.inner.fleet.clone()))
    }

    async fn lease_keys_owned_by(&self, owner: &str) -> Result<Vec<String>, LeaseStoreError> {
        let out = self
            .faulty(Args::ListOwned(owner), || {
                let table = self.inner.leases.lock();
                let keys = table.values().filter(|l| l.owner.as_deref() == Some(owner));
                Ok(Reply::Keys(keys.map(|l| l.key.clone()).collect()))
            })
            .await;
        into_keys(out)
    }

    async fn create_owner_index_if_not_exists(&self) -> Result<bool, LeaseStoreError> {
        let out = self
            .faulty(Args::CreateIndex, || Ok(Reply::Ready(true)))
            .await;
        into_ready(out)
    }
}
