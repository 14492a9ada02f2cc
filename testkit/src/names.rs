//! Unique resource names, so that tests sharing one emulator never collide.

use std::sync::atomic::{AtomicU64, Ordering};

/// Longest prefix kept by [`unique_name`]; the suffix adds at most 40 characters, so the result
/// stays well inside the 128-character limit of Kinesis stream names.
const MAX_PREFIX: usize = 64;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name that is unique per call, per process and (with high probability) across processes:
/// `<prefix>-<pid>-<counter>-<8 random hex digits>`.
///
/// The result is a valid Kinesis stream name (`[a-zA-Z0-9_.-]{1,128}`) and a valid DynamoDB table
/// name (`[a-zA-Z0-9_.-]{3,255}`): characters outside `[a-zA-Z0-9_.-]` in `prefix` become `-`, a
/// prefix longer than 64 characters is cut, and an empty prefix becomes `t`.
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_PREFIX)
        .collect();
    if clean.is_empty() {
        clean.push('t');
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::random();
    format!("{clean}-{}-{n}-{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn valid_stream_name(s: &str) -> bool {
        (1..=128).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn names_are_unique_and_keep_the_prefix() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("leases")).collect();
        assert_eq!(names.len(), 1000);
        for n in &names {
            assert!(n.starts_with("leases-"), "{n}");
            assert!(n.contains(&format!("-{}-", std::process::id())), "{n}");
            assert!(valid_stream_name(n), "{n}");
        }
    }

    #[test]
    fn invalid_characters_are_replaced() {
        let n = unique_name("my stream/ä:1");
        assert!(n.starts_with("my-stream---1-"), "{n}");
        assert!(valid_stream_name(&n), "{n}");
    }

    #[test]
    fn empty_and_long_prefixes_stay_valid() {
        let n = unique_name("");
        assert!(n.starts_with("t-"), "{n}");
        assert!(n.len() >= 3, "table names need 3+ characters: {n}");
        let long = "x".repeat(500);
        let n = unique_name(&long);
        assert!(valid_stream_name(&n), "{} chars", n.len());
        assert!(n.starts_with(&"x".repeat(MAX_PREFIX)));
    }
}
