//! GetRecords' records decoded without the SDK's JSON deserializer.
//!
//! A profile of the library on the real path (bench section 12) put ~65 % of a consumer's CPU in
//! the SDK's JSON deserializer for GetRecords: every record's base64 `Data` scanned byte by byte,
//! checked as UTF-8, copied into a `String`, then decoded into a `Vec` of its own. Here a
//! per-call interceptor wraps a 2xx response's body (still streaming when its
//! `modify_before_deserialization` hook runs: the orchestrator reads it afterwards); the wrapper
//! collects the body, parses it with serde_json (the base64 text borrowed from the body when it
//! has no escapes), decodes every record's data with base64-simd (the SDK's own base64) into a
//! buffer of its own (as the SDK does: a processor that keeps one record keeps only its data,
//! not the whole response's), and puts the library's [`Record`]s in a slot shared with the
//! caller. The SDK then reads the same JSON with `"Records":[]`, so signing, retries, error
//! classification and the other fields (NextShardIterator, MillisBehindLatest, ChildShards)
//! stay the SDK's.
//!
//! The fast path takes only what it decodes exactly as the SDK path would (the same UTF-8 and
//! JSON string rules, the same base64 engine, the SDK's arithmetic for epoch-second timestamps).
//! Anything else (a field missing, null or of another type where the SDK would default or fail,
//! a duplicate key, a sequence number the library rejects, a body that is not JSON) leaves the
//! body untouched: the SDK parses it as before and the SDK records are converted as before, so
//! the fast path only matters when it succeeds.

use crate::checkpoint::SequenceNumber;
use crate::record::Record;
use crate::sync::Mutex;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::DateTime;
use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where the interceptor leaves the records of the last attempt's response, if the fast path
/// decoded them.
pub(super) type Slot = Arc<Mutex<Option<Vec<Record>>>>;

/// The per-call interceptor (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct FastRecords {
    slot: Slot,
}

impl FastRecords {
    /// An interceptor and the slot it fills.
    pub(super) fn new() -> (Self, Slot) {
        let slot = Slot::default();
        (FastRecords { slot: slot.clone() }, slot)
    }
}

impl Intercept for FastRecords {
    fn name(&self) -> &'static str {
        "KinesisClientFastRecords"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Every attempt starts empty: only the response the SDK finally deserializes counts.
        *self.slot.lock() = None;
        let response = context.response_mut();
        if !response.status().is_success() {
            return Ok(());
        }
        let inner = response.take_body();
        *response.body_mut() = SdkBody::from_body_1_x(SplittingBody {
            inner: Some(inner),
            chunks: Vec::new(),
            slot: self.slot.clone(),
            done: false,
        });
        Ok(())
    }
}

/// A response body that collects the original one, then yields it with the records cut out
/// (and leaves them in the slot), or unchanged if the fast path did not take it.
struct SplittingBody {
    inner: Option<SdkBody>,
    chunks: Vec<Bytes>,
    slot: Slot,
    done: bool,
}

impl http_body::Body for SplittingBody {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        while let Some(inner) = this.inner.as_mut() {
            match std::task::ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers (Kinesis sends none) are not part of what the SDK deserializes.
                    if let Ok(data) = frame.into_data() {
                        this.chunks.push(data);
                    }
                }
                Some(Err(e)) => {
                    this.inner = None;
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.inner = None;
                    this.done = true;
                    let body = concat(std::mem::take(&mut this.chunks));
                    let body = match split(&body) {
                        Some((records, rest)) => {
                            *this.slot.lock() = Some(records);
                            #[cfg(test)]
                            TAKEN.with(|n| n.set(n.get() + 1));
                            Bytes::from(rest)
                        }
                        None => body,
                    };
                    return Poll::Ready(Some(Ok(http_body::Frame::data(body))));
                }
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    }
}

