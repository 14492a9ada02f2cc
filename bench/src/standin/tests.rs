//! The stand-in answers as Kinesis would: checked through the AWS SDK for Rust (JSON 1.1) and,
//! for CBOR, by decoding its raw answers with ciborium.

use super::*;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(spec: StreamSpec) -> Standin {
    Standin::start(spec).expect("stand-in starts")
}

async fn iterator(
    k: &aws_sdk_kinesis::Client,
    s: &Standin,
    shard: &str,
    kind: ShardIteratorType,
    seq: Option<String>,
    at: Option<DateTime>,
) -> Result<String, String> {
    k.get_shard_iterator()
        .stream_name(s.stream_name())
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(seq)
        .set_timestamp(at)
        .send()
        .await
        .map(|o| o.shard_iterator().expect("an iterator").to_string())
        .map_err(|e| e.into_service_error().code().unwrap_or("?").to_string())
}

fn position(data: &[u8]) -> usize {
    u64::from_le_bytes(data[..8].try_into().unwrap()) as usize
}

#[tokio::test]
async fn standin_reads_a_shard_in_order_honouring_limit_with_lag_falling_to_zero() {
    let s = start(StreamSpec::new("s1", 1, 2_500, 100));
    let k = s.kinesis_client();
    let shard = &s.shard_ids()[0];
    let mut it = iterator(&k, &s, shard, ShardIteratorType::TrimHorizon, None, None)
        .await
        .unwrap();
    let (mut sizes, mut lags, mut next_pos) = (Vec::new(), Vec::new(), 0);
    for _ in 0..4 {
        let out = k
            .get_records()
            .shard_iterator(&it)
            .limit(1_000)
            .send()
            .await
            .unwrap();
        sizes.push(out.records().len());
        lags.push(out.millis_behind_latest().unwrap());
        for r in out.records() {
            assert_eq!(position(r.data().as_ref()), next_pos);
            assert_eq!(r.data().as_ref(), record_data(0, next_pos, 100).as_slice());
            assert_eq!(r.sequence_number(), s.sequence_number(0, next_pos));
            assert_eq!(r.sequence_number().len(), 56);
            assert_eq!(r.partition_key(), Some(partition_key(next_pos).as_str()));
            let t = r.approximate_arrival_timestamp().unwrap();
            // Epoch seconds with three decimals, read as a float: within a millisecond.
            assert!((t.to_millis().unwrap() - s.arrival_ms(0, next_pos)).abs() <= 1);
            next_pos += 1;
        }
        assert!(out.child_shards().is_empty());
        it = out
            .next_shard_iterator()
            .expect("an open shard goes on")
            .to_string();
    }
    assert_eq!(
        sizes,
        [1_000, 1_000, 500, 0],
        "Limit honoured, then caught up"
    );
    assert_eq!(
        lags,
        [1_500, 500, 0, 0],
        "MillisBehindLatest falls to 0 at the tip"
    );
    // Without Limit: every record at once (fewer than 10,000).
    let it = iterator(&k, &s, shard, ShardIteratorType::TrimHorizon, None, None)
        .await
        .unwrap();
    let out = k.get_records().shard_iterator(it).send().await.unwrap();
    assert_eq!(out.records().len(), 2_500);
    let stats = s.stats();
    assert_eq!(stats.get_records, 5);
    assert_eq!(stats.records, 5_000);
    assert!(stats.cpu > Duration::ZERO && stats.bytes > 500_000);
}

