// Load generator for scripts/bench_e2e.py (e): sends pre-built messages at a fixed rate with
// the Java Kafka client, stamping each with a "sent_us" header (wall clock, microseconds, at
// send()). It stands in for the plant's own producers, which run on other machines: on the
// 2-core benchmark box it costs a fraction of the CPU kafka-python's producer does.
//
//   java -cp <classes>:<kafka libs>/* PacedProducer BOOTSTRAP TOPIC RATE MESSAGES_FILE
//
// MESSAGES_FILE: per message, big-endian int32 partition, int32 key length, key bytes,
// int32 value length, value bytes. Prints one JSON line: t_start_wall, sent, seconds, cpu_s.

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class PacedProducer {
    private record Msg(int partition, byte[] key, byte[] value) {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        double rate = Double.parseDouble(args[2]);
        List<Msg> msgs = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(new BufferedInputStream(new FileInputStream(args[3])))) {
            while (true) {
                int part;
                try {
                    part = in.readInt();
                } catch (EOFException e) {
                    break;
                }
                byte[] key = new byte[in.readInt()];
                in.readFully(key);
                byte[] value = new byte[in.readInt()];
                in.readFully(value);
                msgs.add(new Msg(part, key, value));
            }
        }
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "streamvae-bench-loadgen");
        // as streamvae's make_producer: acks=all, linger 5 ms, one request in flight
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "1");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            prod.partitionsFor(topic);  // metadata before the clock starts
            int total = msgs.size(), sent = 0;
            long cpu0 = os.getProcessCpuTime();
            double tStartWall = micros() / 1e6;
            long t0 = System.nanoTime();
            while (sent < total) {  // message j is due at t0 + j / rate
                int due = (int) Math.min(total, (long) ((System.nanoTime() - t0) / 1e9 * rate) + 1);
                while (sent < due) {
                    Msg m = msgs.get(sent++);
                    RecordHeaders h = new RecordHeaders();
                    h.add(new RecordHeader("sent_us", Long.toString(micros()).getBytes(StandardCharsets.US_ASCII)));
                    prod.send(new ProducerRecord<>(topic, m.partition(), null, m.key(), m.value(), h));
                }
                Thread.sleep(1);
            }
            double took = (System.nanoTime() - t0) / 1e9;
            double cpu = (os.getProcessCpuTime() - cpu0) / 1e9;
            prod.flush();
            System.out.printf("{\"t_start_wall\": %.6f, \"sent\": %d, \"seconds\": %.6f, \"cpu_s\": %.6f}%n", tStartWall, sent, took, cpu);
        }
    }

    private static long micros() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }
}
