//! The simulated world: one stream (or, multi-stream, a changing set: `streams`), one lease
//! table, workers running the library's real
//! [`kinesis_client::Scheduler`], producers, and the scenario's timeline; plus the checks that need the whole
//! world (lease overlap, convergence after the drain, graceful stop).
//!
//! The world advances in ticks of [`TICK`] of simulated time. Each tick it runs the actions
//! that are due, ends pauses, notices workers whose task ended, produces records and samples
//! which leases each live worker holds. After the scenario's last change it drains: producers
//! stop, faults stop, pauses end, and it waits (bounded) until every record was processed and
//! the leases are evenly spread, then stops every worker gracefully.
//!
//! The scenario's actions (workers joining, stopping, dying, pausing; producing, resharding,
//! trimming) are in the `actions` submodule.

mod actions;
mod fleet;
mod prehistory;
mod steady;
mod streams;

use crate::consistency::EventualScans;
use crate::faults::{FleetFaults, StoreFaults, StreamFaults};
use crate::gate::Gate;
use crate::invariants::{imbalance, overlap_bound, Load, OverlapTracker};
use crate::ledger::Ledger;
use crate::scenario::{ConsumerPlan, Retrieval, Scenario};
use crate::trace::Trace;
use kinesis_client::testing::{InMemoryLeaseStore, InMemoryStream};
use kinesis_client::{SchedulerError, SchedulerHandle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The world's time step.
pub const TICK: Duration = Duration::from_millis(100);
/// The drain fails when it makes no progress (no record newly processed, no lease moving)
/// for this long.
pub const DRAIN_STALL: Duration = Duration::from_secs(300);
/// The drain fails when it lasts this long, progress or not (a livelock).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(3600);

/// Appended to a **cleaned-up** violation of a KCL 3.x fleet when every lease left is a
/// finished (`SHARD_END`) one that no running worker holds: only a holder deletes a lease, so
/// such leases wait for the leader to assign them (the library's leader did not, before
/// 800395a: `FLEET_REGRESSIONS` in `tests/sim.rs`).
pub const UNASSIGNED_FINISHED: &str =
    " [KCL 3.x: finished leases that no running worker holds; the leader has not assigned them]";

/// Asks a running world to stop at once (see [`crate::run::run_seed_bounded`]): a world
/// whose simulated time no longer advances is still polled when notified from another thread.
#[derive(Debug, Default)]
pub struct AbortSignal {
    aborted: AtomicBool,
    notify: Notify,
}

impl AbortSignal {
    /// Stop the world at its next tick.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// True once [`AbortSignal::abort`] was called.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }
}

/// What the world measured, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Simulated time of the whole run.
    pub simulated: Duration,
    /// How long the drain took.
    pub drain: Duration,
    /// The longest time two live workers held the same lease.
    pub max_overlap: Duration,
    /// The bound that overlap was checked against.
    pub overlap_bound: Duration,
    /// The longest time two workers' processors of one shard were both processing it
    /// (**single-consumer**, checked against the same bound).
    pub max_consumer_overlap: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Running,
    Stopping,
    Gone,
}

struct Worker {
    id: String,
    handle: SchedulerHandle,
    task: JoinHandle<Result<(), SchedulerError>>,
    gate: Gate,
    state: WorkerState,
    paused_until: Option<Instant>,
    stop_requested: Option<Instant>,
}

