//! Where a KCL 3.x fleet keeps what is not a lease: the client-version migration item, the
//! leader's lock and every worker's metrics row.

use super::ClientVersion;
use crate::error::{Cause, ErrorKind};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The `Migration3.0` item: which protocol the fleet runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationState {
    /// `cv`: the fleet's client version.
    pub client_version: ClientVersion,
    /// `mb`: the worker (or tool) that wrote it last.
    pub modified_by: String,
    /// `mts`: when, in epoch milliseconds.
    pub modified_at_ms: u64,
    /// `h`: the earlier states, newest first (at most 10), as `(cv, mb, mts)`.
    pub history: Vec<(String, String, u64)>,
}

impl MigrationState {
    /// A new state written by `worker` now.
    pub fn new(client_version: ClientVersion, worker: &str) -> Self {
        MigrationState {
            client_version,
            modified_by: worker.to_string(),
            modified_at_ms: now_ms(),
            history: Vec::new(),
        }
    }

    /// This state moved on to `next`, written by `worker` now (the old state goes first in
    /// the history, which keeps at most 10 entries, as the Java KCL's).
    pub fn moved_to(&self, next: ClientVersion, worker: &str) -> Self {
        let mut history = vec![(
            self.client_version.as_str().to_string(),
            self.modified_by.clone(),
            self.modified_at_ms,
        )];
        history.extend(self.history.iter().take(9).cloned());
        MigrationState {
            client_version: next,
            modified_by: worker.to_string(),
            modified_at_ms: now_ms(),
            history,
        }
    }
}

/// The leader's lock item (the `Leader` item of the DynamoDB lock client the Java KCL 3.x
/// uses).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockItem {
    /// `ownerName`: the leader's worker id.
    pub owner: String,
    /// `leaseDuration`: how long followers wait, after they last saw the version change,
    /// before they may take the lock.
    pub lease_duration: Duration,
    /// `recordVersionNumber`: a fresh random value on every acquisition and heartbeat.
    pub record_version: String,
}

impl LockItem {
    /// A lock item for `owner` with a fresh version.
    pub fn new(owner: &str, lease_duration: Duration) -> Self {
        LockItem {
            owner: owner.to_string(),
            lease_duration,
            record_version: new_version(),
        }
    }
}

/// A fresh `recordVersionNumber` (a random UUID, as the lock client writes).
pub(crate) fn new_version() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// One worker's row of `WorkerMetricStats`: what the leader balances by, and how it tells
/// live workers (a fresh row) from gone ones.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerMetricStats {
    /// The worker id (`wid`, or `leaseKey` in the lease table).
    pub worker_id: String,
    /// `lut`: when the row was written, epoch seconds (wall clock).
    pub last_update_s: u64,
    /// `sts`: per metric (`C` for CPU), the last averaged samples, oldest first; `-1` marks a
    /// period without a sample. Empty for a worker without a metric source: the leader
    /// then balances it by the throughput of its leases.
    pub stats: BTreeMap<String, Vec<f64>>,
    /// `opr`: per metric, the operating range (`[100]`).
    pub operating_range: BTreeMap<String, Vec<f64>>,
}

impl WorkerMetricStats {
    /// A row for `worker` written now, without metrics (balanced by throughput, like a Java
    /// worker outside EC2).
    pub fn throughput_only(worker: &str) -> Self {
        WorkerMetricStats {
            worker_id: worker.to_string(),
            last_update_s: now_ms() / 1000,
            stats: BTreeMap::new(),
            operating_range: BTreeMap::new(),
        }
    }

    /// Whether the row is fresh at `now_s`: written within `max_age` (the Java leader's rule:
    /// twice the reporting period).
    pub fn is_fresh(&self, now_s: u64, max_age: Duration) -> bool {
        now_s.saturating_sub(self.last_update_s) <= max_age.as_secs()
    }

    /// Whether the Java leader counts the worker as usable: every metric has an operating
    /// range that does not start at 0, and no metric's last sample failed (`-1`).
    pub fn is_valid(&self) -> bool {
        self.stats.iter().all(|(name, values)| {
            self.operating_range
                .get(name)
                .and_then(|r| r.first())
                .is_some_and(|max| *max > 0.0)
                && values.last().is_none_or(|v| *v >= 0.0)
        })
    }
}

/// Epoch milliseconds now (see [`WallClock`]).
pub(crate) fn now_ms() -> u64 {
    static CLOCK: std::sync::OnceLock<crate::sync::Mutex<WallClock>> = std::sync::OnceLock::new();
    let now = Readings::now();
    CLOCK
        .get_or_init(|| crate::sync::Mutex::new(WallClock::new(now)))
        .lock()
        .read(now)
}

/// The three clocks at one moment.
#[derive(Debug, Clone, Copy)]
struct Readings {
    /// The system clock, epoch milliseconds.
    wall_ms: u64,
    /// The monotonic clock.
    real: std::time::Instant,
    /// tokio's clock (the monotonic clock, or paused time in tests).
    tokio: std::time::Instant,
}

impl Readings {
    fn now() -> Self {
        Readings {
            wall_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            real: std::time::Instant::now(),
            tokio: tokio::time::Instant::now().into_std(),
        }
    }
}

/// Wall-clock time for metrics rows' `lut` and the leader's freshness checks, which compare
/// clocks across hosts (as the Java KCL's do): the system clock when first read, advanced by
/// tokio's clock since (so tests with paused tokio time age rows). When the system clock is
/// stepped (by more than a second against the monotonic clock, e.g. NTP correcting a clock
/// that started wrong), the step is applied, so a host never stays off by it.
#[derive(Debug)]
struct WallClock {
    anchor: Readings,
}

