//! Redelivery on paused time over the in-memory backends: restarts, attempt numbers, backoff,
//! the retry policy and its hook, partial progress.

use super::tests::{config, Harness};
use super::*;
use crate::checkpoint::ExtendedSequenceNumber;
use crate::sync::Mutex;
use crate::ProcessorError;

/// Fails the first batch with a `RestartShard` wrapped in `anyhow::Context` (through `?`).
struct WrappedRestart {
    batches: Arc<Mutex<u32>>,
}

#[async_trait::async_trait]
impl RecordProcessor for WrappedRestart {
    async fn process_records(
        &mut self,
        _: ProcessRecordsInput,
        _: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        use anyhow::Context;
        *self.batches.lock() += 1;
        let broken: Result<(), crate::RestartShard> =
            Err(crate::RestartShard("state is broken".into()));
        broken.context("while writing to the sink")?;
        Ok(())
    }
}

/// `RestartShard` inside `anyhow::Context` still ends the consumer for a restart (before,
/// the downcast missed it and the batch was redelivered forever).
#[tokio::test(start_paused = true)]
async fn a_restart_wrapped_in_anyhow_context_still_restarts_the_shard() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    h.stream.put("pk", b"r0");
    let batches = Arc::new(Mutex::new(0));
    let p = WrappedRestart {
        batches: batches.clone(),
    };
    let exit = tokio::time::timeout(
        Duration::from_secs(600),
        run_shard(
            h.ctx(config()),
            h.tenure.clone(),
            p,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the consumer must end (a restart), not redeliver forever");
    assert!(
        matches!(&exit, ShardExit::Failed(why) if why.contains("while writing to the sink")),
        "{exit:?}"
    );
    assert_eq!(*batches.lock(), 1, "no redelivery to this processor");
    h.stop().await;
}

/// What [`Flaky`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// (when, attempt, sequence numbers) of each delivery.
    deliveries: Vec<(tokio::time::Instant, u32, Vec<String>)>,
    /// (shard, sequence numbers, attempts, age) of each `retries_exhausted` call.
    exhausted: Vec<(String, Vec<String>, u32, Option<Duration>)>,
}

type FailWhen = Box<dyn FnMut(&ProcessRecordsInput) -> Option<ProcessorError> + Send>;

/// Fails the deliveries `fail` picks; checkpoints the others if `checkpoint`; answers
/// `retries_exhausted` with `decision`.
struct Flaky {
    seen: Arc<Mutex<Seen>>,
    fail: FailWhen,
    checkpoint: bool,
    decision: RetryDecision,
}

impl Flaky {
    fn new(
        fail: impl FnMut(&ProcessRecordsInput) -> Option<ProcessorError> + Send + 'static,
        decision: RetryDecision,
    ) -> (Flaky, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (
            Flaky {
                seen: seen.clone(),
                fail: Box::new(fail),
                checkpoint: true,
                decision,
            },
            seen,
        )
    }
}

fn seqs(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.sequence_number.to_string())
        .collect()
}

fn has(input: &ProcessRecordsInput, data: &str) -> bool {
    input.records.iter().any(|r| r.data == data.as_bytes())
}

#[async_trait::async_trait]
impl RecordProcessor for Flaky {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.seen.lock().deliveries.push((
            tokio::time::Instant::now(),
            input.attempt,
            seqs(&input.records),
        ));
        if let Some(e) = (self.fail)(&input) {
            return Err(e);
        }
        if self.checkpoint {
            cp.checkpoint().await?;
        }
        Ok(())
    }

    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        self.seen.lock().exhausted.push((
            failure.shard_id,
            seqs(&failure.records),
            failure.attempts,
            failure.age,
        ));
        self.decision
    }
}

/// A consumer running in the background on the harness's shard.
struct Running {
    ctx: ShardContext,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<ShardExit>,
}

