//! The demo's Rust record processor: journals every record and checkpoints after each batch.

use crate::journal::{now_us, Delivery, Journal};
use kinesis_client::async_trait;
use kinesis_client::{Checkpointer, ProcessRecordsInput, ProcessorError, RecordProcessor};
use std::sync::atomic::{AtomicU64, Ordering};

static INSTANCES: AtomicU64 = AtomicU64::new(0);

pub struct DemoProcessor {
    pub worker: String,
    pub shard: String,
    pub instance: String,
    pub journal: Journal,
}

impl DemoProcessor {
    pub fn new(worker: &str, shard: &str, journal: Journal) -> Self {
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        DemoProcessor {
            worker: worker.into(),
            shard: shard.into(),
            instance: format!("{worker}-{n}"),
            journal,
        }
    }
}

#[async_trait]
impl RecordProcessor for DemoProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let at_us = now_us();
        let deliveries = input
            .records
            .iter()
            .map(|r| Delivery {
                at_us,
                worker: self.worker.clone(),
                instance: self.instance.clone(),
                shard: self.shard.clone(),
                seq: r.sequence_number.to_string(),
                payload: String::from_utf8_lossy(&r.data).into_owned(),
            })
            .collect();
        self.journal.record(deliveries);
        checkpointer.checkpoint().await?;
        Ok(())
    }
}
