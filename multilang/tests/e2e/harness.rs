//! Running the `kcl-multilang` binary against the local services with real client packages,
//! and reading what the processors recorded.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use kinesis_client::lease::{DynamoDbLeaseStore, Lease, LeaseStore};
use kinesis_client::Checkpoint;
use testkit::clients::{self, procs, KclPy};
use testkit::{LocalAws, PutResult};

/// The daemon under test.
pub const DAEMON: &str = env!("CARGO_BIN_EXE_kcl-multilang");

/// Generous deadline for anything the daemon should do "soon" on this 2-core machine.
pub const LIMIT: Duration = Duration::from_secs(60);

/// `multilang/`.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `multilang/samples/python/recording_processor.py`.
pub fn recording_processor() -> PathBuf {
    manifest_dir().join("samples/python/recording_processor.py")
}

/// `multilang/samples/node/sample_processor.js`.
pub fn node_processor() -> PathBuf {
    manifest_dir().join("samples/node/sample_processor.js")
}

/// `properties/` at the workspace root.
pub fn properties_dir() -> PathBuf {
    manifest_dir().join("../properties")
}

/// amazon-kclpy (installed into the testkit cache on first use). Fails, never skips, when
/// python3 or pip is missing.
pub async fn kclpy() -> Result<KclPy> {
    tokio::task::spawn_blocking(clients::kclpy).await?
}

/// `NODE_PATH` for aws-kcl and the `node` binary. Fails when node or npm is missing.
pub async fn aws_kcl() -> Result<(PathBuf, PathBuf)> {
    let node_modules = tokio::task::spawn_blocking(clients::aws_kcl_node).await??;
    Ok((clients::node()?, node_modules))
}

