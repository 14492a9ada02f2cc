//! The shard consumer's states (those of the Java KCL's `ConsumerStates`) and their pure
//! transition function.
//!
//! ```text
//! WaitingOnParents ──▶ Initializing ──▶ Processing ──(shard end)──▶ ShuttingDown(ShardEnd)
//!        │                  │               │                              │
//!        └── shutdown ──────┴──▶ Done       └── lease lost / requested ──▶ ShuttingDown(reason) ──▶ Done(reason)
//! ```
//!
//! A failed task leaves the state unchanged (the task is retried after a backoff), except that
//! a pending shutdown applies whatever the outcome (a stopping worker also stops retrying a
//! shard end the processor did not checkpoint: the next owner reaches it again): a processor that keeps failing must not
//! keep a lost lease or a shutting-down worker waiting. A processor that was never initialised
//! gets no shutdown call; one whose `initialize` succeeded gets exactly one (a shutdown
//! signalled while `initialize` ran is delivered after it). Shutdown reasons only ever escalate
//! while the shutdown task has not succeeded:
//! `Requested < ShardEnd < LeaseLost` (without the lease, `SHARD_END` cannot be recorded).

/// Why a consumer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShutdownReason {
    /// Graceful shutdown of the worker.
    Requested,
    /// The shard was fully processed.
    ShardEnd,
    /// The lease is gone.
    LeaseLost,
}

/// Where a shard consumer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardState {
    /// Waiting until every parent shard's lease is at `SHARD_END` (or gone).
    WaitingOnParents,
    /// Calling the processor's `initialize`.
    Initializing,
    /// Delivering batches.
    Processing,
    /// Calling the processor's `shutdown` (and, at shard end, creating the child leases).
    ShuttingDown(ShutdownReason),
    /// Finished.
    Done(ShutdownReason),
}

/// How a state's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskOutcome {
    /// The task did its work.
    Succeeded,
    /// The task failed (or is blocked); it runs again after a backoff.
    Failed,
    /// The last batch of the shard was processed.
    ShardEndReached,
}

/// The state a consumer starts in, given the lease's checkpoint.
pub fn initial_state(lease_at_shard_end: bool) -> ShardState {
    if lease_at_shard_end {
        // Finished earlier (children were created before SHARD_END was recorded): nothing to do.
        ShardState::Done(ShutdownReason::ShardEnd)
    } else {
        ShardState::WaitingOnParents
    }
}

/// The next state after `outcome` in `state`, with `pending` the strongest shutdown reason
/// signalled so far (lease lost, or graceful shutdown requested).
pub fn next_state(
    state: ShardState,
    outcome: TaskOutcome,
    pending: Option<ShutdownReason>,
) -> ShardState {
    use ShardState::*;
    match state {
        Done(r) => Done(r),
        // `initialize` succeeded: the processor must hear `shutdown`, whatever is pending.
        Initializing if outcome == TaskOutcome::Succeeded => match pending {
            Some(reason) => ShuttingDown(reason),
            None => Processing,
        },
        WaitingOnParents | Initializing if pending.is_some() => Done(pending.expect("checked")),
        WaitingOnParents => match outcome {
            TaskOutcome::Succeeded => Initializing,
            _ => WaitingOnParents,
        },
        Initializing => Initializing,
        Processing => {
            let from_outcome =
                (outcome == TaskOutcome::ShardEndReached).then_some(ShutdownReason::ShardEnd);
            match from_outcome.max(pending) {
                Some(reason) => ShuttingDown(reason),
                None => Processing,
            }
        }
        // The processor was told (`shutdown` returned): it is never told a second time.
        ShuttingDown(current) if outcome == TaskOutcome::Succeeded => Done(current),
        ShuttingDown(current) => match pending {
            Some(p) if p > current => ShuttingDown(p),
            // A failed shard end is retried, unless the worker is stopping: the next owner of
            // the lease reaches the shard end again.
            Some(p) if outcome == TaskOutcome::Failed => Done(p),
            _ => ShuttingDown(current),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::ShardState::*;
    use super::ShutdownReason::*;
    use super::TaskOutcome::*;
    use super::*;

    #[test]
    fn happy_path() {
        let mut s = initial_state(false);
        assert_eq!(s, WaitingOnParents);
        for (outcome, expected) in [
            (Failed, WaitingOnParents),
            (Succeeded, Initializing),
            (Failed, Initializing),
            (Succeeded, Processing),
            (Succeeded, Processing),
            (Failed, Processing),
            (ShardEndReached, ShuttingDown(ShardEnd)),
            (Failed, ShuttingDown(ShardEnd)),
            (Succeeded, Done(ShardEnd)),
            (Succeeded, Done(ShardEnd)),
        ] {
            s = next_state(s, outcome, None);
            assert_eq!(s, expected, "after {outcome:?}");
        }
    }

    #[test]
    fn a_finished_lease_goes_straight_to_done() {
        assert_eq!(initial_state(true), Done(ShardEnd));
    }

    #[test]
    fn shutdown_before_initialisation_skips_the_processor() {
        assert_eq!(
            next_state(WaitingOnParents, Failed, Some(LeaseLost)),
            Done(LeaseLost)
        );
        assert_eq!(
            next_state(Initializing, Failed, Some(Requested)),
            Done(Requested)
        );
    }

    #[test]
    fn an_initialized_processor_always_hears_shutdown() {
        assert_eq!(
            next_state(Initializing, Succeeded, Some(Requested)),
            ShuttingDown(Requested)
        );
        assert_eq!(
            next_state(Initializing, Succeeded, Some(LeaseLost)),
            ShuttingDown(LeaseLost)
        );
        // Once told (the shutdown task succeeded), never told again.
        assert_eq!(
            next_state(ShuttingDown(Requested), Succeeded, Some(LeaseLost)),
            Done(Requested)
        );
    }

    #[test]
    fn pending_shutdown_applies_even_after_a_failed_batch() {
        assert_eq!(
            next_state(Processing, Failed, Some(LeaseLost)),
            ShuttingDown(LeaseLost)
        );
        assert_eq!(
            next_state(Processing, Succeeded, Some(Requested)),
            ShuttingDown(Requested)
        );
    }

    #[test]
    fn reasons_only_escalate() {
        assert_eq!(
            next_state(Processing, ShardEndReached, Some(Requested)),
            ShuttingDown(ShardEnd)
        );
        assert_eq!(
            next_state(Processing, ShardEndReached, Some(LeaseLost)),
            ShuttingDown(LeaseLost)
        );
        assert_eq!(
            next_state(ShuttingDown(ShardEnd), Failed, Some(LeaseLost)),
            ShuttingDown(LeaseLost)
        );
        assert_eq!(
            next_state(ShuttingDown(ShardEnd), Succeeded, Some(Requested)),
            Done(ShardEnd)
        );
        assert_eq!(
            next_state(ShuttingDown(LeaseLost), Succeeded, Some(LeaseLost)),
            Done(LeaseLost)
        );
    }
}
