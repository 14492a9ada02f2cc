//! The sample properties files, and properties errors as the binary reports them.

use std::time::Duration;

use kinesis_client_multilang::credentials::CredentialsSpec;
use kinesis_client_multilang::settings::{self, InitialPosition};

use crate::harness::*;
use testkit::LocalAws;

/// The keys the daemon reads (`multilang/src/settings.rs`), except the alias
/// `workerIdentifier`.
const SUPPORTED_KEYS: &[&str] = &[
    "executableName",
    "streamArn",
    "streamName",
    "applicationName",
    "tableName",
    "workerId",
    "regionName",
    "dynamoDBRegionName",
    "kinesisEndpoint",
    "dynamoDBEndpoint",
    "AwsCredentialsProvider",
    "AwsCredentialsProviderDynamoDB",
    "AwsCredentialsProviderCloudWatch",
    "initialPositionInStream",
    "initialPositionInStreamExtended",
    "failoverTimeMillis",
    "shardSyncIntervalMillis",
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "callProcessRecordsEvenForEmptyRecordList",
    "parentShardPollIntervalMillis",
    "cleanupLeasesUponShardCompletion",
    "taskBackoffTimeMillis",
    "skipFailingRecordsAfterAttempts",
    "skipFailingRecordsAfterAgeSeconds",
    "maxLeasesForWorker",
    "maxLeasesToStealAtOneTime",
    "timeoutInSeconds",
    "shutdownGraceMillis",
    "maxActiveThreads",
    "processingLanguage",
    "retrievalMode",
    "fanoutConfig.consumerName",
    "fanoutConfig.consumerArn",
    "fanoutConfig.maxDescribeStreamConsumerRetries",
    "fanoutConfig.registerStreamConsumerRetries",
    "fanoutConfig.retryBackoffMillis",
];

