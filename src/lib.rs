//! placeholder crate docs (written at the end)
#![warn(missing_docs)]

pub mod aws;
pub mod backoff;
pub mod checkpoint;
pub mod coordinator;
pub mod error;
pub mod lease;
