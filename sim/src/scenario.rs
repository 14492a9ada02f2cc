//! Scenarios: everything a run will do, generated from its seed.
//!
//! A scenario fixes the world's shape (shards, workers, timings, fault rates, processor
//! behaviour) and a timeline of [`Action`]s. Actions name no targets: which worker is killed
//! or which shard is split is chosen when the action runs (from the world's own seeded
//! generator), because the live workers and open shards depend on what happened before.
//!
//! Changing how scenarios are generated (or what the world draws from its generators) changes
//! what every seed does: the regression seeds in `tests/sim.rs` must then be found again.

use crate::consistency::StaleScanRates;
use crate::faults::{
    FleetCallFaults, FleetOutage, HangRates, StoreFaultRates, StreamFaultRates,
    SubscriptionFaultRates, TableOutage,
};
use crate::processor::ProcessorProfile;
use kinesis_client::LeaseAssignmentStrategy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// The most workers alive at once.
pub const MAX_WORKERS: usize = 8;
/// The most open shards (splits stop there).
pub const MAX_OPEN_SHARDS: usize = 64;

/// A change to the world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Producers now put this many records per second in total (spread by random hash key).
    Produce(f64),
    /// A new worker (new id) joins.
    AddWorker,
    /// A worker that died or stopped comes back with the same id.
    RestartWorker,
    /// A worker shuts down gracefully.
    StopWorker,
    /// A worker dies abruptly (its task is aborted; its leases expire).
    KillWorker,
    /// A worker's I/O stalls for this long (its timers keep running).
    PauseWorker(Duration),
    /// An open shard splits.
    Split,
    /// Two adjacent open shards merge.
    Merge,
    /// Retention trims records every lease has checkpointed past.
    Trim,
    /// Multi-stream: a new stream is created and joins the application's set.
    AddStream,
    /// Multi-stream: a stream of the set leaves it (the stream stays; its leases are kept).
    RemoveStream,
    /// Multi-stream: a stream that left the set joins it again (goes on from its leases).
    ReaddStream,
    /// Multi-stream: a stream of the set is deleted and re-created under its name (a new
    /// creation epoch: a new stream, which replaces the old one in the set).
    RecreateStream,
    /// KCL 3.x: the worker holding the leader lock dies abruptly (a random worker when no
    /// live worker holds it).
    KillLeader,
    /// KCL 3.x: the worker holding the leader lock stalls for this long (a random worker when
    /// no live worker holds it).
    PauseLeader(Duration),
    /// KCL 3.x: a Java 3.x worker joins the fleet: the fleet's `Migration3.0` item now says
    /// `CLIENT_VERSION_3X` (written by the world), and every worker must follow it.
    FleetTo3x,
}

impl Action {
    /// Whether it changes the set of streams (multi-stream only).
    pub fn is_stream_action(&self) -> bool {
        matches!(
            self,
            Action::AddStream | Action::RemoveStream | Action::ReaddStream | Action::RecreateStream
        )
    }

    /// Whether it was added by a fleet plan ([`Mode::Fleet`] only).
    pub fn is_fleet_action(&self) -> bool {
        matches!(
            self,
            Action::KillLeader | Action::PauseLeader(_) | Action::FleetTo3x
        )
    }
}

/// Where shards without a checkpoint start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `TRIM_HORIZON`.
    TrimHorizon,
    /// `LATEST`: records put before a consumer's first iterator are not required.
    Latest,
    /// `AT_TIMESTAMP` of the stream clock when the world starts (every record is required).
    AtTimestamp,
}

/// What the lease table and the stream hold before the world starts: an application that
/// ran on an older Java KCL (before 2.3, which did not record `childShardIds`) over a stream
/// that was resharded since, part of it so long ago that it aged past retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prehistory {
    /// Splits and merges before the start (each closing shards: the ancestors).
    pub reshards: usize,
    /// Of the ancestors, the oldest this many are gone from the stream (aged past retention),
    /// their leases left behind.
    pub aged: usize,
    /// Per mille of ancestors whose lease the old application had not finished (still at
    /// `TRIM_HORIZON`); the others are at `SHARD_END` without `childShardIds`.
    pub unfinished_per_mille: u32,
}

/// How the workers read records: the run's mode (the same seed gives the same world in both,
/// and fan-out adds its own draws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// GetRecords polling (every regression seed so far).
    #[default]
    Polling,
    /// Enhanced fan-out (SubscribeToShard).
    FanOut,
    /// A multi-stream application (polling): several streams, streams joining and leaving
    /// the set, streams deleted and re-created.
    MultiStream,
    /// A KCL 3.x fleet: the polling world and timeline (in 15 % of seeds as a multi-stream
    /// application, in 15 % with enhanced fan-out) with a [`FleetPlan`] drawn from its own
    /// generator (workers configured `V3x` from the start, some of them `Auto`, or `Auto`
    /// workers whose fleet is switched to 3.x mid-run), leader kills and pauses, fleet-store
    /// outages and faults, processors slow to hand over.
    Fleet,
}

