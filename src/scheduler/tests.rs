//! The scheduler's tests: start-up, shutdown, and whole runs on in-memory services.

use super::*;
use crate::checkpointer::Checkpointer;
use crate::config::RetrievalMode;
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, Shutdown,
};
use crate::retrieval::StreamRef;
use crate::stream::StreamIdentifier;
use crate::testing::lease_store::{Fault, InMemoryLeaseStore, LeaseOp};
use crate::testing::stream::{InMemoryStream, StreamFault, StreamOp};

struct Noop;

#[async_trait::async_trait]
impl RecordProcessor for Noop {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn process_records(
        &mut self,
        _: ProcessRecordsInput,
        _: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

fn scheduler(
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
) -> Scheduler<impl RecordProcessorFactory> {
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w")
        .build()
        .unwrap();
    Scheduler::new(
        config,
        |_: &str| Noop,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    )
}

/// How long `run` takes to return when shutdown is signalled one second into start-up.
async fn time_to_stop(s: Scheduler<impl RecordProcessorFactory>, by_handle: bool) -> Duration {
    let handle = s.handle();
    let start = Instant::now();
    let signal = async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if by_handle {
            handle.request_shutdown();
            std::future::pending::<()>().await
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(600), s.run(signal))
        .await
        .expect("run must return after the shutdown signal");
    assert!(
        result.is_ok(),
        "a shutdown during start-up is not an error: {result:?}"
    );
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_table_creation_stops_at_once() {
    for (fault, by_handle) in [
        (Fault::Timeout, false),
        (Fault::Delay(Duration::from_secs(3600)), false),
        (Fault::Timeout, true),
    ] {
        let stream = InMemoryStream::new("s", 2);
        let store = InMemoryLeaseStore::new();
        store.set_fault_injector(Some(Arc::new(move |op: LeaseOp, _: Option<&str>| {
            (op == LeaseOp::CreateTable).then_some(fault)
        })));
        let took = time_to_stop(scheduler(&stream, &store), by_handle).await;
        assert!(
            took < Duration::from_millis(1100),
            "{fault:?}: took {took:?}"
        );
        assert!(store.snapshot().is_empty(), "no lease may be created");
    }
}

/// Records each shard's deliveries (and the shard of every batch, in delivery order);
/// checkpoints every batch and at shard end.
#[derive(Clone, Default)]
struct Journal(
    Arc<crate::sync::Mutex<BTreeMap<String, Vec<String>>>>,
    Arc<crate::sync::Mutex<Vec<String>>>,
);

struct Recording {
    shard: String,
    journal: Journal,
}

#[async_trait::async_trait]
impl RecordProcessor for Recording {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        // The processor is told its stream (from the configuration) and its shard; a
        // panic here fails every delivery, and with it the test.
        assert_eq!(input.stream, StreamIdentifier::single("s"));
        assert_eq!(input.shard_id, self.shard);
        Ok(())
    }
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        assert_eq!(input.stream.name(), "s");
        assert_eq!(&*input.shard_id, self.shard);
        {
            let mut j = self.journal.0.lock();
            let log = j.entry(self.shard.clone()).or_default();
            log.extend(input.records.iter().map(|r| r.sequence_number.to_string()));
            if !input.records.is_empty() {
                self.journal.1.lock().push(self.shard.clone());
            }
        }
        Ok(cp.checkpoint().await?)
    }
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        if let Shutdown::ShardEnded { checkpointer } | Shutdown::Requested { checkpointer } = reason
        {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

/// A fan-out worker registers its consumer at start and reads every shard by
/// subscription (no GetRecords at all), through a split and a merge: every record once,
/// in order per shard, children after their parents.
#[tokio::test(start_paused = true)]
async fn a_fan_out_worker_reads_every_shard_by_subscription_through_reshards() {
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w")
        .initial_position(crate::InitialPosition::TrimHorizon)
        .retrieval_mode(RetrievalMode::FanOut)
        .parent_shard_poll_interval(Duration::from_millis(500))
        .shard_sync_interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let factory = {
        let journal = journal.clone();
        move |shard: &str| Recording {
            shard: shard.to_string(),
            journal: journal.clone(),
        }
    };
    let scheduler = Scheduler::new(
        config,
        factory,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    let mut put: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut produce = |n: usize| {
        for i in 0..n {
            let (shard, seq) = stream.put(&format!("k{i}"), b"x");
            put.entry(shard).or_default().push(seq);
        }
    };
    produce(40);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let shards = stream.shards();
    let (a, b) = stream
        .split(&shards[0].shard_id, shards[0].hash_key_range.end / 2)
        .unwrap();
    produce(40);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let merged = stream.merge(&a, &b).unwrap();
    produce(40);
    let delivered = || journal.0.lock().values().map(Vec::len).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered() < 120 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *journal.0.lock(),
        put,
        "every record once, in order per shard"
    );
    assert!(
        put.contains_key(&merged),
        "records reached the merged child"
    );
    let order = journal.1.lock().clone();
    let first = |s: &str| order.iter().position(|x| x == s).unwrap();
    let last = |s: &str| order.iter().rposition(|x| x == s).unwrap();
    for (parent, child) in [
        (&shards[0].shard_id, &a),
        (&shards[0].shard_id, &b),
        (&a, &merged),
        (&b, &merged),
    ] {
        assert!(
            last(parent) < first(child),
            "{parent} finished before {child} started"
        );
    }
    assert_eq!(stream.get_records_calls(), 0, "no polling");
    let consumers = stream.consumers();
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].consumer_name, "app");
    handle.request_shutdown();
    task.await.unwrap().unwrap();
}

/// A configured consumer ARN that names no consumer stops the worker at start with an
/// error saying so (no lease is taken).
#[tokio::test(start_paused = true)]
async fn an_unknown_consumer_arn_stops_the_worker_at_start() {
    let stream = InMemoryStream::new("s", 1);
    let store = InMemoryLeaseStore::new();
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w")
        .retrieval_mode(RetrievalMode::FanOut)
        .fan_out(crate::FanOutConfig {
            consumer_arn: Some(
                "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/nope:1".into(),
            ),
            ..Default::default()
        })
        .build()
        .unwrap();
    let scheduler = Scheduler::new(
        config,
        |_: &str| Noop,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(600),
        scheduler.run(std::future::pending()),
    )
    .await
    .expect("the worker gives up")
    .unwrap_err();
    assert!(matches!(err, SchedulerError::FanOutConsumer(_)), "{err}");
    assert!(
        err.to_string().contains("no stream consumer has the ARN"),
        "{err}"
    );
    assert!(store.snapshot().values().all(|l| l.owner.is_none()));
}

/// A fan-out worker (`app`, TRIM_HORIZON) on `stream` whose processors record into
/// `journal` and checkpoint every batch.
fn fan_out_worker(
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
    journal: &Journal,
    fan_out: crate::FanOutConfig,
) -> Scheduler<impl RecordProcessorFactory> {
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w")
        .initial_position(crate::InitialPosition::TrimHorizon)
        .retrieval_mode(RetrievalMode::FanOut)
        .fan_out(fan_out)
        .build()
        .unwrap();
    let journal = journal.clone();
    let factory = move |shard: &str| Recording {
        shard: shard.to_string(),
        journal: journal.clone(),
    };
    Scheduler::new(
        config,
        factory,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    )
}

/// Put `n` records (spread over the shards by key), adding their sequence numbers to
/// `put`, by shard.
fn put_records(stream: &InMemoryStream, put: &mut BTreeMap<String, Vec<String>>, n: usize) {
    for i in 0..n {
        let (shard, seq) = stream.put(&format!("k{i}"), b"x");
        put.entry(shard).or_default().push(seq);
    }
}

fn delivered(journal: &Journal) -> usize {
    journal.0.lock().values().map(Vec::len).sum()
}

/// Wait until `done`, at most `limit`; whether it happened.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Wait until the worker's `task` ends (at most `limit`), checking its readiness every
/// 100 ms: once false it must stay false. The time it took.
async fn wait_for_the_worker_to_stop<T>(
    task: &tokio::task::JoinHandle<T>,
    handle: &SchedulerHandle,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let mut not_ready = false;
    while !task.is_finished() && start.elapsed() < limit {
        let ready = handle.health().ready;
        assert!(!(ready && not_ready), "ready again after it was not");
        not_ready |= !ready;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        task.is_finished(),
        "the worker still runs {limit:?} after its consumer was deleted, holding {:?}, health: {}",
        handle.held_shards(),
        handle.health()
    );
    start.elapsed()
}

/// After the worker stopped: it is neither ready nor live, its leases are released (so
/// other workers take them at once) and checkpointed at the last record each processor
/// got, which is every record `put`.
fn assert_stopped_cleanly(
    handle: &SchedulerHandle,
    store: &InMemoryLeaseStore,
    journal: &Journal,
    put: &BTreeMap<String, Vec<String>>,
) {
    let health = handle.health();
    assert!(!health.ready && !health.live && health.stopped, "{health}");
    assert_eq!(*journal.0.lock(), *put, "every record once, in order");
    let leases = store.snapshot();
    for (shard, seqs) in put {
        let lease = &leases[shard];
        assert_eq!(lease.owner, None, "{shard} released");
        assert_eq!(
            Some(lease.checkpoint.stored_value()),
            seqs.last().map(String::as_str),
            "{shard} checkpointed"
        );
    }
}

/// A stream consumer configured by ARN that is deleted while the worker reads through it
/// is not registered again (the worker was told to use that one): the worker stops, not
/// ready from when it noticed, with an error naming the ARN, after its processors
/// checkpointed and with its leases released, so that other workers take the shards at
/// once. (It used to retry every shard every 10 s forever, renewing its leases and ready.)
#[tokio::test(start_paused = true)]
async fn a_deleted_consumer_given_by_arn_stops_the_worker_and_releases_its_leases() {
    let stream = InMemoryStream::new("s", 4);
    stream.set_consumer_activation_delay(Duration::ZERO);
    let arn = stream
        .register_stream_consumer("external")
        .await
        .unwrap()
        .consumer_arn;
    let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
    let fan_out = crate::FanOutConfig {
        consumer_arn: Some(arn.clone()),
        ..Default::default()
    };
    let scheduler = fan_out_worker(&stream, &store, &journal, fan_out);
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    let mut put = BTreeMap::new();
    put_records(&stream, &mut put, 40);
    assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 40).await);
    assert!(handle.health().ready, "{}", handle.health());
    assert!(stream.deregister_consumer("external"));
    let took = wait_for_the_worker_to_stop(&task, &handle, Duration::from_secs(600)).await;
    assert!(
        took < Duration::from_secs(30),
        "stopped {took:?} after the deletion"
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, SchedulerError::FanOutConsumerDeleted { consumer_arn } if *consumer_arn == arn),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&arn) && text.contains("deleted"), "{text}");
    assert_stopped_cleanly(&handle, &store, &journal, &put);
}

