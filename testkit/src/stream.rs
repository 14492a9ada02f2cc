//! Kinesis helpers for tests: create streams, wait for them, produce records.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamMode, StreamModeDetails, StreamStatus};
use aws_sdk_kinesis::Client;
use aws_smithy_types::Blob;

/// How long [`create_stream`] / [`wait_stream_active`] wait for `ACTIVE`.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(120);
/// How long [`wait_stream_active`] tolerates `ResourceNotFoundException` (propagation delay).
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);
/// How long [`put_records`] keeps retrying failed entries.
const PUT_DEADLINE: Duration = Duration::from_secs(120);
/// PutRecords limits: 500 entries and 5 MiB (data + partition keys) per request.
const MAX_BATCH_RECORDS: usize = 500;
const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;

/// Creates a provisioned stream with `shards` shards and waits until it is `ACTIVE`.
///
/// A `LimitExceededException` (too many streams being created at once) is retried until the
/// deadline; `ResourceInUseException` (the stream exists, e.g. an SDK retry of a create that
/// had succeeded) is accepted and the stream is awaited.
pub async fn create_stream(client: &Client, name: &str, shards: i32) -> Result<()> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .stream_mode_details(
                StreamModeDetails::builder()
                    .stream_mode(StreamMode::Provisioned)
                    .build()?,
            )
            .send()
            .await;
        match result {
            Ok(_) => break,
            Err(e) if e.code() == Some("ResourceInUseException") => break,
            Err(e)
                if e.code() == Some("LimitExceededException")
                    && started.elapsed() < ACTIVE_DEADLINE =>
            {
                tracing::debug!(stream = name, "CreateStream limit exceeded; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow!("{}", DisplayErrorContext(e)))
                    .with_context(|| format!("CreateStream {name} ({shards} shards)"))
            }
        }
    }
    wait_stream_active(client, name).await
}

/// Polls DescribeStreamSummary until the stream is `ACTIVE` (deadline 120 s). A stream that is
/// not found is polled again for up to 10 s (creation may still be propagating), then it is an
/// error.
pub async fn wait_stream_active(client: &Client, name: &str) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let last = match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(out) => {
                let status = out
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone());
                if status == Some(StreamStatus::Active) {
                    return Ok(());
                }
                format!("status {status:?}")
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                if started.elapsed() > NOT_FOUND_GRACE {
                    bail!(
                        "stream {name} does not exist (still not found after {NOT_FOUND_GRACE:?})"
                    );
                }
                "ResourceNotFoundException".to_string()
            }
            Err(e) => {
                return Err(anyhow!("{}", DisplayErrorContext(e)))
                    .with_context(|| format!("DescribeStreamSummary {name}"))
            }
        };
        if started.elapsed() > ACTIVE_DEADLINE {
            bail!("stream {name} not ACTIVE after {ACTIVE_DEADLINE:?} ({last})");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// A record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    /// The partition key (decides the shard).
    pub partition_key: String,
    /// The payload.
    pub data: Vec<u8>,
}

/// A record that was put, with where it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The partition key it was put with.
    pub partition_key: String,
    /// The payload.
    pub data: Vec<u8>,
    /// The shard it landed in.
    pub shard_id: String,
    /// Its sequence number in that shard.
    pub sequence_number: String,
}

/// Error codes that retrying cannot fix.
fn is_permanent(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ResourceNotFoundException"
                | "InvalidArgumentException"
                | "ValidationException"
                | "AccessDeniedException"
                | "KMSAccessDeniedException"
                | "KMSDisabledException"
                | "KMSNotFoundException"
        )
    )
}

/// Splits indices `0..sizes.len()` into consecutive batches within the PutRecords limits.
fn batches(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Puts `records` with PutRecords in batches (≤ 500 records, ≤ 5 MiB), retrying failed entries
/// with backoff until all succeed or 120 s pass. Returns one [`PutResult`] per input, in input
/// order. Retried entries are resent after the ones that succeeded, so the per-partition-key
/// order in the stream can differ from the input order when entries fail.
pub async fn put_records(
    client: &Client,
    stream: &str,
    records: Vec<PutRecord>,
) -> Result<Vec<PutResult>> {
    let started = Instant::now();
    let sizes: Vec<usize> = records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .collect();
    let mut placed: Vec<Option<(String, String)>> = vec![None; records.len()];
    for range in batches(&sizes) {
        let mut pending: Vec<usize> = range.collect();
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::new();
        while !pending.is_empty() {
            if started.elapsed() > PUT_DEADLINE {
                bail!(
                    "PutRecords to {stream}: {} records still failing after {PUT_DEADLINE:?} \
                     ({} placed before); last error: {last_error}",
                    pending.len(),
                    placed.iter().filter(|p| p.is_some()).count()
                );
            }
            let entries = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(records[i].partition_key.clone())
                        .data(Blob::new(records[i].data.clone()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = match client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    if is_permanent(e.code()) {
                        return Err(anyhow!("{}", DisplayErrorContext(e)))
                            .with_context(|| format!("PutRecords to {stream}"));
                    }
                    last_error = DisplayErrorContext(e).to_string();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if out.records().len() != pending.len() {
                bail!(
                    "PutRecords to {stream} answered {} entries for {} records",
                    out.records().len(),
                    pending.len()
                );
            }
            let mut failed = Vec::new();
            for (&i, entry) in pending.iter().zip(out.records()) {
                match (
                    entry.shard_id(),
                    entry.sequence_number(),
                    entry.error_code(),
                ) {
                    (Some(shard), Some(seq), None) => {
                        placed[i] = Some((shard.to_string(), seq.to_string()))
                    }
                    (_, _, code) => {
                        last_error = format!(
                            "{}: {}",
                            code.unwrap_or("no shard id"),
                            entry.error_message().unwrap_or_default()
                        );
                        failed.push(i);
                    }
                }
            }
            if !failed.is_empty() {
                tracing::debug!(
                    stream,
                    failed = failed.len(),
                    "retrying failed PutRecords entries"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            pending = failed;
        }
    }
    Ok(records
        .into_iter()
        .zip(placed)
        .map(|(r, p)| {
            let (shard_id, sequence_number) = p.expect("every record was placed");
            PutResult {
                partition_key: r.partition_key,
                data: r.data,
                shard_id,
                sequence_number,
            }
        })
        .collect())
}

/// `n` records with payload `"<prefix>-<i>"` and partition key `"pk-<i>"` (`i` from 0). The keys
/// hash to effectively random points, so with a few records per shard every shard gets some.
pub fn numbered_records(prefix: &str, n: usize) -> Vec<PutRecord> {
    (0..n)
        .map(|i| PutRecord {
            partition_key: format!("pk-{i}"),
            data: format!("{prefix}-{i}").into_bytes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered() {
        let r = numbered_records("a", 3);
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].partition_key, "pk-2");
        assert_eq!(r[2].data, b"a-2");
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        assert!(batches(&[]).is_empty());
        assert_eq!(batches(&[10; 1200]), vec![0..500, 500..1000, 1000..1200]);
        let mb = 1024 * 1024;
        assert_eq!(batches(&[mb, mb, mb, mb, mb, mb]), vec![0..5, 5..6]);
        assert_eq!(batches(&[MAX_BATCH_BYTES + 1, 1]), vec![0..1, 1..2]);
    }
}
