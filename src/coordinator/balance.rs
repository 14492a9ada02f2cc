//! Balancing by load without a leader: which lease, if any, this worker should ask a more
//! loaded worker to hand over (the taker's rule 6, see [`taker`](super::taker)).
//!
//! A lease's *weight* is its `throughputKBps` as its owner last wrote it (the figure a KCL 3.x
//! leader balances by), or the mean of the known ones when its owner wrote none yet, but at
//! least a floor: a tenth of that mean, and at least 1 KB/s. The floor lets idle leases still
//! spread by count, and makes differences of a few bytes a second, which vary from one
//! measurement to the next, count for nothing. Above it a lease weighs what it carries, so
//! that light leases are not inflated next to hot ones (which would leave two hot leases
//! together). After traffic stops, the measured figures (averages over about 30 s) fall under
//! the floor within minutes, and balancing comes back to counts. A worker's *load* is the sum
//! of the weights of the unfinished leases it owns (a finished lease does no work).
//!
//! A worker looks at the others from the most loaded down. For the first one that is more
//! loaded than itself by `gap`, it picks the lease that most lowers the larger of their two
//! loads: a lease of weight `w` lowers it by `min(w, gap - w)`. It moves one only when
//! `gap - w`, what is left between the two loads, is at least a quarter of `w` or of the mean
//! lease weight, whichever is smaller, and at least 10 % of the traffic the giver carries on
//! leases above the floor (only measured figures vary). Measured loads vary by a few percent from one measurement to the
//! next: moving a lease back needs the difference to swing by twice that margin. So counts
//! that differ by one (`gap = w`) stay, and without traffic this rule is the count rule; with
//! equal traffic, counts stay within 10 % of the giver's. A hot lease may overshoot (the
//! receiver ends heavier than the giver was light) when that still lowers the larger load: two
//! hot leases on one worker and light ones on the other become one of each. A lease whose
//! owner changed within the cooldown (two failover times) is left alone while its new owner
//! measures it, and cannot bounce on the measurements' noise; a lease its owner has not
//! measured yet is not moved either. A lease
//! being handed over weighs on its receiver (the table names it owner). Up to
//! `max_leases_to_steal_at_one_time` moves are chosen in one round, each as if the ones before
//! had happened.

use super::taker::ObservedLease;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A lease that moved is not moved again for this many failover times: its new owner measures
/// it meanwhile, and a lease cannot bounce on the measurements' noise.
pub(crate) const COOLDOWN_FAILOVERS: u32 = 2;

/// The share of the mean lease throughput every lease weighs at least, ...
const FLOOR_OF_MEAN: f64 = 0.1;
/// ... and the least it weighs, in KB/s.
const MIN_FLOOR_KBPS: f64 = 1.0;
/// What a move must leave between the two loads, at least: this share of the moved lease's
/// weight or of the mean weight, whichever is smaller, ...
const MIN_MARGIN: f64 = 0.25;
/// ... and this share of the giving worker's traffic.
const MIN_MARGIN_OF_TRAFFIC: f64 = 0.1;

/// The balancing weights of a set of leases (see the module docs).
pub(crate) struct Weights<'a> {
    /// Each lease's weight, and its traffic when above the floor (KB/s; 0 at the floor: only
    /// measured traffic varies), by key.
    pub by_key: BTreeMap<&'a str, (f64, f64)>,
    /// The mean weight.
    pub mean: f64,
}

