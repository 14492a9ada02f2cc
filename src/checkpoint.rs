//! Checkpoints: where a shard's processing stands, as stored in the lease table.
//!
//! A checkpoint is either a sentinel (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END`,
//! stored literally, as the Java KCL does) or an [`ExtendedSequenceNumber`]: a Kinesis sequence
//! number plus the KPL sub-sequence number. Ordering follows the Java KCL:
//! `AT_TIMESTAMP < TRIM_HORIZON < LATEST < any sequence number < SHARD_END`; sequence numbers
//! compare as unbounded decimal integers, then by sub-sequence number.

use std::cmp::Ordering;
use std::fmt;

/// The literal stored for [`Checkpoint::TrimHorizon`].
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
/// The literal stored for [`Checkpoint::Latest`].
pub const LATEST: &str = "LATEST";
/// The literal stored for [`Checkpoint::AtTimestamp`].
pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
/// The literal stored for [`Checkpoint::ShardEnd`].
pub const SHARD_END: &str = "SHARD_END";

/// A Kinesis sequence number: a decimal number (Kinesis' have up to 129 digits), validated when made, so
/// a checkpoint at it cannot fail for its form.
///
/// Make one with `"4959…".parse()`, [`SequenceNumber::new`], `TryFrom<String>` /
/// `TryFrom<&str>`, or from an integer (`SequenceNumber::from(42u64)`). It reads as a `&str`
/// ([`as_str`](Self::as_str), `Deref`, `Display`) and compares as a number (`"0099" <
/// "100"`; leading zeros are kept as given but do not change equality).
#[derive(Clone)]
pub struct SequenceNumber(Digits);

/// The digits: as made (moved in, no copy), or shared, so that the user records of one KPL
/// aggregate, which all carry the aggregate's sequence number, share one copy of it.
#[derive(Clone)]
enum Digits {
    Owned(String),
    Shared(std::sync::Arc<str>),
}

impl Digits {
    fn as_str(&self) -> &str {
        match self {
            Digits::Owned(s) => s,
            Digits::Shared(s) => s,
        }
    }
}

/// A sequence number that is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}: expected decimal digits")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// `sequence_number`, if it is decimal digits (at least one; leading zeros are kept as
    /// given).
    pub fn new(sequence_number: impl Into<String>) -> Result<Self, InvalidSequenceNumber> {
        let s = sequence_number.into();
        if is_decimal(&s) {
            Ok(SequenceNumber(Digits::Owned(s)))
        } else {
            Err(InvalidSequenceNumber(s))
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The digits, as an owned `String`.
    pub fn into_string(self) -> String {
        match self.0 {
            Digits::Owned(s) => s,
            Digits::Shared(s) => s.to_string(),
        }
    }

    /// From now on, clones share one copy of the digits (for the many records that carry one
    /// sequence number: a KPL aggregate's user records).
    pub(crate) fn share(&mut self) {
        if let Digits::Owned(s) = &mut self.0 {
            self.0 = Digits::Shared(std::mem::take(s).into());
        }
    }

    /// The digits without leading zeros (`"0"` for zero): what equality and hashing use.
    fn significant(&self) -> &str {
        let t = self.as_str().trim_start_matches('0');
        if t.is_empty() {
            "0"
        } else {
            t
        }
    }
}

/// Decimal digits, at least one (the Java KCL's rule; Kinesis' are up to 129 digits).
fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl std::str::FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SequenceNumber::new(s)
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = InvalidSequenceNumber;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        SequenceNumber::new(s)
    }
}

impl TryFrom<&str> for SequenceNumber {
    type Error = InvalidSequenceNumber;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        SequenceNumber::new(s)
    }
}

impl From<u64> for SequenceNumber {
    fn from(n: u64) -> Self {
        SequenceNumber(Digits::Owned(n.to_string()))
    }
}

impl From<u128> for SequenceNumber {
    fn from(n: u128) -> Self {
        SequenceNumber(Digits::Owned(n.to_string()))
    }
}

impl From<SequenceNumber> for String {
    fn from(s: SequenceNumber) -> String {
        s.into_string()
    }
}

