//! Multi-stream workers on in-memory services: several streams in one lease table, streams
//! joining and leaving the set at run time, the deletion strategies, a stream deleted and
//! re-created under its name.

use super::*;
use crate::checkpointer::Checkpointer;
use crate::config::{InitialPosition, RetrievalMode};
use crate::multi_stream::{
    FormerStreamsLeasesDeletionStrategy as Strategy, MultiStreamTracker, StreamConfig,
};
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, Shutdown,
};
use crate::stream::StreamIdentifier;
use crate::sync::Mutex;
use crate::testing::lease_store::{InMemoryLeaseStore, LeaseOp};
use crate::testing::stream::InMemoryStream;

const ACCOUNT: &str = "123456789012";

fn id(name: &str, epoch: u64) -> StreamIdentifier {
    StreamIdentifier::multi(ACCOUNT, name, epoch).unwrap()
}

/// A tracker the test changes while the workers run.
#[derive(Clone)]
struct Tracked {
    streams: Arc<Mutex<Vec<StreamConfig>>>,
    cleanup: Arc<Mutex<Vec<StreamIdentifier>>>,
    strategy: Strategy,
}

impl Tracked {
    fn new(strategy: Strategy, streams: &[&StreamIdentifier]) -> Self {
        let t = Tracked {
            streams: Arc::default(),
            cleanup: Arc::default(),
            strategy,
        };
        t.set(streams);
        t
    }

    fn set(&self, streams: &[&StreamIdentifier]) {
        *self.streams.lock() = streams
            .iter()
            .map(|s| StreamConfig::new((*s).clone(), InitialPosition::TrimHorizon))
            .collect();
    }
}

#[async_trait::async_trait]
impl MultiStreamTracker for Tracked {
    async fn stream_config_list(
        &self,
    ) -> Result<Vec<StreamConfig>, crate::multi_stream::TrackerError> {
        Ok(self.streams.lock().clone())
    }
    fn former_streams_leases_deletion_strategy(&self) -> Strategy {
        self.strategy
    }
    async fn streams_for_lease_cleanup(
        &self,
    ) -> Result<Vec<StreamIdentifier>, crate::multi_stream::TrackerError> {
        Ok(self.cleanup.lock().clone())
    }
}

/// The in-memory streams by serialized identifier, and a client for each (a stream the test
/// has not created reads as deleted).
#[derive(Clone, Default)]
struct Streams(Arc<Mutex<BTreeMap<String, InMemoryStream>>>);

impl Streams {
    fn create(&self, id: &StreamIdentifier, shards: usize) -> InMemoryStream {
        let s = InMemoryStream::new(id.name(), shards);
        self.0.lock().insert(id.to_string(), s.clone());
        s
    }

    fn clients(&self) -> impl StreamClients {
        let streams = self.clone();
        move |c: &StreamConfig| -> Arc<dyn StreamClient> {
            let existing = streams.0.lock().get(&c.stream.to_string()).cloned();
            Arc::new(existing.unwrap_or_else(|| {
                let gone = InMemoryStream::new(c.stream.name(), 1);
                gone.delete();
                gone
            }))
        }
    }
}

/// (stream, shard) → sequence numbers delivered, in order.
type Deliveries = BTreeMap<(String, String), Vec<String>>;

/// Every record delivered, by (stream, shard); and where each stream's processors were told
/// they are.
#[derive(Clone, Default)]
struct Journal {
    records: Arc<Mutex<Deliveries>>,
    requested: Arc<Mutex<Vec<String>>>,
}

impl Journal {
    /// The distinct records of `stream` delivered (a record is delivered again after a lease
    /// changes hands before its checkpoint: at least once).
    fn of_stream(&self, stream: &StreamIdentifier) -> usize {
        let key = stream.to_string();
        let records = self.records.lock();
        records
            .iter()
            .filter(|((s, _), _)| *s == key)
            .map(|(_, v)| v.iter().collect::<BTreeSet<_>>().len())
            .sum()
    }
}

struct Recording {
    journal: Journal,
    at: Option<(String, String)>,
}

