/* Tests for the frame codec: Autobahn-style framing violations, limits, arbitrary splits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/ws/ws_frame.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a masked client frame to out; returns its length. b0 is the raw first byte. */
static size_t frame_raw(uint8_t *out, uint8_t b0, const void *payload, size_t len)
{
    size_t n = 0;

    out[n++] = b0;
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(out + n, MASK, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ MASK[i & 3];
    return n + len;
}

static size_t frame(uint8_t *out, bool fin, uint8_t op, const char *payload)
{
    return frame_raw(out, (uint8_t)((fin ? 0x80 : 0) | op), payload, strlen(payload));
}

/* Runs the parser over `in` split into pieces (split(i) gives the size of piece i) and writes
 * a textual log of the events. Returns the error close code or 0. */
struct log {
    char text[1 << 20];
    size_t len;
};

static void logf_(struct log *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    l->len += (size_t)vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
    va_end(ap);
}

static uint16_t run(struct wsb_frame_parser *p, const uint8_t *in, size_t len,
                    size_t (*split)(size_t), struct log *l)
{
    uint8_t *copy = malloc(len ? len : 1);
    size_t off = 0, piece = 0;

    memcpy(copy, in, len);
    l->len = 0;
    l->text[0] = '\0';
    while (off < len) {
        size_t n = split ? split(piece++) : len;
        if (n > len - off)
            n = len - off;
        uint8_t *b = copy + off;
        size_t left = n;
        for (;;) {
            struct wsb_frame_ev ev;
            size_t used = wsb_frame_parse(p, b, left, &ev);
            assert_true(used <= left);
            b += used;
            left -= used;
            if (ev.type == WSB_FEV_ERROR) {
                logf_(l, "ERR %u;", ev.close_code);
                free(copy);
                return ev.close_code;
            }
            if (ev.type == WSB_FEV_DATA) {
                if (ev.message_start)
                    logf_(l, "MSG op=%u z=%d [", ev.opcode, ev.compressed);
                logf_(l, "%.*s", (int)ev.len, (const char *)ev.payload);
                if (ev.message_end)
                    logf_(l, "];");
            } else if (ev.type == WSB_FEV_CONTROL) {
                logf_(l, "CTL op=%u [%.*s];", ev.opcode, (int)ev.len, (const char *)ev.payload);
            } else {
                assert_int_equal(left, 0); /* NONE only once the input is used up */
                break;
            }
        }
        off += n;
    }
    free(copy);
    return 0;
}

static size_t split_one(size_t i)
{
    (void)i;
    return 1;
}

static uint32_t rnd_state;
static size_t split_random(size_t i)
{
    (void)i;
    rnd_state = rnd_state * 1103515245u + 12345u;
    return 1 + (rnd_state >> 16) % 40;
}

static uint16_t parse_all(const uint8_t *in, size_t len, uint64_t max, bool rsv1, struct log *l)
{
    struct wsb_frame_parser p;
    wsb_frame_parser_init(&p, max, rsv1);
    return run(&p, in, len, NULL, l);
}

static struct log L1, L2;

static void test_stream_any_split(void **state)
{
    static uint8_t in[300000];
    static char big[70000];
    size_t n = 0;
    (void)state;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char mid[300];
    memset(mid, 'm', 299);
    mid[299] = '\0';

    n += frame(in + n, true, WSB_OP_TEXT, "hello");
    n += frame(in + n, true, WSB_OP_TEXT, ""); /* empty message still reported */
    n += frame(in + n, false, WSB_OP_BINARY, "frag1-");
    n += frame(in + n, true, WSB_OP_PING, "ping!"); /* control between fragments */
    n += frame(in + n, false, WSB_OP_CONT, "");
    n += frame(in + n, false, WSB_OP_CONT, "frag2-");
    n += frame(in + n, true, WSB_OP_PONG, "");
    n += frame(in + n, true, WSB_OP_CONT, "frag3");
    n += frame(in + n, true, WSB_OP_TEXT, mid);   /* 16-bit length */
    n += frame(in + n, true, WSB_OP_BINARY, big); /* 64-bit length */
    n += frame(in + n, false, WSB_OP_TEXT, "");
    n += frame(in + n, true, WSB_OP_CONT, "");
    n += frame_raw(in + n, 0x88,
                   "\x03\xe8"
                   "bye",
                   5);

    assert_int_equal(parse_all(in, n, 1 << 20, false, &L1), 0);
    char expect[256];
    snprintf(expect, sizeof(expect),
             "MSG op=1 z=0 [hello];MSG op=1 z=0 [];MSG op=2 z=0 [frag1-CTL op=9 [ping!];"
             "frag2-CTL op=10 [];frag3];MSG op=1 z=0 [");
    assert_memory_equal(L1.text, expect, strlen(expect));
    assert_non_null(strstr(L1.text, "];MSG op=1 z=0 [];CTL op=8 [\x03\xe8"
                                    "bye];"));

    struct wsb_frame_parser p;
    wsb_frame_parser_init(&p, 1 << 20, false);
    assert_int_equal(run(&p, in, n, split_one, &L2), 0);
    assert_int_equal(L1.len, L2.len);
    assert_memory_equal(L1.text, L2.text, L1.len);

    for (uint32_t seed = 1; seed < 200; seed++) {
        rnd_state = seed;
        wsb_frame_parser_init(&p, 1 << 20, false);
        assert_int_equal(run(&p, in, n, split_random, &L2), 0);
        assert_int_equal(L1.len, L2.len);
        assert_memory_equal(L1.text, L2.text, L1.len);
    }
}

static void test_empty_message_event(void **state)
{
    uint8_t in[16];
    size_t n = frame(in, true, WSB_OP_TEXT, "");
    struct wsb_frame_parser p;
    struct wsb_frame_ev ev;
    (void)state;

    wsb_frame_parser_init(&p, 100, false);
    assert_int_equal(wsb_frame_parse(&p, in, n, &ev), n);
    assert_int_equal(ev.type, WSB_FEV_DATA);
    assert_true(ev.message_start && ev.message_end);
    assert_int_equal(ev.len, 0);
    assert_int_equal(ev.opcode, WSB_OP_TEXT);
    assert_int_equal(wsb_frame_parse(&p, in + n, 0, &ev), 0);
    assert_int_equal(ev.type, WSB_FEV_NONE);
}

static void test_unmask_in_place(void **state)
{
    uint8_t in[64];
    size_t n = frame(in, true, WSB_OP_BINARY, "abcdefg");
    struct wsb_frame_parser p;
    struct wsb_frame_ev ev;
    (void)state;

    wsb_frame_parser_init(&p, 100, false);
    assert_int_equal(wsb_frame_parse(&p, in, n, &ev), n);
    assert_int_equal(ev.type, WSB_FEV_DATA);
    assert_ptr_equal(ev.payload, in + 6);
    assert_memory_equal(ev.payload, "abcdefg", 7);
}

static void expect_error(const uint8_t *in, size_t len, uint64_t max, bool rsv1, uint16_t code)
{
    struct log *l = &L1;
    assert_int_equal(parse_all(in, len, max, rsv1, l), code);
    /* and byte by byte */
    struct wsb_frame_parser p;
    wsb_frame_parser_init(&p, max, rsv1);
    assert_int_equal(run(&p, in, len, split_one, l), code);
    /* the parser stays failed */
    struct wsb_frame_ev ev;
    uint8_t more[2] = {0x81, 0x80};
    wsb_frame_parse(&p, more, 2, &ev);
    assert_int_equal(ev.type, WSB_FEV_ERROR);
}

static void test_protocol_violations(void **state)
{
    uint8_t in[512];
    size_t n;
    (void)state;

    /* unmasked client frame (RFC 6455 §5.1) */
    in[0] = 0x81, in[1] = 0x02, in[2] = 'h', in[3] = 'i';
    expect_error(in, 4, 100, false, 1002);
    /* RSV2 / RSV3 (Autobahn 3.x) */
    expect_error(in, frame_raw(in, 0x81 | 0x20, "x", 1), 100, false, 1002);
    expect_error(in, frame_raw(in, 0x81 | 0x10, "x", 1), 100, true, 1002);
    expect_error(in, frame_raw(in, 0x81 | 0x70, "x", 1), 100, true, 1002);
    /* RSV1 without permessage-deflate */
    expect_error(in, frame_raw(in, 0xc1, "x", 1), 100, false, 1002);
    /* RSV1 on a control frame or a continuation, even with deflate */
    expect_error(in, frame_raw(in, 0xc9, "x", 1), 100, true, 1002);
    n = frame_raw(in, 0x41, "a", 1);
    n += frame_raw(in + n, 0xc0, "b", 1);
    expect_error(in, n, 100, true, 1002);
    /* reserved opcodes (Autobahn 4.x) */
    for (uint8_t op = 3; op <= 7; op++)
        expect_error(in, frame_raw(in, 0x80 | op, "", 0), 100, false, 1002);
    for (uint8_t op = 0xb; op <= 0xf; op++)
        expect_error(in, frame_raw(in, 0x80 | op, "", 0), 100, false, 1002);
    /* valid frame then a reserved opcode: the first message is still reported */
    n = frame(in, true, WSB_OP_TEXT, "ok");
    n += frame_raw(in + n, 0x85, "", 0);
    expect_error(in, n, 100, false, 1002);
    assert_non_null(strstr(L1.text, "MSG op=1 z=0 [ok];ERR 1002;"));
    /* fragmented control frames (Autobahn 5.1, 5.2) */
    expect_error(in, frame_raw(in, 0x09, "p", 1), 100, false, 1002);
    expect_error(in, frame_raw(in, 0x0a, "p", 1), 100, false, 1002);
    expect_error(in, frame_raw(in, 0x08, "", 0), 100, false, 1002);
    /* control frames over 125 bytes (Autobahn 2.5) */
    char p126[126];
    memset(p126, 'p', sizeof(p126));
    expect_error(in, frame_raw(in, 0x89, p126, 126), 1000, false, 1002);
    expect_error(in, frame_raw(in, 0x88, p126, 126), 1000, false, 1002);
    /* continuation without a start (Autobahn 5.9-5.14) */
    expect_error(in, frame(in, true, WSB_OP_CONT, "x"), 100, false, 1002);
    expect_error(in, frame(in, false, WSB_OP_CONT, "x"), 100, false, 1002);
    n = frame(in, true, WSB_OP_TEXT, "done");
    n += frame(in + n, true, WSB_OP_CONT, "x");
    expect_error(in, n, 100, false, 1002);
    /* new data frame inside a fragmented message (Autobahn 5.17-5.20) */
    n = frame(in, false, WSB_OP_TEXT, "a");
    n += frame(in + n, true, WSB_OP_TEXT, "b");
    expect_error(in, n, 100, false, 1002);
    n = frame(in, false, WSB_OP_BINARY, "a");
    n += frame(in + n, true, WSB_OP_PING, "");
    n += frame(in + n, false, WSB_OP_BINARY, "b");
    expect_error(in, n, 100, false, 1002);
    /* 64-bit length with the top bit set */
    uint8_t big[14] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    expect_error(big, sizeof(big), UINT64_MAX, false, 1002);
}

static void test_limits(void **state)
{
    uint8_t in[300];
    size_t n;
    struct wsb_frame_parser p;
    struct wsb_frame_ev ev;
    (void)state;

    /* a 1 GiB length header fails at once, before any payload */
    uint8_t gib[10] = {0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0};
    wsb_frame_parser_init(&p, 1 << 20, false);
    assert_int_equal(wsb_frame_parse(&p, gib, sizeof(gib), &ev), sizeof(gib));
    assert_int_equal(ev.type, WSB_FEV_NONE); /* the mask is not there yet */
    uint8_t mask[4] = {1, 2, 3, 4};
    wsb_frame_parse(&p, mask, 4, &ev);
    assert_int_equal(ev.type, WSB_FEV_ERROR);
    assert_int_equal(ev.close_code, 1009);

    /* exactly at the limit is fine, one more is not */
    char p10[11] = "0123456789";
    assert_int_equal(parse_all(in, frame(in, true, WSB_OP_TEXT, p10), 10, false, &L1), 0);
    expect_error(in, frame(in, true, WSB_OP_TEXT, p10), 9, false, 1009);
    /* the limit covers all fragments of a message */
    n = frame(in, false, WSB_OP_TEXT, "01234");
    n += frame(in + n, true, WSB_OP_PING, "pp"); /* control frames do not count */
    n += frame(in + n, true, WSB_OP_CONT, "56789");
    n += frame(in + n, true, WSB_OP_TEXT, p10); /* and it resets per message */
    assert_int_equal(parse_all(in, n, 10, false, &L1), 0);
    n = frame(in, false, WSB_OP_TEXT, "01234");
    n += frame(in + n, true, WSB_OP_CONT, "567890");
    expect_error(in, n, 10, false, 1009);
    /* a 125-byte control frame is fine even with a small message limit */
    char p125[126];
    memset(p125, 'c', 125);
    p125[125] = '\0';
    assert_int_equal(parse_all(in, frame(in, true, WSB_OP_PING, p125), 10, false, &L1), 0);
    assert_int_equal(L1.len, strlen("CTL op=9 [];") + 125);
}

static void test_non_minimal_length_and_rsv1(void **state)
{
    uint8_t in[32] = {0x81, 0x80 | 126, 0, 3, 0, 0, 0, 0, 'a', 'b', 'c'};
    (void)state;

    assert_int_equal(parse_all(in, 11, 100, false, &L1), 0);
    assert_string_equal(L1.text, "MSG op=1 z=0 [abc];");
    uint8_t in64[32] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 'h', 'i'};
    assert_int_equal(parse_all(in64, 16, 100, false, &L1), 0);
    assert_string_equal(L1.text, "MSG op=2 z=0 [hi];");

    /* RSV1 on the first frame with deflate: the whole message is compressed */
    size_t n = frame_raw(in, 0x41, "ab", 2);
    n += frame_raw(in + n, 0x80, "cd", 2);
    assert_int_equal(parse_all(in, n, 100, true, &L1), 0);
    assert_string_equal(L1.text, "MSG op=1 z=1 [abcd];");
}