impl Running {
    fn start(h: &Harness, config: crate::ConfigBuilder, p: impl RecordProcessor) -> Running {
        let ctx = h.ctx(config);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_shard(
            ctx.clone(),
            h.tenure.clone(),
            p,
            shutdown.clone(),
        ));
        Running {
            ctx,
            shutdown,
            task,
        }
    }

    /// Graceful shutdown; the consumer must end with it.
    async fn stop(self) -> ShardContext {
        self.shutdown.cancel();
        assert_eq!(self.task.await.unwrap(), ShardExit::Shutdown);
        self.ctx
    }
}

/// Poll `done` (on paused time) until it holds; fail after an hour of simulated time.
async fn wait(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within an hour of simulated time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `p` on the harness's shard until `done` holds, then shut down gracefully.
async fn run_until(
    h: &Harness,
    config: crate::ConfigBuilder,
    p: impl RecordProcessor,
    done: impl FnMut() -> bool,
) -> ShardContext {
    let running = Running::start(h, config, p);
    wait(done).await;
    running.stop().await
}

fn with_max_attempts(n: u32) -> crate::ConfigBuilder {
    config().retry_policy(crate::processor::RetryPolicy::default().with_max_attempts(n))
}

async fn stored(h: &Harness) -> Checkpoint {
    h.coordinator
        .store()
        .get_lease(super::tests::KEY)
        .await
        .unwrap()
        .expect("the lease exists")
        .checkpoint
}

/// Each redelivery carries the next attempt number, and waits twice as long as the one
/// before (with jitter: between half and all of task_backoff × 2^(failures - 1)).
#[tokio::test(start_paused = true)]
async fn redeliveries_carry_the_attempt_and_back_off_exponentially() {
    crate::backoff::seed_thread_jitter(Some(3));
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let put: Vec<String> = (0..3)
        .map(|i| h.stream.put("pk", format!("r{i}").as_bytes()).1)
        .collect();
    let (p, seen) = Flaky::new(
        |input| (input.attempt < 6).then(|| "not yet".into()),
        RetryDecision::KeepRetrying,
    );
    let s = seen.clone();
    run_until(&h, config(), p, move || s.lock().deliveries.len() >= 6).await;
    let seen = std::mem::take(&mut *seen.lock());
    let attempts: Vec<u32> = seen.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5, 6]);
    assert!(
        seen.deliveries.iter().all(|d| d.2 == put),
        "the same batch each time"
    );
    for (n, pair) in seen.deliveries.windows(2).enumerate() {
        let gap = pair[1].0 - pair[0].0;
        let raw = Duration::from_millis(500) * 2u32.pow(n as u32);
        assert!(
            gap >= raw / 2 && gap <= raw,
            "wait {} was {gap:?}, expected {:?}..={raw:?}",
            n + 1,
            raw / 2
        );
    }
    assert_eq!(
        stored(&h).await,
        Checkpoint::Sequence(ExtendedSequenceNumber::new(put[2].clone(), 0).unwrap())
    );
    crate::backoff::seed_thread_jitter(None);
    h.stop().await;
}

