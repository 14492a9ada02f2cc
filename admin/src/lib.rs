//! `kcl-admin`: inspect and safely change a KCL lease table (the Java KCL 2.x/3.x item format,
//! single- or multi-stream, written by this library's workers or Java's) while workers run.
//!
//! See `docs/ADMIN.md` for every command, example output and the safety rules. In short:
//! every write is conditional on the lease counter the tool just read (a worker's concurrent
//! write wins, and the tool re-reads and retries, at most
//! [`MAX_ATTEMPTS`](commands::MAX_ATTEMPTS) times); a reset also releases the lease (removes
//! `leaseOwner`, as the Java KCL's `evictLease`) and increments the counter, so the owner's
//! next renewal or checkpoint fails, its processor is told the lease was lost, and the worker
//! that takes the lease next starts from the new checkpoint.

pub mod cli;
pub mod commands;
pub mod error;
pub mod position;
pub mod state;
pub mod stream;
pub mod table;

pub use error::AdminError;
