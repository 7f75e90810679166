/* Strict JSON text (RFC 8259) without a parse tree: a validator, raw member extraction and
 * whitespace compaction. Pure: bytes in, no I/O; fuzzed (json_valid_fuzz, protocol_fuzz). */
#include "util/json_text.h"

#include <stdlib.h>
#include <string.h>

#include "util/form.h"

#define JSON_MAX_DEPTH 64

/* ---- Strict JSON scanner (RFC 8259) ------------------------------------------------------ */

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    /* RFC 8259 §2: ws = space, horizontal tab, line feed, carriage return */
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* Reads the 4 hex digits of a \u escape at p. Returns the code unit or -1. */
static int32_t hex4(const uint8_t *p, const uint8_t *end)
{
    int32_t v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = wsb_hexval(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Length of the valid multi-byte UTF-8 sequence starting at p, or 0 (RFC 3629 §4: the
 * narrow second-byte ranges reject overlongs, surrogates and code points > U+10FFFF). */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xbf;
    size_t need;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if ((size_t)(end - p) <= need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return need + 1;
}

/* p at the opening quote. Returns the byte after the closing quote, or NULL. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end)
{
    p++;
    while (p < end) {
        uint8_t c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            if (end - p < 2)
                return NULL;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't': p += 2; continue;
            case 'u': break;
            default: return NULL;
            }
            int32_t u = hex4(p + 2, end);
            if (u < 0)
                return NULL; /* not four hex digits, or cut off: p + 6 may be past end */
            p += 6;
            if (u >= 0xdc00 && u <= 0xdfff)
                return NULL; /* RFC 8259 §7: a lone low surrogate */
            if (u >= 0xd800 && u <= 0xdbff) {
                /* a high surrogate must be followed by an escaped low surrogate */
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
                    return NULL;
                int32_t lo = hex4(p + 2, end);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return NULL;
                p += 6;
            }
            continue;
        }
        if (c < 0x20)
            return NULL; /* RFC 8259 §7: control characters must be escaped */
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n = utf8_seq(p, end);
        if (n == 0)
            return NULL;
        p += n;
    }
    return NULL;
}

/* RFC 8259 §6: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? */
static const uint8_t *scan_number(const uint8_t *p, const uint8_t *end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    return p;
}

static const uint8_t *scan_literal(const uint8_t *p, const uint8_t *end, const char *lit, size_t n)
{
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0)
        return NULL;
    return p + n;
}

/* p at a member name (after whitespace). Returns the start of the member's value. */
static const uint8_t *scan_member_name(const uint8_t *p, const uint8_t *end)
{
    if (p >= end || *p != '"')
        return NULL;
    p = scan_string(p, end);
    if (!p)
        return NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != ':')
        return NULL;
    return skip_ws(p + 1, end);
}

/* Scans one value at p (no leading whitespace) iteratively, containers nested at most
 * JSON_MAX_DEPTH deep. Returns the byte after the value, or NULL. */
static const uint8_t *scan_value(const uint8_t *p, const uint8_t *end)
{
    uint64_t objects = 0; /* bit d set: the container at depth d is an object */
    unsigned depth = 0;

    for (;;) {
        if (p >= end)
            return NULL;
        switch (*p) {
        case '{':
        case '[': {
            bool obj = *p == '{';
            if (depth == JSON_MAX_DEPTH)
                return NULL;
            if (obj)
                objects |= 1ull << depth;
            else
                objects &= ~(1ull << depth);
            depth++;
            p = skip_ws(p + 1, end);
            if (p < end && *p == (obj ? '}' : ']')) {
                p++;
                depth--;
                break;
            }
            if (obj && !(p = scan_member_name(p, end)))
                return NULL;
            continue; /* the first element's value */
        }
        case '"': p = scan_string(p, end); break;
        case 't': p = scan_literal(p, end, "true", 4); break;
        case 'f': p = scan_literal(p, end, "false", 5); break;
        case 'n': p = scan_literal(p, end, "null", 4); break;
        default: p = scan_number(p, end); break;
        }
        if (!p)
            return NULL;
        /* after a value: a separator, or closers back out of containers */
        for (;;) {
            if (depth == 0)
                return p;
            bool obj = objects >> (depth - 1) & 1;
            p = skip_ws(p, end);
            if (p >= end)
                return NULL;
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                if (obj && !(p = scan_member_name(p, end)))
                    return NULL;
                break;
            }
            if (*p != (obj ? '}' : ']'))
                return NULL;
            p++;
            depth--;
        }
    }
}

