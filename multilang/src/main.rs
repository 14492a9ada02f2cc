//! `kcl-multilang`: the MultiLangDaemon. Runs unmodified amazon-kclpy (Python) and aws-kcl
//! (Node) record processors on the Rust KCL, configured by the same `.properties` files.

use kcl_multilang::{daemon, settings};
use std::path::PathBuf;
use std::process::ExitCode;

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
the leases are released); a second signal exits at once.";

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
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

async fn run(args: Args) -> ExitCode {
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
    let config = match daemon::kcl_config(&s) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kcl-multilang: {}: {e}", args.properties.display());
            return ExitCode::from(2);
        }
    };
    tracing::info!(application = %config.application_name, stream = %config.stream, table = %config.table_name,
        worker_id = %config.worker_id, command = ?s.command(), language = ?s.processing_language, "starting the MultiLangDaemon");
    let scheduler = daemon::build_scheduler(&s, config).await;
    let handle = scheduler.handle();
    let (second_signal_tx, second_signal) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutdown signal received: shutting down gracefully (a second signal exits at once)"
        );
        handle.request_shutdown();
        wait_for_signal().await;
        let _ = second_signal_tx.send(());
    });
    // A second signal must not leave child processes behind (a child stuck in
    // shutdownRequested would outlive the daemon): instead of `process::exit`, return, so that
    // the runtime's shutdown in `main` drops every shard task and with it every child process
    // (spawned with `kill_on_drop`).
    let result = tokio::select! {
        result = scheduler.run(std::future::pending()) => result,
        Ok(()) = second_signal => {
            tracing::warn!("second signal: exiting now; stopping the child processes");
            return ExitCode::from(130);
        }
    };
    signals.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the daemon could not start");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
