/* Tests for the HTTP head parser, upgrade checks, accept key, query and cookie helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "bridge/ws/ws_http.h"

#define GOOD_HEAD                                                                                  \
    "GET /ws?access_token=a%2Eb+c&x=1 HTTP/1.1\r\n"                                                \
    "Host: bridge.example:8080\r\n"                                                                \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: keep-alive, Upgrade\r\n"                                                          \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"                                                                \
    "Sec-WebSocket-Extensions: permessage-deflate\r\n"                                             \
    "Sec-WebSocket-Extensions:   x-other ; a=1  \r\n"                                              \
    "Cookie: theme=dark; wsb_token=\"tok123\"; empty=\r\n"                                         \
    "\r\n"

static int parse(const char *s, struct wsb_http_req *req)
{
    return wsb_http_parse(s, strlen(s), req);
}

static bool slice_is(struct wsb_slice s, const char *v)
{
    return s.ptr && s.len == strlen(v) && memcmp(s.ptr, v, s.len) == 0;
}

static void test_head_end(void **state)
{
    static char big[WSB_HTTP_MAX_HEAD + 100];
    (void)state;

    assert_int_equal(wsb_http_head_end("GET / HTTP/1.1\r\n", 16), 0);
    assert_int_equal(wsb_http_head_end("GET / HTTP/1.1\r\n\r\n", 18), 18);
    assert_int_equal(wsb_http_head_end("GET / HTTP/1.1\r\n\r\nxyz", 21), 18);
    assert_int_equal(wsb_http_head_end("GET / HTTP/1.1\n\n", 16), 0); /* CRLF only */
    assert_int_equal(wsb_http_head_end("", 0), 0);

    memset(big, 'a', sizeof(big));
    assert_int_equal(wsb_http_head_end(big, WSB_HTTP_MAX_HEAD - 1), 0);
    assert_int_equal(wsb_http_head_end(big, WSB_HTTP_MAX_HEAD), -1);
    assert_int_equal(wsb_http_head_end(big, sizeof(big)), -1);
    /* a head of exactly the maximum size is accepted, one byte more is not */
    memcpy(big + WSB_HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
    assert_int_equal(wsb_http_head_end(big, sizeof(big)), WSB_HTTP_MAX_HEAD);
    memset(big, 'a', sizeof(big));
    memcpy(big + WSB_HTTP_MAX_HEAD - 3, "\r\n\r\n", 4);
    assert_int_equal(wsb_http_head_end(big, sizeof(big)), -1);
}

static void test_parse_good(void **state)
{
    struct wsb_http_req req;
    (void)state;

    assert_int_equal(parse(GOOD_HEAD, &req), 0);
    assert_true(slice_is(req.method, "GET"));
    assert_true(slice_is(req.target, "/ws?access_token=a%2Eb+c&x=1"));
    assert_true(slice_is(req.path, "/ws"));
    assert_true(slice_is(req.query, "access_token=a%2Eb+c&x=1"));
    assert_int_equal(req.version_minor, 1);
    assert_int_equal(req.nheaders, 8);
    assert_true(slice_is(wsb_http_header(&req, "host"), "bridge.example:8080"));
    assert_true(slice_is(wsb_http_header(&req, "SEC-WEBSOCKET-KEY"), "dGhlIHNhbXBsZSBub25jZQ=="));
    assert_null(wsb_http_header(&req, "Origin").ptr);
    assert_true(wsb_http_header_has_token(&req, "connection", "upgrade"));
    assert_true(wsb_http_header_has_token(&req, "Connection", "KEEP-ALIVE"));
    assert_false(wsb_http_header_has_token(&req, "Connection", "close"));
    assert_false(wsb_http_header_has_token(&req, "Connection", "Upgrad"));

    char ext[64];
    assert_int_equal(wsb_http_header_join(&req, "sec-websocket-extensions", ext, sizeof(ext)),
                     strlen("permessage-deflate, x-other ; a=1"));
    assert_string_equal(ext, "permessage-deflate, x-other ; a=1");
    assert_int_equal(wsb_http_header_join(&req, "sec-websocket-extensions", ext, 20), -1);
    assert_int_equal(wsb_http_header_join(&req, "absent", ext, sizeof(ext)), 0);
    assert_string_equal(ext, "");

    /* HTTP/1.0, no query, empty header value */
    assert_int_equal(parse("POST /a/b HTTP/1.0\r\nX-Empty:\r\n\r\n", &req), 0);
    assert_int_equal(req.version_minor, 0);
    assert_true(slice_is(req.path, "/a/b"));
    assert_int_equal(req.query.len, 0);
    assert_int_equal(req.headers[0].value.len, 0);
    /* a bare '?' */
    assert_int_equal(parse("GET /?  HTTP/1.1\r\n\r\n", &req), -1);
    assert_int_equal(parse("GET /? HTTP/1.1\r\n\r\n", &req), 0);
    assert_true(slice_is(req.path, "/"));
    assert_int_equal(req.query.len, 0);
    /* obs-text in values is allowed */
    assert_int_equal(parse("GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", &req), 0);
}

