//! Driver tests over in-memory pipes with scripted fake children.

use std::collections::VecDeque;

use tokio::io::{duplex, AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::protocol::{DaemonMessage, WireRecord};

const SHARD: &str = "shardId-000000000000";
const SEQ: &str = "49590338271490256608559692538361571095921575989136588803";

type TestDriver = Driver<DuplexStream, BufReader<DuplexStream>>;

/// The child's end of the pipes.
struct FakeChild {
    stdin: BufReader<DuplexStream>,
    stdout: DuplexStream,
}

impl FakeChild {
    /// The next line the daemon wrote, without `\n`; `None` once stdin is closed.
    async fn recv(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self.stdin.read_line(&mut line).await.expect("child read");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "daemon line not terminated: {line:?}");
        line.pop();
        Some(line)
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stdout.write_all(bytes).await.expect("child write");
    }

    /// kclpy framing: `"\n" + json + "\n"`.
    async fn send(&mut self, json: &str) {
        self.send_raw(format!("\n{json}\n").as_bytes()).await;
    }
}

fn pair_with_capacity(timeout: Option<Duration>, capacity: usize) -> (TestDriver, FakeChild) {
    let (daemon_stdin, child_stdin) = duplex(capacity);
    let (child_stdout, daemon_stdout) = duplex(capacity);
    (
        Driver::new(SHARD, daemon_stdin, BufReader::new(daemon_stdout), timeout),
        FakeChild {
            stdin: BufReader::new(child_stdin),
            stdout: child_stdout,
        },
    )
}

fn pair(timeout: Option<Duration>) -> (TestDriver, FakeChild) {
    pair_with_capacity(timeout, 64 * 1024)
}

/// Records checkpoint calls and answers from a script (default: success).
#[derive(Default)]
struct Recorder {
    calls: Vec<(Option<String>, Option<u64>)>,
    results: VecDeque<Result<(), CheckpointFailure>>,
    delay: Option<Duration>,
}

#[async_trait::async_trait]
impl CheckpointHandler for Recorder {
    async fn checkpoint(
        &mut self,
        sequence_number: Option<String>,
        sub_sequence_number: Option<u64>,
    ) -> Result<(), CheckpointFailure> {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        self.calls.push((sequence_number, sub_sequence_number));
        self.results.pop_front().unwrap_or(Ok(()))
    }
}

fn initialize() -> DaemonMessage {
    DaemonMessage::Initialize {
        shard_id: SHARD.into(),
        sequence_number: Some("TRIM_HORIZON".into()),
        sub_sequence_number: Some(0),
        stream_name: None,
    }
}

fn process_records() -> DaemonMessage {
    DaemonMessage::ProcessRecords {
        records: vec![WireRecord::new(b"hello-3", "pk-3", SEQ, 0, None)],
        millis_behind_latest: Some(0),
    }
}

fn reply(seq: Option<&str>, sub: Option<u64>, error: Option<&str>) -> String {
    let q = |s: Option<&str>| s.map_or("null".to_string(), |s| format!("\"{s}\""));
    format!(
        "{{\"action\":\"checkpoint\",\"sequenceNumber\":{},\"subSequenceNumber\":{},\"error\":{}}}",
        q(seq),
        sub.map_or("null".to_string(), |n| n.to_string()),
        q(error)
    )
}

#[tokio::test]
async fn initialize_round_trip_sends_exact_bytes() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        let got = child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"initialize\"}")
            .await;
        (got, child)
    });
    let outcome = driver
        .call(initialize(), None)
        .await
        .expect("call succeeds");
    let (got, _child) = child_task.await.expect("child");
    assert_eq!(
        got.as_deref(),
        Some("{\"action\":\"initialize\",\"shardId\":\"shardId-000000000000\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0}")
    );
    assert_eq!(outcome, CallOutcome::default());
    assert!(!outcome.checkpointed());
}

#[tokio::test]
async fn python_checkpoint_round_trip() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        let msg = child.recv().await.expect("processRecords");
        assert!(
            msg.starts_with(
                "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGVsbG8tMw==\""
            ),
            "{msg}"
        );
        child
            .send(&format!(
                "{{\"action\": \"checkpoint\", \"sequenceNumber\": \"{SEQ}\", \"subSequenceNumber\": 0}}"
            ))
            .await;
        let answer = child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        answer
    });
    let mut recorder = Recorder::default();
    let outcome = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("call succeeds");
    let answer = child_task.await.expect("child");
    assert_eq!(answer, Some(reply(Some(SEQ), Some(0), None)));
    assert_eq!(recorder.calls, vec![(Some(SEQ.to_string()), Some(0))]);
    assert_eq!(
        outcome,
        CallOutcome {
            checkpoint_requests: 1,
            checkpoints_succeeded: 1
        }
    );
}

