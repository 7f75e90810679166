/* Tests for the kafka connector against librdkafka's in-process mock cluster. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "connectors/kafka.h"
#include "connectors/kafka_demo.h"
#include "util/log.h"

#define MAX_EVENTS 8192

/* librdkafka 2.0.2 starts its threads with C11 thrd_create, which ThreadSanitizer does not
 * intercept here: any client handle crashes a TSan build, so only the pure tests run there. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

enum ev_kind { EV_MESSAGE, EV_STARTED, EV_FAILED, EV_PUBLISHED, EV_STATE };

struct event {
    enum ev_kind kind;
    uint64_t id;
    struct wsb_msg *msg;
    char text[256];
    bool ok;
};

struct rec {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct event ev[MAX_EVENTS];
    size_t n;
};

static struct rec rec;

static struct event *push(enum ev_kind kind, uint64_t id, bool ok, const char *text,
                          struct wsb_msg *m)
{
    pthread_mutex_lock(&rec.lock);
    if (rec.n == MAX_EVENTS) {
        pthread_mutex_unlock(&rec.lock);
        wsb_msg_unref(m);
        return NULL;
    }
    struct event *e = &rec.ev[rec.n++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->id = id;
    e->ok = ok;
    e->msg = m;
    snprintf(e->text, sizeof(e->text), "%s", text ? text : "");
    pthread_cond_broadcast(&rec.cond);
    pthread_mutex_unlock(&rec.lock);
    return e;
}

static void on_message(void *ctx, struct wsb_msg *m)
{
    (void)ctx;
    push(EV_MESSAGE, m->source_id, true, NULL, m);
}
static void on_started(void *ctx, uint64_t id, const char *positions)
{
    (void)ctx;
    push(EV_STARTED, id, true, positions, NULL);
}
static void on_failed(void *ctx, uint64_t id, const char *code, const char *message)
{
    (void)ctx;
    (void)message;
    push(EV_FAILED, id, false, code, NULL);
}
static void on_published(void *ctx, uint64_t cookie, bool ok, const char *message)
{
    (void)ctx;
    push(EV_PUBLISHED, cookie, ok, message, NULL);
}
static void on_state(void *ctx, const char *connector, bool up, const char *reason)
{
    (void)ctx;
    (void)connector;
    push(EV_STATE, 0, up, reason, NULL);
}

static const struct wsb_sink sink = {.message = on_message,
                                     .source_started = on_started,
                                     .source_failed = on_failed,
                                     .publish_done = on_published,
                                     .state = on_state};

/* Count of events of `kind` for `id` (0: any). Caller holds the lock. */
static size_t count_locked(enum ev_kind kind, uint64_t id, bool want_ok)
{
    size_t n = 0;
    for (size_t i = 0; i < rec.n; i++)
        if (rec.ev[i].kind == kind && (id == 0 || rec.ev[i].id == id) &&
            (kind != EV_STATE || rec.ev[i].ok == want_ok))
            n++;
    return n;
}

/* Waits until at least `n` such events were recorded; returns the count. */
static size_t wait_for(enum ev_kind kind, uint64_t id, size_t n, int timeout_ms, bool want_ok)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&rec.lock);
    size_t c;
    while ((c = count_locked(kind, id, want_ok)) < n)
        if (pthread_cond_timedwait(&rec.cond, &rec.lock, &dl) != 0)
            break;
    c = count_locked(kind, id, want_ok);
    pthread_mutex_unlock(&rec.lock);
    return c;
}

static struct event *nth(enum ev_kind kind, uint64_t id, size_t idx)
{
    pthread_mutex_lock(&rec.lock);
    struct event *r = NULL;
    for (size_t i = 0; i < rec.n && !r; i++)
        if (rec.ev[i].kind == kind && (id == 0 || rec.ev[i].id == id) && idx-- == 0)
            r = &rec.ev[i];
    pthread_mutex_unlock(&rec.lock);
    return r;
}

/* ---- Fixture: a mock cluster, a plain producer, the connector ------------------------ */

static rd_kafka_t *mock_owner;
static rd_kafka_mock_cluster_t *mcluster;
static rd_kafka_t *producer;
static struct wsb_connector *conn;

