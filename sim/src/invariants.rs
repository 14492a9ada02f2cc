//! The invariants every run must keep, and how a broken one is reported.
//!
//! Checked as events happen (see [`crate::ledger::Ledger`]):
//!
//! * **order** — within one processor instance (one consumer of one lease tenure) records
//!   arrive in the shard's sequence order, without gaps or repeats, starting right after the
//!   checkpoint the instance was initialised with; a failed batch is delivered again as is,
//!   or from after the records it reported done (partial progress). The only gaps allowed
//!   are records a processor skipped with consent (its `retries_exhausted` hook said skip).
//! * **parents-first** — no record of a child shard is delivered before the last record of
//!   every parent was processed.
//! * **skip-unfailed** — the records a processor's `retries_exhausted` hook is asked to skip
//!   were all in a failed delivery (never records that merely arrived meanwhile).
//! * **checkpoint-monotonic** — a successful checkpoint write never moves the stored
//!   checkpoint backwards.
//! * **checkpoint-owner** — a checkpoint write applies only while the stored owner is the
//!   writer (in a KCL 3.x hand-off, the outgoing owner, `checkpointOwner`; never the incoming
//!   one).
//! * **checkpoint-processed** — a checkpoint never covers a record no processor has processed
//!   (that record would be lost if the worker died now).
//! * **no-resurrection** — a lease is created once: never again after it was deleted (its
//!   shard finished), which would make the shard be processed all over again.
//! * **single-owner** — two live workers never hold the same lease for longer than
//!   [`overlap_bound`] ([`OverlapTracker`], sampled every tick).
//! * **single-consumer** — processors of one shard on two workers are never both given
//!   records for longer than [`overlap_bound`]: the spans from each processor instance's first
//!   to its last batch overlap at most that long (a steal, an expiry, a KCL 3.x assignment
//!   leaves the old owner processing until it notices; see `Ledger::check_single_consumer`).
//! * **handed-over** — KCL 3.x: once a worker gave a lease away (completed a graceful hand-off,
//!   after its processor checkpointed or the hand-off timed out, or passed it on as it stopped),
//!   none of its processors created before is given records of that shard again: the new
//!   owner starts from the old owner's last checkpoint, with no overlap at all.
//! * **planned-move-duplicate** — KCL 3.x: when a lease is given away as for **handed-over**
//!   and the outgoing processor consented (its `Shutdown::Requested` checkpoint succeeded and
//!   covered every record it was given: nothing failed pending, nothing left unprocessed), the
//!   next processor of the shard is given none of those records again: it starts right after
//!   the outgoing one's last. Repeats stay allowed (at-least-once) when the processor did not
//!   checkpoint, or not all of it, or the hand-off timed out first, and after a failover (see
//!   `Ledger::check_planned_move`).
//! * **untracked** — multi-stream: no record of a stream out of the application's set is
//!   delivered once the workers had the time to see the change (a tracker interval, and a
//!   slow round before it: see `Ledger::untracked_bound`).
//!
//! Checked in the steady phase, before the drain, of a run with skewed traffic whose workers
//! balance by throughput (see `World::steady`):
//!
//! * **load-balanced** — with faults stopped and the producers going on, the live workers'
//!   loads come within the bound of the leaderless taker's rule and stay there for three
//!   failover times, within forty: no lease the most loaded worker could give would lower its
//!   load enough for the rule to move it (see [`crate::load`]).
//!
//! Checked after the drain (see [`crate::world`]):
//!
//! * **all-processed** — every produced record was processed at least once, or skipped with
//!   a processor's consent (counted apart).
//! * **balanced** — the leases held by the live workers differ by at most one (finished
//!   leases, which the taker never steals, excepted: see [`imbalance`]).
//! * **cleaned-up** — no lease is left that needs no more processing: one whose shard aged
//!   out of the stream, or a finished one whose children all started (recorded on the lease
//!   or, as a Java KCL older than 2.3 left it, not).
//! * **ready** — once the drain converged, every running worker reports ready (its
//!   `/readyz`): nothing it reports about a lease, a failed renewal in particular, outlives its
//!   holding of that lease (a renewal whose attempts outlived the lease in a lease-table outage
//!   once left a worker unready for good).
//! * **graceful-stop** — every worker stops within its graceful-shutdown bound.
//! * **fleet-converged** — KCL 3.x ([`Mode::Fleet`](crate::Mode::Fleet)): once drained, the
//!   fleet's `Migration3.0` item says 3.x, a running worker holds the leader lock, every running
//!   worker runs the 3.x protocol (it followed the item: `lease protocol changed` to
//!   `Assigned`), and every unfinished lease is owned by a running worker, no hand-off under
//!   way. The drain waits for it as for the others; **balanced** is then the leader's balance.
//!
//! KCL 3.x runs also count (not violations): assignments of leases whose owner had renewed
//! them within half a failover time (in fleets that move leases by hand-off), and assignments
//! written by a worker that no longer held the leader lock (see `Stats`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time it was detected.
    pub at: Duration,
    /// The invariant's short name (see the module docs).
    pub invariant: &'static str,
    /// What happened, readably.
    pub message: String,
    /// Worker and shard ids whose trace lines explain it.
    pub focus: Vec<String>,
    /// Trace length when it was detected (the trace printed stops there).
    pub trace_len: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:.3}s] {}: {}",
            self.at.as_secs_f64(),
            self.invariant,
            self.message
        )
    }
}

