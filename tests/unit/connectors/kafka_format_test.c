/* Tests for connectors/kafka_format: records rendered per value_format/key_format with a
 * schema registry served in-process (evhttp on a thread): decoding once a schema arrives,
 * partition order kept while a schema is fetched, unknown ids under avro (a skip marker) and
 * auto (passed through), json and raw, the held-records bound failing the source, publishes
 * encoded with the subject's latest schema and refused when they do not fit. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#include "connectors/avro_json.h"
#include "connectors/kafka_format.h"

#define SCHEMA_REC                                                                                 \
    "{\\\"type\\\":\\\"record\\\",\\\"name\\\":\\\"R\\\",\\\"fields\\\":[{\\\"name\\\":\\\"a\\\"," \
    "\\\"type\\\":\\\"long\\\"}]}"

/* ---- A registry: id 1 and 2 (2 answers slowly), subject t-value -> id 7 ---------------- */

static struct event_base *reg_base;
static struct evhttp *reg_http;
static pthread_t reg_thread;
static int reg_port;

static void serve(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *b = evbuffer_new();
    int code = 200;
    if (strcmp(uri, "/schemas/ids/1") == 0 || strcmp(uri, "/schemas/ids/7") == 0) {
        evbuffer_add_printf(b, "{\"schema\":\"%s\"}", SCHEMA_REC);
    } else if (strcmp(uri, "/schemas/ids/2") == 0) {
        usleep(200000); /* long enough for later records to pile up behind it */
        evbuffer_add_printf(b, "{\"schema\":\"\\\"string\\\"\"}");
    } else if (strcmp(uri, "/subjects/t-value/versions/latest") == 0) {
        evbuffer_add_printf(b, "{\"subject\":\"t-value\",\"version\":1,\"id\":7,\"schema\":\"%s\"}",
                            SCHEMA_REC);
    } else {
        code = 404;
        evbuffer_add_printf(b, "{\"error_code\":40403,\"message\":\"not found\"}");
    }
    evhttp_send_reply(req, code, "x", b);
    evbuffer_free(b);
}

static void *reg_run(void *arg)
{
    (void)arg;
    event_base_dispatch(reg_base);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    reg_base = event_base_new();
    reg_http = evhttp_new(reg_base);
    evhttp_set_gencb(reg_http, serve, NULL);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(reg_http, "127.0.0.1", 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sa, &len);
    reg_port = ntohs(sa.sin_port);
    pthread_create(&reg_thread, NULL, reg_run, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    event_base_loopexit(reg_base, NULL);
    pthread_join(reg_thread, NULL);
    evhttp_free(reg_http);
    event_base_free(reg_base);
    return 0;
}

/* ---- A sink that records what it gets --------------------------------------------------- */

#define MAXLOG 64
struct rec {
    uint64_t source;
    int32_t partition;
    int64_t offset;
    uint32_t flags;
    char payload[256];
    char key[256];
};
static struct rec got[MAXLOG];
static int ngot;
static char failed_code[64];
static uint64_t failed_source, dropped_source;
static bool pub_ok;
static char pub_msg[512];
static int pubs_done;
static uint8_t produced[256];
static size_t produced_len;
static int nproduced;

static void sink_message(void *ctx, struct wsb_msg *m)
{
    (void)ctx;
    if (ngot < MAXLOG) {
        struct rec *r = &got[ngot++];
        r->source = m->source_id;
        r->partition = m->partition;
        r->offset = m->offset;
        r->flags = m->flags;
        snprintf(r->payload, sizeof(r->payload), "%.*s", (int)m->payload_len,
                 m->payload ? (const char *)m->payload : "");
        snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len,
                 m->key ? (const char *)m->key : "");
    }
    wsb_msg_unref(m);
}
static void sink_failed(void *ctx, uint64_t id, const char *code, const char *message)
{
    (void)ctx;
    (void)message;
    failed_source = id;
    snprintf(failed_code, sizeof(failed_code), "%s", code);
}
static void sink_publish_done(void *ctx, uint64_t cookie, bool ok, const char *message)
{
    (void)ctx;
    (void)cookie;
    pub_ok = ok;
    snprintf(pub_msg, sizeof(pub_msg), "%s", message ? message : "");
    pubs_done++;
}
static void hook_produce(void *ctx, const char *topic, const struct wsb_msg *m, uint64_t cookie)
{
    (void)ctx;
    (void)topic;
    (void)cookie;
    produced_len = m->payload_len < sizeof(produced) ? m->payload_len : sizeof(produced);
    memcpy(produced, m->payload, produced_len);
    nproduced++;
}
static void hook_drop(void *ctx, uint64_t id)
{
    (void)ctx;
    dropped_source = id;
}
static void hook_wake(void *ctx)
{
    (void)ctx;
}

