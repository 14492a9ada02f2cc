//! The status page of the Prometheus endpoint: `/status` (one HTML file, no build step: it
//! fetches `/status.json` every few seconds and draws the tables and the lag charts) and
//! `/status.json` (a [`WorkerStatus`] as JSON).

use crate::status::{LeaseState, WorkerStatus};
use serde_json::{json, Value};

/// The page (`/status`).
pub(crate) const PAGE: &str = include_str!("status.html");

/// `status` as the page reads it. Durations are in seconds (floating point).
pub(crate) fn to_json(status: &WorkerStatus) -> Value {
    let health = &status.health;
    json!({
        "worker_id": status.worker_id,
        "health": {
            "live": health.live,
            "ready": health.ready,
            "text": health.to_string().trim_end(),
        },
        "skipped_records": status.skipped_records,
        "leases_scanned_ago": status.leases_scanned_ago.map(|d| d.as_secs_f64()),
        "held": status.held.iter().map(|h| json!({
            "lease_key": h.lease_key,
            "checkpoint": h.checkpoint,
            "millis_behind_latest": h.millis_behind_latest,
            "records_per_second": h.records_per_second,
            "records": h.records,
            "restarts": h.restarts,
            "since_checkpoint": h.since_checkpoint.as_secs_f64(),
            "history": h.history.iter().map(|s| json!({
                "ago": s.ago.as_secs_f64(),
                "millis_behind_latest": s.millis_behind_latest,
                "records": s.records,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "leases": status.leases.iter().map(|l| json!({
            "lease_key": l.lease_key,
            "owner": l.owner,
            "counter": l.counter,
            "checkpoint": l.checkpoint,
            "parents": l.parents,
            "throughput_kbps": l.throughput_kbps,
            "state": state_name(&l.state),
            "state_text": l.state.to_string(),
        })).collect::<Vec<_>>(),
        "errors": status.errors.iter().map(|e| json!({
            "ago": e.ago.as_secs_f64(),
            "lease_key": e.lease_key,
            "message": e.message,
        })).collect::<Vec<_>>(),
    })
}

/// A short, stable name of a lease state (for scripts and the page's colours).
fn state_name(state: &LeaseState) -> &'static str {
    match state {
        LeaseState::Processing => "processing",
        LeaseState::HandingOff { .. } => "handing_off",
        LeaseState::Finished => "finished",
        LeaseState::WaitingOnParents { .. } => "waiting_on_parents",
        LeaseState::Unowned => "unowned",
        LeaseState::Expired { .. } => "expired",
    }
}
