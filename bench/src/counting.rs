//! A [`LeaseStore`] that counts the calls made through it, by method, and delegates.
//!
//! Each call of the trait is one DynamoDB request in [`kinesis_client::lease::DynamoDbLeaseStore`] except
//! `list_leases`, which is one `Scan` request per 1 MB page; [`item_size`] gives the size of an
//! item as DynamoDB counts it, to say how many leases a page holds.

use kinesis_client::lease::{Lease, LeaseStore};
use kinesis_client::testing::{lease_to_dynamodb_item, CallCounter, LeaseOp, ObservedLeaseStore};
use std::sync::Arc;

/// The counted methods, in [`Counts`] order.
pub const METHODS: [&str; LeaseOp::ALL.len()] = {
    let mut names = [""; LeaseOp::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = LeaseOp::ALL[i].method_name();
        i += 1;
    }
    names
};

/// Calls per method, indexed like [`METHODS`].
pub type Counts = [u64; LeaseOp::ALL.len()];

/// Counts calls, then delegates: the testing kit's observing layer with a call counter.
pub type CountingStore = ObservedLeaseStore<CallCounter>;

/// Count the calls made to `inner` (read them with `store.hooks().counts()`).
pub fn counting(inner: Arc<dyn LeaseStore>) -> CountingStore {
    ObservedLeaseStore::new(inner, CallCounter::default())
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

/// The size of `lease`'s DynamoDB item as DynamoDB counts it: attribute name bytes plus value
/// bytes (strings: UTF-8 length; numbers: about one byte per two significant digits plus one;
/// string sets: the sum of their strings; binary: its length).
pub fn item_size(lease: &Lease) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    lease_to_dynamodb_item(lease)
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
    use kinesis_client::testing::InMemoryLeaseStore;
    use kinesis_client::Checkpoint;

    #[tokio::test]
    async fn counts_each_method() {
        let store = counting(Arc::new(InMemoryLeaseStore::new()));
        let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
        assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
        store.list_leases().await.unwrap();
        store.list_leases().await.unwrap();
        let c = store.hooks().counts();
        assert_eq!(get(&c, "create_lease_if_not_exists"), 1);
        assert_eq!(get(&c, "list_leases"), 2);
        assert_eq!(get(&diff(&c, &c), "list_leases"), 0);
        let size = item_size(&lease);
        assert!((60..200).contains(&size), "{size}");
    }
}
