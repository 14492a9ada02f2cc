//! What every record source shares: the hand-off of batches to the shard consumer.
//!
//! A record source is a task per shard that reads ahead of the processor: the polling
//! fetcher ([`super::fetcher`], GetRecords) or the fan-out source ([`super::fanout`],
//! SubscribeToShard). Both run behind a [`RecordSource`] handle, which is all the shard
//! consumer sees: [`RecordSource::next`] gives the next [`FetchedBatch`], dropping the handle
//! stops the task, and [`RecordSource::resume_from`] says where a replacement starts when the
//! task died. The task talks to its handle through a [`BatchSink`], which owns what the two
//! sources have in common:
//!
//! * **The one point where a stream response becomes a batch** ([`BatchSink::deliver`], with
//!   its [`BatchPreparer`]): KPL aggregates are de-aggregated, then records at or below the
//!   checkpoint the source started from are dropped (so a checkpoint inside an aggregate
//!   resumes right after its user record), for every source.
//! * **Read-ahead bounded in bytes**: a batch waits (in the source, which stops reading) until
//!   the shard's buffered batches and the worker's [`PrefetchBudget`] have room for it; a
//!   batch larger than either bound takes the whole bound (it is delivered alone, never
//!   deadlocks). The bounds count batches read and not yet handed to the consumer; at most
//!   one more response (or event) per shard, the one waiting for room, is held beyond them.
//! * **Shard end**: the last batch carries the child shards; a shard that no longer exists
//!   ends with no children ([`BatchSink::shard_gone`]).
//! * **Where to resume without skipping or repeating anything** ([`BatchSink::resume_position`]):
//!   after the last position delivered, else the start position, except that `LATEST` is
//!   never resolved twice (it would point past every record that arrived meanwhile): a source
//!   that started at `LATEST` resumes at `AT_TIMESTAMP` of the time it first asked for it
//!   ([`super::StreamClient::now`], the stream's clock).

use super::deaggregation::{deaggregate, Outcome, KPL_MAGIC};
use super::{ChildShard, IteratorPosition};
use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::HashKeyRange;
use crate::record::Record;
use crate::sync::Mutex;
use std::cmp::Ordering;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A byte budget for read-ahead, shared by the sources that hold a clone (a worker's
/// sources share one). Counted in KiB.
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
pub(crate) fn record_bytes(r: &Record) -> usize {
    r.data.len() + r.partition_key.len()
}

/// How much a source may read ahead of its processor, and how its responses become batches.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Batches read ahead of the processor.
    pub max_pending_batches: usize,
    /// Bytes of records read ahead of the processor for this shard.
    pub max_pending_bytes: usize,
    /// The worker's read-ahead budget, shared with its other sources.
    pub budget: PrefetchBudget,
    /// De-aggregate KPL aggregates (else they are delivered as they are).
    pub deaggregate: bool,
    /// The shard's hash key range, when known: user records of aggregates outside it are
    /// counted (and delivered).
    pub hash_key_range: Option<HashKeyRange>,
}

/// Where a source starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPosition {
    /// The first read's position.
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

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.batch.fmt(f)
    }
}

/// How far a source got: where a replacement must start so as to skip nothing.
#[derive(Debug, Default)]
struct Progress {
    /// The sequence number after which reading continues: the last record delivered
    /// (polling), or the continuation sequence number of the last event delivered (fan-out).
    resume_after: Option<String>,
    /// When the first `LATEST` position was asked for (the stream's clock).
    latest_requested_at: Option<SystemTime>,
}

/// Where to resume without skipping anything: after the last position delivered, else the
/// start position, with `LATEST` replaced by `AT_TIMESTAMP` once it was asked for.
fn resume_position(start: &IteratorPosition, progress: &Progress) -> IteratorPosition {
    match (&progress.resume_after, start, progress.latest_requested_at) {
        (Some(s), _, _) => IteratorPosition::AfterSequenceNumber(s.clone()),
        (None, IteratorPosition::Latest, Some(t)) => IteratorPosition::AtTimestamp(t),
        (None, p, _) => p.clone(),
    }
}

/// Handle to a running record source; dropping it stops the task.
#[derive(Debug)]
pub struct RecordSource {
    rx: mpsc::Receiver<Buffered>,
    stop: CancellationToken,
    start: StartPosition,
    progress: Arc<Mutex<Progress>>,
}

