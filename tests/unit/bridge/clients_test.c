/* Unit tests for bridge/clients.c: the /clients request merging the loops' answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "bridge/clients.h"

static struct wsb_client_info info(const char *session, uint64_t bytes, int64_t lag_ms,
                                   int64_t age_us, const char *sub, const char *channel)
{
    struct wsb_client_info ci;
    memset(&ci, 0, sizeof(ci));
    snprintf(ci.session, sizeof(ci.session), "%s", session);
    snprintf(ci.peer, sizeof(ci.peer), "127.0.0.1:4000");
    ci.buffered_bytes = bytes;
    ci.lag_ms = lag_ms;
    ci.age_us = age_us;
    ci.age_ms = age_us / 1000;
    ci.sub = sub ? strdup(sub) : NULL;
    if (channel) {
        ci.channels = calloc(1, sizeof(char *));
        ci.channels[0] = strdup(channel);
        ci.nchannels = 1;
    }
    return ci;
}

static json_t *render(struct wsb_clients_req *r)
{
    size_t len = 0;
    char *text = wsb_clients_req_render(r, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(doc);
    return doc;
}

static const char *nth_session(json_t *doc, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(doc, "clients"), i), "session"));
}

static void test_sort_parse(void **state)
{
    (void)state;
    enum wsb_clients_sort s;
    assert_true(wsb_clients_sort_parse("send_buffer", &s));
    assert_int_equal(s, WSB_CLIENTS_SEND_BUFFER);
    assert_true(wsb_clients_sort_parse("lag", &s));
    assert_int_equal(s, WSB_CLIENTS_LAG);
    assert_true(wsb_clients_sort_parse("age", &s));
    assert_int_equal(s, WSB_CLIENTS_AGE);
    assert_false(wsb_clients_sort_parse("", &s));
    assert_false(wsb_clients_sort_parse("Lag", &s));
    assert_false(wsb_clients_sort_parse("send_buffer ", &s));
}

static void test_merge_two_loops_top_n(void **state)
{
    (void)state;
    struct wsb_clients_req *r = wsb_clients_req_new(2, 3, WSB_CLIENTS_SEND_BUFFER);
    assert_non_null(r);
    struct wsb_client_info a[2] = {info("a", 10, 0, 5, "u1", "x.y"),
                                   info("b", 500, 0, 4, NULL, NULL)};
    struct wsb_client_info b[3] = {info("c", 300, 0, 3, NULL, NULL), info("d", 1, 0, 2, NULL, NULL),
                                   info("e", 900, 0, 1, "u2", "p.q")};
    assert_false(wsb_clients_req_wait(r, 0));
    wsb_clients_req_answer(r, a, 2, 7);
    assert_false(wsb_clients_req_wait(r, 10)); /* one loop still missing */
    wsb_clients_req_answer(r, b, 3, 5);
    assert_true(wsb_clients_req_wait(r, 0));
    json_t *doc = render(r);
    assert_string_equal(json_string_value(json_object_get(doc, "sort")), "send_buffer");
    assert_int_equal(json_integer_value(json_object_get(doc, "total")), 12);
    assert_true(json_is_true(json_object_get(doc, "complete")));
    assert_int_equal(json_array_size(json_object_get(doc, "clients")), 3);
    assert_string_equal(nth_session(doc, 0), "e");
    assert_string_equal(nth_session(doc, 1), "b");
    assert_string_equal(nth_session(doc, 2), "c");
    json_t *e = json_array_get(json_object_get(doc, "clients"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "sub")), "u2");
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "subscriptions"), 0)),
                        "p.q");
    assert_true(
        json_is_null(json_object_get(json_array_get(json_object_get(doc, "clients"), 1), "sub")));
    assert_null(json_object_get(e, "age_us")); /* ordering only, not part of the answer */
    json_decref(doc);
    wsb_clients_req_unref(r);
}

static void test_age_and_lag_order(void **state)
{
    (void)state;
    struct wsb_clients_req *r = wsb_clients_req_new(1, 10, WSB_CLIENTS_AGE);
    /* Same millisecond, different microseconds: still ordered oldest first. */
    struct wsb_client_info a[3] = {info("young", 0, 9, 1500, NULL, NULL),
                                   info("old", 0, 1, 1999, NULL, NULL),
                                   info("mid", 0, 5, 1700, NULL, NULL)};
    wsb_clients_req_answer(r, a, 3, 3);
    json_t *doc = render(r);
    assert_string_equal(nth_session(doc, 0), "old");
    assert_string_equal(nth_session(doc, 1), "mid");
    assert_string_equal(nth_session(doc, 2), "young");
    json_decref(doc);
    wsb_clients_req_unref(r);

    r = wsb_clients_req_new(1, 1, WSB_CLIENTS_LAG);
    struct wsb_client_info b[2] = {info("slow", 0, 800, 1, NULL, NULL),
                                   info("fast", 10000, 0, 2, NULL, NULL)};
    wsb_clients_req_answer(r, b, 2, 2);
    doc = render(r);
    assert_int_equal(json_array_size(json_object_get(doc, "clients")), 1);
    assert_string_equal(nth_session(doc, 0), "slow");
    json_decref(doc);
    wsb_clients_req_unref(r);
}

static void test_incomplete_and_late_answer(void **state)
{
    (void)state;
    struct wsb_clients_req *r = wsb_clients_req_new(2, 5, WSB_CLIENTS_SEND_BUFFER);
    wsb_clients_req_answer(r, NULL, 0, 0);
    assert_false(wsb_clients_req_wait(r, 20));
    json_t *doc = render(r);
    assert_true(json_is_false(json_object_get(doc, "complete")));
    assert_int_equal(json_array_size(json_object_get(doc, "clients")), 0);
    json_decref(doc);
    /* The late loop still holds a reference: its answer after the admin gave up is freed with
     * the request (ASan checks). */
    struct wsb_clients_req *late = wsb_clients_req_ref(r);
    wsb_clients_req_unref(r);
    struct wsb_client_info a[1] = {info("z", 1, 0, 1, "s", "c")};
    wsb_clients_req_answer(late, a, 1, 1);
    wsb_clients_req_unref(late);
    wsb_clients_req_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort_parse),
        cmocka_unit_test(test_merge_two_loops_top_n),
        cmocka_unit_test(test_age_and_lag_order),
        cmocka_unit_test(test_incomplete_and_late_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
