//! A Java KCL 3.1.3 *library* application, for what the MultiLangDaemon protocol cannot do:
//! Java's prepared (two-phase) checkpoints.
//!
//! `testkit/java/PendingCheckpointApp.java` (one source file, embedded here as
//! [`PENDING_CHECKPOINT_APP_SOURCE`]) is a `ConfigsBuilder` + `Scheduler` application with one
//! `ShardRecordProcessor`, configured like the tests' MultiLangDaemon (endpoint overrides built
//! as the daemon builds them, `EnvironmentVariableCredentialsProvider`, polling, metrics `NONE`,
//! `CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`, failover 3000 ms, idle 200 ms; plus a shard sync
//! interval of 1000 ms, see [`JavaAppArgs`]). It never commits a checkpoint. In
//! [`JavaAppMode::Prepare`] it calls `RecordProcessorCheckpointer.prepareCheckpoint(seq, subSeq,
//! state)` on the first non-empty batch of each shard (the batch's last record); in
//! [`JavaAppMode::Report`] it only reports.
//! Both modes append one JSON line per event to an output file ([`JavaAppEvent`]): what
//! `initialize` received (checkpoint and pending checkpoint with its state), the batches, the
//! prepared checkpoints, errors.
//!
//! [`JavaKclApp::start`] compiles the source on first use with the JDK's `javac` (found next to
//! [`java_kcl::java`]'s `java`, else in `JAVA_HOME`, else on `PATH`; a JRE alone is not enough)
//! against [`JavaKcl::classpath`], into `<testkit cache>/java-app-PendingCheckpointApp-<hash>/`
//! where the hash covers the source, the Java KCL version and `javac -version`. Like the wheel
//! install, the compilation runs under an exclusive file lock into a temporary directory that
//! is renamed into place when complete, so concurrent test processes agree on one build. The
//! app then runs like [`java_kcl::MultiLangDaemon`]: its own process group, stdout and stderr in
//! a log file, SIGKILL to the group on drop (and `PR_SET_PDEATHSIG`).
//!
//! ```no_run
//! # async fn demo(aws: &testkit::LocalAws, stream: &str, app: &str) -> anyhow::Result<()> {
//! use testkit::java_app::{JavaAppArgs, JavaAppMode, JavaKclApp};
//! use testkit::java_kcl;
//! let kcl = tokio::task::spawn_blocking(|| {
//!     let kcl = java_kcl::java_kcl()?;
//!     testkit::java_app::pending_checkpoint_app_classes(&kcl)?; // compile off the runtime
//!     anyhow::Ok(kcl)
//! })
//! .await??;
//! let dir = std::env::temp_dir();
//! let args = JavaAppArgs::local(
//!     aws,
//!     JavaAppMode::Prepare { state: b"my state".to_vec() },
//!     stream,
//!     app,
//!     "java-worker",
//!     dir.join("events.jsonl"),
//! );
//! let env = java_kcl::credentials_env(&aws.sdk_config()).await?;
//! let mut java = JavaKclApp::start(&kcl, &args, &env, &dir.join("java.log"))?;
//! let prepared = java
//!     .wait_for_prepared("shardId-000000000000", std::time::Duration::from_secs(60))
//!     .await?;
//! println!("Java prepared {} / {}", prepared.sequence_number, prepared.sub_sequence_number);
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::install::{self, hex, tail};
use crate::java_kcl::{self, JavaKcl, JavaProcess, DEFAULT_JVM_OPTIONS};
use crate::LocalAws;

/// The Java source of the app (`testkit/java/PendingCheckpointApp.java`).
pub const PENDING_CHECKPOINT_APP_SOURCE: &str = include_str!("../java/PendingCheckpointApp.java");
/// Its main class (default package).
pub const PENDING_CHECKPOINT_APP_CLASS: &str = "PendingCheckpointApp";

const JAVAC_DEADLINE: Duration = Duration::from_secs(180);
/// How many log lines the errors of [`JavaKclApp`] quote.
const ERROR_LOG_LINES: usize = 60;

