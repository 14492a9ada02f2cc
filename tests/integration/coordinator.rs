//! Issue 3 on DynamoDB Local: coordinators sharing a real lease table.

use crate::common::aws;
use kinesis_client::checkpoint::Checkpoint;
use kinesis_client::lease::{DynamoDbLeaseStore, Lease, LeaseStore};
use kinesis_client::testing::{CallCounter, LeaseOp, ObservedLeaseStore, TestCoordinator};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const F: Duration = Duration::from_secs(2);

/// Counts the requests each operation sends to DynamoDB.
type Counting = ObservedLeaseStore<CallCounter>;

async fn table_with(n: usize) -> (Arc<Counting>, String) {
    let aws = aws().await;
    let table = testkit::unique_name("coord");
    let inner = DynamoDbLeaseStore::new(aws.dynamodb_client(), &table);
    inner.create_table_if_not_exists().await.unwrap();
    for i in 0..n {
        assert!(inner
            .create_lease_if_not_exists(&Lease::new(
                format!("shardId-{i:012}"),
                Checkpoint::TrimHorizon
            ))
            .await
            .unwrap());
    }
    let store = Arc::new(ObservedLeaseStore::new(
        Arc::new(inner),
        CallCounter::default(),
    ));
    (store, table)
}

struct Running {
    coordinator: TestCoordinator,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Arc<Counting>, id: &str) -> Running {
    let coordinator = TestCoordinator::new(store.clone(), id, F);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (c, s) = (coordinator.clone(), stop.clone());
        async move { c.run(s.cancelled_owned()).await }
    });
    Running {
        coordinator,
        stop,
        task,
    }
}

async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn counts(rs: &[&Running]) -> Vec<usize> {
    rs.iter().map(|r| r.coordinator.held_keys().len()).collect()
}

#[tokio::test]
async fn two_coordinators_balance_and_the_survivor_takes_over() {
    let (store, _) = table_with(6).await;
    let a = start(&store, "a");
    let b = start(&store, "b");
    until(Duration::from_secs(60), "3/3", || {
        counts(&[&a, &b]) == vec![3, 3]
    })
    .await;
    // Drop b without releasing anything (as if its process died).
    let b_keys = b.coordinator.held_keys();
    b.stop.cancel();
    b.task.await.unwrap();
    let took = until(Duration::from_secs(30), "a holds all six", || {
        a.coordinator.held_keys().len() == 6
    })
    .await;
    assert!(b_keys.iter().all(|k| a.coordinator.held_keys().contains(k)));
    eprintln!("failover on DynamoDB Local (F = {F:?}): survivor held the dead coordinator's leases after {took:?}");
    a.stop.cancel();
}

#[tokio::test]
async fn three_coordinators_balance_one_is_dropped_and_the_rest_share_its_leases() {
    let (store, table) = table_with(9).await;
    let a = start(&store, "a");
    let b = start(&store, "b");
    let c = start(&store, "c");
    until(Duration::from_secs(90), "3/3/3", || {
        counts(&[&a, &b, &c]) == vec![3, 3, 3]
    })
    .await;

    // Steady state: measure requests per lease per minute over a few renewal periods.
    let ops = [
        LeaseOp::Renew,
        LeaseOp::Update,
        LeaseOp::List,
        LeaseOp::Take,
        LeaseOp::Get,
    ];
    let before = ops.map(|op| store.hooks().count(op));
    let window = Duration::from_secs(8);
    tokio::time::sleep(window).await;
    let after = ops.map(|op| store.hooks().count(op));
    let per_lease_minute =
        |i: usize| (after[i] - before[i]) as f64 / 9.0 / window.as_secs_f64() * 60.0;
    eprintln!(
        "steady state, 3 coordinators, 9 leases, F = {F:?} ({table}): per lease per minute: renew UpdateItem {:.1}, scan requests {:.1}, takes {:.1}, gets {:.1}",
        per_lease_minute(0),
        per_lease_minute(2),
        per_lease_minute(3),
        per_lease_minute(4)
    );
    assert_eq!(
        after[3], before[3],
        "no lease changes hands at steady state"
    );
    assert_eq!(counts(&[&a, &b, &c]), vec![3, 3, 3], "still balanced");

    let c_keys = c.coordinator.held_keys();
    c.stop.cancel();
    c.task.await.unwrap();
    let took = until(Duration::from_secs(30), "a and b hold everything", || {
        a.coordinator.held_keys().len() + b.coordinator.held_keys().len() == 9
    })
    .await;
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for k in c_keys {
        let owner = if a.coordinator.held_keys().contains(&k) {
            "a"
        } else {
            "b"
        };
        *owners.entry(owner.into()).or_default() += 1;
    }
    eprintln!(
        "failover on DynamoDB Local (F = {F:?}): c's leases held again after {took:?}: {owners:?}"
    );
    let n = counts(&[&a, &b]);
    assert!(
        n.iter().max().unwrap() - n.iter().min().unwrap() <= 1,
        "the survivors share evenly: {n:?}"
    );
    a.stop.cancel();
    b.stop.cancel();
}
