use super::*;
use crate::testing::kpl::{aggregate, UserRecordSpec};
use proptest::prelude::*;
use prost::Message;
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
            partition_key: s.partition_key.clone().into(),
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

/// Protobuf field `field` holding `value` as a varint.
fn varint_field(field: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::Varint, &mut out);
    prost::encoding::encode_varint(value, &mut out);
    out
}

/// Protobuf field `field` holding `value` length-delimited.
fn len_field(field: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// A message with the user records before the tables, unknown fields of every wire type
/// (a KPL user record's `tags`, field 4; a group holding a group) between them, and a field
/// given twice (the last wins, as in protobuf): read as `prost` reads it.
#[test]
fn fields_in_any_order_and_unknown_fields_are_read_as_protobuf_says() {
    let group = [
        vec![0x5B], // field 11, start group
        varint_field(1, 7),
        vec![0x13], // field 2, start group
        vec![0x14], // field 2, end group
        vec![0x5C], // field 11, end group
    ]
    .concat();
    let user0 = [
        varint_field(1, 1),
        len_field(3, b"first"),
        len_field(4, &[len_field(1, b"tag"), len_field(2, b"value")].concat()),
        vec![0x2D, 1, 2, 3, 4], // field 5, 32-bit
    ]
    .concat();
    let user1 = [
        len_field(3, b"replaced"),
        varint_field(2, 0),
        group.clone(),
        len_field(3, b"second"),
        vec![0x31, 1, 2, 3, 4, 5, 6, 7, 8], // field 6, 64-bit
    ]
    .concat();
    let body = [
        len_field(3, &user0),
        varint_field(9, 300),
        group,
        len_field(3, &user1),
        len_field(1, b"pk-a"),
        len_field(2, b"12345"),
        len_field(1, b"pk-b"),
    ]
    .concat();
    let decoded = AggregatedRecord::decode(&body[..]).expect("prost reads it");
    assert_eq!(decoded.records.len(), 2);
    let (out, outcome) = run(parent(with_trailer(&body)), None);
    assert_eq!(
        outcome,
        Outcome::Aggregate {
            user_records: 2,
            outside_hash_range: 0
        }
    );
    assert_eq!(
        out,
        expected(&[
            spec("pk-b", None, b"first"),
            spec("pk-a", Some("12345"), b"second"),
        ])
    );
}

/// The last user record takes the aggregate's sequence number (with two user records, the
/// other gets a copy), and every user record's partition key is a slice of the aggregate's
/// buffer, not a copy.
#[test]
fn user_records_take_the_aggregates_sequence_number_and_share_its_buffer_for_keys() {
    let r = parent(aggregate(&[
        spec("aggregate-pk", None, b"0"),
        spec("other", None, b"1"),
    ]));
    let seq_at = r.sequence_number.as_str().as_ptr();
    let buffer = r.data.as_ptr_range();
    let (out, _) = run(r, None);
    assert_eq!(out[1].sequence_number.as_str().as_ptr(), seq_at);
    assert_ne!(out[0].sequence_number.as_str().as_ptr(), seq_at);
    assert_eq!(out[0].sequence_number, seq());
    for user in &out {
        assert!(
            buffer.contains(&user.partition_key.as_ptr()),
            "{:?} is a copy",
            user.partition_key
        );
    }
    assert_eq!(
        out,
        expected(&[spec("aggregate-pk", None, b"0"), spec("other", None, b"1")])
    );
}

/// In an aggregate of three or more, every user record shares one copy of the aggregate's
/// sequence number's digits.
#[test]
fn user_records_of_an_aggregate_share_its_sequence_number() {
    let specs: Vec<_> = (0..5)
        .map(|i| spec(&format!("pk{i}"), None, b"d"))
        .collect();
    let (out, _) = run(parent(aggregate(&specs)), None);
    assert_eq!(out, expected(&specs));
    let digits = out[0].sequence_number.as_str().as_ptr();
    for r in &out {
        assert_eq!(r.sequence_number.as_str().as_ptr(), digits);
        assert_eq!(r.sequence_number, seq());
    }
}

/// A fault in a later user record, found after earlier ones were built: `out` gets the
/// record whole, and keeps what it held before.
#[test]
fn a_fault_after_good_user_records_leaves_only_the_raw_record() {
    let mut records: Vec<UserRecord> = (0..5)
        .map(|i| UserRecord {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data: Bytes::from(vec![i as u8; 10]),
        })
        .collect();
    records[4].partition_key_index = 3;
    let message = AggregatedRecord {
        partition_key_table: vec!["a".into()],
        explicit_hash_key_table: vec![],
        records,
    };
    let r = parent(with_trailer(&message.encode_to_vec()));
    let earlier = Record::new("earlier", "k", 1u64);
    let mut out = vec![earlier.clone()];
    let outcome = deaggregate(r.clone(), None, &mut out);
    assert_eq!(
        outcome,
        Outcome::Corrupt(CorruptAggregate::BadIndex {
            record: 4,
            table: "partition key",
            index: 3,
            len: 1
        })
    );
    assert_eq!(out, vec![earlier, r]);
}

#[test]
fn message_digest_is_the_trailers_md5() {
    let data = unhex(AWS_KINESIS_AGG_VECTOR);
    let end = data.len() - DIGEST_LEN;
    assert_eq!(message_digest(&data[KPL_MAGIC.len()..end]), data[end..]);
    assert_eq!(
        partition_key_hash("pk0"),
        u128::from_be_bytes(Md5::digest(b"pk0").into())
    );
}

/// Bytes spliced into a message: some protobuf fields (known and unknown, well formed or
/// not), some arbitrary bytes.
fn splice() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..12),
        (1u32..12, any::<u64>()).prop_map(|(f, v)| varint_field(f, v)),
        (1u32..12, proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(f, v)| len_field(f, &v)),
        (1u32..12).prop_map(|f| vec![(f << 3 | 3) as u8, (f << 3 | 4) as u8]),
        Just(vec![0xFF; 10]),
        Just(vec![
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The in-place reader accepts exactly the messages `prost` decodes into a valid
    /// `AggregatedRecord` (indices in their tables, at least one user record), and reads the
    /// same user records from them: over aggregates with bytes spliced in, cut short, or a
    /// byte changed (a valid trailer over the result, so only the message decides).
    #[test]
    fn reads_what_prost_reads(
        specs in proptest::collection::vec(user_record(), 1..8),
        at in any::<prop::sample::Index>(),
        change in prop_oneof![
            splice().prop_map(Some),
            Just(None),
        ],
        flip in any::<Option<(prop::sample::Index, u8)>>(),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let whole = aggregate(&specs);
        let mut body = whole[KPL_MAGIC.len()..whole.len() - DIGEST_LEN].to_vec();
        if let Some(bytes) = change {
            let i = at.index(body.len() + 1);
            body.splice(i..i, bytes);
        }
        if let Some((i, x)) = flip {
            let i = i.index(body.len());
            body[i] ^= x;
        }
        if let Some(c) = cut {
            body.truncate(c.index(body.len() + 1));
        }
        let prost = AggregatedRecord::decode(&body[..])
            .ok()
            .filter(check_with_prost);
        let (out, outcome) = run(parent(with_trailer(&body)), None);
        match prost {
            Some(m) => {
                prop_assert!(matches!(outcome, Outcome::Aggregate { .. }), "{:?}", outcome);
                let want: Vec<UserRecordSpec> = m
                    .records
                    .iter()
                    .map(|u| UserRecordSpec {
                        partition_key: m.partition_key_table[u.partition_key_index as usize].clone(),
                        explicit_hash_key: u
                            .explicit_hash_key_index
                            .map(|e| m.explicit_hash_key_table[e as usize].clone()),
                        data: u.data.to_vec(),
                    })
                    .collect();
                prop_assert_eq!(out, expected(&want));
            }
            None => {
                prop_assert!(matches!(outcome, Outcome::Corrupt(_)), "{:?}", outcome);
                prop_assert_eq!(out.len(), 1);
            }
        }
    }
}

/// What the reader checks beyond decoding: at least one user record, indices in their tables.
fn check_with_prost(m: &AggregatedRecord) -> bool {
    !m.records.is_empty()
        && m.records.iter().all(|r| {
            r.partition_key_index < m.partition_key_table.len() as u64
                && r.explicit_hash_key_index
                    .is_none_or(|e| e < m.explicit_hash_key_table.len() as u64)
        })
}