/// The JDK compiler for `java`: `javac` in the same directory as `java` (as given, then with
/// symlinks resolved, e.g. `/usr/bin/java` → `/usr/lib/jvm/<jdk>/bin/java`), else
/// `$JAVA_HOME/bin/javac`, else `javac` on `PATH`; checked by running `javac -version`.
/// Returns the path and what `-version` printed.
pub fn javac(java: &Path) -> Result<(PathBuf, String)> {
    let javac = find_javac(
        java,
        std::env::var_os("JAVA_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from),
        java_kcl::which("javac"),
    )?;
    let out = Command::new(&javac)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} -version", javac.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string();
    if !out.status.success() {
        bail!(
            "{} -version failed ({}): {text}",
            javac.display(),
            out.status
        );
    }
    Ok((javac, text))
}

/// The first executable `javac`: next to `java` (as given, then with symlinks resolved), in
/// `java_home/bin`, else `on_path`.
fn find_javac(
    java: &Path,
    java_home: Option<PathBuf>,
    on_path: Option<PathBuf>,
) -> Result<PathBuf> {
    let mut candidates = vec![java.with_file_name("javac")];
    let real = fs::canonicalize(java).ok();
    if let Some(real) = &real {
        candidates.push(real.with_file_name("javac"));
    }
    if let Some(home) = java_home {
        candidates.push(home.join("bin").join("javac"));
    }
    candidates
        .into_iter()
        .find(|p| is_executable(p))
        .or(on_path)
        .ok_or_else(|| {
            anyhow!(
                "`javac` not found (next to {}{}, in JAVA_HOME or on PATH): the Java KCL test \
                 app {PENDING_CHECKPOINT_APP_CLASS} is compiled at test time and needs a JDK, \
                 not only a Java runtime (`apt-get install openjdk-17-jdk-headless` on \
                 Debian/Ubuntu, or set JAVA_HOME to a JDK 11+)",
                java.display(),
                real.filter(|r| r != java)
                    .map(|r| format!(" = {}", r.display()))
                    .unwrap_or_default()
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The directory with the compiled [`PENDING_CHECKPOINT_APP_CLASS`] (a class path entry).
/// Compiles on first use (blocking: file lock + `javac`, a few seconds; call it from
/// `spawn_blocking` to keep a runtime free); the result is remembered for the rest of the
/// process.
pub fn pending_checkpoint_app_classes(kcl: &JavaKcl) -> Result<PathBuf> {
    static CACHED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| {
            install::cache_root()
                .and_then(|root| {
                    compile_into(
                        &root,
                        kcl,
                        PENDING_CHECKPOINT_APP_CLASS,
                        PENDING_CHECKPOINT_APP_SOURCE,
                    )
                })
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!("compiling the Java KCL test app {PENDING_CHECKPOINT_APP_CLASS}: {e}"))
}

/// Compiles `source` (class `class`, default package) against the Java KCL jars into
/// `<root>/java-app-<class>-<hash>/classes` once; returns that directory.
fn compile_into(root: &Path, kcl: &JavaKcl, class: &str, source: &str) -> Result<PathBuf> {
    let (javac, version) = javac(&kcl.java)?;
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0]);
    hash.update(java_kcl::JAVA_KCL_VERSION.as_bytes());
    hash.update([0]);
    hash.update(version.as_bytes());
    let key = hex(&hash.finalize());
    let name = format!("java-app-{class}-{}", &key[..16]);
    let class_file = format!("{class}.class");
    let is_complete = |dir: &Path| {
        dir.join(install::MARKER).is_file() && dir.join("classes").join(&class_file).is_file()
    };
    let dir = install::install_once(root, &name, is_complete, |tmp| {
        let src = tmp.join("src");
        let classes = tmp.join("classes");
        fs::create_dir_all(&src)?;
        fs::create_dir_all(&classes)?;
        let file = src.join(format!("{class}.java"));
        fs::write(&file, source)?;
        let log = tmp.join(".javac.log");
        let out = File::create(&log)?;
        let mut child = Command::new(&javac)
            .args(["-encoding", "UTF-8", "-proc:none", "-d"])
            .arg(&classes)
            .arg("-cp")
            .arg(kcl.classpath())
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot run {}", javac.display()))?;
        let status = install::wait_within(&mut child, JAVAC_DEADLINE, "javac", &log)?;
        if !status.success() {
            bail!(
                "`{} -cp {} {}` failed ({status}):\n{}",
                javac.display(),
                kcl.classpath().to_string_lossy(),
                file.display(),
                tail(&log)
            );
        }
        if !classes.join(&class_file).is_file() {
            bail!("javac succeeded but wrote no {class_file}:\n{}", tail(&log));
        }
        let _ = fs::remove_file(&log);
        Ok(())
    })?;
    Ok(dir.join("classes"))
}

/// What the app does with the records (it never commits a checkpoint in either mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JavaAppMode {
    /// On the first non-empty batch of each shard:
    /// `prepareCheckpoint(lastRecord.sequenceNumber(), lastRecord.subSequenceNumber(), state)`,
    /// then a [`JavaAppEvent::Prepared`] line.
    Prepare {
        /// The application state stored with the prepared checkpoint (any bytes).
        state: Vec<u8>,
    },
    /// Only the event lines (what `initialize` received, the batches).
    Report,
}

/// The app's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaAppArgs {
    /// What it does.
    pub mode: JavaAppMode,
    /// The stream name.
    pub stream: String,
    /// The application name, which is also the lease table name.
    pub application: String,
    /// The worker id (the `leaseOwner` of its leases).
    pub worker_id: String,
    /// The AWS region.
    pub region: String,
    /// The Kinesis endpoint URL.
    pub kinesis_endpoint: String,
    /// The DynamoDB endpoint URL.
    pub dynamodb_endpoint: String,
    /// The file the JSON event lines are appended to (created if missing).
    pub output: PathBuf,
    /// `failoverTimeMillis` (lease duration).
    pub failover_millis: u64,
    /// `idleTimeBetweenReadsInMillis` of the polling fetcher (Java's minimum is 200).
    pub idle_millis: u64,
    /// `maxRecords` per GetRecords.
    pub max_records: u32,
    /// `shardSyncIntervalMillis`. Keep it short: the Java KCL 3.1.3 worker whose shard sync
    /// creates leases (a new lease table) sleeps this long inside its initialization, before it
    /// takes any lease (`ShardSyncTask`; the KCL's default is 60 s).
    pub shard_sync_interval_millis: u64,
    /// `TRIM_HORIZON` or `LATEST`: where a shard without a checkpoint starts (also the
    /// checkpoint of the leases Java creates).
    pub initial_position: String,
}

