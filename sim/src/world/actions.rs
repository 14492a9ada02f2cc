//! The scenario's actions on the world: workers (join, restart, graceful stop, kill, pause) and
//! the stream (produce, split, merge, retention trim). Targets are chosen here, from the
//! world's seeded generator, among the workers and shards that exist at the time.

use super::{Worker, WorkerState, World, TICK};
use crate::gate::Gate;
#[cfg(doc)]
use crate::ledger::Ledger;
use crate::processor::SimProcessorFactory;
use crate::scenario::{Action, Retrieval, Start, MAX_OPEN_SHARDS, MAX_WORKERS};
use crate::store::sim_lease_store;
use crate::stream::SimStream;
use kinesis_client::multi_stream::StreamConfig;
use kinesis_client::processor::RetryPolicy;
use kinesis_client::retrieval::{StreamClient, StreamRef};
use kinesis_client::testing::{InMemoryStream, UserRecordSpec};
use kinesis_client::{
    Config, FanOutConfig, InitialPosition, RetrievalMode, Scheduler, SchedulerError,
};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

impl World {
    pub(super) fn add_worker(&mut self, reuse: Option<String>) {
        let id = reuse.unwrap_or_else(|| {
            self.next_worker += 1;
            format!("w{}", self.next_worker - 1)
        });
        self.incarnations += 1;
        let sc = &self.sc;
        let builder = match (self.tracker(), sc.multi_stream) {
            (Some(tracker), Some(plan)) => Config::multi_stream_builder("sim-app", tracker.clone())
                .stream_tracker_interval(plan.tracker_interval),
            _ => Config::builder("sim-app", StreamRef::Name("sim".into())),
        };
        let builder = match self.fleet_config(&id) {
            Some(fleet) => builder.fleet(fleet),
            None => builder,
        };
        let config = builder
            .worker_id(id.clone())
            .initial_position(self.initial_position())
            .failover_time(sc.failover)
            .max_records(sc.max_records)
            .idle_time_between_reads(sc.idle_between_reads)
            .max_pending_batches(sc.max_pending_batches)
            .call_process_records_even_for_empty_list(sc.empty_batches)
            .parent_shard_poll_interval(sc.parent_poll)
            .shard_sync_interval(sc.shard_sync_interval)
            .task_backoff(sc.task_backoff)
            .retry_policy(match sc.retry_max_attempts {
                Some(n) => RetryPolicy::default().with_max_attempts(n),
                None => RetryPolicy::UNLIMITED,
            })
            .cleanup_leases_upon_shard_completion(true)
            .lease_cleanup_interval(sc.cleanup_interval)
            .max_leases_to_steal_at_one_time(sc.steal_at_once)
            .lease_assignment_strategy(sc.strategy)
            .graceful_shutdown_timeout(sc.graceful_timeout)
            .retrieval_mode(match sc.retrieval {
                Retrieval::Polling => RetrievalMode::Polling,
                Retrieval::FanOut(_) => RetrievalMode::FanOut,
            })
            .fan_out({
                let mut f = FanOutConfig::default();
                f.consumer_arn = self.consumer.as_ref().map(|(_, arn)| arn.clone());
                f
            })
            .rng_seed(Some(
                sc.seed ^ self.incarnations.wrapping_mul(0x2545_F491_4F6C_DD1D),
            ))
            .build()
            .expect("the scenario's settings are valid");
        let gate = Gate::new();
        let store = sim_lease_store(
            self.table.clone(),
            &id,
            gate.clone(),
            self.store_faults.clone(),
            self.scans.clone(),
            self.ledger.clone(),
            self.trace.clone(),
        );
        let factory = SimProcessorFactory {
            worker: id.clone(),
            ledger: self.ledger.clone(),
            trace: self.trace.clone(),
            profile: sc.processor,
            seed: sc.seed,
        };
        let scheduler = if self.tracker().is_some() {
            let (streams, gate, worker, ledger) = (
                self.streams_by_id.clone(),
                gate.clone(),
                id.clone(),
                self.ledger.clone(),
            );
            let clients = move |c: &StreamConfig| -> Arc<dyn StreamClient> {
                let stream = streams
                    .lock()
                    .unwrap()
                    .get(&c.stream.to_string())
                    .cloned()
                    .unwrap_or_else(|| {
                        let gone = InMemoryStream::new(c.stream.name(), 1);
                        gone.delete();
                        gone
                    });
                Arc::new(
                    SimStream::new(stream, gate.clone(), &worker, ledger.clone())
                        .of_stream(c.stream.clone()),
                )
            };
            Scheduler::multi_stream(config, factory, clients, Arc::new(store))
        } else {
            let stream =
                SimStream::new(self.stream.clone(), gate.clone(), &id, self.ledger.clone());
            Scheduler::new(config, factory, Arc::new(stream), Arc::new(store))
        };
        let scheduler = match self.fleet_store_of(&id, &gate) {
            Some(fleet) => scheduler.with_fleet_store(fleet),
            None => scheduler,
        };
        let handle = scheduler.handle();
        self.trace.worker_starts(&id);
        let task = tokio::spawn(scheduler.run(std::future::pending::<()>()));
        self.ledger.lock().unwrap().stats.workers_started += 1;
        self.trace.push(
            crate::trace::Source::World,
            Some(&id),
            None,
            "worker starts",
        );
        self.workers.push(Worker {
            id,
            handle,
            task,
            gate,
            state: WorkerState::Running,
            paused_until: None,
            stop_requested: None,
        });
    }

