/* Tests for the incremental UTF-8 validator: Autobahn 6.x cases, fail-fast, chunking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/ws/ws_utf8.h"

/* Straightforward reference decoder (RFC 3629 §3 arithmetic). */
static bool ref_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = p[i];
        uint32_t cp, min;
        size_t k;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            cp = b & 0x1f, k = 1, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            cp = b & 0x0f, k = 2, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            cp = b & 0x07, k = 3, min = 0x10000;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static bool valid_s(const char *s)
{
    return wsb_utf8_valid((const uint8_t *)s, strlen(s));
}

static void test_valid_strings(void **state)
{
    (void)state;
    assert_true(valid_s(""));
    assert_true(valid_s("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"));
    /* 6.2.x: "κόσμε" */
    assert_true(valid_s("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));
    /* 6.9 maximum code points of each length: U+007F U+07FF U+FFFF U+10FFFF */
    assert_true(valid_s("\x7f"));
    assert_true(valid_s("\xdf\xbf"));
    assert_true(valid_s("\xef\xbf\xbf"));
    assert_true(valid_s("\xf4\x8f\xbf\xbf"));
    /* 6.11 boundaries: U+D7FF, U+E000, U+FFFD, U+10000 */
    assert_true(valid_s("\xed\x9f\xbf"));
    assert_true(valid_s("\xee\x80\x80"));
    assert_true(valid_s("\xef\xbf\xbd"));
    assert_true(valid_s("\xf0\x90\x80\x80"));
    /* 6.22 noncharacters are valid: U+FFFE, U+1FFFF, U+10FFFE */
    assert_true(valid_s("\xef\xbf\xbe"));
    assert_true(valid_s("\xf0\x9f\xbf\xbf"));
    assert_true(valid_s("\xf4\x8f\xbf\xbe"));
    /* U+0000 as one byte is valid */
    assert_true(wsb_utf8_valid((const uint8_t *)"a\0b", 3));
}

static void test_invalid_strings(void **state)
{
    static const char *bad[] = {
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", /* 6.3.1
                                                                                             */
        "\xf4\x90\x80\x80",         /* 6.10 above U+10FFFF */
        "\xf7\xbf\xbf\xbf",         /* 6.10 */
        "\xf8\x88\x80\x80\x80",     /* 6.8 five bytes */
        "\xfc\x84\x80\x80\x80\x80", /* 6.8 six bytes */
        "\x80",
        "\xbf",
        "\x80\xbf",
        "\x80\xbf\x80", /* 6.12 unexpected continuation */
        "\xc0 ",
        "\xe0 ",
        "\xf0 ",
        "\xf8 ",
        "\xfc ", /* 6.13 lonely start */
        "\xc0",
        "\xe0\x80",
        "\xf0\x80\x80", /* 6.14 missing last byte */
        "\xdf",
        "\xef\xbf",
        "\xf7\xbf\xbf",
        "\xfe",
        "\xff",
        "\xfe\xfe\xff\xff", /* 6.16 impossible bytes */
        "\xc0\xaf",
        "\xe0\x80\xaf",
        "\xf0\x80\x80\xaf", /* 6.17 overlong '/' */
        "\xc1\xbf",
        "\xe0\x9f\xbf",
        "\xf0\x8f\xbf\xbf", /* 6.18 maximum overlongs */
        "\xc0\x80",
        "\xe0\x80\x80",
        "\xf0\x80\x80\x80", /* 6.19 overlong NUL */
        "\xed\xa0\x80",
        "\xed\xad\xbf",
        "\xed\xae\x80",
        "\xed\xaf\xbf", /* 6.20 surrogates */
        "\xed\xb0\x80",
        "\xed\xbe\x80",
        "\xed\xbf\xbf",
        "\xed\xa0\x80\xed\xb0\x80",
        "\xed\xaf\xbf\xed\xbf\xbf", /* 6.21 paired surrogates */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid_s(bad[i]))
            fail_msg("accepted bad case %zu", i);
        assert_false(ref_valid((const uint8_t *)bad[i], strlen(bad[i])));
    }
}

/* Returns the index of the byte at which feeding one byte at a time first fails, or -1. */
static long fail_index(const char *s, size_t n)
{
    struct wsb_utf8 u;

    wsb_utf8_init(&u);
    for (size_t i = 0; i < n; i++) {
        if (wsb_utf8_feed(&u, (const uint8_t *)s + i, 1) < 0)
            return (long)i;
    }
    return -1;
}

static void test_fail_fast(void **state)
{
    (void)state;
    assert_int_equal(fail_index("ab\xed\xa0\x80", 5), 3);   /* surrogate: at 2nd byte */
    assert_int_equal(fail_index("\xf4\x90\x80\x80", 4), 1); /* > U+10FFFF at 2nd byte */
    assert_int_equal(fail_index("\xe0\x80\x80", 3), 1);     /* overlong at 2nd byte */
    assert_int_equal(fail_index("\xf0\x8f\xbf\xbf", 4), 1); /* overlong at 2nd byte */
    assert_int_equal(fail_index("\xc0\x80", 2), 0);         /* C0 can never start */
    assert_int_equal(fail_index("xyz\xf5", 4), 3);
    assert_int_equal(fail_index("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"
                                "edited",
                                21),
                     12); /* Autobahn 6.4.1 fails on the 0x90 */
    assert_int_equal(fail_index("\xe2\x82\xac", 3), -1);
    assert_int_equal(fail_index("\xe2\x82(", 3), 2);

    /* once failed, it stays failed */
    struct wsb_utf8 u;
    wsb_utf8_init(&u);
    assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)"\xff", 1), -1);
    assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)"a", 1), -1);
    assert_false(wsb_utf8_complete(&u));
}

