//! Which backend to use: the pure part of [`crate::LocalAws::start`], driven by environment
//! variables (read once into [`EnvSettings`]) and a Docker probe passed in as a closure.

use anyhow::{bail, Result};

/// Kinesis endpoint of already-running services (with [`ENV_DYNAMODB`]).
pub(crate) const ENV_KINESIS: &str = "KCL_KINESIS_ENDPOINT";
/// DynamoDB endpoint of already-running services (with [`ENV_KINESIS`]).
pub(crate) const ENV_DYNAMODB: &str = "KCL_DYNAMODB_ENDPOINT";
/// Optional override of the automatic choice: `env`, `localstack` or `local`.
pub(crate) const ENV_BACKEND: &str = "KCL_TESTKIT_BACKEND";
/// Where npm packages are installed (default `$XDG_CACHE_HOME/kcl-testkit`).
pub(crate) const ENV_CACHE: &str = "KCL_TESTKIT_CACHE";
/// The region used when `AWS_REGION` is not set.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// The environment variables that steer the backend choice, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvSettings {
    pub kinesis_endpoint: Option<String>,
    pub dynamodb_endpoint: Option<String>,
    pub backend: Option<String>,
    pub region: Option<String>,
}

impl EnvSettings {
    /// Reads the process environment. Empty values count as unset.
    pub(crate) fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `lookup` (a fake environment in unit tests). Empty values count as unset.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        EnvSettings {
            kinesis_endpoint: get(ENV_KINESIS),
            dynamodb_endpoint: get(ENV_DYNAMODB),
            backend: get(ENV_BACKEND),
            region: get("AWS_REGION"),
        }
    }

    /// `AWS_REGION`, else [`DEFAULT_REGION`].
    pub(crate) fn region(&self) -> String {
        self.region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_string())
    }
}

/// What [`crate::LocalAws::start`] will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Use the given endpoints; start nothing.
    Env { kinesis: String, dynamodb: String },
    /// Start LocalStack with testcontainers. `fallback_to_processes`: if that fails, warn and
    /// start the local processes instead (true unless LocalStack was asked for explicitly).
    LocalStack { fallback_to_processes: bool },
    /// Install (once) and start kinesis-local and DynamoDB Local as child processes.
    LocalProcesses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    Env,
    LocalStack,
    LocalProcesses,
}

fn parse_backend(value: &str) -> Result<Option<Forced>> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "auto" => None,
        "env" => Some(Forced::Env),
        "localstack" => Some(Forced::LocalStack),
        "local" | "processes" | "local-processes" | "localprocesses" => {
            Some(Forced::LocalProcesses)
        }
        other => bail!(
            "{ENV_BACKEND}={other:?} is not a backend: use `env`, `localstack`, `local` or `auto` \
             (or leave it unset for the automatic choice)"
        ),
    })
}

fn check_url(var: &str, value: &str) -> Result<()> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        bail!("{var}={value:?} is not an endpoint URL: expected e.g. http://127.0.0.1:4566")
    }
}

