//! What a worker sees of itself and of its fleet, for people: the lease table as its last scan
//! saw it, the shards it holds with their lag over the last minutes, its recent errors.
//!
//! [`SchedulerHandle::status`](crate::SchedulerHandle::status) gives a [`WorkerStatus`]; the
//! Prometheus endpoint serves it as a page (`/status`) and as JSON (`/status.json`), see
//! [`telemetry`](crate::telemetry). Everything here is a snapshot from memory: reading it
//! calls no AWS API.

use crate::lease::Lease;
use crate::telemetry::Health;
use std::fmt;
use std::time::Duration;

/// How often a held shard's lag and record count are sampled for
/// [`HeldShardStatus::history`].
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// How many samples a held shard keeps: ten minutes at [`SAMPLE_INTERVAL`].
pub const SAMPLES_KEPT: usize = 120;

/// How many of the worker's recent errors [`WorkerStatus::errors`] keeps.
pub const ERRORS_KEPT: usize = 20;

/// A worker's view of itself and of the lease table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// This worker's id (its leases' `leaseOwner`).
    pub worker_id: String,
    /// Whether it is live and ready.
    pub health: Health,
    /// The shards it holds, by lease key.
    pub held: Vec<HeldShardStatus>,
    /// Every lease of the table at its last scan (empty before the first).
    pub leases: Vec<LeaseStatus>,
    /// How long ago that scan was (`None`: none yet).
    pub leases_scanned_ago: Option<Duration>,
    /// Its most recent errors, newest first (at most [`ERRORS_KEPT`]).
    pub errors: Vec<ErrorEntry>,
    /// Records skipped with the processor's consent since the worker started.
    pub skipped_records: u64,
}

/// A shard this worker holds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeldShardStatus {
    /// Its lease key.
    pub lease_key: String,
    /// Its checkpoint as this worker last wrote or read it.
    pub checkpoint: String,
    /// How far behind the tip of the shard its last batch was (`None`: no batch yet).
    pub millis_behind_latest: Option<i64>,
    /// Records delivered per second over the last minute (or since the lease was taken).
    pub records_per_second: f64,
    /// Records delivered to its processors since this worker took the lease.
    pub records: u64,
    /// Times its processor was restarted from the last checkpoint since the lease was taken.
    pub restarts: u64,
    /// Time since this worker last checkpointed it (or took the lease).
    pub since_checkpoint: Duration,
    /// Samples every [`SAMPLE_INTERVAL`], oldest first (at most [`SAMPLES_KEPT`]).
    pub history: Vec<Sample>,
}

/// One sample of a held shard.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// How long before the status was taken.
    pub ago: Duration,
    /// How far behind the tip its last batch was then (`None`: no batch yet).
    pub millis_behind_latest: Option<i64>,
    /// Records delivered since the lease was taken, then.
    pub records: u64,
}

/// A lease as the last scan of the table saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseStatus {
    /// Its key (the shard id; multi-stream: `account:stream:epoch:shardId`).
    pub lease_key: String,
    /// Its `leaseOwner`.
    pub owner: Option<String>,
    /// Its `leaseCounter`.
    pub counter: u64,
    /// Its checkpoint (`TRIM_HORIZON`, `SHARD_END`, a sequence number, …).
    pub checkpoint: String,
    /// The shards it was split or merged from.
    pub parents: Vec<String>,
    /// Its `throughputKBps` (KCL 3.x, and this library's load balancing).
    pub throughput_kbps: Option<f64>,
    /// What is happening to it.
    pub state: LeaseState,
}

