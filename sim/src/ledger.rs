//! The ground truth of a run: every record produced, every delivery to a processor, every
//! checkpoint written; and the event-time invariant checks over them.
//!
//! Records are identified by their position, (globally unique) sequence number and
//! sub-sequence number (the user records of a KPL aggregate share its sequence number), and
//! indexed by position in their shard, so checks do not depend on what the stream still
//! retains. The ledger counts user records: an aggregate of n is n records.

use crate::invariants::Violation;
use crate::trace::{Source, Trace};
use kinesis_client::checkpoint::Checkpoint;
use kinesis_client::lease::Lease;
use kinesis_client::Record;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// At most this many violations are kept per run (later ones are usually consequences).
const MAX_VIOLATIONS: usize = 20;

/// One shard as produced.
#[derive(Debug, Clone, Default)]
pub struct ShardLog {
    /// Positions (sequence number, sub-sequence number) of the (user) records, in order.
    pub records: Vec<Position>,
    /// Whether each record was processed at least once.
    pub processed: Vec<bool>,
    /// Records not processed yet.
    pub unprocessed: usize,
    /// Length of the processed prefix.
    pub processed_prefix: usize,
    /// Parent shards.
    pub parents: Vec<String>,
    /// When the shard was closed (stream clock), if it was.
    pub closed_at: Option<SystemTime>,
    /// True once `SHARD_END` was checkpointed.
    pub finished: bool,
    /// Records a processor skipped with consent (its `retries_exhausted` hook said so): they
    /// count as processed, and a consumer may leave them out of later deliveries.
    pub consented: std::collections::BTreeSet<usize>,
    /// Records that were in a failed delivery: only these may be handed to
    /// `retries_exhausted` (and so skipped).
    pub failed: std::collections::BTreeSet<usize>,
    /// The shard's stream was deleted: its records are not required.
    pub excused: bool,
}

/// A (user) record's position: sequence number, sub-sequence number.
pub type Position = (u128, u64);

impl ShardLog {
    /// The index of the record at `position`.
    pub fn index_of(&self, position: Position) -> Option<usize> {
        self.records.binary_search(&position).ok()
    }

    /// The number of records at or below `checkpoint`.
    pub fn covered_by(&self, checkpoint: &Checkpoint) -> usize {
        match checkpoint {
            Checkpoint::ShardEnd => self.records.len(),
            Checkpoint::Sequence(esn) => {
                let seq: u128 = esn.sequence_number().parse().unwrap_or(u128::MAX);
                let at = (seq, esn.sub_sequence_number());
                self.records.partition_point(|p| *p <= at)
            }
            _ => 0,
        }
    }
}

/// `seq/sub`, as checkpoints are displayed.
pub fn show(p: &Position) -> String {
    format!("{}/{}", p.0, p.1)
}

/// One processor instance: the consumer of one lease tenure (or a restart within it).
#[derive(Debug, Clone)]
pub struct Instance {
    /// The worker running it.
    pub worker: String,
    /// Its shard.
    pub shard: String,
    /// Index of the next record it must receive; `None` before `initialize`.
    pub next: Option<usize>,
    /// The processor was dropped (its consumer ended, was aborted or restarted).
    pub ended: bool,
    /// Started at `LATEST`: its first record is at or before `latest_floor`.
    pub at_latest: bool,
    /// Records in the shard when this instance's `LATEST` iterator was created.
    pub latest_floor: Option<usize>,
    /// When it was first and last given records (simulated time): the span in which it
    /// processed the shard.
    pub processing: Option<(Duration, Duration)>,
    /// When it was created (simulated time).
    pub created_at: Duration,
    /// The index of the furthest record it was given (for **planned-move-duplicate**).
    pub last_given: Option<usize>,
    /// The checkpoint its `Shutdown::Requested` recorded, if that checkpoint succeeded (for
    /// **planned-move-duplicate**).
    pub requested_checkpoint: Option<Checkpoint>,
}

/// **planned-move-duplicate**: a lease given away by a graceful hand-off (or passed on by a
/// stopping worker) whose outgoing processor consented: its `Shutdown::Requested` checkpoint
/// covered every record it had been given.
#[derive(Debug, Clone)]
struct PlannedMove {
    /// The worker that gave the lease away.
    from: String,
    /// The outgoing processor instance.
    outgoing: u64,
    /// The index of the last record the outgoing instance was given: the next instance must
    /// start after it.
    last: usize,
    /// Instances with this id or above were created after the move.
    first_new: u64,
    /// When the lease was given away.
    at: Duration,
}

