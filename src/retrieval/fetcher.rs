//! Bounded prefetch of one shard's records (polling, reference §7.2).
//!
//! A task per shard calls GetRecords ahead of the processor, at most `max_pending_batches`
//! batches ahead, never more often than `idle_time_between_reads` (at least 200 ms: Kinesis
//! allows 5 reads per second per shard, shared by every consumer of the shard).
//!
//! * The first iterator is `AT_SEQUENCE_NUMBER` of the checkpoint (the checkpointed record is
//!   read again and filtered out, with everything at or below the checkpoint, so sub-sequence
//!   checkpoints work), or the initial position for a new lease.
//! * An expired iterator is replaced by one `AFTER_SEQUENCE_NUMBER` of the last record fetched.
//! * Throttling backs off exponentially and logs a warning (an error after 5 in a row).
//! * Three transient failures in a row also replace the iterator (some emulators answer an
//!   invalid iterator with HTTP 500).
//! * The shard has ended when a response has no next iterator; Kinesis then lists the child
//!   shards. A final response without children is re-read (up to 3 times) before it is
//!   believed, as the Java KCL validates it.

use super::{ChildShard, IteratorPosition, RetrievalErrorKind, StreamClient};
use crate::backoff::Backoff;
use crate::checkpoint::ExtendedSequenceNumber;
use crate::record::Record;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The shortest pause between two GetRecords calls on one shard.
pub const MIN_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(200);

/// Settings of a fetcher.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// `Limit` of each GetRecords call (1..=10 000).
    pub max_records: u32,
    /// Pause between calls (raised to 200 ms if lower).
    pub idle_time_between_reads: Duration,
    /// Batches fetched ahead of the processor.
    pub max_pending_batches: usize,
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

/// Handle to a running fetcher; dropping it stops the task.
#[derive(Debug)]
pub struct Fetcher {
    rx: mpsc::Receiver<FetchedBatch>,
    stop: CancellationToken,
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
        let task = FetchTask {
            stream,
            shard_id,
            start,
            config,
            tx,
        };
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {}
                _ = task.run() => {}
            }
        });
        Fetcher { rx, stop }
    }

    /// The next batch; `None` after the shard-end batch was delivered.
    pub async fn next(&mut self) -> Option<FetchedBatch> {
        self.rx.recv().await
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct FetchTask {
    stream: Arc<dyn StreamClient>,
    shard_id: String,
    start: StartPosition,
    config: FetcherConfig,
    tx: mpsc::Sender<FetchedBatch>,
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

    async fn run(self) {
        let shard = self.shard_id.as_str();
        let idle = self
            .config
            .idle_time_between_reads
            .max(MIN_IDLE_TIME_BETWEEN_READS);
        let mut backoff = Backoff::new(idle, Duration::from_secs(10));
        let mut iterator: Option<String> = None;
        let mut last_sequence: Option<String> = None;
        let mut last_call: Option<Instant> = None;
        let (mut throttled, mut transient, mut unconfirmed_ends) = (0u32, 0u32, 0u32);
        loop {
            if iterator.is_none() {
                let position = match &last_sequence {
                    Some(s) => IteratorPosition::AfterSequenceNumber(s.clone()),
                    None => self.start.position.clone(),
                };
                match self.stream.get_shard_iterator(shard, &position).await {
                    Ok(Some(it)) => iterator = Some(it),
                    Ok(None) => {
                        tracing::warn!(
                            shard_id = shard,
                            "shard no longer exists; treating it as ended with no children"
                        );
                        let _ = self
                            .tx
                            .send(FetchedBatch {
                                records: Vec::new(),
                                millis_behind_latest: None,
                                shard_end: Some(Vec::new()),
                            })
                            .await;
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
            last_call = Some(Instant::now());
            let it = iterator.clone().expect("iterator set above");
            match self
                .stream
                .get_records(shard, &it, self.config.max_records)
                .await
            {
                Ok(batch) => {
                    throttled = 0;
                    transient = 0;
                    backoff.reset();
                    if let Some(last) = batch.records.last() {
                        last_sequence = Some(last.sequence_number.clone());
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
                    if self.tx.send(out).await.is_err() || at_end {
                        return;
                    }
                    iterator = batch.next_iterator;
                }
                Err(e) => match e.kind {
                    RetrievalErrorKind::ExpiredIterator => {
                        tracing::info!(shard_id = shard, after = ?last_sequence, "shard iterator expired; getting a new one");
                        iterator = None;
                    }
                    RetrievalErrorKind::Throttled => {
                        throttled += 1;
                        if throttled >= 5 {
                            tracing::error!(shard_id = shard, consecutive = throttled, error = %e, "reads keep being throttled: is another application reading this shard?");
                        } else {
                            tracing::warn!(shard_id = shard, error = %e, "read throttled; backing off");
                        }
                        tokio::time::sleep(backoff.next().unwrap_or(idle)).await;
                    }
                    RetrievalErrorKind::ResourceNotFound => {
                        tracing::warn!(shard_id = shard, error = %e, "shard gone while reading; treating it as ended with no children");
                        let _ = self
                            .tx
                            .send(FetchedBatch {
                                records: Vec::new(),
                                millis_behind_latest: None,
                                shard_end: Some(Vec::new()),
                            })
                            .await;
                        return;
                    }
                    _ => {
                        transient += 1;
                        tracing::warn!(shard_id = shard, error = %e, consecutive = transient, "read failed; retrying");
                        if transient >= 3 {
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
        }
    }

    async fn drain(fetcher: &mut Fetcher, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < want {
            let batch = tokio::time::timeout(Duration::from_secs(600), fetcher.next())
                .await
                .expect("batches keep coming")
                .expect("open shard");
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
}
