/*
 * Bench section 12 (bench/src/real_path.rs): the Java KCL 3.x *library* as a consumer on the real
 * path, the Java counterpart of `kcl-bench __realpath`. A ConfigsBuilder + Scheduler application
 * whose ShardRecordProcessor does nothing with the records but count them and checkpoint every
 * batch (RecordProcessorCheckpointer.checkpoint()). When it has every record it prints the
 * report line the Rust child prints and halts at once (shutting down is not measured):
 *
 *   REALPATH records=N first_batch=N cpu_ns=N steady_cpu_ns=N steady_wall_ns=N peak_rss=BYTES startup_ns=N
 *
 * cpu_ns is the JVM's whole process CPU (OperatingSystemMXBean#getProcessCpuTime: every thread,
 * from the JVM's start, so start-up and JIT included); steady_* from the first delivered batch
 * to the last record; peak_rss is VmHWM of /proc/self/status; startup_ns from the JVM's start to the
 * first delivered batch.
 *
 * Compiled by the benchmark with the JDK's javac against the Java KCL 3.1.3 jars of kclpy-ext:
 *
 *   javac -d OUT -cp '<jars>/*' RealPathConsumer.java
 *   java -cp 'OUT:<jars>/*' RealPathConsumer KINESIS_ENDPOINT DYNAMODB_ENDPOINT STREAM RECORDS \
 *        CLIENT_VERSION FAILOVER_MILLIS IDLE_MILLIS MAX_RECORDS
 *
 * CLIENT_VERSION: 3X (native) or COMPATIBLE_WITH_2X. Settings: polling retrieval
 * (idleTimeBetweenReadsInMillis IDLE_MILLIS, maxRecords MAX_RECORDS), TRIM_HORIZON, metrics NONE,
 * shard sync every 1 s, static credentials test/test, region us-east-1; the Kinesis client built
 * with KinesisClientUtil (HTTP/2, CBOR) as every Java KCL application builds it.
 */

import java.lang.management.ManagementFactory;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
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
import software.amazon.kinesis.retrieval.polling.PollingConfig;

public final class RealPathConsumer {
    private static final long DEADLINE_SECONDS = 600;

    private static long total;
    private static final AtomicLong processed = new AtomicLong();
    /** Guards the first batch's figures and the report. */
    private static final Object LOCK = new Object();
    private static boolean firstSeen;
    private static boolean reported;
    private static boolean printed;
    private static long firstBatch;
    private static long firstNanos;
    private static long firstCpu;
    private static long firstUptimeNanos;

