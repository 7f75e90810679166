/* Tests for the connectors' shared command queue: deep copies, order, the wake fd, stop and
 * sync. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/cmdq.h"

static bool readable(struct wsb_cmdq *q)
{
    struct pollfd p = {.fd = wsb_cmdq_fd(q), .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void free_list(struct wsb_cmd *c)
{
    while (c) {
        struct wsb_cmd *n = c->next;
        wsb_cmd_free(c);
        c = n;
    }
}

static void test_subscribe_deep_copy(void **state)
{
    (void)state;
    struct wsb_cmdq *q = wsb_cmdq_new();
    assert_non_null(q);
    assert_false(readable(q));
    assert_null(wsb_cmdq_take(q));

    json_t *f = json_pack("{s:s, s:s, s:s}", "topic", "orders", "binding_key", "",
                          "dead_letter_topic", "orders.dlq");
    struct wsb_partition_offset offs[2] = {{0, 12}, {3, 40}};
    struct wsb_source src = {.fields = f,
                             .ack = true,
                             .max_unacked = 7,
                             .from = WSB_FROM_OFFSETS,
                             .from_timestamp_ms = 99,
                             .from_offsets = offs,
                             .nfrom_offsets = 2};
    assert_int_equal(wsb_cmdq_subscribe(q, 42, &src), WSB_OK);
    assert_true(readable(q));
    /* The caller's object and offsets are its own again. */
    json_object_set_new(f, "topic", json_string("changed"));
    json_decref(f);
    offs[0].offset = -5;

    struct wsb_cmd *c = wsb_cmdq_take(q);
    assert_false(readable(q));
    assert_non_null(c);
    assert_null(c->next);
    assert_int_equal(c->kind, WSB_CMD_SUBSCRIBE);
    assert_int_equal(c->id, 42);
    assert_string_equal(wsb_connector_field(c->src.fields, "topic"), "orders");
    assert_string_equal(wsb_connector_field(c->src.fields, "exchange"), "");
    assert_string_equal(wsb_connector_field(c->src.fields, "binding_key"), "");
    assert_string_equal(wsb_connector_field(c->src.fields, "dead_letter_topic"), "orders.dlq");
    assert_true(c->src.ack);
    assert_int_equal(c->src.max_unacked, 7);
    assert_int_equal(c->src.from, WSB_FROM_OFFSETS);
    assert_int_equal(c->src.from_timestamp_ms, 99);
    assert_int_equal(c->src.nfrom_offsets, 2);
    assert_ptr_not_equal(c->src.from_offsets, offs);
    assert_int_equal(c->src.from_offsets[0].partition, 0);
    assert_int_equal(c->src.from_offsets[0].offset, 12);
    assert_int_equal(c->src.from_offsets[1].partition, 3);
    assert_int_equal(c->src.from_offsets[1].offset, 40);
    wsb_cmd_free(c);

    /* No offsets: NULL, none. No broker object: every member reads "". */
    struct wsb_source latest = {.from = WSB_FROM_LATEST};
    assert_int_equal(wsb_cmdq_subscribe(q, 1, &latest), WSB_OK);
    c = wsb_cmdq_take(q);
    assert_null(c->src.from_offsets);
    assert_int_equal(c->src.nfrom_offsets, 0);
    assert_null(c->src.fields);
    assert_string_equal(wsb_connector_field(c->src.fields, "topic"), "");
    wsb_cmd_free(c);
    wsb_cmdq_free(q);
}

/* The core hands over a broker object: the command keeps a deep copy, which the connector
 * reads its members from. */
