//! kcl-admin on the real local services (testkit: kinesis-local and DynamoDB Local, or the
//! endpoints of KCL_KINESIS_ENDPOINT / KCL_DYNAMODB_ENDPOINT), with workers of this library
//! running against the table it changes.

use kinesis_client::lease::{DynamoDbLeaseStore, Lease, LeaseStore};
use kinesis_client::retrieval::StreamRef;
use kinesis_client::{
    async_trait, Checkpoint, Checkpointer, Config, InitializationInput, ProcessRecordsInput,
    ProcessorError, RecordProcessor, Scheduler, Shutdown, StreamIdentifier,
};
use kinesis_client_admin::commands::Admin;
use kinesis_client_admin::position::Target;
use kinesis_client_admin::stream::Stream;
use kinesis_client_admin::table::Table;
use kinesis_client_admin::AdminError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::LocalAws;

async fn aws() -> Arc<LocalAws> {
    match LocalAws::shared().await {
        Ok(aws) => aws,
        Err(e) => panic!("these tests need a Kinesis and a DynamoDB endpoint: {e:#}"),
    }
}

fn admin(aws: &LocalAws, table: &str, stream: Option<&str>) -> Admin {
    Admin {
        table: Table::new(aws.dynamodb_client(), table),
        kinesis: Stream::new(aws.kinesis_client()),
        stream: stream.map(str::to_string),
    }
}

/// What the processors saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// A processor started at this checkpoint.
    Init(Checkpoint),
    /// A record was delivered.
    Record(String),
    /// A checkpoint write succeeded (at the last record delivered).
    Checkpointed(String),
    /// A processor ended.
    Shutdown(String),
}

#[derive(Debug, Clone, Default)]
struct Journal(Arc<Mutex<Vec<Event>>>);

impl Journal {
    fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    fn delivered(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Record(_)))
            .count()
    }
}

struct Processor {
    journal: Journal,
    pause: Duration,
}