impl RecordSource {
    /// Spawn the source task `run` for `shard_id` from `start`: it gets the [`BatchSink`] to
    /// deliver through, and is stopped when the handle drops.
    pub fn spawn<F, Fut>(
        shard_id: String,
        start: StartPosition,
        buffer: BufferConfig,
        run: F,
    ) -> RecordSource
    where
        F: FnOnce(BatchSink) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(buffer.max_pending_batches.max(1));
        let stop = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let sink = BatchSink {
            preparer: BatchPreparer::new(
                shard_id.clone(),
                start.skip_through.clone(),
                buffer.deaggregate,
                buffer.hash_key_range,
            ),
            shard_id,
            start: start.clone(),
            shard_budget: PrefetchBudget::new(buffer.max_pending_bytes),
            worker_budget: buffer.budget,
            tx,
            progress: progress.clone(),
        };
        let task = run(sink);
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {}
                _ = task => {}
            }
        });
        RecordSource {
            rx,
            stop,
            start,
            progress,
        }
    }

    /// The next batch; `None` after the shard-end batch was delivered, or if the source task
    /// died (then [`RecordSource::resume_from`] says where a replacement starts).
    pub async fn next(&mut self) -> Option<FetchedBatch> {
        self.rx.recv().await.map(|b| b.batch)
    }

    /// Where a replacement source starts so that it skips nothing and repeats nothing of what
    /// this one delivered: after its last position, or where it started (`LATEST` replaced by
    /// `AT_TIMESTAMP` of its first request, never resolved again).
    pub fn resume_from(&self) -> StartPosition {
        let progress = self.progress.lock();
        StartPosition {
            position: resume_position(&self.start.position, &progress),
            skip_through: self.start.skip_through.clone(),
        }
    }
}

impl Drop for RecordSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The source task's side of a [`RecordSource`].
pub struct BatchSink {
    shard_id: String,
    preparer: BatchPreparer,
    start: StartPosition,
    shard_budget: PrefetchBudget,
    worker_budget: PrefetchBudget,
    tx: mpsc::Sender<Buffered>,
    progress: Arc<Mutex<Progress>>,
}

impl BatchSink {
    /// The shard.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Where the next read starts so as to skip nothing and repeat nothing (see the module
    /// docs).
    pub fn resume_position(&self) -> IteratorPosition {
        resume_position(&self.start.position, &self.progress.lock())
    }

    /// Note that `LATEST` was asked for at `at` (the stream's clock): a later read that has
    /// no position yet starts at `AT_TIMESTAMP` of the first such time instead.
    pub fn note_latest_requested(&self, at: SystemTime) {
        self.progress.lock().latest_requested_at.get_or_insert(at);
    }

    /// How far the source got, for logs.
    pub fn progress_text(&self) -> String {
        format!("{:?}", self.progress.lock())
    }

    /// Wait until the shard and the worker have room for more read-ahead.
    pub async fn has_room(&self) {
        self.shard_budget.has_room().await;
        self.worker_budget.has_room().await;
    }

    /// Hand one stream response (a GetRecords result or a SubscribeToShard event) to the
    /// consumer, once the byte bounds have room for it: its records become the batch here
    /// (every source goes through this point). `shard_end` is `Some(children)` for the
    /// shard's last response; `resume_after` is where reading continues after it (see
    /// [`BatchSink::resume_position`]), `None` to keep the previous one. False when the
    /// consumer is gone.
    pub async fn deliver(
        &mut self,
        records: Vec<Record>,
        millis_behind_latest: Option<i64>,
        shard_end: Option<Vec<ChildShard>>,
        resume_after: Option<String>,
    ) -> bool {
        let batch = self
            .preparer
            .prepare(records, millis_behind_latest, shard_end);
        if !self.send(batch).await {
            return false;
        }
        if let Some(after) = resume_after {
            self.progress.lock().resume_after = Some(after);
        }
        true
    }

    /// The shard no longer exists: deliver its end, with no children.
    pub async fn shard_gone(&self) {
        self.send(FetchedBatch {
            records: Vec::new(),
            deaggregated: false,
            millis_behind_latest: None,
            shard_end: Some(Vec::new()),
        })
        .await;
    }