static void test_broker_object(void **state)
{
    (void)state;
    struct wsb_cmdq *q = wsb_cmdq_new();
    json_t *f = json_pack("{s:s, s:s, s:i}", "topic", "orders", "group", "g1", "other", 5);
    struct wsb_source src = {.fields = f, .from = WSB_FROM_LATEST};
    assert_int_equal(wsb_cmdq_subscribe(q, 9, &src), WSB_OK);
    struct wsb_publish p = {.fields = f, .payload_len = 0};
    assert_int_equal(wsb_cmdq_publish(q, &p, 10), WSB_OK);
    json_object_set_new(f, "topic", json_string("changed"));
    json_decref(f);

    struct wsb_cmd *c = wsb_cmdq_take(q);
    assert_int_equal(c->kind, WSB_CMD_SUBSCRIBE);
    assert_string_equal(wsb_connector_field(c->src.fields, "topic"), "orders");
    assert_string_equal(wsb_connector_field(c->src.fields, "group"), "g1");
    assert_string_equal(wsb_connector_field(c->src.fields, "exchange"), "");
    assert_non_null(c->src.fields);
    assert_ptr_equal(c->src.fields, c->fields);
    assert_int_equal(json_integer_value(json_object_get(c->src.fields, "other")), 5);
    struct wsb_cmd *pc = c->next;
    wsb_cmd_free(c);
    assert_int_equal(pc->kind, WSB_CMD_PUBLISH);
    assert_string_equal(wsb_connector_field(pc->pub.fields, "topic"), "orders");
    assert_string_equal(wsb_connector_field(pc->pub.fields, "exchange"), "");
    assert_string_equal(wsb_connector_field(pc->pub.fields, "group"), "g1");
    assert_null(json_object_get(pc->pub.fields, "routing_key"));
    wsb_cmd_free(pc);
    wsb_cmdq_free(q);
}

static void test_publish_deep_copy(void **state)
{
    (void)state;
    struct wsb_cmdq *q = wsb_cmdq_new();
    char payload[] = "hello", key[] = "k1", hval[] = "v";
    struct wsb_header h = {.name = "h", .value = (const uint8_t *)hval, .value_len = 1};
    json_t *f = json_pack("{s:s, s:s}", "exchange", "ex", "routing_key", "a.b");
    struct wsb_publish p = {.fields = f,
                            .key = (const uint8_t *)key,
                            .key_len = 2,
                            .payload = (const uint8_t *)payload,
                            .payload_len = 5,
                            .headers = &h,
                            .nheaders = 1};
    assert_int_equal(wsb_cmdq_publish(q, &p, 777), WSB_OK);
    memset(payload, 0, sizeof(payload));
    memset(key, 0, sizeof(key));
    hval[0] = 'w';
    json_decref(f);

    struct wsb_cmd *c = wsb_cmdq_take(q);
    assert_int_equal(c->kind, WSB_CMD_PUBLISH);
    assert_int_equal(c->id, 777);
    assert_string_equal(wsb_connector_field(c->pub.fields, "topic"), "");
    assert_string_equal(wsb_connector_field(c->pub.fields, "exchange"), "ex");
    assert_string_equal(wsb_connector_field(c->pub.fields, "routing_key"), "a.b");
    assert_int_equal(c->pub.payload_len, 5);
    assert_memory_equal(c->pub.payload, "hello", 5);
    assert_int_equal(c->pub.key_len, 2);
    assert_memory_equal(c->pub.key, "k1", 2);
    assert_int_equal(c->pub.nheaders, 1);
    assert_string_equal(c->pub.headers[0].name, "h");
    assert_memory_equal(c->pub.headers[0].value, "v", 1);
    assert_non_null(c->msg);
    assert_ptr_equal(c->pub.payload, c->msg->payload);
    /* A connector may keep the message after the command is gone. */
    struct wsb_msg *kept = c->msg;
    c->msg = NULL;
    wsb_cmd_free(c);
    assert_memory_equal(kept->payload, "hello", 5);
    wsb_msg_unref(kept);
    wsb_cmdq_free(q);
}

static void test_order_and_kinds(void **state)
{
    (void)state;
    struct wsb_cmdq *q = wsb_cmdq_new();
    struct wsb_source src = {.from = WSB_FROM_LATEST};
    struct wsb_publish p = {.payload = (const uint8_t *)"x", .payload_len = 1};
    assert_int_equal(wsb_cmdq_subscribe(q, 1, &src), WSB_OK);
    assert_int_equal(wsb_cmdq_publish(q, &p, 2), WSB_OK);
    assert_int_equal(wsb_cmdq_ack(q, 1, 9, WSB_NACK_REQUEUE), WSB_OK);
    assert_int_equal(wsb_cmdq_unsubscribe(q, 1), WSB_OK);
    assert_true(wsb_cmdq_wait(q, 0));

    struct wsb_cmd *list = wsb_cmdq_take(q), *c = list;
    assert_int_equal(c->kind, WSB_CMD_SUBSCRIBE);
    c = c->next;
    assert_int_equal(c->kind, WSB_CMD_PUBLISH);
    assert_int_equal(c->id, 2);
    c = c->next;
    assert_int_equal(c->kind, WSB_CMD_ACK);
    assert_int_equal(c->id, 1);
    assert_int_equal(c->ack_token, 9);
    assert_int_equal(c->ack_kind, WSB_NACK_REQUEUE);
    c = c->next;
    assert_int_equal(c->kind, WSB_CMD_UNSUBSCRIBE);
    assert_null(c->next);
    free_list(list);
    assert_false(wsb_cmdq_wait(q, 0));

    /* A wake without a command is readable once and takes nothing. */
    wsb_cmdq_wake(q);
    assert_true(wsb_cmdq_wait(q, 0));
    assert_null(wsb_cmdq_take(q));
    assert_false(wsb_cmdq_wait(q, 0));
    wsb_cmdq_free(q);
}

