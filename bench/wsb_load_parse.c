/* wsb_load_parse: batch frame parsing and a lean JSON field scanner for wsb-load. */
#include "wsb_load_parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_MAX_DEPTH 64

ssize_t wsl_parse_frames(const uint8_t *p, size_t len, uint64_t max, wsl_frame_fn fn, void *arg,
                         size_t *need)
{
    size_t off = 0;
    *need = 0;
    while (len - off >= 2) {
        const uint8_t *h = p + off;
        size_t have = len - off;
        if ((h[0] & 0x70) || (h[1] & 0x80))
            return -1; /* no extension negotiated; servers never mask (RFC 6455 §5.1) */
        uint64_t plen = h[1] & 0x7F;
        size_t hl = 2;
        if (plen == 126) {
            hl = 4;
            if (have < hl) {
                *need = hl;
                break;
            }
            plen = (uint64_t)h[2] << 8 | h[3];
        } else if (plen == 127) {
            hl = 10;
            if (have < hl) {
                *need = hl;
                break;
            }
            plen = 0;
            for (int i = 2; i < 10; i++)
                plen = plen << 8 | h[i];
        }
        if (plen > max)
            return -1;
        struct wsl_frame f = {.opcode = h[0] & 0x0F, .fin = h[0] & 0x80};
        if (f.opcode >= 0x8 && (!f.fin || plen > 125))
            return -1;
        if (have - hl < plen) {
            *need = hl + (size_t)plen;
            break;
        }
        f.payload = h + hl;
        f.len = (size_t)plen;
        off += hl + (size_t)plen;
        if (fn(arg, &f))
            return (ssize_t)off;
    }
    if (len - off == 1 && !*need)
        *need = 2;
    return (ssize_t)off;
}

/* ---- JSON: boundaries only (the server sends valid JSON); no allocation ---- */

/* Bytes that end a bare scalar (number, true, false, null). */
static const bool scalar_end[256] = {
    [','] = true,  ['}'] = true,  [']'] = true,  [' '] = true,
    ['\t'] = true, ['\r'] = true, ['\n'] = true,
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The end of the string starting at p (which is '"'), or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    const char *s = p + 1;
    for (;;) {
        const char *q = memchr(s, '"', (size_t)(end - s));
        if (!q)
            return NULL;
        const char *b = q;
        while (b > s && b[-1] == '\\')
            b--;
        if (((q - b) & 1) == 0) /* an even run of backslashes: the quote is not escaped */
            return q + 1;
        s = q + 1;
    }
}

/* The end of the JSON value starting at p, or NULL when malformed or too deep. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    do {
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        switch (*p) {
        case '"':
            p = skip_string(p, end);
            if (!p)
                return NULL;
            break;
        case '{':
        case '[':
            if (++depth > SCAN_MAX_DEPTH)
                return NULL;
            p++;
            break;
        case '}':
        case ']':
            if (depth == 0)
                return NULL;
            depth--;
            p++;
            break;
        case ',':
        case ':':
            if (depth == 0)
                return NULL;
            p++;
            break;
        default:
            while (p < end && !scalar_end[(unsigned char)*p])
                p++;
        }
    } while (depth > 0);
    return p;
}

/* Called per member with the value's start; returns the value's end, or NULL when malformed. */
typedef const char *(*member_fn)(void *arg, struct wsl_span key, const char *v, const char *end);

/* The end of the object at p (after its '}'), or NULL when malformed. */
static const char *scan_object(const char *p, const char *end, member_fn member, void *arg)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= end || *p != '"')
            return NULL;
        const char *kend = skip_string(p, end);
        if (!kend)
            return NULL;
        struct wsl_span key = {p + 1, (size_t)(kend - p - 2)};
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return NULL;
        p = skip_ws(p + 1, end);
        const char *vend = member(arg, key, p, end);
        if (!vend)
            return NULL;
        p = skip_ws(vend, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return p < end && *p == '}' ? p + 1 : NULL;
    }
}

#define KEY_IS(k, lit) ((k).len == sizeof(lit) - 1 && memcmp((k).p, lit, sizeof(lit) - 1) == 0)

