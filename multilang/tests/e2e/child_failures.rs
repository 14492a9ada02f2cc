//! Children that die, crash, break the protocol or hang: each costs only its own shard a
//! restart from the last checkpoint; the daemon and the other shards go on.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;
use testkit::clients::procs;
use testkit::{LocalAws, PutResult};

/// Checks one shard whose child was replaced once: the first child delivered a prefix of the
/// shard in order; the second started from a checkpoint inside that prefix and delivered
/// everything after it, in order. Returns the records delivered twice (all after the
/// checkpoint the second child started from).
fn check_restarted_shard(out: &Output, shard: &str, expected: &[(String, Vec<u8>)]) -> Vec<String> {
    let want: Vec<String> = expected.iter().map(|r| r.0.clone()).collect();
    let inc = out.incarnations(shard);
    assert_eq!(inc.len(), 2, "{shard}: expected one restart, got {inc:?}");
    let (first_start, first_pid, first) = &inc[0];
    let (resume_at, second_pid, second) = &inc[1];
    assert_eq!(first_start, "TRIM_HORIZON", "{shard}: first child's start");
    assert_ne!(first_pid, second_pid, "{shard}: a new child process");
    assert_eq!(
        &want[..first.len()],
        &first[..],
        "{shard}: the first child got a prefix of the shard, in order"
    );
    let pos = want
        .iter()
        .position(|s| s == resume_at)
        .unwrap_or_else(|| panic!("{shard}: restarted at {resume_at}, not a record of the shard"));
    assert!(
        first.contains(resume_at),
        "{shard}: restarted at {resume_at}, which the first child never got (no checkpoint beyond delivery)"
    );
    assert_eq!(
        &want[pos + 1..],
        &second[..],
        "{shard}: the second child got everything after its checkpoint, in order"
    );
    let duplicates: Vec<String> = first[pos + 1..].to_vec();
    for d in &duplicates {
        assert!(seq_cmp(d, resume_at).is_gt());
    }
    duplicates
}

/// Checks a shard that was never restarted: exactly once, in order.
fn check_undisturbed_shard(out: &Output, shard: &str, expected: &[(String, Vec<u8>)]) {
    assert_eq!(
        out.shard_events("initialize", shard).len(),
        1,
        "{shard} must not have been restarted"
    );
    assert_eq!(
        out.by_shard().get(shard).map(Vec::as_slice).unwrap_or(&[]),
        expected,
        "{shard}: exactly once, in order"
    );
}

fn delivered_on(output: &Path, shard: &str) -> usize {
    Output::read(output)
        .records()
        .filter(|r| r.1 == shard)
        .count()
}

