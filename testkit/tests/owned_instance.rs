//! Service processes never outlive their owner: an owned instance kills them on drop, and a
//! shared (static, never dropped) instance's processes die with the test process.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testkit::{Backend, LocalAws};

/// True while `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// The two tests below each start services; on 2 cores they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn owned_instance_kills_its_processes_on_drop() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Runtime::new()?.block_on(owned_instance())
}

async fn owned_instance() -> anyhow::Result<()> {
    let aws = LocalAws::start().await?;
    println!("{}", aws.startup_report());
    if aws.backend() != Backend::LocalProcesses {
        println!(
            "backend {:?} starts no child processes: nothing to check",
            aws.backend()
        );
        return Ok(());
    }
    let pids: Vec<u32> = aws.services().iter().filter_map(|s| s.pid).collect();
    assert_eq!(pids.len(), 2, "{:?}", aws.services());
    for &pid in &pids {
        assert!(alive(pid), "service {pid} should run");
    }
    aws.kinesis_client().list_streams().send().await?;
    aws.dynamodb_client().list_tables().send().await?;
    drop(aws);
    for &pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} survived the drop"
        );
    }
    Ok(())
}

const HELPER_ENV: &str = "TESTKIT_ORPHAN_HELPER";

/// Helper for `shared_instance_dies_with_the_process`: does nothing unless that test runs this
/// binary again with `TESTKIT_ORPHAN_HELPER` set; then it starts the shared instance, prints its
/// pids and lets the process exit with the instance still held by the `static`.
#[tokio::test]
async fn orphan_helper() -> anyhow::Result<()> {
    if std::env::var_os(HELPER_ENV).is_none() {
        return Ok(());
    }
    let aws = LocalAws::shared().await?;
    let pids: Vec<String> = aws
        .services()
        .iter()
        .filter_map(|s| s.pid)
        .map(|p| p.to_string())
        .collect();
    println!("HELPER_BACKEND={:?}", aws.backend());
    println!("HELPER_PIDS={}", pids.join(","));
    Ok(())
}

#[test]
fn shared_instance_dies_with_the_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "orphan_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim()))
            .unwrap_or_else(|| panic!("no {key} in helper output: {stdout}"))
            .to_string()
    };
    let backend = field("HELPER_BACKEND=");
    if backend != "LocalProcesses" {
        println!("backend {backend} starts no child processes: nothing to check");
        return;
    }
    let pids: Vec<u32> = field("HELPER_PIDS=")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "service {pid} outlived the process that held the shared instance"
        );
    }
}
