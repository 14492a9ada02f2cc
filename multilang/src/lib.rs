//! The MultiLangDaemon: run record processors written in any language (amazon-kclpy,
//! aws-kcl for Node, ...) on the Rust KCL, one child process per shard, speaking the Java
//! daemon's JSON-lines protocol over the child's stdin and stdout.
//!
//! ```text
//! .properties ──▶ properties::parse ──▶ settings::from_entries ──▶ DaemonSettings (+ warnings)
//!                                                   │ credentials::build_provider
//!                                                   ▼
//!                        kcl Scheduler ── per shard ──▶ RecordProcessor (in the binary)
//!                                                        │ spawns the child (executableName)
//!                                                        ▼
//!     driver::Driver ── protocol::DaemonMessage ──▶ child stdin
//!                    ◀── protocol::ChildLine ────── child stdout   (checkpoints → CheckpointHandler)
//!     stderr::spawn_stderr_drain ◀───────────────── child stderr   (logged per shard)
//! ```
//!
//! The modules here are library-independent: plain Rust types in, plain Rust types out.
//!
//! * [`properties`]: Java `.properties` syntax, with line numbers.
//! * [`settings`]: the Java KCL keys, typed and validated; unknown keys become warnings.
//! * [`credentials`]: `AwsCredentialsProvider` values → `aws-config` credentials providers.
//! * [`protocol`]: the wire messages (serde, byte-compatible with the Java daemon).
//! * [`driver`]: one call/response conversation with a child, with checkpoints and timeout.
//! * [`stderr`]: draining a child's stderr into the log.
//!
//! Unlike the Java daemon, a misbehaving child (crash, timeout, protocol violation) is an
//! error value for its shard — the daemon restarts that shard's child from its last
//! checkpoint — never an exit of the whole daemon, so one broken shard does not stop the
//! others.

#![warn(missing_docs)]

pub mod child;
pub mod cli;
pub mod credentials;
pub mod daemon;
pub mod driver;
pub mod executable;
pub mod https;
mod lines;
pub mod properties;
pub mod protocol;
pub mod settings;
pub mod stderr;
#[cfg(unix)]
pub mod stdin_thread;
pub mod streams;
