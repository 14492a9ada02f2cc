//! Liveness and readiness of a worker, for container orchestrators.
//!
//! * **Live**: the worker has not stopped, and its lease coordinator's loop keeps running
//!   (it checks in at least every `lease_renew_interval`; a worker that has not checked in
//!   for the failover time is stuck: its leases are expiring). A worker still starting is live.
//! * **Ready**: initialised (lease table created, first shard sync done), the lease table
//!   reachable (the last scan succeeded, within the failover time), renewals succeeding (no
//!   held lease's last renewal write failed, unless a checkpoint write of it succeeded since),
//!   and not shutting down.
//!
//! What the health says about a lease never outlives this worker's tenure of it: a failed
//! renewal is forgotten when the tenure ends (the lease is lost, dropped by the expiry
//! watchdog, released, or its shard finished), and a renewal result that comes in after its
//! tenure ended is not recorded (see the coordinator's renewer). Otherwise a worker could stay
//! unready for good after a lease-table outage, holding nothing that fails.

use crate::sync::Mutex;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// A worker's health now (see [`SchedulerHandle::health`](crate::SchedulerHandle::health)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The worker runs (or is starting) and its coordinator is not stuck. An orchestrator
    /// restarts a process that is not live.
    pub live: bool,
    /// Initialised, lease table reachable, renewals succeeding, not shutting down.
    pub ready: bool,
    /// The lease table exists and the first shard sync is done.
    pub initialized: bool,
    /// The last lease-table scan succeeded, within the failover time.
    pub lease_table_reachable: bool,
    /// No held lease's last renewal write failed, unless a checkpoint write of it succeeded
    /// since (none yet counts as succeeding).
    pub renewals_succeeding: bool,
    /// A graceful shutdown has begun.
    pub shutting_down: bool,
    /// `Scheduler::run` has returned.
    pub stopped: bool,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "live: {}", yes(self.live))?;
        writeln!(f, "ready: {}", yes(self.ready))?;
        writeln!(f, "initialized: {}", yes(self.initialized))?;
        writeln!(
            f,
            "lease_table_reachable: {}",
            yes(self.lease_table_reachable)
        )?;
        writeln!(f, "renewals_succeeding: {}", yes(self.renewals_succeeding))?;
        writeln!(f, "shutting_down: {}", yes(self.shutting_down))?;
        writeln!(f, "stopped: {}", yes(self.stopped))
    }
}

/// What the worker's parts report, from which [`Health`] is computed.
#[derive(Debug)]
pub(crate) struct HealthState {
    failover_time: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    initialized: bool,
    shutting_down: bool,
    stopped: bool,
    /// Outcome of the last lease-table scan.
    last_scan_ok: bool,
    /// When a scan (or the start-up) last reached the table.
    last_reached: Option<Instant>,
    /// Held leases whose last renewal failed.
    failing_renewals: BTreeSet<String>,
    /// When the coordinator's watchdog loop last ran.
    heartbeat: Option<Instant>,
}

impl HealthState {
    pub(crate) fn new(failover_time: Duration) -> Self {
        HealthState {
            failover_time,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock());
    }

    /// Start-up finished: the lease table and the stream answered.
    pub(crate) fn initialized(&self) {
        self.with(|i| {
            i.initialized = true;
            i.last_scan_ok = true;
            i.last_reached = Some(Instant::now());
        });
    }

    /// A lease-table scan ended.
    pub(crate) fn scan(&self, ok: bool) {
        self.with(|i| {
            i.last_scan_ok = ok;
            if ok {
                i.last_reached = Some(Instant::now());
            }
        });
    }

    /// A renewal write of the held lease `lease_key` ended (`ok` = it landed or found the
    /// lease changed, or a checkpoint write landed; false = it failed). The coordinator calls
    /// this only for the tenure holding the lease now.
    pub(crate) fn renewal(&self, lease_key: &str, ok: bool) {
        self.with(|i| {
            if ok {
                i.failing_renewals.remove(lease_key);
            } else {
                i.failing_renewals.insert(lease_key.to_string());
            }
        });
    }

    /// This worker no longer holds `lease_key` (lost, released, or a new tenure began).
    pub(crate) fn lease_gone(&self, lease_key: &str) {
        self.with(|i| {
            i.failing_renewals.remove(lease_key);
        });
    }

    /// The coordinator's loop is running.
    pub(crate) fn heartbeat(&self) {
        self.with(|i| i.heartbeat = Some(Instant::now()));
    }

    /// Graceful shutdown began.
    pub(crate) fn shutting_down(&self) {
        self.with(|i| i.shutting_down = true);
    }

    /// `run` returned.
    pub(crate) fn stopped(&self) {
        self.with(|i| i.stopped = true);
    }

    /// True when the lease table has been reached and is not now: the last scan (or KCL 3.x
    /// discovery) failed, or none reached it for the failover time. False before the first.
    pub(crate) fn lease_table_failing(&self) -> bool {
        let i = self.inner.lock();
        let recent = i
            .last_reached
            .is_some_and(|t| Instant::now().saturating_duration_since(t) <= self.failover_time);
        i.last_reached.is_some() && !(i.last_scan_ok && recent)
    }

    /// The health now.
    pub(crate) fn health(&self) -> Health {
        let i = self.inner.lock();
        let now = Instant::now();
        let recent = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) <= self.failover_time)
        };
        let stuck = i.heartbeat.is_some() && !recent(i.heartbeat);
        let live = !i.stopped && !stuck;
        let lease_table_reachable = i.last_scan_ok && recent(i.last_reached);
        let renewals_succeeding = i.failing_renewals.is_empty();
        Health {
            live,
            ready: live
                && i.initialized
                && lease_table_reachable
                && renewals_succeeding
                && !i.shutting_down,
            initialized: i.initialized,
            lease_table_reachable,
            renewals_succeeding,
            shutting_down: i.shutting_down,
            stopped: i.stopped,
        }
    }
}
