//! The MultiLang wire protocol: JSON messages, one per line, tagged by `action`.
//!
//! Daemon → child messages are serialised exactly as the Java daemon does (explicit `null`s,
//! compact JSON, one object per line ending in `\n`, never a blank line: the Python client
//! parses every line it reads as JSON and exits on anything else, and exits on a missing key
//! too). The five calls are [`DaemonMessage`]; the checkpoint reply is a separate type,
//! [`CheckpointReply`], so that an unsolicited reply (both clients crash on one) cannot be
//! sent as a call.
//!
//! Child → daemon lines are parsed tolerantly by [`parse_child_line`]: blank lines (both
//! clients frame their output as `"\n" + json + "\n"`) are [`ChildLine::Blank`]; lines that are
//! not JSON objects, lack an `action`, or carry an unknown action are [`ChildLine::Noise`]
//! (user `print()`/`console.log` output). Unknown fields are ignored — unlike Java, which drops
//! a whole line with an unknown property (a newer client's extra field must not break the
//! conversation).

use std::time::SystemTime;

use base64::Engine as _;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value;

/// A call from the daemon to the child; the child answers each with a `status` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum DaemonMessage {
    /// The shard's processor starts. `sequenceNumber` is the checkpoint (or a sentinel such as
    /// `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, with `subSequenceNumber` 0 for a fresh lease).
    Initialize {
        /// The shard id, e.g. `shardId-000000000000`.
        shard_id: String,
        /// The checkpoint the shard resumes from; `null` when unknown.
        sequence_number: Option<String>,
        /// The checkpoint's sub-sequence number; `null` when unknown.
        sub_sequence_number: Option<u64>,
        /// The shard's stream (an extension of this daemon, absent when unknown): aws-kcl
        /// hands it to the processor as `streamName`; amazon-kclpy drops keys it does not
        /// know, so a Python processor reads the `KCL_STREAM_NAME` environment variable
        /// instead, set for every child.
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_name: Option<String>,
    },
    /// A batch of records (possibly empty with `callProcessRecordsEvenForEmptyRecordList`).
    ProcessRecords {
        /// The records, in order.
        records: Vec<WireRecord>,
        /// How far behind the tip of the shard this batch is; `null` when unknown.
        millis_behind_latest: Option<i64>,
    },
    /// The lease was lost; the child cannot checkpoint. The child's stdin is closed afterwards.
    LeaseLost,
    /// The shard ended; the child must checkpoint (SHARD_END). Stdin is closed afterwards.
    ShardEnded,
    /// Graceful shutdown: the child may checkpoint. A `leaseLost` follows.
    ShutdownRequested,
}

impl DaemonMessage {
    /// The `action` string, which the child's `status.responseFor` must echo.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Initialize { .. } => "initialize",
            Self::ProcessRecords { .. } => "processRecords",
            Self::LeaseLost => "leaseLost",
            Self::ShardEnded => "shardEnded",
            Self::ShutdownRequested => "shutdownRequested",
        }
    }

    /// The message as one line: compact JSON followed by `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

/// One record of a `processRecords` message.
///
/// Serialised in the Java daemon's field order with `"action":"record"` last (kclpy decodes
/// every nested object by its `action`, so the tag is required, rule 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// The record payload, standard base64 with padding.
    pub data: String,
    /// The partition key.
    pub partition_key: String,
    /// The sequence number, as a decimal string.
    pub sequence_number: String,
    /// Sub-sequence number (non-zero only for records de-aggregated from a KPL aggregate).
    pub sub_sequence_number: u64,
    /// Approximate arrival time in epoch milliseconds. Never `null` on the wire, because kclpy
    /// calls `int()` on it: when Kinesis did not report a time, [`WireRecord::new`] sends `0`
    /// (the Unix epoch), which kclpy turns into a valid (if meaningless) datetime.
    pub approximate_arrival_timestamp: i64,
}

impl WireRecord {
    /// Builds a record from raw bytes; `approximate_arrival` `None` becomes `0` (see the field).
    pub fn new(
        data: &[u8],
        partition_key: impl Into<String>,
        sequence_number: impl Into<String>,
        sub_sequence_number: u64,
        approximate_arrival: Option<SystemTime>,
    ) -> Self {
        Self {
            data: base64::engine::general_purpose::STANDARD.encode(data),
            partition_key: partition_key.into(),
            sequence_number: sequence_number.into(),
            sub_sequence_number,
            approximate_arrival_timestamp: approximate_arrival.map_or(0, epoch_millis),
        }
    }
}

