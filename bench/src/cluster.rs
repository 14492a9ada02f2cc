//! A simulated fleet for sections 3 and 4: `W` workers ([`kinesis_client::Scheduler`]) sharing an
//! [`InMemoryStream`] of `L` shards and an [`InMemoryLeaseStore`] (optionally behind a
//! [`CountingStore`]), a producer putting records into every shard at a steady rate, and a
//! log of every batch delivered (when, by which worker, which shard). Meant for a
//! current-thread runtime with paused time: simulated minutes cost milliseconds.

use crate::counting::{counting, CountingStore};
use crate::noop::NoopProcessor;
use kinesis_client::fleet::FleetConfig;
use kinesis_client::lease::LeaseStore;
use kinesis_client::testing::{Fault, InMemoryLeaseStore, InMemoryStream, LeaseOp};
use kinesis_client::{
    Config, InitialPosition, LeaseAssignmentStrategy, Scheduler, SchedulerHandle, StreamRef,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A batch hook that logs each delivery to worker `worker`'s processors into `log`.
pub fn delivery_hook(log: Arc<Mutex<Vec<Delivery>>>, worker: usize) -> crate::noop::BatchHook {
    Arc::new(move |shard: &str, records: &[kinesis_client::Record]| {
        log.lock().unwrap().push(Delivery {
            at: Instant::now(),
            worker,
            shard: shard.to_string(),
            first: records.first().map(|r| r.sequence_number.to_string()),
            records: records.len(),
        });
    })
}

/// One batch delivered to a processor.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// When (tokio time).
    pub at: Instant,
    /// Which worker (index).
    pub worker: usize,
    /// Which shard.
    pub shard: String,
    /// The sequence number of its first record (a batch that starts where a batch delivered
    /// before started repeats it: a duplicate delivery).
    pub first: Option<String>,
    /// How many records.
    pub records: usize,
}

/// How to build the fleet.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Workers.
    pub workers: usize,
    /// Shards (= leases).
    pub shards: usize,
    /// Failover time of every worker.
    pub failover_time: Duration,
    /// The producer puts one 100-byte record into every shard this often (`None`: no records).
    pub put_every: Option<Duration>,
    /// Seed of the workers' random choices (worker `i` gets `seed * 1000 + i`).
    pub seed: u64,
    /// Count the lease-store calls.
    pub count_calls: bool,
    /// Every lease-store call takes this long (tokio time), as a round trip to DynamoDB would.
    pub store_latency: Option<Duration>,
    /// The protocol (`client_version_config`): leaderless (`Auto`, the default) or a KCL 3.x
    /// fleet (`V3x`); and whether planned moves are hand-offs.
    pub fleet: FleetConfig,
    /// Records put into shard `i` at each put (`records_per_put[i]`; 1 for a shard beyond the
    /// list): uneven traffic.
    pub records_per_put: Vec<usize>,
    /// How the workers share the leases.
    pub strategy: LeaseAssignmentStrategy,
}

struct Worker {
    task: Option<JoinHandle<()>>,
    handle: SchedulerHandle,
}

/// A running fleet.
pub struct Cluster {
    /// The stream.
    pub stream: InMemoryStream,
    /// The lease table.
    pub store: InMemoryLeaseStore,
    /// The counting wrapper every worker uses, when asked for.
    pub counting: Option<Arc<CountingStore>>,
    /// Every batch delivered so far.
    pub log: Arc<Mutex<Vec<Delivery>>>,
    workers: Vec<Worker>,
    producer: JoinHandle<()>,
    spec: ClusterSpec,
}

fn shard_hash(i: usize, n: usize) -> u128 {
    (u128::MAX / n as u128) * i as u128
}

