//! Measurements of the `kcl-multilang` binary with the real amazon-kclpy client, against the
//! local services of `testkit` (measurement only; the behaviour is asserted by the e2e tests
//! in `tests/e2e/`):
//!
//! 1. start-up time: from spawning the daemon to the first record delivered to a Python
//!    processor (4 shards, records put before the start);
//! 2. the daemon's RSS (`VmRSS`, without its children) with 4 and with 64 shards, once every
//!    shard's child is running and every record was delivered;
//! 3. records per second through a no-op kclpy processor (checkpoint per batch).
//!
//! Run (the daemon binary must be built in the same profile first):
//!
//! ```text
//! cargo build -p kinesis-client-multilang --release --bin kcl-multilang
//! cargo run -p kinesis-client-multilang --release --example measure
//! ```
//!
//! Options (environment): `MEASURE_THROUGHPUT_RECORDS` (default 20000),
//! `MEASURE_BIG_SHARDS` (default 64).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::clients::{self, procs, KclPy};
use testkit::LocalAws;

const NOOP_PROCESSOR: &str = r#"
import os
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

OUTPUT = os.environ["KCL_SAMPLE_OUTPUT"]

class NoOp(processor.RecordProcessorBase):
    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
    def process_records(self, process_records_input):
        records = process_records_input.records
        if records:
            process_records_input.checkpointer.checkpoint(records[-1].sequence_number, records[-1].sub_sequence_number)
            with open(OUTPUT, "a") as f:
                f.write("{} {}\n".format(self.shard_id, len(records)))
    def lease_lost(self, lease_lost_input):
        pass
    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()
    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()

if __name__ == "__main__":
    kcl.KCLProcess(NoOp()).run()
"#;

struct Run {
    child: tokio::process::Child,
    pid: u32,
    started: Instant,
}

impl Run {
    async fn stop(mut self) -> Result<()> {
        procs::sigterm(self.pid);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        if !status.success() {
            bail!("daemon exit status {status}");
        }
        Ok(())
    }
}

fn daemon_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/measure -> target/<profile>/kcl-multilang
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kcl-multilang"))
        .context("unexpected example location")?;
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (cargo build -p kinesis-client-multilang [--release] --bin kcl-multilang)",
            bin.display()
        );
    }
    Ok(bin)
}

#[allow(clippy::too_many_arguments)]
fn start(
    aws: &LocalAws,
    dir: &Path,
    stream: &str,
    executable: &str,
    kclpy: &KclPy,
    output: &Path,
    extra: &[(&str, &str)],
) -> Result<Run> {
    let app = testkit::unique_name("measure-app");
    let region = aws
        .sdk_config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let mut props = format!(
        "executableName = {executable}\nstreamName = {stream}\napplicationName = {app}\n\
         AwsCredentialsProvider = KclStaticCredentialsProvider|test|test\nregionName = {region}\n\
         kinesisEndpoint = {}\ndynamoDBEndpoint = {}\ninitialPositionInStream = TRIM_HORIZON\n\
         failoverTimeMillis = 10000\nidleTimeBetweenReadsInMillis = 200\n\
         shardSyncIntervalMillis = 1000\n",
        aws.kinesis_endpoint(),
        aws.dynamodb_endpoint()
    );
    for (k, v) in extra {
        props.push_str(&format!("{k} = {v}\n"));
    }
    let path = dir.join(format!("{app}.properties"));
    std::fs::write(&path, props)?;
    let log = std::fs::File::create(dir.join(format!("{app}.log")))?;
    let mut cmd = tokio::process::Command::new(daemon_binary()?);
    cmd.arg("-p")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("PYTHONPATH", kclpy.pythonpath_env())
        .env("KCL_SAMPLE_OUTPUT", output)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    procs::die_with_spawning_thread(&mut cmd);
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id().context("daemon exited at once")?;
    Ok(Run {
        child,
        pid,
        started,
    })
}

async fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn record_lines(output: &Path) -> Vec<String> {
    std::fs::read_to_string(output)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn initialized(output: &Path) -> usize {
    std::fs::read_to_string(output)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("#initialize "))
        .count()
}

fn children_rss_kib(pid: u32) -> u64 {
    procs::children_of(pid)
        .into_iter()
        .filter_map(procs::rss_kib)
        .sum()
}

