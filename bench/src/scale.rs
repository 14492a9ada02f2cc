//! Section 7: a 10,000-shard stream. Shard sync CPU with thousands of closed ancestors, a new
//! application's first record and balance with 1, 10 and 50 workers, steady-state lease-table
//! requests and memory per held lease.
//!
//! All on the in-memory backends: [`InMemoryStream`] and [`InMemoryLeaseStore`] with a fixed
//! latency on every lease-table call (tokio time, paused), so that sequential round trips cost
//! what they would cost against DynamoDB.

use crate::cluster::{paused_runtime, Cluster, ClusterSpec};
use crate::counting::get;
use crate::measure::thread_cpu;
use crate::report::{Goal, Section, Table};
use crate::stats::{kib, sig};
use crate::Scale;
use kinesis_client::retrieval::StreamClient;
use kinesis_client::testing::{sync_shards, InMemoryLeaseStore, InMemoryStream};
use kinesis_client::InitialPosition;
use std::time::Duration;
use tokio::time::Instant;

/// Latency of every lease-table call in the fleet runs (a typical DynamoDB round trip).
pub const STORE_LATENCY: Duration = Duration::from_millis(5);
/// Lease-table requests per idle lease per minute of the Java KCL, measured at the default
/// settings (F = 10 s): the bound this library holds itself to.
pub const JAVA_MEASURED_IDLE: f64 = 20.7;
/// The failover time of the fleet runs (the default).
pub const F: Duration = Duration::from_secs(10);

/// A stream of `open` open shards of which `closed` descend from a split: `open − closed`
/// roots, `closed` of them split in two.
fn stream_with_ancestors(open: usize, closed: usize) -> InMemoryStream {
    let stream = InMemoryStream::new("scale", open - closed);
    for shard in stream.shards().iter().take(closed) {
        let r = shard.hash_key_range;
        stream
            .split(&shard.shard_id, r.start + (r.end - r.start) / 2)
            .expect("split");
    }
    stream
}

/// One shard-sync measurement: CPU of `sync_shards` on a new application (empty table) and
/// again at steady state (every shard leased, nothing to create).
struct SyncCost {
    open: usize,
    closed: usize,
    created: usize,
    new_app: Duration,
    steady: Duration,
}

fn sync_cost(open: usize, closed: usize) -> SyncCost {
    let stream = stream_with_ancestors(open, closed);
    let store = InMemoryLeaseStore::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let _ = stream.list_shards().await;
        let t0 = thread_cpu();
        let created = sync_shards(&stream, &store, InitialPosition::TrimHorizon)
            .await
            .expect("sync");
        let new_app = thread_cpu() - t0;
        let t1 = thread_cpu();
        let again = sync_shards(&stream, &store, InitialPosition::TrimHorizon)
            .await
            .expect("sync");
        assert_eq!(again, 0);
        let steady = thread_cpu() - t1;
        SyncCost {
            open,
            closed,
            created,
            new_app,
            steady,
        }
    })
}

