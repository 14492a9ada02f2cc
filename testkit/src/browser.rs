//! A real browser for page tests: Debian's headless Chromium driven through ChromeDriver
//! (WebDriver) by `fantoccini`.
//!
//! [`Browser::start`] installs the packages `chromium` and `chromium-driver` with apt-get when
//! `/usr/bin/chromium` or `/usr/bin/chromedriver` is missing (once, under a file lock shared by
//! concurrent test processes; this needs root, as on CI), or uses `$CHROMIUM` and
//! `$CHROMEDRIVER`. Where neither works it fails with a message that says what to install.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

pub use fantoccini;

use crate::install::{acquire, cache_root};
use crate::process::spawn_tied;

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long ChromeDriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(30);

/// Headless Chromium under ChromeDriver. Dropping it ends both.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_pid", &self.driver.id())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Result<Browser> {
        let (chromium, chromedriver) = tokio::task::spawn_blocking(ensure_installed)
            .await
            .context("the install task panicked")??;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = spawn_tied(command)
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let profile =
            std::env::temp_dir().join(format!("kcl-chromium-{}-{port}", std::process::id()));
        // The probe's flags: without the background-networking ones, Chromium's connections to
        // Google's hosts fail, many at a time, on a closed network.
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < DRIVER_START => {
                    tracing::debug!(error = %e, "ChromeDriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!(
                    "ChromeDriver ({}) did not start a Chromium session within {DRIVER_START:?}: {e}",
                    chromedriver.display()
                ),
            }
        };
        Ok(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// End the session and ChromeDriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Chromium and ChromeDriver, installed with apt-get if missing. Blocking.
pub fn ensure_installed() -> Result<(PathBuf, PathBuf)> {
    let chromium = env_path("CHROMIUM", DEFAULT_CHROMIUM);
    let chromedriver = env_path("CHROMEDRIVER", DEFAULT_CHROMEDRIVER);
    if chromium.is_file() && chromedriver.is_file() {
        return Ok((chromium, chromedriver));
    }
    let missing = || {
        format!(
            "this test drives a real browser and needs Chromium ({}) and ChromeDriver ({}): \
             install them (`apt-get install chromium chromium-driver` on Debian) or set \
             CHROMIUM and CHROMEDRIVER to their paths",
            chromium.display(),
            chromedriver.display()
        )
    };
    if chromium != Path::new(DEFAULT_CHROMIUM) || chromedriver != Path::new(DEFAULT_CHROMEDRIVER) {
        bail!("{}", missing());
    }
    let root = cache_root()?;
    std::fs::create_dir_all(&root)?;
    let lock_path = root.join(".chromium-apt.lock");
    let lock = File::create(&lock_path)?;
    acquire(&lock, &lock_path)?;
    if chromium.is_file() && chromedriver.is_file() {
        return Ok((chromium, chromedriver));
    }
    let log = root.join("chromium-apt.log");
    tracing::info!(log = %log.display(), "installing Chromium and ChromeDriver with apt-get");
    let apt = |args: &[&str]| -> Result<()> {
        let out = File::options().create(true).append(true).open(&log)?;
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(missing)?;
        if !status.success() {
            bail!(
                "{}; `apt-get {}` failed ({status}), its output: {}\n{}",
                missing(),
                args.join(" "),
                log.display(),
                crate::install::tail(&log)
            );
        }
        Ok(())
    };
    apt(&["-qq", "update"])?;
    apt(&[
        "-y",
        "-qq",
        "--no-install-recommends",
        "install",
        "chromium",
        "chromium-driver",
    ])?;
    if !(chromium.is_file() && chromedriver.is_file()) {
        bail!(
            "{} (apt-get installed the packages, yet they are not there)",
            missing()
        );
    }
    Ok((chromium, chromedriver))
}
