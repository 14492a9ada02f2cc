//! placeholder crate docs (written at the end)
#![warn(missing_docs)]

pub mod aws;
pub mod backoff;
pub mod checkpoint;
pub mod checkpointer;
pub mod coordinator;
pub mod error;
pub mod lease;
pub mod processor;
pub mod record;
pub mod retrieval;
pub use checkpoint::Checkpoint;
pub use checkpointer::{CheckpointError, Checkpointer};
pub use processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor,
    RecordProcessorFactory, RestartShard, Shutdown,
};
pub use record::Record;
pub mod config;
pub use config::{Config, ConfigBuilder, ConfigError, InitialPosition};
pub mod consumer;
pub mod scheduler;
pub mod shard_sync;
pub use scheduler::{Scheduler, SchedulerError, SchedulerHandle};
