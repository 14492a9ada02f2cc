//! Issue 3 on DynamoDB Local: coordinators sharing a real lease table.

use crate::common::aws;
use async_trait::async_trait;
use kcl::checkpoint::Checkpoint;
use kcl::coordinator::{CoordinatorConfig, LeaseCoordinator};
use kcl::lease::{DynamoDbLeaseStore, Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const F: Duration = Duration::from_secs(2);

/// Counts the requests each operation sends to DynamoDB.
#[derive(Debug)]
struct Counting {
    inner: DynamoDbLeaseStore,
    renew: AtomicU64,
    take: AtomicU64,
    update: AtomicU64,
    scan: AtomicU64,
    get: AtomicU64,
}

#[async_trait]
impl LeaseStore for Counting {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        self.inner.create_table_if_not_exists().await
    }
    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        self.inner.create_lease_if_not_exists(lease).await
    }
    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.scan.fetch_add(1, Ordering::Relaxed);
        self.inner.list_leases().await
    }
    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        self.get.fetch_add(1, Ordering::Relaxed);
        self.inner.get_lease(key).await
    }
    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.renew.fetch_add(1, Ordering::Relaxed);
        self.inner.renew_lease(lease).await
    }
    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.take.fetch_add(1, Ordering::Relaxed);
        self.inner.take_lease(lease, owner).await
    }
    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.inner.evict_lease(lease).await
    }
    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.update.fetch_add(1, Ordering::Relaxed);
        self.inner.update_lease(lease).await
    }
    async fn update_child_shard_ids(
        &self,
        key: &str,
        ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.inner.update_child_shard_ids(key, ids).await
    }
    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        self.inner.delete_lease(key).await
    }
}

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
    let store = Arc::new(Counting {
        inner,
        renew: AtomicU64::new(0),
        take: AtomicU64::new(0),
        update: AtomicU64::new(0),
        scan: AtomicU64::new(0),
        get: AtomicU64::new(0),
    });
    (store, table)
}

struct Running {
    coordinator: LeaseCoordinator,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Arc<Counting>, id: &str) -> Running {
    let coordinator = LeaseCoordinator::new(store.clone(), CoordinatorConfig::new(id, F));
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (c, s) = (coordinator.clone(), stop.clone());
        async move { c.run(s).await }
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
    let before = [
        &store.renew,
        &store.update,
        &store.scan,
        &store.take,
        &store.get,
    ]
    .map(|c| c.load(Ordering::Relaxed));
    let window = Duration::from_secs(8);
    tokio::time::sleep(window).await;
    let after = [
        &store.renew,
        &store.update,
        &store.scan,
        &store.take,
        &store.get,
    ]
    .map(|c| c.load(Ordering::Relaxed));
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
