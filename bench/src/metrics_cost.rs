//! Section 9: what the library's metrics cost on the pipeline of section 1.
//!
//! The same runs as section 1 (100-byte records), without a recorder (the `metrics` facade's
//! no-op) and with the Prometheus recorder of `kinesis_client::telemetry::PrometheusEndpoint`
//! installed (as a local recorder of the single runtime thread: every metric of the run goes
//! to it). Runs alternate (off, on, off, on, ...) and the median of each is shown.

use crate::pipeline::{run, run_with, PipelineRun};
use crate::report::{Goal, Section, Table};
use crate::stats::{count, sig};
use crate::Scale;
use kinesis_client::telemetry::PrometheusEndpoint;
use std::time::Instant;

/// The goal: metrics cost at most this much more CPU per record.
pub const GOAL_OVERHEAD: f64 = 0.05;

fn plan(scale: Scale) -> (Vec<usize>, u64, usize) {
    match scale {
        Scale::Tiny => (vec![1, 4], 2_000, 1),
        Scale::Quick => (vec![1, 64, 1024], 50_000, 3),
        Scale::Full => (vec![1, 64, 1024], 1_000_000, 5),
    }
}

/// A row of section 1 with the Prometheus recorder (its warm-up run, then the measured run,
/// profiled as [`crate::pipeline::row`]'s): `kcl-bench __pipeline SHARDS 100 RECORDS prometheus`.
pub fn row(shards: usize, records: u64) -> PipelineRun {
    let _ = run_prometheus(shards, (records / 10).max(shards as u64));
    crate::pipeline::profiled(|| run_prometheus(shards, records))
}

/// One run with the Prometheus recorder; checks that it recorded every record.
fn run_prometheus(shards: usize, records: u64) -> PipelineRun {
    // The endpoint binds a port: it needs a runtime (a separate one: the measured run makes
    // its own, single-threaded one).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (endpoint, recorder) = rt
        .block_on(PrometheusEndpoint::bind(
            "127.0.0.1:0".parse().expect("addr"),
        ))
        .expect("a Prometheus endpoint");
    let r = run_with(shards, 100, records, Some(&recorder));
    let page = endpoint.render();
    let counted: f64 = page
        .lines()
        .filter(|l| l.starts_with("kcl_records_processed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        counted >= r.records as f64,
        "the Prometheus recorder counted {counted} of {} records",
        r.records
    );
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run section 9.
pub fn section(scale: Scale) -> Section {
    let started = Instant::now();
    let (shard_counts, records, repeats) = plan(scale);
    let mut table = Table::new([
        "shards",
        "records",
        "CPU ns / record, no recorder",
        "CPU ns / record, Prometheus",
        "extra CPU per record",
    ]);
    let mut worst: (usize, f64) = (0, f64::NEG_INFINITY);
    for &shards in &shard_counts {
        // Warm-up, unmeasured.
        let _ = run(shards, 100, (records / 10).max(shards as u64));
        let _ = run_prometheus(shards, (records / 10).max(shards as u64));
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            off.push(run(shards, 100, records).cpu_ns_per_record());
            on.push(run_prometheus(shards, records).cpu_ns_per_record());
        }
        let (off, on) = (median(off), median(on));
        let overhead = on / off - 1.0;
        if overhead > worst.1 {
            worst = (shards, overhead);
        }
        table.row([
            count(shards as u64),
            count(records),
            sig(off),
            sig(on),
            format!("{:+.1} %", overhead * 100.0),
        ]);
    }
    let goal = if worst.1 <= GOAL_OVERHEAD {
        Goal::Met(format!(
            "the Prometheus recorder costs at most {:+.1} % CPU per record (at {} shards); goal ≤ {:.0} %.",
            worst.1 * 100.0,
            worst.0,
            GOAL_OVERHEAD * 100.0
        ))
    } else {
        Goal::Missed(format!(
            "the Prometheus recorder costs {:+.1} % CPU per record at {} shards; goal ≤ {:.0} %.",
            worst.1 * 100.0,
            worst.0,
            GOAL_OVERHEAD * 100.0
        ))
    };
    Section {
        number: 9,
        title: "Cost of metrics (pipeline, Prometheus recorder on and off)".into(),
        method: format!(
            "Section 1's pipeline (one worker, a current-thread runtime on paused time, a pre-loaded \
             `InMemoryStream`, a no-op processor that checkpoints each batch, 100-byte records), run \
             without a metrics recorder (the `metrics` facade's no-op) and with the recorder of \
             `kinesis_client::telemetry::PrometheusEndpoint` (what `PrometheusEndpoint::start` installs), \
             alternately, {repeats} times each after an unmeasured warm-up; the median CPU time per record \
             of each is shown. The Prometheus runs check that the recorder counted every record \
             (`kcl_records_processed_total`). Command: `cargo run --release -p kcl-bench -- --only 9`."
        ),
        tables: vec![table],
        goal,
        notes: vec![
            "What the metrics cost: per shard the worker takes, about eleven series registered \
             once under their Prometheus names; per batch, about ten recorder calls through the \
             handles kept since (records, bytes, lag, the processor's time, the task's outcome and \
             time, the checkpoint write, the GetRecords call), each an atomic add or an \
             uncontended lock; per record, only the sum of the data sizes for \
             `DataBytesProcessed`. Lease renewals, take rounds and the once-a-second gauges are per \
             lease or per worker, not per record. At 1,024 shards this run delivers about 1,000 \
             records per shard, so the per-shard cost weighs most there: it was +44.8 % while each \
             shard's series had an exporter recorder of their own (~75 µs per shard, most of it \
             the exporter's registry asking the OS for the CPU count), now a small store per shard."
                .into(),
        ],
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
