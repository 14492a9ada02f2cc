//! The unmodified amazon-kclpy 3.2.0 sample app (`samples/sample_kclpy_app.py` of the sdist),
//! configured by `properties/python-sample.properties`.

use std::collections::BTreeMap;

use crate::harness::*;
use testkit::LocalAws;

/// The sample consumes a 4-shard stream completely.
///
/// What the sample guarantees about checkpoints (read from its code): it checkpoints at the
/// largest sequence number of a batch on its first `process_records` and then at most every
/// 30 s, and `shutdown_requested` checkpoints with no sequence number (= everything delivered
/// so far). So:
/// 1. while running, every shard's checkpoint reaches at least the end of the first batch;
/// 2. after a graceful shutdown (SIGTERM), every checkpoint is the last sequence number of its
///    shard — provided every record was delivered, which the first part shows: all records
///    were put before the daemon started, and the checkpoint after the first batch already
///    equals the shard's last sequence number (one GetRecords call returns up to
///    `maxRecords`, default 10000, so ~25 records per shard come in one batch).
#[tokio::test]
async fn kclpy_sample_app_consumes_four_shards_and_checkpoints() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("kclpy-sample")?;
    let (stream, put) = stream_with_records(&aws, "e2e-kclpy-sample", 4, "sample", 100).await?;
    let expected = expected_by_shard(&put);
    assert_eq!(expected.len(), 4, "100 records should reach all 4 shards");
    let app = testkit::unique_name("e2e-kclpy-sample-app");

    let base = std::fs::read_to_string(properties_dir().join("python-sample.properties"))?;
    let props = Props::on_top_of(
        &base,
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &kclpy.sample_app]),
    )
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(
        &scratch.path,
        &props,
        &[("PYTHONPATH", kclpy.pythonpath_env())],
    )?;

    // 1. The checkpoint of the first batch: each shard at its last sequence number.
    let last: BTreeMap<String, String> = expected
        .iter()
        .map(|(shard, recs)| (shard.clone(), recs.last().unwrap().0.clone()))
        .collect();
    let a = aws.clone();
    daemon
        .until(
            LIMIT,
            "every lease checkpointed at its shard's last sequence number",
            || {
                let (a, app, last) = (a.clone(), app.clone(), last.clone());
                async move {
                    let leases = leases(&a, &app).await;
                    last.iter()
                        .all(|(shard, seq)| {
                            leases.get(shard).and_then(checkpoint_seq).as_deref() == Some(seq)
                        })
                        .then_some(())
                }
            },
        )
        .await;
    assert_eq!(daemon.children().len(), 4, "one child process per shard");
    let children = daemon.children();
    // The sample logged every record to its stderr, which the daemon drains into its log.
    daemon
        .until_logged(LIMIT, "Record (Partition Key: pk-")
        .await;

    // 2. Graceful shutdown: shutdownRequested reaches the sample, which checkpoints.
    let (status, took) = daemon.terminate(LIMIT).await?;
    assert!(
        status.success(),
        "daemon exit status {status} after SIGTERM"
    );
    assert!(
        daemon
            .log()
            .contains("Shutdown has been requested, checkpointing."),
        "the sample's shutdown_requested ran"
    );
    println!("kclpy sample: graceful shutdown took {took:?}");
    assert_all_gone(&children);
    let leases = leases(&aws, &app).await;
    assert_eq!(leases.len(), 4);
    for (shard, seq) in &last {
        let lease = &leases[shard];
        assert_eq!(
            checkpoint_seq(lease).as_deref(),
            Some(seq.as_str()),
            "{shard}"
        );
        assert_eq!(lease.owner, None, "{shard}: lease released at shutdown");
    }
    Ok(())
}
