/* wsb-kafka-bench: a plain librdkafka producer and batch consumer, the reference for the
 * bridge's Kafka ingest (S7 of bench/run.sh) and the broker side of bench/kafka_latency.py.
 *
 *   wsb-kafka-bench produce --brokers B --topic T --count N [--payload BYTES]
 *       N records of about BYTES ({"seq":I,"ts":MS,"pad":"x..."}) into partition 0, as fast
 *       as the producer batches them; waits for every delivery report.
 *   wsb-kafka-bench consume --brokers B --topic T --count N [--offset O] [--timeout S]
 *                           [--property K=V]...
 *       assigns partition 0 at offset O (default 0) and reads N records with
 *       rd_kafka_consume_batch_queue (1,000 per call), touching every payload byte.
 *   wsb-kafka-bench follow --brokers B --topic T --count N --seconds S [--property K=V]...
 *       reads partition 0 from its end for S seconds and prints {"records":R,"mono_s":T}
 *       each time R, the records read so far, reaches a multiple of N (T: CLOCK_MONOTONIC,
 *       the clock of Python's time.monotonic()): S7 stops it (SIGSTOP), produces N records,
 *       resumes it and times the catch-up.
 *   wsb-kafka-bench latency --brokers B --topic T --seconds S [--out FILE] [--property K=V]...
 *       reads partition 0 from its end for S seconds; per record, receive wall clock minus
 *       the "ts" in the payload; with --out, one "SEQ RECV_MS" line per record.
 *
 * Prints one JSON line on stdout. Timing: consume counts from the first record received to the
 * Nth (records_per_s), and from the assign (records_per_s_from_assign); CPU seconds from
 * getrusage (the whole process: librdkafka's threads too). Plain C and librdkafka only. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MAX_PROPS 32
#define BATCH 1000
#define LAT_BUCKETS 100000 /* 0.1 ms each, up to 10 s */

struct opts {
    const char *mode, *brokers, *topic, *out;
    long long count, offset;
    int payload;
    double timeout_s, seconds;
    const char *props[MAX_PROPS];
    int nprops;
};

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "wsb-kafka-bench: %s=%s: %s\n", k, v, err);
        return -1;
    }
    return 0;
}

static rd_kafka_conf_t *conf_new(const struct opts *o, bool consumer)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", o->brokers) < 0)
        return NULL;
    if (consumer &&
        (set(c, "group.id", "wsb-kafka-bench") < 0 || set(c, "enable.auto.commit", "false") < 0 ||
         set(c, "enable.partition.eof", "false") < 0))
        return NULL;
    for (int i = 0; i < o->nprops; i++) {
        char kv[512];
        snprintf(kv, sizeof(kv), "%s", o->props[i]);
        char *eq = strchr(kv, '=');
        if (!eq)
            return NULL;
        *eq = '\0';
        if (set(c, kv, eq + 1) < 0)
            return NULL;
    }
    return c;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    long long *counts = opaque; /* [0] ok, [1] failed */
    counts[m->err ? 1 : 0]++;
}

static int produce(const struct opts *o)
{
    rd_kafka_conf_t *c = conf_new(o, false);
    long long counts[2] = {0, 0};
    if (!c || set(c, "linger.ms", "5") < 0 || set(c, "batch.num.messages", "10000") < 0 ||
        set(c, "queue.buffering.max.messages", "1000000") < 0)
        return 2;
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_conf_set_opaque(c, counts);
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "wsb-kafka-bench: %s\n", err);
        return 2;
    }
    char pad[65536];
    int padn = o->payload > 40 ? o->payload - 40 : 0;
    if (padn > (int)sizeof(pad) - 1)
        padn = (int)sizeof(pad) - 1;
    memset(pad, 'x', (size_t)padn);
    pad[padn] = '\0';
    double t0 = mono_s();
    char buf[sizeof(pad) + 128];
    for (long long i = 0; i < o->count; i++) {
        int n = snprintf(buf, sizeof(buf), "{\"seq\":%lld,\"ts\":%.3f,\"pad\":\"%s\"}", i,
                         wall_ms(), pad);
        while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(o->topic), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_VALUE(buf, (size_t)n),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 60000);
    double dt = mono_s() - t0;
    printf("{\"mode\":\"produce\",\"produced\":%lld,\"failed\":%lld,\"seconds\":%.3f,"
           "\"records_per_s\":%.0f}\n",
           counts[0], counts[1], dt, (double)counts[0] / dt);
    rd_kafka_destroy(rk);
    return counts[0] == o->count ? 0 : 1;
}

static rd_kafka_t *consumer_at(const struct opts *o, int64_t offset)
{
    rd_kafka_conf_t *c = conf_new(o, true);
    char err[256];
    if (!c)
        return NULL;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "wsb-kafka-bench: %s\n", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, o->topic, 0)->offset = offset;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        fprintf(stderr, "wsb-kafka-bench: assign: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

static int consume(const struct opts *o)
{
    double t_assign = mono_s(), cpu0 = cpu_s();
    rd_kafka_t *rk = consumer_at(o, o->offset);
    if (!rk)
        return 2;
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t *batch[BATCH];
    long long got = 0, errors = 0;
    uint64_t sum = 0;
    double t_first = 0, t_last = 0, deadline = t_assign + o->timeout_s;
    while (got < o->count && mono_s() < deadline) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, batch, BATCH);
        for (ssize_t i = 0; i < n; i++) {
            if (batch[i]->err) {
                errors++;
            } else {
                if (got++ == 0)
                    t_first = mono_s();
                const unsigned char *p = batch[i]->payload;
                for (size_t j = 0; j < batch[i]->len; j++)
                    sum += p[j];
            }
            rd_kafka_message_destroy(batch[i]);
        }
    }
    t_last = mono_s();
    double cpu = cpu_s() - cpu0;
    printf("{\"mode\":\"consume\",\"records\":%lld,\"errors\":%lld,\"checksum\":%" PRIu64
           ",\"seconds\":%.3f,\"records_per_s\":%.0f,\"records_per_s_from_assign\":%.0f,"
           "\"cpu_s\":%.3f}\n",
           got, errors, sum, got ? t_last - t_first : 0.0,
           got > 1 ? (double)(got - 1) / (t_last - t_first) : 0.0,
           (double)got / (t_last - t_assign), cpu);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return got >= o->count ? 0 : 1;
}

