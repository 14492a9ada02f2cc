//! Soak: run many simulation seeds in parallel and summarise.
//!
//! ```text
//! cargo run --release -p kcl-sim --bin soak -- --seeds 10000 [--start N] [--jobs J] [--fan-out | --multi-stream | --fleet-3x]
//! cargo run --release -p kcl-sim --bin soak -- --seed N [--trace] [--fan-out | --multi-stream | --fleet-3x]   # one seed, its report (and full trace)
//! ```
//!
//! Prints each failing seed's first violation as it is found, then a summary table and the
//! list of failing seeds. Exits with status 1 when any seed failed.

use kcl_sim::{run_seed_bounded_in, run_seed_in, wall_limit, Mode, RunOutcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Args {
    start: u64,
    seeds: u64,
    jobs: usize,
    single: Option<u64>,
    trace: bool,
    mode: Mode,
}

fn usage() -> ! {
    eprintln!("usage: soak [--seeds N] [--start N] [--jobs J] [--fan-out | --multi-stream | --fleet-3x] | soak --seed N [--trace] [--fan-out | --multi-stream | --fleet-3x]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        start: 0,
        seeds: 1000,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        single: None,
        trace: false,
        mode: Mode::Polling,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--seeds" => args.seeds = num(),
            "--start" => args.start = num(),
            "--jobs" => args.jobs = num().max(1) as usize,
            "--seed" => args.single = Some(num()),
            "--trace" => args.trace = true,
            "--fan-out" => args.mode = Mode::FanOut,
            "--multi-stream" => args.mode = Mode::MultiStream,
            "--fleet-3x" | "--fleet" => args.mode = Mode::Fleet,
            _ => usage(),
        }
    }
    args
}

/// Totals over many runs.
#[derive(Default)]
struct Summary {
    scenarios: u64,
    events: u64,
    produced: u64,
    delivered: u64,
    failovers: u64,
    steals: u64,
    reshards: u64,
    kills: u64,
    pauses: u64,
    stops: u64,
    late_creates: u64,
    skipped: u64,
    partial: u64,
    consumer_deletions: u64,
    stream_changes: u64,
    /// KCL 3.x: seeds by fleet plan kind, and by world (polling, multi-stream, fan-out).
    fleet_kinds: std::collections::BTreeMap<&'static str, u64>,
    fleet_worlds: std::collections::BTreeMap<&'static str, u64>,
    leaders_elected: u64,
    leader_takeovers: u64,
    leader_kills: u64,
    leader_pauses: u64,
    assignments: u64,
    handoffs: (u64, u64, u64),
    adoptions: u64,
    passed_on: u64,
    protocol_switches: u64,
    migrations: u64,
    fleet_outages: u64,
    premature_assignments: u64,
    assignments_without_lock: u64,
    max_consumer_overlap: Duration,
    violations: u64,
    failing: Vec<(u64, String)>,
    simulated: Duration,
    max_overlap: Duration,
    /// Longest overlap as a fraction of the run's failover time: with pauses, without.
    overlap_ratio: (f64, f64),
    slowest: (Duration, u64),
}

impl Summary {
    fn add(&mut self, o: &RunOutcome, wall: Duration) {
        self.scenarios += 1;
        self.events += o.trace.len() as u64;
        self.produced += o.stats.produced;
        self.delivered += o.stats.delivered;
        self.failovers += o.counters.failovers;
        self.steals += o.counters.steals;
        self.reshards += o.stats.splits + o.stats.merges;
        self.kills += o.stats.kills;
        self.pauses += o.stats.pauses;
        self.stops += o.stats.stops;
        self.late_creates += o.stats.late_creates;
        self.skipped += o.stats.skipped;
        self.partial += o.stats.partial;
        self.consumer_deletions += o.stats.consumer_deletions;
        self.stream_changes += o.stats.stream_changes;
        if let Some(plan) = &o.scenario.fleet {
            *self.fleet_kinds.entry(plan.kind_name()).or_default() += 1;
            let world = if o.scenario.multi_stream.is_some() {
                "multi-stream"
            } else if matches!(
                o.scenario.retrieval,
                kcl_sim::scenario::Retrieval::FanOut(_)
            ) {
                "fan-out"
            } else {
                "polling"
            };
            *self.fleet_worlds.entry(world).or_default() += 1;
        }
        self.leaders_elected += o.counters.leaders_elected;
        self.leader_takeovers += o.counters.leader_takeovers;
        self.leader_kills += o.stats.leader_kills;
        self.leader_pauses += o.stats.leader_pauses;
        self.assignments += o.counters.assignments;
        self.handoffs.0 += o.counters.handoffs_started;
        self.handoffs.1 += o.counters.handoffs_completed;
        self.handoffs.2 += o.counters.handoffs_timed_out;
        self.adoptions += o.counters.adoptions;
        self.passed_on += o.counters.passed_on;
        self.protocol_switches += o.counters.protocol_switches;
        self.migrations += o.stats.migrations;
        self.fleet_outages += o.stats.fleet_outages;
        self.premature_assignments += o.stats.premature_assignments;
        self.assignments_without_lock += o.stats.assignments_without_lock;
        self.max_consumer_overlap = self.max_consumer_overlap.max(o.world.max_consumer_overlap);
        self.violations += o.violations.len() as u64;
        if let Some(v) = o.violations.first() {
            self.failing.push((o.seed, v.to_string()));
        }
        self.simulated += o.world.simulated;
        self.max_overlap = self.max_overlap.max(o.world.max_overlap);
        let ratio = o.world.max_overlap.as_secs_f64() / o.scenario.failover.as_secs_f64();
        if o.stats.pauses > 0 {
            self.overlap_ratio.0 = self.overlap_ratio.0.max(ratio);
        } else {
            self.overlap_ratio.1 = self.overlap_ratio.1.max(ratio);
        }
        if wall > self.slowest.0 {
            self.slowest = (wall, o.seed);
        }
    }
}

