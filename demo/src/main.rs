//! # The demo: the whole library working, in one command
//!
//! ```sh
//! cargo run --release -p demo            # 60 s, 4 shards, 50 records/s
//! cargo run --release -p demo -- --help
//! ```
//!
//! What it teaches: three workers of one application share a stream through the lease table:
//! two Rust workers (this process) and one `kcl-multilang` daemon running a Python processor
//! (amazon-kclpy). A producer writes a steady flow of records. Mid-run the demo splits a
//! shard, merges two, and kills one worker without warning; the live view shows the leases
//! moving. Then it stops producing, waits until every record is processed, shuts the rest
//! down gracefully, and checks what the processors saw: nothing lost, duplicates only where a
//! lease changed hands, order per shard, parents before children.
//!
//! It starts its own local Kinesis and DynamoDB (see `testkit`), or uses
//! `KCL_KINESIS_ENDPOINT` / `KCL_DYNAMODB_ENDPOINT`. Exit code 0 means the verdict passed.
//!
//! One build serves the whole demo: the `kcl-multilang` worker is this same executable,
//! started again with [`DAEMON_FLAG`] (it then runs `kinesis_client_multilang::cli::main`, exactly what
//! the `kcl-multilang` binary runs). So the demo never builds or looks for another binary,
//! and a second `cargo run` compiles nothing.
//!
//! Metrics: the Rust workers' metrics (Prometheus names: `kcl_…`) are served by a Prometheus
//! endpoint of this process, the Python worker's by its daemon's (`metricsPrometheusPort`);
//! the demo prints both addresses, and the live view's lag column is
//! `kcl_behind_latest_seconds` (the Java KCL's `MillisBehindLatest`) from them, in ms.
//!
//! Order of events: the prerequisites are checked (node, npm, java, python3) before anything
//! is installed; then the local services and amazon-kclpy are installed and started; then
//! the three workers start, and the demo waits until every one of them holds a lease. Only
//! then does the timeline (producer, split, merge, kill) start, at 0.0 s.

mod journal;
mod lag;
mod processor;
mod python;
mod verdict;
mod view;

use anyhow::{Context, Result};
use journal::Journal;
use kinesis_client::lease::{DynamoDbLeaseStore, LeaseStore};
use kinesis_client::retrieval::{KinesisStreamClient, StreamClient, StreamRef};
use kinesis_client::{Config, InitialPosition, Scheduler};
use processor::DemoProcessor;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::LocalAws;
use tokio::time::Instant;

const HELP: &str = "\
kcl demo: three workers (two Rust, one Python via kcl-multilang) share a stream on a local
Kinesis + DynamoDB; mid-run a shard is split, two are merged and a worker is killed; at the end
the demo checks that every record was processed, in order, parents before children.

USAGE: cargo run --release -p demo -- [OPTIONS]

OPTIONS:
    --duration SECS    how long records are produced (default 60, at least 15)
    --shards N         shards of the stream at the start (default 4, at least 3)
    --rate N           records produced per second (default 50)
    --failover SECS    failover time of the workers (default 5)
    --plain            plain periodic lines instead of the live view (automatic when the
                       output is not a terminal, or CI=true)
    -h, --help         this text

Environment: KCL_KINESIS_ENDPOINT and KCL_DYNAMODB_ENDPOINT use running services instead of
starting local ones; RUST_LOG sets the library's log level (logs go to demo.log).";

struct Args {
    duration: Duration,
    shards: i32,
    rate: u32,
    failover: Duration,
    plain: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        duration: Duration::from_secs(60),
        shards: 4,
        rate: 50,
        failover: Duration::from_secs(5),
        plain: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--duration" => a.duration = Duration::from_secs(num("--duration")?.max(15)),
            "--shards" => a.shards = num("--shards")?.clamp(3, 64) as i32,
            "--rate" => a.rate = num("--rate")?.clamp(1, 5000) as u32,
            "--failover" => a.failover = Duration::from_secs(num("--failover")?.clamp(1, 60)),
            "--plain" => a.plain = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Some(a))
}

