//! One composable observing layer over any [`LeaseStore`]: [`ObservedLeaseStore`] calls a
//! [`LeaseStoreHooks`] before and after every call of the inner store.
//!
//! Hooks default to no-ops, so a hook implements only what it needs: count calls
//! ([`CallCounter`]), audit writes, stall a worker, or inject faults ([`FaultHooks`]). A hook
//! may also answer a call itself in [`before`](LeaseStoreHooks::before) (the inner store is
//! then not called) or replace the outcome in [`after`](LeaseStoreHooks::after). Layers
//! compose by nesting (`ObservedLeaseStore::new(Arc::new(ObservedLeaseStore::new(..)), ..)`),
//! and a hook may call other hooks from its own methods to interleave them.
//!
//! ```
//! use kinesis_client::lease::LeaseStore;
//! use kinesis_client::testing::{CallCounter, InMemoryLeaseStore, LeaseOp, ObservedLeaseStore};
//! use std::sync::Arc;
//!
//! # tokio_test_block_on(async {
//! let store = ObservedLeaseStore::new(Arc::new(InMemoryLeaseStore::new()), CallCounter::default());
//! store.list_leases().await.unwrap();
//! assert_eq!(store.hooks().count(LeaseOp::List), 1);
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

use crate::error::ErrorKind;
use crate::lease::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use crate::sync::Mutex;
use crate::testing::lease_store::{Fault, FaultInjector, LeaseOp};
use async_trait::async_trait;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One call of [`LeaseStore`], with its arguments.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Unique per call within one layer: lets a hook match its `after` to its `before`.
    pub id: u64,
    /// The method and its arguments.
    pub args: Args<'a>,
}

