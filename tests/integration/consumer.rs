//! Issue 4: consuming a stream end to end on the local Kinesis and DynamoDB.

use crate::common::aws;
use crate::harness::*;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore};
use kinesis_client::{Checkpoint, InitialPosition};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

const LIMIT: Duration = Duration::from_secs(60);

fn lease_store(aws: &testkit::LocalAws, table: &str) -> DynamoDbLeaseStore {
    DynamoDbLeaseStore::new(aws.dynamodb_client(), table)
}

#[tokio::test]
async fn one_worker_consumes_everything_in_order_per_shard() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "all", 4, 400).await;
    let app = testkit::unique_name("app-all");
    let journal = Journal::default();
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior {
            checkpoint_every_batch: true,
            ..Default::default()
        },
    );
    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == 400
    })
    .await;
    let logs = journal.snapshot();
    for (shard, want) in expected_by_shard(&put) {
        assert_eq!(
            delivered_seqs(&logs[&shard]),
            want,
            "shard {shard}: every record once, in order"
        );
        assert_eq!(logs[&shard].initialized_at, vec![Checkpoint::TrimHorizon]);
    }
    // Checkpoints landed in the lease table.
    let leases = lease_store(&aws, &app).list_leases().await.unwrap();
    for lease in leases {
        let last = expected_by_shard(&put)[&lease.key].last().cloned().unwrap();
        assert_eq!(
            lease.checkpoint,
            Checkpoint::sequence(last, 0).unwrap(),
            "{}",
            lease.key
        );
        assert_eq!(lease.owner.as_deref(), Some("w1"));
    }
    w.stop().await;
}

#[tokio::test]
async fn latest_and_at_timestamp_start_where_they_should() {
    let aws = aws().await;
    let (stream, _old) = stream_with_records(&aws, "pos", 2, 40).await;
    let kinesis = aws.kinesis_client();
    // The emulator's arrival timestamps have whole-second precision in places: leave a gap.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle = testkit::put_records(&kinesis, &stream, testkit::numbered_records("middle", 20))
        .await
        .unwrap();

    let latest_journal = Journal::default();
    let latest_app = testkit::unique_name("app-latest");
    let latest = start_worker(
        &aws,
        config(&latest_app, &stream, "wl")
            .initial_position(InitialPosition::Latest)
            .build()
            .unwrap(),
        &latest_journal,
        Behavior::default(),
    );
    let ts_journal = Journal::default();
    let ts_app = testkit::unique_name("app-ts");
    let ts = start_worker(
        &aws,
        config(&ts_app, &stream, "wt")
            .initial_position(InitialPosition::AtTimestamp(cut))
            .build()
            .unwrap(),
        &ts_journal,
        Behavior::default(),
    );

    // LATEST starts after what is in the stream when the shard's iterator is created.
    wait_for(LIMIT, "LATEST consumers initialized", || {
        latest_journal
            .snapshot()
            .values()
            .filter(|l| !l.initialized_at.is_empty())
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = testkit::put_records(&kinesis, &stream, testkit::numbered_records("new", 20))
        .await
        .unwrap();
    wait_for(LIMIT, "LATEST gets the new records", || {
        latest_journal.distinct_payloads().len() == 20
    })
    .await;
    let want_new: BTreeSet<String> = new
        .iter()
        .map(|p| String::from_utf8(p.data.clone()).unwrap())
        .collect();
    assert_eq!(latest_journal.distinct_payloads(), want_new);

    // AT_TIMESTAMP gets the middle and new records, none of the old ones.
    let mut want_ts: BTreeSet<String> = middle
        .iter()
        .map(|p| String::from_utf8(p.data.clone()).unwrap())
        .collect();
    want_ts.extend(want_new);
    wait_for(LIMIT, "AT_TIMESTAMP records", || {
        ts_journal.distinct_payloads().len() >= want_ts.len()
    })
    .await;
    assert_eq!(ts_journal.distinct_payloads(), want_ts);
    latest.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn a_restarted_worker_resumes_after_its_last_checkpoint() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "resume", 1, 60).await;
    let app = testkit::unique_name("app-resume");
    let journal = Journal::default();
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior::default(),
    );
    wait_for(LIMIT, "first 60 records", || {
        journal.distinct_payloads().len() == 60
    })
    .await;
    // Checkpoint in the middle by hand (through the store, as the processor would), then crash.
    let store = lease_store(&aws, &app);
    let shard = put[0].shard_id.clone();
    let seqs = expected_by_shard(&put)[&shard].clone();
    w.kill().await;
    let lease = store.get_lease(&shard).await.unwrap().unwrap();
    let mut cp = lease.clone();
    cp.checkpoint = Checkpoint::sequence(seqs[29].clone(), 0).unwrap();
    store.update_lease(&cp).await.unwrap().applied().unwrap();
    let more = testkit::put_records(
        &aws.kinesis_client(),
        &stream,
        testkit::numbered_records("more", 10),
    )
    .await
    .unwrap();

    let journal2 = Journal::default();
    let w2 = start_worker(
        &aws,
        config(&app, &stream, "w2").build().unwrap(),
        &journal2,
        Behavior::default(),
    );
    wait_for(LIMIT, "resume after the checkpoint", || {
        journal2.distinct_payloads().len() == 40
    })
    .await;
    let got = delivered_seqs(&journal2.snapshot()[&shard]);
    let mut want: Vec<String> = seqs[30..].to_vec();
    want.extend(more.iter().map(|p| p.sequence_number.clone()));
    assert_eq!(
        got, want,
        "exactly the records after the checkpoint, in order"
    );
    assert_eq!(
        journal2.snapshot()[&shard].initialized_at,
        vec![Checkpoint::sequence(seqs[29].clone(), 0).unwrap()]
    );
    w2.stop().await;
}

