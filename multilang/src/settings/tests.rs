//! Settings tests: every key, every error shape, the shipped sample files.

use super::*;
use std::time::SystemTime;

const MINIMAL: &str = "executableName = python3 app.py\napplicationName = MyApp\nstreamName = my-stream\nAwsCredentialsProvider = DefaultCredentialsProvider\n";

fn parse(extra: &str) -> Parsed {
    from_properties_text(&format!("{MINIMAL}{extra}")).expect("valid settings")
}

fn err(extra: &str) -> SettingsError {
    from_properties_text(&format!("{MINIMAL}{extra}")).expect_err("invalid settings")
}

#[test]
fn minimal_file() {
    let p = parse("");
    let s = &p.settings;
    assert_eq!(s.executable_name, "python3 app.py");
    assert_eq!(s.command(), vec!["python3", "app.py"]);
    assert_eq!(s.application_name, "MyApp");
    assert_eq!(s.stream_name, "my-stream");
    assert_eq!(s.stream_arn, None);
    assert_eq!(s.lease_table_name(), "MyApp");
    assert_eq!(s.credentials.kinesis, vec![CredentialsSpec::Default]);
    assert_eq!(s.credentials.for_dynamodb(), &[CredentialsSpec::Default]);
    assert_eq!(s.failover_time, None);
    assert_eq!(s.initial_position, None);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(p.ignored.is_empty());
}

#[test]
fn kclpy_sample_properties() {
    let text = "\
executableName = sample_kclpy_app.py
streamArn = arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample
streamName = kclpysample
applicationName = PythonKCLSample
AwsCredentialsProvider = DefaultCredentialsProvider
processingLanguage = python/3.8
initialPositionInStream = TRIM_HORIZON
regionName = us-east-1
#failoverTimeMillis = 10000
";
    let p = from_properties_text(text).expect("valid");
    let s = &p.settings;
    assert_eq!(s.stream_name, "kclpysample");
    assert_eq!(
        s.stream_arn.as_deref(),
        Some("arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample")
    );
    assert_eq!(s.initial_position, Some(InitialPosition::TrimHorizon));
    assert_eq!(s.region_name.as_deref(), Some("us-east-1"));
    assert_eq!(s.processing_language.as_deref(), Some("python/3.8"));
    // The sample's ARN says us-east-5 while regionName is us-east-1: worth a warning.
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("regionName = us-east-1 differs"));
}

