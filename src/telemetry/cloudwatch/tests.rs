//! The exporter on paused time with a sink in place of CloudWatch.

use super::*;
use crate::sync::Mutex;
use crate::telemetry::{names, ShardMetrics, WorkerMetrics};

/// Keeps every request; or never answers.
#[derive(Default)]
struct Recording {
    requests: Mutex<Vec<(String, Vec<Datum>)>>,
    hang: bool,
}

impl Sink for Recording {
    fn put<'a>(
        &'a self,
        namespace: &'a str,
        data: Vec<Datum>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>> {
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.requests.lock().push((namespace.to_string(), data));
            Ok(())
        })
    }
}

impl Recording {
    fn data(&self) -> Vec<Datum> {
        self.requests
            .lock()
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect()
    }

    fn find(&self, name: &str, dims: &[(&str, &str)]) -> Option<Datum> {
        let dims: Vec<(String, String)> = dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.data()
            .into_iter()
            .find(|d| d.key.name == name && d.key.dimensions == dims)
    }
}

fn config(level: MetricsLevel, dims: Option<&[&str]>) -> CloudWatchConfig {
    let mut c = CloudWatchConfig::new("my-app");
    c.level = level;
    c.enabled_dimensions = dims.map(|d| d.iter().map(|s| s.to_string()).collect());
    c
}

/// Records a few metrics through the library's own calls into `recorder`.
fn record_some(recorder: &CloudWatchRecorder) {
    metrics::with_local_recorder(recorder, || {
        super::super::describe();
        let a = ShardMetrics::new("shardId-a");
        let b = ShardMetrics::new("shardId-b");
        a.batch_received(Some(1000));
        a.batch_received(Some(3000));
        b.batch_received(Some(500));
        a.processed(10, 100, Duration::from_millis(4), true);
        a.processed(30, 300, Duration::from_millis(6), true);
        a.get_records(true, Duration::from_millis(20));
        let w = WorkerMetrics::new("worker-1");
        w.current_leases(2);
        w.lost_lease();
    });
}

