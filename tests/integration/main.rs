//! Integration tests against real Kinesis and DynamoDB APIs (local emulators started by
//! `testkit`, LocalStack, or the endpoints in `KCL_KINESIS_ENDPOINT` / `KCL_DYNAMODB_ENDPOINT`).
//!
//! One test binary, so the services start once per `cargo test` run.

mod common;
mod consumer;
mod coordinator;
mod examples;
mod fan_out;
mod harness;
mod java_compat;
mod java_pending;
mod kpl;
mod lease_store;
mod multi_stream;
mod single_table;
mod status_page;
mod stream_roundtrip;
mod telemetry;
