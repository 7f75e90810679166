/* Unit tests for util/buf.c: growth across capacity boundaries, the oom flag (a request too
 * big to double into, and one the allocator refuses), printf on both sides of its stack
 * buffer, JSON string escaping (every control character, checked by jansson) and base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/json_text.h"

/* A huge allocation must come back NULL under ASan and TSan too (their default is to
 * abort); a sanitizer runtime calls these hooks, a plain build never does. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static void test_empty(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    wsb_buf_append(&b, "x", 0);
    wsb_buf_puts(&b, "");
    assert_int_equal(b.len, 0);
    assert_false(b.oom);
    size_t len = 99;
    assert_null(wsb_buf_steal(&b, &len));
    assert_int_equal(len, 0);
    wsb_buf_cleanup(&b);
    wsb_buf_cleanup(&b); /* twice is harmless */
}

static void test_one_byte_and_growth(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_append(&b, "a", 1);
    assert_int_equal(b.len, 1);
    assert_true(b.cap >= 1);
    assert_int_equal(b.data[0], 'a');

    /* byte by byte across several doublings: content kept, cap a power-of-two multiple */
    uint8_t want[5000];
    want[0] = 'a';
    for (size_t i = 1; i < sizeof(want); i++) {
        want[i] = (uint8_t)(i * 7);
        size_t cap = b.cap;
        wsb_buf_append(&b, &want[i], 1);
        assert_int_equal(b.len, i + 1);
        assert_true(b.cap >= b.len);
        if (b.cap != cap)
            assert_int_equal(b.cap, cap * 2); /* grew exactly when full */
        else
            assert_true(i < cap);
    }
    assert_memory_equal(b.data, want, sizeof(want));
    assert_false(b.oom);

    /* steal detaches and resets */
    size_t len;
    uint8_t *d = wsb_buf_steal(&b, &len);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(d, want, sizeof(want));
    assert_null(b.data);
    assert_int_equal(b.len + b.cap, 0);
    free(d);
    wsb_buf_cleanup(&b);
}

static void test_exact_fill_and_large_append(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    assert_int_equal(wsb_buf_reserve(&b, 1), 0);
    size_t cap = b.cap;
    uint8_t *fill = malloc(cap * 10);
    assert_non_null(fill);
    memset(fill, 'z', cap * 10);
    wsb_buf_append(&b, fill, cap); /* exactly to capacity: no growth */
    assert_int_equal(b.cap, cap);
    assert_int_equal(wsb_buf_reserve(&b, 0), 0);
    assert_int_equal(b.cap, cap);
    wsb_buf_append(&b, "y", 1); /* one past */
    assert_true(b.cap > cap);
    wsb_buf_append(&b, fill, cap * 10); /* many doublings in one call */
    assert_int_equal(b.len, cap * 11 + 1);
    assert_true(b.cap >= b.len);
    assert_int_equal(b.data[cap], 'y');
    assert_int_equal(b.data[b.len - 1], 'z');
    free(fill);
    wsb_buf_cleanup(&b);
}

static void test_oom_is_sticky(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "keep");

    /* more than can ever be doubled into: refused without an allocation */
    assert_int_equal(wsb_buf_reserve(&b, SIZE_MAX), -1);
    assert_true(b.oom);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "keep", 4); /* what was there stays */
    wsb_buf_append(&b, "more", 4);
    wsb_buf_puts(&b, "more");
    wsb_buf_printf(&b, "%d", 5);
    wsb_buf_json_str(&b, "s", 1);
    wsb_buf_base64(&b, "s", 1);
    assert_int_equal(b.len, 4);
    assert_int_equal(wsb_buf_reserve(&b, 1), -1);
    wsb_buf_cleanup(&b);
    assert_false(b.oom); /* cleanup resets */

    /* a size the allocator refuses (2^62 bytes) */
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "keep");
    assert_int_equal(wsb_buf_reserve(&b, (size_t)1 << 62), -1);
    assert_true(b.oom);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "keep", 4);
    wsb_buf_append(&b, "x", 1);
    assert_int_equal(b.len, 4);
    wsb_buf_cleanup(&b);
}

static void test_oversized_escape_sets_oom(void **state)
{
    (void)state;
    /* lengths whose worst-case output size overflows size_t: nothing read, nothing written,
     * and the caller must learn of it through oom (the output would lack a value) */
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_json_str(&b, "x", SIZE_MAX / 4);
    assert_int_equal(b.len, 0);
    assert_true(b.oom);
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_buf_base64(&b, "x", SIZE_MAX - 1);
    assert_int_equal(b.len, 0);
    assert_true(b.oom);
    wsb_buf_cleanup(&b);
}

static void test_printf(void **state)
{
    (void)state;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_printf(&b, "%s", "");
    assert_int_equal(b.len, 0);
    wsb_buf_printf(&b, "n=%d,%s", 42, "x");
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "n=42,x", 6);

    /* lengths around the 128-byte stack buffer, appended after existing content */
    char s[400];
    for (size_t n = 120; n <= 300; n++) {
        wsb_buf_cleanup(&b);
        wsb_buf_init(&b);
        wsb_buf_puts(&b, "<");
        memset(s, 'a' + (int)(n % 26), n);
        s[n] = '\0';
        wsb_buf_printf(&b, "%s>", s);
        assert_int_equal(b.len, n + 2);
        assert_int_equal(b.data[0], '<');
        assert_memory_equal(b.data + 1, s, n);
        assert_int_equal(b.data[n + 1], '>');
    }
    /* the long path when the buffer is exactly full */
    wsb_buf_cleanup(&b);
    wsb_buf_init(&b);
    assert_int_equal(wsb_buf_reserve(&b, 1), 0);
    size_t cap = b.cap;
    memset(s, 'q', 300);
    wsb_buf_append(&b, s, cap);
    wsb_buf_printf(&b, "%.200s", s);
    assert_int_equal(b.len, cap + 200);
    assert_int_equal(b.data[b.len - 1], 'q');
    wsb_buf_cleanup(&b);
}