impl JavaAppArgs {
    /// Settings for `aws`'s endpoints and region, matching the tests' MultiLangDaemon
    /// properties: failover 3000 ms, idle 200 ms, 100 records per read, `TRIM_HORIZON`; and a
    /// shard sync interval of 1000 ms.
    pub fn local(
        aws: &LocalAws,
        mode: JavaAppMode,
        stream: &str,
        application: &str,
        worker_id: &str,
        output: impl Into<PathBuf>,
    ) -> JavaAppArgs {
        JavaAppArgs {
            mode,
            stream: stream.into(),
            application: application.into(),
            worker_id: worker_id.into(),
            region: aws
                .sdk_config()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
            kinesis_endpoint: aws.kinesis_endpoint().into(),
            dynamodb_endpoint: aws.dynamodb_endpoint().into(),
            output: output.into(),
            failover_millis: 3000,
            idle_millis: 200,
            max_records: 100,
            shard_sync_interval_millis: 1000,
            initial_position: "TRIM_HORIZON".into(),
        }
    }

    /// The program arguments (`--name value` pairs) after the main class.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<(&str, OsString)> = vec![
            (
                "--mode",
                match self.mode {
                    JavaAppMode::Prepare { .. } => "prepare",
                    JavaAppMode::Report => "report",
                }
                .into(),
            ),
            ("--stream", self.stream.clone().into()),
            ("--application", self.application.clone().into()),
            ("--worker-id", self.worker_id.clone().into()),
            ("--region", self.region.clone().into()),
            ("--kinesis-endpoint", self.kinesis_endpoint.clone().into()),
            ("--dynamodb-endpoint", self.dynamodb_endpoint.clone().into()),
            ("--output", self.output.clone().into_os_string()),
            ("--failover-millis", self.failover_millis.to_string().into()),
            ("--idle-millis", self.idle_millis.to_string().into()),
            ("--max-records", self.max_records.to_string().into()),
            (
                "--shard-sync-interval-millis",
                self.shard_sync_interval_millis.to_string().into(),
            ),
            ("--initial-position", self.initial_position.clone().into()),
        ];
        if let JavaAppMode::Prepare { state } = &self.mode {
            args.push((
                "--state-base64",
                base64::engine::general_purpose::STANDARD
                    .encode(state)
                    .into(),
            ));
        }
        args.into_iter()
            .flat_map(|(k, v)| [OsString::from(k), v])
            .collect()
    }
}

