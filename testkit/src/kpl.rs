//! Real KPL aggregates, made by awslabs' own aggregator: `aws-kinesis-agg` 1.2.3 for Python
//! (PyPI), the library that packs user records in the Kinesis Producer Library's format.
//!
//! [`aws_kinesis_agg`] installs it once into the testkit cache (`pip install --no-deps
//! --target`, with its dependencies pinned: `protobuf` and `six`), under an exclusive file lock
//! into a temporary directory renamed into place when complete, as the other packages.
//! [`aggregate`] runs it (`RecordAggregator.add_user_record`, then `clear_and_get()` and
//! `get_contents()` every `per_aggregate` records) and [`put_aggregates`] puts the aggregates,
//! in order, each with the partition key and explicit hash key the aggregator chose (those of
//! its first user record), as a producer using the library would.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_smithy_types::Blob;
use base64::Engine as _;

use crate::install::{self, tail, MARKER};

/// The pinned `aws-kinesis-agg` version (PyPI).
pub const AWS_KINESIS_AGG_VERSION: &str = "1.2.3";
/// Its dependencies, pinned (it declares `protobuf` unpinned and imports `six`).
const DEPENDENCIES: &[&str] = &["protobuf==7.36.2", "six==1.17.0"];
const PIP_DEADLINE: Duration = Duration::from_secs(300);

/// The `PYTHONPATH` directory holding `aws_kinesis_agg` and its dependencies, installed on
/// first use (blocking: file lock + pip). Remembered for the rest of the process.
pub fn aws_kinesis_agg() -> Result<PathBuf> {
    static CACHED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("aws-kinesis-agg {AWS_KINESIS_AGG_VERSION}: {e}"))
}

fn is_complete(target: &Path) -> bool {
    target.join(MARKER).is_file() && has_packages(target)
}

fn has_packages(dir: &Path) -> bool {
    dir.join("aws_kinesis_agg").join("aggregator.py").is_file()
        && dir.join("google").join("protobuf").is_dir()
}

fn install() -> Result<PathBuf> {
    let python = crate::clients::python3()?;
    let name = format!("aws-kinesis-agg@{AWS_KINESIS_AGG_VERSION}");
    install::install_once(&install::cache_root()?, &name, is_complete, |dir| {
        pip_install(&python, dir)?;
        if !has_packages(dir) {
            bail!(
                "pip finished but {} lacks aws_kinesis_agg or protobuf",
                dir.display()
            );
        }
        Ok(())
    })
}

fn pip_install(python: &Path, dir: &Path) -> Result<()> {
    let log = dir.with_extension("log");
    let out = File::create(&log)?;
    let mut child = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
        ])
        .arg(dir)
        .arg(format!("aws-kinesis-agg=={AWS_KINESIS_AGG_VERSION}"))
        .args(DEPENDENCIES)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    let status = install::wait_within(
        &mut child,
        PIP_DEADLINE,
        "pip install aws-kinesis-agg",
        &log,
    )?;
    let text = tail(&log);
    let _ = fs::remove_file(&log);
    if !status.success() {
        bail!(
            "pip install aws-kinesis-agg=={AWS_KINESIS_AGG_VERSION} {} failed ({status}); it needs \
             PyPI and pip (`apt-get install python3-pip` on Debian/Ubuntu).\n{text}",
            DEPENDENCIES.join(" ")
        );
    }
    Ok(())
}

/// One user record to aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<String>,
    /// Its payload.
    pub data: Vec<u8>,
}

/// `n` user records with payload `"<prefix>-<i>"` and partition key `"pk-<i>"`.
pub fn numbered_user_records(prefix: &str, n: usize) -> Vec<UserRecord> {
    (0..n)
        .map(|i| UserRecord {
            partition_key: format!("pk-{i}"),
            explicit_hash_key: None,
            data: format!("{prefix}-{i}").into_bytes(),
        })
        .collect()
}

/// One aggregate as `aws-kinesis-agg` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The Kinesis record's partition key (the first user record's).
    pub partition_key: String,
    /// The Kinesis record's explicit hash key (the first user record's, if it had one).
    pub explicit_hash_key: Option<String>,
    /// The aggregate's bytes.
    pub data: Vec<u8>,
    /// The user records it holds, in order.
    pub user_records: Vec<UserRecord>,
}

