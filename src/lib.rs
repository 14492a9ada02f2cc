//! # kinesis-client: the Kinesis Client Library for Rust
//!
//! Workers of one application share the shards of a Kinesis stream through a DynamoDB lease
//! table (in the Java KCL's item format, so an application can move between the Java KCL and
//! this library keeping its checkpoints). Each worker runs one [`RecordProcessor`] per shard
//! it holds, lets it checkpoint, takes over the shards of dead workers, balances shards across
//! workers, and on resharding never starts a child shard before its parents are finished.
//!
//! ```text
//! Config ──▶ Scheduler ──▶ LeaseCoordinator (renew + take, pure decisions) ──▶ held leases
//!               │                                                              │
//!               └── one shard consumer per held lease ◀────────────────────────┘
//! shard consumer: WaitingOnParents → Initializing → Processing → ShuttingDown → Done
//!    record source (GetRecords polling or SubscribeToShard fan-out, prefetched, KPL
//!    de-aggregated) ──▶ RecordProcessor ──▶ Checkpointer ──▶ LeaseStore
//! each consumer returns why it ended (ShardEnded | LeaseLost | Shutdown | Failed)
//! ```
//!
//! ## Example
//!
//! A processor is one async function of each batch ([`processor::from_fn`]; the batch is
//! checkpointed when it returns `Ok`):
//!
//! ```no_run
//! use kinesis_client::{processor, Config, ProcessRecordsInput, Scheduler};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let printer = processor::from_fn(|input: ProcessRecordsInput| async move {
//!     for r in &input.records { println!("{}", String::from_utf8_lossy(&r.data)); }
//!     Ok(())
//! });
//! let config = Config::builder("my-app", "my-stream").build()?;
//! let sdk = aws_config::load_from_env().await;
//! let scheduler = Scheduler::from_sdk_config(config, printer, &sdk, &Default::default());
//! scheduler.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//!
//! or a type implementing [`RecordProcessor`], which needs only `process_records` (the default
//! `initialize` does nothing; the default `shutdown` checkpoints at shard end and on a
//! graceful shutdown) and chooses when to checkpoint:
//!
//! ```no_run
//! use kinesis_client::{Checkpointer, Config, ProcessRecordsInput, ProcessorError, RecordProcessor, Scheduler};
//!
//! struct Printer;
//!
//! #[kinesis_client::async_trait]
//! impl RecordProcessor for Printer {
//!     async fn process_records(&mut self, input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
//!         for r in &input.records { println!("{}", String::from_utf8_lossy(&r.data)); }
//!         Ok(cp.checkpoint().await?)
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let config = Config::builder("my-app", "my-stream").build()?;
//! # let sdk = aws_config::load_from_env().await;
//! let scheduler = Scheduler::from_sdk_config(config, |_shard: &str| Printer, &sdk, &Default::default());
//! # scheduler.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//!
//! ## Delivery semantics: at-least-once
//!
//! * Within a shard, records reach the processor in sequence order, one batch at a time.
//! * A checkpoint records "everything up to here is done". Whoever processes the shard next
//!   (after a crash, a failover, a rebalance or a restart) starts right after the last
//!   checkpoint. So what repeats after a crash is exactly the records delivered since the last
//!   successful checkpoint; nothing before it repeats and nothing is skipped.
//! * A processor error redelivers the same batch (the Java KCL skips it), after a backoff
//!   that doubles with each failure ([`Config::task_backoff`] up to
//!   [`Config::max_task_backoff`], with jitter); [`ProcessRecordsInput::attempt`] numbers the
//!   deliveries. A processor that finished part of a failed batch reports it with
//!   [`ProcessorError::done_through`]: the redelivery starts after that record (no checkpoint
//!   write). A panic, or a [`RestartShard`] anywhere in the error's source chain, restarts
//!   the shard from its last checkpoint (and counts as a failed delivery of those records).
//! * Records are skipped only with the processor's consent: it checkpoints past them, or,
//!   once the [`Config::retry_policy`] is exhausted, its
//!   [`retries_exhausted`](RecordProcessor::retries_exhausted) hook returns
//!   [`RetryDecision::Skip`](processor::RetryDecision::Skip) (e.g. after a dead-letter write).
//!   Skips are logged with the shard and sequence numbers and counted
//!   ([`SchedulerHandle::skipped_records`]). By default nothing is ever skipped.
//! * A graceful shutdown gives every processor `Shutdown::Requested` while its lease is still
//!   held, so it can checkpoint and nothing repeats; then the leases are released.
//! * A child shard (after a split or merge) is processed only after every parent reached
//!   `SHARD_END`, which the parent's processor records in `Shutdown::ShardEnded`.
//! * Where the Java KCL has a hole, we do better: a shard started at `LATEST` whose iterator
//!   must be replaced before its first record (expired, or read errors) resumes at
//!   `AT_TIMESTAMP` of its first iterator, never at a new `LATEST` past what arrived meanwhile;
//!   throttling and server errors retry the same iterator. A checkpoint write that failed may
//!   have landed, so nothing below it is accepted afterwards (checkpoints never move back).
//!   A shutdown signalled while `initialize` ran still reaches the processor: every
//!   initialized processor gets exactly one `shutdown`. A fetcher task that dies is restarted
//!   with backoff right after the last record delivered, and read-ahead is bounded in bytes
//!   per shard and per worker ([`Config::max_prefetch_bytes_per_shard`],
//!   [`Config::max_prefetch_bytes_per_worker`]).
//! * KPL aggregates are split into their user records before the processor sees them
//!   ([`retrieval::deaggregation`]); a checkpoint names the user record (sequence and
//!   sub-sequence number, stored as the Java KCL stores them), and a restart resumes right
//!   after it, inside its aggregate. User records outside the shard's hash key range are
//!   delivered (the Java KCL drops the whole aggregate), counted and logged once per shard; a
//!   record with the magic bytes that is not a valid aggregate is delivered as it is, with a
//!   warning.
//! * A processor whose lease was lost cannot checkpoint (each tenure of a lease has its own
//!   concurrency token), so a slow, stale worker never moves another worker's checkpoint.
//!
//! ## Retrieval: polling or enhanced fan-out
//!
//! [`Config::retrieval_mode`] chooses how records are read: [`RetrievalMode::Polling`] (the
//! default: GetRecords every `idle_time_between_reads` per shard) or [`RetrievalMode::FanOut`]
//! (SubscribeToShard through a stream consumer registered under [`Config::fan_out`]'s name,
//! the application name by default; records arrive about 70 ms after they are put, with
//! 2 MB/s per shard for this application alone). The default is polling although the Java KCL
//! defaults to fan-out, because fan-out is billed per consumer-shard hour and per GB, needs
//! three more IAM permissions and registers a consumer: turning it on should be a decision.
//! Both modes run behind one record-source interface, so the consumer, the checkpointer,
//! resharding and the delivery guarantees above are the same: with fan-out, a subscription
//! that ends (Kinesis ends them after 5 minutes), fails or goes silent is renewed right after
//! the last event delivered (its continuation sequence number), so nothing is skipped or
//! repeated; the last event of a closed shard carries its children; read-ahead is bounded in
//! bytes per shard and per worker (the next event is read only when there is room).
//!
//! When the stream consumer is deleted while workers read through it, every subscription
//! fails with `ResourceNotFoundException`. A consumer configured by name
//! ([`FanOutConfig::consumer_name`], the default) is registered again under the same name —
//! once per worker, its shards waiting for that registration — and every shard goes on
//! right after the last event it delivered, with the new consumer ARN: nothing is skipped or
//! repeated. A consumer configured by ARN ([`FanOutConfig::consumer_arn`]) is never
//! registered again (the application chose that consumer): the worker reports not ready,
//! shuts down as if asked to (processors can checkpoint), releases its leases so that other
//! workers take the shards at once, and [`Scheduler::run`] returns
//! [`SchedulerError::FanOutConsumerDeleted`] naming the ARN; a worker that cannot register a
//! deleted consumer again (a permission is missing) stops the same way. A configured
//! consumer ARN must be a consumer of the stream read: a consumer of a stream of the same
//! name in another account or region is refused at start. The Java KCL, as the reference
//! describes it, looks the consumer ARN up once per worker and turns a SubscribeToShard
//! `ResourceNotFoundException` into the end of the shard without child shards: a deleted
//! consumer does not stall it, but every shard it was reading is ended there and the rest of
//! its records skipped (not checked against the Java source here).
//!
//! ## Failover timing
//!
//! With failover time `F` ([`Config::failover_time`], default 10 s), each held lease is
//! renewed every `F / 3` (a checkpoint counts as a renewal), and the table is scanned for
//! leases to take every `F / 3`; a lease whose counter this worker saw unchanged for `F` on
//! its own monotonic clock is expired, and the taker wakes up right at that moment. So a dead
//! worker's shards are held by a live worker within `F + lease_take_interval` (≈ 1.33 F at
//! the defaults; the Java KCL needs 2–4 F). A lease not renewed for `F` is lost locally: its
//! processor is shut down with [`Shutdown::LeaseLost`] and checkpoints are refused.
//!
//! ## Testing your processor
//!
//! Enable the `testing` feature in your dev-dependencies
//! (`kinesis-client = { version = "…", features = ["testing"] }`): `kinesis_client::testing::TestShard` holds a
//! shard's lease on an in-memory lease table and drives your processor as the scheduler does,
//! with a real [`Checkpointer`], so a unit test can assert what was checkpointed:
//!
//! ```
//! # use kinesis_client::{Checkpoint, Checkpointer, ProcessRecordsInput, ProcessorError, RecordProcessor};
//! # struct Mine;
//! # #[kinesis_client::async_trait]
//! # impl RecordProcessor for Mine {
//! #     async fn process_records(&mut self, input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
//! #         if let Some(last) = input.records.last() { cp.checkpoint_record(last).await?; }
//! #         Ok(())
//! #     }
//! # }
//! use kinesis_client::testing::TestShard;
//!
//! #[tokio::test]
//! async fn checkpoints_the_last_record_of_each_batch() {
//!     let mut shard = TestShard::new("shardId-000000000000").await;
//!     let mut processor = Mine;
//!     shard.initialize(&mut processor).await.unwrap();
//!     let batch = shard.records(["a", "b"]);
//!     let last = batch[1].checkpoint();
//!     shard.process(&mut processor, batch).await.unwrap();
//!     assert_eq!(shard.stored_checkpoint(), last);
//! }
//! # fn main() { tokio::runtime::Runtime::new().unwrap().block_on(checkpoints_the_last_record_of_each_batch_()) }
//! # async fn checkpoints_the_last_record_of_each_batch_() {
//! #     let mut shard = TestShard::new("shardId-000000000000").await;
//! #     let mut processor = Mine;
//! #     shard.initialize(&mut processor).await.unwrap();
//! #     let batch = shard.records(["a", "b"]);
//! #     let last = batch[1].checkpoint();
//! #     shard.process(&mut processor, batch).await.unwrap();
//! #     assert_eq!(shard.stored_checkpoint(), last);
//! # }
//! ```
//!
//! The `testing` module also has the in-memory stream and lease store with fault injection,
//! an observing layer over any [`LeaseStore`](lease::LeaseStore), and the contract suite a
//! custom lease store must pass. It is not part of the semver-stable API.
//!
//! ## Leases under failure and after resharding
//!
//! Where the Java KCL drops leases needlessly or keeps them forever, this library does not:
//!
//! * Every held lease is renewed on its own schedule (at most 20 renewals in flight), so one
//!   slow or hung DynamoDB call delays only its own lease; the Java KCL's renewal round waits
//!   for all of them, and one stuck call can expire every lease of the worker.
//! * A renewal or checkpoint whose retries all failed may still have landed: a conflict on the
//!   next write re-reads the lease and keeps it when the owner is still this worker.
//! * A renewal whose attempts outlive the lease (each hangs until its timeout in a lease-table
//!   outage, while the lease expires locally) ends with the tenure it renewed: it is not
//!   retried, and its result counts neither for the lease nor for readiness, so the worker is
//!   ready again once the table answers, whichever leases it then holds. The Java KCL (which
//!   has no readiness report) does use such a late result: a renewal landing after the lease
//!   expired locally makes it held again, under the same tenure.
//! * A finished lease whose `childShardIds` is empty (a Java KCL before 2.3 did not record
//!   them) has its children looked up in the stream; a lease whose shard aged past retention is
//!   deleted. The Java KCL keeps both forever, renewing them and counting them when balancing.
//! * Children that a finished parent never created (a Java KCL before 2.3 recorded `SHARD_END`
//!   first and created the children in a later sync, so a worker that died in between left
//!   none) are leased by the shard sync at `TRIM_HORIZON`; a merge child whose other parent
//!   aged out of the stream is created without waiting for that parent's lease. The Java KCL
//!   2.3+ waits forever in both cases, and the children's records are never processed.
//!
//! ## Metrics and health
//!
//! Metrics are recorded through the [`metrics`](https://docs.rs/metrics) facade with the Java
//! KCL's names and dimensions (`RecordsProcessed`, `MillisBehindLatest`, `CurrentLeases`, ...,
//! plus redeliveries and restarts by cause, seconds since the last checkpoint, released and
//! unowned leases): nothing is recorded until the application installs a recorder. The
//! cargo features `prometheus` (an endpoint with `/metrics`, `/healthz`, `/readyz`; it serves
//! the metrics under Prometheus names: `kcl_records_processed_total`,
//! `kcl_behind_latest_seconds`, histograms in seconds, ...) and `cloudwatch` (`PutMetricData`
//! batched as the Java KCL does, with the Java names) add exporters.
//! [`SchedulerHandle::health`] says whether the worker is live and ready. See [`telemetry`]
//! for the table of every metric.
//!
//! ## Scale
//!
//! Shard sync is linear in the number of shards (about 4–6 µs of CPU per shard: 56 ms for a
//! 10,000-shard stream with 3,000 closed ancestors), leases are created in waves of 64
//! concurrent writes (parents before children), and a worker takes leases in chunks of 64
//! concurrent writes, scanning again between chunks, so its consumers start on the first chunk
//! and a new fleet balances within about one failover time. Measured in `BENCHMARKS.md`,
//! section 7.
//!
//! ## Modules
//!
//! [`config`] (settings and defaults), [`processor`] (the API you implement),
//! [`checkpointer`] and [`checkpoint`] (recording progress), [`record`], [`scheduler`] (the
//! worker), [`lease`] (the lease table, and the [`LeaseStore`](lease::LeaseStore) trait for
//! other backends), [`retrieval`] (the [`StreamClient`](retrieval::StreamClient) trait, for
//! polling and enhanced fan-out, and its Kinesis implementation), [`aws`] (client construction and endpoints), [`error`], [`validation`] (the rules
//! settings follow, shared with the MultiLangDaemon), [`telemetry`] (metrics with the Java
//! KCL's names, the Prometheus and CloudWatch exporters, worker health);
//! `testing` with the `testing` feature.
#![warn(missing_docs)]
// Links to items of the `prometheus`, `cloudwatch` and `testing` features resolve in the
// documentation built with every feature (docs.rs, and CI with `-D warnings`, which catches
// any link that is broken there); a build without them would report those links only.
#![cfg_attr(
    not(all(feature = "prometheus", feature = "cloudwatch", feature = "testing")),
    allow(rustdoc::broken_intra_doc_links)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aws;