#[tokio::test]
async fn two_workers_share_the_shards_and_one_takes_over_when_the_other_dies() {
    let aws = aws().await;
    let (stream, _) = stream_with_records(&aws, "share", 4, 100).await;
    let app = testkit::unique_name("app-share");
    let journal = Journal::default();
    let behavior = Behavior {
        checkpoint_every_batch: true,
        ..Default::default()
    };
    let a = start_worker(
        &aws,
        config(&app, &stream, "a").build().unwrap(),
        &journal,
        behavior.clone(),
    );
    let b = start_worker(
        &aws,
        config(&app, &stream, "b").build().unwrap(),
        &journal,
        behavior,
    );
    wait_for(LIMIT, "an even split", || {
        a.handle.held_shards().len() == 2 && b.handle.held_shards().len() == 2
    })
    .await;
    wait_for(LIMIT, "first records", || {
        journal.distinct_payloads().len() == 100
    })
    .await;
    let b_shards = b.handle.held_shards();
    let died = tokio::time::Instant::now();
    b.kill().await;
    wait_for(LIMIT, "a takes b's shards", || {
        a.handle.held_shards().len() == 4
    })
    .await;
    eprintln!(
        "failover (local DynamoDB, failover time 3 s): b's leases held by a after {:?}",
        died.elapsed()
    );
    let more = testkit::put_records(
        &aws.kinesis_client(),
        &stream,
        testkit::numbered_records("after", 40),
    )
    .await
    .unwrap();
    wait_for(LIMIT, "records after the failover", || {
        journal.distinct_payloads().len() == 140
    })
    .await;
    let logs = journal.snapshot();
    for p in more.iter().filter(|p| b_shards.contains(&p.shard_id)) {
        let who: BTreeSet<&str> = logs[&p.shard_id]
            .deliveries
            .iter()
            .filter(|d| d.1 == p.sequence_number)
            .map(|d| d.0.as_str())
            .collect();
        assert_eq!(
            who,
            BTreeSet::from(["a"]),
            "b's former shard {} is now processed by a",
            p.shard_id
        );
    }
    a.stop().await;
}