/// The longest two live workers may legitimately both hold a lease: the failover time plus
/// two sampling periods.
///
/// Every way a lease changes hands while its holder lives ends within the failover time `F`:
///
/// * **Expiry** (the holder stopped renewing: its store calls fail or hang, or it is paused):
///   another worker takes the lease only after seeing its counter unchanged for more than `F`,
///   and it first saw that counter when the holder's last successful write had already
///   started; the holder's expiry watchdog drops the lease `F` after that start. Overlap ≈ 0.
/// * **Steal** (balancing, from a live holder): the holder learns of it at its next renewal
///   (a conflict): within one renewal interval plus one renewal pass (retries, slow calls, the
///   wait for the lease's lock behind a checkpoint write). If that pass hangs (a paused
///   worker, a lease-table outage), the watchdog still drops the lease `F` after the holder's last successful write,
///   which started before the steal.
///
/// So overlap stays below `F`; `sample` (the tracker's period) is added twice for the sampling
/// error at either end. Each run reports its longest overlap (the soak prints the maximum):
/// over 10,000 seeds, 0.74 `F` in scenarios without pauses (steals noticed late because
/// renewals were throttled or slow) and 0.99 `F` with pauses (steals from a stalled worker).
/// Lease-table outages stall a worker's renewals as a pause does: with them, 0.98 `F` without
/// pauses over seeds 0-999.
pub fn overlap_bound(failover: Duration, sample: Duration) -> Duration {
    failover + sample * 2
}

/// Tracks, per lease, since when more than one live worker holds it.
#[derive(Debug, Default)]
pub struct OverlapTracker {
    since: BTreeMap<String, (Duration, Vec<String>)>,
    reported: BTreeMap<String, Duration>,
    /// The longest overlap seen so far.
    pub max_overlap: Duration,
}

impl OverlapTracker {
    /// Record one sample: `holders` maps each lease to the live workers holding it. Returns the
    /// leases whose overlap just exceeded `bound`, with their holders and the overlap so far.
    pub fn sample(
        &mut self,
        now: Duration,
        holders: &BTreeMap<String, Vec<String>>,
        bound: Duration,
    ) -> Vec<(String, Vec<String>, Duration)> {
        let mut out = Vec::new();
        self.since
            .retain(|k, _| holders.get(k).is_some_and(|h| h.len() > 1));
        self.reported.retain(|k, _| self.since.contains_key(k));
        for (key, who) in holders {
            if who.len() < 2 {
                continue;
            }
            let entry = self
                .since
                .entry(key.clone())
                .or_insert_with(|| (now, who.clone()));
            if entry.1 != *who {
                // A different set of workers: a new overlap episode.
                *entry = (now, who.clone());
                self.reported.remove(key);
            }
            let lasted = now - entry.0;
            self.max_overlap = self.max_overlap.max(lasted);
            if lasted > bound && !self.reported.contains_key(key) {
                self.reported.insert(key.clone(), now);
                out.push((key.clone(), who.clone(), lasted));
            }
        }
        out
    }
}

/// The leases one live worker holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Every held lease, as the taker counts them.
    pub held: usize,
    /// Of which finished (`SHARD_END`) leases awaiting clean-up.
    pub finished: usize,
}

/// How unevenly leases are spread, and a readable listing: the most *unfinished* leases a
/// worker holds minus the fewest leases (finished ones included) any worker holds. Balanced
/// means at most 1.
///
/// The taker counts finished leases toward a worker's load (as the Java KCL does) but never
/// steals them, so a worker may legitimately hold more than one lease above another when the
/// surplus is made of finished leases only; with no finished leases this is plain
/// `max - min` of the held counts.
pub fn imbalance(loads: &BTreeMap<String, Load>) -> (usize, String) {
    let max_active = loads
        .values()
        .map(|l| l.held - l.finished)
        .max()
        .unwrap_or(0);
    let min_held = loads.values().map(|l| l.held).min().unwrap_or(0);
    let listing = loads
        .iter()
        .map(|(w, l)| format!("{w}={}({} finished)", l.held, l.finished))
        .collect::<Vec<_>>()
        .join(" ");
    (max_active.saturating_sub(min_held), listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        v.iter()
            .map(|(k, ws)| (k.to_string(), ws.iter().map(|w| w.to_string()).collect()))
            .collect()
    }

    #[test]
    fn overlap_is_reported_once_past_the_bound() {
        let mut t = OverlapTracker::default();
        let b = Duration::from_secs(2);
        let both = holders(&[("s0", &["a", "b"])]);
        assert!(t.sample(Duration::from_secs(10), &both, b).is_empty());
        assert!(t.sample(Duration::from_secs(12), &both, b).is_empty());
        let got = t.sample(Duration::from_millis(12_100), &both, b);
        assert_eq!(got.len(), 1);
        assert!(t.sample(Duration::from_secs(13), &both, b).is_empty());
        assert_eq!(t.max_overlap, Duration::from_secs(3));
        // The overlap ends, then a new one starts from scratch.
        t.sample(Duration::from_secs(14), &holders(&[("s0", &["b"])]), b);
        assert!(t.sample(Duration::from_secs(15), &both, b).is_empty());
    }

    #[test]
    fn finished_leases_may_pile_up_but_unfinished_ones_may_not() {
        let load = |held, finished| Load { held, finished };
        let loads = |a, b| -> BTreeMap<String, Load> {
            [("a".to_string(), a), ("b".to_string(), b)].into()
        };
        assert_eq!(imbalance(&loads(load(3, 0), load(1, 0))).0, 2);
        assert_eq!(imbalance(&loads(load(2, 0), load(1, 0))).0, 1);
        assert_eq!(imbalance(&loads(load(3, 3), load(0, 0))).0, 0);
        assert_eq!(imbalance(&loads(load(4, 2), load(0, 0))).0, 2);
        assert_eq!(
            imbalance(&loads(load(3, 2), load(1, 0))).1,
            "a=3(2 finished) b=1(0 finished)"
        );
    }
}