/// One run's world.
pub struct World {
    sc: Scenario,
    rng: StdRng,
    /// Draws for KPL aggregates (their own, so scenarios without aggregates run as before).
    aggregate_rng: StdRng,
    stream: InMemoryStream,
    table: InMemoryLeaseStore,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    store_faults: Arc<StoreFaults>,
    stream_faults: Arc<StreamFaults>,
    scans: Arc<EventualScans>,
    workers: Vec<Worker>,
    next_worker: usize,
    incarnations: u64,
    rate: f64,
    carry: f64,
    overlap: OverlapTracker,
    bound: Duration,
    start: Instant,
    /// The stream clock when the world started (the `AT_TIMESTAMP` of [`Start::AtTimestamp`]).
    started_at: std::time::SystemTime,
    abort: Arc<AbortSignal>,
    /// Fan-out: how the workers name the stream consumer, and when it is deleted.
    consumer_plan: ConsumerPlan,
    /// Fan-out by ARN: the consumer the workers are configured with (name, ARN).
    consumer: Option<(String, String)>,
    /// Consumers registered by the world so far (their names are numbered).
    consumers_registered: u32,
    /// Deletions of [`ConsumerPlan::deletions`] done.
    deletions_done: [bool; 2],
    /// Every stream of the run (one, unless multi-stream).
    slots: Vec<streams::Slot>,
    /// Multi-stream: the set the workers track.
    tracker: Option<streams::SimTracker>,
    /// Multi-stream: the streams by identifier, for the workers' clients.
    streams_by_id: streams::StreamsById,
    /// Multi-stream: streams created by the timeline so far (their names are numbered).
    next_stream: usize,
    /// KCL 3.x: the fleet faults of the workers' fleet stores (`None`: no fleet plan, the
    /// workers use the store the lease table answers).
    fleet_faults: Option<Arc<FleetFaults>>,
    /// KCL 3.x: outages of every worker's fleet calls (the shared store failing), in tokio time.
    fleet_outages: Vec<(Instant, Instant)>,
    /// Whether the shared fleet store fails now.
    fleet_failing: bool,
}

impl World {
    /// A world for `sc`, tracing into `trace`, stopping early on `abort`. Call inside the
    /// simulation runtime.
    pub fn new(sc: Scenario, trace: Trace, abort: Arc<AbortSignal>) -> World {
        trace.start_clock();
        let seed = sc.seed;
        let stream = InMemoryStream::new("sim", sc.initial_shards);
        let started_at = stream.now();
        let mut faults = StreamFaults::new(sc.stream_faults, seed ^ 0x57AE_A11F)
            .with_outages(Instant::now(), &sc.outages);
        if let Retrieval::FanOut(plan) = sc.retrieval {
            stream.set_subscription_lifetime(plan.lifetime);
            stream.set_consumer_activation_delay(plan.activation);
            faults = faults.with_subscription_faults(plan.faults);
        }
        let consumer_plan = match sc.retrieval {
            Retrieval::FanOut(plan) => plan.consumer,
            Retrieval::Polling => ConsumerPlan::default(),
        };
        let stream_faults = Arc::new(faults);
        stream.set_fault_injector(Some(stream_faults.clone()));
        let ledger = Arc::new(Mutex::new(Ledger::new(trace.clone())));
        let table = InMemoryLeaseStore::new();
        let multi_stream = sc.multi_stream;
        if multi_stream.is_none() {
            let mut l = ledger.lock().unwrap();
            for s in stream.shards() {
                l.add_shard(&s.shard_id, &[]);
            }
            for line in prehistory::build(sc.prehistory, seed, &stream, &table, &mut l) {
                trace.world(line);
            }
        }
        let slots = match multi_stream {
            None => vec![streams::Slot {
                id: kinesis_client::StreamIdentifier::single("sim"),
                stream: stream.clone(),
                tracked: true,
                deleted: false,
            }],
            Some(_) => Vec::new(),
        };
        let bound = overlap_bound(sc.failover, TICK);
        {
            let mut l = ledger.lock().unwrap();
            l.consumer_bound = bound;
            l.failover = sc.failover;
            l.moves_by_handoff = sc.fleet.as_ref().is_some_and(|p| p.graceful_handoff);
        }
        let fleet_faults = sc.fleet.as_ref().map(|plan| {
            Arc::new(FleetFaults::new(
                plan.call_faults,
                &plan.outages,
                Instant::now(),
                seed ^ 0x00F1_EE7F_A017,
            ))
        });
        let fleet_outages = sc.fleet.as_ref().map_or(Vec::new(), |plan| {
            let now = Instant::now();
            plan.outages
                .iter()
                .filter(|o| o.worker.is_none())
                .map(|o| (now + o.from, now + o.from + o.length))
                .collect()
        });
        World {
            rng: StdRng::seed_from_u64(seed ^ 0x00C0_FFEE),
            aggregate_rng: StdRng::seed_from_u64(seed ^ 0x0A66_C0DE),
            store_faults: Arc::new(
                StoreFaults::new(sc.store_faults, seed ^ 0x0057_04E5)
                    .with_hangs(sc.hangs)
                    .with_outages(Instant::now(), &sc.table_outages),
            ),
            stream_faults,
            scans: Arc::new(EventualScans::new(sc.stale_scans, seed ^ 0x05CA_1155)),
            stream,
            table,
            ledger,
            trace,
            workers: Vec::new(),
            next_worker: 0,
            incarnations: 0,
            rate: 0.0,
            carry: 0.0,
            overlap: OverlapTracker::default(),
            bound,
            start: Instant::now(),
            started_at,
            abort,
            sc,
            consumer_plan,
            consumer: None,
            consumers_registered: 0,
            deletions_done: [false; 2],
            slots,
            tracker: multi_stream.map(|_| streams::SimTracker::default()),
            streams_by_id: Default::default(),
            next_stream: 0,
            fleet_faults,
            fleet_outages,
            fleet_failing: false,
        }
        .with_configured_consumer()
        .with_initial_streams()
    }