/// Issue 29: a rolling deploy (one of two workers stopped gracefully, records flowing,
/// failover time 10 s): the stopping worker hands each lease to the other, which resumes each
/// shard within a second of the stopping worker's last checkpoint (released with no owner, a
/// lease waits for the other worker's next scan, up to 3.3 s: 0.78 s in one run, so this test
/// alone does not pin the hand-off; `a_leaderless_rolling_deploy_hands_leases_over_without_a_gap`
/// in the scheduler's tests does, on paused time), and no record is delivered twice.
#[tokio::test]
async fn a_rolling_deploy_hands_the_leases_over_without_a_gap_or_a_repeat() {
    let aws = aws().await;
    let (stream, _) = stream_with_records(&aws, "rolling", 4, 0).await;
    let app = testkit::unique_name("app-rolling");
    let journal = Journal::default();
    let behavior = Behavior {
        checkpoint_every_batch: true,
        ..Default::default()
    };
    let f = Duration::from_secs(10);
    let worker = |id: &str| {
        let config = config(&app, &stream, id).failover_time(f).build().unwrap();
        start_worker(&aws, config, &journal, behavior.clone())
    };
    let producer = {
        let (kinesis, stream) = (aws.kinesis_client(), stream.clone());
        tokio::spawn(async move {
            for i in 0.. {
                // Partition keys pk-0..pk-15 hash to all four shards (pk-0..pk-7 miss one).
                let records = testkit::numbered_records(&format!("r{i}-"), 16);
                let _ = testkit::put_records(&kinesis, &stream, records).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let a = worker("a");
    wait_for(LIMIT, "a holds every shard", || {
        a.handle.held_shards().len() == 4
    })
    .await;
    let b = worker("b");
    wait_for(LIMIT, "an even split", || {
        a.handle.held_shards().len() == 2 && b.handle.held_shards().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moving = b.handle.held_shards();
    b.stop().await;
    let stopped = std::time::Instant::now();
    wait_for(LIMIT, "a processes every shard again", || {
        let logs = journal.snapshot();
        moving.iter().all(|shard| {
            logs[shard]
                .batches
                .iter()
                .any(|(w, at)| w == "a" && *at >= stopped)
        })
    })
    .await;
    producer.abort();
    let logs = journal.snapshot();
    for shard in &moving {
        let log = &logs[shard];
        let stopped = log
            .shutdown_times
            .iter()
            .filter(|(w, reason, _)| w == "b" && reason == "requested")
            .map(|s| s.2)
            .max()
            .unwrap_or_else(|| panic!("b's processor of {shard} was not shut down as requested"));
        let resumed = log
            .batches
            .iter()
            .filter(|(w, at)| w == "a" && *at >= stopped)
            .map(|b| b.1)
            .min()
            .unwrap_or_else(|| panic!("a never resumed {shard}"));
        let gap = resumed - stopped;
        eprintln!("rolling deploy (failover time 10 s): {shard} resumed on a {gap:?} after b's last checkpoint");
        assert!(gap <= Duration::from_secs(1), "{shard} waited {gap:?}");
    }
    let mut seen = BTreeSet::new();
    for (shard, log) in &logs {
        for d in &log.deliveries {
            assert!(
                seen.insert(d.2.clone()),
                "{} delivered twice on {shard}",
                d.2
            );
        }
    }
    a.stop().await;
}

#[tokio::test]
async fn a_failing_processor_gets_the_same_batch_again() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "fail", 1, 30).await;
    let app = testkit::unique_name("app-fail");
    let journal = Journal::default();
    let first = String::from_utf8(put[0].data.clone()).unwrap();
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior {
            fail_once_on_payload: Some(first.clone()),
            ..Default::default()
        },
    );
    wait_for(LIMIT, "all records after the retry", || {
        journal.distinct_payloads().len() == 30
    })
    .await;
    let log = &journal.snapshot()[&put[0].shard_id];
    assert_eq!(log.failed_batches.len(), 1);
    let failed = &log.failed_batches[0];
    let redelivered: Vec<String> = log
        .deliveries
        .iter()
        .take(failed.len())
        .map(|d| d.2.clone())
        .collect();
    assert_eq!(
        &redelivered, failed,
        "the failed batch is delivered again, whole and first"
    );
    assert_eq!(
        delivered_seqs(log),
        expected_by_shard(&put)[&put[0].shard_id],
        "nothing skipped or repeated after the retry"
    );
    w.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_checkpoints_everything_and_frees_the_leases() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "graceful", 2, 50).await;
    let app = testkit::unique_name("app-graceful");
    let journal = Journal::default();
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior::default(),
    );
    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == 50
    })
    .await;
    w.stop().await;
    let logs = journal.snapshot();
    let leases = lease_store(&aws, &app).list_leases().await.unwrap();
    assert_eq!(leases.len(), 2);
    for lease in leases {
        assert_eq!(lease.owner, None, "{} released", lease.key);
        let last = expected_by_shard(&put)[&lease.key].last().cloned().unwrap();
        assert_eq!(
            lease.checkpoint,
            Checkpoint::sequence(last, 0).unwrap(),
            "{} checkpointed in shutdown",
            lease.key
        );
        assert_eq!(logs[&lease.key].shutdowns, vec!["requested"]);
    }
}

