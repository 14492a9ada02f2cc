//! The steady phase of a run with skewed traffic, balanced by throughput: between the
//! scenario's last change and the drain, faults stop and pauses end while the producers go on,
//! and the live workers must bring their loads within the taker's bound (**load-balanced**,
//! see [`crate::load`]) and keep them there.

use super::{WorkerState, World};
use crate::load::load_balanced;
use kinesis_client::LeaseAssignmentStrategy;
use std::time::Duration;
use tokio::time::Instant;

/// Records per second the producers put during the steady phase, at least (the load must be
/// measurable).
const STEADY_RATE: f64 = 20.0;

impl World {
    /// Whether this run has a steady phase: skewed traffic, leaderless workers balancing by
    /// throughput.
    fn has_steady_phase(&self) -> bool {
        self.sc.skew.is_some()
            && self.sc.strategy == LeaseAssignmentStrategy::Throughput
            && self.sc.fleet.is_none()
    }

    /// Run the steady phase (see the module docs), if this run has one: within 40 failover
    /// times, the loads must be within the bound for 3 failover times in a row.
    pub(super) async fn steady(&mut self) {
        if !self.has_steady_phase() {
            return;
        }
        self.say(
            None,
            "STEADY: faults stop, pauses end, producers go on (skewed traffic)".into(),
        );
        self.calm_down("for the steady phase");
        self.rate = self.rate.max(STEADY_RATE);
        let (settle, limit) = (self.sc.failover * 3, self.sc.failover * 40);
        let started = Instant::now();
        let mut settled_since: Option<Instant> = None;
        let mut next_check = started;
        let mut why = String::new();
        loop {
            self.housekeeping().await;
            self.produce();
            self.sample();
            let now = Instant::now();
            if now >= next_check {
                next_check = now + Duration::from_secs(1);
                match self.load_check() {
                    Ok(()) => {
                        let since = *settled_since.get_or_insert(now);
                        if now - since >= settle {
                            self.say(
                                None,
                                format!(
                                    "loads balanced after {:?} of steady traffic",
                                    since - started
                                ),
                            );
                            return;
                        }
                    }
                    Err(e) => {
                        settled_since = None;
                        why = e;
                    }
                }
                if now - started > limit {
                    let focus = self.running_ids();
                    self.violation(
                        "load-balanced",
                        format!(
                            "after {limit:?} of steady skewed traffic the loads never stayed within the bound for {settle:?}: {why}; table: {}",
                            self.throughput_summary()
                        ),
                        focus,
                    );
                    return;
                }
            }
            if self.tick().await {
                return;
            }
        }
    }

    fn running_ids(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .map(|w| w.id.clone())
            .collect()
    }

    fn load_check(&self) -> Result<(), String> {
        let table: Vec<_> = self.table.snapshot().into_values().collect();
        load_balanced(&table, &self.running_ids())
    }

    /// Each lease's owner and throughput.
    fn throughput_summary(&self) -> String {
        self.table
            .snapshot()
            .values()
            .map(|l| {
                format!(
                    "{} owner={} kbps={:.2}{}",
                    l.key,
                    l.owner.as_deref().unwrap_or("-"),
                    l.throughput.map_or(f64::NAN, |t| t.kbps()),
                    if l.checkpoint.is_shard_end() {
                        " (finished)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