#[test]
fn every_typed_key() {
    let p = parse(
        "tableName = leases.v1
workerIdentifier = w-1
regionName = eu-west-1
dynamoDBRegionName = eu-central-1
kinesisEndpoint = http://localhost:4567
dynamoDBEndpoint = https://localhost:8000
AwsCredentialsProviderDynamoDB = EnvironmentVariableCredentialsProvider
awscredentialsprovidercloudwatch = ProfileCredentialsProvider|metrics
initialPositionInStreamExtended = 1636609142
failoverTimeMillis = 10000
shardSyncIntervalMillis = 60000
maxRecords = 10000
idleTimeBetweenReadsInMillis = 1000
callProcessRecordsEvenForEmptyRecordList = TRUE
parentShardPollIntervalMillis = 10000
cleanupLeasesUponShardCompletion = false
taskBackoffTimeMillis = 0
maxLeasesForWorker = 8
maxLeasesToStealAtOneTime = 2
leaseAssignmentStrategy = LEASE_COUNT_BASED
timeoutInSeconds = 30
shutdownGraceMillis = 0
maxActiveThreads = -1
processingLanguage = nodejs/0.10
retrievalMode = polling
",
    );
    let s = &p.settings;
    assert_eq!(s.table_name.as_deref(), Some("leases.v1"));
    assert_eq!(s.lease_table_name(), "leases.v1");
    assert_eq!(s.worker_id.as_deref(), Some("w-1"));
    assert_eq!(s.region_name.as_deref(), Some("eu-west-1"));
    assert_eq!(s.dynamodb_region_name.as_deref(), Some("eu-central-1"));
    assert_eq!(s.kinesis_endpoint.as_deref(), Some("http://localhost:4567"));
    assert_eq!(
        s.dynamodb_endpoint.as_deref(),
        Some("https://localhost:8000")
    );
    assert_eq!(
        s.credentials.for_dynamodb(),
        &[CredentialsSpec::Environment]
    );
    assert_eq!(
        s.credentials.cloudwatch,
        Some(vec![CredentialsSpec::Profile {
            name: Some("metrics".into())
        }])
    );
    assert_eq!(
        s.initial_position,
        Some(InitialPosition::AtTimestamp(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_636_609_142)
        ))
    );
    assert_eq!(s.failover_time, Some(Duration::from_secs(10)));
    assert_eq!(s.shard_sync_interval, Some(Duration::from_secs(60)));
    assert_eq!(s.max_records, Some(10_000));
    assert_eq!(s.idle_time_between_reads, Some(Duration::from_secs(1)));
    assert_eq!(
        s.call_process_records_even_for_empty_record_list,
        Some(true)
    );
    assert_eq!(s.parent_shard_poll_interval, Some(Duration::from_secs(10)));
    // Java would silently keep `true` here (it applies only values that differ from its
    // field defaults, and `false` is the default of a boolean field); we honour what was written.
    assert_eq!(s.cleanup_leases_upon_shard_completion, Some(false));
    assert_eq!(s.task_backoff_time, Some(Duration::ZERO));
    assert_eq!(s.max_leases_for_worker, Some(8));
    assert_eq!(s.max_leases_to_steal_at_one_time, Some(2));
    assert_eq!(
        s.lease_assignment_strategy,
        Some(kinesis_client::LeaseAssignmentStrategy::LeaseCount)
    );
    assert_eq!(s.timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.shutdown_grace, Some(Duration::ZERO));
    assert_eq!(s.max_active_threads, Some(-1));
    assert_eq!(s.processing_language.as_deref(), Some("nodejs/0.10"));
    assert_eq!(s.retrieval_mode, Some(RetrievalMode::Polling));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn bad_number_names_key_value_and_line() {
    let e = from_properties_text(&format!(
        "{MINIMAL}\n\n\n\n\n\n\nfailoverTimeMillis = ten\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "properties line 12: failoverTimeMillis = \"ten\": expected a whole number of milliseconds"
    );
}

#[test]
fn an_unknown_lease_assignment_strategy_names_the_values() {
    let e = err("leaseAssignmentStrategy = BY_CPU\n");
    assert!(
        e.to_string()
            .contains("expected WORKER_UTILIZATION_AWARE or LEASE_COUNT_BASED"),
        "{e}"
    );
    let p = parse("leaseAssignmentStrategy = WORKER_UTILIZATION_AWARE\n");
    assert_eq!(
        p.settings.lease_assignment_strategy,
        Some(kinesis_client::LeaseAssignmentStrategy::Throughput)
    );
}

#[test]
fn zero_where_zero_cannot_work_is_an_error() {
    for key in [
        "failoverTimeMillis",
        "shardSyncIntervalMillis",
        "parentShardPollIntervalMillis",
    ] {
        let e = err(&format!("{key} = 0\n"));
        assert!(e.to_string().contains("greater than 0"), "{key}: {e}");
    }
    assert!(err("maxLeasesToStealAtOneTime = 0\n")
        .to_string()
        .contains("at least 1"));
    assert!(err("maxLeasesForWorker = 0\n")
        .to_string()
        .contains("at least 1"));
    assert!(err("timeoutInSeconds = 0\n")
        .to_string()
        .contains("at least 1"));
    assert!(err("maxRecords = 0\n")
        .to_string()
        .contains("between 1 and 10000"));
    assert!(err("maxRecords = 10001\n")
        .to_string()
        .contains("between 1 and 10000"));
}

#[test]
fn negative_and_fractional_numbers_rejected() {
    assert!(matches!(
        err("taskBackoffTimeMillis = -5\n"),
        SettingsError::InvalidValue { .. }
    ));
    assert!(matches!(
        err("shutdownGraceMillis = 1.5\n"),
        SettingsError::InvalidValue { .. }
    ));
    assert!(matches!(
        err("initialPositionInStreamExtended = -1\n"),
        SettingsError::InvalidValue { .. }
    ));
}

#[test]
fn booleans() {
    assert_eq!(
        parse("cleanupLeasesUponShardCompletion = FALSE\n")
            .settings
            .cleanup_leases_upon_shard_completion,
        Some(false)
    );
    assert_eq!(
        parse("cleanupLeasesUponShardCompletion = True\n")
            .settings
            .cleanup_leases_upon_shard_completion,
        Some(true)
    );
    let e = err("cleanupLeasesUponShardCompletion = maybe\n");
    assert_eq!(
        e.to_string(),
        "properties line 5: cleanupLeasesUponShardCompletion = \"maybe\": expected true or false"
    );
}

#[test]
fn initial_positions() {
    assert_eq!(
        parse("initialPositionInStream = latest\n")
            .settings
            .initial_position,
        Some(InitialPosition::Latest)
    );
    let e = err("initialPositionInStream = AT_TIMESTAMP\n");
    assert!(
        e.to_string().contains("initialPositionInStreamExtended"),
        "{e}"
    );
    assert!(err("initialPositionInStream = EARLIEST\n")
        .to_string()
        .contains("expected LATEST or TRIM_HORIZON"));
    // Both set: the extended one wins, with a warning naming both lines.
    let p = parse("initialPositionInStreamExtended = 10\ninitialPositionInStream = LATEST\n");
    assert_eq!(
        p.settings.initial_position,
        Some(InitialPosition::AtTimestamp(
            SystemTime::UNIX_EPOCH + Duration::from_secs(10)
        ))
    );
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("line 5") && p.warnings[0].contains("line 6"));
}

