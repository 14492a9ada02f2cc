//! AWS credentials provider specifications (`AwsCredentialsProvider = ...`) and their mapping
//! onto `aws-config` providers.
//!
//! The Java daemon resolves each comma-separated entry `Name[|arg...]` to a Java class by
//! reflection (`software.amazon.kinesis.multilang.auth.<Name>`,
//! `software.amazon.awssdk.auth.credentials.<Name>`, then the name verbatim) and chains the
//! ones it can build. We recognise the same names, short or fully qualified, and map each to
//! the Rust SDK's counterpart:
//!
//! | Properties name | [`CredentialsSpec`] | `aws-config` provider |
//! |---|---|---|
//! | `DefaultCredentialsProvider` (v1 `DefaultAWSCredentialsProviderChain`) | `Default` | `default_provider::credentials::DefaultCredentialsChain` |
//! | `EnvironmentVariableCredentialsProvider` | `Environment` | `environment::EnvironmentVariableCredentialsProvider` |
//! | `ProfileCredentialsProvider[|profile]` | `Profile` | `profile::ProfileFileCredentialsProvider` |
//! | `StsAssumeRoleCredentialsProvider|roleArn|sessionName[|externalId=..][|endpointRegion=..][|endpoint=url^region]` (also `KclStsAssumeRoleCredentialsProvider`, `KclSTSAssumeRoleSessionCredentialsProvider`) | `StsAssumeRole` | `sts::AssumeRoleProvider` (base credentials: the default chain, as Java's `StsClient.builder()`) |
//! | `WebIdentityTokenFileCredentialsProvider` | `WebIdentity` | `web_identity_token::WebIdentityTokenCredentialsProvider` |
//! | `ContainerCredentialsProvider` | `Container` | `ecs::EcsCredentialsProvider` |
//! | `InstanceProfileCredentialsProvider` | `InstanceProfile` | `imds::credentials::ImdsCredentialsProvider` |
//! | `KclStaticCredentialsProvider|accessKeyId|secretAccessKey[|sessionToken]` | `Static` | fixed `Credentials` |
//!
//! Not supported, skipped with a warning like Java skips names it cannot load:
//! `SystemPropertyCredentialsProvider` (there are no JVM system properties; use environment
//! variables), `AnonymousCredentialsProvider` (Kinesis and DynamoDB reject unsigned requests),
//! `ProcessCredentialsProvider` (Java cannot build it from a properties value either) and any
//! custom Java class. A list in which nothing is usable is an error here (Java builds an empty
//! chain that fails at the first request).

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;

/// One credentials provider of a (possibly chained) `AwsCredentialsProvider` value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsSpec {
    /// The SDK's default chain: environment, profile, web identity, ECS, IMDS.
    Default,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    Environment,
    /// A named profile from `~/.aws/config` and `~/.aws/credentials`.
    Profile {
        /// Profile name; `None` uses `AWS_PROFILE` or `default`.
        name: Option<String>,
    },
    /// STS `AssumeRole`, authorised by the default chain.
    StsAssumeRole {
        /// ARN of the role to assume.
        role_arn: String,
        /// Role session name.
        session_name: String,
        /// `externalId=` nested property.
        external_id: Option<String>,
        /// `endpointRegion=` nested property, or the signing region of `endpoint=`.
        endpoint_region: Option<String>,
        /// The URL part of the `endpoint=<url>^<signingRegion>` nested property.
        endpoint_url: Option<String>,
    },
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (EKS IRSA and similar).
    WebIdentity,
    /// ECS/EKS container credentials (`AWS_CONTAINER_CREDENTIALS_*`).
    Container,
    /// EC2 instance metadata service.
    InstanceProfile,
    /// Fixed keys (`KclStaticCredentialsProvider`); meant for local emulators and tests.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key (never printed by `Debug`).
        secret_access_key: String,
        /// Optional session token (never printed by `Debug`).
        session_token: Option<String>,
    },
}