#[async_trait]
impl RecordProcessor for Processor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.journal.push(Event::Init(input.checkpoint));
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let Some(last) = input.records.last() else {
            return Ok(());
        };
        let last = last.sequence_number.as_str().to_string();
        for r in &input.records {
            self.journal
                .push(Event::Record(r.sequence_number.as_str().to_string()));
        }
        tokio::time::sleep(self.pause).await;
        if checkpointer.checkpoint().await.is_ok() {
            self.journal.push(Event::Checkpointed(last));
        }
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        self.journal
            .push(Event::Shutdown(reason.name().to_string()));
        if let Shutdown::ShardEnded { checkpointer } | Shutdown::Requested { checkpointer } = reason
        {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

struct Worker {
    handle: kinesis_client::SchedulerHandle,
    task: tokio::task::JoinHandle<Result<(), kinesis_client::SchedulerError>>,
}

fn start_worker(
    aws: &LocalAws,
    app: &str,
    stream: &str,
    journal: &Journal,
    pause: Duration,
) -> Worker {
    let config = Config::builder(app, StreamRef::Name(stream.into()))
        .worker_id("worker-1")
        .initial_position(kinesis_client::InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .idle_time_between_reads(Duration::from_millis(100))
        .max_records(5)
        .shard_sync_interval(Duration::from_secs(1))
        .task_backoff(Duration::from_millis(200))
        .build()
        .expect("config");
    let journal = journal.clone();
    let factory = move |_shard: &str| Processor {
        journal: journal.clone(),
        pause,
    };
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: Some(aws.kinesis_endpoint().into()),
        dynamodb: Some(aws.dynamodb_endpoint().into()),
    };
    let scheduler = Scheduler::from_sdk_config(config, factory, &aws.sdk_config(), &endpoints);
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    Worker { handle, task }
}

impl Worker {
    async fn stop(self) {
        self.handle.request_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A one-shard stream with `n` records; their sequence numbers in order.
async fn stream_with(aws: &LocalAws, prefix: &str, n: usize) -> (String, String, Vec<String>) {
    let kinesis = aws.kinesis_client();
    let name = testkit::unique_name(prefix);
    testkit::create_stream(&kinesis, &name, 1).await.unwrap();
    let put = testkit::put_records(&kinesis, &name, testkit::numbered_records(prefix, n))
        .await
        .unwrap();
    let shard = put[0].shard_id.clone();
    let mut seqs: Vec<String> = put.into_iter().map(|p| p.sequence_number).collect();
    seqs.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    (name, shard, seqs)
}

fn seq(s: &str) -> Checkpoint {
    Checkpoint::sequence(s, 0).unwrap()
}

/// The records delivered after the last `Init(at)` event of the journal, or `None` when there is
/// no such event after index `from`.
fn delivered_after_init(events: &[Event], from: usize, at: &Checkpoint) -> Option<Vec<String>> {
    let i = events[from..]
        .iter()
        .rposition(|e| e == &Event::Init(at.clone()))?
        + from;
    Some(
        events[i..]
            .iter()
            .filter_map(|e| match e {
                Event::Record(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// (a) A reset during processing takes effect: the worker's processor restarts from the reset
/// position, and every record after it is delivered again (nothing it was not told to skip is
/// lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_processing_restarts_the_processor_from_the_reset_position() {
    let aws = aws().await;
    let (stream, shard, seqs) = stream_with(&aws, "admin-reset", 200).await;
    let app = testkit::unique_name("admin-reset-app");
    let journal = Journal::default();
    let worker = start_worker(&aws, &app, &stream, &journal, Duration::from_millis(40));
    let admin = admin(&aws, &app, Some(&stream));

    wait_for(Duration::from_secs(60), "80 records processed", || {
        journal.delivered() >= 80
    })
    .await;
    let mark = journal.events().len();
    let target = Target::Sequence(
        kinesis_client::checkpoint::ExtendedSequenceNumber::new(seqs[30].clone(), 0).unwrap(),
    );
    // Going back is safe: no --yes needed.
    let report = admin
        .reset(std::slice::from_ref(&shard), false, &target, false)
        .await
        .expect("reset");
    assert_eq!(report.changed.len(), 1, "{report:?}");
    eprintln!("{}", kinesis_client_admin::cli::render_changes(&report));
    eprintln!(
        "{}",
        kinesis_client_admin::cli::render_leases(&admin.leases(None, true).await.unwrap())
    );
    eprintln!(
        "{}",
        admin
            .why(&shard, Some(Duration::from_secs(2)))
            .await
            .unwrap()
    );
    let change = &report.changed[0];
    assert_eq!(change.to, seqs[30]);
    assert_eq!(change.released_owner.as_deref(), Some("worker-1"));
    eprintln!("reset: {change:?}");

    let to = seq(&seqs[30]);
    let last = seq(seqs.last().unwrap());
    resumes_with(&journal, mark, &to, &seqs[31..]).await;
    // The processor restarted once, at the reset position: the old tenure was told.
    let events = journal.events();
    assert!(
        events[mark..].contains(&Event::Shutdown("lease_lost".into())),
        "the old processor was told it lost the lease: {:?}",
        &events[mark..]
    );
    // Every record was delivered at least once overall.
    for s in &seqs {
        assert!(
            events.contains(&Event::Record(s.clone())),
            "record {s} never delivered"
        );
    }
    wait_for_checkpoint(&aws, &app, &shard, &last, Duration::from_secs(30)).await;
    worker.stop().await;
}

/// (a') A reset while the processor is busy between checkpoints: the owner learns of it at
/// its next renewal (not at a checkpoint), which must not take the reset's counter increment
/// for its own renewal; the processor restarts from the reset position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_between_checkpoints_is_noticed_by_the_renewal() {
    let aws = aws().await;
    let (stream, shard, seqs) = stream_with(&aws, "admin-renew", 30).await;
    let app = testkit::unique_name("admin-renew-app");
    let journal = Journal::default();
    // Renewals every second (failover 3 s); a checkpoint every 2.5 s.
    let worker = start_worker(&aws, &app, &stream, &journal, Duration::from_millis(2500));
    let admin = admin(&aws, &app, Some(&stream));
    let checkpoints = |j: &Journal| {
        j.events()
            .iter()
            .filter(|e| matches!(e, Event::Checkpointed(_)))
            .count()
    };
    wait_for(Duration::from_secs(60), "a first checkpoint", || {
        checkpoints(&journal) >= 1
    })
    .await;
    // Right after a checkpoint: the owner's next write is a renewal, a second from now.
    let n = checkpoints(&journal);
    wait_for(Duration::from_secs(30), "the next checkpoint", || {
        checkpoints(&journal) > n
    })
    .await;
    let mark = journal.events().len();
    let target: Target = format!("SEQUENCE={}", seqs[1]).parse().unwrap();
    let report = admin
        .reset(std::slice::from_ref(&shard), false, &target, false)
        .await
        .expect("reset");
    assert_eq!(report.changed.len(), 1, "{report:?}");
    let to = seq(&seqs[1]);
    resumes_with(&journal, mark, &to, &seqs[2..]).await;
    worker.stop().await;
}

/// (b) Resets racing the worker's checkpoints (it checkpoints every 5 records, without pause):
/// after every reset the next processor starts exactly at the reset position (no checkpoint of
/// the old processor landed after it), and at the end the checkpoint is the last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_racing_checkpoints_never_leaves_an_older_checkpoint() {
    let aws = aws().await;
    let (stream, shard, seqs) = stream_with(&aws, "admin-race", 400).await;
    let app = testkit::unique_name("admin-race-app");
    let journal = Journal::default();
    let worker = start_worker(&aws, &app, &stream, &journal, Duration::ZERO);
    let admin = admin(&aws, &app, Some(&stream));
    let mut attempts = Vec::new();
    for round in 0..4 {
        let progress = journal
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Checkpointed(_)))
            .count();
        wait_for(Duration::from_secs(60), "more checkpoints", || {
            journal
                .events()
                .iter()
                .filter(|e| matches!(e, Event::Checkpointed(_)))
                .count()
                >= progress + 3
        })
        .await;
        let mark = journal.events().len();
        let back = 5 * round;
        let target: Target = format!("SEQUENCE={}", seqs[back]).parse().unwrap();
        let report = admin
            .reset(std::slice::from_ref(&shard), false, &target, false)
            .await
            .expect("reset");
        assert_eq!(report.changed.len(), 1, "{report:?}");
        attempts.push(report.changed[0].attempts);
        let to = seq(&seqs[back]);
        wait_for(
            Duration::from_secs(30),
            "a processor starting at the reset position",
            || {
                journal.events()[mark..]
                    .iter()
                    .any(|e| matches!(e, Event::Init(_)))
            },
        )
        .await;
        let first_init = journal.events()[mark..]
            .iter()
            .find(|e| matches!(e, Event::Init(_)))
            .cloned()
            .unwrap();
        assert_eq!(
            first_init,
            Event::Init(to.clone()),
            "round {round}: the next processor's start"
        );
    }
    eprintln!("conditional writes per reset: {attempts:?}");
    let last = seq(seqs.last().unwrap());
    wait_for_checkpoint(&aws, &app, &shard, &last, Duration::from_secs(60)).await;
    worker.stop().await;
}

/// Refusals (forward, LATEST) change nothing; `--yes` does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_that_skips_records_is_refused_without_yes() {
    let aws = aws().await;
    let (stream, shard, seqs) = stream_with(&aws, "admin-refuse", 20).await;
    let app = testkit::unique_name("admin-refuse-app");
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), app.clone());
    store.create_table_if_not_exists().await.unwrap();
    assert!(store
        .create_lease_if_not_exists(&Lease::new(shard.clone(), seq(&seqs[5])))
        .await
        .unwrap());
    let admin = admin(&aws, &app, Some(&stream));
    for target in [
        format!("SEQUENCE={}", seqs[10]),
        "LATEST".to_string(),
        "AT_TIMESTAMP=4000000000".to_string(),
    ] {
        let t: Target = target.parse().unwrap();
        let e = admin
            .reset(std::slice::from_ref(&shard), false, &t, false)
            .await
            .unwrap_err();
        assert!(matches!(e, AdminError::Refused(_)), "{target}: {e}");
        eprintln!("{e}");
        let l = store.get_lease(&shard).await.unwrap().unwrap();
        assert_eq!(l.checkpoint, seq(&seqs[5]), "{target}: nothing changed");
        assert_eq!(l.counter, 0);
    }
    // An AT_TIMESTAMP before the first unprocessed record skips nothing (before every record:
    // the trim horizon).
    let r = admin
        .reset(
            std::slice::from_ref(&shard),
            false,
            &"AT_TIMESTAMP=1000000000".parse().unwrap(),
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.changed[0].to, "TRIM_HORIZON");
    let r = admin
        .reset(&[], true, &"LATEST".parse().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(r.changed[0].from.as_deref(), Some("TRIM_HORIZON"));
    let l = store.get_lease(&shard).await.unwrap().unwrap();
    assert_eq!(l.checkpoint, Checkpoint::Latest);
    assert_eq!(l.counter, 2);
    // leases and why on the result.
    let views = admin.leases(None, true).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].checkpoint, "LATEST");
    let why = admin.why(&shard, None).await.unwrap();
    assert!(why.contains("has no owner"), "{why}");
    let why = admin.why("shardId-000000000042", None).await.unwrap();
    assert!(why.contains("the stream has no such shard"), "{why}");
}