#[tokio::test]
async fn checkpoint_failure_is_reported_and_the_child_may_retry() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await.expect("processRecords");
        let request = format!(
            "{{\"action\": \"checkpoint\", \"sequenceNumber\": \"{SEQ}\", \"subSequenceNumber\": 0}}"
        );
        child.send(&request).await;
        let first = child.recv().await;
        child
            .send_raw(b"Was throttled while checkpointing, will attempt again in 5 seconds\n")
            .await;
        child.send(&request).await;
        let second = child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        (first, second)
    });
    let mut recorder = Recorder {
        results: VecDeque::from([Err(CheckpointFailure::Throttling), Ok(())]),
        ..Recorder::default()
    };
    let outcome = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("a failed checkpoint does not fail the call");
    let (first, second) = child_task.await.expect("child");
    assert_eq!(
        first,
        Some(reply(Some(SEQ), Some(0), Some("ThrottlingException")))
    );
    assert_eq!(second, Some(reply(Some(SEQ), Some(0), None)));
    assert_eq!(recorder.calls.len(), 2);
    assert_eq!(
        outcome,
        CallOutcome {
            checkpoint_requests: 2,
            checkpoints_succeeded: 1
        }
    );
}

#[tokio::test]
async fn every_failure_name_reaches_the_child() {
    for failure in [
        CheckpointFailure::Shutdown,
        CheckpointFailure::InvalidState,
        CheckpointFailure::IllegalArgument,
        CheckpointFailure::Dependency,
        CheckpointFailure::Other("CustomException".into()),
    ] {
        let (mut driver, mut child) = pair(None);
        let child_task = tokio::spawn(async move {
            child.recv().await;
            child
                .send_raw(b"{\"action\":\"checkpoint\",\"sequenceNumber\":\"1\"}\n")
                .await;
            let answer = child.recv().await;
            child
                .send_raw(b"{\"action\":\"status\",\"responseFor\":\"shutdownRequested\"}\n")
                .await;
            answer
        });
        let mut recorder = Recorder {
            results: VecDeque::from([Err(failure.clone())]),
            ..Recorder::default()
        };
        driver
            .call(DaemonMessage::ShutdownRequested, Some(&mut recorder))
            .await
            .expect("call succeeds");
        assert_eq!(
            child_task.await.expect("child"),
            Some(reply(Some("1"), None, Some(failure.java_name())))
        );
    }
}

#[tokio::test]
async fn node_checkpoint_without_sub_sequence_number() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await.expect("processRecords");
        child
            .send_raw(
                format!("\n{{\"action\":\"checkpoint\",\"sequenceNumber\":\"{SEQ}\"}}\n")
                    .as_bytes(),
            )
            .await;
        let answer = child.recv().await;
        child
            .send_raw(b"\n{\"action\":\"status\",\"responseFor\":\"processRecords\"}\n")
            .await;
        answer
    });
    let mut recorder = Recorder::default();
    driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("call succeeds");
    assert_eq!(
        child_task.await.expect("child"),
        Some(reply(Some(SEQ), None, None))
    );
    assert_eq!(recorder.calls, vec![(Some(SEQ.to_string()), None)]);
}

#[tokio::test]
async fn shard_ended_with_and_without_checkpoint() {
    // With: checkpoint() without arguments, i.e. SHARD_END.
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        let msg = child.recv().await;
        child
            .send("{\"action\": \"checkpoint\", \"sequenceNumber\": null, \"subSequenceNumber\": null}")
            .await;
        let answer = child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"shardEnded\"}")
            .await;
        (msg, answer)
    });
    let mut recorder = Recorder::default();
    let outcome = driver
        .call(DaemonMessage::ShardEnded, Some(&mut recorder))
        .await
        .expect("call succeeds");
    let (msg, answer) = child_task.await.expect("child");
    assert_eq!(msg.as_deref(), Some("{\"action\":\"shardEnded\"}"));
    assert_eq!(answer, Some(reply(None, None, None)));
    assert_eq!(recorder.calls, vec![(None, None)]);
    assert!(outcome.checkpointed());

    // Without: kclpy swallowed the processor's error and still sent the status (rule 13).
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"shardEnded\"}")
            .await;
        child
    });
    let mut recorder = Recorder::default();
    let outcome = driver
        .call(DaemonMessage::ShardEnded, Some(&mut recorder))
        .await
        .expect("call succeeds");
    let _child = child_task.await.expect("child");
    assert!(!outcome.checkpointed());
    assert_eq!(outcome.checkpoint_requests, 0);
}

