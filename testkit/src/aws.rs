//! SDK configuration and clients for the chosen endpoints.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

/// The static credentials used against emulators (they accept any).
pub(crate) fn static_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "testkit"))
}

/// A hermetic config: region, credentials, standard retries, short connect timeout; no endpoint
/// and nothing read from profile files.
pub(crate) fn sdk_config(region: &str, credentials: SharedCredentialsProvider) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials)
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .build(),
        )
        .build()
}

/// Credentials for user-given endpoints: environment variables, then the shared profile files;
/// static `test`/`test` when neither yields credentials.
///
/// Deliberately not the full default chain: its IMDS and container providers would make network
/// calls (and on a non-EC2 machine wait for them to time out) just to find no credentials.
pub(crate) async fn env_credentials() -> (SharedCredentialsProvider, &'static str) {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::profile::ProfileFileCredentialsProvider;

    let chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
    match tokio::time::timeout(Duration::from_secs(10), chain.provide_credentials()).await {
        Ok(Ok(_)) => (SharedCredentialsProvider::new(chain), "environment/profile"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no credentials in environment or profile; using test/test");
            (static_credentials(), "static test/test")
        }
        Err(_) => {
            tracing::warn!("credential lookup timed out; using test/test");
            (static_credentials(), "static test/test")
        }
    }
}

/// `sdk` with a new HTTPS client of its own (see [`crate::https::https_client`]).
pub(crate) fn with_own_http_client(sdk: &SdkConfig) -> SdkConfig {
    sdk.to_builder()
        .http_client(crate::https::https_client())
        .build()
}

/// A Kinesis client for `endpoint`.
pub(crate) fn kinesis_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::config::Builder::from(sdk)
        .http_client(crate::https::https_client())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// A DynamoDB client for `endpoint`.
pub(crate) fn dynamodb_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .http_client(crate::https::https_client())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

fn probe_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// One ListStreams call without retries: `Ok` once Kinesis answers.
pub(crate) async fn probe_kinesis(sdk: &SdkConfig, endpoint: &str) -> Result<(), String> {
    let conf = aws_sdk_kinesis::config::Builder::from(sdk)
        .http_client(crate::https::https_client())
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(probe_timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
        .list_streams()
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())
}

/// One ListTables call without retries: `Ok` once DynamoDB answers.
pub(crate) async fn probe_dynamodb(sdk: &SdkConfig, endpoint: &str) -> Result<(), String> {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .http_client(crate::https::https_client())
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(probe_timeouts())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
        .list_tables()
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}
