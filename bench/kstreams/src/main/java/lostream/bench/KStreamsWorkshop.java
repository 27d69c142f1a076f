/*
 * KStreamsWorkshop: the workshop reducer of bench/workshop.py as a Kafka Streams application, the
 * "kstreams" competitor of bench.throughput (bench/kstreams_app.py builds this jar and starts it).
 *
 *   java -jar target/kstreams-workshop.jar --broker HOST:PORT --topic T --group G --state-dir DIR
 *       [--commit-interval SECONDS] [--guarantee at-least-once|exactly-once]
 *
 * The work is the raw loop's and the Quix Streams app's: each message, keyed by student, holds one
 * envelope or a JSON list of one student's envelopes; the message is decoded whole and every
 * envelope is folded into the student's state: the event count, the last 10 client timestamps and
 * the median interval between them, kept as the same JSON the Python competitors keep.
 *
 * Topology: stream(topic).groupByKey().aggregate() into a persistent RocksDB key-value store
 * ("workshop", logged to the changelog topic <group>-workshop-changelog); the DSL's defaults
 * otherwise, its 10 MiB record cache included. One stream thread, at-least-once unless
 * --guarantee says otherwise, commit.interval.ms = --commit-interval x 1000. application.id is
 * --group, so the consumer group whose committed offsets the harness follows is this app's.
 * Runs until SIGTERM; a shutdown hook then closes the client (commit, flush, leave the group),
 * and the JVM exits with 143, as any JVM stopped by SIGTERM does. Exits 1 if the stream thread fails.
 */
package lostream.bench;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueStore;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

public final class KStreamsWorkshop {
    static final int WINDOW = 10; // bench.workshop.WINDOW
    static final String STORE = "workshop";
    static final ObjectMapper JSON = new ObjectMapper();

    private KStreamsWorkshop() {}

    /**
     * One student's state, immutable. {@code median} is null (fewer than two timestamps), a Long
     * (an odd number of intervals) or a Double (an even number), as Python's statistics.median
     * gives it for integer intervals.
     */
    record Student(long count, long[] timestamps, Number median) {
        static final Student EMPTY = new Student(0, new long[0], null);
    }

    /** The next state after one envelope: bench.workshop.workshop. */
    static Student fold(JsonNode envelope, Student student) {
        JsonNode timestamp = envelope.path("client").path("timestamp");
        if (!timestamp.isIntegralNumber()) {
            throw new IllegalArgumentException("client.timestamp is not an integer (ms): " + timestamp);
        }
        long[] previous = student.timestamps();
        int kept = Math.min(previous.length, WINDOW - 1);
        long[] timestamps = Arrays.copyOfRange(previous, previous.length - kept, previous.length + 1);
        timestamps[kept] = timestamp.asLong();
        return new Student(student.count() + 1, timestamps, medianInterval(timestamps));
    }

    static Number medianInterval(long[] timestamps) {
        int n = timestamps.length - 1;
        if (n < 1) {
            return null;
        }
        long[] intervals = new long[n];
        for (int i = 0; i < n; i++) {
            intervals[i] = timestamps[i + 1] - timestamps[i];
        }
        Arrays.sort(intervals);
        if (n % 2 == 1) {
            return Long.valueOf(intervals[n / 2]);
        }
        return Double.valueOf((intervals[n / 2 - 1] + intervals[n / 2]) / 2.0);
    }

    /** Fold every envelope of one message (an envelope, or a list of one student's) into the state. */
    static Student foldMessage(byte[] value, Student student) {
        JsonNode message = readJson(value);
        if (message.isArray()) {
            for (JsonNode envelope : message) {
                student = fold(envelope, student);
            }
            return student;
        }
        return fold(message, student);
    }

    static JsonNode readJson(byte[] bytes) {
        try {
            return JSON.readTree(bytes);
        } catch (IOException e) {
            throw new UncheckedIOException("not JSON", e);
        }
    }

