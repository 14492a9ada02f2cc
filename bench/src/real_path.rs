//! Section 12: throughput on the real path, against the stand-in Kinesis ([`crate::standin`]).
//!
//! Section 1 measures the library on an in-memory stream; section 6 on kinesis-local, which is
//! the limit there. Here a consumer reads a pre-loaded stream from [`Standin`] over HTTP (the
//! SDK's client, its decoding, the library's Kinesis client), with its lease table in
//! DynamoDB Local and a no-op processor that checkpoints every batch, from TRIM_HORIZON to the
//! last record. The consumer runs as a child process (so its CPU and memory are its own); the
//! stand-in runs in this process on a thread of its own, whose CPU clock says what the stand-in
//! cost, to show that it is not the limit.
//!
//! The consumers are a [`ConsumerKind`]: this library only, for now; the Java KCL's rows can be
//! added as further kinds (a command that reads the stream and prints the same report line).

use crate::measure::{pid_cpu, process_cpu, self_rss, status_field};
use crate::noop::{BatchHook, Countdown, NoopProcessor};
use crate::report::{Goal, Section, Table};
use crate::services::Services;
use crate::standin::{self, Format, Standin, StandinStats, StreamSpec};
use crate::stats::{mib, percentile, rate, sig};
use crate::Scale;
use anyhow::{bail, Context, Result};
use kinesis_client::lease::DynamoDbLeaseStore;
use kinesis_client::retrieval::{KinesisStreamClient, StreamRef};
use kinesis_client::{Config, InitialPosition, Scheduler};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ARG: &str = "__realpath";
/// The read interval of every consumer: the library's floor (Kinesis allows 5 reads a second
/// per shard), so that reading is as fast as the consumer goes.
const READ_INTERVAL: Duration = Duration::from_millis(200);

/// Whether this process is a consumer child (`kcl-bench __realpath ...`).
pub fn is_child_invocation() -> bool {
    std::env::args().nth(1).as_deref() == Some(CHILD_ARG)
}

/// A consumer whose throughput the section measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerKind {
    /// This library (`Scheduler` on the AWS SDK for Rust), as a `kcl-bench __realpath` child.
    RustLibrary,
}

impl ConsumerKind {
    /// Every kind, in table order.
    pub const ALL: [ConsumerKind; 1] = [ConsumerKind::RustLibrary];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            ConsumerKind::RustLibrary => "this library (AWS SDK for Rust)",
        }
    }

    /// The wire format its SDK speaks (the stand-in encodes the records in it up front).
    pub fn format(self) -> Format {
        match self {
            ConsumerKind::RustLibrary => Format::Json,
        }
    }

    /// The command that consumes `total` records of `stream` and prints a [`REPORT`] line.
    fn command(self, kinesis: &str, dynamodb: &str, stream: &str, total: u64) -> Result<Command> {
        match self {
            ConsumerKind::RustLibrary => {
                let mut c = Command::new(std::env::current_exe().context("own path")?);
                c.args([CHILD_ARG, kinesis, dynamodb, stream, &total.to_string()]);
                Ok(c)
            }
        }
    }
}

/// The line a consumer child prints when it has every record.
const REPORT: &str = "REALPATH";

/// What a consumer child reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumerReport {
    /// Records delivered to the processor.
    pub records: u64,
    /// Records delivered in the first batch.
    pub first_batch: u64,
    /// CPU of the whole process from the scheduler's start to the last record.
    pub cpu: Duration,
    /// CPU from the first delivery to the last.
    pub steady_cpu: Duration,
    /// Wall-clock time from the first delivery to the last.
    pub steady_wall: Duration,
    /// Highest resident memory (`VmHWM`), bytes.
    pub peak_rss: u64,
}

impl ConsumerReport {
    fn line(&self) -> String {
        format!(
            "{REPORT} records={} first_batch={} cpu_ns={} steady_cpu_ns={} steady_wall_ns={} peak_rss={}",
            self.records,
            self.first_batch,
            self.cpu.as_nanos(),
            self.steady_cpu.as_nanos(),
            self.steady_wall.as_nanos(),
            self.peak_rss
        )
    }