/// `executableName` from program and arguments (the daemon splits it on spaces).
pub fn command_line(parts: &[&Path]) -> String {
    parts
        .iter()
        .map(|p| {
            let s = p.display().to_string();
            assert!(
                !s.contains(' '),
                "executableName is split on spaces; this path has one: {s}"
            );
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A temporary directory for one test: removed when the test passes, kept (and named) when
/// it fails.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch> {
        let path = std::env::temp_dir().join(testkit::unique_name(&format!("kcl-e2e-{name}")));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KCL_E2E_KEEP").is_some() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A properties file: an optional base text (e.g. a sample file) plus `key = value` lines
/// appended after it (in a properties file the later entry of a key wins).
#[derive(Debug, Clone, Default)]
pub struct Props {
    base: String,
    entries: Vec<(String, String)>,
}

impl Props {
    /// The settings every e2e test uses: the local services, static test credentials, short
    /// timings, TRIM_HORIZON, no CloudWatch metrics.
    pub fn new(aws: &LocalAws, stream: &str, app: &str, executable: &str) -> Props {
        let region = aws
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Props::default()
            .set("executableName", executable)
            .set("streamName", stream)
            .set("applicationName", app)
            .set(
                "AwsCredentialsProvider",
                "KclStaticCredentialsProvider|test|test",
            )
            .set("regionName", &region)
            .set("kinesisEndpoint", aws.kinesis_endpoint())
            .set("dynamoDBEndpoint", aws.dynamodb_endpoint())
            .set("initialPositionInStream", "TRIM_HORIZON")
            .set("failoverTimeMillis", "3000")
            .set("idleTimeBetweenReadsInMillis", "200")
            .set("parentShardPollIntervalMillis", "500")
            .set("shardSyncIntervalMillis", "1000")
            .set("taskBackoffTimeMillis", "200")
            .set("shutdownGraceMillis", "15000")
            // No CloudWatch here (the metrics tests point the exporter at a local one).
            .set("metricsLevel", "NONE")
    }

    /// `base` (the text of a properties file) followed by [`Props::new`]'s settings.
    pub fn on_top_of(
        base: &str,
        aws: &LocalAws,
        stream: &str,
        app: &str,
        executable: &str,
    ) -> Props {
        Props {
            base: base.to_string(),
            ..Props::new(aws, stream, app, executable)
        }
    }

    /// The same without the entries of `key`.
    pub fn without(mut self, key: &str) -> Props {
        self.entries.retain(|(k, _)| k != key);
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Props {
        self.entries.push((key.to_string(), value.to_string()));
        self
    }

    pub fn render(&self) -> String {
        let mut s = self.base.clone();
        if !s.is_empty() {
            s.push_str("\n# ---- e2e test settings (later entries win) ----\n");
        }
        for (k, v) in &self.entries {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }

    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(path, self.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

/// A running `kcl-multilang` process. Dropping it kills the daemon and its children; if the
/// test is failing, the daemon's log is printed first.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts the daemon on `properties` in `dir`, with extra environment variables; its
    /// stdout and stderr go to `<dir>/daemon.log`.
    pub fn start(dir: &Path, properties: &Path, env: &[(&str, OsString)]) -> Result<Daemon> {
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(DAEMON);
        cmd.arg("--properties-file")
            .arg(properties)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("KCL_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        procs::die_with_spawning_thread(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {DAEMON}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the daemon exited at once"))?;
        Ok(Daemon {
            child,
            pid,
            log,
            status: None,
        })
    }

    /// Everything the daemon wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Fails (with the log) if the daemon is not running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("the daemon exited ({status}) but should be running");
        }
    }

    /// The daemon's child processes (one per shard it processes).
    pub fn children(&self) -> Vec<u32> {
        procs::children_of(self.pid)
            .into_iter()
            .filter(|&p| procs::is_running(p))
            .collect()
    }

    /// Waits for the daemon to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| anyhow!("the daemon did not exit within {within:?}"))??;
        self.status = Some(status);
        Ok(status)
    }

    /// SIGTERM, then wait for the exit; returns the status and how long the exit took.
    pub async fn terminate(&mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        let sent = Instant::now();
        if !procs::sigterm(self.pid) {
            bail!("cannot send SIGTERM to the daemon (pid {})", self.pid);
        }
        let status = self.wait_exit(within).await?;
        Ok((status, sent.elapsed()))
    }

    /// Polls `check` (every 100 ms) until it returns `Some`, failing after `limit` or as soon
    /// as the daemon exits.
    pub async fn until<T, F, Fut>(&mut self, limit: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if let Some(status) = self.exited() {
                panic!("the daemon exited ({status}) while waiting for: {what}");
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the daemon's log contains `needle`.
    pub async fn until_logged(&mut self, limit: Duration, needle: &str) {
        let log = self.log.clone();
        self.until(limit, &format!("the daemon to log {needle:?}"), || {
            let found = std::fs::read_to_string(&log)
                .map(|t| t.contains(needle))
                .unwrap_or(false);
            std::future::ready(found.then_some(()))
        })
        .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(300);
            eprintln!(
                "---- daemon log {} (last {} of {} lines) ----\n{}\n---- end of daemon log ----",
                self.log.display(),
                lines.len() - from,
                lines.len(),
                lines[from..].join("\n")
            );
        }
        if self.exited().is_none() {
            let children = procs::children_of(self.pid);
            procs::sigkill(self.pid);
            for c in children {
                procs::sigkill(c);
            }
        }
    }
}

/// Fails if any of `pids` is still running.
pub fn assert_all_gone(pids: &[u32]) {
    let alive: Vec<(u32, Option<String>)> = pids
        .iter()
        .filter(|&&p| procs::is_running(p))
        .map(|&p| (p, procs::cmdline(p)))
        .collect();
    assert!(alive.is_empty(), "processes still running: {alive:?}");
}

/// One line a processor recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `<shardId> <sequenceNumber> <base64 data>`.
    Record {
        shard: String,
        seq: String,
        data: Vec<u8>,
    },
    /// `#<kind> <shardId> <args...>`.
    Event {
        kind: String,
        shard: String,
        args: Vec<String>,
    },
}

/// What the processors recorded (`KCL_SAMPLE_OUTPUT`), in file order (= global order).
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub lines: Vec<Line>,
}

impl Output {
    /// Reads the file; a missing file is empty, a last line without newline is ignored.
    pub fn read(path: &Path) -> Output {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        let lines = complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let parts: Vec<&str> = l.split(' ').collect();
                if let Some(kind) = parts[0].strip_prefix('#') {
                    Line::Event {
                        kind: kind.to_string(),
                        shard: parts.get(1).unwrap_or(&"").to_string(),
                        args: parts.iter().skip(2).map(|s| s.to_string()).collect(),
                    }
                } else {
                    assert_eq!(parts.len(), 3, "bad record line {l:?}");
                    Line::Record {
                        shard: parts[0].to_string(),
                        seq: parts[1].to_string(),
                        data: base64::engine::general_purpose::STANDARD
                            .decode(parts[2])
                            .unwrap_or_else(|e| panic!("bad base64 in {l:?}: {e}")),
                    }
                }
            })
            .collect();
        Output { lines }
    }

    /// `(line index, shard, seq, data)` of every record line.
    pub fn records(&self) -> impl Iterator<Item = (usize, &str, &str, &[u8])> {
        self.lines.iter().enumerate().filter_map(|(i, l)| match l {
            Line::Record { shard, seq, data } => Some((i, shard.as_str(), seq.as_str(), &data[..])),
            Line::Event { .. } => None,
        })
    }

    /// Deliveries per shard, in delivery order: `(seq, data)`.
    pub fn by_shard(&self) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
        let mut out: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (_, shard, seq, data) in self.records() {
            out.entry(shard.to_string())
                .or_default()
                .push((seq.to_string(), data.to_vec()));
        }
        out
    }

    /// `(line index, shard, args)` of every event of `kind`.
    pub fn events(&self, kind: &str) -> Vec<(usize, String, Vec<String>)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Line::Event {
                    kind: k,
                    shard,
                    args,
                } if k == kind => Some((i, shard.clone(), args.clone())),
                _ => None,
            })
            .collect()
    }

    /// Events of `kind` for `shard`.
    pub fn shard_events(&self, kind: &str, shard: &str) -> Vec<(usize, Vec<String>)> {
        self.events(kind)
            .into_iter()
            .filter(|(_, s, _)| s == shard)
            .map(|(i, _, a)| (i, a))
            .collect()
    }

    /// Distinct sequence numbers delivered (over all shards).
    pub fn distinct(&self) -> std::collections::BTreeSet<(String, String)> {
        self.records()
            .map(|(_, shard, seq, _)| (shard.to_string(), seq.to_string()))
            .collect()
    }

    /// The deliveries of `shard` split by child process (each `#initialize` starts a new one):
    /// `(starting checkpoint, pid, records)`.
    pub fn incarnations(&self, shard: &str) -> Vec<(String, u32, Vec<String>)> {
        let mut out: Vec<(String, u32, Vec<String>)> = Vec::new();
        for l in &self.lines {
            match l {
                Line::Event {
                    kind,
                    shard: s,
                    args,
                } if kind == "initialize" && s == shard => {
                    out.push((args[0].clone(), args[1].parse().unwrap_or(0), Vec::new()));
                }
                Line::Record { shard: s, seq, .. } if s == shard => {
                    out.last_mut()
                        .unwrap_or_else(|| panic!("{shard}: record {seq} before any initialize"))
                        .2
                        .push(seq.clone());
                }
                _ => {}
            }
        }
        out
    }
}

