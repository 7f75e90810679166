/* Unit tests for bench/wsb_load_parse.c, the load generator's batch frame parser and JSON
 * field scanner: a stream fed in every split (a frame across reads, a header across reads),
 * 7-, 16- and 64-bit lengths, control frames between data frames, protocol errors, and the
 * fields a delivery's latency and order come from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

/* the generator is not part of the library: compile its parser into this test */
#include "../../../bench/wsb_load_parse.c"

#define MAXF 64

struct seen {
    int n;
    uint8_t opcode[MAXF];
    bool fin[MAXF];
    size_t len[MAXF];
    uint8_t first[MAXF]; /* first payload byte, 0 when empty */
    uint8_t last[MAXF];
    int stop_after; /* return nonzero after this many frames (0: never) */
};

static int on_frame(void *arg, const struct wsl_frame *f)
{
    struct seen *s = arg;
    assert_true(s->n < MAXF);
    s->opcode[s->n] = f->opcode;
    s->fin[s->n] = f->fin;
    s->len[s->n] = f->len;
    s->first[s->n] = f->len ? f->payload[0] : 0;
    s->last[s->n] = f->len ? f->payload[f->len - 1] : 0;
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

/* Appends an unmasked server frame; payload bytes are 'a' + i % 26. */
static size_t put_frame(uint8_t *out, uint8_t opcode, bool fin, size_t len)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        out[h++] = (uint8_t)len;
    } else if (len <= 0xFFFF) {
        out[h++] = 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    for (size_t i = 0; i < len; i++)
        out[h + i] = (uint8_t)('a' + i % 26);
    return h + len;
}

/* What wsb-load does with its input: parse what is contiguous, keep the rest, read more. The
 * stream arrives in reads of `chunk` bytes. Returns -1 on a protocol error. */
static int feed(const uint8_t *stream, size_t total, size_t chunk, struct seen *s)
{
    static uint8_t buf[200000];
    size_t have = 0, off = 0;
    while (off < total || have) {
        size_t n = total - off < chunk ? total - off : chunk;
        memcpy(buf + have, stream + off, n);
        have += n;
        off += n;
        size_t need;
        ssize_t used = wsl_parse_frames(buf, have, 1u << 20, on_frame, s, &need);
        if (used < 0)
            return -1;
        memmove(buf, buf + used, have - (size_t)used);
        have -= (size_t)used;
        if (have) /* something is left: it is one incomplete frame, and says what it needs */
            assert_true(need > have);
        if (n == 0 && have)
            return 1; /* the stream ended inside a frame */
    }
    return 0;
}

static void test_every_split(void **state)
{
    (void)state;
    static uint8_t stream[150000];
    size_t t = 0;
    t += put_frame(stream + t, 0x1, true, 100);   /* 7-bit length */
    t += put_frame(stream + t, 0x9, true, 4);     /* ping between data frames */
    t += put_frame(stream + t, 0x1, true, 125);   /* largest 7-bit */
    t += put_frame(stream + t, 0x1, true, 126);   /* smallest 16-bit */
    t += put_frame(stream + t, 0x1, false, 300);  /* a fragment... */
    t += put_frame(stream + t, 0xA, true, 0);     /* a pong in the middle of a message */
    t += put_frame(stream + t, 0x0, true, 65535); /* ...its continuation, largest 16-bit */
    t += put_frame(stream + t, 0x1, true, 65536); /* smallest 64-bit */
    t += put_frame(stream + t, 0x1, true, 0);     /* empty */
    t += put_frame(stream + t, 0x8, true, 2);     /* close */
    const size_t want_len[] = {100, 4, 125, 126, 300, 0, 65535, 65536, 0, 2};
    const uint8_t want_op[] = {1, 9, 1, 1, 1, 0xA, 0, 1, 1, 8};
    const size_t chunks[] = {1, 2, 3, 7, 13, 64, 1000, 4096, 65537, sizeof stream};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        struct seen s = {0};
        assert_int_equal(feed(stream, t, chunks[c], &s), 0);
        assert_int_equal(s.n, 10);
        for (int i = 0; i < 10; i++) {
            assert_int_equal(s.len[i], want_len[i]);
            assert_int_equal(s.opcode[i], want_op[i]);
            if (want_len[i]) {
                assert_int_equal(s.first[i], 'a');
                assert_int_equal(s.last[i], 'a' + (want_len[i] - 1) % 26);
            }
        }
        assert_false(s.fin[4]);
        assert_true(s.fin[6]);
    }
}

static void test_need_reports_the_missing_bytes(void **state)
{
    (void)state;
    uint8_t f[70000];
    size_t n = put_frame(f, 0x1, true, 65536); /* 10-byte header */
    struct seen s = {0};
    size_t need;
    assert_int_equal(wsl_parse_frames(f, 1, 1u << 20, on_frame, &s, &need), 0);
    assert_int_equal(need, 2);
    assert_int_equal(wsl_parse_frames(f, 5, 1u << 20, on_frame, &s, &need), 0);
    assert_int_equal(need, 10); /* the 64-bit header is incomplete */
    assert_int_equal(wsl_parse_frames(f, 10, 1u << 20, on_frame, &s, &need), 0);
    assert_int_equal(need, n);
    assert_int_equal(wsl_parse_frames(f, n, 1u << 20, on_frame, &s, &need), (ssize_t)n);
    assert_int_equal(need, 0);
    n = put_frame(f, 0x1, true, 200); /* 4-byte header */
    assert_int_equal(wsl_parse_frames(f, 3, 1u << 20, on_frame, &s, &need), 0);
    assert_int_equal(need, 4);
    assert_int_equal(s.n, 1);
}

