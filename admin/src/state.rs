//! What a lease is doing, judged from the table alone (and, when the counter was watched,
//! from whether it moved), and `why`'s sentences.

use crate::position::show_checkpoint;
use kinesis_client::lease::Lease;
use serde::Serialize;
use std::time::Duration;

/// What a lease is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum State {
    /// Checkpoint `SHARD_END`: every record was processed.
    Finished,
    /// Some parent shards' leases exist and have not reached `SHARD_END` (a missing parent
    /// lease counts as finished, as workers count it).
    WaitingOnParents {
        /// The unfinished parents (shard ids).
        parents: Vec<String>,
    },
    /// Nobody holds the lease: a worker takes it at its next lease scan.
    Unowned,
    /// KCL 3.x graceful hand-off: `from` processes until it has checkpointed, then `to` takes it.
    HandingOff {
        /// The outgoing worker (`checkpointOwner`).
        from: String,
        /// The worker taking over (`leaseOwner`).
        to: String,
    },
    /// The counter did not move while it was watched: the owner did not renew it.
    NotRenewed {
        /// The owner.
        owner: String,
        /// How long the counter was watched without changing.
        unchanged_secs: f64,
    },
    /// Owned (and, when watched, renewed): the owner processes it.
    Processing {
        /// The owner.
        owner: String,
    },
}

impl State {
    /// A short name for the table view.
    pub fn short(&self) -> String {
        match self {
            State::Finished => "finished".into(),
            State::WaitingOnParents { parents } => format!("waiting on {}", parents.join(",")),
            State::Unowned => "unowned".into(),
            State::HandingOff { from, to } => format!("handing off {from} -> {to}"),
            State::NotRenewed { unchanged_secs, .. } => {
                format!("not renewed for {unchanged_secs:.0}s")
            }
            State::Processing { .. } => "processing".into(),
        }
    }
}

/// The lease key of `parent` (a bare shard id) of `lease`: in a multi-stream table, the key
/// within the lease's stream.
pub fn parent_key(lease: &Lease, parent: &str) -> String {
    match &lease.multi_stream {
        Some(m) => m.stream.lease_key(parent),
        None => parent.to_string(),
    }
}

/// Classify `lease` among `all` the leases of its table. `unchanged_for` is how long its counter
/// was watched without changing (`None`: not watched, or it changed).
pub fn classify(lease: &Lease, all: &[Lease], unchanged_for: Option<Duration>) -> State {
    if lease.checkpoint.is_shard_end() {
        return State::Finished;
    }
    let parents: Vec<String> = lease
        .parent_shard_ids
        .iter()
        .filter(|p| {
            let key = parent_key(lease, p);
            all.iter()
                .any(|l| l.key == key && !l.checkpoint.is_shard_end())
        })
        .cloned()
        .collect();
    if !parents.is_empty() {
        return State::WaitingOnParents { parents };
    }
    let Some(owner) = lease.owner.clone() else {
        return State::Unowned;
    };
    if let Some(from) = &lease.checkpoint_owner {
        return State::HandingOff {
            from: from.clone(),
            to: owner,
        };
    }
    match unchanged_for {
        Some(d) => State::NotRenewed {
            owner,
            unchanged_secs: d.as_secs_f64(),
        },
        None => State::Processing { owner },
    }
}

