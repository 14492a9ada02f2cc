//! The lag column of the live view, from the workers' metrics: `kcl_behind_latest_seconds`
//! (the Java KCL's `MillisBehindLatest`) per shard from the Prometheus endpoints (this process's for the Rust workers, the `kcl-multilang`
//! daemon's for the Python worker), taken from the endpoint of the lease's owner.

use kinesis_client::lease::Lease;
use kinesis_client::telemetry::names::{
    OP_PROCESS_TASK, PROMETHEUS_OPERATION, PROMETHEUS_SHARD_ID, PT_MILLIS_BEHIND_LATEST,
};
use kinesis_client::telemetry::PrometheusEndpoint;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Lag {
    /// This process's endpoint (both Rust workers).
    pub local: PrometheusEndpoint,
    /// The Python worker's daemon endpoint.
    pub python: SocketAddr,
}

impl Lag {
    /// Lag per shard, in milliseconds, as the owner of each lease reports it.
    pub async fn per_shard(&self, leases: &[Lease]) -> BTreeMap<String, i64> {
        let local = parse(&self.local.render());
        let python = match scrape(self.python).await {
            Some(page) => parse(&page),
            None => BTreeMap::new(),
        };
        leases
            .iter()
            .filter_map(|l| {
                let source = match l.owner.as_deref() {
                    Some("python") => &python,
                    Some(_) => &local,
                    None => return None,
                };
                source.get(&l.key).map(|v| (l.key.clone(), *v))
            })
            .collect()
    }
}

/// `kcl_behind_latest_seconds{operation="ProcessTask",shard_id="…"} seconds` lines of a page,
/// in milliseconds.
fn parse(page: &str) -> BTreeMap<String, i64> {
    let op = format!("{PROMETHEUS_OPERATION}=\"{OP_PROCESS_TASK}\"");
    let shard = format!("{PROMETHEUS_SHARD_ID}=\"");
    let name = format!("{}{{", PT_MILLIS_BEHIND_LATEST.prometheus.name);
    page.lines()
        .filter(|l| l.starts_with(&name) && l.contains(&op))
        .filter_map(|l| {
            let id = l.split(&shard).nth(1)?.split('"').next()?;
            let seconds: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((id.to_string(), (seconds * 1000.0).round() as i64))
        })
        .collect()
}

/// `GET /metrics` from the daemon (a short timeout: the view must not wait).
async fn scrape(addr: SocketAddr) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
        let mut page = String::new();
        s.read_to_string(&mut page).await.ok()?;
        Some(page)
    };
    tokio::time::timeout(Duration::from_millis(300), fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_lag_of_each_shard() {
        let page = "# TYPE kcl_behind_latest_seconds gauge\n\
            kcl_behind_latest_seconds{operation=\"ProcessTask\",shard_id=\"shardId-1\"} 0.25\n\
            kcl_behind_latest_seconds{operation=\"ApplicationTracker\"} 999\n\
            kcl_records_processed_total{operation=\"ProcessTask\",shard_id=\"shardId-1\"} 7\n";
        let lag = super::parse(page);
        assert_eq!(
            lag.into_iter().collect::<Vec<_>>(),
            vec![("shardId-1".to_string(), 250)]
        );
    }
}
