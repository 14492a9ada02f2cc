//! Bounded prefetch of one shard's records (polling GetRecords, like the Java KCL's
//! prefetching record publisher).
//!
//! A task per shard calls GetRecords ahead of the processor, at most `max_pending_batches`
//! batches and `max_pending_bytes` bytes ahead (and within the worker's shared
//! [`PrefetchBudget`]), never more often than `idle_time_between_reads` (at least 200 ms:
//! Kinesis allows 5 reads per second per shard, shared by every consumer of the shard).
//!
//! * The first iterator is `AT_SEQUENCE_NUMBER` of the checkpoint (the checkpointed record is
//!   read again and filtered out, with everything at or below the checkpoint, so sub-sequence
//!   checkpoints work), or the initial position for a new lease.
//! * Every response becomes a batch in one place, [`BatchPreparer::prepare`]: KPL aggregates
//!   are de-aggregated first ([`super::deaggregation`]), then what is at or below the
//!   checkpoint is dropped, so a checkpoint inside an aggregate resumes right after its user
//!   record. Any other record source (fan-out) goes through the same function.
//! * A replacement iterator never skips a record: it is `AFTER_SEQUENCE_NUMBER` of the last
//!   record fetched, or, before the first record, the start position again, except that
//!   `LATEST` is never resolved twice (it would point past every record that arrived
//!   meanwhile): a fetcher that started at `LATEST` resumes at `AT_TIMESTAMP` of the time
//!   its first iterator was requested ([`StreamClient::now`], the stream's clock).
//! * An expired (or invalid) iterator is replaced at once.
//! * Throttling backs off exponentially and retries the same iterator, logging a warning (an
//!   error after 5 in a row).
//! * Other transient failures (HTTP 500s, timeouts) also back off and retry the same
//!   iterator; only after [`TRANSIENT_RETRIES_PER_ITERATOR`] in a row is the iterator replaced
//!   (some emulators answer an invalid iterator with HTTP 500).
//! * The shard has ended when a response has no next iterator; Kinesis then lists the child
//!   shards. A final response without children is re-read (up to 3 times) before it is
//!   believed, as the Java KCL validates it.
//!
//! Read-ahead is bounded in bytes: a batch waits (in the fetcher, which stops reading) until
//! the shard's buffered batches and the worker's [`PrefetchBudget`] have room for it; a batch
//! larger than either bound takes the whole bound (it is delivered alone, never deadlocks).
//! The bounds count batches fetched and not yet handed to the consumer; at most one more
//! GetRecords response per shard (the one waiting for room) is held beyond them.

use super::deaggregation::{deaggregate, Outcome, KPL_MAGIC};
use super::{ChildShard, IteratorPosition, RetrievalFailure, StreamClient};
use crate::backoff::Backoff;
use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::HashKeyRange;
use crate::record::Record;
use crate::telemetry::ShardMetrics;
use std::cmp::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::validation::MIN_IDLE_TIME_BETWEEN_READS;

/// Transient GetRecords failures (not throttling) in a row after which the iterator is
/// replaced (from a position that skips nothing).
pub const TRANSIENT_RETRIES_PER_ITERATOR: u32 = 3;

/// A byte budget for read-ahead, shared by the fetchers that hold a clone (a worker's
/// fetchers share one). Counted in KiB.
#[derive(Debug, Clone)]
pub struct PrefetchBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

impl PrefetchBudget {
    /// A budget of `max_bytes` (rounded up to whole KiB, at least 1 KiB, at most 4 TiB).
    pub fn new(max_bytes: usize) -> Self {
        let kib = max_bytes.div_ceil(1024).clamp(1, u32::MAX as usize) as u32;
        PrefetchBudget {
            permits: Arc::new(Semaphore::new(kib as usize)),
            total_kib: kib,
        }
    }

    /// The budget, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.total_kib as usize * 1024
    }

    /// Bytes of batches buffered now (rounded up to KiB per batch).
    pub fn buffered_bytes(&self) -> usize {
        (self.total_kib as usize - self.permits.available_permits()) * 1024
    }

    /// Wait until some of the budget is free.
    async fn has_room(&self) {
        drop(self.permits.acquire().await.expect("never closed"));
    }

    /// Take `bytes` of the budget (all of it, if `bytes` exceeds it), waiting for room.
    async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        let kib = bytes.div_ceil(1024).min(self.total_kib as usize) as u32;
        self.permits
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("never closed")
    }
}

/// The size of a record for the read-ahead bounds: data plus partition key.
fn record_bytes(r: &Record) -> usize {
    r.data.len() + r.partition_key.len()
}

