//! The lease coordinator: holds this worker's leases, renews them, takes and steals others,
//! notices loss, and releases everything on graceful shutdown.
//!
//! # Timing, and why failover is faster than the Java KCL's
//!
//! With failover time `F` (default 10 s):
//!
//! * **Renewal** keeps every held lease's counter moving at least every `renew_interval`
//!   (default `F / 3`): a lease is renewed when its last successful write (renewal, take or
//!   checkpoint) started `renew_interval` ago. An idle lease is thus renewed every
//!   `renew_interval`, while a lease its processor checkpoints at least that often needs no
//!   renewals (a checkpoint increments the counter and proves ownership just as a renewal
//!   does). Each lease is renewed on its own schedule, independently of the others, under a
//!   per-lease lock shared with checkpoint writes, with up to three attempts on throttling or
//!   timeouts: a renewal stuck behind a checkpoint's slow writes, or on a hung call, delays
//!   only its own lease (the Java renewer waits for every lease each round). Starts are paced
//!   so that all held leases fit in a quarter interval (leases taken together do not all
//!   write in the same instant), and at most [`MAX_CONCURRENT_RENEWALS`](renewer::MAX_CONCURRENT_RENEWALS) writes are in flight. A lease not renewed for `F` (measured from the
//!   *start* of its last successful write) is lost locally: its consumer is told and
//!   checkpoints are refused, even if DynamoDB still names this worker.
//! * **Taking** scans the table every `take_interval` (default `F / 3`, minus up to 10 %
//!   jitter) and records, per lease, when this worker first saw its current counter value.
//!   A lease whose counter stays unchanged for more than `F` on this clock is expired.
//!   Besides the regular scans, the taker wakes up right when the oldest unchanged lease would
//!   expire (`last_change + F`), so expiry is noticed without waiting for the next scan.
//!
//! A worker that dies right after renewing at `t0` is first seen with its final counter at
//! most `take_interval` later, is expired `F` after that, and the wake-up at exactly that
//! moment takes it: its shards are held by a live worker by `t0 + take_interval + F` (about
//! `1.33 F` = 13.3 s at the defaults). The Java 2.x taker scans every `2 (F + 25 ms)` and
//! needs two scans `F` apart, so it takes 20 to 40 s at the same `F`.
//!
//! Costs per worker at the defaults: one `UpdateItem` per idle held lease every `F/3` (18 per
//! lease per minute, as Java; none for a lease checkpointed at least every `F/3`), one `Scan`
//! (one request per MB of table) every `F/3`, plus the occasional wake-up scan after a worker
//! died.
//!
//! # Files
//!
//! `renewer.rs` runs the per-lease renewal schedules, `take_round.rs` the take rounds (scan,
//! decide with the pure [`choose_leases_to_take`](taker::choose_leases_to_take) of `taker.rs`, take in chunks) and
//! `watchdog.rs` the local expiry of held leases; this file holds the state they share and
//! checkpoint writes. Every bounded retry (a renewal, a checkpoint write) follows a
//! [`RetryPolicy`].
//!
//! # Tenures
//!
//! Each time this worker starts holding a lease it gets a new [`LeaseTenure`] with a fresh
//! concurrency token and a `lost` cancellation token. Checkpoint writes name the token; a
//! processor from an earlier tenure (the lease was lost and taken back since) can never write.

mod balance;
mod discovery;
mod leaving;
mod renewer;
mod status;
mod take_round;
mod taker;
mod watchdog;

pub(crate) use taker::ObservedLease;

use crate::backoff::RetryPolicy;
use crate::lease::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use crate::sync::Mutex;
use crate::telemetry::{HealthState, ShardMetrics, WorkerMetrics};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Settings of the lease coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// This worker's id (the `leaseOwner` it writes).
    pub worker_id: String,
    /// How long a lease may go unrenewed before other workers may take it.
    pub failover_time: Duration,
    /// How often held leases are renewed (default `failover_time / 3`).
    pub renew_interval: Duration,
    /// How often the table is scanned for leases to take (default `failover_time / 3`).
    pub take_interval: Duration,
    /// The most leases this worker holds.
    pub max_leases_for_worker: usize,
    /// The most leases this worker steals in one round.
    pub max_leases_to_steal_at_one_time: usize,
    /// Seed for the taker's random choices and jitter (`None`: from entropy).
    pub rng_seed: Option<u64>,
    /// The application is multi-stream: it takes only leases that name a stream (the
    /// `streamName` attribute). A single-stream one (`false`, the default) takes only leases
    /// that name none: a lease of a multi-stream application is not its to process (its key is
    /// no shard of this stream, and its clean-up would delete it as trimmed).
    pub multi_stream: bool,
    /// KCL 3.x: how often this worker looks for leases the leader assigned it (default 1 s;
    /// in the leaderless protocol, a lease being handed to this worker is looked at every
    /// [`HANDOFF_POLL`](take_round::HANDOFF_POLL), or this, whichever is shorter).
    pub discovery_interval: Duration,
    /// How long this worker's processor may take to checkpoint when a hand-off (a KCL 3.x
    /// leader's move, or a leaderless steal) moves one of its leases to another worker, before
    /// the lease passes on anyway (the Java KCL's `gracefulLeaseHandoffTimeoutMillis`, default
    /// 30 s).
    pub handoff_timeout: Duration,
    /// In the leaderless protocol, a steal for balance is a graceful hand-off, as a KCL 3.x
    /// leader's moves are: the victim's processor checkpoints before the lease passes on, so no
    /// record is processed twice (default `true`; the Java KCL's
    /// `isGracefulLeaseHandoffEnabled`). `false`: a steal takes the lease at once.
    pub graceful_steals: bool,
    /// In the leaderless protocol, steals even out the load (each lease's `throughputKBps`)
    /// rather than the lease count (default `true`; see [`balance`]). Count balancing is used
    /// anyway while the fleet's `Migration3.0` item says Java KCL 3.x workers run the 2.x
    /// taker ([`LeaseCoordinator::set_peers_balance_by_count`]).
    pub balance_by_load: bool,
}

