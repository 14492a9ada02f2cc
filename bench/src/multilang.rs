//! Section 5: the MultiLangDaemon (`kcl-multilang`) with a no-op amazon-kclpy processor
//! (`bench/python/noop_processor.py`), against the same processor reading the protocol from a
//! file without the daemon (the ceiling).
//!
//! * **Daemon**: a 1-shard kinesis-local stream pre-loaded with `N` records of 100 B; the
//!   daemon (release build, started with `cargo build --release -p kinesis-client-multilang` first) runs
//!   with reads every 200 ms and up to 10 000 records per read. The processor appends one line
//!   per batch (entry time, time after its checkpoint, records), from which come the start-up
//!   time (daemon spawned → first batch received) and the records/s (first batch received →
//!   last batch checkpointed). RSS and CPU of the daemon and of its Python child are read from
//!   `/proc` while it runs.
//! * **Ceiling**: the same processor with its stdin redirected from a file holding exactly the
//!   protocol lines the daemon would send (initialize, the same batch sizes, each followed by
//!   the reply to its checkpoint request, leaseLost), stdout to `/dev/null`.

use crate::measure::{children_cpu, descendants, pid_cpu, status_field};
use crate::report::{Goal, Section, Table};
use crate::services::Services;
use crate::stats::{mib, rate, sig};
use crate::Scale;
use anyhow::{bail, Context, Result};
use kinesis_client_multilang::protocol::{CheckpointReply, DaemonMessage, WireRecord};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use testkit::clients::{procs, KclPy};
use testkit::LocalAws;

/// The variable that makes the no-op processor pin itself to one CPU (section 12's split
/// placement).
pub const CHILD_CPU_ENV: &str = "KCL_BENCH_CHILD_CPU";

/// The processor script.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/noop_processor.py")
}

/// Build `kcl-multilang` in release mode and return its path.
pub fn build_daemon() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "kinesis-client-multilang",
            "--bin",
            "kcl-multilang",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build --release -p kinesis-client-multilang")?;
    if !out.status.success() {
        bail!(
            "cargo build --release -p kinesis-client-multilang failed: {}",
            out.status
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"compiler-artifact\"") && l.contains("\"executable\":\""))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let exe = v["executable"].as_str()?;
            (v["target"]["name"] == "kcl-multilang").then(|| PathBuf::from(exe))
        })
        .context("cargo did not report the kcl-multilang executable")
}

/// One batch line written by the processor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLine {
    /// `time.time()` when the batch reached the processor.
    pub start: f64,
    /// `time.time()` after its checkpoint.
    pub end: f64,
    /// Records in the batch.
    pub records: u64,
}

/// The processor's `init` time (epoch seconds), if it wrote one.
fn read_init(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("init ")?.trim().parse().ok())
}