/// A stream consumer registered by name that is deleted is registered again, once for
/// all the worker's shards, and every shard goes on where it was: every record once, in
/// order; the worker stays ready (it can read).
#[tokio::test(start_paused = true)]
async fn a_deleted_consumer_registered_by_name_is_registered_again_once_for_every_shard() {
    let stream = InMemoryStream::new("s", 4);
    let registers = stream.count_calls(StreamOp::RegisterStreamConsumer);
    let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
    let scheduler = fan_out_worker(&stream, &store, &journal, Default::default());
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    let mut put = BTreeMap::new();
    put_records(&stream, &mut put, 40);
    assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 40).await);
    let first = stream.consumers()[0].consumer_arn.clone();
    assert!(stream.deregister_consumer("app"));
    // (A new registration in the same second would get the same ARN.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    put_records(&stream, &mut put, 40);
    assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 80).await);
    assert_eq!(*journal.0.lock(), put, "every record once, in order");
    let consumers = stream.consumers();
    assert_eq!(consumers.len(), 1);
    assert_ne!(consumers[0].consumer_arn, first, "registered again");
    assert_eq!(registers.load(Ordering::SeqCst), 2, "registered again once");
    assert_eq!(
        stream.subscribed_shards(&consumers[0].consumer_arn).len(),
        4,
        "every shard subscribed with the new consumer"
    );
    assert!(handle.health().ready, "{}", handle.health());
    handle.request_shutdown();
    task.await.unwrap().unwrap();
}

