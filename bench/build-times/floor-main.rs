//! The floor of build time: the stack kinesis-client builds on (aws-config, the Kinesis and
//! DynamoDB clients, tokio), one call through each client, no kinesis-client.
#[tokio::main]
async fn main() {
    let sdk = aws_config::load_from_env().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = kinesis.list_shards().stream_name("s").send().await;
    let item = dynamodb.get_item().table_name("t").send().await;
    let records = kinesis.get_records().shard_iterator("i").send().await;
    let put = dynamodb.update_item().table_name("t").send().await;
    println!("{:?} {:?} {:?} {:?}", streams.is_ok(), item.is_ok(), records.is_ok(), put.is_ok());
}
