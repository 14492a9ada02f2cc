//! [`FleetStore`] on DynamoDB, in the tables and item formats of the Java KCL 3.x.
//!
//! | item | legacy layout (KCL 3.0–3.4, and 3.5 in a fleet created by them) | single-table layout (KCL 3.5) |
//! |---|---|---|
//! | `Migration3.0` | `<app>-CoordinatorState`, key `key` | lease table, key `leaseKey` |
//! | `Leader` (the lock) | `<app>-CoordinatorState`, key `key` | lease table, key `leaseKey` |
//! | one metrics row per worker | `<app>-WorkerMetricStats`, key `wid` | lease table, key `leaseKey` = worker id |
//!
//! Every item also carries `entityType` (`CLIENT_VERSION_MIGRATION`, `LEADER`,
//! `WORKER_METRIC_STATS`), as KCL 3.5 writes it, so lease scans skip it.
//!
//! The layout is the Java KCL 3.5's choice: legacy while `<app>-CoordinatorState` exists
//! (unless its `TableMigration3.5` item says `COMPLETE`), else single-table. A fleet this
//! library starts in 3.x mode creates the legacy tables, which every 3.x version of the Java
//! KCL reads (3.5 included); a 3.0–3.4 worker would not find items kept in the lease table.

use super::store::{FleetStore, FleetStoreError, LockItem, MigrationState, WorkerMetricStats};
use super::ClientVersion;
use crate::aws::AwsError;
use crate::error::Cause;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// Key of the client-version migration item.
pub const MIGRATION_KEY: &str = "Migration3.0";
/// Key of the leader's lock item.
pub const LEADER_KEY: &str = "Leader";
/// Key of KCL 3.5's table-migration item (in the legacy table).
pub const TABLE_MIGRATION_KEY: &str = "TableMigration3.5";

/// Where the fleet's items are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `<app>-CoordinatorState` and `<app>-WorkerMetricStats`.
    Legacy,
    /// The lease table.
    SingleTable,
}

/// The fleet items of one application in DynamoDB, in the tables and item formats of the Java
/// KCL 3.x:
///
/// | item | legacy layout (KCL 3.0–3.4, and 3.5 in a fleet created by them) | single-table layout (KCL 3.5) |
/// |---|---|---|
/// | `Migration3.0` | `<app>-CoordinatorState`, key `key` | lease table, key `leaseKey` |
/// | `Leader` (the lock) | `<app>-CoordinatorState`, key `key` | lease table, key `leaseKey` |
/// | one metrics row per worker | `<app>-WorkerMetricStats`, key `wid` | lease table, key `leaseKey` = worker id |
///
/// Every item also carries `entityType` (`CLIENT_VERSION_MIGRATION`, `LEADER`,
/// `WORKER_METRIC_STATS`), as KCL 3.5 writes it, so that lease scans skip it. The layout is
/// the Java KCL 3.5's choice: legacy while `<app>-CoordinatorState` exists (unless its
/// `TableMigration3.5` item says `COMPLETE`), else single-table. A fleet this library starts
/// in 3.x mode gets the legacy tables, which every 3.x version of the Java KCL reads.
#[derive(Debug)]
pub struct DynamoDbFleetStore {
    client: aws_sdk_dynamodb::Client,
    lease_table: String,
    coordinator_table: String,
    metrics_table: String,
    request_timeout: Duration,
    /// Decided once the fleet exists (a legacy table, or a fleet item in the lease table).
    layout: Mutex<Option<Layout>>,
    /// Whether an access-denied answer for the coordinator-state table was logged.
    denied_reported: AtomicBool,
    /// Whether an access-denied answer for the coordinator-state table means "absent".
    denied_as_absent: bool,
}