/// A stream consumer registered by name that is deleted and cannot be registered again
/// (a permission is missing: retrying does not help) stops the worker as a deleted
/// consumer given by ARN does, with the registration's error.
#[tokio::test(start_paused = true)]
async fn a_deleted_consumer_that_cannot_be_registered_again_stops_the_worker() {
    let stream = InMemoryStream::new("s", 2);
    let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
    let scheduler = fan_out_worker(&stream, &store, &journal, Default::default());
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    let mut put = BTreeMap::new();
    put_records(&stream, &mut put, 20);
    assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 20).await);
    stream.set_fault_injector(Some(Arc::new(|op: StreamOp, _: Option<&str>| {
        (op == StreamOp::RegisterStreamConsumer).then_some(StreamFault::AccessDenied)
    })));
    assert!(stream.deregister_consumer("app"));
    let took = wait_for_the_worker_to_stop(&task, &handle, Duration::from_secs(600)).await;
    assert!(
        took < Duration::from_secs(30),
        "stopped {took:?} after the deletion"
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            SchedulerError::FanOutConsumer(ConsumerRegistrationError::Call { .. })
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("AccessDenied"), "{text}");
    assert_stopped_cleanly(&handle, &store, &journal, &put);
}

/// A configured consumer ARN of another account or region than the stream's (the same
/// stream name: the configuration cannot tell) is refused at start, before any call
/// about the consumer, with an error saying which part differs.
#[tokio::test(start_paused = true)]
async fn a_consumer_arn_of_another_account_or_region_is_refused_at_start() {
    for (arn, part) in [
        (
            "arn:aws:kinesis:us-east-1:111111111111:stream/s/consumer/app:1",
            "account",
        ),
        (
            "arn:aws:kinesis:eu-west-1:000000000000:stream/s/consumer/app:1",
            "region",
        ),
    ] {
        let stream = InMemoryStream::new("s", 1);
        let describes = stream.count_calls(StreamOp::DescribeStreamConsumer);
        let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
        let fan_out = crate::FanOutConfig {
            consumer_arn: Some(arn.into()),
            ..Default::default()
        };
        let scheduler = fan_out_worker(&stream, &store, &journal, fan_out);
        let err = tokio::time::timeout(
            Duration::from_secs(600),
            scheduler.run(std::future::pending()),
        )
        .await
        .expect("the worker gives up")
        .unwrap_err();
        assert!(
            matches!(
                &err,
                SchedulerError::FanOutConsumer(ConsumerRegistrationError::OtherStream { mismatch, .. })
                    if *mismatch == part
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{part} differs")), "{text}");
        assert_eq!(describes.load(Ordering::SeqCst), 0, "{arn}");
        assert!(store.snapshot().values().all(|l| l.owner.is_none()));
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_the_first_shard_sync_stops_at_once() {
    for fault in [
        StreamFault::Timeout,
        StreamFault::Delay(Duration::from_secs(3600)),
    ] {
        let stream = InMemoryStream::new("s", 2);
        stream.set_fault_injector(Some(Arc::new(move |op: StreamOp, _: Option<&str>| {
            (op == StreamOp::ListShards).then_some(fault)
        })));
        let store = InMemoryLeaseStore::new();
        let took = time_to_stop(scheduler(&stream, &store), false).await;
        assert!(
            took < Duration::from_millis(1100),
            "{fault:?}: took {took:?}"
        );
    }
}