/// Milliseconds since the Unix epoch (negative before it), saturating at the `i64` range.
pub fn epoch_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

impl Serialize for WireRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("WireRecord", 6)?;
        s.serialize_field("data", &self.data)?;
        s.serialize_field("partitionKey", &self.partition_key)?;
        s.serialize_field("sequenceNumber", &self.sequence_number)?;
        s.serialize_field(
            "approximateArrivalTimestamp",
            &self.approximate_arrival_timestamp,
        )?;
        s.serialize_field("subSequenceNumber", &self.sub_sequence_number)?;
        s.serialize_field("action", "record")?;
        s.end()
    }
}

/// Why a checkpoint requested by the child failed, named on the wire by the simple class name
/// of the Java exception (kclpy raises `CheckpointError(<name>)`; the Node callback gets it as
/// `err`). Samples branch on these names, e.g. retrying on `ThrottlingException`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointFailure {
    /// `ShutdownException`: the lease was lost or the processor is shutting down.
    Shutdown,
    /// `InvalidStateException`: no checkpointer for this call (`initialize`, `leaseLost`) or the
    /// lease table is unusable.
    InvalidState,
    /// `IllegalArgumentException`: the sequence number is malformed, before the last
    /// checkpoint, or beyond what was delivered.
    IllegalArgument,
    /// `ThrottlingException`: the lease table throttled the write; retry later.
    Throttling,
    /// `KinesisClientLibDependencyException`: a dependency (DynamoDB) failed; retry later.
    Dependency,
    /// Any other exception simple name.
    Other(String),
}

impl CheckpointFailure {
    /// The Java exception simple name sent in the reply's `error` field.
    pub fn java_name(&self) -> &str {
        match self {
            Self::Shutdown => "ShutdownException",
            Self::InvalidState => "InvalidStateException",
            Self::IllegalArgument => "IllegalArgumentException",
            Self::Throttling => "ThrottlingException",
            Self::Dependency => "KinesisClientLibDependencyException",
            Self::Other(name) => name,
        }
    }
}

impl std::fmt::Display for CheckpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.java_name())
    }
}

impl Serialize for CheckpointFailure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.java_name())
    }
}

/// The daemon's answer to a child's checkpoint request; always the very next line the child
/// reads after its request (rule 5). Echoes the request's values, with `error` `null` on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename = "checkpoint", rename_all = "camelCase")]
pub struct CheckpointReply {
    /// The requested sequence number, echoed.
    pub sequence_number: Option<String>,
    /// The requested sub-sequence number, echoed.
    pub sub_sequence_number: Option<u64>,
    /// `None` on success, else the failure's Java exception name.
    pub error: Option<CheckpointFailure>,
}

impl CheckpointReply {
    /// The reply as one line: compact JSON followed by `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

/// A call ready to send: its action (which the child's status must echo) and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCall {
    /// What [`DaemonMessage::action`] says of the call.
    pub action: &'static str,
    /// The call as one line, as [`DaemonMessage::to_line`] writes it.
    pub line: Vec<u8>,
}

impl From<DaemonMessage> for EncodedCall {
    fn from(msg: DaemonMessage) -> Self {
        EncodedCall {
            action: msg.action(),
            line: msg.to_line(),
        }
    }
}