    fn parse(line: &str) -> Result<ConsumerReport> {
        let field = |name: &str| -> Result<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name} in {line:?}"))?
                .parse()
                .with_context(|| format!("bad {name} in {line:?}"))
        };
        Ok(ConsumerReport {
            records: field("records")?,
            first_batch: field("first_batch")?,
            cpu: Duration::from_nanos(field("cpu_ns")?),
            steady_cpu: Duration::from_nanos(field("steady_cpu_ns")?),
            steady_wall: Duration::from_nanos(field("steady_wall_ns")?),
            peak_rss: field("peak_rss")?,
        })
    }

    /// Records per CPU second over the whole run (start-up, lease table and leases included).
    pub fn records_per_cpu_second(&self) -> f64 {
        self.records as f64 / self.cpu.as_secs_f64().max(1e-9)
    }

    /// Records per CPU second from the first delivery to the last.
    pub fn steady_records_per_cpu_second(&self) -> f64 {
        (self.records - self.first_batch) as f64 / self.steady_cpu.as_secs_f64().max(1e-9)
    }
}

/// The child: `kcl-bench __realpath KINESIS_ENDPOINT DYNAMODB_ENDPOINT STREAM RECORDS`.
pub fn child_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [kinesis, dynamodb, stream, total] = args.as_slice() else {
        bail!("usage: kcl-bench {CHILD_ARG} KINESIS_ENDPOINT DYNAMODB_ENDPOINT STREAM RECORDS");
    };
    let total: u64 = total.parse().context("RECORDS")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(consume(kinesis, dynamodb, stream, total))?;
    println!("{}", report.line());
    // Exit at once: shutting down is not part of the measurement.
    std::process::exit(0);
}

async fn consume(
    kinesis: &str,
    dynamodb: &str,
    stream: &str,
    total: u64,
) -> Result<ConsumerReport> {
    let cpu0 = process_cpu();
    let config = Config::builder(format!("{stream}-app"), StreamRef::Name(stream.into()))
        .worker_id("realpath-worker")
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(READ_INTERVAL)
        .build()?;
    let client = Arc::new(KinesisStreamClient::new(
        standin::kinesis_client(kinesis),
        config.stream().clone(),
    ));
    let store = DynamoDbLeaseStore::new(
        standin::dynamodb_client(dynamodb),
        config.table_name().to_string(),
    );
    let first = Countdown::new(1, || (Instant::now(), process_cpu()));
    let done = Countdown::new(total, || (Instant::now(), process_cpu()));
    let first_batch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hook: BatchHook = {
        let (first, done, first_batch) = (first.clone(), done.clone(), first_batch.clone());
        Arc::new(move |_: &str, r: &[kinesis_client::Record]| {
            if first.processed() == 0 {
                first_batch.store(r.len() as u64, std::sync::atomic::Ordering::SeqCst);
            }
            first.add(r.len() as u64);
            done.add(r.len() as u64);
        })
    };
    let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
    let scheduler = Scheduler::new(config, factory, client, Arc::new(store));
    tokio::spawn(async move {
        let _ = scheduler.run(std::future::pending()).await;
    });
    let (t_end, cpu_end) = tokio::time::timeout(Duration::from_secs(600), done.wait())
        .await
        .with_context(|| {
            format!(
                "the consumer had {} of {total} records after 600 s",
                done.processed()
            )
        })?;
    let (t_first, cpu_first) = first.wait().await;
    Ok(ConsumerReport {
        records: done.processed(),
        first_batch: first_batch.load(std::sync::atomic::Ordering::SeqCst),
        cpu: cpu_end - cpu0,
        steady_cpu: cpu_end - cpu_first,
        steady_wall: t_end - t_first,
        peak_rss: status_field(None, "VmHWM").unwrap_or_else(self_rss),
    })
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Who read.
    pub kind: ConsumerKind,
    /// Shards of the stream.
    pub shards: usize,
    /// Bytes per record.
    pub record_size: usize,
    /// The consumer's own report.
    pub consumer: ConsumerReport,
    /// What the stand-in did and cost over the run.
    pub standin: StandinStats,
    /// DynamoDB Local's CPU over the run (when its pid is known).
    pub dynamodb_cpu: Option<Duration>,
    /// Operations the consumer asked for that the stand-in does not answer.
    pub unknown_operations: Vec<String>,
}