static void test_stop(void **state)
{
    (void)state;
    struct wsb_cmdq *q = wsb_cmdq_new();
    struct wsb_source src = {.from = WSB_FROM_LATEST};
    struct wsb_publish p = {.payload_len = 0};
    assert_int_equal(wsb_cmdq_subscribe(q, 1, &src), WSB_OK);
    assert_false(wsb_cmdq_stopping(q));
    wsb_cmdq_stop(q, 1234);
    wsb_cmdq_stop(q, 1); /* only the first counts */
    assert_true(wsb_cmdq_stopping(q));
    assert_int_equal(wsb_cmdq_subscribe(q, 2, &src), WSB_ERR_UNAVAILABLE);
    assert_int_equal(wsb_cmdq_publish(q, &p, 3), WSB_ERR_UNAVAILABLE);
    assert_int_equal(wsb_cmdq_unsubscribe(q, 1), WSB_ERR_UNAVAILABLE);
    assert_int_equal(wsb_cmdq_ack(q, 1, 1, WSB_ACK), WSB_ERR_UNAVAILABLE);
    wsb_cmdq_sync(q); /* returns at once */

    struct wsb_cmd *list = wsb_cmdq_take(q);
    assert_int_equal(list->kind, WSB_CMD_SUBSCRIBE);
    assert_int_equal(list->next->kind, WSB_CMD_STOP);
    assert_int_equal(list->next->timeout_ms, 1234);
    assert_null(list->next->next);
    free_list(list);

    /* Commands left in a stopped queue are freed with it (leak-checked under ASan). */
    struct wsb_cmdq *q2 = wsb_cmdq_new();
    assert_int_equal(wsb_cmdq_subscribe(q2, 1, &src), WSB_OK);
    assert_int_equal(wsb_cmdq_publish(q2, &p, 3), WSB_OK);
    wsb_cmdq_stop(q2, 0);
    wsb_cmdq_free(q2);
    wsb_cmdq_free(q);
}

/* A connector-like thread: handles commands in order until STOP, counting subscribes. */
struct worker {
    struct wsb_cmdq *q;
    int subscribes;
    uint32_t stop_timeout;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        wsb_cmdq_wait(w->q, -1);
        for (struct wsb_cmd *list = wsb_cmdq_take(w->q), *c; list; wsb_cmd_free(c)) {
            c = list;
            list = c->next;
            if (c->kind == WSB_CMD_SUBSCRIBE)
                w->subscribes++;
            if (c->kind == WSB_CMD_STOP) {
                w->stop_timeout = c->timeout_ms;
                wsb_cmd_free(c);
                free_list(list);
                return NULL;
            }
        }
    }
}

static void test_sync_and_shutdown(void **state)
{
    (void)state;
    struct worker w = {.q = wsb_cmdq_new()};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, work, &w), 0);
    struct wsb_source src = {.from = WSB_FROM_LATEST};
    for (int round = 1; round <= 50; round++) {
        for (int i = 0; i < 20; i++)
            assert_int_equal(wsb_cmdq_subscribe(w.q, (uint64_t)i, &src), WSB_OK);
        wsb_cmdq_sync(w.q);
        /* Every command before the sync was handled: the count is exact, not racy. */
        assert_int_equal(w.subscribes, round * 20);
    }
    wsb_cmdq_stop(w.q, 500);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.stop_timeout, 500);
    wsb_cmdq_free(w.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscribe_deep_copy),
        cmocka_unit_test(test_publish_deep_copy),
        cmocka_unit_test(test_broker_object),
        cmocka_unit_test(test_order_and_kinds),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_sync_and_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