static void test_chunk_boundaries(void **state)
{
    const char *s = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 \xf0\x9f\x98\x80 plain ascii "
                    "text long enough for the fast path \xf4\x8f\xbf\xbf";
    size_t n = strlen(s);
    (void)state;
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct wsb_utf8 u;
            wsb_utf8_init(&u);
            assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)s, a), 0);
            assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)s + a, b - a), 0);
            assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)s + b, n - b), 0);
            assert_true(wsb_utf8_complete(&u));
        }
    }
    /* an incomplete sequence at a chunk end is not complete */
    struct wsb_utf8 u;
    wsb_utf8_init(&u);
    assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)"\xf0\x9f", 2), 0);
    assert_false(wsb_utf8_complete(&u));
    assert_int_equal(wsb_utf8_feed(&u, (const uint8_t *)"\x98\x80", 2), 0);
    assert_true(wsb_utf8_complete(&u));
}

/* Every 1-, 2- and 3-byte sequence, compared with the reference decoder. */
static void test_exhaustive_short(void **state)
{
    uint8_t b[3];
    (void)state;
    for (uint32_t v = 0; v < (1u << 24); v++) {
        b[0] = (uint8_t)(v >> 16), b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)v;
        if (wsb_utf8_valid(b, 3) != ref_valid(b, 3))
            fail_msg("mismatch on %02x %02x %02x", b[0], b[1], b[2]);
        if (v < (1u << 16) && wsb_utf8_valid(b + 1, 2) != ref_valid(b + 1, 2))
            fail_msg("mismatch on %02x %02x", b[1], b[2]);
    }
}

/* Random 4..12-byte sequences biased toward the high bytes. */
static void test_random_vs_reference(void **state)
{
    uint8_t b[12];
    uint32_t seed = 12345;
    (void)state;
    for (int it = 0; it < 2000000; it++) {
        size_t n = 4 + it % 9;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            uint8_t r = (uint8_t)(seed >> 16);
            b[i] = (seed >> 28) & 1 ? (uint8_t)(0x80 | (r & 0x3f)) : (uint8_t)(0xc0 | r);
            if ((seed >> 27 & 7) == 0)
                b[i] = r & 0x7f;
        }
        if (wsb_utf8_valid(b, n) != ref_valid(b, n))
            fail_msg("mismatch at iteration %d", it);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_strings),    cmocka_unit_test(test_invalid_strings),
        cmocka_unit_test(test_fail_fast),        cmocka_unit_test(test_chunk_boundaries),
        cmocka_unit_test(test_exhaustive_short), cmocka_unit_test(test_random_vs_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
