//! Membership of a Java KCL 3.x fleet: the worker follows the protocol the lease table says
//! the fleet runs, so that Java and Rust workers of one application form one fleet.
//!
//! # The two protocols
//!
//! * **Leaderless** (this library's own, and the Java KCL 2.x's): every worker scans the lease
//!   table, takes expired and unowned leases and steals for balance
//!   (this library's own protocol). A Java 3.x fleet in
//!   2.x-compatible mode (`CLIENT_VERSION_UPGRADE_FROM_2X`, `CLIENT_VERSION_2X`) runs it too.
//! * **KCL 3.x** (`CLIENT_VERSION_3X`, `CLIENT_VERSION_3X_WITH_ROLLBACK`): one worker, the
//!   leader, holds a lock item and assigns leases by writing their `leaseOwner`; workers never
//!   take or steal, they find the leases assigned to them (a query of the lease table's
//!   `LeaseOwnerToLeaseKeyIndex`) and renew them; every worker writes a metrics row every
//!   30 s, and only workers with a fresh row are given leases. A planned move is a graceful
//!   hand-off: the leader names the new owner and keeps the old one as `checkpointOwner`; the
//!   old owner's next renewal fails on that, its processor is asked to shut down and
//!   checkpoints, and then the old owner passes the lease on. No lease has two owners meanwhile.
//!
//! Which one runs is the fleet's `Migration3.0` item (its `cv`): see [`ClientVersion`]. With
//! [`ClientVersionConfig::Auto`] (the default) the worker follows it, switching while it runs
//! when a Java 3.x worker joins and creates it; with [`ClientVersionConfig::V3x`] (the Java
//! KCL's default) it also creates it, so that a new application starts in 3.x mode.
//!
//! # What this library does differently from the Java KCL 3.x
//!
//! * Its leader scans every `failover_time / 3` (Java: every `2 × failover_time`) and notices
//!   an expired lease `failover_time` after its counter last changed on its clock; a worker
//!   looks for assigned leases every second (Java: every 10 s). Failover in a fleet led by this
//!   library is about as fast as in the leaderless protocol.
//! * Its lock's `leaseDuration` is `2 × failover_time` with a heartbeat every
//!   `failover_time / 3` (Java: 120 s and 30 s), so followers, Java ones included (they honour
//!   the duration in the item), take over from a dead leader within seconds instead of minutes.
//! * Its leader balances by lease count and throughput (the Java KCL's `LEASE_COUNT_BASED`
//!   strategy, by the `throughputKBps` of each lease within a count); it does not read CPU
//!   metrics. Its metrics rows carry no metric (as a Java worker outside EC2 writes them), so
//!   a Java leader balances them by throughput.
//! * It never flips a 2.x-compatible fleet to 3.x (Java's leader does, once every lease owner
//!   has written fresh metrics for ten minutes), and never moves items between the legacy
//!   tables and the lease table (KCL 3.5's table migration).

mod assignment;
mod config;
mod dynamodb;
mod leader;
mod runner;
mod store;

pub use config::FleetConfig;
pub use dynamodb::{DynamoDbFleetStore, LEADER_KEY, MIGRATION_KEY, TABLE_MIGRATION_KEY};
pub use runner::FleetError;
pub use store::{FleetStore, FleetStoreError, LockItem, MigrationState, WorkerMetricStats};

pub(crate) use runner::{Fleet, FleetSettings};

use std::fmt;

/// A fleet's client version: the `cv` of its `Migration3.0` item (the Java KCL's
/// `ClientVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientVersion {
    /// `CLIENT_VERSION_UPGRADE_FROM_2X`: a 3.x fleet in 2.x-compatible mode, waiting to flip.
    UpgradeFrom2x,
    /// `CLIENT_VERSION_2X`: rolled back to the 2.x protocol.
    V2x,
    /// `CLIENT_VERSION_3X_WITH_ROLLBACK`: 3.x protocol, rollback still possible.
    V3xWithRollback,
    /// `CLIENT_VERSION_3X`: 3.x protocol.
    V3x,
    /// A value this library does not know (it keeps the leaderless protocol).
    Other(String),
}

