/* --demo: secret, token and the page at `/` (bridge/demo.html) built on the browser library. */
#include "bridge/demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/rand.h>

#include "bridge/assets.h"
#include "util/buf.h"

int wsb_demo_secret(char out[65])
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

char *wsb_demo_token(const char *secret, long ttl_s)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    long now = (long)time(NULL);
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", "demo") == 0 && jwt_add_grant_int(jwt, "iat", now) == 0 &&
        jwt_add_grant_int(jwt, "exp", now + ttl_s) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

/* HTML-escapes `s` into `b` (attribute context). */
static void put_escaped(struct wsb_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': wsb_buf_puts(b, "&amp;"); break;
        case '<': wsb_buf_puts(b, "&lt;"); break;
        case '>': wsb_buf_puts(b, "&gt;"); break;
        case '"': wsb_buf_puts(b, "&quot;"); break;
        case '\'': wsb_buf_puts(b, "&#39;"); break;
        default: wsb_buf_append(b, s, 1);
        }
    }
}

char *wsb_demo_page(const char *token, const char *path)
{
    /* The template is bridge/demo.html, embedded at build time; {{TOKEN}} and {{PATH}} sit
     * in <meta> attributes. */
    const struct wsb_asset *a = wsb_asset_find("demo.html", strlen("demo.html"));
    if (!a)
        return NULL;
    struct wsb_buf b;
    wsb_buf_init(&b);
    const char *p = (const char *)a->data, *end = p + a->len;
    while (p < end) {
        const char *mark = strstr(p, "{{");
        if (!mark || mark >= end) {
            wsb_buf_append(&b, p, (size_t)(end - p));
            break;
        }
        wsb_buf_append(&b, p, (size_t)(mark - p));
        if (strncmp(mark, "{{TOKEN}}", 9) == 0) {
            put_escaped(&b, token);
            p = mark + 9;
        } else if (strncmp(mark, "{{PATH}}", 8) == 0) {
            put_escaped(&b, path);
            p = mark + 8;
        } else {
            wsb_buf_append(&b, mark, 2);
            p = mark + 2;
        }
    }
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}
