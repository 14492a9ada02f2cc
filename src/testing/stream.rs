//! An in-memory Kinesis stream implementing [`StreamClient`], for deterministic tests and
//! simulation on paused tokio time.
//!
//! It behaves like Kinesis where the library can tell: MD5 hash-key routing, one global
//! strictly increasing sequence counter (decimal strings), splits and merges that close the
//! parent(s) and report [`ChildShard`]s in the last GetRecords response of a drained closed
//! shard (with a `None` next iterator), iterators that expire 5 minutes after issue, a
//! per-shard read limit (5 GetRecords per rolling second), retention trimming, and fault
//! injection ([`StreamFaultInjector`]).
//!
//! Enhanced fan-out (the `subscriptions` submodule): stream consumers that become `ACTIVE`
//! a while after registration, and SubscribeToShard subscriptions that push records as they
//! arrive, end after 5 minutes, refuse a second subscription of the same consumer to the same
//! shard within 5 seconds (a later one takes over), allow one call per second per consumer
//! and shard, and end a closed shard with its child shards; fault injection covers the calls
//! and each event ([`StreamOp::SubscribeToShardEvent`]).
//!
//! Time is tokio time only (never the wall clock): a record's arrival timestamp is
//! `UNIX_EPOCH + BASE_EPOCH + (tokio::time::Instant::now() − the instant the stream was
//! created)`, so runs on paused time are reproducible. [`InMemoryStream::now`] gives the
//! current timestamp on that clock (for `AT_TIMESTAMP` and [`InMemoryStream::trim`]).
//!
//! Iterators are opaque strings encoding the shard, the next sequence number to return, the
//! issue time and a nonce. A malformed iterator (or one naming another shard than `shard_id`)
//! fails with [`RetrievalFailure::ExpiredIterator`], as the AWS client maps Kinesis'
//! `InvalidArgumentException` on GetRecords; a non-decimal sequence number given to
//! GetShardIterator fails with [`RetrievalFailure::Fatal`]. Sequence numbers are not checked
//! to belong to the shard: one before the trim horizon starts at the first retained record.

use crate::checkpoint::{InvalidSequenceNumber, SequenceNumber};
use crate::error::Cause;
use crate::lease::HashKeyRange;
use crate::record::{Bytes, Record};
pub use crate::retrieval::StreamOp;
use crate::retrieval::{
    ChildShard, ConsumerRef, IteratorPosition, RecordBatch, RetrievalError, RetrievalFailure,
    Shard, StreamClient, StreamConsumer, SubscribeToShardEvents,
};
use crate::sync::Mutex;
use crate::testing::kpl::{aggregate, UserRecordSpec};
use async_trait::async_trait;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use RetrievalFailure as K;

mod subscriptions;
pub use subscriptions::{
    DEFAULT_CONSUMER_ACTIVATION_DELAY, MAX_EVENT_BYTES, MIN_TIME_BETWEEN_SUBSCRIBES,
    SUBSCRIPTION_HEARTBEAT, SUBSCRIPTION_LIFETIME, SUBSCRIPTION_TAKEOVER_AFTER,
};

/// Seconds after the Unix epoch of the stream clock's zero (the stream's creation):
/// 2023-11-14T22:13:20Z.
pub const BASE_EPOCH: Duration = Duration::from_secs(1_700_000_000);
/// The first sequence number the global counter hands out.
pub const FIRST_SEQUENCE_NUMBER: u128 = 49_000_000_000_000_000_000;
/// How long an iterator stays valid (tokio time).
pub const ITERATOR_TTL: Duration = Duration::from_secs(300);
/// The most records one GetRecords returns.
pub const MAX_GET_RECORDS_LIMIT: u32 = 10_000;
/// The default per-shard read limit: GetRecords calls per rolling second.
pub const DEFAULT_READ_LIMIT: u32 = 5;

/// Why a split or merge of an [`InMemoryStream`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReshardError {
    /// No shard has this id.
    #[error("shard {0} does not exist")]
    NoSuchShard(String),
    /// The shard is closed already.
    #[error("shard {0} is closed")]
    ShardClosed(String),
    /// A split's new starting hash key is not inside the shard's range (or at its start).
    #[error("new starting hash key {new_starting_hash_key} is not inside shard {shard_id}'s range ({}, {}]", .range.start, .range.end)]
    SplitOutsideRange {
        /// The shard.
        shard_id: String,
        /// The requested key.
        new_starting_hash_key: u128,
        /// The shard's range.
        range: HashKeyRange,
    },
    /// The two shards of a merge do not have adjacent hash key ranges.
    #[error("shards {0} and {1} do not have adjacent hash key ranges")]
    NotAdjacent(String, String),
}

/// A fault to inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// Fail with ProvisionedThroughputExceeded ([`RetrievalFailure::Throttled`]).
    Throttle,
    /// Fail with a timeout ([`RetrievalFailure::Retryable`]).
    Timeout,
    /// Treat the given iterator as expired ([`RetrievalFailure::ExpiredIterator`]);
    /// only meaningful for [`StreamOp::GetRecords`], ignored for the other calls.
    ExpireIterator,
    /// Wait this long (tokio time), then proceed normally.
    Delay(Duration),
    /// Fail with ResourceInUseException ([`RetrievalFailure::ResourceInUse`]): for
    /// SubscribeToShard a previous subscription still open; for an event, the subscription
    /// taken over by another.
    ResourceInUse,
    /// Fail with LimitExceededException ([`RetrievalFailure::Throttled`]).
    LimitExceeded,
    /// The connection is reset ([`RetrievalFailure::Retryable`]); on an event, the
    /// subscription fails and ends.
    Reset,
    /// Nothing more arrives: a call never answers, a subscription sends no more events (it
    /// stays open until the client drops it).
    Silence,
    /// The subscription completes now, as when its 5 minutes are up (events only).
    EndSubscription,
    /// Fail with AccessDeniedException ([`RetrievalFailure::Fatal`]: retrying does not help),
    /// as when a permission is missing.
    AccessDenied,
}

