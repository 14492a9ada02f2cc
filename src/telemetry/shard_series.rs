//! The series of one shard (the catalogue's metrics with a `ShardId`), kept apart from the
//! exporter's registry so that they can be forgotten together when the worker lets the shard
//! go, which the exporter's registry cannot do (it forgets by idleness only, and an idle shard
//! that is still held must stay). Rendered in the text format next to the exporter's page.
//!
//! A worker takes hundreds of shards at once, so a shard's series are cheap to make: one
//! allocation per series (plus its key), no sample buffer. An exporter recorder per shard, as
//! before, cost ~50 µs each (its registry asks the OS for the number of CPUs when it is made).
//!
//! The shard is *held* while a handle of any of its series lives outside this store (the
//! library keeps them while it holds the lease): the store keeps one reference to each
//! series, every handle another.

use crate::sync::Mutex;
use metrics::atomics::AtomicU64;
use metrics::{Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key};
use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// One shard's series by Prometheus key.
#[derive(Default)]
pub(super) struct ShardSeries {
    /// When the upkeep first saw no handle alive (reset when one is registered again).
    pub(super) released: Mutex<Option<Instant>>,
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, Arc<ScaledGauge>>>,
    histograms: Mutex<HashMap<Key, Arc<Buckets>>>,
}

/// A gauge (f64 bits) recorded in one unit and served in another (`divisor`: 1000 for
/// milliseconds served as seconds).
struct ScaledGauge {
    value: AtomicU64,
    divisor: f64,
}

impl GaugeFn for ScaledGauge {
    fn increment(&self, value: f64) {
        self.value.increment(value / self.divisor);
    }
    fn decrement(&self, value: f64) {
        self.value.decrement(value / self.divisor);
    }
    fn set(&self, value: f64) {
        self.value.set(value / self.divisor);
    }
}

/// A histogram: its buckets, counted as samples come (a shard's histograms are recorded by
/// that shard's tasks only, so the lock is uncontended).
struct Buckets {
    divisor: f64,
    counts: Mutex<Counts>,
}

struct Counts {
    /// Upper bounds, inclusive, ascending.
    bounds: &'static [f64],
    /// Samples at or below each bound (cumulative, as Prometheus serves them).
    at_or_below: Vec<u64>,
    sum: f64,
    count: u64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let value = value / self.divisor;
        let mut c = self.counts.lock();
        let first = c.bounds.partition_point(|&b| b < value);
        for n in &mut c.at_or_below[first..] {
            *n += 1;
        }
        c.sum += value;
        c.count += 1;
    }
}

impl ShardSeries {
    /// The counter of `key` (the same series for every handle of one key).
    pub(super) fn counter(&self, key: Key) -> Counter {
        Counter::from_arc(self.counters.lock().entry(key).or_default().clone())
    }

    /// The gauge of `key`, its values divided by `divisor`.
    pub(super) fn gauge(&self, key: Key, divisor: f64) -> Gauge {
        let mut gauges = self.gauges.lock();
        let g = gauges.entry(key).or_insert_with(|| {
            Arc::new(ScaledGauge {
                value: AtomicU64::new(0),
                divisor,
            })
        });
        Gauge::from_arc(g.clone())
    }

    /// The histogram of `key`, its values divided by `divisor`, with these bucket bounds
    /// (upper, inclusive, ascending).
    pub(super) fn histogram(&self, key: Key, bounds: &'static [f64], divisor: f64) -> Histogram {
        let mut histograms = self.histograms.lock();
        let h = histograms.entry(key).or_insert_with(|| {
            Arc::new(Buckets {
                divisor,
                counts: Mutex::new(Counts {
                    bounds,
                    at_or_below: vec![0; bounds.len()],
                    sum: 0.0,
                    count: 0,
                }),
            })
        });
        Histogram::from_arc(h.clone())
    }

    /// Whether a handle of any of the shard's series lives outside this store.
    pub(super) fn held(&self) -> bool {
        fn outside<T>(series: &Mutex<HashMap<Key, Arc<T>>>) -> bool {
            series.lock().values().any(|s| Arc::strong_count(s) > 1)
        }
        outside(&self.counters) || outside(&self.gauges) || outside(&self.histograms)
    }

