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

use super::{ChildShard, IteratorPosition, RetrievalFailure, StreamClient};
use crate::backoff::Backoff;
use crate::checkpoint::ExtendedSequenceNumber;
use crate::record::Record;
use crate::telemetry::ShardMetrics;
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
    fn keep(&self, record: &Record) -> bool {
        match &self.start.skip_through {
            Some(cp) => ExtendedSequenceNumber::new(
                record.sequence_number.clone(),
                record.sub_sequence_number,
            )
            .is_ok_and(|esn| esn > *cp),
            None => true,
        }
    }

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
                    let records: Vec<Record> =
                        batch.records.into_iter().filter(|r| self.keep(r)).collect();
                    let out = FetchedBatch {
                        records,
                        millis_behind_latest: batch.millis_behind_latest,
                        shard_end: at_end.then_some(batch.child_shards),
                    };
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