static const char *on_data_member(void *arg, struct wsl_span key, const char *v, const char *end)
{
    struct wsl_data *d = arg;
    const char *vend = skip_value(v, end);
    if (vend && KEY_IS(key, "seq"))
        d->seq = (struct wsl_span){v, (size_t)(vend - v)};
    else if (vend && KEY_IS(key, "ts"))
        d->ts = (struct wsl_span){v, (size_t)(vend - v)};
    return vend;
}

struct msg_scan {
    struct wsl_msg *m;
    struct wsl_data *d;
};

static const char *on_msg_member(void *arg, struct wsl_span key, const char *v, const char *end)
{
    struct msg_scan *ms = arg;
    struct wsl_msg *m = ms->m;
    const char *vend;
    if (ms->d && *v == '{' && KEY_IS(key, "data")) {
        /* the payload's seq and ts in the same pass as its boundaries */
        vend = scan_object(v, end, on_data_member, ms->d);
        if (!vend) { /* not a plain object after all (never from the bridge): bounds only */
            *ms->d = (struct wsl_data){0};
            vend = skip_value(v, end);
        }
    } else {
        vend = skip_value(v, end);
    }
    if (!vend)
        return NULL;
    struct wsl_span value = {v, (size_t)(vend - v)};
    switch (key.len) {
    case 4:
        if (KEY_IS(key, "type"))
            m->type = value;
        else if (KEY_IS(key, "data"))
            m->data = value;
        else if (KEY_IS(key, "code"))
            m->code = value;
        break;
    case 6:
        if (KEY_IS(key, "offset"))
            m->offset = value;
        break;
    case 7:
        if (KEY_IS(key, "channel"))
            m->channel = value;
        else if (KEY_IS(key, "dropped"))
            m->dropped = value;
        break;
    case 9:
        if (KEY_IS(key, "timestamp"))
            m->timestamp = value;
        else if (KEY_IS(key, "partition"))
            m->partition = value;
        break;
    default: break;
    }
    return vend;
}

int wsl_scan_msg(const char *p, const char *end, struct wsl_msg *m, struct wsl_data *d)
{
    struct msg_scan ms = {m, d};
    return scan_object(p, end, on_msg_member, &ms) ? 0 : -1;
}

int wsl_scan_data(const char *p, const char *end, struct wsl_data *d)
{
    return scan_object(p, end, on_data_member, d) ? 0 : -1;
}

bool wsl_span_eq(struct wsl_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

bool wsl_span_int(struct wsl_span s, int64_t *out)
{
    const char *p = s.p, *end = s.p + s.len;
    bool neg = p < end && *p == '-';
    p += neg;
    if (p == end || end - p > 18) /* up to 18 digits: no overflow of int64 */
        return false;
    int64_t v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    *out = neg ? -v : v;
    return true;
}

bool wsl_span_num(struct wsl_span s, double *out)
{
    static const double pow10[] = {1,   1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,
                                   1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17};
    const char *p = s.p, *end = s.p + s.len;
    bool neg = p < end && *p == '-';
    p += neg;
    uint64_t ip = 0, fp = 0;
    int id = 0, fd = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++, id++)
        ip = ip * 10 + (uint64_t)(*p - '0');
    if (p < end && *p == '.')
        for (p++; p < end && *p >= '0' && *p <= '9'; p++, fd++)
            fp = fp * 10 + (uint64_t)(*p - '0');
    if (p == end && id > 0 && id <= 17 && fd <= 17 && (fd > 0 || p[-1] != '.')) {
        double v = (double)ip + (fd ? (double)fp / pow10[fd] : 0.0);
        *out = neg ? -v : v;
        return true;
    }
    /* exponents, long mantissas: the library's conversion */
    char tmp[48];
    if (s.len == 0 || s.len >= sizeof tmp)
        return false;
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = '\0';
    char *e;
    errno = 0;
    double v = strtod(tmp, &e);
    if (*e || !isfinite(v))
        return false;
    *out = v;
    return true;
}