/// With a policy of 3 attempts, the hook is called once, after the third failure, with the
/// shard and exactly the failing records; it skips them: they are counted, checkpointed past
/// (everything before them was checkpointed), and the next records are delivered as a first
/// attempt.
#[tokio::test(start_paused = true)]
async fn an_exhausted_policy_asks_the_hook_once_and_skips_with_consent() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let poison: Vec<String> = ["a", "poison", "c"]
        .iter()
        .map(|d| h.stream.put("pk", d.as_bytes()).1)
        .collect();
    let (mut p, seen) = Flaky::new(
        |input| has(input, "poison").then(|| "cannot parse".into()),
        RetryDecision::Skip,
    );
    // The processor never checkpoints: the checkpoint past the skipped records is the
    // consumer's (nothing before them needed one).
    p.checkpoint = false;
    let running = Running::start(&h, with_max_attempts(3), p);
    wait(|| !seen.lock().exhausted.is_empty()).await;
    let later = h.stream.put("pk", b"d").1;
    wait(|| {
        let seen = seen.lock();
        seen.deliveries.iter().any(|d| d.2.contains(&later))
    })
    .await;
    assert_eq!(
        stored(&h).await,
        Checkpoint::Sequence(ExtendedSequenceNumber::new(poison[2].clone(), 0).unwrap()),
        "checkpointed right past the skipped records"
    );
    let ctx = running.stop().await;
    let seen = std::mem::take(&mut *seen.lock());
    assert_eq!(seen.exhausted.len(), 1, "{:?}", seen.exhausted);
    let (shard, records, attempts, _) = &seen.exhausted[0];
    assert_eq!(
        (shard.as_str(), records, *attempts),
        (super::tests::KEY, &poison, 3)
    );
    let attempts: Vec<u32> = seen.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(attempts, [1, 2, 3, 1], "{:?}", seen.deliveries);
    assert_eq!(ctx.skipped_records.load(Ordering::Relaxed), 3);
    h.stop().await;
}

/// `KeepRetrying`: the hook is not asked again, and the batch is redelivered until it
/// succeeds. Without a policy, the hook is never called.
#[tokio::test(start_paused = true)]
async fn keep_retrying_is_asked_once_and_no_policy_never_asks() {
    for policy in [
        crate::processor::RetryPolicy::default().with_max_attempts(2),
        crate::processor::RetryPolicy::UNLIMITED,
    ] {
        let h = Harness::new(Checkpoint::TrimHorizon).await;
        h.stream.put("pk", b"a");
        let (p, seen) = Flaky::new(
            |input| (input.attempt < 6).then(|| "flaky".into()),
            RetryDecision::KeepRetrying,
        );
        let s = seen.clone();
        run_until(&h, config().retry_policy(policy), p, move || {
            s.lock().deliveries.len() >= 6
        })
        .await;
        let seen = std::mem::take(&mut *seen.lock());
        let asked = if policy.is_unlimited() { 0 } else { 1 };
        assert_eq!(seen.exhausted.len(), asked, "{policy:?}");
        assert_eq!(seen.deliveries.last().unwrap().1, 6);
        assert!(
            matches!(stored(&h).await, Checkpoint::Sequence(_)),
            "the batch succeeded in the end"
        );
        h.stop().await;
    }
}

/// A skip never writes a checkpoint over records the processor accepted but did not
/// checkpoint: it only lets the processor's next checkpoint cover the skipped records.
#[tokio::test(start_paused = true)]
async fn a_skip_after_unchecked_records_writes_no_checkpoint() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    h.stream.put("pk", b"a");
    let (mut p, seen) = Flaky::new(
        |input| has(input, "poison").then(|| "bad".into()),
        RetryDecision::Skip,
    );
    p.checkpoint = false;
    let (s, stream) = (seen.clone(), h.stream.clone());
    let mut poison = None;
    let running = Running::start(&h, with_max_attempts(2), p);
    wait(|| {
        let seen = s.lock();
        if poison.is_none() && !seen.deliveries.is_empty() {
            poison = Some(stream.put("pk", b"poison").1);
        }
        !seen.exhausted.is_empty()
    })
    .await;
    // Let the skip happen, then check nothing was written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stored(&h).await, Checkpoint::TrimHorizon);
    assert_eq!(running.ctx.skipped_records.load(Ordering::Relaxed), 1);
    // The default shutdown checkpoints everything delivered: the skipped record included.
    running.stop().await;
    let poison = poison.unwrap();
    assert_eq!(
        stored(&h).await,
        Checkpoint::Sequence(ExtendedSequenceNumber::new(poison, 0).unwrap())
    );
    assert_eq!(seen.lock().exhausted.len(), 1);
    h.stop().await;
}

