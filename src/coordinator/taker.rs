//! Which leases to take: a pure function of a lease snapshot, the local clock and the config.
//!
//! The rules (the Java KCL's lease taker, with the changes noted below):
//!
//! 1. A lease is *available* when it has no owner, when its counter has not changed for longer
//!    than the failover time **on this worker's clock** (expired), or when the table says this
//!    worker owns it but this process does not hold it (left over from a restart with the same
//!    worker id).
//! 2. Workers are the owners of non-available leases, plus this worker. The target is
//!    `ceil(leases / workers)` (1 when there are more workers than leases), capped by
//!    `max_leases_for_worker`. Finished (`SHARD_END`) leases awaiting clean-up count, as in Java.
//! 3. If this worker holds fewer than the target, it takes available leases: unowned first,
//!    then the longest-unchanged (Java shuffles; preferring unowned and oldest makes a new
//!    worker start on never-processed shards first, and is deterministic for a given seed).
//! 4. Only when nothing is available, it steals from the most loaded worker, if that worker is
//!    above the target: `min(needed, its_count - target)` leases, or 1 when that is 0 but this
//!    worker needs more than one; at most `max_leases_to_steal_at_one_time`. A lease in a
//!    hand-off, or a finished one, is never stolen. Second change: when finished leases lift
//!    the target above every worker with something to steal, this worker still steals one
//!    lease from the most loaded of those if it holds at least two more than this worker
//!    (Java stops there, leaving a worker two short for as long as the finished leases stay;
//!    every such move narrows the spread, so it cannot undo a Java worker's move or loop).
//! 5. A steal is a graceful hand-off when [`TakerConfig::handoff_timeout`] is set (the caller
//!    writes `checkpointOwner` = victim, `leaseOwner` = this worker, as a KCL 3.x leader does):
//!    the victim's processor checkpoints, then the victim passes the lease on, so no record is
//!    processed twice. Meanwhile the lease counts as this worker's and is not taken, unless its
//!    counter stops (the victim died: expired) or the hand-off outlasts the timeout plus the
//!    failover time (a victim that does not know hand-offs, such as a Java KCL 2.x worker, or
//!    a receiver that is gone): then any worker takes it as an expired lease.
//! 6. With [`TakerConfig::balance_by_load`], rule 4 balances load instead of counts: when
//!    nothing is available, this worker asks more loaded workers for the leases that best
//!    even out their loads (by each lease's `throughputKBps`), at most
//!    `max_leases_to_steal_at_one_time`; see [`balance`](super::balance). Without traffic it
//!    is rule 4; with equal traffic, rule 4 up to a margin of 10 % of the givers' traffic. It
//!    waits while another worker's lease has not changed for half a failover time (that
//!    worker may be dead, and its leases go by count first) or while this worker lags.
//!
//! Java's "priority" rule (take every very old lease ignoring the target) is not used: it makes
//! the first worker of a fleet take every shard, which the others then steal back one at a time.

use super::balance::{choose_load_steals, LoadView, COOLDOWN_FAILOVERS};
use crate::lease::Lease;
use crate::telemetry::TakeStats;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// A lease as this worker last saw it, with when it last saw its counter change.
#[derive(Debug, Clone)]
pub struct ObservedLease {
    /// The lease as read.
    pub lease: Lease,
    /// When this worker first saw the current counter value (its own monotonic clock).
    pub last_change: Instant,
    /// When this worker first saw the hand-off the lease is in (`None`: not in a hand-off).
    pub handoff_since: Option<Instant>,
    /// When this worker first saw the lease's current owner (a lease seen for the first time
    /// counts as owned for the balancing cooldown already: nothing says it just moved).
    pub owner_since: Instant,
}

impl ObservedLease {
    /// True when the counter has not changed for longer than `failover_time`.
    pub fn is_expired(&self, now: Instant, failover_time: Duration) -> bool {
        now.saturating_duration_since(self.last_change) > failover_time
    }
}