static struct wsb_kfmt *stage(const char *extra)
{
    char text[256], err[256] = "";
    ngot = 0;
    failed_code[0] = '\0';
    failed_source = dropped_source = 0;
    pubs_done = nproduced = 0;
    snprintf(text, sizeof(text), "{\"url\":\"http://127.0.0.1:%d\"%s}", reg_port,
             extra ? extra : "");
    json_t *conf = json_loads(text, 0, NULL);
    const struct wsb_sink sink = {
        .message = sink_message, .source_failed = sink_failed, .publish_done = sink_publish_done};
    const struct wsb_kfmt_hooks hooks = {
        .produce = hook_produce, .drop = hook_drop, .wake = hook_wake};
    struct wsb_kfmt *f = wsb_kfmt_new("k", conf, &sink, &hooks, err, sizeof(err));
    json_decref(conf);
    if (!f)
        fail_msg("%s", err);
    assert_int_equal(wsb_kfmt_start(f), WSB_OK);
    return f;
}

/* A record {"a": a} with schema id `id` (or raw bytes when id is 0). */
static struct wsb_msg *record(uint64_t source, int32_t partition, int64_t offset, uint32_t id,
                              long a)
{
    uint8_t buf[32];
    size_t n = 0;
    if (id) {
        wsb_avro_wire_header(buf, id);
        n = WSB_AVRO_WIRE_HEADER;
        uint64_t z = ((uint64_t)a << 1) ^ (uint64_t)(a >> 63); /* zigzag varint */
        do {
            buf[n++] = (uint8_t)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
            z >>= 7;
        } while (z);
    } else {
        n = (size_t)snprintf((char *)buf, sizeof(buf), "{\"plain\":%ld}", a);
    }
    return wsb_msg_new(source, partition, offset, -1, NULL, 0, buf, n, NULL, 0);
}

static void pump(struct wsb_kfmt *f, int want)
{
    for (int i = 0; i < 500 && ngot < want; i++) {
        wsb_kfmt_poll(f);
        if (ngot < want)
            usleep(10000);
    }
    assert_int_equal(ngot, want);
}

/* ---- Tests ------------------------------------------------------------------------------ */

static void test_decode_and_order_while_fetching(void **state)
{
    (void)state;
    struct wsb_kfmt *f = stage(NULL);
    enum wsb_format A = WSB_FORMAT_AVRO;
    wsb_kfmt_message(f, 5, A, A, "t", record(5, 0, 10, 1, 42)); /* id 1: fetched */
    pump(f, 1);
    assert_string_equal(got[0].payload, "{\"a\":42}");
    /* partition 0: a slow id, then a known one behind it; partition 1 goes on meanwhile */
    wsb_kfmt_message(f, 5, A, A, "t", record(5, 0, 11, 2, 0));
    wsb_kfmt_message(f, 5, A, A, "t", record(5, 0, 12, 1, 7));
    wsb_kfmt_message(f, 5, A, A, "t", record(5, 1, 3, 1, -1));
    assert_int_equal(ngot, 2);
    assert_int_equal(got[1].partition, 1);
    assert_string_equal(got[1].payload, "{\"a\":-1}");
    pump(f, 4);
    assert_int_equal(got[2].offset, 11);         /* the slow one decoded as its schema says... */
    assert_int_equal(got[3].offset, 12);         /* ...and the one behind it after it */
    assert_string_equal(got[2].payload, "\"\""); /* id 2 is "string": zigzag 0 = "" */
    assert_string_equal(got[3].payload, "{\"a\":7}");
    struct wsb_format_stats st;
    wsb_kfmt_stats(f, &st);
    assert_int_equal(st.registry_fetches, 2);
    assert_int_equal(st.decoded, 4);
    wsb_kfmt_free(f);
}