/// Totals for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records produced.
    pub produced: u64,
    /// Records delivered to processors (duplicates included).
    pub delivered: u64,
    /// Batches delivered.
    pub batches: u64,
    /// Batches the processor failed.
    pub failed_batches: u64,
    /// Checkpoint writes applied.
    pub checkpoints: u64,
    /// Processor instances created.
    pub instances: u64,
    /// Shard splits.
    pub splits: u64,
    /// Shard merges.
    pub merges: u64,
    /// Retention trims.
    pub trims: u64,
    /// Workers started (initial ones included).
    pub workers_started: u64,
    /// Workers killed.
    pub kills: u64,
    /// Graceful stops requested during the scenario.
    pub stops: u64,
    /// Worker pauses.
    pub pauses: u64,
    /// Leases created again by a call made before they were deleted (excused).
    pub late_creates: u64,
    /// Records skipped with the processor's consent (retry policy exhausted, hook said skip).
    pub skipped: u64,
    /// Failed batches that reported partial progress.
    pub partial: u64,
    /// Fan-out: stream consumers deleted during the run.
    pub consumer_deletions: u64,
    /// Multi-stream: streams that joined the set (created or back), left it, or were deleted
    /// and re-created.
    pub stream_changes: u64,
    /// KCL 3.x: leader kills (the lock's holder) done.
    pub leader_kills: u64,
    /// KCL 3.x: leader pauses done.
    pub leader_pauses: u64,
    /// KCL 3.x: fleet-store outages of every worker (the shared store failing).
    pub fleet_outages: u64,
    /// KCL 3.x: the fleet's `Migration3.0` item written by the world mid-run.
    pub migrations: u64,
    /// KCL 3.x, in fleets that move live leases by hand-off: leases a leader assigned away
    /// from an owner that had renewed them within the last half failover time (the leader
    /// judged them expired from a stale or slow scan, the owner adopted them again after a
    /// stall, or the leader had been deposed meanwhile): allowed (the owner learns at its next
    /// renewal), counted.
    pub premature_assignments: u64,
    /// KCL 3.x: assignments written by a worker that did not hold the leader lock at the
    /// time (a deposed leader's round still under way): allowed, counted.
    pub assignments_without_lock: u64,
}

/// The shared ground truth of one run.
#[derive(Debug)]
pub struct Ledger {
    trace: Trace,
    /// Every shard, by id.
    pub shards: BTreeMap<String, ShardLog>,
    /// Every processor instance, by id (its index).
    pub instances: Vec<Instance>,
    /// Broken invariants, in detection order.
    pub violations: Vec<Violation>,
    /// Totals.
    pub stats: Stats,
    /// The checkpoint of each lease when each worker last took it: a tenure's processor
    /// starts there or later, even before the world sees the processor.
    pub taken_at: BTreeMap<(String, String), Checkpoint>,
    /// Leases ever created, and by whom.
    pub created: BTreeMap<String, String>,
    /// When each lease was last deleted.
    pub deleted_at: BTreeMap<String, Duration>,
    /// Multi-stream: streams out of the application's set, since when.
    pub left: BTreeMap<String, Duration>,
    /// Multi-stream: how long after a stream left the set its records may still be delivered
    /// (a worker sees the change at its next tracker round, then stops the consumers).
    pub untracked_bound: Duration,
    /// **single-consumer**: the longest two workers' processors of one shard may both be
    /// processing it (see [`crate::invariants::overlap_bound`]).
    pub consumer_bound: Duration,
    /// The longest time two workers' processors of one shard were both processing it.
    pub max_consumer_overlap: Duration,
    /// Instances given records, by shard (for **single-consumer**).
    consumers: BTreeMap<String, Vec<u64>>,
    /// Pairs of instances whose overlap was reported.
    reported_overlaps: std::collections::BTreeSet<(u64, u64)>,
    /// KCL 3.x: the last time each lease was given away by its owner (a hand-off completed, or
    /// a lease passed on by a worker that stops): (that owner, when).
    handed_over: BTreeMap<String, (String, Duration)>,
    /// KCL 3.x: consented moves whose next processor instance has not been given records yet,
    /// by lease (see [`Ledger::check_planned_move`]).
    planned_moves: BTreeMap<String, PlannedMove>,
    /// The last applied renewal of each lease by each worker: (worker, key) → when.
    renewed_at: BTreeMap<(String, String), Duration>,
    /// The failover time (for [`Stats::premature_assignments`]).
    pub failover: Duration,
    /// KCL 3.x: the leader moves live leases by hand-off (so an assignment of a live lease is
    /// premature, see [`Stats::premature_assignments`]).
    pub moves_by_handoff: bool,
}

fn seq_of(r: &Record) -> Position {
    let seq = r
        .sequence_number
        .parse()
        .expect("the stream's sequence numbers are decimal");
    (seq, r.sub_sequence_number)
}

impl Ledger {
    /// An empty ledger tracing into `trace`.
    pub fn new(trace: Trace) -> Self {
        Ledger {
            trace,
            shards: BTreeMap::new(),
            instances: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
            taken_at: BTreeMap::new(),
            created: BTreeMap::new(),
            deleted_at: BTreeMap::new(),
            left: BTreeMap::new(),
            untracked_bound: Duration::MAX,
            consumer_bound: Duration::MAX,
            max_consumer_overlap: Duration::ZERO,
            consumers: BTreeMap::new(),
            reported_overlaps: Default::default(),
            handed_over: BTreeMap::new(),
            planned_moves: BTreeMap::new(),
            renewed_at: BTreeMap::new(),
            failover: Duration::MAX,
            moves_by_handoff: false,
        }
    }