#[tokio::test]
async fn checkpoint_without_a_handler_gets_invalid_state() {
    for msg in [initialize(), DaemonMessage::LeaseLost] {
        let action = msg.action();
        let (mut driver, mut child) = pair(None);
        let child_task = tokio::spawn(async move {
            child.recv().await;
            child
                .send("{\"action\": \"checkpoint\", \"sequenceNumber\": \"5\", \"subSequenceNumber\": 2}")
                .await;
            let answer = child.recv().await;
            child
                .send(&format!(
                    "{{\"action\": \"status\", \"responseFor\": \"{action}\"}}"
                ))
                .await;
            answer
        });
        let outcome = driver.call(msg, None).await.expect("call succeeds");
        assert_eq!(
            child_task.await.expect("child"),
            Some(reply(Some("5"), Some(2), Some("InvalidStateException"))),
            "{action}"
        );
        assert_eq!(
            outcome,
            CallOutcome {
                checkpoint_requests: 1,
                checkpoints_succeeded: 0
            }
        );
    }
}

#[tokio::test]
async fn unusable_checkpoint_request_gets_illegal_argument() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child
            .send("{\"action\": \"checkpoint\", \"sequenceNumber\": \"9\", \"subSequenceNumber\": -1}")
            .await;
        let answer = child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        answer
    });
    let mut recorder = Recorder::default();
    let outcome = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("call succeeds");
    assert_eq!(
        child_task.await.expect("child"),
        Some(reply(Some("9"), None, Some("IllegalArgumentException")))
    );
    assert!(recorder.calls.is_empty(), "handler must not be called");
    assert_eq!(outcome.checkpoint_requests, 1);
    assert_eq!(outcome.checkpoints_succeeded, 0);
}

#[tokio::test]
async fn noise_blank_lines_and_extra_fields_are_tolerated() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child.send_raw(b"\n\n   \r\n").await;
        child.send_raw(b"hello not json\n").await;
        child.send_raw(b"{\"foo\":1}\n").await;
        child.send_raw(b"{\"action\":\"foo\"}\n").await;
        child.send_raw(b"[1,2,3]\n").await;
        child.send_raw(b"\xff\xfe not utf-8 \xc3\n").await;
        let mut long = vec![b'x'; 200 * 1024];
        long.push(b'\n');
        child.send_raw(&long).await;
        // A status hidden in an over-long line is not trusted.
        let mut long_status =
            b"{\"action\":\"status\",\"responseFor\":\"processRecords\",\"pad\":\"".to_vec();
        long_status.extend(vec![b' '; MAX_STDOUT_LINE]);
        long_status.extend(b"\"}\n");
        child.send_raw(&long_status).await;
        child
            .send_raw(b"{\"action\":\"checkpoint\",\"sequenceNumber\":\"7\",\"subSequenceNumber\":1,\"extra\":[true]}\r\n")
            .await;
        let answer = child.recv().await;
        child
            .send_raw(
                b"{\"responseFor\":\"processRecords\",\"action\":\"status\",\"extra\":{\"a\":1}}",
            )
            .await;
        answer
    });
    let mut recorder = Recorder::default();
    let outcome = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("call succeeds");
    assert_eq!(
        child_task.await.expect("child"),
        Some(reply(Some("7"), Some(1), None))
    );
    assert_eq!(outcome.checkpoints_succeeded, 1);
}

#[tokio::test]
async fn wrong_response_for_is_a_protocol_violation() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"initialize\"}")
            .await;
        child
    });
    let err = driver
        .call(process_records(), None)
        .await
        .expect_err("wrong responseFor");
    let _child = child_task.await.expect("child");
    let DriverError::ProtocolViolation {
        shard_id,
        action,
        detail,
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(shard_id, SHARD);
    assert_eq!(*action, "processRecords");
    assert_eq!(
        detail,
        "sent processRecords but the child answered status for \"initialize\""
    );
    assert_eq!(
        err.to_string(),
        "shard shardId-000000000000: protocol violation during processRecords: sent processRecords but the child answered status for \"initialize\""
    );
}

