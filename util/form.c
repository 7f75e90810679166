/* Query-string parameter lookup. */
#include "util/form.h"

#include <string.h>

/* Decodes one character at *p (advancing it). Returns the byte, or -1 for a bad escape. */
static int form_char(const char **p, const char *end)
{
    char c = *(*p)++;

    if (c == '+')
        return ' ';
    if (c != '%')
        return (unsigned char)c;
    if (end - *p < 2)
        return -1;
    int hi = wsb_hexval((*p)[0]), lo = wsb_hexval((*p)[1]);
    if (hi < 0 || lo < 0)
        return -1;
    *p += 2;
    return hi << 4 | lo;
}

/* Compares the encoded name [p, end) with `name` after decoding. */
static int name_eq(const char *p, const char *end, const char *name)
{
    while (p < end) {
        int c = form_char(&p, end);
        if (c < 0 || *name == '\0' || (unsigned char)*name != c)
            return 0;
        name++;
    }
    return *name == '\0';
}

long wsb_form_param(const char *query, size_t len, const char *name, char *out, size_t outlen)
{
    const char *p = query, *end = query ? query + len : NULL;

    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ne = eq ? eq : pe;

        if (name_eq(p, ne, name)) {
            const char *v = eq ? eq + 1 : pe;
            size_t n = 0;
            if (outlen == 0)
                return -2;
            while (v < pe) {
                /* A plain character is copied as is; only '%' and '+' go through form_char,
                 * on a copy of the position (v stays in a register: a long token is ~600
                 * characters, and a call plus a reload per character cost ~5 ns each). */
                int c = (unsigned char)*v;
                if (c == '%' || c == '+') {
                    const char *q = v;
                    c = form_char(&q, pe);
                    v = q;
                } else {
                    v++;
                }
                if (c <= 0 || n + 1 >= outlen) /* malformed, NUL, or too long */
                    return -2;
                out[n++] = (char)c;
            }
            out[n] = '\0';
            return (long)n;
        }
        p = amp ? amp + 1 : end;
    }
    return -1;
}
