use aws_smithy_http_client::tls;
#[tokio::main]
async fn main() {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = kinesis.list_shards().stream_name("s").send().await;
    let item = dynamodb.get_item().table_name("t").send().await;
    let records = kinesis.get_records().shard_iterator("i").send().await;
    let put = dynamodb.update_item().table_name("t").send().await;
    println!("{:?} {:?} {:?} {:?}", streams.is_ok(), item.is_ok(), records.is_ok(), put.is_ok());
}