static void test_unknown_ids_and_formats(void **state)
{
    (void)state;
    struct wsb_kfmt *f = stage(NULL);
    wsb_kfmt_message(f, 1, WSB_FORMAT_AVRO, WSB_FORMAT_AUTO, "t", record(1, 0, 0, 99, 1));
    wsb_kfmt_message(f, 2, WSB_FORMAT_AUTO, WSB_FORMAT_AUTO, "t", record(2, 0, 0, 99, 1));
    pump(f, 2);
    /* two sources: no order between them */
    const struct rec *strict = got[0].source == 1 ? &got[0] : &got[1];
    const struct rec *autof = got[0].source == 1 ? &got[1] : &got[0];
    assert_int_equal(strict->source, 1);
    assert_true(strict->flags & WSB_MSG_SKIPPED); /* avro: a gap in the record's place */
    assert_int_equal(strict->offset, 0);
    assert_int_equal(autof->source, 2);
    assert_int_equal(autof->flags, 0); /* auto: passed through as it came */
    /* not framed: avro skips, auto and json pass, raw marks */
    wsb_kfmt_message(f, 1, WSB_FORMAT_AVRO, WSB_FORMAT_AUTO, "t", record(1, 0, 1, 0, 5));
    wsb_kfmt_message(f, 2, WSB_FORMAT_AUTO, WSB_FORMAT_AUTO, "t", record(2, 0, 1, 0, 5));
    wsb_kfmt_message(f, 3, WSB_FORMAT_JSON, WSB_FORMAT_JSON, "t", record(3, 0, 1, 1, 5));
    wsb_kfmt_message(f, 4, WSB_FORMAT_RAW, WSB_FORMAT_AUTO, "t", record(4, 0, 1, 0, 5));
    assert_int_equal(ngot, 6);
    assert_true(got[2].flags & WSB_MSG_SKIPPED);
    assert_string_equal(got[3].payload, "{\"plain\":5}");
    assert_int_equal(got[4].flags, 0);
    assert_int_equal(got[5].flags, WSB_MSG_DATA_RAW);
    assert_false(wsb_kfmt_needed(f, WSB_FORMAT_JSON, WSB_FORMAT_JSON));
    assert_true(wsb_kfmt_needed(f, WSB_FORMAT_AUTO, WSB_FORMAT_JSON));
    wsb_kfmt_free(f);
}

static void test_bound_fails_the_source(void **state)
{
    (void)state;
    struct wsb_kfmt *f = stage(NULL);
    json_t *conf = json_pack("{s:s, s:i}", "url", "http://127.0.0.1:1", "max_held_records", 3);
    const struct wsb_sink sink = {
        .message = sink_message, .source_failed = sink_failed, .publish_done = sink_publish_done};
    const struct wsb_kfmt_hooks hooks = {
        .produce = hook_produce, .drop = hook_drop, .wake = hook_wake};
    char err[256];
    struct wsb_kfmt *down = wsb_kfmt_new("k", conf, &sink, &hooks, err, sizeof(err));
    json_decref(conf);
    assert_non_null(down);
    assert_int_equal(wsb_kfmt_start(down), WSB_OK);
    for (int i = 0; i < 4; i++)
        wsb_kfmt_message(down, 9, WSB_FORMAT_AVRO, WSB_FORMAT_AUTO, "t", record(9, 0, i, 1, i));
    assert_int_equal(ngot, 0);
    assert_string_equal(failed_code, "unavailable");
    assert_int_equal(failed_source, 9);
    wsb_kfmt_message(down, 9, WSB_FORMAT_AVRO, WSB_FORMAT_AUTO, "t", record(9, 0, 4, 1, 4));
    wsb_kfmt_poll(down);
    assert_int_equal(dropped_source, 9);
    assert_int_equal(ngot, 0);
    char reason[512];
    for (int i = 0; i < 300 && wsb_kfmt_ready(down, reason, sizeof(reason)); i++)
        usleep(10000);
    assert_false(wsb_kfmt_ready(down, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "schema registry http://127.0.0.1:1"));
    wsb_kfmt_free(down);
    wsb_kfmt_free(f);
}

