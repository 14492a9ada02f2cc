//! A gate that stalls every I/O call of one worker: the "paused" (stalled) worker.
//!
//! A worker's lease store and stream wrappers pass the gate before each call and again before
//! returning the response. While the gate is closed, calls hang; the worker's timers keep
//! running (as in a process whose network or event loop stalls, e.g. a long GC pause or a
//! partition). Opening the gate releases every waiting call at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Open or closed; clones share the state.
///
/// Built on [`Notify`], which wakes its waiters in a fixed order: `tokio::sync::watch` would
/// not do, as it spreads waiters over randomly chosen wake-up lists (so that several calls
/// released at once would resume in a different order in every process).
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// An open gate.
    pub fn new() -> Self {
        Gate {
            inner: Arc::new((AtomicBool::new(true), Notify::new())),
        }
    }

    /// Stall every call from now on.
    pub fn close(&self) {
        self.inner.0.store(false, Ordering::SeqCst);
    }

    /// Let every waiting and future call through.
    pub fn open(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    /// True when calls go through.
    pub fn is_open(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Wait until the gate is open.
    pub async fn pass(&self) {
        loop {
            let notified = self.inner.1.notified();
            tokio::pin!(notified);
            // Registered before the check, so an `open` in between is not missed.
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}