/// leases shows lag read from the stream; delete-finished and forget-stream on a multi-stream
/// table (dry run, then --yes); export and import into another table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_delete_finished_forget_stream_export_import() {
    let aws = aws().await;
    let (stream, shard, seqs) = stream_with(&aws, "admin-multi", 30).await;
    let app = testkit::unique_name("admin-multi-app");
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), app.clone());
    store.create_table_if_not_exists().await.unwrap();
    let a = StreamIdentifier::multi("123456789012", &stream, 1_600_000_000).unwrap();
    let b = StreamIdentifier::multi("123456789012", "other-stream", 1_600_000_001).unwrap();
    let mut ended = Lease::for_stream(a.clone(), "shardId-000000000100", Checkpoint::ShardEnd);
    ended.child_shard_ids = vec!["shardId-000000000102".into()];
    let mut ended_orphan =
        Lease::for_stream(a.clone(), "shardId-000000000101", Checkpoint::ShardEnd);
    ended_orphan.child_shard_ids = vec!["shardId-000000000103".into()];
    let child = Lease::for_stream(a.clone(), "shardId-000000000102", Checkpoint::TrimHorizon)
        .with_parents(["shardId-000000000100"]);
    let live = Lease::for_stream(a.clone(), shard.clone(), seq(&seqs[9]));
    let other = Lease::for_stream(b.clone(), shard.clone(), Checkpoint::TrimHorizon);
    for l in [&ended, &ended_orphan, &child, &live, &other] {
        assert!(store.create_lease_if_not_exists(l).await.unwrap());
    }
    let admin = admin(&aws, &app, None);

    let views = admin.leases(None, true).await.unwrap();
    eprintln!("{}", kinesis_client_admin::cli::render_leases(&views));
    let v = views.iter().find(|v| v.key == live.key).unwrap();
    let lag = v
        .behind
        .clone()
        .expect("lag read from the stream of the multi-stream key");
    assert_eq!(lag.records, 20, "{lag:?}");
    let v = views.iter().find(|v| v.key == child.key).unwrap();
    assert_eq!(v.state, kinesis_client_admin::state::State::Unowned);

    // A bare shard id present in two streams is ambiguous.
    let e = admin.why(&shard, None).await.unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, AdminError::Ambiguous { .. }), "{e}");

    let dry = admin.delete_finished(false).await.unwrap();
    eprintln!("{}", kinesis_client_admin::cli::render_deletes(&dry));
    assert_eq!(dry.deleted, vec![ended.key.clone()]);
    assert!(dry.kept.iter().any(|(k, _)| k == &ended_orphan.key));
    assert!(store.get_lease(&ended.key).await.unwrap().is_some());
    let done = admin.delete_finished(true).await.unwrap();
    assert_eq!(done.deleted, vec![ended.key.clone()]);
    assert!(store.get_lease(&ended.key).await.unwrap().is_none());

    let dry = admin.forget_stream("other-stream", false).await.unwrap();
    assert_eq!(dry.deleted, vec![other.key.clone()]);
    assert!(store.get_lease(&other.key).await.unwrap().is_some());
    let done = admin.forget_stream("other-stream", true).await.unwrap();
    assert_eq!(done.deleted, vec![other.key.clone()]);
    assert!(store.get_lease(&other.key).await.unwrap().is_none());
    assert!(admin.forget_stream("nope", true).await.is_err());

    // --all with --stream resets only that stream's unfinished leases.
    let narrowed = Admin {
        stream: Some(stream.clone()),
        ..admin.clone()
    };
    let r = narrowed
        .reset(&[], true, &Target::TrimHorizon, false)
        .await
        .unwrap();
    let mut changed: Vec<&str> = r.changed.iter().map(|c| c.key.as_str()).collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![live.key.as_str(), child.key.as_str()],
        "{r:?}"
    );
    assert_eq!(
        r.skipped.len(),
        1,
        "the finished lease of the stream: {r:?}"
    );
    assert!(store
        .get_lease(&live.key)
        .await
        .unwrap()
        .is_some_and(|l| l.checkpoint == Checkpoint::TrimHorizon));
    narrowed
        .reset(
            std::slice::from_ref(&live.key),
            false,
            &format!("SEQUENCE={}", seqs[9]).parse().unwrap(),
            true,
        )
        .await
        .unwrap();

    // Export, and import into a new application's table (created by import).
    let export = admin.export().await.unwrap();
    assert_eq!(export.leases.len(), 3);
    let app2 = testkit::unique_name("admin-copy-app");
    let admin2 = kinesis_client_admin::commands::Admin {
        table: Table::new(aws.dynamodb_client(), app2.clone()),
        ..admin.clone()
    };
    let r = admin2.import(&export, false).await.unwrap();
    assert_eq!(r.changed.len(), 3);
    let store2 = DynamoDbLeaseStore::new(aws.dynamodb_client(), app2.clone());
    let copied = store2.get_lease(&live.key).await.unwrap().unwrap();
    assert_eq!(copied.checkpoint, live.checkpoint);
    assert_eq!(copied.multi_stream, live.multi_stream);
    let copied_child = store2.get_lease(&child.key).await.unwrap().unwrap();
    assert_eq!(copied_child.parent_shard_ids, child.parent_shard_ids);
    // Importing again would overwrite: refused without --yes, done with it.
    let e = admin2.import(&export, false).await.unwrap_err();
    assert!(matches!(e, AdminError::Refused(_)), "{e}");
    let mut moved = export.clone();
    moved
        .leases
        .iter_mut()
        .find(|l| l.key == live.key)
        .unwrap()
        .checkpoint = seqs[3].clone();
    let r = admin2.import(&moved, true).await.unwrap();
    assert_eq!(r.changed.len(), 3, "{r:?}");
    let copied = store2.get_lease(&live.key).await.unwrap().unwrap();
    assert_eq!(copied.checkpoint, seq(&seqs[3]));
    assert_eq!(copied.counter, 1);
}

