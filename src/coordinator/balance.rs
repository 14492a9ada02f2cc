//! Balancing by load without a leader: which lease, if any, this worker should ask a more
//! loaded worker to hand over (the taker's rule 6, see [`taker`](super::taker)).
//!
//! A lease's *weight* is its `throughputKBps` as its owner last wrote it (the figure a KCL 3.x
//! leader balances by), or the mean of the known ones when its owner wrote none yet, plus a
//! per-lease share: a tenth of that mean, and at least 1 KB/s. The share lets idle leases
//! still spread by count, and makes differences of a few bytes a second count for nothing.
//! After traffic stops, the measured figures halve at each renewal and fall under the share
//! within a minute, so balancing comes back to counts. A worker's *load* is the sum of the
//! weights of the leases it owns.
//!
//! A worker looks at the others from the most loaded down. For the first one that is more
//! loaded than itself by `gap`, it picks the lease that most lowers the larger of their two
//! loads: a lease of weight `w` lowers it by `min(w, gap - w)`. It moves one only when that is
//! at least a quarter of `w` or of the mean lease weight, whichever is smaller, and at least
//! 5 % of the traffic (KB/s, without the shares) the other worker carries: measured loads
//! vary by a few percent from one measurement to the next, and a move smaller than that would
//! chase the variation back and forth. So a move between counts that differ by one
//! (`gap = w`) never happens, and with equal weights and no traffic this rule is the count
//! rule. A hot lease
//! may overshoot (the receiver ends heavier than the giver) when that still lowers the larger
//! load: two hot leases on one worker and light ones on the other become one of each. The
//! same lease never moves straight back: that would raise the larger load. A lease whose owner
//! changed within the cooldown is left alone while its new owner measures it. A lease being
//! handed over weighs on its receiver (the table names it owner).

use super::taker::ObservedLease;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The share of the mean lease throughput every lease weighs on top of its own.
const PER_LEASE_SHARE: f64 = 0.1;
/// The least every lease weighs on top of its own throughput, in KB/s.
const MIN_PER_LEASE_KBPS: f64 = 1.0;
/// The least a move must lower the larger of the two workers' loads: this share of the moved
/// lease's weight or of the mean weight, whichever is smaller, ...
const MIN_GAIN: f64 = 0.25;
/// ... and this share of the giving worker's traffic.
const MIN_GAIN_OF_TRAFFIC: f64 = 0.05;

/// The mean of the known throughputs (KB/s; 0 when none is known).
fn mean_traffic(leases: &[&ObservedLease]) -> f64 {
    let known: Vec<f64> = leases
        .iter()
        .filter_map(|o| o.lease.throughput.map(|t| t.kbps()))
        .collect();
    if known.is_empty() {
        0.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    }
}

/// What every lease weighs on top of its traffic, with `mean` the mean traffic.
fn share_of(mean: f64) -> f64 {
    (mean * PER_LEASE_SHARE).max(MIN_PER_LEASE_KBPS)
}

/// The balancing weight of each lease (by key), and the mean weight.
pub(crate) fn weights<'a>(leases: &[&'a ObservedLease]) -> (BTreeMap<&'a str, f64>, f64) {
    let mean = mean_traffic(leases);
    let share = share_of(mean);
    let unknown = mean;
    let weights: BTreeMap<&str, f64> = leases
        .iter()
        .map(|o| {
            let t = o.lease.throughput.map_or(unknown, |t| t.kbps());
            (o.lease.key.as_str(), t + share)
        })
        .collect();
    let mean_weight = if weights.is_empty() {
        0.0
    } else {
        weights.values().sum::<f64>() / weights.len() as f64
    };
    (weights, mean_weight)
}

/// What the load rule looks at.
pub(crate) struct LoadView<'a> {
    /// This worker.
    pub worker_id: &'a str,
    /// Leases owned by a live worker (not available to take), this worker's included.
    pub owned: Vec<&'a ObservedLease>,
    /// Every worker (owners of `owned`, and this one).
    pub workers: Vec<&'a str>,
    /// Leases this process holds that the scan does not show as its own yet.
    pub held_unseen: usize,
    /// A lease whose owner changed more recently than this is not moved again.
    pub cooldown: Duration,
}