/// Decides the backend. `docker_answers` is called only when the automatic choice needs it.
pub(crate) fn plan(settings: &EnvSettings, docker_answers: impl FnOnce() -> bool) -> Result<Plan> {
    let endpoints = match (&settings.kinesis_endpoint, &settings.dynamodb_endpoint) {
        (Some(k), Some(d)) => {
            check_url(ENV_KINESIS, k)?;
            check_url(ENV_DYNAMODB, d)?;
            Some((k.clone(), d.clone()))
        }
        (None, None) => None,
        (Some(_), None) => bail!(
            "{ENV_KINESIS} is set but {ENV_DYNAMODB} is not: set both to use running services, \
             or neither to let testkit start local ones"
        ),
        (None, Some(_)) => bail!(
            "{ENV_DYNAMODB} is set but {ENV_KINESIS} is not: set both to use running services, \
             or neither to let testkit start local ones"
        ),
    };
    let forced = match &settings.backend {
        Some(b) => parse_backend(b)?,
        None => None,
    };
    Ok(match forced {
        Some(Forced::Env) => match endpoints {
            Some((kinesis, dynamodb)) => Plan::Env { kinesis, dynamodb },
            None => bail!("{ENV_BACKEND}=env needs {ENV_KINESIS} and {ENV_DYNAMODB}"),
        },
        Some(Forced::LocalStack) => Plan::LocalStack {
            fallback_to_processes: false,
        },
        Some(Forced::LocalProcesses) => Plan::LocalProcesses,
        None => match endpoints {
            Some((kinesis, dynamodb)) => Plan::Env { kinesis, dynamodb },
            None if docker_answers() => Plan::LocalStack {
                fallback_to_processes: true,
            },
            None => Plan::LocalProcesses,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> EnvSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvSettings::from_lookup(|k| map.get(k).cloned())
    }

    fn no_docker() -> bool {
        false
    }

    #[test]
    fn both_endpoints_select_env_without_probing_docker() {
        let s = settings(&[
            (ENV_KINESIS, "http://127.0.0.1:4567"),
            (ENV_DYNAMODB, " http://127.0.0.1:8000 "),
        ]);
        let p = plan(&s, || panic!("docker must not be probed")).unwrap();
        assert_eq!(
            p,
            Plan::Env {
                kinesis: "http://127.0.0.1:4567".into(),
                dynamodb: "http://127.0.0.1:8000".into()
            }
        );
    }

    #[test]
    fn one_endpoint_alone_is_an_error_naming_the_missing_one() {
        let s = settings(&[(ENV_KINESIS, "http://127.0.0.1:4567")]);
        let e = plan(&s, no_docker).unwrap_err().to_string();
        assert!(e.contains("KCL_DYNAMODB_ENDPOINT is not"), "{e}");
        let s = settings(&[(ENV_DYNAMODB, "http://127.0.0.1:8000")]);
        let e = plan(&s, no_docker).unwrap_err().to_string();
        assert!(e.contains("KCL_KINESIS_ENDPOINT is not"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[(ENV_KINESIS, ""), (ENV_DYNAMODB, "  "), ("AWS_REGION", "")]);
        assert_eq!(s, EnvSettings::default());
        assert_eq!(s.region(), "us-east-1");
        assert_eq!(plan(&s, no_docker).unwrap(), Plan::LocalProcesses);
    }

    #[test]
    fn endpoints_must_be_urls() {
        let s = settings(&[
            (ENV_KINESIS, "127.0.0.1:4567"),
            (ENV_DYNAMODB, "http://x:1"),
        ]);
        let e = plan(&s, no_docker).unwrap_err().to_string();
        assert!(e.contains("not an endpoint URL"), "{e}");
    }

    #[test]
    fn docker_decides_between_localstack_and_processes() {
        let s = settings(&[]);
        assert_eq!(
            plan(&s, || true).unwrap(),
            Plan::LocalStack {
                fallback_to_processes: true
            }
        );
        assert_eq!(plan(&s, no_docker).unwrap(), Plan::LocalProcesses);
    }

    #[test]
    fn backend_override() {
        let s = settings(&[(ENV_BACKEND, "local")]);
        assert_eq!(
            plan(&s, || panic!("not probed")).unwrap(),
            Plan::LocalProcesses
        );
        let s = settings(&[(ENV_BACKEND, "LocalStack")]);
        assert_eq!(
            plan(&s, no_docker).unwrap(),
            Plan::LocalStack {
                fallback_to_processes: false
            }
        );
        let s = settings(&[(ENV_BACKEND, "env")]);
        assert!(plan(&s, no_docker).is_err());
        let s = settings(&[(ENV_BACKEND, "auto")]);
        assert_eq!(plan(&s, no_docker).unwrap(), Plan::LocalProcesses);
        let s = settings(&[(ENV_BACKEND, "kubernetes")]);
        let e = plan(&s, no_docker).unwrap_err().to_string();
        assert!(e.contains("not a backend"), "{e}");
    }

    #[test]
    fn region_from_env() {
        assert_eq!(
            settings(&[("AWS_REGION", "eu-west-1")]).region(),
            "eu-west-1"
        );
    }
}