/// A new application of `shards` shards and `workers` workers started together.
struct Fleet {
    workers: usize,
    first_record: Option<Duration>,
    balanced: Option<Duration>,
    requests_per_lease_minute: Option<(f64, f64, f64)>,
    /// Calls per lease per minute by lease-store method (those made at all).
    by_method: Vec<(&'static str, f64)>,
}

fn fleet(workers: usize, shards: usize, window: Duration, records: bool, pages: usize) -> Fleet {
    paused_runtime().block_on(async move {
        let start = Instant::now();
        let cluster = Cluster::start(ClusterSpec {
            workers,
            shards,
            failover_time: F,
            put_every: records.then_some(Duration::from_secs(1)),
            seed: 7,
            count_calls: true,
            store_latency: Some(STORE_LATENCY),
            fleet: Default::default(),
            records_per_put: Vec::new(),
            strategy: Default::default(),
        });
        let mut first_record = None;
        let mut balanced = None;
        let deadline = start + F * 30;
        while Instant::now() < deadline
            && ((records && first_record.is_none()) || balanced.is_none())
        {
            if first_record.is_none() && !cluster.log.lock().unwrap().is_empty() {
                first_record = Some(start.elapsed());
            }
            if balanced.is_none() && cluster.balanced() {
                balanced = Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut by_method = Vec::new();
        let requests_per_lease_minute = if balanced.is_some() && !window.is_zero() {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let counting = cluster.counting.clone().expect("counting store");
            let before = counting.hooks().counts();
            tokio::time::sleep(window).await;
            let after = counting.hooks().counts();
            let d = crate::counting::diff(&after, &before);
            let per = |m: &str| get(&d, m) as f64 / shards as f64 / (window.as_secs_f64() / 60.0);
            // One in-memory `list_leases` is a whole table; DynamoDB reads it in `pages` pages.
            let scans = per("list_leases") * pages as f64;
            by_method = crate::counting::METHODS
                .iter()
                .map(|m| (*m, per(m)))
                .filter(|(_, n)| *n > 0.0)
                .collect();
            let total: u64 = d.iter().sum();
            let total = total as f64 / shards as f64 / (window.as_secs_f64() / 60.0)
                - per("list_leases")
                + scans;
            Some((per("renew_lease"), scans, total))
        } else {
            None
        };
        Fleet {
            workers,
            first_record,
            balanced,
            requests_per_lease_minute,
            by_method,
        }
    })
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| format!("not within {} s", (F * 30).as_secs()))
}

/// Run section 7.
pub fn section(scale: Scale) -> Section {
    let started = std::time::Instant::now();
    // Idle fleets are (workers, shards).
    type Sizes = (Vec<(usize, usize)>, usize, Vec<(usize, usize)>, Duration);
    let (sync_sizes, shards, idle, window): Sizes = match scale {
        Scale::Tiny => (
            vec![(100, 30)],
            100,
            vec![(1, 100), (3, 100)],
            Duration::ZERO,
        ),
        Scale::Quick => (
            vec![(1_000, 300), (10_000, 3_000)],
            1_000,
            vec![(10, 1_000)],
            Duration::from_secs(60),
        ),
        Scale::Full => (
            vec![
                (1_000, 300),
                (5_000, 1_500),
                (10_000, 3_000),
                (20_000, 6_000),
                (100_000, 30_000),
            ],
            10_000,
            vec![
                (1, 10_000),
                (10, 10_000),
                (50, 10_000),
                (10, 100_000),
                (50, 100_000),
            ],
            Duration::from_secs(120),
        ),
    };
    let mut sync = Table::new([
        "open shards",
        "closed ancestors",
        "leases created",
        "CPU, new application",
        "CPU per shard",
        "CPU, steady state (nothing to create)",
        "CPU per shard",
    ]);
    let mut sync_ok = true;
    let mut per_shard = Vec::new();
    for (open, closed) in sync_sizes {
        let c = sync_cost(open, closed);
        let n = (c.open + c.closed) as f64;
        let (a, b) = (c.new_app.as_secs_f64(), c.steady.as_secs_f64());
        per_shard.push(a / n);
        if c.open == 10_000 && (a >= 0.5 || b >= 0.5) {
            sync_ok = false;
        }
        sync.row([
            c.open.to_string(),
            c.closed.to_string(),
            c.created.to_string(),
            format!("{} ms", sig(a * 1e3)),
            format!("{} µs", sig(a / n * 1e6)),
            format!("{} ms", sig(b * 1e3)),
            format!("{} µs", sig(b / n * 1e6)),
        ]);
    }
    let mut fleets = Table::new([
        "workers",
        "shards",
        "records",
        "first record delivered",
        "all balanced",
        "renewals / lease / min",
        "scans / lease / min",
        "all requests / lease / min",
        "Java KCL 2.x (formula), idle",
    ]);
    let mut fleet_notes = Vec::new();
    let mut first_ok = true;
    let mut balance_ok = true;
    let mut cost_ok = true;
    let mut worst_over_formula = f64::MIN;
    let pages_of = |shards: usize| {
        (shards * crate::counting::item_size(&crate::lease_cost::typical_lease()))
            .div_ceil(crate::lease_cost::SCAN_PAGE_BYTES)
    };
    let runs: Vec<(usize, usize, bool)> = std::iter::once((1, shards, true))
        .chain(idle.iter().map(|&(w, l)| (w, l, false)))
        .collect();
    for (w, shards, records) in runs {
        let pages = pages_of(shards);
        let f = fleet(
            w,
            shards,
            if records { Duration::ZERO } else { window },
            records,
            pages,
        );
        if records && f.first_record.is_none_or(|d| d > Duration::from_secs(5)) {
            first_ok = false;
        }
        if f.balanced.is_none_or(|d| d > F * 3) {
            balance_ok = false;
        }
        let (jr, js) = crate::lease_cost::java(F, w, shards, pages);
        let (r, s, t) = match f.requests_per_lease_minute {
            Some((r, s, t)) => {
                worst_over_formula = worst_over_formula.max(t / (jr + js) - 1.0);
                if t > JAVA_MEASURED_IDLE {
                    cost_ok = false;
                }
                (sig(r), sig(s), sig(t))
            }
            None => ("—".into(), "—".into(), "—".into()),
        };
        fleets.row([
            f.workers.to_string(),
            shards.to_string(),
            if records {
                "1 per shard per second"
            } else {
                "none (idle)"
            }
            .to_string(),
            if records {
                opt_secs(f.first_record)
            } else {
                "—".into()
            },
            opt_secs(f.balanced),
            r,
            s,
            t,
            if records { "—".into() } else { sig(jr + js) },
        ]);
        if !f.by_method.is_empty() {
            let calls: Vec<String> = f
                .by_method
                .iter()
                .map(|(m, n)| format!("`{m}` {}", sig(*n)))
                .collect();
            fleet_notes.push(format!(
                "{} workers on {shards} shards, idle: lease-store calls per lease per minute: {}.",
                f.workers,
                calls.join(", ")
            ));
        }
        if f.balanced.is_none() {
            fleet_notes.push(format!("{} workers: not balanced within 30 F.", f.workers));
        }
    }
    let mut memory = Table::new(["leases held", "worker RSS above baseline", "per lease"]);
    let mut memory_ok = true;
    if scale != Scale::Tiny {
        let leases = if scale == Scale::Full { 10_000 } else { 2_000 };
        let exe = std::env::current_exe().expect("own executable");
        match crate::footprint::measure(&exe, leases, false, Duration::from_secs(20)) {
            Ok(fp) => {
                let per = fp.worker() / leases as f64;
                memory_ok = per <= crate::footprint::GOAL_PER_LEASE;
                memory.row([leases.to_string(), kib(fp.worker()), kib(per)]);
            }
            Err(e) => {
                memory_ok = false;
                fleet_notes.push(format!("memory: {e:#}"));
            }
        }
    }
    let linear = per_shard.len() < 2
        || per_shard.iter().cloned().fold(f64::MIN, f64::max)
            <= 3.0 * per_shard.iter().cloned().fold(f64::MAX, f64::min);
    let mut met = Vec::new();
    let mut missed = Vec::new();
    let mut judge = |ok: bool, what: &str| {
        if ok {
            met.push(what.to_string())
        } else {
            missed.push(what.to_string())
        }
    };
    judge(sync_ok, "shard sync of 10,000 shards under 0.5 s of CPU");
    judge(
        linear,
        "shard sync CPU per shard flat across sizes (linear)",
    );
    judge(first_ok, "first record within 5 s for one worker");
    judge(balance_ok, "every fleet balanced within 3 F");
    judge(memory_ok, "≤ 64 KiB per held lease");
    judge(
        cost_ok,
        &format!(
            "idle requests per lease per minute no more than the Java KCL's measured {JAVA_MEASURED_IDLE} \
             (against Java 2.x's formula, which leaves out what Java sends beyond renewals and \
             scans, at most {:+.1} %: each worker here scans every F/3 instead of every 2F, \
             the price of the faster failover)",
            worst_over_formula.max(0.0) * 100.0
        ),
    );
    let goal = if missed.is_empty() {
        Goal::Met(met.join("; "))
    } else {
        Goal::Missed(format!(
            "missed: {}; met: {}",
            missed.join("; "),
            met.join("; ")
        ))
    };
    Section {
        number: 7,
        title: "Scale: a 10,000-shard stream".into(),
        method: format!(
            "Shard sync: `sync_shards` at `TRIM_HORIZON` on an `InMemoryStream` whose open shards \
             include the children of split shards (closed ancestors), over an `InMemoryLeaseStore`; \
             CPU time of the calling thread, first on an empty lease table (a new application: every \
             lease created), then again with every shard leased (the periodic sync at steady state). \
             Fleets: W workers started together on a new application of L shards (no closed shards), \
             default settings (F = 10 s), every lease-table call taking {} ms of (paused) tokio time; \
             the first row puts one record per shard every second, the others none. *First record*: from \
             the start until any processor gets a record. *All balanced*: every lease owned, every worker holding ⌊L/W⌋ or ⌈L/W⌉. Requests \
             are counted over {} simulated minutes starting one minute after the balance; a scan counts \
             as the DynamoDB Scan pages a table of L leases takes (1 MB each: {} at 10,000 leases), as in Java's column.",
            STORE_LATENCY.as_millis(),
            window.as_secs() / 60,
            pages_of(10_000),
        ),
        tables: if memory.rows.is_empty() { vec![sync, fleets] } else { vec![sync, fleets, memory] },
        goal,
        notes: fleet_notes,
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