/// How this worker gets its leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// It takes unowned and expired leases and steals for balance (this library's own
    /// protocol, and the Java KCL 2.x's).
    #[default]
    Leaderless,
    /// A leader assigns leases (KCL 3.x): this worker only adopts the leases assigned to it,
    /// and completes the hand-offs of its leases the leader starts.
    Assigned,
}

impl CoordinatorConfig {
    /// Defaults derived from `failover_time`, as documented on each field.
    pub fn new(worker_id: impl Into<String>, failover_time: Duration) -> Self {
        CoordinatorConfig {
            worker_id: worker_id.into(),
            failover_time,
            renew_interval: failover_time / 3,
            take_interval: failover_time / 3,
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: 1,
            rng_seed: None,
            multi_stream: false,
            discovery_interval: Duration::from_secs(1),
            handoff_timeout: Duration::from_secs(30),
            graceful_steals: true,
            balance_by_load: true,
        }
    }
}

/// One period during which this worker holds a lease.
#[derive(Debug, Clone)]
pub struct LeaseTenure {
    /// The lease as it was when this worker took it.
    pub lease: Lease,
    /// The concurrency token of this tenure.
    pub token: Uuid,
    /// Cancelled as soon as the lease is lost (or released).
    pub lost: CancellationToken,
    /// Cancelled when a hand-off (a KCL 3.x leader's, a leaderless steal) moves the lease to
    /// another worker: the processor should shut down as requested (it may checkpoint); the
    /// lease then passes on.
    pub handoff: CancellationToken,
}

/// The leases this worker holds now, by key.
pub type HeldLeases = Arc<BTreeMap<String, LeaseTenure>>;

/// Why a lease update through the coordinator did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseUpdateError {
    /// This tenure is over: the lease was lost, taken by another worker, expired locally or
    /// released. Nothing was written.
    #[error("lease {lease_key} is no longer held by this worker ({reason})")]
    LeaseLost {
        /// The lease.
        lease_key: String,
        /// Why it is not held.
        reason: LossReason,
    },
    /// The lease store failed (after retries for throttling and timeouts).
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

/// Why this worker's tenure of a lease is over (see [`LeaseUpdateError::LeaseLost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LossReason {
    /// This worker does not hold the lease.
    #[error("not held")]
    NotHeld,
    /// This worker holds the lease again, under a newer tenure.
    #[error("held under a newer tenure")]
    NewerTenure,
    /// The tenure ended (lost, taken, expired or released) before the write.
    #[error("lost")]
    Lost,
    /// The lease was not renewed within the failover time: other workers may have taken it.
    #[error("expired locally: not renewed within the failover time")]
    ExpiredLocally,
    /// The write found the lease changed by another worker.
    #[error("taken by another worker")]
    TakenByAnotherWorker,
    /// The tenure ended while the write was being retried.
    #[error("lost while retrying")]
    LostWhileRetrying,
}

struct Slot {
    tenure: LeaseTenure,
    state: Arc<tokio::sync::Mutex<SlotState>>,
    /// The same as `state.last_write`, readable without waiting for the lease's lock.
    last_write: LastWrite,
    /// When this tenure last checkpointed (or began), for `SecondsSinceLastCheckpoint`.
    checkpointed: LastWrite,
    metrics: ShardMetrics,
    /// Bytes of records processed in this tenure (for the lease's `throughputKBps`).
    bytes: Arc<std::sync::atomic::AtomicU64>,
    /// How far behind the stream's tip its last batch was, in milliseconds (-1: not known).
    behind_ms: Arc<std::sync::atomic::AtomicI64>,
    /// Its figures for the status page.
    book: status::ShardBook,
    /// When this tenure began.
    taken_at: Instant,
}

struct SlotState {
    /// The authoritative copy: its counter is the condition of the next write.
    lease: Lease,
    /// Start of the last successful write (renew, take or checkpoint).
    last_write: LastWrite,
    /// Writes since `lease` was last confirmed whose outcome is unknown (a timeout or other
    /// non-throttling error: the write may have landed). Every write is conditioned on
    /// `lease.counter`, so together they can have moved the counter by at most one.
    unconfirmed: u32,
    /// The last throughput measurement. `None` until the tenure's first write after its
    /// take: the first window starts there, not at the take, so that the processor's start
    /// (and a hand-off's wait) do not make the lease look idle. Until the first measurement,
    /// writes carry the figure the lease had (its previous owner's).
    measured: Option<Measure>,
}

impl SlotState {
    /// Count a failed write that may nevertheless have landed.
    fn failed_write(&mut self, e: &LeaseStoreError) {
        if e.kind() != crate::error::ErrorKind::Throttled {
            self.unconfirmed += 1;
        }
    }

    /// Could our own unconfirmed writes explain the stored lease `cur`? Only if it still names
    /// us and its counter moved by exactly one (every write of ours was conditioned on our
    /// counter, so at most one of them landed).
    fn explains(&self, cur: &Lease, me: &str) -> bool {
        self.unconfirmed > 0 && self.may_be_our_write(cur, me)
    }

