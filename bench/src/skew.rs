//! Section 11: balancing a skewed load without a leader. 8 shards, of which 2 carry 10× the
//! records of each other one, on the simulated fleet of section 3 (paused time, F = 10 s): 2
//! workers start, and after 6 F two more join. For each phase: the time (from the phase's last
//! join) until every worker's share of the records (of the shards it processes) is within
//! ±20 % of the fair share and stays there, or, where no assignment of the leases gets that
//! close (4 workers: a hot shard alone is 38 % of the records), within 5 points of the best
//! assignment's worst deviation; the worst deviation at the end of the phase; the lease moves;
//! the moves that took a lease back to an owner it had earlier in the phase; the leases that
//! moved back and forth (three moves or more); and the batches delivered twice.

use crate::cluster::{paused_runtime, Cluster, ClusterSpec};
use crate::report::{Goal, Section, Table};
use crate::stats::sig;
use crate::Scale;
use kinesis_client::LeaseAssignmentStrategy;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

const F: Duration = Duration::from_secs(10);
const SHARDS: usize = 8;
/// Records per put of each shard: two hot shards.
const RATES: [usize; SHARDS] = [10, 10, 1, 1, 1, 1, 1, 1];
/// How long each phase runs.
const PHASE: Duration = Duration::from_secs(60);
/// The goal's bound on each worker's share, relative to the fair share.
const BOUND: f64 = 0.2;

/// The worst relative deviation from the fair share of the best assignment of the shards to
/// `workers` workers (exhaustive: 8 shards).
fn best_deviation(workers: usize) -> f64 {
    let total: usize = RATES.iter().sum();
    let fair = total as f64 / workers as f64;
    let mut best = f64::MAX;
    for code in 0..workers.pow(SHARDS as u32) {
        let mut load = vec![0usize; workers];
        let mut c = code;
        for r in RATES {
            load[c % workers] += r;
            c /= workers;
        }
        let worst = load
            .iter()
            .map(|l| (*l as f64 - fair).abs() / fair)
            .fold(0.0, f64::max);
        best = best.min(worst);
    }
    best
}

/// The worst relative deviation from the fair share of the records of the shards each of
/// `workers` (worker ids) processes now: the owner in the lease table, or during a hand-off
/// the worker handing the lease over. (By the shards' known rates: the records delivered over
/// a window vary with the polls that fall in it, by a sixth of a hot shard's share over F.)
fn deviation(cluster: &Cluster, workers: &[String]) -> f64 {
    let mut per: BTreeMap<&str, usize> = workers.iter().map(|w| (w.as_str(), 0)).collect();
    let mut total = 0;
    for (key, lease) in cluster.store.snapshot() {
        let rate = key
            .strip_prefix("shardId-")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| RATES.get(i))
            .copied()
            .unwrap_or(0);
        total += rate;
        let worker = lease.checkpoint_owner.or(lease.owner);
        if let Some(n) = worker.and_then(|w| per.get_mut(w.as_str())) {
            *n += rate;
        }
    }
    let fair = total as f64 / workers.len() as f64;
    per.values()
        .map(|n| (*n as f64 - fair).abs() / fair)
        .fold(0.0, f64::max)
}

/// What one phase showed.
#[derive(Debug, Clone, Default)]
struct Phase {
    /// Seconds from the phase's last join until the shares were within the target and stayed
    /// there to the end of the phase (`None`: not within it at the end).
    within: Option<f64>,
    /// The worst deviation at the end.
    end: f64,
    moves: usize,
    back: usize,
    /// Leases moved three times or more.
    to_and_fro: usize,
    twice: usize,
}

/// Runs one phase of `PHASE` with `workers` live: samples owners every 100 ms.
async fn phase(cluster: &Cluster, workers: &[&str], target: f64) -> Phase {
    let workers: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
    let started = Instant::now();
    let seen_before = cluster.log.lock().unwrap().len();
    let mut last = cluster.lease_owners();
    let mut had: BTreeMap<String, BTreeSet<String>> = last
        .iter()
        .filter_map(|(k, o)| Some((k.clone(), BTreeSet::from([o.clone()?]))))
        .collect();
    let mut p = Phase::default();
    let mut moves_of: BTreeMap<String, usize> = BTreeMap::new();
    while started.elapsed() < PHASE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cluster.lease_owners();
        for (k, o) in &now {
            let Some(o) = o else { continue };
            let before = last.get(k).cloned().flatten();
            if before.as_ref() == Some(o) {
                continue;
            }
            let returned = !had.entry(k.clone()).or_default().insert(o.clone());
            // A move: from one worker to another (not a first take).
            if before.is_some() {
                p.moves += 1;
                *moves_of.entry(k.clone()).or_default() += 1;
                if returned {
                    p.back += 1;
                }
            }
        }
        last = now;
        {
            if deviation(cluster, &workers) > target {
                p.within = None;
            } else if p.within.is_none() {
                p.within = Some(started.elapsed().as_secs_f64());
            }
        }
    }
    p.to_and_fro = moves_of.values().filter(|n| **n >= 3).count();
    let log = cluster.log.lock().unwrap();
    p.end = deviation(cluster, &workers);
    p.twice = crate::fleet3x::repeated_batches(&log, seen_before);
    p
}

