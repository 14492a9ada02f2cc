//! Polling retrieval: one shard's records read ahead by GetRecords (like the Java KCL's
//! prefetching record publisher), behind a [`RecordSource`] (see [`super::source`] for what
//! every source shares: the byte bounds, the hand-off, filtering, shard end, resume positions).
//!
//! A task per shard calls GetRecords ahead of the processor, at most `max_pending_batches`
//! batches and `max_pending_bytes` bytes ahead (and within the worker's shared
//! [`PrefetchBudget`](super::source::PrefetchBudget)), never more often than `idle_time_between_reads` (at least 200 ms:
//! Kinesis allows 5 reads per second per shard, shared by every consumer of the shard).
//!
//! * The first iterator is `AT_SEQUENCE_NUMBER` of the checkpoint (the checkpointed record is
//!   read again and filtered out, with everything at or below the checkpoint, so sub-sequence
//!   checkpoints work), or the initial position for a new lease.
//! * Every response becomes a batch in the one place every source shares
//!   ([`BatchSink::deliver`], its `BatchPreparer`): KPL aggregates are de-aggregated first,
//!   then what is at or below the checkpoint is dropped, so a checkpoint inside an aggregate
//!   resumes right after its user record.
//! * A replacement iterator never skips a record: it is `AFTER_SEQUENCE_NUMBER` of the last
//!   record fetched, or, before the first record, the start position again, except that
//!   `LATEST` is never resolved twice: a fetcher that started at `LATEST` resumes at
//!   `AT_TIMESTAMP` of the time its first iterator was requested.
//! * An expired (or invalid) iterator is replaced at once.
//! * Throttling backs off exponentially and retries the same iterator, logging a warning (an
//!   error after 5 in a row).
//! * Other transient failures (HTTP 500s, timeouts) also back off and retry the same
//!   iterator; only after [`TRANSIENT_RETRIES_PER_ITERATOR`] in a row is the iterator replaced
//!   (some emulators answer an invalid iterator with HTTP 500).
//! * The shard has ended when a response has no next iterator; Kinesis then lists the child
//!   shards. A final response without children is re-read (up to 3 times) before it is
//!   believed, as the Java KCL validates it.

use super::source::{BatchSink, BufferConfig, RecordSource, StartPosition};
use super::{IteratorPosition, RetrievalFailure, StreamClient};
use crate::backoff::Backoff;
use crate::telemetry::ShardMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub use crate::validation::MIN_IDLE_TIME_BETWEEN_READS;

/// Transient GetRecords failures (not throttling) in a row after which the iterator is
/// replaced (from a position that skips nothing).
pub const TRANSIENT_RETRIES_PER_ITERATOR: u32 = 3;

/// Settings of a polling fetcher.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// `Limit` of each GetRecords call (1..=10 000).
    pub max_records: u32,
    /// Pause between calls (raised to 200 ms if lower).
    pub idle_time_between_reads: Duration,
    /// The shard's metrics (shared with its consumer); `None`: the shard's own, by shard id.
    pub metrics: Option<ShardMetrics>,
}

/// Start polling `shard_id` of `stream` from `start`.
pub fn spawn(
    stream: Arc<dyn StreamClient>,
    shard_id: String,
    start: StartPosition,
    config: FetcherConfig,
    buffer: BufferConfig,
) -> RecordSource {
    RecordSource::spawn(shard_id, start, buffer, move |sink| {
        FetchTask {
            metrics: config
                .metrics
                .clone()
                .unwrap_or_else(|| ShardMetrics::new(sink.shard_id())),
            stream,
            config,
            sink,
        }
        .run()
    })
}

struct FetchTask {
    metrics: ShardMetrics,
    stream: Arc<dyn StreamClient>,
    config: FetcherConfig,
    sink: BatchSink,
}

