//! What the leader assigns: a pure function of the lease table, the live workers and which
//! leases expired.
//!
//! 1. **Leases without a live owner** — unowned, expired (counter unchanged for the failover
//!    time on the leader's clock), or in a hand-off past its deadline — go to the live worker
//!    with the fewest leases (then the least throughput), never back to an expired lease's
//!    owner while another worker is live, unless it is the only one. Unowned leases first.
//!    Finished (`SHARD_END`) leases without a live owner are assigned too (they count for no
//!    load): only a holder deletes a finished lease once its children started.
//! 2. **Balance**, only when step 1 had nothing to do: while the most loaded live worker has
//!    two leases more than the least loaded, move one of its leases to it, choosing the one
//!    whose throughput best evens out the two workers' throughput. A lease in a hand-off, or
//!    finished (`SHARD_END`), never moves.
//!
//! A lease being handed over counts for the worker it goes to (the Java leader counts it for
//! the outgoing one, and so may move a further lease of that worker before the hand-off ends).
//!
//! Live workers are those with a fresh, valid metrics row (the Java leader's rule). The leases
//! of other owners that still renew are left where they are: their owners keep processing
//! them, and are given nothing new.

use crate::lease::Lease;
use std::collections::{BTreeMap, BTreeSet};

/// How a lease moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// `assignLease`: the new owner starts from the last checkpoint at once (the lease had no
    /// live owner).
    Assign,
    /// Graceful hand-off: the owner checkpoints first.
    HandOff,
}

/// One planned write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// The lease as read (the write's conditions).
    pub(crate) lease: Lease,
    /// The new owner.
    pub(crate) to: String,
    /// How.
    pub(crate) how: Move,
}

/// What the leader decides from.
#[derive(Debug)]
pub(crate) struct AssignmentInput<'a> {
    /// Every lease.
    pub(crate) leases: &'a [Lease],
    /// Keys of the leases whose owner is gone (counter unchanged for the failover time), and
    /// of hand-offs past their deadline.
    pub(crate) expired: &'a BTreeSet<String>,
    /// The live workers.
    pub(crate) workers: &'a BTreeSet<String>,
    /// The most leases one worker is given.
    pub(crate) max_leases_for_worker: usize,
    /// Whether planned moves are hand-offs (else assignments).
    pub(crate) graceful_handoff: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
struct Load {
    count: usize,
    throughput: f64,
}

fn throughput(l: &Lease) -> f64 {
    l.throughput.map_or(0.0, |t| t.kbps())
}

