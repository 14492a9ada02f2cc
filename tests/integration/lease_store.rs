//! The lease store on DynamoDB Local: the shared contract, conditional writes, and the Java
//! KCL item format in both directions.

use crate::common::aws;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_client::checkpoint::Checkpoint;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore, WriteOutcome};
use std::collections::HashMap;

async fn store() -> (DynamoDbLeaseStore, aws_sdk_dynamodb::Client, String) {
    let aws = aws().await;
    let table = testkit::unique_name("leases");
    let client = aws.dynamodb_client();
    let store = DynamoDbLeaseStore::new(client.clone(), &table);
    store
        .create_table_if_not_exists()
        .await
        .expect("create lease table");
    (store, client, table)
}

#[tokio::test]
async fn dynamodb_store_passes_the_contract() {
    let (store, _, _) = store().await;
    kinesis_client::testing::lease_store_contract(&store, "contract-").await;
}

#[tokio::test]
async fn table_is_created_with_the_java_kcl_schema_and_conditional_writes_fail_as_they_should() {
    let (store, client, table) = store().await;
    let desc = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let t = desc.table().unwrap();
    let key = &t.key_schema()[0];
    assert_eq!(
        (key.attribute_name(), key.key_type().as_str()),
        ("leaseKey", "HASH")
    );
    assert_eq!(t.key_schema().len(), 1);
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );

    let lease = kinesis_client::lease::Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let mine = store
        .take_lease(&lease, "worker-a")
        .await
        .unwrap()
        .applied()
        .unwrap();
    // A second worker acting on what it read before: its condition fails, as a value.
    assert_eq!(
        store.take_lease(&lease, "worker-b").await.unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.renew_lease(&lease).await.unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(store.get_lease(&lease.key).await.unwrap().unwrap(), mine);
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.into())
}

#[tokio::test]
async fn java_kcl_items_load_and_keep_their_extra_attributes() {
    let (store, client, table) = store().await;
    // Exactly the lease item the Java KCL 3.x writes, plus 3.x-only attributes.
    let item: HashMap<String, AttributeValue> = [
        ("leaseKey", s("shardId-000000000002")),
        ("leaseOwner", s("java-worker-1")),
        ("leaseCounter", n("7")),
        (
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        ),
        ("checkpointSubSequenceNumber", n("3")),
        ("ownerSwitchesSinceCheckpoint", n("1")),
        (
            "parentShardId",
            AttributeValue::Ss(vec![
                "shardId-000000000000".into(),
                "shardId-000000000001".into(),
            ]),
        ),
        ("startingHashKey", s("0")),
        (
            "endingHashKey",
            s("170141183460469231731687303715884105727"),
        ),
        ("throughputKBps", n("12.5")),
        ("entityType", s("LEASE")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    // KCL 3.5 single-table mode rows that are not leases must be skipped.
    client
        .put_item()
        .table_name(&table)
        .item("leaseKey", s("java-worker-1"))
        .item("entityType", s("WORKER_METRIC_STATS"))
        .item("lut", n("1700000000"))
        .send()
        .await
        .unwrap();

    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 1, "only the lease row is a lease: {leases:?}");
    let lease = &leases[0];
    assert_eq!(lease.owner.as_deref(), Some("java-worker-1"));
    assert_eq!(lease.counter, 7);
    assert_eq!(
        lease.checkpoint,
        Checkpoint::sequence(
            "49590338271490256608559692538361571095921575989136588898",
            3
        )
        .unwrap()
    );
    assert_eq!(
        lease.parent_shard_ids,
        vec!["shardId-000000000000", "shardId-000000000001"]
    );

    // Take it over and checkpoint, as a Rust worker replacing a Java one would.
    let taken = store
        .take_lease(lease, "rust-worker")
        .await
        .unwrap()
        .applied()
        .unwrap();
    assert_eq!(taken.owner_switches_since_checkpoint, 2);
    let mut cp = taken.clone();
    cp.checkpoint = Checkpoint::sequence(
        "49590338271490256608559692538361571095921575989136588999",
        0,
    )
    .unwrap();
    cp.owner_switches_since_checkpoint = 0;
    store.update_lease(&cp).await.unwrap().applied().unwrap();

    let raw = client
        .get_item()
        .table_name(&table)
        .key("leaseKey", s("shardId-000000000002"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let raw = raw.item().unwrap();
    // Same names, same types as the Java KCL writes; unknown attributes preserved.
    assert_eq!(raw["leaseOwner"], s("rust-worker"));
    assert_eq!(raw["leaseCounter"], n("9"));
    assert_eq!(
        raw["checkpoint"],
        s("49590338271490256608559692538361571095921575989136588999")
    );
    assert_eq!(raw["checkpointSubSequenceNumber"], n("0"));
    assert_eq!(raw["ownerSwitchesSinceCheckpoint"], n("0"));
    assert!(matches!(raw["parentShardId"], AttributeValue::Ss(_)));
    assert_eq!(raw["throughputKBps"], n("12.5"));
    assert_eq!(raw["entityType"], s("LEASE"));
    assert_eq!(raw["startingHashKey"], s("0"));
}

#[tokio::test]
async fn dynamodb_fleet_store_passes_the_contract() {
    let (store, _, table) = store().await;
    let fleet = store
        .fleet_store(&table, &kinesis_client::fleet::FleetConfig::default())
        .expect("DynamoDbLeaseStore has a fleet store");
    kinesis_client::testing::fleet_store_contract(fleet.as_ref()).await;
}
