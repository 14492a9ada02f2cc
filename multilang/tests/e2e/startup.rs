//! Start-up: a signal during any stage ends the daemon at once; start-up errors name what to
//! fix (an `executableName` that does not resolve, a byte-order mark); secrets are never echoed.

use std::time::{Duration, Instant};

use crate::harness::*;
use testkit::LocalAws;

/// A loopback port nothing listens on.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Properties for a daemon whose services are the given endpoints.
fn props(kinesis: &str, dynamodb: &str) -> String {
    format!(
        "executableName = python3 app.py\n\
         streamName = some-stream\n\
         applicationName = {}\n\
         AwsCredentialsProvider = KclStaticCredentialsProvider|test|test\n\
         regionName = us-east-1\n\
         kinesisEndpoint = {kinesis}\n\
         dynamoDBEndpoint = {dynamodb}\n\
         metricsLevel = NONE\n",
        testkit::unique_name("e2e-startup-app")
    )
}

/// Starts the daemon on `text`, waits for `stage` in its log, then sends `signal` and returns
/// (exit code, seconds from the signal to the exit, log).
async fn signal_during(
    name: &str,
    text: &str,
    stage: &str,
    signal: &str,
) -> anyhow::Result<(Option<i32>, Duration, String)> {
    let scratch = Scratch::new(name)?;
    let path = scratch.file("app.properties");
    std::fs::write(&path, text)?;
    let mut daemon = Daemon::start(&scratch.path, &path, &[])?;
    daemon.until_logged(LIMIT, stage).await;
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args([signal, &daemon.pid.to_string()])
        .status()?;
    assert!(status.success(), "kill {signal}");
    let status = daemon.wait_exit(Duration::from_secs(30)).await?;
    Ok((status.code(), sent.elapsed(), daemon.log()))
}

/// The lease table unreachable (table creation retries for about a minute): SIGTERM and
/// SIGINT end the daemon within two seconds, with exit code 0.
#[tokio::test]
async fn a_signal_while_the_lease_table_is_unreachable_stops_the_daemon_at_once(
) -> anyhow::Result<()> {
    for signal in ["-TERM", "-INT"] {
        let text = props(&closed_port_url(), &closed_port_url());
        let (code, took, log) = signal_during(
            "startup-table",
            &text,
            "lease table not ready; retrying",
            signal,
        )
        .await?;
        assert_eq!(code, Some(0), "{signal}: {log}");
        assert!(
            took < Duration::from_secs(2),
            "{signal}: took {took:?}\n{log}"
        );
        assert!(log.contains("during start-up"), "{log}");
    }
    Ok(())
}

/// The lease table fine, the stream unreachable (the first shard sync retries): SIGTERM ends
/// the daemon within two seconds, with exit code 0.
#[tokio::test]
async fn a_signal_during_the_first_shard_sync_stops_the_daemon_at_once() -> anyhow::Result<()> {
    let aws = LocalAws::shared().await?;
    let text = props(&closed_port_url(), aws.dynamodb_endpoint());
    let (code, took, log) = signal_during(
        "startup-sync",
        &text,
        "shard sync failed; retrying",
        "-TERM",
    )
    .await?;
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "took {took:?}\n{log}");
    Ok(())
}

/// Runs the binary on `text` and waits for it to exit; returns (exit code, output).
async fn run_to_exit(name: &str, text: &[u8]) -> anyhow::Result<(Option<i32>, String)> {
    let scratch = Scratch::new(name)?;
    let path = scratch.file("app.properties");
    std::fs::write(&path, text)?;
    std::fs::write(scratch.file("data.py"), "print('not executable')\n")?;
    let mut daemon = Daemon::start(&scratch.path, &path, &[])?;
    let status = daemon.wait_exit(Duration::from_secs(20)).await?;
    Ok((status.code(), daemon.log()))
}

