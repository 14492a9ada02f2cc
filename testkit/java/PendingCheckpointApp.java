/*
 * A small Java KCL 3.x *library* application for the lease-table compatibility tests of the Rust
 * KCL: the MultiLangDaemon protocol has no "prepare checkpoint", so the tests need the library
 * API (ConfigsBuilder, Scheduler, ShardRecordProcessor) to exercise Java's two-phase checkpoint
 * (RecordProcessorCheckpointer.prepareCheckpoint) and to see what Java reads back at initialize.
 *
 * Compiled and run by testkit (testkit/src/java_app.rs) against the jars of the kclpy-ext wheel:
 *
 *   javac -d OUT -cp '<jars>/*' PendingCheckpointApp.java
 *   java -cp 'OUT:<jars>/*' PendingCheckpointApp --mode prepare --stream S --application A ...
 *
 * Arguments (all "--name value"):
 *   --mode                prepare | report                                          (required)
 *   --stream              stream name                                               (required)
 *   --application         application name = lease table name                       (required)
 *   --worker-id           worker identifier                                         (required)
 *   --region              AWS region                                                (required)
 *   --kinesis-endpoint    Kinesis endpoint URL (endpointOverride)                   (required)
 *   --dynamodb-endpoint   DynamoDB endpoint URL (endpointOverride)                  (required)
 *   --output              file the JSON event lines are appended to                 (required)
 *   --state-base64        the application state bytes for prepareCheckpoint, base64
 *                         (required in prepare mode; may be empty)
 *   --failover-millis     failoverTimeMillis (default 3000)
 *   --idle-millis         idleTimeBetweenReadsInMillis (default 200)
 *   --max-records         maxRecords (default 100)
 *   --shard-sync-interval-millis  shardSyncIntervalMillis (default 1000; the KCL's is 60000, and
 *                         the worker whose shard sync creates leases sleeps that long inside its
 *                         initialization, before it takes any lease)
 *   --initial-position    TRIM_HORIZON | LATEST (default TRIM_HORIZON)
 *   --client-version      COMPATIBLE_WITH_2X | 3X (default COMPATIBLE_WITH_2X)
 * Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)
 * (EnvironmentVariableCredentialsProvider), as the MultiLangDaemon tests configure it.
 *
 * The clients are built as the MultiLangDaemon 3.1.3 builds them for its kinesisEndpoint /
 * dynamoDBEndpoint properties (MultiLangDaemonConfiguration: builder + region + endpointOverride;
 * the Kinesis client through KinesisClientUtil.adjustKinesisClientBuilder), and the settings are
 * those of the tests' daemon properties: the initial position (a SingleStreamTracker's, for the
 * lease table too), polling retrieval, metrics NONE (null metrics factory),
 * 2.x-compatible client version config.
 *
 * Modes (never a checkpoint, i.e. never a commit, in either):
 *   prepare: on the first non-empty batch of each shard, prepareCheckpoint(last record's
 *            sequence number, its sub-sequence number, state) and write a "prepared" event.
 *   report:  only the events below (the initialize event is what the tests read).
 *
 * Events, one JSON object per line, appended and flushed one at a time (both modes):
 *   {"event":"initialize","shardId":..,"checkpoint":..,"checkpointSubSequenceNumber":n,
 *    "pendingCheckpoint":<string|null>,"pendingCheckpointSubSequenceNumber":<n|null>,
 *    "pendingCheckpointState":<base64|null>}
 *   {"event":"records","shardId":..,"count":n,"firstSequenceNumber":..,"lastSequenceNumber":..,
 *    "lastSubSequenceNumber":n}                                  (non-empty batches only)
 *   {"event":"prepared","shardId":..,"sequenceNumber":..,"subSequenceNumber":n}
 *   {"event":"error","shardId":..,"operation":..,"message":..}     (e.g. prepareCheckpoint threw)
 *   {"event":"leaseLost"|"shardEnded"|"shutdownRequested","shardId":..}
 *
 * Logs (logback, INFO, the multilang jar's logback.xml) go to stderr: System.out is redirected.
 * SIGTERM starts the scheduler's graceful shutdown (at most 5 s), as the MultiLangDaemon does. If
 * the scheduler ends without it (e.g. its initialization gave up), the app exits with status 1.
 */

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.common.KinesisClientUtil;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.SingleStreamTracker;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.kpl.ExtendedSequenceNumber;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

