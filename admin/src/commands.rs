//! The commands, as functions returning reports (printed by [`crate::cli`] as a table or JSON).

use crate::error::AdminError;
use crate::position::{judge, show_checkpoint, Judgement, NextRecord, Target};
use crate::state::{classify, parent_key, why, State};
use crate::stream::{Lag, Stream};
use crate::table::Table;
use aws_smithy_types::DateTime;
use kinesis_client::lease::{HashKeyRange, Lease};
use kinesis_client::{Checkpoint, StreamIdentifier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Conditional writes of one lease before giving up (each after a fresh read).
pub const MAX_ATTEMPTS: u32 = 10;

/// A lease table, and the stream for the leases of a single-stream table.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The lease table.
    pub table: Table,
    /// Kinesis.
    pub kinesis: Stream,
    /// The stream of a single-stream application (`--stream`); multi-stream leases name theirs.
    pub stream: Option<String>,
}

/// One lease as `leases` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// `leaseKey`.
    pub key: String,
    /// The shard id.
    pub shard_id: String,
    /// The stream (`account:name:epoch`) of a multi-stream lease.
    pub stream: Option<String>,
    /// `leaseOwner`.
    pub owner: Option<String>,
    /// `checkpointOwner` (KCL 3.x hand-off).
    pub checkpoint_owner: Option<String>,
    /// `leaseCounter`.
    pub counter: u64,
    /// `checkpoint`.
    pub checkpoint: String,
    /// `checkpointSubSequenceNumber`.
    pub checkpoint_sub_sequence_number: u64,
    /// `pendingCheckpoint`, if any.
    pub pending_checkpoint: Option<String>,
    /// `parentShardId`.
    pub parent_shard_ids: Vec<String>,
    /// `childShardIds`.
    pub child_shard_ids: Vec<String>,
    /// What the lease is doing.
    pub state: State,
    /// Whether the counter moved while watched (`None`: not watched).
    pub counter_moved: Option<bool>,
    /// How far behind the checkpoint is (with stream access).
    pub behind: Option<Lag>,
    /// Why `behind` could not be read.
    pub behind_error: Option<String>,
}

/// A change `reset` or `import` made.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The lease.
    pub key: String,
    /// The checkpoint before.
    pub from: Option<String>,
    /// The checkpoint written.
    pub to: String,
    /// The owner the lease was taken from (it restarts from `to`, or another worker does).
    pub released_owner: Option<String>,
    /// The counter written (`None` for a lease created).
    pub counter: Option<u64>,
    /// Conditional writes it took.
    pub attempts: u32,
}

/// What `reset` or `import` did, lease by lease.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangeReport {
    /// Leases changed (or created).
    pub changed: Vec<Change>,
    /// Leases left alone, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Leases that could not be changed, with the error.
    pub failed: Vec<(String, String)>,
    /// Warnings for the operator.
    pub notes: Vec<String>,
}

/// What `delete-finished` or `forget-stream` found or did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    /// False for a dry run.
    pub acted: bool,
    /// Leases deleted (or to delete, in a dry run).
    pub deleted: Vec<String>,
    /// Leases kept, with the reason.
    pub kept: Vec<(String, String)>,
    /// Leases that could not be deleted, with the error.
    pub failed: Vec<(String, String)>,
    /// Warnings for the operator.
    pub notes: Vec<String>,
}

/// One lease of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedLease {
    /// `leaseKey`.
    pub key: String,
    /// The stream (`account:name:epoch`) of a multi-stream lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The shard id.
    pub shard_id: String,
    /// `checkpoint` as stored (a sequence number or a sentinel).
    pub checkpoint: String,
    /// `checkpointSubSequenceNumber`.
    #[serde(default)]
    pub checkpoint_sub_sequence_number: u64,
    /// `parentShardId`.
    #[serde(default)]
    pub parent_shard_ids: Vec<String>,
    /// `childShardIds`.
    #[serde(default)]
    pub child_shard_ids: Vec<String>,
    /// `startingHashKey` (decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_hash_key: Option<String>,
    /// `endingHashKey` (decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_hash_key: Option<String>,
}