/// A maximum record age: the hook is asked once the failing records are older than it,
/// with their age.
#[tokio::test(start_paused = true)]
async fn a_max_record_age_asks_the_hook_once_the_records_are_that_old() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    h.stream.put("pk", b"poison");
    let (p, seen) = Flaky::new(|_| Some("always".into()), RetryDecision::Skip);
    let s = seen.clone();
    run_until(
        &h,
        config().retry_policy(
            crate::processor::RetryPolicy::default().with_max_record_age(Duration::from_secs(10)),
        ),
        p,
        move || !s.lock().exhausted.is_empty(),
    )
    .await;
    let seen = std::mem::take(&mut *seen.lock());
    let (_, _, attempts, age) = &seen.exhausted[0];
    let age = age.expect("the in-memory stream reports arrival times");
    assert!(
        age >= Duration::from_secs(10) && age < Duration::from_secs(30),
        "{age:?}"
    );
    assert!(
        *attempts >= 4,
        "0.5 + 1 + 2 + 4 s of backoff are not 10 s yet: {attempts}"
    );
    assert_eq!(seen.exhausted.len(), 1);
    h.stop().await;
}

static BOOMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A processor that restarts the shard whenever a batch holds "poison" (and once on "boom") and never
/// checkpoints: what the MultiLangDaemon's processor does when its child keeps crashing on a
/// record. Instances share `seen` (instance number, attempt, payloads) and `exhausted`
/// (instance number, payloads, attempts).
struct Crashing {
    instance: usize,
    seen: Shared<(usize, u32, Vec<String>)>,
    exhausted: Shared<(usize, Vec<String>, u32)>,
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

#[async_trait::async_trait]
impl RecordProcessor for Crashing {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        _: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let data = payloads(&input.records);
        let poisoned = data.iter().any(|d| d == "poison")
            || data.iter().any(|d| d == "boom") && !BOOMED.swap(true, Ordering::SeqCst);
        self.seen.lock().push((self.instance, input.attempt, data));
        if poisoned {
            return Err(ProcessorError::restart_shard("the child died"));
        }
        Ok(())
    }

    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        self.exhausted
            .lock()
            .push((self.instance, payloads(&failure.records), failure.attempts));
        RetryDecision::Skip
    }
}

/// A worker whose processors are [`Crashing`], with a retry policy of `max_attempts`, on a
/// one-shard in-memory stream that holds one record, "a".
struct CrashingWorker {
    stream: crate::retrieval::InMemoryStream,
    store: crate::lease::InMemoryLeaseStore,
    seen: Shared<(usize, u32, Vec<String>)>,
    exhausted: Shared<(usize, Vec<String>, u32)>,
    handle: crate::SchedulerHandle,
    run: tokio::task::JoinHandle<Result<(), crate::SchedulerError>>,
}

impl CrashingWorker {
    fn start(max_attempts: u32) -> CrashingWorker {
        use crate::lease::InMemoryLeaseStore;
        use crate::retrieval::{InMemoryStream, StreamRef};
        let stream = InMemoryStream::new("s", 1);
        stream.put("pk", b"a");
        let store = InMemoryLeaseStore::new();
        let config = Config::builder("app", StreamRef::Name("s".into()))
            .worker_id("w")
            .initial_position(InitialPosition::TrimHorizon)
            .idle_time_between_reads(Duration::from_millis(200))
            .retry_policy(crate::processor::RetryPolicy::default().with_max_attempts(max_attempts))
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let exhausted = Arc::new(Mutex::new(Vec::new()));
        let instances = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let factory = {
            let (seen, exhausted, instances) = (seen.clone(), exhausted.clone(), instances.clone());
            move |_: &str| Crashing {
                instance: instances.fetch_add(1, Ordering::SeqCst),
                seen: seen.clone(),
                exhausted: exhausted.clone(),
            }
        };
        let scheduler = crate::Scheduler::new(
            config,
            factory,
            Arc::new(stream.clone()),
            Arc::new(store.clone()),
        );
        let handle = scheduler.handle();
        let run = tokio::spawn(scheduler.run(std::future::pending()));
        CrashingWorker {
            stream,
            store,
            seen,
            exhausted,
            handle,
            run,
        }
    }
}

