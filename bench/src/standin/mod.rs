//! A stand-in for Kinesis' read path (issue 31): an HTTP server on loopback that answers
//! `ListShards`, `DescribeStreamSummary`, `DescribeStream`, `GetShardIterator` and `GetRecords`
//! for one pre-loaded stream, as fast as the socket goes, so that a consumer's throughput on the
//! real path (HTTP, the SDK's decoding, the lease table) can be measured without an emulator
//! being the limit (section 6 shows kinesis-local is).
//!
//! * **Wire formats**: JSON 1.1 (`application/x-amz-json-1.1`, the AWS SDK for Rust, boto3) and
//!   CBOR (`application/x-amz-cbor-1.1`, what the Java SDK v2 uses for Kinesis by default);
//!   each answer comes in the format of its request. In CBOR, `Data` is a byte string and
//!   timestamps are tag 1 over **integer epoch milliseconds**, which is what the Java SDK v2
//!   reads (`AwsCborProtocolFactory` maps payload timestamps to `UNIX_TIMESTAMP_MILLIS` and
//!   `JsonUnmarshallingParser.instantValueFor` reads them with `getLongValue`, checked in its
//!   2.33.0 jars) and writes (`SdkCborGenerator`: tag 1, `toEpochMilli`). In JSON, `Data` is
//!   base64 and timestamps are epoch seconds.
//! * **HTTP**: HTTP/1.1 with keep-alive, and HTTP/2 with prior knowledge (h2c), chosen per
//!   connection by its first bytes.
//! * **Data**: [`StreamSpec`]: N shards of M records of S bytes each, 56-digit sequence numbers
//!   increasing within a shard, partition keys, arrival timestamps one millisecond apart ending
//!   now. Optionally shard 0 is closed and split into two children ([`StreamSpec::resharded`]):
//!   `ListShards` shows its ending sequence number and the children's parent, and the
//!   `GetRecords` call that reaches its end has no `NextShardIterator` and lists `ChildShards`.
//! * **Pre-built**: every record is encoded once per format (lazily, or up front with
//!   [`Standin::prebuild`]) into one buffer per shard; a `GetRecords` answer is a few small
//!   pieces around a slice of that buffer, written out without copying it.
//! * **Its own cost**: the server runs on one thread of its own; [`Standin::stats`] reads that
//!   thread's CPU clock, so a benchmark can report the stand-in's CPU per 1,000 records.
//!
//! What it is not: a Kinesis. No writes, no throttling (a shard here serves more than Kinesis'
//! 2 MB/s), no enhanced fan-out; any other operation gets `UnknownOperationException` and is
//! named on stderr once, so that we learn what a client calls.

mod server;
mod wire;

#[cfg(test)]
mod tests;

pub use server::{Standin, StandinStats};
pub use wire::Format;

use bytes::Bytes;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wire::{KError, Out, Req};

/// The account in ARNs and messages.
pub const ACCOUNT: &str = "000000000000";
/// The region in ARNs.
pub const REGION: &str = "us-east-1";
/// The most records one `GetRecords` call returns (and its default `Limit`), as Kinesis.
pub const MAX_LIMIT: usize = 10_000;
/// The most bytes (data and partition keys) one `GetRecords` call returns, as Kinesis: 10 MiB.
pub const MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
/// How long a shard iterator stays valid, as Kinesis: 5 minutes.
pub const DEFAULT_ITERATOR_TTL: Duration = Duration::from_secs(300);
/// `ListShards`' default and largest `MaxResults`.
const LIST_SHARDS_DEFAULT: usize = 1_000;
const LIST_SHARDS_MAX: usize = 10_000;

/// The stream a [`Standin`] serves.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// Open shards at creation (shard 0 of them closed and split when `resharded`).
    pub shards: usize,
    /// Records in each shard (children included).
    pub records_per_shard: usize,
    /// Bytes of each record's data.
    pub record_size: usize,
    /// Shard 0 is closed and split into two children (ids `shards` and `shards + 1`).
    pub resharded: bool,
    /// How long an iterator stays valid ([`DEFAULT_ITERATOR_TTL`]).
    pub iterator_ttl: Duration,
}