/// A record as GetRecords writes it. Every field the SDK requires is required here, and one
/// given twice is an error (serde's derive): both leave the body to the SDK.
#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(rename = "SequenceNumber")]
    sequence_number: String,
    /// The raw JSON text (a number, or anything else: then the SDK decides), or null.
    #[serde(rename = "ApproximateArrivalTimestamp", borrow, default)]
    approximate_arrival_timestamp: Option<&'a RawValue>,
    /// Base64, borrowed from the body (it has no escapes unless a writer added some).
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", default)]
    partition_key: Option<String>,
    /// Not kept (a `Record` has no field for it), but checked to be what the SDK accepts.
    #[serde(rename = "EncryptionType", default)]
    #[allow(dead_code)]
    encryption_type: Option<String>,
}

/// The top-level object: the records, and every other member's key and raw value, in order.
struct Response<'a> {
    records: Vec<WireRecord<'a>>,
    rest: Vec<(String, &'a RawValue)>,
}

impl<'de> Deserialize<'de> for Response<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Response<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a GetRecords response")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut records = None;
                let mut rest = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "Records" {
                        if records.is_some() {
                            return Err(serde::de::Error::duplicate_field("Records"));
                        }
                        records = Some(map.next_value::<Vec<WireRecord<'de>>>()?);
                    } else {
                        rest.push((key, map.next_value::<&'de RawValue>()?));
                    }
                }
                let records = records.ok_or_else(|| serde::de::Error::missing_field("Records"))?;
                Ok(Response { records, rest })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// The records of a GetRecords response body, and the body without them (`"Records":[]`, the
/// other members as they were); `None` if the fast path does not take this body.
pub(super) fn split(body: &[u8]) -> Option<(Vec<Record>, Vec<u8>)> {
    let response: Response<'_> = serde_json::from_slice(body).ok()?;
    let records = records(&response.records)?;
    let mut rest = Vec::with_capacity(
        64 + response
            .rest
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 8)
            .sum::<usize>(),
    );
    rest.extend_from_slice(br#"{"Records":[]"#);
    for (key, value) in &response.rest {
        rest.push(b',');
        serde_json::to_writer(&mut rest, key).ok()?;
        rest.push(b':');
        rest.extend_from_slice(value.get().as_bytes());
    }
    rest.push(b'}');
    Some((records, rest))
}

/// The library's records, each record's data decoded into a buffer of its own, as the SDK
/// decodes it (a processor that keeps one record keeps only that record's data, not the
/// whole response's).
fn records(wire: &[WireRecord<'_>]) -> Option<Vec<Record>> {
    let b64 = base64_simd::STANDARD;
    let mut out = Vec::with_capacity(wire.len());
    for r in wire {
        let data = b64.decode_to_vec(r.data.as_bytes()).ok()?;
        let arrival = match r.approximate_arrival_timestamp {
            None => None,
            Some(raw) => super::to_system_time(&epoch_seconds(raw.get())?),
        };
        let sequence_number = SequenceNumber::new(r.sequence_number.clone()).ok()?;
        let mut record = Record::new(
            Bytes::from(data),
            r.partition_key.clone().unwrap_or_default(),
            sequence_number,
        );
        record.approximate_arrival_timestamp = arrival;
        out.push(record);
    }
    Some(out)
}

/// An epoch-seconds timestamp from its JSON number text, by the SDK's rules (aws-smithy-json's
/// `read_timestamp`): with a fraction or an exponent, an `f64` (in `i64` range) through
/// `DateTime::from_secs_f64`; else an integer through `DateTime::from_secs`. `None` for
/// anything else (a string, or out of range): the SDK decides.
fn epoch_seconds(text: &str) -> Option<DateTime> {
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    if text.contains(['.', 'e', 'E']) {
        let f: f64 = text.parse().ok()?;
        const I64_MIN_F64: f64 = i64::MIN as f64;
        const I64_MAX_F64: f64 = i64::MAX as f64;
        if !f.is_finite() || !(I64_MIN_F64..I64_MAX_F64).contains(&f) {
            return None;
        }
        Some(DateTime::from_secs_f64(f))
    } else if text.starts_with('-') {
        Some(DateTime::from_secs(text.parse::<i64>().ok()?))
    } else {
        let n: u64 = text.parse().ok()?;
        Some(DateTime::from_secs(i64::try_from(n).ok()?))
    }
}

#[cfg(test)]
thread_local! {
    /// How many responses the fast path took on this thread (the tests' current-thread
    /// runtimes poll the body on the test's thread).
    static TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests;
