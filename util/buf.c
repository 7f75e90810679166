/* Growable byte buffer. */
#include "util/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsb_buf_init(struct wsb_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void wsb_buf_cleanup(struct wsb_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int wsb_buf_reserve(struct wsb_buf *b, size_t n)
{
    if (b->oom)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return -1;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void wsb_buf_append(struct wsb_buf *b, const void *p, size_t n)
{
    if (n == 0 || wsb_buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void wsb_buf_puts(struct wsb_buf *b, const char *s)
{
    wsb_buf_append(b, s, strlen(s));
}

size_t wsb_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

void wsb_buf_u64(struct wsb_buf *b, uint64_t v)
{
    char tmp[20];
    wsb_buf_append(b, tmp, wsb_fmt_u64(tmp, v));
}

void wsb_buf_i64(struct wsb_buf *b, int64_t v)
{
    if (v < 0) {
        wsb_buf_append(b, "-", 1);
        wsb_buf_u64(b, (uint64_t)0 - (uint64_t)v); /* INT64_MIN too */
        return;
    }
    wsb_buf_u64(b, (uint64_t)v);
}

void wsb_buf_printf(struct wsb_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[128];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        wsb_buf_append(b, small, (size_t)n);
        return;
    }
    if (wsb_buf_reserve(b, (size_t)n + 1) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void wsb_buf_json_str(struct wsb_buf *b, const void *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = p;
    /* Worst case every byte becomes \u00XX. A length whose worst case overflows is an
     * allocation failure too: the caller must see oom, not a value silently left out. */
    if (n > (SIZE_MAX - 2) / 6) {
        b->oom = true;
        return;
    }
    if (wsb_buf_reserve(b, n * 6 + 2) < 0)
        return;
    uint8_t *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = c;
        } else if (c >= 0x20) {
            *o++ = c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\';
            *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

void wsb_buf_base64(struct wsb_buf *b, const void *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *s = p;
    if (n > SIZE_MAX / 2) {
        b->oom = true;
        return;
    }
    if (wsb_buf_reserve(b, (n + 2) / 3 * 4) < 0)
        return;
    uint8_t *o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
}

uint8_t *wsb_buf_steal(struct wsb_buf *b, size_t *len)
{
    uint8_t *d = b->data;
    if (len)
        *len = b->len;
    wsb_buf_init(b);
    return d;
}
