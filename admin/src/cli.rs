//! The command line: arguments, AWS clients, output.

use crate::commands::{Admin, ChangeReport, DeleteReport, Export, LeaseView};
use crate::error::AdminError;
use crate::position::Target;
use crate::stream::Stream;
use crate::table::Table;
use aws_config::{BehaviorVersion, Region};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `kcl-admin --help`.
pub const USAGE: &str = "\
kcl-admin: inspect and safely change a KCL lease table (Java KCL 2.x/3.x format, single- or
multi-stream) while workers run

USAGE:
    kcl-admin --table APP [OPTIONS] COMMAND [ARGS]

COMMANDS:
    leases                     every lease: owner, counter, checkpoint, parents/children, state,
                               and how far behind the tip it is (with --stream, or a
                               multi-stream table)
    why SHARD                  why a shard is (not) being processed, in words
    reset SHARD... | --all --to POSITION
                               move checkpoints, safely while workers run; POSITION is
                               TRIM_HORIZON, LATEST, AT_TIMESTAMP[=TIME] or SEQUENCE=NUMBER[/SUB]
    delete-finished            delete SHARD_END leases whose children all have leases
    forget-stream STREAM       delete a stream's leases from a multi-stream table
    export [--out FILE]        every lease's checkpoint, as JSON (stdout by default)
    import FILE|-              write an export's checkpoints into the table

OPTIONS:
    --table NAME               the lease table (the application name); required
    --stream NAME              the stream of a single-stream application (lag, shard checks)
    --region REGION            AWS region (default: AWS_REGION / the profile)
    --endpoint-url URL         endpoint for both Kinesis and DynamoDB (local services)
    --kinesis-endpoint URL     Kinesis endpoint
    --dynamodb-endpoint URL    DynamoDB endpoint
    --json                     JSON output for scripts
    --watch SECS               leases, why: watch the counters this long to see who renews
                               (why: default 5, leases: default 0 = do not watch)
    --no-lag                   leases: do not read the stream
    --yes                      do it: reset that skips records, import over existing leases,
                               and delete-finished / forget-stream (dry runs without it)
    -h, --help                 this text

Credentials: the AWS SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, SSO, web identity, instance roles), as the MultiLangDaemon takes them.

EXIT CODES:
    0  done    1  failed (the message says why)    2  bad arguments    3  refused (needs --yes)";

/// Parsed arguments.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Args {
    /// `--table`.
    pub table: Option<String>,
    /// `--stream`.
    pub stream: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--endpoint-url`.
    pub endpoint: Option<String>,
    /// `--kinesis-endpoint`.
    pub kinesis_endpoint: Option<String>,
    /// `--dynamodb-endpoint`.
    pub dynamodb_endpoint: Option<String>,
    /// `--json`.
    pub json: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--all`.
    pub all: bool,
    /// `--no-lag`.
    pub no_lag: bool,
    /// `--to`.
    pub to: Option<Target>,
    /// `--watch`.
    pub watch: Option<Duration>,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// The command.
    pub command: String,
    /// The command's arguments.
    pub rest: Vec<String>,
}