#[tokio::test]
async fn standin_iterators_of_every_type() {
    let s = start(StreamSpec::new("s2", 2, 100, 20));
    let k = s.kinesis_client();
    let shard = &s.shard_ids()[1];
    let first = |it: String| {
        let k = k.clone();
        async move {
            let out = k
                .get_records()
                .shard_iterator(it)
                .limit(1)
                .send()
                .await
                .unwrap();
            out.records().first().map(|r| position(r.data().as_ref()))
        }
    };
    let seq10 = Some(s.sequence_number(1, 10));
    let at = |kind, seq, t| iterator(&k, &s, shard, kind, seq, t);
    let it = at(ShardIteratorType::TrimHorizon, None, None)
        .await
        .unwrap();
    assert_eq!(first(it).await, Some(0));
    let it = at(ShardIteratorType::AtSequenceNumber, seq10.clone(), None)
        .await
        .unwrap();
    assert_eq!(first(it).await, Some(10));
    let it = at(ShardIteratorType::AfterSequenceNumber, seq10, None)
        .await
        .unwrap();
    assert_eq!(first(it).await, Some(11));
    let t20 = DateTime::from_millis(s.arrival_ms(1, 20));
    let it = at(ShardIteratorType::AtTimestamp, None, Some(t20))
        .await
        .unwrap();
    assert_eq!(first(it).await, Some(20));
    let before = DateTime::from_millis(s.arrival_ms(1, 0) - 60_000);
    let it = at(ShardIteratorType::AtTimestamp, None, Some(before))
        .await
        .unwrap();
    assert_eq!(first(it).await, Some(0));
    let it = at(ShardIteratorType::Latest, None, None).await.unwrap();
    let out = k.get_records().shard_iterator(it).send().await.unwrap();
    assert!(out.records().is_empty());
    assert_eq!(out.millis_behind_latest(), Some(0));
    assert!(
        out.next_shard_iterator().is_some(),
        "an open shard has a next iterator at its tip"
    );
    // A sequence number of another shard, or none at all, is not a position in this one.
    let other = Some(s.sequence_number(0, 10));
    let e = at(ShardIteratorType::AtSequenceNumber, other, None)
        .await
        .unwrap_err();
    assert_eq!(e, "InvalidArgumentException");
    let e = at(ShardIteratorType::AtSequenceNumber, None, None)
        .await
        .unwrap_err();
    assert_eq!(e, "InvalidArgumentException");
    let e = iterator(
        &k,
        &s,
        "shardId-000000000099",
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e, "ResourceNotFoundException");
    let e = k
        .get_shard_iterator()
        .stream_name("no-such-stream")
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().code(),
        Some("ResourceNotFoundException")
    );
    // The ARN names the stream as well as the name.
    let out = k
        .get_shard_iterator()
        .stream_arn(s.stream_arn())
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    assert!(out.shard_iterator().is_some());
}

#[tokio::test]
async fn standin_shard_end_has_no_next_iterator_and_names_the_children() {
    let s = start(StreamSpec::new("s3", 2, 300, 10).resharded());
    let k = s.kinesis_client();
    let listed = k.list_shards().stream_name("s3").send().await.unwrap();
    let shards = listed.shards();
    assert_eq!(shards.len(), 4);
    let parent = &shards[0];
    let range = parent.sequence_number_range().unwrap();
    assert_eq!(
        range.ending_sequence_number(),
        Some(s.sequence_number(0, 299).as_str())
    );
    assert!(shards[1]
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .is_none());
    for child in &shards[2..] {
        assert_eq!(child.parent_shard_id(), Some(parent.shard_id()));
        // Children continue after the parent's sequence numbers.
        let start = child
            .sequence_number_range()
            .unwrap()
            .starting_sequence_number();
        assert!(start > range.ending_sequence_number().unwrap());
    }
    let (p, c1) = (
        parent.hash_key_range().unwrap(),
        shards[2].hash_key_range().unwrap(),
    );
    let c2 = shards[3].hash_key_range().unwrap();
    assert_eq!(p.starting_hash_key(), c1.starting_hash_key());
    assert_eq!(p.ending_hash_key(), c2.ending_hash_key());
    let summary = k
        .describe_stream_summary()
        .stream_name("s3")
        .send()
        .await
        .unwrap();
    let d = summary.stream_description_summary().unwrap();
    assert_eq!(d.open_shard_count(), 3);
    assert_eq!(d.stream_arn(), s.stream_arn());

    let mut it = iterator(
        &k,
        &s,
        parent.shard_id(),
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await
    .unwrap();
    let mut got = 0;
    loop {
        let out = k
            .get_records()
            .shard_iterator(&it)
            .limit(128)
            .send()
            .await
            .unwrap();
        got += out.records().len();
        match out.next_shard_iterator() {
            Some(next) => {
                assert!(out.child_shards().is_empty());
                it = next.to_string();
            }
            None => {
                assert_eq!(got, 300, "shard end comes with the last records");
                assert_eq!(out.millis_behind_latest(), Some(0));
                let children: Vec<_> = out.child_shards().iter().map(|c| c.shard_id()).collect();
                assert_eq!(children, [shards[2].shard_id(), shards[3].shard_id()]);
                for c in out.child_shards() {
                    assert_eq!(c.parent_shards(), [parent.shard_id().to_string()]);
                }
                break;
            }
        }
    }
    // LATEST on a closed shard: at its end, so shard end at once.
    let it = iterator(
        &k,
        &s,
        parent.shard_id(),
        ShardIteratorType::Latest,
        None,
        None,
    )
    .await
    .unwrap();
    let out = k.get_records().shard_iterator(it).send().await.unwrap();
    assert!(out.records().is_empty() && out.next_shard_iterator().is_none());
    assert_eq!(out.child_shards().len(), 2);
    // A child reads from its start.
    let it = iterator(
        &k,
        &s,
        shards[3].shard_id(),
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await
    .unwrap();
    let out = k.get_records().shard_iterator(it).send().await.unwrap();
    assert_eq!(out.records().len(), 300);
    assert_eq!(out.records()[0].sequence_number(), s.sequence_number(3, 0));
}

#[tokio::test]
async fn standin_list_shards_pages_with_next_token() {
    let s = start(StreamSpec::new("s4", 25, 1, 1));
    let k = s.kinesis_client();
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = k.list_shards().max_results(10);
        let req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_name("s4"),
        };
        let out = req.send().await.unwrap();
        pages.push(out.shards().len());
        ids.extend(out.shards().iter().map(|s| s.shard_id().to_string()));
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, [10, 10, 5]);
    assert_eq!(ids, s.shard_ids());
    let all = k.list_shards().stream_name("s4").send().await.unwrap();
    assert_eq!(all.shards().len(), 25);
    assert!(all.next_token().is_none());
    let after = k
        .list_shards()
        .stream_name("s4")
        .exclusive_start_shard_id(&ids[20])
        .send()
        .await
        .unwrap();
    assert_eq!(after.shards().len(), 4);
    let e = k
        .list_shards()
        .stream_name("s4")
        .next_token(token.unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().code(),
        Some("InvalidArgumentException")
    );
}