/// `why`: the reason in words. `lease` is the shard's lease, if it has one; `all` every lease;
/// `watched` how long the counter was watched (and `unchanged` whether it stayed the same);
/// `in_stream` whether the shard exists in the stream, when the stream was asked.
pub fn why(
    shard: &str,
    lease: Option<&Lease>,
    all: &[Lease],
    watched: Option<Duration>,
    unchanged: bool,
    in_stream: Option<bool>,
) -> String {
    let Some(lease) = lease else {
        return match in_stream {
            Some(false) => format!(
                "{shard} has no lease, and the stream has no such shard: check the shard id and \
                 --stream"
            ),
            _ => format!(
                "{shard} has no lease yet: workers create a shard's lease at their next shard \
                 sync (a child shard's when its parent ends); if none appears, no worker of this \
                 application is running for the stream"
            ),
        };
    };
    let name = lease.shard_id();
    let at = show_checkpoint(&lease.checkpoint);
    let unchanged_for = if unchanged { watched } else { None };
    match classify(lease, all, unchanged_for) {
        State::Finished => {
            let children = if lease.child_shard_ids.is_empty() {
                String::new()
            } else {
                format!("; its children {} carry on", lease.child_shard_ids.join(", "))
            };
            format!(
                "{name} is finished: its checkpoint is SHARD_END, every record was processed{children}"
            )
        }
        State::WaitingOnParents { parents } => {
            let detail: Vec<String> = parents
                .iter()
                .map(|p| {
                    let key = parent_key(lease, p);
                    let parent = all.iter().find(|l| l.key == key);
                    match parent {
                        Some(l) => format!(
                            "{p} (at {}, {})",
                            show_checkpoint(&l.checkpoint),
                            l.owner
                                .as_deref()
                                .map_or("unowned".to_string(), |o| format!("owner {o}"))
                        ),
                        None => p.clone(),
                    }
                })
                .collect();
            format!(
                "{name} waits for its parent shard{} to finish: {}. A child shard is processed only \
                 after all its parents reached SHARD_END",
                if parents.len() == 1 { "" } else { "s" },
                detail.join(", ")
            )
        }
        State::Unowned => format!(
            "{name} has no owner (checkpoint {at}): a worker takes it at its next lease scan (within \
             about a third of the failover time); if it stays unowned, no worker of this \
             application is running"
        ),
        State::HandingOff { from, to } => format!(
            "{name} is being handed off from {from} to {to}: {from} processes it until its processor \
             has checkpointed (checkpoint {at}), then {to} takes over"
        ),
        State::NotRenewed {
            owner,
            unchanged_secs,
        } => format!(
            "owner {owner} has not renewed {name} for {unchanged_secs:.0} s (counter {} unchanged, \
             checkpoint {at}): the worker is dead or stuck; another worker takes the lease once it \
             has not changed for the failover time",
            lease.counter
        ),
        State::Processing { owner } => {
            let renewing = match watched {
                Some(d) => format!(
                    " (its counter moved during the {:.0} s watch)",
                    d.as_secs_f64()
                ),
                None => format!(" (counter {}; --watch SECS checks that it moves)", lease.counter),
            };
            format!("{name} is being processed by {owner} at checkpoint {at}{renewing}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_client::{Checkpoint, StreamIdentifier};

    fn lease(key: &str, owner: Option<&str>, cp: Checkpoint) -> Lease {
        let mut l = Lease::new(key, cp);
        l.owner = owner.map(str::to_string);
        l.counter = 7;
        l
    }

    fn seq(s: &str) -> Checkpoint {
        Checkpoint::sequence(s, 0).unwrap()
    }

    #[test]
    fn classifies_every_state() {
        let parent = lease("shardId-0", Some("w1"), seq("100"));
        let ended = lease("shardId-1", Some("w1"), Checkpoint::ShardEnd);
        let child = lease("shardId-2", Some("w2"), Checkpoint::TrimHorizon)
            .with_parents(["shardId-0", "shardId-1"]);
        let orphan_child =
            lease("shardId-3", None, Checkpoint::TrimHorizon).with_parents(["shardId-9"]);
        let mut handoff = lease("shardId-4", Some("w2"), seq("5"));
        handoff.checkpoint_owner = Some("w1".into());
        let all = vec![
            parent.clone(),
            ended.clone(),
            child.clone(),
            orphan_child.clone(),
            handoff.clone(),
        ];
        assert_eq!(
            classify(&parent, &all, None),
            State::Processing { owner: "w1".into() }
        );
        assert_eq!(classify(&ended, &all, None), State::Finished);
        assert_eq!(
            classify(&child, &all, None),
            State::WaitingOnParents {
                parents: vec!["shardId-0".into()]
            }
        );
        // A missing parent lease counts as finished.
        assert_eq!(classify(&orphan_child, &all, None), State::Unowned);
        assert_eq!(
            classify(&handoff, &all, None),
            State::HandingOff {
                from: "w1".into(),
                to: "w2".into()
            }
        );
        assert_eq!(
            classify(&parent, &all, Some(Duration::from_secs(12))),
            State::NotRenewed {
                owner: "w1".into(),
                unchanged_secs: 12.0
            }
        );
    }

    #[test]
    fn parents_are_looked_up_in_the_same_stream() {
        let s = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
        let other = StreamIdentifier::multi("123456789012", "other", 1_600_000_000).unwrap();
        let child = Lease::for_stream(s.clone(), "shardId-2", Checkpoint::TrimHorizon)
            .with_parents(["shardId-0"]);
        let parent_elsewhere = Lease::for_stream(other, "shardId-0", seq("1"));
        let all = vec![child.clone(), parent_elsewhere];
        assert_eq!(classify(&child, &all, None), State::Unowned);
        let parent_here = Lease::for_stream(s, "shardId-0", seq("1"));
        let all = vec![child.clone(), parent_here];
        assert_eq!(
            classify(&child, &all, None),
            State::WaitingOnParents {
                parents: vec!["shardId-0".into()]
            }
        );
    }

    #[test]
    fn why_says_it_in_words() {
        let p = lease(
            "shardId-0",
            Some("w1"),
            Checkpoint::sequence("100", 3).unwrap(),
        );
        let mut ended = lease("shardId-1", Some("w1"), Checkpoint::ShardEnd);
        ended.child_shard_ids = vec!["shardId-2".into()];
        let child =
            lease("shardId-2", Some("w2"), Checkpoint::TrimHorizon).with_parents(["shardId-0"]);
        let unowned = lease("shardId-5", None, seq("9"));
        let mut handoff = lease("shardId-4", Some("w2"), seq("5"));
        handoff.checkpoint_owner = Some("w1".into());
        let all = vec![
            p.clone(),
            ended.clone(),
            child.clone(),
            unowned.clone(),
            handoff.clone(),
        ];
        let w = Some(Duration::from_secs(5));

        assert_eq!(
            why("shardId-0", Some(&p), &all, w, false, None),
            "shardId-0 is being processed by w1 at checkpoint 100/3 (its counter moved during the 5 s watch)"
        );
        assert_eq!(
            why("shardId-0", Some(&p), &all, None, false, None),
            "shardId-0 is being processed by w1 at checkpoint 100/3 (counter 7; --watch SECS checks that it moves)"
        );
        assert_eq!(
            why("shardId-0", Some(&p), &all, w, true, None),
            "owner w1 has not renewed shardId-0 for 5 s (counter 7 unchanged, checkpoint 100/3): \
             the worker is dead or stuck; another worker takes the lease once it has not changed \
             for the failover time"
        );
        assert_eq!(
            why("shardId-1", Some(&ended), &all, w, true, None),
            "shardId-1 is finished: its checkpoint is SHARD_END, every record was processed; its children shardId-2 carry on"
        );
        assert_eq!(
            why("shardId-2", Some(&child), &all, w, false, None),
            "shardId-2 waits for its parent shard to finish: shardId-0 (at 100/3, owner w1). A \
             child shard is processed only after all its parents reached SHARD_END"
        );
        assert!(why("shardId-5", Some(&unowned), &all, w, true, None)
            .starts_with("shardId-5 has no owner (checkpoint 9)"));
        assert!(why("shardId-4", Some(&handoff), &all, w, false, None)
            .starts_with("shardId-4 is being handed off from w1 to w2"));
        assert!(
            why("shardId-7", None, &all, w, false, None).starts_with("shardId-7 has no lease yet")
        );
        assert!(why("shardId-7", None, &all, w, false, Some(false))
            .contains("the stream has no such shard"));
    }
}
