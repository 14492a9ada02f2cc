//! Section 1: pipeline throughput on the in-memory stream.
//!
//! One worker ([`kinesis_client::Scheduler`]) on a current-thread runtime with paused time reads a stream
//! pre-loaded with `records` records spread evenly over `shards` shards, delivers them to the
//! [`NoopProcessor`], which checkpoints every batch, and stops when all were delivered. Paused
//! time makes the pacing between reads (`idle_time_between_reads`, 200 ms) free, so the
//! measurement is the CPU cost of the library itself: the runtime is single-threaded, and the
//! thread's CPU clock is read when the scheduler starts and when the last record is delivered.
//! Pre-loading the stream is not measured.

use crate::measure::thread_cpu;
use crate::noop::{Countdown, NoopProcessor};
use crate::report::{Goal, Section, Table};
use crate::stats::{count, rate, sig};
use crate::Scale;
use kinesis_client::testing::{InMemoryLeaseStore, InMemoryStream};
use kinesis_client::StreamRef;
use kinesis_client::{Config, InitialPosition, Scheduler};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured run.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// Shards of the stream.
    pub shards: usize,
    /// Payload bytes per record.
    pub record_size: usize,
    /// Records delivered.
    pub records: u64,
    /// CPU time from the scheduler's start to the last delivery.
    pub cpu: Duration,
    /// Wall-clock time of the same.
    pub wall: Duration,
    /// CPU time until the first record was delivered (start-up: lease table, shard sync,
    /// taking every lease, starting the consumers).
    pub startup_cpu: Duration,
}

impl PipelineRun {
    /// CPU nanoseconds per record.
    pub fn cpu_ns_per_record(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.records as f64
    }

    /// Records per CPU second (= records/s on one fully used core).
    pub fn records_per_cpu_second(&self) -> f64 {
        self.records as f64 / self.cpu.as_secs_f64()
    }
}

/// The first hash key of shard `i` of `n` (as [`InMemoryStream::new`] splits the key space).
fn shard_hash(i: usize, n: usize) -> u128 {
    (u128::MAX / n as u128) * i as u128
}

/// For profiling the measured part alone: with `KCL_BENCH_PERF_CTL` naming the control FIFO
/// of `perf record --control=fifo:FIFO -D -1`, the profile covers what the run measures: from
/// the scheduler's start to the last delivery (not pre-loading the stream, not shutting down).
/// Only the measured run of a [`row`] is profiled (not its warm-up run).
fn perf_control(command: &str) {
    use std::io::Write;
    if !PROFILE.load(Ordering::Relaxed) {
        return;
    }
    if let Some(fifo) = std::env::var_os("KCL_BENCH_PERF_CTL") {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo)
            .expect("KCL_BENCH_PERF_CTL names perf's control FIFO");
        writeln!(f, "{command}").expect("perf's control FIFO accepts the command");
    }
}

/// Set while the measured run of a [`row`] runs (see [`perf_control`]).
static PROFILE: AtomicBool = AtomicBool::new(false);

/// One row of the table: a warm-up run of a tenth of the size (so that the measured run does
/// not pay for first-touch page faults of the allocator's arenas), then the measured run.
pub fn row(shards: usize, record_size: usize, records: u64) -> PipelineRun {
    let _ = run(shards, record_size, (records / 10).max(shards as u64));
    profiled(|| run(shards, record_size, records))
}

/// `measured` with the profile of [`perf_control`] on.
pub fn profiled(measured: impl FnOnce() -> PipelineRun) -> PipelineRun {
    PROFILE.store(true, Ordering::Relaxed);
    let r = measured();
    PROFILE.store(false, Ordering::Relaxed);
    r
}

/// Run the pipeline once.
pub fn run(shards: usize, record_size: usize, records: u64) -> PipelineRun {
    run_with(shards, record_size, records, None)
}

/// Run the pipeline once, recording the library's metrics into `recorder` (the runtime is
/// single-threaded: every task records into it).
pub fn run_with(
    shards: usize,
    record_size: usize,
    records: u64,
    recorder: Option<&dyn metrics::Recorder>,
) -> PipelineRun {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let _guard = recorder.map(metrics::set_default_local_recorder);
    rt.block_on(async move {
        let stream = InMemoryStream::new("bench", shards);
        stream.set_read_limit(None);
        let payload = vec![b'x'; record_size];
        let keys: Vec<String> = (0..shards).map(|i| format!("pk-{i}")).collect();
        // Shard by shard, so that each shard's stored records lie together in memory (as a
        // GetRecords response's records do): put round-robin, a shard's consecutive records
        // would lie `shards` records apart and every read would miss the cache for each one.
        for (s, key) in keys.iter().enumerate() {
            let n = records as usize / shards + usize::from(s < records as usize % shards);
            for _ in 0..n {
                stream.put_with_hash(shard_hash(s, shards), key, &payload);
            }
        }
        let store = InMemoryLeaseStore::new();
        let config = Config::builder("bench", StreamRef::Name("bench".into()))
            .worker_id("bench-worker")
            .initial_position(InitialPosition::TrimHorizon)
            .max_records(10_000)
            .idle_time_between_reads(Duration::from_millis(200))
            .rng_seed(Some(1))
            .build()
            .expect("config");
        let first = Countdown::new(1, thread_cpu);
        let done = Countdown::new(records, || {
            let at = (thread_cpu(), Instant::now());
            perf_control("disable");
            at
        });
        let hook = {
            let (first, done) = (first.clone(), done.clone());
            Arc::new(move |_: &str, r: &[kinesis_client::Record]| {
                first.add(r.len() as u64);
                done.add(r.len() as u64);
            })
        };
        let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
        let scheduler = Scheduler::new(config, factory, Arc::new(stream), Arc::new(store));
        perf_control("enable");
        let (cpu0, wall0) = (thread_cpu(), Instant::now());
        let waiter = done.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let at = waiter.wait().await;
            let _ = tx.send(at);
        };
        scheduler.run(stop).await.expect("scheduler runs");
        let (cpu1, wall1) = rx.await.expect("target reached");
        let startup = first.wait().await;
        PipelineRun {
            shards,
            record_size,
            records: done.processed(),
            cpu: cpu1 - cpu0,
            wall: wall1 - wall0,
            startup_cpu: startup - cpu0,
        }
    })
}

