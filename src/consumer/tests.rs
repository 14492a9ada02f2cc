//! The shard consumer on paused tokio time over the in-memory stream and lease store.

use super::*;
use crate::coordinator::CoordinatorConfig;
use crate::lease::{InMemoryLeaseStore, Lease};
use crate::resharding::ChildLeaseError;
use crate::retrieval::{InMemoryStream, StreamRef};
use crate::sync::Mutex;
use crate::ProcessorError;

pub(super) const KEY: &str = "shardId-000000000000";

/// A worker holding the one lease of a one-shard stream.
pub(super) struct Harness {
    pub stream: InMemoryStream,
    /// The stream, as the lease keys name it.
    pub stream_id: crate::StreamIdentifier,
    pub coordinator: LeaseCoordinator,
    pub tenure: LeaseTenure,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn new(checkpoint: Checkpoint) -> Harness {
        let stream = InMemoryStream::new("s", 1);
        Self::holding(
            stream,
            crate::StreamIdentifier::single("s"),
            Lease::new(KEY, checkpoint),
            Vec::new(),
        )
        .await
    }

    /// A worker holding `lease` of `stream` (named `stream_id` in the lease keys), with
    /// `others` in the lease table too.
    pub async fn holding(
        stream: InMemoryStream,
        stream_id: crate::StreamIdentifier,
        lease: Lease,
        others: Vec<Lease>,
    ) -> Harness {
        let store = InMemoryLeaseStore::new();
        let key = lease.key.clone();
        store.with_table(|t| {
            for l in others.into_iter().chain([lease]) {
                t.insert(l.key.clone(), l);
            }
        });
        let mut cfg = CoordinatorConfig::new("w", Duration::from_secs(10));
        cfg.multi_stream = stream_id.is_multi_stream();
        let coordinator = LeaseCoordinator::new(Arc::new(store.clone()), cfg);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (c, s) = (coordinator.clone(), stop.clone());
            async move { c.run(s).await }
        });
        while !coordinator.held_keys().contains(&key) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tenure = coordinator.held()[&key].clone();
        Harness {
            stream,
            stream_id,
            coordinator,
            tenure,
            stop,
            task,
        }
    }

    pub fn ctx(&self, config: crate::ConfigBuilder) -> ShardContext {
        let config = config.build().unwrap();
        ShardContext {
            coordinator: self.coordinator.clone(),
            stream: Arc::new(self.stream.clone()),
            stream_id: self.stream_id.clone(),
            initial_position: config.initial_position(),
            config: Arc::new(config),
            prefetch_budget: PrefetchBudget::new(64 << 20),
            fan_out: None,
            skipped_records: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

pub(super) fn config() -> crate::ConfigBuilder {
    Config::builder("app", StreamRef::Name("s".into()))
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(200))
        .task_backoff(Duration::from_millis(500))
}

type Hook = Box<dyn FnMut(&str) + Send>;

/// Records every call; `hook` runs at each call with its name.
pub(super) struct Recorder {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub hook: Hook,
}

impl Recorder {
    pub fn new(hook: impl FnMut(&str) + Send + 'static) -> (Recorder, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            Recorder {
                calls: calls.clone(),
                hook: Box::new(hook),
            },
            calls,
        )
    }

    fn note(&mut self, call: String) {
        (self.hook)(&call);
        self.calls.lock().push(call);
    }
}

#[async_trait::async_trait]
impl RecordProcessor for Recorder {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        self.note("initialize".into());
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let seqs: Vec<&str> = input
            .records
            .iter()
            .map(|r| r.sequence_number.as_str())
            .collect();
        self.note(format!("records {}", seqs.join(",")));
        cp.checkpoint().await?;
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        self.note(format!("shutdown {}", reason.name()));
        Ok(())
    }
}

/// A graceful shutdown requested while `initialize` runs (after it succeeded, before the first
/// batch): the processor still hears `shutdown(Requested)`, exactly once.
#[tokio::test(start_paused = true)]
async fn shutdown_requested_right_after_initialize_reaches_the_processor() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let shutdown = CancellationToken::new();
    let (p, calls) = Recorder::new({
        let s = shutdown.clone();
        move |call| {
            if call == "initialize" {
                s.cancel();
            }
        }
    });
    let exit = run_shard(h.ctx(config()), h.tenure.clone(), p, shutdown).await;
    assert_eq!(exit, ShardExit::Shutdown);
    assert_eq!(*calls.lock(), ["initialize", "shutdown requested"]);
    h.stop().await;
}