impl Mode {
    /// The mode named by `SIM_RETRIEVAL` (`polling`, the default, or `fanout`).
    pub fn from_env() -> Mode {
        match std::env::var("SIM_RETRIEVAL").as_deref() {
            Ok("fanout") | Ok("fan-out") | Ok("FANOUT") => Mode::FanOut,
            Ok("multistream") | Ok("multi-stream") | Ok("MULTISTREAM") => Mode::MultiStream,
            Ok("fleet") | Ok("fleet3x") | Ok("fleet-3x") | Ok("FLEET") => Mode::Fleet,
            Ok("polling") | Ok("POLLING") | Ok("") | Err(_) => Mode::Polling,
            Ok(other) => {
                panic!("SIM_RETRIEVAL must be polling, fanout, multistream or fleet, not {other:?}")
            }
        }
    }
}

/// How the workers read records, with what fan-out draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retrieval {
    /// GetRecords polling.
    Polling,
    /// Enhanced fan-out.
    FanOut(FanOutPlan),
}

/// The enhanced fan-out part of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FanOutPlan {
    /// How long subscriptions last (Kinesis: 5 minutes; shorter here, so that runs renew
    /// them mid-shard).
    pub lifetime: Duration,
    /// How long a registered consumer stays `CREATING`.
    pub activation: Duration,
    /// Subscription faults.
    pub faults: SubscriptionFaultRates,
    /// How the workers name their stream consumer, and when it is deleted.
    pub consumer: ConsumerPlan,
}

/// The stream consumer of a fan-out run: how the workers name it, and when it is deleted
/// (by someone else, as an operator's mistake or a clean-up script would).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConsumerPlan {
    /// The workers are configured with a consumer's ARN (registered by the world before they
    /// start, and again, under a new name, when a worker stopped because it was deleted: as
    /// an operator would, the stopped workers are restarted with the new ARN); otherwise by
    /// name (the library registers it, and again when it is deleted).
    pub by_arn: bool,
    /// When the consumer is deleted, from the start (before the drain).
    pub deletions: [Option<Duration>; 2],
}

/// The multi-stream part of a scenario ([`Mode::MultiStream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiStreamPlan {
    /// Streams at the start (the first has the scenario's `initial_shards`).
    pub initial_streams: usize,
    /// Open shards of each further stream at its creation.
    pub shards_per_stream: usize,
    /// How often each worker asks the tracker for the set.
    pub tracker_interval: Duration,
}

/// How a [`Mode::Fleet`] run's fleet comes to run the KCL 3.x protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetKind {
    /// Every worker is configured `ClientVersionConfig::V3x`: the first to start creates the
    /// fleet's `Migration3.0` item as `CLIENT_VERSION_3X`.
    V3x,
    /// Worker `w0` is configured `V3x`, some others `Auto` (bit `i` of the mask: `wi`): the
    /// `Auto` ones follow the item (those that started before it existed run the leaderless
    /// protocol until their next check).
    Mixed {
        /// Bit `i` set: worker `wi` is `Auto`.
        auto_mask: u32,
    },
    /// Every worker is configured `Auto` and runs the leaderless protocol until, at this time
    /// ([`Action::FleetTo3x`]), the world writes `CLIENT_VERSION_3X` into the item (a Java
    /// 3.x worker joined).
    Migration {
        /// When, from the start.
        at: Duration,
    },
}

/// The KCL 3.x part of a [`Mode::Fleet`] scenario: how the fleet gets to 3.x, its timings
/// (proportional to the failover time), and its faults. Drawn from its own generator.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    /// How the fleet comes to run 3.x.
    pub kind: FleetKind,
    /// How often each worker re-reads the `Migration3.0` item.
    pub check_interval: Duration,
    /// How often each worker looks for leases assigned to it.
    pub discovery_interval: Duration,
    /// How long a processor may take to checkpoint in a hand-off.
    pub handoff_timeout: Duration,
    /// How often each worker writes its metrics row (whole seconds: rows are stamped in
    /// seconds); the leader treats rows older than twice this as gone workers.
    pub metrics_interval: Duration,
    /// The leader lock's `leaseDuration` (`None`: the library's default, 2 F).
    pub lock_duration: Option<Duration>,
    /// How often the leader assigns (`None`: the library's default, F / 3).
    pub assignment_interval: Option<Duration>,
    /// Whether the leader moves leases by graceful hand-off (else by assignment).
    pub graceful_handoff: bool,
    /// Fleet-store outages: every fleet call fails (all workers: the shared store's
    /// `set_failing`) or, for one worker, hangs and then fails.
    pub outages: Vec<FleetOutage>,
    /// Per-call fleet-store faults.
    pub call_faults: FleetCallFaults,
}

