//! The shard consumer on paused tokio time over the in-memory stream and lease store.

use super::*;
use crate::coordinator::CoordinatorConfig;
use crate::lease::{InMemoryLeaseStore, Lease};
use crate::retrieval::{InMemoryStream, StreamRef};
use crate::ProcessorError;
use std::sync::Mutex;

pub(super) const KEY: &str = "shardId-000000000000";

/// A worker holding the one lease of a one-shard stream.
pub(super) struct Harness {
    pub stream: InMemoryStream,
    pub coordinator: LeaseCoordinator,
    pub tenure: LeaseTenure,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn new(checkpoint: Checkpoint) -> Harness {
        let stream = InMemoryStream::new("s", 1);
        let store = InMemoryLeaseStore::new();
        store.with_table(|t| {
            t.insert(KEY.into(), Lease::new(KEY, checkpoint));
        });
        let coordinator = LeaseCoordinator::new(
            Arc::new(store.clone()),
            CoordinatorConfig::new("w", Duration::from_secs(10)),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (c, s) = (coordinator.clone(), stop.clone());
            async move { c.run(s).await }
        });
        while !coordinator.held_keys().contains(KEY) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tenure = coordinator.held()[KEY].clone();
        Harness {
            stream,
            coordinator,
            tenure,
            stop,
            task,
        }
    }

    pub fn ctx(&self, config: crate::ConfigBuilder) -> ShardContext {
        ShardContext {
            coordinator: self.coordinator.clone(),
            stream: Arc::new(self.stream.clone()),
            config: Arc::new(config.build().unwrap()),
            prefetch_budget: PrefetchBudget::new(64 << 20),
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
        self.calls.lock().unwrap().push(call);
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
    assert_eq!(*calls.lock().unwrap(), ["initialize", "shutdown requested"]);
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
    assert_eq!(
        *calls.lock().unwrap(),
        ["initialize", "shutdown lease_lost"]
    );
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
    assert_eq!(*calls.lock().unwrap(), ["initialize", "shutdown requested"]);
    h.stop().await;
}
