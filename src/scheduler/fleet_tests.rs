//! Workers in a KCL 3.x fleet on in-memory services: the leader assigns, balances by
//! graceful hand-off (the old owner's processor checkpoints before the new owner starts: no
//! record is delivered twice), a dead leader is replaced, and an `Auto` worker joins a fleet
//! once its `Migration3.0` item appears.

use super::*;
use crate::checkpointer::Checkpointer;
use crate::fleet::{ClientVersion, FleetConfig};
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, Shutdown,
};
use crate::retrieval::StreamRef;
use crate::sync::Mutex;
use crate::testing::lease_store::InMemoryLeaseStore;
use crate::testing::stream::InMemoryStream;

const F: Duration = Duration::from_secs(3);

/// Every delivery: (worker, shard, sequence number); and the shards whose processors were
/// asked to shut down, by worker.
#[derive(Clone, Default)]
struct Journal {
    deliveries: Arc<Mutex<Vec<(String, String, String)>>>,
    requested: Arc<Mutex<Vec<(String, String)>>>,
    /// Every batch, and every shutdown as requested: (worker, shard, when).
    batches: Arc<Mutex<Vec<(String, String, Instant)>>>,
    stops: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Journal {
    fn distinct(&self) -> usize {
        let d = self.deliveries.lock();
        d.iter()
            .map(|(_, shard, seq)| (shard, seq))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Records delivered more than once.
    fn duplicates(&self) -> usize {
        let all = self.deliveries.lock().len();
        all - self.distinct()
    }

    fn requested_of(&self, worker: &str) -> usize {
        self.requested
            .lock()
            .iter()
            .filter(|(w, _)| w == worker)
            .count()
    }
}

struct Recording {
    worker: String,
    journal: Journal,
    shard: String,
    /// Hang in `shutdown(Requested)` (a processor that never finishes its hand-off).
    hang_on_request: bool,
}

#[async_trait::async_trait]
impl RecordProcessor for Recording {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.shard = input.shard_id.to_string();
        Ok(())
    }
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if !input.records.is_empty() {
            self.journal.batches.lock().push((
                self.worker.clone(),
                self.shard.clone(),
                Instant::now(),
            ));
        }
        {
            let mut d = self.journal.deliveries.lock();
            for r in &input.records {
                d.push((
                    self.worker.clone(),
                    self.shard.clone(),
                    r.sequence_number.to_string(),
                ));
            }
        }
        Ok(cp.checkpoint().await?)
    }
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } => checkpointer.checkpoint().await?,
            Shutdown::Requested { checkpointer } => {
                self.journal.stops.lock().push((
                    self.worker.clone(),
                    self.shard.clone(),
                    Instant::now(),
                ));
                self.journal
                    .requested
                    .lock()
                    .push((self.worker.clone(), self.shard.clone()));
                if self.hang_on_request {
                    std::future::pending::<()>().await;
                }
                checkpointer.checkpoint().await?
            }
            _ => {}
        }
        Ok(())
    }
}

fn worker(
    name: &str,
    version: ClientVersionConfig,
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
    journal: &Journal,
    hang_on_request: bool,
) -> Scheduler<impl RecordProcessorFactory> {
    let fleet = FleetConfig {
        check_interval: Duration::from_secs(2),
        graceful_lease_handoff_timeout: Duration::from_secs(10),
        ..FleetConfig::default().with_client_version_config(version)
    };
    worker_with(name, fleet, stream, store, journal, hang_on_request)
}

fn worker_with(
    name: &str,
    fleet: FleetConfig,
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
    journal: &Journal,
    hang_on_request: bool,
) -> Scheduler<impl RecordProcessorFactory> {
    worker_failing_over_in(name, F, fleet, stream, store, journal, hang_on_request)
}