impl FleetPlan {
    /// The `clientVersionConfig` of worker `id`: `true` for `V3x`, `false` for `Auto`.
    pub fn is_v3x(&self, id: &str) -> bool {
        match self.kind {
            FleetKind::V3x => true,
            FleetKind::Migration { .. } => false,
            FleetKind::Mixed { auto_mask } => {
                let i: u32 = id.trim_start_matches('w').parse().unwrap_or(0);
                i >= 32 || auto_mask & (1 << i) == 0
            }
        }
    }

    /// A short name of the kind, for summaries.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FleetKind::V3x => "v3x",
            FleetKind::Mixed { .. } => "mixed",
            FleetKind::Migration { .. } => "migration",
        }
    }
}

/// KPL aggregates among the records put (the library de-aggregates them; the ledger counts
/// user records).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Aggregates {
    /// The share of puts that are aggregates (0: none).
    pub share: f64,
    /// The most user records in one aggregate (at least 1).
    pub max_user_records: usize,
}

/// Uneven traffic: records whose hash key falls in `hot` carry `hot_bytes` of data, the
/// others `cold_bytes`, so that the shards covering `hot` carry most of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct Skew {
    /// The hot hash keys.
    pub hot: std::ops::Range<u128>,
    /// Bytes of a hot record.
    pub hot_bytes: usize,
    /// Bytes of any other record.
    pub cold_bytes: usize,
}

impl Skew {
    /// The data of a record put with hash key `hash`.
    pub fn data(&self, hash: u128) -> Vec<u8> {
        let n = if self.hot.contains(&hash) {
            self.hot_bytes
        } else {
            self.cold_bytes
        };
        vec![b's'; n]
    }
}

/// An action at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    /// When, from the start.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Everything a run does, from its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The seed it came from.
    pub seed: u64,
    /// Open shards at the start.
    pub initial_shards: usize,
    /// Workers at the start.
    pub initial_workers: usize,
    /// Lease failover time (renew and take intervals are a third of it).
    pub failover: Duration,
    /// Pause between GetRecords calls per shard.
    pub idle_between_reads: Duration,
    /// GetRecords limit.
    pub max_records: u32,
    /// Batches fetched ahead.
    pub max_pending_batches: usize,
    /// Parent shard poll interval.
    pub parent_poll: Duration,
    /// Periodic shard sync interval.
    pub shard_sync_interval: Duration,
    /// Finished-lease clean-up interval.
    pub cleanup_interval: Duration,
    /// Task backoff.
    pub task_backoff: Duration,
    /// Graceful shutdown bound.
    pub graceful_timeout: Duration,
    /// Leases stolen per round at most.
    pub steal_at_once: usize,
    /// Deliver empty batches too.
    pub empty_batches: bool,
    /// Lease-store faults during the scenario.
    pub store_faults: StoreFaultRates,
    /// Stream faults during the scenario.
    pub stream_faults: StreamFaultRates,
    /// Processor behaviour.
    pub processor: ProcessorProfile,
    /// The timeline, sorted by time.
    pub actions: Vec<Timed>,
    /// When the scenario's changes end and the drain starts.
    pub active: Duration,
    /// Where new leases start.
    pub start: Start,
    /// Windows (from, length) in which every GetRecords fails with a transient (500-style)
    /// error.
    pub outages: Vec<(Duration, Duration)>,
    /// Rare long hangs of single lease-store calls.
    pub hangs: HangRates,
    /// Lease-table outages (every call of a worker hangs, then times out).
    pub table_outages: Vec<TableOutage>,
    /// Eventually consistent lease-table scans (kept through the drain: it is how the table
    /// behaves, not a fault).
    pub stale_scans: StaleScanRates,
    /// The table and stream before the start.
    pub prehistory: Prehistory,
    /// How records are read.
    pub retrieval: Retrieval,
    /// KPL aggregates among the records put.
    pub aggregates: Aggregates,
    /// The workers' retry policy: deliveries of failing records before the processor's
    /// `retries_exhausted` hook is asked (`None`: never ask, redeliver forever).
    pub retry_max_attempts: Option<u32>,
    /// A multi-stream application ([`Mode::MultiStream`]); `None`: one stream.
    pub multi_stream: Option<MultiStreamPlan>,
    /// A KCL 3.x fleet ([`Mode::Fleet`]); `None`: the workers keep the library's default
    /// fleet settings (`Auto`, no `Migration3.0` item: the leaderless protocol).
    pub fleet: Option<FleetPlan>,
    /// How leaderless workers share the leases.
    pub strategy: LeaseAssignmentStrategy,
    /// Uneven traffic, and a steady phase before the drain in which the workers must balance
    /// it (see `World::steady`); `None`: records carry no data.
    pub skew: Option<Skew>,
}

