//! The multi-stream keys (our extension; the Java MultiLangDaemon consumes one stream):
//!
//! * `streamNames = orders, refunds`: the streams, comma-separated. An entry may also be a
//!   full Java KCL stream identifier, `account:name:creationEpoch`, which is used as written
//!   (to share a lease table with a Java multi-stream application that built its identifiers
//!   itself); for a plain name the daemon looks the account and the creation time up
//!   (DescribeStreamSummary) when it starts and every minute after.
//! * `streamArns = arn:aws:kinesis:…:stream/orders, …`: the same by ARN (another account's
//!   streams); both keys may be set together.
//! * `initialPositionInStream.<stream name> = LATEST | TRIM_HORIZON`, or
//!   `initialPositionInStreamExtended.<stream name> = <epoch seconds>`: one stream's initial
//!   position (default: `initialPositionInStream`).
//! * `formerStreamsLeasesDeletionWaitSeconds = N`: delete the leases of a stream no longer in
//!   the file (or no longer existing) once it has been out for `N` seconds (the Java KCL's
//!   `AutoDetectionAndDeferredDeletionStrategy`). Unset: they are kept (and never processed).

use super::{invalid, SettingsError};
use crate::properties::Entry;
use kinesis_client::validation::{is_valid_stream_name, parse_stream_arn, STREAM_NAME_RULE};
use kinesis_client::{InitialPosition, StreamIdentifier};
use std::collections::BTreeMap;
use std::time::Duration;

/// One stream of a multi-stream daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSetting {
    /// The stream's name.
    pub name: String,
    /// Its ARN, when given in `streamArns`.
    pub arn: Option<String>,
    /// Its identifier, when given in full in `streamNames` (else looked up).
    pub identifier: Option<StreamIdentifier>,
    /// `initialPositionInStream.<name>` / `initialPositionInStreamExtended.<name>`.
    pub initial_position: Option<InitialPosition>,
}

/// The multi-stream keys as they are read.
#[derive(Debug, Default)]
pub(super) struct MultiStreamKeys<'a> {
    pub(super) names: Option<&'a Entry>,
    pub(super) arns: Option<&'a Entry>,
    /// Stream name → its position and the entry that set it.
    pub(super) positions: BTreeMap<String, (InitialPosition, &'a Entry)>,
    pub(super) deletion_wait: Option<Duration>,
}

/// `initialPositionInStream.` and `initialPositionInStreamExtended.`.
const POSITION: &str = "initialPositionInStream.";
const POSITION_EXTENDED: &str = "initialPositionInStreamExtended.";

impl<'a> MultiStreamKeys<'a> {
    /// Read `e` if it is a multi-stream key; `Ok(false)` if it is not one.
    pub(super) fn apply(&mut self, e: &'a Entry) -> Result<bool, SettingsError> {
        let key = e.key.as_str();
        let value = e.value.trim();
        if key == "streamNames" {
            self.names = Some(e);
        } else if key == "streamArns" {
            self.arns = Some(e);
        } else if key == "formerStreamsLeasesDeletionWaitSeconds" {
            let secs: u64 = value
                .parse()
                .map_err(|_| invalid(e, "expected a number of seconds"))?;
            self.deletion_wait = Some(Duration::from_secs(secs));
        } else if let Some(name) = key.strip_prefix(POSITION_EXTENDED) {
            let secs: u64 = value.parse().map_err(|_| {
                invalid(
                    e,
                    "expected a time in whole seconds since the Unix epoch (AT_TIMESTAMP)",
                )
            })?;
            self.position(name, InitialPosition::at_epoch_seconds(secs), e);
        } else if let Some(name) = key.strip_prefix(POSITION) {
            let position = match value {
                "LATEST" => InitialPosition::Latest,
                "TRIM_HORIZON" => InitialPosition::TrimHorizon,
                _ => {
                    return Err(invalid(
                        e,
                        format!("expected LATEST or TRIM_HORIZON (AT_TIMESTAMP: set {POSITION_EXTENDED}{name} = <epoch seconds>)"),
                    ))
                }
            };
            self.position(name, position, e);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The extended key wins over the plain one, whatever their order.
    fn position(&mut self, name: &str, position: InitialPosition, e: &'a Entry) {
        let extended = e.key.starts_with(POSITION_EXTENDED);
        let keep_old = self
            .positions
            .get(name)
            .is_some_and(|(_, old)| old.key.starts_with(POSITION_EXTENDED) && !extended);
        if !keep_old {
            self.positions.insert(name.to_string(), (position, e));
        }
    }

    /// Whether the daemon is multi-stream.
    pub(super) fn is_set(&self) -> bool {
        self.names.is_some() || self.arns.is_some()
    }

    /// The streams, validated: every name valid and listed once, every per-stream position
    /// naming a listed stream.
    pub(super) fn streams(&self) -> Result<Vec<StreamSetting>, SettingsError> {
        let mut out: Vec<StreamSetting> = Vec::new();
        let mut lines: BTreeMap<String, &Entry> = BTreeMap::new();
        let mut add = |s: StreamSetting, e: &'a Entry| -> Result<(), SettingsError> {
            if let Some(first) = lines.insert(s.name.clone(), e) {
                return Err(invalid(
                    e,
                    format!(
                        "stream {} is listed twice (also on line {})",
                        s.name, first.line
                    ),
                ));
            }
            out.push(s);
            Ok(())
        };
        if let Some(e) = self.names {
            for item in list(e)? {
                let setting = if item.contains(':') {
                    let id: StreamIdentifier = item.parse().map_err(|why| {
                        invalid(e, format!("{item:?} is neither a stream name nor a stream identifier account:name:creationEpoch ({why})"))
                    })?;
                    if !id.is_multi_stream() {
                        return Err(invalid(
                            e,
                            format!("{item:?}: a stream identifier is account:name:creationEpoch"),
                        ));
                    }
                    StreamSetting {
                        name: id.name().to_string(),
                        arn: None,
                        identifier: Some(id),
                        initial_position: None,
                    }
                } else if is_valid_stream_name(item) {
                    StreamSetting {
                        name: item.to_string(),
                        arn: None,
                        identifier: None,
                        initial_position: None,
                    }
                } else {
                    return Err(invalid(e, format!("{item:?}: {STREAM_NAME_RULE}")));
                };
                add(setting, e)?;
            }
        }
        if let Some(e) = self.arns {
            for item in list(e)? {
                let arn = parse_stream_arn(item).map_err(|why| {
                    invalid(e, format!("{item:?}: {why} (expected arn:aws:kinesis:<region>:<12-digit account>:stream/<name>)"))
                })?;
                add(
                    StreamSetting {
                        name: arn.stream_name,
                        arn: Some(item.to_string()),
                        identifier: None,
                        initial_position: None,
                    },
                    e,
                )?;
            }
        }
        for (name, (position, e)) in &self.positions {
            match out.iter_mut().find(|s| s.name == *name) {
                Some(s) => s.initial_position = Some(*position),
                None => {
                    return Err(invalid(
                        e,
                        format!("{name} is not a stream of streamNames or streamArns"),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// The comma-separated items of `e`, trimmed; at least one, none empty.
fn list(e: &Entry) -> Result<Vec<&str>, SettingsError> {
    let items: Vec<&str> = e.value.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(invalid(
            e,
            "expected a comma-separated list of streams, without empty items",
        ));
    }
    Ok(items)
}
