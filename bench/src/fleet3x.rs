//! Section 10: failover and balance in a KCL 3.x fleet (a leader assigns leases) next to the
//! leaderless protocol, on the simulated fleet of section 3 (3 workers, 12 shards, paused time,
//! a record into every shard every 100 ms, F = 10 s).
//!
//! * **Failover**: once balanced (plus a random `F..2F`), one worker is aborted: a follower
//!   (not the leader), or the leader itself; per shard of the dead worker, the time until
//!   another worker delivers it again.
//! * **Balance**: once balanced (plus a random `F..2F`), a fourth worker joins: the time until
//!   every worker holds 3 leases with no hand-off under way, the lease moves (owner changes
//!   seen in the table), and the batches delivered twice (a batch starting at a record already
//!   delivered: the new owner started before the old one's last checkpoint).

use crate::cluster::{paused_runtime, Cluster, ClusterSpec};
use crate::report::{Goal, Section, Table};
use crate::stats::{sig, summary};
use crate::Scale;
use kinesis_client::fleet::{ClientVersionConfig, FleetConfig};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

const F: Duration = Duration::from_secs(10);
const WORKERS: usize = 3;
const SHARDS: usize = 12;

/// Which worker dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// Any worker (leaderless: there is no leader).
    Any,
    /// A worker that does not lead.
    Follower,
    /// The leader.
    Leader,
}

fn spec(seed: u64, fleet: FleetConfig) -> ClusterSpec {
    ClusterSpec {
        workers: WORKERS,
        shards: SHARDS,
        failover_time: F,
        put_every: Some(Duration::from_millis(100)),
        seed,
        count_calls: false,
        store_latency: None,
        fleet,
        records_per_put: Vec::new(),
        strategy: Default::default(),
    }
}

