//! Issue 27: a multi-stream application on the local Kinesis and DynamoDB: two workers, three
//! streams, one joining and one leaving the set while they run.

use crate::common::aws;
use crate::harness::*;
use kinesis_client::multi_stream::{
    FormerStreamsLeasesDeletionStrategy, MultiStreamTracker, StreamConfig, TrackerError,
};
use kinesis_client::{Config, InitialPosition, StreamIdentifier};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// The streams the test tracks now.
#[derive(Clone, Default)]
struct Tracked(Arc<Mutex<Vec<StreamConfig>>>);

impl Tracked {
    fn set(&self, streams: &[&StreamIdentifier]) {
        *self.0.lock().unwrap() = streams
            .iter()
            .map(|s| StreamConfig::new((*s).clone(), InitialPosition::TrimHorizon))
            .collect();
    }
}

#[async_trait::async_trait]
impl MultiStreamTracker for Tracked {
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy {
        FormerStreamsLeasesDeletionStrategy::NoLeaseDeletion
    }
}

fn multi_config(app: &str, tracker: &Tracked, worker: &str) -> Config {
    Config::multi_stream_builder(app, tracker.clone())
        .worker_id(worker)
        .failover_time(Duration::from_secs(3))
        .idle_time_between_reads(Duration::from_millis(200))
        .stream_tracker_interval(Duration::from_secs(1))
        .shard_sync_interval(Duration::from_secs(1))
        .lease_cleanup_interval(Duration::from_secs(1))
        .parent_shard_poll_interval(Duration::from_millis(300))
        .graceful_shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn of_prefix(journal: &Journal, prefix: &str) -> usize {
    journal
        .distinct_payloads()
        .iter()
        .filter(|p| p.starts_with(&format!("{prefix}-")))
        .count()
}

/// Every record of the tracked streams is processed, none of a stream before it joins or after
/// it leaves; the leases are in the Java KCL's multi-stream format in DynamoDB.
#[tokio::test]
async fn two_workers_on_three_streams_one_joining_and_one_leaving() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let mut names = Vec::new();
    for (prefix, shards) in [("ms-a", 2), ("ms-b", 1), ("ms-c", 1)] {
        let name = testkit::unique_name(prefix);
        testkit::create_stream(&kinesis, &name, shards)
            .await
            .unwrap();
        testkit::put_records(&kinesis, &name, testkit::numbered_records(prefix, 20))
            .await
            .unwrap();
        names.push(name);
    }
    let ids: Vec<StreamIdentifier> = names
        .iter()
        .map(|n| StreamIdentifier::multi("000000000000", n.as_str(), 1_700_000_000).unwrap())
        .collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let tracker = Tracked::default();
    tracker.set(&[a, b]);
    let app = testkit::unique_name("app-ms");
    let journal = Journal::default();
    let w1 = start_worker(
        &aws,
        multi_config(&app, &tracker, "w1"),
        &journal,
        every_batch(),
    );
    let w2 = start_worker(
        &aws,
        multi_config(&app, &tracker, "w2"),
        &journal,
        every_batch(),
    );
    wait_for(LIMIT, "every record of a and b", || {
        of_prefix(&journal, "ms-a") == 20 && of_prefix(&journal, "ms-b") == 20
    })
    .await;
    assert_eq!(of_prefix(&journal, "ms-c"), 0, "c is not tracked yet");
    wait_for(LIMIT, "both workers hold leases", || {
        !w1.handle.held_shards().is_empty() && !w2.handle.held_shards().is_empty()
    })
    .await;

    // The lease items, as the Java KCL's multi-stream serializer writes them.
    let items = lease_items(&aws, &app).await;
    assert_eq!(items.len(), 3, "a's two shards and b's one: {items:?}");
    for item in &items {
        let key = item["leaseKey"].as_s().unwrap();
        let stream = item["streamName"].as_s().unwrap();
        let shard = item["shardId"].as_s().unwrap();
        assert_eq!(*key, format!("{stream}:{shard}"));
        assert!(
            *stream == a.to_string() || *stream == b.to_string(),
            "{stream}"
        );
    }

    // c joins, b leaves; b gets more records, which nobody may process.
    tracker.set(&[a, c]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    testkit::put_records(
        &kinesis,
        &names[1],
        testkit::numbered_records("ms-b-late", 10),
    )
    .await
    .unwrap();
    testkit::put_records(
        &kinesis,
        &names[0],
        testkit::numbered_records("ms-a-late", 10),
    )
    .await
    .unwrap();
    wait_for(LIMIT, "every record of c, and a's later ones", || {
        of_prefix(&journal, "ms-c") == 20 && of_prefix(&journal, "ms-a-late") == 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        of_prefix(&journal, "ms-b-late"),
        0,
        "no record of b after it left the set"
    );
    let owners: BTreeSet<Option<String>> = lease_items(&aws, &app)
        .await
        .iter()
        .filter(|i| i["streamName"].as_s().unwrap() == &b.to_string())
        .map(|i| i.get("leaseOwner").and_then(|o| o.as_s().ok()).cloned())
        .collect();
    assert_eq!(owners, [None].into(), "b's lease is kept, unowned");
    w1.stop().await;
    w2.stop().await;
}

/// The lease table's items as DynamoDB holds them.
async fn lease_items(
    aws: &testkit::LocalAws,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    aws.dynamodb_client()
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

fn every_batch() -> Behavior {
    Behavior {
        checkpoint_every_batch: true,
        ..Default::default()
    }
}