/// The lease this worker should ask its owner to hand over, if a move would even out the load
/// (see the module docs); ties are broken by `rng`.
pub(crate) fn choose_load_steal<'a>(
    view: &LoadView<'a>,
    now: Instant,
    rng: &mut impl Rng,
) -> Option<&'a ObservedLease> {
    let me = view.worker_id;
    let (weight, mean) = weights(&view.owned);
    let mut load: BTreeMap<&str, f64> = view.workers.iter().map(|w| (*w, 0.0)).collect();
    let mut traffic: BTreeMap<&str, f64> = BTreeMap::new();
    let share = share_of(mean_traffic(&view.owned));
    for o in &view.owned {
        if let Some(owner) = o.lease.owner.as_deref() {
            let w = weight[o.lease.key.as_str()];
            *load.entry(owner).or_default() += w;
            *traffic.entry(owner).or_default() += w - share;
        }
    }
    let mine = load.get(me).copied().unwrap_or_default() + view.held_unseen as f64 * mean;
    let mut victims: Vec<(&str, f64)> = load
        .iter()
        .filter(|(w, l)| **w != me && **l > mine)
        .map(|(w, l)| (*w, *l))
        .collect();
    victims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    for (victim, their) in victims {
        let gap = their - mine;
        let gain = |w: f64| w.min(gap - w);
        let floor = MIN_GAIN_OF_TRAFFIC * traffic.get(victim).copied().unwrap_or_default();
        let mut candidates: Vec<(&ObservedLease, f64)> = view
            .owned
            .iter()
            .filter(|o| {
                o.lease.owner.as_deref() == Some(victim)
                    && !o.lease.checkpoint.is_shard_end()
                    && !o.lease.is_in_handoff()
                    && now.saturating_duration_since(o.owner_since) >= view.cooldown
            })
            .map(|o| (*o, weight[o.lease.key.as_str()]))
            .filter(|(_, w)| gain(*w) >= (MIN_GAIN * w.min(mean)).max(floor))
            .collect();
        candidates.shuffle(rng);
        if let Some((best, _)) = candidates
            .into_iter()
            .max_by(|a, b| gain(a.1).total_cmp(&gain(b.1)))
        {
            return Some(best);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::lease::{Lease, Throughput};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const COOLDOWN: Duration = Duration::from_secs(10);

    /// Leases `(owner, kbps)`, owned for longer than the cooldown at `now`.
    fn table(now: Instant, leases: &[(&str, Option<f64>)]) -> Vec<ObservedLease> {
        leases
            .iter()
            .enumerate()
            .map(|(i, (owner, kbps))| {
                let mut lease = Lease::new(format!("shardId-{i:012}"), Checkpoint::TrimHorizon);
                lease.owner = Some(owner.to_string());
                lease.throughput = kbps.and_then(Throughput::from_kbps);
                ObservedLease {
                    lease,
                    last_change: now,
                    handoff_since: None,
                    owner_since: now - COOLDOWN,
                }
            })
            .collect()
    }

    fn steal<'a>(me: &'a str, leases: &'a [ObservedLease], now: Instant) -> Option<String> {
        let mut workers: Vec<&str> = leases
            .iter()
            .filter_map(|o| o.lease.owner.as_deref())
            .collect();
        workers.push(me);
        workers.sort();
        workers.dedup();
        let view = LoadView {
            worker_id: me,
            owned: leases.iter().collect(),
            workers,
            held_unseen: 0,
            cooldown: COOLDOWN,
        };
        choose_load_steal(&view, now, &mut StdRng::seed_from_u64(3)).map(|o| o.lease.key.clone())
    }

    /// Runs the rule for every worker in turn, moving what it picks at once, until nobody
    /// moves anything (at most `rounds` passes); returns the loads and the number of moves.
    fn settle(
        mut leases: Vec<ObservedLease>,
        workers: &[&str],
        rounds: usize,
    ) -> (BTreeMap<String, f64>, usize, Vec<ObservedLease>) {
        let now = Instant::now();
        let mut moves = 0;
        for _ in 0..rounds {
            let mut moved = false;
            for w in workers {
                if let Some(key) = steal(w, &leases, now) {
                    let l = leases.iter_mut().find(|o| o.lease.key == key).unwrap();
                    l.lease.owner = Some(w.to_string());
                    moves += 1;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        let mut load: BTreeMap<String, f64> =
            workers.iter().map(|w| (w.to_string(), 0.0)).collect();
        for o in &leases {
            *load.get_mut(o.lease.owner.as_deref().unwrap()).unwrap() +=
                o.lease.throughput.unwrap().kbps();
        }
        (load, moves, leases)
    }

    fn skewed(owner: &str) -> Vec<(&str, Option<f64>)> {
        let mut v = vec![(owner, Some(100.0)), (owner, Some(100.0))];
        v.extend(std::iter::repeat_n((owner, Some(10.0)), 6));
        v
    }

    #[test]
    fn two_hot_leases_end_on_two_workers_with_the_rest_shared() {
        let now = Instant::now();
        let (load, moves, _) = settle(table(now, &skewed("a")), &["a", "b"], 20);
        // 260 KB/s: 130 each (one hot lease and three others).
        assert_eq!(load["a"], 130.0, "{load:?}");
        assert_eq!(load["b"], 130.0, "{load:?}");
        assert!(moves <= 4, "{moves} moves");

        // From both hot leases on one worker and the light ones on the other, a hot lease
        // overshoots (the larger load drops from 200 to 170 KB/s), then light ones follow.
        let mut apart = table(now, &skewed("a"));
        for o in &mut apart[2..] {
            o.lease.owner = Some("b".into());
        }
        let (load, moves, _) = settle(apart, &["a", "b"], 20);
        assert_eq!((load["a"], load["b"]), (130.0, 130.0), "{load:?}");
        assert!(moves <= 4, "{moves} moves");

        let (load, _, _) = settle(table(now, &skewed("a")), &["a", "b", "c", "d"], 40);
        // No split within 20 % of 65 exists; the best one keeps each hot lease alone.
        let mut sorted: Vec<f64> = load.values().copied().collect();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sorted, vec![30.0, 30.0, 100.0, 100.0], "{load:?}");
    }

    #[test]
    fn with_equal_weights_it_is_the_count_rule() {
        let now = Instant::now();
        let mut t = table(now, &[("b", Some(5.0)); 4]);
        // 1 against 3: a lease moves.
        t[0].lease.owner = Some("a".into());
        assert!(steal("a", &t, now).is_some());
        // 2 against 2, and 2 against 1 (a third worker's view): nothing moves.
        t[1].lease.owner = Some("a".into());
        assert_eq!(steal("a", &t, now), None);
        assert_eq!(steal("b", &t, now), None);
        t[3].lease.owner = Some("c".into());
        assert_eq!(steal("c", &t, now), None);
        // Idle leases (0 KB/s, or never measured) spread by count too, and so do leases
        // whose traffic is a few bytes a second, however uneven.
        let idle = table(now, &[("b", Some(0.0)), ("b", None), ("b", Some(0.0))]);
        assert!(steal("a", &idle, now).is_some());
        let mut trickle = table(now, &[("b", Some(0.001)); 4]);
        trickle[0].lease.throughput = Throughput::from_kbps(0.03);
        trickle[1].lease.owner = Some("a".into());
        assert!(steal("a", &trickle, now).is_some(), "1 against 3");
        trickle[2].lease.owner = Some("a".into());
        assert_eq!(steal("a", &trickle, now), None, "2 against 2");
        assert_eq!(steal("b", &trickle, now), None, "2 against 2");
    }

    #[test]
    fn a_lone_hot_lease_is_not_moved_to_an_idle_worker() {
        let now = Instant::now();
        let t = table(now, &[("b", Some(100.0)), ("c", Some(1.0))]);
        assert_eq!(steal("a", &t, now), None, "it would only move the hot spot");
        // But a light lease of the next worker is.
        let t = table(
            now,
            &[("b", Some(100.0)), ("c", Some(1.0)), ("c", Some(1.0))],
        );
        let got = steal("a", &t, now).expect("a light lease of c");
        assert!(got.ends_with('1') || got.ends_with('2'), "{got}");
    }

    #[test]
    fn no_lease_moves_back_and_forth() {
        let now = Instant::now();
        let (_, _, settled) = settle(table(now, &skewed("a")), &["a", "b"], 20);
        for w in ["a", "b"] {
            assert_eq!(
                steal(w, &settled, now),
                None,
                "{w} would move a lease again"
            );
        }
    }

    #[test]
    fn a_lease_that_just_moved_is_left_alone_and_one_moving_weighs_on_its_receiver() {
        let now = Instant::now();
        let mut t = table(now, &[("b", Some(5.0)); 3]);
        for o in &mut t {
            o.owner_since = now - COOLDOWN / 2;
        }
        assert_eq!(
            steal("a", &t, now),
            None,
            "owned for less than the cooldown"
        );
        let mut t = table(now, &[("b", Some(5.0)); 4]);
        t[0].lease.owner = Some("a".into());
        t[0].lease.checkpoint_owner = Some("b".into());
        assert!(steal("a", &t, now).is_some(), "1 (moving) against 3");
        t[1].lease.owner = Some("a".into());
        t[1].lease.checkpoint_owner = Some("b".into());
        assert_eq!(steal("a", &t, now), None, "2 (moving) against 2");
    }
}
