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
//! The consumers are a [`ConsumerKind`]: this library, the Java KCL library, `kcl-multilang` and
//! the Java MultiLangDaemon; [`Placement`] says where a daemon's processes run (sharing the
//! CPUs, or the children on a CPU of their own).

use crate::affinity::{self, CpuSet};
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
use std::path::{Path, PathBuf};
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
    /// The Java KCL 3.1.3 library (`Scheduler` on the AWS SDK for Java v2):
    /// `bench/java/RealPathConsumer.java`, the same no-op processor in Java.
    JavaKclLibrary,
    /// `kcl-multilang` (release build) with the no-op amazon-kclpy processor of section 5.
    RustMultiLang,
    /// The Java KCL 3.1.3 MultiLangDaemon with the same processor.
    JavaMultiLang,
}

impl ConsumerKind {
    /// Every kind, in table order.
    pub const ALL: [ConsumerKind; 4] = [
        ConsumerKind::RustLibrary,
        ConsumerKind::JavaKclLibrary,
        ConsumerKind::RustMultiLang,
        ConsumerKind::JavaMultiLang,
    ];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            ConsumerKind::RustLibrary => "this library (AWS SDK for Rust)",
            ConsumerKind::JavaKclLibrary => "Java KCL 3.1.3 library (AWS SDK for Java v2)",
            ConsumerKind::RustMultiLang => "`kcl-multilang` + kclpy no-op",
            ConsumerKind::JavaMultiLang => "Java MultiLangDaemon 3.1.3 + kclpy no-op",
        }
    }

    /// The wire format its SDK speaks (the stand-in encodes the records in it up front): the
    /// Java SDK v2 speaks CBOR to Kinesis by default, the Rust SDK JSON 1.1.
    pub fn format(self) -> Format {
        match self {
            ConsumerKind::RustLibrary | ConsumerKind::RustMultiLang => Format::Json,
            ConsumerKind::JavaKclLibrary | ConsumerKind::JavaMultiLang => Format::Cbor,
        }
    }

    /// Whether it is a MultiLangDaemon with record-processor children.
    pub fn is_daemon(self) -> bool {
        matches!(
            self,
            ConsumerKind::RustMultiLang | ConsumerKind::JavaMultiLang
        )
    }

    /// The command of a library kind that consumes `total` records of `stream` and prints a
    /// [`REPORT`] line.
    fn command(
        self,
        tools: &Tools,
        kinesis: &str,
        dynamodb: &str,
        stream: &str,
        total: u64,
    ) -> Result<Command> {
        match self {
            ConsumerKind::RustLibrary => {
                // This very binary, even if `target/` was rebuilt since it started.
                let mut c = Command::new("/proc/self/exe");
                c.args([CHILD_ARG, kinesis, dynamodb, stream, &total.to_string()]);
                Ok(c)
            }
            ConsumerKind::JavaKclLibrary => {
                let java = tools.java()?;
                let mut cp = java.classes.clone().into_os_string();
                cp.push(":");
                cp.push(java.kcl.classpath());
                let mut c = Command::new(&java.kcl.java);
                c.arg("-cp").arg(cp).arg(JAVA_CONSUMER_CLASS).args([
                    kinesis,
                    dynamodb,
                    stream,
                    &total.to_string(),
                    JAVA_CLIENT_VERSION,
                    &FAILOVER_MILLIS.to_string(),
                    &READ_INTERVAL.as_millis().to_string(),
                    &MAX_RECORDS.to_string(),
                ]);
                Ok(c)
            }
            ConsumerKind::RustMultiLang | ConsumerKind::JavaMultiLang => {
                bail!("{} is a daemon, not a report-line command", self.label())
            }
        }
    }
}

/// The Java consumer's source (`bench/java/RealPathConsumer.java`) and class.
const JAVA_CONSUMER_SOURCE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/java/RealPathConsumer.java");
const JAVA_CONSUMER_CLASS: &str = "RealPathConsumer";
/// The Java KCL's client version config for both Java kinds: its native 3.x mode.
const JAVA_CLIENT_VERSION: &str = "3X";
/// `failoverTimeMillis` of the Java kinds and the daemons (the Java KCL 3.x leader assigns
/// leases every 2 × failover; its default, 10 s, would make the start-up 20 s longer).
const FAILOVER_MILLIS: u64 = 3_000;
/// Records per GetRecords call for every consumer (the library's default, Kinesis' maximum).
const MAX_RECORDS: usize = 10_000;

/// Where a daemon run's processes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every process on every CPU: the daemon, its children, the stand-in and DynamoDB Local
    /// share the machine.
    Shared,
    /// The daemon, the stand-in and DynamoDB Local on CPU [`DAEMON_CPU`], the record-processor
    /// children on CPU [`CHILDREN_CPU`]: the children's CPU is theirs alone, so they are the
    /// limit when their work fills it, and the daemon's own CPU cannot come out of it.
    Split,
}

impl Placement {
    /// The name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::Split => "split: daemon CPU 0, children CPU 1",
        }
    }
}

/// The CPU of the daemon, the stand-in and DynamoDB Local in [`Placement::Split`].
pub const DAEMON_CPU: usize = 0;
/// The CPU of the record-processor children in [`Placement::Split`].
pub const CHILDREN_CPU: usize = 1;

/// Puts every thread of a process on one CPU, and back on the CPUs it had when dropped.
struct PinnedProcess {
    pid: u32,
    before: CpuSet,
}

impl PinnedProcess {
    fn new(pid: u32, cpu: usize) -> Result<PinnedProcess> {
        let before = CpuSet::of_thread(pid as libc::pid_t)
            .with_context(|| format!("reading the CPU affinity of process {pid}"))?;
        CpuSet::one(cpu).apply_to_process(pid)?;
        Ok(PinnedProcess { pid, before })
    }
}

impl Drop for PinnedProcess {
    fn drop(&mut self) {
        let _ = self.before.apply_to_process(self.pid);
    }
}

/// What the Java kinds need: the Java KCL jars and the compiled consumer.
#[derive(Debug, Clone)]
pub struct JavaTools {
    /// The Java KCL 3.1.3 jars and `java`.
    pub kcl: testkit::java_kcl::JavaKcl,
    /// The directory with the compiled `RealPathConsumer` classes.
    pub classes: PathBuf,
    /// `java -version`'s first line.
    pub version: String,
}

/// What the daemon kinds need.
#[derive(Debug, Clone)]
pub struct DaemonTools {
    /// The `kcl-multilang` release build.
    pub kcl_multilang: PathBuf,
    /// amazon-kclpy and the Python to run it.
    pub kclpy: testkit::clients::KclPy,
    /// `python --version`.
    pub python_version: String,
}

/// The consumers' prerequisites, prepared once per section (each kind fails on its own).
pub struct Tools {
    scratch: PathBuf,
    java: std::result::Result<JavaTools, String>,
    daemons: std::result::Result<DaemonTools, String>,
}

