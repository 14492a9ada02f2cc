//! The series of one shard (the catalogue's metrics with a `ShardId`), kept apart from the
//! exporter's registry so that they can be forgotten together when the worker lets the shard
//! go, which the exporter's registry cannot do (it forgets by idleness only, and an idle shard
//! that is still held must stay). Rendered in the text format next to the exporter's page.
//!
//! A shard's series cost a few small maps: a worker takes hundreds of shards at once, and a
//! recorder of the exporter per shard cost ~50 µs each (its registry asks the OS for the
//! number of CPUs when it is made).

use crate::sync::Mutex;
use metrics::atomics::AtomicU64;
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key};
use metrics_exporter_prometheus::formatting::{sanitize_label_value, write_type_line};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// One shard's series: counters, gauges (f64 bits) and bucketed histograms, by Prometheus key.
#[derive(Default)]
pub(super) struct ShardSeries {
    /// Cloned into every handle of the shard's metrics: the shard is held while a clone lives.
    pub(super) held: Arc<()>,
    /// When the upkeep first saw no handle alive (reset when one is registered again).
    pub(super) released: Mutex<Option<Instant>>,
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Buckets>>,
}

/// A histogram: its buckets, counted as samples come (a shard's histograms are recorded by
/// that shard's tasks only, so the lock is uncontended; no sample buffer to drain).
#[derive(Clone)]
struct Buckets(Arc<Mutex<metrics_util::storage::Histogram>>);

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        self.0.lock().record(value);
    }
}

impl ShardSeries {
    /// The counter of `key` (the same series for every handle of one key).
    pub(super) fn counter(&self, key: &Key) -> Counter {
        let c = self.counters.lock().entry(key.clone()).or_default().clone();
        Counter::from_arc(c)
    }

    /// The gauge of `key`.
    pub(super) fn gauge(&self, key: &Key) -> Gauge {
        let g = self.gauges.lock().entry(key.clone()).or_default().clone();
        Gauge::from_arc(g)
    }

    /// The histogram of `key`, with these bucket bounds (upper, inclusive; not empty).
    pub(super) fn histogram(&self, key: &Key, bounds: &[f64]) -> Histogram {
        let mut histograms = self.histograms.lock();
        let h = histograms.entry(key.clone()).or_insert_with(|| {
            Buckets(Arc::new(Mutex::new(
                metrics_util::storage::Histogram::new(bounds)
                    .expect("the catalogue's buckets are not empty"),
            )))
        });
        Histogram::from_arc(Arc::new(h.clone()))
    }

    /// Add this shard's samples to `page`, by family.
    fn render_into(&self, page: &mut Page) {
        for (key, value) in self.counters.lock().iter() {
            let line = sample_line(key.name(), "", key, None, value.load(Ordering::Relaxed));
            page.add(key.name(), "counter", line);
        }
        for (key, value) in self.gauges.lock().iter() {
            let value = f64::from_bits(value.load(Ordering::Relaxed));
            let line = sample_line(key.name(), "", key, None, value);
            page.add(key.name(), "gauge", line);
        }
        for (key, h) in self.histograms.lock().iter() {
            let h = h.0.lock();
            let name = key.name();
            let mut lines = String::new();
            for (le, count) in h.buckets() {
                lines += &sample_line(name, "_bucket", key, Some(&le.to_string()), count);
            }
            lines += &sample_line(name, "_bucket", key, Some("+Inf"), h.count());
            lines += &sample_line(name, "_sum", key, None, h.sum());
            lines += &sample_line(name, "_count", key, None, h.count());
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
            metrics_exporter_prometheus::formatting::write_help_line(
                &mut out, &name, None, None, &text,
            );
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
        s.counter(&key("c_total")).increment(3);
        s.counter(&key("c_total")).increment(1);
        s.gauge(&key("g")).set(1.5);
        let h = s.histogram(&key("h_seconds"), &[0.1, 1.0]);
        h.record(0.05);
        h.record(0.5);
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
                 h_seconds_bucket{{{labels},le=\"1\"}} 2\n\
                 h_seconds_bucket{{{labels},le=\"+Inf\"}} 3\n\
                 h_seconds_sum{{{labels}}} 5.55\n\
                 h_seconds_count{{{labels}}} 3\n\n"
            )
        );
        // Rendered samples stay counted.
        h.record(0.2);
        assert!(render([&s].into_iter(), |_| None)
            .contains(&format!("h_seconds_count{{{labels}}} 4\n")));
    }
}