/// Seeds the generator of the multi-stream draws (with the seed).
const MULTI_STREAM_SALT: u64 = 0x3A17_15EA;

/// Seeds the generator of the KCL 3.x fleet draws (with the seed).
const FLEET_SALT: u64 = 0x3F1E_E73A_0C0D;

/// Seeds the generator of a KCL 3.x fleet's world: polling, multi-stream or fan-out.
const FLEET_WORLD_SALT: u64 = 0x0F1E_E7A0_570D;

/// Seeds the generator of the balancing draws: the strategy and skewed traffic.
const BALANCE_SALT: u64 = 0x0BA1_A9CE;

/// Seeds the generator of lease-table outages (with the seed).
const OUTAGE_SALT: u64 = 0x0074_AB72;

/// The salt of the generator of poison restarts and early shard-end answers, chosen (as
/// [`OUTAGE_SALT`]) so that no regression seed found before them draws either.
const CHILD_FAULT_SALT: u64 = 0x02E5;

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// A probability: zero with chance `p_zero`, else uniform in `0..=max`.
fn rate(rng: &mut StdRng, p_zero: f64, max: f64) -> f64 {
    if rng.random::<f64>() < p_zero {
        0.0
    } else {
        rng.random_range(0.0..=max)
    }
}

impl Scenario {
    /// The scenario of `seed` in `mode`: fan-out runs the polling scenario's world and
    /// timeline with the fan-out draws added (from their own generator).
    pub fn generate_in(seed: u64, mode: Mode) -> Scenario {
        let mut sc = Scenario::generate(seed);
        match mode {
            Mode::Polling => {}
            Mode::MultiStream => sc.add_multi_stream(),
            Mode::FanOut => sc.add_fan_out(),
            Mode::Fleet => {
                // The fleet's world: mostly polling, else multi-stream or enhanced fan-out
                // (from their own generator: the fleet plan's draws stay).
                let mut r = StdRng::seed_from_u64(seed ^ FLEET_WORLD_SALT);
                match r.random_range(0..100) {
                    0..=69 => {}
                    70..=84 => sc.add_multi_stream(),
                    _ => sc.add_fan_out(),
                }
                sc.add_fleet();
            }
        }
        sc
    }

    /// Make this an enhanced fan-out scenario: the polling world and timeline with the
    /// fan-out draws added (from their own generators).
    fn add_fan_out(&mut self) {
        let seed = self.seed;
        let mut r5 = StdRng::seed_from_u64(seed ^ 0xFA_0007_5EED);
        let faults = match r5.random_range(0..10) {
            0..=2 => SubscriptionFaultRates::default(),
            n => {
                let heavy = if n >= 7 { 3.0 } else { 1.0 };
                SubscriptionFaultRates {
                    resource_in_use: rate(&mut r5, 0.3, 0.05 * heavy),
                    limit_exceeded: rate(&mut r5, 0.3, 0.05 * heavy),
                    reset: rate(&mut r5, 0.3, 0.03 * heavy),
                    silence: rate(&mut r5, 0.5, 0.01 * heavy),
                    end: rate(&mut r5, 0.3, 0.03 * heavy),
                }
            }
        };
        let lifetime = Duration::from_secs(r5.random_range(5..=300));
        let activation = ms(&mut r5, 0, 3000);
        // The consumer's naming and deletions from their own generator: the draws above
        // (and what the older fan-out seeds do, without deletions, by name) stay.
        let mut r6 = StdRng::seed_from_u64(seed ^ 0xC0_75DE_1E7E);
        let by_arn = r6.random_bool(0.3);
        let mut deletions = [None; 2];
        if r6.random_bool(0.35) {
            let active = self.active.as_millis() as u64;
            deletions[0] = Some(ms(&mut r6, 0, active));
            if r6.random_bool(0.3) {
                deletions[1] = Some(ms(&mut r6, 0, active));
            }
        }
        self.retrieval = Retrieval::FanOut(FanOutPlan {
            lifetime,
            activation,
            faults,
            consumer: ConsumerPlan { by_arn, deletions },
        });
    }