/// The arguments of a [`LeaseStore`] call, one variant per method.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Args<'a> {
    /// `create_table_if_not_exists`
    CreateTable,
    /// `create_lease_if_not_exists`
    Create(&'a Lease),
    /// `list_leases`
    List,
    /// `list_leases_consistent`
    ListConsistent,
    /// `get_lease`
    Get(&'a str),
    /// `renew_lease`
    Renew(&'a Lease),
    /// `take_lease` (lease, new owner)
    Take(&'a Lease, &'a str),
    /// `evict_lease`
    Evict(&'a Lease),
    /// `update_lease`
    Update(&'a Lease),
    /// `update_child_shard_ids` (key, child shard ids)
    UpdateChildren(&'a str, &'a [String]),
    /// `delete_lease`
    Delete(&'a str),
    /// `assign_lease` (lease, new owner)
    Assign(&'a Lease, &'a str),
    /// `start_handoff` (lease, new owner)
    StartHandoff(&'a Lease, &'a str),
    /// `lease_keys_owned_by` (owner)
    ListOwned(&'a str),
    /// `create_owner_index_if_not_exists`
    CreateIndex,
}

impl Call<'_> {
    /// The method.
    pub fn op(&self) -> LeaseOp {
        match self.args {
            Args::CreateTable => LeaseOp::CreateTable,
            Args::Create(_) => LeaseOp::Create,
            Args::List | Args::ListConsistent => LeaseOp::List,
            Args::Get(_) => LeaseOp::Get,
            Args::Renew(_) => LeaseOp::Renew,
            Args::Take(..) => LeaseOp::Take,
            Args::Evict(_) => LeaseOp::Evict,
            Args::Update(_) => LeaseOp::Update,
            Args::UpdateChildren(..) => LeaseOp::UpdateChildren,
            Args::Delete(_) => LeaseOp::Delete,
            Args::Assign(..) => LeaseOp::Assign,
            Args::StartHandoff(..) => LeaseOp::StartHandoff,
            Args::ListOwned(_) => LeaseOp::ListOwned,
            Args::CreateIndex => LeaseOp::CreateIndex,
        }
    }

    /// The lease the call concerns, if one.
    pub fn lease_key(&self) -> Option<&str> {
        match self.args {
            Args::CreateTable
            | Args::List
            | Args::ListConsistent
            | Args::ListOwned(_)
            | Args::CreateIndex => None,
            Args::Create(l) | Args::Renew(l) | Args::Take(l, _) | Args::Evict(l) => Some(&l.key),
            Args::Update(l) | Args::Assign(l, _) | Args::StartHandoff(l, _) => Some(&l.key),
            Args::Get(k) | Args::UpdateChildren(k, _) | Args::Delete(k) => Some(k),
        }
    }

    /// The lease passed to the call (create, renew, take, evict, update), if one.
    pub fn lease(&self) -> Option<&Lease> {
        match self.args {
            Args::Create(l) | Args::Renew(l) | Args::Take(l, _) | Args::Evict(l) => Some(l),
            Args::Update(l) | Args::Assign(l, _) | Args::StartHandoff(l, _) => Some(l),
            _ => None,
        }
    }
}

/// What a call returned when it succeeded, one variant per return type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived, like `WriteOutcome`
pub enum Reply {
    /// `create_table_if_not_exists`, `delete_lease`.
    Done,
    /// `create_lease_if_not_exists`: whether the lease was created.
    Created(bool),
    /// `list_leases`.
    Leases(Vec<Lease>),
    /// `get_lease`.
    Lease(Option<Lease>),
    /// The conditional writes.
    Write(WriteOutcome),
    /// `lease_keys_owned_by`.
    Keys(Vec<String>),
    /// `create_owner_index_if_not_exists`: whether the index is usable.
    Ready(bool),
}

/// The outcome of one call.
pub type Outcome = Result<Reply, LeaseStoreError>;

/// Hooks around each call of an [`ObservedLeaseStore`]. Every method defaults to a no-op.
#[async_trait]
pub trait LeaseStoreHooks: Send + Sync + 'static {
    /// Before the inner store sees `call`. Returning `Some` answers the call without calling
    /// the inner store (and without this hook's `after`); the answer must fit the method
    /// (e.g. [`Reply::Write`] for a conditional write).
    async fn before(&self, call: &Call<'_>) -> Option<Outcome> {
        let _ = call;
        None
    }

    /// After the inner store answered a call that `before` let through; may replace `outcome`.
    async fn after(&self, call: &Call<'_>, outcome: &mut Outcome) {
        let _ = (call, outcome);
    }
}

/// A [`LeaseStore`] that runs `hooks` around every call of `inner`.
pub struct ObservedLeaseStore<H> {
    inner: Arc<dyn LeaseStore>,
    hooks: H,
    calls: AtomicU64,
}

impl<H> fmt::Debug for ObservedLeaseStore<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedLeaseStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<H: LeaseStoreHooks> ObservedLeaseStore<H> {
    /// `inner` behind `hooks`.
    pub fn new(inner: Arc<dyn LeaseStore>, hooks: H) -> Self {
        ObservedLeaseStore {
            inner,
            hooks,
            calls: AtomicU64::new(0),
        }
    }

    /// The hooks (e.g. to read what they recorded).
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// The store behind the hooks.
    pub fn inner(&self) -> &Arc<dyn LeaseStore> {
        &self.inner
    }

    async fn observe<F>(&self, args: Args<'_>, run: F) -> Outcome
    where
        F: std::future::Future<Output = Outcome> + Send,
    {
        let call = Call {
            id: self.calls.fetch_add(1, Ordering::Relaxed),
            args,
        };
        observe(&self.hooks, &call, run).await
    }
}

/// Run `hooks` around `run` for `call` (the one place that defines the hook order).
pub(crate) async fn observe<H, F>(hooks: &H, call: &Call<'_>, run: F) -> Outcome
where
    H: LeaseStoreHooks + ?Sized,
    F: std::future::Future<Output = Outcome>,
{
    if let Some(answer) = hooks.before(call).await {
        return answer;
    }
    let mut outcome = run.await;
    hooks.after(call, &mut outcome).await;
    outcome
}

fn mismatch(op: LeaseOp, reply: &Reply) -> ! {
    panic!("lease store hook answered {op:?} with {reply:?}")
}

pub(crate) fn into_done(op: LeaseOp, o: Outcome) -> Result<(), LeaseStoreError> {
    match o? {
        Reply::Done => Ok(()),
        other => mismatch(op, &other),
    }
}

pub(crate) fn into_created(o: Outcome) -> Result<bool, LeaseStoreError> {
    match o? {
        Reply::Created(c) => Ok(c),
        Reply::Write(w) => Ok(matches!(w, WriteOutcome::Applied(_))),
        other => mismatch(LeaseOp::Create, &other),
    }
}

fn into_leases(o: Outcome) -> Result<Vec<Lease>, LeaseStoreError> {
    match o? {
        Reply::Leases(l) => Ok(l),
        other => mismatch(LeaseOp::List, &other),
    }
}

fn into_lease(o: Outcome) -> Result<Option<Lease>, LeaseStoreError> {
    match o? {
        Reply::Lease(l) => Ok(l),
        other => mismatch(LeaseOp::Get, &other),
    }
}

pub(crate) fn into_keys(o: Outcome) -> Result<Vec<String>, LeaseStoreError> {
    match o? {
        Reply::Keys(k) => Ok(k),
        other => mismatch(LeaseOp::ListOwned, &other),
    }
}

pub(crate) fn into_ready(o: Outcome) -> Result<bool, LeaseStoreError> {
    match o? {
        Reply::Ready(r) => Ok(r),
        Reply::Done => Ok(true),
        other => mismatch(LeaseOp::CreateIndex, &other),
    }
}

pub(crate) fn into_write(op: LeaseOp, o: Outcome) -> Result<WriteOutcome, LeaseStoreError> {
    match o? {
        Reply::Write(w) => Ok(w),
        other => mismatch(op, &other),
    }
}

#[async_trait]
impl<H: LeaseStoreHooks> LeaseStore for ObservedLeaseStore<H> {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        let run = async {
            self.inner
                .create_table_if_not_exists()
                .await
                .map(|()| Reply::Done)
        };
        into_done(
            LeaseOp::CreateTable,
            self.observe(Args::CreateTable, run).await,
        )
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let run = async {
            self.inner
                .create_lease_if_not_exists(lease)
                .await
                .map(Reply::Created)
        };
        into_created(self.observe(Args::Create(lease), run).await)
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let run = async { self.inner.list_leases().await.map(Reply::Leases) };
        into_leases(self.observe(Args::List, run).await)
    }

    async fn list_leases_consistent(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let run = async { self.inner.list_leases_consistent().await.map(Reply::Leases) };
        into_leases(self.observe(Args::ListConsistent, run).await)
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        let run = async { self.inner.get_lease(key).await.map(Reply::Lease) };
        into_lease(self.observe(Args::Get(key), run).await)
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async { self.inner.renew_lease(lease).await.map(Reply::Write) };
        into_write(LeaseOp::Renew, self.observe(Args::Renew(lease), run).await)
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async { self.inner.take_lease(lease, owner).await.map(Reply::Write) };
        into_write(
            LeaseOp::Take,
            self.observe(Args::Take(lease, owner), run).await,
        )
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async { self.inner.evict_lease(lease).await.map(Reply::Write) };
        into_write(LeaseOp::Evict, self.observe(Args::Evict(lease), run).await)
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async { self.inner.update_lease(lease).await.map(Reply::Write) };
        into_write(
            LeaseOp::Update,
            self.observe(Args::Update(lease), run).await,
        )
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async {
            let out = self.inner.update_child_shard_ids(key, child_shard_ids);
            out.await.map(Reply::Write)
        };
        let args = Args::UpdateChildren(key, child_shard_ids);
        into_write(LeaseOp::UpdateChildren, self.observe(args, run).await)
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        let run = async { self.inner.delete_lease(key).await.map(|()| Reply::Done) };
        into_done(LeaseOp::Delete, self.observe(Args::Delete(key), run).await)
    }

    async fn assign_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async {
            self.inner
                .assign_lease(lease, owner)
                .await
                .map(Reply::Write)
        };
        let args = Args::Assign(lease, owner);
        into_write(LeaseOp::Assign, self.observe(args, run).await)
    }

    async fn start_handoff(
        &self,
        lease: &Lease,
        to: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let run = async { self.inner.start_handoff(lease, to).await.map(Reply::Write) };
        let args = Args::StartHandoff(lease, to);
        into_write(LeaseOp::StartHandoff, self.observe(args, run).await)
    }

    fn fleet_store(
        &self,
        application: &str,
        config: &crate::fleet::FleetConfig,
    ) -> Option<Arc<dyn crate::fleet::FleetStore>> {
        self.inner.fleet_store(application, config)
    }

    async fn lease_keys_owned_by(&self, owner: &str) -> Result<Vec<String>, LeaseStoreError> {
        let run = async { self.inner.lease_keys_owned_by(owner).await.map(Reply::Keys) };
        into_keys(self.observe(Args::ListOwned(owner), run).await)
    }

    async fn create_owner_index_if_not_exists(&self) -> Result<bool, LeaseStoreError> {
        let run = async {
            let out = self.inner.create_owner_index_if_not_exists();
            out.await.map(Reply::Ready)
        };
        into_ready(self.observe(Args::CreateIndex, run).await)
    }
}

/// The table name injected errors report.
const FAULT_TABLE: &str = "in-memory";

/// Injects the [`Fault`]s a [`FaultInjector`] chooses, per call.
///
/// * [`Fault::Throttle`] / [`Fault::Timeout`]: fail without calling the inner store (a timeout
///   first waits [`FaultInjector::timeout_wait`]).
/// * [`Fault::TimeoutAfterApply`]: let a write through, then wait `timeout_wait` and fail (the
///   response was lost); reads are not affected.
/// * [`Fault::Delay`]: wait, then let the call through.
/// * [`Fault::Conflict`]: answer a write with a lost condition without writing (a create
///   answers "existed", a delete succeeds without deleting; reads are not affected).
///
/// Installed on one layer, it is per handle: wrap each worker's view of a shared
/// [`InMemoryLeaseStore`](crate::testing::InMemoryLeaseStore) in its own layer to give
/// each worker its own faults. The injector can be replaced at any time.
#[derive(Default)]
pub struct FaultHooks {
    injector: Mutex<Option<Arc<dyn FaultInjector>>>,
    fail_after: Mutex<HashSet<u64>>,
}

impl fmt::Debug for FaultHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = self.injector.lock().is_some();
        f.debug_struct("FaultHooks")
            .field("installed", &on)
            .finish()
    }
}

impl FaultHooks {
    /// Faults chosen by `injector`.
    pub fn new(injector: Arc<dyn FaultInjector>) -> Self {
        let hooks = FaultHooks::default();
        hooks.set_injector(Some(injector));
        hooks
    }

    /// Install (or with `None`, remove) the injector.
    pub fn set_injector(&self, injector: Option<Arc<dyn FaultInjector>>) {
        *self.injector.lock() = injector;
    }

    /// True when `before` let `call` through to fail it in `after` ([`Fault::TimeoutAfterApply`]).
    pub fn fails_after(&self, call: &Call<'_>) -> bool {
        self.fail_after.lock().contains(&call.id)
    }

    fn error(call: &Call<'_>, kind: ErrorKind, message: &str) -> LeaseStoreError {
        LeaseStoreError::simulated(kind, call.op(), FAULT_TABLE, call.lease_key(), message)
    }

    async fn wait(injector: &Arc<dyn FaultInjector>) {
        let wait = injector.timeout_wait();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl LeaseStoreHooks for FaultHooks {
    async fn before(&self, call: &Call<'_>) -> Option<Outcome> {
        let injector = self.injector.lock().clone()?;
        let fault = injector.fault(call.op(), call.lease_key())?;
        match fault {
            Fault::Throttle => Some(Err(Self::error(
                call,
                ErrorKind::Throttled,
                "injected throttling",
            ))),
            Fault::Timeout => {
                Self::wait(&injector).await;
                Some(Err(Self::error(
                    call,
                    ErrorKind::Retryable,
                    "injected timeout",
                )))
            }
            Fault::TimeoutAfterApply => {
                if !matches!(
                    call.args,
                    Args::CreateTable | Args::List | Args::ListConsistent | Args::Get(_)
                ) {
                    self.fail_after.lock().insert(call.id);
                }
                None
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                None
            }
            Fault::Conflict => match call.args {
                Args::CreateTable
                | Args::List
                | Args::ListConsistent
                | Args::Get(_)
                | Args::ListOwned(_)
                | Args::CreateIndex => None,
                Args::Create(_) => Some(Ok(Reply::Created(false))),
                Args::Delete(_) => Some(Ok(Reply::Done)),
                _ => Some(Ok(Reply::Write(WriteOutcome::Conflict))),
            },
        }
    }

    async fn after(&self, call: &Call<'_>, outcome: &mut Outcome) {
        if !self.fail_after.lock().remove(&call.id) {
            return;
        }
        let injector = self.injector.lock().clone();
        if let Some(injector) = injector {
            Self::wait(&injector).await;
        }
        *outcome = Err(Self::error(
            call,
            ErrorKind::Retryable,
            "injected timeout after the write was applied",
        ));
    }
}

/// Counts calls per method (in `before`, so failed and answered calls count too).
#[derive(Debug, Default)]
pub struct CallCounter {
    counts: [AtomicU64; LeaseOp::ALL.len()],
}

impl CallCounter {
    /// Calls of `op` so far.
    pub fn count(&self, op: LeaseOp) -> u64 {
        self.counts[op.index()].load(Ordering::Relaxed)
    }

    /// Calls so far, per method, in [`LeaseOp::ALL`] order.
    pub fn counts(&self) -> [u64; LeaseOp::ALL.len()] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

#[async_trait]
impl LeaseStoreHooks for CallCounter {
    async fn before(&self, call: &Call<'_>) -> Option<Outcome> {
        self.counts[call.op().index()].fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// No hooks at all (every call goes straight through).
#[async_trait]
impl LeaseStoreHooks for () {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::testing::InMemoryLeaseStore;

    #[tokio::test]
    async fn an_observed_in_memory_store_passes_the_contract() {
        let store = ObservedLeaseStore::new(Arc::new(InMemoryLeaseStore::new()), ());
        crate::testing::contract::run(&store, "").await;
    }

    #[tokio::test]
    async fn counts_each_method_and_faults_apply_per_layer() {
        let table = InMemoryLeaseStore::new();
        let counted = ObservedLeaseStore::new(Arc::new(table.clone()), CallCounter::default());
        let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
        assert!(counted.create_lease_if_not_exists(&lease).await.unwrap());
        counted.list_leases().await.unwrap();
        counted.list_leases().await.unwrap();
        assert_eq!(counted.hooks().count(LeaseOp::Create), 1);
        assert_eq!(counted.hooks().count(LeaseOp::List), 2);

        let faulty = ObservedLeaseStore::new(
            Arc::new(table.clone()),
            FaultHooks::new(Arc::new(|op: LeaseOp, _: Option<&str>| {
                (op == LeaseOp::Renew).then_some(Fault::TimeoutAfterApply)
            })),
        );
        let err = faulty.renew_lease(&lease).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Retryable);
        // Applied all the same, and the other handle of the table has no faults.
        assert_eq!(table.snapshot()[&lease.key].counter, 1);
        assert!(counted.get_lease(&lease.key).await.unwrap().is_some());
    }
}
