/* Tests for permessage-deflate: negotiation matrix, round trips, context takeover, bombs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "bridge/ws/ws_deflate.h"

static int nego(const char *offer, struct wsb_pmd_params *p, char *resp)
{
    return wsb_pmd_negotiate(offer, strlen(offer), p, resp, 128);
}

static void test_negotiate_accept(void **state)
{
    struct wsb_pmd_params p;
    char resp[128];
    (void)state;

    assert_int_equal(nego("permessage-deflate", &p, resp), 1);
    assert_string_equal(resp, "permessage-deflate; server_no_context_takeover");
    assert_true(p.server_no_context_takeover);
    assert_false(p.client_no_context_takeover);
    assert_int_equal(p.server_max_window_bits, 15);
    assert_int_equal(p.client_max_window_bits, 15);

    /* client_max_window_bits offered: we leave the client at 15 and do not answer it */
    assert_int_equal(nego("permessage-deflate; client_max_window_bits", &p, resp), 1);
    assert_string_equal(resp, "permessage-deflate; server_no_context_takeover");
    assert_int_equal(nego("permessage-deflate; client_max_window_bits=8", &p, resp), 1);
    assert_int_equal(p.client_max_window_bits, 15);

    assert_int_equal(nego("Permessage-Deflate ; Client_No_Context_Takeover", &p, resp), 1);
    assert_string_equal(
        resp, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    assert_true(p.client_no_context_takeover);

    assert_int_equal(nego("permessage-deflate; server_max_window_bits=10", &p, resp), 1);
    assert_string_equal(resp, "permessage-deflate; server_no_context_takeover; "
                              "server_max_window_bits=10");
    assert_int_equal(p.server_max_window_bits, 10);
    assert_int_equal(nego("permessage-deflate; server_max_window_bits=\"12\"", &p, resp), 1);
    assert_int_equal(p.server_max_window_bits, 12);

    assert_int_equal(nego("permessage-deflate; server_no_context_takeover; "
                          "client_no_context_takeover; server_max_window_bits=9; "
                          "client_max_window_bits=15",
                          &p, resp),
                     1);
    assert_string_equal(resp, "permessage-deflate; server_no_context_takeover; "
                              "client_no_context_takeover; server_max_window_bits=9");

    /* the first acceptable offer wins; others are skipped */
    assert_int_equal(nego("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
                          "permessage-deflate; foo, permessage-deflate; server_max_window_bits=11, "
                          "permessage-deflate",
                          &p, resp),
                     1);
    assert_int_equal(p.server_max_window_bits, 11);
    /* empty list elements are ignored */
    assert_int_equal(nego(" , ,permessage-deflate,", &p, resp), 1);
}

static void test_negotiate_decline(void **state)
{
    static const char *declined[] = {
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8", /* zlib cannot do 8 */
        "permessage-deflate; server_max_window_bits",   /* value required */
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=09", /* leading zero */
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_max_window_bits=\"100000000000000000000000\"",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=x",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; unknown",
        "permessage-deflate; unknown=1",
    };
    struct wsb_pmd_params p;
    char resp[128];
    (void)state;

    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        if (nego(declined[i], &p, resp) != 0)
            fail_msg("accepted %s", declined[i]);
    }
    static const char *malformed[] = {
        "permessage-deflate;",
        "permessage-deflate; =3",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; a=b=c",
        "permessage-deflate, (bad)",
        ";permessage-deflate",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        if (nego(malformed[i], &p, resp) != -1)
            fail_msg("not malformed: %s", malformed[i]);
    }
    /* a response that does not fit is not accepted */
    assert_int_equal(wsb_pmd_negotiate("permessage-deflate", 18, &p, resp, 10), 0);
}

struct sink {
    uint8_t *data;
    size_t len, cap;
    size_t calls, max_chunk;
    int stop_after; /* return 7 on this call (1-based), 0 never */
};

static int sink_cb(void *ctx, const uint8_t *p, size_t len)
{
    struct sink *s = ctx;

    s->calls++;
    if (len > s->max_chunk)
        s->max_chunk = len;
    if (s->stop_after && (int)s->calls == s->stop_after)
        return 7;
    if (s->len + len > s->cap) {
        s->cap = (s->len + len) * 2;
        s->data = realloc(s->data, s->cap);
        assert_non_null(s->data);
    }
    memcpy(s->data + s->len, p, len);
    s->len += len;
    return 0;
}

static void sink_reset(struct sink *s)
{
    free(s->data);
    memset(s, 0, sizeof(*s));
}