/// Decides which calls fail. Called once per call, before anything else happens.
pub trait StreamFaultInjector: Send + Sync {
    /// The fault for this call (`shard_id` is `None` for ListShards), if any.
    fn fault(&self, op: StreamOp, shard_id: Option<&str>) -> Option<StreamFault>;
}

impl<F> StreamFaultInjector for F
where
    F: Fn(StreamOp, Option<&str>) -> Option<StreamFault> + Send + Sync,
{
    fn fault(&self, op: StreamOp, shard_id: Option<&str>) -> Option<StreamFault> {
        self(op, shard_id)
    }
}

/// A Kinesis stream in memory. Cheap to clone: clones share the stream.
#[derive(Clone)]
pub struct InMemoryStream {
    name: Arc<str>,
    state: Arc<Mutex<State>>,
}

struct State {
    base: Instant,
    next_seq: u128,
    next_shard_index: usize,
    nonce: u64,
    shards: BTreeMap<String, ShardState>,
    faults: Option<Arc<dyn StreamFaultInjector>>,
    /// The stream was deleted: every call fails with ResourceNotFoundException.
    deleted: bool,
    read_limit: Option<u32>,
    get_records_calls: u64,
    /// Stream consumers and subscriptions (enhanced fan-out).
    fan_out: subscriptions::FanOutState,
    /// Notified on every change subscriptions may be waiting for (records, reshards, trims).
    /// (`Notify` wakes its waiters in a fixed order; `watch` would not, and the simulation
    /// must replay exactly.)
    changes: Arc<tokio::sync::Notify>,
}

struct ShardState {
    shard: Shard,
    /// Retained records with their parsed sequence numbers, oldest first.
    records: VecDeque<(u128, Record)>,
    children: Vec<ChildShard>,
    closed_at: Option<SystemTime>,
    /// Times of recent GetRecords calls (read limit).
    reads: VecDeque<Instant>,
}

impl fmt::Debug for InMemoryStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        let records: usize = s.shards.values().map(|sh| sh.records.len()).sum();
        f.debug_struct("InMemoryStream")
            .field("name", &self.name)
            .field("shards", &s.shards.len())
            .field("records", &records)
            .finish()
    }
}

fn format_shard_id(index: usize) -> String {
    format!("shardId-{index:012}")
}

/// `data` in a buffer that is already in its shared form, so that handing it out (a clone)
/// only counts a reference (a `Bytes` made from a `Vec` allocates its shared state on its
/// first clone).
fn shared_copy(data: &[u8]) -> Bytes {
    let bytes = Bytes::copy_from_slice(data);
    drop(bytes.clone());
    bytes
}

/// The Kinesis hash key of a partition key: MD5 of its UTF-8 bytes as a big-endian u128.
pub use crate::retrieval::deaggregation::partition_key_hash as hash_key;

impl State {
    /// Wake the subscriptions waiting for records or shard changes.
    fn changed(&mut self) {
        self.changes.notify_waiters();
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + BASE_EPOCH + (Instant::now() - self.base)
    }

    fn add_shard(&mut self, range: HashKeyRange, parents: &[&str]) -> String {
        let id = format_shard_id(self.next_shard_index);
        self.next_shard_index += 1;
        let start = self.next_seq;
        self.next_seq += 1;
        let shard = Shard {
            shard_id: id.clone(),
            parent_shard_id: parents.first().map(|p| p.to_string()),
            adjacent_parent_shard_id: parents.get(1).map(|p| p.to_string()),
            hash_key_range: range,
            starting_sequence_number: start.to_string(),
            ending_sequence_number: None,
        };
        let st = ShardState {
            shard,
            records: VecDeque::new(),
            children: Vec::new(),
            closed_at: None,
            reads: VecDeque::new(),
        };
        self.shards.insert(id.clone(), st);
        id
    }

    fn open_shard(&mut self, id: &str) -> Result<&mut ShardState, ReshardError> {
        match self.shards.get_mut(id) {
            None => Err(ReshardError::NoSuchShard(id.to_string())),
            Some(s) if s.shard.is_closed() => Err(ReshardError::ShardClosed(id.to_string())),
            Some(s) => Ok(s),
        }
    }

    fn close(&mut self, id: &str, children: &[String]) {
        let now = self.now();
        let children: Vec<ChildShard> = children
            .iter()
            .map(|c| {
                let s = &self.shards[c].shard;
                ChildShard {
                    shard_id: c.clone(),
                    parent_shards: s.parents(),
                    hash_key_range: s.hash_key_range,
                }
            })
            .collect();
        let st = self.shards.get_mut(id).expect("closing a known shard");
        let end = st.records.back().map(|(seq, _)| seq.to_string());
        st.shard.ending_sequence_number =
            Some(end.unwrap_or_else(|| st.shard.starting_sequence_number.clone()));
        st.children = children;
        st.closed_at = Some(now);
    }

    fn iterator(&mut self, shard: &str, from_seq: u128) -> String {
        self.nonce += 1;
        let issued = (Instant::now() - self.base).as_nanos();
        format!("mem:{shard}:{from_seq}:{issued}:{}", self.nonce)
    }
}