impl std::ops::Deref for SequenceNumber {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SequenceNumber {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl Eq for SequenceNumber {}

impl std::hash::Hash for SequenceNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_decimal(self.as_str(), other.as_str())
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for SequenceNumber {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SequenceNumber {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SequenceNumber {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// A Kinesis sequence number and a KPL sub-sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtendedSequenceNumber {
    sequence_number: SequenceNumber,
    sub_sequence_number: u64,
}

impl ExtendedSequenceNumber {
    /// A validated sequence number (decimal digits only; leading zeros are kept as given).
    pub fn new(
        sequence_number: impl Into<String>,
        sub_sequence_number: u64,
    ) -> Result<Self, InvalidSequenceNumber> {
        Ok(ExtendedSequenceNumber {
            sequence_number: SequenceNumber::new(sequence_number)?,
            sub_sequence_number,
        })
    }

    /// The position of sub-record `sub_sequence_number` of `sequence_number`.
    pub fn from_parts(sequence_number: SequenceNumber, sub_sequence_number: u64) -> Self {
        ExtendedSequenceNumber {
            sequence_number,
            sub_sequence_number,
        }
    }

    /// The Kinesis sequence number.
    pub fn sequence_number(&self) -> &str {
        self.sequence_number.as_str()
    }

    /// The Kinesis sequence number, as the validated type.
    pub fn sequence(&self) -> &SequenceNumber {
        &self.sequence_number
    }

    /// The KPL sub-sequence number (0 for records that were not aggregated).
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// How the position (`sequence_number`, `sub_sequence_number`) compares with this one,
    /// without building an [`ExtendedSequenceNumber`]; `None` when `sequence_number` is not
    /// decimal.
    pub(crate) fn position_cmp(
        &self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Option<Ordering> {
        if !is_decimal(sequence_number) {
            return None;
        }
        Some(
            cmp_decimal(sequence_number, self.sequence_number.as_str())
                .then(sub_sequence_number.cmp(&self.sub_sequence_number)),
        )
    }
}

fn cmp_decimal(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for ExtendedSequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence_number
            .cmp(&other.sequence_number)
            .then(self.sub_sequence_number.cmp(&other.sub_sequence_number))
    }
}

impl PartialOrd for ExtendedSequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence_number, self.sub_sequence_number)
    }
}

/// Where processing of a shard stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Start at the oldest record still retained.
    TrimHorizon,
    /// Start after the newest record at the time the iterator is created.
    Latest,
    /// Start at the configured timestamp (the timestamp itself is not stored, as in the Java KCL).
    AtTimestamp,
    /// Everything up to and including this record has been processed.
    Sequence(ExtendedSequenceNumber),
    /// The shard is closed and every record in it was processed.
    ShardEnd,
}

impl Checkpoint {
    /// A checkpoint at a sequence number (validated).
    pub fn sequence(
        sequence_number: impl Into<String>,
        sub_sequence_number: u64,
    ) -> Result<Self, InvalidSequenceNumber> {
        Ok(Checkpoint::Sequence(ExtendedSequenceNumber::new(
            sequence_number,
            sub_sequence_number,
        )?))
    }

    /// Parse the stored form: the `checkpoint` attribute and `checkpointSubSequenceNumber`.
    pub fn from_stored(
        value: &str,
        sub_sequence_number: u64,
    ) -> Result<Self, InvalidSequenceNumber> {
        Ok(match value {
            TRIM_HORIZON => Checkpoint::TrimHorizon,
            LATEST => Checkpoint::Latest,
            AT_TIMESTAMP => Checkpoint::AtTimestamp,
            SHARD_END => Checkpoint::ShardEnd,
            other => Checkpoint::sequence(other, sub_sequence_number)?,
        })
    }

    /// The stored form of the `checkpoint` attribute.
    pub fn stored_value(&self) -> &str {
        match self {
            Checkpoint::TrimHorizon => TRIM_HORIZON,
            Checkpoint::Latest => LATEST,
            Checkpoint::AtTimestamp => AT_TIMESTAMP,
            Checkpoint::ShardEnd => SHARD_END,
            Checkpoint::Sequence(esn) => esn.sequence_number(),
        }
    }

    /// The stored `checkpointSubSequenceNumber` (0 for sentinels).
    pub fn stored_sub_sequence_number(&self) -> u64 {
        match self {
            Checkpoint::Sequence(esn) => esn.sub_sequence_number(),
            _ => 0,
        }
    }

