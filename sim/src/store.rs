//! One worker's view of the shared lease table: its network to DynamoDB.
//!
//! A worker's store is the shared [`InMemoryLeaseStore`] (which itself has no faults
//! installed, so every inner call completes in the poll that starts it) behind the testing
//! kit's [`ObservedLeaseStore`] with [`SimHooks`], which add, per call:
//!
//! 1. the worker's [`Gate`] (a paused worker's calls hang, before and after the table sees them);
//! 2. a lease-table outage hitting the worker ([`crate::faults::TableOutage`]): the call hangs,
//!    then times out;
//! 3. a fault drawn from the run's [`StoreFaults`] (through the kit's [`FaultHooks`]):
//!    throttling, timeouts before or after the write applies, slow calls, spurious conflicts;
//! 4. a rare long hang of a single call (see [`crate::faults::HangRates`]);
//! 5. eventually consistent scans ([`EventualScans`]): every applied write is recorded, and
//!    `list_leases` may show recently written items as they were;
//! 6. an audit of every applied write against the table as it was just before the write:
//!    creations, takes, KCL 3.x assignments and hand-offs, and checkpoint writes
//!    (`update_lease`: owner, the outgoing one in a hand-off, and monotonicity, see
//!    [`Ledger::on_checkpoint_applied`]), deletions.
//!
//! Injecting faults here rather than in the shared table makes them per worker, and lets the
//! audit see the outcome of a write whose response is then "lost" (the audit runs before the
//! fault hook turns the outcome into a timeout).

use crate::consistency::EventualScans;
use crate::faults::{Hang, OutageFaults, StoreFaults};
use crate::gate::Gate;
use crate::ledger::Ledger;
use crate::trace::{Source, Trace};
use async_trait::async_trait;
use kinesis_client::lease::{Lease, WriteOutcome};
use kinesis_client::testing::{
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
    /// The plan's lease-table outages that hit this worker.
    outage: FaultHooks,
    /// The same plan as `faults` draws from: its long hangs.
    plan: Arc<StoreFaults>,
    scans: Arc<EventualScans>,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    /// Calls whose response hangs after the write applied, by call id.
    hang_after: Mutex<HashMap<u64, Duration>>,
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
    scans: Arc<EventualScans>,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
) -> SimLeaseStore {
    let hooks = SimHooks {
        table: table.clone(),
        worker: worker.to_string(),
        gate,
        faults: FaultHooks::new(faults.clone()),
        outage: FaultHooks::new(Arc::new(OutageFaults::new(faults.clone(), worker))),
        plan: faults,
        scans,
        ledger,
        trace,
        hang_after: Mutex::new(HashMap::new()),
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

    fn note_hang(&self, call: &Call<'_>, what: String) {
        let text = format!("{} {what}", call.op().method_name());
        self.trace
            .push(Source::Store, Some(&self.worker), call.lease_key(), text);
    }

    /// What the eventually consistent table learns from a call that reached it: applied
    /// writes are recorded, and a scan may come back stale.
    fn consistency(&self, call: &Call<'_>, prior: &Option<Lease>, outcome: &mut Outcome) {
        match (call.args, outcome) {
            (Args::Create(lease), Ok(Reply::Created(true))) => {
                self.scans.record_write(&lease.key, None);
            }
            (Args::Delete(key), Ok(Reply::Done)) if prior.is_some() => {
                self.scans.record_write(key, prior.clone());
            }
            (Args::List, Ok(Reply::Leases(leases))) => {
                let (r, stale) = self.scans.scan(std::mem::take(leases));
                *leases = r;
                if let Some((lag, keys)) = stale.filter(|(_, keys)| !keys.is_empty()) {
                    self.trace.push(
                        Source::Store,
                        Some(&self.worker),
                        None,
                        format!("list_leases is {lag:?} stale for {keys:?}"),
                    );
                }
            }
            (_, Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                self.scans.record_write(&new.key, prior.clone());
            }
            _ => {}
        }
    }

    /// The audit of a call that reached the table, right after it (in the same poll).
    fn audit(&self, call: &Call<'_>, outcome: &mut Outcome) {
        let prior = self.prior.lock().unwrap().remove(&call.id).flatten();
        let called_at = self.called_at.lock().unwrap().remove(&call.id);
        self.consistency(call, &prior, outcome);
        match (call.args, &*outcome) {
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
            (Args::Assign(_, to), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                let leads = self
                    .table
                    .fleet()
                    .lock_item()
                    .is_some_and(|l| l.owner == self.worker);
                let note =
                    self.ledger
                        .lock()
                        .unwrap()
                        .on_assign(&self.worker, prior.as_ref(), new, leads);
                let from = prior.and_then(|p| p.actual_owner().map(str::to_string));
                self.note(
                    &new.key,
                    format!(
                        "assigned to {to} (from {from:?}, counter {}, checkpoint {}){}",
                        new.counter,
                        new.checkpoint,
                        note.map_or(String::new(), |n| format!(": {n}"))
                    ),
                );
            }
            (Args::Renew(_), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                self.ledger.lock().unwrap().on_renew(&self.worker, &new.key);
            }
            (Args::StartHandoff(_, to), Ok(Reply::Write(WriteOutcome::Applied(new)))) => {
                self.note(
                    &new.key,
                    format!(
                        "hand-off to {to} started (from {:?}, counter {}, checkpoint {})",
                        new.checkpoint_owner, new.counter, new.checkpoint
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
        if let Some(wait) = self.plan.outage_wait(&self.worker) {
            self.note_hang(
                call,
                format!("times out after {wait:?} (lease-table outage)"),
            );
        }
        if let Some(answer) = self.outage.before(call).await {
            self.called_at.lock().unwrap().remove(&call.id);
            self.gate.pass().await;
            return Some(answer);
        }
        if let Some(answer) = self.faults.before(call).await {
            self.called_at.lock().unwrap().remove(&call.id);
            self.gate.pass().await;
            return Some(answer);
        }
        // After a slow call's wait (a no-op otherwise: the gate was just passed).
        self.gate.pass().await;
        // A call that will time out after applying does not also hang.
        if !self.faults.fails_after(call) {
            match self.plan.draw_hang(call.op()) {
                None => {}
                Some(Hang::Before(d)) => {
                    self.note_hang(call, format!("hangs {d:?} before the table sees it"));
                    tokio::time::sleep(d).await;
                    self.gate.pass().await;
                }
                Some(Hang::After(d)) => {
                    self.note_hang(call, format!("applies, then its response hangs {d:?}"));
                    self.hang_after.lock().unwrap().insert(call.id, d);
                }
            }
        }
        if let Some(key) = call
            .lease_key()
            .filter(|_| !matches!(call.args, Args::Get(_)))
        {
            let prior = self.table.with_table(|t| t.get(key).cloned());
            self.prior.lock().unwrap().insert(call.id, prior);
        }
        None
    }

    async fn after(&self, call: &Call<'_>, outcome: &mut Outcome) {
        self.audit(call, outcome);
        self.gate.pass().await;
        self.faults.after(call, outcome).await;
        let hang = self.hang_after.lock().unwrap().remove(&call.id);
        if let Some(d) = hang {
            tokio::time::sleep(d).await;
        }
        // After a lost or slow response's wait (a no-op otherwise).
        self.gate.pass().await;
    }
}