    /// Whether `cur` (read after a conflict) may be this lease as one more write of ours left
    /// it: ours, one counter step on, and, during a hand-off this worker knows of, in that very
    /// hand-off (a Java KCL 2.x take keeps `checkpointOwner`: owner J, `checkpointOwner` this
    /// worker, counter + 1 is J's lease, not ours).
    fn may_be_our_write(&self, cur: &Lease, me: &str) -> bool {
        cur.is_owned_by(me)
            && cur.counter == self.lease.counter + 1
            && (!self.lease.is_in_handoff()
                || (cur.owner == self.lease.owner
                    && cur.checkpoint_owner == self.lease.checkpoint_owner))
    }

    /// The lease's throughput, when at least `window` passed since it was last measured (the
    /// Java KCL measures over its renewal interval; a shorter window would hold one poll or
    /// none): `bytes` is the tenure's byte count now. Returns it with the new measurement (set
    /// it in `measured` once a write carried it). The first call of a tenure only starts the
    /// window. See [`Measure`] for the smoothing.
    fn throughput(
        &mut self,
        bytes: u64,
        now: Instant,
        window: Duration,
    ) -> Option<(crate::lease::Throughput, Measure)> {
        let seed = self.lease.throughput.map(|t| t.kbps());
        let last = *self
            .measured
            .get_or_insert_with(|| Measure::start(now, bytes, seed));
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed < window.max(Duration::from_secs(1)) {
            return None;
        }
        let next = last.next(now, bytes);
        crate::lease::Throughput::from_kbps(next.kbps()).map(|t| (t, next))
    }

    fn confirmed(&mut self, lease: Lease, started: Instant) {
        self.lease = lease;
        self.last_write.set(started);
        self.unconfirmed = 0;
    }
}

/// A worker whose processing of a held lease is further behind the stream than this does not
/// steal for load (see [`LeaseCoordinator::lagging`]).
pub const LAGGING: Duration = Duration::from_secs(60);

/// How long the throughput written to a lease is averaged over (the time constant of its
/// exponential moving average). Records arrive in polls, so a renewal interval holds two or
/// three of them, and a shard of a record a second holds a few records: a figure over one
/// interval varies by half, and balancing by it would move leases back and forth. The Java
/// KCL 3.x averages over about two intervals; its leader balances once a minute.
const THROUGHPUT_SMOOTHING: Duration = Duration::from_secs(30);

/// A lease's throughput as last measured: an exponential moving average of the rates of the
/// windows between measurements, weighted by their length (time constant
/// [`THROUGHPUT_SMOOTHING`]). It starts from the lease's stored figure (its previous owner's,
/// as the Java KCL seeds it) with full weight; a lease with none starts with no weight, so its
/// first figures are plain averages of the windows measured.
#[derive(Debug, Clone, Copy)]
struct Measure {
    /// When.
    at: Instant,
    /// The tenure's byte count then.
    bytes: u64,
    /// The average, not yet divided by `weight`.
    sum: f64,
    /// The weight of what was averaged (1 once long enough).
    weight: f64,
}

impl Measure {
    fn start(at: Instant, bytes: u64, seed: Option<f64>) -> Self {
        let (sum, weight) = seed.map_or((0.0, 0.0), |kbps| (kbps, 1.0));
        Measure {
            at,
            bytes,
            sum,
            weight,
        }
    }

    /// With the window from this measurement to `now` (when the count was `bytes`) added.
    fn next(self, now: Instant, bytes: u64) -> Self {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = bytes.saturating_sub(self.bytes) as f64 / 1024.0 / secs.max(f64::EPSILON);
        let alpha = 1.0 - (-secs / THROUGHPUT_SMOOTHING.as_secs_f64()).exp();
        Measure {
            at: now,
            bytes,
            sum: (1.0 - alpha) * self.sum + alpha * rate,
            weight: (1.0 - alpha) * self.weight + alpha,
        }
    }

    /// The average, KB/s.
    fn kbps(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            0.0
        }
    }
}

/// When the last successful write of a held lease started. Shared between the lease's
/// lock-protected state and the expiry watchdog, which must not wait behind a write that hangs.
#[derive(Clone)]
struct LastWrite(Arc<Mutex<Instant>>);

impl LastWrite {
    fn new(at: Instant) -> Self {
        LastWrite(Arc::new(Mutex::new(at)))
    }

    fn set(&self, at: Instant) {
        *self.0.lock() = at;
    }

    fn get(&self) -> Instant {
        *self.0.lock()
    }

    fn elapsed(&self) -> Duration {
        self.get().elapsed()
    }
}

struct Inner {
    store: Arc<dyn LeaseStore>,
    config: CoordinatorConfig,
    held: Mutex<BTreeMap<String, Slot>>,
    observed: Mutex<BTreeMap<String, ObservedLease>>,
    rng: Mutex<StdRng>,
    taking: AtomicBool,
    /// How this worker gets leases.
    protocol: watch::Sender<Protocol>,
    /// Whether leases of the other mode (see [`CoordinatorConfig::multi_stream`]) were
    /// reported already.
    foreign_reported: AtomicBool,
    /// Other workers balance by lease count (see [`CoordinatorConfig::balance_by_load`]).
    peers_balance_by_count: AtomicBool,
    /// A worker took a live lease of this one without a hand-off: a count-based stealer (a
    /// Java KCL 2.x worker) shares the table.
    count_stealer_seen: AtomicBool,
    /// A multi-stream worker's tracked streams (serialized identifiers): it takes no lease of
    /// another stream. `None`: every stream of its mode.
    tracked: Mutex<Option<Arc<BTreeSet<String>>>>,
    tx: watch::Sender<HeldLeases>,
    health: Arc<HealthState>,
    metrics: WorkerMetrics,
    /// Recent errors, for the status page.
    errors: status::ErrorLog,
    /// When the last successful scan of the table was.
    scanned_at: Mutex<Option<Instant>>,
}