/// One run: the 2-worker phase, then the 4-worker phase.
fn run(seed: u64, strategy: LeaseAssignmentStrategy, targets: [f64; 2]) -> [Phase; 2] {
    paused_runtime().block_on(async move {
        let mut cluster = Cluster::start(ClusterSpec {
            workers: 2,
            shards: SHARDS,
            failover_time: F,
            put_every: Some(Duration::from_millis(100)),
            seed,
            count_calls: false,
            store_latency: None,
            fleet: Default::default(),
            records_per_put: RATES.to_vec(),
            strategy,
        });
        let two = phase(&cluster, &["w0", "w1"], targets[0]).await;
        cluster.add_worker();
        cluster.add_worker();
        let four = phase(&cluster, &["w0", "w1", "w2", "w3"], targets[1]).await;
        [two, four]
    })
}

/// Run section 11.
pub fn section(scale: Scale) -> Section {
    let started = std::time::Instant::now();
    let runs: u64 = match scale {
        Scale::Tiny => 2,
        Scale::Quick => 10,
        Scale::Full => 40,
    };
    let best = [best_deviation(2), best_deviation(4)];
    let targets = best.map(|b| if b <= BOUND { BOUND } else { b + 0.05 });
    let mut t = Table::new([
        "strategy",
        "workers",
        "best possible",
        "runs within the target",
        "time to the target: p50 / max",
        "worst deviation at the end: mean / max",
        "lease moves (mean)",
        "moves back to a former owner (total)",
        "leases moved 3 times or more (total)",
        "batches delivered twice (total)",
    ]);
    let mut met = true;
    for (name, strategy) in [
        (
            "by throughput (WORKER_UTILIZATION_AWARE, the default)",
            LeaseAssignmentStrategy::Throughput,
        ),
        (
            "by count (LEASE_COUNT_BASED)",
            LeaseAssignmentStrategy::LeaseCount,
        ),
    ] {
        let results: Vec<[Phase; 2]> = (1..=runs).map(|s| run(s, strategy, targets)).collect();
        for (i, workers) in [2, 4].into_iter().enumerate() {
            let phases: Vec<&Phase> = results.iter().map(|r| &r[i]).collect();
            let mut times: Vec<f64> = phases.iter().filter_map(|p| p.within).collect();
            times.sort_by(f64::total_cmp);
            let within = times.len();
            let ends: Vec<f64> = phases.iter().map(|p| p.end).collect();
            let moves = phases.iter().map(|p| p.moves).sum::<usize>() as f64 / runs as f64;
            let back: usize = phases.iter().map(|p| p.back).sum();
            let to_and_fro: usize = phases.iter().map(|p| p.to_and_fro).sum();
            let twice: usize = phases.iter().map(|p| p.twice).sum();
            if strategy == LeaseAssignmentStrategy::Throughput
                && (within < phases.len()
                    || times.last().is_some_and(|t| *t > 3.0 * F.as_secs_f64())
                    || to_and_fro > 0)
            {
                met = false;
            }
            let pct = |v: f64| format!("{} %", sig(v * 100.0));
            t.row([
                name.to_string(),
                workers.to_string(),
                format!("{} (target {})", pct(best[i]), pct(targets[i])),
                format!("{within} of {}", phases.len()),
                match (times.get(times.len() / 2), times.last()) {
                    (Some(p50), Some(max)) => format!("{} s / {} s", sig(*p50), sig(*max)),
                    _ => "never".into(),
                },
                format!(
                    "{} / {}",
                    pct(ends.iter().sum::<f64>() / ends.len() as f64),
                    pct(ends.iter().copied().fold(0.0, f64::max))
                ),
                sig(moves),
                back.to_string(),
                to_and_fro.to_string(),
                twice.to_string(),
            ]);
        }
    }
    let evidence = format!(
        "By throughput, every run reached its target within 3 F of the last join, and no lease \
         moved back and forth (three moves or more) ({runs} runs per strategy)."
    );
    Section {
        number: 11,
        title: "Balancing a skewed load without a leader".into(),
        method: "The simulated fleet of section 3 (paused time, F = 10 s, 100-byte records put every \
            100 ms), 8 shards of which 2 get 10 records per put and the others 1. Two workers start \
            on a new application; after 60 s two more join; each phase lasts 60 s. Per phase: the \
            time from its last join until the worst worker's share of the records is within the \
            target of the fair share and stays there to the end of the phase, sampled every 100 ms \
            (the share of the records of the shards it processes, by their rates: the owner in the \
            lease table, during a hand-off the worker handing over; the target is ±20 %, or 5 points \
            above the best possible where no assignment gets within ±20 %: with 4 workers a hot \
            shard alone is 38 % of the records, 54 % above a fair 25 %); the worst deviation at the \
            end; the owner changes seen in the table from one worker to another; the moves that gave \
            a lease back to an owner it had earlier in the phase; the leases moved three times or \
            more (back and forth); the batches delivered twice. Balancing by throughput next to \
            balancing by count (the Java KCL 2.x's rule). \
            `cargo run --release -p kcl-bench -- --only 11`."
            .into(),
        tables: vec![t],
        goal: if met {
            Goal::Met(evidence)
        } else {
            Goal::Missed(
                "Some run by throughput missed its target within 3 F, or moved a lease back and \
                 forth: see the table."
                    .into(),
            )
        },
        notes: vec![
            "Issue 29's goal: every worker within ±20 % of the fair share within 3 F of the last \
             worker joining, when such a split exists, with no lease moving back and forth."
                .into(),
            "In the first phase the application is new: the first worker takes every lease before \
             the second starts, and a lease is moved only once its owner has measured it, so the \
             second worker's first steal waits for the first figures (about two renewal intervals) \
             and takes a hot lease first. The 2-worker phase ends one light lease apart (12 against \
             14 records a tick, 7.7 %): moving it would leave less than the margin (10 % of the \
             giver's measured traffic) between them."
                .into(),
        ],
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
