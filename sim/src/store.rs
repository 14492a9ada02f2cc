//! One worker's view of the shared lease table: its network to DynamoDB.
//!
//! [`SimLeaseStore`] wraps the shared [`InMemoryLeaseStore`] (which itself has no faults
//! installed, so every inner call completes in the poll that starts it) and adds, per call:
//!
//! 1. the worker's [`Gate`] (a paused worker's calls hang, before and after the table sees them);
//! 2. a fault drawn from the run's [`StoreFaults`]: throttling, timeouts before or after the
//!    write applies, slow calls, spurious conflicts;
//! 3. a rare long hang of a single call (see [`crate::faults::HangRates`]);
//! 4. eventually consistent scans ([`EventualScans`]): every applied write is recorded, and
//!    `list_leases` may show recently written items as they were;
//! 5. an audit of every applied checkpoint write (`update_lease`) against the table as it was
//!    just before the write: owner and monotonicity (see [`Ledger::on_checkpoint_applied`]).
//!
//! Injecting faults here rather than in the shared table makes them per worker, and lets the
//! audit see the outcome of a write whose response is then "lost".

use crate::consistency::EventualScans;
use crate::faults::{Hang, StoreFaults};
use crate::gate::Gate;
use crate::ledger::Ledger;
use crate::trace::{Source, Trace};
use async_trait::async_trait;
use kcl::error::ErrorKind;
use kcl::lease::{
    Fault, InMemoryLeaseStore, Lease, LeaseOp, LeaseStore, LeaseStoreError, WriteOutcome,
};
use std::fmt;
use std::sync::{Arc, Mutex};

/// What to do after the inner call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Return,
    TimeOut,
    /// The response hangs this long, then arrives.
    Hang(std::time::Duration),
}

/// A worker's lease store: the shared table behind a gate, faults and an audit.
pub struct SimLeaseStore {
    inner: InMemoryLeaseStore,
    worker: String,
    gate: Gate,
    faults: Arc<StoreFaults>,
    scans: Arc<EventualScans>,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
}

impl fmt::Debug for SimLeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLeaseStore")
            .field("worker", &self.worker)
            .finish()
    }
}

/// Outcome of the pre-call fault: go on, or answer with a conflict without writing.
enum Before {
    Proceed(After),
    Conflict,
}

impl SimLeaseStore {
    /// `worker`'s view of `inner`.
    pub fn new(
        inner: InMemoryLeaseStore,
        worker: &str,
        gate: Gate,
        faults: Arc<StoreFaults>,
        scans: Arc<EventualScans>,
        ledger: Arc<Mutex<Ledger>>,
        trace: Trace,
    ) -> Self {
        SimLeaseStore {
            inner,
            worker: worker.to_string(),
            gate,
            faults,
            scans,
            ledger,
            trace,
        }
    }

    fn error(&self, op: LeaseOp, key: Option<&str>, kind: ErrorKind, msg: &str) -> LeaseStoreError {
        LeaseStoreError::simulated(kind, op, "sim", key, msg)
    }

    async fn before(&self, op: LeaseOp, key: Option<&str>) -> Result<Before, LeaseStoreError> {
        let before = self.fault_before(op, key).await?;
        let Before::Proceed(After::Return) = before else {
            return Ok(before);
        };
        Ok(match self.faults.draw_hang(op) {
            None => before,
            Some(Hang::Before(d)) => {
                self.note_hang(op, key, format!("hangs {d:?} before the table sees it"));
                tokio::time::sleep(d).await;
                self.gate.pass().await;
                before
            }
            Some(Hang::After(d)) => {
                self.note_hang(op, key, format!("applies, then its response hangs {d:?}"));
                Before::Proceed(After::Hang(d))
            }
        })
    }

    fn note_hang(&self, op: LeaseOp, key: Option<&str>, what: String) {
        self.trace.push(
            Source::Store,
            Some(&self.worker),
            key,
            format!("{op} {what}"),
        );
    }

    async fn fault_before(
        &self,
        op: LeaseOp,
        key: Option<&str>,
    ) -> Result<Before, LeaseStoreError> {
        self.gate.pass().await;
        match self.faults.draw(op) {
            None => Ok(Before::Proceed(After::Return)),
            Some(Fault::Throttle) => {
                self.gate.pass().await;
                Err(self.error(op, key, ErrorKind::Throttled, "injected throttling"))
            }
            Some(Fault::Timeout) => {
                tokio::time::sleep(self.faults.timeout_wait()).await;
                self.gate.pass().await;
                Err(self.error(op, key, ErrorKind::Retryable, "injected timeout"))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.gate.pass().await;
                Ok(Before::Proceed(After::Return))
            }
            Some(Fault::TimeoutAfterApply) => Ok(Before::Proceed(After::TimeOut)),
            Some(Fault::Conflict) => {
                self.gate.pass().await;
                Ok(Before::Conflict)
            }
        }
    }

    async fn after<T>(
        &self,
        op: LeaseOp,
        key: Option<&str>,
        after: After,
        value: T,
    ) -> Result<T, LeaseStoreError> {
        self.gate.pass().await;
        match after {
            After::Return => Ok(value),
            After::Hang(d) => {
                tokio::time::sleep(d).await;
                self.gate.pass().await;
                Ok(value)
            }
            After::TimeOut => {
                tokio::time::sleep(self.faults.timeout_wait()).await;
                self.gate.pass().await;
                Err(self.error(
                    op,
                    key,
                    ErrorKind::Retryable,
                    "injected timeout after the write was applied",
                ))
            }
        }
    }