/// (shard counts, (record size, records) pairs) for a scale.
fn plan(scale: Scale) -> (Vec<usize>, Vec<(usize, u64)>) {
    match scale {
        Scale::Tiny => (vec![1, 4], vec![(100, 2_000)]),
        Scale::Quick => (vec![1, 64, 1024], vec![(100, 50_000), (1024, 20_000)]),
        Scale::Full => (vec![1, 64, 1024], vec![(100, 1_000_000), (1024, 250_000)]),
    }
}

/// The goal: one million 100-byte records per second on one core.
pub const GOAL_RECORDS_PER_SECOND: f64 = 1_000_000.0;

/// Run section 1.
pub fn section(scale: Scale) -> Section {
    let started = Instant::now();
    let (shard_counts, sizes) = plan(scale);
    let mut table = Table::new([
        "shards",
        "record size",
        "records",
        "CPU ns / record",
        "records / CPU s",
        "CPU until the first delivery",
        "wall time",
    ]);
    let mut runs = Vec::new();
    for &(size, records) in &sizes {
        for &shards in &shard_counts {
            let r = row(shards, size, records);
            table.row([
                count(shards as u64),
                if size >= 1024 {
                    format!("{} KiB", size / 1024)
                } else {
                    format!("{size} B")
                },
                count(r.records),
                sig(r.cpu_ns_per_record()),
                rate(r.records_per_cpu_second()),
                format!("{} ms", sig(r.startup_cpu.as_secs_f64() * 1000.0)),
                format!("{:.2} s", r.wall.as_secs_f64()),
            ]);
            runs.push(r);
        }
    }
    let small: Vec<&PipelineRun> = runs.iter().filter(|r| r.record_size == 100).collect();
    let best_single = small
        .iter()
        .filter(|r| r.shards == 1)
        .map(|r| r.records_per_cpu_second())
        .fold(0.0, f64::max);
    let worst = small
        .iter()
        .map(|r| (r.shards, r.records_per_cpu_second()))
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let goal = if small
        .iter()
        .all(|r| r.records_per_cpu_second() >= GOAL_RECORDS_PER_SECOND)
    {
        Goal::Met(format!(
            "100-byte records: at least {} records per CPU second at every shard count (lowest: {} at {} shards; 1 shard: {}).",
            rate(GOAL_RECORDS_PER_SECOND),
            rate(worst.1),
            worst.0,
            rate(best_single)
        ))
    } else {
        Goal::Missed(format!(
            "100-byte records reach {} records per CPU second at 1 shard but only {} at {} shards (goal {}).",
            rate(best_single),
            rate(worst.1),
            worst.0,
            rate(GOAL_RECORDS_PER_SECOND)
        ))
    };
    Section {
        number: 1,
        title: "Pipeline throughput (in-memory stream)".into(),
        method: "One worker (`Scheduler`) on a current-thread tokio runtime with paused time reads a pre-loaded \
            `InMemoryStream` (records spread evenly over the shards and loaded shard by shard, so that each \
            shard's records lie together in memory as a GetRecords response's do; read limit off, `max_records` 10 000, \
            `idle_time_between_reads` 200 ms, which paused time makes free), delivers every batch to a no-op \
            processor that checkpoints each batch (`InMemoryLeaseStore`), and stops when every record was \
            delivered. **CPU ns / record** = the runtime thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) from \
            the scheduler's start to the last delivery, divided by the records; it includes start-up \
            (lease table, shard sync, taking every lease, starting one consumer per shard, the first reads), \
            shown separately as **CPU until the first delivery**. **records / CPU s** is the throughput of one fully used core. Each run is \
            preceded by an unmeasured warm-up run of a tenth of the size.".into(),
        tables: vec![table],
        goal,
        notes: vec![format!(
            "What a record costs here: the in-memory stream hands out each record with its payload shared (as \
             the Kinesis client hands through the buffer the SDK decoded) and its partition key and sequence \
             number copied, the fetcher filters and forwards the batch through a bounded channel, the consumer \
             shares the batch with the processor (nothing is copied to keep it for redelivery), and each batch \
             costs one checkpoint (a conditional write to the in-memory lease table). With many shards, \
             more records are in flight at once, and memory, not per-batch work, makes the difference: \
             every shard's consumer reads ahead before the first batch is processed (at 1 024 shards each \
             shard holds only ~{} of the {} records, so one read takes a shard's whole backlog), so the \
             records in flight are first-touch memory when they are made (page faults: about a third of a \
             1 024-shard run's profile) and out of the cache when they are dropped. (Loaded round-robin \
             instead, a shard's consecutive records would lie `shards` records apart in the stand-in's \
             memory and each read would miss the cache once per record: at 64 shards that doubles the \
             figure, a cost of the stand-in that the Kinesis client does not have; see \"Library \
             changes\".)",
            count(sizes[0].1 / 1024),
            count(sizes[0].1)
        )],
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
