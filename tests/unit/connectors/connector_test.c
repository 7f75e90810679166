/* Tests for the connector registry and wsb_msg allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/connector.h"

static void test_msg_copies_everything(void **state)
{
    (void)state;
    char key[] = "key1";
    char payload[] = "{\"x\":1}";
    uint8_t bin[] = {0, 1, 2};
    char n1[] = "trace", n2[] = "empty";
    struct wsb_header h[] = {{.name = n1, .value = bin, .value_len = 3},
                             {.name = n2, .value = NULL, .value_len = 0}};
    struct wsb_msg *m =
        wsb_msg_new(42, 3, 1000, 1700000000000, key, 4, payload, strlen(payload), h, 2);
    assert_non_null(m);
    /* the inputs may go away: everything was copied */
    memset(key, 'z', sizeof(key));
    memset(payload, 'z', sizeof(payload));
    memset(bin, 9, sizeof(bin));
    memset(n1, 'z', sizeof(n1) - 1);

    assert_int_equal(m->source_id, 42);
    assert_int_equal(m->partition, 3);
    assert_int_equal(m->offset, 1000);
    assert_int_equal(m->timestamp_ms, 1700000000000);
    assert_int_equal(m->ack_token, 0);
    assert_int_equal(m->key_len, 4);
    assert_memory_equal(m->key, "key1", 4);
    assert_int_equal(m->payload_len, 7);
    assert_memory_equal(m->payload, "{\"x\":1}", 7);
    assert_int_equal(m->nheaders, 2);
    assert_string_equal(m->headers[0].name, "trace");
    assert_int_equal(m->headers[0].value_len, 3);
    assert_memory_equal(m->headers[0].value, "\0\1\2", 3);
    assert_string_equal(m->headers[1].name, "empty");
    assert_null(m->headers[1].value); /* a null header value stays null */
    assert_int_equal(m->headers[1].value_len, 0);

    assert_ptr_equal(wsb_msg_ref(m), m);
    assert_int_equal(atomic_load(&m->refs), 2);
    wsb_msg_unref(m);
    wsb_msg_unref(m);
    wsb_msg_unref(NULL);
}

static void test_msg_no_key_no_headers(void **state)
{
    (void)state;
    struct wsb_msg *m = wsb_msg_new(1, -1, -1, -1, NULL, 0, "", 0, NULL, 0);
    assert_non_null(m);
    assert_null(m->key);
    assert_int_equal(m->key_len, 0);
    assert_non_null(m->payload);
    assert_int_equal(m->payload_len, 0);
    assert_null(m->headers);
    wsb_msg_unref(m);

    /* an empty key is not an absent key */
    m = wsb_msg_new(1, -1, -1, -1, "", 0, "p", 1, NULL, 0);
    assert_non_null(m->key);
    assert_int_equal(m->key_len, 0);
    wsb_msg_unref(m);
}

/* A shared message keeps the bytes of the one it shares alive after that one's last holder
 * lets go (ASan builds catch a use after free). */
static void test_msg_share(void **state)
{
    (void)state;
    struct wsb_header h = {.name = "h", .value = (const uint8_t *)"v", .value_len = 1};
    struct wsb_msg *m = wsb_msg_new(0, 2, 7, 1000, "k", 1, "payload", 7, &h, 1);
    assert_non_null(m);
    m->flags = WSB_MSG_DATA_RAW;
    struct wsb_msg *v = wsb_msg_share(m, 42);
    assert_non_null(v);
    wsb_msg_unref(m);
    assert_int_equal(v->source_id, 42);
    assert_int_equal(v->partition, 2);
    assert_int_equal(v->offset, 7);
    assert_int_equal(v->timestamp_ms, 1000);
    assert_int_equal(v->flags, WSB_MSG_DATA_RAW);
    assert_int_equal(v->ack_token, 0);
    assert_memory_equal(v->payload, "payload", 7);
    assert_memory_equal(v->key, "k", 1);
    assert_int_equal(v->nheaders, 1);
    assert_string_equal(v->headers[0].name, "h");
    assert_memory_equal(v->headers[0].value, "v", 1);
    struct wsb_msg *r = wsb_msg_ref(v);
    wsb_msg_unref(v);
    assert_memory_equal(r->payload, "payload", 7);
    wsb_msg_unref(r);
}