/// Restarts count as failed deliveries across processor instances: records that were
/// accepted before the failing ones are delivered again on their own (attempt 1), the
/// failing ones with the next attempt; after 3 the new instance's hook skips them (no
/// checkpoint: the earlier record was never checkpointed), a later restart does not deliver
/// them again, and the worker counts them.
#[tokio::test(start_paused = true)]
async fn restarts_on_the_same_records_exhaust_the_policy_across_processor_instances() {
    let CrashingWorker {
        stream,
        store,
        seen,
        exhausted,
        handle,
        run,
    } = CrashingWorker::start(3);
    wait(|| !seen.lock().is_empty()).await;
    stream.put("pk", b"poison");
    stream.put("pk", b"b");
    wait(|| !exhausted.lock().is_empty()).await;
    stream.put("pk", b"c");
    wait(|| seen.lock().iter().any(|s| s.2 == ["c"])).await;
    // One more restart (on "boom", once): the skipped records are not delivered again.
    stream.put("pk", b"boom");
    wait(|| {
        let seen = seen.lock();
        seen.iter().any(|s| s.1 == 2 && s.2 == ["boom"])
    })
    .await;
    handle.request_shutdown();
    run.await.unwrap().unwrap();
    let seen = std::mem::take(&mut *seen.lock());
    let s = |d: &[&str]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let poison = s(&["poison", "b"]);
    assert_eq!(
        *seen,
        [
            (0, 1, s(&["a"])),
            (0, 1, poison.clone()),
            (1, 1, s(&["a"])),
            (1, 2, poison.clone()),
            (2, 1, s(&["a"])),
            (2, 3, poison.clone()),
            (3, 1, s(&["a"])),
            (3, 1, s(&["c"])),
            (3, 1, s(&["boom"])),
            (4, 1, s(&["a", "c"])),
            (4, 2, s(&["boom"])),
        ]
    );
    assert_eq!(*exhausted.lock(), [(3, poison, 3)]);
    assert_eq!(handle.skipped_records(), 2);
    // The graceful shutdown's checkpoint covers everything, the skipped records included.
    let lease = store.snapshot()["shardId-000000000000"].clone();
    assert_eq!(
        lease.checkpoint,
        Checkpoint::Sequence(
            ExtendedSequenceNumber::new(
                stream.records("shardId-000000000000")[4]
                    .sequence_number
                    .clone(),
                0
            )
            .unwrap()
        )
    );
}