static int follow(const struct opts *o)
{
    rd_kafka_t *rk = consumer_at(o, RD_KAFKA_OFFSET_END);
    if (!rk)
        return 2;
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t *batch[BATCH];
    long long got = 0;
    uint64_t sum = 0;
    double end = mono_s() + o->seconds;
    printf("{\"ready\":true}\n");
    fflush(stdout);
    while (mono_s() < end) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, batch, BATCH);
        for (ssize_t i = 0; i < n; i++) {
            if (!batch[i]->err) {
                const unsigned char *p = batch[i]->payload;
                for (size_t j = 0; j < batch[i]->len; j++)
                    sum += p[j];
                if (++got % o->count == 0) {
                    printf("{\"records\":%lld,\"mono_s\":%.6f}\n", got, mono_s());
                    fflush(stdout);
                }
            }
            rd_kafka_message_destroy(batch[i]);
        }
    }
    fprintf(stderr, "checksum %" PRIu64 "\n", sum);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

/* Reads the "seq" and "ts" members of the publisher's payload (flat JSON numbers). */
static bool seq_ts(const char *p, size_t len, long long *seq, double *ts)
{
    char tmp[256];
    size_t n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    const char *s = strstr(tmp, "\"seq\":"), *t = strstr(tmp, "\"ts\":");
    if (!s || !t)
        return false;
    *seq = strtoll(s + 6, NULL, 10);
    *ts = strtod(t + 5, NULL);
    return true;
}

static double pct(const uint32_t *h, uint64_t n, double q)
{
    uint64_t want = (uint64_t)(q * (double)n), acc = 0;
    for (size_t b = 0; b < LAT_BUCKETS; b++) {
        acc += h[b];
        if (acc > want)
            return (double)b / 10.0;
    }
    return (double)LAT_BUCKETS / 10.0;
}

static int latency(const struct opts *o)
{
    rd_kafka_t *rk = consumer_at(o, RD_KAFKA_OFFSET_END);
    if (!rk)
        return 2;
    FILE *out = o->out ? fopen(o->out, "w") : NULL;
    if (o->out && !out) {
        fprintf(stderr, "wsb-kafka-bench: %s: %s\n", o->out, strerror(errno));
        return 2;
    }
    uint32_t *h = calloc(LAT_BUCKETS, sizeof(*h));
    if (!h)
        return 2;
    uint64_t n = 0;
    double end = mono_s() + o->seconds;
    /* one record at a time: a batch call would wait to fill its batch */
    while (mono_s() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (!m)
            continue;
        double now = wall_ms();
        long long seq;
        double ts;
        if (!m->err && seq_ts(m->payload, m->len, &seq, &ts)) {
            double ms = now - ts;
            size_t b = ms <= 0 ? 0 : (size_t)(ms * 10.0);
            h[b < LAT_BUCKETS ? b : LAT_BUCKETS - 1]++;
            n++;
            if (out)
                fprintf(out, "%lld %.3f\n", seq, now);
        }
        rd_kafka_message_destroy(m);
    }
    if (out)
        fclose(out);
    printf("{\"mode\":\"latency\",\"records\":%" PRIu64
           ",\"latency_ms\":{\"p50\":%.1f,\"p99\":%.1f,\"p99.9\":%.1f}}\n",
           n, pct(h, n, 0.5), pct(h, n, 0.99), pct(h, n, 0.999));
    free(h);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: wsb-kafka-bench produce|consume|follow|latency --brokers B --topic T\n"
            "         [--count N] [--payload BYTES] [--offset O] [--timeout S] [--seconds S]\n"
            "         [--out FILE] [--property K=V]...\n");
}

int main(int argc, char **argv)
{
    struct opts o = {.count = 100000, .payload = 100, .timeout_s = 60, .seconds = 10};
    if (argc < 2) {
        usage();
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--brokers") == 0)
            o.brokers = v;
        else if (strcmp(a, "--topic") == 0)
            o.topic = v;
        else if (strcmp(a, "--count") == 0)
            o.count = atoll(v);
        else if (strcmp(a, "--payload") == 0)
            o.payload = atoi(v);
        else if (strcmp(a, "--offset") == 0)
            o.offset = atoll(v);
        else if (strcmp(a, "--timeout") == 0)
            o.timeout_s = atof(v);
        else if (strcmp(a, "--seconds") == 0)
            o.seconds = atof(v);
        else if (strcmp(a, "--out") == 0)
            o.out = v;
        else if (strcmp(a, "--property") == 0 && o.nprops < MAX_PROPS)
            o.props[o.nprops++] = v;
        else {
            usage();
            return 2;
        }
    }
    if (!o.brokers || !o.topic || o.count <= 0) {
        usage();
        return 2;
    }
    if (strcmp(o.mode, "produce") == 0)
        return produce(&o);
    if (strcmp(o.mode, "consume") == 0)
        return consume(&o);
    if (strcmp(o.mode, "latency") == 0)
        return latency(&o);
    if (strcmp(o.mode, "follow") == 0)
        return follow(&o);
    usage();
    return 2;
}