static void test_msg_overflow(void **state)
{
    (void)state;
    assert_null(wsb_msg_new(1, -1, -1, -1, NULL, 0, "p", SIZE_MAX - 8, NULL, 0));
    assert_null(
        wsb_msg_new(1, -1, -1, -1, NULL, 0, "p", 1, (const struct wsb_header *)"x", SIZE_MAX / 4));
}

static void test_registry(void **state)
{
    (void)state;
    const struct wsb_connector_ops *k = wsb_connector_find("kafka");
    assert_non_null(k);
    assert_string_equal(k->type, "kafka");
    assert_non_null(wsb_connector_find("memory"));
    assert_null(wsb_connector_find("kafak"));
    assert_null(wsb_connector_find(""));
    assert_null(wsb_connector_find(NULL));

    struct wsb_connector *c = (void *)1;
    char err[128];
    struct wsb_sink sink = {0};
    assert_int_equal(wsb_connector_new("nope", "x", NULL, &sink, &c, err, sizeof(err)),
                     WSB_ERR_NOT_FOUND);
    assert_null(c);
    assert_non_null(strstr(err, "nope"));
}

static void noop_state(void *ctx, const char *connector, bool up, const char *reason)
{
    (void)ctx;
    (void)connector;
    (void)up;
    (void)reason;
}

/* What the core asks of a connector type instead of knowing its broker. */
static void test_caps_and_channel_keys(void **state)
{
    (void)state;
    const struct wsb_connector_ops *k = wsb_connector_find("kafka"),
                                   *a = wsb_connector_find("amqp"),
                                   *m = wsb_connector_find("memory");
    assert_non_null(k);
    assert_non_null(a);
    assert_non_null(m);
    assert_true(k->caps & WSB_CAP_FROM_POSITION);
    assert_false(a->caps & WSB_CAP_FROM_POSITION); /* AMQP starts from latest only */
    assert_true(a->caps & WSB_CAP_ACK);
    assert_true(m->caps & WSB_CAP_PUBLISH);
    assert_true(wsb_connector_any_channel_key("topic"));
    assert_true(wsb_connector_any_channel_key("queue"));
    assert_false(wsb_connector_any_channel_key("match")); /* the core's */
    assert_false(wsb_connector_any_channel_key("nope"));

    /* check_route of the topic connectors: internal topics are never reached. */
    assert_ptr_equal(k->check_route, wsb_connector_check_topic_route);
    json_t *f = json_pack("{s:s}", "topic", "orders");
    assert_null(wsb_connector_check_topic_route(f));
    json_object_set_new(f, "dead_letter_topic", json_string("__x"));
    assert_non_null(wsb_connector_check_topic_route(f));
    json_object_set_new(f, "dead_letter_topic", json_string("x"));
    json_object_set_new(f, "topic", json_string("__consumer_offsets"));
    assert_non_null(wsb_connector_check_topic_route(f));
    assert_string_equal(wsb_connector_field(f, "topic"), "__consumer_offsets");
    assert_string_equal(wsb_connector_field(f, "group"), "");
    assert_string_equal(wsb_connector_field(NULL, "group"), "");
    json_decref(f);
    assert_null(wsb_connector_check_topic_route(NULL));
}

static void test_new_free(void **state)
{
    (void)state;
    struct wsb_sink sink = {.state = noop_state};
    struct wsb_connector *c = NULL;
    char err[128];
    json_t *conf = json_pack("{s:s}", "type", "memory");
    assert_int_equal(wsb_connector_new("memory", "m1", conf, &sink, &c, err, sizeof(err)), WSB_OK);
    assert_string_equal(c->name, "m1");
    assert_ptr_equal(c->ops, wsb_connector_find("memory"));
    assert_int_equal(wsb_connector_start(c), WSB_OK);
    wsb_connector_stop(c, 100);
    wsb_connector_free(c);
    wsb_connector_free(NULL);
    json_decref(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_copies_everything),
        cmocka_unit_test(test_msg_no_key_no_headers),
        cmocka_unit_test(test_msg_share),
        cmocka_unit_test(test_msg_overflow),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_caps_and_channel_keys),
        cmocka_unit_test(test_new_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
