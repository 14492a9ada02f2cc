//! SIGTERM to the daemon: graceful shutdown through the real kclpy client.

use std::time::Duration;

use kinesis_client::Checkpoint;

use crate::harness::*;
use testkit::LocalAws;

/// Children get `shutdownRequested` while the leases are still held and checkpoint there (the
/// processor does not checkpoint per batch in this test, so the checkpoints in the table come
/// from that call), then `leaseLost`; they exit on their own when their stdin closes; the
/// leases are released; the daemon exits 0 well within `shutdownGraceMillis`.
#[tokio::test]
async fn sigterm_checkpoints_releases_leases_and_reaps_children() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("sigterm")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-sigterm", 3, "t", 45).await?;
    let expected = expected_by_shard(&put);
    assert_eq!(expected.len(), 3);
    let app = testkit::unique_name("e2e-sigterm-app");
    let grace = Duration::from_secs(10);
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("shutdownGraceMillis", &grace.as_millis().to_string())
    .write(&scratch.file("app.properties"))?;
    let mut env = python_env(&kclpy, &output);
    env.push(("KCL_SAMPLE_SKIP_BATCH_CHECKPOINT", "1".into()));
    let mut daemon = Daemon::start(&scratch.path, &props, &env)?;
    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let before = leases(&aws, &app).await;
    for (shard, lease) in &before {
        assert_eq!(
            lease.checkpoint,
            Checkpoint::TrimHorizon,
            "{shard}: no checkpoint yet"
        );
        assert!(lease.owner.is_some(), "{shard}: held");
    }
    let children = daemon.children();
    assert_eq!(children.len(), 3, "one child per shard");

    let (status, took) = daemon.terminate(grace + Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took < grace,
        "graceful shutdown took {took:?} (grace {grace:?})"
    );
    assert_all_gone(&children);

    let out = Output::read(&output);
    for shard in expected.keys() {
        let requested = out.shard_events("shutdown_requested", shard);
        let lost = out.shard_events("lease_lost", shard);
        let exited = out.shard_events("exit", shard);
        assert_eq!(requested.len(), 1, "{shard}: shutdownRequested");
        assert_eq!(lost.len(), 1, "{shard}: leaseLost after shutdownRequested");
        assert_eq!(exited.len(), 1, "{shard}: exited on its own (stdin closed)");
        assert!(
            requested[0].0 < lost[0].0 && lost[0].0 < exited[0].0,
            "{shard}: order"
        );
    }
    let after = leases(&aws, &app).await;
    for (shard, recs) in &expected {
        let lease = &after[shard];
        assert_eq!(lease.owner, None, "{shard}: released");
        assert_eq!(
            checkpoint_seq(lease).as_deref(),
            Some(recs.last().unwrap().0.as_str()),
            "{shard}: checkpointed in shutdownRequested"
        );
    }
    assert_eq!(
        daemon.log().matches("child process exited").count(),
        3,
        "the daemon waited for each child"
    );
    Ok(())
}

/// The processor of one shard never answers `shutdownRequested`: the daemon still exits 0
/// shortly after `shutdownGraceMillis`, kills that child, leaves no child behind, and still
/// releases the leases.
#[tokio::test]
async fn sigterm_with_a_stuck_child_ends_within_the_grace_time() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("sigterm-stuck")?;
    let output = scratch.file("out.txt");
    let script = scratch.file("stuck_on_shutdown.py");
    let samples = recording_processor().parent().unwrap().to_path_buf();
    std::fs::write(
        &script,
        format!(
            r##"import os, sys, time
sys.path.insert(0, {:?})
import recording_processor as rp
from amazon_kclpy import kcl

class StuckOnShutdown(rp.RecordingProcessor):
    def shutdown_requested(self, shutdown_requested_input):
        if self.shard_id == "shardId-000000000000":
            rp.append(["#stuck " + self.shard_id])
            time.sleep(120)
        super().shutdown_requested(shutdown_requested_input)

if __name__ == "__main__":
    kcl.KCLProcess(StuckOnShutdown()).run()
"##,
            samples.display().to_string()
        ),
    )?;
    let (stream, put) = stream_with_records(&aws, "e2e-stuck", 2, "s", 20).await?;
    let app = testkit::unique_name("e2e-stuck-app");
    let grace = Duration::from_secs(3);
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &script]),
    )
    .set("shutdownGraceMillis", &grace.as_millis().to_string())
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;
    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let children = daemon.children();
    assert_eq!(children.len(), 2);

    let (status, took) = daemon.terminate(grace + Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took >= grace,
        "the stuck child got the whole grace time ({took:?})"
    );
    assert!(
        took < grace + Duration::from_secs(5),
        "the daemon exits soon after the grace time ({took:?})"
    );
    let out = Output::read(&output);
    assert_eq!(out.events("stuck").len(), 1);
    assert_eq!(
        out.shard_events("shutdown_requested", "shardId-000000000001")
            .len(),
        1
    );
    // The stuck child is killed, not left behind.
    assert_all_gone(&children);
    for (shard, lease) in leases(&aws, &app).await {
        assert_eq!(lease.owner, None, "{shard}: released");
    }
    Ok(())
}

