//! Prepared (two-phase) checkpoints between the real Java KCL 3.1.3 and the Rust lease store,
//! both ways. The MultiLangDaemon protocol has no "prepare", so Java runs as a library app
//! (`testkit/java/PendingCheckpointApp.java`, see `testkit::java_app`), configured like the
//! daemon of `java_compat` (2.x-compatible lease taker, polling, failover 3 s):
//!
//! * Java → Rust: the app takes a lease the Rust store created (on an empty table Java would
//!   wait a random 1-30 s before creating leases) and calls `prepareCheckpoint(seq, subSeq,
//!   state)` on the first batch of a 1-shard stream; `DynamoDbLeaseStore` must read that `pendingCheckpoint` /
//!   `pendingCheckpointSubSequenceNumber` / `pendingCheckpointState` (S / N / B) into
//!   `Lease::pending_checkpoint` and `Lease::pending_checkpoint_state`, with the committed
//!   checkpoint untouched.
//! * Rust → Java: on a 2-shard stream the Rust store writes one lease with a prepared
//!   checkpoint at creation (`create_lease_if_not_exists`) and the other with `update_lease`
//!   (taken by a Rust worker id, prepared ahead of a committed checkpoint, then evicted); the
//!   app's `initialize` must receive exactly those pending values, and its processing must
//!   resume from the committed checkpoint, not from the prepared one.
//!
//! And through the processor API, both ways:
//!
//! * after Java prepared (first test), a Rust worker takes the expired lease: its processor's
//!   `InitializationInput` carries Java's prepared checkpoint and state, it resumes from the
//!   committed checkpoint, and its first checkpoint removes the `pending*` attributes;
//! * a Rust processor commits one record and prepares a later one with
//!   `Checkpointer::prepare_checkpoint_record` (third test), stops gracefully without
//!   committing it, and the Java processor's `initialize` gets both, resuming after the
//!   committed one.
//!
//! Measured on a loaded 2-core machine, both tests together: the app prepares 8-9 s after its
//! spawn (JVM start, the 3.x migration set-up: `-CoordinatorState` and `-WorkerMetricStats`
//! tables and the lease GSI, lease take, first GetRecords) and initializes both processors of
//! the other test after 6-8 s; 13-19 s per test, with the local services' start-up, once
//! `javac` has run (2.5 s, cached across runs).

use crate::common::aws;
use crate::harness::expected_by_shard;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_client::lease::{DynamoDbLeaseStore, HashKeyRange, Lease, LeaseStore};
use kinesis_client::Checkpoint;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::java_app::{self, InitializeEvent, JavaAppArgs, JavaAppMode, JavaKclApp};
use testkit::java_kcl::{self, JavaKcl};
use testkit::LocalAws;

const LIMIT: Duration = Duration::from_secs(90);
/// Application state with bytes that are not UTF-8 (a NUL, 0xff) and a multi-byte character.
const JAVA_STATE: &[u8] = b"prepared by Java \x00\xff\x80 \xe2\x9c\x93";