/// Parse `args` (without the program name); `Ok(None)` for `--help`.
pub fn parse_args(args: &[String]) -> Result<Option<Args>, AdminError> {
    let usage = |m: String| AdminError::Usage(m);
    let mut a = Args::default();
    let mut command = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, AdminError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs a value"))),
            }
        };
        match name {
            "-h" | "--help" => return Ok(None),
            "--table" => a.table = Some(value()?),
            "--stream" => a.stream = Some(value()?),
            "--region" => a.region = Some(value()?),
            "--endpoint-url" => a.endpoint = Some(value()?),
            "--kinesis-endpoint" => a.kinesis_endpoint = Some(value()?),
            "--dynamodb-endpoint" => a.dynamodb_endpoint = Some(value()?),
            "--out" => a.out = Some(PathBuf::from(value()?)),
            "--to" => a.to = Some(value()?.parse().map_err(usage)?),
            "--watch" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| usage(format!("--watch {v:?}: give seconds, e.g. 5")))?;
                a.watch = Some(Duration::from_secs_f64(secs));
            }
            "--json" | "--yes" | "--all" | "--no-lag" if inline.is_some() => {
                return Err(usage(format!("{name} takes no value")))
            }
            "--json" => a.json = true,
            "--yes" => a.yes = true,
            "--all" => a.all = true,
            "--no-lag" => a.no_lag = true,
            s if s.starts_with('-') && s != "-" => {
                return Err(usage(format!("unknown option {s}")))
            }
            _ if command.is_none() => command = Some(arg.clone()),
            _ => a.rest.push(arg.clone()),
        }
    }
    a.command = command.ok_or_else(|| usage("no command given".into()))?;
    if a.table.is_none() {
        return Err(usage(
            "--table is required (the lease table: the application name)".into(),
        ));
    }
    let n = a.rest.len();
    match a.command.as_str() {
        "leases" | "delete-finished" | "export" if n > 0 => {
            return Err(usage(format!("{} takes no arguments", a.command)))
        }
        "leases" | "delete-finished" | "export" => {}
        "why" if n != 1 => return Err(usage("why takes one SHARD".into())),
        "forget-stream" if n != 1 => return Err(usage("forget-stream takes one STREAM".into())),
        "import" if n != 1 => return Err(usage("import takes one FILE (or - for stdin)".into())),
        "why" | "forget-stream" | "import" => {}
        "reset" => {
            if a.to.is_none() {
                return Err(usage("reset needs --to POSITION".into()));
            }
            if a.all == (n > 0) {
                return Err(usage(
                    "reset takes SHARD arguments or --all (one of them)".into(),
                ));
            }
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    }
    if a.all && a.command != "reset" {
        return Err(usage("--all is for reset".into()));
    }
    Ok(Some(a))
}

fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https()
}

