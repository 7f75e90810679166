/* Unit tests for bridge/sse_wire.c: events, the shared message event, the resume token and
 * the stream request parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/outq.h"
#include "bridge/sse_wire.h"
#include "bridge/ws/ws_frame.h"
#include "bridge/ws/ws_http.h"

static void test_event_lines(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    const char *j = "{\"a\":\n1,\r\n\"b\":\r2}";
    wsb_sse_event(&b, "gap", (const uint8_t *)j, strlen(j));
    wsb_buf_append(&b, "", 1);
    assert_string_equal((char *)b.data,
                        "event: gap\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n");
    wsb_buf_cleanup(&b);
    char type[16];
    wsb_sse_type_of((const uint8_t *)"{\"type\":\"subscribed\",\"x\":1}", 27, type, sizeof(type));
    assert_string_equal(type, "subscribed");
    wsb_sse_type_of((const uint8_t *)"{\"x\":1}", 7, type, sizeof(type));
    assert_string_equal(type, "message");
}

static void test_message_frame_built_once(void **state)
{
    (void)state;
    const char *j = "{\"type\":\"message\",\"channel\":\"a\",\"data\":1}";
    struct wsb_frame *f = wsb_frame_new(WSB_OP_TEXT, false, (const uint8_t *)j, strlen(j));
    f->partition = 2;
    f->offset = 7;
    struct wsb_frame *e = wsb_sse_message_frame(f);
    assert_non_null(e);
    assert_ptr_equal(wsb_sse_message_frame(f), e);
    assert_int_equal(e->hdr_len, 0);
    assert_int_equal(e->partition, 2);
    assert_int_equal(e->offset, 7);
    const char *want =
        "event: message\ndata: {\"type\":\"message\",\"channel\":\"a\",\"data\":1}\n\n";
    assert_int_equal(e->len, strlen(want));
    assert_memory_equal(e->data, want, e->len);
    wsb_frame_unref(f); /* frees the variant too (ASan checks) */
}

static void test_token_round_trip(void **state)
{
    (void)state;
    struct wsb_sse_pos a = {.hash = wsb_sse_channel_hash("orders", 6)};
    struct wsb_sse_pos b = {.hash = wsb_sse_channel_hash("prices.eur", 10)};
    struct wsb_sse_pos empty = {.hash = 1};
    assert_int_equal(wsb_sse_pos_set(&a, 0, 12), 0);
    assert_int_equal(wsb_sse_pos_set(&a, 2, 1LL << 40), 0);
    assert_int_equal(wsb_sse_pos_set(&a, 0, 13), 0); /* update */
    wsb_sse_pos_load(&b, "{\"0\":5,\"x\":1,\"3\":\"no\"}");
    assert_int_equal(b.n, 1);
    const struct wsb_sse_pos *chans[] = {&a, NULL, &empty, &b};
    char tok[WSB_SSE_ID_MAX + 1];
    size_t n = wsb_sse_token_encode(chans, 4, tok, sizeof(tok));
    assert_true(n > 0 && n < 40);
    struct wsb_sse_resume r;
    assert_int_equal(wsb_sse_token_decode(tok, n, &r), 0);
    assert_int_equal(r.n, 2);
    const struct wsb_sse_pos *p = wsb_sse_resume_find(&r, "orders", 6);
    assert_non_null(p);
    assert_int_equal(p->n, 2);
    assert_int_equal(p->po[0].partition, 0);
    assert_int_equal(p->po[0].offset, 13);
    assert_int_equal(p->po[1].offset, 1LL << 40);
    p = wsb_sse_resume_find(&r, "prices.eur", 10);
    assert_non_null(p);
    assert_int_equal(p->po[0].offset, 5);
    assert_null(wsb_sse_resume_find(&r, "other", 5));
    wsb_sse_resume_cleanup(&r);
    /* Malformed: bad characters, truncated, wrong version, too long. */
    assert_int_equal(wsb_sse_token_decode("!!", 2, &r), -1);
    assert_int_equal(wsb_sse_token_decode(tok, n - 1, &r), -1);
    assert_int_equal(wsb_sse_token_decode("AgAA", 4, &r), -1);
    char *big = malloc(WSB_SSE_ID_MAX + 2);
    memset(big, 'A', WSB_SSE_ID_MAX + 1);
    assert_int_equal(wsb_sse_token_decode(big, WSB_SSE_ID_MAX + 1, &r), -1);
    free(big);
    assert_int_equal(r.n, 0);
    /* Nothing to name: no token. */
    const struct wsb_sse_pos *none[] = {&empty};
    assert_int_equal(wsb_sse_token_encode(none, 1, tok, sizeof(tok)), 0);
    wsb_sse_pos_cleanup(&a);
    wsb_sse_pos_cleanup(&b);
}