#[tokio::test]
async fn status_without_response_for_is_a_protocol_violation() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child.send("{\"action\": \"status\"}").await;
        child
    });
    let err = driver
        .call(DaemonMessage::LeaseLost, None)
        .await
        .expect_err("missing responseFor");
    let _child = child_task.await.expect("child");
    assert!(
        matches!(&err, DriverError::ProtocolViolation { detail, .. } if detail.contains("without a string responseFor")),
        "{err:?}"
    );
}

#[tokio::test]
async fn eof_mid_call_is_child_exited() {
    // The child reads the call and dies.
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        drop(child);
    });
    let err = driver
        .call(process_records(), None)
        .await
        .expect_err("child exited");
    child_task.await.expect("child");
    assert!(
        matches!(
            &err,
            DriverError::ChildExited {
                action: "processRecords",
                ..
            }
        ),
        "{err:?}"
    );

    // The child dies after a checkpoint round trip.
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child
            .send("{\"action\": \"checkpoint\", \"sequenceNumber\": null, \"subSequenceNumber\": null}")
            .await;
        child.recv().await;
        child
            .send_raw(b"Traceback (most recent call last):\n")
            .await;
    });
    let mut recorder = Recorder::default();
    let err = driver
        .call(DaemonMessage::ShardEnded, Some(&mut recorder))
        .await
        .expect_err("child exited");
    child_task.await.expect("child");
    assert!(
        matches!(
            &err,
            DriverError::ChildExited {
                action: "shardEnded",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(recorder.calls.len(), 1);
}

#[tokio::test]
async fn final_status_without_newline_before_exit_counts() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        child
            .send_raw(b"{\"action\":\"status\",\"responseFor\":\"leaseLost\"}")
            .await;
        drop(child);
    });
    let outcome = driver
        .call(DaemonMessage::LeaseLost, None)
        .await
        .expect("status at EOF is still a status");
    child_task.await.expect("child");
    assert_eq!(outcome, CallOutcome::default());
}

