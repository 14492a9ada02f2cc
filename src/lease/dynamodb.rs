//! [`LeaseStore`] on a DynamoDB table in the Java KCL 2.x/3.x item format.
//!
//! The item format is documented on [`DynamoDbLeaseStore`].

use super::{
    HashKeyRange, Lease, LeaseOp, LeaseStore, LeaseStoreCause, LeaseStoreError, StreamShard,
    Throughput, WriteOutcome,
};
use crate::aws::AwsError;
use crate::checkpoint::{Checkpoint, InvalidSequenceNumber};
use crate::error::Cause;
use crate::stream::{StreamIdentifier, StreamIdentifierError};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ProvisionedThroughput, ReturnValue, ScalarAttributeType, TableStatus,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Attribute names of the Java KCL lease item.
pub mod attr {
    /// Hash key.
    pub const LEASE_KEY: &str = "leaseKey";
    /// Owner worker id.
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// Optimistic-lock counter.
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// Checkpoint.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Checkpoint sub-sequence number.
    pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
    /// Owner switches since the last checkpoint.
    pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
    /// Prepared checkpoint.
    pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
    /// Prepared checkpoint sub-sequence number.
    pub const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
    /// Prepared checkpoint application state.
    pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
    /// Parent shard ids (string set; the singular name is the Java KCL's).
    pub const PARENT_SHARD_ID: &str = "parentShardId";
    /// Child shard ids (string set).
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    /// Start of the hash key range.
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    /// End of the hash key range.
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// KCL 3.x: outgoing owner during a graceful hand-off.
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// KCL 3.5: entity discriminator (`LEASE` for leases).
    pub const ENTITY_TYPE: &str = "entityType";
    /// Multi-stream leases: the stream, serialized `account:name:creationEpoch` (the Java
    /// KCL's name, kept "for legacy reasons").
    pub const STREAM_NAME: &str = "streamName";
    /// Multi-stream leases: the bare shard id.
    pub const SHARD_ID: &str = "shardId";
    /// KCL 3.x: the lease's throughput in KB/s, written by its owner with each renewal.
    pub const THROUGHPUT_KBPS: &str = "throughputKBps";
}

/// The KCL 3.x index of leases by owner (hash `leaseOwner`, range `leaseKey`, keys only), which
/// workers query to find the leases a leader assigned them.
pub const OWNER_INDEX: &str = "LeaseOwnerToLeaseKeyIndex";

/// Default bound on one DynamoDB request (the Java KCL's is one minute; a lease renewal that
/// takes longer than a fraction of the failover time is as good as failed).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A lease table in DynamoDB, in the Java KCL 2.x/3.x item format:
///
/// | attribute | type | meaning |
/// |---|---|---|
/// | `leaseKey` | S | hash key: the shard id |
/// | `leaseOwner` | S | worker id; absent when unowned |
/// | `leaseCounter` | N | optimistic-lock counter |
/// | `checkpoint` | S | sequence number or `TRIM_HORIZON`/`LATEST`/`AT_TIMESTAMP`/`SHARD_END` |
/// | `checkpointSubSequenceNumber` | N | KPL sub-sequence number |
/// | `ownerSwitchesSinceCheckpoint` | N | owner changes since the last checkpoint |
/// | `pendingCheckpoint`, `pendingCheckpointSubSequenceNumber` | S, N | prepared checkpoint |
/// | `pendingCheckpointState` | B | application state of the prepared checkpoint |
/// | `parentShardId` | SS | parent shard ids (omitted when none) |
/// | `childShardIds` | SS | child shard ids (omitted when none) |
/// | `startingHashKey`, `endingHashKey` | S | decimal hash key range |
///
/// Writes only ever name the attributes they change (UpdateItem), so attributes other
/// applications wrote (the Java KCL 3.x `throughputKBps`, `checkpointOwner`, `entityType`, …)
/// survive our updates. Items whose `entityType` is set to something other than `LEASE`
/// (KCL 3.5 single-table mode keeps worker metrics and locks in the same table) are skipped.
#[derive(Debug, Clone)]
pub struct DynamoDbLeaseStore {
    pub(crate) client: aws_sdk_dynamodb::Client,
    table: String,
    request_timeout: Duration,
    table_poll_interval: Duration,
    table_wait_limit: Duration,
}

type Item = HashMap<String, AttributeValue>;