impl Tools {
    /// Installs/compiles/builds what `kinds` need.
    pub fn prepare(kinds: &[ConsumerKind]) -> Result<Tools> {
        let scratch = std::env::temp_dir().join(testkit::unique_name("kcl-bench-realpath"));
        std::fs::create_dir_all(&scratch)?;
        let needs_java = kinds.iter().any(|k| {
            matches!(
                k,
                ConsumerKind::JavaKclLibrary | ConsumerKind::JavaMultiLang
            )
        });
        let needs_daemons = kinds.iter().any(|k| k.is_daemon());
        let java = if needs_java {
            prepare_java(&scratch).map_err(|e| format!("{e:#}"))
        } else {
            Err("not needed".into())
        };
        let daemons = if needs_daemons {
            prepare_daemons().map_err(|e| format!("{e:#}"))
        } else {
            Err("not needed".into())
        };
        Ok(Tools {
            scratch,
            java,
            daemons,
        })
    }

    /// The Java tools, or why there are none.
    pub fn java(&self) -> Result<&JavaTools> {
        self.java.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The daemon tools, or why there are none.
    pub fn daemons(&self) -> Result<&DaemonTools> {
        self.daemons.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn prepare_java(scratch: &Path) -> Result<JavaTools> {
    let kcl = testkit::java_kcl::java_kcl()?;
    let (javac, _) = testkit::java_app::javac(&kcl.java)?;
    let classes = scratch.join("java-classes");
    std::fs::create_dir_all(&classes)?;
    let out = Command::new(javac)
        .arg("-cp")
        .arg(kcl.classpath())
        .arg("-d")
        .arg(&classes)
        .arg(JAVA_CONSUMER_SOURCE)
        .output()
        .context("running javac")?;
    if !out.status.success() {
        bail!(
            "javac {JAVA_CONSUMER_SOURCE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = Command::new(&kcl.java).arg("-version").output()?;
    let text = String::from_utf8_lossy(&v.stderr).to_string();
    let version = text
        .lines()
        .find(|l| l.contains("Runtime Environment"))
        .or_else(|| text.lines().next())
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(JavaTools {
        kcl,
        classes,
        version,
    })
}

fn prepare_daemons() -> Result<DaemonTools> {
    let kcl_multilang = crate::multilang::build_daemon()?;
    let kclpy = testkit::clients::kclpy()?;
    let v = Command::new(&kclpy.python).arg("--version").output()?;
    let python_version = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    )
    .trim()
    .to_string();
    Ok(DaemonTools {
        kcl_multilang,
        kclpy,
        python_version,
    })
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
    /// From the process's start to its first delivered record.
    pub startup: Duration,
    /// Highest resident memory (`VmHWM`), bytes.
    pub peak_rss: u64,
}

impl ConsumerReport {
    fn line(&self) -> String {
        format!(
            "{REPORT} records={} first_batch={} cpu_ns={} steady_cpu_ns={} steady_wall_ns={} peak_rss={} startup_ns={}",
            self.records,
            self.first_batch,
            self.cpu.as_nanos(),
            self.steady_cpu.as_nanos(),
            self.steady_wall.as_nanos(),
            self.peak_rss,
            self.startup.as_nanos()
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
            startup: Duration::from_nanos(field("startup_ns")?),
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
    let t0 = Instant::now();
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
        startup: t_first - t0,
        peak_rss: status_field(None, "VmHWM").unwrap_or_else(self_rss),
    })
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Who read.
    pub kind: ConsumerKind,
    /// Where its processes ran.
    pub placement: Placement,
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
    /// A daemon's record-processor children (daemon kinds only).
    pub children: Option<Children>,
    /// A daemon's split run: its children's ceiling (records/s), measured right after the run
    /// (see [`split_ceiling`]).
    pub paired_ceiling: Option<f64>,
}

/// What a daemon's record-processor children (one kclpy process per shard) did.
#[derive(Debug, Clone, Default)]
pub struct Children {
    /// How many there were at the end.
    pub count: usize,
    /// The sum of their peak resident memory (`VmHWM`), bytes.
    pub peak_rss: u64,
    /// Their CPU, together.
    pub cpu: Duration,
    /// Their CPU from the first batch line to the last record.
    pub steady_cpu: Duration,
    /// The batch sizes of the first child, in order (for the ceiling run).
    pub batches: Vec<u64>,
}

/// The last `n` lines of a log file.
fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The properties both daemons get (the same keys, which both accept).
fn daemon_properties(executable: &str, stream: &str, kinesis: &str, dynamodb: &str) -> String {
    testkit::java_kcl::properties_text(&[
        ("executableName", executable.to_string()),
        ("streamName", stream.to_string()),
        ("applicationName", format!("{stream}-app")),
        ("workerId", "realpath-daemon-worker".into()),
        (
            "AwsCredentialsProvider",
            "EnvironmentVariableCredentialsProvider".into(),
        ),
        ("regionName", standin::REGION.into()),
        ("kinesisEndpoint", kinesis.into()),
        ("dynamoDBEndpoint", dynamodb.into()),
        ("initialPositionInStream", "TRIM_HORIZON".into()),
        ("retrievalMode", "POLLING".into()),
        ("maxRecords", MAX_RECORDS.to_string()),
        (
            "idleTimeBetweenReadsInMillis",
            READ_INTERVAL.as_millis().to_string(),
        ),
        (
            "clientVersionConfig",
            format!("CLIENT_VERSION_CONFIG_{JAVA_CLIENT_VERSION}"),
        ),
        ("failoverTimeMillis", FAILOVER_MILLIS.to_string()),
        ("shardSyncIntervalMillis", "1000".into()),
        ("metricsLevel", "NONE".into()),
    ])
}

/// Makes the child receive SIGKILL when this process dies (so that no consumer outlives an
/// interrupted benchmark).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only makes an async-signal-safe
    // syscall.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Kills a process group when dropped (the daemon and its children).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.0.id()) {
            if pgid > 1 {
                // SAFETY: killpg(2) only signals the members of that one process group, which
                // this benchmark started.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.0.wait();
    }
}

/// Runs a daemon kind over `stream` until its processors have `total` records; the daemon's
/// own CPU and memory make the [`ConsumerReport`], its children's the [`Children`].
fn daemon_run(
    kind: ConsumerKind,
    tools: &Tools,
    kinesis: &str,
    dynamodb: &str,
    stream: &str,
    total: u64,
    placement: Placement,
) -> Result<(ConsumerReport, Children)> {
    use std::os::unix::process::CommandExt as _;
    let d = tools.daemons()?;
    let dir = tools.scratch.join(stream);
    std::fs::create_dir_all(&dir)?;
    let executable = format!(
        "{} {}",
        d.kclpy.python.display(),
        crate::multilang::script().display()
    );
    let props = dir.join("daemon.properties");
    std::fs::write(
        &props,
        daemon_properties(&executable, stream, kinesis, dynamodb),
    )?;
    let out = dir.join("batches.txt");
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = match kind {
        ConsumerKind::RustMultiLang => Command::new(&d.kcl_multilang),
        ConsumerKind::JavaMultiLang => {
            let java = tools.java()?;
            let mut c = Command::new(&java.kcl.java);
            c.arg("-cp")
                .arg(java.kcl.classpath())
                .arg(testkit::java_kcl::MULTILANG_DAEMON_CLASS);
            c
        }
        _ => bail!("{} is not a daemon", kind.label()),
    };
    cmd.arg("--properties-file")
        .arg(&props)
        .current_dir(&dir)
        .env("PYTHONPATH", d.kclpy.pythonpath_env())
        .env("KCL_BENCH_OUT", &out)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", standin::REGION)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if placement == Placement::Split {
        cmd.env(crate::multilang::CHILD_CPU_ENV, CHILDREN_CPU.to_string());
        let daemon_cpu = CpuSet::one(DAEMON_CPU);
        // SAFETY: the closure runs between fork and exec and only makes a syscall
        // (sched_setaffinity), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || daemon_cpu.apply(0));
        }
    }
    die_with_parent(&mut cmd);
    let mut group = Group(
        cmd.spawn()
            .with_context(|| format!("starting {}", kind.label()))?,
    );
    let pid = group.0.id();
    let started = Instant::now();
    let mut first_cpu = None;
    let mut first_children_cpu = Duration::ZERO;
    let mut first_seen: Option<Instant> = None;
    let log_tail = || file_tail(&log_path, 30);
    loop {
        let lines = crate::multilang::read_batches(&out);
        if first_cpu.is_none() && !lines.is_empty() {
            first_cpu = pid_cpu(pid);
            first_children_cpu = crate::measure::descendants(pid)
                .iter()
                .filter_map(|&k| pid_cpu(k))
                .sum();
            first_seen = Some(Instant::now());
        }
        let done: u64 = lines.iter().map(|b| b.records).sum();
        if done >= total {
            let cpu = pid_cpu(pid).context("the daemon is gone")?;
            let peak_rss = status_field(Some(pid), "VmHWM").unwrap_or(0);
            let kids = crate::measure::descendants(pid);
            let kids_cpu: Duration = kids.iter().filter_map(|&k| pid_cpu(k)).sum();
            let children = Children {
                count: kids.len(),
                peak_rss: kids
                    .iter()
                    .filter_map(|&k| status_field(Some(k), "VmHWM"))
                    .sum(),
                cpu: kids_cpu,
                steady_cpu: kids_cpu.saturating_sub(first_children_cpu),
                batches: Vec::new(),
            };
            let first = lines
                .iter()
                .min_by(|a, b| a.start.total_cmp(&b.start))
                .copied()
                .context("no batch")?;
            let last_end = lines.iter().map(|b| b.end).fold(f64::MIN, f64::max);
            let report = ConsumerReport {
                records: done,
                first_batch: first.records,
                cpu,
                steady_cpu: cpu.saturating_sub(first_cpu.unwrap_or_default()),
                steady_wall: Duration::from_secs_f64((last_end - first.start).max(0.0)),
                startup: first_seen.map_or(Duration::ZERO, |t| t - started),
                peak_rss,
            };
            drop(group);
            // One shard: the child's batches, for the ceiling run.
            let batches = crate::multilang::read_batches(&out)
                .iter()
                .map(|b| b.records)
                .collect();
            return Ok((
                report,
                Children {
                    batches,
                    ..children
                },
            ));
        }
        if let Some(status) = group.0.try_wait()? {
            bail!("{} exited ({status}):\n{}", kind.label(), log_tail());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "{}: {done} of {total} records after 600 s:\n{}",
                kind.label(),
                log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the consumers keep their lease tables: DynamoDB Local.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTables<'a> {
    /// Its endpoint.
    pub endpoint: &'a str,
    /// Its process, when known (for its CPU, and the split placement).
    pub pid: Option<u32>,
}

/// Runs `kind` once over a new stand-in stream of `shards` × `per_shard` records of
/// `record_size` bytes, with the lease table in DynamoDB Local.
pub fn run(
    kind: ConsumerKind,
    tools: &Tools,
    shards: usize,
    per_shard: usize,
    record_size: usize,
    tables: LeaseTables<'_>,
    placement: Placement,
) -> Result<Outcome> {
    let LeaseTables {
        endpoint: dynamodb,
        pid: dynamodb_pid,
    } = tables;
    let name = testkit::unique_name("realpath");
    let spec = StreamSpec::new(&name, shards, per_shard, record_size);
    let (standin, _dynamodb_pinned) = match placement {
        Placement::Shared => (Standin::start(spec)?, None),
        Placement::Split => {
            if !kind.is_daemon() {
                bail!("the split placement is for daemons (their children get a CPU of their own)");
            }
            // The stand-in's thread is started from this one, and keeps its CPU.
            let standin =
                affinity::with_thread_on(CpuSet::one(DAEMON_CPU), || Standin::start(spec))??;
            let pid = dynamodb_pid.context("the split placement needs DynamoDB Local's pid")?;
            (standin, Some(PinnedProcess::new(pid, DAEMON_CPU)?))
        }
    };
    standin.prebuild(kind.format());
    let total = standin.total_records();
    let s0 = standin.stats();
    let d0 = dynamodb_pid.and_then(pid_cpu);
    if kind.is_daemon() {
        let (consumer, children) = daemon_run(
            kind,
            tools,
            &standin.endpoint(),
            dynamodb,
            &name,
            total,
            placement,
        )?;
        let s1 = standin.stats();
        let d1 = dynamodb_pid.and_then(pid_cpu);
        return Ok(Outcome {
            kind,
            placement,
            shards,
            record_size,
            consumer,
            standin: s1 - s0,
            dynamodb_cpu: d0.zip(d1).map(|(a, b)| b.saturating_sub(a)),
            unknown_operations: standin.unknown_operations(),
            children: Some(children),
            paired_ceiling: None,
        });
    }
    // Its log (stderr) in the scratch directory, for when it does not report.
    let log_path = tools.scratch.join(format!("{name}.log"));
    let mut cmd = kind.command(tools, &standin.endpoint(), dynamodb, &name, total)?;
    die_with_parent(&mut cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .output()
        .with_context(|| format!("starting the {} consumer", kind.label()))?;
    let s1 = standin.stats();
    let d1 = dynamodb_pid.and_then(pid_cpu);
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with(REPORT)) else {
        bail!(
            "the {} consumer did not report ({}):\n{}",
            kind.label(),
            out.status,
            file_tail(&log_path, 30)
        );
    };
    Ok(Outcome {
        kind,
        placement,
        shards,
        record_size,
        consumer: ConsumerReport::parse(line)?,
        standin: s1 - s0,
        dynamodb_cpu: match (d0, d1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        unknown_operations: standin.unknown_operations(),
        children: None,
        paired_ceiling: None,
    })
}

fn size_text(b: usize) -> String {
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

/// Runs of each configuration of `kind` (the median is shown): the library three times,
/// `kcl-multilang`'s split rows (judged, and their rate moves most between runs) three times,
/// the others (tens of seconds each, mostly start-up) once.
fn repeats(kind: ConsumerKind, scale: Scale, placement: Placement) -> usize {
    match (scale, kind, placement) {
        (Scale::Tiny, _, _) => 0,
        (Scale::Quick, _, _) => 1,
        (Scale::Full, ConsumerKind::RustLibrary, _)
        | (Scale::Full, ConsumerKind::RustMultiLang, Placement::Split) => 3,
        (Scale::Full, _, _) => 1,
    }
}

/// The split rows read this many times the records per shard of the shared rows: their rate
/// is the goal's, and runs of a few seconds moved it by ±15 % between runs.
const SPLIT_LENGTH: usize = 4;

/// Records per shard of a run in `placement` whose shared rows read `per_shard`.
fn records_per_shard(per_shard: usize, placement: Placement) -> usize {
    match placement {
        Placement::Shared => per_shard,
        Placement::Split => per_shard * SPLIT_LENGTH,
    }
}

/// The split placement's ceiling, measured right after each split run of a daemon: `shards`
/// no-op children at once on the children's CPU, each fed `per_shard` records of `size` bytes
/// from a file in batches of [`MAX_RECORDS`]. Right after, because how fast this machine runs
/// moves from minute to minute (the same ceiling took 9.5 to 13.5 s in runs minutes apart): a
/// run is compared with the ceiling of the same minute, and a row's figure is the median of its
/// runs' ratios.
fn split_ceiling(tools: &Tools, shards: usize, per_shard: usize, size: usize) -> Result<f64> {
    let mut fed = vec![MAX_RECORDS as u64; per_shard / MAX_RECORDS];
    if !per_shard.is_multiple_of(MAX_RECORDS) {
        fed.push((per_shard % MAX_RECORDS) as u64);
    }
    ceiling(tools, &fed, shards, size, Some(CHILDREN_CPU))
}

/// The no-op kclpy processors' ceiling for `record_size`-byte records on this machine:
/// `children` processors at once, each fed `batches` from a file (no daemon, no Kinesis);
/// records/s measured as for the daemons (the first batch's arrival to the last checkpoint,
/// over every child's batch lines); all on CPU `cpu`, if given.
fn ceiling(
    tools: &Tools,
    batches: &[u64],
    children: usize,
    record_size: usize,
    cpu: Option<usize>,
) -> Result<f64> {
    let d = tools.daemons()?;
    let base = tools.scratch.join(testkit::unique_name(&format!(
        "ceiling-{children}x{record_size}"
    )));
    let dirs: Vec<PathBuf> = (0..children).map(|i| base.join(i.to_string())).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| {
                s.spawn(move || {
                    crate::multilang::ceiling_run_sized(&d.kclpy, dir, batches, record_size, cpu)
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a ceiling thread panicked").map(|_| ()))
    })?;
    let lines: Vec<crate::multilang::BatchLine> = dirs
        .iter()
        .flat_map(|dir| crate::multilang::read_batches(&dir.join("ceiling-batches.txt")))
        .collect();
    let first = lines
        .iter()
        .min_by(|a, b| a.start.total_cmp(&b.start))
        .context("the ceiling run wrote no batch")?;
    let last_end = lines.iter().map(|b| b.end).fold(f64::MIN, f64::max);
    let records: u64 = lines.iter().map(|b| b.records).sum();
    Ok((records - first.records) as f64 / (last_end - first.start).max(1e-9))
}

fn ratio_text(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.1}×")
    }
}

/// What limited `kcl-multilang` in the split rows and what changed: written from the diagnosis
/// runs of 2026-12-07 (`KCL_BENCH_REALPATH_KINDS=multilang KCL_BENCH_REALPATH_SHARDS=8
/// KCL_BENCH_REALPATH_SIZE=1024 KCL_BENCH_REALPATH_PLACEMENT=split`), not computed by this run.
const SPLIT_DIAGNOSIS: &str =
    "What limited `kcl-multilang` in the split rows, and what changed (diagnosed in runs of \
    `KCL_BENCH_REALPATH_KINDS=multilang KCL_BENCH_REALPATH_SHARDS=8 KCL_BENCH_REALPATH_SIZE=1024 \
    KCL_BENCH_REALPATH_PLACEMENT=split` before this one; the figures are from those runs, at 1 KiB): \
    with each child timing its own phases (waiting for and reading a line, parsing it, the rest), \
    each CPU's busy time sampled from `/proc/stat` every 20 ms, and the daemon's debug log. Before: \
    the children's CPU was busy 65 to 80 % of the time. The daemon wrote each child's line from \
    its runtime, and a daemon confined to one CPU runs one runtime thread; the same thread decodes \
    the shards' GetRecords responses, each a poll of about 15 ms at 1 KiB, and the 8 shards' \
    batches fell due together (the children share their CPU equally, so they finish together). \
    The 8 lines were therefore written together and completed together, 200 to 340 ms after the \
    first began, behind the 8 decodes, while the children waited before empty pipes; then all 8 \
    parsed at once while the daemon's CPU idled. Now each child's stdin is written by a thread of \
    its own, blocked in `write(2)` and woken by the kernel as soon as the child frees pipe space \
    (`multilang/src/stdin_thread.rs`; the Java daemon also writes from a thread per child), and \
    the pipe is enlarged to 1 MiB (`F_SETPIPE_SZ`, within a budget of 16 MiB for the daemon): the \
    children's CPU is busy 95 to 98 % of the time. The thread alone did most of it (children busy \
    95 to 98 %, 138 000 records/s); the larger pipe then cut a child's waits while reading a line \
    from 23 to 35 to 5 or 6 and its CPU per line by a tenth (156 000 records/s, with the line \
    written into its buffer without zeroing it first). What did not help: 4 runtime threads (children busy 65 to \
    70 %), writing one line at a time across the children (74 to 80 %: the lines no longer \
    arrive together, but each takes 50 to 60 ms), two at a time, and the 1 MiB pipe alone (70 %, \
    one run). What is \
    left is the children's CPU per batch, which the daemon's work raises even on the children's \
    own CPU: file-fed, 8 children took 55 ms of CPU per batch with the other CPU idle, 61 ms with \
    a busy loop on it and 71 ms with a loop copying memory (one run each); fed by the daemon, 59 \
    to 75 ms. How fast this virtual machine runs moves too: the same ceiling took 9.5 to 13.5 s \
    between runs minutes apart. The earlier finding that a thread per child cost the children \
    40 % more CPU per record was that swing, measured once.";

/// The kclpy children's ceiling measured for one configuration.
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    placement: Placement,
    /// Children fed at once (1 for the shared placement's, which is scaled by the shards).
    children: usize,
    record_size: usize,
    /// Records/s of all of them together.
    rate: f64,
}

/// The goal table's last cell: the daemons' records/s against what limits them (the children's
/// ceiling or the read cap), judged (through `judge`) for `kcl-multilang` where the children
/// are the limit: on one shard, where their ceiling is below the read cap; on several, where
/// they have a CPU of their own ([`Placement::Split`]). With several shards sharing the
/// machine, the ceiling (`min(shards, CPUs)` children's) is an upper bound no daemon can reach
/// (its own CPU, the stand-in's and DynamoDB Local's come out of the same CPUs), so it is shown
/// and not judged.
#[allow(clippy::too_many_arguments)]
fn busy_cell(
    placement: Placement,
    shards: usize,
    size: usize,
    ceilings: &[Ceiling],
    cpus: usize,
    cap: f64,
    daemons: [Option<&Outcome>; 2],
    cfg: &str,
    judge: &mut impl FnMut(bool, String),
) -> String {
    let ceiling = match placement {
        Placement::Shared => ceilings
            .iter()
            .find(|c| c.placement == Placement::Shared && c.record_size == size)
            .map(|c| c.rate * shards.min(cpus) as f64),
        Placement::Split => ceilings
            .iter()
            .find(|c| {
                c.placement == Placement::Split && c.record_size == size && c.children == shards
            })
            .map(|c| c.rate),
    };
    let Some(c) = ceiling else {
        return "–".into();
    };
    let child_limited = c < cap;
    let judged = child_limited && (shards == 1 || placement == Placement::Split);
    let target = c.min(cap);
    let mut cells = Vec::new();
    for o in daemons.into_iter().flatten() {
        // A split run against the ceiling measured right after it.
        let target = o.paired_ceiling.map_or(target, |p| p.min(cap));
        let share = steady_rate(&o.consumer) / target;
        if o.kind == ConsumerKind::RustMultiLang && judged {
            judge(
                share >= 0.8,
                format!(
                    "`kcl-multilang` keeps its children at {:.0} % of their ceiling, {} records/s \
                     ({cfg}, CPUs {})",
                    share * 100.0,
                    rate(c),
                    placement.label()
                ),
            );
        }
        cells.push(format!("{:.0} %", share * 100.0));
    }
    let what = match (child_limited, placement, shards) {
        (false, _, _) => format!(
            "of the read cap ({} records/s: the children's ceiling is {} records/s)",
            rate(cap),
            rate(c)
        ),
        (true, Placement::Split, _) => format!(
            "of the children's ceiling measured right after each run ({} records/s after \
             `kcl-multilang`'s: {shards} children on their one CPU, fed from files; the read cap \
             is {} records/s)",
            rate(c),
            rate(cap)
        ),
        (true, Placement::Shared, 1) => format!(
            "of the child's ceiling ({} records/s, below the read cap, {} records/s)",
            rate(c),
            rate(cap)
        ),
        (true, Placement::Shared, _) => format!(
            "of {} records/s, {} children's ceiling on {cpus} CPUs with nothing else running \
             (an upper bound, not judged: the daemon, the stand-in and DynamoDB Local use the \
             same CPUs; see the split row)",
            rate(c),
            shards.min(cpus)
        ),
    };
    format!("{} {what}", cells.join(", "))
}

/// Records/s of an outcome, first → last record.
fn steady_rate(c: &ConsumerReport) -> f64 {
    (c.records - c.first_batch) as f64 / c.steady_wall.as_secs_f64().max(1e-9)
}

/// The environment variable that narrows section 12 to some consumers (for a partial run):
/// a comma-separated list of `library`, `java-library`, `multilang`, `java-multilang`.
pub const KINDS_ENV: &str = "KCL_BENCH_REALPATH_KINDS";
/// The environment variable that narrows section 12 to one shard count (1 or 8).
pub const SHARDS_ENV: &str = "KCL_BENCH_REALPATH_SHARDS";

/// The environment variable that narrows section 12 to one record size (100 or 1024).
pub const SIZES_ENV: &str = "KCL_BENCH_REALPATH_SIZE";
/// The environment variable that narrows section 12's daemons to one placement (`shared` or
/// `split`).
pub const PLACEMENT_ENV: &str = "KCL_BENCH_REALPATH_PLACEMENT";

/// A narrowing of section 12 to part of its rows, for a partial run.
#[derive(Debug, Default)]
struct Selection {
    kinds: Vec<ConsumerKind>,
    shards: Option<usize>,
    size: Option<usize>,
    placement: Option<Placement>,
}

/// The rows to run ([`KINDS_ENV`], [`SHARDS_ENV`], [`SIZES_ENV`], [`PLACEMENT_ENV`]; all of
/// them when unset).
fn selection() -> Result<Selection> {
    let (kinds, shards) = kinds_and_shards()?;
    let size = match std::env::var(SIZES_ENV) {
        Ok(n) => Some(match n.trim() {
            "100" => 100,
            "1024" => 1024,
            other => {
                bail!("{SIZES_ENV}: {other:?} is not a record size of the section (100, 1024)")
            }
        }),
        Err(_) => None,
    };
    let placement = match std::env::var(PLACEMENT_ENV) {
        Ok(p) => Some(match p.trim() {
            "shared" => Placement::Shared,
            "split" => Placement::Split,
            other => bail!("{PLACEMENT_ENV}: {other:?} is not a placement (shared, split)"),
        }),
        Err(_) => None,
    };
    Ok(Selection {
        kinds,
        shards,
        size,
        placement,
    })
}

/// The consumers and the shard count ([`KINDS_ENV`], [`SHARDS_ENV`]; all of them when unset).
fn kinds_and_shards() -> Result<(Vec<ConsumerKind>, Option<usize>)> {
    let kinds = match std::env::var(KINDS_ENV) {
        Ok(list) => list
            .split(',')
            .map(|k| match k.trim() {
                "library" => Ok(ConsumerKind::RustLibrary),
                "java-library" => Ok(ConsumerKind::JavaKclLibrary),
                "multilang" => Ok(ConsumerKind::RustMultiLang),
                "java-multilang" => Ok(ConsumerKind::JavaMultiLang),
                other => bail!(
                    "{KINDS_ENV}: unknown consumer {other:?} (library, java-library, multilang, \
                     java-multilang)"
                ),
            })
            .collect::<Result<Vec<_>>>()?,
        Err(_) => ConsumerKind::ALL.to_vec(),
    };
    let shards = match std::env::var(SHARDS_ENV) {
        Ok(n) => Some(
            n.trim()
                .parse()
                .with_context(|| format!("{SHARDS_ENV}: {n:?} is not a shard count"))?,
        ),
        Err(_) => None,
    };
    Ok((kinds, shards))
}

/// The placements `kind` runs in on `shards` shards: the daemons on more than one shard also
/// split (their children on a CPU of their own), where the machine has two CPUs or more.
fn placements(kind: ConsumerKind, shards: usize) -> impl Iterator<Item = Placement> {
    let split = kind.is_daemon() && shards > 1 && crate::machine::cpus() > CHILDREN_CPU;
    std::iter::once(Placement::Shared).chain(split.then_some(Placement::Split))
}

/// Run section 12.
pub fn section(scale: Scale, services: &mut Services) -> Section {
    let started = Instant::now();
    // (shards, records per shard).
    let mut configs: Vec<(usize, usize)> = match scale {
        Scale::Tiny => vec![],
        Scale::Quick => vec![(1, 20_000), (8, 5_000)],
        Scale::Full => vec![(1, 200_000), (8, 50_000)],
    };
    let mut failures: Vec<String> = Vec::new();
    let chosen = selection().unwrap_or_else(|e| {
        failures.push(format!("{e:#}"));
        configs.clear();
        Selection::default()
    });
    if let Some(n) = chosen.shards {
        configs.retain(|&(shards, _)| shards == n);
    }
    let kinds = chosen.kinds;
    let sizes: Vec<usize> = [100usize, 1024]
        .into_iter()
        .filter(|&s| chosen.size.is_none_or(|only| only == s))
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut tools = None;
    if !configs.is_empty() {
        match (services.aws(), Tools::prepare(&kinds)) {
            (Ok(aws), Ok(t)) => {
                let ddb = aws.dynamodb_endpoint().to_string();
                let ddb_pid = aws
                    .services()
                    .iter()
                    .find(|s| s.name.to_lowercase().contains("dynamo"))
                    .and_then(|s| s.pid);
                'kinds: for kind in kinds.iter().copied() {
                    for &(shards, per_shard) in &configs {
                        for (size, placement) in sizes
                            .iter()
                            .flat_map(|&size| placements(kind, shards).map(move |p| (size, p)))
                            .filter(|&(_, p)| chosen.placement.is_none_or(|only| only == p))
                        {
                            let per_shard = records_per_shard(per_shard, placement);
                            let mut runs = Vec::new();
                            for _ in 0..repeats(kind, scale, placement) {
                                eprintln!(
                                    "kcl-bench: section 12: {} on {shards} shard(s) × {per_shard} records of {size} B, CPUs {} ...",
                                    kind.label(),
                                    placement.label()
                                );
                                let t0 = Instant::now();
                                let tables = LeaseTables {
                                    endpoint: &ddb,
                                    pid: ddb_pid,
                                };
                                match run(kind, &t, shards, per_shard, size, tables, placement) {
                                    Ok(mut o) => {
                                        eprintln!(
                                            "kcl-bench: section 12: ... {:.0} records per CPU second, {:.1} s",
                                            o.consumer.records_per_cpu_second(),
                                            t0.elapsed().as_secs_f64()
                                        );
                                        if placement == Placement::Split {
                                            eprintln!(
                                                "kcl-bench: section 12: its kclpy ceiling, {shards} children on CPU {CHILDREN_CPU} ..."
                                            );
                                            match split_ceiling(&t, shards, per_shard, size) {
                                                Ok(c) => {
                                                    eprintln!(
                                                        "kcl-bench: section 12: ... {:.0} records/s, {:.0} % of its ceiling, {:.0} records/s",
                                                        steady_rate(&o.consumer),
                                                        100.0 * steady_rate(&o.consumer) / c,
                                                        c
                                                    );
                                                    o.paired_ceiling = Some(c)
                                                }
                                                Err(e) => failures.push(format!(
                                                    "the kclpy ceiling ({size} B, {shards} children): {e:#}"
                                                )),
                                            }
                                        }
                                        runs.push(o)
                                    }
                                    Err(e) => {
                                        failures.push(format!("{}: {e:#}", kind.label()));
                                        continue 'kinds;
                                    }
                                }
                            }
                            if runs.is_empty() {
                                continue;
                            }
                            // The median by what the row is for: the split rows' rate against
                            // its ceiling, the others' records per CPU second.
                            let key = |o: &Outcome| match placement {
                                Placement::Split => {
                                    steady_rate(&o.consumer) / o.paired_ceiling.unwrap_or(f64::NAN)
                                }
                                Placement::Shared => o.consumer.records_per_cpu_second(),
                            };
                            runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
                            outcomes.push(runs.swap_remove(runs.len() / 2));
                        }
                    }
                }
                tools = Some(t);
            }
            (Err(e), _) | (_, Err(e)) => failures.push(format!("{e:#}")),
        }
    }
    // The kclpy processor's ceiling per record size (section 5's): one child fed the batches
    // a 1-shard daemon run gave its child. For `n` shards sharing the machine the children's
    // ceiling is taken as `min(n, CPUs)` times that (an upper bound: the daemon, the stand-in
    // and DynamoDB Local share those CPUs). For the split placement: `n` children at once on
    // the children's CPU, each fed its shard's records in batches of `MAX_RECORDS`.
    let cpus = crate::machine::cpus().max(1);
    let mut ceilings: Vec<Ceiling> = Vec::new();
    if let Some(t) = &tools {
        for &(shards, per_shard) in &configs {
            for &size in &sizes {
                let wanted = |p: Placement| {
                    outcomes.iter().any(|o| {
                        o.kind.is_daemon()
                            && o.shards == shards
                            && o.record_size == size
                            && o.placement == p
                    })
                };
                let (placement, batches, children, cpu) = if shards == 1
                    && wanted(Placement::Shared)
                {
                    let observed = outcomes
                        .iter()
                        .filter(|o| o.kind.is_daemon() && o.shards == 1 && o.record_size == size)
                        .find_map(|o| o.children.as_ref().map(|c| c.batches.clone()))
                        .unwrap_or_default();
                    (Placement::Shared, observed, 1, None)
                } else if shards > 1 && wanted(Placement::Split) {
                    // Measured with each run (`split_ceiling`); the row shows the one paired with
                    // the median run of `kcl-multilang` (else of the Java daemon).
                    let paired = [ConsumerKind::RustMultiLang, ConsumerKind::JavaMultiLang]
                        .iter()
                        .find_map(|&kind| {
                            outcomes
                                .iter()
                                .find(|o| {
                                    o.kind == kind
                                        && o.shards == shards
                                        && o.record_size == size
                                        && o.placement == Placement::Split
                                })
                                .and_then(|o| o.paired_ceiling)
                        });
                    if let Some(rate) = paired {
                        ceilings.push(Ceiling {
                            placement: Placement::Split,
                            children: shards,
                            record_size: size,
                            rate,
                        });
                    }
                    continue;
                } else {
                    continue;
                };
                let mut left = records_per_shard(per_shard, placement) as u64;
                let mut fed = Vec::new();
                for &b in batches.iter().cycle() {
                    if left == 0 || b == 0 {
                        break;
                    }
                    fed.push(b.min(left));
                    left -= b.min(left);
                }
                eprintln!(
                    "kcl-bench: section 12: kclpy ceiling, {children} child(ren), {size} B, CPUs {} ...",
                    placement.label()
                );
                match ceiling(t, &fed, children, size, cpu) {
                    Ok(rate) => ceilings.push(Ceiling {
                        placement,
                        children,
                        record_size: size,
                        rate,
                    }),
                    Err(e) => failures.push(format!(
                        "the kclpy ceiling ({size} B, {children} children): {e:#}"
                    )),
                }
            }
        }
    }
    let mut t = Table::new([
        "consumer",
        "wire",
        "CPUs",
        "shards",
        "record",
        "records",
        "records per CPU second (whole run)",
        "records per CPU second (first → last record)",
        "CPU per record (whole run)",
        "records/s (first → last record)",
        "start-up to first record",
        "peak RSS",
        "kclpy children: peak RSS (sum), CPU per record",
        "stand-in CPU / consumer CPU",
        "GetRecords calls",
        "DynamoDB Local CPU",
    ]);
    let mut shares = Vec::new();
    let mut cbor = (0u64, 0u64);
    for o in &outcomes {
        let c = &o.consumer;
        let share = o.standin.cpu.as_secs_f64() / c.cpu.as_secs_f64().max(1e-9);
        shares.push(share);
        if o.kind.format() == Format::Cbor {
            cbor.0 += o.standin.cbor_requests;
            cbor.1 += o.standin.requests;
        }
        t.row([
            o.kind.label().to_string(),
            match o.kind.format() {
                Format::Json => "JSON".to_string(),
                Format::Cbor => "CBOR".to_string(),
            },
            o.placement.label().to_string(),
            o.shards.to_string(),
            size_text(o.record_size),
            c.records.to_string(),
            rate(c.records_per_cpu_second()),
            rate(c.steady_records_per_cpu_second()),
            format!(
                "{} µs",
                sig(c.cpu.as_secs_f64() / c.records.max(1) as f64 * 1e6)
            ),
            rate(steady_rate(c)),
            format!("{} s", sig(c.startup.as_secs_f64())),
            mib(c.peak_rss as f64),
            o.children.as_ref().map_or("–".into(), |k| {
                format!(
                    "{} ({}), {} µs",
                    mib(k.peak_rss as f64),
                    k.count,
                    sig(k.cpu.as_secs_f64() / c.records.max(1) as f64 * 1e6)
                )
            }),
            format!("{:.0} %", share * 100.0),
            o.standin.get_records.to_string(),
            o.dynamodb_cpu
                .map_or("–".into(), |d| format!("{} s", sig(d.as_secs_f64()))),
        ]);
    }
    // The goals, per configuration.
    let find = |kind: ConsumerKind, shards: usize, size: usize, placement: Placement| {
        outcomes.iter().find(|o| {
            o.kind == kind
                && o.shards == shards
                && o.record_size == size
                && o.placement == placement
        })
    };
    let read_cap = crate::standin::MAX_LIMIT as f64 / READ_INTERVAL.as_secs_f64();
    let mut g = Table::new([
        "shards",
        "record",
        "CPUs",
        "library ÷ Java KCL, records per CPU second: whole run (first → last record); goal ≥ 3×",
        "library RSS ÷ Java KCL RSS; goal ≤ 0.2",
        "`kcl-multilang` CPU per record ÷ Java daemon's (first → last record); goal ≤ 0.33",
        "records/s (first → last record) ÷ the kclpy children's ceiling or the read cap: `kcl-multilang`, Java daemon; goal ≥ 80 % where the children are the limit",
    ]);
    let mut met: Vec<String> = Vec::new();
    let mut missed: Vec<String> = Vec::new();
    let mut judge = |ok: bool, what: String| {
        if ok {
            met.push(what)
        } else {
            missed.push(what)
        }
    };
    for &(shards, _) in &configs {
        for &size in &sizes {
            for placement in [Placement::Shared, Placement::Split] {
                if !outcomes.iter().any(|o| {
                    o.shards == shards && o.record_size == size && o.placement == placement
                }) {
                    continue;
                }
                let judged = placement == Placement::Shared;
                let cfg = format!("{shards} shard(s), {}", size_text(size));
                let lib = find(ConsumerKind::RustLibrary, shards, size, placement);
                let jlib = find(ConsumerKind::JavaKclLibrary, shards, size, placement);
                let (cpu_cell, rss_cell) = match (lib, jlib) {
                    (Some(l), Some(j)) => {
                        let whole = l.consumer.records_per_cpu_second()
                            / j.consumer.records_per_cpu_second().max(1e-9);
                        let steady = l.consumer.steady_records_per_cpu_second()
                            / j.consumer.steady_records_per_cpu_second().max(1e-9);
                        let rss = l.consumer.peak_rss as f64 / j.consumer.peak_rss.max(1) as f64;
                        judge(
                            whole >= 3.0,
                            format!(
                                "library ÷ Java KCL records per CPU second {} ({cfg})",
                                ratio_text(whole)
                            ),
                        );
                        judge(
                            rss <= 0.2,
                            format!("library RSS ÷ Java KCL RSS {rss:.2} ({cfg})"),
                        );
                        (
                            format!("{} ({})", ratio_text(whole), ratio_text(steady)),
                            format!("{rss:.2}"),
                        )
                    }
                    _ => ("–".into(), "–".into()),
                };
                let rml = find(ConsumerKind::RustMultiLang, shards, size, placement);
                let jml = find(ConsumerKind::JavaMultiLang, shards, size, placement);
                let per_record =
                    |o: &Outcome| o.consumer.cpu.as_secs_f64() / o.consumer.records.max(1) as f64;
                let steady_per_record = |o: &Outcome| {
                    o.consumer.steady_cpu.as_secs_f64()
                        / (o.consumer.records - o.consumer.first_batch).max(1) as f64
                };
                let daemon_cell = match (rml, jml) {
                    (Some(r), Some(j)) => {
                        let whole = per_record(r) / per_record(j).max(1e-12);
                        let steady = steady_per_record(r) / steady_per_record(j).max(1e-12);
                        if judged {
                            judge(
                                whole <= 1.0 / 3.0,
                                format!(
                                    "`kcl-multilang` CPU per record ÷ Java daemon's {whole:.2} \
                                     ({cfg})"
                                ),
                            );
                        }
                        format!("{whole:.2} ({steady:.2})")
                    }
                    _ => "–".into(),
                };
                let busy_cell = busy_cell(
                    placement,
                    shards,
                    size,
                    &ceilings,
                    cpus,
                    read_cap * shards as f64,
                    [rml, jml],
                    &cfg,
                    &mut judge,
                );
                g.row([
                    shards.to_string(),
                    size_text(size),
                    placement.label().to_string(),
                    cpu_cell,
                    rss_cell,
                    daemon_cell,
                    busy_cell,
                ]);
            }
        }
    }
    // Where a daemon kept its children below the target: how busy the daemon and the
    // children were (cores used from the first batch to the last record).
    let mut busy_notes = Vec::new();
    for o in outcomes
        .iter()
        .filter(|o| o.kind.is_daemon() && o.shards > 1)
    {
        let (Some(k), wall) = (&o.children, o.consumer.steady_wall.as_secs_f64()) else {
            continue;
        };
        if wall <= 0.0 {
            continue;
        }
        busy_notes.push(format!(
            "{} on {} shards × {}, CPUs {}: daemon {:.2} cores, its {} children {:.2} cores",
            o.kind.label(),
            o.shards,
            size_text(o.record_size),
            o.placement.label(),
            o.consumer.steady_cpu.as_secs_f64() / wall,
            k.count,
            k.steady_cpu.as_secs_f64() / wall,
        ));
    }
    let mut notes = vec![format!(
        "The wall-clock rate of one shard is capped by the read interval: at most {} records \
         ({} per GetRecords call) every {} ms, {} records/s, whatever the consumer's CPU. The CPU \
         figures are what this section is for.",
        rate(crate::standin::MAX_LIMIT as f64),
        rate(crate::standin::MAX_LIMIT as f64),
        READ_INTERVAL.as_millis(),
        rate(read_cap),
    )];
    if !busy_notes.is_empty() {
        notes.push(format!(
            "CPU used from the first batch to the last record, in cores of this {cpus}-CPU machine \
             (where the children are well below {cpus} cores, they were not CPU-bound: they waited \
             for batches and checkpoint replies, or for CPUs other jobs took): {}.",
            busy_notes.join("; ")
        ));
    }
    if outcomes.iter().any(|o| o.placement == Placement::Split) {
        notes.push(SPLIT_DIAGNOSIS.to_string());
    }
    if cbor.1 > 0 {
        notes.push(format!(
            "The Java kinds' requests to the stand-in: {} of {} in CBOR (the Java SDK v2's default \
             for Kinesis).",
            cbor.0, cbor.1
        ));
    }
    if let Some(t) = &tools {
        let mut v = vec![format!(
            "kclpy-ext {} (the Java KCL {} jars)",
            testkit::java_kcl::KCLPY_EXT_VERSION,
            testkit::java_kcl::JAVA_KCL_VERSION
        )];
        if let Ok(j) = t.java() {
            v.push(format!("JDK: {}", j.version));
        }
        if let Ok(d) = t.daemons() {
            v.push(format!(
                "amazon-kclpy {} on {}",
                testkit::clients::KCLPY_VERSION,
                d.python_version
            ));
        }
        v.push(format!(
            "kinesis-client and kcl-multilang {}",
            env!("CARGO_PKG_VERSION")
        ));
        notes.push(format!("Versions: {}.", v.join("; ")));
    }
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
    for f in &failures {
        notes.push(format!("Not measured: {f}"));
    }
    let worst_share = shares.iter().cloned().fold(0.0, f64::max);
    let standin_text = if shares.is_empty() {
        String::new()
    } else {
        format!(
            " The stand-in used {:.0} % of a consumer's CPU at most (median {:.0} %).",
            worst_share * 100.0,
            percentile(&shares, 50.0).unwrap_or(0.0) * 100.0
        )
    };
    let goal = if outcomes.is_empty() {
        Goal::Info(if failures.is_empty() {
            "Not run at this scale.".into()
        } else {
            format!("Not measured: {}", failures.join("; "))
        })
    } else if met.is_empty() && missed.is_empty() {
        Goal::Info(format!(
            "The comparisons need every kind; not all ran.{standin_text}"
        ))
    } else if missed.is_empty() {
        Goal::Met(format!("{}.{standin_text}", met.join("; ")))
    } else {
        Goal::Missed(format!(
            "Missed: {}. Met: {}.{standin_text}",
            missed.join("; "),
            if met.is_empty() {
                "none".to_string()
            } else {
                met.join("; ")
            }
        ))
    };
    let mut tables = Vec::new();
    if !t.rows.is_empty() {
        tables.push(t);
    }
    if !g.rows.is_empty() && outcomes.iter().any(|o| o.kind != ConsumerKind::RustLibrary) {
        tables.push(g);
    }
    Section {
        number: 12,
        title: "Throughput on the real path (stand-in Kinesis), side by side".into(),
        method: format!(
            "A consumer reads a pre-loaded stream from TRIM_HORIZON to its last record over HTTP from \
             the stand-in Kinesis (`bench/src/standin/`: ListShards, DescribeStreamSummary, \
             GetShardIterator and GetRecords answered from records encoded once, JSON 1.1 or CBOR, \
             HTTP/1.1 or HTTP/2, on one thread of the benchmark process), with its lease table in \
             DynamoDB Local and a no-op processor that checkpoints every batch; every consumer \
             reads every {} ms, up to {} records a call, from TRIM_HORIZON, metrics off. \
             **This library**: `Scheduler` on the AWS SDK for Rust, default settings otherwise, in a \
             `kcl-bench __realpath` child. **Java KCL**: `bench/java/RealPathConsumer.java` \
             (ConfigsBuilder + Scheduler, the same no-op processor: counts, then \
             `checkpointer.checkpoint()` each batch), compiled with the JDK's `javac` against the \
             kclpy-ext jars, run with the JVM's defaults (no flags); its Kinesis client built with \
             `KinesisClientUtil` (HTTP/2, CBOR), polling retrieval (`PollingConfig`), native 3.x \
             mode (`CLIENT_VERSION_CONFIG_3X`) with `failoverTimeMillis` {} and \
             `shardSyncIntervalMillis` 1000 (so that the leader assigns the leases within seconds; \
             its start-up still includes the Java KCL's random wait of 1 to 30 s before a worker \
             syncs shards into an empty lease table and its 10 s poll for the lease table's GSI). \
             Both report their own process's CPU (Rust: `CLOCK_PROCESS_CPUTIME_ID` from the \
             scheduler's start; Java: `getProcessCpuTime`, from the JVM's start, 10 ms ticks) and `VmHWM` when \
             the last record arrives. **Daemons**: `kcl-multilang` (release build) and the Java \
             MultiLangDaemon (`java -cp '<jars>/*' …MultiLangDaemon`, JVM defaults) with the same \
             properties file (polling, `maxRecords` {}, `idleTimeBetweenReadsInMillis` {}, \
             `clientVersionConfig` 3X, `failoverTimeMillis` {}, `shardSyncIntervalMillis` 1000, \
             `metricsLevel` NONE) and section 5's no-op amazon-kclpy processor \
             (`bench/python/noop_processor.py`, one child per shard, checkpointing each batch); \
             the benchmark reads the daemon's CPU (`/proc/<pid>/stat`, 10 ms ticks) from its start \
             and when the first batch line appears, its `VmHWM` and its children's when the last \
             record is processed; records/s from the children's batch lines. The child's ceiling \
             is section 5's, on this machine: the processor fed the batches of the 1-shard run \
             from a file; for n shards the children's ceiling is min(n, CPUs) times it (an upper \
             bound: the daemon, the stand-in and DynamoDB Local share those CPUs). On 8 shards the \
             daemons also run **split**: the daemon, the stand-in's thread and DynamoDB Local on CPU \
             {DAEMON_CPU}, the 8 children on CPU {CHILDREN_CPU} (`sched_setaffinity`), so that the \
             children's CPU is theirs alone and they are the limit; that row's ceiling is 8 \
             no-op children on that one CPU at once, each fed its shard's records from a file in \
             batches of {MAX_RECORDS}, measured right after each split run (how fast this virtual \
             machine runs moves from minute to minute), and a split run's figure is its rate \
             against that ceiling. The split rows read {SPLIT_LENGTH} times as many records per \
             shard, and `kcl-multilang`'s are the median of 3 runs by that figure. The \
             goal that the daemon keeps its children busy is judged \
             where they are the limit: on 1 shard where their ceiling is below the read cap, and on \
             the split rows. \
             The stand-in's CPU is its thread's CPU clock over the run. No throttling: a shard \
             serves more than Kinesis' 2 MB/s. This library's rows are the median of {} runs (by \
             records per CPU second); the other kinds' shared rows ran once.",
            READ_INTERVAL.as_millis(),
            MAX_RECORDS,
            FAILOVER_MILLIS,
            MAX_RECORDS,
            READ_INTERVAL.as_millis(),
            FAILOVER_MILLIS,
            repeats(ConsumerKind::RustLibrary, scale, Placement::Shared).max(1)
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

    /// The daemons' properties are read by `kcl-multilang` without a warning (every key known,
    /// none ignored but the 3.x ones it logs), with the read settings of the other consumers.
    #[test]
    fn standin_daemon_properties_are_what_kcl_multilang_reads() {
        let text = daemon_properties(
            "python3 noop.py",
            "s",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        );
        let parsed = kinesis_client_multilang::settings::from_properties_text(&text).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let debug = format!("{:?}", parsed.settings);
        assert!(debug.contains("10000"), "maxRecords: {debug}");
        for key in [
            "kinesisEndpoint",
            "dynamoDBEndpoint",
            "failoverTimeMillis",
            "metricsLevel",
        ] {
            assert!(text.contains(&format!("{key} = ")), "{key} in\n{text}");
        }
    }

    #[test]
    fn standin_consumer_report_line_round_trips() {
        let r = ConsumerReport {
            records: 10,
            first_batch: 2,
            cpu: Duration::from_millis(5),
            steady_cpu: Duration::from_millis(4),
            steady_wall: Duration::from_millis(9),
            startup: Duration::from_millis(7),
            peak_rss: 1234,
        };
        let back = ConsumerReport::parse(&r.line()).unwrap();
        assert_eq!(back.records, 10);
        assert_eq!(back.steady_cpu, Duration::from_millis(4));
        assert_eq!(back.peak_rss, 1234);
        assert!((back.steady_records_per_cpu_second() - 2000.0).abs() < 1e-6);
    }
}