/// An `executableName` whose program is not on PATH, or is not an executable file, is an
/// error at start (exit code 2) naming the key, the value and the line.
#[tokio::test]
async fn an_executable_that_does_not_resolve_is_an_error_at_start() -> anyhow::Result<()> {
    let base = props(&closed_port_url(), &closed_port_url());
    for (value, says) in [
        ("pyhton3 app.py", "was not found on PATH"),
        ("./data.py", "not executable"),
        ("./missing/app.py", "no such file"),
    ] {
        let text = format!("# first line\n{}", base.replace("python3 app.py", value));
        let (code, log) = run_to_exit("startup-exe", text.as_bytes()).await?;
        assert_eq!(code, Some(2), "{value}: {log}");
        for needle in ["properties line 2", "executableName", value, says] {
            assert!(
                log.contains(needle),
                "{value}: {needle:?} missing from:\n{log}"
            );
        }
        assert!(!log.contains("restarting shard"), "{log}");
    }
    Ok(())
}

/// A file saved with a UTF-8 byte-order mark is read correctly: its first key is known.
#[tokio::test]
async fn a_byte_order_mark_does_not_hide_the_first_key() -> anyhow::Result<()> {
    let text = props(&closed_port_url(), &closed_port_url())
        .replace("python3 app.py", "no-such-program-kcl app.py");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(text.as_bytes());
    let (code, log) = run_to_exit("startup-bom", &bytes).await?;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("properties line 1: executableName") && log.contains("was not found on PATH"),
        "the first key must be read as executableName:\n{log}"
    );
    assert!(!log.contains("unknown key"), "{log}");
    Ok(())
}

const SECRET: &str = "wJalrXUtnFEMI0K7MDENG0bPxRfiCYSECRET";
const TOKEN: &str = "FwoGZXIvYXdzTOKENTOKEN0123456789";

/// Credentials never reach the output: not in the error for a malformed credentials line, and
/// not in the logs of a daemon that starts with valid static credentials (at debug level).
#[tokio::test]
async fn secrets_are_never_echoed() -> anyhow::Result<()> {
    let base = props(&closed_port_url(), &closed_port_url());
    let malformed = base.replace(
        "KclStaticCredentialsProvider|test|test",
        &format!("KclStaticCredentialsProvider|AKIAEXAMPLE|{SECRET}|{TOKEN}|extra"),
    );
    let (code, log) = run_to_exit("startup-secret", malformed.as_bytes()).await?;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("properties line 4: AwsCredentialsProvider"),
        "{log}"
    );
    assert!(
        log.contains("KclStaticCredentialsProvider|***|***|***|***"),
        "{log}"
    );
    for (what, secret) in [("secret key", SECRET), ("session token", TOKEN)] {
        assert!(!log.contains(secret), "the {what} was echoed:\n{log}");
    }

    // Valid credentials, debug logging, through start-up to a SIGTERM.
    let valid = base
        .replace(
            "KclStaticCredentialsProvider|test|test",
            &format!("KclStaticCredentialsProvider|AKIAEXAMPLE|{SECRET}|{TOKEN}"),
        )
        .replace("executableName", "bogusKey = 1\nexecutableName");
    let scratch = Scratch::new("startup-secret-run")?;
    let path = scratch.file("app.properties");
    std::fs::write(&path, valid)?;
    let mut daemon = Daemon::start(&scratch.path, &path, &[("RUST_LOG", "debug".into())])?;
    daemon
        .until_logged(LIMIT, "lease table not ready; retrying")
        .await;
    let (status, _) = daemon.terminate(LIMIT).await?;
    let log = daemon.log();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("unknown key bogusKey"), "{log}");
    for (what, secret) in [("secret key", SECRET), ("session token", TOKEN)] {
        assert!(!log.contains(secret), "the {what} was logged:\n{log}");
    }
    Ok(())
}

/// The Prometheus port is taken: the daemon cannot start (exit code 1) and says which address.
#[tokio::test]
async fn a_prometheus_port_in_use_is_an_error_at_start() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let text = format!(
        "{}metricsPrometheusPort = {port}\n",
        props(&closed_port_url(), &closed_port_url()).replace("python3 app.py", "sh")
    );
    let (code, log) = run_to_exit("prometheus-port", text.as_bytes()).await?;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{log}"
    );
    Ok(())
}
