/* Unit tests for util/form.c: wsb_form_param on query strings — '+', %XX in values and
 * names, malformed escapes, NUL, repeated keys (the first wins), parameters without '=',
 * and the output size limit at its exact boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "util/form.h"

static long param(const char *q, const char *name, char *out, size_t outlen)
{
    return wsb_form_param(q, strlen(q), name, out, outlen);
}

/* Expects `name` in `q` to decode to `want`. */
static void check(const char *q, const char *name, const char *want)
{
    char out[64];
    memset(out, 'X', sizeof(out));
    long n = param(q, name, out, sizeof(out));
    assert_int_equal(n, (long)strlen(want));
    assert_string_equal(out, want);
}

static void test_hexval(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        int want = c >= '0' && c <= '9'   ? c - '0'
                   : c >= 'a' && c <= 'f' ? c - 'a' + 10
                   : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                          : -1;
        assert_int_equal(wsb_hexval(c), want);
    }
}

static void test_plain(void **state)
{
    (void)state;
    char out[16];
    check("a=1", "a", "1");
    check("a=1&b=22&c=333", "b", "22");
    check("a=1&b=22&c=333", "c", "333");
    check("a=", "a", "");
    check("a", "a", "");         /* no '=': an empty value */
    check("x=1&a&y=2", "a", ""); /* no '=' in the middle */
    check("a=b=c", "a", "b=c");  /* the first '=' splits */
    check("&&a=1&&", "a", "1");  /* empty parameters skipped */
    check("=v&a=1", "", "v");    /* an empty name is a name */
    assert_int_equal(param("a=1", "b", out, sizeof(out)), -1);
    assert_int_equal(param("", "a", out, sizeof(out)), -1);
    assert_int_equal(param("ab=1", "a", out, sizeof(out)), -1); /* no prefix match */
    assert_int_equal(param("a=1", "ab", out, sizeof(out)), -1);
    assert_int_equal(param("A=1", "a", out, sizeof(out)), -1); /* names are case-sensitive */
    assert_int_equal(wsb_form_param(NULL, 0, "a", out, sizeof(out)), -1);
    /* len bounds the query, not a NUL */
    assert_int_equal(wsb_form_param("a=123&b=4", 4, "a", out, sizeof(out)), 2);
    assert_string_equal(out, "12");
    assert_int_equal(wsb_form_param("a=123&b=4", 5, "b", out, sizeof(out)), -1);
}

static void test_decoding(void **state)
{
    (void)state;
    check("a=x+y", "a", "x y");
    check("a=+", "a", " ");
    check("a=%20%2B%2b", "a", " ++"); /* an escaped '+' stays a plus */
    check("a=%41%4a%4A%7e", "a", "AJJ~");
    check("a=%26%3D", "a", "&=");
    check("a=%C3%A9", "a", "\xc3\xa9");
    check("a=%ff%80", "a", "\xff\x80");
    check("a=%25", "a", "%");
    check("a=%2525", "a", "%25"); /* decoded once */
    check("a=\xc3\xa9", "a", "\xc3\xa9");
    /* names are compared decoded */
    check("%61=1", "a", "1");
    check("access%5Ftoken=t", "access_token", "t");
    check("a+b=1", "a b", "1");
    check("a%2Bb=1&a+b=2", "a b", "2");
    check("a%2Bb=1&a+b=2", "a+b", "1");
    check("%3D=eq", "=", "eq");
}

static void test_malformed(void **state)
{
    (void)state;
    char out[16];
    static const char *const bad[] = {"a=%",   "a=%4",  "a=%4g", "a=%g4",  "a=x%", "a=%%41",
                                      "a=%-1", "a=% 1", "a=%00", "a=x%00", "a=%0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(param(bad[i], "a", out, sizeof(out)), -2);
    /* an escape cut by the end of the query (the bytes after it are not read) */
    assert_int_equal(wsb_form_param("a=%41", 4, "a", out, sizeof(out)), -2);
    assert_int_equal(wsb_form_param("a=%41", 3, "a", out, sizeof(out)), -2);
    assert_int_equal(wsb_form_param("%61=1", 2, "a", out, sizeof(out)), -1);
    /* a raw NUL inside the value */
    assert_int_equal(wsb_form_param("a=x\0y", 5, "a", out, sizeof(out)), -2);
    /* an escape cut by '&' is malformed, and the next parameter is not consulted */
    assert_int_equal(param("a=%4&b=1", "a", out, sizeof(out)), -2);
    assert_int_equal(param("a=%4&b=1", "b", out, sizeof(out)), 1);
    /* a malformed name does not match (and does not hide a later good one) */
    assert_int_equal(param("a%=1", "a", out, sizeof(out)), -1);
    assert_int_equal(param("a%=1", "a%", out, sizeof(out)), -1);
    assert_int_equal(param("%zz=1&a=2", "a", out, sizeof(out)), 1);
    assert_string_equal(out, "2");
    assert_int_equal(param("a%00=1", "a", out, sizeof(out)), -1);
}

static void test_repeated(void **state)
{
    (void)state;
    char out[16];
    check("a=1&a=2", "a", "1");
    check("a&a=2", "a", "");
    check("%61=1&a=2", "a", "1");
    /* the first occurrence decides, even when malformed or too long */
    assert_int_equal(param("a=%zz&a=2", "a", out, sizeof(out)), -2);
    assert_int_equal(param("a=0123456789abcdef&a=2", "a", out, sizeof(out)), -2);
}

static void test_outlen(void **state)
{
    (void)state;
    char out[8];
    memset(out, 'X', sizeof(out));
    /* outlen - 1 bytes fit, one more does not */
    assert_int_equal(param("a=1234567", "a", out, 8), 7);
    assert_string_equal(out, "1234567");
    assert_int_equal(param("a=12345678", "a", out, 8), -2);
    assert_int_equal(param("a=%31%32%33%34%35%36%37", "a", out, 8), 7);
    assert_string_equal(out, "1234567");
    assert_int_equal(param("a=%31%32%33%34%35%36%37%38", "a", out, 8), -2);
    assert_int_equal(param("a=+++++++", "a", out, 8), 7);
    assert_int_equal(param("a=++++++++", "a", out, 8), -2);
    assert_int_equal(param("a=", "a", out, 1), 0);
    assert_string_equal(out, "");
    assert_int_equal(param("a=1", "a", out, 1), -2);
    assert_int_equal(param("a=", "a", out, 0), -2);
    assert_int_equal(param("b=1", "a", out, 0), -1); /* absent is still absent */

    /* a long token, as in ?access_token=... */
    static char q[4200], want[4100], big[4097];
    memcpy(q, "x=1&access_token=", 17);
    for (int i = 0; i < 4096; i++)
        want[i] = q[17 + i] = (char)('A' + i % 26);
    q[17 + 4096] = '\0';
    want[4096] = '\0';
    assert_int_equal(param(q, "access_token", big, sizeof(big)), 4096);
    assert_string_equal(big, want);
    assert_int_equal(param(q, "access_token", big, 4096), -2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hexval),   cmocka_unit_test(test_plain),
        cmocka_unit_test(test_decoding), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_repeated), cmocka_unit_test(test_outlen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