/// A second SIGTERM during a graceful shutdown that a child holds up: the daemon exits at
/// once (status 130), and does not leave the stuck child behind.
#[tokio::test]
async fn a_second_sigterm_exits_at_once_without_leaving_children() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("sigterm-twice")?;
    let output = scratch.file("out.txt");
    let script = scratch.file("stuck_on_shutdown.py");
    let samples = recording_processor().parent().unwrap().to_path_buf();
    std::fs::write(
        &script,
        format!(
            r##"import os, sys, time
sys.path.insert(0, {:?})
import recording_processor as rp
from amazon_kclpy import kcl

class StuckOnShutdown(rp.RecordingProcessor):
    def shutdown_requested(self, shutdown_requested_input):
        rp.append(["#stuck " + self.shard_id])
        time.sleep(120)

if __name__ == "__main__":
    kcl.KCLProcess(StuckOnShutdown()).run()
"##,
            samples.display().to_string()
        ),
    )?;
    let (stream, put) = stream_with_records(&aws, "e2e-twice", 2, "w", 20).await?;
    let app = testkit::unique_name("e2e-twice-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &script]),
    )
    .set("shutdownGraceMillis", "60000")
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;
    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let children = daemon.children();
    assert_eq!(children.len(), 2);
    assert!(testkit::clients::procs::sigterm(daemon.pid));
    daemon
        .until(LIMIT, "both children stuck in shutdown_requested", || {
            std::future::ready((Output::read(&output).events("stuck").len() == 2).then_some(()))
        })
        .await;
    let (status, took) = daemon.terminate(Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(130), "exit status {status}");
    assert!(took < Duration::from_secs(5), "exited at once ({took:?})");
    // The children die with the daemon (give the kernel a moment to deliver the kill).
    let start = std::time::Instant::now();
    while children
        .iter()
        .any(|&p| testkit::clients::procs::is_running(p))
        && start.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_all_gone(&children);
    Ok(())
}

/// A daemon killed outright (SIGKILL: no graceful shutdown runs) takes its children with it,
/// even a child that ignores EOF on stdin (the real clients exit on EOF; this one does not).
#[tokio::test]
async fn sigkill_of_the_daemon_leaves_no_child_behind() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("sigkill-daemon")?;
    let output = scratch.file("out.txt");
    let script = scratch.file("ignores_eof.py");
    let samples = recording_processor().parent().unwrap().to_path_buf();
    std::fs::write(
        &script,
        format!(
            r##"import sys, time
sys.path.insert(0, {:?})
import recording_processor as rp
from amazon_kclpy import kcl

if __name__ == "__main__":
    kcl.KCLProcess(rp.RecordingProcessor()).run()
    # stdin reached EOF: a well-behaved child would exit now; this one lingers.
    time.sleep(300)
"##,
            samples.display().to_string()
        ),
    )?;
    let (stream, put) = stream_with_records(&aws, "e2e-sigkill", 2, "k", 10).await?;
    let app = testkit::unique_name("e2e-sigkill-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &script]),
    )
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;
    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let children = daemon.children();
    assert_eq!(children.len(), 2, "one child per shard");
    testkit::clients::procs::sigkill(daemon.pid);
    daemon.wait_exit(Duration::from_secs(10)).await?;
    let start = std::time::Instant::now();
    while children
        .iter()
        .any(|&p| testkit::clients::procs::is_running(p))
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_all_gone(&children);
    Ok(())
}