/// The batch lines of the processor's output file (in the order written).
pub(crate) fn read_batches(path: &Path) -> Vec<BatchLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("init "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(BatchLine {
                start: it.next()?.parse().ok()?,
                end: it.next()?.parse().ok()?,
                records: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What one path measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Records processed.
    pub records: u64,
    /// From spawning the process to the first batch received by the processor.
    pub startup: f64,
    /// Records per second, processor initialized → last batch checkpointed.
    pub rate: f64,
    /// Batch sizes, in order.
    pub batches: Vec<u64>,
    /// Highest RSS of the daemon itself.
    pub daemon_rss: Option<u64>,
    /// Highest RSS of the Python processor.
    pub child_rss: u64,
    /// CPU seconds of the daemon itself.
    pub daemon_cpu: Option<f64>,
    /// CPU seconds of the Python processor(s).
    pub child_cpu: f64,
    /// CPU seconds of kinesis-local from the daemon's start until the last record.
    pub kinesis_cpu: Option<f64>,
    /// Records/s at which kinesis-local accepted the pre-load.
    pub put_rate: f64,
}

/// (records, spawn → first batch received, records/s from `init` to the last checkpoint).
fn summarise(batches: &[BatchLine], init: Option<f64>, spawned: SystemTime) -> (u64, f64, f64) {
    let records: u64 = batches.iter().map(|b| b.records).sum();
    let first = batches.first().map_or(0.0, |b| b.start);
    let last = batches.last().map_or(0.0, |b| b.end);
    let from = init.unwrap_or(first);
    (
        records,
        first - epoch_seconds(spawned),
        records as f64 / (last - from).max(1e-9),
    )
}

fn properties(aws: &LocalAws, stream: &str, executable: &str) -> String {
    let region = aws
        .sdk_config()
        .region()
        .map_or("us-east-1".to_string(), |r| r.to_string());
    [
        ("executableName", executable.to_string()),
        ("streamName", stream.to_string()),
        ("applicationName", format!("{stream}-app")),
        (
            "AwsCredentialsProvider",
            "KclStaticCredentialsProvider|test|test".into(),
        ),
        ("regionName", region),
        ("kinesisEndpoint", aws.kinesis_endpoint().into()),
        ("dynamoDBEndpoint", aws.dynamodb_endpoint().into()),
        ("initialPositionInStream", "TRIM_HORIZON".into()),
        ("maxRecords", "10000".into()),
        ("idleTimeBetweenReadsInMillis", "200".into()),
        // No CloudWatch on the local services.
        ("metricsLevel", "NONE".into()),
    ]
    .iter()
    .map(|(k, v)| format!("{k} = {v}\n"))
    .collect()
}

async fn daemon_run(
    aws: &LocalAws,
    daemon: &Path,
    kclpy: &KclPy,
    dir: &Path,
    records: u64,
) -> Result<Run> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("bench-mld");
    testkit::create_stream(&kinesis, &stream, 1).await?;
    let put_started = Instant::now();
    let mut put = 0u64;
    while put < records {
        let n = 500.min(records - put);
        let batch: Vec<testkit::PutRecord> = (put..put + n)
            .map(|i| testkit::PutRecord {
                partition_key: format!("k{}", i % 16),
                data: vec![b'x'; 100],
            })
            .collect();
        testkit::put_records(&kinesis, &stream, batch).await?;
        put += n;
    }
    let put_rate = records as f64 / put_started.elapsed().as_secs_f64();
    let executable = format!("{} {}", kclpy.python.display(), script().display());
    let props = dir.join("bench.properties");
    std::fs::write(&props, properties(aws, &stream, &executable))?;
    let out = dir.join("daemon-batches.txt");
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let kinesis_pid = aws
        .services()
        .iter()
        .find(|s| s.name.to_lowercase().contains("kinesis"))
        .and_then(|s| s.pid);
    let kinesis_cpu0 = kinesis_pid.and_then(pid_cpu);
    let spawned = SystemTime::now();
    let mut cmd = tokio::process::Command::new(daemon);
    cmd.arg("--properties-file")
        .arg(&props)
        .current_dir(dir)
        .env("PYTHONPATH", kclpy.pythonpath_env())
        .env("KCL_BENCH_OUT", &out)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    procs::die_with_spawning_thread(&mut cmd);
    let mut child = cmd.spawn().context("starting kcl-multilang")?;
    let pid = child.id().context("the daemon exited at once")?;
    let mut run = Run {
        put_rate,
        ..Run::default()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let result = loop {
        let batches = read_batches(&out);
        let kids = descendants(pid);
        run.daemon_rss = run.daemon_rss.max(status_field(Some(pid), "VmRSS"));
        run.child_rss = run.child_rss.max(
            kids.iter()
                .filter_map(|&k| status_field(Some(k), "VmRSS"))
                .sum(),
        );
        let done: u64 = batches.iter().map(|b| b.records).sum();
        if done >= records {
            run.daemon_cpu = pid_cpu(pid).map(|d| d.as_secs_f64());
            run.kinesis_cpu = kinesis_pid
                .and_then(pid_cpu)
                .zip(kinesis_cpu0)
                .map(|(b, a)| (b - a).as_secs_f64());
            run.child_cpu = kids
                .iter()
                .filter_map(|&k| pid_cpu(k))
                .map(|d| d.as_secs_f64())
                .sum();
            let (n, startup, r) = summarise(&batches, read_init(&out), spawned);
            run.records = n;
            run.startup = startup;
            run.rate = r;
            run.batches = batches.iter().map(|b| b.records).collect();
            break Ok(());
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "kcl-multilang exited ({status}); log: {}",
                dir.join("daemon.log").display()
            ));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {done} of {records} records processed after 600 s; log: {}",
                dir.join("daemon.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    procs::sigterm(pid);
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    result.map(|()| run)
}

/// The protocol lines of a run over `batches` of 100 B records: initialize, each batch with
/// the reply to its checkpoint, leaseLost.
pub fn protocol_lines(batches: &[u64]) -> Vec<u8> {
    protocol_lines_sized(batches, 100)
}

/// [`protocol_lines`] with records of `record_size` bytes.
pub fn protocol_lines_sized(batches: &[u64], record_size: usize) -> Vec<u8> {
    let mut out = DaemonMessage::Initialize {
        shard_id: "shardId-000000000000".into(),
        sequence_number: Some("TRIM_HORIZON".into()),
        sub_sequence_number: Some(0),
        stream_name: None,
    }
    .to_line();
    let data = vec![b'x'; record_size];
    let now = SystemTime::now();
    // Kinesis sequence numbers have 56 digits: a fixed prefix and a counter.
    let seq_text = |n: u64| format!("4965000000000000000000000000000000{n:022}");
    let mut seq = 0u64;
    for &n in batches {
        let records: Vec<WireRecord> = (0..n)
            .map(|i| {
                seq += 1;
                WireRecord::new(&data, format!("k{}", i % 16), seq_text(seq), 0, Some(now))
            })
            .collect();
        out.extend(
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest: Some(0),
            }
            .to_line(),
        );
        out.extend(
            CheckpointReply {
                sequence_number: Some(seq_text(seq)),
                sub_sequence_number: Some(0),
                error: None,
            }
            .to_line(),
        );
    }
    out.extend(DaemonMessage::LeaseLost.to_line());
    out
}

fn ceiling_run(kclpy: &KclPy, dir: &Path, batches: &[u64]) -> Result<Run> {
    ceiling_run_sized(kclpy, dir, batches, 100, None)
}

/// The ceiling: the no-op processor fed the protocol lines of `batches` of `record_size`-byte
/// records from a file (`<dir>/protocol.jsonl`), its batch lines in `<dir>/ceiling-batches.txt`;
/// on CPU `cpu` only, if given.
pub(crate) fn ceiling_run_sized(
    kclpy: &KclPy,
    dir: &Path,
    batches: &[u64],
    record_size: usize,
    cpu: Option<usize>,
) -> Result<Run> {
    let input = dir.join("protocol.jsonl");
    std::fs::File::create(&input)?.write_all(&protocol_lines_sized(batches, record_size))?;
    let out = dir.join("ceiling-batches.txt");
    let cpu0 = children_cpu();
    let spawned = SystemTime::now();
    let mut child = Command::new(&kclpy.python);
    if let Some(cpu) = cpu {
        child.env(CHILD_CPU_ENV, cpu.to_string());
    }
    let mut child = child
        .arg(script())
        .env("PYTHONPATH", kclpy.pythonpath_env())
        .env("KCL_BENCH_OUT", &out)
        .stdin(std::fs::File::open(&input)?)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting python3")?;
    let mut rss = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("the processor fed from a file exited with {status}");
            }
            break;
        }
        rss = rss.max(status_field(Some(child.id()), "VmRSS").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = read_batches(&out);
    let (records, startup, r) = summarise(&lines, read_init(&out), spawned);
    Ok(Run {
        records,
        startup,
        rate: r,
        batches: lines.iter().map(|b| b.records).collect(),
        daemon_rss: None,
        child_rss: rss,
        daemon_cpu: None,
        child_cpu: (children_cpu() - cpu0).as_secs_f64(),
        kinesis_cpu: None,
        put_rate: 0.0,
    })
}

fn scratch() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(testkit::unique_name("kcl-bench-mld"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Run section 5.
pub fn section(scale: Scale, services: &mut Services) -> Section {
    let started = Instant::now();
    let records = match scale {
        Scale::Tiny => 0,
        Scale::Quick => 3_000,
        Scale::Full => 20_000,
    };
    let result = (|| -> Result<(Run, Run)> {
        if records == 0 {
            bail!("skipped at this scale");
        }
        let daemon = build_daemon()?;
        let kclpy = testkit::clients::kclpy()?;
        let dir = scratch()?;
        let d = {
            let (daemon, kclpy, dir) = (daemon.clone(), kclpy.clone(), dir.clone());
            services
                .run(|aws| async move { daemon_run(&aws, &daemon, &kclpy, &dir, records).await })?
        };
        let c = ceiling_run(&kclpy, &dir, &d.batches)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((d, c))
    })();
    let mut tables = Vec::new();
    let mut notes = Vec::new();
    let goal = match result {
        Ok((d, c)) => {
            let mut t = Table::new([
                "path",
                "records (100 B)",
                "batches",
                "start-up to first record",
                "records/s",
                "daemon RSS",
                "processor RSS",
                "daemon CPU",
                "processor CPU",
            ]);
            let opt_mib = |v: Option<u64>| v.map_or("–".into(), |b| mib(b as f64));
            for (name, r) in [
                (
                    "kcl-multilang + kclpy, 1 shard (kinesis-local, DynamoDB Local)",
                    &d,
                ),
                (
                    "kclpy fed the same protocol lines from a file (ceiling)",
                    &c,
                ),
            ] {
                t.row([
                    name.to_string(),
                    r.records.to_string(),
                    r.batches.len().to_string(),
                    format!("{} s", sig(r.startup)),
                    rate(r.rate),
                    opt_mib(r.daemon_rss),
                    mib(r.child_rss as f64),
                    r.daemon_cpu.map_or("–".into(), |s| format!("{} s", sig(s))),
                    format!("{} s", sig(r.child_cpu)),
                ]);
            }
            tables.push(t);
            let share = d.rate / c.rate.max(1e-9) * 100.0;
            notes.push(format!(
                "Through the daemon the processor gets {share:.0} % of the ceiling's records/s. The \
                 daemon itself used {} of CPU for {} records ({} µs per record, so one core \
                 of daemon would carry ~{} records/s: reading from kinesis-local, JSON encoding for the \
                 child, checkpoints to DynamoDB Local, at 10 ms `/proc` resolution), the Python \
                 processor {} s (kclpy parses every message and builds a record object per record), and \
                 kinesis-local {} serving the reads (and the checkpoints' DynamoDB Local calls are cheap). \
                 The gap is the read path: a read at most every 200 ms and at most 10 000 records per read, \
                 each taking the emulator a long time (section 6), while the child waits. (Pre-loading the \
                 stream ran at {} records/s.)",
                d.daemon_cpu.map_or("?".into(), |s| format!("{} s", sig(s))),
                d.records,
                d.daemon_cpu.map_or("?".into(), |s| sig(s / d.records.max(1) as f64 * 1e6)),
                d.daemon_cpu
                    .filter(|s| *s > 0.0)
                    .map_or("?".into(), |s| rate(d.records as f64 / s)),
                sig(d.child_cpu),
                d.kinesis_cpu
                    .map_or("(not measured)".into(), |s| format!("used {} s of CPU", sig(s))),
                rate(d.put_rate),
            ));
            notes.push(
                "Start-up to first record covers the daemon's start, the lease table (DynamoDB Local \
                 CreateTable), the shard sync, taking the lease, starting Python and importing kclpy, \
                 `initialize`, GetShardIterator and the first GetRecords. The ceiling's start-up is \
                 Python's start and kclpy's import alone."
                    .into(),
            );
            Goal::Info("No numeric goal: the ceiling is the reference.".into())
        }
        Err(e) => Goal::Info(format!("Not measured: {e:#}")),
    };
    Section {
        number: 5,
        title: "MultiLangDaemon".into(),
        method: format!(
            "`kcl-multilang` (release build) with a no-op amazon-kclpy v3 processor \
             (`bench/python/noop_processor.py`: checkpoints at the last record of each batch, does nothing \
             else) on a 1-shard kinesis-local stream pre-loaded with {} records of 100 B (reads every \
             200 ms, `maxRecords` 10 000), versus the same processor reading the same protocol lines from \
             a file, with no daemon and no Kinesis (the ceiling). Records/s from the processor's own \
             timestamps, from its `initialize` to its last checkpoint (so message parsing is included); RSS is the highest `VmRSS` seen \
             while it ran; CPU from `/proc/<pid>/stat` (daemon) and `getrusage` (ceiling).",
            records
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
