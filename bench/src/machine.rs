//! What machine the benchmarks ran on, and how busy it was.

use std::process::Command;

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|s| s.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// `load 1.23 / 0.98 / 0.50 (1, 5, 15 min)`.
pub fn load_text() -> String {
    let [a, b, c] = load_average();
    format!("load average {a:.2} / {b:.2} / {c:.2} (1 / 5 / 15 min)")
}

/// This process's nice value (0 unless started with `nice`).
pub fn niceness() -> i32 {
    // SAFETY: getpriority has no memory-safety preconditions.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Logical CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        })
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("({program} not found)"))
}

/// One Markdown list describing the machine.
pub fn description() -> String {
    format!(
        "* CPUs: {} (`nproc`), model: {}\n* memory: {}\n* kernel: {}\n* {}\n* build: `--release` (the workspace's release profile)",
        cpus(),
        cpu_model(),
        mem_total(),
        command_output("uname", &["-sr"]),
        command_output("rustc", &["--version"]),
    )
}