#[tokio::test]
async fn write_to_closed_stdin_is_io_error() {
    let (mut driver, child) = pair(None);
    // The child closed its stdin but keeps stdout open.
    let FakeChild { stdin, stdout } = child;
    drop(stdin);
    let err = driver
        .call(initialize(), None)
        .await
        .expect_err("broken pipe");
    drop(stdout);
    let DriverError::Io { source, action, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*action, "initialize");
    assert_eq!(source.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test(start_paused = true)]
async fn silent_child_times_out() {
    let (mut driver, mut child) = pair(Some(Duration::from_secs(10)));
    let child_task = tokio::spawn(async move {
        child.recv().await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        child
    });
    let start = Instant::now();
    let err = driver
        .call(process_records(), None)
        .await
        .expect_err("timeout");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(
        matches!(&err, DriverError::Timeout { action: "processRecords", timeout, .. } if *timeout == Duration::from_secs(10)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "shard shardId-000000000000: child process sent nothing for processRecords within 10s (timeoutInSeconds)"
    );
    child_task.abort();
}

#[tokio::test(start_paused = true)]
async fn noise_does_not_extend_the_timeout() {
    let (mut driver, mut child) = pair(Some(Duration::from_secs(10)));
    let child_task = tokio::spawn(async move {
        child.recv().await;
        loop {
            child.send_raw(b"still thinking...\n").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    let start = Instant::now();
    let err = driver
        .call(process_records(), None)
        .await
        .expect_err("timeout");
    assert!(matches!(err, DriverError::Timeout { .. }), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    child_task.abort();
}

#[tokio::test(start_paused = true)]
async fn each_checkpoint_reply_restarts_the_timeout() {
    let (mut driver, mut child) = pair(Some(Duration::from_secs(10)));
    let child_task = tokio::spawn(async move {
        child.recv().await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        child
            .send(
                "{\"action\": \"checkpoint\", \"sequenceNumber\": \"1\", \"subSequenceNumber\": 0}",
            )
            .await;
        child.recv().await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        child
    });
    // The handler's own time (30 s) is not charged to the child either.
    let mut recorder = Recorder {
        delay: Some(Duration::from_secs(30)),
        ..Recorder::default()
    };
    let start = Instant::now();
    let outcome = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("within the timeout each time");
    assert_eq!(start.elapsed(), Duration::from_secs(46));
    assert!(outcome.checkpointed());
    let _child = child_task.await.expect("child");
}

#[tokio::test(start_paused = true)]
async fn no_timeout_waits_as_long_as_it_takes() {
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        child.recv().await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        child
            .send("{\"action\": \"status\", \"responseFor\": \"shutdownRequested\"}")
            .await;
        child
    });
    driver
        .call(DaemonMessage::ShutdownRequested, None)
        .await
        .expect("call succeeds");
    let _child = child_task.await.expect("child");
}

#[tokio::test(start_paused = true)]
async fn large_write_does_not_deadlock_with_a_chatty_child() {
    // Pipes hold 1 KiB. The child prints 100 KiB before reading its stdin; the daemon writes a
    // ~270 KiB processRecords. Writing without reading would deadlock (and hit the timeout).
    let (mut driver, mut child) = pair_with_capacity(Some(Duration::from_secs(60)), 1024);
    let child_task = tokio::spawn(async move {
        for i in 0..100 {
            let line = format!("{i:04} {}\n", "n".repeat(1019));
            child.send_raw(line.as_bytes()).await;
        }
        let msg = child.recv().await.expect("processRecords");
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        msg.len()
    });
    let records = (0..100)
        .map(|i| WireRecord::new(&[b'd'; 2000], format!("pk-{i}"), format!("{i}"), 0, None))
        .collect::<Vec<_>>();
    let msg = DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    };
    let expected_len = msg.to_line().len() - 1;
    driver.call(msg, None).await.expect("no deadlock");
    assert_eq!(child_task.await.expect("child"), expected_len);
}

#[tokio::test]
async fn kclpy_sample_conversation_then_close() {
    // The conversation observed between the Java daemon and the kclpy sample application,
    // end to end over one driver.
    let (mut driver, mut child) = pair(None);
    let child_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        seen.push(child.recv().await.expect("initialize"));
        child
            .send("{\"action\": \"status\", \"responseFor\": \"initialize\"}")
            .await;
        seen.push(child.recv().await.expect("processRecords"));
        child
            .send(&format!(
                "{{\"action\": \"checkpoint\", \"sequenceNumber\": \"{SEQ}\", \"subSequenceNumber\": 0}}"
            ))
            .await;
        seen.push(child.recv().await.expect("reply"));
        child
            .send("{\"action\": \"status\", \"responseFor\": \"processRecords\"}")
            .await;
        seen.push(child.recv().await.expect("shardEnded"));
        child
            .send("{\"action\": \"checkpoint\", \"sequenceNumber\": null, \"subSequenceNumber\": null}")
            .await;
        seen.push(child.recv().await.expect("reply"));
        child
            .send("{\"action\": \"status\", \"responseFor\": \"shardEnded\"}")
            .await;
        // The daemon closes stdin; the child prints a farewell and exits 0.
        let eof = child.recv().await;
        child.send_raw(b"bye\n\n").await;
        (seen, eof)
    });
    let mut recorder = Recorder::default();
    driver.call(initialize(), None).await.expect("initialize");
    let records = driver
        .call(process_records(), Some(&mut recorder))
        .await
        .expect("processRecords");
    let ended = driver
        .call(DaemonMessage::ShardEnded, Some(&mut recorder))
        .await
        .expect("shardEnded");
    assert!(records.checkpointed() && ended.checkpointed());
    let logged = driver.close_and_drain().await.expect("drain");
    assert_eq!(logged, 1, "one non-blank line after the last message");
    let (seen, eof) = child_task.await.expect("child");
    assert_eq!(eof, None, "child saw EOF on stdin");
    assert_eq!(seen.len(), 5);
    assert!(seen[0].starts_with("{\"action\":\"initialize\""));
    assert!(seen[1].starts_with("{\"action\":\"processRecords\""));
    assert_eq!(seen[2], reply(Some(SEQ), Some(0), None));
    assert_eq!(seen[3], "{\"action\":\"shardEnded\"}");
    assert_eq!(seen[4], reply(None, None, None));
    assert_eq!(
        recorder.calls,
        vec![(Some(SEQ.to_string()), Some(0)), (None, None)]
    );
}

#[tokio::test]
async fn into_parts_returns_the_pipes() {
    let (driver, _child) = pair(None);
    assert_eq!(driver.shard_id(), SHARD);
    let (_stdin, _stdout) = driver.into_parts();
}
