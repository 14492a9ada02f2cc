//! Running one seed: a fresh paused-time runtime, the trace subscriber, seeded jitter; and the
//! outcome with its readable report.

use crate::invariants::Violation;
use crate::ledger::Stats;
use crate::scenario::{Mode, Retrieval, Scenario};
use crate::trace::{Counters, Trace, TraceLayer};
use crate::world::{AbortSignal, World, WorldStats};
use kinesis_client::fleet::WorkerMetricStats;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Lines of trace printed before a violation.
const REPORT_LINES: usize = 400;

/// What one seed's run did and found.
#[derive(Debug)]
pub struct RunOutcome {
    /// The seed.
    pub seed: u64,
    /// Its scenario.
    pub scenario: Scenario,
    /// Broken invariants (empty when the run passed).
    pub violations: Vec<Violation>,
    /// Ground-truth totals.
    pub stats: Stats,
    /// Library event counts.
    pub counters: Counters,
    /// What the world measured.
    pub world: WorldStats,
    /// The whole trace.
    pub trace: Trace,
}

impl RunOutcome {
    /// True when no invariant broke.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The seed, its scenario, the violations and the trace leading to the first one.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed() {
            "passed".to_string()
        } else {
            format!("FAILED ({} violations)", self.violations.len())
        };
        let _ = writeln!(out, "=== simulation seed {}: {verdict}", self.seed);
        let _ = writeln!(out, "{}", self.scenario);
        let _ = writeln!(
            out,
            "  simulated {:.1}s (drain {:.1}s), {} trace events, longest lease overlap {:?}, longest consumer overlap {:?} (bound {:?})",
            self.world.simulated.as_secs_f64(),
            self.world.drain.as_secs_f64(),
            self.trace.len(),
            self.world.max_overlap,
            self.world.max_consumer_overlap,
            self.world.overlap_bound
        );
        let _ = writeln!(out, "  {:?}", self.stats);
        let _ = writeln!(out, "  {:?}", self.counters);
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION {v}");
        }
        if let Some(first) = self.violations.first() {
            let _ = writeln!(
                out,
                "--- trace up to the first violation (world events, and events of {:?}):",
                first.focus
            );
            out.push_str(
                &self
                    .trace
                    .render_focus(first.trace_len, &first.focus, REPORT_LINES),
            );
            let (env, flag) = match self.scenario.retrieval {
                _ if self.scenario.fleet.is_some() => ("SIM_RETRIEVAL=fleet ", " --fleet-3x"),
                _ if self.scenario.multi_stream.is_some() => {
                    ("SIM_RETRIEVAL=multistream ", " --multi-stream")
                }
                Retrieval::Polling => ("", ""),
                Retrieval::FanOut(_) => ("SIM_RETRIEVAL=fanout ", " --fan-out"),
            };
            let _ = writeln!(
                out,
                "--- replay: {env}SIM_SEED={} cargo test -p kcl-sim -- --nocapture   (full trace: cargo run -p kcl-sim --bin soak -- --seed {}{flag} --trace)",
                self.seed, self.seed
            );
        }
        out
    }
}

