//! A worker's status (what `/status` shows), on in-memory services with paused time: its
//! shards with their lag history, records and restarts; the lease table; its errors.

use super::*;
use crate::checkpointer::Checkpointer;
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, RestartShard,
    Shutdown,
};
use crate::retrieval::StreamRef;
use crate::status::{LeaseState, SAMPLE_INTERVAL};
use crate::testing::lease_store::InMemoryLeaseStore;
use crate::testing::stream::InMemoryStream;

/// Checkpoints every batch; the processor of shard 1 asks once for a restart.
struct Processor {
    restart_once: Option<Arc<std::sync::atomic::AtomicBool>>,
}

#[async_trait::async_trait]
impl RecordProcessor for Processor {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if let Some(flag) = &self.restart_once {
            if !input.records.is_empty() && !flag.swap(true, Ordering::SeqCst) {
                return Err(RestartShard("a poison record, once".into()).into());
            }
        }
        let _ = cp.checkpoint().await;
        Ok(())
    }
    async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn status_shows_held_shards_their_lag_history_the_table_and_errors() {
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w1")
        .initial_position(crate::config::InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(10))
        .build()
        .unwrap();
    let flag = restarted.clone();
    let s = Scheduler::new(
        config,
        move |shard: &str| Processor {
            restart_once: shard.ends_with('1').then(|| flag.clone()),
        },
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let handle = s.handle();
    let task = tokio::spawn(async move {
        let _ = s.run(std::future::pending()).await;
    });
    let put = {
        let stream = stream.clone();
        tokio::spawn(async move {
            loop {
                for i in 0..2u128 {
                    stream.put_with_hash(u128::MAX / 2 * i, "k", b"record");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Right after the take, before any later scan, the table shows the leases as taken.
    while handle.held_shards().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = handle.status();
    assert!(
        first
            .leases
            .iter()
            .all(|l| l.owner.as_deref() == Some("w1") && l.state == LeaseState::Processing),
        "{:?}",
        first.leases
    );
    tokio::time::sleep(SAMPLE_INTERVAL * 5).await;
    let status = handle.status();
    put.abort();
    task.abort();

    assert_eq!(status.worker_id, "w1");
    assert!(status.health.live);
    let keys: Vec<&str> = status.held.iter().map(|h| h.lease_key.as_str()).collect();
    assert_eq!(keys, ["shardId-000000000000", "shardId-000000000001"]);
    for h in &status.held {
        assert!(
            h.history.len() >= 4,
            "a sample every {SAMPLE_INTERVAL:?}: {h:?}"
        );
        assert!(h.history.windows(2).all(|w| w[0].ago > w[1].ago), "{h:?}");
        // The first sample may come before the first batch.
        assert!(
            h.history[1..]
                .iter()
                .all(|s| s.millis_behind_latest.is_some()),
            "{h:?}"
        );
        assert!(h.history.windows(2).all(|w| w[0].records <= w[1].records));
        assert!(h.records > 50, "{h:?}");
        assert!(
            (3.0..=6.0).contains(&h.records_per_second),
            "5 records a second: {h:?}"
        );
        assert!(h.checkpoint.starts_with("49"), "{h:?}");
    }
    assert_eq!(status.held[0].restarts, 0);
    assert_eq!(status.held[1].restarts, 1);
    assert!(status
        .errors
        .iter()
        .any(|e| e.lease_key.as_deref() == Some("shardId-000000000001")
            && e.message.contains("a poison record, once")));
    assert_eq!(status.leases.len(), 2);
    for l in &status.leases {
        assert_eq!(l.owner.as_deref(), Some("w1"));
        assert_eq!(l.state, LeaseState::Processing, "{l:?}");
    }
    assert!(status.leases_scanned_ago.is_some());
    assert!(restarted.load(Ordering::SeqCst));

    // What `/status.json` serves.
    #[cfg(feature = "prometheus")]
    {
        let json = crate::telemetry::status_json(&status);
        assert_eq!(json["worker_id"], "w1");
        assert_eq!(json["leases"][0]["state"], "processing");
        assert_eq!(json["held"][1]["restarts"], 1);
        assert!(json["held"][0]["history"][1]["millis_behind_latest"].is_number());
    }
}

/// A lease another worker takes shows in the recent errors as lost.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_is_among_the_recent_errors() {
    let stream = InMemoryStream::new("s", 1);
    let store = InMemoryLeaseStore::new();
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id("w1")
        .failover_time(Duration::from_secs(10))
        .build()
        .unwrap();
    let s = Scheduler::new(
        config,
        |_: &str| Processor { restart_once: None },
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let handle = s.handle();
    let task = tokio::spawn(async move {
        let _ = s.run(std::future::pending()).await;
    });
    while handle.held_shards().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.status().errors.is_empty());
    let lease = store.snapshot().into_values().next().unwrap();
    let _ = store.take_lease(&lease, "w2").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.status().errors.iter().any(|e| {
        e.lease_key.as_deref() == Some(lease.key.as_str()) && e.message.starts_with("lease lost")
    }) {
        assert!(Instant::now() < deadline, "{:?}", handle.status().errors);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
}
