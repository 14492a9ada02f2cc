//! The local services (kinesis-local + DynamoDB Local through [`testkit::LocalAws`]), started
//! on first use and shared by sections 3, 5 and 6, with the runtime they run on.

use anyhow::{anyhow, Result};
use std::future::Future;
use std::sync::Arc;
use testkit::LocalAws;

/// A multi-thread runtime plus, once started, the local services.
pub struct Services {
    runtime: tokio::runtime::Runtime,
    aws: Option<Result<Arc<LocalAws>, String>>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    /// Nothing started yet.
    pub fn new() -> Self {
        Services {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            aws: None,
        }
    }

    /// The runtime the services' clients must be used on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The services, started on the first call (a start-up failure is remembered).
    pub fn aws(&mut self) -> Result<Arc<LocalAws>> {
        if self.aws.is_none() {
            eprintln!("kcl-bench: starting the local services (testkit) ...");
            let started = self
                .runtime
                .block_on(LocalAws::start())
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"));
            if let Ok(aws) = &started {
                eprintln!("{}", aws.startup_report());
            }
            self.aws = Some(started);
        }
        match self.aws.as_ref().expect("set above") {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(anyhow!("the local services did not start: {e}")),
        }
    }

    /// Run `f` with the services on the runtime.
    pub fn run<F, Fut, T>(&mut self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<LocalAws>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let aws = self.aws()?;
        self.runtime.block_on(f(aws))
    }

    /// A Markdown paragraph on the services used (empty when none were started).
    pub fn describe(&self) -> String {
        match &self.aws {
            Some(Ok(aws)) => {
                let names: Vec<String> = aws
                    .services()
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.endpoint))
                    .collect();
                format!(
                    "Local services (sections 3, 5, 6): testkit backend {:?}: {}, on this same machine.\n",
                    aws.backend(),
                    names.join(", ")
                )
            }
            Some(Err(e)) => format!("Local services: failed to start: {e}\n"),
            None => String::new(),
        }
    }
}
