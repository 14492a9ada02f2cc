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
//! * **The one point where a stream response becomes a batch** ([`BatchSink::deliver`]):
//!   records at or below the checkpoint the source started from are dropped there (so
//!   sub-sequence checkpoints work), and KPL de-aggregation belongs there, for every source.
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

use super::{ChildShard, IteratorPosition};
use crate::checkpoint::ExtendedSequenceNumber;
use crate::record::Record;
use std::future::Future;
use std::sync::{Arc, Mutex};
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

/// How much a source may read ahead of its processor.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Batches read ahead of the processor.
    pub max_pending_batches: usize,
    /// Bytes of records read ahead of the processor for this shard.
    pub max_pending_bytes: usize,
    /// The worker's read-ahead budget, shared with its other sources.
    pub budget: PrefetchBudget,
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
        let progress = self.progress.lock().unwrap();
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
        resume_position(&self.start.position, &self.progress.lock().unwrap())
    }

    /// Note that `LATEST` was asked for at `at` (the stream's clock): a later read that has
    /// no position yet starts at `AT_TIMESTAMP` of the first such time instead.
    pub fn note_latest_requested(&self, at: SystemTime) {
        self.progress
            .lock()
            .unwrap()
            .latest_requested_at
            .get_or_insert(at);
    }

    /// How far the source got, for logs.
    pub fn progress_text(&self) -> String {
        format!("{:?}", self.progress.lock().unwrap())
    }

    /// Wait until the shard and the worker have room for more read-ahead.
    pub async fn has_room(&self) {
        self.shard_budget.has_room().await;
        self.worker_budget.has_room().await;
    }

    /// Keep a record unless the source started after it (it is at or below the checkpoint).
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

    /// Hand one stream response (a GetRecords result or a SubscribeToShard event) to the
    /// consumer, once the byte bounds have room for it: its records become the batch here
    /// (every source goes through this point). `shard_end` is `Some(children)` for the
    /// shard's last response; `resume_after` is where reading continues after it (see
    /// [`BatchSink::resume_position`]), `None` to keep the previous one. False when the
    /// consumer is gone.
    pub async fn deliver(
        &self,
        records: Vec<Record>,
        millis_behind_latest: Option<i64>,
        shard_end: Option<Vec<ChildShard>>,
        resume_after: Option<String>,
    ) -> bool {
        let records: Vec<Record> = records.into_iter().filter(|r| self.keep(r)).collect();
        let batch = FetchedBatch {
            records,
            millis_behind_latest,
            shard_end,
        };
        if !self.send(batch).await {
            return false;
        }
        if let Some(after) = resume_after {
            self.progress.lock().unwrap().resume_after = Some(after);
        }
        true
    }

    /// The shard no longer exists: deliver its end, with no children.
    pub async fn shard_gone(&self) {
        self.send(FetchedBatch {
            records: Vec::new(),
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
    use super::*;

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