#[test]
fn missing_required_keys() {
    let e = from_properties_text("applicationName = a1b\nstreamName = s\n").unwrap_err();
    assert!(matches!(
        e,
        SettingsError::MissingKey {
            key: "executableName",
            ..
        }
    ));
    let e = from_properties_text("executableName = x\nstreamName = s\n").unwrap_err();
    assert!(e.to_string().contains("applicationName"));
    let e = from_properties_text("executableName = x\napplicationName = app\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing required property streamName or streamArn: the Kinesis stream to consume (streamArn wins when both are set; several streams: streamNames or streamArns)"
    );
    // An empty value is "not set".
    let e = from_properties_text("executableName =   \napplicationName = app\nstreamName = s\n")
        .unwrap_err();
    assert!(matches!(
        e,
        SettingsError::MissingKey {
            key: "executableName",
            ..
        }
    ));
}

#[test]
fn stream_arn_wins_and_is_validated() {
    let text = "executableName = x\napplicationName = app\nstreamName = other\nstreamArn = arn:aws-cn:kinesis:cn-north-1:123456789012:stream/real\n";
    let p = from_properties_text(text).expect("valid");
    assert_eq!(p.settings.stream_name, "real");
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("streamName = other differs")));

    for (arn, why) in [
        (
            "arn:aws:kinesis:us-east-1:123456789012:table/x",
            "not stream/<name>",
        ),
        (
            "arn:aws:dynamodb:us-east-1:123456789012:stream/x",
            "not \"kinesis\"",
        ),
        ("arn:aws:kinesis:us-east-1:1234:stream/x", "not 12 digits"),
        ("arn:aws:kinesis::123456789012:stream/x", "invalid region"),
        ("aws:kinesis:us-east-1:123456789012:stream/x", "six"),
        (
            "arn:aws:kinesis:us-east-1:123456789012:stream/bad name",
            "not a valid",
        ),
    ] {
        let e = err(&format!("streamArn = {arn}\n"));
        let msg = e.to_string();
        assert!(msg.contains(why), "{arn}: {msg}");
        assert!(msg.starts_with("properties line 5: streamArn"), "{msg}");
    }
}

