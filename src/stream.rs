//! Which stream a lease, a shard or a batch of records belongs to: the Java KCL's
//! `StreamIdentifier`, and the lease keys built from it.
//!
//! A single-stream application names its stream by name only, and its lease keys are the bare
//! shard ids (`shardId-000000000005`). A multi-stream application (the Java KCL's
//! `MultiStreamTracker`) names each stream by its account, its name and its creation epoch,
//! serialized `123456789012:orders:1600000000`. That string prefixes the stream's lease keys
//! (`123456789012:orders:1600000000:shardId-000000000005`) and is the leases' `streamName`
//! attribute, exactly as the Java KCL writes them, so that a Java multi-stream application and
//! this library read each other's lease tables. The creation epoch tells apart a stream deleted
//! and re-created under the same name: the new one is a new stream, with new leases.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::validation::{is_valid_stream_name, parse_stream_arn, STREAM_NAME_RULE};

/// A stream, as the lease table names it (the Java KCL's `StreamIdentifier`).
///
/// Two identifiers are equal when their account, name and creation epoch are (as in Java, the
/// region and the ARN are not part of it). Cloning is cheap (shared strings).
///
/// ```
/// use kinesis_client::StreamIdentifier;
///
/// let orders = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
/// assert_eq!(orders.to_string(), "123456789012:orders:1600000000");
/// assert_eq!(orders.lease_key("shardId-000000000005"), "123456789012:orders:1600000000:shardId-000000000005");
/// assert_eq!("123456789012:orders:1600000000".parse::<StreamIdentifier>().unwrap(), orders);
///
/// let single = StreamIdentifier::single("orders");
/// assert_eq!(single.to_string(), "orders");
/// assert_eq!(single.lease_key("shardId-000000000005"), "shardId-000000000005");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamIdentifier {
    account_id: Option<Arc<str>>,
    name: Arc<str>,
    creation_epoch: Option<u64>,
}

/// Why a string or parts are not a stream identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{input:?} is not a stream identifier: {reason}")]
pub struct StreamIdentifierError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl StreamIdentifierError {
    fn new(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            input: input.into(),
            reason: reason.into(),
        }
    }
}

impl StreamIdentifier {
    /// The stream of a single-stream application, by name: it serializes to the name, and its
    /// lease keys are bare shard ids.
    pub fn single(name: impl Into<Arc<str>>) -> Self {
        Self {
            account_id: None,
            name: name.into(),
            creation_epoch: None,
        }
    }

    /// A stream of a multi-stream application: its 12-digit account id, its name, and its
    /// creation epoch (any positive number every worker derives the same way; the Java KCL's
    /// examples use `StreamCreationTimestamp` in epoch milliseconds, some applications use
    /// seconds).
    pub fn multi(
        account_id: &str,
        name: &str,
        creation_epoch: u64,
    ) -> Result<Self, StreamIdentifierError> {
        let input = format!("{account_id}:{name}:{creation_epoch}");
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StreamIdentifierError::new(
                input,
                format!("account id {account_id:?} is not 12 digits"),
            ));
        }
        if !is_valid_stream_name(name) {
            return Err(StreamIdentifierError::new(input, STREAM_NAME_RULE));
        }
        Self::multi_unchecked(account_id, name, creation_epoch)
            .map_err(|reason| StreamIdentifierError::new(input, reason))
    }

    /// A stream of a multi-stream application from its ARN
    /// (`arn:aws:kinesis:<region>:<account>:stream/<name>`) and its creation epoch.
    pub fn from_arn(arn: &str, creation_epoch: u64) -> Result<Self, StreamIdentifierError> {
        let parts =
            parse_stream_arn(arn).map_err(|e| StreamIdentifierError::new(arn, e.to_string()))?;
        Self::multi(&parts.account_id, &parts.stream_name, creation_epoch)
    }

    /// The checks the Java KCL's parser makes (digits, no `:` in the name, a positive epoch
    /// that fits Java's `long`); what it reads back from a lease table is accepted as it
    /// wrote it.
    fn multi_unchecked(
        account_id: &str,
        name: &str,
        creation_epoch: u64,
    ) -> Result<Self, &'static str> {
        if account_id.is_empty() || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the account id is not digits");
        }
        if name.is_empty() || name.contains(':') {
            return Err("the stream name is empty or has a ':'");
        }
        if creation_epoch == 0 || creation_epoch > i64::MAX as u64 {
            return Err("the creation epoch is not a positive 64-bit number");
        }
        Ok(Self {
            account_id: Some(account_id.into()),
            name: name.into(),
            creation_epoch: Some(creation_epoch),
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's account id (multi-stream identifiers only).
    pub fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }

    /// The stream's creation epoch (multi-stream identifiers only).
    pub fn creation_epoch(&self) -> Option<u64> {
        self.creation_epoch
    }

    /// True for an identifier of a multi-stream application (`account:name:epoch`).
    pub fn is_multi_stream(&self) -> bool {
        self.creation_epoch.is_some()
    }

    /// The lease key of one of the stream's shards: the shard id for a single-stream
    /// identifier, `<account>:<name>:<epoch>:<shard id>` for a multi-stream one (the Java
    /// KCL's `MultiStreamLease.getLeaseKey`).
    pub fn lease_key(&self, shard_id: &str) -> String {
        if self.is_multi_stream() {
            format!("{self}:{shard_id}")
        } else {
            shard_id.to_string()
        }
    }

    /// Splits a multi-stream lease key into its stream and its shard id (as the Java KCL's
    /// `StreamInfo.multiStreamLeaseKeyToStreamIdentifier`: the first three `:`-separated parts
    /// are the stream). `None` for a key that is not one (a single-stream lease key, a bare
    /// shard id).
    pub fn split_lease_key(key: &str) -> Option<(StreamIdentifier, &str)> {
        let mut parts = key.splitn(4, ':');
        let (account, name, epoch, shard) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let epoch = epoch.parse().ok()?;
        let id = Self::multi_unchecked(account, name, epoch).ok()?;
        (!shard.is_empty()).then_some((id, shard))
    }
}

