//! Seeded fault plans for the lease store and the stream.
//!
//! Each plan draws from its own generator, so the faults of a run depend only on the seed and
//! on the (deterministic) order of calls. Faults are switched off when the world starts to
//! drain, so that convergence is judged on a healthy system. Besides per-call faults and rare
//! long hangs, the lease store has outages ([`TableOutage`]): windows in which every call of a
//! worker hangs until its timeout, so that renewals' attempts outlive the lease.

use kinesis_client::testing::{
    Fault, FaultInjector, LeaseOp, StreamFault, StreamFaultInjector, StreamOp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Probabilities of each lease-store fault, per call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreFaultRates {
    /// Throttling error, nothing written.
    pub throttle: f64,
    /// Timeout (after a random wait up to `max_delay`), nothing written.
    pub timeout: f64,
    /// The write applies, then the call times out (the response was lost).
    pub timeout_after_apply: f64,
    /// A conditional write reports a lost condition without writing.
    pub conflict: f64,
    /// A slow call: a random wait up to `max_delay`, then normal.
    pub delay: f64,
    /// The longest injected wait.
    pub max_delay: Duration,
}

impl StoreFaultRates {
    /// True when no fault can happen.
    pub fn is_quiet(&self) -> bool {
        self.throttle + self.timeout + self.timeout_after_apply + self.conflict + self.delay == 0.0
    }
}

/// Rare long hangs of single lease-store calls: one call is stuck for most of a failover
/// time (or longer) while the worker's other calls proceed. Half of them hang before the
/// table sees the call, half after the write applied (the response is slow); either way the
/// call then completes normally.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HangRates {
    /// Probability per call.
    pub per_call: f64,
    /// The shortest hang.
    pub min: Duration,
    /// The longest hang.
    pub max: Duration,
}

/// A lease-table outage (a network partition, an overloaded table): from `from` (after the
/// start), for `length`, every lease-store call of the worker it hits hangs `wait` and then
/// times out, nothing written (an SDK call reaching its timeout). A renewal retries such
/// attempts; started a third of the failover time after the lease's last write, three attempts
/// of `wait` outlive the lease when `wait` exceeds 2/9 of the failover time: the expiry
/// watchdog drops the lease, another worker may take it, and only then does the renewal fail
/// for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOutage {
    /// When it starts, from the start of the run.
    pub from: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// How long each call hangs before it times out.
    pub wait: Duration,
    /// The worker it hits (by id; one of the initial workers, so it exists at the start), or
    /// `None`: every worker.
    pub worker: Option<String>,
}

/// A hang drawn for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hang {
    /// The call hangs this long before the table sees it.
    Before(Duration),
    /// The write applies, then the response hangs this long.
    After(Duration),
}

/// Probabilities of each stream fault, per call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamFaultRates {
    /// ProvisionedThroughputExceeded.
    pub throttle: f64,
    /// A transient failure.
    pub timeout: f64,
    /// GetRecords: the iterator expired.
    pub expire_iterator: f64,
    /// A slow call: a random wait up to `max_delay`.
    pub delay: f64,
    /// The longest injected wait.
    pub max_delay: Duration,
}

/// Probabilities of the enhanced fan-out faults: per SubscribeToShard call
/// (`resource_in_use`, `limit_exceeded`) and per subscription event (`reset`, `silence`,
/// `end`). The stream's other rates (throttling, timeouts, delays) apply to the calls too.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SubscriptionFaultRates {
    /// SubscribeToShard: ResourceInUseException (a previous subscription still open).
    pub resource_in_use: f64,
    /// SubscribeToShard: LimitExceededException.
    pub limit_exceeded: f64,
    /// An event: the connection resets (the subscription fails).
    pub reset: f64,
    /// An event: the subscription goes silent (sends nothing more).
    pub silence: f64,
    /// An event: the subscription completes early (as at its 5 minutes).
    pub end: f64,
}

/// Whether a lease-store call writes (reads neither time out after applying nor hang after).
fn is_write(op: LeaseOp) -> bool {
    !matches!(
        op,
        LeaseOp::List
            | LeaseOp::Get
            | LeaseOp::CreateTable
            | LeaseOp::ListOwned
            | LeaseOp::CreateIndex
    )
}