/// Settings of a fetcher.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// `Limit` of each GetRecords call (1..=10 000).
    pub max_records: u32,
    /// Pause between calls (raised to 200 ms if lower).
    pub idle_time_between_reads: Duration,
    /// Batches fetched ahead of the processor.
    pub max_pending_batches: usize,
    /// Bytes of records fetched ahead of the processor for this shard.
    pub max_pending_bytes: usize,
    /// The worker's read-ahead budget, shared with its other fetchers.
    pub budget: PrefetchBudget,
    /// De-aggregate KPL aggregates (else they are delivered as they are).
    pub deaggregate: bool,
    /// The shard's hash key range, when known: user records of aggregates outside it are
    /// counted (and delivered).
    pub hash_key_range: Option<HashKeyRange>,
}

/// Where a fetcher starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPosition {
    /// The first iterator's position.
    pub position: IteratorPosition,
    /// Records at or below this are dropped (already checkpointed).
    pub skip_through: Option<ExtendedSequenceNumber>,
}

/// One batch for the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    /// Records not yet checkpointed, in order.
    pub records: Vec<Record>,
    /// Some of `records` were de-aggregated from KPL aggregates.
    pub deaggregated: bool,
    /// How far behind the tip of the shard.
    pub millis_behind_latest: Option<i64>,
    /// `Some(children)` when this is the shard's last batch.
    pub shard_end: Option<Vec<ChildShard>>,
}

/// A batch in the queue, holding its share of the byte bounds until it is taken.
struct Buffered {
    batch: FetchedBatch,
    _shard: Option<OwnedSemaphorePermit>,
    _worker: Option<OwnedSemaphorePermit>,
}

/// How far a fetcher got: where a replacement must start so as to skip nothing.
#[derive(Debug, Default)]
struct Progress {
    /// The last record fetched.
    last_sequence: Option<String>,
    /// When the first `LATEST` iterator was requested (the stream's clock).
    latest_requested_at: Option<SystemTime>,
}

/// Where to resume without skipping anything: after the last record fetched, else the start
/// position, with `LATEST` replaced by `AT_TIMESTAMP` once it was resolved.
fn resume_position(start: &IteratorPosition, progress: &Progress) -> IteratorPosition {
    match (&progress.last_sequence, start, progress.latest_requested_at) {
        (Some(s), _, _) => IteratorPosition::AfterSequenceNumber(s.clone()),
        (None, IteratorPosition::Latest, Some(t)) => IteratorPosition::AtTimestamp(t),
        (None, p, _) => p.clone(),
    }
}

/// Handle to a running fetcher; dropping it stops the task.
#[derive(Debug)]
pub struct Fetcher {
    rx: mpsc::Receiver<Buffered>,
    stop: CancellationToken,
    start: StartPosition,
    progress: Arc<Mutex<Progress>>,
}

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.batch.fmt(f)
    }
}

