//! **load-balanced**: with skewed traffic and balancing by throughput, the live workers' loads
//! come within the bound the leaderless taker promises, written here from its documented rule
//! (`kinesis_client`'s `coordinator::balance`) rather than borrowed from it.
//!
//! A lease weighs its `throughputKBps` (the mean of the known ones when unknown),
//! but at least a floor, a tenth of that mean and at least 1 KB/s; a worker's load is the sum
//! over the unfinished leases the table names it owner of. The least loaded worker asks the
//! most loaded one, `gap` more loaded, for a lease of weight `w` when that leaves `gap - w`
//! between them of at least a quarter of `w` or of the mean weight, and at least 10 % of the
//! traffic the giver carries on leases above the floor. So once nothing moves, no lease the most
//! loaded worker could give (one not finished, not in a hand-off) leaves that much.

use kinesis_client::lease::Lease;
use std::collections::BTreeMap;

/// Slack on the bound for throughputs that move between the workers' scans and this check:
/// a move is reported missing only when it would leave this many times what the taker needs.
const SLACK: f64 = 1.5;

/// Whether the loads of `workers` by the leases in `table` are within the bound; `Err` says
/// why not (for the report). Every unfinished lease must be owned by one of `workers`.
pub fn load_balanced(table: &[Lease], workers: &[String]) -> Result<(), String> {
    let open: Vec<&Lease> = table
        .iter()
        .filter(|l| !l.checkpoint.is_shard_end())
        .collect();
    if let Some(l) = open
        .iter()
        .find(|l| l.owner.as_ref().is_none_or(|o| !workers.contains(o)))
    {
        return Err(format!(
            "{} is owned by {:?}, not a live worker",
            l.key, l.owner
        ));
    }
    let known: Vec<f64> = open
        .iter()
        .filter_map(|l| l.throughput.map(|t| t.kbps()))
        .collect();
    let mean = if known.is_empty() {
        0.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let floor = (mean * 0.1).max(1.0);
    let traffic_of = |l: &Lease| l.throughput.map_or(mean, |t| t.kbps());
    let weight = |l: &Lease| traffic_of(l).max(floor);
    let mean_weight = open.iter().map(|l| weight(l)).sum::<f64>() / open.len().max(1) as f64;
    let mut load: BTreeMap<&str, f64> = workers.iter().map(|w| (w.as_str(), 0.0)).collect();
    for l in &open {
        if let Some(o) = l.owner.as_deref() {
            *load.entry(o).or_default() += weight(l);
        }
    }
    let by_load = |a: &(&&str, &f64), b: &(&&str, &f64)| a.1.total_cmp(b.1);
    let (Some((most, high)), Some((least, low))) =
        (load.iter().max_by(by_load), load.iter().min_by(by_load))
    else {
        return Ok(());
    };
    let gap = high - low;
    let traffic: f64 = open
        .iter()
        .filter(|l| l.owner.as_deref() == Some(*most))
        .map(|l| traffic_of(l))
        .filter(|t| *t > floor)
        .sum();
    let missed = open
        .iter()
        .filter(|l| l.owner.as_deref() == Some(*most) && !l.is_in_handoff())
        .find(|l| {
            let w = weight(l);
            gap - w >= (0.25 * w.min(mean_weight)).max(0.1 * traffic) * SLACK
        });
    match missed {
        Some(l) => Err(format!(
            "{most} carries {high:.2} and {least} {low:.2} (KB/s, at least {floor:.2} per lease): \
             moving {} ({:.2}) would leave {:.2} between them",
            l.key,
            weight(l),
            gap - weight(l)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_client::lease::Throughput;
    use kinesis_client::Checkpoint;

    fn lease(i: usize, owner: &str, kbps: f64) -> Lease {
        let mut l = Lease::new(format!("shardId-{i:012}"), Checkpoint::TrimHorizon);
        l.owner = Some(owner.into());
        l.throughput = Throughput::from_kbps(kbps);
        l
    }

    #[test]
    fn the_bound_is_the_takers_fixpoint() {
        let w = ["a".to_string(), "b".to_string()];
        // One hot lease and three light ones each: balanced.
        let t: Vec<Lease> = (0..8)
            .map(|i| {
                lease(
                    i,
                    if i % 2 == 0 { "a" } else { "b" },
                    if i < 2 { 100.0 } else { 10.0 },
                )
            })
            .collect();
        assert!(load_balanced(&t, &w).is_ok());
        // Two hot leases on one worker, six light ones on the other: a hot lease should move.
        let mut t: Vec<Lease> = (0..2).map(|i| lease(i, "a", 100.0)).collect();
        t.extend((2..8).map(|i| lease(i, "b", 10.0)));
        assert!(load_balanced(&t, &w).is_err());
        // All on one worker: not.
        for l in &mut t {
            l.owner = Some("a".into());
        }
        assert!(load_balanced(&t, &w).is_err());
        // Equal leases: counts within one.
        let t: Vec<Lease> = (0..5)
            .map(|i| lease(i, if i < 3 { "a" } else { "b" }, 5.0))
            .collect();
        assert!(load_balanced(&t, &w).is_ok());
        let t: Vec<Lease> = (0..5)
            .map(|i| lease(i, if i < 4 { "a" } else { "b" }, 5.0))
            .collect();
        assert!(load_balanced(&t, &w).is_err());
        // A lease of no live worker.
        let t = vec![lease(0, "gone", 1.0)];
        assert!(load_balanced(&t, &w).is_err());
    }
}
