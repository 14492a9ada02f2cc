//! Section 6: end to end on the local services (kinesis-local + DynamoDB Local).
//!
//! * **Delay**: one worker on a 4-shard stream; a producer puts 10 records every 20 ms (one
//!   PutRecords call, spread over the shards by explicit hash key) for a fixed time; each
//!   record carries its index. Put-to-process delay = the moment the processor receives the
//!   record − the moment its PutRecords call returned. Polling at two read intervals, and
//!   enhanced fan-out (SubscribeToShard).
//! * **Throughput**: 4 shards pre-loaded with records; a new worker reads them from
//!   TRIM_HORIZON; records/s from its first delivery to its last.
//!
//! The emulator's share: the worker's stream client is wrapped in a [`TimedStream`] (time
//! inside GetRecords: the emulator's work, HTTP and decoding), and the emulators' CPU time is
//! read from `/proc/<pid>/stat` before and after.

use crate::failover::shard_hashes;
use crate::measure::{pid_cpu, process_cpu};
use crate::noop::{BatchHook, Countdown, NoopProcessor};
use crate::report::{Goal, Section, Table};
use crate::services::Services;
use crate::stats::{percentile, rate, sig};
use crate::timed::TimedStream;
use crate::Scale;
use anyhow::{bail, Context, Result};
use kinesis_client::lease::DynamoDbLeaseStore;
use kinesis_client::retrieval::{KinesisStreamClient, StreamRef};
use kinesis_client::{Config, InitialPosition, RetrievalMode, Scheduler, SchedulerHandle};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::LocalAws;

const SHARDS: i32 = 4;
const RECORD_SIZE: usize = 100;

fn record(index: u64) -> Vec<u8> {
    let mut data = vec![b'x'; RECORD_SIZE];
    data[..8].copy_from_slice(&index.to_le_bytes());
    data
}

fn index_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

/// The pids of kinesis-local and DynamoDB Local, when testkit runs them as processes.
fn emulator_pids(aws: &LocalAws) -> (Option<u32>, Option<u32>) {
    let find = |needle: &str| {
        aws.services()
            .iter()
            .find(|s| s.name.to_lowercase().contains(needle))
            .and_then(|s| s.pid)
    };
    (find("kinesis"), find("dynamo"))
}

struct Worker {
    task: tokio::task::JoinHandle<()>,
    handle: SchedulerHandle,
    timed: Arc<TimedStream>,
}

/// How the worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// GetRecords, this long between reads of a shard.
    Polling(Duration),
    /// SubscribeToShard.
    FanOut,
}

impl Retrieval {
    fn text(self) -> String {
        match self {
            Retrieval::Polling(idle) => format!("polling, {} ms between reads", idle.as_millis()),
            Retrieval::FanOut => "enhanced fan-out".into(),
        }
    }
}

fn start_worker(
    aws: &LocalAws,
    stream: &str,
    retrieval: Retrieval,
    hook: BatchHook,
) -> Result<Worker> {
    let builder = Config::builder(format!("{stream}-app"), StreamRef::Name(stream.into()))
        .worker_id("e2e-worker")
        .initial_position(InitialPosition::TrimHorizon);
    let config = match retrieval {
        Retrieval::Polling(idle) => builder.idle_time_between_reads(idle),
        Retrieval::FanOut => builder.retrieval_mode(RetrievalMode::FanOut),
    }
    .build()?;
    let timed = Arc::new(TimedStream::new(Arc::new(KinesisStreamClient::new(
        aws.kinesis_client(),
        config.stream().clone(),
    ))));
    let store = DynamoDbLeaseStore::new(aws.dynamodb_client(), config.table_name().to_string());
    let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
    let scheduler = Scheduler::new(config, factory, timed.clone(), Arc::new(store));
    let handle = scheduler.handle();
    let task = tokio::spawn(async move {
        let _ = scheduler.run(std::future::pending()).await;
    });
    Ok(Worker {
        task,
        handle,
        timed,
    })
}

