//! A worker in a KCL 3.5 single-table fleet on DynamoDB Local: the fleet's items (its
//! `Migration3.0` item, a Java worker's metrics row) live in the lease table itself, with
//! `entityType`, as KCL 3.5 writes them when no `<app>-CoordinatorState` table exists. The
//! worker must find the fleet there, lead it with its lock and metrics row in the same table,
//! process every record, count only leases in its scans, and leave every non-lease item alone.

use crate::common::aws;
use crate::harness::*;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_client::fleet::FleetConfig;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore};
use std::collections::HashMap;
use std::time::Duration;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.into())
}

#[tokio::test]
async fn a_worker_leads_a_kcl_3_5_single_table_fleet_and_keeps_its_items() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "single-table", 2, 40).await;
    let app = testkit::unique_name("app-single-table");
    let ddb = aws.dynamodb_client();
    let store = DynamoDbLeaseStore::new(ddb.clone(), &app);
    store.create_table_if_not_exists().await.unwrap();
    // What KCL 3.5 left in the table: its migration item and a (stopped) Java worker's row.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let items: Vec<HashMap<String, AttributeValue>> = vec![
        HashMap::from([
            ("leaseKey".into(), s("Migration3.0")),
            ("cv".into(), s("CLIENT_VERSION_3X")),
            ("mb".into(), s("java-worker-1")),
            ("mts".into(), n("1767225600123")),
            ("entityType".into(), s("CLIENT_VERSION_MIGRATION")),
        ]),
        HashMap::from([
            ("leaseKey".into(), s("java-worker-1")),
            ("entityType".into(), s("WORKER_METRIC_STATS")),
            ("lut".into(), n(&(now_s - 3600).to_string())),
            ("sts".into(), AttributeValue::M(HashMap::new())),
            ("opr".into(), AttributeValue::M(HashMap::new())),
            ("sup".into(), n("1")),
            ("slu".into(), n(&(now_s - 3600).to_string())),
        ]),
    ];
    for item in &items {
        ddb.put_item()
            .table_name(&app)
            .set_item(Some(item.clone()))
            .send()
            .await
            .unwrap();
    }

    let journal = Journal::default();
    let w = start_worker(
        &aws,
        config(&app, &stream, "rust-1")
            .fleet(FleetConfig::default())
            .build()
            .unwrap(),
        &journal,
        Behavior {
            checkpoint_every_batch: true,
            ..Behavior::default()
        },
    );
    wait_for(Duration::from_secs(60), "every record delivered", || {
        journal.distinct_payloads().len() == put.len()
    })
    .await;

    // Scans count only the leases.
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert!(leases.iter().all(|l| l.owner.as_deref() == Some("rust-1")));
    assert_eq!(store.list_leases_consistent().await.unwrap().len(), 2);
    // The worker leads with its lock and metrics row in the lease table, as KCL 3.5 would.
    let get = |key: &str| {
        let ddb = ddb.clone();
        let (app, key) = (app.clone(), key.to_string());
        async move {
            ddb.get_item()
                .table_name(&app)
                .key("leaseKey", s(&key))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
        }
    };
    let leader = get("Leader")
        .await
        .expect("the worker's lock is in the lease table");
    assert_eq!(leader.get("ownerName"), Some(&s("rust-1")));
    assert_eq!(leader.get("entityType"), Some(&s("LEADER")));
    let row = get("rust-1").await.expect("the worker's metrics row");
    assert_eq!(row.get("entityType"), Some(&s("WORKER_METRIC_STATS")));
    // Every item that is not a lease is still there, unchanged.
    for item in &items {
        let key = item["leaseKey"].as_s().unwrap();
        assert_eq!(get(key).await.as_ref(), Some(item), "{key} kept as written");
    }
    // No legacy table was created for a single-table fleet.
    let legacy = ddb
        .describe_table()
        .table_name(format!("{app}-CoordinatorState"))
        .send()
        .await;
    assert!(legacy.is_err(), "no <app>-CoordinatorState table");
    w.stop().await;
    // Leaving, it released the lock and deleted its own row, and nothing else.
    assert!(get("Leader").await.is_none(), "lock released");
    assert!(get("rust-1").await.is_none(), "its metrics row deleted");
    for item in &items {
        let key = item["leaseKey"].as_s().unwrap();
        assert_eq!(get(key).await.as_ref(), Some(item), "{key} kept");
    }
}
