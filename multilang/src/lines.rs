//! Bounded, cancel-safe line reading shared by the stdout driver and the stderr drain.
//!
//! `AsyncBufReadExt::read_until` buffers a line of any length; a child that prints megabytes
//! without a newline would grow that buffer without bound. [`LineReader`] caps a line at
//! `max` bytes and either truncates (stdout: an over-long line is noise anyway) or splits
//! (stderr: log everything, in pieces). All state lives in the struct and bytes are consumed
//! from the underlying reader only after they were copied, so [`LineReader::next_line`] can be
//! a `tokio::select!` branch without losing data.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What to do with a line longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Keep the first `max` bytes, drop the rest up to the newline, flag the line as truncated.
    Truncate,
    /// Return `max`-byte pieces (cut at a UTF-8 character boundary when possible).
    Split,
}

/// One line, without its `\n` (a trailing `\r` is left for the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The line's bytes (at most `max`).
    pub bytes: Vec<u8>,
    /// Bytes beyond the limit were dropped ([`Overflow::Truncate`] only).
    pub truncated: bool,
}

/// Reads lines of at most `max` bytes from an [`AsyncBufRead`].
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    overflow: Overflow,
    dropped: bool,
    /// The last piece was split at `max` bytes: a newline right after it ends that line and
    /// must not produce an extra empty line.
    after_split: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader returning lines of at most `max` (>= 4) bytes.
    pub(crate) fn new(inner: R, max: usize, overflow: Overflow) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max: max.max(4),
            overflow,
            dropped: false,
            after_split: false,
        }
    }

    /// The next line; `None` at end of input. A final line without `\n` is returned before
    /// `None`. Cancel-safe.
    pub(crate) async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let available = match self.inner.fill_buf().await {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if self.buf.is_empty() && !self.dropped {
                    return Ok(None);
                }
                return Ok(Some(self.take_all()));
            }
            if std::mem::take(&mut self.after_split) && available[0] == b'\n' {
                self.inner.consume(1);
                continue;
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let content = &available[..newline.unwrap_or(available.len())];
            let room = self.max - self.buf.len();
            let take = content.len().min(room);
            self.buf.extend_from_slice(&content[..take]);
            match self.overflow {
                Overflow::Truncate => {
                    if take < content.len() {
                        self.dropped = true;
                    }
                    let consumed = newline.map_or(available.len(), |i| i + 1);
                    self.inner.consume(consumed);
                    if newline.is_some() {
                        return Ok(Some(self.take_all()));
                    }
                }
                Overflow::Split => {
                    let whole_line = newline.is_some() && take == content.len();
                    self.inner.consume(if whole_line { take + 1 } else { take });
                    if whole_line {
                        return Ok(Some(self.take_all()));
                    }
                    if self.buf.len() >= self.max {
                        self.after_split = true;
                        let bytes = self.take_at_char_boundary();
                        return Ok(Some(Line {
                            bytes,
                            truncated: false,
                        }));
                    }
                }
            }
        }
    }

    /// Takes the bytes of an unfinished line (for flushing output that has no newline yet),
    /// keeping an incomplete trailing UTF-8 character for later. `None` if nothing is pending.
    pub(crate) fn take_partial(&mut self) -> Option<Vec<u8>> {
        let bytes = self.take_at_char_boundary();
        (!bytes.is_empty()).then_some(bytes)
    }

    /// Gives back the underlying reader (pending partial-line bytes are dropped).
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn take_all(&mut self) -> Line {
        let truncated = std::mem::take(&mut self.dropped);
        Line {
            bytes: std::mem::take(&mut self.buf),
            truncated,
        }
    }

    fn take_at_char_boundary(&mut self) -> Vec<u8> {
        let cut = match std::str::from_utf8(&self.buf) {
            Ok(_) => self.buf.len(),
            // Incomplete character at the end: keep it (if anything precedes it).
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
            Err(_) => self.buf.len(),
        };
        let rest = self.buf.split_off(cut);
        std::mem::replace(&mut self.buf, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    async fn all_lines(input: &[u8], max: usize, overflow: Overflow) -> Vec<(String, bool)> {
        // A tiny BufReader capacity exercises lines spanning many fill_buf calls.
        let mut reader = LineReader::new(BufReader::with_capacity(3, input), max, overflow);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.expect("read") {
            out.push((
                String::from_utf8_lossy(&line.bytes).into_owned(),
                line.truncated,
            ));
        }
        out
    }

    fn l(s: &str, t: bool) -> (String, bool) {
        (s.to_string(), t)
    }

    #[tokio::test]
    async fn lines_and_final_line_without_newline() {
        assert_eq!(
            all_lines(b"a\n\nbc\r\nlast", 100, Overflow::Truncate).await,
            vec![
                l("a", false),
                l("", false),
                l("bc\r", false),
                l("last", false)
            ]
        );
        assert_eq!(all_lines(b"", 100, Overflow::Truncate).await, vec![]);
        assert_eq!(
            all_lines(b"x\n", 100, Overflow::Split).await,
            vec![l("x", false)]
        );
    }

    #[tokio::test]
    async fn truncate_mode_drops_the_rest_of_long_lines() {
        assert_eq!(
            all_lines(b"0123456789\nok\n0123456789", 4, Overflow::Truncate).await,
            vec![l("0123", true), l("ok", false), l("0123", true)]
        );
    }

    #[tokio::test]
    async fn split_mode_returns_pieces() {
        assert_eq!(
            all_lines(b"0123456789\nok", 4, Overflow::Split).await,
            vec![
                l("0123", false),
                l("4567", false),
                l("89", false),
                l("ok", false)
            ]
        );
        // Exactly max bytes then newline: no empty extra piece, however the input is chunked.
        assert_eq!(
            all_lines(b"0123\nx", 4, Overflow::Split).await,
            vec![l("0123", false), l("x", false)]
        );
        let mut reader = LineReader::new(
            BufReader::with_capacity(4, &b"0123\n\nx"[..]),
            4,
            Overflow::Split,
        );
        let mut got = Vec::new();
        while let Some(line) = reader.next_line().await.expect("read") {
            got.push(String::from_utf8(line.bytes).expect("utf-8"));
        }
        assert_eq!(got, vec!["0123", "", "x"]);
    }

    #[tokio::test]
    async fn split_mode_respects_utf8_boundaries() {
        // "aéé" = 61 C3 A9 C3 A9; a 4-byte cut would split the second é.
        let lines = all_lines("aéé\n".as_bytes(), 4, Overflow::Split).await;
        assert_eq!(lines, vec![l("aé", false), l("é", false)]);
    }

    #[tokio::test]
    async fn next_line_is_cancel_safe() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = LineReader::new(BufReader::new(rx), 100, Overflow::Truncate);
        tx.write_all(b"hel").await.expect("write");
        // Cancel a pending read after it has buffered a partial line.
        let r =
            tokio::time::timeout(std::time::Duration::from_millis(10), reader.next_line()).await;
        assert!(r.is_err(), "no full line yet");
        tx.write_all(b"lo\n").await.expect("write");
        let line = reader.next_line().await.expect("read").expect("line");
        assert_eq!(line.bytes, b"hello");
        assert!(reader.take_partial().is_none());
        tx.write_all(b"part").await.expect("write");
        let r =
            tokio::time::timeout(std::time::Duration::from_millis(10), reader.next_line()).await;
        assert!(r.is_err());
        assert_eq!(reader.take_partial().as_deref(), Some(&b"part"[..]));
        drop(tx);
        assert_eq!(reader.next_line().await.expect("read"), None);
    }
}
