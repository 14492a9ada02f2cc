//! The `metrics` recorder side of the CloudWatch exporter: every metric handle accumulates its
//! samples into a statistic set (sum, minimum, maximum, count), which the publisher takes
//! every buffer period. Recording is a short lock on one metric's cell: it never waits for
//! CloudWatch.

use super::queue::{Datum, DatumKey, Stats};
use crate::sync::{Mutex, RwLock};
use crate::telemetry::names;
use crate::telemetry::MetricsLevel;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// One metric's samples since the last flush.
#[derive(Debug, Default)]
struct Cell {
    state: Mutex<CellState>,
}

#[derive(Debug, Default)]
struct CellState {
    stats: Option<Stats>,
    /// A gauge's current value (for `increment` / `decrement`).
    last: f64,
}

impl Cell {
    fn sample(&self, v: f64) {
        let mut s = self.state.lock();
        s.last = v;
        match &mut s.stats {
            Some(st) => st.add(v),
            None => s.stats = Some(Stats::one(v)),
        }
    }

    fn adjust(&self, delta: f64) {
        let v = self.state.lock().last + delta;
        self.sample(v);
    }

    fn take(&self) -> Option<Stats> {
        self.state.lock().stats.take()
    }
}

/// A handle: samples go to one cell, or two (a shard's `MillisBehindLatest` also feeds the
/// application-wide one, as Java's `ApplicationTracker`).
struct Handle(Vec<Arc<Cell>>);

impl Handle {
    fn sample(&self, v: f64) {
        for c in &self.0 {
            c.sample(v);
        }
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.sample(value as f64);
    }
    fn absolute(&self, value: u64) {
        self.sample(value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        for c in &self.0 {
            c.adjust(value);
        }
    }
    fn decrement(&self, value: f64) {
        for c in &self.0 {
            c.adjust(-value);
        }
    }
    fn set(&self, value: f64) {
        self.sample(value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.sample(value);
    }
}

/// Which metrics and dimensions are sent.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub level: MetricsLevel,
    /// `None`: every dimension (Java `ALL`).
    pub dimensions: Option<BTreeSet<String>>,
}

impl Filter {
    fn keeps_dimension(&self, name: &str) -> bool {
        name == names::OPERATION || self.dimensions.as_ref().is_none_or(|d| d.contains(name))
    }
}

/// Shared between the recorder and its publisher.
#[derive(Debug)]
pub(crate) struct Registry {
    filter: Filter,
    cells: RwLock<HashMap<DatumKey, Arc<Cell>>>,
    units: RwLock<HashMap<String, Unit>>,
}

impl Registry {
    pub(crate) fn new(filter: Filter) -> Self {
        Registry {
            filter,
            cells: RwLock::default(),
            units: RwLock::default(),
        }
    }

    /// Metrics known now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cells.read().len()
    }

    fn cell(&self, key: DatumKey) -> Arc<Cell> {
        if let Some(c) = self.cells.read().get(&key) {
            return c.clone();
        }
        self.cells.write().entry(key).or_default().clone()
    }

    fn datum_key(&self, key: &Key) -> DatumKey {
        DatumKey {
            name: key.name().to_string(),
            dimensions: key
                .labels()
                .filter(|l| self.filter.keeps_dimension(l.key()))
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect(),
        }
    }

    fn handle(&self, key: &Key, metadata: &Metadata<'_>) -> Option<Handle> {
        if !self
            .filter
            .level
            .includes(MetricsLevel::of_facade_level(metadata.level()))
        {
            return None;
        }
        let mut cells = vec![self.cell(self.datum_key(key))];
        let per_shard_lag = key.name() == names::MILLIS_BEHIND_LATEST
            && key
                .labels()
                .any(|l| l.key() == names::OPERATION && l.value() == names::OP_PROCESS_TASK);
        if per_shard_lag {
            cells.push(self.cell(DatumKey {
                name: names::MILLIS_BEHIND_LATEST.to_string(),
                dimensions: vec![(
                    names::OPERATION.to_string(),
                    names::OP_APPLICATION_TRACKER.to_string(),
                )],
            }));
        }
        Some(Handle(cells))
    }

    fn unit_of(&self, name: &str) -> Option<Unit> {
        if let Some(u) = self.units.read().get(name) {
            return Some(*u);
        }
        names::kind_and_unit(name).map(|(_, u)| u)
    }

    /// Every metric sampled since the last call, as datums stamped `now`; metrics not sampled
    /// and no longer referenced by any handle are forgotten.
    pub(crate) fn take(&self, now: SystemTime) -> Vec<Datum> {
        let mut out = Vec::new();
        let mut idle = Vec::new();
        for (key, cell) in self.cells.read().iter() {
            match cell.take() {
                Some(stats) => out.push(Datum {
                    key: key.clone(),
                    unit: self.unit_of(&key.name),
                    stats,
                    timestamp: now,
                }),
                None if Arc::strong_count(cell) == 1 => idle.push(key.clone()),
                None => {}
            }
        }
        if !idle.is_empty() {
            let mut cells = self.cells.write();
            for k in idle {
                if cells.get(&k).is_some_and(|c| Arc::strong_count(c) == 1) {
                    cells.remove(&k);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// The CloudWatch exporter's `metrics` recorder: install it (alone with
/// [`metrics::set_global_recorder`], or with others through
/// [`telemetry::install`](crate::telemetry::install)).
#[derive(Debug, Clone)]
pub struct CloudWatchRecorder {
    pub(crate) registry: Arc<Registry>,
}

impl CloudWatchRecorder {
    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(u) = unit {
            self.registry
                .units
                .write()
                .insert(key.as_str().to_string(), u);
        }
    }
}

impl Recorder for CloudWatchRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.registry
            .handle(key, metadata)
            .map_or_else(Counter::noop, |h| Counter::from_arc(Arc::new(h)))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.registry
            .handle(key, metadata)
            .map_or_else(Gauge::noop, |h| Gauge::from_arc(Arc::new(h)))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.registry
            .handle(key, metadata)
            .map_or_else(Histogram::noop, |h| Histogram::from_arc(Arc::new(h)))
    }
}