static rd_kafka_t *new_client(rd_kafka_type_t type, const char *bootstraps)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (bootstraps)
        rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, err, sizeof(err));
    rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
    rd_kafka_conf_set(c, "linger.ms", "0", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
    assert_non_null(rk);
    return rk;
}

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&rec.lock);
    for (size_t i = 0; i < rec.n; i++)
        wsb_msg_unref(rec.ev[i].msg);
    rec.n = 0;
    pthread_mutex_unlock(&rec.lock);

    mock_owner = new_client(RD_KAFKA_PRODUCER, NULL);
    mcluster = rd_kafka_mock_cluster_new(mock_owner, 3);
    assert_non_null(mcluster);
    assert_int_equal(rd_kafka_mock_topic_create(mcluster, "t1", 3, 1), 0);
    const char *bs = rd_kafka_mock_cluster_bootstraps(mcluster);
    producer = new_client(RD_KAFKA_PRODUCER, bs);

    json_t *conf = json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "kafka", "brokers", bs,
                             "properties", "log_level", "3", "reconnect.backoff.max.ms", "500");
    char err[256];
    assert_int_equal(wsb_connector_new("kafka", "k1", conf, &sink, &conn, err, sizeof(err)),
                     WSB_OK);
    json_decref(conf);
    assert_int_equal(wsb_connector_start(conn), WSB_OK);
    assert_int_equal(wait_for(EV_STATE, 0, 1, 5000, true), 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    wsb_connector_stop(conn, 2000);
    wsb_connector_free(conn);
    rd_kafka_flush(producer, 1000);
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(mock_owner);
    return 0;
}

static void produce(int32_t partition, const char *key, const char *value)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "trace", -1, "abc", 3);
    rd_kafka_header_add(h, "n", -1, NULL, 0);
    assert_int_equal(
        rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC("t1"), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
            RD_KAFKA_V_VALUE((void *)value, strlen(value)), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
        0);
}

static void flush_producer(void)
{
    assert_int_equal(rd_kafka_flush(producer, 5000), 0);
}

static void subscribe(uint64_t id, enum wsb_from_kind from, const struct wsb_partition_offset *po,
                      size_t npo)
{
    json_t *sf = json_pack("{s:s}", "topic", "t1");
    struct wsb_source s = {.fields = sf, .from = from, .from_offsets = po, .nfrom_offsets = npo};
    assert_int_equal(wsb_connector_subscribe(conn, id, &s), WSB_OK);
    json_decref(sf);
}

/* ---- Tests --------------------------------------------------------------------------- */

static void test_latest_then_live(void **state)
{
    (void)state;
    produce(0, "a", "old0");
    produce(0, "a", "old1");
    flush_producer();

    subscribe(1, WSB_FROM_LATEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 1, 1, 10000, true), 1);
    assert_string_equal(nth(EV_STARTED, 1, 0)->text, "{\"0\":2,\"1\":0,\"2\":0}");

    produce(1, "k1", "{\"v\":1}");
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 1, 1, 10000, true), 1);
    struct wsb_msg *m = nth(EV_MESSAGE, 1, 0)->msg;
    assert_int_equal(m->partition, 1);
    assert_int_equal(m->offset, 0);
    assert_int_equal(m->key_len, 2);
    assert_memory_equal(m->key, "k1", 2);
    assert_int_equal(m->payload_len, 7);
    assert_memory_equal(m->payload, "{\"v\":1}", 7);
    assert_int_equal(m->nheaders, 2);
    assert_string_equal(m->headers[0].name, "trace");
    assert_memory_equal(m->headers[0].value, "abc", 3);
    assert_string_equal(m->headers[1].name, "n");
    assert_null(m->headers[1].value);
    assert_true(m->timestamp_ms > 0);
    assert_true(wsb_connector_messages_in(conn) >= 1);
    char reason[128];
    assert_true(wsb_connector_ready(conn, reason, sizeof(reason)));

    /* A second reader of the same topic from offsets (an extra handle) replays exactly. */
    struct wsb_partition_offset po[] = {{.partition = 0, .offset = 1},
                                        {.partition = 2, .offset = 100}};
    subscribe(2, WSB_FROM_OFFSETS, po, 2);
    assert_int_equal(wait_for(EV_STARTED, 2, 1, 10000, true), 1);
    /* partition 1 not named: latest; partition 2 clamped to its end */
    assert_string_equal(nth(EV_STARTED, 2, 0)->text, "{\"0\":1,\"1\":1,\"2\":0}");
    assert_int_equal(wait_for(EV_MESSAGE, 2, 1, 10000, true), 1);
    m = nth(EV_MESSAGE, 2, 0)->msg;
    assert_int_equal(m->partition, 0);
    assert_int_equal(m->offset, 1);
    assert_memory_equal(m->payload, "old1", 4);

    /* Earliest replays everything. */
    subscribe(3, WSB_FROM_EARLIEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 3, 1, 10000, true), 1);
    assert_string_equal(nth(EV_STARTED, 3, 0)->text, "{\"0\":0,\"1\":0,\"2\":0}");
    assert_int_equal(wait_for(EV_MESSAGE, 3, 3, 10000, true), 3);

    /* Unsubscribe: no more messages for that source. */
    wsb_connector_unsubscribe(conn, 2);
    wsb_connector_unsubscribe(conn, 3);
    produce(2, NULL, "later");
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 1, 2, 10000, true), 2);
    assert_null(nth(EV_MESSAGE, 1, 1)->msg->key);
    assert_int_equal(wait_for(EV_MESSAGE, 2, 2, 300, true), 1);
}