/// The lease lost while `initialize` runs: `shutdown(LeaseLost)`, exactly once.
#[tokio::test(start_paused = true)]
async fn lease_lost_right_after_initialize_reaches_the_processor() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let (p, calls) = Recorder::new({
        let lost = h.tenure.lost.clone();
        move |call| {
            if call == "initialize" {
                lost.cancel();
            }
        }
    });
    let exit = run_shard(
        h.ctx(config()),
        h.tenure.clone(),
        p,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, ShardExit::LeaseLost);
    assert_eq!(*calls.lock(), ["initialize", "shutdown lease_lost"]);
    h.stop().await;
}

/// The lease lost during `shutdown(Requested)`: no second `shutdown`.
#[tokio::test(start_paused = true)]
async fn lease_lost_during_a_requested_shutdown_gets_no_second_shutdown() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let shutdown = CancellationToken::new();
    let (p, calls) = Recorder::new({
        let (s, lost) = (shutdown.clone(), h.tenure.lost.clone());
        move |call| match call {
            "initialize" => s.cancel(),
            "shutdown requested" => lost.cancel(),
            _ => {}
        }
    });
    run_shard(h.ctx(config()), h.tenure.clone(), p, shutdown).await;
    assert_eq!(*calls.lock(), ["initialize", "shutdown requested"]);
    h.stop().await;
}

/// A stream whose GetRecords panics (killing the fetcher task) on the reads `dies` picks;
/// counts GetShardIterator calls (one per fetcher started).
#[derive(Debug)]
struct Dying {
    inner: InMemoryStream,
    reads: std::sync::atomic::AtomicU32,
    iterators: Arc<std::sync::atomic::AtomicU32>,
    dies: fn(u32) -> bool,
}

#[async_trait::async_trait]
impl StreamClient for Dying {
    fn stream_name(&self) -> &str {
        self.inner.stream_name()
    }
    fn now(&self) -> std::time::SystemTime {
        self.inner.now()
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
        self.iterators
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_shard_iterator(shard_id, position).await
    }
    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<crate::retrieval::RecordBatch, crate::retrieval::RetrievalError> {
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if (self.dies)(n) {
            panic!("injected fetcher death on read {n}");
        }
        self.inner.get_records(shard_id, iterator, limit).await
    }
}

/// Runs `body` on a paused current-thread runtime; fails (instead of hanging) if it does not
/// finish within 60 s of wall-clock time: a busy loop never lets paused time advance.
fn within_wall_clock<T: Send + 'static>(
    body: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(body));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("simulated time stood still for 60 s of wall-clock time: a busy loop")
}

/// Run a consumer over `Dying` for `period` of simulated time; (fetchers started, calls).
async fn run_dying(records: usize, dies: fn(u32) -> bool, period: Duration) -> (u32, Vec<String>) {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let put: Vec<String> = (0..records)
        .map(|i| h.stream.put("pk", format!("r{i}").as_bytes()).1)
        .collect();
    let iterators = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stream = Dying {
        inner: h.stream.clone(),
        reads: Default::default(),
        iterators: iterators.clone(),
        dies,
    };
    let mut ctx = h.ctx(config().max_records(10));
    ctx.stream = Arc::new(stream);
    let shutdown = CancellationToken::new();
    let (p, calls) = Recorder::new(|_| {});
    let consumer = tokio::spawn(run_shard(ctx, h.tenure.clone(), p, shutdown.clone()));
    tokio::time::sleep(period).await;
    shutdown.cancel();
    consumer.await.unwrap();
    h.stop().await;
    let delivered: Vec<String> = calls
        .lock()
        .iter()
        .filter_map(|c| c.strip_prefix("records "))
        .flat_map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        put.starts_with(&delivered) || delivered == put,
        "{delivered:?}"
    );
    (
        iterators.load(std::sync::atomic::Ordering::SeqCst),
        delivered,
    )
}

/// A fetcher task that keeps dying is restarted with exponential backoff (task backoff
/// 500 ms doubling up to 30 s), not in a busy loop.
#[test]
fn a_fetcher_that_keeps_dying_is_restarted_with_backoff() {
    let (fetchers, delivered) = within_wall_clock(run_dying(5, |_| true, Duration::from_secs(60)));
    assert!(delivered.is_empty());
    // 0.5 + 1 + 2 + 4 + 8 + 16 + 30 s (each 50-100% with jitter): 6 to 9 restarts in 60 s.
    assert!((7..=10).contains(&fetchers), "{fetchers} fetchers in 60 s");
}

