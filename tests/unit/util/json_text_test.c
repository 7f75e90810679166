/* Unit tests for util/json_text.c: wsb_json_valid against RFC 8259 (literals, numbers,
 * strings with escapes, surrogates, control characters and invalid UTF-8, containers,
 * the nesting limit of 64, long input), wsb_json_find_member (top-level members only,
 * escaped names, raw value bounds) and wsb_json_compact (strings kept byte for byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/json_text.h"

static bool valid(const char *s)
{
    return wsb_json_valid((const uint8_t *)s, strlen(s));
}

static bool valid_n(const char *s, size_t n)
{
    return wsb_json_valid((const uint8_t *)s, n);
}

static void test_valid_scalars(void **state)
{
    (void)state;
    static const char *const good[] = {
        "true",
        "false",
        "null",
        " null ",
        "\t\r\n1\n",
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "0.5",
        "-0.0",
        "1e5",
        "1E+5",
        "1e-05",
        "12.34e+056",
        "\"\"",
        "\"a\"",
        "[]",
        "{}",
        "[ ]",
        "{ }",
        "[[]]",
        "[{}, []]",
        "[1,2,3]",
        "{\"a\":1}",
        "{\"a\":{\"b\":[true,false,null]},\"c\":\"d\"}",
        " { \"a\" : [ 1 , 2 ] , \"b\" : { } } ",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!valid(good[i]))
            fail_msg("refused: %s", good[i]);
    static const char *const bad[] = {
        "",
        " ",
        "tru",
        "truex",
        "True",
        "nul",
        "nulll",
        "fals",
        "-",
        "+1",
        "01",
        "-01",
        "00",
        "1.",
        ".5",
        "1.e5",
        "1e",
        "1e+",
        "1e-",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "1 2",
        "\"a\" \"b\"",
        "[",
        "]",
        "{",
        "}",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[,]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\" 1}",
        "{1:2}",
        "{a:1}",
        "{\"a\":1,}",
        "{\"a\":1 \"b\":2}",
        "[}",
        "{]",
        "[1]]",
        "{}}",
        "'a'",
        "\x0b"
        "1",
        "\x0c"
        "1",
        "1\x0c",
        "[1]x",
        "\xef\xbb\xbf"
        "1", /* a byte order mark is not whitespace */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (valid(bad[i]))
            fail_msg("accepted: %s", bad[i]);
    assert_false(wsb_json_valid(NULL, 0));
    /* the length bounds the text: a NUL inside is a byte like any other */
    assert_false(valid_n("1\0", 2));
    assert_true(valid_n("12345", 2));
    assert_false(valid_n("[1]", 2));
    assert_false(valid_n("tr", 2));
}

