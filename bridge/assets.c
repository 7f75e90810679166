/* Embedded files: lookup, If-None-Match, and the HTTP response that serves them. */
#include "bridge/assets.h"

#include <string.h>

#include <event2/buffer.h>

const struct wsb_asset *wsb_asset_find(const char *name, size_t len)
{
    for (size_t i = 0; i < wsb_nassets; i++) {
        const struct wsb_asset *a = &wsb_assets[i];
        if (strlen(a->name) == len && memcmp(a->name, name, len) == 0)
            return a;
    }
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

bool wsb_asset_etag_match(const char *v, size_t len, const char *etag)
{
    size_t elen = strlen(etag), i = 0;
    if (len == 0)
        return false;
    while (i < len) {
        while (i < len && (is_space(v[i]) || v[i] == ','))
            i++;
        if (i == len)
            break;
        if (v[i] == '*')
            return true;
        if (len - i >= 2 && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        /* RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE */
        if (i >= len || v[i] != '"')
            return false;
        size_t start = i++;
        while (i < len && v[i] != '"')
            i++;
        if (i >= len)
            return false;
        i++;
        if (i - start == elen && memcmp(v + start, etag, elen) == 0)
            return true;
        while (i < len && is_space(v[i]))
            i++;
        if (i < len && v[i] != ',')
            return false;
    }
    return false;
}

int wsb_asset_respond(const struct wsb_asset *a, bool head, const char *inm, size_t inm_len,
                      struct evbuffer *out)
{
    bool fresh = inm && wsb_asset_etag_match(inm, inm_len, a->etag);
    int status = fresh ? 304 : 200;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %s\r\nContent-Type: %s\r\nETag: %s\r\n"
                        "Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n"
                        "X-Content-Type-Options: nosniff\r\n",
                        fresh ? "304 Not Modified" : "200 OK", a->type, a->etag);
    if (fresh) {
        evbuffer_add_printf(out, "Connection: close\r\n\r\n");
        return status;
    }
    evbuffer_add_printf(out, "Content-Length: %zu\r\nConnection: close\r\n\r\n", a->len);
    if (!head)
        evbuffer_add_reference(out, a->data, a->len, NULL, NULL);
    return status;
}