/// The hidden first argument that makes this executable the `kcl-multilang` daemon.
pub const DAEMON_FLAG: &str = "--run-as-kcl-multilang";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(DAEMON_FLAG) {
        return kinesis_client_multilang::cli::main(&argv[2..]);
    }
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_prerequisites() {
        eprintln!("demo: cannot run on this machine yet:\n{e:#}");
        return ExitCode::from(3);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the demo runs, looked up before anything is installed or started.
fn check_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    if let Err(e) = LocalAws::check_tools() {
        missing.push(format!("{e:#}"));
    }
    if let Err(e) = testkit::clients::python3() {
        missing.push(format!(
            "{e:#}\n  (the demo's third worker is a Python processor on amazon-kclpy)"
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", missing.join("\n"))
    }
}

struct RustWorker {
    id: &'static str,
    handle: kinesis_client::SchedulerHandle,
    task: tokio::task::JoinHandle<Result<(), kinesis_client::SchedulerError>>,
}

fn start_rust_worker(
    aws: &LocalAws,
    id: &'static str,
    app: &str,
    stream: &str,
    failover: Duration,
    journal: &Journal,
) -> Result<RustWorker> {
    let config = Config::builder(app, stream)
        .worker_id(id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(failover)
        .idle_time_between_reads(Duration::from_millis(250))
        .max_records(500)
        .parent_shard_poll_interval(Duration::from_secs(1))
        .shard_sync_interval(Duration::from_secs(5))
        .lease_cleanup_interval(Duration::from_secs(5))
        .graceful_shutdown_timeout(Duration::from_secs(20))
        .build()?;
    let journal = journal.clone();
    let factory = move |shard: &str| DemoProcessor::new(id, shard, journal.clone());
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: Some(aws.kinesis_endpoint().into()),
        dynamodb: Some(aws.dynamodb_endpoint().into()),
    };
    let scheduler = Scheduler::from_sdk_config(config, factory, &aws.sdk_config(), &endpoints);
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    Ok(RustWorker { id, handle, task })
}

fn init_logging(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = dir.join("demo.log");
    let file = std::fs::File::create(&path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "kinesis_client=info,kinesis_client_multilang=info,testkit=info".into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .init();
    Ok(path)
}

async fn run(args: Args) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!("kcl-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = init_logging(&dir)?;
    let plain = args.plain
        || !std::io::stdout().is_terminal()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    println!(
        "starting the local Kinesis and DynamoDB (first run installs them; logs: {})",
        log.display()
    );
    let aws = LocalAws::start()
        .await
        .context("starting the local services")?;
    println!("{}", aws.startup_report());

    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("demo-stream");
    let app = testkit::unique_name("demo-app");
    testkit::create_stream(&kinesis, &stream, args.shards).await?;
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), &app);
    let stream_client =
        KinesisStreamClient::new(aws.kinesis_client(), StreamRef::Name(stream.clone()));
    println!(
        "stream {stream} ({} shards), application {app}",
        args.shards
    );

    let journal = Journal::default();
    println!("installing amazon-kclpy for the Python worker (first run only) ...");
    let kclpy = tokio::task::spawn_blocking(testkit::clients::kclpy)
        .await?
        .context("installing amazon-kclpy from PyPI")?;
    // Metrics first, so that the workers' metrics reach it.
    let metrics = kinesis_client::telemetry::PrometheusEndpoint::start("127.0.0.1:0".parse()?)
        .await
        .context("starting the Prometheus endpoint")?;
    let python_metrics: std::net::SocketAddr =
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    println!(
        "metrics (Prometheus): http://{}/metrics (rust-a, rust-b; also /readyz for rust-a), http://{python_metrics}/metrics (python)",
        metrics.local_addr()
    );
    println!(
        "status pages (open in a browser while the demo runs): http://{}/status (rust-a), http://{python_metrics}/status (python)",
        metrics.local_addr()
    );
    println!("starting workers rust-a, rust-b (this process) and python (kcl-multilang + amazon-kclpy) ...");
    let ready_since = Instant::now();
    let a = start_rust_worker(&aws, "rust-a", &app, &stream, args.failover, &journal)?;
    metrics.report_health_of(&a.handle);
    let b = start_rust_worker(&aws, "rust-b", &app, &stream, args.failover, &journal)?;
    let lag_source = lag::Lag {
        local: metrics.clone(),
        python: python_metrics,
    };
    let mut py = python::start(
        &aws,
        &kclpy,
        python::Settings {
            app: &app,
            stream: &stream,
            failover: args.failover,
            dir: &dir,
            metrics_port: python_metrics.port(),
        },
    )?;
    wait_until_every_worker_holds_a_lease(&store, &["rust-a", "rust-b", "python"], &mut py).await?;
    println!(
        "every worker holds a lease ({:.1}s); the timeline starts now",
        ready_since.elapsed().as_secs_f64()
    );

    let mut events: Vec<String> = Vec::new();
    let start = Instant::now();
    let stamp = |e: &str| format!("{:>5.1}s {e}", start.elapsed().as_secs_f64());
    events.push(stamp(
        "workers rust-a, rust-b and python (kcl-multilang + amazon-kclpy) all hold leases",
    ));

    // The producer: `rate` records per second in batches every 100 ms.
    let produced: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let producing = tokio_util::sync::CancellationToken::new();
    let producer = tokio::spawn({
        let (produced, producing, kinesis, stream) = (
            produced.clone(),
            producing.clone(),
            aws.kinesis_client(),
            stream.clone(),
        );
        let per_tick = (args.rate as f64 / 10.0).max(0.1);
        async move {
            let mut owed = 0.0;
            let mut n = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !producing.is_cancelled() {
                tick.tick().await;
                owed += per_tick;
                let count = owed.floor() as usize;
                owed -= count as f64;
                if count == 0 {
                    continue;
                }
                let batch: Vec<testkit::PutRecord> = (n..n + count)
                    .map(|i| testkit::PutRecord {
                        partition_key: format!("user-{}", i % 997),
                        data: format!("record-{i:07}").into_bytes(),
                    })
                    .collect();
                n += count;
                match testkit::put_records(&kinesis, &stream, batch).await {
                    Ok(put) => {
                        let mut p = produced.lock().unwrap();
                        for r in put {
                            p.insert(String::from_utf8_lossy(&r.data).into_owned(), r.shard_id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "producer: put failed"),
                }
            }
        }
    });

    let d = args.duration;
    let (split_at, merge_at, kill_at) = (d / 4, d * 9 / 20, d * 13 / 20);
    let (mut split_done, mut merge_done) = (false, false);
    let mut b = Some(b);
    let mut workers: Vec<(&str, &str)> = vec![
        ("rust-a", "running"),
        ("rust-b", "running"),
        ("python", "running"),
    ];
    let mut phase = "producing";
    let mut last_plain = Instant::now() - Duration::from_secs(10);
    let drain_deadline = d + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let elapsed = start.elapsed();
        journal.read_python_output(&py.output);
        if !split_done && elapsed >= split_at {
            split_done = true;
            events.push(stamp(&split_one(&kinesis, &stream).await?));
        }
        if !merge_done && elapsed >= merge_at {
            merge_done = true;
            events.push(stamp(&merge_two(&kinesis, &stream).await?));
        }
        if let Some(worker) = b.take_if(|_| elapsed >= kill_at) {
            worker.task.abort();
            workers[1].1 = "killed";
            events.push(stamp(&format!(
                "killed worker {} without warning: its leases expire after {:?} and move",
                worker.id, args.failover
            )));
        }
        if phase == "producing" && elapsed >= d {
            producing.cancel();
            phase = "draining";
            events.push(stamp(
                "stopped producing; waiting until every record is processed",
            ));
        }
        let leases = store.list_leases().await.unwrap_or_default();
        let lag = lag_source.per_shard(&leases).await;
        // Whether the producer was done before the snapshot of what it produced: then the
        // snapshot holds every record (checked after it, a last put could slip in between).
        let producer_done = producer.is_finished();
        let produced_now = produced.lock().unwrap().clone();
        let deliveries = journal.deliveries();
        let processed = produced_now
            .keys()
            .filter(|p| deliveries.iter().any(|d| &d.payload == *p))
            .count();
        let counts = journal.counts();
        let frame = view::Frame {
            phase,
            elapsed,
            duration: d,
            produced: produced_now.len(),
            processed,
            leases: &leases,
            counts: &counts,
            lag: &lag,
            workers: &workers,
            events: &events,
        };
        if plain {
            if last_plain.elapsed() >= Duration::from_secs(5) {
                println!("{}", view::line(&frame));
                last_plain = Instant::now();
            }
        } else {
            print!("\x1b[H\x1b[2J{}", view::render(&frame));
        }
        if phase == "draining" && producer_done && processed == produced_now.len() {
            break;
        }
        if elapsed > drain_deadline {
            println!(
                "not every record was processed within {:?} after producing stopped",
                drain_deadline - d
            );
            break;
        }
    }
    events.push(stamp("every record processed; shutting down gracefully"));
    a.handle.request_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), a.task).await;
    if let Err(e) = py.stop(Duration::from_secs(30)).await {
        println!("python worker: {e:#}");
    }
    journal.read_python_output(&dir.join("python-deliveries.txt"));

    let shards = stream_client.list_shards().await?;
    let produced = produced.lock().unwrap().clone();
    let verdict = verdict::judge(&produced, &journal.deliveries(), &shards);
    println!("\nevents:");
    for e in &events {
        println!("  {e}");
    }
    println!("\nverdict:");
    for l in &verdict.lines {
        println!("  {l}");
    }
    println!("\n{}", if verdict.passed { "PASSED" } else { "FAILED" });
    drop(aws);
    Ok(verdict.passed)
}

