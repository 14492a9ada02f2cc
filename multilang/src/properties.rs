//! A parser for Java `.properties` files, faithful to `java.util.Properties.load`.
//!
//! The MultiLangDaemon's configuration is a Java properties file, and users copy files that
//! work with the Java daemon, so this parser follows the Java grammar rather than a simplified
//! `key=value` reading:
//!
//! * A *natural line* ends at `\n`, `\r` or `\r\n`. Leading spaces, tabs and form feeds are
//!   ignored. Blank lines are skipped. A line whose first non-blank character is `#` or `!` is
//!   a comment (a comment never continues onto the next line).
//! * A *logical line* continues onto the next natural line when it ends with an **odd** number
//!   of backslashes. The backslash is removed and the next line's leading whitespace is
//!   stripped. An empty (or blank) continuation line ends the logical line; a backslash at the
//!   very end of the input is dropped.
//! * The key ends at the first unescaped `=`, `:` or whitespace. Whitespace around the
//!   separator is skipped, and one `=` or `:` after whitespace-separated keys is also skipped
//!   (`key : value`, `key value`, `key=value` all mean the same). Trailing whitespace of the
//!   value is **kept**, as in Java (consumers such as [`crate::settings`] trim it).
//! * Escapes in keys and values: `\t`, `\n`, `\r`, `\f`, `\uXXXX` (UTF-16 units; surrogate
//!   pairs are combined), and `\x` means `x` for any other character (`\\`, `\=`, `\:`, `\ `,
//!   `\#`, ...). A malformed `\u` escape is an error naming the line.
//!
//! Entries record the 1-based line where their logical line starts. When a key appears more
//! than once, the later entry wins (as `Properties.put` does) and keeps its own line number.
//!
//! Encoding: [`parse_bytes`] accepts UTF-8 and falls back to ISO-8859-1 (which is what the Java
//! daemon's `Properties.load(InputStream)` always uses) when the bytes are not valid UTF-8.

use std::collections::HashMap;

/// One `key = value` pair of a properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, with escapes resolved.
    pub key: String,
    /// The value, with escapes resolved; leading whitespace removed, trailing whitespace kept.
    pub value: String,
    /// 1-based line number where the entry's logical line starts.
    pub line: usize,
}

/// A syntax error in a properties file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropertiesError {
    /// `\u` not followed by four hexadecimal digits (Java: "Malformed \uxxxx encoding").
    #[error("properties line {line}: malformed \\uXXXX escape {found:?} (expected four hexadecimal digits after \\u)")]
    MalformedUnicodeEscape {
        /// Line where the entry starts.
        line: usize,
        /// The text following the backslash, at most six characters.
        found: String,
    },
    /// `\uXXXX` escapes that do not form valid UTF-16 (an unpaired surrogate).
    #[error("properties line {line}: \\u escapes contain an unpaired UTF-16 surrogate")]
    UnpairedSurrogate {
        /// Line where the entry starts.
        line: usize,
    },
}

/// Parses the text of a properties file into entries, in file order of their winning line.
pub fn parse(text: &str) -> Result<Vec<Entry>, PropertiesError> {
    // A byte-order mark (editors on Windows write one) is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = natural_lines(text);
    let mut entries: Vec<Entry> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();

    let mut i = 0;
    while i < lines.len() {
        let start_line = i + 1;
        let first = strip_leading_blanks(lines[i]);
        i += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical: Vec<char> = first.chars().collect();
        while trailing_backslashes(&logical) % 2 == 1 {
            logical.pop();
            let Some(next) = lines.get(i) else { break };
            i += 1;
            let next = strip_leading_blanks(next);
            if next.is_empty() {
                break;
            }
            logical.extend(next.chars());
        }

        let (key_raw, value_raw) = split_key_value(&logical);
        let entry = Entry {
            key: unescape(key_raw, start_line)?,
            value: unescape(value_raw, start_line)?,
            line: start_line,
        };
        if let Some(old) = index_of.remove(&entry.key) {
            entries.remove(old);
            for idx in index_of.values_mut() {
                if *idx > old {
                    *idx -= 1;
                }
            }
        }
        index_of.insert(entry.key.clone(), entries.len());
        entries.push(entry);
    }
    Ok(entries)
}

