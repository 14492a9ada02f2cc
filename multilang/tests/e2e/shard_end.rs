//! A child that answers `shardEnded` without recording `SHARD_END`: the daemon asks it again
//! until it does, and the parent's children wait until then.

use kinesis_client::Checkpoint;

use crate::harness::*;
use testkit::LocalAws;

/// The recording processor, except that its first `shard_ended` checkpoints the first record
/// it got (an earlier sequence number, not SHARD_END; checkpointing the last record would
/// record SHARD_END, as in the Java KCL) and returns. It never checkpoints batches
/// (`KCL_SAMPLE_SKIP_BATCH_CHECKPOINT`), so that checkpoint succeeds.
const STUBBORN: &str = r##"
import os, sys
sys.path.insert(0, SAMPLES_DIR)
import recording_processor as rp
from amazon_kclpy import kcl

class Stubborn(rp.RecordingProcessor):
    def __init__(self):
        super().__init__()
        self.asked = 0
        self.first = None

    def process_records(self, process_records_input):
        if process_records_input.records and self.first is None:
            self.first = process_records_input.records[0]
        super().process_records(process_records_input)

    def shard_ended(self, shard_ended_input):
        self.asked += 1
        if self.asked == 1 and self.first is not None:
            rp.append(["#early_checkpoint {} {} {}".format(self.shard_id, os.getpid(), self.first.sequence_number)])
            self.checkpoint(shard_ended_input.checkpointer, self.first.sequence_number, self.first.sub_sequence_number)
            return
        super().shard_ended(shard_ended_input)

if __name__ == "__main__":
    kcl.KCLProcess(Stubborn()).run()
"##;

/// The first answer to `shardEnded` checkpoints an earlier record instead of SHARD_END. The
/// daemon keeps that child, says in its log which shard is blocked and why, and asks it again;
/// its second answer records SHARD_END and the children's records follow. (Before, the child
/// was ended after its first answer and every retry returned at once: the parent never
/// reached SHARD_END and its children never started.)
#[tokio::test]
async fn a_shard_end_answered_without_shard_end_is_asked_again_of_the_same_child(
) -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("shard-end")?;
    let output = scratch.file("out.txt");
    let script = recording_variant(&scratch, "stubborn.py", STUBBORN)?;
    let (stream, mut put) = stream_with_records(&aws, "e2e-shard-end", 1, "before", 10).await?;
    let app = testkit::unique_name("e2e-shard-end-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &script]),
    )
    .set("cleanupLeasesUponShardCompletion", "false")
    .write(&scratch.file("app.properties"))?;
    let mut env = python_env(&kclpy, &output);
    env.push(("KCL_SAMPLE_SKIP_BATCH_CHECKPOINT", "1".into()));
    let mut daemon = Daemon::start(&scratch.path, &props, &env)?;
    daemon
        .until(LIMIT, "the first 10 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let kinesis = aws.kinesis_client();
    let (parent, children) = split_first_shard(&kinesis, &stream).await?;
    put.extend(
        testkit::put_records(&kinesis, &stream, testkit::numbered_records("after", 20)).await?,
    );
    daemon
        .until(LIMIT, "every record, the children's included", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    daemon.assert_running();

    let out = Output::read(&output);
    let early = out.shard_events("early_checkpoint", &parent);
    assert_eq!(early.len(), 1, "the first answer did not record SHARD_END");
    let ended = out.shard_events("shard_ended", &parent);
    assert_eq!(ended.len(), 1, "then SHARD_END was recorded");
    assert_eq!(
        out.shard_events("initialize", &parent).len(),
        1,
        "the same child was asked again (no restart)"
    );
    assert_eq!(
        early[0].1[0],
        out.shard_events("initialize", &parent)[0].1[1]
    );
    for child in &children {
        if let Some(first) = out.records().find(|r| r.1 == child).map(|r| r.0) {
            assert!(
                first > ended[0].0,
                "{child}'s first record must come after {parent} recorded SHARD_END"
            );
        }
    }
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("without checkpointing SHARD_END") && l.contains(parent.as_str())),
        "the daemon names the blocked shard:\n{log}"
    );
    let leases = leases(&aws, &app).await;
    assert_eq!(leases[&parent].checkpoint, Checkpoint::ShardEnd, "{parent}");
    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