fn worker_failing_over_in(
    name: &str,
    failover: Duration,
    fleet: FleetConfig,
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
    journal: &Journal,
    hang_on_request: bool,
) -> Scheduler<impl RecordProcessorFactory> {
    let config = Config::builder("app", StreamRef::Name("s".into()))
        .worker_id(name)
        .failover_time(failover)
        .initial_position(crate::InitialPosition::TrimHorizon)
        .rng_seed(Some(name.len() as u64))
        .fleet(fleet)
        .build()
        .unwrap();
    let (worker, journal) = (name.to_string(), journal.clone());
    let factory = move |_: &str| Recording {
        worker: worker.clone(),
        journal: journal.clone(),
        shard: String::new(),
        hang_on_request,
    };
    Scheduler::new(
        config,
        factory,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    )
}

fn produce(stream: &InMemoryStream, n: usize) {
    for i in 0..n {
        stream.put(&format!("k{i}"), b"x");
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owners(store: &InMemoryLeaseStore) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for l in store.snapshot().values() {
        *by.entry(l.owner.clone().unwrap_or_default()).or_default() += 1;
    }
    by
}

fn settled(store: &InMemoryLeaseStore, expect: &[(&str, usize)]) -> bool {
    let leases = store.snapshot();
    leases.values().all(|l| l.checkpoint_owner.is_none())
        && owners(store)
            == expect
                .iter()
                .map(|(w, n)| (w.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
}

#[tokio::test(start_paused = true)]
async fn a_3x_fleet_assigns_balances_by_hand_off_and_delivers_nothing_twice() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    produce(&stream, 80);
    let w1 = worker(
        "w1",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 holds every lease and consumed everything", || {
        settled(&store, &[("w1", 4)]) && journal.distinct() == 80
    })
    .await;
    let fleet = store.fleet();
    assert_eq!(
        fleet.migration().map(|m| m.client_version),
        Some(ClientVersion::V3x),
        "a V3x worker creates the fleet in 3.x mode"
    );
    assert_eq!(fleet.lock_item().map(|l| l.owner).as_deref(), Some("w1"));
    assert!(fleet.metrics().contains_key("w1"), "w1 reports metrics");

    let w2 = worker(
        "w2",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("the leader hands two leases to w2", || {
        settled(&store, &[("w1", 2), ("w2", 2)]) && h2.held_shards().len() == 2
    })
    .await;
    assert_eq!(
        journal.requested_of("w1"),
        2,
        "w1's processors were asked to checkpoint"
    );
    produce(&stream, 80);
    until("everything consumed", || journal.distinct() == 160).await;
    assert_eq!(
        journal.duplicates(),
        0,
        "hand-offs start the new owner right after the old owner's checkpoint"
    );
    // Balanced: nothing moves any more.
    let before = store.snapshot();
    tokio::time::sleep(F * 5).await;
    let after = store.snapshot();
    for (k, l) in &after {
        assert_eq!(l.owner, before[k].owner, "{k} moved again");
    }
    t1.abort();
    t2.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dead_leaders_lock_and_leases_are_taken_over() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    produce(&stream, 40);
    let w1 = worker(
        "w1",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 leads", || settled(&store, &[("w1", 4)])).await;
    let w2 = worker(
        "w2",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("balanced", || settled(&store, &[("w1", 2), ("w2", 2)])).await;
    until("consumed", || journal.distinct() == 40).await;
    // w1 dies without a word (its lock and leases stay in the table).
    t1.abort();
    let died = Instant::now();
    until("w2 leads and holds every lease", || {
        store.fleet().lock_item().is_some_and(|l| l.owner == "w2") && settled(&store, &[("w2", 4)])
    })
    .await;
    let took = died.elapsed();
    // The lock's duration (2 F) plus a check, then the leases' expiry (F) and a round.
    assert!(took <= F * 5, "took {took:?}");
    produce(&stream, 40);
    until("everything consumed", || journal.distinct() == 80).await;
    t2.abort();
}

#[tokio::test(start_paused = true)]
async fn an_auto_worker_joins_a_3x_fleet_when_its_migration_item_appears() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let w1 = worker(
        "w1",
        ClientVersionConfig::Auto,
        &stream,
        &store,
        &journal,
        false,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 takes every lease (leaderless)", || {
        settled(&store, &[("w1", 4)])
    })
    .await;
    assert_eq!(store.fleet().migration(), None, "Auto creates nothing");
    assert!(
        store.fleet().metrics().is_empty(),
        "no metrics in a leaderless fleet"
    );
    // A Java 3.x worker created the fleet's item (as CLIENT_VERSION_CONFIG_3X does).
    store.fleet().set_client_version(ClientVersion::V3x);
    until("w1 follows: reports metrics and leads", || {
        store.fleet().metrics().contains_key("w1")
            && store.fleet().lock_item().is_some_and(|l| l.owner == "w1")
    })
    .await;
    let w2 = worker(
        "w2",
        ClientVersionConfig::Auto,
        &stream,
        &store,
        &journal,
        false,
    );
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("w2 is given leases by hand-off, never by stealing", || {
        settled(&store, &[("w1", 2), ("w2", 2)])
    })
    .await;
    assert_eq!(journal.requested_of("w1"), 2);
    t1.abort();
    t2.abort();
}

#[tokio::test(start_paused = true)]
async fn a_hand_off_whose_processor_hangs_passes_on_after_the_timeout() {
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let w1 = worker(
        "w1",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        true,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 holds both", || settled(&store, &[("w1", 2)])).await;
    let w2 = worker(
        "w2",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("a hand-off begins", || journal.requested_of("w1") == 1).await;
    let began = Instant::now();
    let key = journal.requested.lock()[0].1.clone();
    // Meanwhile the lease has one live owner: w1 (as checkpointOwner); w2 does not start it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !h2.held_shards().contains(&key),
        "w2 waits for the hand-off"
    );
    until("the lease passes on after the hand-off timeout", || {
        h2.held_shards().contains(&key)
    })
    .await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_secs(15),
        "took {took:?}"
    );
    t1.abort();
    t2.abort();
}

/// A dead worker's metrics row stays fresh for twice the reporting period (the Java KCL does not
/// delete it either): the leader must not keep giving that worker leases it will never adopt.
#[tokio::test(start_paused = true)]
async fn a_dead_workers_fresh_metrics_row_gets_no_lease() {
    let stream = InMemoryStream::new("s", 6);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    produce(&stream, 60);
    let w1 = worker(
        "w1",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 leads", || settled(&store, &[("w1", 6)])).await;
    let w2 = worker(
        "w2",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    let w3 = worker(
        "w3",
        ClientVersionConfig::V3x,
        &stream,
        &store,
        &journal,
        false,
    );
    let t3 = tokio::spawn(w3.run(std::future::pending()));
    until("balanced over three", || {
        settled(&store, &[("w1", 2), ("w2", 2), ("w3", 2)])
    })
    .await;
    t3.abort();
    let died = Instant::now();
    // For the minute its row stays fresh, w3 is given no lease once its own expired.
    let mut reassigned = false;
    while died.elapsed() < Duration::from_secs(70) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let owners = owners(&store);
        if !owners.contains_key("w3") {
            reassigned = true;
        } else {
            assert!(
                !reassigned,
                "w3 was given a lease again after it died: {owners:?}"
            );
        }
    }
    assert!(reassigned, "w3's leases were never reassigned");
    until("everything consumed", || journal.distinct() == 60).await;
    assert!(
        settled(&store, &[("w1", 3), ("w2", 3)]),
        "{:?}",
        owners(&store)
    );
    t1.abort();
    t2.abort();
}

/// A worker of a 3.x fleet that stops gracefully passes its leases to live workers itself (they
/// find them at their next discovery, a second later), instead of leaving them unowned until the
/// leader's next assignment round.
#[tokio::test(start_paused = true)]
async fn a_stopping_worker_passes_its_leases_to_live_workers() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    // The leader assigns only every 30 s: nothing but the stopping worker moves the leases.
    let fleet = FleetConfig {
        lease_assignment_interval: Some(Duration::from_secs(30)),
        ..FleetConfig::default().with_client_version_config(ClientVersionConfig::V3x)
    };
    let w1 = worker_with("w1", fleet.clone(), &stream, &store, &journal, false);
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 leads", || settled(&store, &[("w1", 4)])).await;
    let w2 = worker_with("w2", fleet, &stream, &store, &journal, false);
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("balanced", || settled(&store, &[("w1", 2), ("w2", 2)])).await;
    h2.request_shutdown();
    t2.await.unwrap().unwrap();
    assert!(
        settled(&store, &[("w1", 4)]),
        "w2's leases go straight to w1: {:?}",
        owners(&store)
    );
    produce(&stream, 40);
    let stopped = Instant::now();
    until("w1 delivers every shard", || {
        let d = journal.deliveries.lock();
        d.iter()
            .filter(|(w, ..)| w == "w1")
            .map(|(_, s, _)| s)
            .collect::<BTreeSet<_>>()
            .len()
            == 4
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopped.elapsed()
    );
    assert!(
        !store.fleet().metrics().contains_key("w2"),
        "a worker that leaves deletes its metrics row"
    );
    t1.abort();
}

/// The leaderless protocol (no `Migration3.0` item) balances by graceful hand-off too: a
/// joining worker's steal names the victim as `checkpointOwner`, the victim's processor is
/// asked to shut down and checkpoints, and the thief starts right after that checkpoint. With
/// records put throughout, none is delivered twice. (A steal that takes the lease at once
/// starts the thief from the last checkpoint while the victim may still be processing.)
#[tokio::test(start_paused = true)]
async fn a_leaderless_steal_is_a_hand_off_and_delivers_nothing_twice() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let w1 = worker(
        "w1",
        ClientVersionConfig::Auto,
        &stream,
        &store,
        &journal,
        false,
    );
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 takes every lease", || settled(&store, &[("w1", 4)])).await;
    let producer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                produce(&stream, 4);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(F).await;
    let w2 = worker(
        "w2",
        ClientVersionConfig::Auto,
        &stream,
        &store,
        &journal,
        false,
    );
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("w2 steals its share by hand-off", || {
        settled(&store, &[("w1", 2), ("w2", 2)]) && h2.held_shards().len() == 2
    })
    .await;
    assert_eq!(store.fleet().migration(), None, "still leaderless");
    assert_eq!(
        journal.requested_of("w1"),
        2,
        "w1's processors were asked to checkpoint before their leases moved"
    );
    producer.await.unwrap();
    until("everything consumed", || journal.distinct() == 1600).await;
    assert_eq!(journal.duplicates(), 0, "a hand-off repeats no record");
    t1.abort();
    t2.abort();
}

/// A worker that cannot read the lease table (its discovery fails) stops writing its metrics
/// row, so that a leader gives it no lease it could not adopt; it writes again once it can.
#[tokio::test(start_paused = true)]
async fn a_worker_whose_discovery_fails_stops_reporting_metrics() {
    use crate::lease::LeaseOp;
    use crate::testing::lease_store::Fault;
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let fleet = FleetConfig {
        worker_metrics_reporter_interval: Duration::from_secs(5),
        ..FleetConfig::default().with_client_version_config(ClientVersionConfig::V3x)
    };
    let w1 = worker_with("w1", fleet, &stream, &store, &journal, false);
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 holds both and reports", || {
        settled(&store, &[("w1", 2)]) && store.fleet().metrics().contains_key("w1")
    })
    .await;
    let lut = || store.fleet().metrics()["w1"].last_update_s;
    store.set_fault_injector(Some(Arc::new(|op: LeaseOp, _: Option<&str>| {
        (op == LeaseOp::ListOwned).then_some(Fault::Timeout)
    })));
    // Past the failover time the table counts as unreachable; from then on, no row.
    tokio::time::sleep(F + Duration::from_secs(6)).await;
    let stopped_at = lut();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        lut(),
        stopped_at,
        "a row was written while discovery failed"
    );
    store.set_fault_injector(None);
    let before = lut();
    until("w1 reports again", || lut() > before).await;
    t1.abort();
}

