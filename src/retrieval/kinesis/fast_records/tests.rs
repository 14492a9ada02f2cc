//! The fast path against the SDK path: the same GetRecords bodies, answered by a scripted HTTP
//! client to two `KinesisStreamClient`s (fast path on and off), give the same batch or the same
//! error.

use super::split;
use crate::retrieval::kinesis::KinesisStreamClient;
use crate::retrieval::{RecordBatch, RetrievalError, StreamClient};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Answers every request with `status` and `body`, the body in chunks of `chunk` bytes.
#[derive(Debug, Clone)]
struct Scripted {
    status: u16,
    body: Arc<Vec<u8>>,
    chunk: usize,
}

/// A body in several frames, as a socket delivers it.
struct Chunked(VecDeque<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }
}

impl HttpConnector for Scripted {
    fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
        let chunks = self
            .body
            .chunks(self.chunk.max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        let body = SdkBody::from_body_1_x(Chunked(chunks));
        let response = HttpResponse::new(self.status.try_into().expect("status"), body);
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for Scripted {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn client(status: u16, body: &[u8], chunk: usize, fast: bool) -> KinesisStreamClient {
    let http = Scripted {
        status,
        body: Arc::new(body.to_vec()),
        chunk,
    };
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::for_tests())
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .http_client(http)
        .build();
    let mut c = KinesisStreamClient::new(aws_sdk_kinesis::Client::from_conf(config), "s".into());
    c.fast_records = fast;
    c
}

async fn both(
    status: u16,
    body: &[u8],
    chunk: usize,
) -> (
    Result<RecordBatch, RetrievalError>,
    Result<RecordBatch, RetrievalError>,
) {
    let fast = client(status, body, chunk, true)
        .get_records("shardId-000000000000", "it", 10_000)
        .await;
    let sdk = client(status, body, chunk, false)
        .get_records("shardId-000000000000", "it", 10_000)
        .await;
    (fast, sdk)
}

/// The same batch, or errors that read the same.
async fn assert_same(body: &str) -> Option<RecordBatch> {
    let (fast, sdk) = both(200, body.as_bytes(), 1 << 20).await;
    let (chunked, _) = both(200, body.as_bytes(), 7).await;
    match (fast, sdk, chunked) {
        (Ok(fast), Ok(sdk), Ok(chunked)) => {
            assert_eq!(fast, sdk, "{body}");
            assert_eq!(chunked, sdk, "{body}");
            Some(fast)
        }
        (Err(fast), Err(sdk), Err(chunked)) => {
            assert_eq!(fast.failure, sdk.failure, "{body}");
            assert_eq!(fast.to_string(), sdk.to_string(), "{body}");
            assert_eq!(chunked.to_string(), sdk.to_string(), "{body}");
            None
        }
        (fast, sdk, chunked) => {
            panic!("{body}\nfast: {fast:?}\nsdk: {sdk:?}\nchunked: {chunked:?}")
        }
    }
}

/// How many responses the fast path has taken on this thread.
fn taken() -> usize {
    super::TAKEN.with(|n| n.get())
}

/// A small deterministic generator (no dependency on a test crate's shrinking: the bodies
/// are written out on failure).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TIMESTAMPS: &[&str] = &[
    "1702000000",
    "1702000000.123",
    "1702000000.1",
    "1.702000000123E9",
    "1.702e9",
    "1702000000.123456789",
    "1702000000.9999999999999",
    "17020000001e-1",
    "1702000000.5e0",
    "0",
    "0.001",
    "-1.5",
    "-2",
    "1.7020000001234567e+9",
    "null",
];

const KEYS: &[&str] = &[
    "pk",
    "",
    "partition-\u{e9}\u{4e2d}\u{1f600}",
    r#"esc\"aped\\key\/x"#,
    r"\u00e9\u4e2d\ud83d\ude00",
    "tab\\tnew\\nline",
];

fn record_json(rng: &mut Lcg, seq: u64) -> String {
    let len = match rng.below(4) {
        0 => 0,
        1 => rng.below(4) as usize,
        2 => 100,
        _ => rng.below(1500) as usize,
    };
    let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
    let mut b64 = aws_smithy_types::base64::encode(&data);
    if rng.below(5) == 0 {
        // A writer that escapes '/' (JSON allows it): the SDK unescapes it, so must we.
        b64 = b64.replace('/', "\\/");
    }
    let mut fields = vec![
        format!(r#""SequenceNumber":"4959{seq:020}""#),
        format!(r#""Data":"{b64}""#),
    ];
    match rng.below(6) {
        0 => {}
        1 => fields.push(r#""PartitionKey":null"#.to_string()),
        _ => fields.push(format!(
            r#""PartitionKey":"{}""#,
            KEYS[rng.below(KEYS.len() as u64) as usize]
        )),
    }
    if rng.below(6) != 0 {
        fields.push(format!(
            r#""ApproximateArrivalTimestamp":{}"#,
            TIMESTAMPS[rng.below(TIMESTAMPS.len() as u64) as usize]
        ));
    }
    match rng.below(4) {
        0 => fields.push(r#""EncryptionType":"KMS""#.to_string()),
        1 => fields.push(r#""EncryptionType":"NONE""#.to_string()),
        2 => fields.push(r#""EncryptionType":null"#.to_string()),
        _ => {}
    }
    if rng.below(8) == 0 {
        fields.push(r#""SomethingNew":{"a":[1,2,{"b":null}]}"#.to_string());
    }
    // Members in any order, with or without whitespace.
    let n = fields.len();
    for i in (1..n).rev() {
        fields.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let sep = if rng.below(3) == 0 { " ,\n " } else { "," };
    format!("{{{}}}", fields.join(sep))
}

const CHILDREN: &str = r#""ChildShards":[{"ShardId":"shardId-000000000001","ParentShards":["shardId-000000000000"],"HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"170141183460469231731687303715884105727"}},{"ShardId":"shardId-000000000002","ParentShards":["shardId-000000000000"],"HashKeyRange":{"StartingHashKey":"170141183460469231731687303715884105728","EndingHashKey":"340282366920938463463374607431768211455"}}]"#;

fn body_json(rng: &mut Lcg, records: usize) -> String {
    let records: Vec<String> = (0..records)
        .map(|i| record_json(rng, i as u64 * 7 + 1))
        .collect();
    let mut fields = vec![format!(r#""Records":[{}]"#, records.join(","))];
    if rng.below(4) == 0 {
        // The end of a closed shard: no next iterator, the children.
        fields.push(r#""NextShardIterator":null"#.to_string());
        fields.push(CHILDREN.to_string());
    } else {
        fields.push(r#""NextShardIterator":"AAAA\/next+iterator==""#.to_string());
    }
    if rng.below(4) != 0 {
        fields.push(format!(r#""MillisBehindLatest":{}"#, rng.below(100_000)));
    }
    let n = fields.len();
    for i in (1..n).rev() {
        fields.swap(i, rng.below(i as u64 + 1) as usize);
    }
    format!("{{{}}}", fields.join(","))
}

#[tokio::test]
async fn the_fast_path_gives_what_the_sdk_path_gives() {
    let mut rng = Lcg(31);
    for case in 0..300 {
        let records = match case % 5 {
            0 => 0,
            1 => 1,
            2 => 2 + rng.below(10) as usize,
            _ => rng.below(300) as usize,
        };
        let body = body_json(&mut rng, records);
        let before = taken();
        let batch = assert_same(&body).await.unwrap_or_else(|| panic!("{body}"));
        assert_eq!(batch.records.len(), records);
        // Every generated body is one the fast path takes, and the client took it (twice:
        // whole and in chunks).
        assert!(split(body.as_bytes()).is_some(), "{body}");
        assert_eq!(taken() - before, 2, "{body}");
    }
}

#[tokio::test]
async fn the_fields_a_record_gets() {
    let body = r#"{"Records":[
        {"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ApproximateArrivalTimestamp":1.702000000123E9,"Data":"aGVsbG8=","PartitionKey":"p\u00e9\/k","EncryptionType":"KMS"},
        {"SequenceNumber":"49590338271490256608559692538361571095921575989136588899","ApproximateArrivalTimestamp":1702000001,"Data":"d29ybGQ\/","PartitionKey":"q"}
    ],"NextShardIterator":"next","MillisBehindLatest":42}"#;
    let before = taken();
    let batch = assert_same(body).await.expect("a batch");
    assert!(split(body.as_bytes()).is_some());
    assert_eq!(taken() - before, 2, "the client took the fast path");
    let r = &batch.records;
    assert_eq!(&r[0].data[..], b"hello");
    assert_eq!(r[0].partition_key, "p\u{e9}/k");
    // The SDK's arithmetic: the f64 nearest 1.702000000123E9, less its floor, times 1e9,
    // truncated (not 123_000_000).
    assert_eq!(
        r[0].approximate_arrival_timestamp,
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(1_702_000_000, 122_999_906))
    );
    assert_eq!(&r[1].data[..], b"world?");
    assert_eq!(
        r[1].approximate_arrival_timestamp,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_702_000_001))
    );
    assert_eq!(batch.next_iterator.as_deref(), Some("next"));
    assert_eq!(batch.millis_behind_latest, Some(42));
}

#[tokio::test]
async fn the_end_of_a_closed_shard() {
    let body = format!(
        r#"{{"Records":[{{"SequenceNumber":"1","Data":"AA=="}}],"MillisBehindLatest":0,{CHILDREN}}}"#
    );
    let batch = assert_same(&body).await.expect("a batch");
    assert_eq!(batch.next_iterator, None);
    assert_eq!(batch.child_shards.len(), 2);
    assert_eq!(batch.records.len(), 1);
}

/// Bodies the fast path leaves to the SDK: the SDK's batch, or the SDK's error.
#[tokio::test]
async fn what_the_fast_path_does_not_take_goes_to_the_sdk() {
    let bodies = [
        // Not JSON, or not all of it.
        "",
        "{",
        r#"{"Records":["#,
        r#"{"Records":[]} trailing"#,
        "not json",
        // Invalid base64: the SDK's error.
        r#"{"Records":[{"SequenceNumber":"1","Data":"!!!!"}],"NextShardIterator":"n"}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AAA"}],"NextShardIterator":"n"}"#,
        // A sequence number that is not decimal: the library's error on the SDK path.
        r#"{"Records":[{"SequenceNumber":"abc","Data":"AA=="}],"NextShardIterator":"n"}"#,
        // Missing or null where the SDK defaults or fails.
        r#"{"Records":[{"Data":"AA=="}],"NextShardIterator":"n"}"#,
        r#"{"Records":[{"SequenceNumber":"1"}],"NextShardIterator":"n"}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":null}],"NextShardIterator":"n"}"#,
        r#"{"Records":[{"SequenceNumber":null,"Data":"AA=="}],"NextShardIterator":"n"}"#,
        r#"{"Records":null,"NextShardIterator":"n"}"#,
        r#"{"NextShardIterator":"n","MillisBehindLatest":3}"#,
        "{}",
        // Another type.
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","EncryptionType":5}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","PartitionKey":5}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","ApproximateArrivalTimestamp":"1702000000"}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","ApproximateArrivalTimestamp":true}]}"#,
        r#"{"Records":[{"SequenceNumber":1,"Data":"AA=="}]}"#,
        r#"{"Records":{}}"#,
        // Out of range.
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","ApproximateArrivalTimestamp":1e300}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA==","ApproximateArrivalTimestamp":99999999999999999999}]}"#,
        // Twice.
        r#"{"Records":[],"Records":[{"SequenceNumber":"1","Data":"AA=="}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","SequenceNumber":"2","Data":"AA=="}]}"#,
        // Raw control characters (JSON forbids them).
        "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"AA==\",\"PartitionKey\":\"a\u{1}b\"}]}",
        // The other members malformed.
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA=="}],"MillisBehindLatest":"x"}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AA=="}],"MillisBehindLatest":1.5}"#,
    ];
    for body in bodies {
        assert_same(body).await;
    }
    // The fast path takes none of them but the last two (the SDK then fails on the rest).
    for body in &bodies[..bodies.len() - 2] {
        assert!(split(body.as_bytes()).is_none(), "{body}");
    }
}

/// An error response is the SDK's, whatever its body.
#[tokio::test]
async fn an_error_response_is_the_sdks() {
    let body = br#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#;
    let (fast, sdk) = both(400, body, 1 << 20).await;
    let (fast, sdk) = (fast.expect_err("an error"), sdk.expect_err("an error"));
    assert_eq!(fast.failure, sdk.failure);
    assert_eq!(fast.to_string(), sdk.to_string());
}