/// Parses raw file bytes: UTF-8 if valid (a leading byte-order mark is skipped), otherwise
/// ISO-8859-1 (the Java daemon's encoding).
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<Entry>, PropertiesError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(_) => {
            let text: String = bytes.iter().map(|&b| char::from(b)).collect();
            parse(&text)
        }
    }
}

/// Splits into natural lines on `\n`, `\r` and `\r\n`; line `k` (0-based) is file line `k + 1`.
fn natural_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\n' => {
                lines.push(&text[start..pos]);
                pos += 1;
                start = pos;
            }
            b'\r' => {
                lines.push(&text[start..pos]);
                pos += 1;
                if bytes.get(pos) == Some(&b'\n') {
                    pos += 1;
                }
                start = pos;
            }
            _ => pos += 1,
        }
    }
    if start < bytes.len() {
        lines.push(&text[start..]);
    }
    lines
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

fn strip_leading_blanks(s: &str) -> &str {
    s.trim_start_matches(is_blank)
}

fn trailing_backslashes(chars: &[char]) -> usize {
    chars.iter().rev().take_while(|&&c| c == '\\').count()
}

/// Java `Properties.load0`: the key ends at the first unescaped `=`, `:` or blank.
fn split_key_value(line: &[char]) -> (&[char], &[char]) {
    let mut key_len = 0;
    let mut value_start = line.len();
    let mut has_separator = false;
    let mut preceding_backslash = false;
    while key_len < line.len() {
        let c = line[key_len];
        if (c == '=' || c == ':') && !preceding_backslash {
            value_start = key_len + 1;
            has_separator = true;
            break;
        } else if is_blank(c) && !preceding_backslash {
            value_start = key_len + 1;
            break;
        }
        preceding_backslash = c == '\\' && !preceding_backslash;
        key_len += 1;
    }
    while value_start < line.len() {
        let c = line[value_start];
        if !is_blank(c) {
            if !has_separator && (c == '=' || c == ':') {
                has_separator = true;
            } else {
                break;
            }
        }
        value_start += 1;
    }
    (&line[..key_len], &line[value_start.min(line.len())..])
}