static void test_stop_and_errors(void **state)
{
    (void)state;
    uint8_t f[1000];
    size_t t = 0;
    for (int i = 0; i < 5; i++)
        t += put_frame(f + t, 0x1, true, 10);
    struct seen s = {.stop_after = 2};
    size_t need;
    /* the callback stops the batch: the bytes of the frames it saw are consumed, no more */
    assert_int_equal(wsl_parse_frames(f, t, 1000, on_frame, &s, &need), 24);
    assert_int_equal(s.n, 2);
    const uint8_t masked[] = {0x81, 0x82, 1, 2, 3, 4, 'h', 'i'};
    const uint8_t rsv[] = {0xC1, 0x00};
    const uint8_t frag_ping[] = {0x09, 0x00};
    const uint8_t big_ping[] = {0x89, 126, 0, 126};
    uint8_t huge[10];
    huge[0] = 0x81; /* a 64-bit length over the maximum: 2^24 */
    huge[1] = 127;
    memset(huge + 2, 0, 8);
    huge[6] = 0x01;
    struct seen z = {0};
    assert_int_equal(wsl_parse_frames(masked, sizeof masked, 1000, on_frame, &z, &need), -1);
    assert_int_equal(wsl_parse_frames(rsv, sizeof rsv, 1000, on_frame, &z, &need), -1);
    assert_int_equal(wsl_parse_frames(frag_ping, sizeof frag_ping, 1000, on_frame, &z, &need), -1);
    assert_int_equal(wsl_parse_frames(big_ping, sizeof big_ping, 1000, on_frame, &z, &need), -1);
    assert_int_equal(wsl_parse_frames(huge, sizeof huge, 1u << 20, on_frame, &z, &need), -1);
    assert_int_equal(z.n, 0);
}

static void test_scan_delivery(void **state)
{
    (void)state;
    const char *msg = "{\"type\":\"message\",\"channel\":\"bench\",\"data\":{\"seq\":42,"
                      "\"x\":{\"seq\":7,\"ts\":1},\"ts\":1733460000123.456,\"pad\":\"a\\\"}\\\\\"},"
                      "\"timestamp\":1733460000100,\"partition\":3,\"offset\":99}";
    struct wsl_msg m = {0};
    struct wsl_data d = {0};
    assert_int_equal(wsl_scan_msg(msg, msg + strlen(msg), &m, &d), 0);
    assert_true(wsl_span_eq(m.type, "\"message\""));
    assert_true(wsl_span_eq(m.channel, "\"bench\""));
    int64_t v;
    double x;
    assert_true(wsl_span_int(d.seq, &v)); /* the payload's own seq, not the nested one */
    assert_int_equal(v, 42);
    assert_true(wsl_span_num(d.ts, &x));
    assert_true(x > 1733460000123.455 && x < 1733460000123.457);
    assert_true(wsl_span_int(m.partition, &v) && v == 3);
    assert_true(wsl_span_int(m.offset, &v) && v == 99);
    assert_true(wsl_span_num(m.timestamp, &x) && x == 1733460000100.0);
    assert_true(m.data.p && m.data.p[0] == '{' && m.data.p[m.data.len - 1] == '}');
    /* the data-only form (peers: the payload is the frame) */
    struct wsl_data d2 = {0};
    const char *raw = "{\"seq\":-5,\"ts\":12,\"pad\":\"xx\"}";
    assert_int_equal(wsl_scan_data(raw, raw + strlen(raw), &d2), 0);
    assert_true(wsl_span_int(d2.seq, &v) && v == -5);
    assert_true(wsl_span_num(d2.ts, &x) && x == 12.0);
    /* malformed objects; numbers that are not plain */
    const char *bad[] = {"", "[1]", "{\"a\"}", "{\"a\":1", "{\"a\":\"x}", "{\"a\":1,}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct wsl_msg mb = {0};
        assert_int_equal(wsl_scan_msg(bad[i], bad[i] + strlen(bad[i]), &mb, NULL), -1);
    }
    assert_false(wsl_span_int((struct wsl_span){"1.5", 3}, &v));
    assert_false(wsl_span_int((struct wsl_span){"\"1\"", 3}, &v));
    assert_true(wsl_span_num((struct wsl_span){"1.5e3", 5}, &x) && x == 1500.0);
    assert_false(wsl_span_num((struct wsl_span){"-", 1}, &x));
    assert_false(wsl_span_num((struct wsl_span){"null", 4}, &x));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_need_reports_the_missing_bytes),
        cmocka_unit_test(test_stop_and_errors),
        cmocka_unit_test(test_scan_delivery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
