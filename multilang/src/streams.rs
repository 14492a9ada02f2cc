//! A multi-stream daemon's [`MultiStreamTracker`]: the streams of its properties file
//! (`streamNames`, `streamArns`), each named by account, name and creation epoch.
//!
//! A stream given by name or ARN is looked up with DescribeStreamSummary at every round (at
//! start, then every minute): its account comes from its ARN and its creation epoch is its
//! creation time in whole seconds since the Unix epoch. A stream deleted and re-created under
//! its name thus becomes a new stream (new leases, from its initial position) at the next
//! round. A stream that does not exist (yet) is left out, with a warning, until it does.

use crate::settings::{DaemonSettings, StreamSetting};
use kinesis_client::multi_stream::{
    FormerStreamsLeasesDeletionStrategy, MultiStreamTracker, StreamConfig, TrackerError,
};
use kinesis_client::{InitialPosition, StreamIdentifier};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The streams of the properties file.
pub struct PropertiesStreams {
    settings: Arc<DaemonSettings>,
    kinesis: OnceCell<aws_sdk_kinesis::Client>,
    /// Streams reported missing (warned once until they exist).
    missing: Mutex<BTreeSet<String>>,
}

impl PropertiesStreams {
    /// The streams of `settings` (its Kinesis client is built at the first round).
    pub fn new(settings: &DaemonSettings) -> Self {
        PropertiesStreams {
            settings: Arc::new(settings.clone()),
            kinesis: OnceCell::new(),
            missing: Mutex::default(),
        }
    }

    async fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        self.kinesis
            .get_or_init(|| async {
                let s = &self.settings;
                let sdk =
                    crate::daemon::sdk_config(s.region_name.as_deref(), &s.credentials.kinesis)
                        .await;
                kinesis_client::aws::kinesis_client(&sdk, s.kinesis_endpoint.as_deref())
            })
            .await
    }

    /// `stream`'s identifier; `Ok(None)` when it does not exist.
    async fn identify(
        &self,
        stream: &StreamSetting,
    ) -> Result<Option<StreamIdentifier>, TrackerError> {
        if let Some(id) = &stream.identifier {
            return Ok(Some(id.clone()));
        }
        let mut call = self.kinesis().await.describe_stream_summary();
        call = match &stream.arn {
            Some(arn) => call.stream_arn(arn),
            None => call.stream_name(&stream.name),
        };
        let summary = match call.send().await {
            Ok(out) => out.stream_description_summary,
            Err(e) => {
                let e = e.into_service_error();
                if e.is_resource_not_found_exception() {
                    if self.missing.lock().unwrap().insert(stream.name.clone()) {
                        tracing::warn!(stream = %stream.name, "stream not found: not consumed until it exists");
                    }
                    return Ok(None);
                }
                return Err(format!("DescribeStreamSummary of {}: {e}", stream.name).into());
            }
        };
        self.missing.lock().unwrap().remove(&stream.name);
        let summary = summary
            .ok_or_else(|| format!("DescribeStreamSummary of {}: no summary", stream.name))?;
        let epoch = summary.stream_creation_timestamp.secs().max(1) as u64;
        Ok(Some(StreamIdentifier::from_arn(
            &summary.stream_arn,
            epoch,
        )?))
    }
}

#[async_trait::async_trait]
impl MultiStreamTracker for PropertiesStreams {
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError> {
        let default = self
            .settings
            .initial_position
            .unwrap_or(InitialPosition::Latest);
        let mut out = Vec::new();
        for stream in &self.settings.streams {
            let Some(id) = self.identify(stream).await? else {
                continue;
            };
            let mut config = StreamConfig::new(id, stream.initial_position.unwrap_or(default));
            if let Some(arn) = &stream.arn {
                config = config.with_stream_arn(arn.clone());
            }
            out.push(config);
        }
        Ok(out)
    }

    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy {
        match self.settings.former_streams_leases_deletion_wait {
            Some(wait) => {
                FormerStreamsLeasesDeletionStrategy::AutoDetectionAndDeferredDeletion { wait }
            }
            None => FormerStreamsLeasesDeletionStrategy::NoLeaseDeletion,
        }
    }
}
