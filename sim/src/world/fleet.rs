//! The world's part in a KCL 3.x fleet ([`Mode::Fleet`](crate::scenario::Mode::Fleet)): the
//! workers' fleet settings, the leader-targeted actions, the `Migration3.0` item written
//! mid-run, outages of the whole fleet store, and what the drain checks of the fleet.
//!
//! The world reads the fleet's items directly from the shared store (`lock_item`,
//! `migration`, `metrics`: no faults, no gate), as an operator would look at the tables.

use super::{WorkerState, World};
use crate::fleet::SimFleetStore;
use crate::scenario::FleetPlan;
use kinesis_client::fleet::{
    ClientVersion, ClientVersionConfig, FleetConfig, FleetStore, WorkerMetricStats,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl World {
    /// The fleet settings of worker `id` (`None`: the library's defaults, as before fleets
    /// were simulated).
    pub(super) fn fleet_config(&self, id: &str) -> Option<FleetConfig> {
        let plan: &FleetPlan = self.sc.fleet.as_ref()?;
        let mut f = FleetConfig::default().with_client_version_config(if plan.is_v3x(id) {
            ClientVersionConfig::V3x
        } else {
            ClientVersionConfig::Auto
        });
        f.check_interval = plan.check_interval;
        f.lease_discovery_interval = plan.discovery_interval;
        f.graceful_lease_handoff_timeout = plan.handoff_timeout;
        f.worker_metrics_reporter_interval = plan.metrics_interval;
        f.leader_lock_duration = plan.lock_duration;
        f.lease_assignment_interval = plan.assignment_interval;
        f.graceful_lease_handoff_enabled = plan.graceful_handoff;
        Some(f)
    }

    /// Worker `id`'s view of the fleet's items (behind its gate and the fleet faults), when
    /// the run has a fleet plan.
    pub(super) fn fleet_store_of(
        &self,
        id: &str,
        gate: &crate::gate::Gate,
    ) -> Option<Arc<dyn FleetStore>> {
        let faults = self.fleet_faults.clone()?;
        Some(Arc::new(SimFleetStore::new(
            self.table.fleet().clone(),
            id,
            gate.clone(),
            faults,
            self.trace.clone(),
        )))
    }

    /// The live worker holding the leader lock, by index, if any.
    pub(super) fn leader_index(&self) -> Option<usize> {
        let owner = self.table.fleet().lock_item()?.owner;
        self.workers
            .iter()
            .position(|w| w.id == owner && w.state != WorkerState::Gone)
    }

    /// A Java 3.x worker joins: the fleet's item now says `CLIENT_VERSION_3X`.
    pub(super) fn fleet_to_3x(&mut self) {
        let fleet = self.table.fleet();
        let before = fleet.migration().map(|m| m.client_version);
        if before.as_ref().is_some_and(ClientVersion::is_3x) {
            self.say(
                None,
                format!("a Java 3.x worker joins: the fleet is already {before:?}"),
            );
            return;
        }
        fleet.set_client_version(ClientVersion::V3x);
        self.ledger.lock().unwrap().stats.migrations += 1;
        self.say(
            None,
            format!("a Java 3.x worker joins: the fleet's Migration3.0 item now says CLIENT_VERSION_3X (was {before:?}); every worker must follow"),
        );
    }

    /// Switch the shared fleet store's `set_failing` as the outages of every worker say.
    pub(super) fn fleet_outages_due(&mut self) {
        if self.fleet_outages.is_empty() {
            return;
        }
        let now = Instant::now();
        let failing = self
            .fleet_outages
            .iter()
            .any(|(from, until)| *from <= now && now < *until);
        if failing != self.fleet_failing {
            self.fleet_failing = failing;
            self.table.fleet().set_failing(failing);
            if failing {
                self.ledger.lock().unwrap().stats.fleet_outages += 1;
            }
            self.say(
                None,
                if failing {
                    "fleet-store outage: every fleet call fails".into()
                } else {
                    "fleet-store outage over".into()
                },
            );
        }
    }

    /// The drain: fleet faults stop.
    pub(super) fn fleet_faults_off(&mut self) {
        if let Some(f) = &self.fleet_faults {
            f.set_enabled(false);
        }
        self.fleet_outages.clear();
        if self.fleet_failing {
            self.fleet_failing = false;
            self.table.fleet().set_failing(false);
            self.say(None, "fleet-store outage over (drain)".into());
        }
    }

    /// Why the fleet has not converged, if it has not: when its item says 3.x, a running
    /// worker leads, every running worker runs the 3.x protocol, and every unfinished lease
    /// belongs to a running worker, no hand-off under way.
    /// A fleet whose item was never written stays leaderless when no worker configured `V3x`
    /// runs (a mixed fleet whose `V3x` workers all died before creating the item: `Auto`
    /// workers create nothing, seeds 5004926 and 5007504): settled as far as the fleet goes.
    pub(super) fn fleet_unsettled(&self) -> Option<String> {
        let plan = self.sc.fleet.as_ref()?;
        let fleet = self.table.fleet();
        let version = fleet.migration().map(|m| m.client_version);
        if !version.as_ref().is_some_and(ClientVersion::is_3x) {
            let v3x_running = self
                .workers
                .iter()
                .any(|w| w.state == WorkerState::Running && plan.is_v3x(&w.id));
            if version.is_none() && !v3x_running {
                return None;
            }
            return Some(format!(
                "the fleet's item says {version:?}, not 3.x (a running worker configured V3x makes it 3.x)"
            ));
        }
        let running: Vec<&str> = self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .map(|w| w.id.as_str())
            .collect();
        let mut why = Vec::new();
        match fleet.lock_item() {
            Some(l) if running.contains(&l.owner.as_str()) => {}
            Some(l) => why.push(format!(
                "the leader lock is held by {}, not a running worker",
                l.owner
            )),
            None => why.push("no worker holds the leader lock".to_string()),
        }
        let leaderless: Vec<&str> = running
            .iter()
            .copied()
            .filter(|w| self.trace.runs_3x_since(w).is_none())
            .collect();
        if !leaderless.is_empty() {
            why.push(format!("{leaderless:?} still run the leaderless protocol"));
        }
        let stray: Vec<String> = self
            .table
            .snapshot()
            .values()
            .filter(|l| !l.checkpoint.is_shard_end())
            .filter(|l| {
                l.is_in_handoff() || !l.owner.as_deref().is_some_and(|o| running.contains(&o))
            })
            .map(|l| {
                format!(
                    "{} (owner {:?}{})",
                    l.key,
                    l.owner,
                    l.checkpoint_owner
                        .as_ref()
                        .map_or(String::new(), |c| format!(", handing off from {c}"))
                )
            })
            .collect();
        if !stray.is_empty() {
            why.push(format!(
                "leases not held by a running worker: {}",
                stray.join(", ")
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// A short account of the fleet's items, for reports.
    pub(super) fn fleet_summary(&self) -> String {
        let fleet = self.table.fleet();
        // Ages, not epoch seconds: the epoch depends on the real clock, a run does not.
        let now_s = WorkerMetricStats::throughput_only("clock").last_update_s;
        let rows: Vec<String> = fleet
            .metrics()
            .values()
            .map(|r| {
                format!(
                    "{} {}s old",
                    r.worker_id,
                    now_s.saturating_sub(r.last_update_s)
                )
            })
            .collect();
        format!(
            "item {:?}, lock {:?}, metrics rows {:?}, 3.x since: {:?}",
            fleet.migration().map(|m| m.client_version),
            fleet.lock_item().map(|l| l.owner),
            rows,
            self.workers
                .iter()
                .filter(|w| w.state != WorkerState::Gone)
                .map(|w| (w.id.clone(), self.trace.runs_3x_since(&w.id)))
                .collect::<Vec<(String, Option<Duration>)>>()
        )
    }
}
