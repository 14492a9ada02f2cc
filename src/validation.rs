//! The rules a setting must follow, in one place: [`crate::ConfigBuilder::build`] checks them,
//! and the MultiLangDaemon checks the same rules when it reads a `.properties` file (so that
//! its error can name the key and the line).

use std::time::Duration;

/// The most records one GetRecords call may ask for (Kinesis' limit): `max_records` is
/// `1..=MAX_RECORDS_LIMIT`.
pub const MAX_RECORDS_LIMIT: u32 = 10_000;

/// The shortest pause between two GetRecords calls on one shard: Kinesis allows five
/// GetRecords calls per second per shard. A shorter `idle_time_between_reads` is raised to it
/// (as the Java KCL's polling configuration does).
pub const MIN_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(200);

/// The rule of [`is_valid_table_name`], in words.
pub const TABLE_NAME_RULE: &str =
    "a DynamoDB table name must be 3 to 255 characters from a-z, A-Z, 0-9, '_', '-', '.'";

/// The rule of [`is_valid_stream_name`], in words.
pub const STREAM_NAME_RULE: &str =
    "expected a Kinesis stream name: 1 to 128 characters from a-z, A-Z, 0-9, '_', '-', '.'";

fn name_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// True for a valid DynamoDB table name (see [`TABLE_NAME_RULE`]).
pub fn is_valid_table_name(s: &str) -> bool {
    (3..=255).contains(&s.len()) && name_chars_ok(s)
}

/// True for a valid Kinesis stream name (see [`STREAM_NAME_RULE`]).
pub fn is_valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && name_chars_ok(s)
}

/// The rule of [`is_valid_consumer_name`], in words.
pub const CONSUMER_NAME_RULE: &str =
    "expected a Kinesis stream consumer name: 1 to 128 characters from a-z, A-Z, 0-9, '_', '-', '.'";

/// True for a valid Kinesis stream consumer name (enhanced fan-out; see
/// [`CONSUMER_NAME_RULE`]).
pub fn is_valid_consumer_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && name_chars_ok(s)
}

/// The parts of a stream consumer ARN,
/// `arn:<partition>:kinesis:<region>:<account>:stream/<stream>/consumer/<name>:<creation>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerArn {
    /// The stream it reads (its ARN).
    pub stream: StreamArn,
    /// The consumer's name.
    pub consumer_name: String,
}

impl ConsumerArn {
    /// The first part of the consumer's stream ARN that differs from `stream`
    /// (`"partition"`, `"account"`, `"region"` or `"stream name"`), or `None` when it is a
    /// consumer of `stream`. A consumer of another account's or region's stream of the same
    /// name reads another stream.
    pub fn stream_mismatch(&self, stream: &StreamArn) -> Option<&'static str> {
        let ours = &self.stream;
        [
            ("partition", ours.partition == stream.partition),
            ("account", ours.account_id == stream.account_id),
            ("region", ours.region == stream.region),
            ("stream name", ours.stream_name == stream.stream_name),
        ]
        .into_iter()
        .find_map(|(part, same)| (!same).then_some(part))
    }
}

/// Which part of a stream consumer ARN is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerArnError {
    /// There is no `/consumer/` part.
    #[error("not a stream consumer ARN: no \"/consumer/\" part")]
    NoConsumerPart,
    /// The part before `/consumer/` is not a stream ARN.
    #[error(transparent)]
    Stream(#[from] StreamArnError),
    /// Nothing like `:<creation timestamp>` after the consumer name.
    #[error("no \":<creation timestamp>\" after the consumer name")]
    NoCreationTimestamp,
    /// The consumer name breaks [`CONSUMER_NAME_RULE`].
    #[error("consumer name {0:?}: {CONSUMER_NAME_RULE}")]
    ConsumerName(String),
    /// The creation timestamp is not a number.
    #[error("creation timestamp {0:?} is not a number")]
    CreationTimestamp(String),
}

/// Validates a stream consumer ARN and extracts its parts; the error says what is wrong.
pub fn parse_consumer_arn(arn: &str) -> Result<ConsumerArn, ConsumerArnError> {
    let (stream_part, rest) = arn
        .split_once("/consumer/")
        .ok_or(ConsumerArnError::NoConsumerPart)?;
    let stream = parse_stream_arn(stream_part)?;
    let (name, created) = rest
        .rsplit_once(':')
        .ok_or(ConsumerArnError::NoCreationTimestamp)?;
    if !is_valid_consumer_name(name) {
        return Err(ConsumerArnError::ConsumerName(name.to_string()));
    }
    if created.is_empty() || !created.chars().all(|c| c.is_ascii_digit()) {
        return Err(ConsumerArnError::CreationTimestamp(created.to_string()));
    }
    Ok(ConsumerArn {
        stream,
        consumer_name: name.to_string(),
    })
}