#[test]
fn stream_and_table_names_validated() {
    let e =
        from_properties_text("executableName = x\napplicationName = app\nstreamName = bad/name\n")
            .unwrap_err();
    assert!(
        e.to_string().contains("properties line 3: streamName"),
        "{e}"
    );
    assert!(err("tableName = ab\n").to_string().contains("3 to 255"));
    // applicationName doubles as the table name unless tableName is set.
    let base = "executableName = x\nstreamName = s\napplicationName = My App\n";
    assert!(from_properties_text(base).is_err());
    assert!(from_properties_text(&format!("{base}tableName = leases\n")).is_ok());
}

#[test]
fn endpoints_and_regions_validated() {
    assert!(err("kinesisEndpoint = localhost:4567\n")
        .to_string()
        .contains("with scheme"));
    assert!(err("dynamoDBEndpoint = http://\n").is_invalid_value());
    assert!(err("regionName = US East\n").to_string().contains("region"));
}

#[test]
fn unknown_keys_warn_with_line_and_suggestion() {
    let p = parse("failovertimemillis = 5\nfooBar = 1\n");
    assert_eq!(
        p.warnings,
        vec![
            "properties line 5: unknown key failovertimemillis (ignored); did you mean failoverTimeMillis?".to_string(),
            "properties line 6: unknown key fooBar (ignored)".to_string(),
        ]
    );
    assert_eq!(p.settings.failover_time, None);
}

