//! A [`LeaseStore`] that counts the calls made through it, by method, and delegates.
//!
//! Each call of the trait is one DynamoDB request in [`kcl::lease::DynamoDbLeaseStore`] except
//! `list_leases`, which is one `Scan` request per 1 MB page; [`item_size`] gives the size of an
//! item as DynamoDB counts it, to say how many leases a page holds.

use async_trait::async_trait;
use kcl::lease::dynamodb::lease_to_item;
use kcl::lease::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The counted methods, in [`Counts`] order.
pub const METHODS: [&str; 10] = [
    "create_table_if_not_exists",
    "create_lease_if_not_exists",
    "list_leases",
    "get_lease",
    "renew_lease",
    "take_lease",
    "evict_lease",
    "update_lease",
    "update_child_shard_ids",
    "delete_lease",
];

/// Calls per method, indexed like [`METHODS`].
pub type Counts = [u64; 10];

/// Counts calls, then delegates to `inner`.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn LeaseStore>,
    counts: [AtomicU64; 10],
}

impl CountingStore {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn LeaseStore>) -> Self {
        CountingStore {
            inner,
            counts: Default::default(),
        }
    }

    fn count(&self, i: usize) {
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// `after - before`, per method.
pub fn diff(after: &Counts, before: &Counts) -> Counts {
    std::array::from_fn(|i| after[i] - before[i])
}

/// The count of `method` (one of [`METHODS`]).
pub fn get(counts: &Counts, method: &str) -> u64 {
    METHODS
        .iter()
        .position(|m| *m == method)
        .map_or(0, |i| counts[i])
}

#[async_trait]
impl LeaseStore for CountingStore {
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError> {
        self.count(0);
        self.inner.create_table_if_not_exists().await
    }

    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        self.count(1);
        self.inner.create_lease_if_not_exists(lease).await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.count(2);
        self.inner.list_leases().await
    }

    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError> {
        self.count(3);
        self.inner.get_lease(key).await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.count(4);
        self.inner.renew_lease(lease).await
    }

    async fn take_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.count(5);
        self.inner.take_lease(lease, owner).await
    }

    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.count(6);
        self.inner.evict_lease(lease).await
    }

    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError> {
        self.count(7);
        self.inner.update_lease(lease).await
    }

    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError> {
        self.count(8);
        self.inner
            .update_child_shard_ids(key, child_shard_ids)
            .await
    }

    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError> {
        self.count(9);
        self.inner.delete_lease(key).await
    }
}

/// The size of `lease`'s DynamoDB item as DynamoDB counts it: attribute name bytes plus value
/// bytes (strings: UTF-8 length; numbers: about one byte per two significant digits plus one;
/// string sets: the sum of their strings; binary: its length).
pub fn item_size(lease: &Lease) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    lease_to_item(lease)
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    V::S(s) => s.len(),
                    V::N(n) => {
                        let digits = n.trim_start_matches('-').trim_start_matches('0').len();
                        digits.div_ceil(2) + 1
                    }
                    V::Ss(v) => v.iter().map(String::len).sum(),
                    V::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcl::lease::InMemoryLeaseStore;
    use kcl::Checkpoint;

    #[tokio::test]
    async fn counts_each_method() {
        let store = CountingStore::new(Arc::new(InMemoryLeaseStore::new()));
        let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
        assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
        store.list_leases().await.unwrap();
        store.list_leases().await.unwrap();
        let c = store.counts();
        assert_eq!(get(&c, "create_lease_if_not_exists"), 1);
        assert_eq!(get(&c, "list_leases"), 2);
        assert_eq!(get(&diff(&c, &c), "list_leases"), 0);
        let size = item_size(&lease);
        assert!((60..200).contains(&size), "{size}");
    }
}