static void test_publish(void **state)
{
    (void)state;
    subscribe(1, WSB_FROM_LATEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 1, 1, 10000, true), 1);
    struct wsb_header h = {.name = "h", .value = (const uint8_t *)"v", .value_len = 1};
    json_t *pf = json_pack("{s:s}", "topic", "t1");
    struct wsb_publish p = {.fields = pf,
                            .key = (const uint8_t *)"key",
                            .key_len = 3,
                            .payload = (const uint8_t *)"hello",
                            .payload_len = 5,
                            .headers = &h,
                            .nheaders = 1};
    assert_int_equal(wsb_connector_publish(conn, &p, 77), WSB_OK);
    json_decref(pf);
    assert_int_equal(wait_for(EV_PUBLISHED, 77, 1, 10000, true), 1);
    assert_true(nth(EV_PUBLISHED, 77, 0)->ok);
    assert_int_equal(wait_for(EV_MESSAGE, 1, 1, 10000, true), 1);
    struct wsb_msg *m = nth(EV_MESSAGE, 1, 0)->msg;
    assert_memory_equal(m->payload, "hello", 5);
    assert_memory_equal(m->key, "key", 3);
    assert_int_equal(m->nheaders, 1);
    assert_string_equal(m->headers[0].name, "h");

    /* An ack source needs a group (consumer groups: test_59_kafka_groups.py). (An unknown
     * topic is not tested: the mock cluster, like brokers with auto.create.topics.enable,
     * creates it.) */
    json_t *acks_fields = json_pack("{s:s}", "topic", "t1");
    struct wsb_source acks = {.fields = acks_fields, .ack = true};
    assert_int_equal(wsb_connector_subscribe(conn, 6, &acks), WSB_OK);
    json_decref(acks_fields);
    assert_int_equal(wait_for(EV_FAILED, 6, 1, 10000, true), 1);
    assert_string_equal(nth(EV_FAILED, 6, 0)->text, "unsupported");
}

static void produce_at(int32_t partition, const char *value, int64_t timestamp_ms)
{
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC("t1"),
                                       RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                                       RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_END),
                     0);
}

/* librdkafka 2.0.2's mock cluster answers every ListOffsets-by-time with -1 ("no record at or
 * after T"). The connector checks such an answer against the partition's last record and,
 * when that one is at or after T, starts at the low watermark dropping what is older than T
 * up to the first record at or after it. (Should the mock learn to answer, the same records
 * must come out, from the broker's offset.) */