/// What `initialize` received (`InitializationInput`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeEvent {
    /// The shard.
    pub shard_id: String,
    /// `extendedSequenceNumber().sequenceNumber()`: a sequence number or a sentinel such as
    /// `TRIM_HORIZON`.
    pub checkpoint: String,
    /// `extendedSequenceNumber().subSequenceNumber()`.
    pub checkpoint_sub_sequence_number: u64,
    /// `pendingCheckpointSequenceNumber().sequenceNumber()`, if there is a pending checkpoint.
    pub pending_checkpoint: Option<String>,
    /// `pendingCheckpointSequenceNumber().subSequenceNumber()`, if there is one.
    pub pending_checkpoint_sub_sequence_number: Option<u64>,
    /// `pendingCheckpointState()`, if not null.
    pub pending_checkpoint_state: Option<Vec<u8>>,
}

/// A non-empty batch given to `processRecords`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsEvent {
    /// The shard.
    pub shard_id: String,
    /// Number of records.
    pub count: u64,
    /// The first record's sequence number.
    pub first_sequence_number: String,
    /// The last record's sequence number.
    pub last_sequence_number: String,
    /// The last record's sub-sequence number.
    pub last_sub_sequence_number: u64,
}

/// A `prepareCheckpoint` call that returned (the lease item is written by then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    /// The shard.
    pub shard_id: String,
    /// The prepared sequence number.
    pub sequence_number: String,
    /// The prepared sub-sequence number.
    pub sub_sequence_number: u64,
}

/// One line of the app's output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JavaAppEvent {
    /// `initialize`.
    Initialize(InitializeEvent),
    /// `processRecords` with records.
    Records(RecordsEvent),
    /// `prepareCheckpoint` returned ([`JavaAppMode::Prepare`]).
    Prepared(PreparedEvent),
    /// A KCL call of the processor threw (`operation` is e.g. `prepareCheckpoint`).
    Error {
        /// The shard.
        shard_id: String,
        /// The call that threw.
        operation: String,
        /// The exception (`toString()`).
        message: String,
    },
    /// `leaseLost`, `shardEnded` or `shutdownRequested` (in `event`).
    Lifecycle {
        /// The callback's name.
        event: String,
        /// The shard.
        shard_id: String,
    },
}

impl JavaAppEvent {
    /// The shard the event is about.
    pub fn shard_id(&self) -> &str {
        match self {
            JavaAppEvent::Initialize(e) => &e.shard_id,
            JavaAppEvent::Records(e) => &e.shard_id,
            JavaAppEvent::Prepared(e) => &e.shard_id,
            JavaAppEvent::Error { shard_id, .. } | JavaAppEvent::Lifecycle { shard_id, .. } => {
                shard_id
            }
        }
    }
}