#[tokio::test]
async fn standin_refuses_unknown_operations_bad_limits_and_bad_or_expired_iterators() {
    let mut spec = StreamSpec::new("s5", 1, 10, 10);
    spec.iterator_ttl = Duration::from_millis(300);
    let s = start(spec);
    let k = s.kinesis_client();
    let e = k
        .put_record()
        .stream_name("s5")
        .partition_key("p")
        .data(aws_sdk_kinesis::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().code(),
        Some("UnknownOperationException")
    );
    assert_eq!(s.unknown_operations(), ["Kinesis_20131202.PutRecord"]);
    let shard = &s.shard_ids()[0];
    let it = iterator(&k, &s, shard, ShardIteratorType::TrimHorizon, None, None)
        .await
        .unwrap();
    let get = |it: String, limit: i32| {
        let k = k.clone();
        async move {
            match k.get_records().shard_iterator(it).limit(limit).send().await {
                Ok(_) => "ok".to_string(),
                Err(e) => e.into_service_error().code().unwrap_or("?").to_string(),
            }
        }
    };
    assert_eq!(get(it.clone(), 10_001).await, "InvalidArgumentException");
    assert_eq!(get(it.clone(), 0).await, "InvalidArgumentException");
    let mut garbled = it.clone();
    garbled.replace_range(20..21, if &it[20..21] == "0" { "1" } else { "0" });
    assert_eq!(get(garbled, 5).await, "InvalidArgumentException");
    assert_eq!(
        get("not-an-iterator".into(), 5).await,
        "InvalidArgumentException"
    );
    assert_eq!(get(it.clone(), 5).await, "ok");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(it, 5).await, "ExpiredIteratorException");
    assert!(s.stats().errors >= 5);
}

#[tokio::test]
async fn standin_caps_a_response_at_10_mib() {
    let s = start(StreamSpec::new("s6", 1, 25, 1024 * 1024));
    let k = s.kinesis_client();
    let it = iterator(
        &k,
        &s,
        &s.shard_ids()[0],
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await
    .unwrap();
    let out = k.get_records().shard_iterator(it).send().await.unwrap();
    // Each record is 1 MiB of data plus its partition key: 9 fit in 10 MiB, a 10th does not.
    assert_eq!(out.records().len(), 9);
    assert_eq!(out.millis_behind_latest(), Some(16));
}

/// One HTTP/1.1 request on a fresh connection: (status, content type, body).
async fn raw_post(s: &Standin, target: &str, ct: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let addr = s.endpoint().trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: {target}\r\nContent-Type: {ct}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(body).await.unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).await.unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, ctype, all[split + 4..].to_vec())
}

fn cbor(v: ciborium::Value) -> Vec<u8> {
    let mut w = Vec::new();
    ciborium::into_writer(&v, &mut w).unwrap();
    w
}

fn text(s: &str) -> ciborium::Value {
    ciborium::Value::Text(s.into())
}

fn field<'a>(m: &'a [(ciborium::Value, ciborium::Value)], k: &str) -> Option<&'a ciborium::Value> {
    m.iter()
        .find(|(key, _)| key.as_text() == Some(k))
        .map(|(_, v)| v)
}

