//! Issue 30: the status page (`/status` on the Prometheus endpoint), loaded in a real browser
//! (Debian's headless Chromium under ChromeDriver) from a worker on the local services.

use crate::common::aws;
use crate::harness::*;
use kinesis_client::status::SAMPLE_INTERVAL;
use kinesis_client::telemetry::PrometheusEndpoint;
use std::time::Duration;
use testkit::browser::{fantoccini::Locator, Browser};

const LIMIT: Duration = Duration::from_secs(60);
const SHARDS: usize = 3;

/// The page loads with one row per lease of the running worker, each processing and owned by
/// it, draws a lag line per held shard, and says the worker is ready. Its screenshot (a phone's
/// width) is kept as `target/tmp/status-page.png`.
#[tokio::test]
async fn the_status_page_shows_a_running_worker_and_draws_its_lag_chart() {
    // The browser starts (and is installed, the first time) while the worker gets going.
    let browser = tokio::spawn(Browser::start(430, 1400));
    let aws = aws().await;
    let (endpoint, _recorder) = PrometheusEndpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("status-page");
    testkit::create_stream(&kinesis, &stream, SHARDS as i32)
        .await
        .unwrap();
    let records = testkit::put_records(&kinesis, &stream, testkit::numbered_records("a", 90))
        .await
        .unwrap();
    let journal = Journal::default();
    let app = testkit::unique_name("app-status");
    let worker = start_worker(
        &aws,
        config(&app, &stream, "w1").build().unwrap(),
        &journal,
        Behavior {
            checkpoint_every_batch: true,
            ..Default::default()
        },
    );
    endpoint.report_health_of(&worker.handle);
    wait_for(LIMIT, "every record", || {
        journal.distinct_payloads().len() == records.len()
    })
    .await;
    // Records keep flowing (20 a second) for the records-per-second figure.
    let producer = tokio::spawn({
        let kinesis = kinesis.clone();
        let stream = stream.clone();
        async move {
            for i in 0.. {
                let batch = testkit::numbered_records(&format!("b{i}-"), 5);
                let _ = testkit::put_records(&kinesis, &stream, batch).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    // Two samples with a lag figure per shard: a line, not a point.
    wait_for(
        LIMIT + SAMPLE_INTERVAL * 3,
        "two lag samples of every shard",
        || {
            let status = worker.handle.status();
            status.held.len() == SHARDS
                && status.held.iter().all(|h| {
                    h.history
                        .iter()
                        .filter(|s| s.millis_behind_latest.is_some())
                        .count()
                        >= 2
                })
        },
    )
    .await;

    let browser = browser
        .await
        .expect("the browser task")
        .expect("a headless Chromium session");
    let page = browser.client();
    page.goto(&format!("http://{}/status", endpoint.local_addr()))
        .await
        .unwrap();
    let rows = page
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#leases tbody tr.lease"))
        .await
        .map(|_| ());
    rows.expect("the lease table's rows");
    // Every row drawn (the page fills the table in one go).
    let rows = page
        .find_all(Locator::Css("#leases tbody tr.lease"))
        .await
        .unwrap();
    assert_eq!(rows.len(), SHARDS, "a row per lease");
    for row in &rows {
        let text = row.text().await.unwrap();
        assert!(
            text.contains("w1") && text.contains("processing"),
            "a lease row: {text}"
        );
    }
    let lines = page
        .find_all(Locator::Css("#lag-chart polyline.lag"))
        .await
        .unwrap();
    assert_eq!(lines.len(), SHARDS, "a lag line per held shard");
    for line in &lines {
        let points = line.attr("points").await.unwrap().unwrap_or_default();
        assert!(
            points.split_whitespace().count() >= 2,
            "a line of at least two points: {points:?}"
        );
    }
    let health = page
        .find(Locator::Id("health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(health, "ready");
    let held = page
        .find(Locator::Id("n-held"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(held, SHARDS.to_string());
    let rate: f64 = page
        .find(Locator::Id("rate"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .expect("records per second, a number");
    assert!(rate > 0.0, "records flow, so records per second > 0");

    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, &png).unwrap();
    println!("status page screenshot: {}", path.display());
    browser.close().await;
    producer.abort();
    worker.stop().await;
}