    /// Multi-stream: `stream` (serialized) left the application's set now.
    pub fn stream_left(&mut self, stream: &str) {
        let now = self.trace.now();
        self.left.entry(stream.to_string()).or_insert(now);
    }

    /// Multi-stream: `stream` is in the application's set again.
    pub fn stream_back(&mut self, stream: &str) {
        self.left.remove(stream);
    }

    /// **untracked**: no record of a stream out of the set is delivered once every worker had
    /// the time to see the change.
    fn check_tracked(&mut self, inst: &Instance) {
        let Some((stream, _)) = kinesis_client::StreamIdentifier::split_lease_key(&inst.shard)
        else {
            return;
        };
        let stream = stream.to_string();
        let Some(&since) = self.left.get(&stream) else {
            return;
        };
        let out_for = self.trace.now().saturating_sub(since);
        if out_for > self.untracked_bound {
            self.violation(
                "untracked",
                format!(
                    "{} got records of {} although {stream} left the set {out_for:?} ago (bound {:?})",
                    inst.worker, inst.shard, self.untracked_bound
                ),
                vec![inst.worker.clone(), inst.shard.clone()],
            );
        }
    }

    /// **single-consumer**: instance `id` is given records now. Its processing span (first to
    /// last records given) must not overlap another worker's instance's span of the same shard
    /// by more than [`Ledger::consumer_bound`]: a lease changing hands (a steal, an expiry, a
    /// KCL 3.x assignment or hand-off) leaves at most that long in which both the old and the
    /// new owner process the shard; a graceful hand-off none at all.
    fn check_single_consumer(&mut self, id: u64) {
        let now = self.trace.now();
        let inst = &mut self.instances[id as usize];
        let first = match &mut inst.processing {
            Some((first, last)) => {
                *last = now;
                *first
            }
            None => {
                inst.processing = Some((now, now));
                self.consumers
                    .entry(inst.shard.clone())
                    .or_default()
                    .push(id);
                now
            }
        };
        let (worker, shard) = (inst.worker.clone(), inst.shard.clone());
        let bound = self.consumer_bound;
        let mut found = Vec::new();
        for &other in self.consumers.get(&shard).into_iter().flatten() {
            let o = &self.instances[other as usize];
            if other == id || o.worker == worker {
                continue;
            }
            let Some((of, ol)) = o.processing else {
                continue;
            };
            let overlap = ol.min(now).saturating_sub(first.max(of));
            if overlap > self.max_consumer_overlap {
                self.max_consumer_overlap = overlap;
            }
            let pair = (id.min(other), id.max(other));
            if overlap > bound && !self.reported_overlaps.contains(&pair) {
                found.push((pair, other, o.worker.clone(), of, ol, overlap));
            }
        }
        for (pair, other, other_worker, of, ol, overlap) in found {
            self.reported_overlaps.insert(pair);
            self.violation(
                "single-consumer",
                format!(
                    "processors of {shard} on two workers both processed it for {overlap:?} (bound {bound:?}): #{id} on {worker} since {first:?}, and #{other} on {other_worker} from {of:?} to {ol:?}"
                ),
                vec![worker.clone(), other_worker, shard.clone()],
            );
        }
    }

    /// **handed-over**: instance `id` is given records now; its worker must not have given
    /// the lease away (completed a hand-off, or passed it on as it stops) since the instance
    /// was created: the outgoing owner's consumer stops before the lease passes on, and the
    /// new owner starts from its checkpoint.
    fn check_handed_over(&mut self, id: u64) {
        let inst = &self.instances[id as usize];
        let Some((from, at)) = self.handed_over.get(&inst.shard) else {
            return;
        };
        if *from != inst.worker || inst.created_at > *at {
            return;
        }
        let (worker, shard, at, created) = (
            inst.worker.clone(),
            inst.shard.clone(),
            *at,
            inst.created_at,
        );
        let now = self.trace.now();
        self.violation(
            "handed-over",
            format!(
                "{worker} completed a hand-off of {shard} at {at:?}, but its processor #{id} (created at {created:?}) was given records at {now:?}"
            ),
            vec![worker, shard],
        );
    }

