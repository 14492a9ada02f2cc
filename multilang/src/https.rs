//! The daemon's HTTPS clients (hyper 1 + rustls), one for each AWS client it builds (Kinesis,
//! DynamoDB, CloudWatch, STS and the credential providers), with the crypto provider its build
//! chose: aws-lc-rs (feature `rustls-aws-lc`, the default) or ring (`rustls-ring`).

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Builder;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

#[cfg(not(any(feature = "rustls-aws-lc", feature = "rustls-ring")))]
compile_error!(
    "kinesis-client-multilang needs a TLS crypto provider: enable its `rustls-aws-lc` (default) \
     or `rustls-ring` feature"
);

/// The crypto provider of this build (aws-lc-rs when both features are on).
#[cfg(feature = "rustls-aws-lc")]
const CRYPTO: CryptoMode = CryptoMode::AwsLc;
#[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc")))]
const CRYPTO: CryptoMode = CryptoMode::Ring;

/// A new HTTPS client with this build's crypto provider, with its own connection pool (as the
/// SDK's default client, one per AWS client: a pool's connections live on the tokio runtime
/// that opened them).
pub fn https_client() -> SharedHttpClient {
    Builder::new()
        .tls_provider(Provider::Rustls(CRYPTO))
        .build_https()
}

/// The name of this build's crypto provider, for the start-up log.
pub fn crypto_provider() -> &'static str {
    if cfg!(feature = "rustls-aws-lc") {
        "aws-lc-rs"
    } else {
        "ring"
    }
}