static void test_valid_strings(void **state)
{
    (void)state;
    static const char *const good[] = {
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0000\"",
        "\"\\u00e9\\u20AC\"",
        "\"\\ud83d\\ude00\"",
        "\"\\uDBFF\\uDFFF\"",
        "\"\x7f\"",
        "\"\xc3\xa9\"",
        "\"\xe2\x82\xac\"",
        "\"\xf0\x9f\x98\x80\"",
        "\"\xc2\x80\"",
        "\"\xdf\xbf\"",
        "\"\xe0\xa0\x80\"",
        "\"\xed\x9f\xbf\"",
        "\"\xee\x80\x80\"",
        "\"\xf0\x90\x80\x80\"",
        "\"\xf4\x8f\xbf\xbf\"",
        "\"{[,:]}\"",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!valid(good[i]))
            fail_msg("refused string %zu", i);
    static const char *const bad[] = {
        "\"",
        "\"abc",
        "\"\\\"",
        "\"\\x\"",
        "\"\\'\"",
        "\"\\u\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\U0041\"",
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83dx\"",
        "\"\\ud83d\\u0041\"",
        "\"\\ud83d\\ud83d\"",
        "\"\\ud83d\\n\"",
        "\"\\ud83d\\ude0\"",
        /* invalid UTF-8: stray continuation, overlongs, surrogates, > U+10FFFF, cut */
        "\"\x80\"",
        "\"\xbf\"",
        "\"\xc0\x80\"",
        "\"\xc1\xbf\"",
        "\"\xe0\x80\x80\"",
        "\"\xe0\x9f\xbf\"",
        "\"\xed\xa0\x80\"",
        "\"\xed\xbf\xbf\"",
        "\"\xf0\x80\x80\x80\"",
        "\"\xf0\x8f\xbf\xbf\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xf5\x80\x80\x80\"",
        "\"\xff\"",
        "\"\xfe\"",
        "\"\xc3\"",
        "\"\xe2\x82\"",
        "\"\xf0\x9f\x98\"",
        "\"\xc3\x28\"",
        "\"\xe2\x28\xac\"",
        "\"\xe2\x82\x28\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (valid(bad[i]))
            fail_msg("accepted string %zu", i);
    /* every raw control character is refused inside a string; DEL is not a control */
    char s[4] = "\"x\"";
    for (int c = 0; c < 0x20; c++) {
        s[1] = (char)c;
        assert_false(valid_n(s, 3));
    }
    /* a sequence cut by the end of the text */
    assert_false(valid_n("\"\xe2\x82\xac\"", 3));
    assert_false(valid_n("\"\\u0041\"", 6));
    assert_false(valid_n("\"\\ud83d\\ude00\"", 12));
}

static char *nest(int depth, const char *open, const char *mid, const char *close)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = malloc((size_t)depth * (lo + lc) + lm + 1), *o = s;
    assert_non_null(s);
    for (int i = 0; i < depth; i++, o += lo)
        memcpy(o, open, lo);
    memcpy(o, mid, lm);
    o += lm;
    for (int i = 0; i < depth; i++, o += lc)
        memcpy(o, close, lc);
    *o = '\0';
    return s;
}

/* `depth` containers, arrays and objects alternating (an object first when obj), with
 * `mid` innermost. */
static char *alt(int depth, bool first, const char *mid)
{
    bool obj = first;
    char *s = malloc((size_t)depth * 8 + strlen(mid) + 1), *o = s;
    assert_non_null(s);
    for (int i = 0; i < depth; i++, obj = !obj) {
        memcpy(o, obj ? "{\"k\":" : "[", obj ? 5 : 1);
        o += obj ? 5 : 1;
    }
    memcpy(o, mid, strlen(mid));
    o += strlen(mid);
    for (int i = depth - 1; i >= 0; i--)
        *o++ = first != (i % 2 == 1) ? '}' : ']';
    *o = '\0';
    return s;
}

static void test_valid_depth(void **state)
{
    (void)state;
    /* nesting <= 64, counting arrays and objects alike */
    static const char *const mids[] = {"1", "\"s\"", "[]", "{}"};
    for (int obj = 0; obj < 2; obj++)
        for (size_t m = 0; m < 4; m++) {
            int extra = m >= 2; /* an empty container is a level too */
            char *ok = alt(64 - extra, obj, mids[m]);
            if (!valid(ok))
                fail_msg("refused at 64: %s", ok);
            free(ok);
            char *over = alt(65 - extra, obj, mids[m]);
            if (valid(over))
                fail_msg("accepted at 65: %s", over);
            free(over);
        }
    /* closing back to the top and opening again does not accumulate depth */
    char *a = nest(64, "[", "", "]");
    size_t n = strlen(a);
    char *many = malloc(n * 10 + 3), *o = many;
    *o++ = '[';
    for (int i = 0; i < 10; i++) {
        if (i)
            *o++ = ',';
        memcpy(o, a + 1, n - 2); /* 63 levels inside the outer array */
        o += n - 2;
    }
    *o++ = ']';
    *o = '\0';
    assert_true(valid(many));
    free(many);
    free(a);
    /* deep input far beyond the limit is refused without recursion */
    char *deep = nest(100000, "[", "", "]");
    assert_false(valid(deep));
    free(deep);
}