/// Limits for the taker.
#[derive(Debug, Clone)]
pub struct TakerConfig {
    /// How long a lease may go without a counter change before others may take it.
    pub failover_time: Duration,
    /// The most leases this worker will hold.
    pub max_leases_for_worker: usize,
    /// The most leases this worker steals in one round.
    pub max_leases_to_steal_at_one_time: usize,
    /// Steals are graceful hand-offs (rule 5), and one to this worker is waited for this long
    /// (plus the failover time) before the lease is taken anyway; `None`: steals are takes.
    pub handoff_timeout: Option<Duration>,
    /// Balance by load (rule 6) rather than by count (rule 4).
    pub balance_by_load: bool,
    /// This worker's processing lags behind the stream: it steals nothing for load.
    pub lagging: bool,
}

/// Why a lease is being taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeReason {
    /// Nobody owns it.
    Unowned,
    /// Its owner stopped renewing it.
    Expired,
    /// The table names this worker as owner, but this process does not hold it.
    Orphaned,
    /// Taken from a more loaded worker to even out the spread (a graceful hand-off when
    /// [`TakerConfig::handoff_timeout`] is set).
    Steal,
    /// Handed to this worker by a hand-off that did not complete in time.
    HandoffTimedOut,
}

/// What the taker decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeDecision {
    /// The lease as observed (its counter is the write condition).
    pub lease: Lease,
    /// Why.
    pub reason: TakeReason,
}

/// Decide which leases `worker_id` should take now. `held` are the keys this process holds.
pub fn choose_leases_to_take(
    worker_id: &str,
    leases: &[ObservedLease],
    held: &BTreeSet<String>,
    now: Instant,
    config: &TakerConfig,
    rng: &mut impl Rng,
) -> Vec<TakeDecision> {
    choose_leases_to_take_with_stats(
        worker_id,
        leases,
        held,
        now,
        config,
        rng,
        &mut TakeStats::default(),
    )
}

