//! Operations: the daemon's Prometheus endpoint (metrics and health) and its CloudWatch
//! exporter, against the local services and a local CloudWatch (moto).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use testkit::{LocalAws, LocalCloudWatch, ProxyMode, TcpProxy};

/// `GET path` on `addr`: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw)).await??;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The samples of metric `name` in a Prometheus text page: labels → value.
fn samples(page: &str, name: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` whose labels contain every one of `labels` (`key="value"`).
fn value(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(page, name)
        .into_iter()
        .find(|(l, _)| labels.iter().all(|want| l.contains(want)))
        .map(|(_, v)| v)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One daemon on a 2-shard stream, with the lease table behind a proxy, a Prometheus
/// endpoint and CloudWatch (moto):
/// * `/metrics` shows (under the Prometheus names, `kcl_…`, and nothing else) records
///   processed per shard equal to what was put, the lag per shard at 0 once everything is
///   read, both leases held, GetRecords calls by outcome and timings as histograms in seconds;
/// * `/status` serves the status page, and `/status.json` the worker holding both leases;
/// * CloudWatch has the Java names and dimensions, with the same counts;
/// * `/readyz` is 200 once the worker is initialised, 503 while the lease table is
///   unreachable (`/healthz` stays 200), and 200 again when it comes back.
#[tokio::test]
async fn prometheus_cloudwatch_and_readiness_follow_what_happened() -> Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let cloudwatch = LocalCloudWatch::start().await?;
    let table = TcpProxy::start(aws.dynamodb_endpoint()).await?;
    let scratch = Scratch::new("metrics")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-metrics", 2, "m", 30).await?;
    let app = testkit::unique_name("e2e-metrics-app");
    let port = free_port();
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("workerId", "metrics-worker")
    .set("dynamoDBEndpoint", &table.url())
    .set("metricsPrometheusPort", &port.to_string())
    .set("metricsLevel", "DETAILED")
    .set("metricsBufferTimeMillis", "1000")
    .set("cloudWatchEndpoint", cloudwatch.endpoint())
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    daemon
        .until(LIMIT, "ready", || async {
            matches!(http_get(addr, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
    daemon
        .until(LIMIT, "every record delivered", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;

    // Prometheus: what happened, per shard.
    let mut per_shard: BTreeMap<String, f64> = BTreeMap::new();
    for p in &put {
        *per_shard.entry(p.shard_id.clone()).or_default() += 1.0;
    }
    let page = daemon
        .until(LIMIT, "/metrics to count every record", || async {
            let (status, page) = http_get(addr, "/metrics").await.ok()?;
            let counted = per_shard.iter().all(|(shard, n)| {
                value(
                    &page,
                    "kcl_records_processed_total",
                    &[&format!("shard_id=\"{shard}\"")],
                ) == Some(*n)
            });
            (status == 200 && counted).then_some(page)
        })
        .await;
    for shard in per_shard.keys() {
        let shard_label = format!("shard_id=\"{shard}\"");
        let labels = [r#"operation="ProcessTask""#, shard_label.as_str()];
        assert_eq!(
            value(&page, "kcl_behind_latest_seconds", &labels),
            Some(0.0),
            "every record was read, so no lag: {shard}\n{page}"
        );
        assert!(value(&page, "kcl_data_processed_bytes_total", &labels).is_some_and(|b| b > 0.0));
        let ok = [labels[0], labels[1], r#"outcome="success""#];
        assert!(
            value(&page, "kcl_get_records_calls_total", &ok).is_some_and(|n| n >= 1.0),
            "{page}"
        );
        // A histogram in seconds: every call took less than a minute.
        let inf = [labels[0], labels[1], r#"le="+Inf""#];
        let calls = value(&page, "kcl_get_records_duration_seconds_bucket", &inf);
        assert!(calls.is_some_and(|n| n >= 1.0), "{page}");
        assert!(
            value(&page, "kcl_get_records_duration_seconds_sum", &labels)
                .is_some_and(|s| s < 60.0 * calls.unwrap_or(0.0)),
            "{page}"
        );
    }
    assert_eq!(
        value(
            &page,
            "kcl_current_leases",
            &[
                r#"operation="RenewAllLeases""#,
                r#"worker_identifier="metrics-worker""#
            ]
        ),
        Some(2.0),
        "{page}"
    );
    for family in [
        "# TYPE kcl_processor_process_records_duration_seconds histogram",
        "# TYPE kcl_records_processed_total counter",
        "# TYPE kcl_behind_latest_seconds gauge",
    ] {
        assert!(page.lines().any(|l| l == family), "no {family}:\n{page}");
    }
    // The status page, and its data: the daemon's worker holds both leases.
    let (status, html) = http_get(addr, "/status").await?;
    assert_eq!(status, 200);
    assert!(html.contains("<title>KCL worker status</title>"), "{html}");
    let (status, body) = http_get(addr, "/status.json").await?;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).context("/status.json")?;
    assert_eq!(json["worker_id"], "metrics-worker", "{json}");
    assert_eq!(json["held"].as_array().map(Vec::len), Some(2), "{json}");
    let leases = json["leases"].as_array().context("leases")?;
    assert_eq!(leases.len(), 2, "{json}");
    assert!(
        leases
            .iter()
            .all(|l| l["owner"] == "metrics-worker" && l["state"] == "processing"),
        "{json}"
    );
    // Only the Prometheus names: no Java name, label or summary is served.
    for l in page.lines().filter(|l| !l.is_empty()) {
        let name = l
            .strip_prefix("# TYPE ")
            .or_else(|| l.strip_prefix("# HELP "))
            .unwrap_or(l);
        assert!(name.starts_with("kcl_"), "not a kcl_ name: {l}");
        assert!(
            l.starts_with('#')
                || !(l.contains("Operation=") || l.contains("ShardId=") || l.contains("quantile=")),
            "{l}"
        );
    }

    // CloudWatch: the Java names and dimensions, read back.
    let cw = cloudwatch.client();
    let listed = daemon
        .until(LIMIT, "RecordsProcessed in CloudWatch", || async {
            let out = cw
                .list_metrics()
                .namespace(&app)
                .metric_name("RecordsProcessed")
                .send()
                .await
                .ok()?;
            (out.metrics().len() >= per_shard.len()).then(|| out.metrics().to_vec())
        })
        .await;
    for m in &listed {
        let mut dims: Vec<&str> = m.dimensions().iter().filter_map(|d| d.name()).collect();
        dims.sort_unstable();
        assert_eq!(dims, ["Operation", "ShardId"], "{m:?}");
    }
    for (shard, n) in &per_shard {
        let sum = daemon
            .until(LIMIT, "every record counted in CloudWatch", || async {
                let now = std::time::SystemTime::now();
                let out = cw
                    .get_metric_statistics()
                    .namespace(&app)
                    .metric_name("RecordsProcessed")
                    .dimensions(
                        Dimension::builder()
                            .name("Operation")
                            .value("ProcessTask")
                            .build(),
                    )
                    .dimensions(Dimension::builder().name("ShardId").value(shard).build())
                    .start_time((now - Duration::from_secs(600)).into())
                    .end_time((now + Duration::from_secs(600)).into())
                    .period(60)
                    .statistics(Statistic::Sum)
                    .send()
                    .await
                    .ok()?;
                let sum: f64 = out.datapoints().iter().filter_map(|d| d.sum()).sum();
                (sum >= *n).then_some(sum)
            })
            .await;
        assert_eq!(sum, *n, "{shard}: each record counted once");
    }
    let workers = cw
        .list_metrics()
        .namespace(&app)
        .metric_name("CurrentLeases")
        .send()
        .await?;
    assert!(
        workers
            .metrics()
            .iter()
            .any(|m| m.dimensions().iter().any(|d| {
                d.name() == Some("WorkerIdentifier") && d.value() == Some("metrics-worker")
            })),
        "{workers:?}"
    );

    // The lease table becomes unreachable: not ready (but live); back: ready again.
    table.set_mode(ProxyMode::Refuse);
    let body = daemon
        .until(
            LIMIT,
            "/readyz 503 while the lease table is unreachable",
            || async {
                match http_get(addr, "/readyz").await {
                    Ok((503, body)) => Some(body),
                    _ => None,
                }
            },
        )
        .await;
    assert!(
        body.contains("lease_table_reachable: no") || body.contains("renewals_succeeding: no"),
        "{body}"
    );
    let (status, body) = http_get(addr, "/healthz").await?;
    assert_eq!(
        status, 200,
        "an unreachable table is not a dead worker: {body}"
    );
    table.set_mode(ProxyMode::Forward);
    daemon
        .until(
            LIMIT,
            "/readyz 200 once the lease table is back",
            || async { matches!(http_get(addr, "/readyz").await, Ok((200, _))).then_some(()) },
        )
        .await;

    let (status, _) = daemon.terminate(LIMIT).await?;
    if !status.success() {
        bail!("the daemon exited with {status}:\n{}", daemon.log());
    }
    Ok(())
}