#[async_trait::async_trait]
impl RecordProcessor for Recording {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        assert!(
            input.stream.is_multi_stream(),
            "told its stream: {}",
            input.stream
        );
        self.at = Some((input.stream.to_string(), input.shard_id));
        Ok(())
    }
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let at = self.at.clone().expect("initialized");
        assert_eq!(input.stream.to_string(), at.0);
        assert_eq!(&*input.shard_id, at.1);
        let seqs = input.records.iter().map(|r| r.sequence_number.to_string());
        self.journal
            .records
            .lock()
            .entry(at)
            .or_default()
            .extend(seqs);
        Ok(cp.checkpoint().await?)
    }
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } => checkpointer.checkpoint().await?,
            Shutdown::Requested { checkpointer } => {
                let at = self.at.clone().expect("initialized");
                self.journal
                    .requested
                    .lock()
                    .push(format!("{}:{}", at.0, at.1));
                checkpointer.checkpoint().await?
            }
            _ => {}
        }
        Ok(())
    }
}

fn worker(
    name: &str,
    tracker: &Tracked,
    streams: &Streams,
    store: &InMemoryLeaseStore,
    journal: &Journal,
) -> Scheduler<impl RecordProcessorFactory> {
    let config = Config::multi_stream_builder("app", tracker.clone())
        .worker_id(name)
        .failover_time(Duration::from_secs(3))
        .stream_tracker_interval(Duration::from_secs(2))
        .shard_sync_interval(Duration::from_secs(2))
        .lease_cleanup_interval(Duration::from_secs(2))
        .parent_shard_poll_interval(Duration::from_millis(500))
        .rng_seed(Some(name.len() as u64))
        .build()
        .unwrap();
    scheduler_of(config, streams, store, journal)
}

/// A worker of `config` on `streams` and `store`, its processors recording into `journal`.
fn scheduler_of(
    config: Config,
    streams: &Streams,
    store: &InMemoryLeaseStore,
    journal: &Journal,
) -> Scheduler<impl RecordProcessorFactory> {
    let journal = journal.clone();
    let factory = move |_: &str| Recording {
        journal: journal.clone(),
        at: None,
    };
    Scheduler::multi_stream(config, factory, streams.clients(), Arc::new(store.clone()))
}