    /// **planned-move-duplicate**: instance `id` is given records from `first` on. The first
    /// instance created after a consented move of its shard (see [`PlannedMove`]) must start
    /// after the last record the outgoing instance was given: that instance checkpointed all of
    /// it before the lease passed on, so a repeat is a duplicate no failure explains.
    fn check_planned_move(&mut self, id: u64, first: &Record) {
        let shard = self.instances[id as usize].shard.clone();
        if self
            .planned_moves
            .get(&shard)
            .is_none_or(|m| id < m.first_new)
        {
            return;
        }
        let m = self.planned_moves.remove(&shard).expect("checked");
        let log = &self.shards[&shard];
        // A record not of the shard is an **order** violation; a deleted stream's shard may
        // start over (its lease is created again).
        let Some(start) = log.index_of(seq_of(first)).filter(|_| !log.excused) else {
            return;
        };
        if start > m.last {
            return;
        }
        let (worker, last) = (
            self.instances[id as usize].worker.clone(),
            show(&log.records[m.last]),
        );
        self.violation(
            "planned-move-duplicate",
            format!(
                "{} gave {shard} away at {:?} after its processor #{} checkpointed everything it was given (through {last}), but #{id} on {worker} was given {} record(s) again, from record #{start} (seq {})",
                m.from, m.at, m.outgoing, m.last + 1 - start, show(&log.records[start])
            ),
            vec![m.from, worker, shard],
        );
    }

    /// Instance `id`'s `Shutdown::Requested` checkpoint succeeded: the lease's checkpoint is
    /// (at least) `checkpoint`.
    pub fn on_requested_checkpoint(&mut self, id: u64, checkpoint: &Checkpoint) {
        self.instances[id as usize].requested_checkpoint = Some(checkpoint.clone());
    }

    /// `by` gave the lease `key` away now: if its last processor instance of the shard
    /// consented (its `Shutdown::Requested` checkpoint covered every record it was given), the
    /// next instance must not repeat any of them. Returns a note for the trace when so.
    fn planned_move(&mut self, by: &str, key: &str) -> Option<String> {
        self.planned_moves.remove(key);
        let outgoing = self
            .instances
            .iter()
            .rposition(|i| i.worker == by && i.shard == key)?;
        let inst = &self.instances[outgoing];
        let last = inst.last_given?;
        let covered = self
            .shards
            .get(key)?
            .covered_by(inst.requested_checkpoint.as_ref()?);
        if covered <= last {
            return None;
        }
        self.planned_moves.insert(
            key.to_string(),
            PlannedMove {
                from: by.to_string(),
                outgoing: outgoing as u64,
                last,
                first_new: self.instances.len() as u64,
                at: self.trace.now(),
            },
        );
        Some(format!(
            "processor #{outgoing} checkpointed all it was given: the next starts after {}",
            show(&self.shards[key].records[last])
        ))
    }

    /// A renewal of `key` by `worker` applied.
    pub fn on_renew(&mut self, worker: &str, key: &str) {
        self.renewed_at
            .insert((worker.to_string(), key.to_string()), self.trace.now());
    }