public final class PendingCheckpointApp {
    private static final Object OUTPUT_LOCK = new Object();
    private static String outputPath;
    private static volatile boolean terminated;

    public static void main(String[] argv) throws Exception {
        // The multilang jar's logback.xml logs to System.out: send it to stderr.
        System.setOut(System.err);
        Map<String, String> args = parse(argv);
        String mode = required(args, "mode");
        if (!mode.equals("prepare") && !mode.equals("report")) {
            throw new IllegalArgumentException("--mode must be prepare or report, not " + mode);
        }
        String stream = required(args, "stream");
        String application = required(args, "application");
        String workerId = required(args, "worker-id");
        Region region = Region.of(required(args, "region"));
        URI kinesisEndpoint = URI.create(required(args, "kinesis-endpoint"));
        URI dynamoDbEndpoint = URI.create(required(args, "dynamodb-endpoint"));
        outputPath = required(args, "output");
        byte[] state = null;
        if (mode.equals("prepare")) {
            state = Base64.getDecoder().decode(required(args, "state-base64"));
        }
        long failoverMillis = Long.parseLong(args.getOrDefault("failover-millis", "3000"));
        long idleMillis = Long.parseLong(args.getOrDefault("idle-millis", "200"));
        int maxRecords = Integer.parseInt(args.getOrDefault("max-records", "100"));
        long shardSyncMillis = Long.parseLong(args.getOrDefault("shard-sync-interval-millis", "1000"));
        InitialPositionInStreamExtended initialPosition = InitialPositionInStreamExtended.newInitialPosition(
                InitialPositionInStream.valueOf(args.getOrDefault("initial-position", "TRIM_HORIZON")));
        CoordinatorConfig.ClientVersionConfig clientVersion = CoordinatorConfig.ClientVersionConfig.valueOf(
                "CLIENT_VERSION_CONFIG_" + args.getOrDefault("client-version", "COMPATIBLE_WITH_2X"));

        EnvironmentVariableCredentialsProvider credentials = EnvironmentVariableCredentialsProvider.create();
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .region(region)
                .endpointOverride(kinesisEndpoint)
                .credentialsProvider(credentials)
                .applyMutation(KinesisClientUtil::adjustKinesisClientBuilder)
                .build();
        DynamoDbAsyncClient dynamoDb = DynamoDbAsyncClient.builder()
                .region(region)
                .endpointOverride(dynamoDbEndpoint)
                .credentialsProvider(credentials)
                .build();
        // Required by ConfigsBuilder; never called (null metrics factory).
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .build();

        final byte[] prepareState = state;
        ConfigsBuilder configs = new ConfigsBuilder(
                new SingleStreamTracker(stream, initialPosition),
                application,
                kinesis,
                dynamoDb,
                cloudWatch,
                workerId,
                () -> new Processor(mode.equals("prepare"), prepareState));

        Scheduler scheduler = new Scheduler(
                configs.checkpointConfig(),
                configs.coordinatorConfig()
                        .clientVersionConfig(clientVersion)
                        .parentShardPollIntervalMillis(500),
                configs.leaseManagementConfig()
                        .failoverTimeMillis(failoverMillis)
                        .shardSyncIntervalMillis(shardSyncMillis)
                        .initialPositionInStream(initialPosition),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsLevel(MetricsLevel.NONE).metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .retrievalSpecificConfig(new PollingConfig(stream, kinesis)
                                .idleTimeBetweenReadsInMillis(idleMillis)
                                .maxRecords(maxRecords)));

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            terminated = true;
            System.err.println("PendingCheckpointApp: terminated, starting graceful shutdown");
            try {
                scheduler.startGracefulShutdown().get(5, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println("PendingCheckpointApp: graceful shutdown: " + e);
            }
        }));
        System.err.println("PendingCheckpointApp: mode " + mode + ", stream " + stream + ", application "
                + application + ", worker " + workerId + ", output " + outputPath);
        scheduler.run();
        if (!terminated) {
            // E.g. its initialization gave up: exit (the SDK's threads would keep the JVM alive)
            // so that the test sees it at once.
            System.err.println("PendingCheckpointApp: the scheduler ended on its own");
            System.exit(1);
        }
        System.err.println("PendingCheckpointApp: scheduler ended");
    }

    /** One processor per shard lease. */
    static final class Processor implements ShardRecordProcessor {
        private final boolean prepare;
        private final byte[] state;
        private String shardId = "?";
        private boolean prepared;

        Processor(boolean prepare, byte[] state) {
            this.prepare = prepare;
            this.state = state;
        }

        @Override
        public void initialize(InitializationInput input) {
            shardId = input.shardId();
            ExtendedSequenceNumber checkpoint = input.extendedSequenceNumber();
            ExtendedSequenceNumber pending = input.pendingCheckpointSequenceNumber();
            byte[] pendingState = input.pendingCheckpointState();
            Map<String, Object> e = event("initialize");
            e.put("checkpoint", checkpoint == null ? null : checkpoint.sequenceNumber());
            e.put("checkpointSubSequenceNumber", checkpoint == null ? null : checkpoint.subSequenceNumber());
            e.put("pendingCheckpoint", pending == null ? null : pending.sequenceNumber());
            e.put("pendingCheckpointSubSequenceNumber", pending == null ? null : pending.subSequenceNumber());
            e.put("pendingCheckpointState",
                    pendingState == null ? null : Base64.getEncoder().encodeToString(pendingState));
            write(e);
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            List<KinesisClientRecord> records = input.records();
            if (records == null || records.isEmpty()) {
                return;
            }
            KinesisClientRecord first = records.get(0);
            KinesisClientRecord last = records.get(records.size() - 1);
            Map<String, Object> e = event("records");
            e.put("count", records.size());
            e.put("firstSequenceNumber", first.sequenceNumber());
            e.put("lastSequenceNumber", last.sequenceNumber());
            e.put("lastSubSequenceNumber", last.subSequenceNumber());
            write(e);
            if (!prepare || prepared) {
                return;
            }
            prepared = true;
            try {
                input.checkpointer().prepareCheckpoint(last.sequenceNumber(), last.subSequenceNumber(), state);
            } catch (Exception ex) {
                ex.printStackTrace();
                Map<String, Object> err = event("error");
                err.put("operation", "prepareCheckpoint");
                err.put("message", ex.toString());
                write(err);
                return;
            }
            Map<String, Object> p = event("prepared");
            p.put("sequenceNumber", last.sequenceNumber());
            p.put("subSequenceNumber", last.subSequenceNumber());
            write(p);
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
            write(event("leaseLost"));
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            // Never commits: the lease stays at its checkpoint; the shard end is only reported.
            write(event("shardEnded"));
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            write(event("shutdownRequested"));
        }

        private Map<String, Object> event(String name) {
            Map<String, Object> e = new LinkedHashMap<>();
            e.put("event", name);
            e.put("shardId", shardId);
            return e;
        }
    }

    /** Appends one JSON line to the output file and flushes it (one writer at a time). */
    static void write(Map<String, Object> event) {
        String line = toJson(event) + "\n";
        synchronized (OUTPUT_LOCK) {
            try (OutputStream out = new FileOutputStream(outputPath, true)) {
                out.write(line.getBytes(StandardCharsets.UTF_8));
                out.flush();
            } catch (IOException e) {
                System.err.println("PendingCheckpointApp: cannot write " + outputPath + ": " + e);
            }
        }
        System.err.print("PendingCheckpointApp event: " + line);
    }

    static String toJson(Map<String, Object> event) {
        StringBuilder s = new StringBuilder("{");
        boolean firstField = true;
        for (Map.Entry<String, Object> field : event.entrySet()) {
            if (!firstField) {
                s.append(',');
            }
            firstField = false;
            quote(s, field.getKey());
            s.append(':');
            Object v = field.getValue();
            if (v == null) {
                s.append("null");
            } else if (v instanceof Number) {
                s.append(v);
            } else {
                quote(s, v.toString());
            }
        }
        return s.append('}').toString();
    }

    static void quote(StringBuilder s, String v) {
        s.append('"');
        for (int i = 0; i < v.length(); i++) {
            char c = v.charAt(i);
            switch (c) {
                case '"':
                    s.append("\\\"");
                    break;
                case '\\':
                    s.append("\\\\");
                    break;
                case '\n':
                    s.append("\\n");
                    break;
                case '\r':
                    s.append("\\r");
                    break;
                case '\t':
                    s.append("\\t");
                    break;
                default:
                    if (c < 0x20) {
                        s.append(String.format("\\u%04x", (int) c));
                    } else {
                        s.append(c);
                    }
            }
        }
        s.append('"');
    }

    static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i += 2) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --name value pairs, got " + String.join(" ", argv));
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        return args;
    }

    static String required(Map<String, String> args, String name) {
        String v = args.get(name);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return v;
    }
}
