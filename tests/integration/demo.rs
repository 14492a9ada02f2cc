//! Issue 6: the demo runs to a passing verdict (short mode, on this test run's services).

use crate::common::aws;
use std::path::PathBuf;

fn demo_binary() -> PathBuf {
    // target/<profile>/deps/integration-<hash> → target/<profile>/examples/demo
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap();
    let bin = profile.join("examples").join("demo");
    assert!(
        bin.exists(),
        "the demo example was not built at {} (cargo test builds examples)",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_demo_reaches_a_passing_verdict() {
    let aws = aws().await;
    let out = tokio::process::Command::new(demo_binary())
        .args([
            "--duration",
            "20",
            "--rate",
            "20",
            "--failover",
            "3",
            "--plain",
        ])
        .env("CI", "true")
        .env("KCL_KINESIS_ENDPOINT", aws.kinesis_endpoint())
        .env("KCL_DYNAMODB_ENDPOINT", aws.dynamodb_endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("\nPASSED"),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for check in [
        "records produced",
        "duplicates",
        "per-shard order held",
        "parents before children",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("PASS") && l.contains(check)),
            "verdict line {check:?} missing:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("split shardId")
            && stdout.contains("merged shardId")
            && stdout.contains("killed worker"),
        "{stdout}"
    );
}
