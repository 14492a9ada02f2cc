//! AWS clients and the one place where AWS SDK errors are classified.
//!
//! Clients are built from an [`SdkConfig`](aws_types::SdkConfig) (the default credential and
//! region chain, or whatever the application loaded) with optional per-service endpoint
//! overrides for LocalStack, local emulators or VPC endpoints. Nothing outside this module looks
//! inside an SDK error: other modules ask [`AwsError`] what a failure means.
//!
//! # Credentials and the HTTPS client: the application's aws-config decides
//!
//! The library takes the `SdkConfig` type from `aws-types` (it is `aws_config::SdkConfig`:
//! aws-config re-exports it) and does not depend on `aws-config`, so the credential providers
//! available are those of the `aws-config` the application loads its `SdkConfig` with. Its
//! default features include `sso` (SSO profiles) and `credentials-process`
//! (`credential_process` in a profile); with `default-features = false`, turn on the ones your
//! profiles need.
//!
//! The HTTPS client, and with it the TLS crypto provider, is the `SdkConfig`'s too: the library
//! turns on no HTTPS client of the SDK crates (`default-features = false`, only `rt-tokio`).
//! `aws_config::load_from_env` (aws-config's default `default-https-client`: hyper 1,
//! rustls 0.23, aws-lc-rs) sets one. An `SdkConfig` made otherwise needs
//! `.http_client(..)`, for instance built with `aws-smithy-http-client` and its `rustls-ring`
//! feature for ring; without one (and no crate of the build turning on the SDK's
//! `default-https-client`), every request fails with the SDK's "no HTTP client" error.
//! The `aws-sdk-*` crates' own default features add their legacy HTTPS client (hyper 0.14,
//! rustls 0.21, ring): an application that depends on `aws-sdk-kinesis` or `aws-sdk-dynamodb`
//! itself should do so with `default-features = false, features = ["rt-tokio"]` to keep one TLS
//! stack in its build.
//!
//! # Retries and timeouts: one layer decides
//!
//! The library retries every Kinesis and DynamoDB call itself, with its own bounds: lease
//! renewals (3 attempts within a quarter of the renew interval), checkpoint writes (5
//! attempts), lease takes (the next take round), GetRecords (backoff, and a new iterator
//! after 3 transient failures in a row), the lease table's creation and the first shard
//! sync; and it bounds every request
//! ([`DynamoDbLeaseStore::with_request_timeout`](crate::lease::DynamoDbLeaseStore::with_request_timeout),
//! 10 s, and [`KinesisStreamClient::with_request_timeout`](crate::retrieval::KinesisStreamClient::with_request_timeout),
//! 30 s). An SDK client that also retries multiplies them: with the SDK's default (3
//! attempts, backoff up to 20 s) one checkpoint could make 15 requests and outlast the
//! failover time. So the clients this module builds ([`kinesis_client`], [`dynamodb_client`],
//! and through them [`Scheduler::from_sdk_config`](crate::Scheduler::from_sdk_config) and the
//! MultiLangDaemon) have:
//!
//! * `RetryConfig::disabled()`: one library attempt is one HTTP request;
//! * the library's request timeout as the SDK's `operation_timeout` and
//!   `operation_attempt_timeout` (the `with_request_timeout` of the store and of the stream
//!   client change both); the connect and read timeouts of the `SdkConfig` are kept.
//!
//! **If you pass your own clients** to [`DynamoDbLeaseStore::new`](crate::lease::DynamoDbLeaseStore::new)
//! or [`KinesisStreamClient::new`](crate::retrieval::KinesisStreamClient::new), build them the
//! same way, or every library attempt becomes up to `max_attempts` requests:
//!
//! ```
//! # fn f(sdk: &aws_config::SdkConfig) {
//! use aws_config::{retry::RetryConfig, timeout::TimeoutConfig};
//! use std::time::Duration;
//! let timeouts = |t| TimeoutConfig::builder().operation_timeout(t).operation_attempt_timeout(t).build();
//! let dynamodb = aws_sdk_dynamodb::Client::from_conf(
//!     aws_sdk_dynamodb::config::Builder::from(sdk)
//!         .retry_config(RetryConfig::disabled())
//!         .timeout_config(timeouts(Duration::from_secs(10))) // the store's request timeout
//!         .build(),
//! );
//! let kinesis = aws_sdk_kinesis::Client::from_conf(
//!     aws_sdk_kinesis::config::Builder::from(sdk)
//!         .retry_config(RetryConfig::disabled())
//!         .timeout_config(timeouts(Duration::from_secs(30))) // the stream client's
//!         .build(),
//! );
//! # }
//! ```
//!
//! The CloudWatch exporter is the other way round: it never retries a `PutMetricData`
//! itself, so [`cloudwatch_client`] keeps the `SdkConfig`'s retries (the SDK's standard 3
//! attempts by default), and the exporter bounds each request, retries included, by its
//! `request_timeout` (also as the SDK's operation timeout of that request).
//!
//! The Java KCL has the same flaw: it builds its clients with the SDK's default retry policy
//! (`KinesisClientUtil` only sets the HTTP client) under its own retries (e.g.
//! `DynamoDBLeaseRenewer`'s `RENEWAL_RETRIES`) and its `dynamoDbRequestTimeout`.

