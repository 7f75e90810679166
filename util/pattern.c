/* Channel names and channel patterns: validation, compile, allocation-free match, expansion. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/pattern.h"

#define PATTERN_TEXT_MAX 1024 /* bytes in a pattern before template resolution */

enum seg_kind { SEG_LIT, SEG_STAR };

struct seg {
    enum seg_kind kind;
    size_t off; /* literal text in wsb_pattern.text */
    size_t len;
};

struct wsb_pattern {
    size_t nseg;   /* segments before the optional `**` */
    bool tail_any; /* a trailing `**` */
    size_t ncaps;
    char *text;       /* resolved literal bytes, points inside this allocation */
    struct seg seg[]; /* nseg entries */
};

static bool seg_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

bool wsb_segment_valid(const char *seg, size_t len)
{
    if (!seg || len == 0 || len > WSB_CHANNEL_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!seg_char((unsigned char)seg[i]))
            return false;
    return true;
}

bool wsb_channel_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > WSB_CHANNEL_MAX)
        return false;
    size_t seglen = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (seglen == 0)
                return false;
            seglen = 0;
        } else if (seg_char(c)) {
            seglen++;
        } else {
            return false;
        }
    }
    return seglen > 0;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* A template name: "sub" or "claim.NAME" with NAME of segment characters. */
static bool template_name_valid(const char *s, size_t len)
{
    if (len == 3 && memcmp(s, "sub", 3) == 0)
        return true;
    return len > 6 && memcmp(s, "claim.", 6) == 0 && wsb_segment_valid(s + 6, len - 6);
}

/* Checks one segment [s, s+len). `last` tells whether `**` is allowed. Counts captures. */
static int check_segment(const char *s, size_t len, bool last, bool allow_templates, size_t *ncaps,
                         char *err, size_t errlen)
{
    if (len == 0) {
        set_err(err, errlen, "empty segment");
        return -1;
    }
    if (len == 1 && s[0] == '*') {
        (*ncaps)++;
        return 0;
    }
    if (len == 2 && s[0] == '*' && s[1] == '*') {
        if (!last) {
            set_err(err, errlen, "\"**\" is only allowed as the last segment");
            return -1;
        }
        (*ncaps)++;
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (seg_char(c))
            continue;
        if (c == '*') {
            set_err(err, errlen, "\"*\" must be a whole segment");
            return -1;
        }
        if (c == '{' && allow_templates) {
            const char *close = memchr(s + i, '}', len - i);
            if (!close) {
                set_err(err, errlen, "unterminated \"{\"");
                return -1;
            }
            size_t nlen = (size_t)(close - (s + i + 1));
            if (!template_name_valid(s + i + 1, nlen)) {
                set_err(err, errlen, "unknown template (use {sub} or {claim.NAME})");
                return -1;
            }
            i += nlen + 1;
            continue;
        }
        if (c == '{') {
            set_err(err, errlen, "templates are not allowed here");
            return -1;
        }
        set_err(err, errlen, "invalid character (segments are [A-Za-z0-9_-])");
        return -1;
    }
    return 0;
}

/* Splits on '.' but not inside `{...}` (claim names hold a '.'). Returns the segment end. */
static size_t segment_end(const char *p, size_t i, size_t len)
{
    bool in_brace = false;
    for (; i < len; i++) {
        if (p[i] == '{')
            in_brace = true;
        else if (p[i] == '}')
            in_brace = false;
        else if (p[i] == '.' && !in_brace)
            break;
    }
    return i;
}

static int check_pattern(const char *p, size_t len, bool allow_templates, size_t *nsegs, char *err,
                         size_t errlen)
{
    size_t ncaps = 0, n = 0;
    if (len == 0) {
        set_err(err, errlen, "empty pattern");
        return -1;
    }
    if (len > (allow_templates ? PATTERN_TEXT_MAX : WSB_CHANNEL_MAX)) {
        set_err(err, errlen, "pattern too long");
        return -1;
    }
    size_t i = 0;
    for (;;) {
        size_t end = segment_end(p, i, len);
        if (check_segment(p + i, end - i, end == len, allow_templates, &ncaps, err, errlen) < 0)
            return -1;
        n++;
        if (end == len)
            break;
        i = end + 1;
        if (i == len) {
            set_err(err, errlen, "empty segment");
            return -1;
        }
    }
    if (ncaps > WSB_PATTERN_MAX_CAPTURES) {
        set_err(err, errlen, "too many wildcards (at most 16)");
        return -1;
    }
    if (nsegs)
        *nsegs = n;
    return 0;
}

int wsb_pattern_check(const char *pattern, bool allow_templates, char *err, size_t errlen)
{
    if (!pattern) {
        set_err(err, errlen, "missing pattern");
        return -1;
    }
    return check_pattern(pattern, strlen(pattern), allow_templates, NULL, err, errlen);
}

/* Appends the resolved form of segment [s, s+len) to out (capacity cap, used *olen).
 * Returns 0, or -1 when a template cannot be substituted safely (the pattern is dropped). */
static int resolve_segment(const char *s, size_t len, wsb_template_cb resolve, void *ctx, char *out,
                           size_t cap, size_t *olen)
{
    size_t start = *olen;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '{') {
            if (*olen >= cap)
                return -1;
            out[(*olen)++] = s[i];
            continue;
        }
        const char *close = memchr(s + i, '}', len - i);
        size_t nlen = (size_t)(close - (s + i + 1));
        if (!resolve)
            return -1;
        const char *v = resolve(ctx, s + i + 1, nlen);
        /* Never widen: the value must be one plain segment, no '.', '*', '{' or empty. */
        size_t vlen = v ? strlen(v) : 0;
        if (!wsb_segment_valid(v, vlen) || vlen > cap - *olen)
            return -1;
        memcpy(out + *olen, v, vlen);
        *olen += vlen;
        i += nlen + 1;
    }
    return wsb_segment_valid(out + start, *olen - start) ? 0 : -1;
}