/// The clients for `args`.
pub async fn admin(args: &Args) -> Admin {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    if let Some(r) = &args.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let sdk = loader.load().await;
    let mut k = aws_sdk_kinesis::config::Builder::from(&sdk);
    if let Some(e) = args.kinesis_endpoint.as_ref().or(args.endpoint.as_ref()) {
        k = k.endpoint_url(e);
    }
    let mut d = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(e) = args.dynamodb_endpoint.as_ref().or(args.endpoint.as_ref()) {
        d = d.endpoint_url(e);
    }
    Admin {
        table: Table::new(
            aws_sdk_dynamodb::Client::from_conf(d.build()),
            args.table.clone().unwrap_or_default(),
        ),
        kinesis: Stream::new(aws_sdk_kinesis::Client::from_conf(k.build())),
        stream: args.stream.clone(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("serializable")
}

/// Columns padded to their widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

/// `leases` for people.
pub fn render_leases(views: &[LeaseView]) -> String {
    if views.is_empty() {
        return "no leases".into();
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let cp = if v.checkpoint_sub_sequence_number == 0 {
                v.checkpoint.clone()
            } else {
                format!("{}/{}", v.checkpoint, v.checkpoint_sub_sequence_number)
            };
            vec![
                v.key.clone(),
                v.owner.clone().unwrap_or_else(|| "-".into()),
                v.counter.to_string(),
                cp,
                dash(&v.parent_shard_ids),
                dash(&v.child_shard_ids),
                v.state.short(),
                match (&v.behind, &v.behind_error) {
                    (Some(l), _) => l.show(),
                    (None, Some(_)) => "error".into(),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut s = render_table(
        &[
            "LEASE",
            "OWNER",
            "COUNTER",
            "CHECKPOINT",
            "PARENTS",
            "CHILDREN",
            "STATE",
            "BEHIND",
        ],
        &rows,
    );
    for v in views {
        if let Some(e) = &v.behind_error {
            s.push_str(&format!("\n{}: could not read the stream: {e}", v.key));
        }
    }
    s
}

/// `reset`/`import` for people.
pub fn render_changes(r: &ChangeReport) -> String {
    let mut lines = Vec::new();
    for c in &r.changed {
        let from = c.from.clone().unwrap_or_else(|| "(new lease)".into());
        let owner = c
            .released_owner
            .as_deref()
            .map(|o| format!(", released by {o}"))
            .unwrap_or_default();
        let counter = c
            .counter
            .map(|n| format!(" (counter {n}{owner})"))
            .unwrap_or_default();
        lines.push(format!("{}: {from} -> {}{counter}", c.key, c.to));
    }
    for (k, why) in &r.skipped {
        lines.push(format!("{k}: skipped, {why}"));
    }
    for (k, e) in &r.failed {
        lines.push(format!("{k}: FAILED: {e}"));
    }
    for n in &r.notes {
        lines.push(format!("note: {n}"));
    }
    if lines.is_empty() {
        lines.push("nothing to do".into());
    }
    lines.join("\n")
}

/// `delete-finished`/`forget-stream` for people.
pub fn render_deletes(r: &DeleteReport) -> String {
    let mut lines = Vec::new();
    let verb = if r.acted { "deleted" } else { "would delete" };
    for k in &r.deleted {
        lines.push(format!("{verb} {k}"));
    }
    for (k, why) in &r.kept {
        lines.push(format!("kept {k}: {why}"));
    }
    for (k, e) in &r.failed {
        lines.push(format!("FAILED {k}: {e}"));
    }
    for n in &r.notes {
        lines.push(format!("note: {n}"));
    }
    if !r.acted && !r.deleted.is_empty() {
        lines.push("dry run: add --yes to delete".into());
    }
    if lines.is_empty() {
        lines.push("nothing to delete".into());
    }
    lines.join("\n")
}

/// Run a parsed command; the text to print.
pub async fn run(a: &Args, admin: &Admin) -> Result<String, AdminError> {
    let arg = a.rest.first().cloned().unwrap_or_default();
    let failed = |n: usize| n > 0;
    match a.command.as_str() {
        "leases" => {
            let v = admin.leases(a.watch, !a.no_lag).await?;
            Ok(if a.json { json(&v) } else { render_leases(&v) })
        }
        "why" => {
            let watch = a.watch.unwrap_or(Duration::from_secs(5));
            let text = admin.why(&arg, Some(watch)).await?;
            Ok(if a.json {
                json(&serde_json::json!({ "shard": arg, "why": text }))
            } else {
                text
            })
        }
        "reset" => {
            let to = a.to.clone().expect("checked by parse_args");
            let r = admin.reset(&a.rest, a.all, &to, a.yes).await?;
            finish(a, &r, render_changes(&r), failed(r.failed.len()))
        }
        "delete-finished" => {
            let r = admin.delete_finished(a.yes).await?;
            finish(a, &r, render_deletes(&r), failed(r.failed.len()))
        }
        "forget-stream" => {
            let r = admin.forget_stream(&arg, a.yes).await?;
            finish(a, &r, render_deletes(&r), failed(r.failed.len()))
        }
        "export" => {
            let e = admin.export().await?;
            let text = json(&e);
            match &a.out {
                Some(path) => {
                    std::fs::write(path, format!("{text}\n"))?;
                    Ok(format!(
                        "exported {} leases to {}",
                        e.leases.len(),
                        path.display()
                    ))
                }
                None => Ok(text),
            }
        }
        "import" => {
            let text = if arg == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&arg)?
            };
            let export: Export =
                serde_json::from_str(&text).map_err(|e| AdminError::BadImport(e.to_string()))?;
            let r = admin.import(&export, a.yes).await?;
            finish(a, &r, render_changes(&r), failed(r.failed.len()))
        }
        other => Err(AdminError::Usage(format!("unknown command {other:?}"))),
    }
}

fn finish<T: serde::Serialize>(
    a: &Args,
    report: &T,
    text: String,
    failed: bool,
) -> Result<String, AdminError> {
    let out = if a.json { json(report) } else { text };
    if failed {
        Err(AdminError::PartlyFailed(out))
    } else {
        Ok(out)
    }
}

/// The whole binary: run with `args` (without the program name), return the exit code.
pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kcl-admin: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let admin = admin(&parsed).await;
        run(&parsed, &admin).await
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(AdminError::PartlyFailed(text)) => {
            println!("{text}");
            eprintln!("kcl-admin: some leases could not be changed (see FAILED above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("kcl-admin: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Change;

    fn parse(s: &str) -> Result<Option<Args>, AdminError> {
        let v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        parse_args(&v)
    }

    #[test]
    fn parses_commands_and_options_in_any_order() {
        let a = parse("--table app reset shardId-1 shardId-2 --to=TRIM_HORIZON --yes --json")
            .unwrap()
            .unwrap();
        assert_eq!(a.table.as_deref(), Some("app"));
        assert_eq!(a.command, "reset");
        assert_eq!(a.rest, vec!["shardId-1", "shardId-2"]);
        assert_eq!(a.to, Some(Target::TrimHorizon));
        assert!(a.yes && a.json && !a.all);
        let a = parse("leases --table app --endpoint-url http://localhost:4566 --watch 2.5")
            .unwrap()
            .unwrap();
        assert_eq!(a.endpoint.as_deref(), Some("http://localhost:4566"));
        assert_eq!(a.watch, Some(Duration::from_millis(2500)));
        let a = parse("--table app import -").unwrap().unwrap();
        assert_eq!(a.rest, vec!["-"]);
        assert!(parse("--help").unwrap().is_none());
        assert!(parse("leases --table app -h").unwrap().is_none());
    }

    #[test]
    fn refuses_bad_command_lines() {
        for (line, needle) in [
            ("leases", "--table is required"),
            ("--table app", "no command"),
            ("--table app frobnicate", "unknown command"),
            ("--table app reset shardId-1", "needs --to"),
            ("--table app reset --to LATEST", "SHARD arguments or --all"),
            (
                "--table app reset s --all --to LATEST",
                "SHARD arguments or --all",
            ),
            ("--table app reset s --to NOWHERE", "expected TRIM_HORIZON"),
            ("--table app why", "one SHARD"),
            ("--table app leases extra", "takes no arguments"),
            ("--table app leases --watch soon", "give seconds"),
            ("--table app leases --all", "--all is for reset"),
            ("--table app leases --bogus", "unknown option --bogus"),
            ("--table app leases --json=1", "takes no value"),
            ("--table", "--table needs a value"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(matches!(e, AdminError::Usage(_)), "{line}: {e}");
            assert!(e.to_string().contains(needle), "{line}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn renders_changes_and_deletes() {
        let r = ChangeReport {
            changed: vec![Change {
                key: "shardId-1".into(),
                from: Some("100/2".into()),
                to: "TRIM_HORIZON".into(),
                released_owner: Some("w1".into()),
                counter: Some(8),
                attempts: 2,
            }],
            skipped: vec![("shardId-0".into(), "finished (SHARD_END)".into())],
            failed: vec![],
            notes: vec![],
        };
        assert_eq!(
            render_changes(&r),
            "shardId-1: 100/2 -> TRIM_HORIZON (counter 8, released by w1)\n\
             shardId-0: skipped, finished (SHARD_END)"
        );
        let d = DeleteReport {
            acted: false,
            deleted: vec!["a".into()],
            kept: vec![("b".into(), "not finished".into())],
            ..Default::default()
        };
        assert_eq!(
            render_deletes(&d),
            "would delete a\nkept b: not finished\ndry run: add --yes to delete"
        );
        assert_eq!(
            render_table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]),
            "A    BB\nxyz  1"
        );
    }
}