/// Parses one output line.
pub fn parse_event(line: &str) -> Result<JavaAppEvent> {
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("not a JSON line: {line:?}"))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let string = |k: &str| -> Result<String> {
        field(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no string {k:?} in {line}"))
    };
    let number = |k: &str| -> Result<u64> {
        field(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no number {k:?} in {line}"))
    };
    let opt_string = |k: &str| -> Result<Option<String>> {
        field(k)
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{k:?} is not a string in {line}"))
            })
            .transpose()
    };
    let opt_number = |k: &str| -> Result<Option<u64>> {
        field(k)
            .map(|x| {
                x.as_u64()
                    .ok_or_else(|| anyhow!("{k:?} is not a number in {line}"))
            })
            .transpose()
    };
    let shard_id = string("shardId")?;
    let event = string("event")?;
    Ok(match event.as_str() {
        "initialize" => JavaAppEvent::Initialize(InitializeEvent {
            shard_id,
            checkpoint: string("checkpoint")?,
            checkpoint_sub_sequence_number: number("checkpointSubSequenceNumber")?,
            pending_checkpoint: opt_string("pendingCheckpoint")?,
            pending_checkpoint_sub_sequence_number: opt_number(
                "pendingCheckpointSubSequenceNumber",
            )?,
            pending_checkpoint_state: opt_string("pendingCheckpointState")?
                .map(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(&b)
                        .with_context(|| format!("pendingCheckpointState is not base64 in {line}"))
                })
                .transpose()?,
        }),
        "records" => JavaAppEvent::Records(RecordsEvent {
            shard_id,
            count: number("count")?,
            first_sequence_number: string("firstSequenceNumber")?,
            last_sequence_number: string("lastSequenceNumber")?,
            last_sub_sequence_number: number("lastSubSequenceNumber")?,
        }),
        "prepared" => JavaAppEvent::Prepared(PreparedEvent {
            shard_id,
            sequence_number: string("sequenceNumber")?,
            sub_sequence_number: number("subSequenceNumber")?,
        }),
        "error" => JavaAppEvent::Error {
            shard_id,
            operation: string("operation")?,
            message: opt_string("message")?.unwrap_or_default(),
        },
        "leaseLost" | "shardEnded" | "shutdownRequested" => {
            JavaAppEvent::Lifecycle { event, shard_id }
        }
        other => bail!("unknown event {other:?} in {line}"),
    })
}

/// The events in an output file so far: every complete (newline-terminated) line; a missing
/// file has none. Fails on a line that does not parse.
pub fn read_events(path: &Path) -> Result<Vec<JavaAppEvent>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Ok(Vec::new()),
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_event(l).with_context(|| format!("in {}", path.display())))
        .collect()
}

/// A running [`PENDING_CHECKPOINT_APP_CLASS`]: its own process group, output in a log file.
/// Dropping it kills the group and, while a thread is panicking, prints the last lines of the
/// log.
pub struct JavaKclApp {
    process: JavaProcess,
    output: PathBuf,
}

