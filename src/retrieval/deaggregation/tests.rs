use super::*;
use crate::testing::kpl::{aggregate, UserRecordSpec};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

const SEQ: &str = "49590338271490256608559692538361571095921575989136588801";

fn seq() -> crate::SequenceNumber {
    SEQ.parse().unwrap()
}

fn parent(data: Vec<u8>) -> Record {
    Record {
        approximate_arrival_timestamp: Some(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        ),
        ..Record::new(data, "aggregate-pk", seq())
    }
}

fn spec(pk: &str, ehk: Option<&str>, data: &[u8]) -> UserRecordSpec {
    UserRecordSpec {
        partition_key: pk.into(),
        explicit_hash_key: ehk.map(str::to_string),
        data: data.to_vec(),
    }
}

fn run(record: Record, range: Option<HashKeyRange>) -> (Vec<Record>, Outcome) {
    let mut out = Vec::new();
    let outcome = deaggregate(record, range, &mut out);
    (out, outcome)
}

/// The user records a correct de-aggregation of `specs` yields.
fn expected(specs: &[UserRecordSpec]) -> Vec<Record> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Record {
            data: s.data.clone().into(),
            partition_key: s.partition_key.clone(),
            sequence_number: seq(),
            sub_sequence_number: i as u64,
            explicit_hash_key: s.explicit_hash_key.clone(),
            aggregated: true,
            approximate_arrival_timestamp: parent(Vec::new()).approximate_arrival_timestamp,
        })
        .collect()
}

/// Bytes written by awslabs' own aggregator (`aws-kinesis-agg` 1.2.3 for Python):
/// `add_user_record("pk0", b"data0")`, `("pk1", b"data1", explicit_hash_key="123")`,
/// `("pk2", b"data2")`, then `clear_and_get().get_contents()`.
const AWS_KINESIS_AGG_VECTOR: &str = "f3899ac20a03706b300a03706b310a03706b3212033132331a0908001a0564617461301a0b080110001a0564617461311a0908021a056461746132cbbe871671f2ed97b037f0cf868fabc2";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reads_what_the_aws_aggregator_writes() {
    let (out, outcome) = run(parent(unhex(AWS_KINESIS_AGG_VECTOR)), None);
    assert_eq!(
        outcome,
        Outcome::Aggregate {
            user_records: 3,
            outside_hash_range: 0
        }
    );
    let want = [
        spec("pk0", None, b"data0"),
        spec("pk1", Some("123"), b"data1"),
        spec("pk2", None, b"data2"),
    ];
    assert_eq!(out, expected(&want));
    // And our encoder writes the same bytes.
    assert_eq!(aggregate(&want), unhex(AWS_KINESIS_AGG_VECTOR));
}

#[test]
fn plain_records_pass_unchanged() {
    for data in [
        Vec::new(),
        b"hello".to_vec(),
        vec![0xF3, 0x89, 0x9A],
        vec![0xF3, 0x89, 0x9A, 0xC3, 1, 2, 3],
    ] {
        let r = parent(data);
        let (out, outcome) = run(r.clone(), None);
        assert_eq!(outcome, Outcome::Plain);
        assert_eq!(out, vec![r]);
    }
}

/// Each corruption: the record is passed on whole and unchanged, with the reason.
fn assert_raw(data: Vec<u8>, why: impl Fn(&CorruptAggregate) -> bool) {
    let r = parent(data);
    let (out, outcome) = run(r.clone(), None);
    match &outcome {
        Outcome::Corrupt(c) => assert!(why(c), "unexpected reason {c}"),
        other => panic!("expected a corrupt aggregate, got {other:?}"),
    }
    assert_eq!(out, vec![r]);
}

/// A valid trailer over `body`.
fn with_trailer(body: &[u8]) -> Vec<u8> {
    let mut v = KPL_MAGIC.to_vec();
    v.extend_from_slice(body);
    v.extend_from_slice(&Md5::digest(body));
    v
}

#[test]
fn corrupt_md5_is_delivered_raw() {
    let good = aggregate(&[spec("a", None, b"1"), spec("b", None, b"2")]);
    let mut bad_trailer = good.clone();
    *bad_trailer.last_mut().unwrap() ^= 1;
    assert_raw(bad_trailer, |c| *c == CorruptAggregate::DigestMismatch);
    let mut bad_body = good.clone();
    bad_body[6] ^= 0x40;
    assert_raw(bad_body, |c| *c == CorruptAggregate::DigestMismatch);
}

#[test]
fn truncated_protobuf_is_delivered_raw() {
    let good = aggregate(&[spec("a", None, b"payload one"), spec("b", None, b"two")]);
    let body = &good[KPL_MAGIC.len()..good.len() - DIGEST_LEN];
    // Cut inside the last user record, with a trailer that matches the cut message.
    assert_raw(with_trailer(&body[..body.len() - 3]), |c| {
        matches!(c, CorruptAggregate::Protobuf(_))
    });
}