impl StreamSpec {
    /// `shards` open shards of `records_per_shard` records of `record_size` bytes.
    pub fn new(
        name: impl Into<String>,
        shards: usize,
        records_per_shard: usize,
        record_size: usize,
    ) -> StreamSpec {
        StreamSpec {
            name: name.into(),
            shards,
            records_per_shard,
            record_size,
            resharded: false,
            iterator_ttl: DEFAULT_ITERATOR_TTL,
        }
    }

    /// Shard 0 closed and split into two children, each with `records_per_shard` records.
    pub fn resharded(mut self) -> StreamSpec {
        self.resharded = true;
        self
    }
}

/// The data of record `pos` of shard number `shard`: its position (u64 LE) and shard number
/// (u32 LE) first, then a letter.
pub fn record_data(shard: usize, pos: usize, size: usize) -> Vec<u8> {
    let mut d = vec![b'a' + (pos % 26) as u8; size];
    let head: Vec<u8> = (pos as u64)
        .to_le_bytes()
        .into_iter()
        .chain((shard as u32).to_le_bytes())
        .collect();
    let n = head.len().min(size);
    d[..n].copy_from_slice(&head[..n]);
    d
}

fn partition_key(pos: usize) -> String {
    format!("pk-{}", pos % 1024)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One shard's records encoded once: fragment `i` is `buf[off[i]..off[i + 1]]` (in JSON each
/// ends with the comma that separates it from the next).
struct Fragments {
    buf: Bytes,
    off: Vec<usize>,
}

struct Shard {
    id: String,
    parent: Option<usize>,
    children: Vec<usize>,
    hash: (u128, u128),
    closed: bool,
    /// The ordinal (in the sequence number) of record 0: children continue after their parent.
    first_ordinal: u64,
    arrival_base_ms: i64,
    len: usize,
    /// Bytes (data + partition key) of the records before record `i`; `len + 1` entries.
    bytes_before: Vec<u64>,
    json: OnceLock<Fragments>,
    cbor: OnceLock<Fragments>,
}

/// A `GetRecords` answer before encoding: records `from..to` of `shard`, then either the next
/// position or, past the end of a closed shard, its children.
struct Read {
    shard: usize,
    from: usize,
    to: usize,
    next: Option<usize>,
    millis_behind: u64,
}

/// The stream's data and the answers computed from it (no I/O here).
pub(crate) struct Stream {
    spec: StreamSpec,
    arn: String,
    created_ms: i64,
    /// Digits 3..16 of every sequence number (the stream's creation second).
    stamp: u64,
    shards: Vec<Shard>,
    /// Key of the iterators' check value: an iterator cannot be forged or garbled unnoticed.
    key: u64,
}

fn fnv(key: u64, words: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ key;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Stream {
    fn new(spec: StreamSpec) -> Stream {
        let now = now_ms();
        let n = spec.shards.max(1);
        let len = spec.records_per_shard;
        let step = u128::MAX / n as u128;
        let mut shards: Vec<Shard> = (0..n)
            .map(|i| {
                let start = i as u128 * step;
                let end = if i + 1 == n {
                    u128::MAX
                } else {
                    (i as u128 + 1) * step - 1
                };
                Shard::new(i, None, (start, end), 0, now - len as i64, len, &spec)
            })
            .collect();
        if spec.resharded {
            let (s, e) = shards[0].hash;
            let mid = s + (e - s) / 2;
            shards[0].closed = true;
            shards[0].arrival_base_ms = now - 2 * len as i64;
            for (k, range) in [(s, mid), (mid + 1, e)].into_iter().enumerate() {
                let child = Shard::new(
                    n + k,
                    Some(0),
                    range,
                    len as u64,
                    now - len as i64,
                    len,
                    &spec,
                );
                shards.push(child);
                shards[0].children.push(n + k);
            }
        }
        let created_ms = now - 2 * len as i64 - 60_000;
        Stream {
            arn: format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{}", spec.name),
            spec,
            created_ms,
            stamp: (created_ms / 1000) as u64,
            shards,
            key: rand::random(),
        }
    }

    fn seq(&self, shard: usize, pos: usize) -> String {
        let s = &self.shards[shard];
        format!(
            "49{:014}{:020}{:020}",
            self.stamp,
            s.first_ordinal + pos as u64,
            shard
        )
    }

    /// The position of sequence number `seq` in `shard`, if it is one of that shard's.
    fn position_of(&self, shard: usize, seq: &str) -> Option<usize> {
        if seq.len() != 56 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let stamp: u64 = seq[2..16].parse().ok()?;
        let ordinal: u64 = seq[16..36].parse().ok()?;
        let index: usize = seq[36..].parse().ok()?;
        let s = &self.shards[shard];
        if &seq[..2] != "49" || stamp != self.stamp || index != shard {
            return None;
        }
        let pos = ordinal.checked_sub(s.first_ordinal)? as usize;
        (pos <= s.len).then_some(pos)
    }

    fn arrival_ms(&self, shard: usize, pos: usize) -> i64 {
        self.shards[shard].arrival_base_ms + pos as i64
    }

    fn fragments(&self, shard: usize, format: Format) -> &Fragments {
        let s = &self.shards[shard];
        let cell = match format {
            Format::Json => &s.json,
            Format::Cbor => &s.cbor,
        };
        cell.get_or_init(|| {
            let mut buf = Vec::new();
            let mut off = Vec::with_capacity(s.len + 1);
            for pos in 0..s.len {
                off.push(buf.len());
                let record = Out::Map(vec![
                    ("SequenceNumber", Out::Str(self.seq(shard, pos))),
                    (
                        "ApproximateArrivalTimestamp",
                        Out::TimeMs(self.arrival_ms(shard, pos)),
                    ),
                    (
                        "Data",
                        Out::Blob(record_data(shard, pos, self.spec.record_size)),
                    ),
                    ("PartitionKey", Out::Str(partition_key(pos))),
                ]);
                record.encode(format, &mut buf);
                if format == Format::Json {
                    buf.push(b',');
                }
            }
            off.push(buf.len());
            Fragments {
                buf: Bytes::from(buf),
                off,
            }
        })
    }

    fn shard_index(&self, id: &str) -> Option<usize> {
        self.shards.iter().position(|s| s.id == id)
    }

    fn check_stream(&self, req: &Req) -> Result<(), KError> {
        let ok = match (req.str("StreamName"), req.str("StreamARN")) {
            (Some(n), _) => n == self.spec.name,
            (None, Some(a)) => a == self.arn,
            (None, None) => {
                return Err(KError::invalid(
                    "Either StreamName or StreamARN should be provided.",
                ))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(KError::not_found(format!(
                "Stream {} under account {ACCOUNT} not found.",
                req.str("StreamName").or(req.str("StreamARN")).unwrap_or("")
            )))
        }
    }

    fn shard_not_found(&self, id: &str) -> KError {
        KError::not_found(format!(
            "Shard {id} in stream {} under account {ACCOUNT} does not exist",
            self.spec.name
        ))
    }

    fn iterator(&self, shard: usize, pos: usize) -> String {
        let issued = now_ms() as u64;
        let mac = fnv(self.key, &[shard as u64, pos as u64, issued]);
        format!("AAAAAAAAAAG{shard:08x}{pos:016x}{issued:016x}{mac:016x}")
    }

    fn parse_iterator(&self, it: &str) -> Result<(usize, usize), KError> {
        let invalid = || KError::invalid(format!("Invalid ShardIterator: {it}"));
        let hex = it.strip_prefix("AAAAAAAAAAG").ok_or_else(invalid)?;
        if hex.len() != 56 || !hex.is_ascii() {
            return Err(invalid());
        }
        let field = |r: std::ops::Range<usize>| u64::from_str_radix(&hex[r], 16);
        let (Ok(shard), Ok(pos), Ok(issued), Ok(mac)) =
            (field(0..8), field(8..24), field(24..40), field(40..56))
        else {
            return Err(invalid());
        };
        if mac != fnv(self.key, &[shard, pos, issued]) {
            return Err(invalid());
        }
        let (shard, pos) = (shard as usize, pos as usize);
        if shard >= self.shards.len() || pos > self.shards[shard].len {
            return Err(invalid());
        }
        let now = now_ms() as u64;
        let ttl = self.spec.iterator_ttl.as_millis() as u64;
        if now.saturating_sub(issued) > ttl {
            return Err(KError::new(
                "ExpiredIteratorException",
                format!(
                    "Iterator expired. The iterator was created at time {issued} while right now \
                     it is {now} which is further in the future than the tolerated delay of \
                     {ttl} milliseconds."
                ),
            ));
        }
        Ok((shard, pos))
    }

    fn shard_out(&self, i: usize) -> Out {
        let s = &self.shards[i];
        let mut m = vec![("ShardId", Out::Str(s.id.clone()))];
        if let Some(p) = s.parent {
            m.push(("ParentShardId", Out::Str(self.shards[p].id.clone())));
        }
        m.push(("HashKeyRange", hash_range(s.hash)));
        let mut range = vec![("StartingSequenceNumber", Out::Str(self.seq(i, 0)))];
        if s.closed {
            range.push((
                "EndingSequenceNumber",
                Out::Str(self.seq(i, s.len.saturating_sub(1))),
            ));
        }
        m.push(("SequenceNumberRange", Out::Map(range)));
        Out::Map(m)
    }

    fn open_shards(&self) -> usize {
        self.shards.iter().filter(|s| !s.closed).count()
    }

    fn list_shards(&self, req: &Req) -> Result<Out, KError> {
        let max = match req.int("MaxResults") {
            None => LIST_SHARDS_DEFAULT,
            Some(m) if (1..=LIST_SHARDS_MAX as i64).contains(&m) => m as usize,
            Some(m) => {
                return Err(KError::invalid(format!(
                    "MaxResults {m} is not between 1 and {LIST_SHARDS_MAX}"
                )))
            }
        };
        let start = match req.str("NextToken") {
            Some(token) => {
                if req.str("StreamName").is_some() || req.str("StreamARN").is_some() {
                    return Err(KError::invalid(
                        "NextToken and StreamName cannot be provided together.",
                    ));
                }
                let rest = token
                    .strip_prefix(&format!("{}|", self.spec.name))
                    .and_then(|r| r.parse::<usize>().ok())
                    .filter(|&i| i <= self.shards.len());
                rest.ok_or_else(|| KError::invalid(format!("Invalid NextToken: {token}")))?
            }
            None => {
                self.check_stream(req)?;
                self.first_after(req)
            }
        };
        let end = (start + max).min(self.shards.len());
        let mut out = vec![(
            "Shards",
            Out::Arr((start..end).map(|i| self.shard_out(i)).collect()),
        )];
        if end < self.shards.len() {
            out.push(("NextToken", Out::Str(format!("{}|{end}", self.spec.name))));
        }
        Ok(Out::Map(out))
    }

    /// The index of the first shard after the request's `ExclusiveStartShardId` (0 without one).
    fn first_after(&self, req: &Req) -> usize {
        match req.str("ExclusiveStartShardId") {
            Some(id) => self
                .shards
                .iter()
                .position(|s| s.id.as_str() > id)
                .unwrap_or(self.shards.len()),
            None => 0,
        }
    }

    fn describe_stream_summary(&self, req: &Req) -> Result<Out, KError> {
        self.check_stream(req)?;
        Ok(Out::Map(vec![(
            "StreamDescriptionSummary",
            Out::Map(self.description_fields(vec![
                ("OpenShardCount", Out::Int(self.open_shards() as i64)),
                ("ConsumerCount", Out::Int(0)),
            ])),
        )]))
    }

    fn description_fields(&self, extra: Vec<(&'static str, Out)>) -> Vec<(&'static str, Out)> {
        let mut m = vec![
            ("StreamName", Out::Str(self.spec.name.clone())),
            ("StreamARN", Out::Str(self.arn.clone())),
            ("StreamStatus", Out::Str("ACTIVE".into())),
            (
                "StreamModeDetails",
                Out::Map(vec![("StreamMode", Out::Str("PROVISIONED".into()))]),
            ),
            ("RetentionPeriodHours", Out::Int(24)),
            ("StreamCreationTimestamp", Out::TimeMs(self.created_ms)),
            (
                "EnhancedMonitoring",
                Out::Arr(vec![Out::Map(vec![(
                    "ShardLevelMetrics",
                    Out::Arr(vec![]),
                )])]),
            ),
            ("EncryptionType", Out::Str("NONE".into())),
        ];
        m.extend(extra);
        m
    }

    fn describe_stream(&self, req: &Req) -> Result<Out, KError> {
        self.check_stream(req)?;
        let limit = req.int("Limit").unwrap_or(100).clamp(1, 10_000) as usize;
        let start = self.first_after(req);
        let end = (start + limit).min(self.shards.len());
        Ok(Out::Map(vec![(
            "StreamDescription",
            Out::Map(self.description_fields(vec![
                (
                    "Shards",
                    Out::Arr((start..end).map(|i| self.shard_out(i)).collect()),
                ),
                ("HasMoreShards", Out::Bool(end < self.shards.len())),
            ])),
        )]))
    }

    fn get_shard_iterator(&self, req: &Req) -> Result<Out, KError> {
        self.check_stream(req)?;
        let id = req
            .str("ShardId")
            .ok_or_else(|| KError::invalid("ShardId is required"))?;
        let shard = self
            .shard_index(id)
            .ok_or_else(|| self.shard_not_found(id))?;
        let len = self.shards[shard].len;
        let kind = req.str("ShardIteratorType").unwrap_or("");
        let sequence = || {
            let seq = req.str("StartingSequenceNumber").ok_or_else(|| {
                KError::invalid(format!(
                    "StartingSequenceNumber is required for ShardIteratorType {kind}"
                ))
            })?;
            self.position_of(shard, seq).ok_or_else(|| {
                KError::invalid(format!(
                    "StartingSequenceNumber {seq} used in GetShardIterator on shard {id} in \
                     stream {} under account {ACCOUNT} is invalid.",
                    self.spec.name
                ))
            })
        };
        let pos = match kind {
            "TRIM_HORIZON" => 0,
            "LATEST" => len,
            "AT_SEQUENCE_NUMBER" => sequence()?,
            "AFTER_SEQUENCE_NUMBER" => (sequence()? + 1).min(len),
            "AT_TIMESTAMP" => {
                let t = req.time_ms("Timestamp").ok_or_else(|| {
                    KError::invalid("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
                })?;
                let first = self.arrival_ms(shard, 0);
                (t - first).clamp(0, len as i64) as usize
            }
            other => {
                return Err(KError::invalid(format!(
                    "Invalid ShardIteratorType: {other:?}"
                )))
            }
        };
        Ok(Out::Map(vec![(
            "ShardIterator",
            Out::Str(self.iterator(shard, pos)),
        )]))
    }

    fn read(&self, req: &Req) -> Result<Read, KError> {
        let it = req
            .str("ShardIterator")
            .ok_or_else(|| KError::invalid("ShardIterator is required"))?;
        let limit = match req.int("Limit") {
            None => MAX_LIMIT,
            Some(l) if (1..=MAX_LIMIT as i64).contains(&l) => l as usize,
            Some(l) => {
                return Err(KError::invalid(format!(
                    "1 validation error detected: Value '{l}' at 'limit' failed to satisfy \
                     constraint: Member must have value between 1 and {MAX_LIMIT}"
                )))
            }
        };
        let (shard, from) = self.parse_iterator(it)?;
        let s = &self.shards[shard];
        let mut to = (from + limit).min(s.len);
        // Kinesis' 10 MiB per call: the last record whose end fits.
        let cap = s.bytes_before[from] + MAX_RESPONSE_BYTES;
        if s.bytes_before[to] > cap {
            to = s.bytes_before[from..=to].partition_point(|&b| b <= cap) + from - 1;
            to = to.max(from + 1);
        }
        let next = if s.closed && to == s.len {
            None
        } else {
            Some(to)
        };
        Ok(Read {
            shard,
            from,
            to,
            next,
            millis_behind: (s.len - to) as u64,
        })
    }

    fn child_shards(&self, shard: usize) -> Out {
        Out::Arr(
            self.shards[shard]
                .children
                .iter()
                .map(|&c| {
                    Out::Map(vec![
                        ("ShardId", Out::Str(self.shards[c].id.clone())),
                        (
                            "ParentShards",
                            Out::Arr(vec![Out::Str(self.shards[shard].id.clone())]),
                        ),
                        ("HashKeyRange", hash_range(self.shards[c].hash)),
                    ])
                })
                .collect(),
        )
    }

    /// The `GetRecords` answer as pieces to write one after another: the records are one
    /// slice of the shard's pre-encoded buffer.
    fn get_records(&self, req: &Req, format: Format) -> Result<(Vec<Bytes>, usize), KError> {
        let r = self.read(req)?;
        let frags = self.fragments(r.shard, format);
        let (a, b) = (frags.off[r.from], frags.off[r.to]);
        let n = r.to - r.from;
        let mut head = Vec::with_capacity(32);
        let mut tail = Vec::with_capacity(160);
        let records: Bytes;
        match format {
            Format::Json => {
                head.extend_from_slice(b"{\"Records\":[");
                // Without the last fragment's comma.
                records = frags.buf.slice(a..b.saturating_sub(1).max(a));
                tail.extend_from_slice(b"]");
            }
            Format::Cbor => {
                wire::cbor_head(5, 3, &mut head);
                Out::Str("Records".into()).encode(format, &mut head);
                wire::cbor_head(4, n as u64, &mut head);
                records = frags.buf.slice(a..b);
            }
        }
        let mut fields = vec![("MillisBehindLatest", Out::Int(r.millis_behind as i64))];
        match r.next {
            Some(pos) => fields.push(("NextShardIterator", Out::Str(self.iterator(r.shard, pos)))),
            None => fields.push(("ChildShards", self.child_shards(r.shard))),
        }
        match format {
            Format::Json => {
                for (k, v) in fields {
                    tail.push(b',');
                    Out::Str(k.into()).encode(format, &mut tail);
                    tail.push(b':');
                    v.encode(format, &mut tail);
                }
                tail.push(b'}');
            }
            Format::Cbor => {
                for (k, v) in fields {
                    Out::Str(k.into()).encode(format, &mut tail);
                    v.encode(format, &mut tail);
                }
            }
        }
        let pieces = [Bytes::from(head), records, Bytes::from(tail)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        Ok((pieces, n))
    }
}

fn sdk_http_client() -> aws_sdk_kinesis::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https()
}

/// An AWS SDK for Rust Kinesis client for `endpoint` (us-east-1, `test`/`test`, the HTTP
/// client testkit builds: hyper 1 + rustls). Make one per tokio runtime.
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "standin"))
        .http_client(sdk_http_client())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// A DynamoDB client for `endpoint` (e.g. DynamoDB Local), set up as [`kinesis_client`].
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "standin"))
        .http_client(sdk_http_client())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

fn hash_range((s, e): (u128, u128)) -> Out {
    Out::Map(vec![
        ("StartingHashKey", Out::Str(s.to_string())),
        ("EndingHashKey", Out::Str(e.to_string())),
    ])
}

impl Shard {
    fn new(
        index: usize,
        parent: Option<usize>,
        hash: (u128, u128),
        first_ordinal: u64,
        arrival_base_ms: i64,
        len: usize,
        spec: &StreamSpec,
    ) -> Shard {
        let mut bytes_before = Vec::with_capacity(len + 1);
        let mut total = 0u64;
        for pos in 0..len {
            bytes_before.push(total);
            total += (spec.record_size + partition_key(pos).len()) as u64;
        }
        bytes_before.push(total);
        Shard {
            id: format!("shardId-{index:012}"),
            parent,
            children: Vec::new(),
            hash,
            closed: false,
            first_ordinal,
            arrival_base_ms,
            len,
            bytes_before,
            json: OnceLock::new(),
            cbor: OnceLock::new(),
        }
    }
}