/// Java `Properties.loadConvert`, producing UTF-16 units so that `\uD83D\uDE00` pairs combine.
fn unescape(raw: &[char], line: usize) -> Result<String, PropertiesError> {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != '\\' {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        let Some(&escaped) = raw.get(i) else {
            // A lone backslash at the very end (only reachable at end of input): dropped.
            break;
        };
        i += 1;
        let plain = match escaped {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\u{c}',
            'u' => {
                let digits: String = raw[i..raw.len().min(i + 4)].iter().collect();
                let value = (digits.len() == 4 && digits.chars().all(|d| d.is_ascii_hexdigit()))
                    .then(|| u16::from_str_radix(&digits, 16).ok())
                    .flatten();
                match value {
                    Some(unit) => {
                        units.push(unit);
                        i += 4;
                        continue;
                    }
                    None => {
                        let found: String =
                            std::iter::once('u').chain(digits.chars()).take(6).collect();
                        return Err(PropertiesError::MalformedUnicodeEscape { line, found });
                    }
                }
            }
            other => other,
        };
        let mut buf = [0u16; 2];
        units.extend_from_slice(plain.encode_utf16(&mut buf));
    }
    String::from_utf16(&units).map_err(|_| PropertiesError::UnpairedSurrogate { line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String, usize)> {
        parse(text)
            .expect("parses")
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect()
    }

    fn one(text: &str) -> (String, String) {
        let entries = kv(text);
        assert_eq!(
            entries.len(),
            1,
            "expected one entry in {text:?}: {entries:?}"
        );
        (entries[0].0.clone(), entries[0].1.clone())
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn separators_equal_colon_and_whitespace() {
        assert_eq!(one("a=b"), pair("a", "b"));
        assert_eq!(one("a:b"), pair("a", "b"));
        assert_eq!(one("a b"), pair("a", "b"));
        assert_eq!(one("a\tb"), pair("a", "b"));
        assert_eq!(one("a = b"), pair("a", "b"));
        assert_eq!(one("a : b"), pair("a", "b"));
        assert_eq!(one("a   =   b"), pair("a", "b"));
        // Only one separator is skipped: the second '=' belongs to the value.
        assert_eq!(one("a == b"), pair("a", "= b"));
        assert_eq!(one("a = = b"), pair("a", "= b"));
        assert_eq!(one("a b = c"), pair("a", "b = c"));
        // The first separator wins, even if it is ':' before '='.
        assert_eq!(one("a:b=c"), pair("a", "b=c"));
    }

    #[test]
    fn key_without_value() {
        assert_eq!(one("lonely"), pair("lonely", ""));
        assert_eq!(one("lonely="), pair("lonely", ""));
        assert_eq!(one("lonely   "), pair("lonely", ""));
        assert_eq!(one("  lonely :  "), pair("lonely", ""));
    }

    #[test]
    fn leading_whitespace_ignored_trailing_value_whitespace_kept() {
        assert_eq!(one(" \t\u{c} key = value  "), pair("key", "value  "));
    }

    #[test]
    fn comments_and_blank_lines() {
        let text = "# comment\n! also comment\n   # indented comment\n\n   \nkey=value\n";
        assert_eq!(kv(text), vec![("key".into(), "value".into(), 6)]);
    }

    #[test]
    fn comment_lines_do_not_continue() {
        let text = "# comment ending in backslash \\\nkey=value";
        assert_eq!(kv(text), vec![("key".into(), "value".into(), 2)]);
    }

    #[test]
    fn hash_inside_value_is_not_a_comment() {
        assert_eq!(one("key = a # b"), pair("key", "a # b"));
    }

    #[test]
    fn continuation_lines() {
        let text = "fruits = apple, \\\n         banana, \\\n   pear\nnext = 1";
        assert_eq!(
            kv(text),
            vec![
                ("fruits".into(), "apple, banana, pear".into(), 1),
                ("next".into(), "1".into(), 4)
            ]
        );
    }

    #[test]
    fn continuation_line_starting_with_hash_is_content() {
        assert_eq!(
            one("key = a\\\n  # not a comment"),
            pair("key", "a# not a comment")
        );
    }

    #[test]
    fn even_backslashes_do_not_continue() {
        let text = "a = x\\\\\nb = y";
        assert_eq!(
            kv(text),
            vec![("a".into(), "x\\".into(), 1), ("b".into(), "y".into(), 2)]
        );
        // Three backslashes: one escaped backslash plus a continuation.
        assert_eq!(one("a = x\\\\\\\n  y"), pair("a", "x\\y"));
    }

    #[test]
    fn empty_continuation_line_ends_entry() {
        let text = "a = x\\\n   \nb = y";
        assert_eq!(
            kv(text),
            vec![("a".into(), "x".into(), 1), ("b".into(), "y".into(), 3)]
        );
    }

    #[test]
    fn backslash_at_end_of_input_is_dropped() {
        assert_eq!(one("a = x\\"), pair("a", "x"));
    }

    #[test]
    fn continuation_can_join_key_and_value() {
        // The separator may come from the continued line.
        assert_eq!(one("ke\\\n  y = v"), pair("key", "v"));
    }

    #[test]
    fn escapes() {
        assert_eq!(one(r"a = t\tn\nr\rf\f"), pair("a", "t\tn\nr\rf\u{c}"));
        assert_eq!(one(r"a = back\\slash"), pair("a", "back\\slash"));
        assert_eq!(one(r"a = \q\z\#\!"), pair("a", "qz#!"));
        assert_eq!(one(r"a = caf\u00e9 \u0041"), pair("a", "café A"));
        assert_eq!(one(r"a = \uD83D\uDE00"), pair("a", "\u{1F600}"));
        assert_eq!(one(r"a = \u00E9"), pair("a", "é"));
    }

    #[test]
    fn escaped_separators_in_keys() {
        assert_eq!(one(r"a\=b = c"), pair("a=b", "c"));
        assert_eq!(one(r"a\:b:c"), pair("a:b", "c"));
        assert_eq!(one(r"a\ b c"), pair("a b", "c"));
        assert_eq!(one(r"a\\ b"), pair("a\\", "b"));
    }

    #[test]
    fn malformed_unicode_escape_names_line() {
        let err = parse("a = 1\n\nb = \\u12G4\n").unwrap_err();
        assert_eq!(
            err,
            PropertiesError::MalformedUnicodeEscape {
                line: 3,
                found: "u12G4".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "properties line 3: malformed \\uXXXX escape \"u12G4\" (expected four hexadecimal digits after \\u)"
        );
        // Too short at end of value.
        let err = parse("x = \\u12").unwrap_err();
        assert_eq!(
            err,
            PropertiesError::MalformedUnicodeEscape {
                line: 1,
                found: "u12".into()
            }
        );
        // In a key, on a continued entry: the entry's first line is named.
        let err = parse("\n\nk\\\n  \\uZZZZ = v").unwrap_err();
        assert!(matches!(
            err,
            PropertiesError::MalformedUnicodeEscape { line: 3, .. }
        ));
    }

    #[test]
    fn unpaired_surrogate_is_an_error() {
        assert_eq!(
            parse("a = \\uD83D!").unwrap_err(),
            PropertiesError::UnpairedSurrogate { line: 1 }
        );
    }

    #[test]
    fn line_endings_crlf_cr_lf() {
        let text = "a=1\r\nb=2\rc=3\nd=4";
        assert_eq!(
            kv(text),
            vec![
                ("a".into(), "1".into(), 1),
                ("b".into(), "2".into(), 2),
                ("c".into(), "3".into(), 3),
                ("d".into(), "4".into(), 4)
            ]
        );
        // CRLF continuation.
        assert_eq!(one("a = x\\\r\n   y"), pair("a", "xy"));
    }

    #[test]
    fn later_duplicates_win_and_keep_their_line() {
        let text = "a = 1\nb = 2\na = 3\nc = 4";
        assert_eq!(
            kv(text),
            vec![
                ("b".into(), "2".into(), 2),
                ("a".into(), "3".into(), 3),
                ("c".into(), "4".into(), 4)
            ]
        );
    }

    #[test]
    fn iso_8859_1_fallback() {
        let bytes = b"name = caf\xe9\n";
        let entries = parse_bytes(bytes).expect("parses");
        assert_eq!(entries[0].value, "café");
        let utf8 = "name = café\n".as_bytes();
        assert_eq!(parse_bytes(utf8).expect("parses")[0].value, "café");
    }

    #[test]
    fn kclpy_sample_file() {
        let text = "\
# The script that abides by the multi-language protocol.
executableName = sample_kclpy_app.py

# The Stream arn
streamArn = arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample
streamName = kclpysample
applicationName = PythonKCLSample
AwsCredentialsProvider = DefaultCredentialsProvider
processingLanguage = python/3.8
initialPositionInStream = TRIM_HORIZON
#initialPositionInStreamExtended = 1636609142
regionName = us-east-1
#failoverTimeMillis = 10000
# clientVersionConfig =
";
        let entries = kv(text);
        assert_eq!(entries.len(), 8);
        assert_eq!(
            entries[0],
            ("executableName".into(), "sample_kclpy_app.py".into(), 2)
        );
        assert_eq!(entries[7], ("regionName".into(), "us-east-1".into(), 12));
    }

    #[test]
    fn credentials_doc_multiline_example() {
        let text = "AWSCredentialsProvider = KclSTSAssumeRoleSessionCredentialsProvider|<arn>|<sessionName>\\\n    |endpointRegion=us-east-1|externalId=spartacus\n";
        assert_eq!(
            one(text),
            pair(
                "AWSCredentialsProvider",
                "KclSTSAssumeRoleSessionCredentialsProvider|<arn>|<sessionName>|endpointRegion=us-east-1|externalId=spartacus"
            )
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let bytes = b"\xEF\xBB\xBFexecutableName = app.py\napplicationName = a\n";
        let entries = parse_bytes(bytes).unwrap();
        assert_eq!(entries[0].key, "executableName");
        assert_eq!(entries[0].line, 1);
        assert_eq!(parse("\u{feff}a = 1").unwrap()[0].key, "a");
    }
}