/// Kinesis sequence numbers compare as decimal integers.
pub fn seq_cmp(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// What each shard holds after `put`, in sequence order: `(seq, data)`.
pub fn expected_by_shard(put: &[PutResult]) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut out: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for p in put {
        out.entry(p.shard_id.clone())
            .or_default()
            .push((p.sequence_number.clone(), p.data.clone()));
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| seq_cmp(&a.0, &b.0));
    }
    out
}

/// True when every put record has been delivered at least once.
pub fn all_delivered(out: &Output, put: &[PutResult]) -> bool {
    let got = out.distinct();
    put.iter()
        .all(|p| got.contains(&(p.shard_id.clone(), p.sequence_number.clone())))
}

/// The lease table of `app`.
pub fn lease_store(aws: &LocalAws, table: &str) -> DynamoDbLeaseStore {
    DynamoDbLeaseStore::new(aws.dynamodb_client(), table)
}

/// Every lease, by shard id (empty if the table does not exist yet).
pub async fn leases(aws: &LocalAws, table: &str) -> BTreeMap<String, Lease> {
    lease_store(aws, table)
        .list_leases()
        .await
        .map(|ls| ls.into_iter().map(|l| (l.key.clone(), l)).collect())
        .unwrap_or_default()
}

/// The sequence-number checkpoint of a lease, if it has one.
pub fn checkpoint_seq(lease: &Lease) -> Option<String> {
    match &lease.checkpoint {
        Checkpoint::Sequence(s) => Some(s.sequence_number().to_string()),
        _ => None,
    }
}

/// The environment for a kclpy child.
pub fn python_env(kclpy: &KclPy, output: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("PYTHONPATH", kclpy.pythonpath_env()),
        ("KCL_SAMPLE_OUTPUT", output.as_os_str().to_owned()),
    ]
}

/// Writes a kclpy processor script that has the recording processor imported as `rp`
/// (`SAMPLES_DIR` is set before `body`, which imports it); returns its path.
pub fn recording_variant(scratch: &Scratch, name: &str, body: &str) -> Result<PathBuf> {
    let script = scratch.file(name);
    let samples = recording_processor().parent().unwrap().to_path_buf();
    std::fs::write(
        &script,
        format!("SAMPLES_DIR = {:?}\n{body}", samples.display().to_string()),
    )?;
    Ok(script)
}

/// Splits the stream's first shard at the middle of its hash key range and waits for the
/// stream to be active again; returns the parent and its two children.
pub async fn split_first_shard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<(String, Vec<String>)> {
    use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards()
        .to_vec();
    let parent = shards[0].shard_id().to_string();
    let range = shards[0].hash_key_range().context("hash key range")?;
    let mid =
        (range.starting_hash_key().parse::<u128>()? + range.ending_hash_key().parse::<u128>()?) / 2;
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&parent)
        .new_starting_hash_key(mid.to_string())
        .send()
        .await?;
    testkit::wait_stream_active(kinesis, stream).await?;
    let children: Vec<String> = kinesis
        .list_shards()
        .stream_name(stream)
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()?,
        )
        .send()
        .await?
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id() == Some(parent.as_str()))
        .map(|s| s.shard_id().to_string())
        .collect();
    if children.len() != 2 {
        bail!("a split makes two children; found {children:?}");
    }
    Ok((parent, children))
}

/// Creates a stream with `shards` shards and puts `n` numbered records into it.
pub async fn stream_with_records(
    aws: &LocalAws,
    name: &str,
    shards: i32,
    prefix: &str,
    n: usize,
) -> Result<(String, Vec<PutResult>)> {
    let kinesis = aws.kinesis_client();
    let stream = testkit::unique_name(name);
    testkit::create_stream(&kinesis, &stream, shards).await?;
    let put = testkit::put_records(&kinesis, &stream, testkit::numbered_records(prefix, n)).await?;
    Ok((stream, put))
}