struct wsb_pattern *wsb_pattern_compile(const char *pattern, wsb_template_cb resolve, void *ctx,
                                        bool *dropped)
{
    struct wsb_pattern *p = NULL;
    size_t len, nsegs;
    if (dropped)
        *dropped = false;
    if (!pattern)
        return NULL;
    len = strlen(pattern);
    if (check_pattern(pattern, len, true, &nsegs, NULL, 0) < 0)
        return NULL;

    /* Resolved text is bounded by a channel name: anything longer could never match. */
    size_t cap = WSB_CHANNEL_MAX;
    p = calloc(1, sizeof(*p) + nsegs * sizeof(struct seg) + cap);
    if (!p)
        return NULL;
    p->text = (char *)(p->seg + nsegs);
    size_t olen = 0, i = 0;
    for (;;) {
        size_t end = segment_end(pattern, i, len);
        const char *s = pattern + i;
        size_t slen = end - i;
        if (slen == 2 && s[0] == '*' && s[1] == '*') {
            p->tail_any = true;
            p->ncaps++;
        } else if (slen == 1 && s[0] == '*') {
            p->seg[p->nseg++] = (struct seg){.kind = SEG_STAR};
            p->ncaps++;
        } else {
            size_t off = olen;
            if (resolve_segment(s, slen, resolve, ctx, p->text, cap, &olen) < 0) {
                free(p);
                if (dropped)
                    *dropped = true;
                return NULL;
            }
            p->seg[p->nseg++] = (struct seg){.kind = SEG_LIT, .off = off, .len = olen - off};
        }
        if (end == len)
            break;
        i = end + 1;
    }
    /* Give back the unused part of the text buffer (sized for the longest channel name):
     * every session compiles its ACL's patterns, so this is memory per connection. */
    struct wsb_pattern *shrunk = realloc(p, sizeof(*p) + nsegs * sizeof(struct seg) + olen + 1);
    if (shrunk) {
        p = shrunk;
        p->text = (char *)(p->seg + nsegs);
    }
    return p;
}

void wsb_pattern_free(struct wsb_pattern *p)
{
    free(p);
}

size_t wsb_pattern_ncaptures(const struct wsb_pattern *p)
{
    return p ? p->ncaps : 0;
}

bool wsb_pattern_match(const struct wsb_pattern *p, const char *name, size_t len,
                       struct wsb_captures *caps)
{
    struct wsb_captures local;
    if (!caps)
        caps = &local;
    caps->n = 0;
    if (!p || !name || len == 0 || len > WSB_CHANNEL_MAX)
        return false;
    size_t i = 0;
    for (size_t k = 0; k < p->nseg; k++) {
        if (i >= len)
            return false;
        const char *dot = memchr(name + i, '.', len - i);
        size_t end = dot ? (size_t)(dot - name) : len;
        size_t slen = end - i;
        const struct seg *s = &p->seg[k];
        if (s->kind == SEG_LIT) {
            if (slen != s->len || memcmp(name + i, p->text + s->off, slen) != 0)
                return false;
        } else {
            if (!wsb_segment_valid(name + i, slen))
                return false;
            caps->cap[caps->n].ptr = name + i;
            caps->cap[caps->n].len = slen;
            caps->n++;
        }
        /* Position after the separator; i == len + 1 means "name ended here". */
        i = end + 1;
    }
    if (p->tail_any) {
        if (i >= len || !wsb_channel_valid(name + i, len - i))
            return false;
        caps->cap[caps->n].ptr = name + i;
        caps->cap[caps->n].len = len - i;
        caps->n++;
        return true;
    }
    return i == len + 1;
}

/* Parses `{N}` at t (t[0] == '{'): returns N (1..99) and the length consumed, or 0. */
static int parse_ref(const char *t, size_t *consumed)
{
    int n = 0;
    size_t i = 1;
    while (i < 3 && t[i] >= '0' && t[i] <= '9')
        n = n * 10 + (t[i++] - '0');
    if (i == 1 || t[i] != '}')
        return -1;
    *consumed = i + 1;
    return n;
}

int wsb_pattern_expand(const char *tmpl, const struct wsb_captures *caps, char *out, size_t outlen)
{
    size_t o = 0;
    if (!tmpl || !out || outlen == 0)
        return -1;
    for (size_t i = 0; tmpl[i];) {
        size_t used;
        int n = tmpl[i] == '{' ? parse_ref(tmpl + i, &used) : -1;
        if (n >= 0) {
            if (n < 1 || !caps || (size_t)n > caps->n)
                return -1;
            size_t clen = caps->cap[n - 1].len;
            if (clen >= outlen - o)
                return -1;
            memcpy(out + o, caps->cap[n - 1].ptr, clen);
            o += clen;
            i += used;
            continue;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = tmpl[i++];
    }
    out[o] = '\0';
    return (int)o;
}

int wsb_pattern_expand_check(const char *tmpl, size_t ncaptures, char *err, size_t errlen)
{
    if (!tmpl) {
        set_err(err, errlen, "missing template");
        return -1;
    }
    for (size_t i = 0; tmpl[i]; i++) {
        size_t used;
        int n = tmpl[i] == '{' ? parse_ref(tmpl + i, &used) : -1;
        if (n < 0)
            continue;
        if (n < 1 || (size_t)n > ncaptures) {
            if (err && errlen)
                snprintf(err, errlen, "{%d} refers to a capture the pattern does not have (%zu)", n,
                         ncaptures);
            return -1;
        }
        i += used - 1;
    }
    return 0;
}
