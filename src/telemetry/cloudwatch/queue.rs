//! The publisher's bounded queue of datums, merged by key (the Java KCL's
//! `MetricAccumulatingQueue`): a datum whose key is already queued is merged into it; a new
//! key beyond the capacity is dropped (and counted by the caller).

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

/// A metric's identity: its name and dimensions (after filtering).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DatumKey {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
}

/// A statistic set: what one datum carries (as the Java KCL sends them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub count: f64,
}

impl Stats {
    pub fn one(v: f64) -> Self {
        Stats {
            sum: v,
            min: v,
            max: v,
            count: 1.0,
        }
    }

    pub fn add(&mut self, v: f64) {
        self.merge(&Stats::one(v));
    }

    pub fn merge(&mut self, o: &Stats) {
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
    }
}

/// One datum ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Datum {
    pub key: DatumKey,
    pub unit: Option<metrics::Unit>,
    pub stats: Stats,
    pub timestamp: SystemTime,
}

/// Datums in arrival order, at most `capacity` distinct keys.
#[derive(Debug)]
pub(crate) struct Queue {
    capacity: usize,
    order: VecDeque<DatumKey>,
    by_key: HashMap<DatumKey, Datum>,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            by_key: HashMap::new(),
        }
    }

    /// Queue `d`, merging it into a queued datum of the same key. False when it was dropped
    /// (a new key and the queue is full).
    pub fn offer(&mut self, d: Datum) -> bool {
        if let Some(q) = self.by_key.get_mut(&d.key) {
            q.stats.merge(&d.stats);
            q.timestamp = q.timestamp.max(d.timestamp);
            return true;
        }
        if self.order.len() >= self.capacity {
            return false;
        }
        self.order.push_back(d.key.clone());
        self.by_key.insert(d.key.clone(), d);
        true
    }

    /// Up to `n` datums, oldest first.
    pub fn drain(&mut self, n: usize) -> Vec<Datum> {
        let mut out = Vec::with_capacity(n.min(self.order.len()));
        while out.len() < n {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.by_key.remove(&k) {
                out.push(d);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(name: &str, v: f64) -> Datum {
        Datum {
            key: DatumKey {
                name: name.into(),
                dimensions: vec![("Operation".into(), "X".into())],
            },
            unit: None,
            stats: Stats::one(v),
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn merges_same_key_and_drops_new_keys_beyond_capacity() {
        let mut q = Queue::new(2);
        assert!(q.offer(datum("a", 1.0)));
        assert!(q.offer(datum("b", 5.0)));
        assert!(q.offer(datum("a", 3.0)), "same key merges even when full");
        assert!(
            !q.offer(datum("c", 1.0)),
            "a new key beyond capacity is dropped"
        );
        assert_eq!(q.len(), 2);
        let out = q.drain(10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key.name, "a");
        assert_eq!(
            out[0].stats,
            Stats {
                sum: 4.0,
                min: 1.0,
                max: 3.0,
                count: 2.0
            }
        );
        assert!(q.is_empty());
        assert!(q.offer(datum("c", 1.0)), "room again after draining");
    }

    #[test]
    fn drains_oldest_first_in_batches() {
        let mut q = Queue::new(100);
        for i in 0..45 {
            q.offer(datum(&format!("m{i:02}"), 1.0));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(q.drain(20).len()))
            .take_while(|n| *n > 0)
            .collect();
        assert_eq!(sizes, vec![20, 20, 5]);
    }
}