// Some items serve only the unit tests (and the `testing` kit).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod backoff;
pub mod checkpoint;
pub mod checkpointer;
pub mod config;
pub(crate) mod consumer;
// Some items serve only the unit tests (and the `testing` kit).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod coordinator;
pub mod error;
pub mod fleet;
pub mod lease;
pub mod multi_stream;
pub mod processor;
pub mod record;
// Some items serve only the unit tests (and the `testing` kit).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod resharding;
pub mod retrieval;
pub mod scheduler;
pub mod status;
pub mod stream;
pub(crate) mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod validation;

/// The `#[async_trait]` attribute that [`RecordProcessor`] implementations need, re-exported
/// so that an application does not depend on `async-trait` itself:
/// `#[kinesis_client::async_trait]`.
pub use async_trait::async_trait;
pub use checkpoint::{Checkpoint, SequenceNumber};
pub use checkpointer::{CheckpointError, Checkpointer, PreparedCheckpoint};
pub use config::{
    Config, ConfigBuilder, ConfigError, FanOutConfig, InitialPosition, LeaseAssignmentStrategy,
    RetrievalMode,
};
pub use processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor,
    RecordProcessorFactory, RestartShard, Shutdown,
};
pub use record::{Bytes, PartitionKey, Record, Records};
pub use resharding::ShardSyncError;
pub use retrieval::StreamRef;
pub use scheduler::{Scheduler, SchedulerError, SchedulerHandle};
pub use stream::{StreamIdentifier, StreamIdentifierError};