/// The level of library events recorded: `SIM_TRACE_LEVEL` (`debug`, `trace`, ...), default
/// `info`. Changing it changes the trace, not the run.
fn library_level() -> LevelFilter {
    std::env::var("SIM_TRACE_LEVEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Run the (polling) scenario of `seed` to completion. Deterministic: the same seed gives the
/// same trace.
pub fn run_seed(seed: u64) -> RunOutcome {
    run_seed_in(seed, Mode::Polling)
}

/// Run the scenario of `seed` in `mode` to completion (see [`run_seed`]).
pub fn run_seed_in(seed: u64, mode: Mode) -> RunOutcome {
    run_seed_into(seed, mode, Trace::new(), Arc::default())
}

/// [`run_seed`] on a thread of its own, stopped after `wall_limit` of real time: a run whose
/// simulated time stops advancing (a task that never lets the runtime go idle, e.g. a busy
/// loop) would otherwise hang. Such a run is aborted (the world is woken from this thread and
/// stops; dropping its runtime drops the spinning task) and reports a `liveness` violation.
pub fn run_seed_bounded(seed: u64, wall_limit: Duration) -> RunOutcome {
    run_seed_bounded_in(seed, Mode::Polling, wall_limit)
}

/// [`run_seed_bounded`] in `mode`.
pub fn run_seed_bounded_in(seed: u64, mode: Mode, wall_limit: Duration) -> RunOutcome {
    let trace = Trace::new();
    let abort = Arc::new(AbortSignal::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let (t, a) = (trace.clone(), abort.clone());
    std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let _ = tx.send(run_seed_into(seed, mode, t, a));
        })
        .expect("spawn a simulation thread");
    if let Ok(outcome) = rx.recv_timeout(wall_limit) {
        return outcome;
    }
    let stuck_at = trace.lines().last().map_or(Duration::ZERO, |l| l.at);
    let trace_len = trace.len();
    abort.abort();
    let liveness = Violation {
        at: stuck_at,
        invariant: "liveness",
        message: format!(
            "the run did not finish within {wall_limit:?} of wall time; its trace stops at {:.3}s of simulated time: \
             something keeps the runtime busy without letting time advance (a busy loop?)",
            stuck_at.as_secs_f64()
        ),
        focus: Vec::new(),
        trace_len,
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(mut outcome) => {
            outcome.violations.insert(0, liveness);
            outcome
        }
        // Not even the world's own task gets polled any more: leave the thread behind.
        Err(_) => RunOutcome {
            seed,
            scenario: Scenario::generate_in(seed, mode),
            violations: vec![liveness],
            stats: Stats::default(),
            counters: trace.counters(),
            world: WorldStats {
                simulated: stuck_at,
                ..WorldStats::default()
            },
            trace,
        },
    }
}

/// The wall-time limit per run: `SIM_WALL_LIMIT_SECS`, default 60 s (the slowest seeds take
/// about a second in a debug build).
pub fn wall_limit() -> Duration {
    std::env::var("SIM_WALL_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// The KCL 3.x fleet's clock ([`WorkerMetricStats`] stamps rows in epoch seconds, and the
/// leader judges a row's age in whole seconds) is the wall clock of the process's first
/// reading, advanced by tokio's clock since. Read it once outside any runtime (so that the
/// anchor precedes every simulation runtime's clock, whose paused time may run far ahead of
/// real time), then, in a fleet run, advance the fresh paused runtime's clock by whole
/// milliseconds until the epoch second turns: every fleet run then starts at a whole epoch
/// second, and rows age by the same whole seconds in every process (without this, a row's age
/// at the leader's check would depend on the real clock's phase: not one exact run).
async fn align_fleet_clock() {
    let second = || WorkerMetricStats::throughput_only("clock").last_update_s;
    let start = second();
    // At most a second (and the runtime's start, if it preceded the anchor).
    for _ in 0..120_000 {
        tokio::time::advance(Duration::from_millis(1)).await;
        if second() != start {
            return;
        }
    }
}

fn run_seed_into(seed: u64, mode: Mode, trace: Trace, abort: Arc<AbortSignal>) -> RunOutcome {
    let scenario = Scenario::generate_in(seed, mode);
    // Sets the fleet clock's anchor (see `align_fleet_clock`) before this run's runtime.
    let _ = WorkerMetricStats::throughput_only("clock");
    let fleet = scenario.fleet.is_some();
    let filter = Targets::new()
        .with_target("kinesis_client", library_level())
        .with_default(LevelFilter::WARN);
    let subscriber =
        tracing_subscriber::registry().with(TraceLayer::new(trace.clone()).with_filter(filter));
    let (ledger, world) = tracing::subscriber::with_default(subscriber, || {
        kinesis_client::testing::seed_thread_jitter(Some(seed ^ 0x1177_E500));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
        let result = rt.block_on(async {
            if fleet {
                align_fleet_clock().await;
            }
            let world = World::new(scenario.clone(), trace.clone(), abort);
            let ledger = world.ledger();
            let stats = world.run().await;
            (ledger, stats)
        });
        // Dropping the runtime drops the tasks still parked (aborted workers' leftovers).
        drop(rt);
        kinesis_client::testing::seed_thread_jitter(None);
        result
    });
    let ledger = ledger.lock().unwrap();
    RunOutcome {
        seed,
        scenario,
        violations: ledger.violations.clone(),
        stats: ledger.stats,
        counters: trace.counters(),
        world,
        trace,
    }
}
