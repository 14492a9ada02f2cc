//! KPL aggregates through `kcl-multilang` with an amazon-kclpy processor
//! (`tests/integration/kpl_processor.py` of the library, written against kclpy's v3 API):
//! real aggregates from `aws-kinesis-agg` 1.2.3; the child gets every user record with its
//! `subSequenceNumber`, and its checkpoint at (sequence, sub-sequence) lands in the lease
//! table as the Java KCL stores it (`checkpoint` + `checkpointSubSequenceNumber`).

use std::collections::BTreeMap;

use crate::harness::*;
use aws_sdk_dynamodb::types::AttributeValue;
use testkit::kpl;
use testkit::LocalAws;

#[tokio::test]
async fn kclpy_gets_sub_sequence_numbers_and_checkpoints_inside_an_aggregate() -> anyhow::Result<()>
{
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("kpl")?;
    let stream = testkit::unique_name("e2e-kpl");
    testkit::create_stream(&aws.kinesis_client(), &stream, 2).await?;
    let users = kpl::numbered_user_records("k", 120);
    let aggregates = tokio::task::spawn_blocking(move || kpl::aggregate(&users, 20)).await??;
    let put = kpl::put_aggregates(&aws.kinesis_client(), &stream, aggregates).await?;
    // Per shard, (sequence number, sub-sequence number, payload) of every user record.
    let mut expected: BTreeMap<String, Vec<(String, u64, String)>> = BTreeMap::new();
    for p in &put {
        for (i, u) in p.aggregate.user_records.iter().enumerate() {
            expected.entry(p.shard_id.clone()).or_default().push((
                p.sequence_number.clone(),
                i as u64,
                String::from_utf8(u.data.clone())?,
            ));
        }
    }
    // The child checkpoints at the 8th user record of each shard's last aggregate.
    let chosen: BTreeMap<String, (String, u64, String)> = expected
        .iter()
        .map(|(shard, records)| (shard.clone(), records[records.len() - 13].clone()))
        .collect();
    assert!(chosen.values().all(|c| c.1 == 7), "{chosen:?}");
    let names: Vec<&str> = chosen.values().map(|c| c.2.as_str()).collect();

    let app = testkit::unique_name("e2e-kpl-app");
    let processor = manifest_dir().join("../tests/integration/kpl_processor.py");
    let output = scratch.file("records.txt");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &processor]),
    )
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(
        &scratch.path,
        &props,
        &[
            ("PYTHONPATH", kclpy.pythonpath_env()),
            ("KPL_OUTPUT", output.as_os_str().to_owned()),
            ("KPL_CHECKPOINT_AT", names.join(",").into()),
        ],
    )?;
    let ddb = aws.dynamodb_client();
    daemon
        .until(
            LIMIT,
            "the child's checkpoints inside the aggregates in the lease table",
            || {
                let (ddb, app, chosen) = (ddb.clone(), app.clone(), chosen.clone());
                async move {
                    for (shard, (seq, sub, _)) in &chosen {
                        let item = ddb
                            .get_item()
                            .table_name(&app)
                            .key("leaseKey", AttributeValue::S(shard.clone()))
                            .consistent_read(true)
                            .send()
                            .await
                            .ok()?
                            .item?;
                        let stored = (
                            item.get("checkpoint")?.as_s().ok()?.clone(),
                            item.get("checkpointSubSequenceNumber")?
                                .as_n()
                                .ok()?
                                .clone(),
                        );
                        if stored != (seq.clone(), sub.to_string()) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    let want_total: usize = expected.values().map(Vec::len).sum();
    daemon
        .until(LIMIT, "every user record at the child", || {
            let output = output.clone();
            async move {
                let n = std::fs::read_to_string(&output)
                    .unwrap_or_default()
                    .lines()
                    .count();
                (n >= want_total).then_some(())
            }
        })
        .await;
    let mut got: BTreeMap<String, Vec<(String, u64, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(&output)?.lines() {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        got.entry(f[0].to_string()).or_default().push((
            f[1].to_string(),
            f[2].parse()?,
            f[3].to_string(),
        ));
    }
    assert_eq!(
        got, expected,
        "every user record once, in order, with its sub-sequence number"
    );
    daemon.terminate(LIMIT).await?;
    Ok(())
}
