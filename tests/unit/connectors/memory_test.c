/* Tests for the memory connector, driven through its vtable with a recording sink. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/memory.h"

#define MAX_EVENTS 256

enum ev_kind { EV_MESSAGE, EV_STARTED, EV_FAILED, EV_PUBLISHED, EV_STATE };

struct event {
    enum ev_kind kind;
    uint64_t id; /* source id or cookie */
    struct wsb_msg *msg;
    char text[128]; /* positions, code, connector name */
    bool ok;
};

struct rec {
    pthread_mutex_t lock;
    struct event ev[MAX_EVENTS];
    size_t n;
};

static struct event *push(struct rec *r, enum ev_kind kind, uint64_t id)
{
    pthread_mutex_lock(&r->lock);
    assert_true(r->n < MAX_EVENTS);
    struct event *e = &r->ev[r->n++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->id = id;
    pthread_mutex_unlock(&r->lock);
    return e;
}

static void on_message(void *ctx, struct wsb_msg *m)
{
    push(ctx, EV_MESSAGE, m->source_id)->msg = m;
}

static void on_started(void *ctx, uint64_t id, const char *positions)
{
    snprintf(push(ctx, EV_STARTED, id)->text, 128, "%s", positions ? positions : "null");
}

static void on_failed(void *ctx, uint64_t id, const char *code, const char *message)
{
    snprintf(push(ctx, EV_FAILED, id)->text, 128, "%s", code);
    (void)message;
}

static void on_published(void *ctx, uint64_t cookie, bool ok, const char *message)
{
    push(ctx, EV_PUBLISHED, cookie)->ok = ok;
    (void)message;
}

static void on_state(void *ctx, const char *connector, bool up, const char *reason)
{
    struct event *e = push(ctx, EV_STATE, 0);
    e->ok = up;
    snprintf(e->text, 128, "%s", connector);
    (void)reason;
}

struct fixture {
    struct rec rec;
    struct wsb_sink sink;
    struct wsb_connector *c;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->rec.lock, NULL);
    f->sink = (struct wsb_sink){.ctx = &f->rec,
                                .message = on_message,
                                .source_started = on_started,
                                .source_failed = on_failed,
                                .publish_done = on_published,
                                .state = on_state};
    json_t *conf = json_pack("{s:s, s:i}", "type", "memory", "retain", 5);
    char err[128];
    assert_int_equal(wsb_connector_new("memory", "mem", conf, &f->sink, &f->c, err, sizeof(err)),
                     WSB_OK);
    json_decref(conf);
    assert_int_equal(wsb_connector_start(f->c), WSB_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    wsb_connector_stop(f->c, 1000);
    wsb_connector_free(f->c);
    for (size_t i = 0; i < f->rec.n; i++)
        wsb_msg_unref(f->rec.ev[i].msg);
    pthread_mutex_destroy(&f->rec.lock);
    free(f);
    return 0;
}

static void sync_c(struct fixture *f)
{
    wsb_memory_sync(f->c->impl);
}

/* Events of `kind` (and source/cookie `id` unless 0) in order. */
static size_t collect(struct fixture *f, enum ev_kind kind, uint64_t id, struct event **out,
                      size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < f->rec.n && n < max; i++)
        if (f->rec.ev[i].kind == kind && (id == 0 || f->rec.ev[i].id == id))
            out[n++] = &f->rec.ev[i];
    return n;
}

static void pub(struct fixture *f, const char *topic, const char *payload, uint64_t cookie)
{
    struct wsb_header h = {.name = "h1", .value = (const uint8_t *)"v1", .value_len = 2};
    json_t *pf = json_pack("{s:s}", "topic", topic);
    struct wsb_publish p = {.fields = pf,
                            .key = (const uint8_t *)"k",
                            .key_len = 1,
                            .payload = (const uint8_t *)payload,
                            .payload_len = strlen(payload),
                            .headers = &h,
                            .nheaders = 1};
    assert_int_equal(wsb_connector_publish(f->c, &p, cookie), WSB_OK);
    json_decref(pf);
}

static void sub(struct fixture *f, uint64_t id, const char *topic, enum wsb_from_kind from,
                int64_t offset)
{
    struct wsb_partition_offset po = {.partition = 0, .offset = offset};
    json_t *sf = json_pack("{s:s}", "topic", topic);
    struct wsb_source s = {.fields = sf,
                           .from = from,
                           .from_offsets = from == WSB_FROM_OFFSETS ? &po : NULL,
                           .nfrom_offsets = from == WSB_FROM_OFFSETS ? 1 : 0};
    assert_int_equal(wsb_connector_subscribe(f->c, id, &s), WSB_OK);
    json_decref(sf);
}

static void test_state_up_and_ready(void **state)
{
    struct fixture *f = *state;
    sync_c(f);
    struct event *e[4];
    assert_int_equal(collect(f, EV_STATE, 0, e, 4), 1);
    assert_true(e[0]->ok);
    assert_string_equal(e[0]->text, "mem");
    char reason[32];
    assert_true(wsb_connector_ready(f->c, reason, sizeof(reason)));
}