/// Holds, renews, takes and releases this worker's leases. Cheap to clone.
#[derive(Clone)]
pub struct LeaseCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeaseCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseCoordinator")
            .field("worker_id", &self.inner.config.worker_id)
            .field("held", &self.held_keys())
            .finish()
    }
}

/// Retries of one checkpoint write (throttling, timeouts, and conflicts explained by our own
/// unconfirmed writes): five attempts, from 100 ms doubling up to 2 s.
const CHECKPOINT_RETRY: RetryPolicy =
    RetryPolicy::new(5, Duration::from_millis(100), Duration::from_secs(2));

impl LeaseCoordinator {
    /// A coordinator for `config.worker_id` over `store`. Call [`LeaseCoordinator::run`].
    pub fn new(store: Arc<dyn LeaseStore>, config: CoordinatorConfig) -> Self {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let (tx, _) = watch::channel(Arc::new(BTreeMap::new()));
        LeaseCoordinator {
            inner: Arc::new(Inner {
                store,
                health: Arc::new(HealthState::new(config.failover_time)),
                metrics: WorkerMetrics::new(&config.worker_id),
                config,
                held: Mutex::new(BTreeMap::new()),
                observed: Mutex::new(BTreeMap::new()),
                rng: Mutex::new(rng),
                taking: AtomicBool::new(true),
                protocol: watch::Sender::new(Protocol::Leaderless),
                foreign_reported: AtomicBool::new(false),
                peers_balance_by_count: AtomicBool::new(false),
                count_stealer_seen: AtomicBool::new(false),
                tracked: Mutex::new(None),
                tx,
                errors: status::ErrorLog::default(),
                scanned_at: Mutex::new(None),
            }),
        }
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.inner.config.worker_id
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    /// The lease store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.inner.store
    }

    /// What the worker's health is computed from (shared with the scheduler).
    pub(crate) fn health_state(&self) -> &Arc<HealthState> {
        &self.inner.health
    }

    /// Watch the set of held leases (it changes on take, loss and release).
    pub fn subscribe(&self) -> watch::Receiver<HeldLeases> {
        self.inner.tx.subscribe()
    }

    /// The held leases now.
    pub fn held(&self) -> HeldLeases {
        self.inner.tx.borrow().clone()
    }

    /// Keys of the held leases now.
    pub fn held_keys(&self) -> BTreeSet<String> {
        self.inner.held.lock().keys().cloned().collect()
    }

    /// How this worker gets leases now.
    pub fn protocol(&self) -> Protocol {
        *self.inner.protocol.borrow()
    }

    /// Switch how this worker gets leases (the fleet's protocol changed). Held leases stay
    /// held.
    pub fn set_protocol(&self, protocol: Protocol) {
        let changed = self.inner.protocol.send_if_modified(|p| {
            let changed = *p != protocol;
            *p = protocol;
            changed
        });
        if changed {
            tracing::info!(worker_id = %self.worker_id(), ?protocol, "lease protocol changed");
        }
    }

    /// Whether the other workers balance by lease count (a KCL 3.x fleet in 2.x-compatible mode:
    /// its Java workers run the 2.x taker). Balancing by load among workers that balance by
    /// count would move leases back and forth, so this worker then balances by count too.
    pub fn set_peers_balance_by_count(&self, yes: bool) {
        if self
            .inner
            .peers_balance_by_count
            .swap(yes, Ordering::SeqCst)
            != yes
        {
            tracing::info!(worker_id = %self.worker_id(), by_count = yes, "lease balancing follows the fleet: by lease count while its other workers balance by count");
        }
    }

    /// Whether steals balance by load now (rule 6 of the taker; while this worker is
    /// [`lagging`](Self::lagging), it steals nothing).
    fn balances_by_load(&self) -> bool {
        self.inner.config.balance_by_load
            && !self.inner.peers_balance_by_count.load(Ordering::SeqCst)
            && !self.inner.count_stealer_seen.load(Ordering::SeqCst)
    }

    /// A write of the held lease `key` found `cur` instead (`held` as this worker had it,
    /// `live`: its last write was on schedule, so nobody saw it expire). Another worker took it while this
    /// one renewed it, without a hand-off, where this worker's own steals are hand-offs: it
    /// steals by count (a Java KCL 2.x worker, or a Java 3.x worker in a 2.x mode without a
    /// `Migration3.0` item). Balancing by load next to it would move leases back and forth, so
    /// this worker balances by count from now on.
    fn noticed_plain_steal(&self, key: &str, held: &Lease, cur: Option<&Lease>, live: bool) {
        let me = self.worker_id();
        let Some(thief) = cur
            .filter(|c| c.checkpoint_owner.is_none() && !held.is_in_handoff())
            .and_then(|c| c.owner.as_deref())
            .filter(|o| *o != me)
        else {
            return;
        };
        if !live
            || !self.inner.config.graceful_steals
            || !self.inner.config.balance_by_load
            || self.protocol() != Protocol::Leaderless
        {
            return;
        }
        if !self.inner.count_stealer_seen.swap(true, Ordering::SeqCst) {
            tracing::warn!(worker_id = %me, lease_key = key, %thief,
                "another worker took a lease this worker was renewing, without a hand-off: it balances by lease count (a Java KCL 2.x worker?); this worker balances by count too from now on, so that the two do not move leases back and forth (set leaseAssignmentStrategy = LEASE_COUNT_BASED while such workers share the lease table)");
        }
    }

    /// Count `records` records of `bytes` bytes processed under the held lease `key` (its
    /// throughput, which renewals write for balancing), in a batch `millis_behind` the tip of
    /// the stream.
    pub fn record_processed(
        &self,
        key: &str,
        records: u64,
        bytes: u64,
        millis_behind: Option<i64>,
    ) {
        if let Some(slot) = self.inner.held.lock().get(key) {
            slot.bytes.fetch_add(bytes, Ordering::Relaxed);
            slot.book.records.fetch_add(records, Ordering::Relaxed);
            slot.behind_ms
                .store(millis_behind.unwrap_or(-1), Ordering::Relaxed);
        }
    }

