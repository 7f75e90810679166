/* Unit tests for bridge/assets.c: the embedded table, If-None-Match, the served response. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "bridge/assets.h"

static void test_find(void **state)
{
    (void)state;
    const struct wsb_asset *a = wsb_asset_find("/wsbridge.js", 12);
    assert_non_null(a);
    assert_string_equal(a->type, "text/javascript; charset=utf-8");
    assert_true(a->len > 1000);
    assert_int_equal(a->data[a->len], 0);
    assert_true(memmem(a->data, a->len, "export function connect", 23) != NULL);
    assert_non_null(wsb_asset_find("/wsbridge.d.ts", 14));
    assert_non_null(wsb_asset_find("demo.html", 9));
    assert_null(wsb_asset_find("/wsbridge.j", 11));
    assert_null(wsb_asset_find("/demo.html", 10));
    assert_null(wsb_asset_find("/", 1));
}

static bool m(const char *v, const char *etag)
{
    return wsb_asset_etag_match(v, strlen(v), etag);
}

static void test_etag_match(void **state)
{
    (void)state;
    const char *e = "\"abc\"";
    assert_true(m("\"abc\"", e));
    assert_true(m("W/\"abc\"", e));
    assert_true(m("\"x\", \"abc\"", e));
    assert_true(m("\"x\",W/\"abc\" ,\"y\"", e));
    assert_true(m("*", e));
    assert_false(m("", e));
    assert_false(m("\"abcd\"", e));
    assert_false(m("\"ab\"", e));
    assert_false(m("abc", e));
    assert_false(m("\"abc", e));
    assert_false(m("\"x\" junk \"abc\"", e));
    assert_false(m("w/\"abc\"", e));
    assert_false(m(",,", e));
}

static void test_respond(void **state)
{
    (void)state;
    const struct wsb_asset *a = wsb_asset_find("/wsbridge.js", 12);
    struct evbuffer *out = evbuffer_new();
    assert_int_equal(wsb_asset_respond(a, false, NULL, 0, out), 200);
    size_t n = evbuffer_get_length(out);
    char *text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = 0;
    assert_true(strncmp(text, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(text, "Content-Type: text/javascript; charset=utf-8\r\n"));
    assert_non_null(strstr(text, "Cache-Control: no-cache\r\n"));
    assert_non_null(strstr(text, "Access-Control-Allow-Origin: *\r\n"));
    char etag_line[128];
    snprintf(etag_line, sizeof(etag_line), "ETag: %s\r\n", a->etag);
    assert_non_null(strstr(text, etag_line));
    char *body = strstr(text, "\r\n\r\n");
    assert_non_null(body);
    assert_int_equal(n - (size_t)(body + 4 - text), a->len);
    free(text);

    assert_int_equal(wsb_asset_respond(a, false, a->etag, strlen(a->etag), out), 304);
    n = evbuffer_get_length(out);
    text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = 0;
    assert_true(strncmp(text, "HTTP/1.1 304 Not Modified\r\n", 27) == 0);
    assert_null(strstr(text, "Content-Length"));
    assert_int_equal(strlen(strstr(text, "\r\n\r\n")), 4);
    free(text);

    assert_int_equal(wsb_asset_respond(a, true, "\"other\"", 7, out), 200);
    n = evbuffer_get_length(out);
    text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = 0;
    assert_int_equal(strlen(strstr(text, "\r\n\r\n")), 4); /* HEAD: no body */
    free(text);
    evbuffer_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_etag_match),
        cmocka_unit_test(test_respond),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
