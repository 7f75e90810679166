/* wsb-kafka-trace: a librdkafka interceptor plugin that stamps the moment a consumer hands a
 * record to its application, for bench/kafka_latency.py's bridge-added latency.
 *
 * Loaded through the client's own properties ("plugin.library.paths": this .so), so the
 * bridge under test is unchanged: its Kafka connector passes `properties` to librdkafka. The
 * on_consume interceptor runs inside rd_kafka_consume_batch_queue / rd_kafka_consumer_poll on
 * the application's thread (the bridge's connector thread), as each record is returned to
 * it: the same moment a plain consumer's rd_kafka_consumer_poll returns the record. Per
 * record with a {"seq":N,...} payload it appends "SEQ WALL_MS" (CLOCK_REALTIME, the clock of
 * wsb-load's receive times) to the file named by the environment variable WSB_KAFKA_TRACE:
 * the format of `wsb-kafka-bench latency --out`, read by `wsb-load --ref-times`.
 *
 * With WSB_KAFKA_TRACE_FETCH set too, every Fetch response the client's broker threads receive
 * appends "WALL_MS SIZE" to that file (on_response_received): when the answer that carried
 * a record arrived, to tell librdkafka's and the application's share of a hand-over apart.
 *
 * One write(2) per record (O_APPEND, so no line is split and nothing waits in a buffer at
 * exit): meant for the latency benchmark's 100 records/s, not for an ingest benchmark. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define IC_NAME "wsb-kafka-trace"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int trace_fd = -1, fetch_fd = -1;

static int open_env(const char *name)
{
    const char *path = getenv(name);
    return path && *path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
}

static void open_trace(void)
{
    trace_fd = open_env("WSB_KAFKA_TRACE");
    fetch_fd = open_env("WSB_KAFKA_TRACE_FETCH");
}

static double wall_ms(const struct timespec *t)
{
    return (double)t->tv_sec * 1e3 + (double)t->tv_nsec / 1e6;
}

/* The payload's "seq" member (a flat JSON number), or -1. */
static long long payload_seq(const rd_kafka_message_t *m)
{
    char tmp[128];
    size_t n = m->len < sizeof(tmp) - 1 ? m->len : sizeof(tmp) - 1;
    if (!m->payload)
        return -1;
    memcpy(tmp, m->payload, n);
    tmp[n] = '\0';
    const char *s = strstr(tmp, "\"seq\":");
    return s ? strtoll(s + 6, NULL, 10) : -1;
}

static rd_kafka_resp_err_t on_consume(rd_kafka_t *rk, rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t); /* first: the hand-over moment */
    if (trace_fd < 0 || m->err)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    long long seq = payload_seq(m);
    if (seq < 0)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    char line[64];
    int n = snprintf(line, sizeof(line), "%lld %.3f\n", seq, wall_ms(&t));
    if (write(trace_fd, line, (size_t)n) < 0) {
        /* nothing to do: the benchmark reports what it could match */
    }
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t on_response(rd_kafka_t *rk, int sockfd, const char *brokername,
                                       int32_t brokerid, int16_t api_key, int16_t api_version,
                                       int32_t corr_id, size_t size, int64_t rtt,
                                       rd_kafka_resp_err_t err, void *opaque)
{
    (void)rk, (void)sockfd, (void)brokername, (void)brokerid, (void)api_version;
    (void)corr_id, (void)rtt, (void)opaque;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    if (api_key != 1 /* Fetch */ || err || fetch_fd < 0)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    char line[64];
    int n = snprintf(line, sizeof(line), "%.3f %zu\n", wall_ms(&t), size);
    if (write(fetch_fd, line, (size_t)n) < 0) {
        /* as above */
    }
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t on_new(rd_kafka_t *rk, const rd_kafka_conf_t *conf, void *opaque,
                                  char *errstr, size_t errstr_size)
{
    (void)conf;
    (void)errstr;
    (void)errstr_size;
    /* a second registration (the plugin loaded again by a conf copy) conflicts: ignored */
    rd_kafka_interceptor_add_on_consume(rk, IC_NAME, on_consume, opaque);
    rd_kafka_interceptor_add_on_response_received(rk, IC_NAME, on_response, opaque);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void add_interceptors(rd_kafka_conf_t *conf);

static rd_kafka_resp_err_t on_conf_dup(rd_kafka_conf_t *new_conf, const rd_kafka_conf_t *old,
                                       size_t filter_cnt, const char **filter, void *opaque)
{
    (void)old;
    (void)filter_cnt;
    (void)filter;
    (void)opaque;
    add_interceptors(new_conf);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void add_interceptors(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_interceptor_add_on_new(conf, IC_NAME, on_new, NULL);
    rd_kafka_conf_interceptor_add_on_conf_dup(conf, IC_NAME, on_conf_dup, NULL);
}

/* The plugin's entry point, called by librdkafka when plugin.library.paths names it. */
rd_kafka_resp_err_t conf_init(rd_kafka_conf_t *conf, void **plug_opaquep, char *errstr,
                              size_t errstr_size);
rd_kafka_resp_err_t conf_init(rd_kafka_conf_t *conf, void **plug_opaquep, char *errstr,
                              size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    pthread_once(&once, open_trace);
    *plug_opaquep = NULL;
    add_interceptors(conf);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}