/// The `processRecords` call of `records`, byte for byte what [`DaemonMessage::ProcessRecords`]
/// of their [`WireRecord`]s serialises to, written straight from the records: each payload is
/// base64-encoded (SIMD) into the line itself, which is sized once. A batch of 10,000 records
/// of 1 KiB is a 15 MB line, and building it was most of the daemon's own CPU per record; while
/// it is built, no other shard's child can be written to on that runtime thread.
pub fn process_records_call(
    records: &[kinesis_client::Record],
    millis_behind_latest: Option<i64>,
) -> EncodedCall {
    const RECORD_OVERHEAD: usize = r#"{"data":"","partitionKey":"","sequenceNumber":"","approximateArrivalTimestamp":-9223372036854775808,"subSequenceNumber":18446744073709551615,"action":"record"},"#.len();
    let b64 = base64_simd::STANDARD;
    let capacity = records
        .iter()
        .map(|r| {
            // A partition key's escapes are at most 6 bytes per byte (`\u001f`), but keys are
            // almost always plain: size for plain, and let the rare key grow the line.
            b64.encoded_length(r.data.len())
                + r.partition_key.len()
                + r.sequence_number.as_str().len()
                + RECORD_OVERHEAD
        })
        .sum::<usize>()
        + 96;
    let mut line = Vec::with_capacity(capacity);
    line.extend_from_slice(br#"{"action":"processRecords","records":["#);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(br#"{"data":""#);
        // Into the line's spare capacity (not zeroed first). The base64 alphabet needs no JSON
        // escapes.
        b64.encode_append(&r.data, &mut line);
        line.extend_from_slice(br#"","partitionKey":"#);
        write_json(&mut line, r.partition_key.as_str());
        line.extend_from_slice(br#","sequenceNumber":"#);
        write_json(&mut line, r.sequence_number.as_str());
        line.extend_from_slice(br#","approximateArrivalTimestamp":"#);
        write_json(
            &mut line,
            &r.approximate_arrival_timestamp.map_or(0, epoch_millis),
        );
        line.extend_from_slice(br#","subSequenceNumber":"#);
        write_json(&mut line, &r.sub_sequence_number);
        line.extend_from_slice(br#","action":"record"}"#);
    }
    line.extend_from_slice(br#"],"millisBehindLatest":"#);
    write_json(&mut line, &millis_behind_latest);
    line.extend_from_slice(b"}\n");
    EncodedCall {
        action: "processRecords",
        line,
    }
}

/// Appends `value` as JSON (a string quoted and escaped as serde_json escapes it).
fn write_json<T: Serialize + ?Sized>(line: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(line, value).expect("strings and integers always serialise");
}

fn to_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Our messages hold only strings, integers, nulls and arrays of them; serde_json cannot
    // fail on those. It escapes control characters, so the output is always one line.
    let mut line = serde_json::to_vec(value).expect("protocol messages always serialise");
    line.push(b'\n');
    line
}

/// A message from the child.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildMessage {
    /// `{"action":"status","responseFor":...}`: the child finished the call. `response_for` is
    /// `None` when the field is missing or not a string (a protocol violation).
    Status {
        /// The action being acknowledged.
        response_for: Option<String>,
    },
    /// `{"action":"checkpoint","sequenceNumber":...,"subSequenceNumber":...}`. A missing
    /// field is `None` (the Node client never sends `subSequenceNumber`).
    Checkpoint {
        /// The sequence number to checkpoint at; `None` = "everything delivered so far"
        /// (SHARD_END during `shardEnded`).
        sequence_number: Option<String>,
        /// The sub-sequence number; `None` when absent or `null`.
        sub_sequence_number: Option<u64>,
    },
    /// A checkpoint request whose fields cannot be used (e.g. a negative or fractional
    /// `subSequenceNumber`). It still needs a reply, or the child blocks forever; the
    /// driver answers `IllegalArgumentException`, as Java's checkpointer would.
    InvalidCheckpoint {
        /// The sequence number, if it was usable, for the echo.
        sequence_number: Option<String>,
        /// What is wrong.
        problem: String,
    },
}

/// One line read from the child's stdout, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildLine {
    /// Empty or whitespace-only: the clients' framing. Skip silently.
    Blank,
    /// Not a protocol message; log it and skip.
    Noise {
        /// Why the line is not a message.
        reason: String,
    },
    /// A protocol message.
    Message(ChildMessage),
}

/// Classifies one line from the child's stdout (without or with its line terminator).
pub fn parse_child_line(line: &str) -> ChildLine {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return ChildLine::Blank;
    }
    let noise = |reason: &str| ChildLine::Noise {
        reason: reason.to_string(),
    };
    let Ok(value) = serde_json::from_str::<Value>(trimmed) else {
        return noise("not JSON");
    };
    let Value::Object(fields) = value else {
        return noise("JSON but not an object");
    };
    let Some(action) = fields.get("action") else {
        return noise("JSON object without an \"action\"");
    };
    match action.as_str() {
        Some("status") => ChildLine::Message(ChildMessage::Status {
            response_for: fields
                .get("responseFor")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        Some("checkpoint") => ChildLine::Message(parse_checkpoint(&fields)),
        Some(_) => noise("unknown action"),
        None => noise("\"action\" is not a string"),
    }
}

fn parse_checkpoint(fields: &serde_json::Map<String, Value>) -> ChildMessage {
    let sequence_number = match fields.get("sequenceNumber") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "sequenceNumber must be a string or null, got {other}"
        )),
    };
    let sub_sequence_number = match fields.get("subSequenceNumber") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            format!("subSequenceNumber must be a non-negative integer or null, got {n}")
        }),
        Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("subSequenceNumber must be a non-negative integer or null, got {s:?}")
        }),
        Some(other) => Err(format!(
            "subSequenceNumber must be a non-negative integer or null, got {other}"
        )),
    };
    match (sequence_number, sub_sequence_number) {
        (Ok(sequence_number), Ok(sub_sequence_number)) => ChildMessage::Checkpoint {
            sequence_number,
            sub_sequence_number,
        },
        (seq, sub) => ChildMessage::InvalidCheckpoint {
            problem: [seq.as_ref().err(), sub.as_ref().err()]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            sequence_number: seq.ok().flatten(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(msg: &DaemonMessage) -> String {
        String::from_utf8(msg.to_line()).expect("utf-8")
    }

    // --- daemon -> child: byte-for-byte against what the Java daemon writes ---

    #[test]
    fn initialize_exact_bytes() {
        let msg = DaemonMessage::Initialize {
            shard_id: "shardId-000000000001".into(),
            sequence_number: Some("TRIM_HORIZON".into()),
            sub_sequence_number: Some(0),
            stream_name: None,
        };
        assert_eq!(
            line(&msg),
            "{\"action\":\"initialize\",\"shardId\":\"shardId-000000000001\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0}\n"
        );
        assert_eq!(msg.action(), "initialize");
    }

    /// The stream's name comes last, after the keys the Java daemon sends.
    #[test]
    fn initialize_names_the_stream_last() {
        let msg = DaemonMessage::Initialize {
            shard_id: "shardId-000000000001".into(),
            sequence_number: Some("TRIM_HORIZON".into()),
            sub_sequence_number: Some(0),
            stream_name: Some("orders".into()),
        };
        assert_eq!(
            line(&msg),
            "{\"action\":\"initialize\",\"shardId\":\"shardId-000000000001\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0,\"streamName\":\"orders\"}\n"
        );
    }

    #[test]
    fn initialize_with_nulls_keeps_the_keys() {
        let msg = DaemonMessage::Initialize {
            shard_id: "shardId-000000000000".into(),
            sequence_number: None,
            sub_sequence_number: None,
            stream_name: None,
        };
        assert_eq!(
            line(&msg),
            "{\"action\":\"initialize\",\"shardId\":\"shardId-000000000000\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n"
        );
    }

    #[test]
    fn process_records_exact_bytes() {
        let msg = DaemonMessage::ProcessRecords {
            records: vec![WireRecord::new(
                b"hello",
                "pk",
                "4959",
                0,
                Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            )],
            millis_behind_latest: Some(42),
        };
        assert_eq!(
            line(&msg),
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGVsbG8=\",\"partitionKey\":\"pk\",\"sequenceNumber\":\"4959\",\"approximateArrivalTimestamp\":1700000000123,\"subSequenceNumber\":0,\"action\":\"record\"}],\"millisBehindLatest\":42}\n"
        );
        assert_eq!(msg.action(), "processRecords");
    }

    #[test]
    fn process_records_empty_and_null_lag() {
        let msg = DaemonMessage::ProcessRecords {
            records: vec![],
            millis_behind_latest: None,
        };
        assert_eq!(
            line(&msg),
            "{\"action\":\"processRecords\",\"records\":[],\"millisBehindLatest\":null}\n"
        );
    }

    #[test]
    fn process_records_matches_the_observed_kclpy_conversation() {
        // The conversation observed between the Java daemon and the kclpy sample (field order
        // differs from Java's; compare as JSON).
        let expected: Value = serde_json::from_str(r#"{"action":"processRecords","records":[{"action":"record","data":"aGVsbG8tMQ==","partitionKey":"pk-1","sequenceNumber":"49590338271490256608559692538361571095921575989136588801","subSequenceNumber":0,"approximateArrivalTimestamp":1700000000000},{"action":"record","data":"aGVsbG8tMg==","partitionKey":"pk-2","sequenceNumber":"49590338271490256608559692538361571095921575989136588802","subSequenceNumber":0,"approximateArrivalTimestamp":1700000000001},{"action":"record","data":"aGVsbG8tMw==","partitionKey":"pk-3","sequenceNumber":"49590338271490256608559692538361571095921575989136588803","subSequenceNumber":0,"approximateArrivalTimestamp":1700000000002}],"millisBehindLatest":0}"#).expect("json");
        let records = (1..=3)
            .map(|i| {
                WireRecord::new(
                    format!("hello-{i}").as_bytes(),
                    format!("pk-{i}"),
                    format!("4959033827149025660855969253836157109592157598913658880{i}"),
                    0,
                    Some(
                        SystemTime::UNIX_EPOCH
                            + Duration::from_millis(1_700_000_000_000 + i as u64 - 1),
                    ),
                )
            })
            .collect();
        let msg = DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: Some(0),
        };
        let actual: Value = serde_json::from_slice(&msg.to_line()).expect("json");
        assert_eq!(actual, expected);
    }

    #[test]
    fn record_without_arrival_time_sends_zero_not_null() {
        let r = WireRecord::new(b"", "k", "1", 7, None);
        assert_eq!(r.approximate_arrival_timestamp, 0);
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            json,
            "{\"data\":\"\",\"partitionKey\":\"k\",\"sequenceNumber\":\"1\",\"approximateArrivalTimestamp\":0,\"subSequenceNumber\":7,\"action\":\"record\"}"
        );
    }

    /// The direct writer against the serde path it replaces, over records that stress it:
    /// payloads of every length mod 3 (base64 padding), partition keys that need escapes
    /// (quotes, backslashes, control characters, non-ASCII), times before and after the
    /// epoch and none, extreme integers.
    #[test]
    fn process_records_call_writes_exactly_what_serde_writes() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let key_chars = [
            'a', 'Z', '0', '"', '\\', '\n', '\u{1f}', '\u{7f}', 'é', '😀', '\u{2028}', ' ',
        ];
        for round in 0..200 {
            let n = (next() % 20) as usize;
            let records: Vec<kinesis_client::Record> = (0..n)
                .map(|_| {
                    let len = (next() % 2100) as usize;
                    let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    let key: String = (0..1 + next() % 12)
                        .map(|_| key_chars[(next() % key_chars.len() as u64) as usize])
                        .collect();
                    let digits: String = (0..1 + next() % 56)
                        .map(|i| char::from(b'0' + ((next() % 9) as u8 + u8::from(i == 0))))
                        .collect();
                    let mut r = kinesis_client::Record::new(
                        data,
                        key,
                        digits
                            .parse::<kinesis_client::SequenceNumber>()
                            .expect("digits"),
                    );
                    r.sub_sequence_number = match next() % 3 {
                        0 => 0,
                        1 => u64::MAX,
                        _ => next() % 1000,
                    };
                    r.approximate_arrival_timestamp = match next() % 3 {
                        0 => None,
                        1 => {
                            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(next() % (1 << 45)))
                        }
                        _ => {
                            Some(SystemTime::UNIX_EPOCH - Duration::from_millis(next() % (1 << 40)))
                        }
                    };
                    r
                })
                .collect();
            let lag = match round % 4 {
                0 => None,
                1 => Some(i64::MIN),
                2 => Some(i64::MAX),
                _ => Some((next() % 100_000) as i64),
            };
            let expected = DaemonMessage::ProcessRecords {
                records: records
                    .iter()
                    .map(|r| {
                        WireRecord::new(
                            &r.data,
                            r.partition_key.clone(),
                            r.sequence_number.clone(),
                            r.sub_sequence_number,
                            r.approximate_arrival_timestamp,
                        )
                    })
                    .collect(),
                millis_behind_latest: lag,
            };
            let call = process_records_call(&records, lag);
            assert_eq!(call.action, expected.action());
            assert_eq!(
                String::from_utf8_lossy(&call.line),
                String::from_utf8_lossy(&expected.to_line()),
                "round {round}"
            );
        }
    }

    #[test]
    fn epoch_millis_before_and_after() {
        assert_eq!(
            epoch_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(5)),
            5
        );
        assert_eq!(
            epoch_millis(SystemTime::UNIX_EPOCH - Duration::from_millis(5)),
            -5
        );
    }

    #[test]
    fn unit_messages_exact_bytes() {
        assert_eq!(
            line(&DaemonMessage::LeaseLost),
            "{\"action\":\"leaseLost\"}\n"
        );
        assert_eq!(
            line(&DaemonMessage::ShardEnded),
            "{\"action\":\"shardEnded\"}\n"
        );
        assert_eq!(
            line(&DaemonMessage::ShutdownRequested),
            "{\"action\":\"shutdownRequested\"}\n"
        );
        assert_eq!(DaemonMessage::LeaseLost.action(), "leaseLost");
        assert_eq!(DaemonMessage::ShardEnded.action(), "shardEnded");
        assert_eq!(
            DaemonMessage::ShutdownRequested.action(),
            "shutdownRequested"
        );
    }

    #[test]
    fn checkpoint_reply_exact_bytes() {
        let ok = CheckpointReply {
            sequence_number: Some("4959".into()),
            sub_sequence_number: Some(0),
            error: None,
        };
        assert_eq!(
            String::from_utf8(ok.to_line()).expect("utf-8"),
            "{\"action\":\"checkpoint\",\"sequenceNumber\":\"4959\",\"subSequenceNumber\":0,\"error\":null}\n"
        );
        let nulls = CheckpointReply {
            sequence_number: None,
            sub_sequence_number: None,
            error: None,
        };
        assert_eq!(
            String::from_utf8(nulls.to_line()).expect("utf-8"),
            "{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null,\"error\":null}\n"
        );
        let throttled = CheckpointReply {
            sequence_number: Some("4959".into()),
            sub_sequence_number: Some(0),
            error: Some(CheckpointFailure::Throttling),
        };
        assert_eq!(
            String::from_utf8(throttled.to_line()).expect("utf-8"),
            "{\"action\":\"checkpoint\",\"sequenceNumber\":\"4959\",\"subSequenceNumber\":0,\"error\":\"ThrottlingException\"}\n"
        );
    }

    #[test]
    fn failure_names() {
        assert_eq!(CheckpointFailure::Shutdown.java_name(), "ShutdownException");
        assert_eq!(
            CheckpointFailure::InvalidState.java_name(),
            "InvalidStateException"
        );
        assert_eq!(
            CheckpointFailure::IllegalArgument.java_name(),
            "IllegalArgumentException"
        );
        assert_eq!(
            CheckpointFailure::Dependency.to_string(),
            "KinesisClientLibDependencyException"
        );
        assert_eq!(
            CheckpointFailure::Other("FooException".into()).java_name(),
            "FooException"
        );
    }

    #[test]
    fn strings_with_newlines_stay_on_one_line() {
        let msg = DaemonMessage::Initialize {
            shard_id: "a\nb\u{2028}é".into(),
            sequence_number: None,
            sub_sequence_number: None,
            stream_name: None,
        };
        let bytes = msg.to_line();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(bytes.last(), Some(&b'\n'));
    }

    // --- child -> daemon ---

    fn msg(line: &str) -> ChildMessage {
        match parse_child_line(line) {
            ChildLine::Message(m) => m,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn status(s: &str) -> ChildMessage {
        ChildMessage::Status {
            response_for: Some(s.into()),
        }
    }

    #[test]
    fn status_python_and_node_spacing() {
        assert_eq!(
            msg("{\"action\": \"status\", \"responseFor\": \"initialize\"}"),
            status("initialize")
        );
        assert_eq!(
            msg("{\"action\":\"status\",\"responseFor\":\"processRecords\"}\n"),
            status("processRecords")
        );
        assert_eq!(
            msg("{\"action\":\"status\",\"responseFor\":\"shardEnded\"}\r\n"),
            status("shardEnded")
        );
    }

    #[test]
    fn status_without_response_for() {
        assert_eq!(
            msg("{\"action\":\"status\"}"),
            ChildMessage::Status { response_for: None }
        );
        assert_eq!(
            msg("{\"action\":\"status\",\"responseFor\":3}"),
            ChildMessage::Status { response_for: None }
        );
    }

    #[test]
    fn checkpoint_python_shape() {
        assert_eq!(
            msg("{\"action\": \"checkpoint\", \"sequenceNumber\": \"49590338271490256608559692538361571095921575989136588803\", \"subSequenceNumber\": 0}"),
            ChildMessage::Checkpoint {
                sequence_number: Some(
                    "49590338271490256608559692538361571095921575989136588803".into()
                ),
                sub_sequence_number: Some(0)
            }
        );
        assert_eq!(
            msg("{\"action\": \"checkpoint\", \"sequenceNumber\": null, \"subSequenceNumber\": null}"),
            ChildMessage::Checkpoint {
                sequence_number: None,
                sub_sequence_number: None
            }
        );
    }

    #[test]
    fn checkpoint_node_shape_without_sub_sequence() {
        assert_eq!(
            msg("{\"action\":\"checkpoint\",\"sequenceNumber\":\"4959\"}"),
            ChildMessage::Checkpoint {
                sequence_number: Some("4959".into()),
                sub_sequence_number: None
            }
        );
        assert_eq!(
            msg("{\"action\":\"checkpoint\",\"sequenceNumber\":null}"),
            ChildMessage::Checkpoint {
                sequence_number: None,
                sub_sequence_number: None
            }
        );
        assert_eq!(
            msg("{\"action\":\"checkpoint\"}"),
            ChildMessage::Checkpoint {
                sequence_number: None,
                sub_sequence_number: None
            }
        );
    }

    #[test]
    fn checkpoint_coercions_like_jackson() {
        assert_eq!(
            msg("{\"action\":\"checkpoint\",\"sequenceNumber\":123,\"subSequenceNumber\":\"4\"}"),
            ChildMessage::Checkpoint {
                sequence_number: Some("123".into()),
                sub_sequence_number: Some(4)
            }
        );
    }

    #[test]
    fn invalid_checkpoint_fields() {
        assert_eq!(
            msg("{\"action\":\"checkpoint\",\"sequenceNumber\":\"9\",\"subSequenceNumber\":-1}"),
            ChildMessage::InvalidCheckpoint {
                sequence_number: Some("9".into()),
                problem: "subSequenceNumber must be a non-negative integer or null, got -1".into()
            }
        );
        let ChildMessage::InvalidCheckpoint {
            sequence_number,
            problem,
        } = msg(
            "{\"action\":\"checkpoint\",\"sequenceNumber\":{\"a\":1},\"subSequenceNumber\":1.5}",
        )
        else {
            panic!("expected InvalidCheckpoint");
        };
        assert_eq!(sequence_number, None);
        assert!(
            problem.contains("sequenceNumber must be") && problem.contains("1.5"),
            "{problem}"
        );
    }

    #[test]
    fn extra_fields_are_ignored() {
        assert_eq!(
            msg("{\"action\":\"status\",\"responseFor\":\"leaseLost\",\"extra\":{\"nested\":[1,2]},\"n\":1}"),
            status("leaseLost")
        );
        assert_eq!(
            msg("{\"sequenceNumber\":\"5\",\"error\":null,\"action\":\"checkpoint\",\"x\":true}"),
            ChildMessage::Checkpoint {
                sequence_number: Some("5".into()),
                sub_sequence_number: None
            }
        );
    }

    #[test]
    fn blank_lines() {
        for blank in ["", "\n", "\r\n", "   ", "\t \r"] {
            assert_eq!(parse_child_line(blank), ChildLine::Blank, "{blank:?}");
        }
    }

    #[test]
    fn noise_lines() {
        for (noise, reason) in [
            (
                "Was throttled while checkpointing, will attempt again in 5 seconds",
                "not JSON",
            ),
            ("{\"action\":\"status\"", "not JSON"),
            ("[1,2,3]", "JSON but not an object"),
            ("\"status\"", "JSON but not an object"),
            ("{\"foo\":1}", "JSON object without an \"action\""),
            ("{\"action\":\"foo\"}", "unknown action"),
            (
                "{\"action\":\"shutdown\",\"reason\":\"TERMINATE\"}",
                "unknown action",
            ),
            ("{\"action\":7}", "\"action\" is not a string"),
        ] {
            assert_eq!(
                parse_child_line(noise),
                ChildLine::Noise {
                    reason: reason.into()
                },
                "{noise:?}"
            );
        }
    }
}