#[test]
fn ignored_keys_are_listed() {
    let p = parse(
        "millisBehindLatestThresholdForReducedTps = 0\nvalidateSequenceNumberBeforeCheckpointing = true\nfanoutConfig.maxDescribeStreamSummaryRetries = 3\ndisableWorkerMetrics = true\ncoordinatorStateTableName =\n",
    );
    assert_eq!(
        p.ignored,
        vec![
            "millisBehindLatestThresholdForReducedTps (line 5: not implemented by this KCL)"
                .to_string(),
            "validateSequenceNumberBeforeCheckpointing (line 6: no effect since KCL 2.x)"
                .to_string(),
            "fanoutConfig.maxDescribeStreamSummaryRetries (line 7: the stream ARN is looked up once, within the start-up retries)".to_string(),
            "disableWorkerMetrics (line 8: this KCL's leader balances by lease count and throughput, and its workers report no CPU metric (as Java workers outside EC2))"
                .to_string(),
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn retrieval_mode_follows_the_java_daemon() {
    use kinesis_client::RetrievalMode as Used;
    // Nothing set: fan-out, as Java's DEFAULT without polling keys; an info line says why.
    let p = parse("");
    assert_eq!(
        (p.settings.retrieval_mode, p.settings.retrieval()),
        (None, Used::FanOut)
    );
    assert!(
        p.info.iter().any(|i| i.contains("no polling key is set")),
        "{:?}",
        p.info
    );
    // DEFAULT with a polling key: polling.
    let p = parse("retrievalMode = default\nmaxRecords = 100\n");
    assert_eq!(p.settings.retrieval(), Used::Polling);
    assert!(
        p.info.iter().any(|i| i.contains("maxRecords (line 6)")),
        "{:?}",
        p.info
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // A zero is not "set" (Java's primitive fields).
    assert_eq!(
        parse("idleTimeBetweenReadsInMillis = 0\n")
            .settings
            .retrieval(),
        Used::FanOut
    );
    // FANOUT: no more fallback warning; polling keys beside it are warned about.
    let p = parse("retrievalMode = FANOUT\n");
    assert_eq!(p.settings.retrieval_mode, Some(RetrievalMode::FanOut));
    assert_eq!(p.settings.retrieval(), Used::FanOut);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = parse("retrievalMode = FANOUT\nidleTimeBetweenReadsInMillis = 500\n");
    assert_eq!(p.settings.retrieval(), Used::FanOut);
    assert!(
        p.warnings[0].contains("idleTimeBetweenReadsInMillis (line 6) have no effect"),
        "{:?}",
        p.warnings
    );
    // POLLING with fan-out keys: those are warned about.
    let p = parse("retrievalMode = POLLING\nfanoutConfig.consumerName = c\n");
    assert_eq!(p.settings.retrieval(), Used::Polling);
    assert!(
        p.warnings[0].contains("fanoutConfig.consumerName (line 6)"),
        "{:?}",
        p.warnings
    );
    assert!(err("retrievalMode = turbo\n").is_invalid_value());
}

#[test]
fn fanout_config_keys_are_typed_validated_and_mapped() {
    let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/my-stream/consumer/c1:1700000000";
    let p = parse(&format!(
        "retrievalMode = FANOUT\nfanoutConfig.consumerArn = {arn}\nfanoutConfig.maxDescribeStreamConsumerRetries = 20\nfanoutConfig.registerStreamConsumerRetries = 3\nfanoutConfig.retryBackoffMillis = 250\n"
    ));
    let f = &p.settings.fan_out;
    assert_eq!(f.consumer_arn.as_deref(), Some(arn));
    assert_eq!(f.max_describe_stream_consumer_retries, Some(20));
    assert_eq!(f.register_stream_consumer_retries, Some(3));
    assert_eq!(f.retry_backoff, Some(Duration::from_millis(250)));
    let config = crate::daemon::kcl_config(&p.settings).unwrap();
    assert_eq!(
        config.retrieval_mode(),
        kinesis_client::RetrievalMode::FanOut
    );
    assert_eq!(
        config.fan_out_consumer(),
        kinesis_client::retrieval::ConsumerRef::Arn(arn.into())
    );
    assert_eq!(config.fan_out().register_stream_consumer_retries, 3);
    assert_eq!(config.fan_out().retry_backoff, Duration::from_millis(250));
    // The name defaults to the application name.
    let config = crate::daemon::kcl_config(&parse("").settings).unwrap();
    assert_eq!(
        config.fan_out_consumer(),
        kinesis_client::retrieval::ConsumerRef::Name("MyApp".into())
    );
    let named = parse("fanoutConfig.consumerName = other-consumer\n");
    let config = crate::daemon::kcl_config(&named.settings).unwrap();
    assert_eq!(
        config.fan_out_consumer(),
        kinesis_client::retrieval::ConsumerRef::Name("other-consumer".into())
    );
    assert!(err("fanoutConfig.consumerName = a b\n").is_invalid_value());
    assert!(err(
        "fanoutConfig.consumerArn = arn:aws:kinesis:us-east-1:123456789012:stream/my-stream\n"
    )
    .is_invalid_value());
    assert!(err("fanoutConfig.retryBackoffMillis = soon\n").is_invalid_value());
    // A consumer of another stream: the mapping names the key.
    let other = "arn:aws:kinesis:us-east-1:123456789012:stream/other/consumer/c1:1";
    let p = parse(&format!("fanoutConfig.consumerArn = {other}\n"));
    let e = crate::daemon::kcl_config(&p.settings).unwrap_err();
    assert_eq!(e.key, "fanoutConfig.consumerArn");
}

#[test]
fn low_idle_time_warns_but_is_kept() {
    let p = parse("idleTimeBetweenReadsInMillis = 0\n");
    assert_eq!(p.settings.idle_time_between_reads, Some(Duration::ZERO));
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn credentials_keys() {
    let text = "executableName = x\napplicationName = app\nstreamName = s\nAWSCredentialsProvider = DefaultAWSCredentialsProviderChain, SystemPropertyCredentialsProvider\n";
    let p = from_properties_text(text).expect("valid");
    assert_eq!(
        p.settings.credentials.kinesis,
        vec![CredentialsSpec::Default]
    );
    let credentials_info: Vec<&String> = p
        .info
        .iter()
        .filter(|i| i.contains("CredentialsProvider"))
        .collect();
    assert_eq!(credentials_info.len(), 1, "{:?}", p.info);
    assert!(credentials_info[0].starts_with("properties line 4: AWSCredentialsProvider: "));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("SystemPropertyCredentialsProvider"));

    let e = err("AwsCredentialsProviderDynamoDB = com.example.Custom\n");
    assert!(e.to_string().starts_with(
        "properties line 5: AwsCredentialsProviderDynamoDB = \"com.example.Custom\": no supported credentials provider"
    ), "{e}");

    let p = from_properties_text("executableName = x\napplicationName = app\nstreamName = s\n")
        .expect("valid");
    assert_eq!(
        p.settings.credentials.kinesis,
        vec![CredentialsSpec::Default]
    );
    assert!(p.warnings[0].contains("AwsCredentialsProvider is not set"));
}

#[test]
fn later_duplicate_and_alias_win() {
    let p = parse("workerId = a\nworkerIdentifier = b\n");
    assert_eq!(p.settings.worker_id.as_deref(), Some("b"));
    let p = parse("workerIdentifier = b\nworkerId = a\n");
    assert_eq!(p.settings.worker_id.as_deref(), Some("a"));
}

#[test]
fn command_splits_on_runs_of_spaces() {
    let p = parse("executableName =  node   sample_kcl_app.js  --flag\n");
    assert_eq!(
        p.settings.command(),
        vec!["node", "sample_kcl_app.js", "--flag"]
    );
}

#[test]
fn syntax_errors_pass_through() {
    let e = from_properties_text("a = \\uXYZW\n").unwrap_err();
    assert!(matches!(e, SettingsError::Syntax(_)));
    assert!(e.to_string().starts_with("properties line 1:"));
}

impl SettingsError {
    fn is_invalid_value(&self) -> bool {
        matches!(self, SettingsError::InvalidValue { .. })
    }
}

#[test]
fn every_key_of_the_shipped_samples_is_known() {
    // kclpy/aws-kcl sample.properties with every commented key filled in, like the Java
    // test fixture multilang.properties.
    let text = "\
executableName = sample_kclpy_app.py
streamName = kclpysample
applicationName = PythonKCLSample
AwsCredentialsProvider = DefaultCredentialsProvider
processingLanguage = python/3.8
initialPositionInStream = TRIM_HORIZON
initialPositionInStreamExtended = 1636609142
regionName = us-east-1
failoverTimeMillis = 10000
workerId = \"workerId\"
shardSyncIntervalMillis = 60000
maxRecords = 10000
idleTimeBetweenReadsInMillis = 1000
callProcessRecordsEvenForEmptyRecordList = false
parentShardPollIntervalMillis = 10000
cleanupLeasesUponShardCompletion = true
taskBackoffTimeMillis = 500
metricsBufferTimeMillis = 10000
metricsMaxQueueSize = 10000
validateSequenceNumberBeforeCheckpointing = true
maxActiveThreads = -1
metricsEnabledDimensions = Operation,ShardId
millisBehindLatestThresholdForReducedTps = 0
clientVersionConfig = CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2x
coordinatorStateTableName = MultiLangTest-CoordinatorState-CustomName
coordinatorStateBillingMode = PROVISIONED
coordinatorStateReadCapacity = 1000
coordinatorStateWriteCapacity = 500
coordinatorStatePointInTimeRecoveryEnabled = true
coordinatorStateDeletionProtectionEnabled = false
coordinatorStateTags = csTagK1=csTagV1,csTagK2=csTagV2
gracefulLeaseHandoffTimeoutMillis = 10000
isGracefulLeaseHandoffEnabled = false
workerMetricsTableName = MultiLangTest-WorkerMetrics-CustomName
workerMetricsBillingMode = PROVISIONED
workerMetricsReadCapacity = 250
workerMetricsWriteCapacity = 90
workerMetricsPointInTimeRecoveryEnabled = true
workerMetricsDeletionProtectionEnabled = true
workerMetricsTags = wmTagK1=wmTagV1,wmTagK2=wmTagV2
inMemoryWorkerMetricsCaptureFrequencyMillis = 5000
workerMetricsReporterFreqInMillis = 60000
noOfPersistedMetricsPerWorkerMetrics = 50
disableWorkerMetrics = true
maxThroughputPerHostKBps = 10000
dampeningPercentage = 90
reBalanceThresholdPercentage = 5
allowThroughputOvershoot = false
varianceBalancingFrequency = 5
workerMetricsEMAAlpha = 0.18
staleWorkerMetricsEntryCleanupDuration = PT12H
leaseAssignmentIntervalMillis = 20000
";
    let p = from_properties_text(text).expect("valid");
    assert_eq!(
        p.warnings,
        vec![
            "properties line 7: initialPositionInStreamExtended takes precedence over initialPositionInStream (line 6)"
                .to_string()
        ]
    );
    // 52 keys: 28 typed (workerId's quotes are kept, as in Java), 24 accepted but unused.
    assert_eq!(p.ignored.len(), 24, "{:#?}", p.ignored);
    let fleet = &p.settings.fleet;
    assert_eq!(
        fleet.client_version_config,
        Some(kinesis_client::fleet::ClientVersionConfig::CompatibleWith2x)
    );
    assert_eq!(
        fleet.coordinator_state_table_name.as_deref(),
        Some("MultiLangTest-CoordinatorState-CustomName")
    );
    assert_eq!(
        fleet.worker_metrics_table_name.as_deref(),
        Some("MultiLangTest-WorkerMetrics-CustomName")
    );
    assert_eq!(
        fleet.graceful_lease_handoff_timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(fleet.graceful_lease_handoff_enabled, Some(false));
    assert_eq!(
        fleet.worker_metrics_reporter_interval,
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        fleet.lease_assignment_interval,
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        p.settings.metrics.buffer_time,
        Some(Duration::from_secs(10))
    );
    assert_eq!(p.settings.metrics.max_queue_size, Some(10_000));
    assert_eq!(
        p.settings.metrics.enabled_dimensions,
        Some(Some(["Operation", "ShardId"].map(String::from).into()))
    );
    assert_eq!(p.settings.worker_id.as_deref(), Some("\"workerId\""));
    assert_eq!(p.settings.cleanup_leases_upon_shard_completion, Some(true));
    assert_eq!(
        p.settings.call_process_records_even_for_empty_record_list,
        Some(false)
    );
}

#[test]
fn skip_failing_records_keys_make_a_retry_policy() {
    use kinesis_client::processor::RetryPolicy;
    assert_eq!(
        parse("").settings.retry_policy(),
        None,
        "never skip by default"
    );
    let s = parse("skipFailingRecordsAfterAttempts = 3\nskipFailingRecordsAfterAgeSeconds = 600\n")
        .settings;
    assert_eq!(s.skip_failing_records_after_attempts, Some(3));
    assert_eq!(
        s.skip_failing_records_after_age,
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        s.retry_policy(),
        Some(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_max_record_age(Duration::from_secs(600))
        )
    );
    let only_age = parse("skipFailingRecordsAfterAgeSeconds = 60\n").settings;
    assert_eq!(
        only_age.retry_policy(),
        Some(RetryPolicy::default().with_max_record_age(Duration::from_secs(60)))
    );
    for bad in [
        "skipFailingRecordsAfterAttempts = 0\n",
        "skipFailingRecordsAfterAttempts = many\n",
        "skipFailingRecordsAfterAgeSeconds = 0\n",
        "skipFailingRecordsAfterAgeSeconds = -1\n",
    ] {
        assert!(
            matches!(err(bad), SettingsError::InvalidValue { .. }),
            "{bad}"
        );
    }
}

#[test]
fn metrics_keys_configure_cloudwatch_and_prometheus() {
    let p = parse(
        "metricsLevel = summary\nmetricsEnabledDimensions = Operation, WorkerIdentifier\nmetricsBufferTimeMillis = 2500\nmetricsMaxQueueSize = 50\ncloudWatchEndpoint = http://127.0.0.1:5000\ncloudWatchRegionName = eu-west-1\nmetricsPrometheusPort = 9464\n",
    );
    let m = &p.settings.metrics;
    assert_eq!(m.level(), MetricsLevel::Summary);
    assert_eq!(
        m.enabled_dimensions,
        Some(Some(
            ["Operation", "WorkerIdentifier"].map(String::from).into()
        ))
    );
    assert_eq!(m.buffer_time, Some(Duration::from_millis(2500)));
    assert_eq!(m.max_queue_size, Some(50));
    assert_eq!(
        m.cloudwatch_endpoint.as_deref(),
        Some("http://127.0.0.1:5000")
    );
    assert_eq!(m.cloudwatch_region_name.as_deref(), Some("eu-west-1"));
    assert_eq!(
        m.prometheus_addr(),
        Some("127.0.0.1:9464".parse().unwrap()),
        "loopback by default"
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(p.ignored.is_empty(), "{:?}", p.ignored);

    let p = parse("metricsEnabledDimensions = ALL\nmetricsPrometheusPort = 0\nmetricsPrometheusBindAddress = 0.0.0.0\nmetricsEnabledDimensions = ALL,Shard\n");
    assert_eq!(p.settings.metrics.enabled_dimensions, Some(None));
    assert_eq!(
        p.settings.metrics.prometheus_addr(),
        Some("0.0.0.0:0".parse().unwrap())
    );
    // Defaults: Java's DETAILED, no Prometheus endpoint.
    let p = parse("");
    assert_eq!(p.settings.metrics.level(), MetricsLevel::Detailed);
    assert_eq!(p.settings.metrics.prometheus_addr(), None);
}

#[test]
fn bad_metrics_values_name_the_key_and_line() {
    for (text, key) in [
        ("metricsLevel = VERBOSE\n", "metricsLevel"),
        ("metricsPrometheusPort = 70000\n", "metricsPrometheusPort"),
        (
            "metricsPrometheusBindAddress = localhost\n",
            "metricsPrometheusBindAddress",
        ),
        ("metricsMaxQueueSize = 0\n", "metricsMaxQueueSize"),
        (
            "cloudWatchEndpoint = 127.0.0.1:5000\n",
            "cloudWatchEndpoint",
        ),
    ] {
        let err = err(text);
        assert!(
            matches!(&err, SettingsError::InvalidValue { key: k, line: 5, .. } if k == key),
            "{text}: {err}"
        );
    }
    let p = parse("metricsEnabledDimensions = Operation,Shard\n");
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("Shard (known:"), "{:?}", p.warnings);
}

#[test]
fn kcl_3x_keys_are_read_with_the_java_names_and_values() {
    use kinesis_client::fleet::ClientVersionConfig;
    for (value, expected) in [
        ("CLIENT_VERSION_CONFIG_3X", ClientVersionConfig::V3x),
        ("client_version_config_3x", ClientVersionConfig::V3x),
        (
            "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
            ClientVersionConfig::CompatibleWith2x,
        ),
        (
            "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X_PHASE1",
            ClientVersionConfig::Auto,
        ),
    ] {
        let p = parse(&format!("clientVersionConfig = {value}\n"));
        assert_eq!(
            p.settings.fleet.client_version_config,
            Some(expected),
            "{value}"
        );
        assert!(p.ignored.is_empty() && p.warnings.is_empty(), "{p:?}");
    }
    let unset = parse("").settings.fleet.to_config();
    assert_eq!(unset, kinesis_client::fleet::FleetConfig::default());
    assert_eq!(unset.client_version_config, ClientVersionConfig::Auto);
    match err("clientVersionConfig = CLIENT_VERSION_4X\n") {
        SettingsError::InvalidValue {
            key,
            line,
            expected,
            ..
        } => {
            assert_eq!((key.as_str(), line), ("clientVersionConfig", 5));
            assert!(expected.contains("CLIENT_VERSION_CONFIG_3X"), "{expected}");
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "gracefulLeaseHandoffTimeoutMillis = 0\n",
        "leaseAssignmentIntervalMillis = soon\n",
        "isGracefulLeaseHandoffEnabled = maybe\n",
        "coordinatorStateTableName = a\n",
    ] {
        assert!(
            matches!(err(bad), SettingsError::InvalidValue { .. }),
            "{bad}"
        );
    }
}
