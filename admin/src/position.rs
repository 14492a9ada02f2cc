//! Reset targets (`--to`) and the rule that refuses a reset that would skip records.

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use kinesis_client::checkpoint::ExtendedSequenceNumber;
use kinesis_client::Checkpoint;
use std::fmt;
use std::str::FromStr;

/// Where `reset --to` moves a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `TRIM_HORIZON`: the oldest record the stream keeps.
    TrimHorizon,
    /// `LATEST`: the tip of the shard (skips everything not yet processed).
    Latest,
    /// `AT_TIMESTAMP[=TIME]`: with `TIME` and stream access, the checkpoint of the last record
    /// before `TIME` (see `Stream::checkpoint_before`); otherwise the `AT_TIMESTAMP` sentinel,
    /// as the Java KCL stores it, which has no room for a time: workers start such a lease at
    /// the timestamp of their own configuration (`initialPositionInStreamExtended`). `TIME`
    /// also judges whether records would be skipped.
    AtTimestamp(Option<DateTime>),
    /// `SEQUENCE=NUMBER[/SUB]`: a checkpoint at that record (processing resumes after it).
    Sequence(ExtendedSequenceNumber),
}

impl Target {
    /// The checkpoint written for this target.
    pub fn checkpoint(&self) -> Checkpoint {
        match self {
            Target::TrimHorizon => Checkpoint::TrimHorizon,
            Target::Latest => Checkpoint::Latest,
            Target::AtTimestamp(_) => Checkpoint::AtTimestamp,
            Target::Sequence(esn) => Checkpoint::Sequence(esn.clone()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::TrimHorizon => f.write_str("TRIM_HORIZON"),
            Target::Latest => f.write_str("LATEST"),
            Target::AtTimestamp(None) => f.write_str("AT_TIMESTAMP"),
            Target::AtTimestamp(Some(t)) => write!(f, "AT_TIMESTAMP={}", fmt_time(t)),
            Target::Sequence(esn) => write!(f, "SEQUENCE={}", show_esn(esn)),
        }
    }
}

/// A time as RFC 3339.
pub fn fmt_time(t: &DateTime) -> String {
    t.fmt(Format::DateTime)
        .unwrap_or_else(|_| t.secs().to_string())
}

fn show_esn(esn: &ExtendedSequenceNumber) -> String {
    if esn.sub_sequence_number() == 0 {
        esn.sequence_number().to_string()
    } else {
        format!("{}/{}", esn.sequence_number(), esn.sub_sequence_number())
    }
}

/// A checkpoint as people read it: the sentinel, or the sequence number with `/SUB` when the
/// sub-sequence number is not 0.
pub fn show_checkpoint(c: &Checkpoint) -> String {
    match c {
        Checkpoint::Sequence(esn) => show_esn(esn),
        other => other.stored_value().to_string(),
    }
}

/// Parse a time: RFC 3339 (`2024-05-01T12:00:00Z`) or seconds since the epoch.
pub fn parse_time(s: &str) -> Result<DateTime, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(DateTime::from_secs_f64(secs));
        }
    }
    DateTime::from_str(s, Format::DateTime).map_err(|_| {
        format!("{s:?} is not a time: give RFC 3339 (2024-05-01T12:00:00Z) or epoch seconds")
    })
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        match (name.to_ascii_uppercase().as_str(), value) {
            ("TRIM_HORIZON", None) => Ok(Target::TrimHorizon),
            ("LATEST", None) => Ok(Target::Latest),
            ("AT_TIMESTAMP", None) => Ok(Target::AtTimestamp(None)),
            ("AT_TIMESTAMP", Some(t)) => Ok(Target::AtTimestamp(Some(parse_time(t)?))),
            ("SEQUENCE", Some(v)) => {
                let (seq, sub) = match v.split_once('/') {
                    Some((seq, sub)) => (
                        seq,
                        sub.parse::<u64>().map_err(|_| {
                            format!("{sub:?} is not a sub-sequence number (a whole number)")
                        })?,
                    ),
                    None => (v, 0),
                };
                ExtendedSequenceNumber::new(seq, sub)
                    .map(Target::Sequence)
                    .map_err(|e| format!("SEQUENCE={v}: {e}"))
            }
            _ => Err(format!(
                "--to {s:?}: expected TRIM_HORIZON, LATEST, AT_TIMESTAMP[=TIME] or SEQUENCE=NUMBER[/SUB]"
            )),
        }
    }
}