impl ClientVersion {
    /// Read a `cv` value.
    pub fn parse(s: &str) -> Self {
        match s {
            "CLIENT_VERSION_UPGRADE_FROM_2X" => ClientVersion::UpgradeFrom2x,
            "CLIENT_VERSION_2X" => ClientVersion::V2x,
            "CLIENT_VERSION_3X_WITH_ROLLBACK" => ClientVersion::V3xWithRollback,
            "CLIENT_VERSION_3X" => ClientVersion::V3x,
            other => ClientVersion::Other(other.to_string()),
        }
    }

    /// The stored value.
    pub fn as_str(&self) -> &str {
        match self {
            ClientVersion::UpgradeFrom2x => "CLIENT_VERSION_UPGRADE_FROM_2X",
            ClientVersion::V2x => "CLIENT_VERSION_2X",
            ClientVersion::V3xWithRollback => "CLIENT_VERSION_3X_WITH_ROLLBACK",
            ClientVersion::V3x => "CLIENT_VERSION_3X",
            ClientVersion::Other(s) => s,
        }
    }

    /// Whether the fleet runs the KCL 3.x protocol (leader, assignments, hand-offs).
    pub fn is_3x(&self) -> bool {
        matches!(self, ClientVersion::V3x | ClientVersion::V3xWithRollback)
    }

    /// Whether the Java workers of the fleet write worker metrics (every mode but a rolled-back
    /// one).
    pub fn reports_metrics(&self) -> bool {
        matches!(
            self,
            ClientVersion::UpgradeFrom2x | ClientVersion::V3xWithRollback | ClientVersion::V3x
        )
    }
}

impl fmt::Display for ClientVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the worker chooses its protocol (the Java KCL's `clientVersionConfig`, plus
/// [`Auto`](Self::Auto)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientVersionConfig {
    /// Follow the fleet's `Migration3.0` item, and run the leaderless protocol while there is
    /// none (creating nothing). The worker checks the item every
    /// [`FleetConfig::check_interval`] and joins a 3.x fleet as
    /// soon as one exists (a Java 3.x worker joined). The default.
    #[default]
    Auto,
    /// `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`: as `Auto`, and when the item is missing,
    /// create it with `CLIENT_VERSION_UPGRADE_FROM_2X` (the leaderless protocol, with worker
    /// metrics so that Java workers of the fleet can flip it to 3.x).
    CompatibleWith2x,
    /// `CLIENT_VERSION_CONFIG_3X`: as `Auto`, and when the item is missing, create it with
    /// `CLIENT_VERSION_3X`: the fleet runs the 3.x protocol. A fleet in
    /// `CLIENT_VERSION_3X_WITH_ROLLBACK` is moved to `CLIENT_VERSION_3X`, as the Java KCL does.
    V3x,
}

impl ClientVersionConfig {
    /// Read a Java `clientVersionConfig` value (case-insensitive, as the Java MultiLangDaemon
    /// reads it): `CLIENT_VERSION_CONFIG_3X`, `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`, or
    /// `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X_PHASE1` (KCL 3.5, read as the former), plus
    /// this library's `AUTO`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CLIENT_VERSION_CONFIG_3X" => Some(ClientVersionConfig::V3x),
            "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X" => {
                Some(ClientVersionConfig::CompatibleWith2x)
            }
            // KCL 3.5's first phase of a 2.x upgrade: the 2.x protocol, writing nothing.
            "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X_PHASE1" | "AUTO" => {
                Some(ClientVersionConfig::Auto)
            }
            _ => None,
        }
    }

    /// The client version this configuration writes into a fleet that has none, if any.
    pub(crate) fn creates(self) -> Option<ClientVersion> {
        match self {
            ClientVersionConfig::Auto => None,
            ClientVersionConfig::CompatibleWith2x => Some(ClientVersion::UpgradeFrom2x),
            ClientVersionConfig::V3x => Some(ClientVersion::V3x),
        }
    }
}