    private static long processCpu() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    private static long peakRss() {
        try {
            for (String line : Files.readAllLines(Paths.get("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.substring(6).replace("kB", "").trim()) * 1024;
                }
            }
        } catch (Exception e) {
            // fall through
        }
        return Runtime.getRuntime().totalMemory();
    }

    public static void main(String[] argv) throws Exception {
        // The multilang jar's logback.xml logs to System.out: keep stdout for the report line.
        System.setOut(System.err);
        if (argv.length != 8) {
            System.err.println("usage: RealPathConsumer KINESIS_ENDPOINT DYNAMODB_ENDPOINT STREAM RECORDS "
                    + "CLIENT_VERSION FAILOVER_MILLIS IDLE_MILLIS MAX_RECORDS");
            System.exit(2);
        }
        URI kinesisEndpoint = URI.create(argv[0]);
        URI dynamoDbEndpoint = URI.create(argv[1]);
        String stream = argv[2];
        total = Long.parseLong(argv[3]);
        CoordinatorConfig.ClientVersionConfig clientVersion =
                CoordinatorConfig.ClientVersionConfig.valueOf("CLIENT_VERSION_CONFIG_" + argv[4]);
        long failoverMillis = Long.parseLong(argv[5]);
        long idleMillis = Long.parseLong(argv[6]);
        int maxRecords = Integer.parseInt(argv[7]);

        Region region = Region.US_EAST_1;
        StaticCredentialsProvider credentials =
                StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test"));
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
        // Required by ConfigsBuilder; never called (metrics NONE, null metrics factory).
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .build();

        InitialPositionInStreamExtended initialPosition =
                InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON);
        ConfigsBuilder configs = new ConfigsBuilder(
                new SingleStreamTracker(stream, initialPosition),
                stream + "-app",
                kinesis,
                dynamoDb,
                cloudWatch,
                "realpath-java-worker",
                Processor::new);
        Scheduler scheduler = new Scheduler(
                configs.checkpointConfig(),
                configs.coordinatorConfig().clientVersionConfig(clientVersion),
                configs.leaseManagementConfig()
                        .failoverTimeMillis(failoverMillis)
                        .shardSyncIntervalMillis(1000)
                        .initialPositionInStream(initialPosition),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsLevel(MetricsLevel.NONE).metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .retrievalSpecificConfig(new PollingConfig(stream, kinesis)
                                .idleTimeBetweenReadsInMillis(idleMillis)
                                .maxRecords(maxRecords)));

        Thread watchdog = new Thread(() -> {
            try {
                TimeUnit.SECONDS.sleep(DEADLINE_SECONDS);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("RealPathConsumer: " + processed.get() + " of " + total + " records after "
                    + DEADLINE_SECONDS + " s");
            Runtime.getRuntime().halt(1);
        });
        watchdog.setDaemon(true);
        watchdog.start();

        Thread worker = new Thread(scheduler);
        worker.setDaemon(true);
        worker.start();
        System.err.println("RealPathConsumer: stream " + stream + ", " + total + " records, client version "
                + clientVersion + ", failover " + failoverMillis + " ms, idle " + idleMillis + " ms, maxRecords "
                + maxRecords);
        synchronized (LOCK) {
            while (!printed) {
                LOCK.wait(1000);
                if (!worker.isAlive()) {
                    System.err.println("RealPathConsumer: the scheduler ended on its own");
                    Runtime.getRuntime().halt(1);
                }
            }
        }
        // Exit at once: shutting down is not part of the measurement.
        Runtime.getRuntime().halt(0);
    }

    /** One processor per shard lease: counts, then checkpoints every batch. */
    static final class Processor implements ShardRecordProcessor {
        private static final java.io.PrintStream OUT = new java.io.PrintStream(
                new java.io.FileOutputStream(java.io.FileDescriptor.out), true);

        @Override
        public void initialize(InitializationInput input) {
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            int n = input.records().size();
            if (n == 0) {
                return;
            }
            synchronized (LOCK) {
                if (!firstSeen) {
                    firstSeen = true;
                    firstBatch = n;
                    firstNanos = System.nanoTime();
                    firstCpu = processCpu();
                    firstUptimeNanos = ManagementFactory.getRuntimeMXBean().getUptime() * 1_000_000L;
                }
            }
            long now = processed.addAndGet(n);
            if (now >= total) {
                synchronized (LOCK) {
                    if (!reported) {
                        reported = true;
                        long endNanos = System.nanoTime();
                        long endCpu = processCpu();
                        OUT.println("REALPATH records=" + now + " first_batch=" + firstBatch + " cpu_ns=" + endCpu
                                + " steady_cpu_ns=" + Math.max(0, endCpu - firstCpu)
                                + " steady_wall_ns=" + Math.max(0, endNanos - firstNanos)
                                + " peak_rss=" + peakRss() + " startup_ns=" + firstUptimeNanos);
                        OUT.flush();
                        printed = true;
                        LOCK.notifyAll();
                    }
                }
                return;
            }
            try {
                input.checkpointer().checkpoint();
            } catch (Exception e) {
                System.err.println("RealPathConsumer: checkpoint: " + e);
            }
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            try {
                input.checkpointer().checkpoint();
            } catch (Exception e) {
                System.err.println("RealPathConsumer: checkpoint at shard end: " + e);
            }
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
        }
    }
}
