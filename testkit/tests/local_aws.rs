//! The shared instance against real services: Kinesis round trip and a DynamoDB table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_kinesis::types::ShardIteratorType;
use testkit::{create_stream, numbered_records, put_records, unique_name, LocalAws};

/// Sequence numbers are decimal strings of up to 128 bits: order by length, then text.
fn seq_key(s: &str) -> (usize, String) {
    (s.len(), s.to_string())
}

#[tokio::test]
async fn kinesis_round_trip_on_four_shards() -> anyhow::Result<()> {
    let aws = LocalAws::shared().await?;
    println!("{}", aws.startup_report());
    let kinesis = aws.kinesis_client();
    let stream = unique_name("testkit-roundtrip");
    create_stream(&kinesis, &stream, 4).await?;

    let records = numbered_records("rec", 100);
    let put = put_records(&kinesis, &stream, records.clone()).await?;
    assert_eq!(put.len(), records.len());
    for (r, p) in records.iter().zip(&put) {
        assert_eq!((&r.partition_key, &r.data), (&p.partition_key, &p.data));
    }

    // What each shard should hold, in sequence-number order.
    let mut expected: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for p in &put {
        expected
            .entry(p.shard_id.clone())
            .or_default()
            .push((p.sequence_number.clone(), p.data.clone()));
    }
    for v in expected.values_mut() {
        v.sort_by_key(|(seq, _)| seq_key(seq));
    }

    let shards = kinesis.list_shards().stream_name(&stream).send().await?;
    let shard_ids: Vec<String> = shards
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    assert_eq!(shard_ids.len(), 4, "{shard_ids:?}");
    assert_eq!(
        expected.len(),
        4,
        "100 records with keys pk-0..pk-99 reach every shard: {:?}",
        expected.keys().collect::<Vec<_>>()
    );

    for shard in &shard_ids {
        let want = expected.get(shard).cloned().unwrap_or_default();
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_string);
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < want.len() {
            assert!(
                Instant::now() < deadline,
                "{shard}: got {} of {}",
                got.len(),
                want.len()
            );
            let Some(it) = iterator.take() else { break };
            let out = kinesis
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await?;
            got.extend(
                out.records()
                    .iter()
                    .map(|r| (r.sequence_number().to_string(), r.data().as_ref().to_vec())),
            );
            iterator = out.next_shard_iterator().map(str::to_string);
            if out.records().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(got, want, "records of {shard}");
    }
    Ok(())
}

#[tokio::test]
async fn dynamodb_table_create_list_put_get() -> anyhow::Result<()> {
    let aws = LocalAws::shared().await?;
    let ddb = aws.dynamodb_client();
    let table = unique_name("testkit-leases");
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;

    let mut names = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = ddb
            .list_tables()
            .set_exclusive_start_table_name(start.take())
            .send()
            .await?;
        names.extend(out.table_names().iter().cloned());
        match out.last_evaluated_table_name() {
            Some(last) => start = Some(last.to_string()),
            None => break,
        }
    }
    assert!(names.contains(&table), "{table} not in {names:?}");

    ddb.put_item()
        .table_name(&table)
        .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .item("leaseCounter", AttributeValue::N("1".into()))
        .condition_expression("attribute_not_exists(leaseKey)")
        .send()
        .await?;
    let got = ddb
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .consistent_read(true)
        .send()
        .await?;
    assert_eq!(
        got.item().and_then(|i| i.get("leaseCounter")),
        Some(&AttributeValue::N("1".into()))
    );
    Ok(())
}

#[tokio::test]
async fn shared_returns_one_instance() -> anyhow::Result<()> {
    let a = LocalAws::shared().await?;
    let b = LocalAws::shared().await?;
    assert!(Arc::ptr_eq(&a, &b));
    assert!(a.kinesis_endpoint().starts_with("http"));
    assert!(a.sdk_config().region().is_some());
    assert_eq!(a.services().len(), 2);
    Ok(())
}