/// [`choose_leases_to_take`], also filling in what the decision saw (the `TakeLeases`
/// metrics; `to_take` is the length of the result).
pub fn choose_leases_to_take_with_stats(
    worker_id: &str,
    leases: &[ObservedLease],
    held: &BTreeSet<String>,
    now: Instant,
    config: &TakerConfig,
    rng: &mut impl Rng,
    stats: &mut TakeStats,
) -> Vec<TakeDecision> {
    let handoff_limit = config
        .handoff_timeout
        .map(|t| t + config.failover_time)
        .unwrap_or(Duration::ZERO);
    let handoff_timed_out = |o: &ObservedLease| {
        config.handoff_timeout.is_some()
            && o.lease.checkpoint_owner.as_deref() != Some(worker_id)
            && o.handoff_since
                .is_some_and(|t| now.saturating_duration_since(t) > handoff_limit)
    };
    let reason_available = |o: &ObservedLease| -> Option<TakeReason> {
        match o.lease.owner.as_deref() {
            None => Some(TakeReason::Unowned),
            Some(owner) if owner == worker_id && held.contains(&o.lease.key) => None,
            // A hand-off past its limit: its outgoing owner does not know hand-offs, or its
            // receiver is gone (any worker may take it, as an expired lease).
            Some(_) if o.lease.is_in_handoff() && handoff_timed_out(o) => {
                Some(TakeReason::HandoffTimedOut)
            }
            Some(owner) if owner == worker_id && o.lease.is_in_handoff() => {
                // Being handed to this worker: its outgoing owner processes it until it has
                // checkpointed and passed it on.
                o.is_expired(now, config.failover_time)
                    .then_some(TakeReason::Expired)
            }
            Some(owner) if owner == worker_id => Some(TakeReason::Orphaned),
            Some(_) if o.is_expired(now, config.failover_time) => Some(TakeReason::Expired),
            Some(_) => None,
        }
    };

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    counts.insert(worker_id, 0);
    let mut available: Vec<(&ObservedLease, TakeReason)> = Vec::new();
    let mut owned: Vec<&ObservedLease> = Vec::new();
    for o in leases {
        match reason_available(o) {
            Some(reason) => available.push((o, reason)),
            None => {
                owned.push(o);
                *counts
                    .entry(o.lease.owner.as_deref().unwrap_or_default())
                    .or_default() += 1
            }
        }
    }
    // Leases this process holds but that the snapshot does not show as ours yet (taken after
    // the scan began) still count toward this worker's load.
    let mine_in_table = counts[worker_id];
    let my_count = mine_in_table.max(held.len());

    let workers = counts.len();
    let total = leases.len();
    let target = if workers >= total {
        1
    } else {
        total.div_ceil(workers)
    };
    *stats = TakeStats {
        total,
        unowned: leases.iter().filter(|o| o.lease.owner.is_none()).count(),
        available: available.len(),
        workers,
        spillover: target.saturating_sub(config.max_leases_for_worker),
        ..TakeStats::default()
    };
    let target = target.min(config.max_leases_for_worker);
    if config.balance_by_load && available.is_empty() {
        // A worker whose leases have not moved for half a failover time may be dead: its
        // leases are about to be taken by count, and a move now would hold one of them up
        // (the receivers' counts would block their takes until the move completes).
        let someone_dying = owned.iter().any(|o| {
            o.lease.owner.as_deref() != Some(worker_id)
                && now.saturating_duration_since(o.last_change) > config.failover_time / 2
        });
        if my_count >= config.max_leases_for_worker || config.lagging || someone_dying {
            return Vec::new();
        }
        let view = LoadView {
            worker_id,
            workers: counts.keys().copied().collect(),
            // Finished leases do no work: they weigh nothing until clean-up deletes them.
            owned: owned
                .into_iter()
                .filter(|o| !o.lease.checkpoint.is_shard_end())
                .collect(),
            held_unseen: held.len().saturating_sub(mine_in_table),
            cooldown: config.failover_time * COOLDOWN_FAILOVERS,
        };
        let room = config.max_leases_for_worker - my_count;
        let max = config.max_leases_to_steal_at_one_time.min(room);
        let steals = choose_load_steals(&view, max, now, rng);
        stats.needed = steals.len();
        return steals
            .into_iter()
            .map(|o| TakeDecision {
                lease: o.lease.clone(),
                reason: TakeReason::Steal,
            })
            .collect();
    }
    if my_count >= target {
        return Vec::new();
    }
    let needed = target - my_count;
    stats.needed = needed;

    if !available.is_empty() {
        // Unowned and orphaned first, then the longest-unchanged; random among equals.
        available.shuffle(rng);
        available.sort_by_key(|(o, reason)| {
            (
                matches!(reason, TakeReason::Expired | TakeReason::HandoffTimedOut),
                o.last_change,
            )
        });
        return available
            .into_iter()
            .take(needed)
            .map(|(o, reason)| TakeDecision {
                lease: o.lease.clone(),
                reason,
            })
            .collect();
    }

    // Steal from the most loaded worker that has something to steal (finished leases, and
    // leases already in a hand-off, are never stolen: a worker holding only those would block
    // every steal); ties: the one named first, for determinism.
    let stealable_lease = |o: &ObservedLease, w: &str| {
        o.lease.owner.as_deref() == Some(w)
            && !o.lease.checkpoint.is_shard_end()
            && !o.lease.is_in_handoff()
    };
    let stealable = |w: &str| leases.iter().any(|o| stealable_lease(o, w));
    let Some((&victim, &victim_count)) = counts
        .iter()
        .filter(|(w, _)| **w != worker_id && stealable(w))
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
    else {
        return Vec::new();
    };
    // Finished leases count toward the target (as in Java) but cannot be stolen: a worker
    // holding many of them can lift the target above every worker that has something to
    // give. Then one lease moves from a worker two or more above this one.
    let below_target = victim_count < target;
    if below_target && victim_count <= my_count + 1 {
        return Vec::new();
    }
    let mut to_steal = if below_target {
        1
    } else {
        needed.min(victim_count - target)
    };
    if to_steal == 0 && needed > 1 && victim_count > my_count + 1 {
        to_steal = 1;
    }
    to_steal = to_steal.min(config.max_leases_to_steal_at_one_time);
    let mut candidates: Vec<&ObservedLease> = leases
        .iter()
        .filter(|o| stealable_lease(o, victim))
        .collect();
    candidates.shuffle(rng);
    candidates
        .into_iter()
        .take(to_steal)
        .map(|o| TakeDecision {
            lease: o.lease.clone(),
            reason: TakeReason::Steal,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const F: Duration = Duration::from_secs(10);

    fn cfg() -> TakerConfig {
        TakerConfig {
            failover_time: F,
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: 1,
            handoff_timeout: None,
            balance_by_load: false,
            lagging: false,
        }
    }

    fn lease(i: usize, owner: Option<&str>) -> Lease {
        let mut l = Lease::new(format!("shardId-{i:012}"), Checkpoint::TrimHorizon);
        l.owner = owner.map(str::to_string);
        l
    }

    fn observe(leases: Vec<Lease>, at: Instant) -> Vec<ObservedLease> {
        leases
            .into_iter()
            .map(|lease| ObservedLease {
                lease,
                last_change: at,
                handoff_since: None,
                owner_since: at,
            })
            .collect()
    }

    fn decide(
        me: &str,
        leases: &[ObservedLease],
        held: &[&str],
        now: Instant,
        cfg: &TakerConfig,
    ) -> Vec<TakeDecision> {
        let held = held.iter().map(|s| s.to_string()).collect();
        choose_leases_to_take(me, leases, &held, now, cfg, &mut StdRng::seed_from_u64(7))
    }

    #[test]
    fn a_lone_worker_takes_every_unowned_lease() {
        let now = Instant::now();
        let leases = observe((0..5).map(|i| lease(i, None)).collect(), now);
        let got = decide("a", &leases, &[], now, &cfg());
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|d| d.reason == TakeReason::Unowned));
    }

    #[test]
    fn respects_the_target_and_max_leases() {
        let now = Instant::now();
        let mut ls: Vec<Lease> = (0..4).map(|i| lease(i, Some("b"))).collect();
        ls.extend((4..8).map(|i| lease(i, None)));
        let leases = observe(ls, now);
        // 8 leases, 2 workers: target 4.
        assert_eq!(decide("a", &leases, &[], now, &cfg()).len(), 4);
        let capped = TakerConfig {
            max_leases_for_worker: 2,
            ..cfg()
        };
        assert_eq!(decide("a", &leases, &[], now, &capped).len(), 2);
    }

    #[test]
    fn expiry_is_judged_on_the_local_clock_only() {
        let t0 = Instant::now();
        let leases = observe(vec![lease(0, Some("b")), lease(1, Some("b"))], t0);
        let at_f = decide("a", &leases, &[], t0 + F, &cfg());
        assert!(
            at_f.iter().all(|d| d.reason == TakeReason::Steal),
            "exactly F is not expired: only a balancing steal"
        );
        assert_eq!(at_f.len(), 1);
        let got = decide("a", &leases, &[], t0 + F + Duration::from_millis(1), &cfg());
        assert_eq!(
            got.len(),
            2,
            "b's leases are expired; a is the only live worker"
        );
        assert!(got.iter().all(|d| d.reason == TakeReason::Expired));
    }

    #[test]
    fn unowned_leases_go_before_expired_ones() {
        let t0 = Instant::now();
        let mut leases = observe(vec![lease(0, Some("dead")), lease(1, Some("dead"))], t0);
        leases.extend(observe(vec![lease(2, None)], t0 + F * 2));
        leases.extend(observe(
            (3..6).map(|i| lease(i, Some("c"))).collect(),
            t0 + F * 2,
        ));
        // 6 leases, workers a and c: target 3, a needs 3: unowned first.
        let got = decide("a", &leases, &[], t0 + F * 2, &cfg());
        assert_eq!(got[0].reason, TakeReason::Unowned);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn steals_one_at_a_time_from_the_most_loaded_worker() {
        let now = Instant::now();
        let mut ls: Vec<Lease> = (0..6).map(|i| lease(i, Some("b"))).collect();
        ls.extend((6..8).map(|i| lease(i, Some("c"))));
        let leases = observe(ls, now);
        let got = decide("a", &leases, &[], now, &cfg());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, TakeReason::Steal);
        assert_eq!(got[0].lease.owner.as_deref(), Some("b"));
        let two = TakerConfig {
            max_leases_to_steal_at_one_time: 5,
            ..cfg()
        };
        assert_eq!(
            decide("a", &leases, &[], now, &two).len(),
            3,
            "target 3: steal min(needed 3, 6-3)"
        );
    }

    /// b holds 4 leases and c 1, every owner for a failover time already (`a` holds none and
    /// would ask b for one); with the taker balancing by load.
    fn a_would_ask_b(now: Instant) -> (Vec<ObservedLease>, TakerConfig) {
        let mut leases = observe((0..4).map(|i| lease(i, Some("b"))).collect(), now);
        leases.extend(observe(vec![lease(4, Some("c"))], now));
        for o in &mut leases {
            o.owner_since = now - F * 3;
            o.lease.throughput = crate::lease::Throughput::from_kbps(1.0);
        }
        let by_load = TakerConfig {
            balance_by_load: true,
            ..cfg()
        };
        assert_eq!(decide("a", &leases, &[], now, &by_load).len(), 1);
        (leases, by_load)
    }

    #[test]
    fn balancing_by_load_steals_nothing_while_this_worker_lags() {
        let now = Instant::now();
        let (leases, by_load) = a_would_ask_b(now);
        let lagging = TakerConfig {
            lagging: true,
            ..by_load
        };
        assert!(decide("a", &leases, &[], now, &lagging).is_empty());
    }

    #[test]
    fn balancing_by_load_waits_while_a_worker_looks_dead() {
        let now = Instant::now();
        let (mut leases, by_load) = a_would_ask_b(now);
        // c's lease has not changed for more than half a failover time: c may be dead, and its
        // lease is about to go by count; no move meanwhile.
        leases[4].last_change = now - F / 2 - Duration::from_millis(1);
        assert!(decide("a", &leases, &[], now, &by_load).is_empty());
    }

    #[test]
    fn no_steal_when_balanced_within_one() {
        let now = Instant::now();
        // 10 leases over 3 workers: 4/3/3 is balanced.
        let mut ls: Vec<Lease> = (0..4).map(|i| lease(i, Some("b"))).collect();
        ls.extend((4..7).map(|i| lease(i, Some("c"))));
        ls.extend((7..10).map(|i| lease(i, Some("a"))));
        let leases = observe(ls, now);
        let held = [
            "shardId-000000000007",
            "shardId-000000000008",
            "shardId-000000000009",
        ];
        assert!(decide("a", &leases, &held, now, &cfg()).is_empty());
    }

    #[test]
    fn orphaned_own_leases_are_taken_back_at_once() {
        let now = Instant::now();
        let leases = observe(vec![lease(0, Some("a")), lease(1, Some("b"))], now);
        let got = decide("a", &leases, &[], now, &cfg());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, TakeReason::Orphaned);
        assert!(decide("a", &leases, &["shardId-000000000000"], now, &cfg()).is_empty());
    }

    #[test]
    fn the_victim_is_the_most_loaded_worker_with_unfinished_leases() {
        // Simulation seed 2087: b holds only finished leases and is (tied) most loaded; c,
        // as loaded, holds two live ones. a must steal from c, not give up on b.
        let now = Instant::now();
        let mut ls: Vec<Lease> = (0..2).map(|i| lease(i, Some("b"))).collect();
        for l in &mut ls {
            l.checkpoint = Checkpoint::ShardEnd;
        }
        ls.extend((2..4).map(|i| lease(i, Some("c"))));
        ls.extend((4..6).map(|i| lease(i, Some(["d", "e"][i - 4]))));
        let got = decide("a", &observe(ls, now), &[], now, &cfg());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].lease.owner.as_deref(), Some("c"));
    }

    #[test]
    fn finished_leases_that_lift_the_target_do_not_stop_balancing() {
        // Simulation seed 5030096 (fan-out, count-based): f holds 12 finished leases, so the
        // target is 9 while b..e hold 8 live ones each and a only 6. Java steals nothing.
        let now = Instant::now();
        let mut ls: Vec<Lease> = (0..12).map(|i| lease(i, Some("f"))).collect();
        for l in &mut ls {
            l.checkpoint = Checkpoint::ShardEnd;
        }
        let mut i = 12;
        for (w, n) in [("a", 6), ("b", 8), ("c", 8), ("d", 8), ("e", 8)] {
            ls.extend((i..i + n).map(|j| lease(j, Some(w))));
            i += n;
        }
        let held: Vec<String> = (12..18).map(|j| format!("shardId-{j:012}")).collect();
        let held: Vec<&str> = held.iter().map(String::as_str).collect();
        let leases = observe(ls, now);
        let got = decide("a", &leases, &held, now, &cfg());
        assert_eq!(got.len(), 1, "one lease from a worker two above: {got:?}");
        assert_eq!(got[0].lease.owner.as_deref(), Some("b"));
        assert_eq!(got[0].reason, TakeReason::Steal);
        // After that move (a 7, b 7, the others 8) one above is balanced: nothing moves.
        let mut ls: Vec<Lease> = leases.into_iter().map(|o| o.lease).collect();
        let moved = ls
            .iter_mut()
            .find(|l| l.owner.as_deref() == Some("b"))
            .unwrap();
        moved.owner = Some("a".into());
        let moved = moved.key.clone();
        let mut held = held;
        held.push(&moved);
        let got = decide("a", &observe(ls, now), &held, now, &cfg());
        assert!(got.is_empty(), "8 against 7 is balanced: {got:?}");
    }

    #[test]
    fn finished_leases_are_never_stolen() {
        let now = Instant::now();
        let mut ls: Vec<Lease> = (0..4).map(|i| lease(i, Some("b"))).collect();
        for l in &mut ls {
            l.checkpoint = Checkpoint::ShardEnd;
        }
        let leases = observe(ls, now);
        assert!(decide("a", &leases, &[], now, &cfg()).is_empty());
    }

    /// A lease b is handing to a (`leaseOwner` a, `checkpointOwner` b), seen since `since`.
    fn incoming(i: usize, since: Instant) -> ObservedLease {
        let mut l = lease(i, Some("a"));
        l.checkpoint_owner = Some("b".into());
        ObservedLease {
            lease: l,
            last_change: since,
            handoff_since: Some(since),
            owner_since: since,
        }
    }

    fn graceful() -> TakerConfig {
        TakerConfig {
            handoff_timeout: Some(Duration::from_secs(30)),
            ..cfg()
        }
    }

    #[test]
    fn a_lease_being_handed_over_is_waited_for_and_counts_as_the_receivers() {
        // b holds 3, a has 1 coming by hand-off: 4 leases, 2 workers, target 2; a needs one
        // more, and steals it, but never the lease already in a hand-off.
        let now = Instant::now();
        let mut leases = observe((0..3).map(|i| lease(i, Some("b"))).collect(), now);
        leases.push(incoming(3, now));
        let got = decide("a", &leases, &[], now, &graceful());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, TakeReason::Steal);
        assert_ne!(got[0].lease.key, leases[3].lease.key);
        // With only the one in hand-off beside b's one, a is at its share and waits.
        let leases = vec![
            observe(vec![lease(0, Some("b"))], now).remove(0),
            incoming(1, now),
        ];
        assert!(decide("a", &leases, &[], now, &graceful()).is_empty());
        // c sees the hand-off's lease as a's, and steals none of b's single lease.
        assert!(decide("c", &leases, &[], now, &graceful()).is_empty());
    }

    #[test]
    fn a_hand_off_is_taken_over_when_its_owner_dies_or_it_times_out() {
        let t0 = Instant::now();
        let mut l = incoming(0, t0);
        // The outgoing owner still renews (the counter changes), but never passes it on.
        l.last_change = t0 + Duration::from_secs(35);
        let leases = vec![l];
        let at = |s| t0 + Duration::from_secs(s);
        assert!(decide("a", &leases, &[], at(39), &graceful()).is_empty());
        let got = decide("a", &leases, &[], at(41), &graceful());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, TakeReason::HandoffTimedOut);
        // Past its limit, any worker may take it (its receiver may be gone), but not the
        // outgoing owner, which still holds it.
        let got = decide("c", &leases, &[], at(41), &graceful());
        assert_eq!(got[0].reason, TakeReason::HandoffTimedOut);
        assert!(decide("b", &leases, &["shardId-000000000000"], at(41), &graceful()).is_empty());
        // The outgoing owner died: the counter stopped at t0.
        let leases = vec![incoming(0, t0)];
        let got = decide(
            "a",
            &leases,
            &[],
            t0 + F + Duration::from_millis(1),
            &graceful(),
        );
        assert_eq!(got[0].reason, TakeReason::Expired);
        // Another worker takes it only when it expires, as any lease.
        assert!(decide("c", &leases, &[], t0 + F, &graceful()).is_empty());
        let got = decide(
            "c",
            &leases,
            &[],
            t0 + F + Duration::from_millis(1),
            &graceful(),
        );
        assert_eq!(got[0].reason, TakeReason::Expired);
    }
}