static void test_from_timestamp(void **state)
{
    (void)state;
    /* Partition 0 crosses T at offset 2 (a later record older than T is still delivered);
     * partition 1 is entirely older than T; partition 2 is empty. */
    const int64_t p0[] = {1000, 2000, 3000, 2500, 4000};
    for (int i = 0; i < 5; i++)
        produce_at(0, p0[i] == 2500 ? "late" : "p0", p0[i]);
    produce_at(1, "old", 1000);
    produce_at(1, "old", 1500);
    flush_producer();

    json_t *sf = json_pack("{s:s}", "topic", "t1");
    struct wsb_source s = {.fields = sf, .from = WSB_FROM_TIMESTAMP, .from_timestamp_ms = 3000};
    assert_int_equal(wsb_connector_subscribe(conn, 4, &s), WSB_OK);
    json_decref(sf);
    assert_int_equal(wait_for(EV_STARTED, 4, 1, 10000, true), 1);
    const char *pos = nth(EV_STARTED, 4, 0)->text;
    /* Filter mode reports the low watermark; a broker that answers reports offset 2. */
    assert_true(strcmp(pos, "{\"0\":0,\"1\":2,\"2\":0}") == 0 ||
                strcmp(pos, "{\"0\":2,\"1\":2,\"2\":0}") == 0);
    assert_int_equal(wait_for(EV_MESSAGE, 4, 3, 10000, true), 3);
    for (int i = 0; i < 3; i++) {
        struct wsb_msg *m = nth(EV_MESSAGE, 4, (size_t)i)->msg;
        assert_int_equal(m->partition, 0);
        assert_int_equal(m->offset, 2 + i);
        assert_int_equal(m->timestamp_ms, p0[2 + i]);
    }
    /* Live records after the start come through, whatever their timestamps. */
    produce_at(1, "new", 500);
    produce_at(2, "z0", 6000);
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 4, 5, 10000, true), 5);
    assert_int_equal(wait_for(EV_MESSAGE, 4, 6, 300, true), 5);
    for (size_t i = 3; i < 5; i++) {
        struct wsb_msg *m = nth(EV_MESSAGE, 4, i)->msg;
        assert_true((m->partition == 1 && m->offset == 2) || (m->partition == 2 && m->offset == 0));
    }

    /* T after every record: -1 is right, every partition starts at its end. */
    json_t *ff = json_pack("{s:s}", "topic", "t1");
    struct wsb_source f = {.fields = ff, .from = WSB_FROM_TIMESTAMP, .from_timestamp_ms = 7000};
    assert_int_equal(wsb_connector_subscribe(conn, 5, &f), WSB_OK);
    json_decref(ff);
    assert_int_equal(wait_for(EV_STARTED, 5, 1, 10000, true), 1);
    assert_string_equal(nth(EV_STARTED, 5, 0)->text, "{\"0\":5,\"1\":3,\"2\":1}");
    assert_int_equal(wait_for(EV_MESSAGE, 5, 1, 500, true), 0);
}

/* The last record cannot be read within the 2 s cap (every fetch fails): the broker's -1
 * stands and the partition starts at its end. */
static void test_from_timestamp_unverified(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        produce_at(0, "p0", 1000 + i * 1000);
    flush_producer();
    rd_kafka_resp_err_t errs[12];
    for (size_t i = 0; i < 12; i++)
        errs[i] = RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
    rd_kafka_mock_push_request_errors_array(mcluster, 1 /* Fetch */, 12, errs);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *sf = json_pack("{s:s}", "topic", "t1");
    struct wsb_source s = {.fields = sf, .from = WSB_FROM_TIMESTAMP, .from_timestamp_ms = 2000};
    assert_int_equal(wsb_connector_subscribe(conn, 4, &s), WSB_OK);
    json_decref(sf);
    assert_int_equal(wait_for(EV_STARTED, 4, 1, 10000, true), 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 1900 && ms < 5000);
    assert_string_equal(nth(EV_STARTED, 4, 0)->text, "{\"0\":3,\"1\":0,\"2\":0}");
    produce_at(0, "new", 500);
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 4, 1, 15000, true), 1);
    assert_int_equal(nth(EV_MESSAGE, 4, 0)->msg->offset, 3);
}

/* Many messages: the consume loop batches and must not stall between wake-ups. */
static void test_many(void **state)
{
    (void)state;
    subscribe(1, WSB_FROM_LATEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 1, 1, 10000, true), 1);
    char v[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(v, sizeof(v), "m%d", i);
        produce(i % 3, NULL, v);
        if (i % 1000 == 999)
            rd_kafka_poll(producer, 0);
    }
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 1, 5000, 15000, true), 5000);
    int64_t next[3] = {0, 0, 0};
    for (size_t i = 0; i < 5000; i++) {
        struct wsb_msg *m = nth(EV_MESSAGE, 1, i)->msg;
        assert_int_equal(m->offset, next[m->partition]++); /* in order per partition */
    }
    assert_int_equal(wsb_connector_messages_in(conn), 5000);
}