static int parse(const char *head, struct wsb_sse_request *r, const char **msg)
{
    static struct wsb_http_req req;
    assert_int_equal(wsb_http_parse(head, strlen(head), &req), 0);
    return wsb_sse_request_parse(&req, 3, r, msg);
}

/* `head` is refused with a message, leaving an empty request. */
static void assert_refused(const char *head)
{
    struct wsb_sse_request r;
    const char *msg = NULL;
    assert_int_equal(parse(head, &r, &msg), -1);
    assert_non_null(msg);
    assert_int_equal(r.nchannels, 0);
    assert_null(r.filters);
    wsb_sse_request_cleanup(&r);
}

static void test_request(void **state)
{
    (void)state;
    struct wsb_sse_request r;
    const char *msg = NULL;
    assert_int_equal(parse("GET /sse?channel=a.b&x=1&channel=c%2Dd&from=earliest HTTP/1.1\r\n"
                           "Host: h\r\n\r\n",
                           &r, &msg),
                     0);
    assert_int_equal(r.nchannels, 2);
    assert_string_equal(r.channels[0], "a.b");
    assert_string_equal(r.channels[1], "c-d");
    assert_int_equal(r.from, WSB_FROM_EARLIEST);
    wsb_sse_request_cleanup(&r);
    assert_int_equal(parse("GET /sse?channel=a&from=1700000000000 HTTP/1.1\r\nHost: h\r\n"
                           "Last-Event-ID: AcMye_cBAAI\r\n\r\n",
                           &r, &msg),
                     0);
    assert_int_equal(r.from, WSB_FROM_TIMESTAMP);
    assert_int_equal(r.from_timestamp_ms, 1700000000000LL);
    assert_int_equal(r.resume.n, 1);
    wsb_sse_request_cleanup(&r);
    const char *bad[] = {
        "GET /sse HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a..b HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a&channel=a HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a&channel=b&channel=c&channel=d HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a&from=soon HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a&last_event_id=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /sse?channel=a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(bad[i]);
}

/* filter=: a JSON object from the request's channels to filters (docs/sse.md). */
static void test_request_filter(void **state)
{
    (void)state;
    struct wsb_sse_request r;
    const char *msg = NULL;
    /* {"c":{"key":"k"}} before the channel= pairs: only c has a filter. */
    assert_int_equal(parse("GET /sse?filter=%7B%22c%22%3A%7B%22key%22%3A%22k%22%7D%7D"
                           "&channel=a&channel=c HTTP/1.1\r\nHost: h\r\n\r\n",
                           &r, &msg),
                     0);
    assert_int_equal(r.nchannels, 2);
    assert_non_null(r.filters);
    assert_null(r.filters[0]);
    assert_non_null(r.filters[1]);
    wsb_sse_request_cleanup(&r);
    assert_null(r.filters);
    /* No filter=, or an empty object: no filters. */
    assert_int_equal(parse("GET /sse?channel=a HTTP/1.1\r\nHost: h\r\n\r\n", &r, &msg), 0);
    assert_null(r.filters);
    wsb_sse_request_cleanup(&r);
    assert_int_equal(
        parse("GET /sse?channel=a&filter=%7B%7D HTTP/1.1\r\nHost: h\r\n\r\n", &r, &msg), 0);
    assert_null(r.filters[0]);
    wsb_sse_request_cleanup(&r);
    const char *bad[] = {
        "filter=x",                                          /* not JSON */
        "filter=%5B%5D",                                     /* [] */
        "filter=%7B%22b%22%3A%7B%22key%22%3A%22k%22%7D%7D",  /* names b, not requested */
        "filter=%7B%22a%22%3A%7B%7D%7D",                     /* {"a":{}} */
        "filter=%7B%22a%22%3A%7B%22keys%22%3A%22k%22%7D%7D", /* unknown field */
        "filter=%7B%7D&filter=%7B%7D",                       /* twice */
        "filter=%zz",                                        /* bad escape */
        "filter=%7B%22a%22%3A1%2C%22a%22%3A2%7D",            /* duplicate key */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char head[256];
        snprintf(head, sizeof(head), "GET /sse?channel=a&%s HTTP/1.1\r\nHost: h\r\n\r\n", bad[i]);
        assert_refused(head);
    }
    /* A malformed filter's answer says where. */
    assert_int_equal(parse("GET /sse?channel=a&filter=%7B%22a%22%3A%7B%22key%22%3A5%7D%7D "
                           "HTTP/1.1\r\nHost: h\r\n\r\n",
                           &r, &msg),
                     -1);
    assert_non_null(strstr(msg, "filter of a.key"));
    wsb_sse_request_cleanup(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_lines),      cmocka_unit_test(test_message_frame_built_once),
        cmocka_unit_test(test_token_round_trip), cmocka_unit_test(test_request),
        cmocka_unit_test(test_request_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
