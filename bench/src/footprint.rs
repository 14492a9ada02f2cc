//! Section 2: resident memory of a worker holding 1, 100 and 1 000 leases, idle and under load.
//!
//! Each measurement runs in a fresh child process (this binary re-executed with the hidden
//! first argument `__footprint`), so that no allocator state carries over between sizes. The
//! child runs one [`kinesis_client::Scheduler`] on a multi-thread runtime in real time, with default
//! settings, an [`InMemoryLeaseStore`] and a [`SyntheticStream`] (which stores nothing, so
//! the stream's contents do not count as the worker's memory). It creates the leases, reads
//! its RSS (the *baseline*: runtime, binary, lease table), starts the worker, waits until it
//! holds every lease, lets it run for a while, and reports the highest `VmRSS` seen over the
//! second half of that time.

use crate::measure::{self_rss, status_field};
use crate::noop::NoopProcessor;
use crate::report::{Goal, Section, Table};
use crate::stats::{kib, mib};
use crate::synthetic::SyntheticStream;
use crate::Scale;
use anyhow::{bail, Context, Result};
use kinesis_client::testing::{sync_shards, InMemoryLeaseStore};
use kinesis_client::{Config, InitialPosition, Scheduler, StreamRef};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ARG: &str = "__footprint";
/// Records per GetRecords under load (100 bytes each; one read per shard every 1.5 s).
pub const LOAD_RECORDS_PER_READ: usize = 100;
/// The goal per idle lease.
pub const GOAL_PER_LEASE: f64 = 64.0 * 1024.0;
/// The goal for a worker.
pub const GOAL_WORKER: f64 = 30.0 * 1024.0 * 1024.0;

/// True when this process is a footprint child.
pub fn is_child_invocation() -> bool {
    std::env::args().nth(1).as_deref() == Some(CHILD_ARG)
}

/// What a child reports.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Leases held.
    pub leases: usize,
    /// Records flowing.
    pub load: bool,
    /// RSS before the worker started (runtime, binary, lease table), bytes.
    pub baseline: u64,
    /// Highest RSS at steady state, bytes.
    pub rss: u64,
    /// Peak RSS of the process (`VmHWM`), bytes.
    pub peak: u64,
    /// Threads of the process.
    pub threads: u64,
}

impl Footprint {
    /// RSS above the baseline: the worker's own memory.
    pub fn worker(&self) -> f64 {
        self.rss as f64 - self.baseline as f64
    }
}

/// The child: `kcl-bench __footprint <leases> <idle|load> <seconds>`.
pub fn child_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [leases, mode, secs] = args.as_slice() else {
        bail!("usage: kcl-bench {CHILD_ARG} <leases> <idle|load> <seconds>");
    };
    let leases: usize = leases.parse().context("leases")?;
    let load = mode == "load";
    let steady = Duration::from_secs(secs.parse().context("seconds")?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let f = rt.block_on(child(leases, load, steady))?;
    println!(
        "FOOTPRINT baseline={} rss={} peak={} threads={}",
        f.baseline, f.rss, f.peak, f.threads
    );
    // Exit at once: a graceful shutdown is not part of the measurement.
    std::process::exit(0);
}