#[tokio::test]
async fn a_checkpoint_the_java_kcl_prepared_is_read_by_the_rust_lease_store() {
    let test_started = Instant::now();
    let aws = aws().await;
    let kcl = java_kcl_app().await;
    let (stream, put) = crate::harness::stream_with_records(&aws, "java-prepare", 1, 5).await;
    let shard = put[0].shard_id.clone();
    let app = testkit::unique_name("app-java-prepare");
    // The Rust store creates the table and the lease: on an empty lease table the Java KCL
    // waits a random 1-30 s before its shard sync creates the leases (`Scheduler`'s
    // `shouldInitiateLeaseSync`, not configurable).
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    store.create_table_if_not_exists().await.unwrap();
    let ranges = hash_ranges(&aws, &stream).await;
    let mut lease = Lease::new(shard.clone(), Checkpoint::TrimHorizon);
    lease.hash_key_range = Some(ranges[&shard]);
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let worker = testkit::unique_name("java-preparer");
    let scratch = Scratch::new("kcl-java-prepare");

    let mut java = start_java(
        &aws,
        &kcl,
        &scratch,
        JavaAppMode::Prepare {
            state: JAVA_STATE.to_vec(),
        },
        &stream,
        &app,
        &worker,
    )
    .await;
    let prepared = java
        .wait_for_prepared(&shard, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let java_prepared_after = java.started().elapsed();
    assert!(
        put.iter()
            .any(|p| p.sequence_number == prepared.sequence_number),
        "Java prepared {} which is none of the records put: {put:?}",
        prepared.sequence_number
    );
    assert_eq!(
        prepared.sub_sequence_number, 0,
        "the records are not aggregated"
    );
    let want =
        Checkpoint::sequence(&prepared.sequence_number, prepared.sub_sequence_number).unwrap();

    // prepareCheckpoint returned, so the item is written; Java keeps renewing the lease.
    let lease = store
        .get_lease(&shard)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no lease {shard} in {app}"));
    assert_eq!(
        lease.pending_checkpoint,
        Some(want.clone()),
        "get_lease reads Java's pendingCheckpoint: {lease:?}"
    );
    assert_eq!(
        lease.pending_checkpoint_state.as_deref(),
        Some(JAVA_STATE),
        "get_lease reads Java's pendingCheckpointState"
    );
    assert_eq!(
        lease.checkpoint,
        Checkpoint::TrimHorizon,
        "prepareCheckpoint does not commit"
    );
    assert_eq!(lease.owner.as_deref(), Some(worker.as_str()));
    let listed = store.list_leases().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0].pending_checkpoint,
            &listed[0].pending_checkpoint_state,
            &listed[0].checkpoint
        ),
        (
            &Some(want),
            &Some(JAVA_STATE.to_vec()),
            &Checkpoint::TrimHorizon
        ),
        "list_leases reads the same"
    );

    // The raw item: the attribute types the Java KCL writes.
    let item = raw_item(&aws, &app, &shard).await;
    assert_eq!(
        item.get("pendingCheckpoint"),
        Some(&AttributeValue::S(prepared.sequence_number.clone())),
        "{item:?}"
    );
    assert_eq!(
        item.get("pendingCheckpointSubSequenceNumber"),
        Some(&AttributeValue::N("0".into())),
        "{item:?}"
    );
    assert_eq!(
        item.get("pendingCheckpointState"),
        Some(&AttributeValue::B(Blob::new(JAVA_STATE))),
        "{item:?}"
    );
    assert_eq!(
        item.get("checkpoint"),
        Some(&AttributeValue::S("TRIM_HORIZON".into()))
    );
    assert_eq!(
        item.get("checkpointSubSequenceNumber"),
        Some(&AttributeValue::N("0".into()))
    );

    assert_no_java_complaints(&java);
    java.kill_group();

    // A Rust worker takes the lease over once it expires (Java died without releasing it):
    // its processor is told what Java prepared, resumes from the committed checkpoint
    // (TRIM_HORIZON: every record), and its first checkpoint clears the prepared one.
    let seen = Seen::default();
    let config = crate::harness::config(&app, &stream, &testkit::unique_name("rust-after-java"))
        .build()
        .unwrap();
    let worker = crate::harness::start_scheduler(&aws, config, {
        let seen = seen.clone();
        move |_: &str| Preparer::observe(seen.clone())
    });
    crate::harness::wait_for(LIMIT, "the Rust worker delivers every record", || {
        seen.records().len() >= put.len()
    })
    .await;
    let init = seen.initialized();
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(init[0].checkpoint, Checkpoint::TrimHorizon);
    assert_eq!(
        init[0].pending_checkpoint,
        Some(Checkpoint::sequence(&prepared.sequence_number, 0).unwrap()),
        "the Rust processor is told what Java prepared"
    );
    assert_eq!(
        init[0].pending_checkpoint_state.as_deref(),
        Some(JAVA_STATE)
    );
    let want: Vec<String> = put.iter().map(|p| p.sequence_number.clone()).collect();
    assert_eq!(
        seen.records(),
        want,
        "resumed from the committed checkpoint"
    );
    let lease = until_lease(&store, &shard, |l| l.pending_checkpoint.is_none()).await;
    assert_eq!(
        (lease.checkpoint, lease.pending_checkpoint_state),
        (Checkpoint::sequence(want.last().unwrap(), 0).unwrap(), None),
        "the Rust processor's checkpoint cleared Java's prepared one"
    );
    let item = raw_item(&aws, &app, &shard).await;
    for gone in [
        "pendingCheckpoint",
        "pendingCheckpointSubSequenceNumber",
        "pendingCheckpointState",
    ] {
        assert!(!item.contains_key(gone), "{gone} left in {item:?}");
    }
    worker.stop().await;
    eprintln!(
        "Java prepared {} after {:.2} s (from its spawn); whole test {:.2} s",
        prepared.sequence_number,
        java_prepared_after.as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
}