fn produce(stream: &InMemoryStream, n: usize) {
    for i in 0..n {
        stream.put(&format!("k{i}"), b"x");
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lease_streams(store: &InMemoryLeaseStore) -> BTreeSet<String> {
    store
        .snapshot()
        .values()
        .filter_map(|l| l.multi_stream.as_ref().map(|m| m.stream.to_string()))
        .collect()
}

/// Two workers on three streams: each stream's records reach processors that know their
/// stream; a stream added while running is consumed from its start, a removed one is shut down
/// as requested and none of its later records is delivered; the leases of all streams are
/// balanced together; a split in one stream starts its children after their parent.
#[tokio::test(start_paused = true)]
async fn two_workers_follow_a_changing_set_of_streams() {
    let (a, b, c) = (id("a", 1), id("b", 1), id("c", 1));
    let streams = Streams::default();
    let (sa, sb, sc) = (
        streams.create(&a, 2),
        streams.create(&b, 1),
        streams.create(&c, 1),
    );
    let tracker = Tracked::new(Strategy::NoLeaseDeletion, &[&a, &b]);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let w1 = worker("w1", &tracker, &streams, &store, &journal);
    let w2 = worker("w2", &tracker, &streams, &store, &journal);
    let (h1, h2) = (w1.handle(), w2.handle());
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    produce(&sa, 30);
    produce(&sb, 10);
    produce(&sc, 10);
    until("a and b consumed", || {
        journal.of_stream(&a) == 30 && journal.of_stream(&b) == 10
    })
    .await;
    assert_eq!(journal.of_stream(&c), 0, "c is not tracked yet");
    assert_eq!(
        lease_streams(&store),
        [a.to_string(), b.to_string()].into(),
        "leases of the tracked streams only"
    );
    for key in store.snapshot().keys() {
        let (stream, shard) = StreamIdentifier::split_lease_key(key).expect("multi-stream key");
        assert!(stream == a || stream == b, "{key}");
        assert!(shard.starts_with("shardId-"), "{key}");
    }
    until("both workers hold leases", || {
        !h1.held_shards().is_empty() && !h2.held_shards().is_empty()
    })
    .await;

    // c joins, b leaves.
    tracker.set(&[&a, &c]);
    until("c consumed from its start", || journal.of_stream(&c) == 10).await;
    until(
        "b's processor shut down as requested and its lease released",
        || {
            let b_key = b.lease_key("shardId-000000000000");
            journal.requested.lock().contains(&b_key) && store.snapshot()[&b_key].owner.is_none()
        },
    )
    .await;
    produce(&sb, 10);
    let shards = sa.shards();
    let (x, y) = sa
        .split(&shards[0].shard_id, shards[0].hash_key_range.end / 2)
        .unwrap();
    produce(&sa, 30);
    produce(&sc, 10);
    until("a and c consumed", || {
        journal.of_stream(&a) == 60 && journal.of_stream(&c) == 20
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(journal.of_stream(&b), 10, "nothing of b after it left");
    let b_lease = &store.snapshot()[&b.lease_key("shardId-000000000000")];
    assert!(
        b_lease.owner.is_none(),
        "b's lease stays unowned: {b_lease:?}"
    );
    assert!(
        !b_lease.checkpoint.is_initial_position(),
        "b's lease is kept, with its checkpoint (NoLeaseDeletion)"
    );
    let records = journal.records.lock().clone();
    for child in [&x, &y] {
        assert!(
            records.contains_key(&(a.to_string(), child.clone())),
            "child {child} of the split was consumed"
        );
    }
    h1.request_shutdown();
    h2.request_shutdown();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
}

/// Leases of a stream the application does not track (left by an earlier run) are never
/// taken or processed; with `AutoDetectionAndDeferredDeletion` they are deleted after the wait,
/// and a stream back in the set before then keeps its leases.
#[tokio::test(start_paused = true)]
async fn former_streams_are_never_processed_and_auto_detection_deletes_them_after_the_wait() {
    let (a, old, back) = (id("a", 1), id("old", 1), id("back", 1));
    let streams = Streams::default();
    let (sa, sold, sback) = (
        streams.create(&a, 1),
        streams.create(&old, 1),
        streams.create(&back, 1),
    );
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    // An earlier run tracked all three.
    let wait = Duration::from_secs(20);
    let tracker = Tracked::new(
        Strategy::AutoDetectionAndDeferredDeletion { wait },
        &[&a, &old, &back],
    );
    let w = worker("w1", &tracker, &streams, &store, &journal);
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    until("three streams leased", || lease_streams(&store).len() == 3).await;
    tracker.set(&[&a]);
    // Every worker sees the change at its next round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce(&sa, 5);
    produce(&sold, 5);
    produce(&sback, 5);
    until("a consumed", || journal.of_stream(&a) == 5).await;
    // Not taken again (to be released again, round after round).
    let old_key = old.lease_key("shardId-000000000000");
    let takes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    store.set_fault_injector(Some(Arc::new({
        let (takes, old_key) = (takes.clone(), old_key.clone());
        move |op: LeaseOp, key: Option<&str>| {
            if op == LeaseOp::Take && key == Some(old_key.as_str()) {
                takes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            None
        }
    })));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        takes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a lease of an untracked stream was taken"
    );
    assert_eq!(store.snapshot()[&old_key].owner, None, "released");
    tracker.set(&[&a, &back]);
    until("back consumed again", || journal.of_stream(&back) == 5).await;
    assert_eq!(journal.of_stream(&old), 0, "old is not processed");
    until("old's leases deleted after the wait", || {
        !lease_streams(&store).contains(&old.to_string())
    })
    .await;
    assert!(
        lease_streams(&store).contains(&back.to_string()),
        "back came back in time: its leases are kept"
    );
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// `ProvidedStreamsDeferredDeletion` deletes only the listed streams' leases, and a stream
/// Kinesis no longer has is deleted without waiting; the stream re-created under its name
/// (a new creation epoch) is a new stream, consumed from its start.
#[tokio::test(start_paused = true)]
async fn provided_streams_are_deleted_and_a_recreated_stream_is_a_new_one() {
    let (a, kept, orders1, orders2) = (id("a", 1), id("kept", 1), id("orders", 1), id("orders", 2));
    let streams = Streams::default();
    let (_sa, _skept, s1) = (
        streams.create(&a, 1),
        streams.create(&kept, 1),
        streams.create(&orders1, 1),
    );
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let tracker = Tracked::new(
        Strategy::ProvidedStreamsDeferredDeletion {
            wait: Duration::from_secs(3600),
        },
        &[&a, &kept, &orders1],
    );
    let w = worker("w1", &tracker, &streams, &store, &journal);
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    produce(&s1, 5);
    until("orders (1) consumed", || journal.of_stream(&orders1) == 5).await;
    // orders is deleted and re-created; the application tracks the new one and lists the
    // old one for clean-up; kept leaves the set unlisted.
    s1.delete();
    let s2 = streams.create(&orders2, 1);
    produce(&s2, 7);
    *tracker.cleanup.lock() = vec![orders1.clone()];
    tracker.set(&[&a, &orders2]);
    until("orders (2) consumed from its start", || {
        journal.of_stream(&orders2) == 7
    })
    .await;
    until("the deleted stream's leases deleted at once", || {
        !lease_streams(&store).contains(&orders1.to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        lease_streams(&store).contains(&kept.to_string()),
        "an unlisted former stream keeps its leases"
    );
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// Enhanced fan-out, per stream: each stream's consumer is registered on it (by the worker's
/// consumer name) unless its `StreamConfig` names one by ARN, and every record of both
/// streams is read by subscription.
#[tokio::test(start_paused = true)]
async fn fan_out_reads_each_stream_through_its_own_consumer() {
    let (a, b) = (id("a", 1), id("b", 1));
    let streams = Streams::default();
    let (sa, sb) = (streams.create(&a, 2), streams.create(&b, 1));
    let by_arn = sb
        .register_consumer("operators-consumer")
        .unwrap()
        .consumer_arn;
    let tracker = Tracked::new(Strategy::NoLeaseDeletion, &[]);
    *tracker.streams.lock() = vec![
        StreamConfig::new(a.clone(), InitialPosition::TrimHorizon),
        StreamConfig::new(b.clone(), InitialPosition::TrimHorizon).with_consumer_arn(&by_arn),
    ];
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let config = Config::multi_stream_builder("app", tracker.clone())
        .worker_id("w")
        .retrieval_mode(RetrievalMode::FanOut)
        .build()
        .unwrap();
    let w = scheduler_of(config, &streams, &store, &journal);
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    produce(&sa, 20);
    produce(&sb, 10);
    until("both streams read", || {
        journal.of_stream(&a) == 20 && journal.of_stream(&b) == 10
    })
    .await;
    assert_eq!(
        sa.get_records_calls() + sb.get_records_calls(),
        0,
        "no polling"
    );
    let names = |s: &InMemoryStream| -> Vec<String> {
        s.consumers().into_iter().map(|c| c.consumer_name).collect()
    };
    assert_eq!(names(&sa), ["app"], "registered on a by name");
    assert_eq!(
        names(&sb),
        ["operators-consumer"],
        "b read through its configured consumer"
    );
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// A tracker that fails, then panics, then answers again: the worker keeps the streams of
/// the moment meanwhile, and follows the tracker once it answers (a panic ends one round, not
/// the rounds).
#[tokio::test(start_paused = true)]
async fn a_failing_or_panicking_tracker_keeps_the_streams_of_the_moment() {
    struct Flaky(Tracked, std::sync::atomic::AtomicU32);
    #[async_trait::async_trait]
    impl MultiStreamTracker for Flaky {
        async fn stream_config_list(
            &self,
        ) -> Result<Vec<StreamConfig>, crate::multi_stream::TrackerError> {
            match self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                1 => Err("tracker backend down".into()),
                2 => panic!("tracker bug"),
                _ => self.0.stream_config_list().await,
            }
        }
        fn former_streams_leases_deletion_strategy(&self) -> Strategy {
            Strategy::NoLeaseDeletion
        }
    }
    let (a, b) = (id("a", 1), id("b", 1));
    let streams = Streams::default();
    let (sa, sb) = (streams.create(&a, 1), streams.create(&b, 1));
    let tracked = Tracked::new(Strategy::NoLeaseDeletion, &[&a]);
    let tracker = Flaky(tracked.clone(), std::sync::atomic::AtomicU32::new(0));
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let config = Config::multi_stream_builder("app", tracker)
        .worker_id("w")
        .stream_tracker_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let w = scheduler_of(config, &streams, &store, &journal);
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    produce(&sa, 5);
    until("a consumed", || journal.of_stream(&a) == 5).await;
    // A failed round and a panicked one later, the worker still consumes a, and then b.
    tracked.set(&[&a, &b]);
    produce(&sa, 5);
    produce(&sb, 5);
    until("a consumed after the tracker failed", || {
        journal.of_stream(&a) == 10
    })
    .await;
    until("b consumed once the tracker answers again", || {
        journal.of_stream(&b) == 5
    })
    .await;
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// A stream of another account known only from the lease table (an earlier run consumed it,
/// by ARN) is not judged gone by a call by name, which would not find it: its leases wait for
/// the deletion's wait.
#[tokio::test(start_paused = true)]
async fn a_former_stream_of_another_account_is_not_deleted_as_gone() {
    let a = id("a", 1);
    let other = StreamIdentifier::multi("999999999999", "shared", 1).unwrap();
    let streams = Streams::default();
    streams.create(&a, 1);
    let store = InMemoryLeaseStore::new();
    let key = other.lease_key("shardId-000000000000");
    let lease = crate::lease::Lease::for_stream(
        other.clone(),
        "shardId-000000000000".to_string(),
        crate::Checkpoint::TrimHorizon,
    );
    store.with_table(|t| t.insert(lease.key.clone(), lease));
    let tracker = Tracked::new(
        Strategy::AutoDetectionAndDeferredDeletion {
            wait: Duration::from_secs(3600),
        },
        &[&a],
    );
    let w = worker("w1", &tracker, &streams, &store, &Journal::default());
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        store.snapshot().contains_key(&key),
        "kept until the wait ends"
    );
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// Enhanced fan-out in a multi-stream application: a stream whose consumer cannot be used
/// (an ARN that names none) does not stop the worker; the other streams go on.
#[tokio::test(start_paused = true)]
async fn one_streams_unusable_consumer_does_not_stop_the_others() {
    let (a, b) = (id("a", 1), id("b", 1));
    let streams = Streams::default();
    let (sa, sb) = (streams.create(&a, 1), streams.create(&b, 1));
    let tracker = Tracked::new(Strategy::NoLeaseDeletion, &[]);
    *tracker.streams.lock() = vec![
        StreamConfig::new(a.clone(), InitialPosition::TrimHorizon),
        StreamConfig::new(b.clone(), InitialPosition::TrimHorizon)
            .with_consumer_arn(format!("{}/consumer/nope:1", sb.arn())),
    ];
    let journal = Journal::default();
    let config = Config::multi_stream_builder("app", tracker.clone())
        .worker_id("w")
        .retrieval_mode(RetrievalMode::FanOut)
        .build()
        .unwrap();
    let store = InMemoryLeaseStore::new();
    let w = scheduler_of(config, &streams, &store, &journal);
    let h = w.handle();
    let t = tokio::spawn(w.run(std::future::pending()));
    produce(&sa, 10);
    produce(&sb, 10);
    until("a read", || journal.of_stream(&a) == 10).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!t.is_finished(), "the worker runs on");
    produce(&sa, 5);
    until("a read on", || journal.of_stream(&a) == 15).await;
    assert_eq!(journal.of_stream(&b), 0);
    h.request_shutdown();
    t.await.unwrap().unwrap();
}

/// `Scheduler::new` takes one stream client: with a multi-stream configuration, `run` says
/// so instead of reading every stream through that client.
#[tokio::test(start_paused = true)]
async fn a_multi_stream_config_needs_a_client_per_stream() {
    let tracker = Tracked::new(Strategy::NoLeaseDeletion, &[&id("a", 1)]);
    let config = Config::multi_stream_builder("app", tracker)
        .worker_id("w")
        .build()
        .unwrap();
    let s = Scheduler::new(
        config,
        |_: &str| Recording {
            journal: Journal::default(),
            at: None,
        },
        Arc::new(InMemoryStream::new("a", 1)),
        Arc::new(InMemoryLeaseStore::new()),
    );
    let e = s.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(&e, SchedulerError::Config(c) if c.message.contains("Scheduler::multi_stream")),
        "{e}"
    );
}