/// What the stream says about the records after a lease's checkpoint (for `AT_TIMESTAMP`).
#[derive(Debug, Clone, PartialEq)]
pub enum NextRecord {
    /// The stream was not read (no stream access).
    Unknown,
    /// No record after the checkpoint: the lease is at the tip.
    None,
    /// The first record after the checkpoint arrived at this time.
    ArrivedAt(DateTime),
}

/// Whether a reset may go ahead without `--yes`.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// The lease is already there.
    Unchanged,
    /// Nothing is skipped: processing goes back (or stays) and records are processed again.
    Safe,
    /// Records would be skipped (or it cannot be told): the reason.
    Unsafe(String),
}

/// Judge moving a lease from `current` to `target`. `next` is what the stream says about the
/// first record after `current` (used for `AT_TIMESTAMP`); `now` is the current time.
pub fn judge(current: &Checkpoint, target: &Target, next: &NextRecord, now: DateTime) -> Judgement {
    let to = target.checkpoint();
    if current.is_shard_end() {
        return Judgement::Unsafe(format!(
            "the shard has ended (checkpoint SHARD_END) and its child shards may be processed \
             already: moving it to {target} processes the parent again after its children"
        ));
    }
    if *current == to && !matches!(target, Target::AtTimestamp(_)) {
        return Judgement::Unchanged;
    }
    let cur = show_checkpoint(current);
    match target {
        Target::TrimHorizon => Judgement::Safe,
        Target::Latest => Judgement::Unsafe(format!(
            "LATEST skips every record between the checkpoint {cur} and the tip of the shard"
        )),
        Target::Sequence(_) => match current {
            Checkpoint::Sequence(_) if to < *current => Judgement::Safe,
            Checkpoint::Sequence(_) => Judgement::Unsafe(format!(
                "it moves the checkpoint forward, from {cur} to {}: the records in between are skipped",
                show_checkpoint(&to)
            )),
            _ => Judgement::Unsafe(format!(
                "the lease is at {cur} (no record checkpointed yet): a sequence number skips the \
                 records before it"
            )),
        },
        Target::AtTimestamp(None) => Judgement::Unsafe(
            "AT_TIMESTAMP without a time: the workers start at the timestamp they are configured \
             with, so kcl-admin cannot tell what would be skipped (give AT_TIMESTAMP=TIME)"
                .to_string(),
        ),
        Target::AtTimestamp(Some(t)) => {
            if matches!(current, Checkpoint::Latest | Checkpoint::AtTimestamp) {
                return Judgement::Unsafe(format!(
                    "the lease is at {cur}: kcl-admin cannot tell where that is in the stream"
                ));
            }
            match next {
                NextRecord::Unknown => Judgement::Unsafe(
                    "kcl-admin cannot tell whether records before that time are still \
                     unprocessed without reading the stream (give --stream)"
                        .to_string(),
                ),
                NextRecord::ArrivedAt(a) if a < t => Judgement::Unsafe(format!(
                    "the first unprocessed record arrived at {}, before {}: the records in between \
                     are skipped",
                    fmt_time(a),
                    fmt_time(t)
                )),
                NextRecord::None if *t > now => Judgement::Unsafe(format!(
                    "{} is in the future: records arriving until then are skipped",
                    fmt_time(t)
                )),
                _ => Judgement::Safe,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str, sub: u64) -> Checkpoint {
        Checkpoint::Sequence(ExtendedSequenceNumber::new(s, sub).unwrap())
    }

    fn now() -> DateTime {
        DateTime::from_secs(2_000_000_000)
    }

    #[test]
    fn parses_every_target() {
        assert_eq!(
            "TRIM_HORIZON".parse::<Target>().unwrap(),
            Target::TrimHorizon
        );
        assert_eq!("latest".parse::<Target>().unwrap(), Target::Latest);
        assert_eq!(
            "AT_TIMESTAMP".parse::<Target>().unwrap(),
            Target::AtTimestamp(None)
        );
        assert_eq!(
            "AT_TIMESTAMP=1700000000".parse::<Target>().unwrap(),
            Target::AtTimestamp(Some(DateTime::from_secs(1_700_000_000)))
        );
        assert_eq!(
            "AT_TIMESTAMP=2023-11-14T22:13:20Z"
                .parse::<Target>()
                .unwrap(),
            Target::AtTimestamp(Some(DateTime::from_secs(1_700_000_000)))
        );
        let t: Target = "SEQUENCE=49590338271490256608559692538361571095921575989136588898/3"
            .parse()
            .unwrap();
        assert_eq!(
            t.checkpoint(),
            seq(
                "49590338271490256608559692538361571095921575989136588898",
                3
            )
        );
        assert_eq!(
            "SEQUENCE=123".parse::<Target>().unwrap().checkpoint(),
            seq("123", 0)
        );
        assert!("SEQUENCE=abc".parse::<Target>().is_err());
        assert!("SEQUENCE=1/x".parse::<Target>().is_err());
        assert!("SEQUENCE".parse::<Target>().is_err());
        assert!("AT_TIMESTAMP=yesterday".parse::<Target>().is_err());
        assert!("SHARD_END".parse::<Target>().is_err());
        assert_eq!(
            "SEQUENCE=12/3".parse::<Target>().unwrap().to_string(),
            "SEQUENCE=12/3"
        );
    }

    #[test]
    fn going_back_is_safe_and_forward_is_refused() {
        let n = NextRecord::Unknown;
        assert_eq!(
            judge(&seq("500", 0), &Target::TrimHorizon, &n, now()),
            Judgement::Safe
        );
        assert_eq!(
            judge(&seq("500", 0), &"SEQUENCE=400".parse().unwrap(), &n, now()),
            Judgement::Safe
        );
        // The same sequence number, an earlier sub-sequence: back within an aggregate.
        assert_eq!(
            judge(
                &seq("500", 4),
                &"SEQUENCE=500/2".parse().unwrap(),
                &n,
                now()
            ),
            Judgement::Safe
        );
        assert!(matches!(
            judge(&seq("500", 0), &"SEQUENCE=600".parse().unwrap(), &n, now()),
            Judgement::Unsafe(r) if r.contains("forward, from 500 to 600")
        ));
        assert!(matches!(
            judge(
                &seq("500", 0),
                &"SEQUENCE=500/1".parse().unwrap(),
                &n,
                now()
            ),
            Judgement::Unsafe(_)
        ));
        assert!(matches!(
            judge(&seq("500", 0), &Target::Latest, &n, now()),
            Judgement::Unsafe(r) if r.contains("LATEST skips")
        ));
        assert!(matches!(
            judge(
                &Checkpoint::TrimHorizon,
                &"SEQUENCE=5".parse().unwrap(),
                &n,
                now()
            ),
            Judgement::Unsafe(_)
        ));
        assert_eq!(
            judge(&seq("500", 0), &"SEQUENCE=500".parse().unwrap(), &n, now()),
            Judgement::Unchanged
        );
        assert_eq!(
            judge(&Checkpoint::Latest, &Target::Latest, &n, now()),
            Judgement::Unchanged
        );
        assert!(matches!(
            judge(&Checkpoint::ShardEnd, &Target::TrimHorizon, &n, now()),
            Judgement::Unsafe(r) if r.contains("SHARD_END")
        ));
    }

    #[test]
    fn a_timestamp_is_judged_by_the_first_unprocessed_record() {
        let t = |s| Target::AtTimestamp(Some(DateTime::from_secs(s)));
        let cur = seq("500", 0);
        let arrived = NextRecord::ArrivedAt(DateTime::from_secs(1_000));
        assert_eq!(judge(&cur, &t(900), &arrived, now()), Judgement::Safe);
        assert_eq!(judge(&cur, &t(1_000), &arrived, now()), Judgement::Safe);
        assert!(matches!(
            judge(&cur, &t(1_001), &arrived, now()),
            Judgement::Unsafe(_)
        ));
        assert_eq!(
            judge(&cur, &t(1_001), &NextRecord::None, now()),
            Judgement::Safe
        );
        assert!(matches!(
            judge(&cur, &t(3_000_000_000), &NextRecord::None, now()),
            Judgement::Unsafe(r) if r.contains("future")
        ));
        assert!(matches!(
            judge(&cur, &t(900), &NextRecord::Unknown, now()),
            Judgement::Unsafe(r) if r.contains("--stream")
        ));
        assert!(matches!(
            judge(&cur, &Target::AtTimestamp(None), &arrived, now()),
            Judgement::Unsafe(_)
        ));
        assert!(matches!(
            judge(&Checkpoint::Latest, &t(900), &arrived, now()),
            Judgement::Unsafe(_)
        ));
    }
}