impl std::fmt::Debug for CredentialsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("Default"),
            Self::Environment => f.write_str("Environment"),
            Self::Profile { name } => f.debug_struct("Profile").field("name", name).finish(),
            Self::StsAssumeRole {
                role_arn,
                session_name,
                external_id,
                endpoint_region,
                endpoint_url,
            } => f
                .debug_struct("StsAssumeRole")
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .field("external_id", external_id)
                .field("endpoint_region", endpoint_region)
                .field("endpoint_url", endpoint_url)
                .finish(),
            Self::WebIdentity => f.write_str("WebIdentity"),
            Self::Container => f.write_str("Container"),
            Self::InstanceProfile => f.write_str("InstanceProfile"),
            Self::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"** redacted **")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "** redacted **"),
                )
                .finish(),
        }
    }
}

impl CredentialsSpec {
    /// A short name for logs (the Java simple class name).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Default => "DefaultCredentialsProvider",
            Self::Environment => "EnvironmentVariableCredentialsProvider",
            Self::Profile { .. } => "ProfileCredentialsProvider",
            Self::StsAssumeRole { .. } => "StsAssumeRoleCredentialsProvider",
            Self::WebIdentity => "WebIdentityTokenFileCredentialsProvider",
            Self::Container => "ContainerCredentialsProvider",
            Self::InstanceProfile => "InstanceProfileCredentialsProvider",
            Self::Static { .. } => "KclStaticCredentialsProvider",
        }
    }
}

/// The result of parsing an `AwsCredentialsProvider` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedProviders {
    /// The providers to chain, in order; never empty.
    pub specs: Vec<CredentialsSpec>,
    /// Entries that were skipped, and why (to be logged as warnings).
    pub warnings: Vec<String>,
    /// Informational notes, e.g. an SDK v1 name mapped to its v2 counterpart.
    pub info: Vec<String>,
}

/// Why an `AwsCredentialsProvider` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsSpecError {
    /// A recognised provider with the wrong arguments.
    #[error("{provider}: {detail}")]
    BadArguments {
        /// The provider name as written.
        provider: String,
        /// What is wrong.
        detail: String,
    },
    /// Every entry was empty or unsupported.
    #[error("no supported credentials provider in the list{}", skipped_suffix(.skipped))]
    NoUsableProvider {
        /// The reasons each entry was skipped.
        skipped: Vec<String>,
    },
}