/// Runs `kind` once over a new stand-in stream of `shards` × `per_shard` records of
/// `record_size` bytes, with the lease table in DynamoDB Local at `dynamodb`.
pub fn run(
    kind: ConsumerKind,
    shards: usize,
    per_shard: usize,
    record_size: usize,
    dynamodb: &str,
    dynamodb_pid: Option<u32>,
) -> Result<Outcome> {
    let name = testkit::unique_name("realpath");
    let standin = Standin::start(StreamSpec::new(&name, shards, per_shard, record_size))?;
    standin.prebuild(kind.format());
    let total = standin.total_records();
    let s0 = standin.stats();
    let d0 = dynamodb_pid.and_then(pid_cpu);
    let out = kind
        .command(&standin.endpoint(), dynamodb, &name, total)?
        .output()
        .with_context(|| format!("starting the {} consumer", kind.label()))?;
    let s1 = standin.stats();
    let d1 = dynamodb_pid.and_then(pid_cpu);
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with(REPORT)) else {
        bail!(
            "the {} consumer did not report ({}): {}",
            kind.label(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    Ok(Outcome {
        kind,
        shards,
        record_size,
        consumer: ConsumerReport::parse(line)?,
        standin: s1 - s0,
        dynamodb_cpu: match (d0, d1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        unknown_operations: standin.unknown_operations(),
    })
}

fn size_text(b: usize) -> String {
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

/// Run section 12.
pub fn section(scale: Scale, services: &mut Services) -> Section {
    let started = Instant::now();
    // (shards, records per shard) and runs of each configuration (the median is shown).
    let (configs, repeats): (Vec<(usize, usize)>, usize) = match scale {
        Scale::Tiny => (vec![], 0),
        Scale::Quick => (vec![(1, 20_000), (8, 5_000)], 1),
        Scale::Full => (vec![(1, 200_000), (8, 50_000)], 3),
    };
    let sizes = [100usize, 1024];
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failure = None;
    if !configs.is_empty() {
        match services.aws() {
            Ok(aws) => {
                let ddb = aws.dynamodb_endpoint().to_string();
                let ddb_pid = aws
                    .services()
                    .iter()
                    .find(|s| s.name.to_lowercase().contains("dynamo"))
                    .and_then(|s| s.pid);
                'all: for kind in ConsumerKind::ALL {
                    for &(shards, per_shard) in &configs {
                        for &size in &sizes {
                            let mut runs = Vec::new();
                            for _ in 0..repeats {
                                eprintln!(
                                    "kcl-bench: section 12: {} on {shards} shard(s) × {per_shard} records of {size} B ...",
                                    kind.label()
                                );
                                match run(kind, shards, per_shard, size, &ddb, ddb_pid) {
                                    Ok(o) => runs.push(o),
                                    Err(e) => {
                                        failure = Some(format!("{e:#}"));
                                        break 'all;
                                    }
                                }
                            }
                            runs.sort_by(|a, b| {
                                a.consumer
                                    .records_per_cpu_second()
                                    .total_cmp(&b.consumer.records_per_cpu_second())
                            });
                            outcomes.push(runs.swap_remove(runs.len() / 2));
                        }
                    }
                }
            }
            Err(e) => failure = Some(format!("{e:#}")),
        }
    }
    let mut t = Table::new([
        "consumer",
        "shards",
        "record",
        "records",
        "records per CPU second (whole run)",
        "records per CPU second (first → last record)",
        "records/s (first → last record)",
        "peak RSS",
        "stand-in CPU per 1,000 records",
        "stand-in CPU / consumer CPU",
        "GetRecords calls",
        "DynamoDB Local CPU",
    ]);
    let mut shares = Vec::new();
    for o in &outcomes {
        let c = &o.consumer;
        let share = o.standin.cpu.as_secs_f64() / c.cpu.as_secs_f64().max(1e-9);
        shares.push(share);
        t.row([
            o.kind.label().to_string(),
            o.shards.to_string(),
            size_text(o.record_size),
            c.records.to_string(),
            rate(c.records_per_cpu_second()),
            rate(c.steady_records_per_cpu_second()),
            rate((c.records - c.first_batch) as f64 / c.steady_wall.as_secs_f64().max(1e-9)),
            mib(c.peak_rss as f64),
            format!(
                "{} µs",
                sig(o.standin.cpu_per_1000_records().as_secs_f64() * 1e6)
            ),
            format!("{:.0} %", share * 100.0),
            o.standin.get_records.to_string(),
            o.dynamodb_cpu
                .map_or("–".into(), |d| format!("{} s", sig(d.as_secs_f64()))),
        ]);
    }
    let mut notes = vec![format!(
        "The wall-clock rate of one shard is capped by the read interval: at most {} records \
         ({} per GetRecords call) every {} ms, {} records/s, whatever the consumer's CPU. The CPU \
         figures are what this section is for.",
        rate(crate::standin::MAX_LIMIT as f64),
        rate(crate::standin::MAX_LIMIT as f64),
        READ_INTERVAL.as_millis(),
        rate(crate::standin::MAX_LIMIT as f64 / READ_INTERVAL.as_secs_f64()),
    )];
    let unknown: std::collections::BTreeSet<&String> = outcomes
        .iter()
        .flat_map(|o| o.unknown_operations.iter())
        .collect();
    if !unknown.is_empty() {
        notes.push(format!(
            "Operations the consumers called that the stand-in does not answer (answered with \
             UnknownOperationException): {}.",
            unknown
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let goal = match (&failure, shares.is_empty()) {
        (Some(e), _) => Goal::Info(format!("Not measured: {e}")),
        (None, true) => Goal::Info("Not run at this scale.".into()),
        (None, false) => {
            let worst = shares.iter().cloned().fold(0.0, f64::max);
            let med = percentile(&shares, 50.0).unwrap_or(0.0);
            Goal::Info(format!(
                "No numeric goal: this section gives the figures on the real path. The stand-in \
                 used {:.0} % of the consumer's CPU at most (median {:.0} %){}.",
                worst * 100.0,
                med * 100.0,
                if worst < 0.25 {
                    ", so it is not what limits the consumer"
                } else {
                    "; it is a noticeable share of the work here, so read the consumer's CPU \
                     figures, not its wall-clock rate"
                }
            ))
        }
    };
    let mut tables = Vec::new();
    if !t.rows.is_empty() {
        tables.push(t);
    }
    Section {
        number: 12,
        title: "Throughput on the real path (stand-in Kinesis)".into(),
        method: format!(
            "A consumer reads a pre-loaded stream from TRIM_HORIZON to its last record over HTTP from \
             the stand-in Kinesis (`bench/src/standin/`: ListShards, DescribeStreamSummary, \
             GetShardIterator and GetRecords answered from records encoded once, JSON 1.1 or CBOR, on \
             one thread of the benchmark process), with its lease table in DynamoDB Local and a \
             no-op processor that checkpoints every batch. This library: `Scheduler` on the AWS SDK \
             for Rust, default settings but a read interval of {} ms (its floor), in a child process \
             of its own; its CPU is that process's CPU clock, from the scheduler's start (whole run: \
             start-up, lease table, leases included) or from its first delivered record to its last. \
             The stand-in's CPU is its thread's CPU clock over the run. No throttling: a shard \
             serves more than Kinesis' 2 MB/s. Median of {} run(s) of each row (by records per CPU \
             second).",
            READ_INTERVAL.as_millis(),
            repeats.max(1)
        ),
        tables,
        goal,
        notes,
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library on the real path through a resharding: a closed parent, then its two
    /// children, every record once in order, the children only after the parent's last
    /// record (lease table in DynamoDB Local, through testkit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standin_the_library_reads_a_resharded_stream_parents_first() {
        let aws = testkit::LocalAws::shared()
            .await
            .expect("DynamoDB Local (testkit)");
        let name = testkit::unique_name("standin-reshard");
        let s = Standin::start(StreamSpec::new(&name, 2, 1_000, 20).resharded()).unwrap();
        let total = s.total_records();
        assert_eq!(total, 4_000);
        let config = Config::builder(format!("{name}-app"), StreamRef::Name(name.clone()))
            .worker_id("reshard-worker")
            .initial_position(InitialPosition::TrimHorizon)
            .idle_time_between_reads(READ_INTERVAL)
            .parent_shard_poll_interval(Duration::from_millis(500))
            .build()
            .unwrap();
        let client = Arc::new(KinesisStreamClient::new(
            s.kinesis_client(),
            config.stream().clone(),
        ));
        let store = DynamoDbLeaseStore::new(
            standin::dynamodb_client(aws.dynamodb_endpoint()),
            config.table_name().to_string(),
        );
        // (shard number, position) in delivery order.
        let seen: Arc<std::sync::Mutex<Vec<(u32, u64)>>> = Arc::default();
        let done = Countdown::new(total, || ());
        let hook: BatchHook = {
            let (seen, done) = (seen.clone(), done.clone());
            Arc::new(move |_: &str, records: &[kinesis_client::Record]| {
                let mut v = seen.lock().unwrap();
                for r in records {
                    let pos = u64::from_le_bytes(r.data[..8].try_into().unwrap());
                    let shard = u32::from_le_bytes(r.data[8..12].try_into().unwrap());
                    v.push((shard, pos));
                }
                drop(v);
                done.add(records.len() as u64);
            })
        };
        let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
        let scheduler = Scheduler::new(config, factory, client, Arc::new(store));
        let task = tokio::spawn(async move {
            let _ = scheduler.run(std::future::pending()).await;
        });
        tokio::time::timeout(Duration::from_secs(120), done.wait())
            .await
            .unwrap_or_else(|_| panic!("{} of {total} records in 120 s", done.processed()));
        task.abort();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len() as u64, total, "every record once");
        for shard in 0..4u32 {
            let positions: Vec<u64> = seen
                .iter()
                .filter(|(s, _)| *s == shard)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                positions,
                (0..1_000).collect::<Vec<u64>>(),
                "shard {shard} in order"
            );
        }
        let parent_done = seen.iter().rposition(|(s, _)| *s == 0).unwrap();
        let first_child = seen.iter().position(|(s, _)| *s >= 2).unwrap();
        assert!(
            parent_done < first_child,
            "children start after the parent's last record"
        );
        assert!(
            s.unknown_operations().is_empty(),
            "{:?}",
            s.unknown_operations()
        );
    }

    #[test]
    fn standin_consumer_report_line_round_trips() {
        let r = ConsumerReport {
            records: 10,
            first_batch: 2,
            cpu: Duration::from_millis(5),
            steady_cpu: Duration::from_millis(4),
            steady_wall: Duration::from_millis(9),
            peak_rss: 1234,
        };
        let back = ConsumerReport::parse(&r.line()).unwrap();
        assert_eq!(back.records, 10);
        assert_eq!(back.steady_cpu, Duration::from_millis(4));
        assert_eq!(back.peak_rss, 1234);
        assert!((back.steady_records_per_cpu_second() - 2000.0).abs() < 1e-6);
    }
}