impl<'a> Weights<'a> {
    /// The weights of `leases`.
    pub fn of(leases: &[&'a ObservedLease]) -> Self {
        let known: Vec<f64> = leases
            .iter()
            .filter_map(|o| o.lease.throughput.map(|t| t.kbps()))
            .collect();
        let mean_traffic = if known.is_empty() {
            0.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let floor = (mean_traffic * FLOOR_OF_MEAN).max(MIN_FLOOR_KBPS);
        let by_key: BTreeMap<&str, (f64, f64)> = leases
            .iter()
            .map(|o| {
                let t = o.lease.throughput.map_or(mean_traffic, |t| t.kbps());
                let measured = if t > floor { t } else { 0.0 };
                (o.lease.key.as_str(), (t.max(floor), measured))
            })
            .collect();
        let mean = if by_key.is_empty() {
            0.0
        } else {
            by_key.values().map(|(w, _)| w).sum::<f64>() / by_key.len() as f64
        };
        Weights { by_key, mean }
    }

    /// The weight of `o`.
    fn of_lease(&self, o: &ObservedLease) -> f64 {
        self.by_key[o.lease.key.as_str()].0
    }

    /// The traffic of `o` above the floor, KB/s (see [`Weights::by_key`]).
    fn traffic(&self, o: &ObservedLease) -> f64 {
        self.by_key[o.lease.key.as_str()].1
    }
}

/// What the load rule looks at.
pub(crate) struct LoadView<'a> {
    /// This worker.
    pub worker_id: &'a str,
    /// Unfinished leases owned by a live worker (not available to take), this worker's
    /// included.
    pub owned: Vec<&'a ObservedLease>,
    /// Every worker (owners of `owned`, and this one).
    pub workers: Vec<&'a str>,
    /// Leases this process holds that the scan does not show as its own yet.
    pub held_unseen: usize,
    /// A lease whose owner changed more recently than this is not moved again.
    pub cooldown: Duration,
}

/// The leases, at most `max`, this worker should ask their owners to hand over, one move
/// after the other as if each had happened (see the module docs); ties are broken by `rng`.
pub(crate) fn choose_load_steals<'a>(
    view: &LoadView<'a>,
    max: usize,
    now: Instant,
    rng: &mut impl Rng,
) -> Vec<&'a ObservedLease> {
    let me = view.worker_id;
    let weights = Weights::of(&view.owned);
    let mut load: BTreeMap<&str, Load> =
        view.workers.iter().map(|w| (*w, Load::default())).collect();
    let mut movable: BTreeMap<&str, Vec<&ObservedLease>> = BTreeMap::new();
    for o in &view.owned {
        let Some(owner) = o.lease.owner.as_deref() else {
            continue;
        };
        load.entry(owner)
            .or_default()
            .add(weights.of_lease(o), weights.traffic(o));
        // A lease whose owner has not measured it yet stays: moving it blind could move a hot
        // lease next to another (a new application's leases, a new child shard's).
        if owner != me
            && !o.lease.is_in_handoff()
            && o.lease.throughput.is_some()
            && now.saturating_duration_since(o.owner_since) >= view.cooldown
        {
            movable.entry(owner).or_default().push(o);
        }
    }
    for _ in 0..view.held_unseen {
        load.entry(me).or_default().add(weights.mean, 0.0);
    }
    let mut chosen = Vec::new();
    while chosen.len() < max {
        let Some((victim, lease, w)) = choose_one(me, &load, &movable, &weights, rng) else {
            break;
        };
        let t = weights.traffic(lease);
        load.get_mut(victim).expect("a worker").add(-w, -t);
        load.get_mut(me).expect("this worker").add(w, t);
        movable
            .get_mut(victim)
            .expect("a victim")
            .retain(|o| o.lease.key != lease.lease.key);
        chosen.push(lease);
    }
    chosen
}

/// A worker's load, and the traffic in it that is above the floors (KB/s).
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    total: f64,
    traffic: f64,
}

impl Load {
    fn add(&mut self, weight: f64, traffic: f64) {
        self.total += weight;
        self.traffic += traffic;
    }
}