static void test_frame_header(void **state)
{
    uint8_t h[10];
    (void)state;

    assert_int_equal(wsb_frame_header(h, WSB_OP_TEXT, true, false, 0), 2);
    assert_memory_equal(h, "\x81\x00", 2);
    assert_int_equal(wsb_frame_header(h, WSB_OP_BINARY, false, true, 125), 2);
    assert_memory_equal(h, "\x42\x7d", 2);
    assert_int_equal(wsb_frame_header(h, WSB_OP_TEXT, true, true, 126), 4);
    assert_memory_equal(h, "\xc1\x7e\x00\x7e", 4);
    assert_int_equal(wsb_frame_header(h, WSB_OP_CLOSE, true, false, 65535), 4);
    assert_memory_equal(h, "\x88\x7e\xff\xff", 4);
    assert_int_equal(wsb_frame_header(h, WSB_OP_BINARY, true, false, 65536), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_int_equal(wsb_frame_header(h, WSB_OP_PONG, true, false, 0x0102030405060708ull), 10);
    assert_memory_equal(h, "\x8a\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
}

static uint16_t close_code_of(uint16_t code, const char *reason, uint16_t *out)
{
    uint8_t b[128];
    b[0] = (uint8_t)(code >> 8), b[1] = (uint8_t)code;
    memcpy(b + 2, reason, strlen(reason));
    return wsb_close_payload_check(b, 2 + strlen(reason), out);
}

static void test_close_payload(void **state)
{
    uint16_t code = 0;
    (void)state;

    assert_int_equal(wsb_close_payload_check(NULL, 0, &code), 0);
    assert_int_equal(code, 1005);
    assert_int_equal(wsb_close_payload_check((const uint8_t *)"\x03", 1, &code), 1002);

    static const uint16_t good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                    1012, 1013, 1014, 3000, 3999, 4000, 4401, 4999};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        code = 0;
        assert_int_equal(close_code_of(good[i], "", &code), 0);
        assert_int_equal(code, good[i]);
    }
    static const uint16_t bad[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                   1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(close_code_of(bad[i], "", &code), 1002);

    assert_int_equal(close_code_of(1000, "bye \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", &code),
                     0);
    assert_int_equal(close_code_of(1000,
                                   "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
                                   "edited",
                                   &code),
                     1007);
    assert_int_equal(close_code_of(1000, "\xf0\x9f\x98", &code), 1007); /* truncated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_any_split), cmocka_unit_test(test_empty_message_event),
        cmocka_unit_test(test_unmask_in_place),  cmocka_unit_test(test_protocol_violations),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_non_minimal_length_and_rsv1),
        cmocka_unit_test(test_frame_header),     cmocka_unit_test(test_close_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