impl Fetcher {
    /// Start fetching `shard_id` from `start`.
    pub fn spawn(
        stream: Arc<dyn StreamClient>,
        shard_id: String,
        start: StartPosition,
        config: FetcherConfig,
    ) -> Fetcher {
        let (tx, rx) = mpsc::channel(config.max_pending_batches.max(1));
        let stop = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let task = FetchTask {
            metrics: ShardMetrics::new(&shard_id),
            stream,
            shard_id,
            start: start.clone(),
            shard_budget: PrefetchBudget::new(config.max_pending_bytes),
            config,
            tx,
            progress: progress.clone(),
        };
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {}
                _ = task.run() => {}
            }
        });
        Fetcher {
            rx,
            stop,
            start,
            progress,
        }
    }

    /// The next batch; `None` after the shard-end batch was delivered, or if the fetcher task
    /// died (then [`Fetcher::resume_from`] says where a replacement starts).
    pub async fn next(&mut self) -> Option<FetchedBatch> {
        self.rx.recv().await.map(|b| b.batch)
    }

    /// Where a replacement fetcher starts so that it skips nothing and repeats nothing of what
    /// this one fetched: after its last record, or where it started (`LATEST` replaced by
    /// `AT_TIMESTAMP` of its first iterator, never resolved again).
    pub fn resume_from(&self) -> StartPosition {
        let progress = self.progress.lock().unwrap();
        StartPosition {
            position: resume_position(&self.start.position, &progress),
            skip_through: self.start.skip_through.clone(),
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The one point where a stream response becomes a batch for the consumer, for every record
/// source (the polling fetcher here; a fan-out subscription too). For each record, in order:
///
/// 1. KPL aggregates are de-aggregated ([`deaggregate`]) unless turned off; a record with the
///    magic bytes that is not a valid aggregate is passed on whole, with a warning naming the
///    shard and sequence number; user records outside the shard's hash key range are passed
///    on, counted, and logged once per shard;
/// 2. records at or below the checkpoint the shard started from are dropped (after
///    de-aggregation, so a checkpoint inside an aggregate resumes right after its user
///    record). A record that was *not* de-aggregated at the sequence number of a checkpoint
///    inside an aggregate (de-aggregation off here, on where the checkpoint was written) is
///    delivered whole rather than dropped, with the checkpoint's sub-sequence number (so that
///    checkpointing it keeps that checkpoint).
#[derive(Debug)]
pub(crate) struct BatchPreparer {
    shard_id: String,
    /// Records at or below this were processed already; `None` once a record above it passed
    /// (records arrive in order: nothing after it can be at or below).
    skip_through: Option<ExtendedSequenceNumber>,
    deaggregate: bool,
    hash_key_range: Option<HashKeyRange>,
    /// User records outside the shard's range so far (delivered).
    outside_hash_range: u64,
    /// Records with the magic bytes that were not valid aggregates (delivered raw).
    corrupt: u64,
}

impl BatchPreparer {
    /// For `shard_id`, starting after `skip_through` (the checkpoint), de-aggregating unless
    /// `deaggregate` is false; `hash_key_range` is the shard's, when known.
    pub(crate) fn new(
        shard_id: impl Into<String>,
        skip_through: Option<ExtendedSequenceNumber>,
        deaggregate: bool,
        hash_key_range: Option<HashKeyRange>,
    ) -> Self {
        BatchPreparer {
            shard_id: shard_id.into(),
            skip_through,
            deaggregate,
            hash_key_range,
            outside_hash_range: 0,
            corrupt: 0,
        }
    }

    /// The batch for the consumer made of one response's `records` (in sequence order).
    pub(crate) fn prepare(
        &mut self,
        records: Vec<Record>,
        millis_behind_latest: Option<i64>,
        shard_end: Option<Vec<ChildShard>>,
    ) -> FetchedBatch {
        if !self.deaggregate || !records.iter().any(|r| r.data.starts_with(&KPL_MAGIC)) {
            // No aggregate: the response's records as they are, in the response's own `Vec`
            // (a new one per batch costs the pipeline more than de-aggregation itself).
            let mut out = records;
            self.skip_checkpointed(&mut out, 0);
            return FetchedBatch {
                records: out,
                deaggregated: false,
                millis_behind_latest,
                shard_end,
            };
        }
        let mut out = Vec::with_capacity(records.len());
        let mut deaggregated = false;
        for record in records {
            let first = out.len();
            if self.deaggregate {
                let outcome = deaggregate(record, self.hash_key_range, &mut out);
                deaggregated |= matches!(outcome, Outcome::Aggregate { .. });
                self.report(&outcome, &out[first..]);
            } else {
                out.push(record);
            }
            if self.skip_through.is_some() {
                self.skip_checkpointed(&mut out, first);
            }
        }
        FetchedBatch {
            deaggregated: deaggregated && out.iter().any(|r| r.aggregated),
            records: out,
            millis_behind_latest,
            shard_end,
        }
    }

    fn report(&mut self, outcome: &Outcome, produced: &[Record]) {
        let shard = self.shard_id.as_str();
        let sequence_number = produced.first().map_or("", |r| r.sequence_number.as_str());
        match outcome {
            Outcome::Corrupt(why) => {
                self.corrupt += 1;
                tracing::warn!(shard_id = shard, sequence_number, reason = %why,
                    "a record starting with the KPL aggregate magic bytes is not a valid aggregate; delivering it as it is");
            }
            Outcome::Aggregate {
                outside_hash_range, ..
            } if *outside_hash_range > 0 => {
                if self.outside_hash_range == 0 {
                    let range = self
                        .hash_key_range
                        .map(|r| format!("{}..={}", r.start, r.end));
                    tracing::warn!(shard_id = shard, sequence_number, count = outside_hash_range, hash_key_range = ?range,
                        "user records of a KPL aggregate have hash keys outside this shard's range (the producer's shard map was stale, or its aggregator ignores shards); \
                         they exist only in this shard and are delivered (the Java KCL drops such aggregates whole); further ones on this shard are counted, not logged");
                }
                self.outside_hash_range += *outside_hash_range as u64;
            }
            _ => {}
        }
    }

    /// Drop the records of `out[from..]` at or below the checkpoint.
    fn skip_checkpointed(&mut self, out: &mut Vec<Record>, from: usize) {
        let Some(cp) = &self.skip_through else {
            return;
        };
        let mut keep_from = out.len();
        for (i, r) in out.iter_mut().enumerate().skip(from) {
            match cp.position_cmp(&r.sequence_number, r.sub_sequence_number) {
                Some(Ordering::Greater) => {
                    keep_from = i;
                    break;
                }
                Some(Ordering::Less)
                    if !r.aggregated
                        && cp.sub_sequence_number() > 0
                        && cp.position_cmp(&r.sequence_number, u64::MAX)
                            == Some(Ordering::Greater) =>
                {
                    tracing::warn!(shard_id = %self.shard_id, sequence_number = %r.sequence_number, checkpoint = %cp,
                        "the checkpoint lies inside this record, which was not de-aggregated here; delivering it whole (its user records up to the checkpoint again)");
                    r.sub_sequence_number = cp.sub_sequence_number();
                    keep_from = i;
                    break;
                }
                _ => {}
            }
        }
        out.drain(from..keep_from);
        if out.len() > from {
            self.skip_through = None;
        }
    }
}

impl Drop for BatchPreparer {
    fn drop(&mut self) {
        if self.outside_hash_range > 0 || self.corrupt > 0 {
            tracing::info!(
                shard_id = %self.shard_id,
                outside_hash_range = self.outside_hash_range,
                corrupt_aggregates = self.corrupt,
                "KPL de-aggregation on this shard: user records outside its hash key range and invalid aggregates, all delivered"
            );
        }
    }
}

struct FetchTask {
    metrics: ShardMetrics,
    stream: Arc<dyn StreamClient>,
    shard_id: String,
    start: StartPosition,
    config: FetcherConfig,
    shard_budget: PrefetchBudget,
    tx: mpsc::Sender<Buffered>,
    progress: Arc<Mutex<Progress>>,
}

impl FetchTask {
    /// Send `batch` once the byte bounds have room for it; false when the consumer is gone.
    async fn send(&self, batch: FetchedBatch) -> bool {
        let bytes: usize = batch.records.iter().map(record_bytes).sum();
        let (shard, worker) = if bytes == 0 {
            (None, None)
        } else {
            let shard = self.shard_budget.take(bytes).await;
            (Some(shard), Some(self.config.budget.take(bytes).await))
        };
        self.tx
            .send(Buffered {
                batch,
                _shard: shard,
                _worker: worker,
            })
            .await
            .is_ok()
    }

    async fn shard_gone(&self) {
        self.send(FetchedBatch {
            records: Vec::new(),
            deaggregated: false,
            millis_behind_latest: None,
            shard_end: Some(Vec::new()),
        })
        .await;
    }

    async fn run(self) {
        let shard = self.shard_id.as_str();
        let idle = self
            .config
            .idle_time_between_reads
            .max(MIN_IDLE_TIME_BETWEEN_READS);
        let mut backoff = Backoff::new(idle, Duration::from_secs(10));
        let mut iterator: Option<String> = None;
        let mut last_call: Option<Instant> = None;
        let (mut throttled, mut transient, mut unconfirmed_ends) = (0u32, 0u32, 0u32);
        let mut preparer = BatchPreparer::new(
            shard,
            self.start.skip_through.clone(),
            self.config.deaggregate,
            self.config.hash_key_range,
        );
        loop {
            if iterator.is_none() {
                let position = {
                    let progress = self.progress.lock().unwrap();
                    resume_position(&self.start.position, &progress)
                };
                let requested_at = self.stream.now();
                match self.stream.get_shard_iterator(shard, &position).await {
                    Ok(Some(it)) => {
                        if position == IteratorPosition::Latest {
                            let mut progress = self.progress.lock().unwrap();
                            progress.latest_requested_at.get_or_insert(requested_at);
                        }
                        iterator = Some(it);
                    }
                    Ok(None) => {
                        tracing::warn!(
                            shard_id = shard,
                            "shard no longer exists; treating it as ended with no children"
                        );
                        self.shard_gone().await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(shard_id = shard, error = %e, "could not get a shard iterator; retrying");
                        tokio::time::sleep(backoff.next().unwrap_or(idle)).await;
                        continue;
                    }
                }
            }
            if let Some(t) = last_call {
                tokio::time::sleep_until(t + idle).await;
            }
            // Read ahead only while the shard and the worker have room for more.
            self.shard_budget.has_room().await;
            self.config.budget.has_room().await;
            last_call = Some(Instant::now());
            let it = iterator.clone().expect("iterator set above");
            let result = self
                .stream
                .get_records(shard, &it, self.config.max_records)
                .await;
            self.metrics.get_records(
                result.is_ok(),
                last_call.map(|t| t.elapsed()).unwrap_or_default(),
            );
            match result {
                Ok(batch) => {
                    throttled = 0;
                    transient = 0;
                    backoff.reset();
                    if let Some(last) = batch.records.last() {
                        self.progress.lock().unwrap().last_sequence =
                            Some(last.sequence_number.clone());
                    }
                    let at_end = batch.next_iterator.is_none();
                    if at_end
                        && batch.child_shards.is_empty()
                        && unconfirmed_ends < 3
                        && batch.records.is_empty()
                    {
                        unconfirmed_ends += 1;
                        tracing::debug!(
                            shard_id = shard,
                            "end of shard without child shards; reading again to confirm"
                        );
                        continue;
                    }
                    let out = preparer.prepare(
                        batch.records,
                        batch.millis_behind_latest,
                        at_end.then_some(batch.child_shards),
                    );
                    if !self.send(out).await || at_end {
                        return;
                    }
                    iterator = batch.next_iterator;
                }
                Err(e) => match e.failure {
                    RetrievalFailure::ExpiredIterator => {
                        self.metrics.expired_iterator();
                        let progress = format!("{:?}", self.progress.lock().unwrap());
                        tracing::info!(shard_id = shard, %progress, "shard iterator expired; getting a new one");
                        iterator = None;
                    }
                    RetrievalFailure::Throttled => {
                        throttled += 1;
                        if throttled >= 5 {
                            tracing::error!(shard_id = shard, consecutive = throttled, error = %e, "reads keep being throttled: is another application reading this shard?");
                        } else {
                            tracing::warn!(shard_id = shard, error = %e, "read throttled; backing off");
                        }
                        tokio::time::sleep(backoff.next().unwrap_or(idle)).await;
                    }
                    RetrievalFailure::ResourceNotFound => {
                        tracing::warn!(shard_id = shard, error = %e, "shard gone while reading; treating it as ended with no children");
                        self.shard_gone().await;
                        return;
                    }
                    _ => {
                        transient += 1;
                        tracing::warn!(shard_id = shard, error = %e, consecutive = transient, "read failed; retrying the same iterator");
                        if transient >= TRANSIENT_RETRIES_PER_ITERATOR {
                            // Perhaps an invalid iterator reported as a server error: replace
                            // it, from a position that skips nothing.
                            iterator = None;
                            transient = 0;
                        }
                        tokio::time::sleep(backoff.next().unwrap_or(idle)).await;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::deaggregation::{aggregate as kpl_aggregate, UserRecordSpec};
    use crate::retrieval::memory::{StreamFault, StreamOp};
    use crate::retrieval::InMemoryStream;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config() -> FetcherConfig {
        FetcherConfig {
            max_records: 10,
            idle_time_between_reads: MIN_IDLE_TIME_BETWEEN_READS,
            max_pending_batches: 2,
            max_pending_bytes: 8 << 20,
            budget: PrefetchBudget::new(64 << 20),
            deaggregate: true,
            hash_key_range: None,
        }
    }

    async fn drain(fetcher: &mut Fetcher, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        // One deadline for all: empty batches keep coming while records are missing.
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < want {
            let Ok(batch) = tokio::time::timeout_at(deadline, fetcher.next()).await else {
                panic!("only {} of {want} records within 600 s: {got:?}", got.len());
            };
            let batch = batch.expect("open shard");
            got.extend(batch.records.into_iter().map(|r| r.sequence_number));
        }
        got
    }

    /// Expired iterators resume after the last record fetched; throttling and timeouts back
    /// off and retry: every record arrives exactly once, in order.
    #[tokio::test(start_paused = true)]
    async fn recovers_from_expired_iterators_throttling_and_timeouts_without_loss_or_repeats() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        let put: Vec<String> = (0..50)
            .map(|i| stream.put("pk", format!("r{i}").as_bytes()).1)
            .collect();
        let calls = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(Arc::new({
            let calls = calls.clone();
            move |op: StreamOp, _: Option<&str>| {
                if op != StreamOp::GetRecords {
                    return None;
                }
                match calls.fetch_add(1, Ordering::SeqCst) {
                    1 | 5 => Some(StreamFault::ExpireIterator),
                    2 | 3 => Some(StreamFault::Throttle),
                    7 => Some(StreamFault::Timeout),
                    _ => None,
                }
            }
        })));
        let start = StartPosition {
            position: IteratorPosition::TrimHorizon,
            skip_through: None,
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream.clone()), shard, start, config());
        assert_eq!(drain(&mut fetcher, 50).await, put);
        assert!(
            calls.load(Ordering::SeqCst) > 8,
            "the faults were all injected"
        );
    }

    /// Starting at a checkpoint re-reads the checkpointed record and filters everything up to it.
    #[tokio::test(start_paused = true)]
    async fn starts_after_the_checkpoint() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        let put: Vec<String> = (0..20)
            .map(|i| stream.put("pk", format!("r{i}").as_bytes()).1)
            .collect();
        let checkpoint = ExtendedSequenceNumber::new(put[9].clone(), 0).unwrap();
        let start = StartPosition {
            position: IteratorPosition::AtSequenceNumber(put[9].clone()),
            skip_through: Some(checkpoint),
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream), shard, start, config());
        assert_eq!(drain(&mut fetcher, 10).await, put[10..].to_vec());
    }

    fn user_records(prefix: &str, n: usize) -> Vec<UserRecordSpec> {
        (0..n)
            .map(|i| UserRecordSpec {
                partition_key: format!("{prefix}-pk-{i}"),
                explicit_hash_key: None,
                data: format!("{prefix}-{i}").into_bytes(),
            })
            .collect()
    }

    /// (sequence number, sub-sequence number, payload) of everything delivered until `want`.
    async fn drain_user_records(fetcher: &mut Fetcher, want: usize) -> Vec<(String, u64, String)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < want {
            let Ok(Some(batch)) = tokio::time::timeout_at(deadline, fetcher.next()).await else {
                panic!("only {} of {want} records: {got:?}", got.len());
            };
            assert_eq!(
                batch.deaggregated,
                batch.records.iter().any(|r| r.aggregated)
            );
            got.extend(batch.records.into_iter().map(|r| {
                let data = String::from_utf8(r.data.to_vec()).unwrap();
                (r.sequence_number, r.sub_sequence_number, data)
            }));
        }
        got
    }

    /// The user's report: a Java worker checkpointed at (X, 3) inside an aggregate; resuming
    /// at `AT_SEQUENCE_NUMBER X` delivers exactly X's user records 4.. and what follows
    /// (filtering before de-aggregation dropped X whole).
    #[tokio::test(start_paused = true)]
    async fn resumes_inside_an_aggregate_right_after_the_checkpointed_user_record() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        let (_, before) = stream.put("pk", b"plain-before");
        let (_, x) = stream.put_aggregate(&user_records("x", 10));
        let (_, after) = stream.put("pk", b"plain-after");
        let (_, y) = stream.put_aggregate(&user_records("y", 2));
        let start = StartPosition {
            position: IteratorPosition::AtSequenceNumber(x.clone()),
            skip_through: Some(ExtendedSequenceNumber::new(x.clone(), 3).unwrap()),
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream), shard, start, config());
        let mut want: Vec<(String, u64, String)> =
            (4..10).map(|i| (x.clone(), i, format!("x-{i}"))).collect();
        want.push((after, 0, "plain-after".into()));
        want.extend((0..2).map(|i| (y.clone(), i, format!("y-{i}"))));
        assert_eq!(drain_user_records(&mut fetcher, want.len()).await, want);
        let _ = before;
    }

    /// Captures log lines (for the tests that check what is logged).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let logs = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        fn lines(&self, containing: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(containing))
                .map(str::to_string)
                .collect()
        }
    }

    /// Records of aggregates outside the shard's hash key range are all delivered; the first
    /// such aggregate is logged (once per shard), the total when the shard's fetcher stops.
    /// A corrupt aggregate is delivered raw with a warning naming the shard and sequence number.
    #[test]
    fn outside_the_range_delivered_and_logged_once_corrupt_delivered_raw_with_a_warning() {
        let logs = Logs::default();
        let _guard = logs.capture();
        let shard = "shardId-000000000007";
        let range = HashKeyRange {
            start: 0,
            end: u128::MAX / 2,
        };
        let mut preparer = BatchPreparer::new(shard, None, true, Some(range));
        let mut records = Vec::new();
        let mut want = 0;
        for a in 0..3u64 {
            let specs = user_records(&format!("a{a}"), 20);
            want += specs.len();
            records.push(Record::new(
                kpl_aggregate(&specs),
                "pk",
                format!("{}", 100 + a),
            ));
        }
        let mut corrupt = kpl_aggregate(&user_records("c", 2));
        *corrupt.last_mut().unwrap() ^= 1;
        records.push(Record::new(corrupt.clone(), "pk", "200"));
        let batch = preparer.prepare(records, None, None);
        assert_eq!(batch.records.len(), want + 1, "everything is delivered");
        assert!(batch.deaggregated);
        assert_eq!(batch.records[want].data, corrupt, "the corrupt record, raw");
        assert!(!batch.records[want].aggregated);
        let outside = logs.lines("outside this shard's range");
        assert_eq!(outside.len(), 1, "{outside:?}");
        assert!(
            outside[0].contains(shard) && outside[0].contains("sequence_number=\"100\""),
            "{outside:?}"
        );
        let warned = logs.lines("not a valid aggregate");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("WARN")
                && warned[0].contains(shard)
                && warned[0].contains("sequence_number=\"200\"")
                && warned[0].contains("MD5"),
            "{warned:?}"
        );
        let counted = preparer.outside_hash_range;
        assert!(
            counted > 20,
            "most of 60 random keys are outside half the range: {counted}"
        );
        drop(preparer);
        let total = logs.lines("KPL de-aggregation on this shard");
        assert_eq!(total.len(), 1, "{total:?}");
        assert!(
            total[0].contains(&format!("outside_hash_range={counted}"))
                && total[0].contains("corrupt_aggregates=1"),
            "{total:?}"
        );
    }

    /// With de-aggregation off, an aggregate is one record; a checkpoint inside it (written
    /// by a worker that de-aggregates) delivers it whole, with the checkpoint's sub-sequence
    /// number, instead of dropping it. A checkpoint at (X, 0) still skips X.
    #[test]
    fn without_deaggregation_a_checkpoint_inside_an_aggregate_delivers_it_whole() {
        let aggregate = kpl_aggregate(&user_records("x", 5));
        let batch = |cp_sub: u64| {
            let cp = ExtendedSequenceNumber::new("100", cp_sub).unwrap();
            let mut preparer = BatchPreparer::new("shardId-0", Some(cp), false, None);
            let records = vec![
                Record::new(b"old".to_vec(), "pk", "99"),
                Record::new(aggregate.clone(), "pk", "100"),
                Record::new(b"new".to_vec(), "pk", "101"),
            ];
            preparer.prepare(records, None, None)
        };
        let inside = batch(3);
        assert!(!inside.deaggregated);
        let got: Vec<(&str, u64)> = inside
            .records
            .iter()
            .map(|r| (r.sequence_number.as_str(), r.sub_sequence_number))
            .collect();
        assert_eq!(got, vec![("100", 3), ("101", 0)]);
        assert_eq!(inside.records[0].data, aggregate);
        let at = batch(0);
        let got: Vec<&str> = at
            .records
            .iter()
            .map(|r| r.sequence_number.as_str())
            .collect();
        assert_eq!(got, vec!["101"]);
    }

    /// Never more than 5 GetRecords per second on a shard, however fast the consumer is.
    #[tokio::test(start_paused = true)]
    async fn respects_the_per_shard_read_limit() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        for i in 0..200 {
            stream.put("pk", format!("r{i}").as_bytes());
        }
        let started = Instant::now();
        let start = StartPosition {
            position: IteratorPosition::TrimHorizon,
            skip_through: None,
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream.clone()), shard, start, config());
        drain(&mut fetcher, 200).await;
        // n calls are n - 1 pauses of at least 200 ms.
        let calls = stream.get_records_calls() as u32;
        let elapsed = started.elapsed();
        assert!(
            calls >= 20 && MIN_IDLE_TIME_BETWEEN_READS * (calls - 1) <= elapsed,
            "{calls} calls in {elapsed:?}"
        );
    }

    /// Counts GetShardIterator calls; GetRecords fails with a transient (500-style) error while
    /// `outage` holds.
    fn outage_injector(
        iterators: Arc<AtomicU32>,
        outage: impl Fn(u32) -> Option<StreamFault> + Send + Sync + 'static,
    ) -> Arc<dyn crate::retrieval::memory::StreamFaultInjector> {
        let reads = AtomicU32::new(0);
        Arc::new(move |op: StreamOp, _: Option<&str>| match op {
            StreamOp::GetShardIterator => {
                iterators.fetch_add(1, Ordering::SeqCst);
                None
            }
            StreamOp::GetRecords => outage(reads.fetch_add(1, Ordering::SeqCst)),
            StreamOp::ListShards => None,
        })
    }

    /// The user's report: a shard started at LATEST, after the first empty reads every
    /// GetRecords fails (HTTP 500) for 12 s while 24 records are put: all of them arrive, and
    /// 500s never replace the iterator by a new LATEST one.
    #[tokio::test(start_paused = true)]
    async fn transient_errors_at_latest_before_the_first_record_lose_nothing() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        for i in 0..5 {
            stream.put("pk", format!("old{i}").as_bytes());
        }
        // Records before the start are not wanted (AT_TIMESTAMP includes its own instant).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let iterators = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(outage_injector(iterators.clone(), move |read| {
            let t = t0.elapsed();
            (read >= 2 && t < Duration::from_secs(13)).then_some(StreamFault::Timeout)
        })));
        let start = StartPosition {
            position: IteratorPosition::Latest,
            skip_through: None,
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream.clone()), shard, start, config());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut put = Vec::new();
        for i in 0..24 {
            put.push(stream.put("pk", format!("r{i}").as_bytes()).1);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(drain(&mut fetcher, 24).await, put);
        assert!(
            iterators.load(Ordering::SeqCst) > 1,
            "the outage outlasted the retries of one iterator"
        );
    }

    /// An iterator that expires before the first record at LATEST: the new one starts where
    /// the first did, not at a new LATEST past the records that arrived meanwhile.
    #[tokio::test(start_paused = true)]
    async fn an_iterator_expiring_before_the_first_record_at_latest_loses_nothing() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        let iterators = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(outage_injector(iterators.clone(), |read| {
            (read == 3).then_some(StreamFault::ExpireIterator)
        })));
        let start = StartPosition {
            position: IteratorPosition::Latest,
            skip_through: None,
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream.clone()), shard, start, config());
        // Reads 0..=2 come back empty; records arrive just before the read that fails.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let put: Vec<String> = (0..5)
            .map(|i| stream.put("pk", format!("r{i}").as_bytes()).1)
            .collect();
        assert_eq!(drain(&mut fetcher, 5).await, put);
        assert_eq!(
            iterators.load(Ordering::SeqCst),
            2,
            "the expired one was replaced once"
        );
    }

    /// Throttling and a couple of 500s keep the iterator: no new GetShardIterator.
    #[tokio::test(start_paused = true)]
    async fn throttling_and_isolated_server_errors_keep_the_iterator() {
        let stream = InMemoryStream::new("s", 1);
        let shard = stream.shards()[0].shard_id.clone();
        let put: Vec<String> = (0..30)
            .map(|i| stream.put("pk", format!("r{i}").as_bytes()).1)
            .collect();
        let iterators = Arc::new(AtomicU32::new(0));
        stream.set_fault_injector(Some(outage_injector(
            iterators.clone(),
            |read| match read {
                1..=8 => Some(StreamFault::Throttle),
                9 | 10 | 12 | 13 => Some(StreamFault::Timeout),
                _ => None,
            },
        )));
        let start = StartPosition {
            position: IteratorPosition::TrimHorizon,
            skip_through: None,
        };
        let mut fetcher = Fetcher::spawn(Arc::new(stream.clone()), shard, start, config());
        assert_eq!(drain(&mut fetcher, 30).await, put);
        assert_eq!(iterators.load(Ordering::SeqCst), 1);
    }

    /// Counts the bytes GetRecords returned.
    #[derive(Debug)]
    struct Counting {
        inner: InMemoryStream,
        fetched: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl StreamClient for Counting {
        fn stream_name(&self) -> &str {
            self.inner.stream_name()
        }
        async fn list_shards(
            &self,
        ) -> Result<Vec<crate::retrieval::Shard>, crate::retrieval::RetrievalError> {
            self.inner.list_shards().await
        }
        async fn get_shard_iterator(
            &self,
            shard_id: &str,
            position: &IteratorPosition,
        ) -> Result<Option<String>, crate::retrieval::RetrievalError> {
            self.inner.get_shard_iterator(shard_id, position).await
        }
        async fn get_records(
            &self,
            shard_id: &str,
            iterator: &str,
            limit: u32,
        ) -> Result<crate::retrieval::RecordBatch, crate::retrieval::RetrievalError> {
            let b = self.inner.get_records(shard_id, iterator, limit).await?;
            let bytes: usize = b.records.iter().map(record_bytes).sum();
            self.fetched.fetch_add(bytes, Ordering::SeqCst);
            Ok(b)
        }
    }

    /// A slow processor on two shards of large records (300 KiB, and one of 3 MiB, larger
    /// than every bound): the worker's budget is never exceeded, at most one more response per
    /// shard is held beyond it, and everything is delivered (the big record too).
    #[tokio::test(start_paused = true)]
    async fn read_ahead_is_bounded_in_bytes_per_shard_and_per_worker() {
        const KIB: usize = 1024;
        let stream = InMemoryStream::new("s", 2);
        let shards: Vec<String> = stream.shards().into_iter().map(|s| s.shard_id).collect();
        let mut want = 0;
        for i in 0..40 {
            let size = if i == 17 { 3072 * KIB } else { 300 * KIB };
            let hash = if i % 2 == 0 { 0 } else { u128::MAX };
            stream.put_with_hash(hash, "", &vec![0u8; size]);
            want += 1;
        }
        let fetched = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client: Arc<dyn StreamClient> = Arc::new(Counting {
            inner: stream.clone(),
            fetched: fetched.clone(),
        });
        let budget = PrefetchBudget::new(1536 * KIB);
        let cfg = FetcherConfig {
            max_records: 2,
            idle_time_between_reads: MIN_IDLE_TIME_BETWEEN_READS,
            max_pending_batches: 3,
            max_pending_bytes: 1024 * KIB,
            budget: budget.clone(),
            deaggregate: true,
            hash_key_range: None,
        };
        let start = StartPosition {
            position: IteratorPosition::TrimHorizon,
            skip_through: None,
        };
        let mut fetchers: Vec<Fetcher> = shards
            .iter()
            .map(|s| Fetcher::spawn(client.clone(), s.clone(), start.clone(), cfg.clone()))
            .collect();
        let (mut got, mut taken, mut peak) = (0, 0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < want && Instant::now() < deadline {
            // The processor takes 2 s per batch, alternating shards.
            for f in fetchers.iter_mut() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let held = fetched.load(Ordering::SeqCst) - taken;
                peak = peak.max(held);
                assert!(
                    budget.buffered_bytes() <= budget.max_bytes(),
                    "{} buffered",
                    budget.buffered_bytes()
                );
                if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(1), f.next()).await
                {
                    got += b.records.len();
                    taken += b.records.iter().map(record_bytes).sum::<usize>();
                }
            }
        }
        assert_eq!(got, want, "everything is delivered");
        // The budget, plus one response per shard waiting for room (two 300 KiB records, or
        // the 3 MiB one).
        assert!(
            peak <= 1536 * KIB + 3072 * KIB + 600 * KIB,
            "{} KiB held",
            peak / KIB
        );
    }
}