/// Reshard mid-run: split one shard, merge two others; check ordering across generations.
#[tokio::test]
async fn split_and_merge_mid_run_deliver_every_record_parents_first() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let (stream, first) = stream_with_records(&aws, "reshard", 3, 60).await;
    let app = testkit::unique_name("app-reshard");
    let journal = Journal::default();
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior {
            checkpoint_every_batch: true,
            ..Default::default()
        },
    );
    wait_for(LIMIT, "first records", || {
        journal.distinct_payloads().len() == 60
    })
    .await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let s: Vec<_> = shards.shards().to_vec();
    let range0 = s[0].hash_key_range().unwrap();
    let mid = (range0.starting_hash_key().parse::<u128>().unwrap()
        + range0.ending_hash_key().parse::<u128>().unwrap())
        / 2;
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(s[0].shard_id())
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .unwrap();
    testkit::wait_stream_active(&kinesis, &stream)
        .await
        .unwrap();
    kinesis
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(s[1].shard_id())
        .adjacent_shard_to_merge(s[2].shard_id())
        .send()
        .await
        .unwrap();
    testkit::wait_stream_active(&kinesis, &stream)
        .await
        .unwrap();
    let second = testkit::put_records(
        &kinesis,
        &stream,
        testkit::numbered_records("after-reshard", 60),
    )
    .await
    .unwrap();

    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == 120
    })
    .await;
    let logs = journal.snapshot();
    let store = lease_store(&aws, &app);
    // Parents reached SHARD_END (or were cleaned up after their children started).
    for parent in [s[0].shard_id(), s[1].shard_id(), s[2].shard_id()] {
        wait_for(LIMIT, "parent at SHARD_END", || {
            logs[parent].shutdowns.contains(&"shard_ended".to_string())
        })
        .await;
        if let Some(l) = store.get_lease(parent).await.unwrap() {
            assert_eq!(l.checkpoint, Checkpoint::ShardEnd, "{parent}");
        }
    }
    // Children: each child's first record comes after its parents' last record was processed.
    let all: Vec<kinesis_client::retrieval::Shard> = {
        use kinesis_client::retrieval::StreamClient;
        kinesis_client::retrieval::KinesisStreamClient::new(
            aws.kinesis_client(),
            kinesis_client::retrieval::StreamRef::Name(stream.clone()),
        )
        .list_shards()
        .await
        .unwrap()
    };
    let children: Vec<_> = all.iter().filter(|c| !c.parents().is_empty()).collect();
    assert_eq!(children.len(), 3, "two split children and one merge child");
    for p in &second {
        assert!(
            children.iter().any(|c| c.shard_id == p.shard_id),
            "post-reshard records land in children"
        );
    }
    let _ = first;
    for c in children {
        let child_log = &logs[&c.shard_id];
        let child_first = child_log
            .deliveries
            .iter()
            .map(|d| d.3)
            .min()
            .expect("child processed");
        for parent in c.parents() {
            let p = &logs[&parent];
            let parent_last = p.deliveries.iter().map(|d| d.3).max().unwrap_or(0);
            let ended = p
                .shutdowns
                .iter()
                .zip(&p.shutdown_at)
                .find(|(r, _)| *r == "shard_ended")
                .map(|(_, i)| *i)
                .expect("parent ended");
            assert!(
                parent_last < child_first,
                "child {} got a record before parent {parent}'s last",
                c.shard_id
            );
            assert!(
                ended < child_first,
                "child {} got a record before parent {parent} ended",
                c.shard_id
            );
        }
    }
    w.stop().await;
}