    /// Add this shard's samples to `page`, by family.
    fn render_into(&self, page: &mut Page) {
        for (key, value) in self.counters.lock().iter() {
            let line = sample_line(key.name(), "", key, None, value.load(Ordering::Relaxed));
            page.add(key.name(), "counter", line);
        }
        for (key, g) in self.gauges.lock().iter() {
            let value = f64::from_bits(g.value.load(Ordering::Relaxed));
            let line = sample_line(key.name(), "", key, None, value);
            page.add(key.name(), "gauge", line);
        }
        for (key, h) in self.histograms.lock().iter() {
            let c = h.counts.lock();
            let name = key.name();
            let mut lines = String::new();
            for (le, n) in c.bounds.iter().zip(&c.at_or_below) {
                lines += &sample_line(name, "_bucket", key, Some(&le.to_string()), n);
            }
            lines += &sample_line(name, "_bucket", key, Some("+Inf"), c.count);
            lines += &sample_line(name, "_sum", key, None, c.sum);
            lines += &sample_line(name, "_count", key, None, c.count);
            page.add(name, "histogram", lines);
        }
    }
}

/// `name{labels} value` and a newline, with an `le` label last if given.
fn sample_line(
    name: &str,
    suffix: &str,
    key: &Key,
    le: Option<&str>,
    value: impl std::fmt::Display,
) -> String {
    let mut line = format!("{name}{suffix}");
    let labels = key
        .labels()
        .map(|l| (l.key(), l.value()))
        .chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in labels.enumerate() {
        let sep = if i == 0 { '{' } else { ',' };
        let _ = write!(line, "{sep}{k}=\"{}\"", sanitize_label_value(v));
    }
    if key.labels().next().is_some() || le.is_some() {
        line.push('}');
    }
    let _ = writeln!(line, " {value}");
    line
}

/// The shards' samples by family name, with each family's type.
#[derive(Default)]
struct Page {
    families: BTreeMap<String, (&'static str, String)>,
}

impl Page {
    fn add(&mut self, name: &str, kind: &'static str, lines: String) {
        let family = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| (kind, String::new()));
        family.1 += &lines;
    }
}

/// Every shard's series as one text-format page: per family its `# HELP` line (from
/// `help`, the family's description, if any), `# TYPE` line and samples.
pub(super) fn render<'a>(
    shards: impl Iterator<Item = &'a ShardSeries>,
    help: impl Fn(&str) -> Option<String>,
) -> String {
    let mut page = Page::default();
    for s in shards {
        s.render_into(&mut page);
    }
    let mut out = String::new();
    for (name, (kind, samples)) in page.families {
        if let Some(text) = help(&name) {
            write_help_line(&mut out, &name, None, None, &text);
        }
        write_type_line(&mut out, &name, None, None, kind);
        out += &samples;
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Label;

    fn key(name: &'static str) -> Key {
        Key::from_parts(
            name,
            vec![
                Label::from_static_parts("operation", "ProcessTask"),
                Label::from_static_parts("shard_id", "shard-\"1\""),
            ],
        )
    }

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let s = ShardSeries::default();
        s.counter(key("c_total")).increment(3);
        s.counter(key("c_total")).increment(1);
        s.gauge(key("g"), 1000.0).set(1500.0);
        let h = s.histogram(key("h_seconds"), &[0.1, 1.0], 1.0);
        h.record(0.05);
        h.record(0.5);
        h.record(1.0);
        h.record(5.0);
        let page = render([&s].into_iter(), |name| {
            (name == "g").then(|| "a gauge".to_string())
        });
        let labels = r#"operation="ProcessTask",shard_id="shard-\"1\"""#;
        assert_eq!(
            page,
            format!(
                "# TYPE c_total counter\nc_total{{{labels}}} 4\n\n\
                 # HELP g a gauge\n# TYPE g gauge\ng{{{labels}}} 1.5\n\n\
                 # TYPE h_seconds histogram\n\
                 h_seconds_bucket{{{labels},le=\"0.1\"}} 1\n\
                 h_seconds_bucket{{{labels},le=\"1\"}} 3\n\
                 h_seconds_bucket{{{labels},le=\"+Inf\"}} 4\n\
                 h_seconds_sum{{{labels}}} 6.55\n\
                 h_seconds_count{{{labels}}} 4\n\n"
            )
        );
    }

    #[test]
    fn held_while_a_handle_of_any_series_lives() {
        let s = ShardSeries::default();
        assert!(!s.held(), "no series yet");
        let c = s.counter(key("c_total"));
        let h = s.histogram(key("h_seconds"), &[1.0], 1.0);
        assert!(s.held());
        drop(c);
        assert!(s.held(), "the histogram's handle lives");
        drop(h);
        assert!(!s.held());
        let g = s.gauge(key("g"), 1.0);
        assert!(s.held(), "registered again");
        drop(g);
        assert!(!s.held());
    }
}