async fn child(leases: usize, load: bool, steady: Duration) -> Result<Footprint> {
    let per_read = if load { LOAD_RECORDS_PER_READ } else { 0 };
    let stream = Arc::new(SyntheticStream::new(leases, per_read, 100));
    let store = InMemoryLeaseStore::new();
    sync_shards(stream.as_ref(), &store, InitialPosition::TrimHorizon)
        .await
        .context("creating the leases")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = self_rss();
    let config = Config::builder("footprint", StreamRef::Name("synthetic".into()))
        .worker_id("footprint-worker")
        .initial_position(InitialPosition::TrimHorizon)
        .build()?;
    let hook: crate::noop::BatchHook = Arc::new(|_: &str, _: &[kinesis_client::Record]| {});
    let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
    let scheduler = Scheduler::new(config, factory, stream, Arc::new(store));
    let handle = scheduler.handle();
    tokio::spawn(async move {
        let _ = scheduler.run(std::future::pending()).await;
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while handle.held_shards().len() < leases {
        if Instant::now() > deadline {
            bail!(
                "the worker holds only {} of {leases} leases after 120 s",
                handle.held_shards().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(steady / 2).await;
    let mut rss = 0;
    let end = Instant::now() + steady / 2;
    while Instant::now() < end {
        rss = rss.max(self_rss());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Footprint {
        leases,
        load,
        baseline,
        rss,
        peak: status_field(None, "VmHWM").unwrap_or(0),
        threads: status_field(None, "Threads").map_or(0, |t| t / 1024),
    })
}

/// Run one child (`exe` is this benchmark binary).
pub fn measure(
    exe: &std::path::Path,
    leases: usize,
    load: bool,
    steady: Duration,
) -> Result<Footprint> {
    let out = Command::new(exe)
        .args([
            CHILD_ARG,
            &leases.to_string(),
            if load { "load" } else { "idle" },
            &steady.as_secs().to_string(),
        ])
        .output()
        .context("starting the footprint child")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("FOOTPRINT "))
        .with_context(|| {
            format!(
                "footprint child ({leases} leases) failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in {line:?}"))?
            .parse()
            .with_context(|| format!("bad {name} in {line:?}"))
    };
    Ok(Footprint {
        leases,
        load,
        baseline: field("baseline")?,
        rss: field("rss")?,
        peak: field("peak")?,
        threads: field("threads")?,
    })
}

/// Run section 2.
pub fn section(scale: Scale) -> Section {
    let started = Instant::now();
    let (sizes, steady): (Vec<usize>, Duration) = match scale {
        Scale::Tiny => (vec![1, 10], Duration::from_secs(2)),
        Scale::Quick => (vec![1, 100, 1000], Duration::from_secs(6)),
        Scale::Full => (vec![1, 100, 1000], Duration::from_secs(20)),
    };
    let exe = std::env::current_exe().expect("own path");
    let mut table = Table::new([
        "leases",
        "state",
        "process RSS",
        "baseline (no worker)",
        "worker (RSS − baseline)",
        "per lease (vs 1 lease)",
        "peak RSS",
    ]);
    let mut results: Vec<Footprint> = Vec::new();
    let mut errors = Vec::new();
    for load in [false, true] {
        for &l in &sizes {
            match measure(&exe, l, load, steady) {
                Ok(f) => results.push(f),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    let one = |load: bool| {
        results
            .iter()
            .find(|f| f.leases == 1 && f.load == load)
            .copied()
    };
    let per_lease = |f: &Footprint| -> Option<f64> {
        let base = one(f.load)?;
        (f.leases > 1).then(|| (f.worker() - base.worker()) / (f.leases - 1) as f64)
    };
    for f in &results {
        table.row([
            crate::stats::count(f.leases as u64),
            if f.load {
                format!("load ({LOAD_RECORDS_PER_READ} × 100 B per read)")
            } else {
                "idle".to_string()
            },
            mib(f.rss as f64),
            mib(f.baseline as f64),
            mib(f.worker()),
            per_lease(f).map_or("–".into(), kib),
            mib(f.peak as f64),
        ]);
    }
    let largest = sizes.iter().copied().max().unwrap_or(1);
    let idle_per_lease = results
        .iter()
        .find(|f| f.leases == largest && !f.load)
        .and_then(per_lease);
    let max_rss = results.iter().map(|f| f.rss).max().unwrap_or(0) as f64;
    let goal = match idle_per_lease {
        Some(p) if errors.is_empty() => {
            let text = format!(
                "{} per idle lease (goal < 64 KiB); the largest process RSS is {} (goal < 30 MB).",
                kib(p),
                mib(max_rss)
            );
            if p < GOAL_PER_LEASE && max_rss < GOAL_WORKER {
                Goal::Met(text)
            } else {
                Goal::Missed(text)
            }
        }
        _ => Goal::Missed(format!(
            "not all sizes could be measured: {}",
            errors.join("; ")
        )),
    };
    Section {
        number: 2,
        title: "Footprint".into(),
        method: format!(
            "Each row is a fresh child process (this binary re-executed) running one worker \
             (`Scheduler`, default settings: F = 10 s, reads every 1.5 s) on a multi-thread runtime \
             ({} worker threads, one per CPU) in real time, with an `InMemoryLeaseStore` and a synthetic stream that \
             stores nothing (each read makes up its records), so neither Kinesis' nor DynamoDB's data \
             is counted as the worker's. **baseline** = RSS after the leases were created and before the \
             worker started; the worker then takes every lease and runs for {} s; **process RSS** is the \
             highest `VmRSS` over the last half of that. *Idle*: reads return no records. *Load*: every \
             read returns {LOAD_RECORDS_PER_READ} records of 100 B (≈ 67 records/s per shard; 67 000/s \
             at 1 000 shards), checkpointed every batch. **per lease** = (worker(L) − worker(1)) / (L − 1).",
            crate::machine::cpus(),
            steady.as_secs()
        ),
        tables: vec![table],
        goal,
        notes: vec![
            "What a held lease costs: its slot in the coordinator (lease copy, tenure, lock), the \
             scheduler's bookkeeping, one consumer task with its processor and checkpointer, one fetcher \
             task with its bounded channel (up to 3 batches ahead), and the taker's observation of the \
             lease. Under load the batches in flight add to that. A worker on the AWS SDK clients adds \
             the clients' connection pools and TLS state (see section 5 for the daemon's RSS)."
                .into(),
        ],
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