use crate::error::ErrorKind;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::event_stream::RawMessage;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::sync::Arc;
use std::time::Duration;

/// Endpoint overrides, one per service. `None` uses the SDK's regional endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Kinesis endpoint URL, e.g. `http://127.0.0.1:4567`.
    pub kinesis: Option<String>,
    /// DynamoDB endpoint URL, e.g. `http://127.0.0.1:8000`.
    pub dynamodb: Option<String>,
}

/// A Kinesis client from `sdk_config`, with `endpoint` overriding the regional endpoint; no
/// SDK retries, and the stream client's default request timeout as the SDK's operation
/// timeout (see [Retries and timeouts](self#retries-and-timeouts-one-layer-decides)).
pub fn kinesis_client(
    sdk_config: &aws_types::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_kinesis::Client {
    let mut builder = aws_sdk_kinesis::config::Builder::from(sdk_config)
        .retry_config(RetryConfig::disabled())
        .timeout_config(request_timeouts(crate::retrieval::DEFAULT_REQUEST_TIMEOUT));
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// A DynamoDB client from `sdk_config`, with `endpoint` overriding the regional endpoint; no
/// SDK retries, and the lease store's default request timeout as the SDK's operation
/// timeout (see [Retries and timeouts](self#retries-and-timeouts-one-layer-decides)).
pub fn dynamodb_client(
    sdk_config: &aws_types::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk_config)
        .retry_config(RetryConfig::disabled())
        .timeout_config(request_timeouts(
            crate::lease::dynamodb::DEFAULT_REQUEST_TIMEOUT,
        ));
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// A CloudWatch client from `sdk_config`, with `endpoint` overriding the regional endpoint
/// (for the [`CloudWatchExporter`](crate::telemetry::cloudwatch::CloudWatchExporter)): the
/// `sdk_config`'s retries, within the exporter's default request timeout (see
/// [Retries and timeouts](self#retries-and-timeouts-one-layer-decides)).
#[cfg(feature = "cloudwatch")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudwatch")))]
pub fn cloudwatch_client(
    sdk_config: &aws_types::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_cloudwatch::Client {
    let mut builder = aws_sdk_cloudwatch::config::Builder::from(sdk_config).timeout_config(
        TimeoutConfig::builder()
            .operation_timeout(crate::telemetry::cloudwatch::DEFAULT_REQUEST_TIMEOUT)
            .build(),
    );
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_cloudwatch::Client::from_conf(builder.build())
}

/// The SDK timeouts of a client whose every call the library bounds by `request_timeout` and
/// retries itself: one attempt, bounded by the same time. Set on a client config builder,
/// they keep the connect and read timeouts it has.
pub(crate) fn request_timeouts(request_timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(request_timeout)
        .operation_attempt_timeout(request_timeout)
        .build()
}

/// A failed AWS SDK call, classified: what it means to us, with the SDK's error as source.
/// Cheap to clone (and one pointer in size).
#[derive(Debug, Clone)]
pub struct AwsError(Arc<AwsErrorInner>);

#[derive(Debug)]
struct AwsErrorInner {
    kind: ErrorKind,
    code: Option<String>,
    status: Option<u16>,
    /// The SDK's error chain in one line (what logs show).
    message: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for AwsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0.source)
    }
}

/// Service error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "LimitExceededException",
    "KMSThrottlingException",
    "TransactionInProgressException",
];

/// Service error codes that are transient server-side failures.
const RETRYABLE_CODES: &[&str] = &[
    "InternalServerError",
    "InternalFailure",
    "InternalFailureException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "KMSDisabledException",
];