fn skipped_suffix(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

const PACKAGE_PREFIXES: &[&str] = &[
    "software.amazon.kinesis.multilang.auth.",
    "software.amazon.awssdk.auth.credentials.",
    "software.amazon.awssdk.services.sts.auth.",
    "com.amazonaws.auth.",
];

/// A credentials value fit for a message or a log line: provider names are kept, every
/// `|argument` (access keys, secrets, session tokens, external ids) becomes `***`.
///
/// `KclStaticCredentialsProvider|AKIA..|secret|token` → `KclStaticCredentialsProvider|***|***|***`.
pub fn redact_provider_list(value: &str) -> String {
    value
        .split(',')
        .map(|item| {
            let mut parts = item.split('|');
            let name = parts.next().unwrap_or_default();
            let redacted: String = parts.map(|_| "|***").collect();
            format!("{name}{redacted}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `Name[|arg...][, Name2[|arg...]...]` into a provider chain.
pub fn parse_provider_list(value: &str) -> Result<ParsedProviders, CredentialsSpecError> {
    let mut parsed = ParsedProviders {
        specs: Vec::new(),
        warnings: Vec::new(),
        info: Vec::new(),
    };
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split('|').map(str::trim);
        let written = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let short = PACKAGE_PREFIXES
            .iter()
            .find_map(|p| written.strip_prefix(p))
            .unwrap_or(written);
        let no_args = |spec: CredentialsSpec, parsed: &mut ParsedProviders| {
            if !args.is_empty() {
                parsed.warnings.push(format!(
                    "{written}: takes no arguments; ignoring {} argument(s) (not shown: they may be secrets)",
                    args.len()
                ));
            }
            spec
        };
        let spec = match short {
            "DefaultCredentialsProvider" => no_args(CredentialsSpec::Default, &mut parsed),
            "DefaultAWSCredentialsProviderChain" => {
                parsed.info.push(format!(
                    "{written} is the AWS SDK v1 name; using DefaultCredentialsProvider (the SDK default chain)"
                ));
                no_args(CredentialsSpec::Default, &mut parsed)
            }
            "EnvironmentVariableCredentialsProvider" => {
                no_args(CredentialsSpec::Environment, &mut parsed)
            }
            "ProfileCredentialsProvider" => {
                if args.len() > 1 {
                    parsed.warnings.push(format!(
                        "{written}: only a profile name is accepted; ignoring {} more argument(s) (not shown: they may be secrets)",
                        args.len() - 1
                    ));
                }
                CredentialsSpec::Profile {
                    name: args
                        .first()
                        .filter(|a| !a.is_empty())
                        .map(|a| a.to_string()),
                }
            }
            "StsAssumeRoleCredentialsProvider"
            | "KclStsAssumeRoleCredentialsProvider"
            | "KclSTSAssumeRoleSessionCredentialsProvider"
            | "STSAssumeRoleSessionCredentialsProvider" => {
                parse_assume_role(written, &args, &mut parsed.warnings)?
            }
            "WebIdentityTokenFileCredentialsProvider" | "WebIdentityTokenCredentialsProvider" => {
                no_args(CredentialsSpec::WebIdentity, &mut parsed)
            }
            "ContainerCredentialsProvider" | "EC2ContainerCredentialsProviderWrapper" => {
                no_args(CredentialsSpec::Container, &mut parsed)
            }
            "InstanceProfileCredentialsProvider" => {
                no_args(CredentialsSpec::InstanceProfile, &mut parsed)
            }
            "KclStaticCredentialsProvider" => match args.as_slice() {
                [ak, sk] | [ak, sk, _] if !ak.is_empty() && !sk.is_empty() => {
                    CredentialsSpec::Static {
                        access_key_id: ak.to_string(),
                        secret_access_key: sk.to_string(),
                        session_token: args.get(2).filter(|t| !t.is_empty()).map(|t| t.to_string()),
                    }
                }
                _ => {
                    return Err(CredentialsSpecError::BadArguments {
                        provider: written.to_string(),
                        detail: format!(
                        "expected accessKeyId|secretAccessKey[|sessionToken], got {} argument(s)",
                        args.len()
                    ),
                    })
                }
            },
            "SystemPropertyCredentialsProvider" | "SystemPropertiesCredentialsProvider" => {
                parsed.warnings.push(format!(
                    "{written} is not supported (there are no JVM system properties); skipped. Use EnvironmentVariableCredentialsProvider"
                ));
                continue;
            }
            "AnonymousCredentialsProvider" => {
                parsed.warnings.push(format!(
                    "{written} is not supported (Kinesis and DynamoDB require signed requests); skipped"
                ));
                continue;
            }
            _ => {
                parsed.warnings.push(format!(
                    "{written} is not a credentials provider this daemon knows (custom Java classes cannot be loaded); skipped"
                ));
                continue;
            }
        };
        parsed.specs.push(spec);
    }
    if parsed.specs.is_empty() {
        return Err(CredentialsSpecError::NoUsableProvider {
            skipped: std::mem::take(&mut parsed.warnings),
        });
    }
    Ok(parsed)
}

fn parse_assume_role(
    written: &str,
    args: &[&str],
    warnings: &mut Vec<String>,
) -> Result<CredentialsSpec, CredentialsSpecError> {
    let bad = |detail: String| CredentialsSpecError::BadArguments {
        provider: written.to_string(),
        detail,
    };
    let [role_arn, session_name, nested @ ..] = args else {
        return Err(bad(format!(
            "expected roleArn|roleSessionName[|externalId=..][|endpointRegion=..][|endpoint=url^region], got {} argument(s)",
            args.len()
        )));
    };
    if !role_arn.starts_with("arn:") || role_arn.split(':').count() < 6 {
        return Err(bad(format!(
            "role ARN {role_arn:?} is not an ARN (expected arn:aws:iam::123456789012:role/name)"
        )));
    }
    if session_name.is_empty() {
        return Err(bad("the role session name is empty".to_string()));
    }
    let mut external_id = None;
    let mut endpoint_region = None;
    let mut endpoint_url = None;
    for param in nested {
        let tokens: Vec<&str> = param.split('=').collect();
        match tokens.as_slice() {
            ["externalId", v] => external_id = Some(v.to_string()),
            ["endpointRegion", v] => endpoint_region = Some(v.to_string()),
            ["endpoint", v] => {
                let Some((url, region)) = v.split_once('^').filter(|(_, r)| !r.contains('^'))
                else {
                    return Err(bad(format!(
                        "endpoint={v:?}: expected endpoint=<url>^<signingRegion>"
                    )));
                };
                let url = if url.starts_with("http://") || url.starts_with("https://") {
                    url.to_string()
                } else {
                    format!("https://{url}")
                };
                endpoint_url = Some(url);
                endpoint_region = Some(region.to_string());
            }
            [key, _] => warnings.push(format!(
                "{written}: unsupported nested property {key:?} ignored"
            )),
            _ => warnings.push(format!(
                "{written}: an argument is not a nested key=value property; ignored (not shown: it may be a secret)"
            )),
        }
    }
    Ok(CredentialsSpec::StsAssumeRole {
        role_arn: role_arn.to_string(),
        session_name: session_name.to_string(),
        external_id,
        endpoint_region,
        endpoint_url,
    })
}

/// Builds one credentials provider from a chain of specs.
///
/// `region` (from `regionName`) is given to providers that call AWS (STS, IMDS, ...). A single
/// spec is used directly; several become a `CredentialsProviderChain` tried in order. An empty
/// slice means the default chain. Providers fetch credentials lazily, and SDK clients cache
/// what they return. Building itself does no network I/O when `region` is given; without it,
/// `Default` and `StsAssumeRole` (without `endpointRegion`) resolve the region through the
/// SDK's default region chain (environment, profile, then instance metadata), as
/// `aws_config::load_defaults` does.
pub async fn build_provider(
    specs: &[CredentialsSpec],
    region: Option<&str>,
) -> SharedCredentialsProvider {
    let region = region.map(|r| Region::new(r.to_string()));
    let mut built = Vec::with_capacity(specs.len());
    for spec in specs {
        built.push((spec.name(), build_one(spec, region.clone()).await));
    }
    let mut iter = built.into_iter();
    match (iter.next(), iter.len()) {
        (None, _) => build_one(&CredentialsSpec::Default, region).await,
        (Some((_, only)), 0) => only,
        (Some((name, first)), _) => {
            let chain = iter.fold(
                CredentialsProviderChain::first_try(name, first),
                |c, (n, p)| c.or_else(n, p),
            );
            SharedCredentialsProvider::new(chain)
        }
    }
}

async fn build_one(spec: &CredentialsSpec, region: Option<Region>) -> SharedCredentialsProvider {
    let provider_config = ProviderConfig::default()
        .with_http_client(crate::https::https_client())
        .with_region(region.clone());
    match spec {
        CredentialsSpec::Default => {
            let mut builder = DefaultCredentialsChain::builder().configure(provider_config);
            if let Some(region) = region {
                builder = builder.region(region);
            }
            SharedCredentialsProvider::new(builder.build().await)
        }
        CredentialsSpec::Environment => {
            SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new())
        }
        CredentialsSpec::Profile { name } => {
            let mut builder = ProfileFileCredentialsProvider::builder().configure(&provider_config);
            if let Some(name) = name {
                builder = builder.profile_name(name);
            }
            SharedCredentialsProvider::new(builder.build())
        }
        CredentialsSpec::StsAssumeRole {
            role_arn,
            session_name,
            external_id,
            endpoint_region,
            endpoint_url,
        } => {
            let sts_region = endpoint_region
                .as_ref()
                .map(|r| Region::new(r.clone()))
                .or(region);
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .http_client(crate::https::https_client());
            if let Some(r) = sts_region {
                loader = loader.region(r);
            }
            if let Some(url) = endpoint_url {
                loader = loader.endpoint_url(url.clone());
            }
            let sdk_config = loader.load().await;
            let mut builder = AssumeRoleProvider::builder(role_arn.clone())
                .session_name(session_name.clone())
                .configure(&sdk_config);
            if let Some(id) = external_id {
                builder = builder.external_id(id.clone());
            }
            SharedCredentialsProvider::new(builder.build().await)
        }
        CredentialsSpec::WebIdentity => SharedCredentialsProvider::new(
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&provider_config)
                .build(),
        ),
        CredentialsSpec::Container => SharedCredentialsProvider::new(
            EcsCredentialsProvider::builder()
                .configure(&provider_config)
                .build(),
        ),
        CredentialsSpec::InstanceProfile => SharedCredentialsProvider::new(
            ImdsCredentialsProvider::builder()
                .configure(&provider_config)
                .build(),
        ),
        CredentialsSpec::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            session_token.clone(),
            None,
            "KclStaticCredentialsProvider",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::ProvideCredentials;

    fn specs(value: &str) -> Vec<CredentialsSpec> {
        parse_provider_list(value).expect("parses").specs
    }

    #[test]
    fn simple_names_short_and_fully_qualified() {
        assert_eq!(
            specs("DefaultCredentialsProvider"),
            vec![CredentialsSpec::Default]
        );
        assert_eq!(
            specs("software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"),
            vec![CredentialsSpec::Environment]
        );
        assert_eq!(
            specs("WebIdentityTokenFileCredentialsProvider, ContainerCredentialsProvider,InstanceProfileCredentialsProvider"),
            vec![
                CredentialsSpec::WebIdentity,
                CredentialsSpec::Container,
                CredentialsSpec::InstanceProfile
            ]
        );
    }

    #[test]
    fn v1_default_chain_maps_to_default_with_info() {
        let parsed = parse_provider_list("DefaultAWSCredentialsProviderChain").expect("parses");
        assert_eq!(parsed.specs, vec![CredentialsSpec::Default]);
        assert_eq!(parsed.info.len(), 1);
        assert!(parsed.info[0].contains("SDK v1"), "{:?}", parsed.info);
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn profile_with_and_without_name() {
        assert_eq!(
            specs("ProfileCredentialsProvider|analytics"),
            vec![CredentialsSpec::Profile {
                name: Some("analytics".into())
            }]
        );
        assert_eq!(
            specs("ProfileCredentialsProvider"),
            vec![CredentialsSpec::Profile { name: None }]
        );
    }

    #[test]
    fn assume_role_with_nested_properties() {
        let arn = "arn:aws:iam::123456789012:role/kcl";
        assert_eq!(
            specs(&format!(
                "StsAssumeRoleCredentialsProvider|{arn}|sess|externalId=spartacus|endpointRegion=us-west-2"
            )),
            vec![CredentialsSpec::StsAssumeRole {
                role_arn: arn.into(),
                session_name: "sess".into(),
                external_id: Some("spartacus".into()),
                endpoint_region: Some("us-west-2".into()),
                endpoint_url: None,
            }]
        );
        assert_eq!(
            specs(&format!(
                "software.amazon.awssdk.services.sts.auth.StsAssumeRoleCredentialsProvider|{arn}|s|endpoint=sts.us-east-1.amazonaws.com^us-east-1"
            )),
            vec![CredentialsSpec::StsAssumeRole {
                role_arn: arn.into(),
                session_name: "s".into(),
                external_id: None,
                endpoint_region: Some("us-east-1".into()),
                endpoint_url: Some("https://sts.us-east-1.amazonaws.com".into()),
            }]
        );
        let parsed = parse_provider_list(&format!(
            "KclSTSAssumeRoleSessionCredentialsProvider|{arn}|s|color=blue|stray"
        ))
        .expect("parses");
        assert_eq!(parsed.warnings.len(), 2, "{:?}", parsed.warnings);
        assert!(parsed.warnings[0].contains("\"color\""));
    }

    #[test]
    fn assume_role_argument_errors() {
        let err = parse_provider_list("StsAssumeRoleCredentialsProvider|arn:aws:iam::1:role/x")
            .unwrap_err();
        assert!(matches!(err, CredentialsSpecError::BadArguments { .. }));
        assert!(err.to_string().contains("got 1 argument"), "{err}");
        let err = parse_provider_list("StsAssumeRoleCredentialsProvider|not-an-arn|s").unwrap_err();
        assert!(err.to_string().contains("not an ARN"), "{err}");
        let err = parse_provider_list(
            "StsAssumeRoleCredentialsProvider|arn:aws:iam::1:role/x|s|endpoint=no-region",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("endpoint=<url>^<signingRegion>"),
            "{err}"
        );
    }

    #[test]
    fn static_provider() {
        assert_eq!(
            specs("KclStaticCredentialsProvider|AKID|SECRET"),
            vec![CredentialsSpec::Static {
                access_key_id: "AKID".into(),
                secret_access_key: "SECRET".into(),
                session_token: None
            }]
        );
        let spec = &specs("KclStaticCredentialsProvider|AKID|SECRET|TOKEN")[0];
        let debug = format!("{spec:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("TOKEN"),
            "{debug}"
        );
        assert!(debug.contains("AKID"));
        assert!(parse_provider_list("KclStaticCredentialsProvider|AKID").is_err());
    }

    #[test]
    fn unsupported_entries_are_skipped_with_warnings() {
        let parsed = parse_provider_list(
            "SystemPropertyCredentialsProvider, com.example.MyProvider, EnvironmentVariableCredentialsProvider",
        )
        .expect("parses");
        assert_eq!(parsed.specs, vec![CredentialsSpec::Environment]);
        assert_eq!(parsed.warnings.len(), 2);
        assert!(parsed.warnings[1].contains("com.example.MyProvider"));
    }

    #[test]
    fn nothing_usable_is_an_error() {
        let err = parse_provider_list("AnonymousCredentialsProvider").unwrap_err();
        let CredentialsSpecError::NoUsableProvider { skipped } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(skipped.len(), 1);
        assert!(err.to_string().contains("AnonymousCredentialsProvider"));
        assert!(matches!(
            parse_provider_list(" , "),
            Err(CredentialsSpecError::NoUsableProvider { .. })
        ));
    }

    #[test]
    fn arguments_to_argumentless_providers_warn() {
        let parsed = parse_provider_list("DefaultCredentialsProvider|x").expect("parses");
        assert_eq!(parsed.specs, vec![CredentialsSpec::Default]);
        assert_eq!(parsed.warnings.len(), 1);
    }

    #[tokio::test]
    async fn static_provider_yields_its_keys() {
        let provider = build_provider(
            &[CredentialsSpec::Static {
                access_key_id: "test".into(),
                secret_access_key: "secret".into(),
                session_token: Some("tok".into()),
            }],
            Some("us-east-1"),
        )
        .await;
        let creds = provider.provide_credentials().await.expect("credentials");
        assert_eq!(creds.access_key_id(), "test");
        assert_eq!(creds.secret_access_key(), "secret");
        assert_eq!(creds.session_token(), Some("tok"));
    }

    #[tokio::test]
    async fn chain_falls_through_to_the_next_provider() {
        let provider = build_provider(
            &[
                CredentialsSpec::Profile {
                    name: Some("kcl-multilang-test-profile-that-does-not-exist".into()),
                },
                CredentialsSpec::Static {
                    access_key_id: "second".into(),
                    secret_access_key: "s".into(),
                    session_token: None,
                },
            ],
            None,
        )
        .await;
        let creds = provider.provide_credentials().await.expect("credentials");
        assert_eq!(creds.access_key_id(), "second");
    }
}