/// One move by the rule: (victim, lease, its weight).
fn choose_one<'a, 'b>(
    me: &str,
    load: &BTreeMap<&'b str, Load>,
    movable: &BTreeMap<&'b str, Vec<&'a ObservedLease>>,
    weights: &Weights,
    rng: &mut impl Rng,
) -> Option<(&'b str, &'a ObservedLease, f64)> {
    let mine = load.get(me).map_or(0.0, |l| l.total);
    let mut victims: Vec<(&str, Load)> = load
        .iter()
        .filter(|(w, l)| **w != me && l.total > mine)
        .map(|(w, l)| (*w, *l))
        .collect();
    victims.sort_by(|a, b| b.1.total.total_cmp(&a.1.total).then(a.0.cmp(b.0)));
    for (victim, their) in victims {
        let Some(leases) = movable.get(victim) else {
            continue;
        };
        let gap = their.total - mine;
        let floor = MIN_MARGIN_OF_TRAFFIC * their.traffic.max(0.0);
        // What is left between the two loads after the move must outlast the measurements'
        // variation (so the lease does not come back), and the move must lower the larger.
        let ok = |w: f64| w > 0.0 && gap - w >= (MIN_MARGIN * w.min(weights.mean)).max(floor);
        let mut candidates: Vec<(&ObservedLease, f64)> = leases
            .iter()
            .map(|o| (*o, weights.of_lease(o)))
            .filter(|(_, w)| ok(*w))
            .collect();
        candidates.shuffle(rng);
        let gain = |w: f64| w.min(gap - w);
        if let Some((best, w)) = candidates
            .into_iter()
            .max_by(|a, b| gain(a.1).total_cmp(&gain(b.1)))
        {
            return Some((victim, best, w));
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
        choose_load_steals(&view, 1, now, &mut StdRng::seed_from_u64(3))
            .first()
            .map(|o| o.lease.key.clone())
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
        // 260 KB/s: 130 each is one hot lease and three others; the margin (10 % of the
        // giver's traffic) may leave one light lease on the other side.
        let near_even =
            |load: &BTreeMap<String, f64>| load.values().all(|l| (120.0..=140.0).contains(l));
        let (load, moves, _) = settle(table(now, &skewed("a")), &["a", "b"], 20);
        assert!(near_even(&load), "{load:?}");
        assert!(moves <= 4, "{moves} moves");

        // From both hot leases on one worker and the light ones on the other, a hot lease
        // overshoots (the larger load drops from 200 to 170 KB/s), then light ones follow.
        let mut apart = table(now, &skewed("a"));
        for o in &mut apart[2..] {
            o.lease.owner = Some("b".into());
        }
        let (load, moves, _) = settle(apart, &["a", "b"], 20);
        assert!(near_even(&load), "{load:?}");
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
    fn a_joiner_gets_leases_from_busy_workers_holding_many() {
        let now = Instant::now();
        // 4 workers holding 25 leases each at 10 KB/s; a fifth joins.
        let owners: Vec<(&str, Option<f64>)> = ["b", "c", "d", "e"]
            .iter()
            .flat_map(|w| std::iter::repeat_n((*w, Some(10.0)), 25))
            .collect();
        let t = table(now, &owners);
        assert!(steal("a", &t, now).is_some());
        let (_, moves, settled) = settle(t, &["a", "b", "c", "d", "e"], 100);
        let held = |w: &str| {
            settled
                .iter()
                .filter(|o| o.lease.owner.as_deref() == Some(w))
                .count()
        };
        // 20 each is the even spread; the margin (10 % of a giver's traffic) may leave two
        // leases more or less.
        for w in ["a", "b", "c", "d", "e"] {
            assert!((18..=22).contains(&held(w)), "{w} holds {}", held(w));
        }
        assert!(moves <= 21, "{moves} moves");
    }

    #[test]
    fn several_moves_in_one_round_are_chosen_one_after_the_other() {
        let now = Instant::now();
        let t = table(now, &[("b", Some(5.0)); 8]);
        let mut workers = vec!["a", "b"];
        workers.sort();
        let view = LoadView {
            worker_id: "a",
            owned: t.iter().collect(),
            workers,
            held_unseen: 0,
            cooldown: COOLDOWN,
        };
        let mut rng = StdRng::seed_from_u64(1);
        // 0 against 8: four moves even it out, and no more are chosen however many allowed.
        assert_eq!(choose_load_steals(&view, 3, now, &mut rng).len(), 3);
        assert_eq!(choose_load_steals(&view, 10, now, &mut rng).len(), 4);
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
