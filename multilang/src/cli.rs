//! The command line of the `kcl-multilang` binary: arguments, logging, signals, start-up and
//! exit codes. [`main`] is the whole binary; other programs (the demo) can run the daemon
//! in-process-image by calling it with their own arguments.

use crate::{daemon, settings};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;

const USAGE: &str = "\
kcl-multilang: run KCL record processors written in any language (amazon-kclpy, aws-kcl, ...)

USAGE:
    kcl-multilang --properties-file FILE [--log-level LEVEL]
    kcl-multilang -p FILE
    kcl-multilang FILE

OPTIONS:
    -p, --properties-file FILE   the application's .properties file (Java KCL key names)
    -l, --log-level LEVEL        error, warn, info (default), debug or trace; RUST_LOG overrides
        --log-configuration F    accepted for compatibility with the Java daemon; ignored
    -h, --help                   this text

The daemon starts `executableName` once per shard it leases and talks to it over stdin/stdout.
SIGTERM or Ctrl-C: graceful shutdown (children get shutdownRequested and may checkpoint, then
the leases are released); during start-up it stops at once; a second signal exits at once.

EXIT CODES:
    0    stopped by a signal (after a graceful shutdown, or during start-up)
    1    could not start (the lease table or the stream cannot be used)
    2    bad arguments or properties (the message names the key and the line)
    130  a second signal: stopped at once, child processes killed";

/// The longest the daemon waits at exit for its last metrics to reach CloudWatch.
const METRICS_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

struct Args {
    properties: PathBuf,
    log_level: String,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut properties = None;
    let mut log_level = "info".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "-p" | "--properties-file" => properties = Some(PathBuf::from(value(a)?)),
            "-l" | "--log-level" => log_level = value(a)?,
            "--log-configuration" => {
                value(a)?;
            }
            s if s.starts_with("--properties-file=") => {
                properties = Some(PathBuf::from(&s["--properties-file=".len()..]))
            }
            s if s.starts_with("--log-level=") => log_level = s["--log-level=".len()..].to_string(),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if properties.is_none() => properties = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    let properties = properties.ok_or("no properties file given")?;
    Ok(Some(Args {
        properties,
        log_level,
    }))
}

/// Runs the daemon with `args` (without the program name) and returns its exit code:
///
/// | code | meaning |
/// |---|---|
/// | 0 | stopped by SIGTERM/SIGINT after a graceful shutdown, or during start-up |
/// | 1 | could not start (lease table or stream unusable) |
/// | 2 | bad arguments or properties (the message names the key and line) |
/// | 130 | a second signal: stopped at once, child processes killed |
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kcl-multilang: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    // Colours only on a terminal: a log file or journald must not get ANSI escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(args));
    // Drops every remaining task, which kills child processes still running (kill_on_drop).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