/// True for something shaped like an AWS region name (`us-east-1`): non-empty, of a-z, 0-9
/// and `-`.
pub fn is_valid_region(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The parts of a Kinesis stream ARN, `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamArn {
    /// AWS partition (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub partition: String,
    /// Region of the stream.
    pub region: String,
    /// 12-digit account id.
    pub account_id: String,
    /// The stream name.
    pub stream_name: String,
}

/// Which part of a stream ARN is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamArnError {
    /// Not six `:`-separated parts.
    #[error("not an ARN: expected six ':'-separated parts")]
    NotSixParts,
    /// It does not start with `arn:`.
    #[error("not an ARN: must start with \"arn:\"")]
    NoArnPrefix,
    /// The partition is empty or has other characters than a-z and `-`.
    #[error("invalid partition {0:?}")]
    Partition(String),
    /// The service is not `kinesis`.
    #[error("service is {0:?}, not \"kinesis\"")]
    Service(String),
    /// The region is empty or has other characters than a-z, 0-9 and `-`.
    #[error("invalid region {0:?}")]
    Region(String),
    /// The account id is not 12 digits.
    #[error("account id {0:?} is not 12 digits")]
    Account(String),
    /// The resource is not `stream/<name>`.
    #[error("resource {0:?} is not stream/<name>")]
    Resource(String),
    /// The stream name breaks [`STREAM_NAME_RULE`].
    #[error("stream name {0:?} is not a valid Kinesis stream name")]
    StreamName(String),
}

/// Validates a Kinesis stream ARN like the Java KCL's `StreamIdentifier.validateArn` and
/// extracts its parts. The error says which part is wrong.
pub fn parse_stream_arn(arn: &str) -> Result<StreamArn, StreamArnError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return Err(StreamArnError::NotSixParts);
    };
    if *prefix != "arn" {
        return Err(StreamArnError::NoArnPrefix);
    }
    if partition.is_empty()
        || !partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
    {
        return Err(StreamArnError::Partition(partition.to_string()));
    }
    if *service != "kinesis" {
        return Err(StreamArnError::Service(service.to_string()));
    }
    if !is_valid_region(region) {
        return Err(StreamArnError::Region(region.to_string()));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(StreamArnError::Account(account.to_string()));
    }
    let Some(name) = resource.strip_prefix("stream/") else {
        return Err(StreamArnError::Resource(resource.to_string()));
    };
    if !is_valid_stream_name(name) {
        return Err(StreamArnError::StreamName(name.to_string()));
    }
    Ok(StreamArn {
        partition: partition.to_string(),
        region: region.to_string(),
        account_id: account.to_string(),
        stream_name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert!(is_valid_table_name("app") && !is_valid_table_name("ab"));
        assert!(!is_valid_table_name("bad name"));
        assert!(is_valid_stream_name("s") && !is_valid_stream_name(""));
        let arn =
            parse_stream_arn("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/real").unwrap();
        assert_eq!(arn.stream_name, "real");
        assert_eq!(arn.region, "cn-north-1");
        assert_eq!(
            parse_stream_arn("arn:aws:kinesis:us-east-1:1234:stream/x"),
            Err(StreamArnError::Account("1234".into()))
        );
        assert!(is_valid_consumer_name("my-app.v2") && !is_valid_consumer_name(""));
        let c = parse_consumer_arn(
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/app:1700000000",
        )
        .unwrap();
        assert_eq!(
            (c.stream.stream_name.as_str(), c.consumer_name.as_str()),
            ("orders", "app")
        );
        let orders = |arn: &str| parse_stream_arn(arn).unwrap();
        assert_eq!(
            c.stream_mismatch(&orders(
                "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
            )),
            None
        );
        for (stream, part) in [
            (
                "arn:aws:kinesis:us-east-1:210987654321:stream/orders",
                "account",
            ),
            (
                "arn:aws:kinesis:eu-west-1:123456789012:stream/orders",
                "region",
            ),
            (
                "arn:aws-cn:kinesis:us-east-1:123456789012:stream/orders",
                "partition",
            ),
            (
                "arn:aws:kinesis:us-east-1:123456789012:stream/other",
                "stream name",
            ),
        ] {
            assert_eq!(c.stream_mismatch(&orders(stream)), Some(part), "{stream}");
        }
        assert_eq!(
            parse_consumer_arn("arn:aws:kinesis:us-east-1:1:stream/orders/consumer/app:1"),
            Err(ConsumerArnError::Stream(StreamArnError::Account(
                "1".into()
            )))
        );
        for bad in [
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/app",
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/a b:1",
            "arn:aws:s3:us-east-1:123456789012:stream/orders/consumer/app:1",
        ] {
            assert!(parse_consumer_arn(bad).is_err(), "{bad}");
        }
    }
}
