//! The verdict, checked from what the processors saw.

use crate::journal::Delivery;
use kinesis_client::retrieval::Shard;
use std::collections::{BTreeMap, BTreeSet};

pub struct Verdict {
    pub lines: Vec<String>,
    pub passed: bool,
}

fn seq_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

/// `produced`: payload → shard it went to.
pub fn judge(
    produced: &BTreeMap<String, String>,
    deliveries: &[Delivery],
    shards: &[Shard],
) -> Verdict {
    let mut lines = Vec::new();
    let mut passed = true;
    let mut check = |ok: bool, text: String| {
        passed &= ok;
        lines.push(format!("{} {text}", if ok { "PASS" } else { "FAIL" }));
    };

    let processed: BTreeSet<&str> = deliveries.iter().map(|d| d.payload.as_str()).collect();
    let missing: Vec<&String> = produced
        .keys()
        .filter(|p| !processed.contains(p.as_str()))
        .collect();
    check(
        missing.is_empty(),
        format!(
            "records produced {} / processed {} (missing {}{})",
            produced.len(),
            processed.len(),
            missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", e.g. {:?}", &missing[..missing.len().min(3)])
            }
        ),
    );

    // Duplicates are allowed only in shards whose lease changed hands (a failover or a rebalance).
    let mut instances_per_shard: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for d in deliveries {
        instances_per_shard
            .entry(&d.shard)
            .or_default()
            .insert(&d.instance);
        *seen.entry(&d.payload).or_default() += 1;
    }
    let shard_of: BTreeMap<&str, &str> = deliveries
        .iter()
        .map(|d| (d.payload.as_str(), d.shard.as_str()))
        .collect();
    let dups: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| *p)
        .collect();
    let unexplained: Vec<&str> = dups
        .iter()
        .copied()
        .filter(|p| instances_per_shard[shard_of[p]].len() < 2)
        .collect();
    let moved = instances_per_shard.values().filter(|i| i.len() > 1).count();
    check(
        unexplained.is_empty(),
        format!(
            "duplicates {} (all in the {moved} shards whose lease changed hands: {})",
            dups.len(),
            if unexplained.is_empty() { "yes" } else { "NO" }
        ),
    );

    // Per shard, each processor instance saw strictly increasing sequence numbers.
    let mut by_instance: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for d in deliveries {
        by_instance
            .entry((&d.shard, &d.instance))
            .or_default()
            .push(&d.seq);
    }
    let out_of_order: Vec<String> = by_instance
        .iter()
        .filter(|(_, seqs)| seqs.windows(2).any(|w| seq_key(w[0]) >= seq_key(w[1])))
        .map(|((s, i), _)| format!("{s}@{i}"))
        .collect();
    check(
        out_of_order.is_empty(),
        format!(
            "per-shard order held ({} processor instances{})",
            by_instance.len(),
            if out_of_order.is_empty() {
                String::new()
            } else {
                format!("; out of order: {out_of_order:?}")
            }
        ),
    );

    // Parents before children.
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for d in deliveries {
        let f = first.entry(&d.shard).or_insert(u64::MAX);
        *f = (*f).min(d.at_us);
        let l = last.entry(&d.shard).or_insert(0);
        *l = (*l).max(d.at_us);
    }
    let mut pairs = 0;
    let mut violations = Vec::new();
    for child in shards.iter().filter(|s| !s.parents().is_empty()) {
        let Some(child_first) = first.get(child.shard_id.as_str()) else {
            continue;
        };
        for parent in child.parents() {
            pairs += 1;
            if let Some(parent_last) = last.get(parent.as_str()) {
                if parent_last >= child_first {
                    violations.push(format!("{} before {parent} finished", child.shard_id));
                }
            }
        }
    }
    check(
        violations.is_empty(),
        format!(
            "parents before children ({pairs} parent/child pairs{})",
            if violations.is_empty() {
                String::new()
            } else {
                format!("; violations: {violations:?}")
            }
        ),
    );
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for d in deliveries {
        *per_worker.entry(&d.worker).or_default() += 1;
    }
    lines.push(format!(
        "info processed per worker: {}",
        per_worker
            .iter()
            .map(|(w, n)| format!("{w} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Verdict { lines, passed }
}