/* key_format avro: the key decoded to JSON (flagged), the value left as it came. */
static void test_key(void **state)
{
    (void)state;
    struct wsb_kfmt *f = stage(NULL);
    struct wsb_msg *v = record(3, 0, 0, 0, 1); /* {"plain":1} */
    struct wsb_msg *k = record(3, 0, 0, 1, 9); /* Avro {"a":9} */
    struct wsb_msg *m =
        wsb_msg_new(3, 0, 0, -1, k->payload, k->payload_len, v->payload, v->payload_len, NULL, 0);
    wsb_msg_unref(v);
    wsb_msg_unref(k);
    wsb_kfmt_message(f, 3, WSB_FORMAT_JSON, WSB_FORMAT_AVRO, "t", m);
    pump(f, 1);
    assert_int_equal(got[0].flags, WSB_MSG_KEY_JSON);
    assert_string_equal(got[0].key, "{\"a\":9}");
    assert_string_equal(got[0].payload, "{\"plain\":1}");
    wsb_kfmt_free(f);
}

static void publish(struct wsb_kfmt *f, const char *topic, const char *json)
{
    struct wsb_msg *m = wsb_msg_new(0, -1, -1, -1, NULL, 0, json, strlen(json), NULL, 0);
    json_t *pf = json_pack("{s:s}", "topic", topic);
    struct wsb_publish p = {.fields = pf,
                            .payload = m->payload,
                            .payload_len = m->payload_len,
                            .value_format = WSB_FORMAT_AVRO};
    int before = pubs_done + nproduced;
    assert_true(wsb_kfmt_publish(f, &p, m, 1));
    json_decref(pf);
    wsb_msg_unref(m);
    for (int i = 0; i < 500 && pubs_done + nproduced == before; i++) {
        wsb_kfmt_poll(f);
        usleep(10000);
    }
    assert_int_equal(pubs_done + nproduced, before + 1);
}

static void test_publish(void **state)
{
    (void)state;
    struct wsb_kfmt *f = stage(NULL);
    json_t *plain_fields = json_pack("{s:s}", "topic", "t");
    struct wsb_publish plain = {.fields = plain_fields, .value_format = WSB_FORMAT_JSON};
    assert_false(wsb_kfmt_publish(f, &plain, NULL, 1)); /* nothing to do */
    json_decref(plain_fields);
    publish(f, "t", "{\"a\":300}");
    assert_int_equal(nproduced, 1);
    uint32_t id = 0;
    assert_true(wsb_avro_wire_split(produced, produced_len, &id));
    assert_int_equal(id, 7);
    assert_int_equal(produced_len, 7); /* header + zigzag(300) = 0xd8 0x04 */
    assert_int_equal(produced[5], 0xd8);
    assert_int_equal(produced[6], 0x04);
    publish(f, "t", "{\"a\":\"x\"}");
    assert_false(pub_ok);
    assert_memory_equal(pub_msg, WSB_PUBLISH_INVALID_PREFIX, strlen(WSB_PUBLISH_INVALID_PREFIX));
    assert_non_null(strstr(pub_msg, "data.a"));
    publish(f, "nosubject", "{\"a\":1}");
    assert_false(pub_ok);
    assert_non_null(strstr(pub_msg, "nosubject-value"));
    wsb_kfmt_free(f);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_and_order_while_fetching),
        cmocka_unit_test(test_unknown_ids_and_formats),
        cmocka_unit_test(test_bound_fails_the_source),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_publish),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