impl AwsError {
    /// Classify any AWS SDK error.
    pub fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        Self::classify(err, status, None)
    }

    /// Classify the failure of a SubscribeToShard subscription's event stream: an exception
    /// event from the service (e.g. `ResourceInUseException`), or the connection failing
    /// mid-stream. There is no HTTP status: an exception without a known code is retryable.
    /// (The SDK decodes the modelled exceptions without an error code: it is taken from the
    /// variant.)
    pub fn from_subscribe_to_shard_events(
        err: SdkError<SubscribeToShardEventStreamError, RawMessage>,
    ) -> Self {
        use SubscribeToShardEventStreamError as E;
        let modelled = err.as_service_error().and_then(|e| match e {
            E::ResourceInUseException(_) => Some("ResourceInUseException"),
            E::ResourceNotFoundException(_) => Some("ResourceNotFoundException"),
            E::InternalFailureException(_) => Some("InternalFailureException"),
            E::KmsThrottlingException(_) => Some("KMSThrottlingException"),
            E::KmsDisabledException(_) => Some("KMSDisabledException"),
            E::KmsInvalidStateException(_) => Some("KMSInvalidStateException"),
            E::KmsAccessDeniedException(_) => Some("KMSAccessDeniedException"),
            E::KmsNotFoundException(_) => Some("KMSNotFoundException"),
            E::KmsOptInRequired(_) => Some("KMSOptInRequired"),
            _ => None,
        });
        Self::classify(err, None, modelled)
    }

    /// Classify; `modelled` is the error code when the SDK's error carries none.
    fn classify<E, R>(
        err: SdkError<E, R>,
        status: Option<u16>,
        modelled: Option<&'static str>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let message = error_chain(&err);
        let (kind, code, status) = match &err {
            SdkError::ConstructionFailure(_) => (ErrorKind::Fatal, None, None),
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => (ErrorKind::Retryable, None, status),
            _ => {
                let code = err.code().or(modelled).map(str::to_string);
                (
                    classify_service_error(code.as_deref(), status),
                    code,
                    status,
                )
            }
        };
        AwsError(Arc::new(AwsErrorInner {
            kind,
            code,
            status,
            message,
            source: Box::new(err),
        }))
    }

    /// Whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The service's error code (e.g. `ConditionalCheckFailedException`), when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    fn has_code(&self, code: &str) -> bool {
        self.code() == Some(code)
    }

    /// A DynamoDB conditional write whose condition did not hold.
    pub fn is_conditional_check_failed(&self) -> bool {
        self.has_code("ConditionalCheckFailedException")
    }

    /// The table, stream or shard does not exist.
    pub fn is_resource_not_found(&self) -> bool {
        self.has_code("ResourceNotFoundException")
    }

    /// The resource exists already or is being changed (e.g. CreateTable on an existing table).
    pub fn is_resource_in_use(&self) -> bool {
        self.has_code("ResourceInUseException")
    }

    /// A Kinesis shard iterator expired (it is valid for 5 minutes).
    pub fn is_expired_iterator(&self) -> bool {
        self.has_code("ExpiredIteratorException")
    }

    /// Kinesis rejected an argument (e.g. an invalid or expired iterator on some emulators).
    pub fn is_invalid_argument(&self) -> bool {
        self.has_code("InvalidArgumentException")
    }
}