static void test_valid_long(void **state)
{
    (void)state;
    /* a 1 MiB string of every printable and multi-byte character */
    size_t n = 1 << 20;
    char *s = malloc(n + 3);
    assert_non_null(s);
    s[0] = '"';
    size_t i = 1;
    while (i + 4 <= n) {
        s[i++] = 'a';
        s[i++] = (char)0xe2;
        s[i++] = (char)0x82;
        s[i++] = (char)0xac;
    }
    while (i <= n)
        s[i++] = 'b';
    s[i++] = '"';
    assert_true(valid_n(s, i));
    s[n / 2] = '\x01'; /* one control byte in the middle */
    assert_false(valid_n(s, i));
    free(s);
    /* a long array of numbers */
    char *arr = malloc(6 * 100000 + 3), *o = arr;
    *o++ = '[';
    for (int k = 0; k < 100000; k++) {
        memcpy(o, k ? ",-1e3" : "-1e3", k ? 5 : 4);
        o += k ? 5 : 4;
    }
    *o++ = ']';
    assert_true(valid_n(arr, (size_t)(o - arr)));
    assert_false(valid_n(arr, (size_t)(o - arr) - 1));
    free(arr);
}

/* Finds member `name` in `obj`; returns its raw value (static buffer) or NULL. */
static const char *member(const char *obj, const char *name)
{
    static char out[256];
    const uint8_t *vs = NULL, *ve = NULL;
    const uint8_t *p = (const uint8_t *)obj;
    assert_true(valid(obj)); /* the contract: the text is already valid */
    if (!wsb_json_find_member(p, p + strlen(obj), name, &vs, &ve))
        return NULL;
    assert_true(vs >= p && ve >= vs && ve <= p + strlen(obj));
    memcpy(out, vs, (size_t)(ve - vs));
    out[ve - vs] = '\0';
    return out;
}

static void check_member(const char *obj, const char *name, const char *want)
{
    const char *got = member(obj, name);
    if (!got)
        fail_msg("member %s not found in %s", name, obj);
    assert_string_equal(got, want);
}

