//! Issue 2: the library's own Kinesis client reads back everything that was put.

use crate::common::aws;
use kinesis_client::retrieval::{IteratorPosition, KinesisStreamClient, StreamClient, StreamRef};
use std::collections::BTreeMap;

#[tokio::test]
async fn a_thousand_records_across_four_shards_read_back_in_order() {
    let aws = aws().await;
    let kinesis = aws.kinesis_client();
    let name = testkit::unique_name("roundtrip");
    testkit::create_stream(&kinesis, &name, 4).await.unwrap();
    let put = testkit::put_records(&kinesis, &name, testkit::numbered_records("rt", 1000))
        .await
        .unwrap();

    let mut expected: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for p in &put {
        expected
            .entry(p.shard_id.clone())
            .or_default()
            .push((p.sequence_number.clone(), p.data.clone()));
    }
    assert_eq!(expected.len(), 4, "records reach all four shards");

    let client = KinesisStreamClient::new(aws.kinesis_client(), StreamRef::Name(name.clone()));
    let shards = client.list_shards().await.unwrap();
    assert_eq!(shards.len(), 4);
    for shard in shards {
        let mut want = expected.remove(&shard.shard_id).unwrap_or_default();
        want.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
        let mut got = Vec::new();
        let mut it = client
            .get_shard_iterator(&shard.shard_id, &IteratorPosition::TrimHorizon)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..50 {
            let batch = client.get_records(&shard.shard_id, &it, 100).await.unwrap();
            got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| (r.sequence_number.into_string(), r.data.to_vec())),
            );
            if got.len() >= want.len() || batch.next_iterator.is_none() {
                break;
            }
            it = batch.next_iterator.unwrap();
        }
        assert_eq!(
            got, want,
            "shard {} returns its records in sequence order",
            shard.shard_id
        );
    }
}