/// The pure classification rule for service errors: by code first, then by HTTP status.
pub(crate) fn classify_service_error(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    if let Some(code) = code {
        if THROTTLING_CODES.contains(&code) {
            return ErrorKind::Throttled;
        }
        if RETRYABLE_CODES.contains(&code) {
            return ErrorKind::Retryable;
        }
    }
    match status {
        Some(429) => ErrorKind::Throttled,
        Some(s) if s >= 500 => ErrorKind::Retryable,
        Some(_) if code.is_some() => ErrorKind::Fatal,
        // No code and no error status: a response we could not understand; try again.
        _ => ErrorKind::Retryable,
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A loopback HTTP endpoint that answers every request with HTTP 500 and an AWS JSON
/// `InternalServerError` (retryable for the SDK and for the library alike), counting the
/// requests: how many HTTP calls one library-level call makes.
#[cfg(test)]
pub(crate) mod failing_endpoint {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The endpoint; it stops when dropped.
    pub(crate) struct FailingEndpoint {
        url: String,
        requests: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    const BODY: &str =
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}"#;

    impl FailingEndpoint {
        /// Listen on a free loopback port.
        pub(crate) async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn({
                let requests = requests.clone();
                async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        tokio::spawn(answer(conn, requests.clone()));
                    }
                }
            });
            FailingEndpoint {
                url,
                requests,
                task,
            }
        }

        /// `http://127.0.0.1:<port>`.
        pub(crate) fn url(&self) -> &str {
            &self.url
        }

        /// Requests answered so far.
        pub(crate) fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for FailingEndpoint {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Answer every request of one (keep-alive) connection.
    async fn answer(mut conn: tokio::net::TcpStream, requests: Arc<AtomicUsize>) {
        let mut buf = Vec::new();
        loop {
            // The head, then as much body as it announces.
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + body_len {
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..head_end + body_len);
            requests.fetch_add(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 500 Internal Server Error\r\n\
                 content-type: application/x-amz-json-1.0\r\n\
                 x-amzn-errortype: InternalServerError\r\n\
                 content-length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
            if conn.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// An `aws_config::SdkConfig` as an application would load it (region, credentials, the
/// SDK's standard retries and a connect timeout), with nothing read from the environment.
#[cfg(test)]
pub(crate) fn test_sdk_config() -> aws_config::SdkConfig {
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )))
        .retry_config(aws_config::retry::RetryConfig::standard())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(3100))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    }

    fn service_error(code: &str, status: u16) -> SdkError<PutItemError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("boom").build();
        SdkError::service_error(PutItemError::generic(meta), response(status))
    }

    #[test]
    fn throttling_codes_are_throttled() {
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "LimitExceededException",
        ] {
            let info = AwsError::from_sdk(service_error(code, 400));
            assert_eq!(info.kind(), ErrorKind::Throttled, "{code}");
            assert_eq!(info.code(), Some(code));
        }
    }

    #[test]
    fn server_errors_are_retryable_and_client_errors_fatal() {
        assert_eq!(
            AwsError::from_sdk(service_error("InternalServerError", 500)).kind(),
            ErrorKind::Retryable
        );
        assert_eq!(
            AwsError::from_sdk(service_error("SomethingNew", 503)).kind(),
            ErrorKind::Retryable
        );
        assert_eq!(
            AwsError::from_sdk(service_error("SomethingNew", 429)).kind(),
            ErrorKind::Throttled
        );
        let denied = AwsError::from_sdk(service_error("AccessDeniedException", 400));
        assert_eq!(denied.kind(), ErrorKind::Fatal);
        let missing = AwsError::from_sdk(service_error("ResourceNotFoundException", 400));
        assert_eq!(missing.kind(), ErrorKind::Fatal);
        assert!(missing.is_resource_not_found());
    }

    #[test]
    fn typed_conditional_check_failure_is_recognised() {
        let e = PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("nope")
                .meta(
                    ErrorMetadata::builder()
                        .code("ConditionalCheckFailedException")
                        .build(),
                )
                .build(),
        );
        let info = AwsError::from_sdk(SdkError::service_error(e, response(400)));
        assert!(info.is_conditional_check_failed());
        assert_eq!(info.kind(), ErrorKind::Fatal);
    }

    #[test]
    fn transport_failures_are_retryable_and_construction_fatal() {
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(AwsError::from_sdk(timeout).kind(), ErrorKind::Retryable);
        let construction: SdkError<PutItemError, HttpResponse> =
            SdkError::construction_failure("bad input");
        assert_eq!(AwsError::from_sdk(construction).kind(), ErrorKind::Fatal);
    }

    #[test]
    fn event_stream_errors_are_classified_by_code() {
        let event = |code: &str| {
            let meta = ErrorMetadata::builder().code(code).message("boom").build();
            SdkError::service_error(
                SubscribeToShardEventStreamError::generic(meta),
                RawMessage::invalid(None),
            )
        };
        let in_use = AwsError::from_subscribe_to_shard_events(event("ResourceInUseException"));
        assert!(in_use.is_resource_in_use());
        assert_eq!(in_use.kind(), ErrorKind::Retryable);
        let limit = AwsError::from_subscribe_to_shard_events(event("LimitExceededException"));
        assert_eq!(limit.kind(), ErrorKind::Throttled);
        let reset: SdkError<SubscribeToShardEventStreamError, RawMessage> =
            SdkError::response_error("connection reset", RawMessage::invalid(None));
        assert_eq!(
            AwsError::from_subscribe_to_shard_events(reset).kind(),
            ErrorKind::Retryable
        );
        // A modelled exception as the SDK decodes it from an event stream: no code in its
        // metadata (kinesis-mock's "another active subscription" arrives like this).
        let typed = SubscribeToShardEventStreamError::ResourceNotFoundException(
            aws_sdk_kinesis::types::error::ResourceNotFoundException::builder()
                .message("gone")
                .build(),
        );
        let gone = AwsError::from_subscribe_to_shard_events(SdkError::service_error(
            typed,
            RawMessage::invalid(None),
        ));
        assert!(gone.is_resource_not_found(), "{gone}");
    }

    #[test]
    fn endpoint_override_is_applied() {
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let k = kinesis_client(&sdk, Some("http://127.0.0.1:1"));
        assert_eq!(k.config().region().map(|r| r.as_ref()), Some("us-east-1"));
        let d = dynamodb_client(&sdk, None);
        assert_eq!(d.config().region().map(|r| r.as_ref()), Some("us-east-1"));
    }

    /// One call of the lease store or of the stream client is one HTTP request: the library
    /// retries (with its own bounds), the SDK clients it builds do not retry underneath.
    #[tokio::test]
    async fn one_library_call_is_one_http_request() {
        use crate::lease::{DynamoDbLeaseStore, LeaseStore};
        use crate::retrieval::{KinesisStreamClient, StreamClient, StreamRef};
        let endpoint = failing_endpoint::FailingEndpoint::start().await;
        let sdk = test_sdk_config();

        let store = DynamoDbLeaseStore::new(dynamodb_client(&sdk, Some(endpoint.url())), "t");
        let err = store.get_lease("shardId-0").await.unwrap_err();
        assert!(err.kind().is_retryable(), "{err}");
        assert_eq!(endpoint.requests(), 1, "GetItem: {err}");

        let stream = KinesisStreamClient::new(
            kinesis_client(&sdk, Some(endpoint.url())),
            StreamRef::Name("s".into()),
        );
        let err = stream.get_records("shardId-0", "it", 10).await.unwrap_err();
        assert!(err.kind().is_retryable(), "{err}");
        assert_eq!(endpoint.requests(), 2, "GetRecords: {err}");
    }

    /// The clients the library builds: no SDK retries under the library's, the library's
    /// request timeouts as the SDK's operation timeouts, the application's connect timeout
    /// kept.
    #[test]
    fn the_clients_the_library_builds_have_the_library_bounds() {
        let sdk = test_sdk_config();
        let d = dynamodb_client(&sdk, None);
        let k = kinesis_client(&sdk, None);
        for (service, retry, timeouts, bound) in [
            (
                "dynamodb",
                d.config().retry_config(),
                d.config().timeout_config(),
                crate::lease::dynamodb::DEFAULT_REQUEST_TIMEOUT,
            ),
            (
                "kinesis",
                k.config().retry_config(),
                k.config().timeout_config(),
                crate::retrieval::DEFAULT_REQUEST_TIMEOUT,
            ),
        ] {
            assert_eq!(retry.map(|r| r.max_attempts()), Some(1), "{service}");
            let t = timeouts.unwrap_or_else(|| panic!("{service}: no timeouts"));
            assert_eq!(t.operation_timeout(), Some(bound), "{service}");
            assert_eq!(t.operation_attempt_timeout(), Some(bound), "{service}");
            assert_eq!(
                t.connect_timeout(),
                Some(Duration::from_millis(3100)),
                "{service}"
            );
        }
        // CloudWatch: the SDK retries (the exporter does not), within the exporter's bound.
        #[cfg(feature = "cloudwatch")]
        {
            let c = cloudwatch_client(&sdk, None);
            assert_eq!(c.config().retry_config().map(|r| r.max_attempts()), Some(3));
            let t = c.config().timeout_config().unwrap();
            assert_eq!(
                t.operation_timeout(),
                Some(crate::telemetry::cloudwatch::DEFAULT_REQUEST_TIMEOUT)
            );
            assert_eq!(t.connect_timeout(), Some(Duration::from_millis(3100)));
        }
    }

    /// `with_request_timeout` moves the SDK's operation timeouts with the library's bound.
    #[test]
    fn a_longer_request_timeout_is_the_sdk_timeout_too() {
        use crate::lease::DynamoDbLeaseStore;
        use crate::retrieval::{KinesisStreamClient, StreamRef};
        let sdk = test_sdk_config();
        let minute = Duration::from_secs(60);
        let store =
            DynamoDbLeaseStore::new(dynamodb_client(&sdk, None), "t").with_request_timeout(minute);
        let t = store.client.config().timeout_config().unwrap();
        assert_eq!(t.operation_timeout(), Some(minute));
        assert_eq!(t.operation_attempt_timeout(), Some(minute));
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(3100)));
        let stream =
            KinesisStreamClient::new(kinesis_client(&sdk, None), StreamRef::Name("s".into()))
                .with_request_timeout(minute);
        let t = stream.client.config().timeout_config().unwrap();
        assert_eq!(t.operation_timeout(), Some(minute));
        assert_eq!(t.operation_attempt_timeout(), Some(minute));
        assert_eq!(
            stream
                .client
                .config()
                .retry_config()
                .map(|r| r.max_attempts()),
            Some(1)
        );
    }
}
