//! The lease table: reads through the library's [`DynamoDbLeaseStore`] (its Java KCL item
//! parsing), and this tool's own conditional writes, which the library's worker-side store
//! does not have (a checkpoint write that also releases the lease, a delete conditioned on the
//! counter).

use crate::error::AdminError;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_client::aws::AwsError;
use kinesis_client::lease::{attr, DynamoDbLeaseStore, Lease, LeaseStore};
use kinesis_client::Checkpoint;

/// One lease table.
#[derive(Debug, Clone)]
pub struct Table {
    store: DynamoDbLeaseStore,
    client: aws_sdk_dynamodb::Client,
    name: String,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Table {
    /// The lease table `name`.
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        let name = name.into();
        Table {
            store: DynamoDbLeaseStore::new(client.clone(), name.clone()),
            client,
            name,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every lease (a strongly consistent scan; items that are not leases, such as KCL 3.5's
    /// worker metrics rows, are skipped).
    pub async fn leases(&self) -> Result<Vec<Lease>, AdminError> {
        let mut leases = self
            .store
            .list_leases_consistent()
            .await
            .map_err(AdminError::store)?;
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    /// One lease, read consistently.
    pub async fn get(&self, key: &str) -> Result<Option<Lease>, AdminError> {
        self.store.get_lease(key).await.map_err(AdminError::store)
    }

    /// Create the table (on-demand billing, the Java KCL's key schema) unless it exists.
    pub async fn create_if_missing(&self) -> Result<(), AdminError> {
        self.store
            .create_table_if_not_exists()
            .await
            .map_err(AdminError::store)
    }

    /// Create `lease` unless its key exists; false when it did.
    pub async fn create(&self, lease: &Lease) -> Result<bool, AdminError> {
        self.store
            .create_lease_if_not_exists(lease)
            .await
            .map_err(AdminError::store)
    }

    /// Move `lease` to `to`, if its counter is still `lease.counter`: one UpdateItem that sets
    /// the checkpoint (sub-sequence number included), clears any prepared checkpoint, sets
    /// `ownerSwitchesSinceCheckpoint` to 0, removes `leaseOwner` and `checkpointOwner` and
    /// increments the counter (as the Java KCL's `evictLease`). The owner's next renewal or
    /// checkpoint then fails (the lease is no longer its own), its processor is told the lease
    /// was lost, and the next worker to take the unowned lease starts from `to`. False when the
    /// counter had changed (a worker wrote first).
    pub async fn write_checkpoint(
        &self,
        lease: &Lease,
        to: &Checkpoint,
    ) -> Result<bool, AdminError> {
        let fut = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(attr::LEASE_KEY, AttributeValue::S(lease.key.clone()))
            .condition_expression("#counter = :expected")
            .update_expression(
                "SET #counter = :new, #checkpoint = :checkpoint, #sub = :sub, #switches = :zero \
                 REMOVE #owner, #checkpointOwner, #pending, #pendingSub, #pendingState",
            )
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_names("#checkpoint", attr::CHECKPOINT)
            .expression_attribute_names("#sub", attr::CHECKPOINT_SUB)
            .expression_attribute_names("#switches", attr::OWNER_SWITCHES)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#checkpointOwner", attr::CHECKPOINT_OWNER)
            .expression_attribute_names("#pending", attr::PENDING_CHECKPOINT)
            .expression_attribute_names("#pendingSub", attr::PENDING_CHECKPOINT_SUB)
            .expression_attribute_names("#pendingState", attr::PENDING_CHECKPOINT_STATE)
            .expression_attribute_values(":expected", n(lease.counter))
            .expression_attribute_values(":new", n(lease.counter + 1))
            .expression_attribute_values(":checkpoint", AttributeValue::S(to.stored_value().into()))
            .expression_attribute_values(":sub", n(to.stored_sub_sequence_number()))
            .expression_attribute_values(":zero", n(0))
            .send();
        self.conditional(fut.await.map(|_| ()))
    }

    /// Delete `lease` if its counter is still `lease.counter`; false when it changed (or the
    /// lease is gone).
    pub async fn delete_if_unchanged(&self, lease: &Lease) -> Result<bool, AdminError> {
        let fut = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(attr::LEASE_KEY, AttributeValue::S(lease.key.clone()))
            .condition_expression("#counter = :expected")
            .expression_attribute_names("#counter", attr::LEASE_COUNTER)
            .expression_attribute_values(":expected", n(lease.counter))
            .send();
        self.conditional(fut.await.map(|_| ()))
    }

    fn conditional<E>(
        &self,
        r: Result<
            (),
            aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
        >,
    ) -> Result<bool, AdminError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.is_conditional_check_failed() {
                    Ok(false)
                } else {
                    Err(AdminError::dynamodb(&self.name, e))
                }
            }
        }
    }
}