    /// The scenario of `seed` (polling).
    pub fn generate(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let r = &mut rng;
        let initial_shards = match r.random_range(0..10) {
            0..=4 => r.random_range(1..=8),
            5..=7 => r.random_range(9..=24),
            _ => r.random_range(25..=MAX_OPEN_SHARDS),
        };
        let initial_workers = r.random_range(1..=MAX_WORKERS);
        let failover = Duration::from_millis(100 * r.random_range(10..=100));
        let idle_between_reads = ms(r, 200, 1000);
        let max_records = [5, 10, 25, 100, 1000][r.random_range(0..5)];
        let faults = r.random_range(0..10); // 0-2 none, 3-6 light, 7-9 heavy
        let (store_faults, stream_faults) = match faults {
            0..=2 => Default::default(),
            _ => {
                let heavy = if faults >= 7 { 3.0 } else { 1.0 };
                let max_delay = ms(r, 10, (failover.as_millis() as u64 / 4).max(20));
                (
                    StoreFaultRates {
                        throttle: rate(r, 0.3, 0.03 * heavy),
                        timeout: rate(r, 0.3, 0.02 * heavy),
                        timeout_after_apply: rate(r, 0.3, 0.02 * heavy),
                        conflict: rate(r, 0.5, 0.005 * heavy),
                        delay: rate(r, 0.3, 0.05 * heavy),
                        max_delay,
                    },
                    StreamFaultRates {
                        throttle: rate(r, 0.3, 0.03 * heavy),
                        timeout: rate(r, 0.3, 0.02 * heavy),
                        expire_iterator: rate(r, 0.3, 0.02 * heavy),
                        delay: rate(r, 0.3, 0.05 * heavy),
                        max_delay: ms(r, 10, 2000),
                    },
                )
            }
        };
        let processor = if r.random_bool(0.3) {
            ProcessorProfile {
                checkpoint: 1.0,
                checkpoint_on_shutdown: 1.0,
                ..ProcessorProfile::default()
            }
        } else {
            // A processor that restarts its shard (from the last checkpoint) must checkpoint
            // much more often than it restarts, or it never gets anywhere (not the library's
            // fault).
            let restart = rate(r, 0.7, 0.05);
            ProcessorProfile {
                init_fail: rate(r, 0.6, 0.3),
                fail_before: rate(r, 0.4, 0.2),
                fail_after: rate(r, 0.5, 0.1),
                restart,
                checkpoint: r.random_range((10.0 * restart).min(1.0)..=1.0),
                partial_checkpoint: rate(r, 0.3, 1.0),
                forget_shard_end: rate(r, 0.5, 0.7),
                checkpoint_on_shutdown: r.random_range(0.0..=1.0),
                ..ProcessorProfile::default()
            }
        };
        let active = Duration::from_secs(r.random_range(10..=90));
        let count = r.random_range(0..=16);
        let mut actions = vec![Timed {
            at: Duration::ZERO,
            action: Action::Produce(r.random_range(1.0..=30.0)),
        }];
        for _ in 0..count {
            let at = Duration::from_millis(r.random_range(0..=active.as_millis() as u64));
            let action = match r.random_range(0..100) {
                0..=14 => Action::Produce(rate(r, 0.2, 30.0)),
                15..=26 => Action::AddWorker,
                27..=32 => Action::RestartWorker,
                33..=43 => Action::StopWorker,
                44..=55 => Action::KillWorker,
                56..=67 => Action::PauseWorker(failover.mul_f64(r.random_range(0.3..=3.0))),
                68..=81 => Action::Split,
                82..=94 => Action::Merge,
                _ => Action::Trim,
            };
            actions.push(Timed { at, action });
        }
        actions.sort_by_key(|t| t.at);
        // Drawn from their own generator: the draws above (and what the older seeds do) stay.
        let mut r2 = StdRng::seed_from_u64(seed ^ 0x1A7E_57A2);
        let start = match r2.random_range(0..3) {
            0 => Start::TrimHorizon,
            1 => Start::Latest,
            _ => Start::AtTimestamp,
        };
        let outages = if r2.random_bool(0.4) {
            (0..r2.random_range(1..=3))
                .map(|_| {
                    let from = ms(&mut r2, 0, active.as_millis() as u64);
                    (from, ms(&mut r2, 500, 15_000))
                })
                .collect()
        } else {
            Vec::new()
        };
        // And these from a third: hangs, stale scans, and an older application's leftovers.
        let mut r3 = StdRng::seed_from_u64(seed ^ 0x0DD_1A7E);
        let hangs = if r3.random_bool(0.3) {
            HangRates {
                per_call: r3.random_range(0.0005..=0.01),
                min: failover / 3,
                max: failover * 3 / 2,
            }
        } else {
            HangRates::default()
        };
        let stale_scans = if r3.random_bool(0.3) {
            StaleScanRates {
                per_scan: r3.random_range(0.2..=1.0),
                per_item: r3.random_range(0.1..=0.8),
                max_lag: ms(
                    &mut r3,
                    50,
                    (failover.as_millis() as u64 / 4).clamp(50, 1000),
                ),
            }
        } else {
            StaleScanRates::default()
        };
        let prehistory = if r3.random_bool(0.25) {
            let reshards = r3.random_range(1..=4);
            Prehistory {
                reshards,
                aged: r3.random_range(0..=reshards),
                unfinished_per_mille: if r3.random_bool(0.5) {
                    0
                } else {
                    r3.random_range(0..=1000)
                },
            }
        } else {
            Prehistory::default()
        };
        // And these from a fourth: KPL aggregates.
        let mut r4 = StdRng::seed_from_u64(seed ^ 0x0C91_A66E);
        let aggregates = if r4.random_bool(0.4) {
            Aggregates {
                share: r4.random_range(0.1..=1.0),
                max_user_records: r4.random_range(1..=30),
            }
        } else {
            Aggregates::default()
        };
        // And these from a fifth: the retry policy, partial progress, poison records.
        let mut r5 = StdRng::seed_from_u64(seed ^ 0x5E7_A775);
        let retry_max_attempts = r5.random_bool(0.5).then(|| r5.random_range(2..=5));
        let mut processor = processor;
        if r5.random_bool(0.5) {
            processor.progress = r5.random_range(0.0..=1.0);
        }
        if retry_max_attempts.is_some() {
            processor.skip = r5.random_range(0.0..=1.0);
            // Poison records fail every delivery: only a skip gets past them, so there are
            // none without a policy.
            if r5.random_bool(0.5) {
                processor.poison_per_mille = r5.random_range(1..=20);
            }
        }
        // And these from a sixth: lease-table outages. The salt was chosen so that none of the
        // regression seeds (`tests/sim.rs`) draws one: their runs stay as they were.
        let mut r6 = StdRng::seed_from_u64(seed ^ OUTAGE_SALT);
        let table_outages = if r6.random_bool(0.25) {
            (0..r6.random_range(1..=2))
                .map(|_| TableOutage {
                    from: ms(&mut r6, 0, active.as_millis() as u64),
                    length: failover.mul_f64(r6.random_range(0.5..=3.0)),
                    wait: failover.mul_f64(r6.random_range(0.25..=0.5)),
                    worker: r6
                        .random_bool(0.7)
                        .then(|| format!("w{}", r6.random_range(0..initial_workers))),
                })
                .collect()
        } else {
            Vec::new()
        };
        // And these from a seventh (see [`CHILD_FAULT_SALT`]): poison records that make the processor ask for a restart
        // (as a MultiLangDaemon child that crashes on them), and shard-end answers that
        // checkpoint a sequence number instead of SHARD_END.
        let mut r7 = StdRng::seed_from_u64(seed ^ CHILD_FAULT_SALT);
        if processor.poison_per_mille > 0 && r7.random_bool(0.5) {
            processor.poison_restarts = r7.random_range(0.0..=1.0);
        }
        if r7.random_bool(0.3) {
            processor.shard_end_early = rate(&mut r7, 1.0, 0.8);
        }
        // And these from an eighth: how the workers balance, and skewed traffic.
        let mut r8 = StdRng::seed_from_u64(seed ^ BALANCE_SALT);
        let strategy = if r8.random_bool(0.25) {
            LeaseAssignmentStrategy::LeaseCount
        } else {
            LeaseAssignmentStrategy::Throughput
        };
        let skew = r8.random_bool(0.5).then(|| {
            let width = u128::MAX / r8.random_range(3..=8u128);
            let start = r8.random_range(0..=u128::MAX - width);
            Skew {
                hot: start..start + width,
                hot_bytes: r8.random_range(1000..=8000),
                cold_bytes: r8.random_range(0..=100),
            }
        });
        Scenario {
            seed,
            initial_shards,
            initial_workers,
            failover,
            idle_between_reads,
            max_records,
            max_pending_batches: r.random_range(1..=3),
            parent_poll: ms(r, 200, 2000),
            shard_sync_interval: ms(r, 1000, 10_000),
            cleanup_interval: ms(r, 1000, 10_000),
            task_backoff: ms(r, 100, 1000),
            graceful_timeout: ms(r, 1000, 10_000),
            steal_at_once: r.random_range(1..=3),
            empty_batches: r.random_bool(0.2),
            store_faults,
            stream_faults,
            processor,
            actions,
            active,
            start,
            outages,
            hangs,
            table_outages,
            stale_scans,
            prehistory,
            retrieval: Retrieval::Polling,
            aggregates,
            retry_max_attempts,
            multi_stream: None,
            fleet: None,
            strategy,
            skew,
        }
    }

