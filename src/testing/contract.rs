//! The lease store contract: one suite of checks every [`LeaseStore`] must pass.
//!
//! Run against [`super::InMemoryLeaseStore`] in unit tests and against
//! [`crate::lease::DynamoDbLeaseStore`] on DynamoDB Local in the integration tests, so the in-memory
//! store cannot drift from DynamoDB's conditional-write semantics. Each check panics with a
//! message naming what diverged.

use crate::checkpoint::Checkpoint;
use crate::lease::{HashKeyRange, Lease, LeaseStore, WriteOutcome};
use crate::stream::StreamIdentifier;

fn applied(outcome: WriteOutcome, what: &str) -> Lease {
    match outcome {
        WriteOutcome::Applied(l) => l,
        WriteOutcome::Conflict => panic!("{what}: expected the write to apply, got Conflict"),
    }
}

/// Run every check against `store`. Lease keys are prefixed with `prefix` so several runs can
/// share a table.
pub async fn run(store: &dyn LeaseStore, prefix: &str) {
    let key = |n: &str| format!("{prefix}shardId-{n}");
    store
        .create_table_if_not_exists()
        .await
        .expect("create table");
    store
        .create_table_if_not_exists()
        .await
        .expect("create table is idempotent");

    // create-if-absent
    let full = Lease {
        pending_checkpoint: Some(Checkpoint::sequence("42", 1).unwrap()),
        pending_checkpoint_state: Some(b"state".to_vec()),
        ..Lease::new(key("a"), Checkpoint::TrimHorizon)
            .with_parents([key("p2"), key("p1")])
            .with_hash_key_range(HashKeyRange {
                start: 0,
                end: u128::MAX,
            })
    };
    assert!(
        store.create_lease_if_not_exists(&full).await.unwrap(),
        "first create applies"
    );
    let mut other = full.clone();
    other.checkpoint = Checkpoint::Latest;
    assert!(
        !store.create_lease_if_not_exists(&other).await.unwrap(),
        "second create is refused"
    );
    let read = store
        .get_lease(&full.key)
        .await
        .unwrap()
        .expect("created lease is readable");
    assert_eq!(read, full, "every attribute round-trips");
    assert_eq!(
        store.get_lease(&key("missing")).await.unwrap(),
        None,
        "missing lease reads as None"
    );

    // take: counter-conditioned, owner switches only count changes between workers
    let taken = applied(store.take_lease(&read, "w1").await.unwrap(), "take unowned");
    assert_eq!(
        (
            taken.owner.as_deref(),
            taken.counter,
            taken.owner_switches_since_checkpoint
        ),
        (Some("w1"), 1, 0)
    );
    assert_eq!(
        store.take_lease(&read, "w2").await.unwrap(),
        WriteOutcome::Conflict,
        "take with a stale counter"
    );
    let stolen = applied(store.take_lease(&taken, "w2").await.unwrap(), "steal");
    assert_eq!(
        (stolen.counter, stolen.owner_switches_since_checkpoint),
        (2, 1)
    );
    assert_eq!(
        store.get_lease(&full.key).await.unwrap().unwrap(),
        stolen,
        "store agrees with the returned lease"
    );

    // renew
    assert_eq!(
        store.renew_lease(&taken).await.unwrap(),
        WriteOutcome::Conflict,
        "old owner's renew fails after a steal"
    );
    let renewed = applied(store.renew_lease(&stolen).await.unwrap(), "renew");
    assert_eq!(renewed.counter, 3);
    assert_eq!(renewed.owner.as_deref(), Some("w2"));

    // update (checkpoint)
    let mut cp = renewed.clone();
    cp.checkpoint = Checkpoint::sequence("100", 2).unwrap();
    cp.pending_checkpoint = None;
    cp.pending_checkpoint_state = None;
    cp.owner_switches_since_checkpoint = 0;
    cp.child_shard_ids = vec![key("c1")];
    let written = applied(store.update_lease(&cp).await.unwrap(), "checkpoint");
    assert_eq!(written.counter, 4);
    let read = store.get_lease(&full.key).await.unwrap().unwrap();
    assert_eq!(
        read, written,
        "checkpoint fields are stored, pending ones removed"
    );
    assert_eq!(read.pending_checkpoint, None);
    assert_eq!(
        store.update_lease(&cp).await.unwrap(),
        WriteOutcome::Conflict,
        "checkpoint with a stale counter"
    );

    // child shard ids: no counter change, needs the lease to exist
    let with_children = applied(
        store
            .update_child_shard_ids(&full.key, &[key("c3"), key("c2")])
            .await
            .unwrap(),
        "children",
    );
    assert_eq!(
        with_children.counter, 4,
        "child ids do not bump the counter"
    );
    assert_eq!(with_children.child_shard_ids, vec![key("c2"), key("c3")]);
    assert_eq!(
        store
            .update_child_shard_ids(&key("missing"), &[key("c")])
            .await
            .unwrap(),
        WriteOutcome::Conflict,
        "children of a missing lease"
    );
    assert!(
        store.get_lease(&key("missing")).await.unwrap().is_none(),
        "no lease appears from a child update"
    );

    // evict: owner and counter must match
    let mut wrong_owner = with_children.clone();
    wrong_owner.owner = Some("w1".into());
    assert_eq!(
        store.evict_lease(&wrong_owner).await.unwrap(),
        WriteOutcome::Conflict,
        "evict by a non-owner"
    );
    let evicted = applied(store.evict_lease(&with_children).await.unwrap(), "evict");
    assert_eq!((evicted.owner.as_deref(), evicted.counter), (None, 5));
    assert_eq!(
        store.get_lease(&full.key).await.unwrap().unwrap().owner,
        None
    );
    let again = applied(
        store.take_lease(&evicted, "w1").await.unwrap(),
        "take after evict",
    );
    assert_eq!(
        again.owner_switches_since_checkpoint, 0,
        "taking an unowned lease is not an owner switch"
    );

    // list
    let second = Lease::new(key("b"), Checkpoint::ShardEnd);
    assert!(store.create_lease_if_not_exists(&second).await.unwrap());
    let mut listed: Vec<Lease> = store
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.starts_with(prefix))
        .collect();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        listed,
        vec![again.clone(), second.clone()],
        "list returns every lease"
    );
    let mut consistent: Vec<Lease> = store
        .list_leases_consistent()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.starts_with(prefix))
        .collect();
    consistent.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        consistent, listed,
        "the consistent list returns every lease"
    );

    // delete
    store.delete_lease(&second.key).await.unwrap();
    store
        .delete_lease(&second.key)
        .await
        .expect("deleting a missing lease is fine");
    assert!(store.get_lease(&second.key).await.unwrap().is_none());
    assert_eq!(
        store.renew_lease(&second).await.unwrap(),
        WriteOutcome::Conflict,
        "renewing a deleted lease"
    );
    assert_eq!(
        store.take_lease(&second, "w1").await.unwrap(),
        WriteOutcome::Conflict,
        "taking a deleted lease"
    );

    multi_stream(store, prefix).await;
    kcl_3x(store, prefix).await;
}