impl fmt::Display for StreamIdentifier {
    /// The serialized form: the name for a single-stream identifier,
    /// `<account>:<name>:<epoch>` for a multi-stream one (the Java KCL's `serialize()`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.account_id, self.creation_epoch) {
            (Some(account), Some(epoch)) => write!(f, "{account}:{}:{epoch}", self.name),
            _ => f.write_str(&self.name),
        }
    }
}

impl FromStr for StreamIdentifier {
    type Err = StreamIdentifierError;

    /// Reads the serialized form back: `<account>:<name>:<epoch>` (as the Java KCL writes it in
    /// the `streamName` attribute; its parser's rules) is a multi-stream identifier; a string
    /// without `:` is a single-stream one if it is a valid stream name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains(':') {
            return if is_valid_stream_name(s) {
                Ok(Self::single(s))
            } else {
                Err(StreamIdentifierError::new(s, STREAM_NAME_RULE))
            };
        }
        let parts: Vec<&str> = s.split(':').collect();
        let [account, name, epoch] = parts.as_slice() else {
            return Err(StreamIdentifierError::new(
                s,
                "expected <account id>:<stream name>:<creation epoch>",
            ));
        };
        let epoch = epoch.parse().map_err(|_| {
            StreamIdentifierError::new(s, format!("creation epoch {epoch:?} is not a number"))
        })?;
        Self::multi_unchecked(account, name, epoch).map_err(|r| StreamIdentifierError::new(s, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_java_kcl() {
        let id = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
        assert_eq!(id.to_string(), "123456789012:orders:1600000000");
        assert_eq!(id.name(), "orders");
        assert_eq!(id.account_id(), Some("123456789012"));
        assert_eq!(id.creation_epoch(), Some(1_600_000_000));
        assert!(id.is_multi_stream());
        let single = StreamIdentifier::single("orders");
        assert_eq!(single.to_string(), "orders");
        assert!(!single.is_multi_stream());
        assert_ne!(single, id);
    }

    #[test]
    fn a_recreated_stream_is_another_stream() {
        let old = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
        let new = StreamIdentifier::multi("123456789012", "orders", 1_700_000_000).unwrap();
        assert_ne!(old, new);
        assert_ne!(
            old.lease_key("shardId-000000000000"),
            new.lease_key("shardId-000000000000")
        );
    }

    #[test]
    fn reads_back_what_java_writes() {
        // The `streamName` attribute and leaseKey of an item the Java KCL's
        // DynamoDBMultiStreamLeaseSerializer wrote (MultiStreamLease.getLeaseKey).
        let key = "123456789012:my-stream.v2_x:1700000000123:shardId-000000000007";
        let (id, shard) = StreamIdentifier::split_lease_key(key).unwrap();
        assert_eq!(shard, "shardId-000000000007");
        assert_eq!(
            id,
            "123456789012:my-stream.v2_x:1700000000123".parse().unwrap()
        );
        assert_eq!(id.lease_key(shard), key);
        // Java's parser takes any run of digits as the account (its ARN check is elsewhere).
        let loose: StreamIdentifier = "42:s:1".parse().unwrap();
        assert_eq!(loose.account_id(), Some("42"));
        assert_eq!(loose.to_string(), "42:s:1");
    }

    #[test]
    fn single_stream_keys_are_not_multi_stream_keys() {
        for key in [
            "shardId-000000000007",
            "a:b",
            "1:s:0:shardId-1",
            "1:s:x:shardId-1",
            "1:s:5:",
        ] {
            assert_eq!(StreamIdentifier::split_lease_key(key), None, "{key}");
        }
    }

    #[test]
    fn bad_identifiers_are_refused_with_the_reason() {
        for (input, reason) in [
            ("123:orders", "expected <account id>"),
            ("abc:orders:1", "account id is not digits"),
            ("123::1", "stream name is empty"),
            ("123:orders:0", "positive"),
            ("123:orders:9223372036854775808", "positive"),
            ("123:orders:x", "not a number"),
            ("bad name", "Kinesis stream name"),
        ] {
            let e = input.parse::<StreamIdentifier>().unwrap_err();
            assert_eq!(e.input, input);
            assert!(e.to_string().contains(reason), "{input}: {e}");
        }
        let e = StreamIdentifier::multi("12345", "orders", 1).unwrap_err();
        assert!(e.reason.contains("12 digits"), "{e}");
        assert!(StreamIdentifier::multi("123456789012", "no/slash", 1).is_err());
        assert!(StreamIdentifier::multi("123456789012", "orders", 0).is_err());
    }

    #[test]
    fn from_an_arn() {
        let id = StreamIdentifier::from_arn(
            "arn:aws:kinesis:eu-west-1:123456789012:stream/orders",
            1_600_000_000,
        )
        .unwrap();
        assert_eq!(id.to_string(), "123456789012:orders:1600000000");
        let e = StreamIdentifier::from_arn("arn:aws:sqs:eu-west-1:123456789012:q", 1).unwrap_err();
        assert!(e.reason.contains("kinesis"), "{e}");
    }
}