    /** The state as JSON: {"count":N,"timestamps":[...],"median_interval_ms":M}, as orjson writes it. */
    static final class StudentSerde implements Serde<Student>, Serializer<Student>, Deserializer<Student> {
        @Override
        public byte[] serialize(String topic, Student student) {
            if (student == null) {
                return null;
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream(160);
            try (JsonGenerator json = JSON.getFactory().createGenerator(out)) {
                json.writeStartObject();
                json.writeNumberField("count", student.count());
                json.writeArrayFieldStart("timestamps");
                for (long timestamp : student.timestamps()) {
                    json.writeNumber(timestamp);
                }
                json.writeEndArray();
                json.writeFieldName("median_interval_ms");
                Number median = student.median();
                if (median == null) {
                    json.writeNull();
                } else if (median instanceof Long whole) {
                    json.writeNumber(whole.longValue());
                } else {
                    json.writeNumber(median.doubleValue());
                }
                json.writeEndObject();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        }

        @Override
        public Student deserialize(String topic, byte[] data) {
            if (data == null) {
                return null;
            }
            JsonNode state = readJson(data);
            JsonNode stored = state.get("timestamps");
            long[] timestamps = new long[stored.size()];
            for (int i = 0; i < timestamps.length; i++) {
                timestamps[i] = stored.get(i).asLong();
            }
            JsonNode median = state.get("median_interval_ms");
            Number value = null;
            if (median.isIntegralNumber()) {
                value = Long.valueOf(median.asLong());
            } else if (median.isNumber()) {
                value = Double.valueOf(median.asDouble());
            }
            return new Student(state.get("count").asLong(), timestamps, value);
        }

        @Override
        public Serializer<Student> serializer() {
            return this;
        }

        @Override
        public Deserializer<Student> deserializer() {
            return this;
        }

        @Override
        public void configure(Map<String, ?> configs, boolean isKey) {}

        @Override
        public void close() {}
    }

    static final List<String> OPTIONS = List.of("broker", "topic", "group", "state-dir", "commit-interval", "guarantee");
    static final String USAGE = "usage: --broker HOST:PORT --topic T --group G --state-dir DIR "
            + "[--commit-interval SECONDS] [--guarantee at-least-once|exactly-once]";

    /** --name value or --name=value, for the names in OPTIONS; exits 2 with the usage otherwise. */
    static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> args = new LinkedHashMap<>(Map.of("commit-interval", "1", "guarantee", "at-least-once"));
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            if (!arg.startsWith("--")) {
                usage("unexpected argument " + arg);
            }
            String name = arg.substring(2);
            String value;
            int equals = name.indexOf('=');
            if (equals >= 0) {
                value = name.substring(equals + 1);
                name = name.substring(0, equals);
            } else if (i + 1 < argv.length) {
                value = argv[++i];
            } else {
                value = null;
                usage("--" + name + " needs a value");
            }
            if (!OPTIONS.contains(name)) {
                usage("unknown option --" + name);
            }
            args.put(name, value);
        }
        for (String required : List.of("broker", "topic", "group", "state-dir")) {
            if (!args.containsKey(required)) {
                usage("--" + required + " is required");
            }
        }
        if (!List.of("at-least-once", "exactly-once").contains(args.get("guarantee"))) {
            usage("--guarantee must be at-least-once or exactly-once");
        }
        return args;
    }

    static void usage(String problem) {
        System.err.println(problem + "\n" + USAGE);
        System.exit(2);
    }

    static void log(String line) {
        System.err.println("kstreams: " + line);
    }

    /** The version of the Kafka client libraries on the classpath, from their build info. */
    static String kafkaVersion() {
        Properties info = new Properties();
        try (InputStream in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            if (in != null) {
                info.load(in);
            }
        } catch (IOException e) {
            // only for the log line
        }
        return info.getProperty("version", "(unknown version)");
    }

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> args = parseArgs(argv);
        long commitIntervalMs = Math.round(Double.parseDouble(args.get("commit-interval")) * 1000);
        String guarantee = args.get("guarantee").equals("exactly-once")
                ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE;

        Properties config = new Properties();
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("group")); // = the consumer group
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("broker"));
        config.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
        config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        config.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitIntervalMs);
        config.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(args.get("topic"), Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
                .groupByKey()
                .aggregate(() -> Student.EMPTY,
                        (Bytes student, byte[] message, Student state) -> foldMessage(message, state),
                        Materialized.<Bytes, Student, KeyValueStore<Bytes, byte[]>>as(STORE)
                                .withKeySerde(Serdes.Bytes())
                                .withValueSerde(new StudentSerde()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            log(before + " -> " + now);
            if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(error -> {
            log("the stream thread failed:");
            error.printStackTrace();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM runs the shutdown hooks: close cleanly (commit, flush the store, leave the group).
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(60)), "close-streams"));

        log("Kafka Streams " + kafkaVersion() + " on Java " + Runtime.version()
                + ", " + guarantee + ", commit.interval.ms=" + commitIntervalMs + ", topic " + args.get("topic"));
        streams.start();
        stopped.await();
        // Here without SIGTERM only when the client failed (with SIGTERM the JVM is already exiting).
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }
}