/// The binary: flags, JSON output, exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_and_refuses() {
    let aws = aws().await;
    let app = testkit::unique_name("admin-bin-app");
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), app.clone());
    store.create_table_if_not_exists().await.unwrap();
    assert!(store
        .create_lease_if_not_exists(&Lease::new("shardId-000000000000", seq("12345")))
        .await
        .unwrap());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kcl-admin"))
            .args([
                "--table",
                &app,
                "--kinesis-endpoint",
                aws.kinesis_endpoint(),
            ])
            .args([
                "--dynamodb-endpoint",
                aws.dynamodb_endpoint(),
                "--region",
                "us-east-1",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run kcl-admin");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["leases", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["checkpoint"], "12345");
    assert_eq!(v[0]["state"]["name"], "unowned");
    let (code, _, err) = run(&["reset", "shardId-000000000000", "--to", "SEQUENCE=99999"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = run(&["reset", "shardId-000000000000", "--to", "TRIM_HORIZON"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "shardId-000000000000: 12345 -> TRIM_HORIZON (counter 1)"
    );
    let (code, _, err) = run(&["leases", "--table"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run(&["--table", "no-such-table-kcl-admin", "leases"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("there is no lease table"), "{err}");
}

/// Items as the Java KCL 3.x writes them (raw PutItem): a lease in a graceful hand-off with
/// `throughputKBps`, and a KCL 3.5 single-table row that is not a lease. `leases` reads them,
/// `why` says it is handing off, and a reset ends the hand-off, keeps the attributes it does
/// not own, and leaves the other row alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_3x_items_are_read_and_reset() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let aws = aws().await;
    let app = testkit::unique_name("admin-java-app");
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), app.clone());
    store.create_table_if_not_exists().await.unwrap();
    let ddb = aws.dynamodb_client();
    let s = |v: &str| V::S(v.to_string());
    let n = |v: &str| V::N(v.to_string());
    ddb.put_item()
        .table_name(&app)
        .item("leaseKey", s("shardId-000000000002"))
        .item("leaseOwner", s("worker-b"))
        .item("checkpointOwner", s("worker-a"))
        .item("leaseCounter", n("7"))
        .item(
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        )
        .item("checkpointSubSequenceNumber", n("3"))
        .item("ownerSwitchesSinceCheckpoint", n("1"))
        .item(
            "pendingCheckpoint",
            s("49590338271490256608559692538361571095921575989136588999"),
        )
        .item("pendingCheckpointSubSequenceNumber", n("0"))
        .item(
            "parentShardId",
            V::Ss(vec![
                "shardId-000000000000".into(),
                "shardId-000000000001".into(),
            ]),
        )
        .item("startingHashKey", s("0"))
        .item(
            "endingHashKey",
            s("170141183460469231731687303715884105727"),
        )
        .item("throughputKBps", n("12.5"))
        .item("entityType", s("LEASE"))
        .send()
        .await
        .unwrap();
    ddb.put_item()
        .table_name(&app)
        .item("leaseKey", s("worker-a"))
        .item("entityType", s("WORKER_METRIC_STATS"))
        .item("lut", n("1700000000"))
        .send()
        .await
        .unwrap();
    let admin = admin(&aws, &app, None);
    let views = admin.leases(None, false).await.unwrap();
    assert_eq!(views.len(), 1, "the metrics row is not a lease");
    let v = &views[0];
    assert_eq!(v.checkpoint_sub_sequence_number, 3);
    assert_eq!(v.parent_shard_ids.len(), 2);
    assert_eq!(
        v.state,
        kinesis_client_admin::state::State::HandingOff {
            from: "worker-a".into(),
            to: "worker-b".into()
        }
    );
    let why = admin.why("shardId-000000000002", None).await.unwrap();
    assert!(
        why.contains("handed off from worker-a to worker-b"),
        "{why}"
    );
    let r = admin
        .reset(
            &["shardId-000000000002".to_string()],
            false,
            &Target::TrimHorizon,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        r.changed[0].from.as_deref(),
        Some("49590338271490256608559692538361571095921575989136588898/3")
    );
    let item = ddb
        .get_item()
        .table_name(&app)
        .key("leaseKey", s("shardId-000000000002"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["checkpoint"], s("TRIM_HORIZON"));
    assert_eq!(item["checkpointSubSequenceNumber"], n("0"));
    assert_eq!(item["leaseCounter"], n("8"));
    assert_eq!(item["ownerSwitchesSinceCheckpoint"], n("0"));
    for gone in [
        "leaseOwner",
        "checkpointOwner",
        "pendingCheckpoint",
        "pendingCheckpointSubSequenceNumber",
    ] {
        assert!(!item.contains_key(gone), "{gone} removed");
    }
    for kept in [
        "parentShardId",
        "startingHashKey",
        "endingHashKey",
        "throughputKBps",
        "entityType",
    ] {
        assert!(item.contains_key(kept), "{kept} kept");
    }
    let metrics = ddb
        .get_item()
        .table_name(&app)
        .key("leaseKey", s("worker-a"))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(metrics["lut"], n("1700000000"));
    // delete-finished and export skip the metrics row too.
    assert!(admin
        .delete_finished(true)
        .await
        .unwrap()
        .deleted
        .is_empty());
    assert_eq!(admin.export().await.unwrap().leases.len(), 1);
}

/// The retry path: a writer that renews the lease every few milliseconds (re-reading it each
/// time) makes resets lose the race; each one re-reads and
/// retries until its conditional write lands, and the checkpoint is then the reset position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_losing_to_a_fast_writer_retries_with_a_fresh_read() {
    let aws = aws().await;
    let app = testkit::unique_name("admin-retry-app");
    let store = Arc::new(DynamoDbLeaseStore::new(aws.dynamodb_client(), app.clone()));
    store.create_table_if_not_exists().await.unwrap();
    let key = "shardId-000000000000";
    let mut lease = Lease::new(key, seq("1000"));
    lease.owner = Some("hammer".into());
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hammer = {
        let (store, stop, renewals) = (store.clone(), stop.clone(), renewals.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let l = store.get_lease(key).await.unwrap().unwrap();
                if store.renew_lease(&l).await.unwrap().applied().is_some() {
                    renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(4 + i % 5)).await;
            }
        })
    };
    let admin = admin(&aws, &app, None);
    let mut attempts = Vec::new();
    for back in (1..=16).rev().map(|i| i * 50) {
        let target: Target = format!("SEQUENCE={back}").parse().unwrap();
        let r = admin
            .reset(&[key.to_string()], false, &target, false)
            .await
            .expect("reset");
        assert!(r.failed.is_empty(), "{r:?}");
        attempts.push(r.changed[0].attempts);
        let l = store.get_lease(key).await.unwrap().unwrap();
        assert_eq!(l.checkpoint, seq(&back.to_string()));
        // The reset released the lease: the hammer renews it unowned from now on.
        assert_eq!(l.owner, None);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammer.await.unwrap();
    eprintln!(
        "conditional writes per reset: {attempts:?}; {} renewals meanwhile",
        renewals.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        attempts.iter().any(|&a| a > 1),
        "no reset lost a race to the writer: {attempts:?}"
    );
}

/// Wait until the checkpoint of `shard`'s lease in `app`'s table is `want`.
async fn wait_for_checkpoint(
    aws: &LocalAws,
    app: &str,
    shard: &str,
    want: &Checkpoint,
    limit: Duration,
) {
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), app.to_string());
    let start = Instant::now();
    loop {
        // Before the worker created the table and the lease: not yet.
        let seen = store
            .get_lease(shard)
            .await
            .ok()
            .flatten()
            .map(|l| l.checkpoint);
        if seen.as_ref() == Some(want) {
            return;
        }
        assert!(start.elapsed() < limit, "checkpoint {seen:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A reset to a time after a bad deploy: `AT_TIMESTAMP=T` puts the checkpoint at the last
/// record before `T`, so the processor restarts at the first record from `T` on and gets
/// exactly the records put after `T` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_to_a_time_resumes_at_the_first_record_from_that_time() {
    let aws = aws().await;
    let (stream, shard, before) = stream_with(&aws, "admin-time", 10).await;
    // Arrival times are the service's clock (this machine's): a margin on both sides of T.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kinesis = aws.kinesis_client();
    let put = testkit::put_records(&kinesis, &stream, testkit::numbered_records("after", 10))
        .await
        .unwrap();
    let mut after: Vec<String> = put.into_iter().map(|p| p.sequence_number).collect();
    after.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    let app = testkit::unique_name("admin-time-app");
    let journal = Journal::default();
    let worker = start_worker(&aws, &app, &stream, &journal, Duration::ZERO);
    let last = seq(after.last().unwrap());
    wait_for_checkpoint(&aws, &app, &shard, &last, Duration::from_secs(60)).await;
    let mark = journal.events().len();

    let admin = admin(&aws, &app, Some(&stream));
    let report = admin
        .reset(
            std::slice::from_ref(&shard),
            false,
            &Target::AtTimestamp(Some(t)),
            false,
        )
        .await
        .expect("going back to a time is safe");
    assert_eq!(report.changed.len(), 1, "{report:?}");
    assert_eq!(report.changed[0].to, *before.last().unwrap(), "{report:?}");
    assert!(report.notes.is_empty(), "a real position: {report:?}");
    let to = seq(before.last().unwrap());
    resumes_with(&journal, mark, &to, &after).await;
    // A time before every record: TRIM_HORIZON (everything again); refused nothing.
    let long_ago = aws_smithy_types::DateTime::from_secs(1_000_000_000);
    let report = admin
        .reset(
            std::slice::from_ref(&shard),
            false,
            &Target::AtTimestamp(Some(long_ago)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(report.changed[0].to, "TRIM_HORIZON", "{report:?}");
    worker.stop().await;
}

/// Wait until a processor started (after journal event `mark`) at checkpoint `to` and was
/// delivered up to the last of `expected`; then it must have been delivered exactly
/// `expected`, in order.
async fn resumes_with(journal: &Journal, mark: usize, to: &Checkpoint, expected: &[String]) {
    wait_for(
        Duration::from_secs(60),
        "the processor to restart at the reset position and finish",
        || {
            delivered_after_init(&journal.events(), mark, to)
                .is_some_and(|d| d.last() == expected.last())
        },
    )
    .await;
    assert_eq!(
        delivered_after_init(&journal.events(), mark, to).unwrap(),
        expected,
        "records delivered after the reset"
    );
}