/* Every byte value in a method and in a header name: accepted exactly when it is a tchar
 * (RFC 9110 §5.6.2). */
static void test_tchar_every_byte(void **state)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    struct wsb_http_req req;
    (void)state;
    for (int c = 0; c < 256; c++) {
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c != 0 && strchr(extra, c) != NULL);
        char head[64];
        int n = snprintf(head, sizeof(head), "G%cT / HTTP/1.1\r\n\r\n", 'x');
        head[1] = (char)c;
        assert_int_equal(wsb_http_parse(head, (size_t)n, &req) == 0, want);
        n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nA%cB: v\r\n\r\n", 'x');
        head[17] = (char)c;
        bool ok = wsb_http_parse(head, (size_t)n, &req) == 0 && req.nheaders == 1 &&
                  req.headers[0].name.len == 3;
        assert_int_equal(ok, want);
    }
}

static void test_parse_bad(void **state)
{
    static const char *bad[] = {
        "",
        "\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n",                   /* no empty line */
        "GET / HTTP/1.1\n\n",                   /* bare LF */
        "GET / HTTP/1.1\r\nHost: a\n\r\n",      /* bare LF in a header line */
        "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", /* bare CR */
        "GET  / HTTP/1.1\r\n\r\n",              /* double space */
        "GET / HTTP/1.1 \r\n\r\n",
        "GET /\r\n\r\n", /* HTTP/0.9 */
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n", /* invalid tchar in method */
        "GET /a\x7f HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",           /* space before colon */
        "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",           /* invalid tchar in name */
        "GET / HTTP/1.1\r\n: a\r\n\r\n",                /* empty name */
        "GET / HTTP/1.1\r\nHost\r\n\r\n",               /* no colon */
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", /* control character */
        "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\nGET", /* bytes after the head */
    };
    struct wsb_http_req req;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &req) != -1)
            fail_msg("accepted bad head %zu", i);
    }
    /* NUL bytes in a value or the target */
    static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    assert_int_equal(wsb_http_parse(nul, sizeof(nul) - 1, &req), -1);
    static const char nul2[] = "GET /\0 HTTP/1.1\r\n\r\n";
    assert_int_equal(wsb_http_parse(nul2, sizeof(nul2) - 1, &req), -1);

    /* header count cap */
    char head[WSB_HTTP_MAX_HEAD];
    size_t n = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < WSB_HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(head + n, sizeof(head) - n, "X-%d: v\r\n", i);
    memcpy(head + n, "\r\n", 3);
    assert_int_equal(parse(head, &req), 0);
    assert_int_equal(req.nheaders, WSB_HTTP_MAX_HEADERS);
    n += (size_t)snprintf(head + n, sizeof(head) - n, "X-last: v\r\n\r\n");
    assert_int_equal(parse(head, &req), -1);
}

static void check(const char *head, int status, const char *error)
{
    struct wsb_http_req req;
    struct wsb_upgrade_check c;

    if (parse(head, &req) != 0)
        fail_msg("head did not parse: %s", head);
    wsb_ws_check_upgrade(&req, &c);
    if (c.status != status)
        fail_msg("status %d, expected %d for: %s", c.status, status, head);
    if (error)
        assert_string_equal(c.error, error);
    else
        assert_null(c.error);
}

#define H_HOST "Host: h\r\n"
#define H_UPG "Upgrade: websocket\r\n"
#define H_CONN "Connection: Upgrade\r\n"
#define H_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define H_VER "Sec-WebSocket-Version: 13\r\n"

static void test_upgrade(void **state)
{
    struct wsb_http_req req;
    struct wsb_upgrade_check c;
    (void)state;

    assert_int_equal(parse(GOOD_HEAD, &req), 0);
    wsb_ws_check_upgrade(&req, &c);
    assert_int_equal(c.status, 0);
    assert_true(slice_is(c.key, "dGhlIHNhbXBsZSBub25jZQ=="));

    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n", 0, NULL);
    check("GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\nconnection: upgrade\r\n"
          "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nsec-websocket-version: 13\r\n\r\n",
          0, NULL);
    check("POST / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("get / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.0\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\nHost:\r\n" H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_HOST H_UPG H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_CONN H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST "Upgrade: h2c\r\n" H_CONN H_KEY H_VER "\r\n", 400,
          "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_KEY H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG "Connection: keep-alive\r\n" H_KEY H_VER "\r\n", 400,
          "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_VER "\r\n", 400, "bad_request");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_KEY H_VER "\r\n", 400, "bad_request");
    /* bad keys: wrong length, not base64, 15 or 17 bytes */
    static const char *keys[] = {"",
                                 "abc",
                                 "dGhlIHNhbXBsZSBub25jZQ=",
                                 "dGhlIHNhbXBsZSBub25jZQ===",
                                 "dGhlIHNhbXBsZSBub25jZ!==",
                                 "dGhlIHNhbXBsZSBub25j",
                                 "dGhlIHNhbXBsZSBub25jZXM=",
                                 "dGhlIHNhbXBsZSBub25jZXMh"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char head[512];
        snprintf(head, sizeof(head),
                 "GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN "Sec-WebSocket-Key: %s\r\n" H_VER "\r\n",
                 keys[i]);
        check(head, 400, "bad_request");
    }
    /* versions other than 13 get 426 */
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY "\r\n", 426, "unsupported_version");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 8\r\n\r\n", 426,
          "unsupported_version");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n",
          426, "unsupported_version");
    check("GET / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 14\r\n\r\n", 426,
          "unsupported_version");
    /* the message is a sentence */
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H_HOST H_CONN H_KEY H_VER "\r\n", &req), 0);
    wsb_ws_check_upgrade(&req, &c);
    assert_non_null(c.message);
}