/* Feeds `in` to the inflater in pieces of `step` bytes (0 = at once). */
static int inflate_msg(struct wsb_inflater *z, const uint8_t *in, size_t len, size_t step,
                       uint64_t limit, struct sink *s)
{
    uint64_t total = 0;
    size_t off = 0;

    if (step == 0)
        step = len ? len : 1;
    do {
        size_t n = len - off < step ? len - off : step;
        int rc = wsb_inflater_feed(z, in + off, n, off + n == len, limit, &total, sink_cb, s);
        if (rc)
            return rc;
        off += n;
    } while (off < len);
    assert_int_equal(total, s->len);
    return 0;
}

static void round_trip(const uint8_t *msg, size_t len, int bits)
{
    struct wsb_deflater *d = wsb_deflater_new(bits);
    struct wsb_inflater *z = wsb_inflater_new(15, false);
    struct sink s = {0};
    uint8_t *out;
    size_t out_len;

    assert_non_null(d);
    assert_non_null(z);
    for (int rep = 0; rep < 2; rep++) {
        assert_int_equal(wsb_deflate_message(d, msg, len, 10, &out, &out_len), 0);
        if (out_len >= 4)
            assert_memory_not_equal(out + 10 + out_len - 4, "\x00\x00\xff\xff", 4);
        for (size_t step = 0; step <= 7; step += 7) {
            sink_reset(&s);
            assert_int_equal(inflate_msg(z, out + 10, out_len, step, len, &s), 0);
            assert_int_equal(s.len, len);
            if (len)
                assert_memory_equal(s.data, msg, len);
            assert_true(s.max_chunk <= 16384);
        }
        free(out);
    }
    sink_reset(&s);
    wsb_deflater_free(d);
    wsb_inflater_free(z);
}

static void test_round_trip(void **state)
{
    static uint8_t big[1 << 20];
    uint32_t seed = 7;
    (void)state;

    round_trip((const uint8_t *)"", 0, 15);
    round_trip((const uint8_t *)"Hello", 5, 15);
    const char *json = "{\"type\":\"message\",\"channel\":\"orders\",\"data\":{\"id\":1,\"id\":1}}";
    round_trip((const uint8_t *)json, strlen(json), 9);
    for (size_t i = 0; i < sizeof(big); i++) {
        seed = seed * 1103515245u + 12345u;
        big[i] = (i / 1000) % 2 ? (uint8_t)(seed >> 16) : (uint8_t)('a' + i % 7);
    }
    round_trip(big, sizeof(big), 15);
    round_trip(big, 70000, 10);
}

/* A client-side compressor keeping its context across messages (no client_no_context_takeover). */
static size_t client_compress(z_stream *zs, const char *msg, uint8_t *out, size_t cap)
{
    zs->next_in = (Bytef *)msg;
    zs->avail_in = (uInt)strlen(msg);
    zs->next_out = out;
    zs->avail_out = (uInt)cap;
    assert_int_equal(deflate(zs, Z_SYNC_FLUSH), Z_OK);
    size_t n = cap - zs->avail_out;
    assert_memory_equal(out + n - 4, "\x00\x00\xff\xff", 4);
    return n - 4;
}

static void test_context_takeover(void **state)
{
    const char *msg = "the quick brown fox jumps over the lazy dog, again and again";
    uint8_t c1[256], c2[256];
    z_stream zs;
    struct sink s = {0};
    (void)state;

    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t n1 = client_compress(&zs, msg, c1, sizeof(c1));
    size_t n2 = client_compress(&zs, msg, c2, sizeof(c2)); /* refers back into message 1 */
    assert_true(n2 < n1);

    /* context kept: both messages decode */
    struct wsb_inflater *z = wsb_inflater_new(15, false);
    assert_int_equal(inflate_msg(z, c1, n1, 0, 1000, &s), 0);
    sink_reset(&s);
    assert_int_equal(inflate_msg(z, c2, n2, 3, 1000, &s), 0);
    assert_int_equal(s.len, strlen(msg));
    assert_memory_equal(s.data, msg, s.len);
    sink_reset(&s);
    wsb_inflater_free(z);

    /* reset per message (client_no_context_takeover): message 2 cannot be decoded alone */
    z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, c1, n1, 0, 1000, &s), 0);
    sink_reset(&s);
    assert_int_equal(inflate_msg(z, c2, n2, 0, 1000, &s), 1007);
    /* and the inflater stays failed */
    assert_int_equal(inflate_msg(z, c1, n1, 0, 1000, &s), 1007);
    sink_reset(&s);
    wsb_inflater_free(z);

    /* a client that resets per message works with either inflater */
    deflateReset(&zs);
    n1 = client_compress(&zs, msg, c1, sizeof(c1));
    deflateReset(&zs);
    n2 = client_compress(&zs, msg, c2, sizeof(c2));
    assert_int_equal(n1, n2);
    z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, c1, n1, 0, 1000, &s), 0);
    sink_reset(&s);
    assert_int_equal(inflate_msg(z, c2, n2, 1, 1000, &s), 0);
    assert_memory_equal(s.data, msg, s.len);
    sink_reset(&s);
    wsb_inflater_free(z);
    deflateEnd(&zs);
}