    /// Where shards without a checkpoint start.
    pub(super) fn initial_position(&self) -> InitialPosition {
        match self.sc.start {
            Start::TrimHorizon => InitialPosition::TrimHorizon,
            Start::Latest => InitialPosition::Latest,
            Start::AtTimestamp => InitialPosition::AtTimestamp(self.started_at),
        }
    }

    /// Index of a random worker among those `pick` accepts.
    pub(super) fn pick_worker(&mut self, pick: impl Fn(&Worker) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&i| pick(&self.workers[i]))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())])
    }

    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::Produce(rate) => {
                self.rate = rate;
                self.say(None, format!("producers now put {rate:.1} records/s"));
            }
            Action::AddWorker => {
                if self.live().count() < MAX_WORKERS {
                    self.add_worker(None);
                } else {
                    self.say(None, "add worker: already at the maximum".into());
                }
            }
            Action::RestartWorker => {
                let live: Vec<String> = self.live().map(|w| w.id.clone()).collect();
                let dead: Vec<String> = {
                    let mut d: Vec<String> = self
                        .workers
                        .iter()
                        .filter(|w| w.state == WorkerState::Gone && !live.contains(&w.id))
                        .map(|w| w.id.clone())
                        .collect();
                    d.dedup();
                    d.sort();
                    d.dedup();
                    d
                };
                if dead.is_empty() || live.len() >= MAX_WORKERS {
                    self.say(None, "restart worker: none to restart".into());
                } else {
                    let id = dead[self.rng.random_range(0..dead.len())].clone();
                    self.say(Some(&id), "worker restarts with the same id".into());
                    self.add_worker(Some(id));
                }
            }
            Action::StopWorker => match self.pick_worker(|w| w.state == WorkerState::Running) {
                Some(i) => {
                    let w = &mut self.workers[i];
                    w.handle.request_shutdown();
                    w.state = WorkerState::Stopping;
                    w.stop_requested = Some(Instant::now());
                    let id = w.id.clone();
                    self.ledger.lock().unwrap().stats.stops += 1;
                    self.say(Some(&id), "graceful shutdown requested".into());
                }
                None => self.say(None, "stop worker: none running".into()),
            },
            Action::KillWorker => match self.pick_worker(|w| w.state != WorkerState::Gone) {
                Some(i) => self.kill(i),
                None => self.say(None, "kill worker: none alive".into()),
            },
            Action::PauseWorker(d) => {
                match self.pick_worker(|w| w.state != WorkerState::Gone && w.paused_until.is_none())
                {
                    Some(i) => self.pause(i, d),
                    None => self.say(None, "pause worker: none to pause".into()),
                }
            }
            Action::KillLeader => {
                let leader = self.leader_index();
                match leader.or_else(|| self.pick_worker(|w| w.state != WorkerState::Gone)) {
                    Some(i) => {
                        if leader.is_none() {
                            self.say(None, "kill the leader: no live worker holds the lock; a random worker instead".into());
                        }
                        self.kill(i)
                    }
                    None => self.say(None, "kill the leader: none alive".into()),
                }
            }
            Action::PauseLeader(d) => {
                let leader = self
                    .leader_index()
                    .filter(|&i| self.workers[i].paused_until.is_none());
                let pick = leader.or_else(|| {
                    self.pick_worker(|w| w.state != WorkerState::Gone && w.paused_until.is_none())
                });
                match pick {
                    Some(i) => {
                        if leader.is_none() {
                            self.say(None, "pause the leader: no live, unpaused worker holds the lock; a random worker instead".into());
                        }
                        self.pause(i, d)
                    }
                    None => self.say(None, "pause the leader: none to pause".into()),
                }
            }
            Action::FleetTo3x => self.fleet_to_3x(),
            Action::Split => self.split(),
            Action::Merge => self.merge(),
            Action::Trim => self.trim(),
            Action::AddStream => self.add_stream(),
            Action::RemoveStream => self.remove_stream(),
            Action::ReaddStream => self.readd_stream(),
            Action::RecreateStream => self.recreate_stream(),
        }
    }

    /// Worker `i` dies abruptly.
    fn kill(&mut self, i: usize) {
        let leads = self.leader_index() == Some(i);
        let w = &mut self.workers[i];
        w.task.abort();
        w.gate.open();
        w.state = WorkerState::Gone;
        let id = w.id.clone();
        let mut ledger = self.ledger.lock().unwrap();
        ledger.stats.kills += 1;
        ledger.stats.leader_kills += u64::from(leads);
        drop(ledger);
        self.say(
            Some(&id),
            format!(
                "worker killed{}",
                if leads {
                    " (it holds the leader lock)"
                } else {
                    ""
                }
            ),
        );
    }

    /// Worker `i`'s I/O stalls for `d`.
    fn pause(&mut self, i: usize, d: Duration) {
        let leads = self.leader_index() == Some(i);
        let w = &mut self.workers[i];
        w.gate.close();
        w.paused_until = Some(Instant::now() + d);
        let id = w.id.clone();
        let mut ledger = self.ledger.lock().unwrap();
        ledger.stats.pauses += 1;
        ledger.stats.leader_pauses += u64::from(leads);
        drop(ledger);
        self.say(
            Some(&id),
            format!(
                "worker paused for {d:?} (its I/O stalls){}",
                if leads {
                    "; it holds the leader lock"
                } else {
                    ""
                }
            ),
        );
    }

    pub(super) fn end_pause(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.gate.open();
        w.paused_until = None;
        let id = w.id.clone();
        self.say(Some(&id), "worker resumes".into());
    }

    /// Fan-out by ARN: register a consumer (a new name each time) for the workers to be
    /// configured with.
    pub(super) fn with_configured_consumer(mut self) -> Self {
        if self.consumer_plan.by_arn {
            self.register_configured_consumer();
        }
        self
    }

    fn register_configured_consumer(&mut self) {
        let name = format!("sim-app-{}", self.consumers_registered);
        self.consumers_registered += 1;
        let arn = self
            .stream
            .register_consumer(&name)
            .expect("fewer than 20 consumers")
            .consumer_arn;
        self.say(
            None,
            format!(
                "the operator registers the stream consumer {arn}; workers are configured with it"
            ),
        );
        self.consumer = Some((name, arn));
    }

    /// Delete the stream consumer when a deletion of the plan is due (`now` from the start).
    pub(super) fn delete_consumer_when_due(&mut self, now: Duration) {
        for i in 0..self.deletions_done.len() {
            let due = self.consumer_plan.deletions[i].is_some_and(|t| t <= now);
            if !due || self.deletions_done[i] {
                continue;
            }
            self.deletions_done[i] = true;
            let name = match &self.consumer {
                Some((name, _)) => name.clone(),
                None => "sim-app".to_string(),
            };
            let deleted = self.stream.deregister_consumer(&name);
            if deleted {
                self.ledger.lock().unwrap().stats.consumer_deletions += 1;
            }
            self.say(
                None,
                format!(
                    "the stream consumer {name} is deleted{}",
                    if deleted { "" } else { ": there was none" }
                ),
            );
        }
    }

    /// End due pauses; notice workers whose task ended. A worker that stopped because its
    /// fan-out consumer is gone is restarted with the same id (as an orchestrator would),
    /// after the operator registered a new consumer if the configured one was deleted.
    pub(super) async fn housekeeping(&mut self) {
        let now = Instant::now();
        let mut restart = Vec::new();
        for i in 0..self.workers.len() {
            if self.workers[i].paused_until.is_some_and(|t| t <= now) {
                self.end_pause(i);
            }
            let w = &mut self.workers[i];
            if w.state != WorkerState::Gone && w.task.is_finished() {
                w.state = WorkerState::Gone;
                let id = w.id.clone();
                let stopping = w.stop_requested.is_some();
                let result = (&mut w.task).await;
                let text = match result {
                    Ok(Ok(())) => "worker stopped".to_string(),
                    Ok(Err(e)) => {
                        let consumer_gone = matches!(
                            e,
                            SchedulerError::FanOutConsumerDeleted { .. }
                                | SchedulerError::FanOutConsumer(_)
                        );
                        if consumer_gone && !stopping {
                            restart.push(id.clone());
                        }
                        format!("worker failed: {e}")
                    }
                    Err(e) => format!("worker task ended: {e}"),
                };
                self.say(Some(&id), text);
            }
        }
        if restart.is_empty() {
            return;
        }
        let configured_gone = self.consumer.as_ref().is_some_and(|(_, arn)| {
            !self
                .stream
                .consumers()
                .iter()
                .any(|c| c.consumer_arn == *arn)
        });
        if configured_gone {
            self.register_configured_consumer();
        }
        for id in restart {
            if self.live().any(|w| w.id == id) || self.live().count() >= MAX_WORKERS {
                continue;
            }
            self.say(
                Some(&id),
                "worker restarts with the same id (its fan-out consumer was gone)".into(),
            );
            self.add_worker(Some(id));
        }
    }

    pub(super) fn produce(&mut self) {
        self.carry += self.rate * TICK.as_secs_f64();
        let n = self.carry.floor();
        self.carry -= n;
        for _ in 0..n as u64 {
            let si = self.some_slot();
            let hash: u128 = self.rng.random();
            let agg = self.sc.aggregates;
            if agg.share > 0.0 && self.aggregate_rng.random_bool(agg.share) {
                // Routed by the first user record; the others have random hash keys, most of
                // them outside the shard (as `aws-kinesis-agg` packs them): all are delivered.
                let n = self
                    .aggregate_rng
                    .random_range(1..=agg.max_user_records.max(1));
                let users: Vec<UserRecordSpec> = (0..n)
                    .map(|i| UserRecordSpec {
                        partition_key: "pk".into(),
                        explicit_hash_key: Some(if i == 0 {
                            hash.to_string()
                        } else {
                            self.aggregate_rng.random::<u128>().to_string()
                        }),
                        data: Vec::new(),
                    })
                    .collect();
                let slot = &self.slots[si];
                let (shard, seq) = slot.stream.put_aggregate(&users);
                self.ledger
                    .lock()
                    .unwrap()
                    .produced_user_records(&slot.key(&shard), &seq, n);
            } else {
                let slot = &self.slots[si];
                let data = self.sc.skew.as_ref().map(|s| s.data(hash));
                let (shard, seq) =
                    slot.stream
                        .put_with_hash(hash, "pk", data.as_deref().unwrap_or_default());
                self.ledger
                    .lock()
                    .unwrap()
                    .produced(&slot.key(&shard), &seq);
            }
        }
    }

    pub(super) fn open_shards(&self, si: usize) -> Vec<kinesis_client::retrieval::Shard> {
        let mut open: Vec<_> = self.slots[si]
            .stream
            .shards()
            .into_iter()
            .filter(|s| !s.is_closed())
            .collect();
        open.sort_by_key(|s| s.hash_key_range.start);
        open
    }

    pub(super) fn split(&mut self) {
        let si = self.some_slot();
        let open: Vec<_> = self
            .open_shards(si)
            .into_iter()
            .filter(|s| s.hash_key_range.end - s.hash_key_range.start >= 2)
            .collect();
        if open.is_empty() || self.open_shards(si).len() >= MAX_OPEN_SHARDS {
            self.say(None, "split: no shard to split".into());
            return;
        }
        let s = &open[self.rng.random_range(0..open.len())];
        let r = s.hash_key_range;
        let at = self.rng.random_range(r.start + 1..=r.end);
        let slot = &self.slots[si];
        let (a, b) = slot.stream.split(&s.shard_id, at).expect("a valid split");
        let now = slot.stream.now();
        let (a, b, parent) = (slot.key(&a), slot.key(&b), slot.key(&s.shard_id));
        let mut l = self.ledger.lock().unwrap();
        l.add_shard(&a, std::slice::from_ref(&parent));
        l.add_shard(&b, std::slice::from_ref(&parent));
        l.close_shard(&parent, now);
        l.stats.splits += 1;
        drop(l);
        self.trace.push(
            crate::trace::Source::World,
            None,
            Some(&parent),
            format!("split into {a} and {b}"),
        );
    }

    pub(super) fn merge(&mut self) {
        let si = self.some_slot();
        let open = self.open_shards(si);
        if open.len() < 2 {
            self.say(None, "merge: fewer than two open shards".into());
            return;
        }
        let i = self.rng.random_range(0..open.len() - 1);
        let (x, y) = (&open[i].shard_id, &open[i + 1].shard_id);
        let (x, y) = if self.rng.random_bool(0.5) {
            (x, y)
        } else {
            (y, x)
        };
        let slot = &self.slots[si];
        let child = slot.stream.merge(x, y).expect("adjacent open shards merge");
        let now = slot.stream.now();
        let (child, x, y) = (slot.key(&child), &slot.key(x), &slot.key(y));
        let mut l = self.ledger.lock().unwrap();
        l.add_shard(&child, &[x.clone(), y.clone()]);
        l.close_shard(x, now);
        l.close_shard(y, now);
        l.stats.merges += 1;
        drop(l);
        self.trace.push(
            crate::trace::Source::World,
            None,
            Some(&child),
            format!("merged {x} and {y} into {child}"),
        );
    }

    /// Retention: drop records that arrived before the oldest record some processor may still
    /// need (see [`Ledger::first_needed`]), and never a closed shard that is not finished. So
    /// nothing is trimmed that a processor could still have to read, and no record is excused
    /// from the checks.
    pub(super) fn trim(&mut self) {
        let si = self.some_slot();
        let table = self.table.snapshot();
        let holders = self.holders();
        let slot = &self.slots[si];
        let mut cutoff: SystemTime = slot.stream.now() - Duration::from_secs(1);
        let ledger = self.ledger.lock().unwrap();
        for shard in slot.stream.shards() {
            let key = slot.key(&shard.shard_id);
            let id = &key;
            let Some(log) = ledger.shards.get(id) else {
                continue;
            };
            if log.finished {
                continue;
            }
            let first = ledger.first_needed(
                id,
                table.get(id).map(|l| &l.checkpoint),
                holders.get(id).map_or(&[], Vec::as_slice),
            );
            if let Some(&(seq, _)) = log.records.get(first) {
                // The first needed record, or, when an earlier trim took it (`first_needed` is
                // conservative: a tenure's checkpoint when its owner last took the lease may
                // be older than the records kept), the first record kept after it: the
                // shard's records from there on are needed all the same.
                let needed = slot
                    .stream
                    .records(&shard.shard_id)
                    .into_iter()
                    .find(|r| r.sequence_number.parse::<u128>().is_ok_and(|s| s >= seq));
                if let Some(t) = needed.and_then(|r| r.approximate_arrival_timestamp) {
                    cutoff = cutoff.min(t);
                }
            }
            if let Some(closed) = log.closed_at {
                cutoff = cutoff.min(closed);
            }
        }
        drop(ledger);
        let stream = slot.stream.clone();
        let before = stream.total_records();
        stream.trim(cutoff);
        let dropped = before - stream.total_records();
        self.ledger.lock().unwrap().stats.trims += 1;
        let age = stream.now().duration_since(cutoff).unwrap_or_default();
        self.say(
            None,
            format!("retention trims records older than {age:?}: {dropped} dropped"),
        );
    }
}