/// Where a put aggregate landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutAggregate {
    /// The aggregate.
    pub aggregate: Aggregate,
    /// Its shard.
    pub shard_id: String,
    /// Its sequence number (every user record's).
    pub sequence_number: String,
}

const AGGREGATE_SCRIPT: &str = r#"
import base64, json, sys
from aws_kinesis_agg.aggregator import RecordAggregator
job = json.load(sys.stdin)
agg = RecordAggregator()
out = []
def flush():
    if agg.get_num_user_records() > 0:
        pk, ehk, data = agg.clear_and_get().get_contents()
        out.append({"pk": pk, "ehk": ehk or None, "data": base64.b64encode(data).decode()})
for i, r in enumerate(job["records"]):
    if i > 0 and i % job["per_aggregate"] == 0:
        flush()
    if agg.add_user_record(r["pk"], base64.b64decode(r["data"]), r.get("ehk")) is not None:
        raise SystemExit("an aggregate filled up before per_aggregate records: use smaller records")
flush()
json.dump(out, sys.stdout)
"#;

/// Aggregates `records`, `per_aggregate` user records per aggregate (the last may hold
/// fewer), with `aws-kinesis-agg` (installed on first use; blocking).
pub fn aggregate(records: &[UserRecord], per_aggregate: usize) -> Result<Vec<Aggregate>> {
    assert!(per_aggregate > 0, "per_aggregate must be at least 1");
    let pythonpath = aws_kinesis_agg()?;
    let python = crate::clients::python3()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let job = serde_json::json!({
        "per_aggregate": per_aggregate,
        "records": records.iter().map(|r| serde_json::json!({
            "pk": r.partition_key,
            "ehk": r.explicit_hash_key,
            "data": b64.encode(&r.data),
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(AGGREGATE_SCRIPT)
        .env("PYTHONPATH", &pythonpath)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = serde_json::to_vec(&job)?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow!("writer thread panicked"))??;
    if !out.status.success() {
        bail!(
            "aws-kinesis-agg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let made: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "aws-kinesis-agg printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let mut chunks = records.chunks(per_aggregate);
    made.into_iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Ok(Aggregate {
                partition_key: field("pk").ok_or_else(|| anyhow!("no pk in {a}"))?,
                explicit_hash_key: field("ehk"),
                data: b64.decode(field("data").ok_or_else(|| anyhow!("no data in {a}"))?)?,
                user_records: chunks
                    .next()
                    .ok_or_else(|| anyhow!("more aggregates than chunks"))?
                    .to_vec(),
            })
        })
        .collect()
}

/// Puts `aggregates` one at a time, in order (so their order in each shard is theirs), with
/// the aggregate's partition key and explicit hash key. Retries throttling and server errors
/// for up to 120 s per record.
pub async fn put_aggregates(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    aggregates: Vec<Aggregate>,
) -> Result<Vec<PutAggregate>> {
    let mut out = Vec::with_capacity(aggregates.len());
    for aggregate in aggregates {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let put = loop {
            let result = client
                .put_record()
                .stream_name(stream)
                .partition_key(&aggregate.partition_key)
                .set_explicit_hash_key(aggregate.explicit_hash_key.clone())
                .data(Blob::new(aggregate.data.clone()))
                .send()
                .await;
            match result {
                Ok(put) => break put,
                Err(e) if started.elapsed() < Duration::from_secs(120) => {
                    tracing::debug!(error = %DisplayErrorContext(&e), "PutRecord failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(anyhow!("{}", DisplayErrorContext(e)))
                        .with_context(|| format!("PutRecord to {stream}"))
                }
            }
        };
        out.push(PutAggregate {
            shard_id: put.shard_id().to_string(),
            sequence_number: put.sequence_number().to_string(),
            aggregate,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered() {
        let r = numbered_user_records("u", 3);
        assert_eq!(r[2].partition_key, "pk-2");
        assert_eq!(r[2].data, b"u-2");
    }
}