    /// Send `batch` once the byte bounds have room for it; false when the consumer is gone.
    async fn send(&self, batch: FetchedBatch) -> bool {
        let bytes: usize = batch.records.iter().map(record_bytes).sum();
        let (shard, worker) = if bytes == 0 {
            (None, None)
        } else {
            let shard = self.shard_budget.take(bytes).await;
            (Some(shard), Some(self.worker_budget.take(bytes).await))
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
}

/// The one point where a stream response becomes a batch for the consumer, for every record
/// source (each [`BatchSink`] has one: GetRecords responses and fan-out events alike). For
/// each record, in order:
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

/// The slow-processor check both sources' tests run.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::retrieval::InMemoryStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::time::Instant;

    /// KiB.
    pub const KIB: usize = 1024;

    /// `n` user records for a KPL aggregate: partition key `{prefix}-pk-{i}`, data
    /// `{prefix}-{i}`.
    pub fn user_records(prefix: &str, n: usize) -> Vec<crate::testing::UserRecordSpec> {
        (0..n)
            .map(|i| crate::testing::UserRecordSpec {
                partition_key: format!("{prefix}-pk-{i}"),
                explicit_hash_key: None,
                data: format!("{prefix}-{i}").into_bytes(),
            })
            .collect()
    }
    /// The worker budget of [`slow_processor`]'s sources.
    pub const WORKER_BUDGET: usize = 1536 * KIB;
    /// The largest record [`slow_processor`] puts.
    pub const BIG_RECORD: usize = 3072 * KIB;

    /// The buffer settings for [`slow_processor`]: 1 MiB per shard, [`WORKER_BUDGET`] per
    /// worker (shared by the sources given `budget`).
    pub fn bounded(budget: &PrefetchBudget) -> BufferConfig {
        BufferConfig {
            max_pending_batches: 3,
            max_pending_bytes: 1024 * KIB,
            budget: budget.clone(),
            deaggregate: true,
            hash_key_range: None,
        }
    }

    /// Puts 40 records of 300 KiB (one of [`BIG_RECORD`], larger than every bound) on the
    /// two shards of `stream`, then takes from `sources` (one per shard, built with
    /// [`bounded`]`(budget)`) as a processor that needs 2 s per batch, alternating shards.
    /// Checks that everything arrives and the budget is never exceeded; returns the most
    /// bytes the service had handed out (`handed_out`) and the processor had not taken.
    pub async fn slow_processor(
        stream: &InMemoryStream,
        handed_out: &AtomicUsize,
        budget: &PrefetchBudget,
        sources: &mut [RecordSource],
    ) -> usize {
        let want = 40;
        for i in 0..want {
            let size = if i == 17 { BIG_RECORD } else { 300 * KIB };
            let hash = if i % 2 == 0 { 0 } else { u128::MAX };
            stream.put_with_hash(hash, "", &vec![0u8; size]);
        }
        let (mut got, mut taken, mut peak) = (0, 0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < want && Instant::now() < deadline {
            for s in sources.iter_mut() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                peak = peak.max(handed_out.load(Ordering::SeqCst) - taken);
                assert!(
                    budget.buffered_bytes() <= budget.max_bytes(),
                    "{} buffered",
                    budget.buffered_bytes()
                );
                if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(1), s.next()).await
                {
                    got += b.records.len();
                    taken += b.records.iter().map(record_bytes).sum::<usize>();
                }
            }
        }
        assert_eq!(got, want, "everything is delivered");
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::user_records;
    use super::*;
    use crate::testing::kpl_aggregate;

    /// Captures log lines (for the tests that check what is logged).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
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
            String::from_utf8_lossy(&self.0.lock())
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
            records.push(Record::new(kpl_aggregate(&specs), "pk", 100 + a));
        }
        let mut corrupt = kpl_aggregate(&user_records("c", 2));
        *corrupt.last_mut().unwrap() ^= 1;
        records.push(Record::new(corrupt.clone(), "pk", 200u64));
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
                Record::new(b"old".to_vec(), "pk", 99u64),
                Record::new(aggregate.clone(), "pk", 100u64),
                Record::new(b"new".to_vec(), "pk", 101u64),
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

    #[test]
    fn resume_skips_nothing_and_never_resolves_latest_twice() {
        let t = SystemTime::UNIX_EPOCH;
        let p = |resume_after: Option<&str>, latest: Option<SystemTime>| Progress {
            resume_after: resume_after.map(str::to_string),
            latest_requested_at: latest,
        };
        use IteratorPosition::*;
        assert_eq!(resume_position(&Latest, &p(None, None)), Latest);
        assert_eq!(resume_position(&Latest, &p(None, Some(t))), AtTimestamp(t));
        assert_eq!(
            resume_position(&Latest, &p(Some("7"), Some(t))),
            AfterSequenceNumber("7".into())
        );
        assert_eq!(
            resume_position(&AtSequenceNumber("3".into()), &p(None, None)),
            AtSequenceNumber("3".into())
        );
    }
}