/// A difference between the system clock and the monotonic clock larger than this is a step.
const STEP_MS: i128 = 1000;

impl WallClock {
    fn new(at: Readings) -> Self {
        WallClock { anchor: at }
    }

    fn read(&mut self, now: Readings) -> u64 {
        let ms = |d: std::time::Duration| i128::try_from(d.as_millis()).unwrap_or(i128::MAX);
        let expected = i128::from(self.anchor.wall_ms)
            + ms(now.real.saturating_duration_since(self.anchor.real));
        let step = i128::from(now.wall_ms) - expected;
        if step.abs() > STEP_MS {
            tracing::info!(step_ms = %step, "the system clock was stepped: metrics rows and freshness checks follow it");
            let wall = (i128::from(self.anchor.wall_ms) + step).max(0);
            self.anchor.wall_ms = u64::try_from(wall).unwrap_or(u64::MAX);
        }
        let since = now.tokio.saturating_duration_since(self.anchor.tokio);
        self.anchor.wall_ms + u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use std::time::Duration;

    fn at(start: std::time::Instant, wall_ms: u64, real_s: u64, tokio_s: u64) -> Readings {
        Readings {
            wall_ms,
            real: start + Duration::from_secs(real_s),
            tokio: start + Duration::from_secs(tokio_s),
        }
    }

    #[test]
    fn follows_tokio_time_and_applies_a_stepped_system_clock() {
        let t = std::time::Instant::now();
        let mut clock = WallClock::new(at(t, 1_000_000, 0, 0));
        // Paused tokio time runs ahead of the monotonic clock: rows age with it.
        assert_eq!(clock.read(at(t, 1_000_000, 0, 60)), 1_060_000);
        // Real time passes with the system clock: no step.
        assert_eq!(clock.read(at(t, 1_010_000, 10, 70)), 1_070_000);
        // NTP steps the system clock forward by an hour.
        assert_eq!(
            clock.read(at(t, 1_010_000 + 3_600_000 + 1_000, 11, 71)),
            1_071_000 + 3_600_000
        );
        // And back by half an hour.
        assert_eq!(
            clock.read(at(t, 1_012_000 + 1_800_000, 12, 72)),
            1_072_000 + 1_800_000
        );
        // Jitter under a second is no step.
        assert_eq!(
            clock.read(at(t, 1_013_000 + 1_800_000 + 500, 13, 73)),
            1_073_000 + 1_800_000
        );
    }
}

/// A fleet-state operation failed (a lost condition is not an error: the methods answer
/// `false`).
#[derive(Debug, thiserror::Error)]
#[error("{table}: {operation} failed ({}): {cause}", .cause.kind())]
#[non_exhaustive]
pub struct FleetStoreError {
    /// The operation (the [`FleetStore`] method).
    pub operation: &'static str,
    /// The table.
    pub table: String,
    /// What went wrong.
    #[source]
    pub cause: Cause,
}

impl FleetStoreError {
    /// `operation` on `table` failed with `cause` (for [`FleetStore`] implementations).
    pub fn new(operation: &'static str, table: impl Into<String>, cause: Cause) -> Self {
        FleetStoreError {
            operation,
            table: table.into(),
            cause,
        }
    }

    /// Whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        self.cause.kind()
    }
}

/// Storage of a KCL 3.x fleet's coordination items, in the Java KCL's format and tables
/// (object-safe: used as `Arc<dyn FleetStore>`). [`DynamoDbFleetStore`](super::DynamoDbFleetStore)
/// is the production one.
#[async_trait]
pub trait FleetStore: Send + Sync + fmt::Debug {
    /// Get the tables ready for a fleet in 3.x mode (create what is missing); called once,
    /// before the first write of a 3.x fleet's items.
    async fn prepare_for_3x(&self) -> Result<(), FleetStoreError>;

    /// The `Migration3.0` item, read consistently; `None` when absent.
    async fn migration_state(&self) -> Result<Option<MigrationState>, FleetStoreError>;

    /// Create the `Migration3.0` item unless it exists; `false` when it existed.
    async fn create_migration_state(&self, state: &MigrationState)
        -> Result<bool, FleetStoreError>;

    /// Replace the `Migration3.0` item if its client version is still `expected`.
    async fn update_migration_state(
        &self,
        expected: &ClientVersion,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError>;

    /// The leader's lock item, read consistently; `None` when no worker holds it.
    async fn lock(&self) -> Result<Option<LockItem>, FleetStoreError>;

    /// Write `item` as the lock if there is none (`stale: None`), or if the current one still
    /// has the version `stale` (a lock its holder stopped heartbeating).
    async fn acquire_lock(
        &self,
        item: &LockItem,
        stale: Option<&str>,
    ) -> Result<bool, FleetStoreError>;

    /// Heartbeat: replace the version of the lock `item` (owner and version as held) with
    /// `new_version`, if both are unchanged.
    async fn heartbeat_lock(
        &self,
        item: &LockItem,
        new_version: &str,
    ) -> Result<bool, FleetStoreError>;

    /// Delete the lock `item` if its owner and version are unchanged.
    async fn release_lock(&self, item: &LockItem) -> Result<bool, FleetStoreError>;

    /// Write this worker's metrics row (unconditionally).
    async fn put_worker_metrics(&self, row: &WorkerMetricStats) -> Result<(), FleetStoreError>;

    /// Every worker's metrics row.
    async fn worker_metrics(&self) -> Result<Vec<WorkerMetricStats>, FleetStoreError>;

    /// Delete a worker's row if it was last written at `last_update_s` (a gone worker's).
    async fn delete_worker_metrics(
        &self,
        worker_id: &str,
        last_update_s: u64,
    ) -> Result<bool, FleetStoreError>;
}