    fn prior(&self, key: &str) -> Option<Lease> {
        self.inner.with_table(|t| t.get(key).cloned())
    }

    fn note(&self, key: &str, text: String) {
        self.trace
            .push(Source::Store, Some(&self.worker), Some(key), text);
    }

    /// A conditional write: gate, fault, inner write, audit hook, gate.
    async fn write(
        &self,
        op: LeaseOp,
        key: &str,
        audit: impl FnOnce(Option<&Lease>, &WriteOutcome),
        run: impl std::future::Future<Output = Result<WriteOutcome, LeaseStoreError>>,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let after = match self.before(op, Some(key)).await? {
            Before::Conflict => return Ok(WriteOutcome::Conflict),
            Before::Proceed(a) => a,
        };
        let prior = self.prior(key);
        let outcome = run.await?;
        if matches!(outcome, WriteOutcome::Applied(_)) {
            self.scans.record_write(key, prior.clone());
        }
        audit(prior.as_ref(), &outcome);
        self.after(op, Some(key), after, outcome).await
    }
}

#[async_trait]
impl LeaseStore for SimLeaseStore {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        let op = LeaseOp::CreateTable;
        let Before::Proceed(after) = self.before(op, None).await? else {
            unreachable!("reads draw no conflicts")
        };
        let r = self.inner.create_table_if_not_exists().await?;
        self.after(op, None, after, r).await
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let called_at = self.trace.now();
        let op = LeaseOp::Create;
        let Before::Proceed(after) = self.before(op, Some(&lease.key)).await? else {
            unreachable!("creates draw no conflicts")
        };
        let created = self.inner.create_lease_if_not_exists(lease).await?;
        if created {
            self.scans.record_write(&lease.key, None);
            self.ledger
                .lock()
                .unwrap()
                .on_create(&self.worker, lease, called_at);
            self.note(
                &lease.key,
                format!(
                    "created lease at {} parents {:?}",
                    lease.checkpoint, lease.parent_shard_ids
                ),
            );
        }
        self.after(op, Some(&lease.key), after, created).await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let op = LeaseOp::List;
        let Before::Proceed(after) = self.before(op, None).await? else {
            unreachable!("reads draw no conflicts")
        };
        let (r, stale) = self.scans.scan(self.inner.list_leases().await?);
        if let Some((lag, keys)) = stale.filter(|(_, keys)| !keys.is_empty()) {
            self.trace.push(
                Source::Store,
                Some(&self.worker),
                None,
                format!("list_leases is {lag:?} stale for {keys:?}"),
            );
        }
        self.after(op, None, after, r).await
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        let op = LeaseOp::Get;
        let Before::Proceed(after) = self.before(op, Some(key)).await? else {
            unreachable!("reads draw no conflicts")
        };
        let r = self.inner.get_lease(key).await?;
        self.after(op, Some(key), after, r).await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(
            LeaseOp::Renew,
            &lease.key,
            |_, _| {},
            self.inner.renew_lease(lease),
        )
        .await
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let audit = |prior: Option<&Lease>, out: &WriteOutcome| {
            if let WriteOutcome::Applied(new) = out {
                self.ledger
                    .lock()
                    .unwrap()
                    .on_take(&self.worker, &new.key, &new.checkpoint);
                let from = prior.and_then(|p| p.owner.clone());
                self.note(
                    &new.key,
                    format!(
                        "taken (from {from:?}, counter {}, checkpoint {})",
                        new.counter, new.checkpoint
                    ),
                );
            }
        };
        self.write(
            LeaseOp::Take,
            &lease.key,
            audit,
            self.inner.take_lease(lease, owner),
        )
        .await
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let audit = |_: Option<&Lease>, out: &WriteOutcome| {
            if let WriteOutcome::Applied(new) = out {
                self.note(&new.key, format!("released (counter {})", new.counter));
            }
        };
        self.write(
            LeaseOp::Evict,
            &lease.key,
            audit,
            self.inner.evict_lease(lease),
        )
        .await
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let audit = |prior: Option<&Lease>, out: &WriteOutcome| {
            if let (WriteOutcome::Applied(new), Some(prior)) = (out, prior) {
                self.ledger
                    .lock()
                    .unwrap()
                    .on_checkpoint_applied(&self.worker, prior, new);
            }
        };
        self.write(
            LeaseOp::Update,
            &lease.key,
            audit,
            self.inner.update_lease(lease),
        )
        .await
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.write(
            LeaseOp::UpdateChildren,
            key,
            |_, _| {},
            self.inner.update_child_shard_ids(key, child_shard_ids),
        )
        .await
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        let op = LeaseOp::Delete;
        let Before::Proceed(after) = self.before(op, Some(key)).await? else {
            unreachable!("deletes draw no conflicts")
        };
        let prior = self.prior(key);
        self.inner.delete_lease(key).await?;
        if prior.is_some() {
            self.scans.record_write(key, prior);
        }
        self.ledger.lock().unwrap().on_delete(key);
        self.note(key, "deleted lease".into());
        self.after(op, Some(key), after, ()).await
    }
}