impl DynamoDbFleetStore {
    /// The store of the application whose lease table is `lease_table`, with the Java KCL's
    /// other tables (`coordinatorStateTableName`, `workerMetricsTableName`).
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        lease_table: impl Into<String>,
        coordinator_table: impl Into<String>,
        metrics_table: impl Into<String>,
    ) -> Self {
        DynamoDbFleetStore {
            client,
            lease_table: lease_table.into(),
            coordinator_table: coordinator_table.into(),
            metrics_table: metrics_table.into(),
            request_timeout: crate::lease::dynamodb::DEFAULT_REQUEST_TIMEOUT,
            layout: Mutex::new(None),
            denied_reported: AtomicBool::new(false),
            denied_as_absent: true,
        }
    }

    /// Whether an access-denied answer when reading the coordinator-state table counts as
    /// "no KCL 3.x fleet" (with a warning), as suits a worker of
    /// [`ClientVersionConfig::Auto`](super::ClientVersionConfig::Auto) whose role may lack the
    /// permission, or is an error (`false`), as suits a worker configured for a 3.x fleet,
    /// which must not quietly run another protocol than the fleet's. Default `true`; the lease
    /// store's [`fleet_store`](crate::lease::LeaseStore::fleet_store) sets `false` for every
    /// configuration but `Auto`.
    pub fn with_access_denied_as_absent(mut self, absent: bool) -> Self {
        self.denied_as_absent = absent;
        self
    }

    /// Bound every request by `timeout`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn err(&self, operation: &'static str, table: &str, cause: Cause) -> FleetStoreError {
        FleetStoreError {
            operation,
            table: table.to_string(),
            cause,
        }
    }

    /// One request with the timeout; `Ok(None)` when its condition failed.
    async fn call<T, E, F>(
        &self,
        operation: &'static str,
        table: &str,
        fut: F,
    ) -> Result<Option<T>, FleetStoreError>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => Err(self.err(operation, table, Cause::Timeout(self.request_timeout))),
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) => {
                let e = AwsError::from_sdk(e);
                if e.is_conditional_check_failed() {
                    Ok(None)
                } else {
                    Err(self.err(operation, table, Cause::Aws(e)))
                }
            }
        }
    }

    /// The layout, if the fleet exists; found out (and remembered) here.
    async fn find_layout(&self) -> Result<Option<Layout>, FleetStoreError> {
        if let Some(l) = *self.layout.lock().expect("layout lock") {
            return Ok(Some(l));
        }
        let found = match self.table_migration().await {
            Ok(table_migration) => {
                let complete = table_migration.as_deref() == Some("COMPLETE");
                Some(if complete {
                    Layout::SingleTable
                } else {
                    Layout::Legacy
                })
            }
            Err(e) if is_missing_table(&e) || (is_access_denied(&e) && self.denied_as_absent) => {
                if is_access_denied(&e) && !self.denied_reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(table = %self.coordinator_table, error = %e, "cannot read the KCL 3.x coordinator-state table (access denied): treating it as absent. If Java KCL 3.x workers share this application, allow GetItem, PutItem, UpdateItem, DeleteItem and Scan on it and on the worker-metrics table, or this worker cannot join their fleet");
                }
                let item = self
                    .get(
                        "migration_state",
                        &self.lease_table,
                        "leaseKey",
                        MIGRATION_KEY,
                    )
                    .await?;
                item.map(|_| Layout::SingleTable)
            }
            Err(e) => return Err(e),
        };
        if let Some(l) = found {
            tracing::info!(layout = ?l, coordinator_table = %self.coordinator_table, lease_table = %self.lease_table, "KCL 3.x fleet items found");
            *self.layout.lock().expect("layout lock") = Some(l);
        }
        Ok(found)
    }

    /// The layout of a fleet that must exist (after [`FleetStore::prepare_for_3x`]).
    async fn layout(&self) -> Result<Layout, FleetStoreError> {
        Ok(self.find_layout().await?.unwrap_or(Layout::Legacy))
    }

    /// The table and key attribute of the coordinator items.
    async fn coordinator(&self) -> Result<(&str, &'static str), FleetStoreError> {
        Ok(match self.layout().await? {
            Layout::Legacy => (&self.coordinator_table, "key"),
            Layout::SingleTable => (&self.lease_table, "leaseKey"),
        })
    }

    /// The table and key attribute of the metrics rows.
    async fn metrics(&self) -> Result<(&str, &'static str, Layout), FleetStoreError> {
        let layout = self.layout().await?;
        Ok(match layout {
            Layout::Legacy => (&self.metrics_table, "wid", layout),
            Layout::SingleTable => (&self.lease_table, "leaseKey", layout),
        })
    }

    async fn get(
        &self,
        operation: &'static str,
        table: &str,
        pk: &str,
        key: &str,
    ) -> Result<Option<Item>, FleetStoreError> {
        let fut = self
            .client
            .get_item()
            .table_name(table)
            .key(pk, s(key))
            .consistent_read(true)
            .send();
        let out = self.call(operation, table, fut).await?;
        Ok(out.and_then(|o| o.item))
    }

    /// Create `table` (key `pk`) and wait until it is active; true when this call created it
    /// (false: it existed).
    async fn create_table(&self, table: &str, pk: &str) -> Result<bool, FleetStoreError> {
        const OP: &str = "prepare_for_3x";
        tracing::info!(table, "creating a KCL 3.x table (on-demand billing)");
        let create = self
            .client
            .create_table()
            .table_name(table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(pk)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key schema"),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(pk)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute definition"),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send();
        let created = match tokio::time::timeout(self.request_timeout, create).await {
            Err(_) => return Err(self.err(OP, table, Cause::Timeout(self.request_timeout))),
            Ok(Ok(_)) => true,
            Ok(Err(e)) => match AwsError::from_sdk(e) {
                e if e.is_resource_in_use() => false,
                e => return Err(self.err(OP, table, Cause::Aws(e))),
            },
        };
        for _ in 0..600 {
            let out = self.client.describe_table().table_name(table).send();
            let out = self.call(OP, table, out).await?;
            let status = out.and_then(|o| o.table).and_then(|t| t.table_status);
            if status == Some(TableStatus::Active) {
                return Ok(created);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(self.err(
            OP,
            table,
            Cause::BadAnswer("the table did not become active within 10 minutes".into()),
        ))
    }
}

impl DynamoDbFleetStore {
    /// The metrics rows in `table` (key `pk`; in the lease table, only its metrics items).
    async fn scan_metrics(
        &self,
        table: &str,
        pk: &str,
        layout: Layout,
    ) -> Result<Vec<WorkerMetricStats>, FleetStoreError> {
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take());
            if layout == Layout::SingleTable {
                req = req
                    .filter_expression("#et = :et")
                    .expression_attribute_names("#et", "entityType")
                    .expression_attribute_values(":et", s("WORKER_METRIC_STATS"));
            }
            let out = self
                .call("worker_metrics", table, req.send())
                .await?
                .expect("scan has no condition");
            rows.extend(out.items().iter().filter_map(|i| item_to_metrics(pk, i)));
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(rows),
            }
        }
    }

    /// KCL 3.5's table-migration status (`tm` of the `TableMigration3.5` item in the
    /// coordinator-state table), if a migration was begun.
    async fn table_migration(&self) -> Result<Option<String>, FleetStoreError> {
        let item = self
            .get(
                "migration_state",
                &self.coordinator_table,
                "key",
                TABLE_MIGRATION_KEY,
            )
            .await?;
        Ok(item.and_then(|i| get_s(&i, "tm").map(str::to_string)))
    }

    /// Delete `table` (one this worker created and nothing wrote to).
    async fn delete_table(&self, table: &str) -> Result<(), FleetStoreError> {
        let fut = self.client.delete_table().table_name(table).send();
        match self.call("prepare_for_3x", table, fut).await {
            Err(e) if is_missing_table(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The newest row of each worker.
fn newest_per_worker(rows: impl IntoIterator<Item = WorkerMetricStats>) -> Vec<WorkerMetricStats> {
    let mut by: BTreeMap<String, WorkerMetricStats> = BTreeMap::new();
    for row in rows {
        match by.get(&row.worker_id) {
            Some(have) if have.last_update_s >= row.last_update_s => {}
            _ => {
                by.insert(row.worker_id.clone(), row);
            }
        }
    }
    by.into_values().collect()
}

fn is_missing_table(e: &FleetStoreError) -> bool {
    matches!(&e.cause, Cause::Aws(a) if a.is_resource_not_found())
}

fn is_access_denied(e: &FleetStoreError) -> bool {
    matches!(&e.cause, Cause::Aws(a) if a.code() == Some("AccessDeniedException"))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.split('.').next()?.parse().ok())
}

fn bad(what: &str, item: &Item) -> Cause {
    Cause::BadAnswer(format!("{what}: unreadable item {item:?}"))
}

fn migration_to_item(pk: &str, state: &MigrationState) -> Item {
    let mut item = Item::new();
    item.insert(pk.into(), s(MIGRATION_KEY));
    item.insert("cv".into(), s(state.client_version.as_str()));
    item.insert("mb".into(), s(&state.modified_by));
    item.insert("mts".into(), n(state.modified_at_ms));
    if !state.history.is_empty() {
        let h = state
            .history
            .iter()
            .map(|(cv, mb, mts)| {
                AttributeValue::M(HashMap::from([
                    ("cv".to_string(), s(cv)),
                    ("mb".to_string(), s(mb)),
                    ("mts".to_string(), n(mts)),
                ]))
            })
            .collect();
        item.insert("h".into(), AttributeValue::L(h));
    }
    item.insert("entityType".into(), s("CLIENT_VERSION_MIGRATION"));
    item
}

/// Read a `Migration3.0` item.
pub(crate) fn item_to_migration(item: &Item) -> Option<MigrationState> {
    let history = match item.get("h") {
        Some(AttributeValue::L(l)) => l
            .iter()
            .filter_map(|v| {
                let m = v.as_m().ok()?;
                Some((
                    get_s(m, "cv")?.to_string(),
                    get_s(m, "mb").unwrap_or_default().to_string(),
                    get_u64(m, "mts").unwrap_or(0),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(MigrationState {
        client_version: ClientVersion::parse(get_s(item, "cv")?),
        modified_by: get_s(item, "mb").unwrap_or_default().to_string(),
        modified_at_ms: get_u64(item, "mts").unwrap_or(0),
        history,
    })
}

fn lock_to_item(pk: &str, lock: &LockItem) -> Item {
    HashMap::from([
        (pk.to_string(), s(LEADER_KEY)),
        ("ownerName".to_string(), s(&lock.owner)),
        (
            "leaseDuration".to_string(),
            s(lock.lease_duration.as_millis().to_string()),
        ),
        ("recordVersionNumber".to_string(), s(&lock.record_version)),
        ("entityType".to_string(), s("LEADER")),
    ])
}

/// Read a `Leader` item; `None` for one the lock client marked released.
pub(crate) fn item_to_lock(item: &Item) -> Option<LockItem> {
    if get_s(item, "isReleased") == Some("1") {
        return None;
    }
    let duration = get_s(item, "leaseDuration")
        .or_else(|| {
            item.get("leaseDuration")
                .and_then(|v| v.as_n().ok())
                .map(String::as_str)
        })
        .and_then(|v| v.parse::<u64>().ok())?;
    Some(LockItem {
        owner: get_s(item, "ownerName")?.to_string(),
        lease_duration: Duration::from_millis(duration),
        record_version: get_s(item, "recordVersionNumber")?.to_string(),
    })
}

fn numbers(map: &BTreeMap<String, Vec<f64>>) -> AttributeValue {
    AttributeValue::M(
        map.iter()
            .map(|(k, v)| {
                let list = v.iter().map(n).collect();
                (k.clone(), AttributeValue::L(list))
            })
            .collect(),
    )
}

fn read_numbers(item: &Item, name: &str) -> BTreeMap<String, Vec<f64>> {
    let Some(AttributeValue::M(m)) = item.get(name) else {
        return BTreeMap::new();
    };
    m.iter()
        .map(|(k, v)| {
            let values = match v {
                AttributeValue::L(l) => l
                    .iter()
                    .filter_map(|x| x.as_n().ok()?.parse().ok())
                    .collect(),
                _ => Vec::new(),
            };
            (k.clone(), values)
        })
        .collect()
}

fn metrics_to_item(pk: &str, row: &WorkerMetricStats) -> Item {
    HashMap::from([
        (pk.to_string(), s(&row.worker_id)),
        ("lut".to_string(), n(row.last_update_s)),
        ("sts".to_string(), numbers(&row.stats)),
        ("opr".to_string(), numbers(&row.operating_range)),
        ("entityType".to_string(), s("WORKER_METRIC_STATS")),
    ])
}

/// Read a metrics row keyed by `pk`.
pub(crate) fn item_to_metrics(pk: &str, item: &Item) -> Option<WorkerMetricStats> {
    Some(WorkerMetricStats {
        worker_id: get_s(item, pk)?.to_string(),
        last_update_s: get_u64(item, "lut")?,
        stats: read_numbers(item, "sts"),
        operating_range: read_numbers(item, "opr"),
    })
}

#[async_trait]
impl FleetStore for DynamoDbFleetStore {
    async fn prepare_for_3x(&self) -> Result<(), FleetStoreError> {
        if self.find_layout().await?.is_some() {
            return Ok(());
        }
        let created = [
            (
                self.create_table(&self.coordinator_table, "key").await?,
                &self.coordinator_table,
            ),
            (
                self.create_table(&self.metrics_table, "wid").await?,
                &self.metrics_table,
            ),
        ];
        // A Java KCL 3.5 worker starting this application at the same moment found no
        // coordinator-state table and chose the single-table layout if its items are in the
        // lease table now: follow it, and delete the tables this worker just created (still
        // empty), or a later start of that worker would find them and choose the other layout.
        for key in [MIGRATION_KEY, LEADER_KEY] {
            let item = self
                .get("prepare_for_3x", &self.lease_table, "leaseKey", key)
                .await?;
            if item.is_some() {
                tracing::warn!(lease_table = %self.lease_table, item = key, "a KCL 3.5 worker created this fleet in the lease table (single-table layout) while this worker created the KCL 3.0-3.4 tables: following the lease table, and deleting the tables this worker created");
                for table in created.iter().filter(|(c, _)| *c).map(|(_, t)| t) {
                    self.delete_table(table).await?;
                }
                *self.layout.lock().expect("layout lock") = Some(Layout::SingleTable);
                return Ok(());
            }
        }
        *self.layout.lock().expect("layout lock") = Some(Layout::Legacy);
        Ok(())
    }

    async fn migration_state(&self) -> Result<Option<MigrationState>, FleetStoreError> {
        let Some(mut layout) = self.find_layout().await? else {
            return Ok(None);
        };
        if layout == Layout::Legacy && self.table_migration().await?.as_deref() == Some("COMPLETE")
        {
            // KCL 3.5 completed its table migration: its workers now read, write and lock in
            // the lease table only (and never go back).
            tracing::info!(lease_table = %self.lease_table, "KCL 3.5 moved this fleet into the lease table (table migration COMPLETE): following it");
            layout = Layout::SingleTable;
            *self.layout.lock().expect("layout lock") = Some(layout);
        }
        let (table, pk) = match layout {
            Layout::Legacy => (&self.coordinator_table, "key"),
            Layout::SingleTable => (&self.lease_table, "leaseKey"),
        };
        let mut item = self
            .get("migration_state", table, pk, MIGRATION_KEY)
            .await?;
        if item.is_none() && layout == Layout::Legacy {
            // A fleet of KCL 3.0–3.4 in the middle of KCL 3.5's table migration keeps it in the
            // lease table (Java reads both).
            item = self
                .get(
                    "migration_state",
                    &self.lease_table,
                    "leaseKey",
                    MIGRATION_KEY,
                )
                .await?;
        }
        item.map(|i| item_to_migration(&i).ok_or_else(|| bad(MIGRATION_KEY, &i)))
            .transpose()
            .map_err(|c| self.err("migration_state", table, c))
    }

    async fn create_migration_state(
        &self,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let fut = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(migration_to_item(pk, state)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", pk)
            .send();
        Ok(self
            .call("create_migration_state", table, fut)
            .await?
            .is_some())
    }

    async fn update_migration_state(
        &self,
        expected: &ClientVersion,
        state: &MigrationState,
    ) -> Result<bool, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let fut = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(migration_to_item(pk, state)))
            .condition_expression("attribute_exists(#pk) AND #cv = :expected")
            .expression_attribute_names("#pk", pk)
            .expression_attribute_names("#cv", "cv")
            .expression_attribute_values(":expected", s(expected.as_str()))
            .send();
        Ok(self
            .call("update_migration_state", table, fut)
            .await?
            .is_some())
    }

    async fn lock(&self) -> Result<Option<LockItem>, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let item = self.get("lock", table, pk, LEADER_KEY).await?;
        Ok(item.as_ref().and_then(item_to_lock))
    }

    async fn acquire_lock(
        &self,
        item: &LockItem,
        stale: Option<&str>,
    ) -> Result<bool, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let mut req = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(lock_to_item(pk, item)))
            .expression_attribute_names("#pk", pk);
        req = match stale {
            None => req.condition_expression("attribute_not_exists(#pk)"),
            Some(version) => req
                .condition_expression("attribute_exists(#pk) AND #rvn = :rvn")
                .expression_attribute_names("#rvn", "recordVersionNumber")
                .expression_attribute_values(":rvn", s(version)),
        };
        Ok(self
            .call("acquire_lock", table, req.send())
            .await?
            .is_some())
    }

    async fn heartbeat_lock(
        &self,
        item: &LockItem,
        new_version: &str,
    ) -> Result<bool, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let fut = self
            .client
            .update_item()
            .table_name(table)
            .key(pk, s(LEADER_KEY))
            .update_expression("SET #ld = :ld, #rvn = :newRvn")
            .condition_expression("attribute_exists(#pk) AND #rvn = :rvn AND #on = :on")
            .expression_attribute_names("#pk", pk)
            .expression_attribute_names("#ld", "leaseDuration")
            .expression_attribute_names("#rvn", "recordVersionNumber")
            .expression_attribute_names("#on", "ownerName")
            .expression_attribute_values(":ld", s(item.lease_duration.as_millis().to_string()))
            .expression_attribute_values(":newRvn", s(new_version))
            .expression_attribute_values(":rvn", s(&item.record_version))
            .expression_attribute_values(":on", s(&item.owner))
            .send();
        Ok(self.call("heartbeat_lock", table, fut).await?.is_some())
    }

    async fn release_lock(&self, item: &LockItem) -> Result<bool, FleetStoreError> {
        let (table, pk) = self.coordinator().await?;
        let fut = self
            .client
            .delete_item()
            .table_name(table)
            .key(pk, s(LEADER_KEY))
            .condition_expression("attribute_exists(#pk) AND #rvn = :rvn AND #on = :on")
            .expression_attribute_names("#pk", pk)
            .expression_attribute_names("#rvn", "recordVersionNumber")
            .expression_attribute_names("#on", "ownerName")
            .expression_attribute_values(":rvn", s(&item.record_version))
            .expression_attribute_values(":on", s(&item.owner))
            .send();
        Ok(self.call("release_lock", table, fut).await?.is_some())
    }

    async fn put_worker_metrics(&self, row: &WorkerMetricStats) -> Result<(), FleetStoreError> {
        let (table, pk, _) = self.metrics().await?;
        let fut = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(metrics_to_item(pk, row)))
            .send();
        self.call("put_worker_metrics", table, fut).await?;
        Ok(())
    }

    async fn worker_metrics(&self) -> Result<Vec<WorkerMetricStats>, FleetStoreError> {
        let (table, pk, layout) = self.metrics().await?;
        let mut rows = self.scan_metrics(table, pk, layout).await?;
        if layout == Layout::Legacy && self.table_migration().await?.is_some() {
            // KCL 3.5 is moving the fleet into the lease table: its workers write their rows
            // there from its PENDING state on (the others still write here), and its leader
            // reads both tables. So do we: the newest row of each worker counts.
            let moved = self
                .scan_metrics(&self.lease_table, "leaseKey", Layout::SingleTable)
                .await?;
            rows = newest_per_worker(rows.into_iter().chain(moved));
        }
        Ok(rows)
    }

    async fn delete_worker_metrics(
        &self,
        worker_id: &str,
        last_update_s: u64,
    ) -> Result<bool, FleetStoreError> {
        let (table, pk, _) = self.metrics().await?;
        let fut = self
            .client
            .delete_item()
            .table_name(table)
            .key(pk, s(worker_id))
            .condition_expression("#lut = :lut AND attribute_exists(#pk)")
            .expression_attribute_names("#lut", "lut")
            .expression_attribute_names("#pk", pk)
            .expression_attribute_values(":lut", n(last_update_s))
            .send();
        Ok(self
            .call("delete_worker_metrics", table, fut)
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::dynamodb::{is_lease_item, item_to_lease, lease_to_item};

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    fn list(values: &[&str]) -> AttributeValue {
        AttributeValue::L(values.iter().map(|v| n(v)).collect())
    }

    /// The `Leader` item KCL 3.5 keeps in the lease table: the lock client's attributes
    /// (`leaseDuration` a string) plus `entityType` (`DynamoDBLockBasedLeaderDecider`,
    /// `AmazonDynamoDBLockClient` 1.4.0).
    fn leader_3_5() -> Item {
        HashMap::from([
            ("leaseKey".into(), s("Leader")),
            ("ownerName".into(), s("java-worker-1")),
            ("leaseDuration".into(), s("120000")),
            (
                "recordVersionNumber".into(),
                s("0b8a6f38-4f0e-4a8d-9a5e-3c1f0c8f2d11"),
            ),
            ("entityType".into(), s("LEADER")),
        ])
    }

    /// The `Migration3.0` item of KCL 3.5 in the lease table (`MigrationState`).
    fn migration_3_5() -> Item {
        HashMap::from([
            ("leaseKey".into(), s("Migration3.0")),
            ("cv".into(), s("CLIENT_VERSION_3X_WITH_ROLLBACK")),
            ("mb".into(), s("java-worker-1")),
            ("mts".into(), n("1767225600123")),
            (
                "h".into(),
                AttributeValue::L(vec![AttributeValue::M(HashMap::from([
                    ("cv".into(), s("CLIENT_VERSION_UPGRADE_FROM_2X")),
                    ("mb".into(), s("java-worker-2")),
                    ("mts".into(), n("1767225000000")),
                ]))]),
            ),
            ("entityType".into(), s("CLIENT_VERSION_MIGRATION")),
        ])
    }

    /// A `WorkerMetricStats` row of KCL 3.5 in the lease table (the worker id is the key; `sup`
    /// and `slu` are 3.5's table-migration support code).
    fn metrics_3_5() -> Item {
        HashMap::from([
            ("leaseKey".into(), s("java-worker-1")),
            ("entityType".into(), s("WORKER_METRIC_STATS")),
            ("lut".into(), n("1767225630")),
            (
                "sts".into(),
                AttributeValue::M(HashMap::from([(
                    "C".to_string(),
                    list(&["41.2", "40.9", "-1"]),
                )])),
            ),
            (
                "opr".into(),
                AttributeValue::M(HashMap::from([("C".to_string(), list(&["100"]))])),
            ),
            ("sup".into(), n("1")),
            ("slu".into(), n("1767225630")),
        ])
    }

    #[test]
    fn reads_the_items_kcl_3_5_keeps_in_the_lease_table_and_never_as_leases() {
        for item in [leader_3_5(), migration_3_5(), metrics_3_5()] {
            assert!(!is_lease_item(&item), "{item:?} is not a lease");
        }
        let lock = item_to_lock(&leader_3_5()).unwrap();
        assert_eq!(lock.owner, "java-worker-1");
        assert_eq!(lock.lease_duration, Duration::from_secs(120));
        assert_eq!(lock.record_version, "0b8a6f38-4f0e-4a8d-9a5e-3c1f0c8f2d11");
        let m = item_to_migration(&migration_3_5()).unwrap();
        assert_eq!(m.client_version, ClientVersion::V3xWithRollback);
        assert!(m.client_version.is_3x());
        assert_eq!(m.modified_at_ms, 1_767_225_600_123);
        assert_eq!(
            m.history,
            vec![(
                "CLIENT_VERSION_UPGRADE_FROM_2X".to_string(),
                "java-worker-2".to_string(),
                1_767_225_000_000
            )]
        );
        let row = item_to_metrics("leaseKey", &metrics_3_5()).unwrap();
        assert_eq!(row.worker_id, "java-worker-1");
        assert_eq!(row.last_update_s, 1_767_225_630);
        assert_eq!(row.stats["C"], vec![41.2, 40.9, -1.0]);
        assert!(
            !row.is_valid(),
            "its last CPU sample failed: the Java leader skips it"
        );
        // A lock the lock client marked released is no lock.
        let mut released = leader_3_5();
        released.insert("isReleased".into(), s("1"));
        assert_eq!(item_to_lock(&released), None);
    }

    #[test]
    fn writes_the_items_as_the_java_kcl_does() {
        let lock = item_to_lock(&leader_3_5()).unwrap();
        assert_eq!(lock_to_item("leaseKey", &lock), leader_3_5());
        let m = item_to_migration(&migration_3_5()).unwrap();
        assert_eq!(migration_to_item("leaseKey", &m), migration_3_5());
        // In the legacy table the key attribute is `key`.
        assert_eq!(
            migration_to_item("key", &m).get("key"),
            Some(&s("Migration3.0"))
        );
        // Our metrics rows: no metric (balanced by throughput), no `sup` (this worker does not
        // take part in KCL 3.5's table migration, which then waits: the safe side).
        let row = WorkerMetricStats::throughput_only("rust-1");
        let item = metrics_to_item("wid", &row);
        assert_eq!(item.get("wid"), Some(&s("rust-1")));
        assert_eq!(item.get("sts"), Some(&AttributeValue::M(HashMap::new())));
        assert_eq!(item.get("opr"), Some(&AttributeValue::M(HashMap::new())));
        assert_eq!(item.get("entityType"), Some(&s("WORKER_METRIC_STATS")));
        assert!(!item.contains_key("sup"));
        assert!(row.is_valid());
        assert_eq!(item_to_metrics("wid", &item), Some(row));
    }

    #[test]
    fn a_3x_lease_round_trips_with_its_hand_off_and_throughput() {
        let mut item = HashMap::from([
            ("leaseKey".into(), s("shardId-000000000001")),
            ("leaseOwner".into(), s("worker-b")),
            ("checkpointOwner".into(), s("worker-a")),
            ("leaseCounter".into(), n("12")),
            ("checkpoint".into(), s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber".into(), n("0")),
            ("ownerSwitchesSinceCheckpoint".into(), n("0")),
            ("throughputKBps".into(), n("12.345678")),
        ]);
        let lease = item_to_lease(&item).unwrap();
        assert_eq!(lease.checkpoint_owner.as_deref(), Some("worker-a"));
        assert_eq!(lease.actual_owner(), Some("worker-a"));
        assert!(lease.is_owned_by("worker-a") && !lease.is_owned_by("worker-b"));
        assert_eq!(lease.throughput.map(|t| t.kbps()), Some(12.345678));
        assert_eq!(lease_to_item(&lease), item);
        item.insert("entityType".into(), s("LEASE"));
        assert!(is_lease_item(&item));
    }
}

/// Answers that real services cannot be made to give on cue (access denied, an item that
/// appears between two reads), from an SDK client whose HTTP client answers each request from
/// a script (no service needed).
#[cfg(test)]
mod scripted {
    use super::*;
    use crate::fleet::{ClientVersionConfig, FleetConfig};
    use crate::lease::{DynamoDbLeaseStore, LeaseStore};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use std::sync::Arc;

    /// (operation, request body) of every request.
    type Calls = Arc<std::sync::Mutex<Vec<(String, String)>>>;
    /// The answer (status, body) to a request, from its operation (`GetItem`, ...) and body.
    type Script = Arc<dyn Fn(&str, &str) -> (u16, String) + Send + Sync>;

    #[derive(Clone)]
    struct Scripted {
        script: Script,
        calls: Calls,
    }

    impl std::fmt::Debug for Scripted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Scripted")
        }
    }

    impl HttpConnector for Scripted {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let op = request
                .headers()
                .get("x-amz-target")
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or_default()
                .to_string();
            let body =
                String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
            let (status, answer) = (self.script)(&op, &body);
            self.calls.lock().expect("calls").push((op, body));
            let response =
                HttpResponse::new(status.try_into().expect("status"), SdkBody::from(answer));
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    impl HttpClient for Scripted {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    fn error(code: &str) -> (u16, String) {
        (
            400,
            format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"scripted"}}"#
            ),
        )
    }

    fn ok(body: &str) -> (u16, String) {
        (200, body.to_string())
    }

    /// The fleet store of application `app` (lease table `app`), on the script.
    fn fleet_store(
        version: ClientVersionConfig,
        script: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> (Arc<dyn FleetStore>, Calls) {
        let calls = Calls::default();
        let http = Scripted {
            script: Arc::new(script),
            calls: calls.clone(),
        };
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::for_tests())
            .http_client(http)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let config = FleetConfig::default().with_client_version_config(version);
        let store = DynamoDbLeaseStore::new(client, "app")
            .fleet_store("app", &config)
            .expect("a DynamoDB lease store has a fleet store");
        (store, calls)
    }

    /// Every request naming the coordinator-state table is denied; any other `GetItem` finds
    /// nothing.
    fn denies_coordinator_table(_: &str, body: &str) -> (u16, String) {
        if body.contains("app-CoordinatorState") {
            error("AccessDeniedException")
        } else {
            ok("{}")
        }
    }

    #[tokio::test]
    async fn an_auto_worker_reads_a_denied_coordinator_table_as_no_fleet() {
        let (store, _) = fleet_store(ClientVersionConfig::Auto, denies_coordinator_table);
        assert_eq!(store.migration_state().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_worker_configured_for_a_3x_fleet_fails_on_a_denied_coordinator_table() {
        for version in [
            ClientVersionConfig::V3x,
            ClientVersionConfig::CompatibleWith2x,
        ] {
            let (store, _) = fleet_store(version, denies_coordinator_table);
            let e = store
                .migration_state()
                .await
                .expect_err("access denied must not read as no fleet");
            let text = e.to_string();
            assert!(
                text.contains("AccessDenied") && text.contains("app-CoordinatorState"),
                "{version:?}: {text}"
            );
        }
    }

    /// A new application, started by this worker and a Java KCL 3.5 worker at once: both find
    /// no coordinator-state table; Java chooses the single-table layout and writes its
    /// `Migration3.0` item into the lease table while this worker creates the 3.0-3.4 tables.
    /// This worker must end in Java's layout, with the tables it created deleted.
    #[tokio::test]
    async fn a_fleet_created_at_once_by_kcl_3_5_in_the_lease_table_wins() {
        let java_item = r#"{"Item":{"leaseKey":{"S":"Migration3.0"},"cv":{"S":"CLIENT_VERSION_3X"},"mb":{"S":"java-1"},"mts":{"N":"1700000000000"},"entityType":{"S":"CLIENT_VERSION_MIGRATION"}}}"#;
        // Java writes its item once this worker has begun creating its tables.
        let creating = std::sync::atomic::AtomicBool::new(false);
        let (store, calls) = fleet_store(ClientVersionConfig::V3x, move |op, body| {
            let coordinator = body.contains("app-CoordinatorState");
            let table = |name: &str, status: &str| {
                format!(r#"{{"TableName":"{name}","TableStatus":"{status}"}}"#)
            };
            match op {
                "GetItem" if coordinator => error("ResourceNotFoundException"),
                // The lease table: nothing at the first look, Java's item from then on.
                "GetItem" if body.contains("Migration3.0") && creating.load(Ordering::SeqCst) => {
                    ok(java_item)
                }
                "GetItem" => ok("{}"),
                "CreateTable" => {
                    creating.store(true, Ordering::SeqCst);
                    ok(&format!(
                        r#"{{"TableDescription":{}}}"#,
                        table("t", "CREATING")
                    ))
                }
                "DescribeTable" => ok(&format!(r#"{{"Table":{}}}"#, table("t", "ACTIVE"))),
                "DeleteTable" => ok(&format!(
                    r#"{{"TableDescription":{}}}"#,
                    table("t", "DELETING")
                )),
                other => panic!("unexpected {other}"),
            }
        });
        assert_eq!(store.migration_state().await.unwrap(), None);
        store.prepare_for_3x().await.unwrap();
        let state = store.migration_state().await.unwrap().expect("Java's item");
        assert_eq!(state.modified_by, "java-1");
        let calls = calls.lock().unwrap().clone();
        let of = |op: &str| -> Vec<String> {
            calls
                .iter()
                .filter(|(o, _)| o == op)
                .map(|(_, b)| b.clone())
                .collect()
        };
        let created = of("CreateTable");
        let deleted = of("DeleteTable");
        assert_eq!(created.len(), 2);
        assert_eq!(
            deleted.len(),
            2,
            "the tables this worker created are deleted"
        );
        for name in ["app-CoordinatorState", "app-WorkerMetricStats"] {
            assert!(
                deleted.iter().any(|b| b.contains(name)),
                "{name} not deleted"
            );
        }
        // The last read was of the lease table.
        let last = of("GetItem").pop().unwrap();
        assert!(last.contains(r#""TableName":"app""#), "{last}");
    }

    /// A fleet of KCL 3.0-3.4 tables in the middle of KCL 3.5's table migration: metrics rows
    /// are in both tables (the newest of each worker counts); once the migration is
    /// `COMPLETE`, everything is read from the lease table.
    #[tokio::test]
    async fn a_fleet_moving_into_the_lease_table_is_read_from_both_then_from_it() {
        let status = Arc::new(std::sync::Mutex::new("PENDING"));
        let script_status = status.clone();
        let (store, _) = fleet_store(ClientVersionConfig::V3x, move |op, body| {
            let row = |pk: &str, w: &str, lut: u64| {
                format!(
                    r#"{{"{pk}":{{"S":"{w}"}},"lut":{{"N":"{lut}"}},"entityType":{{"S":"WORKER_METRIC_STATS"}}}}"#
                )
            };
            let legacy = body.contains("app-CoordinatorState");
            let lease_table = body.contains(r#""TableName":"app""#);
            match op {
                "GetItem" if legacy && body.contains("TableMigration3.5") => ok(&format!(
                    r#"{{"Item":{{"key":{{"S":"TableMigration3.5"}},"tm":{{"S":"{}"}}}}}}"#,
                    script_status.lock().unwrap()
                )),
                "GetItem" if body.contains("Migration3.0") => {
                    let (pk, by) = if legacy {
                        ("key", "legacy")
                    } else {
                        ("leaseKey", "lease-table")
                    };
                    ok(&format!(
                        r#"{{"Item":{{"{pk}":{{"S":"Migration3.0"}},"cv":{{"S":"CLIENT_VERSION_3X"}},"mb":{{"S":"{by}"}},"mts":{{"N":"1"}}}}}}"#
                    ))
                }
                "Scan" if body.contains("app-WorkerMetricStats") => ok(&format!(
                    r#"{{"Items":[{},{}],"Count":2}}"#,
                    row("wid", "w1", 100),
                    row("wid", "w3", 300)
                )),
                "Scan" if lease_table => ok(&format!(
                    r#"{{"Items":[{},{}],"Count":2}}"#,
                    row("leaseKey", "w1", 150),
                    row("leaseKey", "w2", 200)
                )),
                other => panic!("unexpected {other}: {body}"),
            }
        });
        let state = store.migration_state().await.unwrap().unwrap();
        assert_eq!(state.modified_by, "legacy");
        let mut rows: Vec<(String, u64)> = store
            .worker_metrics()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.worker_id, r.last_update_s))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [("w1".into(), 150), ("w2".into(), 200), ("w3".into(), 300)]
        );
        *status.lock().unwrap() = "COMPLETE";
        let state = store.migration_state().await.unwrap().unwrap();
        assert_eq!(state.modified_by, "lease-table");
        let rows: Vec<String> = store
            .worker_metrics()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.worker_id)
            .collect();
        assert_eq!(rows, ["w1", "w2"]);
    }
}