#[tokio::test]
async fn a_panicking_processor_costs_its_shard_a_restart_from_the_checkpoint() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "panic", 2, 40).await;
    let app = testkit::unique_name("app-panic");
    let journal = Journal::default();
    let victim = put[0].shard_id.clone();
    let first = String::from_utf8(put[0].data.clone()).unwrap();
    let behavior = Behavior {
        panic_once_on_payload: Some(first),
        checkpoint_every_batch: true,
        ..Default::default()
    };
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        behavior,
    );
    wait_for(LIMIT, "every record despite the panic", || {
        journal.distinct_payloads().len() == 40
    })
    .await;
    let logs = journal.snapshot();
    assert_eq!(logs[&victim].panics, 1);
    assert_eq!(
        logs[&victim].initialized_at.len(),
        2,
        "a new processor was initialized after the panic"
    );
    assert_eq!(
        logs[&victim].initialized_at[1],
        Checkpoint::TrimHorizon,
        "restarted from the last checkpoint (none yet)"
    );
    assert_eq!(
        delivered_seqs(&logs[&victim]),
        expected_by_shard(&put)[&victim]
    );
    assert!(!w.task.is_finished(), "the worker survived");
    w.stop().await;
}

#[tokio::test]
async fn children_wait_while_the_parent_processor_does_not_checkpoint_shard_end() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let (stream, _) = stream_with_records(&aws, "stuck", 1, 10).await;
    let app = testkit::unique_name("app-stuck");
    let journal = Journal::default();
    let behavior = Behavior {
        skip_shard_end_checkpoint: true,
        ..Default::default()
    };
    let w = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        behavior,
    );
    wait_for(LIMIT, "first records", || {
        journal.distinct_payloads().len() == 10
    })
    .await;
    let parent = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .clone();
    let range = parent.hash_key_range().unwrap();
    let mid = (range.starting_hash_key().parse::<u128>().unwrap()
        + range.ending_hash_key().parse::<u128>().unwrap())
        / 2;
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .unwrap();
    testkit::wait_stream_active(&kinesis, &stream)
        .await
        .unwrap();
    testkit::put_records(&kinesis, &stream, testkit::numbered_records("child", 20))
        .await
        .unwrap();

    let store = lease_store(&aws, &app);
    // The parent's processor is asked again and again; its children are created but wait.
    wait_for(LIMIT, "repeated shard-end calls", || {
        journal.snapshot()[parent.shard_id()].shutdowns.len() >= 3
    })
    .await;
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 3, "parent and two children: {leases:?}");
    for l in &leases {
        if l.key == parent.shard_id() {
            assert_ne!(l.checkpoint, Checkpoint::ShardEnd);
        } else {
            assert_eq!(
                l.checkpoint,
                Checkpoint::TrimHorizon,
                "child {} has not started",
                l.key
            );
        }
    }
    assert_eq!(
        journal.distinct_payloads().len(),
        10,
        "no child record was delivered"
    );
    w.stop().await;
}