/// Plan this run's writes.
pub(crate) fn plan_assignments(input: &AssignmentInput<'_>) -> Vec<Assignment> {
    if input.workers.is_empty() {
        return Vec::new();
    }
    let active = |l: &&Lease| !l.checkpoint.is_shard_end();
    let mut load: BTreeMap<&str, Load> = input
        .workers
        .iter()
        .map(|w| (w.as_str(), Load::default()))
        .collect();
    let mut needs_owner = Vec::new();
    let mut finished = Vec::new();
    for lease in input.leases {
        let orphan = lease.actual_owner().is_none() || input.expired.contains(&lease.key);
        if lease.checkpoint.is_shard_end() {
            // Finished: only its holder deletes it once its children started (clean-up), so a
            // gone worker's finished lease goes to a live one too (as the Java leader does).
            if orphan {
                finished.push(lease);
            }
            continue;
        }
        if orphan {
            needs_owner.push(lease);
            continue;
        }
        // A lease being handed over counts for the worker it goes to: counted for the outgoing
        // one, the next run would see that worker still loaded and move another lease.
        if let Some(l) = lease.owner.as_deref().and_then(|o| load.get_mut(o)) {
            l.count += 1;
            l.throughput += throughput(lease);
        }
    }
    let mut plan = Vec::new();
    for lease in &finished {
        let previous = lease.actual_owner();
        let pick = load
            .iter()
            .filter(|(w, _)| Some(**w) != previous || input.workers.len() == 1)
            .min_by(by_load)
            .map(|(w, _)| w.to_string());
        if let Some(to) = pick {
            plan.push(Assignment {
                lease: (*lease).clone(),
                to,
                how: Move::Assign,
            });
        }
    }
    if !needs_owner.is_empty() {
        // Unowned first, then by key (deterministic).
        needs_owner.sort_by_key(|l| (l.actual_owner().is_some(), l.key.clone()));
        for lease in needs_owner {
            let previous = lease.actual_owner();
            let pick = load
                .iter()
                .filter(|(w, l)| {
                    l.count < input.max_leases_for_worker
                        && (Some(**w) != previous || input.workers.len() == 1)
                })
                .min_by(by_load)
                .map(|(w, _)| w.to_string());
            let Some(to) = pick else { break };
            let l = load.get_mut(to.as_str()).expect("picked from the map");
            l.count += 1;
            l.throughput += throughput(lease);
            plan.push(Assignment {
                lease: lease.clone(),
                to,
                how: Move::Assign,
            });
        }
        return plan;
    }
    if !plan.is_empty() {
        return plan;
    }
    // Balance: one move at a time between the extremes, each re-evaluated.
    let mut moved: BTreeSet<&str> = BTreeSet::new();
    for _ in 0..input.workers.len() {
        let Some((donor, dl)) = load.iter().max_by(by_load).map(|(w, l)| (*w, *l)) else {
            break;
        };
        let Some((receiver, rl)) = load.iter().min_by(by_load).map(|(w, l)| (*w, *l)) else {
            break;
        };
        if dl.count < rl.count + 2 || rl.count >= input.max_leases_for_worker {
            break;
        }
        let wanted = (dl.throughput - rl.throughput) / 2.0;
        let candidate = input
            .leases
            .iter()
            .filter(active)
            .filter(|l| {
                l.actual_owner() == Some(donor)
                    && !l.is_in_handoff()
                    && !moved.contains(l.key.as_str())
            })
            .min_by(|a, b| {
                let da = (throughput(a) - wanted).abs();
                let db = (throughput(b) - wanted).abs();
                da.total_cmp(&db).then_with(|| a.key.cmp(&b.key))
            });
        let Some(lease) = candidate else { break };
        moved.insert(lease.key.as_str());
        let tp = throughput(lease);
        let d = load.get_mut(donor).expect("donor");
        d.count -= 1;
        d.throughput -= tp;
        let r = load.get_mut(receiver).expect("receiver");
        r.count += 1;
        r.throughput += tp;
        plan.push(Assignment {
            lease: lease.clone(),
            to: receiver.to_string(),
            how: if input.graceful_handoff {
                Move::HandOff
            } else {
                Move::Assign
            },
        });
    }
    plan
}