static void test_outage(void **state)
{
    (void)state;
    subscribe(1, WSB_FROM_LATEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 1, 1, 10000, true), 1);
    for (int i = 0; i < 3; i++)
        produce(0, NULL, "before");
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 1, 3, 10000, true), 3);

    rd_kafka_mock_broker_set_down(mcluster, -1);
    assert_int_equal(wait_for(EV_STATE, 0, 1, 10000, false), 1);
    char reason[128];
    assert_false(wsb_connector_ready(conn, reason, sizeof(reason)));
    assert_true(strlen(reason) > 0);
    for (int i = 0; i < 3; i++)
        produce(0, NULL, "during"); /* queued in the producer until the brokers return */

    rd_kafka_mock_broker_set_up(mcluster, -1);
    assert_int_equal(wait_for(EV_STATE, 0, 2, 10000, true), 2);
    flush_producer();
    for (int i = 0; i < 3; i++)
        produce(0, NULL, "after");
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 1, 9, 15000, true), 9);
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(nth(EV_MESSAGE, 1, i)->msg->offset, (int64_t)i);
    assert_true(wsb_connector_ready(conn, reason, sizeof(reason)));
}

/* A subscribe is answered after its lookups, which run off the connector thread: a source
 * unsubscribed while its lookup runs is never started, and a source whose partition has no
 * leader fails without holding the others up. */
static void test_pending_sources(void **state)
{
    (void)state;
    subscribe(1, WSB_FROM_LATEST, NULL, 0);
    wsb_connector_unsubscribe(conn, 1);
    subscribe(2, WSB_FROM_LATEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 2, 1, 10000, true), 1);

    assert_int_equal(rd_kafka_mock_topic_create(mcluster, "leaderless", 1, 3), 0);
    assert_int_equal(rd_kafka_mock_partition_set_leader(mcluster, "leaderless", 0, -1), 0);
    json_t *stuck_fields = json_pack("{s:s}", "topic", "leaderless");
    struct wsb_source stuck = {.fields = stuck_fields, .from = WSB_FROM_LATEST};
    assert_int_equal(wsb_connector_subscribe(conn, 3, &stuck), WSB_OK);
    json_decref(stuck_fields);
    subscribe(4, WSB_FROM_EARLIEST, NULL, 0);
    assert_int_equal(wait_for(EV_STARTED, 4, 1, 10000, true), 1);
    assert_int_equal(wait_for(EV_FAILED, 3, 1, 15000, true), 1);
    assert_string_equal(nth(EV_FAILED, 3, 0)->text, "unavailable");

    produce(0, NULL, "x");
    flush_producer();
    assert_int_equal(wait_for(EV_MESSAGE, 2, 1, 10000, true), 1);
    assert_int_equal(wait_for(EV_MESSAGE, 4, 1, 10000, true), 1);
    assert_int_equal(wait_for(EV_STARTED, 1, 1, 300, true), 0);
    assert_int_equal(wait_for(EV_FAILED, 1, 1, 0, true), 0);
    assert_int_equal(wait_for(EV_MESSAGE, 1, 1, 0, true), 0);
    assert_int_equal(wait_for(EV_STARTED, 3, 1, 0, true), 0);
}

/* stop() gives pending publishes up to its timeout, then fails them; the sink stays quiet after. */
static void test_stop_fails_pending_publishes(void **state)
{
    (void)state;
    rd_kafka_mock_broker_set_down(mcluster, -1);
    assert_int_equal(wait_for(EV_STATE, 0, 1, 10000, false), 1);
    json_t *pf = json_pack("{s:s}", "topic", "t1");
    struct wsb_publish p = {.fields = pf, .payload = (const uint8_t *)"x", .payload_len = 1};
    assert_int_equal(wsb_connector_publish(conn, &p, 91), WSB_OK);
    wsb_connector_stop(conn, 300);
    assert_int_equal(wait_for(EV_PUBLISHED, 91, 1, 0, true), 1);
    assert_false(nth(EV_PUBLISHED, 91, 0)->ok);
    assert_int_equal(wsb_connector_publish(conn, &p, 92), WSB_ERR_UNAVAILABLE);
    json_decref(pf);
    rd_kafka_mock_broker_set_up(mcluster, -1);
}