    /// True for [`Checkpoint::ShardEnd`].
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Checkpoint::ShardEnd)
    }

    /// True for the sentinels that mean "processing of this shard has not started"
    /// (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`).
    pub fn is_initial_position(&self) -> bool {
        matches!(
            self,
            Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp
        )
    }

    fn rank(&self) -> i8 {
        match self {
            Checkpoint::AtTimestamp => -3,
            Checkpoint::TrimHorizon => -2,
            Checkpoint::Latest => -1,
            Checkpoint::Sequence(_) => 0,
            Checkpoint::ShardEnd => 1,
        }
    }
}

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Checkpoint::Sequence(a), Checkpoint::Sequence(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::Sequence(esn) => esn.fmt(f),
            other => f.write_str(other.stored_value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str, sub: u64) -> Checkpoint {
        Checkpoint::sequence(s, sub).unwrap()
    }

    #[test]
    fn ordering_follows_the_java_kcl() {
        let mut v = vec![
            Checkpoint::ShardEnd,
            seq("10", 0),
            Checkpoint::Latest,
            seq("9", 5),
            Checkpoint::AtTimestamp,
            seq("10", 1),
            Checkpoint::TrimHorizon,
            seq(
                "49590338271490256608559692538361571095921575989136588801",
                0,
            ),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                Checkpoint::AtTimestamp,
                Checkpoint::TrimHorizon,
                Checkpoint::Latest,
                seq("9", 5),
                seq("10", 0),
                seq("10", 1),
                seq(
                    "49590338271490256608559692538361571095921575989136588801",
                    0
                ),
                Checkpoint::ShardEnd,
            ]
        );
    }

    #[test]
    fn numbers_compare_as_integers_not_strings() {
        assert!(seq("0099", 0) < seq("100", 0));
        assert_eq!(seq("0100", 0).cmp(&seq("100", 0)), Ordering::Equal);
    }

    #[test]
    fn stored_form_round_trips() {
        for c in [
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::AtTimestamp,
            Checkpoint::ShardEnd,
            seq("123", 4),
        ] {
            let back = Checkpoint::from_stored(c.stored_value(), c.stored_sub_sequence_number());
            assert_eq!(back.unwrap(), c);
        }
    }

    #[test]
    fn sequence_numbers_are_validated_when_made_and_compare_as_numbers() {
        for bad in ["", "12a", "-1", " 1", "1.0", "１"] {
            assert!(bad.parse::<SequenceNumber>().is_err(), "{bad:?}");
            assert!(SequenceNumber::try_from(bad).is_err(), "{bad:?}");
        }
        let a: SequenceNumber = "0099".parse().unwrap();
        let b = SequenceNumber::try_from("100".to_string()).unwrap();
        assert!(a < b);
        assert_eq!(SequenceNumber::from(100u64), b);
        assert_eq!(SequenceNumber::new("0100").unwrap(), b, "equal as numbers");
        assert_eq!(
            SequenceNumber::new("0100").unwrap().as_str(),
            "0100",
            "kept as given"
        );
        assert_eq!(b, "100");
        assert_eq!(b.len(), 3, "reads as a str");
        assert_eq!(format!("{b} {b:?}"), "100 \"100\"");
        assert!(SequenceNumber::new("9".repeat(129)).is_ok());
    }

    #[test]
    fn a_shared_sequence_number_is_the_same_number() {
        let mut a = SequenceNumber::new("0042").unwrap();
        let owned = a.clone();
        a.share();
        let b = a.clone();
        assert_eq!(
            b.as_str().as_ptr(),
            a.as_str().as_ptr(),
            "clones share the digits"
        );
        assert_eq!((a.as_str(), &b), ("0042", &owned));
        assert_eq!(a.cmp(&owned), Ordering::Equal);
        assert_eq!(format!("{b} {b:?}"), "0042 \"0042\"");
        assert_eq!(b.into_string(), "0042");
        assert_eq!(String::from(a), "0042");
    }

    #[test]
    fn rejects_non_numeric_sequence_numbers() {
        assert!(Checkpoint::from_stored("12a", 0).is_err());
        assert!(Checkpoint::from_stored("", 0).is_err());
        assert!(ExtendedSequenceNumber::new("-1", 0).is_err());
    }
}