    /// Record a broken invariant.
    pub fn violation(&mut self, invariant: &'static str, message: String, focus: Vec<String>) {
        self.trace.push(
            Source::World,
            None,
            None,
            format!("VIOLATION {invariant}: {message}"),
        );
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                at: self.trace.now(),
                invariant,
                message,
                focus,
                trace_len: self.trace.len(),
            });
        }
    }

    /// A shard now exists.
    pub fn add_shard(&mut self, id: &str, parents: &[String]) {
        self.shards.insert(
            id.to_string(),
            ShardLog {
                parents: parents.to_vec(),
                ..ShardLog::default()
            },
        );
    }

    /// A shard was closed (split or merged) at `at` on the stream's clock.
    pub fn close_shard(&mut self, id: &str, at: SystemTime) {
        if let Some(s) = self.shards.get_mut(id) {
            s.closed_at = Some(at);
        }
    }

    /// A record was put into `shard`.
    pub fn produced(&mut self, shard: &str, seq: &str) {
        self.produced_user_records(shard, seq, 1);
    }

    /// A record holding `n` user records (a KPL aggregate, or a plain record when `n` is 1)
    /// was put into `shard`.
    pub fn produced_user_records(&mut self, shard: &str, seq: &str, n: usize) {
        let seq: u128 = seq.parse().expect("decimal sequence number");
        let log = self
            .shards
            .get_mut(shard)
            .expect("records go to known shards");
        for sub in 0..n as u64 {
            log.records.push((seq, sub));
            log.processed.push(false);
        }
        log.unprocessed += n;
        self.stats.produced += n as u64;
    }

    /// A processor instance was created; returns its id.
    pub fn new_instance(&mut self, worker: &str, shard: &str) -> u64 {
        self.instances.push(Instance {
            worker: worker.to_string(),
            shard: shard.to_string(),
            next: None,
            ended: false,
            at_latest: false,
            latest_floor: None,
            processing: None,
            created_at: self.trace.now(),
            last_given: None,
            requested_checkpoint: None,
        });
        self.stats.instances += 1;
        (self.instances.len() - 1) as u64
    }

    /// Instance `id` processes the shard the ledger names `shard` (a multi-stream lease key:
    /// its factory knew only the shard id).
    pub fn set_instance_shard(&mut self, id: u64, shard: &str) {
        self.instances[id as usize].shard = shard.to_string();
    }

    /// Instance `id` was dropped.
    pub fn end_instance(&mut self, id: u64) {
        self.instances[id as usize].ended = true;
    }

    /// `worker` created `lease`, in a call it began at `called_at`. A lease created a second
    /// time (after it was deleted once its shard was finished) means the shard is processed all
    /// over again. Excused: a create already under way when the lease was deleted (decided on
    /// what was true then; no client can take back a request it has sent).
    pub fn on_create(&mut self, worker: &str, lease: &Lease, called_at: Duration) {
        let deleted = self.deleted_at.get(&lease.key).copied();
        if deleted.is_some_and(|d| called_at <= d) {
            self.stats.late_creates += 1;
            self.trace.push(
                Source::World,
                Some(worker),
                Some(&lease.key),
                format!("lease created again by a call made at {called_at:?}, before it was deleted: excused"),
            );
            return;
        }
        let excused = self.shards.get(&lease.key).is_some_and(|s| s.excused);
        if excused && self.created.contains_key(&lease.key) {
            // Its stream was deleted (a worker's shard sync listed it before): nothing can be
            // read from the lease, and the worker that finds the stream gone deletes it.
            self.trace.push(
                Source::World,
                Some(worker),
                Some(&lease.key),
                "lease of a deleted stream created again: excused".to_string(),
            );
            return;
        }
        if let Some(first) = self.created.get(&lease.key).cloned() {
            let finished = self.shards.get(&lease.key).is_some_and(|s| s.finished);
            self.violation(
                "no-resurrection",
                format!(
                    "{worker} created the lease of {} again (at {}, parents {:?}); {first} had created it, and it was {}deleted since: the shard will be processed again",
                    lease.key,
                    lease.checkpoint,
                    lease.parent_shard_ids,
                    if finished { "finished and " } else { "" }
                ),
                vec![worker.to_string(), lease.key.clone()],
            );
        } else {
            self.created.insert(lease.key.clone(), worker.to_string());
        }
        // A lease created at LATEST (or AT_TIMESTAMP) under parents that never had a lease:
        // the application started after they closed, and their records are not wanted (the
        // Java KCL's semantics: only shards with leased ancestors start at TRIM_HORIZON).
        if matches!(
            lease.checkpoint,
            Checkpoint::Latest | Checkpoint::AtTimestamp
        ) {
            // The ledger names shards by lease key (a multi-stream lease's parents are shard
            // ids of its stream).
            let mut todo: Vec<String> = lease
                .parent_shard_ids
                .iter()
                .map(|p| match &lease.multi_stream {
                    Some(m) => m.stream.lease_key(p),
                    None => p.clone(),
                })
                .collect();
            while let Some(parent) = todo.pop() {
                if self.created.contains_key(&parent) {
                    continue;
                }
                if let Some(log) = self.shards.get_mut(&parent) {
                    for p in log.processed.iter_mut().filter(|p| !**p) {
                        *p = true;
                    }
                    log.unprocessed = 0;
                    log.processed_prefix = log.records.len();
                    todo.extend(log.parents.clone());
                }
            }
        }
    }

    /// The lease `key` was deleted.
    pub fn on_delete(&mut self, key: &str) {
        self.deleted_at.insert(key.to_string(), self.trace.now());
        // A lease created again starts over (itself a **no-resurrection** violation, or excused).
        self.planned_moves.remove(key);
    }

    /// `worker` took the lease of `shard` at `checkpoint`.
    pub fn on_take(&mut self, worker: &str, shard: &str, checkpoint: &Checkpoint) {
        self.taken_at
            .insert((worker.to_string(), shard.to_string()), checkpoint.clone());
    }

    /// KCL 3.x: `by` assigned `lease` (as written) to its owner (a leader's assignment, or an
    /// outgoing owner completing a hand-off): the new owner's tenure starts at its checkpoint
    /// or later.
    ///
    /// `prior` is the lease as it was; `by_leader` whether `by` held the leader lock when the
    /// write applied. Returns a note for the trace when the assignment is worth one.
    pub fn on_assign(
        &mut self,
        by: &str,
        prior: Option<&Lease>,
        lease: &Lease,
        by_leader: bool,
    ) -> Option<String> {
        let now = self.trace.now();
        if let Some(owner) = &lease.owner {
            self.taken_at
                .insert((owner.clone(), lease.key.clone()), lease.checkpoint.clone());
        }
        let completes_handoff = prior
            .is_some_and(|p| p.checkpoint_owner.as_deref() == Some(by) && p.owner == lease.owner);
        let passes_on = self.trace.is_shutting_down(by)
            && prior
                .is_some_and(|p| p.checkpoint_owner.is_none() && p.owner.as_deref() == Some(by))
            && lease.owner.as_deref() != Some(by);
        // A stopping worker gives back a lease being handed to it (a steal, or a leaving
        // worker's hand-off, under way): its outgoing owner keeps it.
        let gives_back = prior.is_some_and(|p| {
            p.owner.as_deref() == Some(by)
                && p.checkpoint_owner.is_some()
                && p.checkpoint_owner == lease.owner
        });
        if gives_back {
            return None;
        }
        if completes_handoff || passes_on {
            // The owner gives the lease away: it completes a hand-off (after its processor
            // checkpointed, or after the hand-off timeout), or passes it on as it stops (its
            // consumers ended first).
            self.handed_over
                .insert(lease.key.clone(), (by.to_string(), now));
            return self.planned_move(by, &lease.key);
        }
        let mut notes = Vec::new();
        if !by_leader {
            self.stats.assignments_without_lock += 1;
            notes.push(format!("{by} did not hold the leader lock"));
        }
        let previous = prior.and_then(|p| p.actual_owner());
        if let Some(previous) = previous.filter(|p| Some(*p) != lease.owner.as_deref()) {
            let renewed = self
                .renewed_at
                .get(&(previous.to_string(), lease.key.clone()))
                .copied();
            let live = renewed.filter(|t| now.saturating_sub(*t) < self.failover / 2);
            if let Some(t) = live.filter(|_| self.moves_by_handoff) {
                self.stats.premature_assignments += 1;
                notes.push(format!(
                    "{previous} had renewed it {:?} before",
                    now.saturating_sub(t)
                ));
            }
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// The index of the first record of `shard` that some processor may still need to read:
    /// the first one past `checkpoint` (the lease's), or an earlier one that a live processor
    /// instance still expects, or that a processor of the tenure of one of `holders` (the live
    /// workers holding the lease) may start from. A processor whose lease was taken over lags
    /// behind the new owner's checkpoint until it notices; one not initialised yet (or not even
    /// created: its worker is stalled right after the take) starts at its tenure's checkpoint.
    pub fn first_needed(
        &self,
        shard: &str,
        checkpoint: Option<&Checkpoint>,
        holders: &[String],
    ) -> usize {
        let Some(log) = self.shards.get(shard) else {
            return 0;
        };
        let mut first = checkpoint.map_or(0, |c| log.covered_by(c));
        for inst in self
            .instances
            .iter()
            .filter(|i| !i.ended && i.shard == shard)
        {
            first = first.min(inst.next.unwrap_or(0));
        }
        for worker in holders {
            let taken = self.taken_at.get(&(worker.clone(), shard.to_string()));
            first = first.min(taken.map_or(0, |c| log.covered_by(c)));
        }
        first
    }

    /// `worker` got a `LATEST` iterator for `shard`: its newest live processor instance starts
    /// there (records before it are not required, for anyone: the lease has no checkpoint).
    /// A second `LATEST` iterator for one instance would skip what arrived in between.
    pub fn on_latest_iterator(&mut self, worker: &str, shard: &str) {
        let Some(log) = self.shards.get(shard) else {
            return;
        };
        let floor = log.records.len();
        let log = self.shards.get_mut(shard).expect("checked");
        for i in 0..floor {
            if !log.processed[i] {
                log.processed[i] = true;
                log.unprocessed -= 1;
            }
        }
        while log.processed.get(log.processed_prefix) == Some(&true) {
            log.processed_prefix += 1;
        }
        let Some(id) = self
            .instances
            .iter()
            .rposition(|i| !i.ended && i.worker == worker && i.shard == shard)
        else {
            return;
        };
        if let Some(first) = self.instances[id].latest_floor {
            self.violation(
                "order",
                format!("processor #{id} of {shard} on {worker}: LATEST resolved a second time (first at record #{first}, now at #{floor}): the records in between are skipped"),
                vec![worker.to_string(), shard.to_string()],
            );
            return;
        }
        self.instances[id].latest_floor = Some(floor);
    }

    /// `initialize` was called with `checkpoint`.
    pub fn on_initialize(&mut self, id: u64, checkpoint: &Checkpoint) {
        let inst = &self.instances[id as usize];
        let (worker, shard) = (inst.worker.clone(), inst.shard.clone());
        let next = match checkpoint {
            // The simulation's AT_TIMESTAMP is the world's start: every record.
            Checkpoint::TrimHorizon | Checkpoint::AtTimestamp => Some(0),
            Checkpoint::Sequence(_) => Some(self.shards[&shard].covered_by(checkpoint)),
            Checkpoint::Latest => {
                self.instances[id as usize].at_latest = true;
                Some(0)
            }
            other => {
                self.violation(
                    "order",
                    format!("processor #{id} of {shard} on {worker} was initialised at {other} (SHARD_END leases get no processor)"),
                    vec![worker, shard],
                );
                None
            }
        };
        self.instances[id as usize].next = next;
    }

    /// A batch is delivered to instance `id`: check order, gaps and parents.
    pub fn on_delivery(&mut self, id: u64, records: &[Record]) {
        self.stats.batches += 1;
        self.stats.delivered += records.len() as u64;
        let Some(first) = records.first() else { return };
        self.check_single_consumer(id);
        self.check_handed_over(id);
        self.check_planned_move(id, first);
        let given = records
            .last()
            .and_then(|r| self.shards[&self.instances[id as usize].shard].index_of(seq_of(r)));
        let inst = &mut self.instances[id as usize];
        inst.last_given = inst.last_given.max(given);
        let inst = self.instances[id as usize].clone();
        self.check_tracked(&inst);
        let focus = vec![inst.worker.clone(), inst.shard.clone()];
        let log = &self.shards[&inst.shard];
        let Some(expected) = inst.next else {
            self.violation(
                "order",
                format!(
                    "processor #{id} of {} on {} got records before a successful initialize",
                    inst.shard, inst.worker
                ),
                focus,
            );
            return;
        };
        let Some(start) = log.index_of(seq_of(first)) else {
            self.violation(
                "order",
                format!("processor #{id} of {} on {} got record {} that was not produced into that shard", inst.shard, inst.worker, first.sequence_number),
                focus,
            );
            return;
        };
        // Started at LATEST: the first record is anywhere up to the LATEST position (a resumed
        // AT_TIMESTAMP may start a little earlier), never past it.
        let expected = if inst.at_latest && expected == 0 {
            let floor = inst.latest_floor.unwrap_or(usize::MAX);
            let e = start.min(floor);
            self.instances[id as usize].next = Some(e);
            e
        } else {
            expected
        };
        let log = &self.shards[&inst.shard];
        let Some(start) = log.index_of(seq_of(first)) else {
            self.violation(
                "order",
                format!("processor #{id} of {} on {} got record {} that was not produced into that shard", inst.shard, inst.worker, first.sequence_number),
                focus,
            );
            return;
        };
        // Records skipped earlier with consent may be left out.
        let mut expected = expected;
        while expected < start && log.consented.contains(&expected) {
            expected += 1;
        }
        if start != expected {
            let what = if start > expected {
                "skipping"
            } else {
                "repeating"
            };
            let seq = |i: usize| log.records.get(i).map_or("<end>".to_string(), show);
            self.violation(
                "order",
                format!(
                    "processor #{id} of {} on {} expected record #{expected} (seq {}) next but got #{start} (seq {}), {what} {} record(s)",
                    inst.shard, inst.worker, seq(expected), seq(start), start.abs_diff(expected)
                ),
                focus,
            );
            return;
        }
        let mut at = start;
        for (i, r) in records.iter().enumerate() {
            while log.records.get(at) != Some(&seq_of(r)) && log.consented.contains(&at) {
                at += 1;
            }
            if log.records.get(at) != Some(&seq_of(r)) {
                self.violation(
                    "order",
                    format!(
                        "processor #{id} of {} on {}: batch is not consecutive at position {i} (got {}/{}, expected {:?})",
                        inst.shard, inst.worker, r.sequence_number, r.sub_sequence_number, log.records.get(at).map(show)
                    ),
                    focus,
                );
                return;
            }
            at += 1;
        }
        // Where the batch really starts: `next` counts positions, skipped ones included.
        self.instances[id as usize].next = Some(start);
        for parent in log.parents.clone() {
            let p = &self.shards[&parent];
            if p.records.last().is_some() && !p.processed.last().copied().unwrap_or(false) {
                self.violation(
                    "parents-first",
                    format!(
                        "processor #{id} of child {} on {} got records while the last record (seq {}) of parent {parent} was never processed ({} of its {} records unprocessed)",
                        inst.shard, inst.worker, show(p.records.last().unwrap()), p.unprocessed, p.records.len()
                    ),
                    vec![inst.worker.clone(), inst.shard.clone(), parent.clone()],
                );
                return;
            }
        }
    }

    /// Instance `id` processed `records` (their side effects happened).
    pub fn on_processed(&mut self, id: u64, records: &[Record]) {
        let shard = self.instances[id as usize].shard.clone();
        let log = self.shards.get_mut(&shard).expect("known shard");
        for r in records {
            if let Some(i) = log.index_of(seq_of(r)) {
                if !log.processed[i] {
                    log.processed[i] = true;
                    log.unprocessed -= 1;
                }
            }
        }
        while log.processed.get(log.processed_prefix) == Some(&true) {
            log.processed_prefix += 1;
        }
    }

    /// The batch delivered to `id` ended: `ok` means accepted (the next batch follows it),
    /// otherwise it must be delivered again.
    pub fn on_batch_done(&mut self, id: u64, records: &[Record], ok: bool) {
        if !ok {
            self.stats.failed_batches += 1;
            let shard = &self.instances[id as usize].shard;
            let log = self.shards.get_mut(shard).expect("known shard");
            for r in records {
                if let Some(i) = log.index_of(seq_of(r)) {
                    log.failed.insert(i);
                }
            }
            return;
        }
        self.after(id, records.last());
    }

    /// The next record instance `id` must receive comes after `last` (if any).
    fn after(&mut self, id: u64, last: Option<&Record>) {
        let Some(last) = last else { return };
        let shard = self.instances[id as usize].shard.clone();
        let Some(i) = self.shards[&shard].index_of(seq_of(last)) else {
            return;
        };
        if let Some(next) = self.instances[id as usize].next.as_mut() {
            *next = i + 1;
        }
    }

    /// Instance `id` failed its batch but reported `done` (the first records of it) done
    /// (partial progress): the redelivery starts after the last of them.
    ///
    /// Counted from the records themselves, not from positions: a batch may hold records
    /// that were skipped with consent meanwhile (by an earlier owner whose skip came after
    /// this batch was read), and those are part of what was done.
    pub fn on_progress(&mut self, id: u64, done: &[Record]) {
        if done.is_empty() {
            return;
        }
        self.stats.partial += 1;
        self.after(id, done.last());
    }

    /// Instance `id`'s `retries_exhausted` hook skipped `records`: they count as processed
    /// (with consent), and the instance continues after them.
    ///
    /// Every one of them must have been in a failed delivery: a record that never failed
    /// (one that arrived while the shard backed off, say) is not the hook's to skip.
    pub fn on_skipped(&mut self, id: u64, records: &[Record]) {
        let (shard, worker) = {
            let i = &self.instances[id as usize];
            (i.shard.clone(), i.worker.clone())
        };
        self.stats.skipped += records.len() as u64;
        let log = self.shards.get_mut(&shard).expect("known shard");
        let mut never_failed = Vec::new();
        for r in records {
            if let Some(i) = log.index_of(seq_of(r)) {
                log.consented.insert(i);
                if !log.failed.contains(&i) {
                    never_failed.push(show(&seq_of(r)));
                }
            }
        }
        if !never_failed.is_empty() {
            self.violation(
                "skip-unfailed",
                format!(
                    "processor #{id} of {shard} on {worker} was asked to skip {} records that were never in a failed delivery: {}",
                    never_failed.len(),
                    never_failed.join(", ")
                ),
                vec![worker, shard.clone()],
            );
        }
        self.on_processed(id, records);
        self.after(id, records.last());
    }

    /// A checkpoint write by `worker` applied, changing `prior` into `new`.
    pub fn on_checkpoint_applied(&mut self, worker: &str, prior: &Lease, new: &Lease) {
        self.stats.checkpoints += 1;
        let key = new.key.clone();
        self.trace.push(
            Source::Store,
            Some(worker),
            Some(&key),
            format!(
                "checkpoint {} -> {} (counter {})",
                prior.checkpoint, new.checkpoint, new.counter
            ),
        );
        let focus = vec![worker.to_string(), key.clone()];
        // The actual owner: in a KCL 3.x hand-off, the outgoing owner (`checkpointOwner`),
        // which checkpoints before the lease passes on; never the incoming one.
        if new.actual_owner() != Some(worker) {
            self.violation(
                "checkpoint-owner",
                format!(
                    "{worker} wrote checkpoint {} of {key} while the stored owner was {:?} (hand-off from {:?})",
                    new.checkpoint, new.owner, new.checkpoint_owner
                ),
                focus.clone(),
            );
        }
        if new.checkpoint < prior.checkpoint {
            self.violation(
                "checkpoint-monotonic",
                format!(
                    "{worker} moved the checkpoint of {key} backwards from {} to {}",
                    prior.checkpoint, new.checkpoint
                ),
                focus.clone(),
            );
        }
        let Some(log) = self.shards.get_mut(&key) else {
            return;
        };
        if log.excused {
            // Its stream was deleted, with its records: a consumer that finds the shard gone
            // ends it (as the Java KCL does), and nothing is left to lose.
            return;
        }
        if new.checkpoint.is_shard_end() {
            log.finished = true;
        }
        let covered = log.covered_by(&new.checkpoint);
        let prefix = log.processed_prefix;
        if covered > prefix {
            let first_missing = show(&log.records[prefix]);
            self.violation(
                "checkpoint-processed",
                format!(
                    "{worker} checkpointed {key} at {} covering {covered} records, but record #{prefix} (seq {first_missing}) was never processed",
                    new.checkpoint
                ),
                focus,
            );
        }
    }

    /// Every record processed at least once?
    pub fn all_processed(&self) -> bool {
        self.shards
            .values()
            .all(|s| s.unprocessed == 0 || s.excused)
    }

    /// The shards `keys` belong to a deleted stream: their unprocessed records are excused
    /// (the order checks still apply to what is delivered).
    pub fn excuse(&mut self, keys: &[String]) {
        for k in keys {
            if let Some(s) = self.shards.get_mut(k) {
                s.excused = true;
            }
        }
    }

    /// Records not processed yet, by shard: (count, first unprocessed index).
    pub fn unprocessed(&self) -> BTreeMap<String, (usize, usize)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.unprocessed > 0 && !s.excused)
            .map(|(k, s)| (k.clone(), (s.unprocessed, s.processed_prefix)))
            .collect()
    }

    /// Total records processed at least once.
    pub fn processed_total(&self) -> usize {
        self.shards
            .values()
            .map(|s| s.records.len() - s.unprocessed)
            .sum()
    }
}