/// Both sample files parse with no warning (so they cannot rot as the daemon changes), list
/// every key the daemon knows, and configure the local services and static test credentials.
#[test]
fn sample_properties_files_parse_without_warnings() {
    for (file, executable, stream) in [
        (
            "python-sample.properties",
            "python3 samples/sample_kclpy_app.py",
            "kclpysample",
        ),
        (
            "node-sample.properties",
            "node multilang/samples/node/sample_processor.js",
            "kclnodejssample",
        ),
    ] {
        let path = properties_dir().join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parsed =
            settings::from_properties_bytes(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(parsed.warnings.is_empty(), "{file}: {:?}", parsed.warnings);
        assert!(
            parsed.ignored.is_empty(),
            "{file}: only comments for ignored keys: {:?}",
            parsed.ignored
        );
        let s = &parsed.settings;
        assert_eq!(s.executable_name, executable, "{file}");
        assert_eq!(s.stream_name, stream, "{file}");
        assert_eq!(s.region_name.as_deref(), Some("us-east-1"), "{file}");
        assert_eq!(
            s.kinesis_endpoint.as_deref(),
            Some("http://127.0.0.1:4567"),
            "{file}"
        );
        assert_eq!(
            s.dynamodb_endpoint.as_deref(),
            Some("http://127.0.0.1:8000"),
            "{file}"
        );
        assert_eq!(
            s.initial_position,
            Some(InitialPosition::TrimHorizon),
            "{file}"
        );
        assert!(
            matches!(s.credentials.kinesis.as_slice(), [CredentialsSpec::Static { access_key_id, .. }] if access_key_id == "test"),
            "{file}: {:?}",
            s.credentials.kinesis
        );

        // Every key the daemon supports is documented (active or commented out), and every
        // commented-out `key = value` example is itself valid.
        let text = String::from_utf8(bytes).unwrap();
        for key in SUPPORTED_KEYS {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(documented, "{file}: key {key} is not listed");
        }
        // (initialPositionInStreamExtended stays commented: it would override TRIM_HORIZON
        // with a warning saying so; so do the fanoutConfig keys, which warn beside the polling
        // examples. They are checked with retrievalMode = FANOUT below.)
        let uncommented: String = text
            .lines()
            .map(|l| {
                let rest = l.trim_start_matches(['#', ' ']);
                let is_example = l.starts_with('#')
                    && SUPPORTED_KEYS.iter().any(|k| {
                        *k != "initialPositionInStreamExtended"
                            && !k.starts_with("fanoutConfig.")
                            && rest
                                .strip_prefix(k)
                                .is_some_and(|r| r.trim_start().starts_with('='))
                    });
                if is_example {
                    rest
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = settings::from_properties_text(&uncommented)
            .unwrap_or_else(|e| panic!("{file} with every example uncommented: {e}"));
        assert!(
            all.warnings.is_empty(),
            "{file} with every example uncommented: {:?}",
            all.warnings
        );
        // The fan-out examples, with retrievalMode = FANOUT.
        let fan_out: String = text
            .lines()
            .map(|l| {
                let rest = l.trim_start_matches(['#', ' ']);
                if l.starts_with('#') && rest.starts_with("fanoutConfig.") && rest.contains('=') {
                    rest
                } else {
                    l
                }
            })
            .chain(["retrievalMode = FANOUT"])
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = settings::from_properties_text(&fan_out)
            .unwrap_or_else(|e| panic!("{file} with the fan-out examples: {e}"));
        assert!(parsed.warnings.is_empty(), "{file}: {:?}", parsed.warnings);
        assert_eq!(
            parsed.settings.retrieval(),
            kinesis_client::RetrievalMode::FanOut,
            "{file}"
        );
        kinesis_client_multilang::daemon::kcl_config(&parsed.settings)
            .unwrap_or_else(|e| panic!("{file} with the fan-out examples: {e}"));
    }
}

/// Runs the binary on `text` and waits for it to exit; returns (exit code, output).
async fn run_to_exit(name: &str, text: &str) -> anyhow::Result<(Option<i32>, String)> {
    let scratch = Scratch::new(name)?;
    let path = scratch.file("bad.properties");
    std::fs::write(&path, text)?;
    let mut daemon = Daemon::start(&scratch.path, &path, &[])?;
    let status = daemon.wait_exit(Duration::from_secs(20)).await?;
    Ok((status.code(), daemon.log()))
}

const VALID: &str = "\
executableName = python3 app.py
streamName = some-stream
applicationName = some-app
AwsCredentialsProvider = KclStaticCredentialsProvider|test|test
regionName = us-east-1
";

/// A bad value: exit code 2, and the message names the key, the value and the line.
#[tokio::test]
async fn a_bad_value_exits_2_naming_key_value_and_line() -> anyhow::Result<()> {
    let text = format!("{VALID}# a comment\nfailoverTimeMillis = soon\n");
    let (code, log) = run_to_exit("bad-value", &text).await?;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("failoverTimeMillis"), "{log}");
    assert!(log.contains("soon"), "{log}");
    assert!(log.contains("line 7"), "{log}");
    assert!(
        log.contains("milliseconds"),
        "says what was expected: {log}"
    );
    Ok(())
}

/// A missing required key: exit code 2, and the message names the key.
#[tokio::test]
async fn a_missing_required_key_exits_2_naming_it() -> anyhow::Result<()> {
    let text = VALID.replace("executableName = python3 app.py\n", "");
    let (code, log) = run_to_exit("missing-key", &text).await?;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("executableName"), "{log}");
    assert!(log.contains("missing"), "{log}");

    let text = VALID.replace("streamName = some-stream\n", "");
    let (code, log) = run_to_exit("missing-stream", &text).await?;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("streamName or streamArn"), "{log}");
    Ok(())
}

/// An unknown key is a warning naming it and its line (with a suggestion for a mistyped
/// case); the daemon still starts, consumes, and stops cleanly on SIGTERM.
#[tokio::test]
async fn an_unknown_key_is_a_warning_and_the_daemon_runs() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("unknown-key")?;
    let output = scratch.file("out.txt");
    let (stream, put) = stream_with_records(&aws, "e2e-unknown-key", 1, "u", 5).await?;
    let app = testkit::unique_name("e2e-unknown-key-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("bogusSetting", "1")
    .set("FailoverTimeMillis", "5000");
    let line_of = |key: &str| {
        props
            .render()
            .lines()
            .position(|l| l.starts_with(key))
            .map(|i| i + 1)
            .unwrap()
    };
    let (bogus_line, typo_line) = (line_of("bogusSetting"), line_of("FailoverTimeMillis"));
    let path = props.write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &path, &python_env(&kclpy, &output))?;
    daemon
        .until_logged(
            LIMIT,
            &format!("properties line {bogus_line}: unknown key bogusSetting (ignored)"),
        )
        .await;
    daemon
        .until_logged(
            LIMIT,
            &format!(
                "properties line {typo_line}: unknown key FailoverTimeMillis (ignored); did you mean failoverTimeMillis?"
            ),
        )
        .await;
    daemon
        .until(LIMIT, "the records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