const CBOR: &str = "application/x-amz-cbor-1.1";

#[tokio::test]
async fn standin_cbor_answers_have_the_field_names_and_types_kinesis_sends() {
    use ciborium::Value;
    let s = start(StreamSpec::new("s7", 1, 50, 33).resharded());
    let shard = &s.shard_ids()[0];
    // The request as the Java SDK v2 writes it: AT_TIMESTAMP as tag 1 over epoch milliseconds.
    let req = Value::Map(vec![
        (text("StreamName"), text("s7")),
        (text("ShardId"), text(shard)),
        (text("ShardIteratorType"), text("AT_TIMESTAMP")),
        (
            text("Timestamp"),
            Value::Tag(1, Box::new(Value::Integer(s.arrival_ms(0, 45).into()))),
        ),
    ]);
    let (status, ct, body) =
        raw_post(&s, "Kinesis_20131202.GetShardIterator", CBOR, &cbor(req)).await;
    assert_eq!((status, ct.as_str()), (200, CBOR));
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    let it = field(v.as_map().unwrap(), "ShardIterator")
        .unwrap()
        .as_text()
        .unwrap()
        .to_string();

    let req = Value::Map(vec![
        (text("ShardIterator"), text(&it)),
        (text("Limit"), Value::Integer(3.into())),
    ]);
    let (status, _, body) = raw_post(&s, "Kinesis_20131202.GetRecords", CBOR, &cbor(req)).await;
    assert_eq!(status, 200);
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    let m = v.as_map().unwrap();
    let records = field(m, "Records").unwrap().as_array().unwrap();
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        let r = r.as_map().unwrap();
        let pos = 45 + i;
        assert_eq!(
            field(r, "SequenceNumber"),
            Some(&text(&s.sequence_number(0, pos)))
        );
        assert_eq!(
            field(r, "ApproximateArrivalTimestamp"),
            Some(&Value::Tag(
                1,
                Box::new(Value::Integer(s.arrival_ms(0, pos).into()))
            )),
            "tag 1 over integer epoch milliseconds, which the Java SDK v2 reads"
        );
        assert_eq!(
            field(r, "Data"),
            Some(&Value::Bytes(record_data(0, pos, 33)))
        );
        assert_eq!(field(r, "PartitionKey"), Some(&text(&partition_key(pos))));
    }
    assert_eq!(
        field(m, "MillisBehindLatest"),
        Some(&Value::Integer(2.into()))
    );
    let next = field(m, "NextShardIterator")
        .unwrap()
        .as_text()
        .unwrap()
        .to_string();
    assert!(field(m, "ChildShards").is_none());

    // The rest of the parent: shard end, in CBOR.
    let req = Value::Map(vec![(text("ShardIterator"), text(&next))]);
    let (_, _, body) = raw_post(&s, "Kinesis_20131202.GetRecords", CBOR, &cbor(req)).await;
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    let m = v.as_map().unwrap();
    assert_eq!(field(m, "Records").unwrap().as_array().unwrap().len(), 2);
    assert!(field(m, "NextShardIterator").is_none());
    let children = field(m, "ChildShards").unwrap().as_array().unwrap();
    assert_eq!(children.len(), 2);
    let c = children[0].as_map().unwrap();
    assert_eq!(field(c, "ShardId"), Some(&text(&s.shard_ids()[1])));
    assert_eq!(
        field(c, "ParentShards"),
        Some(&Value::Array(vec![text(shard)]))
    );
    let range = field(c, "HashKeyRange").unwrap().as_map().unwrap();
    assert_eq!(field(range, "StartingHashKey"), Some(&text("0")));

    // Errors in CBOR too: `__type` and `message`, status 400.
    let req = Value::Map(vec![(text("ShardIterator"), text("AAAAAAAAAAGnonsense"))]);
    let (status, ct, body) = raw_post(&s, "Kinesis_20131202.GetRecords", CBOR, &cbor(req)).await;
    assert_eq!((status, ct.as_str()), (400, CBOR));
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    let m = v.as_map().unwrap();
    assert_eq!(field(m, "__type"), Some(&text("InvalidArgumentException")));
    assert!(field(m, "message").unwrap().is_text());
    let (status, _, body) = raw_post(&s, "Kinesis_20131202.ListStreams", CBOR, &[]).await;
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        field(v.as_map().unwrap(), "__type"),
        Some(&text("UnknownOperationException"))
    );

    // ListShards in CBOR: the same shape as JSON.
    let req = Value::Map(vec![(text("StreamName"), text("s7"))]);
    let (_, _, body) = raw_post(&s, "Kinesis_20131202.ListShards", CBOR, &cbor(req)).await;
    let v: Value = ciborium::from_reader(&body[..]).unwrap();
    let shards = field(v.as_map().unwrap(), "Shards")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(shards.len(), 3);
    let range = field(shards[0].as_map().unwrap(), "SequenceNumberRange").unwrap();
    assert!(field(range.as_map().unwrap(), "EndingSequenceNumber").is_some());
}