#[test]
fn too_short_bad_index_and_empty_aggregates_are_delivered_raw() {
    let mut short = KPL_MAGIC.to_vec();
    short.extend_from_slice(&[0; DIGEST_LEN]);
    assert_raw(short, |c| *c == CorruptAggregate::TooShort { len: 20 });

    let bad_pk = AggregatedRecord {
        partition_key_table: vec!["a".into()],
        explicit_hash_key_table: vec![],
        records: vec![UserRecord {
            partition_key_index: 1,
            explicit_hash_key_index: None,
            data: Bytes::from_static(b"x"),
        }],
    };
    assert_raw(with_trailer(&bad_pk.encode_to_vec()), |c| {
        matches!(
            c,
            CorruptAggregate::BadIndex {
                table: "partition key",
                index: 1,
                len: 1,
                ..
            }
        )
    });
    let bad_ehk = AggregatedRecord {
        explicit_hash_key_table: vec![],
        records: vec![UserRecord {
            partition_key_index: 0,
            explicit_hash_key_index: Some(0),
            data: Bytes::from_static(b"x"),
        }],
        ..bad_pk.clone()
    };
    assert_raw(with_trailer(&bad_ehk.encode_to_vec()), |c| {
        matches!(
            c,
            CorruptAggregate::BadIndex {
                table: "explicit hash key",
                ..
            }
        )
    });
    let empty = AggregatedRecord {
        partition_key_table: vec!["a".into()],
        ..Default::default()
    };
    assert_raw(with_trailer(&empty.encode_to_vec()), |c| {
        *c == CorruptAggregate::Empty
    });
}

/// Records outside the shard's range (by explicit hash key, or by the partition key's MD5)
/// are delivered and counted; the whole key space, or an unknown range, counts nothing.
#[test]
fn records_outside_the_shard_are_delivered_and_counted() {
    let low = HashKeyRange {
        start: 0,
        end: u128::MAX / 2,
    };
    let pk_low = (0..)
        .map(|i| format!("pk{i}"))
        .find(|k| partition_key_hash(k) <= low.end)
        .unwrap();
    let pk_high = (0..)
        .map(|i| format!("pk{i}"))
        .find(|k| partition_key_hash(k) > low.end)
        .unwrap();
    let high_ehk = u128::MAX.to_string();
    let specs = [
        spec(&pk_low, None, b"in by pk"),
        spec(&pk_high, None, b"out by pk"),
        spec(&pk_high, Some("5"), b"in by ehk"),
        spec(&pk_low, Some(&high_ehk), b"out by ehk"),
        spec(&pk_high, None, b"out by pk again"),
    ];
    let data = aggregate(&specs);
    let (out, outcome) = run(parent(data.clone()), Some(low));
    assert_eq!(
        outcome,
        Outcome::Aggregate {
            user_records: 5,
            outside_hash_range: 3
        }
    );
    assert_eq!(out, expected(&specs));
    for range in [
        None,
        Some(HashKeyRange {
            start: 0,
            end: u128::MAX,
        }),
    ] {
        let (out, outcome) = run(parent(data.clone()), range);
        assert_eq!(
            outcome,
            Outcome::Aggregate {
                user_records: 5,
                outside_hash_range: 0
            }
        );
        assert_eq!(out.len(), 5);
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        8 => proptest::collection::vec(any::<u8>(), 1..200),
    ]
}

fn user_record() -> impl Strategy<Value = UserRecordSpec> {
    (
        // A few keys repeat (tables are de-duplicated), some are unique, some empty.
        prop_oneof![
            Just(String::new()),
            (0u8..5).prop_map(|i| format!("key-{i}")),
            "[a-zA-Z0-9é]{1,40}",
        ],
        proptest::option::weighted(0.3, any::<u128>().prop_map(|k| k.to_string())),
        payload(),
    )
        .prop_map(|(partition_key, explicit_hash_key, data)| UserRecordSpec {
            partition_key,
            explicit_hash_key,
            data,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random aggregates of 1..1000 user records (empty, small and large payloads, with and
    /// without explicit hash keys) come back exactly, in order, and out-of-range records are
    /// counted as a direct computation says.
    #[test]
    fn random_aggregates_round_trip(
        mut specs in proptest::collection::vec(user_record(), 1..1000),
        large in proptest::option::weighted(0.3, (any::<prop::sample::Index>(), 100_000usize..600_000)),
        split in any::<u128>(),
    ) {
        if let Some((at, len)) = large {
            let i = at.index(specs.len());
            specs[i].data = (0..len).map(|b| b as u8).collect();
        }
        let range = HashKeyRange { start: 0, end: split };
        let (out, outcome) = run(parent(aggregate(&specs)), Some(range));
        let outside = specs
            .iter()
            .filter(|s| {
                let k = match &s.explicit_hash_key {
                    Some(e) => e.parse::<u128>().unwrap(),
                    None => partition_key_hash(&s.partition_key),
                };
                k > split
            })
            .count();
        let outside = if split == u128::MAX { 0 } else { outside };
        prop_assert_eq!(outcome, Outcome::Aggregate { user_records: specs.len(), outside_hash_range: outside });
        prop_assert_eq!(out, expected(&specs));
    }

    /// Any corruption of an aggregate's bytes is either caught (the record is delivered
    /// whole and unchanged) or, by MD5 collision, impossible: never a partial result.
    #[test]
    fn corrupted_aggregates_are_delivered_whole(
        specs in proptest::collection::vec(user_record(), 1..20),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut data = aggregate(&specs);
        let i = KPL_MAGIC.len() + at.index(data.len() - KPL_MAGIC.len());
        data[i] ^= flip;
        let r = parent(data);
        let (out, outcome) = run(r.clone(), None);
        prop_assert!(matches!(outcome, Outcome::Corrupt(_)), "{:?}", outcome);
        prop_assert_eq!(out, vec![r]);
    }
}