/// `kill -9` of one child while its shard is half consumed: the daemon stays up, a new child
/// for that shard resumes from the checkpoint (nothing lost; the only duplicates are records
/// after that checkpoint, at most one batch), the other shard is untouched.
#[tokio::test]
async fn sigkill_of_a_child_restarts_only_its_shard_from_the_checkpoint() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("sigkill")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-sigkill", 2, "k", 80).await?;
    let expected = expected_by_shard(&put);
    let victim = expected
        .iter()
        .max_by_key(|(_, r)| r.len())
        .map(|(s, _)| s.clone())
        .unwrap();
    assert!(expected[&victim].len() >= 20, "{:?}", expected.keys());
    let app = testkit::unique_name("e2e-sigkill-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("maxRecords", "5")
    .write(&scratch.file("app.properties"))?;
    let mut env = python_env(&kclpy, &output);
    env.push(("KCL_SAMPLE_BATCH_DELAY_MS", "150".into()));
    let mut daemon = Daemon::start(&scratch.path, &props, &env)?;

    let out_path = output.clone();
    let v = victim.clone();
    daemon
        .until(LIMIT, "10 records of the victim shard", || {
            std::future::ready((delivered_on(&out_path, &v) >= 10).then_some(()))
        })
        .await;
    let out = Output::read(&output);
    let (_, args) = out.shard_events("initialize", &victim).pop().unwrap();
    let pid: u32 = args[1].parse()?;
    assert!(
        daemon.children().contains(&pid),
        "the victim's processor {pid} is a child of the daemon {}: {:?}",
        daemon.pid,
        daemon.children()
    );
    assert!(procs::sigkill(pid), "kill -9 {pid}");
    let delivered_before_kill = delivered_on(&output, &victim);
    assert!(
        delivered_before_kill < expected[&victim].len(),
        "the kill must land mid-run ({delivered_before_kill} of {} delivered)",
        expected[&victim].len()
    );

    daemon
        .until(LIMIT, "all records after the kill", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    daemon.assert_running();
    assert!(!procs::is_running(pid), "the killed child is gone");
    let out = Output::read(&output);
    let duplicates = check_restarted_shard(&out, &victim, &expected[&victim]);
    assert!(
        duplicates.len() <= 5,
        "at most one batch (maxRecords = 5) was not checkpointed when the child died: {duplicates:?}"
    );
    for (shard, recs) in &expected {
        if *shard != victim {
            check_undisturbed_shard(&out, shard, recs);
        }
    }
    let log = daemon.log();
    assert!(
        log.contains("the shard restarts from its last checkpoint"),
        "the daemon logs the restart"
    );
    assert_eq!(
        daemon.children().len(),
        expected.len(),
        "one child per shard again"
    );

    let children = daemon.children();
    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    assert_all_gone(&children);
    Ok(())
}

/// A child that exits with status 1 in the middle of its shard (after recording a batch,
/// before checkpointing it): only that shard restarts, and exactly that batch is delivered
/// again.
#[tokio::test]
async fn a_crashing_child_costs_only_its_shard_a_restart() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("crash")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-crash", 2, "c", 60).await?;
    let expected = expected_by_shard(&put);
    assert!(
        expected.values().all(|r| r.len() >= 10),
        "both shards get 10+ records"
    );
    let app = testkit::unique_name("e2e-crash-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("maxRecords", "5")
    .write(&scratch.file("app.properties"))?;
    let mut env = python_env(&kclpy, &output);
    env.push(("KCL_SAMPLE_CRASH_AFTER", "10".into()));
    let mut daemon = Daemon::start(&scratch.path, &props, &env)?;

    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    daemon.assert_running();
    let out = Output::read(&output);
    let crashes = out.events("crash");
    assert_eq!(crashes.len(), 1, "exactly one child crashed: {crashes:?}");
    let crashed = crashes[0].1.clone();
    let duplicates = check_restarted_shard(&out, &crashed, &expected[&crashed]);
    // The crash came right after the second batch (records 6..=10) was recorded and before
    // it was checkpointed: that batch, and only it, is delivered again.
    let want: Vec<String> = expected[&crashed][5..10]
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(duplicates, want, "{crashed}: redelivered after the crash");
    for (shard, recs) in &expected {
        if *shard != crashed {
            check_undisturbed_shard(&out, shard, recs);
        }
    }
    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

/// Per-shard misbehaviour on top of the recording processor, written into the test's
/// directory: every child prints non-protocol noise on stdout (which the daemon must skip);
/// on its second batch, shard 0's child sends a status for the wrong action (a protocol
/// violation) and shard 1's child hangs. Each happens once (marker files).
const MISBEHAVING: &str = r##"
import os, sys, time
sys.path.insert(0, SAMPLES_DIR)
import recording_processor as rp
from amazon_kclpy import kcl

MODES = {"shardId-000000000000": "garbage", "shardId-000000000001": "hang"}

def once(name):
    try:
        os.close(os.open(os.path.join(MARKER_DIR, name + ".done"), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False

class Misbehaving(rp.RecordingProcessor):
    def process_records(self, process_records_input):
        sys.stdout.write("plain text on stdout is not a protocol message\n")
        sys.stdout.write('{"unrelated": "json without an action"}\n')
        sys.stdout.flush()
        mode = MODES.get(self.shard_id)
        if mode and self.recorded >= 5 and once(mode):
            rp.append(["#misbehave {} {} {}".format(self.shard_id, mode, os.getpid())])
            if mode == "garbage":
                sys.stdout.write('\n{"action": "status", "responseFor": "shardEnded"}\n')
                sys.stdout.flush()
            time.sleep(120)
        super().process_records(process_records_input)

if __name__ == "__main__":
    p = Misbehaving()
    kcl.KCLProcess(p).run()
    rp.append(["#exit {} {}".format(p.shard_id, os.getpid())])
"##;

/// A child that breaks the protocol and one that hangs past `timeoutInSeconds` are killed and
/// restarted from their checkpoints; a third shard is never restarted and keeps delivering
/// while the hung child waits for its timeout; the daemon stays up.
#[tokio::test]
async fn protocol_violation_and_hang_cost_only_their_shards_a_restart() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("garbage-hang")?;
    let output = scratch.file("out.txt");
    let script = recording_variant(
        &scratch,
        "misbehaving.py",
        &format!(
            "MARKER_DIR = {:?}\n{MISBEHAVING}",
            scratch.path.display().to_string()
        ),
    )?;
    // The processor runs under a wrapper that does not exec it (as `npm start` or a venv
    // shim): killing the daemon's direct child must kill the real processor too.
    let wrapper = scratch.file("wrapper.sh");
    std::fs::write(&wrapper, "#!/bin/sh\n\"$@\"\nexit $?\n")?;
    let (stream, mut put) = stream_with_records(&aws, "e2e-garbage", 3, "g", 45).await?;
    let expected = expected_by_shard(&put);
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        assert!(expected[shard].len() >= 6, "{shard} needs a second batch");
    }
    let app = testkit::unique_name("e2e-garbage-app");
    // Long enough for the undisturbed shard to show progress while shard 1 hangs.
    let timeout_secs = 5;
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[Path::new("sh"), &wrapper, &kclpy.python, &script]),
    )
    .set("maxRecords", "5")
    .set("timeoutInSeconds", &timeout_secs.to_string())
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;

    // While shard 1's child hangs, put more records: the undisturbed shard 2 must deliver its
    // share before shard 1's replacement child even starts.
    let out_path = output.clone();
    daemon
        .until(LIMIT, "shard 1's child to hang", || {
            let hung = Output::read(&out_path)
                .events("misbehave")
                .iter()
                .any(|(_, shard, args)| shard == "shardId-000000000001" && args[0] == "hang");
            std::future::ready(hung.then_some(()))
        })
        .await;
    let during_hang = testkit::put_records(
        &aws.kinesis_client(),
        &stream,
        testkit::numbered_records("during-hang", 30),
    )
    .await?;
    put.extend(during_hang.iter().cloned());
    daemon
        .until(LIMIT, "all records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    daemon.assert_running();

    let out = Output::read(&output);
    let expected: BTreeMap<String, Vec<(String, Vec<u8>)>> = expected_by_shard(&put);
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let duplicates = check_restarted_shard(&out, shard, &expected[shard]);
        assert!(
            duplicates.is_empty(),
            "{shard} misbehaved before recording its batch, so nothing is delivered twice: {duplicates:?}"
        );
    }
    check_undisturbed_shard(
        &out,
        "shardId-000000000002",
        &expected["shardId-000000000002"],
    );
    let hang_replaced_at = out.shard_events("initialize", "shardId-000000000001")[1].0;
    let shard2_during_hang = out
        .records()
        .filter(|r| r.1 == "shardId-000000000002" && r.0 < hang_replaced_at)
        .filter(|r| {
            during_hang
                .iter()
                .any(|p: &PutResult| p.sequence_number == r.2)
        })
        .count();
    assert!(
        shard2_during_hang > 0,
        "shard 2 kept delivering while shard 1 hung (no new record of shard 2 before shard 1 restarted)"
    );
    // The killed children's real processes (under the wrapper) are gone too.
    for (_, shard, args) in out.events("misbehave") {
        let pid: u32 = args[1].parse()?;
        assert!(
            !procs::is_running(pid),
            "{shard}: the processor under the wrapper (pid {pid}) still runs after its restart"
        );
    }
    let processors: Vec<u32> = out
        .events("initialize")
        .iter()
        .map(|(_, _, args)| args[1].parse())
        .collect::<Result<_, _>>()?;
    let log = daemon.log();
    assert!(
        log.contains("protocol violation"),
        "the daemon names the protocol violation"
    );
    assert!(
        log.contains("(timeoutInSeconds)"),
        "the daemon names the timeout"
    );
    assert!(
        log.contains("skipping unexpected line on child stdout")
            && log.contains("plain text on stdout is not a protocol message"),
        "the noise on stdout is logged as skipped"
    );

    let children = daemon.children();
    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    assert_all_gone(&children);
    assert_all_gone(&processors);
    Ok(())
}