fn random_delay(rng: &mut StdRng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rng.random_range(1..=max.as_millis().max(1) as u64))
}

/// Draws lease-store faults.
#[derive(Debug)]
pub struct StoreFaults {
    rates: StoreFaultRates,
    rng: Mutex<StdRng>,
    hangs: HangRates,
    /// Hangs draw from their own generator: the other faults' draws (and what older seeds
    /// do) stay as they were.
    hang_rng: Mutex<StdRng>,
    /// Lease-table outages: (from, until, wait, worker) in tokio time.
    outages: Vec<(
        tokio::time::Instant,
        tokio::time::Instant,
        Duration,
        Option<String>,
    )>,
    enabled: AtomicBool,
}

impl StoreFaults {
    /// A plan with these rates, drawing from `seed`.
    pub fn new(rates: StoreFaultRates, seed: u64) -> Self {
        StoreFaults {
            rates,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hangs: HangRates::default(),
            hang_rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x4A46_0000)),
            outages: Vec::new(),
            enabled: AtomicBool::new(true),
        }
    }

    /// Add rare long hangs of single calls.
    pub fn with_hangs(mut self, hangs: HangRates) -> Self {
        self.hangs = hangs;
        self
    }

    /// Add lease-table outages, their times counted from `start`.
    pub fn with_outages(mut self, start: tokio::time::Instant, outages: &[TableOutage]) -> Self {
        self.outages = outages
            .iter()
            .map(|o| {
                let from = start + o.from;
                (from, from + o.length, o.wait, o.worker.clone())
            })
            .collect();
        self
    }

    /// Stop (or resume) injecting faults.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// How long a call of `worker` made now hangs before it times out, when a lease-table
    /// outage hits that worker now.
    pub fn outage_wait(&self, worker: &str) -> Option<Duration> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let now = tokio::time::Instant::now();
        self.outages
            .iter()
            .find(|(from, until, _, w)| {
                *from <= now && now < *until && w.as_deref().is_none_or(|w| w == worker)
            })
            .map(|(_, _, wait, _)| *wait)
    }

    /// A long hang for one call of `op`, if any (only writes hang after applying).
    pub fn draw_hang(&self, op: LeaseOp) -> Option<Hang> {
        let h = self.hangs;
        if !self.enabled.load(Ordering::SeqCst) || h.per_call == 0.0 {
            return None;
        }
        let mut rng = self.hang_rng.lock().unwrap();
        if rng.random::<f64>() >= h.per_call {
            return None;
        }
        let d = Duration::from_millis(
            rng.random_range(h.min.as_millis() as u64..=h.max.as_millis().max(1) as u64),
        );
        Some(if is_write(op) && rng.random_bool(0.5) {
            Hang::After(d)
        } else {
            Hang::Before(d)
        })
    }

    /// The fault for one call of `op`, if any. Conflicts only hit conditional writes and
    /// timeouts-after-apply only writes.
    pub fn draw(&self, op: LeaseOp) -> Option<Fault> {
        if !self.enabled.load(Ordering::SeqCst) || self.rates.is_quiet() {
            return None;
        }
        let r = self.rates;
        let mut rng = self.rng.lock().unwrap();
        let x: f64 = rng.random();
        let write = is_write(op);
        let conditional = matches!(
            op,
            LeaseOp::Renew
                | LeaseOp::Take
                | LeaseOp::Evict
                | LeaseOp::Update
                | LeaseOp::Assign
                | LeaseOp::StartHandoff
        );
        let mut edge = r.throttle;
        if x < edge {
            return Some(Fault::Throttle);
        }
        edge += r.timeout;
        if x < edge {
            return Some(Fault::Timeout);
        }
        edge += r.timeout_after_apply;
        if x < edge {
            return write.then_some(Fault::TimeoutAfterApply);
        }
        edge += r.conflict;
        if x < edge {
            return conditional.then_some(Fault::Conflict);
        }
        edge += r.delay;
        if x < edge {
            return Some(Fault::Delay(random_delay(&mut rng, r.max_delay)));
        }
        None
    }

    /// A random wait for an injected timeout.
    pub fn timeout_wait(&self) -> Duration {
        random_delay(&mut self.rng.lock().unwrap(), self.rates.max_delay)
    }
}