/// The format `export` writes and `import` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// `kcl-admin-export/1`.
    pub format: String,
    /// The table exported.
    pub table: String,
    /// When (RFC 3339).
    pub exported_at: String,
    /// Every lease.
    pub leases: Vec<ExportedLease>,
}

/// The `format` of an export.
pub const EXPORT_FORMAT: &str = "kcl-admin-export/1";

impl ExportedLease {
    /// The export of `lease`.
    pub fn of(lease: &Lease) -> Self {
        ExportedLease {
            key: lease.key.clone(),
            stream: lease.multi_stream.as_ref().map(|m| m.stream.to_string()),
            shard_id: lease.shard_id().to_string(),
            checkpoint: lease.checkpoint.stored_value().to_string(),
            checkpoint_sub_sequence_number: lease.checkpoint.stored_sub_sequence_number(),
            parent_shard_ids: lease.parent_shard_ids.clone(),
            child_shard_ids: lease.child_shard_ids.clone(),
            starting_hash_key: lease.hash_key_range.map(|r| r.start.to_string()),
            ending_hash_key: lease.hash_key_range.map(|r| r.end.to_string()),
        }
    }

    /// The new, unowned lease it describes.
    pub fn to_lease(&self) -> Result<Lease, AdminError> {
        let bad = |what: String| AdminError::BadImport(format!("lease {:?}: {what}", self.key));
        let checkpoint =
            Checkpoint::from_stored(&self.checkpoint, self.checkpoint_sub_sequence_number)
                .map_err(|e| bad(e.to_string()))?;
        let mut lease = match &self.stream {
            Some(s) => {
                let stream: StreamIdentifier =
                    s.parse().map_err(|e| bad(format!("stream {s:?}: {e}")))?;
                let lease = Lease::for_stream(stream, self.shard_id.clone(), checkpoint);
                if lease.key != self.key {
                    return Err(bad(format!(
                        "the key does not match stream {s:?} and shard {:?}",
                        self.shard_id
                    )));
                }
                lease
            }
            None => Lease::new(self.key.clone(), checkpoint),
        };
        lease = lease.with_parents(self.parent_shard_ids.iter().cloned());
        lease.child_shard_ids = self.child_shard_ids.clone();
        if let (Some(s), Some(e)) = (&self.starting_hash_key, &self.ending_hash_key) {
            let parse = |v: &String| {
                v.parse::<u128>()
                    .map_err(|_| bad(format!("hash key {v:?} is not a 128-bit decimal")))
            };
            lease = lease.with_hash_key_range(HashKeyRange {
                start: parse(s)?,
                end: parse(e)?,
            });
        }
        Ok(lease)
    }
}

/// The lease `arg` names: its key, or its shard id when only one stream has it (`stream`
/// narrows a multi-stream table to one stream).
pub fn resolve<'a>(
    arg: &str,
    leases: &'a [Lease],
    stream: Option<&str>,
) -> Result<&'a Lease, AdminError> {
    if let Some(l) = leases.iter().find(|l| l.key == arg) {
        return Ok(l);
    }
    let matches: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.shard_id() == arg)
        .filter(|l| match (stream, &l.multi_stream) {
            (Some(s), Some(m)) => m.stream.name() == s || m.stream.to_string() == s,
            _ => true,
        })
        .collect();
    match matches.as_slice() {
        [] => Err(AdminError::NoLease(arg.to_string())),
        [one] => Ok(one),
        many => Err(AdminError::Ambiguous {
            shard: arg.to_string(),
            keys: many.iter().map(|l| l.key.clone()).collect(),
        }),
    }
}

fn now() -> DateTime {
    DateTime::from(std::time::SystemTime::now())
}

