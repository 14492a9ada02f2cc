//! Benchmarks of the KCL that write `BENCHMARKS.md` (issue 8).
//!
//! ```text
//! cargo run --release -p kcl-bench -- [--quick] [--only N] [--out FILE]
//! ```
//!
//! | section | module | needs |
//! |---|---|---|
//! | 1. pipeline throughput | [`pipeline`] | nothing (in-memory, paused time) |
//! | 2. footprint | [`footprint`] | nothing (in-memory, a child process per size) |
//! | 3. failover | [`failover`] | simulated part: nothing; second part: the local services |
//! | 4. lease cost | [`lease_cost`] | nothing (in-memory, paused time) |
//! | 5. MultiLangDaemon | [`multilang`] | local services, python3 + amazon-kclpy, `kcl-multilang` |
//! | 6. end to end | [`e2e`] | local services |
//! | 7. scale | [`scale`] | nothing (in-memory, paused time) |
//! | 8. KPL de-aggregation | [`deaggregation`] | nothing (one thread, pure function) |
//! | 9. cost of metrics | [`metrics_cost`] | nothing (in-memory, paused time) |
//! | 10. KCL 3.x mode: failover and balance | [`fleet3x`] | nothing (in-memory, paused time) |
//! | 11. balancing a skewed load without a leader | [`skew`] | nothing (in-memory, paused time) |
//! | 12. throughput on the real path | [`real_path`] | the stand-in Kinesis ([`standin`]) and DynamoDB Local |
//!
//! The local services are [`testkit::LocalAws`] (kinesis-local + DynamoDB Local), started
//! once and shared by sections 3, 5, 6 and 12 ([`services`]).

pub mod affinity;
pub mod cluster;
pub mod counting;
pub mod deaggregation;
pub mod e2e;
pub mod failover;
pub mod fleet3x;
pub mod footprint;
pub mod lease_cost;
pub mod machine;
pub mod measure;
pub mod metrics_cost;
pub mod multilang;
pub mod noop;
pub mod pipeline;
pub mod real_path;
pub mod report;
pub mod scale;
pub mod services;
pub mod skew;
pub mod standin;
pub mod stats;
pub mod synthetic;
pub mod timed;

/// How big the runs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Seconds in total: for the test that checks the output is well-formed.
    Tiny,
    /// `--quick`: a smoke run of every section, a few minutes.
    Quick,
    /// The full run that produces `BENCHMARKS.md`.
    Full,
}
