//! Issue 13: metrics exporters against real services.

use crate::common::aws;
use crate::harness::*;
use kinesis_client::telemetry::cloudwatch::{CloudWatchConfig, CloudWatchExporter};
use std::time::Duration;
use testkit::{ProxyMode, TcpProxy};

const LIMIT: Duration = Duration::from_secs(60);

/// A CloudWatch that accepts connections and never answers: the worker processes every record
/// while the exporter's `PutMetricData` calls hang (none of them has returned). (Dropping and
/// counting what cannot be sent is tested on paused time in the library's unit tests.)
#[tokio::test]
async fn an_unreachable_cloudwatch_does_not_hold_up_processing() {
    let aws = aws().await;
    let black_hole = TcpProxy::start_in("127.0.0.1:9", ProxyMode::BlackHole)
        .await
        .unwrap();
    let client = kinesis_client::aws::cloudwatch_client(&aws.sdk_config(), Some(&black_hole.url()));
    let app = testkit::unique_name("app-cw-down");
    let mut cw = CloudWatchConfig::new(&app);
    cw.buffer_time = Duration::from_millis(200);
    // Longer than the test: a request, once sent, is still hanging at the end.
    cw.request_timeout = Duration::from_secs(600);
    let (recorder, publisher) = CloudWatchExporter::build(client, cw);
    // The test's runtime is single-threaded: every task records into this recorder.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("cw-down");
    testkit::create_stream(&kinesis, &stream, 2).await.unwrap();
    let first = testkit::put_records(&kinesis, &stream, testkit::numbered_records("a", 50))
        .await
        .unwrap();
    let journal = Journal::default();
    let worker = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior {
            checkpoint_every_batch: true,
            ..Default::default()
        },
    );
    wait_for(LIMIT, "the first records", || {
        journal.distinct_payloads().len() == first.len()
    })
    .await;
    wait_for(
        LIMIT,
        "a PutMetricData call hanging in the black hole",
        || black_hole.open_connections() > 0,
    )
    .await;
    // With CloudWatch hanging, more records flow through as before.
    testkit::put_records(&kinesis, &stream, testkit::numbered_records("b", 150))
        .await
        .unwrap();
    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == 200
    })
    .await;
    let stats = publisher.stats();
    assert_eq!(stats.published, 0, "{stats:?}");
    assert!(
        black_hole.open_connections() > 0,
        "the publisher is still waiting for CloudWatch"
    );
    worker.stop().await;
}