    /// Make this a multi-stream scenario: the polling world and timeline, plus (from their own
    /// generator) the streams and a timeline of streams joining, leaving, coming back and
    /// being re-created. The table's prehistory (an older single-stream application's
    /// leases) does not apply.
    fn add_multi_stream(&mut self) {
        let mut r = StdRng::seed_from_u64(self.seed ^ MULTI_STREAM_SALT);
        self.prehistory = Prehistory::default();
        self.multi_stream = Some(MultiStreamPlan {
            initial_streams: r.random_range(1..=4),
            shards_per_stream: r.random_range(1..=8),
            tracker_interval: ms(&mut r, 500, 5000),
        });
        let active = self.active.as_millis() as u64;
        for _ in 0..r.random_range(1..=8) {
            let at = Duration::from_millis(r.random_range(0..=active));
            let action = match r.random_range(0..100) {
                0..=29 => Action::AddStream,
                30..=54 => Action::RemoveStream,
                55..=74 => Action::ReaddStream,
                _ => Action::RecreateStream,
            };
            self.actions.push(Timed { at, action });
        }
        self.actions.sort_by_key(|t| t.at);
    }

    /// Make this a KCL 3.x fleet scenario: the polling world and timeline, plus (from their
    /// own generator) a [`FleetPlan`], leader kills and pauses, pauses long enough for a
    /// worker's metrics row to go stale, and processors that are slow to hand a lease over.
    fn add_fleet(&mut self) {
        let mut r = StdRng::seed_from_u64(self.seed ^ FLEET_SALT);
        let f = self.failover;
        let active = self.active.as_millis() as u64;
        let kind = match r.random_range(0..100) {
            0..=39 => FleetKind::V3x,
            40..=56 => {
                // w0 stays V3x (it creates the item); each other worker is Auto with a chance.
                let share = r.random_range(0.2..=0.8);
                let mut auto_mask = 0u32;
                for i in 1..32 {
                    if r.random_bool(share) {
                        auto_mask |= 1 << i;
                    }
                }
                FleetKind::Mixed { auto_mask }
            }
            _ => FleetKind::Migration {
                at: ms(&mut r, 0, active),
            },
        };
        let check_interval = f.mul_f64(r.random_range(1.0..=4.0));
        let discovery_interval = f.mul_f64(r.random_range(0.1..=1.0));
        let handoff_timeout = f.mul_f64(r.random_range(1.0..=4.0));
        // Whole seconds, at most about F: a worker paused or dead for 2 F or more is gone for
        // the leader before the run ends.
        let metrics_interval =
            Duration::from_secs(r.random_range(1..=f.as_secs_f64().ceil().max(1.0) as u64));
        let lock_duration = r
            .random_bool(0.4)
            .then(|| f.mul_f64(r.random_range(1.0..=3.0)));
        let assignment_interval = r
            .random_bool(0.3)
            .then(|| f.mul_f64(r.random_range(1.0 / 3.0..=2.0)));
        let graceful_handoff = r.random_bool(0.85);
        let outages = if r.random_bool(0.35) {
            (0..r.random_range(1..=2))
                .map(|_| FleetOutage {
                    from: ms(&mut r, 0, active),
                    length: f.mul_f64(r.random_range(0.5..=4.0)),
                    wait: f.mul_f64(r.random_range(0.1..=0.5)),
                    worker: r
                        .random_bool(0.5)
                        .then(|| format!("w{}", r.random_range(0..self.initial_workers))),
                })
                .collect()
        } else {
            Vec::new()
        };
        let call_faults = if r.random_bool(0.4) {
            FleetCallFaults {
                error: rate(&mut r, 0.3, 0.05),
                delay: rate(&mut r, 0.3, 0.1),
                max_delay: ms(&mut r, 10, (f.as_millis() as u64 / 4).max(20)),
            }
        } else {
            FleetCallFaults::default()
        };
        // Processors slow to hand over: they hang in `shutdown(Requested)` for a while, often
        // past the hand-off timeout (the lease then passes on without their checkpoint).
        if r.random_bool(0.3) {
            self.processor.requested_hang = r.random_range(0.2..=1.0);
            let lo = handoff_timeout.mul_f64(0.3);
            self.processor.requested_hang_for = (lo, handoff_timeout.mul_f64(3.0).max(lo));
        }
        // Leader kills and pauses, and pauses long enough for a worker's row to go stale.
        for _ in 0..r.random_range(0..=4) {
            let at = Duration::from_millis(r.random_range(0..=active));
            let action = match r.random_range(0..100) {
                0..=34 => Action::KillLeader,
                35..=69 => Action::PauseLeader(f.mul_f64(r.random_range(0.5..=4.0))),
                _ => Action::PauseWorker(metrics_interval.mul_f64(2.0 * r.random_range(1.2..=3.0))),
            };
            self.actions.push(Timed { at, action });
        }
        if let FleetKind::Migration { at } = kind {
            self.actions.push(Timed {
                at,
                action: Action::FleetTo3x,
            });
        }
        self.actions.sort_by_key(|t| t.at);
        self.fleet = Some(FleetPlan {
            kind,
            check_interval,
            discovery_interval,
            handoff_timeout,
            metrics_interval,
            lock_duration,
            assignment_interval,
            graceful_handoff,
            outages,
            call_faults,
        });
    }