/// The first sequence number a read from `position` of `sh` may return (`next_seq`: the
/// stream's next sequence number); an error for a non-decimal sequence number.
fn first_sequence(
    sh: &ShardState,
    next_seq: u128,
    position: &IteratorPosition,
) -> Result<u128, InvalidSequenceNumber> {
    let parse = |seq: &str| {
        seq.parse::<u128>()
            .map_err(|_| InvalidSequenceNumber(seq.to_string()))
    };
    Ok(match position {
        IteratorPosition::TrimHorizon => 0,
        IteratorPosition::Latest => next_seq,
        IteratorPosition::AtTimestamp(t) => sh
            .records
            .iter()
            .find(|(_, r)| r.approximate_arrival_timestamp.is_some_and(|a| a >= *t))
            .map_or(next_seq, |(seq, _)| *seq),
        IteratorPosition::AtSequenceNumber(seq) => parse(seq)?,
        IteratorPosition::AfterSequenceNumber(seq) => parse(seq)?.saturating_add(1),
    })
}

/// How far behind the newest record of `sh` a read whose last record is `last` is.
fn millis_behind(sh: &ShardState, last: Option<&Record>) -> i64 {
    let arrival = |r: &Record| {
        r.approximate_arrival_timestamp
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    match (last, sh.records.back()) {
        (Some(last), Some((_, newest))) => arrival(newest)
            .duration_since(arrival(last))
            .map_or(0, |d| d.as_millis() as i64),
        _ => 0,
    }
}

/// The parts of an iterator: shard, next sequence number to return, issue time (ns since base).
fn parse_iterator(it: &str) -> Option<(&str, u128, u128)> {
    let rest = it.strip_prefix("mem:")?;
    let mut parts = rest.rsplitn(4, ':');
    let _nonce: u64 = parts.next()?.parse().ok()?;
    let issued = parts.next()?.parse().ok()?;
    let from_seq = parts.next()?.parse().ok()?;
    Some((parts.next()?, from_seq, issued))
}

impl InMemoryStream {
    /// A stream of `shard_count` open shards (`shardId-000000000000`, ...) splitting the hash
    /// key space evenly (the last one ends at `u128::MAX`).
    ///
    /// # Panics
    /// If `shard_count` is 0.
    pub fn new(name: &str, shard_count: usize) -> Self {
        assert!(shard_count > 0, "a stream needs at least one shard");
        let mut state = State {
            base: Instant::now(),
            next_seq: FIRST_SEQUENCE_NUMBER,
            next_shard_index: 0,
            nonce: 0,
            shards: BTreeMap::new(),
            faults: None,
            deleted: false,
            read_limit: Some(DEFAULT_READ_LIMIT),
            get_records_calls: 0,
            fan_out: subscriptions::FanOutState::default(),
            changes: Arc::new(tokio::sync::Notify::new()),
        };
        let width = u128::MAX / shard_count as u128;
        for i in 0..shard_count {
            let start = width * i as u128;
            let end = if i + 1 == shard_count {
                u128::MAX
            } else {
                start + width - 1
            };
            state.add_shard(HashKeyRange { start, end }, &[]);
        }
        InMemoryStream {
            name: name.into(),
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The stream's ARN: `arn:aws:kinesis:us-east-1:000000000000:stream/<name>` (its
    /// consumers' ARNs start with it).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:kinesis:us-east-1:000000000000:stream/{}",
            self.name
        )
    }

    /// The current time on the stream's clock (see the module docs).
    pub fn now(&self) -> SystemTime {
        self.state.lock().now()
    }

    /// Put a record, routed by MD5 of the partition key; returns (shard id, sequence number).
    pub fn put(&self, partition_key: &str, data: &[u8]) -> (String, String) {
        self.put_with_hash(hash_key(partition_key), partition_key, data)
    }

    /// Put a KPL aggregate of `user_records` (one Kinesis record, see
    /// [`crate::retrieval::deaggregation`]), routed as `aws-kinesis-agg` routes it: by the
    /// first user record's explicit hash key, else its partition key (the other user records
    /// may belong to other shards). Returns (shard id, sequence number).
    ///
    /// # Panics
    /// If `user_records` is empty, or the first explicit hash key is not a decimal `u128`.
    pub fn put_aggregate(&self, user_records: &[UserRecordSpec]) -> (String, String) {
        let first = user_records.first().expect("an aggregate has user records");
        let hash = match &first.explicit_hash_key {
            Some(k) => k.parse().expect("a decimal explicit hash key"),
            None => hash_key(&first.partition_key),
        };
        self.put_with_hash(hash, &first.partition_key, &aggregate(user_records))
    }

    /// Put a record routed by an explicit hash key; returns (shard id, sequence number).
    pub fn put_with_hash(
        &self,
        explicit_hash: u128,
        partition_key: &str,
        data: &[u8],
    ) -> (String, String) {
        let mut s = self.state.lock();
        let now = s.now();
        let seq = s.next_seq;
        s.next_seq += 1;
        let shard = s
            .shards
            .values_mut()
            .find(|sh| {
                let r = sh.shard.hash_key_range;
                !sh.shard.is_closed() && r.start <= explicit_hash && explicit_hash <= r.end
            })
            .expect("the open shards cover the hash key space");
        let record = Record {
            data: shared_copy(data),
            partition_key: partition_key.into(),
            sequence_number: SequenceNumber::from(seq),
            sub_sequence_number: 0,
            explicit_hash_key: None,
            aggregated: false,
            approximate_arrival_timestamp: Some(now),
        };
        shard.records.push_back((seq, record));
        let shard_id = shard.shard.shard_id.clone();
        s.changed();
        (shard_id, seq.to_string())
    }

    /// Split an open shard: it closes, and two children cover `[start, new_starting_hash_key)`
    /// and `[new_starting_hash_key, end]`. Returns the children's ids (lower range first).
    pub fn split(
        &self,
        shard_id: &str,
        new_starting_hash_key: u128,
    ) -> Result<(String, String), ReshardError> {
        let mut s = self.state.lock();
        let range = s.open_shard(shard_id)?.shard.hash_key_range;
        if new_starting_hash_key <= range.start || new_starting_hash_key > range.end {
            return Err(ReshardError::SplitOutsideRange {
                shard_id: shard_id.to_string(),
                new_starting_hash_key,
                range,
            });
        }
        let low = HashKeyRange {
            start: range.start,
            end: new_starting_hash_key - 1,
        };
        let high = HashKeyRange {
            start: new_starting_hash_key,
            end: range.end,
        };
        let a = s.add_shard(low, &[shard_id]);
        let b = s.add_shard(high, &[shard_id]);
        s.close(shard_id, &[a.clone(), b.clone()]);
        s.changed();
        Ok((a, b))
    }

    /// Merge two open shards with adjacent hash ranges into a new one (its
    /// `parent_shard_id` is `shard_id`, its `adjacent_parent_shard_id` is `adjacent_shard_id`).
    pub fn merge(&self, shard_id: &str, adjacent_shard_id: &str) -> Result<String, ReshardError> {
        let mut s = self.state.lock();
        let a = s.open_shard(shard_id)?.shard.hash_key_range;
        let b = s.open_shard(adjacent_shard_id)?.shard.hash_key_range;
        let adjacent =
            a.end.checked_add(1) == Some(b.start) || b.end.checked_add(1) == Some(a.start);
        if !adjacent {
            return Err(ReshardError::NotAdjacent(
                shard_id.to_string(),
                adjacent_shard_id.to_string(),
            ));
        }
        let range = HashKeyRange {
            start: a.start.min(b.start),
            end: a.end.max(b.end),
        };
        let child = s.add_shard(range, &[shard_id, adjacent_shard_id]);
        s.close(shard_id, std::slice::from_ref(&child));
        s.close(adjacent_shard_id, std::slice::from_ref(&child));
        s.changed();
        Ok(child)
    }

    /// Retention: drop every record that arrived before `before`. A closed shard that closed
    /// before `before` (so all its records are gone) disappears: ListShards no longer lists
    /// it, GetShardIterator returns `None` and GetRecords fails with `ResourceNotFound`.
    pub fn trim(&self, before: SystemTime) {
        let mut s = self.state.lock();
        s.shards
            .retain(|_, sh| sh.closed_at.is_none_or(|closed| closed >= before));
        for sh in s.shards.values_mut() {
            while sh.records.front().is_some_and(|(_, r)| {
                r.approximate_arrival_timestamp
                    .is_some_and(|arrival| arrival < before)
            }) {
                sh.records.pop_front();
            }
        }
        s.changed();
    }

    /// Retention, for one closed shard: it disappears with its records, as if it had aged
    /// past retention (see [`InMemoryStream::trim`]). Returns false (and changes nothing) when
    /// `shard_id` is not a closed shard of the stream.
    pub fn age_out(&self, shard_id: &str) -> bool {
        let mut s = self.state.lock();
        if !s
            .shards
            .get(shard_id)
            .is_some_and(|sh| sh.shard.is_closed())
        {
            return false;
        }
        s.shards.remove(shard_id);
        s.changed();
        true
    }

    /// [`InMemoryStream::trim`] everything older than `age` (by the stream's clock).
    pub fn trim_records_older_than(&self, age: Duration) {
        let cutoff = self
            .now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.trim(cutoff);
    }

    /// Delete the stream: from now on every call fails with ResourceNotFoundException (a
    /// stream re-created under the name is another `InMemoryStream`).
    pub fn delete(&self) {
        self.state.lock().deleted = true;
        let changes = self.state.lock().changes.clone();
        changes.notify_waiters();
    }

    /// Install (or with `None`, remove) a fault injector.
    pub fn set_fault_injector(&self, injector: Option<Arc<dyn StreamFaultInjector>>) {
        self.state.lock().faults = injector;
    }

    /// Count this stream's calls of `op` from now on (installs a fault injector that injects
    /// nothing, in place of any other).
    #[cfg(test)]
    pub(crate) fn count_calls(&self, op: StreamOp) -> Arc<std::sync::atomic::AtomicU64> {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.set_fault_injector(Some(Arc::new({
            let calls = calls.clone();
            move |called: StreamOp, _: Option<&str>| {
                if called == op {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                None
            }
        })));
        calls
    }

    /// Set the per-shard limit of GetRecords calls per rolling second of tokio time (`None`:
    /// unlimited). Calls over the limit fail with `Throttled` (and do not count).
    pub fn set_read_limit(&self, per_second: Option<u32>) {
        self.state.lock().read_limit = per_second;
    }

    /// Every shard (open, closed, not yet trimmed away), sorted by id.
    pub fn shards(&self) -> Vec<Shard> {
        let s = self.state.lock();
        s.shards.values().map(|sh| sh.shard.clone()).collect()
    }

    /// The retained records of a shard, in order (empty for an unknown shard).
    pub fn records(&self, shard_id: &str) -> Vec<Record> {
        let s = self.state.lock();
        s.shards
            .get(shard_id)
            .map(|sh| sh.records.iter().map(|(_, r)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// The number of retained records in the whole stream.
    pub fn total_records(&self) -> usize {
        let s = self.state.lock();
        s.shards.values().map(|sh| sh.records.len()).sum()
    }

    /// How many times `get_records` was called (every call, failed ones included).
    pub fn get_records_calls(&self) -> u64 {
        self.state.lock().get_records_calls
    }

    fn error(
        &self,
        operation: StreamOp,
        shard: Option<&str>,
        failure: RetrievalFailure,
        message: impl Into<String>,
    ) -> RetrievalError {
        let cause = Cause::simulated(failure.kind(), message);
        RetrievalError::new(failure, operation, self.name.to_string(), shard, cause)
    }

    /// Apply the injected fault, if any; `Ok(true)` means "treat the iterator as expired".
    async fn inject(&self, op: StreamOp, shard: Option<&str>) -> Result<bool, RetrievalError> {
        let (injector, deleted) = {
            let s = self.state.lock();
            (s.faults.clone(), s.deleted)
        };
        if deleted {
            let message = "injected ResourceNotFoundException: the stream was deleted";
            return Err(self.error(op, shard, K::ResourceNotFound, message));
        }
        let (kind, message) = match injector.and_then(|i| i.fault(op, shard)) {
            None => return Ok(false),
            Some(StreamFault::Throttle) => (K::Throttled, "injected throughput exceeded"),
            Some(StreamFault::Timeout) => (K::Retryable, "injected timeout"),
            Some(StreamFault::ExpireIterator) => return Ok(op == StreamOp::GetRecords),
            Some(StreamFault::Delay(d)) => {
                tokio::time::sleep(d).await;
                return Ok(false);
            }
            Some(StreamFault::ResourceInUse) => {
                (K::ResourceInUse, "injected ResourceInUseException")
            }
            Some(StreamFault::LimitExceeded) => (K::Throttled, "injected LimitExceededException"),
            Some(StreamFault::Reset) => (K::Retryable, "injected connection reset"),
            Some(StreamFault::Silence) => std::future::pending().await,
            Some(StreamFault::EndSubscription) => return Ok(false),
            Some(StreamFault::AccessDenied) => (K::Fatal, "injected AccessDeniedException"),
        };
        Err(self.error(op, shard, kind, message))
    }
}

#[async_trait]
impl StreamClient for InMemoryStream {
    fn stream_name(&self) -> &str {
        &self.name
    }

    fn now(&self) -> SystemTime {
        InMemoryStream::now(self)
    }

    async fn stream_arn(&self) -> Result<Option<String>, RetrievalError> {
        Ok(Some(self.arn()))
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
        self.inject(StreamOp::ListShards, None).await?;
        Ok(self.shards())
    }

    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError> {
        self.inject(StreamOp::GetShardIterator, Some(shard_id))
            .await?;
        let mut s = self.state.lock();
        let Some(sh) = s.shards.get(shard_id) else {
            return Ok(None);
        };
        let from_seq = first_sequence(sh, s.next_seq, position).map_err(|e| {
            self.error(
                StreamOp::GetShardIterator,
                Some(shard_id),
                K::Fatal,
                e.to_string(),
            )
        })?;
        Ok(Some(s.iterator(shard_id, from_seq)))
    }

    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError> {
        self.state.lock().get_records_calls += 1;
        let expire = self.inject(StreamOp::GetRecords, Some(shard_id)).await?;
        let fail =
            |kind, msg: String| Err(self.error(StreamOp::GetRecords, Some(shard_id), kind, msg));
        if expire {
            return fail(
                K::ExpiredIterator,
                "injected ExpiredIteratorException".into(),
            );
        }
        let Some((it_shard, from_seq, issued)) = parse_iterator(iterator) else {
            return fail(
                K::ExpiredIterator,
                format!("invalid shard iterator {iterator:?}"),
            );
        };
        if it_shard != shard_id {
            return fail(
                K::ExpiredIterator,
                format!("the iterator is for shard {it_shard}"),
            );
        }
        let mut s = self.state.lock();
        let now = Instant::now();
        let age = (now - s.base).as_nanos().saturating_sub(issued);
        let read_limit = s.read_limit;
        let Some(sh) = s.shards.get_mut(shard_id) else {
            return fail(
                K::ResourceNotFound,
                format!("shard {shard_id} does not exist"),
            );
        };
        if let Some(limit) = read_limit {
            while sh
                .reads
                .front()
                .is_some_and(|t| now - *t >= Duration::from_secs(1))
            {
                sh.reads.pop_front();
            }
            if sh.reads.len() >= limit as usize {
                return fail(
                    K::Throttled,
                    format!("over {limit} GetRecords/s on {shard_id}"),
                );
            }
            sh.reads.push_back(now);
        }
        if age >= ITERATOR_TTL.as_nanos() {
            return fail(K::ExpiredIterator, "the iterator expired".into());
        }
        let limit = limit.clamp(1, MAX_GET_RECORDS_LIMIT) as usize;
        let first = sh.records.partition_point(|(seq, _)| *seq < from_seq);
        let end = sh.records.len().min(first + limit);
        let at_end = end == sh.records.len();
        let last = (end > first).then(|| &sh.records[end - 1]);
        let millis_behind = millis_behind(sh, last.map(|(_, r)| r));
        let next_from = last.map_or(from_seq, |(seq, _)| seq + 1);
        // Payloads are shared with the stored records (as the Kinesis client hands through the
        // SDK's buffers); partition keys and sequence numbers are copied.
        let records: Vec<Record> = sh
            .records
            .range(first..end)
            .map(|(_, r)| r.clone())
            .collect();
        let (next_iterator, child_shards) = if at_end && sh.shard.is_closed() {
            (None, sh.children.clone())
        } else {
            (Some(s.iterator(shard_id, next_from)), Vec::new())
        };
        Ok(RecordBatch {
            records,
            next_iterator,
            millis_behind_latest: Some(millis_behind),
            child_shards,
        })
    }

    async fn describe_stream_consumer(
        &self,
        consumer: &ConsumerRef,
    ) -> Result<Option<StreamConsumer>, RetrievalError> {
        self.inject(StreamOp::DescribeStreamConsumer, None).await?;
        Ok(self.consumer(consumer))
    }

    async fn register_stream_consumer(
        &self,
        consumer_name: &str,
    ) -> Result<StreamConsumer, RetrievalError> {
        self.inject(StreamOp::RegisterStreamConsumer, None).await?;
        self.register(consumer_name)
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        self.inject(StreamOp::SubscribeToShard, Some(shard_id))
            .await?;
        self.subscribe(consumer_arn, shard_id, position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IteratorPosition::*;

    const S0: &str = "shardId-000000000000";
    const S1: &str = "shardId-000000000001";
    const S2: &str = "shardId-000000000002";

    async fn iter(s: &InMemoryStream, shard: &str, pos: IteratorPosition) -> String {
        s.get_shard_iterator(shard, &pos).await.unwrap().unwrap()
    }

    /// Reads a shard to its end (or tip), returning every batch.
    async fn read_all(
        s: &InMemoryStream,
        shard: &str,
        pos: IteratorPosition,
        limit: u32,
    ) -> Vec<RecordBatch> {
        s.set_read_limit(None);
        let mut it = Some(iter(s, shard, pos).await);
        let mut batches = Vec::new();
        while let Some(i) = it {
            let b = get(s, shard, &i, limit).await;
            let done = b.records.is_empty();
            it = b.next_iterator.clone();
            batches.push(b);
            if done {
                break;
            }
        }
        batches
    }

    async fn get(s: &InMemoryStream, shard: &str, it: &str, limit: u32) -> RecordBatch {
        s.get_records(shard, it, limit).await.unwrap()
    }

    fn kind<T: fmt::Debug>(r: Result<T, RetrievalError>) -> RetrievalFailure {
        r.unwrap_err().failure
    }

    fn hk(start: u128, end: u128) -> HashKeyRange {
        HashKeyRange { start, end }
    }

    fn seqs(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.sequence_number.to_string()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn shards_cover_the_hash_space_and_puts_route_by_md5() {
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        let s = InMemoryStream::new("s", 3);
        let shards = s.list_shards().await.unwrap();
        assert_eq!(
            shards
                .iter()
                .map(|x| x.shard_id.as_str())
                .collect::<Vec<_>>(),
            [S0, S1, S2]
        );
        assert_eq!(shards[0].hash_key_range.start, 0);
        assert_eq!(shards[2].hash_key_range.end, u128::MAX);
        for w in shards.windows(2) {
            assert_eq!(w[0].hash_key_range.end + 1, w[1].hash_key_range.start);
        }
        assert!(shards
            .iter()
            .all(|x| !x.is_closed() && x.parents().is_empty()));
        let mut last = 0u128;
        for i in 0..30 {
            let key = format!("key-{i}");
            let (shard, seq) = s.put(&key, b"x");
            let h = hash_key(&key);
            let r = shards
                .iter()
                .find(|x| x.shard_id == shard)
                .unwrap()
                .hash_key_range;
            assert!(r.start <= h && h <= r.end, "{key} routed to {shard}");
            let seq: u128 = seq.parse().unwrap();
            assert!(seq > last && seq > FIRST_SEQUENCE_NUMBER);
            last = seq;
        }
        assert_eq!(s.put_with_hash(u128::MAX, "k", b"y").0, S2);
        assert_eq!(s.total_records(), 31);
        assert_eq!(
            s.records(S0).len() + s.records(S1).len() + s.records(S2).len(),
            31
        );
    }

    #[tokio::test(start_paused = true)]
    async fn trim_horizon_reads_everything_in_order_then_waits_at_the_tip() {
        let s = InMemoryStream::new("s", 1);
        let put: Vec<String> = (0..10)
            .map(|i| s.put("k", format!("r{i}").as_bytes()).1)
            .collect();
        let batches = read_all(&s, S0, TrimHorizon, 3).await;
        assert_eq!(
            batches.iter().map(|b| b.records.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1, 0]
        );
        assert_eq!(seqs(&batches), put);
        assert_eq!(batches[0].records[2].data, &b"r2"[..]);
        let tip = batches.last().unwrap();
        assert!(tip.next_iterator.is_some() && tip.child_shards.is_empty());
        assert_eq!(tip.millis_behind_latest, Some(0));
        assert_eq!(s.get_records_calls(), 5);
        // The tip iterator picks up later records.
        let (_, seq) = s.put("k", b"late");
        let b = get(&s, S0, tip.next_iterator.as_ref().unwrap(), 10).await;
        assert_eq!(b.records[0].sequence_number, seq);
    }

    #[tokio::test(start_paused = true)]
    async fn sequence_number_latest_and_timestamp_positions() {
        let s = InMemoryStream::new("s", 1);
        let put: Vec<String> = (0..3).map(|_| s.put("k", b"a").1).collect();
        let at = read_all(&s, S0, AtSequenceNumber(put[1].clone()), 10).await;
        assert_eq!(seqs(&at), put[1..]);
        let after = read_all(&s, S0, AfterSequenceNumber(put[1].clone()), 10).await;
        assert_eq!(seqs(&after), put[2..]);
        let latest = iter(&s, S0, Latest).await;
        assert!(get(&s, S0, &latest, 10).await.records.is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        let t = s.now();
        let late = s.put("k", b"b").1;
        let b = get(&s, S0, &latest, 10).await;
        assert_eq!(seqs(&[b]), std::slice::from_ref(&late));
        assert_eq!(s.records(S0)[3].approximate_arrival_timestamp, Some(t));
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + BASE_EPOCH + Duration::from_secs(10)
        );
        assert_eq!(
            seqs(&read_all(&s, S0, AtTimestamp(t), 10).await),
            std::slice::from_ref(&late)
        );
        let all = read_all(&s, S0, AtTimestamp(t - Duration::from_secs(1)), 1).await;
        assert_eq!(seqs(&all), [late]);
        // Behind: the first record arrived 10 s before the newest.
        let b = get(&s, S0, &iter(&s, S0, TrimHorizon).await, 1).await;
        assert_eq!(b.millis_behind_latest, Some(10_000));
        assert_eq!(
            kind(
                s.get_shard_iterator(S0, &AtSequenceNumber("x1".into()))
                    .await
            ),
            K::Fatal
        );
        assert_eq!(
            s.get_shard_iterator("shardId-000000000009", &Latest)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            kind(s.get_records(S0, "garbage", 10).await),
            K::ExpiredIterator
        );
    }

    #[tokio::test(start_paused = true)]
    async fn split_closes_the_parent_and_reports_children_at_its_end() {
        let s = InMemoryStream::new("s", 1);
        let put: Vec<String> = (0..5).map(|_| s.put_with_hash(7, "k", b"a").1).collect();
        let mid = 1u128 << 127;
        let (a, b) = s.split(S0, mid).unwrap();
        assert_eq!((a.as_str(), b.as_str()), (S1, S2));
        let shards = s.list_shards().await.unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(shards[0].ending_sequence_number.as_ref(), Some(&put[4]));
        assert_eq!(shards[1].parent_shard_id.as_deref(), Some(S0));
        assert_eq!(shards[1].adjacent_parent_shard_id, None);
        assert_eq!(shards[1].hash_key_range, hk(0, mid - 1));
        assert_eq!(shards[2].hash_key_range, hk(mid, u128::MAX));
        let batches = read_all(&s, S0, TrimHorizon, 2).await;
        assert_eq!(seqs(&batches), put);
        assert_eq!(batches.len(), 3);
        assert!(batches[..2]
            .iter()
            .all(|b| b.next_iterator.is_some() && b.child_shards.is_empty()));
        let end = batches.last().unwrap();
        assert_eq!(end.next_iterator, None);
        let children = vec![
            ChildShard {
                shard_id: S1.into(),
                parent_shards: vec![S0.into()],
                hash_key_range: shards[1].hash_key_range,
            },
            ChildShard {
                shard_id: S2.into(),
                parent_shards: vec![S0.into()],
                hash_key_range: shards[2].hash_key_range,
            },
        ];
        assert_eq!(end.child_shards, children);
        // LATEST on the closed shard: straight to the end (the cleanup manager's lookup).
        let b = get(&s, S0, &iter(&s, S0, Latest).await, 10).await;
        assert!(b.records.is_empty() && b.next_iterator.is_none());
        assert_eq!(b.child_shards, children);
        assert_eq!(s.put_with_hash(7, "k", b"a").0, S1);
        let (in_b, seq_b) = s.put_with_hash(mid, "k", b"a");
        assert_eq!(in_b, S2);
        s.split(S2, mid + 1).unwrap();
        assert_eq!(s.shards()[2].ending_sequence_number, Some(seq_b));
        assert!(s.split(S0, 5).unwrap_err().to_string().contains("closed"));
        assert!(s.split(S1, 0).is_err());
        assert!(s.split(S1, mid).is_err());
        // An empty shard closes with its starting sequence number.
        let e = InMemoryStream::new("e", 1);
        e.split(S0, 1).unwrap();
        let e0 = &e.shards()[0];
        assert_eq!(
            e0.ending_sequence_number.as_ref(),
            Some(&e0.starting_sequence_number)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn merge_makes_one_child_with_two_parents() {
        let s = InMemoryStream::new("s", 3);
        assert!(s
            .merge(S0, S2)
            .unwrap_err()
            .to_string()
            .contains("adjacent"));
        let r1 = s.put_with_hash(u128::MAX / 2, "k", b"a");
        assert_eq!(r1.0, S1);
        let child = s.merge(S1, S0).unwrap();
        assert_eq!(child, "shardId-000000000003");
        let shards = s.shards();
        let c = &shards[3];
        assert_eq!(c.parent_shard_id.as_deref(), Some(S1));
        assert_eq!(c.adjacent_parent_shard_id.as_deref(), Some(S0));
        assert_eq!(c.hash_key_range, hk(0, shards[1].hash_key_range.end));
        assert!(shards[0].is_closed() && shards[1].is_closed() && !shards[2].is_closed());
        assert_eq!(shards[1].ending_sequence_number.as_ref(), Some(&r1.1));
        let expected = vec![ChildShard {
            shard_id: child.clone(),
            parent_shards: vec![S1.into(), S0.into()],
            hash_key_range: c.hash_key_range,
        }];
        for parent in [S0, S1] {
            let end = read_all(&s, parent, TrimHorizon, 10).await.pop().unwrap();
            assert_eq!((end.next_iterator, &end.child_shards), (None, &expected));
        }
        assert_eq!(s.put_with_hash(0, "k", b"a").0, child);
        assert!(s
            .merge(child.as_str(), S0)
            .unwrap_err()
            .to_string()
            .contains("closed"));
        assert!(s.merge(&child, S2).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn iterators_expire_after_five_minutes() {
        let s = InMemoryStream::new("s", 1);
        s.put("k", b"a");
        let it = iter(&s, S0, TrimHorizon).await;
        tokio::time::advance(Duration::from_secs(299)).await;
        let next = get(&s, S0, &it, 10).await.next_iterator.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(kind(s.get_records(S0, &it, 10).await), K::ExpiredIterator);
        // The next iterator was issued later and is still valid.
        assert!(s.get_records(S0, &next, 10).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_limited_per_shard_per_second() {
        let s = InMemoryStream::new("s", 2);
        let it = iter(&s, S0, TrimHorizon).await;
        for _ in 0..5 {
            get(&s, S0, &it, 10).await;
        }
        assert_eq!(kind(s.get_records(S0, &it, 10).await), K::Throttled);
        let other = iter(&s, S1, TrimHorizon).await;
        assert!(s.get_records(S1, &other, 10).await.is_ok());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(s.get_records(S0, &it, 10).await.is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut it = get(&s, S0, &it, 10).await.next_iterator.unwrap();
        for _ in 0..20 {
            tokio::time::advance(Duration::from_millis(200)).await;
            it = get(&s, S0, &it, 10).await.next_iterator.unwrap();
        }
        s.set_read_limit(None);
        for _ in 0..20 {
            get(&s, S0, &it, 10).await;
        }
        assert_eq!(s.get_records_calls(), 1 + 5 + 1 + 1 + 1 + 20 + 20);
    }

    #[tokio::test(start_paused = true)]
    async fn trimming_moves_the_trim_horizon_and_removes_old_closed_shards() {
        let s = InMemoryStream::new("s", 1);
        let old: Vec<String> = (0..3).map(|_| s.put("k", b"old").1).collect();
        let stale = iter(&s, S0, TrimHorizon).await;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let new: Vec<String> = (0..2).map(|_| s.put("k", b"new").1).collect();
        s.trim_records_older_than(Duration::from_secs(1800));
        assert_eq!(s.total_records(), 2);
        assert_eq!(seqs(&read_all(&s, S0, TrimHorizon, 10).await), new);
        assert_eq!(
            seqs(&read_all(&s, S0, AtSequenceNumber(old[0].clone()), 10).await),
            new
        );
        assert_eq!(
            seqs(&read_all(&s, S0, AfterSequenceNumber(old[2].clone()), 10).await),
            new
        );
        let b = get(&s, S0, &iter(&s, S0, Latest).await, 10).await;
        assert!(b.records.is_empty());
        assert_eq!(
            kind(s.get_records(S0, &stale, 10).await),
            K::ExpiredIterator
        );
        // A closed shard goes away once retention passes its closing time.
        let (a, _) = s.split(S0, 1 << 100).unwrap();
        let it = iter(&s, S0, TrimHorizon).await;
        s.trim_records_older_than(Duration::from_secs(1800));
        assert_eq!(s.shards().len(), 3);
        tokio::time::advance(Duration::from_secs(1801)).await;
        s.trim_records_older_than(Duration::from_secs(1800));
        let ids: Vec<String> = s
            .list_shards()
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.shard_id)
            .collect();
        assert_eq!(ids, [a, S2.to_string()]);
        assert_eq!(s.total_records(), 0);
        assert_eq!(s.get_shard_iterator(S0, &TrimHorizon).await.unwrap(), None);
        assert_eq!(kind(s.get_records(S0, &it, 10).await), K::ResourceNotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults() {
        let s = InMemoryStream::new("s", 2);
        s.put_with_hash(0, "k", b"a");
        let it = iter(&s, S0, TrimHorizon).await;
        s.set_fault_injector(Some(Arc::new(|op, shard: Option<&str>| {
            match (op, shard) {
                (StreamOp::ListShards, _) => Some(StreamFault::Throttle),
                (StreamOp::GetShardIterator, _) => Some(StreamFault::Timeout),
                (StreamOp::GetRecords, Some(S0)) => Some(StreamFault::ExpireIterator),
                (StreamOp::GetRecords, _) => Some(StreamFault::Delay(Duration::from_secs(3))),
                _ => None,
            }
        })));
        assert_eq!(kind(s.list_shards().await), K::Throttled);
        assert_eq!(kind(s.get_shard_iterator(S0, &Latest).await), K::Retryable);
        assert_eq!(kind(s.get_records(S0, &it, 10).await), K::ExpiredIterator);
        s.set_fault_injector(None);
        let it1 = iter(&s, S1, TrimHorizon).await;
        s.set_fault_injector(Some(Arc::new(|_, _: Option<&str>| {
            Some(StreamFault::Delay(Duration::from_secs(3)))
        })));
        let start = Instant::now();
        assert!(get(&s, S1, &it1, 10).await.records.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        s.set_fault_injector(None);
        let b = get(&s, S0, &it, 10).await;
        assert_eq!(b.records.len(), 1);
        assert_eq!(s.list_shards().await.unwrap().len(), 2);
    }
}