impl Admin {
    /// The stream name to read for `lease`: its own (multi-stream) or `--stream`.
    pub fn stream_of(&self, lease: &Lease) -> Option<String> {
        match &lease.multi_stream {
            Some(m) => Some(m.stream.name().to_string()),
            None => self.stream.clone(),
        }
    }

    /// Every lease, and, when `watch` is given, whether each one's counter stayed the same
    /// over that time (two scans `watch` apart).
    async fn watched(
        &self,
        watch: Option<Duration>,
    ) -> Result<(Vec<Lease>, BTreeMap<String, bool>), AdminError> {
        let first = self.table.leases().await?;
        let Some(w) = watch.filter(|w| !w.is_zero()) else {
            return Ok((first, BTreeMap::new()));
        };
        tokio::time::sleep(w).await;
        let second = self.table.leases().await?;
        let unchanged = second
            .iter()
            .map(|l| {
                let same = first
                    .iter()
                    .any(|f| f.key == l.key && f.counter == l.counter);
                (l.key.clone(), same)
            })
            .collect();
        Ok((second, unchanged))
    }

    /// `leases`: every lease with its state and, with stream access, how far behind it is.
    pub async fn leases(
        &self,
        watch: Option<Duration>,
        with_lag: bool,
    ) -> Result<Vec<LeaseView>, AdminError> {
        let (leases, unchanged) = self.watched(watch).await?;
        let mut views = Vec::with_capacity(leases.len());
        for l in &leases {
            let same = unchanged.get(&l.key).copied();
            let state = classify(l, &leases, watch.filter(|_| same == Some(true)));
            let (behind, behind_error) = match self.stream_of(l).filter(|_| with_lag) {
                Some(s) if !l.checkpoint.is_shard_end() => {
                    match self.kinesis.lag(&s, l.shard_id(), &l.checkpoint).await {
                        Ok(lag) => (lag, None),
                        Err(e) => (None, Some(e.to_string())),
                    }
                }
                _ => (None, None),
            };
            views.push(LeaseView {
                key: l.key.clone(),
                shard_id: l.shard_id().to_string(),
                stream: l.multi_stream.as_ref().map(|m| m.stream.to_string()),
                owner: l.owner.clone(),
                checkpoint_owner: l.checkpoint_owner.clone(),
                counter: l.counter,
                checkpoint: l.checkpoint.stored_value().to_string(),
                checkpoint_sub_sequence_number: l.checkpoint.stored_sub_sequence_number(),
                pending_checkpoint: l.pending_checkpoint.as_ref().map(show_checkpoint),
                parent_shard_ids: l.parent_shard_ids.clone(),
                child_shard_ids: l.child_shard_ids.clone(),
                state,
                counter_moved: same.map(|s| !s),
                behind,
                behind_error,
            });
        }
        Ok(views)
    }

    /// `why SHARD`: the reason in words.
    pub async fn why(&self, shard: &str, watch: Option<Duration>) -> Result<String, AdminError> {
        let (leases, unchanged) = self.watched(watch).await?;
        let lease = match resolve(shard, &leases, self.stream.as_deref()) {
            Ok(l) => Some(l),
            Err(AdminError::NoLease(_)) => None,
            Err(e) => return Err(e),
        };
        let in_stream = match (lease, &self.stream) {
            (None, Some(s)) => Some(
                self.kinesis
                    .shard_ids(s)
                    .await?
                    .iter()
                    .any(|id| id == shard),
            ),
            _ => None,
        };
        let same = lease.is_some_and(|l| unchanged.get(&l.key) == Some(&true));
        let mut text = why(
            shard,
            lease,
            &leases,
            watch.filter(|w| !w.is_zero()),
            same,
            in_stream,
        );
        if let Some(l) = lease.filter(|l| !l.checkpoint.is_shard_end()) {
            if let Some(s) = self.stream_of(l) {
                if let Ok(Some(lag)) = self.kinesis.lag(&s, l.shard_id(), &l.checkpoint).await {
                    text.push_str(&format!("; behind the tip: {}", lag.show()));
                }
            }
        }
        Ok(text)
    }