static void test_accept_key(void **state)
{
    char out[29];
    (void)state;

    /* RFC 6455 §1.3 example */
    wsb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    /* The hand-written SHA-1 against OpenSSL's, for keys of every length that puts the
     * padding in one block, on a block boundary or across two blocks. */
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char key[300], joined[400], want[29];
    unsigned char md[20];
    for (size_t len = 0; len < sizeof(key); len++) {
        for (size_t i = 0; i < len; i++)
            key[i] = (char)('A' + (i * 7 + len) % 58);
        memcpy(joined, key, len);
        memcpy(joined + len, guid, sizeof(guid) - 1);
        unsigned int mdlen = 0;
        assert_int_equal(EVP_Digest(joined, len + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL),
                         1);
        EVP_EncodeBlock((unsigned char *)want, md, 20);
        wsb_ws_accept_key(key, len, out);
        assert_string_equal(out, want);
    }
}

static void test_query_param(void **state)
{
    struct wsb_slice q = {"access_token=a%2Eb+c&x=1&flag&e=&pct=%zz&nul=%00&t=%41%42%4"
                          "3&enc%5Fname=yes&x=2",
                          0};
    char out[32];
    (void)state;

    q.len = strlen(q.ptr);
    assert_int_equal(wsb_http_query_param(q, "access_token", out, sizeof(out)), 5);
    assert_string_equal(out, "a.b c");
    assert_int_equal(wsb_http_query_param(q, "x", out, sizeof(out)), 1);
    assert_string_equal(out, "1"); /* first wins */
    assert_int_equal(wsb_http_query_param(q, "flag", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(wsb_http_query_param(q, "e", out, sizeof(out)), 0);
    assert_int_equal(wsb_http_query_param(q, "pct", out, sizeof(out)), -2);
    assert_int_equal(wsb_http_query_param(q, "nul", out, sizeof(out)), -2);
    assert_int_equal(wsb_http_query_param(q, "t", out, sizeof(out)), 3);
    assert_string_equal(out, "ABC");
    assert_int_equal(wsb_http_query_param(q, "enc_name", out, sizeof(out)), 3);
    assert_int_equal(wsb_http_query_param(q, "missing", out, sizeof(out)), -1);
    assert_int_equal(wsb_http_query_param(q, "acc", out, sizeof(out)), -1);
    /* too long for out: exactly fitting is fine */
    assert_int_equal(wsb_http_query_param(q, "access_token", out, 6), 5);
    assert_int_equal(wsb_http_query_param(q, "access_token", out, 5), -2);
    /* truncated escape at the end */
    struct wsb_slice t = {"a=%4", 4};
    assert_int_equal(wsb_http_query_param(t, "a", out, sizeof(out)), -2);
    struct wsb_slice none = {NULL, 0};
    assert_int_equal(wsb_http_query_param(none, "a", out, sizeof(out)), -1);
}

static void test_cookie(void **state)
{
    struct wsb_slice h = {"theme=dark; wsb_token=\"tok123\"; empty=; sp = v ;last=x=y", 0};
    (void)state;

    h.len = strlen(h.ptr);
    assert_true(slice_is(wsb_http_cookie(h, "theme"), "dark"));
    assert_true(slice_is(wsb_http_cookie(h, "wsb_token"), "tok123"));
    struct wsb_slice e = wsb_http_cookie(h, "empty");
    assert_non_null(e.ptr);
    assert_int_equal(e.len, 0);
    assert_true(slice_is(wsb_http_cookie(h, "sp"), "v"));
    assert_true(slice_is(wsb_http_cookie(h, "last"), "x=y"));
    assert_null(wsb_http_cookie(h, "Theme").ptr); /* names are case-sensitive */
    assert_null(wsb_http_cookie(h, "wsb").ptr);
    assert_null(wsb_http_cookie(h, "missing").ptr);
    struct wsb_slice none = {NULL, 0};
    assert_null(wsb_http_cookie(none, "a").ptr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_end),    cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),   cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_accept_key),  cmocka_unit_test(test_tchar_every_byte),
        cmocka_unit_test(test_query_param), cmocka_unit_test(test_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
