//! Shared set-up for the integration tests.

use std::sync::Arc;
use testkit::LocalAws;

/// The shared local services; fails the test with testkit's explanation when unavailable.
pub async fn aws() -> Arc<LocalAws> {
    init_tracing();
    match LocalAws::shared().await {
        Ok(aws) => aws,
        Err(e) => panic!("the integration tests need a Kinesis and a DynamoDB endpoint: {e:#}"),
    }
}

/// Log to the test output (shown for failing tests) at `RUST_LOG` or `info` for this crate.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kcl=info,testkit=info".into()),
        )
        .with_test_writer()
        .try_init();
}
