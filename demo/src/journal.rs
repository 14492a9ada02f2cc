//! What every processor saw, from the Rust workers (in memory) and the Python children (a file).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One record delivered to one processor instance.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Microseconds since the epoch when the processor got it.
    pub at_us: u64,
    /// The worker (`rust-a`, `rust-b`, `python`).
    pub worker: String,
    /// The processor instance (one per lease tenure).
    pub instance: String,
    /// Shard id.
    pub shard: String,
    /// Sequence number.
    pub seq: String,
    /// Payload.
    pub payload: String,
}

/// Deliveries (the lag comes from the metrics: see `lag.rs`).
#[derive(Debug, Default, Clone)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    python_offset: u64,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

impl Journal {
    pub fn record(&self, deliveries: Vec<Delivery>) {
        self.inner.lock().unwrap().deliveries.extend(deliveries);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().deliveries.clone()
    }

    /// Per shard: deliveries so far.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in &self.inner.lock().unwrap().deliveries {
            *m.entry(d.shard.clone()).or_default() += 1;
        }
        m
    }

    /// Read the lines the Python children appended since the last call.
    pub fn read_python_output(&self, path: &std::path::Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let mut j = self.inner.lock().unwrap();
        if f.seek(SeekFrom::Start(j.python_offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            return;
        }
        // Only whole lines; a partial last line is read next time.
        let complete = buf.rfind('\n').map_or(0, |i| i + 1);
        j.python_offset += complete as u64;
        for line in buf[..complete].lines() {
            let parts: Vec<&str> = line.splitn(6, ' ').collect();
            if parts.len() != 6 {
                continue;
            }
            // parts[4] is the batch's lag: the view takes the lag from the metrics.
            let Ok(at_us) = parts[0].parse::<u64>() else {
                continue;
            };
            j.deliveries.push(Delivery {
                at_us,
                worker: "python".into(),
                instance: format!("python-pid-{}", parts[1]),
                shard: parts[2].to_string(),
                seq: parts[3].to_string(),
                payload: parts[5].to_string(),
            });
        }
    }
}