/// Per-shard failover delays (multiples of F) of one run.
fn failover_run(seed: u64, fleet: FleetConfig, victim: Victim) -> Vec<f64> {
    paused_runtime().block_on(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut cluster = Cluster::start(spec(seed, fleet));
        assert!(
            cluster.wait_balanced(F * 60).await,
            "seed {seed}: never balanced: {:?}",
            cluster.owners()
        );
        tokio::time::sleep(F.mul_f64(1.0 + rng.random::<f64>())).await;
        let leader = cluster.leader();
        let i = match victim {
            Victim::Any => rng.random_range(0..WORKERS),
            Victim::Leader => leader.expect("a 3.x fleet has a leader"),
            Victim::Follower => {
                let l = leader.expect("a 3.x fleet has a leader");
                let others: Vec<usize> = (0..WORKERS).filter(|w| *w != l).collect();
                others[rng.random_range(0..others.len())]
            }
        };
        let held = cluster.held_by(i);
        let died = Instant::now();
        cluster.kill(i);
        let deadline = died + F * 30;
        let mut delays = Vec::new();
        for shard in &held {
            loop {
                if let Some(at) = cluster.first_delivery(shard, died, i) {
                    delays.push((at - died).as_secs_f64() / F.as_secs_f64());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: {shard} never delivered again after w{i} died ({victim:?})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        delays
    })
}

/// A cluster started, balanced, and left running a random F..2F more; with the run's
/// random-number generator.
async fn balanced_cluster(seed: u64, fleet: FleetConfig) -> (Cluster, rand::rngs::StdRng) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::start(spec(seed, fleet));
    assert!(
        cluster.wait_balanced(F * 60).await,
        "seed {seed}: never balanced"
    );
    tokio::time::sleep(F.mul_f64(1.0 + rng.random::<f64>())).await;
    (cluster, rng)
}

/// The batches from the `seen_before`-th delivery on that start at a record a batch
/// delivered before started at (the new owner started before the old one's last checkpoint).
pub(crate) fn repeated_batches(log: &[crate::cluster::Delivery], seen_before: usize) -> usize {
    let mut starts: BTreeSet<(String, String)> = BTreeSet::new();
    let mut repeats = 0;
    for (n, d) in log.iter().enumerate() {
        if let Some(first) = &d.first {
            if !starts.insert((d.shard.clone(), first.clone())) && n >= seen_before {
                repeats += 1;
            }
        }
    }
    repeats
}

/// The longest interval between two deliveries of `shard` (by any worker) in `log` from
/// `from` on, seconds.
fn longest_interval(log: &[crate::cluster::Delivery], shard: &str, from: Instant) -> f64 {
    let mut at: Vec<Instant> = log
        .iter()
        .filter(|d| d.shard == shard && d.at >= from)
        .map(|d| d.at)
        .collect();
    at.sort();
    at.windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .fold(0.0, f64::max)
}

/// One balance run: (seconds until balanced, lease moves, batches delivered twice, per moved
/// shard the longest interval between its deliveries from the join on).
fn balance_run(seed: u64, fleet: FleetConfig) -> (f64, usize, usize, Vec<f64>) {
    paused_runtime().block_on(async move {
        let (mut cluster, _) = balanced_cluster(seed, fleet).await;
        let mut last = cluster.lease_owners();
        let joined = Instant::now();
        let seen_before = cluster.log.lock().unwrap().len();
        cluster.add_worker();
        let mut moves = 0;
        let mut moved = BTreeSet::new();
        let took = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = cluster.lease_owners();
            for (k, o) in &now {
                if last.get(k) != Some(o) {
                    moves += 1;
                    moved.insert(k.clone());
                }
            }
            last = now;
            if cluster.balanced() {
                break joined.elapsed();
            }
            assert!(
                joined.elapsed() < F * 60,
                "seed {seed}: never balanced again"
            );
        };
        // Let the moved shards deliver a while, then count repeated batches.
        tokio::time::sleep(F).await;
        let log = cluster.log.lock().unwrap();
        let repeats = repeated_batches(&log, seen_before);
        let intervals = moved
            .iter()
            .map(|shard| longest_interval(&log, shard, joined))
            .collect();
        (took.as_secs_f64(), moves, repeats, intervals)
    })
}

/// One rolling-deploy run: once balanced (plus F..2F), a worker stops gracefully; per shard
/// it held, the longest interval between two deliveries of the shard (any worker) from a
/// second before the stop until 2 F after it; and the batches delivered twice.
fn rolling_run(seed: u64, fleet: FleetConfig) -> (Vec<f64>, usize) {
    paused_runtime().block_on(async move {
        let (mut cluster, mut rng) = balanced_cluster(seed, fleet).await;
        let victim = rng.random_range(0..WORKERS);
        let moved = cluster.held_by(victim);
        let seen_before = cluster.log.lock().unwrap().len();
        let stop = Instant::now();
        cluster.stop(victim).await;
        tokio::time::sleep(F * 2).await;
        let log = cluster.log.lock().unwrap();
        let from = stop - Duration::from_secs(1);
        let gaps = moved
            .iter()
            .map(|shard| longest_interval(&log, shard, from))
            .collect();
        let repeats = repeated_batches(&log, seen_before);
        (gaps, repeats)
    })
}

fn table() -> Table {
    Table::new([
        "protocol", "event", "runs", "samples", "p50", "p90", "p99", "max",
    ])
}

fn row(t: &mut Table, protocol: &str, event: &str, runs: u64, v: &[f64], unit: &str) {
    let [p50, p90, p99, max] = summary(v);
    let cell = |m: f64| match unit {
        "F" => format!("{} F ({} s)", sig(m), sig(m * F.as_secs_f64())),
        _ => format!("{} {unit}", sig(m)),
    };
    t.row([
        protocol.to_string(),
        event.to_string(),
        runs.to_string(),
        v.len().to_string(),
        cell(p50),
        cell(p90),
        cell(p99),
        cell(max),
    ]);
}