static void test_subscribe_publish(void **state)
{
    struct fixture *f = *state;
    sub(f, 7, "t1", WSB_FROM_LATEST, 0);
    sub(f, 8, "t1", WSB_FROM_LATEST, 0);
    sub(f, 9, "other", WSB_FROM_LATEST, 0);
    pub(f, "t1", "{\"a\":1}", 100);
    pub(f, "t1", "two", 101);
    sync_c(f);

    struct event *e[16];
    assert_int_equal(collect(f, EV_STARTED, 7, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":0}");
    assert_int_equal(collect(f, EV_PUBLISHED, 0, e, 16), 2);
    assert_true(e[0]->ok && e[0]->id == 100 && e[1]->ok && e[1]->id == 101);

    assert_int_equal(collect(f, EV_MESSAGE, 7, e, 16), 2);
    assert_int_equal(e[0]->msg->offset, 0);
    assert_int_equal(e[1]->msg->offset, 1);
    assert_int_equal(e[0]->msg->partition, 0);
    assert_memory_equal(e[0]->msg->payload, "{\"a\":1}", 7);
    assert_int_equal(e[0]->msg->key_len, 1);
    assert_int_equal(e[0]->msg->nheaders, 1);
    assert_string_equal(e[0]->msg->headers[0].name, "h1");
    assert_true(e[0]->msg->timestamp_ms > 0);
    assert_int_equal(collect(f, EV_MESSAGE, 8, e, 16), 2);
    assert_int_equal(collect(f, EV_MESSAGE, 9, e, 16), 0);
    assert_int_equal(wsb_connector_messages_in(f->c), 4);

    /* Started positions of a later latest source: the next offset. */
    sub(f, 10, "t1", WSB_FROM_LATEST, 0);
    sync_c(f);
    assert_int_equal(collect(f, EV_STARTED, 10, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":2}");
    assert_int_equal(collect(f, EV_MESSAGE, 10, e, 16), 0);
}

static void test_replay(void **state)
{
    struct fixture *f = *state;
    char p[8];
    for (int i = 0; i < 8; i++) { /* retain 5: offsets 3..7 kept */
        snprintf(p, sizeof(p), "m%d", i);
        pub(f, "r", p, (uint64_t)i + 1);
    }
    sub(f, 1, "r", WSB_FROM_OFFSETS, 5);
    sub(f, 2, "r", WSB_FROM_EARLIEST, 0);
    sub(f, 3, "r", WSB_FROM_OFFSETS, 0);   /* clamped up to 3 */
    sub(f, 4, "r", WSB_FROM_OFFSETS, 100); /* clamped down to 8 */
    sync_c(f);
    struct event *e[16];
    assert_int_equal(collect(f, EV_STARTED, 1, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":5}");
    assert_int_equal(collect(f, EV_MESSAGE, 1, e, 16), 3);
    assert_int_equal(e[0]->msg->offset, 5);
    assert_memory_equal(e[0]->msg->payload, "m5", 2);
    assert_int_equal(e[2]->msg->offset, 7);

    assert_int_equal(collect(f, EV_STARTED, 2, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":3}");
    assert_int_equal(collect(f, EV_MESSAGE, 2, e, 16), 5);
    assert_int_equal(collect(f, EV_STARTED, 3, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":3}");
    assert_int_equal(collect(f, EV_STARTED, 4, e, 16), 1);
    assert_string_equal(e[0]->text, "{\"0\":8}");
    assert_int_equal(collect(f, EV_MESSAGE, 4, e, 16), 0);

    /* started comes before the replayed messages of its source */
    size_t started_at = 0, first_msg_at = 0;
    for (size_t i = 0; i < f->rec.n; i++) {
        if (f->rec.ev[i].id != 1)
            continue;
        if (f->rec.ev[i].kind == EV_STARTED)
            started_at = i;
        if (f->rec.ev[i].kind == EV_MESSAGE && !first_msg_at)
            first_msg_at = i;
    }
    assert_true(started_at < first_msg_at);

    /* live messages continue after the replay */
    pub(f, "r", "m8", 50);
    sync_c(f);
    assert_int_equal(collect(f, EV_MESSAGE, 1, e, 16), 4);
    assert_int_equal(e[3]->msg->offset, 8);
}

static void test_unsubscribe(void **state)
{
    struct fixture *f = *state;
    sub(f, 1, "u", WSB_FROM_LATEST, 0);
    pub(f, "u", "a", 1);
    wsb_connector_unsubscribe(f->c, 1);
    pub(f, "u", "b", 2);
    wsb_connector_unsubscribe(f->c, 99); /* unknown: ignored */
    sync_c(f);
    struct event *e[16];
    assert_int_equal(collect(f, EV_MESSAGE, 1, e, 16), 1);
    assert_int_equal(collect(f, EV_PUBLISHED, 0, e, 16), 2);
}

static void test_ack_round_robin_and_requeue(void **state)
{
    struct fixture *f = *state;
    json_t *sf = json_pack("{s:s}", "topic", "jobs");
    struct wsb_source s = {.fields = sf, .ack = true, .max_unacked = 1};
    assert_int_equal(wsb_connector_subscribe(f->c, 1, &s), WSB_OK);
    assert_int_equal(wsb_connector_subscribe(f->c, 2, &s), WSB_OK);
    json_decref(sf);
    pub(f, "jobs", "j0", 1);
    pub(f, "jobs", "j1", 2);
    pub(f, "jobs", "j2", 3);
    sync_c(f);
    struct event *e1[16], *e2[16];
    assert_int_equal(collect(f, EV_STARTED, 1, e1, 16), 1);
    assert_string_equal(e1[0]->text, "null");
    assert_int_equal(collect(f, EV_MESSAGE, 1, e1, 16), 1);
    assert_int_equal(collect(f, EV_MESSAGE, 2, e2, 16), 1);
    assert_true(e1[0]->msg->ack_token != 0);
    assert_true(e1[0]->msg->ack_token != e2[0]->msg->ack_token);
    /* one each: j0 and j1, in some order; j2 waits (max_unacked 1) */
    assert_true(e1[0]->msg->offset + e2[0]->msg->offset == 1);

    /* source 1 acks: it gets j2 */
    wsb_connector_ack(f->c, 1, e1[0]->msg->ack_token, WSB_ACK);
    sync_c(f);
    assert_int_equal(collect(f, EV_MESSAGE, 1, e1, 16), 2);
    assert_int_equal(e1[1]->msg->offset, 2);

    /* source 2 leaves with its message unacked; source 1 gets it after acking j2 */
    int64_t left = e2[0]->msg->offset;
    wsb_connector_unsubscribe(f->c, 2);
    wsb_connector_ack(f->c, 1, e1[1]->msg->ack_token, WSB_ACK);
    sync_c(f);
    assert_int_equal(collect(f, EV_MESSAGE, 1, e1, 16), 3);
    assert_int_equal(e1[2]->msg->offset, left);

    /* nack with requeue: delivered again with a fresh token */
    wsb_connector_ack(f->c, 1, e1[2]->msg->ack_token, WSB_NACK_REQUEUE);
    sync_c(f);
    assert_int_equal(collect(f, EV_MESSAGE, 1, e1, 16), 4);
    assert_int_equal(e1[3]->msg->offset, left);
    assert_true(e1[3]->msg->ack_token != e1[2]->msg->ack_token);
}

static void test_nack_dead_letter(void **state)
{
    struct fixture *f = *state;
    json_t *sf = json_pack("{s:s, s:s}", "topic", "w", "dead_letter_topic", "w.dlq");
    struct wsb_source s = {.fields = sf, .ack = true};
    assert_int_equal(wsb_connector_subscribe(f->c, 1, &s), WSB_OK);
    json_decref(sf);
    sub(f, 2, "w.dlq", WSB_FROM_LATEST, 0);
    pub(f, "w", "bad", 1);
    sync_c(f);
    struct event *e[16];
    assert_int_equal(collect(f, EV_MESSAGE, 1, e, 16), 1);
    wsb_connector_ack(f->c, 1, e[0]->msg->ack_token, WSB_NACK_DROP);
    sync_c(f);
    assert_int_equal(collect(f, EV_MESSAGE, 2, e, 16), 1);
    assert_memory_equal(e[0]->msg->payload, "bad", 3);
    assert_int_equal(collect(f, EV_MESSAGE, 1, e, 16), 1);
}

struct problems {
    int n;
    char last[128];
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
    const struct wsb_connector_ops *ops = wsb_connector_find("memory");
    assert_non_null(ops);
    struct problems p = {0};
    json_t *ok = json_pack("{s:s, s:i}", "type", "memory", "retain", 10);
    assert_int_equal(ops->check_config(ok, report, &p), 0);
    json_t *bad = json_pack("{s:s, s:s, s:b}", "type", "memory", "retain", "x", "typo", 1);
    assert_int_equal(ops->check_config(bad, report, &p), 2);
    json_t *ch = json_pack("{s:s}", "match", "a");
    p.n = 0;
    assert_int_equal(ops->check_channel(ch, report, &p), 1);
    assert_string_equal(p.last, ".topic: required for a memory channel");
    json_t *ch2 = json_pack("{s:s, s:s}", "topic", "a", "queue", "q");
    assert_int_equal(ops->check_channel(ch2, report, &p), 1);
    json_decref(ok);
    json_decref(bad);
    json_decref(ch);
    json_decref(ch2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_up_and_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_round_robin_and_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nack_dead_letter, setup, teardown),
        cmocka_unit_test(test_check_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