impl DynamoDbLeaseStore {
    /// A store on `table` (created by [`LeaseStore::create_table_if_not_exists`] when missing).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDbLeaseStore {
            client,
            table: table.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            table_poll_interval: Duration::from_secs(1),
            table_wait_limit: Duration::from_secs(600),
        }
    }

    /// Bound every request by `timeout` (a timed-out request is a retryable error): the
    /// store waits at most this long, and the client's SDK operation and attempt timeouts
    /// become the same (see [the `aws` module](crate::aws#retries-and-timeouts-one-layer-decides)).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self.client = aws_sdk_dynamodb::Client::from_conf(
            self.client
                .config()
                .to_builder()
                .timeout_config(crate::aws::request_timeouts(timeout))
                .build(),
        );
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn err(
        &self,
        op: LeaseOp,
        key: Option<&str>,
        cause: impl Into<LeaseStoreCause>,
    ) -> LeaseStoreError {
        LeaseStoreError::new(op, &self.table, key, cause)
    }

    fn aws_err(&self, op: LeaseOp, key: Option<&str>, e: AwsError) -> LeaseStoreError {
        let cause = if e.is_resource_not_found() {
            LeaseStoreCause::TableNotFound(e)
        } else {
            LeaseStoreCause::Call(Cause::Aws(e))
        };
        self.err(op, key, cause)
    }

    fn timeout(&self, op: LeaseOp, key: Option<&str>) -> LeaseStoreError {
        self.err(op, key, Cause::Timeout(self.request_timeout))
    }

    /// Run one request with the request timeout; `Ok(None)` means the condition failed.
    async fn call<T, E, F>(
        &self,
        op: LeaseOp,
        key: Option<&str>,
        fut: F,
    ) -> Result<Option<T>, LeaseStoreError>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => Err(self.timeout(op, key)),
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) => {
                let e = AwsError::from_sdk(e);
                if e.is_conditional_check_failed() {
                    Ok(None)
                } else {
                    Err(self.aws_err(op, key, e))
                }
            }
        }
    }

    /// Every lease item, read with `consistent` read consistency (a full, paginated scan).
    async fn scan(&self, consistent: bool) -> Result<Vec<Lease>, LeaseStoreError> {
        let mut leases = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let fut = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .send();
            let out = self
                .call(LeaseOp::List, None, fut)
                .await?
                .expect("scan has no condition");
            for item in out.items() {
                if !is_lease_item(item) {
                    continue;
                }
                match item_to_lease(item) {
                    Ok(lease) => leases.push(lease),
                    Err(e) => {
                        tracing::warn!(table = %self.table, error = %e, "skipping a lease item that cannot be read")
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(leases)
    }

    fn counter_condition(lease: &Lease) -> (String, AttributeValue) {
        ("#counter = :expected".to_string(), n(lease.counter))
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The full item for a lease (used when creating it).
pub fn lease_to_item(lease: &Lease) -> Item {
    let mut item = Item::new();
    item.insert(attr::LEASE_KEY.into(), s(&lease.key));
    if let Some(owner) = &lease.owner {
        item.insert(attr::LEASE_OWNER.into(), s(owner));
    }
    item.insert(attr::LEASE_COUNTER.into(), n(lease.counter));
    item.insert(attr::CHECKPOINT.into(), s(lease.checkpoint.stored_value()));
    item.insert(
        attr::CHECKPOINT_SUB.into(),
        n(lease.checkpoint.stored_sub_sequence_number()),
    );
    item.insert(
        attr::OWNER_SWITCHES.into(),
        n(lease.owner_switches_since_checkpoint),
    );
    if let Some(p) = &lease.pending_checkpoint {
        item.insert(attr::PENDING_CHECKPOINT.into(), s(p.stored_value()));
        item.insert(
            attr::PENDING_CHECKPOINT_SUB.into(),
            n(p.stored_sub_sequence_number()),
        );
    }
    if let Some(state) = &lease.pending_checkpoint_state {
        item.insert(
            attr::PENDING_CHECKPOINT_STATE.into(),
            AttributeValue::B(Blob::new(state.clone())),
        );
    }
    if !lease.parent_shard_ids.is_empty() {
        item.insert(
            attr::PARENT_SHARD_ID.into(),
            AttributeValue::Ss(lease.parent_shard_ids.clone()),
        );
    }
    if !lease.child_shard_ids.is_empty() {
        item.insert(
            attr::CHILD_SHARD_IDS.into(),
            AttributeValue::Ss(lease.child_shard_ids.clone()),
        );
    }
    if let Some(r) = lease.hash_key_range {
        item.insert(attr::STARTING_HASH_KEY.into(), s(r.start.to_string()));
        item.insert(attr::ENDING_HASH_KEY.into(), s(r.end.to_string()));
    }
    if let Some(m) = &lease.multi_stream {
        item.insert(attr::STREAM_NAME.into(), s(m.stream.to_string()));
        item.insert(attr::SHARD_ID.into(), s(&m.shard_id));
    }
    if let Some(o) = &lease.checkpoint_owner {
        item.insert(attr::CHECKPOINT_OWNER.into(), s(o));
    }
    if let Some(t) = lease.throughput {
        item.insert(attr::THROUGHPUT_KBPS.into(), throughput_value(t));
    }
    item
}

/// `throughputKBps` as the Java KCL writes it: rounded to 6 decimals.
fn throughput_value(t: Throughput) -> AttributeValue {
    let v = format!("{:.6}", t.kbps());
    let v = v.trim_end_matches('0').trim_end_matches('.');
    AttributeValue::N(if v.is_empty() { "0".into() } else { v.into() })
}

/// Why an item could not be read as a lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The item has no `leaseKey` string attribute.
    #[error("item without a leaseKey string attribute")]
    NoLeaseKey,
    /// A number attribute holds something else than a non-negative whole number.
    #[error("item {key:?}: {attribute} = {value:?} is not a non-negative whole number")]
    NotAWholeNumber {
        /// The item's `leaseKey`.
        key: String,
        /// The attribute.
        attribute: String,
        /// What it holds.
        value: String,
    },
    /// An attribute has another type than the one expected.
    #[error("item {key:?}: {attribute} has type {found}, expected {expected}")]
    WrongType {
        /// The item's `leaseKey`.
        key: String,
        /// The attribute.
        attribute: String,
        /// The type found.
        found: String,
        /// The type expected (a DynamoDB type letter).
        expected: &'static str,
    },
    /// A checkpoint attribute is neither a sentinel nor a sequence number.
    #[error("item {key:?}: {source}")]
    BadCheckpoint {
        /// The item's `leaseKey`.
        key: String,
        /// Why the value is not a checkpoint.
        #[source]
        source: InvalidSequenceNumber,
    },
    /// A multi-stream lease's `streamName` is not `account:name:creationEpoch`, or it has
    /// only one of `streamName` and `shardId` (the Java KCL skips such items too).
    #[error("item {key:?}: {reason}")]
    BadStream {
        /// The item's `leaseKey`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A hash key attribute is not a 128-bit decimal.
    #[error("item {key:?}: {attribute} = {value:?} is not a 128-bit decimal")]
    BadHashKey {
        /// The item's `leaseKey`.
        key: String,
        /// The attribute.
        attribute: String,
        /// What it holds.
        value: String,
    },
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str, key: &str) -> Result<Option<u64>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => {
            v.parse::<u64>()
                .map(Some)
                .map_err(|_| ItemError::NotAWholeNumber {
                    key: key.into(),
                    attribute: name.into(),
                    value: v.clone(),
                })
        }
        Some(other) => Err(ItemError::WrongType {
            key: key.into(),
            attribute: name.into(),
            found: format!("{other:?}"),
            expected: "N",
        }),
    }
}

fn get_ss(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(v)) => super::sorted(v.iter().cloned()),
        Some(AttributeValue::L(v)) => {
            super::sorted(v.iter().filter_map(|x| x.as_s().ok().cloned()))
        }
        Some(AttributeValue::S(v)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

/// True when the item is a lease (no `entityType`, or `entityType = LEASE`).
pub fn is_lease_item(item: &Item) -> bool {
    get_s(item, attr::ENTITY_TYPE).is_none_or(|t| t == "LEASE")
}

/// Read an item in the Java KCL format (missing numbers default to 0, as Java tolerates them).
pub fn item_to_lease(item: &Item) -> Result<Lease, ItemError> {
    let key = get_s(item, attr::LEASE_KEY).ok_or(ItemError::NoLeaseKey)?;
    let bad = |source| ItemError::BadCheckpoint {
        key: key.into(),
        source,
    };
    let checkpoint_sub = get_n(item, attr::CHECKPOINT_SUB, key)?.unwrap_or(0);
    let checkpoint = match get_s(item, attr::CHECKPOINT) {
        Some(c) => Checkpoint::from_stored(c, checkpoint_sub).map_err(bad)?,
        None => Checkpoint::TrimHorizon,
    };
    let pending_checkpoint = match get_s(item, attr::PENDING_CHECKPOINT) {
        Some(p) => {
            let sub = get_n(item, attr::PENDING_CHECKPOINT_SUB, key)?.unwrap_or(0);
            Some(Checkpoint::from_stored(p, sub).map_err(bad)?)
        }
        None => None,
    };
    let hash = |name| -> Result<Option<u128>, ItemError> {
        get_s(item, name)
            .map(|v| {
                v.parse::<u128>().map_err(|_| ItemError::BadHashKey {
                    key: key.into(),
                    attribute: name.to_string(),
                    value: v.to_string(),
                })
            })
            .transpose()
    };
    let hash_key_range = match (hash(attr::STARTING_HASH_KEY)?, hash(attr::ENDING_HASH_KEY)?) {
        (Some(start), Some(end)) => Some(HashKeyRange { start, end }),
        _ => None,
    };
    let multi_stream = match (get_s(item, attr::STREAM_NAME), get_s(item, attr::SHARD_ID)) {
        (None, None) => None,
        (Some(stream), Some(shard_id)) => {
            let stream: StreamIdentifier =
                stream
                    .parse()
                    .map_err(|e: StreamIdentifierError| ItemError::BadStream {
                        key: key.into(),
                        reason: format!("{}: {e}", attr::STREAM_NAME),
                    })?;
            if !stream.is_multi_stream() {
                return Err(ItemError::BadStream {
                    key: key.into(),
                    reason: format!(
                        "{} = {stream:?} is not account:name:creationEpoch",
                        attr::STREAM_NAME
                    ),
                });
            }
            Some(StreamShard {
                stream,
                shard_id: shard_id.to_string(),
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ItemError::BadStream {
                key: key.into(),
                reason: format!(
                    "a multi-stream lease needs both {} and {}",
                    attr::STREAM_NAME,
                    attr::SHARD_ID
                ),
            })
        }
    };
    Ok(Lease {
        key: key.to_string(),
        owner: get_s(item, attr::LEASE_OWNER).map(str::to_string),
        counter: get_n(item, attr::LEASE_COUNTER, key)?.unwrap_or(0),
        checkpoint,
        pending_checkpoint,
        pending_checkpoint_state: item
            .get(attr::PENDING_CHECKPOINT_STATE)
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec()),
        owner_switches_since_checkpoint: get_n(item, attr::OWNER_SWITCHES, key)?.unwrap_or(0),
        parent_shard_ids: get_ss(item, attr::PARENT_SHARD_ID),
        child_shard_ids: get_ss(item, attr::CHILD_SHARD_IDS),
        hash_key_range,
        multi_stream,
        checkpoint_owner: get_s(item, attr::CHECKPOINT_OWNER).map(str::to_string),
        throughput: match item.get(attr::THROUGHPUT_KBPS) {
            Some(AttributeValue::N(v)) => v.parse().ok().and_then(Throughput::from_kbps),
            _ => None,
        },
    })
}

#[async_trait]
impl LeaseStore for DynamoDbLeaseStore {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        const OP: LeaseOp = LeaseOp::CreateTable;
        let describe = self.client.describe_table().table_name(&self.table).send();
        let exists = match tokio::time::timeout(self.request_timeout, describe).await {
            Err(_) => return Err(self.timeout(OP, None)),
            Ok(Ok(_)) => true,
            Ok(Err(e)) => match AwsError::from_sdk(e) {
                e if e.is_resource_not_found() => false,
                e => return Err(self.aws_err(OP, None, e)),
            },
        };
        if !exists {
            tracing::info!(table = %self.table, "creating lease table (on-demand billing)");
            let create = self
                .client
                .create_table()
                .table_name(&self.table)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr::LEASE_KEY)
                        .key_type(KeyType::Hash)
                        .build()
                        .expect("key schema"),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attr::LEASE_KEY)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .expect("attribute definition"),
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send();
            match tokio::time::timeout(self.request_timeout, create).await {
                Err(_) => return Err(self.timeout(OP, None)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => match AwsError::from_sdk(e) {
                    e if e.is_resource_in_use() => {}
                    e => return Err(self.aws_err(OP, None, e)),
                },
            }
        }
        let deadline = tokio::time::Instant::now() + self.table_wait_limit;
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            let status = match out {
                Ok(o) => o.table().and_then(|t| t.table_status().cloned()),
                Err(e) => match AwsError::from_sdk(e) {
                    e if e.is_resource_not_found() => None,
                    e => return Err(self.aws_err(OP, None, e)),
                },
            };
            if matches!(
                status,
                Some(TableStatus::Active) | Some(TableStatus::Updating)
            ) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.err(
                    OP,
                    None,
                    LeaseStoreCause::TableNotActive {
                        waited: self.table_wait_limit,
                        status: format!("{status:?}"),
                    },
                ));
            }
            tokio::time::sleep(self.table_poll_interval).await;
        }
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let fut = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_to_item(lease)))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", attr::LEASE_KEY)
            .send();
        Ok(self
            .call(LeaseOp::Create, Some(&lease.key), fut)
            .await?
            .is_some())
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.scan(false).await
    }

    async fn list_leases_consistent(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.scan(true).await
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        let fut = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(key))
            .consistent_read(true)
            .send();
        let out = self
            .call(LeaseOp::Get, Some(key), fut)
            .await?
            .expect("get has no condition");
        match out.item() {
            Some(item) if is_lease_item(item) => item_to_lease(item)
                .map(Some)
                .map_err(|e| self.err(LeaseOp::Get, Some(key), e)),
            _ => Ok(None),
        }
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let (mut cond, expected) = Self::counter_condition(lease);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&lease.key))
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_values(":expected", expected)
            .expression_attribute_values(":new", n(lease.counter + 1));
        // The Java KCL 3.x renewal: a hand-off the leader started makes it fail, which is how
        // the owner learns of it (unless this worker already knows: it renews its lease
        // until its processor has checkpointed).
        if lease.checkpoint_owner.is_none() {
            cond.push_str(" AND attribute_not_exists(#checkpointOwner)");
            req = req.expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER);
        }
        let expr = match lease.throughput {
            Some(t) => {
                req = req
                    .expression_attribute_names("#throughput", attr::THROUGHPUT_KBPS)
                    .expression_attribute_values(":throughput", throughput_value(t));
                "SET #counter = :new, #throughput = :throughput"
            }
            None => "SET #counter = :new",
        };
        let fut = req
            .update_expression(expr)
            .condition_expression(cond)
            .send();
        Ok(
            match self.call(LeaseOp::Renew, Some(&lease.key), fut).await? {
                Some(_) => WriteOutcome::Applied(lease.renewed()),
                None => WriteOutcome::Conflict,
            },
        )
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let (cond, expected) = Self::counter_condition(lease);
        let taken = lease.taken_by(owner);
        let fut = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&lease.key))
            .update_expression("SET #counter = :new, #owner = :owner, #switches = :switches REMOVE #checkpointOwner")
            .condition_expression(cond)
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
            .expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":expected", expected)
            .expression_attribute_values(":new", n(taken.counter))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":switches", n(taken.owner_switches_since_checkpoint))
            .send();
        Ok(
            match self.call(LeaseOp::Take, Some(&lease.key), fut).await? {
                Some(_) => WriteOutcome::Applied(taken),
                None => WriteOutcome::Conflict,
            },
        )
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let (cond, expected) = Self::counter_condition(lease);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&lease.key))
            .update_expression("SET #counter = :new REMOVE #owner")
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_values(":expected", expected)
            .expression_attribute_values(":new", n(lease.counter + 1));
        req = match &lease.owner {
            Some(owner) => req
                .condition_expression(format!("{cond} AND #owner = :owner"))
                .expression_attribute_values(":owner", s(owner)),
            None => req.condition_expression(format!("{cond} AND attribute_not_exists(#owner)")),
        };
        Ok(
            match self
                .call(LeaseOp::Evict, Some(&lease.key), req.send())
                .await?
            {
                Some(_) => WriteOutcome::Applied(lease.evicted()),
                None => WriteOutcome::Conflict,
            },
        )
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        let (mut cond, expected) = Self::counter_condition(lease);
        // As a renewal: a hand-off the leader started makes it fail, unless this worker knows
        // of it (a lease checkpointed often is not renewed: its owner learns at a checkpoint).
        if lease.checkpoint_owner.is_none() {
            cond.push_str(" AND attribute_not_exists(#checkpointOwner)");
        }
        let mut set = vec![
            "#counter = :new",
            "#checkpoint = :checkpoint",
            "#checkpointSub = :checkpointSub",
            "#switches = :switches",
        ];
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&lease.key))
            .condition_expression(cond)
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#checkpoint", attr::CHECKPOINT)
            .expression_attribute_names("#checkpointSub", attr::CHECKPOINT_SUB)
            .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
            .expression_attribute_names("#pending", attr::PENDING_CHECKPOINT)
            .expression_attribute_names("#pendingSub", attr::PENDING_CHECKPOINT_SUB)
            .expression_attribute_names("#pendingState", attr::PENDING_CHECKPOINT_STATE)
            .expression_attribute_values(":expected", expected)
            .expression_attribute_values(":new", n(lease.counter + 1))
            .expression_attribute_values(":checkpoint", s(lease.checkpoint.stored_value()))
            .expression_attribute_values(
                ":checkpointSub",
                n(lease.checkpoint.stored_sub_sequence_number()),
            )
            .expression_attribute_values(":switches", n(lease.owner_switches_since_checkpoint));
        match &lease.pending_checkpoint {
            Some(p) => {
                set.push("#pending = :pending");
                set.push("#pendingSub = :pendingSub");
                req = req
                    .expression_attribute_values(":pending", s(p.stored_value()))
                    .expression_attribute_values(":pendingSub", n(p.stored_sub_sequence_number()));
            }
            None => remove.extend(["#pending", "#pendingSub"]),
        }
        match &lease.pending_checkpoint_state {
            Some(state) => {
                set.push("#pendingState = :pendingState");
                req = req.expression_attribute_values(
                    ":pendingState",
                    AttributeValue::B(Blob::new(state.clone())),
                );
            }
            None => remove.push("#pendingState"),
        }
        if !lease.child_shard_ids.is_empty() {
            set.push("#children = :children");
            req = req
                .expression_attribute_names("#children", attr::CHILD_SHARD_IDS)
                .expression_attribute_values(
                    ":children",
                    AttributeValue::Ss(lease.child_shard_ids.clone()),
                );
        }
        if let Some(r) = lease.hash_key_range {
            set.push("#startHash = :startHash");
            set.push("#endHash = :endHash");
            req = req
                .expression_attribute_names("#startHash", attr::STARTING_HASH_KEY)
                .expression_attribute_names("#endHash", attr::ENDING_HASH_KEY)
                .expression_attribute_values(":startHash", s(r.start.to_string()))
                .expression_attribute_values(":endHash", s(r.end.to_string()));
        }
        if lease.checkpoint_owner.is_none() {
            req = req.expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER);
        }
        if let Some(t) = lease.throughput {
            set.push("#throughput = :throughput");
            req = req
                .expression_attribute_names("#throughput", attr::THROUGHPUT_KBPS)
                .expression_attribute_values(":throughput", throughput_value(t));
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let fut = req.update_expression(expr).send();
        Ok(
            match self.call(LeaseOp::Update, Some(&lease.key), fut).await? {
                Some(_) => {
                    let mut new = lease.clone();
                    new.counter += 1;
                    WriteOutcome::Applied(new)
                }
                None => WriteOutcome::Conflict,
            },
        )
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let children = super::sorted(child_shard_ids.iter().cloned());
        if children.is_empty() {
            return Ok(self
                .get_lease(key)
                .await?
                .map_or(WriteOutcome::Conflict, WriteOutcome::Applied));
        }
        let fut = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(key))
            .update_expression("SET #children = :children")
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#children", attr::CHILD_SHARD_IDS)
            .expression_attribute_names("#key", attr::LEASE_KEY)
            .expression_attribute_values(":children", AttributeValue::Ss(children))
            .return_values(ReturnValue::AllNew)
            .send();
        match self.call(LeaseOp::UpdateChildren, Some(key), fut).await? {
            None => Ok(WriteOutcome::Conflict),
            Some(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                item_to_lease(&item)
                    .map(WriteOutcome::Applied)
                    .map_err(|e| self.err(LeaseOp::UpdateChildren, Some(key), e))
            }
        }
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        let fut = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(key))
            .send();
        self.call(LeaseOp::Delete, Some(key), fut).await?;
        Ok(())
    }

    async fn assign_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let assigned = lease.assigned_to(owner);
        let mut cond = vec!["attribute_exists(#key)"];
        let mut req =
            self.client
                .update_item()
                .table_name(&self.table)
                .key(attr::LEASE_KEY, s(&lease.key))
                .update_expression(
                    "SET #owner = :owner, #switches = if_not_exists(#switches, :zero) + :switched \
                 ADD #counter :one REMOVE #checkpointOwner",
                )
                .expression_attribute_names("#key", attr::LEASE_KEY)
                .expression_attribute_names("#owner", attr::LEASE_OWNER)
                .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
                .expression_attribute_names("#counter", attr::LEASE_COUNTER)
                .expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER)
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(
                    ":switched",
                    n(assigned.owner_switches_since_checkpoint
                        - lease.owner_switches_since_checkpoint),
                )
                .return_values(ReturnValue::AllNew);
        match &lease.owner {
            Some(o) => {
                cond.push("#owner = :expectedOwner");
                req = req.expression_attribute_values(":expectedOwner", s(o));
            }
            None => cond.push("attribute_not_exists(#owner)"),
        }
        match &lease.checkpoint_owner {
            Some(o) => {
                cond.push("#checkpointOwner = :expectedCheckpointOwner");
                req = req.expression_attribute_values(":expectedCheckpointOwner", s(o));
            }
            None => cond.push("attribute_not_exists(#checkpointOwner)"),
        }
        let fut = req.condition_expression(cond.join(" AND ")).send();
        self.written(LeaseOp::Assign, &lease.key, fut).await
    }

    async fn start_handoff(
        &self,
        lease: &Lease,
        to: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        let Some(from) = &lease.owner else {
            return Ok(WriteOutcome::Conflict);
        };
        let fut = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&lease.key))
            .update_expression("SET #owner = :to, #checkpointOwner = :from")
            .condition_expression(
                "attribute_exists(#key) AND #owner = :from AND attribute_not_exists(#checkpointOwner)",
            )
            .expression_attribute_names("#key", attr::LEASE_KEY)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":from", s(from))
            .return_values(ReturnValue::AllNew)
            .send();
        self.written(LeaseOp::StartHandoff, &lease.key, fut).await
    }

    fn fleet_store(
        &self,
        application: &str,
        config: &crate::fleet::FleetConfig,
    ) -> Option<std::sync::Arc<dyn crate::fleet::FleetStore>> {
        Some(std::sync::Arc::new(
            crate::fleet::DynamoDbFleetStore::new(
                self.client.clone(),
                &self.table,
                config.coordinator_state_table(application),
                config.worker_metrics_table(application),
            )
            .with_request_timeout(self.request_timeout)
            .with_access_denied_as_absent(
                config.client_version_config == crate::fleet::ClientVersionConfig::Auto,
            ),
        ))
    }

    async fn lease_keys_owned_by(&self, owner: &str) -> Result<Vec<String>, LeaseStoreError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let fut = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OWNER_INDEX)
                .key_condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", attr::LEASE_OWNER)
                .expression_attribute_values(":owner", s(owner))
                .set_exclusive_start_key(start.take())
                .send();
            let out = self
                .call(LeaseOp::ListOwned, None, fut)
                .await?
                .expect("query has no condition");
            keys.extend(
                out.items()
                    .iter()
                    .filter_map(|i| get_s(i, attr::LEASE_KEY).map(str::to_string)),
            );
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(keys),
            }
        }
    }

    async fn create_owner_index_if_not_exists(&self) -> Result<bool, LeaseStoreError> {
        const OP: LeaseOp = LeaseOp::CreateIndex;
        let describe = self.client.describe_table().table_name(&self.table).send();
        let table = self
            .call(OP, None, describe)
            .await?
            .expect("describe has no condition");
        let index = table
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .find(|i| i.index_name() == Some(OWNER_INDEX))
            .cloned();
        if let Some(index) = index {
            return Ok(index.index_status() == Some(&IndexStatus::Active));
        }
        tracing::info!(table = %self.table, index = OWNER_INDEX, "creating the KCL 3.x lease owner index");
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("key schema")
        };
        let def = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition")
        };
        let provisioned = table
            .table()
            .and_then(|t| t.provisioned_throughput())
            .filter(|p| p.read_capacity_units().unwrap_or(0) > 0)
            .map(|p| {
                ProvisionedThroughput::builder()
                    .read_capacity_units(p.read_capacity_units().unwrap_or(1))
                    .write_capacity_units(p.write_capacity_units().unwrap_or(1))
                    .build()
                    .expect("throughput")
            });
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(OWNER_INDEX)
            .key_schema(key(attr::LEASE_OWNER, KeyType::Hash))
            .key_schema(key(attr::LEASE_KEY, KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .set_provisioned_throughput(provisioned)
            .build()
            .expect("index");
        let update = self
            .client
            .update_table()
            .table_name(&self.table)
            .attribute_definitions(def(attr::LEASE_OWNER))
            .attribute_definitions(def(attr::LEASE_KEY))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send();
        match tokio::time::timeout(self.request_timeout, update).await {
            Err(_) => Err(self.timeout(OP, None)),
            Ok(Ok(_)) => Ok(false),
            // Another worker is creating it.
            Ok(Err(e)) => match AwsError::from_sdk(e) {
                e if e.is_resource_in_use() || e.to_string().contains("already exists") => {
                    Ok(false)
                }
                e => Err(self.aws_err(OP, None, e)),
            },
        }
    }
}

