//! The Node processor `samples/node/sample_processor.js` on aws-kcl 2.3.2 from npm, configured
//! by `properties/node-sample.properties`.

use crate::harness::*;
use testkit::LocalAws;

/// The Node processor consumes a 4-shard stream completely (exactly once, in order); its
/// per-batch checkpoints put every lease at its shard's last sequence number; SIGTERM reaches
/// its `shutdownRequested`, and every child exits on its own.
#[tokio::test]
async fn node_processor_consumes_four_shards_and_checkpoints() -> anyhow::Result<()> {
    let (node, node_path) = aws_kcl().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("node")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-node", 4, "node", 100).await?;
    let expected = expected_by_shard(&put);
    assert_eq!(expected.len(), 4, "100 records should reach all 4 shards");
    let app = testkit::unique_name("e2e-node-app");
    let base = std::fs::read_to_string(properties_dir().join("node-sample.properties"))?;
    let props = Props::on_top_of(
        &base,
        &aws,
        &stream,
        &app,
        &command_line(&[&node, &node_processor()]),
    )
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(
        &scratch.path,
        &props,
        &[
            ("NODE_PATH", node_path.into_os_string()),
            ("KCL_SAMPLE_OUTPUT", output.clone().into_os_string()),
        ],
    )?;

    daemon
        .until(LIMIT, "all 100 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let got = Output::read(&output).by_shard();
    for (shard, want) in &expected {
        assert_eq!(
            &got[shard], want,
            "{shard}: deliveries (exactly once, in order)"
        );
    }
    let a = aws.clone();
    let wanted = expected.clone();
    daemon
        .until(LIMIT, "every lease checkpointed at its last record", || {
            let (a, app, wanted) = (a.clone(), app.clone(), wanted.clone());
            async move {
                let leases = leases(&a, &app).await;
                wanted
                    .iter()
                    .all(|(shard, recs)| {
                        leases.get(shard).and_then(checkpoint_seq).as_deref()
                            == Some(recs.last().unwrap().0.as_str())
                    })
                    .then_some(())
            }
        })
        .await;
    let children = daemon.children();
    assert_eq!(children.len(), 4, "one node process per shard");
    for pid in &children {
        let cmd = testkit::clients::procs::cmdline(*pid).unwrap_or_default();
        assert!(cmd.contains("sample_processor.js"), "child {pid}: {cmd}");
    }

    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    assert_all_gone(&children);
    let out = Output::read(&output);
    for shard in expected.keys() {
        let inits = out.shard_events("initialize", shard);
        assert_eq!(inits.len(), 1, "{shard} restarted");
        // aws-kcl hands the initialize message's `streamName` (this daemon's extension) on.
        assert_eq!(
            inits[0].1.get(2),
            Some(&stream),
            "{shard}: the processor is told its stream"
        );
        assert_eq!(
            out.shard_events("shutdown_requested", shard).len(),
            1,
            "{shard}: shutdownRequested"
        );
        assert_eq!(
            out.shard_events("exit", shard).len(),
            1,
            "{shard}: clean exit"
        );
    }
    assert!(
        out.events("checkpoint_error").is_empty(),
        "{:?}",
        out.events("checkpoint_error")
    );
    for (shard, lease) in leases(&aws, &app).await {
        assert_eq!(lease.owner, None, "{shard}: released");
    }
    Ok(())
}