bool wsb_json_valid(const uint8_t *p, size_t len)
{
    if (!p)
        return false;
    const uint8_t *end = p + len;
    const uint8_t *q = scan_value(skip_ws(p, end), end);
    return q && skip_ws(q, end) == end;
}

/* ---- Raw member extraction (publish `data` is forwarded as the client wrote it) ----------- */

/* Skips one value of text jansson already accepted; depth-agnostic (jansson allows deeper
 * nesting than the validator, and other members may use it). */
static const uint8_t *skip_valid_value(const uint8_t *p, const uint8_t *end)
{
    size_t depth = 0;

    do {
        if (p >= end)
            return NULL;
        uint8_t c = *p;
        if (c == '"') {
            if (!(p = scan_string(p, end)))
                return NULL;
        } else if (c == '{' || c == '[') {
            depth++;
            p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return NULL;
            depth--;
            p++;
        } else if (depth == 0) {
            /* a number or literal: runs to the next delimiter */
            while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
                   *p != '\n' && *p != '\r')
                p++;
            return p;
        } else {
            p++;
        }
    } while (depth > 0);
    return p;
}

/* True when the raw string literal [s, e) (quotes included) decodes to the ASCII `name`. */
static bool name_equals(const uint8_t *s, const uint8_t *e, const char *name)
{
    const uint8_t *p = s + 1;
    e--; /* closing quote */
    while (p < e) {
        int c = *p++;
        if (c == '\\') {
            if (p >= e)
                return false;
            c = *p++;
            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                c = hex4(p, e);
                if (c < 0 || c >= 0x80)
                    return false; /* a non-ASCII character never matches */
                p += 4;
                break;
            default: break; /* " \ / */
            }
        }
        if (*name == '\0' || c != (uint8_t)*name++)
            return false;
    }
    return *name == '\0';
}

/* Finds the value of member `name` in the object text [p, end). */
bool wsb_json_find_member(const uint8_t *p, const uint8_t *end, const char *name,
                          const uint8_t **vs, const uint8_t **ve)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const uint8_t *ks = p, *ke = scan_string(p, end);
        if (!ke)
            return false;
        p = skip_ws(ke, end);
        if (p >= end || *p != ':')
            return false;
        p = skip_ws(p + 1, end);
        const uint8_t *v = p;
        p = skip_valid_value(p, end);
        if (!p)
            return false;
        if (name_equals(ks, ke, name)) {
            *vs = v;
            *ve = p;
            return true;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ',')
            return false;
        p = skip_ws(p + 1, end);
    }
    return false;
}

/* Copies valid JSON text without insignificant whitespace. Returns a malloc'd string. */
char *wsb_json_compact(const uint8_t *p, const uint8_t *end, size_t *len)
{
    char *out = malloc((size_t)(end - p) + 1), *o = out;
    bool in_str = false;

    if (!out)
        return NULL;
    while (p < end) {
        uint8_t c = *p++;
        if (in_str) {
            *o++ = (char)c;
            if (c == '\\' && p < end)
                *o++ = (char)*p++;
            else if (c == '"')
                in_str = false;
        } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            *o++ = (char)c;
            in_str = c == '"';
        }
    }
    *o = '\0';
    *len = (size_t)(o - out);
    return out;
}