impl JavaKclApp {
    /// Starts `java <DEFAULT_JVM_OPTIONS> -cp <classes>:<jars>/* PendingCheckpointApp <args>`
    /// in `args.output`'s directory, with `env` added to this process's environment (pass
    /// [`java_kcl::credentials_env`]: the app reads its credentials from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`) and stdout/stderr appended to `log`.
    ///
    /// Compiles the app first if this process has not yet (blocking, see
    /// [`pending_checkpoint_app_classes`]). Call it from the test's own thread (see
    /// [`crate::clients::procs::die_with_spawning_thread`]).
    pub fn start(
        kcl: &JavaKcl,
        args: &JavaAppArgs,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<JavaKclApp> {
        let classes = pending_checkpoint_app_classes(kcl)?;
        let mut classpath = classes.into_os_string();
        classpath.push(":");
        classpath.push(kcl.classpath());
        let dir = args
            .output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let mut cmd = tokio::process::Command::new(&kcl.java);
        cmd.args(DEFAULT_JVM_OPTIONS)
            .arg("-cp")
            .arg(&classpath)
            .arg(PENDING_CHECKPOINT_APP_CLASS)
            .args(args.to_args())
            .current_dir(&dir)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let process = JavaProcess::spawn(
            format!("the Java KCL app {PENDING_CHECKPOINT_APP_CLASS}"),
            cmd,
            log,
        )?;
        Ok(JavaKclApp {
            process,
            output: args.output.clone(),
        })
    }

    /// The JSON event file.
    pub fn output_path(&self) -> &Path {
        &self.output
    }

    /// The events so far (see [`read_events`]).
    pub fn events(&self) -> Result<Vec<JavaAppEvent>> {
        read_events(&self.output)
    }

    /// Polls the events every 100 ms until `find` returns `Some`. Fails, quoting the log's
    /// tail, when the app reports an [`JavaAppEvent::Error`], exits, writes a line that does
    /// not parse, or `within` passes (`what` names what was awaited).
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut find: impl FnMut(&[JavaAppEvent]) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            let events = self
                .events()
                .map_err(|e| self.failure(format!("{e:#}"), what))?;
            if let Some(found) = find(events.as_slice()) {
                return Ok(found);
            }
            if let Some(JavaAppEvent::Error {
                shard_id,
                operation,
                message,
            }) = events
                .iter()
                .find(|e| matches!(e, JavaAppEvent::Error { .. }))
            {
                return Err(
                    self.failure(format!("{operation} threw on {shard_id}: {message}"), what)
                );
            }
            if let Some(status) = self.exited() {
                return Err(self.failure(format!("it exited ({status})"), what));
            }
            if start.elapsed() > within {
                let shown = if events.is_empty() {
                    "it wrote no events".to_string()
                } else {
                    let last: Vec<String> = events
                        .iter()
                        .rev()
                        .take(20)
                        .rev()
                        .map(|e| format!("  {e:?}"))
                        .collect();
                    format!(
                        "its events ({} in all, the last 20):\n{}",
                        events.len(),
                        last.join("\n")
                    )
                };
                return Err(self.failure(format!("timed out after {within:?}; {shown}"), what));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the `initialize` of `shard_id` (see [`JavaKclApp::wait_for`]).
    pub async fn wait_for_initialize(
        &mut self,
        shard_id: &str,
        within: Duration,
    ) -> Result<InitializeEvent> {
        self.wait_for(
            within,
            &format!("the Java KCL to initialize a processor for {shard_id}"),
            |events| {
                events.iter().find_map(|e| match e {
                    JavaAppEvent::Initialize(i) if i.shard_id == shard_id => Some(i.clone()),
                    _ => None,
                })
            },
        )
        .await
    }

    /// Waits for the first `prepareCheckpoint` on `shard_id` to return (see
    /// [`JavaKclApp::wait_for`]).
    pub async fn wait_for_prepared(
        &mut self,
        shard_id: &str,
        within: Duration,
    ) -> Result<PreparedEvent> {
        self.wait_for(
            within,
            &format!("the Java KCL to prepare a checkpoint on {shard_id}"),
            |events| {
                events.iter().find_map(|e| match e {
                    JavaAppEvent::Prepared(p) if p.shard_id == shard_id => Some(p.clone()),
                    _ => None,
                })
            },
        )
        .await
    }

    /// Waits for the first batch delivered for `shard_id` (see [`JavaKclApp::wait_for`]).
    pub async fn wait_for_records(
        &mut self,
        shard_id: &str,
        within: Duration,
    ) -> Result<RecordsEvent> {
        self.wait_for(
            within,
            &format!("the Java KCL to deliver records of {shard_id}"),
            |events| {
                events.iter().find_map(|e| match e {
                    JavaAppEvent::Records(r) if r.shard_id == shard_id => Some(r.clone()),
                    _ => None,
                })
            },
        )
        .await
    }

    fn failure(&self, problem: String, what: &str) -> anyhow::Error {
        anyhow!(
            "the Java KCL app {PENDING_CHECKPOINT_APP_CLASS} (pid {}) failed while waiting for \
             {what}: {problem}\n{}",
            self.pid(),
            self.log_tail(ERROR_LOG_LINES)
        )
    }
}

impl std::ops::Deref for JavaKclApp {
    type Target = JavaProcess;

    fn deref(&self) -> &JavaProcess {
        &self.process
    }
}

impl std::ops::DerefMut for JavaKclApp {
    fn deref_mut(&mut self) -> &mut JavaProcess {
        &mut self.process
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let init = r#"{"event":"initialize","shardId":"shardId-000000000000","checkpoint":"TRIM_HORIZON","checkpointSubSequenceNumber":0,"pendingCheckpoint":"4959","pendingCheckpointSubSequenceNumber":3,"pendingCheckpointState":"AP8="}"#;
        assert_eq!(
            parse_event(init).unwrap(),
            JavaAppEvent::Initialize(InitializeEvent {
                shard_id: "shardId-000000000000".into(),
                checkpoint: "TRIM_HORIZON".into(),
                checkpoint_sub_sequence_number: 0,
                pending_checkpoint: Some("4959".into()),
                pending_checkpoint_sub_sequence_number: Some(3),
                pending_checkpoint_state: Some(vec![0, 0xff]),
            })
        );
        let none = r#"{"event":"initialize","shardId":"s","checkpoint":"12","checkpointSubSequenceNumber":1,"pendingCheckpoint":null,"pendingCheckpointSubSequenceNumber":null,"pendingCheckpointState":null}"#;
        let JavaAppEvent::Initialize(i) = parse_event(none).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                i.pending_checkpoint,
                i.pending_checkpoint_sub_sequence_number,
                i.pending_checkpoint_state
            ),
            (None, None, None)
        );
        assert_eq!(
            parse_event(
                r#"{"event":"prepared","shardId":"s","sequenceNumber":"49","subSequenceNumber":0}"#
            )
            .unwrap(),
            JavaAppEvent::Prepared(PreparedEvent {
                shard_id: "s".into(),
                sequence_number: "49".into(),
                sub_sequence_number: 0
            })
        );
        assert_eq!(
            parse_event(r#"{"event":"leaseLost","shardId":"s"}"#)
                .unwrap()
                .shard_id(),
            "s"
        );
        assert!(parse_event(r#"{"event":"nope","shardId":"s"}"#).is_err());
        assert!(parse_event("{").is_err());
    }

    #[test]
    fn only_complete_lines_are_read() {
        let dir = std::env::temp_dir().join(format!(
            "testkit-java-app-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events.jsonl");
        assert!(read_events(&file).unwrap().is_empty());
        fs::write(
            &file,
            "{\"event\":\"shardEnded\",\"shardId\":\"a\"}\n{\"event\":\"leaseL",
        )
        .unwrap();
        assert_eq!(
            read_events(&file).unwrap(),
            vec![JavaAppEvent::Lifecycle {
                event: "shardEnded".into(),
                shard_id: "a".into()
            }]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn args_are_name_value_pairs() {
        let args = JavaAppArgs {
            mode: JavaAppMode::Prepare {
                state: vec![0, 0xff],
            },
            stream: "s".into(),
            application: "a".into(),
            worker_id: "w".into(),
            region: "us-east-1".into(),
            kinesis_endpoint: "http://k".into(),
            dynamodb_endpoint: "http://d".into(),
            output: PathBuf::from("/o/events.jsonl"),
            failover_millis: 3000,
            idle_millis: 200,
            max_records: 100,
            shard_sync_interval_millis: 1000,
            initial_position: "TRIM_HORIZON".into(),
        };
        let got: Vec<String> = args
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(got.len() % 2, 0);
        let pairs: Vec<(&str, &str)> = got
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        assert!(pairs.contains(&("--mode", "prepare")));
        assert!(pairs.contains(&("--state-base64", "AP8=")));
        assert!(pairs.contains(&("--output", "/o/events.jsonl")));
        let report = JavaAppArgs {
            mode: JavaAppMode::Report,
            ..args
        };
        let got: Vec<String> = report
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(got.iter().any(|a| a == "report"));
        assert!(!got.iter().any(|a| a == "--state-base64"));
    }

    #[test]
    fn a_missing_javac_is_named_with_what_to_install() {
        let err = find_javac(Path::new("/nonexistent/jre/bin/java"), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`javac` not found"), "{err}");
        assert!(err.contains("/nonexistent/jre/bin/java"), "{err}");
        assert!(err.contains("needs a JDK"), "{err}");
        let on_path = PathBuf::from("/somewhere/javac");
        assert_eq!(
            find_javac(
                Path::new("/nonexistent/bin/java"),
                None,
                Some(on_path.clone())
            )
            .unwrap(),
            on_path
        );
    }

    /// Needs the kclpy-ext wheel (PyPI on first use) and a JDK.
    #[test]
    fn concurrent_compiles_agree_and_the_class_is_there() {
        let kcl = java_kcl::java_kcl().unwrap();
        let (dir, root) = crate::install::concurrent_installs("java-app-compile", move |root| {
            compile_into(
                root,
                &kcl,
                PENDING_CHECKPOINT_APP_CLASS,
                PENDING_CHECKPOINT_APP_SOURCE,
            )
        });
        assert!(dir
            .join(format!("{PENDING_CHECKPOINT_APP_CLASS}.class"))
            .is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_source_is_the_checked_in_file() {
        assert!(PENDING_CHECKPOINT_APP_SOURCE.contains(&format!(
            "public final class {PENDING_CHECKPOINT_APP_CLASS}"
        )));
    }
}
