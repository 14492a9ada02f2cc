//! The examples run as documented (the graceful-shutdown one, end to end).

use crate::common::aws;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore};
use std::time::Duration;

#[tokio::test]
async fn graceful_shutdown_example_checkpoints_and_releases_on_sigterm() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("example");
    let app = testkit::unique_name("example-app");
    testkit::create_stream(&kinesis, &stream, 2).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("examples")
        .join("graceful_shutdown");
    let child = tokio::process::Command::new(&bin)
        .args([&stream, &app])
        .env("KCL_KINESIS_ENDPOINT", aws.kinesis_endpoint())
        .env("KCL_DYNAMODB_ENDPOINT", aws.dynamodb_endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    // The example starts at LATEST: wait until it holds both leases, then produce.
    let mut held = false;
    for _ in 0..300 {
        held = store
            .list_leases()
            .await
            .map(|l| l.len() == 2 && l.iter().all(|l| l.owner.is_some()))
            .unwrap_or(false);
        if held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the example never took both leases");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let put = testkit::put_records(&kinesis, &stream, testkit::numbered_records("ex", 20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits within 30 s")
        .unwrap();
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
