//! Enhanced fan-out end to end on the local services: the AWS SDK's SubscribeToShard event
//! stream against kinesis-mock (its plain HTTP port; it sends no initial-response event, and
//! the SDK keeps the first event for `recv`).
//!
//! What kinesis-mock 0.6.2 cannot show: the end of a closed shard. It never sends the final
//! event (no `ChildShards`, no null continuation sequence number; it keeps sending an empty
//! event every second), so a split parent never reaches `SHARD_END` through fan-out there.
//! Shard end, splits and merges during a subscription, expiry, and every failure are covered
//! by the in-memory tests (`src/retrieval/fanout.rs`) and the simulation's fan-out mode.

use crate::common::aws;
use crate::harness::*;
use futures::StreamExt;
use kinesis_client::retrieval::{
    ConsumerRef, ConsumerStatus, IteratorPosition, KinesisStreamClient, RetrievalFailure,
    StreamClient, StreamRef,
};
use kinesis_client::RetrievalMode;
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// One worker reads a 4-shard stream by fan-out: the records put before it started and
/// those put while it runs, each once and in order per shard; after a graceful stop, a new
/// worker resumes at the checkpoints (AT_SEQUENCE_NUMBER) and gets only the records put
/// since. The consumer was registered once, under the application's name.
#[tokio::test]
async fn four_shards_consumed_completely_by_fan_out_and_resumed_from_checkpoints() {
    let aws = aws().await;
    let (stream, mut put) = stream_with_records(&aws, "fo-all", 4, 120).await;
    let app = testkit::unique_name("app-fo");
    let journal = Journal::default();
    let fan_out = |worker| {
        config(&app, &stream, worker)
            .retrieval_mode(RetrievalMode::FanOut)
            .build()
            .unwrap()
    };
    let behavior = Behavior {
        checkpoint_every_batch: true,
        ..Default::default()
    };
    let w1 = start_worker(&aws, fan_out("w1"), &journal, behavior.clone());
    wait_for(LIMIT, "the first 120 records", || {
        journal.distinct_payloads().len() == 120
    })
    .await;
    let kinesis = aws.kinesis_client();
    let more = testkit::put_records(&kinesis, &stream, testkit::numbered_records("fo-more", 120))
        .await
        .unwrap();
    put.extend(more);
    wait_for(LIMIT, "240 records", || {
        journal.distinct_payloads().len() == 240
    })
    .await;
    w1.stop().await;

    let last = testkit::put_records(&kinesis, &stream, testkit::numbered_records("fo-last", 80))
        .await
        .unwrap();
    put.extend(last.iter().cloned());
    let w2 = start_worker(&aws, fan_out("w2"), &journal, behavior);
    wait_for(LIMIT, "320 records", || {
        journal.distinct_payloads().len() == 320
    })
    .await;
    w2.stop().await;

    let logs = journal.snapshot();
    let from_w2: BTreeSet<String> = logs
        .values()
        .flat_map(|l| {
            l.deliveries
                .iter()
                .filter(|d| d.0 == "w2")
                .map(|d| d.1.clone())
        })
        .collect();
    let last_seqs: BTreeSet<String> = last.iter().map(|p| p.sequence_number.clone()).collect();
    assert_eq!(from_w2, last_seqs, "w2 resumed exactly at w1's checkpoints");
    for (shard, want) in expected_by_shard(&put) {
        assert_eq!(
            delivered_seqs(&logs[&shard]),
            want,
            "shard {shard}: every record once, in order"
        );
    }
    let client = KinesisStreamClient::new(aws.kinesis_client(), StreamRef::Name(stream.clone()));
    let consumer = client
        .describe_stream_consumer(&ConsumerRef::Name(app.clone()))
        .await
        .unwrap()
        .expect("the worker registered a consumer named after the application");
    assert_eq!(consumer.status, ConsumerStatus::Active);
}

/// Two workers start at once: both register the same consumer name (one gets
/// ResourceInUseException and uses the other's), share the shards, and every record is
/// processed. A second subscription of that consumer to a shard already subscribed fails
/// with ResourceInUseException, through the SDK's event stream.
#[tokio::test]
async fn concurrent_workers_register_one_consumer_and_a_busy_shard_is_refused() {
    let aws = aws().await;
    let (stream, put) = stream_with_records(&aws, "fo-two", 2, 60).await;
    let app = testkit::unique_name("app-fo2");
    let journal = Journal::default();
    let workers: Vec<Worker> = ["a", "b"]
        .into_iter()
        .map(|w| {
            let config = config(&app, &stream, w)
                .retrieval_mode(RetrievalMode::FanOut)
                .build()
                .unwrap();
            let behavior = Behavior {
                checkpoint_every_batch: true,
                ..Default::default()
            };
            start_worker(&aws, config, &journal, behavior)
        })
        .collect();
    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == 60
    })
    .await;
    let logs = journal.snapshot();
    for (shard, want) in expected_by_shard(&put) {
        let got: BTreeSet<String> = delivered_seqs(&logs[&shard]).into_iter().collect();
        assert_eq!(
            got,
            want.into_iter().collect(),
            "shard {shard}: every record"
        );
    }

    let client = KinesisStreamClient::new(aws.kinesis_client(), StreamRef::Name(stream.clone()));
    let consumer = client
        .describe_stream_consumer(&ConsumerRef::Name(app.clone()))
        .await
        .unwrap()
        .expect("one consumer");
    let kinesis = aws.kinesis_client();
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let stream_arn = summary.stream_description_summary().unwrap().stream_arn();
    let listed = kinesis
        .list_stream_consumers()
        .stream_arn(stream_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.consumers().len(), 1, "one consumer for both workers");
    let shard = &put[0].shard_id;
    // Whichever worker reads this shard has it subscribed: a third subscription is refused.
    let mut refused = None;
    for _ in 0..20 {
        let mut events = client
            .subscribe_to_shard(&consumer.consumer_arn, shard, &IteratorPosition::Latest)
            .await
            .expect("the call itself succeeds; the refusal is the stream's first message");
        match events.next().await {
            Some(Err(e)) => {
                refused = Some(e);
                break;
            }
            // The workers' subscription was being renewed just then: try again.
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let e = refused.expect("a subscription to a shard already subscribed is refused");
    assert_eq!(e.failure, RetrievalFailure::ResourceInUse, "{e}");
    for w in workers {
        w.stop().await;
    }
}
