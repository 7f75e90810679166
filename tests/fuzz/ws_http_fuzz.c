/* libFuzzer target: HTTP head parser, upgrade checks, header/query/cookie helpers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/ws/ws_http.h"

/* assert() would vanish under NDEBUG */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed: %s\n", #x);                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_slice(struct wsb_slice s, const char *buf, size_t len)
{
    if (s.ptr)
        CHECK(s.ptr >= buf && s.ptr + s.len <= buf + len);
    else
        CHECK(s.len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so any over-read is caught */
    char *buf = malloc(size ? size : 1);
    struct wsb_http_req req;
    char out[256];

    memcpy(buf, data, size);
    long end = wsb_http_head_end(buf, size);
    CHECK(end >= -1 && end <= (long)size && end <= WSB_HTTP_MAX_HEAD);
    if (wsb_http_parse(buf, size, &req) == 0) {
        CHECK(end == (long)size);
        check_slice(req.method, buf, size);
        check_slice(req.target, buf, size);
        check_slice(req.path, buf, size);
        check_slice(req.query, buf, size);
        CHECK(req.nheaders <= WSB_HTTP_MAX_HEADERS);
        for (size_t i = 0; i < req.nheaders; i++) {
            check_slice(req.headers[i].name, buf, size);
            check_slice(req.headers[i].value, buf, size);
        }
        struct wsb_upgrade_check c;
        wsb_ws_check_upgrade(&req, &c);
        CHECK(c.status == 0 || c.status == 400 || c.status == 426 || c.status == 405);
        if (c.status == 0) {
            char accept[29];
            check_slice(c.key, buf, size);
            wsb_ws_accept_key(c.key.ptr, c.key.len, accept);
            CHECK(strlen(accept) == 28);
        } else {
            CHECK(c.error && c.message);
        }
        (void)wsb_http_header_has_token(&req, "Connection", "upgrade");
        long n = wsb_http_header_join(&req, "Sec-WebSocket-Extensions", out, sizeof(out));
        CHECK(n == -1 || (n >= 0 && (size_t)n == strlen(out)));
        n = wsb_http_query_param(req.query, "access_token", out, sizeof(out));
        CHECK(n >= -2 && n < (long)sizeof(out));
        if (n >= 0)
            CHECK(strlen(out) == (size_t)n);
        struct wsb_slice cookie = wsb_http_header(&req, "Cookie");
        check_slice(wsb_http_cookie(cookie, "token"), buf, size);
    }

    /* the helpers on raw bytes: the first byte picks the name */
    if (size > 1) {
        static const char *names[] = {"a", "access_token", "", "x y", "%"};
        const char *name = names[data[0] % 5];
        struct wsb_slice raw = {buf + 1, size - 1};
        size_t outlen = 1 + data[0] % sizeof(out);
        long n = wsb_http_query_param(raw, name, out, outlen);
        CHECK(n >= -2 && n < (long)outlen);
        if (n >= 0)
            CHECK(strlen(out) == (size_t)n);
        check_slice(wsb_http_cookie(raw, name), buf, size);
    }
    free(buf);
    return 0;
}