/// Waits (at most 90 s) until each worker owns at least one lease: all are running, and the
/// lease table has been balanced across them.
async fn wait_until_every_worker_holds_a_lease(
    store: &DynamoDbLeaseStore,
    workers: &[&str],
    py: &mut python::PythonWorker,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let leases = store.list_leases().await.unwrap_or_default();
        let waiting: Vec<&str> = workers
            .iter()
            .copied()
            .filter(|w| !leases.iter().any(|l| l.owner.as_deref() == Some(*w)))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if let Some(status) = py.exited() {
            anyhow::bail!(
                "the kcl-multilang worker exited at start ({status}); see {}",
                py.log.display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "workers {waiting:?} hold no lease 90 s after starting; see the logs (demo.log, {})",
                py.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn open_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, u128, u128)>> {
    let out = kinesis.list_shards().stream_name(stream).send().await?;
    let mut open: Vec<(String, u128, u128)> = out
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .filter_map(|s| {
            let r = s.hash_key_range()?;
            Some((
                s.shard_id().to_string(),
                r.starting_hash_key().parse().ok()?,
                r.ending_hash_key().parse().ok()?,
            ))
        })
        .collect();
    open.sort_by_key(|s| s.1);
    Ok(open)
}

async fn split_one(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<String> {
    let open = open_shards(kinesis, stream).await?;
    let (id, start, end) = open.first().cloned().context("no open shard")?;
    let mid = start + (end - start) / 2;
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&id)
        .new_starting_hash_key(mid.to_string())
        .send()
        .await?;
    testkit::wait_stream_active(kinesis, stream).await?;
    Ok(format!("split {id} in two"))
}

async fn merge_two(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<String> {
    let open = open_shards(kinesis, stream).await?;
    let pair = open
        .windows(2)
        .rev()
        .find(|w| w[0].2.checked_add(1) == Some(w[1].1))
        .context("no adjacent open shards")?;
    let (a, b) = (pair[0].0.clone(), pair[1].0.clone());
    kinesis
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(&a)
        .adjacent_shard_to_merge(&b)
        .send()
        .await?;
    testkit::wait_stream_active(kinesis, stream).await?;
    Ok(format!("merged {a} and {b}"))
}
