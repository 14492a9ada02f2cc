//! The world before the start (see [`Prehistory`]): an older Java KCL application's
//! leftovers in the lease table, over a stream that was resharded since.
//!
//! Before any worker starts, the stream is split and merged `reshards` times, with a few
//! records put in the open shards before each change, so the ancestors hold records. Each
//! ancestor gets the lease a Java KCL older than 2.3 left behind: `SHARD_END` without
//! `childShardIds` (its records count as processed: the old application did it), or, for the
//! unfinished ones, `TRIM_HORIZON` (its records must now be processed, before any child's).
//! The owner is a worker that is gone or nobody; no hash key range (old Java stored none).
//! Then the oldest `aged` ancestors disappear from the stream, as shards aged past retention
//! do, their leases left behind (and their records excused: retention took them, not the
//! library).

use crate::ledger::Ledger;
use crate::scenario::{Prehistory, MAX_OPEN_SHARDS};
use kinesis_client::lease::Lease;
use kinesis_client::testing::{InMemoryLeaseStore, InMemoryStream};
use kinesis_client::Checkpoint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The owner the old application's leases name.
pub const OLD_JAVA_WORKER: &str = "java-kcl-2.2-worker";

/// Build the prehistory of `p` into `stream`, `table` and `ledger`; returns lines for the trace.
pub fn build(
    p: Prehistory,
    seed: u64,
    stream: &InMemoryStream,
    table: &InMemoryLeaseStore,
    ledger: &mut Ledger,
) -> Vec<String> {
    let mut said = Vec::new();
    if p.reshards == 0 {
        return said;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x09E_4157);
    let mut closed: Vec<String> = Vec::new();
    for _ in 0..p.reshards {
        let mut open: Vec<_> = stream
            .shards()
            .into_iter()
            .filter(|s| !s.is_closed())
            .collect();
        open.sort_by_key(|s| s.hash_key_range.start);
        for s in &open {
            for i in 0..rng.random_range(0..=3) {
                let (shard, seq) = stream.put_with_hash(
                    rng.random_range(s.hash_key_range.start..=s.hash_key_range.end),
                    &format!("old-{}-{i}", s.shard_id),
                    b"put before the start",
                );
                ledger.produced(&shard, &seq);
            }
        }
        let splittable: Vec<_> = open
            .iter()
            .filter(|s| s.hash_key_range.end - s.hash_key_range.start >= 2)
            .collect();
        let merge = open.len() >= 2
            && (open.len() >= MAX_OPEN_SHARDS || splittable.is_empty() || rng.random_bool(0.5));
        if merge {
            let i = rng.random_range(0..open.len() - 1);
            let (x, y) = (&open[i].shard_id, &open[i + 1].shard_id);
            let child = stream.merge(x, y).expect("adjacent open shards merge");
            ledger.add_shard(&child, &[x.clone(), y.clone()]);
            closed.extend([x.clone(), y.clone()]);
            said.push(format!("prehistory: merged {x} and {y} into {child}"));
        } else if let Some(s) = splittable.get(rng.random_range(0..splittable.len().max(1))) {
            let r = s.hash_key_range;
            let at = rng.random_range(r.start + 1..=r.end);
            let (a, b) = stream.split(&s.shard_id, at).expect("a valid split");
            ledger.add_shard(&a, std::slice::from_ref(&s.shard_id));
            ledger.add_shard(&b, std::slice::from_ref(&s.shard_id));
            closed.push(s.shard_id.clone());
            said.push(format!("prehistory: split {} into {a} and {b}", s.shard_id));
        }
    }
    let now = stream.now();
    let shards = stream.shards();
    for (i, key) in closed.iter().enumerate() {
        let shard = shards
            .iter()
            .find(|s| &s.shard_id == key)
            .expect("ancestors are listed until aged out");
        let unfinished = rng.random_range(0..1000) < p.unfinished_per_mille;
        let aged = i < p.aged;
        let mut lease = Lease::new(
            key.clone(),
            if unfinished {
                Checkpoint::TrimHorizon
            } else {
                Checkpoint::ShardEnd
            },
        )
        .with_parents(shard.parents());
        if rng.random_bool(0.5) {
            lease.owner = Some(OLD_JAVA_WORKER.to_string());
            lease.counter = rng.random_range(1..=1000);
        }
        ledger.close_shard(key, now);
        ledger
            .created
            .insert(key.clone(), OLD_JAVA_WORKER.to_string());
        let log = ledger
            .shards
            .get_mut(key)
            .expect("ancestors are in the ledger");
        if !unfinished || aged {
            // Processed by the old application, or taken by retention.
            log.processed.iter_mut().for_each(|p| *p = true);
            log.unprocessed = 0;
            log.processed_prefix = log.records.len();
        }
        log.finished = !unfinished;
        if aged {
            assert!(stream.age_out(key), "{key} is a closed shard");
        }
        said.push(format!(
            "prehistory: lease of {key} at {} owned by {:?} (counter {}), no childShardIds{}",
            lease.checkpoint,
            lease.owner,
            lease.counter,
            if aged {
                "; the shard aged past retention"
            } else {
                ""
            }
        ));
        table.with_table(|t| t.insert(key.clone(), lease));
    }
    said
}