impl DynamoDbLeaseStore {
    /// A conditional `UpdateItem` returning `ALL_NEW`: the lease as written.
    async fn written<E>(
        &self,
        op: LeaseOp,
        key: &str,
        fut: impl Future<
            Output = Result<
                aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
                SdkError<E, HttpResponse>,
            >,
        >,
    ) -> Result<WriteOutcome, LeaseStoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.call(op, Some(key), fut).await? {
            None => Ok(WriteOutcome::Conflict),
            Some(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                item_to_lease(&item)
                    .map(WriteOutcome::Applied)
                    .map_err(|e| self.err(op, Some(key), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease item as the Java KCL's `DynamoDBMultiStreamLeaseSerializer.toDynamoRecord`
    /// writes it: the single-stream attributes, the key `MultiStreamLease.getLeaseKey`
    /// (`<serialized StreamIdentifier>:<shardId>`), `streamName` (the serialized identifier)
    /// and `shardId`; parents and children are bare shard ids.
    fn java_multi_stream_item() -> Item {
        let mut item = Item::new();
        item.insert(
            "leaseKey".into(),
            s("123456789012:orders:1700000000000:shardId-000000000003"),
        );
        item.insert("leaseOwner".into(), s("worker-1"));
        item.insert("leaseCounter".into(), AttributeValue::N("4".into()));
        item.insert(
            "checkpoint".into(),
            s("49590338271490256608559692538361571095921575989136588898"),
        );
        item.insert(
            "checkpointSubSequenceNumber".into(),
            AttributeValue::N("0".into()),
        );
        item.insert(
            "ownerSwitchesSinceCheckpoint".into(),
            AttributeValue::N("0".into()),
        );
        item.insert(
            "parentShardId".into(),
            AttributeValue::Ss(vec!["shardId-000000000001".into()]),
        );
        item.insert("startingHashKey".into(), s("0"));
        item.insert(
            "endingHashKey".into(),
            s("170141183460469231731687303715884105727"),
        );
        item.insert("streamName".into(), s("123456789012:orders:1700000000000"));
        item.insert("shardId".into(), s("shardId-000000000003"));
        item
    }

    #[test]
    fn reads_and_writes_a_java_multi_stream_lease() {
        let item = java_multi_stream_item();
        let lease = item_to_lease(&item).unwrap();
        let stream: StreamIdentifier = "123456789012:orders:1700000000000".parse().unwrap();
        assert_eq!(
            lease.multi_stream,
            Some(StreamShard {
                stream: stream.clone(),
                shard_id: "shardId-000000000003".into()
            })
        );
        assert_eq!(lease.shard_id(), "shardId-000000000003");
        assert_eq!(lease.parent_shard_ids, vec!["shardId-000000000001"]);
        // Written back, it is the item Java wrote, attribute for attribute.
        assert_eq!(lease_to_item(&lease), item);
        // A lease made here has the key and attributes Java gives it.
        let made = Lease::for_stream(stream, "shardId-000000000003", Checkpoint::TrimHorizon);
        assert_eq!(made.key, lease.key);
        let made = lease_to_item(&made);
        assert_eq!(made.get("streamName"), item.get("streamName"));
        assert_eq!(made.get("shardId"), item.get("shardId"));
    }

    #[test]
    fn single_stream_leases_have_no_stream_attributes() {
        let lease = Lease::for_stream(
            StreamIdentifier::single("orders"),
            "shardId-000000000003",
            Checkpoint::TrimHorizon,
        );
        assert_eq!(lease.key, "shardId-000000000003");
        assert_eq!(lease.multi_stream, None);
        assert_eq!(lease.shard_id(), "shardId-000000000003");
        let item = lease_to_item(&lease);
        assert!(!item.contains_key("streamName") && !item.contains_key("shardId"));
    }

    #[test]
    fn a_multi_stream_item_with_a_bad_stream_is_refused_by_name() {
        for (stream, shard, why) in [
            (
                Some("orders"),
                Some("shardId-1"),
                "not account:name:creationEpoch",
            ),
            (Some("1:orders:0"), Some("shardId-1"), "positive"),
            (
                Some("1:orders:5"),
                None,
                "needs both streamName and shardId",
            ),
            (None, Some("shardId-1"), "needs both streamName and shardId"),
        ] {
            let mut item = java_multi_stream_item();
            item.remove("streamName");
            item.remove("shardId");
            if let Some(v) = stream {
                item.insert("streamName".into(), s(v));
            }
            if let Some(v) = shard {
                item.insert("shardId".into(), s(v));
            }
            let e = item_to_lease(&item).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("orders:1700000000000:shardId-000000000003"),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_a_java_kcl_3x_item_and_ignores_extra_attributes() {
        let mut item = Item::new();
        item.insert("leaseKey".into(), s("shardId-000000000002"));
        item.insert("leaseOwner".into(), s("worker-1"));
        item.insert("leaseCounter".into(), AttributeValue::N("7".into()));
        item.insert(
            "checkpoint".into(),
            s("49590338271490256608559692538361571095921575989136588898"),
        );
        item.insert(
            "checkpointSubSequenceNumber".into(),
            AttributeValue::N("3".into()),
        );
        item.insert(
            "ownerSwitchesSinceCheckpoint".into(),
            AttributeValue::N("1".into()),
        );
        item.insert(
            "parentShardId".into(),
            AttributeValue::Ss(vec![
                "shardId-000000000001".into(),
                "shardId-000000000000".into(),
            ]),
        );
        item.insert("startingHashKey".into(), s("0"));
        item.insert(
            "endingHashKey".into(),
            s("170141183460469231731687303715884105727"),
        );
        item.insert("throughputKBps".into(), AttributeValue::N("12.5".into()));
        item.insert("checkpointOwner".into(), s("worker-0"));
        item.insert("entityType".into(), s("LEASE"));
        assert!(is_lease_item(&item));
        let lease = item_to_lease(&item).unwrap();
        assert_eq!(lease.key, "shardId-000000000002");
        assert_eq!(lease.owner.as_deref(), Some("worker-1"));
        assert_eq!(lease.counter, 7);
        assert_eq!(
            lease.checkpoint,
            Checkpoint::sequence(
                "49590338271490256608559692538361571095921575989136588898",
                3
            )
            .unwrap()
        );
        assert_eq!(lease.owner_switches_since_checkpoint, 1);
        assert_eq!(
            lease.parent_shard_ids,
            vec!["shardId-000000000000", "shardId-000000000001"]
        );
        assert_eq!(
            lease.hash_key_range,
            Some(HashKeyRange {
                start: 0,
                end: 170141183460469231731687303715884105727
            })
        );
    }

    #[test]
    fn skips_other_entity_types() {
        let mut item = Item::new();
        item.insert("leaseKey".into(), s("Leader"));
        item.insert("entityType".into(), s("LEADER"));
        assert!(!is_lease_item(&item));
    }

    #[test]
    fn item_round_trip_uses_java_types() {
        let lease = Lease {
            owner: Some("w".into()),
            counter: 3,
            pending_checkpoint: Some(Checkpoint::sequence("5", 1).unwrap()),
            pending_checkpoint_state: Some(vec![1, 2]),
            child_shard_ids: vec!["shardId-2".into()],
            ..Lease::new("shardId-1", Checkpoint::ShardEnd)
                .with_parents(["shardId-0"])
                .with_hash_key_range(HashKeyRange {
                    start: 1,
                    end: u128::MAX,
                })
        };
        let item = lease_to_item(&lease);
        assert!(matches!(
            item.get("parentShardId"),
            Some(AttributeValue::Ss(_))
        ));
        assert!(matches!(
            item.get("leaseCounter"),
            Some(AttributeValue::N(_))
        ));
        assert!(matches!(
            item.get("pendingCheckpointState"),
            Some(AttributeValue::B(_))
        ));
        assert_eq!(item.get("endingHashKey"), Some(&s(u128::MAX.to_string())));
        assert_eq!(item_to_lease(&item).unwrap(), lease);
        let bare = lease_to_item(&Lease::new("k", Checkpoint::TrimHorizon));
        assert!(!bare.contains_key("leaseOwner") && !bare.contains_key("parentShardId"));
    }
}