/// Run section 10.
pub fn section(scale: Scale) -> Section {
    let started = std::time::Instant::now();
    let runs: u64 = match scale {
        Scale::Tiny => 2,
        Scale::Quick => 10,
        Scale::Full => 100,
    };
    let leaderless = FleetConfig::default();
    let mut at_once = FleetConfig::default();
    at_once.graceful_lease_handoff_enabled = false;
    let three = FleetConfig::default().with_client_version_config(ClientVersionConfig::V3x);
    let mut failover = table();
    let mut p99s = Vec::new();
    for (protocol, fleet, victim, event) in [
        ("leaderless", &leaderless, Victim::Any, "a worker dies"),
        ("KCL 3.x", &three, Victim::Follower, "a follower dies"),
        ("KCL 3.x", &three, Victim::Leader, "the leader dies"),
    ] {
        let v: Vec<f64> = (1..=runs)
            .flat_map(|seed| failover_run(seed, fleet.clone(), victim))
            .collect();
        row(&mut failover, protocol, event, runs, &v, "F");
        p99s.push((protocol, event, summary(&v)[2]));
    }
    let mut balance = Table::new([
        "protocol",
        "a 4th worker joins",
        "runs",
        "p50",
        "p90",
        "max",
        "lease moves (mean)",
        "batches delivered twice (total)",
        "longest interval between deliveries of a moved shard: p50 / max",
    ]);
    for (protocol, fleet) in [
        ("leaderless, steals by hand-off (the default)", &leaderless),
        ("leaderless, steals at once (hand-offs off)", &at_once),
        ("KCL 3.x", &three),
    ] {
        let results: Vec<(f64, usize, usize, Vec<f64>)> = (1..=runs)
            .map(|seed| balance_run(seed, fleet.clone()))
            .collect();
        let intervals: Vec<f64> = results.iter().flat_map(|r| r.3.clone()).collect();
        let [i50, _, _, imax] = summary(&intervals);
        let times: Vec<f64> = results.iter().map(|r| r.0 / F.as_secs_f64()).collect();
        let [p50, p90, _, max] = summary(&times);
        let moves = results.iter().map(|r| r.1).sum::<usize>() as f64 / results.len() as f64;
        let twice: usize = results.iter().map(|r| r.2).sum();
        let cell = |m: f64| format!("{} F ({} s)", sig(m), sig(m * F.as_secs_f64()));
        balance.row([
            protocol.to_string(),
            "time until 3 leases each".to_string(),
            runs.to_string(),
            cell(p50),
            cell(p90),
            cell(max),
            sig(moves),
            twice.to_string(),
            format!("{} s / {} s", sig(i50), sig(imax)),
        ]);
    }
    let mut rolling = Table::new([
        "protocol",
        "a worker stops gracefully",
        "runs",
        "samples",
        "p50",
        "p90",
        "max",
        "batches delivered twice (total)",
    ]);
    for (protocol, fleet) in [
        ("leaderless, hand-offs (the default)", &leaderless),
        ("leaderless, hand-offs off", &at_once),
        ("KCL 3.x", &three),
    ] {
        let results: Vec<(Vec<f64>, usize)> = (1..=runs)
            .map(|seed| rolling_run(seed, fleet.clone()))
            .collect();
        let gaps: Vec<f64> = results.iter().flat_map(|r| r.0.clone()).collect();
        let [p50, p90, _, max] = summary(&gaps);
        let twice: usize = results.iter().map(|r| r.1).sum();
        let cell = |s: f64| format!("{} s", sig(s));
        rolling.row([
            protocol.to_string(),
            "longest interval between deliveries of a moved shard".to_string(),
            runs.to_string(),
            gaps.len().to_string(),
            cell(p50),
            cell(p90),
            cell(max),
            twice.to_string(),
        ]);
    }
    let text = p99s
        .iter()
        .map(|(p, e, v)| format!("{p}, {e}: p99 {} F", sig(*v)))
        .collect::<Vec<_>>()
        .join("; ");
    Section {
        number: 10,
        title: "KCL 3.x mode: failover and balance".into(),
        method: "The simulated fleet of section 3 (3 workers, 12 shards, paused time, a record put into \
            every shard every 100 ms, F = 10 s), in the leaderless protocol (`ClientVersionConfig::Auto` \
            on a new table) and as a KCL 3.x fleet (`ClientVersionConfig::V3x`: a leader assigns leases, \
            workers discover theirs every second, planned moves are graceful hand-offs). **Failover**: once \
            balanced (plus a random F..2F), a worker is aborted — any worker, a follower, or the leader — \
            and per shard it held, the time until another worker delivers it again. **Balance**: once \
            balanced (plus F..2F), a 4th worker joins; the time until every worker holds 3 leases with no \
            hand-off under way, the owner changes seen in the table (sampled every 100 ms; a hand-off is \
            one), the batches \
            delivered twice (a batch starting at a record a batch delivered before started at: the new \
            owner started before the old one's last checkpoint), and per moved shard the longest \
            interval between two of its deliveries from the join on (1.5 s, the polling interval, \
            for a shard that does not move). **Rolling deploy**: once balanced \
            (plus F..2F), a worker stops gracefully (as on SIGTERM); per shard it held, the longest \
            interval between two deliveries of the shard, by any worker, from a second before the \
            stop until 2 F after it (a shard that does not move is delivered every 1.5 s, the \
            polling interval), and the batches delivered twice."
            .into(),
        tables: vec![failover, balance, rolling],
        goal: Goal::Info(format!(
            "No goal of its own; failover in 3.x mode should stay near the leaderless protocol's: {text}."
        )),
        notes: vec![
            "Why the leader's death costs more: the followers take its lock only after seeing it \
             unchanged for its lease duration (2 F here; the Java KCL writes 120 s). A follower that \
             sees the lock unchanged for two heartbeats starts watching the leases' counters, so that \
             when it takes the lock it already knows which leases expired (a lease is expired F after \
             its counter was last seen to change): about 2 F in all. The Java KCL 3.x in the same \
             situation: 2–3 minutes for the lock, then 20–40 s (its new leader first treats every \
             lease as renewed, and scans every 2 F)."
                .into(),
            "With the real Java KCL 3.1.3 MultiLangDaemon on the local services (two workers of each \
             kind, 4 shards, F = 10 s; `cargo test -p kinesis-client-multilang --test e2e java_fleet -- \
             --nocapture` prints each run's report): from the last SIGTERM until the remaining side \
             held every shard, a Java 3.x fleet replaced by `kcl-multilang` workers 10–13 s, a \
             `kcl-multilang` 3.x fleet replaced by Java workers 0.4 s, a 2.x-compatible Java fleet \
             replaced by `kcl-multilang` 12 s (its joiners steal by hand-off); a Java-only 3.x fleet \
             through the same steps (Java's \
             defaults) 152–155 s. No record lost; none repeated by a hand-off."
                .into(),
            "Rolling deploy: with hand-offs, the stopping worker names each lease's next owner and \
             processes on for one take interval, so that the next owner watches the lease when it \
             passes on; a moved shard then waits at most a look at the lease (250 ms) beyond the \
             polling interval. Released with no owner (hand-offs off), it waits for the other \
             workers' next scan, up to F/3 more. In a KCL 3.x fleet the stopping worker passes its \
             leases to live workers, which find them within a second."
                .into(),
            "Balance by hand-off: the old owner's processor checkpoints before the new owner starts, so \
             a moved shard repeats nothing. Both protocols move leases that way by default; a \
             leaderless steal with hand-offs off (`graceful_lease_handoff_enabled = false`, as before \
             hand-offs) starts the new owner from the last checkpoint while the old owner may still \
             be processing."
                .into(),
        ],
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