static void test_find_member(void **state)
{
    (void)state;
    check_member("{\"a\":1}", "a", "1");
    check_member("{\"a\":-12.5e3}", "a", "-12.5e3");
    check_member("{\"b\":1,\"a\":true}", "a", "true");
    check_member("{\"a\":null,\"b\":2}", "a", "null");
    check_member(" { \"a\" : 12 , \"b\" : 2 } ", "a", "12");
    check_member("{\"a\":\"x\\\"}y\"}", "a", "\"x\\\"}y\"");
    check_member("{\"s\":\"}],{\",\"a\":[1,{\"b\":\"]\"}]}", "a", "[1,{\"b\":\"]\"}]");
    check_member("{\"a\":{}}", "a", "{}");
    check_member("{\"a\":{ \"x\" : [ ] } }", "a", "{ \"x\" : [ ] }");
    /* only top-level members: a nested "a" is not it */
    check_member("{\"x\":{\"a\":1},\"a\":2}", "a", "2");
    assert_null(member("{\"x\":{\"a\":1}}", "a"));
    assert_null(member("{\"x\":[\"a\",{\"a\":1}]}", "a"));
    assert_null(member("{\"x\":\"a\"}", "a")); /* a value is not a name */
    /* names compared decoded */
    check_member("{\"\\u0061\":1}", "a", "1");
    check_member("{\"d\\u0061t\\u0041\":1}", "datA", "1");
    assert_null(member("{\"d\\u0061t\\u0041\":1}", "data")); /* escapes keep their case */
    check_member("{\"a\\/b\":1}", "a/b", "1");
    check_member("{\"a\\\"b\":1}", "a\"b", "1");
    check_member("{\"a\\\\b\":1}", "a\\b", "1");
    check_member("{\"\\t\\n\\r\\b\\f\":1}", "\t\n\r\b\f", "1");
    check_member("{\"\":5}", "", "5");
    assert_null(member("{\"\\u00e9\":1}", "\xc3\xa9")); /* non-ASCII never matches */
    /* nor does an escape above U+007F meet a single byte of a (non-ASCII) name */
    assert_null(member("{\"\\u00e9\":1}", "\xe9"));
    assert_null(member("{\"\xc3\xa9\":1}", "e"));
    assert_null(member("{\"a\\u0000\":1}", "a"));
    assert_null(member("{\"ab\":1}", "a"));
    assert_null(member("{\"a\":1}", "ab"));
    assert_null(member("{\"A\":1}", "a"));
    assert_null(member("{}", "a"));
    assert_null(member("{ }", ""));
    /* not an object */
    assert_null(member("[\"a\",1]", "a"));
    assert_null(member("\"a\"", "a"));
    assert_null(member("1", "a"));
    /* a deeply nested sibling (deeper than the validator allows is fine here) */
    char *deep = nest(200, "[", "", "]");
    size_t n = strlen(deep);
    char *obj = malloc(n + 32);
    strcpy(obj, "{\"x\":");
    strcat(obj, deep);
    strcat(obj, ",\"a\":\"v\"}");
    const uint8_t *vs, *ve, *p = (const uint8_t *)obj;
    assert_true(wsb_json_find_member(p, p + strlen(obj), "a", &vs, &ve));
    assert_int_equal(ve - vs, 3);
    assert_memory_equal(vs, "\"v\"", 3);
    free(obj);
    free(deep);
}

static char *compact(const char *s, size_t *len)
{
    char *c = wsb_json_compact((const uint8_t *)s, (const uint8_t *)s + strlen(s), len);
    assert_non_null(c);
    assert_int_equal(strlen(c), *len);
    return c;
}

static void test_compact(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", ""},
        {"1", "1"},
        {" \t\r\n1 \t\r\n", "1"},
        {"{ \"a b\" : [ 1 , 2 , { } ] }", "{\"a b\":[1,2,{}]}"},
        {"[ \"x\\\" y\" , \" \" ]", "[\"x\\\" y\",\" \"]"},
        {"[ \"\\\\\" , 1 ]", "[\"\\\\\",1]"},
        {"[\"\\\\\\\" \\\\\" ,\"\\t\"]", "[\"\\\\\\\" \\\\\",\"\\t\"]"},
        {"{\"k\" :\n\"v \\n w\"}\n", "{\"k\":\"v \\n w\"}"},
        {"[ \"\xc3\xa9 \xe2\x82\xac\" ]", "[\"\xc3\xa9 \xe2\x82\xac\"]"},
        {"[ true , false , null , -1.5e+3 ]", "[true,false,null,-1.5e+3]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        char *c = compact(cases[i][0], &len);
        assert_string_equal(c, cases[i][1]);
        if (len)
            assert_true(valid(c));
        free(c);
    }
    /* long input: only whitespace outside strings goes */
    size_t n = 200000;
    char *s = malloc(n + 16);
    assert_non_null(s);
    size_t i = 0;
    s[i++] = '[';
    while (i + 8 < n) {
        memcpy(s + i, " \" a b\" ,", 9);
        i += 9;
    }
    memcpy(s + i, "1 ]", 3);
    i += 3;
    s[i] = '\0';
    size_t len;
    char *c = compact(s, &len);
    assert_true(valid(c));
    size_t strings = (i - 4) / 9;
    assert_int_equal(len, 1 + strings * 7 + 2);
    free(c);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_scalars), cmocka_unit_test(test_valid_strings),
        cmocka_unit_test(test_valid_depth),   cmocka_unit_test(test_valid_long),
        cmocka_unit_test(test_find_member),   cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
