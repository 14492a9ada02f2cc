//! The HTTPS client of every SDK client testkit builds, with the crypto provider its features
//! chose: aws-lc-rs (`rustls-aws-lc`, the default, as the tests' other clients) or ring
//! (`rustls-ring`, the demo's).

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

#[cfg(not(any(feature = "rustls-aws-lc", feature = "rustls-ring")))]
compile_error!(
    "testkit needs a TLS crypto provider: enable `rustls-aws-lc` (default) or `rustls-ring`"
);

/// A new client, with its own connection pool (aws-lc-rs when both features are on). Never
/// shared between tests: a pooled connection lives on the tokio runtime that opened it, and
/// each `#[tokio::test]` has its own runtime, gone when the test ends.
pub(crate) fn https_client() -> SharedHttpClient {
    #[cfg(feature = "rustls-aws-lc")]
    let crypto = CryptoMode::AwsLc;
    #[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc")))]
    let crypto = CryptoMode::Ring;
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(crypto))
        .build_https()
}
