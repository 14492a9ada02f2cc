//! The examples run as documented (the graceful-shutdown one, end to end).

use crate::common::aws;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore};
use std::time::Duration;

/// Start `examples/<name>` (built by `cargo test`) on `stream` as application `app`, against
/// the local services, in `dir` (or the current directory).
fn spawn_example(
    name: &str,
    aws: &testkit::LocalAws,
    stream: &str,
    app: &str,
    dir: Option<&std::path::Path>,
) -> tokio::process::Child {
    spawn_example_with(name, aws, &[stream, app], dir)
}

/// Start `examples/<name>` with `args`, as [`spawn_example`].
fn spawn_example_with(
    name: &str,
    aws: &testkit::LocalAws,
    args: &[&str],
    dir: Option<&std::path::Path>,
) -> tokio::process::Child {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("examples")
        .join(name);
    let mut command = tokio::process::Command::new(&bin);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .args(args)
        .env("KCL_KINESIS_ENDPOINT", aws.kinesis_endpoint())
        .env("KCL_DYNAMODB_ENDPOINT", aws.dynamodb_endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (built by `cargo test`): {e}", bin.display()))
}

/// Send `signal` (e.g. `-TERM`) to the example and wait (at most 30 s) for it to exit.
async fn signal_and_wait(child: tokio::process::Child, signal: &str) -> std::process::Output {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits within 30 s")
        .unwrap()
}

/// Wait until the lease table has `n` leases, all held.
async fn wait_for_leases(store: &DynamoDbLeaseStore, n: usize) {
    for _ in 0..300 {
        let held = store
            .list_leases()
            .await
            .map(|l| l.len() == n && l.iter().all(|l| l.owner.is_some()))
            .unwrap_or(false);
        if held {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the example never took its {n} lease(s)");
}

#[tokio::test]
async fn graceful_shutdown_example_checkpoints_and_releases_on_sigterm() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("example");
    let app = testkit::unique_name("example-app");
    testkit::create_stream(&kinesis, &stream, 2).await.unwrap();
    let child = spawn_example("graceful_shutdown", &aws, &stream, &app, None);
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    // The example starts at LATEST: wait until it holds both leases, then produce.
    wait_for_leases(&store, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let put = testkit::put_records(&kinesis, &stream, testkit::numbered_records("ex", 20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = signal_and_wait(child, "-TERM").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(stderr.contains("leases released"), "{stderr}");
    let leases = store.list_leases().await.unwrap();
    for lease in leases {
        assert_eq!(lease.owner, None, "{} released", lease.key);
        let last = put
            .iter()
            .filter(|p| p.shard_id == lease.key)
            .map(|p| p.sequence_number.clone())
            .max_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        if let Some(last) = last {
            assert_eq!(
                lease.checkpoint,
                kinesis_client::Checkpoint::sequence(last, 0).unwrap(),
                "{} checkpointed at shutdown",
                lease.key
            );
        }
    }
}

/// `examples/dead_letter.rs` end to end on the local services: a batch `1 2 3 x` fails at
/// `x` (not a number) after reporting `1 2 3` done, so only `x` is delivered again; after
/// 3 deliveries the retry policy hands it to the hook, which writes it to the dead-letter
/// file and skips it; the next record is processed and checkpointed, and the sum counts
/// `1 2 3` once.
#[tokio::test]
async fn dead_letter_example_skips_the_poison_record_after_three_attempts() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("dead-letter");
    let app = testkit::unique_name("dead-letter-app");
    testkit::create_stream(&kinesis, &stream, 1).await.unwrap();
    let dir = std::env::temp_dir().join(testkit::unique_name("dead-letter"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = spawn_example("dead_letter", &aws, &stream, &app, Some(&dir));
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    wait_for_leases(&store, 1).await;
    // It starts at LATEST: let its first iterator exist before producing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = |data: &[&str]| {
        data.iter()
            .enumerate()
            .map(|(i, d)| testkit::PutRecord {
                partition_key: format!("pk-{i}"),
                data: d.as_bytes().to_vec(),
            })
            .collect::<Vec<_>>()
    };
    let first = testkit::put_records(&kinesis, &stream, records(&["1", "2", "3", "x"]))
        .await
        .unwrap();
    let dead_letter = dir.join("dead-letter.tsv");
    let mut written = String::new();
    for _ in 0..600 {
        written = std::fs::read_to_string(&dead_letter).unwrap_or_default();
        if !written.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let poison = first.iter().find(|p| p.data == b"x").unwrap();
    assert_eq!(
        written,
        format!("{}\t{}\tx\n", poison.shard_id, poison.sequence_number),
        "only the poison record is dead-lettered"
    );
    let next = testkit::put_records(&kinesis, &stream, records(&["10"]))
        .await
        .unwrap();
    let mut checkpointed = false;
    for _ in 0..600 {
        let lease = store.get_lease(&poison.shard_id).await.unwrap().unwrap();
        checkpointed = lease.checkpoint
            == kinesis_client::Checkpoint::sequence(next[0].sequence_number.clone(), 0).unwrap();
        if checkpointed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        checkpointed,
        "the record after the poison one is processed and checkpointed"
    );
    let out = signal_and_wait(child, "-INT").await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(stdout.contains("sum so far: 16"), "{stdout}");
    assert!(
        !stdout.contains("sum so far: 22"),
        "1 2 3 counted once: {stdout}"
    );
    assert!(
        stderr.contains("delivery #2") && stderr.contains("delivery #3"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped 1 records in all"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/multi_stream.rs` on two streams: it identifies both (DescribeStreamSummary),
/// leases their shards in one table in the Java KCL's multi-stream format, and its processors
/// print each batch with its stream.
#[tokio::test]
async fn multi_stream_example_consumes_both_streams() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let app = testkit::unique_name("multi-example-app");
    let mut streams = Vec::new();
    for (prefix, shards) in [("multi-example-a", 1), ("multi-example-b", 2)] {
        let stream = testkit::unique_name(prefix);
        testkit::create_stream(&kinesis, &stream, shards)
            .await
            .unwrap();
        testkit::put_records(&kinesis, &stream, testkit::numbered_records(prefix, 10))
            .await
            .unwrap();
        streams.push(stream);
    }
    let child = spawn_example_with(
        "multi_stream",
        &aws,
        &[&app, &streams[0], &streams[1]],
        None,
    );
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    wait_for_leases(&store, 3).await;
    let leases = store.list_leases().await.unwrap();
    for stream in &streams {
        let of_stream = leases
            .iter()
            .filter(|l| {
                l.multi_stream
                    .as_ref()
                    .is_some_and(|m| m.stream.name() == stream)
            })
            .count();
        assert!(of_stream > 0, "{stream} leased: {leases:?}");
    }
    // Every record printed (TRIM_HORIZON), then a clean stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let out = signal_and_wait(child, "-INT").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in &streams {
        let printed: usize = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{stream} ")))
            .filter_map(|l| {
                l.rsplit(": ")
                    .next()?
                    .strip_suffix(" records")?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        assert_eq!(printed, 10, "{stream}: {stdout}");
    }
}
