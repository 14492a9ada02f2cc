//! The settings of a worker's membership in a KCL 3.x fleet.

use super::ClientVersionConfig;
use std::time::Duration;

/// KCL 3.x fleet settings (see [the module](super)). The defaults suit both a fleet of this
/// library's workers and a mixed one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetConfig {
    /// How the protocol is chosen (properties: `clientVersionConfig`; default
    /// [`ClientVersionConfig::Auto`]).
    pub client_version_config: ClientVersionConfig,
    /// The table of the leader's lock and the migration item in the layout of KCL 3.0–3.4
    /// (properties: `coordinatorStateTableName`; default `<application>-CoordinatorState`).
    pub coordinator_state_table_name: Option<String>,
    /// The table of the workers' metrics rows in that layout (properties:
    /// `workerMetricsTableName`; default `<application>-WorkerMetricStats`).
    pub worker_metrics_table_name: Option<String>,
    /// How often the worker re-reads the fleet's `Migration3.0` item to follow a change of
    /// protocol (default 10 s).
    pub check_interval: Duration,
    /// How often the leader assigns leases (properties: `leaseAssignmentIntervalMillis`;
    /// default `failover_time / 3`; the Java KCL's is `2 × failover_time`).
    pub lease_assignment_interval: Option<Duration>,
    /// How often a worker looks for leases assigned to it (default 1 s; the Java KCL's is
    /// `leaseAssignmentIntervalMillis / 2`).
    pub lease_discovery_interval: Duration,
    /// How often the worker writes its metrics row (properties:
    /// `workerMetricsReporterFreqInMillis`; default 30 s). Leaders treat a worker whose row is
    /// older than twice their own period as gone.
    pub worker_metrics_reporter_interval: Duration,
    /// Whether this worker's leader moves leases by graceful hand-off, and whether, in the
    /// leaderless protocol, this worker's steals for balance are hand-offs (properties:
    /// `isGracefulLeaseHandoffEnabled`; default true).
    pub graceful_lease_handoff_enabled: bool,
    /// How long a processor may take to checkpoint in a hand-off before the lease passes on
    /// anyway (properties: `gracefulLeaseHandoffTimeoutMillis`; default 30 s). A leaderless
    /// worker that started a hand-off to itself takes the lease when the hand-off has lasted
    /// this long plus the failover time (its outgoing owner does not know hand-offs).
    pub graceful_lease_handoff_timeout: Duration,
    /// The `leaseDuration` of this worker's leader lock: followers take the lock over when it
    /// has not been heartbeaten for this long (default `2 × failover_time`; the Java KCL's is
    /// 120 s). The leader heartbeats every `failover_time / 3`.
    pub leader_lock_duration: Option<Duration>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            client_version_config: ClientVersionConfig::Auto,
            coordinator_state_table_name: None,
            worker_metrics_table_name: None,
            check_interval: Duration::from_secs(10),
            lease_assignment_interval: None,
            lease_discovery_interval: Duration::from_secs(1),
            worker_metrics_reporter_interval: Duration::from_secs(30),
            graceful_lease_handoff_enabled: true,
            graceful_lease_handoff_timeout: Duration::from_secs(30),
            leader_lock_duration: None,
        }
    }
}

impl FleetConfig {
    /// With `config` choosing the protocol.
    pub fn with_client_version_config(mut self, config: ClientVersionConfig) -> Self {
        self.client_version_config = config;
        self
    }

    /// The coordinator-state table of the worker of `application`.
    pub fn coordinator_state_table(&self, application: &str) -> String {
        self.coordinator_state_table_name
            .clone()
            .unwrap_or_else(|| format!("{application}-CoordinatorState"))
    }

    /// The worker-metrics table of the worker of `application`.
    pub fn worker_metrics_table(&self, application: &str) -> String {
        self.worker_metrics_table_name
            .clone()
            .unwrap_or_else(|| format!("{application}-WorkerMetricStats"))
    }
}
