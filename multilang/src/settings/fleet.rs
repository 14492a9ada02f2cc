//! The KCL 3.x keys, with the Java KCL's names and meaning (see `kinesis_client::fleet`):
//!
//! | key | meaning | unset |
//! |---|---|---|
//! | `clientVersionConfig` | `CLIENT_VERSION_CONFIG_3X`: a new application starts as a KCL 3.x fleet (leader, assignments, hand-offs); `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`: it starts in 2.x-compatible mode; `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X_PHASE1` (3.5): writes nothing. An existing fleet's state always wins. | follow the fleet's state; a new application starts leaderless (Java: as `CLIENT_VERSION_CONFIG_3X`) |
//! | `coordinatorStateTableName` | the table of the leader's lock and the migration item (KCL 3.0–3.4 layout) | `<applicationName>-CoordinatorState` |
//! | `workerMetricsTableName` | the table of the workers' metrics rows (same layout) | `<applicationName>-WorkerMetricStats` |
//! | `leaseAssignmentIntervalMillis` | how often this worker, leading, assigns leases | `failoverTimeMillis / 3` (Java: `2 × failoverTimeMillis`) |
//! | `gracefulLeaseHandoffTimeoutMillis` | how long a child may take to checkpoint when its lease is handed over | 30000 |
//! | `isGracefulLeaseHandoffEnabled` | whether this worker, leading, moves leases by hand-off | true |
//! | `workerMetricsReporterFreqInMillis` | how often this worker writes its metrics row | 30000 |

use super::{boolean, invalid, millis, SettingsError};
use crate::properties::Entry;
use kinesis_client::fleet::{ClientVersionConfig, FleetConfig};
use kinesis_client::validation::{is_valid_table_name, TABLE_NAME_RULE};

/// The KCL 3.x keys as read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// `clientVersionConfig`.
    pub client_version_config: Option<ClientVersionConfig>,
    /// `coordinatorStateTableName`.
    pub coordinator_state_table_name: Option<String>,
    /// `workerMetricsTableName`.
    pub worker_metrics_table_name: Option<String>,
    /// `leaseAssignmentIntervalMillis`.
    pub lease_assignment_interval: Option<std::time::Duration>,
    /// `gracefulLeaseHandoffTimeoutMillis`.
    pub graceful_lease_handoff_timeout: Option<std::time::Duration>,
    /// `isGracefulLeaseHandoffEnabled`.
    pub graceful_lease_handoff_enabled: Option<bool>,
    /// `workerMetricsReporterFreqInMillis`.
    pub worker_metrics_reporter_interval: Option<std::time::Duration>,
}

impl FleetSettings {
    /// Read `e` if it is one of [`KEYS`]; `Ok(false)` if it is not.
    pub(super) fn apply(&mut self, e: &Entry) -> Result<bool, SettingsError> {
        let value = e.value.trim();
        let table = |e: &Entry| {
            if is_valid_table_name(value) {
                Ok(value.to_string())
            } else {
                Err(invalid(e, TABLE_NAME_RULE))
            }
        };
        match e.key.as_str() {
            "clientVersionConfig" => {
                self.client_version_config = Some(ClientVersionConfig::parse(value).ok_or_else(|| {
                    invalid(
                        e,
                        "expected CLIENT_VERSION_CONFIG_3X, CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X or CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X_PHASE1",
                    )
                })?)
            }
            "coordinatorStateTableName" => self.coordinator_state_table_name = Some(table(e)?),
            "workerMetricsTableName" => self.worker_metrics_table_name = Some(table(e)?),
            "leaseAssignmentIntervalMillis" => self.lease_assignment_interval = Some(millis(e, 1)?),
            "gracefulLeaseHandoffTimeoutMillis" => {
                self.graceful_lease_handoff_timeout = Some(millis(e, 1)?)
            }
            "isGracefulLeaseHandoffEnabled" => {
                self.graceful_lease_handoff_enabled = Some(boolean(e)?)
            }
            "workerMetricsReporterFreqInMillis" => {
                self.worker_metrics_reporter_interval = Some(millis(e, 1)?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The library's fleet settings: the library's defaults where a key is unset.
    pub fn to_config(&self) -> FleetConfig {
        let mut c = FleetConfig::default();
        if let Some(v) = self.client_version_config {
            c.client_version_config = v;
        }
        c.coordinator_state_table_name = self.coordinator_state_table_name.clone();
        c.worker_metrics_table_name = self.worker_metrics_table_name.clone();
        c.lease_assignment_interval = self.lease_assignment_interval;
        if let Some(v) = self.graceful_lease_handoff_timeout {
            c.graceful_lease_handoff_timeout = v;
        }
        if let Some(v) = self.graceful_lease_handoff_enabled {
            c.graceful_lease_handoff_enabled = v;
        }
        if let Some(v) = self.worker_metrics_reporter_interval {
            c.worker_metrics_reporter_interval = v;
        }
        c
    }
}