    /// Judge moving `lease` to `target`.
    async fn judge(&self, lease: &Lease, target: &Target) -> Result<Judgement, AdminError> {
        let next = match (target, self.stream_of(lease)) {
            (Target::AtTimestamp(Some(_)), Some(s)) => {
                self.kinesis
                    .next_record(&s, lease.shard_id(), &lease.checkpoint)
                    .await?
            }
            _ => NextRecord::Unknown,
        };
        Ok(judge(&lease.checkpoint, target, &next, now()))
    }

    /// `reset`: move the leases `shards` name (every unfinished lease with `all`) to `target`.
    /// Refused, with nothing written, when one of them would skip records, unless `yes`.
    pub async fn reset(
        &self,
        shards: &[String],
        all: bool,
        target: &Target,
        yes: bool,
    ) -> Result<ChangeReport, AdminError> {
        let leases = self.table.leases().await?;
        let mut report = ChangeReport::default();
        let mut chosen: Vec<Lease> = Vec::new();
        if all {
            // In a multi-stream table, --stream narrows --all to that stream.
            let in_scope = |l: &Lease| match (&self.stream, &l.multi_stream) {
                (Some(s), Some(m)) => m.stream.name() == s || m.stream.to_string() == *s,
                _ => true,
            };
            for l in leases.iter().filter(|l| in_scope(l)) {
                if l.checkpoint.is_shard_end() {
                    report
                        .skipped
                        .push((l.key.clone(), "finished (SHARD_END)".to_string()));
                } else {
                    chosen.push(l.clone());
                }
            }
        } else {
            for s in shards {
                let l = resolve(s, &leases, self.stream.as_deref())?;
                if !chosen.iter().any(|c| c.key == l.key) {
                    chosen.push(l.clone());
                }
            }
        }
        if chosen.is_empty() {
            return Err(AdminError::Usage(
                "no lease to reset: name shards or give --all".into(),
            ));
        }
        let mut refusals = Vec::new();
        for l in &chosen {
            if let Judgement::Unsafe(why) = self.judge(l, target).await? {
                refusals.push(format!("  {}: {why}", l.key));
            }
        }
        if !refusals.is_empty() && !yes {
            return Err(AdminError::Refused(refusals.join("\n")));
        }
        let mut sentinel = false;
        for l in chosen {
            // AT_TIMESTAMP=TIME with stream access: the checkpoint of the last record before
            // TIME, so the shard resumes at the first record from TIME on.
            let to = match (target, self.stream_of(&l)) {
                (Target::AtTimestamp(Some(t)), Some(s)) => {
                    match self.kinesis.checkpoint_before(&s, l.shard_id(), *t).await {
                        Ok(c) => c,
                        Err(e) => {
                            report.failed.push((l.key.clone(), e.to_string()));
                            continue;
                        }
                    }
                }
                _ => target.checkpoint(),
            };
            sentinel |= to == Checkpoint::AtTimestamp;
            match self.write_with_retries(l, &to, target, yes).await {
                Ok(Some(change)) => report.changed.push(change),
                Ok(None) => {}
                Err((key, e)) => report.failed.push((key, e.to_string())),
            }
        }
        if sentinel {
            report.notes.push(
                "the lease table stores AT_TIMESTAMP without a time (as the Java KCL does): \
                 workers start these shards at the AT_TIMESTAMP initial position they are \
                 configured with (a worker configured with another initial position starts at \
                 TRIM_HORIZON); give --stream (or use a multi-stream table) to reset to a time"
                    .to_string(),
            );
        }
        Ok(report)
    }

