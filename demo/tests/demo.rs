//! The demo runs to a passing verdict (short mode, on this test's local services), in the order a
//! newcomer meets it: the demo's executable alone, with no `kcl-multilang` binary built.

use std::path::PathBuf;
use testkit::LocalAws;

#[tokio::test]
async fn the_demo_reaches_a_passing_verdict() {
    let aws = match LocalAws::shared().await {
        Ok(aws) => aws,
        Err(e) => panic!("the demo's test needs a Kinesis and a DynamoDB endpoint: {e:#}"),
    };
    // A newcomer's first `cargo run --release -p demo` has built the demo and nothing else: run a
    // copy of it from a directory where no `kcl-multilang` exists (the demo must not need one).
    let alone = std::env::temp_dir().join(format!("kcl-demo-alone-{}", std::process::id()));
    std::fs::create_dir_all(&alone).unwrap();
    let demo = alone.join("demo");
    std::fs::copy(env!("CARGO_BIN_EXE_demo"), &demo).expect("copy the demo executable");
    assert!(!alone.join("kcl-multilang").exists());
    let out = tokio::process::Command::new(&demo)
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
        .env("PATH", path_without_kcl_multilang())
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
    // It says where its metrics are, and shows the lag per shard from them.
    assert!(
        stdout.contains("metrics (Prometheus): http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("lag ms (kcl_behind_latest_seconds)")
                && l.split("(kcl_behind_latest_seconds)")
                    .nth(1)
                    .is_some_and(|v| v.contains('='))),
        "no lag from the metrics in the live view:\n{stdout}"
    );
    assert!(
        stdout.contains("split shardId")
            && stdout.contains("merged shardId")
            && stdout.contains("killed worker"),
        "{stdout}"
    );
    // The timeline starts only once every worker holds a lease, and its events are spread
    // over it (a starved start squeezes them into the same second).
    let at = |what: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("event {what:?} missing:\n{stdout}"));
        line.trim()
            .split('s')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(at("all hold leases"), 0.0, "{stdout}");
    let (split, merge, kill) = (
        at("split shardId"),
        at("merged shardId"),
        at("killed worker"),
    );
    assert!(
        split >= 4.0 && merge >= split + 3.0 && kill >= merge + 3.0,
        "split {split}s, merge {merge}s, kill {kill}s:\n{stdout}"
    );
    let _ = std::fs::remove_dir_all(&alone);
}

/// `PATH` without any directory that holds a `kcl-multilang` executable.
fn path_without_kcl_multilang() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("kcl-multilang").exists())
        .collect();
    std::env::join_paths(dirs).unwrap()
}