fn main() {
    let args = parse_args();
    if let Some(seed) = args.single {
        let o = run_seed_in(seed, args.mode);
        if args.trace {
            print!("{}", o.trace.render_all());
        }
        print!("{}", o.report());
        std::process::exit(if o.passed() { 0 } else { 1 });
    }
    let started = Instant::now();
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|s| {
        for _ in 0..args.jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let t = Instant::now();
                let o = run_seed_bounded_in(seed, args.mode, wall_limit());
                let wall = t.elapsed();
                if let Some(v) = o.violations.first() {
                    eprintln!("seed {seed} FAILED: {v}");
                }
                let mut sum = summary.lock().unwrap();
                sum.add(&o, wall);
                if sum.scenarios % 500 == 0 {
                    eprintln!(
                        "... {} seeds in {:.0}s, {} failing",
                        sum.scenarios,
                        started.elapsed().as_secs_f64(),
                        sum.failing.len()
                    );
                }
            });
        }
    });
    let wall = started.elapsed();
    let mut sum = summary.into_inner().unwrap();
    sum.failing.sort();
    println!(
        "seeds {}..{} ({:?}) on {} threads",
        args.start, end, args.mode, args.jobs
    );
    println!("{:<28} {:>16}", "scenarios", sum.scenarios);
    println!("{:<28} {:>16}", "trace events", sum.events);
    println!("{:<28} {:>16}", "records produced", sum.produced);
    println!("{:<28} {:>16}", "records delivered", sum.delivered);
    println!("{:<28} {:>16}", "failovers (expired leases)", sum.failovers);
    println!("{:<28} {:>16}", "steals (balancing)", sum.steals);
    println!("{:<28} {:>16}", "reshards (splits+merges)", sum.reshards);
    println!(
        "{:<28} {:>16}",
        "kills / pauses / stops",
        format!("{} / {} / {}", sum.kills, sum.pauses, sum.stops)
    );
    println!("{:<28} {:>16}", "late creates (excused)", sum.late_creates);
    println!("{:<28} {:>16}", "records skipped (consented)", sum.skipped);
    println!("{:<28} {:>16}", "partial progress (batches)", sum.partial);
    println!(
        "{:<28} {:>16}",
        "fan-out consumers deleted", sum.consumer_deletions
    );
    println!("{:<28} {:>16}", "stream set changes", sum.stream_changes);
    if !sum.fleet_kinds.is_empty() {
        let kinds: Vec<String> = sum
            .fleet_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("{:<28} {:>16}", "KCL 3.x fleet plans", kinds.join(" / "));
        let worlds: Vec<String> = sum
            .fleet_worlds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("{:<28} {:>16}", "  their worlds", worlds.join(" / "));
        println!(
            "{:<28} {:>16}",
            "leaders elected (takeovers)",
            format!("{} ({})", sum.leaders_elected, sum.leader_takeovers)
        );
        println!(
            "{:<28} {:>16}",
            "leader kills / pauses",
            format!("{} / {}", sum.leader_kills, sum.leader_pauses)
        );
        println!("{:<28} {:>16}", "assignments", sum.assignments);
        println!(
            "{:<28} {:>16}",
            "  of live leases / no lock",
            format!(
                "{} / {}",
                sum.premature_assignments, sum.assignments_without_lock
            )
        );
        println!(
            "{:<28} {:>16}",
            "hand-offs started/done/t-o",
            format!(
                "{} / {} / {}",
                sum.handoffs.0, sum.handoffs.1, sum.handoffs.2
            )
        );
        println!("{:<28} {:>16}", "assigned leases adopted", sum.adoptions);
        println!("{:<28} {:>16}", "passed on by stopping", sum.passed_on);
        println!(
            "{:<28} {:>16}",
            "switches to 3.x protocol", sum.protocol_switches
        );
        println!("{:<28} {:>16}", "items written mid-run", sum.migrations);
        println!(
            "{:<28} {:>16}",
            "fleet-store outages (all)", sum.fleet_outages
        );
    }
    println!("{:<28} {:>16}", "violations", sum.violations);
    println!("{:<28} {:>16}", "failing seeds", sum.failing.len());
    println!(
        "{:<28} {:>15.0}s",
        "simulated time",
        sum.simulated.as_secs_f64()
    );
    println!(
        "{:<28} {:>15.1}s",
        "longest lease overlap",
        sum.max_overlap.as_secs_f64()
    );
    println!(
        "{:<28} {:>15.1}s",
        "longest consumer overlap",
        sum.max_consumer_overlap.as_secs_f64()
    );
    println!(
        "{:<28} {:>16}",
        "  / failover (paused; not)",
        format!("{:.2}; {:.2}", sum.overlap_ratio.0, sum.overlap_ratio.1)
    );
    println!("{:<28} {:>15.1}s", "wall time", wall.as_secs_f64());
    println!(
        "{:<28} {:>15.2}s",
        "slowest seed",
        sum.slowest.0.as_secs_f64()
    );
    println!("{:<28} {:>16}", "  (seed)", sum.slowest.1);
    if !sum.failing.is_empty() {
        println!("failing seeds:");
        for (seed, v) in &sum.failing {
            println!("  {seed}: {v}");
        }
        std::process::exit(1);
    }
}