/// KCL 3.x: throughput on renewals, the leader's graceful hand-off and assignment, and the
/// owner index.
async fn kcl_3x(store: &dyn LeaseStore, prefix: &str) {
    let key = format!("{prefix}shardId-3x");
    let lease = Lease::new(&key, Checkpoint::TrimHorizon);
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let taken = applied(store.take_lease(&lease, "a").await.unwrap(), "take");
    let mut with_tp = taken.clone();
    with_tp.throughput = crate::lease::Throughput::from_kbps(12.5);
    let renewed = applied(store.renew_lease(&with_tp).await.unwrap(), "renew");
    let read = store.get_lease(&key).await.unwrap().unwrap();
    assert_eq!(read, renewed, "a renewal writes the throughput");
    assert_eq!(read.throughput.map(|t| t.kbps()), Some(12.5));

    // The leader starts a hand-off to b: owner b, checkpointOwner a, counter unchanged.
    let mut wrong = read.clone();
    wrong.owner = Some("x".into());
    assert_eq!(
        store.start_handoff(&wrong, "b").await.unwrap(),
        WriteOutcome::Conflict,
        "a hand-off from a worker that is not the owner"
    );
    let handing = applied(store.start_handoff(&read, "b").await.unwrap(), "hand-off");
    assert_eq!(
        (
            handing.owner.as_deref(),
            handing.checkpoint_owner.as_deref(),
            handing.counter
        ),
        (Some("b"), Some("a"), read.counter),
    );
    assert_eq!(store.get_lease(&key).await.unwrap().unwrap(), handing);
    assert_eq!(
        store.start_handoff(&read, "c").await.unwrap(),
        WriteOutcome::Conflict,
        "a second hand-off while one is under way"
    );
    // The old owner's renewal fails on it (that is how it learns); knowing, it renews on.
    assert_eq!(
        store.renew_lease(&read).await.unwrap(),
        WriteOutcome::Conflict,
        "a renewal unaware of the hand-off"
    );
    let renewed = applied(
        store.renew_lease(&handing).await.unwrap(),
        "renew in hand-off",
    );
    assert_eq!(renewed.counter, handing.counter + 1);
    // A checkpoint unaware of the hand-off fails too (a lease checkpointed often is not
    // renewed: the checkpoint is where its owner learns).
    let mut unaware = read.clone();
    unaware.counter = renewed.counter;
    unaware.checkpoint = Checkpoint::sequence("8", 0).unwrap();
    assert_eq!(
        store.update_lease(&unaware).await.unwrap(),
        WriteOutcome::Conflict,
        "a checkpoint unaware of the hand-off"
    );
    // Aware of it, it checkpoints meanwhile (with its throughput); the hand-off stays.
    let mut cp = renewed.clone();
    cp.checkpoint = Checkpoint::sequence("9", 0).unwrap();
    cp.throughput = crate::lease::Throughput::from_kbps(3.25);
    let cp = applied(
        store.update_lease(&cp).await.unwrap(),
        "checkpoint in hand-off",
    );
    let read = store.get_lease(&key).await.unwrap().unwrap();
    assert_eq!(read, cp);
    assert_eq!(read.checkpoint_owner.as_deref(), Some("a"));

    // The owner index names b (it may lag the write a little).
    let mut ready = false;
    for _ in 0..60 {
        if store.create_owner_index_if_not_exists().await.unwrap() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(ready, "the owner index became usable");
    let mut found = false;
    for _ in 0..50 {
        let of_b = store.lease_keys_owned_by("b").await.unwrap();
        if of_b.contains(&key) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "lease_keys_owned_by finds the lease assigned to b");
    assert!(!store.lease_keys_owned_by("a").await.unwrap().contains(&key));

    // The old owner completes the hand-off: owner b, no checkpointOwner, counter + 1, and no
    // owner switch counted (as the Java KCL's assignLease).
    let mut stale = read.clone();
    stale.checkpoint_owner = None;
    assert_eq!(
        store.assign_lease(&stale, "b").await.unwrap(),
        WriteOutcome::Conflict,
        "an assignment expecting no hand-off"
    );
    let done = applied(
        store.assign_lease(&read, "b").await.unwrap(),
        "complete hand-off",
    );
    assert_eq!(
        (
            done.owner.as_deref(),
            done.checkpoint_owner.as_deref(),
            done.counter,
            done.owner_switches_since_checkpoint
        ),
        (
            Some("b"),
            None,
            read.counter + 1,
            read.owner_switches_since_checkpoint
        ),
    );
    assert_eq!(store.get_lease(&key).await.unwrap().unwrap(), done);
    // A leader's assignment overrides a live owner whatever the counter, and counts a switch.
    let mut old_counter = done.clone();
    old_counter.counter = 0;
    let moved = applied(
        store.assign_lease(&old_counter, "c").await.unwrap(),
        "assign",
    );
    assert_eq!(
        (
            moved.owner.as_deref(),
            moved.counter,
            moved.owner_switches_since_checkpoint
        ),
        (
            Some("c"),
            done.counter + 1,
            done.owner_switches_since_checkpoint + 1
        ),
    );
    assert_eq!(store.get_lease(&key).await.unwrap().unwrap(), moved);
    // An unowned lease is assigned expecting no owner.
    let released = applied(store.evict_lease(&moved).await.unwrap(), "evict");
    assert_eq!(
        store.assign_lease(&moved, "d").await.unwrap(),
        WriteOutcome::Conflict,
        "an assignment expecting an owner that left"
    );
    let assigned = applied(
        store.assign_lease(&released, "d").await.unwrap(),
        "assign unowned",
    );
    assert_eq!(assigned.owner.as_deref(), Some("d"));
    store.delete_lease(&key).await.unwrap();
}

/// Multi-stream leases (the Java KCL's `streamName` and `shardId` attributes) keep their
/// stream and shard through every write.
async fn multi_stream(store: &dyn LeaseStore, prefix: &str) {
    let stream = StreamIdentifier::multi("123456789012", "contract", 1_700_000_000_000).unwrap();
    let lease = Lease::for_stream(
        stream.clone(),
        format!("{prefix}shardId-m"),
        Checkpoint::TrimHorizon,
    );
    assert!(store.create_lease_if_not_exists(&lease).await.unwrap());
    let read = store.get_lease(&lease.key).await.unwrap().expect("created");
    assert_eq!(read, lease, "a multi-stream lease round-trips");
    let taken = applied(store.take_lease(&read, "w1").await.unwrap(), "take");
    let renewed = applied(store.renew_lease(&taken).await.unwrap(), "renew");
    let mut cp = renewed.clone();
    cp.checkpoint = Checkpoint::sequence("7", 0).unwrap();
    let written = applied(store.update_lease(&cp).await.unwrap(), "checkpoint");
    let evicted = applied(store.evict_lease(&written).await.unwrap(), "evict");
    let read = store.get_lease(&lease.key).await.unwrap().expect("kept");
    assert_eq!(read, evicted);
    assert_eq!(
        read.multi_stream, lease.multi_stream,
        "stream and shard kept"
    );
    assert_eq!(read.shard_id(), format!("{prefix}shardId-m"));
    let listed = store.list_leases().await.unwrap();
    assert!(
        listed.iter().any(|l| l == &read),
        "list returns the multi-stream lease with its stream"
    );
    store.delete_lease(&lease.key).await.unwrap();
}