impl Cluster {
    /// Start the producer and every worker.
    pub fn start(spec: ClusterSpec) -> Cluster {
        let stream = InMemoryStream::new("sim", spec.shards);
        let store = InMemoryLeaseStore::new();
        if let Some(latency) = spec.store_latency {
            store.set_fault_injector(Some(Arc::new(move |_: LeaseOp, _: Option<&str>| {
                Some(Fault::Delay(latency))
            })));
        }
        let counting = spec
            .count_calls
            .then(|| Arc::new(counting(Arc::new(store.clone()))));
        let log = Arc::new(Mutex::new(Vec::new()));
        let producer = tokio::spawn({
            let stream = stream.clone();
            let (n, every) = (spec.shards, spec.put_every);
            let per_put = spec.records_per_put.clone();
            async move {
                let Some(every) = every else {
                    return;
                };
                let payload = [b'x'; 100];
                let mut ticks = 0u64;
                loop {
                    for i in 0..n {
                        for _ in 0..per_put.get(i).copied().unwrap_or(1) {
                            stream.put_with_hash(shard_hash(i, n), "k", &payload);
                        }
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(100) {
                        stream.trim_records_older_than(Duration::from_secs(120));
                    }
                    tokio::time::sleep(every).await;
                }
            }
        });
        let mut cluster = Cluster {
            stream,
            store,
            counting,
            log,
            workers: Vec::new(),
            producer,
            spec,
        };
        for i in 0..cluster.spec.workers {
            let w = cluster.spawn_worker(i);
            cluster.workers.push(w);
        }
        cluster
    }

    fn spawn_worker(&self, i: usize) -> Worker {
        let config = Config::builder("sim", StreamRef::Name("sim".into()))
            .worker_id(format!("w{i}"))
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(self.spec.failover_time)
            .rng_seed(Some(self.spec.seed * 1000 + i as u64))
            .fleet(self.spec.fleet.clone())
            .lease_assignment_strategy(self.spec.strategy)
            .build()
            .expect("config");
        let hook = delivery_hook(self.log.clone(), i);
        let factory = move |shard: &str| NoopProcessor::new(shard, hook.clone());
        let store: Arc<dyn LeaseStore> = match &self.counting {
            Some(c) => c.clone(),
            None => Arc::new(self.store.clone()),
        };
        let scheduler = Scheduler::new(config, factory, Arc::new(self.stream.clone()), store);
        let handle = scheduler.handle();
        let task = tokio::spawn(async move {
            let _ = scheduler.run(std::future::pending()).await;
        });
        Worker {
            task: Some(task),
            handle,
        }
    }

    /// Start one more worker (the next index); returns its index.
    pub fn add_worker(&mut self) -> usize {
        let i = self.workers.len();
        let w = self.spawn_worker(i);
        self.workers.push(w);
        i
    }

    /// The index of the KCL 3.x fleet's leader, if one leads.
    pub fn leader(&self) -> Option<usize> {
        let owner = self.store.fleet().lock_item()?.owner;
        owner.strip_prefix('w')?.parse().ok()
    }

    /// Each lease's owner, from the table.
    pub fn lease_owners(&self) -> BTreeMap<String, Option<String>> {
        self.store
            .snapshot()
            .into_iter()
            .map(|(k, l)| (k, l.owner))
            .collect()
    }

    /// Leases held per worker id, from the table.
    pub fn owners(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for lease in self.store.snapshot().values() {
            if let Some(o) = &lease.owner {
                *m.entry(o.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// True when every lease is owned and every live worker holds `floor(L/W)` or
    /// `ceil(L/W)` of them.
    pub fn balanced(&self) -> bool {
        let live = self.workers.iter().filter(|w| w.task.is_some()).count();
        let owners = self.owners();
        let held: usize = owners.values().sum();
        let (lo, hi) = (self.spec.shards / live, self.spec.shards.div_ceil(live));
        held == self.spec.shards
            && owners.len() == live
            && owners.values().all(|&n| n >= lo && n <= hi)
            && self
                .store
                .snapshot()
                .values()
                .all(|l| l.checkpoint_owner.is_none())
    }

    /// Wait (tokio time) until [`Cluster::balanced`], checking every 100 ms; false on timeout.
    pub async fn wait_balanced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.balanced() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The keys worker `i` holds now.
    pub fn held_by(&self, i: usize) -> Vec<String> {
        self.workers[i].handle.held_shards().into_iter().collect()
    }

    /// Kill worker `i` abruptly: its task (and with it every consumer and fetcher) is dropped
    /// without releasing anything, as if the process died.
    pub fn kill(&mut self, i: usize) {
        if let Some(t) = self.workers[i].task.take() {
            t.abort();
        }
    }

    /// Stop worker `i` gracefully (as on SIGTERM) and wait until it has stopped.
    pub async fn stop(&mut self, i: usize) {
        self.workers[i].handle.request_shutdown();
        if let Some(t) = self.workers[i].task.take() {
            let _ = t.await;
        }
    }

    /// The first delivery of `shard` after `since` by a worker other than `not_by`.
    pub fn first_delivery(&self, shard: &str, since: Instant, not_by: usize) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.shard == shard && d.at > since && d.worker != not_by)
            .map(|d| d.at)
            .min()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.producer.abort();
        for w in &mut self.workers {
            if let Some(t) = w.task.take() {
                t.abort();
            }
        }
    }
}

/// A current-thread runtime with paused (simulated) time.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}
