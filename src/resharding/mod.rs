//! Resharding: everything about the leases of shards that split, merge, end or age out.
//!
//! * [`sync`]: shard discovery, run at start-up and every `shard_sync_interval`: leases for
//!   shards that have none (new shards, and the ancestors an initial position needs).
//! * [`children`]: the consumer that reaches a shard's end creates its children's leases
//!   (at `TRIM_HORIZON`, with their parents recorded) before its processor records
//!   `SHARD_END`; a child's consumer waits until every parent is finished.
//! * `cleanup`: every `lease_cleanup_interval`, the leases this worker holds whose shard
//!   needs no more processing (finished with started children, or trimmed away) are deleted.

pub mod children;
pub(crate) mod cleanup;
pub mod sync;

pub(crate) use children::create_child_leases;
#[cfg(test)]
pub(crate) use children::ChildLeaseError;
#[cfg(any(test, feature = "testing"))]
pub(crate) use sync::sync_shards;
pub use sync::ShardSyncError;

use crate::config::Config;
use crate::coordinator::LeaseCoordinator;
use crate::scheduler::streams::StreamSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use sync::sync_stream_shards_within;
use tokio_util::sync::CancellationToken;

impl ShardSyncError {
    /// True when retrying the sync cannot help (the stream or the table is missing, access is
    /// denied): start-up gives up at once.
    pub fn is_fatal(&self) -> bool {
        match self {
            ShardSyncError::Stream(e) => !e.kind().is_retryable(),
            ShardSyncError::Store(e) => !e.kind().is_retryable(),
        }
    }
}

/// Sync the shards of every consumed stream every `config.shard_sync_interval` until `stop`
/// is cancelled.
pub(crate) async fn periodic_shard_sync(
    streams: StreamSet,
    coordinator: LeaseCoordinator,
    config: Arc<Config>,
    stop: CancellationToken,
) {
    every(config.shard_sync_interval, &stop, || async {
        for stream in streams.all() {
            let started = tokio::time::Instant::now();
            let result = sync_stream_shards_within(
                stream.client.as_ref(),
                stream.lease_stream(),
                coordinator.store().as_ref(),
                stream.initial_position,
                config.failover_time,
            )
            .await;
            crate::telemetry::shard_sync(result.is_ok(), started.elapsed());
            match result {
                Ok(0) => tracing::debug!(stream = %stream.id, "shard sync: no new shards"),
                Ok(n) => {
                    tracing::info!(stream = %stream.id, created = n, "shard sync created leases for new shards")
                }
                Err(e) => tracing::warn!(stream = %stream.id, error = %e, "periodic shard sync failed"),
            }
        }
    })
    .await
}

/// Delete finished and orphaned leases this worker holds (see [`cleanup`]), stream by
/// stream, every `config.lease_cleanup_interval` until `stop` is cancelled.
pub(crate) async fn periodic_cleanup(
    coordinator: LeaseCoordinator,
    streams: StreamSet,
    config: Arc<Config>,
    stop: CancellationToken,
) {
    every(config.lease_cleanup_interval, &stop, || async {
        for stream in streams.all() {
            if let Err(e) =
                cleanup::cleanup_pass(&coordinator, stream.client.as_ref(), &stream.id).await
            {
                tracing::debug!(stream = %stream.id, error = %e, "lease clean-up deferred");
            }
        }
    })
    .await
}

/// Run `pass` every `interval` (after a first wait of `interval`) until `stop` is cancelled.
async fn every<F, Fut>(interval: Duration, stop: &CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        pass().await;
    }
}
