//! The live view: redrawn in place on a terminal, plain periodic lines otherwise (CI).

use kinesis_client::lease::Lease;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

pub struct Frame<'a> {
    pub phase: &'a str,
    pub elapsed: Duration,
    pub duration: Duration,
    pub produced: usize,
    pub processed: usize,
    pub leases: &'a [Lease],
    pub counts: &'a BTreeMap<String, usize>,
    pub lag: &'a BTreeMap<String, i64>,
    pub workers: &'a [(&'a str, &'a str)],
    pub events: &'a [String],
}

fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn short(cp: &kinesis_client::Checkpoint) -> String {
    match cp {
        kinesis_client::Checkpoint::Sequence(esn) => {
            let s = esn.sequence_number();
            format!("…{}", &s[s.len().saturating_sub(8)..])
        }
        other => other.to_string(),
    }
}

/// The full-screen frame.
pub fn render(f: &Frame) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kcl demo — 3 workers of one application on a local Kinesis + DynamoDB   [{}]",
        f.phase
    );
    let secs = f.elapsed.as_secs().min(f.duration.as_secs());
    let _ = writeln!(
        out,
        "time     {} {secs:>3}s / {}s",
        bar(secs as usize, f.duration.as_secs() as usize, 30),
        f.duration.as_secs()
    );
    let _ = writeln!(
        out,
        "records  {} {} processed / {} produced\n",
        bar(f.processed, f.produced, 30),
        f.processed,
        f.produced
    );
    let _ = writeln!(out, "{:<8} {:<8} {:>6}", "worker", "state", "leases");
    for (w, state) in f.workers {
        let n = f
            .leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(*w))
            .count();
        let _ = writeln!(out, "{w:<8} {state:<8} {n:>6}");
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:<8} {:>9} {:>9}  {:<14} parents",
        "shard", "owner", "records", "lag ms*", "checkpoint"
    );
    for l in f.leases {
        let _ = writeln!(
            out,
            "{:<22} {:<8} {:>9} {:>9}  {:<14} {}",
            l.key,
            l.owner.as_deref().unwrap_or("-"),
            f.counts.get(&l.key).copied().unwrap_or(0),
            f.lag.get(&l.key).map_or("-".to_string(), |v| v.to_string()),
            short(&l.checkpoint),
            l.parent_shard_ids.join(",")
        );
    }
    let _ = writeln!(
        out,
        "* lag: kcl_behind_latest_seconds (Java: MillisBehindLatest) from the owner's metrics (Prometheus endpoints printed at start), in ms"
    );
    let _ = writeln!(out, "\nevents:");
    for e in f.events.iter().rev().take(8).rev() {
        let _ = writeln!(out, "  {e}");
    }
    out
}

/// One plain line (non-terminal output).
pub fn line(f: &Frame) -> String {
    let mut owners: BTreeMap<&str, usize> = BTreeMap::new();
    for l in f.leases {
        *owners.entry(l.owner.as_deref().unwrap_or("-")).or_default() += 1;
    }
    format!(
        "[{:>3}s {}] produced {} processed {} | leases {} | lag ms (kcl_behind_latest_seconds) {}",
        f.elapsed.as_secs(),
        f.phase,
        f.produced,
        f.processed,
        owners
            .iter()
            .map(|(w, n)| format!("{w}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        f.lag
            .iter()
            .map(|(shard, ms)| format!("{}={ms}", shard.trim_start_matches("shardId-0000000")))
            .collect::<Vec<_>>()
            .join(" ")
    )
}