static void test_demo(void **state)
{
    (void)state;
    char bs[256], err[256];
    assert_int_equal(wsb_kafka_demo_start(bs, sizeof(bs), err, sizeof(err)), 0);
    assert_int_equal(wsb_kafka_demo_start(bs, sizeof(bs), err, sizeof(err)), -1);
    json_t *conf = json_pack("{s:s, s:s}", "type", "kafka", "brokers", bs);
    assert_int_equal(wsb_connector_new("kafka", "demo", conf, &sink, &conn, err, sizeof(err)),
                     WSB_OK);
    json_decref(conf);
    assert_int_equal(wsb_connector_start(conn), WSB_OK);
    json_t *sf = json_pack("{s:s}", "topic", "demo.ticks");
    struct wsb_source s = {.fields = sf, .from = WSB_FROM_EARLIEST};
    assert_int_equal(wsb_connector_subscribe(conn, 9, &s), WSB_OK);
    json_decref(sf);
    assert_int_equal(wait_for(EV_STARTED, 9, 1, 10000, true), 1);
    assert_true(wait_for(EV_MESSAGE, 9, 2, 10000, true) >= 2);
    struct wsb_msg *m = nth(EV_MESSAGE, 9, 0)->msg;
    assert_true(m->payload_len > 10);
    assert_memory_equal(m->payload, "{\"seq\":1,", 9);
    wsb_connector_stop(conn, 1000);
    wsb_connector_free(conn);
    wsb_kafka_demo_stop();
    wsb_kafka_demo_stop();
}

struct problems {
    int n;
    char last[256];
};

static void report(void *ctx, const char *path, const char *msg)
{
    struct problems *p = ctx;
    p->n++;
    snprintf(p->last, sizeof(p->last), "%s: %s", path, msg);
}

static void test_check_config(void **state)
{
    (void)state;
    const struct wsb_connector_ops *ops = &wsb_kafka_ops;
    struct problems p = {0};
    json_t *ok = json_pack("{s:s, s:s, s:s, s:{s:s}}", "type", "kafka", "brokers", "h:9092",
                           "client_id", "x", "properties", "security.protocol", "plaintext");
    assert_int_equal(ops->check_config(ok, report, &p), 0);

    json_t *nob = json_pack("{s:s}", "type", "kafka");
    assert_int_equal(ops->check_config(nob, report, &p), 1);
    assert_string_equal(p.last, ".brokers: required (\"host:port,...\")");

    json_t *badprop = json_pack("{s:s, s:{s:i}}", "brokers", "h:1", "properties", "linger.ms", 5);
    assert_int_equal(ops->check_config(badprop, report, &p), 1);
    assert_string_equal(p.last, ".properties.linger.ms: must be a string");

    json_t *unknown = json_pack("{s:s, s:{s:s}, s:i}", "brokers", "h:1", "properties",
                                "no.such.property", "1", "typo", 1);
    assert_int_equal(ops->check_config(unknown, report, &p), 2);

    json_t *ch = json_pack("{s:s, s:s, s:s}", "match", "a", "topic", "t", "group", "g");
    assert_int_equal(ops->check_channel(ch, report, &p), 0);
    json_t *ch2 = json_pack("{s:s, s:s}", "match", "a", "exchange", "x");
    assert_int_equal(ops->check_channel(ch2, report, &p), 2);
    json_decref(ok);
    json_decref(nob);
    json_decref(badprop);
    json_decref(unknown);
    json_decref(ch);
    json_decref(ch2);
}

int main(void)
{
    pthread_mutex_init(&rec.lock, NULL);
    pthread_cond_init(&rec.cond, NULL);
    wsb_log_init(WSB_LOG_ERROR, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_config),
        cmocka_unit_test_setup_teardown(test_latest_then_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_timestamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_timestamp_unverified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_fails_pending_publishes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_sources, setup, teardown),
        cmocka_unit_test(test_demo),
    };
    if (UNDER_TSAN) {
        fprintf(stderr, "kafka_test: client tests skipped under ThreadSanitizer\n");
        const struct CMUnitTest pure[] = {cmocka_unit_test(test_check_config)};
        return cmocka_run_group_tests(pure, NULL, NULL);
    }
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t i = 0; i < rec.n; i++)
        wsb_msg_unref(rec.ev[i].msg);
    return rc;
}