    /// Whether a held lease's processing is more than [`LAGGING`] behind the stream: its
    /// throughput is then what this worker manages, not what the shard carries, and taking more
    /// load by it would make things worse (the taker's rule 6 waits).
    fn lagging(&self) -> bool {
        self.inner
            .held
            .lock()
            .values()
            .any(|s| s.behind_ms.load(Ordering::Relaxed) > LAGGING.as_millis() as i64)
    }

    /// Renew and take until `shutdown` is cancelled. Taking stops early after
    /// [`LeaseCoordinator::stop_taking`].
    pub async fn run(&self, shutdown: CancellationToken) {
        tokio::join!(
            self.run_renewer(&shutdown),
            self.run_taker(&shutdown),
            self.run_watchdog(&shutdown),
            self.run_status_sampler(&shutdown)
        );
    }

    fn publish(&self) {
        let snapshot: BTreeMap<String, LeaseTenure> = self
            .inner
            .held
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.tenure.clone()))
            .collect();
        self.inner.metrics.current_leases(snapshot.len());
        self.inner.tx.send_replace(Arc::new(snapshot));
    }

    /// Every held lease: key, tenure and lock-protected state.
    fn slots(&self) -> Vec<(String, LeaseTenure, Arc<tokio::sync::Mutex<SlotState>>)> {
        self.inner
            .held
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.tenure.clone(), s.state.clone()))
            .collect()
    }

    fn slot(&self, key: &str) -> Option<(LeaseTenure, Arc<tokio::sync::Mutex<SlotState>>)> {
        self.inner
            .held
            .lock()
            .get(key)
            .map(|s| (s.tenure.clone(), s.state.clone()))
    }

    /// Whether tenure `token` of `key` still holds: it was not lost, and its last successful
    /// write started within the failover time. A worker that was stalled for longer (a paused
    /// process, a starved runtime) has lost the lease whether or not the expiry watchdog has
    /// run since: other workers may already have taken it. Such a tenure is ended here, at
    /// once. Check this before acting on the lease's behalf outside a lease write (a lease
    /// write checks it itself).
    pub fn holds(&self, key: &str, token: Uuid) -> bool {
        let since = {
            let held = self.inner.held.lock();
            match held.get(key) {
                Some(s) if s.tenure.token == token && !s.tenure.lost.is_cancelled() => {
                    s.last_write.elapsed()
                }
                _ => return false,
            }
        };
        if since > self.inner.config.failover_time {
            self.lose_expired(key, token, since);
            return false;
        }
        true
    }

    /// End the tenure `token` of `key` (if it is still the current one) and tell its consumer.
    fn lose(&self, key: &str, token: Uuid, reason: &str) {
        let removed = {
            let mut held = self.inner.held.lock();
            match held.get(key) {
                Some(s) if s.tenure.token == token => self.remove_slot(&mut held, key),
                _ => None,
            }
        };
        if let Some(slot) = removed {
            tracing::warn!(worker_id = %self.worker_id(), lease_key = key, reason, "lease lost");
            self.inner.metrics.lost_lease();
            self.note_error(Some(key), format!("lease lost: {reason}"));
            slot.tenure.lost.cancel();
            self.publish();
        }
    }

    /// Remove the slot of `key` from `held` (the locked map) and, under the same lock, forget
    /// what the worker's health says about the lease: a renewal result is recorded only under
    /// that lock for a tenure it finds held (see [`LeaseCoordinator::renewal_ended`]), so
    /// nothing about this tenure can be recorded after this.
    fn remove_slot(&self, held: &mut BTreeMap<String, Slot>, key: &str) -> Option<Slot> {
        let slot = held.remove(key)?;
        self.inner.health.lease_gone(key);
        Some(slot)
    }

    /// Record in the worker's health how a renewal of tenure `token` of `key` ended (`ok`:
    /// it landed or found the lease changed), but only while that tenure holds the lease. A renewal whose
    /// attempts outlived its tenure (the watchdog dropped the lease, another worker took it, the
    /// shard ended, this worker took the lease back under a new tenure) says nothing about the
    /// leases held now, and a failure recorded for a lease no longer held would be cleared only
    /// by holding it again: the worker would stay unready, perhaps for good.
    fn renewal_ended(&self, key: &str, token: Uuid, ok: bool) {
        let held = self.inner.held.lock();
        if held.get(key).is_some_and(|s| s.tenure.token == token) {
            self.inner.health.renewal(key, ok);
        }
    }

    /// Take only leases of these streams (serialized identifiers), from the next take round
    /// on: a multi-stream worker's tracked streams. Held leases of other streams stay held
    /// until [`LeaseCoordinator::release`]d.
    pub fn track_streams(&self, streams: BTreeSet<String>) {
        *self.inner.tracked.lock() = Some(Arc::new(streams));
    }

    /// The streams [`LeaseCoordinator::track_streams`] set, if any.
    pub(crate) fn tracked_streams(&self) -> Option<Arc<BTreeSet<String>>> {
        self.inner.tracked.lock().clone()
    }

    /// Stop holding `key` without writing anything (e.g. before deleting a finished lease).
    pub fn forget(&self, key: &str) {
        let removed = self.remove_slot(&mut self.inner.held.lock(), key);
        if let Some(slot) = removed {
            slot.tenure.lost.cancel();
            self.publish();
        }
    }

    /// The lease `key` as stored now (`None` when missing or unreadable: treated as lost).
    async fn reread(&self, key: &str) -> Option<Lease> {
        match self.inner.store.get_lease(key).await {
            Ok(cur) => cur,
            Err(e) => {
                tracing::warn!(lease_key = %key, error = %e, "could not re-read lease after a conflict; treating it as lost");
                None
            }
        }
    }

    /// Bytes processed under the held lease `key` so far in its tenure.
    fn processed_bytes(&self, key: &str) -> u64 {
        self.inner
            .held
            .lock()
            .get(key)
            .map_or(0, |s| s.bytes.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// This worker adopted `cur` as its view of the lease `key` (knowing of a hand-off before:
    /// `knew`): if `cur` shows a hand-off this worker did not know of, start it. Every path that
    /// adopts a stored lease goes through here: a write of ours that landed in spite of an
    /// error can hide the leader's hand-off behind it (the next writes, aware of it, no longer
    /// fail on it).
    fn noticed_handoff(&self, key: &str, tenure: &LeaseTenure, knew: bool, cur: &Lease) {
        if !knew {
            if let Some(to) = self.handoff_target(cur) {
                self.handoff_started(key, tenure, &to);
            }
        }
    }

    /// A KCL 3.x leader, or a leaderless worker balancing (a steal), started handing `key`
    /// (tenure `tenure`) to `to`: tell the consumer (its
    /// processor shuts down as requested and may checkpoint; the scheduler then completes the
    /// hand-off with [`LeaseCoordinator::release`]), and complete it anyway after the hand-off
    /// timeout.
    fn handoff_started(&self, key: &str, tenure: &LeaseTenure, to: &str) {
        if tenure.handoff.is_cancelled() {
            return;
        }
        tracing::info!(worker_id = %self.worker_id(), lease_key = key, to, "this lease is being handed to another worker (by the fleet's leader, or a worker balancing): asking its processor to checkpoint");
        tenure.handoff.cancel();
        self.publish();
        let coordinator = self.clone();
        let (key, token) = (key.to_string(), tenure.token);
        let timeout = self.inner.config.handoff_timeout;
        let lost = tenure.lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    tracing::warn!(lease_key = %key, ?timeout, "the processor did not finish within the hand-off timeout: handing the lease over now");
                    coordinator.release(&key, token).await;
                }
            }
        });
    }

    fn adopt(&self, lease: Lease, written_at: Instant) {
        let key = lease.key.clone();
        let last_write = LastWrite::new(written_at);
        let slot = Slot {
            checkpointed: LastWrite::new(written_at),
            metrics: ShardMetrics::new(&key),
            tenure: LeaseTenure {
                lease: lease.clone(),
                token: new_token(),
                lost: CancellationToken::new(),
                handoff: CancellationToken::new(),
            },
            state: Arc::new(tokio::sync::Mutex::new(SlotState {
                lease,
                last_write: last_write.clone(),
                unconfirmed: 0,
                measured: None,
            })),
            last_write,
            bytes: Arc::default(),
            behind_ms: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            book: status::ShardBook::default(),
            taken_at: Instant::now(),
        };
        let old = {
            let mut held = self.inner.held.lock();
            let old = held.insert(key.clone(), slot);
            // Under the lock, after the new tenure is in: nothing of an earlier tenure (a
            // renewal that failed) carries over, and nothing of it can be recorded after this.
            self.inner.health.lease_gone(&key);
            old
        };
        if let Some(old) = old {
            old.tenure.lost.cancel();
        }
    }

    /// Apply `change` to the held lease `key` of tenure `token` and write it (checkpoint
    /// fields; see [`LeaseStore::update_lease`]), retrying throttling and timeouts a bounded
    /// number of times. A conflict ends the tenure.
    pub async fn update_lease(
        &self,
        key: &str,
        token: Uuid,
        change: impl Fn(&mut Lease),
    ) -> Result<Lease, LeaseUpdateError> {
        let started = Instant::now();
        let result = self.write_update(key, token, change).await;
        self.update_written(key, token, &result, started);
        result
    }

    /// Metrics of a checkpoint write; a committed checkpoint (not only a prepared one) also
    /// restarts the shard's `SecondsSinceLastCheckpoint`.
    fn update_written(
        &self,
        key: &str,
        token: Uuid,
        result: &Result<Lease, LeaseUpdateError>,
        started: Instant,
    ) {
        let took = started.elapsed();
        let held = self.inner.held.lock();
        match held.get(key).filter(|s| s.tenure.token == token) {
            Some(slot) => {
                slot.metrics.checkpoint_write(result.is_ok(), took);
                if result.is_ok() {
                    // The write renewed the lease: a renewal that failed before no longer
                    // says anything (and a lease checkpointed this often is not renewed).
                    self.inner.health.renewal(key, true);
                }
                if result
                    .as_ref()
                    .is_ok_and(|l| l.pending_checkpoint.is_none())
                {
                    slot.checkpointed.set(Instant::now());
                }
            }
            None => ShardMetrics::new(key).checkpoint_write(result.is_ok(), took),
        }
    }

    async fn write_update(
        &self,
        key: &str,
        token: Uuid,
        change: impl Fn(&mut Lease),
    ) -> Result<Lease, LeaseUpdateError> {
        let lost = |reason: LossReason| LeaseUpdateError::LeaseLost {
            lease_key: key.to_string(),
            reason,
        };
        let Some((tenure, state)) = self.slot(key) else {
            return Err(lost(LossReason::NotHeld));
        };
        if tenure.token != token {
            return Err(lost(LossReason::NewerTenure));
        }
        let mut st = state.lock().await;
        if tenure.lost.is_cancelled() {
            return Err(lost(LossReason::Lost));
        }
        let since = st.last_write.elapsed();
        if since > self.inner.config.failover_time {
            self.lose(key, token, "expired locally before a checkpoint");
            return Err(lost(LossReason::ExpiredLocally));
        }
        let mut desired = st.lease.clone();
        change(&mut desired);
        desired.counter = st.lease.counter;
        // A lease checkpointed often is not renewed: its checkpoints carry its throughput.
        let measured = st.throughput(
            self.processed_bytes(key),
            Instant::now(),
            self.inner.config.renew_interval,
        );
        if let Some((t, _)) = measured {
            desired.throughput = Some(t);
        }
        let mut retry = CHECKPOINT_RETRY.start();
        loop {
            let started = Instant::now();
            match self.inner.store.update_lease(&desired).await {
                Ok(WriteOutcome::Applied(lease)) => {
                    st.confirmed(lease.clone(), started);
                    if let Some((_, mark)) = measured {
                        st.measured = Some(mark);
                    }
                    return Ok(lease);
                }
                Ok(WriteOutcome::Conflict) => {
                    let cur = match self.inner.store.get_lease(key).await {
                        Ok(cur) => cur,
                        Err(e) => {
                            tracing::warn!(lease_key = key, error = %e, "could not re-read lease after a conflict; treating it as lost");
                            None
                        }
                    };
                    let me = self.worker_id();
                    let ours = |cur: &Lease| {
                        st.may_be_our_write(cur, me)
                            && cur.counter == desired.counter + 1
                            && cur.checkpoint == desired.checkpoint
                            && cur.pending_checkpoint == desired.pending_checkpoint
                    };
                    match cur {
                        // A retried attempt of this very checkpoint had landed.
                        Some(cur) if ours(&cur) => {
                            let knew = st.lease.is_in_handoff();
                            st.confirmed(cur.clone(), started);
                            self.noticed_handoff(key, &tenure, knew, &cur);
                            return Ok(cur);
                        }
                        // A hand-off of this lease began (a leader's, or a steal): the checkpoint
                        // goes on (the old owner checkpoints until it passes the lease on), and
                        // the processor is asked to finish.
                        Some(cur)
                            if !st.lease.is_in_handoff()
                                && cur.checkpoint_owner.as_deref() == Some(me)
                                && cur.owner.as_deref() != Some(me)
                                && (cur.counter == st.lease.counter || st.explains(&cur, me))
                                && retry.retry_now() =>
                        {
                            st.lease = cur.clone();
                            st.unconfirmed = 0;
                            self.handoff_started(
                                key,
                                &tenure,
                                cur.owner.as_deref().unwrap_or_default(),
                            );
                            desired = cur;
                            change(&mut desired);
                            desired.counter = st.lease.counter;
                        }
                        // Our tenure ended while this write was in flight (lost, expired,
                        // or the lease was taken back by this worker under a new tenure,
                        // which names this worker too): the counter moved for the new
                        // tenure, and nothing of it is ours to write over.
                        Some(_) if !self.holds(key, token) => {
                            return Err(lost(LossReason::LostWhileRetrying));
                        }
                        // Another write of ours (a renewal or an earlier checkpoint that
                        // reported a timeout) had landed: still ours; write again on top.
                        Some(cur) if st.explains(&cur, me) && retry.retry_now() => {
                            tracing::debug!(lease_key = key, counter = cur.counter, "checkpoint conflict was caused by our own unconfirmed write; writing again");
                            // Its start is unknown: expiry still counts from the last write we
                            // saw succeed.
                            let knew = st.lease.is_in_handoff();
                            st.lease = cur.clone();
                            st.unconfirmed = 0;
                            self.noticed_handoff(key, &tenure, knew, &cur);
                            desired = cur;
                            change(&mut desired);
                            desired.counter = st.lease.counter;
                        }
                        _ => {
                            self.lose(
                                key,
                                token,
                                "checkpoint write found the lease changed by another worker",
                            );
                            return Err(lost(LossReason::TakenByAnotherWorker));
                        }
                    }
                }
                Err(e) if e.kind().is_retryable() && retry.may_retry() => {
                    st.failed_write(&e);
                    tracing::debug!(lease_key = key, error = %e, "checkpoint write failed; retrying");
                    tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    if tenure.lost.is_cancelled() {
                        return Err(lost(LossReason::LostWhileRetrying));
                    }
                }
                Err(e) => {
                    st.failed_write(&e);
                    return Err(LeaseUpdateError::Store(e));
                }
            }
        }
    }

    /// The lease `key` as this worker holds it now (its latest written state).
    pub async fn current(&self, key: &str) -> Option<Lease> {
        let (_, state) = self.slot(key)?;
        let st = state.lock().await;
        Some(st.lease.clone())
    }

    /// Release every held lease (graceful shutdown): clear the owner so others take them at
    /// once instead of waiting for expiry. Tenures end.
    pub async fn release_all(&self) {
        self.release_all_to(Vec::new()).await
    }

    /// Release every held lease (graceful shutdown), the `i`-th to `receivers[i]` when there
    /// is one (a KCL 3.x fleet: assigned to a live worker, which finds it at its next
    /// discovery, instead of waiting for the leader to assign it), else with no owner.
    pub async fn release_all_to(&self, receivers: Vec<String>) {
        self.stop_taking();
        let slots = self.slots();
        let mut receivers = receivers.into_iter();
        futures::future::join_all(slots.into_iter().map(|(key, tenure, state)| {
            let to = receivers.next();
            async move {
                let st = state.lock().await;
                if tenure.lost.is_cancelled() {
                    return;
                }
                let passed = match to {
                    Some(to) if self.handoff_target(&st.lease).is_none() => {
                        let passed = self.assign_retrying(&st.lease, &to).await;
                        if passed {
                            tracing::info!(worker_id = %self.worker_id(), lease_key = %key, to = %to, "lease passed on");
                            self.inner.metrics.released(1);
                        }
                        passed
                    }
                    _ => false,
                };
                drop(st);
                if passed {
                    self.lose_quietly(&key, tenure.token);
                } else {
                    self.release_slot(key, tenure, state).await;
                }
            }
        }))
        .await;
        self.publish();
    }

    /// KCL 3.x, as this worker stops: release (with no owner, for the leader to assign) the
    /// leases assigned to it that it never adopted (assigned while it stopped).
    pub async fn pass_on_unheld(&self) {
        if self.protocol() != Protocol::Assigned {
            return;
        }
        let Ok(keys) = self.inner.store.lease_keys_owned_by(self.worker_id()).await else {
            return;
        };
        let held = self.held_keys();
        for key in keys.into_iter().filter(|k| !held.contains(k)) {
            if let Ok(Some(lease)) = self.inner.store.get_lease(&key).await {
                if lease.owner.as_deref() == Some(self.worker_id()) && !lease.is_in_handoff() {
                    if let Ok(WriteOutcome::Applied(_)) = self.inner.store.evict_lease(&lease).await
                    {
                        tracing::info!(worker_id = %self.worker_id(), lease_key = %key, "lease assigned while stopping released");
                    }
                }
            }
        }
    }

    /// `assign_lease`, retried on throttling and timeouts (five attempts): a conflict after a
    /// failed attempt that may have landed counts as done when the lease is `to`'s now.
    async fn assign_retrying(&self, lease: &Lease, to: &str) -> bool {
        let mut retry = CHECKPOINT_RETRY.start();
        let mut unsure = false;
        loop {
            match self.inner.store.assign_lease(lease, to).await {
                Ok(WriteOutcome::Applied(_)) => return true,
                Ok(WriteOutcome::Conflict) => {
                    return unsure
                        && self.reread(&lease.key).await.is_some_and(|cur| {
                            cur.owner.as_deref() == Some(to) && !cur.is_in_handoff()
                        });
                }
                Err(e) if e.kind().is_retryable() && retry.may_retry() => {
                    unsure |= e.kind() != crate::error::ErrorKind::Throttled;
                    tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                }
                Err(e) => {
                    tracing::warn!(lease_key = %lease.key, to, error = %e, "passing the lease on failed; it is taken (or reassigned) when it expires");
                    return false;
                }
            }
        }
    }

    /// Release the lease `key` if it is still held in tenure `token` (clear its owner, end the
    /// tenure): a multi-stream worker's lease of a stream it no longer tracks, whose consumer
    /// has stopped. A later tenure of the lease is left alone.
    pub async fn release(&self, key: &str, token: Uuid) {
        let Some((tenure, state)) = self.slot(key).filter(|(t, _)| t.token == token) else {
            return;
        };
        self.release_slot(key.to_string(), tenure, state).await;
        self.publish();
    }

    async fn release_slot(
        &self,
        key: String,
        tenure: LeaseTenure,
        state: Arc<tokio::sync::Mutex<SlotState>>,
    ) {
        let st = state.lock().await;
        if tenure.lost.is_cancelled() {
            return;
        }
        if let Some(to) = self.handoff_target(&st.lease) {
            // A hand-off: the lease goes to the worker named in it.
            if self.assign_retrying(&st.lease, &to).await {
                tracing::info!(worker_id = %self.worker_id(), lease_key = %key, to = %to, "lease handed off");
                self.inner.metrics.released(1);
            } else {
                tracing::info!(lease_key = %key, "the hand-off did not complete (the lease changed hands, or the write failed); it is taken (or reassigned) when it expires");
            }
            drop(st);
            self.lose_quietly(&key, tenure.token);
            return;
        }
        match self.inner.store.evict_lease(&st.lease).await {
            Ok(WriteOutcome::Applied(_)) => {
                tracing::info!(worker_id = %self.worker_id(), lease_key = %key, "lease released");
                self.inner.metrics.released(1);
            }
            Ok(WriteOutcome::Conflict) => match self.reread(&key).await {
                // A hand-off of the lease began (a leader's, or a steal) since the last renewal:
                // complete the hand-off rather than leave it to expire.
                Some(cur) if self.handoff_target(&cur).is_some() => {
                    let to = self.handoff_target(&cur).unwrap_or_default();
                    if self.assign_retrying(&cur, &to).await {
                        tracing::info!(worker_id = %self.worker_id(), lease_key = %key, to = %to, "lease handed off");
                        self.inner.metrics.released(1);
                    }
                }
                _ => tracing::info!(lease_key = %key, "lease had changed hands before release"),
            },
            Err(e) => {
                tracing::warn!(lease_key = %key, error = %e, "releasing lease failed; others will take it after it expires")
            }
        }
        drop(st);
        self.lose_quietly(&key, tenure.token);
    }

    /// The worker a hand-off of `lease` (as this worker holds it) goes to, if one is under way
    /// from this worker.
    fn handoff_target(&self, lease: &Lease) -> Option<String> {
        let me = self.worker_id();
        match (&lease.checkpoint_owner, &lease.owner) {
            (Some(from), Some(to)) if from == me && to != me => Some(to.clone()),
            _ => None,
        }
    }

    fn lose_quietly(&self, key: &str, token: Uuid) {
        let mut held = self.inner.held.lock();
        if held.get(key).is_some_and(|s| s.tenure.token == token) {
            if let Some(s) = self.remove_slot(&mut held, key) {
                s.tenure.lost.cancel();
            }
        }
    }
}

/// A random (version 4) token for one tenure of a lease, from `rand` (uuid's own `v4` would
/// build a second random-number stack, getrandom 0.4 beside rand's 0.3).
fn new_token() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

#[cfg(test)]
mod tests;