    /// The renewal interval the workers use (the library's default: a third of the failover).
    pub fn renew_interval(&self) -> Duration {
        self.failover / 3
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} shards, {} workers, failover {:?}, idle {:?}, max_records {}, prefetch {}, \
             parent poll {:?}, sync {:?}, cleanup {:?}, task backoff {:?}, graceful {:?}, steal {}, empty batches {}",
            self.seed,
            self.initial_shards,
            self.initial_workers,
            self.failover,
            self.idle_between_reads,
            self.max_records,
            self.max_pending_batches,
            self.parent_poll,
            self.shard_sync_interval,
            self.cleanup_interval,
            self.task_backoff,
            self.graceful_timeout,
            self.steal_at_once,
            self.empty_batches
        )?;
        writeln!(f, "  store faults: {:?}", self.store_faults)?;
        writeln!(f, "  stream faults: {:?}", self.stream_faults)?;
        writeln!(
            f,
            "  start: {:?}; GetRecords outages (from, length): {:?}",
            self.start, self.outages
        )?;
        writeln!(
            f,
            "  hangs: {:?}; stale scans: {:?}; prehistory: {:?}; KPL aggregates: {:?}",
            self.hangs, self.stale_scans, self.prehistory, self.aggregates
        )?;
        if !self.table_outages.is_empty() {
            writeln!(f, "  lease-table outages: {:?}", self.table_outages)?;
        }
        writeln!(
            f,
            "  processor: {:?}; retry policy: max attempts {:?}",
            self.processor, self.retry_max_attempts
        )?;
        writeln!(
            f,
            "  balancing: {:?}; skewed traffic: {:?}",
            self.strategy, self.skew
        )?;
        if let Retrieval::FanOut(plan) = &self.retrieval {
            writeln!(f, "  retrieval: enhanced fan-out {plan:?}")?;
        }
        if let Some(plan) = &self.multi_stream {
            writeln!(f, "  multi-stream: {plan:?}")?;
        }
        if let Some(plan) = &self.fleet {
            writeln!(f, "  KCL 3.x fleet: {plan:?}")?;
        }
        write!(f, "  timeline (drain from {:?}):", self.active)?;
        for t in &self.actions {
            write!(f, " {:.1}s {:?};", t.at.as_secs_f64(), t.action)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_a_function_of_the_seed() {
        for seed in 0..50 {
            let a = Scenario::generate(seed);
            assert_eq!(a, Scenario::generate(seed));
            assert!((1..=MAX_OPEN_SHARDS).contains(&a.initial_shards));
            assert!((1..=MAX_WORKERS).contains(&a.initial_workers));
            assert!(a.actions.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(a.actions.iter().all(|t| t.at <= a.active));
        }
        assert_ne!(Scenario::generate(1), Scenario::generate(2));
        // Fan-out keeps the polling world and timeline.
        let fan_out = Scenario::generate_in(7, Mode::FanOut);
        assert!(matches!(fan_out.retrieval, Retrieval::FanOut(_)));
        assert_eq!(fan_out.actions, Scenario::generate(7).actions);
        assert_eq!(
            Scenario::generate_in(7, Mode::Polling),
            Scenario::generate(7)
        );
        // Multi-stream adds stream actions to the polling timeline.
        let multi = Scenario::generate_in(7, Mode::MultiStream);
        assert!(multi.multi_stream.is_some());
        let others: Vec<Timed> = multi
            .actions
            .iter()
            .filter(|t| !t.action.is_stream_action())
            .copied()
            .collect();
        assert_eq!(others, Scenario::generate(7).actions);
        // A fleet adds its plan and fleet actions to the polling world and timeline.
        for seed in 0..50 {
            let fleet = Scenario::generate_in(seed, Mode::Fleet);
            let plan = fleet.fleet.clone().expect("a fleet plan");
            let polling = Scenario::generate(seed);
            let others: Vec<Timed> = fleet
                .actions
                .iter()
                .filter(|t| !t.action.is_fleet_action())
                .copied()
                .collect();
            let polling_and_stale_pauses = polling.actions.len() <= others.len()
                && polling.actions.iter().all(|t| others.contains(t));
            assert!(polling_and_stale_pauses, "seed {seed}");
            assert_eq!(fleet.initial_workers, polling.initial_workers);
            assert!(plan.metrics_interval.subsec_nanos() == 0);
            assert_eq!(
                fleet.actions.iter().any(|t| t.action == Action::FleetTo3x),
                matches!(plan.kind, FleetKind::Migration { .. })
            );
        }
    }
}
