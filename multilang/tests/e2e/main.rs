//! End-to-end tests of the `kcl-multilang` binary with the REAL client packages:
//! amazon-kclpy 3.2.0 (its unmodified sample app, and `samples/python/recording_processor.py`)
//! and aws-kcl 2.3.2 (`samples/node/sample_processor.js`), against real local Kinesis and
//! DynamoDB services (`testkit::LocalAws::shared()`).
//!
//! The client packages are installed into the testkit cache on first use
//! (`testkit::clients`); a missing `python3`, `pip`, `node` or `npm` fails the tests with a
//! message saying what to install.
//!
//! One test binary, so the services start once per run. Processors record what they receive
//! in a file (`KCL_SAMPLE_OUTPUT`); assertions read that file, the daemon's log, `/proc` and
//! the lease table.

mod harness;

mod child_failures;
mod fan_out;
mod graceful_shutdown;
mod java_fleet;
mod kclpy_sample;
mod kpl;
mod metrics;
mod multi_stream;
mod node_sample;
mod poison;
mod properties;
mod recording;
mod shard_end;
mod startup;