/// Counts SIGTERM/SIGINT from the first instant of the daemon's life, so that no stage
/// (reading the properties, building clients, creating the lease table, the first shard sync)
/// can miss one.
struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        let (tx, count) = watch::channel(0u32);
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                #[cfg(unix)]
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Signals { count })
    }

    /// Completes once `n` signals have arrived in all.
    fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.count.clone();
        async move {
            let _ = rx.wait_for(|c| *c >= n).await;
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kcl-multilang: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let bytes = match std::fs::read(&args.properties) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "kcl-multilang: cannot read {}: {e}",
                args.properties.display()
            );
            return ExitCode::from(2);
        }
    };
    let parsed = match settings::from_properties_bytes(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kcl-multilang: {}: {e}", args.properties.display());
            return ExitCode::from(2);
        }
    };
    for w in &parsed.warnings {
        tracing::warn!("{w}");
    }
    for i in &parsed.info {
        tracing::info!("{i}");
    }
    if !parsed.ignored.is_empty() {
        tracing::info!(keys = ?parsed.ignored, "accepted but not used by this daemon (metrics, KCL 3.x tuning, ...)");
    }
    let s = parsed.settings;
    if let Err(e) = s.check_executable() {
        eprintln!("kcl-multilang: {}: {e}", args.properties.display());
        return ExitCode::from(2);
    }
    let config = match daemon::kcl_config(&s) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kcl-multilang: {}: {e}", args.properties.display());
            return ExitCode::from(2);
        }
    };
    let streams: Vec<&str> = if config.is_multi_stream() {
        s.streams.iter().map(|s| s.name.as_str()).collect()
    } else {
        vec![config.stream().name()]
    };
    tracing::info!(application = %config.application_name(), ?streams, table = %config.table_name(),
        worker_id = %config.worker_id(), command = ?s.command(), language = ?s.processing_language, tls = crate::https::crypto_provider(), "starting the MultiLangDaemon");
    let first_signal = signals.nth(1);
    // Metrics first, so that every metric of the worker reaches the exporters. Loading the
    // CloudWatch client's settings may wait on the region or credentials chain: a signal wins.
    let telemetry = tokio::select! {
        biased;
        () = signals.nth(1) => {
            tracing::info!("shutdown signal received during start-up: exiting");
            return ExitCode::SUCCESS;
        }
        telemetry = daemon::start_telemetry(&s, &config) => match telemetry {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kcl-multilang: metrics: {e}");
                return ExitCode::from(1);
            }
        },
    };
    if let Some(p) = &telemetry.prometheus {
        tracing::info!(url = %format!("http://{}/metrics", p.local_addr()), "Prometheus endpoint (also /healthz, /readyz)");
    }
    // Building the clients may wait on a credentials provider (IMDS, STS): a signal wins.
    let scheduler = tokio::select! {
        biased;
        () = signals.nth(1) => {
            tracing::info!("shutdown signal received during start-up: exiting");
            return ExitCode::SUCCESS;
        }
        scheduler = daemon::build_scheduler(&s, config) => scheduler,
    };
    if let Some(p) = &telemetry.prometheus {
        p.report_health_of(&scheduler.handle());
    }
    tokio::spawn({
        let first = signals.nth(1);
        async move {
            first.await;
            tracing::info!(
                "shutdown signal received: shutting down gracefully (a second signal exits at once)"
            );
        }
    });
    // A second signal must not leave child processes behind (a child stuck in
    // shutdownRequested would outlive the daemon): instead of `process::exit`, return, so that
    // the runtime's shutdown in `main` drops every shard task and with it every child process
    // (spawned with `kill_on_drop`). The scheduler itself stops at once when the first signal
    // arrives during its start-up (table creation, first shard sync).
    let result = tokio::select! {
        result = scheduler.run(first_signal) => result,
        () = signals.nth(2) => {
            tracing::warn!("second signal: exiting now; stopping the child processes");
            return ExitCode::from(130);
        }
    };
    // The last metrics, bounded: a CloudWatch that does not answer must not hold the exit.
    let _ = tokio::time::timeout(METRICS_FLUSH_LIMIT, telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the daemon stopped: it could not start, or hit an error retrying does not fix");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Option<Args>, String> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn accepts_the_java_daemon_forms() {
        for form in [
            &["--properties-file", "a.properties"][..],
            &["-p", "a.properties"],
            &["a.properties"],
            &["--properties-file=a.properties"],
        ] {
            assert_eq!(
                args(form).unwrap().unwrap().properties,
                PathBuf::from("a.properties"),
                "{form:?}"
            );
        }
        let a = args(&[
            "-p",
            "x",
            "--log-level",
            "debug",
            "--log-configuration",
            "logback.xml",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.log_level, "debug");
        assert!(args(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_arguments_clearly() {
        assert_eq!(args(&[]).err().unwrap(), "no properties file given");
        assert_eq!(args(&["-p"]).err().unwrap(), "-p needs a value");
        assert_eq!(args(&["--bogus"]).err().unwrap(), "unknown option --bogus");
        assert_eq!(args(&["a", "b"]).err().unwrap(), "unexpected argument b");
    }
}
