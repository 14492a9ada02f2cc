//! Eventually consistent scans of the lease table.
//!
//! DynamoDB's `Scan` (which `list_leases` uses, as the Java KCL does) reads eventually
//! consistently: an item written a moment ago may come back as it was before the write, or a
//! just-created item may be missing and a just-deleted one still present. Single-item reads
//! (`get_lease`) are strongly consistent and conditional writes always see the latest item.
//!
//! [`EventualScans`] keeps, for every lease, the versions it replaced in the last `max_lag`
//! (shared by every worker's [`crate::store::SimLeaseStore`], which records each applied
//! write), and turns a fresh scan into a stale one: with the scenario's probability a scan is
//! read `lag` in the past (`lag` up to `max_lag`), and then each item independently, with the
//! per-item probability, is shown as it was at that moment.

use kinesis_client::lease::Lease;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How stale scans are.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StaleScanRates {
    /// Probability that a scan is stale at all.
    pub per_scan: f64,
    /// In a stale scan, the probability that an item recently written is shown as before.
    pub per_item: f64,
    /// How far in the past a stale scan reads at most.
    pub max_lag: Duration,
}

/// One version a write replaced: what the item was (`None`: absent) until `replaced_at`.
#[derive(Debug, Clone)]
struct Replaced {
    replaced_at: Instant,
    before: Option<Lease>,
}

#[derive(Debug, Default)]
struct History {
    /// Per lease key, oldest first.
    replaced: BTreeMap<String, VecDeque<Replaced>>,
}

/// The table's recent history, and the draws that make scans stale.
#[derive(Debug)]
pub struct EventualScans {
    rates: StaleScanRates,
    rng: Mutex<StdRng>,
    history: Mutex<History>,
}

impl EventualScans {
    /// Stale scans at `rates`, drawing from `seed`.
    pub fn new(rates: StaleScanRates, seed: u64) -> Self {
        EventualScans {
            rates,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            history: Mutex::new(History::default()),
        }
    }

    fn active(&self) -> bool {
        self.rates.per_scan > 0.0 && !self.rates.max_lag.is_zero()
    }

    /// A write to `key` applied now, replacing `before` (`None`: the item did not exist).
    pub fn record_write(&self, key: &str, before: Option<Lease>) {
        if !self.active() {
            return;
        }
        let now = Instant::now();
        let horizon = now.checked_sub(self.rates.max_lag);
        let mut h = self.history.lock().unwrap();
        let versions = h.replaced.entry(key.to_string()).or_default();
        versions.push_back(Replaced {
            replaced_at: now,
            before,
        });
        if let Some(horizon) = horizon {
            while versions.front().is_some_and(|v| v.replaced_at < horizon) {
                versions.pop_front();
            }
        }
    }

    /// `fresh` (the table now, by key order) as a scan may return it. Returns the lag when the
    /// scan is stale, with the keys shown as they were.
    pub fn scan(&self, fresh: Vec<Lease>) -> (Vec<Lease>, Option<(Duration, Vec<String>)>) {
        if !self.active() {
            return (fresh, None);
        }
        let mut rng = self.rng.lock().unwrap();
        if rng.random::<f64>() >= self.rates.per_scan {
            return (fresh, None);
        }
        let lag =
            Duration::from_millis(rng.random_range(1..=self.rates.max_lag.as_millis() as u64));
        let Some(as_of) = Instant::now().checked_sub(lag) else {
            return (fresh, None);
        };
        let mut table: BTreeMap<String, Lease> =
            fresh.into_iter().map(|l| (l.key.clone(), l)).collect();
        let mut stale = Vec::new();
        let h = self.history.lock().unwrap();
        for (key, versions) in &h.replaced {
            // The version at `as_of` is what the first write after it replaced.
            let Some(first_after) = versions.iter().find(|v| v.replaced_at > as_of) else {
                continue;
            };
            if !rng.random_bool(self.rates.per_item) {
                continue;
            }
            match &first_after.before {
                Some(old) => table.insert(key.clone(), old.clone()),
                None => table.remove(key),
            };
            stale.push(key.clone());
        }
        (table.into_values().collect(), Some((lag, stale)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_client::Checkpoint;

    fn lease(key: &str, counter: u64) -> Lease {
        let mut l = Lease::new(key, Checkpoint::TrimHorizon);
        l.counter = counter;
        l
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_scan_shows_items_as_they_were() {
        let scans = EventualScans::new(
            StaleScanRates {
                per_scan: 1.0,
                per_item: 1.0,
                max_lag: Duration::from_millis(500),
            },
            7,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // a created (absent before), b renewed from counter 1 to 2, c deleted.
        scans.record_write("a", None);
        scans.record_write("b", Some(lease("b", 1)));
        scans.record_write("c", Some(lease("c", 5)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (seen, stale) = scans.scan(vec![lease("a", 0), lease("b", 2)]);
        let (lag, keys) = stale.expect("every scan is stale");
        assert!(lag <= Duration::from_millis(500));
        if lag > Duration::from_millis(1) {
            assert_eq!(keys, ["a", "b", "c"]);
            let counters: Vec<(String, u64)> =
                seen.iter().map(|l| (l.key.clone(), l.counter)).collect();
            assert_eq!(counters, [("b".into(), 1), ("c".into(), 5)]);
        }
        // Long after the writes, a scan is fresh whatever the draws.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (seen, _) = scans.scan(vec![lease("a", 0), lease("b", 2)]);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].counter, 2);
    }
}