/// A Rust record processor prepares a checkpoint through the `Checkpointer` (after
/// committing an earlier one) and stops without committing it; the Java KCL's processor is
/// told both in `initialize` and resumes from the committed checkpoint.
#[tokio::test]
async fn a_checkpoint_a_rust_processor_prepared_reaches_the_java_kcl_processor() {
    let aws = aws().await;
    let kcl = java_kcl_app().await;
    let (stream, put) =
        crate::harness::stream_with_records(&aws, "rust-processor-prepare", 1, 6).await;
    let shard = put[0].shard_id.clone();
    let seqs: Vec<String> = put.iter().map(|p| p.sequence_number.clone()).collect();
    let app = testkit::unique_name("app-rust-processor-prepare");
    let seen = Seen::default();
    let config = crate::harness::config(&app, &stream, &testkit::unique_name("rust-preparer"))
        .build()
        .unwrap();
    let worker = crate::harness::start_scheduler(&aws, config, {
        let seen = seen.clone();
        move |_: &str| Preparer::prepare_at(seen.clone(), 1, 3, RUST_STATE)
    });
    crate::harness::wait_for(LIMIT, "the Rust processor prepares a checkpoint", || {
        seen.prepared()
    })
    .await;
    // Graceful: the lease is released at once, and the processor's shutdown does not commit.
    worker.stop().await;
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    let lease = store.get_lease(&shard).await.unwrap().unwrap();
    assert_eq!(
        (
            &lease.checkpoint,
            &lease.pending_checkpoint,
            lease.pending_checkpoint_state.as_deref()
        ),
        (
            &Checkpoint::sequence(&seqs[1], 0).unwrap(),
            &Some(Checkpoint::sequence(&seqs[3], 0).unwrap()),
            Some(RUST_STATE)
        ),
        "what the Rust processor left"
    );

    let (mut java, _scratch, _) =
        start_reporter(&aws, &kcl, &stream, &app, "java-after-rust").await;
    let init = java
        .wait_for_initialize(&shard, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        init,
        InitializeEvent {
            shard_id: shard.clone(),
            checkpoint: seqs[1].clone(),
            checkpoint_sub_sequence_number: 0,
            pending_checkpoint: Some(seqs[3].clone()),
            pending_checkpoint_sub_sequence_number: Some(0),
            pending_checkpoint_state: Some(RUST_STATE.to_vec()),
        },
        "the Java processor is told what the Rust processor prepared and committed"
    );
    let batch = java
        .wait_for_records(&shard, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        batch.first_sequence_number, seqs[2],
        "Java resumes after the committed checkpoint, not after the prepared one"
    );
    assert_no_java_complaints(&java);
    java.kill_group();
}

/// Application state with bytes that are not UTF-8.
const RUST_STATE: &[u8] = b"prepared by Rust \x00\xfe\xff";

/// What the [`Preparer`]s of one test saw.
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<SeenInner>>);

#[derive(Default)]
struct SeenInner {
    initialized: Vec<kinesis_client::InitializationInput>,
    records: Vec<String>,
    prepared: bool,
}