impl FaultInjector for StoreFaults {
    fn fault(&self, op: LeaseOp, _lease_key: Option<&str>) -> Option<Fault> {
        self.draw(op)
    }

    fn timeout_wait(&self) -> Duration {
        StoreFaults::timeout_wait(self)
    }
}

/// The lease-table outages of one worker, as a [`FaultInjector`]: during an outage every
/// call times out after the outage's wait.
#[derive(Debug)]
pub struct OutageFaults {
    plan: Arc<StoreFaults>,
    worker: String,
}

impl OutageFaults {
    /// `worker`'s outages in `plan`.
    pub fn new(plan: Arc<StoreFaults>, worker: &str) -> Self {
        OutageFaults {
            plan,
            worker: worker.to_string(),
        }
    }
}

impl FaultInjector for OutageFaults {
    fn fault(&self, _op: LeaseOp, _lease_key: Option<&str>) -> Option<Fault> {
        self.plan.outage_wait(&self.worker).map(|_| Fault::Timeout)
    }

    /// Asked right after `fault`, in the same instant.
    fn timeout_wait(&self) -> Duration {
        self.plan.outage_wait(&self.worker).unwrap_or_default()
    }
}

/// Draws stream faults; installed on the shared `InMemoryStream` as its fault injector.
#[derive(Debug)]
pub struct StreamFaults {
    rates: StreamFaultRates,
    rng: Mutex<StdRng>,
    enabled: AtomicBool,
    /// Windows of tokio time in which every GetRecords fails transiently (an HTTP 500), and
    /// every subscription attempt fails and every subscription is reset.
    outages: Vec<(tokio::time::Instant, tokio::time::Instant)>,
    /// Enhanced fan-out faults, drawn from their own generator (the other draws, and what
    /// polling seeds do, stay as they were).
    subscriptions: SubscriptionFaultRates,
    subscription_rng: Mutex<StdRng>,
}

impl StreamFaults {
    /// A plan with these rates, drawing from `seed`.
    pub fn new(rates: StreamFaultRates, seed: u64) -> Self {
        StreamFaults {
            rates,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            enabled: AtomicBool::new(true),
            outages: Vec::new(),
            subscriptions: SubscriptionFaultRates::default(),
            subscription_rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5B5C_41BE)),
        }
    }

    /// Add enhanced fan-out faults.
    pub fn with_subscription_faults(mut self, rates: SubscriptionFaultRates) -> Self {
        self.subscriptions = rates;
        self
    }

    /// The fan-out fault for a SubscribeToShard call or a subscription event, if any.
    fn draw_subscription(&self, op: StreamOp) -> Option<StreamFault> {
        let r = self.subscriptions;
        let mut rng = self.subscription_rng.lock().unwrap();
        let x: f64 = rng.random();
        let choices: &[(f64, StreamFault)] = match op {
            StreamOp::SubscribeToShard => &[
                (r.resource_in_use, StreamFault::ResourceInUse),
                (r.limit_exceeded, StreamFault::LimitExceeded),
            ],
            StreamOp::SubscribeToShardEvent => &[
                (r.reset, StreamFault::Reset),
                (r.silence, StreamFault::Silence),
                (r.end, StreamFault::EndSubscription),
            ],
            _ => &[],
        };
        let mut edge = 0.0;
        for (p, fault) in choices {
            edge += p;
            if x < edge {
                return Some(*fault);
            }
        }
        None
    }

    /// Add GetRecords outages: `(from, length)` after `start`.
    pub fn with_outages(
        mut self,
        start: tokio::time::Instant,
        outages: &[(Duration, Duration)],
    ) -> Self {
        self.outages = outages
            .iter()
            .map(|(from, len)| (start + *from, start + *from + *len))
            .collect();
        self
    }

    /// Stop (or resume) injecting faults.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