/* Escapes bytes with wsb_buf_json_str; checks the result is one valid JSON string that
 * jansson decodes back to the same bytes. Returns the escaped text (caller frees). */
static char *escape_checked(const void *p, size_t n, size_t *outlen)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "[");
    wsb_buf_json_str(&b, p, n);
    wsb_buf_puts(&b, "]");
    assert_false(b.oom);
    assert_true(wsb_json_valid(b.data, b.len));
    json_error_t err;
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_ALLOW_NUL, &err);
    assert_non_null(j);
    json_t *s = json_array_get(j, 0);
    assert_true(json_is_string(s));
    assert_int_equal(json_string_length(s), n);
    assert_memory_equal(json_string_value(s), p, n);
    json_decref(j);
    size_t len;
    uint8_t *d = wsb_buf_steal(&b, &len);
    memmove(d, d + 1, len - 2);
    d[len - 2] = '\0';
    *outlen = len - 2;
    return (char *)d;
}

/* The decimal appenders print what printf prints, at the edges and in between. */
static void test_decimal(void **state)
{
    (void)state;
    static const int64_t vals[] = {
        0,   1,     -1,         9,         10,        -10,           99,
        100, 12345, -987654321, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char want[64];
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_buf_i64(&b, vals[i]);
        wsb_buf_append(&b, "|", 1);
        wsb_buf_u64(&b, (uint64_t)vals[i]);
        snprintf(want, sizeof(want), "%" PRId64 "|%" PRIu64, vals[i], (uint64_t)vals[i]);
        assert_int_equal(b.len, strlen(want));
        assert_memory_equal(b.data, want, b.len);
        wsb_buf_cleanup(&b);
    }
    uint64_t v = 1;
    for (int i = 0; i < 64; i++, v = v * 3 + 7) {
        char got[24], want[24];
        size_t n = wsb_fmt_u64(got, v);
        snprintf(want, sizeof(want), "%" PRIu64, v);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(got, want, n);
    }
}

static void test_json_str_escapes(void **state)
{
    (void)state;
    size_t len;
    char *e = escape_checked("", 0, &len);
    assert_string_equal(e, "\"\"");
    free(e);
    e = escape_checked("a", 1, &len);
    assert_string_equal(e, "\"a\"");
    free(e);
    e = escape_checked("q\"b\\s/", 6, &len);
    assert_string_equal(e, "\"q\\\"b\\\\s/\"");
    free(e);
    e = escape_checked("\n\r\t", 3, &len);
    assert_string_equal(e, "\"\\n\\r\\t\"");
    free(e);
    e = escape_checked("\x00\x01\x08\x0c\x1f\x7f", 6, &len);
    assert_int_equal(len, 2 + 5 * 6 + 1);
    assert_memory_equal(e, "\"\\u0000\\u0001\\u0008\\u000c\\u001f\x7f\"", len);
    free(e);
    /* UTF-8 passes through unchanged */
    e = escape_checked("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, &len);
    assert_string_equal(e, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    free(e);

    /* every control character, one at a time and all together */
    uint8_t all[32];
    for (int c = 0; c < 32; c++) {
        all[c] = (uint8_t)c;
        e = escape_checked(&all[c], 1, &len);
        assert_true(len == 4 || len == 8);
        for (size_t i = 0; i < len; i++)
            assert_true((uint8_t)e[i] >= 0x20);
        free(e);
    }
    e = escape_checked(all, sizeof(all), &len);
    free(e);
}

static void test_json_str_long(void **state)
{
    (void)state;
    /* worst case: every byte becomes six, well past the first capacities */
    size_t n = 20000;
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i % 32);
    size_t len;
    char *e = escape_checked(p, n, &len);
    assert_true(len > n * 2);
    free(e);
    /* printable bytes with quotes and backslashes in between, appended to existing text */
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(0x20 + i % 0x5f);
    e = escape_checked(p, n, &len);
    free(e);
    free(p);
}

static void test_base64(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                       "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_buf_puts(&b, ">");
        wsb_buf_base64(&b, plain[i], strlen(plain[i]));
        assert_int_equal(b.len, 1 + strlen(want[i]));
        assert_memory_equal(b.data + 1, want[i], strlen(want[i]));
        wsb_buf_cleanup(&b);
    }
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_base64(&b, "\xfb\xff\xbf", 3); /* the last two digits of the alphabet */
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "+/+/", 4);
    wsb_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_one_byte_and_growth),
        cmocka_unit_test(test_exact_fill_and_large_append),
        cmocka_unit_test(test_oom_is_sticky),
        cmocka_unit_test(test_oversized_escape_sets_oom),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_json_str_escapes),
        cmocka_unit_test(test_json_str_long),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
