// Reads the stand-in Kinesis (bench/src/standin) with the Java SDK v2 client exactly as the Java
// KCL 3.x builds it (KinesisClientUtil.createKinesisAsyncClient: Netty, HTTP/2, CBOR by
// default) and prints what it parsed, one `key=value ...` line per fact, for the Rust test
// `standin_java_sdk_v2_reads_the_answers` to check.
//
// java -cp 'CLASSES:JARS/*' StandinCheck ENDPOINT STREAM AT_TIMESTAMP_MILLIS

import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Instant;
import java.util.concurrent.ExecutionException;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.awssdk.services.kinesis.model.ChildShard;
import software.amazon.awssdk.services.kinesis.model.DescribeStreamSummaryRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.ListShardsRequest;
import software.amazon.awssdk.services.kinesis.model.ListShardsResponse;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;
import software.amazon.kinesis.common.KinesisClientUtil;

public class StandinCheck {
    public static void main(String[] args) throws Exception {
        String endpoint = args[0];
        String stream = args[1];
        long atMillis = Long.parseLong(args[2]);
        KinesisAsyncClient k = KinesisClientUtil.createKinesisAsyncClient(
                KinesisAsyncClient.builder()
                        .endpointOverride(URI.create(endpoint))
                        .region(Region.US_EAST_1)
                        .credentialsProvider(StaticCredentialsProvider.create(
                                AwsBasicCredentials.create("test", "test"))));
        int open = k.describeStreamSummary(DescribeStreamSummaryRequest.builder()
                .streamName(stream).build()).get().streamDescriptionSummary().openShardCount();
        System.out.println("summary open=" + open);
        ListShardsResponse ls = k.listShards(ListShardsRequest.builder().streamName(stream).build()).get();
        for (Shard s : ls.shards()) {
            System.out.println("shard id=" + s.shardId() + " parent=" + s.parentShardId()
                    + " end=" + s.sequenceNumberRange().endingSequenceNumber());
        }
        String parent = ls.shards().get(0).shardId();
        String it = k.getShardIterator(GetShardIteratorRequest.builder()
                .streamName(stream).shardId(parent)
                .shardIteratorType(ShardIteratorType.AT_TIMESTAMP)
                .timestamp(Instant.ofEpochMilli(atMillis)).build()).get().shardIterator();
        GetRecordsResponse r = k.getRecords(GetRecordsRequest.builder()
                .shardIterator(it).limit(3).build()).get();
        for (Record rec : r.records()) {
            byte[] data = rec.data().asByteArray();
            long pos = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).getLong();
            System.out.println("record seq=" + rec.sequenceNumber()
                    + " at=" + rec.approximateArrivalTimestamp().toEpochMilli()
                    + " pk=" + rec.partitionKey() + " len=" + data.length + " pos=" + pos);
        }
        System.out.println("batch behind=" + r.millisBehindLatest()
                + " next=" + (r.nextShardIterator() != null));
        String next = r.nextShardIterator();
        int rest = 0;
        while (next != null) {
            r = k.getRecords(GetRecordsRequest.builder().shardIterator(next).build()).get();
            rest += r.records().size();
            next = r.nextShardIterator();
        }
        System.out.println("end rest=" + rest + " behind=" + r.millisBehindLatest());
        for (ChildShard c : r.childShards()) {
            System.out.println("child id=" + c.shardId() + " parents=" + String.join(",", c.parentShards()));
        }
        try {
            k.getRecords(GetRecordsRequest.builder().shardIterator("AAAAAAAAAAGbad").build()).get();
            System.out.println("error none");
        } catch (ExecutionException e) {
            System.out.println("error class=" + e.getCause().getClass().getSimpleName());
        }
        k.close();
        System.exit(0);
    }
}