fn by_load(a: &(&&str, &Load), b: &(&&str, &Load)) -> std::cmp::Ordering {
    a.1.count
        .cmp(&b.1.count)
        .then_with(|| a.1.throughput.total_cmp(&b.1.throughput))
        .then_with(|| a.0.cmp(b.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::lease::Throughput;

    fn lease(key: &str, owner: Option<&str>, tp: f64) -> Lease {
        let mut l = Lease::new(key, Checkpoint::TrimHorizon);
        l.owner = owner.map(str::to_string);
        l.throughput = Throughput::from_kbps(tp);
        l
    }

    fn workers(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn plan(leases: &[Lease], expired: &[&str], live: &[&str]) -> Vec<(String, String, Move)> {
        let expired = workers(expired);
        let live = workers(live);
        plan_assignments(&AssignmentInput {
            leases,
            expired: &expired,
            workers: &live,
            max_leases_for_worker: usize::MAX,
            graceful_handoff: true,
        })
        .into_iter()
        .map(|a| (a.lease.key, a.to, a.how))
        .collect()
    }

    #[test]
    fn unowned_leases_are_spread_over_live_workers() {
        let leases: Vec<Lease> = (0..4).map(|i| lease(&format!("s{i}"), None, 0.0)).collect();
        let got = plan(&leases, &[], &["a", "b"]);
        let to: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(to, ["a", "b", "a", "b"]);
        assert!(got.iter().all(|g| g.2 == Move::Assign));
    }

    #[test]
    fn an_expired_lease_goes_to_another_live_worker_not_back_to_its_owner() {
        let leases = vec![
            lease("s0", Some("a"), 0.0),
            lease("s1", Some("b"), 0.0),
            lease("s2", Some("b"), 0.0),
        ];
        // a's row is still fresh, but its lease expired: it goes to b, not to a.
        assert_eq!(
            plan(&leases, &["s0"], &["a", "b"]),
            [("s0".into(), "b".into(), Move::Assign)]
        );
        // When a is the only live worker, it gets it back.
        assert_eq!(
            plan(&leases[..1], &["s0"], &["a"]),
            [("s0".into(), "a".into(), Move::Assign)]
        );
    }

    #[test]
    fn balance_moves_by_hand_off_from_the_most_to_the_least_loaded() {
        let leases = vec![
            lease("s0", Some("a"), 1.0),
            lease("s1", Some("a"), 10.0),
            lease("s2", Some("a"), 1.0),
            lease("s3", Some("a"), 1.0),
        ];
        let got = plan(&leases, &[], &["a", "b"]);
        // Two moves even out the counts; the first takes the lease closest to half the gap.
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], ("s1".into(), "b".into(), Move::HandOff));
        assert!(got.iter().all(|g| g.1 == "b"));
        // Balanced: nothing moves (no back and forth).
        let balanced = vec![
            lease("s0", Some("a"), 1.0),
            lease("s1", Some("b"), 10.0),
            lease("s2", Some("a"), 1.0),
        ];
        assert!(plan(&balanced, &[], &["a", "b"]).is_empty());
    }

    #[test]
    fn leases_in_hand_off_finished_or_of_unknown_owners_stay() {
        let mut handing = lease("s0", Some("b"), 0.0);
        handing.checkpoint_owner = Some("a".into());
        let mut done = lease("s1", Some("a"), 0.0);
        done.checkpoint = Checkpoint::ShardEnd;
        let leases = vec![
            handing,
            done,
            lease("s2", Some("a"), 0.0),
            lease("s3", Some("java-2x"), 0.0),
            lease("s4", Some("java-2x"), 0.0),
            lease("s5", Some("java-2x"), 0.0),
        ];
        assert!(plan(&leases, &[], &["a", "b"]).is_empty());
        // A hand-off past its deadline is reassigned (expected owners as read).
        let got = plan(&leases, &["s0"], &["a", "b"]);
        assert_eq!(got, [("s0".into(), "b".into(), Move::Assign)]);
    }

    #[test]
    fn no_live_worker_no_assignment_and_the_cap_holds() {
        let leases = vec![lease("s0", None, 0.0), lease("s1", None, 0.0)];
        assert!(plan(&leases, &[], &[]).is_empty());
        let live = workers(&["a"]);
        let got = plan_assignments(&AssignmentInput {
            leases: &leases,
            expired: &BTreeSet::new(),
            workers: &live,
            max_leases_for_worker: 1,
            graceful_handoff: true,
        });
        assert_eq!(got.len(), 1);
    }
}

#[cfg(test)]
mod finished_tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    #[test]
    fn a_gone_workers_finished_lease_goes_to_a_live_worker() {
        let mut done = Lease::new("s0", Checkpoint::ShardEnd);
        done.owner = Some("gone".into());
        let live: BTreeSet<String> = ["a".to_string()].into();
        let expired: BTreeSet<String> = ["s0".to_string()].into();
        let plan = plan_assignments(&AssignmentInput {
            leases: &[done],
            expired: &expired,
            workers: &live,
            max_leases_for_worker: usize::MAX,
            graceful_handoff: true,
        });
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].to.as_str(), plan[0].how), ("a", Move::Assign));
    }
}