/// Only records that were in a failed delivery count as failed. A restart re-reads from the
/// checkpoint, and the first response then also holds the records that arrived during the
/// backoff: those are first deliveries, never handed to the hook nor skipped (before, the
/// whole response took the failing attempt number and the skip covered records that never
/// reached `process_records`: the daemon lost them).
#[tokio::test(start_paused = true)]
async fn records_arriving_during_a_restart_backoff_are_first_deliveries_and_never_skipped() {
    let CrashingWorker {
        stream,
        seen,
        exhausted,
        handle,
        run,
        ..
    } = CrashingWorker::start(2);
    wait(|| !seen.lock().is_empty()).await;
    stream.put("pk", b"poison");
    stream.put("pk", b"b");
    // The first failed delivery; then records arrive while the shard backs off.
    wait(|| {
        seen.lock()
            .iter()
            .any(|s| s.2.contains(&"poison".to_string()))
    })
    .await;
    stream.put("pk", b"c");
    stream.put("pk", b"d");
    wait(|| !exhausted.lock().is_empty()).await;
    stream.put("pk", b"e");
    wait(|| seen.lock().iter().any(|s| s.2 == ["e"])).await;
    handle.request_shutdown();
    run.await.unwrap().unwrap();
    let s = |d: &[&str]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        *exhausted.lock(),
        [(2, s(&["poison", "b"]), 2)],
        "the hook gets exactly the records of the failed deliveries"
    );
    assert_eq!(handle.skipped_records(), 2);
    let seen = std::mem::take(&mut *seen.lock());
    let with = |x: &str| {
        seen.iter()
            .filter(|s| s.2.contains(&x.to_string()))
            .map(|s| (s.1, s.2.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with("poison"),
        [(1, s(&["poison", "b"])), (2, s(&["poison", "b"]))]
    );
    let first_deliveries: Vec<(u32, Vec<String>)> = vec![(1, s(&["c", "d"]))];
    assert_eq!(with("c")[..1], first_deliveries, "{seen:?}");
}

/// Fails at the first record whose payload starts with "bad", reporting the records before
/// it done (partial progress).
fn fail_at_bad(input: &ProcessRecordsInput) -> Option<ProcessorError> {
    let i = input
        .records
        .iter()
        .position(|r| r.data.starts_with(b"bad"))?;
    let error = ProcessorError::new("bad record");
    Some(match i {
        0 => error,
        _ => error.done_through(&input.records[i - 1]),
    })
}

/// Partial progress: the redelivery starts right after the last record reported done, as
/// attempt 2 of the rest, without any checkpoint write; a record that keeps failing then
/// exhausts the policy, and the hook gets the records from it on.
#[tokio::test(start_paused = true)]
async fn partial_progress_redelivers_only_the_records_after_the_last_one_done() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    let put: Vec<String> = ["r0", "r1", "bad2", "r3"]
        .iter()
        .map(|d| h.stream.put("pk", d.as_bytes()).1)
        .collect();
    let (mut p, seen) = Flaky::new(fail_at_bad, RetryDecision::Skip);
    p.checkpoint = false;
    let running = Running::start(&h, with_max_attempts(3), p);
    wait(|| seen.lock().deliveries.len() >= 2).await;
    assert_eq!(
        stored(&h).await,
        Checkpoint::TrimHorizon,
        "partial progress writes no checkpoint"
    );
    wait(|| !seen.lock().exhausted.is_empty()).await;
    running.stop().await;
    let seen = std::mem::take(&mut *seen.lock());
    let deliveries: Vec<(u32, Vec<String>)> =
        seen.deliveries.iter().map(|d| (d.1, d.2.clone())).collect();
    assert_eq!(
        deliveries,
        [
            (1, put.clone()),
            (2, put[2..].to_vec()),
            (3, put[2..].to_vec())
        ]
    );
    assert_eq!(seen.exhausted.len(), 1);
    assert_eq!(
        (&seen.exhausted[0].1, seen.exhausted[0].2),
        (&put[2..].to_vec(), 3)
    );
    // Skipped with consent, then the default shutdown checkpoints everything.
    assert_eq!(
        stored(&h).await,
        Checkpoint::Sequence(ExtendedSequenceNumber::new(put[3].clone(), 0).unwrap())
    );
    h.stop().await;
}

/// Partial progress that covers the whole batch counts as success: no redelivery.
#[tokio::test(start_paused = true)]
async fn partial_progress_through_the_last_record_counts_as_done() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    h.stream.put("pk", b"r0");
    h.stream.put("pk", b"r1");
    let (p, seen) = Flaky::new(
        |input| {
            (input.attempt == 1).then(|| {
                ProcessorError::new("late failure").done_through(input.records.last().unwrap())
            })
        },
        RetryDecision::KeepRetrying,
    );
    let (s, stream) = (seen.clone(), h.stream.clone());
    let mut next = None;
    run_until(&h, config(), p, move || {
        let seen = s.lock();
        if seen.deliveries.is_empty() {
            return false;
        }
        let n = next
            .get_or_insert_with(|| stream.put("pk", b"r2").1)
            .clone();
        seen.deliveries.iter().any(|d| d.2 == [n.clone()])
    })
    .await;
    let attempts: Vec<u32> = seen.lock().deliveries.iter().map(|d| d.1).collect();
    assert_eq!(attempts, [1, 1]);
    h.stop().await;
}