#[tokio::test]
async fn standin_json_answers_are_what_the_sdk_parses_byte_for_byte() {
    let s = start(StreamSpec::new("s8", 1, 3, 4));
    let it = {
        let k = s.kinesis_client();
        iterator(
            &k,
            &s,
            &s.shard_ids()[0],
            ShardIteratorType::TrimHorizon,
            None,
            None,
        )
        .await
        .unwrap()
    };
    let body = format!("{{\"ShardIterator\":\"{it}\",\"Limit\":2}}");
    let (status, ct, body) = raw_post(
        &s,
        "Kinesis_20131202.GetRecords",
        "application/x-amz-json-1.1",
        body.as_bytes(),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/x-amz-json-1.1"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let r = &v["Records"][1];
    assert_eq!(r["SequenceNumber"], s.sequence_number(0, 1));
    assert_eq!(
        r["Data"], "AQAAAA==",
        "base64 of the record's 4 bytes 1, 0, 0, 0"
    );
    let t = r["ApproximateArrivalTimestamp"].as_f64().unwrap();
    assert_eq!((t * 1000.0).round() as i64, s.arrival_ms(0, 1));
    assert_eq!(v["MillisBehindLatest"], 1);
    assert!(v["NextShardIterator"].is_string());
}

/// The Java SDK v2 client as the Java KCL 3.x builds it (Netty, HTTP/2, CBOR) reads the
/// stand-in: `bench/java/StandinCheck.java`, compiled here against the Java KCL's jars
/// (testkit installs them).
#[test]
fn standin_java_sdk_v2_reads_the_answers() {
    let kcl = testkit::java_kcl::java_kcl().expect("the Java KCL jars (testkit)");
    let (javac, _) = testkit::java_app::javac(&kcl.java).expect("a JDK");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/java/StandinCheck.java");
    let classes = std::env::temp_dir().join(format!("standin-check-{}", std::process::id()));
    std::fs::create_dir_all(&classes).unwrap();
    let out = std::process::Command::new(javac)
        .arg("-cp")
        .arg(kcl.classpath())
        .arg("-d")
        .arg(&classes)
        .arg(source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = start(StreamSpec::new("java", 1, 2_000, 50).resharded());
    let mut cp = classes.clone().into_os_string();
    cp.push(":");
    cp.push(kcl.classpath());
    let out = std::process::Command::new(&kcl.java)
        .arg("-cp")
        .arg(cp)
        .arg("StandinCheck")
        .arg(s.endpoint())
        .arg("java")
        .arg(s.arrival_ms(0, 1_500).to_string())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&classes);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "StandinCheck failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let expect = |line: String| assert!(lines.contains(&line.as_str()), "no {line:?} in\n{text}");
    expect("summary open=2".into());
    expect(format!(
        "shard id={} parent=null end={}",
        s.shard_ids()[0],
        s.sequence_number(0, 1_999)
    ));
    expect(format!(
        "shard id={} parent={} end=null",
        s.shard_ids()[2],
        s.shard_ids()[0]
    ));
    for pos in 1_500..1_503 {
        expect(format!(
            "record seq={} at={} pk={} len=50 pos={pos}",
            s.sequence_number(0, pos),
            s.arrival_ms(0, pos),
            partition_key(pos)
        ));
    }
    expect("batch behind=497 next=true".into());
    expect("end rest=497 behind=0".into());
    expect(format!(
        "child id={} parents={}",
        s.shard_ids()[1],
        s.shard_ids()[0]
    ));
    expect(format!(
        "child id={} parents={}",
        s.shard_ids()[2],
        s.shard_ids()[0]
    ));
    expect("error class=InvalidArgumentException".into());
    let stats = s.stats();
    assert_eq!(
        stats.cbor_requests, stats.requests,
        "the Java SDK v2 speaks CBOR to Kinesis"
    );
    assert_eq!(
        stats.h2_connections, stats.connections,
        "the Java KCL's client speaks HTTP/2 (prior knowledge on plain HTTP)"
    );
    eprintln!(
        "Java SDK v2: {} requests, {} connection(s), {} over HTTP/2",
        stats.requests, stats.connections, stats.h2_connections
    );
}