impl FetchTask {
    async fn run(mut self) {
        let shard = self.sink.shard_id().to_string();
        let shard = shard.as_str();
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
                let position = self.sink.resume_position();
                let requested_at = self.stream.now();
                match self.stream.get_shard_iterator(shard, &position).await {
                    Ok(Some(it)) => {
                        if position == IteratorPosition::Latest {
                            self.sink.note_latest_requested(requested_at);
                        }
                        iterator = Some(it);
                    }
                    Ok(None) => {
                        tracing::warn!(
                            shard_id = shard,
                            "shard no longer exists; treating it as ended with no children"
                        );
                        self.sink.shard_gone().await;
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
            self.sink.has_room().await;
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
                    let last = batch.records.last().map(|r| r.sequence_number.to_string());
                    let delivered = self
                        .sink
                        .deliver(
                            batch.records,
                            batch.millis_behind_latest,
                            at_end.then_some(batch.child_shards),
                            last,
                        )
                        .await;
                    if !delivered || at_end {
                        return;
                    }
                    iterator = batch.next_iterator;
                }
                Err(e) => match e.failure {
                    RetrievalFailure::ExpiredIterator => {
                        self.metrics.expired_iterator();
                        tracing::info!(shard_id = shard, progress = %self.sink.progress_text(), "shard iterator expired; getting a new one");
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
                        self.sink.shard_gone().await;
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
    use crate::checkpoint::ExtendedSequenceNumber;
    use crate::retrieval::source::test_support::user_records;
    use crate::retrieval::source::{record_bytes, PrefetchBudget};
    use crate::retrieval::InMemoryStream;
    use crate::testing::stream::{StreamFault, StreamOp};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config() -> FetcherConfig {
        FetcherConfig {
            max_records: 10,
            idle_time_between_reads: MIN_IDLE_TIME_BETWEEN_READS,
            metrics: None,
        }
    }

    fn buffer() -> BufferConfig {
        BufferConfig {
            max_pending_batches: 2,
            max_pending_bytes: 8 << 20,
            budget: PrefetchBudget::new(64 << 20),
            deaggregate: true,
            hash_key_range: None,
        }
    }

    async fn drain(fetcher: &mut RecordSource, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        // One deadline for all: empty batches keep coming while records are missing.
        let deadline = Instant::now() + Duration::from_secs(600);
        while got.len() < want {
            let Ok(batch) = tokio::time::timeout_at(deadline, fetcher.next()).await else {
                panic!("only {} of {want} records within 600 s: {got:?}", got.len());
            };
            let batch = batch.expect("open shard");
            got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| r.sequence_number.into_string()),
            );
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
        let mut fetcher = spawn(Arc::new(stream.clone()), shard, start, config(), buffer());
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
        let mut fetcher = spawn(Arc::new(stream), shard, start, config(), buffer());
        assert_eq!(drain(&mut fetcher, 10).await, put[10..].to_vec());
    }

    /// (sequence number, sub-sequence number, payload) of everything delivered until `want`.
    async fn drain_user_records(
        fetcher: &mut RecordSource,
        want: usize,
    ) -> Vec<(String, u64, String)> {
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
                (r.sequence_number.into_string(), r.sub_sequence_number, data)
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
        let mut fetcher = spawn(Arc::new(stream), shard, start, config(), buffer());
        let mut want: Vec<(String, u64, String)> =
            (4..10).map(|i| (x.clone(), i, format!("x-{i}"))).collect();
        want.push((after, 0, "plain-after".into()));
        want.extend((0..2).map(|i| (y.clone(), i, format!("y-{i}"))));
        assert_eq!(drain_user_records(&mut fetcher, want.len()).await, want);
        let _ = before;
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
        let mut fetcher = spawn(Arc::new(stream.clone()), shard, start, config(), buffer());
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
    ) -> Arc<dyn crate::testing::stream::StreamFaultInjector> {
        let reads = AtomicU32::new(0);
        Arc::new(move |op: StreamOp, _: Option<&str>| match op {
            StreamOp::GetShardIterator => {
                iterators.fetch_add(1, Ordering::SeqCst);
                None
            }
            StreamOp::GetRecords => outage(reads.fetch_add(1, Ordering::SeqCst)),
            _ => None,
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
        let mut fetcher = spawn(Arc::new(stream.clone()), shard, start, config(), buffer());
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
        let mut fetcher = spawn(Arc::new(stream.clone()), shard, start, config(), buffer());
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
        let mut fetcher = spawn(Arc::new(stream.clone()), shard, start, config(), buffer());
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
        use crate::retrieval::source::test_support::*;
        let stream = InMemoryStream::new("s", 2);
        let shards: Vec<String> = stream.shards().into_iter().map(|s| s.shard_id).collect();
        let fetched = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client: Arc<dyn StreamClient> = Arc::new(Counting {
            inner: stream.clone(),
            fetched: fetched.clone(),
        });
        let budget = PrefetchBudget::new(WORKER_BUDGET);
        let cfg = FetcherConfig {
            max_records: 2,
            idle_time_between_reads: MIN_IDLE_TIME_BETWEEN_READS,
            metrics: None,
        };
        let start = StartPosition {
            position: IteratorPosition::TrimHorizon,
            skip_through: None,
        };
        let mut fetchers: Vec<RecordSource> = shards
            .iter()
            .map(|s| {
                let buf = bounded(&budget);
                spawn(client.clone(), s.clone(), start.clone(), cfg.clone(), buf)
            })
            .collect();
        let peak = slow_processor(&stream, &fetched, &budget, &mut fetchers).await;
        // The budget, plus one response per shard waiting for room (two 300 KiB records, or
        // the 3 MiB one).
        assert!(
            peak <= WORKER_BUDGET + BIG_RECORD + 600 * KIB,
            "{} KiB held",
            peak / KIB
        );
    }
}