/// A restarted fetcher resumes right after the last record delivered: nothing lost, nothing
/// delivered twice to the processor.
#[test]
fn a_restarted_fetcher_resumes_after_the_last_record_delivered() {
    let (fetchers, delivered) =
        within_wall_clock(run_dying(30, |n| n == 1 || n == 2, Duration::from_secs(60)));
    assert_eq!(fetchers, 3);
    assert_eq!(delivered.len(), 30, "{delivered:?}");
}

/// Simulation (prehistory): a merge parent aged past retention and its lease was cleaned up;
/// the other parent's shard end waited for that parent's lease forever, and the child's records
/// were never processed.
#[tokio::test(start_paused = true)]
async fn a_merge_child_is_created_when_the_other_parent_aged_out() {
    let stream = InMemoryStream::new("s", 2);
    let (a, b) = ("shardId-000000000000", "shardId-000000000001");
    let child = stream.merge(a, b).unwrap();
    let store = InMemoryLeaseStore::new();
    store.with_table(|t| {
        t.insert(a.into(), Lease::new(a, Checkpoint::TrimHorizon));
    });
    let children = stream
        .shards()
        .into_iter()
        .filter(|s| s.shard_id == child)
        .map(|s| ChildShard {
            shard_id: s.shard_id.clone(),
            parent_shards: s.parents(),
            hash_key_range: s.hash_key_range,
        })
        .collect::<Vec<_>>();
    let lost = CancellationToken::new();
    let single = crate::StreamIdentifier::single("s");
    // The other parent is still in the stream and has no lease: wait.
    let why = create_child_leases(&store, &stream, &single, a, &children, &|| {
        !lost.is_cancelled()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(why, ChildLeaseError::MergeParentWithoutLease { .. }),
        "{why}"
    );
    assert!(!store.snapshot().contains_key(&child));
    // Gone from the stream: nothing of it is left to wait for.
    assert!(stream.age_out(b));
    create_child_leases(&store, &stream, &single, a, &children, &|| {
        !lost.is_cancelled()
    })
    .await
    .unwrap();
    assert_eq!(store.snapshot()[&child].checkpoint, Checkpoint::TrimHorizon);
}

/// (sequence number, sub-sequence number, payload, batch marked de-aggregated).
type Seen = Arc<Mutex<Vec<(String, u64, String, bool)>>>;

/// Records every user record it is given; at `stop_at` it checkpoints that very user record
/// (inside its aggregate) and asks for a restart, as a crash would.
struct CheckpointsMidAggregate {
    seen: Seen,
    stop_at: Option<&'static str>,
}

#[async_trait::async_trait]
impl RecordProcessor for CheckpointsMidAggregate {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for r in &input.records {
            let data = String::from_utf8(r.data.to_vec()).unwrap();
            let stop = self.stop_at == Some(data.as_str());
            self.seen.lock().push((
                r.sequence_number.to_string(),
                r.sub_sequence_number,
                data,
                input.deaggregated,
            ));
            if stop {
                cp.checkpoint_record(r).await?;
                return Err(crate::RestartShard("crash after the checkpoint".into()).into());
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// A processor checkpoints the 7th user record of an aggregate (sub-sequence 6) and crashes:
/// the checkpoint is stored as (X, 6) and the next processor starts exactly at user record 7.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_inside_an_aggregate_resumes_right_after_its_user_record() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let specs: Vec<_> = (0..10)
        .map(|i| crate::testing::UserRecordSpec {
            partition_key: format!("pk-{i}"),
            explicit_hash_key: None,
            data: format!("x-{i}").into_bytes(),
        })
        .collect();
    let (_, x) = h.stream.put_aggregate(&specs);
    let (_, plain) = h.stream.put("pk", b"plain");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = CheckpointsMidAggregate {
        seen: seen.clone(),
        stop_at: Some("x-6"),
    };
    let exit = run_shard(
        h.ctx(config()),
        h.tenure.clone(),
        first,
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(exit, ShardExit::Failed(_)), "{exit:?}");
    let stored = h.coordinator.current(KEY).await.unwrap().checkpoint;
    assert_eq!(stored, Checkpoint::sequence(x.clone(), 6).unwrap());
    assert!(seen.lock().iter().all(|r| r.3), "deaggregated");

    seen.lock().clear();
    let second = CheckpointsMidAggregate {
        seen: seen.clone(),
        stop_at: None,
    };
    let shard = tokio::spawn(run_shard(
        h.ctx(config()),
        h.tenure.clone(),
        second,
        CancellationToken::new(),
    ));
    while seen.lock().len() < 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shard.abort();
    let got: Vec<(String, u64, String)> = seen
        .lock()
        .iter()
        .map(|(s, sub, d, _)| (s.clone(), *sub, d.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (x.clone(), 7, "x-7".into()),
            (x.clone(), 8, "x-8".into()),
            (x, 9, "x-9".into()),
            (plain, 0, "plain".into()),
        ]
    );
    h.stop().await;
}

fn multi_stream_id() -> crate::StreamIdentifier {
    crate::StreamIdentifier::multi("123456789012", "s", 1_700_000_000_000).unwrap()
}

/// A multi-stream lease is read from Kinesis by its shard id, and at its end its children get
/// leases of the same stream: keys `<stream>:<child>`, the `streamName`/`shardId` attributes,
/// bare parent ids (as the Java KCL's), and the parent records its bare child ids.
#[tokio::test(start_paused = true)]
async fn a_multi_stream_shard_reads_by_shard_id_and_gives_its_children_leases_of_its_stream() {
    let stream = InMemoryStream::new("s", 1);
    let id = multi_stream_id();
    let lease = Lease::for_stream(id.clone(), KEY, Checkpoint::TrimHorizon);
    let h = Harness::holding(stream, id.clone(), lease, Vec::new()).await;
    let (put_shard, seq) = h.stream.put("k", b"x");
    assert_eq!(put_shard, KEY);
    // Checkpoints every batch and SHARD_END at the end.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = crate::processor::from_fn({
        let seen = seen.clone();
        move |input: ProcessRecordsInput| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .extend(input.records.iter().map(|r| r.sequence_number.to_string()));
                Ok(())
            }
        }
    });
    let ctx = h.ctx(config());
    let task = tokio::spawn(run_shard(
        ctx,
        h.tenure.clone(),
        p,
        CancellationToken::new(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen.lock().contains(&seq) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read nothing by shard id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = h.stream.split(KEY, u128::MAX / 2).unwrap();
    assert_eq!(task.await.unwrap(), ShardExit::ShardEnded);
    let table = h.coordinator.store().list_leases().await.unwrap();
    for child in [&a, &b] {
        let l = table
            .iter()
            .find(|l| l.key == id.lease_key(child))
            .unwrap_or_else(|| panic!("no lease {} in {table:?}", id.lease_key(child)));
        assert_eq!(l.shard_id(), child.as_str());
        assert_eq!(l.multi_stream.as_ref().map(|m| &m.stream), Some(&id));
        assert_eq!(l.parent_shard_ids, vec![KEY.to_string()]);
    }
    let parent = table.iter().find(|l| l.key == id.lease_key(KEY)).unwrap();
    assert!(parent.checkpoint.is_shard_end());
    let mut children = vec![a.clone(), b.clone()];
    children.sort();
    assert_eq!(parent.child_shard_ids, children);
    h.stop().await;
}

/// A multi-stream child waits for its parent's lease, found by the stream's key, to reach
/// SHARD_END (looked up by the bare shard id it would seem absent, and the child would start
/// before its parent is done).
#[tokio::test(start_paused = true)]
async fn a_multi_stream_child_waits_for_its_parent_under_the_streams_key() {
    let stream = InMemoryStream::new("s", 1);
    let (a, _b) = stream.split(KEY, u128::MAX / 2).unwrap();
    let (put_shard, seq) = stream.put("k", b"x");
    let id = multi_stream_id();
    let mut parent = Lease::for_stream(id.clone(), KEY, Checkpoint::sequence("1", 0).unwrap());
    parent.owner = Some("other".into());
    let child =
        Lease::for_stream(id.clone(), a.clone(), Checkpoint::TrimHorizon).with_parents([KEY]);
    let h = Harness::holding(stream, id.clone(), child, vec![parent]).await;
    let (p, calls) = Recorder::new(|_| {});
    let ctx = h.ctx(config().parent_shard_poll_interval(Duration::from_millis(500)));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_shard(ctx, h.tenure.clone(), p, stop.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        calls.lock().is_empty(),
        "the child started before its parent finished: {:?}",
        calls.lock()
    );
    // The parent finishes (a renewal may move its counter between the read and the write).
    let store = h.coordinator.store().clone();
    loop {
        let mut finished = store.get_lease(&id.lease_key(KEY)).await.unwrap().unwrap();
        finished.checkpoint = Checkpoint::ShardEnd;
        if let crate::lease::WriteOutcome::Applied(_) = store.update_lease(&finished).await.unwrap()
        {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let want = if put_shard == a {
        Some(format!("records {seq}"))
    } else {
        None
    };
    while !calls.lock().iter().any(|c| c == "initialize")
        || want.as_ref().is_some_and(|w| !calls.lock().contains(w))
    {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", calls.lock());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = task.await;
    h.stop().await;
}
