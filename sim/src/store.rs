//! One worker's view of the shared lease table: its network to DynamoDB.
//!
//! A worker's store is the shared [`InMemoryLeaseStore`] (which itself has no faults
//! installed, so every inner call completes in the poll that starts it) behind the testing
//! kit's [`ObservedLeaseStore`] with [`SimHooks`], which add, per call:
//!
//! 1. the worker's [`Gate`] (a paused worker's calls hang, before and after the table sees them);
//! 2. a fault drawn from the run's [`StoreFaults`] (through the kit's [`FaultHooks`]):
//!    throttling, timeouts before or after the write applies, slow calls, spurious conflicts;
//! 3. an audit of every applied write against the table as it was just before the write:
//!    creations, takes and checkpoint writes (`update_lease`: owner and monotonicity, see
//!    [`Ledger::on_checkpoint_applied`]), deletions.
//!
//! Injecting faults here rather than in the shared table makes them per worker, and lets the
//! audit see the outcome of a write whose response is then "lost" (the audit runs before the
//! fault hook turns the outcome into a timeout).

use crate::faults::StoreFaults;
use crate::gate::Gate;
use crate::ledger::Ledger;
use crate::trace::{Source, Trace};
use async_trait::async_trait;
use kcl::lease::{Lease, WriteOutcome};
use kcl::testing::{
    Args, Call, FaultHooks, InMemoryLeaseStore, LeaseStoreHooks, ObservedLeaseStore, Outcome, Reply,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A worker's lease store: the shared table behind a gate, faults and an audit.
pub type SimLeaseStore = ObservedLeaseStore<SimHooks>;

/// The gate, faults and audit of one worker's lease-store calls.
pub struct SimHooks {
    table: InMemoryLeaseStore,
    worker: String,
    gate: Gate,
    faults: FaultHooks,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    /// When each create call was made (before its gate and faults), by call id.
    called_at: Mutex<HashMap<u64, Duration>>,
    /// The lease as it was just before each write reached the table, by call id.
    prior: Mutex<HashMap<u64, Option<Lease>>>,
}

impl fmt::Debug for SimHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHooks")
            .field("worker", &self.worker)
            .finish()
    }
}

/// `worker`'s view of `table`.
pub fn sim_lease_store(
    table: InMemoryLeaseStore,
    worker: &str,
    gate: Gate,
    faults: Arc<StoreFaults>,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
) -> SimLeaseStore {
    let hooks = SimHooks {
        table: table.clone(),
        worker: worker.to_string(),
        gate,
        faults: FaultHooks::new(faults),
        ledger,
        trace,
        called_at: Mutex::new(HashMap::new()),
        prior: Mutex::new(HashMap::new()),
    };
    ObservedLeaseStore::new(Arc::new(table), hooks)
}

impl SimHooks {
    fn note(&self, key: &str, text: String) {
        self.trace
            .push(Source::Store, Some(&self.worker), Some(key), text);
    }

    /// The audit of a call that reached the table, right after it (in the same poll).
    fn audit(&self, call: &Call<'_>, outcome: &Outcome) {
        let prior = self.prior.lock().unwrap().remove(&call.id).flatten();
        let called_at = self.called_at.lock().unwrap().remove(&call.id);
        match (call.args, outcome) {
            (Args::Create(lease), Ok(Reply::Created(true))) => {
                let called_at = called_at.expect("recorded in before");
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
            (Args::Take(..), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                self.ledger
                    .lock()
                    .unwrap()
                    .on_take(&self.worker, &new.key, &new.checkpoint);
                let from = prior.and_then(|p| p.owner);
                self.note(
                    &new.key,
                    format!(
                        "taken (from {from:?}, counter {}, checkpoint {})",
                        new.counter, new.checkpoint
                    ),
                );
            }
            (Args::Evict(_), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                self.note(&new.key, format!("released (counter {})", new.counter));
            }
            (Args::Update(_), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                if let Some(prior) = prior {
                    self.ledger
                        .lock()
                        .unwrap()
                        .on_checkpoint_applied(&self.worker, &prior, new);
                }
            }
            (Args::Delete(key), Ok(Reply::Done)) => {
                self.ledger.lock().unwrap().on_delete(key);
                self.note(key, "deleted lease".into());
            }
            _ => {}
        }
    }
}

#[async_trait]
impl LeaseStoreHooks for SimHooks {
    async fn before(&self, call: &Call<'_>) -> Option<Outcome> {
        if let Args::Create(_) = call.args {
            let now = self.trace.now();
            self.called_at.lock().unwrap().insert(call.id, now);
        }
        self.gate.pass().await;
        if let Some(answer) = self.faults.before(call).await {
            self.called_at.lock().unwrap().remove(&call.id);
            self.gate.pass().await;
            return Some(answer);
        }
        // After a slow call's wait (a no-op otherwise: the gate was just passed).
        self.gate.pass().await;
        if let Some(key) = call.lease_key().filter(|_| call.lease().is_some()) {
            let prior = self.table.with_table(|t| t.get(key).cloned());
            self.prior.lock().unwrap().insert(call.id, prior);
        }
        None
    }

    async fn after(&self, call: &Call<'_>, outcome: &mut Outcome) {
        self.audit(call, outcome);
        self.gate.pass().await;
        self.faults.after(call, outcome).await;
        // After a lost response's wait (a no-op otherwise).
        self.gate.pass().await;
    }
}