impl StreamFaultInjector for StreamFaults {
    fn fault(&self, op: StreamOp, _shard_id: Option<&str>) -> Option<StreamFault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let now = tokio::time::Instant::now();
        if self.outages.iter().any(|(a, b)| *a <= now && now < *b) {
            match op {
                StreamOp::GetRecords | StreamOp::SubscribeToShard => {
                    return Some(StreamFault::Timeout)
                }
                StreamOp::SubscribeToShardEvent => return Some(StreamFault::Reset),
                _ => {}
            }
        }
        if matches!(
            op,
            StreamOp::SubscribeToShard | StreamOp::SubscribeToShardEvent
        ) {
            if let Some(f) = self.draw_subscription(op) {
                return Some(f);
            }
            if op == StreamOp::SubscribeToShardEvent {
                return None;
            }
        }
        let r = self.rates;
        let mut rng = self.rng.lock().unwrap();
        let x: f64 = rng.random();
        let mut edge = r.throttle;
        if x < edge {
            return Some(StreamFault::Throttle);
        }
        edge += r.timeout;
        if x < edge {
            return Some(StreamFault::Timeout);
        }
        edge += r.expire_iterator;
        if x < edge {
            return (op == StreamOp::GetRecords).then_some(StreamFault::ExpireIterator);
        }
        edge += r.delay;
        if x < edge {
            return Some(StreamFault::Delay(random_delay(&mut rng, r.max_delay)));
        }
        None
    }
}

/// A KCL 3.x fleet-store outage (the fleet's tables unreachable or overloaded): from `from`
/// (after the start), for `length`, every fleet-store call fails. For every worker (`worker:
/// None`) the world switches the shared store's `set_failing` on (calls fail at once); for one
/// worker, its calls hang `wait` and then time out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOutage {
    /// When it starts, from the start of the run.
    pub from: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// One worker's outage: how long each call hangs before it fails.
    pub wait: Duration,
    /// The worker it hits (one of the initial workers), or `None`: every worker.
    pub worker: Option<String>,
}

/// Per-call fleet-store faults: retryable failures (nothing written) and slow calls.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FleetCallFaults {
    /// A call fails (retryably) before it reaches the store.
    pub error: f64,
    /// A call waits up to `max_delay` first.
    pub delay: f64,
    /// The longest wait.
    pub max_delay: Duration,
}

/// A fault drawn for one fleet-store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetFault {
    /// Fails (retryably) after this wait (an outage's hang, or none).
    Fail(Duration),
    /// Waits this long, then goes through.
    Delay(Duration),
}

/// Draws fleet-store faults (its own generator: the lease-store and stream draws stay as
/// they were).
#[derive(Debug)]
pub struct FleetFaults {
    rates: FleetCallFaults,
    rng: Mutex<StdRng>,
    /// One worker's outages: (from, until, wait, worker) in tokio time.
    outages: Vec<(tokio::time::Instant, tokio::time::Instant, Duration, String)>,
    enabled: AtomicBool,
}

impl FleetFaults {
    /// A plan with these rates and outages (times from `start`), drawing from `seed`. Outages
    /// of every worker are left out: the world switches the shared store's `set_failing`.
    pub fn new(
        rates: FleetCallFaults,
        outages: &[FleetOutage],
        start: tokio::time::Instant,
        seed: u64,
    ) -> Self {
        FleetFaults {
            rates,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            outages: outages
                .iter()
                .filter_map(|o| {
                    let w = o.worker.clone()?;
                    Some((start + o.from, start + o.from + o.length, o.wait, w))
                })
                .collect(),
            enabled: AtomicBool::new(true),
        }
    }

    /// Stop (or resume) injecting faults.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// The fault for one call of `worker` now, if any.
    pub fn draw(&self, worker: &str) -> Option<FleetFault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let now = tokio::time::Instant::now();
        if let Some((_, _, wait, _)) = self
            .outages
            .iter()
            .find(|(from, until, _, w)| *from <= now && now < *until && w == worker)
        {
            return Some(FleetFault::Fail(*wait));
        }
        let r = self.rates;
        if r.error + r.delay == 0.0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        let x: f64 = rng.random();
        if x < r.error {
            return Some(FleetFault::Fail(Duration::ZERO));
        }
        if x < r.error + r.delay {
            return Some(FleetFault::Delay(random_delay(&mut rng, r.max_delay)));
        }
        None
    }
}