    /// Write `to` into `lease`, re-reading and retrying when a worker wrote first (at most
    /// [`MAX_ATTEMPTS`]); a re-read lease is judged again (`target`, unless `yes`).
    async fn write_with_retries(
        &self,
        mut lease: Lease,
        to: &Checkpoint,
        target: &Target,
        yes: bool,
    ) -> Result<Option<Change>, (String, AdminError)> {
        let key = lease.key.clone();
        let fail = |e| (key.clone(), e);
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                lease = match self.table.get(&key).await.map_err(fail)? {
                    Some(l) => l,
                    None => {
                        return Err(fail(AdminError::NoLease(key.clone())));
                    }
                };
                if !yes {
                    if let Judgement::Unsafe(why) =
                        self.judge(&lease, target).await.map_err(fail)?
                    {
                        return Err(fail(AdminError::Refused(format!(
                            "  {key} changed meanwhile: {why}"
                        ))));
                    }
                }
            }
            if self
                .table
                .write_checkpoint(&lease, to)
                .await
                .map_err(fail)?
            {
                return Ok(Some(Change {
                    key: key.clone(),
                    from: Some(show_checkpoint(&lease.checkpoint)),
                    to: show_checkpoint(to),
                    released_owner: lease.owner.clone(),
                    counter: Some(lease.counter + 1),
                    attempts: attempt,
                }));
            }
        }
        Err(fail(AdminError::GaveUp {
            key: key.clone(),
            attempts: MAX_ATTEMPTS,
        }))
    }

    /// Delete `chosen` (each conditionally on its counter, re-read and retried when it changed
    /// and `still` holds for the fresh lease).
    async fn delete_all(
        &self,
        chosen: Vec<Lease>,
        still: impl Fn(&Lease) -> Option<String>,
        report: &mut DeleteReport,
    ) {
        'leases: for mut lease in chosen {
            for attempt in 1..=MAX_ATTEMPTS {
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    match self.table.get(&lease.key).await {
                        Ok(Some(l)) => lease = l,
                        Ok(None) => {
                            report.deleted.push(lease.key.clone());
                            continue 'leases;
                        }
                        Err(e) => {
                            report.failed.push((lease.key.clone(), e.to_string()));
                            continue 'leases;
                        }
                    }
                    if let Some(reason) = still(&lease) {
                        report.kept.push((lease.key.clone(), reason));
                        continue 'leases;
                    }
                }
                match self.table.delete_if_unchanged(&lease).await {
                    Ok(true) => {
                        report.deleted.push(lease.key.clone());
                        continue 'leases;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        report.failed.push((lease.key.clone(), e.to_string()));
                        continue 'leases;
                    }
                }
            }
            let e = AdminError::GaveUp {
                key: lease.key.clone(),
                attempts: MAX_ATTEMPTS,
            };
            report.failed.push((lease.key.clone(), e.to_string()));
        }
    }

    /// `delete-finished`: delete the `SHARD_END` leases all of whose children have leases
    /// (a dry run unless `yes`).
    pub async fn delete_finished(&self, yes: bool) -> Result<DeleteReport, AdminError> {
        let leases = self.table.leases().await?;
        let keep_reason = |l: &Lease, all: &[Lease]| -> Option<String> {
            if !l.checkpoint.is_shard_end() {
                return Some(format!(
                    "not finished (checkpoint {})",
                    show_checkpoint(&l.checkpoint)
                ));
            }
            if l.child_shard_ids.is_empty() {
                return Some(
                    "finished, but its children are not recorded (childShardIds): kept".into(),
                );
            }
            let missing: Vec<&String> = l
                .child_shard_ids
                .iter()
                .filter(|c| {
                    let key = parent_key(l, c);
                    !all.iter().any(|x| x.key == key)
                })
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "finished, but child {} has no lease yet",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        };
        let mut report = DeleteReport {
            acted: yes,
            ..Default::default()
        };
        let mut chosen = Vec::new();
        for l in &leases {
            match keep_reason(l, &leases) {
                Some(r) if l.checkpoint.is_shard_end() => report.kept.push((l.key.clone(), r)),
                Some(_) => {}
                None => chosen.push(l.clone()),
            }
        }
        if !yes {
            report.deleted = chosen.iter().map(|l| l.key.clone()).collect();
            return Ok(report);
        }
        let snapshot = leases.clone();
        self.delete_all(chosen, |l| keep_reason(l, &snapshot), &mut report)
            .await;
        Ok(report)
    }

    /// `forget-stream STREAM`: delete every lease of `stream` (its name or `account:name:epoch`)
    /// from a multi-stream table (a dry run unless `yes`).
    pub async fn forget_stream(&self, stream: &str, yes: bool) -> Result<DeleteReport, AdminError> {
        let leases = self.table.leases().await?;
        let of_stream = |l: &Lease| {
            l.multi_stream
                .as_ref()
                .is_some_and(|m| m.stream.name() == stream || m.stream.to_string() == stream)
        };
        let chosen: Vec<Lease> = leases.iter().filter(|l| of_stream(l)).cloned().collect();
        if chosen.is_empty() {
            let streams: std::collections::BTreeSet<String> = leases
                .iter()
                .filter_map(|l| l.multi_stream.as_ref().map(|m| m.stream.to_string()))
                .collect();
            return Err(if streams.is_empty() {
                AdminError::Usage(format!(
                    "table {} has no multi-stream leases: forget-stream is for multi-stream \
                     applications",
                    self.table.name()
                ))
            } else {
                AdminError::Usage(format!(
                    "no leases of stream {stream:?}; the table's streams are: {}",
                    streams.into_iter().collect::<Vec<_>>().join(", ")
                ))
            });
        }
        let mut report = DeleteReport {
            acted: yes,
            notes: vec![format!(
                "workers that still list {stream} among their streams create its leases again; \
                 remove it from their stream list first"
            )],
            ..Default::default()
        };
        if !yes {
            report.deleted = chosen.iter().map(|l| l.key.clone()).collect();
            return Ok(report);
        }
        self.delete_all(chosen, |_| None, &mut report).await;
        Ok(report)
    }

    /// `export`: every lease's checkpoint, sub-sequence number, parents, children and hash range.
    pub async fn export(&self) -> Result<Export, AdminError> {
        let leases = self.table.leases().await?;
        Ok(Export {
            format: EXPORT_FORMAT.to_string(),
            table: self.table.name().to_string(),
            exported_at: crate::position::fmt_time(&now()),
            leases: leases.iter().map(ExportedLease::of).collect(),
        })
    }

    /// `import`: create the exported leases (unowned, at their checkpoints). Refused, with
    /// nothing written, when some exist, unless `yes`: their checkpoints are then overwritten as
    /// `reset` does (conditionally on the counter; the owner lets go).
    pub async fn import(&self, export: &Export, yes: bool) -> Result<ChangeReport, AdminError> {
        if export.format != EXPORT_FORMAT {
            return Err(AdminError::BadImport(format!(
                "format {:?}, expected {EXPORT_FORMAT:?}",
                export.format
            )));
        }
        let wanted = export
            .leases
            .iter()
            .map(ExportedLease::to_lease)
            .collect::<Result<Vec<_>, _>>()?;
        let existing = match self.table.leases().await {
            Err(AdminError::NoTable { .. }) => {
                self.table.create_if_missing().await?;
                Vec::new()
            }
            other => other?,
        };
        let clashes: Vec<String> = wanted
            .iter()
            .filter_map(|w| existing.iter().find(|e| e.key == w.key))
            .map(|e| {
                format!(
                    "  {} exists (checkpoint {}, owner {})",
                    e.key,
                    show_checkpoint(&e.checkpoint),
                    e.owner.as_deref().unwrap_or("none")
                )
            })
            .collect();
        if !clashes.is_empty() && !yes {
            return Err(AdminError::Refused(format!(
                "{} of the {} leases exist in table {}; importing would overwrite their checkpoints:\n{}",
                clashes.len(),
                wanted.len(),
                self.table.name(),
                clashes.join("\n")
            )));
        }
        let mut report = ChangeReport::default();
        for lease in wanted {
            let created = match self.table.create(&lease).await {
                Ok(c) => c,
                Err(e) => {
                    report.failed.push((lease.key.clone(), e.to_string()));
                    continue;
                }
            };
            if created {
                report.changed.push(Change {
                    key: lease.key.clone(),
                    from: None,
                    to: show_checkpoint(&lease.checkpoint),
                    released_owner: None,
                    counter: None,
                    attempts: 1,
                });
                continue;
            }
            if !yes {
                report.failed.push((
                    lease.key.clone(),
                    "created meanwhile by a worker; not overwritten (run again with --yes)".into(),
                ));
                continue;
            }
            let current = match self.table.get(&lease.key).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    report
                        .failed
                        .push((lease.key.clone(), "deleted meanwhile; run again".into()));
                    continue;
                }
                Err(e) => {
                    report.failed.push((lease.key.clone(), e.to_string()));
                    continue;
                }
            };
            let target = Target::TrimHorizon; // not judged: --yes was given
            match self
                .write_with_retries(current, &lease.checkpoint, &target, true)
                .await
            {
                Ok(Some(c)) => report.changed.push(c),
                Ok(None) => {}
                Err((k, e)) => report.failed.push((k, e.to_string())),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_round_trips_to_the_same_leases() {
        let s = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
        let mut multi = Lease::for_stream(s, "shardId-2", Checkpoint::sequence("77", 3).unwrap())
            .with_parents(["shardId-0", "shardId-1"])
            .with_hash_key_range(HashKeyRange {
                start: 0,
                end: u128::MAX,
            });
        multi.owner = Some("w1".into());
        multi.counter = 9;
        let mut single = Lease::new("shardId-5", Checkpoint::ShardEnd);
        single.child_shard_ids = vec!["shardId-6".into()];
        for lease in [multi, single] {
            let e = ExportedLease::of(&lease);
            let json = serde_json::to_string(&e).unwrap();
            let back: ExportedLease = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e);
            let imported = back.to_lease().unwrap();
            // Imported leases are new: unowned, counter 0; the position is the same.
            let mut expected = lease.clone();
            expected.owner = None;
            expected.counter = 0;
            assert_eq!(imported, expected);
        }
    }

    #[test]
    fn a_bad_export_is_refused_with_the_lease_named() {
        let mut e = ExportedLease::of(&Lease::new("shardId-1", Checkpoint::Latest));
        e.checkpoint = "yesterday".into();
        let err = e.to_lease().unwrap_err().to_string();
        assert!(err.contains("shardId-1"), "{err}");
        let mut e = ExportedLease::of(&Lease::new("shardId-1", Checkpoint::Latest));
        e.stream = Some("123456789012:orders:1600000000".into());
        let err = e.to_lease().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn shards_resolve_by_key_or_by_shard_id() {
        let a = StreamIdentifier::multi("123456789012", "a", 1).unwrap();
        let b = StreamIdentifier::multi("123456789012", "b", 1).unwrap();
        let leases = vec![
            Lease::for_stream(a.clone(), "shardId-0", Checkpoint::Latest),
            Lease::for_stream(b, "shardId-0", Checkpoint::Latest),
            Lease::for_stream(a, "shardId-1", Checkpoint::Latest),
        ];
        assert_eq!(
            resolve("123456789012:a:1:shardId-0", &leases, None)
                .unwrap()
                .key,
            "123456789012:a:1:shardId-0"
        );
        assert_eq!(
            resolve("shardId-1", &leases, None).unwrap().key,
            "123456789012:a:1:shardId-1"
        );
        assert!(matches!(
            resolve("shardId-0", &leases, None),
            Err(AdminError::Ambiguous { keys, .. }) if keys.len() == 2
        ));
        assert_eq!(
            resolve("shardId-0", &leases, Some("b")).unwrap().key,
            "123456789012:b:1:shardId-0"
        );
        assert!(matches!(
            resolve("shardId-9", &leases, None),
            Err(AdminError::NoLease(_))
        ));
    }
}