/// What is happening to a lease, as one worker can tell from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// Owned, and its owner renews it.
    Processing,
    /// Being handed from its `checkpointOwner` to its new owner.
    HandingOff {
        /// The worker handing it over.
        from: String,
    },
    /// Its shard ended and was processed to its end (`SHARD_END`): it waits for clean-up.
    Finished,
    /// Not started: a parent shard's lease is not finished yet.
    WaitingOnParents {
        /// The unfinished parents.
        parents: Vec<String>,
    },
    /// No owner: the next worker to scan takes it.
    Unowned,
    /// Its owner has not renewed it for longer than the failover time (seen from this
    /// worker's clock): it is dead or cut off, and any worker may take the lease.
    Expired {
        /// How long its counter has not changed.
        unchanged_for: Duration,
    },
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseState::Processing => f.write_str("processing"),
            LeaseState::HandingOff { from } => write!(f, "being handed over by {from}"),
            LeaseState::Finished => f.write_str("finished"),
            LeaseState::WaitingOnParents { parents } => {
                write!(f, "waiting on parents {}", parents.join(", "))
            }
            LeaseState::Unowned => f.write_str("unowned"),
            LeaseState::Expired { unchanged_for } => {
                write!(
                    f,
                    "expired (not renewed for {:.0} s)",
                    unchanged_for.as_secs_f64()
                )
            }
        }
    }
}

impl LeaseState {
    /// The state of `lease`, whose counter has not changed for `unchanged_for`, in a table
    /// whose leases are `table`.
    pub(crate) fn of(
        lease: &Lease,
        unchanged_for: Duration,
        failover_time: Duration,
        table: &[&Lease],
    ) -> Self {
        if lease.checkpoint.is_shard_end() {
            return LeaseState::Finished;
        }
        let unfinished: Vec<String> = lease
            .parent_shard_ids
            .iter()
            .filter(|p| {
                table
                    .iter()
                    .any(|l| parent_matches(l, lease, p) && !l.checkpoint.is_shard_end())
            })
            .cloned()
            .collect();
        if !unfinished.is_empty() {
            return LeaseState::WaitingOnParents {
                parents: unfinished,
            };
        }
        match (&lease.owner, &lease.checkpoint_owner) {
            (None, _) => LeaseState::Unowned,
            (Some(_), _) if unchanged_for > failover_time => LeaseState::Expired { unchanged_for },
            (Some(_), Some(from)) => LeaseState::HandingOff { from: from.clone() },
            (Some(_), None) => LeaseState::Processing,
        }
    }
}

/// Whether `candidate` is the lease of `child`'s parent shard `parent` (in a multi-stream
/// table, of the same stream).
fn parent_matches(candidate: &Lease, child: &Lease, parent: &str) -> bool {
    match (&candidate.multi_stream, &child.multi_stream) {
        (Some(c), Some(ch)) => c.shard_id == parent && c.stream == ch.stream,
        _ => candidate.key == parent,
    }
}

/// One of a worker's recent errors.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ErrorEntry {
    /// How long before the status was taken.
    pub ago: Duration,
    /// The lease it concerns, if one.
    pub lease_key: Option<String>,
    /// What happened.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Checkpoint;

    fn lease(key: &str, owner: Option<&str>, parents: &[&str]) -> Lease {
        let mut l = Lease::new(key.to_string(), Checkpoint::TrimHorizon);
        l.owner = owner.map(str::to_string);
        l.parent_shard_ids = parents.iter().map(|p| p.to_string()).collect();
        l
    }

    #[test]
    fn states_in_words() {
        let f = Duration::from_secs(10);
        let mut parent = lease("p", Some("a"), &[]);
        let child = lease("c", None, &["p"]);
        let table = [&parent.clone(), &child.clone()];
        let state = |l: &Lease, idle: u64, t: &[&Lease]| {
            LeaseState::of(l, Duration::from_secs(idle), f, t).to_string()
        };
        assert_eq!(state(&parent, 1, &table), "processing");
        assert_eq!(state(&parent, 11, &table), "expired (not renewed for 11 s)");
        assert_eq!(state(&child, 0, &table), "waiting on parents p");
        parent.checkpoint = Checkpoint::ShardEnd;
        let table = [&parent, &child];
        assert_eq!(state(&parent, 0, &table), "finished");
        assert_eq!(state(&child, 0, &table), "unowned");
        let mut moving = lease("m", Some("b"), &[]);
        moving.checkpoint_owner = Some("a".into());
        assert_eq!(state(&moving, 0, &[]), "being handed over by a");
    }
}