/// A rolling deploy of a leaderless fleet: the stopping worker names each lease's next owner
/// while its processors still run, waits until the other worker watches them, then its
/// processors checkpoint and the leases pass on. Each shard resumes on the other worker within
/// half a second of its processor's shutdown on the stopping one (its last checkpoint), and no
/// record is delivered twice.
#[tokio::test(start_paused = true)]
async fn a_leaderless_rolling_deploy_hands_leases_over_without_a_gap() {
    let stream = InMemoryStream::new("s", 4);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let producer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            for _ in 0..1200 {
                produce(&stream, 4);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // F = 10 s: the other worker scans every 3.3 s; a lease released with no owner would
    // wait up to that long for it.
    let f = Duration::from_secs(10);
    let fleet = FleetConfig::default();
    let w1 = worker_failing_over_in("w1", f, fleet.clone(), &stream, &store, &journal, false);
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 takes every lease", || settled(&store, &[("w1", 4)])).await;
    let w2 = worker_failing_over_in("w2", f, fleet, &stream, &store, &journal, false);
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("balanced", || settled(&store, &[("w1", 2), ("w2", 2)])).await;
    tokio::time::sleep(f).await;
    let moving: BTreeSet<String> = h2.held_shards().into_iter().collect();
    h2.request_shutdown();
    t2.await.unwrap().unwrap();
    until("w1 holds every lease", || settled(&store, &[("w1", 4)])).await;
    producer.await.unwrap();
    until("everything consumed", || journal.distinct() == 4800).await;
    assert_eq!(journal.duplicates(), 0, "a hand-off repeats no record");
    let batches = journal.batches.lock().clone();
    for shard in &moving {
        let last_w2 = journal
            .stops
            .lock()
            .iter()
            .filter(|(w, s, _)| w == "w2" && s == shard)
            .map(|b| b.2)
            .max()
            .expect("w2's processor was shut down as requested");
        let first_w1 = batches
            .iter()
            .filter(|(w, s, at)| w == "w1" && s == shard && *at >= last_w2)
            .map(|b| b.2)
            .min()
            .expect("w1 resumed the shard");
        // A look at the lease (250 ms) and the adoption; released with no owner, the lease
        // would wait for w1's next scan (here 882 ms; up to 3.3 s).
        let gap = first_w1 - last_w2;
        assert!(
            gap <= Duration::from_millis(500),
            "{shard} waited {gap:?} between its processor's shutdown on w2 and its first batch on w1"
        );
    }
    t1.abort();
}

/// A worker that stops while a lease is being handed to it (its steal waits for a processor
/// that is slow to checkpoint) gives the lease back to its owner, which keeps it: it is not
/// passed to a worker that has gone and left to expire.
#[tokio::test(start_paused = true)]
async fn a_thief_that_stops_mid_hand_off_gives_the_lease_back() {
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let journal = Journal::default();
    let auto = ClientVersionConfig::Auto;
    let w1 = worker("w1", auto, &stream, &store, &journal, true);
    let t1 = tokio::spawn(w1.run(std::future::pending()));
    until("w1 holds both", || settled(&store, &[("w1", 2)])).await;
    let w2 = worker("w2", auto, &stream, &store, &journal, false);
    let h2 = w2.handle();
    let t2 = tokio::spawn(w2.run(std::future::pending()));
    until("w2's steal waits for w1's processor", || {
        journal.requested_of("w1") == 1
    })
    .await;
    let key = journal.requested.lock()[0].1.clone();
    h2.request_shutdown();
    t2.await.unwrap().unwrap();
    let lease = store.snapshot()[&key].clone();
    assert_eq!(lease.owner.as_deref(), Some("w1"), "{lease:?}");
    assert_eq!(lease.checkpoint_owner, None, "{lease:?}");
    // w1 processes it again well before it would have expired in w2's name (w1's processor
    // hangs until the hand-off timeout, 10 s; the lease then needs one take round).
    let given_back = Instant::now();
    until("w1 holds both again", || {
        store.snapshot()[&key].counter > lease.counter && settled(&store, &[("w1", 2)])
    })
    .await;
    assert!(
        given_back.elapsed() < Duration::from_secs(12),
        "{:?}",
        given_back.elapsed()
    );
    t1.abort();
}