static void test_bfinal_block(void **state)
{
    const char *msg = "final block message";
    uint8_t c[128];
    z_stream zs;
    struct sink s = {0};
    (void)state;

    /* a client may end a message with a BFINAL block (RFC 7692 §7.2.3.4) */
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)msg;
    zs.avail_in = (uInt)strlen(msg);
    zs.next_out = c;
    zs.avail_out = sizeof(c);
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = sizeof(c) - zs.avail_out;
    deflateEnd(&zs);

    struct wsb_inflater *z = wsb_inflater_new(15, false);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(inflate_msg(z, c, n, (size_t)i, 1000, &s), 0);
        assert_int_equal(s.len, strlen(msg));
        sink_reset(&s);
    }
    wsb_inflater_free(z);
}

static void test_bomb(void **state)
{
    const size_t zeros = 10u << 20;
    uint8_t *plain = calloc(1, zeros);
    uLong cap = compressBound(zeros);
    uint8_t *c = malloc(cap);
    z_stream zs;
    struct sink s = {0};
    (void)state;

    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = plain;
    zs.avail_in = (uInt)zeros;
    zs.next_out = c;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t n = cap - zs.avail_out - 4;
    deflateEnd(&zs);
    assert_true(n < 20000);

    for (size_t step = 0; step <= 1000; step += 1000) {
        struct wsb_inflater *z = wsb_inflater_new(15, true);
        uint64_t limit = 1u << 20;
        assert_int_equal(inflate_msg(z, c, n, step, limit, &s), 1009);
        assert_true(s.len <= limit);
        assert_true(s.max_chunk <= 16384);
        sink_reset(&s);
        wsb_inflater_free(z);
    }
    /* exactly at the limit passes */
    struct wsb_inflater *z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, c, n, 0, zeros, &s), 0);
    assert_int_equal(s.len, zeros);
    sink_reset(&s);
    assert_int_equal(inflate_msg(z, c, n, 0, zeros - 1, &s), 1009);
    assert_true(s.len <= zeros - 1);
    sink_reset(&s);
    wsb_inflater_free(z);
    /* a zero limit: any output fails */
    z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, c, n, 0, 0, &s), 1009);
    assert_int_equal(s.len, 0);
    sink_reset(&s);
    wsb_inflater_free(z);
    free(plain);
    free(c);
}

static void test_garbage_and_callback(void **state)
{
    struct sink s = {0};
    (void)state;

    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    struct wsb_inflater *z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, garbage, sizeof(garbage), 0, 1000, &s), 1007);
    wsb_inflater_free(z);
    /* a stored block whose length check fails */
    static const uint8_t badstored[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'a'};
    z = wsb_inflater_new(15, true);
    assert_int_equal(inflate_msg(z, badstored, sizeof(badstored), 0, 1000, &s), 1007);
    wsb_inflater_free(z);
    sink_reset(&s);

    /* the callback's non-zero value is propagated */
    struct wsb_deflater *d = wsb_deflater_new(15);
    uint8_t *out;
    size_t out_len;
    static uint8_t msg[100000];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7 % 251);
    assert_int_equal(wsb_deflate_message(d, msg, sizeof(msg), 0, &out, &out_len), 0);
    z = wsb_inflater_new(15, false);
    s.stop_after = 2;
    assert_int_equal(inflate_msg(z, out, out_len, 0, sizeof(msg), &s), 7);
    sink_reset(&s);
    wsb_inflater_free(z);
    free(out);
    wsb_deflater_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiate_accept),     cmocka_unit_test(test_negotiate_decline),
        cmocka_unit_test(test_round_trip),           cmocka_unit_test(test_context_takeover),
        cmocka_unit_test(test_bfinal_block),         cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_garbage_and_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
