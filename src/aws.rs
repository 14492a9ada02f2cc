//! AWS clients and the one place where AWS SDK errors are classified.
//!
//! Clients are built from an [`aws_config::SdkConfig`] (the default credential and region
//! chain, or whatever the application loaded) with optional per-service endpoint overrides for
//! LocalStack, local emulators or VPC endpoints. Nothing outside this module looks inside an
//! SDK error: other modules ask [`AwsError`] what a failure means.

use crate::error::ErrorKind;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::event_stream::RawMessage;
use std::sync::Arc;

/// Endpoint overrides, one per service. `None` uses the SDK's regional endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Kinesis endpoint URL, e.g. `http://127.0.0.1:4567`.
    pub kinesis: Option<String>,
    /// DynamoDB endpoint URL, e.g. `http://127.0.0.1:8000`.
    pub dynamodb: Option<String>,
}

/// A Kinesis client from `sdk_config`, with `endpoint` overriding the regional endpoint.
pub fn kinesis_client(
    sdk_config: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_kinesis::Client {
    let mut builder = aws_sdk_kinesis::config::Builder::from(sdk_config);
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// A DynamoDB client from `sdk_config`, with `endpoint` overriding the regional endpoint.
pub fn dynamodb_client(
    sdk_config: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk_config);
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// A CloudWatch client from `sdk_config`, with `endpoint` overriding the regional endpoint
/// (for the [`CloudWatchExporter`](crate::telemetry::cloudwatch::CloudWatchExporter)).
#[cfg(feature = "cloudwatch")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudwatch")))]
pub fn cloudwatch_client(
    sdk_config: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_cloudwatch::Client {
    let mut builder = aws_sdk_cloudwatch::config::Builder::from(sdk_config);
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_cloudwatch::Client::from_conf(builder.build())
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
}
