//! The fleet store contract: the checks every [`FleetStore`] must pass, run against
//! [`super::InMemoryFleetStore`] in unit tests and against
//! [`DynamoDbFleetStore`](crate::fleet::DynamoDbFleetStore) on DynamoDB Local, so the
//! in-memory store keeps DynamoDB's conditional semantics. `store` must be a fresh fleet (no
//! items yet).

use crate::fleet::{ClientVersion, FleetStore, LockItem, MigrationState, WorkerMetricStats};
use std::time::Duration;

/// Run every check against `store`.
pub async fn run(store: &dyn FleetStore) {
    store.prepare_for_3x().await.expect("prepare");
    store.prepare_for_3x().await.expect("prepare is idempotent");

    // The migration item: created once, replaced only from the version expected.
    assert_eq!(
        store.migration_state().await.unwrap(),
        None,
        "a fresh fleet"
    );
    let created = MigrationState::new(ClientVersion::UpgradeFrom2x, "w1");
    assert!(store.create_migration_state(&created).await.unwrap());
    let again = MigrationState::new(ClientVersion::V3x, "w2");
    assert!(
        !store.create_migration_state(&again).await.unwrap(),
        "a second create is refused"
    );
    assert_eq!(
        store.migration_state().await.unwrap(),
        Some(created.clone())
    );
    let next = created.moved_to(ClientVersion::V3xWithRollback, "w1");
    assert!(
        !store
            .update_migration_state(&ClientVersion::V2x, &next)
            .await
            .unwrap(),
        "an update expecting another version"
    );
    assert!(store
        .update_migration_state(&ClientVersion::UpgradeFrom2x, &next)
        .await
        .unwrap());
    let read = store.migration_state().await.unwrap().unwrap();
    assert_eq!(read, next, "the history round-trips");
    assert_eq!(read.history[0].0, "CLIENT_VERSION_UPGRADE_FROM_2X");

    // The lock: acquired when absent, heartbeaten by its holder only, taken over only from the
    // version seen stale, released by its holder only.
    assert_eq!(store.lock().await.unwrap(), None);
    let a = LockItem::new("a", Duration::from_secs(20));
    assert!(store.acquire_lock(&a, None).await.unwrap());
    let b = LockItem::new("b", Duration::from_secs(20));
    assert!(
        !store.acquire_lock(&b, None).await.unwrap(),
        "the lock exists"
    );
    assert_eq!(store.lock().await.unwrap(), Some(a.clone()));
    let mut not_held = a.clone();
    not_held.record_version = "other".into();
    assert!(!store.heartbeat_lock(&not_held, "v2").await.unwrap());
    assert!(store.heartbeat_lock(&a, "v2").await.unwrap());
    let mut a2 = a.clone();
    a2.record_version = "v2".into();
    assert_eq!(store.lock().await.unwrap(), Some(a2.clone()));
    assert!(
        !store
            .acquire_lock(&b, Some(&a.record_version))
            .await
            .unwrap(),
        "a take-over from a version that has changed since"
    );
    assert!(store.acquire_lock(&b, Some("v2")).await.unwrap());
    assert_eq!(store.lock().await.unwrap(), Some(b.clone()));
    assert!(
        !store.heartbeat_lock(&a2, "v3").await.unwrap(),
        "the old holder's heartbeat"
    );
    assert!(
        !store.release_lock(&a2).await.unwrap(),
        "the old holder's release"
    );
    assert!(store.release_lock(&b).await.unwrap());
    assert_eq!(store.lock().await.unwrap(), None);

    // Metrics rows: written whole, listed, deleted only as last written.
    let mut w1 = WorkerMetricStats::throughput_only("w1");
    w1.stats.insert("C".into(), vec![41.5, -1.0, 40.25]);
    w1.operating_range.insert("C".into(), vec![100.0]);
    let w2 = WorkerMetricStats::throughput_only("w2");
    store.put_worker_metrics(&w1).await.unwrap();
    store.put_worker_metrics(&w2).await.unwrap();
    let mut rows = store.worker_metrics().await.unwrap();
    rows.sort_by(|x, y| x.worker_id.cmp(&y.worker_id));
    assert_eq!(rows, vec![w1.clone(), w2.clone()]);
    assert!(
        !store
            .delete_worker_metrics("w1", w1.last_update_s + 1)
            .await
            .unwrap(),
        "a delete of a row written since"
    );
    assert!(store
        .delete_worker_metrics("w1", w1.last_update_s)
        .await
        .unwrap());
    let rows = store.worker_metrics().await.unwrap();
    assert_eq!(rows, vec![w2]);
}
