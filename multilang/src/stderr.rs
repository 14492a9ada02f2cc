//! Draining a child's stderr into the daemon's log, per shard.
//!
//! A child must always have its stderr read, or it blocks once the pipe fills (rule 9). Each
//! line is logged at INFO with target [`STDERR_TARGET`] and the shard id (Java logs them at
//! ERROR, but stderr is also where kclpy's sample and most user code write ordinary logs; use
//! the target to filter or raise it).
//!
//! Robustness: non-UTF-8 bytes are replaced (lossy), lines longer than [`MAX_STDERR_PIECE`]
//! are logged in pieces, a final line without a newline is logged at EOF, and text that has
//! no newline yet is flushed after [`IDLE_FLUSH`] of silence — the kclpy sample writes its log
//! without any newline, which would otherwise only appear when the child exits.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::lines::{LineReader, Overflow};

/// `tracing` target of child stderr lines.
pub const STDERR_TARGET: &str = "kinesis_client_multilang::child_stderr";

/// Longest piece of a stderr line logged as one event.
pub const MAX_STDERR_PIECE: usize = 16 * 1024;

/// How long unterminated output waits for its newline before it is logged anyway.
pub const IDLE_FLUSH: Duration = Duration::from_secs(1);

/// Reads `stderr` to its end, calling `emit` with each line (lossy UTF-8, without the line
/// terminator, empty lines skipped). Returns the number of lines emitted.
pub async fn drain_lines<R, F>(stderr: R, mut emit: F) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    F: FnMut(String),
{
    let mut reader = LineReader::new(BufReader::new(stderr), MAX_STDERR_PIECE, Overflow::Split);
    let mut emitted = 0;
    let mut send = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.trim().is_empty() {
            emit(text.to_string());
            emitted += 1;
        }
    };
    loop {
        tokio::select! {
            line = reader.next_line() => match line? {
                Some(line) => send(&line.bytes),
                None => break,
            },
            () = tokio::time::sleep(IDLE_FLUSH) => {
                if let Some(partial) = reader.take_partial() {
                    send(&partial);
                }
            }
        }
    }
    Ok(emitted)
}

/// Reads a child's stderr to its end, logging each line with the shard id.
pub async fn drain_stderr<R>(shard_id: &str, stderr: R) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
{
    drain_lines(stderr, |line| {
        tracing::info!(target: STDERR_TARGET, shard_id = %shard_id, "{line}");
    })
    .await
}

/// Spawns [`drain_stderr`] on the current runtime; the task ends when the child closes stderr.
pub fn spawn_stderr_drain<R>(shard_id: String, stderr: R) -> JoinHandle<io::Result<u64>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let result = drain_stderr(&shard_id, stderr).await;
        if let Err(e) = &result {
            tracing::warn!(shard_id = %shard_id, error = %e, "reading child stderr failed");
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncWriteExt};

    async fn collect(input: &[u8]) -> (Vec<String>, u64) {
        let mut lines = Vec::new();
        let n = drain_lines(input, |l| lines.push(l)).await.expect("drain");
        (lines, n)
    }

    #[tokio::test]
    async fn lines_crlf_blank_and_unterminated_last_line() {
        let (lines, n) = collect(b"first\r\n\n  \nsecond\nno newline at end").await;
        assert_eq!(lines, vec!["first", "second", "no newline at end"]);
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn non_utf8_is_lossy() {
        let (lines, _) = collect(b"caf\xe9 \xff ok\n").await;
        assert_eq!(lines, vec!["caf\u{fffd} \u{fffd} ok"]);
    }

    #[tokio::test]
    async fn very_long_lines_come_in_pieces() {
        let mut input = vec![b'a'; MAX_STDERR_PIECE * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let (lines, n) = collect(&input).await;
        assert_eq!(n, 4);
        assert_eq!(lines[0].len(), MAX_STDERR_PIECE);
        assert_eq!(lines[1].len(), MAX_STDERR_PIECE);
        assert_eq!(lines[2].len(), 10);
        assert_eq!(lines[3], "next");
    }

    #[tokio::test(start_paused = true)]
    async fn unterminated_output_is_flushed_when_idle() {
        // kclpy's sample logs without newlines: text must not wait for the child to exit.
        let (mut tx, rx) = duplex(1024);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            drain_lines(rx, move |l| {
                seen_tx.send(l).expect("receiver alive");
            })
            .await
        });
        tx.write_all(b"Record (Partition Key: pk-1, Data Size: 7")
            .await
            .expect("write");
        let start = tokio::time::Instant::now();
        let first = seen_rx.recv().await.expect("flushed");
        assert_eq!(first, "Record (Partition Key: pk-1, Data Size: 7");
        assert!(start.elapsed() <= IDLE_FLUSH, "{:?}", start.elapsed());
        tx.write_all(b"Shard has ended checkpointing\n")
            .await
            .expect("write");
        assert_eq!(
            seen_rx.recv().await.expect("line"),
            "Shard has ended checkpointing"
        );
        drop(tx);
        assert_eq!(task.await.expect("task").expect("drain"), 2);
    }

    #[tokio::test]
    async fn spawned_drain_ends_with_the_pipe() {
        let (mut tx, rx) = duplex(64);
        let handle = spawn_stderr_drain("shardId-000000000007".into(), rx);
        tx.write_all(b"Traceback (most recent call last):\n  File \"x\"\n")
            .await
            .expect("write");
        drop(tx);
        assert_eq!(handle.await.expect("join").expect("drain"), 2);
    }
}