    /// Multi-stream: the streams at the start, all in the set (the first with the scenario's
    /// shards).
    fn with_initial_streams(mut self) -> Self {
        let Some(plan) = self.sc.multi_stream else {
            return self;
        };
        for i in 0..plan.initial_streams {
            let shards = if i == 0 {
                self.sc.initial_shards
            } else {
                plan.shards_per_stream
            };
            self.next_stream += 1;
            let slot = self.create_stream(&format!("s{i}"), 1, shards);
            self.slots[slot].tracked = true;
        }
        self.set_stream_position(self.initial_position());
        self.publish_set();
        // A worker sees a change at its next tracker round (one interval), unless the round
        // before is still busy: its lease-table and stream calls may hang or fail through an
        // outage (a few failover times); then its consumers of the stream stop (a processor
        // call, a graceful shutdown).
        self.ledger.lock().unwrap().untracked_bound = plan.tracker_interval * 2
            + self.sc.failover * 8
            + self.sc.graceful_timeout
            + Duration::from_secs(5);
        self
    }

    /// The ground truth (for the outcome).
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        self.ledger.clone()
    }

    fn elapsed(&self) -> Duration {
        Instant::now() - self.start
    }

    fn violation(&self, invariant: &'static str, message: String, focus: Vec<String>) {
        self.ledger
            .lock()
            .unwrap()
            .violation(invariant, message, focus);
    }

    /// Wait one tick; true when the world was aborted.
    async fn tick(&self) -> bool {
        tokio::select! {
            biased;
            _ = self.abort.notify.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        self.abort.is_aborted()
    }

    /// Run the scenario, drain, check, stop. Returns what the world measured.
    pub async fn run(mut self) -> WorldStats {
        for line in self.sc.to_string().lines() {
            self.trace.world(line.to_string());
        }
        for _ in 0..self.sc.initial_workers {
            self.add_worker(None);
        }
        let actions = self.sc.actions.clone();
        let mut next = 0;
        loop {
            let now = self.elapsed();
            while next < actions.len() && actions[next].at <= now {
                self.act(actions[next].action);
                next += 1;
            }
            self.delete_consumer_when_due(now);
            self.fleet_outages_due();
            self.housekeeping().await;
            self.produce();
            self.sample();
            if now >= self.sc.active || self.tick().await {
                break;
            }
        }
        if !self.abort.is_aborted() {
            self.steady().await;
        }
        let drain_started = self.elapsed();
        if !self.abort.is_aborted() {
            self.drain().await;
        }
        let drain = self.elapsed() - drain_started;
        if !self.abort.is_aborted() {
            self.stop_all().await;
        }
        WorldStats {
            simulated: self.elapsed(),
            drain,
            max_overlap: self.overlap.max_overlap,
            overlap_bound: self.bound,
            max_consumer_overlap: self.ledger.lock().unwrap().max_consumer_overlap,
        }
    }

    fn live(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().filter(|w| w.state != WorkerState::Gone)
    }
    fn say(&self, worker: Option<&str>, text: String) {
        self.trace
            .push(crate::trace::Source::World, worker, None, text);
    }

    // ----- checks -----

    /// Which live worker holds which lease (by the coordinators' own view).
    fn holders(&self) -> BTreeMap<String, Vec<String>> {
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in self.live() {
            for key in w.handle.held_shards() {
                holders.entry(key).or_default().push(w.id.clone());
            }
        }
        holders
    }

    fn sample(&mut self) {
        let holders = self.holders();
        let now = self.elapsed();
        let bound = self.bound;
        for (key, who, lasted) in self.overlap.sample(now, &holders, bound) {
            let mut focus = who.clone();
            focus.push(key.clone());
            self.violation(
                "single-owner",
                format!(
                    "{} have all held {key} for {lasted:?}, longer than the bound {bound:?}",
                    who.join(" and ")
                ),
                focus,
            );
        }
    }

    /// The leases each running worker holds (finished ones told apart by the table).
    fn loads(&self) -> BTreeMap<String, Load> {
        let table = self.table.snapshot();
        self.workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .map(|w| {
                let held = w.handle.held_shards();
                let finished = held
                    .iter()
                    .filter(|k| table.get(*k).is_some_and(|l| l.checkpoint.is_shard_end()))
                    .count();
                (
                    w.id.clone(),
                    Load {
                        held: held.len(),
                        finished,
                    },
                )
            })
            .collect()
    }

    /// Leases clean-up must delete (with why): a lease whose shard is no longer in the stream
    /// (it aged past retention), and a finished lease whose children (by the stream's
    /// listing, recorded on the lease or not) all have leases that started and whose parents'
    /// leases are gone or finished. Conservative: a finished lease with a child whose lease
    /// is missing is not counted.
    fn cleanup_due(&self) -> Vec<(String, &'static str)> {
        let table = self.table.snapshot();
        let mut due = Vec::new();
        for lease in table.values() {
            let key = &lease.key;
            let slot = self.slots.iter().find(|s| match &lease.multi_stream {
                Some(m) => m.stream == s.id,
                None => !s.id.is_multi_stream(),
            });
            let Some(slot) = slot.filter(|s| !s.deleted) else {
                due.push((key.clone(), "its stream was deleted"));
                continue;
            };
            let shard_id = lease.shard_id();
            let shards = slot.stream.shards();
            if !shards.iter().any(|s| s.shard_id == shard_id) {
                due.push((key.clone(), "its shard is gone from the stream"));
                continue;
            }
            if !lease.checkpoint.is_shard_end() {
                continue;
            }
            let children_started = shards
                .iter()
                .filter(|s| s.parents().iter().any(|p| p == shard_id))
                .all(|c| {
                    table
                        .get(&slot.key(&c.shard_id))
                        .is_some_and(|l| !l.checkpoint.is_initial_position())
                });
            let parents_done = lease.parent_shard_ids.iter().all(|p| {
                table
                    .get(&slot.key(p))
                    .is_none_or(|l| l.checkpoint.is_shard_end())
            });
            if children_started && parents_done {
                due.push((key.clone(), "finished, its children started"));
            }
        }
        due
    }

    fn lease_table_summary(&self) -> String {
        self.table
            .snapshot()
            .values()
            .map(|l| {
                format!(
                    "{} owner={} counter={} checkpoint={}",
                    l.key,
                    l.owner.as_deref().unwrap_or("-"),
                    l.counter,
                    l.checkpoint
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every fault stops, every stream is tracked again, pauses end, and a worker joins if
    /// none runs (`why`: for the log).
    fn calm_down(&mut self, why: &str) {
        self.track_every_stream();
        self.store_faults.set_enabled(false);
        self.stream_faults.set_enabled(false);
        self.fleet_faults_off();
        for i in 0..self.workers.len() {
            if self.workers[i].paused_until.is_some() {
                self.end_pause(i);
            }
        }
        if !self.workers.iter().any(|w| w.state == WorkerState::Running) {
            self.say(None, format!("no worker running: one joins {why}"));
            self.add_worker(None);
        }
    }

    async fn drain(&mut self) {
        self.say(
            None,
            "DRAIN: producers stop, faults stop, pauses end".into(),
        );
        self.rate = 0.0;
        self.calm_down("for the drain");
        let settle = self.sc.failover + self.sc.failover * 2 / 3 + Duration::from_secs(1);
        let started = Instant::now();
        let mut settled_since: Option<Instant> = None;
        let mut next_check = Instant::now();
        let mut progress = (usize::MAX, BTreeMap::new());
        let mut last_progress = Instant::now();
        loop {
            self.housekeeping().await;
            self.sample();
            let now = Instant::now();
            if now >= next_check {
                next_check = now + Duration::from_secs(1);
                let (all, processed) = {
                    let l = self.ledger.lock().unwrap();
                    (l.all_processed(), l.processed_total())
                };
                let loads = self.loads();
                let (uneven, _) = imbalance(&loads);
                let fleet_settled = self.fleet_unsettled().is_none();
                if all && uneven <= 1 && self.cleanup_due().is_empty() && fleet_settled {
                    let since = *settled_since.get_or_insert(now);
                    if now - since >= settle {
                        let fleet = if self.sc.fleet.is_some() {
                            format!(" (fleet: {})", self.fleet_summary())
                        } else {
                            String::new()
                        };
                        self.say(
                            None,
                            format!("converged after {:?} of drain{fleet}", now - started),
                        );
                        self.check_ready(now - since);
                        return;
                    }
                } else {
                    settled_since = None;
                }
                // Progress: more records processed, or leases moving.
                if progress != (processed, loads.clone()) {
                    progress = (processed, loads);
                    last_progress = now;
                }
                let stalled = now - last_progress > DRAIN_STALL;
                if stalled || now - started > DRAIN_LIMIT {
                    self.report_not_converged(now - started, stalled);
                    return;
                }
            }
            if self.tick().await {
                return;
            }
        }
    }

    /// After the drain converged (faults stopped long before, every record processed, leases
    /// spread and settled for `settled`), every running worker reports ready: what a worker
    /// reports about a lease (a failed renewal) must not outlive its holding of that lease.
    fn check_ready(&self, settled: Duration) {
        for w in self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
        {
            let health = w.handle.health();
            // A worker stopping on its own (its fan-out consumer is gone) is not ready by
            // design while it hands its leases over.
            if !health.ready && !health.shutting_down {
                self.violation(
                    "ready",
                    format!(
                        "{} is not ready with the world converged (settled for {settled:?}), holding {:?}: {}",
                        w.id,
                        w.handle.held_shards(),
                        health.to_string().trim_end().replace('\n', ", ")
                    ),
                    vec![w.id.clone()],
                );
            }
        }
    }

    fn report_not_converged(&mut self, drained: Duration, stalled: bool) {
        let limit = if stalled {
            format!("{drained:?} of drain, the last {DRAIN_STALL:?} without progress")
        } else {
            format!("{drained:?} of drain (the limit)")
        };
        let unprocessed = self.ledger.lock().unwrap().unprocessed();
        if !unprocessed.is_empty() {
            let ledger = self.ledger.lock().unwrap();
            let table = self.table.snapshot();
            let holders = self.holders();
            let detail: Vec<String> = unprocessed
                .iter()
                .map(|(shard, (n, first))| {
                    let log = &ledger.shards[shard];
                    let lease = table.get(shard).map_or("no lease".to_string(), |l| {
                        format!(
                            "lease owner={} checkpoint={} counter={} parents={:?}",
                            l.owner.as_deref().unwrap_or("-"),
                            l.checkpoint,
                            l.counter,
                            l.parent_shard_ids
                        )
                    });
                    format!(
                        "{shard}: {n} of {} unprocessed from #{first} (seq {}); {lease}; held by {:?}",
                        log.records.len(),
                        crate::ledger::show(&log.records[*first]),
                        holders.get(shard).cloned().unwrap_or_default()
                    )
                })
                .collect();
            let focus: Vec<String> = unprocessed.keys().cloned().collect();
            drop(ledger);
            self.violation(
                "all-processed",
                format!(
                    "after {limit}, records were never processed: {}",
                    detail.join(" | ")
                ),
                focus,
            );
        }
        let due = self.cleanup_due();
        if !due.is_empty() {
            // KCL 3.x: finished leases no running worker holds wait for a leader to assign
            // them (only their holder deletes them); said apart, see `UNASSIGNED_FINISHED`.
            let holders = self.holders();
            let table = self.table.snapshot();
            let unassigned_finished = self.sc.fleet.is_some()
                && due.iter().all(|(k, _)| {
                    table.get(k).is_some_and(|l| l.checkpoint.is_shard_end())
                        && !holders.contains_key(k)
                });
            self.violation(
                "cleaned-up",
                format!(
                    "after {limit}, leases that need no more processing were never deleted: {}{}; table: {}",
                    due.iter().map(|(k, why)| format!("{k} ({why})")).collect::<Vec<_>>().join(", "),
                    if unassigned_finished { UNASSIGNED_FINISHED } else { "" },
                    self.lease_table_summary()
                ),
                due.into_iter().map(|(k, _)| k).collect(),
            );
        }
        if let Some(why) = self.fleet_unsettled() {
            self.violation(
                "fleet-converged",
                format!(
                    "after {limit}, the KCL 3.x fleet has not converged: {why}; {}; table: {}",
                    self.fleet_summary(),
                    self.lease_table_summary()
                ),
                self.live().map(|w| w.id.clone()).collect(),
            );
        }
        let loads = self.loads();
        let (uneven, listing) = imbalance(&loads);
        if uneven > 1 {
            self.violation(
                "balanced",
                format!(
                    "after {limit}, the live workers hold {listing} leases (imbalance {uneven}); table: {}",
                    self.lease_table_summary()
                ),
                loads.keys().cloned().collect(),
            );
        }
    }

    /// Stop every live worker gracefully and check that each stops in time.
    async fn stop_all(&mut self) {
        self.say(None, "stopping every worker gracefully".into());
        for w in &mut self.workers {
            if w.state == WorkerState::Running {
                w.handle.request_shutdown();
                w.state = WorkerState::Stopping;
                w.stop_requested = Some(Instant::now());
            }
        }
        // Processors get the graceful timeout; releasing leases needs a few store calls.
        let bound = self.sc.graceful_timeout + self.sc.failover + Duration::from_secs(5);
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline && self.live().count() > 0 {
            if self.tick().await {
                return;
            }
            self.housekeeping().await;
        }
        let stuck: Vec<(String, Duration)> = self
            .live()
            .map(|w| {
                (
                    w.id.clone(),
                    w.stop_requested.map_or(Duration::ZERO, |t| t.elapsed()),
                )
            })
            .collect();
        for (id, waited) in stuck {
            self.violation(
                "graceful-stop",
                format!("{id} had not stopped {waited:?} after its graceful shutdown was requested (bound {bound:?})"),
                vec![id.clone()],
            );
        }
        for w in &self.workers {
            w.task.abort();
        }
    }
}