impl Seen {
    fn initialized(&self) -> Vec<kinesis_client::InitializationInput> {
        self.0.lock().unwrap().initialized.clone()
    }
    fn records(&self) -> Vec<String> {
        self.0.lock().unwrap().records.clone()
    }
    fn prepared(&self) -> bool {
        self.0.lock().unwrap().prepared
    }
}

/// Records what it is told; either checkpoints every batch, or commits the record at index
/// `commit` and prepares the one at `prepare` (with `state`), and never checkpoints after.
struct Preparer {
    seen: Seen,
    plan: Option<(usize, usize, &'static [u8])>,
    delivered: Vec<kinesis_client::Record>,
}

impl Preparer {
    fn observe(seen: Seen) -> Self {
        Preparer {
            seen,
            plan: None,
            delivered: Vec::new(),
        }
    }

    fn prepare_at(seen: Seen, commit: usize, prepare: usize, state: &'static [u8]) -> Self {
        Preparer {
            seen,
            plan: Some((commit, prepare, state)),
            delivered: Vec::new(),
        }
    }
}

#[kinesis_client::async_trait]
impl kinesis_client::RecordProcessor for Preparer {
    async fn initialize(
        &mut self,
        input: kinesis_client::InitializationInput,
    ) -> Result<(), kinesis_client::ProcessorError> {
        self.seen.0.lock().unwrap().initialized.push(input);
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: kinesis_client::ProcessRecordsInput,
        checkpointer: &mut kinesis_client::Checkpointer,
    ) -> Result<(), kinesis_client::ProcessorError> {
        self.seen
            .0
            .lock()
            .unwrap()
            .records
            .extend(input.records.iter().map(|r| r.sequence_number.to_string()));
        self.delivered.extend(input.records.iter().cloned());
        match self.plan {
            None => checkpointer.checkpoint().await?,
            Some((commit, prepare, state)) if self.delivered.len() > prepare => {
                if self.seen.prepared() {
                    return Ok(());
                }
                checkpointer
                    .checkpoint_record(&self.delivered[commit])
                    .await?;
                let prepared = checkpointer
                    .prepare_checkpoint_record(&self.delivered[prepare], Some(state.to_vec()))
                    .await?;
                assert_eq!(
                    prepared.pending_checkpoint(),
                    &self.delivered[prepare].checkpoint()
                );
                self.seen.0.lock().unwrap().prepared = true;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// No checkpoint at shutdown: the prepared checkpoint stays in the lease.
    async fn shutdown(
        &mut self,
        _: kinesis_client::Shutdown<'_>,
    ) -> Result<(), kinesis_client::ProcessorError> {
        Ok(())
    }
}

/// The lease once `cond` holds of it (checked every 100 ms, up to [`LIMIT`]).
async fn until_lease(
    store: &DynamoDbLeaseStore,
    key: &str,
    cond: impl Fn(&Lease) -> bool,
) -> Lease {
    let started = Instant::now();
    loop {
        let lease = store.get_lease(key).await.unwrap().unwrap();
        if cond(&lease) || started.elapsed() > LIMIT {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_checkpoint_prepared_through_the_rust_lease_store_reaches_the_java_kcl() {
    let test_started = Instant::now();
    let aws = aws().await;
    let kcl = java_kcl_app().await;
    let (stream, put) = crate::harness::stream_with_records(&aws, "rust-prepare", 2, 12).await;
    let by_shard = expected_by_shard(&put);
    assert!(
        by_shard.len() == 2 && by_shard.values().all(|s| s.len() >= 2),
        "both shards need two records or more: {by_shard:?}"
    );
    let ranges = hash_ranges(&aws, &stream).await;
    let shards: Vec<&String> = by_shard.keys().collect();
    let (created, updated) = (shards[0].clone(), shards[1].clone());
    let app = testkit::unique_name("app-rust-prepare");
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    store.create_table_if_not_exists().await.unwrap();

    // A lease created with a prepared checkpoint (and its state) inside an aggregate.
    let created_seqs = &by_shard[&created];
    let created_pending = Checkpoint::sequence(&created_seqs[0], 3).unwrap();
    let created_state = b"rust \x00\x01\xfe\xff create".to_vec();
    let mut lease = Lease::new(created.clone(), Checkpoint::TrimHorizon);
    lease.hash_key_range = Some(ranges[&created]);
    lease.pending_checkpoint = Some(created_pending.clone());
    lease.pending_checkpoint_state = Some(created_state.clone());
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());

    // A lease a Rust worker took, checkpointed at its first record and prepared at its last,
    // as a worker would before its side effects; then the worker went away (evicted).
    let updated_seqs = &by_shard[&updated];
    let committed = Checkpoint::sequence(&updated_seqs[0], 0).unwrap();
    let updated_pending = Checkpoint::sequence(updated_seqs.last().unwrap(), 0).unwrap();
    let updated_state = b"rust update \xc3\x28".to_vec();
    let mut lease = Lease::new(updated.clone(), Checkpoint::TrimHorizon);
    lease.hash_key_range = Some(ranges[&updated]);
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let mut lease = store
        .take_lease(&lease, &testkit::unique_name("rust-worker"))
        .await
        .unwrap()
        .applied()
        .expect("take");
    lease.checkpoint = committed.clone();
    lease.pending_checkpoint = Some(updated_pending.clone());
    lease.pending_checkpoint_state = Some(updated_state.clone());
    let lease = store
        .update_lease(&lease)
        .await
        .unwrap()
        .applied()
        .expect("update");
    store
        .evict_lease(&lease)
        .await
        .unwrap()
        .applied()
        .expect("evict");

    for (shard, pending, state) in [
        (&created, &created_pending, &created_state),
        (&updated, &updated_pending, &updated_state),
    ] {
        let item = raw_item(&aws, &app, shard).await;
        assert_eq!(
            (
                item.get("pendingCheckpoint"),
                item.get("pendingCheckpointSubSequenceNumber"),
                item.get("pendingCheckpointState"),
            ),
            (
                Some(&AttributeValue::S(pending.stored_value().to_string())),
                Some(&AttributeValue::N(
                    pending.stored_sub_sequence_number().to_string()
                )),
                Some(&AttributeValue::B(Blob::new(state.clone()))),
            ),
            "{shard}: the Rust store writes the Java KCL's attribute types"
        );
    }

    let (mut java, _scratch, worker) =
        start_reporter(&aws, &kcl, &stream, &app, "java-reporter").await;
    let mut initialized = Vec::new();
    for shard in [&created, &updated] {
        initialized.push(
            java.wait_for_initialize(shard, LIMIT)
                .await
                .unwrap_or_else(|e| panic!("{e:#}")),
        );
    }
    let java_initialized_after = java.started().elapsed();
    assert_eq!(
        initialized[0],
        InitializeEvent {
            shard_id: created.clone(),
            checkpoint: "TRIM_HORIZON".into(),
            checkpoint_sub_sequence_number: 0,
            pending_checkpoint: Some(created_seqs[0].clone()),
            pending_checkpoint_sub_sequence_number: Some(3),
            pending_checkpoint_state: Some(created_state.clone()),
        },
        "Java's initialize of the lease created with a prepared checkpoint"
    );
    assert_eq!(
        initialized[1],
        InitializeEvent {
            shard_id: updated.clone(),
            checkpoint: updated_seqs[0].clone(),
            checkpoint_sub_sequence_number: 0,
            pending_checkpoint: Some(updated_seqs.last().unwrap().clone()),
            pending_checkpoint_sub_sequence_number: Some(0),
            pending_checkpoint_state: Some(updated_state.clone()),
        },
        "Java's initialize of the lease prepared with update_lease"
    );

    // Java resumes from the committed checkpoint, not from the prepared one.
    for (shard, first) in [(&created, &created_seqs[0]), (&updated, &updated_seqs[1])] {
        let batch = java
            .wait_for_records(shard, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            &batch.first_sequence_number, first,
            "{shard}: Java's first record is the one after the committed checkpoint"
        );
    }
    let java_delivered_after = java.started().elapsed();

    // Taking the leases (and renewing them) kept the prepared checkpoints.
    for (shard, pending, state) in [
        (&created, &created_pending, &created_state),
        (&updated, &updated_pending, &updated_state),
    ] {
        let lease = store.get_lease(shard).await.unwrap().unwrap();
        assert_eq!(lease.owner.as_deref(), Some(worker.as_str()), "{shard}");
        assert_eq!(lease.pending_checkpoint.as_ref(), Some(pending), "{shard}");
        assert_eq!(
            lease.pending_checkpoint_state.as_ref(),
            Some(state),
            "{shard}"
        );
    }

    assert_no_java_complaints(&java);
    java.kill_group();
    eprintln!(
        "Java initialized both processors after {:.2} s and delivered to both after {:.2} s \
         (from its spawn); whole test {:.2} s",
        java_initialized_after.as_secs_f64(),
        java_delivered_after.as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
}

/// The Java KCL jars and the compiled app (installed/compiled on first use, off the runtime).
async fn java_kcl_app() -> JavaKcl {
    tokio::task::spawn_blocking(|| {
        let kcl = java_kcl::java_kcl()?;
        java_app::pending_checkpoint_app_classes(&kcl)?;
        anyhow::Ok(kcl)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("the Java KCL library app is not available: {e:#}"))
}

async fn start_java(
    aws: &LocalAws,
    kcl: &JavaKcl,
    scratch: &Scratch,
    mode: JavaAppMode,
    stream: &str,
    app: &str,
    worker: &str,
) -> JavaKclApp {
    let args = JavaAppArgs::local(
        aws,
        mode,
        stream,
        app,
        worker,
        scratch.0.join("events.jsonl"),
    );
    let env = java_kcl::credentials_env(&aws.sdk_config()).await.unwrap();
    let java = JavaKclApp::start(kcl, &args, &env, &scratch.0.join("java.log"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "Java KCL app pid {} (log {}, events {})",
        java.pid(),
        java.log_path().display(),
        java.output_path().display()
    );
    java
}

/// The Java app in `Report` mode on `stream` for `app`, as a new worker named after `label`
/// (returned with its scratch directory and worker id).
async fn start_reporter(
    aws: &LocalAws,
    kcl: &JavaKcl,
    stream: &str,
    app: &str,
    label: &str,
) -> (JavaKclApp, Scratch, String) {
    let worker = testkit::unique_name(label);
    let scratch = Scratch::new(&format!("kcl-{label}"));
    let java = start_java(
        aws,
        kcl,
        &scratch,
        JavaAppMode::Report,
        stream,
        app,
        &worker,
    )
    .await;
    (java, scratch, worker)
}

/// No warnings or errors in the Java log but the one every local set-up gets.
fn assert_no_java_complaints(java: &JavaKclApp) {
    let log = java.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        // No ECS/EKS/EC2 metadata here, so no CPU metric for worker-utilisation balancing.
        .filter(|l| !(l.contains("WorkerMetricsSelector") && l.contains("operating range")))
        .collect();
    assert!(
        complaints.is_empty(),
        "the Java KCL complained:\n{}",
        complaints.join("\n")
    );
}

async fn raw_item(aws: &LocalAws, table: &str, key: &str) -> HashMap<String, AttributeValue> {
    aws.dynamodb_client()
        .get_item()
        .table_name(table)
        .key("leaseKey", AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap_or_else(|| panic!("no item {key} in {table}"))
}

async fn hash_ranges(aws: &LocalAws, stream: &str) -> HashMap<String, HashKeyRange> {
    let out = aws
        .kinesis_client()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_string(),
                HashKeyRange {
                    start: r.starting_hash_key().parse().unwrap(),
                    end: r.ending_hash_key().parse().unwrap(),
                },
            )
        })
        .collect()
}

/// A scratch directory, removed when the test passes (kept for a failing one).
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(testkit::unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