async fn put_batch(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    hashes: &[String],
    first: u64,
    n: u64,
) -> Result<()> {
    let entries = (first..first + n)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key("k")
                .explicit_hash_key(&hashes[i as usize % hashes.len()])
                .data(aws_smithy_types::Blob::new(record(i)))
                .build()
                .expect("entry")
        })
        .collect::<Vec<_>>();
    let out = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .context("PutRecords")?;
    if out.failed_record_count().unwrap_or(0) > 0 {
        bail!(
            "{} records of a PutRecords call failed",
            out.failed_record_count().unwrap_or(0)
        );
    }
    Ok(())
}

/// Result of the delay measurement.
#[derive(Debug, Clone)]
pub struct DelayRun {
    /// How the worker read.
    pub retrieval: Retrieval,
    /// Records put.
    pub produced: u64,
    /// Records received.
    pub received: u64,
    /// Records put per second.
    pub rate: f64,
    /// Put-to-process delays, seconds.
    pub delays: Vec<f64>,
    /// PutRecords call durations, seconds.
    pub put_latency: Vec<f64>,
    /// GetRecords call durations, seconds.
    pub get_latency: Vec<f64>,
}

async fn delay_run(aws: &LocalAws, retrieval: Retrieval, duration: Duration) -> Result<DelayRun> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("bench-e2e");
    testkit::create_stream(&kinesis, &stream, SHARDS).await?;
    let hashes = shard_hashes(&kinesis, &stream).await?;
    let received: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let hook: BatchHook = {
        let received = received.clone();
        Arc::new(move |_: &str, records: &[kinesis_client::Record]| {
            let now = Instant::now();
            let mut r = received.lock().unwrap();
            r.extend(
                records
                    .iter()
                    .filter_map(|rec| Some((index_of(&rec.data)?, now))),
            );
        })
    };
    let worker = start_worker(aws, &stream, retrieval, hook)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.handle.held_shards().len() < SHARDS as usize {
        if Instant::now() > deadline {
            bail!("the worker did not take the 4 leases within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every consumer start and make its first (empty) reads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.timed.take_durations();
    let mut put_done: Vec<Instant> = Vec::new();
    let mut put_latency = Vec::new();
    let per_call = 10u64;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < duration {
        ticker.tick().await;
        let first = put_done.len() as u64;
        let t0 = Instant::now();
        put_batch(&kinesis, &stream, &hashes, first, per_call).await?;
        let t1 = Instant::now();
        put_latency.push((t1 - t0).as_secs_f64());
        put_done.extend(std::iter::repeat_n(t1, per_call as usize));
    }
    let produced = put_done.len() as u64;
    let rate = produced as f64 / started.elapsed().as_secs_f64();
    let wait_until = Instant::now() + Duration::from_secs(15);
    loop {
        let got = received.lock().unwrap().len() as u64;
        if got >= produced || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.task.abort();
    let get_latency = worker
        .timed
        .take_durations()
        .iter()
        .map(Duration::as_secs_f64)
        .collect();
    let received = received.lock().unwrap().clone();
    let mut seen = vec![false; produced as usize];
    let mut delays = Vec::new();
    for (i, at) in received {
        let Some(done) = put_done.get(i as usize) else {
            continue;
        };
        if !std::mem::replace(&mut seen[i as usize], true) {
            delays.push(at.saturating_duration_since(*done).as_secs_f64());
        }
    }
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    Ok(DelayRun {
        retrieval,
        produced,
        received: delays.len() as u64,
        rate,
        delays,
        put_latency,
        get_latency,
    })
}

/// Result of the throughput measurement.
#[derive(Debug, Clone)]
pub struct ThroughputRun {
    /// Records read.
    pub records: u64,
    /// Records per second from the first GetRecords call to the last delivery.
    pub rate: f64,
    /// From the worker's start to the first delivery.
    pub first_after: Duration,
    /// Time inside GetRecords / (shards × the processing time).
    pub in_get_records: f64,
    /// GetRecords calls made.
    pub get_records_calls: u64,
    /// CPU seconds of this process (the worker) over the run.
    pub worker_cpu: f64,
    /// CPU seconds of kinesis-local over the run.
    pub kinesis_cpu: Option<f64>,
    /// CPU seconds of DynamoDB Local over the run.
    pub dynamodb_cpu: Option<f64>,
    /// How fast the emulator accepted the pre-load, records/s.
    pub put_rate: f64,
}

async fn throughput_run(aws: &LocalAws, records: u64) -> Result<ThroughputRun> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name("bench-tput");
    testkit::create_stream(&kinesis, &stream, SHARDS).await?;
    let hashes = shard_hashes(&kinesis, &stream).await?;
    let put_started = Instant::now();
    let mut i = 0;
    while i < records {
        let n = 500.min(records - i);
        put_batch(&kinesis, &stream, &hashes, i, n).await?;
        i += n;
    }
    let put_rate = records as f64 / put_started.elapsed().as_secs_f64();
    let (kpid, dpid) = emulator_pids(aws);
    let cpu = |pid: Option<u32>| pid.and_then(pid_cpu);
    let (k0, d0, w0) = (cpu(kpid), cpu(dpid), process_cpu());
    let first = Countdown::new(1, Instant::now);
    let done = Countdown::new(records, Instant::now);
    let hook: BatchHook = {
        let (first, done) = (first.clone(), done.clone());
        Arc::new(move |_: &str, r: &[kinesis_client::Record]| {
            first.add(r.len() as u64);
            done.add(r.len() as u64);
        })
    };
    let started = Instant::now();
    let worker = start_worker(
        aws,
        &stream,
        Retrieval::Polling(Duration::from_millis(200)),
        hook,
    )?;
    let finished = tokio::time::timeout(Duration::from_secs(600), done.wait())
        .await
        .context("the worker did not read every record within 600 s")?;
    let (k1, d1, w1) = (cpu(kpid), cpu(dpid), process_cpu());
    let first_at = first.wait().await;
    let timing = worker.timed.timing();
    worker.task.abort();
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    let span = finished - worker.timed.first_call().unwrap_or(first_at);
    let diff = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64());
    Ok(ThroughputRun {
        records,
        rate: records as f64 / span.as_secs_f64().max(1e-9),
        first_after: first_at - started,
        in_get_records: timing.get_records.as_secs_f64()
            / (SHARDS as f64 * (finished - started).as_secs_f64()),
        get_records_calls: timing.calls,
        worker_cpu: (w1 - w0).as_secs_f64(),
        kinesis_cpu: diff(k0, k1),
        dynamodb_cpu: diff(d0, d1),
        put_rate,
    })
}

fn ms(seconds: f64) -> String {
    format!("{} ms", sig(seconds * 1000.0))
}

/// Run section 6.
pub fn section(scale: Scale, services: &mut Services) -> Section {
    let started = Instant::now();
    let ms200 = Retrieval::Polling(Duration::from_millis(200));
    let (runs, duration, records) = match scale {
        Scale::Tiny => (vec![], Duration::ZERO, 0),
        Scale::Quick => (
            vec![ms200, Retrieval::FanOut],
            Duration::from_secs(8),
            8_000,
        ),
        Scale::Full => (
            vec![
                ms200,
                Retrieval::Polling(Duration::from_millis(1500)),
                Retrieval::FanOut,
            ],
            Duration::from_secs(30),
            40_000,
        ),
    };
    let result = services.run(|aws| async move {
        let mut delays = Vec::new();
        for retrieval in runs {
            delays.push(delay_run(&aws, retrieval, duration).await?);
        }
        let tput = if records > 0 {
            Some(throughput_run(&aws, records).await?)
        } else {
            None
        };
        Ok((delays, tput))
    });
    let mut tables = Vec::new();
    let mut notes = Vec::new();
    let goal = match result {
        Ok((delays, tput)) => {
            let mut t = Table::new([
                "retrieval",
                "records put",
                "received",
                "rate",
                "delay p50",
                "delay p99",
                "delay max",
                "GetRecords call p50 / p99",
                "PutRecords call p50",
            ]);
            for d in &delays {
                let q = |v: &[f64], p| percentile(v, p).unwrap_or(0.0);
                let polling = matches!(d.retrieval, Retrieval::Polling(_));
                t.row([
                    d.retrieval.text(),
                    d.produced.to_string(),
                    d.received.to_string(),
                    format!("{} records/s", rate(d.rate)),
                    ms(q(&d.delays, 50.0)),
                    ms(q(&d.delays, 99.0)),
                    ms(q(&d.delays, 100.0)),
                    if polling {
                        format!(
                            "{} / {}",
                            ms(q(&d.get_latency, 50.0)),
                            ms(q(&d.get_latency, 99.0))
                        )
                    } else {
                        "– (no GetRecords)".into()
                    },
                    ms(q(&d.put_latency, 50.0)),
                ]);
                let mean_get =
                    d.get_latency.iter().sum::<f64>() / d.get_latency.len().max(1) as f64;
                let mean_delay = d.delays.iter().sum::<f64>() / d.delays.len().max(1) as f64;
                let Retrieval::Polling(idle) = d.retrieval else {
                    notes.push(format!(
                        "Enhanced fan-out: mean delay {}. kinesis-mock pushes one event per \
                         subscription every second, carrying whatever arrived meanwhile, so on the \
                         emulator a record waits half a second on average for the next event; \
                         Kinesis pushes records about 70 ms after they are put. The library adds \
                         nothing that waits: the event is handed to the processor as it arrives.",
                        ms(mean_delay)
                    ));
                    continue;
                };
                notes.push(format!(
                    "At {} ms between reads: mean delay {}, of which about {} is waiting for the \
                     shard's next read (half the read interval on average, plus the call itself) and \
                     {} the GetRecords call (the emulator, HTTP, decoding): the emulator's share is \
                     about {:.0} %.",
                    idle.as_millis(),
                    ms(mean_delay),
                    ms(idle.as_secs_f64() / 2.0),
                    ms(mean_get),
                    (mean_get / mean_delay.max(1e-9) * 100.0).min(100.0)
                ));
            }
            if !t.rows.is_empty() {
                tables.push(t);
            }
            if let Some(r) = &tput {
                let mut t = Table::new([
                    "records (100 B, 4 shards)",
                    "records/s",
                    "first record after",
                    "time inside GetRecords",
                    "GetRecords calls",
                    "worker CPU",
                    "kinesis-local CPU",
                    "DynamoDB Local CPU",
                ]);
                let opt = |v: Option<f64>| v.map_or("–".into(), |s| format!("{} s", sig(s)));
                t.row([
                    r.records.to_string(),
                    rate(r.rate),
                    format!("{} s", sig(r.first_after.as_secs_f64())),
                    format!("{:.0} % of each shard's time", r.in_get_records * 100.0),
                    r.get_records_calls.to_string(),
                    format!("{} s", sig(r.worker_cpu)),
                    opt(r.kinesis_cpu),
                    opt(r.dynamodb_cpu),
                ]);
                tables.push(t);
                notes.push(format!(
                    "Throughput: the stream was pre-loaded (kinesis-local accepted PutRecords at {} \
                     records/s), then one \
                     new worker (reads every 200 ms, up to 10 000 records each) read it from \
                     TRIM_HORIZON; records/s from its first GetRecords call to its last delivery. Its \
                     consumers spent {:.0} % of their time waiting inside GetRecords, and kinesis-local \
                     used {} of CPU against the worker's {} (section 1: the library needs well under a \
                     microsecond per record): the emulator is the limit.",
                    rate(r.put_rate),
                    r.in_get_records * 100.0,
                    opt(r.kinesis_cpu),
                    opt(Some(r.worker_cpu)),
                ));
            }
            Goal::Info(
                "No numeric goal; the figures are dominated by the read interval and by the emulator (above)."
                    .into(),
            )
        }
        Err(e) => Goal::Info(format!("Not measured: {e:#}")),
    };
    Section {
        number: 6,
        title: "End to end on the local services".into(),
        method: "One worker (`Scheduler` on the AWS SDK clients, default settings but the retrieval shown: polling \
            at a read interval, or enhanced fan-out through a consumer it registers) \
            on a 4-shard kinesis-local stream, lease table in DynamoDB Local. **Delay**: a producer puts 10 \
            records of 100 B every 20 ms (one PutRecords call, spread over the shards by explicit hash key); \
            delay = when the no-op processor receives a record − when its PutRecords call returned. \
            **Throughput**: a pre-loaded stream read by a new worker from TRIM_HORIZON. The worker's stream \
            client is wrapped to time every GetRecords call; the emulators' CPU time comes from \
            `/proc/<pid>/stat`."
            .into(),
        tables,
        goal,
        notes,
        context: format!(
            "Ran in {:.0} s; {} at the end.",
            started.elapsed().as_secs_f64(),
            crate::machine::load_text()
        ),
    }
}