/// Starts a daemon with the recording processor on a stream of `shards` shards holding
/// `records` records; returns (time to first record, time to all, daemon RSS, children RSS).
async fn startup_and_rss(
    aws: &LocalAws,
    dir: &Path,
    kclpy: &KclPy,
    shards: i32,
    records: usize,
) -> Result<(Duration, Duration, u64, u64, usize)> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("measure");
    testkit::create_stream(&kinesis, &stream, shards).await?;
    testkit::put_records(&kinesis, &stream, testkit::numbered_records("m", records)).await?;
    let output = dir.join(format!("{stream}.out"));
    let recorder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/python/recording_processor.py");
    let exe = format!("{} {}", kclpy.python.display(), recorder.display());
    let run = start(aws, dir, &stream, &exe, kclpy, &output, &[])?;
    let first = poll(Duration::from_secs(120), "the first record", || {
        (!record_lines(&output).is_empty()).then(|| run.started.elapsed())
    })
    .await?;
    let all = poll(Duration::from_secs(300), "every record", || {
        (record_lines(&output).len() >= records && initialized(&output) >= shards as usize)
            .then(|| run.started.elapsed())
    })
    .await?;
    // Let the children settle into their idle polling before reading the memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procs::rss_kib(run.pid).context("daemon RSS")?;
    let kids = procs::children_of(run.pid).len();
    let kids_rss = children_rss_kib(run.pid);
    run.stop().await?;
    Ok((first, all, rss, kids_rss, kids))
}

async fn throughput(aws: &LocalAws, dir: &Path, kclpy: &KclPy, n: usize) -> Result<(f64, f64)> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("measure-tput");
    testkit::create_stream(&kinesis, &stream, 4).await?;
    let records: Vec<testkit::PutRecord> = (0..n)
        .map(|i| testkit::PutRecord {
            partition_key: format!("pk-{i}"),
            data: format!("{i:0>100}").into_bytes(),
        })
        .collect();
    let put_start = Instant::now();
    testkit::put_records(&kinesis, &stream, records).await?;
    eprintln!(
        "  (put {n} records in {:.1} s)",
        put_start.elapsed().as_secs_f64()
    );
    let script = dir.join("noop_processor.py");
    std::fs::write(&script, NOOP_PROCESSOR)?;
    let output = dir.join(format!("{stream}.out"));
    let exe = format!("{} {}", kclpy.python.display(), script.display());
    // No pacing between GetRecords calls, and several batches per shard, so that the rate is
    // set by the emulator, the daemon and the Python client rather than by the idle time.
    let run = start(
        aws,
        dir,
        &stream,
        &exe,
        kclpy,
        &output,
        &[
            ("idleTimeBetweenReadsInMillis", "0"),
            ("maxRecords", "1000"),
        ],
    )?;
    let count = |output: &Path| -> usize {
        record_lines(output)
            .iter()
            .filter_map(|l| l.split(' ').nth(1)?.parse::<usize>().ok())
            .sum()
    };
    let first = poll(Duration::from_secs(120), "the first batch", || {
        (count(&output) > 0).then(Instant::now)
    })
    .await?;
    let first_count = count(&output);
    let last = poll(Duration::from_secs(600), "every record", || {
        (count(&output) >= n).then(Instant::now)
    })
    .await?;
    let from_start = n as f64 / (last - run.started).as_secs_f64();
    let span = (last - first).as_secs_f64();
    let steady = if span > 0.0 {
        (n - first_count) as f64 / span
    } else {
        f64::INFINITY
    };
    run.stop().await?;
    Ok((from_start, steady))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let aws = LocalAws::shared().await?;
    eprintln!("{}", aws.startup_report());
    let kclpy = tokio::task::spawn_blocking(clients::kclpy).await??;
    let dir = std::env::temp_dir().join(testkit::unique_name("kcl-measure"));
    std::fs::create_dir_all(&dir)?;
    let env_usize = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "kcl-multilang {profile} build: {}",
        daemon_binary()?.display()
    );

    let (first, all, rss, kids_rss, kids) = startup_and_rss(&aws, &dir, &kclpy, 4, 100).await?;
    println!(
        "4 shards, 100 records: first record delivered {:.0} ms after spawning the daemon, all in {:.0} ms; \
         daemon VmRSS {:.1} MiB ({kids} children: {:.1} MiB together)",
        first.as_secs_f64() * 1000.0,
        all.as_secs_f64() * 1000.0,
        rss as f64 / 1024.0,
        kids_rss as f64 / 1024.0
    );
    let big = env_usize("MEASURE_BIG_SHARDS", 64);
    let (first, all, rss, kids_rss, kids) =
        startup_and_rss(&aws, &dir, &kclpy, big as i32, big * 10).await?;
    println!(
        "{big} shards, {} records: first record {:.0} ms, all in {:.0} ms; daemon VmRSS {:.1} MiB \
         ({kids} children: {:.1} MiB together)",
        big * 10,
        first.as_secs_f64() * 1000.0,
        all.as_secs_f64() * 1000.0,
        rss as f64 / 1024.0,
        kids_rss as f64 / 1024.0
    );
    let n = env_usize("MEASURE_THROUGHPUT_RECORDS", 20000);
    let (from_start, steady) = throughput(&aws, &dir, &kclpy, n).await?;
    println!(
        "no-op kclpy processor (checkpoint per batch), 4 shards, {n} records of 100 bytes, \
         maxRecords 1000, idleTimeBetweenReadsInMillis 0: {steady:.0} records/s from the first batch \
         to the last ({from_start:.0} records/s including daemon start-up)"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