#[tokio::test(start_paused = true)]
async fn sends_java_names_dimensions_and_statistic_sets_every_buffer_time() {
    let sink = Arc::new(Recording::default());
    let (recorder, publisher) =
        CloudWatchExporter::with_sink(sink.clone(), config(MetricsLevel::Detailed, None));
    record_some(&recorder);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(sink.data().is_empty(), "nothing before the buffer time");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requests = sink.requests.lock().clone();
    assert!(requests
        .iter()
        .all(|(ns, d)| ns == "my-app" && d.len() <= BATCH_SIZE));
    let shard_a = [
        (names::OPERATION, names::OP_PROCESS_TASK),
        (names::SHARD_ID, "shardId-a"),
    ];
    let records = sink
        .find(names::RECORDS_PROCESSED, &shard_a)
        .expect("RecordsProcessed");
    assert_eq!(
        records.stats,
        queue::Stats {
            sum: 40.0,
            min: 10.0,
            max: 30.0,
            count: 2.0
        }
    );
    assert_eq!(records.unit, Some(metrics::Unit::Count));
    let bytes = sink.find(names::DATA_BYTES_PROCESSED, &shard_a).unwrap();
    assert_eq!(
        (bytes.stats.sum, bytes.unit),
        (400.0, Some(metrics::Unit::Bytes))
    );
    let lag = sink.find(names::MILLIS_BEHIND_LATEST, &shard_a).unwrap();
    assert_eq!(
        (lag.stats.min, lag.stats.max, lag.stats.count, lag.unit),
        (1000.0, 3000.0, 2.0, Some(metrics::Unit::Milliseconds))
    );
    // The application-wide lag over every shard, as Java's ApplicationTracker.
    let app = sink
        .find(
            names::MILLIS_BEHIND_LATEST,
            &[(names::OPERATION, names::OP_APPLICATION_TRACKER)],
        )
        .expect("ApplicationTracker MillisBehindLatest");
    assert_eq!(
        (app.stats.min, app.stats.max, app.stats.count),
        (500.0, 3000.0, 3.0)
    );
    let worker = [
        (names::OPERATION, names::OP_RENEW_ALL_LEASES),
        (names::WORKER_IDENTIFIER, "worker-1"),
    ];
    assert_eq!(
        sink.find(names::CURRENT_LEASES, &worker).unwrap().stats.sum,
        2.0
    );
    assert!(
        sink.find(names::GET_RECORDS_TIME, &shard_a).is_some(),
        "DETAILED metrics at DETAILED"
    );

    // Nothing recorded since: nothing sent in the next period.
    let sent = sink.data().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sink.data().len(), sent);
    assert_eq!(publisher.stats().published, sent as u64);
    assert_eq!(publisher.stats().dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn summary_level_and_enabled_dimensions_filter_as_java_does() {
    let sink = Arc::new(Recording::default());
    let (recorder, _publisher) = CloudWatchExporter::with_sink(
        sink.clone(),
        config(MetricsLevel::Summary, Some(&[names::WORKER_IDENTIFIER])),
    );
    record_some(&recorder);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let data = sink.data();
    assert!(
        data.iter().all(|d| d.key.name != names::GET_RECORDS_TIME),
        "a DETAILED metric at SUMMARY level: {data:#?}"
    );
    // ShardId is not enabled: both shards' records merge into one datum.
    let records = sink
        .find(
            names::RECORDS_PROCESSED,
            &[(names::OPERATION, names::OP_PROCESS_TASK)],
        )
        .expect("RecordsProcessed without ShardId");
    assert_eq!(records.stats.sum, 40.0);
    assert!(data
        .iter()
        .all(|d| d.key.dimensions.iter().all(|(k, _)| k != names::SHARD_ID)));
    // WorkerIdentifier is enabled.
    assert!(sink
        .find(
            names::CURRENT_LEASES,
            &[
                (names::OPERATION, names::OP_RENEW_ALL_LEASES),
                (names::WORKER_IDENTIFIER, "worker-1")
            ]
        )
        .is_some());
}

/// A CloudWatch that never answers: recording goes on unaffected, at most `max_queue_size`
/// metrics wait, and what cannot be sent is dropped and counted.
#[tokio::test(start_paused = true)]
async fn an_unreachable_cloudwatch_drops_and_counts_instead_of_growing() {
    let sink = Arc::new(Recording {
        hang: true,
        ..Default::default()
    });
    let mut cfg = config(MetricsLevel::Detailed, None);
    cfg.max_queue_size = 50;
    let (recorder, publisher) = CloudWatchExporter::with_sink(sink.clone(), cfg);
    for round in 0..6 {
        metrics::with_local_recorder(&recorder, || {
            for shard in 0..40 {
                let m = ShardMetrics::new(&format!("shardId-{round}-{shard}"));
                m.processed(5, 50, Duration::from_millis(1), true);
                m.batch_received(Some(10));
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            publisher.stats().queued <= 50,
            "the queue is bounded: {:?}",
            publisher.stats()
        );
    }
    let stats = publisher.stats();
    assert_eq!(stats.published, 0);
    assert!(stats.failed_requests >= 1, "{stats:?}");
    assert!(stats.dropped >= 100, "{stats:?}");
    // Metrics not recorded for a period and not referenced are forgotten: the registry does
    // not keep every shard ever seen.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        recorder.registry.len() <= 2 * 40 * 3,
        "{} metrics kept",
        recorder.registry.len()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_what_was_recorded() {
    let sink = Arc::new(Recording::default());
    let (recorder, publisher) =
        CloudWatchExporter::with_sink(sink.clone(), config(MetricsLevel::Detailed, None));
    record_some(&recorder);
    publisher.shutdown().await;
    assert!(sink
        .find(
            names::LOST_LEASES,
            &[
                (names::OPERATION, names::OP_RENEW_ALL_LEASES),
                (names::WORKER_IDENTIFIER, "worker-1")
            ]
        )
        .is_some());
}

#[test]
fn datums_become_cloudwatch_statistic_sets() {
    let d = Datum {
        key: queue::DatumKey {
            name: "RecordsProcessed".into(),
            dimensions: vec![
                ("Operation".into(), "ProcessTask".into()),
                ("ShardId".into(), "s".into()),
            ],
        },
        unit: Some(metrics::Unit::Count),
        stats: queue::Stats {
            sum: 5.0,
            min: 1.0,
            max: 4.0,
            count: 2.0,
        },
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let m = to_cloudwatch(d);
    assert_eq!(m.metric_name(), Some("RecordsProcessed"));
    assert_eq!(m.unit(), Some(&StandardUnit::Count));
    let s = m.statistic_values().unwrap();
    assert_eq!(
        (s.sum(), s.minimum(), s.maximum(), s.sample_count()),
        (Some(5.0), Some(1.0), Some(4.0), Some(2.0))
    );
    let dims: Vec<(&str, &str)> = m
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap(), d.value().unwrap()))
        .collect();
    assert_eq!(dims, vec![("Operation", "ProcessTask"), ("ShardId", "s")]);
}
