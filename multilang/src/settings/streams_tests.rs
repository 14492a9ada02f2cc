//! The multi-stream keys: `streamNames`, `streamArns`, per-stream initial positions, the
//! deletion wait, and their errors.

use super::*;
use kinesis_client::StreamIdentifier;

const BASE: &str = "executableName = python3 app.py\napplicationName = MyApp\nAwsCredentialsProvider = DefaultCredentialsProvider\n";

fn parse(extra: &str) -> Parsed {
    from_properties_text(&format!("{BASE}{extra}")).expect("valid settings")
}

fn err(extra: &str) -> String {
    from_properties_text(&format!("{BASE}{extra}"))
        .expect_err("invalid settings")
        .to_string()
}

#[test]
fn names_arns_and_identifiers_with_their_positions() {
    let p = parse(
        "streamNames = orders , refunds, 123456789012:audit:1600000000\n\
         streamArns = arn:aws:kinesis:eu-west-1:210987654321:stream/shared\n\
         initialPositionInStream = TRIM_HORIZON\n\
         initialPositionInStream.refunds = LATEST\n\
         initialPositionInStreamExtended.shared = 1700000000\n\
         formerStreamsLeasesDeletionWaitSeconds = 3600\n",
    );
    let s = &p.settings;
    assert_eq!(s.stream_name, "");
    let names: Vec<&str> = s.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orders", "refunds", "audit", "shared"]);
    assert_eq!(s.streams[0].initial_position, None, "the daemon's default");
    assert_eq!(s.streams[1].initial_position, Some(InitialPosition::Latest));
    assert_eq!(
        s.streams[2].identifier,
        Some(StreamIdentifier::multi("123456789012", "audit", 1_600_000_000).unwrap()),
        "used as written"
    );
    assert_eq!(
        s.streams[3].arn.as_deref(),
        Some("arn:aws:kinesis:eu-west-1:210987654321:stream/shared")
    );
    assert_eq!(
        s.streams[3].initial_position,
        Some(InitialPosition::at_epoch_seconds(1_700_000_000))
    );
    assert_eq!(
        s.former_streams_leases_deletion_wait,
        Some(Duration::from_secs(3600))
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let config = crate::daemon::kcl_config(s).unwrap();
    assert!(config.is_multi_stream());
    assert_eq!(config.stream().name(), "");
}

#[test]
fn stream_name_beside_stream_names_is_a_warning() {
    let p = parse("streamName = one\nstreamNames = a, b\n");
    assert_eq!(p.settings.streams.len(), 2);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("line 4") && w.contains("streamName has no effect")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn bad_lists_name_the_key_the_item_and_the_line() {
    for (extra, want) in [
        ("streamNames = a,,b\n", "streamNames"),
        ("streamNames = a, b c\n", "\"b c\""),
        ("streamNames = a, a\n", "stream a is listed twice"),
        ("streamNames = 12:x\n", "\"12:x\""),
        ("streamArns = arn:aws:kinesis:x\n", "streamArns"),
        (
            "streamNames = a\ninitialPositionInStream.b = LATEST\n",
            "b is not a stream of streamNames or streamArns",
        ),
        (
            "streamNames = a\ninitialPositionInStream.a = SOMETIME\n",
            "initialPositionInStreamExtended.a",
        ),
        (
            "streamName = a\ninitialPositionInStream.a = LATEST\n",
            "needs streamNames or streamArns",
        ),
        (
            "streamNames = a\nformerStreamsLeasesDeletionWaitSeconds = soon\n",
            "formerStreamsLeasesDeletionWaitSeconds",
        ),
    ] {
        let e = err(extra);
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(
            e.contains("line 4") || e.contains("line 5"),
            "{extra:?}: {e}"
        );
    }
}

#[test]
fn a_consumer_arn_is_refused_for_a_multi_stream_daemon() {
    let p = parse(
        "streamNames = a\nretrievalMode = FANOUT\nfanoutConfig.consumerArn = arn:aws:kinesis:us-east-1:123456789012:stream/a/consumer/c:1\n",
    );
    let e = crate::daemon::kcl_config(&p.settings).unwrap_err();
    assert_eq!(e.key, "fanoutConfig.consumerArn");
    assert!(e.message.contains("multi-stream"), "{e}");
}
